//! Multiplexing: the shared server connections of a Redis listener in transaction mode.
//!
//! A pool is keyed by (listener, target, backend credential, db, protocol version): RESP2 and
//! RESP3 clients never share a server connection, nor do clients of different databases, since
//! the protocol and the selected db are state of the server connection. Each shared connection
//! is one task that owns the socket: it takes whole batches of commands from clients (a
//! client's pipeline is one batch, written contiguously, so a `MULTI ... EXEC` block in one
//! batch is never interleaved with another client's commands), writes what has gathered in one
//! write, and follows the replies frame by frame, handing each client the bytes of its own
//! replies in order.
//!
//! Zero trust: the connection keeps a queue of who is owed how many replies (`fifo`), in the
//! order the batches were written. A reply goes to the head of that queue and nowhere else.
//! A client that goes away still has its replies read (and dropped) so the next client's
//! replies line up. Anything that makes the connection's state unknown (a reply nobody asked
//! for, a RESP3 push, a framing error, a read or write error) closes the connection and ends
//! every client that was owed a reply on it: they are never handed bytes that might not be
//! theirs.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use sumun_wire::resp::{FrameKind, Limits, ReplyFramer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

use super::session::Io;
use crate::targets::TargetRt;

/// Why a client holds a server connection of its own, in the order of [`PoolStats::dedicated`].
pub const DEDICATED_REASONS: [&str; 11] = [
    "session",
    "pubsub",
    "multi",
    "watch",
    "blocking",
    "wait",
    "tracking",
    "monitor",
    "client_reply",
    "client_state",
    "other",
];

/// The index of `reason` in [`DEDICATED_REASONS`] (`other` for a name not in it).
pub fn reason_index(reason: &str) -> usize {
    DEDICATED_REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(DEDICATED_REASONS.len() - 1)
}

/// A client owed more than this many bytes of replies it has not taken is closed (Redis's
/// `client-output-buffer-limit`; a slow client must not make the gateway hold the replies of a
/// connection others share).
pub const MAX_OUTPUT: usize = 256 << 20;
/// Open another shared connection (up to the pool size) when the least busy one has this
/// many replies in flight.
const GROW_AT: usize = 256;
/// The most bytes of gathered batches written at once.
const MAX_WRITE: usize = 1 << 20;

/// Where a shared connection puts a client's replies: the bytes, where each whole reply
/// ends, and whether the connection failed. The client's task takes them when notified.
#[derive(Default)]
pub struct Sink {
    state: Mutex<SinkState>,
    pub notify: Notify,
}

#[derive(Default)]
struct SinkState {
    bytes: Vec<u8>,
    /// Offsets in `bytes` just past each complete reply.
    ends: Vec<usize>,
    failed: bool,
    overflow: bool,
    /// The client is gone: drop what comes.
    gone: bool,
}

/// What [`Sink::take`] found besides bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkStatus {
    Ok,
    /// The server connection failed with replies owed to this client.
    Failed,
    /// The client did not take its replies: more than [`MAX_OUTPUT`] held.
    Overflow,
}

impl Sink {
    fn push(&self, bytes: &[u8], ends: &[usize]) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.gone || s.overflow {
            return;
        }
        let base = s.bytes.len();
        s.bytes.extend_from_slice(bytes);
        s.ends.extend(ends.iter().map(|e| base + e));
        if s.bytes.len() > MAX_OUTPUT {
            s.overflow = true;
            s.bytes = Vec::new();
            s.ends = Vec::new();
        }
        drop(s);
        self.notify.notify_one();
    }

    fn fail(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.failed = true;
        drop(s);
        self.notify.notify_one();
    }

    /// Move what arrived into `bytes` and `ends` (both cleared first).
    pub fn take(&self, bytes: &mut Vec<u8>, ends: &mut Vec<usize>) -> SinkStatus {
        bytes.clear();
        ends.clear();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut s.bytes, bytes);
        std::mem::swap(&mut s.ends, ends);
        if s.overflow {
            SinkStatus::Overflow
        } else if s.failed {
            SinkStatus::Failed
        } else {
            SinkStatus::Ok
        }
    }

    /// The client is gone: replies still owed to it are read and dropped.
    pub fn close(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.gone = true;
        s.bytes = Vec::new();
        s.ends = Vec::new();
    }
}

