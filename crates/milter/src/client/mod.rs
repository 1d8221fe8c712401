//! The MTA's side of one milter connection, as Postfix drives it.
//!
//! [`MilterClient`] offers what Postfix offers for the chosen
//! `milter_protocol`, then honours what the milter asked for: events it
//! declined (`NO_*`, and the events the protocol version cannot carry) are
//! not sent, and the client does not wait for replies it was told will not
//! come (`NR_*`). Macros go out in a `D` packet before each event, as
//! Postfix sends them: its default lists, or the milter's own lists when it
//! asked for any. Every transaction ends with `A`, the connection with `Q`.
//! Frames that need no reply are written together with the next frame that
//! does, in one write.
//!
//! It is a stand-in for Postfix in tests and load runs, not a mail
//! transport: it never delivers, queues or retries anything, and never
//! applies what the milter asks for; it only checks that each reply is one
//! Postfix would accept and hands it to the caller.

mod message;

pub use message::Message;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{EncodeError, FrameError, ReplyDecoder};
use crate::options::{Actions, Event, Negotiated, ProtocolFlags};
use crate::server::SocketSpec;
use crate::server::socket::InetFamily;
use crate::{ClientAddress, Command, Reply, Stage};

/// A stream the client can talk over: TCP or a Unix socket.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Body chunks are at most this long, as Postfix sends them.
pub const BODY_CHUNK: usize = 65535;

/// Written out before the buffer grows past this, even without a reply to
/// wait for (a large body with `NR_BODY`).
const WRITE_HIGH_WATER: usize = 256 * 1024;

/// Every event flag Postfix knows (`SMFIP_NOSEND_MASK`).
const NO_SEND_MASK: u32 = 0x37f;

/// Why a connection failed. Each ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Reading from or writing to the milter failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The milter did not answer, or did not take our frames, within the
    /// client's timeout (this long).
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The milter closed the connection while a reply was awaited.
    #[error("the milter closed the connection")]
    Closed,
    /// A reply frame does not decode, or is malformed by Postfix's rules.
    #[error("bad reply from the milter: {0}")]
    Frame(#[from] FrameError),
    /// A command could not be framed (a NUL byte inside a string, an
    /// empty header name).
    #[error("could not encode a command: {0}")]
    Encode(#[from] EncodeError),
    /// The milter's `O` answer is one Postfix would refuse (no `O`, a
    /// version above the offer or below 2, actions beyond the offer), the
    /// version asked for is not one Postfix speaks, or a message was sent
    /// before negotiating; the text says which.
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    /// A reply that has no place after this event: skip (`s`) outside the
    /// body, a modification before end of message, `O` after negotiation.
    #[error("unexpected '{reply}' reply to '{event}'")]
    Unexpected {
        /// The reply byte, as a character.
        reply: char,
        /// The command byte of the event it answered, as a character.
        event: char,
    },
    /// At end of message, a modification (its reply byte) whose action
    /// was not negotiated; Postfix would fail the message for it.
    #[error("'{0}' modification without the matching negotiated action")]
    NotNegotiated(char),
}

/// How one transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// End of message answered continue or accept, after these
    /// modification requests.
    Delivered {
        /// The modification replies (`h`, `i`, `m`, `+`, ...) in the order
        /// received, each within the negotiated actions.
        modifications: Vec<Reply>,
    },
    /// Accepted before end of message (at `event`): nothing to change.
    AcceptedEarly {
        /// The command byte of the event answered accept (`'M'`, `'R'`,
        /// `'T'`, `'L'`, `'N'` or `'B'`).
        event: char,
    },
    /// Rejected, tempfailed or discarded at `event`.
    Refused {
        /// The command byte of the event refused (`'M'`, `'R'`, `'T'`,
        /// `'L'`, `'N'`, `'B'` or `'E'`).
        event: char,
        /// The milter's answer: reject, tempfail, discard, or an SMTP
        /// reply (`y`).
        reply: Reply,
    },
}

/// The values Postfix would have for its macros on one connection.
#[derive(Debug, Clone)]
pub struct MacroValues {
    /// `$myhostname`, the `j` macro.
    pub hostname: String,
    /// `{daemon_name}`; Postfix's default is `$myhostname`.
    pub daemon_name: String,
    /// The SMTP client's address: in CONNECT (port 54321), `{client_addr}`
    /// and `_`.
    pub client_ip: IpAddr,
    /// The SMTP client's host name: in CONNECT, `{client_name}`,
    /// `{client_ptr}` and `_`.
    pub client_name: String,
    /// `{auth_type}` (and `{auth_authen}`): the client authenticated.
    pub auth_type: Option<String>,
    /// Extra macros: sent at their stage in addition to the stage's list.
    pub extra: Vec<(Stage, String, String)>,
}

