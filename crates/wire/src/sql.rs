//! A small, fast SQL lexer for what the gateway must know about a PostgreSQL statement without
//! parsing it: the text with its literals masked (for audit logs), whether it provably only
//! reads (for the read/write split), what it does to the transaction (BEGIN, COMMIT...), and
//! whether it creates session state that pins a client to its server in transaction pooling.
//!
//! Conservative by design: anything it does not recognise is "not read-only" (so it goes to
//! the primary) and words that create session state pin even where they might not need to. It
//! never panics, on any input; `analyze` allocates nothing.

/// What a statement does to the transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxEffect {
    /// `BEGIN` / `START TRANSACTION` (read-write or unstated).
    Begin,
    /// `BEGIN READ ONLY`, `START TRANSACTION ... READ ONLY`.
    BeginReadOnly,
    /// `COMMIT`, `END`, `ROLLBACK` (not `ROLLBACK TO`), `ABORT`.
    Commit,
    Other,
}

/// Session state that cannot be shared through a pooled server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinReason {
    Set,
    Listen,
    AdvisoryLock,
    TempObject,
    HoldCursor,
    SqlPrepare,
    Load,
}

impl PinReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PinReason::Set => "set",
            PinReason::Listen => "listen",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::TempObject => "temp_object",
            PinReason::HoldCursor => "hold_cursor",
            PinReason::SqlPrepare => "sql_prepare",
            PinReason::Load => "load",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Analysis {
    /// Statements seen (split on top-level `;`, empty ones not counted).
    pub statements: u32,
    /// Every statement provably only reads. False when unsure, and for an empty query.
    pub read_only: bool,
    /// The effect of the first statement.
    pub tx: TxEffect,
    /// The first session-state reason found, if any.
    pub pin: Option<PinReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    QuotedIdent,
    Str,
    Number,
    Param,
    LParen,
    RParen,
    Semicolon,
    Op,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
    /// Whitespace or a comment came before it.
    spaced: bool,
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Lexer {
            s: s.as_bytes(),
            i: 0,
        }
    }

    fn peek(&self, at: usize) -> u8 {
        self.s.get(at).copied().unwrap_or(0)
    }

    /// Skip whitespace and comments; true if any was skipped.
    fn skip_space(&mut self) -> bool {
        let start = self.i;
        loop {
            let c = self.peek(self.i);
            if c.is_ascii_whitespace() && self.i < self.s.len() {
                self.i += 1;
            } else if c == b'-' && self.peek(self.i + 1) == b'-' {
                while self.i < self.s.len() && self.s[self.i] != b'\n' {
                    self.i += 1;
                }
            } else if c == b'/' && self.peek(self.i + 1) == b'*' {
                let mut depth = 0usize;
                while self.i < self.s.len() {
                    if self.peek(self.i) == b'/' && self.peek(self.i + 1) == b'*' {
                        depth += 1;
                        self.i += 2;
                    } else if self.peek(self.i) == b'*' && self.peek(self.i + 1) == b'/' {
                        depth -= 1;
                        self.i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        self.i += 1;
                    }
                }
            } else {
                break;
            }
        }
        self.i > start
    }

    /// A quoted string from the quote at `self.i`; `backslash` for E'' strings.
    fn quoted(&mut self, quote: u8, backslash: bool) {
        self.i += 1;
        while self.i < self.s.len() {
            let c = self.s[self.i];
            if backslash && c == b'\\' {
                self.i += 2;
            } else if c == quote {
                if self.peek(self.i + 1) == quote {
                    self.i += 2;
                } else {
                    self.i += 1;
                    return;
                }
            } else {
                self.i += 1;
            }
        }
        self.i = self.s.len();
    }

    /// A dollar-quoted string if one starts at `self.i` (`$$` or `$tag$`).
    fn dollar_quoted(&mut self) -> bool {
        let start = self.i;
        let mut j = start + 1;
        while j < self.s.len()
            && (self.s[j].is_ascii_alphanumeric() || self.s[j] == b'_' || self.s[j] >= 0x80)
        {
            j += 1;
        }
        if self.peek(j) != b'$' || self.s.get(start + 1).is_some_and(u8::is_ascii_digit) {
            return false;
        }
        let tag = &self.s[start..=j];
        let mut k = j + 1;
        while k + tag.len() <= self.s.len() {
            if &self.s[k..k + tag.len()] == tag {
                self.i = k + tag.len();
                return true;
            }
            k += 1;
        }
        self.i = self.s.len();
        true
    }

    fn next(&mut self) -> Option<Token> {
        let spaced = self.skip_space();
        if self.i >= self.s.len() {
            return None;
        }
        let start = self.i;
        let c = self.s[self.i];
        let kind = if c == b'\'' {
            self.quoted(b'\'', false);
            Kind::Str
        } else if c == b'"' {
            self.quoted(b'"', false);
            Kind::QuotedIdent
        } else if c == b'$' {
            if self.peek(self.i + 1).is_ascii_digit() {
                self.i += 1;
                while self.peek(self.i).is_ascii_digit() {
                    self.i += 1;
                }
                Kind::Param
            } else if self.dollar_quoted() {
                Kind::Str
            } else {
                self.i += 1;
                Kind::Op
            }
        } else if is_ident_start(c) {
            // String prefixes: E'..' (backslash escapes), B'..', X'..', N'..', U&'..'.
            let next = self.peek(self.i + 1);
            if next == b'\'' && matches!(c, b'e' | b'E' | b'b' | b'B' | b'x' | b'X' | b'n' | b'N') {
                self.i += 1;
                self.quoted(b'\'', matches!(c, b'e' | b'E'));
                Kind::Str
            } else if matches!(c, b'u' | b'U') && next == b'&' && self.peek(self.i + 2) == b'\'' {
                self.i += 2;
                self.quoted(b'\'', false);
                Kind::Str
            } else {
                while self.i < self.s.len() && is_ident(self.s[self.i]) {
                    self.i += 1;
                }
                Kind::Word
            }
        } else if c.is_ascii_digit() || (c == b'.' && self.peek(self.i + 1).is_ascii_digit()) {
            while self.peek(self.i).is_ascii_alphanumeric()
                || self.peek(self.i) == b'.'
                || self.peek(self.i) == b'_'
            {
                let d = self.peek(self.i);
                self.i += 1;
                if (d == b'e' || d == b'E') && matches!(self.peek(self.i), b'+' | b'-') {
                    self.i += 1;
                }
            }
            Kind::Number
        } else {
            self.i += 1;
            match c {
                b'(' => Kind::LParen,
                b')' => Kind::RParen,
                b';' => Kind::Semicolon,
                _ => Kind::Op,
            }
        };
        Some(Token {
            kind,
            start,
            end: self.i,
            spaced,
        })
    }
}

