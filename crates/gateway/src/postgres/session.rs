//! A logged-in client: the relay between it and the backend connections it is given.
//!
//! Both directions are read into growable buffers through the per-thread scratch buffer (an
//! idle client holds no buffer) and scanned message by message — headers only, except for the
//! few messages the gateway acts on — then written on unchanged. The scan is what makes pooling
//! possible:
//!
//! - Every `Query` and `Sync` the client sends is a point the server will answer with
//!   ReadyForQuery. When the server has answered all of them and says it is idle (`Z` with
//!   `I`), a transaction-mode client gives its server back to the pool; its next message takes
//!   one again, possibly another, possibly on another target.
//! - Session state that cannot follow the client to another server (SET outside a
//!   transaction, LISTEN, session advisory locks, temp tables, WITH HOLD cursors, SQL PREPARE)
//!   pins the client to its server for the rest of the session.
//! - Startup parameters (`application_name`, `DateStyle`, `-c` options...) are applied with
//!   `SET` when the server's current values differ.
//! - `query` audit events pair each statement with its CommandComplete or ErrorResponse.
//!
//! Memory is bounded: a message larger than the buffer limit is streamed through without
//! being held whole, and a client that stops reading stops the gateway reading its server.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sumun_config::{PoolMode, QueryAudit};
use sumun_wire::postgres::{self as pg, Writer};
use sumun_wire::sql;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::auth::Identity;
use super::cancel::CancelKey;
use super::pool::{CheckoutError, Pool, PoolKey, Pooled, Slot};
use super::server::{Login, ServerConn, ServerError, StatementId};
use super::stream::ClientStream;
use super::{fatal, ClientStartup};
use crate::conn::Admitted;
use crate::listener::{ListenerRt, ListenerSnapshot};
use crate::relay::poll_read_append;
use crate::targets::{Observation, TargetRt, Want};
use crate::Shared;

/// Messages up to this size are gathered whole before they are forwarded; larger ones stream.
const GATHER_LIMIT: usize = 256 * 1024;
/// Bytes read per system call.
const READ_LIMIT: usize = 64 * 1024;
/// The most either buffer of a session ever holds: one message being gathered and one read.
const BUFFER_LIMIT: usize = GATHER_LIMIT + READ_LIMIT;
/// The largest message length accepted (PostgreSQL's own limit is about 1 GiB).
const MAX_MESSAGE: usize = (1 << 30) + 4;
/// The longest a client that has sent nothing since its login waits before it parks.
const FRESH_PARK: Duration = Duration::from_millis(20);
/// Statement text kept for audit and analysis.
const SQL_KEEP: usize = 16 * 1024;

struct Attached {
    pool: Arc<Pool>,
    server: Box<Pooled>,
    target: Arc<TargetRt>,
    /// Bytes sent since attaching, kept until the server answers so a request can be replayed
    /// on another server when the first one turns out dead. `None` once answered or too big.
    replay: Vec<u8>,
    /// False once the server answered or the request outgrew the replay buffer.
    replayable: bool,
    /// Counts the session in the target's active flows while attached (a guard, so a panic
    /// cannot leave the count behind).
    _active: crate::conn::TargetActive,
}

/// Replay buffers up to this size stay with the session between transactions (the usual
/// statement), so a transaction does not allocate one; larger ones are freed.
const REPLAY_KEEP: usize = 512;

impl Attached {
    fn new(pool: Arc<Pool>, server: Box<Pooled>, target: Arc<TargetRt>) -> Attached {
        Attached {
            // Before `target` moves in.
            _active: crate::conn::TargetActive::new(&target),
            pool,
            server,
            target,
            replay: Vec::new(),
            replayable: true,
        }
    }

    /// Nothing sent so far may be sent again elsewhere.
    fn answered(&mut self) {
        self.replayable = false;
        self.replay.clear();
    }
}

/// One statement waiting for its outcome, for the audit log.
struct Inflight {
    text: String,
    started: Instant,
    rows: u64,
    error: Option<String>,
    /// From a simple Query (may hold several statements; done at ReadyForQuery) rather than
    /// an Execute (done at its CommandComplete or error).
    simple: bool,
}

/// A message being streamed through because it is larger than the gather limit.
#[derive(Default)]
struct Streaming {
    remaining: usize,
}

/// What every session of one login shape shares: the same listener settings, user, database,
/// startup parameters and backend user. Interned (`PgShared::profiles`), so ten thousand
/// clients of one application hold one copy, not ten thousand (idle memory).
#[derive(Debug)]
pub(crate) struct Profile {
    pub startup: ClientStartup,
    pub identity: Identity,
    /// Who the gateway logs in to servers as (the vault secret's username, or the client's).
    pub backend_user: String,
    /// The startup parameters as applied to servers (see `ServerConn::applied_for`).
    pub params: Arc<[(String, String)]>,
    pub mode: PoolMode,
    pub audit: Option<QueryAudit>,
    pub listener: Arc<str>,
}

impl Profile {
    fn same(&self, other: &Profile) -> bool {
        let (a, b) = (&self.startup, &other.startup);
        a.user == b.user
            && a.database == b.database
            && a.params == b.params
            && self.identity.user == other.identity.user
            && self.identity.method == other.identity.method
            && self.backend_user == other.backend_user
            && self.mode == other.mode
            && self.audit == other.audit
            && self.listener == other.listener
    }
}

/// Interned profiles by a hash of their listener, user, database and parameters.
#[derive(Default)]
pub struct Profiles {
    map: std::sync::Mutex<ProfileMap>,
}

#[derive(Default)]
struct ProfileMap {
    by_hash: std::collections::HashMap<u64, Vec<std::sync::Weak<Profile>>>,
    /// Entries when dead ones were last swept; the next sweep is due at twice as many.
    swept_at: usize,
}

impl std::fmt::Debug for Profiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Profiles")
    }
}

impl Profiles {
    /// The shared copy of `profile`: an equal one already in use, or this one from now on.
    fn intern(&self, profile: Profile) -> Arc<Profile> {
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                &profile.listener,
                &profile.startup.user,
                &profile.startup.database,
            )
                .hash(&mut h);
            profile.startup.params.hash(&mut h);
            profile.backend_user.hash(&mut h);
            h.finish()
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = map.by_hash.entry(hash).or_default();
        if let Some(found) = bucket
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .find(|p| p.same(&profile))
        {
            return found;
        }
        let profile = Arc::new(profile);
        bucket.retain(|w| w.strong_count() > 0);
        bucket.push(Arc::downgrade(&profile));
        let len = map.by_hash.len();
        if len > 64 && len >= map.swept_at * 2 {
            map.by_hash.retain(|_, b| {
                b.retain(|w| w.strong_count() > 0);
                !b.is_empty()
            });
            map.swept_at = map.by_hash.len();
        }
        profile
    }
}

/// A client's named prepared statements: its name → (the statement's identity, the Parse
/// message that creates it under the server-side name).
type Statements = std::collections::HashMap<Vec<u8>, (StatementId, Arc<Vec<u8>>)>;

/// What a session keeps between requests, and all a parked client keeps (`park`): no buffers,
/// no server, nothing in flight.
struct Core {
    profile: Arc<Profile>,
    snap: Arc<ListenerSnapshot>,
    listener: Arc<ListenerRt>,
    shared: Arc<Shared>,
    /// The PostgreSQL front end's own state (pools, statistics, caches).
    pg: Arc<super::PostgresFrontEnd>,
    /// The client's row in the registry (cancel key, session id, current server).
    cancel: CancelKey,
    started: Instant,
    /// When the client last sent or was sent something (idle timeout, parking).
    last_activity: Instant,
    /// Nothing received from the client since its login (see `Session::park_delay`).
    fresh: bool,
    queries: u64,
    last_route: Want,
    /// The text of the last Parse, for audit events of the Executes that follow it.
    last_parse: Option<String>,
    flow: Arc<crate::records::ActiveFlow>,
    /// The client's named prepared statements (transaction mode), boxed on first use: most
    /// clients prepare nothing by name.
    statements: Option<Box<Statements>>,
    /// How the last server read string literals: `standard_conforming_strings = off` makes
    /// backslashes escape in '..' strings, which the analysis and the masking must follow.
    dialect: sql::Dialect,
    /// The client's place under the listener's `max_connections`, also while parked.
    _slot: crate::conn::Slot,
}

/// The session of a logged-in client. Set up here, synchronously, so that the future holds
/// the session alone rather than also the arguments it was built from (idle memory).
#[allow(clippy::too_many_arguments)] // each is moved into the session; a struct would only rename them
pub(crate) fn run(
    client: ClientStream,
    mut startup: ClientStartup,
    identity: Identity,
    admitted: Admitted,
    snap: Arc<ListenerSnapshot>,
    slot: crate::conn::Slot,
    shared: Arc<Shared>,
    fe: Arc<super::PostgresFrontEnd>,
) -> Result<
    impl std::future::Future<Output = ()> + Send + 'static,
    (ClientStream, super::cancel::CancelError),
> {
    let listener = slot.listener().clone();
    let mode = super::pool_mode(&snap, Some(&identity.user));
    let audit = match snap.settings.audit_queries {
        QueryAudit::Off => None,
        q if shared.records.wants_statements() => Some(q),
        _ => None,
    };
    let flow = admitted.flow.clone();
    // The username of the backend credential names the pools; the password is read from the
    // vault only when a new server connection is opened.
    let backend_user = identity
        .user
        .backend_credential
        .as_deref()
        .and_then(|name| shared.vault.load_full()?.backend_username(name))
        .unwrap_or_else(|| startup.user.clone());
    let params: Arc<[(String, String)]> = startup.params.clone().into();
    // Channel binding data served the login; sessions of all clients share the rest.
    startup.tls_endpoint = None;
    let profile = fe.profiles.intern(Profile {
        startup,
        identity,
        backend_user,
        params,
        mode,
        audit,
        listener: listener.name.clone(),
    });
    let cancel = match fe.cancels.register(|process_id, secret_key| {
        super::ClientInfo::new(profile.clone(), flow.clone(), process_id, secret_key)
    }) {
        Ok(cancel) => cancel,
        Err(err) => return Err((client, err)),
    };
    let now = Instant::now();
    let s = Session::new(
        client,
        Core {
            profile,
            snap,
            listener,
            shared: shared.clone(),
            pg: fe,
            cancel,
            started: now,
            last_activity: now,
            fresh: true,
            queries: 0,
            last_route: Want::Writer,
            last_parse: None,
            flow,
            statements: None,
            dialect: sql::Dialect::STANDARD,
            _slot: slot,
        },
    );
    s.metrics_open();
    let (listener, peer) = (s.core.listener.clone(), s.core.flow.client);
    let session = async move {
        let mut s = s;
        // The first client of a (listener, database, backend user) logs in to a server now:
        // it proves the credential and database work and gives the parameters to show the
        // client. Later clients are greeted from those parameters and take a server at their
        // first message, as PgBouncer does, so a full session-mode pool makes them wait for a
        // server, not for their login.
        if let Err(end) = Box::pin(s.login_greeting()).await {
            return Box::pin(s.close(end)).await;
        }
        if s.core.profile.mode == PoolMode::Transaction {
            s.detach();
        }
        drive(s).await;
    };
    // The session is a task of its own on this worker, as it is after a park: every event is
    // then a poll of the session alone, not of the connection's task around it (its panic
    // guard, the hand-over, the connection and front-end futures), and the connection's task
    // ends and frees what it held. The session owns all it needs (flow, slot, profile).
    Ok(async move {
        drop(tokio::spawn(crate::workers::contained(
            listener,
            Some(peer),
            session,
        )));
    })
}

