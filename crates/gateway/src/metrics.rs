//! Counters and gauges, rendered in the Prometheus text format at the admin listener's
//! `/metrics`. Names follow SPEC.md (the NLB's CloudWatch metrics, renamed). The data path only
//! touches relaxed atomics held in `Arc`s it resolved once per flow; maps are locked only when a
//! listener is created, on TLS handshakes (per connection, not per byte) and at scrape time.
//!
//! Metric families outlive reloads: a listener that is reconfigured keeps its counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Why a flow was refused before any byte reached a target. The label of
/// `sumun_rejected_flows_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    SecurityGroup,
    NoSecurityGroup,
    ProxyUntrusted,
    ProxyMalformed,
    HandshakeTimeout,
    TlsHandshake,
    MaxConnections,
    NoHealthyTarget,
    TargetConnect,
    ShuttingDown,
    /// A protocol front end could not read the client's first messages.
    ProtocolError,
}

impl RejectReason {
    const ALL: [RejectReason; 11] = [
        RejectReason::SecurityGroup,
        RejectReason::NoSecurityGroup,
        RejectReason::ProxyUntrusted,
        RejectReason::ProxyMalformed,
        RejectReason::HandshakeTimeout,
        RejectReason::TlsHandshake,
        RejectReason::MaxConnections,
        RejectReason::NoHealthyTarget,
        RejectReason::TargetConnect,
        RejectReason::ShuttingDown,
        RejectReason::ProtocolError,
    ];

    pub fn all() -> &'static [RejectReason] {
        &Self::ALL
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::SecurityGroup => "security_group",
            RejectReason::NoSecurityGroup => "no_security_group",
            RejectReason::ProxyUntrusted => "proxy_protocol_untrusted",
            RejectReason::ProxyMalformed => "proxy_protocol_malformed",
            RejectReason::HandshakeTimeout => "handshake_timeout",
            RejectReason::TlsHandshake => "tls_handshake",
            RejectReason::MaxConnections => "max_connections",
            RejectReason::NoHealthyTarget => "no_healthy_target",
            RejectReason::TargetConnect => "target_connect",
            RejectReason::ShuttingDown => "shutting_down",
            RejectReason::ProtocolError => "protocol_error",
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every reason is listed in ALL")
    }
}

