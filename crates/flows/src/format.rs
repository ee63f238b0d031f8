//! Which fields a flow log line holds, and in what order. AWS writes the default format
//! without a header; logs delivered to S3 (and custom formats anywhere) start with a header line
//! naming the fields, e.g. `version vpc-id srcaddr dstaddr ... log-status tcp-flags`.
//!
//! A [`Format`] turns a line into a [`Flow`]: the fourteen default fields go into its
//! [`FlowRecord`], any other field is kept by name as text, since this crate does not need to
//! understand `tcp-flags` or `pkt-srcaddr` to carry them to a query.

use std::collections::BTreeMap;
use std::fmt;

use crate::reader::Flow;
use crate::record::{FlowParseError, FlowRecord, LogStatus};

/// A flow log field name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Version,
    AccountId,
    InterfaceId,
    SrcAddr,
    DstAddr,
    SrcPort,
    DstPort,
    Protocol,
    Packets,
    Bytes,
    Start,
    End,
    Action,
    LogStatus,
    /// Any other field (`vpc-id`, `tcp-flags`, `pkt-srcaddr`, ...), by its canonical name.
    Other(String),
}

/// The default fields in default order, with their names.
const DEFAULT: [(Field, &str); 14] = [
    (Field::Version, "version"),
    (Field::AccountId, "account-id"),
    (Field::InterfaceId, "interface-id"),
    (Field::SrcAddr, "srcaddr"),
    (Field::DstAddr, "dstaddr"),
    (Field::SrcPort, "srcport"),
    (Field::DstPort, "dstport"),
    (Field::Protocol, "protocol"),
    (Field::Packets, "packets"),
    (Field::Bytes, "bytes"),
    (Field::Start, "start"),
    (Field::End, "end"),
    (Field::Action, "action"),
    (Field::LogStatus, "log-status"),
];

/// Fields AWS added in format versions 3 to 8. A header line is recognised by containing at
/// least one known name, so this list only needs to be good enough to tell headers from data.
const KNOWN_EXTRA: &[&str] = &[
    "vpc-id",
    "subnet-id",
    "instance-id",
    "tcp-flags",
    "type",
    "pkt-srcaddr",
    "pkt-dstaddr",
    "region",
    "az-id",
    "sublocation-type",
    "sublocation-id",
    "pkt-src-aws-service",
    "pkt-dst-aws-service",
    "flow-direction",
    "traffic-path",
    "ecs-cluster-arn",
    "ecs-cluster-name",
    "ecs-container-instance-arn",
    "ecs-container-instance-id",
    "ecs-container-id",
    "ecs-second-container-id",
    "ecs-service-name",
    "ecs-task-definition-arn",
    "ecs-task-arn",
    "ecs-task-id",
    "reject-reason",
];

impl Field {
    /// Reads a field name as written in a header (`log-status`) or in an Athena/Glue schema
    /// (`log_status`); `${...}` from a format string is accepted too.
    pub fn from_name(name: &str) -> Result<Field, FormatError> {
        let name = name
            .strip_prefix("${")
            .and_then(|n| n.strip_suffix('}'))
            .unwrap_or(name);
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(FormatError::BadName(quote(name)));
        }
        let canonical = name.replace('_', "-");
        Ok(DEFAULT
            .iter()
            .find(|(_, n)| *n == canonical)
            .map(|(f, _)| f.clone())
            .unwrap_or(Field::Other(canonical)))
    }

    pub fn name(&self) -> &str {
        match self {
            Field::Other(name) => name,
            known => known.static_name(),
        }
    }

    /// The name of a default field; `other` for the rest (used where only a `'static` name
    /// fits, such as error values).
    pub(crate) fn static_name(&self) -> &'static str {
        DEFAULT
            .iter()
            .find(|(f, _)| f == self)
            .map(|(_, n)| *n)
            .unwrap_or("other")
    }

    fn is_known(&self) -> bool {
        match self {
            Field::Other(name) => KNOWN_EXTRA.contains(&name.as_str()),
            _ => true,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a header line cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("empty flow log header")]
    Empty,
    #[error("invalid field name '{0}' in flow log header")]
    BadName(String),
    #[error("field '{0}' appears twice in flow log header")]
    Duplicate(String),
}

fn quote(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The fields of a line, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    fields: Vec<Field>,
    /// Where log-status is, because it decides whether `-` is acceptable in the other fields.
    log_status: Option<usize>,
}

impl Default for Format {
    fn default() -> Self {
        Format::default_v2()
    }
}

impl Format {
    /// `version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes
    /// start end action log-status`, what the gateway writes and AWS's default.
    pub fn default_v2() -> Format {
        Format {
            fields: DEFAULT.iter().map(|(f, _)| f.clone()).collect(),
            log_status: Some(DEFAULT.len() - 1),
        }
    }

    /// A format from its fields, in line order.
    pub fn new(fields: Vec<Field>) -> Result<Format, FormatError> {
        if fields.is_empty() {
            return Err(FormatError::Empty);
        }
        for (i, f) in fields.iter().enumerate() {
            if fields.get(..i).is_some_and(|before| before.contains(f)) {
                return Err(FormatError::Duplicate(f.name().to_string()));
            }
        }
        let log_status = fields.iter().position(|f| *f == Field::LogStatus);
        Ok(Format { fields, log_status })
    }

