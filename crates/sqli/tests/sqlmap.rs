//! sqlmap's own payloads (from the installed Debian package, never from this repository),
//! assembled with its boundaries the way sqlmap sends them to a `WHERE` condition, must be
//! flagged in all three places an injection can show up at the gateway:
//!
//! - pasted into the statement (the injection worked): a high-severity statement finding;
//! - escaped into a literal by a careful driver (the attempt failed): a literal finding;
//! - bound as a parameter value: a parameter finding.

mod support;

use sumun_sqli::{inspect, inspect_param, Dialect, Options, Place, Severity};
use support::{concatenated, escaped, sqlmap_cases, Case};

struct Tally {
    total: usize,
    found: usize,
    misses: Vec<String>,
    titles: std::collections::HashSet<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            total: 0,
            found: 0,
            misses: Vec::new(),
            titles: Default::default(),
        }
    }
    /// One case; a miss is kept as an example when it is the first of its sqlmap test.
    fn add(&mut self, ok: bool, title: &str, what: impl FnOnce() -> String) {
        self.total += 1;
        if ok {
            self.found += 1;
        } else if self.misses.len() < 40 && self.titles.insert(title.to_string()) {
            self.misses.push(what());
        }
    }
    fn rate(&self) -> f64 {
        self.found as f64 / self.total.max(1) as f64
    }
    #[track_caller]
    fn at_least(&self, name: &str, floor: f64) {
        println!(
            "{name}: {}/{} detected ({:.2}%)",
            self.found,
            self.total,
            100.0 * self.rate()
        );
        for m in &self.misses {
            println!("  missed: {m}");
        }
        assert!(self.total > 500, "{name}: only {} cases", self.total);
        assert!(
            self.rate() >= floor,
            "{name}: detection {:.1}% below {:.1}%; missed for example:\n{}",
            100.0 * self.rate(),
            100.0 * floor,
            self.misses.join("\n")
        );
    }
}

fn dialect_name(c: &Case) -> &'static str {
    match c.dialect {
        Dialect::Postgres => "postgres",
        Dialect::Mysql => "mysql",
    }
}

#[test]
fn sqlmap_payloads_are_flagged_where_they_land() {
    let cases = sqlmap_cases();
    let mut worked = Tally::new();
    let mut in_literal = Tally::new();
    let mut as_param = Tally::new();
    for c in &cases {
        let sql = concatenated(c);
        let v = inspect(&sql, c.dialect);
        let ok = v
            .finding
            .as_ref()
            .is_some_and(|f| f.place == Place::Statement && f.severity == Severity::High);
        worked.add(ok, &c.title, || {
            format!("[{} {}] {sql}", dialect_name(c), c.title)
        });

        let sql = escaped(c);
        let v = inspect(&sql, c.dialect);
        let ok = v.finding.as_ref().is_some_and(|f| {
            f.place == Place::Literal
                && f.severity == Severity::Medium
                && !f.evidence.contains("users")
        });
        in_literal.add(ok, &c.title, || {
            format!("[{} {}] {sql}", dialect_name(c), c.title)
        });

        let v = inspect_param(&c.input, &Options::new(c.dialect));
        let ok = v.finding.is_some_and(|f| f.place == Place::Parameter);
        as_param.add(ok, &c.title, || {
            format!("[{} {}] {}", dialect_name(c), c.title, c.input)
        });
    }
    worked.at_least("pasted into the statement", 0.99);
    in_literal.at_least("escaped into a literal", 0.99);
    as_param.at_least("bound as a parameter", 0.99);
}
