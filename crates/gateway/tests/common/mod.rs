//! Shared test scaffolding: a gateway running in-process from a TOML config, a dev PKI, TLS
//! clients, and a client-side TLS tunnel so plaintext-only clients (psql 15, pgbench) can be
//! pointed through a `tls` listener the way stunnel users do.

#![allow(dead_code)]

pub mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sumun_gateway::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!(
            "sumun-gw-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("create test dir");
        TestDir(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gateway running in this process.
pub struct TestGateway {
    pub gateway: Arc<Gateway>,
    pub dir: TestDir,
    pub config_path: PathBuf,
}

impl TestGateway {
    /// Write `toml` (with `{dir}` replaced by the test directory) and start a gateway with it.
    pub async fn start(toml: &str) -> anyhow::Result<TestGateway> {
        let dir = TestDir::new("gw");
        Self::start_in(dir, toml).await
    }

    pub async fn start_in(dir: TestDir, toml: &str) -> anyhow::Result<TestGateway> {
        let config_path = dir.path("sumun.toml");
        std::fs::write(
            &config_path,
            toml.replace("{dir}", &dir.0.display().to_string()),
        )?;
        let config = sumun_config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let gateway = Gateway::new();
        gateway
            .apply(config)
            .await
            .map_err(|e| anyhow::anyhow!("apply: {e}"))?;
        Ok(TestGateway {
            gateway,
            dir,
            config_path,
        })
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.gateway
            .listener_addr(listener)
            .unwrap_or_else(|| panic!("no listener {listener}"))
    }

    /// Rewrite the config file and apply it.
    pub async fn reload(&self, toml: &str) -> anyhow::Result<()> {
        std::fs::write(
            &self.config_path,
            toml.replace("{dir}", &self.dir.0.display().to_string()),
        )?;
        let config = sumun_config::load(&self.config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        self.gateway
            .apply(config)
            .await
            .map_err(|e| anyhow::anyhow!("apply: {e}"))
    }

    pub fn flow_log(&self) -> String {
        self.gateway.shared().records.flush();
        std::fs::read_to_string(self.dir.path("flows.log")).unwrap_or_default()
    }

    pub fn audit_log(&self) -> String {
        self.gateway.shared().records.flush();
        std::fs::read_to_string(self.dir.path("audit.jsonl")).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        self.gateway.metrics_text()
    }

    /// The value of one metric line (exact name and labels), or 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }
}

pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().expect("metric value"))
        .unwrap_or(0.0)
}

/// Write a dev PKI into `dir/certs` and return the CA path.
pub fn dev_certs(dir: &Path) -> PathBuf {
    let pki = sumun_pki::DevPki::generate(&[], 30).expect("generate dev pki");
    pki.write(&dir.join("certs"), true).expect("write certs");
    dir.join("certs/ca.pem")
}

/// A rustls client config trusting `ca`, with the given protocol versions and groups.
pub fn client_config(
    ca: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
    groups: Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read ca") {
        roots.add(cert.expect("ca pem")).expect("add ca");
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(groups) = groups {
        provider.kx_groups = groups;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
}

/// A local plaintext port that forwards every connection over TLS to `target`.
pub async fn tls_tunnel(target: SocketAddr, ca: &Path) -> SocketAddr {
    let config = client_config(ca, &[&rustls::version::TLS13], None);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tunnel");
    let addr = listener.local_addr().expect("tunnel addr");
    tokio::spawn(async move {
        while let Ok((mut plain, _)) = listener.accept().await {
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = tls_connect(target, config).await {
                    let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
                }
            });
        }
    });
    addr
}

/// Connect from a chosen loopback source address (127.0.0.2, ...), to play other hosts.
pub async fn connect_from(source: &str, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().expect("source addr"))?;
    socket.connect(target).await
}

/// One Redis PING over `stream`; returns the reply line.
pub async fn redis_ping<S>(stream: &mut S) -> anyhow::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(b"PING\r\n").await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .context("PING timed out")??;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// Run a redis command over a fresh connection and return its reply as text.
pub async fn redis_cmd(addr: SocketAddr, cmd: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .context("redis reply timed out")??;
    Ok(String::from_utf8_lossy(&buf[..n]).to_string())
}

/// True when the peer closes the connection (EOF or reset) within `within`. Bytes it sends
/// first (a TLS alert, say) are read and ignored.
pub async fn closed_within<S>(stream: &mut S, within: Duration) -> bool
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Poll `check` every 50 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many whole lines the audit log holds now. Take one right before an action, and
/// [`wait_for_audit`] looks only at what was written after it.
pub fn audit_mark(gw: &TestGateway) -> usize {
    gw.audit_log().matches('\n').count()
}

