//! The admin listener: `/metrics` (Prometheus), `/healthz`, and JSON under `/api/` for
//! `sumun status` and, later, the web console. Read-only but for one thing: lifting a ban
//! (`DELETE /api/bans/{addr}`).
//!
//! The API shows users, client addresses and queries, so it is guarded: with `[admin]
//! token_file` every path but `/healthz` (and `/metrics`, unless `metrics_auth`) needs
//! `Authorization: Bearer <token>`; without one it serves only on a loopback address (validation
//! refuses any other, and so does [`AdminAuth::load`] should a config get past it). Only a
//! SHA-256 digest of the token is kept, and digests are compared in constant time.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use aws_lc_rs::{constant_time, digest};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sumun_config::{AdminSettings, TokenFileError};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::{esc, family};
use crate::targets::{Health, TargetStatus};
use crate::{Phase, Shared};

/// Why the admin API cannot serve a config.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("[admin] token_file '{}' {source}", .path.display())]
    TokenFile {
        path: PathBuf,
        source: TokenFileError,
    },
    #[error("[admin] listen {0} is not a loopback address and there is no token_file; the admin API is not served unauthenticated beyond loopback")]
    Unprotected(SocketAddr),
}

/// Who may read the admin API: replaced whole by every apply, so a reload that changes the
/// token file takes effect for the next request.
pub struct AdminAuth {
    /// SHA-256 of the token; `None` when there is no token file (loopback only).
    token_digest: Option<digest::Digest>,
    /// `/metrics` needs the token too.
    metrics_auth: bool,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.token_digest.as_ref().map(|_| "<redacted>"))
            .field("metrics_auth", &self.metrics_auth)
            .finish()
    }
}

impl AdminAuth {
    /// Read the token file (with the same checks as `validate`) and refuse an unguarded
    /// address beyond loopback.
    pub fn load(settings: &AdminSettings) -> Result<AdminAuth, AdminError> {
        let token_digest = match &settings.token_file {
            None if !settings.listen.ip().is_loopback() => {
                return Err(AdminError::Unprotected(settings.listen));
            }
            None => None,
            Some(path) => {
                let token = sumun_config::read_admin_token(path).map_err(|source| {
                    AdminError::TokenFile {
                        path: path.clone(),
                        source,
                    }
                })?;
                Some(digest::digest(&digest::SHA256, token.expose().as_bytes()))
            }
        };
        Ok(AdminAuth {
            token_digest,
            metrics_auth: settings.metrics_auth,
        })
    }

    fn needs_token(&self, path: &str) -> bool {
        self.token_digest.is_some()
            && match path {
                "/healthz" => false,
                "/metrics" => self.metrics_auth,
                _ => true,
            }
    }

    /// Whether `headers` carry `Authorization: Bearer <the token>`.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token_digest else {
            return true;
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(presented) = presented else {
            return false;
        };
        // Digests have a fixed length, so the comparison takes the same time whatever the
        // presented token's length or content.
        let presented = digest::digest(&digest::SHA256, presented.as_bytes());
        constant_time::verify_slices_are_equal(presented.as_ref(), expected.as_ref()).is_ok()
    }
}

pub(crate) struct AdminRt {
    pub configured: SocketAddr,
    pub local_addr: SocketAddr,
    auth: Arc<ArcSwap<AdminAuth>>,
    stop: watch::Sender<bool>,
}

impl AdminRt {
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Take the token settings of a new config without rebinding.
    pub fn set_auth(&self, auth: AdminAuth) {
        self.auth.store(Arc::new(auth));
    }
}

pub(crate) fn start(
    socket: TcpListener,
    configured: SocketAddr,
    auth: AdminAuth,
    shared: Arc<Shared>,
) -> std::io::Result<AdminRt> {
    let local_addr = socket.local_addr()?;
    let (stop, mut stop_rx) = watch::channel(false);
    let auth = Arc::new(ArcSwap::from_pointee(auth));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/listeners", get(listeners))
        .route("/api/targets", get(targets))
        .route("/api/pools", get(pools))
        .route("/api/clients", get(clients))
        .route("/api/servers", get(servers))
        .route("/api/findings", get(findings))
        .route("/api/bans", get(bans))
        .route("/api/bans/{addr}", axum::routing::delete(unban))
        // `layer`, not `route_layer`: unknown paths need the token too, so the API's shape is
        // not probed without it.
        .layer(middleware::from_fn_with_state(auth.clone(), require_token))
        .with_state(shared);
    tokio::spawn(async move {
        tracing::info!(addr = %local_addr, "admin listening");
        let shutdown = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        if let Err(err) = axum::serve(socket, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %err, "admin listener failed");
        }
    });
    Ok(AdminRt {
        configured,
        local_addr,
        auth,
        stop,
    })
}