/// One client's batch: whole commands, and how many replies the server owes for them.
pub struct Batch {
    pub bytes: Vec<u8>,
    pub replies: usize,
    pub sink: Arc<Sink>,
}

/// A shared server connection, as clients and the pool see it.
pub struct SharedConn {
    tx: mpsc::UnboundedSender<Batch>,
    /// Replies owed by the server on this connection.
    inflight: AtomicUsize,
    alive: AtomicBool,
    retire: Notify,
    /// `unix_now()` of the last batch.
    last_used: AtomicU64,
}

impl SharedConn {
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// Busy enough that a client starting a new batch should look for a less busy one.
    pub fn busy(&self) -> bool {
        self.inflight.load(Ordering::Relaxed) >= GROW_AT
    }

    /// Queue a batch. Gives it back when the connection is closed (nothing of it was written).
    pub fn submit(&self, batch: Batch) -> Result<(), Batch> {
        if !self.alive() {
            return Err(batch);
        }
        let n = batch.replies;
        self.inflight.fetch_add(n, Ordering::Relaxed);
        self.last_used
            .store(crate::records::unix_now(), Ordering::Relaxed);
        match self.tx.send(batch) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.inflight.fetch_sub(n, Ordering::Relaxed);
                Err(e.0)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub listener: Arc<str>,
    pub target: String,
    pub credential: String,
    pub db: i64,
    pub proto: u8,
}

#[derive(Debug, Default)]
pub struct PoolStats {
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
    /// Server connections closed because their state became unknown.
    pub broken: AtomicU64,
    pub batches: AtomicU64,
    pub commands: AtomicU64,
    /// Clients holding a dedicated server connection now, by reason.
    pub dedicated: [AtomicU64; DEDICATED_REASONS.len()],
    /// Clients moved to a dedicated server connection, by reason, since start.
    pub dedicated_total: [AtomicU64; DEDICATED_REASONS.len()],
}

#[derive(Default)]
struct PoolState {
    conns: Vec<Arc<SharedConn>>,
    opening: u32,
    /// The last failed open: its error and when (`unix_now`), so clients arriving just after a
    /// failure get it at once instead of each trying again.
    last_error: Option<(String, u64)>,
}

/// How a pool opens a server connection: logs in, selects the db and the protocol, and gives
/// back the stream and the server's `HELLO` reply (the template of the gateway's answers).
pub type Opener = Arc<
    dyn Fn() -> crate::frontend::BoxFuture<'static, Result<(Box<dyn Io>, Vec<u8>), String>>
        + Send
        + Sync,
>;

pub struct MuxPool {
    pub key: PoolKey,
    pub target: Arc<TargetRt>,
    pub size: AtomicU32,
    /// Whether this pool multiplexes (transaction mode) or only counts dedicated clients.
    pub multiplexed: AtomicBool,
    state: Mutex<PoolState>,
    opened: Notify,
    /// The server's reply to `HELLO <proto>` on this pool's connections.
    hello: Mutex<Option<Vec<u8>>>,
    pub stats: PoolStats,
}

/// A dedicated server connection held by a client, counted in its pool's row until dropped.
pub struct DedicatedCount {
    pool: Arc<MuxPool>,
    index: usize,
}

impl DedicatedCount {
    pub fn new(pool: &Arc<MuxPool>, reason: &str) -> DedicatedCount {
        let index = reason_index(reason);
        pool.stats.dedicated[index].fetch_add(1, Ordering::Relaxed);
        pool.stats.dedicated_total[index].fetch_add(1, Ordering::Relaxed);
        DedicatedCount {
            pool: pool.clone(),
            index,
        }
    }
}

impl Drop for DedicatedCount {
    fn drop(&mut self) {
        self.pool.stats.dedicated[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

impl MuxPool {
    pub fn hello(&self) -> Option<Vec<u8>> {
        self.hello.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Open shared connections.
    pub fn open_count(&self) -> usize {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.conns.retain(|c| c.alive());
        st.conns.len()
    }

    /// Replies in flight on this pool's connections.
    pub fn inflight(&self) -> usize {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.conns
            .iter()
            .map(|c| c.inflight.load(Ordering::Relaxed))
            .sum()
    }

    /// A shared connection for a client's next batch: the least busy one, opening another in
    /// the background when all are busy and the pool has room, or opening the first one (and
    /// waiting for it) when there is none.
    pub async fn get(
        self: &Arc<Self>,
        opener: &Opener,
        timeout: std::time::Duration,
    ) -> Result<Arc<SharedConn>, String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let notified = self.opened.notified();
            tokio::pin!(notified);
            let open_now = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                st.conns.retain(|c| c.alive());
                let size = self.size.load(Ordering::Relaxed).max(1);
                let best = st
                    .conns
                    .iter()
                    .min_by_key(|c| c.inflight.load(Ordering::Relaxed))
                    .cloned();
                if let Some(best) = best {
                    // One opening at a time: a burst of busy clients adds one connection, and
                    // the next only if that one gets as busy.
                    if best.inflight.load(Ordering::Relaxed) >= GROW_AT
                        && st.opening == 0
                        && (st.conns.len() as u32) < size
                    {
                        st.opening += 1;
                        let pool = self.clone();
                        let opener = opener.clone();
                        drop(tokio::spawn(async move {
                            let _ = pool.open_one(&opener).await;
                        }));
                    }
                    return Ok(best);
                }
                if let Some((e, at)) = &st.last_error {
                    if crate::records::unix_now().saturating_sub(*at) < 1 && st.opening == 0 {
                        return Err(e.clone());
                    }
                }
                if st.opening == 0 {
                    st.opening += 1;
                    true
                } else {
                    notified.as_mut().enable();
                    false
                }
            };
            if open_now {
                return self.open_one(opener).await;
            }
            if crate::workers::timeout_at(deadline, notified)
                .await
                .is_err()
            {
                return Err(
                    "no server connection became free in time (pool checkout_timeout)".into(),
                );
            }
        }
    }

    /// Open a connection (the caller counted it in `opening`) and add it to the pool.
    async fn open_one(self: &Arc<Self>, opener: &Opener) -> Result<Arc<SharedConn>, String> {
        let result = opener().await;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.opening = st.opening.saturating_sub(1);
        let out = match result {
            Ok((stream, hello)) => {
                self.stats.connects.fetch_add(1, Ordering::Relaxed);
                *self.hello.lock().unwrap_or_else(|p| p.into_inner()) = Some(hello);
                let (tx, rx) = mpsc::unbounded_channel();
                let conn = Arc::new(SharedConn {
                    tx,
                    inflight: AtomicUsize::new(0),
                    alive: AtomicBool::new(true),
                    retire: Notify::new(),
                    last_used: AtomicU64::new(crate::records::unix_now()),
                });
                st.conns.push(conn.clone());
                st.last_error = None;
                drop(tokio::spawn(run(
                    conn.clone(),
                    stream,
                    rx,
                    Arc::downgrade(self),
                )));
                Ok(conn)
            }
            Err(e) => {
                self.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                st.last_error = Some((e.clone(), crate::records::unix_now()));
                Err(e)
            }
        };
        drop(st);
        self.opened.notify_waiters();
        out
    }

    /// Close connections idle longer than `idle` (keeping `min_idle`), and those over the
    /// pool's size once they are idle.
    pub fn housekeeping(&self, idle: std::time::Duration, min_idle: u32) {
        let now = crate::records::unix_now();
        let size = self.size.load(Ordering::Relaxed) as usize;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.conns.retain(|c| c.alive());
        let mut keep = Vec::with_capacity(st.conns.len());
        let multiplexed = self.multiplexed.load(Ordering::Relaxed);
        for c in std::mem::take(&mut st.conns) {
            let quiet = c.inflight.load(Ordering::Relaxed) == 0;
            let idle_for = now.saturating_sub(c.last_used.load(Ordering::Relaxed));
            let too_idle = idle_for >= idle.as_secs() && keep.len() >= min_idle as usize;
            if quiet && (keep.len() >= size || too_idle || !multiplexed) {
                c.retire.notify_one();
            } else {
                keep.push(c);
            }
        }
        st.conns = keep;
    }

    /// Close every connection (the listener is gone).
    pub fn retire_all(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for c in st.conns.drain(..) {
            c.retire.notify_one();
        }
    }
}

/// Every pool of the Redis front end.
#[derive(Default)]
pub struct MuxPools {
    pools: Mutex<HashMap<PoolKey, Arc<MuxPool>>>,
}

impl MuxPools {
    pub fn pool(
        &self,
        key: PoolKey,
        target: &Arc<TargetRt>,
        size: u32,
        multiplexed: bool,
    ) -> Arc<MuxPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let pool = pools.entry(key.clone()).or_insert_with(|| {
            Arc::new(MuxPool {
                key,
                target: target.clone(),
                size: AtomicU32::new(size),
                multiplexed: AtomicBool::new(multiplexed),
                state: Mutex::new(PoolState::default()),
                opened: Notify::new(),
                hello: Mutex::new(None),
                stats: PoolStats::default(),
            })
        });
        pool.size.store(size, Ordering::Relaxed);
        if multiplexed {
            pool.multiplexed.store(true, Ordering::Relaxed);
        }
        pool.clone()
    }

