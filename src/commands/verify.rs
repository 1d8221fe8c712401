//! `verify`: verify a message from stdin through the milter's own code
//! path ([`crate::offline_verify`]) and print the Authentication-Results
//! field it would insert; exit status 0 when a signature passed, 1
//! otherwise. The log line (the verdict of each signature) goes to stderr.

use std::process::ExitCode;

use super::{Stdout, log_to_stderr, message_from_stdin, origin, print_problems};
use crate::cli::VerifyArgs;
use crate::config::{Config, Overrides};
use crate::offline::Envelope;

/// Runs `verify`.
pub fn execute(args: &VerifyArgs) -> Result<ExitCode, String> {
    let overrides = Overrides {
        sockets: Some(Vec::new()),
        ..Overrides::default()
    };
    let config = match Config::load_with(&origin(&args.config), &overrides) {
        Ok(config) => config,
        Err(error) => return Ok(print_problems(&error)),
    };
    if config.policy.verification.is_none() {
        return Err(
            "the configuration does not verify (Mode s): give Mode v or sv, or no Mode".into(),
        );
    }
    log_to_stderr(&config.warnings);
    let message = message_from_stdin()?;
    // An outside client (TEST-NET-1): the message is verified, not signed.
    let envelope = Envelope {
        client_ip: std::net::Ipv4Addr::new(192, 0, 2, 1).into(),
        sender: None,
        recipients: Vec::new(),
        authenticated: false,
    };
    let verified = crate::offline_verify::verify(config.policy, &message, &envelope)
        .map_err(|e| e.to_string())?;
    let field = verified
        .field
        .ok_or("the message was not verified (see the log line above)")?;
    Stdout::write(format!("{field}\n").as_bytes())?;
    Ok(if verified.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
