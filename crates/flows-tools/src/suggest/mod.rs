//! `suggest`: least-privilege inbound rules from observed traffic.
//!
//! 1. Accepted records are turned into connections (client, server, protocol, port) with
//!    [`crate::orient`]; rejected ones never become rules.
//! 2. Per destination (a host, or a group of hosts the user names), ports reached by exactly the
//!    same set of clients form one rule set, their ports merged into ranges where they touch.
//! 3. Each rule set's clients, per address family, get a cost curve from [`cover::Cover`]: the
//!    fewest never-seen addresses that at most K blocks must admit to cover every client.
//! 4. A multiple-choice knapsack splits the destination's rule budget (`--sg-limit`, counted for
//!    IPv4 and IPv6 separately as AWS does) across its rule sets: a block costs one rule per port
//!    range of its set, and the total over-permission is minimised. Both steps are exact.
//! 5. If even one block per set does not fit, the sets are merged into one whose ports are
//!    widened to fit (reported as `ports_widened`), which still admits every observed flow.
//! 6. For network ACLs ([`plan_nacl`]) the same plan is made under the ACL quota with deny
//!    rules too ([`carve::Carve`]: ordered allow and deny rules, holes carved out of blocks), and
//!    outbound rules for the replies (to each allowed client block, on the ephemeral ports) are
//!    added: ACLs are stateless.

pub mod carve;
pub mod cover;
pub mod output;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;
use sumun_flows::{Action, Flow, LogStatus};

use crate::orient::{self, FanIn, Orientation};
pub use cover::{Cover, Family};

/// AWS's default quota of inbound rules per security group (per address family).
pub const DEFAULT_SG_LIMIT: usize = 60;
/// AWS's default quota of inbound (and of outbound) rules per network ACL.
pub const DEFAULT_NACL_LIMIT: usize = 20;

/// A named group of destination hosts that share one security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestGroup {
    pub name: String,
    pub cidrs: Vec<IpNet>,
}

impl DestGroup {
    /// Reads `NAME=CIDR[,CIDR...]`.
    pub fn parse(text: &str) -> Result<DestGroup, String> {
        let (name, cidrs) = text
            .split_once('=')
            .ok_or_else(|| format!("group '{text}': expected NAME=CIDR[,CIDR...]"))?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(format!(
                "group name '{name}' may contain only letters, digits, '_', '.' and '-'"
            ));
        }
        let cidrs = cidrs
            .split(',')
            .map(|c| parse_cidr(c.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DestGroup {
            name: name.to_string(),
            cidrs,
        })
    }
}

/// A CIDR, or a bare address as its /32 or /128.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("invalid CIDR '{text}'"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Dest {
    Host(IpAddr),
    Group(usize),
}

/// Collects accepted connections from flows.
#[derive(Debug, Default)]
pub struct Observed {
    groups: Vec<DestGroup>,
    /// When not empty, only servers inside these networks get rules (your own network: the
    /// internet servers your hosts call are destinations too).
    only: Vec<IpNet>,
    seen: HashMap<(Dest, u8, u16), Clients>,
    /// The lowest client port seen per destination: network ACLs must let replies back to it.
    lowest_client_port: HashMap<Dest, u16>,
    /// Records the record alone could not orient, decided at the end by fan-in.
    pending: Vec<Flow>,
    fan_in: FanIn,
    /// Accepted connections counted.
    pub connections: u64,
}

impl Observed {
    pub fn new(groups: Vec<DestGroup>) -> Observed {
        Observed {
            groups,
            ..Observed::default()
        }
    }

    /// Keeps only connections to servers inside `networks` (all when empty).
    pub fn only_destinations(mut self, networks: Vec<IpNet>) -> Observed {
        self.only = networks;
        self
    }

