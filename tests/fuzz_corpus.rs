//! Records what a real Postfix sends to a milter, byte for byte, as the
//! seed corpus of the `milter_session` fuzz target.
//!
//! A small TCP proxy sits between Postfix (smtpd and, for sendmail(1),
//! cleanup) and dkim-sidecar; everything Postfix writes on each milter
//! connection is saved as one corpus file. The mail exercised: messages
//! over SMTP (several on one connection, an RSET, folded and 8-bit
//! headers, a dot-stuffed and a CRLF-less body) and one through sendmail,
//! with milter_protocol 6 and 2. Every message must arrive signed, so the
//! recorded sessions are ones the sidecar really handled.
//!
//! Ignored by default: it needs root and Postfix (like `postfix_e2e`), and
//! its output changes on every run (queue IDs, dates). `fuzz/record-corpus`
//! runs it; `FUZZ_CORPUS_DIR` says where the files go.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use testkit::message::alice_to_bob_with;
use testkit::opendkim::SigningKey;
use testkit::{MilterSocket, Postfix, Sidecar, SmtpSink, Submission};

const DELIVERY: Duration = Duration::from_secs(30);

/// Sessions recorded so far: the bytes the MTA wrote on each connection.
type Sessions = Arc<Mutex<Vec<Vec<u8>>>>;

/// A TCP proxy in front of `upstream` that records the client's bytes.
struct Recorder {
    addr: SocketAddr,
    sessions: Sessions,
    open: Arc<Mutex<usize>>,
}

impl Recorder {
    fn start(upstream: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let sessions = Sessions::default();
        let open = Arc::new(Mutex::new(0usize));
        let (s, o) = (Arc::clone(&sessions), Arc::clone(&open));
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let server = TcpStream::connect(upstream).expect("connect to the sidecar");
                *o.lock().unwrap() += 1;
                let (s, o) = (Arc::clone(&s), Arc::clone(&o));
                thread::spawn(move || relay(client, server, s, o));
            }
        });
        Recorder {
            addr,
            sessions,
            open,
        }
    }

    /// The sessions, once every connection has closed.
    fn finish(&self) -> Vec<Vec<u8>> {
        let closed = testkit::poll(Duration::from_secs(30), || {
            (*self.open.lock().unwrap() == 0).then_some(())
        });
        assert!(closed.is_some(), "milter connections still open");
        self.sessions.lock().unwrap().clone()
    }
}

/// Copy both ways; keep what the MTA wrote.
fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    sessions: Sessions,
    open: Arc<Mutex<usize>>,
) {
    let (mut client_r, mut server_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let back = thread::spawn(move || {
        let _ = std::io::copy(&mut server, &mut client);
        let _ = client.shutdown(Shutdown::Write);
    });
    let mut recorded = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match client_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                recorded.extend_from_slice(&buf[..n]);
                if server_w.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = server_w.shutdown(Shutdown::Write);
    let _ = back.join();
    sessions.lock().unwrap().push(recorded);
    *open.lock().unwrap() -= 1;
}

#[test]
#[ignore = "needs root and Postfix; writes the fuzz corpus (fuzz/record-corpus)"]
fn record_postfix_milter_sessions() {
    let out = std::env::var_os("FUZZ_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/milter_session")
        });
    std::fs::create_dir_all(&out).unwrap();
    let sink = SmtpSink::start();
    let sidecar = Sidecar::builder()
        .keys(&[SigningKey::Rsa, SigningKey::Ed25519])
        .write();
    let socket = MilterSocket::free_inet();
    let _milter = sidecar.start(&socket);
    let MilterSocket::Inet(upstream) = socket else {
        unreachable!()
    };
    let recorder = Recorder::start(upstream);
    let proxied = MilterSocket::Inet(recorder.addr);

    let mut sent = 0;
    for protocol in [6, 2] {
        let postfix = Postfix::builder()
            .relay_to(sink.addr())
            .milter(&proxied)
            .milter_protocol(protocol)
            .start();
        let mut client = Submission::open(postfix.smtp_addr());
        client
            .send(
                "alice@example.com",
                &["bob@example.org"],
                &alice_to_bob_with(
                    "plain",
                    "",
                    "Hello Bob,\r\n.a line that starts with a dot\r\n",
                ),
            )
            .expect_ok("plain");
        client.mail_from("alice@example.com").expect_ok("MAIL");
        client.rcpt_to("carol@example.org").expect_ok("RCPT");
        client.rset().expect_ok("RSET");
        client
            .send(
                "alice@example.com",
                &["bob@example.org", "carol@example.org"],
                &alice_to_bob_with(
                    "folded",
                    "X-Folded: one\r\n\ttwo\r\n   three\r\nX-Empty:\r\nX-Eight-Bit: caf\u{e9}\r\n",
                    "  leading space\r\ntrailing space  \r\n\r\n\r\n",
                ),
            )
            .expect_ok("folded");
        client
            .send(
                "alice@example.com",
                &["bob@example.org"],
                &alice_to_bob_with("no-final-newline", "", "no CRLF at the end"),
            )
            .expect_ok("no final newline");
        client.quit();
        postfix.sendmail(
            "alice@example.com",
            &["bob@example.org"],
            alice_to_bob_with("sendmail", "", "From sendmail(1)\n").as_slice(),
        );
        sent += 4;
        let received = sink.wait_for_messages(sent, DELIVERY);
        for m in &received {
            assert!(
                !m.header_values("DKIM-Signature").is_empty(),
                "a message arrived unsigned:\n{}",
                m.text()
            );
        }
        postfix.stop();
    }

    let sessions = recorder.finish();
    // smtpd: one connection per protocol; cleanup: one per sendmail.
    assert!(sessions.len() >= 4, "{} sessions recorded", sessions.len());
    for (i, session) in sessions.iter().enumerate() {
        // Every session starts with the MTA's option negotiation.
        assert_eq!(
            session.get(4),
            Some(&b'O'),
            "session {i} starts with {session:?}"
        );
        let path = out.join(format!("postfix-session-{i}"));
        std::fs::write(&path, session).unwrap();
        println!("{}: {} bytes", path.display(), session.len());
    }
}
