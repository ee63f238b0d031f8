//! RESP values as a tree, decoded from whole frames.

use super::framer::ReplyFramer;
use super::line::{find_line, is_big_number, parse_double, parse_i64, parse_len};
use super::{Limits, RespError};

/// One RESP2 or RESP3 value. Strings are bytes: Redis strings are binary.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+OK`: a short status line.
    Simple(Vec<u8>),
    /// `-ERR message`: the error code is the first word of the text.
    Error(Vec<u8>),
    /// `:42`
    Integer(i64),
    /// `$3 foo`: a binary-safe string.
    Bulk(Vec<u8>),
    /// RESP2's `$-1`: a missing string (`GET` of a missing key).
    NullBulk,
    /// RESP2's `*-1`: a missing array (a timed-out `BLPOP`).
    NullArray,
    /// `*n`
    Array(Vec<Value>),
    /// RESP3's `_`: the one null of RESP3.
    Null,
    /// RESP3 `#t` / `#f`
    Boolean(bool),
    /// RESP3 `,1.5` (also `inf`, `-inf`, `nan`)
    Double(f64),
    /// RESP3 `(12345...`: the decimal digits, with a leading `-` if negative.
    BigNumber(Vec<u8>),
    /// RESP3 `!n`: an error with a binary-safe message.
    BlobError(Vec<u8>),
    /// RESP3 `=n txt:...`: text with a three-letter format (`txt`, `mkd`).
    Verbatim { format: [u8; 3], text: Vec<u8> },
    /// RESP3 `%n`: key/value pairs in the order sent.
    Map(Vec<(Value, Value)>),
    /// RESP3 `~n`
    Set(Vec<Value>),
    /// RESP3 `|n`: attributes that describe the value after them. Several attribute frames in
    /// a row before one value are decoded as one (their pairs in order).
    Attribute {
        attributes: Vec<(Value, Value)>,
        value: Box<Value>,
    },
    /// RESP3 `>n`: out-of-band data (pub/sub messages, invalidations).
    Push(Vec<Value>),
}

impl Value {
    /// The bytes of a string-like value (simple, bulk, verbatim text, big number).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(b) | Value::BigNumber(b) => Some(b),
            Value::Verbatim { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The text of a string-like value, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements of an array, set or push.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }

    /// The value an attribute describes, or the value itself.
    pub fn without_attributes(&self) -> &Value {
        match self {
            Value::Attribute { value, .. } => value.without_attributes(),
            other => other,
        }
    }

    /// Whether this is an error (`-` or `!`).
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_) | Value::BlobError(_))
    }

    /// Whether this is any null (`_`, `$-1`, `*-1`).
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null | Value::NullBulk | Value::NullArray)
    }
}

/// Decodes whole values from a buffer that grows at its end (a server connection's read
/// buffer), scanning each byte once however the bytes are split across reads.
///
/// The frame is first found by a [`ReplyFramer`] (bounded state, no allocation from a length
/// field); only when it is complete is the tree built, so the memory a value takes is bounded
/// by the bytes it came from.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    framer: ReplyFramer,
    /// Bytes of the current frame the framer has already checked.
    scanned: usize,
    limits: Limits,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            framer: ReplyFramer::new(limits),
            scanned: 0,
            limits,
        }
    }

    /// Decode the value at the start of `buf`. `Ok(None)`: the value is not complete yet; call
    /// again with the same bytes and more appended (the bytes already given must not change).
    /// `Ok(Some((value, used)))`: the value took `buf[..used]`; drop those bytes and call again
    /// for the next value.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Value, usize)>, RespError> {
        let Some(rest) = buf.get(self.scanned..) else {
            // The caller broke the contract (the buffer shrank): start this frame over.
            self.framer.reset();
            self.scanned = 0;
            return self.decode(buf);
        };
        let step = match self.framer.advance(rest) {
            Ok(step) => step,
            Err(e) => {
                self.framer.reset();
                self.scanned = 0;
                return Err(e);
            }
        };
        self.scanned += step.consumed;
        if step.complete.is_none() {
            return Ok(None);
        }
        let end = std::mem::take(&mut self.scanned);
        let mut parser = Parser {
            buf: &buf[..end],
            pos: 0,
            limits: &self.limits,
        };
        let value = parser.value(0)?;
        if parser.pos != end {
            return Err(RespError::Malformed {
                what: "frame boundary",
            });
        }
        Ok(Some((value, end)))
    }
}

/// Decode one value from the start of `buf`: `Ok(None)` if it is not complete yet. For a
/// stream prefer a [`Decoder`], which does not rescan the bytes it has already seen.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Value, usize)>, RespError> {
    Decoder::new(*limits).decode(buf)
}

/// Builds the tree of a frame the framer has already found complete. It checks everything
/// again anyway (it must never panic whatever it is given), but never has to wait for bytes.
struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: &'a Limits,
}

const TRUNCATED: RespError = RespError::Malformed {
    what: "truncated frame",
};

