//! Transaction mode: a client holds a server connection only while it has a command in flight,
//! a transaction open (the server's `SERVER_STATUS_IN_TRANS`), a cursor open, or session state
//! the next client must not see (then it is pinned to that server for the rest of its session,
//! counted by reason). Between transactions its server goes back to the pool, so many clients
//! share a few server connections.
//!
//! Commands are followed packet by packet: the client's to decide where they go (and to pin),
//! the server's with the codec's response tracker to know when an answer is complete and in
//! which transaction state. A client's database is carried to whichever server it lands on
//! (`COM_INIT_DB` first when that server is elsewhere).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use sumun_wire::mysql::flags::*;
use sumun_wire::mysql::generic::{err_payload, OkPacket};
use sumun_wire::mysql::packet::{write_packet, MAX_CHUNK};
use sumun_wire::mysql::{Capabilities, ResponseTracker, Step};
use sumun_wire::sql;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::io::{ClientStream, Packets, ServerStream};
use super::pool::{Checkout, Pool, PoolKey, ServerConn};
use super::session::{Events, ServerScan};
use super::stmt::{self, ClientStmts};
use super::MysqlFrontEnd;
use crate::listener::ListenerSnapshot;
use crate::Shared;

/// Statement text kept for audit and analysis.
const SQL_KEEP: usize = 16 * 1024;
/// A command packet up to this size is read whole before it is sent (so it can be looked at);
/// a larger one streams through after its first bytes.
const GATHER: usize = 64 * 1024;

/// Why a transaction-mode client is pinned to its server.
pub(super) const PIN_REASONS: [&str; 4] = [
    "session_state",
    "prepared_statement",
    "change_user",
    "large_statement",
];

/// What a transaction-mode session needs besides its streams.
pub(super) struct Context {
    pub fe: Arc<MysqlFrontEnd>,
    pub shared: Arc<Shared>,
    pub snap: Arc<ListenerSnapshot>,
    pub credential: String,
    pub caps: Capabilities,
    pub charset: u8,
    pub database: String,
    pub events: Events,
    pub flow: Arc<crate::records::ActiveFlow>,
    /// The id the client's greeting gave it (its row in `/api/clients`).
    pub connection_id: u32,
}

/// A server connection the session holds, and its pool.
struct Held {
    pool: Arc<Pool>,
    conn: ServerConn,
}

/// The command being answered.
struct InFlight {
    command: u8,
    tracker: ResponseTracker,
    text: Option<Vec<u8>>,
    started: Instant,
    /// `COM_INIT_DB`'s database, which becomes the client's when the server accepts it.
    init_db: Option<String>,
    /// A session setting (key and statement), the client's once the server accepts it.
    setting: Option<(String, Vec<u8>)>,
    /// The client's id of the prepared statement it is about.
    stmt: Option<u32>,
}

enum End {
    ClientClosed,
    ClientError,
    ServerLost(String),
    Refused,
    IdleTimeout,
    Stopped,
}

impl End {
    fn as_str(&self) -> &'static str {
        match self {
            End::ClientClosed => "closed",
            End::ClientError => "client_error",
            End::ServerLost(_) => "server_lost",
            End::Refused => "refused",
            End::IdleTimeout => "idle_timeout",
            End::Stopped => "drained",
        }
    }
}

/// Check out a server for the client: an idle pooled one or a new login, in the client's
/// database.
pub(super) async fn attach(ctx: &Context) -> Result<(Arc<Pool>, ServerConn), String> {
    attach_for(
        &ctx.fe,
        &ctx.shared,
        &ctx.snap,
        &ctx.credential,
        ctx.caps,
        ctx.charset,
        &ctx.database,
        false,
    )
    .await?
    .ok_or_else(|| "no backend connection is free".to_string())
}

/// [`attach`] with the session's facts one by one (a login has no session yet). With
/// `only_if_free`, a pool with nothing free right now is `Ok(None)` instead of a wait: a login
/// does not wait for a server (its first statement will).
#[allow(clippy::too_many_arguments)] // the checkout's facts, each used once
pub(super) async fn attach_for(
    fe: &Arc<MysqlFrontEnd>,
    shared: &Arc<Shared>,
    snap: &Arc<ListenerSnapshot>,
    credential: &str,
    caps: Capabilities,
    charset: u8,
    database: &str,
    only_if_free: bool,
) -> Result<Option<(Arc<Pool>, ServerConn)>, String> {
    let ctx = Want {
        fe,
        shared,
        snap,
        credential,
        caps,
        charset,
        database,
    };
    let group = ctx.snap.group.settings();
    let settings = &ctx.snap.settings.pool;
    let deadline = if only_if_free {
        tokio::time::Instant::now()
    } else {
        tokio::time::Instant::now() + settings.checkout_timeout
    };
    let mut tried = Vec::new();
    let mut last = "no healthy backend server is available".to_string();
    for _ in 0..=group.connect_retries {
        let Some(target) = ctx
            .snap
            .group
            .pick_for(&tried, crate::targets::Want::Writer)
        else {
            break;
        };
        tried.push(target.addr);
        let pool = ctx.fe.pools.get(
            PoolKey {
                listener: ctx.snap.settings.name.as_str().into(),
                target: target.addr,
                credential: ctx.credential.to_string(),
                caps: super::server::relayed(ctx.caps),
                charset: ctx.charset,
            },
            settings.size,
        );
        let mut conn = match pool.checkout(deadline).await {
            None if only_if_free => return Ok(None),
            None => {
                return Err(format!(
                    "no backend connection became free within {:?}",
                    settings.checkout_timeout
                ))
            }
            Some(Checkout::Idle(conn)) => *conn,
            Some(Checkout::Open(permit)) => {
                match super::server::open_on(
                    ctx.fe,
                    ctx.shared,
                    &group,
                    &target,
                    ctx.credential,
                    ctx.database,
                    ctx.caps,
                    ctx.charset,
                    &[],
                )
                .await
                {
                    Ok((packets, thread_id, _)) => pool.adopt(
                        packets,
                        thread_id,
                        &target,
                        ctx.database.to_string(),
                        permit,
                    ),
                    Err(fail) => {
                        pool.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                        last = fail.message;
                        if fail.end == "no_backend" {
                            continue;
                        }
                        return Err(last);
                    }
                }
            }
        };
        if conn.database != ctx.database && !ctx.database.is_empty() {
            if let Err(e) = init_db(&mut conn.packets, ctx.database).await {
                pool.release(conn, settings);
                return Err(e);
            }
            conn.database = ctx.database.to_string();
        }
        return Ok(Some((pool, conn)));
    }
    Err(last)
}

