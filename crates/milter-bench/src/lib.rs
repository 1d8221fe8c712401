//! A milter load client (the `milter-bench` binary), like redis-benchmark for
//! milters: it drives any milter, ours or OpenDKIM, over TCP or a Unix
//! socket, and reports messages per second, latency percentiles, how many
//! messages came back with a DKIM-Signature, and errors.
//!
//! It behaves like Postfix ([`milter::client`]): it offers what Postfix offers for
//! the chosen protocol version, honours the events and replies the milter
//! declined, sends Postfix's macros (plus the ones that make a message
//! eligible for signing: SMTP AUTH, `{daemon_name}`, the client address),
//! ends every transaction with `A` and every connection with `Q`.
//! `connections` tasks each keep one milter connection busy, message after
//! message, reconnecting after `per_connection` messages if asked. A
//! sample of the signed messages is rebuilt as the MTA would deliver them
//! and verified against the public key records given ([`verify`]), so a
//! fast wrong answer cannot pass: a signature that fails is an error.
//!
//! With the milter's PID it also reads the milter's CPU time and memory
//! from /proc ([`process`]); `hold` keeps every connection open and idle
//! for a while after the messages, to measure what idle connections cost.
//!
//! This crate only plays the MTA; it knows nothing of how a milter signs,
//! and it is not part of dkim-sidecar's package.

pub mod message;
pub mod process;
pub mod report;
pub mod sign_cost;
pub mod verify;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use milter::client::{self, MacroValues, Message, MilterClient, Outcome};
use milter::server::SocketSpec;
use milter::{Reply, Stage};
pub use report::{Latency, Report, ServerUsage, Verification};
pub use verify::{KeyRecords, Verifier};

/// Errors and failures kept word for word in a report; the rest are counted.
const SAMPLES_KEPT: usize = 5;

/// Consecutive failed connection attempts after which a task gives up.
const MAX_CONNECT_FAILURES: u32 = 3;

/// What to send, how much, and to whom.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub target: SocketSpec,
    /// Milter connections kept busy at once.
    pub connections: usize,
    /// Messages to count; `None` with a duration: as many as fit.
    pub messages: Option<u64>,
    /// Stop starting messages after this long.
    pub duration: Option<Duration>,
    /// Messages sent first and not counted.
    pub warmup: u64,
    /// Messages per milter connection before `Q` and a new connection;
    /// `None`: one connection per task for the whole run.
    pub per_connection: Option<u64>,
    /// Milter protocol version to offer (Postfix's `milter_protocol`).
    pub protocol: u32,
    pub body_bytes: usize,
    pub sender: String,
    pub recipient: String,
    pub helo: String,
    pub macros: MacroValues,
    /// Verify every n-th signed message (1: all; 0: none).
    pub verify_every: u64,
    pub records: Arc<KeyRecords>,
    /// Longest wait for a reply or a write.
    pub timeout: Duration,
    /// Keep all connections open and idle this long after the messages.
    pub hold: Option<Duration>,
    /// The milter's PID, to read its CPU time and memory.
    pub server_pid: Option<u32>,
    /// Send this message instead of a generated one (`--message`).
    pub message: Option<Message>,
}

impl BenchOptions {
    /// Defaults for `target`: one connection, 1,000 messages of 4 KiB from
    /// an authenticated client at 127.0.0.1, protocol 6.
    pub fn new(target: SocketSpec) -> BenchOptions {
        BenchOptions {
            target,
            connections: 1,
            messages: Some(1000),
            duration: None,
            warmup: 0,
            per_connection: None,
            protocol: 6,
            body_bytes: 4096,
            sender: "sender@example.com".into(),
            recipient: "recipient@example.org".into(),
            helo: "client.example.com".into(),
            macros: MacroValues::default(),
            verify_every: 100,
            records: Arc::new(KeyRecords::new()),
            timeout: Duration::from_secs(30),
            hold: None,
            server_pid: None,
            message: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
}

/// What one connection task saw.
#[derive(Default)]
struct TaskStats {
    latencies_ns: Vec<u64>,
    signed: u64,
    signatures: u64,
    not_signed: u64,
    refused: u64,
    errors: u64,
    error_samples: Vec<String>,
    checked: u64,
    passed: u64,
    failed: u64,
    failures: Vec<String>,
    last_done: Option<Instant>,
    agreed: Option<u32>,
}

impl TaskStats {
    fn error(&mut self, error: impl std::fmt::Display) {
        self.errors += 1;
        if self.error_samples.len() < SAMPLES_KEPT {
            self.error_samples.push(error.to_string());
        }
    }
}

struct RunState {
    options: BenchOptions,
    message: Message,
    verifier: Option<Verifier>,
    next: AtomicU64,
    /// Warm-up plus counted messages; `u64::MAX` for "until the deadline".
    total: u64,
    deadline: Option<Instant>,
    /// When the first counted message started.
    measure_start: OnceLock<Instant>,
    signed_seen: AtomicU64,
    idle: AtomicUsize,
    idle_changed: tokio::sync::Notify,
    release: CancellationToken,
}

impl RunState {
    /// The next message index, or `None` when the run is over.
    fn claim(&self) -> Option<u64> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.total).then_some(i)
    }
}

