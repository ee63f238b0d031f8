//! `sumun flows` with the real binary: a generated log hunted (planted events found, benign
//! traffic clean), rules suggested in every format and parsed back (the Sumun groups accepted by
//! `sumun validate`), gzip files and directories read, bad lines counted or fatal under
//! --strict, and `explain` answering admitted, refused and no-listener with its exit status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SUMUN: &str = env!("CARGO_BIN_EXE_sumun");

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "sumun-flows-{tag}-{}-{}",
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

fn sumun(args: &[&str]) -> Output {
    Command::new(SUMUN).args(args).output().expect("run sumun")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn generate(dir: &Dir, name: &str, extra: &[&str]) -> PathBuf {
    let path = dir.path(name);
    let p = path.to_str().expect("utf-8 path");
    let mut args = vec![
        "flows",
        "generate",
        "--seed",
        "9",
        "--records",
        "20000",
        "--out",
        p,
    ];
    args.extend_from_slice(extra);
    let out = sumun(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    path
}

#[test]
fn hunt_finds_the_planted_events_and_nothing_in_benign_traffic() {
    let dir = Dir::new("hunt");
    let labels = dir.path("labels.json");
    let log = generate(
        &dir,
        "attacks.log",
        &["--labels", labels.to_str().expect("utf-8")],
    );
    let events: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&labels).expect("labels")).expect("json");
    assert_eq!(events.as_array().expect("array").len(), 7);

    let out = sumun(&[
        "flows",
        "hunt",
        "--format",
        "json",
        log.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let findings = findings.as_array().expect("array");
    for (kind, detection) in [
        ("port_scan", "port_scan"),
        ("address_sweep", "address_sweep"),
        ("brute_force", "brute_force"),
        ("exfiltration", "egress_volume"),
        ("public_db", "public_db"),
        ("rejected_db_probe", "rejected_db_probe"),
        ("new_db_client", "new_db_client"),
    ] {
        let event = events
            .as_array()
            .expect("array")
            .iter()
            .find(|e| e["kind"] == kind)
            .expect("planted");
        assert!(
            findings
                .iter()
                .any(|f| f["detection"] == detection && f["src"] == event["src"]),
            "{detection} from {} not found",
            event["src"]
        );
    }
    let sources: Vec<&serde_json::Value> = events
        .as_array()
        .expect("array")
        .iter()
        .map(|e| &e["src"])
        .collect();
    for f in findings {
        assert!(sources.contains(&&f["src"]), "false positive: {f}");
        assert!(f["technique"].as_str().expect("technique").starts_with('T'));
        assert!(!f["evidence"].as_array().expect("evidence").is_empty());
    }

    // The table, with a threshold moved: no scan at 41 ports.
    let out = sumun(&[
        "flows",
        "hunt",
        "--scan-ports",
        "41",
        log.to_str().expect("utf-8"),
    ]);
    let table = text(&out.stdout);
    assert!(table.starts_with("SEVERITY  DETECTION"), "{table}");
    assert!(
        table.contains("brute_force") && !table.contains("port_scan"),
        "{table}"
    );

    let benign = generate(&dir, "benign.log", &["--benign", "--tcp-flags"]);
    let out = sumun(&[
        "flows",
        "hunt",
        "--format",
        "json",
        benign.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout).trim(), "[]");
    assert!(text(&out.stderr).contains("0 findings"));
}

#[test]
fn suggest_in_every_format() {
    let dir = Dir::new("suggest");
    let log = generate(&dir, "flows.log", &[]);
    let log = log.to_str().expect("utf-8");

    let out = sumun(&["flows", "suggest", "--sg-limit", "12", log]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for d in plan["destinations"].as_array().expect("destinations") {
        assert!(d["rules_v4"].as_u64().expect("rules") <= 12, "{d}");
    }
    let summary = text(&out.stderr);
    assert!(summary.contains("10.0.10.5 tcp 443 (IPv4)"), "{summary}");
    assert!(summary.contains("exact cover"), "{summary}");
    // The exfiltration target is an internet server: --dst keeps rules to the VPC.
    assert!(summary.contains("203.0.113.200 tcp 443"), "{summary}");
    let out = sumun(&["flows", "suggest", "--dst", "10.0.0.0/16", log]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stderr);
    assert!(
        !summary.contains("203.0.113.200") && summary.contains("10.0.10.5"),
        "{summary}"
    );
    let out = sumun(&["flows", "suggest", "--dst", "10.0.0.0/99", log]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--dst: invalid CIDR '10.0.0.0/99'"));

    let out = sumun(&["flows", "suggest", "--format", "aws-cli", log]);
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).expect("aws-cli json");
    let first = &cli[0]["IpPermissions"][0];
    assert!(first["IpProtocol"].is_string() && first["IpRanges"][0]["CidrIp"].is_string());

    let out = sumun(&["flows", "suggest", "--format", "terraform", log]);
    let tf = text(&out.stdout);
    assert!(tf.contains("resource \"aws_vpc_security_group_ingress_rule\""));
    assert_eq!(tf.matches('{').count(), tf.matches('}').count());

    // The Sumun groups, appended to a config, pass `sumun validate`.
    let out = sumun(&[
        "flows",
        "suggest",
        "--format",
        "sumun",
        "--group",
        "dbs=10.0.20.0/24",
        log,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let groups = text(&out.stdout);
    assert!(groups.contains("name = \"flows-dbs-tcp-3306\""), "{groups}");
    let config = dir.path("sumun.toml");
    std::fs::write(
        &config,
        format!("[gateway]\nname = \"flows-test\"\n{groups}"),
    )
    .expect("write");
    let out = sumun(&["validate", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // Network ACLs: inbound entries and the outbound entries for the replies, each within 8.
    let out = sumun(&[
        "flows",
        "suggest",
        "--nacl-limit",
        "8",
        "--format",
        "aws-cli",
        log,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let entries = entries.as_array().expect("array");
    let web_in = entries
        .iter()
        .filter(|e| e["NetworkAclId"] == "REPLACE-WITH-NETWORK-ACL-ID-OF-10.0.10.5")
        .filter(|e| e["Egress"] == false)
        .count();
    assert!((1..=8).contains(&web_in), "{web_in}");
    let reply = entries
        .iter()
        .find(|e| e["Egress"] == true && e["PortRange"]["To"] == 65535)
        .expect("a reply entry");
    assert_eq!(reply["PortRange"]["From"], 1024);
    let out = sumun(&["flows", "suggest", "--nacl", "--format", "terraform", log]);
    let tf = text(&out.stdout);
    assert!(tf.contains("resource \"aws_network_acl_rule\""), "{tf}");
    assert!(tf.contains("egress         = true"));
    assert_eq!(tf.matches('{').count(), tf.matches('}').count());
    let out = sumun(&["flows", "suggest", "--nacl", "--format", "sumun", log]);
    assert_eq!(out.status.code(), Some(2));
    let out = sumun(&["flows", "suggest", "--group", "bad name=10.0.0.0/8", log]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn reads_gzip_directories_and_counts_bad_lines() {
    let dir = Dir::new("read");
    let logs = dir.path("logs/2024/01/01");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let plain = generate(&dir, "logs/2024/01/01/a.log", &["--tcp-flags"]);
    let gz = generate(&dir, "logs/2024/01/01/b.log", &[]);
    let status = Command::new("gzip").arg(&gz).status().expect("gzip");
    assert!(status.success());
    std::fs::write(
        logs.join("c.log"),
        "2 1 eni-1 10.0.0.1 10.0.0.2 40000 5432 6 3 200 1704067200 1704067201 ACCEPT OK\n\
         this is not a flow record\n\
         2 1 eni-1 10.0.0.1 10.0.0.2 40000 99999 6 3 200 1704067200 1704067201 ACCEPT OK\n",
    )
    .expect("write");
    let root = dir.path("logs");
    let out = sumun(&["flows", "hunt", root.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("read 40001 records from 3 files (4 without data, 2 bad lines)"),
        "{err}"
    );
    let c = logs.join("c.log");
    assert!(
        err.contains(&format!("{}:2: expected 14 fields, found 6", c.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}:3: invalid dstport '99999'", c.display())),
        "{err}"
    );
    let _ = plain;

    let out = sumun(&["flows", "hunt", "--strict", root.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("c.log:2: expected 14 fields"),
        "{}",
        text(&out.stderr)
    );

    let out = sumun(&[
        "flows",
        "hunt",
        dir.path("missing.log").to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.log"));

    // `-` reads standard input.
    let gz_path = format!("{}.gz", gz.display());
    let out = Command::new(SUMUN)
        .args(["flows", "hunt", "-"])
        .stdin(std::fs::File::open(&gz_path).expect("open"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("read 20000 records from 1 file"));
}

fn explain_config(dir: &Dir) -> PathBuf {
    let path = dir.path("gateway.toml");
    std::fs::write(
        &path,
        r#"
[[security_groups]]
name = "app"
ingress = [
  { cidr = "10.0.1.0/24", description = "app subnet" },
  { cidr = "10.0.2.0/25" },
]

[[listeners]]
name = "pg"
bind = "0.0.0.0:6432"
protocol = "tcp"
target_group = "pg"
security_groups = ["app"]

[[listeners]]
name = "closed"
bind = "10.0.0.5:7000"
protocol = "tcp"
target_group = "pg"

[[target_groups]]
name = "pg"
targets = [{ address = "127.0.0.1:5432" }]
"#,
    )
    .expect("write");
    path
}

fn explain(config: &Path, args: &[&str]) -> Output {
    let mut all = vec![
        "flows",
        "explain",
        "--config",
        config.to_str().expect("utf-8"),
    ];
    all.extend_from_slice(args);
    sumun(&all)
}

#[test]
fn explain_says_which_rule_admits_or_every_reason_it_is_refused() {
    let dir = Dir::new("explain");
    let config = explain_config(&dir);

    let out = explain(&config, &["10.0.1.7", "10.0.0.5", "6432"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().next(),
        Some(
            "admitted: 10.0.1.7 -> 10.0.0.5:6432 by listener 'pg' (0.0.0.0:6432, tcp), \
             security group 'app' rule 10.0.1.0/24 (app subnet)"
        )
    );

    let out = explain(&config, &["10.0.2.200", "10.0.0.5", "6432"]);
    assert_eq!(out.status.code(), Some(1));
    let s = text(&out.stdout);
    assert!(
        s.starts_with("refused: 10.0.2.200 -> 10.0.0.5:6432\n"),
        "{s}"
    );
    assert!(
        s.contains(
            "reason: no rule of the security groups of listener 'pg' (app) admits 10.0.2.200"
        ),
        "{s}"
    );
    // The nearest rule first: 10.0.2.0/25 shares 24 bits with 10.0.2.200.
    let nearest: Vec<&str> = s.lines().filter(|l| l.contains("nearest rule")).collect();
    assert!(
        nearest[0].contains("10.0.2.0/25 (24 leading bits in common)"),
        "{s}"
    );
    assert!(s.contains("add { cidr = \"10.0.2.200/32\" } to the ingress of security group 'app'"));

    let out = explain(&config, &["10.0.1.7", "10.0.0.5", "7000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("listener 'closed' has no security group"));

    let out = explain(
        &config,
        &["10.0.1.7", "10.0.0.9", "5432", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let ex: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(ex["admitted"], false);
    assert_eq!(ex["reasons"][0], "no listener on 10.0.0.9:5432");

    let bad = dir.path("bad.toml");
    std::fs::write(&bad, "[[listeners]]\nname = 3\n").expect("write");
    let out = explain(&bad, &["10.0.1.7", "10.0.0.5", "6432"]);
    assert_eq!(out.status.code(), Some(2));
}

fn aws_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../flows-tools/tests/fixtures/aws")
}

#[test]
fn explain_aws_walks_the_dumps_and_lists_every_failing_hop_with_its_fix() {
    let model = aws_model();
    let dir = model.to_str().expect("utf-8");

    let out = sumun(&[
        "flows",
        "explain",
        "--aws",
        dir,
        "10.0.2.15",
        "10.1.2.20",
        "5432",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.starts_with("admitted: 10.0.2.15 -> 10.1.2.20 tcp 5432\n"),
        "{s}"
    );
    assert!(
        s.lines().any(|l| l.starts_with("TGW route table ")
            && l.contains("tgw-rtb-0c1d2e3f4a5b60718")
            && l.contains(" pass ")),
        "{s}"
    );

    let out = sumun(&[
        "flows",
        "explain",
        "--aws",
        dir,
        "10.0.3.40",
        "10.1.2.20",
        "5432",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let s = text(&out.stdout);
    assert!(
        s.starts_with("refused: 10.0.3.40 -> 10.1.2.20 tcp 5432 (4 failing hops)\n"),
        "{s}"
    );
    let fails: Vec<&str> = s.lines().filter(|l| l.contains(" FAIL ")).collect();
    assert_eq!(fails.len(), 4, "{s}");
    assert!(fails[0].starts_with("source SG egress "), "{s}");
    assert!(fails[3].starts_with("source NACL inbound (return) "), "{s}");
    assert!(
        s.contains(
            "fix: aws ec2 authorize-security-group-ingress --group-id sg-0d44dd44dd44dd444 \
             --ip-permissions '[{\"FromPort\":5432,"
        ),
        "{s}"
    );

    let out = sumun(&[
        "flows",
        "explain",
        "--aws",
        dir,
        "10.0.2.15",
        "10.2.1.10",
        "443",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let ex: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(ex["admitted"], false);
    let failing: Vec<&str> = ex["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .filter(|h| h["verdict"] == "fail")
        .map(|h| h["hop"].as_str().expect("hop"))
        .collect();
    assert_eq!(
        failing,
        ["TGW route table", "destination NACL outbound (return)"]
    );

    let out = sumun(&[
        "flows",
        "explain",
        "--aws",
        dir,
        "--protocol",
        "sctp",
        "10.0.2.15",
        "10.1.2.20",
        "5432",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown protocol 'sctp'"));
    let out = sumun(&[
        "flows",
        "explain",
        "--aws",
        dir,
        "192.0.2.1",
        "10.1.2.20",
        "5432",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("source 192.0.2.1 is not an address of any interface"));
    let out = sumun(&["flows", "explain", "10.0.2.15", "10.1.2.20", "5432"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_explain_aws_example_in_the_docs_is_what_the_binary_prints() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/flows.md"))
            .expect("docs/flows.md");
    let command = "$ sumun flows explain --aws dumps/ 10.0.3.40 10.1.2.20 5432\n";
    let start = docs.find(command).expect("the example") + command.len();
    let shown = &docs[start..start + docs[start..].find("```").expect("end of block")];
    let model = aws_model();
    let out = sumun(&[
        "flows",
        "explain",
        "--aws",
        model.to_str().expect("utf-8"),
        "10.0.3.40",
        "10.1.2.20",
        "5432",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), shown);
}