/// What a checkout is for.
struct Want<'a> {
    fe: &'a Arc<MysqlFrontEnd>,
    shared: &'a Arc<Shared>,
    snap: &'a Arc<ListenerSnapshot>,
    credential: &'a str,
    caps: Capabilities,
    charset: u8,
    database: &'a str,
}

/// `COM_INIT_DB` on a server the gateway holds, its answer read here.
async fn init_db(packets: &mut Packets<ServerStream>, database: &str) -> Result<(), String> {
    packets.seq = 0;
    let mut cmd = vec![COM_INIT_DB];
    cmd.extend_from_slice(database.as_bytes());
    packets.write(&cmd).await.map_err(|e| e.to_string())?;
    let answer = packets.read().await.map_err(|e| e.to_string())?;
    match answer.first() {
        Some(0x00) => Ok(()),
        _ => Err(match sumun_wire::mysql::ErrPacket::parse(&answer) {
            Ok(e) => String::from_utf8_lossy(e.message).into_owned(),
            Err(_) => format!("the server refused database '{database}'"),
        }),
    }
}

/// The session of a logged-in transaction-mode client.
pub(super) async fn run(
    mut ctx: Context,
    client: Packets<ClientStream>,
    idle: std::time::Duration,
) -> (&'static str, u64) {
    let mut client_stream = client.stream;
    let mut cbuf = client.buf;
    let mut s = State::default();
    let end = s.relay(&mut ctx, &mut client_stream, &mut cbuf, idle).await;
    // Whatever the client left on its server: a command in flight or an open transaction is
    // not handed on; a pinned server is reset first.
    if let Some(held) = s.held.take() {
        if s.inflight.is_none() && !matches!(end, End::ServerLost(_)) {
            let mut conn = held.conn;
            if s.in_tx || s.pinned.is_some() || s.stmts.busy() {
                match reset(&mut conn.packets).await {
                    Ok(()) => {
                        conn.settings.clear();
                        conn.stmts.forget();
                        held.pool.release(conn, &ctx.snap.settings.pool)
                    }
                    Err(_) => held.pool.discard(conn),
                }
            } else {
                held.pool.release(conn, &ctx.snap.settings.pool);
            }
        } else {
            held.pool.discard(held.conn);
        }
    }
    if let End::ServerLost(why) = &end {
        tracing::warn!(listener = %ctx.snap.settings.name, client = %ctx.events.client, error = %why, "backend connection lost");
    }
    (end.as_str(), s.queries)
}

/// `COM_RESET_CONNECTION`: the server forgets the session (transaction, variables, temporary
/// tables, prepared statements, locks).
async fn reset(packets: &mut Packets<ServerStream>) -> Result<(), String> {
    packets.seq = 0;
    packets
        .write(&[COM_RESET_CONNECTION])
        .await
        .map_err(|e| e.to_string())?;
    let answer = crate::workers::timeout(std::time::Duration::from_secs(5), packets.read())
        .await
        .map_err(|_| "no answer to COM_RESET_CONNECTION".to_string())?
        .map_err(|e| e.to_string())?;
    match answer.first() {
        Some(0x00) => Ok(()),
        _ => Err("COM_RESET_CONNECTION refused".into()),
    }
}

#[derive(Default)]
struct State {
    held: Option<Held>,
    inflight: Option<InFlight>,
    /// The server asked the client for more (a local file, `COM_CHANGE_USER`'s exchange):
    /// its packets go through as they come.
    client_turn: bool,
    /// Bytes of the current client packet still to pass through to the server.
    c_remaining: usize,
    in_tx: bool,
    cursor: bool,
    pinned: Option<&'static str>,
    sscan: ServerScan,
    /// Statements sent, for `session.end`.
    queries: u64,
    /// The last client packet was 16 MiB − 1 long: the next one continues its payload.
    c_continues: bool,
    /// The server's last status said autocommit was off (`SET autocommit = 0`, carried).
    autocommit_off: bool,
    /// Session settings the client made (`SET NAMES`, `SET autocommit`, `SET sql_mode`...):
    /// carried to whichever server it lands on instead of pinning it.
    settings: Vec<(String, Vec<u8>)>,
    /// The client's prepared statements, by the ids the gateway gave it.
    stmts: ClientStmts,
    /// The client's statements pass through with the server's ids (it prepared one the
    /// gateway could not look at): it is pinned.
    raw_stmts: bool,
}

/// Client bytes held at most (a command being gathered, or sent while the previous one is
/// answered); beyond it the client is not read until the gateway catches up.
const CLIENT_BUFFER: usize = GATHER + 64 * 1024;

enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Timer,
    Stop,
}

