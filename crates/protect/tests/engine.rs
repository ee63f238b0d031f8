//! The engine's detections and limits, with time passed in: windows of minutes run instantly.
#![allow(clippy::field_reassign_with_default)]

use std::net::IpAddr;
use std::time::Duration;

use sumun_config::{ProtectAction, ProtectionSettings};
use sumun_protect::{Admission, Engine, Now, Place};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn place(port: u16) -> Place<'static> {
    Place {
        listener: "pg",
        dst: ip("10.0.0.1"),
        port,
    }
}

fn engine() -> (Engine, Now) {
    let now = Now::system();
    (Engine::new(ProtectionSettings::default(), now.mono), now)
}

const MIN: Duration = Duration::from_secs(60);

#[test]
fn brute_force_bans_after_five_failures_for_ten_minutes_then_longer() {
    let (mut e, t0) = engine();
    let a = ip("203.0.113.9");
    for i in 0..4 {
        e.auth_failure(
            a,
            place(5432),
            &format!("u{}", i % 2),
            "bad_password",
            t0.after(MIN * i),
        );
        assert_eq!(e.admit(a, place(5432), t0.after(MIN * i)), Admission::Allow);
    }
    assert!(e.take_findings().is_empty());
    let t = t0.after(MIN * 4);
    e.auth_failure(a, place(5432), "u0", "bad_password", t);
    let found = e.take_findings();
    assert_eq!(found.len(), 1);
    let f = &found[0];
    assert_eq!(
        (f.detection, f.technique, f.action),
        ("brute_force", "T1110", "block")
    );
    assert_eq!(f.records, 5);
    assert_eq!(f.src, a);
    assert_eq!(f.evidence.len(), 5);
    let json = serde_json::to_value(f).expect("json");
    for key in [
        "detection",
        "severity",
        "technique",
        "technique_name",
        "src",
        "dst",
        "port",
        "detail",
        "first",
        "last",
        "records",
        "evidence",
    ] {
        assert!(json.get(key).is_some(), "{key} missing in {json}");
    }
    match e.admit(a, place(5432), t.after(MIN * 9)) {
        Admission::Banned(b) => assert_eq!((b.until - b.since, b.count), (600, 1)),
        other => panic!("expected a ban, got {other:?}"),
    }
    assert_eq!(e.bans(t).len(), 1);
    let t = t.after(MIN * 10 + Duration::from_secs(1));
    assert_eq!(e.admit(a, place(5432), t), Admission::Allow);
    assert!(e.bans(t).is_empty());
    // A second ban within the day lasts twice as long.
    for _ in 0..5 {
        e.auth_failure(a, place(5432), "u0", "bad_password", t.after(MIN * 11));
    }
    match e.admit(a, place(5432), t.after(MIN * 11)) {
        Admission::Banned(b) => assert_eq!((b.until - b.since, b.count), (1200, 2)),
        other => panic!("expected a longer ban, got {other:?}"),
    }
    // Other sources are untouched.
    assert_eq!(
        e.admit(ip("203.0.113.10"), place(5432), t),
        Admission::Allow
    );
}

#[test]
fn failures_spread_beyond_the_window_do_not_ban() {
    let (mut e, t0) = engine();
    let a = ip("203.0.113.9");
    for i in 0..20 {
        e.auth_failure(a, place(5432), "u", "bad_password", t0.after(MIN * 3 * i));
    }
    assert!(e.take_findings().is_empty());
    assert_eq!(
        e.admit(a, place(5432), t0.after(MIN * 60)),
        Admission::Allow
    );
}

#[test]
fn password_spraying_is_many_users_from_one_source() {
    let mut s = ProtectionSettings::default();
    s.brute_force.enabled = false;
    let now = Now::system();
    let mut e = Engine::new(s, now.mono);
    let a = ip("198.51.100.1");
    for i in 0..10 {
        e.auth_failure(a, place(3306), &format!("user{i}"), "bad_password", now);
    }
    let found = e.take_findings();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].detection, found[0].technique),
        ("password_spray", "T1110.003")
    );
    assert!(matches!(e.admit(a, place(3306), now), Admission::Banned(_)));
}

#[test]
fn a_login_after_failures_is_reported() {
    let (mut e, t0) = engine();
    let a = ip("198.51.100.2");
    for _ in 0..3 {
        e.auth_failure(a, place(5432), "app", "bad_password", t0);
    }
    e.auth_success(a, place(5432), "app", t0.after(MIN));
    let found = e.take_findings();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].detection, found[0].user.as_deref()),
        ("login_after_failures", Some("app"))
    );
    assert_eq!(found[0].records, 4);
}

#[test]
fn refusals_across_listeners_are_a_scan() {
    let (mut e, t0) = engine();
    let a = ip("192.0.2.50");
    for (i, port) in [5432u16, 3306, 6379, 5433].iter().enumerate() {
        e.refused(
            a,
            place(*port),
            "security_group",
            t0.after(Duration::from_secs(i as u64)),
        );
        e.refused(
            a,
            place(*port),
            "security_group",
            t0.after(Duration::from_secs(i as u64)),
        );
    }
    assert!(e.take_findings().is_empty());
    e.refused(a, place(8080), "handshake_timeout", t0.after(MIN));
    let found = e.take_findings();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].detection, found[0].technique), ("scan", "T1046"));
    assert!(
        found[0].detail.contains("3306, 5432, 5433, 6379, 8080"),
        "{}",
        found[0].detail
    );
    // Logged, not blocked, by default; and not repeated within the window.
    assert_eq!(e.admit(a, place(5432), t0.after(MIN)), Admission::Allow);
    e.refused(a, place(9999), "security_group", t0.after(MIN * 2));
    assert!(e.take_findings().is_empty());
    // The door's own refusals are not a scan.
    let b = ip("192.0.2.51");
    for port in 1..20 {
        e.refused(b, place(port), "banned", t0);
    }
    assert!(e.take_findings().is_empty());
}

