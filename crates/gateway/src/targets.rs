//! Target groups made live: which targets exist, which are healthy and why, how many flows each
//! carries, and which one the next flow goes to. Health comes from two sources: active checks
//! (`health` module) and passive observation (a failed connect counts as a failed check).
//!
//! A target removed by a reload is *deregistered*: it leaves the routable set at once and its
//! drain deadline is published, so established flows close when `deregistration_delay` ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use sumun_config::{Algorithm, Role, Target, TargetGroup};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not checked yet. Routable, so a gateway that just started does not refuse traffic while
    /// its first checks run; the first check settles it either way.
    Initial,
    Healthy,
    Unhealthy,
    /// Health checks are disabled for the group.
    Unused,
    /// Removed from the group; established flows finish until the deadline.
    Draining,
}

#[derive(Debug)]
struct HealthState {
    health: Health,
    reason: String,
    successes: u32,
    failures: u32,
    since: SystemTime,
}

/// One registered target.
#[derive(Debug)]
pub struct TargetRt {
    pub address: String,
    pub addr: SocketAddr,
    pub role: Role,
    pub weight: u32,
    /// Fast-path copy of "may receive new flows".
    routable: AtomicBool,
    state: Mutex<HealthState>,
    pub active: AtomicI64,
    pub connect_errors: AtomicU64,
    pub flows_total: AtomicU64,
    /// `Some(deadline)` once draining: flows to this target must end by then.
    drain: watch::Sender<Option<Instant>>,
    /// The role a protocol-level health check observed: 0 not known, 1 primary, 2 replica.
    learned_role: std::sync::atomic::AtomicU8,
    /// Replication lag a protocol-level health check observed, in milliseconds (replicas).
    pub replica_lag_ms: AtomicU64,
}

/// Which targets a protocol front end wants for a piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Anything routable (pass-through listeners).
    Any,
    /// Not a replica: a primary, or a target whose role is not known.
    Writer,
    /// A known primary only.
    Primary,
    /// A replica within `max_lag_ms` of its primary.
    Reader { max_lag_ms: u64 },
}

/// What a health observation was.
#[derive(Debug, Clone)]
pub enum Observation {
    Success,
    /// A failure with a short noun phrase for the reason, e.g. "health check timeouts".
    Failure(&'static str),
}

impl TargetRt {
    fn new(target: &Target, checks_enabled: bool) -> TargetRt {
        let health = if checks_enabled {
            Health::Initial
        } else {
            Health::Unused
        };
        TargetRt {
            address: target.address.clone(),
            addr: target.addr,
            role: target.role,
            weight: target.weight.max(1),
            routable: AtomicBool::new(true),
            state: Mutex::new(HealthState {
                health,
                reason: match health {
                    Health::Unused => "health checks disabled".into(),
                    _ => "registration in progress".into(),
                },
                successes: 0,
                failures: 0,
                since: SystemTime::now(),
            }),
            active: AtomicI64::new(0),
            connect_errors: AtomicU64::new(0),
            flows_total: AtomicU64::new(0),
            drain: watch::channel(None).0,
            learned_role: std::sync::atomic::AtomicU8::new(0),
            replica_lag_ms: AtomicU64::new(0),
        }
    }

    /// The role health checks observed, or else the configured one.
    pub fn effective_role(&self) -> Role {
        match self.learned_role.load(Ordering::Relaxed) {
            1 => Role::Primary,
            2 => Role::Replica,
            _ => self.role,
        }
    }

    /// Record what a protocol-level health check saw.
    pub fn learn_role(&self, role: Role, lag_ms: u64) {
        let v = match role {
            Role::Primary => 1,
            Role::Replica => 2,
            Role::Any => 0,
        };
        let old = self.learned_role.swap(v, Ordering::Relaxed);
        self.replica_lag_ms.store(lag_ms, Ordering::Relaxed);
        if old != v && old != 0 {
            tracing::warn!(target_addr = %self.address, role = ?role, "target changed role");
        }
    }

