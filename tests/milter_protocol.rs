//! The milter engine against a client nobody here wrote: `miltertest`
//! (Debian package `miltertest`), a scripted MTA from the OpenDKIM project,
//! plus raw-socket clients for the malformed input no MTA would send.
//!
//! The server runs in-process with a small test filter, so these tests
//! check the protocol engine alone; the DKIM filter has its own tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use milter::server::{self, Listener, Settings, SocketSpec, UnixSocketAccess};
use milter::{
    Actions, Client, EndOfMessage, Event, EventSet, Filter, Macros, Modification, Needs, SmtpReply,
    Stage, Verdict,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Stamps every message with what it saw: the sender, the SMTP AUTH
/// mechanism, how many headers and body bytes arrived, and the queue id.
/// Rejects recipients at `reject.example`.
#[derive(Default)]
struct StampFilter {
    sender: String,
    headers: usize,
    body_bytes: usize,
    subject: Option<String>,
}

impl Filter for StampFilter {
    fn needs(&self) -> Needs {
        Needs::seeing(EventSet::of(&[
            Event::Connect,
            Event::Mail,
            Event::Rcpt,
            Event::Header,
            Event::Body,
        ]))
        .answering(EventSet::of(&[Event::Rcpt]))
        .modifying(Actions::ADD_HEADERS)
        .with_macros(Stage::Connect, &["j", "{daemon_name}"])
        .with_macros(Stage::Mail, &["{auth_type}", "i"])
        .with_macros(Stage::EndOfMessage, &["i"])
    }

    fn connect(&mut self, _client: &Client, _macros: &Macros) -> Verdict {
        Verdict::Continue
    }

    fn mail(&mut self, sender: &[u8], _args: &[Bytes], macros: &Macros) -> Verdict {
        self.sender = format!(
            "{} auth={}",
            String::from_utf8_lossy(sender),
            macros.get_str("auth_type").unwrap_or("none")
        );
        Verdict::Continue
    }

    fn rcpt(&mut self, recipient: &[u8], _args: &[Bytes], _macros: &Macros) -> Verdict {
        if recipient.ends_with(b"@reject.example>") {
            Verdict::Smtp(SmtpReply {
                code: 550,
                status: Some("5.7.1".into()),
                text: "recipient refused by test filter".into(),
            })
        } else {
            Verdict::Continue
        }
    }

    fn header(&mut self, name: &[u8], value: &[u8], _macros: &Macros) -> Verdict {
        self.headers += 1;
        if name.eq_ignore_ascii_case(b"subject") {
            self.subject = Some(String::from_utf8_lossy(value).into_owned());
        }
        Verdict::Continue
    }

    fn body(&mut self, chunk: &[u8], _macros: &Macros) -> Verdict {
        self.body_bytes += chunk.len();
        Verdict::Continue
    }

    fn end_of_message(&mut self, macros: &Macros) -> EndOfMessage {
        let stamp = format!(
            " {} headers={} body={} subject=[{}] id={}",
            self.sender,
            self.headers,
            self.body_bytes,
            self.subject.as_deref().unwrap_or(""),
            macros.get_str("i").unwrap_or("none"),
        );
        self.abort();
        EndOfMessage {
            modifications: vec![Modification::InsertHeader {
                index: 0,
                name: Bytes::from_static(b"X-Milter-Test"),
                value: Bytes::from(stamp),
            }],
            verdict: Verdict::Continue,
        }
    }

    fn abort(&mut self) {
        *self = StampFilter::default();
    }
}

/// Log lines the server wrote, captured for assertions.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Capture what is logged on the calling thread from now on.
    ///
    /// One process-wide subscriber routes each line to the capture of the
    /// thread that logged it. (A per-thread `set_default` subscriber is not
    /// enough: tracing caches per call site whether anyone listens, and a
    /// call site first reached by another test's thread, with no subscriber,
    /// could stay silent for this one.)
    fn capture_this_thread(&self) {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(|| ThreadCapture)
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
        });
        CAPTURE.with(|c| *c.borrow_mut() = Some(self.clone()));
    }
}

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the capture of the current thread, if it has one.
struct ThreadCapture;

