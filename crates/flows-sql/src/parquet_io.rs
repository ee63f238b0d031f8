//! Parquet, with the `parquet` crate's own column readers and writers (no Arrow): the scan of
//! one row group into rows of column values, and the writer `convert` uses. Column names and
//! physical types follow AWS's Parquet flow logs (`srcport` INT32, `bytes` INT64, addresses as
//! strings...), so files AWS writes read as well as ours.
//!
//! The `parquet` crate decodes untrusted files; a panic inside it is caught and reported as a
//! bad file rather than ending the process.

use std::fs::File;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::column::reader::ColumnReader;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, FileReader};
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::bind::Plan;
use crate::error::{EvalError, QueryError};
use crate::scan::InputFile;
use crate::schema::{day_parts, Source, COLUMNS, STORED};
use crate::value::{Type, Value};

fn perr(path: &Path, e: impl std::fmt::Display) -> QueryError {
    QueryError::Parquet {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, QueryError>) -> Result<T, QueryError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(perr(path, "malformed Parquet file")),
    }
}

/// Column names and the number of row groups of a Parquet file.
pub fn describe(path: &Path) -> Result<(Vec<String>, usize), QueryError> {
    let f = File::open(path).map_err(|e| perr(path, e))?;
    describe_from(f, path)
}

fn describe_from<R: ChunkReader + 'static>(
    input: R,
    path: &Path,
) -> Result<(Vec<String>, usize), QueryError> {
    guarded(path, || {
        let r = SerializedFileReader::new(input).map_err(|e| perr(path, e))?;
        let md = r.metadata();
        let names = md
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        Ok((names, md.num_row_groups()))
    })
}

/// Physical type of a stored column.
fn physical(c: usize) -> &'static str {
    match COLUMNS[c].name {
        "packets" | "bytes" | "start" | "end" => "INT64",
        _ if COLUMNS[c].ty == Type::Int => "INT32",
        _ => "BYTE_ARRAY",
    }
}

/// Rows decoded at a time: what a scan holds in memory per column, whatever row count a file
/// claims.
const BATCH: usize = 8 * 1024;

/// Reads the columns `plan` needs from one row group and calls `each` with every row (a slice
/// indexed by column, as the text scan makes). `each` returns false to stop.
pub fn scan_row_group(
    file: &InputFile,
    group: usize,
    plan: &Plan,
    each: &mut dyn FnMut(&[Value]) -> Result<bool, EvalError>,
) -> Result<(), QueryError> {
    let f = File::open(&file.path).map_err(|e| perr(&file.path, e))?;
    scan_group_from(f, &file.path, group, file.partition.as_ref(), plan, each)
}

/// Every row group of a Parquet file held in memory, as [`scan_row_group`] reads one (for the
/// fuzz target: the same decoding, no file). Returns the rows read.
pub fn scan_bytes(
    data: &[u8],
    plan: &Plan,
    each: &mut dyn FnMut(&[Value]) -> Result<bool, EvalError>,
) -> Result<u64, QueryError> {
    let path = Path::new("<memory>");
    let data = bytes::Bytes::copy_from_slice(data);
    let (_, groups) = describe_from(data.clone(), path)?;
    let mut rows = 0;
    for g in 0..groups {
        scan_group_from(data.clone(), path, g, None, plan, &mut |vals| {
            rows += 1;
            each(vals)
        })?;
    }
    Ok(rows)
}

/// One column being read: which of ours it fills, its reader and buffer.
struct Stream {
    /// Index in [`COLUMNS`]; `None` for a column read only to count rows.
    col: Option<usize>,
    reader: ColumnReader,
    max_def: i16,
    values: Vec<Value>,
}

