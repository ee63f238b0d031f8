//! PROXY protocol in (only from trusted proxies) and out (to targets), malformed and truncated
//! headers, and a burst of thousands of simultaneous connections.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use sumun_testkit::Redis;
use tokio::io::AsyncWriteExt;

fn v2_header(src: &str, dst: &str) -> Vec<u8> {
    let mut out = Vec::new();
    sumun_wire::proxy::encode_v2(
        src.parse::<SocketAddr>().expect("src"),
        dst.parse::<SocketAddr>().expect("dst"),
        &mut out,
    );
    out
}

fn config(redis_port: u16, extra: &str) -> String {
    format!(
        r#"
[gateway]
name = "pp"

[[security_groups]]
name = "clients"
ingress = [{{ cidr = "10.0.0.0/8" }}, {{ cidr = "127.0.0.5/32" }}]

[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.0/8" }}]

[[listeners]]
name = "in"
bind = "127.0.0.1:0"
protocol = "tcp"
target_group = "redis"
security_groups = ["clients"]
proxy_protocol = "accept"
trusted_proxies = ["127.0.0.1/32"]
handshake_timeout = "500ms"

[[target_groups]]
name = "redis"
targets = [{{ address = "127.0.0.1:{redis_port}" }}]

[flow_logs]
path = "{{dir}}/flows.log"
{extra}
"#
    )
}

fn records_for<'a>(log: &'a str, listener: &str) -> Vec<Vec<&'a str>> {
    log.lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .filter(|f| f.len() == 14 && f[2] == listener)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_from_trusted_sender_sets_the_client_address() {
    let redis = Redis::start().expect("redis");
    let gw = TestGateway::start(&config(redis.port(), ""))
        .await
        .expect("gateway");
    let addr = gw.addr("in");

    // v2 from a client inside the group: admitted, and logged under its real address.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(&v2_header("10.1.2.3:40000", "192.0.2.10:6379"))
        .await
        .expect("header");
    assert_eq!(redis_ping(&mut s).await.expect("ping"), "+PONG");
    drop(s);

    // v1 works too.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"PROXY TCP4 10.9.9.9 192.0.2.10 51000 6379\r\n")
        .await
        .expect("header");
    assert_eq!(redis_ping(&mut s).await.expect("ping"), "+PONG");
    drop(s);

    // The real client is outside the group: rejected, though the sender is trusted.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(&v2_header("172.16.0.1:40001", "192.0.2.10:6379"))
        .await
        .expect("header");
    let _ = s.write_all(b"PING\r\n").await;
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);

    assert!(
        eventually(Duration::from_secs(3), || records_for(&gw.flow_log(), "in")
            .len()
            >= 3)
        .await
    );
    let log = gw.flow_log();
    let recs = records_for(&log, "in");
    let find = |src: &str, action: &str| recs.iter().any(|f| f[3] == src && f[12] == action);
    assert!(find("10.1.2.3", "ACCEPT"), "{log}");
    assert!(
        recs.iter().any(|f| f[3] == "10.1.2.3"
            && f[4] == "192.0.2.10"
            && f[5] == "40000"
            && f[6] == "6379"),
        "{log}"
    );
    assert!(find("10.9.9.9", "ACCEPT"), "{log}");
    assert!(find("172.16.0.1", "REJECT"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_truncated_and_untrusted_headers_are_rejected() {
    let redis = Redis::start().expect("redis");
    let gw = TestGateway::start(&config(redis.port(), ""))
        .await
        .expect("gateway");
    let addr = gw.addr("in");

    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"PROXY GARBAGE here\r\nPING\r\n")
        .await
        .expect("write");
    assert!(
        closed_within(&mut s, Duration::from_secs(2)).await,
        "malformed header not closed"
    );

    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"PING\r\n").await.expect("write");
    assert!(
        closed_within(&mut s, Duration::from_secs(2)).await,
        "missing header not closed"
    );

    // Truncated: half a v2 signature, then silence until the handshake timeout.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(&v2_header("10.1.2.3:1", "10.0.0.1:2")[..7])
        .await
        .expect("write");
    assert!(
        closed_within(&mut s, Duration::from_secs(3)).await,
        "truncated header not closed"
    );

    // A well-formed header from a sender that is not a trusted proxy.
    let mut s = connect_from("127.0.0.2", addr).await.expect("connect");
    s.write_all(&v2_header("10.1.2.3:40000", "192.0.2.10:6379"))
        .await
        .expect("header");
    let _ = s.write_all(b"PING\r\n").await;
    assert!(
        closed_within(&mut s, Duration::from_secs(2)).await,
        "untrusted sender not closed"
    );

    assert_eq!(
        gw.metric(
            "sumun_rejected_flows_total{listener=\"in\",reason=\"proxy_protocol_malformed\"}"
        ),
        2.0
    );
    assert_eq!(
        gw.metric("sumun_rejected_flows_total{listener=\"in\",reason=\"handshake_timeout\"}"),
        1.0
    );
    assert_eq!(
        gw.metric(
            "sumun_rejected_flows_total{listener=\"in\",reason=\"proxy_protocol_untrusted\"}"
        ),
        1.0
    );
    assert_eq!(
        gw.metric("sumun_new_flows_total{listener=\"in\"}"),
        0.0,
        "nothing was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_is_sent_to_targets() {
    // Chain: client (127.0.0.5) -> "front" (sends PROXY v2) -> "in" (accepts it) -> redis.
    // "in" only admits 127.0.0.5 if it learns the address from the header.
    let redis = Redis::start().expect("redis");
    let gw = TestGateway::start(&config(redis.port(), ""))
        .await
        .expect("gateway");
    let in_port = gw.addr("in").port();
    let front = format!(
        r#"
[[listeners]]
name = "front"
bind = "127.0.0.1:0"
protocol = "tcp"
target_group = "chain"
security_groups = ["local"]

[[target_groups]]
name = "chain"
proxy_protocol_v2 = true
targets = [{{ address = "127.0.0.1:{in_port}" }}]
"#
    );
    // Keep "in" on the port it already has.
    let toml = config(redis.port(), &front).replace(
        "name = \"in\"\nbind = \"127.0.0.1:0\"",
        &format!("name = \"in\"\nbind = \"127.0.0.1:{in_port}\""),
    );
    gw.reload(&toml).await.expect("reload");
    assert_eq!(gw.addr("in").port(), in_port);

    let mut s = connect_from("127.0.0.5", gw.addr("front"))
        .await
        .expect("connect");
    assert_eq!(
        redis_ping(&mut s).await.expect("ping through the chain"),
        "+PONG"
    );
    drop(s);
    assert!(
        eventually(Duration::from_secs(3), || !records_for(
            &gw.flow_log(),
            "in"
        )
        .is_empty())
        .await
    );
    let log = gw.flow_log();
    let recs = records_for(&log, "in");
    assert!(
        recs.iter()
            .any(|f| f[3] == "127.0.0.5" && f[12] == "ACCEPT"),
        "{log}"
    );

    // A client the inner listener does not admit (127.0.0.6) is refused there, by its real address.
    let mut s = connect_from("127.0.0.6", gw.addr("front"))
        .await
        .expect("connect");
    let _ = s.write_all(b"PING\r\n").await;
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    assert!(
        eventually(Duration::from_secs(3), || records_for(&gw.flow_log(), "in")
            .iter()
            .any(|f| f[3] == "127.0.0.6" && f[12] == "REJECT"))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_simultaneous_connections() {
    rlimit::increase_nofile_limit(65536).expect("raise the open-file limit");
    let redis = Redis::start().expect("redis");
    let toml = format!(
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
targets = [{{ address = "127.0.0.1:{}" }}]
"#,
        redis.port()
    );
    let gw = TestGateway::start(&toml).await.expect("gateway");
    let addr = gw.addr("redis");
    const N: usize = 2000;
    let mut tasks = Vec::with_capacity(N);
    for _ in 0..N {
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            let reply = redis_ping(&mut s).await?;
            anyhow::ensure!(reply == "+PONG", "reply {reply}");
            Ok::<_, anyhow::Error>(s)
        }));
    }
    let mut held = Vec::with_capacity(N);
    for t in tasks {
        held.push(t.await.expect("join").expect("every client is served"));
    }
    assert_eq!(
        gw.metric("sumun_active_flows{listener=\"redis\"}"),
        N as f64
    );
    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || gw
            .metric("sumun_active_flows{listener=\"redis\"}")
            == 0.0)
        .await
    );
    assert_eq!(
        gw.metric("sumun_new_flows_total{listener=\"redis\"}"),
        N as f64
    );
}
