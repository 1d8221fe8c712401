//! Signing with KeyTable and SigningTable kept in PostgreSQL against the
//! same tables in files, in one run: the cost of `dsn:` data sets.
//!
//! A private PostgreSQL on loopback (the test kit's) holds the example RSA
//! key inline and one SigningTable row; three daemons sign the same load
//! from the load client (128 connections, 4 KB bodies, every hundredth
//! signature verified), one after the other, each round starting with the
//! next setup:
//!
//! - **files**: the usual KeyTable and `refile:` SigningTable;
//! - **warm**: the same tables as `dsn:pgsql://` data sets, default cache
//!   (every lookup after the first few answered from the cache);
//! - **cold**: the same with a cache TTL of 0, so every key of every
//!   message is asked of the database; the keys it asks per second come
//!   from the daemon's `dkim_sidecar_dataset_cache_misses_total` (a
//!   message's keys of one table go in one query).
//!
//! Prints a Markdown table (medians of the rounds) and writes the raw
//! reports as JSON when `DATASETS_JSON` names a file. `ROUNDS` (3) and
//! `SECONDS_PER_RUN` (8) change the length. Run with
//! `cargo bench --bench datasets`. This is a benchmark: it measures and
//! asserts nothing about speed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use milter::server::SocketSpec;
use milter_bench::{BenchOptions, KeyRecords};
use testkit::daemon::{Daemon, scrape};
use testkit::measure::{knob, median};
use testkit::postgres::Postgres;
use testkit::{MilterProcess, MilterSocket, Sidecar};

const CONNECTIONS: usize = 128;

/// The sum of every sample of a counter, whatever its labels.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// One configuration under test.
struct Setup {
    name: &'static str,
    sidecar: Sidecar,
    toml: Option<std::path::PathBuf>,
}

impl Setup {
    fn start(&self, metrics: SocketAddr) -> (MilterProcess, SocketAddr) {
        let socket = MilterSocket::free_inet();
        let daemon = Daemon {
            metrics: Some(metrics),
            watch: None,
            toml: self.toml.clone(),
        }
        .start(&self.sidecar, &socket);
        let MilterSocket::Inet(addr) = socket else {
            unreachable!("free_inet gives an inet socket")
        };
        (daemon, addr)
    }
}

/// One bench run's figures.
struct Run {
    messages_per_s: f64,
    p50_ms: f64,
    cpu_us: Option<f64>,
    keys_per_s: f64,
    report: milter_bench::report::Report,
}

fn run_once(setup: &Setup, seconds: u64, records: &Arc<KeyRecords>, sender: &str) -> Run {
    let metrics = testkit::free_local_addr();
    let (daemon, addr) = setup.start(metrics);
    let target: SocketSpec = format!("inet:{}@{}", addr.port(), addr.ip())
        .parse()
        .expect("an inet socket specification");
    let mut options = BenchOptions::new(target);
    options.connections = CONNECTIONS;
    options.messages = None;
    options.duration = Some(Duration::from_secs(seconds));
    options.warmup = 500;
    options.sender = sender.to_string();
    options.records = Arc::clone(records);
    options.server_pid = Some(daemon.pid());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the load client");
    let before = counter(&scrape(metrics), "dkim_sidecar_dataset_cache_misses_total");
    let report = runtime
        .block_on(milter_bench::run(options))
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", setup.name, daemon.log()));
    let after = counter(&scrape(metrics), "dkim_sidecar_dataset_cache_misses_total");
    daemon.stop();
    assert!(
        report.errors == 0 && report.refused == 0 && report.not_signed == 0,
        "{}: every message must be signed and verify: {report}",
        setup.name
    );
    Run {
        messages_per_s: report.messages_per_s,
        p50_ms: report.latency.p50_ms,
        cpu_us: report.server.as_ref().map(|s| s.cpu_us_per_message),
        // The warm-up's misses are in the count too; the load's own time
        // is what divides them, so this slightly overstates the rate.
        keys_per_s: (after - before) / report.elapsed_s,
        report,
    }
}

