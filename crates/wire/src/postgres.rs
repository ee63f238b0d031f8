//! The PostgreSQL frontend/backend protocol, version 3: the startup packets a client sends before
//! its first typed message, the framing of typed messages (`tag`, 4-byte length, body), and
//! encoders for the messages the gateway itself writes (to clients: authentication requests,
//! errors, parameter status, row data for the admin console; to servers: startup, passwords,
//! SASL, simple queries).
//!
//! Decoders take a byte slice and say how much they need when it is incomplete; they never
//! panic and never trust a length field further than the limit they are given, so a 2 GiB
//! length in a malicious packet is an error, not an allocation.

use std::fmt;

/// `int32` codes that take the place of a protocol version in a startup packet.
pub const SSL_REQUEST: u32 = 80_877_103;
pub const GSSENC_REQUEST: u32 = 80_877_104;
pub const CANCEL_REQUEST: u32 = 80_877_102;
/// Protocol 3.0.
pub const PROTOCOL_3_0: u32 = 196_608;
/// PostgreSQL's own limit for a startup packet.
pub const MAX_STARTUP_LEN: usize = 10_000;

/// What a client sends before its first typed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// Answer `S` and start TLS, or `N`.
    SslRequest,
    /// Answer `N` (the gateway does not do GSSAPI encryption).
    GssEncRequest,
    Cancel {
        process_id: u32,
        secret_key: u32,
    },
    Startup(Startup),
}

/// A StartupMessage: protocol version and `name=value` parameters (`user`, `database`,
/// `application_name`, `options`, ...), in the order sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    pub version: u32,
    pub params: Vec<(String, String)>,
}

impl Startup {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgError {
    #[error("startup packet length {0} is out of range (8..={MAX_STARTUP_LEN})")]
    BadStartupLength(u32),
    #[error("unsupported frontend protocol {major}.{minor}: the gateway speaks 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("malformed startup packet: {0}")]
    MalformedStartup(&'static str),
    #[error("message length {len} for '{tag}' is out of range (4..={max})")]
    BadLength { tag: Tag, len: u32, max: usize },
    #[error("malformed '{tag}' message: {what}")]
    Malformed { tag: Tag, what: &'static str },
}

/// A message tag, shown as the character it is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tag(pub u8);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "{}", self.0 as char)
        } else {
            write!(f, "\\x{:02x}", self.0)
        }
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Decode a startup packet at the start of `buf`. `Ok(None)` means more bytes are needed;
/// `Ok(Some((packet, consumed)))` is a whole packet.
pub fn decode_startup(buf: &[u8]) -> Result<Option<(StartupPacket, usize)>, PgError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = be32(buf, 0);
    if !(8..=MAX_STARTUP_LEN as u32).contains(&len) {
        return Err(PgError::BadStartupLength(len));
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let code = be32(buf, 4);
    let body = &buf[8..len];
    let packet = match code {
        SSL_REQUEST if body.is_empty() => StartupPacket::SslRequest,
        GSSENC_REQUEST if body.is_empty() => StartupPacket::GssEncRequest,
        CANCEL_REQUEST if body.len() == 8 => StartupPacket::Cancel {
            process_id: be32(body, 0),
            secret_key: be32(body, 4),
        },
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => {
            return Err(PgError::MalformedStartup(
                "request code with a body of the wrong size",
            ))
        }
        version => {
            let (major, minor) = ((version >> 16) as u16, (version & 0xffff) as u16);
            if major != 3 {
                return Err(PgError::UnsupportedProtocol { major, minor });
            }
            StartupPacket::Startup(Startup {
                version,
                params: decode_params(body)?,
            })
        }
    };
    Ok(Some((packet, len)))
}

fn decode_params(mut body: &[u8]) -> Result<Vec<(String, String)>, PgError> {
    let mut params = Vec::new();
    loop {
        let Some((name, rest)) = cstr(body) else {
            return Err(PgError::MalformedStartup(
                "parameter list is not terminated",
            ));
        };
        if name.is_empty() {
            if !rest.is_empty() {
                return Err(PgError::MalformedStartup("bytes after the parameter list"));
            }
            return Ok(params);
        }
        let Some((value, rest)) = cstr(rest) else {
            return Err(PgError::MalformedStartup("parameter without a value"));
        };
        let text = |b: &[u8]| {
            String::from_utf8(b.to_vec())
                .map_err(|_| PgError::MalformedStartup("parameter is not UTF-8"))
        };
        params.push((text(name)?, text(value)?));
        body = rest;
    }
}

/// The header of a typed message found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Length of the whole message, tag included (`1 + length field`).
    pub total: usize,
}

/// Read the 5-byte header at the start of `buf`: `Ok(None)` when fewer than 5 bytes are there.
/// The length field must be at least 4 and at most `max_len`.
pub fn header(buf: &[u8], max_len: usize) -> Result<Option<Header>, PgError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = be32(buf, 1);
    if len < 4 || len as usize > max_len {
        return Err(PgError::BadLength {
            tag: Tag(buf[0]),
            len,
            max: max_len,
        });
    }
    Ok(Some(Header {
        tag: buf[0],
        total: len as usize + 1,
    }))
}

