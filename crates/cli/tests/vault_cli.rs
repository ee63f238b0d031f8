//! The vault commands as a user runs them: the real `sumun` binary against real PostgreSQL,
//! MariaDB and Redis servers started by the testkit. Rotation is interrupted after every step
//! (the `SUMUN_FAULT_ROTATE_EXIT_AFTER` test hook) and rerun; a login with what the vault holds
//! must work at every point.

// Helpers shared by the tests panic like the tests do.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

const SUMUN: &str = env!("CARGO_BIN_EXE_sumun");
const FAULT_ENV: &str = "SUMUN_FAULT_ROTATE_EXIT_AFTER";
const STEPS: [&str; 5] = ["staged", "set", "verified", "promoted", "finished"];

/// Everything every `sumun` process printed in this test binary, for the hygiene check.
static TRANSCRIPT: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn sumun_with(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new(SUMUN);
    cmd.args(args)
        .env_remove("SUMUN_MASTER_KEY")
        .env_remove("SUMUN_MASTER_PASSPHRASE")
        .env_remove("SUMUN_MASTER_KEY_FILE")
        .env_remove(FAULT_ENV)
        // The most verbose logging there is, so the hygiene test sees every line (SUMUN_LOG is
        // the filter the binary reads; RUST_LOG covers any library that reads its own).
        .env("SUMUN_LOG", "trace")
        .env("RUST_LOG", "trace")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run sumun");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let out = Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    TRANSCRIPT
        .lock()
        .unwrap()
        .push((args.join(" "), format!("{}\n{}", out.stdout, out.stderr)));
    out
}

fn sumun(args: &[&str]) -> Out {
    sumun_with(args, &[], None)
}

fn ok(args: &[&str]) -> Out {
    let o = sumun(args);
    assert_eq!(o.code, 0, "sumun {args:?} failed: {}", o.stderr);
    o
}

static N: AtomicU32 = AtomicU32::new(0);

fn temp_vault() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sumun-vault-cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    let v = d.join("vault");
    ok(&["vault", "init", "--dir", v.to_str().unwrap()]);
    v
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn get(vault: &Path, name: &str, stage: &str) -> Option<String> {
    let o = sumun(&[
        "secrets",
        "get",
        name,
        "--stage",
        stage,
        "--vault",
        s(vault),
    ]);
    (o.code == 0).then(|| o.stdout.trim_end_matches('\n').to_string())
}

#[test]
fn round_trip_exit_codes_and_tamper_detection() {
    let v = temp_vault();
    let o = sumun_with(
        &[
            "secrets",
            "put",
            "pg/app",
            "--kind",
            "postgres",
            "--address",
            "127.0.0.1:5432",
            "--username",
            "app",
            "--vault",
            s(&v),
        ],
        &[],
        Some("first-value\n"),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(get(&v, "pg/app", "current").as_deref(), Some("first-value"));
    ok(&["secrets", "put", "pg/app", "--generate", "--vault", s(&v)]);
    let generated = get(&v, "pg/app", "current").unwrap();
    assert_eq!(generated.len(), 32);
    assert_eq!(
        get(&v, "pg/app", "previous").as_deref(),
        Some("first-value")
    );

    let list = ok(&["secrets", "list", "--vault", s(&v)]).stdout;
    assert!(
        list.contains("pg/app") && list.contains("postgres") && list.contains("127.0.0.1:5432")
    );
    assert!(!list.contains("first-value") && !list.contains(&generated));
    let json = ok(&["secrets", "list", "--format", "json", "--vault", s(&v)]).stdout;
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed[0]["current_version"], 2);

    // Bad input: exit 2 with one line on stderr.
    for args in [
        vec!["secrets", "get", "missing", "--vault", s(&v)],
        vec!["secrets", "get", "pg/app", "--vault", "/nonexistent/vault"],
        vec!["secrets", "get", "pg/app"],
        vec!["secrets", "put", "bad name", "--generate", "--vault", s(&v)],
        vec![
            "token",
            "--user",
            "u",
            "--ttl",
            "5h",
            "--audience",
            "sumun",
            "--vault",
            s(&v),
        ],
        vec![
            "token",
            "--user",
            "u",
            "--ttl",
            "soon",
            "--audience",
            "sumun",
            "--vault",
            s(&v),
        ],
        vec!["secrets", "rotate", "pg/nope", "--vault", s(&v)],
    ] {
        let o = sumun(&args);
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert_eq!(o.stderr.lines().count(), 1, "{args:?}: {}", o.stderr);
        assert!(o.stdout.is_empty());
    }
    // Opaque secrets cannot be rotated.
    ok(&["secrets", "put", "other", "--generate", "--vault", s(&v)]);
    assert_eq!(
        sumun(&["secrets", "rotate", "other", "--vault", s(&v)]).code,
        2
    );

    // Wrong master key: a clear message, exit 2.
    let other_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let o = sumun_with(
        &["secrets", "get", "pg/app", "--vault", s(&v)],
        &[("SUMUN_MASTER_KEY", other_key)],
        None,
    );
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("wrong master key"), "{}", o.stderr);
    assert!(o.stdout.is_empty());

    // A flipped byte: exit 1, "corrupted or was tampered with", nothing printed on stdout.
    let file = v.join("vault.json");
    let good = std::fs::read(&file).unwrap();
    for i in [0, good.len() / 3, good.len() / 2, good.len() - 5] {
        let mut bad = good.clone();
        bad[i] ^= 0x04;
        std::fs::write(&file, &bad).unwrap();
        let o = sumun(&["secrets", "get", "pg/app", "--vault", s(&v)]);
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(
            o.stderr.contains("is corrupted or was tampered with"),
            "{}",
            o.stderr
        );
        assert!(o.stdout.is_empty());
    }
    std::fs::write(&file, &good).unwrap();

    ok(&["secrets", "delete", "pg/app", "--vault", s(&v)]);
    assert_eq!(get(&v, "pg/app", "current"), None);
}

