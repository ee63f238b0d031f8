//! `sumun quickstart`: a working gateway in front of the local PostgreSQL, MariaDB and Redis
//! with one command. It writes a dev CA and server certificate, a master key and a vault, an
//! admin API token, and a commented config into the quickstart directory (reusing whatever is
//! already there, so edits survive), then serves it and prints a ready-to-paste client command
//! per backend — for PostgreSQL with a fresh token as the password — saying plainly which
//! backends are not reachable. Its ports can be chosen (`--pg-port`... or `--free-ports`); in a
//! reused config only those `bind`/`listen` values are rewritten, and a flag the config cannot
//! take (its listener is gone) is refused rather than ignored.

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

/// The backends quickstart fronts: (listener name, what it is, backend address, listener
/// protocol). Their ports are in `SLOTS`, in the same order.
const BACKENDS: [(&str, &str, &str, &str); 3] = [
    ("postgres", "PostgreSQL", "127.0.0.1:5432", "postgres"),
    ("mariadb", "MariaDB/MySQL", "127.0.0.1:3306", "mysql"),
    ("redis", "Redis", "127.0.0.1:6379", "redis"),
];

/// A port quickstart chooses: the flag that sets it, the listener that binds it (`None`: the
/// admin API) and its default.
struct Slot {
    flag: &'static str,
    listener: Option<&'static str>,
    default: u16,
}

/// The three listeners of `BACKENDS` (same order), then the admin API.
const SLOTS: [Slot; 4] = [
    Slot {
        flag: "--pg-port",
        listener: Some("postgres"),
        default: 6432,
    },
    Slot {
        flag: "--mariadb-port",
        listener: Some("mariadb"),
        default: 13306,
    },
    Slot {
        flag: "--redis-port",
        listener: Some("redis"),
        default: 16379,
    },
    Slot {
        flag: "--admin-port",
        listener: None,
        default: 9900,
    },
];

/// The flag that moves a quickstart listener (`None`: the admin API), if quickstart has one.
pub fn port_flag(listener: Option<&str>) -> Option<&'static str> {
    SLOTS
        .iter()
        .find(|s| s.listener == listener)
        .map(|s| s.flag)
}

/// Ports on the command line. They apply to a config quickstart writes and are rewritten into
/// one it reuses (only those `bind`/`listen` values: everything else in the file stays as is).
#[derive(clap::Args, Clone, Default)]
pub struct PortArgs {
    /// Port of the PostgreSQL listener on 127.0.0.1 [default: 6432, or the reused config's].
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub pg_port: Option<u16>,
    /// Port of the MariaDB/MySQL listener on 127.0.0.1 [default: 13306, or the reused config's].
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub mariadb_port: Option<u16>,
    /// Port of the Redis listener on 127.0.0.1 [default: 16379, or the reused config's].
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub redis_port: Option<u16>,
    /// Port of the admin API on 127.0.0.1 [default: 9900, or the reused config's].
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub admin_port: Option<u16>,
    /// Let the system pick a free loopback port for each of these ports not set by its flag.
    /// They are printed and written to the config, so a rerun without flags keeps them.
    #[arg(long)]
    pub free_ports: bool,
}

/// Where a wanted port came from: a flag must apply or quickstart refuses; a port picked by
/// --free-ports for a listener the config no longer has is simply not needed.
#[derive(Clone, Copy)]
enum Want {
    Flag(u16),
    Free(u16),
}

impl Want {
    fn port(self) -> u16 {
        match self {
            Want::Flag(p) | Want::Free(p) => p,
        }
    }
}

impl PortArgs {
    /// The port each slot of `SLOTS` should have, if the command line says so.
    fn wanted(&self) -> anyhow::Result<[Option<Want>; 4]> {
        let flags = [
            self.pg_port,
            self.mariadb_port,
            self.redis_port,
            self.admin_port,
        ];
        // Every socket is held until all are picked, so the ports differ.
        let mut held = Vec::new();
        let mut wanted = [None; 4];
        for (want, flag) in wanted.iter_mut().zip(flags) {
            *want = match flag {
                Some(port) => Some(Want::Flag(port)),
                None if self.free_ports => {
                    let socket = std::net::TcpListener::bind(("127.0.0.1", 0))
                        .context("cannot find a free port on 127.0.0.1")?;
                    let port = socket.local_addr()?.port();
                    held.push(socket);
                    Some(Want::Free(port))
                }
                None => None,
            };
        }
        Ok(wanted)
    }
}

