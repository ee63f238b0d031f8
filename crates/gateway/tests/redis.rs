//! The Redis front end (issue 19) against a real Redis, with the real `redis-cli` and raw
//! pipelines: token logins over TLS, NOAUTH before a login, WRONGPASS, per-user ACL rules in
//! Redis's own syntax answered -NOPERM in reply order, TLS required.

mod common;

use std::sync::Arc;

use common::{TestDir, TestGateway};
use sumun_testkit::{Redis, RedisOptions};

const AUDIENCE: &str = "sumun-redis-tests";
const APP_PASSWORD: &str = "redis-app-pw-1";

struct Setup {
    redis: Redis,
    gw: TestGateway,
    bob: String,
    eve: String,
    root: String,
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
    setup_with(tls, checks, targets, "").await
}

/// [`setup_on`] with more settings of the listener (`pool = {...}`).
async fn setup_with(
    tls: &str,
    checks: &str,
    targets: &[std::net::SocketAddr],
    listener_extra: &str,
) -> Setup {
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
    let vault = common::vault_with_secret(
        &dir,
        "redis/app",
        sumun_vault::SecretKind::Redis,
        APP_PASSWORD,
    );
    let bob = common::token(&vault, "bob", AUDIENCE);
    let eve = common::token(&vault, "eve", AUDIENCE);
    let root = common::token(&vault, "root", AUDIENCE);
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
{listener_extra}
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
[[users]]
name = "root"
backend_credential = "redis/app"
redis_acl = "+@all ~* &*"
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
        root,
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

// ---- Multiplexing -------------------------------------------------------------------------

use sumun_wire::resp::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A raw RESP client over TLS: pipelines written in one write, replies decoded one by one.
struct Rc {
    s: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buf: Vec<u8>,
}

fn encode(cmds: &[Vec<String>]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cmds {
        sumun_wire::resp::encode_command(&mut out, c);
    }
    out
}

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

impl Rc {
    async fn connect(s: &Setup) -> Rc {
        let config = common::client_config(&s.ca, &[&rustls::version::TLS13], None);
        let stream = common::tls_connect(s.gw.addr("rd"), config)
            .await
            .expect("tls");
        Rc {
            s: stream,
            buf: Vec::new(),
        }
    }

    /// Connected and logged in with `AUTH user token`.
    async fn login(s: &Setup, user: &str, token: &str) -> Rc {
        let mut c = Rc::connect(s).await;
        let r = c.call(&["AUTH", user, token]).await;
        assert_eq!(r, Value::Simple(b"OK".to_vec()), "login of {user}");
        c
    }

    async fn send(&mut self, cmds: &[Vec<String>]) {
        self.s.write_all(&encode(cmds)).await.expect("write");
        self.s.flush().await.expect("flush");
    }

    /// The next reply (or push), within 10 s.
    async fn read(&mut self) -> Value {
        let mut chunk = vec![0u8; 65536];
        loop {
            if let Some((v, n)) =
                sumun_wire::resp::decode(&self.buf, &sumun_wire::resp::Limits::default())
                    .expect("a RESP reply")
            {
                self.buf.drain(..n);
                return v;
            }
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(10), self.s.read(&mut chunk))
                    .await
                    .expect("a reply within 10 s")
                    .expect("read");
            assert!(n > 0, "the gateway closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn call(&mut self, args: &[&str]) -> Value {
        self.send(&[cmd(args)]).await;
        self.read().await
    }
}

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

/// The server connections redis-server has open for the gateway's backend user (the
/// `redis-cli` asking is not one of them).
fn server_connections(s: &Setup) -> usize {
    let list = s
        .redis
        .cli_as("app", APP_PASSWORD, &["client", "list"])
        .expect("client list");
    list.lines()
        .filter(|l| l.contains("user=app") && !l.contains("cmd=client|list"))
        .count()
}

fn redis_pools(s: &Setup) -> Vec<serde_json::Value> {
    sumun_gateway::frontend::FrontEnd::pool_rows(
        s.gw.gateway
            .shared()
            .front_ends
            .of::<sumun_gateway::redis::RedisFrontEnd>()
            .expect("redis front end"),
        s.gw.gateway.shared(),
    )
}

/// The number of clients dedicated for `reason` now, over every pool.
fn dedicated(s: &Setup, reason: &str) -> u64 {
    redis_pools(s)
        .iter()
        .map(|p| p["dedicated_by_reason"][reason].as_u64().unwrap_or(0))
        .sum()
}

/// 200 clients, each incrementing its own counter in pipelines at the same time, cost at most
/// the pool's size in server connections; every client gets exactly its own replies, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_share_a_pool_of_four_server_connections() {
    const CLIENTS: usize = 200;
    const PIPELINES: usize = 5;
    const DEPTH: usize = 10;
    let s = Arc::new(setup_with("optional", "", &[], "pool = { size = 4 }").await);
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let done = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (s, barrier, done) = (s.clone(), barrier.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Rc::login(&s, "bob", &s.bob).await;
            barrier.wait().await;
            let key = format!("mux:{i}");
            let mine = format!("value-of-client-{i}");
            let mut n = 0i64;
            for _ in 0..PIPELINES {
                let mut cmds = vec![cmd(&["SET", &format!("{key}:v"), &mine])];
                cmds.extend((0..DEPTH).map(|_| cmd(&["INCR", &key])));
                cmds.push(cmd(&["GET", &format!("{key}:v")]));
                c.send(&cmds).await;
                assert_eq!(c.read().await, Value::Simple(b"OK".to_vec()));
                for _ in 0..DEPTH {
                    n += 1;
                    assert_eq!(c.read().await, Value::Integer(n), "client {i}");
                }
                assert_eq!(c.read().await, bulk(&mine), "client {i}");
            }
            done.wait().await;
            // Still connected while the server's connections are counted.
            done.wait().await;
            assert_eq!(
                c.call(&["GET", &key]).await,
                bulk(&(PIPELINES * DEPTH).to_string())
            );
        }));
    }
    barrier.wait().await;
    done.wait().await;
    let open = server_connections(&s);
    assert!(
        (1..=4).contains(&open),
        "{CLIENTS} clients use {open} server connections: {:?}",
        redis_pools(&s)
    );
    let pools = redis_pools(&s);
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert!(pools[0]["open"].as_u64().unwrap_or(99) <= 4, "{pools:?}");
    assert_eq!(pools[0]["dedicated"], 0, "{pools:?}");
    assert_eq!(pools[0]["mode"], "transaction", "{pools:?}");
    done.wait().await;
    for t in tasks {
        t.await.expect("client");
    }
}

