//! SQL-injection detection on statement text, for the gateway's inline protection (issue 21).
//!
//! A gateway sees statements after the client driver built them, so an injection shows up in
//! one of two ways, and [`inspect`] looks for both:
//!
//! - **in the statement's structure**, when it worked: the application pasted input into SQL
//!   and the statement now carries the attacker's logic (`... WHERE name = '' OR '1'='1'`,
//!   `... WHERE id = 1 UNION ALL SELECT NULL,NULL-- x`, `...; SELECT pg_sleep(5)`);
//! - **inside a string literal or a comment**, when it failed: the driver escaped the input,
//!   so the attempt sits harmlessly in a literal (`'1'' OR ''1''=''1'`), but someone is still
//!   probing. Each such literal is re-read three ways (as bare SQL, and as if it had broken out
//!   of a `'..'` or, in MySQL, a `".."` string), the way libinjection reads its input; values
//!   bound as parameters (extended protocol, server-side prepared statements) go through
//!   [`inspect_param`] the same way.
//!
//! The statement is cut into typed tokens by the lexer in `sumun_wire::sql` (the one that
//! masks literals for audit), and a single pass over them looks for the shapes in [`Rule`]:
//! tautologies, constant conditions, delay functions, `UNION SELECT` of constants, error-based
//! extraction functions, stacked statements, comment truncation, catalog reads hidden in
//! subqueries, and a few more. Each rule has a weight; a statement whose weights add up to
//! [`THRESHOLD`] or more yields a [`Finding`]. Weak signals (a stacked statement, a trailing
//! comment, a catalog read) only count together with another one.
//!
//! What it deliberately does not do: parse SQL fully, look at result sets, or learn what is
//! normal for an application. It never panics, never recurses, reads at most
//! [`Options::max_bytes`] of a statement (and says so in [`Verdict::truncated`]), and does not
//! allocate unless a literal needs unescaping or a finding is reported.

mod content;
mod scan;
mod words;

use std::fmt;

pub use sumun_wire::sql::{MysqlDialect, Syntax};

/// The MITRE ATT&CK technique every finding maps to: Exploit Public-Facing Application.
pub const TECHNIQUE: &str = "T1190";

/// Score from which a statement is reported.
pub const THRESHOLD: u8 = 50;

/// Bytes of one statement inspected by default; the rest is not looked at.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;

/// Which SQL the statement is written in (default settings of each server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
}

impl From<Dialect> for Syntax {
    fn from(d: Dialect) -> Syntax {
        match d {
            Dialect::Postgres => Syntax::POSTGRES,
            Dialect::Mysql => Syntax::MYSQL,
        }
    }
}

/// How to inspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The lexing rules: the dialect and, when the front end knows them, the session's
    /// settings (`standard_conforming_strings`, MySQL's `NO_BACKSLASH_ESCAPES`/`ANSI_QUOTES`),
    /// which decide where a literal ends.
    pub syntax: Syntax,
    /// Whether the session's user is an application account rather than an administrator.
    /// Reads of system catalogs (`information_schema`, `pg_catalog`, `pg_shadow`,
    /// `mysql.user`), file-access functions and `COPY .. PROGRAM` only count for application
    /// users: administrators and their tools (`psql`'s `\d`) read catalogs all the time.
    pub app_user: bool,
    /// At most this many bytes of a statement (or parameter) are inspected.
    pub max_bytes: usize,
}

