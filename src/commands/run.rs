//! `run`: serve in the foreground until SIGTERM, reloading on SIGHUP and
//! SIGUSR1. The command line's overrides are applied where the
//! configuration is loaded ([`Overrides`]), so a reload keeps them.

use std::process::ExitCode;

use super::{origin, print_problems};
use crate::cli::RunArgs;
use crate::config::{Config, Overrides};
use crate::daemon;

/// Runs the daemon.
pub fn execute(args: &RunArgs) -> Result<ExitCode, String> {
    let origin = origin(&args.config);
    let overrides = Overrides {
        sockets: match &args.socket {
            Some(spec) => Some(vec![spec.parse().map_err(|e| format!("--socket: {e}"))?]),
            None => None,
        },
        allow_root: args.allow_root,
        metrics_listen: args.metrics_listen,
        watch_interval: args.watch_interval.map(std::time::Duration::from_secs),
        ..Overrides::default()
    };
    let config = match Config::load_with(&origin, &overrides) {
        Ok(config) => config,
        Err(error) => return Ok(print_problems(&error)),
    };
    let reload: daemon::Reload = Box::new(move || Config::load_with(&origin, &overrides));
    // Logging (stderr, the journal or syslog, as configured), the runtime,
    // and the server.
    daemon::main(config, reload).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}