/// A client that disconnects with a long pipeline's replies still on their way leaves
/// nothing behind on the shared connection: the next replies on it are the other clients'
/// own, and the connection stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_pipeline_does_not_disturb_others() {
    let s = setup_with("optional", "", &[], "pool = { size = 1 }").await;
    let mut other = Rc::login(&s, "bob", &s.bob).await;
    let big = "x".repeat(10_000);
    assert_eq!(
        other.call(&["SET", "big", &big]).await,
        Value::Simple(b"OK".to_vec())
    );
    for round in 0..3 {
        let mut gone = Rc::login(&s, "bob", &s.bob).await;
        let cmds: Vec<Vec<String>> = (0..2000).map(|_| cmd(&["GET", "big"])).collect();
        gone.send(&cmds).await;
        // Half a command more, then gone without reading a reply.
        gone.s
            .write_all(b"*2\r\n$3\r\nGET\r\n$3\r\nbi")
            .await
            .expect("write");
        drop(gone);
        for j in 0..50 {
            let want = format!("r{round}-{j}");
            other
                .send(&[cmd(&["SET", "mine", &want]), cmd(&["GET", "mine"])])
                .await;
            assert_eq!(other.read().await, Value::Simple(b"OK".to_vec()));
            assert_eq!(other.read().await, bulk(&want));
        }
    }
    let pools = redis_pools(&s);
    assert_eq!(pools[0]["broken"], 0, "{pools:?}");
    assert_eq!(pools[0]["open"], 1, "{pools:?}");
    assert_eq!(server_connections(&s), 1);
}

