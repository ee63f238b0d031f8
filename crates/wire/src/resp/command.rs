//! Client commands cut out of a pipelined byte stream, without copying.

use std::ops::Range;

use super::line::{find_line, parse_i64};
use super::{Limits, RespError};

/// How a command was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// An array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`): what every client library
    /// sends. Its arguments are ranges of the caller's buffer.
    Multibulk,
    /// A line of words (`GET k\r\n`), as typed into telnet; quotes and escapes are undone the
    /// way Redis does, so its arguments are copies.
    Inline,
}

/// One whole command at the start of the buffer given to [`Splitter::split`].
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    kind: CommandKind,
    len: usize,
    args: &'a [Range<usize>],
    /// What `args` index: the caller's buffer (multibulk) or the splitter's copy (inline).
    base: &'a [u8],
}

impl<'a> Command<'a> {
    pub fn kind(&self) -> CommandKind {
        self.kind
    }

    /// How many bytes of the buffer the command takes: forward `buf[..len()]` unchanged, then
    /// split `buf[len()..]` for the next command.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The number of arguments, the command name included.
    pub fn argc(&self) -> usize {
        self.args.len()
    }

    /// No arguments at all (`*0\r\n`, `*-1\r\n` or a blank inline line): Redis ignores it and
    /// sends no reply, so a proxy should drop its bytes rather than wait for an answer.
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// Argument `i` (0 is the command name).
    pub fn arg(&self, i: usize) -> Option<&'a [u8]> {
        let r = self.args.get(i)?;
        self.base.get(r.clone())
    }

    /// All arguments, the command name first.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let base = self.base;
        self.args
            .iter()
            .map(move |r| base.get(r.clone()).unwrap_or_default())
    }

    /// The command name as sent (any case).
    pub fn name(&self) -> Option<&'a [u8]> {
        self.arg(0)
    }

    /// For a multibulk command, where each argument's bytes are in the buffer given to
    /// [`Splitter::split`] (an inline command's arguments are unquoted copies: `None`).
    pub fn arg_ranges(&self) -> Option<&'a [Range<usize>]> {
        match self.kind {
            CommandKind::Multibulk => Some(self.args),
            CommandKind::Inline => None,
        }
    }
}

/// Where an unfinished command was left, so bytes are not parsed twice when more arrive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Partial {
    /// Multibulk: the argument count, once its header was read.
    expected: Option<usize>,
    /// Multibulk: where the next argument starts. Inline: how far no `\n` was found.
    pos: usize,
    /// Multibulk: where the incomplete argument's body ends (CRLF included), once its length
    /// was read.
    body_end: Option<usize>,
    /// The length of the buffer last given.
    seen: usize,
}

/// What is known of a multibulk command that is not complete yet: enough to refuse it early
/// (an unknown or forbidden command name, a huge claimed size) or account for its memory,
/// before its bytes are all there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    /// The number of arguments announced, the name included.
    pub argc: usize,
    /// The arguments complete so far, as ranges of the buffer last given to
    /// [`Splitter::split`] (the first is the command name once it arrived).
    pub args: &'a [Range<usize>],
    /// At least this many more bytes are needed before the command can be complete.
    pub needed_at_least: usize,
}

/// Cuts a client's byte stream into whole commands the way Redis's own reader does (same
/// inline/multibulk choice, same quoting rules, same limits and error replies), so what the
/// proxy sees as one command is exactly what the server will see as one.
///
/// It keeps the ranges of the command being read (reused between commands: no allocation per
/// command once warm) and, for an inline command, its unquoted copy.
#[derive(Debug, Clone, Default)]
pub struct Splitter {
    limits: Limits,
    args: Vec<Range<usize>>,
    inline: Vec<u8>,
    partial: Partial,
}

