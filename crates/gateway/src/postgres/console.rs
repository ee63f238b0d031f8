//! The admin console: a virtual database named `sumun` on every postgres listener, where users
//! with `admin = true` run `SHOW POOLS`, `SHOW CLIENTS`, `SHOW SERVERS`, `SHOW STATS` and
//! `SHOW HELP` (PgBouncer's habit) with any PostgreSQL client. Nothing here reaches a backend;
//! the same rows are JSON at `/api/pools`, `/api/clients` and `/api/servers`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value};
use sumun_wire::postgres::{self as pg, Writer};

use super::auth::Identity;
use super::report::{client_rows, pool_rows, PIN_REASONS};
use super::stream::ClientStream;
use super::PostgresFrontEnd;
use super::{fatal, ClientStartup};
use crate::conn::Admitted;
use crate::listener::ListenerRt;
use crate::relay::read_append;
use crate::Shared;

pub const DATABASE: &str = "sumun";

/// The longest console message accepted.
const MAX_MESSAGE: usize = 1 << 20;

const HELP: &[(&str, &str)] = &[
    (
        "SHOW POOLS",
        "backend connection pools: size, open, active, idle, waiting clients",
    ),
    (
        "SHOW CLIENTS",
        "logged-in clients: user, database, pool mode, server, pinning",
    ),
    (
        "SHOW SERVERS",
        "targets: role, health and reason, active flows, replica lag",
    ),
    (
        "SHOW STATS",
        "counters: checkouts, waits, timeouts, queries, pinning, cancels",
    ),
    ("SHOW HELP", "this list"),
];

/// Serve an admin console session; its flow is closed with its record and `session.end`.
pub(crate) async fn run(
    client: ClientStream,
    startup: &ClientStartup,
    identity: &Identity,
    admitted: &Admitted,
    listener: &Arc<ListenerRt>,
    shared: &Arc<Shared>,
    fe: &PostgresFrontEnd,
) {
    let end = serve(client, startup, identity, admitted, listener, shared, fe).await;
    super::end_flow(
        shared,
        listener,
        &admitted.flow,
        &super::Unserved::of(end, &startup.user, DATABASE),
    );
}

/// The console's conversation; how it ended.
async fn serve(
    mut client: ClientStream,
    startup: &ClientStartup,
    identity: &Identity,
    admitted: &Admitted,
    listener: &Arc<ListenerRt>,
    shared: &Arc<Shared>,
    fe: &PostgresFrontEnd,
) -> &'static str {
    if !identity.user.admin {
        fatal(
            &mut client,
            "42501",
            "the sumun admin database is for users with admin = true",
        )
        .await;
        return "refused";
    }
    let counters = &admitted.flow.counters;
    let count = |n: usize, inbound: bool| {
        let c = if inbound {
            &counters.bytes_in
        } else {
            &counters.bytes_out
        };
        c.fetch_add(n as u64, Ordering::Relaxed);
        let p = if inbound {
            &counters.packets_in
        } else {
            &counters.packets_out
        };
        p.fetch_add(1, Ordering::Relaxed);
    };
    let mut w = Writer::new();
    let application_name = startup
        .params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("application_name"))
        .map_or("", |(_, v)| v.as_str());
    for (k, v) in [
        ("server_version", "15.0 (sumun admin console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", application_name),
    ] {
        w.parameter_status(k, v);
    }
    w.backend_key_data(0, 0);
    w.ready_for_query(b'I');
    if client.send(&w.buf).await.is_err() {
        return "client_error";
    }
    count(w.buf.len(), false);
    let mut buf = Vec::new();
    let mut failed_extended = false;
    loop {
        let (tag, body) = loop {
            match pg::message(&buf, MAX_MESSAGE) {
                Ok(Some((m, used))) => {
                    let out = (m.tag, m.body.to_vec());
                    buf.drain(..used);
                    break out;
                }
                Ok(None) => match read_append(&mut client, &mut buf, 64 * 1024).await {
                    Ok(0) => return "closed",
                    Err(_) => return "client_error",
                    Ok(n) => count(n, true),
                },
                Err(e) => {
                    fatal(&mut client, "08P01", &format!("invalid message: {e}")).await;
                    return "refused";
                }
            }
        };
        let mut w = Writer::new();
        match tag {
            b'X' => return "closed",
            b'Q' => {
                let text = pg::cstr(&body).map_or(&body[..], |(t, _)| t);
                let command = String::from_utf8_lossy(text);
                answer(&command, shared, fe, &mut w);
                shared
                    .records
                    .audit("admin.command", &listener.name, admitted.client, || {
                        let mut extra = Map::new();
                        extra.insert("user".into(), Value::from(startup.user.as_str()));
                        extra.insert("database".into(), Value::from(DATABASE));
                        extra.insert("command".into(), Value::from(normalize(&command)));
                        extra
                    });
                w.ready_for_query(b'I');
            }
            b'S' => {
                if !failed_extended {
                    w.error(
                        "ERROR",
                        "0A000",
                        "the admin console speaks the simple query protocol only",
                    );
                }
                failed_extended = false;
                w.ready_for_query(b'I');
            }
            b'H' => {}
            _ => {
                if !failed_extended {
                    w.error(
                        "ERROR",
                        "0A000",
                        "the admin console speaks the simple query protocol only",
                    );
                    failed_extended = true;
                }
            }
        }
        if !w.buf.is_empty() {
            if client.send(&w.buf).await.is_err() {
                return "client_error";
            }
            count(w.buf.len(), false);
        }
    }
}

