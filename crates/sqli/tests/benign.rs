//! The benign corpus raises no finding: our ORM-shaped statements (Django, Rails, Hibernate,
//! SQLAlchemy: IN lists, LIKE, JSON operators, CTEs, window functions, framework comments,
//! schema introspection, prose in literals), pgbench's built-in scripts, sysbench's OLTP
//! statements, and the catalog queries the real `psql` runs for its `\d` commands.

mod support;

use std::process::Command;

use sumun_sqli::{inspect, inspect_with, Dialect, Options};
use sumun_testkit::Postgres;
use support::{benign_files, pgbench, sysbench, Benign};

#[track_caller]
fn no_findings(corpus: &[Benign], min: usize) {
    assert!(
        corpus.len() >= min,
        "corpus has only {} statements",
        corpus.len()
    );
    let fps: Vec<String> = corpus
        .iter()
        .filter_map(|b| {
            inspect(&b.sql, b.dialect)
                .finding
                .map(|f| format!("{} [{}] {:?}: {}", b.origin, f.rules, f.evidence, b.sql))
        })
        .collect();
    assert!(
        fps.is_empty(),
        "{} false positives:\n{}",
        fps.len(),
        fps.join("\n")
    );
}

#[test]
fn orm_shaped_statements_are_clean() {
    no_findings(&benign_files(), 350);
}

#[test]
fn pgbench_scripts_are_clean() {
    no_findings(&pgbench(), 500);
}

#[test]
fn sysbench_statements_are_clean() {
    no_findings(&sysbench(), 500);
}

/// The queries `psql -E` shows for its backslash commands, run against a real server.
fn psql_catalog_queries(pg: &Postgres) -> Vec<String> {
    pg.psql("CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE); CREATE VIEW v AS SELECT id FROM users; CREATE ROLE app LOGIN")
        .expect("schema");
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-E", "-h", "127.0.0.1", "-p", &pg.port().to_string()])
        .args(["-U", "postgres", "-d", "postgres"])
        .env("PGPASSWORD", pg.superuser_password());
    for c in [
        "\\d",
        "\\dt+",
        "\\d users",
        "\\d+ users",
        "\\dv",
        "\\di",
        "\\ds",
        "\\df",
        "\\dn+",
        "\\du",
        "\\dp",
        "\\l",
        "\\dx",
        "\\dT",
        "\\dd",
        "\\dD",
        "\\dy",
        "\\dconfig",
    ] {
        cmd.args(["-c", c]);
    }
    let out = cmd.output().expect("psql runs");
    let text = String::from_utf8_lossy(&out.stdout);
    // Each hidden query sits between a "QUERY" banner line and a line of stars.
    let mut queries = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if line.contains("QUERY") && line.contains("****") {
            cur = Some(String::new());
        } else if line.starts_with("/****") || line.starts_with("*****") {
            if let Some(q) = cur.take() {
                queries.push(q.trim().to_string());
            }
        } else if let Some(q) = cur.as_mut() {
            q.push_str(line);
            q.push('\n');
        }
    }
    queries
}

#[test]
fn psql_catalog_queries_are_clean() {
    let pg = Postgres::start().expect("postgres");
    let queries = psql_catalog_queries(&pg);
    assert!(
        queries.len() >= 15,
        "psql -E showed only {} queries",
        queries.len()
    );
    let admin = Options {
        app_user: false,
        ..Options::new(Dialect::Postgres)
    };
    for q in &queries {
        // An administrator's tool reads the catalogs freely...
        let v = inspect_with(q, &admin);
        assert!(v.is_clean(), "{q}\n{:?}", v.finding);
        // ...and its queries, whose own FROM is a catalog, are not enumeration through an
        // application's statement either.
        let v = inspect(q, Dialect::Postgres);
        assert!(v.is_clean(), "{q}\n{:?}", v.finding);
    }
}
