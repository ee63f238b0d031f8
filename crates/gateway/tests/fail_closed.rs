//! The gateway fails closed where a config could open it up: the admin API asks for its bearer
//! token (and is not served unguarded beyond loopback), and a listener whose protocol has no
//! front end refuses its clients instead of relaying their bytes unauthenticated — even when
//! handed a config that never went through `validate`.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use common::*;
use sumun_config::{Protocol, TlsMode};
use sumun_gateway::Gateway;
use sumun_testkit::Redis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "3f9a0c7e51b24d68a9e0f1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6";

fn write_token(path: &Path, token: &str, mode: u32) {
    std::fs::write(path, format!("{token}\n")).expect("write token");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// One HTTP/1.1 GET: (status, head, body).
async fn get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("admin connect");
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: sumun\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn admin_config(extra: &str) -> String {
    format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{{dir}}/admin.token\"\n{extra}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_asks_for_the_bearer_token_of_its_token_file() {
    let dir = TestDir::new("admin-token");
    write_token(&dir.path("admin.token"), TOKEN, 0o600);
    let gw = TestGateway::start_in(dir, &admin_config(""))
        .await
        .expect("start gateway");
    let admin = gw.gateway.admin_addr().await.expect("admin listener");
    let right = format!("Bearer {TOKEN}");

    for path in [
        "/api/clients",
        "/api/listeners",
        "/api/targets",
        "/api/nope",
    ] {
        let (status, head, body) = get(admin, path, None).await;
        assert_eq!(status, 401, "{path} without a token: {head}\n{body}");
        assert!(head.contains("www-authenticate: bearer"), "{path}: {head}");
        for wrong in [
            "Bearer 3f9a0c7e51b24d68a9e0f1c2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f7".to_string(),
            format!("Bearer {}", &TOKEN[..32]),
            format!("Basic {TOKEN}"),
            TOKEN.to_string(),
        ] {
            let (status, _, _) = get(admin, path, Some(&wrong)).await;
            assert_eq!(status, 401, "{path} with '{wrong}'");
        }
    }
    let (status, head, body) = get(admin, "/api/clients", Some(&right)).await;
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(head.contains("application/json"), "{head}");
    assert!(body.starts_with('['), "{body}");
    let (status, _, _) = get(admin, "/api/listeners", Some(&format!("bearer  {TOKEN}"))).await;
    assert_eq!(status, 200, "the scheme is case-insensitive");

    // Load balancer checks and scrapers need no token by default.
    let (status, _, body) = get(admin, "/healthz", None).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = get(admin, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("sumun_config_reloads_total"), "{body}");

    // metrics_auth = true guards /metrics too; /healthz stays open.
    gw.reload(&admin_config("metrics_auth = true"))
        .await
        .expect("reload");
    let (status, _, _) = get(admin, "/metrics", None).await;
    assert_eq!(status, 401);
    let (status, _, body) = get(admin, "/metrics", Some(&right)).await;
    assert_eq!(status, 200);
    assert!(body.contains("sumun_config_reloads_total"), "{body}");
    let (status, _, _) = get(admin, "/healthz", None).await;
    assert_eq!(status, 200);

    // A new token in the file takes effect with the next reload; the old one stops working.
    let new_token = "b".repeat(40);
    write_token(&gw.dir.path("admin.token"), &new_token, 0o600);
    gw.reload(&admin_config("")).await.expect("reload");
    let (status, _, _) = get(admin, "/api/clients", Some(&right)).await;
    assert_eq!(status, 401, "the old token");
    let (status, _, _) = get(admin, "/api/clients", Some(&format!("Bearer {new_token}"))).await;
    assert_eq!(status, 200, "the new token");
    let (status, _, _) = get(admin, "/metrics", None).await;
    assert_eq!(status, 200, "metrics_auth is off again");

    // A token file others can read is refused at apply time, and the running API keeps the
    // token it had (an apply is all or nothing).
    std::fs::set_permissions(
        gw.dir.path("admin.token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let config = gw.gateway.config();
    let err = gw
        .gateway
        .apply((*config).clone())
        .await
        .expect_err("world-readable token file")
        .to_string();
    assert!(
        err.starts_with("[admin] token_file '") && err.contains("has mode 0644"),
        "{err}"
    );
    assert!(
        !err.contains(&new_token),
        "the error shows the token: {err}"
    );
    let (status, _, _) = get(admin, "/api/clients", Some(&format!("Bearer {new_token}"))).await;
    assert_eq!(status, 200);
    let (status, _, _) = get(admin, "/api/clients", None).await;
    assert_eq!(status, 401);
}

/// A config that bypassed validation still cannot serve the admin API unguarded beyond
/// loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_an_admin_api_beyond_loopback_without_a_token_file() {
    let dir = TestDir::new("admin-open");
    let path = dir.path("sumun.toml");
    std::fs::write(&path, "[admin]\nlisten = \"127.0.0.1:0\"\n").expect("write");
    let mut config = sumun_config::load(&path).expect("valid");
    let admin = config.admin.as_mut().expect("admin");
    admin.listen = "0.0.0.0:0".parse().expect("addr");
    let gateway = Gateway::new();
    let err = gateway
        .apply(config)
        .await
        .expect_err("unguarded admin API")
        .to_string();
    assert_eq!(
        err,
        "[admin] listen 0.0.0.0:0 is not a loopback address and there is no token_file; the admin API is not served unauthenticated beyond loopback"
    );
    assert!(gateway.admin_addr().await.is_none());
}

/// An `http` listener handed to the gateway without validation, in a build without its front
/// end, is refused by the apply (nothing changes); a `tls` one without TLS settings refuses its
/// clients: nothing reaches Redis, and the refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_without_its_front_end_refuses_instead_of_relaying_plain_text() {
    let redis = Redis::start().expect("start redis");
    let dir = TestDir::new("no-front-end");
    let path = dir.path("sumun.toml");
    let listener = |name: &str| {
        format!(
            "[[listeners]]\nname = \"{name}\"\nbind = \"127.0.0.1:0\"\nprotocol = \"tcp\"\n\
             target_group = \"redis\"\nsecurity_groups = [\"local\"]\n\n"
        )
    };
    std::fs::write(
        &path,
        format!(
            "[[security_groups]]\nname = \"local\"\ningress = [{{ cidr = \"127.0.0.1/32\" }}]\n\n\
             {}{}{}[[target_groups]]\nname = \"redis\"\ntargets = [{{ address = \"127.0.0.1:{}\" }}]\n",
            listener("cache"),
            listener("web"),
            listener("bare-tls"),
            redis.port()
        ),
    )
    .expect("write");
    let mut config = sumun_config::load(&path).expect("valid");
    for l in &mut config.listeners {
        (l.protocol, l.tls) = match l.name.as_str() {
            "cache" => (Protocol::Http, TlsMode::Off),
            "web" => (Protocol::Http, TlsMode::Required),
            _ => (Protocol::Tls, TlsMode::Required),
        };
    }
    let gateway = Gateway::new();
    let refused = gateway
        .apply(config.clone())
        .await
        .expect_err("no front end for http");
    let why = refused.to_string();
    for expected in [
        "listener 'cache': protocol \"http\" has no front end in this build",
        "listener 'web': protocol \"http\" has no front end in this build",
    ] {
        assert!(why.contains(expected), "{why}");
    }
    assert!(
        gateway.listener_addr("bare-tls").is_none(),
        "nothing applied"
    );
    config.listeners.retain(|l| l.name == "bare-tls");
    gateway.apply(config).await.expect("apply");

    for name in ["bare-tls"] {
        let addr = gateway.listener_addr(name).expect("listener");
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // Written before the refusal or not at all; either way it must not reach Redis.
        let _ = stream
            .write_all(format!("SET through-{name} yes\r\nPING\r\n").as_bytes())
            .await;
        let mut reply = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_end(&mut reply),
        )
        .await
        .expect("closed by the gateway, not left open");
        assert!(
            read.is_err() || reply.is_empty(),
            "{name}: the gateway relayed: {}",
            String::from_utf8_lossy(&reply)
        );
        assert_eq!(
            metric_value(
                &gateway.metrics_text(),
                &format!(
                    "sumun_rejected_flows_total{{listener=\"{name}\",reason=\"no_front_end\"}}"
                )
            ),
            1.0,
            "{name}"
        );
        let stored = redis
            .cli(&["GET", &format!("through-{name}")])
            .expect("redis-cli");
        assert_eq!(stored.trim(), "", "{name}: the SET reached Redis");
    }
}