    pub fn add(&mut self, flow: &Flow) {
        let r = &flow.record;
        if r.log_status != LogStatus::Ok || r.action != Action::Accept {
            return;
        }
        match orient::orient(flow) {
            Orientation::Unknown => {
                self.fan_in.add(flow);
                // Only the fields a connection needs; extra fields are dropped to save memory.
                let (src, dst) = orient::addresses(flow);
                let mut record = flow.record.clone();
                record.srcaddr = src;
                record.dstaddr = dst;
                self.pending.push(Flow {
                    record,
                    extra: BTreeMap::new(),
                });
            }
            o => self.insert(orient::conn(flow, o)),
        }
    }

    fn dest(&self, server: IpAddr) -> Dest {
        match self
            .groups
            .iter()
            .position(|g| g.cidrs.iter().any(|c| c.contains(&server)))
        {
            Some(i) => Dest::Group(i),
            None => Dest::Host(server),
        }
    }

    fn insert(&mut self, c: orient::Conn) {
        let client = sumun_policy::canonical(c.client);
        let server = sumun_policy::canonical(c.server);
        if !self.only.is_empty() && !self.only.iter().any(|n| n.contains(&server)) {
            return;
        }
        let port = if has_ports(c.protocol) { c.port } else { 0 };
        let dest = self.dest(server);
        self.connections += 1;
        if has_ports(c.protocol) {
            let low = self.lowest_client_port.entry(dest).or_insert(u16::MAX);
            *low = (*low).min(c.client_port);
        }
        self.seen
            .entry((dest, c.protocol, port))
            .or_default()
            .push(client);
    }

    /// Orients the undecided records by fan-in.
    fn settle(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for flow in &pending {
            let o = self.fan_in.decide(flow);
            self.insert(orient::conn(flow, o));
        }
    }
}

/// The clients of one (destination, protocol, port): appended as seen and made distinct by
/// sorting now and then, which is cheaper than hashing every one of millions of records.
#[derive(Debug, Default)]
struct Clients {
    addrs: Vec<IpAddr>,
    /// Length after the last compaction: the next one runs when the list has doubled.
    distinct: usize,
}

impl Clients {
    fn push(&mut self, addr: IpAddr) {
        self.addrs.push(addr);
        if self.addrs.len() >= 2 * self.distinct.max(1024) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        self.addrs.sort_unstable();
        self.addrs.dedup();
        self.distinct = self.addrs.len();
    }

    /// The distinct clients, sorted.
    fn into_sorted(mut self) -> Vec<IpAddr> {
        self.compact();
        self.addrs
    }
}

fn has_ports(protocol: u8) -> bool {
    protocol == 6 || protocol == 17
}

pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// A planned rule set: one protocol, some port ranges, the blocks admitted to all of them.
#[derive(Debug, Clone, Serialize)]
pub struct RuleSet {
    pub protocol: u8,
    /// Inclusive port ranges; empty for protocols without ports (all of the protocol).
    pub ports: Vec<(u16, u16)>,
    pub family: Family,
    /// Distinct clients observed.
    pub observed: usize,
    /// Blocks admitted.
    pub cidrs: Vec<IpNet>,
    /// Network ACLs: blocks denied, carved out of the admitted ones (an ACL numbers every rule
    /// of a set from the longest prefix to the shortest, so the closest block decides).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub denies: Vec<IpNet>,
    /// Rules this set uses: blocks (admitted and denied) × port ranges.
    pub rules: usize,
    /// Rules an exact cover (no address never seen) would need.
    pub exact_rules: usize,
    /// Addresses admitted but never observed.
    pub over_permission: u128,
}

impl RuleSet {
    pub fn admits(&self, protocol: u8, port: u16, client: IpAddr) -> bool {
        self.protocol == protocol
            && (self.ports.is_empty() || self.ports.iter().any(|&(a, b)| a <= port && port <= b))
            && self
                .ordered()
                .iter()
                .find(|(net, _)| net.contains(&client))
                .is_some_and(|(_, allow)| *allow)
    }

