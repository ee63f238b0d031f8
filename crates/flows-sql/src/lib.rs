//! SQL over flow logs: `sumun flows query`, `convert` and `ddl`.
//!
//! An engine made for one table, `flows` (AWS's Athena columns for VPC flow logs): a lexer and
//! recursive-descent parser for a Presto/Athena-flavoured SELECT subset ([`parser`]), a binder
//! that resolves names, checks types and folds constants ([`bind`]), and an executor that reads
//! the logs in parallel, materializes only the columns the query reads (those of WHERE first),
//! and aggregates in hash tables ([`exec`]). Inputs are text logs (plain, gzip, custom formats)
//! or the Parquet that [`convert`] writes, partitioned as AWS lays flow logs out in S3; [`ddl`]
//! prints the table definition that lets Athena, Trino or Spark read the same files.
//!
//! Why not Apache DataFusion: see docs/flows.md ("Why an engine of its own"). This crate does
//! not print; the CLI does.

pub mod agg;
pub mod ast;
pub mod bind;
pub mod convert;
pub mod ddl;
pub mod error;
pub mod exec;
pub mod expr;
pub mod lexer;
pub mod output;
pub mod parquet_io;
pub mod parser;
pub mod scan;
pub mod schema;
pub mod typed;
pub mod value;

use std::path::PathBuf;

pub use error::{EvalError, QueryError, SqlError};
pub use exec::{Options, Output};
pub use value::{Type, Value};

/// Parses and binds `sql` against `inputs` without running it (for checking a query).
pub fn plan(sql: &str, inputs: &scan::Inputs, now_ms: i64) -> Result<bind::Plan, QueryError> {
    let q = parser::parse(sql)?;
    Ok(bind::bind(sql, &q, now_ms, &inputs.extras)?)
}

/// Runs `sql` over the flow logs (or Parquet directories) at `paths`.
pub fn query(sql: &str, paths: &[PathBuf], opts: &Options) -> Result<Output, QueryError> {
    // Parse first: a syntax error is reported before any file is opened.
    let q = parser::parse(sql)?;
    let inputs = scan::Inputs::discover(paths)?;
    let plan = bind::bind(sql, &q, opts.now_ms, &inputs.extras)?;
    exec::run(&plan, &inputs, opts)
}

/// [`query`] over inputs already discovered (the CLI looks at them first to size its progress
/// bar).
pub fn query_inputs(
    sql: &str,
    inputs: &scan::Inputs,
    opts: &Options,
) -> Result<Output, QueryError> {
    let plan = plan(sql, inputs, opts.now_ms)?;
    exec::run(&plan, inputs, opts)
}
