//! Backend connection pools, one per (listener, target, database, backend user). A pool never
//! has more than `size` connections open; a client that finds none idle and the pool full waits
//! up to `checkout_timeout` and then gets SQLSTATE 53300, as RDS Proxy's borrow timeout does.
//!
//! A released connection is handed straight to a waiting client, if there is one, rather than
//! parked and announced. Connections and waiters belong to a data-plane worker
//! (`crate::workers`): a connection goes to a waiter of its own worker unless a waiter elsewhere
//! has waited clearly longer (`FAIRNESS`), so hand-overs rarely cross threads and nobody
//! starves. A plain-text connection that does end up on another worker moves its socket there.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::VecDeque;
use sumun_config::PoolSettings;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

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
    /// When the connection was opened and last given back, on the data plane's coarse clock
    /// (`crate::workers::coarse_ms`): a checkout and a release read no clock.
    born_ms: u64,
    used_ms: u64,
    _permit: OwnedSemaphorePermit,
}

/// Idle connections, one stack per home worker (the last one for connections opened off the
/// workers), so a client is given a connection of its own worker when there is one.
#[derive(Debug, Default)]
struct Idle {
    // Boxed so that taking, handing over and returning a connection moves a pointer, and
    // a client holds it without an allocation per checkout.
    #[allow(clippy::vec_box)]
    by_home: Vec<Vec<Box<Pooled>>>,
    count: usize,
}

impl Idle {
    fn slot(home: usize) -> usize {
        home.min(MAX_HOMES - 1)
    }

    fn push(&mut self, p: Box<Pooled>) {
        let i = Idle::slot(p.home);
        if self.by_home.len() <= i {
            self.by_home.resize_with(i + 1, Vec::new);
        }
        self.by_home[i].push(p);
        self.count += 1;
    }

