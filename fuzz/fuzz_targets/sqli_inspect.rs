//! Feeds arbitrary text to the SQL-injection detector in both dialects, for application and
//! admin users, as a statement and as a bound value. Beyond "never panics": no more than the
//! byte cap is inspected (and a longer input says so), a finding always reaches the threshold
//! with at least one rule, and its evidence stays short.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_sqli::{inspect_param, inspect_with, Dialect, Options, THRESHOLD};

const CAP: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for dialect in [Dialect::Postgres, Dialect::Mysql] {
        for app_user in [true, false] {
            let opts = Options {
                app_user,
                max_bytes: CAP,
                ..Options::new(dialect)
            };
            for v in [inspect_with(&text, &opts), inspect_param(&text, &opts)] {
                assert!(v.inspected <= CAP);
                assert_eq!(v.truncated, text.len() > CAP);
                if let Some(f) = v.finding {
                    assert!(f.score >= THRESHOLD);
                    assert!(!f.rules.is_empty());
                    assert!(f.evidence.len() <= 140, "{}", f.evidence);
                }
            }
        }
    }
});
