//! The parsed query, before names are resolved. Every expression keeps the byte offset where it
//! starts, for error messages.

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub distinct: bool,
    pub items: Vec<SelectItem>,
    /// The table name as written (any name reads the flow logs given on the command line).
    pub from: Option<String>,
    pub filter: Option<Expr>,
    pub group_by: Vec<Expr>,
    pub having: Option<Expr>,
    pub order_by: Vec<OrderItem>,
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SelectItem {
    /// `*`, at this position.
    Wildcard(usize),
    Expr {
        expr: Expr,
        alias: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderItem {
    pub expr: Expr,
    pub desc: bool,
    /// `NULLS FIRST`; the default, as in Trino, is nulls last in both directions.
    pub nulls_first: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub pos: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Concat,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "OR",
            BinOp::And => "AND",
            BinOp::Eq => "=",
            BinOp::Ne => "<>",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Concat => "||",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// `DATE '2024-01-01'`, as written.
    Date(String),
    /// `TIMESTAMP '2024-01-01 00:00:00'`, as written.
    Timestamp(String),
    /// `INTERVAL '7' DAY`, in milliseconds.
    Interval(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A column or output alias; a qualifier (`t.srcaddr`) is dropped.
    Name(String),
    Literal(Literal),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        escape: Option<Box<Expr>>,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Cast {
        expr: Box<Expr>,
        to: String,
        try_cast: bool,
    },
    Call {
        name: String,
        args: Vec<Expr>,
        distinct: bool,
        /// `count(*)`.
        star: bool,
    },
}

impl Expr {
    /// A position-free rendering: two expressions with the same text are the same expression
    /// (how `GROUP BY` expressions are matched against the select list).
    pub fn canon(&self) -> String {
        let mut s = String::new();
        self.write_canon(&mut s);
        s
    }

    fn write_canon(&self, s: &mut String) {
        use std::fmt::Write as _;
        match &self.kind {
            ExprKind::Name(n) => s.push_str(&n.to_ascii_lowercase()),
            ExprKind::Literal(l) => {
                let _ = write!(s, "{l:?}");
            }
            ExprKind::Neg(e) => {
                s.push_str("(-");
                e.write_canon(s);
                s.push(')');
            }
            ExprKind::Not(e) => {
                s.push_str("(NOT ");
                e.write_canon(s);
                s.push(')');
            }
            ExprKind::Binary(op, l, r) => {
                s.push('(');
                l.write_canon(s);
                let _ = write!(s, " {} ", op.symbol());
                r.write_canon(s);
                s.push(')');
            }
            ExprKind::IsNull { expr, negated } => {
                s.push('(');
                expr.write_canon(s);
                s.push_str(if *negated {
                    " IS NOT NULL)"
                } else {
                    " IS NULL)"
                });
            }
            ExprKind::InList {
                expr,
                list,
                negated,
            } => {
                s.push('(');
                expr.write_canon(s);
                s.push_str(if *negated { " NOT IN (" } else { " IN (" });
                for (i, e) in list.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    e.write_canon(s);
                }
                s.push_str("))");
            }
            ExprKind::Between {
                expr,
                low,
                high,
                negated,
            } => {
                s.push('(');
                expr.write_canon(s);
                s.push_str(if *negated {
                    " NOT BETWEEN "
                } else {
                    " BETWEEN "
                });
                low.write_canon(s);
                s.push_str(" AND ");
                high.write_canon(s);
                s.push(')');
            }
            ExprKind::Like {
                expr,
                pattern,
                escape,
                negated,
            } => {
                s.push('(');
                expr.write_canon(s);
                s.push_str(if *negated { " NOT LIKE " } else { " LIKE " });
                pattern.write_canon(s);
                if let Some(e) = escape {
                    s.push_str(" ESCAPE ");
                    e.write_canon(s);
                }
                s.push(')');
            }
            ExprKind::Case {
                operand,
                whens,
                otherwise,
            } => {
                s.push_str("(CASE");
                if let Some(o) = operand {
                    s.push(' ');
                    o.write_canon(s);
                }
                for (w, t) in whens {
                    s.push_str(" WHEN ");
                    w.write_canon(s);
                    s.push_str(" THEN ");
                    t.write_canon(s);
                }
                if let Some(e) = otherwise {
                    s.push_str(" ELSE ");
                    e.write_canon(s);
                }
                s.push_str(" END)");
            }
            ExprKind::Cast { expr, to, try_cast } => {
                s.push_str(if *try_cast { "TRY_CAST(" } else { "CAST(" });
                expr.write_canon(s);
                let _ = write!(s, " AS {})", to.to_ascii_lowercase());
            }
            ExprKind::Call {
                name,
                args,
                distinct,
                star,
            } => {
                s.push_str(&name.to_ascii_lowercase());
                s.push('(');
                if *star {
                    s.push('*');
                }
                if *distinct {
                    s.push_str("DISTINCT ");
                }
                for (i, e) in args.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    e.write_canon(s);
                }
                s.push(')');
            }
        }
    }

    /// The name a select item gets without an alias: a column's own name, else `_colN` as in
    /// Trino.
    pub fn default_name(&self, index: usize) -> String {
        match &self.kind {
            ExprKind::Name(n) => n.to_ascii_lowercase(),
            _ => format!("_col{index}"),
        }
    }
}
