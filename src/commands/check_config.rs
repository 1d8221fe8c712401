//! `check-config`: load everything as `run` would, print the effective
//! rules and warnings, or every problem; succeed only when the server
//! would start and every key it names can sign (a key that cannot sign
//! does not stop `run`, but its mail is refused, so it fails here). A file
//! without a socket passes with a warning, as with OpenDKIM's `-n`: `run
//! --socket` or a systemd socket unit may supply it.

use std::process::ExitCode;

use super::{Stdout, origin, print_problems};
use crate::cli::CheckConfigArgs;
use crate::config::{self, Config, Overrides};

/// Runs `check-config`.
pub fn execute(args: &CheckConfigArgs) -> Result<ExitCode, String> {
    let overrides = Overrides {
        sockets_optional: true,
        ..Overrides::default()
    };
    match Config::load_with(&origin(&args.config), &overrides) {
        Ok(config) => {
            Stdout::write(config::describe(&config).as_bytes())?;
            if config.policy.faults().is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::FAILURE)
            }
        }
        Err(error) => Ok(print_problems(&error)),
    }
}
