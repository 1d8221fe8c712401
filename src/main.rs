//! The `dkim-sidecar` binary: parse the command line, hand each subcommand
//! to the library, turn its error into one line on stderr and an exit code.

use std::process::ExitCode;

use clap::Parser;
use dkim_sidecar::cli::{
    CheckConfigArgs, Cli, Command, ConfigSource, KeyAlgorithm, KeygenArgs, TestkeyArgs,
};
use dkim_sidecar::config::{self, Config, Format, Origin};
use dkim_sidecar::keys::KeyType;
use dkim_sidecar::keys::generate::{KeygenRequest, keygen};
use dkim_sidecar::keys::record::RecordOptions;
use dkim_sidecar::keys::testkey::{RecordSource, testkey};

/// Exit status when `testkey` ran but the key and record are not OK.
const TESTKEY_NOT_OK: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<ExitCode, String> = match cli.command {
        Command::Keygen(args) => run_keygen(&args),
        Command::Testkey(args) => run_testkey(&args),
        Command::CheckConfig(args) => Ok(run_check_config(&args)),
        Command::Run(_) | Command::Sign(_) => Err("this subcommand is not built yet".to_string()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("dkim-sidecar: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Which file the command line names, and in which format.
fn origin(source: &ConfigSource) -> Origin {
    match (&source.toml, &source.opendkim) {
        (Some(path), _) => Origin {
            path: path.clone(),
            format: Format::Toml,
        },
        (None, Some(path)) => Origin {
            path: path.clone(),
            format: Format::OpenDkim,
        },
        (None, None) => unreachable!("clap requires -c or -x"),
    }
}

/// Prints the effective rules and warnings, or every problem (one line
/// each); succeeds only when the server would start.
fn run_check_config(args: &CheckConfigArgs) -> ExitCode {
    match Config::load(&origin(&args.config)) {
        Ok(config) => {
            print!("{}", config::describe(&config));
            ExitCode::SUCCESS
        }
        Err(error) => {
            for problem in error.problems() {
                eprintln!("dkim-sidecar: {problem}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run_keygen(args: &KeygenArgs) -> Result<ExitCode, String> {
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
        eprintln!("dkim-sidecar: warning: {warning}");
    }
    if args.verbose > 0 {
        eprintln!(
            "dkim-sidecar: private key written to {}",
            outcome.private_key.display()
        );
        eprintln!(
            "dkim-sidecar: DNS TXT record written to {}",
            outcome.record.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn run_testkey(args: &TestkeyArgs) -> Result<ExitCode, String> {
    let source = match &args.txt {
        Some(path) => RecordSource::File(path.clone()),
        None => RecordSource::Dns {
            nameserver: args.nameserver,
        },
    };
    let report =
        testkey(&args.domain, &args.selector, &args.key, &source).map_err(|err| err.to_string())?;
    print!("{report}");
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(TESTKEY_NOT_OK)
    })
}
