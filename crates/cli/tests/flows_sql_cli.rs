//! `sumun flows query|convert|ddl` with the real binary: the aligned table, CSV and JSON of a
//! query over a generated log, seed 000's query run as pasted, a positioned error and exit
//! status 2 for a bad query or a bad line under --strict, convert to a year=/month=/day=
//! directory that queries back to the same answer, and the DDL for each engine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SUMUN: &str = env!("CARGO_BIN_EXE_sumun");

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "sumun-flows-sql-cli-{tag}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&d).expect("mkdir");
        Dir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sumun(args: &[&str]) -> Output {
    Command::new(SUMUN).args(args).output().expect("run sumun")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn generate(dir: &Dir) -> PathBuf {
    let path = dir.path("g.log");
    let out = sumun(&[
        "flows",
        "generate",
        "--seed",
        "3",
        "--records",
        "20000",
        "--out",
        s(&path),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    path
}

#[test]
fn query_prints_a_table_csv_and_json() {
    let dir = Dir::new("formats");
    let log = generate(&dir);
    let sql = "SELECT action, count(*) AS flows, sum(bytes) AS bytes FROM flows \
               WHERE log_status = 'OK' GROUP BY action ORDER BY action";
    let out = sumun(&["flows", "query", sql, s(&log)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("action  "), "{table}");
    assert!(lines[1].starts_with("------  "), "{table}");
    assert!(
        lines[2].starts_with("ACCEPT  ") && lines[3].starts_with("REJECT  "),
        "{table}"
    );
    // Numbers are right-aligned: every row ends at the same column.
    assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{table}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("read 20000 records from 1 file"),
        "{stderr}"
    );
    assert!(stderr.contains("(2 rows)"), "{stderr}");

    let out = sumun(&["flows", "query", "--format", "csv", sql, s(&log)]);
    let csv = text(&out.stdout);
    assert!(csv.starts_with("action,flows,bytes\nACCEPT,"), "{csv}");
    assert_eq!(csv.lines().count(), 3);

    let out = sumun(&["flows", "query", "--format", "json", sql, s(&log)]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = json.as_array().expect("array");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["action"], "ACCEPT");
    assert!(rows[0]["flows"].as_i64().expect("number") > 10_000);
    let total: i64 = rows.iter().map(|r| r["flows"].as_i64().expect("n")).sum();
    assert_eq!(total, 20000 - 2, "two NODATA/SKIPDATA records are not OK");
}

#[test]
fn seed_000_query_runs_as_pasted_and_finds_the_exfiltration() {
    let dir = Dir::new("seed");
    let log = generate(&dir);
    // Seed 000's exfiltration query with only the port list widened to the generator's
    // planted exfiltration (to 203.0.113.200:443); `--now` fixes current_date.
    let sql = "-- 과도한 데이터 전송 탐지 (잠재적 데이터 유출)
SELECT
  sourceaddress,
  destinationaddress,
  destinationport,
  SUM(numbytes) / 1024 / 1024 / 1024 as total_gb,
  COUNT(*) as flow_count,
  from_unixtime(MIN(starttime)) as first_seen,
  from_unixtime(MAX(endtime)) as last_seen
FROM vpc_flow_logs
WHERE
  dt >= date_format(current_date - interval '1' day, '%Y/%m/%d')
  AND destinationport IN (443, 3306, 5432, 6379, 27017)
  AND action = 'ACCEPT'
GROUP BY sourceaddress, destinationaddress, destinationport
HAVING SUM(numbytes) > 10737418240  -- 10GB 이상
ORDER BY total_gb DESC
LIMIT 100;";
    let out = sumun(&[
        "flows",
        "query",
        "--now",
        "2024-01-02",
        "--format",
        "csv",
        sql,
        s(&log),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{csv}");
    assert!(
        rows[0].starts_with("10.0.1.23,203.0.113.200,443,12,"),
        "{csv}"
    );
    // A week later the 1-day window is empty.
    let out = sumun(&[
        "flows",
        "query",
        "--now",
        "2024-01-09",
        "--format",
        "csv",
        sql,
        s(&log),
    ]);
    assert_eq!(text(&out.stdout).lines().count(), 1);
}

#[test]
fn a_bad_query_or_a_bad_line_is_exit_status_2_with_its_position() {
    let dir = Dir::new("errors");
    let log = generate(&dir);
    let out = sumun(&[
        "flows",
        "query",
        "SELECT srcaddr,\n  count(*) FROM flows GROUP BY dstaddr",
        s(&log),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        "sumun: line 1, column 8: column 'srcaddr' must appear in GROUP BY or be used in an aggregate function"
    );
    // Syntax is checked before any file is opened.
    let out = sumun(&["flows", "query", "SELEC 1", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("line 1, column 1: expected SELECT"),
        "{}",
        text(&out.stderr)
    );
    let out = sumun(&[
        "flows",
        "query",
        "SELECT 1 FROM flows",
        "/nonexistent/flows.log",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/nonexistent/flows.log"),
        "{}",
        text(&out.stderr)
    );

    let mut log_text = std::fs::read_to_string(&log).expect("read");
    log_text.push_str("2 123 eni-1 not-an-address 10.0.0.1 1 2 6 1 1 1 2 ACCEPT OK\n");
    let bad = dir.path("bad.log");
    std::fs::write(&bad, log_text).expect("write");
    let out = sumun(&["flows", "query", "SELECT count(*) FROM flows", s(&bad)]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("1 bad lines"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:20001: invalid srcaddr", s(&bad))),
        "{stderr}"
    );
    let out = sumun(&[
        "flows",
        "query",
        "--strict",
        "SELECT count(*) FROM flows",
        s(&bad),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(":20001: invalid srcaddr"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn convert_writes_partitions_that_query_back_the_same() {
    let dir = Dir::new("convert");
    let log = generate(&dir);
    let out_dir = dir.path("parquet");
    let out = sumun(&["flows", "convert", s(&log), "--out", s(&out_dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("wrote 20000 rows to"), "{stderr}");
    assert!(out_dir
        .join("year=2024/month=01/day=01/flows-00000.parquet")
        .is_file());
    let sql = "SELECT dstaddr, dstport, count(*) AS n, sum(bytes) AS b FROM flows \
               GROUP BY 1, 2 ORDER BY n DESC, dstaddr, dstport LIMIT 10";
    let a = sumun(&["flows", "query", "--format", "csv", sql, s(&log)]);
    let b = sumun(&["flows", "query", "--format", "csv", sql, s(&out_dir)]);
    assert_eq!(b.status.code(), Some(0), "{}", text(&b.stderr));
    assert_eq!(text(&a.stdout), text(&b.stdout));
    assert!(
        text(&b.stderr).contains("read 20000 records"),
        "{}",
        text(&b.stderr)
    );
}

#[test]
fn ddl_for_each_engine() {
    let out = sumun(&[
        "flows",
        "ddl",
        "--engine",
        "athena",
        "--location",
        "s3://bucket/flows/",
        "--fields",
        "tcp-flags",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let athena = text(&out.stdout);
    for want in [
        "CREATE EXTERNAL TABLE IF NOT EXISTS vpc_flow_logs (",
        "  `end` bigint,",
        "  tcp_flags int\n)",
        "PARTITIONED BY (year string, month string, day string)",
        "STORED AS PARQUET",
        "LOCATION 's3://bucket/flows/'",
        "'projection.enabled' = 'true'",
        "'storage.location.template' = 's3://bucket/flows/year=${year}/month=${month}/day=${day}/'",
    ] {
        assert!(athena.contains(want), "{want}\n{athena}");
    }
    let trino = text(
        &sumun(&[
            "flows",
            "ddl",
            "--engine",
            "trino",
            "--location",
            "s3://b/f",
        ])
        .stdout,
    );
    assert!(
        trino.contains("partitioned_by = ARRAY['year', 'month', 'day']"),
        "{trino}"
    );
    assert!(trino.contains("  \"end\" bigint,"), "{trino}");
    let spark = text(
        &sumun(&[
            "flows",
            "ddl",
            "--engine",
            "spark",
            "--location",
            "s3a://b/f",
        ])
        .stdout,
    );
    assert!(
        spark.contains("USING PARQUET\nPARTITIONED BY (year, month, day)"),
        "{spark}"
    );
    let bad = sumun(&[
        "flows",
        "ddl",
        "--engine",
        "spark",
        "--location",
        "s3://b/it's",
    ]);
    assert_eq!(bad.status.code(), Some(2));
}
