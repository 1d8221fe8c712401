//! Mail under load through the milter protocol, and dkimpy checking
//! samples of it against the live DNS while the load runs.
//!
//! [`Load`] plays Postfix with the milter crate's MTA-side client
//! ([`milter::client`]): a few connections sending one message after
//! another, each with `MAIL FROM` to end of message, recording when each
//! message started and ended and what the milter answered (the `s=` of
//! its DKIM-Signature, or why there was none). Every tenth message, when
//! the verifier keeps up, goes to [`LiveVerifier`]: `verify_live.py`,
//! whose dnsfunc asks the test's DNS server at the moment it verifies.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use milter::Reply;
use milter::client::{self, ClientError, MacroValues, MilterClient, Outcome};
use milter::server::SocketSpec;

/// Messages per milter connection before it is closed and opened again.
const PER_CONNECTION: u64 = 200;

/// One message the load sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub seq: u64,
    pub started: Instant,
    pub finished: Instant,
    /// The `s=` of the one DKIM-Signature, or why the message was not
    /// signed exactly once.
    pub selector: Result<String, String>,
}

/// dkimpy's verdict on one signature of a sampled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveVerdict {
    pub seq: u64,
    pub selector: String,
    pub passed: bool,
    pub reason: Option<String>,
}

/// A message to verify: its number in the load, and its bytes.
type Sample = (u64, Vec<u8>);

