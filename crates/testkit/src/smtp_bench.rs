//! Mail through a private Postfix at full speed, for the end-to-end
//! benchmark (`benches/postfix.rs`): Postfix's own test programs
//! `smtp-source` (the sender, [`SmtpSource`]) and `smtp-sink` (the next
//! hop, [`PostfixSmtpSink`], which counts what it receives), one Postfix
//! set-up tuned so that neither queueing nor relaying is the bottleneck
//! ([`bench_postfix`], [`TUNING`]), and a paced client that times single
//! SMTP transactions ([`time_transactions`]).
//!
//! ```text
//! smtp-source ─┐                         ┌─relay──> smtp-sink (counts)
//! timed client ┴─> Postfix ──milter──> ? │
//!                                        └─transport_maps verify.test──> SmtpSink ──> verifiers
//! ```
//!
//! Mail to [`VERIFY_DOMAIN`] goes to the test kit's recording
//! [`SmtpSink`](super::SmtpSink) instead, through the same smtpd and the same
//! milter, so a benchmark can check that the milter it measures signs.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::milter_process::MilterSocket;
use super::postfix::Postfix;
use super::submission::Submission;

/// Recipients in this domain are relayed to the verifying sink.
pub const VERIFY_DOMAIN: &str = "verify.test";

/// Postfix settings for the benchmark, the same for every milter (or
/// none): enough smtpd and smtp processes for the sessions, no slow start
/// and a high concurrency towards the sink, no inflow throttling, no
/// per-client limits (every session comes from 127.0.0.1).
pub const TUNING: &[&str] = &[
    // smtpd, smtp and cleanup processes (master.cf maxproc "-").
    "default_process_limit = 200",
    // cleanup does not slow smtpd down when qmgr falls behind.
    "in_flow_delay = 0",
    // Relaying to the sink: up to 50 connections at once from the start,
    // reused for the next message.
    "default_destination_concurrency_limit = 50",
    "smtp_destination_concurrency_limit = 50",
    "initial_destination_concurrency = 50",
    "smtp_connection_cache_on_demand = yes",
    // One client address sends everything.
    "smtpd_client_connection_count_limit = 0",
    "smtpd_client_connection_rate_limit = 0",
    "smtpd_client_message_rate_limit = 0",
    // No reverse lookup of 127.0.0.1 for every session.
    "smtpd_peername_lookup = no",
];

/// The benchmark's Postfix: everything relayed to `sink` (Postfix's
/// smtp-sink), mail to [`VERIFY_DOMAIN`] to `verify_sink`, [`TUNING`],
/// milter protocol 6, and `milter` (if any) as the only `smtpd_milters`.
pub fn bench_postfix(
    sink: SocketAddr,
    verify_sink: SocketAddr,
    milter: Option<&MilterSocket>,
) -> Postfix {
    let mut builder = Postfix::builder().relay_to(sink).milter_protocol(6);
    if let Some(milter) = milter {
        builder = builder.smtpd_milters(&milter.postfix_spec());
    }
    builder = builder.main_cf(&format!(
        "transport_maps = inline:{{ {VERIFY_DOMAIN}=smtp:[{}]:{} }}",
        verify_sink.ip(),
        verify_sink.port()
    ));
    for line in TUNING {
        builder = builder.main_cf(line);
    }
    builder.start()
}

/// Postfix's `smtp-sink` on a loopback port: accepts and discards every
/// message, and counts them (its `-c` counters, read from its output).
pub struct PostfixSmtpSink {
    addr: SocketAddr,
    child: Child,
    count: Arc<Counter>,
    reader: Option<JoinHandle<()>>,
}

/// The sink's message counter and when it last changed.
#[derive(Default)]
struct Counter {
    state: Mutex<(u64, Option<Instant>)>,
    changed: Condvar,
}

