//! TLS termination: policies, post-quantum key exchange, certificate rotation on disk, mTLS,
//! and bad input on a TLS port.

mod common;

use std::time::Duration;

use common::*;
use rustls::crypto::aws_lc_rs::kx_group;
use sumun_testkit::Redis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(redis_port: u16, policy: &str, client_ca: &str) -> String {
    format!(
        r#"
[tls.default]
cert = "{{dir}}/certs/server.pem"
key = "{{dir}}/certs/server-key.pem"
policy = "{policy}"
{client_ca}

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
handshake_timeout = "500ms"

[[target_groups]]
name = "redis"
targets = [{{ address = "127.0.0.1:{redis_port}" }}]

[flow_logs]
path = "{{dir}}/flows.log"
"#
    )
}

async fn start(policy: &str) -> (Redis, TestGateway, std::path::PathBuf) {
    let redis = Redis::start().expect("redis");
    let dir = TestDir::new("tls");
    let ca = dev_certs(&dir.0);
    let gw = TestGateway::start_in(dir, &config(redis.port(), policy, ""))
        .await
        .expect("gateway");
    (redis, gw, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pq_key_exchange_is_negotiated_and_counted() {
    let (_redis, gw, ca) = start("tls13-pq").await;
    let config = client_config(
        &ca,
        &[&rustls::version::TLS13],
        Some(vec![kx_group::X25519MLKEM768, kx_group::X25519]),
    );
    let mut s = tls_connect(gw.addr("redis-tls"), config)
        .await
        .expect("handshake");
    let (_, conn) = s.get_ref();
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        conn.negotiated_key_exchange_group().map(|g| g.name()),
        Some(rustls::NamedGroup::X25519MLKEM768)
    );
    assert_eq!(redis_ping(&mut s).await.expect("ping"), "+PONG");
    assert_eq!(
        gw.metric("sumun_tls_handshakes_total{listener=\"redis-tls\",version=\"TLSv1.3\",group=\"X25519MLKEM768\"}"),
        1.0
    );
    // A classical-only client still gets in, with X25519.
    let classic = client_config(
        &ca,
        &[&rustls::version::TLS13],
        Some(vec![kx_group::X25519]),
    );
    let mut s = tls_connect(gw.addr("redis-tls"), classic)
        .await
        .expect("handshake");
    assert_eq!(redis_ping(&mut s).await.expect("ping"), "+PONG");
    assert_eq!(
        gw.metric("sumun_tls_handshakes_total{listener=\"redis-tls\",version=\"TLSv1.3\",group=\"X25519\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_client_is_refused_under_tls13_pq_and_accepted_under_compat() {
    let (redis, gw, ca) = start("tls13-pq").await;
    let tls12 = client_config(&ca, &[&rustls::version::TLS12], None);
    let err = tls_connect(gw.addr("redis-tls"), tls12.clone()).await;
    assert!(err.is_err(), "a TLS 1.2-only client must be refused");
    assert!(
        eventually(Duration::from_secs(2), || gw.metric(
            "sumun_rejected_flows_total{listener=\"redis-tls\",reason=\"tls_handshake\"}"
        ) == 1.0)
        .await
    );
    // The system OpenSSL client agrees.
    let addr = gw.addr("redis-tls").to_string();
    let ca_s = ca.display().to_string();
    let (ok, _, _) = run(
        "sh",
        &[
            "-c",
            &format!("echo | openssl s_client -connect {addr} -tls1_2 -CAfile {ca_s} -brief"),
        ],
        &[],
    )
    .await;
    assert!(!ok, "openssl -tls1_2 must fail under tls13-pq");

    gw.reload(&config(redis.port(), "tls12-compat", ""))
        .await
        .expect("reload");
    let mut s = tls_connect(gw.addr("redis-tls"), tls12)
        .await
        .expect("TLS 1.2 under compat");
    assert_eq!(redis_ping(&mut s).await.expect("ping"), "+PONG");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_on_disk_keeps_open_sessions() {
    let (_redis, gw, ca) = start("tls13-pq").await;
    let config = client_config(&ca, &[&rustls::version::TLS13], None);
    let mut open = tls_connect(gw.addr("redis-tls"), config.clone())
        .await
        .expect("handshake");
    let first = open.get_ref().1.peer_certificates().expect("certs")[0].clone();
    assert_eq!(redis_ping(&mut open).await.expect("ping"), "+PONG");

    // Replace the served certificate with a new one from a new CA.
    let before = gw.metric("sumun_certificate_expiry_days{tls_config=\"default\"}");
    // Not a wait for the gateway: the new files must get a later modification time than the
    // ones it loaded, which is how it notices them.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let pki = sumun_pki::DevPki::generate(&[], 7).expect("new pki");
    pki.write(&gw.dir.path("certs"), true)
        .expect("write new certs");
    let new_ca = gw.dir.path("certs/ca.pem");
    let new_config = client_config(&new_ca, &[&rustls::version::TLS13], None);
    let mut rotated = None;
    for _ in 0..60 {
        if let Ok(s) = tls_connect(gw.addr("redis-tls"), new_config.clone()).await {
            rotated = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rotated = rotated.expect("new certificate served within a few seconds");
    assert_ne!(
        rotated.get_ref().1.peer_certificates().expect("certs")[0],
        first
    );
    assert_eq!(redis_ping(&mut rotated).await.expect("ping"), "+PONG");
    // The session opened before the rotation is still alive.
    assert_eq!(
        redis_ping(&mut open).await.expect("old session ping"),
        "+PONG"
    );
    let after = gw.metric("sumun_certificate_expiry_days{tls_config=\"default\"}");
    assert!(
        before > 29.0 && after < 7.5 && after > 6.0,
        "expiry days {before} -> {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_client_ca_is_set() {
    let redis = Redis::start().expect("redis");
    let dir = TestDir::new("mtls");
    let ca = dev_certs(&dir.0);
    let pki = sumun_pki::DevPki::generate(&[], 30).expect("client pki");
    let client = pki.issue_client_cert("app-1").expect("client cert");
    std::fs::write(dir.path("clients-ca.pem"), pki.ca_cert_pem()).expect("write client ca");
    let toml = config(
        redis.port(),
        "tls13-pq",
        "client_ca = \"{dir}/clients-ca.pem\"",
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");

    // Without a client certificate the handshake fails.
    let anonymous = client_config(&ca, &[&rustls::version::TLS13], None);
    let refused = match tls_connect(gw.addr("redis-tls"), anonymous).await {
        Err(_) => true,
        // TLS 1.3 reports client-auth failure after the client's Finished: the first read fails.
        Ok(mut s) => redis_ping(&mut s).await.is_err(),
    };
    assert!(refused, "a client without a certificate must be refused");

    // With one signed by the client CA it works.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_file_iter(&ca).expect("ca") {
        roots.add(c.expect("pem")).expect("add");
    }
    let certs = rustls::pki_types::pem::PemObject::pem_slice_iter(client.cert_pem.as_bytes())
        .collect::<Result<Vec<rustls::pki_types::CertificateDer>, _>>()
        .expect("client cert pem");
    let key = rustls::pki_types::pem::PemObject::from_pem_slice(client.key_pem.as_bytes())
        .expect("client key");
    let with_cert = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .expect("client auth");
    let mut s = tls_connect(gw.addr("redis-tls"), std::sync::Arc::new(with_cert))
        .await
        .expect("mTLS handshake");
    assert_eq!(redis_ping(&mut s).await.expect("ping"), "+PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_silence_on_a_tls_port_are_closed_cleanly() {
    let (_redis, gw, ca) = start("tls13-pq").await;
    let addr = gw.addr("redis-tls");

    // Not a ClientHello at all.
    let mut garbage = tokio::net::TcpStream::connect(addr).await.expect("connect");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    assert!(closed_within(&mut garbage, Duration::from_secs(2)).await);

    // A client that connects and says nothing is cut at the handshake timeout (500 ms).
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let started = std::time::Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    assert!(started.elapsed() >= Duration::from_millis(400));

    // A truncated ClientHello followed by silence: also cut at the timeout.
    let mut truncated = tokio::net::TcpStream::connect(addr).await.expect("connect");
    truncated
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .expect("write");
    assert!(closed_within(&mut truncated, Duration::from_secs(3)).await);

    // Counted as the connection is closed: the close may be seen a moment before the count.
    assert!(
        common::eventually(Duration::from_secs(5), || {
            gw.metric(
                "sumun_rejected_flows_total{listener=\"redis-tls\",reason=\"tls_handshake\"}",
            ) >= 1.0
                && gw.metric(
                    "sumun_rejected_flows_total{listener=\"redis-tls\",reason=\"handshake_timeout\"}",
                ) >= 2.0
        })
        .await,
        "{}",
        gw.metrics()
    );

    // And the listener still serves.
    let config = client_config(&ca, &[&rustls::version::TLS13], None);
    let mut ok = tls_connect(addr, config).await.expect("handshake");
    assert_eq!(redis_ping(&mut ok).await.expect("ping"), "+PONG");
    let mut buf = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_millis(10), ok.read(&mut buf)).await;
}
