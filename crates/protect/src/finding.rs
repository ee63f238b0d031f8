//! What a detection reports. The JSON shape is the one `sumun flows hunt` writes (detection,
//! severity, technique, technique_name, src, dst, port, detail, first, last, records,
//! evidence), so findings from the audit log and from flow logs can be read together; inline
//! findings add who (`user`), where (`listener`) and what was done (`action`).

use std::net::IpAddr;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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

/// One event behind a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// Unix seconds.
    pub ts: u64,
    /// `auth.failure`, `auth.success`, `connection.rejected`, `connection`, `query`, `session.end`.
    pub event: &'static str,
    pub listener: String,
    /// The listener port the client reached.
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Why a login or connection was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `brute_force`, `password_spray`, `login_after_failures`, `scan`, `connection_spike`,
    /// `first_seen`, `privilege_change`, `egress`, `sql_injection`.
    pub detection: &'static str,
    pub severity: Severity,
    /// MITRE ATT&CK technique id and name.
    pub technique: &'static str,
    pub technique_name: &'static str,
    pub src: IpAddr,
    /// The gateway address reached, when one listener is concerned.
    pub dst: Option<IpAddr>,
    pub port: Option<u16>,
    /// What crossed the threshold, in words.
    pub detail: String,
    /// Unix seconds of the first and last event behind it.
    pub first: u64,
    pub last: u64,
    /// Events behind the finding.
    pub records: usize,
    /// The last of them (at most five).
    pub evidence: Vec<Evidence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// `log`, or `block` when the source was banned for it.
    pub action: &'static str,
}

impl Finding {
    /// The finding as a JSON object (for the audit log and the admin API).
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }
    }
}
