//! `check-config`: load everything as `run` would, print the effective
//! rules and warnings, or every problem; succeed only when the server
//! would start and every key it names can sign (a key that cannot sign
//! does not stop `run`, but its mail is refused, so it fails here). A file
//! without a socket passes with a warning, as with OpenDKIM's `-n`: `run
//! --socket` or a systemd socket unit may supply it. Then the service as
//! it will run ([`crate::preflight`]): files its UserID cannot read fail
//! the check; a start as root that `run` would refuse, loopback missing
//! from InternalHosts and a socket outside a chrooted smtpd's reach are
//! warned about.

use std::process::ExitCode;

use super::{Stdout, origin, print_problems};
use crate::cli::CheckConfigArgs;
use crate::config::{self, Config, Overrides};
use crate::preflight;

/// Runs `check-config`.
pub fn execute(args: &CheckConfigArgs) -> Result<ExitCode, String> {
    let overrides = Overrides {
        sockets_optional: true,
        ..Overrides::default()
    };
    match Config::load_with(&origin(&args.config), &overrides) {
        Ok(config) => {
            Stdout::write(config::describe(&config).as_bytes())?;
            let postfix = preflight::Postfix {
                config_dir: args.postfix_config.clone(),
            };
            let findings = preflight::check(&config, &postfix);
            let mut failed = false;
            if !findings.is_empty() {
                let mut text = String::from("\nAs the service will run:\n");
                for finding in &findings {
                    failed |= finding.severity == preflight::Severity::Problem;
                    text.push_str(&format!("  {finding}\n"));
                }
                Stdout::write(text.as_bytes())?;
            }
            failed |= check_servers(&config)?;
            Ok(if failed || !config.policy.faults().is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(error) => Ok(print_problems(&error)),
    }
}

/// Connects to each data set's server (the tables' and every other
/// set's) and runs one lookup; says which answered, naming each set and
/// its server (password masked). True when one did not.
fn check_servers(config: &Config) -> Result<bool, String> {
    let sets = config.policy.server_sets();
    if sets.is_empty() {
        return Ok(false);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let mut failed = false;
    for set in sets {
        let line = match runtime.block_on(set.check()) {
            Ok(()) => format!(
                "{} server {}: connected, lookup ok\n",
                set.role(),
                set.describe()
            ),
            Err(e) => {
                failed = true;
                format!(
                    "{}: {} server {}: {e}\n",
                    set.at(),
                    set.role(),
                    set.describe()
                )
            }
        };
        Stdout::write(line.as_bytes())?;
    }
    Ok(failed)
}