    /// The most recently used connection of `home`, else (with `steal`) of any other worker.
    fn pop(&mut self, home: usize, steal: bool) -> Option<Box<Pooled>> {
        let mine = Idle::slot(home);
        let p = match self.by_home.get_mut(mine).and_then(Vec::pop) {
            Some(p) => Some(p),
            None if steal => self.by_home.iter_mut().find_map(Vec::pop),
            None => None,
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
    inner: Mutex<Inner>,
    slots: Arc<Semaphore>,
    /// The configured size; a reload changes it (`resize`).
    size: AtomicU32,
    /// Slots to retire after a shrink: taken out of the semaphore as they become free, and
    /// connections released while some are left are closed rather than kept.
    excess: AtomicU32,
    pub stats: PoolStats,
}

#[derive(Debug, Default)]
struct Inner {
    idle: Idle,
    /// Clients waiting for a connection, oldest first, one queue per home worker.
    waiters: Vec<VecDeque<Waiter>>,
}

#[derive(Debug)]
struct Waiter {
    since: Instant,
    handoff: oneshot::Sender<Box<Pooled>>,
}

/// How much longer a waiter on another worker must have waited before it is served ahead of
/// the releasing connection's own worker.
const FAIRNESS: Duration = Duration::from_millis(2);

impl Inner {
    /// Hand `p` to the waiter it should go to; gives it back when nobody is waiting.
    fn hand_off(&mut self, mut p: Box<Pooled>) -> Option<Box<Pooled>> {
        loop {
            let home = Idle::slot(p.home);
            let oldest = (0..self.waiters.len())
                .filter_map(|i| self.waiters[i].front().map(|w| (i, w.since)))
                .min_by_key(|&(_, since)| since);
            let Some((oldest, oldest_since)) = oldest else {
                return Some(p);
            };
            let pick = match self.waiters.get(home).and_then(VecDeque::front) {
                Some(w) if w.since <= oldest_since + FAIRNESS => home,
                _ => oldest,
            };
            let Some(w) = self.waiters[pick].pop_front() else {
                return Some(p);
            };
            match w.handoff.send(p) {
                Ok(()) => return None,
                // That waiter gave up (timed out, got a new slot, went away): next one.
                Err(back) => p = back,
            }
        }
    }
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
    /// Given back within the last second (on the coarse clock, so up to a fraction of a
    /// second more).
    pub fn used_recently(&self) -> bool {
        crate::workers::coarse_ms().saturating_sub(self.used_ms) < 1000
    }

    /// The connection, giving up its place in the pool.
    pub fn into_conn(self) -> ServerConn {
        self.conn
    }
}

impl Pool {
    fn new(key: PoolKey, size: u32) -> Pool {
        Pool {
            key,
            inner: Mutex::new(Inner::default()),
            slots: Arc::new(Semaphore::new(size as usize)),
            size: AtomicU32::new(size),
            excess: AtomicU32::new(0),
            stats: PoolStats::default(),
        }
    }

    pub fn size(&self) -> u32 {
        self.size.load(Ordering::Relaxed)
    }

    /// Connections open (idle or in use).
    pub fn open(&self) -> u32 {
        let slots = self.size() + self.excess.load(Ordering::Relaxed);
        slots.saturating_sub(self.slots.available_permits() as u32)
    }

    /// Follow a reload's `pool.size`. Growing adds slots at once (waiting clients get them);
    /// shrinking retires free slots now and busy ones as their connections come back, so no
    /// client loses its connection and the pool reaches the new size as work finishes.
    pub fn resize(&self, size: u32) {
        // Only the background task resizes, so the swap needs no lock; `excess` is also
        // changed by releases, hence the atomic updates.
        let old = self.size.swap(size, Ordering::Relaxed);
        if size > old {
            let grow = size - old;
            // Slots still waiting to be retired are simply kept.
            let mut kept = 0;
            let _ = self
                .excess
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| {
                    kept = e.min(grow);
                    Some(e - kept)
                });
            self.slots.add_permits((grow - kept) as usize);
        } else if size < old {
            self.excess.fetch_add(old - size, Ordering::Relaxed);
        }
        self.retire_free_slots();
        if size != old {
            tracing::info!(pool_target = %self.key.target, database = %self.key.database, from = old, to = size, "pool resized");
        }
    }

    /// Take free slots out of the semaphore while a shrink is not done.
    fn retire_free_slots(&self) {
        let excess = self.excess.load(Ordering::Relaxed);
        if excess == 0 {
            return;
        }
        let gone = self.slots.forget_permits(excess as usize) as u32;
        // A release may have retired some meanwhile: slots taken beyond what is still owed
        // go back.
        let mut taken = 0;
        let _ = self
            .excess
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| {
                taken = e.min(gone);
                Some(e - taken)
            });
        if taken < gone {
            self.slots.add_permits((gone - taken) as usize);
        }
    }

    /// Held by the pool map alone (called under its lock, so nobody can take it meanwhile),
    /// with nothing open and nobody waiting.
    fn is_vacant(self: &Arc<Self>) -> bool {
        if Arc::strong_count(self) > 1 || self.open() > 0 {
            return false;
        }
        let inner = self.lock();
        inner.idle.count == 0 && inner.waiters.iter().all(VecDeque::is_empty)
    }

    /// Take out every idle connection (its listener is gone); the caller closes them.
    pub fn drain_idle(&self) -> Vec<Box<Pooled>> {
        let mut inner = self.lock();
        let Idle { by_home, count } = &mut inner.idle;
        *count = 0;
        by_home.iter_mut().flat_map(std::mem::take).collect()
    }