async fn require_token(
    State(auth): State<Arc<ArcSwap<AdminAuth>>>,
    request: Request,
    next: Next,
) -> Response {
    let auth = auth.load();
    if !auth.needs_token(request.uri().path()) || auth.authorized(request.headers()) {
        return next.run(request).await;
    }
    tracing::info!(path = %request.uri().path(), "admin API request without a valid bearer token; 401");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"sumun\"")],
        "unauthorized: send Authorization: Bearer <the token in [admin] token_file>\n",
    )
        .into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&shared),
    )
        .into_response()
}

/// `/metrics` body: the counters plus families computed from live target state.
pub fn render_metrics(shared: &Shared) -> String {
    let registry = shared.registry.load_full();
    shared.metrics.render(&|out: &mut String| {
        shared.protection().render_metrics(out);
        shared.alarms.render_metrics(out);
        family(
            out,
            "sumun_parked_clients",
            "gauge",
            "Idle clients parked outside their tasks (see [gateway] park_after).",
        );
        let _ = writeln!(out, "sumun_parked_clients {}", shared.lots.parked());
        family(
            out,
            "sumun_healthy_targets",
            "gauge",
            "Targets passing health checks, per target group.",
        );
        for g in &registry.groups {
            let (healthy, _) = g.healthy_count();
            let _ = writeln!(
                out,
                "sumun_healthy_targets{{target_group=\"{}\"}} {healthy}",
                esc(&g.name)
            );
        }
        family(
            out,
            "sumun_unhealthy_targets",
            "gauge",
            "Targets failing health checks, per target group.",
        );
        for g in &registry.groups {
            let (_, unhealthy) = g.healthy_count();
            let _ = writeln!(
                out,
                "sumun_unhealthy_targets{{target_group=\"{}\"}} {unhealthy}",
                esc(&g.name)
            );
        }
        family(
            out,
            "sumun_target_active_flows",
            "gauge",
            "Flows open to each target.",
        );
        for g in &registry.groups {
            for t in g.targets().iter() {
                let _ = writeln!(
                    out,
                    "sumun_target_active_flows{{target_group=\"{}\",target=\"{}\"}} {}",
                    esc(&g.name),
                    esc(&t.address),
                    t.active.load(Ordering::Relaxed).max(0)
                );
            }
        }
        family(
            out,
            "sumun_target_connection_errors_total",
            "counter",
            "Failed connects to each target.",
        );
        for g in &registry.groups {
            for t in g.targets().iter() {
                let _ = writeln!(
                    out,
                    "sumun_target_connection_errors_total{{target_group=\"{}\",target=\"{}\"}} {}",
                    esc(&g.name),
                    esc(&t.address),
                    t.connect_errors.load(Ordering::Relaxed)
                );
            }
        }
        for fe in shared.front_ends.iter() {
            fe.render_metrics(shared, out);
        }
    })
}

/// The rows every front end reports, one JSON array.
fn front_end_rows(
    shared: &Shared,
    rows: impl Fn(&dyn crate::frontend::FrontEnd) -> Vec<serde_json::Value>,
) -> Vec<serde_json::Value> {
    shared
        .front_ends
        .iter()
        .flat_map(|fe| rows(fe.as_ref()))
        .collect()
}

async fn pools(State(shared): State<Arc<Shared>>) -> Response {
    Json(front_end_rows(&shared, |fe| fe.pool_rows(&shared))).into_response()
}

async fn servers(State(shared): State<Arc<Shared>>) -> Response {
    Json(server_rows(&shared)).into_response()
}

/// Findings of the inline detections, newest first (the last 1000).
async fn findings(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.protection().findings()).into_response()
}