impl Splitter {
    pub fn new(limits: Limits) -> Splitter {
        Splitter {
            limits,
            ..Splitter::default()
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Change the limits (after `AUTH`, from [`Limits::unauthenticated`] to the full ones).
    /// Takes effect from the next command.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// After [`Splitter::split`] returned `Ok(None)` for a multibulk command whose header was
    /// read: how far it got. `None` for an inline command or before the header.
    pub fn progress(&self) -> Option<Progress<'_>> {
        let argc = self.partial.expected?;
        let needed_at_least = match self.partial.body_end {
            Some(end) => end.saturating_sub(self.partial.seen).max(1),
            None => 1,
        };
        Some(Progress {
            argc,
            args: &self.args,
            needed_at_least,
        })
    }

    /// Forget a command in progress.
    pub fn reset(&mut self) {
        self.args.clear();
        self.partial = Partial::default();
    }

    /// The command at the start of `buf`, if it is all there. `Ok(None)`: more bytes are
    /// needed; call again with the same bytes and more appended (the splitter remembers how far
    /// it got). An error is what Redis answers with `-ERR Protocol error: ...` (see
    /// [`RespError::reply`]) before closing the connection.
    ///
    /// To walk a pipeline: `while let Some(c) = s.split(&buf[at..])? { ...; at += c.len() }`.
    pub fn split<'s>(&'s mut self, buf: &'s [u8]) -> Result<Option<Command<'s>>, RespError> {
        if self.partial.pos > buf.len() {
            // The buffer shrank under us (a caller bug): start this command over.
            self.reset();
        }
        self.partial.seen = buf.len();
        self.partial.body_end = None;
        let result = match buf.first() {
            None => Ok(None),
            Some(b'*') => self.multibulk(buf),
            Some(_) => self.inline_command(buf),
        };
        match result {
            Ok(Some((kind, len))) => {
                self.partial = Partial::default();
                let base = match kind {
                    CommandKind::Multibulk => buf,
                    CommandKind::Inline => &self.inline[..],
                };
                Ok(Some(Command {
                    kind,
                    len,
                    args: &self.args,
                    base,
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.reset();
                Err(e)
            }
        }
    }

    fn multibulk(&mut self, buf: &[u8]) -> Result<Option<(CommandKind, usize)>, RespError> {
        let limits = self.limits;
        let expected = match self.partial.expected {
            Some(n) => n,
            None => {
                self.args.clear();
                let Some(cr) = find_line(buf, 1, limits.max_line, false)? else {
                    return Ok(None);
                };
                let text = &buf[1..cr];
                let count = parse_i64(text).ok_or_else(|| RespError::InvalidLength {
                    what: "multibulk",
                    text: String::from_utf8_lossy(&text[..text.len().min(32)]).into_owned(),
                })?;
                if count > i64::from(i32::MAX) {
                    // Redis checks this before its unauthenticated limit.
                    return Err(RespError::InvalidLength {
                        what: "multibulk",
                        text: String::from_utf8_lossy(&text[..text.len().min(32)]).into_owned(),
                    });
                }
                if count > 0 && count as u64 > limits.max_elements {
                    return Err(RespError::TooManyElements {
                        what: "multibulk",
                        count,
                        max: limits.max_elements,
                        unauthenticated: limits.unauthenticated,
                    });
                }
                if count <= 0 {
                    // Redis skips an empty (or negative) multibulk without a reply.
                    return Ok(Some((CommandKind::Multibulk, cr + 2)));
                }
                self.partial.expected = Some(count as usize);
                self.partial.pos = cr + 2;
                count as usize
            }
        };
        while self.args.len() < expected {
            let at = self.partial.pos;
            let Some(&first) = buf.get(at) else {
                return Ok(None);
            };
            if first != b'$' {
                return Err(RespError::ExpectedBulk {
                    got: char::from(first),
                });
            }
            let Some(cr) = find_line(buf, at + 1, limits.max_line, true)? else {
                return Ok(None);
            };
            let text = &buf[at + 1..cr];
            let len = match parse_i64(text) {
                Some(n) if n >= 0 => n,
                _ => {
                    return Err(RespError::InvalidLength {
                        what: "bulk string",
                        text: String::from_utf8_lossy(&text[..text.len().min(32)]).into_owned(),
                    })
                }
            };
            if len as u64 > limits.max_bulk_len {
                return Err(RespError::BulkTooLong {
                    len,
                    max: limits.max_bulk_len,
                    unauthenticated: limits.unauthenticated,
                });
            }
            let start = cr + 2;
            let Some(end) = start.checked_add(len as usize) else {
                return Err(RespError::BulkTooLong {
                    len,
                    max: limits.max_bulk_len,
                    unauthenticated: limits.unauthenticated,
                });
            };
            self.partial.body_end = Some(end.saturating_add(2));
            match buf.get(end..end.saturating_add(2)) {
                Some(b"\r\n") => {}
                Some(_) => {
                    return Err(RespError::MissingCrlf {
                        what: "bulk string",
                    })
                }
                None if buf.len() > end => {
                    // One byte after the body: it must at least be the CR.
                    if buf[end] != b'\r' {
                        return Err(RespError::MissingCrlf {
                            what: "bulk string",
                        });
                    }
                    return Ok(None);
                }
                None => return Ok(None),
            }
            self.args.push(start..end);
            self.partial.pos = end + 2;
            self.partial.body_end = None;
        }
        Ok(Some((CommandKind::Multibulk, self.partial.pos)))
    }

    fn inline_command(&mut self, buf: &[u8]) -> Result<Option<(CommandKind, usize)>, RespError> {
        let max = self.limits.max_line;
        let from = self.partial.pos;
        let window_end = buf.len().min(max.saturating_add(2));
        let found = buf
            .get(from..window_end)
            .and_then(|w| w.iter().position(|&b| b == b'\n'))
            .map(|i| from + i);
        let Some(nl) = found else {
            // Redis answers "too big inline request" once 64 KiB arrived without a newline.
            if buf.len() > max.saturating_add(1) {
                return Err(RespError::InlineTooLong { max });
            }
            self.partial.pos = window_end;
            return Ok(None);
        };
        let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        if line_end > max {
            return Err(RespError::InlineTooLong { max });
        }
        self.args.clear();
        self.inline.clear();
        split_args(&buf[..line_end], &mut self.inline, &mut self.args)?;
        Ok(Some((CommandKind::Inline, nl + 1)))
    }
}

/// C's `isspace` in the "C" locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Split an inline line into words as Redis's `sdssplitargs` does: words separated by white
/// space; `"..."` with `\n \r \t \b \a \xHH` and `\<any>` escapes; `'...'` with only `\'`; a
/// closing quote must be followed by white space or the end; a NUL byte ends the line (Redis
/// reads it as a C string). Words go into `out`, their ranges into `ranges`.
pub(crate) fn split_args(
    line: &[u8],
    out: &mut Vec<u8>,
    ranges: &mut Vec<Range<usize>>,
) -> Result<(), RespError> {
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut p = 0usize;
    loop {
        while at(p) != 0 && is_space(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return Ok(());
        }
        let start = out.len();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = at(p);
            let mut done = false;
            if in_double {
                if c == b'\\' && at(p + 1) == b'x' {
                    if let (Some(h), Some(l)) = (hex_value(at(p + 2)), hex_value(at(p + 3))) {
                        out.push(h * 16 + l);
                        p += 3;
                    } else {
                        p += 1;
                        out.push(b'x');
                    }
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    out.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return Err(RespError::UnbalancedQuotes);
                    }
                    done = true;
                } else if c == 0 {
                    return Err(RespError::UnbalancedQuotes);
                } else {
                    out.push(c);
                }
            } else if in_single {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    out.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return Err(RespError::UnbalancedQuotes);
                    }
                    done = true;
                } else if c == 0 {
                    return Err(RespError::UnbalancedQuotes);
                } else {
                    out.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    _ => out.push(c),
                }
            }
            if c != 0 {
                p += 1;
            }
            if done {
                break;
            }
        }
        ranges.push(start..out.len());
    }
}
