//! A seeded flow-log generator for tests, benchmarks and demos. The same seed and options give
//! the same bytes. The network it describes:
//!
//! - databases 10.0.20.10:5432 (PostgreSQL), 10.0.20.11:3306 (MySQL), 10.0.20.12:6379 (Redis),
//!   a web server 10.0.10.5 (443, 80; 8080 for internal callers), DNS at 10.0.0.2:53/udp;
//! - steady clients: 40 app hosts 10.0.1.10-49 and 20 batch hosts 10.0.2.10-29, each talking to
//!   one database all day (and seen in the first ten minutes), some replies logged too;
//! - cron bursts: 10.0.3.5 and 10.0.3.6 open a burst of connections to PostgreSQL every hour;
//! - the internet: public clients of the web server (about one distinct address per eight
//!   records), three NAT'd corporate addresses with many connections each, and rejected noise
//!   on ports 22, 23 and 3389; a few NODATA and SKIPDATA records.
//!
//! With attacks on, seven events are planted, each labelled with the line numbers of its
//! records ([`PlantedEvent`]): a vertical port scan, an address sweep, brute force on MySQL,
//! exfiltration of 12 GiB, a public source reaching PostgreSQL, rejected database probes from
//! the internet, and a database client never seen before. Benign traffic stays under every
//! default `hunt` threshold, so a hunt over a benign log finds nothing.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

/// 2024-01-01T00:00:00Z.
pub const DEFAULT_START: u64 = 1_704_067_200;
pub const DAY: u64 = 86_400;
/// Fewer records than this leave no room for the planted events and the warm-up.
pub const MIN_RECORDS: u64 = 2_000;

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub seed: u64,
    pub records: u64,
    /// Unix seconds of the first record.
    pub start: u64,
    /// Seconds the log covers.
    pub span: u64,
    /// Plant the attack events.
    pub attacks: bool,
    /// Write a header line and a `tcp-flags` field (a custom format), as S3 deliveries have.
    pub tcp_flags: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            seed: 1,
            records: 100_000,
            start: DEFAULT_START,
            span: DAY,
            attacks: true,
            tcp_flags: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    PortScan,
    AddressSweep,
    BruteForce,
    Exfiltration,
    PublicDb,
    RejectedDbProbe,
    NewDbClient,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::PortScan => "port_scan",
            EventKind::AddressSweep => "address_sweep",
            EventKind::BruteForce => "brute_force",
            EventKind::Exfiltration => "exfiltration",
            EventKind::PublicDb => "public_db",
            EventKind::RejectedDbProbe => "rejected_db_probe",
            EventKind::NewDbClient => "new_db_client",
        }
    }
}

/// A planted event and the records that make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlantedEvent {
    pub kind: EventKind,
    pub src: IpAddr,
    /// The one destination, when the event has one.
    pub dst: Option<IpAddr>,
    /// The one destination port, when the event has one.
    pub port: Option<u16>,
    pub first: u64,
    pub last: u64,
    /// 1-based line numbers in the written file (a header line counts).
    pub lines: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("at least {MIN_RECORDS} records are needed (asked for {0})")]
    TooFew(u64),
    #[error("the span must be at least one hour")]
    ShortSpan,
    #[error("cannot write the flow log")]
    Io(#[from] io::Error),
}

const PG: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 0, 20, 10), 5432);
const MYSQL: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 0, 20, 11), 3306);
const REDIS: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 0, 20, 12), 6379);
const WEB: Ipv4Addr = Ipv4Addr::new(10, 0, 10, 5);
const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const NATS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(52, 78, 10, 20),
    Ipv4Addr::new(13, 124, 55, 6),
    Ipv4Addr::new(3, 35, 100, 200),
];
/// Public /12 blocks the web clients come from.
const CLIENT_BLOCKS: [u32; 8] = [
    0x51_00_00_00, // 81.0.0.0/12
    0x79_80_00_00, // 121.128.0.0/12
    0xaf_d0_00_00, // 175.208.0.0/12
    0xd3_20_00_00, // 211.32.0.0/12
    0x3a_e0_00_00, // 58.224.0.0/12
    0x6e_40_00_00, // 110.64.0.0/12
    0xdc_70_00_00, // 220.112.0.0/12
    0x25_00_00_00, // 37.0.0.0/12
];
const SCAN_PORTS: [u16; 40] = [
    21, 22, 23, 25, 53, 80, 110, 111, 135, 139, 143, 389, 443, 445, 465, 587, 636, 993, 995, 1433,
    1521, 1723, 2049, 2375, 3306, 3389, 5432, 5900, 5985, 6379, 8000, 8080, 8443, 9000, 9200, 9300,
    11211, 27017, 50000, 61616,
];

