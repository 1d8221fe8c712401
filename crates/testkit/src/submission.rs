//! `Submission`: a small SMTP client for handing mail to Postfix's smtpd.
//!
//! One `Submission` is one SMTP connection, so a test can run several
//! transactions on it (MAIL/RCPT/DATA, RSET, MAIL again), which is how
//! Postfix ends up reusing one milter connection for many messages. The
//! content is sent as raw bytes: the client only dot-stuffs it and makes
//! sure it ends with CRLF, so tests control every header byte.
//! Every command returns the server's [`Reply`]; nothing is retried.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::Engine;

/// How long to wait for any one reply. Longer than a milter's default
/// command timeout would hide nothing: Postfix answers within it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// A server reply: the code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: the client should try again later; nothing was lost.
    pub fn is_transient_failure(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// All lines joined, for messages and `contains` checks.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// Panics unless the reply is 2xx or 3xx.
    #[track_caller]
    pub fn expect_ok(self, what: &str) -> Reply {
        assert!(
            (200..400).contains(&self.code),
            "{what}: server answered {} {}",
            self.code,
            self.text()
        );
        self
    }
}

/// An SMTP client connection.
pub struct Submission {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The 220 greeting.
    pub greeting: Reply,
}

impl Submission {
    /// Connects and reads the greeting (it is not checked: a server that
    /// greets with 421 or 554 is something a test may want to see).
    pub fn connect(addr: SocketAddr) -> Submission {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let greeting = read_reply(&mut reader);
        Submission {
            reader,
            writer,
            greeting,
        }
    }

    /// Connects and says EHLO; panics if either fails.
    pub fn open(addr: SocketAddr) -> Submission {
        let mut submission = Submission::connect(addr);
        submission.greeting.clone().expect_ok("greeting");
        submission.ehlo("client.example.com").expect_ok("EHLO");
        submission
    }

    /// Sends one command line (CRLF is added) and reads the reply.
    pub fn command(&mut self, line: &str) -> Reply {
        self.send_bytes(format!("{line}\r\n").as_bytes());
        read_reply(&mut self.reader)
    }

    pub fn ehlo(&mut self, name: &str) -> Reply {
        self.command(&format!("EHLO {name}"))
    }

    /// AUTH PLAIN with the credentials in the initial response.
    pub fn auth_plain(&mut self, user: &str, password: &str) -> Reply {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.command(&format!("AUTH PLAIN {token}"))
    }

    pub fn mail_from(&mut self, sender: &str) -> Reply {
        self.command(&format!("MAIL FROM:<{sender}>"))
    }

    pub fn rcpt_to(&mut self, recipient: &str) -> Reply {
        self.command(&format!("RCPT TO:<{recipient}>"))
    }

    /// DATA, then the content (dot-stuffed, CRLF-terminated) and the final
    /// dot. Returns the reply to the final dot, or the reply to DATA when
    /// that was not 354.
    pub fn data(&mut self, content: &[u8]) -> Reply {
        let go_ahead = self.command("DATA");
        if go_ahead.code != 354 {
            return go_ahead;
        }
        self.send_bytes(&dot_stuffed(content));
        self.send_bytes(b".\r\n");
        read_reply(&mut self.reader)
    }

    /// Writes part of a DATA section as it is (no dot-stuffing, no reply
    /// read); for transactions a test interrupts. Finish with `end_data`.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.send_bytes(bytes);
    }

    /// Ends a DATA section begun with `write_raw` (whose last line ended
    /// with CRLF) with the final dot, and reads the reply.
    pub fn end_data(&mut self) -> Reply {
        self.send_bytes(b".\r\n");
        read_reply(&mut self.reader)
    }

    pub fn rset(&mut self) -> Reply {
        self.command("RSET")
    }

    /// One whole transaction. Returns the first reply that was not a
    /// success, or the reply to the final dot.
    pub fn send(&mut self, sender: &str, recipients: &[&str], content: &[u8]) -> Reply {
        let reply = self.mail_from(sender);
        if !reply.is_success() {
            return reply;
        }
        for recipient in recipients {
            let reply = self.rcpt_to(recipient);
            if !reply.is_success() {
                return reply;
            }
        }
        self.data(content)
    }

    /// QUIT and close.
    pub fn quit(mut self) -> Reply {
        self.command("QUIT")
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("SMTP write failed: {e}"));
    }
}

/// Doubles a leading dot on every line and ends the content with CRLF.
/// Line ends are not touched otherwise: bare LF goes out as it is, which is
/// what a test about line endings wants to send.
fn dot_stuffed(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 8);
    let mut at_line_start = true;
    for &byte in content {
        if at_line_start && byte == b'.' {
            out.push(b'.');
        }
        out.push(byte);
        at_line_start = byte == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(reader: &mut BufReader<TcpStream>) -> Reply {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let read = reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("SMTP read failed after {lines:?}: {e}"));
        assert!(read > 0, "server closed the connection after {lines:?}");
        let line = line.trim_end();
        let code = line
            .get(..3)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an SMTP reply: {line:?}"));
        lines.push(line.get(4..).unwrap_or("").to_string());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Reply { code, lines };
        }
    }
}
