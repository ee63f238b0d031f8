//! `explain`: would Sumun let SRC reach DST:PORT, and if not, every reason why — from the
//! config alone, with the same security-group decision the gateway makes
//! ([`sumun_policy::SecurityPolicy`]).
//!
//! The AWS side (security groups, NACLs, route tables, transit gateways from `describe-*`
//! dumps) is walked by [`crate::aws`].

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::Serialize;
use sumun_config::{Config, Listener, ProxyProtocolMode};
use sumun_policy::{canonical, Decision, DenyReason, SecurityPolicy};

/// How many refusing rules are listed as the nearest.
pub const NEAREST: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    pub security_group: String,
    pub cidr: IpNet,
    pub description: Option<String>,
    /// Leading bits the rule's network shares with the source (for the nearest rules).
    pub common_bits: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub port: u16,
    pub admitted: bool,
    /// The listener that would take the connection.
    pub listener: Option<String>,
    pub listener_bind: Option<SocketAddr>,
    pub listener_protocol: Option<String>,
    /// The rule that admits the source.
    pub admitted_by: Option<RuleRef>,
    /// Every reason the connection is refused (empty when admitted).
    pub reasons: Vec<String>,
    /// Refusing rules closest to the source, or other listeners near DST:PORT.
    pub nearest: Vec<RuleRef>,
    pub nearest_listeners: Vec<String>,
    /// Things worth knowing that do not decide (PROXY protocol, login still to come).
    pub notes: Vec<String>,
}

fn listens_on(l: &Listener, dst: IpAddr, port: u16) -> bool {
    let bind = l.bind;
    if bind.port() != port {
        return false;
    }
    let ip = canonical(bind.ip());
    ip == canonical(dst)
        || (ip.is_unspecified() && (ip.is_ipv6() || dst.is_ipv4() || canonical(dst).is_ipv4()))
}

fn common_bits(a: IpAddr, net: &IpNet) -> u8 {
    match (a, net.network()) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u32::from(a) ^ u32::from(n)).leading_zeros() as u8,
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a) ^ u128::from(n)).leading_zeros() as u8,
        _ => 0,
    }
}

/// Explains a connection from `src` to `dst:port` under `config`.
pub fn explain(config: &Config, src: IpAddr, dst: IpAddr, port: u16) -> Explanation {
    let src = canonical(src);
    let mut ex = Explanation {
        src,
        dst,
        port,
        admitted: false,
        listener: None,
        listener_bind: None,
        listener_protocol: None,
        admitted_by: None,
        reasons: Vec::new(),
        nearest: Vec::new(),
        nearest_listeners: Vec::new(),
        notes: Vec::new(),
    };
    // A listener bound to the exact address wins over a wildcard one, as in the kernel.
    let mut candidates: Vec<&Listener> = config
        .listeners
        .iter()
        .filter(|l| listens_on(l, dst, port))
        .collect();
    candidates.sort_by_key(|l| l.bind.ip().is_unspecified());
    let Some(listener) = candidates.first() else {
        ex.reasons
            .push(format!("no listener on {}", SocketAddr::new(dst, port)));
        ex.nearest_listeners = config
            .listeners
            .iter()
            .filter(|l| l.bind.port() == port || canonical(l.bind.ip()) == canonical(dst))
            .map(|l| format!("{} ({}, {})", l.name, l.bind, l.protocol.as_str()))
            .collect();
        return ex;
    };
    ex.listener = Some(listener.name.clone());
    ex.listener_bind = Some(listener.bind);
    ex.listener_protocol = Some(listener.protocol.as_str().to_string());
    if listener.proxy_protocol == ProxyProtocolMode::Accept {
        ex.notes.push(format!(
            "listener '{}' reads a PROXY header: the source decided on is the one the header \
             names, and only from trusted proxies",
            listener.name
        ));
    }
    let policy = SecurityPolicy::for_listener(config, listener);
    match policy.decide(src) {
        Decision::Allowed(a) => {
            ex.admitted = true;
            let description = config
                .security_group(&a.security_group)
                .and_then(|g| g.ingress.iter().find(|r| r.cidr == a.cidr))
                .and_then(|r| r.description.clone());
            ex.admitted_by = Some(RuleRef {
                security_group: a.security_group,
                cidr: a.cidr,
                description,
                common_bits: common_bits(src, &a.cidr),
            });
            if listener.protocol.as_str() == "postgres" {
                ex.notes.push(
                    "the client must still log in (token, password or certificate) as a \
                     configured user"
                        .into(),
                );
            }
        }
        Decision::Denied(d) => match d.reason {
            DenyReason::NoSecurityGroup => ex.reasons.push(format!(
                "listener '{}' has no security group: nobody may enter (default deny)",
                listener.name
            )),
            DenyReason::NoMatchingRule => {
                ex.reasons.push(format!(
                    "no rule of the security groups of listener '{}' ({}) admits {src}",
                    listener.name,
                    listener.security_groups.join(", ")
                ));
                let mut rules: Vec<RuleRef> = listener
                    .security_groups
                    .iter()
                    .filter_map(|name| config.security_group(name))
                    .flat_map(|g| {
                        g.ingress.iter().map(|r| RuleRef {
                            security_group: g.name.clone(),
                            cidr: r.cidr,
                            description: r.description.clone(),
                            common_bits: common_bits(src, &r.cidr),
                        })
                    })
                    .collect();
                rules.sort_by_key(|r| std::cmp::Reverse(r.common_bits));
                rules.truncate(NEAREST);
                ex.nearest = rules;
            }
        },
    }
    ex
}
