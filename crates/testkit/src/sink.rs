//! `SmtpSink`: the next hop Postfix relays every message to. It accepts
//! everything and records each message's envelope and its DATA bytes
//! exactly as received (dot-unstuffed, CRLF kept), which is what a DKIM
//! verifier downstream of the signer would see.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One message as the sink received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The EHLO/HELO argument of the session that carried it.
    pub helo: String,
    /// Reverse path without the angle brackets (`""` for the null sender).
    pub mail_from: String,
    /// ESMTP parameters of MAIL FROM, e.g. `BODY=8BITMIME`.
    pub mail_params: Vec<String>,
    /// Forward paths without the angle brackets.
    pub rcpt_to: Vec<String>,
    /// The content between DATA and the final dot, dot-unstuffed.
    pub data: Vec<u8>,
}

impl ReceivedMessage {
    /// The header section, unfolded lines kept as they are.
    pub fn header_section(&self) -> &[u8] {
        let end = find(&self.data, b"\r\n\r\n").map_or(self.data.len(), |at| at + 2);
        &self.data[..end]
    }

    /// Values of every header field called `name` (case-insensitive), in
    /// order, with folding whitespace kept.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(self.header_section()).into_owned();
        let mut fields: Vec<String> = Vec::new();
        for line in text.split("\r\n").filter(|line| !line.is_empty()) {
            match fields.last_mut() {
                Some(field) if line.starts_with([' ', '\t']) => {
                    field.push_str("\r\n");
                    field.push_str(line);
                }
                _ => fields.push(line.to_string()),
            }
        }
        fields
            .into_iter()
            .filter_map(|field| {
                let (field_name, value) = field.split_once(':')?;
                field_name
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim_start().to_string())
            })
            .collect()
    }

    /// The message as text, for assertions and failure output.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// What the sink says about itself in its EHLO reply.
#[derive(Debug, Clone, Copy)]
pub struct SinkOptions {
    /// Advertise 8BITMIME. Without it Postfix must downgrade 8-bit mail to
    /// 7bit (quoted-printable) before relaying.
    pub eight_bit_mime: bool,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            eight_bit_mime: true,
        }
    }
}

/// An SMTP server on a loopback port that stores every message it gets.
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    messages: Mutex<Vec<ReceivedMessage>>,
    arrived: Condvar,
    connections: Mutex<Vec<TcpStream>>,
    stopping: AtomicBool,
}

impl SmtpSink {
    /// A sink that advertises 8BITMIME.
    pub fn start() -> SmtpSink {
        SmtpSink::with_options(SinkOptions::default())
    }

    /// A sink that does not advertise 8BITMIME.
    pub fn without_8bitmime() -> SmtpSink {
        SmtpSink::with_options(SinkOptions {
            eight_bit_mime: false,
        })
    }

    pub fn with_options(options: SinkOptions) -> SmtpSink {
        // A port from the harness's registry, not port 0: the OS would hand
        // out a port already given to a milter that has not bound it yet,
        // and Postfix would then talk milter to this sink.
        let listener = TcpListener::bind(super::free_local_addr()).expect("bind the SMTP sink");
        let addr = listener.local_addr().expect("sink address");
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("smtp-sink-{}", addr.port()))
                .spawn(move || accept_loop(listener, options, shared))
                .expect("spawn the sink's accept thread")
        };
        SmtpSink {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where Postfix should relay to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything received so far, in order of arrival.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.messages.lock().unwrap().clone()
    }

    /// Blocks until at least `count` messages have arrived and returns all
    /// of them; panics after `timeout` with what did arrive.
    pub fn wait_for_messages(&self, count: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        let deadline = Instant::now() + timeout;
        let mut messages = self.shared.messages.lock().unwrap();
        while messages.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "the sink got {} of {count} messages within {timeout:?}:\n{:#?}",
                    messages.len(),
                    *messages
                );
            }
            messages = self.shared.arrived.wait_timeout(messages, left).unwrap().0;
        }
        messages.clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept(), then end every open session.
        let _ = TcpStream::connect(self.addr);
        for stream in self.shared.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, options: SinkOptions, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        if let Ok(clone) = stream.try_clone() {
            shared.connections.lock().unwrap().push(clone);
        }
        let shared = Arc::clone(&shared);
        let _ = std::thread::Builder::new()
            .name("smtp-sink-session".into())
            .spawn(move || {
                // A session ends with QUIT, a dropped connection, or the sink's Drop.
                let _ = Session::new(stream, options, &shared).run();
            });
    }
}

