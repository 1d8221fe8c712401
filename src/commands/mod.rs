//! The subcommands, together: `run` (the daemon) and the offline commands
//! beside it (`check-config`, `sign`, `verify`, `keygen`, `testkey`,
//! `rotate`, `doctor`).
//!
//! Each takes its parsed arguments ([`crate::cli`]) and returns the exit
//! status, or one line for the user. Output goes through [`Stdout`], which
//! treats a closed pipe (`check-config ... | head -1`) as the reader having
//! seen enough, never as a failure or a panic. This module turns library
//! results into text; the work itself stays in the library modules, so
//! tests never need to spawn the binary.

pub mod check_config;
pub mod doctor;
pub mod keygen;
pub mod rotate;
pub mod run;
pub mod sign;
pub mod testkey;
pub mod verify;

use std::io::{self, Write as _};
use std::process::ExitCode;

use crate::cli::ConfigSource;
use crate::config::{ConfigError, Format, Origin};

/// Standard output for a command's results.
pub struct Stdout;

impl Stdout {
    /// Writes `bytes` and flushes. A reader that went away (EPIPE) ends
    /// the output quietly; any other failure is an error for the user.
    pub fn write(bytes: &[u8]) -> Result<(), String> {
        let mut out = io::stdout().lock();
        match out.write_all(bytes).and_then(|()| out.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(format!("cannot write to standard output: {e}")),
        }
    }
}

/// One line on standard error, prefixed with the program's name. A closed
/// stderr is ignored: there is nobody left to tell.
pub fn say(line: impl std::fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "dkim-sidecar: {line}");
}

/// Which file the command line names, and in which format.
pub fn origin(source: &ConfigSource) -> Origin {
    match (&source.toml, &source.opendkim) {
        (Some(path), _) => Origin {
            path: path.clone(),
            format: Format::Toml,
        },
        (None, Some(path)) => Origin {
            path: path.clone(),
            format: Format::OpenDkim,
        },
        (None, None) => unreachable!("clap requires -c or -x"),
    }
}

/// For the commands that filter one message (`sign`, `verify`): log lines
/// go to stderr, filtered by `RUST_LOG` (default `info`), starting with
/// the configuration's `warnings`. (`run` logs as configured:
/// [`crate::daemon::main`].)
pub fn log_to_stderr(warnings: &[crate::diagnostics::Warning]) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .init();
    for warning in warnings {
        tracing::warn!("{warning}");
    }
}

/// The message on standard input, whole.
pub fn message_from_stdin() -> Result<Vec<u8>, String> {
    let mut message = Vec::new();
    io::Read::read_to_end(&mut io::stdin(), &mut message)
        .map_err(|e| format!("cannot read the message from stdin: {e}"))?;
    Ok(message)
}

/// Every problem of a configuration that does not load, one line each.
pub fn print_problems(error: &ConfigError) -> ExitCode {
    for problem in error.problems() {
        say(problem);
    }
    ExitCode::FAILURE
}
