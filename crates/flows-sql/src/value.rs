//! Values and their types. Addresses are kept as [`IpAddr`] (users see them as `varchar`, as in
//! Athena's table, but comparing and hashing them as addresses is what makes a scan fast);
//! timestamps are milliseconds since the Unix epoch, UTC, as Trino's `timestamp(3)`.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    /// The type of a bare `NULL`: fits anywhere.
    Unknown,
    Bool,
    Int,
    Float,
    Str,
    /// A `varchar` that holds an IP address.
    Ip,
    Timestamp,
    Date,
    Interval,
}

impl Type {
    /// The name shown to users, as Trino spells it.
    pub fn sql_name(self) -> &'static str {
        match self {
            Type::Unknown => "unknown",
            Type::Bool => "boolean",
            Type::Int => "bigint",
            Type::Float => "double",
            Type::Str | Type::Ip => "varchar",
            Type::Timestamp => "timestamp",
            Type::Date => "date",
            Type::Interval => "interval day to second",
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, Type::Int | Type::Float | Type::Unknown)
    }

    pub fn is_text(self) -> bool {
        matches!(self, Type::Str | Type::Ip | Type::Unknown)
    }
}

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
    Ip(IpAddr),
    /// Milliseconds since the epoch.
    Timestamp(i64),
    /// Days since the epoch.
    Date(i64),
    /// Milliseconds.
    Interval(i64),
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(Arc::from(s))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The text of a string-typed value (an address is formatted).
    pub fn text(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Value::Str(s) => Some(std::borrow::Cow::Borrowed(s)),
            Value::Ip(ip) => Some(std::borrow::Cow::Owned(ip.to_string())),
            _ => None,
        }
    }

    /// SQL comparison for ORDER BY, min and max: values of one type, NULL handled by callers.
    /// Numbers compare across Int and Float; addresses compare as the text users see.
    pub fn cmp_sql(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Greater,
            (_, Value::Null) => Ordering::Less,
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Int(a), Value::Float(b)) => (*a as f64).total_cmp(b),
            (Value::Float(a), Value::Int(b)) => a.total_cmp(&(*b as f64)),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (Value::Ip(a), Value::Ip(b)) => cmp_ip_text(a, b),
            (Value::Timestamp(a), Value::Timestamp(b))
            | (Value::Date(a), Value::Date(b))
            | (Value::Interval(a), Value::Interval(b)) => a.cmp(b),
            (Value::Timestamp(a), Value::Date(b)) => a.cmp(&(b * 86_400_000)),
            (Value::Date(a), Value::Timestamp(b)) => (a * 86_400_000).cmp(b),
            (a, b) => match (a.text(), b.text()) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => rank(a).cmp(&rank(b)),
            },
        }
    }

    /// SQL equality of two non-null values.
    pub fn eq_sql(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Ip(a), Value::Ip(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            _ => self.cmp_sql(other) == Ordering::Equal,
        }
    }
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 9,
        Value::Bool(_) => 0,
        Value::Int(_) | Value::Float(_) => 1,
        Value::Str(_) | Value::Ip(_) => 2,
        Value::Timestamp(_) | Value::Date(_) => 3,
        Value::Interval(_) => 4,
    }
}

/// Addresses in the order of their text ('10.0.0.10' before '10.0.0.9'), as a `varchar`
/// column sorts in Athena and DuckDB. Formatted into stack buffers: no allocation.
fn cmp_ip_text(a: &IpAddr, b: &IpAddr) -> Ordering {
    if let (IpAddr::V4(x), IpAddr::V4(y)) = (a, b) {
        // '.' sorts before every digit, so the texts compare as their octets' decimal
        // strings do, one octet after the other.
        for (p, q) in x.octets().iter().zip(y.octets().iter()) {
            let o = decimal(*p).cmp(decimal(*q));
            if o != Ordering::Equal {
                return o;
            }
        }
        return Ordering::Equal;
    }
    let mut x = IpText::default();
    let mut y = IpText::default();
    let _ = write!(x, "{a}");
    let _ = write!(y, "{b}");
    x.as_bytes().cmp(y.as_bytes())
}

/// The decimal text of an octet, without formatting.
fn decimal(n: u8) -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| (0..=255u16).map(|i| i.to_string()).collect());
    t.get(usize::from(n)).map_or(&[][..], |s| s.as_bytes())
}

/// A fixed buffer long enough for any IPv6 address text.
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl Default for IpText {
    fn default() -> Self {
        IpText {
            buf: [0; 48],
            len: 0,
        }
    }
}

impl IpText {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Grouping equality: NULL equals NULL (one group), numbers by value, floats by bits.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Ip(a), Value::Ip(b)) => a == b,
            (Value::Timestamp(a), Value::Timestamp(b)) => a == b,
            (Value::Date(a), Value::Date(b)) => a == b,
            (Value::Interval(a), Value::Interval(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Value::Null => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(n) | Value::Timestamp(n) | Value::Date(n) | Value::Interval(n) => {
                n.hash(state)
            }
            Value::Float(f) => f.to_bits().hash(state),
            Value::Str(s) => s.hash(state),
            Value::Ip(ip) => ip.hash(state),
        }
    }
}

