//! Pools of logged-in MySQL server connections for transaction-mode listeners: one pool per
//! (listener, target, backend credential, relayed capabilities, character set), at most `size`
//! connections open, idle ones kept for reuse and closed after `idle_timeout` or
//! `max_lifetime`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sumun_config::PoolSettings;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::io::{Packets, ServerStream};
use crate::conn::TargetActive;
use crate::targets::TargetRt;

/// What makes two server connections interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PoolKey {
    pub listener: Arc<str>,
    pub target: SocketAddr,
    pub credential: String,
    /// The capabilities the server connection relays under (the client's).
    pub caps: u64,
    pub charset: u8,
}

/// A logged-in server connection that belongs to a pool.
pub(super) struct ServerConn {
    pub packets: Packets<ServerStream>,
    pub thread_id: u32,
    pub target: Arc<TargetRt>,
    /// The database it is in (`COM_INIT_DB` moves it).
    pub database: String,
    /// Session settings applied on it since it was opened or last reset (`SET NAMES ...`),
    /// by key, as `txn::Settings` keeps them.
    pub settings: Vec<(String, Vec<u8>)>,
    /// Statements prepared on it for transaction-mode clients (`stmt`).
    pub stmts: super::stmt::ServerStmts,
    opened: Instant,
    /// Its place among the pool's `size` connections.
    _permit: OwnedSemaphorePermit,
    _active: TargetActive,
}

struct Idle {
    conn: ServerConn,
    since: Instant,
}

/// Counters for `/api/pools`.
#[derive(Debug, Default)]
pub(super) struct PoolStats {
    pub checkouts: AtomicU64,
    pub waits: AtomicU64,
    pub timeouts: AtomicU64,
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub waiting: AtomicU64,
}

pub(super) struct Pool {
    pub key: PoolKey,
    size: AtomicU32,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    /// Woken when a connection is released or closed.
    freed: Notify,
    pub stats: PoolStats,
}

/// What a checkout got: a connection, or the right to open one.
pub(super) enum Checkout {
    Idle(Box<ServerConn>),
    Open(OwnedSemaphorePermit),
}

