//! [`FlowRecord`]: the fields of the AWS VPC flow log default format (version 2) and its exact
//! line form. Custom formats and extra fields are the business of [`crate::Reader`]; this
//! module knows only the fourteen default fields, in their default order.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use crate::format::Field;

/// One flow log record: a connection (or one aggregation interval of a long one) between two
/// endpoints, as AWS VPC flow logs describe it.
///
/// For `NODATA` and `SKIPDATA` records the traffic fields (`srcaddr` through `bytes`, and
/// `action`) carry no information: AWS writes `-` for them. They then read as the unspecified
/// address, zero and [`Action::Accept`], and are written back as `-`; a query layer should treat
/// them as missing unless `log_status` is [`LogStatus::Ok`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    /// The highest format version of the fields in use; 2 for the default format, which is
    /// what the gateway writes.
    pub version: u8,
    /// The AWS account that owns the interface. In Sumun: the gateway's name, so logs from
    /// several gateways can be merged.
    pub account_id: String,
    /// The network interface the traffic went through. In Sumun: the listener's name.
    pub interface_id: String,
    /// The client: the real one, after a trusted PROXY header, not the load balancer.
    pub srcaddr: IpAddr,
    /// The address the client connected to.
    pub dstaddr: IpAddr,
    pub srcport: u16,
    pub dstport: u16,
    /// The IANA protocol number; 6 (TCP) for everything the gateway relays.
    pub protocol: u8,
    /// Packets in the interval. AWS counts IP packets; the gateway cannot see those, so it
    /// counts socket reads and writes as segments. Compare orders of magnitude, not values.
    pub packets: u64,
    /// Bytes in the interval, both directions. The gateway counts payload bytes relayed, not
    /// IP bytes, so headers and retransmissions are not included.
    pub bytes: u64,
    /// Start of the interval, Unix seconds.
    pub start: u64,
    /// End of the interval, Unix seconds.
    pub end: u64,
    pub action: Action,
    pub log_status: LogStatus,
}

/// Whether the traffic was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Accept,
    /// In Sumun: refused by a security group (or another admission rule) before any byte
    /// reached a target.
    Reject,
}

/// Whether the record holds data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStatus {
    Ok,
    /// No traffic in the interval.
    NoData,
    /// Records were skipped in the interval (AWS: capacity or an internal error).
    SkipData,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "ACCEPT",
            Action::Reject => "REJECT",
        }
    }
}

impl LogStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Ok => "OK",
            LogStatus::NoData => "NODATA",
            LogStatus::SkipData => "SKIPDATA",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for LogStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = FlowParseError;

    fn from_str(s: &str) -> Result<Self, FlowParseError> {
        match s {
            "ACCEPT" => Ok(Action::Accept),
            "REJECT" => Ok(Action::Reject),
            _ => Err(invalid(Field::Action, s, "ACCEPT or REJECT")),
        }
    }
}

impl FromStr for LogStatus {
    type Err = FlowParseError;

    fn from_str(s: &str) -> Result<Self, FlowParseError> {
        match s {
            "OK" => Ok(LogStatus::Ok),
            "NODATA" => Ok(LogStatus::NoData),
            "SKIPDATA" => Ok(LogStatus::SkipData),
            _ => Err(invalid(Field::LogStatus, s, "OK, NODATA or SKIPDATA")),
        }
    }
}

