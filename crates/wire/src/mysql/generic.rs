//! The generic response packets: OK (`0x00`, or `0xFE` where it ends a result set under
//! `CLIENT_DEPRECATE_EOF`), ERR (`0xFF`) and EOF (`0xFE`, fewer than 9 bytes).
//!
//! Parsing needs the negotiated capabilities (the fields present depend on them); building
//! writes the payload only (frame it with [`super::packet::write_packet`]).

use super::codec::{put_lenenc_bytes, put_lenenc_int, put_u16, Reader};
use super::flags::{
    Capabilities, CLIENT_PROTOCOL_41, CLIENT_SESSION_TRACK, CLIENT_TRANSACTIONS,
    SERVER_SESSION_STATE_CHANGED,
};
use super::Malformed;

pub const OK_HEADER: u8 = 0x00;
pub const EOF_HEADER: u8 = 0xFE;
pub const ERR_HEADER: u8 = 0xFF;
/// MariaDB's error code for a progress report (only with `MARIADB_CLIENT_PROGRESS`).
pub const PROGRESS_CODE: u16 = 0xFFFF;

/// Whether `payload` is an EOF packet: `0xFE` and shorter than 9 bytes (a text row can start
/// with `0xFE` only as the 8-byte length of a string, so it is at least 9 bytes long).
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&EOF_HEADER) && payload.len() < 9
}

/// An OK packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OkPacket<'a> {
    /// `0x00`, or `0xFE` for the OK that ends a result set under `CLIENT_DEPRECATE_EOF`.
    pub header: u8,
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    /// Human-readable information (`Rows matched: 1  Changed: 1  Warnings: 0`).
    pub info: &'a [u8],
    /// Session state changes (`CLIENT_SESSION_TRACK` and `SERVER_SESSION_STATE_CHANGED`),
    /// kept as the opaque bytes the server sent, for passing through.
    pub session_state: &'a [u8],
}

impl<'a> OkPacket<'a> {
    pub fn parse(payload: &'a [u8], caps: Capabilities) -> Result<Self, Malformed> {
        const P: &str = "OK";
        let mut r = Reader::new(payload);
        let header = r.u8().ok_or(Malformed::new(P, "empty"))?;
        if header != OK_HEADER && header != EOF_HEADER {
            return Err(Malformed::new(P, "header is neither 0x00 nor 0xFE"));
        }
        let affected_rows = r.lenenc_int().ok_or(Malformed::new(P, "affected rows"))?;
        let last_insert_id = r.lenenc_int().ok_or(Malformed::new(P, "last insert id"))?;
        let mut ok = OkPacket {
            header,
            affected_rows,
            last_insert_id,
            ..OkPacket::default()
        };
        if caps.has(CLIENT_PROTOCOL_41) {
            ok.status = r.u16().ok_or(Malformed::new(P, "status flags"))?;
            ok.warnings = r.u16().ok_or(Malformed::new(P, "warnings"))?;
        } else if caps.has(CLIENT_TRANSACTIONS) {
            ok.status = r.u16().ok_or(Malformed::new(P, "status flags"))?;
        }
        if caps.has(CLIENT_SESSION_TRACK) {
            // Servers leave out an empty info string at the very end of the packet.
            if !r.is_empty() {
                ok.info = r.lenenc_bytes().ok_or(Malformed::new(P, "info"))?;
            }
            if ok.status & SERVER_SESSION_STATE_CHANGED != 0 && !r.is_empty() {
                ok.session_state = r.lenenc_bytes().ok_or(Malformed::new(P, "session state"))?;
            }
        } else {
            ok.info = r.rest();
        }
        Ok(ok)
    }

    /// Append the payload as the given capabilities say.
    pub fn write(&self, out: &mut Vec<u8>, caps: Capabilities) {
        out.push(self.header);
        put_lenenc_int(out, self.affected_rows);
        put_lenenc_int(out, self.last_insert_id);
        if caps.has(CLIENT_PROTOCOL_41) {
            put_u16(out, self.status);
            put_u16(out, self.warnings);
        } else if caps.has(CLIENT_TRANSACTIONS) {
            put_u16(out, self.status);
        }
        if caps.has(CLIENT_SESSION_TRACK) {
            let state = self.status & SERVER_SESSION_STATE_CHANGED != 0;
            if !self.info.is_empty() || state {
                put_lenenc_bytes(out, self.info);
            }
            if state {
                put_lenenc_bytes(out, self.session_state);
            }
        } else {
            out.extend_from_slice(self.info);
        }
    }
}

