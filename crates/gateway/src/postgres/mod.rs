//! The PostgreSQL front end (`protocol = "postgres"` listeners).
//!
//! A client connection goes: security groups (in `conn`) → startup negotiation here (SSLRequest
//! or direct TLS with ALPN `postgresql`, GSSENCRequest declined, CancelRequest routed) →
//! client authentication against the vault (`auth`) → a backend connection from the pool,
//! logged in with the vault credential the client never sees (`server`, `pool`) → the session
//! relay (`session`), which follows message boundaries in both directions so it can hand the
//! backend connection back at transaction ends (transaction pooling), write per-query audit
//! events, and notice session state that pins a client to its server.

mod auth;
mod cancel;
mod console;
pub mod pool;
mod report;
mod server;
mod session;
mod stream;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value};
use sumun_config::{PoolMode, TlsMode};
use sumun_wire::postgres::{self as pg, StartupPacket, Writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::conn::Admitted;
use crate::frontend::{Accepted, BoxFuture, FrontEnd};
use crate::health::{Learned, ProbeFailure};
use crate::listener::{ListenerRt, ListenerSnapshot};
use crate::metrics::RejectReason;
use crate::Shared;

pub use cancel::CancelRegistry;
pub use pool::Pools;
pub use report::{client_rows, pool_rows, render_metrics, ClientRow, PoolRow};
pub use server::{ServerPolicy, TlsTo};
use stream::ClientStream;

/// PostgreSQL state shared by every postgres listener.
#[derive(Debug, Default)]
pub struct PostgresFrontEnd {
    pub pools: Pools,
    pub cancels: Arc<cancel::CancelRegistry>,
    pub stats: PgStats,
    /// Server parameters shown to clients at login, per (listener, database, backend user).
    #[allow(clippy::type_complexity)]
    pub server_params: std::sync::Mutex<
        std::collections::HashMap<(Arc<str>, String, String), Vec<(String, String)>>,
    >,
    /// Login shapes shared by the sessions that have them (user, database, parameters).
    pub(crate) profiles: session::Profiles,
    /// How servers spell the values clients give their reported parameters.
    pub(crate) canonical: Canonical,
}

/// What servers report for a (parameter, value a client asked for): `client_encoding = utf8`
/// is shown as `UTF8`, `DateStyle = iso` as `ISO, MDY`. Learned from servers, bounded.
#[derive(Debug, Default)]
pub(crate) struct Canonical {
    map: std::sync::Mutex<std::collections::HashMap<(String, String), String>>,
}

/// Distinct (parameter, value) pairs remembered at most; beyond, the map starts over.
const CANONICAL_MAX: usize = 4096;

impl Canonical {
    pub(crate) fn get(&self, name: &str, value: &str) -> Option<String> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(name.to_ascii_lowercase(), value.to_string()))
            .cloned()
    }

    pub(crate) fn learn(&self, name: &str, value: &str, reported: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CANONICAL_MAX {
            map.clear();
        }
        map.insert(
            (name.to_ascii_lowercase(), value.to_string()),
            reported.to_string(),
        );
    }
}

impl PostgresFrontEnd {
    /// Server parameters cached for listeners that no longer exist are dropped.
    pub(crate) fn forget_unused_params(&self, registry: &crate::Registry) {
        let mut params = self.server_params.lock().unwrap_or_else(|p| p.into_inner());
        params.retain(|(listener, _, _), _| registry.listeners.iter().any(|l| l.name == *listener));
    }
}

impl FrontEnd for PostgresFrontEnd {
    fn protocol(&self) -> sumun_config::Protocol {
        sumun_config::Protocol::Postgres
    }

