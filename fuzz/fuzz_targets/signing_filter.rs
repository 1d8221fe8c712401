//! `signing_filter`: the DKIM signing filter fed arbitrary milter events.
//!
//! Instead of raw bytes (that is `milter_session`), the input is a list of
//! structured events derived with `arbitrary`: connect (internal, external,
//! local and unknown clients), HELO, macros (SMTP AUTH among them), MAIL,
//! RCPT, DATA, header fields (the names the policy cares about, with
//! sender addresses in and out of the signing domain, or arbitrary bytes),
//! end of headers, body chunks, end of message, abort, unknown commands,
//! and the MTA reusing or closing the connection. They go through the
//! milter [`Session`] (negotiated as Postfix's protocol 2 or 6) into the
//! real [`SigningFilter`] with the example policy, so that every path from
//! "not ours" to "signed" is reached with hostile content.
//!
//! Invariants checked on every end of message:
//! - nothing panics;
//! - every DKIM-Signature we add parses, with the example d= and s=;
//! - when the message is plain enough that its wire form is unambiguous
//!   (token header names, printable header values and CRLF body lines, no
//!   DKIM-Signature of its own), the message as the MTA will write it,
//!   with our fields on top, verifies with mail-auth against the example
//!   public key.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::Arbitrary;
use bytes::Bytes;
use milter::options::{Actions, Offer, ProtocolFlags};
use milter::{ClientAddress, Command, Flow, Session, Stage};
use dkim_sidecar::signing::SigningFilter;
use dkim_sidecar_fuzz::{
    assert_signatures_parse, crlf_folding, live_policy, signature_fields, verify,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Postfix's milter_protocol.
    version6: bool,
    events: Vec<Event>,
}

#[derive(Arbitrary, Debug)]
enum Event {
    Connect {
        host: Text,
        client: Client,
    },
    Helo(Text),
    Macros {
        stage: MacroStage,
        pairs: Vec<(MacroName, Text)>,
    },
    Mail(Mailbox),
    Rcpt(Mailbox),
    Data,
    Header {
        name: Name,
        value: Value,
    },
    EndOfHeaders,
    Body(Body),
    EndOfMessage(Body),
    Abort,
    Unknown(Text),
    QuitNewConnection,
    Quit,
}

#[derive(Arbitrary, Debug)]
enum Client {
    Loopback4,
    Loopback6,
    Internal([u8; 3]),
    External([u8; 4]),
    External6([u8; 16]),
    Local(Text),
    Unknown(Text),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum MacroStage {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    Header,
    EndOfHeaders,
    Body,
    EndOfMessage,
}

#[derive(Arbitrary, Debug)]
enum MacroName {
    AuthAuthen,
    AuthType,
    AuthAuthor,
    DaemonName,
    QueueId,
    Hostname,
    Client,
    Other(Text),
}

/// Printable ASCII, or arbitrary bytes.
#[derive(Arbitrary, Debug)]
enum Text {
    Printable(Vec<u8>),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Mailbox {
    display: Option<Text>,
    local: Text,
    domain: Domain,
    angle: bool,
}

#[derive(Arbitrary, Debug)]
enum Domain {
    Example,
    ExampleUpper,
    Sub(Text),
    Other(Text),
    None,
}

#[derive(Arbitrary, Debug)]
enum Name {
    From,
    Sender,
    To,
    Subject,
    Date,
    MessageId,
    DkimSignature,
    Other(Text),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Mailboxes(Vec<Mailbox>),
    /// Lines joined by folding (`\n\t`).
    Folded(Vec<Text>),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Body {
    /// CRLF-terminated lines.
    Lines(Vec<Text>),
    Raw(Vec<u8>),
}

impl Text {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Text::Printable(b) => b.iter().map(|&c| c % 95 + 32).collect(),
            Text::Raw(b) => b.clone(),
        }
    }
}

impl Mailbox {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(display) = &self.display {
            out.extend(display.bytes());
            out.push(b' ');
        }
        if self.angle || self.display.is_some() {
            out.push(b'<');
        }
        out.extend(self.local.bytes());
        match &self.domain {
            Domain::Example => out.extend_from_slice(b"@example.com"),
            Domain::ExampleUpper => out.extend_from_slice(b"@EXAMPLE.Com"),
            Domain::Sub(t) => {
                out.push(b'@');
                out.extend(t.bytes());
                out.extend_from_slice(b".example.com");
            }
            Domain::Other(t) => {
                out.push(b'@');
                out.extend(t.bytes());
            }
            Domain::None => {}
        }
        if self.angle || self.display.is_some() {
            out.push(b'>');
        }
        out
    }
}

