//! A small PostgreSQL SQL lexer and the three questions the data path asks of every query:
//!
//! - **audit masking** ([`mask_literals`]): the query text with every string and numeric
//!   constant replaced by `?` and comments removed, so audit records show the shape of a query
//!   without the values (passwords, personal data) it carried;
//! - **read/write split** ([`Analysis::read_only`]): whether every statement is provably
//!   read-only and may go to a replica;
//! - **pinning** ([`Analysis::pin`]): whether the query leaves session state behind (`SET`,
//!   `LISTEN`, advisory locks, temporary objects, held cursors, prepared statements) that makes
//!   its server connection unshareable, and what it does to the transaction ([`TxEffect`]).
//!
//! It is a lexer with a little keyword lookahead, not a parser: it knows PostgreSQL's token
//! rules (nested `/* */` comments, `""` in quoted identifiers, `''` and `E'\''` strings,
//! `U&'..'`, `B'..'`/`X'..'`, `$tag$..$tag$` dollar quotes, `$1` parameters) but not its grammar
//! and not the catalog. It is therefore conservative by design: a statement is read-only only
//! when nothing in it could write (any function that is not on a short list of plainly pure
//! built-ins makes the answer "no"), and a doubtful case pins rather than shares. A wrong "not
//! read-only" costs a trip to the primary; a wrong "read-only" would only make the query fail on
//! a replica, never write there.
//!
//! It never panics and never recurses, whatever the input (unterminated quotes and comments
//! run to the end of the text); [`analyze`] does not allocate and [`mask_literals`] allocates
//! its output once. Plain `'..'` strings follow `standard_conforming_strings = on` (the default
//! since PostgreSQL 9.1); use the `_with` variants and [`Dialect`] for servers that turned it off.
//!
//! **MySQL/MariaDB** ([`MysqlDialect`], [`Syntax::MYSQL`], passed to the same `_with`
//! functions): backslash escapes in `'..'` and `".."` (unless `NO_BACKSLASH_ESCAPES`), `".."` a
//! string (unless `ANSI_QUOTES`), `` `..` `` identifiers, `#` comments, `-- ` comments only with
//! the space (`1--1` is arithmetic), `/* */` comments that do not nest, and executable comments
//! `/*! .. */`, `/*!50700 .. */`, `/*M!100100 .. */` whose content is lexed as SQL (their markers
//! are kept in masked text); no dollar quotes, `$` is an identifier character. Its pin reasons
//! add user variables (`SET @x`, `@x :=`, `INTO @x`), `LOCK TABLES` / `FLUSH ... WITH READ
//! LOCK`, `GET_LOCK()`, `HANDLER .. OPEN`, `USE db`, and every session `SET` (`SET LOCAL` is
//! session-wide there); `XA START`/`XA COMMIT` are transaction boundaries;
//! MariaDB's `SET STATEMENT .. FOR` does not pin. [`may_pin_mysql`] is its pre-filter.

#[cfg(test)]
mod tests;

/// Lexing rules that depend on server settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// The server's `standard_conforming_strings`; when false, backslash escapes in plain
    /// `'..'` strings too, so `'a\'b'` is one string.
    pub standard_conforming_strings: bool,
}

impl Dialect {
    /// PostgreSQL's default since 9.1.
    pub const STANDARD: Dialect = Dialect {
        standard_conforming_strings: true,
    };
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect::STANDARD
    }
}

impl Dialect {
    /// MySQL/MariaDB with the default `sql_mode` (an alias of [`MysqlDialect::DEFAULT`]; the
    /// `_with` functions take either type).
    pub const MYSQL: MysqlDialect = MysqlDialect::DEFAULT;
}

/// MySQL/MariaDB lexing rules that depend on the session's `sql_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MysqlDialect {
    /// False under `NO_BACKSLASH_ESCAPES` (the server reports it in every OK's status flags).
    pub backslash_escapes: bool,
    /// `ANSI_QUOTES`: `".."` is an identifier, not a string.
    pub ansi_quotes: bool,
}

impl MysqlDialect {
    pub const DEFAULT: MysqlDialect = MysqlDialect {
        backslash_escapes: true,
        ansi_quotes: false,
    };
}

impl Default for MysqlDialect {
    fn default() -> Self {
        MysqlDialect::DEFAULT
    }
}

/// Which SQL the text is: PostgreSQL under its settings, or MySQL/MariaDB under its
/// `sql_mode`. The `_with` functions take anything that converts into it ([`Dialect`],
/// [`MysqlDialect`]), so PostgreSQL callers keep passing a [`Dialect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Postgres(Dialect),
    Mysql(MysqlDialect),
}

impl Syntax {
    pub const POSTGRES: Syntax = Syntax::Postgres(Dialect::STANDARD);
    pub const MYSQL: Syntax = Syntax::Mysql(MysqlDialect::DEFAULT);
}

impl Default for Syntax {
    fn default() -> Self {
        Syntax::POSTGRES
    }
}

impl From<Dialect> for Syntax {
    fn from(d: Dialect) -> Self {
        Syntax::Postgres(d)
    }
}

impl From<MysqlDialect> for Syntax {
    fn from(d: MysqlDialect) -> Self {
        Syntax::Mysql(d)
    }
}

/// What [`analyze`] found in one query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Analysis {
    /// Statements seen (split on top-level `;`, ignoring empty ones).
    pub statements: u32,
    /// True only when there is at least one statement and every statement is provably
    /// read-only: `SELECT`/`VALUES`/`TABLE`/`WITH`/`SHOW`, or `EXPLAIN` of such a statement,
    /// with no data-modifying part (`INSERT`/`UPDATE`/`DELETE`/`MERGE` anywhere, `INTO`,
    /// `FOR UPDATE`/`SHARE`/`NO KEY UPDATE`/`KEY SHARE`) and no call to a function outside the
    /// allow-list of pure built-ins.
    pub read_only: bool,
    /// What the first statement does to the transaction (so `BEGIN READ ONLY; SELECT ...` is
    /// `BeginReadOnly`); later statements are not looked at for this.
    pub tx: TxEffect,
    /// The first session state found that makes the server connection unshareable.
    pub pin: Option<PinReason>,
}

/// What a statement does to transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxEffect {
    /// `BEGIN` / `START TRANSACTION` (and `COMMIT AND CHAIN`, which opens the next one).
    Begin,
    /// `BEGIN READ ONLY`, `START TRANSACTION READ ONLY`, `BEGIN ISOLATION LEVEL ... READ ONLY`.
    BeginReadOnly,
    /// `COMMIT`, `END`, `ROLLBACK`/`ABORT` (not `ROLLBACK TO`), `PREPARE TRANSACTION`.
    Commit,
    Other,
}