/// dkimpy verifying messages against a live DNS server, in submission order.
pub struct LiveVerifier {
    queue: Mutex<Option<mpsc::Sender<Sample>>>,
    submitted: AtomicU64,
    verified: Arc<AtomicU64>,
    verdicts: Arc<Mutex<Vec<LiveVerdict>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl LiveVerifier {
    /// Starts `verify_live.py`, asking `dns` for key records.
    pub fn start(dns: SocketAddr) -> Arc<LiveVerifier> {
        crate::require_program("/usr/bin/python3", "python3");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/verify_live.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(dns.ip().to_string())
            .arg(dns.port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run verify_live.py (python3-dkim, python3-dnspython)");
        let (tx, rx) = mpsc::channel::<Sample>();
        let verified = Arc::new(AtomicU64::new(0));
        let verdicts = Arc::new(Mutex::new(Vec::new()));
        let worker = {
            let verified = Arc::clone(&verified);
            let verdicts = Arc::clone(&verdicts);
            let mut stdin: ChildStdin = child.stdin.take().unwrap();
            let mut stdout = BufReader::new(child.stdout.take().unwrap());
            std::thread::spawn(move || {
                let _child = KillOnDrop(child);
                for (seq, message) in rx {
                    let length = u32::try_from(message.len()).unwrap().to_be_bytes();
                    stdin.write_all(&length).expect("write to verify_live.py");
                    stdin.write_all(&message).expect("write to verify_live.py");
                    stdin.flush().unwrap();
                    let mut line = String::new();
                    stdout.read_line(&mut line).expect("read verify_live.py");
                    let v: serde_json::Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("verify_live.py said {line:?}: {e}"));
                    let signatures = v["signatures"].as_array().cloned().unwrap_or_default();
                    let mut verdicts = verdicts.lock().unwrap();
                    if signatures.is_empty() {
                        verdicts.push(LiveVerdict {
                            seq,
                            selector: String::new(),
                            passed: false,
                            reason: Some("no DKIM-Signature".to_string()),
                        });
                    }
                    for s in signatures {
                        verdicts.push(LiveVerdict {
                            seq,
                            selector: s["s"].as_str().unwrap_or("").to_string(),
                            passed: s["result"] == "pass",
                            reason: s["reason"].as_str().map(str::to_string),
                        });
                    }
                    drop(verdicts);
                    verified.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        Arc::new(LiveVerifier {
            queue: Mutex::new(Some(tx)),
            submitted: AtomicU64::new(0),
            verified,
            verdicts,
            worker: Mutex::new(Some(worker)),
        })
    }

    pub fn submit(&self, seq: u64, message: Vec<u8>) {
        if let Some(queue) = self.queue.lock().unwrap().as_ref() {
            self.submitted.fetch_add(1, Ordering::SeqCst);
            let _ = queue.send((seq, message));
        }
    }

    /// Messages submitted and not verified yet.
    pub fn backlog(&self) -> u64 {
        self.submitted.load(Ordering::SeqCst) - self.verified.load(Ordering::SeqCst)
    }

    /// Waits until every message submitted so far is verified.
    pub fn drain(&self, timeout: Duration) {
        let target = self.submitted.load(Ordering::SeqCst);
        let done = crate::poll(timeout, || {
            (self.verified.load(Ordering::SeqCst) >= target).then_some(())
        });
        assert!(done.is_some(), "dkimpy did not keep up within {timeout:?}");
    }

    /// Stops taking messages, verifies what is queued, returns every verdict.
    pub fn finish(&self) -> Vec<LiveVerdict> {
        self.queue.lock().unwrap().take();
        if let Some(worker) = self.worker.lock().unwrap().take() {
            worker.join().expect("the verifier thread");
        }
        self.verdicts.lock().unwrap().clone()
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Messages flowing through the milter until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    sent: Arc<Mutex<Vec<Sent>>>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    /// `connections` connections to the milter at `milter`, each sending
    /// messages from `sender` one after another; samples go to `verifier`.
    pub fn start(
        milter: SocketAddr,
        sender: &str,
        connections: usize,
        verifier: Arc<LiveVerifier>,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, done, sent) = (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&sent));
            let sender = sender.to_string();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let seq = Arc::new(AtomicU64::new(0));
                    let mut tasks = Vec::new();
                    for _ in 0..connections {
                        tasks.push(tokio::spawn(connection_loop(
                            milter,
                            sender.clone(),
                            Arc::clone(&stop),
                            Arc::clone(&seq),
                            Arc::clone(&done),
                            Arc::clone(&sent),
                            Arc::clone(&verifier),
                        )));
                    }
                    for task in tasks {
                        task.await.unwrap();
                    }
                });
            })
        };
        Load {
            stop,
            done,
            sent,
            thread: Some(thread),
        }
    }

    /// Messages answered so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits until `more` further messages were answered.
    pub fn wait_for_more(&self, more: u64) {
        let target = self.done() + more;
        let reached = crate::poll(Duration::from_secs(120), || {
            (self.done() >= target).then_some(())
        });
        assert!(
            reached.is_some(),
            "the load stalled at {} messages",
            self.done()
        );
    }

    /// Stops after the messages in progress; returns every message sent.
    pub fn stop(mut self) -> Vec<Sent> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the load thread");
        }
        let mut sent = self.sent.lock().unwrap().clone();
        sent.sort_by_key(|s| s.seq);
        sent
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn connection_loop(
    milter: SocketAddr,
    sender: String,
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    sent: Arc<Mutex<Vec<Sent>>>,
    verifier: Arc<LiveVerifier>,
) {
    let target: SocketSpec = format!("inet:{}@{}", milter.port(), milter.ip())
        .parse()
        .unwrap();
    let values = MacroValues::default();
    let message = crate::message::load_test(&sender, "rcpt@example.org", 2000);
    while !stop.load(Ordering::SeqCst) {
        let io = match client::open(&target).await {
            Ok(io) => io,
            Err(e) => {
                record(
                    &sent,
                    &done,
                    &seq,
                    Instant::now(),
                    Err(format!("connect: {e}")),
                );
                return;
            }
        };
        let mut mta = MilterClient::new(io, Duration::from_secs(30));
        if let Err(e) = mta.negotiate(6).await {
            record(
                &sent,
                &done,
                &seq,
                Instant::now(),
                Err(format!("negotiate: {e}")),
            );
            return;
        }
        let leading_space = mta
            .agreement()
            .is_some_and(client::Agreement::leading_space);
        if let Err(e) = mta.open_session(&values, "client.example.com").await {
            record(
                &sent,
                &done,
                &seq,
                Instant::now(),
                Err(format!("connect/helo: {e}")),
            );
            return;
        }
        for _ in 0..PER_CONNECTION {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let started = Instant::now();
            let n = seq.fetch_add(1, Ordering::SeqCst);
            let outcome = mta.send_message(&message, &format!("Q{n}"), &values).await;
            let selector = match &outcome {
                Ok(Outcome::Delivered { modifications }) => {
                    let signatures: Vec<&[u8]> = modifications
                        .iter()
                        .filter_map(|m| match m {
                            Reply::InsertHeader { name, value, .. }
                                if name.eq_ignore_ascii_case(b"DKIM-Signature") =>
                            {
                                Some(&value[..])
                            }
                            _ => None,
                        })
                        .collect();
                    match signatures.as_slice() {
                        [one] => selector_of(one)
                            .ok_or_else(|| "a DKIM-Signature without s=".to_string()),
                        other => Err(format!("{} DKIM-Signature fields", other.len())),
                    }
                }
                Ok(other) => Err(format!("not delivered signed: {other:?}")),
                Err(e) => Err(format!("client error: {e}")),
            };
            if let (Ok(_), Ok(Outcome::Delivered { modifications })) = (&selector, &outcome)
                && n.is_multiple_of(10)
                && verifier.backlog() < 20
            {
                verifier.submit(n, message.delivered(modifications, leading_space));
            }
            let failed = selector.is_err();
            sent.lock().unwrap().push(Sent {
                seq: n,
                started,
                finished: Instant::now(),
                selector,
            });
            done.fetch_add(1, Ordering::SeqCst);
            if failed {
                return;
            }
            // Leave the shared machine some room.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let _ = mta.quit().await;
    }
}

fn record(
    sent: &Mutex<Vec<Sent>>,
    done: &AtomicU64,
    seq: &AtomicU64,
    at: Instant,
    selector: Result<String, String>,
) {
    sent.lock().unwrap().push(Sent {
        seq: seq.fetch_add(1, Ordering::SeqCst),
        started: at,
        finished: at,
        selector,
    });
    done.fetch_add(1, Ordering::SeqCst);
}

/// The `s=` tag of a DKIM-Signature value.
fn selector_of(value: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(value);
    text.split(';').find_map(|tag| {
        let (name, value) = tag.split_once('=')?;
        (name.trim() == "s").then(|| value.split_whitespace().collect::<String>())
    })
}

/// One message from `sender` through the milter at `milter`: the message
/// as the MTA would deliver it, or why it was not signed.
pub fn sign_one(milter: SocketAddr, sender: &str) -> Result<Vec<u8>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let target: SocketSpec = format!("inet:{}@{}", milter.port(), milter.ip())
            .parse()
            .map_err(|e| format!("{e}"))?;
        let values = MacroValues::default();
        let fail = |e: ClientError| e.to_string();
        let mut mta = MilterClient::new(
            client::open(&target).await.map_err(|e| e.to_string())?,
            Duration::from_secs(30),
        );
        mta.negotiate(6).await.map_err(fail)?;
        let leading_space = mta
            .agreement()
            .is_some_and(client::Agreement::leading_space);
        mta.open_session(&values, "client.example.com")
            .await
            .map_err(fail)?;
        let message = crate::message::load_test(sender, "rcpt@example.org", 500);
        let outcome = mta
            .send_message(&message, "Q1", &values)
            .await
            .map_err(fail)?;
        let _ = mta.quit().await;
        match outcome {
            Outcome::Delivered { modifications } => {
                Ok(message.delivered(&modifications, leading_space))
            }
            other => Err(format!("not signed: {other:?}")),
        }
    })
}
