//! Times the stages of `sumun flows` on one file, for `bench/flows/run.sh` (which also measures
//! CPU time and memory with `/usr/bin/time`): `generate OUT RECORDS SEED` writes a log;
//! `parse FILE`, `suggest FILE`, `hunt FILE` run one stage each, as the CLI does.

use std::path::PathBuf;
use std::time::Instant;

use sumun_flows_tools::generate::{generate, GenOptions};
use sumun_flows_tools::hunt::{Hunt, Thresholds};
use sumun_flows_tools::input::read_flows;
use sumun_flows_tools::suggest::{plan, Observed, DEFAULT_SG_LIMIT};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("generate") {
        let out = args.get(1).ok_or("generate OUT RECORDS SEED")?;
        let records = args.get(2).ok_or("RECORDS")?.parse()?;
        let seed = args.get(3).map_or(Ok(1), |s| s.parse())?;
        let t = Instant::now();
        let mut file = std::fs::File::create(out)?;
        generate(
            &GenOptions {
                seed,
                records,
                ..GenOptions::default()
            },
            &mut file,
        )?;
        println!(
            "generate: {records} records in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("parse") {
        let files = [PathBuf::from(args.get(1).ok_or("parse FILE")?)];
        let t = Instant::now();
        let stats = read_flows(&files, false, |_| {})?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "parse: {} records: {secs:.2} s = {:.2} M records/s",
            stats.records,
            stats.records as f64 / secs / 1e6
        );
        return Ok(());
    }
    let mode = args.first().map(String::as_str).unwrap_or("");
    let files = [PathBuf::from(args.get(1).ok_or("MODE FILE")?)];
    match mode {
        "suggest" => {
            let t = Instant::now();
            let mut observed = Observed::new(Vec::new());
            let stats = read_flows(&files, false, |f| observed.add(f))?;
            let read = t.elapsed().as_secs_f64();
            let p = plan(observed, DEFAULT_SG_LIMIT);
            let total = t.elapsed().as_secs_f64();
            let sets: Vec<_> = p
                .destinations
                .iter()
                .flat_map(|d| d.rule_sets.iter())
                .collect();
            let largest = sets.iter().map(|s| s.observed).max().unwrap_or(0);
            println!(
                "suggest: {} records, {} destinations, {} rule sets, largest {largest} distinct sources: \
                 {total:.2} s ({read:.2} s reading and orienting, {:.2} s planning)",
                stats.records,
                p.destinations.len(),
                sets.len(),
                total - read
            );
        }
        "hunt" => {
            let t = Instant::now();
            let mut hunt = Hunt::new();
            let stats = read_flows(&files, false, |f| hunt.add(f))?;
            let findings = hunt.run(&Thresholds::default());
            println!(
                "hunt: {} records, {} findings: {:.2} s",
                stats.records,
                findings.len(),
                t.elapsed().as_secs_f64()
            );
        }
        _ => {
            return Err(
                "modes: generate OUT RECORDS SEED | parse FILE | suggest FILE | hunt FILE".into(),
            )
        }
    }
    Ok(())
}