    fn serve(self: Arc<Self>, conn: Accepted) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // The login phase is boxed and dropped before the session runs (idle memory).
            let session = Box::pin(login_session(self, conn)).await;
            if let Some(session) = session {
                session.await;
            }
        })
    }

    fn probe<'a>(
        &'a self,
        hc: &'a sumun_config::HealthCheck,
        group: &'a sumun_config::TargetGroup,
        target: &'a str,
        addr: SocketAddr,
        shared: Option<&'a Shared>,
    ) -> BoxFuture<'a, Result<Learned, ProbeFailure>> {
        Box::pin(async move {
            let server = ServerPolicy::for_target(group, target);
            let rows = probe_login(self, hc, addr, shared, &server)
                .await
                .map_err(|e| {
                    tracing::debug!(target_addr = %addr, error = %e, "postgres health check failed");
                    if e.contains("refused") {
                        ProbeFailure::Refused
                    } else {
                        ProbeFailure::Error
                    }
                })?;
            let row = rows.first().ok_or(ProbeFailure::Error)?;
            let in_recovery = row.first().and_then(|v| v.as_deref()) == Some("t");
            let lag_ms = row
                .get(1)
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                .max(0.0) as u64;
            Ok(Learned {
                role: if in_recovery {
                    sumun_config::Role::Replica
                } else {
                    sumun_config::Role::Primary
                },
                lag_ms,
            })
        })
    }

    fn housekeeping(&self, registry: &crate::Registry) {
        // Close pooled server connections idle longer than their pool's idle_timeout (keeping
        // min_idle) or older than max_lifetime, politely.
        for pool in self.pools.all() {
            let Some(l) = registry
                .listeners
                .iter()
                .find(|l| *l.name == *pool.key.listener)
            else {
                // Its listener was removed: close what is idle; what is in use goes as its
                // clients finish, and then the pool itself (below).
                for closed in pool.drain_idle() {
                    tokio::spawn(closed.into_conn().terminate());
                }
                continue;
            };
            let settings = &l.snapshot().settings.pool;
            // A reload's pool size reaches pools that already exist here.
            pool.resize(settings.size);
            for closed in pool.reap(settings) {
                tokio::spawn(closed.into_conn().terminate());
            }
        }
        self.pools.sweep();
        self.forget_unused_params(registry);
    }

    fn render_metrics(&self, _shared: &Shared, out: &mut String) {
        report::render_metrics(self, out);
    }

    fn pool_rows(&self, _shared: &Shared) -> Vec<Value> {
        rows_json(report::pool_rows(self))
    }

    fn client_rows(&self, _shared: &Shared) -> Vec<Value> {
        rows_json(report::client_rows(self))
    }
}

