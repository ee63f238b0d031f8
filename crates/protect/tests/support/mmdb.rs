//! A minimal MaxMind DB writer for tests: an IPv4 database (24-bit records) mapping networks to
//! `{"country": {"iso_code": CODE}}`, written from the public format specification (binary
//! search tree, 16-byte separator, data section, metadata marker and map). Enough for geo
//! rules to be tested against a real `.mmdb` without shipping a vendor database.

#![allow(dead_code)]

use std::net::Ipv4Addr;

#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

/// Build a database placing each `(network, prefix length)` in `country`.
pub fn country_db(entries: &[(Ipv4Addr, u8, &str)]) -> Vec<u8> {
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    let mut data = Vec::new();
    for (net, len, code) in entries {
        let offset = data.len();
        map(&mut data, 1);
        string(&mut data, "country");
        map(&mut data, 1);
        string(&mut data, "iso_code");
        string(&mut data, code);
        let bits = u32::from(*net);
        let mut node = 0usize;
        for i in 0..*len {
            let bit = ((bits >> (31 - i)) & 1) as usize;
            if i + 1 == *len {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for node in &nodes {
        for rec in node {
            let v = match rec {
                Rec::Empty => count,
                Rec::Node(n) => *n,
                Rec::Data(off) => count + 16 + off,
            } as u32;
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    map(&mut out, 9);
    string(&mut out, "node_count");
    uint(&mut out, 6, count as u64);
    string(&mut out, "record_size");
    uint(&mut out, 5, 24);
    string(&mut out, "ip_version");
    uint(&mut out, 5, 4);
    string(&mut out, "database_type");
    string(&mut out, "Sumun-Test-Country");
    string(&mut out, "languages");
    array(&mut out, 1);
    string(&mut out, "en");
    string(&mut out, "binary_format_major_version");
    uint(&mut out, 5, 2);
    string(&mut out, "binary_format_minor_version");
    uint(&mut out, 5, 0);
    string(&mut out, "build_epoch");
    uint(&mut out, 9, 1_700_000_000);
    string(&mut out, "description");
    map(&mut out, 1);
    string(&mut out, "en");
    string(&mut out, "test database");
    out
}

/// A control byte (and extended type byte) for `kind` with `size` (< 29).
fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    assert!(size < 29, "test writer handles small sizes only");
    if kind <= 7 {
        out.push((kind << 5) | size as u8);
    } else {
        out.push(size as u8);
        out.push(kind - 7);
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    control(out, 2, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn map(out: &mut Vec<u8>, pairs: usize) {
    control(out, 7, pairs);
}

fn array(out: &mut Vec<u8>, items: usize) {
    control(out, 11, items);
}

/// An unsigned integer of type `kind` (5 = uint16, 6 = uint32, 9 = uint64), minimal bytes.
fn uint(out: &mut Vec<u8>, kind: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}
