//! `hunt`: built-in detections over flow logs, each with a documented threshold the user can
//! override, a severity and a MITRE ATT&CK technique.
//!
//! Records are oriented first ([`crate::orient`]): a server's replies are skipped, so a busy
//! database answering many clients never looks like a scan. What is kept of each record is a
//! compact row (addresses interned, about 40 bytes), so memory grows with the log; the SQL
//! engine planned for `flows query` is the way to hunt over logs larger than memory.
//!
//! Windows ("15 ports in 5 minutes") are sliding, over the records' start times.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::Serialize;
use sumun_flows::{Action, Flow, LogStatus};

use crate::orient::{self, is_public, Orientation, DB_PORTS};

/// The thresholds of every detection. Defaults follow seed 000's hunting queries where it has
/// one (10 GiB a day of egress, more than 5 rejected database targets).
#[derive(Debug, Clone, Serialize)]
pub struct Thresholds {
    /// Sliding window, seconds, for scans, sweeps and brute force. Default 300.
    pub window: u64,
    /// Distinct ports of one host from one source within the window. Default 15.
    pub scan_ports: usize,
    /// Distinct hosts on one port from one source within the window. Default 25.
    pub sweep_hosts: usize,
    /// Connections from one source to one database port of one host within the window.
    /// Default 100.
    pub brute_connections: usize,
    /// Distinct (host, database port) targets a source was refused on. Default 5.
    pub probe_targets: usize,
    /// Bytes between one client and one server in one UTC day. Default 10 GiB.
    pub egress_bytes: u64,
    /// Seconds from the first record during which (source, database port) pairs are learnt;
    /// pairs first seen after it are reported. Default 6 hours.
    pub learn: u64,
    /// The database ports. Default 1433, 1521, 3306, 5432, 6379, 9200, 27017.
    pub db_ports: Vec<u16>,
    /// Evidence rows kept per finding. Default 10.
    pub evidence: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            window: 300,
            scan_ports: 15,
            sweep_hosts: 25,
            brute_connections: 100,
            probe_targets: 5,
            egress_bytes: 10 * 1024 * 1024 * 1024,
            learn: 6 * 3600,
            db_ports: DB_PORTS.to_vec(),
            evidence: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// One record shown as evidence, oriented client to server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub start: u64,
    pub end: u64,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub protocol: u8,
    pub action: &'static str,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `port_scan`, `address_sweep`, `brute_force`, `public_db`, `rejected_db_probe`,
    /// `egress_volume`, `new_db_client`.
    pub detection: &'static str,
    pub severity: Severity,
    /// MITRE ATT&CK technique id and name.
    pub technique: &'static str,
    pub technique_name: &'static str,
    pub src: IpAddr,
    pub dst: Option<IpAddr>,
    pub port: Option<u16>,
    /// What crossed the threshold, in words.
    pub detail: String,
    pub first: u64,
    pub last: u64,
    /// Records behind the finding.
    pub records: usize,
    /// The first of them, at most `Thresholds::evidence`.
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, Clone, Copy)]
struct Row {
    client: u32,
    server: u32,
    client_port: u16,
    port: u16,
    protocol: u8,
    reject: bool,
    start: u64,
    end: u64,
    bytes: u64,
}

/// Collects oriented rows from flows, then runs the detections.
#[derive(Debug, Default)]
pub struct Hunt {
    ips: Vec<IpAddr>,
    ids: HashMap<IpAddr, u32>,
    rows: Vec<Row>,
}

impl Hunt {
    pub fn new() -> Hunt {
        Hunt::default()
    }

    fn intern(&mut self, ip: IpAddr) -> u32 {
        let ip = sumun_policy::canonical(ip);
        if let Some(&id) = self.ids.get(&ip) {
            return id;
        }
        let id = self.ips.len() as u32;
        self.ips.push(ip);
        self.ids.insert(ip, id);
        id
    }

    pub fn add(&mut self, flow: &Flow) {
        if flow.record.log_status != LogStatus::Ok {
            return;
        }
        let r = &flow.record;
        let reply = match orient::orient(flow) {
            Orientation::Reverse => true,
            Orientation::Forward => false,
            // Neither port is a known service. A refused record is an attempt (nothing was
            // answered); otherwise the lower port is taken for the server's, so the replies of
            // a service on an unlisted port (9443 -> 51544) are not counted as a scan of its
            // client's ports.
            Orientation::Unknown => r.action == Action::Accept && r.srcport < r.dstport,
        };
        if reply {
            return;
        }
        let c = orient::conn(flow, Orientation::Forward);
        let row = Row {
            client: self.intern(c.client),
            server: self.intern(c.server),
            client_port: c.client_port,
            port: c.port,
            protocol: c.protocol,
            reject: c.action == Action::Reject,
            start: c.start,
            end: c.end.max(c.start),
            bytes: c.bytes,
        };
        self.rows.push(row);
    }

