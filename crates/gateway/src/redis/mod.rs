//! The Redis front end (`protocol = "redis"` listeners), first part: one server connection per
//! client (no multiplexing yet).
//!
//! A client connection goes: security groups (in `conn`) → TLS (Redis speaks TLS from the first
//! byte; `tls = "required"` answers a plain-text client with an error it can read) → the login:
//! before it, only `AUTH`, `HELLO ... AUTH` and `QUIT` are served (`-NOAUTH` otherwise), and a
//! Sumun token (over TLS only) or nothing logs in (`-WRONGPASS`, as Redis words it) → a server
//! connection logged in with the vault credential → the session: commands split as they come,
//! each checked against the user's Redis ACL rules (`redis_acl`, Redis's own syntax; refused
//! ones answered `-NOPERM` in their place in the reply order), allowed ones forwarded in
//! batches (a pipeline stays a pipeline), replies followed frame by frame so the gateway's own
//! answers are slotted in order.

mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sumun_wire::resp::table::CommandTable;

use crate::frontend::{Accepted, BoxFuture, FrontEnd};
use crate::health::{Learned, ProbeFailure};
use crate::metrics::family;
use crate::{Registry, Shared};

/// The Redis front end's state, shared by every `redis` listener.
#[derive(Default)]
pub struct RedisFrontEnd {
    /// The command table of each target group's servers (from their `COMMAND` reply), for
    /// ACL checks: learned at the first login, so it matches the servers' version.
    tables: Mutex<HashMap<String, Arc<CommandTable>>>,
    clients: Mutex<HashMap<u64, ClientRow>>,
    next_id: AtomicU64,
    pub stats: RedisStats,
}

impl std::fmt::Debug for RedisFrontEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFrontEnd").finish_non_exhaustive()
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct RedisStats {
    pub logins: AtomicU64,
    pub commands: AtomicU64,
    pub denied: AtomicU64,
}

/// A logged-in client, as `/api/clients` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClientRow {
    pub protocol: &'static str,
    pub listener: String,
    pub client: String,
    pub user: String,
    pub session_id: String,
    pub connected_at: u64,
    pub server: String,
}

impl RedisFrontEnd {
    fn table(&self, group: &str) -> Option<Arc<CommandTable>> {
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)
            .cloned()
    }

    fn learn_table(&self, group: &str, table: Arc<CommandTable>) {
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group.to_string(), table);
    }
}

impl FrontEnd for RedisFrontEnd {
    fn protocol(&self) -> sumun_config::Protocol {
        sumun_config::Protocol::Redis
    }

    fn serve(self: Arc<Self>, conn: Accepted) -> BoxFuture<'static, ()> {
        Box::pin(async move { session::serve(self, conn).await })
    }

    fn probe<'a>(
        &'a self,
        hc: &'a sumun_config::HealthCheck,
        group: &'a sumun_config::TargetGroup,
        target: &'a str,
        addr: SocketAddr,
        shared: Option<&'a Shared>,
    ) -> BoxFuture<'a, Result<Learned, ProbeFailure>> {
        Box::pin(session::probe(hc, group, target, addr, shared))
    }

    fn housekeeping(&self, registry: &Registry) {
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|g, _| registry.groups.iter().any(|rt| rt.name == *g));
    }

    fn render_metrics(&self, _shared: &Shared, out: &mut String) {
        use std::fmt::Write as _;
        let s = &self.stats;
        for (name, help, v) in [
            (
                "sumun_redis_logins_total",
                "Redis clients logged in.",
                &s.logins,
            ),
            (
                "sumun_redis_commands_total",
                "Redis commands forwarded to servers.",
                &s.commands,
            ),
            (
                "sumun_redis_commands_denied_total",
                "Redis commands refused by the user's ACL rules (-NOPERM).",
                &s.denied,
            ),
        ] {
            family(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
    }

    fn pool_rows(&self, _shared: &Shared) -> Vec<Value> {
        Vec::new()
    }

    fn client_rows(&self, _shared: &Shared) -> Vec<Value> {
        let mut rows: Vec<ClientRow> = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        rows.sort_by_key(|r| (r.connected_at, r.session_id.clone()));
        rows.iter()
            .filter_map(|r| serde_json::to_value(r).ok())
            .collect()
    }
}