impl std::io::Write for ThreadCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| match c.borrow_mut().as_mut() {
            Some(logs) => logs.write(buf),
            None => Ok(buf.len()),
        })
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Our milter engine with [`StampFilter`], listening on one socket, on a
/// runtime of its own so that everything it logs is captured.
struct TestServer {
    /// The socket as miltertest's `mt.connect` wants it.
    address: String,
    tcp: Option<std::net::SocketAddr>,
    logs: Logs,
    shutdown: CancellationToken,
    thread: std::thread::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start(unix: bool, settings: Settings) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let socket_path = dir.path().join("milter.sock");
        let (tcp_listener, address, tcp) = if unix {
            (None, format!("unix:{}", socket_path.display()), None)
        } else {
            // Let the OS choose a free port.
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            let a = l.local_addr().unwrap();
            (Some(l), format!("inet:{}@127.0.0.1", a.port()), Some(a))
        };
        let logs = Logs::default();
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn({
            let logs = logs.clone();
            let shutdown = shutdown.clone();
            move || {
                logs.capture_this_thread();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listeners = match tcp_listener {
                        Some(l) => {
                            vec![Listener::Tcp(tokio::net::TcpListener::from_std(l).unwrap())]
                        }
                        None => server::bind(
                            &SocketSpec::Unix(socket_path),
                            &UnixSocketAccess::default(),
                            128,
                        )
                        .unwrap(),
                    };
                    ready_tx.send(()).unwrap();
                    server::run(listeners, |_| StampFilter::default(), settings, shutdown).await;
                });
            }
        });
        ready_rx.await.unwrap();
        TestServer {
            address,
            tcp,
            logs,
            shutdown,
            thread,
            _dir: dir,
        }
    }

    async fn stop(self) -> String {
        self.shutdown.cancel();
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        self.logs.text()
    }
}

/// Run a miltertest script; panic with its output unless it succeeds.
async fn miltertest(script: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("test.lua");
    std::fs::write(&path, script).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("miltertest")
            .arg("-s")
            .arg(&path)
            .output()
            .expect("miltertest is installed (Debian package miltertest)")
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "miltertest failed ({}):\n{text}\nscript:\n{script}",
        output.status
    );
    text
}

/// Protocol flags Postfix offers for `milter_protocol = N`.
fn postfix_protocol_flags(version: u32) -> u32 {
    match version {
        2 => 0x7f,
        3 => 0x17f,
        4 => 0x37f,
        _ => 0x1f_ffff,
    }
}

/// A miltertest script: one connection, `messages` transactions with an
/// abort after each, every one checked for the inserted header.
fn conversation(address: &str, version: u32, messages: usize) -> String {
    let mut s = format!(
        r#"
-- miltertest raises an error (silently) when a script sends an event the
-- filter negotiated away; an MTA simply does not send it. Mirror the MTA.
local function fail(msg) mt.echo("FAIL " .. msg); error(msg) end
local function ok(result, what) if result ~= nil then fail(what .. ": " .. tostring(result)) end end
local conn = mt.connect("{address}", 20, 0.1)
if conn == nil then fail("cannot connect to {address}") end
-- The man page says (conn, version, actions, steps); the code reads the
-- third argument as protocol flags and the fourth as actions.
ok(mt.negotiate(conn, {version}, {flags}, 0x1ff), "negotiate")
local leadspc = mt.test_option(conn, SMFIP_HDR_LEADSPC)
if leadspc ~= ({version} >= 6) then fail("HDR_LEADSPC negotiated: " .. tostring(leadspc)) end
if not mt.test_action(conn, SMFIF_ADDHDRS) then fail("ADDHDRS not requested") end
mt.macro(conn, SMFIC_CONNECT, "j", "mx.example.com", "{{daemon_name}}", "ORIGINATING")
ok(mt.conninfo(conn, "client.example.com", "192.0.2.10"), "conninfo")
if not mt.test_option(conn, SMFIP_NOHELO) then ok(mt.helo(conn, "client.example.com"), "helo") end
"#,
        flags = postfix_protocol_flags(version)
    );
    for n in 0..messages {
        let auth = if n.is_multiple_of(2) { "PLAIN" } else { "" };
        // With HDR_LEADSPC (version 6) the value travels with its leading
        // space; otherwise the MTA adds it.
        let wire_value = if version >= 6 {
            format!(" {}", expected_stamp(n, version))
        } else {
            expected_stamp(n, version)
        };
        s.push_str(&format!(
            r#"
mt.macro(conn, SMFIC_MAIL, "{{auth_type}}", "{auth}", "i", "QID{n}")
ok(mt.mailfrom(conn, "<sender{n}@example.com>"), "mailfrom")
ok(mt.rcptto(conn, "<a@example.org>"), "rcptto")
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("rcpt not continued") end
ok(mt.rcptto(conn, "<b@reject.example>"), "rcptto 2")
if mt.getreply(conn) ~= SMFIR_REPLYCODE then fail("recipient was not refused") end
if {version} >= 4 and not mt.test_option(conn, SMFIP_NODATA) then ok(mt.data(conn), "data") end
ok(mt.header(conn, "From", "sender{n}@example.com"), "header")
ok(mt.header(conn, "Subject", "message {n}"), "header")
ok(mt.header(conn, "X-Empty", ""), "empty header")
if not mt.test_option(conn, SMFIP_NOEOH) then ok(mt.eoh(conn), "eoh") end
ok(mt.bodystring(conn, "line one\r\n"), "body")
ok(mt.bodystring(conn, "line two\r\n"), "body")
ok(mt.eom(conn), "eom")
if mt.getreply(conn) ~= SMFIR_CONTINUE then fail("eom not continued") end
local stamp = mt.getheader(conn, "X-Milter-Test", 0)
mt.echo("STAMP " .. tostring(stamp))
if not mt.eom_check(conn, MT_HDRINSERT, "X-Milter-Test", "{wire_value}", 0) then fail("header not inserted at index 0 with the expected value") end
ok(mt.abort(conn), "abort")
"#
        ));
    }
    s.push_str("mt.disconnect(conn)\n");
    s
}

