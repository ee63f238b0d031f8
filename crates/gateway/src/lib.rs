//! Sumun's data plane. A [`Gateway`] owns the live listeners, target groups, TLS contexts, log
//! writers and the admin listener, and moves them from one [`Config`] to the next with
//! [`Gateway::apply`]. Starting is applying the first config to an empty gateway: there is one
//! code path for startup and reload. An apply either takes effect whole or not at all: every
//! fallible step (loading certificates, binding sockets, opening log files) runs before anything
//! live is touched, so a bad reload leaves the running gateway exactly as it was.
//!
//! This crate never prints and never exits the process; the CLI does.

pub mod admin;
pub mod alarms;
pub mod backend_tls;
mod conn;
pub mod frontend;
pub(crate) mod health;
mod kdf;
pub mod listener;
pub mod logsink;
pub mod metrics;
pub mod mysql;
mod park;
pub mod postgres;
pub mod protection;
pub mod records;
pub mod redis;
mod refuse;
pub mod relay;
mod shared_state;
mod stop;
pub mod targets;
pub mod tls;
pub mod vault;
pub mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sumun_config::{Config, Protocol};
use sumun_policy::SecurityPolicy;
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};

use crate::listener::{ListenerRt, ListenerSnapshot};
use crate::logsink::{LogSink, Rotation};
use crate::metrics::Metrics;
use crate::records::Records;
use crate::targets::{TargetGroupRt, TargetStatus};
use crate::tls::{TlsContext, TlsError};

/// Where the gateway is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Not accepting; established flows finish until their drain deadline.
    Draining,
    /// Every flow is being closed now.
    Stopped,
}

/// State shared with every connection task and the admin API.
#[derive(Debug)]
pub struct Shared {
    pub records: Arc<Records>,
    pub metrics: Arc<Metrics>,
    pub phase: watch::Receiver<Phase>,
    pub config: ArcSwap<Config>,
    pub registry: ArcSwap<Registry>,
    /// Open when the config has a `[vault]`.
    pub vault: arc_swap::ArcSwapOption<vault::VaultRt>,
    /// The protocol front ends, by protocol (`frontend`).
    pub front_ends: frontend::FrontEnds,
    /// The data-plane threads, started by the first apply (`[gateway] workers`).
    pub workers: std::sync::OnceLock<workers::Workers>,
    /// Idle clients parked outside their tasks, per worker (`park`).
    pub lots: park::Lots,
    /// Fired with `Phase::Stopped`: what sessions poll on every event.
    pub stop: stop::StopSignal,
    /// `[[alarms]]`, each on its own task.
    pub alarms: alarms::Alarms,
}

impl Shared {
    /// Inline protection (`[protection]`).
    pub fn protection(&self) -> &Arc<protection::Protection> {
        &self.records.protect
    }

    pub fn shutdown_timeout(&self) -> Duration {
        self.config.load().gateway.shutdown_timeout
    }
}

/// The live objects, for the admin API and background tasks.
#[derive(Debug, Default)]
pub struct Registry {
    pub listeners: Vec<Arc<ListenerRt>>,
    pub groups: Vec<Arc<TargetGroupRt>>,
    pub tls: Vec<Arc<TlsContext>>,
}

/// Why a config could not be applied. The running gateway is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("tls config '{name}': {source}")]
    Tls { name: String, source: TlsError },
    #[error("listener '{name}' cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open {what} {path}: {source}")]
    Log {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the vault at {path}: {source}")]
    Vault {
        path: PathBuf,
        source: sumun_vault::StoreError,
    },
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("user '{user}': redis_acl: {message}")]
    RedisAcl { user: String, message: String },
    #[error("listener '{name}': protocol \"{protocol}\" has no front end in this build")]
    NoFrontEnd {
        name: String,
        protocol: &'static str,
    },
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error("[protection]: {0}")]
    Protection(String),
}

/// Every reason an apply failed.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ApplyErrors(pub Vec<ApplyError>);

