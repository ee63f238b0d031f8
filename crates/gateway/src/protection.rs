//! Inline protection at the gateway: the door check every connection passes before any
//! protocol work ([`Protection::admit`]: bans, rate limits, IP set and geo rules), the events
//! the detections learn from (refusals, logins, statements, session ends, fed by `records`),
//! the findings they produce (an audit `finding` event, `sumun_findings_total`, a warning in
//! the log, `/api/findings`), and the files the rules read (IP set files and the geo database,
//! re-read when they change).
//!
//! The logic is `sumun-protect`'s; this module owns the lock around it, the files, and the
//! wiring. Everything here is per connection or rarer, never per byte; a statement costs a
//! keyword check unless it changes privileges.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use sumun_config::{Config, ProtectionSettings, SharedUrl};
use sumun_protect::{Admission, Ban, Engine, Finding, GeoDb, IpSet, Now, Place, RuleDenial, Rules};

use crate::metrics::RejectReason;
use crate::records::Records;

/// Why the door refused a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Banned(Ban),
    RateLimited,
    Rule(RuleDenial),
}

impl Refusal {
    pub fn reason(&self) -> RejectReason {
        match self {
            Refusal::Banned(_) => RejectReason::Banned,
            Refusal::RateLimited => RejectReason::RateLimited,
            Refusal::Rule(RuleDenial::Country(_)) => RejectReason::Geo,
            Refusal::Rule(_) => RejectReason::IpSet,
        }
    }
}

/// A file the rules read, with the modification time it was read at.
#[derive(Debug, Clone)]
struct Watched {
    path: PathBuf,
    modified: Option<SystemTime>,
}

/// An IP set backed by a file: its name, file and inline networks.
#[derive(Debug, Clone)]
struct SetFile {
    name: String,
    watched: Watched,
    inline: Vec<ipnet::IpNet>,
}

#[derive(Debug, Default)]
struct Files {
    sets: Vec<SetFile>,
    geo: Option<Watched>,
    /// Every set by name, as last read.
    all: HashMap<String, Arc<IpSet>>,
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The rules' inputs, ready to swap in: built in an apply's first phase (where a bad file
/// fails the apply) and by the once-a-second file check (where it keeps the previous one).
#[derive(Debug, Default)]
pub struct Prepared {
    rules: Rules,
    sets: HashMap<String, Arc<IpSet>>,
    files: Vec<SetFile>,
    geo_file: Option<Watched>,
    settings: Option<ProtectionSettings>,
    admins: HashSet<String>,
    /// The Redis key shared bans live under.
    key: String,
}

#[derive(Debug)]
pub struct Protection {
    engine: Mutex<Engine>,
    rules: ArcSwap<Rules>,
    files: Mutex<Files>,
    /// Users with `admin = true` in the config (their privilege changes are expected).
    admins: ArcSwap<HashSet<String>>,
    /// Which statement detections are on ([`WATCH_PRIVILEGE`], [`WATCH_SQLI`]).
    watch: std::sync::atomic::AtomicU8,
    /// Listener name -> the address it is bound to, for findings' `dst` and `port`.
    listeners: ArcSwap<HashMap<Arc<str>, SocketAddr>>,
    /// `[protection] shared`: what is to be published, and the sync task.
    sharing: Mutex<Sharing>,
}

#[derive(Debug, Default)]
struct Sharing {
    /// The URL and Redis key the sync task runs with, and its stop switch.
    task: Option<(String, String, tokio::sync::watch::Sender<bool>)>,
    unbans: Vec<IpAddr>,
    /// Bans made here and published.
    published: HashSet<IpAddr>,
}

impl Default for Protection {
    fn default() -> Self {
        Protection {
            engine: Mutex::new(Engine::new(
                ProtectionSettings::default(),
                std::time::Instant::now(),
            )),
            rules: ArcSwap::from_pointee(Rules::default()),
            files: Mutex::new(Files::default()),
            admins: ArcSwap::from_pointee(HashSet::new()),
            watch: std::sync::atomic::AtomicU8::new(WATCH_PRIVILEGE | WATCH_SQLI),
            listeners: ArcSwap::from_pointee(HashMap::new()),
            sharing: Mutex::new(Sharing::default()),
        }
    }
}

const WATCH_PRIVILEGE: u8 = 1;
const WATCH_SQLI: u8 = 2;

/// Read an IP set file.
fn read_set(path: &PathBuf) -> Result<Vec<ipnet::IpNet>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read ip set file {}: {e}", path.display()))?;
    sumun_config::parse_net_lines(&text)
        .map_err(|(line, e)| format!("ip set file {} line {line}: {e}", path.display()))
}

fn read_geo(path: &PathBuf) -> Result<GeoDb, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read geo database {}: {e}", path.display()))?;
    GeoDb::from_bytes(bytes).map_err(|e| format!("geo database {}: {e}", path.display()))
}