fn stamps(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("STAMP "))
        .map(|s| s.trim().to_string())
        .collect()
}

/// What [`StampFilter`] writes for message `n` of [`conversation`]. The
/// filter sees the Subject value as it stood after the colon: miltertest,
/// like Postfix, sends it with its leading space under HDR_LEADSPC, and
/// without it otherwise, when the session puts the space back.
fn expected_stamp(n: usize, _version: u32) -> String {
    let auth = if n.is_multiple_of(2) { "PLAIN" } else { "" };
    format!(
        "<sender{n}@example.com> auth={auth} headers=3 body=20 subject=[ message {n}] id=QID{n}"
    )
}

async fn check_conversation(unix: bool, version: u32) {
    let server = TestServer::start(unix, Settings::default()).await;
    let output = miltertest(&conversation(&server.address, version, 3)).await;
    let got = stamps(&output);
    assert_eq!(got.len(), 3, "{output}");
    for (n, stamp) in got.iter().enumerate() {
        assert_eq!(stamp, &expected_stamp(n, version), "message {n}");
    }
    let logs = server.stop().await;
    assert!(!logs.contains("WARN") && !logs.contains("ERROR"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_version_6_over_tcp_with_several_messages() {
    check_conversation(false, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_version_2_over_tcp_with_several_messages() {
    check_conversation(false, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_version_6_over_unix_socket() {
    check_conversation(true, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_version_2_over_unix_socket() {
    check_conversation(true, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_versions_3_and_4_are_accepted() {
    let server = TestServer::start(false, Settings::default()).await;
    for version in [3, 4] {
        let output = miltertest(&conversation(&server.address, version, 1)).await;
        assert_eq!(
            stamps(&output),
            vec![expected_stamp(0, version)],
            "v{version}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_miltertest_clients_are_served_independently() {
    let server = TestServer::start(false, Settings::default()).await;
    let runs: Vec<_> = (0u32..4)
        .map(|i| {
            let version = if i.is_multiple_of(2) { 6 } else { 2 };
            let script = conversation(&server.address, version, 2);
            tokio::spawn(async move { (version, miltertest(&script).await) })
        })
        .collect();
    for run in runs {
        let (version, output) = run.await.unwrap();
        assert_eq!(
            stamps(&output),
            vec![expected_stamp(0, version), expected_stamp(1, version)]
        );
    }
    server.stop().await;
}

// ---- bad input: raw sockets, one log line, the server lives on ----------

fn frame(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(code);
    out.extend_from_slice(payload);
    out
}

fn offer(version: u32) -> Vec<u8> {
    let mut p = Vec::new();
    for v in [version, 0x1ff, postfix_protocol_flags(version)] {
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(b'O', &p)
}

/// Send `bytes` and close our side, then read until the server closes;
/// returns what it sent.
async fn send_and_wait_for_close(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    // Like an MTA that dies mid-frame: nothing more will come.
    stream.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
        .await
        .expect("server closes the connection")
        .ok();
    got
}

async fn assert_bad_input_closes_with_one_log_line(bytes: Vec<u8>, log_needle: &str) {
    let server = TestServer::start(false, Settings::default()).await;
    let addr = server.tcp.unwrap();
    let replies = send_and_wait_for_close(addr, &bytes).await;
    // The server keeps serving well-behaved clients afterwards.
    let output = miltertest(&conversation(&server.address, 6, 1)).await;
    assert_eq!(stamps(&output), vec![expected_stamp(0, 6)]);
    let logs = server.stop().await;
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("milter connection closed"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one log line expected:\n{logs}");
    assert!(lines[0].contains(log_needle), "{}", lines[0]);
    assert!(
        lines[0].contains("127.0.0.1:"),
        "log names the peer: {}",
        lines[0]
    );
    // Whatever was answered before the bad frame was complete frames.
    let mut rest = &replies[..];
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        assert!(rest.len() >= 4 + len, "partial reply frame");
        rest = &rest[4 + len..];
    }
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_closes_the_connection() {
    let mut bytes = offer(6);
    bytes.extend_from_slice(&frame(b'H', b"client.example\0")[..8]);
    assert_bad_input_closes_with_one_log_line(bytes, "middle of a frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_command_closes_the_connection() {
    let mut bytes = offer(6);
    bytes.extend(frame(b'Z', b""));
    assert_bad_input_closes_with_one_log_line(bytes, "unknown command byte 0x5a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_length_closes_the_connection_without_reading_it() {
    let mut bytes = offer(6);
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, b'B']);
    assert_bad_input_closes_with_one_log_line(bytes, "exceeds the limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_length_closes_the_connection() {
    let mut bytes = offer(6);
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    assert_bad_input_closes_with_one_log_line(bytes, "frame length 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_out_of_order_close_the_connection() {
    let mut bytes = offer(6);
    bytes.extend(frame(b'M', b"<a@example.com>\0"));
    bytes.extend(frame(b'N', b""));
    bytes.extend(frame(b'L', b"Subject\0late\0"));
    assert_bad_input_closes_with_one_log_line(bytes, "after the end of headers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_before_negotiation_closes_the_connection() {
    let bytes = frame(b'M', b"<a@example.com>\0");
    assert_bad_input_closes_with_one_log_line(bytes, "before option negotiation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_one_is_refused() {
    let mut p = Vec::new();
    for v in [1u32, 0x1ff, 0x7f] {
        p.extend_from_slice(&v.to_be_bytes());
    }
    assert_bad_input_closes_with_one_log_line(frame(b'O', &p), "protocol version 1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_and_logged_once_when_none_is_idle() {
    /// One reply frame: its command byte.
    async fn reply(s: &mut tokio::net::TcpStream) -> u8 {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut rest).await.unwrap();
        rest[0]
    }
    let settings = Settings {
        max_connections: 2,
        ..Settings::default()
    };
    let server = TestServer::start(false, settings).await;
    let addr = server.tcp.unwrap();
    // Two connections hold both slots, each in a transaction (an idle one
    // would make room for a newcomer): protocol 2, so MAIL is answered
    // once the server has taken it.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&offer(2)).await.unwrap();
        assert_eq!(reply(&mut s).await, b'O');
        s.write_all(&frame(b'C', b"localhost\x004\x00\x19127.0.0.1\x00"))
            .await
            .unwrap();
        assert_eq!(reply(&mut s).await, b'c');
        s.write_all(&frame(b'M', b"<a@example.com>\x00"))
            .await
            .unwrap();
        assert_eq!(reply(&mut s).await, b'c');
        held.push(s);
    }
    // Fifty more are closed at once.
    for _ in 0..50 {
        let got = send_and_wait_for_close(addr, &offer(6)).await;
        assert!(got.is_empty(), "a refused connection gets no reply");
    }
    drop(held);
    // Once the held connections go away, service resumes.
    let mut output = String::new();
    for _ in 0..50 {
        let script = conversation(&server.address, 6, 1);
        let out = tokio::spawn(async move {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.lua");
            std::fs::write(&path, script).unwrap();
            Command::new("miltertest")
                .arg("-s")
                .arg(&path)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        if out.status.success() {
            output = String::from_utf8_lossy(&out.stdout).into_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stamps(&output), vec![expected_stamp(0, 6)]);
    let logs = server.stop().await;
    let refusals = logs.matches("connection limit reached").count();
    assert_eq!(refusals, 1, "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_open_transaction_finish() {
    let server = TestServer::start(false, Settings::default()).await;
    let addr = server.tcp.unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&offer(6)).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(n > 0);
    s.write_all(&frame(b'M', b"<a@example.com>\0"))
        .await
        .unwrap();
    s.write_all(&frame(b'L', b"Subject\0 hi\0")).await.unwrap();
    // Let the server see the transaction start, then ask it to stop.
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(&frame(b'N', b"")).await.unwrap();
    s.write_all(&frame(b'E', b"")).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("closed after the transaction")
        .unwrap();
    // The end of message was answered (header + continue) before closing.
    assert!(got.windows(13).any(|w| w == b"X-Milter-Test"), "{got:?}");
    assert_eq!(got.last(), Some(&b'c'));
    server.stop().await;
}

#[test]
fn miltertest_is_installed() {
    assert!(
        Path::new("/usr/bin/miltertest").exists(),
        "install Debian's miltertest package"
    );
}

/// Inserts `X-Thread:` naming the thread its end of message ran on, or
/// panics there; asks for that end of message to run on the work threads
/// when `heavy`.
struct ThreadReporter {
    heavy: bool,
    panic: bool,
}

impl Filter for ThreadReporter {
    fn needs(&self) -> Needs {
        Needs::seeing(EventSet::NONE).modifying(Actions::ADD_HEADERS)
    }

    fn end_of_message(&mut self, _macros: &Macros) -> EndOfMessage {
        if self.panic {
            panic!("test filter panics at end of message");
        }
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        EndOfMessage {
            modifications: vec![Modification::InsertHeader {
                index: 0,
                name: Bytes::from_static(b"X-Thread"),
                value: Bytes::from(format!(" {name}")),
            }],
            verdict: Verdict::Continue,
        }
    }

    fn offload_end_of_message(&self) -> bool {
        self.heavy
    }
}

/// One message through a server running `filter`s, as Postfix sends it,
/// while `idle` other connections are open.
async fn one_message(
    work_threads: usize,
    heavy: bool,
    panic: bool,
    idle: usize,
) -> Result<milter::client::Outcome, String> {
    use milter::client::{self, MilterClient};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    let settings = Settings {
        work_threads,
        ..Settings::default()
    };
    let server = tokio::spawn(server::run(
        vec![Listener::Tcp(listener)],
        move |_| ThreadReporter { heavy, panic },
        settings,
        shutdown.clone(),
    ));
    let target: SocketSpec = format!("inet:{port}@127.0.0.1").parse().unwrap();
    let mut others = Vec::new();
    for _ in 0..idle {
        let mut other = MilterClient::new(
            client::open(&target).await.unwrap(),
            Duration::from_secs(10),
        );
        // Negotiated, so the server has certainly counted it.
        other.negotiate(6).await.unwrap();
        others.push(other);
    }
    let mut mta = MilterClient::new(
        client::open(&target).await.unwrap(),
        Duration::from_secs(10),
    );
    mta.negotiate(6).await.unwrap();
    let values = client::MacroValues::default();
    assert_eq!(mta.open_session(&values, "client").await.unwrap(), None);
    let message = testkit::message::load_test("a@example.com", "b@example.org", 100);
    let outcome = mta
        .send_message(&message, "Q1", &values)
        .await
        .map_err(|e| e.to_string());
    let _ = mta.quit().await;
    for other in others {
        let _ = other.quit().await;
    }
    shutdown.cancel();
    server.await.unwrap();
    outcome
}

fn inserted_thread(outcome: &milter::client::Outcome) -> String {
    match outcome {
        milter::client::Outcome::Delivered { modifications } => match &modifications[..] {
            [milter::Reply::InsertHeader { value, .. }] => {
                String::from_utf8_lossy(value).trim().to_string()
            }
            other => panic!("unexpected modifications {other:?}"),
        },
        other => panic!("not delivered: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_end_of_message_runs_on_the_work_threads_when_connections_compete() {
    // Three connections for two runtime threads: the work goes to the pool.
    let on_pool = inserted_thread(&one_message(2, true, false, 2).await.unwrap());
    assert!(on_pool.starts_with("milter-work-"), "{on_pool}");
    // Alone, or with one other connection, it stays on its own thread.
    for idle in [0, 1] {
        let alone = inserted_thread(&one_message(2, true, false, idle).await.unwrap());
        assert!(!alone.starts_with("milter-work-"), "{alone}");
    }
    let light = inserted_thread(&one_message(2, false, false, 2).await.unwrap());
    assert!(!light.starts_with("milter-work-"), "{light}");
    let no_pool = inserted_thread(&one_message(0, true, false, 2).await.unwrap());
    assert!(!no_pool.starts_with("milter-work-"), "{no_pool}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_the_work_threads_answers_tempfail() {
    for work_threads in [1, 0] {
        let outcome = one_message(work_threads, true, true, 2).await.unwrap();
        assert!(
            matches!(
                outcome,
                milter::client::Outcome::Refused {
                    event: 'E',
                    reply: milter::Reply::Tempfail
                }
            ),
            "{outcome:?}"
        );
    }
}

/// Panics where asked: in end of message on the connection's own thread
/// (`Inline`), or while being dropped, outside every filter call
/// (`OnDrop`), which only the connection task's own guard catches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PanicAt {
    Nowhere,
    Inline,
    OnDrop,
}

struct Panicky(PanicAt);

impl Filter for Panicky {
    fn needs(&self) -> Needs {
        ThreadReporter {
            heavy: false,
            panic: false,
        }
        .needs()
    }

    fn end_of_message(&mut self, _macros: &Macros) -> EndOfMessage {
        if self.0 == PanicAt::Inline {
            panic!("test filter panics on the connection task");
        }
        EndOfMessage {
            modifications: vec![Modification::InsertHeader {
                index: 0,
                name: Bytes::from_static(b"X-Ok"),
                value: Bytes::from_static(b"yes"),
            }],
            verdict: Verdict::Continue,
        }
    }
}

impl Drop for Panicky {
    fn drop(&mut self) {
        if self.0 == PanicAt::OnDrop && !std::thread::panicking() {
            panic!("test filter panics while dropped");
        }
    }
}

#[test]
fn a_panic_on_the_connection_task_answers_tempfail_is_logged_once_and_the_server_lives_on() {
    use milter::client::{self, MilterClient, Outcome};
    let logs = Logs::default();
    logs.capture_this_thread();
    // One thread: the filter runs on the connection task itself.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shutdown = CancellationToken::new();
        let settings = Settings {
            work_threads: 0,
            ..Settings::default()
        };
        // Connection 1 panics in end of message, 3 when its filter is
        // dropped; 2 and 4 are ordinary.
        let server = tokio::spawn(server::run(
            vec![Listener::Tcp(listener)],
            |info: &server::ConnectionInfo| {
                Panicky(match info.id {
                    1 => PanicAt::Inline,
                    3 => PanicAt::OnDrop,
                    _ => PanicAt::Nowhere,
                })
            },
            settings,
            shutdown.clone(),
        ));
        let target: SocketSpec = format!("inet:{port}@127.0.0.1").parse().unwrap();
        let values = client::MacroValues::default();
        let message = testkit::message::load_test("a@example.com", "b@example.org", 100);
        for n in 1..=4 {
            let mut mta = MilterClient::new(
                client::open(&target).await.unwrap(),
                Duration::from_secs(10),
            );
            mta.negotiate(6).await.unwrap();
            assert_eq!(mta.open_session(&values, "client").await.unwrap(), None);
            let outcome = mta.send_message(&message, "Q1", &values).await.unwrap();
            if n == 1 {
                assert!(
                    matches!(
                        outcome,
                        Outcome::Refused {
                            event: 'E',
                            reply: milter::Reply::Tempfail
                        }
                    ),
                    "{outcome:?}"
                );
            } else {
                assert!(
                    matches!(outcome, Outcome::Delivered { .. }),
                    "connection {n}: {outcome:?}"
                );
                let _ = mta.quit().await;
            }
        }
        // Let the connection tasks finish and log.
        tokio::time::sleep(Duration::from_millis(200)).await;
        shutdown.cancel();
        server.await.unwrap();
    });
    let text = logs.text();
    let about = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(about("panics on the connection task"), 1, "{text}");
    assert_eq!(about("panics while dropped"), 1, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("conn=1") && l.contains("answered tempfail")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("conn=3") && l.contains("task panicked")),
        "{text}"
    );
}
