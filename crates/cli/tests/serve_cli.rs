//! The `sumun` binary as an operator runs it: validate, serve, reload (SIGHUP and on file
//! change, including a broken config), SIGTERM draining a long query, status, cert dev and
//! quickstart.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sumun_testkit::{free_port, Postgres, Redis};

const SUMUN: &str = env!("CARGO_BIN_EXE_sumun");

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "sumun-cli-{tag}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&d).expect("mkdir");
        Dir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `sumun serve` child whose stderr is collected.
struct Served {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Served {
    fn start(config: &Path) -> Served {
        let mut child = Command::new(SUMUN)
            .args(["serve", "--config"])
            .arg(config)
            .env("SUMUN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sumun serve");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().expect("log lock");
                l.push_str(&line);
                l.push('\n');
            }
        });
        Served { child, log }
    }
    fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }
    fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig}");
    }
    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}
impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `check` every 50 ms until it holds or `within` passes.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait (up to 10 s) until `pg` runs `sql` (a client's statement reached the server).
fn server_runs(pg: &Postgres, sql: &str) {
    let probe = format!(
        "select count(*) from pg_stat_activity where state = 'active' and query = '{}'",
        sql.replace('\'', "''")
    );
    assert!(
        eventually(Duration::from_secs(10), || pg
            .psql(&probe)
            .is_ok_and(|n| n == "1")),
        "the server never ran {sql}"
    );
}

fn wait_port(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn redis_config(listen_port: u16, redis_port: u16, admin_port: u16, sg: &str) -> String {
    format!(
        r#"
[gateway]
name = "cli-test"

[admin]
listen = "127.0.0.1:{admin_port}"

[[security_groups]]
name = "local"
ingress = [{{ cidr = "{sg}" }}]

[[listeners]]
name = "redis"
bind = "127.0.0.1:{listen_port}"
protocol = "tcp"
target_group = "redis"
security_groups = ["local"]

[[target_groups]]
name = "redis"
deregistration_delay = "10s"
health_check = {{ interval = "1s", timeout = "500ms" }}
targets = [{{ address = "127.0.0.1:{redis_port}" }}]
"#
    )
}

#[test]
fn status_shows_bans_and_findings() {
    let redis = Redis::start().expect("redis");
    let dir = Dir::new("status-bans");
    let (port, admin) = (free_port(), free_port());
    let config = dir.path("sumun.toml");
    // One refusal is a scan here, and scans ban.
    let toml = redis_config(port, redis.port(), admin, "127.0.0.1/32")
        + "[protection]\nexempt = []\n[protection.scan]\nthreshold = 1\naction = \"block\"\n";
    std::fs::write(&config, toml).expect("write");
    let served = Served::start(&config);
    assert!(
        wait_port(format!("127.0.0.1:{admin}").parse().expect("addr")),
        "{}",
        served.log()
    );
    let socket = std::net::TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    );
    assert!(socket.is_ok(), "listener up");
    // From another address the security group refuses: a scan, and a ban.
    assert!(connect_from("127.0.0.2", port), "curl runs");
    let status = || {
        let out = Command::new(SUMUN)
            .args(["status", "--admin", &format!("http://127.0.0.1:{admin}")])
            .output()
            .expect("status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut text = String::new();
    let shown = eventually(Duration::from_secs(10), || {
        text = status();
        text.contains("BANNED") && text.contains("127.0.0.2") && text.contains("scan")
    });
    assert!(shown, "{text}");
    let finding = text
        .lines()
        .find(|l| l.starts_with("medium") && l.contains("scan"))
        .unwrap_or_default();
    assert!(
        finding.contains("127.0.0.2") && finding.contains("block"),
        "{text}"
    );
    let out = Command::new(SUMUN)
        .args([
            "status",
            "--json",
            "--admin",
            &format!("http://127.0.0.1:{admin}"),
        ])
        .output()
        .expect("status --json");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["bans"][0]["addr"], "127.0.0.2", "{json}");
    assert_eq!(json["findings"][0]["technique"], "T1046", "{json}");
}

/// A TCP connection to 127.0.0.1:`port` from `source` (curl can bind a source address).
fn connect_from(source: &str, port: u16) -> bool {
    Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "2",
            "--interface",
            source,
            &format!("telnet://127.0.0.1:{port}"),
        ])
        .stdin(Stdio::null())
        .output()
        .is_ok()
}

