//! Sumun's configuration: one TOML file read in two stages. Serde reads a `RawConfig` that
//! mirrors the file (unknown keys rejected, spans kept); `validate` turns it into a `Config`
//! whose cross references resolve and whose files exist, reporting every problem at once as
//! `FILE:LINE:COL: message`. No tokio, no sockets: loading a config never touches the network
//! except to resolve target host names.

mod model;

pub use model::*;
