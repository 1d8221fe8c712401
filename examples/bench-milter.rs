//! Our milter for benchmarks, started without a configuration file: the
//! server, the signing filter and a Policy built from OpenDKIM-style
//! tables given on the command line, so that it signs with the very key
//! and tables OpenDKIM is given in `benches/compare.sh`.
//!
//! ```text
//! cargo run --release --example bench-milter -- \
//!     --socket inet:8891@127.0.0.1 \
//!     --key-table refile:/tmp/bench/KeyTable --signing-table refile:/tmp/bench/SigningTable
//! ```
//!
//! Once `dkim-sidecar run -x opendkim.conf` reads configurations, it
//! replaces this program.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Parser;
use dkim_sidecar::diagnostics::Location;
use dkim_sidecar::dkim::HeaderPolicy;
use dkim_sidecar::dkim::headers::DEFAULT_SIGNED_HEADERS;
use dkim_sidecar::keys::LoadOptions;
use dkim_sidecar::policy::{
    ErrorActions, KeyStore, Mode, Policy, SignatureSettings, Signing, SigningTables, Trust,
};
use dkim_sidecar::server::{self, Settings, SocketSpec, UnixSocketAccess};
use dkim_sidecar::signing::{LivePolicy, SigningFilter};
use dkim_sidecar::tables::{HostList, KeyTable, SigningTable};
use mail_auth::dkim::Canonicalization;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Where to listen (OpenDKIM or Postfix socket syntax).
    #[arg(long)]
    socket: String,
    /// KeyTable data set (OpenDKIM syntax, e.g. refile:/path or file:/path).
    #[arg(long)]
    key_table: String,
    /// SigningTable data set.
    #[arg(long)]
    signing_table: String,
    /// InternalHosts data set; default 127.0.0.1 and ::1.
    #[arg(long)]
    internal_hosts: Option<String>,
    /// Header/body canonicalization.
    #[arg(long, default_value = "relaxed/simple")]
    canonicalization: String,
    /// Runtime worker threads; default: one per processor.
    #[arg(long)]
    threads: Option<usize>,
    /// Signing threads; 0 signs on the runtime's threads. Default: one per
    /// processor.
    #[arg(long)]
    work_threads: Option<usize>,
    /// Write the log (one line per message) here instead of stderr.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Log warnings and errors only (no line per message).
    #[arg(long)]
    quiet: bool,
    /// Connection limit.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
}

fn canonicalization(text: &str) -> Canonicalization {
    match text {
        "simple" => Canonicalization::Simple,
        _ => Canonicalization::Relaxed,
    }
}

fn policy(args: &Args) -> Result<Policy, String> {
    let at = Location::new("bench-milter command line", 1);
    let key_table = KeyTable::open(&args.key_table, &at).map_err(|e| e.to_string())?;
    let signing_table = SigningTable::open(&args.signing_table, &at).map_err(|e| e.to_string())?;
    let options = LoadOptions {
        require_safe_keys: false,
        ..LoadOptions::default()
    };
    let (keys, _) = KeyStore::load(&key_table, options).map_err(|e| e.to_string())?;
    let internal_hosts = match &args.internal_hosts {
        Some(spec) => HostList::open(spec, &at).map_err(|e| e.to_string())?,
        None => HostList::default_internal(),
    };
    let (header, body) = args
        .canonicalization
        .split_once('/')
        .unwrap_or((&args.canonicalization, "simple"));
    Ok(Policy {
        mode: Mode {
            sign: true,
            verify: false,
        },
        signing: Signing {
            domain_key: None,
            tables: Some(SigningTables {
                key_table,
                signing_table,
                keys,
            }),
            multiple_signatures: false,
            subdomains: false,
        },
        trust: Trust {
            internal_hosts,
            external_ignore: None,
            peers: None,
            macros: vec![],
            mta_names: vec![],
        },
        sender_headers: vec!["from".into()],
        exempt_domains: None,
        dont_sign_mail_to: None,
        signature: SignatureSettings {
            header_canonicalization: canonicalization(header),
            body_canonicalization: canonicalization(body),
            headers: Arc::new(HeaderPolicy::new(
                DEFAULT_SIGNED_HEADERS.iter().copied(),
                [],
                ["from"],
            )),
            expiry: None,
        },
        errors: ErrorActions::default(),
        max_header_bytes: 65536,
        software_header: false,
    })
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let level = if args.quiet {
        tracing::Level::WARN
    } else {
        tracing::Level::INFO
    };
    let log = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(level);
    match &args.log {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
            log.with_writer(Mutex::new(file)).init();
        }
        None => log.with_writer(std::io::stderr).init(),
    }
    let policy = policy(&args)?;
    let spec: SocketSpec = args.socket.parse().map_err(|e| format!("{e}"))?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listeners =
            server::bind(&spec, &UnixSocketAccess::default(), 1024).map_err(|e| e.to_string())?;
        let live = Arc::new(LivePolicy::new(policy));
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                let _ = tokio::signal::ctrl_c().await;
                shutdown.cancel();
            }
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                term.recv().await;
                shutdown.cancel();
            }
        });
        let mut settings = Settings {
            max_connections: args.max_connections,
            ..Settings::default()
        };
        if let Some(threads) = args.work_threads {
            settings.work_threads = threads;
        }
        server::run(
            listeners,
            move |_| SigningFilter::new(Arc::clone(&live)),
            settings,
            shutdown,
        )
        .await;
        Ok::<(), String>(())
    })
}
