//! The protocol seam: what a protocol front end (PostgreSQL today; MySQL and Redis next)
//! implements, and the registry the core looks front ends up in.
//!
//! The core owns everything that does not depend on the protocol: accepting, the PROXY header,
//! security groups, the flow record opened at admission, target groups and their health state
//! machine, balancing, parking lots, metrics families of its own, the admin API, reloads. A
//! front end gets an admitted connection and does the rest in its own module: TLS (every
//! database protocol upgrades in-band), the login against the vault, its pools and its session
//! relay. The core also asks it to probe targets for health and role, to run its housekeeping
//! once a second, and to report its metrics and admin rows.
//!
//! Adding a protocol is one module that implements [`FrontEnd`] and one line in
//! [`FrontEnds::new`]. A listener whose protocol has no registered front end is refused by the
//! gateway's apply, and its connections (should one slip through) are refused in `conn`, never
//! relayed as raw bytes: its users were promised a TLS handshake and a login.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use sumun_config::{HealthCheck, Protocol, TargetGroup};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::conn::{Admitted, Slot};
use crate::health::{Learned, ProbeFailure};
use crate::listener::{ListenerRt, ListenerSnapshot};
use crate::{Registry, Shared};

/// A boxed future a front end hands the core.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connection the security groups admitted, handed to the front end of its listener.
pub struct Accepted {
    pub stream: TcpStream,
    pub admitted: Admitted,
    pub snap: Arc<ListenerSnapshot>,
    pub listener: Arc<ListenerRt>,
    pub shared: Arc<Shared>,
    /// When the handshake (TLS and login) must be done by.
    pub handshake_deadline: Instant,
    /// The listener's `max_connections` slot, held for as long as the client is connected.
    pub slot: Slot,
}

/// One protocol front end. Implementations keep their own state (pools, statistics, caches)
/// and are shared by every listener of their protocol.
pub trait FrontEnd: Any + Send + Sync + std::fmt::Debug {
    /// The listener protocol it serves.
    fn protocol(&self) -> Protocol;

    /// Serve one admitted connection to its end. The returned future runs on the data-plane
    /// worker the connection was given; it must close the connection's flow exactly once
    /// (`Records::close` through its session, or `Records::discard` when it never logged in).
    fn serve(self: Arc<Self>, conn: Accepted) -> BoxFuture<'static, ()>;

    /// Log in to `addr` with the health check's credential and learn its role: a protocol
    /// health check (`health_check = { protocol = ... }`). `shared` is `None` once the
    /// gateway is gone.
    fn probe<'a>(
        &'a self,
        hc: &'a HealthCheck,
        group: &'a TargetGroup,
        target: &'a str,
        addr: SocketAddr,
        shared: Option<&'a Shared>,
    ) -> BoxFuture<'a, Result<Learned, ProbeFailure>>;

    /// Once a second on the control plane: close idle or expired pooled connections, resize
    /// pools to a reloaded size, forget state of removed listeners.
    fn housekeeping(&self, registry: &Registry);

    /// The front end's metric families, appended to `/metrics`.
    fn render_metrics(&self, shared: &Shared, out: &mut String);

    /// Its rows of `/api/pools` (one per pool) and `/api/clients` (one per logged-in client).
    /// `/api/servers` is the core's: targets and their health belong to no protocol.
    fn pool_rows(&self, shared: &Shared) -> Vec<serde_json::Value>;
    fn client_rows(&self, shared: &Shared) -> Vec<serde_json::Value>;
}

/// The registered front ends, by protocol.
#[derive(Debug)]
pub struct FrontEnds {
    all: Vec<Arc<dyn FrontEnd>>,
}

impl FrontEnds {
    /// Every front end this build has: one line per protocol.
    pub fn new() -> FrontEnds {
        FrontEnds {
            all: vec![
                Arc::new(crate::postgres::PostgresFrontEnd::default()),
                Arc::new(crate::mysql::MysqlFrontEnd::default()),
                Arc::new(crate::redis::RedisFrontEnd::default()),
            ],
        }
    }

    /// The front end serving `protocol`, if there is one.
    pub fn get(&self, protocol: Protocol) -> Option<&Arc<dyn FrontEnd>> {
        self.all.iter().find(|f| f.protocol() == protocol)
    }

