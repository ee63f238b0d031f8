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
            Some(Checkout::Idle(conn)) => conn,
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
            if s.in_tx || s.pinned.is_some() {
                match reset(&mut conn.packets).await {
                    Ok(()) => {
                        conn.settings.clear();
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
                COM_STMT_PREPARE => pin = Some("prepared_statement"),
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
            if self.held.is_none() {
                match attach(ctx).await {
                    Ok((pool, conn)) => {
                        *ctx.flow.target.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(conn.target.addr);
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
                    }
                    Err(why) => {
                        tracing::warn!(listener = %ctx.snap.settings.name, client = %ctx.events.client, error = %why, "no backend connection for a statement");
                        reply(client, 1, &err_payload(1105, b"HY000", &why)).await;
                        if !whole {
                            return Err(End::Refused);
                        }
                        cbuf.drain(..total);
                        continue;
                    }
                }
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
                });
            } else {
                self.maybe_release(ctx);
            }
        }
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
                if let Some(h) = self.held.as_mut() {
                    h.conn.settings.clear();
                }
            }
            if let (Some((key, stmt)), Some(h)) = (f.setting, self.held.as_mut()) {
                upsert(&mut self.settings, &key, &stmt);
                upsert(&mut h.conn.settings, &key, &stmt);
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