/// Serve a session until it ends, or until it parks (its task then ends; the parking lot
/// spawns `drive` again when the client is back).
async fn drive(mut s: Session) {
    loop {
        match s.relay().await {
            Step::End(end) => return Box::pin(s.close(end)).await,
            Step::Park => match s.park() {
                Ok(()) => return,
                Err(back) => {
                    // Not parked (the gateway is stopping, or no lot): serve on unparked.
                    s = *back;
                    s.park_after = None;
                }
            },
        }
    }
}

/// A waker a session's relay polls one of its sources with (the client's socket; the timer
/// and the stop): it notes that the source woke the task, then wakes the task. The relay polls
/// the source only when it is noted (or never polled yet), which is correct as long as nothing
/// else polls that source with another waker.
struct SourceWake {
    woken: AtomicBool,
    task: std::task::Waker,
}

/// The relay's two source wakers (the client's socket; the timer and the stop), for one task.
struct RelayWakers {
    client: Arc<SourceWake>,
    client_waker: std::task::Waker,
    control: Arc<SourceWake>,
    control_waker: std::task::Waker,
}

impl RelayWakers {
    /// The wakers for the task polling now: made on the first poll, and made again (noted, so
    /// every source is polled and registers them) if the task's waker changed.
    #[inline]
    fn for_task<'a>(
        slot: &'a mut Option<RelayWakers>,
        cx: &std::task::Context<'_>,
    ) -> &'a RelayWakers {
        if !slot
            .as_ref()
            .is_some_and(|w| w.client.task.will_wake(cx.waker()))
        {
            *slot = None;
        }
        slot.get_or_insert_with(|| {
            let source = || {
                let wake = Arc::new(SourceWake {
                    woken: AtomicBool::new(true),
                    task: cx.waker().clone(),
                });
                let waker = std::task::Waker::from(wake.clone());
                (wake, waker)
            };
            let (client, client_waker) = source();
            let (control, control_waker) = source();
            RelayWakers {
                client,
                client_waker,
                control,
                control_waker,
            }
        })
    }
}

impl std::task::Wake for SourceWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// A parked client's session: its `Core`, and its TLS state when it has TLS.
struct Asleep {
    core: Core,
    tls: Option<Box<super::stream::ClientTls>>,
}

impl crate::park::Dormant for Asleep {
    fn listener(&self) -> &Arc<ListenerRt> {
        &self.core.listener
    }

    fn wake(
        self: Box<Self>,
        client: tokio::net::TcpStream,
        readable: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            if readable {
                // The socket has just joined this event loop, which learns that it is readable
                // at its next turn; until then a read would find nothing, and a session idle
                // past `park_after` would park again at once instead of reading.
                let _ = crate::workers::timeout(Duration::from_secs(1), client.readable()).await;
            }
            let Asleep { core, tls } = *self;
            drive(Session::new(ClientStream::unpark(client, tls), core)).await
        })
    }

    fn abandon(self: Box<Self>, why: std::io::Error) {
        let core = &self.core;
        tracing::warn!(listener = %core.listener.name, client = %core.flow.client, error = %why, "a parked client cannot be resumed; closing it");
        core.end_records(&End::ClientError(why), None);
    }
}

struct Session {
    client: ClientStream,
    core: Core,
    attached: Option<Attached>,
    cbuf: Vec<u8>,
    sbuf: Vec<u8>,
    c_stream: Streaming,
    s_stream: Streaming,
    /// Query/Sync messages sent that the server has not yet answered with ReadyForQuery.
    pending: u32,
    /// The same Queries (`Q`) and Syncs (`S`) in the order sent, with the client's CopyDone or
    /// CopyFail (`c`) among them: a server in COPY FROM STDIN ignores the Syncs it reads
    /// until the copy ends (drivers send one right after the Execute that starts it), and
    /// only its CopyInResponse says which ones those were (`copy_in_started`).
    unanswered: VecDeque<u8>,
    /// The server is in COPY FROM STDIN and the client has not ended it: its Syncs until
    /// then go unanswered, so they are not counted.
    copy_in_open: bool,
    /// The transaction status of the last ReadyForQuery.
    tx_status: u8,
    pinned: Option<&'static str>,
    inflight: VecDeque<Inflight>,
    /// The server has sent something since the current request was forwarded.
    responded: bool,
    in_copy: bool,
    /// Pools this session has used, by target.
    pools: Vec<(SocketAddr, Arc<Pool>)>,
    /// What the current server has been sent and not yet answered, in order, as far as
    /// prepared statements go: which Parses create a statement there (a failed or skipped one
    /// creates nothing, so its statement is taken back out of the server's `prepared` set),
    /// and which ParseComplete/CloseComplete answers belong to messages the gateway slipped in.
    parses: VecDeque<Sent>,
    /// The replay buffer between transactions (see `REPLAY_KEEP`).
    replay_spare: Vec<u8>,
    /// Idle this long, the client is parked (`[gateway] park_after`; `None` after a failed
    /// attempt).
    park_after: Option<Duration>,
    /// Check every idle server for a close before taking it, not only those idle over a
    /// second: set while a session-mode client logs in, where no replay would hide a dead one.
    verify_idle: bool,
}

/// What `relay` stopped for.
enum Step {
    End(End),
    /// Idle long enough, with nothing in flight and no server: park the client.
    Park,
}
/// What the current server has been sent and not yet answered, as far as prepared statements
/// are concerned.
enum Sent {
    /// A Parse, and the statement it creates on the server, if any. An `injected` one was
    /// sent by the gateway: its ParseComplete is not the client's business.
    Parse {
        created: Option<StatementId>,
        injected: bool,
    },
    /// A Close; an `injected` one's CloseComplete is swallowed too.
    Close { injected: bool },
    /// A Sync or Query: the server answers it with ReadyForQuery, and an error before it
    /// makes the server skip every message up to it.
    Sync,
}

/// How a session ended.
enum End {
    /// The client sent Terminate or closed.
    ClientClosed,
    ClientError(std::io::Error),
    /// The server failed; the client was told.
    ServerLost(String),
    /// The client's server ended its session (FATAL), and the client was given its message.
    ServerClosed(String),
    IdleTimeout,
    Stopped,
    /// The gateway refused something and told the client.
    Refused(&'static str),
}

impl End {
    fn label(&self) -> &'static str {
        match self {
            End::ClientClosed => "closed",
            End::ClientError(_) => "client_error",
            End::ServerLost(_) => "target_error",
            End::ServerClosed(_) => "server_closed",
            End::IdleTimeout => "idle_timeout",
            End::Stopped => "stopped",
            End::Refused(_) => "refused",
        }
    }
}

impl Session {
    fn metrics_open(&self) {
        let m = &self.core.listener.metrics;
        m.new_flows.fetch_add(1, Ordering::Relaxed);
    }

