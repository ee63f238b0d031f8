//! A recursive-descent parser for the SELECT subset (see docs/flows.md for the grammar). It
//! never panics and bounds its recursion, so any text gives a query or a positioned error.

use crate::ast::*;
use crate::error::SqlError;
use crate::lexer::{lex, Tok, Token};

/// Nesting deeper than this (parentheses, NOT, unary minus, CASE) is refused rather than
/// risking the stack.
const MAX_DEPTH: usize = 64;

/// Words that end an expression or a select item, so they are never taken as an alias.
const RESERVED: &[&str] = &[
    "select",
    "from",
    "where",
    "group",
    "by",
    "having",
    "order",
    "limit",
    "and",
    "or",
    "not",
    "as",
    "on",
    "join",
    "union",
    "asc",
    "desc",
    "nulls",
    "is",
    "in",
    "like",
    "between",
    "case",
    "when",
    "then",
    "else",
    "end",
    "distinct",
    "all",
    "with",
    "offset",
    "escape",
    "cross",
    "inner",
    "left",
    "right",
    "full",
    "intersect",
    "except",
];

pub fn parse(sql: &str) -> Result<Query, SqlError> {
    let tokens = lex(sql)?;
    let mut p = Parser {
        sql,
        tokens,
        i: 0,
        depth: 0,
        ops: 0,
    };
    let q = p.query()?;
    p.eat_sym(";");
    if !matches!(p.peek(), Tok::End) {
        return Err(p.error_here("unexpected text after the end of the query"));
    }
    Ok(q)
}

struct Parser<'a> {
    sql: &'a str,
    tokens: Vec<Token>,
    i: usize,
    depth: usize,
    /// Binary operators so far: a long chain (`1+1+1...`) makes a tree as deep as it is long,
    /// which later recursive steps walk, so it is bounded too.
    ops: usize,
}