/// Wait (up to 5 s) for an audit line written after `mark` that contains `needle`, and return
/// that line. Lines from before the mark never match, so a needle an earlier action already
/// wrote cannot make a check pass.
pub async fn wait_for_audit(gw: &TestGateway, mark: usize, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = gw.audit_log();
        if let Some(line) = log
            .split_inclusive('\n')
            .skip(mark)
            .find(|l| l.ends_with('\n') && l.contains(needle))
        {
            return line.trim_end().to_string();
        }
        if tokio::time::Instant::now() >= deadline {
            let since: String = log.split_inclusive('\n').skip(mark).collect();
            panic!("no audit line after line {mark} contains {needle}; since then:\n{since}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Poll the async `check` every 50 ms until it holds or `within` passes.
pub async fn eventually_async<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `sql` run on the PostgreSQL `pg` directly as its superuser (not through a gateway), with
/// an async psql so polling it does not hold up a runtime thread; stdout trimmed.
pub async fn server_sql(pg: &sumun_testkit::Postgres, sql: &str) -> String {
    let port = pg.port().to_string();
    let (ok, out, err) = run(
        "psql",
        &[
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ],
        &[
            ("PGPASSWORD", pg.superuser_password()),
            ("PGCONNECT_TIMEOUT", "5"),
            ("PGSSLMODE", "disable"),
        ],
    )
    .await;
    assert!(ok, "{sql}: {err}");
    out.trim().to_string()
}

/// Run a blocking command and return (success, stdout, stderr).
pub async fn run(cmd: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = tokio::process::Command::new(cmd);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `psql -X -At` against 127.0.0.1:`port` as `user` on database `appdb`, running each of
/// `commands` (one `-c` each, in one session) with `env` set (PGPASSWORD, PGSSLMODE...).
pub async fn psql_appdb(
    port: u16,
    user: &str,
    commands: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let port = port.to_string();
    let mut args = vec![
        "-X",
        "-At",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        user,
        "-d",
        "appdb",
    ];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    let mut env = env.to_vec();
    env.push(("PGCONNECT_TIMEOUT", "10"));
    run("psql", &args, &env).await
}

/// The backend password of role `app` in [`app_postgres`] and in [`backend_vault`]s made for it.
pub const APP_PASSWORD: &str = "backend-Secret-1";

/// A PostgreSQL that checks passwords (scram-sha-256 over TCP, or `host_auth`), with role `app`
/// (password [`APP_PASSWORD`]) owning database `appdb`, and the given server settings.
pub async fn app_postgres(
    host_auth: Option<&str>,
    settings: &[(&str, &str)],
) -> sumun_testkit::Postgres {
    let pg = sumun_testkit::Postgres::start_async(sumun_testkit::PgOptions {
        password_auth: true,
        host_auth: host_auth.map(str::to_string),
        users: vec![("app".into(), APP_PASSWORD.into())],
        databases: vec!["appdb".into()],
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..sumun_testkit::PgOptions::default()
    })
    .await
    .expect("start postgres");
    pg.psql("ALTER DATABASE appdb OWNER TO app").expect("owner");
    pg
}

/// A config for PostgreSQL tests: gateway `audience` (plus `gateway` keys), the vault of
/// [`backend_vault`], a plain-text postgres listener `pg` on a free port (plus `listener` keys)
/// in front of target group `pg` with one `target` and no health checks (plus `group` keys),
/// then `rest` (`[[users]]`, logs...). `{dir}` stays for [`TestGateway::start_in`] to fill.
pub fn pg_config(
    audience: &str,
    gateway: &str,
    listener: &str,
    target: SocketAddr,
    group: &str,
    rest: &str,
) -> String {
    format!(
        r#"
[gateway]
name = "{audience}"
{gateway}
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
target_group = "pg"
security_groups = ["local"]
tls = "off"
{listener}
[[target_groups]]
name = "pg"
health_check = {{ enabled = false }}
targets = [{{ address = "{target}" }}]
{group}
{rest}
"#
    )
}

/// A vault in `dir/vault` sealed by a key file `dir/master.key` (the paths the PostgreSQL test
/// configs name), holding backend secret `pg/app` (kind postgres, username `app`).
pub fn backend_vault(dir: &TestDir, password: &str) -> sumun_vault::Vault {
    vault_with_secret(dir, "pg/app", sumun_vault::SecretKind::Postgres, password)
}

/// A vault in `dir/vault` sealed by a key file `dir/master.key`, holding backend secret `name`
/// of `kind` for username `app` with `password`.
pub fn vault_with_secret(
    dir: &TestDir,
    name: &str,
    kind: sumun_vault::SecretKind,
    password: &str,
) -> sumun_vault::Vault {
    let key = sumun_vault::LocalMasterKey::generate().expect("key");
    key.write_key_file(&dir.path("master.key"))
        .expect("write key file");
    let mut vault =
        sumun_vault::Vault::init(&dir.path("vault"), Box::new(key), None).expect("init vault");
    vault
        .put(
            name,
            &sumun_vault::SecretBytes::from_slice(password.as_bytes()),
            sumun_vault::SecretMeta {
                kind: Some(kind),
                username: Some("app".into()),
                ..sumun_vault::SecretMeta::default()
            },
        )
        .expect("put backend secret");
    vault
}

/// A 15-minute token for `user` (any database) issued by `vault` for gateway `audience`.
pub fn token(vault: &sumun_vault::Vault, user: &str, audience: &str) -> String {
    vault
        .token_signer()
        .expect("signer")
        .issue(
            user,
            None,
            audience,
            sumun_vault::store::now_unix_secs(),
            900,
        )
        .expect("issue token")
        .expose_str()
        .expect("utf8")
        .to_string()
}

/// The rows of the DataRow messages among `messages` (tag, body), text columns joined with
/// `|`, a NULL column written as `null`.
pub fn data_rows(messages: &[(u8, Vec<u8>)], null: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, body)| {
            let n = u16::from_be_bytes([body[0], body[1]]) as usize;
            let mut at = 2;
            let mut cells = Vec::with_capacity(n);
            for _ in 0..n {
                let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
                at += 4;
                if len < 0 {
                    cells.push(null.to_string());
                } else {
                    let len = len as usize;
                    cells.push(String::from_utf8_lossy(&body[at..at + len]).into_owned());
                    at += len;
                }
            }
            cells.join("|")
        })
        .collect()
}

/// The gateway's PostgreSQL front end (its pools and clients).
pub fn pg_front_end(gw: &TestGateway) -> &sumun_gateway::postgres::PostgresFrontEnd {
    gw.gateway
        .shared()
        .front_ends
        .of::<sumun_gateway::postgres::PostgresFrontEnd>()
        .expect("the postgres front end is registered")
}
