//! COPY in both directions under concurrency, through plain and TLS listeners in both pool
//! modes: many tokio-postgres clients at once, each starting with a COPY TO STDOUT right after
//! its login and going on with COPY FROM STDIN and more COPY out, read fast, slowly, in bursts
//! or with a long stall. Every client must finish within a generous deadline (a hang is the
//! failure this guards against) with every byte it was owed, every row it sent must be on the
//! server, and no pool slot may be left held once the clients are done.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{TestDir, TestGateway};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use sumun_testkit::{PgOptions, Postgres};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::Socket;

const BACKEND_PASSWORD: &str = "backend-Secret-1";
const AUDIENCE: &str = "sumun-copy";
/// Long enough for every client of a run on a loaded 2-core machine; a hang never ends.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Set-up

/// One `[[listeners]]` entry of the gateway under test.
struct Listener {
    name: &'static str,
    tls: bool,
    mode: &'static str,
    size: u32,
}

struct Setup {
    _pg: Postgres,
    gw: TestGateway,
    token: String,
    tls: Arc<rustls::ClientConfig>,
}

async fn setup(listeners: &[Listener]) -> Setup {
    let pg = Postgres::start_async(PgOptions {
        password_auth: true,
        users: vec![("app".into(), BACKEND_PASSWORD.into())],
        databases: vec!["appdb".into()],
        ..PgOptions::default()
    })
    .await
    .expect("start postgres");
    pg.psql("ALTER DATABASE appdb OWNER TO app").expect("owner");
    let dir = TestDir::new("pg-copy");
    let ca = common::dev_certs(&dir.0);
    let tls = common::client_config(&ca, &[&rustls::version::TLS13], None);
    let vault = common::backend_vault(&dir, BACKEND_PASSWORD);
    let token = common::token(&vault, "bob", AUDIENCE);
    drop(vault);
    let mut toml = format!(
        r#"
[gateway]
name = "{AUDIENCE}"
[vault]
dir = "{{dir}}/vault"
key_file = "{{dir}}/master.key"
[tls.default]
cert = "{{dir}}/certs/server.pem"
key = "{{dir}}/certs/server-key.pem"
[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.0/8" }}]
[[target_groups]]
name = "pg"
health_check = {{ enabled = false }}
targets = [{{ address = "{}" }}]
[[users]]
name = "bob"
auth = ["token"]
backend_credential = "pg/app"
"#,
        pg.addr()
    );
    for l in listeners {
        let tls = if l.tls {
            "tls = \"required\"\ntls_config = \"default\""
        } else {
            "tls = \"off\""
        };
        toml.push_str(&format!(
            "[[listeners]]\nname = \"{}\"\nbind = \"127.0.0.1:0\"\nprotocol = \"postgres\"\n\
             target_group = \"pg\"\nsecurity_groups = [\"local\"]\n{tls}\n\
             pool = {{ mode = \"{}\", size = {}, checkout_timeout = \"30s\" }}\n",
            l.name, l.mode, l.size
        ));
    }
    let gw = TestGateway::start_in(dir, &toml).await.expect("gateway");
    let s = Setup {
        _pg: pg,
        gw,
        token,
        tls,
    };
    let first = &listeners[0];
    let c = s.connect(first.name, first.tls).await.expect("connect");
    c.batch_execute("create table items (client int, n int, pad text)")
        .await
        .expect("create table");
    s
}

impl Setup {
    /// A tokio-postgres client through listener `name` (TLS with `sslmode=require` when `tls`).
    async fn connect(&self, name: &str, tls: bool) -> Result<tokio_postgres::Client, String> {
        let addr = self.gw.addr(name);
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(addr.port())
            .user("bob")
            .dbname("appdb")
            .password(self.token.clone())
            .connect_timeout(Duration::from_secs(30));
        let client = if tls {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, connection) = cfg
                .connect(Rustls(self.tls.clone()))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            tokio::spawn(connection);
            client
        } else {
            let (client, connection) = cfg
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            tokio::spawn(connection);
            client
        };
        Ok(client)
    }

    /// Connections of listener `name`'s pools in `state` (`active` or `idle`).
    fn pool(&self, name: &str, state: &str) -> f64 {
        let needle = format!("listener=\"{name}\"");
        let state = format!("state=\"{state}\"");
        self.gw
            .metrics()
            .lines()
            .filter(|l| {
                l.starts_with("sumun_pool_connections{")
                    && l.contains(&needle)
                    && l.contains(&state)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn assert_pool_released(&self, name: &str) {
        assert!(
            common::eventually(Duration::from_secs(10), || self.pool(name, "active") == 0.0).await,
            "listener {name}: a pool slot is still held after every client finished\n{}",
            self.gw.metrics()
        );
    }
}

// tokio-postgres speaks TLS through whatever connector it is given: this one is rustls.

#[derive(Clone)]
struct Rustls(Arc<rustls::ClientConfig>);

struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl MakeTlsConnect<Socket> for Rustls {
    type Stream = RustlsStream;
    type TlsConnect = Rustls;
    type Error = std::io::Error;
    fn make_tls_connect(&mut self, _domain: &str) -> std::io::Result<Rustls> {
        Ok(self.clone())
    }
}

impl TlsConnect<Socket> for Rustls {
    type Stream = RustlsStream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<RustlsStream>> + Send>>;
    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let name = ServerName::try_from("localhost").expect("name");
            let tls = tokio_rustls::TlsConnector::from(self.0)
                .connect(name, socket)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

impl tokio_postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// The workload

/// How a client reads a COPY TO STDOUT and paces a COPY FROM STDIN.
#[derive(Clone, Copy, Debug)]
enum Pace {
    Fast,
    /// Slower than the gateway can send: the socket to the client stays full to the end,
    /// the case in which TLS bytes used to be left behind.
    Slow,
    /// Hundreds of rows at once, then a pause.
    Bursty,
    /// One long stop half-way through.
    Stalled,
}

#[derive(Clone, Debug)]
struct Round {
    out_rows: u32,
    out_width: u32,
    in_rows: u32,
    in_width: u32,
    /// COPY FROM STDIN before the COPY TO STDOUT.
    in_first: bool,
    /// Inside BEGIN ... COMMIT (a transaction-mode client keeps its server throughout).
    in_tx: bool,
}

#[derive(Clone, Debug)]
struct Plan {
    client: u32,
    pace: Pace,
    rounds: Vec<Round>,
}

/// `count` clients, half of them slow readers. Every client's first round reads the issue's
/// 10 MB COPY right after its login, and when `heavy` every round of a slow reader does.
fn plans(rng: &mut fastrand::Rng, first_client: u32, count: u32, heavy: bool) -> Vec<Plan> {
    let paces = [
        Pace::Slow,
        Pace::Fast,
        Pace::Slow,
        Pace::Bursty,
        Pace::Slow,
        Pace::Stalled,
    ];
    (0..count)
        .map(|i| {
            let pace = paces[i as usize % paces.len()];
            let rounds = (0..rng.u32(2..=3))
                .map(|r| {
                    let big = r == 0 || (heavy && matches!(pace, Pace::Slow));
                    Round {
                        out_rows: if big { 1024 } else { rng.u32(1..=1024) },
                        out_width: if big {
                            10240
                        } else {
                            [0, 100, 2000, 10240][rng.usize(..4)]
                        },
                        in_rows: rng.u32(0..=3000),
                        in_width: [0, 10, 500, 5000][rng.usize(..4)],
                        in_first: r > 0 && rng.bool(),
                        in_tx: rng.bool(),
                    }
                })
                .collect();
            Plan {
                client: first_client + i,
                pace,
                rounds,
            }
        })
        .collect()
}

/// The bytes of `copy (select g, repeat('x', width) from generate_series(1, rows) g) to
/// stdout`: each line is the number, a tab, the padding and a newline.
fn copy_out_bytes(rows: u32, width: u32) -> u64 {
    (1..=rows as u64)
        .map(|g| g.to_string().len() as u64 + 1 + width as u64 + 1)
        .sum()
}

/// The pause after item `done` (1-based) of `total`: after every `slow`-th, every
/// `burst`-th, or once half-way.
async fn pause(pace: Pace, done: u32, total: u32, slow: u32, burst: u32) {
    let ms = match pace {
        Pace::Fast => 0,
        Pace::Slow if done.is_multiple_of(slow) => 1,
        Pace::Bursty if done.is_multiple_of(burst) => 80,
        Pace::Stalled if done == total / 2 => 1500,
        _ => 0,
    };
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

async fn copy_out(
    c: &tokio_postgres::Client,
    pace: Pace,
    rows: u32,
    width: u32,
) -> Result<u64, String> {
    let sql = format!(
        "copy (select g, repeat('x', {width}) from generate_series(1, {rows}) g) to stdout"
    );
    let stream = c.copy_out(&sql).await.map_err(|e| format!("{sql}: {e}"))?;
    let mut stream = std::pin::pin!(stream);
    let (mut bytes, mut n) = (0u64, 0u32);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading {sql}: {e}"))?;
        bytes += chunk.len() as u64;
        n += 1;
        pause(pace, n, rows, 2, 256).await;
    }
    Ok(bytes)
}

/// `rows` rows of this client into `items`, sent in 32 KiB chunks; the rows the server
/// says it took.
async fn copy_in(
    c: &tokio_postgres::Client,
    client: u32,
    pace: Pace,
    rows: u32,
    width: u32,
) -> Result<u64, String> {
    let sink = c
        .copy_in("copy items (client, n, pad) from stdin")
        .await
        .map_err(|e| format!("copy in: {e}"))?;
    let mut sink = std::pin::pin!(sink);
    let pad = "y".repeat(width as usize);
    let chunks = (rows as usize * (width as usize + 12)).div_ceil(32 * 1024) as u32;
    let (mut chunk, mut sent) = (String::new(), 0u32);
    for n in 1..=rows {
        chunk.push_str(&format!("{client}\t{n}\t{pad}\n"));
        if chunk.len() >= 32 * 1024 || n == rows {
            sink.send(Bytes::from(std::mem::take(&mut chunk)))
                .await
                .map_err(|e| format!("copy in, sending: {e}"))?;
            sent += 1;
            pause(pace, sent, chunks, 1, 32).await;
        }
    }
    sink.as_mut()
        .finish()
        .await
        .map_err(|e| format!("copy in, finishing: {e}"))
}

/// One client's plan; `stage` says where it is, for the report of a client that hangs. The
/// client is returned still connected.
async fn run_plan(
    setup: Arc<Setup>,
    listener: &'static str,
    tls: bool,
    plan: Plan,
    stage: Arc<Mutex<String>>,
) -> Result<tokio_postgres::Client, String> {
    let at = |what: String| *stage.lock().expect("stage") = what;
    at("login".into());
    let c = setup.connect(listener, tls).await?;
    let (mut want_rows, mut want_pad) = (0u64, 0u64);
    for (i, r) in plan.rounds.iter().enumerate() {
        if r.in_tx {
            at(format!("round {i}: begin"));
            c.batch_execute("begin").await.map_err(|e| e.to_string())?;
        }
        for step in 0..2 {
            if (step == 0) == r.in_first {
                at(format!("round {i}: copy in {r:?}"));
                let n = copy_in(&c, plan.client, plan.pace, r.in_rows, r.in_width).await?;
                if n != r.in_rows as u64 {
                    return Err(format!(
                        "round {i}: COPY in took {n} rows, not {}",
                        r.in_rows
                    ));
                }
                want_rows += r.in_rows as u64;
                want_pad += r.in_rows as u64 * r.in_width as u64;
            } else {
                at(format!("round {i}: copy out {r:?}"));
                let got = copy_out(&c, plan.pace, r.out_rows, r.out_width).await?;
                let want = copy_out_bytes(r.out_rows, r.out_width);
                if got != want {
                    return Err(format!("round {i}: COPY out gave {got} bytes, not {want}"));
                }
            }
        }
        if r.in_tx {
            at(format!("round {i}: commit"));
            c.batch_execute("commit").await.map_err(|e| e.to_string())?;
        }
    }
    at("count".into());
    let row = c
        .query_one(
            "select count(*)::int8, coalesce(sum(length(pad)), 0)::int8 from items where client = $1",
            &[&(plan.client as i32)],
        )
        .await
        .map_err(|e| e.to_string())?;
    let (rows, pad): (i64, i64) = (row.get(0), row.get(1));
    if (rows as u64, pad as u64) != (want_rows, want_pad) {
        return Err(format!(
            "the server holds {rows} rows ({pad} bytes of padding) of this client, not {want_rows} ({want_pad})"
        ));
    }
    at("done".into());
    Ok(c)
}

/// Run every plan on `listener` at once; each must be done within `DEADLINE`. The clients,
/// still connected.
async fn run_all(
    setup: &Arc<Setup>,
    listener: &'static str,
    tls: bool,
    plans: Vec<Plan>,
) -> Vec<tokio_postgres::Client> {
    let mut tasks = Vec::new();
    for plan in plans {
        let stage = Arc::new(Mutex::new(String::new()));
        let what = format!("{listener}: client {} ({:?})", plan.client, plan.pace);
        let task = tokio::spawn(tokio::time::timeout(
            DEADLINE,
            run_plan(setup.clone(), listener, tls, plan, stage.clone()),
        ));
        tasks.push((what, stage, task));
    }
    let (mut clients, mut failures) = (Vec::new(), Vec::new());
    for (what, stage, task) in tasks {
        let stage = || stage.lock().expect("stage").clone();
        match task.await.expect("client task") {
            Ok(Ok(c)) => clients.push(c),
            Ok(Err(e)) => failures.push(format!("{what} failed at {}: {e}", stage())),
            Err(_) => failures.push(format!("{what} hung for {DEADLINE:?} at {}", stage())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    clients
}

fn seed() -> u64 {
    let seed = std::env::var("SUMUN_COPY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("SUMUN_COPY_SEED={seed}");
    seed
}

/// 16 session-mode clients (a pool of 20) and 8 transaction-mode ones (a pool of 4) at once.
async fn concurrent_copies(tls: bool) {
    let (session, transaction) = if tls {
        ("tls_session", "tls_transaction")
    } else {
        ("plain_session", "plain_transaction")
    };
    let setup = Arc::new(
        setup(&[
            Listener {
                name: session,
                tls,
                mode: "session",
                size: 20,
            },
            Listener {
                name: transaction,
                tls,
                mode: "transaction",
                size: 4,
            },
        ])
        .await,
    );
    let mut rng = fastrand::Rng::with_seed(seed());
    let session_plans = plans(&mut rng, 0, 16, true);
    let transaction_plans = plans(&mut rng, 100, 8, true);
    let (session_clients, transaction_clients) = tokio::join!(
        run_all(&setup, session, tls, session_plans),
        run_all(&setup, transaction, tls, transaction_plans),
    );
    // Idle between transactions, transaction-mode clients hold no server; session-mode ones
    // hold theirs until they leave.
    setup.assert_pool_released(transaction).await;
    assert_eq!(
        setup.pool(session, "active"),
        16.0,
        "{}",
        setup.gw.metrics()
    );
    drop(session_clients);
    drop(transaction_clients);
    setup.assert_pool_released(session).await;
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copy_out_and_in_finish_over_tls_in_both_pool_modes() {
    concurrent_copies(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copy_out_and_in_finish_over_plain_connections_in_both_pool_modes() {
    concurrent_copies(false).await;
}

/// The issue's reproducer, made harsher: many clients read the 10 MB COPY over TLS, again and
/// again, each slower than the gateway can send, so the socket to it is full when the last
/// bytes are written. Those used to stay in rustls' buffer, a few clients in each run never
/// got the end of the COPY, and their servers sat idle in transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_of_a_large_copy_over_tls_get_all_of_it() {
    let setup = Arc::new(
        setup(&[Listener {
            name: "tls",
            tls: true,
            mode: "session",
            size: 20,
        }])
        .await,
    );
    let big = Round {
        out_rows: 1024,
        out_width: 10240,
        in_rows: 0,
        in_width: 0,
        in_first: false,
        in_tx: true,
    };
    let plans = (0..16)
        .map(|client| Plan {
            client,
            pace: Pace::Slow,
            rounds: vec![big.clone(); 3],
        })
        .collect();
    drop(run_all(&setup, "tls", true, plans).await);
    setup.assert_pool_released("tls").await;
}

/// A transaction-mode client that stops reading its COPY in the middle of a transaction holds
/// its one server and no more: the others go on through the rest of the pool, and it finishes
/// with every byte once it reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_copy_reader_in_a_transaction_holds_only_its_own_server() {
    let setup = Arc::new(
        setup(&[Listener {
            name: "tx",
            tls: true,
            mode: "transaction",
            size: 2,
        }])
        .await,
    );
    let stalled = setup.connect("tx", true).await.expect("connect");
    stalled.batch_execute("begin").await.expect("begin");
    let sql = "copy (select g, repeat('x', 10240) from generate_series(1, 1024) g) to stdout";
    let stream = stalled.copy_out(sql).await.expect("copy out");
    let mut stream = std::pin::pin!(stream);
    let mut bytes = 0u64;
    for _ in 0..10 {
        let chunk = stream.next().await.expect("a row").expect("row");
        bytes += chunk.len() as u64;
    }
    // It stops reading here: the gateway's writes to it block, and its server waits.
    assert_eq!(setup.pool("tx", "active"), 1.0, "{}", setup.gw.metrics());
    let mut rng = fastrand::Rng::with_seed(seed());
    let others = run_all(&setup, "tx", true, plans(&mut rng, 200, 6, false)).await;
    // A client sees its last ReadyForQuery a moment before the gateway hands its server back.
    assert!(
        common::eventually(Duration::from_secs(5), || setup.pool("tx", "active") == 1.0).await,
        "only the stalled client holds a server, not the idle others\n{}",
        setup.gw.metrics()
    );
    drop(others);
    let rest = tokio::time::timeout(DEADLINE, async {
        while let Some(chunk) = stream.next().await {
            bytes += chunk.expect("row").len() as u64;
        }
        stalled.batch_execute("commit").await.expect("commit");
    })
    .await;
    assert!(
        rest.is_ok(),
        "the stalled client never got the end of its COPY"
    );
    assert_eq!(bytes, copy_out_bytes(1024, 10240));
    setup.assert_pool_released("tx").await;
}
