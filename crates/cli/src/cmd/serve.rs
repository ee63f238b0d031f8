//! `sumun serve|validate|status|quickstart|cert`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct QuickstartArgs {}
#[derive(Args)]
pub struct ServeArgs {}
#[derive(Args)]
pub struct ValidateArgs {}
#[derive(Args)]
pub struct StatusArgs {}
#[derive(Subcommand)]
pub enum CertCmd {
    /// Write a dev CA and server certificate.
    Dev,
}

pub fn quickstart(_: QuickstartArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
pub fn serve(_: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
pub fn validate(_: ValidateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
pub fn status(_: StatusArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
pub fn cert(_: CertCmd) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