/// An ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket<'a> {
    pub code: u16,
    /// The five-character SQL state after the `#` marker, when the server sent one (servers
    /// leave it out before the capabilities are known, e.g. `Host ... is not allowed`).
    pub sql_state: Option<[u8; 5]>,
    pub message: &'a [u8],
}

impl<'a> ErrPacket<'a> {
    /// Parse an ERR packet. The SQL state is read whenever the `#` marker is there, whatever
    /// the capabilities, because a server's first packet can be an ERR sent before them.
    pub fn parse(payload: &'a [u8]) -> Result<Self, Malformed> {
        const P: &str = "ERR";
        let mut r = Reader::new(payload);
        if r.u8() != Some(ERR_HEADER) {
            return Err(Malformed::new(P, "header is not 0xFF"));
        }
        let code = r.u16().ok_or(Malformed::new(P, "error code"))?;
        let mut sql_state = None;
        if code != PROGRESS_CODE && r.peek() == Some(b'#') && r.remaining() >= 6 {
            r.skip(1).ok_or(Malformed::new(P, "sql state"))?;
            let s = r.bytes(5).ok_or(Malformed::new(P, "sql state"))?;
            sql_state = Some([s[0], s[1], s[2], s[3], s[4]]);
        }
        Ok(ErrPacket {
            code,
            sql_state,
            message: r.rest(),
        })
    }

    /// The SQL state as text (`"42S02"`), if sent and ASCII.
    pub fn sql_state_str(&self) -> Option<&str> {
        self.sql_state
            .as_ref()
            .and_then(|s| std::str::from_utf8(s).ok())
    }

    /// Whether this is a MariaDB progress report, not an error.
    pub fn is_progress(&self) -> bool {
        self.code == PROGRESS_CODE
    }

    /// Append the payload; with `CLIENT_PROTOCOL_41` (or before capabilities are agreed, where
    /// clients accept it too) the SQL state is written when set.
    pub fn write(&self, out: &mut Vec<u8>, caps: Capabilities) {
        out.push(ERR_HEADER);
        put_u16(out, self.code);
        if let Some(state) = self.sql_state {
            if caps.has(CLIENT_PROTOCOL_41) || caps.0 == 0 {
                out.push(b'#');
                out.extend_from_slice(&state);
            }
        }
        out.extend_from_slice(self.message);
    }
}

/// An ERR payload: `code`, `sql_state` (5 ASCII characters) and message, with the marker.
pub fn err_payload(code: u16, sql_state: &[u8; 5], message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + message.len());
    ErrPacket {
        code,
        sql_state: Some(*sql_state),
        message: message.as_bytes(),
    }
    .write(&mut out, Capabilities(CLIENT_PROTOCOL_41));
    out
}

/// An EOF packet (`CLIENT_PROTOCOL_41` form: warnings and status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EofPacket {
    pub warnings: u16,
    pub status: u16,
}

impl EofPacket {
    pub fn parse(payload: &[u8], caps: Capabilities) -> Result<Self, Malformed> {
        const P: &str = "EOF";
        if !is_eof(payload) {
            return Err(Malformed::new(P, "not 0xFE or 9 bytes or longer"));
        }
        let mut r = Reader::new(&payload[1..]);
        if !caps.has(CLIENT_PROTOCOL_41) {
            return Ok(EofPacket::default());
        }
        let warnings = r.u16().ok_or(Malformed::new(P, "warnings"))?;
        let status = r.u16().ok_or(Malformed::new(P, "status flags"))?;
        Ok(EofPacket { warnings, status })
    }

    pub fn write(&self, out: &mut Vec<u8>, caps: Capabilities) {
        out.push(EOF_HEADER);
        if caps.has(CLIENT_PROTOCOL_41) {
            put_u16(out, self.warnings);
            put_u16(out, self.status);
        }
    }
}