impl Default for MacroValues {
    /// A Postfix at `mail.example.com` with a client at 127.0.0.1 that
    /// did not authenticate.
    fn default() -> Self {
        MacroValues {
            hostname: "mail.example.com".into(),
            daemon_name: "mail.example.com".into(),
            client_ip: IpAddr::from([127, 0, 0, 1]),
            client_name: "localhost".into(),
            auth_type: None,
            extra: Vec::new(),
        }
    }
}

impl MacroValues {
    /// The value of `name` (with or without braces) at `stage`.
    fn value(&self, stage: Stage, name: &str, message: Option<&Transaction<'_>>) -> Option<String> {
        let bare = name
            .strip_prefix('{')
            .and_then(|n| n.strip_suffix('}'))
            .unwrap_or(name);
        if let Some((_, _, v)) = self
            .extra
            .iter()
            .find(|(s, n, _)| *s == stage && bare_name(n) == bare)
        {
            return Some(v.clone());
        }
        Some(match bare {
            "j" => self.hostname.clone(),
            "daemon_name" => self.daemon_name.clone(),
            "daemon_addr" => "127.0.0.1".into(),
            "v" => "Postfix 3.7.11".into(),
            "_" => format!("{} [{}]", self.client_name, self.client_ip),
            "client_addr" => self.client_ip.to_string(),
            "client_name" | "client_ptr" => self.client_name.clone(),
            "client_port" => "54321".into(),
            "auth_type" => self.auth_type.clone()?,
            "auth_authen" => self.auth_type.as_ref().map(|_| "bench".to_string())?,
            // Postfix assigns the queue id after MAIL.
            "i" if stage != Stage::Mail => message?.queue_id.to_string(),
            "mail_addr" => message?.message.sender.clone(),
            "rcpt_addr" => message?.message.recipient.clone(),
            "rcpt_host" => message?.message.recipient_domain().to_string(),
            "rcpt_mailer" => "smtp".into(),
            _ => return None,
        })
    }
}

fn bare_name(name: &str) -> &str {
    name.strip_prefix('{')
        .and_then(|n| n.strip_suffix('}'))
        .unwrap_or(name)
}

/// One message in flight.
struct Transaction<'a> {
    message: &'a Message,
    queue_id: &'a str,
}

/// What was agreed with the milter.
#[derive(Debug, Clone)]
pub struct Agreement {
    /// What the milter answered, with its protocol flags cut to those
    /// offered (Postfix ignores the others).
    pub negotiated: Negotiated,
    /// Flags of the events the offered version cannot carry (Postfix's
    /// `np_mask`): never sent.
    not_in_version: ProtocolFlags,
    /// The milter's macro lists, when it asked for any; they replace
    /// Postfix's defaults for every stage.
    macro_lists: Option<Vec<(Stage, Vec<String>)>>,
}

impl Agreement {
    /// Whether the MTA sends this event at all.
    pub fn sends(&self, event: Event) -> bool {
        let flag = event.no_send_flag();
        !self.negotiated.protocol.contains(flag) && !self.not_in_version.contains(flag)
    }

    /// Whether the MTA waits for a reply to this event.
    pub fn waits(&self, event: Event) -> bool {
        self.negotiated.expects_reply(event)
    }

    /// Header values go out with their leading space.
    pub fn leading_space(&self) -> bool {
        self.negotiated.header_leading_space()
    }

    fn macro_names(&self, stage: Stage) -> Vec<&str> {
        match &self.macro_lists {
            Some(lists) => lists
                .iter()
                .filter(|(s, _)| *s == stage)
                .flat_map(|(_, names)| names.iter().map(String::as_str))
                .collect(),
            None => crate::postfix::default_macros(stage).to_vec(),
        }
    }
}

