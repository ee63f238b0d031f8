//! Following the server's answer to one client command, packet by packet, without holding
//! it: [`ResponseTracker`] says when the answer is complete ([`Step::Done`]) and with which
//! final status flags (transaction state, read-only transaction), which a pooling front end
//! needs to know when a server can be handed to another client.
//!
//! It understands: OK and ERR; text and binary result sets (column count, column definitions,
//! the EOF after them unless `CLIENT_DEPRECATE_EOF`, rows, then an EOF or — under
//! `CLIENT_DEPRECATE_EOF` — an OK with header `0xFE`); several results chained by
//! `SERVER_MORE_RESULTS_EXISTS`; `LOAD DATA LOCAL INFILE` (`0xFB`, after which the client sends
//! the file and an empty packet and the server answers); `COM_STMT_PREPARE`'s answer (the
//! PREPARE_OK, then parameter and column definitions, each group with an EOF unless
//! `CLIENT_DEPRECATE_EOF`); a cursor opened by `COM_STMT_EXECUTE` (`SERVER_STATUS_CURSOR_EXISTS`
//! after the column definitions) and `COM_STMT_FETCH`; the simple OK/ERR/EOF commands;
//! `COM_STATISTICS`'s single string; `COM_FIELD_LIST`; the authentication exchange of
//! `COM_CHANGE_USER`; and MariaDB's progress reports. Commands without an answer
//! (`COM_QUIT`, `COM_STMT_CLOSE`, `COM_STMT_SEND_LONG_DATA`) are complete at once.
//!
//! It refuses (at [`ResponseTracker::new`]) replication and other streaming commands,
//! `COM_MULTI`, and connections that negotiated optional result set metadata
//! (`CLIENT_OPTIONAL_RESULTSET_METADATA`, `MARIADB_CLIENT_CACHE_METADATA`): a front end should
//! not offer those capabilities.
//!
//! It is fed physical packets ([`ResponseTracker::feed`], as [`super::packet::next_packet`]
//! returns them), so a multi-packet row streams through: only the first packet of a logical
//! payload is looked at, and only its first bytes. [`ResponseTracker::feed_payload`] takes a
//! reassembled logical payload instead. Sequence ids are the framer's business.

use super::codec::Reader;
use super::flags::*;
use super::generic::{is_eof, EofPacket, ErrPacket, OkPacket, PROGRESS_CODE};
use super::handshake::CACHING_SHA2_FAST_AUTH_OK;
use super::packet::MAX_CHUNK;
use super::Malformed;

/// Header of the server's request for a local file.
pub const LOCAL_INFILE_HEADER: u8 = 0xFB;

/// An error in the server's answer: the connection is out of step and must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackError {
    #[error("command {0} ({1}) is not supported through the gateway")]
    Unsupported(u8, &'static str),
    #[error("capability {0} is not supported by the response tracker")]
    UnsupportedCapability(&'static str),
    #[error("unexpected packet (first byte 0x{byte:02x}) while expecting {expecting}")]
    Unexpected { byte: u8, expecting: &'static str },
    #[error("packet after the end of the response")]
    AfterEnd,
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

/// What to do after a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The answer goes on: read and feed the next server packet.
    More,
    /// The server asked for a local file (`LOAD DATA LOCAL INFILE`): the client now sends the
    /// file's content and an empty packet (or refuses with just the empty packet); then feed
    /// the server's next packets as before.
    LocalInfile,
    /// `COM_CHANGE_USER`: the server waits for the client's next authentication packet; then
    /// feed the server's next packets as before.
    ClientTurn,
    /// The answer is complete.
    Done(Outcome),
}

/// How an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Status flags of the final OK or EOF; `None` when it ended with an ERR or carried no
    /// status (`COM_STMT_PREPARE`, `COM_STATISTICS`, commands without an answer): keep the
    /// previous state, or ask the server when it matters.
    pub status: Option<u16>,
    /// The error code when it ended with an ERR.
    pub error: Option<u16>,
    /// `COM_STMT_PREPARE`'s statement, when it succeeded.
    pub prepared: Option<PrepareOk>,
    /// Results seen (OKs and result sets; several with `SERVER_MORE_RESULTS_EXISTS`).
    pub results: u32,
}

/// The PREPARE_OK packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareOk {
    pub statement_id: u32,
    pub columns: u16,
    pub params: u16,
    pub warnings: u16,
}

