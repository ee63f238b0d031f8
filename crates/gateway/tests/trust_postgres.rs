//! Zero trust on the PostgreSQL path, tried as an attacker would: a server that never proves it
//! knows the password gets nothing (no password in cleartext or md5 unless allowed, no session
//! without SCRAM's server signature); one client's session parameters never reach the next
//! client of the same server connection; two statements whose 64-bit FNV hashes collide stay
//! two statements; a client whose server dies mid-upload is told at once and nothing is held.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::raw::{bind_body, first_error, parse_body, tags, Raw};
use common::{TestDir, TestGateway};
use sumun_testkit::{Impostor, Postgres, Trick};
use tokio::net::TcpStream;

const BACKEND_PASSWORD: &str = common::APP_PASSWORD;
const AUDIENCE: &str = "sumun-trust";

/// A gateway with one plain-text postgres listener `pg` in front of `target`, user `bob`
/// (token) logging in to the backend as the vault's `pg/app`; `group` adds target-group keys.
async fn gateway(target: SocketAddr, pool: &str, group: &str) -> (TestGateway, String) {
    let dir = TestDir::new("pg-trust");
    let vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    let token = common::token(&vault, "bob", AUDIENCE);
    drop(vault);
    let toml = common::pg_config(AUDIENCE, "", &format!("pool = {pool}"), target, group, BOB);
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    (gw, token)
}

const BOB: &str = r#"[[users]]
name = "bob"
auth = ["token"]
backend_credential = "pg/app"
[audit]
path = "{dir}/audit.jsonl"
"#;

async fn start_pg(settings: &[(&str, &str)]) -> Postgres {
    common::app_postgres(None, settings).await
}

async fn logged_in(gw: &TestGateway, token: &str, params: &[(&str, &str)]) -> Raw<TcpStream> {
    let mut c = Raw::tcp(gw.addr("pg")).await;
    let greeting = c.login_with("bob", "appdb", params, token).await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{greeting:?}");
    c
}

