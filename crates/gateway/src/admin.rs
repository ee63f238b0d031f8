//! The admin listener: `/metrics` (Prometheus), `/healthz`, and JSON under `/api/` for
//! `sumun status` and, later, the web console. Read-only: nothing here changes the gateway.
//! Bind it to loopback or a management network; it has no authentication of its own yet.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::{esc, family};
use crate::targets::{Health, TargetStatus};
use crate::{Phase, Shared};

pub(crate) struct AdminRt {
    pub configured: SocketAddr,
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl AdminRt {
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

pub(crate) fn start(
    socket: TcpListener,
    configured: SocketAddr,
    shared: Arc<Shared>,
) -> std::io::Result<AdminRt> {
    let local_addr = socket.local_addr()?;
    let (stop, mut stop_rx) = watch::channel(false);
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/listeners", get(listeners))
        .route("/api/targets", get(targets))
        .route("/api/pools", get(pools))
        .route("/api/clients", get(clients))
        .route("/api/servers", get(servers))
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
        stop,
    })
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
        crate::postgres::render_metrics(shared, out);
    })
}

async fn pools(State(shared): State<Arc<Shared>>) -> Response {
    Json(crate::postgres::pool_rows(&shared)).into_response()
}

async fn servers(State(shared): State<Arc<Shared>>) -> Response {
    Json(crate::postgres::server_rows(&shared)).into_response()
}

async fn clients(State(shared): State<Arc<Shared>>) -> Response {
    Json(crate::postgres::client_rows(&shared)).into_response()
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