    fn evidence(&self, rows: &[Row], t: &Thresholds) -> Vec<Evidence> {
        rows.iter()
            .take(t.evidence)
            .map(|r| Evidence {
                start: r.start,
                end: r.end,
                src: self.ips[r.client as usize],
                src_port: r.client_port,
                dst: self.ips[r.server as usize],
                dst_port: r.port,
                protocol: r.protocol,
                action: if r.reject { "REJECT" } else { "ACCEPT" },
                bytes: r.bytes,
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn finding(
        &self,
        t: &Thresholds,
        detection: &'static str,
        severity: Severity,
        technique: (&'static str, &'static str),
        rows: &[Row],
        dst: Option<u32>,
        port: Option<u16>,
        detail: String,
    ) -> Finding {
        Finding {
            detection,
            severity,
            technique: technique.0,
            technique_name: technique.1,
            src: self.ips[rows[0].client as usize],
            dst: dst.map(|d| self.ips[d as usize]),
            port,
            detail,
            first: rows.iter().map(|r| r.start).min().unwrap_or(0),
            last: rows.iter().map(|r| r.end).max().unwrap_or(0),
            records: rows.len(),
            evidence: self.evidence(rows, t),
        }
    }

    /// Runs every detection; findings are sorted by severity (highest first), then time.
    pub fn run(mut self, t: &Thresholds) -> Vec<Finding> {
        let mut out = Vec::new();
        let db = |p: u16| t.db_ports.contains(&p);
        let mut rows = std::mem::take(&mut self.rows);
        let t0 = rows.iter().map(|r| r.start).min();

        // Vertical scan: one source, one host, many ports.
        for group in groups(&mut rows, |r| (r.client, r.server, r.protocol)) {
            if let Some((win, n)) = widest(group, t.window, |r| u64::from(r.port)) {
                if n >= t.scan_ports {
                    out.push(self.finding(
                        t,
                        "port_scan",
                        Severity::Medium,
                        ("T1046", "Network Service Discovery"),
                        win,
                        Some(group[0].server),
                        None,
                        format!("{n} distinct ports within {} s", t.window),
                    ));
                }
            }
        }
        // Address sweep: one source, one port, many hosts.
        for group in groups(&mut rows, |r| (r.client, u32::from(r.port), r.protocol)) {
            if let Some((win, n)) = widest(group, t.window, |r| u64::from(r.server)) {
                if n >= t.sweep_hosts {
                    out.push(self.finding(
                        t,
                        "address_sweep",
                        Severity::Medium,
                        ("T1046", "Network Service Discovery"),
                        win,
                        None,
                        Some(group[0].port),
                        format!("{n} distinct hosts within {} s", t.window),
                    ));
                }
            }
        }
        // Brute force: many connections to one database port of one host.
        for group in groups(&mut rows, |r| (r.client, r.server, r.port)) {
            if !db(group[0].port) {
                continue;
            }
            if let Some((win, n)) = busiest(group, t.window) {
                if n >= t.brute_connections {
                    out.push(self.finding(
                        t,
                        "brute_force",
                        Severity::High,
                        ("T1110", "Brute Force"),
                        win,
                        Some(group[0].server),
                        Some(group[0].port),
                        format!("{n} connections within {} s", t.window),
                    ));
                }
            }
        }
        // Database ports reached from public addresses.
        for group in groups(&mut rows, |r| (r.client, r.server, r.port)) {
            let first = group[0];
            if !db(first.port) || !is_public(self.ips[first.client as usize]) {
                continue;
            }
            let accepted: Vec<Row> = group.iter().copied().filter(|r| !r.reject).collect();
            if !accepted.is_empty() {
                out.push(self.finding(
                    t,
                    "public_db",
                    Severity::High,
                    ("T1190", "Exploit Public-Facing Application"),
                    &accepted,
                    Some(first.server),
                    Some(first.port),
                    format!(
                        "{} accepted connections from a public address",
                        accepted.len()
                    ),
                ));
            }
        }
        // Rejected probes of database ports.
        let mut rejected: Vec<Row> = rows
            .iter()
            .copied()
            .filter(|r| r.reject && db(r.port))
            .collect();
        for group in groups(&mut rejected, |r| (r.client, 0, 0)) {
            let targets: HashSet<(u32, u16)> = group.iter().map(|r| (r.server, r.port)).collect();
            if targets.len() >= t.probe_targets {
                let public = is_public(self.ips[group[0].client as usize]);
                out.push(self.finding(
                    t,
                    "rejected_db_probe",
                    if public {
                        Severity::Medium
                    } else {
                        Severity::High
                    },
                    ("T1046", "Network Service Discovery"),
                    group,
                    None,
                    None,
                    format!(
                        "refused on {} database targets (host, port){}",
                        targets.len(),
                        if public {
                            ""
                        } else {
                            " from an internal address"
                        }
                    ),
                ));
            }
        }
        // Egress volume per client and server per UTC day.
        for group in groups(&mut rows, |r| (r.client, r.server, 0)) {
            let mut by_day: HashMap<u64, (u64, Vec<Row>)> = HashMap::new();
            for r in group.iter().filter(|r| !r.reject) {
                let e = by_day.entry(r.start / 86_400).or_default();
                e.0 = e.0.saturating_add(r.bytes);
                e.1.push(*r);
            }
            let mut days: Vec<_> = by_day.into_iter().collect();
            days.sort_by_key(|(d, _)| *d);
            for (_, (bytes, day_rows)) in days {
                if bytes >= t.egress_bytes {
                    let public = is_public(self.ips[group[0].server as usize]);
                    out.push(self.finding(
                        t,
                        "egress_volume",
                        if public {
                            Severity::High
                        } else {
                            Severity::Medium
                        },
                        ("T1048", "Exfiltration Over Alternative Protocol"),
                        &day_rows,
                        Some(group[0].server),
                        None,
                        format!(
                            "{:.1} GiB in one UTC day{}",
                            bytes as f64 / (1u64 << 30) as f64,
                            if public { " to a public address" } else { "" }
                        ),
                    ));
                }
            }
        }
        // New (source, database port) pairs after the learning window.
        if let Some(t0) = t0 {
            let learnt_until = t0.saturating_add(t.learn);
            let known: HashSet<(u32, u16)> = rows
                .iter()
                .filter(|r| r.start < learnt_until && db(r.port))
                .map(|r| (r.client, r.port))
                .collect();
            let mut fresh: Vec<Row> = rows
                .iter()
                .copied()
                .filter(|r| r.start >= learnt_until && !r.reject && db(r.port))
                .filter(|r| !known.contains(&(r.client, r.port)))
                .collect();
            for group in groups(&mut fresh, |r| (r.client, u32::from(r.port), 0)) {
                out.push(self.finding(
                    t,
                    "new_db_client",
                    Severity::Medium,
                    ("T1021", "Remote Services"),
                    group,
                    Some(group[0].server),
                    Some(group[0].port),
                    format!("first seen after the {} h learning window", t.learn / 3600),
                ));
            }
        }
        out.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.first.cmp(&b.first))
                .then(a.detection.cmp(b.detection))
        });
        out
    }
}