    /// A front end by its type, for code that needs its own state (tests, its own module).
    pub fn of<T: FrontEnd>(&self) -> Option<&T> {
        self.all
            .iter()
            .find_map(|f| (f.as_ref() as &dyn Any).downcast_ref::<T>())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn FrontEnd>> {
        self.all.iter()
    }
}

impl Default for FrontEnds {
    fn default() -> Self {
        FrontEnds::new()
    }
}

/// Count `n` bytes (one segment) of a flow, from the client (`inbound`) or to it: for front
/// ends that read and write the sockets themselves rather than through `relay`.
pub(crate) fn count(counters: &crate::relay::FlowCounters, inbound: bool, n: usize) {
    use std::sync::atomic::Ordering;
    let (bytes, packets) = if inbound {
        (&counters.bytes_in, &counters.packets_in)
    } else {
        (&counters.bytes_out, &counters.packets_out)
    };
    bytes.fetch_add(n as u64, Ordering::Relaxed);
    packets.fetch_add(1, Ordering::Relaxed);
}

/// How a client connection ended, for its `session.end` audit event: what every front end
/// knows (`end`), and what a logged-in session adds.
#[derive(Default)]
pub(crate) struct SessionEnd<'a> {
    pub end: &'a str,
    pub user: Option<&'a str>,
    pub database: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub queries: Option<u64>,
    /// When the session began (for `duration_ms`); the flow's start second otherwise.
    pub started: Option<std::time::Instant>,
    pub target: Option<&'a str>,
}

/// Close a client's flow: its flow record and a `session.end` event. Nothing when it was
/// already closed (a refusal wrote its `REJECT` record).
pub(crate) fn end_session(
    shared: &Shared,
    listener: &crate::listener::ListenerRt,
    flow: &crate::records::ActiveFlow,
    e: &SessionEnd<'_>,
) {
    use serde_json::{Map, Value};
    use std::sync::atomic::Ordering;
    if crate::records::Records::is_closed(flow) {
        return;
    }
    shared.records.close(flow);
    shared.protection().session_end(
        &shared.records,
        &listener.name,
        flow.client,
        e.user,
        flow.counters.bytes_out.load(Ordering::Relaxed),
        flow.start,
    );
    shared
        .records
        .audit("session.end", &listener.name, flow.client, || {
            let mut extra = Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    extra.insert(k.into(), v);
                }
            };
            put("user", e.user.map(Value::from));
            put("database", e.database.map(Value::from));
            put("session_id", e.session_id.map(Value::from));
            put("end", Some(Value::from(e.end)));
            put("queries", e.queries.map(Value::from));
            let ms = match e.started {
                Some(t) => t.elapsed().as_millis() as u64,
                None => crate::records::unix_now().saturating_sub(flow.start) * 1000,
            };
            put("duration_ms", Some(Value::from(ms)));
            let c = &flow.counters;
            put(
                "bytes_in",
                Some(Value::from(c.bytes_in.load(Ordering::Relaxed))),
            );
            put(
                "bytes_out",
                Some(Value::from(c.bytes_out.load(Ordering::Relaxed))),
            );
            put("target", e.target.map(Value::from));
            extra
        });
}

/// An `auth.failure` audit event: who tried and why it failed (for the log only; clients are
/// told no more than their protocol's usual refusal).
pub(crate) fn audit_auth_failure(
    shared: &Shared,
    listener: &str,
    client: SocketAddr,
    user: &str,
    reason: &str,
) {
    shared.records.audit("auth.failure", listener, client, || {
        let mut extra = serde_json::Map::new();
        extra.insert("user".into(), user.into());
        extra.insert("reason".into(), reason.into());
        extra
    });
}

/// The audit reason for a token that did not verify.
pub(crate) fn token_reason(e: &sumun_vault::TokenError) -> &'static str {
    match e.reason() {
        "malformed" => "token_malformed",
        "unknown_key" => "token_unknown_key",
        "bad_signature" => "token_bad_signature",
        "expired" => "token_expired",
        "not_yet_valid" => "token_not_yet_valid",
        "wrong_audience" => "token_wrong_audience",
        "lifetime_too_long" => "token_lifetime_too_long",
        _ => "token_invalid",
    }
}