/// One whole typed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub tag: u8,
    pub body: &'a [u8],
}

/// Split a whole message off the start of `buf`, or `Ok(None)` when it is not all there.
pub fn message(buf: &[u8], max_len: usize) -> Result<Option<(Message<'_>, usize)>, PgError> {
    match header(buf, max_len)? {
        Some(h) if buf.len() >= h.total => Ok(Some((
            Message {
                tag: h.tag,
                body: &buf[5..h.total],
            },
            h.total,
        ))),
        _ => Ok(None),
    }
}

/// A NUL-terminated string at the start of `b`, and what follows it.
pub fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    // The standard library's search looks at a word at a time.
    let text = std::ffi::CStr::from_bytes_until_nul(b).ok()?.to_bytes();
    Some((text, &b[text.len() + 1..]))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

/// Read the severity (`V`, or `S`), SQLSTATE (`C`) and message (`M`) of an error or notice body.
pub fn error_fields(body: &[u8]) -> ErrorFields {
    let mut out = ErrorFields::default();
    let mut rest = body;
    while let Some((&kind, after)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let Some((value, after)) = cstr(after) else {
            break;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match kind {
            b'V' => out.severity = value,
            b'S' if out.severity.is_empty() => out.severity = value,
            b'C' => out.code = value,
            b'M' => out.message = value,
            _ => {}
        }
        rest = after;
    }
    out
}

/// The row count at the end of a CommandComplete tag (`SELECT 5`, `INSERT 0 3`, `COPY 10`).
pub fn command_rows(body: &[u8]) -> Option<u64> {
    let tag = cstr(body).map_or(body, |(t, _)| t);
    let last = tag.rsplit(|&c| c == b' ').next()?;
    if tag.len() == last.len() {
        return None;
    }
    std::str::from_utf8(last).ok()?.parse().ok()
}

pub mod scram;

/// Authentication request codes (`R` messages).
pub mod auth {
    pub const OK: u32 = 0;
    pub const CLEARTEXT: u32 = 3;
    pub const MD5: u32 = 5;
    pub const SASL: u32 = 10;
    pub const SASL_CONTINUE: u32 = 11;
    pub const SASL_FINAL: u32 = 12;
}

/// Builds messages into a buffer. Every `put_*` appends one whole message.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    /// Start a message with `tag`; the length is patched by [`Writer::end`].
    fn begin(&mut self, tag: u8) -> usize {
        self.buf.push(tag);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        at
    }

    fn end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn str(&mut self, s: &[u8]) {
        self.buf.extend_from_slice(s);
        self.buf.push(0);
    }

    fn i32(&mut self, n: i32) {
        self.buf.extend_from_slice(&n.to_be_bytes());
    }

    fn i16(&mut self, n: i16) {
        self.buf.extend_from_slice(&n.to_be_bytes());
    }

    /// A message with `tag` and `body` as they are.
    pub fn raw(&mut self, tag: u8, body: &[u8]) {
        let at = self.begin(tag);
        self.buf.extend_from_slice(body);
        self.end(at);
    }

    // --- backend messages (gateway → client) ---

    pub fn auth(&mut self, code: u32, data: &[u8]) {
        let at = self.begin(b'R');
        self.i32(code as i32);
        self.buf.extend_from_slice(data);
        self.end(at);
    }

    pub fn auth_sasl(&mut self, mechanisms: &[&str]) {
        let at = self.begin(b'R');
        self.i32(auth::SASL as i32);
        for m in mechanisms {
            self.str(m.as_bytes());
        }
        self.buf.push(0);
        self.end(at);
    }

    /// ErrorResponse (or NoticeResponse with `tag = b'N'`) with severity, SQLSTATE and message.
    pub fn error(&mut self, severity: &str, code: &str, message: &str) {
        self.notice_or_error(b'E', severity, code, message);
    }

    pub fn notice(&mut self, code: &str, message: &str) {
        self.notice_or_error(b'N', "NOTICE", code, message);
    }

    fn notice_or_error(&mut self, tag: u8, severity: &str, code: &str, message: &str) {
        let at = self.begin(tag);
        for (kind, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', message),
        ] {
            self.buf.push(kind);
            self.str(value.as_bytes());
        }
        self.buf.push(0);
        self.end(at);
    }

    pub fn parameter_status(&mut self, name: &str, value: &str) {
        let at = self.begin(b'S');
        self.str(name.as_bytes());
        self.str(value.as_bytes());
        self.end(at);
    }

    pub fn backend_key_data(&mut self, process_id: u32, secret_key: u32) {
        let at = self.begin(b'K');
        self.i32(process_id as i32);
        self.i32(secret_key as i32);
        self.end(at);
    }

    /// ReadyForQuery with status `I` (idle), `T` (in a transaction) or `E` (failed transaction).
    pub fn ready_for_query(&mut self, status: u8) {
        let at = self.begin(b'Z');
        self.buf.push(status);
        self.end(at);
    }

    /// RowDescription for text columns.
    pub fn row_description(&mut self, columns: &[&str]) {
        let at = self.begin(b'T');
        self.i16(columns.len() as i16);
        for c in columns {
            self.str(c.as_bytes());
            self.i32(0); // table oid
            self.i16(0); // column number
            self.i32(25); // text
            self.i16(-1);
            self.i32(-1);
            self.i16(0); // text format
        }
        self.end(at);
    }

    pub fn data_row(&mut self, values: &[Option<&str>]) {
        let at = self.begin(b'D');
        self.i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    self.i32(v.len() as i32);
                    self.buf.extend_from_slice(v.as_bytes());
                }
                None => self.i32(-1),
            }
        }
        self.end(at);
    }

    pub fn command_complete(&mut self, tag: &str) {
        let at = self.begin(b'C');
        self.str(tag.as_bytes());
        self.end(at);
    }

    pub fn empty_query(&mut self) {
        self.raw(b'I', &[]);
    }

    // --- frontend messages (gateway → server) ---

    pub fn startup(&mut self, params: &[(&str, &str)]) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        self.i32(PROTOCOL_3_0 as i32);
        for (k, v) in params {
            self.str(k.as_bytes());
            self.str(v.as_bytes());
        }
        self.buf.push(0);
        let len = (self.buf.len() - at) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    pub fn cancel_request(&mut self, process_id: u32, secret_key: u32) {
        self.buf.extend_from_slice(&16u32.to_be_bytes());
        self.buf.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
        self.buf.extend_from_slice(&process_id.to_be_bytes());
        self.buf.extend_from_slice(&secret_key.to_be_bytes());
    }

    /// PasswordMessage: a cleartext or md5 password, NUL-terminated. Room for it is made
    /// first, so the password is written once and never left behind in a freed buffer (the
    /// caller wipes `buf` after sending).
    pub fn password(&mut self, password: &[u8]) {
        self.buf.reserve(password.len() + 6);
        let at = self.begin(b'p');
        self.str(password);
        self.end(at);
    }

    pub fn sasl_initial_response(&mut self, mechanism: &str, data: &[u8]) {
        let at = self.begin(b'p');
        self.str(mechanism.as_bytes());
        self.i32(data.len() as i32);
        self.buf.extend_from_slice(data);
        self.end(at);
    }

    pub fn sasl_response(&mut self, data: &[u8]) {
        self.raw(b'p', data);
    }

    pub fn query(&mut self, sql: &str) {
        let at = self.begin(b'Q');
        self.str(sql.as_bytes());
        self.end(at);
    }

    pub fn terminate(&mut self) {
        self.raw(b'X', &[]);
    }
}

