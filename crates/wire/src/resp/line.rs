//! Lines and numbers: the pieces of RESP every decoder in [`super`] shares.

use super::RespError;

/// Where the line starting at `start` ends: the index of its `\r` (a `\n` follows), or `None`
/// when more bytes are needed. A line longer than `max` bytes (CRLF excluded) is an error as
/// soon as that many bytes are there without a CR, so a peer cannot make us buffer more.
pub(super) fn find_line(
    buf: &[u8],
    start: usize,
    max: usize,
    bulk: bool,
) -> Result<Option<usize>, RespError> {
    let Some(rest) = buf.get(start..) else {
        return Ok(None);
    };
    let window = &rest[..rest.len().min(max.saturating_add(1))];
    match window.iter().position(|&b| b == b'\r') {
        Some(i) if i > max => Err(RespError::LineTooLong { max, bulk }),
        Some(i) => match rest.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(start + i)),
            Some(_) => Err(RespError::MissingCrlf { what: "line" }),
        },
        None if rest.len() > max => Err(RespError::LineTooLong { max, bulk }),
        None => Ok(None),
    }
}

/// A decimal integer as Redis's `string2ll` reads one: an optional `-`, then digits without a
/// leading zero (`0` alone is fine, `-0`, `+1`, `01` and ` 1` are not), within `i64`.
pub(super) fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    match digits {
        [] => return None,
        [b'0'] => return (!negative).then_some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        value = if negative {
            value.checked_mul(10)?.checked_sub(d)?
        } else {
            value.checked_mul(10)?.checked_add(d)?
        };
    }
    Some(value)
}

/// A length or count header: `-1` (null) or `0..`, anything else is bad input.
pub(super) fn parse_len(text: &[u8], what: &'static str) -> Result<i64, RespError> {
    match parse_i64(text) {
        Some(n) if n >= -1 => Ok(n),
        _ => Err(RespError::InvalidLength {
            what,
            text: String::from_utf8_lossy(&text[..text.len().min(32)]).into_owned(),
        }),
    }
}

/// RESP3 double text: what Redis writes (`1.5`, `1e+300`, `inf`, `-inf`, `nan`).
pub(super) fn parse_double(text: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(text).ok()?;
    // Rust also reads "infinity" and "+inf"; Redis writes neither, but both mean the same.
    s.parse::<f64>().ok()
}

/// RESP3 big number text: an optional `-` and at least one digit.
pub(super) fn is_big_number(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_as_string2ll() {
        for (text, want) in [
            (&b"0"[..], Some(0)),
            (b"-1", Some(-1)),
            (b"42", Some(42)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"-9223372036854775808", Some(i64::MIN)),
            (b"9223372036854775808", None),
            (b"-0", None),
            (b"01", None),
            (b"+1", None),
            (b" 1", None),
            (b"1 ", None),
            (b"", None),
            (b"-", None),
            (b"1a", None),
        ] {
            assert_eq!(parse_i64(text), want, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn lines() {
        assert_eq!(find_line(b"+OK\r\n", 1, 10, false), Ok(Some(3)));
        assert_eq!(find_line(b"+OK\r", 1, 10, false), Ok(None));
        assert_eq!(find_line(b"+OK", 1, 10, false), Ok(None));
        assert_eq!(
            find_line(b"+OK\rx", 1, 10, false),
            Err(RespError::MissingCrlf { what: "line" })
        );
        assert_eq!(find_line(b"*12345", 1, 5, false), Ok(None));
        assert_eq!(find_line(b"*12345\r\n", 1, 5, false), Ok(Some(6)));
        assert_eq!(
            find_line(b"*123456", 1, 5, false),
            Err(RespError::LineTooLong {
                max: 5,
                bulk: false
            })
        );
        assert_eq!(
            find_line(b"*123456\r\n", 1, 5, true),
            Err(RespError::LineTooLong { max: 5, bulk: true })
        );
    }
}
