//! A primary and a streaming replica behind one postgres listener: roles learned by health
//! checks, reads split to the replica (proven by `pg_is_in_recovery()` where each statement
//! ran), and a failover — primary killed, replica promoted — that idle clients ride through on
//! the same connection while a client mid-transaction is told (FATAL) and disconnected, as directly.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{dev_certs, TestDir, TestGateway};
use sumun_testkit::{PgOptions, Postgres};
use sumun_wire::postgres::{self as pg, Writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BACKEND_PASSWORD: &str = "backend-Secret-1";

struct Ha {
    primary: Postgres,
    /// Shared with the threads that promote it and write to it directly during a failover.
    replica: Arc<Postgres>,
    gw: TestGateway,
    token: String,
}

/// Wait until the health checks have told the primary from the replica.
async fn roles_learned(ha: &Ha) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut roles: Vec<&str> = ha.gw.gateway.targets().iter().map(|t| t.role).collect();
        roles.sort_unstable();
        if roles == ["primary", "replica"] {
            return;
        }
        assert!(Instant::now() < deadline, "roles never learned: {roles:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `interval`: the health checks' (the split tests probe often to learn lag; the failover test
/// keeps the default 10 s, so a prompt failover shows the gateway does not wait for it).
async fn setup(split: bool, interval: &str) -> Ha {
    let primary = Postgres::start_with(PgOptions {
        password_auth: true,
        users: vec![("app".into(), BACKEND_PASSWORD.into())],
        databases: vec!["appdb".into()],
        ..PgOptions::default()
    })
    .expect("start primary");
    primary
        .psql("ALTER DATABASE appdb OWNER TO app")
        .expect("owner");
    let replica = Arc::new(primary.start_replica().expect("start replica"));
    let dir = TestDir::new("pg-ha");
    dev_certs(&dir.0);
    let vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    let token = common::token(&vault, "bob", "sumun-ha");
    drop(vault);
    let toml = format!(
        r#"
[gateway]
name = "sumun-ha"
[vault]
dir = "{{dir}}/vault"
key_file = "{{dir}}/master.key"
[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.0/8" }}]
[[listeners]]
name = "pg"
bind = "127.0.0.1:0"
protocol = "postgres"
tls = "off"
target_group = "pg"
security_groups = ["local"]
pool = {{ mode = "transaction", size = 4, checkout_timeout = "20s" }}
read_write_split = {split}
[[target_groups]]
name = "pg"
health_check = {{ protocol = "postgres", credential = "pg/app", database = "appdb", interval = "{interval}", timeout = "400ms", healthy_threshold = 2, unhealthy_threshold = 2 }}
targets = [{{ address = "{p}" }}, {{ address = "{r}" }}]
[[users]]
name = "bob"
auth = ["token"]
backend_credential = "pg/app"
[audit]
path = "{{dir}}/audit.jsonl"
"#,
        p = primary.addr(),
        r = replica.addr(),
    );
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    Ha {
        primary,
        replica,
        gw,
        token,
    }
}

/// A minimal client on one connection: startup, token as the cleartext password, simple
/// queries.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// What a simple query gave: rows (first column) or the first error's SQLSTATE.
#[derive(Debug, PartialEq)]
enum Answer {
    Rows(Vec<String>),
    Error(String),
}

impl Client {
    async fn connect(ha: &Ha) -> Client {
        let stream = TcpStream::connect(ha.gw.addr("pg")).await.expect("connect");
        let mut c = Client {
            stream,
            buf: Vec::new(),
        };
        let mut w = Writer::new();
        w.startup(&[("user", "bob"), ("database", "appdb")]);
        c.stream.write_all(&w.buf).await.expect("startup");
        loop {
            let (tag, body) = c.message().await;
            match tag {
                b'R' if body[..4] == [0, 0, 0, 3] => {
                    let mut w = Writer::new();
                    w.password(ha.token.as_bytes());
                    c.stream.write_all(&w.buf).await.expect("password");
                }
                b'E' => panic!("login refused: {:?}", pg::error_fields(&body)),
                b'Z' => return c,
                _ => {}
            }
        }
    }

    async fn message(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some((m, used)) = pg::message(&self.buf, 1 << 24).expect("framing") {
                let out = (m.tag, m.body.to_vec());
                self.buf.drain(..used);
                return out;
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(60), self.stream.read(&mut chunk))
                .await
                .expect("an answer within 60 s")
                .expect("read");
            assert!(n > 0, "gateway closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True when the gateway closed the connection (nothing more to read).
    async fn is_closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut chunk))
            .await
            .expect("the connection neither closed nor spoke within 30 s");
        self.buf.is_empty() && matches!(n, Ok(0) | Err(_))
    }

    async fn query(&mut self, sql: &str) -> Answer {
        let mut w = Writer::new();
        w.query(sql);
        self.stream.write_all(&w.buf).await.expect("query");
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.message().await;
            match tag {
                b'D' => {
                    let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
                    let v = if len < 0 {
                        "NULL".to_string()
                    } else {
                        String::from_utf8_lossy(&body[6..6 + len as usize]).into_owned()
                    };
                    rows.push(v);
                }
                b'E' if error.is_none() => error = Some(pg::error_fields(&body).code),
                b'Z' => {
                    return match error {
                        Some(code) => Answer::Error(code),
                        None => Answer::Rows(rows),
                    }
                }
                _ => {}
            }
        }
    }
}

fn rows(v: &[&str]) -> Answer {
    Answer::Rows(v.iter().map(|s| s.to_string()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_replica_and_writes_to_the_primary() {
    let ha = setup(true, "500ms").await;
    let mut c = Client::connect(&ha).await;
    roles_learned(&ha).await;
    assert_eq!(
        c.query("create table t (a int); create sequence s").await,
        rows(&[])
    );
    assert_eq!(
        c.query("insert into t values (1)").await,
        rows(&[]),
        "{}",
        ha.gw.audit_log()
    );
    // Autocommit reads: replica. An explicit read-only transaction: replica.
    assert_eq!(c.query("select pg_is_in_recovery()").await, rows(&["t"]));
    assert_eq!(
        c.query("begin read only; select pg_is_in_recovery(); commit")
            .await,
        rows(&["t"])
    );
    // A read-write transaction, and anything the analyzer cannot prove read-only: primary.
    assert_eq!(
        c.query("begin; select pg_is_in_recovery(); commit").await,
        rows(&["f"])
    );
    assert_eq!(c.query("select nextval('s')").await, rows(&["1"]));
    assert_eq!(
        c.query("select pg_is_in_recovery() from t for update")
            .await,
        rows(&["f"])
    );
    // Across statements of one transaction the server stays the same.
    assert_eq!(c.query("begin").await, rows(&[]));
    assert_eq!(c.query("select pg_is_in_recovery()").await, rows(&["f"]));
    assert_eq!(c.query("commit").await, rows(&[]));
    let _ = (&ha.primary, &ha.replica);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_split_everything_runs_on_the_primary() {
    let ha = setup(false, "500ms").await;
    let mut c = Client::connect(&ha).await;
    roles_learned(&ha).await;
    for _ in 0..10 {
        assert_eq!(c.query("select pg_is_in_recovery()").await, rows(&["f"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_keeps_idle_clients_and_fails_open_transactions_cleanly() {
    let mut ha = setup(false, "10s").await;
    let mut idle = Client::connect(&ha).await;
    let mut in_tx = Client::connect(&ha).await;
    roles_learned(&ha).await;
    assert_eq!(
        idle.query("create table t (a int); create table direct (a int)")
            .await,
        rows(&[])
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while ha
        .replica
        .psql_as(
            "postgres",
            ha.replica.superuser_password(),
            "appdb",
            "select count(*) from pg_class where relname in ('t', 'direct')",
        )
        .expect("replica")
        .trim()
        != "2"
    {
        assert!(Instant::now() < deadline, "tables never replicated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(in_tx.query("begin").await, rows(&[]));
    assert_eq!(in_tx.query("insert into t values (1)").await, rows(&[]));

    // The primary dies. At once, and side by side: the replica is promoted (as an operator or
    // an orchestrator would), a client connected directly reconnects to it every 50 ms until
    // a write goes through, and the idle gateway client sends its next write — before the
    // promotion, so the gateway has to hold it until a primary is there.
    let replica = ha.replica.clone();
    let killed = Instant::now();
    ha.primary.kill();
    let promote = {
        let replica = replica.clone();
        tokio::task::spawn_blocking(move || {
            replica.promote().expect("promote");
            killed.elapsed()
        })
    };
    let direct = {
        let port = replica.port();
        tokio::spawn(async move {
            let mut attempts = 0u32;
            loop {
                attempts += 1;
                // A fresh connection each time, as a client without a proxy must.
                let (done, _, err) = common::psql_appdb(
                    port,
                    "app",
                    &["insert into direct values (1)"],
                    &[("PGPASSWORD", BACKEND_PASSWORD)],
                )
                .await;
                if done {
                    return (killed.elapsed(), attempts);
                }
                assert!(killed.elapsed() < Duration::from_secs(30), "{err}");
                // The direct client's retry interval: part of what is measured, not a wait.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // The idle client's next write, on the same connection, succeeds on the new primary.
    assert_eq!(idle.query("insert into t values (2)").await, rows(&[]));
    let through_gateway = killed.elapsed();
    let promoted = promote.await.expect("promote task");
    let (direct, attempts) = direct.await.expect("direct task");
    println!(
        "failover: primary killed -> first successful write: through the gateway (same \
         connection) {:.3} s; direct client reconnecting to the new primary every 50 ms {:.3} s \
         ({attempts} attempts); promotion done at {:.3} s",
        through_gateway.as_secs_f64(),
        direct.as_secs_f64(),
        promoted.as_secs_f64()
    );
    assert_eq!(idle.query("select pg_is_in_recovery()").await, rows(&["f"]));

    // The client mid-transaction was told at once, as a direct client is: its server is gone
    // with its transaction (FATAL), and its connection closed, so it cannot run its next
    // statements outside the transaction it thinks it is in. A new connection goes on.
    let (tag, body) = in_tx.message().await;
    assert_eq!(tag, b'E');
    let f = pg::error_fields(&body);
    assert_eq!(f.severity, "FATAL", "{}", f.message);
    assert!(
        f.code == "08006" || f.code.starts_with("57P"),
        "{} {}",
        f.code,
        f.message
    );
    assert!(in_tx.is_closed().await);
    let mut again = Client::connect(&ha).await;
    assert_eq!(again.query("insert into t values (4)").await, rows(&[]));
    assert_eq!(
        idle.query("select string_agg(a::text, ',' order by a) from t")
            .await,
        rows(&["2,4"])
    );
    assert_eq!(
        idle.query("select count(*) from direct").await,
        rows(&["1"])
    );
}
