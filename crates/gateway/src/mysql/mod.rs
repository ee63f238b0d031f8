//! The MySQL/MariaDB front end (`protocol = "mysql"` listeners), session mode.
//!
//! A client connection goes: security groups (in `conn`) → the gateway's greeting (Handshake
//! v10 with the server's version, a gateway-made connection id and a fresh scramble) → TLS when
//! the client asks for it (`SSLRequest`), required by `tls = "required"` → the client's login:
//! a Sumun token through `mysql_clear_password` over TLS (as RDS IAM authentication works
//! with the stock client's `--enable-cleartext-plugin`), or its certificate (`cert`) → a
//! connection to a target, logged in with the vault credential the client never sees
//! (`server`), where the server must prove itself as far as MySQL lets it: no cleartext
//! password ever goes to a server that TLS did not verify → the server's own OK to the client
//! → the relay (`session`): bytes both ways, each `COM_QUERY` written to the audit log with
//! its literals masked in MySQL's syntax.
//!
//! Not yet here (docs/mysql.md): pooling and transaction mode, a gateway-held password
//! (`caching_sha2_password`/`mysql_native_password` against a verifier), `KILL QUERY` routed by
//! the gateway's connection id, `COM_CHANGE_USER`.

mod client;
mod io;
mod pool;
mod server;
mod session;
mod stmt;
mod txn;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sumun_wire::mysql::Capabilities;

use crate::frontend::{Accepted, BoxFuture, FrontEnd};
use crate::health::{Learned, ProbeFailure};
use crate::metrics::family;
use crate::{Registry, Shared};

/// The MySQL front end's state, shared by every `mysql` listener.
#[derive(Debug, Default)]
pub struct MysqlFrontEnd {
    /// What each target group's servers said in their greeting (version, capabilities), for
    /// the greeting the gateway sends before it has a server: learned from the first
    /// connection, then kept up to date by every login and health check.
    servers: Mutex<HashMap<String, ServerHello>>,
    /// Gateway-made connection ids for greetings.
    next_id: AtomicU32,
    /// The logged-in clients, for `/api/clients`.
    clients: Mutex<HashMap<u32, ClientRow>>,
    /// Server connections of transaction-mode listeners.
    pools: pool::Pools,
    pub stats: MysqlStats,
}

/// What a target group's server says about itself in its greeting.
#[derive(Debug, Clone)]
pub(crate) struct ServerHello {
    pub version: Vec<u8>,
    pub capabilities: Capabilities,
    pub charset: u8,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct MysqlStats {
    pub queries: AtomicU64,
    pub logins: AtomicU64,
    /// Server logins refused because the server asked for what it may not have (a cleartext
    /// password without verified TLS).
    pub backend_logins_refused: AtomicU64,
    /// Transaction-mode clients pinned to their server, by reason (`txn::PIN_REASONS`).
    pub pinned: [AtomicU64; 4],
    /// Transaction-mode prepared statements, by event (`stmt::EVENTS`).
    pub prepared: [AtomicU64; 8],
}

/// A logged-in client, as `/api/clients` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClientRow {
    pub listener: String,
    pub client: String,
    pub user: String,
    pub database: String,
    pub pool_mode: &'static str,
    pub session_id: String,
    pub connected_at: u64,
    pub server: Option<String>,
    /// The server's own connection id (what `CONNECTION_ID()` returns).
    pub server_connection_id: u32,
    /// The id the gateway's greeting gave the client.
    pub connection_id: u32,
}

impl MysqlFrontEnd {
    fn connection_id(&self) -> u32 {
        // Kept clear of the small ids servers hand out, so the two are not confused in logs.
        0x4000_0000 | (self.next_id.fetch_add(1, Ordering::Relaxed) & 0x3FFF_FFFF)
    }

    /// A transaction-mode client took a server (its address and connection id) or gave it back.
    pub(crate) fn client_on(&self, connection_id: u32, server: Option<(String, u32)>) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(row) = clients.get_mut(&connection_id) {
            row.server_connection_id = server.as_ref().map_or(0, |s| s.1);
            row.server = server.map(|s| s.0);
        }
    }

    pub(crate) fn server_hello(&self, group: &str) -> Option<ServerHello> {
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)
            .cloned()
    }

    pub(crate) fn learn_server(&self, group: &str, hello: ServerHello) {
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group.to_string(), hello);
    }
}

