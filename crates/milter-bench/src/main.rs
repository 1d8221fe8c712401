//! `milter-bench`: a milter load client, like redis-benchmark for milters.
//!
//! It plays Postfix against any milter (dkim-sidecar, OpenDKIM, ...) and
//! reports throughput, latency, signatures seen and verified, and the
//! milter's CPU and memory. This binary only turns the command line into
//! [`milter_bench::BenchOptions`] and prints the report; it is a
//! development tool, not part of dkim-sidecar's package.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use milter::server::SocketSpec;
use milter_bench::{BenchOptions, KeyRecords, parse_macro};

/// Options mirror redis-benchmark's where they can (`-c`, `-n`).
#[derive(Debug, Parser)]
#[command(
    name = "milter-bench",
    version,
    about = "Load-test a milter (dkim-sidecar, OpenDKIM or any other) the way Postfix talks to it."
)]
#[command(after_help = "Examples:\n  \
    milter-bench --socket inet:8891@127.0.0.1 -c 128 -n 20000 --key-txt default.txt\n  \
    milter-bench --socket unix:/run/opendkim/opendkim.sock -P 2 --auth PLAIN --json\n  \
    milter-bench --socket inet:8891@127.0.0.1 -c 1000 -n 0 --hold 5 --server-pid 1234\n  \
    milter-bench --sign-cost keys/default.private --threads 2 -d 5")]
struct Args {
    /// The milter's socket (inet:PORT@HOST, inet6:PORT@[HOST], inet:HOST:PORT,
    /// local:/path, unix:/path).
    #[arg(long, value_name = "SPEC", required_unless_present = "sign_cost")]
    socket: Option<String>,

    /// Talk to no milter: sign with this private key (dkim-sidecar's loader
    /// and signer) on --threads threads at once for --duration seconds
    /// (default 3), and report the CPU time of one signature.
    #[arg(long, value_name = "KEYFILE", conflicts_with = "socket")]
    sign_cost: Option<PathBuf>,

    /// Milter connections kept busy at once.
    #[arg(short = 'c', long, default_value_t = 1)]
    connections: usize,

    /// Messages to count (after the warm-up); default 1000 unless --duration.
    #[arg(short = 'n', long)]
    messages: Option<u64>,

    /// Start messages for this many seconds (with -n: whichever ends first).
    #[arg(short = 'd', long, value_name = "SECONDS")]
    duration: Option<f64>,

    /// Messages sent first and not counted.
    #[arg(short = 'w', long, default_value_t = 0)]
    warmup: u64,

    /// Messages per milter connection, then QUIT and a new connection
    /// (default: one connection per -c for the whole run).
    #[arg(short = 'm', long, value_name = "N")]
    per_connection: Option<u64>,

    /// Milter protocol version to offer, as Postfix's milter_protocol (2, 3, 4, 6).
    #[arg(short = 'P', long, default_value_t = 6)]
    protocol: u32,

    /// Body size in bytes.
    #[arg(short = 'b', long, default_value_t = 4096)]
    body_size: usize,

    /// Sender (MAIL FROM and From:); its domain is the one signed.
    #[arg(long, default_value = "sender@example.com")]
    from: String,

    /// Recipient (RCPT TO and To:).
    #[arg(long, default_value = "recipient@example.org")]
    to: String,

    /// The SMTP client's address, given to the milter at connect.
    #[arg(long, default_value = "127.0.0.1")]
    client_ip: IpAddr,

    /// The SMTP client's host name.
    #[arg(long, default_value = "localhost")]
    client_name: String,

    /// Present every message as sent with SMTP AUTH using this mechanism
    /// ({auth_type}, {auth_authen}).
    #[arg(long, value_name = "MECHANISM")]
    auth: Option<String>,

    /// The {daemon_name} macro (Postfix's milter_macro_daemon_name), e.g. ORIGINATING.
    #[arg(long, value_name = "NAME")]
    daemon_name: Option<String>,

    /// An extra macro, sent at its stage: STAGE:NAME=VALUE
    /// (stages connect, helo, mail, rcpt, data, eoh, eom). Repeatable.
    #[arg(long = "macro", value_name = "STAGE:NAME=VALUE")]
    macros: Vec<String>,