    /// Count bytes read from the client (`inbound`) or from the server, for flow records.
    /// The session is its flow's only writer, so a plain store does (no locked add).
    fn count(&mut self, inbound: bool, n: usize) {
        let c = &self.core.flow.counters;
        let (bytes, packets) = if inbound {
            (&c.bytes_in, &c.packets_in)
        } else {
            (&c.bytes_out, &c.packets_out)
        };
        bytes.store(bytes.load(Ordering::Relaxed) + n as u64, Ordering::Relaxed);
        packets.store(packets.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    fn settings(&self) -> &sumun_config::PoolSettings {
        &self.core.snap.settings.pool
    }

    fn new(client: ClientStream, core: Core) -> Session {
        Session {
            client,
            attached: None,
            cbuf: Vec::new(),
            sbuf: Vec::new(),
            c_stream: Streaming::default(),
            s_stream: Streaming::default(),
            pending: 0,
            unanswered: VecDeque::new(),
            copy_in_open: false,
            tx_status: b'I',
            pinned: None,
            inflight: VecDeque::new(),
            responded: false,
            in_copy: false,
            pools: Vec::new(),
            parses: VecDeque::new(),
            replay_spare: Vec::new(),
            park_after: Some(core.shared.config.load().gateway.park_after),
            verify_idle: false,
            core,
        }
    }

    /// Idle with nothing to lose: no server, no bytes buffered either way (TLS included),
    /// nothing in flight.
    fn parkable(&self) -> bool {
        self.attached.is_none()
            && self.cbuf.is_empty()
            && self.c_stream.remaining == 0
            && self.inflight.is_empty()
            && self.pending == 0
            && !self.in_copy
            && self.client.can_park()
    }

    /// How long this client may sit idle before it parks: `park_after`, or `FRESH_PARK` at
    /// most while it has said nothing since it logged in — a client that logs in and stays
    /// silent is usually an application pool's spare connection, and a burst of those would
    /// otherwise all wait out `park_after` in their tasks at once (memory that the allocator
    /// keeps afterwards).
    fn park_delay(&self) -> Option<Duration> {
        let after = self.park_after?;
        Some(if self.core.fresh {
            after.min(FRESH_PARK)
        } else {
            after
        })
    }

    /// Leave the task: the socket and the core go to the worker's parking lot.
    fn park(self) -> Result<(), Box<Session>> {
        let Session { client, core, .. } = self;
        let (socket, tls) = match client.park() {
            Ok(parts) => parts,
            Err(client) => return Err(Box::new(Session::new(client, core))),
        };
        let shared = core.shared.clone();
        let deadline = (core.last_activity + core.snap.settings.idle_limit()).into_std();
        crate::park::park(&shared, socket, Box::new(Asleep { core, tls }), deadline).map_err(
            |(socket, asleep)| {
                let Asleep { core, tls } = *asleep;
                Box::new(Session::new(ClientStream::unpark(socket, tls), core))
            },
        )
    }

    /// Relay until the session ends or should park.
    async fn relay(&mut self) -> Step {
        let idle = self.core.snap.settings.idle_limit();
        // A forced stop, registered once and then an atomic load per event.
        let shared = self.core.shared.clone();
        let stopped = shared.stop.wait();
        tokio::pin!(stopped);
        // One timer for the idle timeout and for parking. Events only count themselves; the
        // timer, when it fires, turns "something happened since" into `last_activity` (no
        // clock read per message), so a client parks after its park delay to twice that, and
        // the idle timeout is exact to within one period. It is an alarm of the data plane's
        // clock thread, not a tokio timer: a pending tokio timer makes every park of the event
        // loop scan the timer wheel and read the clock.
        let period = |park_after: Option<Duration>| {
            // At least 10 ms: a busy client is looked at no more often than that.
            park_after
                .unwrap_or(idle / 8)
                .min(idle)
                .max(Duration::from_millis(10))
        };
        let mut timer = crate::workers::Alarm::new();
        timer.set((self.core.last_activity + period(self.park_delay())).into_std());
        // The client's socket is polled with a waker of its own that notes it woke the task:
        // a wake-up by the server (the answer that ends a transaction) then skips a client
        // poll that could only say "pending" again (its registration from the last one still
        // stands). Only this loop reads the client, so nothing else replaces that waker. The
        // timer and the stop share another such waker: they are looked at only when one of
        // them woke the task (they too are polled nowhere else).
        let mut wakers: Option<RelayWakers> = None;
        let mut events: u64 = 0;
        let mut seen: u64 = 0;
        loop {
            let event = {
                let Session {
                    client,
                    cbuf,
                    sbuf,
                    attached: att,
                    ..
                } = self;
                // By hand rather than `select!`, which builds a future per source each turn:
                // the server first, then the client, the timer and the stop.
                std::future::poll_fn(|cx| {
                    use std::task::Poll;
                    if let Some(a) = att.as_mut() {
                        let server = &mut a.server.conn.stream;
                        if let Poll::Ready(r) = poll_read_append(cx, server, sbuf, READ_LIMIT) {
                            return Poll::Ready(Event::Server(r));
                        }
                    }
                    let w = RelayWakers::for_task(&mut wakers, cx);
                    let (wake, waker) = (&w.client, &w.client_waker);
                    // Cleared before the poll: a wake-up from here on sets it again.
                    if wake.woken.swap(false, Ordering::AcqRel) {
                        let mut ccx = std::task::Context::from_waker(waker);
                        if let Poll::Ready(r) = poll_read_append(&mut ccx, client, cbuf, READ_LIMIT)
                        {
                            // More may be there: polled again next time.
                            wake.woken.store(true, Ordering::Release);
                            return Poll::Ready(Event::Client(r));
                        }
                    }
                    let (wake, waker) = (&w.control, &w.control_waker);
                    if wake.woken.swap(false, Ordering::AcqRel) {
                        let mut ccx = std::task::Context::from_waker(waker);
                        // Either being ready, both are looked at again next time (the timer
                        // is set again meanwhile).
                        if timer.poll_rung(&mut ccx).is_ready() {
                            wake.woken.store(true, Ordering::Release);
                            return Poll::Ready(Event::Timer);
                        }
                        if std::future::Future::poll(stopped.as_mut(), &mut ccx).is_ready() {
                            wake.woken.store(true, Ordering::Release);
                            return Poll::Ready(Event::Phase);
                        }
                    }
                    Poll::Pending
                })
                .await
            };
            let end = match event {
                Event::Client(Ok(0)) => Some(End::ClientClosed),
                Event::Client(Err(e)) => Some(End::ClientError(e)),
                Event::Client(Ok(n)) => {
                    events += 1;
                    self.core.fresh = false;
                    self.count(true, n);
                    if self.cbuf.len() > BUFFER_LIMIT {
                        // Never reached while messages are framed as they arrive; a bug or a
                        // state missed must not turn into unbounded memory.
                        let what = format!(
                            "more than {} KiB buffered from the client",
                            BUFFER_LIMIT / 1024
                        );
                        Some(self.protocol_violation(&what).await)
                    } else {
                        self.on_client().await
                    }
                }
                Event::Server(r) => {
                    events += 1;
                    match r {
                        Ok(0) | Err(_) => {
                            let why = match r {
                                Err(e) => e.to_string(),
                                _ => "server closed the connection".to_string(),
                            };
                            Box::pin(self.server_lost(why)).await
                        }
                        Ok(n) if self.sbuf.len() > BUFFER_LIMIT => {
                            self.count(false, n);
                            let why = format!(
                                "more than {} KiB buffered from the server",
                                BUFFER_LIMIT / 1024
                            );
                            Box::pin(self.server_lost(why)).await
                        }
                        Ok(n) => {
                            self.count(false, n);
                            self.on_server().await
                        }
                    }
                }
                Event::Timer => {
                    let now = Instant::now();
                    if events != seen {
                        seen = events;
                        self.core.last_activity = now;
                    }
                    let idle_at = self.core.last_activity + idle;
                    if now >= idle_at {
                        return Step::End(End::IdleTimeout);
                    }
                    let park_after = self.park_delay();
                    if park_after.is_some_and(|after| now >= self.core.last_activity + after)
                        && self.parkable()
                    {
                        return Step::Park;
                    }
                    timer.set(idle_at.min(now + period(park_after)).into_std());
                    None
                }
                Event::Phase => Some(End::Stopped),
            };
            if let Some(end) = end {
                return Step::End(end);
            }
        }
    }

    /// The server parameters to show the client (cached per listener, database and backend
    /// user; the first client logs in to a server to learn them), then the greeting. Boxed by
    /// the caller, so nothing of it stays with an idle client.
    async fn login_greeting(&mut self) -> Result<(), End> {
        let key = (
            self.core.listener.name.clone(),
            self.core.profile.startup.database.clone(),
            self.core.profile.backend_user.clone(),
        );
        let cached = self
            .core
            .pg
            .server_params
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let params = match cached {
            Some(p) => p,
            None => {
                Box::pin(self.attach(Want::Writer)).await?;
                let params = self
                    .attached
                    .as_ref()
                    .map(|a| a.server.conn.reported.clone())
                    .unwrap_or_default();
                self.core
                    .pg
                    .server_params
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, params.clone());
                params
            }
        };
        // Session mode: the client owns its server from login on, and is told its real
        // process id (with a secret of the gateway's), as a direct connection would tell it.
        // When the pool is full the login does not wait for one: the client is greeted with a
        // process id of the gateway's and its first statement waits (PgBouncer's way).
        if self.core.profile.mode == PoolMode::Session {
            if self.attached.is_none() && self.server_free_now() {
                // A server terminated while pooled (its FATAL and close already here) must
                // not be handed out: this client would own it, and nothing replays a login.
                self.verify_idle = true;
                let attached = Box::pin(self.attach(Want::Writer)).await;
                self.verify_idle = false;
                attached?;
            }
            self.take_server_pid().await?;
        }
        // The client sees what the server reports for the values it set (`UTF8` for `utf8`,
        // `ISO, MDY` for `iso`), as a direct connection shows them: a value not seen before is
        // learned from a server, which reports it once it is applied.
        let fe = self.core.pg.clone();
        let canonical = &fe.canonical;
        let unknown = params.iter().any(|(k, _)| {
            self.client_value(k)
                .is_some_and(|v| canonical.get(k, v).is_none())
        });
        if unknown {
            if self.attached.is_none() {
                Box::pin(self.attach(Want::Writer)).await?;
            }
            if let Some(a) = &self.attached {
                for (k, _) in &params {
                    if let (Some(v), Some(reported)) =
                        (self.client_value(k), a.server.conn.params.get(k))
                    {
                        canonical.learn(k, v, reported);
                    }
                }
            }
        }
        self.greet(&params).await
    }

    /// Whether the first pick's pool could give a server without waiting.
    fn server_free_now(&mut self) -> bool {
        let Some(target) = self.core.snap.group.pick_for(&[], Want::Writer) else {
            return false;
        };
        self.pool_for(target.addr).is_some_and(|p| p.has_room())
    }

    /// Re-register the client under its server's process id (session mode).
    async fn take_server_pid(&mut self) -> Result<(), End> {
        let Some(a) = &self.attached else {
            return Ok(());
        };
        let server = (
            a.target.addr,
            a.server.conn.process_id,
            a.server.conn.secret_key,
        );
        let (profile, flow) = (self.core.profile.clone(), self.core.flow.clone());
        let key = self.core.pg.cancels.register_as(server.1, |pid, secret| {
            super::ClientInfo::new(profile, flow, pid, secret)
        });
        match key {
            Ok(key) => {
                key.info.attach(a.server.conn.id, || server);
                // The old key leaves the registry as it is dropped here.
                self.core.cancel = key;
                // The client now knows this server by its pid: it is the client's own, and
                // what happens to it is the client's to hear (never replayed elsewhere).
                if let Some(a) = self.attached.as_mut() {
                    a.answered();
                }
                Ok(())
            }
            Err(err) => {
                tracing::error!(listener = %self.core.listener.name, client = %self.core.flow.client, error = %err, "login refused");
                fatal(
                    &mut self.client,
                    "58000",
                    "login failed: the gateway cannot draw a cancel key",
                )
                .await;
                Err(End::Refused("no_cancel_key"))
            }
        }
    }

    /// The value the client asked for parameter `name` (names are case-insensitive).
    fn client_value(&self, name: &str) -> Option<&str> {
        self.core
            .profile
            .startup
            .params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Tell the client it is in: AuthenticationOk was sent by `auth`; now ParameterStatus,
    /// BackendKeyData (the gateway's own cancel key) and ReadyForQuery.
    async fn greet(&mut self, params: &[(String, String)]) -> Result<(), End> {
        let mut w = Writer::new();
        let fe = self.core.pg.clone();
        let canonical = &fe.canonical;
        for (k, v) in params {
            let shown = match self.client_value(k) {
                Some(mine) => canonical.get(k, mine).unwrap_or_else(|| mine.to_string()),
                None => v.clone(),
            };
            w.parameter_status(k, &shown);
        }
        let app = self
            .core
            .profile
            .startup
            .params
            .iter()
            .find(|(n, _)| n == "application_name")
            .map_or("", |(_, v)| v.as_str());
        w.parameter_status("application_name", app);
        let info = &self.core.cancel.info;
        w.backend_key_data(info.process_id, info.secret_key);
        w.ready_for_query(b'I');
        self.client.send(&w.buf).await.map_err(End::ClientError)
    }

    /// Take a server for the next piece of work.
    async fn attach(&mut self, want: Want) -> Result<(), End> {
        let group = self.core.snap.group.clone();
        let settings = group.settings();
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last_error = None;
        // During a failover there is a moment with no primary: the old one is down and the
        // health checks have not yet seen the promoted replica. Wait for one (re-picking every
        // 100 ms, up to the pool's checkout_timeout) instead of failing the client at once.
        let wait_until = Instant::now() + self.settings().checkout_timeout;
        // Pooled connections found dead only when first used (terminated a moment ago: the
        // close had not arrived when they were checked) are replaced, a few times at most.
        let mut dead_pooled = 0;
        loop {
            let target = group.pick_for(&tried, want).or_else(|| match want {
                // No replica fits: reads go to the primary.
                Want::Reader { .. } => group.pick_for(&tried, Want::Writer),
                _ => None,
            });
            let Some(target) = target else {
                // Wait only while some target is up (a role change is under way), not when
                // every target is down.
                let some_up = group
                    .targets()
                    .iter()
                    .any(|t| t.is_routable() && !tried.contains(&t.addr));
                if some_up && Instant::now() < wait_until {
                    // Have the health checks look now, not at their next interval, so the
                    // promoted replica is seen as primary promptly.
                    group.recheck_now();
                    crate::workers::sleep(Duration::from_millis(100)).await;
                    tried.clear();
                    continue;
                }
                break;
            };
            // The common case without waiting or allocating: an idle connection ready now.
            // Anything else (a new connection, a wait for a free one) is boxed so its state
            // does not enlarge every idle client.
            let connected = match self.idle_attach(&target) {
                Some(a) => Ok(a),
                None => Box::pin(self.connect_to(&target, settings.connect_timeout)).await,
            };
            match connected {
                Ok(attached) => {
                    self.adopt(attached, want);
                    match self.try_apply_params().await {
                        Ok(()) => return Ok(()),
                        Err(ParamsError::Lost(why)) if dead_pooled < 3 => {
                            dead_pooled += 1;
                            tracing::debug!(listener = %self.core.listener.name, client = %self.core.flow.client, error = %why, "a pooled backend connection was dead; taking another");
                            continue;
                        }
                        Err(e) => return Err(self.params_failed(e).await),
                    }
                }
                Err(AttachError::Fatal(code, message, label)) => {
                    fatal(&mut self.client, code, &message).await;
                    return Err(End::Refused(label));
                }
                Err(AttachError::Target(err)) => {
                    tried.push(target.addr);
                    target.connect_errors.fetch_add(1, Ordering::Relaxed);
                    let hc = &settings.health_check;
                    if let Some((health, reason)) = target.observe(
                        Observation::Failure("connection failures"),
                        hc.healthy_threshold,
                        hc.unhealthy_threshold,
                    ) {
                        crate::health::log_change(&group.name, &target.address, health, &reason);
                    }
                    // `connect_retries` further targets after a failed connect, as for tcp
                    // listeners (counted afresh each time a failover wait re-picks); then the
                    // client is told.
                    let exhausted = tried.len() > settings.connect_retries as usize;
                    tracing::warn!(listener = %self.core.listener.name, target = %target.address, error = %err, retries_left = !exhausted, "cannot open a backend connection");
                    last_error = Some(err);
                    if exhausted {
                        break;
                    }
                }
            }
        }
        let message = match last_error {
            Some(e) => format!("no backend server is available: {e}"),
            None => "no healthy backend server is available".to_string(),
        };
        tracing::warn!(listener = %self.core.listener.name, client = %self.core.flow.client, "{message}");
        fatal(&mut self.client, "08006", &message).await;
        Err(End::Refused("no_backend"))
    }

    /// Make `attached` the session's server.
    fn adopt(&mut self, mut attached: Attached, want: Want) {
        attached.replay = std::mem::take(&mut self.replay_spare);
        self.core.dialect = attached.server.conn.dialect;
        let target = &attached.target;
        // Cancel requests go to this server now (and the admin API shows it).
        let conn = &attached.server.conn;
        self.core
            .cancel
            .info
            .attach(conn.id, || (target.addr, conn.process_id, conn.secret_key));
        self.attached = Some(attached);
        self.core.last_route = want;
    }

    /// `attach` for the usual transaction, without waiting: the first pick is a target with a
    /// connection idle now. False when the full `attach` must run. The caller still applies
    /// the client's parameters when the connection has other ones.
    fn attach_now(&mut self, want: Want) -> bool {
        let Some(target) = self.core.snap.group.pick_for(&[], want) else {
            return false;
        };
        let Some(attached) = self.idle_attach(&target) else {
            return false;
        };
        self.adopt(attached, want);
        true
    }

    /// An idle pooled connection to `target` that is ready now, if there is one.
    fn idle_attach(&mut self, target: &Arc<TargetRt>) -> Option<Attached> {
        let pool = self.pool_for(target.addr)?;
        loop {
            let mut p = pool.try_idle(self.settings())?;
            // A connection used within the last second is trusted (a dead one is caught by
            // the replay); one idle longer is checked for a close first.
            let trusted = !self.verify_idle && p.used_recently();
            if trusted || still_open(&mut p.conn) {
                return Some(Attached::new(pool, p, target.clone()));
            }
            // Closed while idle (server restarted, terminated): drop it, take another.
        }
    }

    async fn connect_to(
        &mut self,
        target: &Arc<TargetRt>,
        connect_timeout: Duration,
    ) -> Result<Attached, AttachError> {
        let settings = self.settings().clone();
        let Some(pool) = self.pool_for(target.addr) else {
            tracing::error!(listener = %self.core.listener.name, max = super::pool::MAX_POOLS, "too many backend pools; refusing a new one");
            return Err(AttachError::Fatal(
                "53300",
                format!(
                    "the gateway has {} backend pools, its limit; try again later",
                    super::pool::MAX_POOLS
                ),
                "too_many_pools",
            ));
        };
        loop {
            let slot = match pool.slot(&settings).await {
                Ok(s) => s,
                Err(CheckoutError::Timeout(t)) => {
                    tracing::warn!(listener = %self.core.listener.name, client = %self.core.flow.client, pool_target = %target.address, database = %self.core.profile.startup.database, "pool exhausted: no backend connection became free in time");
                    return Err(AttachError::Fatal(
                        "53300",
                        format!(
                            "no backend connection became free within {}s: the pool for database \"{}\" on {} is full ({} connections)",
                            t.as_secs(),
                            self.core.profile.startup.database,
                            target.address,
                            pool.size()
                        ),
                        "checkout_timeout",
                    ));
                }
                Err(CheckoutError::Stopped) => {
                    return Err(AttachError::Fatal(
                        "57P01",
                        "the gateway is shutting down".into(),
                        "stopped",
                    ))
                }
            };
            match slot {
                Slot::Idle(mut p) => {
                    // A connection used within the last second is trusted (a dead one is caught
                    // by the replay below); one idle longer is checked for a close first.
                    if (!self.verify_idle && p.used_recently()) || still_open(&mut p.conn) {
                        return Ok(Attached::new(pool.clone(), p, target.clone()));
                    }
                    // Closed while idle (server restarted, terminated): drop it, take another.
                    drop(p);
                }
                Slot::New(permit) => {
                    let credential = match self.credential() {
                        Ok(c) => c,
                        Err(e) => {
                            drop(permit);
                            return Err(e);
                        }
                    };
                    let backend_user = self.core.profile.backend_user.clone();
                    let header = self.proxy_header(target);
                    let server = super::server::ServerPolicy::for_target(
                        &self.core.snap.group.settings(),
                        &target.address,
                    );
                    let passwords = credential
                        .as_ref()
                        .map(|c| c.passwords.as_slice())
                        .unwrap_or(&[]);
                    let mut result = Err(ServerError::NoPassword);
                    let attempts = passwords.len().max(1);
                    for i in 0..attempts {
                        let login = Login {
                            user: &backend_user,
                            database: &self.core.profile.startup.database,
                            password: passwords.get(i),
                            policy: server.auth,
                        };
                        result = Box::pin(ServerConn::connect(
                            target.addr,
                            &login,
                            connect_timeout,
                            header.as_deref(),
                            server.tls.as_ref(),
                        ))
                        .await;
                        match &result {
                            Err(e) if e.is_bad_password() && i + 1 < attempts => {
                                tracing::info!(listener = %self.core.listener.name, target = %target.address, "current backend password refused; trying the previous version");
                            }
                            _ => break,
                        }
                    }
                    return match result {
                        Ok(conn) => Ok(Attached::new(
                            pool.clone(),
                            pool.adopt(conn, permit),
                            target.clone(),
                        )),
                        Err(err) => {
                            pool.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                            drop(permit);
                            if err.is_untrusted() {
                                self.backend_untrusted(target, &err);
                            }
                            Err(classify(err, &self.core.profile.startup.database))
                        }
                    };
                }
            }
        }
    }

    /// A server that did not prove itself (or asked for what the policy forbids): logged,
    /// counted and audited; the client is told by the caller.
    fn backend_untrusted(&self, target: &TargetRt, err: &ServerError) {
        let core = &self.core;
        tracing::error!(listener = %core.listener.name, target = %target.address, error = %err, "refusing a server that did not prove it knows the password");
        core.pg
            .stats
            .backend_logins_refused
            .fetch_add(1, Ordering::Relaxed);
        let why = err.to_string();
        core.shared.records.audit(
            "backend.untrusted",
            &core.listener.name,
            core.flow.client,
            || {
                let mut extra = Map::new();
                extra.insert(
                    "user".into(),
                    Value::from(core.profile.startup.user.as_str()),
                );
                extra.insert(
                    "database".into(),
                    Value::from(core.profile.startup.database.as_str()),
                );
                extra.insert("target".into(), Value::from(target.address.as_str()));
                extra.insert("reason".into(), Value::from(why));
                extra
            },
        );
    }

    /// The pool for `target` (cached per session: the map is consulted once per target).
    fn pool_for(&mut self, target: SocketAddr) -> Option<Arc<Pool>> {
        if let Some((_, p)) = self.pools.iter().find(|(a, _)| *a == target) {
            return Some(p.clone());
        }
        let key = PoolKey {
            listener: self.core.listener.name.clone(),
            target,
            database: self.core.profile.startup.database.clone(),
            user: self.core.profile.backend_user.clone(),
        };
        let pool = self.core.pg.pools.get(key, self.settings().size)?;
        self.pools.push((target, pool.clone()));
        Some(pool)
    }

    /// The backend login from the vault, read only when a new server connection is opened.
    fn credential(&self) -> Result<Option<crate::vault::BackendCredential>, AttachError> {
        let vault = self.core.shared.vault.load_full();
        match (
            &self.core.profile.identity.user.backend_credential,
            vault.as_ref(),
        ) {
            (None, _) => Ok(None),
            (Some(name), Some(vault)) => match vault.backend_credential(name) {
                Ok(c) => Ok(Some(c)),
                Err(err) => {
                    tracing::error!(listener = %self.core.listener.name, user = %self.core.profile.startup.user, credential = %name, error = %err, "backend credential unavailable");
                    Err(AttachError::Fatal(
                        "08004",
                        "the gateway cannot log in to the backend for this user (its credential is unavailable; see the gateway log)".into(),
                        "credential_unavailable",
                    ))
                }
            },
            (Some(name), None) => {
                tracing::error!(listener = %self.core.listener.name, credential = %name, "user has a backend_credential but no [vault] is configured");
                Err(AttachError::Fatal(
                    "08004",
                    "the gateway has no vault to log in to the backend with".into(),
                    "no_vault",
                ))
            }
        }
    }

    fn proxy_header(&self, target: &TargetRt) -> Option<Vec<u8>> {
        let _ = target;
        if !self.core.snap.group.settings().proxy_protocol_v2 {
            return None;
        }
        let mut header = Vec::with_capacity(52);
        sumun_wire::proxy::encode_v2(self.core.flow.client, self.core.flow.local, &mut header);
        Some(header)
    }

    /// The usual case is false: the server last served a client with the same parameters.
    /// Equal parameters of another login profile (one that has come and gone since) are
    /// taken as this client's, so the next look is a pointer comparison.
    fn params_differ(&mut self) -> bool {
        let Some(a) = self.attached.as_mut() else {
            return false;
        };
        let mine = &self.core.profile.params;
        let applied = &mut a.server.conn.applied_for;
        match applied {
            Some(p) if Arc::ptr_eq(p, mine) => false,
            Some(p) if **p == **mine => {
                *applied = Some(mine.clone());
                false
            }
            _ => true,
        }
    }

    /// Make the server's session parameters the client's own: `RESET` what the server's last
    /// client set and this one does not (so nothing of one client reaches another), `SET`
    /// what differs. Nothing is sent when the server last served the same parameters.
    async fn apply_params(&mut self) -> Result<(), End> {
        match self.try_apply_params().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.params_failed(e).await),
        }
    }