    pub fn idle_count(&self) -> usize {
        self.lock().idle.count
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Within its lifetime (judged on the coarse clock: to within a fraction of a second)
    /// and not broken.
    fn usable(p: &Pooled, settings: &PoolSettings, now_ms: u64) -> bool {
        (now_ms.saturating_sub(p.born_ms) as u128) < settings.max_lifetime.as_millis()
            && !p.conn.broken
    }

    /// True when a checkout would not wait now: a connection is idle or a slot is free, and
    /// nobody is queued ahead. (A moment later it may be otherwise; the checkout then waits.)
    pub fn has_room(&self) -> bool {
        let inner = self.lock();
        inner.waiters.iter().all(VecDeque::is_empty)
            && (inner.idle.count > 0 || self.slots.available_permits() > 0)
    }

    /// An idle connection, if one is ready now (nothing waits).
    pub fn try_idle(&self, settings: &PoolSettings) -> Option<Box<Pooled>> {
        let home = current_home();
        let p = self.pop_usable(&mut self.lock(), home, settings)?;
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        // A failed move between workers closes it and frees its slot.
        match self.settled(p) {
            Slot::Idle(p) => Some(p),
            Slot::New(_) => None,
        }
    }

    /// The idle connection `home` should get, closing any past their lifetime on the way.
    /// Another worker's is taken only when the pool is full: below its size a new connection
    /// of this worker's own is opened instead, so connections settle where their clients are
    /// rather than moving back and forth.
    fn pop_usable(
        &self,
        inner: &mut Inner,
        home: usize,
        settings: &PoolSettings,
    ) -> Option<Box<Pooled>> {
        let now = crate::workers::coarse_ms();
        while let Some(p) = inner.idle.pop(home, self.slots.available_permits() == 0) {
            if Pool::usable(&p, settings, now) {
                return Some(p);
            }
            // Over its lifetime: closed, its slot freed.
        }
        None
    }

    /// An idle connection or the right to open one, waiting up to `checkout_timeout`.
    pub async fn slot(&self, settings: &PoolSettings) -> Result<Slot, CheckoutError> {
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        let home = current_home();
        let deadline = tokio::time::Instant::now() + settings.checkout_timeout;
        let mut rx = {
            let mut inner = self.lock();
            if let Some(p) = self.pop_usable(&mut inner, home, settings) {
                drop(inner);
                return Ok(self.settled(p));
            }
            if let Ok(permit) = self.slots.clone().try_acquire_owned() {
                return Ok(Slot::New(permit));
            }
            // Queue up under the same lock that releases take, so no release is missed.
            let (tx, rx) = oneshot::channel();
            let i = Idle::slot(home);
            if inner.waiters.len() <= i {
                inner.waiters.resize_with(i + 1, VecDeque::new);
            }
            let queue = &mut inner.waiters[i];
            // Drop entries of waiters that already left, from the back, so a burst of
            // timeouts without releases cannot grow the queue.
            while queue.back().is_some_and(|w| w.handoff.is_closed()) {
                queue.pop_back();
            }
            // And now and then all of them: with no release for a long while (a hung backend)
            // timed-out waiters could otherwise pile up behind live ones.
            if queue.len() >= 64 && queue.len().is_power_of_two() {
                queue.retain(|w| !w.handoff.is_closed());
            }
            queue.push_back(Waiter {
                since: Instant::now(),
                handoff: tx,
            });
            rx
        };
        self.stats.waits.fetch_add(1, Ordering::Relaxed);
        // Counted down however the wait ends, also if this future is dropped mid-wait.
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = CountDown(&self.stats.waiting);
        let started = Instant::now();
        let result = tokio::select! {
            biased;
            handed = &mut rx => match handed {
                Ok(p) => Ok(self.settled(p)),
                Err(_) => Err(CheckoutError::Stopped),
            },
            permit = self.slots.clone().acquire_owned() => match permit {
                Ok(permit) => Ok(Slot::New(permit)),
                Err(_) => Err(CheckoutError::Stopped),
            },
            () = crate::workers::sleep_until(deadline) => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(CheckoutError::Timeout(settings.checkout_timeout))
            }
        };
        // A connection handed over while another branch won is not lost but taken instead
        // (a permit then goes back unused).
        rx.close();
        let result = match rx.try_recv() {
            Ok(p) => Ok(self.settled(p)),
            Err(_) => result,
        };
        self.stats
            .wait_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        result
    }

    pub fn adopt(&self, conn: ServerConn, permit: OwnedSemaphorePermit) -> Box<Pooled> {
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        let born_ms = crate::workers::ms_of(conn.created);
        Box::new(Pooled {
            conn,
            home: current_home(),
            born_ms,
            used_ms: crate::workers::coarse_ms(),
            _permit: permit,
        })
    }

