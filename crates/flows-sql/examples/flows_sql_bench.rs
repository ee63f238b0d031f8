//! Runs `sumun flows query` and `convert` through the library, for `bench/flows/run.sh`
//! (which measures CPU time and memory with `/usr/bin/time` and runs DuckDB on the same file):
//! `generate OUT RECORDS SEED`, `query NOW SQL_FILE FILES...` (prints the rows as CSV to
//! stdout and `query: N rows in S s` to stderr), `convert OUT FILES...`. Only this crate and its
//! dependencies are built in release mode, not the gateway.

use std::path::PathBuf;
use std::time::Instant;

use sumun_flows_sql::{convert, output, value, Options};
use sumun_flows_tools::generate::{generate, GenOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("generate") => {
            let out = args.get(1).ok_or("generate OUT RECORDS SEED")?;
            let records = args.get(2).ok_or("RECORDS")?.parse()?;
            let seed = args.get(3).map_or(Ok(1), |s| s.parse())?;
            let t = Instant::now();
            let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
            generate(
                &GenOptions {
                    seed,
                    records,
                    ..GenOptions::default()
                },
                &mut file,
            )?;
            eprintln!(
                "generate: {records} records in {:.2} s",
                t.elapsed().as_secs_f64()
            );
        }
        Some("query") => {
            let now = args.get(1).ok_or("query NOW SQL_FILE FILES...")?;
            let sql = std::fs::read_to_string(args.get(2).ok_or("SQL_FILE")?)?;
            let files: Vec<PathBuf> = args.iter().skip(3).map(PathBuf::from).collect();
            let opts = Options {
                now_ms: value::parse_timestamp(now).ok_or("NOW: YYYY-MM-DD")?,
                ..Options::default()
            };
            let t = Instant::now();
            let out = sumun_flows_sql::query(&sql, &files, &opts)?;
            let secs = t.elapsed().as_secs_f64();
            print!("{}", output::csv(&out));
            eprintln!(
                "query: {} rows from {} records in {secs:.3} s",
                out.rows.len(),
                out.stats.records
            );
        }
        Some("convert") => {
            let out = PathBuf::from(args.get(1).ok_or("convert OUT FILES...")?);
            let files: Vec<PathBuf> = args.iter().skip(2).map(PathBuf::from).collect();
            let t = Instant::now();
            let stats = convert::convert(&files, &out, &Options::default())?;
            eprintln!(
                "convert: {} rows to {} files in {:.2} s",
                stats.rows,
                stats.files,
                t.elapsed().as_secs_f64()
            );
        }
        _ => return Err(
            "usage: generate OUT RECORDS SEED | query NOW SQL_FILE FILES... | convert OUT FILES..."
                .into(),
        ),
    }
    Ok(())
}
