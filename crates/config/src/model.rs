//! The validated configuration: what the rest of Sumun reads. Every value here has passed the
//! checks in `validate`; references between sections (listener -> target group, listener ->
//! security groups, listener -> TLS settings) are known to resolve, and files are known to exist.
//! Paths are absolute (relative paths in the file are taken from the file's directory).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// A complete, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this came from, if any (an empty config has none).
    pub source: Option<PathBuf>,
    pub gateway: GatewaySettings,
    pub admin: Option<AdminSettings>,
    pub vault: Option<VaultSettings>,
    /// Named TLS settings, referenced by listeners' `tls_config`.
    pub tls: BTreeMap<String, TlsSettings>,
    pub security_groups: Vec<SecurityGroup>,
    pub listeners: Vec<Listener>,
    pub target_groups: Vec<TargetGroup>,
    pub users: Vec<User>,
    pub flow_logs: Option<FlowLogSettings>,
    pub audit: Option<AuditSettings>,
    /// Named address sets (`[[ip_sets]]`), used by `[protection]` rules and security groups.
    pub ip_sets: Vec<IpSetSettings>,
    /// Inline protection (`[protection]`): on with its defaults when the section is absent.
    pub protection: ProtectionSettings,
    /// Alarm rules over the gateway's own metrics (`[[alarms]]`).
    pub alarms: Vec<AlarmSettings>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    /// Shown as `account-id` in flow logs and as the token audience. Default `"sumun"`.
    pub name: String,
    /// How long `serve` waits, after the first SIGTERM, for flows to finish. Default `"300s"`;
    /// the effective wait per flow is the smaller of this and its target group's
    /// `deregistration_delay`.
    pub shutdown_timeout: Duration,
    /// Poll the config file for changes and reload. Default `true`.
    pub watch_config: bool,
    /// Data-plane threads, each running its own event loop with the connections it was
    /// given, so a connection never moves between threads. `0` (the default) means one per
    /// CPU. Read at startup; a reload keeps the running count.
    pub workers: u32,
    /// A protocol client idle this long with no server and nothing in flight is parked: its
    /// socket waits in the worker's parking lot and its session as a small record, instead of
    /// a task (idle memory). Default `"1s"`; `"0s"` parks a client once it has been idle for a few milliseconds.
    pub park_after: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// A file (mode 0600) holding the bearer token every admin path but `/healthz` (and
    /// `/metrics`, unless `metrics_auth`) requires. Without one, `listen` must be a loopback
    /// address: the API shows users, client addresses and queries.
    pub token_file: Option<PathBuf>,
    /// `/metrics` needs the token too. Default `false` (scrapers usually send none).
    pub metrics_auth: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VaultSettings {
    pub dir: PathBuf,
    /// Optional key file (mode 0600) holding the master key; otherwise `SUMUN_MASTER_KEY`.
    pub key_file: Option<PathBuf>,
    /// Longest lifetime a token may ask for. Default `"1h"`.
    pub token_max_ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsPolicy {
    /// TLS 1.3 only; X25519MLKEM768 preferred, then X25519, then secp256r1.
    Tls13Pq,
    /// Adds TLS 1.2 with forward-secret AEAD suites only.
    Tls12Compat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub policy: TlsPolicy,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecurityGroup {
    pub name: String,
    pub description: Option<String>,
    pub ingress: Vec<IngressRule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngressRule {
    pub cidr: IpNet,
    pub description: Option<String>,
}

/// What a listener speaks. `Http` is read (so a config naming them gets a
/// clear message) but refused until their front ends exist: see [`Protocol::front_end_pending`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Tls,
    Postgres,
    Mysql,
    Redis,
    Http,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
            Protocol::Redis => "redis",
            Protocol::Http => "http",
        }
    }

    /// For a protocol Sumun names but cannot serve yet, the name of its front end. A listener
    /// with such a protocol is refused (by `validate`, and by the gateway should one get
    /// through): relaying its bytes would skip the TLS and login its users were promised.
    pub fn front_end_pending(self) -> Option<&'static str> {
        match self {
            Protocol::Tcp
            | Protocol::Tls
            | Protocol::Postgres
            | Protocol::Mysql
            | Protocol::Redis => None,
            Protocol::Http => Some("HTTP"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsMode {
    Required,
    Optional,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyProtocolMode {
    Off,
    Accept,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    pub protocol: Protocol,
    pub target_group: String,
    /// Names of security groups; a connection is admitted when any rule of any group matches.
    /// Empty means nobody gets in (default deny).
    pub security_groups: Vec<String>,
    /// For `tls` listeners always `Required`. Default `Required` for protocol listeners.
    pub tls: TlsMode,
    /// Name of a `[tls.NAME]` section. Required for `tls` listeners and when `tls != off`.
    pub tls_config: Option<String>,
    pub proxy_protocol: ProxyProtocolMode,
    pub trusted_proxies: Vec<IpNet>,
    /// Close a client after this long without a byte in either direction. Default `"350s"`
    /// for `tcp`/`tls` listeners (the NLB's TCP idle timeout), `"1800s"` for protocol
    /// listeners (RDS Proxy's `IdleClientTimeout`); zero means never (see `idle_limit`).
    pub idle_timeout: Duration,
    /// Time allowed for PROXY header + TLS handshake. Default `"10s"`.
    pub handshake_timeout: Duration,
    /// Most concurrent client connections; more are refused. Default 10000.
    pub max_connections: u32,
    /// Backend connection pooling for protocol listeners (`postgres`, later `mysql`, `redis`).
    pub pool: PoolSettings,
    /// Send provably read-only work to healthy replicas. Default `false`.
    pub read_write_split: bool,
    /// Replicas further behind than this get no reads. Default `"10s"`.
    pub max_replica_lag: Duration,
    /// What `query` audit events record of the statement text. Default `Masked`.
    pub audit_queries: QueryAudit,
}

impl Listener {
    /// The idle timeout to enforce: `idle_timeout`, or [`NEVER`] when it is zero.
    pub fn idle_limit(&self) -> Duration {
        if self.idle_timeout.is_zero() {
            NEVER
        } else {
            self.idle_timeout
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolMode {
    /// A client keeps one backend connection from login to logout.
    Session,
    /// A client holds a backend connection only while a transaction is open.
    Transaction,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// Backend connection pools, one per (target, database, backend user).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    /// Default `Session`.
    pub mode: PoolMode,
    /// Most backend connections per pool. Default 20.
    pub size: u32,
    /// Idle connections kept open per pool once it has been used. Default 0.
    pub min_idle: u32,
    /// Close an idle backend connection after this long. Default `"600s"`.
    pub idle_timeout: Duration,
    /// Close a backend connection at its next release after this long. Default `"3600s"`.
    pub max_lifetime: Duration,
    /// Longest a client waits for a backend connection before an error. Default `"30s"`.
    pub checkout_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            mode: PoolMode::Session,
            size: 20,
            min_idle: 0,
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            checkout_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryAudit {
    Off,
    /// Literals replaced by `?`.
    Masked,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RoundRobin,
    LeastConn,
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthCheckProtocol {
    /// A TCP connect that succeeds within the timeout.
    Tcp,
    /// Log in with `credential` and run `SELECT pg_is_in_recovery()`: healthy when it answers,
    /// and the answer is the target's role.
    Postgres,
    /// Log in with `credential` and run `SELECT @@read_only`: healthy when it answers; a
    /// read-only server is a replica.
    Mysql,
    /// `AUTH` with `credential` (when given) and `ROLE`: healthy when it answers; the answer is
    /// the target's role (`master` or `slave`).
    Redis,
}

impl HealthCheckProtocol {
    /// The listener protocol whose front end runs this check; `None` for a plain TCP connect.
    pub fn protocol(self) -> Option<Protocol> {
        match self {
            HealthCheckProtocol::Tcp => None,
            HealthCheckProtocol::Postgres => Some(Protocol::Postgres),
            HealthCheckProtocol::Mysql => Some(Protocol::Mysql),
            HealthCheckProtocol::Redis => Some(Protocol::Redis),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// Default `true`.
    pub enabled: bool,
    /// Default `TCP` (later: protocol-level checks).
    pub protocol: HealthCheckProtocol,
    /// Default `"10s"`.
    pub interval: Duration,
    /// Default `"2s"`.
    pub timeout: Duration,
    /// Default 3.
    pub healthy_threshold: u32,
    /// Default 3.
    pub unhealthy_threshold: u32,
    /// Vault secret the protocol-level check logs in with (required for `postgres`).
    pub credential: Option<String>,
    /// Database the protocol-level check connects to. Default `"postgres"`.
    pub database: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Replica,
    /// Role not stated; learned from health checks once protocol-level checks exist.
    Any,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// As written in the file (`host:port`), for display and logs.
    pub address: String,
    /// Resolved when the config was loaded.
    pub addr: SocketAddr,
    pub role: Role,
    /// Relative weight for balancing. Default 1.
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetGroup {
    pub name: String,
    pub algorithm: Algorithm,
    /// How long established flows to a removed or draining target may continue. Default `"300s"`.
    pub deregistration_delay: Duration,
    /// Send a PROXY v2 header to targets. Default `false`.
    pub proxy_protocol_v2: bool,
    pub health_check: HealthCheck,
    /// Route to every target when none is healthy (NLB behaviour). Default `true`.
    pub fail_open: bool,
    /// Default `"3s"`.
    pub connect_timeout: Duration,
    /// Further targets tried after a failed connect. Default 2.
    pub connect_retries: u32,
    /// TLS from the gateway to the targets (protocol listeners). Default off.
    pub backend_tls: BackendTls,
    /// CA certificates that verify targets with `tls = "verify-full"`.
    pub backend_ca: Option<PathBuf>,
    /// How the gateway lets a server authenticate it (`backend_auth`, like libpq's
    /// `require_auth`). Default `["scram-sha-256"]`, plus `"password"` with
    /// `tls = "verify-full"`.
    pub backend_auth: Vec<BackendAuth>,
    pub targets: Vec<Target>,
}

/// A way a server may have the gateway prove its vault credential.
/// What "never" means for an idle timeout of zero: a century, beyond any process's life.
pub const NEVER: Duration = Duration::from_secs(100 * 365 * 86_400);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendAuth {
    /// SCRAM-SHA-256: the server proves it knows the password too.
    ScramSha256,
    /// PostgreSQL's legacy md5 challenge (only where listed).
    Md5,
    /// The password in cleartext: only over `tls = "verify-full"`.
    Password,
    /// No authentication at all (`trust`): the server proves nothing.
    None,
}

impl BackendAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendAuth::ScramSha256 => "scram-sha-256",
            BackendAuth::Md5 => "md5",
            BackendAuth::Password => "password",
            BackendAuth::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendTls {
    Off,
    /// Encrypt, without checking the server's certificate (libpq `sslmode=require`).
    Require,
    /// Encrypt and verify the certificate against `tls_ca` and the target's host name.
    VerifyFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    Token,
    /// A password whose verifiers the gateway holds (`sumun users set-password`): `"password"`,
    /// or `"scram"`, PostgreSQL's name for it (SCRAM-SHA-256 there; MySQL's
    /// `mysql_native_password` exchange on MySQL listeners).
    Scram,
    Cert,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    /// Default `["token"]`.
    pub auth: Vec<AuthMethod>,
    /// Vault secret used to log in to the backend.
    pub backend_credential: Option<String>,
    /// Databases this user may reach; empty means all.
    pub databases: Vec<String>,
    /// Overrides the listener's pool mode for this user.
    pub pool_mode: Option<PoolMode>,
    /// May use the virtual `sumun` admin database. Default `false`.
    pub admin: bool,
    /// What the user may run through `redis` listeners, in Redis's ACL rule syntax
    /// (`+@all -@dangerous ~app:*`); checked when the gateway applies the config. Default
    /// `+@all -@dangerous ~* &*`.
    pub redis_acl: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowLogSettings {
    pub path: PathBuf,
    /// Rotate when the file reaches this size. Default 100 MiB (`"100MiB"`).
    pub max_size: u64,
    /// Rotated files kept (`flows.log.1` ...). Default 5.
    pub max_files: u32,
    /// Records for long-lived flows every this often. Default `"60s"`.
    pub aggregation_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditSettings {
    pub path: PathBuf,
    /// Default 100 MiB.
    pub max_size: u64,
    /// Default 5.
    pub max_files: u32,
}

impl Config {
    /// The configuration `serve` starts from before its first reload: nothing listens.
    pub fn empty() -> Config {
        Config {
            source: None,
            gateway: GatewaySettings {
                name: "sumun".to_string(),
                shutdown_timeout: Duration::from_secs(300),
                watch_config: true,
                workers: 0,
                park_after: Duration::from_secs(1),
            },
            admin: None,
            vault: None,
            tls: BTreeMap::new(),
            security_groups: Vec::new(),
            listeners: Vec::new(),
            target_groups: Vec::new(),
            users: Vec::new(),
            flow_logs: None,
            audit: None,
            ip_sets: Vec::new(),
            protection: ProtectionSettings::default(),
            alarms: Vec::new(),
        }
    }

    pub fn target_group(&self, name: &str) -> Option<&TargetGroup> {
        self.target_groups.iter().find(|g| g.name == name)
    }

    pub fn security_group(&self, name: &str) -> Option<&SecurityGroup> {
        self.security_groups.iter().find(|g| g.name == name)
    }
}

/// One `[[ip_sets]]` entry: addresses and networks given inline, from a file, or both.
#[derive(Debug, Clone, PartialEq)]
pub struct IpSetSettings {
    pub name: String,
    /// Inline networks (`cidrs = ["203.0.113.0/24", "198.51.100.7"]`).
    pub cidrs: Vec<IpNet>,
    /// A file with one address or CIDR a line (`#` starts a comment), read when the config is
    /// applied and re-read by `[protection]` rules whenever it changes.
    pub file: Option<PathBuf>,
    /// What the file held when the config was read (what security groups use until the next
    /// reload).
    pub file_cidrs: Vec<IpNet>,
}

/// What a detection does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtectAction {
    /// A `finding` (audit event and metric) only.
    Log,
    /// A finding, and the source is banned (`[protection] ban_time`, longer for repeat
    /// offenders).
    Block,
}

impl ProtectAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ProtectAction::Log => "log",
            ProtectAction::Block => "block",
        }
    }
}

/// One detection's settings (`[protection.brute_force]`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    pub enabled: bool,
    pub action: ProtectAction,
    /// What must be reached within `window` (failures, users, listeners, flows, bytes).
    pub threshold: u64,
    pub window: Duration,
}

impl Detection {
    pub const fn new(action: ProtectAction, threshold: u64, window: Duration) -> Detection {
        Detection {
            enabled: true,
            action,
            threshold,
            window,
        }
    }
}

/// `[protection.geo]`: country match against a MaxMind-format database.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoSettings {
    /// A `.mmdb` file (GeoLite2-Country, GeoIP2-Country or City, or any database whose records
    /// have `country.iso_code`); re-read when it changes.
    pub database: PathBuf,
    /// ISO 3166-1 alpha-2 codes (upper case) refused.
    pub deny_countries: Vec<String>,
    /// When not empty, only these countries are admitted (an address the database does not
    /// place is refused).
    pub allow_countries: Vec<String>,
}

/// The `redis://` URL of `[protection] shared`. `Debug` hides a password in it.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedUrl(pub String);

impl SharedUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SharedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.rsplit_once('@') {
            Some((_, host)) => write!(f, "\"redis://<redacted>@{host}\""),
            None => write!(f, "{:?}", self.0),
        }
    }
}

/// `[protection]`. Every default is documented in `docs/protection.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtectionSettings {
    /// Default `true`. `false` turns off rate limits, detections and bans (IP set and geo rules
    /// still apply: they are explicit).
    pub enabled: bool,
    /// Sources never rate limited, banned or watched by detections. Default `127.0.0.1/32` and
    /// `::1/128` (fail2ban's `ignoreip` habit: the host's own tools and health checks).
    pub exempt: Vec<IpNet>,
    /// `redis://[user:password@]host:port[/db]` shared by replicas for bans.
    pub shared: Option<SharedUrl>,
    /// The rate-limit window. Default `"5m"`.
    pub rate_window: Duration,
    /// New connections per source per window; `0` turns the limit off. Default 2000 (seed
    /// 000's WAF rate-based rule).
    pub max_connections: u32,
    /// Login attempts (failed and successful) per source per window. Default 2000.
    pub max_auth_attempts: u32,
    /// A first ban lasts this long. Default `"10m"` (fail2ban's `bantime`).
    pub ban_time: Duration,
    /// Each further ban of a source within `ban_memory` doubles, up to this. Default `"24h"`.
    pub max_ban_time: Duration,
    /// How long a source's earlier bans are remembered. Default `"24h"`.
    pub ban_memory: Duration,
    /// Sources tracked at once (the least recently seen are forgotten first). Default 20000.
    pub max_sources: u32,
    /// Users whose privilege changes are expected (config users with `admin = true` count too).
    pub admin_users: Vec<String>,
    /// IP sets whose addresses are refused at the door.
    pub deny_ip_sets: Vec<String>,
    /// When not empty, only addresses in one of these sets are admitted.
    pub allow_ip_sets: Vec<String>,
    pub geo: Option<GeoSettings>,
    /// Failed logins from one source. Default 5 in `"10m"`, `block`.
    pub brute_force: Detection,
    /// Distinct users failing from one source. Default 10 in `"10m"`, `block`.
    pub password_spray: Detection,
    /// A successful login after this many failures from the source. Default 3 in `"10m"`, `log`.
    pub login_after_failures: Detection,
    /// Distinct listener ports a source was refused on. Default 5 in `"5m"`, `log`.
    pub scan: Detection,
    /// New connections gateway-wide. Default 500 in `"1m"`, `log` (never blocks).
    pub connection_spike: Detection,
    /// A known user logging in from a source not seen before, once the learning window (the
    /// detection's `window`, default `"24h"` from start) has passed. `threshold` unused. `log`.
    pub first_seen: Detection,
    /// GRANT / REVOKE / ALTER ROLE / ALTER USER / CREATE USER / CREATE ROLE / SET PASSWORD by a
    /// user not in `admin_users`. `threshold` unused. Default `log`.
    pub privilege_change: Detection,
    /// Bytes sent to one session's client. Default 1 GiB, `log`.
    pub egress: Detection,
    /// SQL injection in statements (the `sumun-sqli` inspector). Default `log`.
    pub sql_injection: Detection,
}

impl Default for ProtectionSettings {
    fn default() -> Self {
        use ProtectAction::{Block, Log};
        let m = |n: u64| Duration::from_secs(n * 60);
        ProtectionSettings {
            enabled: true,
            exempt: vec![
                IpNet::from(std::net::IpAddr::from([127, 0, 0, 1])),
                IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
            shared: None,
            rate_window: m(5),
            max_connections: 2000,
            max_auth_attempts: 2000,
            ban_time: m(10),
            max_ban_time: m(24 * 60),
            ban_memory: m(24 * 60),
            max_sources: 20_000,
            admin_users: Vec::new(),
            deny_ip_sets: Vec::new(),
            allow_ip_sets: Vec::new(),
            geo: None,
            brute_force: Detection::new(Block, 5, m(10)),
            password_spray: Detection::new(Block, 10, m(10)),
            login_after_failures: Detection::new(Log, 3, m(10)),
            scan: Detection::new(Log, 5, m(5)),
            connection_spike: Detection::new(Log, 500, m(1)),
            first_seen: Detection::new(Log, 1, m(24 * 60)),
            privilege_change: Detection::new(Log, 1, m(10)),
            egress: Detection::new(Log, 1 << 30, m(10)),
            sql_injection: Detection::new(Log, 1, m(10)),
        }
    }
}

/// How an alarm reduces the samples of one period to a datapoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmStatistic {
    Average,
    Maximum,
    Minimum,
    /// Last sample minus first: what a counter gained in the period.
    Increase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmComparison {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

impl AlarmComparison {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmComparison::Greater => ">",
            AlarmComparison::GreaterOrEqual => ">=",
            AlarmComparison::Less => "<",
            AlarmComparison::LessOrEqual => "<=",
        }
    }

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            AlarmComparison::Greater => value > threshold,
            AlarmComparison::GreaterOrEqual => value >= threshold,
            AlarmComparison::Less => value < threshold,
            AlarmComparison::LessOrEqual => value <= threshold,
        }
    }
}

/// The body an alarm's webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// `{"text": "..."}`: Slack incoming webhooks and compatible receivers.
    Slack,
    /// A JSON object with every field of the transition.
    Json,
}

/// One `[[alarms]]` rule, CloudWatch-style.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmSettings {
    pub name: String,
    /// A metric family of `/metrics` (`sumun_unhealthy_targets`).
    pub metric: String,
    /// Only series with these label values; the matching series are summed.
    pub labels: BTreeMap<String, String>,
    pub statistic: AlarmStatistic,
    pub comparison: AlarmComparison,
    pub threshold: f64,
    /// Default `"60s"`.
    pub period: Duration,
    /// Breaching periods in a row before ALARM. Default 1.
    pub evaluation_periods: u32,
    /// `http://` or `https://` URL the OK/ALARM transitions are POSTed to.
    pub webhook: String,
    /// Default `json`.
    pub format: WebhookFormat,
}