impl PrepareOk {
    pub fn parse(payload: &[u8]) -> Result<Self, Malformed> {
        let m = |what| Malformed::new("prepare OK", what);
        let mut r = Reader::new(payload);
        if r.u8() != Some(0) {
            return Err(m("header is not 0x00"));
        }
        let statement_id = r.u32().ok_or(m("statement id"))?;
        let columns = r.u16().ok_or(m("column count"))?;
        let params = r.u16().ok_or(m("parameter count"))?;
        let warnings = if r.remaining() >= 3 {
            r.skip(1).ok_or(m("filler"))?;
            r.u16().ok_or(m("warnings"))?
        } else {
            0
        };
        Ok(PrepareOk {
            statement_id,
            columns,
            params,
            warnings,
        })
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(0);
        out.extend_from_slice(&self.statement_id.to_le_bytes());
        out.extend_from_slice(&self.columns.to_le_bytes());
        out.extend_from_slice(&self.params.to_le_bytes());
        out.push(0);
        out.extend_from_slice(&self.warnings.to_le_bytes());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first packet of a result: OK, ERR, `0xFB`, or a column count.
    Result,
    Columns(u64),
    ColumnsEof,
    Rows,
    PrepareOk,
    Params {
        left: u16,
        columns: u16,
    },
    ParamsEof {
        columns: u16,
    },
    PrepareColumns(u16),
    PrepareColumnsEof,
    /// One OK, ERR or EOF.
    Simple,
    /// `COM_STATISTICS`: one string packet.
    Text,
    /// `COM_FIELD_LIST`: column definitions up to an EOF/OK.
    FieldList,
    /// `COM_CHANGE_USER`'s exchange.
    Auth,
    Done,
}

/// Follows the answer to one command. Make one per command (it is two words of state).
#[derive(Debug, Clone)]
pub struct ResponseTracker {
    state: State,
    caps: Capabilities,
    /// The previous physical packet was 16 MiB − 1 long: this one continues it.
    continuing: bool,
    outcome: Outcome,
}

/// Whether the server answers `command` at all.
pub fn expects_response(command: u8) -> bool {
    !matches!(command, COM_QUIT | COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA)
}

impl ResponseTracker {
    /// A tracker for the answer to `command` on a connection with the negotiated `caps`.
    pub fn new(command: u8, caps: Capabilities) -> Result<Self, TrackError> {
        if caps.has(CLIENT_OPTIONAL_RESULTSET_METADATA) {
            return Err(TrackError::UnsupportedCapability(
                "CLIENT_OPTIONAL_RESULTSET_METADATA",
            ));
        }
        if caps.has(MARIADB_CLIENT_CACHE_METADATA) {
            return Err(TrackError::UnsupportedCapability(
                "MARIADB_CLIENT_CACHE_METADATA",
            ));
        }
        let state = match command {
            COM_QUIT | COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA => State::Done,
            COM_QUERY | COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE | COM_PROCESS_INFO => {
                State::Result
            }
            COM_STMT_FETCH => State::Rows,
            COM_STMT_PREPARE => State::PrepareOk,
            COM_INIT_DB | COM_PING | COM_CREATE_DB | COM_DROP_DB | COM_REFRESH | COM_SHUTDOWN
            | COM_PROCESS_KILL | COM_DEBUG | COM_STMT_RESET | COM_SET_OPTION
            | COM_RESET_CONNECTION => State::Simple,
            COM_STATISTICS => State::Text,
            COM_FIELD_LIST => State::FieldList,
            COM_CHANGE_USER => State::Auth,
            other => return Err(TrackError::Unsupported(other, command_name(other))),
        };
        Ok(ResponseTracker {
            state,
            caps,
            continuing: false,
            outcome: Outcome::default(),
        })
    }

