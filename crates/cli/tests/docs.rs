//! The docs are executable, so they cannot drift from the code:
//!
//! - every fenced `toml` block in README.md and docs/*.md, and every examples/*.toml, is a
//!   complete config that the real `sumun validate` accepts, unless its info string says
//!   `toml fragment` (a part of a config, shown to explain some keys). The files a config names
//!   are made first in a scratch directory (certificates by `sumun cert dev`, a master key by
//!   `sumun vault init`, token files with mode 0600, log directories); absolute paths under
//!   `/etc/sumun`, `/var/lib/sumun` and `/var/log/sumun` are moved into that directory.
//! - every guide (docs/guide-*.md) runs: its `sh` blocks (not `sh no-run`) and its
//!   `toml file=NAME` blocks (written to NAME) become one bash script, in order, run against
//!   the testkit's servers with the guide's addresses replaced by theirs; each `text output`
//!   block is what the `sh` block before it prints on stdout.
//!
//! How to write docs that pass: docs/writing-docs.md.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sumun_testkit::{free_port, PgOptions, Postgres, TempDir};

const SUMUN: &str = env!("CARGO_BIN_EXE_sumun");

/// The guides and the test that runs each; `every_guide_is_run` keeps the list complete.
const GUIDES: &[&str] = &["docs/guide-postgres.md"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// A fenced block of a Markdown file.
#[derive(Debug)]
struct Block {
    /// `FILE:LINE` of the opening fence, for messages.
    at: String,
    lang: String,
    /// The words of the info string after the language (`fragment`, `no-run`, `file=NAME`).
    flags: Vec<String>,
    body: String,
}

impl Block {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
    fn file(&self) -> Option<&str> {
        self.flags.iter().find_map(|f| f.strip_prefix("file="))
    }
}

/// The fenced blocks of `path` (relative to the root), in order. A fence may be indented (in a
/// list item); its indentation is taken off the block's lines.
fn blocks(rel: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(root().join(rel)).expect("read a doc");
    let mut out = Vec::new();
    let mut open: Option<(Block, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let mut words = info.split_whitespace().map(str::to_string);
                    let lang = words.next().unwrap_or_default();
                    let block = Block {
                        at: format!("{rel}:{}", i + 1),
                        lang,
                        flags: words.collect(),
                        body: String::new(),
                    };
                    open = Some((block, indent));
                }
            }
            Some((mut block, fence_indent)) => {
                if trimmed.trim_end() == "```" {
                    out.push(block);
                } else {
                    let cut = line
                        .char_indices()
                        .take_while(|(n, c)| *n < fence_indent && *c == ' ')
                        .count();
                    block.body.push_str(&line[cut..]);
                    block.body.push('\n');
                    open = Some((block, fence_indent));
                }
            }
        }
    }
    assert!(open.is_none(), "{rel}: a fenced block is never closed");
    out
}

/// README.md and docs/*.md, relative to the root.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    files.extend(files_in("docs", ".md"));
    files
}

fn files_in(dir: &str, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join(dir))
        .expect("read a directory")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.ends_with(suffix))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    names.sort();
    names
}

