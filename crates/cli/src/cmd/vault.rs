//! `sumun vault|secrets|users|keys|token`: argument parsing and printing around the
//! `sumun-vault` crate. Values go to stdout only from `secrets get` and `token`, which exist to
//! print them; everything else reports on stderr and never prints a secret or a token.
//! Exit status: 0 ok, 1 runtime failure (corrupted vault, backend down), 2 bad usage or input
//! (missing vault, unknown secret, malformed value or duration).

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use sumun_vault::rotation::{self, Step};
use sumun_vault::store::{now_unix_secs, validate_name};
use sumun_vault::{
    master, ErrorKind, KdfParams, LocalMasterKey, MasterKey, RotationError, SecretBytes,
    SecretKind, SecretMeta, Stage, StoreError, Vault,
};

/// Environment variable of the rotation fault-injection test hook: the process exits with
/// status 86 right after the named step (`staged`, `set`, `verified`, `promoted`, `finished`).
pub const FAULT_ENV: &str = "SUMUN_FAULT_ROTATE_EXIT_AFTER";
const FAULT_EXIT: i32 = 86;
const DEFAULT_AUDIENCE: &str = "sumun";

/// Where the vault is: `--vault DIR`, or `[vault] dir` of `--config FILE`.
#[derive(Args, Clone, Debug)]
pub struct VaultLoc {
    /// Vault directory.
    #[arg(long, value_name = "DIR", env = "SUMUN_VAULT_DIR")]
    pub vault: Option<PathBuf>,
    /// Config file whose `[vault] dir` (and `[gateway] name`) to use.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum VaultCmd {
    /// Create a vault: a master key and an empty secret store. The master key comes from
    /// SUMUN_MASTER_KEY (base64 of 32 bytes) or SUMUN_MASTER_PASSPHRASE (Argon2id) if set;
    /// otherwise a new random key is written to DIR/master.key with mode 0600.
    Init {
        /// Directory to create the vault in.
        #[arg(long, value_name = "DIR", alias = "vault")]
        dir: Option<PathBuf>,
        /// Config file whose `[vault] dir` to use instead of --dir.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Show the vault's master key id, key generation and contents (never values).
    Status(VaultLoc),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    Postgres,
    Mysql,
    Redis,
    Opaque,
}

impl From<KindArg> for SecretKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Postgres => SecretKind::Postgres,
            KindArg::Mysql => SecretKind::Mysql,
            KindArg::Redis => SecretKind::Redis,
            KindArg::Opaque => SecretKind::Opaque,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StageArg {
    Current,
    Previous,
    Pending,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum SecretsCmd {
    /// Store a new current version of a secret (the old one becomes previous).
    Put {
        /// Secret name, e.g. pg/app.
        name: String,
        /// Read the value from this file (`-` for stdin); one trailing newline is dropped.
        #[arg(long, value_name = "F", conflicts_with = "generate")]
        value_file: Option<PathBuf>,
        /// Generate a random 32-character password instead.
        #[arg(long)]
        generate: bool,
        /// What the value logs in to.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Backend address, HOST:PORT.
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
        /// Backend user name (for mysql, `user@host` names the account host used by rotation).
        #[arg(long, value_name = "USER")]
        username: Option<String>,
        /// Database to connect to when rotating (postgres; default `postgres`).
        #[arg(long, value_name = "DB")]
        database: Option<String>,
        /// Another secret to log in with when rotating this one (default: the secret itself).
        #[arg(long, value_name = "NAME")]
        admin_secret: Option<String>,
        #[command(flatten)]
        loc: VaultLoc,
    },
    /// Print a secret's value (alone, on stdout).
    Get {
        name: String,
        /// Which version to print.
        #[arg(long, value_enum, default_value = "current")]
        stage: StageArg,
        #[command(flatten)]
        loc: VaultLoc,
    },
    /// List secrets and their metadata (never values).
    List {
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
        #[command(flatten)]
        loc: VaultLoc,
    },
    /// Delete a secret and all its versions.
    Delete {
        name: String,
        #[command(flatten)]
        loc: VaultLoc,
    },
    /// Set a new random password on the backend and in the vault, verified before promotion.
    /// Safe to rerun after an interruption.
    Rotate {
        name: String,
        #[command(flatten)]
        loc: VaultLoc,
    },
}

#[derive(Subcommand)]
pub enum UsersCmd {
    /// Store a password verifier (SCRAM-SHA-256, mysql_native_password) for a gateway user;
    /// the password itself is not stored. Reads the password from --value-file or stdin.
    SetPassword {
        user: String,
        /// Read the password from this file (`-` for stdin).
        #[arg(long, value_name = "F")]
        value_file: Option<PathBuf>,
        #[command(flatten)]
        loc: VaultLoc,
    },
    /// List users with a stored verifier.
    List {
        #[command(flatten)]
        loc: VaultLoc,
    },
    /// Remove a user's verifier.
    Delete {
        user: String,
        #[command(flatten)]
        loc: VaultLoc,
    },
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// New key-encryption key (every data key re-wrapped) and new token signing key; retired
    /// signing keys keep verifying until their tokens have expired.
    Rotate {
        #[command(flatten)]
        loc: VaultLoc,
    },
    /// List token signing keys.
    List {
        #[command(flatten)]
        loc: VaultLoc,
    },
}

#[derive(Args)]
pub struct TokenArgs {
    /// Gateway user the token is for.
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// Database the token is limited to.
    #[arg(long, value_name = "DB")]
    pub database: Option<String>,
    /// Lifetime, e.g. 15m (at most `[vault] token_max_ttl`, default 1h).
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub ttl: String,
    /// Audience: the name of the gateway that will accept the token ([gateway] name). Taken
    /// from --config when not given; without --config it is required, since a gateway refuses
    /// a token signed for another name.
    #[arg(long, value_name = "NAME")]
    pub audience: Option<String>,
    #[command(flatten)]
    pub loc: VaultLoc,
}

// ---- config: only the keys the vault commands need -------------------------------------

// TODO(config): switch to `sumun_config::load` once every command reads the validated config.
#[derive(Deserialize, Default)]
struct MiniConfig {
    #[serde(default)]
    gateway: MiniGateway,
    #[serde(default)]
    vault: MiniVault,
}

#[derive(Deserialize, Default)]
struct MiniGateway {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
struct MiniVault {
    dir: Option<String>,
    key_file: Option<String>,
    token_max_ttl: Option<String>,
}

/// A problem with the operator's input: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

struct Resolved {
    dir: PathBuf,
    key_file: Option<PathBuf>,
    gateway_name: Option<String>,
    /// The config file the settings came from, if any.
    config: Option<PathBuf>,
    max_ttl: Duration,
}

fn read_config(path: &Path) -> anyhow::Result<MiniConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("{}: cannot read: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| usage(format!("{}: {}", path.display(), e.message())))
}

fn relative_to(config: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        return p;
    }
    config.parent().map(|d| d.join(&p)).unwrap_or(p)
}

fn resolve(loc: &VaultLoc) -> anyhow::Result<Resolved> {
    let cfg = match &loc.config {
        Some(p) => Some((p.clone(), read_config(p)?)),
        None => None,
    };
    let from_cfg = |f: fn(&MiniVault) -> &Option<String>| {
        cfg.as_ref()
            .and_then(|(p, c)| f(&c.vault).as_ref().map(|v| relative_to(p, v)))
    };
    let dir = match (&loc.vault, from_cfg(|v| &v.dir)) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d,
        (None, None) => {
            return Err(usage(
                "no vault given: use --vault DIR or --config FILE with [vault] dir",
            ))
        }
    };
    let max_ttl = match cfg
        .as_ref()
        .and_then(|(_, c)| c.vault.token_max_ttl.clone())
    {
        Some(t) => sumun_config::parse_duration(&t)
            .map_err(|e| usage(format!("[vault] token_max_ttl: {e}")))?,
        None => Duration::from_secs(sumun_vault::token::DEFAULT_MAX_TTL_SECS),
    };
    Ok(Resolved {
        dir,
        key_file: from_cfg(|v| &v.key_file),
        gateway_name: cfg.as_ref().and_then(|(_, c)| c.gateway.name.clone()),
        config: cfg.as_ref().map(|(p, _)| p.clone()),
        max_ttl,
    })
}

fn open(r: &Resolved) -> anyhow::Result<Vault> {
    Ok(Vault::open_with_key_file(&r.dir, r.key_file.as_deref())?)
}

/// Runs a command, mapping input errors to exit status 2 (printed here) and leaving runtime
/// errors to `main`, which prints them and exits 1.
fn run(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<ExitCode> {
    match f() {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if is_input(&e) => {
            eprintln!("sumun: {e:#}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e),
    }
}

fn is_input(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        if c.is::<UsageError>() {
            return true;
        }
        if let Some(s) = c.downcast_ref::<StoreError>() {
            return matches!(s.kind(), ErrorKind::Input | ErrorKind::NotFound);
        }
        if let Some(r) = c.downcast_ref::<RotationError>() {
            return match r {
                RotationError::NotRotatable { .. } => true,
                RotationError::Store(s) => {
                    matches!(s.kind(), ErrorKind::Input | ErrorKind::NotFound)
                }
                _ => false,
            };
        }
        if let Some(m) = c.downcast_ref::<sumun_vault::MasterKeyError>() {
            return m.is_input();
        }
        false
    })
}

/// Reads a value from `--value-file` (or stdin when it is `-` or absent and stdin is piped).
fn read_value(file: Option<&Path>, what: &str) -> anyhow::Result<SecretBytes> {
    let mut raw = Vec::new();
    match file {
        Some(p) if p != Path::new("-") => {
            raw = std::fs::read(p)
                .map_err(|e| usage(format!("{}: cannot read: {e}", p.display())))?;
        }
        _ => {
            if file.is_none() && std::io::stdin().is_terminal() {
                return Err(usage(format!(
                    "give the {what} with --value-file F, or pipe it on stdin"
                )));
            }
            std::io::stdin()
                .read_to_end(&mut raw)
                .context("reading stdin")?;
        }
    }
    let mut value = SecretBytes::new(raw);
    let trimmed = {
        let v = value.expose();
        let v = v.strip_suffix(b"\n").unwrap_or(v);
        let v = v.strip_suffix(b"\r").unwrap_or(v);
        v.len()
    };
    if trimmed != value.len() {
        value = SecretBytes::from_slice(&value.expose()[..trimmed]);
    }
    if value.is_empty() {
        return Err(usage(format!("the {what} is empty")));
    }
    Ok(value)
}

fn stdout_line(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

fn rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

// ---- commands ---------------------------------------------------------------------------

pub fn vault(cmd: VaultCmd) -> anyhow::Result<ExitCode> {
    run(|| match cmd {
        VaultCmd::Init { dir, config } => init(VaultLoc { vault: dir, config }),
        VaultCmd::Status(loc) => status(&loc),
    })
}

fn init(loc: VaultLoc) -> anyhow::Result<()> {
    let r = resolve(&loc)?;
    if r.dir.join(sumun_vault::store::STORE_FILE).exists() {
        return Err(StoreError::AlreadyExists(r.dir.clone()).into());
    }
    let (key, kdf, source): (Box<dyn MasterKey>, Option<KdfParams>, String) = if let Ok(text) =
        std::env::var(master::ENV_MASTER_KEY)
    {
        let k = LocalMasterKey::from_base64(&text)?;
        (
            Box::new(k),
            None,
            format!("from {}", master::ENV_MASTER_KEY),
        )
    } else if let Ok(pass) = std::env::var(master::ENV_MASTER_PASSPHRASE) {
        let pass = SecretBytes::new(pass.into_bytes());
        let params = KdfParams::new_random()?;
        let k = LocalMasterKey::from_passphrase(pass.expose(), &params)?;
        (
            Box::new(k),
            Some(params),
            format!(
                "derived from {} with Argon2id",
                master::ENV_MASTER_PASSPHRASE
            ),
        )
    } else {
        let path = r
            .key_file
            .clone()
            .unwrap_or_else(|| r.dir.join(master::KEY_FILE_NAME));
        std::fs::create_dir_all(&r.dir).with_context(|| format!("creating {}", r.dir.display()))?;
        if path.exists() {
            let k = LocalMasterKey::from_key_file(&path)?;
            (Box::new(k), None, format!("reused {}", path.display()))
        } else {
            let k = LocalMasterKey::generate()?;
            k.write_key_file(&path)?;
            (
                Box::new(k),
                None,
                format!(
                    "written to {} (mode 0600); back it up apart from the vault",
                    path.display()
                ),
            )
        }
    };
    let v = Vault::init(&r.dir, key, kdf)?;
    eprintln!(
        "created vault {} (master key {}, {source})",
        r.dir.display(),
        v.master_key_id()
    );
    Ok(())
}

fn status(loc: &VaultLoc) -> anyhow::Result<()> {
    let r = resolve(loc)?;
    let v = open(&r)?;
    println!("vault:          {}", r.dir.display());
    println!("master key:     {}", v.master_key_id());
    println!("kek generation: {}", v.kek_generation());
    println!("revision:       {}", v.revision());
    println!("secrets:        {}", v.list().len());
    println!("users:          {}", v.users().len());
    println!("signing keys:   {}", v.signing_keys().len());
    Ok(())
}

pub fn secrets(cmd: SecretsCmd) -> anyhow::Result<ExitCode> {
    run(|| match cmd {
        SecretsCmd::Put {
            name,
            value_file,
            generate,
            kind,
            address,
            username,
            database,
            admin_secret,
            loc,
        } => {
            validate_name(&name)?;
            let r = resolve(&loc)?;
            let mut v = open(&r)?;
            let value = if generate {
                sumun_vault::crypto::generate_password(rotation::PASSWORD_LEN)?
            } else {
                read_value(value_file.as_deref(), "secret value")?
            };
            let meta = SecretMeta {
                kind: kind.map(Into::into),
                address,
                username,
                database,
                admin_secret,
            };
            let version = v.put(&name, &value, meta)?;
            eprintln!("stored secret '{name}' version {version}");
            Ok(())
        }
        SecretsCmd::Get { name, stage, loc } => {
            let r = resolve(&loc)?;
            let v = open(&r)?;
            let stage = match stage {
                StageArg::Current => Stage::Current,
                StageArg::Previous => Stage::Previous,
                StageArg::Pending => Stage::Pending,
            };
            let value = v.get_stage(&name, stage)?.ok_or_else(|| {
                usage(format!("secret '{name}' has no {} version", stage.as_str()))
            })?;
            stdout_line(value.expose())
        }
        SecretsCmd::List { format, loc } => {
            let r = resolve(&loc)?;
            let v = open(&r)?;
            let list = v.list();
            if format == ListFormat::Json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            let ver = |o: Option<u64>| o.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
            let rows: Vec<[String; 8]> = list
                .iter()
                .map(|i| {
                    [
                        i.name.clone(),
                        i.kind.as_str().to_string(),
                        opt(&i.address),
                        opt(&i.username),
                        i.current_version.to_string(),
                        ver(i.previous_version),
                        ver(i.pending_version),
                        rfc3339(i.updated),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME", "KIND", "ADDRESS", "USERNAME", "CURRENT", "PREVIOUS", "PENDING",
                    "UPDATED",
                ],
                &rows,
            );
            Ok(())
        }
        SecretsCmd::Delete { name, loc } => {
            let r = resolve(&loc)?;
            open(&r)?.delete(&name)?;
            eprintln!("deleted secret '{name}'");
            Ok(())
        }
        SecretsCmd::Rotate { name, loc } => {
            let r = resolve(&loc)?;
            let mut v = open(&r)?;
            let fault = std::env::var(FAULT_ENV).ok();
            if let Some(f) = &fault {
                if !Step::ALL.iter().any(|s| s.as_str() == f) {
                    return Err(usage(format!("{FAULT_ENV}: unknown step '{f}'")));
                }
            }
            let mut on_step = |step: Step, what: &str| {
                eprintln!("rotate '{name}': {what}");
                if fault.as_deref() == Some(step.as_str()) {
                    eprintln!(
                        "rotate '{name}': {FAULT_ENV} test hook: exiting after step '{}'",
                        step.as_str()
                    );
                    std::process::exit(FAULT_EXIT);
                }
            };
            let report = rotation::rotate(&mut v, &name, &mut on_step)?;
            eprintln!(
                "rotated secret '{}' to version {}{}",
                report.name,
                report.new_version,
                if report.via_admin {
                    " (via its admin secret)"
                } else {
                    ""
                }
            );
            Ok(())
        }
    })
}

fn print_table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) {
    let mut w = head.map(str::len);
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

pub fn users(cmd: UsersCmd) -> anyhow::Result<ExitCode> {
    run(|| match cmd {
        UsersCmd::SetPassword {
            user,
            value_file,
            loc,
        } => {
            validate_name(&user)?;
            let r = resolve(&loc)?;
            let mut v = open(&r)?;
            let pw = read_value(value_file.as_deref(), "password")?;
            v.set_user_password(&user, &pw)?;
            eprintln!("stored password verifiers for user '{user}' (SCRAM-SHA-256, mysql_native_password)");
            Ok(())
        }
        UsersCmd::List { loc } => {
            let r = resolve(&loc)?;
            for u in open(&r)?.users() {
                println!("{u}");
            }
            Ok(())
        }
        UsersCmd::Delete { user, loc } => {
            let r = resolve(&loc)?;
            open(&r)?.delete_user(&user)?;
            eprintln!("deleted user '{user}'");
            Ok(())
        }
    })
}

pub fn keys(cmd: KeysCmd) -> anyhow::Result<ExitCode> {
    run(|| match cmd {
        KeysCmd::Rotate { loc } => {
            let r = resolve(&loc)?;
            let mut v = open(&r)?;
            let grace = r.max_ttl.as_secs() + sumun_vault::token::DEFAULT_SKEW_SECS;
            let k = v.rotate_keys(grace)?;
            eprintln!(
                "rotated keys: key-encryption key generation {} ({} items re-wrapped), new signing key '{}' ({} signing keys kept)",
                k.kek_generation, k.items_rewrapped, k.signing_kid, k.signing_keys
            );
            Ok(())
        }
        KeysCmd::List { loc } => {
            let r = resolve(&loc)?;
            let v = open(&r)?;
            let rows: Vec<[String; 3]> = v
                .signing_keys()
                .into_iter()
                .map(|(kid, created, retired)| {
                    [
                        kid,
                        rfc3339(created),
                        retired.map(rfc3339).unwrap_or_else(|| "active".into()),
                    ]
                })
                .collect();
            print_table(&["KID", "CREATED", "RETIRED"], &rows);
            Ok(())
        }
    })
}

pub fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    run(|| {
        let r = resolve(&args.loc)?;
        let ttl =
            sumun_config::parse_duration(&args.ttl).map_err(|e| usage(format!("--ttl: {e}")))?;
        if ttl.as_secs() == 0 {
            return Err(usage("--ttl must be at least 1s"));
        }
        if ttl > r.max_ttl {
            return Err(usage(format!(
                "--ttl {} is longer than the maximum token lifetime of {}s (set [vault] token_max_ttl)",
                args.ttl,
                r.max_ttl.as_secs()
            )));
        }
        let (audience, from) = audience(&args, &r)?;
        let v = open(&r)?;
        let signer = v.token_signer()?;
        let token = signer
            .issue(
                &args.user,
                args.database.as_deref(),
                &audience,
                now_unix_secs(),
                ttl.as_secs(),
            )
            .map_err(|e| usage(e.to_string()))?;
        // stdout is the token alone (scripts capture it); what it is for goes to stderr.
        eprintln!(
            "sumun: token for user '{}' signed for audience '{audience}' ({from}), valid {}",
            args.user, args.ttl
        );
        stdout_line(token.expose())
    })
}

/// The gateway name a token is signed for, and where it came from. A gateway refuses a token
/// for another name with the same error as a wrong password, so a guess is refused here.
fn audience(args: &TokenArgs, r: &Resolved) -> anyhow::Result<(String, String)> {
    let config = r.config.as_ref().map(|p| p.display().to_string());
    match (&args.audience, &r.gateway_name, config) {
        (Some(a), Some(name), Some(config)) if a != name => {
            eprintln!(
                "sumun: warning: --audience '{a}' is not the [gateway] name '{name}' of {config}: that gateway will refuse this token"
            );
            Ok((a.clone(), "from --audience".into()))
        }
        (Some(a), _, _) => Ok((a.clone(), "from --audience".into())),
        (None, Some(name), Some(config)) => {
            Ok((name.clone(), format!("the [gateway] name in {config}")))
        }
        (None, None, Some(config)) => Ok((
            DEFAULT_AUDIENCE.to_string(),
            format!("the default gateway name: {config} sets no [gateway] name"),
        )),
        (None, _, None) => Err(usage(
            "cannot tell which gateway this token is for: pass --config FILE (its [gateway] name) or --audience NAME",
        )),
    }
}