/// At most this many binary operators in one query.
const MAX_OPS: usize = 1000;

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.i).map_or(&Tok::End, |t| &t.tok)
    }

    fn peek_at(&self, n: usize) -> &Tok {
        self.tokens.get(self.i + n).map_or(&Tok::End, |t| &t.tok)
    }

    fn pos(&self) -> usize {
        self.tokens.get(self.i).map_or(self.sql.len(), |t| t.pos)
    }

    fn advance(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.i < self.tokens.len() {
            self.i += 1;
        }
        t
    }

    fn error_at(&self, pos: usize, msg: impl Into<String>) -> SqlError {
        SqlError::at(self.sql, pos, msg)
    }

    fn error_here(&self, msg: &str) -> SqlError {
        let found = match self.peek() {
            Tok::End => "end of query".to_string(),
            Tok::Ident { text, .. } => format!("'{}'", short(text)),
            Tok::Number(n) => format!("'{}'", short(n)),
            Tok::Str(s) => format!("string '{}'", short(s)),
            Tok::Sym(s) => format!("'{s}'"),
        };
        self.error_at(self.pos(), format!("{msg}, found {found}"))
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident { text, quoted: false } if text.eq_ignore_ascii_case(kw))
    }

    fn is_kw_at(&self, n: usize, kw: &str) -> bool {
        matches!(self.peek_at(n), Tok::Ident { text, quoted: false } if text.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), SqlError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.error_here(&format!("expected {}", kw.to_ascii_uppercase())))
        }
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Tok::Sym(t) if *t == s) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), SqlError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(self.error_here(&format!("expected '{s}'")))
        }
    }

    fn query(&mut self) -> Result<Query, SqlError> {
        if self.is_kw("with") {
            return Err(self.error_at(self.pos(), "WITH is not supported; use one SELECT"));
        }
        self.expect_kw("select")?;
        let distinct = if self.eat_kw("distinct") {
            true
        } else {
            self.eat_kw("all");
            false
        };
        let mut items = Vec::new();
        loop {
            items.push(self.select_item()?);
            if !self.eat_sym(",") {
                break;
            }
        }
        let mut from = None;
        if self.eat_kw("from") {
            let mut name = self.name("a table name")?;
            while self.eat_sym(".") {
                name = self.name("a table name")?;
            }
            from = Some(name);
            // An optional alias: `FROM vpc_flow_logs AS f`, `FROM flows f`.
            if self.eat_kw("as") {
                self.name("an alias")?;
            } else if self.plain_word_not_reserved() {
                self.i += 1;
            }
            if self.is_kw("join")
                || self.is_kw("cross")
                || self.is_kw("inner")
                || self.is_kw("left")
                || self.is_kw("right")
                || self.is_kw("full")
                || matches!(self.peek(), Tok::Sym(","))
            {
                return Err(self.error_at(
                    self.pos(),
                    "joins are not supported: there is one table, the flow logs",
                ));
            }
        }
        let filter = if self.eat_kw("where") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut group_by = Vec::new();
        if self.eat_kw("group") {
            self.expect_kw("by")?;
            loop {
                group_by.push(self.expr()?);
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        let having = if self.eat_kw("having") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut order_by = Vec::new();
        if self.eat_kw("order") {
            self.expect_kw("by")?;
            loop {
                let expr = self.expr()?;
                let desc = if self.eat_kw("desc") {
                    true
                } else {
                    self.eat_kw("asc");
                    false
                };
                let mut nulls_first = false;
                if self.eat_kw("nulls") {
                    if self.eat_kw("first") {
                        nulls_first = true;
                    } else if !self.eat_kw("last") {
                        return Err(self.error_here("expected FIRST or LAST"));
                    }
                }
                order_by.push(OrderItem {
                    expr,
                    desc,
                    nulls_first,
                });
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        let mut limit = None;
        if self.eat_kw("limit") && !self.eat_kw("all") {
            let pos = self.pos();
            match self.peek().clone() {
                Tok::Number(n) => {
                    self.i += 1;
                    limit = Some(
                        n.parse::<u64>()
                            .map_err(|_| self.error_at(pos, "LIMIT takes a whole number"))?,
                    );
                }
                _ => return Err(self.error_here("expected a number after LIMIT")),
            }
        }
        if self.is_kw("union") || self.is_kw("intersect") || self.is_kw("except") {
            return Err(self.error_at(self.pos(), "set operations are not supported"));
        }
        if self.is_kw("offset") {
            return Err(self.error_at(self.pos(), "OFFSET is not supported"));
        }
        Ok(Query {
            distinct,
            items,
            from,
            filter,
            group_by,
            having,
            order_by,
            limit,
        })
    }

    fn plain_word_not_reserved(&self) -> bool {
        matches!(self.peek(), Tok::Ident { text, quoted: false }
            if !RESERVED.iter().any(|r| text.eq_ignore_ascii_case(r)))
            || matches!(self.peek(), Tok::Ident { quoted: true, .. })
    }

    fn name(&mut self, what: &str) -> Result<String, SqlError> {
        match self.peek().clone() {
            Tok::Ident { text, .. } => {
                self.i += 1;
                Ok(text)
            }
            _ => Err(self.error_here(&format!("expected {what}"))),
        }
    }

    fn select_item(&mut self) -> Result<SelectItem, SqlError> {
        if matches!(self.peek(), Tok::Sym("*")) {
            let pos = self.pos();
            self.i += 1;
            return Ok(SelectItem::Wildcard(pos));
        }
        // `t.*`
        if matches!(self.peek(), Tok::Ident { .. })
            && matches!(self.peek_at(1), Tok::Sym("."))
            && matches!(self.peek_at(2), Tok::Sym("*"))
        {
            let pos = self.pos();
            self.i += 3;
            return Ok(SelectItem::Wildcard(pos));
        }
        let expr = self.expr()?;
        let alias = if self.eat_kw("as") {
            Some(self.name("an alias after AS")?)
        } else if self.plain_word_not_reserved() {
            Some(self.name("an alias")?)
        } else {
            None
        };
        Ok(SelectItem::Expr { expr, alias })
    }

    fn count_op(&mut self) -> Result<(), SqlError> {
        self.ops += 1;
        if self.ops > MAX_OPS {
            return Err(self.error_at(self.pos(), "expression too long"));
        }
        Ok(())
    }

    fn enter(&mut self) -> Result<(), SqlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(self.pos(), "expression nested too deeply"));
        }
        Ok(())
    }

    pub fn expr(&mut self) -> Result<Expr, SqlError> {
        self.enter()?;
        let r = self.or();
        self.depth -= 1;
        r
    }

    fn or(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.and()?;
        while self.is_kw("or") {
            let pos = self.pos();
            self.i += 1;
            let right = self.and()?;
            self.count_op()?;
            left = bin(BinOp::Or, left, right, pos);
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.not()?;
        while self.is_kw("and") {
            let pos = self.pos();
            self.i += 1;
            let right = self.not()?;
            self.count_op()?;
            left = bin(BinOp::And, left, right, pos);
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, SqlError> {
        if self.is_kw("not") {
            let pos = self.pos();
            self.i += 1;
            self.enter()?;
            let e = self.not();
            self.depth -= 1;
            return Ok(Expr {
                kind: ExprKind::Not(Box::new(e?)),
                pos,
            });
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Expr, SqlError> {
        let left = self.concat()?;
        let pos = self.pos();
        let op = match self.peek() {
            Tok::Sym("=") => Some(BinOp::Eq),
            Tok::Sym("<>") | Tok::Sym("!=") => Some(BinOp::Ne),
            Tok::Sym("<") => Some(BinOp::Lt),
            Tok::Sym("<=") => Some(BinOp::Le),
            Tok::Sym(">") => Some(BinOp::Gt),
            Tok::Sym(">=") => Some(BinOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.i += 1;
            let right = self.concat()?;
            return Ok(bin(op, left, right, pos));
        }
        if self.eat_kw("is") {
            let negated = self.eat_kw("not");
            if self.eat_kw("null") {
                return Ok(Expr {
                    kind: ExprKind::IsNull {
                        expr: Box::new(left),
                        negated,
                    },
                    pos,
                });
            }
            if self.is_kw("distinct") {
                return Err(self.error_at(self.pos(), "IS DISTINCT FROM is not supported"));
            }
            return Err(self.error_here("expected NULL after IS"));
        }
        let negated = if self.is_kw("not")
            && (self.is_kw_at(1, "in") || self.is_kw_at(1, "between") || self.is_kw_at(1, "like"))
        {
            self.i += 1;
            true
        } else {
            false
        };
        if self.eat_kw("in") {
            self.expect_sym("(")?;
            if self.is_kw("select") {
                return Err(self.error_at(self.pos(), "subqueries are not supported"));
            }
            let mut list = Vec::new();
            loop {
                list.push(self.expr()?);
                if !self.eat_sym(",") {
                    break;
                }
            }
            self.expect_sym(")")?;
            return Ok(Expr {
                kind: ExprKind::InList {
                    expr: Box::new(left),
                    list,
                    negated,
                },
                pos,
            });
        }
        if self.eat_kw("between") {
            let low = self.concat()?;
            self.expect_kw("and")?;
            let high = self.concat()?;
            return Ok(Expr {
                kind: ExprKind::Between {
                    expr: Box::new(left),
                    low: Box::new(low),
                    high: Box::new(high),
                    negated,
                },
                pos,
            });
        }
        if self.eat_kw("like") {
            let pattern = self.concat()?;
            let escape = if self.eat_kw("escape") {
                Some(Box::new(self.concat()?))
            } else {
                None
            };
            return Ok(Expr {
                kind: ExprKind::Like {
                    expr: Box::new(left),
                    pattern: Box::new(pattern),
                    escape,
                    negated,
                },
                pos,
            });
        }
        if negated {
            return Err(self.error_here("expected IN, BETWEEN or LIKE after NOT"));
        }
        Ok(left)
    }

    fn concat(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.additive()?;
        while matches!(self.peek(), Tok::Sym("||")) {
            let pos = self.pos();
            self.i += 1;
            let right = self.additive()?;
            self.count_op()?;
            left = bin(BinOp::Concat, left, right, pos);
        }
        Ok(left)
    }

    fn additive(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("+") => BinOp::Add,
                Tok::Sym("-") => BinOp::Sub,
                _ => return Ok(left),
            };
            let pos = self.pos();
            self.i += 1;
            let right = self.multiplicative()?;
            self.count_op()?;
            left = bin(op, left, right, pos);
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, SqlError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("*") => BinOp::Mul,
                Tok::Sym("/") => BinOp::Div,
                Tok::Sym("%") => BinOp::Mod,
                _ => return Ok(left),
            };
            let pos = self.pos();
            self.i += 1;
            let right = self.unary()?;
            self.count_op()?;
            left = bin(op, left, right, pos);
        }
    }

    fn unary(&mut self) -> Result<Expr, SqlError> {
        let pos = self.pos();
        if self.eat_sym("-") {
            self.enter()?;
            let e = self.unary();
            self.depth -= 1;
            let e = e?;
            // Fold `-5` into a literal so that i64::MIN can be written.
            if let ExprKind::Literal(Literal::Int(n)) = e.kind {
                return Ok(Expr {
                    kind: ExprKind::Literal(Literal::Int(n.wrapping_neg())),
                    pos,
                });
            }
            return Ok(Expr {
                kind: ExprKind::Neg(Box::new(e)),
                pos,
            });
        }
        if self.eat_sym("+") {
            self.enter()?;
            let e = self.unary();
            self.depth -= 1;
            return e;
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, SqlError> {
        let pos = self.pos();
        let lit = |l| {
            Ok(Expr {
                kind: ExprKind::Literal(l),
                pos,
            })
        };
        match self.advance() {
            Tok::Number(n) => {
                if n.bytes().all(|b| b.is_ascii_digit()) {
                    match n.parse::<i64>() {
                        Ok(v) => lit(Literal::Int(v)),
                        // 9223372036854775808 is only valid negated.
                        Err(_) if n == "9223372036854775808" => lit(Literal::Int(i64::MIN)),
                        Err(_) => Err(self.error_at(pos, format!("number {n} is out of range"))),
                    }
                } else {
                    match n.parse::<f64>() {
                        Ok(v) if v.is_finite() => lit(Literal::Float(v)),
                        _ => Err(self.error_at(pos, format!("invalid number {}", short(&n)))),
                    }
                }
            }
            Tok::Str(s) => lit(Literal::Str(s)),
            Tok::Sym("(") => {
                if self.is_kw("select") {
                    return Err(self.error_at(self.pos(), "subqueries are not supported"));
                }
                let e = self.expr()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Ident { text, quoted: true } => self.name_or_call(text, pos, true),
            Tok::Ident {
                text,
                quoted: false,
            } => {
                let lower = text.to_ascii_lowercase();
                match lower.as_str() {
                    "null" => lit(Literal::Null),
                    "true" => lit(Literal::Bool(true)),
                    "false" => lit(Literal::Bool(false)),
                    "date" | "timestamp" if matches!(self.peek(), Tok::Str(_)) => {
                        let Tok::Str(s) = self.advance() else {
                            return Err(self.error_at(pos, "expected a string"));
                        };
                        if lower == "date" {
                            lit(Literal::Date(s))
                        } else {
                            lit(Literal::Timestamp(s))
                        }
                    }
                    "interval" => self.interval(pos),
                    "case" => self.case(pos),
                    "cast" | "try_cast" if matches!(self.peek(), Tok::Sym("(")) => {
                        self.i += 1;
                        let expr = self.expr()?;
                        self.expect_kw("as")?;
                        let to = self.type_name()?;
                        self.expect_sym(")")?;
                        Ok(Expr {
                            kind: ExprKind::Cast {
                                expr: Box::new(expr),
                                to,
                                try_cast: lower == "try_cast",
                            },
                            pos,
                        })
                    }
                    "current_date" | "current_timestamp" | "localtimestamp"
                        if !matches!(self.peek(), Tok::Sym("(")) =>
                    {
                        Ok(Expr {
                            kind: ExprKind::Call {
                                name: lower,
                                args: Vec::new(),
                                distinct: false,
                                star: false,
                            },
                            pos,
                        })
                    }
                    "select" => Err(self.error_at(pos, "subqueries are not supported")),
                    "exists" => Err(self.error_at(pos, "EXISTS is not supported")),
                    _ if RESERVED.contains(&lower.as_str()) => {
                        self.i -= 1;
                        Err(self.error_here("expected an expression"))
                    }
                    _ => self.name_or_call(text, pos, false),
                }
            }
            Tok::Sym(_) | Tok::End => {
                self.i = self.i.saturating_sub(1);
                Err(self.error_here("expected an expression"))
            }
        }
    }

    fn name_or_call(&mut self, text: String, pos: usize, quoted: bool) -> Result<Expr, SqlError> {
        if !quoted && self.eat_sym("(") {
            let mut args = Vec::new();
            let mut distinct = false;
            let mut star = false;
            if self.eat_sym("*") {
                star = true;
            } else if !matches!(self.peek(), Tok::Sym(")")) {
                if self.eat_kw("distinct") {
                    distinct = true;
                } else {
                    self.eat_kw("all");
                }
                loop {
                    args.push(self.expr()?);
                    if !self.eat_sym(",") {
                        break;
                    }
                }
            }
            self.expect_sym(")")?;
            if self.is_kw("over") {
                return Err(self.error_at(self.pos(), "window functions are not supported"));
            }
            if self.is_kw("filter") && matches!(self.peek_at(1), Tok::Sym("(")) {
                return Err(self.error_at(
                    self.pos(),
                    "FILTER is not supported; use count_if or CASE inside the aggregate",
                ));
            }
            return Ok(Expr {
                kind: ExprKind::Call {
                    name: text.to_ascii_lowercase(),
                    args,
                    distinct,
                    star,
                },
                pos,
            });
        }
        // `alias.column`: the qualifier names the one table.
        let mut name = text;
        while matches!(self.peek(), Tok::Sym(".")) && matches!(self.peek_at(1), Tok::Ident { .. }) {
            self.i += 1;
            name = self.name("a column name")?;
        }
        Ok(Expr {
            kind: ExprKind::Name(name),
            pos,
        })
    }

    fn type_name(&mut self) -> Result<String, SqlError> {
        let mut name = self.name("a type name")?;
        // `double precision`, `timestamp with time zone` are not supported; `varchar(10)`,
        // `decimal(10,2)` are read and their sizes ignored.
        if name.eq_ignore_ascii_case("double") && self.eat_kw("precision") {
            name = "double".into();
        }
        if self.eat_sym("(") {
            loop {
                match self.advance() {
                    Tok::Number(_) => {}
                    _ => {
                        self.i -= 1;
                        return Err(self.error_here("expected a number"));
                    }
                }
                if !self.eat_sym(",") {
                    break;
                }
            }
            self.expect_sym(")")?;
        }
        Ok(name)
    }

    fn interval(&mut self, pos: usize) -> Result<Expr, SqlError> {
        let negative = self.eat_sym("-");
        let amount_pos = self.pos();
        let amount: i64 = match self.advance() {
            Tok::Str(s) => s.trim().parse().map_err(|_| {
                self.error_at(
                    amount_pos,
                    "INTERVAL takes a whole number, e.g. INTERVAL '7' DAY",
                )
            })?,
            Tok::Number(n) => n
                .parse()
                .map_err(|_| self.error_at(amount_pos, "INTERVAL takes a whole number"))?,
            _ => {
                self.i -= 1;
                return Err(self.error_here("expected the amount of the INTERVAL, e.g. '7'"));
            }
        };
        let unit_pos = self.pos();
        let unit = self.name("an interval unit (DAY, HOUR, MINUTE, SECOND)")?;
        let ms: i64 = match unit.to_ascii_lowercase().trim_end_matches('s') {
            "day" => 86_400_000,
            "hour" => 3_600_000,
            "minute" => 60_000,
            "second" => 1_000,
            "millisecond" => 1,
            "week" => 7 * 86_400_000,
            "month" | "year" => {
                return Err(self.error_at(
                    unit_pos,
                    "month and year intervals are not supported; use days",
                ))
            }
            _ => {
                return Err(self.error_at(
                    unit_pos,
                    format!("unknown interval unit '{}'", short(&unit)),
                ))
            }
        };
        let value = amount
            .checked_mul(ms)
            .map(|v| if negative { -v } else { v })
            .ok_or_else(|| self.error_at(amount_pos, "interval out of range"))?;
        Ok(Expr {
            kind: ExprKind::Literal(Literal::Interval(value)),
            pos,
        })
    }

    fn case(&mut self, pos: usize) -> Result<Expr, SqlError> {
        self.enter()?;
        let r = self.case_body(pos);
        self.depth -= 1;
        r
    }

    fn case_body(&mut self, pos: usize) -> Result<Expr, SqlError> {
        let operand = if self.is_kw("when") {
            None
        } else {
            Some(Box::new(self.expr()?))
        };
        let mut whens = Vec::new();
        while self.eat_kw("when") {
            let w = self.expr()?;
            self.expect_kw("then")?;
            let t = self.expr()?;
            whens.push((w, t));
        }
        if whens.is_empty() {
            return Err(self.error_here("expected WHEN"));
        }
        let otherwise = if self.eat_kw("else") {
            Some(Box::new(self.expr()?))
        } else {
            None
        };
        self.expect_kw("end")?;
        Ok(Expr {
            kind: ExprKind::Case {
                operand,
                whens,
                otherwise,
            },
            pos,
        })
    }
}

fn bin(op: BinOp, l: Expr, r: Expr, pos: usize) -> Expr {
    let _ = pos;
    let start = l.pos;
    Expr {
        kind: ExprKind::Binary(op, Box::new(l), Box::new(r)),
        pos: start,
    }
}

fn short(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_000_scan_query_parses() {
        let q = parse(
            "SELECT sourceaddress, COUNT(DISTINCT destinationaddress) as target_count,
               COUNT(*) as connection_attempts
             FROM vpc_flow_logs
             WHERE dt >= date_format(current_date - interval '7' day, '%Y/%m/%d')
               AND destinationport = 3306 AND action = 'REJECT'
             GROUP BY sourceaddress
             HAVING COUNT(DISTINCT destinationaddress) > 5
             ORDER BY connection_attempts DESC
             LIMIT 100;",
        )
        .unwrap();
        assert_eq!(q.items.len(), 3);
        assert_eq!(q.from.as_deref(), Some("vpc_flow_logs"));
        assert_eq!(q.group_by.len(), 1);
        assert_eq!(q.limit, Some(100));
        assert!(q.order_by[0].desc);
    }

    #[test]
    fn precedence() {
        let q = parse("select 1 + 2 * 3 = 7 and not a or b from t").unwrap();
        let SelectItem::Expr { expr, .. } = &q.items[0] else {
            panic!()
        };
        assert_eq!(
            expr.canon(),
            "((((Int(1) + (Int(2) * Int(3))) = Int(7)) AND (NOT a)) OR b)"
        );
    }

    #[test]
    fn positioned_errors() {
        let e = parse("select from flows").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1, column 8: expected an expression, found 'from'"
        );
        let e = parse("select a\nfrom flows\nwhere (a = 1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3, column 13: expected ')', found end of query"
        );
        let e = parse("select a from flows limit x").unwrap_err();
        assert_eq!(e.line, 1);
        assert_eq!(e.column, 27);
        assert!(parse("select a from t1, t2").is_err());
        assert!(parse("select a b c from t").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let sql = format!("select {}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&sql)
            .unwrap_err()
            .message
            .contains("nested too deeply"));
        let sql = format!("select {}1", "-".repeat(10_000));
        assert!(parse(&sql).is_err());
        let sql = format!("select {}true", "not ".repeat(10_000));
        assert!(parse(&sql).is_err());
    }
}
