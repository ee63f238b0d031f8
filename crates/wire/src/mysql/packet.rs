//! Packet framing: `[len: u24 LE][seq: u8][payload; len]`.
//!
//! A logical payload of `n` bytes is sent as `n / 0xFFFFFF` full packets followed by one of
//! `n % 0xFFFFFF` bytes (possibly empty), with consecutive sequence ids. The sequence id starts
//! at 0 with every client command and is continued by the answer; it wraps at 256.
//!
//! Two ways to read: [`next_packet`] returns one physical packet borrowed from the buffer, which
//! is what a relay needs to stream a large payload through without holding it; and
//! [`decode_payload`] returns one whole logical payload (borrowed when it fits one packet,
//! reassembled otherwise), refusing anything longer than its limit as soon as a header shows
//! it, before the bytes arrive and without allocating them.

use std::borrow::Cow;

/// The largest payload of one physical packet; a packet this long continues in the next one.
pub const MAX_CHUNK: usize = 0xFF_FFFF;
/// Header length.
pub const HEADER_LEN: usize = 4;
/// The default limit on one logical payload (MariaDB's and MySQL's default
/// `max_allowed_packet` is 16 MiB or more; the limit is the caller's choice).
pub const DEFAULT_MAX_PAYLOAD: usize = 16 << 20;

/// A framing error: the connection cannot go on after one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("packet payload of at least {at_least} bytes exceeds the limit of {max} bytes")]
    TooLarge { at_least: usize, max: usize },
    #[error("packet out of order: sequence id {got}, expected {expected}")]
    OutOfOrder { expected: u8, got: u8 },
}

/// A packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length of this physical packet (at most [`MAX_CHUNK`]).
    pub len: usize,
    pub seq: u8,
}

impl Header {
    /// Whether another packet of the same logical payload follows this one.
    pub fn continues(&self) -> bool {
        self.len == MAX_CHUNK
    }
}

/// Read the header at the start of `buf`, or `None` when fewer than 4 bytes are there.
pub fn header(buf: &[u8]) -> Option<Header> {
    let h = buf.get(..HEADER_LEN)?;
    Some(Header {
        len: usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16,
        seq: h[3],
    })
}

/// One physical packet borrowed from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub seq: u8,
    pub payload: &'a [u8],
}

impl Packet<'_> {
    /// Bytes this packet took in the buffer, header included.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Whether the logical payload continues in the next packet.
    pub fn continues(&self) -> bool {
        self.payload.len() == MAX_CHUNK
    }
}

/// Split the physical packet at the start of `buf`: `None` while it is incomplete. A physical
/// packet is never longer than 16 MiB − 1, so a caller that must bound its buffer below that
/// checks [`header`] first.
pub fn next_packet(buf: &[u8]) -> Option<Packet<'_>> {
    let h = header(buf)?;
    let payload = buf.get(HEADER_LEN..HEADER_LEN + h.len)?;
    Some(Packet {
        seq: h.seq,
        payload,
    })
}

/// One logical payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload<'a> {
    /// The payload; borrowed from the buffer unless it spanned several packets.
    pub data: Cow<'a, [u8]>,
    /// Sequence id of its first packet.
    pub seq: u8,
    /// The sequence id the next packet must carry (the last one's plus one, wrapping).
    pub next_seq: u8,
    /// Bytes it took in the buffer, headers included: drain this many.
    pub consumed: usize,
}

/// Decode the logical payload at the start of `buf`.
///
/// - `Ok(None)`: incomplete, read more and call again with the grown buffer (nothing is kept
///   between calls; the headers already seen are checked again, which is cheap).
/// - `Err(TooLarge)`: the headers seen so far already add up to more than `max_payload`; this
///   is known from the first header of a claimed 4 GiB payload, so no more bytes are awaited.
/// - `Err(OutOfOrder)`: with `expect_seq = Some(s)`, the first packet does not carry `s`; a
///   continuation packet that does not follow its predecessor is always an error.
pub fn decode_payload(
    buf: &[u8],
    max_payload: usize,
    expect_seq: Option<u8>,
) -> Result<Option<Payload<'_>>, FrameError> {
    let Some(first) = header(buf) else {
        return Ok(None);
    };
    if let Some(expected) = expect_seq {
        if first.seq != expected {
            return Err(FrameError::OutOfOrder {
                expected,
                got: first.seq,
            });
        }
    }
    // Walk the headers: total length, checked against the limit as each one is seen.
    let mut total = 0usize;
    let mut at = 0usize;
    let mut seq = first.seq;
    let mut chunks = 0usize;
    loop {
        let Some(h) = header(&buf[at..]) else {
            return Ok(None);
        };
        if chunks > 0 && h.seq != seq {
            return Err(FrameError::OutOfOrder {
                expected: seq,
                got: h.seq,
            });
        }
        total = total.saturating_add(h.len);
        if total > max_payload {
            return Err(FrameError::TooLarge {
                at_least: total,
                max: max_payload,
            });
        }
        chunks += 1;
        seq = h.seq.wrapping_add(1);
        let end = at + HEADER_LEN + h.len;
        if buf.len() < end {
            return Ok(None);
        }
        at = end;
        if !h.continues() {
            break;
        }
    }
    let data = if chunks == 1 {
        Cow::Borrowed(&buf[HEADER_LEN..at])
    } else {
        // Every byte is in `buf` already, so this allocation is bounded by the input.
        let mut data = Vec::with_capacity(total);
        let mut p = 0;
        while p < at {
            let Some(pk) = next_packet(&buf[p..]) else {
                break;
            };
            data.extend_from_slice(pk.payload);
            p += pk.wire_len();
        }
        Cow::Owned(data)
    };
    Ok(Some(Payload {
        data,
        seq: first.seq,
        next_seq: seq,
        consumed: at,
    }))
}

/// Append `payload` to `out` as packets starting at sequence id `seq`; returns the sequence id
/// for the next packet. A payload that is a multiple of 16 MiB − 1 long (the empty one
/// included) ends with an empty packet, as the protocol requires.
pub fn write_packet(out: &mut Vec<u8>, seq: u8, payload: &[u8]) -> u8 {
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_CHUNK);
        out.reserve(HEADER_LEN + n);
        out.extend_from_slice(&[n as u8, (n >> 8) as u8, (n >> 16) as u8, seq]);
        out.extend_from_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_CHUNK {
            return seq;
        }
    }
}

/// Start a packet in `out` whose payload the caller appends next; [`finish_packet`] then fills
/// in the header. Saves building the payload in a buffer of its own.
pub fn begin_packet(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    start
}

/// Complete the packet begun at `start` with sequence id `seq`; returns the next sequence id.
/// A payload of 16 MiB − 1 or more is split into several packets here.
pub fn finish_packet(out: &mut Vec<u8>, start: usize, seq: u8) -> u8 {
    let len = out.len() - start - HEADER_LEN;
    if len < MAX_CHUNK {
        out[start..start + HEADER_LEN].copy_from_slice(&[
            len as u8,
            (len >> 8) as u8,
            (len >> 16) as u8,
            seq,
        ]);
        return seq.wrapping_add(1);
    }
    let payload = out.split_off(start + HEADER_LEN);
    out.truncate(start);
    write_packet(out, seq, &payload)
}
