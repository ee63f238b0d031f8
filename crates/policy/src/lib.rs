//! Policy decisions, as pure functions of configuration and facts about a connection. Nothing
//! here does I/O or keeps time: the gateway gathers the facts (the client's address after any
//! PROXY header, later the authenticated user) and asks for a [`Decision`]; it logs and answers
//! a denial in the listener's own protocol.
//!
//! Security groups follow AWS semantics: default deny, rules only allow, and a connection is
//! admitted when any rule of any group attached to the listener matches. There are no deny
//! rules (those belong to NACL-like IP sets, a later addition).

pub mod redis_acl;

use std::net::IpAddr;

use ipnet::IpNet;
use sumun_config::{Config, Listener};

/// The outcome of evaluating a connection against a listener's security groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed(Allowed),
    Denied(Denied),
}

/// Which rule let the connection in (for audit and `flows explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub security_group: String,
    pub cidr: IpNet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub reason: DenyReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// The listener has no security group at all: nobody may enter.
    NoSecurityGroup,
    /// No rule of any attached group matches the source address.
    NoMatchingRule,
}

impl DenyReason {
    /// The label used in metrics (`sumun_rejected_flows_total{reason}`) and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoSecurityGroup => "no_security_group",
            DenyReason::NoMatchingRule => "security_group",
        }
    }
}

/// A listener's security groups flattened into one list of rules, built once per config load so
/// that the per-connection check is a scan over a few CIDRs with no allocation.
#[derive(Debug, Clone, Default)]
pub struct SecurityPolicy {
    rules: Vec<(IpNet, usize)>,
    groups: Vec<String>,
}

impl SecurityPolicy {
    /// Compile the groups `listener` names. Unknown names were rejected by config validation;
    /// any that slip through simply contribute no rule (fail closed).
    pub fn for_listener(config: &Config, listener: &Listener) -> SecurityPolicy {
        let mut policy = SecurityPolicy::default();
        for name in &listener.security_groups {
            let Some(group) = config.security_group(name) else {
                continue;
            };
            let index = policy.groups.len();
            policy.groups.push(group.name.clone());
            for rule in &group.ingress {
                policy.rules.push((rule.cidr, index));
            }
        }
        policy
    }

    /// Decide whether a client at `source` may open a flow.
    pub fn decide(&self, source: IpAddr) -> Decision {
        if self.groups.is_empty() {
            return Decision::Denied(Denied {
                reason: DenyReason::NoSecurityGroup,
            });
        }
        let source = canonical(source);
        for (cidr, group) in &self.rules {
            if cidr.contains(&source) {
                return Decision::Allowed(Allowed {
                    security_group: self.groups[*group].clone(),
                    cidr: *cidr,
                });
            }
        }
        Decision::Denied(Denied {
            reason: DenyReason::NoMatchingRule,
        })
    }

    /// Like [`decide`](Self::decide) but without naming the rule: the hot path only needs a yes.
    pub fn admits(&self, source: IpAddr) -> bool {
        let source = canonical(source);
        self.rules.iter().any(|(cidr, _)| cidr.contains(&source))
    }
}

/// An IPv4 client reaching a dual-stack socket appears as `::ffff:a.b.c.d`; rules are written
/// for the IPv4 address, so compare that.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sumun_config::{IngressRule, SecurityGroup};

    fn config_with(groups: &[(&str, &[&str])]) -> Config {
        let mut config = Config::empty();
        for (name, cidrs) in groups {
            config.security_groups.push(SecurityGroup {
                name: name.to_string(),
                description: None,
                ingress: cidrs
                    .iter()
                    .map(|c| IngressRule {
                        cidr: c.parse().expect("test cidr"),
                        description: None,
                    })
                    .collect(),
            });
        }
        config
    }

    fn listener(groups: &[&str]) -> Listener {
        Listener {
            name: "l".into(),
            bind: "127.0.0.1:1".parse().expect("addr"),
            protocol: sumun_config::Protocol::Tcp,
            target_group: "tg".into(),
            security_groups: groups.iter().map(|s| s.to_string()).collect(),
            tls: sumun_config::TlsMode::Off,
            tls_config: None,
            proxy_protocol: sumun_config::ProxyProtocolMode::Off,
            trusted_proxies: vec![],
            idle_timeout: std::time::Duration::from_secs(350),
            handshake_timeout: std::time::Duration::from_secs(10),
            max_connections: 100,
            pool: sumun_config::PoolSettings::default(),
            read_write_split: false,
            max_replica_lag: std::time::Duration::from_secs(10),
            audit_queries: sumun_config::QueryAudit::Masked,
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn decision_table() {
        let config = config_with(&[
            ("app", &["10.0.0.0/16", "127.0.0.1/32"]),
            ("ops", &["192.168.1.0/24", "2001:db8::/32"]),
            ("empty", &[]),
        ]);
        let cases: &[(&[&str], &str, Option<&str>, Option<DenyReason>)] = &[
            (&["app"], "10.0.3.4", Some("app"), None),
            (&["app"], "10.1.0.1", None, Some(DenyReason::NoMatchingRule)),
            (&["app"], "127.0.0.1", Some("app"), None),
            (
                &["app"],
                "127.0.0.2",
                None,
                Some(DenyReason::NoMatchingRule),
            ),
            (&["app"], "::ffff:127.0.0.1", Some("app"), None),
            (&["app", "ops"], "192.168.1.77", Some("ops"), None),
            (&["app", "ops"], "2001:db8::1", Some("ops"), None),
            (
                &["ops"],
                "2001:db9::1",
                None,
                Some(DenyReason::NoMatchingRule),
            ),
            (
                &["empty"],
                "10.0.0.1",
                None,
                Some(DenyReason::NoMatchingRule),
            ),
            (&[], "10.0.0.1", None, Some(DenyReason::NoSecurityGroup)),
        ];
        for (groups, ip, allowed_by, denied) in cases {
            let policy = SecurityPolicy::for_listener(&config, &listener(groups));
            let ip: IpAddr = ip.parse().expect("test ip");
            let decision = policy.decide(ip);
            match (allowed_by, denied) {
                (Some(group), None) => {
                    assert!(
                        matches!(&decision, Decision::Allowed(a) if a.security_group == *group),
                        "{groups:?} {ip}: {decision:?}"
                    );
                    assert!(policy.admits(ip));
                }
                (None, Some(reason)) => {
                    assert_eq!(
                        decision,
                        Decision::Denied(Denied { reason: *reason }),
                        "{groups:?} {ip}"
                    );
                    assert!(!policy.admits(ip));
                }
                _ => unreachable!(),
            }
        }
    }
}