    /// A connection taken on another worker than its own: a plain socket moves to this
    /// worker's event loop (a TLS one keeps its registration and is served across threads).
    /// Should the move fail, the connection is closed and a new one opened in its place.
    fn settled(&self, mut p: Box<Pooled>) -> Slot {
        let here = current_home();
        if p.home == here || p.conn.stream.is_tls() {
            return Slot::Idle(p);
        }
        let permit = p._permit;
        match p.conn.stream.rehome() {
            Ok(stream) => {
                p.conn.stream = stream;
                p.home = here;
                p._permit = permit;
                Slot::Idle(p)
            }
            Err(err) => {
                tracing::warn!(pool_target = %self.key.target, error = %err, "cannot move a backend connection between workers; opening another");
                Slot::New(permit)
            }
        }
    }

    /// Give a connection back: to the waiter it should go to, else to the idle stack of its
    /// worker. Broken or expired ones are closed instead (the freed slot wakes a waiter).
    pub fn release(&self, mut p: Box<Pooled>, settings: &PoolSettings) {
        let retire = self.excess.load(Ordering::Relaxed) > 0
            && self
                .excess
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| e.checked_sub(1))
                .is_ok();
        if retire {
            // Shrinking: this connection and its slot are one too many. The slot is retired
            // rather than given back, where a waiting client would take it for a new login.
            let Pooled { _permit, .. } = *p;
            _permit.forget();
            return;
        }
        let now = crate::workers::coarse_ms();
        if !Pool::usable(&p, settings, now) {
            drop(p);
            return;
        }
        p.used_ms = now;
        let mut inner = self.lock();
        if let Some(p) = inner.hand_off(p) {
            inner.idle.push(p);
        }
    }

    /// Take out idle connections unused for `idle_timeout` or older than `max_lifetime`,
    /// keeping `min_idle`; the caller closes them.
    pub fn reap(&self, settings: &PoolSettings) -> Vec<Box<Pooled>> {
        let now = crate::workers::ms_of(Instant::now());
        let idle_timeout = settings.idle_timeout.as_millis();
        let mut inner = self.lock();
        let keep = settings.min_idle as usize;
        let mut closed = Vec::new();
        // Least recently used first: each stack's bottom is its oldest.
        let Idle { by_home, count } = &mut inner.idle;
        for stack in by_home.iter_mut() {
            let mut i = 0;
            while *count > keep && i < stack.len() {
                let p = &stack[i];
                if now.saturating_sub(p.used_ms) as u128 >= idle_timeout
                    || !Pool::usable(p, settings, now)
                {
                    closed.push(stack.remove(i));
                    *count -= 1;
                } else {
                    i += 1;
                }
            }
        }
        drop(inner);
        closed
    }
}

/// Pools the gateway keeps at most. A pool is made per database name a client asks for (with
/// `databases = []`, any name), so names alone must not grow memory and metric series without
/// end: vacant pools are dropped every second (`Pools::sweep`), and beyond this many at once
/// new ones are refused.
pub const MAX_POOLS: usize = 10_000;

/// Takes one off a gauge when dropped.
struct CountDown<'a>(&'a AtomicU64);

impl Drop for CountDown<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every pool of the gateway.
#[derive(Debug, Default)]
pub struct Pools {
    map: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    /// The pool for `key`, made if needed; `None` when `MAX_POOLS` are in use.
    pub fn get(&self, key: PoolKey, size: u32) -> Option<Arc<Pool>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = map.get(&key) {
            return Some(p.clone());
        }
        if map.len() >= MAX_POOLS {
            map.retain(|_, p| !p.is_vacant());
            if map.len() >= MAX_POOLS {
                return None;
            }
        }
        let pool = Arc::new(Pool::new(key.clone(), size));
        map.insert(key, pool.clone());
        Some(pool)
    }

    /// Drop the pools nobody uses: no connection open, nobody waiting, no session holding
    /// them (they are made again when needed). Returns how many went.
    pub fn sweep(&self) -> usize {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        map.retain(|_, p| !p.is_vacant());
        before - map.len()
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