/// `partition`: the `year`, `month`, `day`, `dt` of every row (from the file's directories),
/// else they are derived from each row's `start`.
fn scan_group_from<R: ChunkReader + 'static>(
    input: R,
    path: &Path,
    group: usize,
    partition: Option<&[Arc<str>; 4]>,
    plan: &Plan,
    each: &mut dyn FnMut(&[Value]) -> Result<bool, EvalError>,
) -> Result<(), QueryError> {
    let needed = plan.scan_cols();
    // Stored columns to read: the derived ones come from `start`.
    let mut stored: Vec<usize> = Vec::new();
    for &c in &needed {
        if c >= STORED && partition.is_some() {
            continue;
        }
        let s = if c < STORED { c } else { 10 };
        if !stored.contains(&s) {
            stored.push(s);
        }
    }
    let len = input.len();
    let r = guarded(path, || {
        SerializedFileReader::new(input).map_err(|e| perr(path, e))
    })?;
    check_chunks(&r, group, len).map_err(|m| perr(path, m))?;
    let (declared, mut streams) = guarded(path, || {
        let rg = r.get_row_group(group).map_err(|e| perr(path, e))?;
        let declared = u64::try_from(rg.metadata().num_rows())
            .map_err(|_| perr(path, "negative row count"))?;
        let names: Vec<String> = rg
            .metadata()
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.name().to_ascii_lowercase())
            .collect();
        let mut streams = Vec::new();
        let open = |i: usize, col: Option<usize>| -> Result<Stream, QueryError> {
            Ok(Stream {
                col,
                reader: rg.get_column_reader(i).map_err(|e| perr(path, e))?,
                max_def: rg.metadata().column(i).column_descr().max_def_level(),
                values: Vec::new(),
            })
        };
        for &c in &stored {
            if let Some(i) = names.iter().position(|n| n == COLUMNS[c].name) {
                streams.push(open(i, Some(c))?);
            }
        }
        // Rows are counted by decoding a column, not taken from the row count the file
        // claims: when the query reads none of its columns, the first one is read for that.
        if streams.is_empty() && !names.is_empty() {
            streams.push(open(0, None)?);
        }
        Ok((declared, streams))
    })?;
    if streams.is_empty() {
        if declared > 0 {
            return Err(perr(path, format!("{declared} rows but no columns")));
        }
        return Ok(());
    }

    let derived: Vec<usize> = needed.iter().copied().filter(|c| *c >= STORED).collect();
    let start_at = streams.iter().position(|s| s.col == Some(10));
    let mut vals = vec![Value::Null; COLUMNS.len()];
    let mut day_cache: Option<(i64, [Arc<str>; 4])> = None;
    let mut total: u64 = 0;
    if let Some(p) = partition {
        for &c in &derived {
            vals[c] = Value::Str(p[part_index(c)].clone());
        }
    }
    let derived = if partition.is_some() {
        Vec::new()
    } else {
        derived
    };
    loop {
        let mut n = None;
        for s in &mut streams {
            let got = guarded(path, || read_batch(s).map_err(|e| perr(path, e)))?;
            match n {
                None => n = Some(got),
                Some(m) if m != got => {
                    return Err(perr(
                        path,
                        format!("columns of row group {group} have different numbers of values"),
                    ))
                }
                Some(_) => {}
            }
        }
        let n = n.unwrap_or(0);
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > declared {
            return Err(perr(
                path,
                format!("row group {group} holds more values than its {declared} rows"),
            ));
        }
        for r in 0..n {
            for s in &streams {
                if let (Some(c), Some(v)) = (s.col, s.values.get(r)) {
                    vals[c] = v.clone();
                }
            }
            if !derived.is_empty() {
                let start = start_at
                    .and_then(|i| streams[i].values.get(r))
                    .and_then(|v| match v {
                        Value::Int(n) if *n >= 0 => Some(*n),
                        _ => None,
                    });
                for &c in &derived {
                    vals[c] = match start {
                        None => Value::Null,
                        Some(s) => {
                            let day = s / 86_400;
                            if day_cache.as_ref().is_none_or(|(d, _)| *d != day) {
                                day_cache = Some((day, day_parts(day)));
                            }
                            day_cache
                                .as_ref()
                                .map_or(Value::Null, |(_, p)| Value::Str(p[part_index(c)].clone()))
                        }
                    };
                }
            }
            if !each(&vals)? {
                return Ok(());
            }
        }
    }
    if total != declared {
        return Err(perr(
            path,
            format!("row group {group} holds {total} rows, not the {declared} it declares"),
        ));
    }
    Ok(())
}

/// Where column `c` (year, month, day or dt) is in a partition's values.
fn part_index(c: usize) -> usize {
    match COLUMNS[c].source {
        Source::Year => 0,
        Source::Month => 1,
        Source::Day => 2,
        _ => 3,
    }
}

