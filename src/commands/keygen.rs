//! `keygen`: write a private key and its DNS record the way
//! opendkim-genkey does (plus Ed25519).

use std::process::ExitCode;

use super::say;
use crate::cli::{KeyAlgorithm, KeygenArgs};
use crate::keys::KeyType;
use crate::keys::generate::{KeygenRequest, keygen};
use crate::keys::record::RecordOptions;

/// Runs `keygen`.
pub fn execute(args: &KeygenArgs) -> Result<ExitCode, String> {
    let request = KeygenRequest {
        directory: args.directory.clone(),
        selector: args.selector.clone(),
        domain: args.domain.clone(),
        append_domain: args.append_domain,
        key_type: match args.algorithm {
            KeyAlgorithm::Rsa => KeyType::Rsa,
            KeyAlgorithm::Ed25519 => KeyType::Ed25519,
        },
        rsa_bits: args.bits,
        record: RecordOptions {
            hash_algorithms: Some(args.hash_algorithms.clone()),
            note: args.note.clone(),
            restrict_to_email: args.restrict,
            no_subdomains: args.no_subdomains,
            testing: args.testmode,
        },
        force: args.force,
    };
    let outcome = keygen(&request).map_err(|err| err.to_string())?;
    for warning in &outcome.warnings {
        say(format_args!("warning: {warning}"));
    }
    if args.verbose > 0 {
        say(format_args!(
            "private key written to {}",
            outcome.private_key.display()
        ));
        say(format_args!(
            "DNS TXT record written to {}",
            outcome.record.display()
        ));
    }
    Ok(ExitCode::SUCCESS)
}