/// The statement with every string and numeric literal replaced by `?`, comments removed and
/// runs of whitespace collapsed to one space.
pub fn mask_literals(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len().min(64 * 1024));
    let mut lx = Lexer::new(sql);
    while let Some(t) = lx.next() {
        if t.spaced && !out.is_empty() {
            out.push(' ');
        }
        match t.kind {
            Kind::Str | Kind::Number => out.push('?'),
            _ => out.push_str(sql.get(t.start..t.end).unwrap_or("?")),
        }
    }
    out
}

/// Functions known to have no side effects (reading them on a replica is safe).
const PURE_FUNCTIONS: &[&str] = &[
    "abs",
    "age",
    "array_agg",
    "array_length",
    "array_lower",
    "array_position",
    "array_to_string",
    "array_upper",
    "avg",
    "bit_length",
    "bool_and",
    "bool_or",
    "btrim",
    "cardinality",
    "cbrt",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "chr",
    "clock_timestamp",
    "coalesce",
    "concat",
    "concat_ws",
    "count",
    "cume_dist",
    "current_database",
    "current_date",
    "current_schema",
    "current_schemas",
    "current_setting",
    "current_time",
    "current_timestamp",
    "current_user",
    "date_part",
    "date_trunc",
    "decode",
    "degrees",
    "dense_rank",
    "div",
    "encode",
    "every",
    "exp",
    "extract",
    "first_value",
    "floor",
    "format",
    "gen_random_uuid",
    "generate_series",
    "generate_subscripts",
    "greatest",
    "has_table_privilege",
    "initcap",
    "isfinite",
    "json_agg",
    "json_array_elements",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_each",
    "json_extract_path",
    "json_object_agg",
    "json_typeof",
    "jsonb_agg",
    "jsonb_array_elements",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_each",
    "jsonb_extract_path",
    "jsonb_object_agg",
    "jsonb_typeof",
    "lag",
    "last_value",
    "lead",
    "least",
    "left",
    "length",
    "ln",
    "localtime",
    "localtimestamp",
    "log",
    "lower",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "max",
    "md5",
    "min",
    "mod",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "octet_length",
    "overlay",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pg_backend_pid",
    "pg_is_in_recovery",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_sleep",
    "pg_typeof",
    "pi",
    "position",
    "power",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "radians",
    "random",
    "rank",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_number",
    "row_to_json",
    "rpad",
    "rtrim",
    "session_user",
    "sign",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "string_to_array",
    "strpos",
    "substr",
    "substring",
    "sum",
    "timeofday",
    "to_char",
    "to_date",
    "to_hex",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_timestamp",
    "transaction_timestamp",
    "translate",
    "trim",
    "trunc",
    "unnest",
    "upper",
    "var_pop",
    "var_samp",
    "variance",
    "version",
    "width_bucket",
];

