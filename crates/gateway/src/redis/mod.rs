//! The Redis front end (`protocol = "redis"` listeners).
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
//!
//! Server connections (`pool.mode`): in transaction mode (the default) clients are
//! multiplexed over a few shared server connections per (target, backend user, db, protocol)
//! (`pool`), and a client that needs connection state gets a connection of its own
//! (`classify` decides which commands); in session mode every client has its own from login.

mod classify;
mod pool;
mod relay;
mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sumun_wire::resp::table::CommandTable;

use crate::frontend::{Accepted, BoxFuture, FrontEnd};
use crate::health::{Learned, ProbeFailure};
use crate::listener::ListenerSnapshot;
use crate::metrics::{esc, family};
use crate::targets::Want;
use crate::{Registry, Shared};

/// The Redis front end's state, shared by every `redis` listener.
#[derive(Default)]
pub struct RedisFrontEnd {
    /// The command table of each target group's servers (from their `COMMAND` reply), for
    /// ACL checks: learned at the first login, so it matches the servers' version.
    tables: Mutex<HashMap<String, Arc<CommandTable>>>,
    clients: Mutex<HashMap<u64, ClientRow>>,
    next_id: AtomicU64,
    pools: pool::MuxPools,
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
    /// `transaction` (multiplexed unless dedicated) or `session`.
    pub pool_mode: &'static str,
    /// Why the client holds a server connection of its own, if it does.
    pub dedicated: Option<&'static str>,
}

