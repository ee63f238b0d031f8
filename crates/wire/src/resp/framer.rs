//! Where each reply ends in a server's byte stream, without holding the reply.

use super::line::{find_line, is_big_number, parse_double, parse_i64, parse_len};
use super::{Limits, RespError};

/// What a complete top-level frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A reply to a command (anything but an error or a push).
    Reply,
    /// A reply that is an error (`-ERR ...` or a RESP3 blob error `!`).
    Error,
    /// A RESP3 push (`>`): pub/sub messages, client-tracking invalidations. It answers no
    /// command, so it must not be matched to one. (In RESP2 pub/sub messages are plain arrays,
    /// which only the connection's subscribed state can tell apart.)
    Push,
}

impl FrameKind {
    /// Whether this frame answers a command (a reply or an error, not a push).
    pub fn is_reply(self) -> bool {
        self != FrameKind::Push
    }
}

/// The result of one [`ReplyFramer::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    /// How many bytes from the start of the slice given belong to the current frame and have
    /// been checked: they may be forwarded (or dropped) now. Bytes after them were not looked
    /// at for good and must be given again, with more appended.
    pub consumed: usize,
    /// `Some` when the current frame ended exactly at `consumed`; the framer is then ready for
    /// the next one.
    pub complete: Option<FrameKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Level {
    /// Elements still to come (a map or attribute of n pairs has 2n).
    left: u64,
    /// Attributes describe the value after them and do not count as an element themselves.
    attribute: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of an element: its type byte comes next.
    Element,
    /// Inside a simple string or error; `cr` when its `\r` was the last byte seen.
    Text { cr: bool },
    /// Inside a bulk body: this many bytes of it to skip.
    Body { left: u64 },
    /// After a bulk body: the `\r` (`cr` false) or the `\n` (`cr` true) comes next.
    Crlf { cr: bool },
}

/// A streaming framer for one server connection: feed it the stream's bytes and it says where
/// each top-level reply ends, and whether it was a reply, an error or a push, so replies can be
/// matched in order to the clients that sent the commands.
///
/// It holds only a stack of counts (at most [`Limits::max_depth`] deep): bulk bodies, simple
/// strings and errors of any length are skipped as they stream by, so a proxy can forward a
/// 512 MiB reply chunk by chunk. Only a length or number line must be whole before it is
/// consumed, and those are bounded by [`Limits::max_line`]. After an error the stream is
/// unusable (the framer does not know where the next frame starts); [`ReplyFramer::reset`]
/// only makes sense on a new connection.
#[derive(Debug, Clone)]
pub struct ReplyFramer {
    limits: Limits,
    stack: Vec<Level>,
    state: State,
    kind: Option<FrameKind>,
}

impl Default for ReplyFramer {
    fn default() -> ReplyFramer {
        ReplyFramer::new(Limits::default())
    }
}

impl ReplyFramer {
    pub fn new(limits: Limits) -> ReplyFramer {
        ReplyFramer {
            limits,
            stack: Vec::new(),
            state: State::Element,
            kind: None,
        }
    }

    /// Forget any frame in progress.
    pub fn reset(&mut self) {
        self.stack.clear();
        self.state = State::Element;
        self.kind = None;
    }

    /// Whether a frame has been started and not finished (some of its bytes were consumed).
    pub fn in_frame(&self) -> bool {
        self.state != State::Element || !self.stack.is_empty()
    }