/// A port the command line asked for that the reused config cannot take: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PortRefused(String);

/// The user quickstart's PostgreSQL listener lets in (with a token or a password).
pub const PG_USER: &str = "quickstart";
/// The vault secret the gateway logs in to the local PostgreSQL with.
const PG_CREDENTIAL: &str = "pg/local";
/// The MariaDB/MySQL listener's user (a token logs it in) and its backend credential.
pub const MYSQL_USER: &str = "root";
const MYSQL_CREDENTIAL: &str = "maria/local";
/// The Redis listener's user (Redis's own name for the user `AUTH token` logs in) and its
/// backend credential.
pub const REDIS_USER: &str = "default";
const REDIS_CREDENTIAL: &str = "redis/local";

/// The admin API's bearer token, next to the config.
const ADMIN_TOKEN: &str = "admin.token";

pub fn prepare(dir: &Path, ports: &PortArgs) -> anyhow::Result<Setup> {
    let wanted = ports.wanted()?;
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
    ensure_mysql_credential(&vault_dir, &key_file)?;
    let admin_token = dir.join(ADMIN_TOKEN);
    if !admin_token.exists() {
        write_admin_token(&admin_token)?;
    }
    let config_path = dir.join("sumun.toml");
    if config_path.exists() {
        set_ports(&config_path, &wanted)?;
    } else {
        let ports = std::array::from_fn(|i| wanted[i].map_or(SLOTS[i].default, Want::port));
        std::fs::write(&config_path, default_config(&ports))
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

/// The backend credential of the MariaDB listener's user: the local server's `root`, which on
/// a development machine usually has no password over loopback (a server that wants one
/// refuses the login in its own words; `sumun secrets put maria/local` sets the real one).
/// Added to a vault from an earlier quickstart that lacks it; so is the local Redis's (its
/// default user, without a password: `sumun secrets put redis/local` sets one).
fn ensure_mysql_credential(vault_dir: &Path, key_file: &Path) -> anyhow::Result<()> {
    let mut vault = sumun_vault::Vault::open_with_key_file(vault_dir, Some(key_file))
        .with_context(|| format!("cannot open the vault in {}", vault_dir.display()))?;
    let have: Vec<String> = vault.list().into_iter().map(|s| s.name).collect();
    for (name, kind, address, username) in [
        (
            MYSQL_CREDENTIAL,
            sumun_vault::SecretKind::Mysql,
            "127.0.0.1:3306",
            Some("root"),
        ),
        (
            REDIS_CREDENTIAL,
            sumun_vault::SecretKind::Redis,
            "127.0.0.1:6379",
            None,
        ),
    ] {
        if have.iter().any(|h| h == name) {
            continue;
        }
        vault
            .put(
                name,
                &sumun_vault::SecretBytes::from_slice(b""),
                sumun_vault::SecretMeta {
                    kind: Some(kind),
                    address: Some(address.into()),
                    username: username.map(String::from),
                    database: None,
                    admin_secret: None,
                },
            )
            .with_context(|| format!("cannot store the backend credential {name}"))?;
    }
    Ok(())
}

/// A token for `user`, valid for 15 minutes.
fn user_token(config: &Config, user: &str) -> anyhow::Result<String> {
    let v = config.vault.as_ref().context("the config has no [vault]")?;
    let vault = sumun_vault::Vault::open_with_key_file(&v.dir, v.key_file.as_deref())?;
    let token = vault.token_signer()?.issue(
        user,
        None,
        &config.gateway.name,
        sumun_vault::store::now_unix_secs(),
        15 * 60,
    )?;
    Ok(token.expose_str().unwrap_or_default().to_string())
}

/// The parts of a config whose ports quickstart may rewrite, with where their values are.
#[derive(serde::Deserialize)]
struct Binds {
    #[serde(default)]
    listeners: Vec<BindsListener>,
    admin: Option<BindsAdmin>,
}

#[derive(serde::Deserialize)]
struct BindsListener {
    name: Option<String>,
    bind: Option<toml::Spanned<String>>,
}

#[derive(serde::Deserialize)]
struct BindsAdmin {
    listen: Option<toml::Spanned<String>>,
}

impl Binds {
    fn of(text: &str) -> Result<Binds, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }
    /// The `bind` of listener `name`, or `[admin] listen` for `None`.
    fn find(&self, listener: Option<&str>) -> Option<&toml::Spanned<String>> {
        match listener {
            Some(name) => self
                .listeners
                .iter()
                .find(|l| l.name.as_deref() == Some(name))
                .and_then(|l| l.bind.as_ref()),
            None => self.admin.as_ref().and_then(|a| a.listen.as_ref()),
        }
    }
}

/// Moves the listeners of a reused config to the wanted ports: each `bind` (or `[admin]
/// listen`) value keeps its address and gets the new port; nothing else in the file changes
/// (comments and edits survive). A flag that names a listener the file no longer has, or a
/// bind that is not `ADDRESS:PORT`, is refused rather than ignored.
fn set_ports(path: &Path, wanted: &[Option<Want>; 4]) -> anyhow::Result<()> {
    if wanted.iter().all(Option::is_none) {
        return Ok(());
    }
    let file = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {file}"))?;
    let binds = Binds::of(&text).map_err(|e| {
        PortRefused(format!(
            "cannot set ports in {file}, which is not valid TOML ({e}): fix it (sumun validate --config {file}) or remove it"
        ))
    })?;
    let mut edits = Vec::new();
    for (slot, want) in SLOTS.iter().zip(wanted) {
        let Some(want) = *want else { continue };
        let what = match slot.listener {
            Some(name) => format!("the bind of listener '{name}'"),
            None => "[admin] listen".to_string(),
        };
        let Some(bind) = binds.find(slot.listener) else {
            match want {
                Want::Free(_) => continue,
                Want::Flag(port) => {
                    let missing = match slot.listener {
                        Some(name) => format!("listener named '{name}'"),
                        None => "[admin] listen".to_string(),
                    };
                    return Err(PortRefused(format!(
                        "{} {port} cannot apply: {file} (reused as is) has no {missing}; edit the file yourself",
                        slot.flag
                    ))
                    .into());
                }
            }
        };
        let Ok(old) = bind.get_ref().parse::<SocketAddr>() else {
            return Err(PortRefused(format!(
                "{} cannot apply: {what} in {file} is \"{}\", not ADDRESS:PORT; edit the file yourself",
                slot.flag,
                bind.get_ref()
            ))
            .into());
        };
        if old.port() != want.port() {
            let new = SocketAddr::new(old.ip(), want.port());
            edits.push((bind.span(), slot, what, old, new));
        }
    }
    if edits.is_empty() {
        return Ok(());
    }
    let mut out = text.clone();
    edits.sort_by_key(|(span, ..)| std::cmp::Reverse(span.start));
    for (span, _, _, _, new) in &edits {
        out.replace_range(span.clone(), &format!("\"{new}\""));
    }
    // The rewrite must have changed those values and left the file readable.
    let check = Binds::of(&out).ok();
    for (_, slot, _, _, new) in &edits {
        let now = check.as_ref().and_then(|b| b.find(slot.listener));
        if now.and_then(|b| b.get_ref().parse::<SocketAddr>().ok()) != Some(*new) {
            return Err(PortRefused(format!(
                "cannot set {} {} in {file}: edit the file yourself",
                slot.flag,
                new.port()
            ))
            .into());
        }
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, &out)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {file}"))?;
    for (_, _, what, old, new) in edits.iter().rev() {
        eprintln!(
            "sumun quickstart: {file}: {what} is now {new} (was {old}); the rest of the file is unchanged"
        );
    }
    Ok(())
}

fn default_config(ports: &[u16; 4]) -> String {
    let admin_port = ports[3];
    let mut c = String::from(
        "# Written by `sumun quickstart`. Edit freely: the running gateway reloads this file on save.\n\
         # Every key is documented in docs/config.md.\n\n\
         [gateway]\nname = \"sumun-quickstart\"\n\n\
         [admin]\n",
    );
    let _ = writeln!(
        c,
        "listen = \"127.0.0.1:{admin_port}\"\n\
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
        "# Who may log in through the PostgreSQL listener: a token from `sumun token --user {PG_USER}\n\
         # --config sumun.toml` as the password, or a password set with `sumun users set-password\n\
         # {PG_USER} --config sumun.toml`. The gateway logs in to PostgreSQL with the vault secret\n\
         # {PG_CREDENTIAL}; `admin` opens the `sumun` admin database (SHOW POOLS, SHOW CLIENTS...).\n\
         [[users]]\nname = \"{PG_USER}\"\nauth = [\"token\", \"scram\"]\nbackend_credential = \"{PG_CREDENTIAL}\"\nadmin = true\n\n\
         # Who may log in through the MariaDB/MySQL listener: a token from `sumun token --user\n\
         # {MYSQL_USER} --config sumun.toml` as the password (over TLS). The gateway logs in to\n\
         # MariaDB as the username of the vault secret {MYSQL_CREDENTIAL} (root, no password).\n\
         [[users]]\nname = \"{MYSQL_USER}\"\nauth = [\"token\"]\nbackend_credential = \"{MYSQL_CREDENTIAL}\"\n\n\
         # Who may log in through the Redis listener: `AUTH <token>` (or redis-cli --user {REDIS_USER}\n\
         # --pass <token>) over TLS, a token from `sumun token --user {REDIS_USER} --config sumun.toml`.\n\
         # The gateway logs in to Redis with the vault secret {REDIS_CREDENTIAL} (no password);\n\
         # redis_acl (Redis's ACL syntax) says what may run: the default keeps @dangerous out.\n\
         [[users]]\nname = \"{REDIS_USER}\"\nauth = [\"token\"]\nbackend_credential = \"{REDIS_CREDENTIAL}\"\nredis_acl = \"+@all -@dangerous ~* &*\"\n"
    );
    for ((name, what, backend, protocol), port) in BACKENDS.into_iter().zip(ports) {
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
            (_, sumun_config::Protocol::Postgres) => match user_token(config, PG_USER) {
                Ok(token) => format!(
                    "  PGPASSWORD='{token}' psql \"host=localhost port={port} sslmode=verify-full sslrootcert={ca} user={PG_USER} dbname=postgres\"\n  \
                     (a token valid 15 minutes; a new one: sumun token --user {PG_USER} --config {})",
                    setup.config_path.display()
                ),
                Err(e) => format!("  (cannot issue a token: {e})"),
            },
            (_, sumun_config::Protocol::Mysql) => match user_token(config, MYSQL_USER) {
                Ok(token) => format!(
                    "  mariadb -h localhost -P {port} -u {MYSQL_USER} --ssl --ssl-ca={ca} --password='{token}'\n  \
                     (MySQL's own client: mysql ... --ssl-mode=VERIFY_CA --ssl-ca={ca} --enable-cleartext-plugin;\n  \
                     a token valid 15 minutes; a new one: sumun token --user {MYSQL_USER} --config {})",
                    setup.config_path.display()
                ),
                Err(e) => format!("  (cannot issue a token: {e})"),
            },
            (_, sumun_config::Protocol::Redis) => match user_token(config, REDIS_USER) {
                Ok(token) => format!(
                    "  redis-cli --tls --cacert {ca} -h localhost -p {port} --user {REDIS_USER} --pass '{token}' ping\n  \
                     (a token valid 15 minutes; a new one: sumun token --user {REDIS_USER} --config {})",
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