    /// The client hears why its parameters could not be set, and the session ends.
    async fn params_failed(&mut self, e: ParamsError) -> End {
        match e {
            ParamsError::Refused(code, message) => {
                // Bad values fail the login, as they would on PostgreSQL itself.
                fatal(&mut self.client, &code, &message).await;
                End::Refused("bad_startup_parameter")
            }
            ParamsError::Lost(why) => {
                fatal(
                    &mut self.client,
                    "08006",
                    &format!("backend connection lost: {why}"),
                )
                .await;
                End::ServerLost(why)
            }
        }
    }

    /// [`Session::apply_params`] without telling the client: a failed server is detached.
    async fn try_apply_params(&mut self) -> Result<(), ParamsError> {
        if !self.params_differ() {
            return Ok(());
        }
        let Some(a) = self.attached.as_mut() else {
            return Ok(());
        };
        let mine = self.core.profile.params.clone();
        let conn = &mut a.server.conn;
        let mut sql = String::new();
        for k in &conn.applied {
            if !mine.iter().any(|(n, _)| n.eq_ignore_ascii_case(k)) {
                sql.push_str(&format!("RESET {};", quote_ident(k)));
                // Reported parameters come back with the server's ParameterStatus.
                conn.params.remove(k);
            }
        }
        for (k, v) in mine.iter() {
            if conn.params.get(k).is_some_and(|cur| cur == v) {
                continue;
            }
            sql.push_str(&format!("SET {} TO {};", quote_ident(k), quote_literal(v)));
        }
        let result = if sql.is_empty() {
            Ok(Vec::new())
        } else {
            Box::pin(conn.simple(&sql)).await
        };
        match result {
            Ok(_) => {
                // Parameters the server reports keep what it reported (its spelling of the
                // value: `UTF8` for `utf8`; unchanged values are not reported again); the
                // others are known only as the client wrote them.
                for (k, v) in mine.iter() {
                    if !conn.reported.iter().any(|(r, _)| r.eq_ignore_ascii_case(k)) {
                        conn.params.insert(k.clone(), v.clone());
                    }
                }
                conn.applied = mine.iter().map(|(k, _)| k.clone()).collect();
                conn.applied_for = Some(mine);
                Ok(())
            }
            Err(ServerError::Refused { code, message, .. }) => {
                self.detach_broken();
                let code = if code.is_empty() {
                    "22023".to_string()
                } else {
                    code
                };
                Err(ParamsError::Refused(code, message))
            }
            Err(err) => {
                self.detach_broken();
                Err(ParamsError::Lost(err.to_string()))
            }
        }
    }

