//! `check-config`: load everything as `run` would, print the effective
//! rules and warnings, or every problem; succeed only when the server
//! would start.

use std::process::ExitCode;

use super::{Stdout, origin, print_problems};
use crate::cli::CheckConfigArgs;
use crate::config::{self, Config};

/// Runs `check-config`.
pub fn execute(args: &CheckConfigArgs) -> Result<ExitCode, String> {
    match Config::load(&origin(&args.config)) {
        Ok(config) => {
            Stdout::write(config::describe(&config).as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => Ok(print_problems(&error)),
    }
}
