//! Literals, comments and bound values re-read as SQL, and the masked evidence excerpt.
//!
//! A literal is re-read the way the application would have pasted it: as bare SQL (a numeric
//! context: `1 OR 1=1`) and, when it holds a quote, as if it had broken out of a `'..'` (or,
//! in MySQL, `".."`) string at that quote (`1' OR '1'='1`). Each reading must open the way an
//! injection does (a value then `AND`/`OR`/`UNION`/`;`/a comment, or a breakout followed by
//! one of those or an operator) before it is scanned, so prose such as `O'Brien` or
//! `Tom and Jerry` is not even scanned.

use std::borrow::Cow;

use sumun_wire::sql::{tokens, SqlToken, SqlTokenKind, Syntax};

use crate::scan::{Mode, Scan};
use crate::words::{self, Kw, Word};
use crate::{Rules, THRESHOLD};

/// What a re-read literal (or comment or value) showed.
#[derive(Debug, Clone)]
pub(crate) struct Inner {
    pub rules: Rules,
    pub score: u8,
    pub evidence: String,
}

/// The decoded text of a string literal token, or `None` when it cannot hold an injection
/// (bit strings, or no byte an injection needs).
pub(crate) fn literal_body(raw: &str, syntax: Syntax) -> Option<Cow<'_, str>> {
    let b = raw.as_bytes();
    let (mut backslash, mysql) = match syntax {
        Syntax::Postgres(d) => (!d.standard_conforming_strings, false),
        Syntax::Mysql(m) => (m.backslash_escapes, true),
    };
    let mut i = 0;
    match b.first()? {
        b'$' if !mysql => {
            let tag_len = b.iter().skip(1).position(|&c| c == b'$')? + 2;
            let tag = raw.get(..tag_len)?;
            let body = raw.get(tag_len..)?;
            let body = body.strip_suffix(tag).unwrap_or(body);
            return interesting(body.as_bytes()).then_some(Cow::Borrowed(body));
        }
        b'e' | b'E' if !mysql => {
            backslash = true;
            i = 1;
        }
        b'n' | b'N' => i = 1,
        b'u' | b'U' => i = 2,
        b'b' | b'B' | b'x' | b'X' => return None,
        _ => {}
    }
    let quote = *b.get(i)?;
    let body = raw.get(i + 1..)?;
    let body = match body.as_bytes().last() {
        Some(&q) if q == quote && !body.is_empty() => body.get(..body.len() - 1)?,
        _ => body,
    };
    if !interesting(body.as_bytes()) {
        return None;
    }
    if !body.as_bytes().contains(&quote) && (!backslash || !body.contains('\\')) {
        return Some(Cow::Borrowed(body));
    }
    let src = body.as_bytes();
    let mut out = Vec::with_capacity(src.len());
    let mut k = 0;
    while k < src.len() {
        let c = src[k];
        if backslash && c == b'\\' {
            match src.get(k + 1) {
                Some(b'n') => out.push(b'\n'),
                Some(b't') => out.push(b'\t'),
                Some(b'r') => out.push(b'\r'),
                Some(b'0') => {}
                Some(&n) => out.push(n),
                None => {}
            }
            k += 2;
        } else if c == quote && src.get(k + 1) == Some(&quote) {
            out.push(quote);
            k += 2;
        } else {
            out.push(c);
            k += 1;
        }
    }
    // Only ASCII bytes were dropped, so this is UTF-8; the lossy form keeps that a
    // non-panicking fact.
    Some(Cow::Owned(match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }))
}

/// The text inside a comment token, or `None` when it cannot hold an injection.
pub(crate) fn comment_body(raw: &str) -> Option<Cow<'_, str>> {
    let body = if let Some(rest) = raw.strip_prefix("/*") {
        rest.strip_suffix("*/").unwrap_or(rest)
    } else if let Some(rest) = raw.strip_prefix("--") {
        rest
    } else {
        raw.strip_prefix('#')?
    };
    interesting(body.as_bytes()).then_some(Cow::Borrowed(body))
}