// ---------------------------------------------------------------------------------------------
// A server must prove it knows the password before it gets anything

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_prove_it_knows_the_password_gets_no_password_and_no_query() {
    for (trick, why) in [
        (Trick::Cleartext, "cleartext"),
        (Trick::Md5, "md5"),
        (Trick::ScramSkipFinal, "without its signature"),
        (Trick::ScramForgedFinal, "signature is wrong"),
        (Trick::Trust, "without asking for the password"),
        (Trick::NoAuth, "before the login completed"),
    ] {
        let impostor = Impostor::start(trick).await.expect("impostor");
        let (gw, token) =
            gateway(impostor.addr(), "{ mode = \"transaction\", size = 1 }", "").await;
        let mut c = Raw::tcp(gw.addr("pg")).await;
        let mark = common::audit_mark(&gw);
        let reply = c.login("bob", "appdb", &token).await;
        let (code, message) = first_error(&reply).unwrap_or_else(|| {
            panic!("{trick:?}: the client got a session from an impostor: {reply:?}")
        });
        assert_eq!(code, "08004", "{trick:?}: {message}");
        assert!(message.contains(why), "{trick:?}: {message}");
        assert!(c.is_closed().await, "{trick:?}");
        // Nothing of the password left the gateway: no cleartext, no md5 answer, no SCRAM
        // proof beyond the one a forger cannot use without the salted password anyway.
        assert!(
            !impostor.received(BACKEND_PASSWORD.as_bytes()),
            "{trick:?}: the impostor got the password"
        );
        if trick == Trick::Md5 {
            assert!(
                impostor.seen().iter().all(|s| s.auth_messages.is_empty()),
                "{trick:?}: the impostor got an md5 answer: {:?}",
                impostor.seen()
            );
        }
        assert!(
            impostor.queries().is_empty(),
            "{trick:?}: the impostor got queries: {:?}",
            impostor.queries()
        );
        let line = common::wait_for_audit(&gw, mark, "\"event\":\"backend.untrusted\"").await;
        assert!(line.contains("\"user\":\"bob\""), "{trick:?}: {line}");
        assert!(
            gw.metric("sumun_pg_backend_logins_refused_total") >= 1.0,
            "{trick:?}:\n{}",
            gw.metrics()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_and_trust_servers_are_used_only_where_the_target_group_allows_them() {
    for (trick, allow) in [(Trick::Md5, "md5"), (Trick::Trust, "none")] {
        let impostor = Impostor::start(trick).await.expect("impostor");
        let (gw, token) = gateway(
            impostor.addr(),
            "{ mode = \"transaction\", size = 1 }",
            &format!("backend_auth = [\"scram-sha-256\", \"{allow}\"]"),
        )
        .await;
        let mut c = logged_in(&gw, &token, &[]).await;
        assert_eq!(
            c.query("select 1").await,
            Ok(vec!["impostor".to_string()]),
            "{trick:?}"
        );
        // md5 sends a salted hash, never the password itself.
        assert!(!impostor.received(BACKEND_PASSWORD.as_bytes()), "{trick:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_server_still_logs_in_with_scram_and_proves_itself() {
    let pg = start_pg(&[]).await;
    let (gw, token) = gateway(pg.addr(), "{ mode = \"transaction\", size = 1 }", "").await;
    let mut c = logged_in(&gw, &token, &[]).await;
    assert_eq!(
        c.query("select current_user").await,
        Ok(vec!["app".to_string()])
    );
    assert_eq!(gw.metric("sumun_pg_backend_logins_refused_total"), 0.0);
}

// ---------------------------------------------------------------------------------------------
// No session state of one client reaches the next

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_startup_parameters_never_reach_the_next_client_of_its_server() {
    let pg = start_pg(&[]).await;
    pg.psql("CREATE SCHEMA tenant_a AUTHORIZATION app")
        .expect("schema");
    let (gw, token) = gateway(pg.addr(), "{ mode = \"transaction\", size = 1 }", "").await;
    let show = "select current_setting('search_path') || ' ' || current_setting('statement_timeout') || ' ' || current_setting('application_name') || ' ' || current_setting('DateStyle')";

    let mut a = logged_in(
        &gw,
        &token,
        &[
            (
                "options",
                "-c search_path=tenant_a -c statement_timeout=1234",
            ),
            ("application_name", "client-a"),
            ("DateStyle", "German"),
        ],
    )
    .await;
    assert_eq!(
        a.query(show).await,
        Ok(vec!["tenant_a 1234ms client-a German, DMY".to_string()])
    );
    let pid_a = a.query("select pg_backend_pid()").await.expect("pid");

    // B shares A's only server connection and set nothing: the server's defaults.
    let mut b = logged_in(&gw, &token, &[]).await;
    assert_eq!(
        b.query("select pg_backend_pid()").await.expect("pid"),
        pid_a,
        "B must be on A's server for this test to mean anything"
    );
    assert_eq!(
        b.query(show).await,
        Ok(vec!["\"$user\", public 0  ISO, MDY".to_string()])
    );

    // A gets its own values back on the same server; a third client with one of them keeps
    // only that one.
    assert_eq!(
        a.query(show).await,
        Ok(vec!["tenant_a 1234ms client-a German, DMY".to_string()])
    );
    let mut c = logged_in(&gw, &token, &[("options", "-c statement_timeout=99")]).await;
    assert_eq!(
        c.query(show).await,
        Ok(vec!["\"$user\", public 99ms  ISO, MDY".to_string()])
    );
    assert_eq!(
        c.query("select pg_backend_pid()").await.expect("pid"),
        pid_a
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_value_cannot_inject_sql_when_the_server_reads_backslashes_as_escapes() {
    let pg = start_pg(&[("standard_conforming_strings", "off")]).await;
    let (gw, token) = gateway(pg.addr(), "{ mode = \"transaction\", size = 1 }", "").await;
    let evil = "x\\';create table pwned();--";
    let mut c = logged_in(&gw, &token, &[("application_name", evil)]).await;
    assert_eq!(
        c.query("select current_setting('application_name')").await,
        Ok(vec![evil.to_string()])
    );
    let found = pg
        .psql_as(
            "postgres",
            pg.superuser_password(),
            "appdb",
            "select count(*) from pg_class where relname = 'pwned'",
        )
        .expect("psql");
    assert_eq!(found.trim(), "0", "the parameter's value ran as SQL");
}

// ---------------------------------------------------------------------------------------------
// Shared prepared statements are told apart by their whole text

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_whose_fnv_hashes_collide_stay_two_statements() {
    // FNV-1a 64 of "<text>\0\0\0" (text, NUL, no parameter types) is 0x03ea261316d19997 for
    // both (found with a distinguished-point collision search).
    let first = "select '9a9198822a2c9bdf'";
    let second = "select '2bea0b6388945492'";
    let pg = start_pg(&[]).await;
    let (gw, token) = gateway(pg.addr(), "{ mode = \"transaction\", size = 1 }", "").await;

    let mut attacker = logged_in(&gw, &token, &[]).await;
    attacker
        .send(&[(b'P', &parse_body("mine", first)), (b'S', b"")])
        .await;
    assert_eq!(tags(&attacker.until_ready().await), "1Z");

    let mut victim = logged_in(&gw, &token, &[]).await;
    victim
        .send(&[(b'P', &parse_body("theirs", second)), (b'S', b"")])
        .await;
    assert_eq!(tags(&victim.until_ready().await), "1Z");
    let reply = victim.execute("theirs").await;
    assert_eq!(
        common::data_rows(&reply, "NULL"),
        vec!["2bea0b6388945492".to_string()],
        "{reply:?}"
    );
    let reply = attacker.execute("mine").await;
    assert_eq!(
        common::data_rows(&reply, "NULL"),
        vec!["9a9198822a2c9bdf".to_string()]
    );
    let _ = bind_body;
}

// ---------------------------------------------------------------------------------------------
// Bounded buffers when the server dies mid-upload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_server_dies_mid_upload_is_told_at_once_and_closed() {
    let pg = start_pg(&[]).await;
    let (gw, token) = gateway(pg.addr(), "{ mode = \"transaction\", size = 1 }", "").await;
    let mut c = logged_in(&gw, &token, &[]).await;

    // Parse, then a Bind whose one parameter is 4 MiB: larger than the gateway holds, so it
    // streams to the server. Only its first 512 KiB are sent before the server dies.
    let value = vec![b'a'; 4 << 20];
    let mut bind = vec![0u8]; // unnamed portal
    bind.push(0); // unnamed statement
    bind.extend_from_slice(&0u16.to_be_bytes()); // no format codes
    bind.extend_from_slice(&1u16.to_be_bytes()); // one parameter
    bind.extend_from_slice(&(value.len() as u32).to_be_bytes());
    bind.extend_from_slice(&value);
    bind.extend_from_slice(&0u16.to_be_bytes()); // no result formats
    let mut w = sumun_wire::postgres::Writer::new();
    w.raw(b'P', &parse_body("", "select length($1::text)"));
    w.raw(b'B', &bind);
    w.raw(b'E', b"\0\0\0\0\0");
    w.raw(b'S', b"");
    let bytes = w.buf;
    let cut = bytes.len() / 8;
    c.write(&bytes[..cut]).await;
    assert!(
        common::eventually(Duration::from_secs(10), || {
            pg.psql_as(
                "postgres",
                pg.superuser_password(),
                "appdb",
                "select count(*) from pg_stat_activity where usename = 'app' and state = 'active'",
            )
            .is_ok_and(|n| n.trim() == "1")
        })
        .await,
        "the upload never reached the server"
    );
    pg.psql("select pg_terminate_backend(pid) from pg_stat_activity where usename = 'app'")
        .expect("terminate");
    // The gateway lets its broken connection go (the pool is empty again)...
    assert!(
        common::eventually(Duration::from_secs(10), || {
            let m = gw.metrics();
            m.lines()
                .filter(|l| l.starts_with("sumun_pool_connections{"))
                .all(|l| l.ends_with(" 0"))
        })
        .await,
        "{}",
        gw.metrics()
    );
    // ...and the client, mid-upload, is told at once in the server's own words (57P01, as a
    // direct client would be), and its connection closes: nothing of its upload is held.
    let reply = tokio::time::timeout(Duration::from_secs(20), c.until_ready())
        .await
        .expect("the client never got an answer");
    // (ParseComplete came before the server died.)
    assert_eq!(tags(&reply), "1E", "{reply:?}");
    let (code, message) = first_error(&reply).expect("an error");
    assert_eq!(code, "57P01", "{message}");
    assert!(c.is_closed().await);
}

// ---------------------------------------------------------------------------------------------
// Pools and metric series made from names go away

fn pool_series(gw: &TestGateway, needle: &str) -> usize {
    gw.metrics()
        .lines()
        .filter(|l| l.starts_with("sumun_pool_size{") && l.contains(needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_for_names_that_lead_nowhere_and_for_removed_listeners_are_reaped() {
    let pg = start_pg(&[]).await;
    let (gw, token) = gateway(pg.addr(), "{ mode = \"transaction\", size = 2 }", "").await;
    // Bob may name any database (no `databases` list): each made-up name made a pool.
    for i in 0..20 {
        let mut c = Raw::tcp(gw.addr("pg")).await;
        let reply = c.login("bob", &format!("nope_{i}"), &token).await;
        assert_eq!(
            first_error(&reply).map(|e| e.0).as_deref(),
            Some("3D000"),
            "{reply:?}"
        );
    }
    assert!(
        common::eventually(Duration::from_secs(10), || pool_series(
            &gw,
            "database=\"nope_"
        ) == 0)
        .await,
        "pools of databases that do not exist stay:\n{}",
        gw.metrics()
    );

    // A real one stays while it has connections...
    let mut c = logged_in(&gw, &token, &[]).await;
    assert_eq!(c.query("select 1").await, Ok(vec!["1".to_string()]));
    drop(c);
    assert_eq!(pool_series(&gw, "database=\"appdb\""), 1);
    // ...and goes with its listener: its idle server connections are closed, then the pool.
    let toml = std::fs::read_to_string(&gw.config_path).expect("config");
    let without = toml.replace("name = \"pg\"\nbind", "name = \"pg2\"\nbind");
    gw.reload(&without).await.expect("reload");
    assert!(
        common::eventually(Duration::from_secs(10), || pool_series(
            &gw,
            "listener=\"pg\""
        ) == 0)
        .await,
        "{}",
        gw.metrics()
    );
    assert!(
        common::eventually(Duration::from_secs(10), || {
            pg.psql("select count(*) from pg_stat_activity where usename = 'app'")
                .is_ok_and(|n| n.trim() == "0")
        })
        .await,
        "the removed listener's server connections stay open"
    );
}