impl Protection {
    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read what `config`'s rules need (IP set files, the geo database). Errors name the file.
    pub fn prepare(&self, config: &Config) -> Result<Prepared, String> {
        let p = &config.protection;
        let mut sets = HashMap::new();
        let mut files = Vec::new();
        for set in &config.ip_sets {
            let mut nets = set.cidrs.clone();
            if let Some(path) = &set.file {
                let watched = Watched {
                    path: path.clone(),
                    modified: modified(path),
                };
                nets.extend(read_set(path)?);
                files.push(SetFile {
                    name: set.name.clone(),
                    watched,
                    inline: set.cidrs.clone(),
                });
            }
            sets.insert(set.name.clone(), Arc::new(IpSet::new(&nets)));
        }
        let (geo, geo_file) = match &p.geo {
            Some(g) => {
                let watched = Watched {
                    path: g.database.clone(),
                    modified: modified(&g.database),
                };
                (Some(Arc::new(read_geo(&g.database)?)), Some(watched))
            }
            None => (None, None),
        };
        let rules = build_rules(p, &sets, geo);
        let admins = config
            .users
            .iter()
            .filter(|u| u.admin)
            .map(|u| u.name.clone())
            .chain(p.admin_users.iter().cloned())
            .collect();
        Ok(Prepared {
            rules,
            sets,
            files,
            geo_file,
            settings: Some(p.clone()),
            admins,
            key: format!("sumun:{}:bans", config.gateway.name),
        })
    }

    /// Take a prepared config (an apply's commit phase; cannot fail).
    pub fn commit(self: &Arc<Self>, prepared: Prepared, listeners: HashMap<Arc<str>, SocketAddr>) {
        if let Some(s) = &prepared.settings {
            self.share(s.shared.as_ref().map(SharedUrl::as_str), &prepared.key);
        }
        if let Some(s) = prepared.settings {
            let mut watch = 0;
            if s.enabled && s.privilege_change.enabled {
                watch |= WATCH_PRIVILEGE;
            }
            if s.enabled && s.sql_injection.enabled {
                watch |= WATCH_SQLI;
            }
            self.watch
                .store(watch, std::sync::atomic::Ordering::Relaxed);
            self.engine().configure(s);
        }
        self.rules.store(Arc::new(prepared.rules));
        *self.files.lock().unwrap_or_else(|p| p.into_inner()) = Files {
            sets: prepared.files,
            geo: prepared.geo_file,
            all: prepared.sets,
        };
        self.admins.store(Arc::new(prepared.admins));
        self.listeners.store(Arc::new(listeners));
    }

