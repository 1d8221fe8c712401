//! `doctor`: load the configuration, gather the inputs, run the checks
//! and print the report as text (coloured on a TTY) or JSON. Exit status
//! 0 when every check is ok, 1 when one warns, 2 when one fails (or the
//! configuration does not load).

use std::io::IsTerminal as _;
use std::process::ExitCode;

use super::{Stdout, origin, say};
use crate::cli::{DoctorArgs, ReportFormat};
use crate::config::Config;
use crate::doctor::{self, inputs, render};

/// Exit status when doctor cannot run at all.
const CANNOT_RUN: u8 = 2;

/// Runs `doctor`.
pub fn execute(args: &DoctorArgs) -> Result<ExitCode, String> {
    let config = match Config::load(&origin(&args.config)) {
        Ok(config) => config,
        Err(error) => {
            for problem in error.problems() {
                say(problem);
            }
            return Ok(ExitCode::from(CANNOT_RUN));
        }
    };
    let request = inputs::Request {
        domains: args.domains.clone(),
        ips: args.ips.clone(),
        helo: args.helo.clone(),
        nameservers: args.nameserver.into_iter().collect(),
        postfix_config: args.postfix_config.clone(),
    };
    let inputs = inputs::gather(&config, &request);
    if inputs.domains.is_empty() {
        say("doctor: no domain to check: the configuration signs for none (give --domain D)");
        return Ok(ExitCode::from(CANNOT_RUN));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let report = runtime
        .block_on(doctor::run(&inputs))
        .map_err(|e| e.to_string())?;
    let output = match args.format {
        ReportFormat::Text => render::text(&report, std::io::stdout().is_terminal()),
        ReportFormat::Json => render::json(&report),
    };
    Stdout::write(output.as_bytes())?;
    Ok(ExitCode::from(report.exit_code()))
}