impl State {
    async fn relay(
        &mut self,
        ctx: &mut Context,
        client: &mut ClientStream,
        cbuf: &mut Vec<u8>,
        idle: std::time::Duration,
    ) -> End {
        let shared = ctx.shared.clone();
        let stop = shared.stop.wait();
        tokio::pin!(stop);
        // The data plane's alarm (worker event loops have no tokio timers): it rings at the
        // deadline as of its last setting; a client read only moves `deadline` on.
        let mut deadline = std::time::Instant::now().checked_add(idle);
        let mut timer = crate::workers::Alarm::new();
        if let Some(at) = deadline {
            timer.set(at);
        }
        let mut cchunk = vec![0u8; 8192];
        let mut schunk = vec![0u8; 16384];
        loop {
            if let Err(end) = self.on_client(ctx, client, cbuf).await {
                return end;
            }
            let read_client = cbuf.len() < CLIENT_BUFFER;
            let event = {
                let server = self.held.as_mut().map(|h| &mut h.conn.packets.stream);
                tokio::select! {
                    biased;
                    r = async {
                        match server {
                            Some(s) => s.read(&mut schunk).await,
                            None => std::future::pending().await,
                        }
                    } => Event::Server(r),
                    r = client.read(&mut cchunk), if read_client => Event::Client(r),
                    () = timer.rung() => Event::Timer,
                    () = &mut stop => Event::Stop,
                }
            };
            match event {
                Event::Server(Ok(0)) => {
                    return End::ServerLost("the server closed the connection".into())
                }
                Event::Server(Err(e)) => return End::ServerLost(e.to_string()),
                Event::Server(Ok(n)) => {
                    crate::frontend::count(&ctx.flow.counters, false, n);
                    if let Err(end) = self.on_server(ctx, client, &schunk[..n]).await {
                        return end;
                    }
                }
                Event::Client(Ok(0)) => return End::ClientClosed,
                Event::Client(Err(_)) => return End::ClientError,
                Event::Client(Ok(n)) => {
                    crate::frontend::count(&ctx.flow.counters, true, n);
                    cbuf.extend_from_slice(&cchunk[..n]);
                    deadline = std::time::Instant::now().checked_add(idle);
                }
                Event::Timer => {
                    let now = std::time::Instant::now();
                    match deadline {
                        // Rang for an earlier deadline: a client read moved it on.
                        Some(at) if now < at => timer.set(at),
                        _ => {
                            if self.inflight.is_none() {
                                return End::IdleTimeout;
                            }
                            deadline = now.checked_add(idle);
                            if let Some(at) = deadline {
                                timer.set(at);
                            }
                        }
                    }
                }
                Event::Stop => return End::Stopped,
            }
        }
    }

    /// Pass on what the client sent, command by command, while it may.
    async fn on_client(
        &mut self,
        ctx: &mut Context,
        client: &mut ClientStream,
        cbuf: &mut Vec<u8>,
    ) -> Result<(), End> {
        loop {
            if self.c_remaining > 0 {
                if cbuf.is_empty() {
                    return Ok(());
                }
                let n = self.c_remaining.min(cbuf.len());
                self.send_server(&cbuf[..n]).await?;
                cbuf.drain(..n);
                self.c_remaining -= n;
                continue;
            }
            if self.inflight.is_some() && !self.client_turn && !self.c_continues {
                return Ok(());
            }
            if cbuf.len() < 4 {
                return Ok(());
            }
            let len = usize::from(cbuf[0]) | usize::from(cbuf[1]) << 8 | usize::from(cbuf[2]) << 16;
            let seq = cbuf[3];
            let total = 4 + len;
            if self.client_turn || self.c_continues {
                // A local file's content, the client's part of an authentication exchange, or
                // the next packet of a payload of 16 MiB or more.
                let n = total.min(cbuf.len());
                self.send_server(&cbuf[..n]).await?;
                cbuf.drain(..n);
                self.c_remaining = total - n;
                self.c_continues = len == MAX_CHUNK;
                continue;
            }
            // A new command.
            if seq != 0 {
                reply(
                    client,
                    1,
                    &err_payload(1156, b"08S01", "Got packets out of order"),
                )
                .await;
                return Err(End::Refused);
            }
            let whole = total <= cbuf.len();
            if !whole && (total <= GATHER || cbuf.len() < 5) {
                return Ok(());
            }
            if len == 0 {
                reply(
                    client,
                    1,
                    &err_payload(1835, b"HY000", "Malformed communication packet."),
                )
                .await;
                return Err(End::Refused);
            }
            let command = cbuf[4];
            let body = &cbuf[5..total.min(cbuf.len())];
            let mut text = None;
            let mut init_db = None;
            let mut setting = None;
            let mut pin = None;
            match command {
                COM_QUIT => return Err(End::ClientClosed),
                COM_PING | COM_RESET_CONNECTION if self.held.is_none() => {
                    // Nothing of the client's is on any server: answered here. A reset also
                    // forgets the settings the gateway carries for it.
                    if command == COM_RESET_CONNECTION {
                        self.settings.clear();
                        self.autocommit_off = false;
                        self.stmts.clear();
                        self.raw_stmts = false;
                    }
                    // In the client's autocommit state, as its server would say.
                    reply(client, 1, &ok_with(ctx.caps, self.status_idle())).await;
                    cbuf.drain(..total);
                    continue;
                }
                COM_CHANGE_USER => {
                    reply(
                        client,
                        1,
                        &err_payload(
                            1235,
                            b"42000",
                            "This version of Sumun doesn't yet support 'COM_CHANGE_USER on a transaction-mode listener': connect again as the other user",
                        ),
                    )
                    .await;
                    if !whole {
                        return Err(End::Refused);
                    }
                    cbuf.drain(..total);
                    continue;
                }
                COM_STMT_PREPARE if self.raw_stmts || (!whole && self.stmts.is_empty()) => {
                    // Too large to look at: its ids are the server's from now on.
                    self.raw_stmts = true;
                    pin = Some("prepared_statement");
                }
                c if !self.raw_stmts
                    && (c == COM_STMT_PREPARE || sumun_wire::mysql::stmt::has_statement_id(c)) =>
                {
                    if !self.statement(ctx, client, cbuf, total, whole).await? {
                        return Ok(());
                    }
                    continue;
                }
                COM_QUERY => {
                    let kept = &body[..body.len().min(SQL_KEEP)];
                    let analysis =
                        sql::analyze_with(&String::from_utf8_lossy(kept), sql::Syntax::MYSQL);
                    if let Some(key) = whole.then(|| session_setting(kept)).flatten() {
                        // Carried to the client's next servers: no pin.
                        setting = Some((key, kept.to_vec()));
                    } else if analysis.pin.is_some() {
                        pin = Some("session_state");
                    } else if !whole {
                        // Not all of it was looked at.
                        pin = Some("large_statement");
                    }
                    text = Some(kept.to_vec());
                    ctx.fe.stats.queries.fetch_add(1, Ordering::Relaxed);
                    self.queries += 1;
                }
                COM_INIT_DB => init_db = Some(String::from_utf8_lossy(body).into_owned()),
                _ => {}
            }
            let tracker = match ResponseTracker::new(command, ctx.caps) {
                Ok(t) => t,
                Err(_) => {
                    reply(client, 1, &err_payload(1047, b"08S01", "Unknown command")).await;
                    if !whole {
                        return Err(End::Refused);
                    }
                    cbuf.drain(..total);
                    continue;
                }
            };
            if !self.ensure_held(ctx, client).await? {
                if !whole {
                    return Err(End::Refused);
                }
                cbuf.drain(..total);
                continue;
            }
            if command == COM_QUERY && whole {
                if let Some(h) = &self.held {
                    // The mysql client's Ctrl-C: `KILL QUERY <greeting id>`.
                    super::session::route_kill(
                        &ctx.fe,
                        &mut cbuf[5..total],
                        &ctx.events.user,
                        &h.conn.target.address,
                    );
                }
            }
            let n = total.min(cbuf.len());
            self.send_server(&cbuf[..n]).await?;
            cbuf.drain(..n);
            self.c_remaining = total - n;
            self.c_continues = len == MAX_CHUNK;
            if let Some(reason) = pin {
                self.pin(ctx, reason);
            }
            if sumun_wire::mysql::response::expects_response(command) {
                self.inflight = Some(InFlight {
                    command,
                    tracker,
                    text,
                    started: Instant::now(),
                    init_db,
                    setting,
                    stmt: None,
                });
            } else {
                self.maybe_release(ctx);
            }
        }
    }

