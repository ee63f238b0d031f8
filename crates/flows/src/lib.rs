//! Flow records in the AWS VPC flow log format: the one-line summary of a connection that the
//! gateway writes ([`FlowRecord`]), and the reading of those lines and of real AWS flow logs,
//! default or custom format ([`parse_line`], [`Reader`]), so the same tools query both.
//!
//! This crate is pure data: it does not write files, read clocks or know the gateway. The only
//! I/O is [`Reader`] pulling lines from a caller-supplied `BufRead`. SQL over flows, hunts and
//! rule synthesis will be built on [`Flow`] later.

mod format;
mod reader;
mod record;

pub use format::{Field, Format, FormatError};
pub use reader::{Flow, ReadError, Reader, MAX_LINE};
pub use record::{parse_line, Action, FlowParseError, FlowRecord, LogStatus};
