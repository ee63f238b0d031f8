//! The second stage: `RawConfig` -> `Config`. Interprets every value (durations, sizes, CIDRs,
//! addresses, enums), fills in the documented defaults, resolves references between sections
//! (listener -> target group, security groups, TLS settings), resolves relative paths against the
//! config file's directory, checks that certificate and key files exist and hold PEM, and resolves
//! target host names. Every problem is collected with the span it refers to; nothing stops at the
//! first. It reports nothing about missing required keys or wrong TOML types: `raw` already did,
//! and a `None` here means "already reported".

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use crate::model::*;
use crate::raw::*;

/// A value in the file that cannot be read as what its key needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

/// Parse a duration: a whole number and a unit (`ms`, `s`, `m`, `h`, `d`), repeated if wished:
/// `"300ms"`, `"30s"`, `"15m"`, `"1h30m"`, `"2d"`.
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    let advice = "write a whole number and a unit (ms, s, m, h or d), e.g. \"30s\" or \"1h30m\"";
    let bad = || ValueError(format!("'{text}' is not a duration; {advice}"));
    let s = text.trim();
    if s.is_empty() {
        return Err(ValueError(format!("is empty; {advice}")));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError(format!(
            "'{text}' has no unit; write \"{s}s\" for seconds"
        )));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let part = match unit {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            "d" => number.checked_mul(86400).map(Duration::from_secs),
            _ => return Err(bad()),
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| ValueError(format!("'{text}' is too long")))?;
    }
    Ok(total)
}

/// Parse a size: a whole number of bytes, optionally followed by a unit: `B`, `KB`, `MB`, `GB`,
/// `TB` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024), case-insensitive.
pub fn parse_size(text: &str) -> Result<u64, ValueError> {
    let bad = || {
        ValueError(format!(
            "'{text}' is not a size; write a whole number and a unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. \"100MiB\""
        ))
    };
    let s = text.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let number: u64 = s[..digits].parse().map_err(|_| bad())?;
    let unit = s[digits..].trim_start().to_ascii_lowercase();
    let factor: u64 = match unit.as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| ValueError(format!("'{text}' is too large")))
}

/// Where relative paths start from, and how to show them in messages.
pub(crate) struct Base {
    /// The config file's directory as the user named it (may be relative, may be empty).
    pub shown: PathBuf,
    /// The same, absolute.
    pub absolute: PathBuf,
}

pub(crate) fn validate(
    raw: &RawConfig,
    unnamed: &[&'static str],
    text: &str,
    base: &Base,
    source: Option<PathBuf>,
) -> Result<Config, Vec<(Span, String)>> {
    let mut c = Checker {
        base,
        text,
        unnamed,
        problems: Vec::new(),
    };
    let config = c.config(raw, source);
    if c.problems.is_empty() {
        Ok(config)
    } else {
        Err(c.problems)
    }
}

struct Checker<'a> {
    base: &'a Base,
    text: &'a str,
    unnamed: &'a [&'static str],
    problems: Vec<(Span, String)>,
}

const NAME_RULE: &str = "may contain only letters, digits, '_', '.' and '-'";

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn subject(noun: &str, index: usize, name: &Option<Spanned<String>>) -> String {
    match name {
        Some(n) => format!("{noun} '{}'", n.get_ref()),
        None => format!("{noun} #{}", index + 1),
    }
}

