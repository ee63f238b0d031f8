//! Values and commands back to bytes.

use std::io::Write as _;

use super::Value;

/// Append `*n\r\n`.
pub fn encode_array_header(out: &mut Vec<u8>, n: usize) {
    let _ = write!(out, "*{n}\r\n");
}

/// Append a bulk string `$len\r\nbytes\r\n`.
pub fn encode_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    let _ = write!(out, "${}\r\n", bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Append a command as clients send it: an array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    encode_array_header(out, args.len());
    for arg in args {
        encode_bulk(out, arg.as_ref());
    }
}

/// Append `:n\r\n`.
pub fn encode_integer(out: &mut Vec<u8>, n: i64) {
    let _ = write!(out, ":{n}\r\n");
}

/// Append a status line `+text\r\n`. CR and LF in `text` become spaces (as Redis does for
/// error replies), so the result is always one valid frame.
pub fn encode_simple(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'+');
    line_text(out, text);
}

/// Append an error line `-text\r\n` (`text` starts with the code: `NOPERM ...`, `ERR ...`).
/// CR and LF in `text` become spaces.
pub fn encode_error(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'-');
    line_text(out, text);
}

fn line_text(out: &mut Vec<u8>, text: &[u8]) {
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

fn aggregate_header(out: &mut Vec<u8>, ty: u8, n: usize) {
    let _ = write!(out, "{}{n}\r\n", ty as char);
}

impl Value {
    /// Append this value's RESP bytes. RESP3 types are written as RESP3 whatever the
    /// connection's protocol: converting to RESP2 is the caller's decision.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Simple(t) => encode_simple(out, t),
            Value::Error(t) => encode_error(out, t),
            Value::Integer(n) => encode_integer(out, *n),
            Value::Bulk(b) => encode_bulk(out, b),
            Value::NullBulk => out.extend_from_slice(b"$-1\r\n"),
            Value::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Value::Null => out.extend_from_slice(b"_\r\n"),
            Value::Boolean(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Value::Double(d) => {
                out.push(b',');
                if d.is_nan() {
                    out.extend_from_slice(b"nan");
                } else if d.is_infinite() {
                    out.extend_from_slice(if *d > 0.0 { b"inf" } else { b"-inf" });
                } else {
                    let _ = write!(out, "{d}");
                }
                out.extend_from_slice(b"\r\n");
            }
            Value::BigNumber(digits) => {
                out.push(b'(');
                // Only digits and '-' keep the frame valid; anything else was never decoded.
                out.extend(digits.iter().filter(|b| b.is_ascii_digit() || **b == b'-'));
                out.extend_from_slice(b"\r\n");
            }
            Value::BlobError(b) => {
                let _ = write!(out, "!{}\r\n", b.len());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Verbatim { format, text } => {
                let _ = write!(out, "={}\r\n", text.len() + 4);
                out.extend_from_slice(format);
                out.push(b':');
                out.extend_from_slice(text);
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(items) | Value::Set(items) | Value::Push(items) => {
                let ty = match self {
                    Value::Array(_) => b'*',
                    Value::Set(_) => b'~',
                    _ => b'>',
                };
                aggregate_header(out, ty, items.len());
                for item in items {
                    item.encode(out);
                }
            }
            Value::Map(pairs) => {
                aggregate_header(out, b'%', pairs.len());
                for (k, v) in pairs {
                    k.encode(out);
                    v.encode(out);
                }
            }
            Value::Attribute { attributes, value } => {
                aggregate_header(out, b'|', attributes.len());
                for (k, v) in attributes {
                    k.encode(out);
                    v.encode(out);
                }
                value.encode(out);
            }
        }
    }

    /// This value's RESP bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}
