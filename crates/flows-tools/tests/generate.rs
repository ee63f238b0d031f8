//! The generator: the same seed gives the same bytes, every line parses, and the labels point
//! at the planted records.

use sumun_flows::{Action, Format, LogStatus, Reader};
use sumun_flows_tools::generate::{generate, EventKind, GenError, GenOptions};

fn run(opts: &GenOptions) -> (Vec<u8>, Vec<sumun_flows_tools::generate::PlantedEvent>) {
    let mut out = Vec::new();
    let events = generate(opts, &mut out).expect("generate");
    (out, events)
}

#[test]
fn same_seed_same_bytes_and_every_line_parses() {
    let opts = GenOptions {
        seed: 42,
        records: 5_000,
        ..GenOptions::default()
    };
    let (a, events_a) = run(&opts);
    let (b, events_b) = run(&opts);
    assert_eq!(a, b);
    assert_eq!(events_a, events_b);
    let (c, _) = run(&GenOptions {
        seed: 43,
        ..opts.clone()
    });
    assert_ne!(a, c);

    let lines = a.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    assert_eq!(lines, 5_000);
    let flows: Vec<_> = Reader::new(&a[..])
        .collect::<Result<Vec<_>, _>>()
        .expect("every line parses");
    assert_eq!(flows.len(), 5_000);
    assert!(flows
        .iter()
        .any(|f| f.record.log_status == LogStatus::NoData));
    assert!(flows
        .iter()
        .any(|f| f.record.log_status == LogStatus::SkipData));
    assert!(flows.iter().any(|f| f.record.protocol == 17));
    assert!(flows.iter().any(|f| f.record.action == Action::Reject));
}

#[test]
fn labels_name_the_planted_records() {
    let opts = GenOptions {
        seed: 7,
        records: 4_000,
        tcp_flags: true,
        ..GenOptions::default()
    };
    let (out, events) = run(&opts);
    let text = String::from_utf8(out).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    let format = Format::from_header(lines[0]).expect("header");
    assert!(format.fields().iter().any(|f| f.name() == "tcp-flags"));
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds.len(), 7);
    for e in &events {
        assert!(!e.lines.is_empty());
        for &n in &e.lines {
            let flow = format
                .parse(lines[n as usize - 1])
                .expect("labelled line parses");
            assert_eq!(flow.record.srcaddr, e.src, "{:?} line {n}", e.kind);
            if let Some(dst) = e.dst {
                assert_eq!(flow.record.dstaddr, dst);
            }
            assert!(e.first <= flow.record.start && flow.record.end <= e.last);
        }
    }
    let scan = events
        .iter()
        .find(|e| e.kind == EventKind::PortScan)
        .expect("scan");
    assert_eq!(scan.lines.len(), 40);
    // Without attacks nothing is planted and the count still holds.
    let (benign, none) = run(&GenOptions {
        attacks: false,
        ..opts
    });
    assert!(none.is_empty());
    assert_eq!(
        benign
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        4_001
    );
}

#[test]
fn too_few_records_is_refused() {
    let err = generate(
        &GenOptions {
            records: 10,
            ..GenOptions::default()
        },
        &mut Vec::new(),
    )
    .expect_err("too few");
    assert!(matches!(err, GenError::TooFew(10)));
    assert_eq!(
        err.to_string(),
        "at least 2000 records are needed (asked for 10)"
    );
}