/// Rows grouped by `key`, each group in time order: the rows are sorted in place by key and
/// time (no copy: a day of flow logs is large), and the groups are slices of them.
fn groups<K: Ord>(rows: &mut [Row], key: impl Fn(&Row) -> K) -> Vec<&[Row]> {
    rows.sort_unstable_by(|a, b| key(a).cmp(&key(b)).then(a.start.cmp(&b.start)));
    rows.chunk_by(|a, b| key(a) == key(b)).collect()
}

/// The window (at most `window` seconds of start times) with the most distinct `value`s, and
/// that count. Rows must be in time order.
fn widest(rows: &[Row], window: u64, value: impl Fn(&Row) -> u64) -> Option<(&[Row], usize)> {
    let mut counts: HashMap<u64, u32> = HashMap::new();
    let mut best: Option<(usize, usize, usize)> = None;
    let mut lo = 0;
    for hi in 0..rows.len() {
        *counts.entry(value(&rows[hi])).or_default() += 1;
        while rows[hi].start - rows[lo].start >= window.max(1) {
            let v = value(&rows[lo]);
            if let Some(c) = counts.get_mut(&v) {
                *c -= 1;
                if *c == 0 {
                    counts.remove(&v);
                }
            }
            lo += 1;
        }
        if best.is_none_or(|(_, _, n)| counts.len() > n) {
            best = Some((lo, hi, counts.len()));
        }
    }
    best.map(|(lo, hi, n)| (&rows[lo..=hi], n))
}

/// The window with the most rows, and that count.
fn busiest(rows: &[Row], window: u64) -> Option<(&[Row], usize)> {
    let mut best: Option<(usize, usize)> = None;
    let mut lo = 0;
    for hi in 0..rows.len() {
        while rows[hi].start - rows[lo].start >= window.max(1) {
            lo += 1;
        }
        if best.is_none_or(|(l, h)| hi - lo > h - l) {
            best = Some((lo, hi));
        }
    }
    best.map(|(lo, hi)| (&rows[lo..=hi], hi - lo + 1))
}
