//! The MySQL/MariaDB client/server protocol, as building blocks for a front end: no sockets,
//! no clocks, no state beyond what a caller keeps in the values it is handed.
//!
//! - [`packet`]: framing. A packet is a 4-byte header (3-byte little-endian length, sequence
//!   id) and a payload; a payload of 16 MiB − 1 or more continues in the following packets.
//!   [`packet::next_packet`] splits one physical packet off a buffer (what a relay streams),
//!   [`packet::decode_payload`] reassembles one logical payload under a size limit, and
//!   [`packet::write_packet`] splits a payload into packets.
//! - [`codec`]: the protocol's integers and strings (length-encoded ones included), a
//!   bounds-checked [`codec::Reader`] and the `put_*` writers.
//! - [`flags`]: capability, status and command constants.
//! - [`handshake`]: the connection phase (Handshake v10, SSLRequest, HandshakeResponse41,
//!   auth switch and more-data packets, caching_sha2_password's one-byte signals).
//! - [`generic`]: OK, ERR and EOF packets; [`errors`]: the server's errors in its own words.
//! - [`response`]: [`response::ResponseTracker`], which follows the server's packets for one
//!   command and says when the answer is complete and in which status (transaction state).
//! - [`stmt`]: reading and rewriting the statement id of the `COM_STMT_*` commands, and the
//!   head of a `COM_STMT_EXECUTE` (cursor flag, parameter types).
//! - [`command`]: the client's commands typed ([`command::Command`]), `COM_STMT_EXECUTE`'s
//!   parameters ([`command::StmtExecute`]), the session state changes an OK carries.
//! - [`resultset`]: column definitions, text rows, and a writer for whole text result sets.
//!
//! Every decoder takes a byte slice, never panics, never reads past it and never allocates
//! more than it was given; lengths in headers are checked against a limit before they are
//! believed. Password scrambles live in `sumun-vault` (`mysql` module), not here.

pub mod codec;
pub mod command;
pub mod errors;
pub mod flags;
pub mod generic;
pub mod handshake;
pub mod packet;
pub mod response;
pub mod resultset;
pub mod stmt;

#[cfg(test)]
mod tests;

pub use codec::Reader;
pub use command::{Command, StmtExecute};
pub use flags::Capabilities;
pub use generic::{EofPacket, ErrPacket, OkPacket};
pub use handshake::{
    AuthMoreData, AuthSwitchRequest, ClientHello, HandshakeResponse, HandshakeV10, SslRequest,
};
pub use packet::{decode_payload, next_packet, write_packet, FrameError, Packet, Payload};
pub use response::{Outcome, PrepareOk, ResponseTracker, Step, TrackError};

/// A malformed packet of a known kind: which kind, and what was wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed {packet} packet: {what}")]
pub struct Malformed {
    pub packet: &'static str,
    pub what: &'static str,
}

impl Malformed {
    pub(crate) const fn new(packet: &'static str, what: &'static str) -> Self {
        Malformed { packet, what }
    }
}