    pub fn all(&self) -> Vec<Arc<MuxPool>> {
        let mut v: Vec<Arc<MuxPool>> = self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            (
                &a.key.listener,
                &a.key.target,
                &a.key.credential,
                a.key.db,
                a.key.proto,
            )
                .cmp(&(
                    &b.key.listener,
                    &b.key.target,
                    &b.key.credential,
                    b.key.db,
                    b.key.proto,
                ))
        });
        v
    }

    /// Forget pools of listeners that are gone (closing their connections).
    pub fn retain(&self, keep: impl Fn(&PoolKey) -> bool) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|k, p| {
            let kept = keep(k);
            if !kept {
                p.retire_all();
            }
            kept
        });
    }
}

/// One client's place in a connection's reply queue.
struct Owed {
    sink: Arc<Sink>,
    replies: usize,
}

/// A shared connection's task: write gathered batches, route replies, until the connection
/// fails or is retired.
async fn run(
    conn: Arc<SharedConn>,
    mut stream: Box<dyn Io>,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    pool: Weak<MuxPool>,
) {
    let mut fifo: VecDeque<Owed> = VecDeque::new();
    let mut framer = ReplyFramer::new(Limits::default());
    let mut chunk = vec![0u8; 64 * 1024];
    let mut sbuf: Vec<u8> = Vec::new();
    let mut wbuf: Vec<u8> = Vec::new();
    let mut closing = false;
    let broken: Option<&'static str> = loop {
        if closing && fifo.is_empty() {
            break None;
        }
        tokio::select! {
            biased;
            r = stream.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break Some("the server closed the connection"),
                Ok(n) => {
                    sbuf.extend_from_slice(&chunk[..n]);
                    if let Err(why) = route(&mut sbuf, &mut framer, &mut fifo, &conn) {
                        break Some(why);
                    }
                }
            },
            b = rx.recv(), if !closing => match b {
                None => closing = true,
                Some(b) => {
                    let mut gathered = 1u64;
                    let mut commands = b.replies as u64;
                    // One batch alone is written from its own buffer; more are gathered.
                    let mut first = Some(b.bytes);
                    fifo.push_back(Owed { sink: b.sink, replies: b.replies });
                    let mut size = first.as_ref().map_or(0, Vec::len);
                    while size < MAX_WRITE {
                        match rx.try_recv() {
                            Ok(b) => {
                                if let Some(f) = first.take() {
                                    wbuf.extend_from_slice(&f);
                                }
                                gathered += 1;
                                commands += b.replies as u64;
                                size += b.bytes.len();
                                wbuf.extend_from_slice(&b.bytes);
                                fifo.push_back(Owed { sink: b.sink, replies: b.replies });
                            }
                            Err(_) => break,
                        }
                    }
                    // Batches owing no reply (none are made: the session sends only commands
                    // that are answered) would stay at the head of the queue.
                    fifo.retain(|o| o.replies > 0);
                    if let Some(p) = pool.upgrade() {
                        p.stats.batches.fetch_add(gathered, Ordering::Relaxed);
                        p.stats.commands.fetch_add(commands, Ordering::Relaxed);
                    }
                    let bytes = first.as_deref().unwrap_or(&wbuf);
                    if stream.write_all(bytes).await.is_err() || stream.flush().await.is_err() {
                        break Some("write to the server failed");
                    }
                    wbuf.clear();
                }
            },
            () = conn.retire.notified(), if !closing => {
                // No new batches; those already queued are written and answered first.
                rx.close();
                closing = true;
            }
        }
    };
    conn.alive.store(false, Ordering::Relaxed);
    rx.close();
    let mut failed = 0usize;
    for o in fifo.drain(..) {
        o.sink.fail();
        failed += 1;
    }
    while let Ok(b) = rx.try_recv() {
        b.sink.fail();
        failed += 1;
    }
    if let Some(why) = broken {
        if let Some(p) = pool.upgrade() {
            p.stats.broken.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target = %p.key.target, clients = failed, reason = why, "closed a shared Redis server connection");
        }
    }
    let _ = stream.shutdown().await;
}

