//! `sumun flows generate|suggest|hunt|explain`: argument parsing and printing around
//! `sumun-flows-tools`. Results go to stdout; read statistics, bad lines and summaries to
//! stderr. Exit status: 0 ok (for `explain`: admitted), 1 runtime failure (for `explain`:
//! refused), 2 bad usage or input (unreadable file, bad line under --strict, bad config).

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use sumun_flows_tools::explain;
use sumun_flows_tools::generate::{self, GenOptions};
use sumun_flows_tools::hunt::{Finding, Hunt, Thresholds};
use sumun_flows_tools::input::{self, InputError, ReadStats};
use sumun_flows_tools::suggest::{self, output, DestGroup, Observed};

#[derive(Subcommand)]
pub enum FlowsCmd {
    /// Least-privilege inbound rules from observed traffic, within the rule quotas.
    Suggest(SuggestArgs),
    /// Run the built-in detections; findings as a table or JSON.
    Hunt(HuntArgs),
    /// Which rule lets SRC reach DST:PORT through a Sumun config or an AWS network (--aws), or
    /// every reason it is refused.
    Explain(ExplainArgs),
    /// Write a seeded, realistic flow log with planted attacks (for tests, benchmarks, demos).
    Generate(GenerateArgs),
    /// SQL over flow logs (Athena's column names); results as a table, CSV or JSON.
    Query(super::flows_sql::QueryArgs),
    /// Flow logs to Parquet, partitioned year=/month=/day= as AWS writes them to S3.
    Convert(super::flows_sql::ConvertArgs),
    /// CREATE EXTERNAL TABLE for convert's layout (Athena with partition projection, Trino, Spark).
    Ddl(super::flows_sql::DdlArgs),
}

/// Flow log inputs shared by the reading commands.
#[derive(Args, Debug)]
pub struct Inputs {
    /// Flow log files or directories (walked), plain or gzip; `-` for standard input.
    #[arg(required = true, value_name = "FILES")]
    files: Vec<PathBuf>,
    /// Stop at the first line that is not a flow record (exit 2) instead of counting it.
    #[arg(long)]
    strict: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SuggestFormat {
    Terraform,
    AwsCli,
    Sumun,
    Json,
}

#[derive(Args, Debug)]
pub struct SuggestArgs {
    #[command(flatten)]
    inputs: Inputs,
    /// Inbound rules per security group, counted for IPv4 and IPv6 separately (AWS default 60).
    #[arg(long, default_value_t = suggest::DEFAULT_SG_LIMIT, value_name = "N")]
    sg_limit: usize,
    /// Network ACL rules instead of security-group rules: inbound allow rules and outbound
    /// rules for the replies.
    #[arg(long)]
    nacl: bool,
    /// Rules per network ACL and direction, per address family (AWS default 20); implies --nacl.
    #[arg(long, value_name = "N")]
    nacl_limit: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: SuggestFormat,
    /// Give hosts one security group: NAME=CIDR[,CIDR...] (repeatable).
    #[arg(long, value_name = "NAME=CIDRS")]
    group: Vec<String>,
    /// Only servers inside these networks get rules (comma separated or repeated), e.g. your
    /// VPC's CIDR: the internet servers your hosts call are left out.
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    dst: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum TableOrJson {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct HuntArgs {
    #[command(flatten)]
    inputs: Inputs,
    #[arg(long, value_enum, default_value = "table")]
    format: TableOrJson,
    /// Sliding window for scans, sweeps and brute force.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    window: String,
    /// Distinct ports of one host from one source within the window.
    #[arg(long, default_value_t = 15, value_name = "N")]
    scan_ports: usize,
    /// Distinct hosts on one port from one source within the window.
    #[arg(long, default_value_t = 25, value_name = "N")]
    sweep_hosts: usize,
    /// Connections to one database port of one host from one source within the window.
    #[arg(long, default_value_t = 100, value_name = "N")]
    brute_connections: usize,
    /// Distinct (host, database port) targets a source was refused on.
    #[arg(long, default_value_t = 5, value_name = "N")]
    probe_targets: usize,
    /// Bytes between one client and one server in one UTC day.
    #[arg(long, default_value = "10GiB", value_name = "SIZE")]
    egress: String,
    /// Learning window from the first record for new (source, database port) pairs.
    #[arg(long, default_value = "6h", value_name = "DURATION")]
    learn: String,
    /// Database ports, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1433,1521,3306,5432,6379,9200,27017",
        value_name = "PORTS"
    )]
    db_ports: Vec<u16>,
    /// Evidence rows shown per finding.
    #[arg(long, default_value_t = 10, value_name = "N")]
    evidence: usize,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The Sumun config to explain against.
    #[arg(long, value_name = "FILE", required_unless_present = "aws")]
    config: Option<PathBuf>,
    /// Walk an AWS network instead: a directory of AWS CLI JSON dumps named after their
    /// commands (describe-security-groups.json, ...; see docs/flows.md).
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    aws: Option<PathBuf>,
    /// Protocol for --aws: tcp, udp, icmp or a number.
    #[arg(long, default_value = "tcp")]
    protocol: String,
    /// Client address.
    src: IpAddr,
    /// Address the client connects to.
    dst: IpAddr,
    /// Port the client connects to.
    port: u16,
    #[arg(long, value_enum, default_value = "table")]
    format: TableOrJson,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Seed: the same seed and options give the same file.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Records to write (at least 2000).
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Output file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Also write the planted events, with the line numbers of their records, as JSON.
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Benign traffic only: no planted attacks.
    #[arg(long)]
    benign: bool,
    /// Write a header line and a tcp-flags field (a custom format).
    #[arg(long)]
    tcp_flags: bool,
    /// Unix time of the first record (default 2024-01-01T00:00:00Z).
    #[arg(long, default_value_t = generate::DEFAULT_START)]
    start: u64,
    /// Time the log covers.
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    span: String,
}

/// A problem with the operator's input: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

fn is_input(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<UsageError>()
            || c.downcast_ref::<InputError>()
                .is_some_and(InputError::is_input)
    })
}