/// SUBSCRIBE, a transaction over round trips, WATCH, BLPOP and SELECT work as on a direct
/// connection; the first four move the client to a connection of its own (counted by reason),
/// SELECT to the pool of its db; a transaction sent whole stays multiplexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_commands_get_a_dedicated_connection_and_work() {
    let s = setup("optional").await;
    // Pub/sub.
    let mut sub = Rc::login(&s, "bob", &s.bob).await;
    let mut publisher = Rc::login(&s, "bob", &s.bob).await;
    sub.send(&[cmd(&["SUBSCRIBE", "news"])]).await;
    assert_eq!(
        sub.read().await,
        Value::Array(vec![bulk("subscribe"), bulk("news"), Value::Integer(1)])
    );
    assert_eq!(dedicated(&s, "pubsub"), 1, "{:?}", redis_pools(&s));
    assert_eq!(
        publisher.call(&["PUBLISH", "news", "hello"]).await,
        Value::Integer(1)
    );
    assert_eq!(
        sub.read().await,
        Value::Array(vec![bulk("message"), bulk("news"), bulk("hello")])
    );
    // A transaction sent whole is multiplexed.
    let mut t = Rc::login(&s, "bob", &s.bob).await;
    t.send(&[
        cmd(&["MULTI"]),
        cmd(&["SET", "tx", "1"]),
        cmd(&["INCR", "tx"]),
        cmd(&["EXEC"]),
    ])
    .await;
    assert_eq!(t.read().await, Value::Simple(b"OK".to_vec()));
    assert_eq!(t.read().await, Value::Simple(b"QUEUED".to_vec()));
    assert_eq!(t.read().await, Value::Simple(b"QUEUED".to_vec()));
    assert_eq!(
        t.read().await,
        Value::Array(vec![Value::Simple(b"OK".to_vec()), Value::Integer(2)])
    );
    assert_eq!(dedicated(&s, "multi"), 0, "{:?}", redis_pools(&s));
    // One command at a time: dedicated.
    assert_eq!(t.call(&["MULTI"]).await, Value::Simple(b"OK".to_vec()));
    assert_eq!(
        t.call(&["INCR", "tx"]).await,
        Value::Simple(b"QUEUED".to_vec())
    );
    assert_eq!(
        t.call(&["EXEC"]).await,
        Value::Array(vec![Value::Integer(3)])
    );
    assert_eq!(dedicated(&s, "multi"), 1, "{:?}", redis_pools(&s));
    // WATCH: a conflicting write from another client makes EXEC fail.
    let mut w = Rc::login(&s, "bob", &s.bob).await;
    assert_eq!(
        w.call(&["WATCH", "tx"]).await,
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(w.call(&["GET", "tx"]).await, bulk("3"));
    assert_eq!(
        publisher.call(&["SET", "tx", "10"]).await,
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(w.call(&["MULTI"]).await, Value::Simple(b"OK".to_vec()));
    assert_eq!(
        w.call(&["SET", "tx", "4"]).await,
        Value::Simple(b"QUEUED".to_vec())
    );
    assert_eq!(w.call(&["EXEC"]).await, Value::NullArray);
    assert_eq!(publisher.call(&["GET", "tx"]).await, bulk("10"));
    assert_eq!(dedicated(&s, "watch"), 1, "{:?}", redis_pools(&s));
    // BLPOP woken by another client.
    let mut b = Rc::login(&s, "bob", &s.bob).await;
    b.send(&[cmd(&["BLPOP", "queue", "10"])]).await;
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || dedicated(
            &s, "blocking"
        ) == 1)
        .await,
        "{:?}",
        redis_pools(&s)
    );
    assert_eq!(
        publisher.call(&["RPUSH", "queue", "job"]).await,
        Value::Integer(1)
    );
    assert_eq!(
        b.read().await,
        Value::Array(vec![bulk("queue"), bulk("job")])
    );
    // SELECT: the pool of db 1, the same client id.
    let mut d = Rc::login(&s, "bob", &s.bob).await;
    let Value::Integer(id) = d.call(&["CLIENT", "ID"]).await else {
        panic!("CLIENT ID")
    };
    assert_eq!(
        d.call(&["SELECT", "1"]).await,
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(
        d.call(&["SET", "in-db1", "yes"]).await,
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(d.call(&["CLIENT", "ID"]).await, Value::Integer(id));
    assert_eq!(
        s.redis
            .cli_as("app", APP_PASSWORD, &["-n", "1", "get", "in-db1"])
            .expect("direct")
            .trim(),
        "yes"
    );
    assert_eq!(
        publisher.call(&["EXISTS", "in-db1"]).await,
        Value::Integer(0)
    );
    assert!(
        redis_pools(&s).iter().any(|p| p["database"] == "1"),
        "{:?}",
        redis_pools(&s)
    );
    let out_of_range = d.call(&["SELECT", "100000"]).await;
    assert!(
        matches!(&out_of_range, Value::Error(e) if e.starts_with(b"ERR DB index is out of range")),
        "{out_of_range:?}"
    );
    // Still in db 1.
    assert_eq!(d.call(&["GET", "in-db1"]).await, bulk("yes"));
    // Pub/sub still delivers to the subscriber after all this.
    assert_eq!(
        publisher.call(&["PUBLISH", "news", "again"]).await,
        Value::Integer(1)
    );
    assert_eq!(
        sub.read().await,
        Value::Array(vec![bulk("message"), bulk("news"), bulk("again")])
    );
    // RESET: back to a new connection's state, multiplexed again.
    assert_eq!(w.call(&["RESET"]).await, Value::Simple(b"RESET".to_vec()));
    assert_eq!(dedicated(&s, "watch"), 0, "{:?}", redis_pools(&s));
    assert_eq!(w.call(&["GET", "tx"]).await, bulk("10"));
}

/// A `HELLO 3` client gets RESP3 replies (maps, pushes) from a connection no RESP2 client
/// shares; the gateway answers HELLO with the client's own id and name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_clients_do_not_share_connections_with_resp2_ones() {
    let s = setup("optional").await;
    let mut c3 = Rc::connect(&s).await;
    let hello = c3
        .call(&["HELLO", "3", "AUTH", "bob", &s.bob, "SETNAME", "worker-3"])
        .await;
    let Value::Map(fields) = &hello else {
        panic!("HELLO 3 answers a map: {hello:?}")
    };
    let field = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| *key == bulk(k))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("proto"), Some(Value::Integer(3)), "{hello:?}");
    let id = field("id").expect("id");
    assert_eq!(c3.call(&["CLIENT", "ID"]).await, id);
    assert_eq!(c3.call(&["CLIENT", "GETNAME"]).await, bulk("worker-3"));
    let mut c2 = Rc::login(&s, "bob", &s.bob).await;
    assert_eq!(c2.call(&["HSET", "h", "f", "v"]).await, Value::Integer(1));
    // Same command, each in its own protocol.
    assert_eq!(
        c3.call(&["HGETALL", "h"]).await,
        Value::Map(vec![(bulk("f"), bulk("v"))])
    );
    assert_eq!(
        c2.call(&["HGETALL", "h"]).await,
        Value::Array(vec![bulk("f"), bulk("v")])
    );
    let protos: Vec<u64> = redis_pools(&s)
        .iter()
        .filter(|p| p["open"].as_u64() > Some(0))
        .filter_map(|p| p["resp"].as_u64())
        .collect();
    assert!(
        protos.contains(&2) && protos.contains(&3),
        "{:?}",
        redis_pools(&s)
    );
    // RESP3 pub/sub: messages are pushes, and ordinary replies still come in between.
    assert_eq!(
        c3.call(&["SUBSCRIBE", "news"]).await,
        Value::Push(vec![bulk("subscribe"), bulk("news"), Value::Integer(1)])
    );
    assert_eq!(c2.call(&["PUBLISH", "news", "m1"]).await, Value::Integer(1));
    assert_eq!(
        c3.read().await,
        Value::Push(vec![bulk("message"), bulk("news"), bulk("m1")])
    );
    assert_eq!(c3.call(&["PING"]).await, Value::Simple(b"PONG".to_vec()));
    // A later HELLO 2 on a multiplexed RESP3 client moves it to RESP2.
    let mut c = Rc::connect(&s).await;
    let _ = c.call(&["HELLO", "3", "AUTH", "bob", &s.bob]).await;
    let hello2 = c.call(&["HELLO", "2"]).await;
    assert!(matches!(hello2, Value::Array(_)), "{hello2:?}");
    assert_eq!(
        c.call(&["HGETALL", "h"]).await,
        Value::Array(vec![bulk("f"), bulk("v")])
    );
}

