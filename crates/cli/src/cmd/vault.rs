//! `sumun vault|secrets|users|keys|token`: placeholder until the vault commands land.

use std::process::ExitCode;

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum VaultCmd {
    /// Create a vault.
    Init,
}
#[derive(Subcommand)]
pub enum SecretsCmd {
    /// List secrets.
    List,
}
#[derive(Subcommand)]
pub enum UsersCmd {
    /// Store a password verifier.
    SetPassword,
}
#[derive(Subcommand)]
pub enum KeysCmd {
    /// Rotate keys.
    Rotate,
}
#[derive(Args)]
pub struct TokenArgs {}

fn not_yet() -> anyhow::Result<ExitCode> {
    anyhow::bail!("the vault commands are not built yet")
}
pub fn vault(_: VaultCmd) -> anyhow::Result<ExitCode> {
    not_yet()
}
pub fn secrets(_: SecretsCmd) -> anyhow::Result<ExitCode> {
    not_yet()
}
pub fn users(_: UsersCmd) -> anyhow::Result<ExitCode> {
    not_yet()
}
pub fn keys(_: KeysCmd) -> anyhow::Result<ExitCode> {
    not_yet()
}
pub fn token(_: TokenArgs) -> anyhow::Result<ExitCode> {
    not_yet()
}
