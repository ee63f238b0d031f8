//! A panic inside one connection ends that connection only, and leaves nothing behind: its
//! flow leaves the open flows (no interim records, `sumun_active_flows` back to 0) with its
//! final flow record written, its target's active count (what `least_conn` balances on) and its
//! pool slot are released, the panic is counted in `sumun_panics_total{listener}`, and the
//! gateway goes on serving. The panic is provoked through a test-only hook
//! (`Records::panic_on_query`) inside a real PostgreSQL session, once in a session-mode session
//! (the connection's first task, holding a server) and once in a transaction-mode session that
//! was parked and woken (a task spawned by the parking lot), both in an open transaction.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{eventually, TestDir, TestGateway};
use sumun_testkit::{PgOptions, Postgres};

const BACKEND_PASSWORD: &str = "backend-Secret-1";
const NAME: &str = "sumun-panic";
const MARKER: &str = "sumun-test-panic";
const WITHIN: Duration = Duration::from_secs(10);

async fn setup() -> (Postgres, TestGateway, String) {
    let pg = Postgres::start_with(PgOptions {
        password_auth: true,
        users: vec![("app".into(), BACKEND_PASSWORD.into())],
        databases: vec!["appdb".into()],
        ..PgOptions::default()
    })
    .expect("start postgres");
    let dir = TestDir::new("pg-panic");
    let vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    let token = common::token(&vault, "bob", NAME);
    drop(vault);
    let listener = |name: &str, mode: &str| {
        format!(
            r#"
[[listeners]]
name = "{name}"
bind = "127.0.0.1:0"
protocol = "postgres"
tls = "off"
target_group = "pg"
security_groups = ["local"]
pool = {{ mode = "{mode}", size = 1, checkout_timeout = "3s" }}
audit_queries = "full"
"#
        )
    };
    let toml = format!(
        r#"
[gateway]
name = "{NAME}"
[vault]
dir = "{{dir}}/vault"
key_file = "{{dir}}/master.key"
[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.0/8" }}]
{session}
{transaction}
[[target_groups]]
name = "pg"
algorithm = "least_conn"
health_check = {{ enabled = false }}
targets = [{{ address = "{addr}" }}]
[[users]]
name = "bob"
auth = ["token"]
backend_credential = "pg/app"
[audit]
path = "{{dir}}/audit.jsonl"
[flow_logs]
path = "{{dir}}/flows.log"
"#,
        session = listener("pgsess", "session"),
        transaction = listener("pgtx", "transaction"),
        addr = pg.addr()
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    (pg, gw, token)
}

async fn connect(addr: SocketAddr, token: &str) -> tokio_postgres::Client {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(addr.port())
        .user("bob")
        .dbname("appdb")
        .password(token)
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .expect("tokio-postgres connects through the gateway");
    tokio::spawn(connection);
    client
}

/// The open flows of `listener`, by client address.
fn open_flows(gw: &TestGateway, listener: &str) -> Vec<SocketAddr> {
    gw.gateway
        .shared()
        .records
        .active_flows()
        .iter()
        .filter(|f| &*f.listener == listener)
        .map(|f| f.client)
        .collect()
}

fn target_active(gw: &TestGateway) -> i64 {
    gw.gateway.targets().iter().map(|t| t.active_flows).sum()
}

/// Make a session of `listener` panic inside an open transaction, then check that everything
/// it held was released and that the listener still serves.
async fn panic_in_a_session(gw: &TestGateway, token: &str, listener: &str, park_first: bool) {
    let active = format!("sumun_active_flows{{listener=\"{listener}\"}}");
    let panics = format!("sumun_panics_total{{listener=\"{listener}\"}}");
    let client = connect(gw.addr(listener), token).await;
    if park_first {
        assert!(
            eventually(WITHIN, || gw.metric("sumun_parked_clients") == 1.0).await,
            "{listener}: the idle client never parked"
        );
    }
    client.simple_query("BEGIN").await.expect("begin");
    client.simple_query("SELECT 1").await.expect("select");
    let flows = open_flows(gw, listener);
    assert_eq!(flows.len(), 1, "{listener}: {flows:?}");
    let client_addr = flows[0];
    assert_eq!(gw.metric(&active), 1.0, "{listener}");
    assert_eq!(
        target_active(gw),
        1,
        "{listener}: attached in a transaction"
    );
    assert_eq!(gw.metric(&panics), 0.0, "{listener}");

    let err = client
        .simple_query(&format!("SELECT '{MARKER}'"))
        .await
        .expect_err("the connection ends with the panic");
    assert!(
        err.is_closed() || err.to_string().contains("closed"),
        "{err}"
    );

    assert!(
        eventually(WITHIN, || gw.metric(&panics) == 1.0).await,
        "{listener}: panic not counted:\n{}",
        gw.metrics()
    );
    assert!(
        eventually(WITHIN, || open_flows(gw, listener).is_empty()).await,
        "{listener}: the panicked connection's flow is still open"
    );
    assert_eq!(gw.metric(&active), 0.0, "{listener}: sumun_active_flows");
    assert_eq!(
        target_active(gw),
        0,
        "{listener}: the target's active count"
    );
    // Its flow record was written, with the client's address and port.
    let record = |log: &str| {
        log.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.len() == 14
                && f[2] == listener
                && f[3] == client_addr.ip().to_string()
                && f[5] == client_addr.port().to_string()
                && f[12] == "ACCEPT"
        })
    };
    assert!(
        eventually(WITHIN, || record(&gw.flow_log())).await,
        "{listener}: no flow record for {client_addr}:\n{}",
        gw.flow_log()
    );

    // The listener goes on serving, on the single pooled server slot the panicked session
    // held (a leaked slot would make this wait out the checkout timeout and fail).
    let next = connect(gw.addr(listener), token).await;
    let rows = next
        .simple_query("SELECT 41 + 1")
        .await
        .expect("a new client is served after the panic");
    let answer = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(answer.as_deref(), Some("42"), "{listener}");
    drop(next);
    assert!(
        eventually(WITHIN, || gw.metric(&active) == 0.0
            && target_active(gw) == 0)
        .await,
        "{listener}: counts after a normal close"
    );
    assert_eq!(gw.metric(&panics), 1.0, "{listener}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_connection_releases_its_flow_and_counters() {
    let (_pg, gw, token) = setup().await;
    gw.gateway.shared().records.panic_on_query(MARKER);
    // Session mode: the panic unwinds the connection's own task, which holds a server.
    panic_in_a_session(&gw, &token, "pgsess", false).await;
    // Transaction mode, parked and woken: the panic is in a task the parking lot spawned.
    panic_in_a_session(&gw, &token, "pgtx", true).await;
    assert!(gw.gateway.shared().records.active_flows().is_empty());
}