    /// A public key record to verify signatures with: keygen's or
    /// opendkim-genkey's SELECTOR.txt (a relative name gets the --from domain).
    /// Repeatable.
    #[arg(long = "key-txt", value_name = "FILE")]
    key_txt: Vec<PathBuf>,

    /// Verify every N-th signed message (1: all, 0: none).
    #[arg(long, value_name = "N", default_value_t = 100)]
    verify_every: u64,

    /// Seconds to wait for any reply.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    timeout: f64,

    /// Keep every connection open and idle this many seconds after the
    /// messages (with --server-pid: measures what idle connections cost).
    #[arg(long, value_name = "SECONDS")]
    hold: Option<f64>,

    /// The milter's process id: report its CPU time and memory from /proc.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,

    /// Threads for the bench itself (it shares the machine with the milter).
    #[arg(long, default_value_t = 1)]
    threads: usize,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,

    /// Send this message (a file, LF or CRLF line ends) instead of a
    /// generated one, e.g. mail signed elsewhere for a verifier
    /// (--body-size and --from are then unused).
    #[arg(long, value_name = "FILE")]
    message: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("milter-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    if let Some(key) = &args.sign_cost {
        let duration = Duration::try_from_secs_f64(args.duration.unwrap_or(3.0))
            .map_err(|_| "--duration: not a number of seconds".to_string())?;
        let cost = milter_bench::sign_cost::measure(key, args.threads, duration)?;
        let text = if args.json {
            serde_json::to_string_pretty(&cost).map_err(|e| e.to_string())? + "\n"
        } else {
            cost.to_string()
        };
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
        return Ok(ExitCode::SUCCESS);
    }
    let options = options_from_args(args)?;
    milter_bench::process::raise_open_files_limit();
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
        .block_on(milter_bench::run(options))
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

/// The bench's options from the command line.
fn options_from_args(args: &Args) -> Result<BenchOptions, String> {
    let socket = args.socket.as_deref().unwrap_or_default();
    let target: SocketSpec = socket
        .parse()
        .map_err(|e| format!("--socket {socket}: {e}"))?;
    let seconds = |what: &str, s: f64| {
        Duration::try_from_secs_f64(s).map_err(|_| format!("{what} {s}: not a number of seconds"))
    };
    let mut options = BenchOptions::new(target);
    options.connections = args.connections;
    options.messages = match (args.messages, args.duration) {
        (None, Some(_)) => None,
        (n, _) => Some(n.unwrap_or(1000)),
    };
    options.duration = args
        .duration
        .map(|d| seconds("--duration", d))
        .transpose()?;
    options.warmup = args.warmup;
    options.per_connection = args.per_connection.filter(|&m| m > 0);
    options.protocol = args.protocol;
    options.body_bytes = args.body_size;
    options.sender = args.from.clone();
    options.recipient = args.to.clone();
    options.macros.client_ip = args.client_ip;
    options.macros.client_name = args.client_name.clone();
    options.macros.auth_type = args.auth.clone();
    if let Some(name) = &args.daemon_name {
        options.macros.daemon_name = name.clone();
    }
    options.macros.extra = args
        .macros
        .iter()
        .map(|m| parse_macro(m))
        .collect::<Result<_, _>>()?;
    let domain = args.from.rsplit_once('@').map_or("", |(_, d)| d);
    let mut records = KeyRecords::new();
    for path in &args.key_txt {
        records.add_file(path, domain)?;
    }
    options.records = Arc::new(records);
    options.verify_every = args.verify_every;
    options.timeout = seconds("--timeout", args.timeout)?;
    options.hold = args.hold.map(|h| seconds("--hold", h)).transpose()?;
    options.server_pid = args.server_pid;
    if let Some(path) = &args.message {
        let raw = std::fs::read(path).map_err(|e| format!("--message {}: {e}", path.display()))?;
        options.message = Some(
            milter_bench::message::from_raw(&raw, &args.to)
                .map_err(|e| format!("--message {}: {e}", path.display()))?,
        );
    }
    Ok(options)
}
