//! The `dkim-sidecar` binary: parse the command line, hand each subcommand
//! to the library, turn its error into one line on stderr and an exit code.

use std::process::ExitCode;

use clap::Parser;
use std::io::{Read as _, Write as _};

use dkim_sidecar::cli::{
    BenchArgs, CheckConfigArgs, Cli, Command, ConfigSource, KeyAlgorithm, KeygenArgs, RunArgs,
    SignArgs, TestkeyArgs, VerifyArgs,
};
use dkim_sidecar::config::{self, Config, ConfigError, Format, Origin, Overrides};
use dkim_sidecar::daemon;
use dkim_sidecar::keys::KeyType;
use dkim_sidecar::keys::generate::{KeygenRequest, keygen};
use dkim_sidecar::keys::record::RecordOptions;
use dkim_sidecar::keys::testkey::{RecordSource, testkey};
use dkim_sidecar::offline::{self, Envelope, Outcome};

/// Exit status when `testkey` ran but the key and record are not OK.
const TESTKEY_NOT_OK: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<ExitCode, String> = match cli.command {
        Command::Keygen(args) => run_keygen(&args),
        Command::Testkey(args) => run_testkey(&args),
        Command::CheckConfig(args) => Ok(run_check_config(&args)),
        Command::Run(args) => run_daemon(&args),
        Command::Sign(args) => run_sign(&args),
        Command::Verify(args) => run_verify(&args),
        Command::Bench(args) => run_bench(&args),
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

/// Every problem of a configuration that does not load, one line each.
fn report(error: &ConfigError) -> ExitCode {
    for problem in error.problems() {
        eprintln!("dkim-sidecar: {problem}");
    }
    ExitCode::FAILURE
}

/// Prints the effective rules and warnings, or every problem (one line
/// each); succeeds only when the server would start.
fn run_check_config(args: &CheckConfigArgs) -> ExitCode {
    match Config::load(&origin(&args.config)) {
        Ok(config) => {
            print!("{}", config::describe(&config));
            ExitCode::SUCCESS
        }
        Err(error) => report(&error),
    }
}

/// `sign`'s log lines (the reason a message was not signed) go to stderr;
/// `RUST_LOG` filters. (`run` logs as configured: [`daemon::main`].)
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Serve until SIGTERM; reload on SIGHUP and SIGUSR1.
fn run_daemon(args: &RunArgs) -> Result<ExitCode, String> {
    let origin = origin(&args.config);
    let overrides = Overrides {
        sockets: match &args.socket {
            Some(spec) => Some(vec![spec.parse().map_err(|e| format!("--socket: {e}"))?]),
            None => None,
        },
    };
    let allow_root = args.allow_root;
    let metrics_listen = args.metrics_listen;
    let watch_interval = args.watch_interval.map(std::time::Duration::from_secs);
    let load = move || {
        Config::load_with(&origin, &overrides).map(|mut config| {
            config.service.allow_root |= allow_root;
            if metrics_listen.is_some() {
                config.service.metrics_listen = metrics_listen;
            }
            if watch_interval.is_some() {
                config.service.watch_interval = watch_interval;
            }
            config
        })
    };
    let config = match load() {
        Ok(config) => config,
        Err(error) => return Ok(report(&error)),
    };
    let reload: daemon::Reload = Box::new(move || {
        load().map_err(|error| {
            error
                .problems()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    });
    // Logging (stderr, the journal or syslog, as configured), the runtime,
    // and the server.
    daemon::main(config, reload).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// Sign stdin to stdout through the milter's own code path. A message that
/// is not signed is copied unchanged and the exit status is 1; the reason
/// is on stderr.
fn run_sign(args: &SignArgs) -> Result<ExitCode, String> {
    let overrides = Overrides {
        sockets: Some(Vec::new()),
    };
    let config = match Config::load_with(&origin(&args.config), &overrides) {
        Ok(config) => config,
        Err(error) => return Ok(report(&error)),
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
    let mut stdout = std::io::stdout().lock();
    let (bytes, code) = match &outcome {
        Outcome::Signed(signed) => (signed.as_slice(), ExitCode::SUCCESS),
        Outcome::NotSigned => (message.as_slice(), ExitCode::FAILURE),
        Outcome::Refused(why) => return Err(format!("the milter refused the message: {why}")),
    };
    stdout
        .write_all(bytes)
        .and_then(|_| stdout.flush())
        .map_err(|e| format!("cannot write the message: {e}"))?;
    Ok(code)
}

/// Verify stdin through the milter's own code path; print the
/// Authentication-Results field; exit 0 on a pass.
fn run_verify(args: &VerifyArgs) -> Result<ExitCode, String> {
    let overrides = Overrides {
        sockets: Some(Vec::new()),
    };
    let config = match Config::load_with(&origin(&args.config), &overrides) {
        Ok(config) => config,
        Err(error) => return Ok(report(&error)),
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
    let envelope = Envelope {
        client_ip: std::net::Ipv4Addr::new(192, 0, 2, 1).into(),
        sender: None,
        recipients: Vec::new(),
        authenticated: false,
    };
    let verified = dkim_sidecar::offline_verify::verify(config.policy, &message, &envelope)
        .map_err(|e| e.to_string())?;
    let field = verified
        .field
        .ok_or("the message was not verified (see the log line above)")?;
    println!("{field}");
    Ok(if verified.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
