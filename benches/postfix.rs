//! Through Postfix, end to end: Postfix's `smtp-source` sends ~4 KB
//! messages into a private Postfix on loopback, which relays them all to
//! Postfix's `smtp-sink` on loopback. Three configurations of the one
//! Postfix set-up (`testkit::smtp_bench::bench_postfix`): no milter,
//! OpenDKIM as `smtpd_milters`, dkim-sidecar as `smtpd_milters`; both
//! milters read the same opendkim.conf (the same RSA-2048 key, KeyTable,
//! `refile:` SigningTable and InternalHosts, signing all mail from
//! alice@example.com), alternating over `ROUNDS` rounds; the report gives
//! medians.
//!
//! Per configuration and round:
//! 1. a sample from smtp-source goes to the verifying sink and both
//!    verifiers (dkimpy, OpenDKIM) must pass its signature (or, without a
//!    milter, find none);
//! 2. throughput: a warm-up of `PF_WARMUP` messages, then `PF_MESSAGES`
//!    messages from `PF_SESSIONS` parallel smtp-source sessions, counted
//!    at smtp-sink: messages / (last arrival - start of smtp-source);
//! 3. latency: `PF_LATENCY` transactions, one at a time, one every
//!    `PF_INTERVAL_MS` (after 10 untimed ones), each on its own connection,
//!    timed from `MAIL FROM` to the reply to the final dot.
//!
//! Prints a Markdown table and writes JSON to `PF_JSON` (default
//! `target/postfix-bench.json`). Needs root, postfix, opendkim,
//! python3-dkim; skipped (with a message) otherwise.
//!
//! ```sh
//! cargo bench --bench postfix
//! ROUNDS=1 PF_MESSAGES=500 PF_LATENCY=50 cargo bench --bench postfix
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::daemon;
use testkit::measure::{knob, median, percentile};
use testkit::opendkim::{OpenDkimSigner, SigningKey};
use testkit::smtp_bench::{
    PostfixSmtpSink, SmtpSource, TUNING, VERIFY_DOMAIN, bench_postfix, time_transactions,
};
use testkit::verify::{assert_signed_by, assert_unsigned};
use testkit::{MilterProcess, MilterSocket, Postfix, SmtpSink};

const SENDER: &str = "alice@example.com";
const RECIPIENT: &str = "bench@sink.test";
/// Messages per round checked by both verifiers.
const SAMPLE: u64 = 2;
/// Untimed transactions before the timed ones.
const LATENCY_WARM_UP: usize = 10;

/// Benchmark parameters, from the environment.
struct Params {
    rounds: usize,
    messages: u64,
    warm_up: u64,
    sessions: usize,
    latency: usize,
    interval: Duration,
    body: usize,
    json: PathBuf,
}

impl Params {
    fn from_env() -> Params {
        Params {
            rounds: knob("ROUNDS", 3),
            messages: knob("PF_MESSAGES", 3000),
            warm_up: knob("PF_WARMUP", 300),
            sessions: knob("PF_SESSIONS", 20),
            latency: knob("PF_LATENCY", 300),
            interval: Duration::from_millis(knob("PF_INTERVAL_MS", 20)),
            body: knob("PF_BODY", 4096),
            json: std::env::var_os("PF_JSON")
                .map(PathBuf::from)
                .unwrap_or_else(|| testkit::target_dir().join("postfix-bench.json")),
        }
    }
}

/// One configuration of Postfix.
struct Setup {
    key: &'static str,
    label: &'static str,
    postfix: Postfix,
    signs: bool,
    rounds: Vec<Round>,
}

#[derive(Debug, Clone, Copy)]
struct Round {
    messages_per_s: f64,
    p50: Duration,
    p99: Duration,
}

