//! The load client (`milter-bench`) against real milters: ours, run
//! in-process with the signing filter or with test filters that answer in
//! known ways, and OpenDKIM when it is installed. What matters here is
//! that the bench counts right and that a wrong signature cannot pass;
//! nothing here looks at timings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dkim_sidecar::signing::{LivePolicy, SigningFilter};
use milter::server::{self, Listener, Settings, SocketSpec};
use milter::{
    Actions, EndOfMessage, Event, EventSet, Filter, Macros, Modification, Needs, Verdict,
};
use milter_bench::{self as bench, BenchOptions, KeyRecords, Report};
use tokio_util::sync::CancellationToken;

fn example(file: &str) -> PathBuf {
    testkit::repo_root().join("keys-example").join(file)
}

fn records(files: &[(&str, &str)]) -> Arc<KeyRecords> {
    let mut records = KeyRecords::new();
    for (file, domain) in files {
        records.add_file(&example(file), domain).unwrap();
    }
    Arc::new(records)
}

/// Serve `make_filter`'s filters on a free loopback port until the token
/// is cancelled.
async fn serve<F, M>(make_filter: M) -> (SocketSpec, CancellationToken)
where
    F: Filter + 'static,
    M: Fn() -> F + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    tokio::spawn(server::run(
        vec![Listener::Tcp(listener)],
        move |_| make_filter(),
        Settings::default(),
        shutdown.clone(),
    ));
    let spec = format!("inet:{port}@127.0.0.1").parse().unwrap();
    (spec, shutdown)
}

fn options(target: SocketSpec, connections: usize, messages: u64) -> BenchOptions {
    let mut o = BenchOptions::new(target);
    o.connections = connections;
    o.messages = Some(messages);
    o.timeout = Duration::from_secs(20);
    o
}

/// Our signing filter, with every signature's `b=` changed after signing.
struct Forger(SigningFilter);

impl Filter for Forger {
    fn needs(&self) -> Needs {
        self.0.needs()
    }
    fn connect(&mut self, c: &milter::Client, m: &Macros) -> Verdict {
        self.0.connect(c, m)
    }
    fn mail(&mut self, s: &[u8], a: &[Bytes], m: &Macros) -> Verdict {
        self.0.mail(s, a, m)
    }
    fn rcpt(&mut self, r: &[u8], a: &[Bytes], m: &Macros) -> Verdict {
        self.0.rcpt(r, a, m)
    }
    fn header(&mut self, n: &[u8], v: &[u8], m: &Macros) -> Verdict {
        self.0.header(n, v, m)
    }
    fn end_of_headers(&mut self, m: &Macros) -> Verdict {
        self.0.end_of_headers(m)
    }
    fn body(&mut self, chunk: &[u8], m: &Macros) -> Verdict {
        self.0.body(chunk, m)
    }
    fn end_of_message(&mut self, m: &Macros) -> EndOfMessage {
        let mut eom = self.0.end_of_message(m);
        for modification in &mut eom.modifications {
            if let Modification::InsertHeader { value, .. } = modification {
                // The signature ends with a line of its own: TAB, then `b=`.
                let text = String::from_utf8_lossy(value).replacen("\tb=", "\tb=AAAA", 1);
                *value = Bytes::from(text);
            }
        }
        eom
    }
    fn abort(&mut self) {
        self.0.abort();
    }
    fn close(&mut self) {
        self.0.close();
    }
}

/// Message n (counted across all connections): n % 3 == 0 gets two
/// DKIM-Signature fields, 1 is accepted at end of headers, 2 is
/// tempfailed at end of message.
struct Scripted {
    counter: Arc<AtomicU64>,
    current: u64,
}

