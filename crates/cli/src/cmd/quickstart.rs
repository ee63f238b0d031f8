//! `sumun quickstart`: a working gateway in front of the local PostgreSQL, MariaDB and Redis
//! with one command. It writes a dev CA and server certificate, a master key and a vault, an
//! admin API token, and a commented config into the quickstart directory (reusing whatever is
//! already there, so edits survive), then serves it and prints a ready-to-paste client command
//! per backend — for PostgreSQL with a fresh token as the password — saying plainly which
//! backends are not reachable.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use sumun_config::Config;
use sumun_gateway::Gateway;

pub struct Setup {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub ca_path: PathBuf,
}

/// The backends quickstart fronts: (listener name, what it is, gateway port, backend address,
/// listener protocol).
const BACKENDS: [(&str, &str, u16, &str, &str); 3] = [
    ("postgres", "PostgreSQL", 6432, "127.0.0.1:5432", "postgres"),
    ("mariadb", "MariaDB/MySQL", 13306, "127.0.0.1:3306", "tls"),
    ("redis", "Redis", 16379, "127.0.0.1:6379", "tls"),
];

/// The user quickstart's PostgreSQL listener lets in (with a token or a password).
pub const PG_USER: &str = "quickstart";
/// The vault secret the gateway logs in to the local PostgreSQL with.
const PG_CREDENTIAL: &str = "pg/local";

const ADMIN: &str = "127.0.0.1:9900";
/// The admin API's bearer token, next to the config.
const ADMIN_TOKEN: &str = "admin.token";

pub fn prepare(dir: &Path) -> anyhow::Result<Setup> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let certs = dir.join("certs");
    let ca_path = certs.join("ca.pem");
    if !certs.join("server.pem").exists() {
        let pki =
            sumun_pki::DevPki::generate(&[], 90).context("cannot generate dev certificates")?;
        pki.write(&certs, true)
            .with_context(|| format!("cannot write certificates to {}", certs.display()))?;
    }
    let vault_dir = dir.join("vault");
    let key_file = dir.join("master.key");
    if !vault_dir.join(sumun_vault::store::STORE_FILE).exists() {
        init_vault(&vault_dir, &key_file)?;
    }
    let admin_token = dir.join(ADMIN_TOKEN);
    if !admin_token.exists() {
        write_admin_token(&admin_token)?;
    }
    let config_path = dir.join("sumun.toml");
    if !config_path.exists() {
        std::fs::write(&config_path, default_config())
            .with_context(|| format!("cannot write {}", config_path.display()))?;
    }
    Ok(Setup {
        dir,
        config_path,
        ca_path,
    })
}