impl Checker<'_> {
    fn report(&mut self, span: Span, message: String) {
        self.problems.push((span, message));
    }

    fn line_of(&self, span: &Span) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn config(&mut self, raw: &RawConfig, source: Option<PathBuf>) -> Config {
        let gateway = self.gateway(raw.gateway.as_ref().map(Spanned::get_ref));
        let admin = raw.admin.as_ref().and_then(|a| self.admin(a.get_ref()));
        let vault = raw.vault.as_ref().and_then(|v| self.vault(v.get_ref()));
        let tls = self.tls(&raw.tls);
        let ip_sets = self.ip_sets(&raw.ip_sets);
        let security_groups = self.security_groups(&raw.security_groups, &ip_sets);
        let target_groups = self.target_groups(&raw.target_groups);
        let listeners = self.listeners(raw, admin.as_ref());
        let users = self.users(&raw.users);
        let flow_logs = raw
            .flow_logs
            .as_ref()
            .and_then(|f| self.flow_logs(f.get_ref()));
        let audit = raw.audit.as_ref().and_then(|a| self.audit(a.get_ref()));
        if let (Some(f), Some(a), Some(raw_audit)) = (&flow_logs, &audit, &raw.audit) {
            if f.path == a.path {
                let span = raw_audit
                    .get_ref()
                    .path
                    .as_ref()
                    .map_or(raw_audit.span(), Spanned::span);
                self.report(
                    span,
                    "[audit]: path is the same file as [flow_logs] path".into(),
                );
            }
        }
        let protection = match &raw.protection {
            Some(p) => self.protection(p.get_ref(), &ip_sets),
            None => ProtectionSettings::default(),
        };
        let alarms = self.alarms(&raw.alarms);
        Config {
            alarms,
            ip_sets,
            protection,
            source,
            gateway,
            admin,
            vault,
            tls,
            security_groups,
            listeners,
            target_groups,
            users,
            flow_logs,
            audit,
        }
    }

    // ---- values -------------------------------------------------------------------------

    fn name(&mut self, name: &Option<Spanned<String>>, noun: &str) -> Option<String> {
        let n = name.as_ref()?;
        if valid_name(n.get_ref()) {
            Some(n.get_ref().clone())
        } else if n.get_ref().is_empty() {
            self.report(n.span(), format!("{noun} name is empty"));
            None
        } else {
            self.report(
                n.span(),
                format!("{noun} name '{}' {NAME_RULE}", n.get_ref()),
            );
            None
        }
    }

    /// Report names used twice within one section; returns the set of names.
    fn unique<'n>(&mut self, noun: &str, names: impl Iterator<Item = &'n Spanned<String>>) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for n in names {
            if let Some(first) = seen.get(n.get_ref().as_str()) {
                let line = self.line_of(first);
                self.report(
                    n.span(),
                    format!(
                        "{noun} name '{}' is used twice (first on line {line})",
                        n.get_ref()
                    ),
                );
            } else {
                seen.insert(n.get_ref(), n.span());
            }
        }
    }

    fn duration(
        &mut self,
        value: &Option<Spanned<RawDuration>>,
        subject: &str,
        key: &str,
        default: Duration,
        may_be_zero: bool,
    ) -> Duration {
        let Some(v) = value else { return default };
        match parse_duration(&v.get_ref().0) {
            Ok(d) if d.is_zero() && !may_be_zero => {
                self.report(v.span(), format!("{subject}: {key} must be longer than 0"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.report(v.span(), format!("{subject}: {key} {e}"));
                default
            }
        }
    }

    fn size(
        &mut self,
        value: &Option<Spanned<RawSize>>,
        subject: &str,
        key: &str,
        default: u64,
    ) -> u64 {
        let Some(v) = value else { return default };
        let parsed = match v.get_ref() {
            RawSize::Bytes(n) => {
                u64::try_from(*n).map_err(|_| ValueError(format!("{n} is negative")))
            }
            RawSize::Text(t) => parse_size(t),
        };
        match parsed {
            Ok(0) => {
                self.report(
                    v.span(),
                    format!("{subject}: {key} must be more than 0 bytes"),
                );
                default
            }
            Ok(n) => n,
            Err(e) => {
                self.report(v.span(), format!("{subject}: {key} {e}"));
                default
            }
        }
    }

    fn int(
        &mut self,
        value: &Option<Spanned<i64>>,
        subject: &str,
        key: &str,
        default: u32,
        min: u32,
        max: u32,
    ) -> u32 {
        let Some(v) = value else { return default };
        let n = *v.get_ref();
        match u32::try_from(n) {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                let rule = if max == u32::MAX {
                    format!("at least {min}")
                } else {
                    format!("between {min} and {max}")
                };
                self.report(
                    v.span(),
                    format!("{subject}: {key} is {n}; it must be {rule}"),
                );
                default
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        value: &Option<Spanned<String>>,
        subject: &str,
        key: &str,
        default: T,
        choices: &[(&'static str, T)],
    ) -> T {
        let Some(v) = value else { return default };
        self.one_of(v, subject, key, choices).unwrap_or(default)
    }

    fn one_of<T: Copy>(
        &mut self,
        v: &Spanned<String>,
        subject: &str,
        key: &str,
        choices: &[(&'static str, T)],
    ) -> Option<T> {
        let given = v.get_ref();
        if let Some((_, t)) = choices
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(given))
        {
            return Some(*t);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let hint = did_you_mean(given, &names);
        self.report(
            v.span(),
            format!(
                "{subject}: {key} '{given}' is not one of {}{hint}",
                names.join(", ")
            ),
        );
        None
    }

    fn socket_addr(
        &mut self,
        value: &Spanned<String>,
        subject: &str,
        key: &str,
        example: &str,
    ) -> Option<SocketAddr> {
        match value.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.report(
                    value.span(),
                    format!(
                        "{subject}: {key} '{}' is not an IP address and port such as \"{example}\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn cidr(&mut self, value: &Spanned<String>, subject: &str, key: &str) -> Option<IpNet> {
        let s = value.get_ref();
        let message = match s.parse::<IpNet>() {
            Ok(net) if net == net.trunc() => return Some(net),
            Ok(net) => {
                let host = IpNet::from(net.addr());
                format!(
                    "{subject}: {key} '{s}' has host bits set; did you mean '{}' or '{host}'?",
                    net.trunc()
                )
            }
            Err(_) => match s.parse::<IpAddr>() {
                Ok(ip) => format!(
                    "{subject}: {key} '{s}' is an address, not a CIDR; write '{}'",
                    IpNet::from(ip)
                ),
                Err(_) => format!("{subject}: {key} '{s}' is not a CIDR such as \"10.0.0.0/16\""),
            },
        };
        self.report(value.span(), message);
        None
    }

    /// A path from the file: absolute as is, relative from the config file's directory.
    /// Returns the absolute path and how to show it in a message.
    fn path(
        &mut self,
        value: &Spanned<String>,
        subject: &str,
        key: &str,
    ) -> Option<(PathBuf, String)> {
        let written = value.get_ref();
        if written.is_empty() {
            self.report(value.span(), format!("{subject}: {key} is empty"));
            return None;
        }
        let p = Path::new(written);
        if p.is_absolute() {
            return Some((p.to_path_buf(), format!("'{written}'")));
        }
        let shown = self.base.shown.join(p);
        let display = if shown == p {
            format!("'{written}'")
        } else {
            format!("'{written}' ({})", shown.display())
        };
        Some((self.base.absolute.join(p), display))
    }

    fn pem_certs(&mut self, value: &Spanned<String>, subject: &str, key: &str) -> Option<PathBuf> {
        let (path, shown) = self.path(value, subject, key)?;
        let problem = match CertificateDer::pem_file_iter(&path) {
            Err(e) => Some(cannot_read(&e)),
            Ok(iter) => {
                let mut count = 0;
                let mut bad = None;
                for cert in iter {
                    match cert {
                        Ok(_) => count += 1,
                        Err(e) => {
                            bad = Some(format!("is not a valid PEM file: {}", pem_error(&e)));
                            break;
                        }
                    }
                }
                bad.or_else(|| {
                    (count == 0).then(|| {
                        "holds no certificate (no -----BEGIN CERTIFICATE----- block)".to_string()
                    })
                })
            }
        };
        match problem {
            Some(p) => {
                self.report(value.span(), format!("{subject}: {key} {shown} {p}"));
                None
            }
            None => Some(path),
        }
    }

    fn pem_key(&mut self, value: &Spanned<String>, subject: &str) -> Option<PathBuf> {
        let (path, shown) = self.path(value, subject, "key")?;
        let problem = match PrivateKeyDer::from_pem_file(&path) {
            Ok(_) => return Some(path),
            Err(pem::Error::Io(e)) => cannot_read_io(&e),
            Err(pem::Error::NoItemsFound) => {
                "holds no private key (no -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY block)"
                    .to_string()
            }
            Err(e) => format!("is not a valid PEM file: {}", pem_error(&e)),
        };
        self.report(value.span(), format!("{subject}: key {shown} {problem}"));
        None
    }

    /// A log file: its directory must exist; the file itself is created when needed.
    fn log_path(&mut self, value: &Spanned<String>, subject: &str) -> Option<PathBuf> {
        let (path, shown) = self.path(value, subject, "path")?;
        if path.is_dir() {
            self.report(
                value.span(),
                format!("{subject}: path {shown} is a directory, not a file"),
            );
            return None;
        }
        match path.parent() {
            Some(dir) if !dir.is_dir() => {
                self.report(
                    value.span(),
                    format!("{subject}: path {shown}: its directory does not exist"),
                );
                None
            }
            _ => Some(path),
        }
    }

    // ---- sections -----------------------------------------------------------------------

    fn gateway(&mut self, raw: Option<&RawGateway>) -> GatewaySettings {
        let defaults = Config::empty().gateway;
        let Some(raw) = raw else { return defaults };
        let s = "[gateway]";
        GatewaySettings {
            name: self.name(&raw.name, "gateway").unwrap_or(defaults.name),
            shutdown_timeout: self.duration(
                &raw.shutdown_timeout,
                s,
                "shutdown_timeout",
                defaults.shutdown_timeout,
                true,
            ),
            watch_config: raw
                .watch_config
                .as_ref()
                .map_or(defaults.watch_config, |w| *w.get_ref()),
            workers: self.int(&raw.workers, s, "workers", defaults.workers, 0, 1024),
            park_after: self.duration(&raw.park_after, s, "park_after", defaults.park_after, true),
        }
    }

    fn admin(&mut self, raw: &RawAdmin) -> Option<AdminSettings> {
        let s = "[admin]";
        let listen = raw
            .listen
            .as_ref()
            .and_then(|l| self.socket_addr(l, s, "listen", "127.0.0.1:9900"));
        let token_file = match &raw.token_file {
            None => None,
            Some(t) => {
                let (path, shown) = self.path(t, s, "token_file")?;
                if let Err(e) = crate::token::read_admin_token(&path) {
                    self.report(t.span(), format!("{s}: token_file {shown} {e}"));
                    return None;
                }
                Some(path)
            }
        };
        let metrics_auth = raw.metrics_auth.as_ref().is_some_and(|m| *m.get_ref());
        if let (Some(m), None) = (&raw.metrics_auth, &raw.token_file) {
            if *m.get_ref() {
                self.report(
                    m.span(),
                    format!(
                        "{s}: metrics_auth = true needs a token_file holding the token to ask for"
                    ),
                );
            }
        }
        let listen = listen?;
        if token_file.is_none() && !listen.ip().is_loopback() {
            if let Some(l) = &raw.listen {
                self.report(
                    l.span(),
                    format!("{s}: listen {listen} is not a loopback address, and without a token_file anyone who reaches it can read the API (users, client addresses, queries); set token_file to a file holding a random token (mode 0600), or listen on 127.0.0.1"),
                );
            }
            return None;
        }
        Some(AdminSettings {
            listen,
            token_file,
            metrics_auth,
        })
    }

    fn vault(&mut self, raw: &RawVault) -> Option<VaultSettings> {
        let s = "[vault]";
        let dir = raw
            .dir
            .as_ref()
            .and_then(|d| self.path(d, s, "dir"))
            .map(|(p, _)| p);
        let key_file = match &raw.key_file {
            None => None,
            Some(k) => {
                let (path, shown) = self.path(k, s, "key_file")?;
                if !path.is_file() {
                    self.report(k.span(), format!("{s}: key_file {shown} does not exist"));
                    return None;
                }
                Some(path)
            }
        };
        let token_max_ttl = self.duration(
            &raw.token_max_ttl,
            s,
            "token_max_ttl",
            Duration::from_secs(3600),
            false,
        );
        Some(VaultSettings {
            dir: dir?,
            key_file,
            token_max_ttl,
        })
    }

    fn tls(
        &mut self,
        raw: &BTreeMap<Spanned<String>, Spanned<RawTls>>,
    ) -> BTreeMap<String, TlsSettings> {
        let mut out = BTreeMap::new();
        for (name, t) in raw {
            let t = t.get_ref();
            let s = format!("[tls.{}]", name.get_ref());
            let valid = self.name(&Some(name.clone()), "tls settings");
            let cert = t.cert.as_ref().and_then(|c| self.pem_certs(c, &s, "cert"));
            let key = t.key.as_ref().and_then(|k| self.pem_key(k, &s));
            let policy = self.choice(
                &t.policy,
                &s,
                "policy",
                TlsPolicy::Tls13Pq,
                &[
                    ("tls13-pq", TlsPolicy::Tls13Pq),
                    ("tls12-compat", TlsPolicy::Tls12Compat),
                ],
            );
            let client_ca = t
                .client_ca
                .as_ref()
                .map(|c| self.pem_certs(c, &s, "client_ca"));
            if let (Some(name), Some(cert), Some(key)) = (valid, cert, key) {
                let client_ca = client_ca.flatten();
                out.insert(
                    name.clone(),
                    TlsSettings {
                        name,
                        cert,
                        key,
                        policy,
                        client_ca,
                    },
                );
            }
        }
        out
    }

    fn security_groups(
        &mut self,
        raw: &[Spanned<RawSecurityGroup>],
        ip_sets: &[IpSetSettings],
    ) -> Vec<SecurityGroup> {
        self.unique(
            "security group",
            raw.iter().filter_map(|g| g.get_ref().name.as_ref()),
        );
        let mut out = Vec::new();
        for (i, g) in raw.iter().enumerate() {
            let g = g.get_ref();
            let s = subject("security group", i, &g.name);
            let name = self.name(&g.name, "security group");
            let mut ingress = Vec::new();
            for (j, rule) in g.ingress.iter().flatten().enumerate() {
                let at = rule.span();
                let rule = rule.get_ref();
                let key = format!("ingress rule #{} cidr", j + 1);
                let description = rule.description.as_ref().map(|d| d.get_ref().clone());
                match (&rule.cidr, &rule.ip_set) {
                    (Some(_), Some(set)) => self.report(
                        set.span(),
                        format!("{s}: ingress rule #{} has both cidr and ip_set; write one per rule", j + 1),
                    ),
                    (None, None) => self.report(
                        at.start..at.start,
                        format!("{s}: ingress rule #{} has neither cidr nor ip_set", j + 1),
                    ),
                    (Some(c), None) => {
                        if let Some(cidr) = self.cidr(c, &s, &key) {
                            ingress.push(IngressRule { cidr, description });
                        }
                    }
                    (None, Some(set)) => match ip_sets.iter().find(|i| i.name == *set.get_ref()) {
                        // A set's addresses as they are now; `[protection]` rules follow
                        // its file live, security groups at the next reload.
                        Some(found) => {
                            let description = Some(description.unwrap_or_else(|| {
                                format!("ip_set {}", found.name)
                            }));
                            for cidr in found.cidrs.iter().chain(&found.file_cidrs) {
                                ingress.push(IngressRule {
                                    cidr: *cidr,
                                    description: description.clone(),
                                });
                            }
                        }
                        None => self.report(
                            set.span(),
                            format!("{s}: ingress rule #{} names ip_set '{}', which is not defined in [[ip_sets]]", j + 1, set.get_ref()),
                        ),
                    },
                }
            }
            if let Some(name) = name {
                let description = g.description.as_ref().map(|d| d.get_ref().clone());
                out.push(SecurityGroup {
                    name,
                    description,
                    ingress,
                });
            }
        }
        out
    }

    fn target_groups(&mut self, raw: &[Spanned<RawTargetGroup>]) -> Vec<TargetGroup> {
        self.unique(
            "target group",
            raw.iter().filter_map(|g| g.get_ref().name.as_ref()),
        );
        let mut out = Vec::new();
        for (i, g) in raw.iter().enumerate() {
            let g = g.get_ref();
            let s = subject("target group", i, &g.name);
            let name = self.name(&g.name, "target group");
            let algorithm = self.choice(
                &g.algorithm,
                &s,
                "algorithm",
                Algorithm::RoundRobin,
                &[
                    ("round_robin", Algorithm::RoundRobin),
                    ("least_conn", Algorithm::LeastConn),
                    ("random", Algorithm::Random),
                ],
            );
            let deregistration_delay = self.duration(
                &g.deregistration_delay,
                &s,
                "deregistration_delay",
                Duration::from_secs(300),
                true,
            );
            let health_check = self.health_check(g.health_check.as_ref().map(Spanned::get_ref), &s);
            let connect_timeout = self.duration(
                &g.connect_timeout,
                &s,
                "connect_timeout",
                Duration::from_secs(3),
                false,
            );
            let connect_retries = self.int(&g.connect_retries, &s, "connect_retries", 2, 0, 10);
            let backend_tls = self.choice(
                &g.tls,
                &s,
                "tls",
                BackendTls::Off,
                &[
                    ("off", BackendTls::Off),
                    ("require", BackendTls::Require),
                    ("verify-full", BackendTls::VerifyFull),
                ],
            );
            let backend_ca = g
                .tls_ca
                .as_ref()
                .and_then(|c| self.pem_certs(c, &s, "tls_ca"));
            if backend_tls == BackendTls::VerifyFull && g.tls_ca.is_none() {
                if let Some(t) = &g.tls {
                    self.report(
                        t.span(),
                        format!("{s} has tls = \"verify-full\" but no tls_ca; name the CA file that signs the targets' certificates"),
                    );
                }
            }
            let backend_auth = self.backend_auth(g, &s, backend_tls);
            let targets = g.targets.as_ref().map(|t| self.targets(t, &s));
            if let (Some(name), Some(targets)) = (name, targets) {
                out.push(TargetGroup {
                    name,
                    algorithm,
                    deregistration_delay,
                    proxy_protocol_v2: g.proxy_protocol_v2.as_ref().is_some_and(|p| *p.get_ref()),
                    health_check,
                    fail_open: g.fail_open.as_ref().is_none_or(|f| *f.get_ref()),
                    connect_timeout,
                    connect_retries,
                    backend_tls,
                    backend_ca,
                    backend_auth,
                    targets,
                });
            }
        }
        out
    }

    /// `backend_auth`: the methods a server may ask the gateway for. Cleartext only over
    /// verified TLS, where nobody but the named server can read it.
    fn backend_auth(&mut self, g: &RawTargetGroup, s: &str, tls: BackendTls) -> Vec<BackendAuth> {
        let Some(list) = &g.backend_auth else {
            let mut out = vec![BackendAuth::ScramSha256];
            if tls == BackendTls::VerifyFull {
                out.push(BackendAuth::Password);
            }
            return out;
        };
        if list.get_ref().is_empty() {
            self.report(
                list.span(),
                format!("{s}: backend_auth is empty; list at least one of scram-sha-256, md5, password, none"),
            );
        }
        let mut out = Vec::new();
        for method in list.get_ref() {
            let Some(m) = self.one_of(
                method,
                s,
                "backend_auth method",
                &[
                    ("scram-sha-256", BackendAuth::ScramSha256),
                    ("md5", BackendAuth::Md5),
                    ("password", BackendAuth::Password),
                    ("none", BackendAuth::None),
                ],
            ) else {
                continue;
            };
            if out.contains(&m) {
                self.report(
                    method.span(),
                    format!("{s}: backend_auth lists '{}' twice", m.as_str()),
                );
                continue;
            }
            if m == BackendAuth::Password && tls != BackendTls::VerifyFull {
                self.report(
                    method.span(),
                    format!("{s}: backend_auth lists \"password\" (the vault password in cleartext) but tls is not \"verify-full\"; anyone on the path, or anyone answering at the target's address, would read it. Set tls = \"verify-full\" with tls_ca, or use scram-sha-256"),
                );
                continue;
            }
            out.push(m);
        }
        out
    }

    fn health_check(&mut self, raw: Option<&RawHealthCheck>, group: &str) -> HealthCheck {
        let mut hc = HealthCheck {
            enabled: true,
            protocol: HealthCheckProtocol::Tcp,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            healthy_threshold: 3,
            unhealthy_threshold: 3,
            credential: None,
            database: "postgres".to_string(),
        };
        let Some(raw) = raw else { return hc };
        let s = group;
        hc.enabled = raw.enabled.as_ref().is_none_or(|e| *e.get_ref());
        hc.protocol = self.choice(
            &raw.protocol,
            s,
            "health_check protocol",
            hc.protocol,
            &[
                ("tcp", HealthCheckProtocol::Tcp),
                ("postgres", HealthCheckProtocol::Postgres),
                ("mysql", HealthCheckProtocol::Mysql),
                ("redis", HealthCheckProtocol::Redis),
            ],
        );
        hc.credential = raw.credential.as_ref().map(|c| c.get_ref().clone());
        if matches!(
            hc.protocol,
            HealthCheckProtocol::Mysql | HealthCheckProtocol::Redis
        ) {
            // MySQL logs in without a database unless one is named; Redis has none.
            hc.database = String::new();
        }
        if let Some(db) = &raw.database {
            hc.database = db.get_ref().clone();
        }
        if matches!(
            hc.protocol,
            HealthCheckProtocol::Postgres | HealthCheckProtocol::Mysql
        ) && hc.credential.is_none()
        {
            if let Some(p) = &raw.protocol {
                self.report(
                    p.span(),
                    format!("{s}: health_check protocol \"{}\" logs in to each target; name the vault secret to log in with in health_check credential", if hc.protocol == HealthCheckProtocol::Mysql { "mysql" } else { "postgres" }),
                );
            }
        }
        hc.interval = self.duration(
            &raw.interval,
            s,
            "health_check interval",
            hc.interval,
            false,
        );
        hc.timeout = self.duration(&raw.timeout, s, "health_check timeout", hc.timeout, false);
        hc.healthy_threshold = self.int(
            &raw.healthy_threshold,
            s,
            "health_check healthy_threshold",
            3,
            2,
            10,
        );
        hc.unhealthy_threshold = self.int(
            &raw.unhealthy_threshold,
            s,
            "health_check unhealthy_threshold",
            3,
            2,
            10,
        );
        if hc.timeout >= hc.interval {
            let span = raw
                .timeout
                .as_ref()
                .or(raw.interval.as_ref())
                .map(Spanned::span);
            if let Some(span) = span {
                self.report(
                    span,
                    format!(
                        "{s}: health_check timeout ({}) must be shorter than its interval ({})",
                        show_duration(hc.timeout),
                        show_duration(hc.interval)
                    ),
                );
            }
        }
        hc
    }

    fn targets(&mut self, raw: &Spanned<Vec<Spanned<RawTarget>>>, group: &str) -> Vec<Target> {
        if raw.get_ref().is_empty() {
            self.report(
                raw.span(),
                format!("{group} has no targets; add at least one, e.g. {{ address = \"127.0.0.1:5432\" }}"),
            );
        }
        let mut out: Vec<Target> = Vec::new();
        for t in raw.get_ref() {
            let t = t.get_ref();
            let Some(address) = &t.address else { continue };
            let role = self.choice(
                &t.role,
                group,
                "target role",
                Role::Any,
                &[
                    ("primary", Role::Primary),
                    ("replica", Role::Replica),
                    ("any", Role::Any),
                ],
            );
            let weight = self.int(&t.weight, group, "target weight", 1, 1, 1000);
            let addr = match resolve(address.get_ref()) {
                Ok(a) => a,
                Err(e) => {
                    self.report(
                        address.span(),
                        format!("{group}: target '{}' {e}", address.get_ref()),
                    );
                    continue;
                }
            };
            if let Some(first) = out.iter().find(|o| o.addr == addr) {
                let mut message = format!("{group} lists target '{}' twice", address.get_ref());
                if first.address != *address.get_ref() {
                    message.push_str(&format!(" (as '{}' before)", first.address));
                }
                self.report(address.span(), message);
                continue;
            }
            out.push(Target {
                address: address.get_ref().clone(),
                addr,
                role,
                weight,
            });
        }
        out
    }

    fn listeners(&mut self, raw: &RawConfig, admin: Option<&AdminSettings>) -> Vec<Listener> {
        self.unique(
            "listener",
            raw.listeners
                .iter()
                .filter_map(|l| l.get_ref().name.as_ref()),
        );
        let group_names: Vec<&str> = raw
            .target_groups
            .iter()
            .filter_map(|g| g.get_ref().name.as_ref())
            .map(|n| n.get_ref().as_str())
            .collect();
        let sg_names: Vec<&str> = raw
            .security_groups
            .iter()
            .filter_map(|g| g.get_ref().name.as_ref())
            .map(|n| n.get_ref().as_str())
            .collect();
        let tls_names: Vec<&str> = raw.tls.keys().map(|k| k.get_ref().as_str()).collect();
        let groups_complete = !self.unnamed.contains(&"target group");
        let sgs_complete = !self.unnamed.contains(&"security group");

        let mut binds: Vec<(SocketAddr, String)> = Vec::new();
        if let Some(a) = admin {
            binds.push((a.listen, "the admin listener".to_string()));
        }
        let mut out = Vec::new();
        for (i, l) in raw.listeners.iter().enumerate() {
            let l = l.get_ref();
            let s = subject("listener", i, &l.name);
            let name = self.name(&l.name, "listener");
            let bind = l
                .bind
                .as_ref()
                .and_then(|b| self.socket_addr(b, &s, "bind", "0.0.0.0:6432"));
            if let (Some(addr), Some(b)) = (bind, &l.bind) {
                if let Some((other, who)) =
                    binds.iter().find(|(other, _)| binds_clash(addr, *other))
                {
                    let message = if *other == addr {
                        format!("{s} binds {addr}, which {who} also binds")
                    } else {
                        format!("{s} binds {addr}, which overlaps {who} on {other}")
                    };
                    self.report(b.span(), message);
                }
                binds.push((addr, s.clone()));
            }
            let protocol = self.choice(
                &l.protocol,
                &s,
                "protocol",
                Protocol::Tcp,
                &[
                    ("tcp", Protocol::Tcp),
                    ("tls", Protocol::Tls),
                    ("postgres", Protocol::Postgres),
                    ("mysql", Protocol::Mysql),
                    ("redis", Protocol::Redis),
                    ("http", Protocol::Http),
                ],
            );
            if let (Some(name), Some(p)) = (protocol.front_end_pending(), &l.protocol) {
                self.report(
                    p.span(),
                    format!(
                        "{s}: protocol \"{}\" has no front end yet; use protocol = \"tls\" (or \"tcp\") to relay it as raw bytes, or wait for the {name} front end",
                        protocol.as_str()
                    ),
                );
            }
            if let Some(tg) = &l.target_group {
                if groups_complete && !group_names.contains(&tg.get_ref().as_str()) {
                    let hint = did_you_mean(tg.get_ref(), &group_names);
                    self.report(
                        tg.span(),
                        format!(
                            "{s} names target group '{}', which does not exist{hint}",
                            tg.get_ref()
                        ),
                    );
                }
            }
            let mut security_groups = Vec::new();
            for sg in l.security_groups.iter().flatten() {
                if sgs_complete && !sg_names.contains(&sg.get_ref().as_str()) {
                    let hint = did_you_mean(sg.get_ref(), &sg_names);
                    self.report(
                        sg.span(),
                        format!(
                            "{s} names security group '{}', which does not exist{hint}",
                            sg.get_ref()
                        ),
                    );
                }
                security_groups.push(sg.get_ref().clone());
            }
            let tls = self.tls_mode(l, protocol, &s);
            if let Some(tc) = &l.tls_config {
                if !tls_names.contains(&tc.get_ref().as_str()) {
                    let hint = did_you_mean(tc.get_ref(), &tls_names);
                    self.report(
                        tc.span(),
                        format!(
                            "{s} names tls_config '{}', but there is no [tls.{}] section{hint}",
                            tc.get_ref(),
                            tc.get_ref()
                        ),
                    );
                }
            }
            let proxy_protocol = self.choice(
                &l.proxy_protocol,
                &s,
                "proxy_protocol",
                ProxyProtocolMode::Off,
                &[
                    ("off", ProxyProtocolMode::Off),
                    ("accept", ProxyProtocolMode::Accept),
                ],
            );
            let trusted_proxies: Vec<IpNet> = l
                .trusted_proxies
                .iter()
                .flatten()
                .filter_map(|c| self.cidr(c, &s, "trusted_proxies entry"))
                .collect();
            if proxy_protocol == ProxyProtocolMode::Accept
                && l.trusted_proxies.as_ref().is_none_or(Vec::is_empty)
            {
                if let Some(pp) = &l.proxy_protocol {
                    self.report(
                        pp.span(),
                        format!(
                            "{s} has proxy_protocol = \"accept\" but no trusted_proxies; list the CIDRs allowed to send a PROXY header"
                        ),
                    );
                }
            }
            // Protocol listeners keep idle clients like RDS Proxy (IdleClientTimeout, 30 min;
            // parked, they cost under 1 KiB); raw ones close idle flows like the NLB. Zero:
            // never.
            let idle_default = match protocol {
                Protocol::Tcp | Protocol::Tls => Duration::from_secs(350),
                _ => Duration::from_secs(1800),
            };
            let idle_timeout =
                self.duration(&l.idle_timeout, &s, "idle_timeout", idle_default, true);
            let handshake_timeout = self.duration(
                &l.handshake_timeout,
                &s,
                "handshake_timeout",
                Duration::from_secs(10),
                false,
            );
            let max_connections = self.int(
                &l.max_connections,
                &s,
                "max_connections",
                10_000,
                1,
                u32::MAX,
            );
            let pool = self.pool(l.pool.as_ref().map(Spanned::get_ref), protocol, &s);
            let read_write_split = l.read_write_split.as_ref().is_some_and(|b| *b.get_ref());
            let max_replica_lag = self.duration(
                &l.max_replica_lag,
                &s,
                "max_replica_lag",
                Duration::from_secs(10),
                false,
            );
            let audit_queries = self.choice(
                &l.audit_queries,
                &s,
                "audit_queries",
                QueryAudit::Masked,
                &[
                    ("masked", QueryAudit::Masked),
                    ("off", QueryAudit::Off),
                    ("full", QueryAudit::Full),
                ],
            );
            if let (Some(name), Some(bind), Some(tg)) = (name, bind, &l.target_group) {
                out.push(Listener {
                    name,
                    bind,
                    protocol,
                    target_group: tg.get_ref().clone(),
                    security_groups,
                    tls,
                    tls_config: l.tls_config.as_ref().map(|t| t.get_ref().clone()),
                    proxy_protocol,
                    trusted_proxies,
                    idle_timeout,
                    handshake_timeout,
                    max_connections,
                    pool,
                    read_write_split,
                    max_replica_lag,
                    audit_queries,
                });
            }
        }
        out
    }

    /// `tls` and `tls_config` must agree with the protocol: `tcp` passes bytes through and never
    /// terminates TLS, `tls` always does, protocol listeners do unless `tls = "off"`.
    fn tls_mode(&mut self, l: &RawListener, protocol: Protocol, s: &str) -> TlsMode {
        let modes = [
            ("required", TlsMode::Required),
            ("optional", TlsMode::Optional),
            ("off", TlsMode::Off),
        ];
        match protocol {
            Protocol::Tcp => {
                let mode = self.choice(&l.tls, s, "tls", TlsMode::Off, &modes);
                if let (TlsMode::Required | TlsMode::Optional, Some(t)) = (mode, &l.tls) {
                    self.report(
                        t.span(),
                        format!("{s} has protocol \"tcp\", which passes TLS through untouched; use protocol = \"tls\" to terminate TLS"),
                    );
                }
                if let Some(tc) = &l.tls_config {
                    self.report(
                        tc.span(),
                        format!("{s} names tls_config but has protocol \"tcp\", which does not terminate TLS; use protocol = \"tls\""),
                    );
                }
                TlsMode::Off
            }
            Protocol::Tls => {
                let mode = self.choice(&l.tls, s, "tls", TlsMode::Required, &modes);
                if let (TlsMode::Optional | TlsMode::Off, Some(t)) = (mode, &l.tls) {
                    self.report(
                        t.span(),
                        format!("{s} has protocol \"tls\", which always requires TLS; use protocol = \"tcp\" for plain TCP"),
                    );
                }
                if l.tls_config.is_none() {
                    let span = l.protocol.as_ref().map_or(0..0, Spanned::span);
                    self.report(
                        span,
                        format!(
                            "{s} has protocol \"tls\" but no tls_config; name a [tls.NAME] section"
                        ),
                    );
                }
                TlsMode::Required
            }
            _ => {
                let mode = self.choice(&l.tls, s, "tls", TlsMode::Required, &modes);
                if mode != TlsMode::Off && l.tls_config.is_none() {
                    let (span, how) = match &l.tls {
                        Some(t) => (t.span(), format!("tls = \"{}\"", t.get_ref())),
                        None => (
                            l.protocol.as_ref().map_or(0..0, Spanned::span),
                            format!(
                                "tls = \"required\" (the default for {} listeners)",
                                protocol.as_str()
                            ),
                        ),
                    };
                    self.report(
                        span,
                        format!("{s} has {how} but no tls_config; name a [tls.NAME] section or set tls = \"off\""),
                    );
                }
                mode
            }
        }
    }

    fn pool(&mut self, raw: Option<&RawPool>, protocol: Protocol, s: &str) -> PoolSettings {
        let mut p = PoolSettings::default();
        if protocol == Protocol::Redis {
            // Redis clients are multiplexed unless they ask for session mode (docs/redis.md).
            p.mode = PoolMode::Transaction;
        }
        let Some(raw) = raw else { return p };
        if matches!(protocol, Protocol::Tcp | Protocol::Tls) {
            if let Some(span) = raw.mode.as_ref().map(Spanned::span) {
                self.report(
                    span,
                    format!("{s}: pool settings need a protocol listener (postgres); a {} listener relays bytes and has no pool", protocol.as_str()),
                );
            }
        }
        p.mode = self.choice(&raw.mode, s, "pool mode", p.mode, POOL_MODES);
        p.size = self.int(&raw.size, s, "pool size", p.size, 1, 10_000);
        p.min_idle = self.int(&raw.min_idle, s, "pool min_idle", p.min_idle, 0, 10_000);
        if p.min_idle > p.size {
            if let Some(m) = &raw.min_idle {
                self.report(
                    m.span(),
                    format!(
                        "{s}: pool min_idle ({}) is larger than pool size ({})",
                        p.min_idle, p.size
                    ),
                );
            }
        }
        p.idle_timeout = self.duration(
            &raw.idle_timeout,
            s,
            "pool idle_timeout",
            p.idle_timeout,
            false,
        );
        p.max_lifetime = self.duration(
            &raw.max_lifetime,
            s,
            "pool max_lifetime",
            p.max_lifetime,
            false,
        );
        p.checkout_timeout = self.duration(
            &raw.checkout_timeout,
            s,
            "pool checkout_timeout",
            p.checkout_timeout,
            false,
        );
        p
    }

    fn users(&mut self, raw: &[Spanned<RawUser>]) -> Vec<User> {
        self.unique("user", raw.iter().filter_map(|u| u.get_ref().name.as_ref()));
        let mut out = Vec::new();
        for (i, u) in raw.iter().enumerate() {
            let u = u.get_ref();
            let s = subject("user", i, &u.name);
            let name = self.name(&u.name, "user");
            let mut auth = Vec::new();
            if let Some(list) = &u.auth {
                if list.get_ref().is_empty() {
                    self.report(
                        list.span(),
                        format!("{s}: auth is empty; list at least one of token, password (scram), cert"),
                    );
                }
                for method in list.get_ref() {
                    let Some(m) = self.one_of(
                        method,
                        &s,
                        "auth method",
                        &[
                            ("token", AuthMethod::Token),
                            ("scram", AuthMethod::Scram),
                            ("password", AuthMethod::Scram),
                            ("cert", AuthMethod::Cert),
                        ],
                    ) else {
                        continue;
                    };
                    if auth.contains(&m) {
                        self.report(
                            method.span(),
                            format!("{s}: auth lists '{}' twice", method.get_ref()),
                        );
                    } else {
                        auth.push(m);
                    }
                }
            } else {
                auth.push(AuthMethod::Token);
            }
            let backend_credential = match &u.backend_credential {
                Some(c) if c.get_ref().trim().is_empty() => {
                    self.report(c.span(), format!("{s}: backend_credential is empty"));
                    None
                }
                other => other.as_ref().map(|c| c.get_ref().clone()),
            };
            let mut databases = Vec::new();
            for db in u.databases.iter().flatten() {
                if db.get_ref().is_empty() {
                    self.report(db.span(), format!("{s}: databases lists an empty name"));
                } else {
                    databases.push(db.get_ref().clone());
                }
            }
            let pool_mode = u
                .pool_mode
                .as_ref()
                .and_then(|m| self.one_of(m, &s, "pool_mode", POOL_MODES));
            let admin = u.admin.as_ref().is_some_and(|a| *a.get_ref());
            let redis_acl = u.redis_acl.as_ref().map(|r| r.get_ref().clone());
            if let Some(name) = name {
                out.push(User {
                    name,
                    auth,
                    backend_credential,
                    databases,
                    pool_mode,
                    admin,
                    redis_acl,
                });
            }
        }
        out
    }

    fn ip_sets(&mut self, raw: &[Spanned<RawIpSet>]) -> Vec<IpSetSettings> {
        self.unique(
            "ip set",
            raw.iter().filter_map(|g| g.get_ref().name.as_ref()),
        );
        let mut out = Vec::new();
        for (i, set) in raw.iter().enumerate() {
            let set = set.get_ref();
            let s = subject("ip set", i, &set.name);
            let name = self.name(&set.name, "ip set");
            let mut cidrs = Vec::new();
            for c in set.cidrs.iter().flatten() {
                match parse_net(c.get_ref()) {
                    Ok(net) => cidrs.push(net),
                    Err(e) => self.report(c.span(), format!("{s}: cidrs: {e}")),
                }
            }
            let mut file = None;
            let mut file_cidrs = Vec::new();
            if let Some(f) = &set.file {
                if let Some((path, shown)) = self.path(f, &s, "file") {
                    match std::fs::read_to_string(&path) {
                        Ok(text) => match parse_net_lines(&text) {
                            Ok(nets) => file_cidrs = nets,
                            Err((line, e)) => {
                                self.report(f.span(), format!("{s}: file {shown} line {line}: {e}"))
                            }
                        },
                        Err(e) => self.report(
                            f.span(),
                            format!("{s}: file {shown} {}", cannot_read_io(&e)),
                        ),
                    }
                    file = Some(path);
                }
            }
            if set.cidrs.is_none() && set.file.is_none() {
                let at = set.name.as_ref().map(Spanned::span).unwrap_or(0..0);
                self.report(at, format!("{s} has neither cidrs nor file"));
            }
            if let Some(name) = name {
                out.push(IpSetSettings {
                    name,
                    cidrs,
                    file,
                    file_cidrs,
                });
            }
        }
        out
    }

    fn detection(
        &mut self,
        raw: &Option<Spanned<RawDetection>>,
        name: &str,
        default: Detection,
    ) -> Detection {
        let Some(raw) = raw else { return default };
        let raw = raw.get_ref();
        let s = format!("[protection.{name}]");
        let enabled = raw
            .enabled
            .as_ref()
            .map_or(default.enabled, |e| *e.get_ref());
        let action = self.choice(
            &raw.action,
            &s,
            "action",
            default.action,
            &[("log", ProtectAction::Log), ("block", ProtectAction::Block)],
        );
        let threshold = match &raw.threshold {
            None => default.threshold,
            Some(t) => {
                let parsed = match t.get_ref() {
                    RawSize::Bytes(n) => {
                        u64::try_from(*n).map_err(|_| ValueError(format!("{n} is negative")))
                    }
                    RawSize::Text(text) => parse_size(text),
                };
                match parsed {
                    Ok(n) if n > 0 => n,
                    Ok(_) => {
                        self.report(t.span(), format!("{s}: threshold must be at least 1"));
                        default.threshold
                    }
                    Err(e) => {
                        self.report(t.span(), format!("{s}: threshold {e}"));
                        default.threshold
                    }
                }
            }
        };
        let window = self.duration(
            &raw.window,
            &s,
            "window",
            default.window,
            name == "first_seen",
        );
        Detection {
            enabled,
            action,
            threshold,
            window,
        }
    }

    fn protection(&mut self, raw: &RawProtection, ip_sets: &[IpSetSettings]) -> ProtectionSettings {
        let s = "[protection]";
        let d = ProtectionSettings::default();
        let mut exempt = Vec::new();
        match &raw.exempt {
            None => exempt = d.exempt.clone(),
            Some(list) => {
                for c in list {
                    match parse_net(c.get_ref()) {
                        Ok(net) => exempt.push(net),
                        Err(e) => self.report(c.span(), format!("{s}: exempt: {e}")),
                    }
                }
            }
        }
        let shared = raw.shared.as_ref().and_then(|u| {
            let url = u.get_ref();
            if url.starts_with("redis://") && url.len() > "redis://".len() {
                Some(SharedUrl(url.clone()))
            } else {
                self.report(
                    u.span(),
                    format!("{s}: shared '{url}' is not a redis:// URL such as \"redis://127.0.0.1:6379/0\""),
                );
                None
            }
        });
        let sets = |list: &Option<Vec<Spanned<String>>>, key: &str, this: &mut Self| {
            let mut out = Vec::new();
            for n in list.iter().flatten() {
                if ip_sets.iter().any(|i| i.name == *n.get_ref()) {
                    out.push(n.get_ref().clone());
                } else if !this.unnamed.contains(&"ip set") {
                    this.report(
                        n.span(),
                        format!(
                            "{s}: {key} names ip_set '{}', which is not defined in [[ip_sets]]",
                            n.get_ref()
                        ),
                    );
                }
            }
            out
        };
        let deny_ip_sets = sets(&raw.deny_ip_sets, "deny_ip_sets", self);
        let allow_ip_sets = sets(&raw.allow_ip_sets, "allow_ip_sets", self);
        let geo = raw.geo.as_ref().and_then(|g| {
            let g = g.get_ref();
            let sg = "[protection.geo]";
            let database = g.database.as_ref().and_then(|p| {
                let (path, shown) = self.path(p, sg, "database")?;
                if path.is_file() {
                    Some(path)
                } else {
                    self.report(p.span(), format!("{sg}: database {shown} does not exist"));
                    None
                }
            });
            let countries = |list: &Option<Vec<Spanned<String>>>, key: &str, this: &mut Self| {
                let mut out = Vec::new();
                for c in list.iter().flatten() {
                    let code = c.get_ref();
                    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
                        out.push(code.to_ascii_uppercase());
                    } else {
                        this.report(
                            c.span(),
                            format!("{sg}: {key}: '{code}' is not a two-letter ISO 3166-1 country code such as \"NL\""),
                        );
                    }
                }
                out
            };
            let deny_countries = countries(&g.deny_countries, "deny_countries", self);
            let allow_countries = countries(&g.allow_countries, "allow_countries", self);
            Some(GeoSettings {
                database: database?,
                deny_countries,
                allow_countries,
            })
        });
        let max = u32::MAX;
        ProtectionSettings {
            enabled: raw.enabled.as_ref().map_or(d.enabled, |e| *e.get_ref()),
            exempt,
            shared,
            rate_window: self.duration(&raw.rate_window, s, "rate_window", d.rate_window, false),
            max_connections: self.int(
                &raw.max_connections,
                s,
                "max_connections",
                d.max_connections,
                0,
                max,
            ),
            max_auth_attempts: self.int(
                &raw.max_auth_attempts,
                s,
                "max_auth_attempts",
                d.max_auth_attempts,
                0,
                max,
            ),
            ban_time: self.duration(&raw.ban_time, s, "ban_time", d.ban_time, false),
            max_ban_time: self.duration(
                &raw.max_ban_time,
                s,
                "max_ban_time",
                d.max_ban_time,
                false,
            ),
            ban_memory: self.duration(&raw.ban_memory, s, "ban_memory", d.ban_memory, true),
            max_sources: self.int(
                &raw.max_sources,
                s,
                "max_sources",
                d.max_sources,
                100,
                10_000_000,
            ),
            admin_users: raw
                .admin_users
                .iter()
                .flatten()
                .map(|u| u.get_ref().clone())
                .collect(),
            deny_ip_sets,
            allow_ip_sets,
            geo,
            brute_force: self.detection(&raw.brute_force, "brute_force", d.brute_force),
            password_spray: self.detection(&raw.password_spray, "password_spray", d.password_spray),
            login_after_failures: self.detection(
                &raw.login_after_failures,
                "login_after_failures",
                d.login_after_failures,
            ),
            scan: self.detection(&raw.scan, "scan", d.scan),
            connection_spike: self.detection(
                &raw.connection_spike,
                "connection_spike",
                d.connection_spike,
            ),
            first_seen: self.detection(&raw.first_seen, "first_seen", d.first_seen),
            privilege_change: self.detection(
                &raw.privilege_change,
                "privilege_change",
                d.privilege_change,
            ),
            egress: self.detection(&raw.egress, "egress", d.egress),
            sql_injection: self.detection(&raw.sql_injection, "sql_injection", d.sql_injection),
        }
    }

    fn alarms(&mut self, raw: &[Spanned<RawAlarm>]) -> Vec<AlarmSettings> {
        self.unique(
            "alarm",
            raw.iter().filter_map(|a| a.get_ref().name.as_ref()),
        );
        let mut out = Vec::new();
        for (i, a) in raw.iter().enumerate() {
            let a = a.get_ref();
            let s = subject("alarm", i, &a.name);
            let name = self.name(&a.name, "alarm");
            let metric = a.metric.as_ref().and_then(|m| {
                let text = m.get_ref();
                let ok = !text.is_empty()
                    && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
                    && !text.as_bytes()[0].is_ascii_digit();
                if ok {
                    Some(text.clone())
                } else {
                    self.report(m.span(), format!("{s}: metric '{text}' is not a metric name such as \"sumun_unhealthy_targets\""));
                    None
                }
            });
            let labels = a
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect();
            let statistic = self.choice(
                &a.statistic,
                &s,
                "statistic",
                AlarmStatistic::Maximum,
                &[
                    ("average", AlarmStatistic::Average),
                    ("maximum", AlarmStatistic::Maximum),
                    ("minimum", AlarmStatistic::Minimum),
                    ("increase", AlarmStatistic::Increase),
                ],
            );
            let comparison = a.comparison.as_ref().and_then(|c| {
                self.one_of(
                    c,
                    &s,
                    "comparison",
                    &[
                        (">", AlarmComparison::Greater),
                        (">=", AlarmComparison::GreaterOrEqual),
                        ("<", AlarmComparison::Less),
                        ("<=", AlarmComparison::LessOrEqual),
                        ("GreaterThanThreshold", AlarmComparison::Greater),
                        (
                            "GreaterThanOrEqualToThreshold",
                            AlarmComparison::GreaterOrEqual,
                        ),
                        ("LessThanThreshold", AlarmComparison::Less),
                        ("LessThanOrEqualToThreshold", AlarmComparison::LessOrEqual),
                    ],
                )
            });
            let threshold = a.threshold.as_ref().map(|t| t.get_ref().0);
            let period = self.duration(&a.period, &s, "period", Duration::from_secs(60), false);
            let evaluation_periods =
                self.int(&a.evaluation_periods, &s, "evaluation_periods", 1, 1, 1000);
            let webhook = a.webhook.as_ref().and_then(|w| {
                let url = w.get_ref();
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"))
                    .unwrap_or("");
                if rest.is_empty() || rest.starts_with('/') {
                    self.report(
                        w.span(),
                        format!("{s}: webhook '{url}' is not an http:// or https:// URL"),
                    );
                    None
                } else {
                    Some(url.clone())
                }
            });
            let format = self.choice(
                &a.format,
                &s,
                "format",
                WebhookFormat::Json,
                &[
                    ("json", WebhookFormat::Json),
                    ("slack", WebhookFormat::Slack),
                ],
            );
            if let (Some(name), Some(metric), Some(comparison), Some(threshold), Some(webhook)) =
                (name, metric, comparison, threshold, webhook)
            {
                out.push(AlarmSettings {
                    name,
                    metric,
                    labels,
                    statistic,
                    comparison,
                    threshold,
                    period,
                    evaluation_periods,
                    webhook,
                    format,
                });
            }
        }
        out
    }

    fn flow_logs(&mut self, raw: &RawFlowLogs) -> Option<FlowLogSettings> {
        let s = "[flow_logs]";
        let path = raw.path.as_ref().and_then(|p| self.log_path(p, s));
        let max_size = self.size(&raw.max_size, s, "max_size", 100 << 20);
        let max_files = self.int(&raw.max_files, s, "max_files", 5, 0, 1000);
        let aggregation_interval = self.duration(
            &raw.aggregation_interval,
            s,
            "aggregation_interval",
            Duration::from_secs(60),
            false,
        );
        Some(FlowLogSettings {
            path: path?,
            max_size,
            max_files,
            aggregation_interval,
        })
    }

    fn audit(&mut self, raw: &RawAudit) -> Option<AuditSettings> {
        let s = "[audit]";
        let path = raw.path.as_ref().and_then(|p| self.log_path(p, s));
        let max_size = self.size(&raw.max_size, s, "max_size", 100 << 20);
        let max_files = self.int(&raw.max_files, s, "max_files", 5, 0, 1000);
        Some(AuditSettings {
            path: path?,
            max_size,
            max_files,
        })
    }
}

const POOL_MODES: &[(&str, PoolMode)] = &[
    ("session", PoolMode::Session),
    ("transaction", PoolMode::Transaction),
];

/// An address (`198.51.100.7`, taken as a host network) or a CIDR (`203.0.113.0/24`; host bits
/// are cleared).
pub fn parse_net(text: &str) -> Result<IpNet, ValueError> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => Err(ValueError(format!(
            "'{text}' is not an address or CIDR such as \"203.0.113.0/24\""
        ))),
    }
}

/// An IP set file: one address or CIDR a line; blank lines and `#` comments are skipped.
/// On error, the 1-based line and what is wrong with it.
pub fn parse_net_lines(text: &str) -> Result<Vec<IpNet>, (usize, ValueError)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(parse_net(line).map_err(|e| (i + 1, e))?);
    }
    Ok(out)
}

fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    crate::raw::suggest(word, candidates)
        .map(|s| format!("; did you mean '{s}'?"))
        .unwrap_or_default()
}

/// Two listening sockets collide when they share a port and either the address or a wildcard
/// covering the other (`0.0.0.0` covers IPv4, `[::]` covers both). Port 0 never collides.
fn binds_clash(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let covers = |x: IpAddr, y: IpAddr| x.is_unspecified() && (x.is_ipv6() || y.is_ipv4());
    a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip())
}

/// Resolve `host:port` (or `[v6]:port`) to its first address.
fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err("has port 0; name the port the backend listens on".into());
        }
        return Ok(a);
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err("has no port; write it as host:port".into());
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("has no host; write it as host:port".into());
    }
    let port: u16 = match port.parse() {
        Ok(p) if p != 0 => p,
        _ => {
            return Err(format!(
                "has port '{port}', which is not a number from 1 to 65535"
            ))
        }
    };
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| "resolves to no address".to_string()),
        Err(e) => Err(format!("does not resolve: {e}")),
    }
}