    /// The set's blocks with allow (true) or deny, in the order a network ACL must number
    /// them: longest prefix first, so that the first match is the closest block.
    pub fn ordered(&self) -> Vec<(IpNet, bool)> {
        let mut v: Vec<(IpNet, bool)> = self
            .denies
            .iter()
            .map(|n| (*n, false))
            .chain(self.cidrs.iter().map(|n| (*n, true)))
            .collect();
        v.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()).then(a.0.cmp(&b.0)));
        v
    }
}

/// The plan for one destination: a security group's worth of rules.
#[derive(Debug, Clone, Serialize)]
pub struct DestPlan {
    /// The host address, or the group name.
    pub name: String,
    /// For a group: its CIDRs; for a host: its address.
    pub members: Vec<IpNet>,
    pub rule_sets: Vec<RuleSet>,
    pub rules_v4: usize,
    pub rules_v6: usize,
    /// Rule sets were merged and their ports widened to fit the budget.
    pub ports_widened: bool,
    /// Network ACLs only: outbound allow rules for the replies — to each client block, from
    /// the server ports, on the client ports (`return_ports`).
    pub return_rules: Vec<ReturnRule>,
}

/// An outbound network ACL rule letting replies reach clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReturnRule {
    pub protocol: u8,
    pub cidr: IpNet,
    /// Client ports: 1024-65535 (the ephemeral range AWS recommends), widened down to the
    /// lowest client port observed.
    pub ports: Option<(u16, u16)>,
}

impl DestPlan {
    pub fn admits(&self, client: IpAddr, protocol: u8, port: u16) -> bool {
        let client = sumun_policy::canonical(client);
        self.rule_sets
            .iter()
            .any(|s| s.admits(protocol, port, client))
    }
}

/// What the rules are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Security-group inbound rules (stateful: replies need no rule).
    SecurityGroup,
    /// Network ACL inbound allow rules, plus outbound rules for the replies (stateless).
    NetworkAcl,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub kind: RuleKind,
    /// The rule budget per destination and address family (per direction for network ACLs).
    pub limit: usize,
    pub connections: u64,
    pub destinations: Vec<DestPlan>,
}

impl Plan {
    /// The destination plan whose members include `server`.
    pub fn destination(&self, server: IpAddr) -> Option<&DestPlan> {
        let server = sumun_policy::canonical(server);
        self.destinations
            .iter()
            .find(|d| d.members.iter().any(|m| m.contains(&server)))
    }

    /// Network ACLs: whether the reply from `server` reaches `client:client_port`.
    pub fn admits_reply(
        &self,
        server: IpAddr,
        client: IpAddr,
        protocol: u8,
        client_port: u16,
    ) -> bool {
        let client = sumun_policy::canonical(client);
        self.destination(server).is_some_and(|d| {
            d.return_rules.iter().any(|r| {
                r.protocol == protocol
                    && r.cidr.contains(&client)
                    && r.ports
                        .is_none_or(|(a, b)| a <= client_port && client_port <= b)
            })
        })
    }

    /// Whether the plan lets `client` reach `server:port`.
    pub fn admits(&self, client: IpAddr, server: IpAddr, protocol: u8, port: u16) -> bool {
        let port = if has_ports(protocol) { port } else { 0 };
        self.destination(server)
            .is_some_and(|d| d.admits(client, protocol, port))
    }
}

fn to_bits(addr: IpAddr) -> (Family, u128) {
    match addr {
        IpAddr::V4(a) => (Family::V4, u128::from(u32::from(a))),
        IpAddr::V6(a) => (Family::V6, u128::from(a)),
    }
}

fn to_net(family: Family, (bits, plen): cover::Prefix) -> IpNet {
    match family {
        Family::V4 => {
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(bits as u32), plen).unwrap_or_default())
        }
        Family::V6 => IpNet::V6(Ipv6Net::new(Ipv6Addr::from(bits), plen).unwrap_or_default()),
    }
}

