//! `sumun serve|validate|status|quickstart|cert`: running the gateway and looking at it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use sumun_config::ConfigErrors;
use sumun_gateway::Gateway;

#[derive(Args)]
pub struct ServeArgs {
    /// The config file.
    #[arg(long, short)]
    pub config: PathBuf,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Clone)]
pub struct LogArgs {
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct ValidateArgs {
    /// The config file.
    #[arg(long, short)]
    pub config: PathBuf,
}

#[derive(Args)]
pub struct StatusArgs {
    /// The gateway's config file: the admin API's address ([admin] listen) and the token it
    /// asks for ([admin] token_file).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Admin API base URL [default: from --config, else http://127.0.0.1:9900].
    #[arg(long)]
    pub admin: Option<String>,
    /// File holding the admin API's bearer token [default: [admin] token_file of --config].
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Print the raw JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum CertCmd {
    /// Write a dev CA and a server certificate signed by it (PEM).
    Dev(CertDevArgs),
}

#[derive(Args)]
pub struct CertDevArgs {
    /// Directory to write ca.pem, ca-key.pem, server.pem, server-key.pem into.
    #[arg(long)]
    pub out: PathBuf,
    /// Host names and IP addresses the server certificate is valid for (repeatable);
    /// localhost, 127.0.0.1 and ::1 are always included.
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Validity of the server certificate, in days.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct QuickstartArgs {
    /// Where the generated certificates, vault, config and logs live (created or reused).
    #[arg(long, default_value = "./sumun-quickstart")]
    pub dir: PathBuf,
    /// Write the files and print the commands, but do not serve.
    #[arg(long)]
    pub no_serve: bool,
    #[command(flatten)]
    pub ports: crate::cmd::quickstart::PortArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

pub fn init_logging(log: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SUMUN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_logs(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_writer(std::io::stderr);
    let _ = match log.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

/// Colour codes only for a person watching a terminal: a file, a pipe or a log collector gets
/// plain text, and a non-empty `NO_COLOR` (no-color.org) turns them off everywhere.
fn colour_logs(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn print_problems(errors: &ConfigErrors) {
    for problem in errors.problems() {
        eprintln!("{problem}");
    }
}

pub fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    match sumun_config::load(&args.config) {
        Ok(config) => {
            println!(
                "{}: ok ({} listeners, {} target groups, {} security groups)",
                args.config.display(),
                config.listeners.len(),
                config.target_groups.len(),
                config.security_groups.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            print_problems(&errors);
            Ok(ExitCode::from(2))
        }
    }
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match sumun_config::load(&args.config) {
        Ok(config) => config,
        Err(errors) => {
            print_problems(&errors);
            return Ok(ExitCode::from(2));
        }
    };
    init_logging(&args.log);
    run_gateway(config, args.config, None, serve_advice)
}

/// Where a listener that cannot bind is configured, for `sumun serve`'s advice.
pub struct BindSite<'a> {
    /// The listener's name; `None` for the admin API.
    pub listener: Option<&'a str>,
    pub config: &'a Path,
}

/// How to get past a port that is taken: a sentence for the end of the error line.
type BindAdvice = fn(&BindSite<'_>) -> String;

fn serve_advice(site: &BindSite<'_>) -> String {
    match site.listener {
        Some(_) => format!("stop it or change this bind in {}", site.config.display()),
        None => format!(
            "stop it or change [admin] listen in {}",
            site.config.display()
        ),
    }
}

fn quickstart_advice(site: &BindSite<'_>) -> String {
    match crate::cmd::quickstart::port_flag(site.listener) {
        Some(flag) => format!(
            "rerun with {flag} PORT, or with --free-ports to let the system pick free ports"
        ),
        None => format!("stop it or change this bind in {}", site.config.display()),
    }
}

/// One line saying why the gateway could not start. A port someone else holds is named with
/// its listener and the way around it (the raw error says only "Address already in use").
fn start_error(
    e: &sumun_gateway::ApplyError,
    admin: Option<std::net::SocketAddr>,
    config: &Path,
    advice: BindAdvice,
) -> String {
    let sumun_gateway::ApplyError::Bind { name, addr, source } = e else {
        return e.to_string();
    };
    // The gateway names its admin listener "admin" (a listener may not share its address).
    let listener = (!(name == "admin" && admin == Some(*addr))).then_some(name.as_str());
    let what = listener.map_or("the admin API".to_string(), |n| format!("listener '{n}'"));
    let site = BindSite { listener, config };
    let port = addr.port();
    match source.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "port {port} ({what}, {addr}) is already in use by another process (`ss -ltnp 'sport = :{port}'` shows which): {}",
            advice(&site)
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "{what} may not bind {addr}: ports below 1024 need privileges (CAP_NET_BIND_SERVICE); {}",
            advice(&site)
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{what} cannot bind {addr}: {} is not an address of this machine",
            addr.ip()
        ),
        _ => e.to_string(),
    }
}

/// Runs once the first config is live (quickstart prints its commands there).
type OnReady = Box<dyn FnOnce(&Gateway) + Send>;

/// The control-plane runtime (accept loops, health checks, admin API, reloads). Connections
/// run on the gateway's own data-plane workers (`[gateway] workers`).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Serve `config` until SIGTERM/SIGINT, reloading `path` on SIGHUP or when it changes.
/// `ready` runs once the first apply succeeded (quickstart prints its commands there).
fn run_gateway(
    config: sumun_config::Config,
    path: PathBuf,
    ready: Option<OnReady>,
    advice: BindAdvice,
) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async move {
        let gateway = Gateway::new();
        let admin = config.admin.as_ref().map(|a| a.listen);
        if let Err(errors) = gateway.apply(config).await {
            for e in &errors.0 {
                let why = start_error(e, admin, &path, advice);
                tracing::error!(error = %why, "cannot start");
                eprintln!("sumun: cannot start: {why}");
            }
            return Ok(ExitCode::from(1));
        }
        tracing::info!(config = %path.display(), "serving");
        if let Some(ready) = ready {
            ready(&gateway);
        }
        tokio::spawn(watch_config(gateway.clone(), path.clone()));
        wait_for_signals(gateway.clone(), path).await?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn reload(gateway: &Gateway, path: &Path, why: &str) {
    match sumun_config::load(path) {
        Err(errors) => {
            gateway
                .shared()
                .metrics
                .reloads_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for problem in errors.problems() {
                tracing::error!(problem = %problem, "config rejected; still serving the previous one");
            }
        }
        Ok(config) => match gateway.apply(config).await {
            Ok(()) => tracing::info!(config = %path.display(), trigger = why, "config reloaded"),
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(error = %e, "config not applied; still serving the previous one");
                }
            }
        },
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Poll the config file and reload when it changes (when `gateway.watch_config` is on).
async fn watch_config(gateway: Arc<Gateway>, path: PathBuf) {
    let mut seen = mtime(&path);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if gateway.phase() != sumun_gateway::Phase::Running {
            return;
        }
        let now = mtime(&path);
        if now != seen {
            seen = now;
            if gateway.config().gateway.watch_config {
                // Let an editor finish writing before reading.
                tokio::time::sleep(Duration::from_millis(200)).await;
                seen = mtime(&path);
                reload(&gateway, &path, "file changed").await;
            }
        }
    }
}

async fn wait_for_signals(gateway: Arc<Gateway>, path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&gateway, &path, "SIGHUP").await,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("stopping: draining open flows (send SIGTERM or SIGINT again to stop at once)");
    let draining = {
        let gateway = gateway.clone();
        tokio::spawn(async move { gateway.shutdown().await })
    };
    let second = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    tokio::select! {
        _ = draining => {}
        _ = second => {
            tracing::warn!("second signal: closing every flow now");
            gateway.stop_now();
            gateway.shared().records.flush();
        }
    }
    tracing::info!("stopped");
    Ok(())
}

pub fn cert(cmd: CertCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        CertCmd::Dev(args) => {
            let pki = sumun_pki::DevPki::generate(&args.hosts, args.days)
                .context("cannot generate certificates")?;
            let written = pki
                .write(&args.out, args.force)
                .with_context(|| format!("cannot write certificates to {}", args.out.display()))?;
            println!("{written}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Where the admin API is and the token it asks for: explicit flags first, then the config.
fn admin_endpoint(args: &StatusArgs) -> anyhow::Result<(String, Option<sumun_config::AdminToken>)> {
    let admin = match &args.config {
        None => None,
        Some(path) => match sumun_config::load(path) {
            Ok(config) => config.admin,
            Err(errors) => anyhow::bail!("{} is not a valid config:\n{errors}", path.display()),
        },
    };
    let url = match (&args.admin, &admin) {
        (Some(url), _) => url.clone(),
        (None, Some(a)) => {
            // A wildcard listen address is reached on loopback.
            let mut addr = a.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("http://{addr}")
        }
        (None, None) => {
            if let Some(path) = &args.config {
                anyhow::bail!(
                    "{} has no [admin] section, so the gateway serves no admin API",
                    path.display()
                );
            }
            "http://127.0.0.1:9900".to_string()
        }
    };
    let token_file = args
        .token_file
        .clone()
        .or_else(|| admin.and_then(|a| a.token_file));
    let token = match token_file {
        None => None,
        Some(path) => Some(
            sumun_config::read_admin_token(&path)
                .map_err(|e| anyhow::anyhow!("admin token file '{}' {e}", path.display()))?,
        ),
    };
    Ok((url, token))
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (admin, token) = admin_endpoint(&args)?;
    let listeners = crate::cmd::http::get_json(&admin, "/api/listeners", token.as_ref())?;
    let targets = crate::cmd::http::get_json(&admin, "/api/targets", token.as_ref())?;
    let findings = crate::cmd::http::get_json(&admin, "/api/findings", token.as_ref())?;
    let bans = crate::cmd::http::get_json(&admin, "/api/bans", token.as_ref())?;
    // Active findings: those whose last event is within the hour.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let active: Vec<&serde_json::Value> = findings
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["last"].as_u64().unwrap_or(0) + 3600 >= now)
        .collect();
    if args.json {
        let both = serde_json::json!({
            "listeners": listeners,
            "targets": targets,
            "findings": active,
            "bans": bans,
        });
        println!("{}", serde_json::to_string_pretty(&both)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().unwrap_or("?").to_string())
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let mut rows = vec![vec![
        "LISTENER".to_string(),
        "BIND".into(),
        "PROTOCOL".into(),
        "TARGET GROUP".into(),
        "SECURITY GROUPS".into(),
        "ACTIVE".into(),
        "FLOWS".into(),
        "REJECTED".into(),
        "HEALTHY".into(),
    ]];
    for l in listeners.as_array().into_iter().flatten() {
        rows.push(vec![
            s(&l["name"]),
            s(&l["bind"]),
            s(&l["protocol"]),
            s(&l["target_group"]),
            s(&l["security_groups"]),
            s(&l["active_flows"]),
            s(&l["new_flows_total"]),
            s(&l["rejected_total"]),
            format!("{}/{}", s(&l["healthy_targets"]), {
                let h = l["healthy_targets"].as_u64().unwrap_or(0);
                let u = l["unhealthy_targets"].as_u64().unwrap_or(0);
                h + u
            }),
        ]);
    }
    print_table(&rows);
    println!();
    let mut rows = vec![vec![
        "TARGET GROUP".to_string(),
        "TARGET".into(),
        "ROLE".into(),
        "STATE".into(),
        "ACTIVE".into(),
        "FLOWS".into(),
        "REASON".into(),
    ]];
    for t in targets.as_array().into_iter().flatten() {
        rows.push(vec![
            s(&t["target_group"]),
            s(&t["address"]),
            s(&t["role"]),
            s(&t["health"]),
            s(&t["active_flows"]),
            s(&t["flows_total"]),
            s(&t["reason"]),
        ]);
    }
    print_table(&rows);
    println!();
    let bans = bans.as_array().cloned().unwrap_or_default();
    if bans.is_empty() {
        println!("no banned sources");
    } else {
        let mut rows = vec![vec![
            "BANNED".to_string(),
            "FOR".into(),
            "REASON".into(),
            "BANS".into(),
        ]];
        for b in &bans {
            rows.push(vec![
                s(&b["addr"]),
                format!("{}s", s(&b["remaining_s"])),
                s(&b["reason"]),
                s(&b["count"]),
            ]);
        }
        print_table(&rows);
    }
    println!();
    if active.is_empty() {
        println!("no findings in the last hour");
    } else {
        let mut rows = vec![vec![
            "SEVERITY".to_string(),
            "DETECTION".into(),
            "SOURCE".into(),
            "USER".into(),
            "LISTENER".into(),
            "AGO".into(),
            "ACTION".into(),
            "DETAIL".into(),
        ]];
        for f in active.iter().take(20) {
            let ago = now.saturating_sub(f["last"].as_u64().unwrap_or(now));
            rows.push(vec![
                s(&f["severity"]),
                s(&f["detection"]),
                s(&f["src"]),
                s(&f["user"]),
                s(&f["listener"]),
                format!("{ago}s"),
                s(&f["action"]),
                s(&f["detail"]),
            ]);
        }
        print_table(&rows);
        if active.len() > 20 {
            println!("... and {} more (sumun status --json)", active.len() - 20);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

pub fn quickstart(args: QuickstartArgs) -> anyhow::Result<ExitCode> {
    let setup = match crate::cmd::quickstart::prepare(&args.dir, &args.ports) {
        Ok(setup) => setup,
        Err(e) => {
            if let Some(refused) = e.downcast_ref::<crate::cmd::quickstart::PortRefused>() {
                eprintln!("sumun: {refused}");
                return Ok(ExitCode::from(2));
            }
            return Err(e);
        }
    };
    let config = match sumun_config::load(&setup.config_path) {
        Ok(config) => config,
        Err(errors) => {
            print_problems(&errors);
            return Ok(ExitCode::from(2));
        }
    };
    if args.no_serve {
        crate::cmd::quickstart::print_instructions(&setup, &config, None);
        return Ok(ExitCode::SUCCESS);
    }
    init_logging(&args.log);
    let path = setup.config_path.clone();
    let printed_config = config.clone();
    run_gateway(
        config,
        path,
        Some(Box::new(move |gateway: &Gateway| {
            crate::cmd::quickstart::print_instructions(&setup, &printed_config, Some(gateway));
        })),
        quickstart_advice,
    )
}
