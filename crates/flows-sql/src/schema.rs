//! The `flows` table: AWS's Athena column names for VPC flow logs (the default fields, the
//! custom-format fields with `_` for `-`, and `year`/`month`/`day`/`dt` as the partition columns
//! of the S3 layout), the older Athena names of seed 000's table (`sourceaddress`, `numbytes`...)
//! as synonyms, and how a parsed [`Flow`] becomes values of the columns a query needs.

use std::net::IpAddr;
use std::sync::Arc;

use sumun_flows::{Action, Field, Flow, Format, LogStatus};

use crate::value::{civil_from_days, Type, Value};

/// Where a column's values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
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
    /// A custom-format field, by its name in flow log headers (`tcp-flags`).
    Extra(&'static str),
    /// `year`, `month`, `day` (`2024`, `01`, `05`) and `dt` (`2024/01/05`) of the start time:
    /// what the S3 prefixes of the partitioned layout hold.
    Year,
    Month,
    Day,
    Dt,
}

#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    pub ty: Type,
    pub source: Source,
}

const fn col(name: &'static str, ty: Type, source: Source) -> Column {
    Column { name, ty, source }
}

/// Every column, in `SELECT *` order (the default fields first, as in AWS's table).
pub static COLUMNS: &[Column] = &[
    col("version", Type::Int, Source::Version),
    col("account_id", Type::Str, Source::AccountId),
    col("interface_id", Type::Str, Source::InterfaceId),
    col("srcaddr", Type::Ip, Source::SrcAddr),
    col("dstaddr", Type::Ip, Source::DstAddr),
    col("srcport", Type::Int, Source::SrcPort),
    col("dstport", Type::Int, Source::DstPort),
    col("protocol", Type::Int, Source::Protocol),
    col("packets", Type::Int, Source::Packets),
    col("bytes", Type::Int, Source::Bytes),
    col("start", Type::Int, Source::Start),
    col("end", Type::Int, Source::End),
    col("action", Type::Str, Source::Action),
    col("log_status", Type::Str, Source::LogStatus),
    col("vpc_id", Type::Str, Source::Extra("vpc-id")),
    col("subnet_id", Type::Str, Source::Extra("subnet-id")),
    col("instance_id", Type::Str, Source::Extra("instance-id")),
    col("tcp_flags", Type::Int, Source::Extra("tcp-flags")),
    col("type", Type::Str, Source::Extra("type")),
    col("pkt_srcaddr", Type::Ip, Source::Extra("pkt-srcaddr")),
    col("pkt_dstaddr", Type::Ip, Source::Extra("pkt-dstaddr")),
    col("region", Type::Str, Source::Extra("region")),
    col("az_id", Type::Str, Source::Extra("az-id")),
    col(
        "sublocation_type",
        Type::Str,
        Source::Extra("sublocation-type"),
    ),
    col("sublocation_id", Type::Str, Source::Extra("sublocation-id")),
    col(
        "pkt_src_aws_service",
        Type::Str,
        Source::Extra("pkt-src-aws-service"),
    ),
    col(
        "pkt_dst_aws_service",
        Type::Str,
        Source::Extra("pkt-dst-aws-service"),
    ),
    col("flow_direction", Type::Str, Source::Extra("flow-direction")),
    col("traffic_path", Type::Int, Source::Extra("traffic-path")),
    col(
        "ecs_cluster_arn",
        Type::Str,
        Source::Extra("ecs-cluster-arn"),
    ),
    col(
        "ecs_cluster_name",
        Type::Str,
        Source::Extra("ecs-cluster-name"),
    ),
    col(
        "ecs_container_instance_arn",
        Type::Str,
        Source::Extra("ecs-container-instance-arn"),
    ),
    col(
        "ecs_container_instance_id",
        Type::Str,
        Source::Extra("ecs-container-instance-id"),
    ),
    col(
        "ecs_container_id",
        Type::Str,
        Source::Extra("ecs-container-id"),
    ),
    col(
        "ecs_second_container_id",
        Type::Str,
        Source::Extra("ecs-second-container-id"),
    ),
    col(
        "ecs_service_name",
        Type::Str,
        Source::Extra("ecs-service-name"),
    ),
    col(
        "ecs_task_definition_arn",
        Type::Str,
        Source::Extra("ecs-task-definition-arn"),
    ),
    col("ecs_task_arn", Type::Str, Source::Extra("ecs-task-arn")),
    col("ecs_task_id", Type::Str, Source::Extra("ecs-task-id")),
    col("reject_reason", Type::Str, Source::Extra("reject-reason")),
    col("year", Type::Str, Source::Year),
    col("month", Type::Str, Source::Month),
    col("day", Type::Str, Source::Day),
    col("dt", Type::Str, Source::Dt),
];

/// How many columns are stored in files (the rest are derived from `start`).
pub const STORED: usize = 40;