/// A whole number with thousands separated by commas: `12,954`.
fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (n, c) in digits.chars().enumerate() {
        if n > 0 && (digits.len() - n) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let rounds = knob("ROUNDS", 3).max(1);
    let seconds = knob("SECONDS_PER_RUN", 8).max(1);

    let pg = Postgres::start();
    let files = Sidecar::builder().write();
    let key = files.test_keys().rsa.clone();
    let pem = std::fs::read_to_string(&key.private_key).expect("the example key");
    pg.psql(&format!(
        "CREATE TABLE signing (addr text, keyname text); \
         CREATE TABLE keys (name text, domain text, selector text, key text); \
         INSERT INTO keys VALUES ('rsa', '{}', '{}', $k${pem}$k$); \
         INSERT INTO signing VALUES ('{}', 'rsa');",
        key.domain, key.selector, key.domain
    ));
    let key_table = pg.dsn("keys", "name", "domain,selector,key");
    let signing_table = pg.dsn("signing", "addr", "keyname");
    let warm = Sidecar::builder()
        .config_line(&format!("KeyTable {key_table}"))
        .config_line(&format!("SigningTable {signing_table}"))
        .write();
    let cold = Sidecar::builder().write();
    let toml = cold.dir().join("dkim-sidecar.toml");
    std::fs::write(
        &toml,
        format!(
            "[server]\nsockets = [\"inet:8891@127.0.0.1\"]\nallow_root = true\n\
             [signing]\nrequire_safe_keys = false\n\
             [trust]\ninternal_hosts = [\"127.0.0.1\"]\n\
             [tables]\nkey_table = \"{key_table}\"\nsigning_table = \"{signing_table}\"\n\
             cache_ttl = 0\n"
        ),
    )
    .expect("write the cold-cache configuration");
    let setups = [
        Setup {
            name: "files",
            sidecar: files,
            toml: None,
        },
        Setup {
            name: "warm",
            sidecar: warm,
            toml: None,
        },
        Setup {
            name: "cold",
            sidecar: cold,
            toml: Some(toml),
        },
    ];

    let mut records = KeyRecords::new();
    records
        .add(&key.record_name(), &key.txt)
        .expect("the example key's record");
    let records = Arc::new(records);
    let sender = format!("sender@{}", key.domain);

    let mut runs: Vec<Vec<Run>> = setups.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        // Each round starts with the next setup, so that none always runs
        // right after another (PostgreSQL's own work after the cold runs,
        // the machine warming up).
        for i in (0..setups.len()).map(|i| (i + round as usize) % setups.len()) {
            let setup = &setups[i];
            let run = run_once(setup, seconds, &records, &sender);
            eprintln!(
                "round {} {}: {:.0} messages/s, {:.0} keys asked per second",
                round + 1,
                setup.name,
                run.messages_per_s,
                run.keys_per_s
            );
            runs[i].push(run);
        }
    }

    if let Ok(path) = std::env::var("DATASETS_JSON") {
        let raw: Vec<serde_json::Value> = setups
            .iter()
            .zip(&runs)
            .flat_map(|(setup, kept)| {
                kept.iter().map(|run| {
                    serde_json::json!({
                        "setup": setup.name,
                        "keys_per_s": run.keys_per_s,
                        "report": run.report,
                    })
                })
            })
            .collect();
        std::fs::write(&path, serde_json::to_string_pretty(&raw).expect("JSON"))
            .unwrap_or_else(|e| panic!("write {path}: {e}"));
    }

    let med = |i: usize, f: fn(&Run) -> f64| median(runs[i].iter().map(f).collect());
    let rate = |i| med(i, |r| r.messages_per_s);
    let p50 = |i| med(i, |r| r.p50_ms);
    let cpu = |i| med(i, |r| r.cpu_us.unwrap_or(f64::NAN));
    let qps = |i| med(i, |r| r.keys_per_s);
    println!(
        "| RSA-2048, 4 KB, {CONNECTIONS} connections | messages/s | of files | latency p50 | CPU per message | keys asked of PostgreSQL per second |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, label) in [
        "tables in files",
        "tables in PostgreSQL, warm cache",
        "tables in PostgreSQL, cold cache (TTL 0)",
    ]
    .iter()
    .enumerate()
    {
        println!(
            "| {label} | {} | {:.0}% | {:.1} ms | {:.0} us | {} |",
            grouped(rate(i)),
            100.0 * rate(i) / rate(0),
            p50(i),
            cpu(i),
            if i == 0 {
                "-".to_string()
            } else {
                grouped(qps(i))
            }
        );
    }
    println!(
        "\nMedians of {rounds} rounds of {seconds} s each (after 500 messages of warm-up), \
         the three setups in turn, each round starting with the next one."
    );
}
