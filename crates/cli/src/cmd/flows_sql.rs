//! `sumun flows query|convert|ddl`: argument parsing and printing around `sumun-flows-sql`.
//! Results go to stdout; what was read, bad lines and the progress bar to stderr. Exit status:
//! 0 ok, 2 a problem with the query, the arguments or the input (with its position or file and
//! line), 1 anything else.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use sumun_flows_sql::ddl::{self, DdlOptions, Engine};
use sumun_flows_sql::output;
use sumun_flows_sql::scan::Inputs;
use sumun_flows_sql::{convert, Options, QueryError};
use sumun_flows_tools::input::ReadStats;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OutFormat {
    Table,
    Csv,
    Json,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The query, e.g. "SELECT srcaddr, count(*) FROM flows GROUP BY 1 ORDER BY 2 DESC LIMIT 10"
    /// (it may start with a -- comment).
    #[arg(allow_hyphen_values = true)]
    sql: String,
    /// Flow log files or directories (text, gzip, or Parquet written by `convert`); `-` for stdin.
    #[arg(required = true, value_name = "FILES")]
    files: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    format: OutFormat,
    /// Stop at the first line that is not a flow record (exit 2) instead of counting it.
    #[arg(long)]
    strict: bool,
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// What current_date and current_timestamp mean (YYYY-MM-DD or an RFC 3339 time; default
    /// now), so that queries written for "the last 7 days" can run over old logs.
    #[arg(long, value_name = "TIME")]
    now: Option<String>,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Flow log files or directories (text or gzip); `-` for stdin.
    #[arg(required = true, value_name = "FILES")]
    files: Vec<PathBuf>,
    /// Output directory: Parquet under year=YYYY/month=MM/day=DD/.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[arg(long)]
    strict: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum EngineArg {
    Athena,
    Trino,
    Spark,
}

#[derive(Args, Debug)]
pub struct DdlArgs {
    #[arg(long, value_enum)]
    engine: EngineArg,
    /// Where `convert`'s output was copied, e.g. s3://my-bucket/flows/.
    #[arg(long, value_name = "S3_URI")]
    location: String,
    #[arg(long, default_value = "vpc_flow_logs")]
    table: String,
    /// Custom-format fields the files have, comma separated (e.g. tcp-flags,pkt-srcaddr).
    #[arg(long, value_delimiter = ',', value_name = "FIELDS")]
    fields: Vec<String>,
    /// Years the Athena partition projection covers: FIRST,LAST.
    #[arg(long, default_value = "2020,2040", value_name = "FIRST,LAST")]
    years: String,
}

/// Runs one of the three commands; problems the user can fix are printed and give status 2.
fn finish(r: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    match r {
        Err(e) => match e.chain().find_map(|c| c.downcast_ref::<QueryError>()) {
            // The error's own text already names its cause (file and OS error, or position).
            Some(q) if q.is_input() => {
                eprintln!("sumun: {q}");
                Ok(ExitCode::from(2))
            }
            _ => Err(e),
        },
        ok => ok,
    }
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

fn print_stats(stats: &ReadStats) {
    eprintln!(
        "read {} records from {} file{} ({} without data, {} bad lines)",
        stats.records,
        stats.files,
        if stats.files == 1 { "" } else { "s" },
        stats.no_data,
        stats.bad_lines
    );
    for bad in &stats.first_bad {
        eprintln!("  {bad}");
    }
    if stats.bad_lines > stats.first_bad.len() as u64 {
        eprintln!(
            "  ... and {} more bad lines",
            stats.bad_lines - stats.first_bad.len() as u64
        );
    }
}

static PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Runs `f` with a progress bar over `total` bytes on stderr when stderr is a terminal.
pub(crate) fn with_progress<T>(total: u64, f: impl FnOnce(Option<&'static AtomicU64>) -> T) -> T {
    if !std::io::stderr().is_terminal() || total == 0 {
        return f(None);
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total),
                indicatif::ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            while !done.load(Ordering::Relaxed) {
                bar.set_position(PROGRESS.load(Ordering::Relaxed).min(total));
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        });
        let r = f(Some(&PROGRESS));
        done.store(true, Ordering::Relaxed);
        r
    })
}

fn now_ms(arg: Option<&str>) -> anyhow::Result<i64> {
    match arg {
        Some(text) => {
            let bad = || {
                QueryError::Usage(format!(
                    "--now: '{text}' is not a date (YYYY-MM-DD) or time (YYYY-MM-DDTHH:MM:SSZ)"
                ))
            };
            sumun_flows_sql::value::parse_timestamp(text)
                .ok_or_else(bad)
                .map_err(anyhow::Error::from)
        }
        None => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
    }
}

pub fn query_cmd(a: QueryArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let opts = Options {
            strict: a.strict,
            threads: a.threads,
            now_ms: now_ms(a.now.as_deref())?,
            ..Options::default()
        };
        // The query is checked before any file is read.
        sumun_flows_sql::parser::parse(&a.sql).map_err(QueryError::from)?;
        let inputs = Inputs::discover(&a.files)?;
        let out = with_progress(inputs.total_bytes, |progress| {
            sumun_flows_sql::query_inputs(&a.sql, &inputs, &Options { progress, ..opts })
        })?;
        print_stats(&out.stats);
        let format = match a.format {
            OutFormat::Table => output::Format::Table,
            OutFormat::Csv => output::Format::Csv,
            OutFormat::Json => output::Format::Json,
        };
        write_stdout(&output::write(&out, format))?;
        if a.format == OutFormat::Table {
            eprintln!(
                "({} row{})",
                out.rows.len(),
                if out.rows.len() == 1 { "" } else { "s" }
            );
        }
        Ok(ExitCode::SUCCESS)
    })())
}

pub fn convert_cmd(a: ConvertArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let inputs = Inputs::discover(&a.files)?;
        let stats = with_progress(inputs.total_bytes, |progress| {
            convert::convert(
                &a.files,
                &a.out,
                &Options {
                    strict: a.strict,
                    progress,
                    ..Options::default()
                },
            )
        })?;
        print_stats(&stats.read);
        eprintln!(
            "wrote {} rows to {} Parquet file{} in {} partition{} under {}",
            stats.rows,
            stats.files,
            if stats.files == 1 { "" } else { "s" },
            stats.partitions.len(),
            if stats.partitions.len() == 1 { "" } else { "s" },
            a.out.display()
        );
        Ok(ExitCode::SUCCESS)
    })())
}

pub fn ddl_cmd(a: DdlArgs) -> anyhow::Result<ExitCode> {
    finish((|| {
        let years = a
            .years
            .split_once(',')
            .and_then(|(x, y)| Some((x.trim().parse().ok()?, y.trim().parse().ok()?)))
            .ok_or_else(|| QueryError::Usage("--years takes FIRST,LAST, e.g. 2020,2040".into()))?;
        let text = ddl::ddl(&DdlOptions {
            engine: match a.engine {
                EngineArg::Athena => Engine::Athena,
                EngineArg::Trino => Engine::Trino,
                EngineArg::Spark => Engine::Spark,
            },
            location: &a.location,
            table: &a.table,
            fields: &a.fields,
            years,
        })?;
        write_stdout(&text)?;
        Ok(ExitCode::SUCCESS)
    })())
}
