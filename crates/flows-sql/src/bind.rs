//! From a parsed [`Query`] to a [`Plan`]: names resolved to columns, types checked (with the
//! position of the offending expression), constants folded, aggregates collected, and the
//! columns the scan must produce worked out (those of WHERE first, so rows it drops cost
//! nothing more).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use crate::agg::{AggFunc, AggSpec};
use crate::ast::{self, BinOp, ExprKind, Literal, Query, SelectItem};
use crate::error::SqlError;
use crate::expr::{parse_cidr, Arith, BExpr, Cmp, Field, Func, Like, Unit};
use crate::schema::{self, COLUMNS, DEFAULT_COLUMNS};
use crate::value::{parse_date, parse_timestamp, Type, Value};

/// What to compute, in order: scan (filter, then [`Stage`]), then HAVING, projection, ORDER BY,
/// LIMIT over the rows the stage made.
#[derive(Debug, Clone)]
pub struct Plan {
    pub filter: Option<BExpr>,
    /// Columns WHERE reads, materialized first.
    pub filter_cols: Vec<usize>,
    /// The other columns the stage reads, materialized only for rows WHERE keeps.
    pub rest_cols: Vec<usize>,
    pub stage: Stage,
    /// Over the stage's rows (slots).
    pub having: Option<BExpr>,
    pub project: Vec<BExpr>,
    pub order: Vec<SortKey>,
    /// DISTINCT on top of an aggregation.
    pub distinct_output: bool,
    pub limit: Option<u64>,
    pub columns: Vec<(String, Type)>,
    /// Of the GROUP BY keys (an aggregation with keys of fixed-width types runs on typed
    /// hash tables, [`crate::typed`]).
    pub key_types: Vec<Type>,
}

#[derive(Debug, Clone)]
pub struct SortKey {
    pub expr: BExpr,
    pub desc: bool,
    pub nulls_first: bool,
}

#[derive(Debug, Clone)]
pub enum Stage {
    /// Slots: the keys, then the aggregates.
    Aggregate {
        keys: Vec<BExpr>,
        aggs: Vec<AggSpec>,
    },
    /// Slots: the select items, then ORDER BY expressions not among them.
    Project { exprs: Vec<BExpr> },
}

impl Plan {
    /// Whether a scan may stop after `limit` rows (no ORDER BY, no aggregation).
    pub fn early_limit(&self) -> Option<u64> {
        match self.stage {
            Stage::Project { .. } if self.order.is_empty() => self.limit,
            _ => None,
        }
    }

    /// Every column the scan must produce.
    pub fn scan_cols(&self) -> Vec<usize> {
        let mut c = self.filter_cols.clone();
        c.extend(&self.rest_cols);
        c
    }
}

