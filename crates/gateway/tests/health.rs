//! Target health: a killed backend is marked unhealthy within the configured thresholds,
//! traffic moves to the other target, and it comes back when restarted. Deregistration by
//! reload drains established flows.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sumun_testkit::Redis;
use tokio::io::AsyncWriteExt;

fn config(a: u16, b: u16, extra_targets: &str) -> String {
    format!(
        r#"
[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.0/8" }}]

[[listeners]]
name = "redis"
bind = "127.0.0.1:0"
protocol = "tcp"
target_group = "redis"
security_groups = ["local"]

[[target_groups]]
name = "redis"
algorithm = "round_robin"
deregistration_delay = "2s"
health_check = {{ interval = "300ms", timeout = "200ms", healthy_threshold = 2, unhealthy_threshold = 2 }}
targets = [{{ address = "127.0.0.1:{a}" }}, {{ address = "127.0.0.1:{b}" }}{extra_targets}]
"#
    )
}

/// Which backend answered: redis reports its own port.
async fn served_by(gw: &TestGateway) -> u16 {
    let reply = redis_cmd(gw.addr("redis"), "CONFIG GET port")
        .await
        .expect("config get");
    reply
        .lines()
        .filter_map(|l| l.trim().parse::<u16>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("unexpected reply {reply:?}"))
}

fn target_health(gw: &TestGateway, port: u16) -> (String, String) {
    let t = gw
        .gateway
        .targets()
        .into_iter()
        .find(|t| t.address.ends_with(&format!(":{port}")))
        .expect("target listed");
    (format!("{:?}", t.health).to_lowercase(), t.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_target_is_marked_unhealthy_and_traffic_moves_then_returns() {
    let mut a = Redis::start().expect("redis a");
    let b = Redis::start().expect("redis b");
    let gw = TestGateway::start(&config(a.port(), b.port(), ""))
        .await
        .expect("gateway");

    assert!(
        eventually(Duration::from_secs(3), || target_health(&gw, a.port()).0
            == "healthy"
            && target_health(&gw, b.port()).0 == "healthy")
        .await
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(served_by(&gw).await);
    }
    assert_eq!(seen.len(), 2, "round robin uses both targets: {seen:?}");

    a.kill();
    let killed_at = Instant::now();
    // 2 failed checks 300 ms apart, plus one timeout: well within 2 s.
    assert!(
        eventually(Duration::from_secs(3), || target_health(&gw, a.port()).0
            == "unhealthy")
        .await,
        "killed target not marked unhealthy: {:?}",
        target_health(&gw, a.port())
    );
    let marked = killed_at.elapsed();
    assert!(marked < Duration::from_secs(3), "took {marked:?}");
    let (_, reason) = target_health(&gw, a.port());
    assert!(reason.contains("consecutive"), "reason: {reason}");
    for _ in 0..6 {
        assert_eq!(
            served_by(&gw).await,
            b.port(),
            "traffic must go to the healthy target"
        );
    }
    assert_eq!(
        gw.metric("sumun_unhealthy_targets{target_group=\"redis\"}"),
        1.0
    );

    a.restart().expect("restart a");
    assert!(
        eventually(Duration::from_secs(5), || target_health(&gw, a.port()).0
            == "healthy")
        .await,
        "restarted target did not come back: {:?}",
        target_health(&gw, a.port())
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(served_by(&gw).await);
    }
    assert_eq!(seen.len(), 2, "both targets serve again: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_retries_on_another_target() {
    // The second target is a port nobody listens on; health checks are slow so that the
    // passive path (connect error -> retry) is what keeps clients whole.
    let a = Redis::start().expect("redis");
    let dead = sumun_testkit::free_port();
    let toml = config(a.port(), dead, "")
        .replace("interval = \"300ms\"", "interval = \"60s\"")
        .replace("timeout = \"200ms\"", "timeout = \"2s\"");
    let gw = TestGateway::start(&toml).await.expect("gateway");
    for _ in 0..8 {
        assert_eq!(served_by(&gw).await, a.port());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_unhealthy_fails_open_or_closed_as_configured() {
    let dead1 = sumun_testkit::free_port();
    let dead2 = sumun_testkit::free_port();
    let gw = TestGateway::start(&config(dead1, dead2, ""))
        .await
        .expect("gateway");
    assert!(
        eventually(Duration::from_secs(3), || gw
            .gateway
            .targets()
            .iter()
            .all(|t| format!("{:?}", t.health) == "Unhealthy"))
        .await
    );
    // Fail open (default): the gateway still tries the targets; the client sees a close.
    let mut s = tokio::net::TcpStream::connect(gw.addr("redis"))
        .await
        .expect("connect");
    let _ = s.write_all(b"PING\r\n").await;
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    assert!(
        gw.metric("sumun_rejected_flows_total{listener=\"redis\",reason=\"target_connect\"}")
            >= 1.0
    );

    // Fail closed: refused without a connect attempt.
    let closed = config(dead1, dead2, "").replace(
        "algorithm = \"round_robin\"",
        "algorithm = \"round_robin\"\nfail_open = false",
    );
    gw.reload(&closed).await.expect("reload");
    let mut s = tokio::net::TcpStream::connect(gw.addr("redis"))
        .await
        .expect("connect");
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    assert!(
        gw.metric("sumun_rejected_flows_total{listener=\"redis\",reason=\"no_healthy_target\"}")
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistered_target_drains_established_flows_then_closes_them() {
    let a = Redis::start().expect("redis a");
    let b = Redis::start().expect("redis b");
    let gw = TestGateway::start(&config(a.port(), b.port(), ""))
        .await
        .expect("gateway");
    assert!(
        eventually(Duration::from_secs(3), || gw
            .gateway
            .targets()
            .iter()
            .all(|t| format!("{:?}", t.health) == "Healthy"))
        .await
    );

    // Open flows until we hold one on each target.
    let mut on_a = None;
    for _ in 0..10 {
        let mut s = tokio::net::TcpStream::connect(gw.addr("redis"))
            .await
            .expect("connect");
        s.write_all(b"CONFIG GET port\r\n").await.expect("write");
        let mut buf = [0u8; 128];
        let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
            .await
            .expect("read");
        if String::from_utf8_lossy(&buf[..n]).contains(&a.port().to_string()) {
            on_a = Some(s);
            break;
        }
    }
    let mut on_a = on_a.expect("a flow on target a");

    // Remove target a: new flows go to b only, the open flow keeps working inside the delay...
    gw.reload(
        &config(b.port(), b.port(), "")
            .replace(&format!("{{ address = \"127.0.0.1:{}\" }}, ", b.port()), ""),
    )
    .await
    .expect("reload");
    for _ in 0..4 {
        assert_eq!(served_by(&gw).await, b.port());
    }
    assert_eq!(
        redis_ping(&mut on_a).await.expect("ping during drain"),
        "+PONG"
    );
    let draining = gw
        .gateway
        .targets()
        .into_iter()
        .find(|t| t.address.ends_with(&format!(":{}", a.port())));
    assert!(matches!(draining.map(|t| format!("{:?}", t.health)), Some(h) if h == "Draining"));

    // ...and is closed when deregistration_delay (2 s) ends.
    assert!(
        closed_within(&mut on_a, Duration::from_secs(4)).await,
        "drained flow not closed after the delay"
    );
}