    /// Whether the answer is complete (at once for commands without one).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The outcome so far (final once [`ResponseTracker::is_done`]).
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// Feed one physical packet's payload (16 MiB − 1 bytes at most; one that long is
    /// continued by the next, which is passed over).
    pub fn feed(&mut self, packet: &[u8]) -> Result<Step, TrackError> {
        if self.state == State::Done {
            return Err(TrackError::AfterEnd);
        }
        let was_continuing = self.continuing;
        self.continuing = packet.len() >= MAX_CHUNK;
        if was_continuing {
            return Ok(Step::More);
        }
        self.interpret(packet, packet.len())
    }

    /// Feed one whole logical payload (reassembled by [`super::packet::decode_payload`]).
    pub fn feed_payload(&mut self, payload: &[u8]) -> Result<Step, TrackError> {
        if self.state == State::Done {
            return Err(TrackError::AfterEnd);
        }
        self.interpret(payload, payload.len())
    }

    /// `first` is the payload's start (its first physical packet), `len` at least its length
    /// so far: what tells a `0xFE` row from a terminator.
    fn interpret(&mut self, first: &[u8], len: usize) -> Result<Step, TrackError> {
        let Some(&byte) = first.first() else {
            return self.unexpected(0, "a non-empty packet");
        };
        if byte == 0xFF && self.state != State::Text {
            let err = ErrPacket::parse(first)?;
            if err.code == PROGRESS_CODE && self.caps.has(MARIADB_CLIENT_PROGRESS) {
                return Ok(Step::More);
            }
            self.outcome.status = None;
            self.outcome.error = Some(err.code);
            return Ok(self.done());
        }
        // A 0xFE packet shorter than a continued one ends rows under CLIENT_DEPRECATE_EOF (a
        // row starting with 0xFE holds a string of 16 MiB or more); otherwise only a short one
        // (an EOF) does.
        let deprecate_eof = self.caps.has(CLIENT_DEPRECATE_EOF);
        let terminator = byte == 0xFE
            && if deprecate_eof {
                len < MAX_CHUNK
            } else {
                is_eof(first)
            };
        match self.state {
            State::Result => match byte {
                0x00 => {
                    let ok = OkPacket::parse(first, self.caps)?;
                    self.outcome.results += 1;
                    Ok(self.after_result(ok.status))
                }
                LOCAL_INFILE_HEADER => Ok(Step::LocalInfile),
                _ => {
                    let n = Reader::new(first).lenenc_int().filter(|&n| n > 0).ok_or(
                        Malformed::new("column count", "not a length-encoded integer"),
                    )?;
                    self.outcome.results += 1;
                    self.state = State::Columns(n);
                    Ok(Step::More)
                }
            },
            State::Columns(left) => {
                if terminator {
                    return self.unexpected(byte, "a column definition");
                }
                self.state = match left {
                    1 if deprecate_eof => State::Rows,
                    1 => State::ColumnsEof,
                    n => State::Columns(n.saturating_sub(1)),
                };
                Ok(Step::More)
            }
            State::ColumnsEof => {
                if !terminator {
                    return self.unexpected(byte, "the EOF after column definitions");
                }
                let eof = EofPacket::parse(first, self.caps)?;
                if eof.status & SERVER_STATUS_CURSOR_EXISTS != 0 {
                    // COM_STMT_EXECUTE opened a cursor: rows come with COM_STMT_FETCH.
                    self.outcome.status = Some(eof.status);
                    return Ok(self.done());
                }
                self.state = State::Rows;
                Ok(Step::More)
            }
            State::Rows => {
                if !terminator {
                    return Ok(Step::More);
                }
                let status = self.terminator_status(first)?;
                Ok(self.after_result(status))
            }
            State::PrepareOk => {
                let ok = PrepareOk::parse(first)?;
                self.outcome.prepared = Some(ok);
                self.outcome.results = 1;
                self.state = State::Params {
                    left: ok.params,
                    columns: ok.columns,
                };
                Ok(self.prepare_next())
            }
            State::Params { left, columns } => {
                if terminator {
                    return self.unexpected(byte, "a parameter definition");
                }
                self.state = State::Params {
                    left: left.saturating_sub(1),
                    columns,
                };
                Ok(self.prepare_next())
            }
            State::ParamsEof { columns } => {
                if !terminator {
                    return self.unexpected(byte, "the EOF after parameter definitions");
                }
                self.state = State::PrepareColumns(columns);
                Ok(self.prepare_next())
            }
            State::PrepareColumns(left) => {
                if terminator {
                    return self.unexpected(byte, "a column definition");
                }
                self.state = State::PrepareColumns(left.saturating_sub(1));
                Ok(self.prepare_next())
            }
            State::PrepareColumnsEof => {
                if !terminator {
                    return self.unexpected(byte, "the EOF after column definitions");
                }
                Ok(self.done())
            }
            State::Simple => match byte {
                0x00 => {
                    let ok = OkPacket::parse(first, self.caps)?;
                    self.outcome.status = Some(ok.status);
                    self.outcome.results = 1;
                    Ok(self.done())
                }
                0xFE if is_eof(first) => {
                    let eof = EofPacket::parse(first, self.caps)?;
                    self.outcome.status = Some(eof.status);
                    self.outcome.results = 1;
                    Ok(self.done())
                }
                _ => self.unexpected(byte, "OK, ERR or EOF"),
            },
            State::Text => {
                self.outcome.results = 1;
                if byte == 0xFF {
                    self.outcome.error = ErrPacket::parse(first).ok().map(|e| e.code);
                }
                Ok(self.done())
            }
            State::FieldList => {
                if terminator {
                    self.outcome.status = Some(self.terminator_status(first)?);
                    self.outcome.results = 1;
                    return Ok(self.done());
                }
                Ok(Step::More)
            }
            State::Auth => match byte {
                0x00 => {
                    let ok = OkPacket::parse(first, self.caps)?;
                    self.outcome.status = Some(ok.status);
                    self.outcome.results = 1;
                    Ok(self.done())
                }
                0xFE => Ok(Step::ClientTurn),
                0x01 if first.get(1..) == Some(&[CACHING_SHA2_FAST_AUTH_OK][..]) => Ok(Step::More),
                0x01 => Ok(Step::ClientTurn),
                _ => self.unexpected(byte, "an authentication packet"),
            },
            State::Done => Err(TrackError::AfterEnd),
        }
    }