/// Replace every pattern in one pass, so a replacement is never replaced again (a PostgreSQL
/// port such as 36432 must not be taken for the gateway's 6432).
fn substitute(text: &str, subs: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while !rest.is_empty() {
        for (from, to) in subs {
            if let Some(after) = rest.strip_prefix(from.as_str()) {
                out.push_str(to);
                rest = after;
                continue 'outer;
            }
        }
        let c = rest.chars().next().expect("rest is not empty");
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output().expect("run a command")
}

/// Files every config may name: a dev CA and server certificate, a master key.
struct Kit {
    certs: PathBuf,
    master_key: PathBuf,
}

impl Kit {
    fn new(dir: &Path) -> Kit {
        let certs = dir.join("kit-certs");
        let out = run(Command::new(SUMUN)
            .args(["cert", "dev", "--out"])
            .arg(&certs));
        assert!(out.status.success(), "sumun cert dev: {out:?}");
        let vault = dir.join("kit-vault");
        let out = run(Command::new(SUMUN)
            .args(["vault", "init", "--dir"])
            .arg(&vault)
            .env_remove("SUMUN_MASTER_KEY")
            .env_remove("SUMUN_MASTER_PASSPHRASE"));
        assert!(out.status.success(), "sumun vault init: {out:?}");
        Kit {
            certs,
            master_key: vault.join("master.key"),
        }
    }

    /// Makes the files `config` (written in `dir`) names, where they do not exist yet.
    fn prepare(&self, dir: &Path, config: &toml::Table) {
        let path = |v: &toml::Value| -> Option<PathBuf> {
            let p = Path::new(v.as_str()?);
            Some(if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            })
        };
        let place = |to: Option<PathBuf>, from: &Path, mode: Option<u32>| {
            let Some(to) = to else { return };
            if to.exists() {
                return;
            }
            std::fs::create_dir_all(to.parent().expect("a file has a parent")).expect("mkdir");
            std::fs::copy(from, &to).expect("copy a kit file");
            if let Some(mode) = mode {
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
                    .expect("chmod");
            }
        };
        let get = |t: &toml::Table, k: &str| t.get(k).and_then(path);
        if let Some(tls) = config.get("tls").and_then(|v| v.as_table()) {
            for settings in tls.values().filter_map(|v| v.as_table()) {
                place(get(settings, "cert"), &self.certs.join("server.pem"), None);
                place(
                    get(settings, "key"),
                    &self.certs.join("server-key.pem"),
                    Some(0o600),
                );
                place(get(settings, "client_ca"), &self.certs.join("ca.pem"), None);
            }
        }
        if let Some(groups) = config.get("target_groups").and_then(|v| v.as_array()) {
            for group in groups.iter().filter_map(|v| v.as_table()) {
                place(get(group, "tls_ca"), &self.certs.join("ca.pem"), None);
            }
        }
        let section = |name: &str| config.get(name).and_then(|v| v.as_table());
        if let Some(vault) = section("vault") {
            place(get(vault, "key_file"), &self.master_key, Some(0o600));
        }
        if let Some(to) = section("admin").and_then(|a| get(a, "token_file")) {
            if !to.exists() {
                std::fs::create_dir_all(to.parent().expect("a file has a parent")).expect("mkdir");
                std::fs::write(
                    &to,
                    format!("{:032x}{:032x}\n", fastrand::u128(..), fastrand::u128(..)),
                )
                .expect("write a token file");
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod");
            }
        }
        for log in ["flow_logs", "audit"] {
            if let Some(file) = section(log).and_then(|s| get(s, "path")) {
                std::fs::create_dir_all(file.parent().expect("a file has a parent"))
                    .expect("mkdir");
            }
        }
    }
}

#[test]
fn every_complete_toml_config_validates() {
    let work = TempDir::new("docs-configs").expect("temp dir");
    let kit = Kit::new(work.path());
    let mut configs: Vec<(String, String)> = Vec::new();
    for file in markdown_files() {
        for block in blocks(&file) {
            if block.lang == "toml" && !block.has("fragment") {
                configs.push((block.at, block.body));
            }
        }
    }
    for file in files_in("examples", ".toml") {
        let text = std::fs::read_to_string(root().join(&file)).expect("read an example");
        configs.push((file, text));
    }
    let mut failures = Vec::new();
    for (n, (at, text)) in configs.iter().enumerate() {
        let dir = work.join(format!("config-{n}"));
        std::fs::create_dir(&dir).expect("mkdir");
        let subs: Vec<(String, String)> = ["/etc/sumun/", "/var/lib/sumun/", "/var/log/sumun/"]
            .iter()
            .map(|p| (p.to_string(), format!("{}{p}", dir.display())))
            .collect();
        let text = substitute(text, &subs);
        let config = dir.join("sumun.toml");
        std::fs::write(&config, &text).expect("write the config");
        // A block that is not TOML at all is left to `validate` to report.
        if let Ok(table) = text.parse::<toml::Table>() {
            kit.prepare(&dir, &table);
        }
        let out = run(Command::new(SUMUN)
            .args(["validate", "--config"])
            .arg(&config)
            .env_remove("SUMUN_MASTER_KEY"));
        if !out.status.success() {
            failures.push(format!(
                "{at}: `sumun validate` exited with {} (mark a deliberate fragment ```toml fragment):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The test would pass on no blocks at all; these must be among those it checked.
    for must in [
        "docs/config.md",
        "docs/postgres.md",
        "docs/guide-postgres.md",
        "examples/sumun.toml",
    ] {
        assert!(
            configs.iter().any(|(at, _)| at.starts_with(must)),
            "no complete config checked in {must}"
        );
    }
}

#[test]
fn every_guide_is_run() {
    let guides: Vec<String> = files_in("docs", ".md")
        .into_iter()
        .filter(|f| f.starts_with("docs/guide-"))
        .collect();
    assert_eq!(
        guides, GUIDES,
        "every docs/guide-*.md needs a test in crates/cli/tests/docs.rs that runs it"
    );
}

#[test]
fn guide_postgres_runs() {
    let pg = Postgres::start_with(PgOptions {
        password_auth: true,
        ..PgOptions::default()
    })
    .expect("start postgres");
    let subs = [
        ("127.0.0.1:5432", pg.addr().to_string()),
        ("6432", free_port().to_string()),
        ("9900", free_port().to_string()),
        (
            "sudo -u postgres psql",
            format!(
                "PGPASSWORD='{}' psql -h 127.0.0.1 -p {} -U postgres",
                pg.superuser_password(),
                pg.port()
            ),
        ),
    ];
    run_guide("docs/guide-postgres.md", &subs);
}

/// The `*.log` files the guide wrote (the gateway's log), in the scratch directory and one level
/// below it, for a failure's message.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        dirs.extend(
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
    }
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            if path.extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                out.push_str(&format!("--- {} ---\n{text}\n", path.display()));
            }
        }
    }
    out
}