    /// Give the server back to its pool (idle, nothing outstanding).
    fn detach(&mut self) {
        let Some(mut a) = self.attached.take() else {
            return;
        };
        self.parses.clear();
        self.forget_unanswered();
        self.core.cancel.info.detach();
        if !self.sbuf.is_empty() || self.pending != 0 || self.tx_status != b'I' {
            a.server.conn.broken = true;
            self.sbuf.clear();
        }
        self.keep_replay_buffer(&mut a);
        a.pool.release(a.server, self.settings());
        shrink(&mut self.sbuf);
    }

    /// The server that owed the answers is gone (or owes none).
    fn forget_unanswered(&mut self) {
        self.unanswered.clear();
        self.copy_in_open = false;
    }

    fn keep_replay_buffer(&mut self, a: &mut Attached) {
        if a.replay.capacity() <= REPLAY_KEEP {
            a.replay.clear();
            self.replay_spare = std::mem::take(&mut a.replay);
        }
    }

    fn detach_broken(&mut self) {
        self.parses.clear();
        self.forget_unanswered();
        self.core.cancel.info.detach();
        if let Some(mut a) = self.attached.take() {
            a.server.conn.broken = true;
            a.pool.release(a.server, self.settings());
        }
        self.sbuf.clear();
    }

    /// Client bytes arrived in `cbuf`: take a server if needed, scan, forward.
    async fn on_client(&mut self) -> Option<End> {
        if self.attached.is_none() && self.c_stream.remaining == 0 {
            // Route by the first message: wait until it is whole (or known to be big).
            let route = match pg::header(&self.cbuf, MAX_MESSAGE) {
                Ok(None) => return None,
                Err(e) => return Some(self.protocol_violation(&e.to_string()).await),
                Ok(Some(h)) if !is_frontend(h.tag) => {
                    let what = format!("invalid frontend message type {}", h.tag);
                    return Some(self.protocol_violation(&what).await);
                }
                Ok(Some(h)) if h.tag == b'X' => return Some(End::ClientClosed),
                Ok(Some(h)) if h.total > self.cbuf.len() && h.total <= GATHER_LIMIT => return None,
                Ok(Some(h)) => {
                    let end = h.total.min(self.cbuf.len());
                    self.route_for(h.tag, &self.cbuf[5..end])
                }
            };
            // The full attach (waiting, connecting, failing over) is boxed: its state would
            // otherwise be part of every idle client.
            let attached = if self.attach_now(route) {
                if self.params_differ() {
                    Box::pin(self.apply_params()).await
                } else {
                    Ok(())
                }
            } else {
                Box::pin(self.attach(route)).await
            };
            if let Err(end) = attached {
                return Some(end);
            }
        }
        let rewrite = self.core.profile.mode == PoolMode::Transaction;
        let mut out: Vec<u8> = Vec::new();
        let mut copied = 0usize; // cbuf[..copied] is already in `out` (when rewriting)
        let mut forward_upto = 0usize;
        let mut pos = 0usize;
        let mut terminate = false;
        while pos < self.cbuf.len() {
            if self.c_stream.remaining > 0 {
                let take = self.c_stream.remaining.min(self.cbuf.len() - pos);
                self.c_stream.remaining -= take;
                pos += take;
                forward_upto = pos;
                continue;
            }
            let header = match pg::header(&self.cbuf[pos..], MAX_MESSAGE) {
                Ok(Some(h)) if !is_frontend(h.tag) => {
                    // Judged before waiting for a body: a stray startup packet's "length"
                    // would otherwise hold the session until its idle timeout.
                    let what = format!("invalid frontend message type {}", h.tag);
                    return Some(self.protocol_violation(&what).await);
                }
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return Some(self.protocol_violation(&e.to_string()).await),
            };
            let available = self.cbuf.len() - pos;
            if header.total > available {
                if header.total <= GATHER_LIMIT {
                    break; // wait for the rest
                }
                // Too big to hold: inspect what is here and stream the rest.
                let body = self.cbuf[pos + 5..].to_vec();
                self.note_client_message(header.tag, &body);
                if rewrite && header.tag == b'P' && body.first().is_some_and(|&b| b != 0) {
                    // A named statement's name cannot be translated while it streams past:
                    // the statement stays on this server under the client's name, and so does
                    // the client.
                    self.pin("large_prepare");
                }
                self.c_stream.remaining = header.total - available;
                pos = self.cbuf.len();
                forward_upto = pos;
                break;
            }
            if header.tag == b'X' {
                terminate = true;
                break;
            }
            let inspect = matches!(header.tag, b'Q' | b'P' | b'E' | b'S' | b'c' | b'f')
                || (rewrite && matches!(header.tag, b'B' | b'D' | b'C'));
            if !inspect {
                pos += header.total;
                forward_upto = pos;
                continue;
            }
            // The buffer is lent out while its message is looked at (neither look touches
            // it), rather than the message copied.
            let cbuf = std::mem::take(&mut self.cbuf);
            let body = &cbuf[pos + 5..pos + header.total];
            self.note_client_message(header.tag, body);
            let replacement = if rewrite && matches!(header.tag, b'P' | b'B' | b'D' | b'C') {
                self.rewrite_statement(header.tag, body)
            } else {
                None
            };
            self.cbuf = cbuf;
            if let Some(replacement) = replacement {
                out.extend_from_slice(&self.cbuf[copied..pos]);
                out.extend_from_slice(&replacement);
                copied = pos + header.total;
            }
            pos += header.total;
            forward_upto = pos;
        }
        if forward_upto > 0 {
            let bytes = std::mem::take(&mut self.cbuf);
            let raw = &bytes[..forward_upto];
            let result = if out.is_empty() {
                self.send_to_server(raw, raw).await
            } else {
                out.extend_from_slice(&raw[copied.min(forward_upto)..]);
                self.send_to_server(&out, raw).await
            };
            self.cbuf = bytes;
            if let Some(end) = result {
                return Some(end);
            }
            self.cbuf.drain(..forward_upto);
        }
        if terminate {
            return Some(End::ClientClosed);
        }
        if self.cbuf.is_empty() {
            shrink(&mut self.cbuf);
        }
        None
    }

    async fn protocol_violation(&mut self, what: &str) -> End {
        tracing::info!(listener = %self.core.listener.name, client = %self.core.flow.client, error = %what, "malformed message from client; closing");
        let mut w = Writer::new();
        w.error("FATAL", "08P01", &format!("invalid message: {what}"));
        let _ = self.client.send(&w.buf).await;
        End::Refused("protocol_violation")
    }

