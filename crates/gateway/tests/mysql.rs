//! The MySQL/MariaDB front end (issue 18) against a real MariaDB, with the real `mariadb`
//! client: a Sumun token through `mysql_clear_password` over TLS, the server's own errors,
//! TLS required, refused logins, audited statements, and a server that asks for a cleartext
//! password without verified TLS.

mod common;

use common::{TestDir, TestGateway};
use sumun_testkit::{Mariadb, MariadbOptions};

const AUDIENCE: &str = "sumun-mysql-tests";
const APP_PASSWORD: &str = "maria-app-pw-1";

async fn mariadb() -> Mariadb {
    tokio::task::spawn_blocking(|| {
        Mariadb::start_with(MariadbOptions {
            users: vec![("app".into(), APP_PASSWORD.into())],
            databases: vec!["appdb".into()],
        })
        .expect("start mariadb")
    })
    .await
    .expect("start task")
}

/// A vault holding `maria/app` (username `app`) with `password`, and a token for bob.
fn vault(dir: &TestDir, password: &str) -> String {
    let mut vault =
        common::vault_with_secret(dir, "maria/app", sumun_vault::SecretKind::Mysql, password);
    vault
        .set_user_password(
            "carol",
            &sumun_vault::SecretBytes::from_slice(CAROL_PASSWORD.as_bytes()),
        )
        .expect("carol's password");
    let scoped = vault
        .token_signer()
        .expect("signer")
        .issue(
            "bob",
            Some("appdb"),
            AUDIENCE,
            sumun_vault::store::now_unix_secs(),
            900,
        )
        .expect("issue")
        .expose_str()
        .expect("utf8")
        .to_string();
    std::fs::write(dir.path("scoped.token"), scoped).expect("write scoped token");
    common::token(&vault, "bob", AUDIENCE)
}

/// The gateway-held password of user carol (`auth = ["password"]` or with a token).
const CAROL_PASSWORD: &str = "carol's gateway password";

struct Setup {
    db: Mariadb,
    gw: TestGateway,
    token: String,
    ca: std::path::PathBuf,
}

async fn setup(tls: &str, vault_password: &str, group: &str) -> Setup {
    setup_with(tls, vault_password, "", group).await
}

async fn setup_with(tls: &str, vault_password: &str, listener: &str, group: &str) -> Setup {
    setup_on(tls, vault_password, listener, group, &[]).await
}

