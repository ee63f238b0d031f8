//! The Redis front end (issue 19) against a real Redis, with the real `redis-cli` and raw
//! pipelines: token logins over TLS, NOAUTH before a login, WRONGPASS, per-user ACL rules in
//! Redis's own syntax answered -NOPERM in reply order, TLS required.

mod common;

use common::{TestDir, TestGateway};
use sumun_testkit::{Redis, RedisOptions};

const AUDIENCE: &str = "sumun-redis-tests";
const APP_PASSWORD: &str = "redis-app-pw-1";

struct Setup {
    redis: Redis,
    gw: TestGateway,
    bob: String,
    eve: String,
    ca: std::path::PathBuf,
}

async fn setup(tls: &str) -> Setup {
    setup_on(tls, "", &[]).await
}

async fn start_redis() -> Redis {
    tokio::task::spawn_blocking(|| {
        Redis::start_with(RedisOptions {
            users: vec![("app".into(), APP_PASSWORD.into())],
            ..RedisOptions::default()
        })
        .expect("start redis")
    })
    .await
    .expect("task")
}

/// [`setup`] with health checks (`checks`) in front of `targets` (its own server when empty).
async fn setup_on(tls: &str, checks: &str, targets: &[std::net::SocketAddr]) -> Setup {
    let redis = tokio::task::spawn_blocking(|| {
        Redis::start_with(RedisOptions {
            users: vec![("app".into(), APP_PASSWORD.into())],
            ..RedisOptions::default()
        })
        .expect("start redis")
    })
    .await
    .expect("task");
    let dir = TestDir::new("redis");
    let key = sumun_vault::LocalMasterKey::generate().expect("key");
    key.write_key_file(&dir.path("master.key"))
        .expect("key file");
    let mut vault =
        sumun_vault::Vault::init(&dir.path("vault"), Box::new(key), None).expect("init vault");
    vault
        .put(
            "redis/app",
            &sumun_vault::SecretBytes::from_slice(APP_PASSWORD.as_bytes()),
            sumun_vault::SecretMeta {
                kind: Some(sumun_vault::SecretKind::Redis),
                username: Some("app".into()),
                ..sumun_vault::SecretMeta::default()
            },
        )
        .expect("put");
    let bob = common::token(&vault, "bob", AUDIENCE);
    let eve = common::token(&vault, "eve", AUDIENCE);
    drop(vault);
    let ca = common::dev_certs(&dir.path(""));
    let toml = format!(
        r#"
[gateway]
name = "{AUDIENCE}"
[vault]
dir = "{{dir}}/vault"
key_file = "{{dir}}/master.key"
[tls.dev]
cert = "{{dir}}/certs/server.pem"
key = "{{dir}}/certs/server-key.pem"
[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.0/8" }}]
[[listeners]]
name = "rd"
bind = "127.0.0.1:0"
protocol = "redis"
target_group = "redis"
security_groups = ["local"]
tls = "{tls}"
tls_config = "dev"
[[target_groups]]
name = "redis"
{checks}
targets = [{targets}]
[[users]]
name = "bob"
backend_credential = "redis/app"
[[users]]
name = "eve"
backend_credential = "redis/app"
redis_acl = "+@all -@dangerous ~app:* &news"
[audit]
path = "{{dir}}/audit.jsonl"
"#,
        checks = if checks.is_empty() {
            "health_check = { enabled = false }"
        } else {
            checks
        },
        targets = if targets.is_empty() {
            format!("{{ address = \"{}\" }}", redis.addr())
        } else {
            targets
                .iter()
                .map(|t| format!("{{ address = \"{t}\" }}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    Setup {
        redis,
        gw,
        bob,
        eve,
        ca,
    }
}

/// `redis-cli` through the gateway: (success, stdout, stderr).
async fn cli(
    s: &Setup,
    login: Option<(&str, &str)>,
    tls: bool,
    args: &[&str],
) -> (bool, String, String) {
    let port = s.gw.addr("rd").port().to_string();
    let ca = s.ca.display().to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &port];
    if tls {
        all.extend_from_slice(&["--tls", "--cacert", &ca]);
    }
    if let Some((user, _)) = login {
        all.extend_from_slice(&["--user", user]);
    }
    all.extend_from_slice(args);
    let env: Vec<(&str, &str)> = login
        .map(|(_, p)| vec![("REDISCLI_AUTH", p)])
        .unwrap_or_default();
    common::run("redis-cli", &all, &env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_logs_in_with_a_token_over_tls_and_runs_commands() {
    let s = setup("optional").await;
    let (ok, out, err) = cli(&s, Some(("bob", &s.bob)), true, &["set", "k", "v"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "OK");
    let (_, out, _) = cli(&s, Some(("bob", &s.bob)), true, &["get", "k"]).await;
    assert_eq!(out.trim(), "v");
    // Really on the server, as the vault's user.
    assert_eq!(
        s.redis
            .cli_as("app", APP_PASSWORD, &["get", "k"])
            .expect("direct")
            .trim(),
        "v"
    );
    let (_, out, _) = cli(&s, Some(("bob", &s.bob)), true, &["acl", "whoami"]).await;
    assert!(out.contains("NOPERM") || out.trim() == "app", "{out}");
    assert!(
        s.gw.metric("sumun_redis_logins_total") >= 2.0,
        "{}",
        s.gw.metrics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_login_only_auth_works_and_bad_tokens_get_wrongpass() {
    let s = setup("optional").await;
    let (_, out, _) = cli(&s, None, true, &["get", "k"]).await;
    assert!(out.contains("NOAUTH Authentication required"), "{out}");
    let (_, out, err) = cli(&s, Some(("bob", "not-a-token")), true, &["ping"]).await;
    assert!(
        format!("{out}{err}")
            .contains("WRONGPASS invalid username-password pair or user is disabled"),
        "{out} {err}"
    );
    // Bob's token is not eve's.
    let (_, out, err) = cli(&s, Some(("eve", &s.bob)), true, &["ping"]).await;
    assert!(format!("{out}{err}").contains("WRONGPASS"), "{out} {err}");
    // A token never goes in plain text: refused like a wrong one.
    let (_, out, err) = cli(&s, Some(("bob", &s.bob)), false, &["ping"]).await;
    assert!(format!("{out}{err}").contains("WRONGPASS"), "{out} {err}");
    let audit = common::wait_for_audit(&s.gw, 0, "token_needs_tls").await;
    assert!(audit.contains("\"event\":\"auth.failure\""), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_rules_in_redis_syntax_refuse_commands_keys_and_channels_as_redis_does() {
    let s = setup("optional").await;
    let eve = |args: &'static [&'static str]| cli(&s, Some(("eve", &s.eve)), true, args);
    let (_, out, _) = eve(&["set", "app:x", "1"]).await;
    assert_eq!(out.trim(), "OK");
    let (_, out, _) = eve(&["set", "other:x", "1"]).await;
    assert!(out.contains("NOPERM") && out.contains("key"), "{out}");
    let (_, out, _) = eve(&["config", "get", "maxmemory"]).await;
    assert!(
        out.contains("NOPERM") && out.contains("config|get"),
        "{out}"
    );
    let (_, out, _) = eve(&["publish", "secret", "x"]).await;
    assert!(out.contains("NOPERM") && out.contains("channel"), "{out}");
    let (_, out, _) = eve(&["publish", "news", "x"]).await;
    assert_eq!(out.trim(), "0");
    // A script would run with the server-side user's rights: refused to users with rules.
    let (_, out, _) = eve(&["eval", "return redis.call('flushall')", "0"]).await;
    assert!(out.contains("NOPERM") && out.contains("scripts"), "{out}");
    assert_eq!(
        s.redis
            .cli_as("app", APP_PASSWORD, &["get", "app:x"])
            .expect("direct")
            .trim(),
        "1",
        "the script did not run"
    );
    // Nothing refused reached the server.
    assert_eq!(
        s.redis
            .cli_as("app", APP_PASSWORD, &["exists", "other:x"])
            .expect("direct")
            .trim(),
        "0"
    );
    assert!(
        s.gw.metric("sumun_redis_commands_denied_total") >= 3.0,
        "{}",
        s.gw.metrics()
    );
    let audit = common::wait_for_audit(&s.gw, 0, "command.denied").await;
    assert!(
        !audit.contains("other:x"),
        "key names stay out of the audit log: {audit}"
    );
}

/// A pipeline with a refused command in the middle gets every reply in order, the refusal in
/// its place, in one round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_in_a_pipeline_is_answered_in_its_place() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup("optional").await;
    let config = common::client_config(&s.ca, &[&rustls::version::TLS13], None);
    let mut c = common::tls_connect(s.gw.addr("rd"), config)
        .await
        .expect("tls");
    let pipeline = format!(
        "AUTH eve {}\r\nSET app:a 1\r\nGET other:b\r\nINCR app:a\r\nFLUSHALL\r\nGET app:a\r\n",
        s.eve
    );
    c.write_all(pipeline.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let want_lines = 6;
    let mut chunk = [0u8; 4096];
    while got.iter().filter(|&&b| b == b'\n').count() < want_lines + 1 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), c.read(&mut chunk))
            .await
            .expect("replies within 10 s")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines[0], "+OK", "{text}");
    assert_eq!(lines[1], "+OK", "{text}");
    assert!(lines[2].starts_with("-NOPERM"), "{text}");
    assert_eq!(lines[3], ":2", "{text}");
    assert!(lines[4].starts_with("-NOPERM"), "{text}");
    assert_eq!(lines[5], "$1", "{text}");
    assert_eq!(lines[6], "2", "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_text_client_of_a_tls_listener_is_told_why() {
    let s = setup("required").await;
    let (_, out, err) = cli(&s, None, false, &["ping"]).await;
    assert!(
        format!("{out}{err}").contains("requires TLS"),
        "{out} {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_acl_rules_are_refused_when_the_config_is_applied() {
    let s = setup("optional").await;
    let toml = std::fs::read_to_string(s.gw.dir.path("sumun.toml")).expect("config");
    let bad = toml.replace(
        "redis_acl = \"+@all -@dangerous ~app:* &news\"",
        "redis_acl = \"+@all >a-password\"",
    );
    assert_ne!(bad, toml);
    let err = s.gw.reload(&bad).await.expect_err("a password rule");
    assert!(err.to_string().contains("user 'eve': redis_acl"), "{err}");
    // Nothing changed: eve still runs under her rules.
    let (_, out, _) = cli(&s, Some(("eve", &s.eve)), true, &["set", "other:x", "1"]).await;
    assert!(out.contains("NOPERM"), "{out}");
}

/// Health checks learn roles with `ROLE`; writes go to the primary; when it dies and the
/// replica is promoted (`REPLICAOF NO ONE`), new clients write to the new primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_the_primary_through_a_failover() {
    let a = start_redis().await;
    let b = start_redis().await;
    for cmd in [
        vec!["config", "set", "masteruser", "app"],
        vec!["config", "set", "masterauth", APP_PASSWORD],
    ] {
        b.cli_as("app", APP_PASSWORD, &cmd)
            .expect("replica settings");
    }
    b.cli_as(
        "app",
        APP_PASSWORD,
        &["replicaof", "127.0.0.1", &a.port().to_string()],
    )
    .expect("replicaof");
    let s = setup_on(
        "optional",
        "health_check = { protocol = \"redis\", credential = \"redis/app\", interval = \"300ms\", timeout = \"250ms\", healthy_threshold = 2, unhealthy_threshold = 2 }",
        &[a.addr(), b.addr()],
    )
    .await;
    let primary_is = |s: &Setup, addr: std::net::SocketAddr| {
        sumun_gateway::admin::server_rows(s.gw.gateway.shared())
            .iter()
            .any(|r| {
                r.address == addr.to_string()
                    && r.role == "primary"
                    && format!("{:?}", r.health) == "Healthy"
            })
    };
    assert!(
        common::eventually(std::time::Duration::from_secs(20), || primary_is(
            &s,
            a.addr()
        ))
        .await,
        "{:?}",
        sumun_gateway::admin::server_rows(s.gw.gateway.shared())
    );
    let (_, out, err) = cli(&s, Some(("bob", &s.bob)), true, &["set", "k", "1"]).await;
    assert_eq!(out.trim(), "OK", "{err}");
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || b
            .cli_as("app", APP_PASSWORD, &["get", "k"])
            .is_ok_and(|v| v.trim() == "1"))
        .await,
        "never replicated"
    );
    drop(a);
    b.cli_as("app", APP_PASSWORD, &["replicaof", "no", "one"])
        .expect("promote");
    assert!(
        common::eventually(std::time::Duration::from_secs(20), || primary_is(
            &s,
            b.addr()
        ))
        .await,
        "{:?}",
        sumun_gateway::admin::server_rows(s.gw.gateway.shared())
    );
    let (_, out, err) = cli(&s, Some(("bob", &s.bob)), true, &["set", "k", "2"]).await;
    assert_eq!(out.trim(), "OK", "{err}");
    assert_eq!(
        b.cli_as("app", APP_PASSWORD, &["get", "k"])
            .expect("get")
            .trim(),
        "2"
    );
}

/// A claimed argument over the gateway's limit is refused at its length, with Redis's words,
/// before any of it is held; a claimed 4 GiB one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_huge_arguments_are_refused_at_their_length() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup("optional").await;
    for claim in ["70000000", "4294967296"] {
        let config = common::client_config(&s.ca, &[&rustls::version::TLS13], None);
        let mut c = common::tls_connect(s.gw.addr("rd"), config)
            .await
            .expect("tls");
        let login = format!("AUTH bob {}\r\n*2\r\n$4\r\nECHO\r\n${claim}\r\nabc", s.bob);
        c.write_all(login.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), c.read(&mut chunk))
                .await
                .expect("an answer and a close within 10 s")
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("+OK\r\n"), "{claim}: {text}");
        assert!(
            text.contains("-ERR Protocol error: invalid bulk length"),
            "{claim}: {text}"
        );
    }
}