/// Contiguous ports as inclusive ranges.
fn ranges(ports: &[u16]) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &p in ports {
        match out.last_mut() {
            Some((_, hi)) if u32::from(*hi) + 1 == u32::from(p) => *hi = p,
            _ => out.push((p, p)),
        }
    }
    out
}

/// Merges the closest ranges until at most `n` remain.
fn widen(mut r: Vec<(u16, u16)>, n: usize) -> Vec<(u16, u16)> {
    while r.len() > n.max(1) {
        let Some(i) = (0..r.len() - 1).min_by_key(|&i| r[i + 1].0 - r[i].1) else {
            break;
        };
        r[i].1 = r[i + 1].1;
        r.remove(i + 1);
    }
    r
}

/// One knapsack item: a rule set's clients of one family.
struct Item {
    protocol: u8,
    ports: Vec<(u16, u16)>,
    cover: Cover,
    /// Network ACLs: the plan with deny rules too.
    carve: Option<carve::Carve>,
}

impl Item {
    fn new(
        protocol: u8,
        ports: Vec<(u16, u16)>,
        addrs: Vec<u128>,
        family: Family,
        budget: usize,
        kind: RuleKind,
    ) -> Item {
        let kmax = (budget / ports.len().max(1)).max(1);
        let carve = (kind == RuleKind::NetworkAcl)
            .then(|| carve::Carve::solve(addrs.clone(), family, kmax));
        Item {
            protocol,
            cover: Cover::solve(addrs, family, kmax),
            carve,
            ports,
        }
    }

    fn weight(&self) -> usize {
        self.ports.len().max(1)
    }

    /// Never-seen addresses admitted with at most `k` blocks (rules per port range).
    fn over(&self, k: usize) -> u128 {
        match &self.carve {
            Some(c) => c.over(k).min(self.cover.over(k)),
            None => self.cover.over(k),
        }
    }

    /// Blocks admitted and blocks denied with at most `k` rules per port range.
    fn blocks(&self, k: usize, family: Family) -> (Vec<IpNet>, Vec<IpNet>) {
        match &self.carve {
            Some(c) if c.over(k) < self.cover.over(k) => {
                let (mut allow, mut deny) = (Vec::new(), Vec::new());
                for (b, a) in c.rules(k) {
                    if a {
                        allow.push(to_net(family, b));
                    } else {
                        deny.push(to_net(family, b));
                    }
                }
                allow.sort();
                deny.sort();
                (allow, deny)
            }
            _ => (
                self.cover
                    .blocks(k)
                    .into_iter()
                    .map(|b| to_net(family, b))
                    .collect(),
                Vec::new(),
            ),
        }
    }

    /// The fewest rules per port range that admit exactly the observed clients.
    fn exact(&self) -> usize {
        let plain = self.cover.exact();
        self.carve
            .as_ref()
            .and_then(|c| c.exact())
            .map_or(plain, |e| e.min(plain))
    }
}

/// Splits `budget` rules across the items, minimising total over-permission. Returns the
/// number of blocks for each item, or `None` if one block each does not fit.
pub fn split_budget(
    weights: &[usize],
    over: &[&dyn Fn(usize) -> u128],
    budget: usize,
) -> Option<Vec<usize>> {
    let m = weights.len();
    const INF: u128 = u128::MAX;
    // best[b]: least total over-permission of the items so far using at most b rules.
    let mut best = vec![0u128; budget + 1];
    let mut picks: Vec<Vec<u16>> = Vec::with_capacity(m);
    for i in 0..m {
        let w = weights[i].max(1);
        let mut next = vec![INF; budget + 1];
        let mut pick = vec![0u16; budget + 1];
        for b in 0..=budget {
            let mut k = 1;
            while k * w <= b {
                let prev = best[b - k * w];
                if prev != INF {
                    let c = prev.saturating_add(over[i](k));
                    if c < next[b] {
                        next[b] = c;
                        pick[b] = k as u16;
                    }
                }
                k += 1;
            }
        }
        best = next;
        picks.push(pick);
    }
    if best[budget] == INF {
        return None;
    }
    let mut out = vec![0; m];
    let mut b = budget;
    for i in (0..m).rev() {
        let k = usize::from(picks[i][b]);
        out[i] = k;
        b -= k * weights[i].max(1);
    }
    Some(out)
}