/// Whether `b` has any byte (or the word `union`) that an injection needs; most literals
/// (names, dates, ids) have none and are not re-read at all.
fn interesting(b: &[u8]) -> bool {
    b.iter().enumerate().any(|(i, &c)| match c {
        b'\'' | b'"' | b'(' | b')' | b';' | b'=' | b'<' | b'>' | b'|' | b'&' | b'#' => true,
        b'-' => b.get(i + 1) == Some(&b'-'),
        b'/' => b.get(i + 1) == Some(&b'*'),
        b'u' | b'U' => b
            .get(i..i + 5)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"union")),
        _ => false,
    })
}

/// Re-reads `text` as injected SQL; `Some` when a reading scores at least [`THRESHOLD`].
pub(crate) fn analyze(text: &str, syntax: Syntax, app_user: bool) -> Option<Inner> {
    let mut best: Option<Inner> = None;
    let mut consider = |found: Option<Inner>| {
        if let Some(f) = found {
            if best.as_ref().is_none_or(|b| f.score > b.score) {
                best = Some(f);
            }
        }
    };
    if bare_gate(text, syntax) {
        consider(run(text, syntax, app_user, None));
    }
    let dquote = matches!(syntax, Syntax::Mysql(m) if !m.ansi_quotes);
    for q in [b'\'', b'"'] {
        if q == b'"' && !dquote {
            continue;
        }
        if let Some(i) = text.bytes().position(|c| c == q) {
            if quote_gate(text.get(i + 1..).unwrap_or(""), syntax) {
                consider(run(text, syntax, app_user, Some(i + 1)));
            }
        }
    }
    best
}

fn run(text: &str, syntax: Syntax, app_user: bool, breakout: Option<usize>) -> Option<Inner> {
    let from = breakout.unwrap_or(0);
    let mode = match breakout {
        Some(breakout) => Mode::Quote { breakout },
        None => Mode::Bare,
    };
    let mut scan = Scan::new(text, syntax, app_user, mode);
    if from > 0 {
        scan.feed(SqlToken {
            kind: SqlTokenKind::String,
            start: 0,
            end: from,
        });
    }
    for t in tokens(text.get(from..).unwrap_or(""), syntax) {
        scan.feed(SqlToken {
            kind: t.kind,
            start: t.start + from,
            end: t.end + from,
        });
    }
    let out = scan.finish();
    if out.score < THRESHOLD {
        return None;
    }
    // A breakout reads best from the quote: `?' UNION ALL SELECT NULL,NULL--`.
    let (at, lead) = if from > 0 { (from, "?'") } else { (out.at, "") };
    Some(Inner {
        rules: out.rules,
        score: out.score,
        evidence: render(text, at, syntax, false, lead),
    })
}

fn significant(syntax: Syntax, text: &str) -> impl Iterator<Item = SqlToken> + '_ {
    tokens(text, syntax)
        .filter(|t| !matches!(t.kind, SqlTokenKind::Space | SqlTokenKind::ExecMarker))
}

fn word(text: &str, t: &SqlToken) -> Word {
    if t.kind != SqlTokenKind::Word {
        return Word::Plain;
    }
    words::classify(text.as_bytes().get(t.start..t.end).unwrap_or(&[]))
}

/// A token that continues an injected condition or statement right after a value.
fn continues(text: &str, t: &SqlToken) -> bool {
    match t.kind {
        SqlTokenKind::Punct(b';') | SqlTokenKind::Comment => true,
        SqlTokenKind::Op => matches!(text.get(t.start..t.end), Some("&&" | "||")),
        SqlTokenKind::Word => matches!(
            word(text, t),
            Word::Kw(
                Kw::And
                    | Kw::Or
                    | Kw::Xor
                    | Kw::Union
                    | Kw::Order
                    | Kw::Group
                    | Kw::Having
                    | Kw::Limit
                    | Kw::Procedure
                    | Kw::Into
            )
        ),
        _ => false,
    }
}

