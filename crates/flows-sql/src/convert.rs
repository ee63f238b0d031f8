//! `convert`: flow logs to Parquet, partitioned as AWS writes flow logs to S3 with Hive-style
//! prefixes (`year=YYYY/month=MM/day=DD/`, by each record's start time; records without one go
//! under `year=__HIVE_DEFAULT_PARTITION__/...`). Input files are converted in parallel, one
//! thread per file (a file is not cut: its lines stay in order in its output).

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use sumun_flows::{Flow, LogStatus, ReadError, Reader};
use sumun_flows_tools::input::{BadLine, ReadStats, KEEP_BAD};

use crate::error::QueryError;
use crate::exec::Options;
use crate::parquet_io::Writer;
use crate::scan::{self, Inputs, Kind};
use crate::schema::{day_parts, Materializer, COLUMNS, DEFAULT_COLUMNS};
use crate::value::Value;

#[derive(Debug, Default)]
pub struct ConvertStats {
    pub read: ReadStats,
    /// Parquet files written.
    pub files: usize,
    pub rows: u64,
    /// Partition directories (`year=2024/month=01/day=01`).
    pub partitions: BTreeSet<String>,
}

const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

pub fn convert(paths: &[PathBuf], out: &Path, opts: &Options) -> Result<ConvertStats, QueryError> {
    let inputs = Inputs::discover(paths)?;
    if let Some(f) = inputs.files.iter().find(|f| f.kind == Kind::Parquet) {
        return Err(QueryError::Usage(format!(
            "{} is already Parquet",
            f.path.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|source| QueryError::Io {
        path: out.display().to_string(),
        source,
    })?;
    let mut columns: Vec<usize> = (0..DEFAULT_COLUMNS).collect();
    columns.extend(&inputs.extras);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<(usize, Result<FileOut, QueryError>)>> = Mutex::new(Vec::new());
    let threads = opts.threads().min(inputs.files.len()).max(1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(file) = inputs.files.get(i) else {
                    break;
                };
                let r = convert_file(file, i, out, &columns, opts, &stop);
                if r.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    let mut stats = ConvertStats {
        read: ReadStats {
            files: inputs.files.len(),
            ..ReadStats::default()
        },
        ..ConvertStats::default()
    };
    for (_, r) in results {
        let f = r?;
        stats.read.records += f.records;
        stats.read.no_data += f.no_data;
        stats.read.bad_lines += f.bad_lines;
        for b in f.first_bad {
            if stats.read.first_bad.len() < KEEP_BAD {
                stats.read.first_bad.push(b);
            }
        }
        stats.files += f.files;
        stats.rows += f.rows;
        stats.partitions.extend(f.partitions);
    }
    if opts.strict {
        if let Some(b) = stats.read.first_bad.first() {
            return Err(QueryError::Bad(b.clone()));
        }
    }
    Ok(stats)
}

#[derive(Default)]
struct FileOut {
    records: u64,
    no_data: u64,
    bad_lines: u64,
    first_bad: Vec<BadLine>,
    files: usize,
    rows: u64,
    partitions: BTreeSet<String>,
}

fn convert_file(
    file: &scan::InputFile,
    index: usize,
    out: &Path,
    columns: &[usize],
    opts: &Options,
    stop: &AtomicBool,
) -> Result<FileOut, QueryError> {
    let input: Box<dyn BufRead> = scan::open_stream(file, opts.progress)?;
    let mut reader = Reader::new(input);
    let mut flow = Flow::default();
    let mut mat = Materializer::default();
    let mut vals = vec![Value::Null; COLUMNS.len()];
    let mut writers: BTreeMap<String, Writer> = BTreeMap::new();
    let mut res = FileOut::default();
    let name = file.name();
    while let Some(item) = reader.read_into(&mut flow) {
        match item {
            Ok(()) => {
                res.records += 1;
                if flow.record.log_status != LogStatus::Ok {
                    res.no_data += 1;
                }
                mat.set_format(reader.format());
                mat.fill(&flow, columns, &mut vals);
                let partition = match &vals[10] {
                    Value::Int(start) if *start >= 0 => {
                        let p = day_parts(start / 86_400);
                        format!("year={}/month={}/day={}", p[0], p[1], p[2])
                    }
                    _ => format!(
                        "year={DEFAULT_PARTITION}/month={DEFAULT_PARTITION}/day={DEFAULT_PARTITION}"
                    ),
                };
                if !writers.contains_key(&partition) {
                    let dir = out.join(&partition);
                    std::fs::create_dir_all(&dir).map_err(|source| QueryError::Io {
                        path: dir.display().to_string(),
                        source,
                    })?;
                    let w =
                        Writer::create(&dir.join(format!("flows-{index:05}.parquet")), columns)?;
                    writers.insert(partition.clone(), w);
                }
                if let Some(w) = writers.get_mut(&partition) {
                    w.push(&vals)?;
                }
            }
            Err(ReadError::Io(source)) => {
                return Err(QueryError::Input(
                    sumun_flows_tools::input::InputError::Read { path: name, source },
                ))
            }
            Err(e) => {
                res.bad_lines += 1;
                if res.first_bad.len() < KEEP_BAD {
                    let text = e.to_string();
                    let message = text
                        .split_once(": ")
                        .map_or(text.clone(), |(_, m)| m.to_string());
                    let line = match &e {
                        ReadError::Parse { line, .. }
                        | ReadError::Header { line, .. }
                        | ReadError::NotUtf8 { line }
                        | ReadError::TooLong { line } => *line,
                        ReadError::Io(_) => 0,
                    };
                    res.first_bad.push(BadLine {
                        file: name.clone(),
                        line,
                        message,
                    });
                }
                if opts.strict {
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    for (p, w) in writers {
        res.rows += w.close()?;
        res.files += 1;
        res.partitions.insert(p);
    }
    Ok(res)
}