#[derive(Debug, Clone, Copy)]
struct Rec {
    src: IpAddr,
    dst: IpAddr,
    sp: u16,
    dp: u16,
    proto: u8,
    packets: u64,
    bytes: u64,
    start: u64,
    end: u64,
    reject: bool,
    /// tcp-flags as AWS ORs them over the record: 3 (SYN, FIN) from a client, 19 (SYN-ACK,
    /// FIN) from a server, 2 (SYN alone) for a refused attempt.
    flags: u16,
    /// Index into the planted events; `usize::MAX` for benign records.
    label: usize,
    /// NODATA (1) or SKIPDATA (2) instead of OK (0).
    status: u8,
}

const BENIGN: usize = usize::MAX;

/// Most connections one steady client opens in a day.
const STEADY_PER_DAY: u64 = 12_000;

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

struct Steady {
    client: Ipv4Addr,
    server: (Ipv4Addr, u16),
}

fn steady_clients() -> Vec<Steady> {
    let dbs = [PG, MYSQL, REDIS];
    let mut out = Vec::new();
    for i in 0..40u8 {
        out.push(Steady {
            client: Ipv4Addr::new(10, 0, 1, 10 + i),
            server: dbs[usize::from(i % 3)],
        });
    }
    for i in 0..20u8 {
        out.push(Steady {
            client: Ipv4Addr::new(10, 0, 2, 10 + i),
            server: PG,
        });
    }
    out
}

/// A cheap integer mix (splitmix64's finaliser) to spread client numbers over address blocks.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn web_client(k: u64) -> IpAddr {
    let h = mix(k);
    let block = CLIENT_BLOCKS[usize::try_from(k % 8).unwrap_or(0)];
    let host = u32::try_from(h & 0x000f_ffff).unwrap_or(1);
    // Avoid .0 and .255 host bytes, which look odd in examples.
    let addr = ((block | host) & !0xff) | (1 + host % 254);
    v4(Ipv4Addr::from(addr))
}

fn ephemeral(rng: &mut fastrand::Rng) -> u16 {
    rng.u16(32768..61000)
}

/// Bytes per record so that one (client, server) pair with `share` of `records` over `days`
/// stays near 1.5 GB a day, well under the 10 GB exfiltration threshold.
fn byte_cap(records: u64, share: f64, pairs: u64, days: u64) -> u64 {
    let per_pair_day = (records as f64 * share / pairs as f64 / days as f64).max(1.0);
    ((3.0e9 / per_pair_day) as u64).clamp(200, 2_000_000)
}

