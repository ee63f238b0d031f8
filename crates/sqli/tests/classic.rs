//! Classic hand-written injections (the textbook and cheat-sheet shapes, not sqlmap's), to show
//! the rules are not fitted to one tool: each is found where it lands, in both dialects.

use sumun_sqli::{inspect, inspect_param, Dialect, Options, Place};

/// Inputs for a quoted value: `... WHERE name = '<input>' AND password = 'x'` when pasted.
const QUOTED: &[&str] = &[
    "' OR 'x'='x",
    "' OR 1=1 -- ",
    "' OR 1=1 LIMIT 1 -- ",
    "x' OR 'a' LIKE 'a",
    "admin'-- ",
    "' AND 1=1 -- ",
    "' AND 1=2 -- ",
    "1' ORDER BY 1-- ",
    "' UNION SELECT username, password FROM users -- ",
    "' UNION ALL SELECT NULL, version() -- ",
    "'; DROP TABLE users; -- ",
    "'; SELECT pg_sleep(10); -- ",
    "' AND (SELECT 1 FROM pg_sleep(5)) IS NOT NULL -- ",
    "' OR EXISTS(SELECT 1 FROM information_schema.tables) -- ",
    "' AND 1=(SELECT COUNT(*) FROM pg_shadow) -- ",
    "' OR ''='",
];

/// Inputs for an unquoted number: `... WHERE id = <input>` when pasted. (`1) OR (1=1` is not
/// here: pasted, it reads exactly as SQLAlchemy's rendering of an empty `NOT IN`,
/// `... OR (1 = 1)`, which the benign corpus holds.)
const NUMERIC: &[&str] = &[
    "1 OR 1=1",
    "1 OR 2>1",
    "-1 UNION SELECT 1,2,3",
    "1 AND SLEEP(5)",
    "1 AND 1=1 -- ",
    "1 OR TRUE",
    "1; SELECT pg_sleep(5) -- ",
];

#[test]
fn classic_injections_are_found_where_they_land() {
    let mut missed = Vec::new();
    for dialect in [Dialect::Postgres, Dialect::Mysql] {
        let opts = Options::new(dialect);
        let cases = QUOTED
            .iter()
            .map(|i| {
                (
                    i,
                    format!("SELECT id FROM users WHERE name = '{i}' AND password = 'x'"),
                    true,
                )
            })
            .chain(
                NUMERIC
                    .iter()
                    .map(|i| (i, format!("SELECT id FROM users WHERE id = {i}"), false)),
            );
        for (input, pasted, quoted) in cases {
            let place = inspect(&pasted, dialect).finding.map(|f| f.place);
            if place != Some(Place::Statement) {
                missed.push(format!("{dialect:?} pasted: {pasted}"));
            }
            if quoted {
                let escaped = match dialect {
                    Dialect::Postgres => input.replace('\'', "''"),
                    Dialect::Mysql => input.replace('\'', "\\'"),
                };
                let sql = format!("SELECT id FROM users WHERE name = '{escaped}'");
                if inspect(&sql, dialect).finding.map(|f| f.place) != Some(Place::Literal) {
                    missed.push(format!("{dialect:?} escaped: {sql}"));
                }
            }
            if inspect_param(input, &opts).finding.is_none() {
                missed.push(format!("{dialect:?} bound: {input}"));
            }
        }
    }
    assert!(
        missed.is_empty(),
        "{} missed:\n{}",
        missed.len(),
        missed.join("\n")
    );
}
