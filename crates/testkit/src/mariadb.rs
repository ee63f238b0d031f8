//! A throwaway MariaDB server: a data directory made by `mariadb-install-db`, `mariadbd` on a
//! free loopback port with its socket in a temp dir, `root` without a password. The installed
//! data directory is built once per MariaDB version and copied for every server (installing
//! takes seconds, copying a fraction of one); the cache lives under the system temp dir.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::{self, Readiness, ServerProcess};
use crate::{free_port, loopback, TempDir};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Server flags shared by install and run, so the redo log made at install time fits.
const SIZE_FLAGS: [&str; 2] = ["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M"];

/// How to set up a server. `Debug` hides the passwords.
#[derive(Clone, Default)]
pub struct MariadbOptions {
    /// Users `(name, password)` created as `'name'@'%'` with all privileges.
    pub users: Vec<(String, String)>,
    /// Databases to create.
    pub databases: Vec<String>,
}

impl fmt::Debug for MariadbOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&str> = self.users.iter().map(|(u, _)| u.as_str()).collect();
        f.debug_struct("MariadbOptions")
            .field("users", &users)
            .field("databases", &self.databases)
            .finish()
    }
}

/// A running MariaDB server on `127.0.0.1:port()`, killed and deleted on drop.
pub struct Mariadb {
    dir: TempDir,
    port: u16,
    process: Option<ServerProcess>,
}

impl fmt::Debug for Mariadb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mariadb")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("running", &self.process.is_some())
            .finish()
    }
}

fn mariadbd() -> PathBuf {
    [
        "/usr/sbin/mariadbd",
        "/usr/bin/mariadbd",
        "/usr/sbin/mysqld",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| PathBuf::from("mariadbd"))
}

/// `'text'` as a MariaDB string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// `text` as a MariaDB identifier.
fn ident(text: &str) -> String {
    format!("`{}`", text.replace('`', "``"))
}

/// A pristine data directory for the installed MariaDB version, made once and shared.
fn template() -> anyhow::Result<PathBuf> {
    let version = process::run(
        Command::new(mariadbd()).arg("--version"),
        "mariadbd --version",
    )?;
    let tag: String = version
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or("unknown")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let user = if process::is_root() { "root" } else { "user" };
    let cache = std::env::temp_dir().join("sumun-testkit-cache");
    let done = cache.join(format!("mariadb-{tag}-{user}-v1"));
    if done.join("mysql").is_dir() {
        return Ok(done);
    }
    std::fs::create_dir_all(&cache)?;
    // Install beside and rename: concurrent test processes race harmlessly, one rename wins.
    let work = TempDir::new("mariadb-install")?;
    let data = work.join("data");
    let mut install = Command::new("mariadb-install-db");
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .args(["--skip-name-resolve", "--skip-log-bin"])
        .args(SIZE_FLAGS);
    if process::is_root() {
        install.arg("--user=root");
    }
    process::run(&mut install, "mariadb-install-db")?;
    match std::fs::rename(&data, &done) {
        Ok(()) => Ok(done),
        Err(_) if done.join("mysql").is_dir() => Ok(done),
        Err(e) => Err(e).with_context(|| format!("cannot move data dir to {}", done.display())),
    }
}

impl Mariadb {
    /// A server with `root` (no password) and nothing else.
    pub fn start() -> anyhow::Result<Mariadb> {
        Mariadb::start_with(MariadbOptions::default())
    }

    /// A server set up as `opts` says.
    pub fn start_with(opts: MariadbOptions) -> anyhow::Result<Mariadb> {
        let dir = TempDir::new("mariadb")?;
        let template = template()?;
        let mut copy = Command::new("cp");
        copy.arg("-a").arg(&template).arg(dir.join("data"));
        process::run(&mut copy, "cp (mariadb data dir)")?;
        let mut db = Mariadb {
            dir,
            port: 0,
            process: None,
        };
        db.launch(false)?;
        // Anonymous users would shadow 'app'@'%' for clients on this host.
        db.mysql("DELETE FROM mysql.global_priv WHERE User=''; FLUSH PRIVILEGES")?;
        for (name, password) in &opts.users {
            db.create_user(name, password)?;
        }
        for name in &opts.databases {
            db.mysql(&format!("CREATE DATABASE {}", ident(name)))?;
        }
        Ok(db)
    }

