//! Inline protection against real servers and real clients: brute force with psql is banned at
//! the threshold, refused in PostgreSQL's own words, lifted through the admin API and after
//! expiry; refusals across listeners are a scan; a flood from one source is rate limited while
//! another is served; IP set files and a geo database (built here) refuse addresses and are
//! re-read when they change.

mod common;
#[path = "../../protect/tests/support/mmdb.rs"]
mod mmdb;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{
    audit_mark, connect_from, eventually, eventually_async, redis_ping, wait_for_audit, TestDir,
    TestGateway,
};
use sumun_vault::SecretBytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DAVE_PASSWORD: &str = "dave-Pass-1";

async fn pg_gateway(protection: &str) -> (sumun_testkit::Postgres, TestGateway) {
    let pg = common::app_postgres(None, &[]).await;
    let gw = pg_gateway_for(&pg, protection).await;
    (pg, gw)
}

/// A gateway (PostgreSQL listener `pg`, user dave, admin API, logs) in front of `pg`.
async fn pg_gateway_for(pg: &sumun_testkit::Postgres, protection: &str) -> TestGateway {
    let dir = TestDir::new("protect-pg");
    let mut vault = common::backend_vault(&dir, common::APP_PASSWORD);
    vault
        .set_user_password("dave", &SecretBytes::from_slice(DAVE_PASSWORD.as_bytes()))
        .expect("set password");
    drop(vault);
    let rest = format!(
        r#"
[[users]]
name = "dave"
auth = ["scram"]
backend_credential = "pg/app"
[admin]
listen = "127.0.0.1:0"
[audit]
path = "{{dir}}/audit.jsonl"
[flow_logs]
path = "{{dir}}/flows.log"
{protection}
"#
    );
    let toml = common::pg_config("sumun-test", "", "", pg.addr(), "", &rest);
    TestGateway::start_in(dir, &toml).await.expect("gateway")
}

async fn psql_dave(gw: &TestGateway, password: &str) -> (bool, String, String) {
    common::psql_appdb(
        gw.addr("pg").port(),
        "dave",
        &["SELECT 40 + 2"],
        &[("PGPASSWORD", password), ("PGSSLMODE", "disable")],
    )
    .await
}