    /// A server for the client's next command: the one it holds, or one checked out now and
    /// given the client's settings. `Ok(false)`: none could be had (the client was told).
    async fn ensure_held(
        &mut self,
        ctx: &mut Context,
        client: &mut ClientStream,
    ) -> Result<bool, End> {
        if self.held.is_some() {
            return Ok(true);
        }
        match attach(ctx).await {
            Ok((pool, conn)) => {
                *ctx.flow.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.target.addr);
                ctx.fe.client_on(
                    ctx.connection_id,
                    Some((conn.target.address.clone(), conn.thread_id)),
                );
                if ctx.events.target != conn.target.address {
                    ctx.events.target = conn.target.address.clone();
                }
                self.held = Some(Held { pool, conn });
                if let Err(why) = self.sync_settings(ctx).await {
                    tracing::warn!(listener = %ctx.snap.settings.name, client = %ctx.events.client, error = %why, "cannot carry the client's session settings to its server");
                    if let Some(h) = self.held.take() {
                        h.pool.discard(h.conn);
                    }
                    reply(client, 1, &err_payload(1105, b"HY000", &why)).await;
                    return Err(End::Refused);
                }
                Ok(true)
            }
            Err(why) => {
                tracing::warn!(listener = %ctx.snap.settings.name, client = %ctx.events.client, error = %why, "no backend connection for a statement");
                reply(client, 1, &err_payload(1105, b"HY000", &why)).await;
                Ok(false)
            }
        }
    }

    /// A prepared-statement command (`COM_STMT_*`) of a client whose statements the gateway
    /// keeps: its id mapped onto the held server's, the statement prepared there first when
    /// it is not yet. `Ok(false)`: more of the packet is needed first.
    async fn statement(
        &mut self,
        ctx: &mut Context,
        client: &mut ClientStream,
        cbuf: &mut Vec<u8>,
        total: usize,
        whole: bool,
    ) -> Result<bool, End> {
        let command = cbuf[4];
        let fe = ctx.fe.clone();
        let count = |name: &str| {
            fe.stats.prepared[stmt::event(name)].fetch_add(1, Ordering::Relaxed);
        };
        // Commands the server does not answer (close, long data) get no answer here either.
        let answered = sumun_wire::mysql::response::expects_response(command);
        macro_rules! refuse {
            ($event:expr, $code:expr, $state:expr, $msg:expr) => {{
                count($event);
                if answered {
                    reply(client, 1, &err_payload($code, $state, &$msg)).await;
                }
                if !whole {
                    return Err(End::Refused);
                }
                cbuf.drain(..total);
                self.maybe_release(ctx);
                return Ok(true);
            }};
        }
        if command == COM_STMT_PREPARE {
            // Whole here (a larger one made the client's ids the server's).
            let sql: Arc<[u8]> = Arc::from(&cbuf[5..total]);
            if !self.stmts.has_room(sql.len()) {
                refuse!(
                    "refused_limit",
                    1461,
                    b"42000",
                    format!(
                        "Can't create more than max_prepared_stmt_count statements (current value: {})",
                        stmt::MAX_PER_CLIENT
                    )
                );
            }
            if !self.ensure_held(ctx, client).await? {
                cbuf.drain(..total);
                return Ok(true);
            }
            cbuf.drain(..total);
            let keep = self.busy_server_ids();
            let Some(h) = self.held.as_mut() else {
                return Err(End::ServerLost("no server".into()));
            };
            let scope = stmt::scope(&h.conn.database, &h.conn.settings);
            let answer = match h.conn.stmts.get_mut(scope, &sql) {
                Some(s) => {
                    count("prepare_cached");
                    Ok((s.params, s.columns, s.answer.clone()))
                }
                None => match prepare_on(&mut h.conn, ctx.caps, &sql).await {
                    Err(e) => return Err(End::ServerLost(e)),
                    Ok(Err(err)) => Err(err),
                    Ok(Ok((ok, answer))) => {
                        count("prepared");
                        let answer = Arc::new(answer);
                        if let Some(old) = h.conn.stmts.insert(
                            scope,
                            sql.clone(),
                            ok.statement_id,
                            ok.params,
                            ok.columns,
                            answer.to_vec(),
                            &keep,
                        ) {
                            close_on(&mut h.conn, old).await.map_err(End::ServerLost)?;
                        }
                        Ok((ok.params, ok.columns, answer))
                    }
                },
            };
            match answer {
                Ok((params, columns, answer)) => {
                    let id = self.stmts.add(sql, params, columns);
                    let mut out = Vec::new();
                    let mut seq = 1u8;
                    for (i, payload) in answer.iter().enumerate() {
                        if i == 0 && payload.len() >= 5 {
                            let mut first = payload.clone();
                            first[1..5].copy_from_slice(&id.to_le_bytes());
                            seq = write_packet(&mut out, seq, &first);
                        } else {
                            seq = write_packet(&mut out, seq, payload);
                        }
                    }
                    client.write_all(&out).await.map_err(|_| End::ClientError)?;
                    client.flush().await.map_err(|_| End::ClientError)?;
                }
                Err(err) => reply(client, 1, &err).await,
            }
            self.maybe_release(ctx);
            return Ok(true);
        }
        if cbuf.len() < 9 {
            return Ok(false);
        }
        let asked = u32::from_le_bytes([cbuf[5], cbuf[6], cbuf[7], cbuf[8]]);
        let id = self.stmts.resolve(asked);
        let what = match command {
            COM_STMT_EXECUTE => "mysqld_stmt_execute",
            COM_STMT_FETCH => "mysqld_stmt_fetch",
            COM_STMT_RESET => "mysqld_stmt_reset",
            COM_STMT_SEND_LONG_DATA => "mysqld_stmt_send_long_data",
            _ => "mysqld_stmt_close",
        };
        let Some(st) = self.stmts.get(id) else {
            refuse!(
                "refused_other",
                1243,
                b"HY000",
                format!("Unknown prepared statement handler ({asked}) given to {what}")
            );
        };
        let (sql, params, cursor, busy) = (
            st.sql.clone(),
            st.params,
            st.cursor,
            st.cursor || st.long_data,
        );
        // The statement as the held server knows it, if it does.
        let prepared_here = self.held.as_mut().and_then(|h| {
            let scope = stmt::scope(&h.conn.database, &h.conn.settings);
            h.conn.stmts.get_mut(scope, &sql).map(|s| s.id)
        });
        match command {
            COM_STMT_CLOSE => {
                cbuf.drain(..total);
                self.stmts.remove(id);
                // The server statement stays for the next client; what this one left on it
                // (long data, a cursor) goes.
                if let (true, Some(sid), Some(h)) = (busy, prepared_here, self.held.as_mut()) {
                    stmt_reset_on(&mut h.conn, ctx.caps, sid)
                        .await
                        .map_err(End::ServerLost)?;
                }
                self.maybe_release(ctx);
                return Ok(true);
            }
            COM_STMT_RESET if prepared_here.is_none() => {
                // Nothing of it is on any server (long data or a cursor keep the client on
                // its server).
                cbuf.drain(..total);
                if let Some(st) = self.stmts.get_mut(id) {
                    st.long_data = false;
                    st.cursor = false;
                }
                let status = if self.held.is_some() && self.in_tx {
                    self.status_idle() | SERVER_STATUS_IN_TRANS
                } else {
                    self.status_idle()
                };
                reply(client, 1, &ok_with(ctx.caps, status)).await;
                return Ok(true);
            }
            COM_STMT_FETCH if !cursor || prepared_here.is_none() => {
                refuse!(
                    "refused_other",
                    1421,
                    b"HY000",
                    format!("The statement ({asked}) has no open cursor.")
                );
            }
            COM_STMT_BULK_EXECUTE => {
                refuse!("refused_other", 1047, b"08S01", "Unknown command");
            }
            _ => {}
        }
        // Execute and long data need their head: the id, and the parameter types' flag.
        let head = if command == COM_STMT_EXECUTE {
            stmt::execute_head(params)
        } else {
            9
        };
        if !whole && cbuf.len() < 4 + head {
            return Ok(false);
        }
        let exec = if command == COM_STMT_EXECUTE {
            match stmt::parse_execute(&cbuf[4..total.min(cbuf.len())], params) {
                Ok(e) => Some(e),
                Err(why) => refuse!(
                    "refused_other",
                    1210,
                    b"HY000",
                    format!("Incorrect arguments to mysqld_stmt_execute: {why}")
                ),
            }
        } else {
            None
        };
        if !self.ensure_held(ctx, client).await? {
            if !whole {
                return Err(End::Refused);
            }
            cbuf.drain(..total);
            return Ok(true);
        }
        let keep = self.busy_server_ids();
        let Some(h) = self.held.as_mut() else {
            return Err(End::ServerLost("no server".into()));
        };
        let scope = stmt::scope(&h.conn.database, &h.conn.settings);
        if h.conn.stmts.get_mut(scope, &sql).is_none() {
            match prepare_on(&mut h.conn, ctx.caps, &sql).await {
                Err(e) => return Err(End::ServerLost(e)),
                Ok(Err(err)) => {
                    count("refused_other");
                    if answered {
                        reply(client, 1, &err).await;
                    }
                    if !whole {
                        return Err(End::Refused);
                    }
                    cbuf.drain(..total);
                    self.maybe_release(ctx);
                    return Ok(true);
                }
                Ok(Ok((ok, answer))) => {
                    let st = self.stmts.get(id);
                    if st.is_some_and(|s| s.params != ok.params || s.columns != ok.columns) {
                        // Not the statement the client prepared any more (its tables changed).
                        close_on(&mut h.conn, ok.statement_id)
                            .await
                            .map_err(End::ServerLost)?;
                        refuse!(
                            "refused_other",
                            1615,
                            b"HY000",
                            "Prepared statement needs to be re-prepared"
                        );
                    }
                    count("reprepared");
                    if let Some(old) = h.conn.stmts.insert(
                        scope,
                        sql.clone(),
                        ok.statement_id,
                        ok.params,
                        ok.columns,
                        answer,
                        &keep,
                    ) {
                        close_on(&mut h.conn, old).await.map_err(End::ServerLost)?;
                    }
                }
            }
        }
        let Some(server) = h.conn.stmts.get_mut(scope, &sql) else {
            return Err(End::ServerLost("statement lost".into()));
        };
        let sid = server.id;
        cbuf[5..9].copy_from_slice(&sid.to_le_bytes());
        let len = usize::from(cbuf[0]) | usize::from(cbuf[1]) << 8 | usize::from(cbuf[2]) << 16;
        let mut rewritten = None;
        if let Some(exec) = &exec {
            let payload = &cbuf[4..total.min(cbuf.len())];
            let client_types = self.stmts.get(id).and_then(|s| s.types.clone());
            match (&exec.types, exec.bound_at) {
                (Some(range), _) => {
                    // Sent now: the server's and the client's from now on.
                    let types = payload[range.clone()].to_vec();
                    server.types = Some(types.clone());
                    if let Some(st) = self.stmts.get_mut(id) {
                        st.types = Some(types);
                    }
                }
                (None, Some(at)) if server.types != client_types => match client_types {
                    Some(types) if whole && len + types.len() < MAX_CHUNK => {
                        count("types_supplied");
                        rewritten = Some(stmt::with_types(payload, at, &types));
                        server.types = Some(types);
                    }
                    Some(_) => refuse!("refused_other", 1105, b"HY000", "This prepared statement's parameter types cannot be given to its new server (the packet is too large); send them with each execute"),
                    // The server would answer with another client's types.
                    None => refuse!("refused_other", 1210, b"HY000", "Incorrect arguments to mysqld_stmt_execute"),
                },
                _ => {}
            }
        }
        if command == COM_STMT_SEND_LONG_DATA {
            if let Some(st) = self.stmts.get_mut(id) {
                if !st.long_data {
                    count("held_long_data");
                }
                st.long_data = true;
            }
        }
        match rewritten {
            Some(payload) => {
                let mut out = Vec::with_capacity(payload.len() + 4);
                write_packet(&mut out, 0, &payload);
                cbuf.drain(..total);
                self.send_server(&out).await?;
                self.c_remaining = 0;
                self.c_continues = false;
            }
            None => {
                let n = total.min(cbuf.len());
                self.send_server(&cbuf[..n]).await?;
                cbuf.drain(..n);
                self.c_remaining = total - n;
                self.c_continues = len == MAX_CHUNK;
            }
        }
        if answered {
            let tracker = ResponseTracker::new(command, ctx.caps)
                .map_err(|e| End::ServerLost(e.to_string()))?;
            let text = (command == COM_STMT_EXECUTE).then(|| {
                ctx.fe.stats.queries.fetch_add(1, Ordering::Relaxed);
                self.queries += 1;
                sql[..sql.len().min(SQL_KEEP)].to_vec()
            });
            self.inflight = Some(InFlight {
                command,
                tracker,
                text,
                started: Instant::now(),
                init_db: None,
                setting: None,
                stmt: Some(id),
            });
        } else {
            self.maybe_release(ctx);
        }
        Ok(true)
    }

    /// Server ids of the client's statements with long data or a cursor on its held server.
    fn busy_server_ids(&mut self) -> Vec<u32> {
        let Some(h) = self.held.as_mut() else {
            return Vec::new();
        };
        if !self.stmts.busy() {
            return Vec::new();
        }
        let scope = stmt::scope(&h.conn.database, &h.conn.settings);
        self.stmts
            .busy_texts()
            .into_iter()
            .filter_map(|sql| h.conn.stmts.get_mut(scope, &sql).map(|s| s.id))
            .collect()
    }

    /// Give the server just taken the client's session settings: nothing to do when it has
    /// them already (the usual case: every client of an application sends the same `SET
    /// NAMES`); otherwise it is reset (`COM_RESET_CONNECTION`) if it has others, back into the
    /// client's database, and the client's settings are applied in the order it made them.
    async fn sync_settings(&mut self, ctx: &Context) -> Result<(), String> {
        let Some(h) = self.held.as_mut() else {
            return Ok(());
        };
        if h.conn.settings == self.settings {
            return Ok(());
        }
        let conn = &mut h.conn;
        if !conn.settings.is_empty() {
            reset(&mut conn.packets).await?;
            conn.settings.clear();
            conn.stmts.forget();
            if !ctx.database.is_empty() {
                init_db(&mut conn.packets, &ctx.database).await?;
                conn.database = ctx.database.clone();
            }
        }
        for (key, stmt) in &self.settings {
            conn.packets.seq = 0;
            let mut cmd = vec![COM_QUERY];
            cmd.extend_from_slice(stmt);
            conn.packets.write(&cmd).await.map_err(|e| e.to_string())?;
            let answer = conn.packets.read().await.map_err(|e| e.to_string())?;
            if answer.first() != Some(&0x00) {
                return Err(format!("the server refused the client's setting {key}"));
            }
            conn.settings.push((key.clone(), stmt.clone()));
        }
        Ok(())
    }

    /// The status flags of a client between transactions: autocommit as it last was.
    fn status_idle(&self) -> u16 {
        if self.autocommit_off {
            0
        } else {
            SERVER_STATUS_AUTOCOMMIT
        }
    }

    fn pin(&mut self, ctx: &Context, reason: &'static str) {
        if self.pinned.is_some() {
            return;
        }
        self.pinned = Some(reason);
        if let Some(slot) = PIN_REASONS.iter().position(|r| *r == reason) {
            ctx.fe.stats.pinned[slot].fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(listener = %ctx.snap.settings.name, client = %ctx.events.client, reason, "client pinned to its server");
    }

    /// Server bytes: followed, then passed to the client as they are.
    async fn on_server(
        &mut self,
        ctx: &mut Context,
        client: &mut ClientStream,
        bytes: &[u8],
    ) -> Result<(), End> {
        let State {
            sscan,
            inflight,
            client_turn,
            ..
        } = self;
        let mut done = None;
        let mut broken = None;
        sscan.scan(bytes, |packet| {
            let Some(f) = inflight.as_mut() else {
                // Said without being asked: an ERR before the server closes the connection.
                return;
            };
            if done.is_some() {
                broken = Some("the server sent more than its answer".to_string());
                return;
            }
            match f.tracker.feed(packet) {
                Ok(Step::More) => *client_turn = false,
                Ok(Step::LocalInfile | Step::ClientTurn) => *client_turn = true,
                Ok(Step::Done(outcome)) => done = Some(outcome),
                Err(e) => broken = Some(e.to_string()),
            }
        });
        client
            .write_all(bytes)
            .await
            .map_err(|_| End::ClientError)?;
        client.flush().await.map_err(|_| End::ClientError)?;
        if let Some(why) = broken {
            return Err(End::ServerLost(why));
        }
        let Some(outcome) = done else {
            return Ok(());
        };
        self.client_turn = false;
        let Some(f) = self.inflight.take() else {
            return Ok(());
        };
        if let Some(text) = &f.text {
            let us = f.started.elapsed().as_micros() as u64;
            ctx.events.statement(text, us, outcome.error);
        }
        // A setting the gateway carries changes session state it knows about.
        let carried = f.setting.is_some();
        if outcome.error.is_none() {
            if let (Some(db), Some(h)) = (f.init_db, self.held.as_mut()) {
                h.conn.database = db.clone();
                ctx.database = db;
            }
            if f.command == COM_RESET_CONNECTION {
                self.pinned = None;
                self.settings.clear();
                self.stmts.clear();
                self.raw_stmts = false;
                if let Some(h) = self.held.as_mut() {
                    h.conn.settings.clear();
                    h.conn.stmts.forget();
                }
            }
            if let (Some((key, stmt)), Some(h)) = (f.setting, self.held.as_mut()) {
                upsert(&mut self.settings, &key, &stmt);
                upsert(&mut h.conn.settings, &key, &stmt);
            }
        }
        if let Some(st) = f.stmt.and_then(|id| self.stmts.get_mut(id)) {
            let status = outcome.status.unwrap_or(0);
            match f.command {
                COM_STMT_EXECUTE => {
                    // The server used (and dropped) the long data; a cursor is open when it
                    // says so.
                    st.long_data = false;
                    let cursor =
                        outcome.error.is_none() && status & SERVER_STATUS_CURSOR_EXISTS != 0;
                    if cursor && !st.cursor {
                        ctx.fe.stats.prepared[stmt::event("held_cursor")]
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    st.cursor = cursor;
                }
                COM_STMT_FETCH if status & SERVER_STATUS_LAST_ROW_SENT != 0 => st.cursor = false,
                COM_STMT_RESET if outcome.error.is_none() => {
                    st.long_data = false;
                    st.cursor = false;
                }
                _ => {}
            }
        }
        if let Some(status) = outcome.status {
            self.in_tx = status & SERVER_STATUS_IN_TRANS != 0;
            self.autocommit_off = status & SERVER_STATUS_AUTOCOMMIT == 0;
            self.cursor = status & SERVER_STATUS_CURSOR_EXISTS != 0;
            // Session state the analysis did not see (the server says it changed): the
            // server is the client's from now on.
            if status & SERVER_SESSION_STATE_CHANGED != 0
                && !matches!(f.command, COM_INIT_DB | COM_RESET_CONNECTION)
                && !carried
            {
                self.pin(ctx, "session_state");
            }
        }
        self.maybe_release(ctx);
        Ok(())
    }

    /// Between transactions, with nothing outstanding and nothing to keep: the server goes
    /// back to its pool.
    fn maybe_release(&mut self, ctx: &Context) {
        if self.inflight.is_some()
            || self.in_tx
            || self.cursor
            || self.pinned.is_some()
            || self.stmts.busy()
            || self.c_remaining > 0
            || !self.sscan.at_boundary()
        {
            return;
        }
        if let Some(held) = self.held.take() {
            held.pool.release(held.conn, &ctx.snap.settings.pool);
            ctx.fe.client_on(ctx.connection_id, None);
        }
    }

    async fn send_server(&mut self, bytes: &[u8]) -> Result<(), End> {
        let Some(h) = self.held.as_mut() else {
            return Err(End::ServerLost("no server".into()));
        };
        let s = &mut h.conn.packets.stream;
        if let Err(e) = s.write_all(bytes).await {
            return Err(End::ServerLost(e.to_string()));
        }
        s.flush().await.map_err(|e| End::ServerLost(e.to_string()))
    }
}

/// `COM_STMT_PREPARE` on a server the gateway holds, its answer read here: the PREPARE_OK
/// and the answer's payloads, or the server's ERR payload. `Err`: the server is lost.
async fn prepare_on(
    conn: &mut ServerConn,
    caps: Capabilities,
    sql: &[u8],
) -> Result<Result<(sumun_wire::mysql::response::PrepareOk, Vec<Vec<u8>>), Vec<u8>>, String> {
    conn.packets.seq = 0;
    let mut cmd = Vec::with_capacity(sql.len() + 1);
    cmd.push(COM_STMT_PREPARE);
    cmd.extend_from_slice(sql);
    conn.packets.write(&cmd).await.map_err(|e| e.to_string())?;
    let mut tracker = ResponseTracker::new(COM_STMT_PREPARE, caps).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    loop {
        let payload = conn.packets.read().await.map_err(|e| e.to_string())?;
        let step = tracker.feed_payload(&payload).map_err(|e| e.to_string())?;
        answer.push(payload);
        if let Step::Done(outcome) = step {
            return Ok(match outcome.prepared {
                Some(ok) => Ok((ok, answer)),
                None => Err(answer.swap_remove(0)),
            });
        }
    }
}

/// `COM_STMT_CLOSE` of a server statement (the server does not answer it).
async fn close_on(conn: &mut ServerConn, id: u32) -> Result<(), String> {
    conn.packets.seq = 0;
    let mut cmd = vec![COM_STMT_CLOSE];
    cmd.extend_from_slice(&id.to_le_bytes());
    conn.packets.write(&cmd).await.map_err(|e| e.to_string())
}

/// `COM_STMT_RESET` of a server statement: its long data and cursor go.
async fn stmt_reset_on(conn: &mut ServerConn, caps: Capabilities, id: u32) -> Result<(), String> {
    conn.packets.seq = 0;
    let mut cmd = vec![COM_STMT_RESET];
    cmd.extend_from_slice(&id.to_le_bytes());
    conn.packets.write(&cmd).await.map_err(|e| e.to_string())?;
    let mut tracker = ResponseTracker::new(COM_STMT_RESET, caps).map_err(|e| e.to_string())?;
    loop {
        let payload = conn.packets.read().await.map_err(|e| e.to_string())?;
        if let Step::Done(_) = tracker.feed_payload(&payload).map_err(|e| e.to_string())? {
            return Ok(());
        }
    }
}

/// Answer the client with one packet.
async fn reply(client: &mut ClientStream, seq: u8, payload: &[u8]) {
    let mut out = Vec::with_capacity(payload.len() + 4);
    write_packet(&mut out, seq, payload);
    let _ = client.write_all(&out).await;
    let _ = client.flush().await;
}

/// An OK as the server would send to a `COM_PING` or a reset, in autocommit.
pub(super) fn ok_payload(caps: Capabilities) -> Vec<u8> {
    ok_with(caps, SERVER_STATUS_AUTOCOMMIT)
}

/// An OK with these status flags.
fn ok_with(caps: Capabilities, status: u16) -> Vec<u8> {
    let mut out = Vec::new();
    OkPacket {
        status,
        ..OkPacket::default()
    }
    .write(&mut out, caps);
    out
}

/// Replace or add `key`'s statement.
fn upsert(settings: &mut Vec<(String, Vec<u8>)>, key: &str, stmt: &[u8]) {
    match settings.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = stmt.to_vec(),
        None => settings.push((key.to_string(), stmt.to_vec())),
    }
}