impl RedisFrontEnd {
    fn table(&self, group: &str) -> Option<Arc<CommandTable>> {
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)
            .cloned()
    }

    /// The pool a client of `account` on this listener uses for `db` and `proto`, on the
    /// group's current writable target, and how to open its connections.
    fn resolve_pool(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        snap: &ListenerSnapshot,
        account: &sumun_config::User,
        db: i64,
        proto: u8,
    ) -> Result<(Arc<pool::MuxPool>, pool::Opener), String> {
        self.resolve_pool_except(shared, snap, account, db, proto, &[])
    }

    /// A shared connection for a multiplexed client: of the pool on the group's writable
    /// target, trying another target (up to the group's `connect_retries`) when one fails.
    async fn checkout(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        snap: &ListenerSnapshot,
        account: &sumun_config::User,
        db: i64,
        proto: u8,
    ) -> Result<(Arc<pool::MuxPool>, pool::Opener, Arc<pool::SharedConn>), String> {
        let retries = snap.group.settings().connect_retries;
        let mut tried = Vec::new();
        let mut last = String::from("no healthy backend server is available");
        for _ in 0..=retries {
            let (pool, opener) =
                match self.resolve_pool_except(shared, snap, account, db, proto, &tried) {
                    Ok(p) => p,
                    Err(e) if tried.is_empty() => return Err(e),
                    Err(_) => break,
                };
            match pool.get(&opener, snap.settings.pool.checkout_timeout).await {
                Ok(conn) => return Ok((pool, opener, conn)),
                Err(e) => {
                    tried.push(pool.target.addr);
                    last = e;
                }
            }
        }
        Err(last)
    }

    fn resolve_pool_except(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        snap: &ListenerSnapshot,
        account: &sumun_config::User,
        db: i64,
        proto: u8,
        tried: &[std::net::SocketAddr],
    ) -> Result<(Arc<pool::MuxPool>, pool::Opener), String> {
        let target = snap
            .group
            .pick_for(tried, Want::Writer)
            .ok_or("no healthy backend server is available")?;
        let credential = account
            .backend_credential
            .clone()
            .ok_or_else(|| format!("user '{}' has no backend_credential", account.name))?;
        let mode = account.pool_mode.unwrap_or(snap.settings.pool.mode);
        let key = pool::PoolKey {
            listener: Arc::from(snap.settings.name.as_str()),
            target: target.address.clone(),
            credential: credential.clone(),
            db,
            proto,
        };
        let pool = self.pools.pool(
            key,
            &target,
            snap.settings.pool.size,
            mode == sumun_config::PoolMode::Transaction,
        );
        let opener = session::opener(
            self.clone(),
            shared.clone(),
            snap.group.settings(),
            target,
            credential,
            db,
            proto,
        );
        Ok((pool, opener))
    }

    /// Record in `/api/clients` that a client holds a dedicated server connection (or no
    /// longer does).
    fn set_dedicated(&self, id: u64, dedicated: Option<(&'static str, String)>) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(row) = clients.get_mut(&id) {
            match dedicated {
                Some((reason, server)) => {
                    row.dedicated = Some(reason);
                    row.server = server;
                }
                None => row.dedicated = None,
            }
        }
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
        // Pools of listeners that are gone (or no longer redis) close; the others follow a
        // reloaded size and close idle connections.
        let settings: HashMap<&str, sumun_config::PoolSettings> = registry
            .listeners
            .iter()
            .map(|l| (&*l.name, l.snapshot()))
            .filter(|(_, s)| s.settings.protocol == sumun_config::Protocol::Redis)
            .map(|(n, s)| (n, s.settings.pool.clone()))
            .collect();
        self.pools.retain(|k| settings.contains_key(&*k.listener));
        for p in self.pools.all() {
            if let Some(s) = settings.get(&*p.key.listener) {
                p.size.store(s.size, Ordering::Relaxed);
                p.housekeeping(s.idle_timeout, s.min_idle);
            }
        }
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
        let pools = self.pools.all();
        family(
            out,
            "sumun_redis_server_connections",
            "gauge",
            "Shared (multiplexed) Redis server connections open, per pool.",
        );
        for p in &pools {
            let _ = writeln!(
                out,
                "sumun_redis_server_connections{{{}}} {}",
                pool_labels(&p.key),
                p.open_count()
            );
        }
        family(
            out,
            "sumun_redis_dedicated_clients",
            "gauge",
            "Redis clients holding a server connection of their own, by reason.",
        );
        family(
            out,
            "sumun_redis_dedicated_total",
            "counter",
            "Redis clients moved to a server connection of their own, by reason.",
        );
        for (i, reason) in pool::DEDICATED_REASONS.iter().enumerate() {
            let now: u64 = pools
                .iter()
                .map(|p| p.stats.dedicated[i].load(Ordering::Relaxed))
                .sum();
            let total: u64 = pools
                .iter()
                .map(|p| p.stats.dedicated_total[i].load(Ordering::Relaxed))
                .sum();
            let _ = writeln!(
                out,
                "sumun_redis_dedicated_clients{{reason=\"{reason}\"}} {now}"
            );
            let _ = writeln!(
                out,
                "sumun_redis_dedicated_total{{reason=\"{reason}\"}} {total}"
            );
        }
    }

    fn pool_rows(&self, _shared: &Shared) -> Vec<Value> {
        self.pools
            .all()
            .iter()
            .map(|p| {
                let st = &p.stats;
                let by_reason = |a: &[AtomicU64]| {
                    pool::DEDICATED_REASONS
                        .iter()
                        .zip(a)
                        .filter(|(_, n)| n.load(Ordering::Relaxed) > 0)
                        .map(|(r, n)| ((*r).to_string(), Value::from(n.load(Ordering::Relaxed))))
                        .collect::<serde_json::Map<String, Value>>()
                };
                let dedicated: u64 = st.dedicated.iter().map(|n| n.load(Ordering::Relaxed)).sum();
                serde_json::json!({
                    "protocol": "redis",
                    "listener": p.key.listener.to_string(),
                    "target": p.key.target,
                    "database": p.key.db.to_string(),
                    "user": p.key.credential,
                    "resp": p.key.proto,
                    "mode": if p.multiplexed.load(Ordering::Relaxed) { "transaction" } else { "session" },
                    "size": p.size.load(Ordering::Relaxed),
                    "open": p.open_count(),
                    "in_flight": p.inflight(),
                    "dedicated": dedicated,
                    "dedicated_by_reason": by_reason(&st.dedicated),
                    "dedicated_total_by_reason": by_reason(&st.dedicated_total),
                    "batches": st.batches.load(Ordering::Relaxed),
                    "commands": st.commands.load(Ordering::Relaxed),
                    "connects": st.connects.load(Ordering::Relaxed),
                    "connect_errors": st.connect_errors.load(Ordering::Relaxed),
                    "broken": st.broken.load(Ordering::Relaxed),
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
        rows.sort_by_key(|r| (r.connected_at, r.session_id.clone()));
        rows.iter()
            .filter_map(|r| serde_json::to_value(r).ok())
            .collect()
    }
}

fn pool_labels(k: &pool::PoolKey) -> String {
    format!(
        "listener=\"{}\",target=\"{}\",user=\"{}\",db=\"{}\",resp=\"{}\"",
        esc(&k.listener),
        esc(&k.target),
        esc(&k.credential),
        k.db,
        k.proto
    )
}