/// Runs a guide's shell blocks as one bash script in a scratch directory, with the sumun
/// binary under test first on PATH, and checks each `text output` block.
fn run_guide(rel: &str, subs: &[(&str, String)]) {
    let subs: Vec<(String, String)> = subs
        .iter()
        .map(|(f, t)| (f.to_string(), t.clone()))
        .collect();
    let mut script = String::from(
        "set -euo pipefail\n\
         trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n",
    );
    // Block number → where it is in the guide; expected outputs by block number.
    let mut ran: BTreeMap<usize, String> = BTreeMap::new();
    let mut expected: Vec<(usize, String, String)> = Vec::new();
    let mut last_sh = None;
    for block in blocks(rel) {
        match block.lang.as_str() {
            "sh" if !block.has("no-run") => {
                let n = ran.len() + 1;
                script.push_str(&format!("printf '@@block {n}@@\\n'\n"));
                script.push_str(&substitute(&block.body, &subs));
                ran.insert(n, block.at.clone());
                last_sh = Some(n);
            }
            "toml" => {
                if let Some(name) = block.file() {
                    script.push_str(&format!(
                        "cat > '{name}' <<'SUMUN_DOCS_EOF'\n{}SUMUN_DOCS_EOF\n",
                        substitute(&block.body, &subs)
                    ));
                }
            }
            "text" if block.has("output") => {
                let n = last_sh
                    .unwrap_or_else(|| panic!("{}: an output block follows no sh block", block.at));
                expected.push((n, block.at.clone(), substitute(&block.body, &subs)));
            }
            _ => {}
        }
    }
    assert!(!ran.is_empty(), "{rel}: no sh blocks to run");
    assert!(
        !expected.is_empty(),
        "{rel}: no `text output` block to check"
    );

    let work = TempDir::new("docs-guide").expect("temp dir");
    let script_path = work.join("guide.sh");
    std::fs::write(&script_path, &script).expect("write the script");
    let bin_dir = Path::new(SUMUN).parent().expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let stdout_path = work.join("stdout");
    let stderr_path = work.join("stderr");
    let mut cmd = Command::new("bash");
    cmd.arg(&script_path)
        .current_dir(work.path())
        .env("PATH", path)
        .env("HOME", work.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .process_group(0);
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSSLMODE",
        "PGSERVICE",
        "PSQLRC",
        "SUMUN_VAULT_DIR",
        "SUMUN_MASTER_KEY",
        "SUMUN_MASTER_KEY_FILE",
        "SUMUN_MASTER_PASSPHRASE",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().expect("spawn bash");
    let group = child.id();
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Whatever the script left running (a gateway in the background), in its own group.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();

    // Split stdout into each block's output.
    let mut outputs: BTreeMap<usize, String> = BTreeMap::new();
    let mut current: Option<usize> = None;
    let mut rest = stdout.as_str();
    loop {
        let next = rest.find("@@block ");
        let (chunk, after) = match next {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        if let Some(n) = current {
            outputs.entry(n).or_default().push_str(chunk);
        }
        let Some(after) = after else { break };
        let end = after.find("@@\n").expect("a block marker ends with @@");
        current = after["@@block ".len()..end].parse().ok();
        rest = &after[end + 3..];
    }
    let last = outputs.keys().max().copied().unwrap_or(0);
    let ok = status.is_some_and(|s| s.success());
    assert!(
        ok,
        "{rel}: the guide's commands failed ({}) in the block at {}\n\
         --- its stdout ---\n{}\n--- stderr of the script ---\n{stderr}\n{}--- script ---\n{script}",
        status.map_or("timed out after 180 s".to_string(), |s| s.to_string()),
        ran.get(&last)
            .map_or("(before the first block)", String::as_str),
        outputs.get(&last).map_or("", String::as_str),
        logs(work.path()),
    );
    assert_eq!(last, ran.len(), "{rel}: not every block ran");
    let normalize = |s: &str| -> String {
        let lines: Vec<&str> = s.lines().map(str::trim_end).collect();
        let keep = lines
            .iter()
            .rposition(|l| !l.is_empty())
            .map_or(0, |i| i + 1);
        lines[..keep].join("\n")
    };
    for (n, at, want) in &expected {
        let got = outputs.get(n).map_or("", String::as_str);
        assert_eq!(
            normalize(got),
            normalize(want),
            "{at}: the block at {} prints something else than the guide says",
            ran[n]
        );
    }
}