/// A protocol and the sorted clients that reached some ports of a destination with it.
type ClientSet = (u8, Vec<IpAddr>);

/// Reads the observed connections into a plan under `sg_limit` rules per destination and family.
pub fn plan(observed: Observed, sg_limit: usize) -> Plan {
    plan_for(observed, sg_limit, RuleKind::SecurityGroup)
}

/// Network ACL rules: the optimal ordered allow and deny rules ([`carve::Carve`]) under
/// `nacl_limit` inbound rules per destination (a subnet: name it with a group) and family, and
/// the outbound rules for the replies (allow rules to the admitted blocks: a deny there could
/// refuse the replies of another rule set, whose clients the hole may hold).
pub fn plan_nacl(observed: Observed, nacl_limit: usize) -> Plan {
    plan_for(observed, nacl_limit, RuleKind::NetworkAcl)
}

fn plan_for(mut observed: Observed, sg_limit: usize, kind: RuleKind) -> Plan {
    observed.settle();
    let sg_limit = sg_limit.max(1);
    // Destination -> (protocol, client set) -> ports.
    let mut by_dest: BTreeMap<Dest, HashMap<ClientSet, Vec<u16>>> = BTreeMap::new();
    for ((dest, protocol, port), clients) in observed.seen {
        let clients = clients.into_sorted();
        by_dest
            .entry(dest)
            .or_default()
            .entry((protocol, clients))
            .or_default()
            .push(port);
    }
    let mut destinations = Vec::new();
    for (dest, sets) in by_dest {
        let (name, members) = match dest {
            Dest::Host(ip) => (ip.to_string(), vec![IpNet::from(ip)]),
            Dest::Group(i) => (
                observed.groups[i].name.clone(),
                observed.groups[i].cidrs.clone(),
            ),
        };
        let mut sets: Vec<(ClientSet, Vec<u16>)> = sets.into_iter().collect();
        for (_, ports) in &mut sets {
            ports.sort_unstable();
        }
        // Stable order: by protocol, then first port.
        sets.sort_by(|a, b| (a.0 .0, &a.1).cmp(&(b.0 .0, &b.1)));
        let mut dp = DestPlan {
            name,
            members,
            rule_sets: Vec::new(),
            rules_v4: 0,
            rules_v6: 0,
            ports_widened: false,
            return_rules: Vec::new(),
        };
        for family in [Family::V4, Family::V6] {
            let mut items: Vec<Item> = Vec::new();
            for ((protocol, clients), ports) in &sets {
                let addrs: Vec<u128> = clients
                    .iter()
                    .map(|&c| to_bits(c))
                    .filter(|(f, _)| *f == family)
                    .map(|(_, a)| a)
                    .collect();
                if addrs.is_empty() {
                    continue;
                }
                let ports = if has_ports(*protocol) {
                    ranges(ports)
                } else {
                    Vec::new()
                };
                items.push(Item::new(*protocol, ports, addrs, family, sg_limit, kind));
            }
            if items.is_empty() {
                continue;
            }
            let weights: Vec<usize> = items.iter().map(Item::weight).collect();
            let fits = weights.iter().sum::<usize>() <= sg_limit;
            let ks = if fits {
                let overs: Vec<Box<dyn Fn(usize) -> u128>> = items
                    .iter()
                    .map(|it| Box::new(move |k: usize| it.over(k)) as Box<dyn Fn(usize) -> u128>)
                    .collect();
                let refs: Vec<&dyn Fn(usize) -> u128> = overs.iter().map(|b| b.as_ref()).collect();
                split_budget(&weights, &refs, sg_limit)
            } else {
                None
            };
            let (items, ks) = match ks {
                Some(ks) => (items, ks),
                None => {
                    // One block per set does not fit: merge the sets per protocol, with
                    // their ports widened, so that every observed flow is still admitted.
                    dp.ports_widened = true;
                    let merged = merge_items(items, family, sg_limit, kind);
                    let ks = merged
                        .iter()
                        .map(|it| (sg_limit / merged.len() / it.weight()).max(1))
                        .collect();
                    (merged, ks)
                }
            };
            for (it, k) in items.into_iter().zip(ks) {
                let (cidrs, denies) = it.blocks(k, family);
                let weight = it.weight();
                let set = RuleSet {
                    protocol: it.protocol,
                    family,
                    observed: it.cover.observed(),
                    rules: (cidrs.len() + denies.len()) * weight,
                    exact_rules: it.exact() * weight,
                    over_permission: it.over(k),
                    cidrs,
                    denies,
                    ports: it.ports,
                };
                match family {
                    Family::V4 => dp.rules_v4 += set.rules,
                    Family::V6 => dp.rules_v6 += set.rules,
                }
                dp.rule_sets.push(set);
            }
        }
        if kind == RuleKind::NetworkAcl {
            let low = observed
                .lowest_client_port
                .get(&dest)
                .copied()
                .unwrap_or(1024)
                .min(1024);
            let mut rules: Vec<ReturnRule> = Vec::new();
            for set in &dp.rule_sets {
                for cidr in &set.cidrs {
                    let rule = ReturnRule {
                        protocol: set.protocol,
                        cidr: *cidr,
                        ports: has_ports(set.protocol).then_some((low, u16::MAX)),
                    };
                    if !rules.contains(&rule) {
                        rules.push(rule);
                    }
                }
            }
            dp.return_rules = rules;
        }
        destinations.push(dp);
    }
    Plan {
        kind,
        limit: sg_limit,
        connections: observed.connections,
        destinations,
    }
}

