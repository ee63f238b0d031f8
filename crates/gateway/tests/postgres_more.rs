//! More of the PostgreSQL front end against real servers and real clients: client
//! certificates (`auth = ["cert"]`), a legacy md5 backend, tokio-postgres in transaction pooling
//! with prepared statements, transactions and errors, protocol messages out of order over a raw
//! socket, PostgreSQL 17 direct TLS, every target down and back, and session-mode and pinned
//! clients whose server dies in a failover.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw::{bind_body, first_error, parse_body, tags, Raw};
use common::{audit_mark, run, wait_for_audit, TestDir, TestGateway};
use rustls::pki_types::ServerName;
use sumun_testkit::Postgres;
use sumun_vault::{SecretBytes, SecretKind, SecretMeta};
use sumun_wire::postgres::{self as pg, Writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BACKEND_PASSWORD: &str = common::APP_PASSWORD;
const AUDIENCE: &str = "sumun-more";

// ---------------------------------------------------------------------------------------------
// Set-up

/// A PostgreSQL with password auth, role `app` owning database `appdb`.
async fn start_pg(host_auth: Option<&str>, settings: &[(&str, &str)]) -> Postgres {
    common::app_postgres(host_auth, settings).await
}

/// A gateway config: one postgres listener `pg` (TLS from `[tls.default]` when `tls_section`
/// is not empty), target group `pg`, and the given `[[users]]` (plus the vault and logs).
fn config(listener: &str, tls_section: &str, group: &str, users: &str) -> String {
    format!(
        r#"
[gateway]
name = "{AUDIENCE}"
[vault]
dir = "{{dir}}/vault"
key_file = "{{dir}}/master.key"
{tls_section}
[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.0/8" }}]
[[listeners]]
name = "pg"
bind = "127.0.0.1:0"
protocol = "postgres"
target_group = "pg"
security_groups = ["local"]
{listener}
[[target_groups]]
name = "pg"
{group}
{users}
[audit]
path = "{{dir}}/audit.jsonl"
"#
    )
}

/// `[tls.default]` with the dev server certificate in `{dir}/certs`, plus `extra` lines.
fn tls_section(extra: &str) -> String {
    format!(
        "[tls.default]\ncert = \"{{dir}}/certs/server.pem\"\nkey = \"{{dir}}/certs/server-key.pem\"\n{extra}"
    )
}

fn one_target(addr: SocketAddr) -> String {
    format!("health_check = {{ enabled = false }}\ntargets = [{{ address = \"{addr}\" }}]")
}

/// The dev PKI in `dir/certs`; returned so tests can issue more certificates from its CA.
fn dev_pki(dir: &TestDir) -> sumun_pki::DevPki {
    let pki = sumun_pki::DevPki::generate(&[], 30).expect("generate dev pki");
    pki.write(&dir.path("certs"), true).expect("write certs");
    pki
}

/// psql with a libpq connection string: (success, stdout, stderr). Never prompts.
async fn psql_conninfo(
    conninfo: &str,
    password: Option<&str>,
    sql: &str,
) -> (bool, String, String) {
    let mut env = vec![("PGCONNECT_TIMEOUT", "10")];
    if let Some(p) = password {
        env.push(("PGPASSWORD", p));
    }
    run(
        "psql",
        &["-X", "-At", "-w", "-d", conninfo, "-c", sql],
        &env,
    )
    .await
}

async fn psql_token(
    port: u16,
    user: &str,
    token: &str,
    sslmode: &str,
    sql: &str,
) -> (bool, String, String) {
    psql_conninfo(
        &format!("host=127.0.0.1 port={port} user={user} dbname=appdb sslmode={sslmode}"),
        Some(token),
        sql,
    )
    .await
}

/// An ErrorResponse body that tells a client its server connection was lost, for good: the
/// gateway's 08006 when the server vanished without a word, or the server's own FATAL when it
/// managed to say why (a backend that sees its postmaster die says 57P01 before exiting).
fn assert_backend_lost(body: &[u8]) {
    let f = pg::error_fields(body);
    assert_eq!(f.severity, "FATAL", "{}", f.message);
    match f.code.as_str() {
        "08006" => assert!(
            f.message.contains("the backend connection was lost"),
            "{}",
            f.message
        ),
        c if c.starts_with("57P") => {}
        other => panic!("not a lost server: {other} {}", f.message),
    }
}

fn rows(v: &[&str]) -> Result<Vec<String>, (String, String)> {
    Ok(v.iter().map(|s| s.to_string()).collect())
}

// ---------------------------------------------------------------------------------------------
// 1. Client certificates

/// Write a client certificate and key for `cn` into `dir` (the key 0600, as libpq insists).
fn write_client_cert(pki: &sumun_pki::DevPki, dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let pem = pki.issue_client_cert(cn).expect("client cert");
    let cert = dir.join(format!("{cn}.pem"));
    let key = dir.join(format!("{cn}-key.pem"));
    std::fs::write(&cert, &pem.cert_pem).expect("write cert");
    std::fs::write(&key, &pem.key_pem).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_whose_cn_is_the_user_logs_in_without_a_password() {
    let pg = start_pg(None, &[]).await;
    let dir = TestDir::new("pg-cert");
    dev_pki(&dir);
    // Client certificates come from a CA of their own, which the listener trusts for clients.
    let clients = sumun_pki::DevPki::generate(&[], 30).expect("client CA");
    std::fs::write(dir.path("clients-ca.pem"), clients.ca_cert_pem()).expect("write client CA");
    let (carl_cert, carl_key) = write_client_cert(&clients, &dir.0, "carl");
    let (erin_cert, erin_key) = write_client_cert(&clients, &dir.0, "erin");
    // The right name from a CA the listener does not trust for clients.
    let server_ca = sumun_pki::DevPki::generate(&[], 30).expect("other CA");
    let untrusted = dir.path("untrusted");
    std::fs::create_dir_all(&untrusted).expect("mkdir");
    let (rogue_cert, rogue_key) = write_client_cert(&server_ca, &untrusted, "carl");
    drop(common::backend_vault(&dir, BACKEND_PASSWORD));
    let toml = config(
        "tls = \"optional\"\ntls_config = \"default\"\npool = { mode = \"transaction\", size = 2 }",
        &tls_section("client_ca = \"{dir}/clients-ca.pem\""),
        &one_target(pg.addr()),
        r#"
[[users]]
name = "carl"
auth = ["cert"]
backend_credential = "pg/app"
databases = ["appdb"]
[[users]]
name = "erin"
auth = ["cert"]
backend_credential = "pg/app"
databases = ["appdb"]
"#,
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    let port = gw.addr("pg").port();
    let ca = gw.dir.path("certs/ca.pem");
    let conninfo = |user: &str, cert: Option<(&Path, &Path)>, sslmode: &str| {
        let mut s = format!(
            "host=localhost port={port} user={user} dbname=appdb sslmode={sslmode} sslrootcert={}",
            ca.display()
        );
        if let Some((c, k)) = cert {
            s.push_str(&format!(" sslcert={} sslkey={}", c.display(), k.display()));
        }
        s
    };

    // carl's certificate: in at once, no password asked (-w would fail if one were), and the
    // query runs on the backend as the vault's user.
    let mark = audit_mark(&gw);
    let (ok, out, err) = psql_conninfo(
        &conninfo("carl", Some((&carl_cert, &carl_key)), "verify-full"),
        None,
        "select current_user, 6 * 7",
    )
    .await;
    assert!(ok, "carl with his certificate: {err}");
    assert_eq!(out.trim(), "app|42");
    let line = wait_for_audit(&gw, mark, "\"event\":\"auth.success\"").await;
    assert!(line.contains("\"method\":\"cert\""), "{line}");

    // erin's certificate presented as carl: refused like PostgreSQL's cert method, 28000.
    let mark = audit_mark(&gw);
    let (ok, _, err) = psql_conninfo(
        &conninfo("carl", Some((&erin_cert, &erin_key)), "verify-full"),
        None,
        "select 1",
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("FATAL:  certificate authentication failed for user \"carl\""),
        "{err}"
    );
    wait_for_audit(&gw, mark, "\"reason\":\"certificate_name_mismatch\"").await;

    // No certificate on a plain-text connection: 28000, told what is missing.
    let mark = audit_mark(&gw);
    let (ok, _, err) = psql_conninfo(&conninfo("carl", None, "disable"), None, "select 1").await;
    assert!(!ok);
    assert!(
        err.contains("FATAL:  connection requires a valid client certificate"),
        "{err}"
    );
    wait_for_audit(&gw, mark, "\"reason\":\"no_client_certificate\"").await;
    // The SQLSTATE, as a driver sees it.
    let mut raw = Raw::tcp(gw.addr("pg")).await;
    let mut w = Writer::new();
    w.startup(&[("user", "carl"), ("database", "appdb")]);
    raw.write(&w.buf).await;
    let reply = raw.until_ready().await;
    assert_eq!(tags(&reply), "E", "no password is asked: {reply:?}");
    let f = pg::error_fields(&reply[0].1);
    assert_eq!((f.severity.as_str(), f.code.as_str()), ("FATAL", "28000"));
    assert!(raw.is_closed().await);
    // The same over TLS with a certificate: the SQLSTATE of a name mismatch.
    let erin_pem = std::fs::read_to_string(&erin_cert).expect("read");
    let erin_key_pem = std::fs::read_to_string(&erin_key).expect("read");
    let mut tls = Raw::new(client_tls(&ca, Some((&erin_pem, &erin_key_pem)), gw.addr("pg")).await);
    let mut w = Writer::new();
    w.startup(&[("user", "carl"), ("database", "appdb")]);
    tls.write(&w.buf).await;
    let reply = tls.until_ready().await;
    assert_eq!(
        first_error(&reply).map(|e| e.0).as_deref(),
        Some("28000"),
        "{reply:?}"
    );

    // No certificate over TLS, or one from a CA the listener does not trust: the TLS
    // handshake itself fails (client_ca makes the certificate mandatory on TLS).
    let (ok, _, err) =
        psql_conninfo(&conninfo("carl", None, "verify-full"), None, "select 1").await;
    assert!(!ok);
    assert!(err.contains("certificate required"), "{err}");
    let (ok, _, err) = psql_conninfo(
        &conninfo("carl", Some((&rogue_cert, &rogue_key)), "verify-full"),
        None,
        "select 1",
    )
    .await;
    assert!(!ok);
    assert!(err.contains("SSL") && err.contains("alert"), "{err}");
    // Only the one good login of carl succeeded.
    let log = gw.audit_log();
    let carl_in = log
        .lines()
        .filter(|l| l.contains("\"event\":\"auth.success\"") && l.contains("\"user\":\"carl\""))
        .count();
    assert_eq!(carl_in, 1, "{log}");

    // erin with her own certificate is erin.
    let (ok, out, err) = psql_conninfo(
        &conninfo("erin", Some((&erin_cert, &erin_key)), "verify-full"),
        None,
        "select 1",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1");
}

/// A TLS 1.3 connection to `addr` trusting `ca`, with an optional client certificate (PEM) and
/// no ALPN: the stream after an SSLRequest answered `S`.
async fn client_tls(
    ca: &Path,
    cert: Option<(&str, &str)>,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut req = Vec::new();
    req.extend_from_slice(&8u32.to_be_bytes());
    req.extend_from_slice(&pg::SSL_REQUEST.to_be_bytes());
    tcp.write_all(&req).await.expect("SSLRequest");
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.expect("answer");
    assert_eq!(&answer, b"S");
    let base = common::client_config(ca, &[&rustls::version::TLS13], None);
    let config = match cert {
        None => base,
        Some((c, k)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("ca") {
                roots.add(cert.expect("pem")).expect("add");
            }
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(c.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("chain");
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(k.as_bytes()).expect("key");
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("versions")
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .expect("client auth"),
            )
        }
    };
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

// ---------------------------------------------------------------------------------------------
// 2. An md5 backend

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_md5_backend_is_logged_in_to_with_the_vault_password() {
    let pg = start_pg(
        Some("md5"),
        &[("password_encryption", "md5"), ("log_connections", "on")],
    )
    .await;
    // The server really holds an md5 hash for app, and pg_hba says md5 for TCP.
    assert_eq!(
        pg.psql("select left(rolpassword, 3) from pg_authid where rolname = 'app'")
            .expect("rolpassword"),
        "md5"
    );
    // A second role, which the gateway's vault has the wrong password for (its own pools:
    // they are per backend user).
    pg.create_user("app2", "app2-Secret").expect("app2");
    let dir = TestDir::new("pg-md5");
    let mut vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    vault
        .put(
            "pg/wrong",
            &SecretBytes::from_slice(b"not-the-password"),
            SecretMeta {
                kind: Some(SecretKind::Postgres),
                username: Some("app2".into()),
                ..SecretMeta::default()
            },
        )
        .expect("put");
    let token = common::token(&vault, "bob", AUDIENCE);
    let wendy = common::token(&vault, "wendy", AUDIENCE);
    drop(vault);
    // md5 is used only where the target group allows it.
    let group = format!("{}\nbackend_auth = [\"md5\"]", one_target(pg.addr()));
    let toml = config(
        "tls = \"off\"\npool = { mode = \"transaction\", size = 2 }",
        "",
        &group,
        r#"
[[users]]
name = "bob"
auth = ["token"]
backend_credential = "pg/app"
[[users]]
name = "wendy"
auth = ["token"]
backend_credential = "pg/wrong"
"#,
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    let port = gw.addr("pg").port();

    // A direct login with the wrong password is refused by md5 (the server asks for md5: the
    // gateway's md5 answer below is what lets its clients in).
    let direct = pg.psql_as("app", "not-the-password", "appdb", "select 1");
    assert!(
        format!("{direct:?}").contains("password authentication failed"),
        "{direct:?}"
    );
    for i in 0..3 {
        let (ok, out, err) = psql_token(
            port,
            "bob",
            &token,
            "disable",
            &format!("create table if not exists t (a int); insert into t values ({i}); select current_user, count(*) from t"),
        )
        .await;
        assert!(ok, "login {i} through the gateway: {err}");
        assert_eq!(out.lines().last(), Some(format!("app|{}", i + 1).as_str()));
    }
    // The server's own account of how the gateway logged in.
    assert!(
        pg.log_tail()
            .contains("connection authenticated: identity=\"app\" method=md5"),
        "{}",
        pg.log_tail()
    );

    // A wrong vault password: a clear error at login, not a hang, and the gateway goes on.
    let (ok, _, err) = tokio::time::timeout(
        Duration::from_secs(20),
        psql_token(port, "wendy", &wendy, "disable", "select 1"),
    )
    .await
    .expect("psql returns");
    assert!(!ok);
    assert!(
        err.contains("FATAL:  the backend refused the gateway's login for this user"),
        "{err}"
    );
    let mut raw = Raw::tcp(gw.addr("pg")).await;
    let reply = raw.login("wendy", "appdb", &wendy).await;
    assert_eq!(
        first_error(&reply).map(|e| e.0).as_deref(),
        Some("08004"),
        "{reply:?}"
    );
    assert!(raw.is_closed().await);
    let (ok, out, err) = psql_token(port, "bob", &token, "disable", "select count(*) from t").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "3");
}

// ---------------------------------------------------------------------------------------------
// 3. tokio-postgres

/// A tokio-postgres client through the gateway (token as the password, no TLS).
async fn tp_connect(addr: SocketAddr, token: String) -> tokio_postgres::Client {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(addr.port())
        .user("bob")
        .dbname("appdb")
        .password(token)
        .application_name("tokio-pg-test");
    let (client, connection) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .expect("tokio-postgres connects through the gateway");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_clients_prepare_transact_and_recover_from_errors_on_two_servers() {
    let pg = start_pg(None, &[]).await;
    let dir = TestDir::new("pg-tokio");
    let vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    let token = common::token(&vault, "bob", AUDIENCE);
    drop(vault);
    let toml = config(
        "tls = \"off\"\npool = { mode = \"transaction\", size = 2, checkout_timeout = \"30s\" }",
        "",
        &one_target(pg.addr()),
        "[[users]]\nname = \"bob\"\nauth = [\"token\"]\nbackend_credential = \"pg/app\"\n",
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    let addr = gw.addr("pg");
    let setup = tp_connect(addr, token.clone()).await;
    setup
        .batch_execute("create table items (client int, n int, note text, primary key (client, n))")
        .await
        .expect("create table");
    drop(setup);

    const CLIENTS: i32 = 8;
    const ROUNDS: i32 = 40;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let client = tp_connect(addr, token).await;
            let insert = client
                .prepare("insert into items (client, n, note) values ($1, $2, $3)")
                .await
                .expect("prepare insert");
            let sum = client
                .prepare(
                    "select count(*), coalesce(sum(n), 0)::bigint from items where client = $1",
                )
                .await
                .expect("prepare select");
            let echo = client
                .prepare_typed(
                    "select $1::text || ':' || $2::int",
                    &[
                        tokio_postgres::types::Type::TEXT,
                        tokio_postgres::types::Type::INT4,
                    ],
                )
                .await
                .expect("prepare echo");
            for n in 0..ROUNDS {
                let note = format!("c{c}n{n}");
                assert_eq!(
                    client
                        .execute(&insert, &[&c, &n, &note])
                        .await
                        .expect("insert"),
                    1
                );
                let row = client.query_one(&echo, &[&note, &n]).await.expect("echo");
                assert_eq!(row.get::<_, String>(0), format!("{note}:{n}"));
                if n % 10 == 0 {
                    // A unique violation: the right SQLSTATE, and the client carries on.
                    let err = client
                        .execute(&insert, &[&c, &n, &note])
                        .await
                        .expect_err("duplicate key");
                    assert_eq!(
                        err.code(),
                        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
                        "{err:?}"
                    );
                }
            }
            // A committed transaction with two statements.
            let mut client = client;
            let tx = client.transaction().await.expect("begin");
            tx.execute(&insert, &[&c, &1000, &"tx"])
                .await
                .expect("in tx");
            tx.execute(&insert, &[&c, &1001, &"tx"])
                .await
                .expect("in tx");
            tx.commit().await.expect("commit");
            // A transaction that fails (duplicate) and is rolled back: none of it stays.
            let tx = client.transaction().await.expect("begin");
            tx.execute(&insert, &[&c, &2000, &"lost"])
                .await
                .expect("in tx");
            let err = tx
                .execute(&insert, &[&c, &1000, &"dup"])
                .await
                .expect_err("duplicate in tx");
            assert_eq!(
                err.code(),
                Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
            );
            let err = tx
                .query_one(&sum, &[&c])
                .await
                .expect_err("aborted transaction");
            assert_eq!(
                err.code(),
                Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION)
            );
            tx.rollback().await.expect("rollback");
            // An explicitly rolled-back transaction.
            let tx = client.transaction().await.expect("begin");
            tx.execute(&insert, &[&c, &3000, &"undone"])
                .await
                .expect("in tx");
            drop(tx); // rolls back
            let row = client.query_one(&sum, &[&c]).await.expect("sum");
            (c, row.get::<_, i64>(0), row.get::<_, i64>(1))
        }));
    }
    let expected_sum: i64 = (0..ROUNDS as i64).sum::<i64>() + 1000 + 1001;
    for t in tasks {
        let (c, count, sum) = t.await.expect("client task");
        assert_eq!(
            (count, sum),
            (ROUNDS as i64 + 2, expected_sum),
            "client {c}"
        );
    }
    // Everything is in the table, seen by a fresh client, and the server never had more than
    // the pool's two connections.
    let check = tp_connect(addr, token).await;
    let row = check
        .query_one("select count(*), count(distinct client) from items", &[])
        .await
        .expect("count");
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        ((ROUNDS as i64 + 2) * CLIENTS as i64, CLIENTS as i64)
    );
    let n: i64 = pg
        .psql("select count(*) from pg_stat_activity where usename = 'app'")
        .expect("count")
        .parse()
        .expect("number");
    assert!(n <= 2, "{n} server connections for a pool of 2");
}

// ---------------------------------------------------------------------------------------------
// 4. Protocol messages out of order

async fn plain_gateway(pool: &str) -> (Postgres, TestGateway, String) {
    plain_gateway_with(pool, "", "").await
}

/// A plain-text gateway for user bob (token), with more `[gateway]` and listener keys.
async fn plain_gateway_with(
    pool: &str,
    gateway: &str,
    listener: &str,
) -> (Postgres, TestGateway, String) {
    let pg = start_pg(None, &[]).await;
    let dir = TestDir::new("pg-raw");
    let vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    let token = common::token(&vault, "bob", AUDIENCE);
    drop(vault);
    let toml = config(
        &format!("tls = \"off\"\npool = {pool}\n{listener}"),
        "",
        &one_target(pg.addr()),
        "[[users]]\nname = \"bob\"\nauth = [\"token\"]\nbackend_credential = \"pg/app\"\n",
    )
    .replace("[gateway]\n", &format!("[gateway]\n{gateway}\n"));
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    (pg, gw, token)
}

async fn logged_in(gw: &TestGateway, token: &str) -> Raw<TcpStream> {
    let mut c = Raw::tcp(gw.addr("pg")).await;
    let greeting = c.login("bob", "appdb", token).await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_extended_protocol_messages_get_the_servers_errors_and_the_session_goes_on() {
    for mode in ["transaction", "session"] {
        let (_pg, gw, token) = plain_gateway(&format!("{{ mode = \"{mode}\", size = 2 }}")).await;
        let mut c = logged_in(&gw, &token).await;

        // Bind to a statement never parsed: 26000 from the server, then ReadyForQuery.
        c.send(&[(b'B', b"\0never_parsed\0\0\0\0\0\0\0"), (b'S', b"")])
            .await;
        let reply = c.until_ready().await;
        assert_eq!(tags(&reply), "EZ", "{mode}: {reply:?}");
        let (code, message) = first_error(&reply).expect("error");
        assert_eq!(code, "26000", "{mode}");
        assert!(
            message.contains("\"never_parsed\" does not exist"),
            "{message}"
        );
        assert_eq!(c.query("select 1").await, rows(&["1"]), "{mode}");

        // Execute of a portal that does not exist: 34000.
        c.send(&[(b'E', b"no_portal\0\0\0\0\0"), (b'S', b"")]).await;
        let reply = c.until_ready().await;
        assert_eq!(tags(&reply), "EZ", "{mode}: {reply:?}");
        assert_eq!(first_error(&reply).expect("error").0, "34000", "{mode}");
        assert_eq!(c.query("select 2").await, rows(&["2"]), "{mode}");

        // CopyData, CopyDone and CopyFail outside COPY are ignored, as the protocol says.
        c.send(&[
            (b'd', b"stray copy data"),
            (b'c', b""),
            (b'f', b"stray\0"),
            (b'S', b""),
        ])
        .await;
        let reply = c.until_ready().await;
        assert_eq!(tags(&reply), "Z", "{mode}: {reply:?}");
        assert_eq!(c.query("select 3").await, rows(&["3"]), "{mode}");

        // A flood of Syncs: one ReadyForQuery each, in one write.
        let mut w = Writer::new();
        for _ in 0..1000 {
            w.raw(b'S', b"");
        }
        c.write(&w.buf).await;
        let mut ready = 0;
        while ready < 1000 {
            let (tag, body) = c.message().await.expect("a ReadyForQuery");
            assert_eq!(
                (tag, body.as_slice()),
                (b'Z', &b"I"[..]),
                "{mode} after {ready}"
            );
            ready += 1;
        }
        // Nothing extra: the next answer is the next query's.
        assert_eq!(c.query("select 4").await, rows(&["4"]), "{mode}");

        // A named statement, used, closed, then used again: 26000 after the Close.
        c.send(&[
            (b'P', b"st\0select 5\0\0\0"),
            (b'B', b"\0st\0\0\0\0\0\0\0"),
            (b'E', b"\0\0\0\0\0"),
            (b'S', b""),
        ])
        .await;
        let reply = c.until_ready().await;
        assert_eq!(
            common::data_rows(&reply, "NULL"),
            ["5"],
            "{mode}: {reply:?}"
        );
        c.send(&[(b'C', b"Sst\0"), (b'S', b"")]).await;
        assert_eq!(tags(&c.until_ready().await), "3Z", "{mode}");
        c.send(&[(b'B', b"\0st\0\0\0\0\0\0\0"), (b'S', b"")]).await;
        let reply = c.until_ready().await;
        assert_eq!(
            first_error(&reply).expect("error").0,
            "26000",
            "{mode}: {reply:?}"
        );
        assert_eq!(c.query("select 6").await, rows(&["6"]), "{mode}");

        // Another client on the same gateway was never disturbed.
        let mut other = logged_in(&gw, &token).await;
        assert_eq!(other.query("select 7").await, rows(&["7"]), "{mode}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Direct TLS (PostgreSQL 17 sslnegotiation=direct)

async fn direct_tls(
    addr: SocketAddr,
    ca: &Path,
    alpn: Option<&[u8]>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut config = (*common::client_config(ca, &[&rustls::version::TLS13], None)).clone();
    if let Some(p) = alpn {
        config.alpn_protocols = vec![p.to_vec()];
    }
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
}

/// A transaction-mode gateway that requires TLS, for user bob (token), with more `[gateway]`
/// keys.
async fn tls_gateway(tag: &str, gateway: &str) -> (Postgres, TestGateway, String) {
    let pg = start_pg(None, &[]).await;
    let dir = TestDir::new(tag);
    dev_pki(&dir);
    let vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    let token = common::token(&vault, "bob", AUDIENCE);
    drop(vault);
    let toml = config(
        "tls = \"required\"\ntls_config = \"default\"\npool = { mode = \"transaction\", size = 2 }",
        &tls_section(""),
        &one_target(pg.addr()),
        "[[users]]\nname = \"bob\"\nauth = [\"token\"]\nbackend_credential = \"pg/app\"\n",
    )
    .replace("[gateway]\n", &format!("[gateway]\n{gateway}\n"));
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    (pg, gw, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_with_alpn_postgresql_logs_in_and_without_alpn_is_closed() {
    let (_pg, gw, token) = tls_gateway("pg-direct", "").await;
    let addr = gw.addr("pg");
    let ca = gw.dir.path("certs/ca.pem");

    // TLS first, ALPN postgresql, then the StartupMessage inside TLS.
    let tls = direct_tls(addr, &ca, Some(b"postgresql"))
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    let mut c = Raw::new(tls);
    let mark = audit_mark(&gw);
    let greeting = c.login("bob", "appdb", &token).await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
    assert_eq!(
        c.query("select current_user, 40 + 2, ssl from pg_stat_ssl where pid = pg_backend_pid()")
            .await,
        rows(&["app|42|f"]),
        "the client is on TLS to the gateway; the gateway to server hop is plain here"
    );
    assert_eq!(c.query("select 'again'").await, rows(&["again"]));
    let line = wait_for_audit(&gw, mark, "\"event\":\"auth.success\"").await;
    assert!(line.contains("\"tls\":true"), "{line}");

    // Without ALPN, or with another protocol's: the gateway completes no PostgreSQL exchange;
    // it closes the connection without a byte of the protocol, like PostgreSQL 17 does.
    let before = gw.metric("sumun_rejected_flows_total{listener=\"pg\",reason=\"tls_handshake\"}");
    for alpn in [None, Some(&b"http/1.1"[..])] {
        match direct_tls(addr, &ca, alpn).await {
            Err(_) => {} // refused in the handshake itself (no common ALPN protocol)
            Ok(tls) => {
                let mut c = Raw::new(tls);
                let mut w = Writer::new();
                w.startup(&[("user", "bob"), ("database", "appdb")]);
                // The write may already fail: the gateway closed after the handshake.
                let _ = c.stream.write_all(&w.buf).await;
                let _ = c.stream.flush().await;
                assert!(c.is_closed().await, "{alpn:?}: no answer, only the close");
            }
        }
    }
    assert!(
        common::eventually(Duration::from_secs(5), || {
            gw.metric("sumun_rejected_flows_total{listener=\"pg\",reason=\"tls_handshake\"}")
                >= before + 2.0
        })
        .await,
        "{}",
        gw.metrics()
    );
    // The usual SSLRequest way still works next to it.
    let (ok, out, err) = psql_token(addr.port(), "bob", &token, "require", "select 9").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "9");
}

// ---------------------------------------------------------------------------------------------
// 6. Every target down

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_target_down_clients_get_08006_and_the_next_client_after_recovery_works() {
    let mut pg = start_pg(None, &[]).await;
    let target = pg.addr();
    let dir = TestDir::new("pg-down");
    let vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    let token = common::token(&vault, "bob", AUDIENCE);
    drop(vault);
    let toml = config(
        "tls = \"off\"\npool = { mode = \"transaction\", size = 2, checkout_timeout = \"2s\" }",
        "",
        &one_target(target),
        "[[users]]\nname = \"bob\"\nauth = [\"token\"]\nbackend_credential = \"pg/app\"\n",
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    let addr = gw.addr("pg");
    pg = tokio::task::spawn_blocking(move || {
        pg.kill();
        pg
    })
    .await
    .expect("kill");

    // The first login needs a server (to show its parameters): it fails with 08006.
    let mut c = Raw::tcp(addr).await;
    let reply = c.login("bob", "appdb", &token).await;
    let (code, message) = first_error(&reply).unwrap_or_else(|| panic!("{reply:?}"));
    assert_eq!(code, "08006");
    assert!(
        message.starts_with("no backend server is available"),
        "{message}"
    );
    assert!(message.contains(&target.to_string()), "{message}");
    assert!(c.is_closed().await);
    let (ok, _, err) = psql_token(addr.port(), "bob", &token, "disable", "select 1").await;
    assert!(!ok);
    assert!(
        err.contains("FATAL:  no backend server is available"),
        "{err}"
    );

    // The server comes back on its port: the next client is served.
    pg = tokio::task::spawn_blocking(move || {
        pg.restart().expect("restart");
        pg
    })
    .await
    .expect("restart");
    assert_eq!(pg.addr(), target);
    let mut c = logged_in(&gw, &token).await;
    assert_eq!(c.query("select 10").await, rows(&["10"]));
    drop(c);

    // Down again, now with the server's parameters known: a client logs in, and its first
    // statement gets the 08006 (and the close), not a hang.
    pg = tokio::task::spawn_blocking(move || {
        pg.kill();
        pg
    })
    .await
    .expect("kill");
    let mut c = logged_in(&gw, &token).await;
    let reply = c.query("select 11").await;
    let (code, message) = reply.expect_err("no server");
    assert_eq!(code, "08006");
    assert!(
        message.contains("no backend server is available"),
        "{message}"
    );
    assert!(c.is_closed().await);

    pg = tokio::task::spawn_blocking(move || {
        pg.restart().expect("restart");
        pg
    })
    .await
    .expect("restart");
    let mut c = logged_in(&gw, &token).await;
    assert_eq!(c.query("select 12").await, rows(&["12"]));
    let (ok, out, err) = psql_token(addr.port(), "bob", &token, "disable", "select 13").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "13");
    drop(pg);
}

async fn health_is(gw: &TestGateway, want: &str) {
    let ok = common::eventually(Duration::from_secs(20), || {
        gw.gateway
            .targets()
            .iter()
            .all(|t| format!("{:?}", t.health) == want)
    })
    .await;
    assert!(ok, "target never {want}: {:?}", gw.gateway.targets());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_health_checks_a_group_whose_only_target_is_unhealthy_fails_at_once_and_recovers() {
    let mut pg = start_pg(None, &[]).await;
    let dir = TestDir::new("pg-down-hc");
    let vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    let token = common::token(&vault, "bob", AUDIENCE);
    drop(vault);
    let group = format!(
        "health_check = {{ protocol = \"postgres\", credential = \"pg/app\", database = \"appdb\", interval = \"300ms\", timeout = \"250ms\", healthy_threshold = 2, unhealthy_threshold = 2 }}\n\
         targets = [{{ address = \"{}\" }}]",
        pg.addr()
    );
    let toml = config(
        "tls = \"off\"\npool = { mode = \"transaction\", size = 2, checkout_timeout = \"2s\" }",
        "",
        &group,
        "[[users]]\nname = \"bob\"\nauth = [\"token\"]\nbackend_credential = \"pg/app\"\n",
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    let target = pg.addr();
    health_is(&gw, "Healthy").await;
    let mut c = logged_in(&gw, &token).await;
    assert_eq!(c.query("select 1").await, rows(&["1"]));

    pg = tokio::task::spawn_blocking(move || {
        pg.kill();
        pg
    })
    .await
    .expect("kill");
    health_is(&gw, "Unhealthy").await;
    // The client that was connected, and a new one, get 08006 at their next statement. The
    // group fails open (every target unhealthy: all are tried), so the message names what the
    // connection attempt met.
    for mut client in [c, logged_in(&gw, &token).await] {
        let (code, message) = client.query("select 2").await.expect_err("no server");
        assert_eq!(code, "08006", "{message}");
        assert!(
            message.starts_with(&format!(
                "no backend server is available: cannot connect to {target}"
            )),
            "{message}"
        );
        assert!(client.is_closed().await);
    }
    // With `fail_open = false` an unhealthy group is refused without trying it.
    gw.reload(&toml.replace(
        "[[target_groups]]\nname = \"pg\"\n",
        "[[target_groups]]\nname = \"pg\"\nfail_open = false\n",
    ))
    .await
    .expect("reload");
    health_is(&gw, "Unhealthy").await;
    let mut client = logged_in(&gw, &token).await;
    let (code, message) = client.query("select 2").await.expect_err("no server");
    assert_eq!(code, "08006", "{message}");
    assert_eq!(message, "no healthy backend server is available");
    assert!(client.is_closed().await);

    pg = tokio::task::spawn_blocking(move || {
        pg.restart().expect("restart");
        pg
    })
    .await
    .expect("restart");
    health_is(&gw, "Healthy").await;
    let mut c = logged_in(&gw, &token).await;
    assert_eq!(c.query("select 3").await, rows(&["3"]));
    drop(pg);
}

// ---------------------------------------------------------------------------------------------
// 7. Session-mode and pinned clients in a failover

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_and_pinned_clients_whose_server_dies_are_told_and_reconnect_to_the_new_primary() {
    let mut primary = start_pg(None, &[]).await;
    let replica = Arc::new(primary.start_replica().expect("start replica"));
    let dir = TestDir::new("pg-ha-more");
    let vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    let sam = common::token(&vault, "sam", AUDIENCE);
    let bob = common::token(&vault, "bob", AUDIENCE);
    drop(vault);
    let group = format!(
        "health_check = {{ protocol = \"postgres\", credential = \"pg/app\", database = \"appdb\", interval = \"500ms\", timeout = \"400ms\", healthy_threshold = 2, unhealthy_threshold = 2 }}\n\
         targets = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]",
        primary.addr(),
        replica.addr()
    );
    let toml = config(
        "tls = \"off\"\npool = { mode = \"transaction\", size = 4, checkout_timeout = \"20s\" }",
        "",
        &group,
        r#"
[[users]]
name = "sam"
auth = ["token"]
backend_credential = "pg/app"
pool_mode = "session"
[[users]]
name = "bob"
auth = ["token"]
backend_credential = "pg/app"
"#,
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    let addr = gw.addr("pg");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut roles: Vec<&str> = gw.gateway.targets().iter().map(|t| t.role).collect();
        roles.sort_unstable();
        if roles == ["primary", "replica"] {
            break;
        }
        assert!(Instant::now() < deadline, "roles never learned: {roles:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let login = |user: &'static str, token: String| async move {
        let mut c = Raw::tcp(addr).await;
        let greeting = c.login(user, "appdb", &token).await;
        assert_eq!(
            greeting.last().map(|m| m.0),
            Some(b'Z'),
            "{user}: {greeting:?}"
        );
        c
    };

    let mut session = login("sam", sam.clone()).await;
    assert_eq!(session.query("create table t (who text)").await, rows(&[]));
    assert_eq!(
        session.query("select pg_is_in_recovery()").await,
        rows(&["f"])
    );
    let mut pinned = login("bob", bob.clone()).await;
    assert_eq!(pinned.query("set search_path = public").await, rows(&[]));
    assert_eq!(pinned.query("show search_path").await, rows(&["public"]));
    assert!(
        sumun_gateway::postgres::client_rows(common::pg_front_end(&gw))
            .iter()
            .any(|c| c.user == "bob" && c.pinned == Some("set")),
        "bob is pinned"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica
        .psql_as(
            "postgres",
            replica.superuser_password(),
            "appdb",
            "select count(*) from pg_class where relname = 't'",
        )
        .expect("replica")
        != "1"
    {
        assert!(Instant::now() < deadline, "table never replicated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The session client has a statement in flight when the primary dies.
    let mut w = Writer::new();
    w.query("select pg_sleep(30)");
    session.write(&w.buf).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while primary
        .psql("select count(*) from pg_stat_activity where query = 'select pg_sleep(30)'")
        .expect("activity")
        != "1"
    {
        assert!(
            Instant::now() < deadline,
            "the statement never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    primary = tokio::task::spawn_blocking(move || {
        primary.kill();
        primary
    })
    .await
    .expect("kill");
    let promote = {
        let replica = replica.clone();
        tokio::task::spawn_blocking(move || replica.promote().expect("promote"))
    };

    // Session mode: the in-flight statement ends with FATAL 08006 and the connection closes.
    let reply = session.until_ready().await;
    let (tag, body) = reply.last().expect("an answer").clone();
    assert_eq!(tag, b'E', "{reply:?}");
    assert_backend_lost(&body);
    assert!(session.is_closed().await);

    // The pinned transaction-mode client was idle: it is told the same at once, and the
    // connection closes (its session state is gone with the server).
    let (tag, body) = pinned.message().await.expect("told before it asks");
    assert_eq!(tag, b'E');
    assert_backend_lost(&body);
    assert!(pinned.is_closed().await);

    promote.await.expect("promote");
    // New connections write to the promoted server.
    let mut session = login("sam", sam).await;
    assert_eq!(
        session
            .query("insert into t values ('sam'); select pg_is_in_recovery()")
            .await,
        rows(&["f"])
    );
    let mut again = login("bob", bob).await;
    assert_eq!(again.query("set search_path = public").await, rows(&[]));
    assert_eq!(
        again
            .query("insert into t values ('bob'); select string_agg(who, ',' order by who) from t")
            .await,
        rows(&["bob,sam"])
    );
    assert_eq!(
        replica
            .psql_as(
                "postgres",
                replica.superuser_password(),
                "appdb",
                "select string_agg(who, ',' order by who) from t"
            )
            .expect("on the promoted server"),
        "bob,sam"
    );
    drop(primary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_message_type_or_a_second_startup_ends_that_session_only() {
    for mode in ["transaction", "session"] {
        let (_pg, gw, token) = plain_gateway(&format!("{{ mode = \"{mode}\", size = 2 }}")).await;
        let mut bystander = logged_in(&gw, &token).await;
        assert_eq!(bystander.query("select 1").await, rows(&["1"]));
        let mut c = logged_in(&gw, &token).await;
        c.send(&[(b'y', b"hello"), (b'S', b"")]).await;
        let reply = c.until_ready().await;
        let (code, message) = first_error(&reply).unwrap_or_else(|| panic!("{mode}: {reply:?}"));
        assert_eq!(code, "08P01", "{mode}: {message}");
        assert!(
            message.contains("invalid frontend message type"),
            "{mode}: {message}"
        );
        assert!(c.is_closed().await, "{mode}");
        let mut c = logged_in(&gw, &token).await;
        let mut w = Writer::new();
        w.startup(&[("user", "bob"), ("database", "appdb")]);
        c.write(&w.buf).await;
        let reply = c.until_ready().await;
        let (code, _) = first_error(&reply).unwrap_or_else(|| panic!("{mode}: {reply:?}"));
        assert_eq!(code, "08P01", "{mode}");
        assert!(c.is_closed().await, "{mode}");
        assert_eq!(bystander.query("select 2").await, rows(&["2"]), "{mode}");
        let mut fresh = logged_in(&gw, &token).await;
        assert_eq!(fresh.query("select 3").await, rows(&["3"]), "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_resizes_existing_pools_without_dropping_anyone() {
    let pg = start_pg(None, &[]).await;
    let dir = TestDir::new("pg-resize");
    let vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    let token = common::token(&vault, "bob", AUDIENCE);
    drop(vault);
    let toml = |size: u32| {
        config(
            &format!(
                "tls = \"off\"\npool = {{ mode = \"session\", size = {size}, checkout_timeout = \"1s\" }}"
            ),
            "",
            &one_target(pg.addr()),
            "[[users]]\nname = \"bob\"\nauth = [\"token\"]\nbackend_credential = \"pg/app\"\n",
        )
    };
    let servers = || -> i64 {
        pg.psql("select count(*) from pg_stat_activity where usename = 'app'")
            .expect("count")
            .parse()
            .expect("number")
    };
    let gw = TestGateway::start_in(dir, &toml(1)).await.expect("gateway");

    // Size 1, session mode: the first client holds the only connection; a second one times out.
    let mut first = logged_in(&gw, &token).await;
    assert_eq!(first.query("select 1").await, rows(&["1"]));
    let mut second = logged_in(&gw, &token).await;
    let (code, message) = second.query("select 2").await.expect_err("pool full");
    assert_eq!(code, "53300", "{message}");

    // Grown to 2 by a reload: a new client is served while the first still holds its own.
    gw.reload(&toml(2)).await.expect("reload");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut third = loop {
        let mut c = logged_in(&gw, &token).await;
        match c.query("select 3").await {
            Ok(r) => {
                assert_eq!(Ok(r), rows(&["3"]));
                break c;
            }
            Err((code, _)) if code == "53300" && Instant::now() < deadline => {}
            Err(e) => panic!("after growing the pool: {e:?}"),
        }
    };
    assert_eq!(first.query("select 4").await, rows(&["4"]));
    assert_eq!(servers(), 2);

    // Shrunk back to 1: nobody loses a connection; the pool gets down to one as they leave.
    gw.reload(&toml(1)).await.expect("reload");
    assert!(
        common::eventually(Duration::from_secs(10), || {
            sumun_gateway::postgres::pool_rows(common::pg_front_end(&gw))
                .iter()
                .all(|p| p.size == 1)
        })
        .await,
        "the pool never shrank: {:?}",
        sumun_gateway::postgres::pool_rows(common::pg_front_end(&gw))
    );
    // A deliberate window, not a wait for an event: the pools are reaped every second, and a
    // shrink that dropped clients would do it within two ticks.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(first.query("select 5").await, rows(&["5"]));
    assert_eq!(third.query("select 6").await, rows(&["6"]));
    drop(third);
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while servers() > 1 {
        assert!(
            Instant::now() < deadline,
            "still {} server connections",
            servers()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And it stays at one: two clients at once, the second waits for the first.
    let mut a = logged_in(&gw, &token).await;
    assert_eq!(a.query("select 7").await, rows(&["7"]));
    let mut b = logged_in(&gw, &token).await;
    let (code, _) = b.query("select 8").await.expect_err("pool of one");
    assert_eq!(code, "53300");
    assert_eq!(servers(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_channel_binding_hashes_a_sha384_certificate_with_sha384() {
    let pg = start_pg(None, &[]).await;
    let dir = TestDir::new("pg-p384");
    let mut vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    vault
        .set_user_password(
            "dave",
            &sumun_vault::SecretBytes::from_slice(b"dave-pw-384"),
        )
        .expect("verifier");
    drop(vault);
    // A P-384 certificate signed with ecdsa-with-SHA384: tls-server-end-point is its SHA-384
    // (RFC 5929), which libpq computes the same way; SHA-256 here would fail the login.
    std::fs::create_dir_all(dir.path("p384")).expect("dir");
    let (ok, _, err) = run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-sha384",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &dir.path("p384/key.pem").to_string_lossy(),
            "-out",
            &dir.path("p384/cert.pem").to_string_lossy(),
        ],
        &[],
    )
    .await;
    assert!(ok, "openssl: {err}");
    let toml = config(
        "tls = \"required\"\ntls_config = \"default\"\npool = { mode = \"transaction\", size = 2 }",
        "[tls.default]\ncert = \"{dir}/p384/cert.pem\"\nkey = \"{dir}/p384/key.pem\"\n",
        &one_target(pg.addr()),
        "[[users]]\nname = \"dave\"\nauth = [\"scram\"]\nbackend_credential = \"pg/app\"\n",
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    for binding in ["require", "prefer"] {
        let (ok, out, err) = common::psql_appdb(
            gw.addr("pg").port(),
            "dave",
            &["select 384"],
            &[
                ("PGPASSWORD", "dave-pw-384"),
                ("PGSSLMODE", "require"),
                ("PGCHANNELBINDING", binding),
            ],
        )
        .await;
        assert!(ok, "channel_binding={binding}: {err}");
        assert_eq!(out.trim(), "384");
    }
    assert!(
        gw.audit_log().contains("\"method\":\"scram-plus\""),
        "{}",
        gw.audit_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_retries_bounds_how_many_dead_targets_a_client_tries() {
    // Three targets nobody listens on (ports bound and closed again).
    let dead: Vec<SocketAddr> = (0..3)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        })
        .collect();
    for (retries, tried) in [(0u32, 1.0), (1, 2.0), (2, 3.0)] {
        let dir = TestDir::new("pg-retries");
        let vault = common::backend_vault(&dir, BACKEND_PASSWORD);
        let token = common::token(&vault, "bob", AUDIENCE);
        drop(vault);
        let targets: Vec<String> = dead
            .iter()
            .map(|a| format!("{{ address = \"{a}\" }}"))
            .collect();
        let group = format!(
            "connect_retries = {retries}\nhealth_check = {{ enabled = false }}\ntargets = [{}]",
            targets.join(", ")
        );
        let toml = config(
            "tls = \"off\"\npool = { mode = \"transaction\", size = 2, checkout_timeout = \"2s\" }",
            "",
            &group,
            "[[users]]\nname = \"bob\"\nauth = [\"token\"]\nbackend_credential = \"pg/app\"\n",
        );
        let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
        let mut c = Raw::tcp(gw.addr("pg")).await;
        let reply = c.login("bob", "appdb", &token).await;
        let (code, message) = first_error(&reply).unwrap_or_else(|| panic!("{reply:?}"));
        assert_eq!(code, "08006");
        assert!(
            message.starts_with("no backend server is available"),
            "{message}"
        );
        let metrics = gw.metrics();
        let failed: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("sumun_target_connection_errors_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(failed, tried, "connect_retries = {retries}:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_statement_the_server_has_does_not_clobber_the_clients_unnamed_one() {
    // One server connection, so every client's statements meet on it.
    let (_pg, gw, token) = plain_gateway("{ mode = \"transaction\", size = 1 }").await;
    // Another client prepares the text first: the server now has it under the gateway's name.
    let mut other = logged_in(&gw, &token).await;
    other
        .send(&[
            (b'P', &parse_body("s_other", "select 'named'")),
            (b'S', b""),
        ])
        .await;
    assert_eq!(tags(&other.until_ready().await), "1Z");

    let mut c = logged_in(&gw, &token).await;
    let unnamed = parse_body("", "select 'unnamed'");
    let named = parse_body("s1", "select 'named'");
    // Unnamed statement, then a named one the server already has, then the unnamed one used:
    // it must still be the unnamed text.
    c.send(&[
        (b'P', &unnamed),
        (b'P', &named),
        (b'B', &bind_body("")),
        (b'E', b"\0\0\0\0\0"),
        (b'B', &bind_body("s1")),
        (b'E', b"\0\0\0\0\0"),
        (b'S', b""),
    ])
    .await;
    let reply = c.until_ready().await;
    assert_eq!(tags(&reply), "112DC2DCZ", "{reply:?}");
    assert_eq!(common::data_rows(&reply, "NULL"), ["unnamed", "named"]);
    // Closing the named statement leaves the unnamed one alone too.
    c.send(&[
        (b'P', &unnamed),
        (b'C', b"Ss1\0"),
        (b'B', &bind_body("")),
        (b'E', b"\0\0\0\0\0"),
        (b'S', b""),
    ])
    .await;
    let reply = c.until_ready().await;
    assert_eq!(tags(&reply), "132DCZ", "{reply:?}");
    assert_eq!(common::data_rows(&reply, "NULL"), ["unnamed"]);
    // And the closed name is gone for this client only.
    c.send(&[(b'B', &bind_body("s1")), (b'S', b"")]).await;
    let (code, _) = first_error(&c.until_ready().await).expect("closed");
    assert_eq!(code, "26000");
    other
        .send(&[
            (b'B', &bind_body("s_other")),
            (b'E', b"\0\0\0\0\0"),
            (b'S', b""),
        ])
        .await;
    assert_eq!(
        common::data_rows(&other.until_ready().await, "NULL"),
        ["named"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_request_prepares_its_statements_on_the_new_server() {
    let (pg, gw, token) = plain_gateway("{ mode = \"transaction\", size = 1 }").await;
    let mut c = logged_in(&gw, &token).await;
    c.send(&[(b'P', &parse_body("s1", "select 41")), (b'S', b"")])
        .await;
    assert_eq!(tags(&c.until_ready().await), "1Z");
    // The server connection that has the statement dies while it sits in the pool.
    let killed = pg
        .psql("select count(pg_terminate_backend(pid)) from pg_stat_activity where usename = 'app'")
        .expect("terminate");
    assert_eq!(killed, "1");
    // The client's next Bind reaches the dead connection (used less than a second ago, so
    // trusted) or a new one; either way it is answered from a server that has the statement.
    let reply = c.execute("s1").await;
    assert_eq!(tags(&reply), "2DCZ", "{reply:?}");
    assert_eq!(common::data_rows(&reply, "NULL"), ["41"]);
    // And again, now on the new connection.
    assert_eq!(common::data_rows(&c.execute("s1").await, "NULL"), ["41"]);
}

/// A transaction-mode gateway whose idle clients park after 100 ms.
async fn parking_gateway(listener: &str) -> (Postgres, TestGateway, String) {
    plain_gateway_with(
        "{ mode = \"transaction\", size = 2 }",
        "park_after = \"100ms\"",
        listener,
    )
    .await
}

async fn parked_becomes(gw: &TestGateway, n: f64) {
    assert!(
        common::eventually(Duration::from_secs(10), || gw
            .metric("sumun_parked_clients")
            == n)
        .await,
        "sumun_parked_clients never became {n}: {}",
        gw.metric("sumun_parked_clients")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_park_and_wake_with_their_session_and_pinned_ones_stay() {
    let (_pg, gw, token) = parking_gateway("max_connections = 2").await;
    let mut c = logged_in(&gw, &token).await;
    c.send(&[(b'P', &parse_body("s1", "select 41")), (b'S', b"")])
        .await;
    assert_eq!(tags(&c.until_ready().await), "1Z");
    parked_becomes(&gw, 1.0).await;
    // Parked, it is still a logged-in client, with no server.
    let rows_now = sumun_gateway::postgres::client_rows(common::pg_front_end(&gw));
    assert_eq!(rows_now.len(), 1);
    assert_eq!(rows_now[0].user, "bob");
    assert_eq!(rows_now[0].server, None);
    assert_eq!(gw.metric("sumun_active_flows{listener=\"pg\"}"), 1.0);
    // Its next request wakes it, with its prepared statement still known.
    let reply = c.execute("s1").await;
    assert_eq!(tags(&reply), "2DCZ", "{reply:?}");
    assert_eq!(common::data_rows(&reply, "NULL"), ["41"]);
    assert_eq!(c.query("select 2").await, rows(&["2"]));
    parked_becomes(&gw, 1.0).await;
    assert_eq!(c.query("select 3").await, rows(&["3"]));

    // A pinned client keeps its server, so it never parks; the first one parks again.
    let mut pinned = logged_in(&gw, &token).await;
    assert_eq!(pinned.query("set search_path = public").await, rows(&[]));
    parked_becomes(&gw, 1.0).await;
    // A deliberate window, not a wait for an event: five times park_after (100 ms), in which
    // the pinned client would have parked if it could.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.metric("sumun_parked_clients"), 1.0);
    assert_eq!(
        pinned.query("show search_path").await,
        rows(&["public"]),
        "the pinned client kept its server"
    );
    // A parked client still holds its place under max_connections.
    let mut third = Raw::tcp(gw.addr("pg")).await;
    let refused = third.login("bob", "appdb", &token).await;
    assert!(refused.iter().all(|m| m.0 != b'Z'), "{refused:?}");
    assert_eq!(
        gw.metric("sumun_rejected_flows_total{listener=\"pg\",reason=\"max_connections\"}"),
        1.0
    );

    // A parked client that goes away is noticed, and its session is recorded as closed.
    let mark = audit_mark(&gw);
    drop(c);
    parked_becomes(&gw, 0.0).await;
    wait_for_audit(&gw, mark, "\"end\":\"closed\"").await;
    let log = gw.audit_log();
    let ended: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["event"] == "session.end")
        .collect();
    assert_eq!(ended.len(), 1, "{log}");
    assert_eq!(ended[0]["end"], "closed");
    assert!(ended[0]["bytes_in"].as_u64().unwrap_or(0) > 0, "{log}");
    assert!(
        common::eventually(Duration::from_secs(5), || gw
            .metric("sumun_active_flows{listener=\"pg\"}")
            == 1.0)
        .await
    );
    assert_eq!(pinned.query("select 4").await, rows(&["4"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_client_times_out_and_a_stop_wakes_parked_clients_to_say_goodbye() {
    let (_pg, gw, token) = parking_gateway("idle_timeout = \"2s\"").await;
    let mark = audit_mark(&gw);
    let mut c = logged_in(&gw, &token).await;
    assert_eq!(c.query("select 1").await, rows(&["1"]));
    parked_becomes(&gw, 1.0).await;
    // Parked, the idle timeout still ends it, with PostgreSQL's message.
    let reply = c.until_ready().await;
    let (code, _) = first_error(&reply).unwrap_or_else(|| panic!("{reply:?}"));
    assert_eq!(code, "57P05", "{reply:?}");
    assert!(c.is_closed().await);
    wait_for_audit(&gw, mark, "\"end\":\"idle_timeout\"").await;

    let mut a = logged_in(&gw, &token).await;
    let mut b = logged_in(&gw, &token).await;
    parked_becomes(&gw, 2.0).await;
    gw.gateway.stop_now();
    for c in [&mut a, &mut b] {
        let reply = c.until_ready().await;
        let (code, _) = first_error(&reply).unwrap_or_else(|| panic!("{reply:?}"));
        assert_eq!(code, "57P01", "{reply:?}");
        assert!(c.is_closed().await);
    }
    parked_becomes(&gw, 0.0).await;
    // The audit log is written by a background thread: wait for both lines.
    assert!(
        common::eventually(Duration::from_secs(10), || gw
            .audit_log()
            .matches("\"end\":\"stopped\"")
            .count()
            == 2)
        .await,
        "{}",
        gw.audit_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_statement_too_large_to_translate_pins_its_client_and_keeps_working() {
    let (_pg, gw, token) = plain_gateway("{ mode = \"transaction\", size = 2 }").await;
    let mut c = logged_in(&gw, &token).await;
    // Over the 256 KiB the gateway holds whole: streamed through under the client's name.
    let big = format!("select 7 {}", " ".repeat(300_000));
    c.send(&[(b'P', &parse_body("big", &big)), (b'S', b"")])
        .await;
    assert_eq!(tags(&c.until_ready().await), "1Z");
    let rows_now = sumun_gateway::postgres::client_rows(common::pg_front_end(&gw));
    assert_eq!(
        rows_now[0].pinned,
        Some("large_prepare"),
        "{:?}",
        rows_now[0].pinned
    );
    // Another client holds a server in a transaction while this one uses its statement: had
    // the client let its server go, the other would hold that one (the pool hands out the
    // most recently used first) and this client would land where `big` does not exist.
    let mut other = logged_in(&gw, &token).await;
    for i in 0..3 {
        assert_eq!(other.query("begin").await, rows(&[]), "{i}");
        let reply = c.execute("big").await;
        assert_eq!(tags(&reply), "2DCZ", "{i}: {reply:?}");
        assert_eq!(common::data_rows(&reply, "NULL"), ["7"]);
        assert_eq!(other.query("commit").await, rows(&[]), "{i}");
    }
    assert!(gw
        .metrics()
        .contains("sumun_pg_pinned_sessions_total{reason=\"large_prepare\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_parks_with_its_tls_session_and_wakes_to_answer() {
    let (_pg, gw, token) = tls_gateway("pg-park-tls", "park_after = \"100ms\"").await;
    let ca = gw.dir.path("certs/ca.pem");
    let mut c = Raw::new(client_tls(&ca, None, gw.addr("pg")).await);
    let greeting = c.login("bob", "appdb", &token).await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
    c.send(&[(b'P', &parse_body("s1", "select 41")), (b'S', b"")])
        .await;
    assert_eq!(tags(&c.until_ready().await), "1Z");
    // Parked with its TLS session; woken, it decrypts the next request with the same keys.
    for i in 0..3 {
        parked_becomes(&gw, 1.0).await;
        let reply = c.execute("s1").await;
        assert_eq!(tags(&reply), "2DCZ", "{i}: {reply:?}");
        assert_eq!(common::data_rows(&reply, "NULL"), ["41"]);
        assert_eq!(
            c.query(&format!("select {i}")).await,
            rows(&[&i.to_string()])
        );
    }
    parked_becomes(&gw, 1.0).await;
    // Gone without a TLS close_notify: woken, the session sees a truncated stream and ends.
    let mark = audit_mark(&gw);
    drop(c);
    parked_becomes(&gw, 0.0).await;
    let line = wait_for_audit(&gw, mark, "\"event\":\"session.end\"").await;
    assert!(line.contains("\"end\":\"client_error\""), "{line}");
}