impl Filter for Scripted {
    fn needs(&self) -> Needs {
        Needs::seeing(EventSet::of(&[Event::Mail, Event::EndOfHeaders]))
            .answering(EventSet::of(&[Event::EndOfHeaders]))
            .modifying(Actions::ADD_HEADERS)
    }
    fn mail(&mut self, _: &[u8], _: &[Bytes], _: &Macros) -> Verdict {
        self.current = self.counter.fetch_add(1, Ordering::SeqCst);
        Verdict::Continue
    }
    fn end_of_headers(&mut self, _: &Macros) -> Verdict {
        if self.current % 3 == 1 {
            Verdict::Accept
        } else {
            Verdict::Continue
        }
    }
    fn end_of_message(&mut self, _: &Macros) -> EndOfMessage {
        if self.current % 3 == 2 {
            return EndOfMessage::verdict(Verdict::Tempfail);
        }
        let field = |value: &'static str| Modification::InsertHeader {
            index: 0,
            name: Bytes::from_static(b"DKIM-Signature"),
            value: Bytes::from_static(value.as_bytes()),
        };
        EndOfMessage {
            modifications: vec![
                field(" v=1; a=rsa-sha256; d=example.com; s=one; b=AAAA"),
                field(" v=1; a=ed25519-sha256; d=example.com; s=two; b=AAAA"),
                Modification::InsertHeader {
                    index: 0,
                    name: Bytes::from_static(b"X-Other"),
                    value: Bytes::from_static(b" not a signature"),
                },
            ],
            verdict: Verdict::Continue,
        }
    }
}

