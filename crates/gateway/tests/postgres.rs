//! The PostgreSQL front end against a real PostgreSQL with scram-sha-256 password auth, real
//! `psql` and `pgbench`, and a real vault: token and SCRAM logins, vault-held backend
//! credentials, transaction and session pooling, cancel, pool exhaustion, a rotated backend
//! password, bad input, and the audit trail.

mod common;

use std::time::Duration;

use common::{audit_mark, dev_certs, run, wait_for_audit, TestDir, TestGateway};
use sumun_testkit::{PgOptions, Postgres};
use sumun_vault::{LocalMasterKey, SecretBytes, SecretMeta, Vault};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BACKEND_PASSWORD: &str = "backend-Secret-1";
const ALICE_PASSWORD: &str = "alice-pw-1";
const DAVE_PASSWORD: &str = "dave-pw-1";

struct Setup {
    pg: Postgres,
    gw: TestGateway,
    vault_dir: std::path::PathBuf,
    key_file: std::path::PathBuf,
}

impl Setup {
    fn port(&self) -> u16 {
        self.gw.addr("pg").port()
    }

    fn token(&self, user: &str, database: Option<&str>, ttl: u64) -> String {
        let key = LocalMasterKey::from_key_file(&self.key_file).expect("key");
        let vault = Vault::open_with(&self.vault_dir, Box::new(key)).expect("open vault");
        let signer = vault.token_signer().expect("signer");
        let t = signer
            .issue(
                user,
                database,
                "sumun-test",
                sumun_vault::store::now_unix_secs(),
                ttl,
            )
            .expect("issue");
        t.expose_str().expect("utf8").to_string()
    }

    fn vault(&self) -> Vault {
        let key = LocalMasterKey::from_key_file(&self.key_file).expect("key");
        Vault::open_with(&self.vault_dir, Box::new(key)).expect("open vault")
    }
}