/// One SMTP session of the sink.
struct Session<'a> {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    options: SinkOptions,
    shared: &'a Shared,
    helo: String,
    envelope: Option<(String, Vec<String>)>,
    recipients: Vec<String>,
}

impl<'a> Session<'a> {
    fn new(stream: TcpStream, options: SinkOptions, shared: &'a Shared) -> Self {
        let writer = stream.try_clone().expect("clone the sink connection");
        Session {
            reader: BufReader::new(stream),
            writer,
            options,
            shared,
            helo: String::new(),
            envelope: None,
            recipients: Vec::new(),
        }
    }

    fn run(mut self) -> std::io::Result<()> {
        self.reply("220 sink.test ESMTP harness sink")?;
        loop {
            let mut line = Vec::new();
            if self.reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            let (verb, argument) = line.split_once(' ').unwrap_or((&line, ""));
            match verb.to_ascii_uppercase().as_str() {
                "EHLO" => {
                    self.helo = argument.to_string();
                    self.reset();
                    let mut lines = vec!["250-sink.test"];
                    if self.options.eight_bit_mime {
                        lines.push("250-8BITMIME");
                    }
                    lines.push("250 ENHANCEDSTATUSCODES");
                    self.reply(&lines.join("\r\n"))?;
                }
                "HELO" => {
                    self.helo = argument.to_string();
                    self.reset();
                    self.reply("250 sink.test")?;
                }
                "MAIL" => {
                    let (path, params) = path_and_params(argument, "FROM:");
                    self.reset();
                    self.envelope = Some((path, params));
                    self.reply("250 2.1.0 Ok")?;
                }
                "RCPT" if self.envelope.is_some() => {
                    self.recipients.push(path_and_params(argument, "TO:").0);
                    self.reply("250 2.1.5 Ok")?;
                }
                "DATA" if !self.recipients.is_empty() => {
                    self.reply("354 End data with <CR><LF>.<CR><LF>")?;
                    let data = self.read_data()?;
                    self.store(data);
                    self.reply("250 2.0.0 Ok: queued")?;
                }
                "RSET" => {
                    self.reset();
                    self.reply("250 2.0.0 Ok")?;
                }
                "NOOP" => self.reply("250 2.0.0 Ok")?,
                "QUIT" => {
                    self.reply("221 2.0.0 Bye")?;
                    return Ok(());
                }
                "RCPT" | "DATA" => self.reply("503 5.5.1 Bad sequence of commands")?,
                _ => self.reply("502 5.5.2 Command not recognized")?,
            }
        }
    }

    fn read_data(&mut self) -> std::io::Result<Vec<u8>> {
        let mut data = Vec::new();
        loop {
            let mut line = Vec::new();
            if self.reader.read_until(b'\n', &mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line == b".\r\n" {
                return Ok(data);
            }
            let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
            data.extend_from_slice(unstuffed);
        }
    }

    fn store(&mut self, data: Vec<u8>) {
        let (mail_from, mail_params) = self.envelope.take().unwrap_or_default();
        let message = ReceivedMessage {
            helo: self.helo.clone(),
            mail_from,
            mail_params,
            rcpt_to: std::mem::take(&mut self.recipients),
            data,
        };
        self.shared.messages.lock().unwrap().push(message);
        self.shared.arrived.notify_all();
    }

    fn reset(&mut self) {
        self.envelope = None;
        self.recipients.clear();
    }

    fn reply(&mut self, text: &str) -> std::io::Result<()> {
        self.writer.write_all(format!("{text}\r\n").as_bytes())
    }
}

/// Splits `FROM:<a@b> BODY=8BITMIME` into `a@b` and `["BODY=8BITMIME"]`.
fn path_and_params(argument: &str, keyword: &str) -> (String, Vec<String>) {
    let rest = match argument.get(..keyword.len()) {
        Some(head) if head.eq_ignore_ascii_case(keyword) => &argument[keyword.len()..],
        _ => argument,
    }
    .trim_start();
    let (path, params) = match rest.find('>') {
        Some(end) if rest.starts_with('<') => (&rest[1..end], &rest[end + 1..]),
        _ => rest.split_once(' ').unwrap_or((rest, "")),
    };
    let params = params.split_whitespace().map(str::to_string).collect();
    (path.to_string(), params)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
