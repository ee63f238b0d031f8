//! The SQL-injection detector's numbers (bench/sqli/run.sh runs this in release mode):
//! false positives on the benign corpus, detection rate on sqlmap's payloads in each place
//! an injection can land, and `inspect()` cost per statement next to the lexer passes the
//! gateway already runs on every query (audit masking, read/write analysis).
//!
//! `--dump DIR` also writes the inputs as JSON lines (`sqlmap.jsonl`, `benign-values.jsonl`)
//! for the libinjection comparison (bench/sqli/peer_libinjection.py).

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use sumun_sqli::{inspect, inspect_param, Dialect, Options, Place};
use support::{benign_files, concatenated, escaped, pgbench, sqlmap_cases, sysbench, Benign};

fn json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Nanoseconds per call of `f`: the fastest of 9 timed rounds (the machine is shared; the
/// fastest round is the one least disturbed by other work).
fn ns_per_call(mut f: impl FnMut()) -> f64 {
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        if t.elapsed().as_millis() >= 50 {
            break;
        }
        iters *= 2;
    }
    let rounds: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    rounds.into_iter().fold(f64::INFINITY, f64::min)
}

/// The decoded contents of every string literal in `sql` (the values an application binds).
fn literal_values(sql: &str, dialect: Dialect) -> Vec<String> {
    let syntax: sumun_sqli::Syntax = dialect.into();
    sumun_wire::sql::tokens(sql, syntax)
        .filter(|t| t.kind == sumun_wire::sql::SqlTokenKind::String)
        .filter_map(|t| {
            let raw = sql.get(t.start..t.end)?;
            let q = raw.find(['\'', '"'])?;
            let quote = raw[q..].chars().next()?;
            let body = raw.get(q + 1..raw.len().checked_sub(1)?)?;
            let doubled = format!("{quote}{quote}");
            Some(match dialect {
                Dialect::Postgres => body.replace(&doubled, &quote.to_string()),
                Dialect::Mysql => body
                    .replace("\\'", "'")
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\")
                    .replace(&doubled, &quote.to_string()),
            })
        })
        .collect()
}

fn main() {
    let dump = {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == "--dump")
            .and_then(|i| args.get(i + 1).cloned())
    };

    // Benign corpus.
    let mut benign: Vec<Benign> = benign_files();
    benign.extend(pgbench());
    benign.extend(sysbench());
    let fps: Vec<&Benign> = benign
        .iter()
        .filter(|b| inspect(&b.sql, b.dialect).finding.is_some())
        .collect();
    println!(
        "benign statements: {} (ORM-shaped {}, pgbench, sysbench), false positives: {}",
        benign.len(),
        benign_files().len(),
        fps.len()
    );
    for b in &fps {
        println!("  FP {}: {}", b.origin, b.sql);
    }
    let values: Vec<(Dialect, String)> = benign
        .iter()
        .flat_map(|b| {
            literal_values(&b.sql, b.dialect)
                .into_iter()
                .map(move |v| (b.dialect, v))
        })
        .collect();
    let value_fps = values
        .iter()
        .filter(|(d, v)| inspect_param(v, &Options::new(*d)).finding.is_some())
        .count();
    println!(
        "benign values (literal contents of the corpus): {}, false positives as parameters: {}",
        values.len(),
        value_fps
    );

    // sqlmap.
    let cases = sqlmap_cases();
    let (mut worked, mut literal, mut param) = (0, 0, 0);
    for c in &cases {
        if inspect(&concatenated(c), c.dialect)
            .finding
            .is_some_and(|f| f.place == Place::Statement)
        {
            worked += 1;
        }
        if inspect(&escaped(c), c.dialect)
            .finding
            .is_some_and(|f| f.place == Place::Literal)
        {
            literal += 1;
        }
        if inspect_param(&c.input, &Options::new(c.dialect))
            .finding
            .is_some()
        {
            param += 1;
        }
    }
    let pct = |n: usize| 100.0 * n as f64 / cases.len() as f64;
    println!(
        "sqlmap inputs (MySQL, PostgreSQL and generic tests x WHERE-value boundaries): {}",
        cases.len()
    );
    println!(
        "  detected pasted into the statement: {worked} ({:.2}%)",
        pct(worked)
    );
    println!(
        "  detected escaped into a literal:    {literal} ({:.2}%)",
        pct(literal)
    );
    println!(
        "  detected bound as a parameter:      {param} ({:.2}%)",
        pct(param)
    );

    if let Some(dir) = dump {
        std::fs::create_dir_all(&dir).expect("dump dir");
        let mut f = std::fs::File::create(format!("{dir}/sqlmap.jsonl")).expect("sqlmap.jsonl");
        for c in &cases {
            writeln!(f, "{}", json(&c.input)).expect("write");
        }
        let mut f = std::fs::File::create(format!("{dir}/benign-values.jsonl"))
            .expect("benign-values.jsonl");
        for (_, v) in &values {
            writeln!(f, "{}", json(v)).expect("write");
        }
        println!("wrote {dir}/sqlmap.jsonl and {dir}/benign-values.jsonl");
    }

    // Cost per statement.
    println!("cost per call (release build, fastest of 9 rounds):");
    println!(
        "  {:<58} {:>10} {:>12} {:>12}",
        "statement", "inspect ns", "mask ns", "analyze ns"
    );
    let samples: [(&str, &str, Dialect); 6] = [
        (
            "pgbench select-only",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
            Dialect::Postgres,
        ),
        (
            "pgbench update",
            "UPDATE pgbench_accounts SET abalance = abalance + -3184 WHERE aid = 5562;",
            Dialect::Postgres,
        ),
        (
            "pgbench insert",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 5562, -3184, CURRENT_TIMESTAMP);",
            Dialect::Postgres,
        ),
        (
            "sysbench point select",
            "SELECT c FROM sbtest1 WHERE id=50123",
            Dialect::Mysql,
        ),
        (
            "ORM select with literal and comment",
            "SELECT \"users\".* FROM \"users\" WHERE \"users\".\"email\" = 'ann@example.com' AND \"users\".\"deleted_at\" IS NULL LIMIT 1 /*application:Rails,controller:users*/",
            Dialect::Postgres,
        ),
        (
            "sqlmap tautology (finding path)",
            "SELECT id, name FROM users WHERE id = '1' OR 5847=5847-- abcd'",
            Dialect::Postgres,
        ),
    ];
    for (name, sql, dialect) in samples {
        let syntax: sumun_sqli::Syntax = dialect.into();
        let ins = ns_per_call(|| {
            black_box(inspect(black_box(sql), dialect));
        });
        let mask = ns_per_call(|| {
            black_box(sumun_wire::sql::mask_literals_with(black_box(sql), syntax));
        });
        let analyze = ns_per_call(|| {
            black_box(sumun_wire::sql::analyze_with(black_box(sql), syntax));
        });
        println!("  {name:<58} {ins:>10.0} {mask:>12.0} {analyze:>12.0}");
    }
    let corpus_ns = ns_per_call(|| {
        for b in &benign {
            black_box(inspect(black_box(&b.sql), b.dialect));
        }
    }) / benign.len() as f64;
    println!(
        "  {:<58} {corpus_ns:>10.0}",
        format!("mean over the {} benign statements", benign.len())
    );
}