    /// Where the first message of a transaction should go.
    fn route_for(&self, tag: u8, body: &[u8]) -> Want {
        if !self.core.snap.settings.read_write_split || self.pinned.is_some() {
            return Want::Writer;
        }
        let text = match tag {
            b'Q' => pg::cstr(body).map(|(t, _)| t),
            b'P' => pg::parse_message(body).ok().map(|(_, q, _)| q),
            _ => None,
        };
        let Some(text) = text else {
            return Want::Writer;
        };
        let a = sql::analyze_with(
            &String::from_utf8_lossy(&text[..text.len().min(SQL_KEEP)]),
            self.core.dialect,
        );
        let read_only = (a.read_only && a.statements == 1) || a.tx == sql::TxEffect::BeginReadOnly;
        if read_only && a.pin.is_none() {
            Want::Reader {
                max_lag_ms: self.core.snap.settings.max_replica_lag.as_millis() as u64,
            }
        } else {
            Want::Writer
        }
    }

    /// Transaction mode: named prepared statements belong to the client, but servers are
    /// shared. Each is prepared on a server under a name derived from its text
    /// (`sumun_<hash>`), once per server, and the client's names are translated. Returns the
    /// bytes to send instead of the message, if it changes.
    fn rewrite_statement(&mut self, tag: u8, body: &[u8]) -> Option<Vec<u8>> {
        let server = &mut self.attached.as_mut()?.server.conn;
        match tag {
            b'P' => {
                let (name, query, rest) = pg::parse_message(body).ok()?;
                if name.is_empty() {
                    self.parses.push_back(Sent::Parse {
                        created: None,
                        injected: false,
                    });
                    return None;
                }
                let hash = statement_id(query, rest);
                let mut w = Writer::new();
                if server.prepared.contains(&hash) {
                    // Already there, but the client must still get its ParseComplete in order
                    // (and any error in its text): parse it under a scratch name and close
                    // that at once, swallowing the CloseComplete. The unnamed statement, which
                    // the client may be using in the same pipeline, is left alone.
                    self.parses.push_back(Sent::Parse {
                        created: None,
                        injected: false,
                    });
                    self.parses.push_back(Sent::Close { injected: true });
                    w.raw(b'P', &[SCRATCH_STATEMENT, &[0], query, &[0], rest].concat());
                    w.raw(b'C', &[&b"S"[..], SCRATCH_STATEMENT, &[0]].concat());
                } else {
                    server.prepared.insert(hash);
                    self.parses.push_back(Sent::Parse {
                        created: Some(hash),
                        injected: false,
                    });
                    w.raw(
                        b'P',
                        &[server_name(&hash).as_bytes(), &[0], query, &[0], rest].concat(),
                    );
                }
                let parse = {
                    let mut p = Writer::new();
                    p.raw(
                        b'P',
                        &[server_name(&hash).as_bytes(), &[0], query, &[0], rest].concat(),
                    );
                    p.buf
                };
                self.core
                    .statements
                    .get_or_insert_default()
                    .insert(name.to_vec(), (hash, Arc::new(parse)));
                Some(w.buf)
            }
            b'B' => {
                let (portal, name, rest) = pg::bind_message(body).ok()?;
                let (hash, parse) = self.core.statements.as_ref()?.get(name)?.clone();
                let mut w = Writer::new();
                if !server.prepared.contains(&hash) {
                    w.buf.extend_from_slice(&parse);
                    server.prepared.insert(hash);
                    self.parses.push_back(Sent::Parse {
                        created: Some(hash),
                        injected: true,
                    });
                }
                w.raw(
                    b'B',
                    &[portal, &[0], server_name(&hash).as_bytes(), &[0], rest].concat(),
                );
                Some(w.buf)
            }
            b'D' | b'C' => {
                if tag == b'C' {
                    // Every Close is answered with CloseComplete, in order.
                    self.parses.push_back(Sent::Close { injected: false });
                }
                let (&kind, rest) = body.split_first()?;
                if kind != b'S' {
                    return None;
                }
                let name = pg::cstr(rest).map(|(n, _)| n)?;
                if name.is_empty() {
                    return None;
                }
                let mut w = Writer::new();
                if tag == b'C' {
                    // Other clients may use the server's copy; close only the client's name.
                    // The client still gets its CloseComplete, from a Close of a name that
                    // does not exist (not an error in PostgreSQL) rather than of the unnamed
                    // statement, which the client may still be using.
                    if let Some(statements) = self.core.statements.as_mut() {
                        statements.remove(name);
                    }
                    w.raw(b'C', &[&b"S"[..], SCRATCH_STATEMENT, &[0]].concat());
                    return Some(w.buf);
                }
                let (hash, parse) = self.core.statements.as_ref()?.get(name)?.clone();
                if !server.prepared.contains(&hash) {
                    w.buf.extend_from_slice(&parse);
                    server.prepared.insert(hash);
                    self.parses.push_back(Sent::Parse {
                        created: Some(hash),
                        injected: true,
                    });
                }
                w.raw(
                    b'D',
                    &[&b"S"[..], server_name(&hash).as_bytes(), &[0]].concat(),
                );
                Some(w.buf)
            }
            _ => None,
        }
    }

    /// Send `bytes` (the client's `raw` messages as rewritten for this server). The raw ones
    /// are kept for a replay: another server needs its own rewriting (its own prepared
    /// statements).
    async fn send_to_server(&mut self, bytes: &[u8], raw: &[u8]) -> Option<End> {
        let a = self.attached.as_mut()?;
        if a.replayable {
            if a.replay.len() + raw.len() <= GATHER_LIMIT && !self.responded {
                a.replay.extend_from_slice(raw);
            } else {
                a.answered();
            }
        }
        if let Err(e) = a.server.conn.stream.send(bytes).await {
            return Box::pin(self.server_lost(e.to_string())).await;
        }
        None
    }

    /// Look at one client message (or the first part of a streamed one).
    fn note_client_message(&mut self, tag: u8, body: &[u8]) {
        match tag {
            b'Q' => {
                self.pending += 1;
                self.unanswered.push_back(b'Q');
                self.note_sync();
                self.responded = false;
                // A Query is its text and a NUL, so the last byte says where the text ends
                // without a search. (A malformed one with a NUL inside is refused by the
                // server; its audit text and pin analysis then include what follows the NUL.)
                let text = match body.split_last() {
                    Some((0, text)) => text,
                    _ => pg::cstr(body).map_or(body, |(t, _)| t),
                };
                let text = &text[..text.len().min(SQL_KEEP)];
                if self.needs_analysis(text) {
                    let analysis =
                        sql::analyze_with(&String::from_utf8_lossy(text), self.core.dialect);
                    self.note_analysis(&analysis);
                }
                if self.core.profile.audit.is_some() {
                    self.inflight.push_back(Inflight {
                        text: String::from_utf8_lossy(text).into_owned(),
                        started: Instant::now(),
                        rows: 0,
                        error: None,
                        simple: true,
                    });
                }
                self.core.queries += 1;
            }
            b'P' => {
                if let Ok((_, query, _)) = pg::parse_message(body) {
                    let text = &query[..query.len().min(SQL_KEEP)];
                    if self.needs_analysis(text) {
                        let analysis =
                            sql::analyze_with(&String::from_utf8_lossy(text), self.core.dialect);
                        self.note_analysis(&analysis);
                    }
                    if self.core.profile.audit.is_some() {
                        self.core.last_parse = Some(String::from_utf8_lossy(text).into_owned());
                    }
                }
            }
            b'E' => {
                if self.core.profile.audit.is_some() {
                    self.inflight.push_back(Inflight {
                        text: self.core.last_parse.clone().unwrap_or_default(),
                        started: Instant::now(),
                        rows: 0,
                        error: None,
                        simple: false,
                    });
                }
                self.core.queries += 1;
            }
            // Read by a server in COPY FROM STDIN, a Sync is ignored: no answer will come.
            b'S' if self.copy_in_open => {}
            b'S' => {
                self.pending += 1;
                self.unanswered.push_back(b'S');
                self.note_sync();
                self.responded = false;
            }
            b'c' | b'f' if self.copy_in_open => self.copy_in_open = false,
            // The copy it ends has not started yet as far as the gateway knows.
            b'c' | b'f' => self.unanswered.push_back(b'c'),
            _ => {}
        }
    }

    /// A Query or Sync went to the server. Only transaction mode rewrites prepared
    /// statements, so only it needs `parses`.
    fn note_sync(&mut self) {
        if self.core.profile.mode == PoolMode::Transaction {
            self.parses.push_back(Sent::Sync);
        }
    }

    /// Whether a statement must go through the SQL analysis: to find what pins a
    /// transaction-mode client (skipped once pinned, and for text that cannot pin), and
    /// nothing else today (routing analyses the first statement itself, in `route_for`).
    fn needs_analysis(&self, text: &[u8]) -> bool {
        self.core.profile.mode == PoolMode::Transaction
            && self.pinned.is_none()
            && sql::may_pin(text)
    }

    fn note_analysis(&mut self, a: &sql::Analysis) {
        if let Some(reason) = a.pin {
            self.pin(reason.as_str());
        }
    }

    /// Transaction mode: keep this client on its server for the rest of the session.
    fn pin(&mut self, reason: &'static str) {
        if self.core.profile.mode == PoolMode::Transaction && self.pinned.is_none() {
            self.pinned = Some(reason);
            let reasons = &super::report::PIN_REASONS;
            let slot = reasons
                .iter()
                .position(|r| *r == reason)
                .unwrap_or(reasons.len() - 1);
            self.core.pg.stats.pinned[slot].fetch_add(1, Ordering::Relaxed);
            self.core.cancel.info.set_pinned(self.pinned);
            tracing::debug!(listener = %self.core.listener.name, client = %self.core.flow.client, reason, "client pinned to its server");
        }
    }