/// Why a query's server connection can no longer be shared with other clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// Session-level `SET` (not `SET LOCAL`/`SET TRANSACTION`), `RESET`, `set_config(...)`.
    Set,
    Listen,
    /// `pg_advisory_lock` and friends (session-level; the `_xact_` ones end with the transaction).
    AdvisoryLock,
    /// `CREATE TEMP TABLE/VIEW/SEQUENCE`, `SELECT ... INTO TEMP`, objects created in `pg_temp`.
    TempObject,
    /// `DECLARE ... WITH HOLD`.
    HoldCursor,
    /// SQL-level `PREPARE` (protocol-level prepared statements are the front end's business).
    SqlPrepare,
    Load,
    /// MySQL: a user variable assigned (`SET @x`, `@x :=`, `SELECT .. INTO @x`).
    UserVariable,
    /// MySQL: `LOCK TABLES`, `FLUSH TABLES .. WITH READ LOCK` (held until unlocked or the
    /// session ends).
    LockTables,
    /// MySQL: `HANDLER t OPEN` (a table handler the session keeps; no status flag shows it).
    Handler,
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
            PinReason::UserVariable => "user_variable",
            PinReason::LockTables => "lock_tables",
            PinReason::Handler => "handler",
        }
    }
}

/// `sql` with every literal (string, bit string, dollar-quoted, numeric) replaced by `?`,
/// comments removed and whitespace runs collapsed to one space. Identifiers, keywords,
/// operators and `$n` parameters are kept as written.
pub fn mask_literals(sql: &str) -> String {
    mask_literals_with(sql, Dialect::STANDARD)
}

/// [`mask_literals`] under the given server settings or for MySQL ([`Syntax`]).
pub fn mask_literals_with(sql: &str, dialect: impl Into<Syntax>) -> String {
    // Every token is at least as long as what replaces it, so this is the only allocation.
    let mut out = String::with_capacity(sql.len());
    mask_into(sql, dialect.into(), &mut out);
    out
}

/// [`mask_literals_with`], appended to `out` (for callers that reuse a buffer; appends at most
/// `sql.len()` bytes).
pub fn mask_literals_into(sql: &str, dialect: impl Into<Syntax>, out: &mut String) {
    mask_into(sql, dialect.into(), out)
}

fn mask_into(sql: &str, dialect: Syntax, out: &mut String) {
    let start = out.len();
    let mut gap = false;
    for t in Lexer::new(sql, dialect) {
        match t.kind {
            Kind::Space | Kind::Comment => gap = true,
            kind => {
                if gap && out.len() > start {
                    out.push(' ');
                }
                gap = false;
                match kind {
                    Kind::String | Kind::Number => out.push('?'),
                    // Token boundaries are always at ASCII bytes or the end, so this slice
                    // is on char boundaries; `get` keeps that a non-panicking fact.
                    _ => out.push_str(sql.get(t.start..t.end).unwrap_or("")),
                }
            }
        }
    }
}

/// Whether [`analyze`] could find a [`PinReason`] in `sql`: a byte scan, about ten times
/// cheaper than the analysis, that a front end runs first so the common statement skips the
/// lexer. It errs one way only: `false` means no pin for certain; `true` means "analyze".
///
/// Every pin needs one of a few words (`set`, `listen`, `load`, `temp`, `hold`, `prepare`,
/// `advisory`) somewhere in the text, in any case. `set` is the common one (`UPDATE t SET`),
/// so it only counts where it can start a statement (not right after a word), as part of
/// `reset`, or as `set_config`. Comments could hide where a statement starts, and `U&`
/// escapes could spell a word, so text with `--`, `/*` or `u&` is always analyzed.
pub fn may_pin(sql: &[u8]) -> bool {
    // Every pattern covers a whole pair of bytes at an even offset that the table marks (see
    // `PIN_PAIRS`), so the scan steps two bytes at a time and the exact rule (`pin_word_at`)
    // looks only around marked pairs. Eight bytes are read as one word and its four pairs
    // looked up without a branch between them: most text has no marked pair in most words.
    let mut words = sql.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let w = u64::from_le_bytes(b);
        let marked = PIN_PAIRS[usize::from(w as u16)]
            | PIN_PAIRS[usize::from((w >> 16) as u16)]
            | PIN_PAIRS[usize::from((w >> 32) as u16)]
            | PIN_PAIRS[usize::from((w >> 48) as u16)];
        if marked != 0 && pin_in_word(sql, at, w) {
            return true;
        }
        at += 8;
    }
    let mut i = at;
    while i + 1 < sql.len() {
        if pin_pair(sql[i], sql[i + 1]) && pin_near(sql, i) {
            return true;
        }
        i += 2;
    }
    i < sql.len() && pin_pair(sql[i], 0) && pin_near(sql, i)
}

/// The exact rule around the marked pairs of `w`, the eight bytes at `at` (kept out of the
/// scan's loop). Plain loops: iterator adaptors cost more here than the rule (every `SELECT`
/// starts with a marked pair, `SE` as in `set`).
#[inline(never)]
fn pin_in_word(sql: &[u8], at: usize, w: u64) -> bool {
    let mut k = 0;
    while k < 4 {
        if PIN_PAIRS[usize::from((w >> (16 * k)) as u16)] != 0 && pin_near(sql, at + 2 * k) {
            return true;
        }
        k += 1;
    }
    false
}

/// The exact rule around the pair at `i`: at the byte before it, its own two bytes.
#[inline(never)]
fn pin_near(sql: &[u8], i: usize) -> bool {
    (i > 0 && pin_word_at(sql, i - 1)) || pin_word_at(sql, i) || pin_word_at(sql, i + 1)
}

fn pin_pair(first: u8, second: u8) -> bool {
    PIN_PAIRS[usize::from(u16::from_le_bytes([first, second]))] != 0
}

/// One byte per pair of bytes (indexed by the pair read as a little-endian `u16`): non-zero
/// when the pair can lie inside one of [`may_pin`]'s patterns starting at the pair or the
/// byte before it. A pattern of three letters or more (`set`, `listen`, `load`, `temp`,
/// `hold`, `prepare`, `advisory`) starting at an even offset has its first two letters there,
/// and one starting at an odd offset its second and third; the two-byte ones (`--`, `/*`,
/// `u&`) hold a byte that is marked in any pair (`-`, `/`, `*`, `&`), so whichever pair covers
/// it is marked. A byte rather than a bit per pair (64 KiB): a lookup is one load.
static PIN_PAIRS: [u8; 65536] = pin_pairs();

const fn pin_pairs() -> [u8; 65536] {
    const WORDS: [&[u8]; 7] = [
        b"set",
        b"listen",
        b"load",
        b"temp",
        b"hold",
        b"prepare",
        b"advisory",
    ];
    const fn mark(t: &mut [u8; 65536], first: u8, second: u8) {
        t[(second as usize) << 8 | first as usize] = 1;
    }
    let mut t = [0u8; 65536];
    let mut c = 0;
    while c < 256 {
        let mut k = 0;
        while k < 4 {
            let special = b"-/*&"[k];
            mark(&mut t, special, c as u8);
            mark(&mut t, c as u8, special);
            k += 1;
        }
        c += 1;
    }
    let mut w = 0;
    while w < WORDS.len() {
        let word = WORDS[w];
        let mut start = 0;
        while start < 2 {
            // Every spelling of the two letters: lower and upper case each.
            let (a, b) = (word[start], word[start + 1]);
            let (ua, ub) = (a.to_ascii_uppercase(), b.to_ascii_uppercase());
            mark(&mut t, a, b);
            mark(&mut t, ua, b);
            mark(&mut t, a, ub);
            mark(&mut t, ua, ub);
            start += 1;
        }
        w += 1;
    }
    t
}

