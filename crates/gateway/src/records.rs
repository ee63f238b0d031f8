//! Flow and audit records. Every admitted connection is registered as an [`ActiveFlow`] while it
//! lives; a record is written at its close and, for long-lived flows, every aggregation interval
//! (the VPC flow log habit), each covering only the bytes of its own window. Rejected
//! connections get a `REJECT` record and a `connection.rejected` audit event.
//!
//! A flow is a guard: one dropped without being closed (its connection panicked, or its task
//! was dropped) closes itself, so no flow, interim record or `sumun_active_flows` count
//! outlives its connection.
//!
//! Records are formatted here and handed to a [`LogSink`]; nothing on this path waits for disk.
//!
//! `query` events, one per statement, have their own writer ([`QueryEvent`]): the JSON is
//! written by hand into a buffer the log thread hands back, literals are masked straight into a
//! per-thread scratch buffer and the RFC 3339 timestamp's date and time are formatted once per
//! second per thread, so an event costs no allocation and no `serde_json` tree. Other events
//! are rare (per connection) and go through [`Records::audit`]. Both write the same bytes the
//! `serde_json` object would (keys in sorted order, the same escapes).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use serde_json::{Map, Value};
use sumun_flows::{Action, FlowRecord, LogStatus};
use sumun_wire::sql;

use crate::listener::ListenerRt;
use crate::logsink::LogSink;
use crate::metrics::ListenerMetrics;
use crate::relay::FlowCounters;

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One open flow, counted in its listener's `sumun_active_flows` until closed. Closed by
/// [`Records::close`] when its connection ends, or when dropped otherwise.
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
    /// Where the flow is registered and its record goes (weak: the registry holds flows
    /// weakly too, and a gateway being dropped takes its records along).
    records: Weak<Records>,
    /// The gauge (`sumun_active_flows`) the flow counts in.
    listener_metrics: Arc<ListenerMetrics>,
    /// Set by the first close, so a flow is closed (uncounted, recorded) exactly once.
    closed: AtomicBool,
}