/// Run the bench; the report says what happened, including every error.
pub async fn run(options: BenchOptions) -> Result<Report, BenchError> {
    if options.connections == 0 {
        return Err(BenchError::Setup(
            "at least one connection is needed".into(),
        ));
    }
    if milter::postfix::offer(options.protocol).is_none() {
        return Err(BenchError::Setup(format!(
            "Postfix speaks milter protocol 2, 3, 4 or 6, not {}",
            options.protocol
        )));
    }
    let verifier = if options.records.is_empty() || options.verify_every == 0 {
        None
    } else {
        Some(Verifier::new(Arc::clone(&options.records)).map_err(BenchError::Setup)?)
    };
    let total = match (options.messages, options.duration) {
        (Some(n), _) => options.warmup.saturating_add(n),
        (None, Some(_)) => u64::MAX,
        (None, None) => options.warmup.saturating_add(1000),
    };
    let message = match &options.message {
        Some(message) => message.clone(),
        None => message::generate(&options.sender, &options.recipient, options.body_bytes),
    };
    let server_before = match options.server_pid {
        Some(pid) => {
            process::reset_peak(pid);
            Some(process::sample(pid).map_err(BenchError::Setup)?)
        }
        None => None,
    };
    let client_cpu_before = process::own_cpu_seconds();
    let started = Instant::now();
    let shared = Arc::new(RunState {
        deadline: options.duration.map(|d| started + d),
        options,
        message,
        verifier,
        next: AtomicU64::new(0),
        total,
        measure_start: OnceLock::new(),
        signed_seen: AtomicU64::new(0),
        idle: AtomicUsize::new(0),
        idle_changed: tokio::sync::Notify::new(),
        release: CancellationToken::new(),
    });
    let connections = shared.options.connections;
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..connections {
        let shared = Arc::clone(&shared);
        tasks.spawn(async move { connection_task(id, &shared).await });
    }

    let mut held = None;
    if let Some(hold) = shared.options.hold {
        // Wait until every task is idle (or finished), sample, then let go.
        loop {
            let notified = shared.idle_changed.notified();
            if shared.idle.load(Ordering::Acquire) >= connections {
                break;
            }
            notified.await;
        }
        tokio::time::sleep(hold / 2).await;
        if let Some(pid) = shared.options.server_pid {
            held = process::sample(pid).ok().map(|s| s.rss_kib);
        }
        tokio::time::sleep(hold - hold / 2).await;
        shared.release.cancel();
    }

    let mut all = TaskStats::default();
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(stats) => merge(&mut all, stats),
            Err(e) => all.error(format!("a connection task failed: {e}")),
        }
    }
    let client_cpu_s = process::own_cpu_seconds() - client_cpu_before;

    let measured = all.latencies_ns.len() as u64;
    let elapsed = match (shared.measure_start.get(), all.last_done) {
        (Some(start), Some(end)) if end > *start => end.duration_since(*start),
        _ => Duration::ZERO,
    };
    let server = match (shared.options.server_pid, server_before) {
        (Some(pid), Some(before)) => {
            let after = process::sample(pid).unwrap_or(before);
            let cpu_s = (after.cpu_ticks.saturating_sub(before.cpu_ticks)) as f64
                / process::ticks_per_second();
            Some(ServerUsage {
                pid,
                cpu_s,
                cpu_us_per_message: if measured > 0 {
                    cpu_s * 1e6 / (measured + shared.options.warmup) as f64
                } else {
                    0.0
                },
                rss_before_kib: before.rss_kib,
                rss_after_kib: after.rss_kib,
                rss_peak_kib: after.hwm_kib,
                rss_held_kib: held,
            })
        }
        _ => None,
    };
    let options = &shared.options;
    Ok(Report {
        target: options.target.to_string(),
        protocol_offered: options.protocol,
        protocol_agreed: all.agreed,
        connections: options.connections,
        body_bytes: options.body_bytes,
        messages: measured,
        warmup: options.warmup,
        elapsed_s: elapsed.as_secs_f64(),
        messages_per_s: if elapsed.is_zero() {
            0.0
        } else {
            measured as f64 / elapsed.as_secs_f64()
        },
        latency: Latency::from_nanos(std::mem::take(&mut all.latencies_ns)),
        signed: all.signed,
        signatures: all.signatures,
        not_signed: all.not_signed,
        refused: all.refused,
        errors: all.errors + all.failed,
        error_samples: all.error_samples,
        verification: Verification {
            enabled: shared.verifier.is_some(),
            checked: all.checked,
            passed: all.passed,
            failed: all.failed,
            failures: all.failures,
        },
        server,
        client_cpu_s,
    })
}