/// Why a line is not a flow record. Messages name the field and quote (a bounded part of) the
/// value, so a user can find the bad line in a large file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowParseError {
    #[error("empty flow log line")]
    Empty,
    #[error("expected {expected} fields, found {found}")]
    FieldCount { expected: usize, found: usize },
    #[error("invalid {field} '{value}': expected {expected}")]
    Invalid {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{field} is '-' in a record whose log-status is OK")]
    Missing { field: &'static str },
}

/// Values quoted in errors are cut to this many characters: a binary file fed to the parser
/// must not produce megabyte-long messages.
const QUOTE_MAX: usize = 40;

pub(crate) fn invalid(field: Field, value: &str, expected: &'static str) -> FlowParseError {
    let value = match value.char_indices().nth(QUOTE_MAX) {
        Some((cut, _)) => format!("{}...", &value[..cut]),
        None => value.to_string(),
    };
    FlowParseError::Invalid {
        field: field.static_name(),
        value,
        expected,
    }
}

impl FlowRecord {
    /// Appends the record as one default-format line, without a newline.
    pub fn write_line(&self, out: &mut String) {
        use fmt::Write as _;
        // Writing into a String cannot fail.
        let _ = write!(out, "{self}");
    }

    /// A record with every field at its "missing" value, for formats that leave fields out.
    pub(crate) fn blank() -> FlowRecord {
        FlowRecord {
            version: 2,
            account_id: String::new(),
            interface_id: String::new(),
            srcaddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dstaddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            srcport: 0,
            dstport: 0,
            protocol: 0,
            packets: 0,
            bytes: 0,
            start: 0,
            end: 0,
            action: Action::Accept,
            log_status: LogStatus::Ok,
        }
    }

    /// Back to [`FlowRecord::blank`], keeping the strings' capacity.
    pub(crate) fn reset(&mut self) {
        let mut account_id = std::mem::take(&mut self.account_id);
        let mut interface_id = std::mem::take(&mut self.interface_id);
        account_id.clear();
        interface_id.clear();
        *self = FlowRecord {
            account_id,
            interface_id,
            ..FlowRecord::blank()
        };
    }

    /// Sets one of the default fields from its text; `allow_missing` says whether `-` may stand
    /// for a missing value (it may unless the record's log-status is known to be OK).
    pub(crate) fn set(
        &mut self,
        field: &Field,
        value: &str,
        allow_missing: bool,
    ) -> Result<(), FlowParseError> {
        if value == "-" {
            return match field {
                // Identifiers are kept verbatim: "-" is a faithful value for them.
                Field::AccountId => {
                    self.account_id.push_str(value);
                    Ok(())
                }
                Field::InterfaceId => {
                    self.interface_id.push_str(value);
                    Ok(())
                }
                Field::Other(_) => Ok(()),
                _ if allow_missing => Ok(()),
                _ => Err(FlowParseError::Missing {
                    field: field.static_name(),
                }),
            };
        }
        match field {
            Field::Version => self.version = number(field, value)?,
            // Called after `reset`, so pushing sets the value and reuses the buffer.
            Field::AccountId => {
                self.account_id.clear();
                self.account_id.push_str(value);
            }
            Field::InterfaceId => {
                self.interface_id.clear();
                self.interface_id.push_str(value);
            }
            Field::SrcAddr => self.srcaddr = ip(field, value)?,
            Field::DstAddr => self.dstaddr = ip(field, value)?,
            Field::SrcPort => self.srcport = number(field, value)?,
            Field::DstPort => self.dstport = number(field, value)?,
            Field::Protocol => self.protocol = number(field, value)?,
            Field::Packets => self.packets = number(field, value)?,
            Field::Bytes => self.bytes = number(field, value)?,
            Field::Start => self.start = number(field, value)?,
            Field::End => self.end = number(field, value)?,
            Field::Action => self.action = value.parse()?,
            Field::LogStatus => self.log_status = value.parse()?,
            Field::Other(_) => {}
        }
        Ok(())
    }
}

/// Unsigned decimal numbers only: `str::parse` would also take a leading `+`, which no flow
/// log writes and which would make the round trip lossy. Digits are accumulated by hand (this is
/// the hottest code of a flow log read).
fn number<T: TryFrom<u64>>(field: &Field, value: &str) -> Result<T, FlowParseError> {
    let expected = || match field {
        Field::Version | Field::Protocol => "a number from 0 to 255",
        Field::SrcPort | Field::DstPort => "a port from 0 to 65535",
        _ => "an unsigned integer",
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 20 {
        return Err(invalid(field.clone(), value, expected()));
    }
    let mut n: u64 = 0;
    for &b in bytes {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return Err(invalid(field.clone(), value, expected()));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(digit)))
            .ok_or_else(|| invalid(field.clone(), value, expected()))?;
    }
    T::try_from(n).map_err(|_| invalid(field.clone(), value, expected()))
}

