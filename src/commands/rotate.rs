//! `rotate`: take the key rotation step that is due for a domain (or for
//! every domain, for the timer), or show where every key stands.
//!
//! Each domain's report goes to stdout; a refusal is one line on stderr
//! and the other domains still get their turn. Exit status: 0 when every
//! domain took a step or had none due, 75 when an activation waits for
//! DNS, 1 when anything was refused.

use std::process::ExitCode;

use super::{Stdout, origin, say};
use crate::rotate::{self, EXIT_WAITING, Outcome, RotateArgs, Timestamp};

/// Runs `rotate`.
pub fn execute(args: &RotateArgs) -> Result<ExitCode, String> {
    let options = rotate::options(args, origin(&args.config))?;
    if args.status {
        let config = rotate::load_config(&options).map_err(|e| e.to_string())?;
        Stdout::write(rotate::status_table(&config, &options, Timestamp::now()).as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let domains = match &args.domain {
        Some(domain) => vec![domain.clone()],
        None => {
            let config = rotate::load_config(&options).map_err(|e| e.to_string())?;
            rotate::domains(&config)
        }
    };
    let mut worst: Option<Outcome> = None;
    let mut refused = false;
    for domain in &domains {
        match rotate::rotate_domain(&options, domain) {
            Ok(report) => {
                Stdout::write(rotate::render(&report).as_bytes())?;
                worst = worst.max(Some(report.outcome));
            }
            Err(e) => {
                say(format_args!("rotate: {e}"));
                refused = true;
            }
        }
    }
    Ok(if refused {
        ExitCode::FAILURE
    } else if worst == Some(Outcome::Waiting) {
        ExitCode::from(EXIT_WAITING)
    } else {
        ExitCode::SUCCESS
    })
}