fn merge(all: &mut TaskStats, mut s: TaskStats) {
    all.latencies_ns.append(&mut s.latencies_ns);
    all.signed += s.signed;
    all.signatures += s.signatures;
    all.not_signed += s.not_signed;
    all.refused += s.refused;
    all.errors += s.errors;
    all.checked += s.checked;
    all.passed += s.passed;
    all.failed += s.failed;
    for e in s.error_samples {
        if all.error_samples.len() < SAMPLES_KEPT {
            all.error_samples.push(e);
        }
    }
    for e in s.failures {
        if all.failures.len() < SAMPLES_KEPT {
            all.failures.push(e);
        }
    }
    all.last_done = all.last_done.max(s.last_done);
    all.agreed = all.agreed.or(s.agreed);
}

/// Open a milter connection, negotiate, and present the SMTP client.
async fn open(shared: &RunState, stats: &mut TaskStats) -> Result<MilterClient, String> {
    let options = &shared.options;
    let io = client::open(&options.target)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", options.target))?;
    let mut client = MilterClient::new(io, options.timeout);
    let agreement = client
        .negotiate(options.protocol)
        .await
        .map_err(|e| e.to_string())?;
    stats.agreed = Some(agreement.negotiated.version);
    match client.open_session(&options.macros, &options.helo).await {
        Ok(None) => Ok(client),
        Ok(Some(reply)) => Err(format!(
            "the milter answered '{}' to CONNECT/HELO: no message can be sent (check --client-ip and the milter's PeerList)",
            reply.code() as char
        )),
        Err(e) => Err(e.to_string()),
    }
}