    /// Server bytes arrived in `sbuf`: scan, forward, and maybe hand the server back.
    async fn on_server(&mut self) -> Option<End> {
        // Anything but an error means the server acted on the request, even before a whole
        // message is here to forward: it must not be replayed elsewhere.
        if self.sbuf.first().is_some_and(|&tag| tag != b'E') {
            self.responded = true;
            if let Some(a) = self.attached.as_mut() {
                a.answered();
            }
        }
        let mut pos = 0usize;
        let mut forward_upto = 0usize;
        let mut release = false;
        let mut out: Vec<u8> = Vec::new();
        let mut copied = 0usize;
        let mut server_fatal: Option<String> = None;
        let mut session_fatal: Option<(Vec<u8>, String)> = None;
        while pos < self.sbuf.len() {
            if self.s_stream.remaining > 0 {
                let take = self.s_stream.remaining.min(self.sbuf.len() - pos);
                self.s_stream.remaining -= take;
                pos += take;
                forward_upto = pos;
                continue;
            }
            let header = match pg::header(&self.sbuf[pos..], MAX_MESSAGE) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    let why = format!("server sent an invalid message: {e}");
                    return Box::pin(self.server_lost(why)).await;
                }
            };
            let available = self.sbuf.len() - pos;
            if header.total > available {
                if header.total <= GATHER_LIMIT {
                    break;
                }
                self.s_stream.remaining = header.total - available;
                pos = self.sbuf.len();
                forward_upto = pos;
                break;
            }
            let body_range = pos + 5..pos + header.total;
            match header.tag {
                b'Z' => {
                    let status = self.sbuf.get(body_range.start).copied().unwrap_or(b'I');
                    self.tx_status = status;
                    self.pending = self.pending.saturating_sub(1);
                    // This answers the oldest Query or Sync; a copy end before it belongs to no
                    // copy the server started and goes with it.
                    while self.unanswered.pop_front() == Some(b'c') {}
                    // This ReadyForQuery answers the oldest Sync or Query.
                    while let Some(sent) = self.parses.pop_front() {
                        if matches!(sent, Sent::Sync) {
                            break;
                        }
                    }
                    self.in_copy = false;
                    self.finish_queries(true);
                    if self.pending == 0
                        && status == b'I'
                        && self.core.profile.mode == PoolMode::Transaction
                        && self.pinned.is_none()
                        && self.c_stream.remaining == 0
                        && pos + header.total == self.sbuf.len()
                    {
                        release = true;
                    }
                }
                b'C' if self.core.profile.audit.is_some() => {
                    let rows = pg::command_rows(&self.sbuf[body_range]).unwrap_or(0);
                    self.command_done(rows);
                }
                b'E' => {
                    let f = pg::error_fields(&self.sbuf[body_range]);
                    if f.severity == "FATAL" || f.severity == "PANIC" {
                        let why = format!("{} (SQLSTATE {})", f.message, f.code);
                        // Only a server the client already used is its own: a FATAL that is
                        // the first thing a freshly taken server says was sent while it sat in
                        // the pool, and the request is replayed elsewhere instead.
                        let owned = self.attached.as_ref().is_some_and(|a| !a.replayable);
                        if owned {
                            // The client's own server session ends (session mode, a pinned
                            // client, or a transaction or request in flight): it hears the
                            // server's words, as it would directly (drivers act on the
                            // SQLSTATE: 57P01 terminated, 25P03 idle in transaction...), and
                            // its connection closes with it.
                            session_fatal =
                                Some((self.sbuf[pos..pos + header.total].to_vec(), why));
                            break;
                        }
                        // A request the server has not acted on is replayed elsewhere.
                        server_fatal = Some(why);
                        break;
                    }
                    // Parses not yet answered failed or were skipped: nothing was created.
                    if let Some(a) = self.attached.as_mut() {
                        while let Some(sent) = self.parses.front() {
                            match sent {
                                Sent::Sync => break,
                                Sent::Parse {
                                    created: Some(hash),
                                    ..
                                } => {
                                    a.server.conn.prepared.remove(hash);
                                }
                                _ => {}
                            }
                            self.parses.pop_front();
                        }
                    }
                    if self.core.profile.audit.is_some() {
                        self.command_failed(f.code);
                    }
                }
                b'S' => {
                    if let Some(a) = self.attached.as_mut() {
                        let body = self.sbuf[body_range].to_vec();
                        a.server.conn.note_parameter(&body);
                        // Something changed a parameter: check them all at the next attach.
                        a.server.conn.applied_for = None;
                        self.core.dialect = a.server.conn.dialect;
                    }
                }
                b'G' => {
                    self.in_copy = true;
                    self.copy_in_started();
                }
                b'H' | b'W' => self.in_copy = true,
                // NotificationResponse from the client's own server process: in transaction
                // mode the client knows that process by the gateway's id, so say that one.
                b'A' if self.core.profile.mode == PoolMode::Transaction && header.total >= 9 => {
                    let at = body_range.start;
                    let pid = u32::from_be_bytes([
                        self.sbuf[at],
                        self.sbuf[at + 1],
                        self.sbuf[at + 2],
                        self.sbuf[at + 3],
                    ]);
                    let own = self
                        .attached
                        .as_ref()
                        .is_some_and(|a| a.server.conn.process_id == pid);
                    if own {
                        let mine = self.core.cancel.info.process_id.to_be_bytes();
                        self.sbuf[at..at + 4].copy_from_slice(&mine);
                    }
                }
                b'1' | b'3' => {
                    let injected = match self.parses.front() {
                        Some(Sent::Parse { injected, .. }) if header.tag == b'1' => Some(*injected),
                        Some(Sent::Close { injected }) if header.tag == b'3' => Some(*injected),
                        _ => None,
                    };
                    if let Some(injected) = injected {
                        self.parses.pop_front();
                        if injected {
                            // Answer to a message the gateway slipped in: not the client's.
                            out.extend_from_slice(&self.sbuf[copied..pos]);
                            copied = pos + header.total;
                        }
                    }
                }
                _ => {}
            }
            pos += header.total;
            forward_upto = pos;
        }
        if forward_upto > 0 {
            // The client has seen an answer: the request can no longer be replayed elsewhere.
            // (A FATAL that arrives first, from a server that died while the connection sat
            // in the pool, is not an answer.)
            self.responded = true;
            if let Some(a) = self.attached.as_mut() {
                a.answered();
            }
            let written = if copied == 0 {
                self.client.send(&self.sbuf[..forward_upto]).await
            } else {
                out.extend_from_slice(&self.sbuf[copied.min(forward_upto)..forward_upto]);
                self.client.send(&out).await
            };
            if let Err(e) = written {
                return Some(End::ClientError(e));
            }
            self.sbuf.drain(..forward_upto);
        }
        if let Some((message, why)) = session_fatal {
            tracing::info!(listener = %self.core.listener.name, client = %self.core.flow.client, error = %why, "the server ended the client's session");
            self.detach_broken();
            let _ = self.client.send(&message).await;
            return Some(End::ServerClosed(why));
        }
        if let Some(why) = server_fatal {
            return Box::pin(self.server_lost(why)).await;
        }
        if release {
            self.detach();
        } else if self.sbuf.is_empty() {
            shrink(&mut self.sbuf);
        }
        None
    }

    /// The server entered COPY FROM STDIN (CopyInResponse). Every Query and Sync sent before
    /// the message that started the copy has been answered, so the oldest unanswered one is
    /// the copy's own Query, or a Sync that came after its Execute. Syncs from there to the
    /// client's CopyDone or CopyFail are ignored by the server: they are taken off what it
    /// owes (without this, a transaction-mode client that copies in with the extended
    /// protocol, as tokio-postgres and libpq do, kept its server for good, and the answers
    /// to its next statements were matched with the wrong messages).
    fn copy_in_started(&mut self) {
        let own_query = self.unanswered.front() == Some(&b'Q');
        let mut at = usize::from(own_query);
        let mut ignored = 0usize;
        loop {
            match self.unanswered.get(at) {
                Some(b'S') => {
                    self.unanswered.remove(at);
                    ignored += 1;
                }
                Some(b'c') => {
                    self.unanswered.remove(at);
                    break;
                }
                // A Query in the middle of a copy fails it; the server answers that one.
                Some(_) => at += 1,
                None => {
                    self.copy_in_open = true;
                    break;
                }
            }
        }
        if ignored == 0 {
            return;
        }
        self.pending = self.pending.saturating_sub(ignored as u32);
        if self.core.profile.mode == PoolMode::Transaction {
            // The same Syncs in `parses`, after the copy's own Query if it has one.
            let skip = usize::from(own_query);
            let syncs: Vec<usize> = self
                .parses
                .iter()
                .enumerate()
                .filter(|(_, sent)| matches!(sent, Sent::Sync))
                .map(|(i, _)| i)
                .skip(skip)
                .take(ignored)
                .collect();
            for i in syncs.into_iter().rev() {
                self.parses.remove(i);
            }
        }
    }

    fn command_done(&mut self, rows: u64) {
        match self.inflight.front_mut() {
            Some(q) if q.simple => q.rows += rows,
            Some(_) => {
                if let Some(mut q) = self.inflight.pop_front() {
                    q.rows = rows;
                    self.emit_query(q);
                }
            }
            None => {}
        }
    }

    fn command_failed(&mut self, code: String) {
        match self.inflight.front_mut() {
            Some(q) if q.simple => q.error = Some(code),
            Some(_) => {
                if let Some(mut q) = self.inflight.pop_front() {
                    q.error = Some(code);
                    self.emit_query(q);
                }
            }
            None => {}
        }
    }

    /// ReadyForQuery: the simple query at the front is done; Executes skipped after an error
    /// are done too.
    fn finish_queries(&mut self, _ready: bool) {
        if self.core.profile.audit.is_none() {
            return;
        }
        while let Some(q) = self.inflight.pop_front() {
            let simple = q.simple;
            self.emit_query(q);
            if simple {
                break;
            }
        }
    }

    fn emit_query(&self, q: Inflight) {
        let Some(mode) = self.core.profile.audit else {
            return;
        };
        let micros = q.started.elapsed().as_micros() as u64;
        let stats = &self.core.pg.stats;
        stats.queries.fetch_add(1, Ordering::Relaxed);
        stats.query_micros.fetch_add(micros, Ordering::Relaxed);
        if q.error.is_some() {
            stats.query_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.core
            .listener
            .metrics
            .query_duration
            .observe_micros(micros);
        // Written straight into a reused line buffer, literals masked on the way (records.rs).
        self.core
            .shared
            .records
            .audit_query(&crate::records::QueryEvent {
                listener: &self.core.listener.name,
                client: self.core.flow.client,
                user: &self.core.profile.startup.user,
                database: &self.core.profile.startup.database,
                session_id: self.core.cancel.info.session_id(),
                text: &q.text,
                mask: mode != QueryAudit::Full,
                dialect: self.core.dialect.into(),
                duration_us: micros,
                rows: q.rows,
                error: q.error.as_deref(),
                target: self.attached.as_ref().map(|a| a.target.address.as_str()),
            });
    }

    /// The server connection failed. Before it answered anything, the request is replayed on
    /// another server (a pooled connection that died while idle, a failed-over primary);
    /// otherwise the client gets an error it can act on and keeps its connection.
    async fn server_lost(&mut self, why: String) -> Option<End> {
        let mut a = self.attached.take()?;
        self.parses.clear();
        self.forget_unanswered();
        tracing::warn!(listener = %self.core.listener.name, client = %self.core.flow.client, target = %a.target.address, error = %why, "backend connection lost");
        self.core.cancel.info.detach();
        a.server.conn.broken = true;
        let replay = a.replayable.then(|| std::mem::take(&mut a.replay));
        a.pool.release(a.server, self.settings());
        self.sbuf.clear();
        self.s_stream.remaining = 0;
        let in_tx = self.tx_status != b'I' || self.pinned.is_some();
        if let (Some(replay), false) = (replay, self.responded || in_tx) {
            if let Err(end) = Box::pin(self.attach(self.core.last_route)).await {
                return Some(end);
            }
            if let Some(a) = &self.attached {
                tracing::info!(listener = %self.core.listener.name, client = %self.core.flow.client, target = %a.target.address, "replaying the request on another backend connection");
            }
            // The client's messages go through again as if they had just arrived, so they are
            // rewritten for this server (its prepared statements) and counted once.
            self.pending = 0;
            self.inflight.clear();
            let mut again = replay;
            again.extend_from_slice(&self.cbuf);
            self.cbuf = again;
            return Box::pin(self.on_client()).await;
        }
        // Mid-transaction, mid-answer or in a session: what the client had on that server is
        // gone, and it is told as a direct client would be, with its connection closed (a
        // transaction-mode client that carried on would run its next statements outside the
        // transaction it thinks it is in).
        let mut w = Writer::new();
        w.error(
            "FATAL",
            "08006",
            &format!("the backend connection was lost: {why}"),
        );
        let _ = self.client.send(&w.buf).await;
        Some(End::ServerLost(why))
    }

    /// The client went away with a request in flight (Ctrl-C on a long query, a killed
    /// application): cancel it on the server, end a COPY FROM STDIN it left open, and read the
    /// server's answers to the end (5 s at most), so the server is idle again and can be
    /// reused. If that fails the server connection is closed by the caller; the query was
    /// cancelled either way.
    async fn abandon_request(&mut self) {
        let Some(a) = self.attached.as_mut() else {
            return;
        };
        let conn = &mut a.server.conn;
        let (addr, pid, key) = (a.target.addr, conn.process_id, conn.secret_key);
        match super::cancel::send(addr, pid, key).await {
            Ok(Ok(())) => {
                tracing::info!(listener = %self.core.listener.name, client = %self.core.flow.client, server = %addr, "the client left mid-request; its query was cancelled")
            }
            _ => {
                tracing::warn!(listener = %self.core.listener.name, client = %self.core.flow.client, server = %addr, "the client left mid-request and the cancel could not be sent");
            }
        }
        if self.s_stream.remaining > 0 {
            return; // mid-message: not worth resynchronising, the connection is closed
        }
        // CopyFail ends a COPY FROM STDIN (a server not in COPY IN ignores it); the Sync ends an
        // extended-protocol request the client had not finished. Its ReadyForQuery is one more.
        let mut w = Writer::new();
        w.raw(b'f', b"the client went away\0");
        w.raw(b'S', b"");
        if conn.stream.send(&w.buf).await.is_err() {
            return;
        }
        let mut unread = std::mem::take(&mut self.sbuf);
        unread.append(&mut conn.pending);
        conn.pending = unread;
        let mut expected = self.pending + 1;
        let drained = crate::workers::timeout(Duration::from_secs(5), async {
            let mut status = b'I';
            while expected > 0 {
                let (tag, body) = conn.read_message().await.ok()?;
                if tag == b'Z' {
                    expected -= 1;
                    status = body.first().copied().unwrap_or(b'I');
                }
            }
            Some(status)
        })
        .await;
        if let Ok(Some(status)) = drained {
            self.pending = 0;
            self.forget_unanswered();
            self.tx_status = status;
            self.in_copy = false;
            self.inflight.clear();
        }
    }

    /// End the session: hand the server back clean (or close it), tell the client why when
    /// the gateway ended it, close the socket and write the records.
    async fn close(mut self, end: End) {
        // A client that left with a request running: its server stops working for nobody.
        if self.pending > 0 && matches!(end, End::ClientClosed | End::ClientError(_)) {
            Box::pin(self.abandon_request()).await;
        }
        // Hand the server back clean, or close it.
        if let Some(a) = self.attached.as_mut() {
            let idle = self.pending == 0
                && self.tx_status == b'I'
                && !self.in_copy
                && self.sbuf.is_empty();
            let reset = if !idle {
                false
            } else if self.core.profile.mode == PoolMode::Session || self.pinned.is_some() {
                matches!(
                    crate::workers::timeout(
                        Duration::from_secs(5),
                        a.server.conn.simple("DISCARD ALL")
                    )
                    .await,
                    Ok(Ok(_))
                )
            } else {
                true
            };
            if reset {
                // DISCARD ALL put the startup values back; forget the ones the gateway set.
                a.server
                    .conn
                    .params
                    .retain(|k, _| !self.core.profile.startup.params.iter().any(|(n, _)| n == k));
                a.server.conn.applied.clear();
                a.server.conn.applied_for = None;
                if self.core.profile.mode == PoolMode::Session || self.pinned.is_some() {
                    a.server.conn.prepared.clear();
                }
                self.detach();
            } else {
                self.detach_broken();
            }
        }
        if matches!(end, End::IdleTimeout | End::Stopped) {
            let mut w = Writer::new();
            let (code, msg) = match end {
                End::IdleTimeout => ("57P05", "terminating connection due to idle timeout"),
                _ => (
                    "57P01",
                    "terminating connection: the gateway is shutting down",
                ),
            };
            w.error("FATAL", code, msg);
            let _ = crate::workers::timeout(Duration::from_secs(1), self.client.send(&w.buf)).await;
        }
        let _ = crate::workers::timeout(Duration::from_secs(1), self.client.shutdown()).await;
        self.core.end_records(&end, self.pinned);
    }
}

