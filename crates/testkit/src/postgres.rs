//! A throwaway PostgreSQL cluster: `initdb` into a temp dir, `postgres` on a free loopback port
//! with its unix socket inside that dir, streaming replicas made with `pg_basebackup -R`. Runs
//! the server binaries as user `postgres` when the tests run as root. Durability is switched
//! off (`fsync=off`): a `kill` still exercises crash recovery, but not the disk.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::{self, Readiness, ServerProcess};
use crate::{free_port, loopback, TempDir};

/// How long a start may take before it is reported as failed, with the server's log.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The OS user the server runs as when the tests run as root.
const OS_USER: &str = "postgres";

/// How to set up a cluster. `Debug` hides the passwords.
#[derive(Clone)]
pub struct PgOptions {
    /// Require `scram-sha-256` passwords for TCP connections (unix sockets stay `trust`), as
    /// a production server would; otherwise everything is `trust`.
    pub password_auth: bool,
    /// The `pg_hba.conf` method for TCP connections when `password_auth` is on:
    /// `scram-sha-256` when `None`; `Some("md5")` for a legacy server (pair it with the setting
    /// `password_encryption = md5` so the roles' passwords are stored as md5 hashes and the
    /// server really asks for md5).
    pub host_auth: Option<String>,
    /// Password of the superuser `postgres`; used by [`Postgres::psql`] when
    /// `password_auth` is on.
    pub superuser_password: String,
    /// Login roles `(name, password)` to create, each allowed to create tables in `public`.
    pub users: Vec<(String, String)>,
    /// Databases to create, owned by `postgres`.
    pub databases: Vec<String>,
    /// Extra server settings, passed as `-c name=value`.
    pub settings: Vec<(String, String)>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            password_auth: false,
            host_auth: None,
            superuser_password: "postgres".into(),
            users: Vec::new(),
            databases: Vec::new(),
            settings: Vec::new(),
        }
    }
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&str> = self.users.iter().map(|(u, _)| u.as_str()).collect();
        f.debug_struct("PgOptions")
            .field("password_auth", &self.password_auth)
            .field("host_auth", &self.host_auth)
            .field("users", &users)
            .field("databases", &self.databases)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A running PostgreSQL cluster (superuser `postgres`) on `127.0.0.1:port()`, killed and
/// deleted on drop.
pub struct Postgres {
    dir: TempDir,
    port: u16,
    superuser_password: String,
    settings: Vec<(String, String)>,
    process: Option<ServerProcess>,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("running", &self.process.is_some())
            .finish_non_exhaustive()
    }
}

/// The newest installed server binary `name` (`/usr/lib/postgresql/<version>/bin/<name>`).
pub(crate) fn pg_bin(name: &str) -> anyhow::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .with_context(|| format!("PostgreSQL server binaries not found under {root:?}"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            Some((v, e.path()))
        })
        .filter(|(_, p)| p.join("bin").join(name).exists())
        .collect();
    versions.sort();
    let (_, dir) = versions
        .pop()
        .with_context(|| format!("no PostgreSQL version under {root:?} has {name}"))?;
    Ok(dir.join("bin").join(name))
}