    /// Once a second: forget idle state, and re-read IP set files and the geo database that
    /// changed (a file that no longer reads keeps its previous contents, with an error logged).
    pub fn tick(&self) {
        self.engine().sweep(Now::system());
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let Files {
            sets,
            geo: geo_file,
            all,
        } = &mut *files;
        let mut changed = false;
        for set in sets.iter_mut() {
            let now = modified(&set.watched.path);
            if now == set.watched.modified {
                continue;
            }
            set.watched.modified = now;
            match read_set(&set.watched.path) {
                Ok(nets) => {
                    let mut nets = nets;
                    nets.extend(set.inline.iter().copied());
                    tracing::info!(ip_set = %set.name, file = %set.watched.path.display(), networks = nets.len(), "ip set file changed; reloaded");
                    all.insert(set.name.clone(), Arc::new(IpSet::new(&nets)));
                    changed = true;
                }
                Err(e) => {
                    tracing::error!(ip_set = %set.name, error = %e, "cannot reload ip set file; keeping the previous contents")
                }
            }
        }
        let mut geo = self.rules.load().geo.clone();
        if let Some(watched) = geo_file {
            let now = modified(&watched.path);
            if now != watched.modified {
                watched.modified = now;
                match read_geo(&watched.path) {
                    Ok(db) => {
                        tracing::info!(file = %watched.path.display(), kind = %db.kind, "geo database changed; reloaded");
                        geo = Some(Arc::new(db));
                        changed = true;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot reload the geo database; keeping the previous one")
                    }
                }
            }
        }
        if changed {
            let settings = self.engine().settings().clone();
            self.rules.store(Arc::new(build_rules(&settings, all, geo)));
        }
    }

    /// The door: may a connection from `client` to `local` on `listener` proceed? Counted in
    /// the source's rate limits either way.
    pub fn admit(
        &self,
        client: SocketAddr,
        local: SocketAddr,
        listener: &str,
    ) -> Result<(), Refusal> {
        let ip = client.ip();
        self.rules.load().check(ip).map_err(Refusal::Rule)?;
        let place = Place {
            listener,
            dst: local.ip(),
            port: local.port(),
        };
        let mut engine = self.engine();
        match engine.admit(ip, place, Now::system()) {
            Admission::Allow => Ok(()),
            Admission::Banned(ban) => Err(Refusal::Banned(ban)),
            Admission::RateLimited => Err(Refusal::RateLimited),
        }
    }