/// 32 random bytes as hex, in a file only its owner can read (the gateway refuses any other).
fn write_admin_token(path: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let bytes = zeroize::Zeroizing::new(
        sumun_vault::crypto::random_bytes(32).context("cannot generate the admin token")?,
    );
    let mut hex = zeroize::Zeroizing::new(String::with_capacity(65));
    for b in bytes.iter() {
        let _ = write!(hex, "{b:02x}");
    }
    hex.push('\n');
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(hex.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A vault with the backend credential for the local PostgreSQL. Its superuser `postgres`
/// normally logs in over loopback without a password (Debian's `trust`/`peer` defaults); a
/// server that wants one gets this generated password, which `sumun secrets put pg/local`
/// replaces with the real one.
fn init_vault(vault_dir: &Path, key_file: &Path) -> anyhow::Result<()> {
    let key = sumun_vault::LocalMasterKey::generate().context("cannot generate a master key")?;
    key.write_key_file(key_file)
        .with_context(|| format!("cannot write {}", key_file.display()))?;
    let mut vault = sumun_vault::Vault::init(vault_dir, Box::new(key), None)
        .with_context(|| format!("cannot create the vault in {}", vault_dir.display()))?;
    let password =
        sumun_vault::crypto::generate_password(32).context("cannot generate a password")?;
    vault
        .put(
            PG_CREDENTIAL,
            &password,
            sumun_vault::SecretMeta {
                kind: Some(sumun_vault::SecretKind::Postgres),
                address: Some("127.0.0.1:5432".into()),
                username: Some("postgres".into()),
                database: None,
                admin_secret: None,
            },
        )
        .context("cannot store the PostgreSQL credential")?;
    Ok(())
}

/// A token for the quickstart user, valid for 15 minutes.
fn pg_token(config: &Config) -> anyhow::Result<String> {
    let v = config.vault.as_ref().context("the config has no [vault]")?;
    let vault = sumun_vault::Vault::open_with_key_file(&v.dir, v.key_file.as_deref())?;
    let token = vault.token_signer()?.issue(
        PG_USER,
        None,
        &config.gateway.name,
        sumun_vault::store::now_unix_secs(),
        15 * 60,
    )?;
    Ok(token.expose_str().unwrap_or_default().to_string())
}

fn default_config() -> String {
    let mut c = String::from(
        "# Written by `sumun quickstart`. Edit freely: the running gateway reloads this file on save.\n\
         # Every key is documented in docs/config.md.\n\n\
         [gateway]\nname = \"sumun-quickstart\"\n\n\
         [admin]\n",
    );
    let _ = writeln!(
        c,
        "listen = \"{ADMIN}\"\n\
         # /api/... asks for this bearer token (/metrics and /healthz do not); `sumun status\n\
         # --config sumun.toml` sends it. Without a token file the admin API may only listen on loopback.\n\
         token_file = \"{ADMIN_TOKEN}\"\n"
    );
    c.push_str(
        "[tls.default]\ncert = \"certs/server.pem\"\nkey = \"certs/server-key.pem\"\npolicy = \"tls13-pq\"\n\n\
         [[security_groups]]\nname = \"local\"\ndescription = \"this machine only\"\n\
         ingress = [\n  { cidr = \"127.0.0.0/8\", description = \"loopback\" },\n  { cidr = \"::1/128\" },\n]\n\n\
         [flow_logs]\npath = \"flows.log\"\n\n[audit]\npath = \"audit.jsonl\"\n\n\
         [vault]\ndir = \"vault\"\nkey_file = \"master.key\"\n\n",
    );
    let _ = write!(
        c,
        "# Who may log in through the PostgreSQL listener: a token from `sumun token --user {PG_USER}`\n\
         # as the password, or a password set with `sumun users set-password {PG_USER}`. The gateway\n\
         # logs in to PostgreSQL with the vault secret {PG_CREDENTIAL}; `admin` opens the `sumun`\n\
         # admin database (SHOW POOLS, SHOW CLIENTS...).\n\
         [[users]]\nname = \"{PG_USER}\"\nauth = [\"token\", \"scram\"]\nbackend_credential = \"{PG_CREDENTIAL}\"\nadmin = true\n"
    );
    for (name, what, port, backend, protocol) in BACKENDS {
        let pool = if protocol == "postgres" {
            "tls = \"required\"\npool = { mode = \"transaction\", size = 20 }\n"
        } else {
            ""
        };
        // A local PostgreSQL usually trusts loopback connections: it lets the gateway in
        // without asking for the password, so it proves nothing about itself. Allowed here, for
        // this machine only; a real server should check passwords (scram-sha-256).
        let backend_auth = if protocol == "postgres" {
            "# The local server may trust loopback logins (\"none\"); drop it for a server that\n\
             # checks passwords, so that only a server that proves it knows the password is used.\n\
             backend_auth = [\"scram-sha-256\", \"none\"]\n"
        } else {
            ""
        };
        let _ = write!(
            c,
            "\n# {what}\n[[listeners]]\nname = \"{name}\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"{protocol}\"\n\
             target_group = \"{name}\"\nsecurity_groups = [\"local\"]\ntls_config = \"default\"\n{pool}\n\
             [[target_groups]]\nname = \"{name}\"\nalgorithm = \"least_conn\"\nderegistration_delay = \"30s\"\n\
             health_check = {{ interval = \"5s\", timeout = \"2s\", healthy_threshold = 2, unhealthy_threshold = 2 }}\n\
             {backend_auth}targets = [{{ address = \"{backend}\" }}]\n"
        );
    }
    c
}

fn reachable(addr: &str) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub fn print_instructions(setup: &Setup, config: &Config, gateway: Option<&Gateway>) {
    let ca = setup.ca_path.display();
    let mut out = String::new();
    let _ = writeln!(out, "\nSumun quickstart: {}", setup.dir.display());
    let _ = writeln!(out, "  config     {}", setup.config_path.display());
    let _ = writeln!(out, "  dev CA     {ca}");
    if let Some(admin) = &config.admin {
        let _ = writeln!(
            out,
            "  admin      http://{}/metrics   (sumun status --config {})",
            admin.listen,
            setup.config_path.display()
        );
        if let Some(token) = &admin.token_file {
            let _ = writeln!(
                out,
                "             curl -H \"Authorization: Bearer $(cat {})\" http://{}/api/targets",
                token.display(),
                admin.listen
            );
        }
    }
    let _ = writeln!(out);
    for l in &config.listeners {
        let Some(group) = config.target_group(&l.target_group) else {
            continue;
        };
        let bind = gateway
            .and_then(|g| g.listener_addr(&l.name))
            .unwrap_or(l.bind);
        let port = bind.port();
        let backend = group
            .targets
            .iter()
            .map(|t| t.address.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let health = group
            .targets
            .iter()
            .map(|t| match reachable(&t.addr.to_string()) {
                Ok(()) => format!("{} reachable", t.address),
                Err(e) => format!(
                    "{} UNREACHABLE ({e}): clients will be refused until it is up",
                    t.address
                ),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            out,
            "{} ({} {bind} -> {backend}): {health}",
            l.name,
            l.protocol.as_str()
        );
        let hint = match (l.name.as_str(), l.protocol) {
            (_, sumun_config::Protocol::Postgres) => match pg_token(config) {
                Ok(token) => format!(
                    "  PGPASSWORD='{token}' psql \"host=localhost port={port} sslmode=verify-full sslrootcert={ca} user={PG_USER} dbname=postgres\"\n  \
                     (a token valid 15 minutes; a new one: sumun token --user {PG_USER} --config {})",
                    setup.config_path.display()
                ),
                Err(e) => format!("  (cannot issue a token: {e})"),
            },
            ("redis", _) => format!("  redis-cli --tls --cacert {ca} -h localhost -p {port} ping"),
            _ => format!("  openssl s_client -connect localhost:{port} -CAfile {ca} -brief"),
        };
        let _ = writeln!(out, "{hint}\n");
    }
    let _ = writeln!(
        out,
        "Flow log: {}",
        config
            .flow_logs
            .as_ref()
            .map_or("off".into(), |f| f.path.display().to_string())
    );
    let _ = writeln!(
        out,
        "Audit log: {}",
        config
            .audit
            .as_ref()
            .map_or("off".into(), |a| a.path.display().to_string())
    );
    if gateway.is_some() {
        let _ = writeln!(out, "Serving. Ctrl-C drains and stops.");
    }
    println!("{out}");
}
