//! What a newcomer meets on a first run, with the real `sumun` binary: a quickstart port that
//! is already taken (named, with the flag that moves it), the port flags and --free-ports on a
//! reused quickstart directory, and log lines without colour codes when stderr is not a
//! terminal. No test binds a standard port: every port is free or held by the test itself, and
//! the quickstart targets are pointed at ports nobody listens on.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sumun_testkit::free_port;

const SUMUN: &str = env!("CARGO_BIN_EXE_sumun");

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "sumun-first-run-{tag}-{}-{}",
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

/// A child killed when the test ends, however it ends.
struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

/// Runs `cmd` to its end (a command expected to fail fast; killed after 60 s so that one
/// which serves instead fails the test rather than hanging it).
fn finish(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sumun");
    let pid = child.id();
    let done = Arc::new(Mutex::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            if !eventually(Duration::from_secs(60), || *done.lock().expect("lock")) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        })
    };
    let out = child.wait_with_output().expect("wait");
    *done.lock().expect("lock") = true;
    let _ = watchdog.join();
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn quickstart(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(SUMUN);
    cmd.arg("quickstart")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env("SUMUN_LOG", "info");
    cmd
}

/// A quickstart port someone else holds is named, with its listener and the flag that moves
/// it; the flags rewrite only the ports of the reused config (an edit survives); --free-ports
/// serves on ports the system picked, printed and written to the config; a flag for a listener
/// the config no longer has is refused, not ignored.
#[test]
fn quickstart_names_a_busy_port_and_the_flags_move_it() {
    let dir = Dir::new("ports");
    let qs = dir.path("qs");
    let config = qs.join("sumun.toml");
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port();
    let (pg, mariadb, redis, admin) = (free_port(), free_port(), free_port(), free_port());
    let p = |n: u16| n.to_string();

    // The PostgreSQL port is taken: nothing is served, and the error says what to do.
    let out = finish(&mut quickstart(
        &qs,
        &[
            "--pg-port",
            &p(busy_port),
            "--mariadb-port",
            &p(mariadb),
            "--redis-port",
            &p(redis),
            "--admin-port",
            &p(admin),
        ],
    ));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("sumun: cannot start:"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        line.contains(&format!(
            "port {busy_port} (listener 'postgres', 127.0.0.1:{busy_port}) is already in use"
        )),
        "{line}"
    );
    assert!(
        line.contains("rerun with --pg-port PORT, or with --free-ports"),
        "{line}"
    );
    assert!(!text(&out.stdout).contains("Serving."));

    // Point the targets at ports nobody listens on (never the machine's own databases), and
    // make an edit that must survive the port rewrites.
    let original = std::fs::read_to_string(&config).expect("config written");
    assert!(
        original.contains(&format!("bind = \"127.0.0.1:{busy_port}\"")),
        "{original}"
    );
    let mut edited = original;
    for backend in ["127.0.0.1:5432", "127.0.0.1:3306", "127.0.0.1:6379"] {
        edited = edited.replace(backend, &format!("127.0.0.1:{}", free_port()));
    }
    edited.push_str("\n# my own edit\n");
    std::fs::write(&config, &edited).expect("edit config");

    // Now the admin port is taken; --pg-port moves the PostgreSQL listener of the reused config.
    let out = finish(&mut quickstart(
        &qs,
        &["--pg-port", &p(pg), "--admin-port", &p(busy_port)],
    ));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the bind of listener 'postgres' is now 127.0.0.1:{pg} (was 127.0.0.1:{busy_port}); the rest of the file is unchanged"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "sumun: cannot start: port {busy_port} (the admin API, 127.0.0.1:{busy_port}) is already in use"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("rerun with --admin-port PORT"), "{stderr}");
    let now = std::fs::read_to_string(&config).expect("config");
    assert_eq!(
        now,
        edited
            .replace(
                &format!("bind = \"127.0.0.1:{busy_port}\""),
                &format!("bind = \"127.0.0.1:{pg}\"")
            )
            .replace(
                &format!("listen = \"127.0.0.1:{admin}\""),
                &format!("listen = \"127.0.0.1:{busy_port}\"")
            ),
        "only the two ports may change"
    );

    // --free-ports: served on ports the system picked, printed, and kept in the config. The
    // config's current ports are held here, so the picks must differ from them.
    let _held: Vec<TcpListener> = [pg, mariadb, redis]
        .iter()
        .map(|&port| TcpListener::bind(("127.0.0.1", port)).expect("hold a former port"))
        .collect();
    let mut child = Command::new(SUMUN)
        .args(["quickstart", "--free-ports", "--dir"])
        .arg(&qs)
        .env("SUMUN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn quickstart");
    let printed = Arc::new(Mutex::new(String::new()));
    for pipe in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let sink = printed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = sink.lock().expect("lock");
                all.push_str(&line);
                all.push('\n');
            }
        });
    }
    let mut served = Running(child);
    let output = || printed.lock().expect("lock").clone();
    assert!(
        eventually(Duration::from_secs(30), || output().contains("Serving.")),
        "{}",
        output()
    );
    let output = output();
    let config_now = std::fs::read_to_string(&config).expect("config");
    assert!(config_now.contains("# my own edit"), "{config_now}");
    for listener in ["postgres", "mariadb", "redis"] {
        let line = output
            .lines()
            .find(|l| l.starts_with(&format!("{listener} (")))
            .unwrap_or_else(|| panic!("{listener}: {output}"));
        let bind: SocketAddr = line
            .split(' ')
            .nth(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line}"));
        assert!(![6432, 13306, 16379].contains(&bind.port()), "{line}");
        assert!(
            config_now.contains(&format!("bind = \"{bind}\"")),
            "{bind} is not in the config: {config_now}"
        );
        assert!(
            output.contains(&format!(
                "the bind of listener '{listener}' is now {bind} (was"
            )),
            "{output}"
        );
        assert!(
            TcpStream::connect_timeout(&bind, Duration::from_secs(2)).is_ok(),
            "{listener} does not listen on {bind}"
        );
    }
    assert!(
        !config_now.contains(&format!(":{busy_port}\"")),
        "{config_now}"
    );
    // The admin port moved too, and `sumun status --config` finds it there.
    let status = finish(
        Command::new(SUMUN)
            .args(["status", "--config"])
            .arg(&config),
    );
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(text(&status.stdout).contains("postgres"));
    let _ = Command::new("kill")
        .args(["-TERM", &served.0.id().to_string()])
        .status();
    assert!(
        eventually(Duration::from_secs(30), || served
            .0
            .try_wait()
            .is_ok_and(|s| s.is_some())),
        "quickstart did not stop on SIGTERM"
    );

    // A flag for a listener the config no longer has is refused (exit 2), not ignored.
    let renamed = config_now.replacen("name = \"redis\"\nbind", "name = \"cache\"\nbind", 1);
    assert_ne!(renamed, config_now);
    std::fs::write(&config, &renamed).expect("rename listener");
    let port = free_port();
    let out = finish(&mut quickstart(
        &qs,
        &["--redis-port", &p(port), "--no-serve"],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!(
            "sumun: --redis-port {port} cannot apply: {} (reused as is) has no listener named 'redis'; edit the file yourself",
            config.canonicalize().expect("canonical").display()
        )
    );
    assert_eq!(std::fs::read_to_string(&config).expect("config"), renamed);
    drop(busy);
}

