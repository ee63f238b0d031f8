//! Sumun's configuration: one TOML file read in two stages. `raw` reads a `RawConfig` that
//! mirrors the file (unknown keys rejected, spans kept); `validate` turns it into a `Config`
//! whose cross references resolve and whose files exist, reporting every problem at once as
//! `FILE:LINE:COL: message`. No tokio, no sockets: loading a config never touches the network
//! except to resolve target host names.

mod model;
pub mod raw;
mod token;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::*;
pub use token::{read_admin_token, AdminToken, TokenFileError, ADMIN_TOKEN_MIN_LEN};
pub use validate::{parse_duration, parse_net, parse_net_lines, parse_size, ValueError};

/// One thing wrong with a config file, at a place in it. Displays as `FILE:LINE:COL: message`;
/// line and column count from 1 (column in characters); `0:0` means the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Everything wrong with a config file, in file order; never empty. Displays one problem a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors {
    problems: Vec<Problem>,
}

impl ConfigErrors {
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

/// Read and validate the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => Err(ConfigErrors {
            problems: vec![Problem {
                file: path.to_path_buf(),
                line: 0,
                col: 0,
                message: format!("cannot read: {e}"),
            }],
        }),
    }
}

/// Validate config `text` as if read from `origin`: messages name `origin`, and relative paths
/// in the text are taken from `origin`'s directory.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigErrors> {
    let errors = |spans: Vec<(raw::Span, String)>| {
        let mut problems: Vec<Problem> = spans
            .into_iter()
            .map(|(span, message)| {
                let (line, col) = line_col(text, span.start);
                Problem {
                    file: origin.to_path_buf(),
                    line,
                    col,
                    message,
                }
            })
            .collect();
        problems.sort_by_key(|p| (p.line, p.col));
        problems.dedup();
        ConfigErrors { problems }
    };
    let reading = raw::read(text).map_err(|e| errors(vec![e]))?;
    let shown = origin.parent().map(Path::to_path_buf).unwrap_or_default();
    let absolute = if shown.as_os_str().is_empty() {
        std::env::current_dir()
    } else {
        std::path::absolute(&shown)
    }
    .unwrap_or_else(|_| shown.clone());
    let source = std::path::absolute(origin).unwrap_or_else(|_| origin.to_path_buf());
    let base = validate::Base { shown, absolute };
    let result = validate::validate(&reading.config, &reading.unnamed, text, &base, Some(source));
    let mut spans = reading.problems;
    match result {
        Ok(config) if spans.is_empty() => Ok(config),
        Ok(_) => Err(errors(spans)),
        Err(more) => {
            spans.extend(more);
            Err(errors(spans))
        }
    }
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}
