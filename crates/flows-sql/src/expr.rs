//! Bound expressions and their evaluation over one row of values (a slice indexed by column, or
//! by slot after aggregation). Types were checked when binding, so a mismatch here only comes
//! from the data (a string that is not a number in a CAST) and is an [`EvalError`].

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::error::EvalError;
use crate::value::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Unit {
    pub fn parse(s: &str) -> Option<Unit> {
        Some(match s.to_ascii_lowercase().trim_end_matches('s') {
            "second" => Unit::Second,
            "minute" => Unit::Minute,
            "hour" => Unit::Hour,
            "day" => Unit::Day,
            "week" => Unit::Week,
            "month" => Unit::Month,
            "quarter" => Unit::Quarter,
            "year" => Unit::Year,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    DayOfWeek,
    DayOfYear,
}

/// Scalar functions.
#[derive(Debug, Clone, PartialEq)]
pub enum Func {
    FromUnixtime,
    ToUnixtime,
    DateTrunc(Unit),
    DateFormat,
    DateAdd(Unit),
    DateDiff(Unit),
    Extract(Field),
    ToDate,
    Lower,
    Upper,
    Length,
    Trim,
    Concat,
    Substr,
    Replace,
    Strpos,
    SplitPart,
    StartsWith,
    Coalesce,
    NullIf,
    If,
    Greatest,
    Least,
    Abs,
    Round,
    Floor,
    Ceil,
    /// `contains(cidr, address)`: the network parsed once when it is a constant.
    Contains(Option<IpNet>),
    IsPrivate,
    IpPrefix,
    TypeOf(Type),
}

#[derive(Debug, Clone)]
pub enum BExpr {
    Const(Value),
    Col(usize),
    Neg(Box<BExpr>),
    Not(Box<BExpr>),
    And(Box<BExpr>, Box<BExpr>),
    Or(Box<BExpr>, Box<BExpr>),
    Cmp(Cmp, Box<BExpr>, Box<BExpr>),
    Arith(Arith, Box<BExpr>, Box<BExpr>),
    Concat(Box<BExpr>, Box<BExpr>),
    IsNull(Box<BExpr>, bool),
    /// `x [NOT] IN (...)`: constants in a set when they all are.
    In {
        expr: Box<BExpr>,
        list: Vec<BExpr>,
        set: Option<HashSet<Value>>,
        negated: bool,
    },
    Like {
        expr: Box<BExpr>,
        pattern: Box<BExpr>,
        escape: Option<char>,
        compiled: Option<Arc<Like>>,
        negated: bool,
    },
    Case(Vec<(BExpr, BExpr)>, Option<Box<BExpr>>),
    Cast(Box<BExpr>, Type, bool),
    Call(Func, Vec<BExpr>),
}

impl BExpr {
    /// Columns (or slots) this expression reads.
    pub fn columns(&self, out: &mut Vec<usize>) {
        match self {
            BExpr::Const(_) => {}
            BExpr::Col(c) => {
                if !out.contains(c) {
                    out.push(*c)
                }
            }
            BExpr::Neg(e) | BExpr::Not(e) | BExpr::IsNull(e, _) | BExpr::Cast(e, _, _) => {
                e.columns(out)
            }
            BExpr::And(a, b)
            | BExpr::Or(a, b)
            | BExpr::Cmp(_, a, b)
            | BExpr::Arith(_, a, b)
            | BExpr::Concat(a, b) => {
                a.columns(out);
                b.columns(out);
            }
            BExpr::In { expr, list, .. } => {
                expr.columns(out);
                list.iter().for_each(|e| e.columns(out));
            }
            BExpr::Like { expr, pattern, .. } => {
                expr.columns(out);
                pattern.columns(out);
            }
            BExpr::Case(whens, other) => {
                for (w, t) in whens {
                    w.columns(out);
                    t.columns(out);
                }
                if let Some(e) = other {
                    e.columns(out);
                }
            }
            BExpr::Call(_, args) => args.iter().for_each(|e| e.columns(out)),
        }
    }

    pub fn is_const(&self) -> bool {
        let mut c = Vec::new();
        self.columns(&mut c);
        c.is_empty()
    }

    /// Whether the row passes a filter: only TRUE does (NULL does not).
    pub fn test(&self, row: &[Value]) -> Result<bool, EvalError> {
        Ok(matches!(self.eval(row)?, Value::Bool(true)))
    }

    /// Like [`BExpr::eval`], but a column or a constant is lent, not cloned: cloning a shared
    /// string constant on every row would make all threads bump one reference count.
    pub fn eval_ref<'a>(&'a self, row: &'a [Value]) -> Result<Cow<'a, Value>, EvalError> {
        match self {
            BExpr::Const(v) => Ok(Cow::Borrowed(v)),
            BExpr::Col(c) => Ok(row.get(*c).map_or(Cow::Owned(Value::Null), Cow::Borrowed)),
            other => other.eval(row).map(Cow::Owned),
        }
    }

    pub fn eval(&self, row: &[Value]) -> Result<Value, EvalError> {
        match self {
            BExpr::Const(v) => Ok(v.clone()),
            BExpr::Col(c) => Ok(row.get(*c).cloned().unwrap_or(Value::Null)),
            BExpr::Neg(e) => match e.eval(row)? {
                Value::Int(n) => n
                    .checked_neg()
                    .map(Value::Int)
                    .ok_or_else(|| err("bigint overflow")),
                Value::Float(f) => Ok(Value::Float(-f)),
                Value::Interval(n) => Ok(Value::Interval(-n)),
                _ => Ok(Value::Null),
            },
            BExpr::Not(e) => Ok(match e.eval(row)? {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Null,
            }),
            BExpr::And(a, b) => {
                let x = a.eval(row)?;
                if matches!(x, Value::Bool(false)) {
                    return Ok(x);
                }
                let y = b.eval(row)?;
                Ok(match (x, y) {
                    (_, Value::Bool(false)) => Value::Bool(false),
                    (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                    _ => Value::Null,
                })
            }
            BExpr::Or(a, b) => {
                let x = a.eval(row)?;
                if matches!(x, Value::Bool(true)) {
                    return Ok(x);
                }
                let y = b.eval(row)?;
                Ok(match (x, y) {
                    (_, Value::Bool(true)) => Value::Bool(true),
                    (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                    _ => Value::Null,
                })
            }
            BExpr::Cmp(op, a, b) => {
                let x = a.eval_ref(row)?;
                if x.is_null() {
                    return Ok(Value::Null);
                }
                let y = b.eval_ref(row)?;
                if y.is_null() {
                    return Ok(Value::Null);
                }
                Ok(Value::Bool(compare(*op, &x, &y)))
            }
            BExpr::Arith(op, a, b) => {
                let x = a.eval(row)?;
                if x.is_null() {
                    return Ok(Value::Null);
                }
                let y = b.eval(row)?;
                if y.is_null() {
                    return Ok(Value::Null);
                }
                arith(*op, x, y)
            }
            BExpr::Concat(a, b) => {
                let x = a.eval(row)?;
                let y = b.eval(row)?;
                match (to_text(&x), to_text(&y)) {
                    (Some(p), Some(q)) => Ok(Value::str(&format!("{p}{q}"))),
                    _ => Ok(Value::Null),
                }
            }
            BExpr::IsNull(e, negated) => Ok(Value::Bool(e.eval_ref(row)?.is_null() != *negated)),
            BExpr::In {
                expr,
                list,
                set,
                negated,
            } => {
                let x = expr.eval_ref(row)?;
                let x: &Value = &x;
                if x.is_null() {
                    return Ok(Value::Null);
                }
                let found = match set {
                    Some(set) => {
                        set.contains(x)
                            || (matches!(x, Value::Float(_) | Value::Ip(_))
                                && set.iter().any(|v| x.eq_sql(v)))
                    }
                    None => {
                        let mut found = false;
                        let mut null = false;
                        for e in list {
                            let v = e.eval(row)?;
                            if v.is_null() {
                                null = true;
                            } else if x.eq_sql(&v) {
                                found = true;
                                break;
                            }
                        }
                        if !found && null {
                            return Ok(Value::Null);
                        }
                        found
                    }
                };
                Ok(Value::Bool(found != *negated))
            }
            BExpr::Like {
                expr,
                pattern,
                escape,
                compiled,
                negated,
            } => {
                let x = expr.eval_ref(row)?;
                let Some(text) = to_text(&x) else {
                    return Ok(Value::Null);
                };
                let matched = match compiled {
                    Some(like) => like.matches(&text),
                    None => {
                        let p = pattern.eval(row)?;
                        let Some(p) = to_text(&p) else {
                            return Ok(Value::Null);
                        };
                        Like::new(&p, *escape)?.matches(&text)
                    }
                };
                Ok(Value::Bool(matched != *negated))
            }
            BExpr::Case(whens, otherwise) => {
                for (w, t) in whens {
                    if w.test(row)? {
                        return t.eval(row);
                    }
                }
                match otherwise {
                    Some(e) => e.eval(row),
                    None => Ok(Value::Null),
                }
            }
            BExpr::Cast(e, to, try_cast) => {
                let v = e.eval(row)?;
                match cast(v, *to) {
                    Ok(v) => Ok(v),
                    Err(_) if *try_cast => Ok(Value::Null),
                    Err(e) => Err(e),
                }
            }
            BExpr::Call(f, args) => call(f, args, row),
        }
    }
}

fn err(msg: impl Into<String>) -> EvalError {
    EvalError(msg.into())
}

pub fn to_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::Null => None,
        Value::Str(_) | Value::Ip(_) => v.text(),
        other => {
            let mut s = String::new();
            render(other, &mut s);
            Some(std::borrow::Cow::Owned(s))
        }
    }
}

pub fn compare(op: Cmp, x: &Value, y: &Value) -> bool {
    match op {
        Cmp::Eq => x.eq_sql(y),
        Cmp::Ne => !x.eq_sql(y),
        Cmp::Lt => x.cmp_sql(y).is_lt(),
        Cmp::Le => x.cmp_sql(y).is_le(),
        Cmp::Gt => x.cmp_sql(y).is_gt(),
        Cmp::Ge => x.cmp_sql(y).is_ge(),
    }
}

fn check_ts(ms: i64) -> Result<Value, EvalError> {
    if (MIN_MS..=MAX_MS).contains(&ms) {
        Ok(Value::Timestamp(ms))
    } else {
        Err(err("timestamp out of range (years 0 to 9999)"))
    }
}

fn arith(op: Arith, x: Value, y: Value) -> Result<Value, EvalError> {
    let overflow = || err("bigint overflow");
    match (x, y) {
        (Value::Int(a), Value::Int(b)) => {
            let r = match op {
                Arith::Add => a.checked_add(b),
                Arith::Sub => a.checked_sub(b),
                Arith::Mul => a.checked_mul(b),
                Arith::Div | Arith::Mod if b == 0 => return Err(err("division by zero")),
                Arith::Div => a.checked_div(b),
                Arith::Mod => a.checked_rem(b),
            };
            r.map(Value::Int).ok_or_else(overflow)
        }
        (Value::Int(a), Value::Float(b)) => Ok(float_op(op, a as f64, b)),
        (Value::Float(a), Value::Int(b)) => Ok(float_op(op, a, b as f64)),
        (Value::Float(a), Value::Float(b)) => Ok(float_op(op, a, b)),
        (Value::Timestamp(t), Value::Interval(i)) | (Value::Interval(i), Value::Timestamp(t)) => {
            let r = match op {
                Arith::Add => t.checked_add(i),
                Arith::Sub => t.checked_sub(i),
                _ => None,
            };
            check_ts(r.ok_or_else(overflow)?)
        }
        (Value::Date(d), Value::Interval(i)) | (Value::Interval(i), Value::Date(d)) => {
            let days = i.div_euclid(86_400_000);
            let r = match op {
                Arith::Add => d.checked_add(days),
                Arith::Sub => d.checked_sub(days),
                _ => None,
            };
            let r = r.ok_or_else(overflow)?;
            check_ts(r.saturating_mul(86_400_000))?;
            Ok(Value::Date(r))
        }
        (Value::Timestamp(a), Value::Timestamp(b)) => Ok(Value::Interval(a.saturating_sub(b))),
        (Value::Date(a), Value::Date(b)) => Ok(Value::Interval(
            a.saturating_sub(b).saturating_mul(86_400_000),
        )),
        (Value::Interval(a), Value::Interval(b)) => match op {
            Arith::Add => a.checked_add(b).map(Value::Interval).ok_or_else(overflow),
            Arith::Sub => a.checked_sub(b).map(Value::Interval).ok_or_else(overflow),
            _ => Ok(Value::Null),
        },
        _ => Ok(Value::Null),
    }
}

fn float_op(op: Arith, a: f64, b: f64) -> Value {
    Value::Float(match op {
        Arith::Add => a + b,
        Arith::Sub => a - b,
        Arith::Mul => a * b,
        Arith::Div => a / b,
        Arith::Mod => a % b,
    })
}

/// CAST between the types of this engine.
pub fn cast(v: Value, to: Type) -> Result<Value, EvalError> {
    let fail = |v: &Value| {
        let mut s = String::new();
        render(v, &mut s);
        let s: String = s.chars().take(40).collect();
        err(format!("cannot cast '{s}' to {}", to.sql_name()))
    };
    Ok(match (v, to) {
        (Value::Null, _) => Value::Null,
        (v, Type::Unknown) => v,
        (Value::Int(n), Type::Int) => Value::Int(n),
        (Value::Float(f), Type::Int) => {
            let r = f.round();
            if r.is_finite() && (-9.2e18..=9.2e18).contains(&r) {
                Value::Int(r as i64)
            } else {
                return Err(fail(&Value::Float(f)));
            }
        }
        (Value::Bool(b), Type::Int) => Value::Int(i64::from(b)),
        (Value::Int(n), Type::Float) => Value::Float(n as f64),
        (Value::Float(f), Type::Float) => Value::Float(f),
        (Value::Bool(b), Type::Bool) => Value::Bool(b),
        (Value::Int(n), Type::Bool) => Value::Bool(n != 0),
        (Value::Timestamp(t), Type::Timestamp) => Value::Timestamp(t),
        (Value::Date(d), Type::Timestamp) => check_ts(d.saturating_mul(86_400_000))?,
        (Value::Date(d), Type::Date) => Value::Date(d),
        (Value::Timestamp(t), Type::Date) => Value::Date(t.div_euclid(86_400_000)),
        (Value::Ip(ip), Type::Ip) => Value::Ip(ip),
        (Value::Ip(ip), Type::Str) => Value::str(&ip.to_string()),
        (Value::Str(s), Type::Str) => Value::Str(s),
        (v, Type::Str) => match to_text(&v) {
            Some(t) => Value::str(&t),
            None => Value::Null,
        },
        (Value::Str(s), t) => {
            let x = s.trim();
            let parsed = match t {
                Type::Int => x.parse::<i64>().ok().map(Value::Int),
                Type::Float => x.parse::<f64>().ok().map(Value::Float),
                Type::Bool => match x.to_ascii_lowercase().as_str() {
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    _ => None,
                },
                Type::Timestamp => parse_timestamp(x).map(Value::Timestamp),
                Type::Date => parse_date(x)
                    .or_else(|| parse_timestamp(x).map(|t| t.div_euclid(86_400_000)))
                    .map(Value::Date),
                Type::Ip => x.parse::<IpAddr>().ok().map(Value::Ip),
                _ => None,
            };
            match parsed {
                Some(v) => v,
                None => return Err(fail(&Value::Str(s))),
            }
        }
        (v, _) => return Err(fail(&v)),
    })
}

/// A LIKE pattern: `%` any run, `_` one character, an optional escape character.
#[derive(Debug, Clone)]
pub struct Like {
    parts: Vec<LikePart>,
}

#[derive(Debug, Clone, PartialEq)]
enum LikePart {
    Lit(char),
    One,
    Any,
}

impl Like {
    pub fn new(pattern: &str, escape: Option<char>) -> Result<Like, EvalError> {
        let mut parts = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if Some(c) == escape {
                match chars.next() {
                    Some(n) => parts.push(LikePart::Lit(n)),
                    None => return Err(err("LIKE pattern ends with the escape character")),
                }
            } else if c == '%' {
                if parts.last() != Some(&LikePart::Any) {
                    parts.push(LikePart::Any);
                }
            } else if c == '_' {
                parts.push(LikePart::One);
            } else {
                parts.push(LikePart::Lit(c));
            }
        }
        Ok(Like { parts })
    }

    /// Wildcard matching with one backtrack point (the last `%`): linear for patterns with a
    /// single `%`, at worst text length times pattern length.
    pub fn matches(&self, text: &str) -> bool {
        let t: Vec<char> = text.chars().collect();
        let p = &self.parts;
        let (mut ti, mut pi) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            match p.get(pi) {
                Some(LikePart::Any) => {
                    star = Some((pi, ti));
                    pi += 1;
                }
                Some(LikePart::One) => {
                    ti += 1;
                    pi += 1;
                }
                Some(LikePart::Lit(c)) if *c == t[ti] => {
                    ti += 1;
                    pi += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        pi = sp + 1;
                        ti = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi.min(p.len())..].iter().all(|x| *x == LikePart::Any)
    }
}

pub fn is_private(ip: IpAddr) -> bool {
    !sumun_flows_tools::orient::is_public(ip)
}

fn ts_of(v: &Value) -> Option<i64> {
    match v {
        Value::Timestamp(t) => Some(*t),
        Value::Date(d) => Some(d.saturating_mul(86_400_000)),
        _ => None,
    }
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::Float(f) if f.is_finite() => Some(*f as i64),
        _ => None,
    }
}

fn float_of(v: &Value) -> Option<f64> {
    match v {
        Value::Int(n) => Some(*n as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

pub fn trunc(unit: Unit, ms: i64) -> i64 {
    let day = ms.div_euclid(86_400_000);
    let (y, m, _) = civil_from_days(day);
    match unit {
        Unit::Second => ms - ms.rem_euclid(1000),
        Unit::Minute => ms - ms.rem_euclid(60_000),
        Unit::Hour => ms - ms.rem_euclid(3_600_000),
        Unit::Day => day * 86_400_000,
        // Monday.
        Unit::Week => (day - (day + 3).rem_euclid(7)) * 86_400_000,
        Unit::Month => days_from_civil(y, m, 1) * 86_400_000,
        Unit::Quarter => days_from_civil(y, (m - 1) / 3 * 3 + 1, 1) * 86_400_000,
        Unit::Year => days_from_civil(y, 1, 1) * 86_400_000,
    }
}

fn add_months(ms: i64, months: i64) -> Option<i64> {
    let day = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(day);
    let total = y
        .checked_mul(12)?
        .checked_add(i64::from(m) - 1)?
        .checked_add(months)?;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) as u32 + 1);
    if !(0..=9999).contains(&ny) {
        return None;
    }
    let mut nd = d;
    while nd > 28 && parse_date(&format!("{ny:04}-{nm:02}-{nd:02}")).is_none() {
        nd -= 1;
    }
    Some(days_from_civil(ny, nm, nd) * 86_400_000 + rem)
}

fn date_add(unit: Unit, n: i64, ms: i64) -> Option<i64> {
    let step = match unit {
        Unit::Second => 1000,
        Unit::Minute => 60_000,
        Unit::Hour => 3_600_000,
        Unit::Day => 86_400_000,
        Unit::Week => 7 * 86_400_000,
        Unit::Month => return add_months(ms, n),
        Unit::Quarter => return add_months(ms, n.checked_mul(3)?),
        Unit::Year => return add_months(ms, n.checked_mul(12)?),
    };
    ms.checked_add(n.checked_mul(step)?)
}

fn date_diff(unit: Unit, a: i64, b: i64) -> i64 {
    let step = match unit {
        Unit::Second => 1000,
        Unit::Minute => 60_000,
        Unit::Hour => 3_600_000,
        Unit::Day => 86_400_000,
        Unit::Week => 7 * 86_400_000,
        Unit::Month | Unit::Quarter | Unit::Year => {
            let (ya, ma, _) = civil_from_days(a.div_euclid(86_400_000));
            let (yb, mb, _) = civil_from_days(b.div_euclid(86_400_000));
            let mut months = (yb - ya) * 12 + i64::from(mb) - i64::from(ma);
            // A month counts once the day and time in it are reached.
            let back = add_months(b, -months).unwrap_or(b);
            if months > 0 && back < a {
                months -= 1;
            } else if months < 0 && back > a {
                months += 1;
            }
            return match unit {
                Unit::Quarter => months / 3,
                Unit::Year => months / 12,
                _ => months,
            };
        }
    };
    (b - a) / step
}

/// MySQL-style `date_format` specifiers, as Athena's (Presto's) `date_format` takes them.
pub fn date_format(ms: i64, fmt: &str) -> Result<String, EvalError> {
    use std::fmt::Write as _;
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let day = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(day);
    let (h, mi, s, f) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    let dow = (day + 3).rem_euclid(7) as usize; // 0 = Monday
    let month = MONTHS.get(m as usize - 1).copied().unwrap_or("");
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            out.push('%');
            break;
        };
        let _ = match spec {
            'Y' => write!(out, "{y:04}"),
            'y' => write!(out, "{:02}", y % 100),
            'm' => write!(out, "{m:02}"),
            'c' => write!(out, "{m}"),
            'd' => write!(out, "{d:02}"),
            'e' => write!(out, "{d}"),
            'H' => write!(out, "{h:02}"),
            'k' => write!(out, "{h}"),
            'h' | 'I' => write!(out, "{:02}", (h + 11) % 12 + 1),
            'l' => write!(out, "{}", (h + 11) % 12 + 1),
            'i' => write!(out, "{mi:02}"),
            's' | 'S' => write!(out, "{s:02}"),
            'f' => write!(out, "{:06}", f * 1000),
            'p' => write!(out, "{}", if h < 12 { "AM" } else { "PM" }),
            'T' => write!(out, "{h:02}:{mi:02}:{s:02}"),
            'r' => write!(
                out,
                "{:02}:{mi:02}:{s:02} {}",
                (h + 11) % 12 + 1,
                if h < 12 { "AM" } else { "PM" }
            ),
            'j' => write!(out, "{:03}", day - days_from_civil(y, 1, 1) + 1),
            'M' => write!(out, "{month}"),
            'b' => write!(out, "{}", month.get(..3).unwrap_or("")),
            'W' => write!(out, "{}", DAYS[dow]),
            'a' => write!(out, "{}", DAYS[dow].get(..3).unwrap_or("")),
            '%' => write!(out, "%"),
            other => {
                return Err(err(format!(
                    "date_format specifier %{other} is not supported"
                )))
            }
        };
    }
    Ok(out)
}

fn greatest_least(args: &[BExpr], row: &[Value], greatest: bool) -> Result<Value, EvalError> {
    let mut best: Option<Value> = None;
    for a in args {
        let v = a.eval(row)?;
        if v.is_null() {
            return Ok(Value::Null);
        }
        best = Some(match best {
            None => v,
            Some(b) => {
                let take = if greatest {
                    v.cmp_sql(&b).is_gt()
                } else {
                    v.cmp_sql(&b).is_lt()
                };
                if take {
                    v
                } else {
                    b
                }
            }
        });
    }
    Ok(best.unwrap_or(Value::Null))
}

fn call(f: &Func, args: &[BExpr], row: &[Value]) -> Result<Value, EvalError> {
    // Functions that do not simply propagate NULL.
    match f {
        Func::Coalesce => {
            for a in args {
                let v = a.eval(row)?;
                if !v.is_null() {
                    return Ok(v);
                }
            }
            return Ok(Value::Null);
        }
        Func::If => {
            let c = args
                .first()
                .map(|a| a.test(row))
                .transpose()?
                .unwrap_or(false);
            let branch = if c { args.get(1) } else { args.get(2) };
            return branch.map_or(Ok(Value::Null), |b| b.eval(row));
        }
        Func::NullIf => {
            let a = args
                .first()
                .map(|a| a.eval(row))
                .transpose()?
                .unwrap_or(Value::Null);
            let b = args
                .get(1)
                .map(|a| a.eval(row))
                .transpose()?
                .unwrap_or(Value::Null);
            if !a.is_null() && !b.is_null() && a.eq_sql(&b) {
                return Ok(Value::Null);
            }
            return Ok(a);
        }
        Func::Greatest => return greatest_least(args, row, true),
        Func::Least => return greatest_least(args, row, false),
        Func::TypeOf(t) => return Ok(Value::str(t.sql_name())),
        Func::Concat => {
            let mut s = String::new();
            for a in args {
                let v = a.eval(row)?;
                match to_text(&v) {
                    Some(t) => s.push_str(&t),
                    None => return Ok(Value::Null),
                }
            }
            return Ok(Value::str(&s));
        }
        _ => {}
    }
    let mut vals = Vec::with_capacity(args.len());
    for a in args {
        let v = a.eval(row)?;
        if v.is_null() {
            return Ok(Value::Null);
        }
        vals.push(v);
    }
    let arg = |i: usize| vals.get(i).cloned().unwrap_or(Value::Null);
    let text = |i: usize| vals.get(i).and_then(to_text).map(|c| c.into_owned());
    let ts = |i: usize| vals.get(i).and_then(ts_of);
    let int = |i: usize| vals.get(i).and_then(int_of);
    let bad = || err("invalid argument");
    Ok(match f {
        Func::FromUnixtime => {
            let secs = vals.first().and_then(float_of).ok_or_else(bad)?;
            let ms = (secs * 1000.0).round();
            if !(MIN_MS as f64..=MAX_MS as f64).contains(&ms) {
                return Err(err("from_unixtime: time out of range"));
            }
            Value::Timestamp(ms as i64)
        }
        Func::ToUnixtime => Value::Float(ts(0).ok_or_else(bad)? as f64 / 1000.0),
        Func::DateTrunc(unit) => match arg(1) {
            Value::Date(d) => Value::Date(trunc(*unit, d * 86_400_000).div_euclid(86_400_000)),
            v => Value::Timestamp(trunc(*unit, ts_of(&v).ok_or_else(bad)?)),
        },
        Func::DateFormat => {
            let fmt = text(1).ok_or_else(bad)?;
            Value::str(&date_format(ts(0).ok_or_else(bad)?, &fmt)?)
        }
        Func::DateAdd(unit) => {
            let n = int(1).ok_or_else(bad)?;
            match arg(2) {
                Value::Date(d) => {
                    let r = date_add(*unit, n, d * 86_400_000)
                        .ok_or_else(|| err("date_add: out of range"))?;
                    Value::Date(r.div_euclid(86_400_000))
                }
                v => check_ts(
                    date_add(*unit, n, ts_of(&v).ok_or_else(bad)?)
                        .ok_or_else(|| err("date_add: out of range"))?,
                )?,
            }
        }
        Func::DateDiff(unit) => Value::Int(date_diff(
            *unit,
            ts(1).ok_or_else(bad)?,
            ts(2).ok_or_else(bad)?,
        )),
        Func::Extract(field) => {
            let ms = ts(0).ok_or_else(bad)?;
            let day = ms.div_euclid(86_400_000);
            let rem = ms.rem_euclid(86_400_000);
            let (y, m, d) = civil_from_days(day);
            Value::Int(match field {
                Field::Year => y,
                Field::Month => i64::from(m),
                Field::Day => i64::from(d),
                Field::Hour => rem / 3_600_000,
                Field::Minute => rem / 60_000 % 60,
                Field::Second => rem / 1000 % 60,
                Field::DayOfWeek => (day + 3).rem_euclid(7) + 1,
                Field::DayOfYear => day - days_from_civil(y, 1, 1) + 1,
            })
        }
        Func::ToDate => match arg(0) {
            Value::Str(s) => cast(Value::Str(s), Type::Date)?,
            v => Value::Date(ts_of(&v).ok_or_else(bad)?.div_euclid(86_400_000)),
        },
        Func::Lower => Value::str(&text(0).ok_or_else(bad)?.to_lowercase()),
        Func::Upper => Value::str(&text(0).ok_or_else(bad)?.to_uppercase()),
        Func::Length => Value::Int(text(0).ok_or_else(bad)?.chars().count() as i64),
        Func::Trim => Value::str(text(0).ok_or_else(bad)?.trim()),
        Func::Substr => {
            let s = text(0).ok_or_else(bad)?;
            let chars: Vec<char> = s.chars().collect();
            let len = chars.len() as i64;
            let start = int(1).ok_or_else(bad)?;
            let from = if start > 0 {
                start - 1
            } else if start < 0 {
                len + start
            } else {
                return Ok(Value::str(""));
            };
            if from < 0 || from >= len {
                return Ok(Value::str(""));
            }
            let count = match int(2) {
                Some(n) if n < 0 => return Err(err("substr: negative length")),
                Some(n) => n,
                None => len,
            };
            let to = from.saturating_add(count).min(len);
            Value::str(&chars[from as usize..to as usize].iter().collect::<String>())
        }
        Func::Replace => {
            let s = text(0).ok_or_else(bad)?;
            let from = text(1).ok_or_else(bad)?;
            let to = text(2).unwrap_or_default();
            if from.is_empty() {
                Value::str(&s)
            } else {
                Value::str(&s.replace(&from, &to))
            }
        }
        Func::Strpos => {
            let s = text(0).ok_or_else(bad)?;
            let sub = text(1).ok_or_else(bad)?;
            Value::Int(match s.find(&sub) {
                Some(i) => s[..i].chars().count() as i64 + 1,
                None => 0,
            })
        }
        Func::SplitPart => {
            let s = text(0).ok_or_else(bad)?;
            let delim = text(1).ok_or_else(bad)?;
            let n = int(2).ok_or_else(bad)?;
            if n < 1 {
                return Err(err("split_part: index must be at least 1"));
            }
            if delim.is_empty() {
                return Ok(Value::Null);
            }
            match s.split(delim.as_str()).nth((n - 1) as usize) {
                Some(p) => Value::str(p),
                None => Value::Null,
            }
        }
        Func::StartsWith => Value::Bool(
            text(0)
                .ok_or_else(bad)?
                .starts_with(&text(1).ok_or_else(bad)?),
        ),
        Func::Abs => match arg(0) {
            Value::Int(n) => Value::Int(n.checked_abs().ok_or_else(|| err("bigint overflow"))?),
            Value::Float(f) => Value::Float(f.abs()),
            _ => return Err(bad()),
        },
        Func::Round => {
            let digits = int(1).unwrap_or(0).clamp(-18, 18);
            match arg(0) {
                Value::Int(n) if digits >= 0 => Value::Int(n),
                Value::Int(n) => {
                    let p = 10f64.powi(-digits as i32);
                    Value::Int(((n as f64 / p).round() * p) as i64)
                }
                Value::Float(f) => {
                    let p = 10f64.powi(digits as i32);
                    Value::Float((f * p).round() / p)
                }
                _ => return Err(bad()),
            }
        }
        Func::Floor => match arg(0) {
            Value::Int(n) => Value::Int(n),
            Value::Float(f) => Value::Float(f.floor()),
            _ => return Err(bad()),
        },
        Func::Ceil => match arg(0) {
            Value::Int(n) => Value::Int(n),
            Value::Float(f) => Value::Float(f.ceil()),
            _ => return Err(bad()),
        },
        Func::Contains(net) => {
            let net = match net {
                Some(n) => *n,
                None => parse_cidr(&text(0).ok_or_else(bad)?)?,
            };
            match ip_of(&arg(1)) {
                Some(ip) => Value::Bool(net_contains(&net, ip)),
                None => Value::Null,
            }
        }
        Func::IsPrivate => match ip_of(&arg(0)) {
            Some(ip) => Value::Bool(is_private(ip)),
            None => Value::Null,
        },
        Func::IpPrefix => {
            let ip = ip_of(&arg(0)).ok_or_else(|| err("ip_prefix: not an IP address"))?;
            let bits = int(1).ok_or_else(bad)?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if !(0..=max).contains(&bits) {
                return Err(err(format!("ip_prefix: prefix length must be 0 to {max}")));
            }
            let net = IpNet::new(ip, bits as u8).map_err(|_| bad())?.trunc();
            Value::str(&net.to_string())
        }
        Func::Coalesce
        | Func::If
        | Func::NullIf
        | Func::Greatest
        | Func::Least
        | Func::TypeOf(_)
        | Func::Concat => Value::Null,
    })
}

fn ip_of(v: &Value) -> Option<IpAddr> {
    match v {
        Value::Ip(ip) => Some(*ip),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An IPv4-mapped IPv6 address is looked up in IPv4 networks too.
fn net_contains(net: &IpNet, ip: IpAddr) -> bool {
    if net.contains(&ip) {
        return true;
    }
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .is_some_and(|v4| net.contains(&IpAddr::V4(v4))),
        IpAddr::V4(_) => false,
    }
}

/// `10.0.0.0/8`, or a bare address (a /32 or /128).
pub fn parse_cidr(s: &str) -> Result<IpNet, EvalError> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let quoted: String = s.chars().take(40).collect();
    Err(err(format!("invalid CIDR '{quoted}'")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        let l = Like::new("10.0.%", None).unwrap();
        assert!(l.matches("10.0.1.2"));
        assert!(!l.matches("10.1.1.2"));
        let l = Like::new("%a_c%", None).unwrap();
        assert!(l.matches("xxabcxx"));
        assert!(!l.matches("xxacxx"));
        let l = Like::new("100!%", Some('!')).unwrap();
        assert!(l.matches("100%"));
        assert!(!l.matches("1000"));
        assert!(Like::new("", None).unwrap().matches(""));
        assert!(Like::new("%", None).unwrap().matches(""));
    }

    #[test]
    fn date_functions() {
        let t = parse_timestamp("2024-03-31 13:45:07").unwrap();
        assert_eq!(
            date_format(t, "%Y/%m/%d %H:%i:%s").unwrap(),
            "2024/03/31 13:45:07"
        );
        assert_eq!(
            trunc(Unit::Month, t),
            parse_timestamp("2024-03-01").unwrap()
        );
        assert_eq!(trunc(Unit::Week, t), parse_timestamp("2024-03-25").unwrap());
        assert_eq!(
            date_add(Unit::Month, 1, t),
            parse_timestamp("2024-04-30 13:45:07")
        );
        assert_eq!(
            date_diff(Unit::Day, parse_timestamp("2024-01-01").unwrap(), t),
            90
        );
        assert_eq!(
            date_diff(Unit::Month, parse_timestamp("2024-01-31").unwrap(), t),
            2
        );
    }

    #[test]
    fn integer_division_truncates_and_zero_is_an_error() {
        assert_eq!(
            arith(Arith::Div, Value::Int(7), Value::Int(2)).unwrap(),
            Value::Int(3)
        );
        assert!(arith(Arith::Div, Value::Int(7), Value::Int(0)).is_err());
        assert!(arith(Arith::Mul, Value::Int(i64::MAX), Value::Int(2)).is_err());
    }
}