/// One HTTP/1.1 request to the admin API: (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("admin connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("admin reply in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_brute_force_is_banned_refused_in_postgres_words_and_lifted() {
    let (_pg, gw) = pg_gateway(
        r#"
[protection]
exempt = []
ban_time = "5s"
max_ban_time = "5s"
[protection.brute_force]
threshold = 3
"#,
    )
    .await;
    let admin = gw.gateway.admin_addr().await.expect("admin");
    let (ok, out, err) = psql_dave(&gw, DAVE_PASSWORD).await;
    assert!(ok && out.trim() == "42", "{out}{err}");

    let mark = audit_mark(&gw);
    for _ in 0..3 {
        let (ok, _, err) = psql_dave(&gw, "wrong").await;
        assert!(!ok);
        assert!(err.contains("password authentication failed"), "{err}");
    }
    let finding = wait_for_audit(&gw, mark, "\"event\":\"finding\"").await;
    for part in [
        "\"detection\":\"brute_force\"",
        "\"technique\":\"T1110\"",
        "\"action\":\"block\"",
        "\"src\":\"127.0.0.1\"",
        "\"records\":3",
        "\"user\":\"dave\"",
    ] {
        assert!(finding.contains(part), "{part} not in {finding}");
    }
    // Banned: even the right password is refused at the door, with PostgreSQL's own error.
    let (ok, _, err) = psql_dave(&gw, DAVE_PASSWORD).await;
    assert!(!ok);
    assert!(
        err.contains("too many failed attempts from this address"),
        "{err}"
    );
    wait_for_audit(&gw, mark, "\"reason\":\"banned\"").await;
    assert_eq!(
        gw.metric("sumun_rejected_flows_total{listener=\"pg\",reason=\"banned\"}"),
        1.0
    );
    assert_eq!(
        gw.metric("sumun_findings_total{detection=\"brute_force\",severity=\"medium\"}"),
        1.0
    );
    assert_eq!(gw.metric("sumun_bans_active"), 1.0);

    // The admin API shows and lifts the ban.
    let (status, body) = http(admin, "GET", "/api/bans").await;
    assert_eq!(status, 200);
    let bans: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(bans[0]["addr"], "127.0.0.1", "{bans}");
    assert_eq!(bans[0]["reason"], "brute_force", "{bans}");
    let (status, body) = http(admin, "GET", "/api/findings").await;
    assert_eq!(status, 200);
    let findings: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(findings[0]["detection"], "brute_force", "{findings}");
    // The evidence: the source's last events (a login, then the three failures).
    let evidence = findings[0]["evidence"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let failures = evidence
        .iter()
        .filter(|e| e["event"] == "auth.failure")
        .count();
    assert_eq!(failures, 3, "{findings}");
    assert_eq!(http(admin, "DELETE", "/api/bans/127.0.0.1").await.0, 204);
    assert_eq!(http(admin, "DELETE", "/api/bans/127.0.0.1").await.0, 404);
    assert_eq!(
        http(admin, "DELETE", "/api/bans/not-an-address").await.0,
        400
    );
    let (ok, out, err) = psql_dave(&gw, DAVE_PASSWORD).await;
    assert!(
        ok && out.trim() == "42",
        "served again after unban: {out}{err}"
    );

    // Again: banned, and served once the ban expires by itself.
    for _ in 0..3 {
        assert!(!psql_dave(&gw, "wrong").await.0);
    }
    let (ok, _, err) = psql_dave(&gw, DAVE_PASSWORD).await;
    assert!(!ok && err.contains("too many failed attempts"), "{err}");
    let served = eventually_async(Duration::from_secs(30), || async {
        let (ok, out, _) = psql_dave(&gw, DAVE_PASSWORD).await;
        ok && out.trim() == "42"
    })
    .await;
    assert!(served, "the ban never expired");
    // A login right after a burst of failures is itself a finding.
    let mark = 0;
    let line = wait_for_audit(&gw, mark, "\"detection\":\"login_after_failures\"").await;
    assert!(line.contains("\"severity\":\"high\""), "{line}");
}

/// A raw (`tcp`) gateway in front of a real Redis with `listeners` listeners named l0, l1...,
/// open to `allowed` only, and `protection` appended.
async fn redis_gateway(
    listeners: usize,
    allowed: &str,
    protection: &str,
) -> (sumun_testkit::Redis, TestGateway) {
    let redis = sumun_testkit::Redis::start_async(sumun_testkit::RedisOptions::default())
        .await
        .expect("redis");
    let mut toml = format!(
        r#"
[[security_groups]]
name = "some"
ingress = [{{ cidr = "{allowed}" }}]
[[target_groups]]
name = "r"
health_check = {{ enabled = false }}
targets = [{{ address = "{}" }}]
[audit]
path = "{{dir}}/audit.jsonl"
"#,
        redis.addr()
    );
    for i in 0..listeners {
        toml.push_str(&format!(
            "[[listeners]]\nname = \"l{i}\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\ntarget_group = \"r\"\nsecurity_groups = [\"some\"]\n"
        ));
    }
    toml.push_str(protection);
    let gw = TestGateway::start(&toml).await.expect("gateway");
    (redis, gw)
}