fn main() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("postfix bench skipped: {why}");
        return;
    }
    let params = Params::from_env();
    testkit::open_files_at_least(65_536);
    let load_before = load_average();

    let signer = OpenDkimSigner::builder().key(SigningKey::Rsa).write();
    let opendkim: MilterProcess = signer.start(&MilterSocket::free_inet());
    let sidecar = daemon::run_opendkim_conf(signer.config(), &signer.dir().join("sidecar.log"));
    let sink = PostfixSmtpSink::start();
    let verify_sink = SmtpSink::start();

    let content = message(params.body);
    let message_file = signer.dir().join("bench-message.txt");
    SmtpSource::write_message(&message_file, &content);
    let source = SmtpSource {
        sessions: params.sessions,
        sender: SENDER.to_string(),
        recipient: RECIPIENT.to_string(),
        message: message_file,
    };

    let mut setups = vec![
        Setup {
            key: "none",
            label: "no milter",
            postfix: bench_postfix(sink.addr(), verify_sink.addr(), None),
            signs: false,
            rounds: Vec::new(),
        },
        Setup {
            key: "opendkim",
            label: "OpenDKIM",
            postfix: bench_postfix(sink.addr(), verify_sink.addr(), Some(opendkim.socket())),
            signs: true,
            rounds: Vec::new(),
        },
        Setup {
            key: "dkim-sidecar",
            label: "dkim-sidecar",
            postfix: bench_postfix(sink.addr(), verify_sink.addr(), Some(sidecar.socket())),
            signs: true,
            rounds: Vec::new(),
        },
    ];

    let mut verified = 0;
    for round in 1..=params.rounds {
        for setup in &mut setups {
            let smtpd = setup.postfix.smtp_addr();
            // 1. The milter signs (both verifiers agree), or nothing does.
            let before = verify_sink.messages().len();
            source
                .start_to(smtpd, SAMPLE, &format!("check@{VERIFY_DOMAIN}"))
                .finish();
            let received =
                verify_sink.wait_for_messages(before + SAMPLE as usize, Duration::from_secs(60));
            for message in &received[before..] {
                if setup.signs {
                    assert_signed_by(&message.data, &signer.dns_records(), &[signer.key()]);
                } else {
                    assert_unsigned(&message.data, &signer.dns_records());
                }
                verified += 1;
            }

            // 2. Throughput, counted at the sink.
            let base = sink.delivered();
            source.start(smtpd, params.warm_up).finish();
            wait_for_sink(&sink, base + params.warm_up, params.warm_up);
            let base = sink.delivered();
            let started = Instant::now();
            let run = source.start(smtpd, params.messages);
            let last = wait_for_sink(&sink, base + params.messages, params.messages);
            run.finish();
            let messages_per_s = params.messages as f64 / (last - started).as_secs_f64();

            // 3. Latency of one transaction at a time.
            let base = sink.delivered();
            time_transactions(
                smtpd,
                LATENCY_WARM_UP,
                params.interval,
                SENDER,
                RECIPIENT,
                &content,
            );
            let times = time_transactions(
                smtpd,
                params.latency,
                params.interval,
                SENDER,
                RECIPIENT,
                &content,
            );
            let sent = (LATENCY_WARM_UP + params.latency) as u64;
            wait_for_sink(&sink, base + sent, sent);
            let result = Round {
                messages_per_s,
                p50: percentile(&times, 50.0).unwrap(),
                p99: percentile(&times, 99.0).unwrap(),
            };
            eprintln!(
                "round {round} {}: {:.0} messages/s, p50 {:.2} ms, p99 {:.2} ms",
                setup.label,
                result.messages_per_s,
                ms(result.p50),
                ms(result.p99)
            );
            setup.rounds.push(result);
        }
    }

    let load_after = load_average();
    let report = Report {
        params: &params,
        setups: &setups,
        verified,
        load_before,
        load_after,
    };
    println!("{}", report.markdown());
    let json = serde_json::to_string_pretty(&report.json()).unwrap();
    std::fs::write(&params.json, json + "\n")
        .unwrap_or_else(|e| panic!("write {}: {e}", params.json.display()));
    eprintln!("JSON results: {}", params.json.display());
    drop(setups);
    drop(sidecar);
    drop(opendkim);
}

/// Why the bench cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("Postfix needs root".to_string());
    }
    for program in [
        "/usr/sbin/postfix",
        "/usr/sbin/smtp-source",
        "/usr/sbin/smtp-sink",
        "/usr/sbin/opendkim",
        "/usr/lib/python3/dist-packages/dkim/__init__.py",
    ] {
        if !Path::new(program).exists() {
            return Some(format!("{program} is missing"));
        }
    }
    if !testkit::binary().exists() {
        return Some(format!("{} is not built", testkit::binary().display()));
    }
    None
}

/// Waits for the sink to count `total`; `sent` sizes the timeout (at
/// least 10 messages a second, never under two minutes).
fn wait_for_sink(sink: &PostfixSmtpSink, total: u64, sent: u64) -> Instant {
    let timeout = Duration::from_secs(120.max(sent / 10));
    sink.wait_for(total, timeout).unwrap_or_else(|| {
        panic!(
            "smtp-sink counted {} of {total} messages within {timeout:?}",
            sink.delivered()
        )
    })
}

