//! The first stage: the TOML file as written, read into `RawConfig` with the span of every value
//! kept, so the second stage (`validate`) can point at FILE:LINE:COL. This stage checks only
//! the shape of the file — syntax, unknown keys, missing required keys, wrong TOML types — and
//! reads each section, and each item of an array section, on its own: a mistake in one listener
//! is reported and the others are still read, so one run lists every mistake. It does not
//! interpret values (durations, addresses, names) or look at files; `validate` does.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;
use toml_edit::{ImDocument, Item, TableLike, Value};

/// Byte range in the config text.
pub type Span = Range<usize>;

/// The whole file. Every section is optional; see `docs/config.md` for defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub gateway: Option<Spanned<RawGateway>>,
    pub admin: Option<Spanned<RawAdmin>>,
    pub vault: Option<Spanned<RawVault>>,
    /// `[tls.NAME]` sections, keyed by NAME (the key's span points at NAME).
    #[serde(default)]
    pub tls: BTreeMap<Spanned<String>, Spanned<RawTls>>,
    #[serde(default)]
    pub security_groups: Vec<Spanned<RawSecurityGroup>>,
    #[serde(default)]
    pub listeners: Vec<Spanned<RawListener>>,
    #[serde(default)]
    pub target_groups: Vec<Spanned<RawTargetGroup>>,
    #[serde(default)]
    pub users: Vec<Spanned<RawUser>>,
    pub flow_logs: Option<Spanned<RawFlowLogs>>,
    pub audit: Option<Spanned<RawAudit>>,
    #[serde(default)]
    pub ip_sets: Vec<Spanned<RawIpSet>>,
    pub protection: Option<Spanned<RawProtection>>,
    #[serde(default)]
    pub alarms: Vec<Spanned<RawAlarm>>,
}

/// A number written as an integer or a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawNumber(pub f64);