fn ip(field: &Field, value: &str) -> Result<IpAddr, FlowParseError> {
    if let Some(v4) = dotted_quad(value.as_bytes()) {
        return Ok(IpAddr::V4(v4));
    }
    value
        .parse()
        .map_err(|_| invalid(field.clone(), value, "an IP address"))
}

/// The common case of [`ip`], by hand: four decimal octets, 0-255, no leading zeros. Whatever
/// it accepts the standard parser accepts with the same value; whatever it refuses goes to the
/// standard parser.
fn dotted_quad(b: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        let start = i;
        let mut v: u32 = 0;
        while let Some(d) = b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|d| *d <= 9) {
            v = v * 10 + u32::from(d);
            i += 1;
            if i - start > 3 {
                return None;
            }
        }
        let len = i - start;
        if len == 0 || v > 255 || (len > 1 && b[start] == b'0') {
            return None;
        }
        *octet = v as u8;
        if n < 3 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    (i == b.len()).then(|| Ipv4Addr::from(octets))
}

impl fmt::Display for FlowRecord {
    /// The default-format line. Traffic fields of NODATA and SKIPDATA records are written as
    /// `-`, as AWS does, so such records survive a round trip unchanged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} ",
            self.version, self.account_id, self.interface_id
        )?;
        if self.log_status == LogStatus::Ok {
            write!(
                f,
                "{} {} {} {} {} {} {} ",
                self.srcaddr,
                self.dstaddr,
                self.srcport,
                self.dstport,
                self.protocol,
                self.packets,
                self.bytes
            )?;
            write!(f, "{} {} {} ", self.start, self.end, self.action)?;
        } else {
            f.write_str("- - - - - - - ")?;
            write!(f, "{} {} - ", Dash(self.start), Dash(self.end))?;
        }
        f.write_str(self.log_status.as_str())
    }
}

/// A time of a record without data: 0 means it was `-` when read.
struct Dash(u64);

impl fmt::Display for Dash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("-"),
            n => write!(f, "{n}"),
        }
    }
}

/// Parses one line in the default (version 2) format: fourteen fields separated by spaces.
/// Use [`crate::Reader`] for files that may start with a header line naming other fields.
pub fn parse_line(line: &str) -> Result<FlowRecord, FlowParseError> {
    crate::Format::default_v2()
        .parse(line)
        .map(|flow| flow.record)
}

impl FromStr for FlowRecord {
    type Err = FlowParseError;

    fn from_str(line: &str) -> Result<Self, FlowParseError> {
        parse_line(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_quad_agrees_with_the_standard_parser() {
        let mut cases: Vec<String> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.1.7",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.",
            "1.2.3.4.5",
            "1..2.3",
            "",
            "1.2.3.4 ",
            "-1.2.3.4",
            "1.2.3.0004",
            "1000.1.1.1",
            "::1",
            "2001:db8::7",
            "::ffff:1.2.3.4",
            "1.2.3.a",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Random strings over the characters that matter (a fixed linear congruential
        // sequence).
        let mut x: u64 = 20;
        let mut next = |n: u64| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % n
        };
        let alphabet = b"0123456789..:a";
        for _ in 0..50_000 {
            let len = next(16);
            cases.push(
                (0..len)
                    .map(|_| char::from(alphabet[next(alphabet.len() as u64) as usize]))
                    .collect(),
            );
        }
        // Dotted quads of 1-4 digit parts (leading zeros and values over 255 included).
        for _ in 0..20_000 {
            let parts: Vec<String> = (0..4)
                .map(|_| {
                    (0..1 + next(4))
                        .map(|_| char::from(b'0' + next(10) as u8))
                        .collect()
                })
                .collect();
            cases.push(parts.join("."));
        }
        let mut quads = 0;
        for c in cases {
            let std = c.parse::<IpAddr>().ok();
            assert_eq!(ip(&Field::SrcAddr, &c).ok(), std, "{c:?}");
            if let Some(v4) = dotted_quad(c.as_bytes()) {
                assert_eq!(Some(IpAddr::V4(v4)), std, "{c:?}");
                quads += 1;
            }
        }
        assert!(quads > 1000, "{quads}");
    }
}