    /// Reads a header line such as `version srcaddr dstaddr action log-status vpc-id`, or an
    /// AWS format string such as `${version} ${srcaddr} ...`.
    pub fn from_header(line: &str) -> Result<Format, FormatError> {
        let fields = line
            .split_ascii_whitespace()
            .map(Field::from_name)
            .collect::<Result<Vec<_>, _>>()?;
        Format::new(fields)
    }

    /// Whether `line` is a header rather than a record: every token is a field name and at
    /// least one is a name AWS uses. Record lines always hold a number, an address or an
    /// upper-case word (`ACCEPT`, `OK`), none of which is a valid name.
    pub fn is_header(line: &str) -> bool {
        let mut any_known = false;
        for token in line.split_ascii_whitespace() {
            match Field::from_name(token) {
                Ok(field) => any_known |= field.is_known(),
                Err(_) => return false,
            }
        }
        any_known
    }

    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Parses one line of this format, keeping fields other than the default ones in
    /// [`Flow::extra`]. Default fields missing from the format keep [`FlowRecord`]'s blank
    /// values (empty text, unspecified address, zero).
    pub fn parse(&self, line: &str) -> Result<Flow, FlowParseError> {
        self.parse_with(line, true)
    }

    pub(crate) fn parse_with(&self, line: &str, keep_extra: bool) -> Result<Flow, FlowParseError> {
        let mut flow = Flow {
            record: FlowRecord::blank(),
            extra: BTreeMap::new(),
        };
        self.parse_into(line, keep_extra, &mut flow)?;
        Ok(flow)
    }

    /// Parses `line` into `flow`, reusing its strings and extra-field map (the reader's hot
    /// path: no allocation per line once the first line of a format has been read). On error
    /// `flow` holds partial values and must not be used.
    pub(crate) fn parse_into(
        &self,
        line: &str,
        keep_extra: bool,
        flow: &mut Flow,
    ) -> Result<(), FlowParseError> {
        // One pass over the tokens into a stack array (a heap one for very wide formats), then
        // the fields are set from it: no allocation per line.
        const STACK: usize = 32;
        let mut stack = [""; STACK];
        let mut heap: Vec<&str> = Vec::new();
        let wide = self.fields.len() > STACK;
        let mut found = 0;
        for value in tokens(line) {
            if found < self.fields.len() {
                if wide {
                    heap.push(value);
                } else {
                    stack[found] = value;
                }
            }
            found += 1;
        }
        if found == 0 {
            return Err(FlowParseError::Empty);
        }
        if found != self.fields.len() {
            return Err(FlowParseError::FieldCount {
                expected: self.fields.len(),
                found,
            });
        }
        let values: &[&str] = if wide { &heap } else { &stack[..found] };
        flow.record.reset();
        // log-status first: `-` stands for "no value" only in records that are not OK (or in
        // formats that do not say).
        let status = match self.log_status.and_then(|i| values.get(i)) {
            Some(text) => Some(text.parse::<LogStatus>()?),
            None => None,
        };
        let allow_missing = status != Some(LogStatus::Ok);
        if !keep_extra {
            flow.extra.clear();
        }
        for (field, value) in self.fields.iter().zip(values) {
            match field {
                Field::Other(name) => {
                    if keep_extra {
                        match flow.extra.get_mut(name) {
                            Some(v) => {
                                v.clear();
                                v.push_str(value);
                            }
                            None => {
                                flow.extra.insert(name.clone(), (*value).to_string());
                            }
                        }
                    }
                }
                _ => flow.record.set(field, value, allow_missing)?,
            }
        }
        Ok(())
    }
}

/// The fields of a line: runs of bytes between separators, which are space and every ASCII
/// control character (tab, CR, LF among them). This is the hottest loop of a read, so the end
/// of a field is found eight bytes at a time ([`field_end`]).
fn tokens(line: &str) -> impl Iterator<Item = &str> {
    let bytes = line.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() && bytes[i] <= b' ' {
            i += 1;
        }
        if i == bytes.len() {
            return None;
        }
        let start = i;
        i = field_end(bytes, i);
        // Both ends are next to ASCII bytes (or the ends of the line): char boundaries.
        line.get(start..i)
    })
}

/// The index of the first separator (a byte <= b' ') at or after `i`, or the length. Eight
/// bytes at a time: in a word, `(w - 0x21..21) & !w & 0x80..80` flags the bytes below 0x21
/// (bytes of 0x80 and above, parts of UTF-8 characters, are never flagged), and the lowest
/// flag is exact, which is the one taken.
fn field_end(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x2121_2121_2121_2121;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(word);
        let flags = w.wrapping_sub(ONES) & !w & HIGH;
        if flags != 0 {
            return i + (flags.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && bytes[i] > b' ' {
        i += 1;
    }
    i
}

impl fmt::Display for Format {
    /// The header line for this format.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(field.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_end_agrees_with_a_byte_loop() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let len = (rng % 40) as usize;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                // Mostly field bytes, some separators and high bytes.
                bytes.push(match rng % 10 {
                    0 => b' ',
                    1 => (rng >> 8) as u8 % 0x21,
                    2 => 0x80 | (rng >> 8) as u8,
                    _ => 0x21 + (rng >> 8) as u8 % 0x5e,
                });
            }
            for start in 0..=bytes.len() {
                let slow = (start..bytes.len())
                    .find(|&j| bytes[j] <= b' ')
                    .unwrap_or(bytes.len());
                assert_eq!(field_end(&bytes, start), slow, "{bytes:?} from {start}");
            }
        }
    }
}