impl Parser<'_> {
    fn line(&mut self) -> Result<&[u8], RespError> {
        // Text lines of a whole frame are bounded by the frame itself.
        let cr = find_line(self.buf, self.pos, usize::MAX - 1, false)?.ok_or(TRUNCATED)?;
        let text = &self.buf[self.pos..cr];
        self.pos = cr + 2;
        Ok(text)
    }

    fn body(&mut self, len: usize) -> Result<&[u8], RespError> {
        let end = self.pos.checked_add(len).ok_or(TRUNCATED)?;
        if self.buf.get(end..end + 2) != Some(b"\r\n") {
            return Err(TRUNCATED);
        }
        let body = &self.buf[self.pos..end];
        self.pos = end + 2;
        Ok(body)
    }

    /// A value with any attributes before it. Consecutive attributes are merged into one, so
    /// a long run of them cannot nest (and recurse) deeper than the limits allow.
    fn value(&mut self, depth: usize) -> Result<Value, RespError> {
        let mut attributes: Option<Vec<(Value, Value)>> = None;
        while self.buf.get(self.pos) == Some(&b'|') {
            self.pos += 1;
            let count = parse_len(self.line()?, "aggregate")?;
            if count < 0 || count as u64 > self.limits.max_elements {
                return Err(RespError::Malformed {
                    what: "attribute length",
                });
            }
            let max_depth = self.limits.max_depth.min(super::MAX_DEPTH_CAP);
            if count > 0 && depth >= max_depth {
                return Err(RespError::TooDeep { max: max_depth });
            }
            let room = (self.buf.len() - self.pos) / 6;
            let pairs = attributes.get_or_insert_with(Vec::new);
            pairs.reserve((count as usize).min(room));
            for _ in 0..count {
                let k = self.value(depth + 1)?;
                let v = self.value(depth + 1)?;
                pairs.push((k, v));
            }
        }
        let value = self.plain(depth)?;
        Ok(match attributes {
            Some(attributes) => Value::Attribute {
                attributes,
                value: Box::new(value),
            },
            None => value,
        })
    }

    fn plain(&mut self, depth: usize) -> Result<Value, RespError> {
        let ty = *self.buf.get(self.pos).ok_or(TRUNCATED)?;
        self.pos += 1;
        let malformed = |what| RespError::Malformed { what };
        Ok(match ty {
            b'+' | b'-' => {
                let text = self.line()?;
                if text.contains(&b'\n') {
                    return Err(malformed("simple string"));
                }
                if ty == b'+' {
                    Value::Simple(text.to_vec())
                } else {
                    Value::Error(text.to_vec())
                }
            }
            b':' => Value::Integer(parse_i64(self.line()?).ok_or(malformed("integer"))?),
            b',' => Value::Double(parse_double(self.line()?).ok_or(malformed("double"))?),
            b'#' => match self.line()? {
                b"t" => Value::Boolean(true),
                b"f" => Value::Boolean(false),
                _ => return Err(malformed("boolean")),
            },
            b'_' => match self.line()? {
                b"" => Value::Null,
                _ => return Err(malformed("null")),
            },
            b'(' => {
                let text = self.line()?;
                if !is_big_number(text) {
                    return Err(malformed("big number"));
                }
                Value::BigNumber(text.to_vec())
            }
            b'$' | b'!' | b'=' => {
                let len = parse_len(self.line()?, "bulk string")?;
                if len == -1 && ty == b'$' {
                    return Ok(Value::NullBulk);
                }
                if len < 0 || len as u64 > self.limits.max_bulk_len {
                    return Err(malformed("bulk length"));
                }
                let body = self.body(len as usize)?;
                match ty {
                    b'$' => Value::Bulk(body.to_vec()),
                    b'!' => Value::BlobError(body.to_vec()),
                    _ => match body {
                        [a, b, c, b':', text @ ..] => Value::Verbatim {
                            format: [*a, *b, *c],
                            text: text.to_vec(),
                        },
                        _ => return Err(malformed("verbatim string")),
                    },
                }
            }
            b'*' | b'~' | b'>' | b'%' => {
                let count = parse_len(self.line()?, "aggregate")?;
                if count == -1 && ty == b'*' {
                    return Ok(Value::NullArray);
                }
                if count < 0 || count as u64 > self.limits.max_elements {
                    return Err(malformed("aggregate length"));
                }
                let max_depth = self.limits.max_depth.min(super::MAX_DEPTH_CAP);
                if count > 0 && depth >= max_depth {
                    return Err(RespError::TooDeep { max: max_depth });
                }
                // Every element takes at least 3 bytes, so this never reserves more than the
                // frame could hold whatever count was claimed.
                let room = (self.buf.len() - self.pos) / 3;
                let count = count as usize;
                if ty == b'%' {
                    let mut pairs = Vec::with_capacity(count.min(room / 2));
                    for _ in 0..count {
                        let k = self.value(depth + 1)?;
                        let v = self.value(depth + 1)?;
                        pairs.push((k, v));
                    }
                    Value::Map(pairs)
                } else {
                    let mut items = Vec::with_capacity(count.min(room));
                    for _ in 0..count {
                        items.push(self.value(depth + 1)?);
                    }
                    match ty {
                        b'*' => Value::Array(items),
                        b'~' => Value::Set(items),
                        _ => Value::Push(items),
                    }
                }
            }
            other => return Err(RespError::UnknownType { byte: other }),
        })
    }
}
