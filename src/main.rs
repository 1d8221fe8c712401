//! The `dkim-sidecar` binary: parse the command line, hand each subcommand
//! to the library, turn its error into one line on stderr and an exit code.

use std::process::ExitCode;

use clap::Parser;
use dkim_sidecar::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<(), String> = match cli.command {
        Command::Run(_)
        | Command::Keygen(_)
        | Command::Testkey(_)
        | Command::CheckConfig(_)
        | Command::Sign(_) => Err("this subcommand is not built yet".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("dkim-sidecar: {message}");
            ExitCode::FAILURE
        }
    }
}
