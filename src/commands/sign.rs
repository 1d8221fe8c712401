//! `sign`: sign a message from stdin to stdout through the milter's own
//! code path. A message that is not signed is copied unchanged and the
//! exit status is 1; the reason is logged on stderr.

use std::process::ExitCode;

use super::{Stdout, log_to_stderr, message_from_stdin, origin, print_problems};
use crate::cli::SignArgs;
use crate::config::{Config, Overrides};
use crate::offline::{self, Envelope, Outcome};

/// Runs `sign`.
pub fn execute(args: &SignArgs) -> Result<ExitCode, String> {
    let overrides = Overrides {
        sockets: Some(Vec::new()),
        ..Overrides::default()
    };
    let config = match Config::load_with(&origin(&args.config), &overrides) {
        Ok(config) => config,
        Err(error) => return Ok(print_problems(&error)),
    };
    log_to_stderr(&config.warnings);
    let message = message_from_stdin()?;
    let envelope = Envelope {
        client_ip: args.client_ip,
        sender: args.sender.clone(),
        recipients: Vec::new(),
        authenticated: args.auth,
    };
    let outcome = offline::sign(config.policy, &message, &envelope).map_err(|e| e.to_string())?;
    let (bytes, code) = match &outcome {
        Outcome::Signed(signed) => (signed.as_slice(), ExitCode::SUCCESS),
        Outcome::NotSigned => (message.as_slice(), ExitCode::FAILURE),
        Outcome::Refused(why) => return Err(format!("the milter refused the message: {why}")),
    };
    Stdout::write(bytes)?;
    Ok(code)
}
