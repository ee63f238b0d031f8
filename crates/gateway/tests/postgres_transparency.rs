//! A session through Sumun behaves like a direct connection (issue 17): idle clients are kept as
//! long as the application keeps them (RDS Proxy's `IdleClientTimeout`, "0s" never), ...

mod common;

use std::time::Duration;

use common::raw::Raw;
use common::{TestDir, TestGateway};
use sumun_testkit::Postgres;

const AUDIENCE: &str = "sumun-transparency";

async fn start(listener: &str) -> (Postgres, TestGateway, String) {
    let pg = common::app_postgres(None, &[]).await;
    let dir = TestDir::new("pg-transparent");
    let vault = common::backend_vault(&dir, common::APP_PASSWORD);
    let token = common::token(&vault, "bob", AUDIENCE);
    drop(vault);
    let toml = common::pg_config(
        AUDIENCE,
        "park_after = \"100ms\"",
        listener,
        pg.addr(),
        "",
        r#"[[users]]
name = "bob"
auth = ["token"]
backend_credential = "pg/app"
[audit]
path = "{dir}/audit.jsonl"
"#,
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    (pg, gw, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_timeout_of_zero_keeps_idle_clients_for_good() {
    let (_pg, gw, token) =
        start("idle_timeout = \"0s\"\npool = { mode = \"transaction\", size = 2 }").await;
    let mut c = Raw::tcp(gw.addr("pg")).await;
    let greeting = c.login("bob", "appdb", &token).await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
    // Idle (and parked) for a while: the idling is what is tested, so it is a plain wait.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(gw.metric("sumun_parked_clients"), 1.0, "{}", gw.metrics());
    assert_eq!(c.query("select 42").await, Ok(vec!["42".to_string()]));
}

/// The ParameterStatus values of a greeting, by name.
fn reported(greeting: &[(u8, Vec<u8>)]) -> std::collections::HashMap<String, String> {
    greeting
        .iter()
        .filter(|(t, _)| *t == b'S')
        .filter_map(|(_, body)| {
            let mut parts = body.split(|&b| b == 0);
            let k = String::from_utf8_lossy(parts.next()?).into_owned();
            let v = String::from_utf8_lossy(parts.next()?).into_owned();
            Some((k, v))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_reported_as_the_server_spells_them() {
    for mode in ["transaction", "session"] {
        let (_pg, gw, token) = start(&format!("pool = {{ mode = \"{mode}\", size = 2 }}")).await;
        // Twice: the first login learns the spelling from a server, the second is greeted
        // from what was learned.
        for round in 0..2 {
            let mut c = Raw::tcp(gw.addr("pg")).await;
            let greeting = c
                .login_with(
                    "bob",
                    "appdb",
                    &[("client_encoding", "utf8"), ("DateStyle", "iso")],
                    &token,
                )
                .await;
            assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
            let r = reported(&greeting);
            assert_eq!(
                r.get("client_encoding").map(String::as_str),
                Some("UTF8"),
                "{mode} {round}: {r:?}"
            );
            assert_eq!(
                r.get("DateStyle").map(String::as_str),
                Some("ISO, MDY"),
                "{mode} {round}: {r:?}"
            );
            assert_eq!(
                c.query("select current_setting('client_encoding')").await,
                Ok(vec!["UTF8".to_string()])
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ends_a_clients_session_is_heard_verbatim_and_the_connection_closes() {
    // Session mode, a transaction-mode client pinned to its server, and one idle inside a
    // transaction (its transaction is on that server: it must not carry on elsewhere).
    for (mode, pin) in [
        ("session", None),
        ("transaction", Some("set search_path = public")),
        ("transaction", Some("begin")),
    ] {
        let (pg, gw, token) = start(&format!("pool = {{ mode = \"{mode}\", size = 2 }}")).await;
        let mut c = Raw::tcp(gw.addr("pg")).await;
        let greeting = c.login("bob", "appdb", &token).await;
        assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
        if let Some(sql) = pin {
            c.query(sql).await.expect("pin");
        }
        let pid = c.query("select pg_backend_pid()").await.expect("pid");
        let killed = pg
            .psql(&format!("select pg_terminate_backend({})", pid[0]))
            .expect("terminate");
        assert_eq!(killed, "t");
        // As a direct client would: the server's FATAL, with its SQLSTATE, then the close.
        let (tag, body) = c.message().await.expect("told");
        assert_eq!(tag, b'E');
        let f = sumun_wire::postgres::error_fields(&body);
        assert_eq!(
            (f.severity.as_str(), f.code.as_str()),
            ("FATAL", "57P01"),
            "{mode}: {}",
            f.message
        );
        assert_eq!(
            f.message, "terminating connection due to administrator command",
            "{mode}"
        );
        assert!(c.is_closed().await, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_mode_statement_whose_server_is_terminated_gets_its_fatal_and_the_close() {
    let (pg, gw, token) = start("pool = { mode = \"transaction\", size = 2 }").await;
    let mut c = Raw::tcp(gw.addr("pg")).await;
    let greeting = c.login("bob", "appdb", &token).await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
    let mut w = sumun_wire::postgres::Writer::new();
    w.query("select pg_sleep(30)");
    c.write(&w.buf).await;
    let running = "select pid from pg_stat_activity where query = 'select pg_sleep(30)' \
                   and state = 'active'";
    assert!(
        common::eventually(Duration::from_secs(10), || pg
            .psql(running)
            .is_ok_and(|p| !p.trim().is_empty()))
        .await,
        "the statement never started"
    );
    let pid = pg.psql(running).expect("pid");
    pg.psql(&format!("select pg_terminate_backend({})", pid.trim()))
        .expect("terminate");
    let reply = tokio::time::timeout(Duration::from_secs(20), c.until_ready())
        .await
        .expect("told within 20 s");
    let (code, message) = common::raw::first_error(&reply).expect("an error");
    assert_eq!(code, "57P01", "{message}");
    assert_eq!(reply.last().map(|m| m.0), Some(b'E'), "{reply:?}");
    assert!(c.is_closed().await);
    // The pool lost one server and serves the next client with another.
    let mut next = Raw::tcp(gw.addr("pg")).await;
    let greeting = next.login("bob", "appdb", &token).await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
    assert_eq!(next.query("select 1").await, Ok(vec!["1".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_server_terminated_between_transactions_goes_unnoticed() {
    let (pg, gw, token) = start("pool = { mode = \"transaction\", size = 1 }").await;
    let mut c = Raw::tcp(gw.addr("pg")).await;
    let greeting = c.login("bob", "appdb", &token).await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
    let pid = c.query("select pg_backend_pid()").await.expect("pid");
    pg.psql(&format!("select pg_terminate_backend({})", pid[0]))
        .expect("terminate");
    // The server was the pool's, not the client's: the next statement runs on a new one.
    let again = c.query("select pg_backend_pid()").await.expect("pid");
    assert_ne!(again, pid);
}

/// The BackendKeyData of a greeting: (process id, secret key).
fn backend_key(greeting: &[(u8, Vec<u8>)]) -> (u32, u32) {
    let (_, body) = greeting
        .iter()
        .find(|(t, _)| *t == b'K')
        .expect("BackendKeyData");
    (
        u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
        u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
    )
}

/// LISTEN, NOTIFY on the same connection, and the NotificationResponse's process id.
async fn self_notification_pid(c: &mut Raw<tokio::net::TcpStream>) -> u32 {
    c.query("listen sumun_chan").await.expect("listen");
    let mut w = sumun_wire::postgres::Writer::new();
    w.query("notify sumun_chan, 'hello'");
    c.write(&w.buf).await;
    let reply = c.until_ready().await;
    let (_, body) = reply
        .iter()
        .find(|(t, _)| *t == b'A')
        .unwrap_or_else(|| panic!("no notification: {reply:?}"));
    u32::from_be_bytes([body[0], body[1], body[2], body[3]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_clients_are_told_their_servers_real_pid_and_cancels_still_work() {
    let (pg, gw, token) = start("pool = { mode = \"session\", size = 2 }").await;
    let mut c = Raw::tcp(gw.addr("pg")).await;
    let greeting = c.login("bob", "appdb", &token).await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
    let (pid, secret) = backend_key(&greeting);
    assert_eq!(
        c.query("select pg_backend_pid()").await,
        Ok(vec![pid.to_string()])
    );
    assert_eq!(self_notification_pid(&mut c).await, pid);
    // pg_stat_activity knows the client's session by the same pid.
    let seen = pg
        .psql(&format!(
            "select usename from pg_stat_activity where pid = {pid}"
        ))
        .expect("activity");
    assert_eq!(seen, "app");

    // A cancel request with what the client was told still reaches its query, through the
    // gateway.
    let mut w = sumun_wire::postgres::Writer::new();
    w.query("select pg_sleep(30)");
    c.write(&w.buf).await;
    assert!(
        common::eventually(Duration::from_secs(10), || {
            pg.psql("select count(*) from pg_stat_activity where query = 'select pg_sleep(30)'")
                .is_ok_and(|n| n == "1")
        })
        .await
    );
    let mut cancel = tokio::net::TcpStream::connect(gw.addr("pg"))
        .await
        .expect("connect");
    let mut w = sumun_wire::postgres::Writer::new();
    w.cancel_request(pid, secret);
    tokio::io::AsyncWriteExt::write_all(&mut cancel, &w.buf)
        .await
        .expect("cancel");
    let reply = c.until_ready().await;
    assert_eq!(
        common::raw::first_error(&reply).map(|e| e.0).as_deref(),
        Some("57014"),
        "{reply:?}"
    );
    assert_eq!(c.query("select 1").await, Ok(vec!["1".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_notifications_carry_the_pid_the_client_was_told() {
    let (_pg, gw, token) = start("pool = { mode = \"transaction\", size = 2 }").await;
    let mut c = Raw::tcp(gw.addr("pg")).await;
    let greeting = c.login("bob", "appdb", &token).await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
    let (pid, _) = backend_key(&greeting);
    // LISTEN pins the client to its server; its own NOTIFY comes back with its own pid.
    assert_eq!(self_notification_pid(&mut c).await, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_query_has_its_query_cancelled_and_its_server_reused() {
    for mode in ["session", "transaction"] {
        let (pg, gw, token) = start(&format!("pool = {{ mode = \"{mode}\", size = 1 }}")).await;
        let mut c = Raw::tcp(gw.addr("pg")).await;
        let greeting = c.login("bob", "appdb", &token).await;
        assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
        let pid = c.query("select pg_backend_pid()").await.expect("pid");
        let mut w = sumun_wire::postgres::Writer::new();
        w.query("select pg_sleep(60)");
        c.write(&w.buf).await;
        let running = "select count(*) from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'";
        assert!(
            common::eventually(Duration::from_secs(10), || pg
                .psql(running)
                .is_ok_and(|n| n == "1"))
            .await,
            "{mode}: the query never started"
        );
        drop(c); // Ctrl-C'd: the client is gone.
        assert!(
            common::eventually(Duration::from_secs(10), || pg
                .psql(running)
                .is_ok_and(|n| n == "0"))
            .await,
            "{mode}: the server kept running the query for nobody"
        );
        // The same server serves the next client at once (pool of one).
        let mut next = Raw::tcp(gw.addr("pg")).await;
        let greeting = next.login("bob", "appdb", &token).await;
        assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
        assert_eq!(
            next.query("select pg_backend_pid()").await,
            Ok(pid.clone()),
            "{mode}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_logins_right_after_pooled_servers_were_terminated_get_live_ones() {
    let (pg, gw, token) = start("pool = { mode = \"session\", size = 3 }").await;
    // Three servers, used and back in the pool.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = Raw::tcp(gw.addr("pg")).await;
        let greeting = c.login("bob", "appdb", &token).await;
        assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
        assert_eq!(c.query("select 1").await, Ok(vec!["1".to_string()]));
        clients.push(c);
    }
    for mut c in clients {
        c.send(&[(b'X', b"")]).await;
        assert!(c.is_closed().await);
    }
    assert!(
        common::eventually(Duration::from_secs(5), || pg
            .psql("select count(*) from pg_stat_activity where usename = 'app' and state = 'idle'")
            .is_ok_and(|n| n == "3"))
        .await
    );
    // Every idle server is terminated, and new clients log in at once.
    pg.psql("select pg_terminate_backend(pid) from pg_stat_activity where usename = 'app'")
        .expect("terminate");
    let logins = (0..3).map(|i| {
        let (addr, token) = (gw.addr("pg"), token.clone());
        tokio::spawn(async move {
            let mut c = Raw::tcp(addr).await;
            let greeting = c.login("bob", "appdb", &token).await;
            assert_eq!(
                greeting.last().map(|m| m.0),
                Some(b'Z'),
                "{i}: {greeting:?}"
            );
            c.query("select 2").await
        })
    });
    for login in logins {
        assert_eq!(login.await.expect("task"), Ok(vec!["2".to_string()]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_backend_password_is_saslprepped_like_postgresql_does() {
    let pg = common::app_postgres(None, &[]).await;
    // PostgreSQL keeps the verifier of SASLprep("IX-\u{2168}") = "IX-IX".
    pg.psql("CREATE ROLE uni LOGIN PASSWORD 'IX-\u{2168}'")
        .expect("role");
    pg.psql("GRANT CONNECT ON DATABASE appdb TO uni")
        .expect("grant");
    let dir = TestDir::new("pg-saslprep");
    let mut vault = common::backend_vault(&dir, common::APP_PASSWORD);
    vault
        .put(
            "pg/uni",
            &sumun_vault::SecretBytes::from_slice("IX-\u{2168}".as_bytes()),
            sumun_vault::SecretMeta {
                kind: Some(sumun_vault::SecretKind::Postgres),
                username: Some("uni".into()),
                ..sumun_vault::SecretMeta::default()
            },
        )
        .expect("put");
    let token = common::token(&vault, "bob", AUDIENCE);
    drop(vault);
    let toml = common::pg_config(
        AUDIENCE,
        "",
        "",
        pg.addr(),
        "",
        "[[users]]\nname = \"bob\"\nauth = [\"token\"]\nbackend_credential = \"pg/uni\"\n",
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    let mut c = Raw::tcp(gw.addr("pg")).await;
    let greeting = c.login("bob", "appdb", &token).await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
    assert_eq!(
        c.query("select current_user").await,
        Ok(vec!["uni".to_string()])
    );
}
