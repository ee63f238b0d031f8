//! Flow and audit records. Every admitted connection is registered in the [`FlowTable`] while it
//! lives; a record is written at its close and, for long-lived flows, every aggregation interval
//! (the VPC flow log habit), each covering only the bytes of its own window. Rejected
//! connections get a `REJECT` record and a `connection.rejected` audit event.
//!
//! Records are formatted here and handed to a [`LogSink`]; nothing on this path waits for disk.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use serde_json::{Map, Value};
use sumun_flows::{Action, FlowRecord, LogStatus};

use crate::logsink::LogSink;
use crate::relay::FlowCounters;

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One open flow.
#[derive(Debug)]
pub struct ActiveFlow {
    pub id: u64,
    pub listener: Arc<str>,
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub target: Mutex<Option<SocketAddr>>,
    pub start: u64,
    pub counters: FlowCounters,
    /// Totals already written by earlier interim records, and when that window began.
    reported: Mutex<Window>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    bytes: u64,
    packets: u64,
    start: u64,
}

/// Sinks and the registry of open flows.
#[derive(Debug, Default)]
pub struct Records {
    pub gateway_name: ArcSwapOption<String>,
    pub flow_log: ArcSwapOption<LogSink>,
    pub audit_log: ArcSwapOption<LogSink>,
    next_id: AtomicU64,
    active: Mutex<HashMap<u64, Arc<ActiveFlow>>>,
}

impl Records {
    fn account(&self) -> String {
        self.gateway_name
            .load()
            .as_deref()
            .cloned()
            .unwrap_or_else(|| "sumun".to_string())
    }

    /// Register an admitted connection.
    pub fn open(
        &self,
        listener: Arc<str>,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Arc<ActiveFlow> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let start = unix_now();
        let flow = Arc::new(ActiveFlow {
            id,
            listener,
            client,
            local,
            target: Mutex::new(None),
            start,
            counters: FlowCounters::default(),
            reported: Mutex::new(Window {
                start,
                ..Window::default()
            }),
        });
        self.lock().insert(id, flow.clone());
        flow
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ActiveFlow>>> {
        self.active
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The flow ended: write its last window and forget it.
    pub fn close(&self, flow: &ActiveFlow) {
        self.lock().remove(&flow.id);
        self.write_window(flow, unix_now());
    }

    /// Interim records for flows open longer than one window (called every aggregation
    /// interval).
    pub fn write_interim(&self) {
        let flows: Vec<Arc<ActiveFlow>> = self.lock().values().cloned().collect();
        let now = unix_now();
        for flow in flows {
            self.write_window(&flow, now);
        }
    }

    pub fn active_flows(&self) -> Vec<Arc<ActiveFlow>> {
        self.lock().values().cloned().collect()
    }

    fn write_window(&self, flow: &ActiveFlow, now: u64) {
        let c = &flow.counters;
        let bytes = c.bytes_in.load(Ordering::Relaxed) + c.bytes_out.load(Ordering::Relaxed);
        let packets = c.packets_in.load(Ordering::Relaxed) + c.packets_out.load(Ordering::Relaxed);
        let window = {
            let mut reported = flow
                .reported
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let previous = *reported;
            *reported = Window {
                bytes,
                packets,
                start: now,
            };
            previous
        };
        let Some(sink) = self.flow_log.load_full() else {
            return;
        };
        let record = FlowRecord {
            version: 2,
            account_id: self.account(),
            interface_id: flow.listener.to_string(),
            srcaddr: flow.client.ip(),
            dstaddr: flow.local.ip(),
            srcport: flow.client.port(),
            dstport: flow.local.port(),
            protocol: 6,
            packets: packets - window.packets,
            bytes: bytes - window.bytes,
            start: window.start,
            end: now,
            action: Action::Accept,
            log_status: LogStatus::Ok,
        };
        sink.send(record.to_string());
    }

    /// A connection refused before it was admitted.
    pub fn reject(&self, listener: &str, client: SocketAddr, local: SocketAddr, reason: &str) {
        let now = unix_now();
        if let Some(sink) = self.flow_log.load_full() {
            let record = FlowRecord {
                version: 2,
                account_id: self.account(),
                interface_id: listener.to_string(),
                srcaddr: client.ip(),
                dstaddr: local.ip(),
                srcport: client.port(),
                dstport: local.port(),
                protocol: 6,
                packets: 1,
                bytes: 0,
                start: now,
                end: now,
                action: Action::Reject,
                log_status: LogStatus::Ok,
            };
            sink.send(record.to_string());
        }
        let mut extra = Map::new();
        extra.insert("reason".into(), Value::from(reason));
        self.audit("connection.rejected", listener, client, extra);
    }

    /// Write one audit event. `extra` holds the event's own fields; secrets must never be put
    /// in it.
    pub fn audit(
        &self,
        event: &str,
        listener: &str,
        client: SocketAddr,
        extra: Map<String, Value>,
    ) {
        let Some(sink) = self.audit_log.load_full() else {
            return;
        };
        let mut line = Map::with_capacity(extra.len() + 4);
        line.insert("ts".into(), Value::from(rfc3339_now()));
        line.insert("event".into(), Value::from(event));
        line.insert("listener".into(), Value::from(listener));
        line.insert("client_addr".into(), Value::from(client.to_string()));
        line.extend(extra);
        sink.send(Value::Object(line).to_string());
    }

    /// Whether an audit log is configured (so callers can skip building events).
    pub fn audits(&self) -> bool {
        self.audit_log.load().is_some()
    }

    pub fn flush(&self) {
        if let Some(sink) = self.flow_log.load_full() {
            sink.flush();
        }
        if let Some(sink) = self.audit_log.load_full() {
            sink.flush();
        }
    }
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
