//! The state behind the door: per-source counters and detections, bans, learned sources per
//! user, and the findings they produced. One `Engine` per gateway, behind one lock; every call
//! is O(1) or O(threshold) in the source's capped state.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use sumun_config::{Detection, ProtectAction, ProtectionSettings};

use crate::capped::CappedMap;
use crate::finding::{Evidence, Finding, Severity};
use crate::ipset::{canonical, IpSet};
use crate::rate::SlidingCounter;
use crate::Now;

/// Bans waiting to be shared with other replicas, at most.
const NEW_BANS_KEPT: usize = 10_000;
/// Findings kept for `/api/findings`.
const FINDINGS_KEPT: usize = 1000;
/// Evidence events kept per source.
const EVIDENCE_KEPT: usize = 5;
/// Timestamps or names kept per source and detection, whatever a threshold says.
const PER_SOURCE_CAP: usize = 256;
/// Users whose sources are learnt, and sources learnt per user.
const USERS_KEPT: usize = 10_000;
const SOURCES_PER_USER: usize = 64;

/// The answer at the door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Allow,
    /// Banned until `Ban::until`.
    Banned(Ban),
    /// Over `max_connections` or `max_auth_attempts` in the rate window.
    RateLimited,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ban {
    pub addr: IpAddr,
    /// Unix seconds.
    pub since: u64,
    pub until: u64,
    /// The detection (or `manual`, `shared`) that banned it.
    pub reason: String,
    /// The source's bans within `ban_memory`, this one included.
    pub count: u32,
    #[serde(skip)]
    pub until_mono: Instant,
}

/// Where an event happened: the listener and the gateway address the client reached.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub listener: &'a str,
    pub dst: IpAddr,
    pub port: u16,
}

#[derive(Debug)]
struct Source {
    connections: SlidingCounter,
    auth_attempts: SlidingCounter,
    /// Failed logins (monotonic, unix), newest last.
    failures: VecDeque<(Instant, u64)>,
    /// Users that failed (hashed), with when they last did.
    failed_users: Vec<(u64, Instant)>,
    /// Listener ports the source was refused on, with when.
    refused_ports: Vec<(u16, Instant)>,
    evidence: VecDeque<Evidence>,
    /// Detections that fired for this source and when (not repeated within their window).
    fired: Vec<(&'static str, Instant)>,
}

impl Source {
    fn new(now: Instant) -> Source {
        Source {
            connections: SlidingCounter::new(now),
            auth_attempts: SlidingCounter::new(now),
            failures: VecDeque::new(),
            failed_users: Vec::new(),
            refused_ports: Vec::new(),
            evidence: VecDeque::new(),
            fired: Vec::new(),
        }
    }

    fn note(&mut self, e: Evidence) {
        if self.evidence.len() >= EVIDENCE_KEPT {
            self.evidence.pop_front();
        }
        self.evidence.push_back(e);
    }