/// Words that may stand before `(` without being a function call.
const NOT_CALLS: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "between",
    "bit",
    "by",
    "case",
    "cast",
    "char",
    "character",
    "decimal",
    "distinct",
    "else",
    "except",
    "exists",
    "filter",
    "float",
    "from",
    "group",
    "groups",
    "having",
    "in",
    "intersect",
    "interval",
    "is",
    "join",
    "lateral",
    "like",
    "limit",
    "not",
    "numeric",
    "offset",
    "on",
    "or",
    "order",
    "over",
    "partition",
    "range",
    "row",
    "rows",
    "select",
    "some",
    "then",
    "time",
    "timestamp",
    "union",
    "using",
    "values",
    "varchar",
    "when",
    "where",
    "window",
    "with",
    "within",
];

/// Words that, anywhere in a statement, mean it may write or lock.
const WRITE_WORDS: &[&str] = &[
    "alter", "analyze", "call", "cluster", "comment", "copy", "create", "delete", "do", "drop",
    "grant", "insert", "into", "lock", "merge", "notify", "refresh", "reindex", "revoke",
    "truncate", "update", "vacuum",
];

fn word_in(word: &[u8], list: &[&str]) -> bool {
    list.iter().any(|w| w.as_bytes().eq_ignore_ascii_case(word))
}

fn is(word: &[u8], kw: &str) -> bool {
    word.eq_ignore_ascii_case(kw.as_bytes())
}

/// Analyse one or more statements.
pub fn analyze(sql: &str) -> Analysis {
    let bytes = sql.as_bytes();
    let mut lx = Lexer::new(sql);
    let mut out = Analysis {
        statements: 0,
        read_only: true,
        tx: TxEffect::Other,
        pin: None,
    };
    let mut st = Statement::default();
    loop {
        let t = lx.next();
        match t {
            None
            | Some(Token {
                kind: Kind::Semicolon,
                ..
            }) => {
                if st.tokens > 0 {
                    out.statements += 1;
                    let (read_only, tx, pin) = st.finish();
                    out.read_only &= read_only;
                    if out.statements == 1 {
                        out.tx = tx;
                    }
                    if out.pin.is_none() {
                        out.pin = pin;
                    }
                }
                st = Statement::default();
                if t.is_none() {
                    break;
                }
            }
            Some(t) => st.feed(&t, &bytes[t.start..t.end]),
        }
    }
    if out.statements == 0 {
        out.read_only = false;
    }
    out
}