async fn setup(pool: &str, extra: &str) -> Setup {
    let pg = Postgres::start_with(PgOptions {
        password_auth: true,
        users: vec![("app".into(), BACKEND_PASSWORD.into())],
        databases: vec!["appdb".into()],
        ..PgOptions::default()
    })
    .expect("start postgres");
    pg.psql("ALTER DATABASE appdb OWNER TO app").expect("owner");
    let dir = TestDir::new("pg");
    dev_certs(&dir.0);
    let vault_dir = dir.path("vault");
    let key_file = dir.path("master.key");
    let mut vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    vault
        .set_user_password("alice", &SecretBytes::from_slice(ALICE_PASSWORD.as_bytes()))
        .expect("set password");
    vault
        .set_user_password("dave", &SecretBytes::from_slice(DAVE_PASSWORD.as_bytes()))
        .expect("set password");
    drop(vault);
    let toml = format!(
        r#"
[gateway]
name = "sumun-test"
[vault]
dir = "{{dir}}/vault"
key_file = "{{dir}}/master.key"
[tls.default]
cert = "{{dir}}/certs/server.pem"
key = "{{dir}}/certs/server-key.pem"
[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.0/8" }}]
[[listeners]]
name = "pg"
bind = "127.0.0.1:0"
protocol = "postgres"
tls = "optional"
tls_config = "default"
target_group = "pg"
security_groups = ["local"]
pool = {pool}
{extra}
[[target_groups]]
name = "pg"
health_check = {{ enabled = false }}
targets = [{{ address = "{addr}" }}]
[[users]]
name = "alice"
auth = ["token", "scram"]
backend_credential = "pg/app"
databases = ["appdb", "postgres"]
admin = true
[[users]]
name = "dave"
auth = ["scram"]
backend_credential = "pg/app"
[[users]]
name = "bob"
auth = ["token"]
backend_credential = "pg/app"
databases = ["postgres"]
[[users]]
name = "ops"
auth = ["token"]
admin = true
[[users]]
name = "carol"
auth = ["token"]
databases = ["sumun"]
[audit]
path = "{{dir}}/audit.jsonl"
[flow_logs]
path = "{{dir}}/flows.log"
"#,
        addr = pg.addr()
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    Setup {
        pg,
        gw,
        vault_dir,
        key_file,
    }
}

/// psql through the gateway: (success, stdout, stderr).
async fn psql(
    port: u16,
    user: &str,
    db: &str,
    password: &str,
    sslmode: &str,
    sql: &str,
) -> (bool, String, String) {
    let port = port.to_string();
    run(
        "psql",
        &[
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            user,
            "-d",
            db,
            "-c",
            sql,
        ],
        &[
            ("PGPASSWORD", password),
            ("PGSSLMODE", sslmode),
            ("PGCONNECT_TIMEOUT", "10"),
        ],
    )
    .await
}

/// Wait (up to 10 s) until the server runs `sql` (a client's statement reached it).
async fn server_runs(pg: &Postgres, sql: &str) {
    let probe = format!(
        "select count(*) from pg_stat_activity where state = 'active' and query = '{}'",
        sql.replace('\'', "''")
    );
    assert!(
        common::eventually_async(Duration::from_secs(10), || async {
            common::server_sql(pg, &probe).await == "1"
        })
        .await,
        "the server never ran {sql}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_over_tls_and_scram_log_in_with_the_vault_credential() {
    let s = setup(r#"{ mode = "transaction", size = 4 }"#, "").await;
    let token = s.token("alice", Some("appdb"), 600);
    assert!(token.len() < 300, "token is {} bytes", token.len());

    // Token as the password over TLS; the backend sees the vault's user, not alice.
    let mark = audit_mark(&s.gw);
    let (ok, out, err) = psql(
        s.port(),
        "alice",
        "appdb",
        &token,
        "require",
        "select current_user, 40 + 2, current_setting('application_name')",
    )
    .await;
    assert!(ok, "psql with token failed: {err}");
    assert_eq!(out.trim(), "app|42|psql");
    let success = wait_for_audit(&s.gw, mark, "\"event\":\"auth.success\"").await;
    assert!(success.contains("\"method\":\"token\""), "{success}");
    // Literals are masked in query events by default.
    let query = wait_for_audit(&s.gw, mark, "\"event\":\"query\"").await;
    assert!(
        query.contains("select current_user, ? + ?, current_setting(?)"),
        "{query}"
    );
    wait_for_audit(&s.gw, mark, "\"event\":\"session.end\"").await;

    // SCRAM over plain text with the password the vault holds a verifier for.
    let mark = audit_mark(&s.gw);
    let (ok, out, err) = psql(
        s.port(),
        "alice",
        "appdb",
        ALICE_PASSWORD,
        "disable",
        "select 1",
    )
    .await;
    assert!(ok, "psql with SCRAM failed: {err}");
    assert_eq!(out.trim(), "1");
    wait_for_audit(&s.gw, mark, "\"method\":\"scram\"").await;

    // The same password over TLS goes the cleartext way and is checked against the verifier.
    let mark = audit_mark(&s.gw);
    let (ok, _, err) = psql(
        s.port(),
        "alice",
        "appdb",
        ALICE_PASSWORD,
        "require",
        "select 1",
    )
    .await;
    assert!(ok, "password over TLS failed: {err}");
    wait_for_audit(&s.gw, mark, "\"method\":\"password\"").await;

    let log = s.gw.audit_log();
    assert!(!log.contains("40 + 2"), "{log}");
    // Neither the token nor any password is ever written down.
    let flows = s.gw.flow_log();
    for secret in [token.as_str(), BACKEND_PASSWORD, ALICE_PASSWORD] {
        assert!(!log.contains(secret), "secret in audit log");
        assert!(!flows.contains(secret), "secret in flow log");
    }
    assert!(flows.contains(" ACCEPT OK"), "{flows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_login_is_refused_like_postgres() {
    let s = setup(r#"{ mode = "session", size = 4 }"#, "").await;
    let port = s.port();
    let failed = "password authentication failed for user";

    let cases: Vec<(&str, &str, String, &str, &str, &str)> = vec![
        (
            "wrong password",
            "alice",
            "nope".into(),
            "disable",
            failed,
            "wrong_password",
        ),
        (
            "unknown user",
            "mallory",
            "x".into(),
            "disable",
            failed,
            "unknown_user",
        ),
        (
            "token of another user",
            "bob",
            s.token("alice", None, 600),
            "require",
            failed,
            "token_user_mismatch",
        ),
        (
            "token for another database",
            "alice",
            s.token("alice", Some("postgres"), 600),
            "require",
            failed,
            "token_database_mismatch",
        ),
        (
            "garbage token",
            "bob",
            "sumun1.AAAA.BBBB".into(),
            "require",
            failed,
            "token_malformed",
        ),
        (
            "database not granted",
            "bob",
            s.token("bob", None, 600),
            "require",
            "may not connect to database \"appdb\"",
            "database_not_granted",
        ),
    ];
    for (what, user, password, sslmode, expect, reason) in &cases {
        let db = "appdb";
        let mark = audit_mark(&s.gw);
        let (ok, _, err) = psql(port, user, db, password, sslmode, "select 1").await;
        assert!(!ok, "{what}: login should fail");
        assert!(err.contains(expect), "{what}: {err}");
        let line = wait_for_audit(&s.gw, mark, &format!("\"reason\":\"{reason}\"")).await;
        assert!(
            line.contains(&format!("\"user\":\"{user}\"")),
            "{what}: {line}"
        );
    }

    // A token issued an hour ago with a 2-minute lifetime.
    let vault = s.vault();
    let old = vault
        .token_signer()
        .expect("signer")
        .issue(
            "bob",
            None,
            "sumun-test",
            sumun_vault::store::now_unix_secs() - 3600,
            120,
        )
        .expect("issue");
    let mark = audit_mark(&s.gw);
    let (ok, _, err) = psql(
        port,
        "bob",
        "postgres",
        old.expose_str().expect("utf8"),
        "require",
        "select 1",
    )
    .await;
    assert!(!ok && err.contains(failed), "expired token: {err}");
    wait_for_audit(&s.gw, mark, "\"reason\":\"token_expired\"").await;
    // A token for another gateway.
    let foreign = vault
        .token_signer()
        .expect("signer")
        .issue(
            "bob",
            None,
            "other-gateway",
            sumun_vault::store::now_unix_secs(),
            600,
        )
        .expect("issue");
    let mark = audit_mark(&s.gw);
    let (ok, _, err) = psql(
        port,
        "bob",
        "postgres",
        foreign.expose_str().expect("utf8"),
        "require",
        "select 1",
    )
    .await;
    assert!(!ok && err.contains(failed), "foreign token: {err}");
    wait_for_audit(&s.gw, mark, "\"reason\":\"token_wrong_audience\"").await;

    assert!(s.gw.metric("sumun_auth_failures_total{listener=\"pg\"}") >= 8.0);
    // The gateway still serves good logins.
    let (ok, out, err) = psql(
        port,
        "bob",
        "postgres",
        &s.token("bob", None, 600),
        "require",
        "select 7",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_refuses_plain_text_with_an_error_response() {
    let s = setup(r#"{ mode = "session" }"#, "").await;
    // Reload with tls = required.
    let toml = std::fs::read_to_string(&s.gw.config_path)
        .expect("config")
        .replace("tls = \"optional\"", "tls = \"required\"");
    s.gw.reload(&toml).await.expect("reload");
    let (ok, _, err) = psql(
        s.port(),
        "alice",
        "appdb",
        ALICE_PASSWORD,
        "disable",
        "select 1",
    )
    .await;
    assert!(!ok);
    assert!(err.contains("requires TLS"), "{err}");
    let (ok, _, err) = psql(
        s.port(),
        "alice",
        "appdb",
        ALICE_PASSWORD,
        "require",
        "select 1",
    )
    .await;
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_in_transaction_and_session_mode() {
    let s = setup(r#"{ mode = "transaction", size = 3 }"#, "").await;
    let port = s.port().to_string();
    let token = s.token("alice", Some("appdb"), 600);
    let env = [("PGPASSWORD", token.as_str()), ("PGSSLMODE", "require")];
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
            "alice",
            "appdb",
        ],
        &env,
    )
    .await;
    assert!(ok, "pgbench -i: {err}");
    for protocol in ["simple", "extended", "prepared"] {
        // 8 clients share 3 server connections. In prepared mode pgbench prepares each
        // statement with a blocking PQprepare, which would stall the other clients of its
        // thread while one of them holds a server mid-transaction (with PgBouncer too), so
        // that run gives every client its own thread.
        let threads = if protocol == "prepared" { "8" } else { "2" };
        let (ok, out, err) = run(
            "pgbench",
            &[
                "-n",
                "-c",
                "8",
                "-j",
                threads,
                "-t",
                "50",
                "-M",
                protocol,
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "alice",
                "appdb",
            ],
            &env,
        )
        .await;
        assert!(ok, "pgbench -M {protocol}: {err}\n{out}");
        assert!(
            out.contains("number of transactions actually processed: 400/400"),
            "{out}"
        );
    }
    // Never more than the pool size on the server.
    let n: i64 =
        s.pg.psql("select count(*) from pg_stat_activity where usename = 'app'")
            .expect("count")
            .trim()
            .parse()
            .expect("number");
    assert!(n <= 3, "{n} backend connections for a pool of 3");
    // Every TPC-B transaction landed whole: balances match the history.
    let (ok, out, err) = psql(
        s.port(),
        "alice",
        "appdb",
        &token,
        "require",
        "select (select sum(abalance) from pgbench_accounts) = (select sum(delta) from pgbench_history), (select count(*) from pgbench_history)",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "t|1200");

    // Session mode (per user): each client keeps one server; 3 clients for a pool of 3.
    let toml = std::fs::read_to_string(&s.gw.config_path)
        .expect("config")
        .replace(
            "name = \"alice\"",
            "name = \"alice\"\npool_mode = \"session\"",
        );
    s.gw.reload(&toml).await.expect("reload");
    let (ok, out, err) = run(
        "pgbench",
        &[
            "-n",
            "-c",
            "3",
            "-j",
            "2",
            "-t",
            "50",
            "-M",
            "prepared",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "alice",
            "appdb",
        ],
        &env,
    )
    .await;
    assert!(ok, "pgbench in session mode: {err}\n{out}");
    assert!(
        out.contains("number of transactions actually processed: 150/150"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_right_backend() {
    let s = setup(r#"{ mode = "transaction", size = 2 }"#, "").await;
    let port = s.port();
    let started = std::time::Instant::now();
    let child = tokio::process::Command::new("psql")
        .args([
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "alice",
            "-d",
            "appdb",
            "-c",
            "select pg_sleep(30)",
        ])
        .env("PGPASSWORD", ALICE_PASSWORD)
        .env("PGSSLMODE", "disable")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn psql");
    server_runs(&s.pg, "select pg_sleep(30)").await;
    // psql cancels on SIGINT by sending a CancelRequest with the key the gateway gave it.
    let pid = child.id().expect("pid");
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("psql ends after cancel")
        .expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("canceling statement due to user request"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        s.gw.metrics()
            .contains("sumun_pg_cancels_forwarded_total 1"),
        "{}",
        s.gw.metrics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_answers_53300_after_the_checkout_timeout() {
    let s = setup(
        r#"{ mode = "session", size = 1, checkout_timeout = "1s" }"#,
        "",
    )
    .await;
    let port = s.port();
    let holder = tokio::spawn(async move {
        psql(
            port,
            "alice",
            "appdb",
            ALICE_PASSWORD,
            "disable",
            "select pg_sleep(4)",
        )
        .await
    });
    server_runs(&s.pg, "select pg_sleep(4)").await;
    let t = std::time::Instant::now();
    let (ok, _, err) = psql(
        port,
        "alice",
        "appdb",
        ALICE_PASSWORD,
        "disable",
        "select 1",
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("no backend connection became free within 1s"),
        "{err}"
    );
    assert!(t.elapsed() >= Duration::from_millis(900));
    let (ok, _, err) = holder.await.expect("join");
    assert!(ok, "{err}");
    // Free again: the next client gets the (reset) connection.
    let (ok, out, err) = psql(
        port,
        "alice",
        "appdb",
        ALICE_PASSWORD,
        "disable",
        "select 5",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_backend_password_is_used_for_new_connections() {
    let s = setup(
        r#"{ mode = "transaction", size = 2, max_lifetime = "1s" }"#,
        "",
    )
    .await;
    let port = s.port();
    let (ok, before, err) = psql(
        port,
        "alice",
        "appdb",
        ALICE_PASSWORD,
        "disable",
        "select pg_backend_pid()",
    )
    .await;
    assert!(ok, "{err}");
    // Rotate by hand the way `sumun secrets rotate` does: server first, then the vault.
    s.pg.psql("ALTER ROLE app PASSWORD 'rotated-Secret-2'")
        .expect("alter role");
    let mut vault = s.vault();
    vault
        .put(
            "pg/app",
            &SecretBytes::from_slice(b"rotated-Secret-2"),
            SecretMeta::default(),
        )
        .expect("put");
    drop(vault);
    // The pooled connection expires (max_lifetime 1s) and the gateway's vault watcher picks
    // the new version up (every 250 ms): a new server connection logs in with it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out, err) = psql(
            port,
            "alice",
            "appdb",
            ALICE_PASSWORD,
            "disable",
            "select pg_backend_pid()",
        )
        .await;
        if ok && out != before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after rotation: {err}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_and_messages_get_protocol_errors() {
    let s = setup(r#"{ mode = "transaction" }"#, "").await;
    let addr = s.gw.addr("pg");
    // A 2 GiB startup length.
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(&[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0])
        .await
        .expect("write");
    // Not a startup packet at all: closed without a word, as PostgreSQL does.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(buf.is_empty(), "{buf:?}");
    // A truncated startup packet, then silence: closed at the handshake timeout, no crash.
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(&[0, 0, 0, 40, 0, 3, 0, 0, b'u'])
        .await
        .expect("write");
    drop(c);
    // After login, a message with a 2 GiB length.
    let token = s.token("alice", Some("appdb"), 600);
    let _ = token;
    let (ok, _, err) = psql(
        addr.port(),
        "alice",
        "appdb",
        ALICE_PASSWORD,
        "disable",
        "select 1",
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        s.gw.metric("sumun_rejected_flows_total{listener=\"pg\",reason=\"protocol_error\"}") >= 1.0
    );
}

/// Log in over a raw socket with a cleartext password (a token), as a minimal client would.
async fn raw_login(addr: std::net::SocketAddr, user: &str, db: &str, password: &str) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let mut w = sumun_wire::postgres::Writer::new();
    w.startup(&[("user", user), ("database", db)]);
    c.write_all(&w.buf).await.expect("startup");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut sent_password = false;
    loop {
        while let Some((m, used)) = sumun_wire::postgres::message(&buf, 1 << 20).expect("framing") {
            match m.tag {
                b'R' if m.body[..4] == [0, 0, 0, 3] && !sent_password => {
                    let mut w = sumun_wire::postgres::Writer::new();
                    w.password(password.as_bytes());
                    c.write_all(&w.buf).await.expect("password");
                    sent_password = true;
                }
                b'E' => panic!(
                    "login refused: {:?}",
                    sumun_wire::postgres::error_fields(m.body)
                ),
                b'Z' => return c,
                _ => {}
            }
            buf.drain(..used);
        }
        let n = c.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed during login");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_clients_cost_little_memory_and_block_no_one() {
    rlimit::increase_nofile_limit(65536).expect("raise the open-file limit");
    let s = setup(
        r#"{ mode = "transaction", size = 4 }"#,
        "max_connections = 20000\nidle_timeout = \"3600s\"",
    )
    .await;
    let addr = s.gw.addr("pg");
    let token = s.token("bob", None, 600);
    // Warm up: one login, so pools and buffers that exist once are not counted per client.
    drop(raw_login(addr, "bob", "postgres", &token).await);
    let before = rss_kib();
    // The clients live in another process (this one's file limit holds the gateway's side):
    // the benchmark's idle-client script logs each in with the token and holds it.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../bench/postgres/idle_clients.py"
    );
    let mut holder = tokio::process::Command::new("python3")
        .args([
            script,
            "--port",
            &addr.port().to_string(),
            "--user",
            "bob",
            "--database",
            "postgres",
            "-n",
            "10000",
            "--until-eof",
        ])
        .env("PGPASSWORD", &token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn idle_clients.py");
    let stdout = holder.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
        .await
        .expect("clients logged in in time")
        .expect("read")
        .expect("a READY line");
    assert!(ready.starts_with("READY ok=10000 failed=0"), "{ready}");
    let after = rss_kib();
    let per_client = (after.saturating_sub(before)) as f64 / 10_000.0;
    println!("gateway RSS growth per idle client: {per_client:.1} KiB ({ready})");
    assert!(per_client < 32.0, "{per_client:.1} KiB per idle client");
    // Idle for `park_after` (1 s by default), every one of them leaves its task.
    assert!(
        common::eventually(Duration::from_secs(30), || s
            .gw
            .metric("sumun_parked_clients")
            == 10_000.0)
        .await,
        "parked: {}",
        s.gw.metric("sumun_parked_clients")
    );
    // Only the pool's connections reached the server.
    let n: i64 =
        s.pg.psql("select count(*) from pg_stat_activity where usename = 'app'")
            .expect("count")
            .trim()
            .parse()
            .expect("number");
    assert!(n <= 4, "{n} server connections for 10,000 idle clients");
    // Others are served at once.
    let (ok, out, err) = psql(
        addr.port(),
        "bob",
        "postgres",
        &token,
        "require",
        "select 11",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "11");
    // The idle clients are all still there once psql's own flow has closed (its close is
    // written a moment after psql exits).
    assert!(
        common::eventually(Duration::from_secs(10), || s
            .gw
            .metric("sumun_active_flows{listener=\"pg\"}")
            == 10_000.0)
        .await,
        "{}",
        s.gw.metrics()
    );
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_huge_result_holds_bounded_memory() {
    let s = setup(r#"{ mode = "transaction", size = 2 }"#, "").await;
    let addr = s.gw.addr("pg");
    let token = s.token("bob", None, 600);
    let mut stalled = raw_login(addr, "bob", "postgres", &token).await;
    let before = rss_kib();
    // About 2 GB of rows, and the client never reads them.
    let huge = "select repeat('x', 1000) from generate_series(1, 2000000)";
    let mut w = sumun_wire::postgres::Writer::new();
    w.query(huge);
    stalled.write_all(&w.buf).await.expect("query");
    // The server produced rows and is now blocked writing them to the gateway (ClientWrite):
    // the gateway stopped reading, it did not swallow them. Blocked on every poll for a whole
    // second (a deliberate window), so a moment's full socket buffer in a gateway that reads
    // everything does not count.
    let probe = format!(
        "select wait_event from pg_stat_activity where query = '{}'",
        huge.replace('\'', "''")
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut blocked_since = None;
    let mut seen = Vec::new();
    loop {
        let wait = common::server_sql(&s.pg, &probe).await;
        let now = tokio::time::Instant::now();
        if wait != "ClientWrite" {
            blocked_since = None;
        } else if now - *blocked_since.get_or_insert(now) >= Duration::from_secs(1) {
            break;
        }
        seen.push(wait);
        assert!(
            now < deadline,
            "the server is not held up writing to the gateway; its wait events: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grown = rss_kib().saturating_sub(before);
    println!("RSS growth with a stalled 2 GB result: {grown} KiB");
    assert!(
        grown < 64 * 1024,
        "gateway buffered {grown} KiB for a client that does not read"
    );
    // Another client is served meanwhile, on the pool's other connection.
    let (ok, out, err) = psql(
        addr.port(),
        "bob",
        "postgres",
        &token,
        "require",
        "select 12",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "12");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sumun_admin_database_shows_pools_clients_servers_and_stats() {
    let s = setup(r#"{ mode = "transaction", size = 3 }"#, "").await;
    let port = s.port();
    let (ok, _, err) = psql(
        port,
        "alice",
        "appdb",
        ALICE_PASSWORD,
        "disable",
        "select 1",
    )
    .await;
    assert!(ok, "{err}");
    // A client that stays connected, to be listed.
    let holder = tokio::spawn(async move {
        psql(
            port,
            "alice",
            "appdb",
            ALICE_PASSWORD,
            "disable",
            "select pg_sleep(3)",
        )
        .await
    });
    server_runs(&s.pg, "select pg_sleep(3)").await;
    let admin = |sql: &'static str| psql(port, "alice", "sumun", ALICE_PASSWORD, "disable", sql);

    let mark = audit_mark(&s.gw);
    let (ok, out, err) = admin("show pools").await;
    assert!(ok, "{err}");
    let pool = out
        .lines()
        .find(|l| l.contains("|appdb|app|"))
        .unwrap_or_else(|| panic!("no appdb pool: {out}"));
    let cols: Vec<&str> = pool.split('|').collect();
    assert_eq!(cols[0], "pg");
    assert_eq!(cols[1], s.pg.addr().to_string());
    assert_eq!(cols[4], "3", "pool size: {pool}");

    let (ok, out, err) = admin("SHOW CLIENTS;").await;
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|l| l.contains("|alice|appdb|transaction|")),
        "{out}"
    );

    let (ok, out, err) = admin("show servers").await;
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("pg|{}|", s.pg.addr())), "{out}");

    let (ok, out, err) = admin("show stats").await;
    assert!(ok, "{err}");
    let checkouts: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("total|checkouts|"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(checkouts >= 2, "{out}");

    // An unknown command is an error and the console session goes on.
    let (ok, out, err) = psql(
        port,
        "alice",
        "sumun",
        ALICE_PASSWORD,
        "disable",
        "show nonsense",
    )
    .await;
    assert!(!ok);
    assert!(err.contains("unknown admin command"), "{err}{out}");
    let port_s = port.to_string();
    let (ok, out, err) = run(
        "psql",
        &[
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &port_s,
            "-U",
            "alice",
            "-d",
            "sumun",
            "-c",
            "show nonsense",
            "-c",
            "show help",
        ],
        &[("PGPASSWORD", ALICE_PASSWORD), ("PGSSLMODE", "disable")],
    )
    .await;
    assert!(out.contains("SHOW POOLS|"), "{ok} {out} {err}");

    // Not for non-admins.
    let (ok, _, err) = psql(
        port,
        "bob",
        "sumun",
        &s.token("bob", None, 600),
        "require",
        "show pools",
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("admin = true") || err.contains("may not connect"),
        "{err}"
    );

    // The same rows, as /api/servers serves them.
    let json = serde_json::to_string(&sumun_gateway::admin::server_rows(s.gw.gateway.shared()))
        .expect("json");
    assert!(
        json.contains(&format!("\"address\":\"{}\"", s.pg.addr())),
        "{json}"
    );
    assert!(json.contains("\"target_group\":\"pg\""), "{json}");
    let (ok, _, err) = holder.await.expect("join");
    assert!(ok, "{err}");
    let line = wait_for_audit(&s.gw, mark, "\"event\":\"admin.command\"").await;
    assert!(line.contains("\"command\":\"SHOW POOLS\""), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_large_results_notices_and_errors_mid_stream_pass_through() {
    let s = setup(r#"{ mode = "transaction", size = 2 }"#, "").await;
    let port = s.port();
    let q = |sql: &'static str| psql(port, "alice", "appdb", ALICE_PASSWORD, "disable", sql);
    let (ok, _, err) = q("create table c (a int, b text)").await;
    assert!(ok, "{err}");

    // COPY FROM STDIN: 50,000 rows through the gateway.
    let data: String = (0..50_000).map(|i| format!("{i}\trow {i}\n")).collect();
    let mut child = tokio::process::Command::new("psql")
        .args([
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "alice",
            "-d",
            "appdb",
            "-c",
            "copy c from stdin",
        ])
        .env("PGPASSWORD", ALICE_PASSWORD)
        .env("PGSSLMODE", "disable")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(data.as_bytes()).await.expect("copy data");
    drop(stdin);
    let out = child.wait_with_output().await.expect("psql copy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, out, err) = q("select count(*), sum(a) from c").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "50000|1249975000");

    // COPY TO STDOUT and a large result come back whole.
    let (ok, out, err) = q("copy (select * from c order by a) to stdout").await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 50_000);
    assert_eq!(out.lines().last(), Some("49999\trow 49999"));
    let (ok, out, err) = q("select repeat('x', 1000) from generate_series(1, 20000)").await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 20_000);

    // Notices reach the client.
    let (ok, _, err) = q("do $$ begin raise notice 'hello from the server'; end $$").await;
    assert!(ok, "{err}");
    assert!(err.contains("NOTICE:  hello from the server"), "{err}");

    // An error after rows were already sent: the client gets the error, the connection and
    // the pool stay usable.
    let (ok, _, err) = q("select 1 / (10000 - g) from generate_series(1, 20000) g").await;
    assert!(!ok);
    assert!(err.contains("division by zero"), "{err}");
    for _ in 0..5 {
        let (ok, out, err) = q("select 3").await;
        assert!(ok, "{err}");
        assert_eq!(out.trim(), "3");
    }
}

/// One backend message: (tag, body).
async fn read_message(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut head))
        .await
        .expect("an answer within 10s")
        .expect("read message header");
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    stream
        .read_exact(&mut body)
        .await
        .expect("read message body");
    (head[0], body)
}

/// Messages up to and including ReadyForQuery (or a FATAL error, after which the server closes).
async fn read_until_ready(stream: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let (tag, body) = read_message(stream).await;
        let fatal = tag == b'E' && field(&body, b'S') == "FATAL";
        out.push((tag, body));
        if tag == b'Z' || fatal {
            return out;
        }
    }
}

/// A field (`C` SQLSTATE, `M` message, `H` hint...) of an ErrorResponse body.
fn field(body: &[u8], kind: u8) -> String {
    let mut rest = body;
    while let Some((&k, tail)) = rest.split_first() {
        if k == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        if k == kind {
            return String::from_utf8_lossy(&tail[..end]).into_owned();
        }
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    String::new()
}

/// Log in over plain TCP with a token (cleartext password exchange), the way a driver does, so
/// a test can send what psql never does and see SQLSTATEs and hints psql hides.
async fn token_login(
    port: u16,
    user: &str,
    db: &str,
    token: &str,
) -> (TcpStream, Vec<(u8, Vec<u8>)>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut w = sumun_wire::postgres::Writer::new();
    w.startup(&[
        ("user", user),
        ("database", db),
        ("application_name", "raw-console-test"),
    ]);
    stream.write_all(&w.buf).await.expect("startup");
    let (tag, body) = read_message(&mut stream).await;
    assert_eq!(tag, b'R', "{}", String::from_utf8_lossy(&body));
    assert_eq!(body[..4], 3u32.to_be_bytes(), "cleartext password asked");
    let mut w = sumun_wire::postgres::Writer::new();
    w.password(token.as_bytes());
    stream.write_all(&w.buf).await.expect("password");
    let greeting = read_until_ready(&mut stream).await;
    (stream, greeting)
}

async fn send(stream: &mut TcpStream, messages: &[(u8, &[u8])]) {
    let mut w = sumun_wire::postgres::Writer::new();
    for (tag, body) in messages {
        w.raw(*tag, body);
    }
    stream.write_all(&w.buf).await.expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_console_answers_operators_over_the_wire_and_api_servers_matches() {
    let s = setup(
        r#"{ mode = "transaction", size = 3 }"#,
        "[admin]\nlisten = \"127.0.0.1:0\"",
    )
    .await;
    let port = s.port();
    let target = s.pg.addr().to_string();
    // Some traffic: two statements, and a client that stays connected mid-statement.
    for _ in 0..2 {
        let (ok, _, err) = psql(
            port,
            "alice",
            "appdb",
            ALICE_PASSWORD,
            "disable",
            "select 1",
        )
        .await;
        assert!(ok, "{err}");
    }
    let holder = tokio::spawn(async move {
        psql(
            port,
            "alice",
            "appdb",
            ALICE_PASSWORD,
            "disable",
            "select pg_sleep(3)",
        )
        .await
    });
    server_runs(&s.pg, "select pg_sleep(3)").await;

    // psql as `ops`, an admin that logs in with a token and has no `databases` list.
    let ops = s.token("ops", None, 600);
    let console = |sql: &'static str| {
        let ops = ops.clone();
        async move { psql(port, "ops", "sumun", &ops, "disable", sql).await }
    };
    let mark = audit_mark(&s.gw);
    let (ok, out, err) = console("SHOW SERVERS").await;
    assert!(ok, "{err}");
    // group | address | role | health | reason | active | lag_ms; health checks are off in
    // this setup, so the configured role (any) and `unused` are what an operator sees.
    let row: Vec<&str> = out.trim().split('|').collect();
    assert_eq!(row.len(), 7, "{out}");
    assert_eq!(&row[..4], ["pg", target.as_str(), "any", "unused"], "{out}");
    assert_eq!(row[6], "0", "{out}");

    let (ok, out, err) = console("show pools;").await;
    assert!(ok, "{err}");
    let pools: Vec<&str> = out.lines().collect();
    assert_eq!(pools.len(), 1, "one pool: {out}");
    let pool: Vec<&str> = pools[0].split('|').collect();
    // listener | target | database | user | size | open | active | idle | waiting | ...
    assert_eq!(
        &pool[..5],
        ["pg", target.as_str(), "appdb", "app", "3"],
        "{out}"
    );
    assert_eq!(pool[6], "1", "the sleeping client holds one server: {out}");

    let (ok, out, err) = console("show clients").await;
    assert!(ok, "{err}");
    let clients: Vec<&str> = out.lines().collect();
    assert_eq!(clients.len(), 1, "only the sleeping client: {out}");
    let client: Vec<&str> = clients[0].split('|').collect();
    assert_eq!(&client[..1], ["pg"], "{out}");
    assert_eq!(
        &client[2..6],
        ["alice", "appdb", "transaction", target.as_str()],
        "{out}"
    );

    let (ok, out, err) = console("Show Stats").await;
    assert!(ok, "{err}");
    let stat = |scope: &str, name: &str| -> f64 {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{scope}|{name}|")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {scope} {name}: {out}"))
    };
    let scope = format!("pg/{target}/appdb/app");
    assert!(stat(&scope, "checkouts") >= 3.0, "{out}");
    assert_eq!(stat(&scope, "checkout_timeouts"), 0.0, "{out}");
    assert_eq!(
        stat("total", "checkouts"),
        stat(&scope, "checkouts"),
        "{out}"
    );
    stat(&scope, "checkout_waits");
    stat(&scope, "checkout_wait_seconds");
    stat("total", "queries");
    stat("total", "query_seconds");
    stat("total", "cancels_forwarded");
    assert_eq!(stat("total", "pinned_set"), 0.0, "{out}");

    // An unknown command through psql: 42601 with the commands as a hint.
    let ops_token = ops.clone();
    let port_s = port.to_string();
    let (ok, out, err) = run(
        "psql",
        &[
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &port_s,
            "-U",
            "ops",
            "-d",
            "sumun",
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "show pool",
            "-c",
            "show help",
        ],
        &[("PGPASSWORD", ops_token.as_str()), ("PGSSLMODE", "disable")],
    )
    .await;
    assert!(err.contains("42601"), "{ok} {out} {err}");
    assert!(
        err.contains("HINT:") && err.contains("SHOW SERVERS"),
        "{err}"
    );
    assert!(out.contains("SHOW STATS|"), "the session went on: {out}");

    // Over the wire: the greeting, errors that keep the session, the simple protocol only.
    let (mut conn, greeting) = token_login(port, "ops", "sumun", &ops).await;
    let params: Vec<(String, String)> = greeting
        .iter()
        .filter(|(t, _)| *t == b'S')
        .map(|(_, b)| {
            let mut parts = b
                .split(|&c| c == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned());
            (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            )
        })
        .collect();
    for (k, v) in [
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", "raw-console-test"),
    ] {
        assert!(
            params.contains(&(k.to_string(), v.to_string())),
            "{k}: {params:?}"
        );
    }
    assert!(
        params
            .iter()
            .any(|(k, v)| k == "server_version" && v.starts_with("15.")),
        "{params:?}"
    );
    assert!(greeting.iter().any(|(t, _)| *t == b'K'), "BackendKeyData");
    assert_eq!(
        greeting.last().map(|(t, b)| (*t, b.clone())),
        Some((b'Z', b"I".to_vec()))
    );

    send(&mut conn, &[(b'Q', b"show nonsense\0")]).await;
    let reply = read_until_ready(&mut conn).await;
    assert_eq!(reply.len(), 2, "error then ready");
    assert_eq!(reply[0].0, b'E');
    assert_eq!(field(&reply[0].1, b'C'), "42601");
    assert_eq!(field(&reply[0].1, b'S'), "ERROR");
    assert!(
        field(&reply[0].1, b'H').contains("SHOW POOLS"),
        "{:?}",
        field(&reply[0].1, b'H')
    );

    send(&mut conn, &[(b'Q', b"  \0")]).await;
    let reply = read_until_ready(&mut conn).await;
    let tags: Vec<u8> = reply.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, b"IZ", "EmptyQueryResponse");

    // Parse/Bind/Describe/Execute/Sync: one 0A000 for the batch, then ReadyForQuery at Sync.
    send(
        &mut conn,
        &[
            (b'P', b"\0show pools\0\0\0"),
            (b'B', b"\0\0\0\0\0\0\0\0"),
            (b'D', b"P\0"),
            (b'E', b"\0\0\0\0\0"),
            (b'S', b""),
        ],
    )
    .await;
    let reply = read_until_ready(&mut conn).await;
    let tags: Vec<u8> = reply.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, b"EZ", "one error per Sync");
    assert_eq!(field(&reply[0].1, b'C'), "0A000");
    assert!(field(&reply[0].1, b'M').contains("simple query protocol"));

    send(&mut conn, &[(b'Q', b"SHOW HELP;\0")]).await;
    let reply = read_until_ready(&mut conn).await;
    let tags: Vec<u8> = reply.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags.first(), Some(&b'T'), "RowDescription first");
    assert_eq!(&tags[tags.len() - 2..], b"CZ");
    let complete = &reply[reply.len() - 2].1;
    assert_eq!(complete.as_slice(), b"SHOW\0");
    let help = common::data_rows(&reply, "");
    for command in [
        "SHOW POOLS",
        "SHOW CLIENTS",
        "SHOW SERVERS",
        "SHOW STATS",
        "SHOW HELP",
    ] {
        assert!(
            help.iter().any(|r| r.starts_with(&format!("{command}|"))),
            "{help:?}"
        );
    }
    send(&mut conn, &[(b'X', b"")]).await;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest))
        .await
        .expect("closed after Terminate")
        .expect("read");
    assert_eq!(n, 0);

    // A user whose `databases` lists `sumun` but who is no admin: FATAL 42501.
    let carol = s.token("carol", None, 600);
    let (_conn, reply) = token_login(port, "carol", "sumun", &carol).await;
    let (tag, body) = reply.last().expect("a reply");
    assert_eq!(*tag, b'E');
    assert_eq!(field(body, b'S'), "FATAL");
    assert_eq!(field(body, b'C'), "42501");
    let (ok, _, err) = psql(port, "carol", "sumun", &carol, "disable", "show pools").await;
    assert!(!ok);
    assert!(err.contains("admin = true"), "{err}");
    // A user who is no admin and whose `databases` does not name `sumun` is refused as for any
    // database it may not reach: FATAL 28000, as docs/postgres.md says.
    let bob = s.token("bob", None, 600);
    let (_conn, reply) = token_login(port, "bob", "sumun", &bob).await;
    let (tag, body) = reply.last().expect("a reply");
    assert_eq!(*tag, b'E');
    assert_eq!(field(body, b'C'), "28000");
    assert_eq!(
        field(body, b'M'),
        "user \"bob\" may not connect to database \"sumun\""
    );

    // /api/servers over HTTP: the same target, role and health as SHOW SERVERS.
    let admin = s.gw.gateway.admin_addr().await.expect("admin listener");
    let mut http = TcpStream::connect(admin).await.expect("admin connect");
    http.write_all(b"GET /api/servers HTTP/1.1\r\nHost: sumun\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    http.read_to_string(&mut response).await.expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("application/json"),
        "{head}"
    );
    let servers: serde_json::Value = serde_json::from_str(body).expect("json body");
    let servers = servers.as_array().expect("an array");
    assert_eq!(servers.len(), 1, "{body}");
    assert_eq!(servers[0]["target_group"], "pg");
    assert_eq!(servers[0]["address"], target.as_str());
    assert_eq!(servers[0]["role"], "any");
    assert_eq!(servers[0]["health"], "unused");
    assert_eq!(servers[0]["replica_lag_ms"], 0);

    let (ok, _, err) = holder.await.expect("join");
    assert!(ok, "{err}");
    // Each command is audited with the user and the command.
    wait_for_audit(&s.gw, mark, "SHOW NONSENSE").await;
    let log: String = s.gw.audit_log().split_inclusive('\n').skip(mark).collect();
    let commands: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "admin.command")
        .collect();
    for command in [
        "SHOW SERVERS",
        "SHOW POOLS",
        "SHOW CLIENTS",
        "SHOW STATS",
        "SHOW HELP",
    ] {
        assert!(
            commands
                .iter()
                .any(|c| c["user"] == "ops" && c["command"] == command),
            "{command} not audited: {log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_connections_are_closed_down_to_min_idle() {
    let s = setup(
        r#"{ mode = "transaction", size = 4, min_idle = 1, idle_timeout = "3s" }"#,
        "",
    )
    .await;
    let port = s.port();
    // Four clients at once hold four server connections.
    let sleepers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                psql(
                    port,
                    "alice",
                    "appdb",
                    ALICE_PASSWORD,
                    "disable",
                    "select pg_sleep(1)",
                )
                .await
            })
        })
        .collect();
    for sl in sleepers {
        let (ok, _, err) = sl.await.expect("join");
        assert!(ok, "{err}");
    }
    let count = || {
        s.pg.psql("select count(*) from pg_stat_activity where usename = 'app'")
            .expect("count")
            .trim()
            .parse::<i64>()
            .expect("number")
    };
    assert_eq!(
        count(),
        4,
        "the pool keeps its connections until they idle out"
    );
    // After the idle timeout (and a reaper tick) only min_idle stays open.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while count() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "still {} server connections",
            count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pools = sumun_gateway::postgres::pool_rows(common::pg_front_end(&s.gw));
    assert_eq!((pools[0].open, pools[0].idle), (1, 1), "{pools:?}");
}

/// Run a simple query on a raw connection; the first column of each row, or the SQLSTATE.
async fn raw_query(c: &mut TcpStream, sql: &str) -> Result<Vec<String>, String> {
    let mut w = sumun_wire::postgres::Writer::new();
    w.query(sql);
    c.write_all(&w.buf).await.expect("query");
    let mut buf = Vec::new();
    let mut rows = Vec::new();
    let mut error = None;
    let mut chunk = [0u8; 8192];
    loop {
        while let Some((m, used)) = sumun_wire::postgres::message(&buf, 1 << 24).expect("framing") {
            match m.tag {
                b'D' => {
                    let len = i32::from_be_bytes([m.body[2], m.body[3], m.body[4], m.body[5]]);
                    rows.push(
                        String::from_utf8_lossy(&m.body[6..6 + len.max(0) as usize]).into_owned(),
                    );
                }
                b'E' if error.is_none() => {
                    error = Some(sumun_wire::postgres::error_fields(m.body).code)
                }
                b'Z' => return error.map_or(Ok(rows), Err),
                _ => {}
            }
            buf.drain(..used);
        }
        let n = c.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_pins_a_client_to_its_server_and_does_not_leak() {
    let s = setup(
        r#"{ mode = "transaction", size = 2, checkout_timeout = "30s" }"#,
        "",
    )
    .await;
    let addr = s.gw.addr("pg");
    let token = s.token("bob", None, 600);
    let mut a = raw_login(addr, "bob", "postgres", &token).await;
    let mut b = raw_login(addr, "bob", "postgres", &token).await;
    let default = raw_query(&mut b, "show search_path").await.expect("show");
    // A changes its session: from now on it keeps its server.
    raw_query(&mut a, "set search_path = pinned_schema, public")
        .await
        .expect("set");
    let a_server = raw_query(&mut a, "select pg_backend_pid()")
        .await
        .expect("pid")
        .remove(0);
    for _ in 0..5 {
        assert_eq!(
            raw_query(&mut a, "show search_path").await.expect("show"),
            ["pinned_schema, public"]
        );
        // B never sees A's setting: A's server is not handed to anyone else.
        assert_eq!(
            raw_query(&mut b, "show search_path").await.expect("show"),
            default
        );
    }
    assert!(
        s.gw.metric("sumun_pg_pinned_sessions_total{reason=\"set\"}") >= 1.0,
        "{}",
        s.gw.metrics()
    );
    let clients = sumun_gateway::postgres::client_rows(common::pg_front_end(&s.gw));
    assert!(
        clients.iter().any(|c| c.pinned == Some("set")),
        "{clients:?}"
    );
    // C holds the pool's other server in a transaction, so the only server B can get next is
    // A's, once A leaves: B's query waits for it.
    let mut c = raw_login(addr, "bob", "postgres", &token).await;
    raw_query(&mut c, "begin").await.expect("begin");
    let c_server = raw_query(&mut c, "select pg_backend_pid()")
        .await
        .expect("pid")
        .remove(0);
    assert_ne!(
        c_server, a_server,
        "A's server is A's alone while A is pinned"
    );
    let waiting = tokio::spawn(async move {
        let row = raw_query(
            &mut b,
            "select pg_backend_pid() || '|' || current_setting('search_path')",
        )
        .await;
        (b, row)
    });
    assert!(
        !waiting.is_finished(),
        "B was served while A held its server"
    );
    // When A leaves, its server is reset (DISCARD ALL) before it is handed to B: B runs on
    // A's former server and sees the default search_path there.
    drop(a);
    let (mut b, row) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("B is served once A has left")
        .expect("join");
    assert_eq!(
        row.expect("B's query"),
        [format!("{a_server}|{}", default[0])],
        "B on A's former server"
    );
    raw_query(&mut c, "commit").await.expect("commit");
    for _ in 0..4 {
        assert_eq!(
            raw_query(&mut b, "show search_path").await.expect("show"),
            default
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_binds_the_channel_to_the_gateway_certificate() {
    let s = setup(r#"{ mode = "transaction" }"#, "").await;
    let port = s.port().to_string();
    let dave = |sslmode: &'static str, binding: &'static str| {
        let port = port.clone();
        async move {
            run(
                "psql",
                &[
                    "-X",
                    "-At",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "dave",
                    "-d",
                    "appdb",
                    "-c",
                    "select 5",
                ],
                &[
                    ("PGPASSWORD", DAVE_PASSWORD),
                    ("PGSSLMODE", sslmode),
                    ("PGCHANNELBINDING", binding),
                ],
            )
            .await
        }
    };
    // libpq insists on SCRAM-SHA-256-PLUS with tls-server-end-point: it works over TLS.
    let mark = audit_mark(&s.gw);
    let (ok, out, err) = dave("require", "require").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "5");
    let line = wait_for_audit(&s.gw, mark, "\"event\":\"auth.success\"").await;
    assert!(line.contains("\"method\":\"scram-plus\""), "{line}");
    // Plain SCRAM still works where there is no TLS to bind to.
    let (ok, _, err) = dave("disable", "prefer").await;
    assert!(ok, "{err}");
    // A wrong password fails the same way with binding.
    let (ok, _, err) = run(
        "psql",
        &[
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "dave",
            "-d",
            "appdb",
            "-c",
            "select 5",
        ],
        &[
            ("PGPASSWORD", "wrong"),
            ("PGSSLMODE", "require"),
            ("PGCHANNELBINDING", "require"),
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("password authentication failed for user \"dave\""),
        "{err}"
    );
}