impl<'de> Deserialize<'de> for RawNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawNumber;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<RawNumber, E> {
                Ok(RawNumber(n as f64))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<RawNumber, E> {
                Ok(RawNumber(n))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlarm {
    pub name: Option<Spanned<String>>,
    pub metric: Option<Spanned<String>>,
    pub labels: Option<BTreeMap<String, Spanned<String>>>,
    pub statistic: Option<Spanned<String>>,
    pub comparison: Option<Spanned<String>>,
    pub threshold: Option<Spanned<RawNumber>>,
    pub period: Option<Spanned<RawDuration>>,
    pub evaluation_periods: Option<Spanned<i64>>,
    pub webhook: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
}

/// A string that `validate` reads as a duration (`"300ms"`, `"30s"`, `"15m"`, `"1h"`, `"2d"`).
/// Its own type only so that a bare number gets a message that says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"30s\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(s.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

/// A size in bytes: an integer, or a string such as `"100MiB"` or `"10MB"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"100MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(s.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub name: Option<Spanned<String>>,
    pub shutdown_timeout: Option<Spanned<RawDuration>>,
    pub watch_config: Option<Spanned<bool>>,
    pub workers: Option<Spanned<i64>>,
    pub park_after: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub metrics_auth: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    pub dir: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub token_max_ttl: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub policy: Option<Spanned<String>>,
    pub client_ca: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurityGroup {
    pub name: Option<Spanned<String>>,
    pub description: Option<Spanned<String>>,
    pub ingress: Option<Vec<Spanned<RawIngressRule>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngressRule {
    pub cidr: Option<Spanned<String>>,
    pub ip_set: Option<Spanned<String>>,
    pub description: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<Spanned<String>>,
    pub bind: Option<Spanned<String>>,
    pub protocol: Option<Spanned<String>>,
    pub target_group: Option<Spanned<String>>,
    pub security_groups: Option<Vec<Spanned<String>>>,
    pub tls: Option<Spanned<String>>,
    pub tls_config: Option<Spanned<String>>,
    pub proxy_protocol: Option<Spanned<String>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub idle_timeout: Option<Spanned<RawDuration>>,
    pub handshake_timeout: Option<Spanned<RawDuration>>,
    pub max_connections: Option<Spanned<i64>>,
    pub pool: Option<Spanned<RawPool>>,
    pub read_write_split: Option<Spanned<bool>>,
    pub max_replica_lag: Option<Spanned<RawDuration>>,
    pub audit_queries: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub mode: Option<Spanned<String>>,
    pub size: Option<Spanned<i64>>,
    pub min_idle: Option<Spanned<i64>>,
    pub idle_timeout: Option<Spanned<RawDuration>>,
    pub max_lifetime: Option<Spanned<RawDuration>>,
    pub checkout_timeout: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargetGroup {
    pub name: Option<Spanned<String>>,
    pub algorithm: Option<Spanned<String>>,
    pub deregistration_delay: Option<Spanned<RawDuration>>,
    pub proxy_protocol_v2: Option<Spanned<bool>>,
    pub health_check: Option<Spanned<RawHealthCheck>>,
    pub fail_open: Option<Spanned<bool>>,
    pub connect_timeout: Option<Spanned<RawDuration>>,
    pub connect_retries: Option<Spanned<i64>>,
    pub tls: Option<Spanned<String>>,
    pub tls_ca: Option<Spanned<String>>,
    pub backend_auth: Option<Spanned<Vec<Spanned<String>>>>,
    pub targets: Option<Spanned<Vec<Spanned<RawTarget>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub enabled: Option<Spanned<bool>>,
    pub protocol: Option<Spanned<String>>,
    pub interval: Option<Spanned<RawDuration>>,
    pub timeout: Option<Spanned<RawDuration>>,
    pub healthy_threshold: Option<Spanned<i64>>,
    pub unhealthy_threshold: Option<Spanned<i64>>,
    pub credential: Option<Spanned<String>>,
    pub database: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub address: Option<Spanned<String>>,
    pub role: Option<Spanned<String>>,
    pub weight: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: Option<Spanned<String>>,
    pub auth: Option<Spanned<Vec<Spanned<String>>>>,
    pub backend_credential: Option<Spanned<String>>,
    pub databases: Option<Vec<Spanned<String>>>,
    pub pool_mode: Option<Spanned<String>>,
    pub admin: Option<Spanned<bool>>,
    pub redis_acl: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlowLogs {
    pub path: Option<Spanned<String>>,
    pub max_size: Option<Spanned<RawSize>>,
    pub max_files: Option<Spanned<i64>>,
    pub aggregation_interval: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub path: Option<Spanned<String>>,
    pub max_size: Option<Spanned<RawSize>>,
    pub max_files: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpSet {
    pub name: Option<Spanned<String>>,
    pub cidrs: Option<Vec<Spanned<String>>>,
    pub file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetection {
    pub enabled: Option<Spanned<bool>>,
    pub action: Option<Spanned<String>>,
    pub threshold: Option<Spanned<RawSize>>,
    pub window: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeo {
    pub database: Option<Spanned<String>>,
    pub deny_countries: Option<Vec<Spanned<String>>>,
    pub allow_countries: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProtection {
    pub enabled: Option<Spanned<bool>>,
    pub exempt: Option<Vec<Spanned<String>>>,
    pub shared: Option<Spanned<String>>,
    pub rate_window: Option<Spanned<RawDuration>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_auth_attempts: Option<Spanned<i64>>,
    pub ban_time: Option<Spanned<RawDuration>>,
    pub max_ban_time: Option<Spanned<RawDuration>>,
    pub ban_memory: Option<Spanned<RawDuration>>,
    pub max_sources: Option<Spanned<i64>>,
    pub admin_users: Option<Vec<Spanned<String>>>,
    pub deny_ip_sets: Option<Vec<Spanned<String>>>,
    pub allow_ip_sets: Option<Vec<Spanned<String>>>,
    pub geo: Option<Spanned<RawGeo>>,
    pub brute_force: Option<Spanned<RawDetection>>,
    pub password_spray: Option<Spanned<RawDetection>>,
    pub login_after_failures: Option<Spanned<RawDetection>>,
    pub scan: Option<Spanned<RawDetection>>,
    pub connection_spike: Option<Spanned<RawDetection>>,
    pub first_seen: Option<Spanned<RawDetection>>,
    pub privilege_change: Option<Spanned<RawDetection>>,
    pub egress: Option<Spanned<RawDetection>>,
    pub sql_injection: Option<Spanned<RawDetection>>,
}

/// The detections of `[protection]`, each a table of its own.
pub const DETECTIONS: [&str; 9] = [
    "brute_force",
    "password_spray",
    "login_after_failures",
    "scan",
    "connection_spike",
    "first_seen",
    "privilege_change",
    "egress",
    "sql_injection",
];

/// The outcome of reading: as much of the file as could be read, and what could not.
#[derive(Debug, Default)]
pub struct Reading {
    pub config: RawConfig,
    /// Problems found while reading, each with the span it refers to.
    pub problems: Vec<(Span, String)>,
    /// Sections with an item whose name could not be read: `validate` does not call a
    /// reference into such a section dangling, since the name may be the broken one.
    pub unnamed: Vec<&'static str>,
}

/// Read `text` leniently. `Err` only for a TOML syntax error (the parser stops at the first).
pub fn read(text: &str) -> Result<Reading, (Span, String)> {
    let doc = ImDocument::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        (span, format!("syntax error: {message}"))
    })?;
    let mut r = Reader::default();
    let top = fields_of::<RawConfig>();
    let root = doc.as_table();
    for (key, item) in root.iter() {
        let key_span = root.key(key).and_then(|k| k.span()).unwrap_or(0..0);
        let at = item.span().unwrap_or_else(|| key_span.clone());
        match key {
            "gateway" => {
                r.cfg.gateway = r.single(item, at, "[gateway]", Schema::of::<RawGateway>(&[]))
            }
            "admin" => {
                r.cfg.admin = r.single(item, at, "[admin]", Schema::of::<RawAdmin>(&["listen"]))
            }
            "vault" => {
                r.cfg.vault = r.single(item, at, "[vault]", Schema::of::<RawVault>(&["dir"]))
            }
            "flow_logs" => {
                r.cfg.flow_logs = r.single(
                    item,
                    at,
                    "[flow_logs]",
                    Schema::of::<RawFlowLogs>(&["path"]),
                )
            }
            "audit" => {
                r.cfg.audit = r.single(item, at, "[audit]", Schema::of::<RawAudit>(&["path"]))
            }
            "tls" => r.tls(item, key_span),
            "protection" => {
                let mut schema = Schema::of::<RawProtection>(&[])
                    .table("geo", Schema::of::<RawGeo>(&["database"]));
                for d in DETECTIONS {
                    schema = schema.table(d, Schema::of::<RawDetection>(&[]));
                }
                r.cfg.protection = r.single(item, at, "[protection]", schema)
            }
            "alarms" => {
                let schema = Schema::of::<RawAlarm>(&[
                    "name",
                    "metric",
                    "comparison",
                    "threshold",
                    "webhook",
                ]);
                r.cfg.alarms = r.array(item, key_span, "alarms", "alarm", &schema);
            }
            "ip_sets" => {
                let schema = Schema::of::<RawIpSet>(&["name"]);
                r.cfg.ip_sets = r.array(item, key_span, "ip_sets", "ip set", &schema);
            }
            "security_groups" => {
                let schema = Schema::of::<RawSecurityGroup>(&["name"]).array(
                    "ingress",
                    "ingress rule",
                    Schema::of::<RawIngressRule>(&[]),
                );
                r.cfg.security_groups =
                    r.array(item, key_span, "security_groups", "security group", &schema);
            }
            "listeners" => {
                let schema = Schema::of::<RawListener>(&["name", "bind", "target_group"])
                    .table("pool", Schema::of::<RawPool>(&[]));
                r.cfg.listeners = r.array(item, key_span, "listeners", "listener", &schema);
            }
            "target_groups" => {
                let schema = Schema::of::<RawTargetGroup>(&["name", "targets"])
                    .table("health_check", Schema::of::<RawHealthCheck>(&[]))
                    .array("targets", "target", Schema::of::<RawTarget>(&["address"]));
                r.cfg.target_groups =
                    r.array(item, key_span, "target_groups", "target group", &schema);
            }
            "users" => {
                let schema = Schema::of::<RawUser>(&["name"]);
                r.cfg.users = r.array(item, key_span, "users", "user", &schema);
            }
            other => {
                let hint = suggest(other, top)
                    .map(|s| format!("; did you mean [{s}]?"))
                    .unwrap_or_default();
                r.problem(key_span, format!("unknown section '{other}'{hint}"));
            }
        }
    }
    Ok(Reading {
        config: r.cfg,
        problems: r.problems,
        unnamed: r.unnamed,
    })
}

#[derive(Default)]
struct Reader {
    cfg: RawConfig,
    problems: Vec<(Span, String)>,
    unnamed: Vec<&'static str>,
}

/// What keys a table may have, which it must have, and which of its values are themselves
/// tables (or arrays of tables) to check the same way.
struct Schema {
    fields: &'static [&'static str],
    required: &'static [&'static str],
    tables: Vec<(&'static str, Schema)>,
    arrays: Vec<(&'static str, &'static str, Schema)>,
}

impl Schema {
    fn of<T: DeserializeOwned>(required: &'static [&'static str]) -> Schema {
        Schema {
            fields: fields_of::<T>(),
            required,
            tables: Vec::new(),
            arrays: Vec::new(),
        }
    }
    fn table(mut self, key: &'static str, schema: Schema) -> Schema {
        self.tables.push((key, schema));
        self
    }
    fn array(mut self, key: &'static str, noun: &'static str, schema: Schema) -> Schema {
        self.arrays.push((key, noun, schema));
        self
    }
}

impl Reader {
    fn problem(&mut self, span: Span, message: String) {
        self.problems.push((span, message));
    }

    /// A section that is one table: `[gateway]`, `[admin]`...
    fn single<T: DeserializeOwned + Default>(
        &mut self,
        item: &Item,
        at: Span,
        subject: &str,
        schema: Schema,
    ) -> Option<Spanned<T>> {
        let Some(table) = item.as_table_like() else {
            self.problem(at, format!("{subject} must be a table"));
            return None;
        };
        Some(Spanned::new(
            at.clone(),
            self.item(table, at, subject, &schema),
        ))
    }

    /// `[tls.NAME]` sections.
    fn tls(&mut self, item: &Item, key_span: Span) {
        let Some(table) = item.as_table_like() else {
            self.problem(
                key_span,
                "tls must be a set of named sections such as [tls.default]".into(),
            );
            return;
        };
        let schema = Schema::of::<RawTls>(&["cert", "key"]);
        for (name, sub) in table.iter() {
            let name_span = table
                .key(name)
                .and_then(|k| k.span())
                .unwrap_or_else(|| key_span.clone());
            let at = sub.span().unwrap_or_else(|| name_span.clone());
            let Some(sub_table) = sub.as_table_like() else {
                self.problem(
                    name_span,
                    format!("tls settings must be named: write [tls.NAME] (found '{name}' directly under [tls])"),
                );
                continue;
            };
            let subject = format!("[tls.{name}]");
            let value = self.item(sub_table, at.clone(), &subject, &schema);
            self.cfg.tls.insert(
                Spanned::new(name_span, name.to_string()),
                Spanned::new(at, value),
            );
        }
    }

    /// An array-of-tables section: `[[listeners]]`...
    fn array<T: DeserializeOwned + Default>(
        &mut self,
        item: &Item,
        key_span: Span,
        key: &str,
        noun: &'static str,
        schema: &Schema,
    ) -> Vec<Spanned<T>> {
        let elements: Vec<(Option<&dyn TableLike>, Span)> = match item {
            Item::ArrayOfTables(a) => a
                .iter()
                .map(|t| {
                    (
                        Some(t as &dyn TableLike),
                        t.span().unwrap_or_else(|| key_span.clone()),
                    )
                })
                .collect(),
            Item::Value(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    (
                        v.as_inline_table().map(|t| t as &dyn TableLike),
                        v.span().unwrap_or_else(|| key_span.clone()),
                    )
                })
                .collect(),
            _ => {
                self.problem(
                    key_span,
                    format!("{key} must be an array of tables: write [[{key}]] before each one"),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (i, (table, at)) in elements.into_iter().enumerate() {
            let subject = subject_of(noun, i, table);
            let value = match table {
                Some(table) => {
                    if !matches!(table.get("name"), Some(n) if n.is_str()) {
                        self.unnamed.push(noun);
                    }
                    self.item(table, at.clone(), &subject, schema)
                }
                None => {
                    self.problem(at.clone(), format!("{subject} must be a table"));
                    self.unnamed.push(noun);
                    T::default()
                }
            };
            out.push(Spanned::new(at, value));
        }
        out
    }

    /// One table: check its keys against `schema`, then deserialize it, dropping each key whose
    /// value has the wrong type (after reporting it) until the rest reads.
    fn item<T: DeserializeOwned + Default>(
        &mut self,
        table: &dyn TableLike,
        at: Span,
        subject: &str,
        schema: &Schema,
    ) -> T {
        let mut owned = toml_edit::Table::new();
        for (k, v) in table.iter() {
            let key = table
                .key(k)
                .cloned()
                .unwrap_or_else(|| toml_edit::Key::new(k));
            owned.insert_formatted(&key, v.clone());
        }
        self.check_keys(&mut owned, at.clone(), subject, schema);
        for _ in 0..=owned.len() + 64 {
            let doc = toml_edit::DocumentMut::from(owned.clone());
            match toml_edit::de::from_document::<T>(doc) {
                Ok(value) => return value,
                Err(e) => {
                    let Some(span) = e.span() else {
                        self.problem(at, format!("{subject}: {}", e.message()));
                        return T::default();
                    };
                    match remove_at(&mut owned, span.start) {
                        Some(path) => {
                            let message = explain_type_error(e.message());
                            self.problem(span, format!("{subject}: {path} {message}"));
                        }
                        None => {
                            self.problem(span, format!("{subject}: {}", e.message()));
                            return T::default();
                        }
                    }
                }
            }
        }
        T::default()
    }

    /// Report and remove unknown keys; report missing required keys; recurse into nested tables.
    fn check_keys(&mut self, table: &mut dyn TableLike, at: Span, subject: &str, schema: &Schema) {
        let keys: Vec<String> = table.iter().map(|(k, _)| k.to_string()).collect();
        for k in &keys {
            if schema.fields.contains(&k.as_str()) {
                continue;
            }
            let span = table
                .key(k)
                .and_then(|key| key.span())
                .unwrap_or_else(|| at.clone());
            let hint = match suggest(k, schema.fields) {
                Some(s) => format!("; did you mean '{s}'?"),
                None => format!("; expected one of: {}", schema.fields.join(", ")),
            };
            self.problem(span, format!("unknown key '{k}' in {subject}{hint}"));
            table.remove(k);
        }
        for required in schema.required {
            if !table.contains_key(required) {
                self.problem(
                    at.start..at.start,
                    format!("{subject} has no '{required}', which is required"),
                );
            }
        }
        for (key, sub) in &schema.tables {
            if let Some(item) = table.get_mut(key) {
                let sub_at = item.span().unwrap_or_else(|| at.clone());
                if let Some(t) = item.as_table_like_mut() {
                    self.check_keys(t, sub_at, &format!("{subject} {key}"), sub);
                }
            }
        }
        for (key, noun, sub) in &schema.arrays {
            match table.get_mut(key) {
                Some(Item::Value(Value::Array(array))) => {
                    for (i, v) in array.iter_mut().enumerate() {
                        let sub_at = v.span().unwrap_or_else(|| at.clone());
                        if let Some(t) = v.as_inline_table_mut() {
                            let sub_subject = format!("{subject} {noun} #{}", i + 1);
                            self.check_keys(t, sub_at, &sub_subject, sub);
                        }
                    }
                }
                Some(Item::ArrayOfTables(array)) => {
                    for (i, t) in array.iter_mut().enumerate() {
                        let sub_at = t.span().unwrap_or_else(|| at.clone());
                        let sub_subject = format!("{subject} {noun} #{}", i + 1);
                        self.check_keys(t, sub_at, &sub_subject, sub);
                    }
                }
                _ => {}
            }
        }
    }
}

/// `listener 'pg'` when the item has a readable name, else `listener #2`.
fn subject_of(noun: &str, index: usize, table: Option<&dyn TableLike>) -> String {
    match table.and_then(|t| t.get("name")).and_then(|n| n.as_str()) {
        Some(name) => format!("{noun} '{name}'"),
        None => format!("{noun} #{}", index + 1),
    }
}

/// Remove the innermost key (or array element) whose key or value covers byte `pos`; returns
/// its path (`idle_timeout`, `targets[2].weight`) for the message.
fn remove_at(table: &mut dyn TableLike, pos: usize) -> Option<String> {
    let covers =
        |s: Option<Span>| s.is_some_and(|s| s.start <= pos && pos < s.end.max(s.start + 1));
    let keys: Vec<String> = table.iter().map(|(k, _)| k.to_string()).collect();
    for k in keys {
        let key_span = table.key(&k).and_then(|key| key.span());
        let Some(item) = table.get_mut(&k) else {
            continue;
        };
        if !(covers(key_span) || covers(item.span())) {
            // Header tables nested in an item have no single value span; look inside them.
            if let Item::Table(t) = item {
                if let Some(inner) = remove_at(t, pos) {
                    return Some(format!("{k}.{inner}"));
                }
            }
            continue;
        }
        if let Some(t) = item.as_table_like_mut() {
            if let Some(inner) = remove_at(t, pos) {
                return Some(format!("{k}.{inner}"));
            }
        } else if let Item::ArrayOfTables(array) = item {
            let hit = array.iter().position(|t| covers(t.span()));
            if let Some(i) = hit {
                if let Some(t) = array.get_mut(i) {
                    if let Some(inner) = remove_at(t, pos) {
                        return Some(format!("{k}[{i}].{inner}"));
                    }
                }
            }
        } else if let Item::Value(Value::Array(array)) = item {
            let hit = array.iter().position(|v| covers(v.span()));
            if let Some(i) = hit {
                if let Some(t) = array.get_mut(i).and_then(|v| v.as_inline_table_mut()) {
                    if let Some(inner) = remove_at(t, pos) {
                        return Some(format!("{k}[{i}].{inner}"));
                    }
                }
                array.remove(i);
                return Some(format!("{k}[{i}]"));
            }
        }
        table.remove(&k);
        return Some(k);
    }
    None
}

/// Serde says "invalid type: integer `30`, expected a string"; say it the other way round.
fn explain_type_error(message: &str) -> String {
    let message = message
        .replace("a sequence", "an array")
        .replace("a map", "a table")
        .replace("expected i64", "expected an integer")
        .replace("expected u32", "expected an integer");
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return format!("must be {expected}, not {found}");
        }
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return format!("must be {expected}, not {found}");
        }
    }
    message
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The field names serde derived for `T`, read by asking `T` to deserialize itself from a
/// deserializer that only records what it is asked for. Keeps the unknown-key check and
/// its "did you mean" list in step with the structs above without a second list to maintain.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldProbe) {
        Err(ProbeResult(Some(fields))) => fields,
        _ => &[],
    }
}

struct FieldProbe;

#[derive(Debug)]
struct ProbeResult(Option<&'static [&'static str]>);

impl fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for ProbeResult {}

impl de::Error for ProbeResult {
    fn custom<M: fmt::Display>(_: M) -> Self {
        ProbeResult(None)
    }
}

impl<'de> Deserializer<'de> for FieldProbe {
    type Error = ProbeResult;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeResult> {
        Err(ProbeResult(None))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, ProbeResult> {
        Err(ProbeResult(Some(fields)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reads_field_names() {
        assert_eq!(
            fields_of::<RawAdmin>(),
            &["listen", "token_file", "metrics_auth"]
        );
        assert!(fields_of::<RawConfig>().contains(&"target_groups"));
    }

    #[test]
    fn suggestions_are_close_words_only() {
        assert_eq!(
            suggest("idle_timout", &["idle_timeout", "bind"]),
            Some("idle_timeout")
        );
        assert_eq!(suggest("zzz", &["idle_timeout", "bind"]), None);
    }

    #[test]
    fn a_strict_read_of_a_good_file_works() {
        let text = "[gateway]\nname = \"g\"\n[tls.default]\ncert = \"c\"\nkey = \"k\"\n\
                    [[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:1\"\ntarget_group = \"t\"\n";
        let raw: RawConfig = toml::from_str(text).expect("reads");
        assert_eq!(raw.listeners.len(), 1);
        assert_eq!(
            raw.tls.keys().next().map(|k| k.get_ref().as_str()),
            Some("default")
        );
    }
}