/// [`setup_with`] in front of `targets` (the setup's own server when empty).
async fn setup_on(
    tls: &str,
    vault_password: &str,
    listener: &str,
    group: &str,
    targets: &[std::net::SocketAddr],
) -> Setup {
    let db = mariadb().await;
    let targets = if targets.is_empty() {
        format!("{{ address = \"{}\" }}", db.addr())
    } else {
        targets
            .iter()
            .map(|t| format!("{{ address = \"{t}\" }}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let checks = if group.contains("health_check") {
        ""
    } else {
        "health_check = { enabled = false }"
    };
    let dir = TestDir::new("mysql");
    let token = vault(&dir, vault_password);
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
name = "my"
bind = "127.0.0.1:0"
protocol = "mysql"
target_group = "maria"
security_groups = ["local"]
tls = "{tls}"
tls_config = "dev"
{listener}
[[target_groups]]
name = "maria"
{checks}
targets = [{targets}]
{group}
[[users]]
name = "bob"
auth = ["token"]
backend_credential = "maria/app"
databases = ["appdb"]
[[users]]
name = "carol"
auth = ["token", "password"]
backend_credential = "maria/app"
[[users]]
name = "dave"
auth = ["password"]
backend_credential = "maria/app"
[audit]
path = "{{dir}}/audit.jsonl"
"#
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    Setup { db, gw, token, ca }
}

/// The `mariadb` client through the gateway as `user` with `password`; `extra` are more
/// options. (success, stdout, stderr)
async fn cli(
    s: &Setup,
    user: &str,
    password: &str,
    extra: &[&str],
    sql: &str,
) -> (bool, String, String) {
    let port = s.gw.addr("my").port().to_string();
    let ca = format!("--ssl-ca={}", s.ca.display());
    let mut args = vec![
        "--no-defaults",
        "--protocol=TCP",
        "-h",
        "127.0.0.1",
        "-P",
        &port,
        "-u",
        user,
        "-N",
        "-B",
        "--connect-timeout=10",
    ];
    let ssl = !extra.contains(&"--skip-ssl");
    if ssl {
        args.push("--ssl");
        args.push(&ca);
    }
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-e", sql]);
    common::run("mariadb", &args, &[("MYSQL_PWD", password)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mariadb_client_logs_in_with_a_token_over_tls_and_its_statements_are_audited() {
    let s = setup("optional", APP_PASSWORD, "").await;
    let mark = common::audit_mark(&s.gw);
    let (ok, out, err) = cli(
        &s,
        "bob",
        &s.token,
        &["-D", "appdb"],
        "select current_user(), database(), 'a secret' as x, @@ssl_cipher is null; \
         create table t (a int); insert into t values (1), (2); select sum(a) from t",
    )
    .await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    // The server's own answers: logged in as the vault's user, in the client's database.
    assert_eq!(lines[0], "app@%\tappdb\ta secret\t1", "{out}");
    assert_eq!(lines[1], "3", "{out}");
    common::wait_for_audit(&s.gw, mark, "select sum(a) from t").await;
    let audit = s.gw.audit_log();
    // Statements are audited with their literals masked, in MySQL's syntax.
    assert!(
        audit.contains("select current_user(), database(), ? as x"),
        "{audit}"
    );
    assert!(!audit.contains("a secret"), "{audit}");
    assert!(audit.contains("\"event\":\"session.start\""), "{audit}");
    assert!(
        s.gw.metric("sumun_mysql_queries_total") >= 1.0,
        "{}",
        s.gw.metrics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_and_unknown_users_get_mysqls_access_denied_and_are_audited() {
    let s = setup("optional", APP_PASSWORD, "").await;
    let mark = common::audit_mark(&s.gw);
    for (user, password) in [("bob", "not-a-token"), ("mallory", s.token.as_str())] {
        let (ok, _, err) = cli(&s, user, password, &[], "select 1").await;
        assert!(!ok);
        assert!(
            err.contains("ERROR 1045 (28000): Access denied for user")
                && err.contains("(using password: YES)"),
            "{user}: {err}"
        );
    }
    let audit = common::wait_for_audit(&s.gw, mark, "\"user\":\"mallory\"").await;
    assert!(audit.contains("\"event\":\"auth.failure\""), "{audit}");
    assert!(
        s.gw.audit_log().contains("\"reason\":\"not_a_token\""),
        "{}",
        s.gw.audit_log()
    );
    // A database the user is not granted: MySQL's 1044.
    let (ok, _, err) = cli(&s, "bob", &s.token, &["-D", "mysql"], "select 1").await;
    assert!(!ok);
    assert!(err.contains("ERROR 1044 (42000)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_text_client_is_refused_before_any_password_is_asked_for() {
    // tls = "required": refused with MySQL's own words for required secure transport.
    let s = setup("required", APP_PASSWORD, "").await;
    let (ok, _, err) = cli(&s, "bob", &s.token, &["--skip-ssl"], "select 1").await;
    assert!(!ok);
    assert!(err.contains("ERROR 3159"), "{err}");
    // tls = "optional": a token is never asked for in plain text.
    let s = setup("optional", APP_PASSWORD, "").await;
    let (ok, _, err) = cli(&s, "bob", &s.token, &["--skip-ssl"], "select 1").await;
    assert!(!ok);
    assert!(err.contains("ERROR 1045"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_errors_reach_the_client_in_its_own_words() {
    let s = setup("optional", APP_PASSWORD, "").await;
    let (ok, _, err) = cli(
        &s,
        "bob",
        &s.token,
        &["-D", "appdb"],
        "select * from no_such_table",
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("ERROR 1146 (42S02)") && err.contains("no_such_table"),
        "{err}"
    );
    // A vault password the server does not accept: the server's own refusal.
    let s = setup("optional", "not-the-password", "").await;
    let (ok, _, err) = cli(&s, "bob", &s.token, &[], "select 1").await;
    assert!(!ok);
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");
    assert!(
        err.contains("'app'"),
        "the server's words name its user: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_carry_each_statements_outcome_and_duration() {
    let s = setup("optional", APP_PASSWORD, "").await;
    let mark = common::audit_mark(&s.gw);
    let (ok, _, _) = cli(
        &s,
        "bob",
        &s.token,
        &["-D", "appdb"],
        "select * from missing_table",
    )
    .await;
    assert!(!ok);
    let (ok, _, err) = cli(&s, "bob", &s.token, &["-D", "appdb"], "select sleep(0.2)").await;
    assert!(ok, "{err}");
    let failed = common::wait_for_audit(&s.gw, mark, "missing_table").await;
    assert!(failed.contains("\"error\":\"1146\""), "{failed}");
    let slept = common::wait_for_audit(&s.gw, mark, "sleep(?)").await;
    let v: serde_json::Value = serde_json::from_str(&slept).expect("json");
    assert!(
        v["duration_us"].as_u64().unwrap_or(0) >= 200_000,
        "the statement's duration: {slept}"
    );
    assert!(v.get("error").is_none(), "{slept}");
}

/// The mysql client's Ctrl-C sends `KILL QUERY <the id of its greeting>` on a new connection:
/// that id is the gateway's, so the gateway turns it into the server's id of that client's
/// connection (same user, same server), and the query stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_query_with_the_greetings_id_stops_that_clients_query() {
    for pool in ["", "pool = { mode = \"transaction\", size = 4 }"] {
        kill_query_in(pool).await;
    }
}

async fn kill_query_in(pool: &str) {
    let s = std::sync::Arc::new(setup_with("optional", APP_PASSWORD, pool, "").await);
    let sleeper = {
        let s = s.clone();
        tokio::spawn(async move { cli(&s, "bob", &s.token, &[], "select sleep(30)").await })
    };
    let front_end =
        s.gw.gateway
            .shared()
            .front_ends
            .of::<sumun_gateway::mysql::MysqlFrontEnd>()
            .expect("the mysql front end is registered");
    let mut id = None;
    for _ in 0..200 {
        let rows = sumun_gateway::frontend::FrontEnd::client_rows(front_end, s.gw.gateway.shared());
        if let Some(row) = rows.first() {
            let running = s
                .db
                .mysql("select count(*) from information_schema.processlist where info = 'select sleep(30)'")
                .expect("processlist");
            if running == "1" {
                id = row["connection_id"].as_u64();
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let id = id.expect("the sleeping client never showed up");
    assert!(id >= 0x4000_0000, "a gateway-made id: {id}");
    let started = std::time::Instant::now();
    let (ok, _, err) = cli(&s, "bob", &s.token, &[], &format!("KILL QUERY {id}")).await;
    assert!(ok, "{err}");
    let (ok, out, err) = sleeper.await.expect("sleeper");
    // MariaDB answers an interrupted SLEEP() with 1 (or error 1317, by version).
    assert!(
        (ok && out.trim() == "1") || err.contains("1317"),
        "{ok} {out} {err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // Another user's id is not translated: the server answers for its own ids.
    let (ok, _, err) = cli(&s, "bob", &s.token, &[], "KILL QUERY 1073741000").await;
    assert!(!ok);
    assert!(err.contains("ERROR 1094"), "{err}");
}

/// Transaction mode: clients share a pool of one server connection, and nothing of one
/// client's session reaches the next: a client that leaves state behind is pinned while it
/// stays, and its server is reset before anyone else gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_shares_one_server_and_leaks_no_session_state() {
    let s = setup_with(
        "optional",
        APP_PASSWORD,
        "pool = { mode = \"transaction\", size = 1, checkout_timeout = \"2s\" }",
        "",
    )
    .await;
    let q = |sql: &'static str| cli(&s, "bob", &s.token, &["-D", "appdb"], sql);
    let (ok, first, err) = q("select connection_id()").await;
    assert!(ok, "{err}");
    let (ok, second, err) = q("select connection_id()").await;
    assert!(ok, "{err}");
    assert_eq!(first, second, "both clients ran on the pool's one server");
    // Session state: pinned while the client stays, gone for the next client.
    let (ok, out, err) = q("set @secret = 'from-a'; select @secret").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "from-a");
    let (ok, out, err) = q("select @secret is null, connection_id()").await;
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!("1\t{}", first.trim()),
        "the same server, reset"
    );
    assert!(
        s.gw.metric("sumun_mysql_pinned_clients_total{reason=\"session_state\"}") >= 1.0,
        "{}",
        s.gw.metrics()
    );
    // A transaction keeps its server to the end, then the next client sees the commit.
    let (ok, _, err) = q(
        "create table t (a int); begin; insert into t values (1); insert into t values (2); commit",
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = q("select count(*) from t").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "2");
    // A transaction left open by a client that leaves is rolled back, not handed on.
    let (ok, _, err) = q("begin; insert into t values (3)").await;
    assert!(ok, "{err}");
    let (ok, out, err) = q("select count(*), @@in_transaction from t").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "2\t0");
    let pools = sumun_gateway::frontend::FrontEnd::pool_rows(
        s.gw.gateway
            .shared()
            .front_ends
            .of::<sumun_gateway::mysql::MysqlFrontEnd>()
            .expect("mysql front end"),
        s.gw.gateway.shared(),
    );
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert_eq!(pools[0]["open"], 1, "{pools:?}");
    // Statements are audited with the server they ran on.
    let audit = common::wait_for_audit(&s.gw, 0, "select count(*) from t").await;
    assert!(
        audit.contains(&format!("\"target\":\"{}\"", s.db.addr())),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_logins_check_the_database_like_the_server_does() {
    let s = setup_with(
        "optional",
        APP_PASSWORD,
        "pool = { mode = \"transaction\", size = 2 }",
        "",
    )
    .await;
    let (ok, _, err) = cli(&s, "bob", &s.token, &["-D", "nosuchdb"], "select 1").await;
    assert!(!ok);
    // bob may use only appdb: refused by the gateway first.
    assert!(err.contains("ERROR 1044"), "{err}");
    let (ok, out, err) = cli(&s, "bob", &s.token, &["-D", "appdb"], "select database()").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "appdb");
}

/// Read one packet (header and payload) from a raw connection.
async fn raw_packet(stream: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 4];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_exact(&mut header),
    )
    .await
    .expect("an answer or a close within 10 s");
    read.ok()?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((header[3], payload))
}

/// The error code of an ERR payload.
fn err_code(payload: &[u8]) -> Option<u16> {
    (payload.first() == Some(&0xFF) && payload.len() >= 3)
        .then(|| u16::from_le_bytes([payload[1], payload[2]]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_login_packets_get_mysqls_errors_without_the_gateway_reading_on() {
    use tokio::io::AsyncWriteExt;
    let s = setup("optional", APP_PASSWORD, "").await;
    let addr = s.gw.addr("my");
    let cases: [(&str, Vec<u8>, u16); 3] = [
        // The protocol's largest packet claimed as a login: refused at its header, before a
        // byte of its 16 MiB is awaited.
        ("oversized", vec![0xFF, 0xFF, 0xFF, 1], 1153),
        // A login with the wrong sequence id.
        ("out of order", vec![4, 0, 0, 5, 1, 2, 3, 4], 1156),
        // A login too short to be one.
        ("malformed", vec![3, 0, 0, 1, 0x85, 0xa2, 0x1f], 1043),
    ];
    for (what, bytes, code) in cases {
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (seq, greeting) = raw_packet(&mut c).await.expect("greeting");
        assert_eq!((seq, greeting[0]), (0, 10), "{what}: a Handshake v10");
        c.write_all(&bytes).await.expect("write");
        let (_, answer) = raw_packet(&mut c)
            .await
            .unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(err_code(&answer), Some(code), "{what}: {answer:?}");
        assert!(raw_packet(&mut c).await.is_none(), "{what}: not closed");
    }
    // A login cut short: the connection just ends, and the gateway goes on serving.
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    raw_packet(&mut c).await.expect("greeting");
    c.write_all(&[100, 0, 0, 1, 1, 2, 3]).await.expect("write");
    drop(c);
    let (ok, out, err) = cli(&s, "bob", &s.token, &[], "select 1").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1");
    assert!(
        s.gw.metric("sumun_rejected_flows_total{listener=\"my\",reason=\"protocol_error\"}") >= 3.0,
        "{}",
        s.gw.metrics()
    );
}

/// A gateway-held password (`sumun users set-password`): without TLS through
/// mysql_native_password against the stored verifier (nothing reusable on the wire), over TLS
/// in cleartext for a user that may also use tokens; wrong ones refused as MySQL refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_held_password_logs_in_with_or_without_tls() {
    let s = setup("optional", APP_PASSWORD, "").await;
    for (user, extra) in [
        ("carol", &["--skip-ssl"][..]),
        ("carol", &[][..]),
        ("dave", &["--skip-ssl"][..]),
        ("dave", &[][..]),
    ] {
        let (ok, out, err) = cli(&s, user, CAROL_PASSWORD, extra, "select current_user()").await;
        // dave has no password of his own in the vault: refused like a wrong one.
        if user == "dave" {
            assert!(!ok, "{user} {extra:?}: {out}");
            assert!(
                err.contains("ERROR 1045 (28000)"),
                "{user} {extra:?}: {err}"
            );
            continue;
        }
        assert!(ok, "{user} {extra:?}: {err}");
        assert_eq!(out.trim(), "app@%", "{user} {extra:?}");
        let (ok, _, err) = cli(&s, user, "wrong password", extra, "select 1").await;
        assert!(!ok);
        assert!(
            err.contains("ERROR 1045 (28000)"),
            "{user} {extra:?}: {err}"
        );
    }
    // A token of another user is no password of carol's.
    let (ok, _, _) = cli(&s, "carol", &s.token, &[], "select 1").await;
    assert!(!ok, "bob's token is not carol's");
}

/// A `mariadb` client kept open, fed statements one at a time (`-n`: unbuffered output).
struct Interactive {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Interactive {
    async fn open(s: &Setup) -> Interactive {
        Interactive::open_with(s, &[]).await
    }

    async fn open_with(s: &Setup, extra: &[&str]) -> Interactive {
        let port = s.gw.addr("my").port().to_string();
        let ca = format!("--ssl-ca={}", s.ca.display());
        let mut child = tokio::process::Command::new("mariadb")
            .args([
                "--no-defaults",
                "--protocol=TCP",
                "-h",
                "127.0.0.1",
                "-P",
                &port,
                "-u",
                "bob",
                "-D",
                "appdb",
                "-N",
                "-B",
                "-n",
                "--ssl",
                &ca,
            ])
            .args(extra)
            .env("MYSQL_PWD", &s.token)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("mariadb");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        use tokio::io::AsyncBufReadExt;
        Interactive {
            child,
            stdin,
            out: tokio::io::BufReader::new(stdout).lines(),
        }
    }

    /// One statement's one-line answer, or None when the client ended (an error).
    async fn one(&mut self, sql: &str) -> Option<String> {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{sql};\n").as_bytes())
            .await
            .ok()?;
        tokio::time::timeout(std::time::Duration::from_secs(30), self.out.next_line())
            .await
            .expect("an answer within 30 s")
            .ok()?
    }
}

/// Health checks learn which server is writable (`@@read_only`); when the primary dies and
/// another server becomes writable, a transaction-mode client that was between transactions
/// goes on, on the same connection, on the new primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_clients_ride_through_a_failover_to_a_newly_writable_server() {
    let mut a = mariadb().await;
    let b = mariadb().await;
    b.mysql("SET GLOBAL read_only = 1").expect("b read-only");
    let group = "health_check = { protocol = \"mysql\", credential = \"maria/app\", interval = \"300ms\", timeout = \"250ms\", healthy_threshold = 2, unhealthy_threshold = 2 }\n";
    // The setup's own server is not used: the group is a and b.
    let s = setup_on(
        "optional",
        APP_PASSWORD,
        "pool = { mode = \"transaction\", size = 4, checkout_timeout = \"10s\" }",
        group,
        &[a.addr(), b.addr()],
    )
    .await;
    let roles = |s: &Setup| {
        sumun_gateway::admin::server_rows(s.gw.gateway.shared())
            .iter()
            .map(|r| (r.address.clone(), r.role, format!("{:?}", r.health)))
            .collect::<Vec<_>>()
    };
    let learned = |s: &Setup, primary: std::net::SocketAddr| {
        roles(s).iter().any(|(addr, role, health)| {
            *addr == primary.to_string() && *role == "primary" && health == "Healthy"
        })
    };
    assert!(
        common::eventually_async(std::time::Duration::from_secs(20), || async {
            learned(&s, a.addr())
        })
        .await,
        "{:?}",
        roles(&s)
    );
    let mut client = Interactive::open(&s).await;
    assert_eq!(
        client.one("select @@port").await,
        Some(a.port().to_string())
    );
    // The primary dies; b is made writable (a promotion).
    tokio::task::spawn_blocking(move || {
        a.kill();
        a
    })
    .await
    .expect("kill");
    b.mysql("SET GLOBAL read_only = 0").expect("promote b");
    assert!(
        common::eventually_async(std::time::Duration::from_secs(20), || async {
            learned(&s, b.addr())
        })
        .await,
        "{:?}",
        roles(&s)
    );
    // Same connection, next statement: on the new primary.
    assert_eq!(
        client.one("select @@port").await,
        Some(b.port().to_string())
    );
    let _ = client.child.kill().await;
}

/// A transaction-mode login does not wait for a server (every one may be busy for longer than
/// the handshake may last); its first statement does, up to checkout_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_logins_do_not_wait_for_a_busy_pool() {
    let s = std::sync::Arc::new(
        setup_with(
            "optional",
            APP_PASSWORD,
            "handshake_timeout = \"1s\"\npool = { mode = \"transaction\", size = 1, checkout_timeout = \"20s\" }",
            "",
        )
        .await,
    );
    let busy = {
        let s = s.clone();
        tokio::spawn(async move { cli(&s, "bob", &s.token, &[], "select sleep(3)").await })
    };
    assert!(
        common::eventually_async(std::time::Duration::from_secs(10), || async {
            s.db.mysql("select count(*) from information_schema.processlist where info = 'select sleep(3)'")
                .is_ok_and(|n| n == "1")
        })
        .await,
        "the first client never got its server"
    );
    let (ok, out, err) = cli(&s, "bob", &s.token, &[], "select 42").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "42");
    let (ok, _, err) = busy.await.expect("busy");
    assert!(ok, "{err}");
}

/// `session.end` says who it was, how it ended (a client that quits normally is `closed`), how
/// long it lasted and how many statements it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_end_events_say_who_how_long_and_how_many_statements() {
    for pool in ["", "pool = { mode = \"transaction\", size = 2 }"] {
        let s = setup_with("optional", APP_PASSWORD, pool, "").await;
        let mark = common::audit_mark(&s.gw);
        let (ok, _, err) = cli(&s, "bob", &s.token, &["-D", "appdb"], "select 1; select 2").await;
        assert!(ok, "{err}");
        let end = common::wait_for_audit(&s.gw, mark, "\"event\":\"session.end\"").await;
        let v: serde_json::Value = serde_json::from_str(&end).expect("json");
        assert_eq!(v["user"], "bob", "{pool}: {end}");
        assert_eq!(v["database"], "appdb", "{pool}: {end}");
        assert_eq!(v["end"], "closed", "{pool}: {end}");
        // The client's own `select @@version_comment` and the two statements.
        assert!(v["queries"].as_u64().unwrap_or(0) >= 2, "{pool}: {end}");
        assert!(v["bytes_in"].as_u64().unwrap_or(0) > 0, "{pool}: {end}");
        assert!(
            v["session_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{pool}: {end}"
        );
    }
}

/// A statement of 16 MiB or more goes in several packets; transaction mode forwards them all
/// (it hung waiting for an answer to a statement the server had not wholly received).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_over_16_mib_go_through_in_both_modes() {
    for pool in ["", "pool = { mode = \"transaction\", size = 2 }"] {
        let s = setup_with("optional", APP_PASSWORD, pool, "").await;
        s.db.mysql("SET GLOBAL max_allowed_packet = 67108864")
            .expect("max_allowed_packet");
        let mut c = Interactive::open_with(&s, &["--max-allowed-packet=64M"]).await;
        for n in [16_777_200usize, 16_777_300] {
            let sql = format!("select length('{}')", "a".repeat(n));
            assert_eq!(c.one(&sql).await, Some(n.to_string()), "{pool}: {n}");
        }
        assert_eq!(c.one("select 1").await, Some("1".to_string()), "{pool}");
        let _ = c.child.kill().await;
    }
}

/// Drivers set their character set (and autocommit, sql_mode...) right after logging in:
/// transaction mode carries such settings to every server the client lands on instead of
/// pinning it, and a server with other settings is reset before another client gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_carries_session_settings_instead_of_pinning() {
    let s = setup_with(
        "optional",
        APP_PASSWORD,
        "pool = { mode = \"transaction\", size = 1, checkout_timeout = \"5s\" }",
        "",
    )
    .await;
    let q = |sql: &'static str| cli(&s, "bob", &s.token, &["-D", "appdb"], sql);
    let (ok, base, err) = q("select @@character_set_client, @@sql_mode, connection_id()").await;
    assert!(ok, "{err}");
    let base: Vec<String> = base.trim().split('\t').map(String::from).collect();
    let (ok, out, err) = q("set names latin1; set session sql_mode = 'ANSI_QUOTES'; select @@character_set_client, @@sql_mode, connection_id()").await;
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!("latin1\tANSI_QUOTES\t{}", base[2]),
        "the settings hold on the pool's one server"
    );
    let pinned =
        s.gw.metric("sumun_mysql_pinned_clients_total{reason=\"session_state\"}");
    assert_eq!(pinned, 0.0, "{}", s.gw.metrics());
    // The next client, without settings, gets the server as it was.
    let (ok, out, err) = q("select @@character_set_client, @@sql_mode, connection_id()").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), base.join("\t"));
}

/// A token for one database logs in to that database only: named at login, not left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_one_database_logs_in_to_that_database_only() {
    let s = setup("optional", APP_PASSWORD, "").await;
    let scoped = std::fs::read_to_string(s.gw.dir.path("scoped.token")).expect("scoped token");
    let (ok, out, err) = cli(&s, "bob", &scoped, &["-D", "appdb"], "select database()").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "appdb");
    let (ok, _, err) = cli(&s, "bob", &scoped, &[], "select 1").await;
    assert!(!ok, "no database named");
    assert!(err.contains("ERROR 1045"), "{err}");
}

/// A sysbench script: each thread prepares one INSERT, binds its parameters once (libmariadb
/// then sends their types with the first execute only) and executes it for every event. Odd
/// threads bind `n` as a string, even ones as an integer: a server that executed a statement
/// with another client's types would store wrong values.
const PS_TYPES_LUA: &str = r#"
function thread_init()
  drv = sysbench.sql.driver()
  con = drv:connect()
  local as_text = sysbench.tid % 2 == 1
  stmt = con:prepare("INSERT INTO ps_check (tid, n, s) VALUES (?, ?, ?)")
  p_tid = stmt:bind_create(sysbench.sql.type.INT)
  if as_text then
    p_n = stmt:bind_create(sysbench.sql.type.VARCHAR, 20)
  else
    p_n = stmt:bind_create(sysbench.sql.type.BIGINT)
  end
  p_s = stmt:bind_create(sysbench.sql.type.VARCHAR, 40)
  stmt:bind_param(p_tid, p_n, p_s)
  count = 0
  text = as_text
end

function event()
  count = count + 1
  p_tid:set(sysbench.tid)
  if text then p_n:set(tostring(count * 1000 + 7)) else p_n:set(count * 1000 + 7) end
  p_s:set("v" .. (count * 1000 + 7))
  stmt:execute()
end

function thread_done()
  stmt:close()
  con:disconnect()
end
"#;

/// Transaction mode: prepared statements do not pin. Eight sysbench threads (libmariadb's
/// binary protocol, parameter types sent with the first execute only) share a pool of two
/// server connections; every execute lands on whichever is free, the statement is prepared
/// there on first use and the client's types are given to it, and every row is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_prepared_statements_are_shared_without_pinning() {
    let s = setup_with(
        "optional",
        APP_PASSWORD,
        "pool = { mode = \"transaction\", size = 2, checkout_timeout = \"20s\" }",
        "",
    )
    .await;
    let (ok, _, err) = cli(
        &s,
        "carol",
        CAROL_PASSWORD,
        &["--skip-ssl", "-D", "appdb"],
        "create table ps_check (id int auto_increment primary key, tid int, n bigint, s varchar(40))",
    )
    .await;
    assert!(ok, "{err}");
    let script = s.gw.dir.path("ps_types.lua");
    std::fs::write(&script, PS_TYPES_LUA).expect("write script");
    let port = s.gw.addr("my").port().to_string();
    let args = [
        script.to_str().expect("utf8 path"),
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        "--mysql-ssl=off",
        "--mysql-user=carol",
        "--mysql-db=appdb",
        "--db-ps-mode=auto",
        "--threads=8",
        "--events=800",
        "--time=0",
        "run",
    ];
    let mut all: Vec<&str> = vec![];
    all.extend_from_slice(&args);
    let port_arg = format!("--mysql-port={port}");
    let pw_arg = format!("--mysql-password={CAROL_PASSWORD}");
    all.push(&port_arg);
    all.push(&pw_arg);
    let (ok, out, err) = common::run("sysbench", &all, &[]).await;
    assert!(ok, "sysbench failed:\n{out}\n{err}");
    let (ok, out, err) = cli(
        &s,
        "carol",
        CAROL_PASSWORD,
        &["--skip-ssl", "-D", "appdb"],
        "select count(*), sum(s = concat('v', n)), sum(n % 1000 = 7), count(distinct tid) from ps_check",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "800\t800\t800\t8",
        "every row as its client bound it"
    );
    let metric = |m: &str| s.gw.metric(m);
    assert_eq!(
        metric("sumun_mysql_pinned_clients_total{reason=\"prepared_statement\"}"),
        0.0,
        "{}",
        s.gw.metrics()
    );
    assert_eq!(
        metric("sumun_mysql_pinned_clients_total{reason=\"session_state\"}"),
        0.0,
        "{}",
        s.gw.metrics()
    );
    // The statement was prepared once per server connection, answered from there for the
    // others, and the threads' types were put into executes that landed on another server.
    let prepared = metric("sumun_mysql_prepared_statements_total{event=\"prepared\"}")
        + metric("sumun_mysql_prepared_statements_total{event=\"reprepared\"}");
    assert!((1.0..=2.0).contains(&prepared), "{}", s.gw.metrics());
    assert!(
        metric("sumun_mysql_prepared_statements_total{event=\"prepare_cached\"}") >= 6.0,
        "{}",
        s.gw.metrics()
    );
    assert!(
        metric("sumun_mysql_prepared_statements_total{event=\"types_supplied\"}") >= 1.0,
        "{}",
        s.gw.metrics()
    );
    let pools = sumun_gateway::frontend::FrontEnd::pool_rows(
        s.gw.gateway
            .shared()
            .front_ends
            .of::<sumun_gateway::mysql::MysqlFrontEnd>()
            .expect("mysql front end"),
        s.gw.gateway.shared(),
    );
    // sysbench's pool (its capabilities differ from the mariadb client's): 800 executes and
    // more on two server connections at most.
    let pool = pools
        .iter()
        .max_by_key(|p| p["checkouts"].as_u64())
        .expect("a pool");
    assert!(pool["checkouts"].as_u64() >= Some(800), "{pools:?}");
    assert!(pool["open"].as_u64() <= Some(2), "{pools:?}");
}

/// A client speaking the binary protocol byte by byte: for what no stock client does on
/// demand (an execute without types on another server, a guessed statement id).
struct RawClient {
    s: tokio::net::TcpStream,
    /// The type its parameters are sent as (a string type: VAR_STRING or STRING).
    ty: u8,
}

impl RawClient {
    /// Log in as carol (the gateway-held password, mysql_native_password) to appdb.
    async fn login(port: u16) -> RawClient {
        use sumun_wire::mysql::flags::*;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (_, greeting) = raw_packet(&mut s).await.expect("greeting");
        let hello = sumun_wire::mysql::handshake::HandshakeV10::parse(&greeting).expect("greeting");
        let auth = sumun_vault::mysql::native_password_response(
            CAROL_PASSWORD.as_bytes(),
            &hello.scramble,
        );
        let caps = CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_TRANSACTIONS
            | CLIENT_CONNECT_WITH_DB
            | CLIENT_DEPRECATE_EOF
            | CLIENT_MYSQL;
        let mut out = Vec::new();
        sumun_wire::mysql::handshake::HandshakeResponse {
            capabilities: sumun_wire::mysql::Capabilities(caps),
            max_packet: 1 << 24,
            charset: 45,
            user: b"carol",
            auth_response: &auth,
            database: Some(b"appdb"),
            auth_plugin: Some(b"mysql_native_password"),
            attributes: b"",
            zstd_level: None,
        }
        .write(&mut out);
        let mut c = RawClient { s, ty: 253 };
        c.write(1, &out).await;
        loop {
            let (seq, p) = raw_packet(&mut c.s).await.expect("login answer");
            match p.first() {
                Some(0x00) => return c,
                Some(0xFE) => {
                    let switch =
                        sumun_wire::mysql::handshake::AuthSwitchRequest::parse(&p).expect("switch");
                    let nonce = switch.scramble20().expect("nonce");
                    let auth = sumun_vault::mysql::native_password_response(
                        CAROL_PASSWORD.as_bytes(),
                        &nonce,
                    );
                    c.write(seq + 1, &auth).await;
                }
                _ => panic!("login refused: {p:?}"),
            }
        }
    }

    async fn write(&mut self, seq: u8, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mut out = Vec::new();
        sumun_wire::mysql::packet::write_packet(&mut out, seq, payload);
        self.s.write_all(&out).await.expect("write");
    }

    async fn read(&mut self) -> Vec<u8> {
        raw_packet(&mut self.s).await.expect("a packet").1
    }

    async fn query(&mut self, sql: &str) -> Vec<u8> {
        let mut p = vec![0x03];
        p.extend_from_slice(sql.as_bytes());
        self.write(0, &p).await;
        // OK or ERR only (statements without rows).
        self.read().await
    }

    /// COM_STMT_PREPARE: (id, columns, params), or the error code.
    async fn prepare(&mut self, sql: &str) -> Result<(u32, u16, u16), u16> {
        let mut p = vec![0x16];
        p.extend_from_slice(sql.as_bytes());
        self.write(0, &p).await;
        let ok = self.read().await;
        if let Some(code) = err_code(&ok) {
            return Err(code);
        }
        let id = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
        let columns = u16::from_le_bytes([ok[5], ok[6]]);
        let params = u16::from_le_bytes([ok[7], ok[8]]);
        // Definitions; CLIENT_DEPRECATE_EOF: no EOF after them.
        for _ in 0..(u32::from(columns) + u32::from(params)) {
            self.read().await;
        }
        Ok((id, columns, params))
    }

    /// COM_STMT_EXECUTE with string parameters (types sent when `types`), `cursor` asking for
    /// a read-only cursor. Rows of string columns, or the error code.
    async fn execute(
        &mut self,
        id: u32,
        params: &[&str],
        types: bool,
        cursor: bool,
    ) -> Result<Vec<Vec<String>>, u16> {
        let mut p = vec![0x17];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(u8::from(cursor));
        p.extend_from_slice(&1u32.to_le_bytes());
        if !params.is_empty() {
            p.extend(std::iter::repeat_n(0, params.len().div_ceil(8)));
            p.push(u8::from(types));
            if types {
                for _ in params {
                    p.extend_from_slice(&[self.ty, 0]);
                }
            }
            for v in params {
                p.push(v.len() as u8);
                p.extend_from_slice(v.as_bytes());
            }
        }
        self.write(0, &p).await;
        self.result(cursor).await
    }

    /// A binary result (or OK/ERR); with a cursor, only its columns come now.
    async fn result(&mut self, cursor: bool) -> Result<Vec<Vec<String>>, u16> {
        let first = self.read().await;
        if let Some(code) = err_code(&first) {
            return Err(code);
        }
        if first[0] == 0x00 {
            return Ok(vec![]);
        }
        let columns = usize::from(first[0]);
        for _ in 0..columns {
            self.read().await;
        }
        if cursor {
            // The EOF carrying SERVER_STATUS_CURSOR_EXISTS.
            self.read().await;
            return Ok(vec![]);
        }
        self.rows(columns).await
    }

    async fn rows(&mut self, columns: usize) -> Result<Vec<Vec<String>>, u16> {
        let mut rows = Vec::new();
        loop {
            let p = self.read().await;
            if let Some(code) = err_code(&p) {
                return Err(code);
            }
            if p[0] == 0xFE && p.len() < 0xFF_FFFF {
                return Ok(rows);
            }
            // 0x00, the NULL bitmap, then length-prefixed strings (short ones).
            let mut at = 1 + (columns + 7 + 2) / 8;
            let mut row = Vec::new();
            for _ in 0..columns {
                let n = usize::from(p[at]);
                row.push(String::from_utf8_lossy(&p[at + 1..at + 1 + n]).into_owned());
                at += 1 + n;
            }
            rows.push(row);
        }
    }

    async fn fetch(&mut self, id: u32, n: u32, columns: usize) -> Result<Vec<Vec<String>>, u16> {
        let mut p = vec![0x1C];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&n.to_le_bytes());
        self.write(0, &p).await;
        self.rows(columns).await
    }

    async fn simple(&mut self, command: u8, id: u32, extra: &[u8]) {
        let mut p = vec![command];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(extra);
        self.write(0, &p).await;
    }
}

/// Transaction mode, byte by byte on a pool of one: a client's statement ids are its own (a
/// second client on the same server cannot use them); an execute without types after another
/// client's execute of the same statement gets the first client's types back; long data and
/// a cursor keep the client on its server until executed or fetched; COM_STMT_RESET and
/// COM_STMT_CLOSE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_prepared_statements_are_each_clients_own() {
    let s = setup_with(
        "optional",
        APP_PASSWORD,
        "pool = { mode = \"transaction\", size = 1, checkout_timeout = \"3s\" }",
        "",
    )
    .await;
    let port = s.gw.addr("my").port();
    let mut a = RawClient::login(port).await;
    let mut b = RawClient::login(port).await;
    assert_eq!(
        a.query("create table kv (k varchar(10), v varchar(10))")
            .await[0],
        0
    );
    assert_eq!(
        a.query("insert into kv values ('x', 'one'), ('y', 'two'), ('z', 'three')")
            .await[0],
        0
    );
    let sql = "select v, concat(?, '') from kv where k = ?";
    let (ida, cols, params) = a.prepare(sql).await.expect("prepare");
    assert_eq!((cols, params), (2, 2));
    let rows = a
        .execute(ida, &["a1", "x"], true, false)
        .await
        .expect("execute");
    assert_eq!(rows, vec![vec!["one".to_string(), "a1".to_string()]]);
    // B cannot use A's id: it has no statement of that id.
    assert_eq!(b.execute(ida, &["b", "y"], true, false).await, Err(1243));
    // B prepares the same text (answered from the server's statement) and executes it with
    // other types (MYSQL_TYPE_STRING): the server now holds B's.
    b.ty = 254;
    let (idb, _, _) = b.prepare(sql).await.expect("prepare");
    let rows = b
        .execute(idb, &["b1", "y"], true, false)
        .await
        .expect("execute");
    assert_eq!(rows, vec![vec!["two".to_string(), "b1".to_string()]]);
    // A re-executes without types: its own types (VAR_STRING) go to the server with it.
    let rows = a
        .execute(ida, &["a2", "z"], false, false)
        .await
        .expect("re-execute");
    assert_eq!(rows, vec![vec!["three".to_string(), "a2".to_string()]]);
    // A client that never sent types gets the server's error, not another client's types.
    let mut c = RawClient::login(port).await;
    let (idc, _, _) = c.prepare(sql).await.expect("prepare");
    assert_eq!(c.execute(idc, &["c", "x"], false, false).await, Err(1210));
    // A cursor keeps A on its server (the pool's one): B waits, then runs after A's fetch.
    let (cur, _, _) = a
        .prepare("select v from kv order by k")
        .await
        .expect("prepare");
    assert_eq!(a.execute(cur, &[], false, true).await, Ok(vec![]));
    let b_waits = tokio::spawn(async move {
        let r = b.execute(idb, &["b2", "x"], false, false).await;
        (b, r)
    });
    let rows = a.fetch(cur, 2, 1).await.expect("fetch");
    assert_eq!(rows, vec![vec!["one".to_string()], vec!["two".to_string()]]);
    let rows = a.fetch(cur, 5, 1).await.expect("fetch");
    assert_eq!(rows, vec![vec!["three".to_string()]]);
    let (mut b, r) = b_waits.await.expect("b");
    assert_eq!(r, Ok(vec![vec!["one".to_string(), "b2".to_string()]]));
    // Fetching a statement without a cursor is refused.
    assert_eq!(a.fetch(ida, 1, 2).await, Err(1421));
    // Long data: sent in pieces, used by the next execute, on the same server.
    let (ld, _, _) = a.prepare("select concat(?, '!')").await.expect("prepare");
    a.simple(0x18, ld, &[0, 0, b'h', b'e']).await;
    a.simple(0x18, ld, &[0, 0, b'l', b'l', b'o']).await;
    let rows = a.execute(ld, &[""], true, false).await.expect("long data");
    assert_eq!(rows, vec![vec!["hello!".to_string()]]);
    // COM_STMT_RESET drops long data not yet used.
    a.simple(0x18, ld, &[0, 0, b'z']).await;
    a.simple(0x1A, ld, &[]).await;
    assert_eq!(a.read().await[0], 0x00, "reset OK");
    let rows = a
        .execute(ld, &["plain"], false, false)
        .await
        .expect("after reset");
    assert_eq!(rows, vec![vec!["plain!".to_string()]]);
    // COM_STMT_CLOSE: the id is gone for its client; the other's same statement still works.
    a.simple(0x19, ida, &[]).await;
    assert_eq!(a.execute(ida, &["a", "x"], true, false).await, Err(1243));
    let rows = b
        .execute(idb, &["b3", "y"], true, false)
        .await
        .expect("still B's");
    assert_eq!(rows, vec![vec!["two".to_string(), "b3".to_string()]]);
    let metric = |m: &str| s.gw.metric(m);
    assert_eq!(
        metric("sumun_mysql_pinned_clients_total{reason=\"prepared_statement\"}"),
        0.0
    );
    assert!(metric("sumun_mysql_prepared_statements_total{event=\"held_cursor\"}") >= 1.0);
    assert!(metric("sumun_mysql_prepared_statements_total{event=\"held_long_data\"}") >= 1.0);
    assert!(metric("sumun_mysql_prepared_statements_total{event=\"types_supplied\"}") >= 1.0);
}