/// Bare SQL must open like an injected value: `1 AND ...`, `-1 OR ...`, `1) AND (...`,
/// `1;SELECT ...`, `1) RLIKE ...`, or like a replacing expression: `(SELECT ...)`,
/// `(5=5)*2`, `ELT(...)`, or start with `AND`/`OR`/`UNION`.
fn bare_gate(text: &str, syntax: Syntax) -> bool {
    let mut it = significant(syntax, text).peekable();
    let Some(first) = it.next() else {
        return false;
    };
    let call = |t: Option<&SqlToken>| t.is_some_and(|t| t.kind == SqlTokenKind::Punct(b'('));
    match first.kind {
        SqlTokenKind::Punct(b'(') => {
            let Some(t) = it.next() else {
                return false;
            };
            return match t.kind {
                SqlTokenKind::Number | SqlTokenKind::String => true,
                SqlTokenKind::Word => {
                    matches!(word(text, &t), Word::Kw(Kw::Select))
                        || text
                            .get(t.start..t.end)
                            .is_some_and(|w| w.eq_ignore_ascii_case("case"))
                        || call(it.peek())
                }
                _ => false,
            };
        }
        SqlTokenKind::Punct(b';') => return true,
        SqlTokenKind::Op if text.get(first.start..first.end) == Some("-") => {
            if !it.next().is_some_and(|t| t.kind == SqlTokenKind::Number) {
                return false;
            }
        }
        SqlTokenKind::Word => match word(text, &first) {
            Word::Kw(Kw::And | Kw::Or | Kw::Union) => return true,
            // A replacing call: `ELT(5=5,1)`, `EXP(~(...))`.
            _ if call(it.peek()) => return true,
            Word::Plain => {}
            _ => return false,
        },
        SqlTokenKind::Number | SqlTokenKind::String => {}
        _ => return false,
    }
    let mut closed = false;
    for t in it {
        if t.kind == SqlTokenKind::Punct(b')') {
            closed = true;
            continue;
        }
        return continues(text, &t)
            || matches!(word(text, &t), Word::Kw(Kw::CmpWord))
            || (closed && t.kind == SqlTokenKind::Punct(b'('));
    }
    false
}

/// After a breakout quote, SQL must go on at once: a condition, `UNION`, `;`, a parenthesis,
/// a comment or an operator (`'||`, `'='`).
fn quote_gate(tail: &str, syntax: Syntax) -> bool {
    let Some(t) = significant(syntax, tail).next() else {
        return false;
    };
    continues(tail, &t)
        || matches!(t.kind, SqlTokenKind::Punct(b')' | b'(') | SqlTokenKind::Op)
        || matches!(word(tail, &t), Word::Kw(Kw::CmpWord | Kw::Not))
}

/// A masked excerpt of `src` from byte `from`: literals become `?`, comments their markers;
/// words that are not SQL keywords, functions or catalogs are kept only when `keep_words`
/// (statement text), `_` otherwise (user data).
pub(crate) fn render(
    src: &str,
    from: usize,
    syntax: Syntax,
    keep_words: bool,
    lead: &str,
) -> String {
    const MAX: usize = 120;
    let mut from = from.min(src.len());
    while from > 0 && !src.is_char_boundary(from) {
        from -= 1;
    }
    let mut out = String::with_capacity(MAX + 8);
    if from > 0 && lead.is_empty() {
        out.push_str("… ");
    }
    out.push_str(lead);
    let rest = src.get(from..).unwrap_or("");
    let mut gap = false;
    for t in tokens(rest, syntax) {
        let text = rest.get(t.start..t.end).unwrap_or("");
        let piece: &str = match t.kind {
            SqlTokenKind::Space => {
                gap = true;
                continue;
            }
            SqlTokenKind::String | SqlTokenKind::Number | SqlTokenKind::Other => "?",
            SqlTokenKind::Comment => {
                if text.starts_with("--") {
                    "--"
                } else if text.starts_with('#') {
                    "#"
                } else {
                    "/**/"
                }
            }
            SqlTokenKind::ExecMarker => {
                if text.starts_with('*') {
                    "*/"
                } else {
                    "/*!"
                }
            }
            SqlTokenKind::Word => {
                let known = words::classify(text.as_bytes()) != Word::Plain;
                if (known || keep_words) && text.len() <= 32 {
                    text
                } else {
                    "_"
                }
            }
            SqlTokenKind::QuotedIdent => {
                if keep_words && text.len() <= 34 {
                    text
                } else {
                    "_"
                }
            }
            SqlTokenKind::Param | SqlTokenKind::Punct(_) | SqlTokenKind::Op => {
                if text.len() <= 8 {
                    text
                } else {
                    "?"
                }
            }
        };
        if out.len() + piece.len() > MAX {
            out.push_str(" …");
            break;
        }
        if gap && !out.is_empty() && !out.ends_with(' ') {
            out.push(' ');
        }
        gap = false;
        out.push_str(piece);
    }
    out
}