    /// [`Mariadb::start_with`] on tokio's blocking pool.
    pub async fn start_async(opts: MariadbOptions) -> anyhow::Result<Mariadb> {
        tokio::task::spawn_blocking(move || Mariadb::start_with(opts)).await?
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("mysql.sock")
    }

    /// The server's process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServerProcess::pid)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    fn launch(&mut self, keep_port: bool) -> anyhow::Result<()> {
        let log = self.dir.join("mariadb.log");
        let attempts = if keep_port { 3 } else { 5 };
        let mut last = String::new();
        for _ in 0..attempts {
            if !keep_port || self.port == 0 {
                self.port = free_port();
            }
            let mut cmd = Command::new(mariadbd());
            // --no-defaults must come first: the machine's my.cnf names port 3306.
            cmd.arg("--no-defaults");
            if process::is_root() {
                cmd.arg("--user=root");
            }
            cmd.arg(format!("--datadir={}", self.dir.join("data").display()))
                .arg(format!("--socket={}", self.socket_path().display()))
                .arg(format!(
                    "--pid-file={}",
                    self.dir.join("mariadb.pid").display()
                ))
                .arg(format!("--port={}", self.port))
                .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
                .args(["--skip-log-bin", "--innodb-flush-log-at-trx-commit=2"])
                .args(["--max-connections=200", "--log-warnings=1"])
                .args(SIZE_FLAGS);
            let mut proc = ServerProcess::spawn(cmd, &log, "mariadbd")?;
            // Ready means *this* server answers (not another test's on the same port).
            let ours = || {
                self.mysql("select @@datadir").is_ok_and(|d| {
                    crate::same_path(std::path::Path::new(d.trim()), &self.dir.join("data"))
                })
            };
            match proc.wait_ready(READY_TIMEOUT, ours) {
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
                        "mariadbd on port {} exited ({status}) before accepting connections; \
                         log tail:\n{tail}",
                        self.port
                    );
                }
                Readiness::TimedOut => {
                    let tail = proc.log_tail(30);
                    proc.kill();
                    bail!(
                        "mariadbd on port {} did not answer `select 1` within {:?}; log tail:\n{tail}",
                        self.port,
                        READY_TIMEOUT
                    );
                }
            }
        }
        bail!("mariadbd could not get a free port; last log:\n{last}")
    }

    /// Run `sql` (one or more `;`-separated statements) with the `mysql` client as `root`
    /// over the unix socket; stdout in batch mode without column names (tab-separated), or an
    /// error carrying the client's stderr.
    pub fn mysql(&self, sql: &str) -> anyhow::Result<String> {
        let mut cmd = Command::new("mysql");
        cmd.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket_path().display()))
            .args(["-uroot", "-N", "-B", "--connect-timeout=5", "-e", sql]);
        let out = process::run(&mut cmd, "mysql")?;
        Ok(out.trim_end_matches('\n').to_string())
    }

    /// [`Mariadb::mysql`] as `user` over TCP to `127.0.0.1:port()`, the way an application
    /// connects (the password goes through the environment, not the command line).
    pub fn mysql_as(&self, user: &str, password: &str, sql: &str) -> anyhow::Result<String> {
        let mut cmd = Command::new("mysql");
        cmd.arg("--no-defaults")
            .args([
                "--protocol=TCP",
                "-h",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
            ])
            .arg(format!("-u{user}"))
            .args(["-N", "-B", "--connect-timeout=5", "-e", sql])
            .env("MYSQL_PWD", password);
        let out = process::run(&mut cmd, "mysql")?;
        Ok(out.trim_end_matches('\n').to_string())
    }

    /// Create `'name'@'%'` with this password and all privileges.
    pub fn create_user(&self, name: &str, password: &str) -> anyhow::Result<()> {
        self.mysql(&format!(
            "CREATE USER {user}@'%' IDENTIFIED BY {pw}; GRANT ALL PRIVILEGES ON *.* TO {user}@'%'",
            user = literal(name),
            pw = literal(password)
        ))
        .with_context(|| format!("cannot create user {name}"))?;
        Ok(())
    }

    /// Kill the server at once (SIGKILL). Data stays for `restart`.
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

    /// The last lines of the server's error log.
    pub fn log_tail(&self) -> String {
        process::log_tail(&self.dir.join("mariadb.log"), 50)
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.kill();
    }
}