/// Per-user rules hold for multiplexed clients: refused commands answered in their place, and
/// a transaction with a refused command aborts at EXEC instead of running the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noperm_is_enforced_for_multiplexed_clients() {
    let s = setup_with("optional", "", &[], "pool = { size = 1 }").await;
    let mut eve = Rc::login(&s, "eve", &s.eve).await;
    let mut bob = Rc::login(&s, "bob", &s.bob).await;
    eve.send(&[
        cmd(&["SET", "app:a", "1"]),
        cmd(&["SET", "other:a", "1"]),
        cmd(&["GET", "app:a"]),
    ])
    .await;
    bob.send(&[cmd(&["SET", "other:b", "2"])]).await;
    assert_eq!(eve.read().await, Value::Simple(b"OK".to_vec()));
    assert!(matches!(eve.read().await, Value::Error(e) if e.starts_with(b"NOPERM")));
    assert_eq!(eve.read().await, bulk("1"));
    assert_eq!(bob.read().await, Value::Simple(b"OK".to_vec()));
    eve.send(&[
        cmd(&["MULTI"]),
        cmd(&["SET", "app:t", "1"]),
        cmd(&["SET", "other:t", "1"]),
        cmd(&["EXEC"]),
    ])
    .await;
    assert_eq!(eve.read().await, Value::Simple(b"OK".to_vec()));
    assert_eq!(eve.read().await, Value::Simple(b"QUEUED".to_vec()));
    assert!(matches!(eve.read().await, Value::Error(e) if e.starts_with(b"NOPERM")));
    let exec = eve.read().await;
    assert!(
        matches!(&exec, Value::Error(e) if e.starts_with(b"EXECABORT")),
        "{exec:?}"
    );
    assert_eq!(
        bob.call(&["EXISTS", "app:t", "other:t", "other:a"]).await,
        Value::Integer(0)
    );
    // The shared connection is not left inside a transaction.
    assert_eq!(bob.call(&["GET", "other:b"]).await, bulk("2"));
    let list = eve.call(&["CLIENT", "LIST"]).await;
    assert!(
        matches!(&list, Value::Error(e) if e.starts_with(b"NOPERM") && String::from_utf8_lossy(e).contains("'client|list'")),
        "{list:?}"
    );
}

