//! Results as text: an aligned table (numbers right-aligned), CSV (RFC 4180) or JSON (an array
//! of objects, numbers as numbers, times as their text).

use crate::exec::Output;
use crate::value::{render, Type, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

pub fn write(out: &Output, format: Format) -> String {
    match format {
        Format::Table => table(out),
        Format::Csv => csv(out),
        Format::Json => json(out),
    }
}

fn cell(v: &Value) -> String {
    let mut s = String::new();
    render(v, &mut s);
    s
}

pub fn table(out: &Output) -> String {
    let cells: Vec<Vec<String>> = out
        .rows
        .iter()
        .map(|r| r.iter().map(cell).collect())
        .collect();
    let mut widths: Vec<usize> = out.columns.iter().map(|(n, _)| n.chars().count()).collect();
    for r in &cells {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let numeric: Vec<bool> = out
        .columns
        .iter()
        .map(|(_, t)| matches!(t, Type::Int | Type::Float))
        .collect();
    let mut s = String::new();
    let line = |s: &mut String, items: &[String]| {
        let mut l = String::new();
        for (i, (item, w)) in items.iter().zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let pad = w.saturating_sub(item.chars().count());
            if numeric.get(i).copied().unwrap_or(false) {
                l.push_str(&" ".repeat(pad));
                l.push_str(item);
            } else {
                l.push_str(item);
                l.push_str(&" ".repeat(pad));
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    };
    let header: Vec<String> = out.columns.iter().map(|(n, _)| n.clone()).collect();
    line(&mut s, &header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut s, &rule);
    for r in &cells {
        line(&mut s, r);
    }
    s
}

fn csv_field(s: &str, out: &mut String) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

pub fn csv(out: &Output) -> String {
    let mut s = String::new();
    for (i, (n, _)) in out.columns.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        csv_field(n, &mut s);
    }
    s.push('\n');
    for r in &out.rows {
        for (i, v) in r.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            if !v.is_null() {
                csv_field(&cell(v), &mut s);
            }
        }
        s.push('\n');
    }
    s
}

pub fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(n) => serde_json::Value::from(*n),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        other => serde_json::Value::String(cell(other)),
    }
}

pub fn json(out: &Output) -> String {
    let mut s = String::from("[");
    for (i, r) in out.rows.iter().enumerate() {
        s.push_str(if i == 0 { "\n  " } else { ",\n  " });
        let mut obj = serde_json::Map::new();
        for ((n, _), v) in out.columns.iter().zip(r) {
            obj.insert(n.clone(), json_value(v));
        }
        s.push_str(&serde_json::Value::Object(obj).to_string());
    }
    s.push_str(if out.rows.is_empty() { "]\n" } else { "\n]\n" });
    s
}
