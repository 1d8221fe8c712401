//! The `dkim-sidecar` binary: parse the command line and hand each
//! subcommand to [`dkim_sidecar::commands`]; an error becomes one line on
//! stderr and a non-zero exit status.

use std::process::ExitCode;

use clap::Parser;

use dkim_sidecar::cli::{Cli, Command};
use dkim_sidecar::commands::{
    self, check_config, doctor, keygen, rotate, run, sign, testkey, verify,
};

/// mimalloc rather than glibc's malloc: a message's buffers are often
/// allocated on a connection thread and freed on a work thread, and
/// glibc's per-thread arenas make that slow (docs/performance.md, "Where
/// the time goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