fn normalize(command: &str) -> String {
    let trimmed = command.trim().trim_end_matches(';').trim();
    trimmed
        .split_ascii_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase()
}

fn answer(command: &str, shared: &Shared, fe: &PostgresFrontEnd, w: &mut Writer) {
    match normalize(command).as_str() {
        "" => w.empty_query(),
        "SHOW POOLS" => {
            let rows = pool_rows(fe);
            w.row_description(&[
                "listener",
                "target",
                "database",
                "user",
                "size",
                "open",
                "active",
                "idle",
                "waiting",
                "checkouts",
                "timeouts",
            ]);
            for r in &rows {
                let cells = [
                    r.listener.clone(),
                    r.target.clone(),
                    r.database.clone(),
                    r.user.clone(),
                    r.size.to_string(),
                    r.open.to_string(),
                    r.active.to_string(),
                    r.idle.to_string(),
                    r.waiting.to_string(),
                    r.checkouts.to_string(),
                    r.timeouts.to_string(),
                ];
                data_row(w, &cells);
            }
            w.command_complete("SHOW");
        }
        "SHOW CLIENTS" => {
            let rows = client_rows(fe);
            w.row_description(&[
                "listener",
                "client",
                "user",
                "database",
                "pool_mode",
                "server",
                "pinned",
                "session_id",
                "connected_at",
            ]);
            for r in &rows {
                let cells = [
                    r.listener.clone(),
                    r.client.clone(),
                    r.user.clone(),
                    r.database.clone(),
                    r.pool_mode.to_string(),
                    r.server.clone().unwrap_or_default(),
                    r.pinned.unwrap_or("").to_string(),
                    r.session_id.clone(),
                    r.connected_at.to_string(),
                ];
                data_row(w, &cells);
            }
            w.command_complete("SHOW");
        }
        "SHOW SERVERS" => {
            let rows = crate::admin::server_rows(shared);
            w.row_description(&[
                "target_group",
                "address",
                "role",
                "health",
                "reason",
                "active",
                "lag_ms",
            ]);
            for r in &rows {
                let health = serde_json::to_value(r.health)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let cells = [
                    r.target_group.clone(),
                    r.address.clone(),
                    r.role.to_string(),
                    health,
                    r.reason.clone(),
                    r.active_flows.to_string(),
                    r.replica_lag_ms.to_string(),
                ];
                data_row(w, &cells);
            }
            w.command_complete("SHOW");
        }
        "SHOW STATS" => {
            w.row_description(&["scope", "stat", "value"]);
            for (scope, stat, value) in stats_rows(fe) {
                data_row(w, &[scope, stat, value]);
            }
            w.command_complete("SHOW");
        }
        "SHOW HELP" => {
            w.row_description(&["command", "shows"]);
            for (c, what) in HELP {
                data_row(w, &[c.to_string(), what.to_string()]);
            }
            w.command_complete("SHOW");
        }
        other => {
            let known: Vec<&str> = HELP.iter().map(|(c, _)| *c).collect();
            error_with_hint(
                w,
                "42601",
                &format!("unknown admin command \"{}\"", other.to_ascii_lowercase()),
                &format!("the admin console knows {}", known.join(", ")),
            );
        }
    }
}