    /// Scan `buf` (the bytes after those already consumed) until the current frame ends or the
    /// bytes run out. Stops at the end of one frame: call again with the rest for the next.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Advance, RespError> {
        let mut pos = 0usize;
        loop {
            let pending = |pos| {
                Ok(Advance {
                    consumed: pos,
                    complete: None,
                })
            };
            let element_done = match self.state {
                State::Body { left } => {
                    let avail = (buf.len() - pos) as u64;
                    let take = left.min(avail);
                    pos += take as usize;
                    if take < left {
                        self.state = State::Body { left: left - take };
                        return pending(pos);
                    }
                    self.state = State::Crlf { cr: false };
                    false
                }
                State::Crlf { cr } => {
                    let Some(&b) = buf.get(pos) else {
                        return pending(pos);
                    };
                    let want = if cr { b'\n' } else { b'\r' };
                    if b != want {
                        return Err(RespError::MissingCrlf {
                            what: "bulk string",
                        });
                    }
                    pos += 1;
                    self.state = State::Crlf { cr: true };
                    cr
                }
                State::Text { cr } => {
                    if cr {
                        let Some(&b) = buf.get(pos) else {
                            return pending(pos);
                        };
                        if b != b'\n' {
                            return Err(RespError::MissingCrlf {
                                what: "simple string",
                            });
                        }
                        pos += 1;
                        true
                    } else {
                        match buf[pos..].iter().position(|&b| b == b'\r' || b == b'\n') {
                            None => return pending(buf.len()),
                            // A simple string or error cannot hold a line feed (RESP spec).
                            Some(i) if buf[pos + i] == b'\n' => {
                                return Err(RespError::Malformed {
                                    what: "simple string",
                                })
                            }
                            Some(i) => {
                                pos += i + 1;
                                self.state = State::Text { cr: true };
                                false
                            }
                        }
                    }
                }
                State::Element => match self.element(buf, pos)? {
                    None => return pending(pos),
                    Some((next, done)) => {
                        pos = next;
                        done
                    }
                },
            };
            if element_done {
                self.state = State::Element;
                if self.finish_element() {
                    let kind = self.kind.take().unwrap_or(FrameKind::Reply);
                    return Ok(Advance {
                        consumed: pos,
                        complete: Some(kind),
                    });
                }
            }
        }
    }

    /// Read one element's header at `pos`. `None`: need more bytes (nothing consumed).
    /// Otherwise the position after the header and whether the element is already complete.
    fn element(&mut self, buf: &[u8], pos: usize) -> Result<Option<(usize, bool)>, RespError> {
        let Some(&ty) = buf.get(pos) else {
            return Ok(None);
        };
        if self.stack.is_empty() && ty != b'|' {
            self.kind = Some(match ty {
                b'>' => FrameKind::Push,
                b'-' | b'!' => FrameKind::Error,
                _ => FrameKind::Reply,
            });
        }
        if ty == b'+' || ty == b'-' {
            self.state = State::Text { cr: false };
            return Ok(Some((pos + 1, false)));
        }
        if !b"$*:_,#(!=%~|>".contains(&ty) {
            return Err(RespError::UnknownType { byte: ty });
        }
        let bulk = matches!(ty, b'$' | b'!' | b'=');
        let Some(cr) = find_line(buf, pos + 1, self.limits.max_line, bulk)? else {
            return Ok(None);
        };
        let text = &buf[pos + 1..cr];
        let next = cr + 2;
        let malformed = |what| Err(RespError::Malformed { what });
        match ty {
            b':' if parse_i64(text).is_none() => return malformed("integer"),
            b',' if parse_double(text).is_none() => return malformed("double"),
            b'#' if text != b"t" && text != b"f" => return malformed("boolean"),
            b'_' if !text.is_empty() => return malformed("null"),
            b'(' if !is_big_number(text) => return malformed("big number"),
            b':' | b',' | b'#' | b'_' | b'(' => return Ok(Some((next, true))),
            _ => {}
        }
        if text == b"?" {
            return Err(RespError::Streamed);
        }
        if bulk {
            let len = parse_len(text, "bulk string")?;
            if len == -1 && ty != b'$' {
                return Err(RespError::InvalidLength {
                    what: "bulk string",
                    text: "-1".into(),
                });
            }
            if len == -1 {
                return Ok(Some((next, true)));
            }
            if len as u64 > self.limits.max_bulk_len {
                return Err(RespError::BulkTooLong {
                    len,
                    max: self.limits.max_bulk_len,
                    unauthenticated: self.limits.unauthenticated,
                });
            }
            if ty == b'=' && len < 4 {
                return malformed("verbatim string");
            }
            self.state = State::Body { left: len as u64 };
            return Ok(Some((next, false)));
        }
        // An aggregate: * ~ > % |
        let count = parse_len(text, "aggregate")?;
        if count == -1 && ty != b'*' {
            return Err(RespError::InvalidLength {
                what: "aggregate",
                text: "-1".into(),
            });
        }
        if count > 0 && count as u64 > self.limits.max_elements {
            return Err(RespError::TooManyElements {
                what: "aggregate",
                count,
                max: self.limits.max_elements,
                unauthenticated: self.limits.unauthenticated,
            });
        }
        let elements = if matches!(ty, b'%' | b'|') {
            (count.max(0) as u64) * 2
        } else {
            count.max(0) as u64
        };
        if elements == 0 {
            // An empty attribute describes the next value and is not one itself.
            return Ok(Some((next, ty != b'|')));
        }
        if self.stack.len() >= self.limits.max_depth.min(super::MAX_DEPTH_CAP) {
            return Err(RespError::TooDeep {
                max: self.limits.max_depth.min(super::MAX_DEPTH_CAP),
            });
        }
        self.stack.push(Level {
            left: elements,
            attribute: ty == b'|',
        });
        Ok(Some((next, false)))
    }

    /// One element finished: count it against its parents. True when that ends the frame.
    fn finish_element(&mut self) -> bool {
        loop {
            let Some(level) = self.stack.last_mut() else {
                return true;
            };
            level.left -= 1;
            if level.left > 0 {
                return false;
            }
            let attribute = level.attribute;
            self.stack.pop();
            if attribute {
                // The attribute is complete; the value it describes is still to come.
                return false;
            }
        }
    }
}