/// [`may_pin`]'s exact rule at `i`.
fn pin_word_at(sql: &[u8], i: usize) -> bool {
    let at = |i: usize, word: &[u8]| {
        sql.get(i..i + word.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(word))
    };
    let Some(&b) = sql.get(i) else {
        return false;
    };
    match b | 0x20 {
        b'-' => b == b'-' && sql.get(i + 1) == Some(&b'-'),
        b'/' => b == b'/' && sql.get(i + 1) == Some(&b'*'),
        b'&' => b == b'&' && i > 0 && sql[i - 1] | 0x20 == b'u',
        b's' if at(i, b"set") => {
            // After a word (`UPDATE t SET`) it cannot be a statement's first token.
            let head = sql[..i]
                .iter()
                .rev()
                .find(|c| !c.is_ascii_whitespace())
                .is_none_or(|&c| !(c.is_ascii_alphanumeric() || b"_$\"".contains(&c)));
            head || at(i + 3, b"_config") || (i >= 2 && at(i - 2, b"re"))
        }
        b'l' => at(i, b"listen") || at(i, b"load"),
        b't' => at(i, b"temp"),
        b'h' => at(i, b"hold"),
        b'p' => at(i, b"prepare"),
        b'a' => at(i, b"advisory"),
        _ => false,
    }
}

/// [`may_pin`] for MySQL text: `false` means [`analyze_with`] under [`Syntax::MYSQL`] finds no
/// [`PinReason`] for certain. Every MySQL pin needs `@` or `:=` (user variables), or one of the words
/// `set`, `lock` (`LOCK TABLES`, `GET_LOCK`, `FLUSH .. LOCK`), `temp`, `prepare`, `use` or
/// `handler`, in
/// any case and anywhere (a plain scan: comments and strings cannot hide a word from it).
pub fn may_pin_mysql(sql: &[u8]) -> bool {
    const WORDS: [&[u8]; 6] = [b"set", b"lock", b"temp", b"prepare", b"use", b"handler"];
    sql.iter().enumerate().any(|(i, &b)| {
        b == b'@'
            || (b == b':' && sql.get(i + 1) == Some(&b'='))
            || (matches!(b | 0x20, b's' | b'l' | b't' | b'p' | b'u' | b'h')
                && WORDS.iter().any(|w| {
                    sql.get(i..i + w.len())
                        .is_some_and(|s| s.eq_ignore_ascii_case(w))
                }))
    })
}

/// What `sql` (one simple-query string, possibly several statements) does; see [`Analysis`].
pub fn analyze(sql: &str) -> Analysis {
    analyze_with(sql, Dialect::STANDARD)
}

/// [`analyze`] under the given server settings or for MySQL ([`Syntax`]).
pub fn analyze_with(sql: &str, dialect: impl Into<Syntax>) -> Analysis {
    analyze_syntax(sql, dialect.into())
}

fn analyze_syntax(sql: &str, dialect: Syntax) -> Analysis {
    let mut lx = Lexer::new(sql, dialect);
    let mut out = Analysis {
        statements: 0,
        read_only: true,
        tx: TxEffect::Other,
        pin: None,
    };
    while let Some(st) = statement(&mut lx) {
        if st.empty {
            continue;
        }
        out.statements = out.statements.saturating_add(1);
        out.read_only &= st.read_only;
        if out.statements == 1 {
            out.tx = st.tx;
        }
        if out.pin.is_none() {
            out.pin = st.pin;
        }
    }
    out.read_only &= out.statements > 0;
    out
}

/// One token of SQL text as this module's lexer reads it, for callers that classify tokens
/// themselves (the SQL-injection detector) instead of writing a second lexer. `start..end` are
/// byte offsets into the text, always on char boundaries, and never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlToken {
    pub kind: SqlTokenKind,
    pub start: usize,
    pub end: usize,
}

/// What a [`SqlToken`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlTokenKind {
    /// Unquoted identifier or keyword.
    Word,
    /// `"..."`, `U&"..."`, or MySQL `` `...` ``.
    QuotedIdent,
    /// Any string constant (quotes and prefix included), dollar-quoted text included.
    String,
    Number,
    /// `$1`.
    Param,
    /// One of `( ) [ ] , ; . :`.
    Punct(u8),
    /// A run of operator characters.
    Op,
    /// A whole comment, markers included (an unterminated one runs to the end of the text).
    Comment,
    /// The opener or closer of a MySQL executable comment (`/*!50700`, `*/`).
    ExecMarker,
    Space,
    /// Any other single byte.
    Other,
}

/// The tokens of `sql` in order, whitespace and comments included: linear time, no
/// allocation, never panics.
pub fn tokens(sql: &str, dialect: impl Into<Syntax>) -> Tokens<'_> {
    Tokens(Lexer::new(sql, dialect.into()))
}

/// Iterator returned by [`tokens`].
#[derive(Debug, Clone)]
pub struct Tokens<'a>(Lexer<'a>);