fn redis_cli(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

#[test]
fn validate_reports_every_problem_with_file_line_col_and_exit_2() {
    let dir = Dir::new("validate");
    let path = dir.path("bad.toml");
    std::fs::write(
        &path,
        r#"
[[security_groups]]
name = "app"
ingress = [{ cidr = "10.0.0.0/33" }]

[[listeners]]
name = "pg"
bind = "127.0.0.1:6432"
protocol = "tcp"
target_group = "nope"
security_groups = ["app", "missing"]
idle_timeout = "5 minutes"
"#,
    )
    .expect("write");
    let out = Command::new(SUMUN)
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 4, "every problem is listed:\n{stderr}");
    let shown = path.display().to_string();
    for line in &lines {
        assert!(
            line.starts_with(&format!("{shown}:")),
            "FILE:LINE:COL prefix: {line}"
        );
    }
    assert!(
        stderr.contains(":4:"),
        "the CIDR problem points at line 4:\n{stderr}"
    );
    assert!(stderr.contains("nope"), "{stderr}");
    assert!(stderr.contains("missing"), "{stderr}");

    let good = dir.path("good.toml");
    std::fs::write(
        &good,
        redis_config(free_port(), 6379, free_port(), "127.0.0.1/32"),
    )
    .expect("write");
    let out = Command::new(SUMUN)
        .args(["validate", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn reload_on_sighup_and_on_change_and_a_broken_config_keeps_serving() {
    let redis = Redis::start().expect("redis");
    let dir = Dir::new("reload");
    let (port, admin) = (free_port(), free_port());
    let config = dir.path("sumun.toml");
    std::fs::write(
        &config,
        redis_config(port, redis.port(), admin, "127.0.0.2/32"),
    )
    .expect("write");
    let served = Served::start(&config);
    assert!(
        wait_port(format!("127.0.0.1:{port}").parse().expect("addr")),
        "{}",
        served.log()
    );

    // 127.0.0.1 is not admitted yet.
    let (_, reply) = redis_cli(port, &["ping"]);
    assert_ne!(reply, "PONG");

    // Fix the group and SIGHUP: admitted.
    std::fs::write(
        &config,
        redis_config(port, redis.port(), admin, "127.0.0.1/32"),
    )
    .expect("write");
    served.signal("HUP");
    assert!(
        served.wait_log("config reloaded", Duration::from_secs(5)),
        "{}",
        served.log()
    );
    assert_eq!(redis_cli(port, &["ping"]).1, "PONG");

    // A broken file is refused, logged, and the old config keeps serving.
    std::fs::write(&config, "[[listeners]]\nname = 3\nbogus = true\n").expect("write");
    assert!(
        served.wait_log("config rejected", Duration::from_secs(5)),
        "{}",
        served.log()
    );
    assert_eq!(redis_cli(port, &["ping"]).1, "PONG");
    let log = served.log();
    assert!(
        log.contains("sumun.toml:2:"),
        "the error names FILE:LINE: {log}"
    );
}

#[test]
fn sigterm_drains_a_long_query_then_exits() {
    let pg = Postgres::start().expect("postgres");
    let dir = Dir::new("drain");
    let port = free_port();
    let config = dir.path("sumun.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.1/32" }}]

[[listeners]]
name = "pg"
bind = "127.0.0.1:{port}"
protocol = "tcp"
target_group = "pg"
security_groups = ["local"]

[[target_groups]]
name = "pg"
deregistration_delay = "20s"
targets = [{{ address = "127.0.0.1:{}" }}]
"#,
            pg.port()
        ),
    )
    .expect("write");
    let mut served = Served::start(&config);
    assert!(wait_port(
        format!("127.0.0.1:{port}").parse().expect("addr")
    ));

    let query = std::thread::spawn(move || {
        Command::new("psql")
            .args([
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-c", "select pg_sleep(3), 'finished'"])
            .env("PGSSLMODE", "disable")
            .output()
            .expect("psql")
    });
    server_runs(&pg, "select pg_sleep(3), 'finished'");
    let stopped_at = Instant::now();
    served.signal("TERM");
    assert!(
        served.wait_log("draining", Duration::from_secs(3)),
        "{}",
        served.log()
    );
    // New connections are refused while draining.
    assert!(
        eventually(Duration::from_secs(3), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_err()),
        "listener closed while draining"
    );

    let out = query.join().expect("psql thread");
    assert!(
        out.status.success(),
        "the query in flight finished: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("finished"));
    let status = served
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the drain");
    assert!(status.success(), "{status:?}\n{}", served.log());
    assert!(
        stopped_at.elapsed() < Duration::from_secs(10),
        "did not wait for the full delay"
    );
}

#[test]
fn second_signal_stops_at_once() {
    let pg = Postgres::start().expect("postgres");
    let dir = Dir::new("hardstop");
    let port = free_port();
    let config = dir.path("sumun.toml");
    std::fs::write(
        &config,
        format!(
            "[[security_groups]]\nname = \"l\"\ningress = [{{ cidr = \"127.0.0.1/32\" }}]\n\
             [[listeners]]\nname = \"pg\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\ntarget_group = \"pg\"\nsecurity_groups = [\"l\"]\n\
             [[target_groups]]\nname = \"pg\"\nderegistration_delay = \"60s\"\ntargets = [{{ address = \"127.0.0.1:{}\" }}]\n",
            pg.port()
        ),
    )
    .expect("write");
    let mut served = Served::start(&config);
    assert!(wait_port(
        format!("127.0.0.1:{port}").parse().expect("addr")
    ));
    let query = std::thread::spawn(move || {
        Command::new("psql")
            .args([
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-c", "select pg_sleep(30)"])
            .env("PGSSLMODE", "disable")
            .output()
            .expect("psql")
    });
    server_runs(&pg, "select pg_sleep(30)");
    served.signal("TERM");
    assert!(served.wait_log("draining", Duration::from_secs(3)));
    let t = Instant::now();
    served.signal("INT");
    assert!(
        served.wait_exit(Duration::from_secs(5)).is_some(),
        "second signal stops at once"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    let out = query.join().expect("psql");
    assert!(!out.status.success(), "the query was cut");
}

#[test]
fn status_prints_targets_with_state_and_reason() {
    let redis = Redis::start().expect("redis");
    let dead = free_port();
    let dir = Dir::new("status");
    let (port, admin) = (free_port(), free_port());
    let config = dir.path("sumun.toml");
    let toml = redis_config(port, redis.port(), admin, "127.0.0.1/32").replace(
        &format!("targets = [{{ address = \"127.0.0.1:{}\" }}]", redis.port()),
        &format!(
            "targets = [{{ address = \"127.0.0.1:{}\" }}, {{ address = \"127.0.0.1:{dead}\" }}]",
            redis.port()
        ),
    );
    std::fs::write(&config, toml).expect("write");
    let served = Served::start(&config);
    assert!(
        wait_port(format!("127.0.0.1:{admin}").parse().expect("addr")),
        "{}",
        served.log()
    );
    // Polled until the health checks (every second) have judged both targets.
    let status = || {
        let out = Command::new(SUMUN)
            .args(["status", "--admin", &format!("http://127.0.0.1:{admin}")])
            .output()
            .expect("status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut text = String::new();
    let judged = eventually(Duration::from_secs(15), || {
        text = status();
        let row = |port: u16| {
            text.lines()
                .find(|l| l.contains(&format!(":{port}")))
                .unwrap_or_default()
                .to_string()
        };
        let (live, down) = (row(redis.port()), row(dead));
        live.contains("healthy") && !live.contains("unhealthy") && down.contains("unhealthy")
    });
    assert!(judged, "the targets were never judged: {text}");
    let live = text
        .lines()
        .find(|l| l.contains(&format!(":{}", redis.port())))
        .expect("live target row");
    assert!(
        live.contains("healthy") && !live.contains("unhealthy"),
        "{text}"
    );
    let down = text
        .lines()
        .find(|l| l.contains(&format!(":{dead}")))
        .expect("dead target row");
    assert!(
        down.contains("unhealthy") && down.contains("refused"),
        "{text}"
    );
    assert!(
        text.contains("LISTENER") && text.contains("redis"),
        "{text}"
    );

    let metrics = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{admin}/metrics")])
        .output();
    if let Ok(m) = metrics {
        let body = String::from_utf8_lossy(&m.stdout);
        assert!(
            body.contains("sumun_healthy_targets{target_group=\"redis\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("sumun_unhealthy_targets{target_group=\"redis\"} 1"),
            "{body}"
        );
    }
}

fn write_token(path: &Path, token: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, format!("{token}\n")).expect("write token");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn status_sends_the_admin_token_named_in_the_config() {
    let redis = Redis::start().expect("redis");
    let dir = Dir::new("status-token");
    let (port, admin) = (free_port(), free_port());
    let token = "5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592";
    write_token(&dir.path("admin.token"), token, 0o600);
    let config = dir.path("sumun.toml");
    let toml = redis_config(port, redis.port(), admin, "127.0.0.1/32").replace(
        &format!("listen = \"127.0.0.1:{admin}\"\n"),
        &format!("listen = \"127.0.0.1:{admin}\"\ntoken_file = \"admin.token\"\n"),
    );
    assert!(toml.contains("token_file"), "{toml}");
    std::fs::write(&config, toml).expect("write");
    let served = Served::start(&config);
    assert!(
        wait_port(format!("127.0.0.1:{admin}").parse().expect("addr")),
        "{}",
        served.log()
    );
    let url = format!("http://127.0.0.1:{admin}");

    // Without the token: refused, and told how to send it.
    let out = Command::new(SUMUN)
        .args(["status", "--admin", &url])
        .output()
        .expect("status");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin API answered 401 for /api/listeners") && err.contains("--config"),
        "{err}"
    );

    // With --config: address and token both come from the config.
    let out = Command::new(SUMUN)
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .expect("status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("LISTENER") && text.contains(&format!("127.0.0.1:{port}")),
        "{text}"
    );

    // With --token-file and --admin.
    let out = Command::new(SUMUN)
        .args(["status", "--json", "--admin", &url, "--token-file"])
        .arg(dir.path("admin.token"))
        .output()
        .expect("status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["listeners"][0]["name"], "redis");

    // A wrong token is refused.
    write_token(&dir.path("wrong.token"), &"0".repeat(64), 0o600);
    let out = Command::new(SUMUN)
        .args(["status", "--admin", &url, "--token-file"])
        .arg(dir.path("wrong.token"))
        .output()
        .expect("status");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not accept this token"), "{err}");
    assert!(!served.log().contains(token), "the token is logged");
}

#[test]
fn validate_refuses_an_open_admin_api_and_a_token_file_others_can_read() {
    let dir = Dir::new("validate-admin");
    let config = dir.path("sumun.toml");
    std::fs::write(&config, "[admin]\nlisten = \"0.0.0.0:9900\"\n").expect("write");
    let out = Command::new(SUMUN)
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .expect("validate");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "{}:2:10: [admin]: listen 0.0.0.0:9900 is not a loopback address",
            config.display()
        )) && err.contains("set token_file"),
        "{err}"
    );

    write_token(&dir.path("admin.token"), &"a".repeat(64), 0o644);
    std::fs::write(
        &config,
        "[admin]\nlisten = \"0.0.0.0:9900\"\ntoken_file = \"admin.token\"\n",
    )
    .expect("write");
    let out = Command::new(SUMUN)
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .expect("validate");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":3:14: [admin]: token_file 'admin.token'")
            && err.contains("has mode 0644, so others can read the token"),
        "{err}"
    );
    assert!(!err.contains(&"a".repeat(64)), "{err}");

    write_token(&dir.path("admin.token"), &"a".repeat(64), 0o600);
    let out = Command::new(SUMUN)
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .expect("validate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cert_dev_writes_a_ca_and_server_certificate() {
    let dir = Dir::new("cert");
    let out = Command::new(SUMUN)
        .args(["cert", "dev", "--out"])
        .arg(dir.path("certs"))
        .args(["--host", "db.internal"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["ca.pem", "server.pem", "server-key.pem"] {
        assert!(dir.path("certs").join(f).exists(), "{f}");
    }
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.path("certs/ca.pem"))
        .arg(dir.path("certs/server.pem"))
        .output()
        .expect("openssl");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(dir.path("certs/server.pem"))
        .output()
        .expect("openssl");
    assert!(String::from_utf8_lossy(&text.stdout).contains("DNS:db.internal"));
    // Refuses to overwrite without --force.
    let again = Command::new(SUMUN)
        .args(["cert", "dev", "--out"])
        .arg(dir.path("certs"))
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn quickstart_writes_a_valid_setup_and_prints_client_commands() {
    let dir = Dir::new("quickstart");
    let qs = dir.path("qs");
    let out = Command::new(SUMUN)
        .args(["quickstart", "--no-serve", "--dir"])
        .arg(&qs)
        .output()
        .expect("run quickstart");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("redis-cli --tls --cacert"), "{text}");
    assert!(text.contains("port=6432"), "{text}");
    assert!(text.contains("PGPASSWORD='sumun1."), "{text}");
    assert!(
        text.contains("mariadb -h localhost -P 13306 -u root --ssl"),
        "{text}"
    );
    for l in ["postgres (postgres", "mariadb (mysql", "redis (redis"] {
        let line = text
            .lines()
            .find(|x| x.starts_with(l))
            .unwrap_or_else(|| panic!("{l}: {text}"));
        assert!(
            line.contains("reachable") || line.contains("UNREACHABLE"),
            "{line}"
        );
    }
    let validate = Command::new(SUMUN)
        .args(["validate", "--config"])
        .arg(qs.join("sumun.toml"))
        .output()
        .expect("validate");
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );
    // The admin API asks for a random token kept where only its owner can read it.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let token_file = qs.join("admin.token");
        let mode = std::fs::metadata(&token_file)
            .expect("admin.token")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = std::fs::read_to_string(&token_file).expect("read token");
        let token = token.trim_end();
        assert!(
            token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
            "{token}"
        );
        let config = std::fs::read_to_string(qs.join("sumun.toml")).expect("config");
        assert!(config.contains("token_file = \"admin.token\""), "{config}");
        assert!(
            text.contains(&format!(
                "sumun status --config {}",
                qs.join("sumun.toml").display()
            )),
            "{text}"
        );
        assert!(!text.contains(token), "the admin token is printed: {text}");
    }
    // A second run reuses the files instead of failing on them.
    let again = Command::new(SUMUN)
        .args(["quickstart", "--no-serve", "--dir"])
        .arg(&qs)
        .output()
        .expect("rerun");
    assert!(again.status.success());
}

/// A quickstart written, pointed at a throwaway server and served: its backend `backend` (the
/// address the generated config names) becomes `real`, the listener on `listen` (its default
/// port) moves to a free port, the other listeners to port 0 and the admin API to a free port.
/// `printed` is the client line quickstart printed for it (the one `is_line` picks) and
/// `token` the token in it.
struct Quickstarted {
    _dir: Dir,
    qs: PathBuf,
    port: u16,
    line: String,
    token: String,
    served: Served,
}

fn quickstarted(
    tag: &str,
    backend: &str,
    real: SocketAddr,
    listen: u16,
    is_line: impl Fn(&str) -> bool,
) -> Quickstarted {
    let dir = Dir::new(tag);
    let qs = dir.path("qs");
    let out = Command::new(SUMUN)
        .args(["quickstart", "--no-serve", "--dir"])
        .arg(&qs)
        .output()
        .expect("run quickstart");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = qs.join("sumun.toml");
    let port = free_port();
    let mut text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(backend, &real.to_string())
        .replace("127.0.0.1:9900", &format!("127.0.0.1:{}", free_port()));
    for default in [6432, 13306, 16379] {
        let new = if default == listen { port } else { 0 };
        text = text.replace(
            &format!("127.0.0.1:{default}\""),
            &format!("127.0.0.1:{new}\""),
        );
    }
    std::fs::write(&config, text).expect("write config");
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let line = printed
        .lines()
        .find(|l| is_line(l.trim_start()))
        .unwrap_or_else(|| panic!("no client line: {printed}"))
        .to_string();
    let token = line
        .split('\'')
        .nth(1)
        .unwrap_or_else(|| panic!("no token in {line}"))
        .to_string();
    let served = Served::start(&config);
    assert!(
        served.wait_log("serving", Duration::from_secs(20)),
        "{}",
        served.log()
    );
    Quickstarted {
        _dir: dir,
        qs,
        port,
        line,
        token,
        served,
    }
}

/// The quickstart's PostgreSQL command, pasted as printed, works: pointed at a throwaway
/// PostgreSQL (the generated config names the standard port) and served, the token it printed
/// logs in through TLS with verify-full against the dev CA.
#[test]
fn quickstart_psql_command_logs_in_with_the_printed_token() {
    let pg = Postgres::start().expect("start postgres");
    let q = quickstarted("quickstart-pg", "127.0.0.1:5432", pg.addr(), 6432, |l| {
        l.contains("PGPASSWORD=")
    });
    let (qs, port, token, served) = (&q.qs, q.port, q.token.as_str(), &q.served);
    let ca = qs.join("certs/ca.pem");
    let conn = format!(
        "host=localhost port={port} sslmode=verify-full sslrootcert={} user=quickstart dbname=postgres",
        ca.display()
    );
    let psql = Command::new("psql")
        .args([
            "-X",
            "-At",
            &conn,
            "-c",
            "select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()",
        ])
        .env("PGPASSWORD", token)
        .output()
        .expect("psql");
    assert!(
        psql.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&psql.stderr),
        served.log()
    );
    // Through the gateway as the vault's backend user; the client leg is TLS (the backend
    // leg is plain loopback, so the server reports ssl = false).
    assert_eq!(String::from_utf8_lossy(&psql.stdout).trim(), "postgres|f");
    assert!(
        !served.log().contains(token),
        "the token appears in the gateway log"
    );
}

/// The quickstart's MariaDB command, pasted as printed, works: pointed at a throwaway MariaDB
/// whose `root` has no password over loopback (as a development machine's often has), the
/// token it printed logs in through the `mysql` listener over TLS, verified against the dev CA.
#[test]
fn quickstart_mariadb_command_logs_in_with_the_printed_token() {
    let db = sumun_testkit::Mariadb::start().expect("start mariadb");
    db.mysql(
        "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; \
         GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1'",
    )
    .expect("root over loopback");
    let q = quickstarted(
        "quickstart-maria",
        "127.0.0.1:3306",
        db.addr(),
        13306,
        |l| l.starts_with("mariadb -h"),
    );
    let (port, line, token, served) = (q.port, q.line.as_str(), q.token.as_str(), &q.served);
    // The printed line, with the port this test serves on.
    let args: Vec<String> = line
        .split_whitespace()
        .skip(1)
        .map(|a| {
            if a == "13306" {
                port.to_string()
            } else if a.starts_with("--password=") {
                format!("--password={token}")
            } else {
                a.to_string()
            }
        })
        .collect();
    assert!(args.iter().any(|a| a == "--ssl"), "{line}");
    let maria = Command::new("mariadb")
        .args(&args)
        .args([
            "--ssl-verify-server-cert",
            "-N",
            "-B",
            "-e",
            "select current_user()",
        ])
        .output()
        .expect("mariadb");
    assert!(
        maria.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&maria.stderr),
        served.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&maria.stdout).trim(),
        "root@127.0.0.1"
    );
    assert!(
        !served.log().contains(token),
        "the token appears in the gateway log"
    );
}

/// The quickstart's Redis command, pasted as printed, works: pointed at a throwaway Redis
/// without a password (as a development machine's usually is), the token it printed logs in
/// as `default` through the `redis` listener over TLS, verified against the dev CA.
#[test]
fn quickstart_redis_command_logs_in_with_the_printed_token() {
    let redis = Redis::start().expect("start redis");
    let q = quickstarted(
        "quickstart-redis",
        "127.0.0.1:6379",
        redis.addr(),
        16379,
        |l| l.starts_with("redis-cli "),
    );
    let (port, line, token, served) = (q.port, q.line.as_str(), q.token.as_str(), &q.served);
    let args: Vec<String> = line
        .split_whitespace()
        .skip(1)
        .map(|a| {
            if a == "16379" {
                port.to_string()
            } else if a.starts_with('\'') {
                token.to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
    let cli = Command::new("redis-cli")
        .args(&args)
        .output()
        .expect("redis-cli");
    assert_eq!(
        String::from_utf8_lossy(&cli.stdout).trim(),
        "PONG",
        "{}\n{}",
        String::from_utf8_lossy(&cli.stderr),
        served.log()
    );
    assert!(
        !served.log().contains(token),
        "the token appears in the gateway log"
    );
}
