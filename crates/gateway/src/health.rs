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

use sumun_config::{HealthCheck, Role, TargetGroup};
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

/// Run one probe against `addr` (`target` is its configured `host:port`).
pub async fn probe(
    hc: &HealthCheck,
    group: &TargetGroup,
    target: &str,
    addr: SocketAddr,
    shared: Option<&Shared>,
) -> Result<Option<Learned>, ProbeFailure> {
    let timeout = hc.timeout;
    match hc.protocol.protocol() {
        // A protocol check: the front end logs in and learns the role.
        Some(protocol) => {
            let front_end = shared
                .and_then(|s| s.front_ends.get(protocol))
                .ok_or(ProbeFailure::Error)?;
            let probe = front_end.probe(hc, group, target, addr, shared);
            match tokio::time::timeout(timeout, probe).await {
                Err(_) => Err(ProbeFailure::Timeout),
                Ok(r) => r.map(Some),
            }
        }
        None => match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => Err(ProbeFailure::Timeout),
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(ProbeFailure::Refused)
            }
            Ok(Err(_)) => Err(ProbeFailure::Error),
            Ok(Ok(stream)) => {
                drop(stream);
                Ok(None)
            }
        },
    }
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
        let address = t.address.clone();
        drop((g, t));
        let shared_now = shared.upgrade();
        let result = probe(&hc, &settings, &address, addr, shared_now.as_deref()).await;
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