/// CLIENT ID, SETNAME, GETNAME, INFO, LIST and KILL answer for the client itself: a client
/// sees and kills no one else's connection through the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_answer_for_the_client_itself() {
    let s = setup("optional").await;
    let mut a = Rc::login(&s, "root", &s.root).await;
    let mut b = Rc::login(&s, "root", &s.root).await;
    let Value::Integer(ida) = a.call(&["CLIENT", "ID"]).await else {
        panic!("id")
    };
    let Value::Integer(idb) = b.call(&["CLIENT", "ID"]).await else {
        panic!("id")
    };
    assert_ne!(ida, idb);
    assert_eq!(a.call(&["CLIENT", "GETNAME"]).await, Value::NullBulk);
    assert_eq!(
        a.call(&["CLIENT", "SETNAME", "has space"]).await,
        Value::Error(
            b"ERR Client names cannot contain spaces, newlines or special characters.".to_vec()
        )
    );
    assert_eq!(
        a.call(&["CLIENT", "SETNAME", "alpha"]).await,
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(a.call(&["CLIENT", "GETNAME"]).await, bulk("alpha"));
    assert_eq!(b.call(&["CLIENT", "GETNAME"]).await, Value::NullBulk);
    let Value::Bulk(list) = a.call(&["CLIENT", "LIST"]).await else {
        panic!("list")
    };
    let list = String::from_utf8_lossy(&list).into_owned();
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(
        list.starts_with(&format!("id={ida} ")) && list.contains(" name=alpha "),
        "{list}"
    );
    assert_eq!(
        a.call(&["CLIENT", "KILL", "ID", &idb.to_string()]).await,
        Value::Integer(0)
    );
    assert_eq!(b.call(&["PING"]).await, Value::Simple(b"PONG".to_vec()));
    // The name follows the client to a dedicated connection, where the server has it too.
    assert_eq!(
        a.call(&["SUBSCRIBE", "x"]).await,
        Value::Array(vec![bulk("subscribe"), bulk("x"), Value::Integer(1)])
    );
    let server_list = s
        .redis
        .cli_as("app", APP_PASSWORD, &["client", "list"])
        .expect("client list");
    assert!(server_list.contains("name=alpha"), "{server_list}");
    assert_eq!(a.call(&["RESET"]).await, Value::Simple(b"RESET".to_vec()));
    assert_eq!(a.call(&["CLIENT", "GETNAME"]).await, Value::NullBulk);
    assert_eq!(a.call(&["CLIENT", "ID"]).await, Value::Integer(ida));
    // Killing itself ends its own connection only.
    assert_eq!(
        a.call(&["CLIENT", "KILL", "ID", &ida.to_string(), "SKIPME", "no"])
            .await,
        Value::Integer(1)
    );
    assert!(common::closed_within(&mut a.s, std::time::Duration::from_secs(10)).await);
    assert_eq!(b.call(&["PING"]).await, Value::Simple(b"PONG".to_vec()));
}

/// `pool = { mode = "session" }`: every client its own server connection, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_gives_every_client_its_own_server_connection() {
    let s = setup_with("optional", "", &[], "pool = { mode = \"session\" }").await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = Rc::login(&s, "bob", &s.bob).await;
        assert_eq!(c.call(&["PING"]).await, Value::Simple(b"PONG".to_vec()));
        clients.push(c);
    }
    assert_eq!(server_connections(&s), 3);
    assert_eq!(dedicated(&s, "session"), 3, "{:?}", redis_pools(&s));
    assert_eq!(
        clients[0].call(&["MULTI"]).await,
        Value::Simple(b"OK".to_vec())
    );
    assert_eq!(
        clients[0].call(&["DISCARD"]).await,
        Value::Simple(b"OK".to_vec())
    );
}