    fn wanted(&self, want: Want) -> bool {
        match want {
            Want::Any => true,
            Want::Writer => self.effective_role() != Role::Replica,
            Want::Primary => self.effective_role() == Role::Primary,
            Want::Reader { max_lag_ms } => {
                self.effective_role() == Role::Replica
                    && self.replica_lag_ms.load(Ordering::Relaxed) <= max_lag_ms
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn health(&self) -> Health {
        self.lock().health
    }

    pub fn is_routable(&self) -> bool {
        self.routable.load(Ordering::Relaxed)
    }

    /// Record a check result. Returns the new state when it changed (for logging).
    pub fn observe(
        &self,
        observation: Observation,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<(Health, String)> {
        let mut st = self.lock();
        if matches!(st.health, Health::Draining | Health::Unused) {
            return None;
        }
        let next = match observation {
            Observation::Success => {
                st.successes = st.successes.saturating_add(1);
                st.failures = 0;
                let promote = match st.health {
                    Health::Initial => true,
                    Health::Unhealthy => st.successes >= healthy_threshold,
                    _ => false,
                };
                promote.then(|| {
                    (
                        Health::Healthy,
                        format!("{} consecutive successful checks", st.successes),
                    )
                })
            }
            Observation::Failure(what) => {
                st.failures = st.failures.saturating_add(1);
                st.successes = 0;
                let demote = match st.health {
                    Health::Initial => true,
                    Health::Healthy => st.failures >= unhealthy_threshold,
                    _ => false,
                };
                if st.health == Health::Unhealthy {
                    // Keep the reason current ("5 consecutive ...") without logging a change.
                    st.reason = format!("{} consecutive {what}", st.failures);
                }
                demote.then(|| {
                    (
                        Health::Unhealthy,
                        format!("{} consecutive {what}", st.failures),
                    )
                })
            }
        };
        if let Some((health, reason)) = &next {
            st.health = *health;
            st.reason = reason.clone();
            st.since = SystemTime::now();
            self.routable
                .store(*health == Health::Healthy, Ordering::Relaxed);
        }
        next
    }

    /// Stop new flows now; ask established ones to end by `deadline`.
    pub fn deregister(&self, deadline: Instant) {
        {
            let mut st = self.lock();
            st.health = Health::Draining;
            st.reason = "deregistration in progress".into();
            st.since = SystemTime::now();
        }
        self.routable.store(false, Ordering::Relaxed);
        self.drain.send_replace(Some(deadline));
    }

    /// Resolves at the drain deadline, if one is ever set.
    pub fn drain_watch(&self) -> watch::Receiver<Option<Instant>> {
        self.drain.subscribe()
    }

    pub fn status(&self, group: &str) -> TargetStatus {
        let st = self.lock();
        TargetStatus {
            target_group: group.to_string(),
            address: self.address.clone(),
            role: match self.effective_role() {
                Role::Primary => "primary",
                Role::Replica => "replica",
                Role::Any => "any",
            },
            health: st.health,
            reason: st.reason.clone(),
            since: humantime_secs(st.since),
            active_flows: self.active.load(Ordering::Relaxed).max(0),
            flows_total: self.flows_total.load(Ordering::Relaxed),
            connect_errors: self.connect_errors.load(Ordering::Relaxed),
        }
    }
}

fn humantime_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One target as `/api/targets` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub target_group: String,
    pub address: String,
    pub role: &'static str,
    pub health: Health,
    pub reason: String,
    /// Unix seconds when `health` last changed.
    pub since: u64,
    pub active_flows: i64,
    pub flows_total: u64,
    pub connect_errors: u64,
}

/// A live target group.
#[derive(Debug)]
pub struct TargetGroupRt {
    pub name: String,
    settings: ArcSwap<TargetGroup>,
    targets: ArcSwap<Vec<Arc<TargetRt>>>,
    /// Targets removed by reloads whose flows may still be open (shown by the admin API until
    /// they are idle or past their deadline).
    draining: Mutex<Vec<(Arc<TargetRt>, Instant)>>,
    next: AtomicUsize,
    /// Set when the group is removed: its health-check tasks stop.
    pub retired: AtomicBool,
    /// Wakes the group's health checks before their interval (see `recheck_now`).
    recheck: Arc<Notify>,
    /// When `recheck_now` last woke them, in ms since `born` (0: never).
    last_recheck_ms: AtomicU64,
    born: Instant,
}

/// However many sessions ask, health checks are woken at most this often.
const RECHECK_SPACING_MS: u64 = 100;

impl TargetGroupRt {
    pub fn new(settings: &TargetGroup) -> Arc<TargetGroupRt> {
        let enabled = settings.health_check.enabled;
        Arc::new(TargetGroupRt {
            name: settings.name.clone(),
            targets: ArcSwap::from_pointee(
                settings
                    .targets
                    .iter()
                    .map(|t| Arc::new(TargetRt::new(t, enabled)))
                    .collect(),
            ),
            settings: ArcSwap::from_pointee(settings.clone()),
            draining: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            recheck: Arc::new(Notify::new()),
            last_recheck_ms: AtomicU64::new(0),
            born: Instant::now(),
        })
    }

    /// Ask the group's health checks to probe now rather than at their next interval: a
    /// session is waiting for a role no routable target has (after a failover, the promoted
    /// replica is only routed to once a check has seen it as primary; with the default 10 s
    /// interval that would be a long wait). Wake-ups are spaced `RECHECK_SPACING_MS` apart.
    pub fn recheck_now(&self) {
        let now = u64::try_from(self.born.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let last = self.last_recheck_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < RECHECK_SPACING_MS {
            return;
        }
        if self
            .last_recheck_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.recheck.notify_waiters();
        }
    }

    /// What the health-check tasks wait on besides their interval.
    pub(crate) fn recheck_signal(&self) -> Arc<Notify> {
        self.recheck.clone()
    }

    pub fn settings(&self) -> Arc<TargetGroup> {
        self.settings.load_full()
    }

    pub fn targets(&self) -> Arc<Vec<Arc<TargetRt>>> {
        self.targets.load_full()
    }

    /// Apply a reloaded definition: keep targets that stay (with their health and flows), add
    /// new ones, deregister removed ones. Returns the targets that were added, which need
    /// health-check tasks.
    pub fn update(&self, settings: &TargetGroup) -> Vec<Arc<TargetRt>> {
        let old = self.targets.load_full();
        let enabled = settings.health_check.enabled;
        let mut added = Vec::new();
        let next: Vec<Arc<TargetRt>> = settings
            .targets
            .iter()
            .map(|t| {
                match old
                    .iter()
                    .find(|o| o.addr == t.addr && o.role == t.role && o.weight == t.weight.max(1))
                {
                    Some(existing) => existing.clone(),
                    None => {
                        let fresh = Arc::new(TargetRt::new(t, enabled));
                        added.push(fresh.clone());
                        fresh
                    }
                }
            })
            .collect();
        let deadline = Instant::now() + settings.deregistration_delay;
        for gone in old
            .iter()
            .filter(|o| !next.iter().any(|n| Arc::ptr_eq(n, o)))
        {
            gone.deregister(deadline);
            self.lock_draining().push((gone.clone(), deadline));
        }
        self.settings.store(Arc::new(settings.clone()));
        self.targets.store(Arc::new(next));
        added
    }

    fn lock_draining(&self) -> std::sync::MutexGuard<'_, Vec<(Arc<TargetRt>, Instant)>> {
        self.draining
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Deregister every target (gateway shutdown or group removed).
    pub fn deregister_all(&self, delay: Duration) {
        let deadline = Instant::now() + delay;
        for t in self.targets.load().iter() {
            t.deregister(deadline);
        }
    }

    /// Pick a target for a new flow, skipping `tried`. Healthy (or not yet checked) targets
    /// first; when none is and the group fails open, every registered target is a candidate.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<Arc<TargetRt>> {
        self.pick_for(tried, Want::Any)
    }

    /// [`TargetGroupRt::pick`] among the targets that fit `want`.
    pub fn pick_for(&self, tried: &[SocketAddr], want: Want) -> Option<Arc<TargetRt>> {
        let targets = self.targets.load();
        // Writes go to a known primary when health checks have found one; targets whose
        // role is not known yet get writes only when no primary is known.
        let want = match want {
            Want::Writer
                if targets
                    .iter()
                    .any(|t| t.is_routable() && t.effective_role() == Role::Primary) =>
            {
                Want::Primary
            }
            w => w,
        };
        let usable = |t: &&Arc<TargetRt>| !tried.contains(&t.addr) && t.wanted(want);
        // One routable candidate (the common single-primary case): no list to build.
        let mut only = None;
        let mut count = 0;
        for t in targets.iter().filter(|t| t.is_routable()).filter(usable) {
            count += 1;
            only = Some(t);
        }
        if count == 1 {
            return only.cloned();
        }
        let settings = self.settings.load();
        let mut candidates: Vec<&Arc<TargetRt>> = targets
            .iter()
            .filter(|t| t.is_routable())
            .filter(usable)
            .collect();
        if candidates.is_empty() {
            let any_routable = targets.iter().any(|t| t.is_routable());
            if !settings.fail_open || any_routable {
                return None;
            }
            candidates = targets
                .iter()
                .filter(|t| t.health() != Health::Draining)
                .filter(usable)
                .collect();
        }
        let chosen = match candidates.len() {
            0 => return None,
            1 => candidates[0],
            n => match settings.algorithm {
                Algorithm::RoundRobin => {
                    let total: usize = candidates.iter().map(|t| t.weight as usize).sum();
                    let mut slot = self.next.fetch_add(1, Ordering::Relaxed) % total.max(1);
                    let mut pick = candidates[0];
                    for t in &candidates {
                        if slot < t.weight as usize {
                            pick = t;
                            break;
                        }
                        slot -= t.weight as usize;
                    }
                    pick
                }
                Algorithm::LeastConn => {
                    // Ties rotate so equal targets share load instead of the first taking all.
                    let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
                    let mut best = candidates[start];
                    for i in 1..n {
                        let t = candidates[(start + i) % n];
                        let load = |x: &TargetRt| {
                            x.active.load(Ordering::Relaxed) * 1000 / i64::from(x.weight)
                        };
                        if load(t) < load(best) {
                            best = t;
                        }
                    }
                    best
                }
                Algorithm::Random => {
                    let total: u32 = candidates.iter().map(|t| t.weight).sum();
                    let mut slot = fastrand::u32(0..total.max(1));
                    let mut pick = candidates[0];
                    for t in &candidates {
                        if slot < t.weight {
                            pick = t;
                            break;
                        }
                        slot -= t.weight;
                    }
                    pick
                }
            },
        };
        Some(chosen.clone())
    }

    /// Registered and draining targets for the admin API.
    pub fn statuses(&self) -> Vec<TargetStatus> {
        let mut out: Vec<TargetStatus> = self
            .targets
            .load()
            .iter()
            .map(|t| t.status(&self.name))
            .collect();
        let now = Instant::now();
        let mut draining = self.lock_draining();
        draining.retain(|(t, deadline)| *deadline > now && t.active.load(Ordering::Relaxed) > 0);
        out.extend(draining.iter().map(|(t, _)| t.status(&self.name)));
        out
    }

    pub fn healthy_count(&self) -> (usize, usize) {
        let targets = self.targets.load();
        let healthy = targets
            .iter()
            .filter(|t| matches!(t.health(), Health::Healthy | Health::Unused))
            .count();
        (healthy, targets.len() - healthy)
    }
}