impl Options {
    /// An application user, default server settings, [`DEFAULT_MAX_BYTES`].
    pub const fn new(dialect: Dialect) -> Options {
        Options {
            syntax: match dialect {
                Dialect::Postgres => Syntax::POSTGRES,
                Dialect::Mysql => Syntax::MYSQL,
            },
            app_user: true,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// One detection rule. [`Rule::name`] is the stable label used in findings, metrics and docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// `OR` with an always-true constant condition: `OR '1'='1'`, `OR 1=1`, `OR NOT 5=6`, `OR 1`.
    Tautology,
    /// A comparison of two constants other than the `1=1`/`1=0` query builders emit:
    /// `AND 5847=5847`, `CASE WHEN (5847=5847)`, `ELT(5847=5847,1)`, `'abc'='abc'`.
    ConstantCondition,
    /// A constant compared, after `AND`/`OR`, with a subquery or function call:
    /// `AND 5847=(SELECT ...)`. Counts only with another signal.
    SubqueryProbe,
    /// A delay: `pg_sleep`, `SLEEP`, `BENCHMARK`, `WAITFOR DELAY`, `dbms_pipe.receive_message`.
    TimeDelay,
    /// `UNION SELECT` of constants only (`NULL,NULL,...`) after a `WHERE`, or a `UNION` branch
    /// reading a system catalog in a statement that is not itself a catalog query.
    UnionSelect,
    /// Error-based extraction: `EXTRACTVALUE`, `UPDATEXML`, `GTID_SUBSET`, `EXP(~(...))`,
    /// `FLOOR(RAND(0)*2)`, `JSON_KEYS((SELECT ...))`.
    ErrorFunction,
    /// Server-side file or command access by an application user: `LOAD_FILE`,
    /// `INTO OUTFILE`, `LOAD DATA INFILE`, `pg_read_file`, `COPY .. PROGRAM`, `xp_cmdshell`.
    FileAccess,
    /// An application user reading password hashes: `pg_shadow`, `pg_authid`, `mysql.user`.
    CredentialCatalog,
    /// An application user reading a system catalog from inside a subquery or `UNION` branch of
    /// a statement whose own `FROM` is not a catalog. Counts only with another signal.
    CatalogEnumeration,
    /// A second statement after one that ended on a value (`...= '1'; DROP ...`). Counts only
    /// with another signal.
    StackedStatement,
    /// A trailing comment that swallows the rest of the application's statement
    /// (`-- x'`, `#'`, an unterminated `/*`). Counts only with another signal, unless it cut
    /// off more SQL (`admin'-- ' AND password = '...'`).
    CommentTruncation,
    /// `CHR()`/`CHAR()` chains spelling strings, empty `/**/` comments used as spaces. Counts
    /// only with another signal.
    Obfuscation,
    /// What an attacker sends to learn about the query: a trivially true or false comparison
    /// (`1=1`, `1=2`) joined right after a value (`id = '1' AND 1=1`; query builders put theirs
    /// after `WHERE` or `(`), or `ORDER BY <n>` right after a value (counting columns). Counts
    /// only with another signal.
    Probe,
    /// `UNION [ALL] SELECT` right after a value in a `WHERE` condition (`id = '1' UNION SELECT
    /// name, password FROM users`). Hand-written SQL does this too, so it counts only with
    /// another signal.
    UnionAfterValue,
}

impl Rule {
    /// Every rule, in bit order.
    pub const ALL: [Rule; 14] = [
        Rule::Tautology,
        Rule::ConstantCondition,
        Rule::SubqueryProbe,
        Rule::TimeDelay,
        Rule::UnionSelect,
        Rule::ErrorFunction,
        Rule::FileAccess,
        Rule::CredentialCatalog,
        Rule::CatalogEnumeration,
        Rule::StackedStatement,
        Rule::CommentTruncation,
        Rule::Obfuscation,
        Rule::Probe,
        Rule::UnionAfterValue,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Tautology => "tautology",
            Rule::ConstantCondition => "constant_condition",
            Rule::SubqueryProbe => "subquery_probe",
            Rule::TimeDelay => "time_delay",
            Rule::UnionSelect => "union_select",
            Rule::ErrorFunction => "error_function",
            Rule::FileAccess => "file_access",
            Rule::CredentialCatalog => "credential_catalog",
            Rule::CatalogEnumeration => "catalog_enumeration",
            Rule::StackedStatement => "stacked_statement",
            Rule::CommentTruncation => "comment_truncation",
            Rule::Obfuscation => "obfuscation",
            Rule::Probe => "probe",
            Rule::UnionAfterValue => "union_after_value",
        }
    }

    /// What the rule adds to a statement's score ([`THRESHOLD`] reports).
    pub fn weight(self) -> u8 {
        match self {
            Rule::Tautology => 80,
            Rule::TimeDelay | Rule::UnionSelect => 70,
            Rule::ConstantCondition
            | Rule::ErrorFunction
            | Rule::FileAccess
            | Rule::CredentialCatalog => 60,
            Rule::CommentTruncation => 40,
            Rule::SubqueryProbe
            | Rule::CatalogEnumeration
            | Rule::StackedStatement
            | Rule::Obfuscation
            | Rule::Probe
            | Rule::UnionAfterValue => 30,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Rule`]s.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Rules(u16);

impl Rules {
    pub fn contains(self, rule: Rule) -> bool {
        self.0 & rule.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The rules in the set, in [`Rule::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Rule> {
        Rule::ALL.into_iter().filter(move |r| self.contains(*r))
    }

    pub(crate) fn insert(&mut self, rule: Rule) {
        self.0 |= rule.bit();
    }

    /// The sum of the weights, capped at 100.
    pub(crate) fn weight(self) -> u16 {
        self.iter().map(|r| u16::from(r.weight())).sum()
    }
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Rule::name)).finish()
    }
}

