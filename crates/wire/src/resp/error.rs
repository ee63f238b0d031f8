//! What can be wrong with RESP bytes, and how Redis words it to a client.

use thiserror::Error;

/// Bad input: the bytes can never become a valid frame however many more arrive. (Input that
/// is merely incomplete is not an error: decoders return `Ok(None)` for it.)
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RespError {
    #[error("inline command longer than {max} bytes")]
    InlineTooLong { max: usize },
    #[error("unbalanced quotes in inline command")]
    UnbalancedQuotes,
    #[error("length line longer than {max} bytes")]
    LineTooLong { max: usize, bulk: bool },
    #[error("invalid {what} length {text:?}")]
    InvalidLength { what: &'static str, text: String },
    #[error("bulk string of {len} bytes is longer than the limit of {max}")]
    BulkTooLong {
        len: i64,
        max: u64,
        /// The limit was the one for clients that have not authenticated yet.
        unauthenticated: bool,
    },
    #[error("{what} of {count} elements is larger than the limit of {max}")]
    TooManyElements {
        what: &'static str,
        count: i64,
        max: u64,
        unauthenticated: bool,
    },
    #[error("values nested deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("expected a bulk string ('$') in a command, got {got:?}")]
    ExpectedBulk { got: char },
    #[error("unknown RESP type byte {byte:#04x}")]
    UnknownType { byte: u8 },
    #[error("{what} is not followed by CRLF")]
    MissingCrlf { what: &'static str },
    #[error("malformed {what}")]
    Malformed { what: &'static str },
    #[error("RESP3 streamed strings and aggregates are not supported")]
    Streamed,
}

impl RespError {
    /// The error line (without `-` and CRLF) Redis sends a client for this input, so a proxy
    /// answers as the server would. Redis closes the connection after it; so should the proxy.
    pub fn reply(&self) -> String {
        let detail = match self {
            RespError::InlineTooLong { .. } => "too big inline request".to_string(),
            RespError::UnbalancedQuotes => "unbalanced quotes in request".to_string(),
            RespError::LineTooLong { bulk: false, .. } => "too big mbulk count string".to_string(),
            RespError::LineTooLong { bulk: true, .. } => "too big bulk count string".to_string(),
            RespError::InvalidLength { what, .. } if what.contains("bulk string") => {
                "invalid bulk length".to_string()
            }
            RespError::InvalidLength { .. } => "invalid multibulk length".to_string(),
            // Redis checks proto-max-bulk-len before its unauthenticated limit.
            RespError::BulkTooLong {
                unauthenticated: true,
                len,
                ..
            } if *len as u64 <= super::DEFAULT_MAX_BULK_LEN => {
                "unauthenticated bulk length".to_string()
            }
            RespError::BulkTooLong { .. } => "invalid bulk length".to_string(),
            RespError::TooManyElements {
                unauthenticated: true,
                ..
            } => "unauthenticated multibulk length".to_string(),
            RespError::TooManyElements { .. } => "invalid multibulk length".to_string(),
            RespError::ExpectedBulk { got } => format!("expected '$', got '{got}'"),
            other => other.to_string(),
        };
        format!("ERR Protocol error: {detail}")
    }
}
