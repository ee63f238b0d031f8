//! The single pass over a statement's (or a re-read literal's) significant tokens that finds
//! the shapes of [`Rule`]. It keeps a window of the last four tokens and a few small pending
//! states; nothing grows with the input.

use sumun_wire::sql::{SqlToken, SqlTokenKind, Syntax};

use crate::words::{self, Cat, Fun, Kw, Word};
use crate::{Rule, Rules};

/// What is being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A whole statement as the client sent it.
    Statement,
    /// The text of a literal, comment or parameter re-read as bare SQL.
    Bare,
    /// The same, as if it had broken out of a quoted string: the first token is the synthetic
    /// string that the application's opening quote started, ending at `breakout`.
    Quote { breakout: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Cmp(Cmp),
    /// `=?`: a comparison with a placeholder.
    CmpParam,
    And,
    Or,
    Not,
    Tilde,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    /// Before the first token of a statement.
    Start,
    Str,
    Num,
    Word(Word),
    /// A quoted identifier; only its catalog meaning is kept.
    QIdent(Word),
    /// MySQL `@x`, `@@version`.
    Var,
    Param,
    LParen,
    RParen,
    Comma,
    Semi,
    Dot,
    Punct,
    Op(Op),
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    ty: Ty,
    start: usize,
    end: usize,
}

const START: Tok = Tok {
    ty: Ty::Start,
    start: 0,
    end: 0,
};

/// What stands before the left operand of a constant comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Starter {
    Or,
    And,
    Other,
}

#[derive(Debug, Clone, Copy)]
struct PendingCmp {
    left: Tok,
    op: Cmp,
    starter: Starter,
    negated: bool,
    /// The condition was joined right after a literal or number (`'1' AND 1=1`).
    after_value: bool,
    /// `OR (1=1`: the comparison opens a parenthesis after the `OR`.
    paren: bool,
    at: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Off,
    /// `C = (`: a `SELECT` next makes it a subquery probe.
    Paren(usize),
    /// `C = f`: a `(` next makes it a call.
    Func(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FromTop {
    Unknown,
    Expect,
    /// `FROM (SELECT ...)`: the derived table's own first `FROM` decides.
    Derived,
    Catalog,
    Other,
}

#[derive(Debug, Clone, Copy)]
struct List {
    depth: u16,
    where_before: bool,
    at: usize,
    items: u16,
    nonconst: u16,
    nulls: u16,
    item_nonconst: bool,
    item_null: bool,
    item_tokens: u16,
    pending_word: bool,
}

#[derive(Debug, Clone, Copy)]
enum Union {
    Off,
    Expect {
        depth: u16,
        where_before: bool,
        at: usize,
    },
    List(List),
}

/// What a scan found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub rules: Rules,
    pub score: u8,
    /// Byte offset where the evidence excerpt should start.
    pub at: usize,
}

pub(crate) struct Scan<'s> {
    src: &'s str,
    mysql: bool,
    app_user: bool,
    mode: Mode,
    rules: Rules,
    bonus: u16,
    at: Option<usize>,
    /// The last significant tokens of the current statement, newest first.
    w: [Tok; 4],
    depth: u16,
    /// Significant tokens seen, all statements.
    seen: u32,
    stmt_tokens: u32,
    statements: u32,
    prev_stmt_end: Ty,
    stmt_first: Ty,
    /// Bit `d`: a `WHERE` at paren depth `d` of the current statement.
    where_bits: u64,
    from_top: FromTop,
    nested_catalog: Option<usize>,
    nested_catalogs: u8,
    union_in_stmt: bool,
    union_catalog: Option<usize>,
    cmp: Option<PendingCmp>,
    probe: Probe,
    or_const: Option<(Tok, bool, usize)>,
    union: Union,
    chr_calls: u8,
    /// The last non-space token was this comment.
    last_comment: Option<(usize, usize)>,
}

impl<'s> Scan<'s> {
    pub(crate) fn new(src: &'s str, syntax: Syntax, app_user: bool, mode: Mode) -> Self {
        Scan {
            src,
            mysql: matches!(syntax, Syntax::Mysql(_)),
            app_user,
            mode,
            rules: Rules::default(),
            bonus: 0,
            at: None,
            w: [START; 4],
            depth: 0,
            seen: 0,
            stmt_tokens: 0,
            statements: 0,
            prev_stmt_end: Ty::Start,
            stmt_first: Ty::Start,
            where_bits: 0,
            from_top: FromTop::Unknown,
            nested_catalog: None,
            nested_catalogs: 0,
            union_in_stmt: false,
            union_catalog: None,
            cmp: None,
            probe: Probe::Off,
            or_const: None,
            union: Union::Off,
            chr_calls: 0,
            last_comment: None,
        }
    }

