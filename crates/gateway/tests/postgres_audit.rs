//! Query audit end to end against a real PostgreSQL: every `query` line is valid JSON with the
//! documented keys, statements with quotes, backslashes, control characters and non-ASCII
//! identifiers come back exactly (masked or in full), literals never reach a masked log, and
//! the `sumun_query_duration_seconds` histogram at /metrics counts the audited statements.

mod common;

use std::time::Duration;

use common::{TestDir, TestGateway};
use serde_json::Value;
use sumun_testkit::{PgOptions, Postgres};

const BACKEND_PASSWORD: &str = "backend-Secret-1";

async fn setup() -> (Postgres, TestGateway, String) {
    let pg = Postgres::start_with(PgOptions {
        password_auth: true,
        users: vec![("app".into(), BACKEND_PASSWORD.into())],
        databases: vec!["appdb".into()],
        ..PgOptions::default()
    })
    .expect("start postgres");
    let dir = TestDir::new("pg-audit");
    let vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    let token = common::token(&vault, "bob", "sumun-audit");
    drop(vault);
    let listener = |name: &str, audit: &str| {
        format!(
            r#"
[[listeners]]
name = "{name}"
bind = "127.0.0.1:0"
protocol = "postgres"
tls = "off"
target_group = "pg"
security_groups = ["local"]
pool = {{ mode = "transaction", size = 2 }}
audit_queries = "{audit}"
"#
        )
    };
    let toml = format!(
        r#"
[gateway]
name = "sumun-audit"
[vault]
dir = "{{dir}}/vault"
key_file = "{{dir}}/master.key"
[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.0/8" }}]
{masked}
{full}
[[target_groups]]
name = "pg"
health_check = {{ enabled = false }}
targets = [{{ address = "{addr}" }}]
[[users]]
name = "bob"
auth = ["token"]
backend_credential = "pg/app"
[audit]
path = "{{dir}}/audit.jsonl"
"#,
        masked = listener("pg", "masked"),
        full = listener("pgfull", "full"),
        addr = pg.addr()
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    (pg, gw, token)
}

/// Run `sql` through listener `name` with psql; panics with psql's stderr on failure.
async fn psql(gw: &TestGateway, name: &str, token: &str, sql: &str) -> String {
    let env = [("PGPASSWORD", token), ("PGSSLMODE", "disable")];
    let (ok, out, err) = common::psql_appdb(gw.addr(name).port(), "bob", &[sql], &env).await;
    assert!(ok, "psql {sql:?} on {name} failed: {err}");
    out
}

/// The `query` events of listener `name`, parsed, once `want` of them are written.
async fn query_events(gw: &TestGateway, name: &str, want: usize) -> Vec<Value> {
    let mut events = Vec::new();
    for _ in 0..100 {
        events = gw
            .audit_log()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter(|v| v["event"] == "query" && v["listener"] == name)
            .collect();
        if events.len() >= want {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name}: {} query events, wanted {want}", events.len());
}

/// Statements whose text exercises the JSON escaping: quotes, backslashes, a tab, a newline,
/// a bell character and non-ASCII in identifiers (masking keeps identifiers), literals that
/// masking removes.
const NASTY: [&str; 3] = [
    "select 'it''s a \\ secret-42' as \"quo\"\"ted\\\"",
    "select 1 as \"tab\there\", 2 as \"new\nline\", 3 as \"bell\u{7}\"",
    "select 'žluťoučký kůň' as \"日本語\", E'\\x68unter2' as \"🦀\"",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_events_are_valid_json_and_masked_by_default() {
    let (_pg, gw, token) = setup().await;
    for sql in NASTY {
        psql(&gw, "pg", &token, sql).await;
        psql(&gw, "pgfull", &token, sql).await;
    }
    let masked = query_events(&gw, "pg", NASTY.len()).await;
    let full = query_events(&gw, "pgfull", NASTY.len()).await;
    for (i, sql) in NASTY.iter().enumerate() {
        let m = &masked[i];
        assert_eq!(
            m["query"],
            sumun_wire::sql::mask_literals(sql).as_str(),
            "{m}"
        );
        assert_eq!(full[i]["query"], *sql, "{}", full[i]);
        for e in [m, &full[i]] {
            assert_eq!(e["user"], "bob", "{e}");
            assert_eq!(e["database"], "appdb", "{e}");
            assert_eq!(e["rows"], 1, "{e}");
            assert!(e["duration_us"].as_u64().is_some(), "{e}");
            assert!(e["client_addr"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:")));
            assert_eq!(e["session_id"].as_str().map(str::len), Some(16), "{e}");
            assert!(e["target"].as_str().is_some(), "{e}");
            assert!(e.get("error").is_none(), "{e}");
            let ts = e["ts"].as_str().expect("ts");
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|err| panic!("{ts}: {err}"));
        }
    }
    // No literal and no credential reaches the log from the masked listener.
    let log = gw.audit_log();
    let masked_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"listener\":\"pg\""))
        .collect();
    for secret in [
        "secret-42",
        "68unter2",
        "luťoučký",
        token.as_str(),
        BACKEND_PASSWORD,
    ] {
        assert!(
            !masked_lines.iter().any(|l| l.contains(secret)),
            "{secret} in masked audit lines"
        );
    }
    assert!(!log.contains(&token), "token in audit log");
    assert!(!log.contains(BACKEND_PASSWORD), "password in audit log");

    // A failed statement carries its SQLSTATE.
    let (ok, _, _) = common::psql_appdb(
        gw.addr("pg").port(),
        "bob",
        &["select * from no_such_table where a = 'x'"],
        &[("PGPASSWORD", &token), ("PGSSLMODE", "disable")],
    )
    .await;
    assert!(!ok);
    let events = query_events(&gw, "pg", NASTY.len() + 1).await;
    let failed = events
        .iter()
        .find(|e| e["query"] == "select * from no_such_table where a = ?")
        .expect("failed statement audited");
    assert_eq!(failed["error"], "42P01", "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_duration_histogram_counts_audited_statements() {
    let (_pg, gw, token) = setup().await;
    psql(&gw, "pg", &token, "select 1; select 2").await;
    psql(&gw, "pg", &token, "select pg_sleep(0.03)").await;
    // A simple query is one audited statement however many it holds.
    query_events(&gw, "pg", 2).await;
    let text = gw.metrics();
    assert!(
        text.contains("# TYPE sumun_query_duration_seconds histogram"),
        "{text}"
    );
    let value = |series: &str| common::metric_value(&text, series);
    let count = value("sumun_query_duration_seconds_count{listener=\"pg\"}");
    assert_eq!(count, 2.0, "{text}");
    assert_eq!(
        value("sumun_query_duration_seconds_bucket{listener=\"pg\",le=\"+Inf\"}"),
        count
    );
    // The pg_sleep took at least 30 ms: one statement above 25 ms, none above 10 s.
    assert!(value("sumun_query_duration_seconds_bucket{listener=\"pg\",le=\"0.025\"}") <= 1.0);
    assert_eq!(
        value("sumun_query_duration_seconds_bucket{listener=\"pg\",le=\"10\"}"),
        2.0
    );
    assert!(value("sumun_query_duration_seconds_sum{listener=\"pg\"}") >= 0.03);
    // Buckets are cumulative, in order.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("sumun_query_duration_seconds_bucket{listener=\"pg\","))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("value")
        })
        .collect();
    assert_eq!(buckets.len(), 15, "{text}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    // The other listener ran nothing and has no series; the old counters still work.
    assert!(!text.contains("sumun_query_duration_seconds_count{listener=\"pgfull\"}"));
    assert_eq!(value("sumun_pg_queries_total"), 2.0);
    assert!(value("sumun_pg_query_seconds_total") >= 0.03);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_follows_the_servers_standard_conforming_strings() {
    let (_pg, gw, token) = setup().await;
    // With standard_conforming_strings off, `\'` is an escaped quote: the literal below is
    // `' hunter2 ` and the statement returns it. Read the standard way, `hunter2` would be
    // outside any literal and reach the log.
    let (ok, out, err) = common::psql_appdb(
        gw.addr("pg").port(),
        "bob",
        &[
            "set standard_conforming_strings = off",
            "select '\\' hunter2 ' as x",
        ],
        &[("PGPASSWORD", &token), ("PGSSLMODE", "disable")],
    )
    .await;
    assert!(ok, "psql failed: {err}");
    assert_eq!(out, "SET\n' hunter2 \n", "the server read one literal");
    let events = query_events(&gw, "pg", 2).await;
    let texts: Vec<&str> = events.iter().filter_map(|e| e["query"].as_str()).collect();
    assert!(texts.contains(&"select ? as x"), "{texts:?}");
    assert!(!gw.audit_log().contains("hunter2"), "{}", gw.audit_log());
}