impl fmt::Display for Rules {
    /// Comma-separated rule names: `tautology,comment_truncation`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(r.name())?;
        }
        Ok(())
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// An attempt that did not become SQL: it sits in a literal, a comment or a bound value.
    Medium,
    /// The statement itself carries the injected logic: the injection worked.
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// Where the injection was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    /// In the statement's own structure.
    Statement,
    /// Inside a string literal of the statement.
    Literal,
    /// Inside a comment of the statement.
    Comment,
    /// In a bound parameter value ([`inspect_param`]).
    Parameter,
}

impl Place {
    pub fn as_str(self) -> &'static str {
        match self {
            Place::Statement => "statement",
            Place::Literal => "literal",
            Place::Comment => "comment",
            Place::Parameter => "parameter",
        }
    }
}

/// A suspected SQL injection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// 0 to 100: the sum of the matched rules' weights (and a bonus for a comment that cut
    /// off the rest of the statement), capped; at least [`THRESHOLD`].
    pub score: u8,
    /// The rules that matched, all of them in the same place.
    pub rules: Rules,
    pub place: Place,
    /// A short excerpt (at most about 128 bytes) from where the match starts, with every
    /// literal replaced by `?` and comments reduced to their markers. For literals, comments
    /// and parameters it is the re-read value, and any word that is not SQL is shown as `_`
    /// too, so no user data (or secret) is ever quoted.
    pub evidence: String,
}

impl Finding {
    /// [`TECHNIQUE`].
    pub fn technique(&self) -> &'static str {
        TECHNIQUE
    }
}

/// What [`inspect`] concluded about one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub finding: Option<Finding>,
    /// Bytes actually inspected.
    pub inspected: usize,
    /// The statement was longer than [`Options::max_bytes`]; only its start was inspected.
    pub truncated: bool,
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.finding.is_none()
    }
}

/// Inspects one statement text (a simple query, possibly several statements, or a prepared
/// statement's text) sent by an application user, with default server settings.
pub fn inspect(sql: &str, dialect: Dialect) -> Verdict {
    inspect_with(sql, &Options::new(dialect))
}

/// [`inspect`] with explicit [`Options`].
pub fn inspect_with(sql: &str, opts: &Options) -> Verdict {
    let (text, truncated) = cap(sql, opts.max_bytes);
    let mut scan = scan::Scan::new(text, opts.syntax, opts.app_user, scan::Mode::Statement);
    let mut inner: Option<(content::Inner, Place)> = None;
    for t in sumun_wire::sql::tokens(text, opts.syntax) {
        let place = match t.kind {
            sumun_wire::sql::SqlTokenKind::String => Some(Place::Literal),
            sumun_wire::sql::SqlTokenKind::Comment => Some(Place::Comment),
            _ => None,
        };
        if let Some(place) = place {
            let raw = text.get(t.start..t.end).unwrap_or("");
            let body = if place == Place::Literal {
                content::literal_body(raw, opts.syntax)
            } else {
                content::comment_body(raw)
            };
            if let Some(body) = body {
                if let Some(found) = content::analyze(&body, opts.syntax, opts.app_user) {
                    if inner
                        .as_ref()
                        .is_none_or(|(best, _)| found.score > best.score)
                    {
                        inner = Some((found, place));
                    }
                }
            }
        }
        scan.feed(t);
    }
    let structure = scan.finish();
    let finding = if structure.score >= THRESHOLD {
        Some(Finding {
            severity: Severity::High,
            score: structure.score,
            rules: structure.rules,
            place: Place::Statement,
            evidence: content::render(text, structure.at, opts.syntax, true, ""),
        })
    } else {
        inner.map(|(i, place)| Finding {
            severity: Severity::Medium,
            score: i.score,
            rules: i.rules,
            place,
            evidence: i.evidence,
        })
    };
    Verdict {
        finding,
        inspected: text.len(),
        truncated,
    }
}

/// Inspects one value bound as a parameter of a prepared statement: the text is read as the
/// application would have pasted it into SQL (bare, or after a quote), like a literal of
/// [`inspect`]. A finding here is [`Severity::Medium`] and [`Place::Parameter`]: a bound value
/// cannot change the statement.
pub fn inspect_param(value: &str, opts: &Options) -> Verdict {
    let (text, truncated) = cap(value, opts.max_bytes);
    let finding = content::analyze(text, opts.syntax, opts.app_user).map(|i| Finding {
        severity: Severity::Medium,
        score: i.score,
        rules: i.rules,
        place: Place::Parameter,
        evidence: i.evidence,
    });
    Verdict {
        finding,
        inspected: text.len(),
        truncated,
    }
}

/// The first `max` bytes of `s`, cut back to a char boundary.
fn cap(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    (s.get(..end).unwrap_or(""), true)
}