/// The default-format columns, what `SELECT *` shows when the input has no custom fields.
pub const DEFAULT_COLUMNS: usize = 14;

/// Names of the table in seed 000's Athena DDL (and AWS's older examples) for the same
/// columns.
const SYNONYMS: &[(&str, &str)] = &[
    ("account", "account_id"),
    ("interfaceid", "interface_id"),
    ("sourceaddress", "srcaddr"),
    ("destinationaddress", "dstaddr"),
    ("sourceport", "srcport"),
    ("destinationport", "dstport"),
    ("numpackets", "packets"),
    ("numbytes", "bytes"),
    ("starttime", "start"),
    ("endtime", "end"),
    ("logstatus", "log_status"),
];

/// The column a name refers to: case-insensitive, `-` or `_`, synonyms included.
pub fn lookup(name: &str) -> Option<usize> {
    let lower = name.to_ascii_lowercase().replace('-', "_");
    let lower = SYNONYMS
        .iter()
        .find(|(s, _)| *s == lower)
        .map_or(lower.as_str(), |(_, c)| c);
    COLUMNS.iter().position(|c| c.name == lower)
}

/// The column of a flow log field (`tcp-flags` → `tcp_flags`), if the table has one.
pub fn column_of_field(field: &Field) -> Option<usize> {
    lookup(field.name())
}

/// Turns parsed flows into column values, reusing the text of identifiers from one record to
/// the next (records of one interface come in runs) so that a scan does not allocate per row.
pub struct Materializer {
    /// Which default fields the current format has (bit per [`Source`] index 0-13).
    present: u16,
    fields_ptr: usize,
    account: Arc<str>,
    interface: Arc<str>,
    day_cache: Option<(i64, [Arc<str>; 4])>,
    extras: Vec<(usize, Arc<str>)>,
    /// ACCEPT, REJECT, OK, NODATA, SKIPDATA: made once, shared by every row of the scan.
    words: [Arc<str>; 5],
}

impl Default for Materializer {
    fn default() -> Self {
        Materializer {
            present: 0,
            fields_ptr: 0,
            account: Arc::from(""),
            interface: Arc::from(""),
            day_cache: None,
            extras: Vec::new(),
            words: ["ACCEPT", "REJECT", "OK", "NODATA", "SKIPDATA"].map(Arc::from),
        }
    }
}

fn default_index(source: Source) -> Option<usize> {
    Some(match source {
        Source::Version => 0,
        Source::AccountId => 1,
        Source::InterfaceId => 2,
        Source::SrcAddr => 3,
        Source::DstAddr => 4,
        Source::SrcPort => 5,
        Source::DstPort => 6,
        Source::Protocol => 7,
        Source::Packets => 8,
        Source::Bytes => 9,
        Source::Start => 10,
        Source::End => 11,
        Source::Action => 12,
        Source::LogStatus => 13,
        _ => return None,
    })
}

fn field_index(field: &Field) -> Option<usize> {
    Some(match field {
        Field::Version => 0,
        Field::AccountId => 1,
        Field::InterfaceId => 2,
        Field::SrcAddr => 3,
        Field::DstAddr => 4,
        Field::SrcPort => 5,
        Field::DstPort => 6,
        Field::Protocol => 7,
        Field::Packets => 8,
        Field::Bytes => 9,
        Field::Start => 10,
        Field::End => 11,
        Field::Action => 12,
        Field::LogStatus => 13,
        Field::Other(_) => return None,
    })
}