/// Writes a flow log to `out` and returns the planted events.
pub fn generate(opts: &GenOptions, out: &mut impl Write) -> Result<Vec<PlantedEvent>, GenError> {
    if opts.records < MIN_RECORDS {
        return Err(GenError::TooFew(opts.records));
    }
    if opts.span < 3600 {
        return Err(GenError::ShortSpan);
    }
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    let days = opts.span.div_ceil(DAY);
    let mut events = Vec::new();
    let mut scheduled = Vec::new();
    let steady = steady_clients();

    // Warm-up: every steady pair once in the first ten minutes.
    for s in &steady {
        let t = opts.start + rng.u64(0..600);
        scheduled.push(Rec {
            src: v4(s.client),
            dst: v4(s.server.0),
            sp: ephemeral(&mut rng),
            dp: s.server.1,
            proto: 6,
            packets: rng.u64(10..200),
            bytes: rng.u64(2_000..200_000),
            start: t,
            end: t + rng.u64(1..60),
            reject: false,
            flags: 3,
            label: BENIGN,
            status: 0,
        });
    }
    // Cron bursts to PostgreSQL at the top of every hour.
    let burst = (opts.records / 2_000).clamp(3, 40);
    for hour in 0..opts.span / 3600 {
        for host in [Ipv4Addr::new(10, 0, 3, 5), Ipv4Addr::new(10, 0, 3, 6)] {
            for _ in 0..burst {
                let t = opts.start + hour * 3600 + rng.u64(0..10);
                scheduled.push(Rec {
                    src: v4(host),
                    dst: v4(PG.0),
                    sp: ephemeral(&mut rng),
                    dp: PG.1,
                    proto: 6,
                    packets: rng.u64(8..60),
                    bytes: rng.u64(1_000..50_000),
                    start: t,
                    end: t + rng.u64(0..5),
                    reject: false,
                    flags: 3,
                    label: BENIGN,
                    status: 0,
                });
            }
        }
    }
    // A NODATA and a SKIPDATA record, so readers meet them in every generated log.
    for status in [1u8, 2] {
        let t = opts.start + rng.u64(0..opts.span);
        scheduled.push(Rec {
            src: v4(Ipv4Addr::UNSPECIFIED),
            dst: v4(Ipv4Addr::UNSPECIFIED),
            sp: 0,
            dp: 0,
            proto: 0,
            packets: 0,
            bytes: 0,
            start: t,
            end: t + 60,
            reject: false,
            flags: 0,
            label: BENIGN,
            status,
        });
    }
    if opts.attacks {
        plant(opts, &mut rng, &mut events, &mut scheduled);
    }
    scheduled.sort_by_key(|r| r.start);

    let benign = opts.records.saturating_sub(scheduled.len() as u64);
    // Steady clients make up to 45% of the records, but each opens at most 12,000 connections
    // a day (42 in five minutes on average, far below the brute-force threshold of 100); beyond
    // that the extra records go to the web server's internet clients.
    let steady_max = steady.len() as u64 * STEADY_PER_DAY * opts.span / DAY;
    let steady_share = ((benign as f64 * 0.45).min(steady_max as f64) / benign as f64).max(0.0);
    let steady_per_mille = (steady_share * 1000.0) as u32;
    let steady_cap = byte_cap(benign, steady_share.max(0.001), steady.len() as u64, days);
    let nat_cap = byte_cap(benign, 0.15, NATS.len() as u64, days);
    let web_pool = (opts.records / 8).max(64);

    let mut w = io::BufWriter::with_capacity(1 << 20, out);
    let mut line_no = 0u64;
    if opts.tcp_flags {
        writeln!(
            w,
            "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets \
             bytes start end action log-status tcp-flags"
        )?;
        line_no += 1;
    }
    let mut next_scheduled = 0usize;
    for i in 0..benign {
        let t = opts.start + i * opts.span / benign;
        while let Some(r) = scheduled.get(next_scheduled).filter(|r| r.start <= t) {
            line_no += 1;
            write_rec(&mut w, r, opts.tcp_flags)?;
            if let Some(e) = events.get_mut(r.label) {
                e.lines.push(line_no);
            }
            next_scheduled += 1;
        }
        let r = benign_record(
            &mut rng,
            t,
            &steady,
            steady_per_mille,
            steady_cap,
            nat_cap,
            web_pool,
        );
        line_no += 1;
        write_rec(&mut w, &r, opts.tcp_flags)?;
    }
    for r in scheduled.get(next_scheduled..).unwrap_or_default() {
        line_no += 1;
        write_rec(&mut w, r, opts.tcp_flags)?;
        if let Some(e) = events.get_mut(r.label) {
            e.lines.push(line_no);
        }
    }
    w.flush()?;
    Ok(events)
}