// ---- calendar ----------------------------------------------------------------------------

/// Days since 1970-01-01 of a proleptic Gregorian date (the usual era-based computation).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number: (year, month 1-12, day 1-31).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Timestamps are limited to years 0-9999 so that every conversion stays in range.
pub const MAX_MS: i64 = 253_402_300_799_999;
pub const MIN_MS: i64 = -62_167_219_200_000;

pub fn format_timestamp(ms: i64, out: &mut String) {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    );
}

pub fn format_date(days: i64, out: &mut String) {
    let (y, mo, d) = civil_from_days(days);
    let _ = write!(out, "{y:04}-{mo:02}-{d:02}");
}

fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let mut parts = s.splitn(3, '-');
    let y = digits(parts.next()?.as_bytes())?;
    let m = digits(parts.next()?.as_bytes())?;
    let d = digits(parts.next()?.as_bytes())?;
    if !(0..=9999).contains(&y) || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m as u32, d as u32))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.fff]]][Z]`.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z').trim_end_matches(" UTC");
    let (date, time) = match s.find([' ', 'T']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let days = parse_date(date)?;
    let mut ms = 0;
    if let Some(time) = time {
        let (hms, frac) = match time.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (time, None),
        };
        let mut parts = hms.split(':');
        let h = digits(parts.next()?.as_bytes())?;
        let mi = digits(parts.next()?.as_bytes())?;
        let sec = match parts.next() {
            Some(p) => digits(p.as_bytes())?,
            None => 0,
        };
        if parts.next().is_some() || h > 23 || mi > 59 || sec > 59 {
            return None;
        }
        ms = ((h * 60 + mi) * 60 + sec) * 1000;
        if let Some(frac) = frac {
            let f = frac.as_bytes();
            if f.is_empty() || f.len() > 9 || !f.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let mut v = 0;
            for i in 0..3 {
                v = v * 10 + f.get(i).map_or(0, |b| i64::from(b - b'0'));
            }
            ms += v;
        }
    }
    Some(days * 86_400_000 + ms)
}

/// Renders a value as text for the table and CSV outputs (NULL is the caller's business).
pub fn render(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("NULL"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Float(f) => render_float(*f, out),
        Value::Str(s) => out.push_str(s),
        Value::Ip(ip) => {
            let _ = write!(out, "{ip}");
        }
        Value::Timestamp(ms) => format_timestamp(*ms, out),
        Value::Date(d) => format_date(*d, out),
        Value::Interval(ms) => {
            let sign = if *ms < 0 { "-" } else { "" };
            let a = ms.unsigned_abs();
            let _ = write!(
                out,
                "{sign}{} {:02}:{:02}:{:02}.{:03}",
                a / 86_400_000,
                a / 3_600_000 % 24,
                a / 60_000 % 60,
                a / 1000 % 60,
                a % 1000
            );
        }
    }
}

pub fn render_float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else if f == f.trunc() && f.abs() < 1e16 {
        let _ = write!(out, "{f:.1}");
    } else {
        let _ = write!(out, "{f}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        for d in [-719_468, -1, 0, 1, 10_957, 19_723, 2_932_896] {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
        assert_eq!(parse_date("2024-01-01"), Some(19_723));
        assert_eq!(parse_date("2024-02-30"), None);
        assert_eq!(
            parse_timestamp("2024-01-01 12:00:01.5"),
            Some(19_723 * 86_400_000 + 43_201_500)
        );
        let mut s = String::new();
        format_timestamp(19_723 * 86_400_000 + 43_201_500, &mut s);
        assert_eq!(s, "2024-01-01 12:00:01.500");
    }

    #[test]
    fn addresses_sort_as_text() {
        let a = Value::Ip("10.0.0.10".parse().unwrap());
        let b = Value::Ip("10.0.0.9".parse().unwrap());
        assert_eq!(a.cmp_sql(&b), Ordering::Less);
        assert!(a.eq_sql(&Value::str("10.0.0.10")));
        let mut ips: Vec<IpAddr> = Vec::new();
        for x in [0u8, 1, 2, 9, 10, 19, 20, 99, 100, 101, 199, 200, 255] {
            for y in [0u8, 1, 10, 100, 255] {
                ips.push(IpAddr::from([x, y, y, x]));
                ips.push(IpAddr::from([y, x, 1, 0]));
            }
        }
        for p in &ips {
            for q in &ips {
                assert_eq!(
                    cmp_ip_text(p, q),
                    p.to_string().cmp(&q.to_string()),
                    "{p} {q}"
                );
            }
        }
    }
}