pub fn flows(cmd: FlowsCmd) -> anyhow::Result<ExitCode> {
    let result = match cmd {
        FlowsCmd::Suggest(a) => suggest_cmd(a),
        FlowsCmd::Hunt(a) => hunt_cmd(a),
        FlowsCmd::Explain(a) => explain_cmd(a),
        FlowsCmd::Generate(a) => generate_cmd(a),
        FlowsCmd::Query(a) => super::flows_sql::query_cmd(a),
        FlowsCmd::Convert(a) => super::flows_sql::convert_cmd(a),
        FlowsCmd::Ddl(a) => super::flows_sql::ddl_cmd(a),
    };
    match result {
        Ok(code) => Ok(code),
        Err(e) if is_input(&e) => {
            eprintln!("sumun: {e:#}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e),
    }
}

fn duration(flag: &str, text: &str) -> anyhow::Result<u64> {
    sumun_config::parse_duration(text)
        .map(|d| d.as_secs())
        .map_err(|e| usage(format!("--{flag}: {e}")))
}

/// Reads every flow of the inputs (a progress bar on stderr when it is a terminal), then prints
/// what was read.
fn read(inputs: &Inputs, each: impl FnMut(&sumun_flows::Flow)) -> anyhow::Result<ReadStats> {
    let files = input::expand(&inputs.files)?;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let stats = super::flows_sql::with_progress(total, |progress| {
        input::read_flows_counted(&files, inputs.strict, progress, each)
    })?;
    eprintln!(
        "read {} records from {} file{} ({} without data, {} bad lines)",
        stats.records,
        stats.files,
        if stats.files == 1 { "" } else { "s" },
        stats.no_data,
        stats.bad_lines
    );
    for bad in &stats.first_bad {
        eprintln!("  {bad}");
    }
    if stats.bad_lines > stats.first_bad.len() as u64 {
        eprintln!(
            "  ... and {} more bad lines",
            stats.bad_lines - stats.first_bad.len() as u64
        );
    }
    Ok(stats)
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

fn suggest_cmd(a: SuggestArgs) -> anyhow::Result<ExitCode> {
    let nacl = a.nacl || a.nacl_limit.is_some();
    let limit = if nacl {
        a.nacl_limit.unwrap_or(suggest::DEFAULT_NACL_LIMIT)
    } else {
        a.sg_limit
    };
    if limit == 0 {
        return Err(usage("the rule limit must be at least 1"));
    }
    if nacl && a.format == SuggestFormat::Sumun {
        return Err(usage(
            "--format sumun: Sumun has security groups, not network ACLs; drop --nacl",
        ));
    }
    let groups = a
        .group
        .iter()
        .map(|g| DestGroup::parse(g).map_err(|e| usage(format!("--group: {e}"))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let only = a
        .dst
        .iter()
        .map(|c| suggest::parse_cidr(c.trim()).map_err(|e| usage(format!("--dst: {e}"))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut observed = Observed::new(groups).only_destinations(only);
    read(&a.inputs, |f| observed.add(f))?;
    let plan = if nacl {
        suggest::plan_nacl(observed, limit)
    } else {
        suggest::plan(observed, limit)
    };
    eprint!("{}", output::summary(&plan));
    let text = match (a.format, nacl) {
        (SuggestFormat::Json, _) => serde_json::to_string_pretty(&plan)? + "\n",
        (SuggestFormat::AwsCli, false) => {
            serde_json::to_string_pretty(&output::aws_cli(&plan))? + "\n"
        }
        (SuggestFormat::AwsCli, true) => {
            serde_json::to_string_pretty(&output::nacl_aws_cli(&plan))? + "\n"
        }
        (SuggestFormat::Terraform, false) => output::terraform(&plan),
        (SuggestFormat::Terraform, true) => output::nacl_terraform(&plan),
        (SuggestFormat::Sumun, _) => output::sumun(&plan),
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn rfc3339(unix: u64) -> String {
    let Ok(secs) = i64::try_from(unix) else {
        return unix.to_string();
    };
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn hunt_cmd(a: HuntArgs) -> anyhow::Result<ExitCode> {
    let egress =
        sumun_config::parse_size(&a.egress).map_err(|e| usage(format!("--egress: {e}")))?;
    let t = Thresholds {
        window: duration("window", &a.window)?,
        scan_ports: a.scan_ports,
        sweep_hosts: a.sweep_hosts,
        brute_connections: a.brute_connections,
        probe_targets: a.probe_targets,
        egress_bytes: egress,
        learn: duration("learn", &a.learn)?,
        db_ports: a.db_ports.clone(),
        evidence: a.evidence,
    };
    let mut hunt = Hunt::new();
    read(&a.inputs, |f| hunt.add(f))?;
    let findings = hunt.run(&t);
    eprintln!("{} findings", findings.len());
    let text = match a.format {
        TableOrJson::Json => serde_json::to_string_pretty(&findings)? + "\n",
        TableOrJson::Table => findings_table(&findings),
    };
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn findings_table(findings: &[Finding]) -> String {
    let header = [
        "SEVERITY",
        "DETECTION",
        "TECHNIQUE",
        "SOURCE",
        "TARGET",
        "FIRST",
        "LAST",
        "RECORDS",
        "DETAIL",
    ];
    let rows: Vec<[String; 9]> = findings
        .iter()
        .map(|f| {
            let target = match (f.dst, f.port) {
                (Some(d), Some(p)) => std::net::SocketAddr::new(d, p).to_string(),
                (Some(d), None) => d.to_string(),
                (None, Some(p)) => format!("*:{p}"),
                (None, None) => "*".into(),
            };
            [
                f.severity.as_str().to_string(),
                f.detection.to_string(),
                f.technique.to_string(),
                f.src.to_string(),
                target,
                rfc3339(f.first),
                rfc3339(f.last),
                f.records.to_string(),
                f.detail.clone(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

fn explain_cmd(a: ExplainArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &a.aws {
        let protocol = sumun_flows_tools::aws::parse_protocol(&a.protocol).map_err(usage)?;
        let model = sumun_flows_tools::aws::Model::load(dir).map_err(|e| usage(e.to_string()))?;
        let ex = sumun_flows_tools::aws::explain(&model, a.src, a.dst, protocol, a.port)
            .map_err(|e| usage(e.to_string()))?;
        let text = match a.format {
            TableOrJson::Json => serde_json::to_string_pretty(&ex)? + "\n",
            TableOrJson::Table => sumun_flows_tools::aws::text(&ex),
        };
        write_stdout(&text)?;
        return Ok(if ex.admitted {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let Some(path) = &a.config else {
        return Err(usage("--config FILE or --aws DIR"));
    };
    let config = match sumun_config::load(path) {
        Ok(c) => c,
        Err(errors) => return Err(usage(errors.to_string())),
    };
    let ex = explain::explain(&config, a.src, a.dst, a.port);
    let text = match a.format {
        TableOrJson::Json => serde_json::to_string_pretty(&ex)? + "\n",
        TableOrJson::Table => explanation_text(&ex),
    };
    write_stdout(&text)?;
    Ok(if ex.admitted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn explanation_text(ex: &explain::Explanation) -> String {
    let mut out = String::new();
    let target = std::net::SocketAddr::new(ex.dst, ex.port);
    let listener = match (&ex.listener, ex.listener_bind, &ex.listener_protocol) {
        (Some(name), Some(bind), Some(proto)) => format!("listener '{name}' ({bind}, {proto})"),
        _ => String::new(),
    };
    if let Some(rule) = &ex.admitted_by {
        out.push_str(&format!(
            "admitted: {} -> {target} by {listener}, security group '{}' rule {}{}\n",
            ex.src,
            rule.security_group,
            rule.cidr,
            rule.description
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ));
    } else {
        out.push_str(&format!("refused: {} -> {target}\n", ex.src));
        if !listener.is_empty() {
            out.push_str(&format!("  taken by {listener}\n"));
        }
        for r in &ex.reasons {
            out.push_str(&format!("  reason: {r}\n"));
        }
        for r in &ex.nearest {
            out.push_str(&format!(
                "  nearest rule: security group '{}' {} ({} leading bits in common){}\n",
                r.security_group,
                r.cidr,
                r.common_bits,
                r.description
                    .as_ref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ));
        }
        for l in &ex.nearest_listeners {
            out.push_str(&format!("  other listener: {l}\n"));
        }
        if let Some(group) = ex
            .nearest
            .first()
            .map(|r| r.security_group.clone())
            .filter(|_| ex.listener.is_some())
        {
            let host = match ex.src {
                IpAddr::V4(a) => format!("{a}/32"),
                IpAddr::V6(a) => format!("{a}/128"),
            };
            out.push_str(&format!(
                "  to admit it: add {{ cidr = \"{host}\" }} to the ingress of security group '{group}'\n"
            ));
        }
    }
    for n in &ex.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    out
}

fn generate_cmd(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    let opts = GenOptions {
        seed: a.seed,
        records: a.records,
        start: a.start,
        span: duration("span", &a.span)?,
        attacks: !a.benign,
        tcp_flags: a.tcp_flags,
    };
    let result = if a.out.as_os_str() == "-" {
        generate::generate(&opts, &mut std::io::stdout().lock())
    } else {
        let mut file = std::fs::File::create(&a.out)
            .map_err(|e| usage(format!("{}: {e}", a.out.display())))?;
        generate::generate(&opts, &mut file)
    };
    let events = match result {
        Ok(events) => events,
        Err(generate::GenError::Io(e)) => {
            return Err(anyhow::Error::new(e).context("cannot write the flow log"))
        }
        Err(e) => return Err(usage(e.to_string())),
    };
    if let Some(labels) = &a.labels {
        let json = serde_json::to_string_pretty(&events)? + "\n";
        std::fs::write(labels, json).map_err(|e| usage(format!("{}: {e}", labels.display())))?;
    }
    eprintln!(
        "wrote {} records with {} planted events (seed {})",
        a.records,
        events.len(),
        a.seed
    );
    Ok(ExitCode::SUCCESS)
}
