//! `sign`: sign a message from stdin to stdout through the milter's own
//! code path. A message that is not signed is copied unchanged and the
//! exit status is 1; the reason is logged on stderr.

use std::io::Read as _;
use std::process::ExitCode;

use super::{Stdout, origin, print_problems};
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
    init_logging();
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let mut message = Vec::new();
    std::io::stdin()
        .read_to_end(&mut message)
        .map_err(|e| format!("cannot read the message from stdin: {e}"))?;
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

/// `sign`'s log lines (the reason a message was not signed) go to stderr;
/// `RUST_LOG` filters. (`run` logs as configured: [`crate::daemon::main`].)
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