impl Core {
    /// The session is over: metrics, log, flow record, `session.end` audit event, and the
    /// client leaves the admin API's list.
    fn end_records(&self, end: &End, pinned: Option<&'static str>) {
        let m = &self.listener.metrics;
        let bytes_in = self.flow.counters.bytes_in.load(Ordering::Relaxed);
        let bytes_out = self.flow.counters.bytes_out.load(Ordering::Relaxed);
        m.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        m.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        match end {
            End::ClientError(e) => {
                tracing::debug!(listener = %self.listener.name, client = %self.flow.client, error = %e, "session ended")
            }
            End::ServerLost(e) => {
                tracing::info!(listener = %self.listener.name, client = %self.flow.client, error = %e, "session ended: backend lost")
            }
            End::ServerClosed(e) => {
                tracing::info!(listener = %self.listener.name, client = %self.flow.client, error = %e, "session ended by its server")
            }
            End::Refused(r) => {
                tracing::info!(listener = %self.listener.name, client = %self.flow.client, reason = r, "session refused")
            }
            _ => {
                tracing::debug!(listener = %self.listener.name, client = %self.flow.client, end = end.label(), "session ended")
            }
        }
        self.shared.records.close(&self.flow);
        self.shared
            .records
            .audit("session.end", &self.listener.name, self.flow.client, || {
                let mut extra = Map::new();
                extra.insert(
                    "user".into(),
                    Value::from(self.profile.startup.user.as_str()),
                );
                extra.insert(
                    "database".into(),
                    Value::from(self.profile.startup.database.as_str()),
                );
                extra.insert(
                    "session_id".into(),
                    Value::from(self.cancel.info.session_id()),
                );
                extra.insert("end".into(), Value::from(end.label()));
                extra.insert(
                    "duration_ms".into(),
                    Value::from(self.started.elapsed().as_millis() as u64),
                );
                extra.insert("bytes_in".into(), Value::from(bytes_in));
                extra.insert("bytes_out".into(), Value::from(bytes_out));
                extra.insert("queries".into(), Value::from(self.queries));
                extra.insert("pool_mode".into(), Value::from(self.profile.mode.as_str()));
                extra.insert("auth".into(), Value::from(self.profile.identity.method));
                if let Some(p) = pinned {
                    extra.insert("pinned".into(), Value::from(p));
                }
                extra
            });
    }
}

enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Timer,
    Phase,
}

enum AttachError {
    /// Tell the client this and end the session.
    Fatal(&'static str, String, &'static str),
    /// The target failed; another may work.
    Target(ServerError),
}

fn classify(err: ServerError, database: &str) -> AttachError {
    match &err {
        ServerError::Refused { code, message, .. } => match code.as_str() {
            "3D000" => AttachError::Fatal(
                "3D000",
                format!("database \"{database}\" does not exist"),
                "no_database",
            ),
            "28P01" | "28000" => {
                tracing::error!(error = %err, "the backend refused the gateway's credential");
                AttachError::Fatal(
                    "08004",
                    "the backend refused the gateway's login for this user (see the gateway log)"
                        .into(),
                    "backend_auth_failed",
                )
            }
            c if c.starts_with("57P") || c == "53300" => AttachError::Target(err),
            _ => AttachError::Fatal(
                "08004",
                format!("the backend refused the connection: {message}"),
                "backend_refused",
            ),
        },
        ServerError::Untrusted(_) | ServerError::AuthPolicy(_) => AttachError::Fatal(
            "08004",
            format!("the gateway refused to log in to the backend: {err}"),
            "backend_untrusted",
        ),
        ServerError::UnsupportedAuth(_) | ServerError::NoPassword => {
            tracing::error!(error = %err, "cannot log in to the backend");
            AttachError::Fatal(
                "08004",
                format!("the gateway cannot log in to the backend: {err}"),
                "backend_auth_failed",
            )
        }
        _ => AttachError::Target(err),
    }
}

/// A pooled connection that the server closed while it sat idle shows EOF (or a FATAL
/// message) without blocking.
fn still_open(conn: &mut ServerConn) -> bool {
    let mut probe = [0u8; 1];
    match conn.stream.try_read(&mut probe) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => conn.pending.is_empty(),
        _ => false,
    }
}

/// Why a server could not take a client's parameters.
enum ParamsError {
    /// The server refused a value: (SQLSTATE, message), as the client will hear it.
    Refused(String, String),
    /// The server connection failed.
    Lost(String),
}

/// A statement's identity: SHA-256 of its text, a NUL and its parameter types.
fn statement_id(query: &[u8], param_types: &[u8]) -> StatementId {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(query);
    ctx.update(&[0]);
    ctx.update(param_types);
    let mut id = [0u8; 32];
    id.copy_from_slice(ctx.finish().as_ref());
    id
}

/// The statement name the gateway parses into and closes again when a client's statement
/// already exists on the server; never left prepared.
const SCRATCH_STATEMENT: &[u8] = b"sumun_scratch";

/// `sumun_` and 28 bytes of the identity in hex: 62 characters, within PostgreSQL's 63-byte
/// names, and 224 bits that nobody can make collide.
fn server_name(id: &StatementId) -> String {
    use std::fmt::Write;
    let mut name = String::with_capacity(62);
    name.push_str("sumun_");
    for b in &id[..28] {
        let _ = write!(name, "{b:02x}");
    }
    name
}

/// The message types a client may send once logged in (PostgreSQL refuses any other with
/// 08P01 before reading its body).
fn is_frontend(tag: u8) -> bool {
    matches!(
        tag,
        b'B' | b'C' | b'c' | b'd' | b'D' | b'E' | b'f' | b'F' | b'H' | b'P' | b'Q' | b'S' | b'X'
    )
}

fn shrink(buf: &mut Vec<u8>) {
    if buf.capacity() > 8 * 1024 {
        *buf = Vec::new();
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A string literal that means the same whatever the server's `standard_conforming_strings`:
/// an escape string (`E'...'`), where a backslash always escapes, with backslashes and quotes
/// doubled.
fn quote_literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}