/// Session variables a client may set without being pinned: the gateway carries them to each
/// server it lands on. Each is plain session state a server can be given again by the same
/// statement.
const CARRIED: [&str; 10] = [
    "autocommit",
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
    "sql_mode",
    "time_zone",
    "transaction_isolation",
    "tx_isolation",
    "sql_auto_is_null",
];

/// The key of a statement that only sets one carried session setting: `SET NAMES cs [COLLATE
/// c]` (`names`), `SET CHARACTER SET cs` (`names`), or `SET [SESSION|@@session.|@@]var = value`
/// for a variable in [`CARRIED`] with one plain value. Anything more (several assignments,
/// comments, another statement, an expression) is not one: the analysis decides (and pins).
pub(super) fn session_setting(text: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(text).ok()?.trim();
    let text = text.strip_suffix(';').unwrap_or(text).trim_end();
    if text.contains([';', '#', '`', '\\', '(']) || text.contains("/*") || text.contains("--") {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let rest = lower.strip_prefix("set")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    let plain = |w: &str| {
        let w = w.trim_matches(|c| c == '\'' || c == '"');
        !w.is_empty()
            && w.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | ':' | '.' | ',')
            })
            && !w.contains(',')
    };
    match words.as_slice() {
        ["names", cs] if plain(cs) => Some("names".into()),
        ["names", cs, "collate", c] if plain(cs) && plain(c) => Some("names".into()),
        ["character", "set", cs] if plain(cs) => Some("names".into()),
        _ => {
            // `[session] var = value`, `@@session.var=value`, `@@var = value`.
            let joined: String = words.concat();
            let assignment = joined.strip_prefix("session").unwrap_or(&joined);
            let (var, value) = assignment.split_once('=')?;
            let var = var
                .strip_prefix("@@session.")
                .or_else(|| var.strip_prefix("@@local."))
                .or_else(|| var.strip_prefix("@@"))
                .unwrap_or(var);
            if !CARRIED.contains(&var) || !plain(value) || value.contains('=') {
                return None;
            }
            Some(var.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::session_setting;

    #[test]
    fn plain_session_settings_are_recognised_and_anything_more_is_not() {
        for (sql, key) in [
            ("SET NAMES utf8mb4", "names"),
            ("set names 'utf8mb4' collate 'utf8mb4_general_ci';", "names"),
            ("SET autocommit=1", "autocommit"),
            ("SET SESSION sql_mode = 'ANSI_QUOTES'", "sql_mode"),
            ("set @@session.time_zone = '+00:00'", "time_zone"),
            (
                "SET @@transaction_isolation = 'READ-COMMITTED'",
                "transaction_isolation",
            ),
        ] {
            assert_eq!(
                session_setting(sql.as_bytes()).as_deref(),
                Some(key),
                "{sql}"
            );
        }
        for sql in [
            "SET @x = 1",
            "SET NAMES utf8mb4; DROP TABLE t",
            "SET autocommit = 1, sql_mode = ''",
            "SET sql_mode = CONCAT(@@sql_mode, ',ANSI')",
            "SET GLOBAL sql_mode = ''",
            "SET /*!50000 sql_mode = '' */",
            "SET max_heap_table_size = 1",
            "SETNAMES utf8",
            "select 1",
        ] {
            assert_eq!(session_setting(sql.as_bytes()), None, "{sql}");
        }
    }
}