/// The fallback when a destination has more port ranges than its budget: one set per protocol
/// (at most a few: tcp, udp, icmp), every client of it, ports widened so that the sets together
/// fit.
fn merge_items(items: Vec<Item>, family: Family, budget: usize, kind: RuleKind) -> Vec<Item> {
    let mut by_proto: BTreeMap<u8, (Vec<u16>, Vec<u128>)> = BTreeMap::new();
    for it in items {
        let e = by_proto.entry(it.protocol).or_default();
        for &(a, b) in &it.ports {
            e.0.extend(a..=b);
        }
        e.1.extend_from_slice(it.cover.addresses());
    }
    let n = by_proto.len();
    by_proto
        .into_iter()
        .map(|(protocol, (mut ports, mut addrs))| {
            ports.sort_unstable();
            ports.dedup();
            addrs.sort_unstable();
            addrs.dedup();
            let ports = if has_ports(protocol) {
                widen(ranges(&ports), (budget / n.max(1)).max(1))
            } else {
                Vec::new()
            };
            Item::new(protocol, ports, addrs, family, budget / n.max(1), kind)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_and_widening() {
        assert_eq!(
            ranges(&[80, 443, 444, 445, 8080]),
            vec![(80, 80), (443, 445), (8080, 8080)]
        );
        assert_eq!(
            widen(ranges(&[80, 443, 444, 8080]), 2),
            vec![(80, 444), (8080, 8080)]
        );
    }

    #[test]
    fn knapsack_prefers_the_cheaper_split() {
        // Item 0 gains a lot from a second block, item 1 nothing.
        let a = |k: usize| if k >= 2 { 0 } else { 1000 };
        let b = |k: usize| if k >= 2 { 5 } else { 6 };
        let got = split_budget(&[1, 1], &[&a, &b], 3).expect("fits");
        assert_eq!(got, vec![2, 1]);
        assert_eq!(split_budget(&[2, 2], &[&a, &b], 3), None);
    }
}