fn cannot_read(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(io) => cannot_read_io(io),
        other => format!("cannot be read: {}", pem_error(other)),
    }
}

fn cannot_read_io(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        "does not exist".to_string()
    } else {
        format!("cannot be read: {e}")
    }
}

fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a block has no -----END line".to_string(),
        pem::Error::IllegalSectionStart { .. } => "a -----BEGIN line is malformed".to_string(),
        pem::Error::Base64Decode(_) => "a block is not valid base64".to_string(),
        other => other.to_string(),
    }
}

/// `1500ms` -> "1500ms", `120s` -> "2m": the shortest exact form, as a user would write it.
fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if s >= size && s.is_multiple_of(size) {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("5 minutes").map_err(|e| e.to_string()),
            Err("'5 minutes' is not a duration; write a whole number and a unit (ms, s, m, h or d), e.g. \"30s\" or \"1h30m\"".to_string())
        );
        assert_eq!(
            parse_duration("30").map_err(|e| e.to_string()),
            Err("'30' has no unit; write \"30s\" for seconds".to_string())
        );
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("10 parsecs").is_err());
    }

    #[test]
    fn bind_clashes() {
        let a = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert!(binds_clash(a("0.0.0.0:80"), a("127.0.0.1:80")));
        assert!(binds_clash(a("[::]:80"), a("127.0.0.1:80")));
        assert!(!binds_clash(a("0.0.0.0:80"), a("[::1]:80")));
        assert!(!binds_clash(a("127.0.0.1:0"), a("127.0.0.1:0")));
        assert!(!binds_clash(a("127.0.0.1:80"), a("127.0.0.2:80")));
    }

    #[test]
    fn durations_shown_shortest() {
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show_duration(Duration::from_secs(120)), "2m");
        assert_eq!(show_duration(Duration::from_secs(45)), "45s");
    }
}