impl Drop for ActiveFlow {
    fn drop(&mut self) {
        // Normally closed already. Otherwise its connection ended without closing it (a
        // panic unwound through it): close it now, with its last record.
        match self.records.upgrade() {
            Some(records) => records.close(self),
            None => {
                if !self.closed.swap(true, Ordering::Relaxed) {
                    self.listener_metrics
                        .active_flows
                        .fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }
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
    /// Open flows. Weak: a flow's connection owns it, and it leaves this map when closed or
    /// dropped.
    active: Mutex<HashMap<u64, Weak<ActiveFlow>>>,
    /// Inline protection: fed the refusals, logins and statements recorded here.
    pub protect: Arc<crate::protection::Protection>,
    /// Test hook ([`Records::panic_on_query`]).
    panic_marker: Mutex<Option<String>>,
    panic_armed: AtomicBool,
}

impl Records {
    fn account(&self) -> String {
        self.gateway_name
            .load()
            .as_deref()
            .cloned()
            .unwrap_or_else(|| "sumun".to_string())
    }

    /// Register an admitted connection of `listener`, counted in its `sumun_active_flows`.
    pub fn open(
        self: &Arc<Self>,
        listener: &ListenerRt,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Arc<ActiveFlow> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let start = unix_now();
        let flow = Arc::new(ActiveFlow {
            id,
            listener: listener.name.clone(),
            client,
            local,
            target: Mutex::new(None),
            start,
            counters: FlowCounters::default(),
            reported: Mutex::new(Window {
                start,
                ..Window::default()
            }),
            records: Arc::downgrade(self),
            listener_metrics: listener.metrics.clone(),
            closed: AtomicBool::new(false),
        });
        listener
            .metrics
            .active_flows
            .fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Arc::downgrade(&flow));
        flow
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<ActiveFlow>>> {
        self.active
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The flow ended: write its last window and forget it. Only the first close counts.
    pub fn close(&self, flow: &ActiveFlow) {
        if self.forget(flow) {
            self.write_window(flow, unix_now());
        }
    }

    /// The flow ended and its closing record was written otherwise (a `REJECT` record): forget
    /// it without another one.
    pub fn discard(&self, flow: &ActiveFlow) {
        self.forget(flow);
    }

    /// Uncount and unregister the flow; false when that was done already.
    fn forget(&self, flow: &ActiveFlow) -> bool {
        if flow.closed.swap(true, Ordering::Relaxed) {
            return false;
        }
        flow.listener_metrics
            .active_flows
            .fetch_sub(1, Ordering::Relaxed);
        // The entry is weak: removing it never drops a flow, so nothing re-enters this lock.
        self.lock().remove(&flow.id);
        true
    }

    /// True once the flow was closed (or discarded).
    pub fn is_closed(flow: &ActiveFlow) -> bool {
        flow.closed.load(Ordering::Relaxed)
    }

    /// Interim records for flows open longer than one window (called every aggregation
    /// interval).
    pub fn write_interim(&self) {
        let flows = self.active_flows();
        let now = unix_now();
        for flow in &flows {
            self.write_window(flow, now);
        }
    }

    /// The open flows. A flow whose connection let go of it meanwhile may be closed by the
    /// caller dropping what this returns (never under this registry's lock).
    pub fn active_flows(&self) -> Vec<Arc<ActiveFlow>> {
        let map = self.lock();
        map.values().filter_map(Weak::upgrade).collect()
    }

    /// Test hook, not reachable from configuration or the network: once called, a connection
    /// whose audited statement contains `marker` panics right after the statement completes
    /// (`audit_queries` on), so tests can prove that a panicking connection releases its flow
    /// and counters.
    #[doc(hidden)]
    pub fn panic_on_query(&self, marker: &str) {
        *self
            .panic_marker
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(marker.to_string());
        self.panic_armed.store(true, Ordering::Relaxed);
    }

    fn test_panic(&self, text: &str) {
        let marker = self
            .panic_marker
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        if marker.is_some_and(|m| text.contains(&m)) {
            panic!("test hook: a connection panics (Records::panic_on_query)");
        }
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
        self.protect.refused(self, listener, client, local, reason);
        self.audit("connection.rejected", listener, client, || {
            let mut extra = Map::new();
            extra.insert("reason".into(), Value::from(reason));
            extra
        });
    }

    /// Write one audit event. `extra` holds the event's own fields; secrets must never be put
    /// in it.
    pub fn audit(
        &self,
        event: &str,
        listener: &str,
        client: SocketAddr,
        extra: impl FnOnce() -> Map<String, Value>,
    ) {
        // Logins feed protection's detections whether or not there is an audit log.
        let login = matches!(event, "auth.failure" | "auth.success" | "session.start");
        // The event's fields are only gathered when someone reads them.
        let sink = self.audit_log.load_full();
        if sink.is_none() && !login {
            return;
        }
        let extra = extra();
        if login {
            let field = |k: &str| extra.get(k).and_then(Value::as_str).unwrap_or("");
            self.protect.login(
                self,
                event,
                listener,
                client,
                field("user"),
                field("reason"),
            );
        }
        let Some(sink) = sink else {
            return;
        };
        let mut line = Map::with_capacity(extra.len() + 4);
        let mut ts = String::with_capacity(32);
        push_rfc3339(&mut ts, SystemTime::now());
        line.insert("ts".into(), Value::from(ts));
        line.insert("event".into(), Value::from(event));
        line.insert("listener".into(), Value::from(listener));
        line.insert("client_addr".into(), Value::from(client.to_string()));
        line.extend(extra);
        sink.send(Value::Object(line).to_string());
    }

    /// Write one `query` audit event (see [`QueryEvent`]).
    pub fn audit_query(&self, event: &QueryEvent<'_>) {
        if self.panic_armed.load(Ordering::Relaxed) {
            self.test_panic(event.text);
        }
        // Statement detections: privilege changes and SQL injection (`protection::statement`).
        self.protect.statement(
            self,
            event.listener,
            event.client,
            event.user,
            event.text,
            event.dialect,
        );
        let guard = self.audit_log.load();
        let Some(sink) = guard.as_deref() else {
            return;
        };
        let mut line = sink.buffer();
        event.write(&mut line, SystemTime::now());
        sink.send(line);
    }

    /// Whether an audit log is configured (so callers can skip building events).
    pub fn audits(&self) -> bool {
        self.audit_log.load().is_some()
    }

    /// Whether front ends should hand statements to [`Records::audit_query`]: an audit log
    /// is written, or a statement detection (SQL injection, privilege changes) is on.
    pub fn wants_statements(&self) -> bool {
        self.audits() || self.protect.watches_statements()
    }

    /// Write `found` (detections' findings) as audit `finding` events, and warn in the log.
    pub(crate) fn write_findings(&self, found: Vec<sumun_protect::Finding>, client: SocketAddr) {
        for f in found {
            tracing::warn!(
                detection = f.detection,
                severity = f.severity.as_str(),
                technique = f.technique,
                src = %f.src,
                action = f.action,
                detail = %f.detail,
                "finding"
            );
            let listener = f.listener.clone().unwrap_or_default();
            self.audit("finding", &listener, client, || f.to_json());
        }
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

/// One `query` audit event, borrowed from the session that ran the statement. Written as the
/// JSON object `{client_addr, database, duration_us, error?, event: "query", listener, query,
/// rows, session_id, target?, ts, user}` (keys sorted, as `serde_json` writes them).
#[derive(Debug, Clone, Copy)]
pub struct QueryEvent<'a> {
    pub listener: &'a str,
    pub client: SocketAddr,
    pub user: &'a str,
    pub database: &'a str,
    pub session_id: &'a str,
    /// The statement as received (already cut to the kept length and made valid UTF-8).
    pub text: &'a str,
    /// Write `text` with its literals masked (`audit_queries = "masked"`), so no string or
    /// number the client sent (a password in `ALTER ROLE`, a token) reaches the log.
    pub mask: bool,
    /// Which SQL the text is and how its server reads string literals, for masking them.
    pub dialect: sql::Syntax,
    pub duration_us: u64,
    pub rows: u64,
    /// The SQLSTATE of the error that ended the statement.
    pub error: Option<&'a str>,
    /// The target the statement ran on.
    pub target: Option<&'a str>,
}

thread_local! {
    /// Masked statement text, reused by every event this thread writes.
    static MASKED: RefCell<String> = const { RefCell::new(String::new()) };
    /// The last second formatted and its `YYYY-MM-DDTHH:MM:SS`.
    static STAMP: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// A statement longer than this is masked into a buffer of its own rather than the per-thread
/// one, so a thread does not keep a large buffer for a rare long statement.
const MASKED_KEEP: usize = 4 * 1024;

impl QueryEvent<'_> {
    /// Append the event's JSON line (without a newline) to `out`, stamped `now`.
    pub fn write(&self, out: &mut String, now: SystemTime) {
        out.reserve(
            200 + self.listener.len()
                + self.user.len()
                + self.database.len()
                + self.session_id.len()
                + self.text.len(),
        );
        // Writing to a `String` cannot fail.
        let _ = write!(out, "{{\"client_addr\":\"{}\"", self.client);
        out.push_str(",\"database\":");
        push_json_str(out, self.database);
        let _ = write!(out, ",\"duration_us\":{}", self.duration_us);
        if let Some(code) = self.error {
            out.push_str(",\"error\":");
            push_json_str(out, code);
        }
        out.push_str(",\"event\":\"query\",\"listener\":");
        push_json_str(out, self.listener);
        out.push_str(",\"query\":");
        if self.mask {
            push_masked(out, self.text, self.dialect);
        } else {
            push_json_str(out, self.text);
        }
        let _ = write!(out, ",\"rows\":{}", self.rows);
        out.push_str(",\"session_id\":");
        push_json_str(out, self.session_id);
        if let Some(target) = self.target {
            out.push_str(",\"target\":");
            push_json_str(out, target);
        }
        out.push_str(",\"ts\":\"");
        push_rfc3339(out, now);
        out.push_str("\",\"user\":");
        push_json_str(out, self.user);
        out.push('}');
    }
}

/// `text` with its literals masked, as a JSON string.
fn push_masked(out: &mut String, text: &str, dialect: sql::Syntax) {
    if text.len() <= MASKED_KEEP {
        let done = MASKED.with(|masked| {
            let Ok(mut masked) = masked.try_borrow_mut() else {
                return false;
            };
            masked.clear();
            sql::mask_literals_into(text, dialect, &mut masked);
            push_json_str(out, &masked);
            true
        });
        if done {
            return;
        }
    }
    let mut masked = String::new();
    sql::mask_literals_into(text, dialect, &mut masked);
    push_json_str(out, &masked);
}

/// `s` as a JSON string, escaped exactly as `serde_json` does: a backslash before `"` and `\`,
/// the short forms `\b \t \n \f \r`, other control characters as `\u00XX`; everything else
/// (DEL, non-ASCII) as is.
fn push_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut clean = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices are on char boundaries.
        out.push_str(s.get(clean..i).unwrap_or(""));
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(short);
        }
        clean = i + 1;
    }
    out.push_str(s.get(clean..).unwrap_or(""));
    out.push('"');
}

/// `now` in RFC 3339 as the `time` crate writes it (UTC, `Z`, nanoseconds without trailing
/// zeros, no fraction on a whole second). The date and time of day are formatted once per
/// second per thread.
fn push_rfc3339(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    STAMP.with(|stamp| match stamp.try_borrow_mut() {
        Ok(mut stamp) => {
            if stamp.0 != secs {
                stamp.1.clear();
                push_seconds(&mut stamp.1, secs);
                stamp.0 = secs;
            }
            out.push_str(&stamp.1);
        }
        Err(_) => push_seconds(out, secs),
    });
    let nanos = since.subsec_nanos();
    if nanos != 0 {
        let mut digits = [b'0'; 9];
        let mut n = nanos;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let len = digits.iter().rposition(|&d| d != b'0').map_or(0, |p| p + 1);
        out.push('.');
        for &d in &digits[..len] {
            out.push(char::from(d));
        }
    }
    out.push('Z');
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time.
fn push_seconds(out: &mut String, secs: u64) {
    let whole = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let formatted = whole
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    out.push_str(formatted.strip_suffix('Z').unwrap_or(&formatted));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NASTY: [&str; 8] = [
        "select 'it''s', \"Quoted \"\"x\"\"\" from t where a = 'back\\slash' and b = 42",
        "select \"tab\there\", \"nl\nhere\", \"cr\rff\u{c}bs\u{8}\" from t",
        "select \"nul\u{0}and\u{1}\u{1f}\u{7f}\" -- comment 'x'\n, 1",
        "select 'žluťoučký kůň', \"日本語\", '🦀' /* emoji \u{1f980} */",
        "select '\u{fffd}' -- replaced invalid UTF-8",
        "ALTER ROLE app PASSWORD 'hunter2'; select E'\\x68unter2'",
        "",
        "\\\\\"\"\\",
    ];

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    fn event<'a>(text: &'a str, mask: bool, error: Option<&'a str>) -> QueryEvent<'a> {
        QueryEvent {
            listener: "pg \"main\"",
            client: "[::1]:54321".parse().expect("addr"),
            user: "al\\ice",
            database: "app\tdb",
            session_id: "0000002a1234abcd",
            text,
            mask,
            dialect: sql::Syntax::POSTGRES,
            duration_us: 1234,
            rows: 7,
            error,
            target: if error.is_some() {
                None
            } else {
                Some("127.0.0.1:5432")
            },
        }
    }

    #[test]
    fn masking_follows_the_servers_string_syntax() {
        // With standard_conforming_strings = off, `\'` does not end a string: the whole
        // `'\' secret '` is one literal, and none of it may reach the log.
        let text = "select '\\' secret ' as x";
        let mut e = event(text, true, None);
        e.dialect = sql::Syntax::Postgres(sql::Dialect {
            standard_conforming_strings: false,
        });
        let l = line(&e, at(1_700_000_000, 0));
        assert!(!l.contains("secret"), "{l}");
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        assert_eq!(v["query"], "select ? as x");
        // Read the standard way, the same text leaves `secret` outside any literal.
        e.dialect = sql::Syntax::POSTGRES;
        assert!(line(&e, at(1_700_000_000, 0)).contains("secret"));
    }

    /// The line as `Records::audit` built query events with `serde_json` before.
    fn with_serde_json(e: &QueryEvent<'_>, now: SystemTime) -> String {
        let text = if e.mask {
            sql::mask_literals(e.text)
        } else {
            e.text.to_string()
        };
        let ts = time::OffsetDateTime::from(now)
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format");
        let mut line = Map::new();
        line.insert("ts".into(), Value::from(ts));
        line.insert("event".into(), Value::from("query"));
        line.insert("listener".into(), Value::from(e.listener));
        line.insert("client_addr".into(), Value::from(e.client.to_string()));
        line.insert("user".into(), Value::from(e.user));
        line.insert("database".into(), Value::from(e.database));
        line.insert("session_id".into(), Value::from(e.session_id));
        line.insert("query".into(), Value::from(text));
        line.insert("duration_us".into(), Value::from(e.duration_us));
        line.insert("rows".into(), Value::from(e.rows));
        if let Some(code) = e.error {
            line.insert("error".into(), Value::from(code));
        }
        if let Some(t) = e.target {
            line.insert("target".into(), Value::from(t));
        }
        Value::Object(line).to_string()
    }

    fn line(e: &QueryEvent<'_>, now: SystemTime) -> String {
        let mut out = String::new();
        e.write(&mut out, now);
        out
    }

    #[test]
    fn query_lines_are_the_bytes_serde_json_wrote() {
        let now = at(1_700_000_000, 123_400_000);
        for text in NASTY {
            for mask in [true, false] {
                for error in [None, Some("42P01")] {
                    let e = event(text, mask, error);
                    assert_eq!(line(&e, now), with_serde_json(&e, now), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn query_lines_parse_back_to_what_was_logged() {
        let now = SystemTime::now();
        for text in NASTY {
            let full: Value =
                serde_json::from_str(&line(&event(text, false, None), now)).expect("valid JSON");
            assert_eq!(full["query"], text);
            assert_eq!(full["event"], "query");
            assert_eq!(full["listener"], "pg \"main\"");
            assert_eq!(full["client_addr"], "[::1]:54321");
            assert_eq!(full["user"], "al\\ice");
            assert_eq!(full["database"], "app\tdb");
            assert_eq!(full["session_id"], "0000002a1234abcd");
            assert_eq!(full["duration_us"], 1234);
            assert_eq!(full["rows"], 7);
            assert_eq!(full["target"], "127.0.0.1:5432");
            assert!(full.get("error").is_none());
            let masked: Value = serde_json::from_str(&line(&event(text, true, Some("XX000")), now))
                .expect("valid JSON");
            assert_eq!(masked["query"], sql::mask_literals(text).as_str());
            assert_eq!(masked["error"], "XX000");
            assert!(masked.get("target").is_none());
        }
    }

    #[test]
    fn masked_lines_keep_no_literal() {
        let text = "ALTER ROLE app PASSWORD 'hunter2'; select E'\\x68unter2', 31337";
        let l = line(&event(text, true, None), SystemTime::now());
        for secret in ["hunter2", "68unter2", "31337"] {
            assert!(!l.contains(secret), "{l}");
        }
        assert!(
            l.contains("\"query\":\"ALTER ROLE app PASSWORD ?; select ?, ?\""),
            "{l}"
        );
    }

    #[test]
    fn long_statements_are_written_whole() {
        // The session cuts statements to 16 KiB before they get here; the writer keeps all of
        // it, masked through a buffer of its own when longer than the per-thread one.
        let unit = "select \"a\tb\\\"\"\", 'x''y' from t; ";
        let text: String = unit.repeat(16 * 1024 / unit.len());
        let now = SystemTime::now();
        for mask in [true, false] {
            let e = event(&text, mask, None);
            let l = line(&e, now);
            assert!(l == with_serde_json(&e, now), "mask {mask}: lines differ");
            let back: Value = serde_json::from_str(&l).expect("valid JSON");
            let want = if mask {
                sql::mask_literals(&text)
            } else {
                text.clone()
            };
            assert_eq!(back["query"], want.as_str());
        }
    }

    #[test]
    fn timestamps_are_what_the_time_crate_writes() {
        let mut secs = 0u64;
        for i in 0..2000u64 {
            // Across years, leap days and the cache's second boundaries.
            secs = secs.wrapping_add(86_399 * 37 + i * 7919) % 4_102_444_800;
            for nanos in [0, 1, 10, 100_000_000, 123_456_789, 999_999_999, 500_000] {
                let now = at(secs, nanos);
                let mut ours = String::new();
                push_rfc3339(&mut ours, now);
                let theirs = time::OffsetDateTime::from(now)
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("format");
                assert_eq!(ours, theirs);
            }
        }
    }

    #[test]
    fn timestamps_are_rfc3339_and_move_forward() {
        let parse = |s: &str| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("{s}: {e}"))
        };
        let mut last = None;
        let start = std::time::Instant::now();
        // Long enough to cross at least one second on this thread's cache.
        while start.elapsed() < Duration::from_millis(1100) {
            let mut s = String::new();
            push_rfc3339(&mut s, SystemTime::now());
            let t = parse(&s);
            if let Some(prev) = last {
                assert!(t >= prev, "{s} went back");
            }
            last = Some(t);
            std::thread::sleep(Duration::from_millis(7));
        }
        // A cached second is replaced, not reused, when the clock moves on.
        let mut a = String::new();
        push_rfc3339(&mut a, at(1_700_000_000, 5));
        let mut b = String::new();
        push_rfc3339(&mut b, at(1_700_000_001, 5));
        assert_eq!(a, "2023-11-14T22:13:20.000000005Z");
        assert_eq!(b, "2023-11-14T22:13:21.000000005Z");
    }
}
