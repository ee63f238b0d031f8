//! `CREATE EXTERNAL TABLE` for the layout `convert` writes (Parquet under
//! `year=YYYY/month=MM/day=DD/`), for Athena (with partition projection, so no `MSCK REPAIR` or
//! crawler is needed as days are added), Trino's Hive connector and Spark SQL.

use crate::error::QueryError;
use crate::schema::{lookup, COLUMNS, DEFAULT_COLUMNS, STORED};
use crate::value::Type;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Athena,
    Trino,
    Spark,
}

pub struct DdlOptions<'a> {
    pub engine: Engine,
    pub location: &'a str,
    pub table: &'a str,
    /// Custom-format fields to add after the default ones (`tcp-flags`, `pkt_srcaddr`...).
    pub fields: &'a [String],
    /// Years the Athena projection covers.
    pub years: (u32, u32),
}

fn sql_type(c: usize, engine: Engine) -> &'static str {
    let name = COLUMNS[c].name;
    let big = matches!(name, "packets" | "bytes" | "start" | "end");
    match (COLUMNS[c].ty, engine) {
        (Type::Int, _) if big => "bigint",
        (Type::Int, Engine::Trino) => "integer",
        (Type::Int, _) => "int",
        (_, Engine::Trino) => "varchar",
        _ => "string",
    }
}

pub fn ddl(o: &DdlOptions<'_>) -> Result<String, QueryError> {
    let bad = |m: &str| Err(QueryError::Usage(m.to_string()));
    if o.location.is_empty() || o.location.contains(['\'', '\n', '\\']) {
        return bad("--location must be an S3 URI without quotes, e.g. s3://bucket/flows/");
    }
    if !(o.location.starts_with("s3://") || o.location.starts_with("s3a://")) {
        return bad("--location must start with s3:// (s3a:// for Spark on Hadoop)");
    }
    if o.table.is_empty()
        || !o
            .table
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return bad("--table takes a name of letters, digits and _ (optionally db.table)");
    }
    if o.years.0 > o.years.1 || o.years.1 > 9999 {
        return bad("--years takes FIRST,LAST with FIRST <= LAST");
    }
    let mut cols: Vec<usize> = (0..DEFAULT_COLUMNS).collect();
    for f in o.fields {
        match lookup(f.trim()) {
            Some(c) if c < STORED => {
                if !cols.contains(&c) {
                    cols.push(c);
                }
            }
            _ => {
                return Err(QueryError::Usage(format!(
                    "--fields: unknown flow log field '{}'",
                    f.chars().take(40).collect::<String>()
                )))
            }
        }
    }
    let loc = o.location.trim_end_matches('/');
    let quote = |n: &str| -> String {
        match (o.engine, n) {
            (Engine::Trino, "end") => "\"end\"".into(),
            (_, "end") => "`end`".into(),
            _ => n.to_string(),
        }
    };
    let mut s = String::new();
    let columns: Vec<String> = cols
        .iter()
        .map(|&c| format!("  {} {}", quote(COLUMNS[c].name), sql_type(c, o.engine)))
        .collect();
    match o.engine {
        Engine::Athena => {
            s.push_str(&format!(
                "CREATE EXTERNAL TABLE IF NOT EXISTS {} (\n",
                o.table
            ));
            s.push_str(&columns.join(",\n"));
            s.push_str("\n)\nPARTITIONED BY (year string, month string, day string)\n");
            s.push_str("STORED AS PARQUET\n");
            s.push_str(&format!("LOCATION '{loc}/'\n"));
            s.push_str("TBLPROPERTIES (\n");
            s.push_str("  'parquet.compression' = 'SNAPPY',\n");
            s.push_str("  'projection.enabled' = 'true',\n");
            s.push_str("  'projection.year.type' = 'integer',\n");
            s.push_str(&format!(
                "  'projection.year.range' = '{},{}',\n",
                o.years.0, o.years.1
            ));
            s.push_str("  'projection.month.type' = 'integer',\n");
            s.push_str("  'projection.month.range' = '1,12',\n");
            s.push_str("  'projection.month.digits' = '2',\n");
            s.push_str("  'projection.day.type' = 'integer',\n");
            s.push_str("  'projection.day.range' = '1,31',\n");
            s.push_str("  'projection.day.digits' = '2',\n");
            s.push_str(&format!(
                "  'storage.location.template' = '{loc}/year=${{year}}/month=${{month}}/day=${{day}}/'\n"
            ));
            s.push_str(");\n");
        }
        Engine::Trino => {
            s.push_str(&format!("CREATE TABLE IF NOT EXISTS {} (\n", o.table));
            s.push_str(&columns.join(",\n"));
            s.push_str(",\n  year varchar,\n  month varchar,\n  day varchar\n)\nWITH (\n");
            s.push_str("  format = 'PARQUET',\n");
            s.push_str(&format!("  external_location = '{loc}/',\n"));
            s.push_str("  partitioned_by = ARRAY['year', 'month', 'day']\n);\n");
            let (schema, table) = match o.table.rsplit_once('.') {
                Some((a, b)) => (a.rsplit('.').next().unwrap_or(a), b),
                None => ("default", o.table),
            };
            s.push_str(&format!(
                "-- register the partitions (again after new days arrive):\nCALL system.sync_partition_metadata('{schema}', '{table}', 'ADD');\n"
            ));
        }
        Engine::Spark => {
            s.push_str(&format!("CREATE TABLE IF NOT EXISTS {} (\n", o.table));
            s.push_str(&columns.join(",\n"));
            s.push_str(",\n  year string,\n  month string,\n  day string\n)\nUSING PARQUET\n");
            s.push_str("PARTITIONED BY (year, month, day)\n");
            s.push_str(&format!("LOCATION '{loc}/';\n"));
            s.push_str(&format!(
                "-- register the partitions (again after new days arrive):\nMSCK REPAIR TABLE {};\n",
                o.table
            ));
        }
    }
    Ok(s)
}