/// Binds `query`. `now_ms` is what `current_date` and `current_timestamp` mean; `extras` are
/// the custom-format columns the inputs have (`SELECT *` shows them after the default ones).
pub fn bind(sql: &str, query: &Query, now_ms: i64, extras: &[usize]) -> Result<Plan, SqlError> {
    let b = Binder { sql, now_ms };
    // Select items with `*` expanded.
    let mut items: Vec<(ast::Expr, String)> = Vec::new();
    for (i, item) in query.items.iter().enumerate() {
        match item {
            SelectItem::Wildcard(pos) => {
                let mut cols: Vec<usize> = (0..DEFAULT_COLUMNS).collect();
                cols.extend(extras.iter().filter(|c| **c >= DEFAULT_COLUMNS));
                for c in cols {
                    items.push((
                        ast::Expr {
                            kind: ExprKind::Name(COLUMNS[c].name.to_string()),
                            pos: *pos,
                        },
                        COLUMNS[c].name.to_string(),
                    ));
                }
            }
            SelectItem::Expr { expr, alias } => {
                let name = alias.clone().unwrap_or_else(|| expr.default_name(i));
                items.push((expr.clone(), name));
            }
        }
    }
    let filter = match &query.filter {
        Some(f) => {
            if let Some(pos) = find_aggregate(f) {
                return Err(b.err(pos, "aggregate functions are not allowed in WHERE"));
            }
            let (e, t) = b.bind(f, &mut Mode::Scan)?;
            b.expect_bool(t, f.pos, "WHERE")?;
            Some(e)
        }
        None => None,
    };
    let aggregated = !query.group_by.is_empty()
        || query.having.is_some()
        || items.iter().any(|(e, _)| find_aggregate(e).is_some())
        || query
            .order_by
            .iter()
            .any(|o| find_aggregate(&o.expr).is_some());
    let alias_of = |name: &str| -> Option<usize> {
        items.iter().position(|(_, n)| n.eq_ignore_ascii_case(name))
    };
    let ordinal = |e: &ast::Expr, what: &str| -> Result<Option<usize>, SqlError> {
        if let ExprKind::Literal(Literal::Int(n)) = e.kind {
            if n < 1 || n as usize > items.len() {
                return Err(b.err(
                    e.pos,
                    format!(
                        "{what} position {n} is not in the select list (1 to {})",
                        items.len()
                    ),
                ));
            }
            return Ok(Some(n as usize - 1));
        }
        Ok(None)
    };

    let mut plan = Plan {
        filter,
        filter_cols: Vec::new(),
        rest_cols: Vec::new(),
        stage: Stage::Project { exprs: Vec::new() },
        having: None,
        project: Vec::new(),
        order: Vec::new(),
        distinct_output: false,
        limit: query.limit,
        columns: Vec::new(),
        key_types: Vec::new(),
    };

    if aggregated || query.distinct {
        // GROUP BY items: ordinals and output names stand for select items.
        let mut group: Vec<ast::Expr> = Vec::new();
        if aggregated {
            for g in &query.group_by {
                let e = if let Some(i) = ordinal(g, "GROUP BY")? {
                    items[i].0.clone()
                } else if let ExprKind::Name(n) = &g.kind {
                    match (schema::lookup(n), alias_of(n)) {
                        (None, Some(i)) => items[i].0.clone(),
                        _ => g.clone(),
                    }
                } else {
                    g.clone()
                };
                if let Some(pos) = find_aggregate(&e) {
                    return Err(b.err(pos, "aggregate functions are not allowed in GROUP BY"));
                }
                group.push(e);
            }
        } else {
            // SELECT DISTINCT without aggregates: group by every select item.
            group = items.iter().map(|(e, _)| e.clone()).collect();
        }
        plan.distinct_output = query.distinct && aggregated;
        let mut keys = Vec::new();
        let mut post = Post::default();
        for g in &group {
            let (e, t) = b.bind(g, &mut Mode::Scan)?;
            keys.push(e);
            plan.key_types.push(t);
            post.keys.push((g.canon(), t));
        }
        let mut mode = Mode::Post(post);
        for (e, name) in &items {
            let (be, t) = b.bind(e, &mut mode)?;
            plan.project.push(be);
            plan.columns.push((name.clone(), t));
        }
        if let Some(h) = &query.having {
            let (e, t) = b.bind(h, &mut mode)?;
            b.expect_bool(t, h.pos, "HAVING")?;
            plan.having = Some(e);
        }
        for o in &query.order_by {
            let expr = if let Some(i) = ordinal(&o.expr, "ORDER BY")? {
                plan.project[i].clone()
            } else {
                match (&o.expr.kind, mode_key(&mode, &o.expr)) {
                    (ExprKind::Name(n), None) if alias_of(n).is_some() => {
                        plan.project[alias_of(n).unwrap_or(0)].clone()
                    }
                    _ => b.bind(&o.expr, &mut mode)?.0,
                }
            };
            plan.order.push(SortKey {
                expr,
                desc: o.desc,
                nulls_first: o.nulls_first,
            });
        }
        let Mode::Post(post) = mode else {
            return Err(b.err(0, "internal: binding mode changed"));
        };
        plan.stage = Stage::Aggregate {
            keys,
            aggs: post.aggs.into_iter().map(|(_, a)| a).collect(),
        };
    } else {
        let mut exprs = Vec::new();
        for (e, name) in &items {
            let (be, t) = b.bind(e, &mut Mode::Scan)?;
            exprs.push(be);
            plan.columns.push((name.clone(), t));
        }
        let n = exprs.len();
        plan.project = (0..n).map(BExpr::Col).collect();
        for o in &query.order_by {
            let slot = if let Some(i) = ordinal(&o.expr, "ORDER BY")? {
                i
            } else {
                let by_alias = match &o.expr.kind {
                    ExprKind::Name(name) => alias_of(name),
                    _ => None,
                };
                match by_alias {
                    Some(i) => i,
                    None => {
                        let canon = o.expr.canon();
                        match items.iter().position(|(e, _)| e.canon() == canon) {
                            Some(i) => i,
                            None => {
                                exprs.push(b.bind(&o.expr, &mut Mode::Scan)?.0);
                                exprs.len() - 1
                            }
                        }
                    }
                }
            };
            plan.order.push(SortKey {
                expr: BExpr::Col(slot),
                desc: o.desc,
                nulls_first: o.nulls_first,
            });
        }
        plan.stage = Stage::Project { exprs };
    }

    // Columns for the scan.
    if let Some(f) = &plan.filter {
        f.columns(&mut plan.filter_cols);
    }
    let mut rest = Vec::new();
    match &plan.stage {
        Stage::Aggregate { keys, aggs } => {
            keys.iter().for_each(|k| k.columns(&mut rest));
            aggs.iter()
                .flat_map(|a| a.args.iter())
                .for_each(|e| e.columns(&mut rest));
        }
        Stage::Project { exprs } => exprs.iter().for_each(|e| e.columns(&mut rest)),
    }
    plan.rest_cols = rest
        .into_iter()
        .filter(|c| !plan.filter_cols.contains(c))
        .collect();
    Ok(plan)
}

/// The first aggregate call in `e`, by position.
fn find_aggregate(e: &ast::Expr) -> Option<usize> {
    let mut found = None;
    walk(e, &mut |x| {
        if let ExprKind::Call { name, star, .. } = &x.kind {
            if found.is_none() && (AggFunc::by_name(name).is_some() || *star) {
                found = Some(x.pos);
            }
        }
    });
    found
}