#[derive(Default)]
struct State {
    listeners: HashMap<String, Arc<ListenerRt>>,
    groups: HashMap<String, Arc<TargetGroupRt>>,
    tls: HashMap<String, Arc<TlsContext>>,
    flow_log: Option<(sumun_config::FlowLogSettings, LogSink)>,
    audit_log: Option<(sumun_config::AuditSettings, LogSink)>,
    admin: Option<admin::AdminRt>,
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    phase: watch::Sender<Phase>,
    state: Mutex<State>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Connection tasks hold `Shared`, so the workers would outlive it: stop them here.
        self.shared.stop.fire();
        if let Some(w) = self.shared.workers.get() {
            w.stop();
        }
    }
}

impl Gateway {
    /// An empty gateway serving nothing. Must be called inside a tokio runtime: it starts the
    /// background tasks (certificate polling, interim flow records).
    pub fn new() -> Arc<Gateway> {
        let (phase, phase_rx) = watch::channel(Phase::Running);
        let gateway = Arc::new(Gateway {
            shared: Arc::new(Shared {
                records: Arc::new(Records::default()),
                metrics: Arc::new(Metrics::default()),
                phase: phase_rx,
                config: ArcSwap::from_pointee(Config::empty()),
                registry: ArcSwap::from_pointee(Registry::default()),
                vault: arc_swap::ArcSwapOption::empty(),
                front_ends: frontend::FrontEnds::new(),
                workers: std::sync::OnceLock::new(),
                lots: park::Lots::default(),
                stop: stop::StopSignal::default(),
                alarms: alarms::Alarms::default(),
            }),
            phase,
            state: Mutex::new(State::default()),
        });
        tokio::spawn(background(Arc::downgrade(&gateway.shared)));
        tokio::spawn(vault::watch(Arc::downgrade(&gateway.shared)));
        gateway
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn config(&self) -> Arc<Config> {
        self.shared.config.load_full()
    }

    /// Move the live gateway to `config`. On error nothing changed.
    pub async fn apply(&self, config: Config) -> Result<(), ApplyErrors> {
        if *self.phase.borrow() != Phase::Running {
            return Err(ApplyErrors(vec![ApplyError::ShuttingDown]));
        }
        let mut state = self.state.lock().await;
        let mut errors = Vec::new();

        // Phase A: everything that can fail, touching nothing live.
        let mut tls: HashMap<String, Arc<TlsContext>> = HashMap::new();
        for (name, settings) in &config.tls {
            match state.tls.get(name) {
                Some(existing) if existing.settings == *settings => {
                    tls.insert(name.clone(), existing.clone());
                }
                _ => match TlsContext::load(settings) {
                    Ok(ctx) => {
                        tls.insert(name.clone(), Arc::new(ctx));
                    }
                    Err(source) => errors.push(ApplyError::Tls {
                        name: name.clone(),
                        source,
                    }),
                },
            }
        }
        // A listener needs a front end for its protocol (raw `tcp`/`tls` relay is the core's):
        // relaying its bytes unauthenticated would break what its users were promised.
        for l in &config.listeners {
            let raw = matches!(l.protocol, Protocol::Tcp | Protocol::Tls);
            if !raw && self.shared.front_ends.get(l.protocol).is_none() {
                errors.push(ApplyError::NoFrontEnd {
                    name: l.name.clone(),
                    protocol: l.protocol.as_str(),
                });
            }
        }
        // Redis ACL rules are checked now, not at a client's login.
        for u in &config.users {
            if let Some(text) = &u.redis_acl {
                if let Err(e) = sumun_policy::redis_acl::AclRules::parse(text) {
                    errors.push(ApplyError::RedisAcl {
                        user: u.name.clone(),
                        message: e.to_string(),
                    });
                }
            }
        }
        let mut new_sockets: HashMap<String, TcpListener> = HashMap::new();
        for l in &config.listeners {
            let reuse = state
                .listeners
                .get(&l.name)
                .is_some_and(|rt| rt.configured_bind == l.bind || rt.local_addr == l.bind);
            if reuse {
                continue;
            }
            // A listener moving to an address another (old) listener holds would collide with
            // itself; the config validator already rejects duplicate binds within one file.
            let taken_by_old = state
                .listeners
                .values()
                .any(|rt| rt.configured_bind == l.bind && rt.configured_bind.port() != 0);
            if taken_by_old {
                errors.push(ApplyError::Bind {
                    name: l.name.clone(),
                    addr: l.bind,
                    source: std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "address is held by another listener until this reload completes; rename back or reload in two steps",
                    ),
                });
                continue;
            }
            match listener::bind(l.bind) {
                Ok(socket) => {
                    new_sockets.insert(l.name.clone(), socket);
                }
                Err(source) => errors.push(ApplyError::Bind {
                    name: l.name.clone(),
                    addr: l.bind,
                    source,
                }),
            }
        }
        let flow_log = match (&config.flow_logs, &state.flow_log) {
            (None, _) => None,
            (Some(s), Some((old, sink))) if old == s => Some((s.clone(), sink.clone())),
            (Some(s), _) => match LogSink::open(
                &s.path,
                Rotation {
                    max_size: s.max_size,
                    max_files: s.max_files,
                },
                counter(&self.shared.metrics, true),
            ) {
                Ok(sink) => Some((s.clone(), sink)),
                Err(source) => {
                    errors.push(ApplyError::Log {
                        what: "flow log",
                        path: s.path.clone(),
                        source,
                    });
                    None
                }
            },
        };
        let audit_log = match (&config.audit, &state.audit_log) {
            (None, _) => None,
            (Some(s), Some((old, sink))) if old == s => Some((s.clone(), sink.clone())),
            (Some(s), _) => match LogSink::open(
                &s.path,
                Rotation {
                    max_size: s.max_size,
                    max_files: s.max_files,
                },
                counter(&self.shared.metrics, false),
            ) {
                Ok(sink) => Some((s.clone(), sink)),
                Err(source) => {
                    errors.push(ApplyError::Log {
                        what: "audit log",
                        path: s.path.clone(),
                        source,
                    });
                    None
                }
            },
        };
        let admin_socket = match &config.admin {
            Some(a)
                if state
                    .admin
                    .as_ref()
                    .is_none_or(|rt| rt.configured != a.listen) =>
            {
                match listener::bind(a.listen) {
                    Ok(s) => Some(s),
                    Err(source) => {
                        errors.push(ApplyError::Bind {
                            name: "admin".into(),
                            addr: a.listen,
                            source,
                        });
                        None
                    }
                }
            }
            _ => None,
        };
        // Read on every apply, so a reload picks up a changed token file.
        let admin_auth = match config.admin.as_ref().map(admin::AdminAuth::load) {
            None => None,
            Some(Ok(auth)) => Some(auth),
            Some(Err(e)) => {
                errors.push(e.into());
                None
            }
        };
        let current_vault = self.shared.vault.load_full();
        let vault = match (&config.vault, current_vault) {
            (None, _) => None,
            (Some(v), Some(cur)) if cur.same_place(v) => Some(cur),
            (Some(v), _) => match vault::VaultRt::open(v) {
                Ok(rt) => Some(Arc::new(rt)),
                Err(source) => {
                    errors.push(ApplyError::Vault {
                        path: v.dir.clone(),
                        source,
                    });
                    None
                }
            },
        };
        let protection = match self.shared.protection().prepare(&config) {
            Ok(p) => Some(p),
            Err(message) => {
                errors.push(ApplyError::Protection(message));
                None
            }
        };
        if !errors.is_empty() {
            self.shared
                .metrics
                .reloads_failed
                .fetch_add(1, Ordering::Relaxed);
            return Err(ApplyErrors(errors));
        }

        // Phase B: commit. Nothing below fails.
        if self.shared.workers.get().is_none() {
            // Read once: connections live on their worker, so the count cannot change later.
            match workers::Workers::start(config.gateway.workers) {
                Ok(w) => {
                    tracing::info!(workers = w.len(), "data-plane workers started");
                    let _ = self.shared.workers.set(w);
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot start data-plane workers; serving connections on the control runtime");
                }
            }
        }
        self.shared.vault.store(vault);
        self.shared
            .records
            .gateway_name
            .store(Some(Arc::new(config.gateway.name.clone())));
        self.shared
            .records
            .flow_log
            .store(flow_log.as_ref().map(|(_, s)| Arc::new(s.clone())));
        self.shared
            .records
            .audit_log
            .store(audit_log.as_ref().map(|(_, s)| Arc::new(s.clone())));
        state.flow_log = flow_log;
        state.audit_log = audit_log;

        let mut groups: HashMap<String, Arc<TargetGroupRt>> = HashMap::new();
        for g in &config.target_groups {
            let rt = match state.groups.get(&g.name) {
                Some(existing) => {
                    for added in existing.update(g) {
                        health::spawn_checker(existing, &added, &self.shared);
                    }
                    existing.clone()
                }
                None => {
                    let rt = TargetGroupRt::new(g);
                    for t in rt.targets().iter() {
                        health::spawn_checker(&rt, t, &self.shared);
                    }
                    rt
                }
            };
            groups.insert(g.name.clone(), rt);
        }
        for (name, old) in &state.groups {
            if !groups.contains_key(name) {
                old.retired.store(true, Ordering::Relaxed);
                old.deregister_all(old.settings().deregistration_delay);
            }
        }

        let mut listeners: HashMap<String, Arc<ListenerRt>> = HashMap::new();
        for l in &config.listeners {
            let Some(group) = groups.get(&l.target_group).cloned() else {
                // Validation guarantees the reference; an unvalidated config fails closed.
                tracing::error!(listener = %l.name, target_group = %l.target_group, "listener names an unknown target group; not serving it");
                continue;
            };
            let tls_ctx = match (l.protocol, l.tls) {
                (Protocol::Tcp, _) | (_, sumun_config::TlsMode::Off) => None,
                _ => l.tls_config.as_ref().and_then(|n| tls.get(n).cloned()),
            };
            let snapshot = ListenerSnapshot {
                settings: l.clone(),
                policy: SecurityPolicy::for_listener(&config, l),
                trusted_proxies: l.trusted_proxies.clone(),
                tls: tls_ctx,
                group,
            };
            let rt = match new_sockets.remove(&l.name) {
                None => match state.listeners.get(&l.name) {
                    Some(existing) => {
                        existing.update(snapshot);
                        existing.clone()
                    }
                    None => continue,
                },
                Some(socket) => {
                    if let Some(old) = state.listeners.get(&l.name) {
                        old.close();
                    }
                    let metrics = self.shared.metrics.listener(&l.name);
                    match listener::start(socket, l.bind, snapshot, metrics, self.shared.clone()) {
                        Ok(rt) => rt,
                        Err(err) => {
                            tracing::error!(listener = %l.name, error = %err, "cannot start listener");
                            continue;
                        }
                    }
                }
            };
            listeners.insert(l.name.clone(), rt);
        }
        for (name, old) in &state.listeners {
            if !listeners.contains_key(name) {
                old.close();
            }
        }

        match (&config.admin, admin_socket, admin_auth) {
            (Some(a), Some(socket), Some(auth)) => {
                if let Some(old) = state.admin.take() {
                    old.stop();
                }
                state.admin = admin::start(socket, a.listen, auth, self.shared.clone()).ok();
            }
            (Some(_), None, Some(auth)) => {
                if let Some(rt) = &state.admin {
                    rt.set_auth(auth);
                }
            }
            // No admin section, or (never: phase A failed then) no guard for it: not served.
            _ => {
                if let Some(old) = state.admin.take() {
                    old.stop();
                }
            }
        }
        for ctx in tls.values() {
            self.shared
                .metrics
                .set_cert_expiry(&ctx.settings.name, ctx.expiry_days());
        }

        if let Some(p) = protection {
            let bound = listeners
                .values()
                .map(|l| (l.name.clone(), l.local_addr))
                .collect();
            self.shared.protection().commit(p, bound);
        }
        self.shared
            .alarms
            .apply(&config.alarms, Arc::downgrade(&self.shared));
        self.shared.registry.store(Arc::new(Registry {
            listeners: listeners.values().cloned().collect(),
            groups: groups.values().cloned().collect(),
            tls: tls.values().cloned().collect(),
        }));
        state.listeners = listeners;
        state.groups = groups;
        state.tls = tls;
        self.shared.config.store(Arc::new(config));
        backend_tls::refresh(&self.shared.config.load());
        self.shared
            .metrics
            .reloads_ok
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The bound address of listener `name` (useful when the config asked for port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.shared
            .registry
            .load()
            .listeners
            .iter()
            .find(|l| &*l.name == name)
            .map(|l| l.local_addr)
    }

    /// The bound address of the admin listener.
    pub async fn admin_addr(&self) -> Option<SocketAddr> {
        self.state.lock().await.admin.as_ref().map(|a| a.local_addr)
    }

    pub fn targets(&self) -> Vec<TargetStatus> {
        admin::target_statuses(&self.shared)
    }

    pub fn metrics_text(&self) -> String {
        admin::render_metrics(&self.shared)
    }

    /// Graceful stop: refuse new connections, deregister every target, and wait until open
    /// flows finish or their deregistration delay (capped by `gateway.shutdown_timeout`) ends;
    /// then close what remains. [`Gateway::stop_now`] from another task cuts the wait short.
    pub async fn shutdown(&self) {
        if *self.phase.borrow() == Phase::Running {
            self.phase.send_replace(Phase::Draining);
        }
        let cap = self.shared.shutdown_timeout();
        let longest = {
            let state = self.state.lock().await;
            for l in state.listeners.values() {
                l.close();
            }
            let mut longest = Duration::ZERO;
            for g in state.groups.values() {
                let delay = g.settings().deregistration_delay.min(cap);
                longest = longest.max(delay);
                g.deregister_all(delay);
            }
            longest
        };
        tracing::info!(open_flows = self.shared.records.active_flows().len(), max_wait = ?longest, "draining");
        let deadline = tokio::time::Instant::now() + longest;
        let mut phase = self.phase.subscribe();
        loop {
            if self.shared.records.active_flows().is_empty() || *phase.borrow() == Phase::Stopped {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = phase.changed() => {}
            }
        }
        self.stop_now();
        // Give relays a moment to observe the stop and write their records.
        for _ in 0..40 {
            if self.shared.records.active_flows().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let mut state = self.state.lock().await;
        if let Some(admin) = state.admin.take() {
            admin.stop();
        }
        self.shared.records.flush();
    }

    /// Close every flow now.
    pub fn stop_now(&self) {
        self.phase.send_replace(Phase::Stopped);
        self.shared.stop.fire();
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }
}

/// The counter a log sink records dropped lines in.
fn counter(metrics: &Metrics, flow: bool) -> Arc<std::sync::atomic::AtomicU64> {
    if flow {
        metrics.flow_log_dropped.clone()
    } else {
        metrics.audit_dropped.clone()
    }
}

/// Certificate polling and interim flow records, for as long as the gateway lives.
async fn background(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_interim = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let registry = shared.registry.load_full();
        for ctx in &registry.tls {
            match ctx.refresh() {
                Ok(true) => {
                    tracing::info!(tls_config = %ctx.settings.name, "certificate reloaded from disk");
                    shared
                        .metrics
                        .set_cert_expiry(&ctx.settings.name, ctx.expiry_days());
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::error!(tls_config = %ctx.settings.name, error = %err, "cannot reload certificate; keeping the previous one");
                }
            }
        }
        let interval = shared
            .config
            .load()
            .flow_logs
            .as_ref()
            .map(|f| f.aggregation_interval)
            .unwrap_or(Duration::from_secs(60));
        if last_interim.elapsed() >= interval {
            last_interim = tokio::time::Instant::now();
            shared.records.write_interim();
        }
        // Pools: idle and expired server connections closed, sizes from the last reload.
        for fe in shared.front_ends.iter() {
            fe.housekeeping(&registry);
        }
        backend_tls::refresh(&shared.config.load());
        shared.protection().tick();
    }
}
