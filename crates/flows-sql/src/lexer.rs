//! Tokens of the SQL subset. Positions are byte offsets into the query text, turned into
//! line and column only when an error is reported.

use crate::error::SqlError;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A bare word (keywords included; the parser tells them apart) or a `"quoted"` name.
    Ident {
        text: String,
        quoted: bool,
    },
    /// Digits, with an optional fraction and exponent, as written.
    Number(String),
    /// A `'string'`, quotes removed and `''` unescaped.
    Str(String),
    Sym(&'static str),
    End,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    pub pos: usize,
}

/// Symbols, longest first so that `<=` wins over `<`.
const SYMBOLS: &[&str] = &[
    "<>", "!=", "<=", ">=", "||", "(", ")", ",", ".", "*", "+", "-", "/", "%", "=", "<", ">", ";",
];

/// Queries longer than this are refused before lexing: a query is typed or pasted, and the
/// limit bounds every later step (the parser's recursion depth among them).
pub const MAX_QUERY: usize = 256 * 1024;

pub fn lex(sql: &str) -> Result<Vec<Token>, SqlError> {
    if sql.len() > MAX_QUERY {
        return Err(SqlError::at(
            sql,
            0,
            format!("query longer than {MAX_QUERY} bytes"),
        ));
    }
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b == b'-' && bytes.get(i + 1) == Some(&b'-') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if b == b'/' && bytes.get(i + 1) == Some(&b'*') {
            let start = i;
            i += 2;
            loop {
                if i + 1 >= bytes.len() {
                    return Err(SqlError::at(sql, start, "unterminated comment"));
                }
                if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                    i += 2;
                    break;
                }
                i += 1;
            }
            continue;
        }
        let start = i;
        if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] >= 0x80)
            {
                i += 1;
            }
            let text = sql.get(start..i).unwrap_or_default().to_string();
            out.push(Token {
                tok: Tok::Ident {
                    text,
                    quoted: false,
                },
                pos: start,
            });
            continue;
        }
        if b.is_ascii_digit() || (b == b'.' && bytes.get(i + 1).is_some_and(|c| c.is_ascii_digit()))
        {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == b'.' {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                let mut j = i + 1;
                if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                    j += 1;
                }
                if j < bytes.len() && bytes[j].is_ascii_digit() {
                    i = j;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            if i < bytes.len() && (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
                return Err(SqlError::at(sql, start, "invalid number"));
            }
            out.push(Token {
                tok: Tok::Number(sql.get(start..i).unwrap_or_default().to_string()),
                pos: start,
            });
            continue;
        }
        if b == b'\'' || b == b'"' || b == b'`' {
            let quote = b;
            let mut text = Vec::new();
            i += 1;
            loop {
                let Some(&c) = bytes.get(i) else {
                    let what = if quote == b'\'' {
                        "string"
                    } else {
                        "quoted name"
                    };
                    return Err(SqlError::at(sql, start, format!("unterminated {what}")));
                };
                if c == quote {
                    if bytes.get(i + 1) == Some(&quote) {
                        text.push(quote);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                text.push(c);
                i += 1;
            }
            // The quotes are ASCII, so the text between them is valid UTF-8.
            let text = String::from_utf8_lossy(&text).into_owned();
            let tok = if quote == b'\'' {
                Tok::Str(text)
            } else {
                Tok::Ident { text, quoted: true }
            };
            out.push(Token { tok, pos: start });
            continue;
        }
        match SYMBOLS
            .iter()
            .find(|s| bytes[i..].starts_with(s.as_bytes()))
        {
            Some(s) => {
                out.push(Token {
                    tok: Tok::Sym(s),
                    pos: start,
                });
                i += s.len();
            }
            None => {
                let ch = sql.get(i..).and_then(|r| r.chars().next()).unwrap_or('?');
                return Err(SqlError::at(
                    sql,
                    start,
                    format!("unexpected character '{ch}'"),
                ));
            }
        }
    }
    out.push(Token {
        tok: Tok::End,
        pos: sql.len(),
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(sql: &str) -> Vec<Tok> {
        lex(sql).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn words_numbers_strings_symbols_and_comments() {
        assert_eq!(
            toks("SELECT a,'it''s' -- note\n/* x */ 1.5e3<=\"b c\""),
            vec![
                Tok::Ident {
                    text: "SELECT".into(),
                    quoted: false
                },
                Tok::Ident {
                    text: "a".into(),
                    quoted: false
                },
                Tok::Sym(","),
                Tok::Str("it's".into()),
                Tok::Number("1.5e3".into()),
                Tok::Sym("<="),
                Tok::Ident {
                    text: "b c".into(),
                    quoted: true
                },
                Tok::End,
            ]
        );
    }

    #[test]
    fn errors_have_positions() {
        let e = lex("select 'abc").unwrap_err();
        assert_eq!(e.to_string(), "line 1, column 8: unterminated string");
        let e = lex("select\n  a # b").unwrap_err();
        assert_eq!(e.to_string(), "line 2, column 5: unexpected character '#'");
        assert!(lex("select 12abc").is_err());
    }
}