async fn ping_from(source: &str, addr: SocketAddr) -> bool {
    match connect_from(source, addr).await {
        Ok(mut s) => redis_ping(&mut s).await.is_ok_and(|r| r == "+PONG"),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_across_listeners_are_reported_as_a_scan() {
    let (_redis, gw) = redis_gateway(5, "127.0.0.9/32", "[protection]\nexempt = []\n").await;
    let mark = audit_mark(&gw);
    for i in 0..5 {
        let addr = gw.addr(&format!("l{i}"));
        assert!(
            !ping_from("127.0.0.2", addr).await,
            "security group lets 127.0.0.2 in"
        );
    }
    let line = wait_for_audit(&gw, mark, "\"event\":\"finding\"").await;
    for part in [
        "\"detection\":\"scan\"",
        "\"technique\":\"T1046\"",
        "\"src\":\"127.0.0.2\"",
        "\"records\":5",
        "\"action\":\"log\"",
    ] {
        assert!(line.contains(part), "{part} not in {line}");
    }
    assert_eq!(
        gw.metric("sumun_findings_total{detection=\"scan\",severity=\"medium\"}"),
        1.0
    );
    // Logged, not blocked: the allowed source is served.
    assert!(ping_from("127.0.0.9", gw.addr("l0")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_source_is_rate_limited_while_another_is_served() {
    let (_redis, gw) = redis_gateway(
        1,
        "127.0.0.0/8",
        "[protection]\nexempt = []\nmax_connections = 20\nrate_window = \"1h\"\n",
    )
    .await;
    let addr = gw.addr("l0");
    let mut served = 0;
    for i in 0..60 {
        if ping_from("127.0.0.2", addr).await {
            served += 1;
        }
        // The other source is served all along.
        if i % 10 == 0 {
            assert!(ping_from("127.0.0.3", addr).await);
        }
    }
    assert_eq!(served, 20, "exactly max_connections served in the window");
    assert!(ping_from("127.0.0.3", addr).await);
    assert_eq!(
        gw.metric("sumun_rejected_flows_total{listener=\"l0\",reason=\"rate_limited\"}"),
        40.0
    );
    let log = gw.audit_log();
    assert!(
        log.lines()
            .any(|l| l.contains("\"reason\":\"rate_limited\"") && l.contains("127.0.0.2:")),
        "{log}"
    );
    assert!(!log
        .lines()
        .any(|l| l.contains("rate_limited") && l.contains("127.0.0.3:")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_and_ip_set_rules_refuse_and_follow_their_files() {
    let dir = TestDir::new("protect-geo");
    let geo = dir.path("geo.mmdb");
    std::fs::write(
        &geo,
        mmdb::country_db(&[
            (Ipv4Addr::new(127, 0, 0, 5), 32, "KP"),
            (Ipv4Addr::new(127, 0, 0, 6), 32, "NL"),
        ]),
    )
    .expect("write mmdb");
    std::fs::write(dir.path("blocked.txt"), "# bad hosts\n127.0.0.7\n").expect("write set");
    let redis = sumun_testkit::Redis::start_async(sumun_testkit::RedisOptions::default())
        .await
        .expect("redis");
    let toml = format!(
        r#"
[[ip_sets]]
name = "blocked"
file = "{{dir}}/blocked.txt"
[[ip_sets]]
name = "loopback"
cidrs = ["127.0.0.0/8"]
[[security_groups]]
name = "lo"
ingress = [{{ ip_set = "loopback" }}]
[[listeners]]
name = "l0"
bind = "127.0.0.1:0"
protocol = "tcp"
target_group = "r"
security_groups = ["lo"]
[[target_groups]]
name = "r"
health_check = {{ enabled = false }}
targets = [{{ address = "{}" }}]
[audit]
path = "{{dir}}/audit.jsonl"
[protection]
exempt = []
deny_ip_sets = ["blocked"]
[protection.geo]
database = "{{dir}}/geo.mmdb"
deny_countries = ["kp"]
"#,
        redis.addr()
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    let addr = gw.addr("l0");
    assert!(!ping_from("127.0.0.5", addr).await, "KP is denied");
    assert!(ping_from("127.0.0.6", addr).await, "NL is not");
    assert!(
        ping_from("127.0.0.4", addr).await,
        "unplaced addresses pass a deny list"
    );
    assert!(!ping_from("127.0.0.7", addr).await, "in the blocked set");
    assert_eq!(
        gw.metric("sumun_rejected_flows_total{listener=\"l0\",reason=\"geo\"}"),
        1.0
    );
    assert_eq!(
        gw.metric("sumun_rejected_flows_total{listener=\"l0\",reason=\"ip_set\"}"),
        1.0
    );
    let log = gw.audit_log();
    assert!(log.contains("\"reason\":\"geo\""), "{log}");

    // Both files are re-read when they change.
    std::fs::write(gw.dir.path("blocked.txt"), "127.0.0.8\n").expect("rewrite set");
    std::fs::write(
        gw.dir.path("geo.mmdb"),
        mmdb::country_db(&[(Ipv4Addr::new(127, 0, 0, 6), 32, "KP")]),
    )
    .expect("rewrite mmdb");
    let followed = eventually_async(Duration::from_secs(10), || async {
        ping_from("127.0.0.7", addr).await
            && ping_from("127.0.0.5", addr).await
            && !ping_from("127.0.0.8", addr).await
            && !ping_from("127.0.0.6", addr).await
    })
    .await;
    assert!(followed, "rules did not follow the changed files");
    let _ = eventually(Duration::from_millis(1), || true).await;
}

/// A webhook receiver on `port`: records (path, body) of every POST and answers 200.
async fn receiver(
    port: u16,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let socket = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind receiver");
    let seen = got.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = socket.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() < len {
                        continue;
                    }
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    seen.lock()
                        .expect("lock")
                        .push((path, body[..len].to_string()));
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    (task, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_fires_and_recovers_at_a_webhook_retried_while_it_is_down() {
    let port = sumun_testkit::free_port();
    let alarms = format!(
        r#"
[[alarms]]
name = "busy"
metric = "sumun_active_flows"
labels = {{ listener = "l0" }}
statistic = "maximum"
comparison = ">"
threshold = 0
period = "1s"
evaluation_periods = 2
webhook = "http://127.0.0.1:{port}/slack"
format = "slack"
[[alarms]]
name = "busy-json"
metric = "sumun_active_flows"
comparison = "GreaterThanThreshold"
threshold = 0.5
period = "1s"
webhook = "http://127.0.0.1:{port}/json"
"#
    );
    let (_redis, gw) = redis_gateway(1, "127.0.0.0/8", &alarms).await;
    // Quiet: no transition is sent for starting out OK.
    assert!(
        eventually(Duration::from_secs(10), || gw
            .metric("sumun_alarm_state{alarm=\"busy\"}")
            == 1.0)
        .await,
        "{}",
        gw.metrics()
    );
    // One open flow, held: both alarms go to ALARM while the receiver is down.
    let mut held = connect_from("127.0.0.2", gw.addr("l0"))
        .await
        .expect("connect");
    assert_eq!(redis_ping(&mut held).await.expect("ping"), "+PONG");
    assert!(
        eventually(Duration::from_secs(15), || {
            gw.metric("sumun_alarm_state{alarm=\"busy\"}") == 2.0
                && gw.metric("sumun_alarm_state{alarm=\"busy-json\"}") == 2.0
        })
        .await
    );
    assert_eq!(
        gw.metric("sumun_alarm_notifications_total{alarm=\"busy\",result=\"sent\"}"),
        0.0
    );
    // The receiver comes up: the ALARM notifications arrive through the retries.
    let (_task, got) = receiver(port).await;
    let both = |want: &str| {
        let got = got.lock().expect("lock");
        got.iter().any(|(p, b)| p == "/slack" && b.contains(want))
            && got
                .iter()
                .any(|(p, b)| p == "/json" && b.contains(&format!("\"state\":\"{want}\"")))
    };
    assert!(
        eventually(Duration::from_secs(30), || both("ALARM")).await,
        "{:?}",
        got.lock().expect("lock")
    );
    {
        let got = got.lock().expect("lock");
        let slack: serde_json::Value =
            serde_json::from_str(&got.iter().find(|(p, _)| p == "/slack").expect("slack").1)
                .expect("json");
        let text = slack["text"].as_str().expect("text");
        assert!(text.starts_with("[ALARM] busy on "), "{text}");
        assert_eq!(
            slack.as_object().map(|o| o.len()),
            Some(1),
            "slack body is just text"
        );
        let json: serde_json::Value =
            serde_json::from_str(&got.iter().find(|(p, _)| p == "/json").expect("json").1)
                .expect("json");
        assert_eq!(json["alarm"], "busy-json");
        assert_eq!(json["previous_state"], "OK");
        assert_eq!(json["metric"], "sumun_active_flows");
        assert_eq!(json["threshold"], 0.5);
    }
    // The flow closes: both recover, and OK is delivered.
    drop(held);
    assert!(
        eventually(Duration::from_secs(30), || both("OK")).await,
        "{:?}",
        got.lock().expect("lock")
    );
    assert!(
        eventually(Duration::from_secs(5), || gw.metric(
            "sumun_alarm_notifications_total{alarm=\"busy\",result=\"sent\"}"
        ) == 2.0)
        .await
    );
    assert_eq!(
        gw.metric("sumun_alarm_notifications_total{alarm=\"busy\",result=\"failed\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_payloads_and_privilege_changes_through_psql_are_findings() {
    let (_pg, gw) = pg_gateway("[protection]\nexempt = []\n").await;
    let port = gw.addr("pg").port();
    let env = [("PGPASSWORD", DAVE_PASSWORD), ("PGSSLMODE", "disable")];
    let mark = audit_mark(&gw);
    let (ok, out, err) = common::psql_appdb(
        port,
        "dave",
        &[
            "SELECT count(*) FROM pg_tables WHERE tablename = 'users'",
            "SELECT 40 + 2",
        ],
        &env,
    )
    .await;
    assert!(ok, "{out}{err}");
    // An application query raises nothing.
    let benign = wait_for_audit(&gw, mark, "SELECT ? + ?").await;
    assert!(benign.contains("\"event\":\"query\""), "{benign}");
    assert!(
        !gw.audit_log().contains("\"event\":\"finding\""),
        "{}",
        gw.audit_log()
    );

    // sqlmap's classic payload in a literal, and a GRANT by a user who is no administrator.
    let (ok, out, err) = common::psql_appdb(
        port,
        "dave",
        &[
            "SELECT count(*) FROM pg_tables WHERE tablename = 'x'' OR ''1''=''1'' -- '",
            "GRANT CONNECT ON DATABASE appdb TO PUBLIC",
        ],
        &env,
    )
    .await;
    assert!(ok, "{out}{err}");
    let sqli = wait_for_audit(&gw, mark, "\"detection\":\"sql_injection\"").await;
    for part in [
        "\"technique\":\"T1190\"",
        "\"action\":\"log\"",
        "\"user\":\"dave\"",
    ] {
        assert!(sqli.contains(part), "{part} not in {sqli}");
    }
    assert!(
        !sqli.contains("'1'='1"),
        "the finding quotes no literal: {sqli}"
    );
    let grant = wait_for_audit(&gw, mark, "\"detection\":\"privilege_change\"").await;
    assert!(
        grant.contains("ran GRANT") && grant.contains("\"technique\":\"T1098\""),
        "{grant}"
    );
    // Log mode: the source is still served.
    let (ok, out, _) = psql_dave(&gw, DAVE_PASSWORD).await;
    assert!(ok && out.trim() == "42");
}

/// Statement detections need no audit log: with none configured, an injection still becomes a
/// finding at /api/findings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injections_are_found_without_an_audit_log() {
    let pg = common::app_postgres(None, &[]).await;
    let dir = TestDir::new("protect-noaudit");
    let mut vault = common::backend_vault(&dir, common::APP_PASSWORD);
    vault
        .set_user_password("app", &SecretBytes::from_slice(DAVE_PASSWORD.as_bytes()))
        .expect("set password");
    drop(vault);
    let rest = r#"
[[users]]
name = "app"
auth = ["scram"]
backend_credential = "pg/app"
[admin]
listen = "127.0.0.1:0"
[protection]
exempt = []
"#;
    let toml = common::pg_config("sumun-test", "", "", pg.addr(), "", rest);
    assert!(!toml.contains("[audit]"), "{toml}");
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    let env = [("PGPASSWORD", DAVE_PASSWORD), ("PGSSLMODE", "disable")];
    let (ok, out, err) = common::psql_appdb(
        gw.addr("pg").port(),
        "app",
        &["SELECT count(*) FROM pg_tables WHERE tablename = '' OR '1'='1'"],
        &env,
    )
    .await;
    assert!(ok, "{out}{err}");
    let admin = gw.gateway.admin_addr().await.expect("admin");
    let found = common::eventually_async(Duration::from_secs(10), || async {
        let (status, body) = http(admin, "GET", "/api/findings").await;
        status == 200 && body.contains("\"detection\":\"sql_injection\"")
    })
    .await;
    let (_, body) = http(admin, "GET", "/api/findings").await;
    assert!(
        found,
        "no sql_injection finding without an audit log: {body}"
    );
    assert!(
        !body.contains("'1'='1"),
        "the finding quotes no literal: {body}"
    );
}

async fn refused_as_banned(gw: &TestGateway) -> bool {
    let (ok, _, err) = psql_dave(gw, DAVE_PASSWORD).await;
    !ok && err.contains("too many failed attempts from this address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_bans_through_redis_and_keep_their_own_when_it_is_lost() {
    let mut redis = sumun_testkit::Redis::start_async(sumun_testkit::RedisOptions::default())
        .await
        .expect("redis");
    let pg = common::app_postgres(None, &[]).await;
    let protection = format!(
        "[protection]\nexempt = []\nshared = \"redis://{}/0\"\n[protection.brute_force]\nthreshold = 3\n",
        redis.addr()
    );
    let one = pg_gateway_for(&pg, &protection).await;
    let two = pg_gateway_for(&pg, &protection).await;
    assert!(psql_dave(&two, DAVE_PASSWORD).await.0);

    // Brute force on one replica: the other refuses the source too.
    for _ in 0..3 {
        assert!(!psql_dave(&one, "wrong").await.0);
    }
    assert!(refused_as_banned(&one).await);
    assert!(
        eventually_async(Duration::from_secs(15), || refused_as_banned(&two)).await,
        "the ban never reached the other replica"
    );
    let key = redis
        .cli(&["ZRANGE", "sumun:sumun-test:bans", "0", "-1"])
        .expect("redis-cli");
    assert!(key.contains("127.0.0.1"), "{key}");

    // Lifted on the second: lifted on the first too.
    let admin = two.gateway.admin_addr().await.expect("admin");
    assert_eq!(http(admin, "DELETE", "/api/bans/127.0.0.1").await.0, 204);
    assert!(
        eventually_async(Duration::from_secs(15), || async {
            psql_dave(&one, DAVE_PASSWORD).await.0
        })
        .await,
        "the unban never reached the first replica"
    );

    // Redis lost: each replica keeps enforcing what it decides itself.
    redis.kill();
    for _ in 0..3 {
        assert!(!psql_dave(&one, "wrong").await.0);
    }
    assert!(
        refused_as_banned(&one).await,
        "a replica without Redis still bans"
    );
    assert!(psql_dave(&two, DAVE_PASSWORD).await.0);
    // Redis back: the ban made meanwhile is published and reaches the other replica.
    redis.restart().expect("restart redis");
    assert!(
        eventually_async(Duration::from_secs(20), || refused_as_banned(&two)).await,
        "the ban made while Redis was away was never shared"
    );
}

/// `deploy/`: the Prometheus rules pass `promtool check rules` (Debian package `prometheus`,
/// installed by scripts/test), the Grafana dashboard is JSON, and every `sumun_*` metric either
/// names is one the gateway exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_rules_pass_promtool_and_name_only_exported_metrics() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let rules = deploy.join("prometheus/sumun-alerts.yml");
    let (ok, out, err) = common::run(
        "promtool",
        &["check", "rules", &rules.display().to_string()],
        &[],
    )
    .await;
    assert!(ok && out.contains("SUCCESS"), "promtool: {out}{err}");
    let dashboard =
        std::fs::read_to_string(deploy.join("grafana/sumun-dashboard.json")).expect("dashboard");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() > 10));

    let (_redis, gw) = redis_gateway(
        1,
        "127.0.0.0/8",
        "[[alarms]]\nname = \"a\"\nmetric = \"sumun_active_flows\"\ncomparison = \">\"\nthreshold = 1\nwebhook = \"http://127.0.0.1:9/\"\n",
    )
    .await;
    let metrics = gw.metrics();
    let exported: std::collections::HashSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let text = std::fs::read_to_string(&rules).expect("rules") + &dashboard;
    let mut named = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices("sumun_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = name.strip_suffix("_bucket").unwrap_or(&name).to_string();
        named.insert(family);
    }
    let missing: Vec<&String> = named
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(named.len() > 10, "{named:?}");
    assert!(
        missing.is_empty(),
        "deploy/ names metrics /metrics does not have: {missing:?}\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banned_mariadb_and_redis_cli_clients_are_told_in_their_protocols_words() {
    let toml = r#"
[[security_groups]]
name = "local"
ingress = [{ cidr = "127.0.0.0/8" }]
[[listeners]]
name = "my"
bind = "127.0.0.1:0"
protocol = "mysql"
tls = "off"
target_group = "nowhere"
security_groups = ["local"]
[[listeners]]
name = "rd"
bind = "127.0.0.1:0"
protocol = "redis"
tls = "off"
target_group = "nowhere"
security_groups = ["local"]
[[target_groups]]
name = "nowhere"
health_check = { enabled = false }
targets = [{ address = "127.0.0.1:9" }]
[protection]
exempt = []
"#;
    let gw = TestGateway::start(toml).await.expect("gateway");
    let ban = gw
        .gateway
        .shared()
        .protection()
        .ban("127.0.0.1".parse().expect("ip"), "brute_force");
    assert_eq!(ban.until - ban.since, 600);
    let port = gw.addr("my").port().to_string();
    let (ok, _, err) = common::run(
        "mariadb",
        &[
            "--no-defaults",
            "--protocol=TCP",
            "-h",
            "127.0.0.1",
            "-P",
            &port,
            "-u",
            "bob",
            "--skip-ssl",
            "--connect-timeout=10",
            "-e",
            "SELECT 1",
        ],
        &[("MYSQL_PWD", "x")],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("1129") && err.contains("too many failed attempts from this address"),
        "{err}"
    );
    let port = gw.addr("rd").port().to_string();
    let (_, out, err) =
        common::run("redis-cli", &["-h", "127.0.0.1", "-p", &port, "PING"], &[]).await;
    assert!(
        out.contains("ERR too many failed attempts from this address")
            || err.contains("ERR too many failed attempts"),
        "{out}{err}"
    );
    assert_eq!(
        gw.metric("sumun_rejected_flows_total{listener=\"my\",reason=\"banned\"}")
            + gw.metric("sumun_rejected_flows_total{listener=\"rd\",reason=\"banned\"}"),
        2.0
    );
}