#[test]
fn the_rate_limit_holds_one_source_and_serves_others() {
    let mut s = ProtectionSettings::default();
    s.max_connections = 100;
    s.connection_spike.enabled = false;
    let now = Now::system();
    let mut e = Engine::new(s, now.mono);
    let a = ip("192.0.2.1");
    let allowed = (0..1000)
        .filter(|_| e.admit(a, place(5432), now) == Admission::Allow)
        .count();
    assert_eq!(allowed, 100);
    assert_eq!(e.admit(ip("192.0.2.2"), place(5432), now), Admission::Allow);
    // Two windows later the source is served again.
    assert_eq!(
        e.admit(a, place(5432), now.after(MIN * 10 + Duration::from_secs(1))),
        Admission::Allow
    );
}

#[test]
fn a_connection_spike_is_reported_once_per_window() {
    let (mut e, t0) = engine();
    for i in 0..1200u32 {
        let src = IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8]);
        assert_eq!(e.admit(src, place(5432), t0), Admission::Allow);
    }
    let found = e.take_findings();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].detection, found[0].action),
        ("connection_spike", "log")
    );
}

#[test]
fn first_seen_sources_are_reported_after_learning() {
    let mut s = ProtectionSettings::default();
    s.first_seen.window = Duration::from_secs(3600);
    let now = Now::system();
    let mut e = Engine::new(s, now.mono);
    e.auth_success(ip("10.0.0.1"), place(5432), "app", now);
    e.auth_success(ip("10.0.0.2"), place(5432), "app", now.after(MIN));
    assert!(e.take_findings().is_empty(), "still learning");
    let later = now.after(MIN * 61);
    e.auth_success(ip("10.0.0.1"), place(5432), "app", later);
    e.auth_success(ip("10.0.0.3"), place(5432), "new_user", later);
    assert!(
        e.take_findings().is_empty(),
        "known source; a user's first login is learnt"
    );
    e.auth_success(ip("10.0.0.9"), place(5432), "app", later);
    let found = e.take_findings();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].detection, found[0].technique),
        ("first_seen", "T1078")
    );
}

#[test]
fn privilege_changes_by_non_admins_are_reported() {
    let mut s = ProtectionSettings::default();
    s.admin_users = vec!["dba".into()];
    let now = Now::system();
    let mut e = Engine::new(s, now.mono);
    let a = ip("10.0.0.7");
    e.statement(a, place(5432), "dba", false, "GRANT ALL ON t TO app", now);
    e.statement(a, place(5432), "root", true, "CREATE USER x", now);
    e.statement(a, place(5432), "app", false, "SELECT 1", now);
    assert!(e.take_findings().is_empty());
    e.statement(
        a,
        place(5432),
        "app",
        false,
        "alter role app superuser",
        now,
    );
    let found = e.take_findings();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].detection, found[0].technique, found[0].action),
        ("privilege_change", "T1098", "log")
    );
}

#[test]
fn memory_is_bounded_by_max_sources() {
    let mut s = ProtectionSettings::default();
    s.max_sources = 1000;
    s.connection_spike.enabled = false;
    s.brute_force.action = ProtectAction::Block;
    let now = Now::system();
    let mut e = Engine::new(s, now.mono);
    for i in 0..50_000u32 {
        let src = IpAddr::from(std::net::Ipv6Addr::from(u128::from(i) + 1));
        e.admit(src, place(5432), now);
        e.auth_failure(src, place(5432), "u", "bad_password", now);
    }
    assert!(e.tracked() <= 1000, "{}", e.tracked());
    e.sweep(now.after(Duration::from_secs(3600)));
    assert_eq!(e.tracked(), 0);
}

#[test]
fn exempt_sources_and_disabled_protection_are_left_alone() {
    let (mut e, now) = engine();
    let local = ip("127.0.0.1");
    for _ in 0..50 {
        e.auth_failure(local, place(5432), "u", "bad_password", now);
    }
    assert_eq!(e.admit(local, place(5432), now), Admission::Allow);
    assert!(e.take_findings().is_empty());
    let mut s = ProtectionSettings::default();
    s.enabled = false;
    e.configure(s);
    let a = ip("203.0.113.1");
    for _ in 0..50 {
        e.auth_failure(a, place(5432), "u", "bad_password", now);
    }
    assert_eq!(e.admit(a, place(5432), now), Admission::Allow);
}

#[test]
fn unban_lifts_a_ban_and_totals_count_findings() {
    let (mut e, now) = engine();
    let a = ip("::ffff:203.0.113.5");
    for _ in 0..5 {
        e.auth_failure(a, place(5432), "u", "bad_password", now);
    }
    assert!(matches!(
        e.admit(ip("203.0.113.5"), place(5432), now),
        Admission::Banned(_)
    ));
    assert_eq!(e.bans(now)[0].addr, ip("203.0.113.5"));
    assert!(e.unban(ip("203.0.113.5")));
    assert!(!e.unban(ip("203.0.113.5")));
    assert_eq!(e.admit(a, place(5432), now), Admission::Allow);
    let total: u64 = e.totals().values().sum();
    assert_eq!(total, 1);
}
