//! What the PostgreSQL front end shows operators: Prometheus metrics, `/api/pools` and
//! `/api/clients` rows, and the same rows for `SHOW POOLS` / `SHOW CLIENTS` in the `sumun`
//! admin database.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::PostgresFrontEnd;
use crate::metrics::{esc, family};

/// Pin reasons, in the order of `PgStats::pinned`.
pub const PIN_REASONS: [&str; 9] = [
    "set",
    "listen",
    "advisory_lock",
    "temp_object",
    "hold_cursor",
    "sql_prepare",
    "load",
    "large_prepare",
    "other",
];

#[derive(Debug, Serialize)]
pub struct PoolRow {
    pub listener: String,
    pub target: String,
    pub database: String,
    pub user: String,
    pub size: u32,
    pub open: u32,
    pub idle: usize,
    pub active: u32,
    pub waiting: u64,
    pub checkouts: u64,
    pub waits: u64,
    pub wait_seconds: f64,
    pub timeouts: u64,
    pub connects: u64,
    pub connect_errors: u64,
}

pub fn pool_rows(fe: &PostgresFrontEnd) -> Vec<PoolRow> {
    fe.pools
        .all()
        .iter()
        .map(|p| {
            let open = p.open();
            let idle = p.idle_count();
            PoolRow {
                listener: p.key.listener.to_string(),
                target: p.key.target.to_string(),
                database: p.key.database.clone(),
                user: p.key.user.clone(),
                size: p.size(),
                open,
                idle,
                active: open.saturating_sub(idle as u32),
                waiting: p.stats.waiting.load(Ordering::Relaxed),
                checkouts: p.stats.checkouts.load(Ordering::Relaxed),
                waits: p.stats.waits.load(Ordering::Relaxed),
                wait_seconds: p.stats.wait_micros.load(Ordering::Relaxed) as f64 / 1e6,
                timeouts: p.stats.timeouts.load(Ordering::Relaxed),
                connects: p.stats.connects.load(Ordering::Relaxed),
                connect_errors: p.stats.connect_errors.load(Ordering::Relaxed),
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct ClientRow {
    pub listener: String,
    pub client: String,
    pub user: String,
    pub database: String,
    pub pool_mode: &'static str,
    pub session_id: String,
    pub connected_at: u64,
    pub server: Option<String>,
    pub pinned: Option<&'static str>,
}

pub fn client_rows(fe: &PostgresFrontEnd) -> Vec<ClientRow> {
    let mut rows: Vec<ClientRow> = fe
        .cancels
        .clients()
        .iter()
        .map(|c| ClientRow {
            listener: c.profile.listener.to_string(),
            client: c.flow.client.to_string(),
            user: c.profile.startup.user.clone(),
            database: c.profile.startup.database.clone(),
            pool_mode: c.profile.mode.as_str(),
            session_id: c.session_id().to_string(),
            connected_at: c.flow.start,
            server: c.server().map(|(addr, ..)| addr.to_string()),
            pinned: c.pinned(),
        })
        .collect();
    rows.sort_by(|a, b| (a.connected_at, &a.session_id).cmp(&(b.connected_at, &b.session_id)));
    rows
}

pub fn render_metrics(fe: &PostgresFrontEnd, out: &mut String) {
    let rows = pool_rows(fe);
    let label = |r: &PoolRow| {
        format!(
            "listener=\"{}\",target=\"{}\",database=\"{}\",user=\"{}\"",
            esc(&r.listener),
            esc(&r.target),
            esc(&r.database),
            esc(&r.user)
        )
    };
    family(
        out,
        "sumun_pool_connections",
        "gauge",
        "Backend connections per pool, by state.",
    );
    for r in &rows {
        let l = label(r);
        let _ = writeln!(
            out,
            "sumun_pool_connections{{{l},state=\"active\"}} {}",
            r.active
        );
        let _ = writeln!(
            out,
            "sumun_pool_connections{{{l},state=\"idle\"}} {}",
            r.idle
        );
    }
    family(
        out,
        "sumun_pool_size",
        "gauge",
        "Most backend connections a pool may open.",
    );
    for r in &rows {
        let _ = writeln!(out, "sumun_pool_size{{{}}} {}", label(r), r.size);
    }
    family(
        out,
        "sumun_pool_waiting_clients",
        "gauge",
        "Clients waiting for a backend connection.",
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "sumun_pool_waiting_clients{{{}}} {}",
            label(r),
            r.waiting
        );
    }
    family(
        out,
        "sumun_pool_checkouts_total",
        "counter",
        "Backend connections handed to clients.",
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "sumun_pool_checkouts_total{{{}}} {}",
            label(r),
            r.checkouts
        );
    }
    family(
        out,
        "sumun_pool_checkout_wait_seconds_total",
        "counter",
        "Time clients spent waiting for a backend connection.",
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "sumun_pool_checkout_wait_seconds_total{{{}}} {}",
            label(r),
            r.wait_seconds
        );
    }
    family(
        out,
        "sumun_pool_checkout_timeouts_total",
        "counter",
        "Clients refused with 53300 after checkout_timeout.",
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "sumun_pool_checkout_timeouts_total{{{}}} {}",
            label(r),
            r.timeouts
        );
    }
    family(
        out,
        "sumun_pool_server_connects_total",
        "counter",
        "Backend connections opened (and logged in).",
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "sumun_pool_server_connects_total{{{}}} {}",
            label(r),
            r.connects
        );
    }
    let stats = &fe.stats;
    family(
        out,
        "sumun_pg_pinned_sessions_total",
        "counter",
        "Transaction-mode clients pinned to their server, by reason.",
    );
    for (i, reason) in PIN_REASONS.iter().enumerate() {
        let _ = writeln!(
            out,
            "sumun_pg_pinned_sessions_total{{reason=\"{reason}\"}} {}",
            stats.pinned[i].load(Ordering::Relaxed)
        );
    }
    family(
        out,
        "sumun_pg_queries_total",
        "counter",
        "Statements completed (counted when query audit is on).",
    );
    let _ = writeln!(
        out,
        "sumun_pg_queries_total {}",
        stats.queries.load(Ordering::Relaxed)
    );
    family(
        out,
        "sumun_pg_query_errors_total",
        "counter",
        "Statements that ended in an error (counted when query audit is on).",
    );
    let _ = writeln!(
        out,
        "sumun_pg_query_errors_total {}",
        stats.query_errors.load(Ordering::Relaxed)
    );
    family(
        out,
        "sumun_pg_query_seconds_total",
        "counter",
        "Time from statement sent to its completion, summed (see sumun_query_duration_seconds).",
    );
    let _ = writeln!(
        out,
        "sumun_pg_query_seconds_total {}",
        stats.query_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    family(
        out,
        "sumun_pg_cancels_forwarded_total",
        "counter",
        "Cancel requests forwarded to a backend.",
    );
    let _ = writeln!(
        out,
        "sumun_pg_cancels_forwarded_total {}",
        stats.cancels_forwarded.load(Ordering::Relaxed)
    );
    family(
        out,
        "sumun_pg_backend_logins_refused_total",
        "counter",
        "Logins to servers the gateway gave up because the server did not prove it knows the password, or asked for a method backend_auth does not allow.",
    );
    let _ = writeln!(
        out,
        "sumun_pg_backend_logins_refused_total {}",
        stats.backend_logins_refused.load(Ordering::Relaxed)
    );
}