    fn place<'a>(&self, listener: &'a str, map: &HashMap<Arc<str>, SocketAddr>) -> Place<'a> {
        let local = map
            .get(listener)
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        Place {
            listener,
            dst: local.ip(),
            port: local.port(),
        }
    }

    /// Findings the last calls produced, taken out of the engine.
    fn drain(engine: &mut Engine) -> Vec<Finding> {
        engine.take_findings()
    }

    /// A refused connection (from `records.reject`).
    pub(crate) fn refused(
        &self,
        records: &Records,
        listener: &str,
        client: SocketAddr,
        local: SocketAddr,
        reason: &str,
    ) {
        let place = Place {
            listener,
            dst: local.ip(),
            port: local.port(),
        };
        let found = {
            let mut e = self.engine();
            e.refused(client.ip(), place, reason, Now::system());
            Self::drain(&mut e)
        };
        records.write_findings(found, client);
    }

    /// An `auth.failure`, `auth.success` or `session.start` event (from `records.audit`).
    pub(crate) fn login(
        &self,
        records: &Records,
        event: &str,
        listener: &str,
        client: SocketAddr,
        user: &str,
        reason: &str,
    ) {
        let map = self.listeners.load();
        let place = self.place(listener, &map);
        let found = {
            let mut e = self.engine();
            let now = Now::system();
            if event == "auth.failure" {
                e.auth_failure(client.ip(), place, user, reason, now);
            } else {
                e.auth_success(client.ip(), place, user, now);
            }
            Self::drain(&mut e)
        };
        records.write_findings(found, client);
    }

    /// Whether a statement detection is on, so front ends hand statements over even when no
    /// audit log is written.
    pub(crate) fn watches_statements(&self) -> bool {
        self.watch.load(std::sync::atomic::Ordering::Relaxed) != 0
    }

    /// A statement (from `records.audit_query`): privilege changes and SQL injection
    /// (`sumun-sqli`, about a quarter of a microsecond for an ordinary statement). Locks
    /// nothing unless one of them fires.
    pub(crate) fn statement(
        &self,
        records: &Records,
        listener: &str,
        client: SocketAddr,
        user: &str,
        sql: &str,
        syntax: sumun_wire::sql::Syntax,
    ) {
        let watch = self.watch.load(std::sync::atomic::Ordering::Relaxed);
        if watch == 0 {
            return;
        }
        let privilege = if watch & WATCH_PRIVILEGE != 0 {
            sumun_protect::privilege_change(sql)
        } else {
            None
        };
        let admins = self.admins.load();
        let admin = admins.contains(user);
        let injection = if watch & WATCH_SQLI != 0 {
            let opts = sumun_sqli::Options {
                syntax,
                app_user: !admin,
                max_bytes: sumun_sqli::DEFAULT_MAX_BYTES,
            };
            sumun_sqli::inspect_with(sql, &opts).finding
        } else {
            None
        };
        if privilege.is_none() && injection.is_none() {
            return;
        }
        let map = self.listeners.load();
        let place = self.place(listener, &map);
        let found = {
            let mut e = self.engine();
            let now = Now::system();
            if privilege.is_some() {
                e.statement(client.ip(), place, user, admin, sql, now);
            }
            if let Some(f) = injection {
                let rules: Vec<&str> = f.rules.iter().map(|r| r.name()).collect();
                let detail = format!(
                    "score {} ({}) in the {}: {}",
                    f.score,
                    rules.join(", "),
                    f.place.as_str(),
                    f.evidence
                );
                let severity = match f.severity {
                    sumun_sqli::Severity::High => sumun_protect::Severity::High,
                    sumun_sqli::Severity::Medium => sumun_protect::Severity::Medium,
                };
                e.sql_injection(client.ip(), place, user, severity, detail, now);
            }
            Self::drain(&mut e)
        };
        records.write_findings(found, client);
    }

    /// A session ended (egress).
    pub(crate) fn session_end(
        &self,
        records: &Records,
        listener: &str,
        client: SocketAddr,
        user: Option<&str>,
        bytes_out: u64,
        started: u64,
    ) {
        let map = self.listeners.load();
        let place = self.place(listener, &map);
        let found = {
            let mut e = self.engine();
            e.session_end(client.ip(), place, user, bytes_out, started, Now::system());
            Self::drain(&mut e)
        };
        records.write_findings(found, client);
    }

    /// The findings kept, newest first.
    pub fn findings(&self) -> Vec<Finding> {
        let e = self.engine();
        let mut out: Vec<Finding> = e.findings().cloned().collect();
        out.reverse();
        out
    }

    /// Bans in force, soonest to end first.
    pub fn bans(&self) -> Vec<Ban> {
        self.engine().bans(Now::system())
    }

    /// Lift the ban on `ip` (on every replica, with `shared`); false when it had none here.
    pub fn unban(&self, ip: IpAddr) -> bool {
        let mut sharing = self.sharing();
        if sharing.task.is_some() {
            sharing.unbans.push(ip);
            sharing.published.remove(&ip);
        }
        drop(sharing);
        self.engine().unban(ip)
    }

    fn sharing(&self) -> std::sync::MutexGuard<'_, Sharing> {
        self.sharing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start, restart or stop the Redis sync task for `url`.
    fn share(self: &Arc<Self>, url: Option<&str>, key: &str) {
        let mut sharing = self.sharing();
        let same = match (&sharing.task, url) {
            (Some((u, k, _)), Some(url)) => u == url && k == key,
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        if let Some((_, _, stop)) = sharing.task.take() {
            stop.send_replace(true);
        }
        let Some(url) = url else {
            return;
        };
        let Some(parsed) = crate::shared_state::RedisUrl::parse(url) else {
            tracing::error!("[protection] shared is not a redis:// URL; bans stay per replica");
            return;
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(crate::shared_state::run(
            Arc::downgrade(self),
            parsed,
            key.to_string(),
            stop_rx,
        ));
        sharing.task = Some((url.to_string(), key.to_string(), stop));
    }

    /// Bans made here and bans lifted here since the last call, to publish.
    pub(crate) fn take_shared_changes(&self) -> (Vec<Ban>, Vec<IpAddr>) {
        let bans = self.engine().take_new_bans();
        let mut sharing = self.sharing();
        for b in &bans {
            sharing.published.insert(b.addr);
        }
        (bans, std::mem::take(&mut sharing.unbans))
    }

    /// Put back what could not be published.
    pub(crate) fn requeue(&self, bans: Vec<Ban>, unbans: Vec<IpAddr>) {
        self.engine().requeue_new_bans(bans);
        self.sharing().unbans.extend(unbans);
    }

    /// A ban read from Redis; true when it is (now) enforced here because of Redis.
    pub(crate) fn import_ban(&self, ip: IpAddr, until: u64) -> bool {
        if self.sharing().published.contains(&ip) {
            return false;
        }
        self.engine().ban_until(ip, until, "shared", Now::system())
    }

    /// A ban lifted on another replica.
    pub(crate) fn lift_imported(&self, ip: IpAddr) {
        self.sharing().published.remove(&ip);
        if self.engine().unban(ip) {
            tracing::info!(addr = %ip, "ban lifted by another replica");
        }
    }

    /// Bans published from here that Redis no longer has (lifted elsewhere) and still in force.
    pub(crate) fn local_bans_missing_from(&self, remote: &HashSet<IpAddr>) -> Vec<IpAddr> {
        let now = crate::records::unix_now();
        let active: HashSet<IpAddr> = self
            .engine()
            .bans(Now::system())
            .into_iter()
            .filter(|b| b.until > now)
            .map(|b| b.addr)
            .collect();
        let mut sharing = self.sharing();
        let gone: Vec<IpAddr> = sharing
            .published
            .iter()
            .filter(|a| !remote.contains(a))
            .copied()
            .collect();
        for a in &gone {
            sharing.published.remove(a);
        }
        gone.into_iter().filter(|a| active.contains(a)).collect()
    }

    /// Ban `ip` now (tests and operators), as a detection with action `block` would.
    pub fn ban(&self, ip: IpAddr, reason: &str) -> Ban {
        self.engine().ban(ip, reason, Now::system())
    }

    /// `sumun_findings_total`, `sumun_bans_active`, `sumun_protection_sources`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let e = self.engine();
        crate::metrics::family(
            out,
            "sumun_findings_total",
            "counter",
            "Findings of the inline detections, by detection and severity.",
        );
        for ((detection, severity), n) in e.totals() {
            let _ = writeln!(
                out,
                "sumun_findings_total{{detection=\"{detection}\",severity=\"{}\"}} {n}",
                severity.as_str()
            );
        }
        crate::metrics::family(
            out,
            "sumun_bans_active",
            "gauge",
            "Source addresses banned now.",
        );
        let _ = writeln!(out, "sumun_bans_active {}", e.bans(Now::system()).len());
        crate::metrics::family(
            out,
            "sumun_protection_sources",
            "gauge",
            "Source addresses whose counters protection tracks now.",
        );
        let _ = writeln!(out, "sumun_protection_sources {}", e.tracked());
    }
}

fn build_rules(
    p: &ProtectionSettings,
    sets: &HashMap<String, Arc<IpSet>>,
    geo: Option<Arc<GeoDb>>,
) -> Rules {
    let pick = |names: &[String]| {
        names
            .iter()
            .filter_map(|n| sets.get(n).map(|s| (n.clone(), s.clone())))
            .collect::<Vec<_>>()
    };
    let (deny_countries, allow_countries) = match &p.geo {
        Some(g) => (g.deny_countries.clone(), g.allow_countries.clone()),
        None => (Vec::new(), Vec::new()),
    };
    Rules {
        deny: pick(&p.deny_ip_sets),
        allow: pick(&p.allow_ip_sets),
        geo,
        deny_countries,
        allow_countries,
    }
}
