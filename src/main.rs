//! The `dkim-sidecar` binary: parse the command line and hand each
//! subcommand to [`dkim_sidecar::commands`]; an error becomes one line on
//! stderr and a non-zero exit status.

use std::process::ExitCode;

use clap::Parser;

use dkim_sidecar::cli::{Cli, Command};
use dkim_sidecar::commands::{
    self, check_config, doctor, keygen, rotate, run, sign, testkey, verify,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::execute(&args),
        Command::CheckConfig(args) => check_config::execute(&args),
        Command::Sign(args) => sign::execute(&args),
        Command::Verify(args) => verify::execute(&args),
        Command::Keygen(args) => keygen::execute(&args),
        Command::Testkey(args) => testkey::execute(&args),
        Command::Rotate(args) => rotate::execute(&args),
        Command::Doctor(args) => doctor::execute(&args),
    };
    result.unwrap_or_else(|message| {
        commands::say(message);
        ExitCode::FAILURE
    })
}