/// A SASLInitialResponse body: mechanism name and the client-first message.
pub fn sasl_initial_response(body: &[u8]) -> Result<(&[u8], &[u8]), PgError> {
    let bad = |what| PgError::Malformed {
        tag: Tag(b'p'),
        what,
    };
    let (mechanism, rest) = cstr(body).ok_or(bad("SASL mechanism is not terminated"))?;
    if rest.len() < 4 {
        return Err(bad("SASL initial response has no length"));
    }
    let len = be32(rest, 0) as i32;
    let data = &rest[4..];
    if len == -1 {
        return Ok((mechanism, &[]));
    }
    if len < 0 || len as usize != data.len() {
        return Err(bad("SASL initial response length does not match"));
    }
    Ok((mechanism, data))
}

/// Three byte strings split off a message body: two names (or name and text) and the rest.
pub type Split3<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// The statement name and query of a Parse body (parameter types are left in `rest`).
pub fn parse_message(body: &[u8]) -> Result<Split3<'_>, PgError> {
    let bad = |what| PgError::Malformed {
        tag: Tag(b'P'),
        what,
    };
    let (name, rest) = cstr(body).ok_or(bad("statement name is not terminated"))?;
    let (query, rest) = cstr(rest).ok_or(bad("query is not terminated"))?;
    Ok((name, query, rest))
}

/// The portal and statement names at the start of a Bind body, and the rest.
pub fn bind_message(body: &[u8]) -> Result<Split3<'_>, PgError> {
    let bad = |what| PgError::Malformed {
        tag: Tag(b'B'),
        what,
    };
    let (portal, rest) = cstr(body).ok_or(bad("portal name is not terminated"))?;
    let (statement, rest) = cstr(rest).ok_or(bad("statement name is not terminated"))?;
    Ok((portal, statement, rest))
}

#[cfg(test)]
mod tests;
