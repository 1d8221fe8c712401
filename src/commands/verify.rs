//! `verify`: verify a message from stdin through the milter's own code
//! path ([`crate::offline_verify`]) and print the Authentication-Results
//! field it would insert; exit status 0 when a signature passed, 1
//! otherwise. The log line (the verdict of each signature) goes to stderr.

use std::io::Read as _;
use std::process::ExitCode;

use super::{Stdout, origin, print_problems};
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
    init_logging();
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let mut message = Vec::new();
    std::io::stdin()
        .read_to_end(&mut message)
        .map_err(|e| format!("cannot read the message from stdin: {e}"))?;
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

/// Log lines go to stderr; `RUST_LOG` filters.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
