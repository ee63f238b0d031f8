//! Inputs and how they are cut into units of work: a plain file into byte ranges (each
//! thread parses whole lines starting in its range), a gzip file or standard input whole, a
//! Parquet file by row group. Also the first look at each file that tells which custom fields
//! it has (its header line or Parquet schema), for `SELECT *`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sumun_flows::{Format, MAX_LINE};
use sumun_flows_tools::input::{self, InputError};

use crate::error::QueryError;
use crate::schema;

/// Plain files are cut into pieces of at least this size.
const MIN_CHUNK: u64 = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Gzip,
    Stdin,
    Parquet,
}

#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    pub kind: Kind,
    pub size: u64,
    /// Plain and gzip files: the format named by a header on the first line, if any.
    pub header: Option<Format>,
    /// Parquet: row groups.
    pub row_groups: usize,
    /// Parquet under Hive-style `year=YYYY/month=MM/day=DD/` directories (as `convert` writes
    /// and AWS delivers): the values of `year`, `month`, `day` and `dt` for every row of the
    /// file, as Athena, Trino and Spark take partition columns from the path.
    pub partition: Option<[Arc<str>; 4]>,
}

impl InputFile {
    pub fn name(&self) -> String {
        self.path.display().to_string()
    }
}

#[derive(Debug, Clone)]
pub enum Work {
    /// Lines starting in `start..end` of a plain file (`end` = `u64::MAX`: to the end).
    Range {
        file: usize,
        start: u64,
        end: u64,
    },
    /// A whole gzip file or standard input.
    Stream {
        file: usize,
    },
    RowGroup {
        file: usize,
        group: usize,
    },
}