/// Open a stream to a milter socket.
pub async fn open(target: &SocketSpec) -> std::io::Result<Box<dyn Io>> {
    match target {
        SocketSpec::Inet { family, host, port } => {
            let host = host.as_deref().unwrap_or(match family {
                InetFamily::Any => "127.0.0.1",
                InetFamily::V6 => "::1",
            });
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let stream = match host.parse::<IpAddr>() {
                Ok(ip) => tokio::net::TcpStream::connect(SocketAddr::new(ip, *port)).await?,
                Err(_) => tokio::net::TcpStream::connect((host, *port)).await?,
            };
            // The client must not add delays of its own to what it measures.
            stream.set_nodelay(true)?;
            Ok(Box::new(stream))
        }
        SocketSpec::Unix(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
    }
}

/// The MTA's end of one milter connection.
pub struct MilterClient {
    io: Box<dyn Io>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    decoder: ReplyDecoder,
    timeout: Duration,
    agreement: Option<Agreement>,
}

impl MilterClient {
    /// A client over `io` (see [`open`]) that waits at most `timeout` for
    /// each write and each reply. Call [`MilterClient::negotiate`] first.
    pub fn new(io: Box<dyn Io>, timeout: Duration) -> Self {
        MilterClient {
            io,
            read_buf: BytesMut::with_capacity(4096),
            write_buf: BytesMut::with_capacity(16 * 1024),
            decoder: ReplyDecoder::default(),
            timeout,
            agreement: None,
        }
    }

    /// What [`MilterClient::negotiate`] agreed; `None` before it
    /// succeeded.
    pub fn agreement(&self) -> Option<&Agreement> {
        self.agreement.as_ref()
    }

    /// Offer what Postfix offers for `milter_protocol = version` and check
    /// the answer as Postfix does.
    pub async fn negotiate(&mut self, version: u32) -> Result<&Agreement, ClientError> {
        let offer = crate::postfix::offer(version).ok_or_else(|| {
            ClientError::Negotiation(format!(
                "Postfix speaks milter protocol 2, 3, 4 or 6, not {version}"
            ))
        })?;
        Command::Negotiate(offer).encode(&mut self.write_buf)?;
        self.flush().await?;
        let Reply::Negotiate {
            version: agreed,
            actions,
            protocol,
            macros,
        } = self.read_reply().await?
        else {
            return Err(ClientError::Negotiation(
                "the milter did not answer the offer with 'O'".into(),
            ));
        };
        if agreed > offer.version || agreed < 2 {
            return Err(ClientError::Negotiation(format!(
                "the milter answered version {agreed} to an offer of {}",
                offer.version
            )));
        }
        if !offer.actions.contains(actions) {
            return Err(ClientError::Negotiation(format!(
                "the milter asked for actions 0x{:x} beyond the offer 0x{:x}",
                actions.bits(),
                offer.actions.bits()
            )));
        }
        let macro_lists = (!macros.is_empty()).then(|| {
            macros
                .into_iter()
                .map(|(stage, names)| {
                    (
                        stage,
                        names.split_ascii_whitespace().map(String::from).collect(),
                    )
                })
                .collect()
        });
        Ok(self.agreement.insert(Agreement {
            negotiated: Negotiated {
                version: agreed,
                actions,
                // Postfix ignores flags it did not offer.
                protocol: protocol & offer.protocol,
            },
            not_in_version: ProtocolFlags::from_bits_retain(NO_SEND_MASK & !offer.protocol.bits()),
            macro_lists,
        }))
    }

    /// CONNECT and HELO for one SMTP client. `Some(reply)` when the milter
    /// ended the session there (accept, reject, tempfail).
    pub async fn open_session(
        &mut self,
        values: &MacroValues,
        helo: &str,
    ) -> Result<Option<Reply>, ClientError> {
        let connect = Command::Connect {
            hostname: Bytes::from(values.client_name.clone()),
            address: ClientAddress::Ip(SocketAddr::new(values.client_ip, 54321)),
        };
        if let Some(reply) = self
            .event(Event::Connect, Stage::Connect, connect, values, None)
            .await?
        {
            return Ok(Some(reply));
        }
        let helo = Command::Helo {
            name: Bytes::from(helo.to_string()),
        };
        self.event(Event::Helo, Stage::Helo, helo, values, None)
            .await
    }

    /// One transaction: MAIL, RCPT, DATA, the headers, end of headers, the
    /// body, end of message; then `A`, as Postfix sends after each one.
    pub async fn send_message(
        &mut self,
        message: &Message,
        queue_id: &str,
        values: &MacroValues,
    ) -> Result<Outcome, ClientError> {
        let outcome = self.transaction(message, queue_id, values).await;
        Command::Abort.encode(&mut self.write_buf)?;
        outcome
    }

    async fn transaction(
        &mut self,
        message: &Message,
        queue_id: &str,
        values: &MacroValues,
    ) -> Result<Outcome, ClientError> {
        let agreement = self
            .agreement
            .clone()
            .ok_or_else(|| ClientError::Negotiation("message before negotiation".into()))?;
        let tx = Transaction { message, queue_id };
        let early = |event: char, reply: Reply| match reply {
            Reply::Accept => Outcome::AcceptedEarly { event },
            reply => Outcome::Refused { event, reply },
        };
        let mail = Command::Mail {
            sender: Bytes::from(format!("<{}>", message.sender)),
            args: vec![],
        };
        if let Some(r) = self
            .event(Event::Mail, Stage::Mail, mail, values, Some(&tx))
            .await?
        {
            return Ok(early('M', r));
        }
        let rcpt = Command::Rcpt {
            recipient: Bytes::from(format!("<{}>", message.recipient)),
            args: vec![],
        };
        if let Some(r) = self
            .event(Event::Rcpt, Stage::Rcpt, rcpt, values, Some(&tx))
            .await?
        {
            return Ok(early('R', r));
        }
        if let Some(r) = self
            .event(Event::Data, Stage::Data, Command::Data, values, Some(&tx))
            .await?
        {
            return Ok(early('T', r));
        }
        for (name, value) in &message.headers {
            // Without HDR_LEADSPC Postfix strips one leading space.
            let value = if agreement.leading_space() || !value.starts_with(b" ") {
                value.clone()
            } else {
                value.slice(1..)
            };
            let header = Command::Header {
                name: name.clone(),
                value,
            };
            if let Some(r) = self.plain_event(Event::Header, &header).await? {
                return Ok(early('L', r));
            }
        }
        if let Some(r) = self
            .event(
                Event::EndOfHeaders,
                Stage::EndOfHeaders,
                Command::EndOfHeaders,
                values,
                Some(&tx),
            )
            .await?
        {
            return Ok(early('N', r));
        }
        let mut offset = 0;
        while offset < message.body.len() {
            let end = (offset + BODY_CHUNK).min(message.body.len());
            let chunk = Command::Body(message.body.slice(offset..end));
            offset = end;
            match self.plain_event(Event::Body, &chunk).await? {
                None => {}
                Some(Reply::Skip) => break,
                Some(r) => return Ok(early('B', r)),
            }
        }
        self.macros(Stage::EndOfMessage, values, Some(&tx))?;
        Command::EndOfMessage(Bytes::new()).encode(&mut self.write_buf)?;
        self.flush().await?;
        let mut modifications = Vec::new();
        loop {
            let reply = self.read_reply().await?;
            match reply {
                Reply::Continue | Reply::Accept => return Ok(Outcome::Delivered { modifications }),
                Reply::Reject | Reply::Tempfail | Reply::Discard | Reply::ReplyCode(_) => {
                    return Ok(Outcome::Refused { event: 'E', reply });
                }
                Reply::Progress => {}
                Reply::Negotiate { .. } | Reply::Skip => {
                    return Err(ClientError::Unexpected {
                        reply: reply.code() as char,
                        event: 'E',
                    });
                }
                modification => {
                    let needs = modification_action(&modification);
                    if !agreement.negotiated.actions.contains(needs) {
                        return Err(ClientError::NotNegotiated(modification.code() as char));
                    }
                    modifications.push(modification);
                }
            }
        }
    }

    /// `Q`, then close.
    pub async fn quit(mut self) -> Result<(), ClientError> {
        Command::Quit.encode(&mut self.write_buf)?;
        self.flush().await?;
        let _ = self.io.shutdown().await;
        Ok(())
    }

    /// An event with its macros: skipped when the milter declined it.
    async fn event(
        &mut self,
        event: Event,
        stage: Stage,
        command: Command,
        values: &MacroValues,
        tx: Option<&Transaction<'_>>,
    ) -> Result<Option<Reply>, ClientError> {
        let sends = self.agreement.as_ref().is_some_and(|a| a.sends(event));
        if !sends {
            return Ok(None);
        }
        self.macros(stage, values, tx)?;
        self.plain_event(event, &command).await
    }

    /// Queue the `D` packet for `stage`.
    fn macros(
        &mut self,
        stage: Stage,
        values: &MacroValues,
        tx: Option<&Transaction<'_>>,
    ) -> Result<(), ClientError> {
        let Some(agreement) = &self.agreement else {
            return Ok(());
        };
        let mut pairs: Vec<(Bytes, Bytes)> = Vec::new();
        let mut add = |name: &str| {
            if pairs
                .iter()
                .any(|(n, _)| bare_name_bytes(n) == bare_name(name).as_bytes())
            {
                return;
            }
            if let Some(value) = values.value(stage, name, tx) {
                pairs.push((Bytes::from(name.to_string()), Bytes::from(value)));
            }
        };
        for name in agreement.macro_names(stage) {
            add(name);
        }
        for (s, name, _) in &values.extra {
            if *s == stage {
                add(name);
            }
        }
        Command::Macros { stage, pairs }.encode(&mut self.write_buf)?;
        Ok(())
    }

    /// Queue an event; when the milter answers it, send everything queued
    /// and wait for the answer. `Some(reply)` for anything but continue.
    async fn plain_event(
        &mut self,
        event: Event,
        command: &Command,
    ) -> Result<Option<Reply>, ClientError> {
        let Some(agreement) = &self.agreement else {
            return Ok(None);
        };
        if !agreement.sends(event) {
            return Ok(None);
        }
        let waits = agreement.waits(event);
        command.encode(&mut self.write_buf)?;
        if !waits {
            if self.write_buf.len() >= WRITE_HIGH_WATER {
                self.flush().await?;
            }
            return Ok(None);
        }
        self.flush().await?;
        loop {
            let reply = self.read_reply().await?;
            return match reply {
                Reply::Continue => Ok(None),
                Reply::Progress => continue,
                Reply::Accept
                | Reply::Reject
                | Reply::Tempfail
                | Reply::Discard
                | Reply::ReplyCode(_) => Ok(Some(reply)),
                Reply::Skip if event == Event::Body => Ok(Some(reply)),
                other => Err(ClientError::Unexpected {
                    reply: other.code() as char,
                    event: command.code(),
                }),
            };
        }
    }

    async fn flush(&mut self) -> Result<(), ClientError> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        tokio::time::timeout(self.timeout, self.io.write_all(&self.write_buf))
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))??;
        self.write_buf.clear();
        Ok(())
    }

    async fn read_reply(&mut self) -> Result<Reply, ClientError> {
        loop {
            if let Some(reply) = self.decoder.decode(&mut self.read_buf)? {
                return Ok(reply);
            }
            let read = tokio::time::timeout(self.timeout, self.io.read_buf(&mut self.read_buf))
                .await
                .map_err(|_| ClientError::Timeout(self.timeout))??;
            if read == 0 {
                return Err(ClientError::Closed);
            }
        }
    }
}

