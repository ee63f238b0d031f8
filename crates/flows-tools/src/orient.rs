//! Which end of a flow record is the server. A flow log line is written from an interface's
//! point of view, so the reply half of a connection appears with source and destination
//! swapped (`10.0.20.10 5432 -> 10.0.1.7 51544`); rules and hunts need the connection's
//! direction, not the line's.
//!
//! The evidence, in order of trust: `tcp-flags` when the format has it (a SYN alone is sent by
//! the client, a SYN-ACK by the server); a well-known or database port facing an ephemeral one;
//! then fan-in (the endpoint that many peers reach is the server), which needs the whole log
//! and so is done by the caller with [`FanIn`]; last, the lower port.

use std::collections::HashMap;
use std::net::IpAddr;

use sumun_flows::{Action, Flow};

/// Ports that are servers even though they are above 1023.
pub const SERVICE_PORTS: &[u16] = &[
    1433, 1521, 2049, 2379, 3000, 3306, 3389, 5000, 5432, 5672, 5900, 5984, 6379, 6443, 7000, 8000,
    8080, 8443, 8888, 9000, 9042, 9092, 9200, 9300, 11211, 15672, 27017,
];

/// The ports `hunt` treats as databases (SQL Server, Oracle, MySQL, PostgreSQL, Redis,
/// Elasticsearch, MongoDB).
pub const DB_PORTS: &[u16] = &[1433, 1521, 3306, 5432, 6379, 9200, 27017];

pub fn is_service_port(port: u16) -> bool {
    port != 0 && (port < 1024 || SERVICE_PORTS.contains(&port))
}

/// A connection as the client opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub client: IpAddr,
    pub server: IpAddr,
    pub client_port: u16,
    pub port: u16,
    pub protocol: u8,
    pub packets: u64,
    pub bytes: u64,
    pub start: u64,
    pub end: u64,
    pub action: Action,
}

/// How a record's direction was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    /// The record's source is the client.
    Forward,
    /// The record's source is the server (a reply).
    Reverse,
    /// The evidence in the record alone does not say.
    Unknown,
}

/// The addresses to use: `pkt-srcaddr`/`pkt-dstaddr` when the format has them (behind a NAT
/// gateway or a load balancer, `srcaddr` is the middlebox's interface), else the record's own.
pub fn addresses(flow: &Flow) -> (IpAddr, IpAddr) {
    let pick = |name: &str, fallback: IpAddr| {
        flow.extra(name)
            .filter(|v| *v != "-")
            .and_then(|v| v.parse().ok())
            .unwrap_or(fallback)
    };
    (
        pick("pkt-srcaddr", flow.record.srcaddr),
        pick("pkt-dstaddr", flow.record.dstaddr),
    )
}

/// The direction from the record alone: tcp-flags, then service port against ephemeral port.
pub fn orient(flow: &Flow) -> Orientation {
    let r = &flow.record;
    if r.protocol == 6 {
        if let Some(flags) = flow.extra("tcp-flags").and_then(|v| v.parse::<u16>().ok()) {
            // AWS reports only SYN (2), SYN-ACK (18), FIN (1) and RST (4), OR-ed over the
            // interval; ACK appears only as part of SYN-ACK.
            if flags & 0x12 == 0x12 {
                return Orientation::Reverse;
            }
            if flags & 0x02 == 0x02 {
                return Orientation::Forward;
            }
        }
    }
    if r.protocol != 6 && r.protocol != 17 {
        return Orientation::Forward;
    }
    match (is_service_port(r.srcport), is_service_port(r.dstport)) {
        (false, true) => Orientation::Forward,
        (true, false) => Orientation::Reverse,
        (true, true) if r.srcport != r.dstport => {
            // Both well known (e.g. 443 -> 3306): the lower one is more likely the service.
            if r.dstport < 1024 || (r.srcport >= 1024 && r.dstport < r.srcport) {
                Orientation::Forward
            } else {
                Orientation::Reverse
            }
        }
        _ => Orientation::Unknown,
    }
}

/// The connection with a decided direction.
pub fn conn(flow: &Flow, orientation: Orientation) -> Conn {
    let r = &flow.record;
    let (src, dst) = addresses(flow);
    let forward = Conn {
        client: src,
        server: dst,
        client_port: r.srcport,
        port: r.dstport,
        protocol: r.protocol,
        packets: r.packets,
        bytes: r.bytes,
        start: r.start,
        end: r.end,
        action: r.action,
    };
    match orientation {
        Orientation::Reverse => Conn {
            client: dst,
            server: src,
            client_port: r.dstport,
            port: r.srcport,
            ..forward
        },
        _ => forward,
    }
}

/// Fan-in counts for records [`orient`] could not decide: how many records reach each
/// (address, port, protocol) endpoint. An endpoint reached much more often than its peer is
/// the server; with no clear difference the lower port is.
#[derive(Debug, Default)]
pub struct FanIn {
    counts: HashMap<(IpAddr, u16, u8), u32>,
}

impl FanIn {
    pub fn add(&mut self, flow: &Flow) {
        let r = &flow.record;
        let (src, dst) = addresses(flow);
        *self.counts.entry((src, r.srcport, r.protocol)).or_default() += 1;
        *self.counts.entry((dst, r.dstport, r.protocol)).or_default() += 1;
    }

    pub fn decide(&self, flow: &Flow) -> Orientation {
        let r = &flow.record;
        let (src, dst) = addresses(flow);
        let get = |k| self.counts.get(&k).copied().unwrap_or(0);
        let s = get((src, r.srcport, r.protocol));
        let d = get((dst, r.dstport, r.protocol));
        let dst_is_server = d >= 3 && d >= 2 * s;
        let src_is_server = s >= 3 && s >= 2 * d;
        if src_is_server || (!dst_is_server && r.srcport < r.dstport) {
            Orientation::Reverse
        } else {
            Orientation::Forward
        }
    }
}

/// Whether a record is, from its ports alone, a server's reply (service port to ephemeral port):
/// hunts skip these so a busy server's replies never look like a scan of its clients.
pub fn is_reply(flow: &Flow) -> bool {
    orient(flow) == Orientation::Reverse
}

/// Addresses that do not route on the internet: private, shared (CGNAT), loopback, link-local,
/// multicast, unspecified, and their IPv6 counterparts (ULA, link-local). Documentation ranges
/// (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) count as public, so examples
/// behave like the internet they stand for.
pub fn is_public(addr: IpAddr) -> bool {
    match sumun_policy::canonical(addr) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}