impl Pool {
    fn new(key: PoolKey, size: u32) -> Pool {
        Pool {
            key,
            size: AtomicU32::new(size),
            permits: Arc::new(Semaphore::new(size as usize)),
            idle: Mutex::new(Vec::new()),
            freed: Notify::new(),
            stats: PoolStats::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn size(&self) -> u32 {
        self.size.load(Ordering::Relaxed)
    }

    /// Connections open (idle or in use).
    pub(super) fn open(&self) -> u32 {
        self.size()
            .saturating_sub(self.permits.available_permits() as u32)
    }

    pub(super) fn idle_count(&self) -> usize {
        self.lock().len()
    }

    /// An idle connection that is still open, or a permit to open one; waits up to
    /// `deadline` for either.
    pub(super) async fn checkout(&self, deadline: tokio::time::Instant) -> Option<Checkout> {
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        let mut waited = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            while let Some(idle) = self.lock().pop() {
                if still_open(&idle.conn) {
                    return Some(Checkout::Idle(Box::new(idle.conn)));
                }
                // Closed while idle (the server's wait_timeout, a restart): drop it.
            }
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return Some(Checkout::Open(permit));
            }
            if !waited {
                waited = true;
                self.stats.waits.fetch_add(1, Ordering::Relaxed);
            }
            self.stats.waiting.fetch_add(1, Ordering::Relaxed);
            let woke = crate::workers::timeout_at(deadline, freed).await;
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            if woke.is_err() {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
    }

    /// A freshly logged-in connection, counted against the permit it was opened under.
    pub(super) fn adopt(
        &self,
        packets: Packets<ServerStream>,
        thread_id: u32,
        target: &Arc<TargetRt>,
        database: String,
        permit: OwnedSemaphorePermit,
    ) -> ServerConn {
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        ServerConn {
            packets,
            thread_id,
            target: target.clone(),
            database,
            settings: Vec::new(),
            stmts: Default::default(),
            opened: Instant::now(),
            _permit: permit,
            _active: TargetActive::new(target),
        }
    }

    /// Give a connection back, idle and with nothing outstanding.
    pub(super) fn release(&self, conn: ServerConn, settings: &PoolSettings) {
        if conn.opened.elapsed() < settings.max_lifetime && self.open() <= self.size() {
            self.lock().push(Idle {
                conn,
                since: Instant::now(),
            });
        }
        self.freed.notify_one();
    }

    /// A connection that failed or is out of step: closed, its place freed.
    pub(super) fn discard(&self, conn: ServerConn) {
        drop(conn);
        self.freed.notify_one();
    }

    /// Close idle connections past `idle_timeout` (keeping `min_idle`) or `max_lifetime`.
    fn reap(&self, settings: &PoolSettings) -> Vec<ServerConn> {
        let mut idle = self.lock();
        let mut remaining = idle.len();
        let mut closed = Vec::new();
        let mut kept = Vec::with_capacity(idle.len());
        // Least recently released first.
        for i in std::mem::take(&mut *idle) {
            let expired = i.conn.opened.elapsed() >= settings.max_lifetime;
            let stale = i.since.elapsed() >= settings.idle_timeout;
            if expired || (stale && remaining > settings.min_idle as usize) {
                remaining -= 1;
                closed.push(i.conn);
            } else {
                kept.push(i);
            }
        }
        *idle = kept;
        closed
    }

    fn resize(&self, size: u32) {
        let old = self.size.swap(size, Ordering::Relaxed);
        if size > old {
            self.permits.add_permits((size - old) as usize);
        } else if size < old {
            let _ = self
                .permits
                .clone()
                .try_acquire_many_owned(old - size)
                .map(|p| p.forget());
        }
    }
}

/// A pooled connection that the server closed while it sat idle shows EOF (or an error)
/// without blocking.
fn still_open(conn: &ServerConn) -> bool {
    if !conn.packets.buf.is_empty() {
        return false;
    }
    match &conn.packets.stream {
        super::io::Stream::Plain(s) => {
            let mut probe = [0u8; 1];
            matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
        super::io::Stream::Tls(t) => {
            let mut probe = [0u8; 1];
            matches!(t.get_ref().0.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
        super::io::Stream::Gone => false,
    }
}

/// Every pool of the front end.
#[derive(Default)]
pub(super) struct Pools {
    map: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").finish_non_exhaustive()
    }
}

impl Pools {
    pub(super) fn get(&self, key: PoolKey, size: u32) -> Arc<Pool> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.clone())
            .or_insert_with(|| Arc::new(Pool::new(key, size)))
            .clone()
    }

    pub(super) fn all(&self) -> Vec<Arc<Pool>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Once a second: reap idle connections, apply reloaded sizes, close the idle connections
    /// of removed listeners, and forget pools nobody uses.
    pub(super) fn housekeeping(&self, registry: &crate::Registry) {
        for pool in self.all() {
            let listener = registry
                .listeners
                .iter()
                .find(|l| *l.name == *pool.key.listener);
            let closed = match listener {
                Some(l) => {
                    let settings = &l.snapshot().settings.pool;
                    pool.resize(settings.size);
                    pool.reap(settings)
                }
                None => pool.lock().drain(..).map(|i| i.conn).collect(),
            };
            for conn in closed {
                tokio::spawn(quit(conn));
            }
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, pool| {
            Arc::strong_count(pool) > 1 || pool.open() > 0 || pool.idle_count() > 0
        });
    }
}

/// Close a server connection politely (`COM_QUIT`).
pub(super) async fn quit(mut conn: ServerConn) {
    conn.packets.seq = 0;
    let _ = crate::workers::timeout(
        Duration::from_secs(1),
        conn.packets.write(&[sumun_wire::mysql::flags::COM_QUIT]),
    )
    .await;
}
