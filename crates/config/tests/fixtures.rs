//! Data-driven config tests. Every `fixtures/bad/NAME.toml` must fail with exactly the lines in
//! `fixtures/bad/NAME.expected` (as `sumun validate` prints them; paths relative to the crate,
//! which is where cargo runs tests). Set `SUMUN_BLESS=1` to rewrite the expectations after a
//! deliberate change of wording, then review the diff. Valid files are checked field by field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sumun_config::*;

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new("tests/fixtures").join(dir))
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    // Relative to the crate, as a user would type it.
    files
        .into_iter()
        .map(|p| {
            p.strip_prefix(std::env::current_dir().expect("cwd"))
                .map(Path::to_path_buf)
                .unwrap_or(p)
        })
        .collect()
}

fn report(path: &Path) -> String {
    match load(path) {
        Ok(_) => String::new(),
        Err(e) => format!("{e}\n"),
    }
}

#[test]
fn bad_fixtures_report_exactly_the_expected_lines() {
    let bless = std::env::var_os("SUMUN_BLESS").is_some();
    let mut failures = Vec::new();
    let files = fixtures("bad");
    assert!(files.len() >= 10, "fixtures missing: {files:?}");
    for toml in files {
        let expected_path = toml.with_extension("expected");
        let actual = report(&toml);
        assert!(!actual.is_empty(), "{} should be invalid", toml.display());
        if bless {
            std::fs::write(&expected_path, &actual).expect("write expectation");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "== {}\n-- expected\n{expected}-- actual\n{actual}",
                toml.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ten_mistakes_give_ten_lines_with_positions() {
    let errors = load(Path::new("tests/fixtures/bad/ten_mistakes.toml")).expect_err("invalid");
    let at: Vec<(usize, usize)> = errors.problems().iter().map(|p| (p.line, p.col)).collect();
    assert_eq!(
        at,
        [
            (3, 8),
            (6, 10),
            (9, 8),
            (11, 1),
            (16, 12),
            (23, 16),
            (24, 27),
            (26, 16),
            (30, 13),
            (31, 45)
        ],
        "{errors}"
    );
    for p in errors.problems() {
        assert_eq!(p.file, Path::new("tests/fixtures/bad/ten_mistakes.toml"));
        assert!(p.to_string().starts_with(&format!(
            "tests/fixtures/bad/ten_mistakes.toml:{}:{}: ",
            p.line, p.col
        )));
    }
}

#[test]
fn every_bad_fixture_is_reported_in_file_order() {
    for toml in fixtures("bad") {
        let errors = load(&toml).expect_err("invalid");
        let at: Vec<(usize, usize)> = errors.problems().iter().map(|p| (p.line, p.col)).collect();
        let mut sorted = at.clone();
        sorted.sort();
        assert_eq!(at, sorted, "{}", toml.display());
    }
}

fn good(name: &str) -> Config {
    let path = Path::new("tests/fixtures/good").join(name);
    load(&path).unwrap_or_else(|e| panic!("{} should be valid:\n{e}", path.display()))
}

#[test]
fn minimal_config_gets_every_default() {
    let c = good("minimal.toml");
    assert_eq!(c.gateway.name, "sumun");
    assert_eq!(c.gateway.shutdown_timeout, Duration::from_secs(300));
    assert!(c.gateway.watch_config);
    assert_eq!(c.gateway.workers, 0, "one worker per CPU");
    assert_eq!(c.gateway.park_after, Duration::from_secs(1));
    assert!(c.admin.is_none() && c.vault.is_none() && c.flow_logs.is_none() && c.audit.is_none());
    assert!(c.tls.is_empty() && c.users.is_empty());

    let l = &c.listeners[0];
    assert_eq!(l.name, "redis");
    assert_eq!(l.bind, "127.0.0.1:16379".parse().expect("addr"));
    assert_eq!(l.protocol, Protocol::Tcp);
    assert_eq!(l.tls, TlsMode::Off);
    assert_eq!(l.tls_config, None);
    assert_eq!(l.security_groups, Vec::<String>::new());
    assert_eq!(l.proxy_protocol, ProxyProtocolMode::Off);
    assert!(l.trusted_proxies.is_empty());
    assert_eq!(l.idle_timeout, Duration::from_secs(350));
    assert_eq!(l.handshake_timeout, Duration::from_secs(10));
    assert_eq!(l.max_connections, 10_000);

    let g = &c.target_groups[0];
    assert_eq!(g.algorithm, Algorithm::RoundRobin);
    assert_eq!(g.deregistration_delay, Duration::from_secs(300));
    assert!(!g.proxy_protocol_v2);
    assert!(g.fail_open);
    assert_eq!(g.connect_timeout, Duration::from_secs(3));
    assert_eq!(g.connect_retries, 2);
    assert_eq!(g.backend_auth, vec![BackendAuth::ScramSha256]);
    assert_eq!(
        g.health_check,
        HealthCheck {
            enabled: true,
            protocol: HealthCheckProtocol::Tcp,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            healthy_threshold: 3,
            unhealthy_threshold: 3,
            credential: None,
            database: "postgres".into(),
        }
    );
    assert_eq!(
        g.targets,
        [Target {
            address: "localhost:6379".into(),
            addr: "127.0.0.1:6379".parse().expect("addr"),
            role: Role::Any,
            weight: 1
        }]
    );
}

#[test]
fn full_config_reads_every_section() {
    let c = good("full.toml");
    let dir = std::path::absolute("tests/fixtures/good").expect("absolute");
    assert_eq!(c.source, Some(dir.join("full.toml")));
    assert_eq!(c.gateway.name, "prod-db-gateway");
    assert_eq!(c.gateway.shutdown_timeout, Duration::from_secs(90));
    assert!(!c.gateway.watch_config);
    assert_eq!(c.gateway.workers, 4);
    assert_eq!(c.gateway.park_after, Duration::from_secs(5));
    assert_eq!(
        c.admin,
        Some(AdminSettings {
            listen: "127.0.0.1:9900".parse().expect("addr"),
            token_file: None,
            metrics_auth: false,
        })
    );
    assert_eq!(
        c.vault,
        Some(VaultSettings {
            dir: dir.join("vault"),
            key_file: None,
            token_max_ttl: Duration::from_secs(30 * 60),
        })
    );

    let tls = &c.tls["default"];
    assert_eq!(tls.cert, dir.join("../certs/server.pem"));
    assert!(
        tls.cert.starts_with(&dir),
        "relative paths are taken from the config's directory"
    );
    assert_eq!(tls.key, dir.join("../certs/server-key.pem"));
    assert_eq!(tls.policy, TlsPolicy::Tls13Pq);
    assert_eq!(tls.client_ca, Some(dir.join("../certs/clients-ca.pem")));
    assert_eq!(c.tls["compat"].policy, TlsPolicy::Tls12Compat);

    let app = c.security_group("app").expect("app group");
    assert_eq!(app.description.as_deref(), Some("application tier"));
    assert_eq!(app.ingress.len(), 2);
    assert_eq!(app.ingress[0].cidr, "10.0.0.0/16".parse().expect("cidr"));
    assert_eq!(app.ingress[0].description.as_deref(), Some("app subnets"));
    assert_eq!(app.ingress[1].cidr, "127.0.0.1/32".parse().expect("cidr"));
    assert_eq!(app.ingress[1].description, None);
    assert_eq!(
        c.security_group("v6").expect("v6").ingress[0].cidr,
        "::1/128".parse().expect("cidr")
    );

    let pg = &c.listeners[0];
    assert_eq!(pg.name, "pg");
    assert_eq!(pg.protocol, Protocol::Postgres);
    assert_eq!(pg.tls, TlsMode::Required);
    assert_eq!(pg.tls_config.as_deref(), Some("default"));
    assert_eq!(pg.security_groups, ["app", "v6"]);
    assert_eq!(pg.proxy_protocol, ProxyProtocolMode::Accept);
    assert_eq!(pg.trusted_proxies, ["10.1.0.0/24".parse().expect("cidr")]);
    // Protocol listeners keep idle clients like RDS Proxy: 30 minutes by default.
    assert_eq!(pg.idle_timeout, Duration::from_secs(1800));
    assert_eq!(pg.handshake_timeout, Duration::from_millis(500));
    assert_eq!(pg.max_connections, 2000);
    let compat = &c.listeners[1];
    assert_eq!(
        (compat.protocol, compat.tls),
        (Protocol::Postgres, TlsMode::Optional)
    );
    assert_eq!(compat.idle_timeout, Duration::ZERO);
    assert_eq!(compat.idle_limit(), NEVER);
    let tls = &c.listeners[2];
    assert_eq!((tls.protocol, tls.tls), (Protocol::Tls, TlsMode::Required));
    // Raw listeners close idle flows like the NLB: 350 s.
    assert_eq!(tls.idle_timeout, Duration::from_secs(350));
    assert_eq!(tls.idle_limit(), Duration::from_secs(350));
    let plain = &c.listeners[3];
    assert_eq!(
        (plain.protocol, plain.tls, plain.tls_config.as_deref()),
        (Protocol::Postgres, TlsMode::Off, None)
    );

    let g = c.target_group("pg-main").expect("group");
    assert_eq!(g.algorithm, Algorithm::LeastConn);
    assert_eq!(g.deregistration_delay, Duration::ZERO);
    assert!(g.proxy_protocol_v2);
    assert!(!g.fail_open);
    assert_eq!(g.connect_timeout, Duration::from_millis(1500));
    assert_eq!(g.connect_retries, 0);
    assert_eq!(
        g.backend_auth,
        vec![BackendAuth::ScramSha256, BackendAuth::Md5]
    );
    assert_eq!(g.health_check.interval, Duration::from_secs(10));
    assert_eq!(g.health_check.timeout, Duration::from_secs(2));
    assert_eq!(
        (
            g.health_check.healthy_threshold,
            g.health_check.unhealthy_threshold
        ),
        (2, 10)
    );
    assert!(!c.target_group("redis").expect("redis").health_check.enabled);
    assert_eq!(g.targets.len(), 3);
    assert_eq!((g.targets[0].role, g.targets[0].weight), (Role::Primary, 1));
    assert_eq!((g.targets[1].role, g.targets[1].weight), (Role::Replica, 3));
    assert_eq!(g.targets[2].address, "[::1]:5434");
    assert_eq!(g.targets[2].addr, "[::1]:5434".parse().expect("addr"));

    assert_eq!(c.users.len(), 2);
    assert_eq!(c.users[0].auth, [AuthMethod::Token]);
    assert_eq!(c.users[0].backend_credential.as_deref(), Some("pg/app"));
    assert_eq!(c.users[0].databases, ["app"]);
    assert_eq!(c.users[1].auth, [AuthMethod::Scram, AuthMethod::Cert]);
    assert!(c.users[1].databases.is_empty());

    let flows = c.flow_logs.expect("flow logs");
    assert_eq!(flows.path, dir.join("flows.log"));
    assert_eq!(flows.max_size, 10_000_000);
    assert_eq!(flows.max_files, 3);
    assert_eq!(flows.aggregation_interval, Duration::from_secs(600));
    let audit = c.audit.expect("audit");
    assert_eq!(audit.path, dir.join("audit.jsonl"));
    assert_eq!(audit.max_size, 1 << 30);
    assert_eq!(audit.max_files, 5);
}

#[test]
fn an_unreadable_file_is_one_problem() {
    let errors = load(Path::new("tests/fixtures/does-not-exist.toml")).expect_err("missing");
    assert_eq!(errors.problems().len(), 1);
    let line = errors.to_string();
    assert!(
        line.starts_with("tests/fixtures/does-not-exist.toml:0:0: cannot read: "),
        "{line}"
    );
}

#[test]
fn parse_names_the_origin_and_resolves_paths_from_it() {
    let text = "[tls.default]\ncert = \"server.pem\"\nkey = \"server-key.pem\"\n";
    let config = parse(text, Path::new("tests/fixtures/certs/virtual.toml")).expect("valid");
    let certs = std::path::absolute("tests/fixtures/certs").expect("absolute");
    assert_eq!(config.tls["default"].cert, certs.join("server.pem"));

    let absolute = format!(
        "[tls.default]\ncert = \"{}\"\nkey = \"{}\"\n",
        certs.join("server.pem").display(),
        certs.join("server-key.pem").display()
    );
    let config =
        parse(&absolute, Path::new("anywhere/sumun.toml")).expect("absolute paths are kept");
    assert_eq!(config.tls["default"].key, certs.join("server-key.pem"));

    let errors = parse(text, Path::new("elsewhere/sumun.toml")).expect_err("no certs there");
    assert_eq!(
        errors.to_string(),
        "elsewhere/sumun.toml:2:8: [tls.default]: cert 'server.pem' (elsewhere/server.pem) does not exist\n\
         elsewhere/sumun.toml:3:7: [tls.default]: key 'server-key.pem' (elsewhere/server-key.pem) does not exist"
    );
}

#[test]
fn an_empty_file_is_the_empty_config() {
    let config = parse("", Path::new("empty.toml")).expect("valid");
    assert_eq!(
        Config {
            source: None,
            ..config
        },
        Config::empty()
    );
}

#[test]
fn an_unresolvable_target_host_is_reported() {
    let text = "[[target_groups]]\nname = \"t\"\ntargets = [{ address = \"no-such-host.invalid:5432\" }]\n";
    let errors = parse(text, Path::new("t.toml")).expect_err("unresolvable");
    let line = errors.to_string();
    assert!(
        line.starts_with(
            "t.toml:3:24: target group 't': target 'no-such-host.invalid:5432' does not resolve: "
        ),
        "{line}"
    );
}

/// Validate `text` as if it sat in a scratch directory holding `certs/` (copies of the test
/// certificates) and the log directory `/var/log/sumun/` (rewritten to point there).
fn validate_in_scratch_dir(label: &str, text: &str) -> Result<Config, ConfigErrors> {
    let dir = std::env::temp_dir().join(format!("sumun-config-{label}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("certs")).expect("mkdir");
    for file in ["server.pem", "server-key.pem", "clients-ca.pem"] {
        std::fs::copy(
            Path::new("tests/fixtures/certs").join(file),
            dir.join("certs").join(file),
        )
        .expect("copy");
    }
    let text = text.replace("/var/log/sumun/", &format!("{}/", dir.display()));
    let result = parse(&text, &dir.join("sumun.toml"));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[test]
fn the_shipped_example_is_valid() {
    let text = std::fs::read_to_string("../../examples/sumun.toml").expect("example");
    let config = validate_in_scratch_dir("example", &text)
        .unwrap_or_else(|e| panic!("examples/sumun.toml:\n{e}"));
    assert_eq!(config.listeners.len(), 3);
    assert_eq!(config.tls.len(), 2);
}

#[test]
fn the_example_in_the_docs_is_valid() {
    let doc = std::fs::read_to_string("../../docs/config.md").expect("docs");
    let section = doc
        .split("## A complete example")
        .nth(1)
        .expect("example section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("toml block");
    let config = validate_in_scratch_dir("docs", block)
        .unwrap_or_else(|e| panic!("docs/config.md example:\n{e}"));
    assert_eq!(config.listeners.len(), 2);
}

#[test]
fn any_prefix_of_a_valid_file_is_handled_without_panicking() {
    // Cutting a file anywhere yields syntax errors, missing keys, dangling references...: each
    // must come back as problems (or a valid config), never a panic.
    let path = Path::new("tests/fixtures/good/full.toml");
    let text = std::fs::read_to_string(path).expect("fixture");
    for (cut, _) in text.char_indices() {
        if let Err(errors) = parse(&text[..cut], path) {
            assert!(!errors.problems().is_empty());
            for p in errors.problems() {
                assert!(p.line >= 1 && p.col >= 1, "{p}");
            }
        }
    }
}

/// A scratch directory for files whose mode matters (git keeps no 0600 files).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sumun-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        Scratch(dir)
    }
    fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const TOKEN: &str = "6f1c0d2e9a8b7c6d5e4f30211a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d\n";

#[test]
fn the_admin_api_binds_beyond_loopback_only_with_a_token_file() {
    let scratch = Scratch::new("admin-open");
    let origin = scratch.0.join("sumun.toml");
    let errors =
        parse("[admin]\nlisten = \"0.0.0.0:9900\"\n", &origin).expect_err("open admin API");
    assert_eq!(
        errors.to_string(),
        format!(
            "{}:2:10: [admin]: listen 0.0.0.0:9900 is not a loopback address, and without a token_file anyone who reaches it can read the API (users, client addresses, queries); set token_file to a file holding a random token (mode 0600), or listen on 127.0.0.1",
            origin.display()
        )
    );
    for address in ["10.1.2.3:9900", "[::]:9900"] {
        let text = format!("[admin]\nlisten = \"{address}\"\n");
        let errors = parse(&text, &origin).expect_err(address);
        assert!(errors.to_string().contains("set token_file"), "{errors}");
    }
    for loopback in ["127.0.0.1:9900", "127.0.0.2:9900", "[::1]:9900"] {
        let text = format!("[admin]\nlisten = \"{loopback}\"\n");
        let config = parse(&text, &origin).unwrap_or_else(|e| panic!("{loopback}: {e}"));
        let admin = config.admin.expect("admin");
        assert_eq!((admin.token_file, admin.metrics_auth), (None, false));
    }

    let token = scratch.file("admin.token", TOKEN, 0o600);
    let text =
        "[admin]\nlisten = \"0.0.0.0:9900\"\ntoken_file = \"admin.token\"\nmetrics_auth = true\n";
    let admin = parse(text, &origin)
        .expect("with a token")
        .admin
        .expect("admin");
    assert_eq!(admin.listen, "0.0.0.0:9900".parse().expect("addr"));
    assert_eq!(admin.token_file, Some(token));
    assert!(admin.metrics_auth);

    let text = "[admin]\nlisten = \"127.0.0.1:9900\"\nmetrics_auth = true\n";
    let errors = parse(text, &origin).expect_err("metrics_auth without a token");
    assert_eq!(
        errors.to_string(),
        format!(
            "{}:3:16: [admin]: metrics_auth = true needs a token_file holding the token to ask for",
            origin.display()
        )
    );
}

#[test]
fn a_token_file_others_can_read_or_a_short_one_is_refused() {
    let scratch = Scratch::new("admin-token");
    let origin = scratch.0.join("sumun.toml");
    let text = "[admin]\nlisten = \"0.0.0.0:9900\"\ntoken_file = \"admin.token\"\n";
    let shown = scratch.0.join("admin.token");
    let cases = [
        (TOKEN, 0o644, "has mode 0644, so others can read the token; make it readable by its owner only (chmod 600)".to_string()),
        (TOKEN, 0o640, "has mode 0640, so others can read the token; make it readable by its owner only (chmod 600)".to_string()),
        ("", 0o600, "is empty; write a random token into it, e.g. `openssl rand -hex 32`".to_string()),
        ("secret\n", 0o600, "holds a token of 6 characters; use at least 32 random characters, e.g. `openssl rand -hex 32`".to_string()),
    ];
    for (content, mode, why) in cases {
        scratch.file("admin.token", content, mode);
        let errors = parse(text, &origin).expect_err(&why);
        assert_eq!(
            errors.to_string(),
            format!(
                "{}:3:14: [admin]: token_file 'admin.token' ({}) {why}",
                origin.display(),
                shown.display()
            )
        );
    }
    std::fs::remove_file(&shown).expect("rm");
    let errors = parse(text, &origin).expect_err("missing");
    assert!(errors.to_string().ends_with("does not exist"), "{errors}");
}

#[test]
fn protocols_without_a_front_end_are_refused_at_the_protocol_value() {
    let (protocol, name) = ("http", "HTTP");
    {
        let text = format!(
            "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:7000\"\nprotocol = \"{protocol}\"\ntls = \"off\"\ntarget_group = \"t\"\n\
             [[target_groups]]\nname = \"t\"\ntargets = [{{ address = \"127.0.0.1:6379\" }}]\n"
        );
        let errors = parse(&text, Path::new("s.toml")).expect_err(protocol);
        assert_eq!(
            errors.to_string(),
            format!("s.toml:4:12: listener 'l': protocol \"{protocol}\" has no front end yet; use protocol = \"tls\" (or \"tcp\") to relay it as raw bytes, or wait for the {name} front end")
        );
    }
}

#[test]
fn protection_ip_sets_and_alarms_are_read() {
    let c = good("protection.toml");
    let p = &c.protection;
    assert!(p.enabled && p.exempt.is_empty());
    assert_eq!(
        p.shared.as_ref().map(SharedUrl::as_str),
        Some("redis://127.0.0.1:6379/1")
    );
    let secret = SharedUrl("redis://app:hunter2@cache:6379".into());
    assert_eq!(format!("{secret:?}"), "\"redis://<redacted>@cache:6379\"");
    assert_eq!((p.max_connections, p.max_auth_attempts), (100, 2000));
    assert_eq!(p.rate_window, Duration::from_secs(60));
    assert_eq!(p.allow_ip_sets, vec!["office".to_string()]);
    assert_eq!(p.egress.threshold, 2 << 30);
    assert_eq!(p.first_seen.window, Duration::ZERO);
    // Untouched detections keep their documented defaults.
    assert_eq!(
        p.brute_force,
        Detection::new(ProtectAction::Block, 5, Duration::from_secs(600))
    );
    assert_eq!(
        p.scan,
        Detection::new(ProtectAction::Log, 5, Duration::from_secs(300))
    );
    assert_eq!(p.ban_time, Duration::from_secs(600));
    // An ingress rule naming a set admits the set's networks.
    let sg = &c.security_groups[0];
    let cidrs: Vec<String> = sg.ingress.iter().map(|r| r.cidr.to_string()).collect();
    assert_eq!(cidrs, ["10.20.0.0/16", "192.0.2.10/32", "172.16.0.0/12"]);
    assert_eq!(sg.ingress[0].description.as_deref(), Some("ip_set office"));
    let a = &c.alarms[0];
    assert_eq!(a.statistic, AlarmStatistic::Increase);
    assert_eq!(a.comparison, AlarmComparison::GreaterOrEqual);
    assert_eq!((a.threshold, a.evaluation_periods), (500.5, 3));
    assert_eq!(a.labels.get("listener").map(String::as_str), Some("pg"));
    assert_eq!(a.format, WebhookFormat::Slack);
    // Without the section: everything on with its defaults, the host itself exempt.
    let m = good("minimal.toml");
    assert_eq!(m.protection, ProtectionSettings::default());
    assert_eq!(m.protection.exempt.len(), 2);
}
