//! Queries over real files: seed 000's hunting queries verbatim on a log that holds what they
//! hunt, results on a generated log checked against totals computed independently from the
//! parsed records, NULL semantics of NODATA and `-` fields, splitting one file across threads
//! (with a header in mid-file and bad lines), early LIMIT, error positions, and the
//! text -> Parquet -> query round trip.

#![allow(clippy::unwrap_used)] // tests may unwrap (preamble)

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use sumun_flows_sql::{output, query, value, Options, Output, QueryError};
use sumun_flows_tools::generate::{generate, GenOptions};
use sumun_flows_tools::input::read_flows;

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "sumun-flows-sql-{tag}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn opts() -> Options {
    Options {
        now_ms: value::parse_timestamp("2024-01-02").unwrap(),
        ..Options::default()
    }
}

fn run(sql: &str, files: &[PathBuf]) -> Output {
    query(sql, files, &opts()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn csv(sql: &str, files: &[PathBuf]) -> String {
    output::csv(&run(sql, files))
}

fn gen_log(dir: &Dir, name: &str, records: u64, tcp_flags: bool) -> PathBuf {
    let path = dir.path(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    generate(
        &GenOptions {
            seed: 7,
            records,
            tcp_flags,
            ..GenOptions::default()
        },
        &mut f,
    )
    .unwrap();
    f.flush().unwrap();
    path
}

const SEED_000_SCAN: &str = "SELECT
  sourceaddress,
  COUNT(DISTINCT destinationaddress) as target_count,
  COUNT(*) as connection_attempts,
  MIN(from_unixtime(starttime)) as first_seen,
  MAX(from_unixtime(endtime)) as last_seen
FROM vpc_flow_logs
WHERE
  dt >= date_format(current_date - interval '7' day, '%Y/%m/%d')
  AND destinationport = 3306
  AND action = 'REJECT'
GROUP BY sourceaddress
HAVING COUNT(DISTINCT destinationaddress) > 5
ORDER BY connection_attempts DESC
LIMIT 100;";

const SEED_000_EXFIL: &str = "SELECT
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
  AND destinationport IN (3306, 5432, 6379, 27017)
  AND action = 'ACCEPT'
GROUP BY sourceaddress, destinationaddress, destinationport
HAVING SUM(numbytes) > 10737418240  -- 10GB 이상
ORDER BY total_gb DESC
LIMIT 100;";

/// A day (2024-01-01) with what seed 000's queries hunt: 203.0.113.9 refused on MySQL by 7
/// hosts (and by 2 on PostgreSQL), 198.51.100.4 refused by 3 MySQL hosts (below the
/// threshold), 10.0.1.23 moving 12 GiB from PostgreSQL in two records, 10.0.1.24 5 GiB, an old
/// record from 2023-12-20 outside the 7-day window, and a NODATA record.
fn seed_log(dir: &Dir) -> PathBuf {
    let mut text = String::new();
    let t0 = 1_704_067_200u64; // 2024-01-01T00:00:00Z
    for i in 0..7u64 {
        for _ in 0..(i + 1) {
            text.push_str(&format!(
                "2 123456789012 eni-0a 203.0.113.9 10.0.20.{} 51000 3306 6 1 40 {} {} REJECT OK\n",
                10 + i,
                t0 + 100 + i,
                t0 + 110 + i
            ));
        }
    }
    for h in 0..2 {
        text.push_str(&format!(
            "2 123456789012 eni-0a 203.0.113.9 10.0.20.{} 51001 5432 6 1 40 {} {} REJECT OK\n",
            30 + h,
            t0 + 300,
            t0 + 301
        ));
    }
    for h in 0..3 {
        text.push_str(&format!(
            "2 123456789012 eni-0a 198.51.100.4 10.0.20.{} 40000 3306 6 1 40 {} {} REJECT OK\n",
            10 + h,
            t0 + 400,
            t0 + 401
        ));
    }
    let gib = 1u64 << 30;
    text.push_str(&format!(
        "2 123456789012 eni-0b 10.0.1.23 10.0.20.10 50000 5432 6 900000 {} {} {} ACCEPT OK\n",
        7 * gib,
        t0 + 3600,
        t0 + 3660
    ));
    text.push_str(&format!(
        "2 123456789012 eni-0b 10.0.1.23 10.0.20.10 50001 5432 6 800000 {} {} {} ACCEPT OK\n",
        5 * gib,
        t0 + 7200,
        t0 + 7260
    ));
    text.push_str(&format!(
        "2 123456789012 eni-0b 10.0.1.24 10.0.20.10 50002 5432 6 800000 {} {} {} ACCEPT OK\n",
        5 * gib,
        t0 + 7200,
        t0 + 7260
    ));
    // 2023-12-20: outside both windows.
    for h in 0..8 {
        text.push_str(&format!(
            "2 123456789012 eni-0a 192.0.2.1 10.0.20.{} 40000 3306 6 1 40 1703030400 1703030401 REJECT OK\n",
            10 + h
        ));
    }
    text.push_str("2 123456789012 eni-0a - - - - - - - 1704067200 1704067260 - NODATA\n");
    dir.write("seed.log", &text)
}

#[test]
fn seed_000_queries_run_verbatim() {
    let dir = Dir::new("seed");
    let log = seed_log(&dir);
    assert_eq!(
        csv(SEED_000_SCAN, std::slice::from_ref(&log)),
        "sourceaddress,target_count,connection_attempts,first_seen,last_seen\n\
         203.0.113.9,7,28,2024-01-01 00:01:40.000,2024-01-01 00:01:56.000\n"
    );
    assert_eq!(
        csv(SEED_000_EXFIL, &[log]),
        "sourceaddress,destinationaddress,destinationport,total_gb,flow_count,first_seen,last_seen\n\
         10.0.1.23,10.0.20.10,5432,12,2,2024-01-01 01:00:00.000,2024-01-01 02:01:00.000\n"
    );
}

#[test]
fn seed_002_rule_input_as_sql() {
    // Seed 002 counts (destination, port) pairs and keeps the 60 most common; the same as SQL
    // with Athena's names and the default table name.
    let dir = Dir::new("seed2");
    let log = seed_log(&dir);
    let out = csv(
        "SELECT dstaddr, dstport, count(*) AS n FROM flows GROUP BY 1, 2 ORDER BY n DESC, dstaddr, dstport LIMIT 3",
        &[log],
    );
    assert_eq!(
        out,
        "dstaddr,dstport,n\n10.0.20.16,3306,8\n10.0.20.15,3306,7\n10.0.20.14,3306,6\n"
    );
}

#[test]
fn generated_log_totals_match_the_parsed_records() {
    let dir = Dir::new("totals");
    let log = gen_log(&dir, "g.log", 30_000, false);
    // The oracle: straight from the parser.
    let mut by_action: BTreeMap<String, (i64, u64)> = BTreeMap::new();
    let mut per_dst: HashMap<(String, u16), i64> = HashMap::new();
    let mut sources = std::collections::HashSet::new();
    let mut no_data = 0;
    let stats = read_flows(std::slice::from_ref(&log), false, |f| {
        let r = &f.record;
        if r.log_status != sumun_flows::LogStatus::Ok {
            no_data += 1;
            return;
        }
        let e = by_action.entry(r.action.to_string()).or_default();
        e.0 += 1;
        e.1 += r.bytes;
        sources.insert(r.srcaddr);
        if r.dstport == 5432 {
            *per_dst
                .entry((r.dstaddr.to_string(), r.dstport))
                .or_default() += 1;
        }
    })
    .unwrap();

    let out = run(
        "SELECT action, count(*), sum(bytes) FROM flows WHERE log_status = 'OK' GROUP BY action ORDER BY action",
        std::slice::from_ref(&log),
    );
    let got: Vec<(String, i64, i64)> = out
        .rows
        .iter()
        .map(|r| {
            let v = |i: usize| match &r[i] {
                sumun_flows_sql::Value::Int(n) => *n,
                other => panic!("{other:?}"),
            };
            (r[0].text().unwrap().into_owned(), v(1), v(2))
        })
        .collect();
    let want: Vec<(String, i64, i64)> = by_action
        .iter()
        .map(|(a, (n, b))| (a.clone(), *n, *b as i64))
        .collect();
    assert_eq!(got, want);
    assert_eq!(out.stats.records, stats.records);

    let out = csv(
        "SELECT count(DISTINCT srcaddr), count(*) - count(srcaddr), count_if(srcaddr IS NULL) FROM flows",
        std::slice::from_ref(&log),
    );
    assert_eq!(
        out.lines().nth(1).unwrap(),
        format!("{},{no_data},{no_data}", sources.len())
    );

    let out = run(
        "select dstaddr, dstport, count(*) from flows where dstport = 5432 group by 1, 2",
        &[log],
    );
    let got: HashMap<(String, u16), i64> = out
        .rows
        .iter()
        .map(|r| match (&r[1], &r[2]) {
            (sumun_flows_sql::Value::Int(p), sumun_flows_sql::Value::Int(n)) => {
                ((r[0].text().unwrap().into_owned(), *p as u16), *n)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got, per_dst);
}

#[test]
fn expressions_functions_and_nulls() {
    let dir = Dir::new("expr");
    let log = seed_log(&dir);
    let one = |sql: &str| {
        let out = csv(sql, std::slice::from_ref(&log));
        out.lines().nth(1).unwrap_or_default().to_string()
    };
    assert_eq!(
        one("select count(*) from flows where contains('10.0.0.0/8', srcaddr)"),
        "3"
    );
    assert_eq!(
        one("select count(*) from flows where is_private(srcaddr)"),
        "3"
    );
    assert_eq!(
        one("select count(*) from flows where srcaddr like '203.%'"),
        "30"
    );
    assert_eq!(one("select count(*) from flows where srcaddr is null"), "1");
    assert_eq!(
        one("select count(*) from flows where action is null and log_status = 'NODATA'"),
        "1"
    );
    assert_eq!(
        one("select count(*) from flows where dstport between 3000 and 4000 and not (srcaddr in ('203.0.113.9', '192.0.2.1'))"),
        "3"
    );
    assert_eq!(
        one("select sum(case when action = 'REJECT' then 1 else 0 end), sum(if(action = 'ACCEPT', bytes)) / 1073741824 from flows"),
        "41,17"
    );
    assert_eq!(
        one("select date_trunc('hour', max(from_unixtime(start))), cast(min(start) as varchar), typeof(avg(bytes)) from flows where year = '2024'"),
        "2024-01-01 02:00:00.000,1704067200,double"
    );
    assert_eq!(
        one("select date_format(from_unixtime(1704067200), '%Y-%m-%d %H:%i'), to_unixtime(timestamp '2024-01-01 00:00:01'), date_diff('day', date '2023-12-20', current_date), date_add('hour', 2, timestamp '2024-01-01 23:00:00')"),
        "2024-01-01 00:00,1704067201.0,13,2024-01-02 01:00:00.000"
    );
    assert_eq!(
        one("select lower('AbC'), upper(action), coalesce(action, 'none'), length(interface_id), ip_prefix(srcaddr, 24), 7 % 3, 7 / 2, 7.0 / 2, -(3) from flows where log_status = 'NODATA' or srcaddr = '10.0.1.24' order by log_status limit 1"),
        "abc,,none,6,,1,3,3.5,-3"
    );
    assert_eq!(
        one("select upper(action), coalesce(action, 'none'), ip_prefix(srcaddr, 24) from flows where srcaddr = '10.0.1.24'"),
        "ACCEPT,ACCEPT,10.0.1.0/24"
    );
    assert_eq!(
        one("select count(*), count(distinct year), min(dt), max(month || '-' || day) from flows"),
        "45,2,2023/12/20,12-20"
    );
    assert_eq!(
        one("select approx_distinct(dstaddr), max_by(srcaddr, bytes), min(srcport) from flows"),
        "10,10.0.1.23,40000"
    );
}

#[test]
fn select_star_distinct_order_and_limit() {
    let dir = Dir::new("star");
    let log = seed_log(&dir);
    let out = run("SELECT * FROM flows LIMIT 2", std::slice::from_ref(&log));
    assert_eq!(out.columns.len(), 14);
    assert_eq!(out.columns[3].0, "srcaddr");
    assert_eq!(out.rows.len(), 2);
    assert_eq!(
        output::csv(&out).lines().nth(1).unwrap(),
        "2,123456789012,eni-0a,203.0.113.9,10.0.20.10,51000,3306,6,1,40,1704067300,1704067310,REJECT,OK"
    );
    assert_eq!(
        csv(
            "SELECT DISTINCT dstport FROM flows ORDER BY 1 DESC NULLS FIRST",
            std::slice::from_ref(&log)
        ),
        "dstport\n\n5432\n3306\n"
    );
    assert_eq!(
        csv("SELECT srcaddr AS s, count(*) c FROM flows GROUP BY s HAVING count(*) > 2 ORDER BY c, s", &[log]),
        "s,c\n198.51.100.4,3\n192.0.2.1,8\n203.0.113.9,30\n"
    );
}

fn err(sql: &str) -> String {
    let dir = Dir::new("err");
    let log = dir.write(
        "one.log",
        "2 1 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 1 2 ACCEPT OK\n",
    );
    match query(sql, &[log], &opts()) {
        Err(QueryError::Sql(e)) => e.to_string(),
        Err(QueryError::Eval(e)) => format!("eval: {e}"),
        other => panic!("{sql}: {other:?}"),
    }
}

#[test]
fn errors_name_the_problem_and_its_position() {
    assert_eq!(
        err("SELECT srcadr FROM flows"),
        "line 1, column 8: unknown column 'srcadr' (did you mean 'srcaddr'?)"
    );
    assert_eq!(
        err("SELECT count(*) FROM flows\nWHERE form_unixtime(start) > 0"),
        "line 2, column 7: unknown function 'form_unixtime' (did you mean 'from_unixtime'?)"
    );
    assert_eq!(
        err("SELECT srcaddr, count(*) FROM flows"),
        "line 1, column 8: column 'srcaddr' must appear in GROUP BY or be used in an aggregate function"
    );
    assert_eq!(
        err("SELECT 1 FROM flows WHERE sum(bytes) > 1"),
        "line 1, column 27: aggregate functions are not allowed in WHERE"
    );
    assert_eq!(
        err("SELECT 1 FROM flows WHERE srcport = 'x'"),
        "line 1, column 37: cannot compare bigint with varchar"
    );
    assert_eq!(
        err("SELECT srcaddr + 1 FROM flows"),
        "line 1, column 8: cannot apply + to varchar and bigint"
    );
    assert_eq!(
        err("SELECT 1 FROM flows ORDER BY 3"),
        "line 1, column 30: ORDER BY position 3 is not in the select list (1 to 1)"
    );
    assert_eq!(
        err("SELECT FROM flows"),
        "line 1, column 8: expected an expression, found 'FROM'"
    );
    assert_eq!(err("SELECT bytes / 0 FROM flows"), "eval: division by zero");
    assert_eq!(err("SELECT 1 / 0"), "line 1, column 8: division by zero");
    assert_eq!(
        err("SELECT cast('x' as bigint) FROM flows"),
        "line 1, column 8: cannot cast 'x' to bigint"
    );
    assert_eq!(
        err("SELECT a.b.c FROM t1 JOIN t2"),
        "line 1, column 22: joins are not supported: there is one table, the flow logs"
    );
}

#[test]
fn custom_formats_extra_fields_and_dash_nulls() {
    let dir = Dir::new("custom");
    let log = dir.write(
        "custom.log",
        "version vpc-id srcaddr dstaddr srcport dstport protocol tcp-flags pkt-srcaddr flow-direction action log-status start end packets bytes\n\
         5 vpc-1 10.0.0.5 10.0.0.9 40000 5432 6 2 192.168.1.7 ingress ACCEPT OK 1704067200 1704067260 3 180\n\
         5 vpc-1 10.0.0.9 10.0.0.5 5432 40000 6 18 - egress ACCEPT OK 1704067200 1704067260 3 180\n\
         5 vpc-2 10.0.0.6 10.0.0.9 40001 5432 6 - 192.168.1.8 ingress REJECT OK 1704067201 1704067261 1 40\n",
    );
    assert_eq!(
        csv(
            "SELECT vpc_id, coalesce(pkt_srcaddr, srcaddr) AS client, tcp_flags, flow_direction FROM flows ORDER BY start, srcaddr",
            std::slice::from_ref(&log)
        ),
        "vpc_id,client,tcp_flags,flow_direction\nvpc-1,192.168.1.7,2,ingress\nvpc-1,10.0.0.9,18,egress\nvpc-2,192.168.1.8,,ingress\n"
    );
    let out = run("SELECT * FROM flows", std::slice::from_ref(&log));
    let names: Vec<&str> = out.columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[14..],
        ["vpc_id", "tcp_flags", "pkt_srcaddr", "flow_direction"]
    );
    // Fields the format lacks are NULL.
    assert_eq!(
        csv(
            "SELECT count(*), count(account_id), count(interface_id) FROM flows",
            &[log]
        ),
        "_col0,_col1,_col2\n3,0,0\n"
    );
}

/// A log over 8 MiB (so it is cut into ranges), a second format from mid-file on, and bad
/// lines: every thread count gives the same answer and the bad lines' true line numbers.
#[test]
fn one_file_cut_across_threads() {
    let dir = Dir::new("split");
    let base = gen_log(&dir, "big.log", 90_000, false);
    let mut text = std::fs::read_to_string(&base).unwrap();
    let lines_before = text.lines().count();
    text.push_str("this is not a flow record\n");
    text.push_str("version srcaddr dstaddr srcport dstport protocol action log-status tcp-flags\n");
    for i in 0..500 {
        text.push_str(&format!(
            "2 10.9.0.{} 10.0.20.10 40000 5432 6 ACCEPT OK 2\n",
            i % 200
        ));
    }
    text.push_str("2 10.9.0.1 bad-address 40000 5432 6 ACCEPT OK 2\n");
    let path = dir.write("mixed.log", &text);
    assert!(std::fs::metadata(&path).unwrap().len() > 9 << 20);
    let sql = "SELECT count(*), count(tcp_flags), count(DISTINCT srcaddr), sum(bytes), max(srcport) FROM flows";
    let mut answers = Vec::new();
    for threads in [1, 2, 5] {
        let out = query(
            sql,
            std::slice::from_ref(&path),
            &Options { threads, ..opts() },
        )
        .unwrap();
        assert_eq!(out.stats.bad_lines, 2);
        let lines: Vec<usize> = out.stats.first_bad.iter().map(|b| b.line).collect();
        assert_eq!(
            lines,
            [lines_before + 1, lines_before + 503],
            "{threads} threads"
        );
        answers.push(output::csv(&out));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);
    assert!(
        answers[0].lines().nth(1).unwrap().starts_with("90500,500,"),
        "{}",
        answers[0]
    );

    // Under --strict the first bad line is the error.
    match query(
        sql,
        &[path],
        &Options {
            strict: true,
            ..opts()
        },
    ) {
        Err(QueryError::Bad(b)) => {
            assert_eq!(b.line, lines_before + 1);
            assert!(b.message.contains("expected"), "{}", b.message);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn limit_without_order_gives_the_first_rows_in_file_order() {
    let dir = Dir::new("limit");
    let log = gen_log(&dir, "big.log", 90_000, false);
    let out = run(
        "SELECT start, srcaddr FROM flows LIMIT 5",
        std::slice::from_ref(&log),
    );
    let first: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(" OK"))
        .take(5)
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            format!("{},{}", f[10], f[3])
        })
        .collect();
    let got: Vec<String> = output::csv(&out)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    // NODATA records have a start but no address; the generator puts them later.
    assert_eq!(got, first);
}

fn same_answers(a: &[PathBuf], b: &[PathBuf]) {
    for sql in [
        "SELECT count(*), sum(bytes), sum(packets), count(DISTINCT srcaddr), count(srcaddr) FROM flows",
        "SELECT action, protocol, count(*) AS n FROM flows GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT dstaddr, dstport, count(*) AS n FROM flows GROUP BY 1, 2 ORDER BY n DESC, dstaddr, dstport LIMIT 20",
        "SELECT dt, year, month, day, count(*) FROM flows GROUP BY 1, 2, 3, 4 ORDER BY 1",
        "SELECT srcaddr, sum(bytes) AS b FROM flows WHERE dstport IN (3306, 5432) GROUP BY 1 ORDER BY b DESC, srcaddr LIMIT 5",
        "SELECT max(tcp_flags), count(tcp_flags), min(log_status), max(account_id), max(interface_id) FROM flows",
        SEED_000_SCAN,
        SEED_000_EXFIL,
    ] {
        assert_eq!(csv(sql, a), csv(sql, b), "{sql}");
    }
}

#[test]
fn convert_to_parquet_and_query_it_back() {
    let dir = Dir::new("parquet");
    let log = gen_log(&dir, "g.log", 30_000, true);
    let out = dir.path("out");
    let stats =
        sumun_flows_sql::convert::convert(std::slice::from_ref(&log), &out, &Options::default())
            .unwrap();
    assert_eq!(stats.rows, 30_000);
    assert_eq!(stats.read.records, 30_000);
    assert!(
        stats.partitions.contains("year=2024/month=01/day=01"),
        "{:?}",
        stats.partitions
    );
    assert!(out
        .join("year=2024/month=01/day=01/flows-00000.parquet")
        .exists());
    same_answers(std::slice::from_ref(&log), std::slice::from_ref(&out));
    // The Parquet table has the custom field too.
    let cols = run("SELECT * FROM flows LIMIT 1", std::slice::from_ref(&out)).columns;
    assert_eq!(cols.last().unwrap().0, "tcp_flags");
    // Converting into the same place again refuses to overwrite.
    assert!(sumun_flows_sql::convert::convert(&[log], &out, &Options::default()).is_err());
}

#[test]
fn gzip_and_several_files() {
    let dir = Dir::new("gz");
    let log = seed_log(&dir);
    let text = std::fs::read(&log).unwrap();
    let gz = dir.path("seed.log.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&text).unwrap();
    enc.finish().unwrap();
    let both = [log.clone(), gz];
    let out = run("SELECT count(*) FROM flows", &both);
    assert_eq!(out.stats.files, 2);
    assert_eq!(output::csv(&out), "_col0\n90\n");
    let _ = Path::new(&log);
}

/// Aggregations on fixed-width keys (addresses, integers, timestamps) run on typed hash tables;
/// every aggregate must give what the `Value` path gives, on IPv4 and IPv6 keys, NULL keys
/// (NODATA records, `-` fields), NULL arguments, across thread counts; and a few answers are
/// checked by hand.
#[test]
fn typed_group_keys_match_value_keys() {
    let dir = Dir::new("typed");
    let base = gen_log(&dir, "g.log", 40_000, false);
    let mut text = std::fs::read_to_string(&base).unwrap();
    text.push_str("2 123456789012 eni-1 2001:db8::7 2001:db8::1 40000 5432 6 3 300 1704067200 1704067260 ACCEPT OK\n");
    text.push_str("2 123456789012 eni-1 2001:db8::7 10.0.0.1 40001 5433 6 4 400 1704067100 1704067300 REJECT OK\n");
    text.push_str("2 123456789012 eni-1 2001:db8::7 10.0.0.1 40001 5433 6 - - 1704067000 1704067400 REJECT SKIPDATA\n");
    text.push_str("2 123456789012 eni-1 - - - - - - - 1704067200 1704067260 - NODATA\n");
    text.push_str("2 123456789012 eni-1 - - - - - - - 1704067200 1704067260 - SKIPDATA\n");
    let log = dir.write("typed.log", &text);
    let files = std::slice::from_ref(&log);
    let queries = [
        "SELECT srcaddr, count(*), sum(bytes), count(bytes), min(start), max(\"end\"), count(DISTINCT dstport), approx_distinct(dstaddr), avg(packets), count_if(action = 'REJECT'), min(from_unixtime(start)), max_by(dstport, bytes) FROM flows GROUP BY srcaddr",
        "SELECT srcaddr, dstaddr, count(DISTINCT dstport) AS ports, count(*) FROM flows GROUP BY srcaddr, dstaddr",
        "SELECT dstport, protocol, sum(packets), sum(DISTINCT packets), arbitrary(log_status IS NULL) FROM flows GROUP BY 1, 2",
        "SELECT date_trunc('hour', from_unixtime(start)) AS h, log_status = 'OK', count(*), min(bytes), max(bytes) FROM flows GROUP BY 1, 2",
        "SELECT DISTINCT dstaddr, dstport FROM flows",
        "SELECT srcaddr, count(*) FROM flows WHERE action = 'REJECT' GROUP BY srcaddr HAVING count(DISTINCT dstport) >= 2",
    ];
    let sorted = |out: &Output| {
        let text = output::csv(out);
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines[1..].sort();
        lines.join("\n")
    };
    for sql in queries {
        let reference = sorted(
            &query(
                sql,
                files,
                &Options {
                    value_keys: true,
                    threads: 1,
                    ..opts()
                },
            )
            .unwrap(),
        );
        assert!(reference.lines().count() > 2, "{sql}: {reference}");
        for threads in [1, 2, 3] {
            let typed = sorted(&query(sql, files, &Options { threads, ..opts() }).unwrap());
            assert_eq!(typed, reference, "{sql} on {threads} threads");
        }
    }

    // By hand: the IPv6 source and the NULL source (two NODATA/SKIPDATA records).
    let out = csv(
        "SELECT srcaddr, count(*), sum(bytes), count(bytes), count(DISTINCT dstport), min(start), max(\"end\") FROM flows WHERE interface_id = 'eni-1' GROUP BY srcaddr ORDER BY srcaddr NULLS LAST",
        files,
    );
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(run("SELECT count(*) FROM flows", files).stats.bad_lines, 0);
    assert_eq!(
        lines,
        [
            "2001:db8::7,2,700,2,2,1704067100,1704067300",
            // Not OK: no address, no bytes (sum NULL, counts 0), times kept.
            ",3,,0,0,1704067000,1704067400"
        ],
        "{out}"
    );
}

/// A file the fuzz target found (fuzz/fuzz_targets/flows_parquet.rs): a column chunk with a
/// negative offset, on which the `parquet` crate panics. It is refused with a reason, before
/// the crate sees it.
#[test]
fn parquet_chunk_outside_the_file_is_refused_with_a_reason() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz-negative-chunk-offset.parquet");
    for sql in ["SELECT count(*) FROM flows", "SELECT * FROM flows"] {
        match query(sql, std::slice::from_ref(&file), &opts()) {
            Err(QueryError::Parquet { message, .. }) => {
                assert!(message.contains("outside the file"), "{sql}: {message}")
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
}

/// Parquet under `year=/month=/day=` directories: a WHERE condition on those columns alone
/// skips the files of other days without reading them (fewer records read), and the answers
/// are those of the text log.
#[test]
fn partition_pruning_reads_only_the_matching_days() {
    let dir = Dir::new("prune");
    let path = dir.path("g.log");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    generate(
        &GenOptions {
            seed: 9,
            records: 30_000,
            // Three days from 2024-01-01.
            start: 1_704_067_200,
            span: 3 * 86_400,
            ..GenOptions::default()
        },
        &mut f,
    )
    .unwrap();
    f.flush().unwrap();
    drop(f);
    let out = dir.path("pq");
    let stats =
        sumun_flows_sql::convert::convert(std::slice::from_ref(&path), &out, &Options::default())
            .unwrap();
    assert!(stats.partitions.len() >= 3, "{:?}", stats.partitions);
    let files = |p: &PathBuf| vec![p.clone()];
    for sql in [
        "SELECT count(*), sum(bytes) FROM flows WHERE day = '02'",
        "SELECT count(*) FROM flows WHERE year = '2024' AND month = '01' AND day >= '02' AND dstport = 5432",
        "SELECT dt, count(*) FROM flows WHERE dt IN ('2024/01/01', '2024/01/03') GROUP BY dt ORDER BY dt",
    ] {
        let text = run(sql, &files(&path));
        let parquet = run(sql, &files(&out));
        assert_eq!(output::csv(&text), output::csv(&parquet), "{sql}");
        // The text log is read whole; the Parquet days that cannot match are not read.
        assert_eq!(text.stats.records, 30_000, "{sql}");
        assert!(
            parquet.stats.records < 25_000 && parquet.stats.records > 0,
            "{sql}: {} records read",
            parquet.stats.records
        );
    }
    // A condition that mixes a partition column with another column prunes nothing.
    let sql = "SELECT count(*) FROM flows WHERE day = '02' OR dstport = 5432";
    let parquet = run(sql, &files(&out));
    assert_eq!(parquet.stats.records, 30_000);
    assert_eq!(output::csv(&run(sql, &files(&path))), output::csv(&parquet));
}

/// An address column holding text that is not an address (a custom field, kept as text) makes
/// a GROUP BY on it leave the typed tables for `Value` keys mid-query; the answer is complete.
#[test]
fn group_by_an_address_column_holding_text() {
    let dir = Dir::new("untyped");
    let mut text = String::from(
        "version srcaddr dstaddr srcport dstport protocol pkt-srcaddr action log-status\n",
    );
    for i in 0..3000 {
        let pkt = if i % 1000 == 999 {
            "not-an-address".to_string()
        } else {
            format!("192.168.0.{}", i % 7)
        };
        text.push_str(&format!(
            "5 10.0.0.{} 10.0.0.9 40000 5432 6 {pkt} ACCEPT OK\n",
            i % 5
        ));
    }
    let log = dir.write("text-in-address.log", &text);
    for threads in [1, 2] {
        let out = query(
            "SELECT pkt_srcaddr, count(*), count(DISTINCT srcaddr) FROM flows GROUP BY pkt_srcaddr ORDER BY pkt_srcaddr",
            std::slice::from_ref(&log),
            &Options { threads, ..opts() },
        )
        .unwrap();
        let csv = output::csv(&out);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + 8, "{csv}");
        assert_eq!(lines[8], "not-an-address,3,1", "{csv}");
        assert_eq!(out.stats.records, 3000);
    }
}