async fn connection_task(id: usize, shared: &RunState) -> TaskStats {
    let mut stats = TaskStats::default();
    let mut failures = 0;
    let mut next = shared.claim();
    'connections: loop {
        if next.is_none() && shared.options.hold.is_none() {
            break;
        }
        let mut client = match open(shared, &mut stats).await {
            Ok(client) => client,
            Err(e) => {
                stats.error(e);
                failures += 1;
                if failures >= MAX_CONNECT_FAILURES {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        failures = 0;
        let mut sent_here = 0u64;
        loop {
            let Some(index) = next else {
                hold(shared).await;
                let _ = client.quit().await;
                break 'connections;
            };
            if shared
                .options
                .per_connection
                .is_some_and(|m| sent_here >= m)
            {
                let _ = client.quit().await;
                continue 'connections;
            }
            let counted = index >= shared.options.warmup;
            let start = Instant::now();
            if index == shared.options.warmup {
                let _ = shared.measure_start.set(start);
            }
            let queue_id = format!("{id:X}Q{index:X}");
            let result = client
                .send_message(&shared.message, &queue_id, &shared.options.macros)
                .await;
            let done = Instant::now();
            sent_here += 1;
            next = shared.claim();
            match result {
                Ok(outcome) => {
                    if counted {
                        stats.latencies_ns.push((done - start).as_nanos() as u64);
                        stats.last_done = Some(done);
                    }
                    let leading_space = client
                        .agreement()
                        .is_some_and(client::Agreement::leading_space);
                    record(shared, &mut stats, leading_space, outcome, counted).await;
                }
                Err(e) => {
                    stats.error(e);
                    continue 'connections;
                }
            }
        }
    }
    // A task that ends early must not hold up the others' idle wait.
    if shared.options.hold.is_some() && failures > 0 {
        shared.idle.fetch_add(1, Ordering::AcqRel);
        shared.idle_changed.notify_waiters();
    }
    stats
}

/// Wait, idle, until the run lets the connections go.
async fn hold(shared: &RunState) {
    if shared.options.hold.is_none() {
        return;
    }
    shared.idle.fetch_add(1, Ordering::AcqRel);
    shared.idle_changed.notify_waiters();
    shared.release.cancelled().await;
}

async fn record(
    shared: &RunState,
    stats: &mut TaskStats,
    leading_space: bool,
    outcome: Outcome,
    counted: bool,
) {
    let modifications = match outcome {
        Outcome::Delivered { modifications } => modifications,
        Outcome::AcceptedEarly { .. } => {
            if counted {
                stats.not_signed += 1;
            }
            return;
        }
        Outcome::Refused { event, reply } => {
            if counted {
                stats.refused += 1;
                if stats.refused == 1 && stats.error_samples.len() < SAMPLES_KEPT {
                    stats
                        .error_samples
                        .push(format!("refused at '{event}': {}", reply_text(&reply)));
                }
            }
            return;
        }
    };
    let signatures = modifications
        .iter()
        .filter(|m| match m {
            Reply::InsertHeader { name, .. } | Reply::AddHeader { name, .. } => {
                name.eq_ignore_ascii_case(b"DKIM-Signature")
            }
            _ => false,
        })
        .count();
    if counted {
        if signatures > 0 {
            stats.signed += 1;
            stats.signatures += signatures as u64;
        } else {
            stats.not_signed += 1;
        }
    }
    let Some(verifier) = &shared.verifier else {
        return;
    };
    if signatures == 0 {
        return;
    }
    let seen = shared.signed_seen.fetch_add(1, Ordering::Relaxed);
    if !seen.is_multiple_of(shared.options.verify_every) {
        return;
    }
    let delivered = shared.message.delivered(&modifications, leading_space);
    stats.checked += 1;
    match verifier.verify(&delivered, signatures).await {
        Ok(()) => stats.passed += 1,
        Err(reason) => {
            stats.failed += 1;
            if stats.failures.len() < SAMPLES_KEPT {
                stats.failures.push(format!("bad signature: {reason}"));
            }
        }
    }
}

fn reply_text(reply: &Reply) -> String {
    match reply {
        Reply::ReplyCode(r) => format!(
            "{} {} {}",
            r.code,
            r.status.as_deref().unwrap_or(""),
            r.text
        ),
        Reply::Tempfail => "tempfail".into(),
        Reply::Reject => "reject".into(),
        Reply::Discard => "discard".into(),
        other => format!("'{}'", other.code() as char),
    }
}

/// Parse `STAGE:NAME=VALUE` (`connect:{daemon_name}=ORIGINATING`) for an
/// extra macro.
pub fn parse_macro(spec: &str) -> Result<(Stage, String, String), String> {
    let (stage, rest) = spec
        .split_once(':')
        .ok_or_else(|| format!("{spec:?}: expected STAGE:NAME=VALUE"))?;
    let (name, value) = rest
        .split_once('=')
        .ok_or_else(|| format!("{spec:?}: expected STAGE:NAME=VALUE"))?;
    let stage = match stage.to_ascii_lowercase().as_str() {
        "connect" | "c" => Stage::Connect,
        "helo" | "h" => Stage::Helo,
        "mail" | "m" => Stage::Mail,
        "rcpt" | "r" => Stage::Rcpt,
        "data" | "t" => Stage::Data,
        "eoh" | "n" => Stage::EndOfHeaders,
        "eom" | "e" => Stage::EndOfMessage,
        other => {
            return Err(format!(
                "{other:?}: stage is one of connect, helo, mail, rcpt, data, eoh, eom"
            ));
        }
    };
    if name.is_empty() {
        return Err(format!("{spec:?}: empty macro name"));
    }
    Ok((stage, name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_macros_parse_with_stage_names_or_letters() {
        assert_eq!(
            parse_macro("connect:{daemon_name}=ORIGINATING").unwrap(),
            (Stage::Connect, "{daemon_name}".into(), "ORIGINATING".into())
        );
        assert_eq!(parse_macro("M:{auth_type}=PLAIN").unwrap().0, Stage::Mail);
        assert!(parse_macro("body:x=y").is_err());
        assert!(parse_macro("mail:novalue").is_err());
        assert!(parse_macro("mail:=v").is_err());
    }
}