    fn inner(&self) -> bool {
        self.mode != Mode::Statement
    }

    fn hit(&mut self, rule: Rule, at: usize) {
        self.rules.insert(rule);
        self.at = Some(self.at.map_or(at, |a| a.min(at)));
    }

    fn text(&self, t: Tok) -> &'s [u8] {
        self.src.as_bytes().get(t.start..t.end).unwrap_or(&[])
    }

    /// One token of the text, in order (spaces and comments included).
    pub(crate) fn feed(&mut self, t: SqlToken) {
        let ty = match t.kind {
            SqlTokenKind::Space | SqlTokenKind::ExecMarker => return,
            SqlTokenKind::Comment => {
                self.last_comment = Some((t.start, t.end));
                if self.src.get(t.start..t.end) == Some("/**/") {
                    self.hit(Rule::Obfuscation, t.start);
                }
                return;
            }
            SqlTokenKind::String => Ty::Str,
            SqlTokenKind::Number => Ty::Num,
            SqlTokenKind::Param => Ty::Param,
            SqlTokenKind::Word => Ty::Word(words::classify(
                self.src.as_bytes().get(t.start..t.end).unwrap_or(&[]),
            )),
            SqlTokenKind::QuotedIdent => {
                let raw = self.src.as_bytes().get(t.start..t.end).unwrap_or(&[]);
                let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or(&[]);
                match words::classify(inner) {
                    w @ Word::Cat(_) => Ty::QIdent(w),
                    _ => Ty::QIdent(Word::Plain),
                }
            }
            SqlTokenKind::Punct(b) => match b {
                b'(' => Ty::LParen,
                b')' => Ty::RParen,
                b',' => Ty::Comma,
                b';' => Ty::Semi,
                b'.' => Ty::Dot,
                _ => Ty::Punct,
            },
            SqlTokenKind::Op => self.op(self.src.as_bytes().get(t.start..t.end).unwrap_or(&[])),
            SqlTokenKind::Other => Ty::Other,
        };
        self.last_comment = None;
        self.step(Tok {
            ty,
            start: t.start,
            end: t.end,
        });
    }

    fn op(&self, s: &[u8]) -> Ty {
        if self.mysql && s.contains(&b'@') {
            return Ty::Var;
        }
        let op = match s {
            b"=" | b"==" | b"<=>" => Op::Cmp(Cmp::Eq),
            b"<>" | b"!=" => Op::Cmp(Cmp::Ne),
            b"<" => Op::Cmp(Cmp::Lt),
            b">" => Op::Cmp(Cmp::Gt),
            b"<=" => Op::Cmp(Cmp::Le),
            b">=" => Op::Cmp(Cmp::Ge),
            b"&&" if self.mysql => Op::And,
            b"||" if self.mysql => Op::Or,
            b"!" if self.mysql => Op::Not,
            b"~" => Op::Tilde,
            _ if s.len() > 1 && s.ends_with(b"?") => Op::CmpParam,
            // `=-1`: a comparison with a signed number.
            [head @ .., b'-' | b'+'] if !head.is_empty() => match self.op(head) {
                Ty::Op(op @ Op::Cmp(_)) => op,
                _ => Op::Other,
            },
            _ => Op::Other,
        };
        Ty::Op(op)
    }

    fn step(&mut self, tok: Tok) {
        self.seen = self.seen.saturating_add(1);
        if tok.ty == Ty::Semi {
            self.end_statement();
            return;
        }
        if self.stmt_tokens == 0 {
            self.stmt_first = tok.ty;
            if self.statements > 0 && ends_value(self.prev_stmt_end) && starts_stack(tok.ty) {
                self.hit(Rule::StackedStatement, tok.start);
            }
        }
        self.stmt_tokens = self.stmt_tokens.saturating_add(1);

        self.resolve_or_const(tok);
        self.resolve_probe(tok);
        self.resolve_cmp(tok);
        self.union_step(tok);

        let top_from = self.from_top == FromTop::Expect;
        if top_from {
            self.from_top = match tok.ty {
                Ty::Word(Word::Cat(_)) | Ty::QIdent(Word::Cat(_)) => FromTop::Catalog,
                Ty::LParen if self.depth == 0 => FromTop::Derived,
                _ => FromTop::Other,
            };
        }

        let w = self.w;
        match tok.ty {
            Ty::LParen => {
                self.on_call();
                self.depth = self.depth.saturating_add(1);
            }
            Ty::RParen => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth < 63 {
                    self.where_bits &= (1u64 << (self.depth + 1)) - 1;
                }
            }
            Ty::Op(Op::Cmp(c)) => self.on_cmp(c),
            Ty::Word(Word::Kw(Kw::CmpWord)) => self.on_cmp(Cmp::Eq),
            Ty::Op(Op::Tilde)
                if w[0].ty == Ty::LParen && w[1].ty == Ty::Word(Word::Fun(Fun::Exp)) =>
            {
                self.hit(Rule::ErrorFunction, w[1].start);
            }
            Ty::Num => {
                if w[0].ty == Ty::LParen
                    && w[1].ty == Ty::Word(Word::Fun(Fun::Rand))
                    && w[2].ty == Ty::LParen
                    && w[3].ty == Ty::Word(Word::Fun(Fun::Floor))
                {
                    self.hit(Rule::ErrorFunction, w[3].start);
                }
                // `'1' ORDER BY 3`: counting the columns of the query.
                if w[0].ty == Ty::Word(Word::Kw(Kw::By))
                    && w[1].ty == Ty::Word(Word::Kw(Kw::Order))
                    && matches!(w[2].ty, Ty::Str | Ty::Num)
                {
                    self.hit(Rule::Probe, w[1].start);
                }
                // `(SELECT COUNT(*) FROM GENERATE_SERIES(1,5000000))`: a heavy query used as
                // a delay (a top-level series of that size is an ordinary bulk load).
                if w[0].ty == Ty::Comma
                    && w[1].ty == Ty::Num
                    && w[2].ty == Ty::LParen
                    && w[3].ty == Ty::Word(Word::Fun(Fun::Series))
                    && (self.depth >= 2 || self.inner())
                    && parse_num(self.text(tok)).is_ok_and(|n| n >= 1_000_000.0)
                {
                    self.hit(Rule::TimeDelay, w[3].start);
                }
                self.on_const(tok);
            }
            Ty::Str | Ty::Word(Word::Kw(Kw::Null | Kw::True | Kw::False)) => self.on_const(tok),
            Ty::Word(Word::Kw(Kw::Where)) if self.depth < 64 => {
                self.where_bits |= 1 << self.depth;
            }
            Ty::Word(Word::Kw(Kw::Union)) => {
                if matches!(w[0].ty, Ty::Str | Ty::Num) && (self.where_at_depth() || self.inner()) {
                    self.hit(Rule::UnionAfterValue, tok.start);
                }
                self.union_in_stmt = true;
                self.union = Union::Expect {
                    depth: self.depth,
                    where_before: self.where_at_depth(),
                    at: tok.start,
                };
            }
            Ty::Word(Word::Kw(Kw::From))
                if (self.depth == 0 && self.from_top == FromTop::Unknown)
                    || self.from_top == FromTop::Derived =>
            {
                self.from_top = FromTop::Expect;
            }
            Ty::Word(Word::Kw(Kw::Delay | Kw::Time))
                if w[0].ty == Ty::Word(Word::Kw(Kw::Waitfor)) =>
            {
                self.hit(Rule::TimeDelay, w[0].start);
            }
            Ty::Word(Word::Kw(Kw::Outfile))
                if w[0].ty == Ty::Word(Word::Kw(Kw::Into)) && self.app_user =>
            {
                self.hit(Rule::FileAccess, w[0].start);
            }
            Ty::Word(Word::Kw(Kw::Infile))
                if w[0].ty == Ty::Word(Word::Plain)
                    && self.text(w[0]).eq_ignore_ascii_case(b"data")
                    && self.app_user =>
            {
                self.hit(Rule::FileAccess, w[0].start);
            }
            Ty::Word(Word::Kw(Kw::Program))
                if self.stmt_first == Ty::Word(Word::Kw(Kw::Copy)) && self.app_user =>
            {
                self.hit(Rule::FileAccess, tok.start);
            }
            Ty::Word(Word::Kw(Kw::Select))
                if w[0].ty == Ty::LParen
                    && w[1].ty == Ty::LParen
                    && w[2].ty == Ty::Word(Word::Fun(Fun::JsonKeys)) =>
            {
                self.hit(Rule::ErrorFunction, w[2].start);
            }
            Ty::Word(Word::Cat(c)) | Ty::QIdent(Word::Cat(c))
                if !top_from || c == Cat::Credentials =>
            {
                self.on_catalog(c, tok);
            }
            Ty::Word(_) | Ty::QIdent(_)
                if w[0].ty == Ty::Dot && w[1].ty == Ty::Word(Word::Cat(Cat::MysqlSchema)) =>
            {
                if words::is_mysql_credentials(self.text(tok)) {
                    self.on_catalog(Cat::Credentials, tok);
                } else {
                    self.on_catalog(Cat::Schema, tok);
                }
            }
            _ => {}
        }
        self.w = [tok, w[0], w[1], w[2]];
    }

    fn where_at_depth(&self) -> bool {
        self.depth < 64 && self.where_bits & (1 << self.depth) != 0
    }

    /// A `(`: the word before it, if any, is a function being called.
    fn on_call(&mut self) {
        let w = self.w;
        let Ty::Word(Word::Fun(f)) = w[0].ty else {
            return;
        };
        match f {
            Fun::Delay => self.hit(Rule::TimeDelay, w[0].start),
            Fun::ErrorXml => self.hit(Rule::ErrorFunction, w[0].start),
            Fun::File => {
                if self.app_user {
                    self.hit(Rule::FileAccess, w[0].start);
                }
            }
            Fun::Chr => {
                // `CAST(x AS CHAR(10))` is a type.
                if w[1].ty != Ty::Word(Word::Kw(Kw::As)) {
                    self.chr_calls = self.chr_calls.saturating_add(1);
                    if self.chr_calls >= 3 {
                        self.hit(Rule::Obfuscation, w[0].start);
                    }
                }
            }
            Fun::JsonKeys | Fun::Exp | Fun::Floor | Fun::Rand | Fun::Series => {}
        }
    }

    fn on_catalog(&mut self, c: Cat, tok: Tok) {
        match c {
            Cat::Credentials => {
                if self.app_user {
                    self.hit(Rule::CredentialCatalog, tok.start);
                }
            }
            Cat::Schema => {
                if self.inner() || self.depth > 0 || self.union_in_stmt {
                    self.nested_catalog.get_or_insert(tok.start);
                    self.nested_catalogs = self.nested_catalogs.saturating_add(1);
                }
                if self.union_in_stmt {
                    self.union_catalog.get_or_insert(tok.start);
                }
            }
            Cat::MysqlSchema => {}
        }
    }

    fn on_cmp(&mut self, op: Cmp) {
        let w = self.w;
        if !is_const(w[0].ty) {
            return;
        }
        let (st, before, negated) = if is_not(w[1].ty) {
            (w[2], w[3], true)
        } else {
            (w[1], w[2], false)
        };
        let or = |t: Ty| matches!(t, Ty::Word(Word::Kw(Kw::Or | Kw::Xor)) | Ty::Op(Op::Or));
        let starter = match st.ty {
            // `... OR (1=1`: the condition opened a parenthesis after `OR`.
            Ty::LParen if or(before.ty) => Starter::Or,
            _ if or(st.ty) => Starter::Or,
            Ty::Word(Word::Kw(Kw::And)) | Ty::Op(Op::And) => Starter::And,
            Ty::Start
            | Ty::LParen
            | Ty::Comma
            | Ty::Word(Word::Kw(Kw::Where | Kw::Having | Kw::When | Kw::On | Kw::Select)) => {
                Starter::Other
            }
            // A leading `NOT` only (`WHERE NOT 1=1`).
            _ if negated && w[2].ty == Ty::Start => Starter::Other,
            _ => return,
        };
        let at = if st.ty == Ty::Start {
            w[0].start
        } else {
            st.start
        };
        self.cmp = Some(PendingCmp {
            left: w[0],
            op,
            starter,
            negated,
            after_value: matches!(before.ty, Ty::Str | Ty::Num),
            paren: st.ty == Ty::LParen,
            at,
        });
    }

    fn resolve_cmp(&mut self, tok: Tok) {
        let Some(mut p) = self.cmp.take() else {
            return;
        };
        if is_const(tok.ty) {
            let trivial = self.small_number(p.left) && self.small_number(tok);
            let truth = self.eval(p.left, p.op, tok).map(|t| t != p.negated);
            // SQLAlchemy writes an empty `NOT IN` as `x NOT IN (NULL) OR (1 = 1)`.
            if p.starter == Starter::Or && truth == Some(true) && !(trivial && p.paren) {
                self.hit(Rule::Tautology, p.at);
            } else if !trivial {
                self.hit(Rule::ConstantCondition, p.at);
            } else if p.starter != Starter::Other && p.after_value {
                self.hit(Rule::Probe, p.at);
            }
        } else if p.starter != Starter::Other {
            match tok.ty {
                Ty::LParen => self.probe = Probe::Paren(p.at),
                Ty::Word(Word::Fun(_) | Word::Plain) => self.probe = Probe::Func(p.at),
                _ if is_not(tok.ty) && p.op == Cmp::Eq => {
                    // `NULL IS NOT NULL`
                    p.negated = !p.negated;
                    self.cmp = Some(p);
                }
                _ => {}
            }
        } else if is_not(tok.ty) && p.op == Cmp::Eq {
            p.negated = !p.negated;
            self.cmp = Some(p);
        }
    }

    fn resolve_probe(&mut self, tok: Tok) {
        let probe = std::mem::replace(&mut self.probe, Probe::Off);
        match (probe, tok.ty) {
            (Probe::Paren(at), Ty::Word(Word::Kw(Kw::Select))) | (Probe::Func(at), Ty::LParen) => {
                self.hit(Rule::SubqueryProbe, at)
            }
            _ => {}
        }
    }

    /// A constant after `OR` (or `OR NOT`): a tautology if the condition ends right there.
    fn on_const(&mut self, tok: Tok) {
        let w = self.w;
        let or = |t: Ty| matches!(t, Ty::Word(Word::Kw(Kw::Or | Kw::Xor)) | Ty::Op(Op::Or));
        if or(w[0].ty) {
            self.or_const = Some((tok, false, w[0].start));
        } else if is_not(w[0].ty) && or(w[1].ty) {
            self.or_const = Some((tok, true, w[1].start));
        }
    }

    fn resolve_or_const(&mut self, next: Tok) {
        let Some((c, negated, at)) = self.or_const.take() else {
            return;
        };
        let ends = matches!(
            next.ty,
            Ty::Semi
                | Ty::RParen
                | Ty::Start
                | Ty::Op(Op::And | Op::Or)
                | Ty::Word(Word::Kw(
                    Kw::And | Kw::Or | Kw::Xor | Kw::Order | Kw::Group | Kw::Limit | Kw::Union
                ))
        );
        if ends && self.truthy(c) != negated {
            self.hit(Rule::Tautology, at);
        }
    }

    fn truthy(&self, t: Tok) -> bool {
        match t.ty {
            Ty::Word(Word::Kw(Kw::True)) => true,
            Ty::Num => {
                let s = self.text(t);
                let digits = s.strip_prefix(b"0x").unwrap_or(s);
                digits.iter().any(|b| b.is_ascii_digit() && *b != b'0')
            }
            _ => false,
        }
    }

    /// `0`, `1`, `2`, `TRUE`, `FALSE`: what query builders compare (`1=1`, SQLAlchemy's
    /// `true = 1` for MySQL).
    fn small_number(&self, t: Tok) -> bool {
        match t.ty {
            Ty::Num => matches!(self.text(t), b"0" | b"1" | b"2"),
            Ty::Word(Word::Kw(Kw::True | Kw::False)) => true,
            _ => false,
        }
    }

    /// The value of `a op b` for two constants, when it is plain.
    fn eval(&self, a: Tok, op: Cmp, b: Tok) -> Option<bool> {
        let (x, y) = (self.value(a)?, self.value(b)?);
        if let (Ok(p), Ok(q)) = (parse_num(x), parse_num(y)) {
            return Some(match op {
                Cmp::Eq => p == q,
                Cmp::Ne => p != q,
                Cmp::Lt => p < q,
                Cmp::Gt => p > q,
                Cmp::Le => p <= q,
                Cmp::Ge => p >= q,
            });
        }
        Some(match op {
            Cmp::Eq => x == y,
            Cmp::Ne => x != y,
            Cmp::Lt => x < y,
            Cmp::Gt => x > y,
            Cmp::Le => x <= y,
            Cmp::Ge => x >= y,
        })
    }

    /// The text of a constant: a number as written, a string without its quotes.
    fn value(&self, t: Tok) -> Option<&'s [u8]> {
        let s = self.text(t);
        match t.ty {
            Ty::Num => Some(s),
            Ty::Word(Word::Kw(Kw::Null)) => None,
            Ty::Word(Word::Kw(Kw::True)) => Some(b"1"),
            Ty::Word(Word::Kw(Kw::False)) => Some(b"0"),
            Ty::Str => {
                if let Mode::Quote { breakout } = self.mode {
                    if t.start == 0 && t.end == breakout {
                        return s.get(..s.len().saturating_sub(1));
                    }
                }
                let q = s.iter().position(|b| matches!(b, b'\'' | b'"' | b'$'))?;
                let body = s.get(q + 1..)?;
                Some(match body.last() {
                    Some(&last) if last == s[q] => body.get(..body.len() - 1)?,
                    _ => body,
                })
            }
            _ => None,
        }
    }

    fn union_step(&mut self, tok: Tok) {
        match self.union {
            Union::Off => {}
            Union::Expect {
                depth,
                where_before,
                at,
            } => {
                self.union = match tok.ty {
                    Ty::Word(Word::Kw(Kw::All | Kw::Distinct)) => self.union,
                    Ty::Word(Word::Kw(Kw::Select)) => Union::List(List {
                        depth,
                        where_before,
                        at,
                        items: 0,
                        nonconst: 0,
                        nulls: 0,
                        item_nonconst: false,
                        item_null: false,
                        item_tokens: 0,
                        pending_word: false,
                    }),
                    _ => Union::Off,
                }
            }
            Union::List(mut l) => {
                let at_list = self.depth == l.depth;
                if l.pending_word {
                    l.pending_word = false;
                    if tok.ty != Ty::LParen {
                        l.item_nonconst = true;
                    }
                }
                let end = match tok.ty {
                    Ty::RParen => self.depth <= l.depth,
                    Ty::Word(Word::Kw(
                        Kw::From
                        | Kw::Where
                        | Kw::Group
                        | Kw::Order
                        | Kw::Limit
                        | Kw::Into
                        | Kw::Union
                        | Kw::Having
                        | Kw::Procedure,
                    )) => at_list,
                    _ => false,
                };
                if end {
                    self.end_union(l);
                    return;
                }
                if !(tok.ty == Ty::Comma && at_list) {
                    l.item_tokens = l.item_tokens.saturating_add(1);
                }
                match tok.ty {
                    Ty::Comma if at_list => close_item(&mut l),
                    Ty::Word(Word::Kw(Kw::Null)) => l.item_null = true,
                    Ty::Word(Word::Plain | Word::Cat(_) | Word::Fun(_)) | Ty::QIdent(_) => {
                        let w0 = self.w[0].ty;
                        if w0 == Ty::Dot {
                            l.item_nonconst = true;
                        } else if w0 != Ty::Word(Word::Kw(Kw::As)) {
                            l.pending_word = true;
                        }
                    }
                    _ => {}
                }
                self.union = Union::List(l);
            }
        }
    }

    fn end_union(&mut self, mut l: List) {
        self.union = Union::Off;
        if l.pending_word {
            l.item_nonconst = true;
        }
        close_item(&mut l);
        if l.items > 0 && l.nonconst == 0 && (l.nulls > 0 || l.where_before || self.inner()) {
            self.hit(Rule::UnionSelect, l.at);
        }
    }

    fn end_statement(&mut self) {
        if let Some((c, negated, at)) = self.or_const.take() {
            if self.truthy(c) != negated {
                self.hit(Rule::Tautology, at);
            }
        }
        if let Union::List(l) = self.union {
            self.end_union(l);
        }
        if self.from_top != FromTop::Catalog {
            if let Some(at) = self.nested_catalog {
                if self.app_user {
                    self.hit(Rule::CatalogEnumeration, at);
                }
                // `(SELECT COUNT(*) FROM INFORMATION_SCHEMA.COLUMNS A, ... B, ... C)`: a
                // catalog cross join used as a delay.
                if self.nested_catalogs >= 3 {
                    self.hit(Rule::TimeDelay, at);
                }
            }
            if let Some(at) = self.union_catalog {
                self.hit(Rule::UnionSelect, at);
            }
        }
        if self.stmt_tokens > 0 {
            self.statements = self.statements.saturating_add(1);
            self.prev_stmt_end = self.w[0].ty;
        }
        self.w = [START; 4];
        self.depth = 0;
        self.stmt_tokens = 0;
        self.where_bits = 0;
        self.from_top = FromTop::Unknown;
        self.nested_catalog = None;
        self.nested_catalogs = 0;
        self.union_in_stmt = false;
        self.union_catalog = None;
        self.cmp = None;
        self.probe = Probe::Off;
        self.union = Union::Off;
    }

    pub(crate) fn finish(mut self) -> Outcome {
        self.end_statement();
        if let Some((s, e)) = self.last_comment {
            if self.seen > 0 {
                self.trailing_comment(s, e);
            }
        }
        let score = (self.rules.weight() + self.bonus).min(100) as u8;
        Outcome {
            rules: self.rules,
            score,
            at: self.at.unwrap_or(0),
        }
    }

    /// The text ends in a comment: does it swallow what the application wrote after the
    /// injection point?
    fn trailing_comment(&mut self, s: usize, e: usize) {
        let text = self.src.get(s..e).unwrap_or("");
        if text.starts_with("/*") {
            if text.len() < 4 || !text.ends_with("*/") {
                self.hit(Rule::CommentTruncation, s);
            }
            return;
        }
        let body = text
            .strip_prefix("--")
            .or_else(|| text.strip_prefix('#'))
            .unwrap_or(text);
        match self.mode {
            // Whatever the application appends after the value is now a comment.
            Mode::Bare => self.hit(Rule::CommentTruncation, s),
            Mode::Quote { .. } => {
                self.hit(Rule::CommentTruncation, s);
                // `admin'--`: a breakout straight into a comment.
                if self.seen == 1 {
                    self.bonus += 10;
                }
            }
            Mode::Statement => {
                let b = body.trim_start().as_bytes();
                // `... WHERE id = 1 AND 1=1 -- `: an empty comment ends the statement.
                if b.is_empty() && text.starts_with("--") {
                    self.hit(Rule::CommentTruncation, s);
                    return;
                }
                let run = b
                    .iter()
                    .take(16)
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .count();
                if !matches!(b.get(run), Some(b'\'' | b'"')) {
                    return;
                }
                let rest = b.get(run + 1..).unwrap_or(&[]);
                if !matches!(rest.first(), None | Some(b')' | b';' | b',' | b' ' | b'\t')) {
                    return;
                }
                self.hit(Rule::CommentTruncation, s);
                // The application's own SQL after the value was cut off.
                if rest.iter().any(|c| c.is_ascii_alphabetic() || *c == b'=') {
                    self.bonus += 20;
                }
            }
        }
    }
}