/// Checks what the `parquet` crate asserts instead of reporting (it panics on a column chunk
/// with a negative offset or length): every chunk of row `group` within the file.
fn check_chunks<R: ChunkReader + 'static>(
    r: &SerializedFileReader<R>,
    group: usize,
    len: u64,
) -> Result<(), String> {
    let md = r.metadata();
    if group >= md.num_row_groups() {
        return Err(format!("no row group {group}"));
    }
    for (i, c) in md.row_group(group).columns().iter().enumerate() {
        let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
        let size = c.compressed_size();
        let end = u64::try_from(start)
            .ok()
            .zip(u64::try_from(size).ok())
            .and_then(|(a, b)| a.checked_add(b));
        if end.is_none_or(|e| e > len) {
            return Err(format!(
                "column chunk {i} of row group {group} lies outside the file (offset {start}, \
                 {size} bytes, file of {len} bytes)"
            ));
        }
    }
    Ok(())
}

/// Decodes up to [`BATCH`] values of a column into `s.values` (nulls in place); returns how
/// many rows they are.
fn read_batch(s: &mut Stream) -> Result<usize, parquet::errors::ParquetError> {
    let mut defs: Vec<i16> = Vec::new();
    let max_def = s.max_def;
    let out = &mut s.values;
    out.clear();
    let ty = s.col.map_or(Type::Unknown, |c| COLUMNS[c].ty);
    // Values come densely (nulls left out); definition levels say where they go.
    fn place<T>(
        out: &mut Vec<Value>,
        defs: &[i16],
        max_def: i16,
        n: usize,
        values: Vec<T>,
        f: &mut dyn FnMut(T) -> Value,
    ) {
        let mut it = values.into_iter();
        if max_def == 0 {
            out.extend(it.by_ref().take(n).map(&mut *f));
            out.resize(n, Value::Null);
            return;
        }
        for d in defs.iter().take(n) {
            if *d == max_def {
                out.push(it.next().map_or(Value::Null, &mut *f));
            } else {
                out.push(Value::Null);
            }
        }
        out.resize(n, Value::Null);
    }
    let counting = s.col.is_none();
    let n = match &mut s.reader {
        ColumnReader::Int32ColumnReader(r) => {
            let mut vals: Vec<i32> = Vec::new();
            let (n, _, _) = r.read_records(BATCH, Some(&mut defs), None, &mut vals)?;
            place(out, &defs, max_def, n, vals, &mut |v| {
                Value::Int(i64::from(v))
            });
            n
        }
        ColumnReader::Int64ColumnReader(r) => {
            let mut vals: Vec<i64> = Vec::new();
            let (n, _, _) = r.read_records(BATCH, Some(&mut defs), None, &mut vals)?;
            place(out, &defs, max_def, n, vals, &mut |v| Value::Int(v));
            n
        }
        ColumnReader::ByteArrayColumnReader(r) => {
            let mut vals: Vec<ByteArray> = Vec::new();
            let (n, _, _) = r.read_records(BATCH, Some(&mut defs), None, &mut vals)?;
            let mut last: Option<Arc<str>> = None;
            place(out, &defs, max_def, n, vals, &mut |v| {
                let text = String::from_utf8_lossy(v.data());
                match ty {
                    Type::Ip => text
                        .parse::<IpAddr>()
                        .map_or_else(|_| Value::str(&text), Value::Ip),
                    Type::Int => text.parse::<i64>().map_or(Value::Null, Value::Int),
                    _ => {
                        let shared = match &last {
                            Some(l) if **l == *text => l.clone(),
                            _ => {
                                let a: Arc<str> = Arc::from(text.as_ref());
                                last = Some(a.clone());
                                a
                            }
                        };
                        Value::Str(shared)
                    }
                }
            });
            n
        }
        // A column read only to count rows may have any type.
        ColumnReader::BoolColumnReader(r) if counting => {
            let mut vals = Vec::new();
            r.read_records(BATCH, Some(&mut defs), None, &mut vals)?.0
        }
        ColumnReader::Int96ColumnReader(r) if counting => {
            let mut vals = Vec::new();
            r.read_records(BATCH, Some(&mut defs), None, &mut vals)?.0
        }
        ColumnReader::FloatColumnReader(r) if counting => {
            let mut vals = Vec::new();
            r.read_records(BATCH, Some(&mut defs), None, &mut vals)?.0
        }
        ColumnReader::DoubleColumnReader(r) if counting => {
            let mut vals = Vec::new();
            r.read_records(BATCH, Some(&mut defs), None, &mut vals)?.0
        }
        ColumnReader::FixedLenByteArrayColumnReader(r) if counting => {
            let mut vals = Vec::new();
            r.read_records(BATCH, Some(&mut defs), None, &mut vals)?.0
        }
        _ => {
            return Err(parquet::errors::ParquetError::General(format!(
                "column {} has a type this reader does not take",
                s.col.map_or("?", |c| COLUMNS[c].name)
            )))
        }
    };
    Ok(n)
}

