//! Redis's wire protocol, RESP2 and RESP3, as building blocks for a Redis front end: bytes in,
//! frames and values out, and back. Nothing here reads a socket or keeps a clock.
//!
//! Three ways in, from cheapest to richest:
//!
//! - [`Splitter`] cuts a client's (possibly pipelined) bytes into whole commands without
//!   copying: a [`Command`] is the byte range of the command and of each argument, so a proxy can
//!   forward the bytes unchanged and still read the command name and keys. Inline commands
//!   (`PING`, `GET "a b"` typed into telnet) are unquoted the way Redis does it.
//! - [`ReplyFramer`] finds where each whole reply ends in a server's stream, streaming through
//!   bulk bodies and long lines without holding them, and tells pushes (RESP3 `>`) apart from
//!   replies, so replies can be matched in order to the commands that asked for them.
//! - [`Decoder`] / [`decode`] turn one whole value into a [`Value`] tree (every RESP2 and RESP3
//!   type); [`Value::encode`] and the `encode_*` helpers write them back.
//!
//! All three are incremental over a buffer that grows at its end: "need more bytes" is
//! `Ok(None)` (or an unfinished [`Advance`]), bad input is a [`RespError`] whose
//! [`RespError::reply`] is the error Redis itself sends for it. Every length field is checked
//! against [`Limits`] before it is trusted, nothing is allocated from a claimed length, nesting
//! is bounded, and no input makes any function panic or loop without consuming bytes.
//!
//! What this module deliberately does not do: decide what a command means (see [`table`] for
//! keys and flags, and `sumun_policy::redis_acl` for permissions), keep connection state
//! (RESP2/RESP3 mode, subscriptions, `MULTI`), or accept RESP3 streamed strings and aggregates
//! (`$?`, `*?`), which Redis never sends and never accepts.

mod command;
mod encode;
mod error;
mod framer;
mod limits;
mod line;
mod value;

pub mod table;

#[cfg(test)]
mod tests;

pub use command::{Command, CommandKind, Progress, Splitter};
pub use encode::{
    encode_array_header, encode_bulk, encode_command, encode_error, encode_integer, encode_simple,
};
pub use error::RespError;
pub use framer::{Advance, FrameKind, ReplyFramer};
pub use limits::{Limits, DEFAULT_MAX_BULK_LEN, DEFAULT_MAX_LINE};
pub use value::{decode, Decoder, Value};

/// Split a line into words with Redis's quoting rules (`sdssplitargs`: what inline commands,
/// `redis.conf` and ACL files use): `"..."` with C-like escapes, `'...'`, white space between.
pub fn split_words(line: &[u8]) -> Result<Vec<Vec<u8>>, RespError> {
    let mut bytes = Vec::new();
    let mut ranges = Vec::new();
    command::split_args(line, &mut bytes, &mut ranges)?;
    Ok(ranges.into_iter().map(|r| bytes[r].to_vec()).collect())
}

/// A decimal integer as Redis reads numbers from arguments and length lines (`string2ll`: an
/// optional `-`, digits without a leading zero, within `i64`).
pub fn parse_integer(text: &[u8]) -> Option<i64> {
    line::parse_i64(text)
}

/// Nesting deeper than this is refused whatever [`Limits::max_depth`] says: decoding a tree
/// recurses once per level, and this keeps that well inside a worker thread's stack.
pub const MAX_DEPTH_CAP: usize = 512;
