//! A throwaway `redis-server` on a free loopback port, without persistence (`save ""`,
//! `appendonly no`), optionally with a password for the default user and extra ACL users. The
//! settings live in a config file in the temp dir, so a restart comes back the same way.

use std::fmt;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::{self, Readiness, ServerProcess};
use crate::{free_port, loopback, TempDir};

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How to set up a server. `Debug` hides the passwords.
#[derive(Clone, Default)]
pub struct RedisOptions {
    /// `requirepass`: the default user's password.
    pub password: Option<String>,
    /// ACL users `(name, password)` with access to every key, channel and command.
    pub users: Vec<(String, String)>,
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&str> = self.users.iter().map(|(u, _)| u.as_str()).collect();
        f.debug_struct("RedisOptions")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("users", &users)
            .finish()
    }
}

/// A running redis-server on `127.0.0.1:port()`, killed and deleted on drop.
pub struct Redis {
    dir: TempDir,
    port: u16,
    password: Option<String>,
    process: Option<ServerProcess>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("running", &self.process.is_some())
            .finish_non_exhaustive()
    }
}

/// Config-file values are single words here: refuse what would need quoting.
fn word(what: &str, value: &str) -> anyhow::Result<()> {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || "\"'\\#".contains(c))
    {
        bail!("{what} must be non-empty without spaces, quotes, backslashes or '#'");
    }
    Ok(())
}

impl Redis {
    /// A server without authentication.
    pub fn start() -> anyhow::Result<Redis> {
        Redis::start_with(RedisOptions::default())
    }

    /// A server set up as `opts` says.
    pub fn start_with(opts: RedisOptions) -> anyhow::Result<Redis> {
        let dir = TempDir::new("redis")?;
        let mut extra = String::new();
        if let Some(pw) = &opts.password {
            word("redis password", pw)?;
            writeln!(extra, "requirepass {pw}")?;
        }
        for (name, pw) in &opts.users {
            word("redis user name", name)?;
            word("redis user password", pw)?;
            writeln!(extra, "user {name} on >{pw} ~* &* +@all")?;
        }
        std::fs::write(dir.join("extra.conf"), extra)?;
        let mut redis = Redis {
            dir,
            port: 0,
            password: opts.password,
            process: None,
        };
        redis.launch(false)?;
        Ok(redis)
    }

    /// [`Redis::start_with`] on tokio's blocking pool.
    pub async fn start_async(opts: RedisOptions) -> anyhow::Result<Redis> {
        tokio::task::spawn_blocking(move || Redis::start_with(opts)).await?
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// The server's process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServerProcess::pid)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let extra = std::fs::read_to_string(self.dir.join("extra.conf"))?;
        let config = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\nsave \"\"\n\
             appendonly no\ndir {dir}\nlogfile \"\"\n{extra}",
            port = self.port,
            dir = self.dir.path().display(),
        );
        std::fs::write(self.dir.join("redis.conf"), config)?;
        Ok(())
    }

    fn launch(&mut self, keep_port: bool) -> anyhow::Result<()> {
        let log = self.dir.join("redis.log");
        let attempts = if keep_port { 3 } else { 5 };
        let mut last = String::new();
        for _ in 0..attempts {
            if !keep_port || self.port == 0 {
                self.port = free_port();
            }
            self.write_config()?;
            let mut cmd = Command::new("redis-server");
            cmd.arg(self.dir.join("redis.conf"));
            let mut proc = ServerProcess::spawn(cmd, &log, "redis-server")?;
            // Ready means *this* server answers (not another test's on the same port).
            let ping = || {
                self.cli(&["CONFIG", "GET", "dir"]).is_ok_and(|r| {
                    r.lines()
                        .nth(1)
                        .is_some_and(|d| crate::same_path(std::path::Path::new(d), self.dir.path()))
                })
            };
            match proc.wait_ready(READY_TIMEOUT, ping) {
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
                        "redis-server on port {} exited ({status}) before answering PING; \
                         log tail:\n{tail}",
                        self.port
                    );
                }
                Readiness::TimedOut => {
                    let tail = proc.log_tail(30);
                    proc.kill();
                    bail!(
                        "redis-server on port {} did not answer PING within {:?}; log tail:\n{tail}",
                        self.port,
                        READY_TIMEOUT
                    );
                }
            }
        }
        bail!("redis-server could not get a free port; last log:\n{last}")
    }

    /// Run `redis-cli` with `args` as the default user (with the server's password, if any)
    /// and return its output without the trailing newline. An error reply (`ERR ...`,
    /// `NOAUTH ...`, `WRONGPASS ...`) is returned as an error.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        self.cli_inner(None, self.password.as_deref(), args)
    }

    /// [`Redis::cli`] as an ACL user.
    pub fn cli_as(&self, user: &str, password: &str, args: &[&str]) -> anyhow::Result<String> {
        self.cli_inner(Some(user), Some(password), args)
    }

    fn cli_inner(
        &self,
        user: Option<&str>,
        password: Option<&str>,
        args: &[&str],
    ) -> anyhow::Result<String> {
        let mut cmd = Command::new("redis-cli");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "--no-auth-warning",
        ]);
        if let Some(user) = user {
            cmd.args(["--user", user]);
        }
        // The password travels in the environment, never on a command line others can read.
        match password {
            Some(pw) => cmd.env("REDISCLI_AUTH", pw),
            None => cmd.env_remove("REDISCLI_AUTH"),
        };
        cmd.args(args);
        let out = process::run(&mut cmd, "redis-cli").context("redis-cli")?;
        // redis-cli exits 0 on error replies; it prints them as `CODE message` and a blank line.
        let first = out.split_whitespace().next().unwrap_or("");
        let looks_like_error = out.ends_with("\n\n")
            && first.len() > 2
            && first.chars().all(|c| c.is_ascii_uppercase());
        if looks_like_error || out.starts_with("(error)") {
            bail!("redis error reply: {}", out.trim());
        }
        Ok(out.trim_end_matches('\n').to_string())
    }

    /// Kill the server at once (SIGKILL). Its keys are lost (no persistence).
    pub fn kill(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill();
        }
    }

    /// Kill the server if running and start it again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch(true)
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        process::log_tail(&self.dir.join("redis.log"), 50)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