/// What one statement has shown so far.
#[derive(Default)]
struct Statement<'a> {
    tokens: u32,
    /// The first three words (after leading parentheses), for the statement's kind.
    words: [&'a [u8]; 4],
    nwords: usize,
    /// The previous token was this word (a function name if `(` follows).
    prev_word: Option<&'a [u8]>,
    prev_kind: Option<Kind>,
    /// The word before the previous one (for `FOR UPDATE`, `WITH HOLD`, `READ ONLY`).
    last_words: [&'a [u8]; 2],
    writes: bool,
    impure_call: bool,
    locking: bool,
    read_only_seen: bool,
    with_hold: bool,
    temp: bool,
    advisory: bool,
    set_config: bool,
    explain_analyze: bool,
}

impl<'a> Statement<'a> {
    fn feed(&mut self, t: &Token, text: &'a [u8]) {
        self.tokens += 1;
        match t.kind {
            Kind::Word => {
                if self.nwords < self.words.len() {
                    self.words[self.nwords] = text;
                    self.nwords += 1;
                }
                if word_in(text, WRITE_WORDS) {
                    // EXPLAIN ANALYZE runs its statement; ANALYZE alone writes statistics.
                    if is(text, "analyze") && self.nwords >= 2 && is(self.words[0], "explain") {
                        self.explain_analyze = true;
                    } else {
                        self.writes = true;
                    }
                }
                let prev = self.last_words[1];
                if is(prev, "for")
                    && (is(text, "update")
                        || is(text, "share")
                        || is(text, "no")
                        || is(text, "key"))
                {
                    self.locking = true;
                }
                if is(prev, "read") && is(text, "only") {
                    self.read_only_seen = true;
                }
                if is(prev, "with") && is(text, "hold") {
                    self.with_hold = true;
                }
                if is(text, "temp") || is(text, "temporary") {
                    self.temp = true;
                }
                self.last_words = [self.last_words[1], text];
                self.prev_word = Some(text);
            }
            Kind::LParen => {
                if self.prev_kind == Some(Kind::QuotedIdent) {
                    self.impure_call = true; // "quoted"(...) is a call we cannot judge
                }
                if let (Some(name), Some(Kind::Word)) = (self.prev_word, self.prev_kind) {
                    if !word_in(name, NOT_CALLS) && !word_in(name, PURE_FUNCTIONS) {
                        self.impure_call = true;
                        let lower_starts = |p: &str| {
                            name.len() >= p.len()
                                && name[..p.len()].eq_ignore_ascii_case(p.as_bytes())
                        };
                        if (lower_starts("pg_advisory_") || lower_starts("pg_try_advisory_"))
                            && !name.windows(4).any(|w| w.eq_ignore_ascii_case(b"xact"))
                        {
                            self.advisory = true;
                        }
                        if is(name, "set_config") {
                            self.set_config = true;
                        }
                    }
                }
                self.prev_word = None;
            }
            _ => self.prev_word = None,
        }
        self.prev_kind = Some(t.kind);
    }

    fn finish(&self) -> (bool, TxEffect, Option<PinReason>) {
        let w = |i: usize| {
            if i < self.nwords {
                self.words[i]
            } else {
                &b""[..]
            }
        };
        let first = w(0);
        let tx = if is(first, "begin") || (is(first, "start") && is(w(1), "transaction")) {
            if self.read_only_seen {
                TxEffect::BeginReadOnly
            } else {
                TxEffect::Begin
            }
        } else if is(first, "commit")
            || is(first, "end")
            || is(first, "abort")
            || (is(first, "rollback")
                && !(is(w(1), "to") || is(w(2), "to"))
                && !is(w(1), "prepared"))
        {
            TxEffect::Commit
        } else {
            TxEffect::Other
        };
        let pin = if is(first, "set") {
            if is(w(1), "local") || is(w(1), "transaction") || is(w(1), "constraints") {
                None
            } else {
                Some(PinReason::Set)
            }
        } else if is(first, "reset") {
            Some(PinReason::Set)
        } else if is(first, "listen") {
            Some(PinReason::Listen)
        } else if is(first, "create") && self.temp {
            Some(PinReason::TempObject)
        } else if is(first, "declare") && self.with_hold {
            Some(PinReason::HoldCursor)
        } else if is(first, "prepare") && !is(w(1), "transaction") {
            Some(PinReason::SqlPrepare)
        } else if is(first, "load") {
            Some(PinReason::Load)
        } else if self.advisory {
            Some(PinReason::AdvisoryLock)
        } else if self.set_config {
            Some(PinReason::Set)
        } else {
            None
        };
        let reading_kind = is(first, "select")
            || is(first, "values")
            || is(first, "table")
            || is(first, "show")
            || is(first, "with")
            || is(first, "explain");
        let read_only =
            reading_kind && !self.writes && !self.impure_call && !self.locking && pin.is_none();
        (read_only, tx, pin)
    }
}

#[cfg(test)]
mod tests;
