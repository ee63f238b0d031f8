//! Every accepted connection ends with exactly one closing flow record and a `session.end`
//! event that says truthfully how it ended: PostgreSQL logins that fail, admin-console
//! sessions, cancel requests and ordinary sessions alike, and a TLS client that hangs up
//! without `close_notify` (as most do) closed normally, not with an error.

mod common;

use std::time::Duration;

use common::raw::Raw;
use common::{TestDir, TestGateway};
use sumun_testkit::Redis;
use tokio::io::AsyncWriteExt;

const AUDIENCE: &str = "sumun-flows";

/// The closing (and any interim) flow records, one line each, as (srcport, action).
fn flow_lines(gw: &TestGateway) -> Vec<(u16, String)> {
    gw.flow_log()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((f.get(5)?.parse().ok()?, f.get(12)?.to_string()))
        })
        .collect()
}

/// The `session.end` events, as (client port, end).
fn session_ends(gw: &TestGateway) -> Vec<(u16, String)> {
    gw.audit_log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "session.end")
        .filter_map(|v| {
            let port = v["client_addr"]
                .as_str()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            Some((port, v["end"].as_str()?.to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_postgres_connection_gets_one_flow_record_and_a_truthful_end() {
    let pg = common::app_postgres(None, &[]).await;
    let dir = TestDir::new("pg-flows");
    let vault = common::backend_vault(&dir, common::APP_PASSWORD);
    let bob = common::token(&vault, "bob", AUDIENCE);
    let root = common::token(&vault, "root", AUDIENCE);
    drop(vault);
    let toml = common::pg_config(
        AUDIENCE,
        "",
        "pool = { mode = \"transaction\", size = 2 }",
        pg.addr(),
        "",
        r#"[[users]]
name = "bob"
auth = ["token"]
backend_credential = "pg/app"
[[users]]
name = "root"
auth = ["token"]
admin = true
[flow_logs]
path = "{dir}/flows.log"
[audit]
path = "{dir}/audit.jsonl"
"#,
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    let addr = gw.addr("pg");
    let mut expected: Vec<(u16, &str)> = Vec::new();

    // A session that runs a query and says goodbye.
    let mut ok = Raw::tcp(addr).await;
    let port = ok.stream.local_addr().expect("addr").port();
    let greeting = ok.login("bob", "appdb", &bob).await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
    assert_eq!(ok.query("select 1").await, Ok(vec!["1".to_string()]));
    ok.send(&[(b'X', b"")]).await;
    assert!(ok.is_closed().await);
    expected.push((port, "closed"));

    // A login with a wrong password.
    let mut bad = Raw::tcp(addr).await;
    let port = bad.stream.local_addr().expect("addr").port();
    let reply = bad.login("bob", "appdb", "not-a-token").await;
    assert_eq!(
        common::raw::first_error(&reply).map(|e| e.0).as_deref(),
        Some("28P01")
    );
    expected.push((port, "auth_failed"));

    // The admin console, used and left.
    let mut admin = Raw::tcp(addr).await;
    let port = admin.stream.local_addr().expect("addr").port();
    let greeting = admin.login("root", "sumun", &root).await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
    assert!(admin.query("SHOW POOLS").await.is_ok());
    admin.send(&[(b'X', b"")]).await;
    assert!(admin.is_closed().await);
    expected.push((port, "closed"));

    // The admin console refused to a user who is not an admin.
    let mut nosy = Raw::tcp(addr).await;
    let port = nosy.stream.local_addr().expect("addr").port();
    let reply = nosy.login("bob", "sumun", &bob).await;
    assert!(common::raw::first_error(&reply).is_some(), "{reply:?}");
    expected.push((port, "refused"));

    // A cancel request (for nobody).
    let mut cancel = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let port = cancel.local_addr().expect("addr").port();
    let mut w = sumun_wire::postgres::Writer::new();
    w.cancel_request(12345, 678);
    cancel.write_all(&w.buf).await.expect("cancel");
    assert!(common::closed_within(&mut cancel, Duration::from_secs(5)).await);
    expected.push((port, "cancel_request"));

    // A client that connects and hangs up at once.
    let quiet = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let port = quiet.local_addr().expect("addr").port();
    drop(quiet);
    expected.push((port, "closed"));

    assert!(
        common::eventually(Duration::from_secs(5), || {
            let ends = session_ends(&gw);
            expected
                .iter()
                .all(|(p, _)| ends.iter().any(|(q, _)| q == p))
        })
        .await,
        "session.end missing:\n{}",
        gw.audit_log()
    );
    let ends = session_ends(&gw);
    let flows = flow_lines(&gw);
    for (port, end) in &expected {
        let mine: Vec<&String> = ends
            .iter()
            .filter(|(p, _)| p == port)
            .map(|(_, e)| e)
            .collect();
        assert_eq!(mine, vec![end], "client port {port}:\n{}", gw.audit_log());
        let records: Vec<&String> = flows
            .iter()
            .filter(|(p, _)| p == port)
            .map(|(_, a)| a)
            .collect();
        assert_eq!(
            records,
            vec!["ACCEPT"],
            "client port {port} ({end}):\n{}",
            gw.flow_log()
        );
    }
    assert_eq!(
        gw.metric("sumun_active_flows{listener=\"pg\"}"),
        0.0,
        "{}",
        gw.metrics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_hangs_up_without_close_notify_closed_normally() {
    let redis = Redis::start().expect("redis");
    let dir = TestDir::new("tls-end");
    let ca = common::dev_certs(&dir.0);
    let toml = format!(
        r#"
[tls.default]
cert = "{{dir}}/certs/server.pem"
key = "{{dir}}/certs/server-key.pem"
[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.1/32" }}]
[[listeners]]
name = "redis-tls"
bind = "127.0.0.1:0"
protocol = "tls"
tls_config = "default"
target_group = "redis"
security_groups = ["local"]
[[target_groups]]
name = "redis"
targets = [{{ address = "127.0.0.1:{}" }}]
[flow_logs]
path = "{{dir}}/flows.log"
[audit]
path = "{{dir}}/audit.jsonl"
"#,
        redis.port()
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    let config = common::client_config(&ca, &[&rustls::version::TLS13], None);
    let mut s = common::tls_connect(gw.addr("redis-tls"), config)
        .await
        .expect("handshake");
    let port = s.get_ref().0.local_addr().expect("addr").port();
    assert_eq!(common::redis_ping(&mut s).await.expect("ping"), "+PONG");
    // Dropped without shutdown(): no close_notify, just a FIN.
    drop(s);
    assert!(
        common::eventually(Duration::from_secs(5), || session_ends(&gw)
            .iter()
            .any(|(p, _)| *p == port))
        .await,
        "{}",
        gw.audit_log()
    );
    assert_eq!(
        session_ends(&gw),
        vec![(port, "closed".to_string())],
        "{}",
        gw.audit_log()
    );
    assert_eq!(flow_lines(&gw), vec![(port, "ACCEPT".to_string())]);
}
