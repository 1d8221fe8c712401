//! `testkey`: compare a private key with its published (or given) DNS
//! record, like opendkim-testkey, and say what to fix.

use std::process::ExitCode;

use super::Stdout;
use crate::cli::TestkeyArgs;
use crate::keys::testkey::{RecordSource, testkey};

/// Exit status when `testkey` ran but the key and record are not OK.
const TESTKEY_NOT_OK: u8 = 1;

/// Runs `testkey`.
pub fn execute(args: &TestkeyArgs) -> Result<ExitCode, String> {
    let source = match &args.txt {
        Some(path) => RecordSource::File(path.clone()),
        None => RecordSource::Dns {
            nameserver: args.nameserver,
        },
    };
    let report =
        testkey(&args.domain, &args.selector, &args.key, &source).map_err(|err| err.to_string())?;
    Stdout::write(report.to_string().as_bytes())?;
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(TESTKEY_NOT_OK)
    })
}