/// Hand the complete and partial replies in `sbuf` to the clients they belong to, in order.
fn route(
    sbuf: &mut Vec<u8>,
    framer: &mut ReplyFramer,
    fifo: &mut VecDeque<Owed>,
    conn: &SharedConn,
) -> Result<(), &'static str> {
    let mut pos = 0;
    // Bytes for the head of the queue, gathered to be handed over at once.
    let mut acc_from = 0;
    let mut ends: Vec<usize> = Vec::new();
    let result = loop {
        if pos == sbuf.len() {
            break Ok(());
        }
        let Some(head) = fifo.front_mut() else {
            break Err("the server sent a reply nobody asked for");
        };
        if !framer.in_frame() && sbuf[pos] == b'>' {
            break Err("the server sent a push on a shared connection");
        }
        let adv = match framer.advance(&sbuf[pos..]) {
            Ok(a) => a,
            Err(_) => break Err("the server's reply could not be framed"),
        };
        pos += adv.consumed;
        match adv.complete {
            None => break Ok(()),
            Some(FrameKind::Push) => break Err("the server sent a push on a shared connection"),
            Some(FrameKind::Reply | FrameKind::Error) => {
                ends.push(pos - acc_from);
                conn.inflight.fetch_sub(1, Ordering::Relaxed);
                head.replies -= 1;
                if head.replies == 0 {
                    head.sink.push(&sbuf[acc_from..pos], &ends);
                    ends.clear();
                    acc_from = pos;
                    fifo.pop_front();
                }
            }
        }
    };
    if result.is_ok() && pos > acc_from {
        if let Some(head) = fifo.front() {
            head.sink.push(&sbuf[acc_from..pos], &ends);
        }
    }
    sbuf.drain(..pos);
    result
}
