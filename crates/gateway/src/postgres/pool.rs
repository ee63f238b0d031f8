//! Backend connection pools, one per (listener, target, database, backend user). A pool never
//! has more than `size` connections open; a client that finds none idle and the pool full waits
//! up to `checkout_timeout` and then gets SQLSTATE 53300, as RDS Proxy's borrow timeout does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sumun_config::PoolSettings;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::server::ServerConn;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub listener: Arc<str>,
    pub target: SocketAddr,
    pub database: String,
    pub user: String,
}

/// A server connection and its place in the pool.
#[derive(Debug)]
pub struct Pooled {
    pub conn: ServerConn,
    /// The worker whose event loop the socket is registered with (see `crate::workers`).
    home: usize,
    _permit: OwnedSemaphorePermit,
}

/// Idle connections, one stack per home worker (the last one for connections opened off the
/// workers), so a client is given a connection of its own worker when there is one.
#[derive(Debug, Default)]
struct Idle {
    by_home: Vec<Vec<Pooled>>,
    count: usize,
}

impl Idle {
    fn slot(home: usize) -> usize {
        home.min(MAX_HOMES - 1)
    }

    fn push(&mut self, p: Pooled) {
        let i = Idle::slot(p.home);
        if self.by_home.len() <= i {
            self.by_home.resize_with(i + 1, Vec::new);
        }
        self.by_home[i].push(p);
        self.count += 1;
    }

    /// The most recently used connection of `home`, else of any other worker.
    fn pop(&mut self, home: usize) -> Option<Pooled> {
        let mine = Idle::slot(home);
        let p = match self.by_home.get_mut(mine).and_then(Vec::pop) {
            Some(p) => Some(p),
            None => self.by_home.iter_mut().find_map(Vec::pop),
        };
        if p.is_some() {
            self.count -= 1;
        }
        p
    }
}

/// Workers beyond this share the last idle stack.
const MAX_HOMES: usize = 257;

fn current_home() -> usize {
    crate::workers::current().map_or(MAX_HOMES - 1, |i| i.min(MAX_HOMES - 2))
}

#[derive(Debug)]
pub struct Pool {
    pub key: PoolKey,
    idle: Mutex<Idle>,
    slots: Arc<Semaphore>,
    size: u32,
    released: Notify,
    pub stats: PoolStats,
}

#[derive(Debug, Default)]
pub struct PoolStats {
    pub checkouts: AtomicU64,
    pub waits: AtomicU64,
    pub wait_micros: AtomicU64,
    pub timeouts: AtomicU64,
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub active: AtomicU64,
    pub waiting: AtomicU64,
}

/// Why a checkout gave nothing.
#[derive(Debug)]
pub enum CheckoutError {
    /// Every connection stayed busy for `checkout_timeout`.
    Timeout(Duration),
    Stopped,
}

pub enum Slot {
    /// An idle connection, ready.
    Idle(Box<Pooled>),
    /// Room for a new connection: connect and call [`Pool::adopt`].
    New(OwnedSemaphorePermit),
}

impl Pooled {
    /// The connection, giving up its place in the pool.
    pub fn into_conn(self) -> ServerConn {
        self.conn
    }
}

impl Pool {
    fn new(key: PoolKey, size: u32) -> Pool {
        Pool {
            key,
            idle: Mutex::new(Idle::default()),
            slots: Arc::new(Semaphore::new(size as usize)),
            size,
            released: Notify::new(),
            stats: PoolStats::default(),
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// Connections open (idle or in use).
    pub fn open(&self) -> u32 {
        self.size - self.slots.available_permits() as u32
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).count
    }

    fn take_idle(&self, settings: &PoolSettings) -> Option<Pooled> {
        let home = current_home();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(p) = idle.pop(home) {
            if p.conn.created.elapsed() < settings.max_lifetime && !p.conn.broken {
                return Some(p);
            }
            drop(p); // over its lifetime: closed, its slot freed
        }
        None
    }

    /// An idle connection or the right to open one, waiting up to `checkout_timeout`.
    pub async fn slot(&self, settings: &PoolSettings) -> Result<Slot, CheckoutError> {
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = self.take_idle(settings) {
            return Ok(Slot::Idle(Box::new(p)));
        }
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Slot::New(permit));
        }
        self.stats.waits.fetch_add(1, Ordering::Relaxed);
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + settings.checkout_timeout;
        let result = loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(p) = self.take_idle(settings) {
                break Ok(Slot::Idle(Box::new(p)));
            }
            tokio::select! {
                permit = self.slots.clone().acquire_owned() => match permit {
                    Ok(permit) => break Ok(Slot::New(permit)),
                    Err(_) => break Err(CheckoutError::Stopped),
                },
                () = &mut released => {}
                () = tokio::time::sleep_until(deadline) => {
                    self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    break Err(CheckoutError::Timeout(settings.checkout_timeout));
                }
            }
        };
        self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        self.stats
            .wait_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        result
    }

    pub fn adopt(&self, conn: ServerConn, permit: OwnedSemaphorePermit) -> Pooled {
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        Pooled {
            conn,
            home: current_home(),
            _permit: permit,
        }
    }

    /// Give a connection back. Broken or expired ones are closed instead.
    pub fn release(&self, mut p: Pooled, settings: &PoolSettings) {
        if p.conn.broken || p.conn.created.elapsed() >= settings.max_lifetime {
            drop(p);
        } else {
            p.conn.last_used = Instant::now();
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(p);
        }
        self.released.notify_one();
    }

    /// A slot was freed without going through `release` (a connection was dropped).
    pub fn freed(&self) {
        self.released.notify_one();
    }

    /// Take out idle connections unused for `idle_timeout` or older than `max_lifetime`,
    /// keeping `min_idle`; the caller closes them.
    pub fn reap(&self, settings: &PoolSettings) -> Vec<Pooled> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let keep = settings.min_idle as usize;
        let mut closed = Vec::new();
        // Least recently used first: each stack's bottom is its oldest.
        let Idle { by_home, count } = &mut *idle;
        for stack in by_home.iter_mut() {
            let mut i = 0;
            while *count > keep && i < stack.len() {
                let p = &stack[i];
                if p.conn.last_used.elapsed() >= settings.idle_timeout
                    || p.conn.created.elapsed() >= settings.max_lifetime
                {
                    closed.push(stack.remove(i));
                    *count -= 1;
                } else {
                    i += 1;
                }
            }
        }
        drop(idle);
        closed
    }
}

/// Every pool of the gateway.
#[derive(Debug, Default)]
pub struct Pools {
    map: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    pub fn get(&self, key: PoolKey, size: u32) -> Arc<Pool> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.clone())
            .or_insert_with(|| Arc::new(Pool::new(key, size)))
            .clone()
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Arc<Pool>> = map.values().cloned().collect();
        v.sort_by(|a, b| {
            (&a.key.listener, a.key.target, &a.key.database, &a.key.user).cmp(&(
                &b.key.listener,
                b.key.target,
                &b.key.database,
                &b.key.user,
            ))
        });
        v
    }
}
