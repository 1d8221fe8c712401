//! The `dkim-sidecar` binary: parse the command line, hand each subcommand
//! to the library, turn its error into one line on stderr and an exit code.

use std::process::ExitCode;

use clap::Parser;
use dkim_sidecar::cli::{BenchArgs, Cli, Command, KeyAlgorithm, KeygenArgs, TestkeyArgs};
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
        Command::Bench(args) => run_bench(&args),
        Command::Run(_) | Command::CheckConfig(_) | Command::Sign(_) => {
            Err("this subcommand is not built yet".to_string())
        }
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("dkim-sidecar: {message}");
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

fn run_bench(args: &BenchArgs) -> Result<ExitCode, String> {
    let options = dkim_sidecar::bench::options_from_args(args)?;
    dkim_sidecar::bench::process::raise_open_files_limit();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = runtime
        .block_on(dkim_sidecar::bench::run(options))
        .map_err(|e| e.to_string())?;
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        json.push('\n');
        json
    } else {
        report.to_string()
    };
    // A closed pipe (`| head`) is not the bench's failure.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
