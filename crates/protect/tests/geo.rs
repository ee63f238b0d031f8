//! Geo match against a MaxMind DB built by the test-support writer.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use sumun_protect::{GeoDb, RuleDenial, Rules};

fn db() -> GeoDb {
    let bytes = support::mmdb::country_db(&[
        (Ipv4Addr::new(127, 0, 0, 5), 32, "KP"),
        (Ipv4Addr::new(198, 51, 100, 0), 24, "NL"),
        (Ipv4Addr::new(203, 0, 113, 0), 24, "nl"),
    ]);
    GeoDb::from_bytes(bytes).expect("test database reads")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn countries_are_looked_up() {
    let db = db();
    assert_eq!(db.kind, "Sumun-Test-Country");
    assert_eq!(db.country(ip("127.0.0.5")).as_deref(), Some("KP"));
    assert_eq!(db.country(ip("198.51.100.77")).as_deref(), Some("NL"));
    assert_eq!(db.country(ip("203.0.113.1")).as_deref(), Some("NL"));
    assert_eq!(db.country(ip("::ffff:198.51.100.1")).as_deref(), Some("NL"));
    assert_eq!(db.country(ip("127.0.0.6")), None);
    assert_eq!(db.country(ip("2001:db8::1")), None);
}

#[test]
fn deny_and_allow_lists() {
    let geo = Some(Arc::new(db()));
    let deny = Rules {
        geo: geo.clone(),
        deny_countries: vec!["KP".into()],
        ..Rules::default()
    };
    assert_eq!(
        deny.check(ip("127.0.0.5")),
        Err(RuleDenial::Country(Some("KP".into())))
    );
    assert_eq!(deny.check(ip("127.0.0.6")), Ok(()));
    let allow = Rules {
        geo,
        allow_countries: vec!["NL".into()],
        ..Rules::default()
    };
    assert_eq!(allow.check(ip("198.51.100.2")), Ok(()));
    assert_eq!(allow.check(ip("127.0.0.6")), Err(RuleDenial::Country(None)));
    assert_eq!(
        allow.check(ip("127.0.0.5")),
        Err(RuleDenial::Country(Some("KP".into())))
    );
}

#[test]
fn garbage_is_refused_not_a_panic() {
    assert!(GeoDb::from_bytes(Vec::new()).is_err());
    assert!(GeoDb::from_bytes(b"\xAB\xCD\xEFMaxMind.com".to_vec()).is_err());
    let mut bytes = support::mmdb::country_db(&[(Ipv4Addr::new(10, 0, 0, 0), 8, "NL")]);
    // Corrupt the tree: lookups must fail soft.
    for b in bytes.iter_mut().take(12) {
        *b = 0xff;
    }
    if let Ok(db) = GeoDb::from_bytes(bytes) {
        let _ = db.country(ip("10.1.2.3"));
    }
}