fn benign_record(
    rng: &mut fastrand::Rng,
    t: u64,
    steady: &[Steady],
    steady_per_mille: u32,
    steady_cap: u64,
    nat_cap: u64,
    web_pool: u64,
) -> Rec {
    let base = Rec {
        src: v4(Ipv4Addr::UNSPECIFIED),
        dst: v4(Ipv4Addr::UNSPECIFIED),
        sp: ephemeral(rng),
        dp: 0,
        proto: 6,
        packets: rng.u64(4..400),
        bytes: 0,
        start: t,
        end: t + rng.u64(0..60),
        reject: false,
        flags: 3,
        label: BENIGN,
        status: 0,
    };
    // Steady clients first (their share is set by the caller), then the other kinds in fixed
    // proportions of the rest: web clients 25, NAT'd 15, DNS 5, noise 7, internal web 3.
    let roll = if rng.u32(0..1000) < steady_per_mille {
        0
    } else {
        45 + rng.u32(0..55)
    };
    match roll {
        0..45 => {
            let s = &steady[rng.usize(0..steady.len())];
            let r = Rec {
                src: v4(s.client),
                dst: v4(s.server.0),
                dp: s.server.1,
                bytes: rng.u64(100..steady_cap),
                ..base
            };
            if rng.u32(0..10) == 0 {
                // The server's interface logs the reply half too.
                Rec {
                    src: r.dst,
                    dst: r.src,
                    sp: r.dp,
                    dp: r.sp,
                    flags: 19,
                    ..r
                }
            } else {
                r
            }
        }
        45..70 => Rec {
            src: web_client(rng.u64(0..web_pool)),
            dst: v4(WEB),
            dp: if rng.u32(0..10) == 0 { 80 } else { 443 },
            bytes: rng.u64(300..200_000),
            ..base
        },
        70..85 => Rec {
            src: v4(NATS[rng.usize(0..NATS.len())]),
            dst: v4(WEB),
            dp: 443,
            bytes: rng.u64(300..nat_cap),
            ..base
        },
        85..90 => Rec {
            src: v4(steady[rng.usize(0..steady.len())].client),
            dst: v4(DNS),
            dp: 53,
            proto: 17,
            packets: rng.u64(1..4),
            bytes: rng.u64(60..600),
            flags: 0,
            ..base
        },
        90..97 => Rec {
            src: web_client(rng.u64(0..u64::MAX)),
            dst: v4(WEB),
            dp: [22, 23, 3389][rng.usize(0..3)],
            packets: 1,
            bytes: rng.u64(40..60),
            end: t,
            reject: true,
            flags: 2,
            ..base
        },
        _ => Rec {
            src: v4(steady[rng.usize(0..40)].client),
            dst: v4(WEB),
            dp: 8080,
            bytes: rng.u64(500..50_000),
            ..base
        },
    }
}