impl Iterator for Tokens<'_> {
    type Item = SqlToken;

    fn next(&mut self) -> Option<SqlToken> {
        let t = self.0.next()?;
        let kind = match t.kind {
            Kind::Word => SqlTokenKind::Word,
            Kind::QuotedIdent => SqlTokenKind::QuotedIdent,
            Kind::String => SqlTokenKind::String,
            Kind::Number => SqlTokenKind::Number,
            Kind::Param => SqlTokenKind::Param,
            Kind::Punct(b) => SqlTokenKind::Punct(b),
            Kind::Op => SqlTokenKind::Op,
            Kind::Comment => SqlTokenKind::Comment,
            Kind::ExecMarker => SqlTokenKind::ExecMarker,
            Kind::Space => SqlTokenKind::Space,
            Kind::Other => SqlTokenKind::Other,
        };
        Some(SqlToken {
            kind,
            start: t.start,
            end: t.end,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Unquoted identifier or keyword.
    Word,
    /// `"..."` or `U&"..."`.
    QuotedIdent,
    /// Any string constant, dollar-quoted text included.
    String,
    Number,
    /// `$1`.
    Param,
    /// One of `( ) [ ] , ; . :`.
    Punct(u8),
    /// A run of operator characters.
    Op,
    Comment,
    /// The opener (`/*!50700`) or closer (`*/`) of a MySQL executable comment: kept in masked
    /// text, skipped by the analysis like a comment.
    ExecMarker,
    Space,
    /// Any other single byte (a stray `$`, a control character...).
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, Copy)]
struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    /// Backslash escapes in plain `'..'` strings (`standard_conforming_strings = off`, or
    /// MySQL without `NO_BACKSLASH_ESCAPES`).
    backslash_strings: bool,
    /// MySQL's token rules (see the module documentation).
    mysql: bool,
    /// MySQL `ANSI_QUOTES`.
    ansi_quotes: bool,
    /// Inside a MySQL executable comment `/*! .. */`: its `*/` is a token of its own.
    exec_comment: bool,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

fn is_op_char(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'%'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
    )
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a str, syntax: Syntax) -> Self {
        let (backslash_strings, mysql, ansi_quotes) = match syntax {
            Syntax::Postgres(d) => (!d.standard_conforming_strings, false, false),
            Syntax::Mysql(m) => (m.backslash_escapes, true, m.ansi_quotes),
        };
        Lexer {
            src: sql.as_bytes(),
            pos: 0,
            backslash_strings,
            mysql,
            ansi_quotes,
            exec_comment: false,
        }
    }

    /// MySQL's `-- ` comment: two dashes and a space or control character (or the end).
    fn mysql_dash_comment(&self, i: usize) -> bool {
        self.at(i) == b'-' && self.at(i + 1) == b'-' && self.at(i + 2) <= b' '
    }

    /// Where a MySQL operator run must stop before byte `i`: a comment or quote starts there,
    /// or an executable comment ends.
    fn mysql_op_stop(&self, i: usize) -> bool {
        match self.src[i] {
            b'#' | b'`' => true,
            b'-' => self.mysql_dash_comment(i),
            b'*' => self.exec_comment && self.at(i + 1) == b'/',
            _ => false,
        }
    }

    /// The tokens whose rules differ in MySQL, or `None` for the shared rules.
    fn mysql_token(&mut self, start: usize) -> Option<(Kind, usize)> {
        let src = self.src;
        let n = src.len();
        let b = src[start];
        let b1 = self.at(start + 1);
        let line_end = |mut i: usize| {
            while i < n && src[i] != b'\n' && src[i] != b'\r' {
                i += 1;
            }
            i
        };
        Some(match b {
            b'#' => (Kind::Comment, line_end(start + 1)),
            b'-' if b1 == b'-' => {
                if self.mysql_dash_comment(start) {
                    (Kind::Comment, line_end(start + 2))
                } else {
                    // `1--1`: two minus signs.
                    (Kind::Op, start + 1)
                }
            }
            b'/' if b1 == b'*' => {
                let bang = match (self.at(start + 2), self.at(start + 3)) {
                    (b'!', _) => Some(start + 3),
                    (b'M', b'!') => Some(start + 4),
                    _ => None,
                };
                if let Some(mut i) = bang {
                    // Executable comment: the opener and its version are one token, the
                    // content is SQL, and the `*/` that closes it is another token.
                    while i < n && src[i].is_ascii_digit() {
                        i += 1;
                    }
                    self.exec_comment = true;
                    (Kind::ExecMarker, i)
                } else {
                    // MySQL comments do not nest: the first `*/` ends this one.
                    let end = src
                        .get(start + 2..)
                        .and_then(|r| r.windows(2).position(|w| w == b"*/"))
                        .map_or(n, |p| start + 2 + p + 2);
                    (Kind::Comment, end)
                }
            }
            b'*' if b1 == b'/' && self.exec_comment => {
                self.exec_comment = false;
                (Kind::ExecMarker, start + 2)
            }
            b'"' if self.ansi_quotes => {
                (Kind::QuotedIdent, self.quoted_end(start + 1, b'"', false))
            }
            b'"' => (
                Kind::String,
                self.quoted_end(start + 1, b'"', self.backslash_strings),
            ),
            b'`' => (Kind::QuotedIdent, self.quoted_end(start + 1, b'`', false)),
            // `$` starts identifiers; `e'..'` and `u&'..'` are not string forms here.
            b'$' | b'e' | b'E' | b'u' | b'U' => {
                let mut i = start + 1;
                while i < n && is_ident_cont(src[i]) {
                    i += 1;
                }
                (Kind::Word, i)
            }
            _ => return None,
        })
    }

    fn at(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    /// End of a `'`-quoted body that starts at `i` (just after the opening quote).
    fn quoted_end(&self, mut i: usize, quote: u8, backslash: bool) -> usize {
        let n = self.src.len();
        while i < n {
            let b = self.src[i];
            if backslash && b == b'\\' {
                i += 2;
            } else if b == quote {
                if self.at(i + 1) == quote {
                    i += 2;
                } else {
                    return i + 1;
                }
            } else {
                i += 1;
            }
        }
        n
    }

    /// A dollar-quote opening tag (`$$`, `$tag$`) at `i`: its length.
    fn dollar_tag_len(&self, i: usize) -> Option<usize> {
        let mut j = i + 1;
        if self.at(j) != b'$' {
            if !is_ident_start(self.at(j)) {
                return None;
            }
            while j < self.src.len() && is_ident_cont(self.src[j]) && self.src[j] != b'$' {
                j += 1;
            }
            if self.at(j) != b'$' {
                return None;
            }
        }
        Some(j + 1 - i)
    }

    fn number_end(&self, mut i: usize) -> usize {
        let n = self.src.len();
        if self.at(i) == b'0' && matches!(self.at(i + 1), b'x' | b'X' | b'o' | b'O' | b'b' | b'B') {
            i += 2;
            while i < n && (self.src[i].is_ascii_alphanumeric() || self.src[i] == b'_') {
                i += 1;
            }
            return i;
        }
        while i < n && (self.src[i].is_ascii_digit() || self.src[i] == b'_') {
            i += 1;
        }
        // `1..2` is not a fraction (array slices use `:`, but be safe).
        if self.at(i) == b'.' && self.at(i + 1) != b'.' {
            i += 1;
            while i < n && (self.src[i].is_ascii_digit() || self.src[i] == b'_') {
                i += 1;
            }
        }
        if matches!(self.at(i), b'e' | b'E') {
            let sign = usize::from(matches!(self.at(i + 1), b'+' | b'-'));
            if self.at(i + 1 + sign).is_ascii_digit() {
                i += 1 + sign;
                while i < n && self.src[i].is_ascii_digit() {
                    i += 1;
                }
            }
        }
        i
    }

    /// The next token, skipping whitespace and comments.
    fn next_sig(&mut self) -> Option<Token> {
        loop {
            let t = self.next()?;
            if !matches!(t.kind, Kind::Space | Kind::Comment | Kind::ExecMarker) {
                return Some(t);
            }
        }
    }

    /// The next significant token, without consuming it.
    fn peek_sig(&self) -> Option<Token> {
        let mut copy = *self;
        copy.next_sig()
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let src = self.src;
        let n = src.len();
        let start = self.pos;
        if start >= n {
            return None;
        }
        let b = src[start];
        let b1 = self.at(start + 1);
        let mysql = if self.mysql && !is_space(b) {
            self.mysql_token(start)
        } else {
            None
        };
        let (kind, end) = if let Some(token) = mysql {
            token
        } else if is_space(b) {
            let mut i = start + 1;
            while i < n && is_space(src[i]) {
                i += 1;
            }
            (Kind::Space, i)
        } else if b == b'-' && b1 == b'-' {
            let mut i = start + 2;
            while i < n && src[i] != b'\n' && src[i] != b'\r' {
                i += 1;
            }
            (Kind::Comment, i)
        } else if b == b'/' && b1 == b'*' {
            let mut depth = 1usize;
            let mut i = start + 2;
            while i < n && depth > 0 {
                if src[i] == b'/' && self.at(i + 1) == b'*' {
                    depth += 1;
                    i += 2;
                } else if src[i] == b'*' && self.at(i + 1) == b'/' {
                    depth -= 1;
                    i += 2;
                } else {
                    i += 1;
                }
            }
            (Kind::Comment, i.min(n))
        } else if b == b'\'' {
            (
                Kind::String,
                self.quoted_end(start + 1, b'\'', self.backslash_strings),
            )
        } else if b == b'"' {
            (Kind::QuotedIdent, self.quoted_end(start + 1, b'"', false))
        } else if matches!(b, b'e' | b'E') && b1 == b'\'' {
            (Kind::String, self.quoted_end(start + 2, b'\'', true))
        } else if matches!(b, b'b' | b'B' | b'x' | b'X' | b'n' | b'N') && b1 == b'\'' {
            (
                Kind::String,
                self.quoted_end(start + 2, b'\'', self.backslash_strings),
            )
        } else if matches!(b, b'u' | b'U') && b1 == b'&' && self.at(start + 2) == b'\'' {
            (
                Kind::String,
                self.quoted_end(start + 3, b'\'', self.backslash_strings),
            )
        } else if matches!(b, b'u' | b'U') && b1 == b'&' && self.at(start + 2) == b'"' {
            (Kind::QuotedIdent, self.quoted_end(start + 3, b'"', false))
        } else if is_ident_start(b) {
            let mut i = start + 1;
            while i < n && is_ident_cont(src[i]) {
                i += 1;
            }
            (Kind::Word, i)
        } else if b.is_ascii_digit() || (b == b'.' && b1.is_ascii_digit()) {
            (Kind::Number, self.number_end(start))
        } else if b == b'$' && b1.is_ascii_digit() {
            let mut i = start + 1;
            while i < n && src[i].is_ascii_digit() {
                i += 1;
            }
            (Kind::Param, i)
        } else if b == b'$' {
            match self.dollar_tag_len(start) {
                Some(len) => {
                    let tag = &src[start..start + len];
                    let body = start + len;
                    // Only a `$` can start the closing tag, and a partial match never
                    // contains one past its first byte, so this stays linear.
                    let mut i = body;
                    let mut end = n;
                    while let Some(p) = src.get(i..).and_then(|r| r.iter().position(|&c| c == b'$'))
                    {
                        if src[i + p..].starts_with(tag) {
                            end = i + p + len;
                            break;
                        }
                        i += p + 1;
                    }
                    (Kind::String, end)
                }
                None => (Kind::Other, start + 1),
            }
        } else if matches!(b, b'(' | b')' | b'[' | b']' | b',' | b';' | b'.' | b':') {
            (Kind::Punct(b), start + 1)
        } else if is_op_char(b) {
            let mut i = start + 1;
            while i < n
                && is_op_char(src[i])
                && !(src[i] == b'-' && self.at(i + 1) == b'-' && !self.mysql)
                && !(src[i] == b'/' && self.at(i + 1) == b'*')
                && !(self.mysql && self.mysql_op_stop(i))
            {
                i += 1;
            }
            (Kind::Op, i)
        } else {
            (Kind::Other, start + 1)
        };
        let end = end.clamp(start + 1, n);
        self.pos = end;
        Some(Token { kind, start, end })
    }
}