/// Bans in force, soonest to end first, with the seconds each has left.
async fn bans(State(shared): State<Arc<Shared>>) -> Response {
    let now = crate::records::unix_now();
    let rows: Vec<serde_json::Value> = shared
        .protection()
        .bans()
        .into_iter()
        .map(|b| {
            serde_json::json!({
                "addr": b.addr.to_string(),
                "since": b.since,
                "until": b.until,
                "remaining_s": b.until.saturating_sub(now),
                "reason": b.reason,
                "count": b.count,
            })
        })
        .collect();
    Json(rows).into_response()
}

/// Lift a ban: 204, 404 when the address was not banned, 400 when it is not an address.
async fn unban(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(addr): axum::extract::Path<String>,
) -> Response {
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
        return (StatusCode::BAD_REQUEST, "not an IP address\n").into_response();
    };
    if shared.protection().unban(ip) {
        tracing::info!(addr = %ip, "ban lifted through the admin API");
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::NOT_FOUND, "no ban for this address\n").into_response()
    }
}

async fn clients(State(shared): State<Arc<Shared>>) -> Response {
    Json(front_end_rows(&shared, |fe| fe.client_rows(&shared))).into_response()
}

#[derive(Debug, Serialize)]
pub struct ServerRow {
    pub target_group: String,
    pub address: String,
    /// As configured, or as a protocol-level health check found it.
    pub role: &'static str,
    pub health: crate::targets::Health,
    pub reason: String,
    pub active_flows: i64,
    pub replica_lag_ms: u64,
}

/// Every target of every group with its health and role: `/api/servers`, `SHOW SERVERS`.
pub fn server_rows(shared: &Shared) -> Vec<ServerRow> {
    let registry = shared.registry.load();
    let mut rows = Vec::new();
    for g in &registry.groups {
        for t in g.targets().iter() {
            let st = t.status(&g.name);
            rows.push(ServerRow {
                target_group: g.name.clone(),
                address: st.address,
                role: st.role,
                health: st.health,
                reason: st.reason,
                active_flows: st.active_flows,
                replica_lag_ms: t.replica_lag_ms.load(Ordering::Relaxed),
            });
        }
    }
    rows
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    match *shared.phase.borrow() {
        Phase::Running => (StatusCode::OK, "ok\n").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response(),
    }
}

#[derive(Serialize)]
struct ListenerInfo {
    name: String,
    bind: String,
    protocol: &'static str,
    target_group: String,
    security_groups: Vec<String>,
    tls_config: Option<String>,
    active_flows: i64,
    new_flows_total: u64,
    rejected_total: u64,
    healthy_targets: usize,
    unhealthy_targets: usize,
}

async fn listeners(State(shared): State<Arc<Shared>>) -> Json<Vec<ListenerInfo>> {
    let registry = shared.registry.load_full();
    let mut out: Vec<ListenerInfo> = registry
        .listeners
        .iter()
        .map(|l| {
            let snap = l.snapshot();
            let (healthy, unhealthy) = snap.group.healthy_count();
            ListenerInfo {
                name: l.name.to_string(),
                bind: l.local_addr.to_string(),
                protocol: snap.settings.protocol.as_str(),
                target_group: snap.settings.target_group.clone(),
                security_groups: snap.settings.security_groups.clone(),
                tls_config: snap.settings.tls_config.clone(),
                active_flows: l.metrics.active_flows.load(Ordering::Relaxed).max(0),
                new_flows_total: l.metrics.new_flows.load(Ordering::Relaxed),
                rejected_total: crate::metrics::RejectReason::all()
                    .iter()
                    .map(|r| l.metrics.rejected(*r))
                    .sum(),
                healthy_targets: healthy,
                unhealthy_targets: unhealthy,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Json(out)
}

async fn targets(State(shared): State<Arc<Shared>>) -> Json<Vec<TargetStatus>> {
    Json(target_statuses(&shared))
}

pub fn target_statuses(shared: &Shared) -> Vec<TargetStatus> {
    let registry = shared.registry.load_full();
    let mut out: Vec<TargetStatus> = registry.groups.iter().flat_map(|g| g.statuses()).collect();
    out.sort_by(|a, b| {
        (
            a.target_group.as_str(),
            a.address.as_str(),
            a.health == Health::Draining,
        )
            .cmp(&(
                b.target_group.as_str(),
                b.address.as_str(),
                b.health == Health::Draining,
            ))
    });
    out
}
