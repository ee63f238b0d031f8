//! Errors. A problem with the query text carries its line and column; the others say which
//! file (and line) or which value was at fault.

use sumun_flows_tools::input::{BadLine, InputError};

/// A problem with the query: syntax, an unknown column or function, a type mismatch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct SqlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl SqlError {
    /// An error at byte offset `pos` of `sql` (clamped to its length).
    pub fn at(sql: &str, pos: usize, message: impl Into<String>) -> SqlError {
        let pos = pos.min(sql.len());
        let before = sql.as_bytes().get(..pos).unwrap_or_default();
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        SqlError {
            line,
            column,
            message: message.into(),
        }
    }
}

/// A failure while evaluating an expression on a value (division by zero, a cast that cannot
/// be done): the query is right, the data does not fit it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// Anything that can stop a query, a conversion or a DDL print.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Input(#[from] InputError),
    /// A bad line under `--strict`.
    #[error("{0}")]
    Bad(BadLine),
    #[error("{path}: {message}")]
    Parquet { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

impl QueryError {
    /// Whether the user can fix it (query, arguments, input files) rather than the machine.
    pub fn is_input(&self) -> bool {
        match self {
            QueryError::Sql(_)
            | QueryError::Eval(_)
            | QueryError::Bad(_)
            | QueryError::Parquet { .. }
            | QueryError::Usage(_) => true,
            QueryError::Input(e) => e.is_input(),
            QueryError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ),
        }
    }
}