/// Buffers rows of the stored columns and writes them as row groups of one Parquet file.
pub struct Writer {
    columns: Vec<usize>,
    buffers: Vec<Vec<Value>>,
    writer: SerializedFileWriter<File>,
    path: std::path::PathBuf,
    pub rows: u64,
}

/// Rows per row group: large enough for efficient scans by Athena, small enough to bound what
/// `convert` holds in memory per open file.
pub const ROW_GROUP: usize = 128 * 1024;

impl Writer {
    /// Creates `path` (which must not exist) for the given stored columns.
    pub fn create(path: &Path, columns: &[usize]) -> Result<Writer, QueryError> {
        let mut schema = String::from("message flows {\n");
        for &c in columns {
            let p = physical(c);
            let ann = if p == "BYTE_ARRAY" { " (UTF8)" } else { "" };
            schema.push_str(&format!("  OPTIONAL {p} {}{ann};\n", COLUMNS[c].name));
        }
        schema.push('}');
        let schema = Arc::new(parse_message_type(&schema).map_err(|e| perr(path, e))?);
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build(),
        );
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| QueryError::Io {
                path: path.display().to_string(),
                source,
            })?;
        let writer = SerializedFileWriter::new(file, schema, props).map_err(|e| perr(path, e))?;
        Ok(Writer {
            columns: columns.to_vec(),
            buffers: vec![Vec::new(); columns.len()],
            writer,
            path: path.to_path_buf(),
            rows: 0,
        })
    }

    /// Adds a row (`vals` indexed by column).
    pub fn push(&mut self, vals: &[Value]) -> Result<(), QueryError> {
        for (b, &c) in self.buffers.iter_mut().zip(&self.columns) {
            b.push(vals.get(c).cloned().unwrap_or(Value::Null));
        }
        self.rows += 1;
        if self.buffers.first().is_some_and(|b| b.len() >= ROW_GROUP) {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), QueryError> {
        if self.buffers.first().is_none_or(|b| b.is_empty()) {
            return Ok(());
        }
        let path = self.path.clone();
        let mut rg = self.writer.next_row_group().map_err(|e| perr(&path, e))?;
        let mut i = 0;
        while let Some(mut col) = rg.next_column().map_err(|e| perr(&path, e))? {
            let Some(&c) = self.columns.get(i) else {
                return Err(perr(&path, "more columns than the schema"));
            };
            let values = std::mem::take(&mut self.buffers[i]);
            let defs: Vec<i16> = values.iter().map(|v| i16::from(!v.is_null())).collect();
            let r = match physical(c) {
                "INT32" => {
                    let v: Vec<i32> = values
                        .iter()
                        .filter_map(|v| match v {
                            Value::Int(n) => Some(i32::try_from(*n).unwrap_or(i32::MAX)),
                            _ => None,
                        })
                        .collect();
                    col.typed::<Int32Type>().write_batch(&v, Some(&defs), None)
                }
                "INT64" => {
                    let v: Vec<i64> = values
                        .iter()
                        .filter_map(|v| match v {
                            Value::Int(n) => Some(*n),
                            _ => None,
                        })
                        .collect();
                    col.typed::<Int64Type>().write_batch(&v, Some(&defs), None)
                }
                _ => {
                    let v: Vec<ByteArray> = values
                        .iter()
                        .filter_map(|v| v.text().map(|t| ByteArray::from(t.as_bytes().to_vec())))
                        .collect();
                    col.typed::<ByteArrayType>()
                        .write_batch(&v, Some(&defs), None)
                }
            };
            r.map_err(|e| perr(&path, e))?;
            col.close().map_err(|e| perr(&path, e))?;
            i += 1;
        }
        rg.close().map_err(|e| perr(&path, e))?;
        Ok(())
    }

    pub fn close(mut self) -> Result<u64, QueryError> {
        self.flush()?;
        let path = self.path.clone();
        self.writer.close().map_err(|e| perr(&path, e))?;
        Ok(self.rows)
    }
}
