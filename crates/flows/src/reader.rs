//! [`Reader`]: flow records from a stream of lines, such as a Sumun flow log or AWS flow log
//! files concatenated (`zcat *.log.gz`). Header lines, wherever they appear, switch the format
//! for the lines after them, so files with different custom formats can be read in one pass.
//! A bad line is reported with its number and reading goes on; only an I/O error ends it.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};

use crate::format::{Format, FormatError};
use crate::record::{FlowParseError, FlowRecord};

/// One parsed line: the default fields plus, for custom formats, the others by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub record: FlowRecord,
    /// Fields outside the default format (`vpc-id`, `tcp-flags`, `pkt-srcaddr`, ...) as
    /// written, `-` included. Kept as text so a query layer can type them as it needs.
    pub extra: BTreeMap<String, String>,
}

impl Default for Flow {
    /// A blank flow, to be filled by [`Reader::read_into`].
    fn default() -> Self {
        Flow {
            record: FlowRecord::blank(),
            extra: BTreeMap::new(),
        }
    }
}

impl Flow {
    /// The text of a field outside the default format, `None` if the line's format lacks it.
    pub fn extra(&self, name: &str) -> Option<&str> {
        self.extra.get(name).map(String::as_str)
    }
}

/// Lines longer than this are reported and skipped rather than buffered: real records are a
/// few hundred bytes even with every AWS field, and a file without newlines must not make the
/// reader hold all of it.
pub const MAX_LINE: usize = 64 * 1024;

/// Why a line could not be read. Parse problems carry the 1-based line number.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("line {line}: {source}")]
    Parse {
        line: usize,
        #[source]
        source: FlowParseError,
    },
    #[error("line {line}: {source}")]
    Header {
        line: usize,
        #[source]
        source: FormatError,
    },
    #[error("line {line}: not valid UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}: longer than {MAX_LINE} bytes")]
    TooLong { line: usize },
    #[error("cannot read flow log")]
    Io(#[from] std::io::Error),
}

/// Reads [`Flow`]s from lines, skipping blank lines and following header lines.
pub struct Reader<R> {
    input: R,
    format: Format,
    keep_extra: bool,
    line: usize,
    buf: Vec<u8>,
    failed: bool,
    /// A header line switched the format since the last record: extra fields kept in a reused
    /// [`Flow`] may belong to the old one.
    switched: bool,
}

impl<R: BufRead> Reader<R> {
    /// Starts with the default format, as the gateway writes it.
    pub fn new(input: R) -> Self {
        Reader::with_format(input, Format::default_v2())
    }

    /// Starts with a known format, for header-less custom-format logs (e.g. CloudWatch Logs
    /// exports). Header lines still switch it.
    pub fn with_format(input: R, format: Format) -> Self {
        Reader {
            input,
            format,
            keep_extra: true,
            line: 0,
            buf: Vec::new(),
            failed: false,
            switched: false,
        }
    }

    /// Drops fields outside the default format instead of keeping them in [`Flow::extra`],
    /// saving an allocation per field when only the default fields matter.
    pub fn ignore_extra_fields(mut self) -> Self {
        self.keep_extra = false;
        self
    }

    /// The format of the lines being read now.
    pub fn format(&self) -> &Format {
        &self.format
    }

    /// Reads the next line into `buf`; `Ok(false)` at the end, `Ok(true)` with `buf` cleared if
    /// the line was too long (and has been skipped).
    fn next_line(&mut self) -> std::io::Result<Option<bool>> {
        self.buf.clear();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
        let n = self
            .input
            .by_ref()
            .take(limit)
            .read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        if self.buf.len() <= MAX_LINE || self.buf.ends_with(b"\n") {
            return Ok(Some(false));
        }
        // Discard the rest of the long line without keeping it.
        self.buf.clear();
        loop {
            let chunk = self.input.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.input.consume(i + 1);
                    break;
                }
                None => {
                    let len = chunk.len();
                    self.input.consume(len);
                }
            }
        }
        Ok(Some(true))
    }
}

impl<R: BufRead> Reader<R> {
    /// Reads the next record into `flow`, reusing its buffers: the fast way through a large log
    /// (the iterator allocates a new [`Flow`] per record). `None` at the end; after an error
    /// `flow` must not be used until a later call returns `Some(Ok(()))`. Pass the same `flow`
    /// each time.
    pub fn read_into(&mut self, flow: &mut Flow) -> Option<Result<(), ReadError>> {
        if self.failed {
            return None;
        }
        loop {
            let too_long = match self.next_line() {
                Ok(None) => return None,
                Ok(Some(too_long)) => too_long,
                Err(e) => {
                    // An I/O error is not tied to one line; retrying would likely repeat it.
                    self.failed = true;
                    return Some(Err(ReadError::Io(e)));
                }
            };
            self.line += 1;
            let line = self.line;
            if too_long {
                return Some(Err(ReadError::TooLong { line }));
            }
            let Ok(text) = std::str::from_utf8(&self.buf) else {
                return Some(Err(ReadError::NotUtf8 { line }));
            };
            if text.trim_ascii().is_empty() {
                continue;
            }
            // Records start with a digit or '-' (version); only then is the header check
            // skipped, as header names start with a letter.
            let first = text.trim_ascii_start().as_bytes().first().copied();
            if !matches!(first, Some(b'0'..=b'9')) && Format::is_header(text) {
                match Format::from_header(text) {
                    Ok(format) => {
                        self.format = format;
                        self.switched = true;
                        continue;
                    }
                    Err(source) => return Some(Err(ReadError::Header { line, source })),
                }
            }
            if std::mem::take(&mut self.switched) {
                flow.extra.clear();
            }
            return Some(
                self.format
                    .parse_into(text, self.keep_extra, flow)
                    .map_err(|source| ReadError::Parse { line, source }),
            );
        }
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Flow, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut flow = Flow::default();
        let result = self.read_into(&mut flow)?;
        Some(result.map(|()| flow))
    }
}