fn walk(e: &ast::Expr, f: &mut dyn FnMut(&ast::Expr)) {
    f(e);
    match &e.kind {
        ExprKind::Name(_) | ExprKind::Literal(_) => {}
        ExprKind::Neg(x) | ExprKind::Not(x) => walk(x, f),
        ExprKind::IsNull { expr, .. } | ExprKind::Cast { expr, .. } => walk(expr, f),
        ExprKind::Binary(_, a, b) => {
            walk(a, f);
            walk(b, f);
        }
        ExprKind::InList { expr, list, .. } => {
            walk(expr, f);
            list.iter().for_each(|x| walk(x, f));
        }
        ExprKind::Between {
            expr, low, high, ..
        } => {
            walk(expr, f);
            walk(low, f);
            walk(high, f);
        }
        ExprKind::Like {
            expr,
            pattern,
            escape,
            ..
        } => {
            walk(expr, f);
            walk(pattern, f);
            if let Some(x) = escape {
                walk(x, f);
            }
        }
        ExprKind::Case {
            operand,
            whens,
            otherwise,
        } => {
            if let Some(x) = operand {
                walk(x, f);
            }
            for (w, t) in whens {
                walk(w, f);
                walk(t, f);
            }
            if let Some(x) = otherwise {
                walk(x, f);
            }
        }
        ExprKind::Call { args, .. } => args.iter().for_each(|x| walk(x, f)),
    }
}

#[derive(Default)]
struct Post {
    /// GROUP BY expressions (canonical text) and their types: slots 0..n.
    keys: Vec<(String, Type)>,
    /// Aggregates by canonical text: slots n.. in this order.
    aggs: Vec<(String, AggSpec)>,
}

enum Mode {
    /// Over table columns; aggregates not allowed.
    Scan,
    /// Over the slots of an aggregation.
    Post(Post),
}

fn mode_key(mode: &Mode, e: &ast::Expr) -> Option<usize> {
    match mode {
        Mode::Post(p) => {
            let c = e.canon();
            p.keys.iter().position(|(k, _)| *k == c)
        }
        Mode::Scan => None,
    }
}

struct Binder<'a> {
    sql: &'a str,
    now_ms: i64,
}

type Bound = (BExpr, Type);

const FUNCTIONS: &[&str] = &[
    "from_unixtime",
    "to_unixtime",
    "date_trunc",
    "date_format",
    "date_add",
    "date_diff",
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "second",
    "day_of_week",
    "dow",
    "day_of_year",
    "doy",
    "date",
    "lower",
    "upper",
    "length",
    "trim",
    "concat",
    "substr",
    "substring",
    "replace",
    "strpos",
    "split_part",
    "starts_with",
    "coalesce",
    "nullif",
    "if",
    "greatest",
    "least",
    "abs",
    "round",
    "floor",
    "ceil",
    "ceiling",
    "contains",
    "is_private",
    "is_private_ip",
    "ip_prefix",
    "typeof",
    "now",
    "current_date",
    "current_timestamp",
    "localtimestamp",
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "approx_distinct",
    "count_if",
    "arbitrary",
    "any_value",
    "max_by",
    "min_by",
];

