//! The `sumun` binary: argument parsing and wiring only. This is the only crate that prints to
//! stdout; everything it runs lives in the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "sumun",
    version,
    about = "Sumun (守門): a zero-trust data access gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create (or reuse) a ready-to-run setup in front of the local databases and serve it.
    Quickstart(cmd::serve::QuickstartArgs),
    /// Run the gateway.
    Serve(cmd::serve::ServeArgs),
    /// Check a config without serving; print every problem as FILE:LINE:COL: message.
    Validate(cmd::serve::ValidateArgs),
    /// Show targets, health and connections from a running gateway's admin API.
    Status(cmd::serve::StatusArgs),
    /// Certificates.
    #[command(subcommand)]
    Cert(cmd::serve::CertCmd),
    /// The encrypted vault.
    #[command(subcommand)]
    Vault(cmd::vault::VaultCmd),
    /// Backend credentials held in the vault.
    #[command(subcommand)]
    Secrets(cmd::vault::SecretsCmd),
    /// Password verifiers for gateway users.
    #[command(subcommand)]
    Users(cmd::vault::UsersCmd),
    /// Master key and token signing key rotation.
    #[command(subcommand)]
    Keys(cmd::vault::KeysCmd),
    /// Print a short-lived token to use as a password.
    Token(cmd::vault::TokenArgs),
    /// Flow logs: least-privilege rules, threat hunts, explain, a generator.
    #[command(subcommand)]
    Flows(cmd::flows::FlowsCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Quickstart(a) => cmd::serve::quickstart(a),
        Command::Serve(a) => cmd::serve::serve(a),
        Command::Validate(a) => cmd::serve::validate(a),
        Command::Status(a) => cmd::serve::status(a),
        Command::Cert(c) => cmd::serve::cert(c),
        Command::Vault(c) => cmd::vault::vault(c),
        Command::Secrets(c) => cmd::vault::secrets(c),
        Command::Users(c) => cmd::vault::users(c),
        Command::Keys(c) => cmd::vault::keys(c),
        Command::Token(a) => cmd::vault::token(a),
        Command::Flows(c) => cmd::flows::flows(c),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sumun: {err:#}");
            ExitCode::from(1)
        }
    }
}