/// `name` as a quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as a quoted SQL string literal.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl Postgres {
    /// A cluster with trust authentication and no extra users.
    pub fn start() -> anyhow::Result<Postgres> {
        Postgres::start_with(PgOptions::default())
    }

    /// A cluster set up as `opts` says.
    pub fn start_with(opts: PgOptions) -> anyhow::Result<Postgres> {
        let dir = TempDir::new("pg")?;
        std::fs::create_dir(dir.join("sock"))?;
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, format!("{}\n", opts.superuser_password))?;
        process::chown_to(OS_USER, dir.path())?;
        let mut initdb = process::command_as(OS_USER, pg_bin("initdb")?);
        initdb
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("-D")
            .arg(dir.join("data"));
        if opts.password_auth {
            let method = opts.host_auth.as_deref().unwrap_or("scram-sha-256");
            initdb
                .arg("--auth-local=trust")
                .arg(format!("--auth-host={method}"));
        } else {
            initdb.args(["-A", "trust"]);
        }
        let result = process::run(&mut initdb, "initdb");
        let _ = std::fs::remove_file(&pwfile);
        result?;
        let mut pg = Postgres {
            dir,
            port: 0,
            superuser_password: opts.superuser_password,
            settings: opts.settings,
            process: None,
        };
        pg.launch(false)?;
        for (name, password) in &opts.users {
            pg.create_user(name, password)?;
        }
        for db in &opts.databases {
            pg.psql(&format!("CREATE DATABASE {}", ident(db)))?;
        }
        Ok(pg)
    }

    /// [`Postgres::start_with`] on tokio's blocking pool.
    pub async fn start_async(opts: PgOptions) -> anyhow::Result<Postgres> {
        tokio::task::spawn_blocking(move || Postgres::start_with(opts)).await?
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// The directory holding the server's unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The superuser's password (meaningful with `password_auth`).
    pub fn superuser_password(&self) -> &str {
        &self.superuser_password
    }

    /// The postmaster's process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServerProcess::pid)
    }

    /// Whether the server process is running (not killed).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Start the server on `self.port` (or on a fresh free port when `self.port` is 0 or the
    /// chosen one turns out to be taken and `keep_port` is false).
    fn launch(&mut self, keep_port: bool) -> anyhow::Result<()> {
        let log = self.dir.join("postgres.log");
        let attempts = if keep_port { 3 } else { 5 };
        let mut last = String::new();
        for _ in 0..attempts {
            if !keep_port || self.port == 0 {
                self.port = free_port();
            }
            let mut cmd = process::command_as(OS_USER, pg_bin("postgres")?);
            cmd.arg("-D")
                .arg(self.data_dir())
                .args(["-p", &self.port.to_string(), "-k"])
                .arg(self.socket_dir())
                .args(["-c", "listen_addresses=127.0.0.1"])
                // A SIGKILL loses nothing with these (the kernel keeps what was written); only
                // a machine crash would.
                .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
                .args(["-c", "shared_buffers=32MB"]);
            for (name, value) in &self.settings {
                cmd.arg("-c").arg(format!("{name}={value}"));
            }
            let mut proc = ServerProcess::spawn(cmd, &log, "postgres")?;
            // Ready means *this* server answers: when two tests pick the same free port at
            // once, the loser's probe would otherwise reach the winner's server.
            let probe = |pg: &Postgres| {
                pg.psql("select current_setting('data_directory')")
                    .is_ok_and(|dir| crate::same_path(Path::new(&dir), &pg.data_dir()))
            };
            match proc.wait_ready(READY_TIMEOUT, || probe(self)) {
                Readiness::Ready => {
                    self.process = Some(proc);
                    return Ok(());
                }
                Readiness::Exited(status) => {
                    let tail = proc.log_tail(30);
                    proc.kill();
                    if process::port_taken(&tail) {
                        last = tail;
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                    bail!(
                        "postgres on port {} exited ({status}) before accepting connections; \
                         log tail:\n{tail}",
                        self.port
                    );
                }
                Readiness::TimedOut => {
                    let tail = proc.log_tail(30);
                    proc.kill();
                    bail!(
                        "postgres on port {} did not answer `select 1` within {:?}; log tail:\n{tail}",
                        self.port,
                        READY_TIMEOUT
                    );
                }
            }
        }
        bail!("postgres could not get a free port; last log:\n{last}")
    }

    /// Run one `sql` string with `psql -At` as `postgres` on database `postgres` over TCP and
    /// return its stdout without the trailing newline; an error carrying psql's stderr when
    /// it fails. Several statements in one string run as one transaction: use one call each
    /// for `CREATE DATABASE` and the like.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        self.psql_as("postgres", &self.superuser_password, "postgres", sql)
    }

    /// [`Postgres::psql`] as another user and database.
    pub fn psql_as(
        &self,
        user: &str,
        password: &str,
        database: &str,
        sql: &str,
    ) -> anyhow::Result<String> {
        let mut cmd = Command::new("psql");
        cmd.args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", user, "-d", database])
            .args(["-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .env_remove("PGSERVICE")
            .env_remove("PGSSLMODE");
        let out = process::run(&mut cmd, "psql")?;
        Ok(out.trim_end_matches('\n').to_string())
    }

    /// Create a login role with this password that may create tables in `public`.
    pub fn create_user(&self, name: &str, password: &str) -> anyhow::Result<()> {
        self.psql(&format!(
            "CREATE ROLE {} LOGIN PASSWORD {}",
            ident(name),
            literal(password)
        ))
        .with_context(|| format!("cannot create role {name}"))?;
        self.psql(&format!("GRANT CREATE ON SCHEMA public TO {}", ident(name)))?;
        Ok(())
    }

    /// Kill the server at once (SIGKILL, every process of it). Data stays for `restart`.
    pub fn kill(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill();
        }
    }

    /// Kill the server if running and start it again on the same port with the same data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch(true)
    }

    /// A second cluster on its own free port, copied with `pg_basebackup -R` and streaming
    /// from this one as a hot standby.
    pub fn start_replica(&self) -> anyhow::Result<Postgres> {
        let dir = TempDir::new("pg-replica")?;
        std::fs::create_dir(dir.join("sock"))?;
        process::chown_to(OS_USER, dir.path())?;
        let mut backup = process::command_as(OS_USER, pg_bin("pg_basebackup")?);
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-D"])
            .arg(dir.join("data"))
            .env("PGPASSWORD", &self.superuser_password);
        process::run(&mut backup, "pg_basebackup")?;
        let mut replica = Postgres {
            dir,
            port: 0,
            superuser_password: self.superuser_password.clone(),
            settings: self.settings.clone(),
            process: None,
        };
        replica.launch(false)?;
        Ok(replica)
    }

    /// Whether this server is a standby (`pg_is_in_recovery()`).
    pub fn is_in_recovery(&self) -> anyhow::Result<bool> {
        Ok(self.psql("select pg_is_in_recovery()")? == "t")
    }

    /// Promote a standby to primary (`pg_ctl promote`) and wait until it accepts writes.
    pub fn promote(&self) -> anyhow::Result<()> {
        let mut cmd = process::command_as(OS_USER, pg_bin("pg_ctl")?);
        cmd.args(["promote", "-w", "-t", "30", "-D"])
            .arg(self.data_dir());
        process::run(&mut cmd, "pg_ctl promote")?;
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        while self.is_in_recovery()? {
            if std::time::Instant::now() > deadline {
                bail!(
                    "server on port {} still in recovery after promote; log tail:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The last lines of the server's log (stderr).
    pub fn log_tail(&self) -> String {
        process::log_tail(&self.dir.join("postgres.log"), 50)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}