#[test]
fn config_file_supplies_dir_audience_and_max_ttl() {
    let v = temp_vault();
    let cfg = v.parent().unwrap().join("sumun.toml");
    std::fs::write(
        &cfg,
        "[gateway]\nname = \"prod-db-gateway\"\n\n[vault]\ndir = \"vault\"\ntoken_max_ttl = \"20m\"\n\n[[listeners]]\nname = \"pg\"\n",
    )
    .unwrap();
    let t = ok(&[
        "token",
        "--user",
        "app_user",
        "--database",
        "app",
        "--config",
        s(&cfg),
    ])
    .stdout;
    let t = t.trim();
    assert!(t.starts_with("sumun1.") && t.len() < 250, "{t}");
    assert!(t.bytes().all(|b| b.is_ascii_graphic()));
    assert_eq!(
        sumun(&["token", "--user", "u", "--ttl", "30m", "--config", s(&cfg)]).code,
        2
    );
    ok(&["token", "--user", "u", "--ttl", "20m", "--config", s(&cfg)]);
}

/// A gateway refuses a token signed for another name with the error a wrong password gets, so
/// `sumun token` never guesses the name: without --config it asks for --audience, and it says
/// on stderr which audience it signed for (stdout stays the token alone).
#[test]
fn token_names_its_audience_and_refuses_to_guess_it() {
    let v = temp_vault();
    let o = sumun(&["token", "--user", "app_user", "--vault", s(&v)]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stdout.is_empty(), "{}", o.stdout);
    assert_eq!(
        o.stderr.trim_end(),
        "sumun: cannot tell which gateway this token is for: pass --config FILE (its [gateway] name) or --audience NAME"
    );

    let o = ok(&[
        "token",
        "--user",
        "app_user",
        "--audience",
        "edge-gw",
        "--vault",
        s(&v),
    ]);
    assert_eq!(o.stdout.lines().count(), 1, "{}", o.stdout);
    assert!(
        o.stderr.contains("audience 'edge-gw' (from --audience)"),
        "{}",
        o.stderr
    );
    let vault = sumun_vault::Vault::open_with(&v, master_key(&v)).unwrap();
    let verifier = vault
        .token_verifier(sumun_vault::VerifyPolicy::default())
        .unwrap();
    let now = sumun_vault::store::now_unix_secs();
    let claims = verifier.verify(o.stdout.trim(), "edge-gw", now).unwrap();
    assert_eq!(claims.user, "app_user");
    assert!(verifier.verify(o.stdout.trim(), "sumun", now).is_err());

    // From a config: its [gateway] name, or the gateway's default name when it sets none.
    let named = v.parent().unwrap().join("named.toml");
    std::fs::write(
        &named,
        "[gateway]\nname = \"prod-db-gateway\"\n\n[vault]\ndir = \"vault\"\n",
    )
    .unwrap();
    let o = ok(&["token", "--user", "app_user", "--config", s(&named)]);
    assert!(
        o.stderr.contains(&format!(
            "audience 'prod-db-gateway' (the [gateway] name in {})",
            named.display()
        )),
        "{}",
        o.stderr
    );
    assert!(verifier
        .verify(o.stdout.trim(), "prod-db-gateway", now)
        .is_ok());
    let unnamed = v.parent().unwrap().join("unnamed.toml");
    std::fs::write(&unnamed, "[vault]\ndir = \"vault\"\n").unwrap();
    let o = ok(&["token", "--user", "app_user", "--config", s(&unnamed)]);
    assert!(o.stderr.contains("audience 'sumun'"), "{}", o.stderr);
    assert!(verifier.verify(o.stdout.trim(), "sumun", now).is_ok());

    // An --audience that is not the config's name is signed as asked, with a warning.
    let o = ok(&[
        "token",
        "--user",
        "app_user",
        "--audience",
        "other",
        "--config",
        s(&named),
    ]);
    assert!(
        o.stderr
            .contains("warning: --audience 'other' is not the [gateway] name 'prod-db-gateway'"),
        "{}",
        o.stderr
    );
    assert!(verifier.verify(o.stdout.trim(), "other", now).is_ok());
}

