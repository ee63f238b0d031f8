//! The client's commands in the command phase, typed: what a front end audits, routes or
//! answers itself. [`Command::parse`] borrows from the payload (command byte included) and
//! never fails on an unknown command: the byte is kept for the caller to refuse.

use super::codec::Reader;
use super::flags::*;
use super::Malformed;

/// A command, by its first payload byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    Quit,
    /// `COM_INIT_DB`: the schema to use.
    InitDb(&'a [u8]),
    /// `COM_QUERY`: the SQL text (with `CLIENT_QUERY_ATTRIBUTES`, MySQL 8 puts attributes
    /// first; the gateway should not offer that capability).
    Query(&'a [u8]),
    Ping,
    /// `COM_PROCESS_KILL`: the connection id (the gateway maps it to a server's).
    ProcessKill(u32),
    Statistics,
    /// `COM_CHANGE_USER`: parse the payload with [`super::handshake::ChangeUser`].
    ChangeUser,
    ResetConnection,
    /// `COM_SET_OPTION`: 0 turns multi-statements on, 1 off.
    SetOption(u16),
    StmtPrepare(&'a [u8]),
    /// `COM_STMT_EXECUTE`; [`StmtExecute::parse`] reads the rest once the parameter count is
    /// known.
    StmtExecute {
        statement_id: u32,
    },
    StmtSendLongData {
        statement_id: u32,
        param: u16,
    },
    StmtClose {
        statement_id: u32,
    },
    StmtReset {
        statement_id: u32,
    },
    StmtFetch {
        statement_id: u32,
        rows: u32,
    },
    /// MariaDB's `COM_STMT_BULK_EXECUTE`.
    StmtBulkExecute {
        statement_id: u32,
    },
    FieldList(&'a [u8]),
    Debug,
    /// Anything else (replication, `COM_SHUTDOWN`, `COM_MULTI`, unknown bytes).
    Other(u8),
}

impl<'a> Command<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, Malformed> {
        let m = |what| Malformed::new("command", what);
        let mut r = Reader::new(payload);
        let Some(byte) = r.u8() else {
            return Err(m("empty packet"));
        };
        let id = |r: &mut Reader<'_>| r.u32().ok_or(m("statement id"));
        Ok(match byte {
            COM_QUIT => Command::Quit,
            COM_INIT_DB => Command::InitDb(r.rest()),
            COM_QUERY => Command::Query(r.rest()),
            COM_PING => Command::Ping,
            COM_PROCESS_KILL => Command::ProcessKill(r.u32().ok_or(m("connection id"))?),
            COM_STATISTICS => Command::Statistics,
            COM_CHANGE_USER => Command::ChangeUser,
            COM_RESET_CONNECTION => Command::ResetConnection,
            COM_SET_OPTION => Command::SetOption(r.u16().ok_or(m("option"))?),
            COM_STMT_PREPARE => Command::StmtPrepare(r.rest()),
            COM_STMT_EXECUTE => Command::StmtExecute {
                statement_id: id(&mut r)?,
            },
            COM_STMT_SEND_LONG_DATA => Command::StmtSendLongData {
                statement_id: id(&mut r)?,
                param: r.u16().ok_or(m("parameter id"))?,
            },
            COM_STMT_CLOSE => Command::StmtClose {
                statement_id: id(&mut r)?,
            },
            COM_STMT_RESET => Command::StmtReset {
                statement_id: id(&mut r)?,
            },
            COM_STMT_FETCH => Command::StmtFetch {
                statement_id: id(&mut r)?,
                rows: r.u32().ok_or(m("row count"))?,
            },
            COM_STMT_BULK_EXECUTE => Command::StmtBulkExecute {
                statement_id: id(&mut r)?,
            },
            COM_FIELD_LIST => Command::FieldList(r.nul_or_rest()),
            COM_DEBUG => Command::Debug,
            other => Command::Other(other),
        })
    }
}

/// `COM_STMT_EXECUTE`, read with the statement's parameter count (from its PREPARE_OK).
///
/// A client sends the parameter types only when they change (`new_params_bound`); a gateway
/// that re-prepares a statement on another server must send them again there, so it keeps the
/// last `types` it saw and uses [`StmtExecute::write_with_types`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StmtExecute<'a> {
    pub statement_id: u32,
    /// Cursor flags (`CURSOR_TYPE_READ_ONLY` = 1...).
    pub flags: u8,
    pub iteration_count: u32,
    /// `(params + 7) / 8` bytes.
    pub null_bitmap: &'a [u8],
    pub new_params_bound: bool,
    /// Two bytes per parameter (type, unsigned flag), when `new_params_bound`.
    pub types: &'a [u8],
    /// The values, as sent.
    pub values: &'a [u8],
}

