//! Hunts over generated logs: every planted event is found by its detection, every finding
//! belongs to a planted event, and benign traffic alone gives no finding.

use std::path::PathBuf;

use sumun_flows_tools::generate::{generate, EventKind, GenOptions, PlantedEvent};
use sumun_flows_tools::hunt::{Finding, Hunt, Thresholds};
use sumun_flows_tools::input::read_flows;

fn hunt_generated(opts: &GenOptions, t: &Thresholds) -> (Vec<Finding>, Vec<PlantedEvent>) {
    let dir = std::env::temp_dir().join(format!(
        "sumun-hunt-{}-{}-{}",
        std::process::id(),
        opts.seed,
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path: PathBuf = dir.join("flows.log");
    let mut file = std::fs::File::create(&path).expect("create");
    let events = generate(opts, &mut file).expect("generate");
    drop(file);
    let mut hunt = Hunt::new();
    read_flows(&[path], true, |f| hunt.add(f)).expect("read");
    let _ = std::fs::remove_dir_all(&dir);
    (hunt.run(t), events)
}

fn detection_for(kind: EventKind) -> &'static str {
    match kind {
        EventKind::PortScan => "port_scan",
        EventKind::AddressSweep => "address_sweep",
        EventKind::BruteForce => "brute_force",
        EventKind::Exfiltration => "egress_volume",
        EventKind::PublicDb => "public_db",
        EventKind::RejectedDbProbe => "rejected_db_probe",
        EventKind::NewDbClient => "new_db_client",
    }
}

fn belongs(f: &Finding, e: &PlantedEvent) -> bool {
    f.src == e.src && (f.dst.is_none() || e.dst.is_none() || f.dst == e.dst)
}

#[test]
fn planted_events_are_found_and_nothing_else() {
    for (seed, records, tcp_flags) in [(1, 20_000, false), (2, 60_000, true), (3, 5_000, false)] {
        let opts = GenOptions {
            seed,
            records,
            tcp_flags,
            ..GenOptions::default()
        };
        let (findings, events) = hunt_generated(&opts, &Thresholds::default());
        for e in &events {
            let want = detection_for(e.kind);
            let found = findings
                .iter()
                .find(|f| f.detection == want && belongs(f, e))
                .unwrap_or_else(|| panic!("{want} of {} not found in {findings:#?}", e.src));
            assert!(
                found.first <= e.last && e.first <= found.last,
                "{found:?} vs {e:?}"
            );
            assert!(!found.evidence.is_empty() && found.evidence.len() <= 10);
            assert!(found.technique.starts_with('T'));
        }
        for f in &findings {
            assert!(
                events.iter().any(|e| belongs(f, e)),
                "false positive (seed {seed}): {f:#?}"
            );
        }
        let scan = findings
            .iter()
            .find(|f| f.detection == "port_scan")
            .expect("scan");
        assert_eq!(scan.technique, "T1046");
        assert!(
            scan.detail.starts_with("40 distinct ports"),
            "{}",
            scan.detail
        );
    }
}

#[test]
fn benign_traffic_gives_no_finding() {
    for (seed, tcp_flags) in [(4, false), (5, true)] {
        let opts = GenOptions {
            seed,
            records: 50_000,
            attacks: false,
            tcp_flags,
            ..GenOptions::default()
        };
        let (findings, _) = hunt_generated(&opts, &Thresholds::default());
        assert!(findings.is_empty(), "{findings:#?}");
    }
}

/// Dense logs (many records in a short span) keep each steady client under the brute-force
/// rate: the extra records go to the web server's many internet clients.
#[test]
fn dense_benign_traffic_gives_no_finding() {
    let opts = GenOptions {
        seed: 8,
        records: 200_000,
        span: 3600,
        attacks: false,
        ..GenOptions::default()
    };
    let (findings, _) = hunt_generated(&opts, &Thresholds::default());
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn thresholds_are_overridable() {
    let opts = GenOptions {
        seed: 6,
        records: 10_000,
        ..GenOptions::default()
    };
    // A scan threshold above the 40 ports scanned hides the scan; a tiny egress threshold
    // reports ordinary clients.
    let t = Thresholds {
        scan_ports: 41,
        egress_bytes: 1,
        ..Thresholds::default()
    };
    let (findings, _) = hunt_generated(&opts, &t);
    assert!(!findings.iter().any(|f| f.detection == "port_scan"));
    assert!(
        findings
            .iter()
            .filter(|f| f.detection == "egress_volume")
            .count()
            > 10
    );
}

/// Replies of a service on an unlisted port reach one client on many ephemeral ports: that is
/// not a port scan of the client. Probes from a high port to many lower ones still are, and so
/// are refused probes to ports above the prober's own.
#[test]
fn replies_from_an_unlisted_service_port_are_not_a_scan() {
    let line = |src: &str, dst: &str, sp: u16, dp: u16, t: u64| {
        format!(
            "2 1 eni-1 {src} {dst} {sp} {dp} 6 3 200 {t} {} ACCEPT OK",
            t + 1
        )
    };
    let mut hunt = Hunt::new();
    let mut scan = Hunt::new();
    for i in 0..40u16 {
        let t = 1_704_067_200 + u64::from(i);
        let reply = line("10.0.30.5", "10.0.1.10", 9443, 40_000 + i * 7, t);
        hunt.add(
            &sumun_flows::Format::default_v2()
                .parse(&reply)
                .expect("line"),
        );
        let probe = line("10.0.1.66", "10.0.30.5", 50_000, 2_000 + i * 3, t);
        scan.add(
            &sumun_flows::Format::default_v2()
                .parse(&probe)
                .expect("line"),
        );
        let high =
            line("10.0.1.66", "10.0.30.5", 50_000, 55_000 + i, t).replace("ACCEPT", "REJECT");
        scan.add(
            &sumun_flows::Format::default_v2()
                .parse(&high)
                .expect("line"),
        );
    }
    assert_eq!(hunt.run(&Thresholds::default()), Vec::new());
    let found = scan.run(&Thresholds::default());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].detection, "port_scan");
    assert!(
        found[0].detail.starts_with("80 distinct ports"),
        "{}",
        found[0].detail
    );
}