    /// Whether `detection` may fire now (it did not within `window`); marks it fired.
    fn arm(&mut self, detection: &'static str, window: Duration, now: Instant) -> bool {
        match self.fired.iter_mut().find(|(d, _)| *d == detection) {
            Some((_, at)) if now.saturating_duration_since(*at) < window => false,
            Some((_, at)) => {
                *at = now;
                true
            }
            None => {
                self.fired.push((detection, now));
                true
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Offense {
    count: u32,
    last: Instant,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Engine {
    s: ProtectionSettings,
    exempt: IpSet,
    started: Instant,
    sources: CappedMap<IpAddr, Source>,
    bans: CappedMap<IpAddr, Ban>,
    offenses: CappedMap<IpAddr, Offense>,
    users: CappedMap<String, Vec<IpAddr>>,
    spike: SlidingCounter,
    spike_fired: Option<Instant>,
    findings: VecDeque<Finding>,
    totals: BTreeMap<(&'static str, Severity), u64>,
    /// Findings not yet taken by [`Engine::take_findings`].
    pending: Vec<Finding>,
    /// Bans made here not yet taken by [`Engine::take_new_bans`] (to share with replicas).
    new_bans: Vec<Ban>,
}

struct Fire<'a> {
    detection: &'static str,
    setting: Detection,
    severity: Severity,
    technique: &'static str,
    technique_name: &'static str,
    place: Option<Place<'a>>,
    user: Option<&'a str>,
    detail: String,
    first: u64,
    records: usize,
}

fn hash(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

fn within(at: Instant, now: Instant, window: Duration) -> bool {
    now.saturating_duration_since(at) < window
}

impl Engine {
    pub fn new(settings: ProtectionSettings, now: Instant) -> Engine {
        let cap = settings.max_sources as usize;
        let mut e = Engine {
            exempt: IpSet::default(),
            started: now,
            sources: CappedMap::new(cap),
            bans: CappedMap::new(cap),
            offenses: CappedMap::new(cap),
            users: CappedMap::new(USERS_KEPT),
            spike: SlidingCounter::new(now),
            spike_fired: None,
            findings: VecDeque::new(),
            totals: BTreeMap::new(),
            pending: Vec::new(),
            new_bans: Vec::new(),
            s: settings.clone(),
        };
        e.configure(settings);
        e
    }

    /// Take a reloaded config's settings; learnt state, counters and bans are kept.
    pub fn configure(&mut self, settings: ProtectionSettings) {
        self.exempt = IpSet::new(&settings.exempt);
        let cap = settings.max_sources as usize;
        self.sources.set_cap(cap);
        self.bans.set_cap(cap);
        self.offenses.set_cap(cap);
        self.s = settings;
    }

    pub fn settings(&self) -> &ProtectionSettings {
        &self.s
    }

    /// Whether `ip` is left alone (protection off, or an `exempt` address).
    pub fn exempt(&self, ip: IpAddr) -> bool {
        !self.s.enabled || self.exempt.contains(ip)
    }

    /// A new connection from `ip`: counted, then judged (ban, then rate limits).
    pub fn admit(&mut self, ip: IpAddr, place: Place<'_>, now: Now) -> Admission {
        let ip = canonical(ip);
        if self.exempt(ip) {
            return Admission::Allow;
        }
        if let Some(ban) = self.bans.get(&ip) {
            if ban.until_mono > now.mono {
                return Admission::Banned(ban.clone());
            }
            self.bans.remove(&ip);
        }
        let spike = self.s.connection_spike;
        let flows = self.spike.hit(now.mono, spike.window);
        if spike.enabled
            && flows >= spike.threshold
            && self
                .spike_fired
                .is_none_or(|at| !within(at, now.mono, spike.window))
        {
            self.spike_fired = Some(now.mono);
            let detail = format!(
                "{flows} new connections in {} gateway-wide (threshold {}); this source's crossed it",
                show(spike.window),
                spike.threshold
            );
            // Never blocks: the source that crossed the line is not the spike.
            let setting = Detection {
                action: ProtectAction::Log,
                ..spike
            };
            self.fire(
                ip,
                now,
                Fire {
                    detection: "connection_spike",
                    setting,
                    severity: Severity::Medium,
                    technique: "T1499",
                    technique_name: "Endpoint Denial of Service",
                    place: Some(place),
                    user: None,
                    detail,
                    first: now.unix.saturating_sub(spike.window.as_secs()),
                    records: flows as usize,
                },
            );
        }
        let window = self.s.rate_window;
        let (max_conn, max_auth) = (self.s.max_connections, self.s.max_auth_attempts);
        let src = self.sources.entry(ip, now.mono, || Source::new(now.mono));
        let conns = src.connections.hit(now.mono, window);
        if max_conn > 0 && conns > u64::from(max_conn) {
            return Admission::RateLimited;
        }
        if max_auth > 0 && src.auth_attempts.estimate(now.mono, window) >= u64::from(max_auth) {
            return Admission::RateLimited;
        }
        Admission::Allow
    }

    /// A failed login.
    pub fn auth_failure(
        &mut self,
        ip: IpAddr,
        place: Place<'_>,
        user: &str,
        reason: &str,
        now: Now,
    ) {
        let ip = canonical(ip);
        if self.exempt(ip) {
            return;
        }
        let (bf, spray, laf) = (
            self.s.brute_force,
            self.s.password_spray,
            self.s.login_after_failures,
        );
        let rate_window = self.s.rate_window;
        let keep_failures = (bf.threshold.max(laf.threshold) as usize).clamp(1, PER_SOURCE_CAP);
        let longest = bf.window.max(laf.window);
        let src = self.sources.entry(ip, now.mono, || Source::new(now.mono));
        src.auth_attempts.hit(now.mono, rate_window);
        src.note(Evidence {
            ts: now.unix,
            event: "auth.failure",
            listener: place.listener.to_string(),
            port: place.port,
            user: Some(user.to_string()),
            reason: Some(reason.to_string()),
        });
        src.failures
            .retain(|(at, _)| within(*at, now.mono, longest));
        if src.failures.len() >= keep_failures {
            src.failures.pop_front();
        }
        src.failures.push_back((now.mono, now.unix));
        let user_hash = hash(user);
        src.failed_users
            .retain(|(_, at)| within(*at, now.mono, spray.window));
        let n = src.failed_users.len();
        match src.failed_users.iter_mut().find(|(h, _)| *h == user_hash) {
            Some(entry) => entry.1 = now.mono,
            None if n < PER_SOURCE_CAP => src.failed_users.push((user_hash, now.mono)),
            None => {}
        }

        let recent: Vec<u64> = src
            .failures
            .iter()
            .filter(|(at, _)| within(*at, now.mono, bf.window))
            .map(|(_, unix)| *unix)
            .collect();
        let users = src.failed_users.len();
        if bf.enabled
            && recent.len() as u64 >= bf.threshold
            && src.arm("brute_force", bf.window, now.mono)
        {
            let detail = format!(
                "{} failed logins in {} (threshold {})",
                recent.len(),
                show(bf.window),
                bf.threshold
            );
            self.fire(
                ip,
                now,
                Fire {
                    detection: "brute_force",
                    setting: bf,
                    severity: Severity::Medium,
                    technique: "T1110",
                    technique_name: "Brute Force",
                    place: Some(place),
                    user: Some(user),
                    detail,
                    first: recent.first().copied().unwrap_or(now.unix),
                    records: recent.len(),
                },
            );
        }
        let Some(src) = self.sources.get_mut_untouched(&ip) else {
            return;
        };
        if spray.enabled
            && users as u64 >= spray.threshold
            && src.arm("password_spray", spray.window, now.mono)
        {
            let detail = format!(
                "{users} distinct users failed to log in within {} (threshold {})",
                show(spray.window),
                spray.threshold
            );
            let first = src.failures.front().map_or(now.unix, |(_, u)| *u);
            self.fire(
                ip,
                now,
                Fire {
                    detection: "password_spray",
                    setting: spray,
                    severity: Severity::High,
                    technique: "T1110.003",
                    technique_name: "Password Spraying",
                    place: Some(place),
                    user: None,
                    detail,
                    first,
                    records: users,
                },
            );
        }
    }

    /// A successful login of `user`.
    pub fn auth_success(&mut self, ip: IpAddr, place: Place<'_>, user: &str, now: Now) {
        let ip = canonical(ip);
        if self.exempt(ip) {
            return;
        }
        let (laf, seen) = (self.s.login_after_failures, self.s.first_seen);
        let rate_window = self.s.rate_window;
        let src = self.sources.entry(ip, now.mono, || Source::new(now.mono));
        src.auth_attempts.hit(now.mono, rate_window);
        src.note(Evidence {
            ts: now.unix,
            event: "auth.success",
            listener: place.listener.to_string(),
            port: place.port,
            user: Some(user.to_string()),
            reason: None,
        });
        let failures: Vec<u64> = src
            .failures
            .iter()
            .filter(|(at, _)| within(*at, now.mono, laf.window))
            .map(|(_, u)| *u)
            .collect();
        let after_failures = laf.enabled
            && failures.len() as u64 >= laf.threshold
            && src.arm("login_after_failures", laf.window, now.mono);
        if after_failures {
            src.failures.clear();
            let detail = format!(
                "'{user}' logged in after {} failed logins from this source within {}",
                failures.len(),
                show(laf.window)
            );
            self.fire(
                ip,
                now,
                Fire {
                    detection: "login_after_failures",
                    setting: laf,
                    severity: Severity::High,
                    technique: "T1110",
                    technique_name: "Brute Force",
                    place: Some(place),
                    user: Some(user),
                    detail,
                    first: failures.first().copied().unwrap_or(now.unix),
                    records: failures.len() + 1,
                },
            );
        }
        if seen.enabled {
            let learning = within(self.started, now.mono, seen.window);
            let known = self.users.get(&user.to_string()).map(|s| s.contains(&ip));
            let sources = self.users.entry(user.to_string(), now.mono, Vec::new);
            let first_time_user = sources.is_empty();
            if !sources.contains(&ip) {
                if sources.len() >= SOURCES_PER_USER {
                    sources.remove(0);
                }
                sources.push(ip);
            }
            if !learning && known == Some(false) && !first_time_user {
                let detail =
                    format!("'{user}' logged in from a source not seen for this user before");
                self.fire(
                    ip,
                    now,
                    Fire {
                        detection: "first_seen",
                        setting: seen,
                        severity: Severity::Low,
                        technique: "T1078",
                        technique_name: "Valid Accounts",
                        place: Some(place),
                        user: Some(user),
                        detail,
                        first: now.unix,
                        records: 1,
                    },
                );
            }
        }
    }

    /// A connection refused (by a security group, a handshake that never came...). Refusals
    /// by protection itself (`banned`, `rate_limited`) are not counted again.
    pub fn refused(&mut self, ip: IpAddr, place: Place<'_>, reason: &str, now: Now) {
        let ip = canonical(ip);
        if self.exempt(ip) || matches!(reason, "banned" | "rate_limited") {
            return;
        }
        let scan = self.s.scan;
        let src = self.sources.entry(ip, now.mono, || Source::new(now.mono));
        src.note(Evidence {
            ts: now.unix,
            event: "connection.rejected",
            listener: place.listener.to_string(),
            port: place.port,
            user: None,
            reason: Some(reason.to_string()),
        });
        src.refused_ports
            .retain(|(_, at)| within(*at, now.mono, scan.window));
        let n = src.refused_ports.len();
        match src.refused_ports.iter_mut().find(|(p, _)| *p == place.port) {
            Some(entry) => entry.1 = now.mono,
            None if n < PER_SOURCE_CAP => src.refused_ports.push((place.port, now.mono)),
            None => {}
        }
        let ports = src.refused_ports.len();
        if scan.enabled && ports as u64 >= scan.threshold && src.arm("scan", scan.window, now.mono)
        {
            let mut list: Vec<u16> = src.refused_ports.iter().map(|(p, _)| *p).collect();
            list.sort_unstable();
            let detail = format!(
                "refused on {ports} listener ports within {} (threshold {}): {}",
                show(scan.window),
                scan.threshold,
                list.iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.fire(
                ip,
                now,
                Fire {
                    detection: "scan",
                    setting: scan,
                    severity: Severity::Medium,
                    technique: "T1046",
                    technique_name: "Network Service Discovery",
                    place: Some(Place { port: 0, ..place }),
                    user: None,
                    detail,
                    first: now.unix.saturating_sub(scan.window.as_secs()),
                    records: ports,
                },
            );
        }
    }

    /// A statement `user` ran. `admin` says whether the user is an administrator by config.
    pub fn statement(
        &mut self,
        ip: IpAddr,
        place: Place<'_>,
        user: &str,
        admin: bool,
        sql: &str,
        now: Now,
    ) {
        let ip = canonical(ip);
        let pc = self.s.privilege_change;
        if !pc.enabled || self.exempt(ip) || admin || self.s.admin_users.iter().any(|a| a == user) {
            return;
        }
        let Some(command) = crate::sql::privilege_change(sql) else {
            return;
        };
        let detail = format!("'{user}', not an administrator, ran {command}");
        self.fire(
            ip,
            now,
            Fire {
                detection: "privilege_change",
                setting: pc,
                severity: Severity::High,
                technique: "T1098",
                technique_name: "Account Manipulation",
                place: Some(place),
                user: Some(user),
                detail,
                first: now.unix,
                records: 1,
            },
        );
    }

    /// A statement the SQL-injection inspector flagged (`detail` says why).
    pub fn sql_injection(
        &mut self,
        ip: IpAddr,
        place: Place<'_>,
        user: &str,
        severity: Severity,
        detail: String,
        now: Now,
    ) {
        let ip = canonical(ip);
        let si = self.s.sql_injection;
        if !si.enabled || self.exempt(ip) {
            return;
        }
        self.fire(
            ip,
            now,
            Fire {
                detection: "sql_injection",
                setting: si,
                severity,
                technique: "T1190",
                technique_name: "Exploit Public-Facing Application",
                place: Some(place),
                user: Some(user),
                detail,
                first: now.unix,
                records: 1,
            },
        );
    }

    /// A session ended having sent `bytes_out` to its client.
    pub fn session_end(
        &mut self,
        ip: IpAddr,
        place: Place<'_>,
        user: Option<&str>,
        bytes_out: u64,
        started: u64,
        now: Now,
    ) {
        let ip = canonical(ip);
        let eg = self.s.egress;
        if !eg.enabled || bytes_out < eg.threshold || self.exempt(ip) {
            return;
        }
        let detail = format!(
            "{bytes_out} bytes sent to one session's client (threshold {})",
            eg.threshold
        );
        self.fire(
            ip,
            now,
            Fire {
                detection: "egress",
                setting: eg,
                severity: Severity::Medium,
                technique: "T1030",
                technique_name: "Data Transfer Size Limits",
                place: Some(place),
                user,
                detail,
                first: started,
                records: 1,
            },
        );
    }

    fn fire(&mut self, ip: IpAddr, now: Now, f: Fire<'_>) {
        let evidence: Vec<Evidence> = self
            .sources
            .get(&ip)
            .map(|s| s.evidence.iter().cloned().collect())
            .unwrap_or_default();
        let blocked = f.setting.action == ProtectAction::Block;
        if blocked {
            self.ban(ip, f.detection, now);
        }
        let finding = Finding {
            detection: f.detection,
            severity: f.severity,
            technique: f.technique,
            technique_name: f.technique_name,
            src: ip,
            dst: f.place.map(|p| p.dst),
            port: f.place.map(|p| p.port).filter(|p| *p != 0),
            detail: f.detail,
            first: f.first.min(now.unix),
            last: now.unix,
            records: f.records,
            evidence,
            user: f.user.map(str::to_string),
            listener: f.place.map(|p| p.listener.to_string()),
            action: f.setting.action.as_str(),
        };
        *self
            .totals
            .entry((finding.detection, finding.severity))
            .or_default() += 1;
        if self.findings.len() >= FINDINGS_KEPT {
            self.findings.pop_front();
        }
        self.findings.push_back(finding.clone());
        self.pending.push(finding);
    }

    /// Ban `ip` for `ban_time`, doubled for each earlier ban within `ban_memory`, up to
    /// `max_ban_time`.
    pub fn ban(&mut self, ip: IpAddr, reason: &str, now: Now) -> Ban {
        let ip = canonical(ip);
        let memory = self.s.ban_memory;
        let offense = self.offenses.entry(ip, now.mono, || Offense {
            count: 0,
            last: now.mono,
        });
        if !within(offense.last, now.mono, memory) {
            offense.count = 0;
        }
        offense.count = offense.count.saturating_add(1);
        offense.last = now.mono;
        let count = offense.count;
        let factor = 1u32
            .checked_shl(count.saturating_sub(1).min(30))
            .unwrap_or(u32::MAX);
        let duration = self
            .s
            .ban_time
            .checked_mul(factor)
            .unwrap_or(self.s.max_ban_time)
            .min(self.s.max_ban_time);
        let ban = Ban {
            addr: ip,
            since: now.unix,
            until: now.unix + duration.as_secs().max(1),
            reason: reason.to_string(),
            count,
            until_mono: now.mono + duration,
        };
        *self.bans.entry(ip, now.mono, || ban.clone()) = ban.clone();
        if self.s.shared.is_some() && self.new_bans.len() < NEW_BANS_KEPT {
            self.new_bans.push(ban.clone());
        }
        ban
    }

    /// A ban made elsewhere (another replica), until unix second `until`. True when it is
    /// enforced from now on (false when a ban at least as long was already here).
    pub fn ban_until(&mut self, ip: IpAddr, until: u64, reason: &str, now: Now) -> bool {
        let ip = canonical(ip);
        if until <= now.unix || self.exempt(ip) {
            return false;
        }
        let left = Duration::from_secs(until - now.unix);
        if self
            .bans
            .get(&ip)
            .is_some_and(|b| b.until >= until && b.until_mono > now.mono)
        {
            return false;
        }
        let ban = Ban {
            addr: ip,
            since: now.unix,
            until,
            reason: reason.to_string(),
            count: 1,
            until_mono: now.mono + left,
        };
        let slot = self.bans.entry(ip, now.mono, || ban.clone());
        *slot = ban;
        true
    }

    /// Put back bans [`Engine::take_new_bans`] gave that could not be shared.
    pub fn requeue_new_bans(&mut self, mut bans: Vec<Ban>) {
        bans.truncate(NEW_BANS_KEPT.saturating_sub(self.new_bans.len()));
        bans.append(&mut self.new_bans);
        self.new_bans = bans;
    }

    /// Lift a ban (and forget the source's counters, so it starts afresh). False when there
    /// was none.
    pub fn unban(&mut self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.sources.remove(&ip);
        self.bans.remove(&ip).is_some()
    }

    /// Bans in force at `now`, soonest to end first.
    pub fn bans(&self, now: Now) -> Vec<Ban> {
        let mut out: Vec<Ban> = self
            .bans
            .iter()
            .map(|(_, b)| b.clone())
            .filter(|b| b.until_mono > now.mono)
            .collect();
        out.sort_by_key(|b| (b.until, b.addr));
        out
    }

    /// The findings kept (the last 1000), oldest first.
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter()
    }

    /// Findings so far, by detection and severity (`sumun_findings_total`).
    pub fn totals(&self) -> &BTreeMap<(&'static str, Severity), u64> {
        &self.totals
    }

    /// Findings made since the last call, for the audit log.
    pub fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.pending)
    }

    /// Bans made here since the last call, to share with other replicas.
    pub fn take_new_bans(&mut self) -> Vec<Ban> {
        std::mem::take(&mut self.new_bans)
    }

    /// Sources tracked now (for `sumun_protection_sources`).
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// Forget idle sources, ended bans and old offenses (once a second is plenty).
    pub fn sweep(&mut self, now: Now) {
        let s = &self.s;
        let idle = [
            s.rate_window * 2,
            s.brute_force.window,
            s.password_spray.window,
            s.login_after_failures.window,
            s.scan.window,
        ]
        .into_iter()
        .max()
        .unwrap_or(Duration::from_secs(600));
        self.sources.sweep(now.mono, idle, |_, _| true);
        self.bans
            .sweep(now.mono, Duration::MAX, |_, b| b.until_mono > now.mono);
        let memory = self.s.ban_memory.max(Duration::from_secs(1));
        self.offenses.sweep(now.mono, memory, |_, _| true);
    }
}

/// `"10m"`, `"90s"`: a window as the config writes it.
fn show(d: Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if s > 0 {
        format!("{s}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}
