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
    /// The listener's protocol has no front end (or a `tls` listener has no TLS settings):
    /// refused rather than relayed without the TLS and login it promises.
    NoFrontEnd,
    /// The source is banned (`[protection]`).
    Banned,
    /// The source is over its `[protection]` rate limits.
    RateLimited,
    /// Refused by `[protection]` `deny_ip_sets` / `allow_ip_sets`.
    IpSet,
    /// Refused by `[protection.geo]`.
    Geo,
}

impl RejectReason {
    const ALL: [RejectReason; 16] = [
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
        RejectReason::NoFrontEnd,
        RejectReason::Banned,
        RejectReason::RateLimited,
        RejectReason::IpSet,
        RejectReason::Geo,
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
            RejectReason::NoFrontEnd => "no_front_end",
            RejectReason::Banned => "banned",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::IpSet => "ip_set",
            RejectReason::Geo => "geo",
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
    /// Connections whose task panicked (`sumun_panics_total`): ended there, their flow closed
    /// and their counters released as they unwound (`workers::contained`).
    pub panics: AtomicU64,
    /// Statement latency (`sumun_query_duration_seconds`), from a statement reaching the
    /// gateway to its completion; recorded by protocol front ends that time statements.
    pub query_duration: Histogram,
    rejected: [AtomicU64; 16],
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

/// Upper bounds of the latency buckets, in microseconds, and as `le` labels.
const LATENCY_BUCKETS: [(u64, &str); 14] = [
    (500, "0.0005"),
    (1_000, "0.001"),
    (2_500, "0.0025"),
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
    (10_000_000, "10"),
];

/// A latency histogram in the Prometheus sense: one relaxed atomic add per bucket hit and two
/// for sum and count, no lock. Counts are kept per bucket (not cumulative) and summed at render
/// time.
#[derive(Debug, Default)]
pub struct Histogram {
    /// One per bound of `LATENCY_BUCKETS`, then the one above the last bound.
    buckets: [AtomicU64; 15],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe_micros(&self, micros: u64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|(bound, _)| micros <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Write the `_bucket`, `_sum` and `_count` lines of series `name{labels}` (`labels` is
    /// already escaped, e.g. `listener="pg"`).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0u64;
        for (i, (_, le)) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets.get(i).map_or(0, |b| b.load(Ordering::Relaxed));
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        // `+Inf` and `_count` come from the same loads, so they always agree.
        cumulative += self
            .buckets
            .get(LATENCY_BUCKETS.len())
            .map_or(0, |b| b.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
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
            "sumun_panics_total",
            "counter",
            "Connections ended by a panic in the gateway (a bug: see the error log).",
        );
        for (name, m) in &listeners {
            let v = m.panics.load(Ordering::Relaxed);
            let _ = writeln!(out, "sumun_panics_total{{listener=\"{}\"}} {v}", esc(name));
        }
        family(
            &mut out,
            "sumun_query_duration_seconds",
            "histogram",
            "Statement latency through the gateway (statements timed for query audit).",
        );
        for (name, m) in &listeners {
            // Only listeners that time statements (PostgreSQL with query audit) have series.
            if m.query_duration.count() > 0 {
                let labels = format!("listener=\"{}\"", esc(name));
                m.query_duration
                    .render(&mut out, "sumun_query_duration_seconds", &labels);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_agree_with_count() {
        let h = Histogram::default();
        for micros in [0, 500, 501, 1_000, 7_000, 2_000_000, 10_000_000, 60_000_000] {
            h.observe_micros(micros);
        }
        let mut out = String::new();
        h.render(&mut out, "q", "listener=\"pg\"");
        let value = |series: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {series} in {out}"))
                .parse()
                .expect("number")
        };
        assert_eq!(value("q_bucket{listener=\"pg\",le=\"0.0005\"}"), 2.0);
        assert_eq!(value("q_bucket{listener=\"pg\",le=\"0.001\"}"), 4.0);
        assert_eq!(value("q_bucket{listener=\"pg\",le=\"0.01\"}"), 5.0);
        assert_eq!(value("q_bucket{listener=\"pg\",le=\"2.5\"}"), 6.0);
        assert_eq!(value("q_bucket{listener=\"pg\",le=\"10\"}"), 7.0);
        assert_eq!(value("q_bucket{listener=\"pg\",le=\"+Inf\"}"), 8.0);
        assert_eq!(value("q_count{listener=\"pg\"}"), 8.0);
        assert!((value("q_sum{listener=\"pg\"}") - 72.009001).abs() < 1e-9);
        assert_eq!(out.lines().count(), 17);
    }

    #[test]
    fn listeners_without_timed_statements_have_no_histogram_series() {
        let m = Metrics::default();
        m.listener("tcp");
        m.listener("pg").query_duration.observe_micros(300);
        let text = m.render(&|_| {});
        assert!(text.contains("# TYPE sumun_query_duration_seconds histogram"));
        assert!(text.contains("sumun_query_duration_seconds_count{listener=\"pg\"} 1"));
        assert!(!text.contains("sumun_query_duration_seconds_count{listener=\"tcp\"}"));
    }
}