/// `SHOW STATS` as (scope, stat, value): per pool (`listener/target/database/user`) the
/// checkout counters, then gateway-wide totals under the scope `total`.
fn stats_rows(fe: &PostgresFrontEnd) -> Vec<(String, String, String)> {
    let pools = pool_rows(fe);
    let mut rows = Vec::with_capacity(pools.len() * 5 + 15);
    for p in &pools {
        let scope = format!("{}/{}/{}/{}", p.listener, p.target, p.database, p.user);
        rows.push((scope.clone(), "checkouts".into(), p.checkouts.to_string()));
        rows.push((scope.clone(), "checkout_waits".into(), p.waits.to_string()));
        rows.push((
            scope.clone(),
            "checkout_wait_seconds".into(),
            format!("{:.3}", p.wait_seconds),
        ));
        rows.push((
            scope.clone(),
            "checkout_timeouts".into(),
            p.timeouts.to_string(),
        ));
        rows.push((scope, "server_connects".into(), p.connects.to_string()));
    }
    let stats = &fe.stats;
    let total = |stat: &str, value: String| ("total".to_string(), stat.to_string(), value);
    rows.push(total(
        "checkouts",
        pools.iter().map(|p| p.checkouts).sum::<u64>().to_string(),
    ));
    rows.push(total(
        "checkout_waits",
        pools.iter().map(|p| p.waits).sum::<u64>().to_string(),
    ));
    rows.push(total(
        "checkout_wait_seconds",
        format!("{:.3}", pools.iter().map(|p| p.wait_seconds).sum::<f64>()),
    ));
    rows.push(total(
        "checkout_timeouts",
        pools.iter().map(|p| p.timeouts).sum::<u64>().to_string(),
    ));
    rows.push(total(
        "server_connects",
        pools.iter().map(|p| p.connects).sum::<u64>().to_string(),
    ));
    rows.push(total(
        "queries",
        stats.queries.load(Ordering::Relaxed).to_string(),
    ));
    rows.push(total(
        "query_errors",
        stats.query_errors.load(Ordering::Relaxed).to_string(),
    ));
    rows.push(total(
        "query_seconds",
        format!(
            "{:.3}",
            stats.query_micros.load(Ordering::Relaxed) as f64 / 1e6
        ),
    ));
    rows.push(total(
        "cancels_forwarded",
        stats.cancels_forwarded.load(Ordering::Relaxed).to_string(),
    ));
    for (i, reason) in PIN_REASONS.iter().enumerate() {
        rows.push((
            "total".to_string(),
            format!("pinned_{reason}"),
            stats.pinned[i].load(Ordering::Relaxed).to_string(),
        ));
    }
    rows
}

/// ErrorResponse with a hint (`H`), which psql prints as `HINT:`.
fn error_with_hint(w: &mut Writer, code: &str, message: &str, hint: &str) {
    let mut body = Vec::with_capacity(message.len() + hint.len() + 32);
    for (kind, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', code),
        (b'M', message),
        (b'H', hint),
    ] {
        body.push(kind);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    w.raw(b'E', &body);
}

fn data_row(w: &mut Writer, cells: &[String]) {
    let values: Vec<Option<&str>> = cells.iter().map(|c| Some(c.as_str())).collect();
    w.data_row(&values);
}