fn int(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn shared(cache: &mut Arc<str>, text: &str) -> Value {
    if text == "-" {
        return Value::Null;
    }
    if &**cache != text {
        *cache = Arc::from(text);
    }
    Value::Str(cache.clone())
}

impl Materializer {
    /// Notes the format the next records are in (cheap when it has not changed).
    pub fn set_format(&mut self, format: &Format) {
        let ptr = format.fields().as_ptr() as usize;
        if ptr == self.fields_ptr && self.present != 0 {
            return;
        }
        self.fields_ptr = ptr;
        self.present = format
            .fields()
            .iter()
            .filter_map(field_index)
            .fold(0, |m, i| m | 1 << i);
    }

    /// Writes the values of `cols` for `flow` into `out` (indexed by column).
    pub fn fill(&mut self, flow: &Flow, cols: &[usize], out: &mut [Value]) {
        for &c in cols {
            let v = self.value(flow, c);
            if let Some(slot) = out.get_mut(c) {
                *slot = v;
            }
        }
    }

    fn value(&mut self, flow: &Flow, c: usize) -> Value {
        let Some(column) = COLUMNS.get(c) else {
            return Value::Null;
        };
        let r = &flow.record;
        if let Some(i) = default_index(column.source) {
            if self.present & (1 << i) == 0 {
                return Value::Null;
            }
        }
        let ok = r.log_status == LogStatus::Ok;
        match column.source {
            Source::Version => Value::Int(i64::from(r.version)),
            Source::AccountId => shared(&mut self.account, &r.account_id),
            Source::InterfaceId => shared(&mut self.interface, &r.interface_id),
            Source::SrcAddr if ok => Value::Ip(r.srcaddr),
            Source::DstAddr if ok => Value::Ip(r.dstaddr),
            Source::SrcPort if ok => Value::Int(i64::from(r.srcport)),
            Source::DstPort if ok => Value::Int(i64::from(r.dstport)),
            Source::Protocol if ok => Value::Int(i64::from(r.protocol)),
            Source::Packets if ok => int(r.packets),
            Source::Bytes if ok => int(r.bytes),
            Source::Action if ok => Value::Str(
                self.words[match r.action {
                    Action::Accept => 0,
                    Action::Reject => 1,
                }]
                .clone(),
            ),
            Source::Start if ok || r.start != 0 => int(r.start),
            Source::End if ok || r.end != 0 => int(r.end),
            Source::LogStatus => Value::Str(
                self.words[match r.log_status {
                    LogStatus::Ok => 2,
                    LogStatus::NoData => 3,
                    LogStatus::SkipData => 4,
                }]
                .clone(),
            ),
            Source::Year | Source::Month | Source::Day | Source::Dt => {
                if !ok && r.start == 0 || self.present & (1 << 10) == 0 {
                    return Value::Null;
                }
                let day = i64::try_from(r.start / 86_400).unwrap_or(0);
                let parts = self.day_parts(day);
                let i = match column.source {
                    Source::Year => 0,
                    Source::Month => 1,
                    Source::Day => 2,
                    _ => 3,
                };
                Value::Str(parts[i].clone())
            }
            Source::Extra(name) => match flow.extra(name) {
                None | Some("-") => Value::Null,
                Some(text) => extra_value(column.ty, text, &mut self.extras, c),
            },
            _ => Value::Null,
        }
    }

    fn day_parts(&mut self, day: i64) -> &[Arc<str>; 4] {
        if self.day_cache.as_ref().is_none_or(|(d, _)| *d != day) {
            self.day_cache = Some((day, day_parts(day)));
        }
        match &self.day_cache {
            Some((_, parts)) => parts,
            None => unreachable_parts(),
        }
    }
}

fn unreachable_parts() -> &'static [Arc<str>; 4] {
    static EMPTY: std::sync::OnceLock<[Arc<str>; 4]> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| day_parts(0))
}

/// `year`, `month`, `day`, `dt` of a day number.
pub fn day_parts(day: i64) -> [Arc<str>; 4] {
    let (y, m, d) = civil_from_days(day);
    [
        Arc::from(format!("{y:04}")),
        Arc::from(format!("{m:02}")),
        Arc::from(format!("{d:02}")),
        Arc::from(format!("{y:04}/{m:02}/{d:02}")),
    ]
}

fn extra_value(ty: Type, text: &str, cache: &mut Vec<(usize, Arc<str>)>, c: usize) -> Value {
    match ty {
        Type::Int => text.parse::<i64>().map_or(Value::Null, Value::Int),
        Type::Ip => text
            .parse::<IpAddr>()
            .map_or_else(|_| Value::str(text), Value::Ip),
        _ => match cache.iter_mut().find(|(k, _)| *k == c) {
            Some((_, a)) => {
                if &**a != text {
                    *a = Arc::from(text);
                }
                Value::Str(a.clone())
            }
            None => {
                let a: Arc<str> = Arc::from(text);
                cache.push((c, a.clone()));
                Value::Str(a)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_synonyms_and_field_names() {
        assert_eq!(lookup("SRCADDR"), Some(3));
        assert_eq!(lookup("sourceaddress"), Some(3));
        assert_eq!(lookup("log-status"), Some(13));
        assert_eq!(
            lookup("tcp_flags").map(|c| COLUMNS[c].name),
            Some("tcp_flags")
        );
        assert_eq!(lookup("nope"), None);
        assert_eq!(COLUMNS[STORED].name, "year");
        assert_eq!(COLUMNS[DEFAULT_COLUMNS].name, "vpc_id");
    }

    #[test]
    fn nodata_traffic_fields_are_null() {
        let format = Format::default_v2();
        let flow = format
            .parse("2 123 eni-1 - - - - - - - 1700000000 1700000060 - NODATA")
            .unwrap();
        let mut m = Materializer::default();
        m.set_format(&format);
        let mut out = vec![Value::Null; COLUMNS.len()];
        let all: Vec<usize> = (0..COLUMNS.len()).collect();
        m.fill(&flow, &all, &mut out);
        assert!(out[3].is_null() && out[9].is_null() && out[12].is_null());
        assert_eq!(out[10], Value::Int(1_700_000_000));
        assert_eq!(out[13], Value::str("NODATA"));
        assert_eq!(out[43], Value::str("2023/11/14"));
        assert!(out[17].is_null(), "no tcp-flags in this format");
    }
}
