//! Address sets as sorted, merged ranges (one binary search a lookup, whatever the set's size),
//! and the door's explicit rules: deny sets, allow sets, countries.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::geo::GeoDb;

/// A set of addresses. IPv4 is kept in the IPv4-mapped IPv6 range, so one list serves both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    ranges: Vec<(u128, u128)>,
}

fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6),
        },
    }
}

fn range(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            u128::from(n.network().to_ipv6_mapped()),
            u128::from(n.broadcast().to_ipv6_mapped()),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

impl IpSet {
    pub fn new<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> IpSet {
        let mut ranges: Vec<(u128, u128)> = nets.into_iter().map(range).collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        IpSet { ranges: merged }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let k = key(ip);
        let i = self.ranges.partition_point(|(lo, _)| *lo <= k);
        i > 0 && self.ranges[i - 1].1 >= k
    }

    /// Ranges held (after merging).
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// Why the door's rules refuse an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleDenial {
    /// In deny set `0`.
    DenySet(String),
    /// In none of the allow sets.
    NotAllowed,
    /// Placed in a denied country (or, with an allow list, in none allowed; `None` when the
    /// database does not place it).
    Country(Option<String>),
}

impl RuleDenial {
    /// The `reason` label of refusals (`sumun_rejected_flows_total`, `connection.rejected`).
    pub fn reason(&self) -> &'static str {
        match self {
            RuleDenial::DenySet(_) | RuleDenial::NotAllowed => "ip_set",
            RuleDenial::Country(_) => "geo",
        }
    }
}

/// The explicit rules checked for every connection before anything else.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub deny: Vec<(String, Arc<IpSet>)>,
    /// When not empty, an address must be in one of these.
    pub allow: Vec<(String, Arc<IpSet>)>,
    pub geo: Option<Arc<GeoDb>>,
    pub deny_countries: Vec<String>,
    /// When not empty, an address must be placed in one of these.
    pub allow_countries: Vec<String>,
}

impl Rules {
    pub fn check(&self, ip: IpAddr) -> Result<(), RuleDenial> {
        if let Some((name, _)) = self.deny.iter().find(|(_, s)| s.contains(ip)) {
            return Err(RuleDenial::DenySet(name.clone()));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|(_, s)| s.contains(ip)) {
            return Err(RuleDenial::NotAllowed);
        }
        if let Some(geo) = &self.geo {
            if self.deny_countries.is_empty() && self.allow_countries.is_empty() {
                return Ok(());
            }
            let country = geo.country(ip);
            let denied = match &country {
                Some(c) => {
                    self.deny_countries.iter().any(|d| d == c)
                        || (!self.allow_countries.is_empty()
                            && !self.allow_countries.iter().any(|a| a == c))
                }
                None => !self.allow_countries.is_empty(),
            };
            if denied {
                return Err(RuleDenial::Country(country));
            }
        }
        Ok(())
    }
}

/// `ip` with an IPv4-mapped IPv6 address written as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> IpSet {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().expect("net")).collect();
        IpSet::new(&nets)
    }

    #[test]
    fn membership_over_merged_ranges() {
        let s = set(&["10.0.0.0/8", "10.1.0.0/16", "192.0.2.7/32", "2001:db8::/32"]);
        assert_eq!(s.len(), 3);
        for yes in ["10.200.1.1", "192.0.2.7", "2001:db8::1", "::ffff:10.0.0.1"] {
            assert!(s.contains(yes.parse().expect("ip")), "{yes}");
        }
        for no in [
            "11.0.0.0",
            "192.0.2.8",
            "2001:db9::1",
            "9.255.255.255",
            "::",
        ] {
            assert!(!s.contains(no.parse().expect("ip")), "{no}");
        }
        assert!(!IpSet::default().contains("1.2.3.4".parse().expect("ip")));
    }

    #[test]
    fn deny_then_allow() {
        let rules = Rules {
            deny: vec![("bad".into(), Arc::new(set(&["10.0.0.5/32"])))],
            allow: vec![("office".into(), Arc::new(set(&["10.0.0.0/24"])))],
            ..Rules::default()
        };
        assert_eq!(
            rules.check("10.0.0.5".parse().expect("ip")),
            Err(RuleDenial::DenySet("bad".into()))
        );
        assert_eq!(rules.check("10.0.0.6".parse().expect("ip")), Ok(()));
        assert_eq!(
            rules.check("10.0.1.6".parse().expect("ip")),
            Err(RuleDenial::NotAllowed)
        );
    }
}