fn assert_all_signed_and_verified(report: &Report, messages: u64) {
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.messages, messages, "{report}");
    assert_eq!(report.signed, messages, "{report}");
    assert_eq!(report.signatures, messages, "{report}");
    assert_eq!((report.not_signed, report.refused), (0, 0), "{report}");
    assert!(report.verification.enabled);
    assert_eq!(report.verification.checked, messages, "{report}");
    assert_eq!(report.verification.passed, messages, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_verifies_our_signatures_with_every_protocol_version() {
    let live = Arc::new(LivePolicy::new(testkit::policy::example()));
    let (target, shutdown) = serve(move || SigningFilter::new(Arc::clone(&live))).await;
    for version in [2, 3, 4, 6] {
        let mut o = options(target.clone(), 3, 12);
        o.protocol = version;
        o.verify_every = 1;
        o.per_connection = Some(2);
        o.records = records(&[("default.txt", "example.com")]);
        let report = bench::run(o).await.unwrap();
        assert_all_signed_and_verified(&report, 12);
        assert_eq!(report.protocol_agreed, Some(version));
    }
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_signature_is_an_error() {
    let live = Arc::new(LivePolicy::new(testkit::policy::example()));
    let (target, shutdown) = serve(move || Forger(SigningFilter::new(Arc::clone(&live)))).await;
    let mut o = options(target.clone(), 2, 10);
    o.verify_every = 1;
    o.records = records(&[("default.txt", "example.com")]);
    let report = bench::run(o).await.unwrap();
    assert_eq!(report.signed, 10, "{report}");
    assert_eq!(report.verification.failed, 10, "{report}");
    assert!(report.errors >= 10 && !report.is_clean(), "{report}");
    assert!(report.verification.failures[0].contains("d=example.com s=default"));
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_checked_against_another_key_fails() {
    let live = Arc::new(LivePolicy::new(testkit::policy::example()));
    let (target, shutdown) = serve(move || SigningFilter::new(Arc::clone(&live))).await;
    // The Ed25519 record published under the RSA key's name.
    let text = std::fs::read_to_string(example("ed25519.txt")).unwrap();
    let mut wrong = KeyRecords::new();
    let record: String = text.split('"').skip(1).step_by(2).collect();
    wrong
        .add("default._domainkey.example.com", &record)
        .unwrap();
    let mut o = options(target.clone(), 1, 5);
    o.verify_every = 2;
    o.records = Arc::new(wrong);
    let report = bench::run(o).await.unwrap();
    assert_eq!(report.signed, 5, "{report}");
    assert_eq!(report.verification.checked, 3, "every second one: {report}");
    assert_eq!(report.verification.failed, 3, "{report}");
    assert!(!report.is_clean());
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_unsigned_and_refused_messages_are_counted_apart() {
    let counter = Arc::new(AtomicU64::new(0));
    let (target, shutdown) = serve(move || Scripted {
        counter: Arc::clone(&counter),
        current: 0,
    })
    .await;
    let report = bench::run(options(target, 1, 9)).await.unwrap();
    assert_eq!(report.messages, 9, "{report}");
    assert_eq!(report.signed, 3, "{report}");
    assert_eq!(report.signatures, 6, "{report}");
    assert_eq!(report.not_signed, 3, "{report}");
    assert_eq!(report.refused, 3, "{report}");
    assert_eq!(report.errors, 0, "{report}");
    assert!(!report.verification.enabled);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_held_open_until_released() {
    let live = Arc::new(LivePolicy::new(testkit::policy::example()));
    let (target, shutdown) = serve(move || SigningFilter::new(Arc::clone(&live))).await;
    let mut o = options(target, 20, 0);
    o.hold = Some(Duration::from_millis(300));
    o.server_pid = Some(std::process::id());
    let report = bench::run(o).await.unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.messages, 0);
    let server = report.server.expect("server usage");
    assert!(server.rss_held_kib.is_some_and(|k| k > 0), "{server:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn connection_refused_is_reported_not_hung() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let report = bench::run(options(
        format!("inet:{port}@127.0.0.1").parse().unwrap(),
        2,
        5,
    ))
    .await
    .unwrap();
    assert_eq!(report.messages, 0);
    assert!(report.errors >= 2, "{report}");
    assert!(
        report.error_samples[0].contains("cannot connect"),
        "{report}"
    );
}

/// OpenDKIM from Debian's package, signing with the example key.
struct OpenDkim {
    child: Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl OpenDkim {
    fn start() -> Option<OpenDkim> {
        let binary = Path::new("/usr/sbin/opendkim");
        if !binary.exists() {
            eprintln!("opendkim is not installed (Debian package opendkim): skipping");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("default.private");
        std::fs::copy(example("default.private"), &key).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("opendkim.conf");
        std::fs::write(
            &conf,
            format!(
                "Syslog no\nMode s\nCanonicalization relaxed/simple\nDomain example.com\n\
                 Selector default\nKeyFile {}\nSocket inet:{port}@127.0.0.1\n\
                 RequireSafeKeys no\n",
                key.display()
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("-f")
            .arg("-x")
            .arg(&conf)
            .spawn()
            .unwrap();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        // Dropped on every path from here: killed and reaped.
        let opendkim = OpenDkim {
            child,
            address,
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(address).is_ok() {
                return Some(opendkim);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("opendkim did not start listening on {address}");
    }

    fn target(&self) -> SocketSpec {
        format!("inet:{}@127.0.0.1", self.address.port())
            .parse()
            .unwrap()
    }
}

impl Drop for OpenDkim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_verifies_opendkim_signatures() {
    let Some(opendkim) = OpenDkim::start() else {
        return;
    };
    for version in [2, 6] {
        let mut o = options(opendkim.target(), 2, 6);
        o.protocol = version;
        o.verify_every = 1;
        o.records = records(&[("default.txt", "example.com")]);
        o.server_pid = Some(opendkim.child.id());
        let report = bench::run(o).await.unwrap();
        assert_all_signed_and_verified(&report, 6);
        assert!(report.server.is_some_and(|s| s.rss_peak_kib > 0));
    }
    // Mail from a domain OpenDKIM does not sign for comes back unsigned.
    let mut o = options(opendkim.target(), 1, 3);
    o.sender = "someone@example.net".into();
    let report = bench::run(o).await.unwrap();
    assert_eq!((report.signed, report.not_signed), (0, 3), "{report}");
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_record_fails_opendkim_signatures() {
    let Some(opendkim) = OpenDkim::start() else {
        return;
    };
    let text = std::fs::read_to_string(example("ed25519.txt")).unwrap();
    let record: String = text.split('"').skip(1).step_by(2).collect();
    let mut wrong = KeyRecords::new();
    wrong
        .add("default._domainkey.example.com", &record)
        .unwrap();
    let mut o = options(opendkim.target(), 1, 4);
    o.verify_every = 1;
    o.records = Arc::new(wrong);
    let report = bench::run(o).await.unwrap();
    assert_eq!(report.signed, 4, "{report}");
    assert_eq!(report.verification.failed, 4, "{report}");
    assert!(!report.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_a_milter_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SocketSpec::Unix(dir.path().join("milter.sock"));
    let listeners = server::bind(&spec, &server::UnixSocketAccess::default(), 16).unwrap();
    let live = Arc::new(LivePolicy::new(testkit::policy::example()));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(server::run(
        listeners,
        move |_| SigningFilter::new(Arc::clone(&live)),
        Settings::default(),
        shutdown.clone(),
    ));
    let target: SocketSpec = format!("unix:{}", dir.path().join("milter.sock").display())
        .parse()
        .unwrap();
    let mut o = options(target, 2, 6);
    o.verify_every = 1;
    o.records = records(&[("default.txt", "example.com")]);
    let report = bench::run(o).await.unwrap();
    assert_all_signed_and_verified(&report, 6);
    shutdown.cancel();
    server.await.unwrap();
}
