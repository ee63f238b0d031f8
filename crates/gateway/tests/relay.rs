//! `tcp` and `tls` listeners with real clients against real servers: psql, pgbench and
//! redis-cli through both; security groups; flow and audit records; metrics.

mod common;

use std::time::Duration;

use common::*;
use sumun_testkit::{Postgres, Redis};
use tokio::io::AsyncWriteExt;

fn config(pg_port: u16, redis_port: u16) -> String {
    format!(
        r#"
[gateway]
name = "test-gw"

[tls.default]
cert = "{{dir}}/certs/server.pem"
key = "{{dir}}/certs/server-key.pem"

[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.1/32", description = "this host" }}]

[[listeners]]
name = "pg-tcp"
bind = "127.0.0.1:0"
protocol = "tcp"
target_group = "pg"
security_groups = ["local"]

[[listeners]]
name = "pg-tls"
bind = "127.0.0.1:0"
protocol = "tls"
tls_config = "default"
target_group = "pg"
security_groups = ["local"]

[[listeners]]
name = "redis-tcp"
bind = "127.0.0.1:0"
protocol = "tcp"
target_group = "redis"
security_groups = ["local"]

[[listeners]]
name = "redis-tls"
bind = "127.0.0.1:0"
protocol = "tls"
tls_config = "default"
target_group = "redis"
security_groups = ["local"]

[[target_groups]]
name = "pg"
targets = [{{ address = "127.0.0.1:{pg_port}" }}]

[[target_groups]]
name = "redis"
targets = [{{ address = "127.0.0.1:{redis_port}" }}]

[flow_logs]
path = "{{dir}}/flows.log"

[audit]
path = "{{dir}}/audit.jsonl"
"#
    )
}

async fn start() -> (Postgres, Redis, TestGateway, std::path::PathBuf) {
    let pg = Postgres::start().expect("start postgres");
    let redis = Redis::start().expect("start redis");
    let dir = TestDir::new("relay");
    let ca = dev_certs(&dir.0);
    let gw = TestGateway::start_in(dir, &config(pg.port(), redis.port()))
        .await
        .expect("start gateway");
    (pg, redis, gw, ca)
}

fn psql_args(port: u16) -> Vec<String> {
    vec![
        "-At".into(),
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-U".into(),
        "postgres".into(),
        "-d".into(),
        "postgres".into(),
    ]
}

async fn psql(port: u16, sql: &str) -> (bool, String, String) {
    let mut args = psql_args(port);
    args.push("-c".into());
    args.push(sql.into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(
        "psql",
        &args,
        &[("PGSSLMODE", "disable"), ("PGCONNECT_TIMEOUT", "5")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_pgbench_and_redis_cli_through_tcp_and_tls() {
    let (_pg, _redis, gw, ca) = start().await;
    let pg_tcp = gw.addr("pg-tcp").port();
    let pg_tls_tunnel = tls_tunnel(gw.addr("pg-tls"), &ca).await.port();

    for port in [pg_tcp, pg_tls_tunnel] {
        let (ok, out, err) = psql(port, "select 40 + 2").await;
        assert!(ok, "psql through port {port}: {err}");
        assert_eq!(out.trim(), "42");
    }

    // pgbench: initialise through the tcp listener, run the select-only script through both.
    let port = pg_tcp.to_string();
    let (ok, _, err) = run(
        "pgbench",
        &[
            "-i",
            "-s",
            "1",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "postgres",
        ],
        &[("PGSSLMODE", "disable")],
    )
    .await;
    assert!(ok, "pgbench -i: {err}");
    for port in [pg_tcp, pg_tls_tunnel] {
        let port = port.to_string();
        let (ok, out, err) = run(
            "pgbench",
            &[
                "-S",
                "-c",
                "4",
                "-j",
                "2",
                "-t",
                "200",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "postgres",
            ],
            &[("PGSSLMODE", "disable")],
        )
        .await;
        assert!(ok, "pgbench -S through {port}: {err}");
        assert!(
            out.contains("number of transactions actually processed: 800/800"),
            "{out}"
        );
    }

    // redis-cli, plain and with its own TLS support.
    let port = gw.addr("redis-tcp").port().to_string();
    let (ok, out, err) = run(
        "redis-cli",
        &["-h", "127.0.0.1", "-p", &port, "set", "k", "v1"],
        &[],
    )
    .await;
    assert!(ok && out.trim() == "OK", "{out} {err}");
    let port = gw.addr("redis-tls").port().to_string();
    let ca_s = ca.display().to_string();
    let (ok, out, err) = run(
        "redis-cli",
        &[
            "--tls",
            "--cacert",
            &ca_s,
            "-h",
            "localhost",
            "-p",
            &port,
            "get",
            "k",
        ],
        &[],
    )
    .await;
    assert!(ok, "redis-cli --tls: {err}");
    assert_eq!(out.trim(), "v1");

    // Everything above was recorded: ACCEPT flow records for each listener, TLS metrics. A
    // record is written when the gateway has seen both sides close, a moment after the client
    // exits.
    let recorded = |flows: &str, listener: &str| {
        flows.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.len() == 14
                && f[0] == "2"
                && f[1] == "test-gw"
                && f[2] == listener
                && f[12] == "ACCEPT"
                && f[13] == "OK"
        })
    };
    let listeners = ["pg-tcp", "pg-tls", "redis-tcp", "redis-tls"];
    common::eventually(Duration::from_secs(5), || {
        let flows = gw.flow_log();
        listeners.iter().all(|l| recorded(&flows, l))
    })
    .await;
    let flows = gw.flow_log();
    for listener in listeners {
        assert!(
            recorded(&flows, listener),
            "no ACCEPT record for {listener} in:\n{flows}"
        );
    }
    assert!(gw.metric("sumun_new_flows_total{listener=\"redis-tcp\"}") >= 1.0);
    assert!(
        gw.metric("sumun_processed_bytes_total{listener=\"pg-tcp\",direction=\"out\"}") > 1000.0
    );
    assert!(gw.metric("sumun_healthy_targets{target_group=\"pg\"}") == 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_group_rejects_other_sources_before_any_byte() {
    let (_pg, _redis, gw, _ca) = start().await;
    let addr = gw.addr("redis-tcp");

    // 127.0.0.2 is outside the "local" group (127.0.0.1/32): closed at once, nothing relayed.
    let mut denied = connect_from("127.0.0.2", addr).await.expect("tcp connect");
    let _ = denied.write_all(b"PING\r\n").await;
    assert!(
        closed_within(&mut denied, Duration::from_secs(2)).await,
        "denied client was not closed"
    );

    // 127.0.0.1 gets through.
    let mut allowed = connect_from("127.0.0.1", addr).await.expect("connect");
    assert_eq!(redis_ping(&mut allowed).await.expect("ping"), "+PONG");

    let flows = gw.flow_log();
    let reject = flows
        .lines()
        .find(|l| l.contains(" REJECT "))
        .unwrap_or_else(|| panic!("no REJECT record:\n{flows}"));
    let f: Vec<&str> = reject.split(' ').collect();
    assert_eq!(f[2], "redis-tcp");
    assert_eq!(f[3], "127.0.0.2");
    assert_eq!(f[4], "127.0.0.1");
    assert_eq!(f[6], addr.port().to_string());
    assert_eq!(f[9], "0", "a rejected flow carries no bytes");

    let audit = gw.audit_log();
    let event: serde_json::Value = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("audit json"))
        .find(|e| e["event"] == "connection.rejected")
        .unwrap_or_else(|| panic!("no connection.rejected event:\n{audit}"));
    assert_eq!(event["listener"], "redis-tcp");
    assert!(event["client_addr"]
        .as_str()
        .expect("addr")
        .starts_with("127.0.0.2:"));
    assert_eq!(event["reason"], "security_group");
    assert!(event["ts"].as_str().expect("ts").contains('T'));
    assert_eq!(
        gw.metric("sumun_rejected_flows_total{listener=\"redis-tcp\",reason=\"security_group\"}"),
        1.0
    );
}