impl Work {
    pub fn file(&self) -> usize {
        match self {
            Work::Range { file, .. } | Work::Stream { file } | Work::RowGroup { file, .. } => *file,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Inputs {
    pub files: Vec<InputFile>,
    /// Columns beyond the default ones that some input has, in table order.
    pub extras: Vec<usize>,
    pub total_bytes: u64,
}

fn open_err(path: &Path, source: io::Error) -> QueryError {
    QueryError::Input(InputError::Open {
        path: path.display().to_string(),
        source,
    })
}

fn read_err(path: &Path, source: io::Error) -> QueryError {
    QueryError::Input(InputError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl Inputs {
    pub fn discover(paths: &[PathBuf]) -> Result<Inputs, QueryError> {
        let expanded = input::expand(paths)?;
        let mut files = Vec::new();
        let mut extras = Vec::new();
        let mut total_bytes = 0;
        for path in expanded {
            if path.as_os_str() == "-" {
                files.push(InputFile {
                    path,
                    kind: Kind::Stdin,
                    size: 0,
                    header: None,
                    row_groups: 0,
                    partition: None,
                });
                continue;
            }
            let mut f = File::open(&path).map_err(|e| open_err(&path, e))?;
            let size = f.metadata().map_err(|e| open_err(&path, e))?.len();
            let mut magic = [0u8; 4];
            let got = read_up_to(&mut f, &mut magic).map_err(|e| read_err(&path, e))?;
            let magic = &magic[..got];
            let (kind, header, row_groups) = if magic == b"PAR1" {
                let (names, groups) = crate::parquet_io::describe(&path)?;
                for n in names {
                    if let Some(c) = schema::lookup(&n) {
                        if !extras.contains(&c) {
                            extras.push(c);
                        }
                    }
                }
                (Kind::Parquet, None, groups)
            } else {
                let kind = if magic.starts_with(&[0x1f, 0x8b]) {
                    Kind::Gzip
                } else {
                    Kind::Plain
                };
                let header = first_line_header(&path)?;
                if let Some(h) = &header {
                    for field in h.fields() {
                        if let Some(c) = schema::column_of_field(field) {
                            if !extras.contains(&c) {
                                extras.push(c);
                            }
                        }
                    }
                }
                (kind, header, 0)
            };
            total_bytes += size;
            let partition = if kind == Kind::Parquet {
                hive_partition(&path)
            } else {
                None
            };
            files.push(InputFile {
                path,
                kind,
                size,
                header,
                row_groups,
                partition,
            });
        }
        extras.retain(|c| *c >= schema::DEFAULT_COLUMNS && *c < schema::STORED);
        extras.sort_unstable();
        Ok(Inputs {
            files,
            extras,
            total_bytes,
        })
    }

    /// The units of work, in input order. Plain files are cut into about `pieces` ranges each
    /// (fewer for small files); `split` false keeps them whole.
    pub fn work(&self, pieces: usize, split: &dyn Fn(usize) -> bool) -> Vec<Work> {
        let mut out = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            match f.kind {
                Kind::Plain if split(i) && f.size > MIN_CHUNK => {
                    let n = (f.size / MIN_CHUNK).clamp(1, pieces.max(1) as u64);
                    let step = f.size.div_ceil(n);
                    let mut start = 0;
                    while start < f.size {
                        let end = (start + step).min(f.size);
                        out.push(Work::Range {
                            file: i,
                            start,
                            end: if end == f.size { u64::MAX } else { end },
                        });
                        start = end;
                    }
                }
                Kind::Plain => out.push(Work::Range {
                    file: i,
                    start: 0,
                    end: u64::MAX,
                }),
                Kind::Gzip | Kind::Stdin => out.push(Work::Stream { file: i }),
                Kind::Parquet => {
                    for g in 0..f.row_groups {
                        out.push(Work::RowGroup { file: i, group: g });
                    }
                }
            }
        }
        out
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The format a header on the first line of a (plain or gzip) file names.
fn first_line_header(path: &Path) -> Result<Option<Format>, QueryError> {
    let mut r = input::open(path)?;
    let mut line = Vec::new();
    r.by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .map_err(|e| read_err(path, e))?;
    let Ok(text) = std::str::from_utf8(&line) else {
        return Ok(None);
    };
    let first = text.trim_ascii_start().as_bytes().first().copied();
    if matches!(first, Some(b'0'..=b'9') | None) || !Format::is_header(text) {
        return Ok(None);
    }
    Ok(Format::from_header(text).ok())
}

/// Lines starting in a byte range of a file, as a `BufRead`: the line that straddles the start
/// belongs to the range before; the one that straddles the end is read to its end.
pub struct Range {
    inner: BufReader<File>,
    /// Bytes left before the end of the range.
    remaining: u64,
    /// The last byte handed out was a newline (or nothing was handed out yet at offset 0).
    last_nl: bool,
    done: bool,
    /// Where the first whole line starts.
    pub first_line_at: u64,
    progress: Option<&'static AtomicU64>,
    pending: u64,
}

impl Range {
    pub fn open(
        path: &Path,
        start: u64,
        end: u64,
        progress: Option<&'static AtomicU64>,
    ) -> io::Result<Range> {
        let mut file = File::open(path)?;
        let mut first_line_at = 0;
        if start > 0 {
            file.seek(SeekFrom::Start(start - 1))?;
        }
        let mut inner = BufReader::with_capacity(1 << 20, file);
        if start > 0 {
            // Skip the rest of the line that began before `start` (just its newline when a
            // line starts exactly at `start`).
            let mut skipped = 0u64;
            loop {
                let buf = inner.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        inner.consume(i + 1);
                        skipped += i as u64 + 1;
                        break;
                    }
                    None => {
                        let n = buf.len();
                        inner.consume(n);
                        skipped += n as u64;
                    }
                }
            }
            first_line_at = start - 1 + skipped;
        }
        let remaining = end.saturating_sub(first_line_at);
        Ok(Range {
            inner,
            remaining,
            last_nl: true,
            done: remaining == 0,
            first_line_at,
            progress,
            pending: 0,
        })
    }

    fn flush_progress(&mut self) {
        if let Some(p) = self.progress {
            p.fetch_add(self.pending, Ordering::Relaxed);
        }
        self.pending = 0;
    }
}

impl Drop for Range {
    fn drop(&mut self) {
        self.flush_progress();
    }
}

impl Read for Range {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Range {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.done {
            return Ok(&[]);
        }
        let remaining = self.remaining;
        let last_nl = self.last_nl;
        let buf = self.inner.fill_buf()?;
        if remaining > 0 {
            let n = buf
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            return Ok(&buf[..n]);
        }
        if last_nl {
            return Ok(&[]);
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => Ok(&buf[..=i]),
            None => Ok(buf),
        }
    }

    fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let last = self.inner.buffer().get(n - 1).copied();
        self.inner.consume(n);
        self.last_nl = last == Some(b'\n');
        if self.remaining > 0 {
            self.remaining = self.remaining.saturating_sub(n as u64);
        } else if self.last_nl {
            self.done = true;
        }
        self.pending += n as u64;
        if self.pending >= 4 << 20 {
            self.flush_progress();
        }
    }
}

/// Counts bytes read from a file (a gzip file's compressed bytes) for the progress bar.
pub struct Counting<R> {
    pub inner: R,
    pub progress: Option<&'static AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = self.progress {
            p.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// Opens a whole gzip file or standard input for reading lines.
pub fn open_stream(
    file: &InputFile,
    progress: Option<&'static AtomicU64>,
) -> Result<Box<dyn BufRead>, QueryError> {
    match file.kind {
        Kind::Gzip => {
            let f = File::open(&file.path).map_err(|e| open_err(&file.path, e))?;
            let counted = BufReader::with_capacity(256 * 1024, Counting { inner: f, progress });
            let gz = flate2::bufread::MultiGzDecoder::new(counted);
            Ok(Box::new(BufReader::with_capacity(1 << 20, gz)))
        }
        _ => Ok(input::open(&file.path)?),
    }
}

/// Newlines before `offset` in a file: the line number offset of a range's first line.
pub fn lines_before(path: &Path, offset: u64) -> io::Result<u64> {
    let f = File::open(path)?;
    let mut r = BufReader::with_capacity(1 << 20, f.take(offset));
    let mut n = 0;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(n);
        }
        n += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let len = buf.len();
        r.consume(len);
    }
}

/// `year`, `month`, `day` and `dt` from the `year=YYYY/month=MM/day=DD` directories a file is
/// in (the nearest of each; all three needed, digits only).
pub fn hive_partition(path: &Path) -> Option<[Arc<str>; 4]> {
    let (mut y, mut m, mut d) = (None, None, None);
    for c in path.parent()?.components().rev() {
        let c = c.as_os_str().to_str()?;
        let Some((key, value)) = c.split_once('=') else {
            continue;
        };
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let slot = match key {
            "year" => &mut y,
            "month" => &mut m,
            "day" => &mut d,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }
    let (y, m, d) = (y?, m?, d?);
    Some([
        Arc::from(y),
        Arc::from(m),
        Arc::from(d),
        Arc::from(format!("{y}/{m}/{d}")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn ranges_split_lines_exactly_once() {
        let dir =
            std::env::temp_dir().join(format!("sumun-flows-sql-range-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lines.txt");
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&"x".repeat(i % 17));
            text.push_str(&format!("{i}\n"));
        }
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let size = text.len() as u64;
        for pieces in [1u64, 2, 3, 7, 50, 199] {
            let step = size.div_ceil(pieces);
            let mut got = String::new();
            let mut start = 0;
            while start < size {
                let end = (start + step).min(size);
                let mut r = Range::open(&path, start, end, None).unwrap();
                r.read_to_string(&mut got).unwrap();
                start = end;
            }
            assert_eq!(got, text, "{pieces} pieces");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