fn rows_json<T: serde::Serialize>(rows: Vec<T>) -> Vec<Value> {
    rows.iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect()
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PgStats {
    pub pinned: [std::sync::atomic::AtomicU64; 9],
    pub queries: std::sync::atomic::AtomicU64,
    pub query_micros: std::sync::atomic::AtomicU64,
    pub query_errors: std::sync::atomic::AtomicU64,
    pub cancels_forwarded: std::sync::atomic::AtomicU64,
    /// Server logins refused for trust reasons (`ServerError::is_untrusted`).
    pub backend_logins_refused: std::sync::atomic::AtomicU64,
}

/// What a client asked for in its StartupMessage.
#[derive(Debug, Clone)]
pub(crate) struct ClientStartup {
    pub user: String,
    pub database: String,
    /// Parameters to apply on whichever server the client is given (`application_name`,
    /// `client_encoding`, `DateStyle`, `-c` settings from `options`...).
    pub params: Vec<(String, String)>,
    /// `tls-server-end-point` channel-binding data when the client is on TLS.
    pub tls_endpoint: Option<crate::tls::EndPoint>,
}

/// What a logged-in client runs: its session, or the admin console.
pub(crate) type Session = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Startup negotiation and authentication, then the client's session as a future of its own.
/// The caller boxes this phase and awaits the session after dropping it, so an idle client
/// holds only its session, not the handshake's TLS and authentication state (idle memory).
async fn login_session(fe: Arc<PostgresFrontEnd>, conn: Accepted) -> Option<Session> {
    let Accepted {
        stream,
        admitted,
        snap,
        listener,
        shared,
        handshake_deadline: deadline,
        slot,
    } = conn;
    let logged_in = Box::pin(login(
        stream, &admitted, &snap, &listener, &shared, &fe, deadline,
    ))
    .await;
    let (client, startup, identity) = match logged_in {
        Ok(done) => done,
        Err(unserved) => {
            end_unserved(&shared, &listener, &admitted, &unserved);
            return None;
        }
    };
    if startup.database == console::DATABASE {
        return Some(Box::pin(async move {
            let _slot = slot;
            console::run(
                client, &startup, &identity, &admitted, &listener, &shared, &fe,
            )
            .await;
        }));
    }
    let client_addr = admitted.client;
    let flow = admitted.flow.clone();
    let (user, database) = (startup.user.clone(), startup.database.clone());
    match session::run(
        client,
        startup,
        identity,
        admitted,
        snap,
        slot,
        shared.clone(),
        fe,
    ) {
        Ok(session) => Some(Box::pin(session)),
        Err((mut client, err)) => {
            tracing::error!(listener = %listener.name, client = %client_addr, error = %err, "login refused");
            fatal(
                &mut client,
                "58000",
                "login failed: the gateway cannot draw a cancel key",
            )
            .await;
            end_flow(
                &shared,
                &listener,
                &flow,
                &Unserved::of("refused", &user, &database),
            );
            None
        }
    }
}

/// How a connection that never got a session ended, for its flow record and `session.end`.
pub(crate) struct Unserved {
    pub end: &'static str,
    pub user: Option<String>,
    pub database: Option<String>,
}

impl Unserved {
    fn bare(end: &'static str) -> Unserved {
        Unserved {
            end,
            user: None,
            database: None,
        }
    }

    pub(crate) fn of(end: &'static str, user: &str, database: &str) -> Unserved {
        Unserved {
            end,
            user: Some(user.to_string()),
            database: Some(database.to_string()),
        }
    }
}

fn end_unserved(shared: &Shared, listener: &ListenerRt, admitted: &Admitted, how: &Unserved) {
    end_flow(shared, listener, &admitted.flow, how);
}

/// Close a flow that had no session: its flow record and a `session.end` event with how it
/// ended. Nothing when it was already closed (a refusal wrote its `REJECT` record).
pub(crate) fn end_flow(
    shared: &Shared,
    listener: &ListenerRt,
    flow: &crate::records::ActiveFlow,
    how: &Unserved,
) {
    if crate::records::Records::is_closed(flow) {
        return;
    }
    shared.records.close(flow);
    shared
        .records
        .audit("session.end", &listener.name, flow.client, || {
            let mut extra = Map::new();
            if let Some(u) = &how.user {
                extra.insert("user".into(), Value::from(u.as_str()));
            }
            if let Some(d) = &how.database {
                extra.insert("database".into(), Value::from(d.as_str()));
            }
            extra.insert("end".into(), Value::from(how.end));
            extra.insert(
                "duration_ms".into(),
                Value::from(crate::records::unix_now().saturating_sub(flow.start) * 1000),
            );
            let c = &flow.counters;
            extra.insert(
                "bytes_in".into(),
                Value::from(c.bytes_in.load(Ordering::Relaxed)),
            );
            extra.insert(
                "bytes_out".into(),
                Value::from(c.bytes_out.load(Ordering::Relaxed)),
            );
            extra
        });
}

/// Startup negotiation and authentication, within the handshake deadline.
async fn login(
    stream: TcpStream,
    admitted: &Admitted,
    snap: &Arc<ListenerSnapshot>,
    listener: &Arc<ListenerRt>,
    shared: &Arc<Shared>,
    fe: &PostgresFrontEnd,
    deadline: Instant,
) -> Result<(ClientStream, ClientStartup, auth::Identity), Unserved> {
    let negotiated = crate::workers::timeout_at(
        deadline,
        negotiate(stream, admitted, snap, listener, shared, fe),
    )
    .await;
    let (mut client, startup) = match negotiated {
        Err(_) => {
            tracing::info!(listener = %listener.name, client = %admitted.client, "no startup packet before the handshake timeout");
            reject(listener, shared, admitted, RejectReason::HandshakeTimeout);
            return Err(Unserved::bare("handshake_timeout"));
        }
        Ok(Negotiated::Done(end)) => return Err(Unserved::bare(end)),
        Ok(Negotiated::Startup(client, startup)) => (client, startup),
    };
    if !client.is_tls() && snap.settings.tls == TlsMode::Required {
        tracing::info!(listener = %listener.name, client = %admitted.client, "plain-text client on a listener that requires TLS");
        audit_auth_failure(shared, listener, admitted, &startup.user, "tls_required");
        listener
            .metrics
            .auth_failures
            .fetch_add(1, Ordering::Relaxed);
        fatal(
            &mut client,
            "28000",
            "this gateway requires TLS: connect with sslmode=require",
        )
        .await;
        return Err(Unserved::of("refused", &startup.user, &startup.database));
    }
    let authed = crate::workers::timeout_at(
        deadline,
        Box::pin(auth::authenticate(
            &mut client,
            &startup,
            snap,
            listener,
            shared,
            admitted,
        )),
    )
    .await;
    let identity = match authed {
        Err(_) => {
            tracing::info!(listener = %listener.name, client = %admitted.client, user = %startup.user, "authentication did not finish before the handshake timeout");
            audit_auth_failure(shared, listener, admitted, &startup.user, "timeout");
            listener
                .metrics
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            return Err(Unserved::of(
                "handshake_timeout",
                &startup.user,
                &startup.database,
            ));
        }
        Ok(None) => {
            return Err(Unserved::of(
                "auth_failed",
                &startup.user,
                &startup.database,
            ))
        }
        Ok(Some(identity)) => identity,
    };
    Ok((client, startup, identity))
}

enum Negotiated {
    /// Handled (cancel request, refusal, closed), and how the connection ended.
    Done(&'static str),
    Startup(ClientStream, ClientStartup),
}

/// SSLRequest / GSSENCRequest / direct TLS / CancelRequest, up to the StartupMessage.
async fn negotiate(
    stream: TcpStream,
    admitted: &Admitted,
    snap: &ListenerSnapshot,
    listener: &ListenerRt,
    shared: &Shared,
    fe: &PostgresFrontEnd,
) -> Negotiated {
    let tls = match (snap.settings.tls, &snap.tls) {
        (TlsMode::Off, _) | (_, None) => None,
        (_, Some(ctx)) => Some(ctx.clone()),
    };
    // Direct TLS (PostgreSQL 17 `sslnegotiation=direct`): the first byte is a TLS handshake.
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => {}
        _ => return Negotiated::Done("closed"),
    }
    let mut client = if first[0] == 0x16 {
        let Some(ctx) = &tls else {
            tracing::info!(listener = %listener.name, client = %admitted.client, "direct TLS on a listener without TLS; closing");
            reject(listener, shared, admitted, RejectReason::TlsHandshake);
            return Negotiated::Done("refused");
        };
        match accept_tls(stream, ctx, admitted, listener, shared, true).await {
            Some(s) => s,
            None => return Negotiated::Done("refused"),
        }
    } else {
        ClientStream::Plain(stream)
    };
    loop {
        let packet = match read_startup(&mut client).await {
            Ok(p) => p,
            Err(err) => {
                tracing::info!(listener = %listener.name, client = %admitted.client, error = %err, "bad startup packet; closing");
                // A length out of range is closed without a word, as PostgreSQL does (it is
                // not a startup packet at all: often a client's Terminate sent before its
                // startup); anything else malformed gets the reason.
                match &err {
                    StartupReadError::Protocol(pg::PgError::BadStartupLength(_)) => {}
                    StartupReadError::Protocol(e) => {
                        fatal(&mut client, "08P01", &e.to_string()).await
                    }
                    StartupReadError::Io(_) => {}
                }
                reject(listener, shared, admitted, RejectReason::ProtocolError);
                return Negotiated::Done("refused");
            }
        };
        match packet {
            StartupPacket::SslRequest => {
                if client.is_tls() {
                    fatal(&mut client, "08P01", "SSLRequest inside TLS").await;
                    return Negotiated::Done("refused");
                }
                let ClientStream::Plain(mut tcp) = client else {
                    return Negotiated::Done("client_error");
                };
                let Some(ctx) = &tls else {
                    if tcp.write_all(b"N").await.is_err() {
                        return Negotiated::Done("client_error");
                    }
                    client = ClientStream::Plain(tcp);
                    continue;
                };
                if tcp.write_all(b"S").await.is_err() {
                    return Negotiated::Done("client_error");
                }
                client = match accept_tls(tcp, ctx, admitted, listener, shared, false).await {
                    Some(s) => s,
                    None => return Negotiated::Done("refused"),
                };
            }
            StartupPacket::GssEncRequest => {
                if client.write_all(b"N").await.is_err() {
                    return Negotiated::Done("client_error");
                }
            }
            StartupPacket::Cancel {
                process_id,
                secret_key,
            } => {
                cancel::forward(fe, process_id, secret_key, admitted, listener).await;
                return Negotiated::Done("cancel_request");
            }
            StartupPacket::Startup(s) => {
                let Some(user) = s.param("user").filter(|u| !u.is_empty()) else {
                    fatal(
                        &mut client,
                        "28000",
                        "no PostgreSQL user name specified in startup packet",
                    )
                    .await;
                    reject(listener, shared, admitted, RejectReason::ProtocolError);
                    return Negotiated::Done("refused");
                };
                if s.param("replication")
                    .is_some_and(|r| r != "false" && r != "0" && r != "off")
                {
                    fatal(
                        &mut client,
                        "0A000",
                        "replication connections are not supported through the gateway",
                    )
                    .await;
                    return Negotiated::Done("refused");
                }
                let user = user.to_string();
                let database = s
                    .param("database")
                    .filter(|d| !d.is_empty())
                    .unwrap_or(&user)
                    .to_string();
                let params = client_params(&s.params);
                let tls_endpoint = match (&tls, client.is_tls()) {
                    (Some(ctx), true) => Some(ctx.endpoint_hash()),
                    _ => None,
                };
                return Negotiated::Startup(
                    client,
                    ClientStartup {
                        user,
                        database,
                        params,
                        tls_endpoint,
                    },
                );
            }
        }
    }
}

/// Startup parameters to carry to the server: everything except the ones the gateway owns,
/// with `-c name=value` / `--name=value` settings from `options` unpacked.
fn client_params(params: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        out.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        out.push((k.to_string(), v.to_string()));
    };
    for (k, v) in params {
        match k.as_str() {
            "user" | "database" | "replication" => {}
            "options" => {
                let mut words = v.split_ascii_whitespace();
                while let Some(w) = words.next() {
                    let setting = if w == "-c" {
                        words.next()
                    } else {
                        w.strip_prefix("-c").or_else(|| w.strip_prefix("--"))
                    };
                    if let Some((name, value)) = setting.and_then(|s| s.split_once('=')) {
                        set(&name.replace('-', "_"), value);
                    }
                }
            }
            _ => set(k, v),
        }
    }
    // A client that names no application has none, as directly: not the gateway's own name
    // (`sumun`) that its server connections log in with.
    if !out
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("application_name"))
    {
        out.push(("application_name".to_string(), String::new()));
    }
    out
}

