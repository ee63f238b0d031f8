//! Feeds arbitrary bytes to the Parquet reader of `sumun flows query` (files users point it at,
//! or that an S3 bucket holds, are untrusted): every row group read for a query that reads
//! every column and for one that reads none (rows are then counted by decoding a column).
//! Beyond "never panics" (a panic inside the `parquet` crate is caught and becomes an error,
//! but libFuzzer still reports it): memory stays bounded whatever row count the file claims,
//! and a file that reads without error gives both queries the same number of rows.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_flows_sql::bind::bind;
use sumun_flows_sql::parquet_io::scan_bytes;
use sumun_flows_sql::parser::parse;

fuzz_target!(|data: &[u8]| {
    let plan = |sql: &str| bind(sql, &parse(sql).unwrap(), 0, &[]).unwrap();
    let all = plan("SELECT * FROM flows");
    let none = plan("SELECT count(*) FROM flows");
    let mut seen = 0u64;
    let a = scan_bytes(data, &all, &mut |row| {
        seen += 1;
        assert!(!row.is_empty());
        Ok(true)
    });
    let b = scan_bytes(data, &none, &mut |_| Ok(true));
    if let (Ok(a), Ok(b)) = (&a, &b) {
        assert_eq!(a, b, "rows of every column and rows counted differ");
        assert_eq!(*a, seen);
    }
});
