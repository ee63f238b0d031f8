//! Feeds arbitrary text to the `sumun flows query` SQL parser and binder, then evaluates what
//! bound over a row of NULLs and a row of typical values. Beyond "never panics": every error
//! points inside the query (line and column within the text).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_flows_sql::bind::{bind, Stage};
use sumun_flows_sql::schema::COLUMNS;
use sumun_flows_sql::value::Value;
use sumun_flows_sql::parser::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let check = |line: usize, column: usize| {
        assert!(line >= 1 && line <= sql.lines().count().max(1) + 1, "line {line}");
        assert!(column >= 1, "column {column}");
    };
    let query = match parse(sql) {
        Ok(q) => q,
        Err(e) => {
            check(e.line, e.column);
            return;
        }
    };
    let plan = match bind(sql, &query, 1_704_067_200_000, &[]) {
        Ok(p) => p,
        Err(e) => {
            check(e.line, e.column);
            return;
        }
    };
    let nulls = vec![Value::Null; COLUMNS.len().max(64)];
    let mut typical = nulls.clone();
    for (i, c) in COLUMNS.iter().enumerate() {
        typical[i] = match c.name {
            "srcaddr" | "dstaddr" => Value::Ip("10.0.1.7".parse().unwrap()),
            "action" => Value::str("ACCEPT"),
            "log_status" => Value::str("OK"),
            _ => match c.ty {
                sumun_flows_sql::Type::Int => Value::Int(1_704_067_200),
                _ => Value::str("x"),
            },
        };
    }
    for row in [&nulls, &typical] {
        if let Some(f) = &plan.filter {
            let _ = f.eval(row);
        }
        match &plan.stage {
            Stage::Aggregate { keys, aggs } => {
                for k in keys {
                    let _ = k.eval(row);
                }
                for a in aggs {
                    let mut s = a.init();
                    let _ = a.update(&mut s, row);
                    let _ = a.finish(s);
                }
            }
            Stage::Project { exprs } => {
                for e in exprs {
                    let _ = e.eval(row);
                }
            }
        }
        for p in &plan.project {
            let _ = p.eval(row);
        }
    }
});