// ---------------------------------------------------------------------------------------------
// Statement analysis

/// The kind of statement, from its leading keyword(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// SELECT, VALUES, TABLE, WITH, SHOW: read-only unless something inside writes.
    Query,
    Begin,
    /// COMMIT, END, ABORT, ROLLBACK (not TO), PREPARE TRANSACTION.
    Commit,
    Create,
    Declare,
    Other,
}

struct Stmt {
    empty: bool,
    read_only: bool,
    tx: TxEffect,
    pin: Option<PinReason>,
}

fn kw(t: Option<Token>, src: &[u8], word: &str) -> bool {
    t.is_some_and(|t| t.kind == Kind::Word && text(src, t).eq_ignore_ascii_case(word.as_bytes()))
}

fn kw_any(t: Option<Token>, src: &[u8], words: &[&str]) -> bool {
    words.iter().any(|w| kw(t, src, w))
}

fn is_punct(t: Option<Token>, p: u8) -> bool {
    t.is_some_and(|t| t.kind == Kind::Punct(p))
}

fn text(src: &[u8], t: Token) -> &[u8] {
    src.get(t.start..t.end).unwrap_or(&[])
}

fn set_pin(pin: &mut Option<PinReason>, reason: PinReason) {
    if pin.is_none() {
        *pin = Some(reason);
    }
}