fn serve_config(dir: &Dir, listen: u16) -> PathBuf {
    let path = dir.path("sumun.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[gateway]
name = "colours"

[[security_groups]]
name = "local"
ingress = [{{ cidr = "127.0.0.1/32" }}]

[[listeners]]
name = "raw"
bind = "127.0.0.1:{listen}"
protocol = "tcp"
target_group = "nowhere"
security_groups = ["local"]

[[target_groups]]
name = "nowhere"
health_check = {{ interval = "1s", timeout = "500ms" }}
targets = [{{ address = "127.0.0.1:{}" }}]
"#,
            free_port()
        ),
    )
    .expect("write config");
    path
}

/// Log lines carry colour codes only for a terminal: a file gets plain text. `sumun serve`
/// logging into a file, and one that fails on a busy port, write no escape sequence; under a
/// pseudo-terminal (`script`) the same run is coloured, unless NO_COLOR is set.
#[test]
fn logs_have_no_colour_codes_unless_stderr_is_a_terminal() {
    let dir = Dir::new("colours");
    let listen = free_port();
    let config = serve_config(&dir, listen);
    let log = dir.path("serve.log");
    let child = Command::new(SUMUN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("SUMUN_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn sumun serve");
    let mut served = Running(child);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    // The unhealthy-target warning comes after "serving": both levels are in the file.
    assert!(
        eventually(Duration::from_secs(30), || read()
            .contains("target is unhealthy")),
        "{}",
        read()
    );
    let _ = Command::new("kill")
        .args(["-TERM", &served.0.id().to_string()])
        .status();
    assert!(
        eventually(Duration::from_secs(30), || served
            .0
            .try_wait()
            .is_ok_and(|s| s.is_some())),
        "serve did not stop"
    );
    let logged = read();
    assert!(logged.contains("serving"), "{logged}");
    assert!(
        !logged.contains("\x1b["),
        "colour codes in a log file: {logged:?}"
    );

    // A port that is taken: the error names it, in plain text too.
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port();
    let busy_dir = Dir::new("colours-busy");
    let busy_config = serve_config(&busy_dir, busy_port);
    let out = finish(
        Command::new(SUMUN)
            .args(["serve", "--config"])
            .arg(&busy_config)
            .env_remove("NO_COLOR"),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("\x1b["), "{stderr:?}");
    assert!(
        stderr.contains(&format!(
            "sumun: cannot start: port {busy_port} (listener 'raw', 127.0.0.1:{busy_port}) is already in use by another process (`ss -ltnp 'sport = :{busy_port}'` shows which): stop it or change this bind in {}",
            busy_config.display()
        )),
        "{stderr}"
    );

    // Under a terminal the same lines are coloured, and NO_COLOR turns that off.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("no `script` here: the terminal half of this test is skipped");
        return;
    }
    let under_tty = |no_color: Option<&str>| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec"])
            .arg(format!("{SUMUN} serve --config {}", busy_config.display()))
            .arg("/dev/null")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = finish(&mut cmd);
        let all = text(&out.stdout);
        assert!(all.contains("cannot start"), "{all}");
        all
    };
    assert!(under_tty(None).contains("\x1b["), "no colour on a terminal");
    assert!(!under_tty(Some("1")).contains("\x1b["), "NO_COLOR ignored");
    drop(busy);
}