fn close_item(l: &mut List) {
    if l.item_tokens == 0 {
        return;
    }
    l.item_tokens = 0;
    l.items = l.items.saturating_add(1);
    if l.item_nonconst {
        l.nonconst = l.nonconst.saturating_add(1);
    }
    if l.item_null {
        l.nulls = l.nulls.saturating_add(1);
    }
    l.item_nonconst = false;
    l.item_null = false;
}

fn is_const(t: Ty) -> bool {
    matches!(
        t,
        Ty::Str | Ty::Num | Ty::Word(Word::Kw(Kw::Null | Kw::True | Kw::False))
    )
}

fn is_not(t: Ty) -> bool {
    matches!(t, Ty::Word(Word::Kw(Kw::Not)) | Ty::Op(Op::Not))
}

/// A statement ended on a value, as one does when input closed it (`... = '1';`).
fn ends_value(t: Ty) -> bool {
    matches!(t, Ty::Str | Ty::Num | Ty::RParen)
}

/// A statement an attacker stacks after `;`.
fn starts_stack(t: Ty) -> bool {
    matches!(
        t,
        Ty::LParen
            | Ty::Word(Word::Kw(
                Kw::Select | Kw::StackStart | Kw::Waitfor | Kw::Copy
            ))
    )
}

fn parse_num(s: &[u8]) -> Result<f64, ()> {
    std::str::from_utf8(s)
        .map_err(|_| ())?
        .parse::<f64>()
        .map_err(|_| ())
}