/// Consumes tokens through the `)` matching an already consumed `(`. Stops early (returning
/// false) at a `;` it leaves unconsumed, or at the end.
fn skip_parens(lx: &mut Lexer) -> bool {
    let mut depth = 1usize;
    while let Some(t) = lx.peek_sig() {
        if t.kind == Kind::Punct(b';') {
            return false;
        }
        lx.next_sig();
        match t.kind {
            Kind::Punct(b'(') => depth += 1,
            Kind::Punct(b')') => {
                depth -= 1;
                if depth == 0 {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// Reads one statement through its terminating `;` (or the end). `None` at the end of input.
fn statement(lx: &mut Lexer) -> Option<Stmt> {
    let src = lx.src;
    let mysql = lx.mysql;
    let mut st = Stmt {
        empty: false,
        read_only: false,
        tx: TxEffect::Other,
        pin: None,
    };
    let mut depth = 0usize;

    // Leading parentheses, then EXPLAIN [ (options) | ANALYZE VERBOSE ... ], then the head.
    let mut first = lx.next_sig()?;
    if first.kind == Kind::Punct(b';') {
        st.empty = true;
        return Some(st);
    }
    loop {
        while first.kind == Kind::Punct(b'(') {
            depth += 1;
            match lx.next_sig() {
                Some(t) => first = t,
                None => return Some(st),
            }
        }
        if !kw(Some(first), src, "explain") {
            break;
        }
        if is_punct(lx.peek_sig(), b'(') {
            lx.next_sig();
            skip_parens(lx);
        }
        while kw_any(lx.peek_sig(), src, &["analyze", "analyse", "verbose"]) {
            lx.next_sig();
        }
        match lx.peek_sig() {
            Some(t) if t.kind != Kind::Punct(b';') => {
                lx.next_sig();
                first = t;
            }
            // A bare EXPLAIN: a syntax error, nothing runs.
            _ => break,
        }
    }

    let head_tok = Some(first);
    let mut flush = false;
    let head = if kw_any(
        head_tok,
        src,
        &["select", "values", "table", "with", "show"],
    ) || (mysql && kw_any(head_tok, src, &["describe", "desc"]))
    {
        Head::Query
    } else if mysql {
        mysql_head(lx, head_tok, &mut st.pin, &mut flush)
    } else if kw(head_tok, src, "begin") {
        Head::Begin
    } else if kw(head_tok, src, "start") {
        if kw(lx.peek_sig(), src, "transaction") {
            Head::Begin
        } else {
            Head::Other
        }
    } else if kw_any(head_tok, src, &["commit", "end", "abort"]) {
        if kw(lx.peek_sig(), src, "prepared") {
            Head::Other
        } else {
            Head::Commit
        }
    } else if kw(head_tok, src, "rollback") {
        let mut peek = *lx;
        if kw_any(peek.peek_sig(), src, &["work", "transaction"]) {
            peek.next_sig();
        }
        if kw_any(peek.peek_sig(), src, &["to", "prepared"]) {
            Head::Other
        } else {
            Head::Commit
        }
    } else if kw(head_tok, src, "prepare") {
        if kw(lx.peek_sig(), src, "transaction") {
            Head::Commit
        } else {
            set_pin(&mut st.pin, PinReason::SqlPrepare);
            Head::Other
        }
    } else if kw(head_tok, src, "set") {
        if !kw_any(lx.peek_sig(), src, &["local", "transaction", "constraints"]) {
            set_pin(&mut st.pin, PinReason::Set);
        }
        Head::Other
    } else if kw(head_tok, src, "reset") {
        set_pin(&mut st.pin, PinReason::Set);
        Head::Other
    } else if kw(head_tok, src, "listen") {
        set_pin(&mut st.pin, PinReason::Listen);
        Head::Other
    } else if kw(head_tok, src, "load") {
        set_pin(&mut st.pin, PinReason::Load);
        Head::Other
    } else if kw(head_tok, src, "declare") {
        Head::Declare
    } else if kw(head_tok, src, "create") {
        while kw_any(
            lx.peek_sig(),
            src,
            &["or", "replace", "global", "local", "unlogged"],
        ) {
            lx.next_sig();
        }
        if kw_any(lx.peek_sig(), src, &["temp", "temporary"]) {
            set_pin(&mut st.pin, PinReason::TempObject);
        }
        Head::Create
    } else {
        Head::Other
    };

    // The rest of the statement, token by token.
    let mut writes = false;
    let mut unsafe_call = false;
    let mut read_only_mode = false;
    let mut read_write_mode = false;
    let mut chain = false;
    let mut saw_into = false;
    let mut declare_for = false;
    let mut atomic = 0usize;
    let mut prev = head_tok;
    let mut prev2: Option<Token> = None;
    while let Some(t) = lx.next_sig() {
        match t.kind {
            Kind::Punct(b'(') => depth += 1,
            Kind::Punct(b')') => depth = depth.saturating_sub(1),
            Kind::Punct(b';') if depth == 0 && atomic == 0 => break,
            Kind::Word => {
                let cur = Some(t);
                let next = lx.peek_sig();
                if head == Head::Create && atomic == 0 {
                    if kw(cur, src, "begin") && kw(next, src, "atomic") {
                        atomic = 1;
                    }
                } else if atomic > 0 {
                    if kw(cur, src, "case") {
                        atomic += 1;
                    } else if kw(cur, src, "end") {
                        atomic -= 1;
                    }
                }
                if kw_any(cur, src, &["insert", "update", "delete", "merge"]) {
                    writes = true;
                } else if kw(cur, src, "into") {
                    writes = true;
                    saw_into = true;
                    if head == Head::Query && kw_any(next, src, &["temp", "temporary"]) {
                        set_pin(&mut st.pin, PinReason::TempObject);
                    }
                    if mysql && next.is_some_and(|n| is_user_var(src, n)) {
                        set_pin(&mut st.pin, PinReason::UserVariable);
                    }
                } else if mysql && kw(cur, src, "lock") {
                    // `LOCK IN SHARE MODE` is a locking read; `FLUSH .. WITH READ LOCK` a lock.
                    writes = true;
                    if flush {
                        set_pin(&mut st.pin, PinReason::LockTables);
                    }
                } else if kw(cur, src, "for") {
                    if kw_any(next, src, &["update", "share", "no", "key"]) {
                        writes = true;
                    }
                    if depth == 0 {
                        declare_for = true;
                    }
                } else if kw(cur, src, "read") {
                    read_only_mode |= kw(next, src, "only");
                    read_write_mode |= kw(next, src, "write");
                } else if kw(cur, src, "and") {
                    chain |= kw(next, src, "chain");
                } else if kw(cur, src, "with") {
                    if head == Head::Declare && !declare_for && kw(next, src, "hold") {
                        set_pin(&mut st.pin, PinReason::HoldCursor);
                    }
                } else if kw(cur, src, "pg_temp") {
                    if (head == Head::Create || saw_into) && is_punct(next, b'.') {
                        set_pin(&mut st.pin, PinReason::TempObject);
                    }
                } else if kw(cur, src, "operator") && is_punct(next, b'(') {
                    // `OPERATOR(schema.+)` is an operator, not a call, and what follows its
                    // `)` is an operand, not an alias.
                    lx.next_sig();
                    skip_parens(lx);
                    prev2 = None;
                    prev = Some(Token {
                        kind: Kind::Op,
                        start: t.start,
                        end: t.start,
                    });
                    continue;
                }
                if is_punct(next, b'(') && is_call(lx, src, t, prev) {
                    call(
                        src,
                        t,
                        false,
                        mysql,
                        prev,
                        prev2,
                        &mut unsafe_call,
                        &mut st.pin,
                    );
                }
            }
            Kind::QuotedIdent if is_punct(lx.peek_sig(), b'(') && is_call(lx, src, t, prev) => {
                call(
                    src,
                    t,
                    true,
                    mysql,
                    prev,
                    prev2,
                    &mut unsafe_call,
                    &mut st.pin,
                );
            }
            // `@x := expr`: only user variables are assigned with `:=` in MySQL.
            Kind::Punct(b':')
                if mysql
                    && lx.peek_sig().is_some_and(|n| {
                        n.start == t.end && n.kind == Kind::Op && text(src, n).starts_with(b"=")
                    }) =>
            {
                set_pin(&mut st.pin, PinReason::UserVariable);
            }
            _ => {}
        }
        prev2 = prev;
        prev = Some(t);
    }

    match head {
        Head::Query => st.read_only = !writes && !unsafe_call && st.pin.is_none(),
        Head::Begin => {
            st.tx = if read_only_mode && !read_write_mode {
                TxEffect::BeginReadOnly
            } else {
                TxEffect::Begin
            }
        }
        Head::Commit => {
            st.tx = if chain {
                TxEffect::Begin
            } else {
                TxEffect::Commit
            }
        }
        Head::Create | Head::Declare | Head::Other => {}
    }
    Some(st)
}

/// The head of a MySQL statement (other than the read-only ones), with the pins it implies.
fn mysql_head(
    lx: &mut Lexer,
    head_tok: Option<Token>,
    pin: &mut Option<PinReason>,
    flush: &mut bool,
) -> Head {
    let src = lx.src;
    if kw(head_tok, src, "begin") {
        // MariaDB's `BEGIN NOT ATOMIC .. END` is a compound statement, not a transaction.
        if kw(lx.peek_sig(), src, "not") {
            Head::Other
        } else {
            Head::Begin
        }
    } else if kw(head_tok, src, "start") {
        if kw(lx.peek_sig(), src, "transaction") {
            Head::Begin
        } else {
            Head::Other
        }
    } else if kw(head_tok, src, "commit") {
        Head::Commit
    } else if kw(head_tok, src, "rollback") {
        let mut peek = *lx;
        if kw(peek.peek_sig(), src, "work") {
            peek.next_sig();
        }
        if kw(peek.peek_sig(), src, "to") {
            Head::Other
        } else {
            Head::Commit
        }
    } else if kw(head_tok, src, "prepare") {
        set_pin(pin, PinReason::SqlPrepare);
        Head::Other
    } else if kw(head_tok, src, "set") {
        match lx.peek_sig() {
            // MariaDB: variables for one statement only.
            n if kw(n, src, "statement") => {}
            Some(n) if is_user_var(src, n) => set_pin(pin, PinReason::UserVariable),
            // Every other SET outlives the statement (`SET LOCAL` is `SET SESSION` here, and
            // `SET TRANSACTION` applies to the session's next transaction).
            _ => set_pin(pin, PinReason::Set),
        }
        Head::Other
    } else if kw(head_tok, src, "use") {
        set_pin(pin, PinReason::Set);
        Head::Other
    } else if kw(head_tok, src, "lock") {
        set_pin(pin, PinReason::LockTables);
        Head::Other
    } else if kw(head_tok, src, "handler") {
        set_pin(pin, PinReason::Handler);
        Head::Other
    } else if kw(head_tok, src, "xa") {
        // XA transactions also show in the status flags (`SERVER_STATUS_IN_TRANS`).
        let next = lx.peek_sig();
        if kw_any(next, src, &["start", "begin"]) {
            Head::Begin
        } else if kw_any(next, src, &["commit", "rollback"]) {
            Head::Commit
        } else {
            Head::Other
        }
    } else if kw(head_tok, src, "flush") {
        *flush = true;
        Head::Other
    } else if kw(head_tok, src, "create") {
        while kw_any(lx.peek_sig(), src, &["or", "replace"]) {
            lx.next_sig();
        }
        if kw(lx.peek_sig(), src, "temporary") {
            set_pin(pin, PinReason::TempObject);
        }
        Head::Create
    } else {
        Head::Other
    }
}

/// A MySQL user variable's `@` (an operator token ending in one `@`: `@x`, `=@x`, not `@@x`).
fn is_user_var(src: &[u8], t: Token) -> bool {
    let s = text(src, t);
    t.kind == Kind::Op && s.ends_with(b"@") && !s.ends_with(b"@@")
}

/// Keywords that may stand before `(` without being a function call.
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
    "dec",
    "decimal",
    "distinct",
    "else",
    "except",
    "exists",
    "float",
    "from",
    "group",
    "having",
    "ilike",
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
    "returning",
    "row",
    "select",
    "some",
    "then",
    "time",
    "timestamp",
    "union",
    "using",
    "values",
    "varchar",
    "varying",
    "when",
    "where",
    "with",
];

/// Unreserved keywords that are not calls only after a `)` (`count(*) FILTER (...)`,
/// `f() OVER (...)`); elsewhere they could name a user function.
const NOT_CALLS_AFTER_PAREN: &[&str] = &["filter", "over"];

/// Whether the word (or quoted identifier) `t`, followed by `(`, is a function call.
fn is_call(lx: &Lexer, src: &[u8], t: Token, prev: Option<Token>) -> bool {
    if t.kind == Kind::Word {
        let cur = Some(t);
        if kw_any(cur, src, NOT_CALLS) {
            return false;
        }
        if is_punct(prev, b')') && kw_any(cur, src, NOT_CALLS_AFTER_PAREN) {
            return false;
        }
        if kw(cur, src, "materialized") && kw_any(prev, src, &["as", "not"]) {
            return false;
        }
    }
    // `AS t(a, b)`, `generate_series(1, 3) g(i)`: an alias with a column list.
    if kw(prev, src, "as") || is_punct(prev, b')') {
        return false;
    }
    // `WITH [RECURSIVE] name(cols) AS (...)`.
    if kw_any(prev, src, &["with", "recursive"]) {
        return false;
    }
    // `..., name(cols) AS [NOT] [MATERIALIZED] (...)`: a further CTE, found with a bounded look.
    if is_punct(prev, b',') && is_cte_name(lx, src) {
        return false;
    }
    true
}

/// With `lx` just before `(`: does a column list follow, then `AS (` / `AS [NOT] MATERIALIZED`?
fn is_cte_name(lx: &Lexer, src: &[u8]) -> bool {
    const LOOKAHEAD: usize = 256;
    let mut look = *lx;
    let mut depth = 0usize;
    for _ in 0..LOOKAHEAD {
        let Some(t) = look.next_sig() else {
            return false;
        };
        match t.kind {
            Kind::Punct(b'(') => depth += 1,
            Kind::Punct(b')') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    if !kw(look.next_sig(), src, "as") {
                        return false;
                    }
                    let after = look.next_sig();
                    return is_punct(after, b'(') || kw_any(after, src, &["not", "materialized"]);
                }
            }
            // Column lists hold names and commas only.
            Kind::Word | Kind::QuotedIdent | Kind::Punct(b',') => {}
            _ => return false,
        }
    }
    false
}

/// Records a call to the function named by `t` (qualified by `prev2` when `prev` is a `.`).
#[allow(clippy::too_many_arguments)]
fn call(
    src: &[u8],
    t: Token,
    quoted: bool,
    mysql: bool,
    prev: Option<Token>,
    prev2: Option<Token>,
    unsafe_call: &mut bool,
    pin: &mut Option<PinReason>,
) {
    let raw = text(src, t);
    let name = if quoted {
        let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or(&[]);
        // A quoted name is case-sensitive: "COUNT" is not count.
        if inner.iter().any(|b| b.is_ascii_uppercase() || *b == b'"') {
            *unsafe_call = true;
            return;
        }
        inner
    } else {
        raw
    };
    let mut buf = [0u8; 64];
    let Some(slot) = buf.get_mut(..name.len()) else {
        *unsafe_call = true;
        return;
    };
    slot.copy_from_slice(name);
    slot.make_ascii_lowercase();
    let lower: &[u8] = slot;

    if mysql {
        if lower == b"get_lock" {
            set_pin(pin, PinReason::AdvisoryLock);
        }
        // A qualified name (`db.f`) is a stored function.
        if is_punct(prev, b'.')
            || MYSQL_PURE
                .binary_search_by(|f| f.as_bytes().cmp(lower))
                .is_err()
        {
            *unsafe_call = true;
        }
        return;
    }
    if SESSION_LOCKS.iter().any(|f| f.as_bytes() == lower) {
        set_pin(pin, PinReason::AdvisoryLock);
    } else if lower == b"set_config" {
        set_pin(pin, PinReason::Set);
    }

    let qualified_ok = if is_punct(prev, b'.') {
        kw(prev2, src, "pg_catalog")
    } else {
        true
    };
    if !qualified_ok || PURE.binary_search_by(|f| f.as_bytes().cmp(lower)).is_err() {
        *unsafe_call = true;
    }
}

/// Advisory locks held until the session ends or they are released.
const SESSION_LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Built-ins that neither write nor change session state. Sorted (a test checks), lowercase.
/// Deliberately absent, among others: nextval, setval, currval/lastval (harmless but tied to
/// session sequences), pg_advisory_*, lo_*, pg_notify, set_config, dblink*, pg_sleep,
/// pg_terminate_backend, pg_cancel_backend, pg_reload_conf, pg_switch_wal, txid_current,
/// pg_current_xact_id (assigns a transaction id, which a replica cannot).
const PURE: &[&str] = &[
    "abs",
    "age",
    "array_agg",
    "array_append",
    "array_cat",
    "array_length",
    "array_lower",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_remove",
    "array_replace",
    "array_to_json",
    "array_to_string",
    "array_upper",
    "ascii",
    "avg",
    "bit_and",
    "bit_length",
    "bit_or",
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
    "col_description",
    "concat",
    "concat_ws",
    "corr",
    "cos",
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
    "format_type",
    "gen_random_uuid",
    "generate_series",
    "generate_subscripts",
    "greatest",
    "grouping",
    "has_database_privilege",
    "has_schema_privilege",
    "has_table_privilege",
    "inet_client_addr",
    "inet_server_addr",
    "initcap",
    "isfinite",
    "json_agg",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_each",
    "json_each_text",
    "json_extract_path",
    "json_extract_path_text",
    "json_object_agg",
    "json_object_keys",
    "json_typeof",
    "jsonb_agg",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_object_agg",
    "jsonb_object_keys",
    "jsonb_pretty",
    "jsonb_set",
    "jsonb_strip_nulls",
    "jsonb_typeof",
    "justify_days",
    "justify_hours",
    "justify_interval",
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
    "log10",
    "lower",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "max",
    "md5",
    "min",
    "mod",
    "mode",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "num_nonnulls",
    "num_nulls",
    "obj_description",
    "octet_length",
    "overlay",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pg_backend_pid",
    "pg_database_size",
    "pg_get_constraintdef",
    "pg_get_expr",
    "pg_get_indexdef",
    "pg_get_userbyid",
    "pg_get_viewdef",
    "pg_is_in_recovery",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_postmaster_start_time",
    "pg_relation_size",
    "pg_size_pretty",
    "pg_table_size",
    "pg_total_relation_size",
    "pg_typeof",
    "pi",
    "position",
    "pow",
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
    "regexp_split_to_table",
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
    "sha256",
    "sign",
    "sin",
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
    "tan",
    "timeofday",
    "to_char",
    "to_date",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_regclass",
    "to_regtype",
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

/// MySQL/MariaDB built-ins that neither write nor change session state. Sorted (a test
/// checks), lowercase. Deliberately absent, among others: sleep, benchmark, get_lock,
/// release_lock, release_all_locks, is_free_lock, last_insert_id (with an argument it sets
/// session state), found_rows, row_count, load_file, nextval, setval, lastval, master_pos_wait,
/// master_gtid_wait.
const MYSQL_PURE: &[&str] = &[
    "abs",
    "acos",
    "adddate",
    "addtime",
    "against",
    "ascii",
    "asin",
    "atan",
    "atan2",
    "avg",
    "bin",
    "bit_and",
    "bit_count",
    "bit_length",
    "bit_or",
    "bit_xor",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "charset",
    "coalesce",
    "collation",
    "concat",
    "concat_ws",
    "connection_id",
    "conv",
    "convert",
    "convert_tz",
    "cos",
    "cot",
    "count",
    "crc32",
    "cume_dist",
    "curdate",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "curtime",
    "database",
    "date",
    "date_add",
    "date_format",
    "date_sub",
    "datediff",
    "day",
    "dayname",
    "dayofmonth",
    "dayofweek",
    "dayofyear",
    "degrees",
    "dense_rank",
    "elt",
    "exp",
    "extract",
    "field",
    "find_in_set",
    "first_value",
    "floor",
    "format",
    "from_base64",
    "from_days",
    "from_unixtime",
    "greatest",
    "group_concat",
    "hex",
    "hour",
    "if",
    "ifnull",
    "inet6_aton",
    "inet6_ntoa",
    "inet_aton",
    "inet_ntoa",
    "instr",
    "isnull",
    "json_array",
    "json_arrayagg",
    "json_contains",
    "json_contains_path",
    "json_depth",
    "json_extract",
    "json_keys",
    "json_length",
    "json_merge_patch",
    "json_object",
    "json_objectagg",
    "json_quote",
    "json_search",
    "json_table",
    "json_type",
    "json_unquote",
    "json_valid",
    "json_value",
    "lag",
    "last_day",
    "last_value",
    "lcase",
    "lead",
    "least",
    "left",
    "length",
    "ln",
    "localtime",
    "localtimestamp",
    "locate",
    "log",
    "log10",
    "log2",
    "lower",
    "lpad",
    "ltrim",
    "makedate",
    "maketime",
    "match",
    "max",
    "md5",
    "microsecond",
    "mid",
    "min",
    "minute",
    "mod",
    "month",
    "monthname",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "nvl",
    "oct",
    "octet_length",
    "ord",
    "percent_rank",
    "period_add",
    "period_diff",
    "pi",
    "position",
    "pow",
    "power",
    "quarter",
    "quote",
    "radians",
    "rand",
    "rank",
    "regexp_instr",
    "regexp_like",
    "regexp_replace",
    "regexp_substr",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_number",
    "rpad",
    "rtrim",
    "schema",
    "sec_to_time",
    "second",
    "session_user",
    "sha",
    "sha1",
    "sha2",
    "sign",
    "sin",
    "soundex",
    "space",
    "sqrt",
    "std",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "str_to_date",
    "strcmp",
    "subdate",
    "substr",
    "substring",
    "substring_index",
    "subtime",
    "sum",
    "sysdate",
    "system_user",
    "tan",
    "time_format",
    "time_to_sec",
    "timediff",
    "timestampadd",
    "timestampdiff",
    "to_base64",
    "to_days",
    "to_seconds",
    "trim",
    "truncate",
    "ucase",
    "unhex",
    "unix_timestamp",
    "upper",
    "user",
    "utc_date",
    "utc_time",
    "utc_timestamp",
    "uuid",
    "uuid_short",
    "var_pop",
    "var_samp",
    "variance",
    "version",
    "week",
    "weekday",
    "weekofyear",
    "year",
    "yearweek",
];