impl Name {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Name::From => b"From".to_vec(),
            Name::Sender => b"Sender".to_vec(),
            Name::To => b"To".to_vec(),
            Name::Subject => b"Subject".to_vec(),
            Name::Date => b"Date".to_vec(),
            Name::MessageId => b"Message-ID".to_vec(),
            Name::DkimSignature => b"DKIM-Signature".to_vec(),
            Name::Other(t) => t.bytes(),
        }
    }
}

impl Value {
    /// The value as Postfix passes it: after the colon, folded with LF.
    fn bytes(&self) -> Vec<u8> {
        match self {
            Value::Mailboxes(list) => {
                let mut out = vec![b' '];
                for (i, m) in list.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b",\n\t");
                    }
                    out.extend(m.bytes());
                }
                out
            }
            Value::Folded(lines) => {
                let mut out = vec![b' '];
                for (i, t) in lines.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b"\n\t");
                    }
                    out.extend(t.bytes());
                }
                out
            }
            Value::Raw(b) => b.clone(),
        }
    }
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Lines(lines) => {
                let mut out = Vec::new();
                for t in lines {
                    out.extend(t.bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out
            }
            Body::Raw(b) => b.clone(),
        }
    }
}

/// Header names that are one token; values of printable characters, folded
/// only before white space (a line feed not followed by white space would
/// start a new field on the wire, which Postfix never sends), and no
/// continuation line of white space only.
fn plain_header(name: &[u8], value: &[u8]) -> bool {
    !name.is_empty()
        && name.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        && !name.eq_ignore_ascii_case(b"DKIM-Signature")
        && value.split(|&c| c == b'\n').enumerate().all(|(i, line)| {
            line.iter()
                .all(|&c| (b' '..=b'~').contains(&c) || c == b'\t')
                && (i == 0
                    || (matches!(line.first(), Some(b' ' | b'\t'))
                        && line.iter().any(|&c| c != b' ' && c != b'\t')))
        })
}

fn plain_body(body: &[u8]) -> bool {
    body.is_empty()
        || (body.ends_with(b"\r\n")
            && body.split(|&c| c == b'\n').all(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                line.iter()
                    .all(|&c| (b' '..=b'~').contains(&c) || c == b'\t')
            }))
}

/// The message the MTA is sending, as far as we can tell.
#[derive(Default)]
struct Message {
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    plain: bool,
}