fn plant(
    opts: &GenOptions,
    rng: &mut fastrand::Rng,
    events: &mut Vec<PlantedEvent>,
    scheduled: &mut Vec<Rec>,
) {
    let at = |fraction: f64| opts.start + (opts.span as f64 * fraction) as u64;
    let mut add = |kind, src: Ipv4Addr, dst: Option<Ipv4Addr>, port, recs: Vec<Rec>| {
        let label = events.len();
        let first = recs.iter().map(|r| r.start).min().unwrap_or(0);
        let last = recs.iter().map(|r| r.end).max().unwrap_or(0);
        events.push(PlantedEvent {
            kind,
            src: v4(src),
            dst: dst.map(v4),
            port,
            first,
            last,
            lines: Vec::new(),
        });
        scheduled.extend(recs.into_iter().map(|r| Rec { label, ..r }));
    };
    let probe = |rng: &mut fastrand::Rng, src, dst, dp, t: u64, reject| Rec {
        src: v4(src),
        dst: v4(dst),
        sp: ephemeral(rng),
        dp,
        proto: 6,
        packets: if reject { 1 } else { rng.u64(2..6) },
        bytes: if reject { 44 } else { rng.u64(100..2_000) },
        start: t,
        end: t + u64::from(!reject),
        reject,
        flags: if reject { 2 } else { 3 },
        label: BENIGN,
        status: 0,
    };

    // Vertical port scan: 40 ports of one host within a minute.
    let (src, dst, t0) = (Ipv4Addr::new(10, 0, 1, 66), PG.0, at(0.30));
    let recs = SCAN_PORTS
        .iter()
        .map(|&p| {
            let t = t0 + rng.u64(0..60);
            probe(rng, src, dst, p, t, p != 5432)
        })
        .collect();
    add(EventKind::PortScan, src, Some(dst), None, recs);

    // Address sweep: port 22 on 60 hosts within two minutes.
    let (src, t0) = (Ipv4Addr::new(10, 0, 1, 67), at(0.40));
    let recs = (1..=60u8)
        .map(|h| {
            let dst = Ipv4Addr::new(10, 0, 20, h);
            let t = t0 + rng.u64(0..120);
            probe(rng, src, dst, 22, t, true)
        })
        .collect();
    add(EventKind::AddressSweep, src, None, Some(22), recs);

    // Brute force on MySQL: 150 short logins in four minutes.
    let (src, t0) = (Ipv4Addr::new(10, 0, 4, 20), at(0.50));
    let recs = (0..150)
        .map(|_| {
            let t = t0 + rng.u64(0..240);
            probe(rng, src, MYSQL.0, MYSQL.1, t, false)
        })
        .collect();
    add(
        EventKind::BruteForce,
        src,
        Some(MYSQL.0),
        Some(MYSQL.1),
        recs,
    );

    // Exfiltration: 12 transfers of about 1 GiB to one internet address within an hour.
    let (src, dst, t0) = (
        Ipv4Addr::new(10, 0, 1, 23),
        Ipv4Addr::new(203, 0, 113, 200),
        at(0.60),
    );
    let recs = (0..12u64)
        .map(|i| {
            let t = t0 + i * 300;
            Rec {
                packets: 800_000 + rng.u64(0..10_000),
                bytes: (1 << 30) + rng.u64(0..1 << 20),
                end: t + 290,
                ..probe(rng, src, dst, 443, t, false)
            }
        })
        .collect();
    add(EventKind::Exfiltration, src, Some(dst), Some(443), recs);

    // A public address reaching PostgreSQL (a security group open to the world).
    let (src, t0) = (Ipv4Addr::new(198, 51, 100, 77), at(0.70));
    let recs = (0..5)
        .map(|i| probe(rng, src, PG.0, PG.1, t0 + i * 90, false))
        .collect();
    add(EventKind::PublicDb, src, Some(PG.0), Some(PG.1), recs);

    // Rejected probes of database ports from the internet.
    let (src, t0) = (Ipv4Addr::new(203, 0, 113, 45), at(0.75));
    let targets = [
        (10, 3306),
        (10, 1433),
        (11, 5432),
        (12, 3306),
        (13, 5432),
        (14, 27017),
        (15, 6379),
        (15, 1433),
    ];
    let recs = targets
        .iter()
        .enumerate()
        .map(|(i, &(h, p))| {
            let t = t0 + i as u64 * 20;
            probe(rng, src, Ipv4Addr::new(10, 0, 20, h), p, t, true)
        })
        .collect();
    add(EventKind::RejectedDbProbe, src, None, None, recs);

    // A database client never seen in the learning window.
    let (src, t0) = (Ipv4Addr::new(10, 0, 2, 200), at(0.85));
    let recs = (0..6)
        .map(|i| probe(rng, src, REDIS.0, REDIS.1, t0 + i * 600, false))
        .collect();
    add(
        EventKind::NewDbClient,
        src,
        Some(REDIS.0),
        Some(REDIS.1),
        recs,
    );
}

fn write_rec(w: &mut impl Write, r: &Rec, tcp_flags: bool) -> io::Result<()> {
    let eni = match r.dst {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(_) => 0,
    };
    write!(w, "2 123456789012 eni-{eni:017x} ")?;
    match r.status {
        0 => write!(
            w,
            "{} {} {} {} {} {} {} {} {} {} OK",
            r.src,
            r.dst,
            r.sp,
            r.dp,
            r.proto,
            r.packets,
            r.bytes,
            r.start,
            r.end,
            if r.reject { "REJECT" } else { "ACCEPT" }
        )?,
        status => write!(
            w,
            "- - - - - - - {} {} - {}",
            r.start,
            r.end,
            if status == 1 { "NODATA" } else { "SKIPDATA" }
        )?,
    }
    if tcp_flags {
        if r.status == 0 && r.proto == 6 {
            write!(w, " {}", r.flags)?;
        } else {
            w.write_all(b" -")?;
        }
    }
    w.write_all(b"\n")
}