impl PostfixSmtpSink {
    /// `smtp-sink -c -u nobody -m 1000 127.0.0.1:PORT 1024`.
    pub fn start() -> PostfixSmtpSink {
        super::require_program("/usr/sbin/smtp-sink", "postfix");
        let addr = super::free_local_addr();
        let mut child = Command::new("/usr/sbin/smtp-sink")
            .args(["-c", "-u", "nobody", "-m", "1000"])
            .arg(addr.to_string())
            .arg("1024")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run smtp-sink");
        let count = Arc::new(Counter::default());
        let mut stdout = child.stdout.take().unwrap();
        let reader = {
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                // "sess=2 quit=2 mesg=2\r" after every session and message.
                let mut pending = Vec::new();
                let mut buffer = [0u8; 4096];
                while let Ok(read) = stdout.read(&mut buffer) {
                    if read == 0 {
                        break;
                    }
                    let now = Instant::now();
                    pending.extend_from_slice(&buffer[..read]);
                    let Some(end) = pending.iter().rposition(|&b| b == b'\r' || b == b'\n') else {
                        continue;
                    };
                    let complete = String::from_utf8_lossy(&pending[..end]).into_owned();
                    pending.drain(..=end);
                    let latest = complete
                        .rsplit(['\r', '\n'])
                        .filter_map(|line| line.split_once("mesg=")?.1.trim().parse::<u64>().ok())
                        .next();
                    if let Some(latest) = latest {
                        let mut state = count.state.lock().unwrap();
                        if latest != state.0 {
                            *state = (latest, Some(now));
                            count.changed.notify_all();
                        }
                    }
                }
            })
        };
        let sink = PostfixSmtpSink {
            addr,
            child,
            count,
            reader: Some(reader),
        };
        super::poll(Duration::from_secs(10), || {
            TcpStream::connect(addr).ok().map(drop)
        })
        .unwrap_or_else(|| panic!("smtp-sink does not listen on {addr}"));
        sink
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Messages received so far.
    pub fn delivered(&self) -> u64 {
        self.count.state.lock().unwrap().0
    }

    /// Waits until at least `count` messages have arrived and returns when
    /// the count reached its current value, or `None` after `timeout`.
    pub fn wait_for(&self, count: u64, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut state = self.count.state.lock().unwrap();
        while state.0 < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self.count.changed.wait_timeout(state, left).unwrap().0;
        }
        state.1
    }
}

impl Drop for PostfixSmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Postfix's `smtp-source`: `sessions` SMTP sessions in parallel, one
/// message per session (a new connection for each message, as most
/// clients do), the content of `message` (LF line ends; smtp-source sends
/// CRLF) from `sender` to `recipient`.
#[derive(Debug, Clone)]
pub struct SmtpSource {
    pub sessions: usize,
    pub sender: String,
    pub recipient: String,
    pub message: PathBuf,
}

/// A running `smtp-source`.
pub struct SourceRun {
    child: Child,
    what: String,
}

impl SmtpSource {
    /// Writes `content` (CRLF or LF) where smtp-source will read it.
    pub fn write_message(path: &Path, content: &[u8]) {
        let text = String::from_utf8_lossy(content).replace("\r\n", "\n");
        std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Starts sending `messages` messages to `to`.
    pub fn start(&self, to: SocketAddr, messages: u64) -> SourceRun {
        self.start_to(to, messages, &self.recipient)
    }

    /// The same, to another recipient.
    pub fn start_to(&self, to: SocketAddr, messages: u64, recipient: &str) -> SourceRun {
        super::require_program("/usr/sbin/smtp-source", "postfix");
        let mut command = Command::new("/usr/sbin/smtp-source");
        command
            .arg("-4")
            .args(["-s", &self.sessions.to_string()])
            .args(["-m", &messages.to_string()])
            .args(["-M", "client.example.com"])
            .args(["-f", &self.sender])
            .args(["-t", recipient])
            .arg("-F")
            .arg(&self.message)
            .arg(format!("{}:{}", to.ip(), to.port()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("{command:?}");
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("run {what}: {e}"));
        SourceRun { child, what }
    }
}

impl SourceRun {
    /// Waits for smtp-source to end; panics unless every message was
    /// accepted (smtp-source stops at the first unexpected reply).
    pub fn finish(self) {
        let output = self
            .child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait for {}: {e}", self.what));
        assert!(
            output.status.success(),
            "{} failed ({}): {}{}",
            self.what,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Times `count` SMTP transactions to `smtpd`, one at a time, starting
/// one every `interval` (or at once when the previous one took longer).
/// Each transaction has its own connection, opened and greeted (EHLO)
/// before the clock starts and closed (QUIT) after it stops: the time is
/// from writing `MAIL FROM` to reading the reply to the final dot, so it
/// covers MAIL, RCPT, DATA, the content and everything the smtpd and its
/// milter do before they accept the message. Panics on any reply that is
/// not a success.
pub fn time_transactions(
    smtpd: SocketAddr,
    count: usize,
    interval: Duration,
    sender: &str,
    recipient: &str,
    content: &[u8],
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(count);
    let mut next = Instant::now();
    for _ in 0..count {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next = Instant::now() + interval;
        let mut client = Submission::open(smtpd);
        let started = Instant::now();
        let reply = client.send(sender, &[recipient], content);
        let took = started.elapsed();
        assert!(reply.is_success(), "timed transaction: {reply:?}");
        client.quit();
        times.push(took);
    }
    times
}