fuzz_target!(|input: Input| {
    let mut session = Session::new(SigningFilter::new(live_policy()));
    let offer = if input.version6 {
        Offer {
            version: 6,
            actions: Actions::from_bits_retain(0x1ff),
            protocol: ProtocolFlags::from_bits_retain(0x1f_ffff),
        }
    } else {
        Offer {
            version: 2,
            actions: Actions::from_bits_retain(0x3f),
            protocol: ProtocolFlags::from_bits_retain(0x7f),
        }
    };
    let mut out = Vec::new();
    if session.handle(Command::Negotiate(offer), &mut out).is_err() {
        panic!("the signing filter refuses Postfix's offer: {offer:?}");
    }
    let leading_space = session
        .negotiated()
        .is_some_and(|n| n.header_leading_space());
    let mut message = Message {
        plain: true,
        ..Message::default()
    };

    for event in input.events.iter().take(256) {
        let command = match event {
            Event::Connect { host, client } => Command::Connect {
                hostname: Bytes::from(host.bytes()),
                address: match client {
                    Client::Loopback4 => ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    Client::Loopback6 => ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                    Client::Internal([a, b, c]) => ip(IpAddr::V4(Ipv4Addr::new(10, *a, *b, *c))),
                    Client::External(o) => ip(IpAddr::V4(Ipv4Addr::from(*o))),
                    Client::External6(o) => ip(IpAddr::V6(Ipv6Addr::from(*o))),
                    Client::Local(t) => ClientAddress::Local(Bytes::from(t.bytes())),
                    Client::Unknown(t) => ClientAddress::Unknown(Bytes::from(t.bytes())),
                },
            },
            Event::Helo(t) => Command::Helo {
                name: Bytes::from(t.bytes()),
            },
            Event::Macros { stage, pairs } => Command::Macros {
                stage: match stage {
                    MacroStage::Connect => Stage::Connect,
                    MacroStage::Helo => Stage::Helo,
                    MacroStage::Mail => Stage::Mail,
                    MacroStage::Rcpt => Stage::Rcpt,
                    MacroStage::Data => Stage::Data,
                    MacroStage::Header => Stage::Header,
                    MacroStage::EndOfHeaders => Stage::EndOfHeaders,
                    MacroStage::Body => Stage::Body,
                    MacroStage::EndOfMessage => Stage::EndOfMessage,
                },
                pairs: pairs
                    .iter()
                    .take(16)
                    .map(|(name, value)| {
                        let name = match name {
                            MacroName::AuthAuthen => b"{auth_authen}".to_vec(),
                            MacroName::AuthType => b"{auth_type}".to_vec(),
                            MacroName::AuthAuthor => b"{auth_author}".to_vec(),
                            MacroName::DaemonName => b"{daemon_name}".to_vec(),
                            MacroName::QueueId => b"i".to_vec(),
                            MacroName::Hostname => b"j".to_vec(),
                            MacroName::Client => b"_".to_vec(),
                            MacroName::Other(t) => t.bytes(),
                        };
                        (Bytes::from(name), Bytes::from(value.bytes()))
                    })
                    .collect(),
            },
            Event::Mail(m) => {
                message = Message {
                    plain: true,
                    ..Message::default()
                };
                Command::Mail {
                    sender: Bytes::from(m.bytes()),
                    args: vec![],
                }
            }
            Event::Rcpt(m) => Command::Rcpt {
                recipient: Bytes::from(m.bytes()),
                args: vec![],
            },
            Event::Data => Command::Data,
            Event::Header { name, value } => {
                let (name, value) = (name.bytes(), value.bytes());
                message.plain &= plain_header(&name, &value);
                message.headers.push((name.clone(), value.clone()));
                Command::Header {
                    name: Bytes::from(name),
                    value: Bytes::from(value),
                }
            }
            Event::EndOfHeaders => Command::EndOfHeaders,
            Event::Body(b) => {
                let b = b.bytes();
                message.body.extend_from_slice(&b);
                Command::Body(Bytes::from(b))
            }
            Event::EndOfMessage(b) => {
                let b = b.bytes();
                message.body.extend_from_slice(&b);
                Command::EndOfMessage(Bytes::from(b))
            }
            Event::Abort => Command::Abort,
            Event::Unknown(t) => Command::Unknown {
                line: Bytes::from(t.bytes()),
            },
            Event::QuitNewConnection => Command::QuitNewConnection,
            Event::Quit => Command::Quit,
        };
        let is_eom = matches!(command, Command::EndOfMessage(_));
        // Where the session ends the transaction (a new client ends it too).
        let ends_message = matches!(
            command,
            Command::EndOfMessage(_)
                | Command::Abort
                | Command::Connect { .. }
                | Command::QuitNewConnection
                | Command::Quit
        );
        out.clear();
        let flow = session.handle(command, &mut out);
        if is_eom && flow.is_ok() {
            let fields = signature_fields(&out);
            assert_signatures_parse(&fields);
            if !fields.is_empty() && message.plain && plain_body(&message.body) {
                let wire = wire_form(&fields, &message, leading_space);
                if let Err(e) = verify(&wire, fields.len()) {
                    panic!(
                        "our signature does not verify: {e}\n{}",
                        String::from_utf8_lossy(&wire)
                    );
                }
                if show_verified() {
                    eprintln!("verified:\n{}", String::from_utf8_lossy(&wire));
                }
            }
        }
        if ends_message {
            message = Message {
                plain: true,
                ..Message::default()
            };
        }
        match flow {
            Ok(Flow::Continue) => {}
            Ok(Flow::Close) | Err(_) => break,
        }
    }
});

/// `FUZZ_SHOW_VERIFIED=1` prints every message that was signed and
/// verified, to see that the fuzzer gets that far.
fn show_verified() -> bool {
    static SHOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SHOW.get_or_init(|| std::env::var_os("FUZZ_SHOW_VERIFIED").is_some())
}

fn ip(ip: IpAddr) -> ClientAddress {
    ClientAddress::Ip(SocketAddr::new(ip, 25))
}

/// The message as Postfix writes it: our fields on top (each inserted at
/// the top, so the last one sent is first), then the headers as they came,
/// the empty line and the body.
fn wire_form(fields: &[(Bytes, Bytes)], message: &Message, leading_space: bool) -> Vec<u8> {
    let mut wire = Vec::new();
    for (name, value) in fields.iter().rev() {
        wire.extend_from_slice(name);
        wire.push(b':');
        wire.extend(crlf_folding(value));
        wire.extend_from_slice(b"\r\n");
    }
    for (name, value) in &message.headers {
        wire.extend_from_slice(name);
        wire.push(b':');
        if !leading_space {
            // Postfix removed one space that protocol 2 cannot carry.
            wire.push(b' ');
        }
        wire.extend(crlf_folding(value));
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(&message.body);
    wire
}