/// Per-listener counters.
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    pub active_flows: AtomicI64,
    pub new_flows: AtomicU64,
    /// Client to target.
    pub bytes_in: AtomicU64,
    /// Target to client.
    pub bytes_out: AtomicU64,
    pub auth_failures: AtomicU64,
    rejected: [AtomicU64; 11],
    /// (version, key exchange group) -> completed handshakes.
    tls_handshakes: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl ListenerMetrics {
    pub fn reject(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    pub fn tls_handshake(&self, version: &'static str, group: String) {
        let mut map = self
            .tls_handshakes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *map.entry((version, group)).or_insert(0) += 1;
    }
}

/// Per-target counters (connect errors feed passive health).
#[derive(Debug, Default)]
pub struct TargetMetrics {
    pub connect_errors: AtomicU64,
}

/// Everything `/metrics` shows that is not derived from live state at scrape time.
#[derive(Debug, Default)]
pub struct Metrics {
    listeners: Mutex<BTreeMap<String, Arc<ListenerMetrics>>>,
    pub flow_log_dropped: Arc<AtomicU64>,
    pub audit_dropped: Arc<AtomicU64>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// TLS config name -> days until its certificate expires.
    pub cert_expiry_days: Mutex<BTreeMap<String, f64>>,
}

impl Metrics {
    /// The counters of listener `name`, created on first use.
    pub fn listener(&self, name: &str) -> Arc<ListenerMetrics> {
        let mut map = self
            .listeners
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        map.entry(name.to_string()).or_default().clone()
    }

    pub fn set_cert_expiry(&self, tls_config: &str, days: f64) {
        let mut map = self
            .cert_expiry_days
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        map.insert(tls_config.to_string(), days);
    }

    /// Render every family. `extra` appends families computed from live state (targets).
    pub fn render(&self, extra: &dyn Fn(&mut String)) -> String {
        let mut out = String::with_capacity(4096);
        let listeners: Vec<(String, Arc<ListenerMetrics>)> = self
            .listeners
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();

        family(
            &mut out,
            "sumun_active_flows",
            "gauge",
            "Flows currently open, per listener.",
        );
        for (name, m) in &listeners {
            let v = m.active_flows.load(Ordering::Relaxed).max(0);
            let _ = writeln!(out, "sumun_active_flows{{listener=\"{}\"}} {v}", esc(name));
        }
        family(
            &mut out,
            "sumun_new_flows_total",
            "counter",
            "Flows admitted and forwarded to a target.",
        );
        for (name, m) in &listeners {
            let v = m.new_flows.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "sumun_new_flows_total{{listener=\"{}\"}} {v}",
                esc(name)
            );
        }
        family(
            &mut out,
            "sumun_processed_bytes_total",
            "counter",
            "Bytes relayed; direction=in is client to target.",
        );
        for (name, m) in &listeners {
            let i = m.bytes_in.load(Ordering::Relaxed);
            let o = m.bytes_out.load(Ordering::Relaxed);
            let n = esc(name);
            let _ = writeln!(
                out,
                "sumun_processed_bytes_total{{listener=\"{n}\",direction=\"in\"}} {i}"
            );
            let _ = writeln!(
                out,
                "sumun_processed_bytes_total{{listener=\"{n}\",direction=\"out\"}} {o}"
            );
        }
        family(
            &mut out,
            "sumun_rejected_flows_total",
            "counter",
            "Connections refused before reaching a target, by reason.",
        );
        for (name, m) in &listeners {
            for reason in RejectReason::ALL {
                let v = m.rejected(reason);
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "sumun_rejected_flows_total{{listener=\"{}\",reason=\"{}\"}} {v}",
                        esc(name),
                        reason.as_str()
                    );
                }
            }
        }
        family(
            &mut out,
            "sumun_auth_failures_total",
            "counter",
            "Failed client authentications.",
        );
        for (name, m) in &listeners {
            let v = m.auth_failures.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "sumun_auth_failures_total{{listener=\"{}\"}} {v}",
                esc(name)
            );
        }
        family(
            &mut out,
            "sumun_tls_handshakes_total",
            "counter",
            "Completed TLS handshakes by version and key exchange group.",
        );
        for (name, m) in &listeners {
            let map = m
                .tls_handshakes
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            for ((version, group), v) in map.iter() {
                let _ = writeln!(
                    out,
                    "sumun_tls_handshakes_total{{listener=\"{}\",version=\"{version}\",group=\"{}\"}} {v}",
                    esc(name),
                    esc(group)
                );
            }
        }
        family(
            &mut out,
            "sumun_certificate_expiry_days",
            "gauge",
            "Days until the served certificate expires, per TLS config.",
        );
        for (name, days) in self
            .cert_expiry_days
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "sumun_certificate_expiry_days{{tls_config=\"{}\"}} {days:.3}",
                esc(name)
            );
        }
        family(
            &mut out,
            "sumun_log_records_dropped_total",
            "counter",
            "Flow or audit records dropped because the writer fell behind.",
        );
        let _ = writeln!(
            out,
            "sumun_log_records_dropped_total{{log=\"flow\"}} {}",
            self.flow_log_dropped.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "sumun_log_records_dropped_total{{log=\"audit\"}} {}",
            self.audit_dropped.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "sumun_config_reloads_total",
            "counter",
            "Configuration reloads by result.",
        );
        let _ = writeln!(
            out,
            "sumun_config_reloads_total{{result=\"success\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "sumun_config_reloads_total{{result=\"failure\"}} {}",
            self.reloads_failed.load(Ordering::Relaxed)
        );
        extra(&mut out);
        out
    }
}

/// Write a family's HELP and TYPE lines.
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escape a label value (backslash, quote, newline), as the exposition format requires.
pub(crate) fn esc(value: &str) -> String {
    if !value.contains(['\\', '"', '\n']) {
        return value.to_string();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