    /// Status flags of the packet that ends rows: an OK with header 0xFE under
    /// `CLIENT_DEPRECATE_EOF`, an EOF otherwise.
    fn terminator_status(&self, first: &[u8]) -> Result<u16, Malformed> {
        if self.caps.has(CLIENT_DEPRECATE_EOF) {
            Ok(OkPacket::parse(first, self.caps)?.status)
        } else {
            Ok(EofPacket::parse(first, self.caps)?.status)
        }
    }

    /// After an OK or the end of a result set: another result follows, or the answer is done.
    fn after_result(&mut self, status: u16) -> Step {
        self.outcome.status = Some(status);
        if status & SERVER_MORE_RESULTS_EXISTS != 0 {
            self.state = State::Result;
            Step::More
        } else {
            self.done()
        }
    }

    /// Move through the PREPARE answer's groups, skipping empty ones.
    fn prepare_next(&mut self) -> Step {
        let deprecate_eof = self.caps.has(CLIENT_DEPRECATE_EOF);
        loop {
            self.state = match self.state {
                State::Params { left: 0, columns } => {
                    let had_params = self.outcome.prepared.is_some_and(|p| p.params > 0);
                    if had_params && !deprecate_eof {
                        State::ParamsEof { columns }
                    } else {
                        State::PrepareColumns(columns)
                    }
                }
                State::PrepareColumns(0) => {
                    let had_columns = self.outcome.prepared.is_some_and(|p| p.columns > 0);
                    if had_columns && !deprecate_eof {
                        State::PrepareColumnsEof
                    } else {
                        return self.done();
                    }
                }
                _ => return Step::More,
            };
        }
    }

    fn done(&mut self) -> Step {
        self.state = State::Done;
        Step::Done(self.outcome)
    }

    fn unexpected(&mut self, byte: u8, expecting: &'static str) -> Result<Step, TrackError> {
        Err(TrackError::Unexpected { byte, expecting })
    }
}