#[test]
fn concurrent_puts_from_two_processes_lose_nothing() {
    let v = temp_vault();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let v = v.clone();
            std::thread::spawn(move || {
                for i in 0..12 {
                    let name = format!("w{w}/s{i}");
                    let o = sumun_with(
                        &[
                            "secrets",
                            "put",
                            &name,
                            "--value-file",
                            "-",
                            "--vault",
                            s(&v),
                        ],
                        &[],
                        Some(&format!("value-{w}-{i}")),
                    );
                    assert_eq!(o.code, 0, "{}", o.stderr);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let json = ok(&["secrets", "list", "--format", "json", "--vault", s(&v)]).stdout;
    let list: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(list.len(), 24);
    assert_eq!(get(&v, "w1/s7", "current").as_deref(), Some("value-1-7"));
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn key_file_readable_by_others_is_refused() {
    let v = temp_vault();
    let key = v.join("master.key");
    assert_eq!(mode(&key), 0o600, "vault init must write the key file 0600");
    assert_eq!(mode(&v.join("vault.json")), 0o600);
    let key_text = std::fs::read_to_string(&key).unwrap().trim().to_string();
    ok(&["secrets", "put", "a", "--generate", "--vault", s(&v)]);
    // A copy named by SUMUN_MASTER_KEY_FILE is held to the same rule.
    let copy = v.parent().unwrap().join("copy.key");
    std::fs::copy(&key, &copy).unwrap();
    for bad in [0o644, 0o640, 0o604] {
        for (file, env) in [
            (&key, vec![]),
            (&copy, vec![("SUMUN_MASTER_KEY_FILE", s(&copy))]),
        ] {
            chmod(file, bad);
            let o = sumun_with(&["secrets", "get", "a", "--vault", s(&v)], &env, None);
            assert_eq!(o.code, 2, "mode {bad:o}: {}", o.stderr);
            assert!(o.stdout.is_empty());
            assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
            assert!(
                o.stderr.contains("chmod 600") && o.stderr.contains(&format!("{bad:o}")),
                "{}",
                o.stderr
            );
            assert!(!o.stderr.contains(&key_text));
            chmod(file, 0o600);
        }
    }
    chmod(&key, 0o400);
    ok(&["secrets", "get", "a", "--vault", s(&v)]);
    // `vault init` refuses to reuse a key file others can read, too.
    let dir2 = v.parent().unwrap().join("vault2");
    std::fs::create_dir_all(&dir2).unwrap();
    std::fs::copy(&copy, dir2.join("master.key")).unwrap();
    chmod(&dir2.join("master.key"), 0o644);
    let o = sumun(&["vault", "init", "--dir", s(&dir2)]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(!dir2.join("vault.json").exists());
}

#[test]
fn passphrase_vault_uses_argon2id() {
    let dir = std::env::temp_dir().join(format!(
        "sumun-vault-cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let v = dir.join("vault");
    let pass = [("SUMUN_MASTER_PASSPHRASE", "correct horse battery staple")];
    let o = sumun_with(&["vault", "init", "--dir", s(&v)], &pass, None);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("Argon2id"), "{}", o.stderr);
    assert!(
        !v.join("master.key").exists(),
        "a passphrase vault has no key file"
    );
    // The KDF and its cost are recorded in the store (they are not secret).
    let raw = std::fs::read_to_string(v.join("vault.json")).unwrap();
    let json = raw.lines().skip(1).collect::<Vec<_>>();
    let json = json[..json.len() - 1].join("\n");
    let body: serde_json::Value = serde_json::from_str(&json).unwrap();
    let kdf = &body["master"]["kdf"];
    assert_eq!(kdf["algorithm"], "argon2id");
    assert_eq!(kdf["m_cost_kib"], 65536);
    assert_eq!(kdf["t_cost"], 3);
    assert_eq!(body["master"]["source"], "passphrase");

    let o = sumun_with(
        &["secrets", "put", "p", "--vault", s(&v)],
        &pass,
        Some("pass-protected-value"),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = sumun_with(&["secrets", "get", "p", "--vault", s(&v)], &pass, None);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "pass-protected-value\n");
    // No passphrase: says which variable to set. A wrong one: "wrong master key".
    let o = sumun(&["secrets", "get", "p", "--vault", s(&v)]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("SUMUN_MASTER_PASSPHRASE"), "{}", o.stderr);
    let o = sumun_with(
        &["secrets", "get", "p", "--vault", s(&v)],
        &[("SUMUN_MASTER_PASSPHRASE", "correct horse battery stapler")],
        None,
    );
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("wrong master key"), "{}", o.stderr);
    assert!(o.stdout.is_empty());
    assert!(!o.stderr.contains("correct horse"));
}

fn master_key(v: &Path) -> Box<dyn sumun_vault::MasterKey> {
    Box::new(sumun_vault::LocalMasterKey::from_key_file(&v.join("master.key")).unwrap())
}

/// `keys rotate` is killed (SIGKILL) at random moments, over and over: after every kill the
/// vault opens, every value is intact and every token issued so far still verifies.
#[test]
fn keys_rotate_killed_at_random_moments_loses_nothing() {
    let v = temp_vault();
    let mut values = Vec::new();
    for i in 0..20 {
        let (name, value) = (format!("s{i}"), format!("value-number-{i}"));
        let o = sumun_with(
            &["secrets", "put", &name, "--vault", s(&v)],
            &[],
            Some(&value),
        );
        assert_eq!(o.code, 0, "{}", o.stderr);
        values.push((name, value));
    }
    let o = sumun_with(
        &["users", "set-password", "alice", "--vault", s(&v)],
        &[],
        Some("alice-password"),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    // Kill delays spread over twice the time a whole `keys rotate` takes here, so kills land
    // before, during (mostly in the fsyncs) and after the write.
    let mut whole = std::time::Duration::ZERO;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        ok(&["keys", "rotate", "--vault", s(&v)]);
        whole = whole.max(t.elapsed());
    }
    let spread = u64::try_from(whole.as_micros() * 2).unwrap();
    let mut tokens = Vec::new();
    let (mut killed, mut completed, mut mid_write) = (0, 0, 0);
    let mut generation = 1;
    for round in 0..40 {
        if round % 4 == 0 {
            tokens.push(
                ok(&[
                    "token",
                    "--user",
                    "alice",
                    "--audience",
                    "sumun",
                    "--vault",
                    s(&v),
                ])
                .stdout,
            );
        }
        let mut child = Command::new(SUMUN)
            .args(["keys", "rotate", "--vault", s(&v)])
            .env_remove("SUMUN_MASTER_KEY")
            .env_remove("SUMUN_MASTER_PASSPHRASE")
            .env_remove("SUMUN_MASTER_KEY_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // What is tested: a kill at a random moment of the rotation, not a wait.
        std::thread::sleep(std::time::Duration::from_micros(fastrand::u64(0..spread)));
        let _ = child.kill();
        if child.wait().unwrap().success() {
            completed += 1;
        } else {
            killed += 1;
            mid_write += usize::from(tmp_files(&v) > 0);
        }
        let vault = sumun_vault::Vault::open_with(&v, master_key(&v))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(vault.kek_generation() >= generation);
        generation = vault.kek_generation();
        for (name, value) in &values {
            assert_eq!(vault.get(name).unwrap().expose(), value.as_bytes());
        }
        assert!(vault.user_verifiers("alice").unwrap().is_some());
        let verifier = vault
            .token_verifier(sumun_vault::VerifyPolicy::default())
            .unwrap();
        let now = sumun_vault::store::now_unix_secs();
        for t in &tokens {
            let c = verifier.verify(t.trim(), "sumun", now);
            assert!(c.is_ok(), "round {round}: {c:?}");
        }
    }
    assert!(
        killed > 0 && completed > 0,
        "{killed} killed, {completed} completed: the kills did not cover the rotation"
    );
    // A last, uninterrupted rotation leaves no temporary file of the killed ones behind.
    ok(&["keys", "rotate", "--vault", s(&v)]);
    ok(&[
        "token",
        "--user",
        "alice",
        "--audience",
        "sumun",
        "--vault",
        s(&v),
    ]);
    assert_eq!(tmp_files(&v), 0, "a temporary file was left behind");
    eprintln!("keys rotate: {killed} killed ({mid_write} while writing), {completed} completed");
}

fn tmp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .count()
}

/// Rotates `name` with the process killed after each step in turn; after each crash one of
/// the vault's versions must log in, and after each rerun the current one must.
fn rotate_with_kills(v: &Path, name: &str, logs_in: &dyn Fn(&str) -> bool) {
    let original = get(v, name, "current").unwrap();
    assert!(logs_in(&original), "the initial password must log in");
    let mut last = original.clone();
    for step in STEPS {
        let o = sumun_with(
            &["secrets", "rotate", name, "--vault", s(v)],
            &[(FAULT_ENV, step)],
            None,
        );
        assert_eq!(o.code, 86, "killed after {step}: {}", o.stderr);
        let current = get(v, name, "current").unwrap();
        let pending = get(v, name, "pending");
        assert!(
            logs_in(&current) || pending.as_deref().is_some_and(logs_in),
            "after a crash at '{step}' no version in the vault logs in"
        );
        let o = sumun(&["secrets", "rotate", name, "--vault", s(v)]);
        assert_eq!(o.code, 0, "rerun after '{step}': {}", o.stderr);
        let now = get(v, name, "current").unwrap();
        assert!(
            logs_in(&now),
            "after rerunning '{step}' the current version does not log in"
        );
        assert_ne!(now, last, "rerun after '{step}' did not rotate");
        assert_eq!(get(v, name, "pending"), None);
        last = now;
    }
    // A plain rotation retires the previous password on the backend.
    ok(&["secrets", "rotate", name, "--vault", s(v)]);
    let prev = get(v, name, "previous").unwrap();
    assert!(
        !logs_in(&prev),
        "the previous password still logs in after rotation"
    );
    assert!(!logs_in(&original));
    assert!(logs_in(&get(v, name, "current").unwrap()));
}

fn pg_login(port: u16, user: &str, password: &str) -> bool {
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            "postgres",
            "-Atc",
            "select 1",
        ])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The testkit's cluster trusts every local login; require SCRAM for everyone but the
/// superuser the harness itself uses.
fn require_scram(pg: &sumun_testkit::Postgres) {
    let hba = pg.psql("SHOW hba_file").unwrap();
    std::fs::write(
        hba.trim(),
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    pg.psql("SELECT pg_reload_conf()").unwrap();
    // In force once a login over TCP is asked for a password: a role that does not exist
    // is told "password authentication failed" (not "does not exist", as under trust).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &pg.port().to_string()])
            .args(["-U", "sumun_probe", "-d", "postgres", "-Atc", "select 1"])
            .env("PGPASSWORD", "wrong")
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("password authentication failed") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pg_hba.conf never reloaded: {err}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn postgres_rotation_survives_a_crash_after_every_step() {
    let pg = sumun_testkit::Postgres::start().unwrap();
    require_scram(&pg);
    pg.psql("CREATE ROLE app LOGIN PASSWORD 'initial-app-password'")
        .unwrap();
    let port = pg.port();
    assert!(
        !pg_login(port, "app", "wrong"),
        "password auth is not enforced"
    );
    let v = temp_vault();
    let addr = format!("127.0.0.1:{port}");
    let o = sumun_with(
        &[
            "secrets",
            "put",
            "pg/app",
            "--kind",
            "postgres",
            "--address",
            &addr,
            "--username",
            "app",
            "--vault",
            s(&v),
        ],
        &[],
        Some("initial-app-password"),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    rotate_with_kills(&v, "pg/app", &|pw| pg_login(port, "app", pw));
    // The server stores a SCRAM verifier we computed, never the cleartext.
    let stored = pg
        .psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
        .unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
}

fn redis_login(port: u16, user: &str, password: &str) -> bool {
    Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--user",
            user,
            "--pass",
            password,
            "--no-auth-warning",
            "ACL",
            "WHOAMI",
        ])
        .output()
        // A failed AUTH leaves redis-cli connected as `default`, so ask who we are.
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == user)
        .unwrap_or(false)
}

#[test]
fn redis_rotation_survives_a_crash_after_every_step() {
    let r = sumun_testkit::Redis::start().unwrap();
    r.cli(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">initial-redis-pw",
        "~*",
        "&*",
        "+@all",
    ])
    .unwrap();
    let port = r.port();
    assert!(!redis_login(port, "app", "wrong"));
    let v = temp_vault();
    let addr = format!("127.0.0.1:{port}");
    let o = sumun_with(
        &[
            "secrets",
            "put",
            "redis/app",
            "--kind",
            "redis",
            "--address",
            &addr,
            "--username",
            "app",
            "--vault",
            s(&v),
        ],
        &[],
        Some("initial-redis-pw"),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    rotate_with_kills(&v, "redis/app", &|pw| redis_login(port, "app", pw));
}

#[test]
fn redis_rotation_through_an_admin_secret() {
    let r = sumun_testkit::Redis::start().unwrap();
    // `app` may not run ACL commands, so it cannot rotate itself; `admin` can.
    r.cli(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">app-pw-0",
        "~*",
        "+@read",
        "+acl|whoami",
        "+ping",
    ])
    .unwrap();
    r.cli(&[
        "ACL",
        "SETUSER",
        "admin",
        "on",
        ">admin-pw-0",
        "~*",
        "&*",
        "+@all",
    ])
    .unwrap();
    let port = r.port();
    let v = temp_vault();
    let addr = format!("127.0.0.1:{port}");
    for (name, user, pw, admin) in [
        ("redis/admin", "admin", "admin-pw-0", None),
        ("redis/app", "app", "app-pw-0", Some("redis/admin")),
    ] {
        let mut args = vec![
            "secrets",
            "put",
            name,
            "--kind",
            "redis",
            "--address",
            &addr,
            "--username",
            user,
            "--vault",
            s(&v),
        ];
        if let Some(a) = admin {
            args.extend(["--admin-secret", a]);
        }
        let o = sumun_with(&args, &[], Some(pw));
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    let o = ok(&["secrets", "rotate", "redis/app", "--vault", s(&v)]);
    assert!(o.stderr.contains("admin secret"), "{}", o.stderr);
    assert!(redis_login(
        port,
        "app",
        &get(&v, "redis/app", "current").unwrap()
    ));
    assert!(!redis_login(port, "app", "app-pw-0"));
}

fn mysql_login(port: u16, user: &str, password: &str) -> bool {
    Command::new("mysql")
        .args([
            "--protocol=TCP",
            "-h",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-u",
            user,
            "-N",
            "-e",
            "select 1",
        ])
        .env("MYSQL_PWD", password)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn mariadb_rotation_survives_a_crash_after_every_step() {
    let m = sumun_testkit::Mariadb::start().unwrap();
    m.mysql("CREATE USER 'app'@'%' IDENTIFIED BY 'initial-maria-pw'")
        .unwrap();
    m.mysql("CREATE USER 'app'@'localhost' IDENTIFIED BY 'initial-maria-pw'")
        .unwrap();
    let port = m.port();
    assert!(mysql_login(port, "app", "initial-maria-pw"));
    assert!(!mysql_login(port, "app", "wrong"));
    let v = temp_vault();
    let addr = format!("127.0.0.1:{port}");
    let o = sumun_with(
        &[
            "secrets",
            "put",
            "maria/app",
            "--kind",
            "mysql",
            "--address",
            &addr,
            "--username",
            "app",
            "--vault",
            s(&v),
        ],
        &[],
        Some("initial-maria-pw"),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    rotate_with_kills(&v, "maria/app", &|pw| mysql_login(port, "app", pw));
}

#[test]
fn a_full_run_never_prints_a_secret_or_token_where_it_should_not() {
    let r = sumun_testkit::Redis::start().unwrap();
    r.cli(&[
        "ACL",
        "SETUSER",
        "hyg",
        "on",
        ">hygiene-initial-pw",
        "~*",
        "&*",
        "+@all",
    ])
    .unwrap();
    let v = temp_vault();
    let addr = format!("127.0.0.1:{}", r.port());
    let mut secrets: Vec<String> =
        vec!["hygiene-initial-pw".into(), "user-password-hygiene".into()];
    let mut tokens = Vec::new();
    let mut quiet = Vec::new(); // outputs that must hold no secret at all
    let run = |args: &[&str], stdin: Option<&str>, quiet: &mut Vec<String>| {
        let o = sumun_with(args, &[], stdin);
        quiet.push(o.stderr.clone());
        o
    };
    let o = run(
        &[
            "secrets",
            "put",
            "redis/hyg",
            "--kind",
            "redis",
            "--address",
            &addr,
            "--username",
            "hyg",
            "--vault",
            s(&v),
        ],
        Some("hygiene-initial-pw"),
        &mut quiet,
    );
    quiet.push(o.stdout);
    let o = run(
        &["secrets", "put", "gen", "--generate", "--vault", s(&v)],
        None,
        &mut quiet,
    );
    quiet.push(o.stdout);
    secrets.push(get(&v, "gen", "current").unwrap());
    for step in ["set", "promoted"] {
        let o = sumun_with(
            &["secrets", "rotate", "redis/hyg", "--vault", s(&v)],
            &[(FAULT_ENV, step)],
            None,
        );
        quiet.push(o.stdout);
        quiet.push(o.stderr);
        secrets.extend(get(&v, "redis/hyg", "pending"));
        secrets.extend(get(&v, "redis/hyg", "current"));
    }
    for args in [
        vec!["secrets", "rotate", "redis/hyg", "--vault", s(&v)],
        vec!["secrets", "list", "--vault", s(&v)],
        vec!["secrets", "list", "--format", "json", "--vault", s(&v)],
        vec!["keys", "rotate", "--vault", s(&v)],
        vec!["keys", "list", "--vault", s(&v)],
        vec!["vault", "status", "--vault", s(&v)],
        vec!["users", "list", "--vault", s(&v)],
        vec!["secrets", "rotate", "gen", "--vault", s(&v)],
    ] {
        let o = run(&args, None, &mut quiet);
        quiet.push(o.stdout);
    }
    secrets.extend(get(&v, "redis/hyg", "current"));
    secrets.extend(get(&v, "redis/hyg", "previous"));
    let o = run(
        &["users", "set-password", "alice", "--vault", s(&v)],
        Some("user-password-hygiene\n"),
        &mut quiet,
    );
    quiet.push(o.stdout);
    for _ in 0..3 {
        let o = run(
            &[
                "token",
                "--user",
                "alice",
                "--audience",
                "sumun",
                "--vault",
                s(&v),
            ],
            None,
            &mut quiet,
        );
        tokens.push(o.stdout.trim().to_string());
    }
    // Errors on a tampered vault must not leak either.
    let file = v.join("vault.json");
    let good = std::fs::read(&file).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&file, &bad).unwrap();
    let o = run(
        &["secrets", "get", "redis/hyg", "--vault", s(&v)],
        None,
        &mut quiet,
    );
    quiet.push(o.stdout);
    std::fs::write(&file, &good).unwrap();

    let master_key = std::fs::read_to_string(v.join("master.key")).unwrap();
    secrets.push(master_key.trim().to_string());
    let raw = std::fs::read_to_string(&file).unwrap();
    for sec in secrets.iter().chain(&tokens) {
        assert!(sec.len() >= 8, "too short to search for: {sec:?}");
        for q in &quiet {
            assert!(
                !q.contains(sec.as_str()),
                "a secret or token appeared in output:\n{q}"
            );
        }
        assert!(
            !raw.contains(sec.as_str()),
            "a secret appeared in the store file"
        );
    }
    // And across every process this test binary ran, stderr never held one.
    for (args, text) in TRANSCRIPT.lock().unwrap().iter() {
        if args.starts_with("secrets get") || args.starts_with("token") {
            continue;
        }
        for sec in secrets.iter().chain(&tokens) {
            assert!(
                !text.contains(sec.as_str()),
                "`sumun {args}` printed a secret"
            );
        }
    }
}