/// A plain-text message from alice@example.com with a `body`-byte body
/// (lines of 72 characters).
fn message(body: usize) -> Vec<u8> {
    let line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    let mut text = String::with_capacity(body);
    while text.len() + line.len() <= body {
        text.push_str(line);
    }
    let rest = body - text.len();
    if rest >= 2 {
        text.push_str(&"x".repeat(rest - 2));
        text.push_str("\r\n");
    }
    testkit::message::alice_to_bob_with("postfix-bench", "", &text)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_default()
}

struct Report<'a> {
    params: &'a Params,
    setups: &'a [Setup],
    verified: usize,
    load_before: String,
    load_after: String,
}

/// Medians over the rounds of one configuration.
struct Medians {
    messages_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Report<'_> {
    fn medians(setup: &Setup) -> Medians {
        let of = |get: fn(&Round) -> f64| median(setup.rounds.iter().map(get).collect());
        Medians {
            messages_per_s: of(|r| r.messages_per_s),
            p50_ms: of(|r| ms(r.p50)),
            p99_ms: of(|r| ms(r.p99)),
        }
    }

    fn markdown(&self) -> String {
        let base = Self::medians(&self.setups[0]);
        let mut out = String::from(
            "| Postfix with | messages/s | latency p50 | latency p99 | added p50 | added p99 |\n\
             |---|---:|---:|---:|---:|---:|\n",
        );
        for setup in self.setups {
            let m = Self::medians(setup);
            let (added50, added99) = if setup.signs {
                (
                    format!("{:+.2} ms", m.p50_ms - base.p50_ms),
                    format!("{:+.2} ms", m.p99_ms - base.p99_ms),
                )
            } else {
                (String::new(), String::new())
            };
            out.push_str(&format!(
                "| {} | {} | {:.2} ms | {:.2} ms | {added50} | {added99} |\n",
                setup.label,
                thousands(m.messages_per_s),
                m.p50_ms,
                m.p99_ms
            ));
        }
        let p = self.params;
        out.push_str(&format!(
            "\nMedians of {} rounds (configurations alternating). Throughput: {} messages \
             ({}-byte bodies, RSA-2048 signatures) from {} smtp-source sessions, one \
             message per connection, after {} warm-up messages, counted at smtp-sink. \
             Latency: {} transactions one at a time, one every {} ms, MAIL FROM to the \
             reply to the final dot. {} sampled messages checked by dkimpy and OpenDKIM. \
             Load average before/after: {} / {}. {} on {}.\n",
            p.rounds,
            thousands(p.messages as f64),
            p.body,
            p.sessions,
            p.warm_up,
            p.latency,
            p.interval.as_millis(),
            self.verified,
            self.load_before,
            self.load_after,
            command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            commit(),
        ));
        out
    }

    fn json(&self) -> serde_json::Value {
        let p = self.params;
        let setups: serde_json::Map<String, serde_json::Value> = self
            .setups
            .iter()
            .map(|setup| {
                let m = Self::medians(setup);
                let rounds: Vec<_> = setup
                    .rounds
                    .iter()
                    .map(|r| {
                        json!({
                            "messages_per_s": r.messages_per_s,
                            "p50_ms": ms(r.p50),
                            "p99_ms": ms(r.p99),
                        })
                    })
                    .collect();
                (
                    setup.key.to_string(),
                    json!({
                        "label": setup.label,
                        "median": {
                            "messages_per_s": m.messages_per_s,
                            "p50_ms": m.p50_ms,
                            "p99_ms": m.p99_ms,
                        },
                        "rounds": rounds,
                    }),
                )
            })
            .collect();
        json!({
            "date": command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            "commit": commit(),
            "load_before": self.load_before,
            "load_after": self.load_after,
            "processors": std::thread::available_parallelism().map_or(0, usize::from),
            "params": {
                "rounds": p.rounds,
                "messages": p.messages,
                "warm_up": p.warm_up,
                "sessions": p.sessions,
                "latency_transactions": p.latency,
                "latency_interval_ms": p.interval.as_millis() as u64,
                "body_bytes": p.body,
                "postfix_tuning": TUNING,
            },
            "verified_samples": self.verified,
            "configurations": setups,
        })
    }
}

fn commit() -> String {
    let root = testkit::repo_root();
    let root = root.to_string_lossy();
    command_line("git", &["-C", &root, "rev-parse", "--short", "HEAD"])
}

/// 1234.5 -> "1,235".
fn thousands(value: f64) -> String {
    let digits = format!("{value:.0}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