async fn accept_tls(
    tcp: TcpStream,
    ctx: &crate::tls::TlsContext,
    admitted: &Admitted,
    listener: &ListenerRt,
    shared: &Shared,
    direct: bool,
) -> Option<ClientStream> {
    let acceptor = tokio_rustls::TlsAcceptor::from(ctx.config_with_alpn(b"postgresql"));
    match acceptor.accept(stream::ClientIo::Live(tcp)).await {
        Ok(s) => {
            let conn = s.get_ref().1;
            if direct && conn.alpn_protocol() != Some(b"postgresql") {
                // PostgreSQL requires ALPN for direct TLS so a TLS connection meant for another
                // protocol cannot be replayed here.
                tracing::info!(listener = %listener.name, client = %admitted.client, "direct TLS without ALPN 'postgresql'; closing");
                reject(listener, shared, admitted, RejectReason::TlsHandshake);
                return None;
            }
            let (version, group) = crate::tls::handshake_labels(conn);
            listener.metrics.tls_handshake(version, group);
            Some(ClientStream::Tls(Box::new(s)))
        }
        Err(err) => {
            tracing::info!(listener = %listener.name, client = %admitted.client, error = %err, "TLS handshake failed");
            reject(listener, shared, admitted, RejectReason::TlsHandshake);
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum StartupReadError {
    #[error(transparent)]
    Protocol(#[from] pg::PgError),
    #[error("connection closed during startup: {0}")]
    Io(#[from] std::io::Error),
}

/// Read exactly one startup packet (never a byte more: TLS may follow an SSLRequest).
async fn read_startup(client: &mut ClientStream) -> Result<StartupPacket, StartupReadError> {
    let mut len = [0u8; 4];
    client.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len);
    if !(8..=pg::MAX_STARTUP_LEN as u32).contains(&n) {
        return Err(pg::PgError::BadStartupLength(n).into());
    }
    let mut buf = vec![0u8; n as usize];
    buf[..4].copy_from_slice(&len);
    client.read_exact(&mut buf[4..]).await?;
    match pg::decode_startup(&buf)? {
        Some((packet, _)) => Ok(packet),
        None => Err(pg::PgError::MalformedStartup("incomplete").into()),
    }
}

/// Send a FATAL error and close.
pub(crate) async fn fatal(client: &mut ClientStream, code: &str, message: &str) {
    let mut w = Writer::new();
    w.error("FATAL", code, message);
    let _ = crate::workers::timeout(std::time::Duration::from_secs(2), async {
        let _ = client.send(&w.buf).await;
        let _ = client.shutdown().await;
    })
    .await;
}

use crate::conn::reject_admitted as reject;

pub(crate) fn audit_auth_failure(
    shared: &Shared,
    listener: &ListenerRt,
    admitted: &Admitted,
    user: &str,
    reason: &str,
) {
    shared
        .records
        .audit("auth.failure", &listener.name, admitted.client, || {
            let mut extra = Map::new();
            extra.insert("user".into(), Value::from(user));
            extra.insert("reason".into(), Value::from(reason));
            extra
        });
}

/// The pool mode that applies to `user`.
pub(crate) fn pool_mode(snap: &ListenerSnapshot, user: Option<&sumun_config::User>) -> PoolMode {
    user.and_then(|u| u.pool_mode)
        .unwrap_or(snap.settings.pool.mode)
}

/// Log in to `addr` with the health check's credential and run the role query.
async fn probe_login(
    fe: &PostgresFrontEnd,
    hc: &sumun_config::HealthCheck,
    addr: SocketAddr,
    shared: Option<&Shared>,
    server: &server::ServerPolicy,
) -> Result<Vec<Vec<Option<String>>>, String> {
    let shared = shared.ok_or("gateway stopped")?;
    let name = hc
        .credential
        .as_deref()
        .ok_or("no health_check credential")?;
    let vault = shared.vault.load_full().ok_or("no vault configured")?;
    let cred = vault.backend_credential(name).map_err(|e| e.to_string())?;
    let user = cred
        .username
        .clone()
        .ok_or_else(|| format!("vault secret '{name}' has no username"))?;
    let mut last = String::from("no password");
    let attempts = cred.passwords.len().max(1);
    for i in 0..attempts {
        let login = server::Login {
            user: &user,
            database: &hc.database,
            password: cred.passwords.get(i),
            policy: server.auth,
        };
        match server::ServerConn::connect(addr, &login, hc.timeout, None, server.tls.as_ref()).await
        {
            Ok(mut conn) => {
                let rows = conn
                    .simple(
                        "SELECT pg_is_in_recovery(), CASE WHEN NOT pg_is_in_recovery() \
                         OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
                         ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000, 0) END",
                    )
                    .await
                    .map_err(|e| e.to_string());
                conn.terminate().await;
                return rows;
            }
            Err(e) => {
                if e.is_untrusted() {
                    tracing::warn!(target_addr = %addr, error = %e, "health check: the server is not trusted");
                    fe.stats
                        .backend_logins_refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                last = e.to_string()
            }
        }
    }
    Err(last)
}

/// A logged-in client: who it is, the cancel key it was given, and where its queries run
/// now. Read by cancel requests, `SHOW CLIENTS` and `/api/clients`; written by its session.
#[derive(Debug)]
pub struct ClientInfo {
    /// Listener, user, database and pool mode (shared with the session).
    pub(crate) profile: Arc<session::Profile>,
    /// Its flow: the client's address and when it connected.
    pub flow: Arc<crate::records::ActiveFlow>,
    /// The gateway's own BackendKeyData for it (the cancel registry's key).
    pub process_id: u32,
    pub secret_key: u32,
    /// Identifies the session in audit events: 16 hex digits (the process id, then random).
    session_id: [u8; 16],
    now: std::sync::Mutex<ClientNow>,
    /// Whether `now.server` is where the client's queries run now. A transaction-mode client
    /// is mostly given the connection it had before, so between transactions only this flag
    /// changes, not the server under the lock.
    on_server: std::sync::atomic::AtomicBool,
    /// The `ServerConn::id` of `now.server` (0: none yet). Written by the session alone.
    server_id: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct ClientNow {
    /// The server its queries run on: address, that server's process id and secret key.
    server: Option<(SocketAddr, u32, u32)>,
    pinned: Option<&'static str>,
}

impl ClientInfo {
    pub(crate) fn new(
        profile: Arc<session::Profile>,
        flow: Arc<crate::records::ActiveFlow>,
        process_id: u32,
        secret_key: u32,
    ) -> ClientInfo {
        let mut session_id = [0u8; 16];
        let text = format!("{process_id:08x}{:08x}", fastrand::u32(..));
        session_id.copy_from_slice(&text.as_bytes()[..16]);
        ClientInfo {
            profile,
            flow,
            process_id,
            secret_key,
            session_id,
            now: std::sync::Mutex::new(ClientNow::default()),
            on_server: std::sync::atomic::AtomicBool::new(false),
            server_id: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn session_id(&self) -> &str {
        std::str::from_utf8(&self.session_id).unwrap_or("")
    }

    fn now(&self) -> std::sync::MutexGuard<'_, ClientNow> {
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where a cancel request for this client goes now.
    pub fn server(&self) -> Option<(SocketAddr, u32, u32)> {
        let now = self.now();
        // Read under the lock: the server changes only under it, so the pair is one that was.
        now.server
            .filter(|_| self.on_server.load(std::sync::atomic::Ordering::Acquire))
    }

    /// The client's queries run on connection `id` now, at `server()` (address, process id,
    /// secret key). The same connection as last time takes no lock.
    pub(crate) fn attach(&self, id: u64, server: impl FnOnce() -> (SocketAddr, u32, u32)) {
        use std::sync::atomic::Ordering;
        if self.server_id.load(Ordering::Relaxed) == id {
            self.on_server.store(true, Ordering::Release);
            return;
        }
        let mut now = self.now();
        now.server = Some(server());
        self.server_id.store(id, Ordering::Relaxed);
        self.on_server.store(true, Ordering::Release);
    }

    /// The client has no server now (a cancel request finds nothing to cancel).
    pub(crate) fn detach(&self) {
        self.on_server
            .store(false, std::sync::atomic::Ordering::Release);
    }

    pub fn pinned(&self) -> Option<&'static str> {
        self.now().pinned
    }

    pub(crate) fn set_pinned(&self, why: Option<&'static str>) {
        self.now().pinned = why;
    }
}
