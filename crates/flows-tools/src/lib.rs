//! Work over flow logs, built on `sumun-flows` (which only parses lines): reading files and
//! directories as users have them ([`input`]), a seeded generator of realistic logs with
//! planted attacks ([`generate`]), least-privilege rules from observed traffic ([`suggest`]),
//! threat hunts ([`hunt`]) and "why is this connection refused" against a Sumun config
//! ([`explain`]).
//!
//! No printing and no process exits: the `sumun` binary does that. No SQL engine either: the
//! `flows query` engine will live in a crate of its own so the rest builds without it.

pub mod aws;
pub mod explain;
pub mod generate;
pub mod hunt;
pub mod input;
pub mod orient;
pub mod suggest;