impl FrontEnd for MysqlFrontEnd {
    fn protocol(&self) -> sumun_config::Protocol {
        sumun_config::Protocol::Mysql
    }

    fn serve(self: Arc<Self>, conn: Accepted) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let login = Box::pin(client::login(&self, conn)).await;
            if let Some(session) = login {
                session::run(&self, session).await;
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
        Box::pin(server::probe(self, hc, group, target, addr, shared))
    }

    fn housekeeping(&self, registry: &Registry) {
        // Greetings learned for groups that no longer exist are forgotten.
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|g, _| registry.groups.iter().any(|rt| rt.name == *g));
        self.pools.housekeeping(registry);
    }

    fn render_metrics(&self, _shared: &Shared, out: &mut String) {
        use std::fmt::Write as _;
        let s = &self.stats;
        family(
            out,
            "sumun_mysql_logins_total",
            "counter",
            "MySQL clients logged in (client and server side).",
        );
        let _ = writeln!(
            out,
            "sumun_mysql_logins_total {}",
            s.logins.load(Ordering::Relaxed)
        );
        family(
            out,
            "sumun_mysql_queries_total",
            "counter",
            "COM_QUERY statements relayed to MySQL servers.",
        );
        let _ = writeln!(
            out,
            "sumun_mysql_queries_total {}",
            s.queries.load(Ordering::Relaxed)
        );
        family(
            out,
            "sumun_mysql_backend_logins_refused_total",
            "counter",
            "MySQL server logins the gateway broke off because the server asked for a cleartext password without verified TLS.",
        );
        let _ = writeln!(
            out,
            "sumun_mysql_backend_logins_refused_total {}",
            s.backend_logins_refused.load(Ordering::Relaxed)
        );
        family(
            out,
            "sumun_mysql_pinned_clients_total",
            "counter",
            "Transaction-mode MySQL clients pinned to their server, by reason.",
        );
        for (reason, n) in txn::PIN_REASONS.iter().zip(&s.pinned) {
            let _ = writeln!(
                out,
                "sumun_mysql_pinned_clients_total{{reason=\"{reason}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        family(
            out,
            "sumun_mysql_prepared_statements_total",
            "counter",
            "Transaction-mode MySQL prepared statements: prepared on a server, answered from a server's statements, prepared again on another server, parameter types supplied, refused, clients kept on their server for a cursor or long data.",
        );
        for (event, n) in stmt::EVENTS.iter().zip(&s.prepared) {
            let _ = writeln!(
                out,
                "sumun_mysql_prepared_statements_total{{event=\"{event}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }

    fn pool_rows(&self, _shared: &Shared) -> Vec<Value> {
        // Transaction-mode pools (in session mode every client has a server of its own).
        self.pools
            .all()
            .iter()
            .map(|p| {
                let open = p.open();
                let idle = p.idle_count();
                serde_json::json!({
                    "protocol": "mysql",
                    "listener": p.key.listener.to_string(),
                    "target": p.key.target.to_string(),
                    "database": "",
                    "user": p.key.credential,
                    "size": p.size(),
                    "open": open,
                    "idle": idle,
                    "active": open.saturating_sub(idle as u32),
                    "waiting": p.stats.waiting.load(Ordering::Relaxed),
                    "checkouts": p.stats.checkouts.load(Ordering::Relaxed),
                    "waits": p.stats.waits.load(Ordering::Relaxed),
                    "timeouts": p.stats.timeouts.load(Ordering::Relaxed),
                    "connects": p.stats.connects.load(Ordering::Relaxed),
                    "connect_errors": p.stats.connect_errors.load(Ordering::Relaxed),
                })
            })
            .collect()
    }

    fn client_rows(&self, _shared: &Shared) -> Vec<Value> {
        let mut rows: Vec<ClientRow> = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        rows.sort_by_key(|r| (r.connected_at, r.connection_id));
        rows.iter()
            .filter_map(|r| serde_json::to_value(r).ok())
            .collect()
    }
}