fn bare_name_bytes(name: &[u8]) -> &[u8] {
    name.strip_prefix(b"{")
        .and_then(|n| n.strip_suffix(b"}"))
        .unwrap_or(name)
}

/// The negotiated action a modification reply needs.
fn modification_action(reply: &Reply) -> Actions {
    match reply {
        Reply::AddHeader { .. } | Reply::InsertHeader { .. } => Actions::ADD_HEADERS,
        Reply::ChangeHeader { .. } => Actions::CHANGE_HEADERS,
        Reply::ReplaceBody(_) => Actions::CHANGE_BODY,
        Reply::AddRecipient(_) => Actions::ADD_RECIPIENT,
        Reply::AddRecipientWithArgs { .. } => Actions::ADD_RECIPIENT_WITH_ARGS,
        Reply::DeleteRecipient(_) => Actions::DELETE_RECIPIENT,
        Reply::ChangeSender { .. } => Actions::CHANGE_SENDER,
        Reply::Quarantine(_) => Actions::QUARANTINE,
        _ => Actions::empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FrameDecoder;
    use std::sync::{Arc, Mutex};

    /// A message from a@example.com to b@example.org with a
    /// `body_size`-byte body of 100-byte CRLF lines.
    fn test_message(body_size: usize) -> Message {
        let mut body = Vec::with_capacity(body_size);
        while body.len() < body_size {
            let line = (body_size - body.len()).min(100);
            body.extend(std::iter::repeat_n(b'x', line.saturating_sub(2)));
            body.extend_from_slice(&b"\r\n"[..line.min(2)]);
        }
        Message {
            sender: "a@example.com".into(),
            recipient: "b@example.org".into(),
            headers: vec![
                (
                    Bytes::from_static(b"From"),
                    Bytes::from_static(b" Load Test <a@example.com>"),
                ),
                (
                    Bytes::from_static(b"Subject"),
                    Bytes::from_static(b" folded\n\tsubject"),
                ),
            ],
            body: Bytes::from(body),
        }
    }

    /// A milter that answers the negotiation with `answer`, replies
    /// "continue" wherever the flags say the MTA waits, inserts one header
    /// at end of message, and records every command it receives.
    async fn fake_milter(
        mut io: tokio::io::DuplexStream,
        answer: Reply,
        log: Arc<Mutex<Vec<String>>>,
    ) {
        let Reply::Negotiate { protocol, .. } = &answer else {
            panic!("answer must be 'O'")
        };
        let protocol = *protocol;
        let waits = |flag: ProtocolFlags| !protocol.contains(flag);
        let mut buf = BytesMut::new();
        let decoder = FrameDecoder::default();
        loop {
            let command = loop {
                if let Some(c) = decoder.decode(&mut buf).unwrap() {
                    break c;
                }
                if io.read_buf(&mut buf).await.unwrap() == 0 {
                    return;
                }
            };
            let mut entry = command.code().to_string();
            if let Command::Macros { stage, pairs } = &command {
                entry.push(stage.command() as char);
                for (n, v) in pairs {
                    entry.push_str(&format!(
                        " {}={}",
                        String::from_utf8_lossy(n),
                        String::from_utf8_lossy(v)
                    ));
                }
            }
            if let Command::Header { value, .. } = &command {
                entry.push_str(&format!(" [{}]", String::from_utf8_lossy(value)));
            }
            log.lock().unwrap().push(entry);
            let mut out = BytesMut::new();
            let reply = match &command {
                Command::Negotiate(_) => Some(answer.clone()),
                Command::Connect { .. } if waits(ProtocolFlags::NR_CONNECT) => {
                    Some(Reply::Continue)
                }
                Command::Helo { .. } if waits(ProtocolFlags::NR_HELO) => Some(Reply::Continue),
                Command::Mail { .. } if waits(ProtocolFlags::NR_MAIL) => Some(Reply::Continue),
                Command::Rcpt { .. } if waits(ProtocolFlags::NR_RCPT) => Some(Reply::Continue),
                Command::Data if waits(ProtocolFlags::NR_DATA) => Some(Reply::Continue),
                Command::Header { .. } if waits(ProtocolFlags::NR_HEADER) => Some(Reply::Continue),
                Command::EndOfHeaders if waits(ProtocolFlags::NR_END_OF_HEADERS) => {
                    Some(Reply::Continue)
                }
                Command::Body(_) if waits(ProtocolFlags::NR_BODY) => Some(Reply::Continue),
                Command::EndOfMessage(_) => {
                    Reply::InsertHeader {
                        index: 0,
                        name: Bytes::from_static(b"DKIM-Signature"),
                        value: Bytes::from_static(b"v=1; fake"),
                    }
                    .encode(&mut out)
                    .unwrap();
                    Some(Reply::Continue)
                }
                Command::Quit => {
                    return;
                }
                _ => None,
            };
            if let Some(reply) = reply {
                reply.encode(&mut out).unwrap();
            }
            if !out.is_empty() {
                io.write_all(&out).await.unwrap();
            }
        }
    }

    fn values() -> MacroValues {
        MacroValues {
            hostname: "mail.example.com".into(),
            daemon_name: "ORIGINATING".into(),
            client_ip: IpAddr::from([192, 0, 2, 7]),
            client_name: "client.example".into(),
            auth_type: Some("PLAIN".into()),
            extra: vec![(Stage::Connect, "{my_macro}".into(), "yes".into())],
        }
    }

    async fn run_two_messages(answer: Reply, body: usize) -> (Vec<String>, Vec<Outcome>) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let log = Arc::new(Mutex::new(Vec::new()));
        let milter = tokio::spawn(fake_milter(theirs, answer.clone(), Arc::clone(&log)));
        let mut client = MilterClient::new(Box::new(ours), Duration::from_secs(5));
        let Reply::Negotiate { version, .. } = answer else {
            unreachable!()
        };
        client.negotiate(version).await.unwrap();
        assert_eq!(
            client
                .open_session(&values(), "client.example")
                .await
                .unwrap(),
            None
        );
        let message = test_message(body);
        let mut outcomes = Vec::new();
        for id in ["Q1", "Q2"] {
            outcomes.push(client.send_message(&message, id, &values()).await.unwrap());
        }
        client.quit().await.unwrap();
        milter.await.unwrap();
        let log = log.lock().unwrap().clone();
        (log, outcomes)
    }

    fn negotiate(
        version: u32,
        actions: Actions,
        protocol: u32,
        macros: Vec<(Stage, String)>,
    ) -> Reply {
        Reply::Negotiate {
            version,
            actions,
            protocol: ProtocolFlags::from_bits_retain(protocol),
            macros,
        }
    }

    #[tokio::test]
    async fn version_2_sends_every_event_and_waits_for_each_reply() {
        let (log, outcomes) =
            run_two_messages(negotiate(2, Actions::ADD_HEADERS, 0, vec![]), 70_000).await;
        let codes: String = log.iter().map(|e| e.chars().next().unwrap()).collect();
        // O, then D C, C, D H, H (D counts once per packet); per message D M, M, D R, R, 2 x L, D N, N,
        // two body chunks, D E, E, A; then Q. No T (version 2 has none).
        let message = "DMDRLLDNBBDEA";
        assert_eq!(codes, format!("ODCDH{message}{message}Q"));
        assert!(log.iter().any(|e| e.starts_with("DC")
            && e.contains("j=mail.example.com")
            && e.contains("{daemon_name}=ORIGINATING")
            && e.contains("{my_macro}=yes")));
        assert!(
            log.iter().any(|e| e.starts_with("DM")
                && e.contains("{auth_type}=PLAIN")
                && !e.contains(" i=")),
            "no queue id at MAIL: {log:?}"
        );
        assert!(
            log.iter()
                .any(|e| e.starts_with("DE") && e.contains("i=Q2"))
        );
        // Without HDR_LEADSPC the leading space is stripped, as Postfix does.
        assert!(
            log.iter().any(|e| e == "L [Load Test <a@example.com>]"),
            "{log:?}"
        );
        for outcome in outcomes {
            assert!(
                matches!(outcome, Outcome::Delivered { modifications } if modifications.len() == 1)
            );
        }
    }

    #[tokio::test]
    async fn version_6_skips_declined_events_and_does_not_wait_for_no_reply_events() {
        let declined = ProtocolFlags::NO_HELO
            | ProtocolFlags::NO_DATA
            | ProtocolFlags::NR_CONNECT
            | ProtocolFlags::NR_MAIL
            | ProtocolFlags::NR_RCPT
            | ProtocolFlags::NR_HEADER
            | ProtocolFlags::NR_BODY
            | ProtocolFlags::HEADER_LEADING_SPACE;
        let answer = negotiate(
            6,
            Actions::ADD_HEADERS | Actions::SET_MACRO_LIST,
            declined.bits(),
            vec![(Stage::Mail, "{auth_type} {client_addr}".into())],
        );
        let (log, outcomes) = run_two_messages(answer, 100).await;
        let codes: String = log.iter().map(|e| e.chars().next().unwrap()).collect();
        assert_eq!(codes, "ODCDMDRLLDNBDEADMDRLLDNBDEAQ");
        // The milter's lists replace Postfix's defaults at every stage;
        // connection macros are known at every stage.
        assert!(
            log.iter()
                .any(|e| e == "DM {auth_type}=PLAIN {client_addr}=192.0.2.7"),
            "{log:?}"
        );
        assert!(log.iter().any(|e| e == "DC {my_macro}=yes"), "{log:?}");
        assert!(
            log.iter().any(|e| e == "L [ Load Test <a@example.com>]"),
            "{log:?}"
        );
        assert_eq!(outcomes.len(), 2);
    }

    #[tokio::test]
    async fn refuses_an_answer_beyond_the_offer() {
        let (ours, theirs) = tokio::io::duplex(4096);
        let log = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(fake_milter(
            theirs,
            negotiate(6, Actions::ADD_HEADERS, 0, vec![]),
            log,
        ));
        let mut client = MilterClient::new(Box::new(ours), Duration::from_secs(5));
        let error = client.negotiate(2).await.unwrap_err();
        assert!(error.to_string().contains("version 6"), "{error}");
    }
}