impl Binder<'_> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> SqlError {
        SqlError::at(self.sql, pos, msg)
    }

    fn expect_bool(&self, t: Type, pos: usize, what: &str) -> Result<(), SqlError> {
        if matches!(t, Type::Bool | Type::Unknown) {
            Ok(())
        } else {
            Err(self.err(
                pos,
                format!("{what} must be a boolean condition, not {}", t.sql_name()),
            ))
        }
    }

    /// Folds an expression without columns into a constant, so it runs once, not per row.
    fn fold(&self, (e, t): Bound, pos: usize) -> Result<Bound, SqlError> {
        if matches!(e, BExpr::Const(_)) || !e.is_const() {
            return Ok((e, t));
        }
        match e.eval(&[]) {
            Ok(v) => Ok((BExpr::Const(v), t)),
            Err(x) => Err(self.err(pos, x.0)),
        }
    }

    fn bind(&self, e: &ast::Expr, mode: &mut Mode) -> Result<Bound, SqlError> {
        if let Some(i) = mode_key(mode, e) {
            let Mode::Post(p) = mode else {
                return Err(self.err(e.pos, "internal: no keys"));
            };
            return Ok((BExpr::Col(i), p.keys[i].1));
        }
        let bound = self.bind_inner(e, mode)?;
        self.fold(bound, e.pos)
    }

    fn bind_inner(&self, e: &ast::Expr, mode: &mut Mode) -> Result<Bound, SqlError> {
        let pos = e.pos;
        match &e.kind {
            ExprKind::Name(name) => match schema::lookup(name) {
                Some(c) => match mode {
                    Mode::Scan => Ok((BExpr::Col(c), COLUMNS[c].ty)),
                    Mode::Post(_) => Err(self.err(
                        pos,
                        format!(
                            "column '{}' must appear in GROUP BY or be used in an aggregate function",
                            short(name)
                        ),
                    )),
                },
                None => Err(self.err(pos, unknown_column(name))),
            },
            ExprKind::Literal(l) => self.literal(l, pos),
            ExprKind::Neg(x) => {
                let (b, t) = self.bind(x, mode)?;
                if !(t.is_numeric() || t == Type::Interval) {
                    return Err(self.err(pos, format!("cannot negate {}", t.sql_name())));
                }
                Ok((BExpr::Neg(Box::new(b)), t))
            }
            ExprKind::Not(x) => {
                let (b, t) = self.bind(x, mode)?;
                self.expect_bool(t, x.pos, "the operand of NOT")?;
                Ok((BExpr::Not(Box::new(b)), Type::Bool))
            }
            ExprKind::Binary(op, l, r) => {
                let left = self.bind(l, mode)?;
                let right = self.bind(r, mode)?;
                self.binary(*op, left, right, pos, r.pos)
            }
            ExprKind::IsNull { expr, negated } => {
                let (b, _) = self.bind(expr, mode)?;
                Ok((BExpr::IsNull(Box::new(b), *negated), Type::Bool))
            }
            ExprKind::InList {
                expr,
                list,
                negated,
            } => {
                let (x, xt) = self.bind(expr, mode)?;
                let mut items = Vec::new();
                for item in list {
                    let (b, t) = self.bind(item, mode)?;
                    let (_, b) = self.comparable(xt, (b, t), item.pos)?;
                    items.push(b);
                }
                let set = if items.iter().all(|i| matches!(i, BExpr::Const(_))) {
                    let mut set = HashSet::new();
                    let mut has_null = false;
                    for i in &items {
                        if let BExpr::Const(v) = i {
                            has_null |= v.is_null();
                            set.insert(v.clone());
                        }
                    }
                    // NULL in the list makes a miss unknown: evaluate it the long way.
                    (!has_null).then_some(set)
                } else {
                    None
                };
                Ok((
                    BExpr::In {
                        expr: Box::new(x),
                        list: items,
                        set,
                        negated: *negated,
                    },
                    Type::Bool,
                ))
            }
            ExprKind::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let x = self.bind(expr, mode)?;
                let lo = self.bind(low, mode)?;
                let hi = self.bind(high, mode)?;
                let (ge, _) = self.binary(BinOp::Ge, x.clone(), lo, pos, low.pos)?;
                let (le, _) = self.binary(BinOp::Le, x, hi, pos, high.pos)?;
                let both = BExpr::And(Box::new(ge), Box::new(le));
                Ok((
                    if *negated {
                        BExpr::Not(Box::new(both))
                    } else {
                        both
                    },
                    Type::Bool,
                ))
            }
            ExprKind::Like {
                expr,
                pattern,
                escape,
                negated,
            } => {
                let (x, xt) = self.bind(expr, mode)?;
                let (p, pt) = self.bind(pattern, mode)?;
                if !xt.is_text() || !pt.is_text() {
                    return Err(self.err(pos, "LIKE compares strings"));
                }
                let escape = match escape {
                    None => None,
                    Some(esc) => match self.bind(esc, mode)?.0 {
                        BExpr::Const(Value::Str(s)) if s.chars().count() == 1 => s.chars().next(),
                        _ => {
                            return Err(
                                self.err(esc.pos, "ESCAPE takes a string of one character")
                            )
                        }
                    },
                };
                let compiled = match &p {
                    BExpr::Const(Value::Str(s)) => Some(Arc::new(
                        Like::new(s, escape).map_err(|x| self.err(pattern.pos, x.0))?,
                    )),
                    _ => None,
                };
                Ok((
                    BExpr::Like {
                        expr: Box::new(x),
                        pattern: Box::new(p),
                        escape,
                        compiled,
                        negated: *negated,
                    },
                    Type::Bool,
                ))
            }
            ExprKind::Case {
                operand,
                whens,
                otherwise,
            } => {
                let op = match operand {
                    Some(o) => Some(self.bind(o, mode)?),
                    None => None,
                };
                let mut conds = Vec::new();
                let mut results = Vec::new();
                for (w, t) in whens {
                    let wb = self.bind(w, mode)?;
                    let cond = match &op {
                        Some(o) => self.binary(BinOp::Eq, o.clone(), wb, w.pos, w.pos)?.0,
                        None => {
                            self.expect_bool(wb.1, w.pos, "WHEN")?;
                            wb.0
                        }
                    };
                    conds.push(cond);
                    results.push((self.bind(t, mode)?, t.pos));
                }
                if let Some(o) = otherwise {
                    results.push((self.bind(o, mode)?, o.pos));
                }
                let (results, ty) = self.unify(results)?;
                let mut results = results.into_iter();
                let whens = conds
                    .into_iter()
                    .zip(results.by_ref())
                    .collect::<Vec<_>>();
                let other = results.next().map(Box::new);
                Ok((BExpr::Case(whens, other), ty))
            }
            ExprKind::Cast { expr, to, try_cast } => {
                let (x, xt) = self.bind(expr, mode)?;
                let target = cast_type(to).ok_or_else(|| {
                    self.err(pos, format!("unknown type '{}'", short(to)))
                })?;
                let ok = match (xt, target) {
                    (Type::Unknown, _) | (_, Type::Str) => true,
                    (a, b) if a == b => true,
                    (Type::Int | Type::Float | Type::Bool, Type::Int | Type::Float) => true,
                    (Type::Int, Type::Bool) => true,
                    (Type::Str, _) => true,
                    (Type::Ip, Type::Ip) => true,
                    (Type::Date | Type::Timestamp, Type::Date | Type::Timestamp) => true,
                    _ => false,
                };
                if !ok {
                    return Err(self.err(
                        pos,
                        format!("cannot cast {} to {}", xt.sql_name(), target.sql_name()),
                    ));
                }
                Ok((BExpr::Cast(Box::new(x), target, *try_cast), target))
            }
            ExprKind::Call {
                name,
                args,
                distinct,
                star,
            } => self.call(name, args, *distinct, *star, pos, mode),
        }
    }

    fn literal(&self, l: &Literal, pos: usize) -> Result<Bound, SqlError> {
        Ok(match l {
            Literal::Null => (BExpr::Const(Value::Null), Type::Unknown),
            Literal::Bool(b) => (BExpr::Const(Value::Bool(*b)), Type::Bool),
            Literal::Int(n) => (BExpr::Const(Value::Int(*n)), Type::Int),
            Literal::Float(f) => (BExpr::Const(Value::Float(*f)), Type::Float),
            Literal::Str(s) => (BExpr::Const(Value::str(s)), Type::Str),
            Literal::Date(s) => match parse_date(s) {
                Some(d) => (BExpr::Const(Value::Date(d)), Type::Date),
                None => return Err(self.err(pos, format!("invalid DATE '{}'", short(s)))),
            },
            Literal::Timestamp(s) => match parse_timestamp(s) {
                Some(t) => (BExpr::Const(Value::Timestamp(t)), Type::Timestamp),
                None => return Err(self.err(pos, format!("invalid TIMESTAMP '{}'", short(s)))),
            },
            Literal::Interval(ms) => (BExpr::Const(Value::Interval(*ms)), Type::Interval),
        })
    }

    /// Makes `other` comparable with a value of type `with`: string constants become addresses
    /// or times when compared with those. Returns the common type.
    fn comparable(&self, with: Type, other: Bound, pos: usize) -> Result<(Type, BExpr), SqlError> {
        let (e, t) = other;
        if let BExpr::Const(Value::Str(s)) = &e {
            match with {
                Type::Ip => {
                    if let Ok(ip) = s.trim().parse::<IpAddr>() {
                        return Ok((Type::Ip, BExpr::Const(Value::Ip(ip))));
                    }
                }
                Type::Timestamp => {
                    if let Some(ts) = parse_timestamp(s) {
                        return Ok((Type::Timestamp, BExpr::Const(Value::Timestamp(ts))));
                    }
                }
                Type::Date => {
                    if let Some(d) = parse_date(s) {
                        return Ok((Type::Date, BExpr::Const(Value::Date(d))));
                    }
                }
                _ => {}
            }
        }
        let ok = matches!((with, t), (Type::Unknown, _) | (_, Type::Unknown))
            || (with.is_numeric() && t.is_numeric())
            || (with.is_text() && t.is_text())
            || (matches!(with, Type::Date | Type::Timestamp)
                && matches!(t, Type::Date | Type::Timestamp))
            || with == t;
        if !ok {
            return Err(self.err(
                pos,
                format!("cannot compare {} with {}", with.sql_name(), t.sql_name()),
            ));
        }
        Ok((t, e))
    }

    fn binary(
        &self,
        op: BinOp,
        l: Bound,
        r: Bound,
        pos: usize,
        rpos: usize,
    ) -> Result<Bound, SqlError> {
        let cmp = match op {
            BinOp::Eq => Some(Cmp::Eq),
            BinOp::Ne => Some(Cmp::Ne),
            BinOp::Lt => Some(Cmp::Lt),
            BinOp::Le => Some(Cmp::Le),
            BinOp::Gt => Some(Cmp::Gt),
            BinOp::Ge => Some(Cmp::Ge),
            _ => None,
        };
        if let Some(c) = cmp {
            // Constants adapt to the column side, whichever side that is.
            let (l, r) = if matches!(l.0, BExpr::Const(_)) && !matches!(r.0, BExpr::Const(_)) {
                let (_, le) = self.comparable(r.1, l, pos)?;
                (le, r.0)
            } else {
                let (_, re) = self.comparable(l.1, r, rpos)?;
                (l.0, re)
            };
            return Ok((BExpr::Cmp(c, Box::new(l), Box::new(r)), Type::Bool));
        }
        let (le, lt) = l;
        let (re, rt) = r;
        let bad = || {
            self.err(
                pos,
                format!(
                    "cannot apply {} to {} and {}",
                    op.symbol(),
                    lt.sql_name(),
                    rt.sql_name()
                ),
            )
        };
        let (l, r) = (Box::new(le), Box::new(re));
        match op {
            BinOp::And | BinOp::Or => {
                if !matches!(lt, Type::Bool | Type::Unknown)
                    || !matches!(rt, Type::Bool | Type::Unknown)
                {
                    return Err(bad());
                }
                Ok((
                    if op == BinOp::And {
                        BExpr::And(l, r)
                    } else {
                        BExpr::Or(l, r)
                    },
                    Type::Bool,
                ))
            }
            BinOp::Concat => Ok((BExpr::Concat(l, r), Type::Str)),
            _ => {
                let a = match op {
                    BinOp::Add => Arith::Add,
                    BinOp::Sub => Arith::Sub,
                    BinOp::Mul => Arith::Mul,
                    BinOp::Div => Arith::Div,
                    _ => Arith::Mod,
                };
                use Type::*;
                let t = match (lt, rt) {
                    (Int | Unknown, Int | Unknown) => Int,
                    (a1, b1) if a1.is_numeric() && b1.is_numeric() => Float,
                    (Timestamp, Interval) | (Interval, Timestamp)
                        if matches!(a, Arith::Add | Arith::Sub)
                            && !(lt == Interval && a == Arith::Sub) =>
                    {
                        Timestamp
                    }
                    (Date, Interval) | (Interval, Date)
                        if matches!(a, Arith::Add | Arith::Sub)
                            && !(lt == Interval && a == Arith::Sub) =>
                    {
                        Date
                    }
                    (Timestamp, Timestamp) | (Date, Date) if a == Arith::Sub => Interval,
                    (Interval, Interval) if matches!(a, Arith::Add | Arith::Sub) => Interval,
                    _ => return Err(bad()),
                };
                Ok((BExpr::Arith(a, l, r), t))
            }
        }
    }

    /// One type for CASE branches, coalesce arguments...: NULL fits anything, integers widen
    /// to double, addresses to varchar, dates to timestamps.
    fn unify(&self, items: Vec<(Bound, usize)>) -> Result<(Vec<BExpr>, Type), SqlError> {
        let mut ty = Type::Unknown;
        for ((_, t), pos) in &items {
            ty = match (ty, *t) {
                (Type::Unknown, x) | (x, Type::Unknown) => x,
                (a, b) if a == b => a,
                (Type::Int, Type::Float) | (Type::Float, Type::Int) => Type::Float,
                (Type::Ip, Type::Str) | (Type::Str, Type::Ip) => Type::Str,
                (Type::Date, Type::Timestamp) | (Type::Timestamp, Type::Date) => Type::Timestamp,
                (a, b) => {
                    return Err(self.err(
                        *pos,
                        format!("{} and {} do not mix here", a.sql_name(), b.sql_name()),
                    ))
                }
            };
        }
        let out = items
            .into_iter()
            .map(|((e, t), _)| {
                if t != ty && t != Type::Unknown {
                    BExpr::Cast(Box::new(e), ty, false)
                } else {
                    e
                }
            })
            .collect();
        Ok((out, ty))
    }

    fn call(
        &self,
        name: &str,
        args: &[ast::Expr],
        distinct: bool,
        star: bool,
        pos: usize,
        mode: &mut Mode,
    ) -> Result<Bound, SqlError> {
        let lname = name.to_ascii_lowercase();
        if star && lname != "count" {
            return Err(self.err(pos, format!("{lname}(*) is not a function; count(*) is")));
        }
        let agg = if star {
            Some(AggFunc::CountStar)
        } else {
            AggFunc::by_name(&lname)
        };
        if let Some(func) = agg {
            return self.aggregate(&lname, func, args, distinct, pos, mode);
        }
        if distinct {
            return Err(self.err(pos, format!("DISTINCT in {lname}() is for aggregates only")));
        }
        let mut bound = Vec::new();
        for a in args {
            bound.push((self.bind(a, mode)?, a.pos));
        }
        let n = bound.len();
        let arity = |lo: usize, hi: usize| -> Result<(), SqlError> {
            if n < lo || n > hi {
                let want = if lo == hi {
                    format!("{lo}")
                } else if hi == usize::MAX {
                    format!("at least {lo}")
                } else {
                    format!("{lo} to {hi}")
                };
                return Err(self.err(
                    pos,
                    format!(
                        "{lname}() takes {want} argument{}, not {n}",
                        if want == "1" { "" } else { "s" }
                    ),
                ));
            }
            Ok(())
        };
        let ty = |i: usize| bound.get(i).map_or(Type::Unknown, |((_, t), _)| *t);
        let apos = |i: usize| bound.get(i).map_or(pos, |(_, p)| *p);
        let want = |i: usize, ok: bool, what: &str| -> Result<(), SqlError> {
            if ok {
                Ok(())
            } else {
                Err(self.err(
                    apos(i),
                    format!(
                        "{lname}() argument {} must be {what}, not {}",
                        i + 1,
                        ty(i).sql_name()
                    ),
                ))
            }
        };
        let is_time = |t: Type| matches!(t, Type::Timestamp | Type::Date | Type::Unknown);
        let const_unit = |i: usize| -> Result<Unit, SqlError> {
            match bound.get(i).map(|((e, _), _)| e) {
                Some(BExpr::Const(Value::Str(s))) => Unit::parse(s)
                    .ok_or_else(|| self.err(apos(i), format!("unknown unit '{}'", short(s)))),
                _ => Err(self.err(
                    apos(i),
                    format!("{lname}() takes the unit as a string constant, e.g. 'day'"),
                )),
            }
        };
        let (func, rty) = match lname.as_str() {
            "current_date" => {
                arity(0, 0)?;
                return Ok((
                    BExpr::Const(Value::Date(self.now_ms.div_euclid(86_400_000))),
                    Type::Date,
                ));
            }
            "current_timestamp" | "now" | "localtimestamp" => {
                arity(0, 0)?;
                return Ok((BExpr::Const(Value::Timestamp(self.now_ms)), Type::Timestamp));
            }
            "from_unixtime" => {
                arity(1, 1)?;
                want(0, ty(0).is_numeric(), "a number")?;
                (Func::FromUnixtime, Type::Timestamp)
            }
            "to_unixtime" => {
                arity(1, 1)?;
                want(0, is_time(ty(0)), "a timestamp")?;
                (Func::ToUnixtime, Type::Float)
            }
            "date_trunc" => {
                arity(2, 2)?;
                let u = const_unit(0)?;
                want(1, is_time(ty(1)), "a timestamp or date")?;
                let t = if ty(1) == Type::Date {
                    Type::Date
                } else {
                    Type::Timestamp
                };
                (Func::DateTrunc(u), t)
            }
            "date_format" => {
                arity(2, 2)?;
                want(0, is_time(ty(0)), "a timestamp")?;
                want(1, ty(1).is_text(), "a format string")?;
                (Func::DateFormat, Type::Str)
            }
            "date_add" => {
                arity(3, 3)?;
                let u = const_unit(0)?;
                want(1, matches!(ty(1), Type::Int | Type::Unknown), "an integer")?;
                want(2, is_time(ty(2)), "a timestamp or date")?;
                let t = if ty(2) == Type::Date {
                    Type::Date
                } else {
                    Type::Timestamp
                };
                (Func::DateAdd(u), t)
            }
            "date_diff" => {
                arity(3, 3)?;
                let u = const_unit(0)?;
                want(1, is_time(ty(1)), "a timestamp or date")?;
                want(2, is_time(ty(2)), "a timestamp or date")?;
                (Func::DateDiff(u), Type::Int)
            }
            "year" | "month" | "day" | "hour" | "minute" | "second" | "day_of_week" | "dow"
            | "day_of_year" | "doy" => {
                arity(1, 1)?;
                want(0, is_time(ty(0)), "a timestamp or date")?;
                let f = match lname.as_str() {
                    "year" => Field::Year,
                    "month" => Field::Month,
                    "day" => Field::Day,
                    "hour" => Field::Hour,
                    "minute" => Field::Minute,
                    "second" => Field::Second,
                    "day_of_week" | "dow" => Field::DayOfWeek,
                    _ => Field::DayOfYear,
                };
                (Func::Extract(f), Type::Int)
            }
            "date" => {
                arity(1, 1)?;
                want(
                    0,
                    is_time(ty(0)) || ty(0).is_text(),
                    "a timestamp or string",
                )?;
                (Func::ToDate, Type::Date)
            }
            "lower" | "upper" | "length" | "trim" => {
                arity(1, 1)?;
                want(0, ty(0).is_text(), "a string")?;
                match lname.as_str() {
                    "lower" => (Func::Lower, Type::Str),
                    "upper" => (Func::Upper, Type::Str),
                    "trim" => (Func::Trim, Type::Str),
                    _ => (Func::Length, Type::Int),
                }
            }
            "concat" => {
                arity(1, usize::MAX)?;
                (Func::Concat, Type::Str)
            }
            "substr" | "substring" => {
                arity(2, 3)?;
                want(0, ty(0).is_text(), "a string")?;
                want(1, matches!(ty(1), Type::Int | Type::Unknown), "an integer")?;
                want(2, matches!(ty(2), Type::Int | Type::Unknown), "an integer")?;
                (Func::Substr, Type::Str)
            }
            "replace" => {
                arity(2, 3)?;
                for i in 0..n {
                    want(i, ty(i).is_text(), "a string")?;
                }
                (Func::Replace, Type::Str)
            }
            "strpos" | "starts_with" => {
                arity(2, 2)?;
                want(0, ty(0).is_text(), "a string")?;
                want(1, ty(1).is_text(), "a string")?;
                if lname == "strpos" {
                    (Func::Strpos, Type::Int)
                } else {
                    (Func::StartsWith, Type::Bool)
                }
            }
            "split_part" => {
                arity(3, 3)?;
                want(0, ty(0).is_text(), "a string")?;
                want(1, ty(1).is_text(), "a string")?;
                want(2, matches!(ty(2), Type::Int | Type::Unknown), "an integer")?;
                (Func::SplitPart, Type::Str)
            }
            "coalesce" | "greatest" | "least" => {
                arity(1, usize::MAX)?;
                let (args, t) = self.unify(bound)?;
                let f = match lname.as_str() {
                    "coalesce" => Func::Coalesce,
                    "greatest" => Func::Greatest,
                    _ => Func::Least,
                };
                return Ok((BExpr::Call(f, args), t));
            }
            "nullif" => {
                arity(2, 2)?;
                let t = ty(0);
                let mut it = bound.into_iter();
                let (a, _) = it
                    .next()
                    .map(|x| x.0)
                    .unwrap_or((BExpr::Const(Value::Null), Type::Unknown));
                let b = it
                    .next()
                    .map(|x| x.0)
                    .unwrap_or((BExpr::Const(Value::Null), Type::Unknown));
                let (_, b) = self.comparable(t, b, pos)?;
                return Ok((BExpr::Call(Func::NullIf, vec![a, b]), t));
            }
            "if" => {
                arity(2, 3)?;
                let mut it = bound.into_iter();
                let ((c, ct), cpos) = it
                    .next()
                    .unwrap_or(((BExpr::Const(Value::Null), Type::Unknown), pos));
                self.expect_bool(ct, cpos, "the condition of if()")?;
                let (branches, t) = self.unify(it.collect())?;
                let mut args = vec![c];
                args.extend(branches);
                return Ok((BExpr::Call(Func::If, args), t));
            }
            "abs" | "floor" | "ceil" | "ceiling" => {
                arity(1, 1)?;
                want(0, ty(0).is_numeric(), "a number")?;
                let f = match lname.as_str() {
                    "abs" => Func::Abs,
                    "floor" => Func::Floor,
                    _ => Func::Ceil,
                };
                (
                    f,
                    if ty(0) == Type::Float {
                        Type::Float
                    } else {
                        Type::Int
                    },
                )
            }
            "round" => {
                arity(1, 2)?;
                want(0, ty(0).is_numeric(), "a number")?;
                want(1, matches!(ty(1), Type::Int | Type::Unknown), "an integer")?;
                (
                    Func::Round,
                    if ty(0) == Type::Float {
                        Type::Float
                    } else {
                        Type::Int
                    },
                )
            }
            "contains" => {
                arity(2, 2)?;
                want(0, ty(0).is_text(), "a CIDR string such as '10.0.0.0/8'")?;
                want(1, ty(1).is_text(), "an address")?;
                let net = match bound.first().map(|((e, _), _)| e) {
                    Some(BExpr::Const(Value::Str(s))) => {
                        Some(parse_cidr(s).map_err(|x| self.err(apos(0), x.0))?)
                    }
                    _ => None,
                };
                (Func::Contains(net), Type::Bool)
            }
            "is_private" | "is_private_ip" => {
                arity(1, 1)?;
                want(0, ty(0).is_text(), "an address")?;
                (Func::IsPrivate, Type::Bool)
            }
            "ip_prefix" => {
                arity(2, 2)?;
                want(0, ty(0).is_text(), "an address")?;
                want(
                    1,
                    matches!(ty(1), Type::Int | Type::Unknown),
                    "a prefix length",
                )?;
                (Func::IpPrefix, Type::Str)
            }
            "typeof" => {
                arity(1, 1)?;
                (Func::TypeOf(ty(0)), Type::Str)
            }
            _ => {
                let mut msg = format!("unknown function '{}'", short(name));
                if let Some(s) = suggest(&lname, FUNCTIONS) {
                    msg.push_str(&format!(" (did you mean '{s}'?)"));
                }
                return Err(self.err(pos, msg));
            }
        };
        let args = bound.into_iter().map(|((e, _), _)| e).collect();
        Ok((BExpr::Call(func, args), rty))
    }

    fn aggregate(
        &self,
        lname: &str,
        func: AggFunc,
        args: &[ast::Expr],
        distinct: bool,
        pos: usize,
        mode: &mut Mode,
    ) -> Result<Bound, SqlError> {
        let Mode::Post(_) = mode else {
            return Err(self.err(
                pos,
                format!("aggregate function {lname}() is not allowed here"),
            ));
        };
        let want = match func {
            AggFunc::CountStar => 0,
            AggFunc::MaxBy | AggFunc::MinBy => 2,
            _ => 1,
        };
        if args.len() != want {
            return Err(self.err(
                pos,
                format!(
                    "{lname}() takes {want} argument{}",
                    if want == 1 { "" } else { "s" }
                ),
            ));
        }
        let mut bound = Vec::new();
        for a in args {
            if let Some(p) = find_aggregate(a) {
                return Err(self.err(p, "aggregate functions cannot be nested"));
            }
            bound.push(self.bind(a, &mut Mode::Scan)?);
        }
        let t0 = bound.first().map_or(Type::Unknown, |b| b.1);
        let ty = match func {
            AggFunc::CountStar | AggFunc::Count | AggFunc::ApproxDistinct | AggFunc::CountIf => {
                if func == AggFunc::CountIf && !matches!(t0, Type::Bool | Type::Unknown) {
                    return Err(self.err(pos, "count_if() takes a boolean condition"));
                }
                Type::Int
            }
            AggFunc::Sum | AggFunc::Avg => {
                if !t0.is_numeric() {
                    return Err(self.err(
                        pos,
                        format!("{lname}() takes a number, not {}", t0.sql_name()),
                    ));
                }
                if func == AggFunc::Avg || t0 == Type::Float {
                    Type::Float
                } else {
                    Type::Int
                }
            }
            AggFunc::Min | AggFunc::Max | AggFunc::Arbitrary | AggFunc::MaxBy | AggFunc::MinBy => {
                t0
            }
        };
        let canon = ast::Expr {
            kind: ExprKind::Call {
                name: lname.to_string(),
                args: args.to_vec(),
                distinct,
                star: func == AggFunc::CountStar,
            },
            pos: 0,
        }
        .canon();
        let Mode::Post(post) = mode else {
            return Err(self.err(pos, "internal: binding mode changed"));
        };
        let slot = match post.aggs.iter().position(|(c, _)| *c == canon) {
            Some(i) => i,
            None => {
                post.aggs.push((
                    canon,
                    AggSpec {
                        func,
                        args: bound.into_iter().map(|b| b.0).collect(),
                        distinct,
                        ty,
                        arg_ty: t0,
                    },
                ));
                post.aggs.len() - 1
            }
        };
        Ok((BExpr::Col(post.keys.len() + slot), ty))
    }
}

fn cast_type(name: &str) -> Option<Type> {
    Some(match name.to_ascii_lowercase().as_str() {
        "bigint" | "int" | "integer" | "smallint" | "tinyint" => Type::Int,
        "double" | "real" | "float" | "decimal" => Type::Float,
        "varchar" | "string" | "char" => Type::Str,
        "boolean" | "bool" => Type::Bool,
        "timestamp" => Type::Timestamp,
        "date" => Type::Date,
        "ipaddress" => Type::Ip,
        _ => return None,
    })
}

fn unknown_column(name: &str) -> String {
    let names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
    let mut msg = format!("unknown column '{}'", short(name));
    if let Some(s) = suggest(&name.to_ascii_lowercase(), &names) {
        msg.push_str(&format!(" (did you mean '{s}'?)"));
    } else {
        msg.push_str(" (columns: srcaddr, dstaddr, srcport, dstport, protocol, packets, bytes, start, \"end\", action, log_status, ...)");
    }
    msg
}

/// The closest known name within an edit distance of 2.
fn suggest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    if name.len() > 64 {
        return None;
    }
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn short(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out
}