impl<'a> StmtExecute<'a> {
    pub fn parse(payload: &'a [u8], params: u16) -> Result<Self, Malformed> {
        let m = |what| Malformed::new("COM_STMT_EXECUTE", what);
        let mut r = Reader::new(payload);
        if r.u8() != Some(COM_STMT_EXECUTE) {
            return Err(m("not COM_STMT_EXECUTE"));
        }
        let statement_id = r.u32().ok_or(m("statement id"))?;
        let flags = r.u8().ok_or(m("flags"))?;
        let iteration_count = r.u32().ok_or(m("iteration count"))?;
        let mut ex = StmtExecute {
            statement_id,
            flags,
            iteration_count,
            null_bitmap: &[],
            new_params_bound: false,
            types: &[],
            values: &[],
        };
        if params > 0 {
            let n = usize::from(params);
            ex.null_bitmap = r.bytes(n.div_ceil(8)).ok_or(m("null bitmap"))?;
            ex.new_params_bound = r.u8().ok_or(m("new params bound flag"))? == 1;
            if ex.new_params_bound {
                ex.types = r.bytes(2 * n).ok_or(m("parameter types"))?;
            }
            ex.values = r.rest();
        }
        Ok(ex)
    }

    /// Append this execute for `statement_id`, with `types` sent (as `new_params_bound`)
    /// whether or not the client sent them this time.
    pub fn write_with_types(&self, out: &mut Vec<u8>, statement_id: u32, types: &[u8]) {
        out.push(COM_STMT_EXECUTE);
        out.extend_from_slice(&statement_id.to_le_bytes());
        out.push(self.flags);
        out.extend_from_slice(&self.iteration_count.to_le_bytes());
        if !self.null_bitmap.is_empty() {
            out.extend_from_slice(self.null_bitmap);
            out.push(1);
            out.extend_from_slice(types);
            out.extend_from_slice(self.values);
        }
    }
}

/// Session state changes in an OK packet ([`super::generic::OkPacket::session_state`]).
pub const SESSION_TRACK_SYSTEM_VARIABLES: u8 = 0;
pub const SESSION_TRACK_SCHEMA: u8 = 1;
pub const SESSION_TRACK_STATE_CHANGE: u8 = 2;
pub const SESSION_TRACK_GTIDS: u8 = 3;
pub const SESSION_TRACK_TRANSACTION_CHARACTERISTICS: u8 = 4;
pub const SESSION_TRACK_TRANSACTION_STATE: u8 = 5;

/// One session state change: its type and its data (for `SESSION_TRACK_SYSTEM_VARIABLES` two
/// lenenc strings, name and value; for `SESSION_TRACK_SCHEMA` one, the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionChange<'a> {
    pub kind: u8,
    pub data: &'a [u8],
}

impl<'a> SessionChange<'a> {
    /// The name and value of a system variable change, or the schema (as name, empty value).
    pub fn name_value(&self) -> Option<(&'a [u8], &'a [u8])> {
        let mut r = Reader::new(self.data);
        match self.kind {
            SESSION_TRACK_SYSTEM_VARIABLES => Some((r.lenenc_bytes()?, r.lenenc_bytes()?)),
            SESSION_TRACK_SCHEMA => Some((r.lenenc_bytes()?, &[])),
            _ => None,
        }
    }
}

/// Iterate over the changes in an OK packet's session state bytes; stops at the first
/// malformed entry.
pub fn session_changes(state: &[u8]) -> impl Iterator<Item = SessionChange<'_>> {
    let mut r = Reader::new(state);
    std::iter::from_fn(move || {
        let kind = r.u8()?;
        let data = r.lenenc_bytes()?;
        Some(SessionChange { kind, data })
    })
}
