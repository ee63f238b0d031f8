//! Active health checks: one task per registered target, probing every `interval` with a
//! `timeout`, and moving the target between healthy and unhealthy after `healthy_threshold` /
//! `unhealthy_threshold` consecutive results (NLB semantics). A target's first result settles
//! its initial state at once.
//!
//! The probe is chosen by `HealthCheckProtocol`: a TCP connect, or a PostgreSQL login and
//! `SELECT pg_is_in_recovery()`, which also reports the target's role and a replica's lag.
//! Probes for other protocols (MySQL ping, Redis PING/ROLE) plug in as further arms of
//! [`probe`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sumun_config::{HealthCheck, HealthCheckProtocol, Role};
use tokio::net::TcpStream;

use crate::targets::{Health, Observation, TargetGroupRt, TargetRt};
use crate::Shared;

/// Why a probe failed, phrased for "N consecutive ..." reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeFailure {
    Timeout,
    Refused,
    Error,
}

impl ProbeFailure {
    pub fn reason(self) -> &'static str {
        match self {
            ProbeFailure::Timeout => "health check timeouts",
            ProbeFailure::Refused => "health check connections refused",
            ProbeFailure::Error => "health check errors",
        }
    }
}

/// What a protocol-level probe learned besides "healthy".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    pub role: Role,
    pub lag_ms: u64,
}

/// Run one probe against `addr`.
pub async fn probe(
    hc: &HealthCheck,
    addr: SocketAddr,
    shared: Option<&Shared>,
    server: &crate::postgres::ServerPolicy,
) -> Result<Option<Learned>, ProbeFailure> {
    let timeout = hc.timeout;
    match hc.protocol {
        HealthCheckProtocol::Postgres => {
            match tokio::time::timeout(timeout, postgres_probe(hc, addr, shared, server)).await {
                Err(_) => Err(ProbeFailure::Timeout),
                Ok(r) => r.map(Some),
            }
        }
        HealthCheckProtocol::Tcp => {
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Err(_) => Err(ProbeFailure::Timeout),
                Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                    Err(ProbeFailure::Refused)
                }
                Ok(Err(_)) => Err(ProbeFailure::Error),
                Ok(Ok(stream)) => {
                    drop(stream);
                    Ok(None)
                }
            }
        }
    }
}

/// Log in with the health check's credential and ask the server whether it is in recovery
/// (a replica) and, if so, how far behind its primary it is.
async fn postgres_probe(
    hc: &HealthCheck,
    addr: SocketAddr,
    shared: Option<&Shared>,
    server: &crate::postgres::ServerPolicy,
) -> Result<Learned, ProbeFailure> {
    use crate::postgres::probe_login;
    let rows = probe_login(hc, addr, shared, server).await.map_err(|e| {
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
            Role::Replica
        } else {
            Role::Primary
        },
        lag_ms,
    })
}

/// Start the check loop for `target`. It ends when the target is deregistered or its group is
/// retired; it holds only weak references so a dropped group frees its targets.
pub fn spawn_checker(group: &Arc<TargetGroupRt>, target: &Arc<TargetRt>, shared: &Arc<Shared>) {
    if !group.settings().health_check.enabled {
        return;
    }
    let group = Arc::downgrade(group);
    let target = Arc::downgrade(target);
    tokio::spawn(check_loop(group, target, Arc::downgrade(shared)));
}

async fn check_loop(group: Weak<TargetGroupRt>, target: Weak<TargetRt>, shared: Weak<Shared>) {
    // Spread first probes a little so a reload does not probe every target at the same instant.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..50))).await;
    // Sessions waiting for a primary wake the checks early (`TargetGroupRt::recheck_now`).
    let Some(recheck) = group.upgrade().map(|g| g.recheck_signal()) else {
        return;
    };
    loop {
        let (Some(g), Some(t)) = (group.upgrade(), target.upgrade()) else {
            return;
        };
        if g.retired.load(Ordering::Relaxed) || t.health() == Health::Draining {
            return;
        }
        let settings = g.settings();
        let hc = settings.health_check.clone();
        let addr = t.addr;
        let server = crate::postgres::ServerPolicy::for_target(&settings, &t.address);
        drop((g, t));
        let shared_now = shared.upgrade();
        let result = probe(&hc, addr, shared_now.as_deref(), &server).await;
        drop(shared_now);
        let (Some(g), Some(t)) = (group.upgrade(), target.upgrade()) else {
            return;
        };
        let observation = match result {
            Ok(learned) => {
                if let Some(l) = learned {
                    t.learn_role(l.role, l.lag_ms);
                }
                Observation::Success
            }
            Err(failure) => Observation::Failure(failure.reason()),
        };
        if let Some((health, reason)) =
            t.observe(observation, hc.healthy_threshold, hc.unhealthy_threshold)
        {
            log_change(&g.name, &t.address, health, &reason);
        }
        drop((g, t));
        tokio::select! {
            _ = tokio::time::sleep(hc.interval) => {}
            _ = recheck.notified() => {}
        }
    }
}

pub fn log_change(group: &str, target: &str, health: Health, reason: &str) {
    match health {
        Health::Healthy => {
            tracing::info!(target_group = group, target, reason, "target is healthy")
        }
        _ => tracing::warn!(target_group = group, target, reason, "target is unhealthy"),
    }
}
