//! Reading flow logs as users have them: files, directories of files (as an S3 sync leaves
//! them, `year/month/day/...`), gzip or plain (told apart by the gzip magic bytes, not the
//! name), and `-` for standard input. Bad lines are counted and the first few kept with their
//! file and line number; they end the read only when the caller asks for strictness.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sumun_flows::{Flow, ReadError, Reader};

/// How many bad lines are kept, with their messages, for the report; the rest are only counted.
pub const KEEP_BAD: usize = 20;

/// One line that is not a flow record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// What a read saw, besides the flows themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub files: usize,
    /// Records read, NODATA and SKIPDATA ones included.
    pub records: u64,
    /// Records whose log-status is NODATA or SKIPDATA (no traffic fields).
    pub no_data: u64,
    pub bad_lines: u64,
    /// The first [`KEEP_BAD`] bad lines.
    pub first_bad: Vec<BadLine>,
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A bad line in strict mode.
    #[error("{0}")]
    Bad(BadLine),
    #[error("no flow log files found in {0}")]
    Empty(String),
}

impl InputError {
    /// Whether the problem is with what the user gave (a path, a line), not the machine.
    pub fn is_input(&self) -> bool {
        match self {
            InputError::Open { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ),
            InputError::Read { source, .. } => source.kind() == io::ErrorKind::InvalidData,
            InputError::Bad(_) | InputError::Empty(_) => true,
        }
    }
}

/// The files `paths` name: files as given, directories walked (sorted, hidden entries skipped),
/// `-` kept as standard input.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            out.push(path.clone());
            continue;
        }
        let meta = std::fs::metadata(path).map_err(|source| InputError::Open {
            path: path.display().to_string(),
            source,
        })?;
        if meta.is_dir() {
            let before = out.len();
            walk(path, &mut out)?;
            if out.len() == before {
                return Err(InputError::Empty(path.display().to_string()));
            }
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let open_err = |source| InputError::Open {
        path: dir.display().to_string(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(open_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(open_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(|source| InputError::Open {
            path: path.display().to_string(),
            source,
        })?;
        if meta.is_dir() {
            walk(&path, out)?;
        } else if meta.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Opens one file (or stdin for `-`), gunzipping it when it starts with the gzip magic bytes.
/// Concatenated gzip members (what `cat a.gz b.gz` makes) are all read.
pub fn open(path: &Path) -> Result<Box<dyn BufRead>, InputError> {
    open_counted(path, None)
}

/// Adds the bytes read through it to a counter (for a progress bar).
struct Counted<R> {
    inner: R,
    count: &'static AtomicU64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// [`open`], adding the bytes read from the file (compressed bytes for gzip) to `progress`.
pub fn open_counted(
    path: &Path,
    progress: Option<&'static AtomicU64>,
) -> Result<Box<dyn BufRead>, InputError> {
    let raw: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path).map_err(|source| InputError::Open {
            path: path.display().to_string(),
            source,
        })?)
    };
    let raw: Box<dyn Read> = match progress {
        Some(count) => Box::new(Counted { inner: raw, count }),
        None => raw,
    };
    let mut buffered = BufReader::with_capacity(256 * 1024, raw);
    let head = buffered.fill_buf().map_err(|source| InputError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::bufread::MultiGzDecoder::new(buffered);
        Ok(Box::new(BufReader::with_capacity(256 * 1024, gz)))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Reads every flow of `paths` in order, calling `each` for each one. Bad lines are counted
/// (and the first few kept); with `strict` the first one ends the read with its error.
pub fn read_flows(
    paths: &[PathBuf],
    strict: bool,
    each: impl FnMut(&Flow),
) -> Result<ReadStats, InputError> {
    read_flows_counted(&expand(paths)?, strict, None, each)
}

/// [`read_flows`] over files already expanded ([`expand`]), adding the bytes read to
/// `progress`.
pub fn read_flows_counted(
    files: &[PathBuf],
    strict: bool,
    progress: Option<&'static AtomicU64>,
    mut each: impl FnMut(&Flow),
) -> Result<ReadStats, InputError> {
    let mut stats = ReadStats {
        files: files.len(),
        ..ReadStats::default()
    };
    for path in files {
        let name = path.display().to_string();
        let mut reader = Reader::new(open_counted(path, progress)?);
        let mut flow = Flow::default();
        while let Some(item) = reader.read_into(&mut flow) {
            match item {
                Ok(()) => {
                    stats.records += 1;
                    if flow.record.log_status != sumun_flows::LogStatus::Ok {
                        stats.no_data += 1;
                    }
                    each(&flow);
                }
                Err(ReadError::Io(source)) => {
                    return Err(InputError::Read { path: name, source });
                }
                Err(err) => {
                    let bad = BadLine {
                        file: name.clone(),
                        line: line_of(&err),
                        message: message_of(&err),
                    };
                    if strict {
                        return Err(InputError::Bad(bad));
                    }
                    stats.bad_lines += 1;
                    if stats.first_bad.len() < KEEP_BAD {
                        stats.first_bad.push(bad);
                    }
                }
            }
        }
    }
    Ok(stats)
}

fn line_of(err: &ReadError) -> usize {
    match err {
        ReadError::Parse { line, .. }
        | ReadError::Header { line, .. }
        | ReadError::NotUtf8 { line }
        | ReadError::TooLong { line } => *line,
        ReadError::Io(_) => 0,
    }
}

/// The error without its `line N: ` prefix, which [`BadLine`] prints itself.
fn message_of(err: &ReadError) -> String {
    match err {
        ReadError::Parse { source, .. } => source.to_string(),
        ReadError::Header { source, .. } => source.to_string(),
        ReadError::NotUtf8 { .. } => "not valid UTF-8".to_string(),
        ReadError::TooLong { .. } => format!("longer than {} bytes", sumun_flows::MAX_LINE),
        ReadError::Io(e) => e.to_string(),
    }
}
