//! Frames on the wire, and the commands and replies they carry.
//!
//! A frame is a big-endian `u32` length (counting the command byte), one
//! command byte, and the payload. [`FrameDecoder`] takes whole frames off a
//! read buffer and parses them into [`Command`]s without copying (every
//! string is a slice of the frame); [`Reply::encode`] appends one reply
//! frame to a write buffer. The MTA's side is here too, for clients and
//! tests: [`Command::encode`] frames a command as an MTA sends it and
//! [`ReplyDecoder`] parses the milter's replies. This module holds no state
//! beyond the size limit and never decides anything: what a command means
//! is the session's business.

use std::net::{IpAddr, SocketAddr};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nom::bytes::complete::{tag, take_until};
use nom::combinator::all_consuming;
use nom::multi::many0;
use nom::number::complete::{be_u16, be_u32, u8 as octet};
use nom::sequence::terminated;
use nom::{IResult, Parser};

use super::macros::Stage;
use super::options::{Actions, Offer, ProtocolFlags};

/// Default cap on an incoming payload. Postfix sends body chunks of at most
/// 64 KiB, but one header can be as large as `header_size_limit` (100 KiB by
/// default, configurable), so the cap must sit well above both.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// Largest payload we send; libmilter-based MTAs refuse bigger replies.
pub const MAX_REPLY_PAYLOAD: usize = 65535;

/// A command from the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `O`: the MTA's offer.
    Negotiate(Offer),
    /// `D`: macros for the event that follows; may define nothing.
    Macros {
        /// The event these macros precede: the packet's first byte is that
        /// event's command character.
        stage: Stage,
        /// Name and value pairs in the order sent. Names are as the MTA
        /// wrote them, with or without braces (`{auth_type}`, `i`); values
        /// may be empty. Each shares the frame's memory.
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// `C`: a client connected.
    Connect {
        /// The client's host name as the MTA found it. Postfix sends
        /// `[address]` when the address has no verified name, and
        /// `localhost` for mail from `sendmail(1)` (non_smtpd_milters).
        hostname: Bytes,
        /// Where the client connected from: family `4` or `6` with port
        /// and address, `L` with a socket path, or `U` with nothing.
        address: ClientAddress,
    },
    /// `H`: HELO or EHLO.
    Helo {
        /// The name the client gave, unchecked.
        name: Bytes,
    },
    /// `M`: MAIL FROM, with ESMTP arguments.
    Mail {
        /// The sender address as the MTA passes it: in angle brackets from
        /// Postfix's smtpd (`<a@example.org>`, `<>` for the null sender),
        /// bare from non_smtpd_milters (empty for the null sender).
        sender: Bytes,
        /// ESMTP parameters after the address, one per string
        /// (`BODY=8BITMIME`, `SIZE=1234`); empty when there are none.
        args: Vec<Bytes>,
    },
    /// `R`: RCPT TO, with ESMTP arguments.
    Rcpt {
        /// The recipient address, in the same form as the sender of
        /// [`Command::Mail`].
        recipient: Bytes,
        /// ESMTP parameters after the address (`NOTIFY=NEVER`), one per
        /// string; empty when there are none.
        args: Vec<Bytes>,
    },
    /// `T`: DATA (version 4 and later).
    Data,
    /// `U`: an SMTP command the MTA does not know (version 3 and later).
    Unknown {
        /// The command line as the client sent it.
        line: Bytes,
    },
    /// `L`: one header. The value may be empty; folded values use bare LF.
    Header {
        /// The field name, without the colon; never empty.
        name: Bytes,
        /// The field body as the MTA sends it: after the colon, without
        /// its first space unless `SMFIP_HDR_LEADSPC` was negotiated,
        /// continuation lines joined with bare LF (`"a\n\tb"`).
        value: Bytes,
    },
    /// `N`: end of headers.
    EndOfHeaders,
    /// `B`: a piece of the body, split anywhere.
    Body(Bytes),
    /// `E`: end of message; a payload is a last body piece.
    EndOfMessage(Bytes),
    /// `A`: forget the current message, keep the connection.
    Abort,
    /// `Q`: the MTA is done with this connection.
    Quit,
    /// `K`: the MTA will reuse this connection for a new SMTP client.
    QuitNewConnection,
}

impl Command {
    /// The command byte, for logs.
    pub fn code(&self) -> char {
        match self {
            Command::Negotiate(_) => 'O',
            Command::Macros { .. } => 'D',
            Command::Connect { .. } => 'C',
            Command::Helo { .. } => 'H',
            Command::Mail { .. } => 'M',
            Command::Rcpt { .. } => 'R',
            Command::Data => 'T',
            Command::Unknown { .. } => 'U',
            Command::Header { .. } => 'L',
            Command::EndOfHeaders => 'N',
            Command::Body(_) => 'B',
            Command::EndOfMessage(_) => 'E',
            Command::Abort => 'A',
            Command::Quit => 'Q',
            Command::QuitNewConnection => 'K',
        }
    }

    /// Append this command as one frame to `dst`, as an MTA sends it. On
    /// error `dst` is left as it was.
    ///
    /// Addresses go out bare, as Postfix sends them (`2001:db8::1`, not
    /// `IPv6:2001:db8::1`); [`ClientAddress::Unknown`] goes out as family
    /// `U`, which carries no address. Strings must not hold NUL bytes.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let start = dst.len();
        dst.put_u32(0);
        dst.put_u8(self.code() as u8);
        if let Err(e) = self.encode_payload(dst) {
            dst.truncate(start);
            return Err(e);
        }
        let payload = dst.len() - start - 5;
        let Ok(length) = u32::try_from(payload + 1) else {
            dst.truncate(start);
            return Err(EncodeError::FrameTooLong(payload));
        };
        dst[start..start + 4].copy_from_slice(&length.to_be_bytes());
        Ok(())
    }

    fn encode_payload(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Command::Negotiate(offer) => {
                dst.put_u32(offer.version);
                dst.put_u32(offer.actions.bits());
                dst.put_u32(offer.protocol.bits());
            }
            Command::Macros { stage, pairs } => {
                dst.put_u8(stage.command());
                for (name, value) in pairs {
                    put_cstring(dst, name, "macro name")?;
                    put_cstring(dst, value, "macro value")?;
                }
            }
            Command::Connect { hostname, address } => {
                put_cstring(dst, hostname, "host name")?;
                match address {
                    ClientAddress::Ip(addr) => {
                        dst.put_u8(if addr.is_ipv4() { b'4' } else { b'6' });
                        dst.put_u16(addr.port());
                        let mut text = [0u8; 64];
                        let text = format_ip(addr.ip(), &mut text);
                        put_cstring(dst, text, "address")?;
                    }
                    ClientAddress::Local(path) => {
                        dst.put_u8(b'L');
                        dst.put_u16(0);
                        put_cstring(dst, path, "socket path")?;
                    }
                    ClientAddress::Unknown(_) => dst.put_u8(b'U'),
                }
            }
            Command::Helo { name } => put_cstring(dst, name, "HELO name")?,
            Command::Mail { sender, args } => {
                put_cstring(dst, sender, "sender")?;
                for arg in args {
                    put_cstring(dst, arg, "ESMTP argument")?;
                }
            }
            Command::Rcpt { recipient, args } => {
                put_cstring(dst, recipient, "recipient")?;
                for arg in args {
                    put_cstring(dst, arg, "ESMTP argument")?;
                }
            }
            Command::Unknown { line } => put_cstring(dst, line, "command line")?,
            Command::Header { name, value } => {
                if name.is_empty() {
                    return Err(EncodeError::EmptyHeaderName);
                }
                put_cstring(dst, name, "header name")?;
                put_cstring(dst, value, "header value")?;
            }
            Command::Body(chunk) | Command::EndOfMessage(chunk) => dst.put_slice(chunk),
            Command::Data
            | Command::EndOfHeaders
            | Command::Abort
            | Command::Quit
            | Command::QuitNewConnection => {}
        }
        Ok(())
    }
}

/// An IP address as text, without allocating.
fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    use std::io::Write as _;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // 64 bytes hold the longest IPv6 text (45 bytes).
    let _ = write!(cursor, "{ip}");
    let len = cursor.position() as usize;
    &buf[..len]
}

/// Where the SMTP client connected from, as the MTA reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAddress {
    /// An IPv4 or IPv6 client.
    Ip(SocketAddr),
    /// A client on a local socket (family `L`).
    Local(Bytes),
    /// Family `U`, or an address that did not parse (kept for logs).
    Unknown(Bytes),
}

impl ClientAddress {
    /// The client's IP address for [`ClientAddress::Ip`]; `None` for a
    /// local or unknown client.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            ClientAddress::Ip(addr) => Some(addr.ip()),
            ClientAddress::Local(_) | ClientAddress::Unknown(_) => None,
        }
    }
}

/// Why a frame could not be read. Each of these ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is 0. The length counts the command byte, so the
    /// smallest frame has length 1.
    #[error("frame length 0 (a frame holds at least its command byte)")]
    ZeroLength,
    /// The length prefix announces a payload over the decoder's limit.
    /// Reported as soon as the four length bytes are in, before any of the
    /// payload is buffered.
    #[error("frame payload of {length} bytes exceeds the limit of {limit} bytes")]
    TooLong {
        /// Payload bytes announced: the length prefix minus the command
        /// byte.
        length: u64,
        /// The decoder's limit on a payload, in bytes.
        limit: usize,
    },
    /// The command byte is not one an MTA sends (`O D C H M R T U L N B E
    /// A Q K`).
    #[error("unknown command byte 0x{0:02x}")]
    UnknownCommand(u8),
    /// The payload does not fit its command: a missing NUL terminator, a
    /// field missing or left over, an unknown macro stage or address
    /// family, an empty header name, a payload on a command that has none.
    #[error("malformed '{command}' command: {problem}")]
    Malformed {
        /// The command byte, as a character.
        command: char,
        /// What is wrong with the payload, for logs.
        problem: &'static str,
    },
    /// The reply byte is not one a milter sends ([`ReplyDecoder`] only).
    #[error("unknown reply byte 0x{0:02x}")]
    UnknownReply(u8),
    /// The payload does not fit its reply, checked as strictly as Postfix
    /// checks it ([`ReplyDecoder`] only).
    #[error("malformed '{reply}' reply: {problem}")]
    MalformedReply {
        /// The reply byte, as a character.
        reply: char,
        /// What is wrong with the payload, for logs.
        problem: &'static str,
    },
}

/// Takes whole frames off the front of a read buffer.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_payload: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl FrameDecoder {
    /// A decoder that refuses frames whose payload (the bytes after the
    /// command byte) is longer than `max_payload` bytes; see
    /// [`DEFAULT_MAX_PAYLOAD`] for a sensible value.
    pub fn new(max_payload: usize) -> Self {
        FrameDecoder { max_payload }
    }

    /// Parse the first frame in `buf` if all of it has arrived, removing it
    /// from the buffer. `Ok(None)` means "read more". A bad length is
    /// reported as soon as the four length bytes are in, before any of the
    /// payload is buffered.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Command>, FrameError> {
        match split_frame(buf, self.max_payload)? {
            Some((code, payload)) => parse_command(code, payload).map(Some),
            None => Ok(None),
        }
    }
}

/// Take the first whole frame off `buf`: its code byte and its payload,
/// which shares the buffer's memory. `Ok(None)` until all of it is in.
fn split_frame(buf: &mut BytesMut, max_payload: usize) -> Result<Option<(u8, Bytes)>, FrameError> {
    let Some(length) = buf.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    if length == 0 {
        return Err(FrameError::ZeroLength);
    }
    if length - 1 > max_payload {
        return Err(FrameError::TooLong {
            length: length as u64 - 1,
            limit: max_payload,
        });
    }
    if buf.len() < 4 + length {
        buf.reserve(4 + length - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut frame = buf.split_to(length).freeze();
    let code = frame.get_u8();
    Ok(Some((code, frame)))
}

type Input<'a> = &'a [u8];

fn cstring(input: Input<'_>) -> IResult<Input<'_>, Input<'_>> {
    terminated(take_until(&b"\0"[..]), tag(&b"\0"[..])).parse(input)
}

fn malformed(command: u8, problem: &'static str) -> FrameError {
    FrameError::Malformed {
        command: command as char,
        problem,
    }
}

/// Parse a command's payload; every string in the result shares `payload`.
fn parse_command(code: u8, payload: Bytes) -> Result<Command, FrameError> {
    let p = &payload[..];
    let share = |s: &[u8]| payload.slice_ref(s);
    let expect_empty = |command: Command| {
        if p.is_empty() {
            Ok(command)
        } else {
            Err(malformed(code, "unexpected payload"))
        }
    };
    match code {
        b'O' => {
            let (_, (version, actions, protocol)) = all_consuming((be_u32, be_u32, be_u32))
                .parse(p)
                .map_err(|_: nom::Err<nom::error::Error<_>>| {
                    malformed(code, "expected exactly version, actions and protocol flags")
                })?;
            Ok(Command::Negotiate(Offer {
                version,
                actions: Actions::from_bits_retain(actions),
                protocol: ProtocolFlags::from_bits_retain(protocol),
            }))
        }
        b'D' => {
            let (_, (stage, strings)) = all_consuming((octet, many0(cstring))).parse(p).map_err(
                |_: nom::Err<nom::error::Error<_>>| {
                    malformed(code, "expected a stage byte and NUL-terminated strings")
                },
            )?;
            let stage =
                Stage::from_command(stage).ok_or_else(|| malformed(code, "unknown macro stage"))?;
            if strings.len() % 2 != 0 {
                return Err(malformed(code, "a macro name without a value"));
            }
            let pairs = strings
                .chunks_exact(2)
                .map(|pair| (share(pair[0]), share(pair[1])))
                .collect();
            Ok(Command::Macros { stage, pairs })
        }
        b'C' => parse_connect(p)
            .map(|(hostname, address)| Command::Connect {
                hostname: share(hostname),
                address: match address {
                    RawAddress::Ip(addr) => ClientAddress::Ip(addr),
                    RawAddress::Local(path) => ClientAddress::Local(share(path)),
                    RawAddress::Unknown(text) => ClientAddress::Unknown(share(text)),
                },
            })
            .ok_or_else(|| malformed(code, "expected host, family, port and address")),
        b'H' => single_string(p)
            .map(|name| Command::Helo { name: share(name) })
            .ok_or_else(|| malformed(code, "expected one NUL-terminated name")),
        b'M' | b'R' => {
            let (_, strings) = all_consuming(many0(cstring)).parse(p).map_err(
                |_: nom::Err<nom::error::Error<_>>| {
                    malformed(code, "expected NUL-terminated address and arguments")
                },
            )?;
            let (address, args) = strings
                .split_first()
                .ok_or_else(|| malformed(code, "missing address"))?;
            let address = share(address);
            let args = args.iter().map(|a| share(a)).collect();
            Ok(if code == b'M' {
                Command::Mail {
                    sender: address,
                    args,
                }
            } else {
                Command::Rcpt {
                    recipient: address,
                    args,
                }
            })
        }
        b'T' => expect_empty(Command::Data),
        b'U' => single_string(p)
            .map(|line| Command::Unknown { line: share(line) })
            .ok_or_else(|| malformed(code, "expected one NUL-terminated command line")),
        b'L' => {
            let (_, (name, value)) = all_consuming((cstring, cstring)).parse(p).map_err(
                |_: nom::Err<nom::error::Error<_>>| {
                    malformed(code, "expected NUL-terminated name and value")
                },
            )?;
            if name.is_empty() {
                return Err(malformed(code, "empty header name"));
            }
            Ok(Command::Header {
                name: share(name),
                value: share(value),
            })
        }
        b'N' => expect_empty(Command::EndOfHeaders),
        b'B' => Ok(Command::Body(payload)),
        b'E' => Ok(Command::EndOfMessage(payload)),
        b'A' => expect_empty(Command::Abort),
        b'Q' => expect_empty(Command::Quit),
        b'K' => expect_empty(Command::QuitNewConnection),
        other => Err(FrameError::UnknownCommand(other)),
    }
}

fn single_string(p: &[u8]) -> Option<&[u8]> {
    all_consuming(cstring)
        .parse(p)
        .ok()
        .map(|(_, s): (_, &[u8])| s)
}

enum RawAddress<'a> {
    Ip(SocketAddr),
    Local(&'a [u8]),
    Unknown(&'a [u8]),
}

fn parse_connect(p: &[u8]) -> Option<(&[u8], RawAddress<'_>)> {
    let (after_family, (hostname, family)) = (cstring, octet)
        .parse(p)
        .ok()
        .map(|x: (&[u8], (&[u8], u8))| x)?;
    if family == b'U' {
        // Sendmail and Postfix send nothing after an unknown family.
        return after_family
            .is_empty()
            .then_some((hostname, RawAddress::Unknown(&[][..])));
    }
    let (_, (port, address)) = all_consuming((be_u16, cstring))
        .parse(after_family)
        .ok()
        .map(|x: (&[u8], (u16, &[u8]))| x)?;
    let address = match family {
        b'4' | b'6' => parse_ip(address)
            .map(|ip| RawAddress::Ip(SocketAddr::new(ip, port)))
            .unwrap_or(RawAddress::Unknown(address)),
        b'L' => RawAddress::Local(address),
        _ => return None,
    };
    Some((hostname, address))
}

/// Postfix sends bare addresses; Sendmail prefixes IPv6 ones with `IPv6:`.
fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?;
    let text = text
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("ipv6:"))
        .map_or(text, |_| &text[5..]);
    text.parse().ok()
}

/// An SMTP reply for the MTA to send instead of its own (`y`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    /// 4xx or 5xx.
    pub code: u16,
    /// Enhanced status code such as `4.7.1`.
    pub status: Option<String>,
    /// One line of text.
    pub text: String,
}

/// A reply to the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `O`: our side of the negotiation, with optional macro lists.
    Negotiate {
        /// The protocol version the milter runs with; never higher than
        /// the MTA offered.
        version: u32,
        /// The modifications (`SMFIF_*`) the milter may request at end of
        /// message, plus `SMFIF_SETSYMLIST` when it sends macro lists; a
        /// subset of the offer.
        actions: Actions,
        /// The protocol flags (`SMFIP_*`) the milter asks for: events not
        /// to send, events not to wait for a reply to; a subset of the
        /// offer.
        protocol: ProtocolFlags,
        /// Macro lists to request, which needs `SMFIF_SETSYMLIST`: per
        /// stage, the names separated by spaces (`"{auth_type} i"`). A
        /// stage without a [`Stage::request_index`] is left out when
        /// encoding.
        macros: Vec<(Stage, String)>,
    },
    /// `c`: go on; the MTA sends the next event.
    Continue,
    /// `a`: accept without further filtering: the message, or at CONNECT
    /// and HELO every message of this SMTP client.
    Accept,
    /// `r`: reject with the MTA's default 5xx reply.
    Reject,
    /// `t`: fail temporarily with the MTA's default 4xx reply.
    Tempfail,
    /// `d`: accept the message, then silently drop it.
    Discard,
    /// `p`: still working, restart the MTA's timer.
    Progress,
    /// `s`: skip the rest of this event type (body chunks).
    Skip,
    /// `y`: a complete SMTP reply.
    ReplyCode(SmtpReply),
    /// `h`: append a header.
    AddHeader {
        /// The field name, without the colon.
        name: Bytes,
        /// The field body, sent verbatim: with `SMFIP_HDR_LEADSPC` it is
        /// everything after the colon (leading space included), otherwise
        /// the MTA puts a space before it. Folded with bare LF, never CRLF.
        value: Bytes,
    },
    /// `i`: insert a header at a 0-based index.
    InsertHeader {
        /// Position among the headers as delivered, from 0. Postfix counts
        /// its own Received: header, which milters never see: 0 puts the
        /// new field above it, 1 right below it.
        index: u32,
        /// The field name, without the colon.
        name: Bytes,
        /// The field body, as for [`Reply::AddHeader`].
        value: Bytes,
    },
    /// `m`: change (or, with an empty value, delete) the index-th instance
    /// (1-based) of a header.
    ChangeHeader {
        /// Which field of that name to change, counting from 1 among the
        /// fields of that name only.
        index: u32,
        /// The name of the field to change.
        name: Bytes,
        /// The new field body, as for [`Reply::AddHeader`]; empty deletes
        /// the field.
        value: Bytes,
    },
    /// `b`: one chunk of a replacement body.
    ReplaceBody(Bytes),
    /// `+`: add a recipient.
    AddRecipient(Bytes),
    /// `2`: add a recipient with ESMTP arguments.
    AddRecipientWithArgs {
        /// The recipient address to add.
        recipient: Bytes,
        /// Its ESMTP parameters as one string (`NOTIFY=NEVER`); empty for
        /// none. Needs `SMFIF_ADDRCPT_PAR`.
        args: Bytes,
    },
    /// `-`: delete a recipient.
    DeleteRecipient(Bytes),
    /// `e`: change the envelope sender.
    ChangeSender {
        /// The new sender address.
        sender: Bytes,
        /// ESMTP parameters for MAIL FROM as one string; `None` sends the
        /// address alone.
        args: Option<Bytes>,
    },
    /// `q`: put the message on hold, with a reason.
    Quarantine(Bytes),
}

/// Why a reply or a command could not be framed. The buffer it was to be
/// appended to is left as it was, so nothing half-written reaches the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A reply's payload of this many bytes is over
    /// [`MAX_REPLY_PAYLOAD`]; MTAs refuse bigger replies. A long
    /// replacement body goes out as several [`Reply::ReplaceBody`] chunks.
    #[error("reply payload of {0} bytes exceeds {MAX_REPLY_PAYLOAD}")]
    TooLong(usize),
    /// A string (named here: `"header value"`, `"recipient"`, ...) holds a
    /// NUL byte, which would end it early on the wire.
    #[error("NUL byte inside the {0} of a reply")]
    EmbeddedNul(&'static str),
    /// An [`SmtpReply`] code outside 400 to 599: a `y` reply only replaces
    /// a failure.
    #[error("SMTP reply code {0} is not 4xx or 5xx")]
    BadReplyCode(u16),
    /// An [`SmtpReply`] whose status or text holds CR or LF; only
    /// one-line replies are supported.
    #[error("line break inside an SMTP reply")]
    MultiLineReply,
    /// A command's payload of this many bytes does not fit the 32-bit
    /// length prefix.
    #[error("command payload of {0} bytes does not fit a frame")]
    FrameTooLong(usize),
    /// A header command with an empty name, which no MTA sends and
    /// [`FrameDecoder`] refuses.
    #[error("empty header name")]
    EmptyHeaderName,
}

impl Reply {
    /// The command byte of this reply.
    pub fn code(&self) -> u8 {
        match self {
            Reply::Negotiate { .. } => b'O',
            Reply::Continue => b'c',
            Reply::Accept => b'a',
            Reply::Reject => b'r',
            Reply::Tempfail => b't',
            Reply::Discard => b'd',
            Reply::Progress => b'p',
            Reply::Skip => b's',
            Reply::ReplyCode(_) => b'y',
            Reply::AddHeader { .. } => b'h',
            Reply::InsertHeader { .. } => b'i',
            Reply::ChangeHeader { .. } => b'm',
            Reply::ReplaceBody(_) => b'b',
            Reply::AddRecipient(_) => b'+',
            Reply::AddRecipientWithArgs { .. } => b'2',
            Reply::DeleteRecipient(_) => b'-',
            Reply::ChangeSender { .. } => b'e',
            Reply::Quarantine(_) => b'q',
        }
    }

    /// Append this reply as one frame to `dst`. On error `dst` is left as
    /// it was.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let start = dst.len();
        dst.put_u32(0);
        dst.put_u8(self.code());
        if let Err(e) = self.encode_payload(dst) {
            dst.truncate(start);
            return Err(e);
        }
        let payload = dst.len() - start - 5;
        if payload > MAX_REPLY_PAYLOAD {
            dst.truncate(start);
            return Err(EncodeError::TooLong(payload));
        }
        let length = (payload + 1) as u32;
        dst[start..start + 4].copy_from_slice(&length.to_be_bytes());
        Ok(())
    }

    fn encode_payload(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Reply::Negotiate {
                version,
                actions,
                protocol,
                macros,
            } => {
                dst.put_u32(*version);
                dst.put_u32(actions.bits());
                dst.put_u32(protocol.bits());
                for (stage, names) in macros {
                    if let Some(index) = stage.request_index() {
                        dst.put_u32(index);
                        put_cstring(dst, names.as_bytes(), "macro list")?;
                    }
                }
            }
            Reply::Continue
            | Reply::Accept
            | Reply::Reject
            | Reply::Tempfail
            | Reply::Discard
            | Reply::Progress
            | Reply::Skip => {}
            Reply::ReplyCode(reply) => {
                if !(400..600).contains(&reply.code) {
                    return Err(EncodeError::BadReplyCode(reply.code));
                }
                let mut line = reply.code.to_string();
                if let Some(status) = &reply.status {
                    line.push(' ');
                    line.push_str(status);
                }
                if !reply.text.is_empty() {
                    line.push(' ');
                    // The MTA uses the text as a format string.
                    line.push_str(&reply.text.replace('%', "%%"));
                }
                if line.contains(['\r', '\n']) {
                    return Err(EncodeError::MultiLineReply);
                }
                put_cstring(dst, line.as_bytes(), "SMTP reply")?;
            }
            Reply::AddHeader { name, value } => {
                put_cstring(dst, name, "header name")?;
                put_cstring(dst, value, "header value")?;
            }
            Reply::InsertHeader { index, name, value }
            | Reply::ChangeHeader { index, name, value } => {
                dst.put_u32(*index);
                put_cstring(dst, name, "header name")?;
                put_cstring(dst, value, "header value")?;
            }
            Reply::ReplaceBody(chunk) => dst.put_slice(chunk),
            Reply::AddRecipient(rcpt) | Reply::DeleteRecipient(rcpt) => {
                put_cstring(dst, rcpt, "recipient")?;
            }
            Reply::AddRecipientWithArgs { recipient, args } => {
                put_cstring(dst, recipient, "recipient")?;
                put_cstring(dst, args, "recipient arguments")?;
            }
            Reply::ChangeSender { sender, args } => {
                put_cstring(dst, sender, "sender")?;
                if let Some(args) = args {
                    put_cstring(dst, args, "sender arguments")?;
                }
            }
            Reply::Quarantine(reason) => put_cstring(dst, reason, "quarantine reason")?,
        }
        Ok(())
    }
}

fn put_cstring(dst: &mut BytesMut, s: &[u8], what: &'static str) -> Result<(), EncodeError> {
    if s.contains(&0) {
        return Err(EncodeError::EmbeddedNul(what));
    }
    dst.put_slice(s);
    dst.put_u8(0);
    Ok(())
}

/// Takes whole reply frames off the front of a read buffer: the MTA's side
/// of [`Reply::encode`], for milter clients and tests.
///
/// Replies are checked as strictly as Postfix checks them: a payload on a
/// reply that has none, a missing NUL terminator or an unknown reply byte
/// is an error, since an MTA would give up on the milter for it.
#[derive(Debug, Clone, Copy)]
pub struct ReplyDecoder {
    max_payload: usize,
}

impl Default for ReplyDecoder {
    fn default() -> Self {
        ReplyDecoder::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl ReplyDecoder {
    /// A decoder that refuses reply frames whose payload is longer than
    /// `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        ReplyDecoder { max_payload }
    }

    /// Parse the first reply in `buf` if all of it has arrived, removing it
    /// from the buffer. `Ok(None)` means "read more".
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Reply>, FrameError> {
        match split_frame(buf, self.max_payload)? {
            Some((code, payload)) => parse_reply(code, payload).map(Some),
            None => Ok(None),
        }
    }
}

fn malformed_reply(code: u8, problem: &'static str) -> FrameError {
    FrameError::MalformedReply {
        reply: code as char,
        problem,
    }
}

/// Parse a reply's payload; strings share `payload`.
fn parse_reply(code: u8, payload: Bytes) -> Result<Reply, FrameError> {
    let p = &payload[..];
    let share = |s: &[u8]| payload.slice_ref(s);
    let bad = |problem| malformed_reply(code, problem);
    let strings = |count: usize, problem| {
        let (_, strings) = all_consuming(many0(cstring))
            .parse(p)
            .map_err(|_: nom::Err<nom::error::Error<_>>| bad(problem))?;
        if strings.len() == count {
            Ok(strings)
        } else {
            Err(bad(problem))
        }
    };
    let empty = |reply: Reply| {
        if p.is_empty() {
            Ok(reply)
        } else {
            Err(bad("unexpected payload"))
        }
    };
    match code {
        b'O' => {
            let (mut rest, (version, actions, protocol)) = (be_u32, be_u32, be_u32)
                .parse(p)
                .map_err(|_: nom::Err<nom::error::Error<_>>| {
                    bad("expected version, actions and protocol flags")
                })?;
            let mut macros = Vec::new();
            while !rest.is_empty() {
                let (after, (index, names)) = (be_u32, cstring).parse(rest).map_err(
                    |_: nom::Err<nom::error::Error<_>>| {
                        bad("expected a stage number and a NUL-terminated macro list")
                    },
                )?;
                let stage = Stage::from_request_index(index)
                    .ok_or_else(|| bad("unknown macro list stage"))?;
                let names =
                    std::str::from_utf8(names).map_err(|_| bad("macro list is not UTF-8"))?;
                macros.push((stage, names.to_string()));
                rest = after;
            }
            Ok(Reply::Negotiate {
                version,
                actions: Actions::from_bits_retain(actions),
                protocol: ProtocolFlags::from_bits_retain(protocol),
                macros,
            })
        }
        b'c' => empty(Reply::Continue),
        b'a' => empty(Reply::Accept),
        b'r' => empty(Reply::Reject),
        b't' => empty(Reply::Tempfail),
        b'd' => empty(Reply::Discard),
        b'p' => empty(Reply::Progress),
        b's' => empty(Reply::Skip),
        b'y' => {
            let line = strings(1, "expected one NUL-terminated SMTP reply")?[0];
            parse_smtp_reply(line)
                .map(Reply::ReplyCode)
                .ok_or_else(|| bad("expected a 4xx or 5xx SMTP reply"))
        }
        b'h' => {
            let s = strings(2, "expected NUL-terminated name and value")?;
            Ok(Reply::AddHeader {
                name: share(s[0]),
                value: share(s[1]),
            })
        }
        b'i' | b'm' => {
            let (_, (index, name, value)) = all_consuming((be_u32, cstring, cstring))
                .parse(p)
                .map_err(|_: nom::Err<nom::error::Error<_>>| {
                    bad("expected index, NUL-terminated name and value")
                })?;
            let (name, value) = (share(name), share(value));
            Ok(if code == b'i' {
                Reply::InsertHeader { index, name, value }
            } else {
                Reply::ChangeHeader { index, name, value }
            })
        }
        b'b' => Ok(Reply::ReplaceBody(payload)),
        b'+' => Ok(Reply::AddRecipient(share(
            strings(1, "expected one NUL-terminated recipient")?[0],
        ))),
        b'-' => Ok(Reply::DeleteRecipient(share(
            strings(1, "expected one NUL-terminated recipient")?[0],
        ))),
        b'2' | b'e' => {
            let (_, s) = all_consuming(many0(cstring)).parse(p).map_err(
                |_: nom::Err<nom::error::Error<_>>| bad("expected NUL-terminated strings"),
            )?;
            let (first, args) = match s[..] {
                [first] => (first, None),
                [first, args] => (first, Some(share(args))),
                _ => return Err(bad("expected an address and at most one argument string")),
            };
            Ok(if code == b'2' {
                Reply::AddRecipientWithArgs {
                    recipient: share(first),
                    args: args.unwrap_or_default(),
                }
            } else {
                Reply::ChangeSender {
                    sender: share(first),
                    args,
                }
            })
        }
        b'q' => Ok(Reply::Quarantine(share(
            strings(1, "expected one NUL-terminated reason")?[0],
        ))),
        other => Err(FrameError::UnknownReply(other)),
    }
}

/// `451 4.7.1 text` back into its parts; `%%` becomes `%` again. The
/// second word is taken as the enhanced status code when it looks like one
/// (`4.7.1`).
fn parse_smtp_reply(line: &[u8]) -> Option<SmtpReply> {
    let line = std::str::from_utf8(line).ok()?;
    let digits = line.get(..3)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = digits.parse().ok()?;
    if !(400..600).contains(&code) {
        return None;
    }
    let rest = &line[3..];
    let rest = match rest.strip_prefix(' ') {
        Some(rest) => rest,
        None if rest.is_empty() => rest,
        None => return None,
    };
    let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let (status, text) = if is_enhanced_status(word) {
        (Some(word.to_string()), after)
    } else {
        (None, rest)
    };
    Some(SmtpReply {
        code,
        status,
        text: text.replace("%%", "%"),
    })
}

/// `class.subject.detail` with a 2, 4 or 5 class (RFC 3463).
fn is_enhanced_status(word: &str) -> bool {
    let mut parts = word.split('.');
    let class_ok = parts.next().is_some_and(|c| matches!(c, "2" | "4" | "5"));
    let number = |p: Option<&str>| {
        p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    class_ok && number(parts.next()) && number(parts.next()) && parts.next().is_none()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Frame a raw command the way an MTA does.
    pub(crate) fn frame(code: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(code);
        out.extend_from_slice(payload);
        out
    }

    /// Encode a command the way an MTA would, for round trips and tests.
    pub(crate) fn encode_command(command: &Command) -> Vec<u8> {
        let mut out = BytesMut::new();
        command.encode(&mut out).unwrap();
        out.to_vec()
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Command>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        let decoder = FrameDecoder::default();
        let mut out = Vec::new();
        while let Some(c) = decoder.decode(&mut buf)? {
            out.push(c);
        }
        assert!(buf.is_empty(), "trailing bytes left: {buf:?}");
        Ok(out)
    }

    fn decode_one(bytes: &[u8]) -> Result<Command, FrameError> {
        let mut all = decode_all(bytes)?;
        assert_eq!(all.len(), 1);
        Ok(all.remove(0))
    }

    #[test]
    fn decodes_postfix_negotiation_offer() {
        let mut payload = Vec::new();
        for v in [6u32, 0x1ff, 0x1f_ffff] {
            payload.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(
            decode_one(&frame(b'O', &payload)).unwrap(),
            Command::Negotiate(Offer {
                version: 6,
                actions: Actions::from_bits_retain(0x1ff),
                protocol: ProtocolFlags::from_bits_retain(0x1f_ffff),
            })
        );
    }

    #[test]
    fn decodes_connect_for_every_family() {
        let c = decode_one(&frame(
            b'C',
            b"mail.example.org\x004\x00\x19203.0.113.7\x00",
        ))
        .unwrap();
        assert_eq!(
            c,
            Command::Connect {
                hostname: Bytes::from_static(b"mail.example.org"),
                address: ClientAddress::Ip("203.0.113.7:25".parse().unwrap()),
            }
        );
        let c = decode_one(&frame(b'C', b"h\x006\x00\x00IPv6:2001:db8::1\x00")).unwrap();
        assert_eq!(
            c,
            Command::Connect {
                hostname: Bytes::from_static(b"h"),
                address: ClientAddress::Ip("[2001:db8::1]:0".parse().unwrap()),
            }
        );
        let c = decode_one(&frame(b'C', b"localhost\x00L\x00\x00/run/x.sock\x00")).unwrap();
        assert!(
            matches!(c, Command::Connect { address: ClientAddress::Local(p), .. } if &p[..] == b"/run/x.sock")
        );
        let c = decode_one(&frame(b'C', b"unknown\x00U")).unwrap();
        assert!(matches!(
            c,
            Command::Connect {
                address: ClientAddress::Unknown(_),
                ..
            }
        ));
        let c = decode_one(&frame(b'C', b"h\x004\x00\x00not-an-ip\x00")).unwrap();
        assert!(
            matches!(c, Command::Connect { address: ClientAddress::Unknown(t), .. } if &t[..] == b"not-an-ip")
        );
    }

    #[test]
    fn decodes_empty_macro_packet_and_empty_header_value() {
        assert_eq!(
            decode_one(&frame(b'D', b"M")).unwrap(),
            Command::Macros {
                stage: Stage::Mail,
                pairs: vec![]
            }
        );
        assert_eq!(
            decode_one(&frame(b'L', b"X-Empty\x00\x00")).unwrap(),
            Command::Header {
                name: Bytes::from_static(b"X-Empty"),
                value: Bytes::new()
            }
        );
    }

    #[test]
    fn decodes_mail_with_esmtp_arguments_and_null_sender() {
        assert_eq!(
            decode_one(&frame(b'M', b"<>\x00BODY=8BITMIME\x00SIZE=10\x00")).unwrap(),
            Command::Mail {
                sender: Bytes::from_static(b"<>"),
                args: vec![
                    Bytes::from_static(b"BODY=8BITMIME"),
                    Bytes::from_static(b"SIZE=10")
                ],
            }
        );
        assert_eq!(
            decode_one(&frame(b'M', b"\x00")).unwrap(),
            Command::Mail {
                sender: Bytes::new(),
                args: vec![]
            }
        );
    }

    #[test]
    fn body_and_end_of_message_keep_raw_bytes() {
        let body = b"line\r\n\x00binary\r";
        assert_eq!(
            decode_one(&frame(b'B', body)).unwrap(),
            Command::Body(Bytes::copy_from_slice(body))
        );
        assert_eq!(
            decode_one(&frame(b'E', b"")).unwrap(),
            Command::EndOfMessage(Bytes::new())
        );
    }

    #[test]
    fn coalesced_frames_decode_one_after_another() {
        let mut bytes = frame(b'B', b"abc");
        bytes.extend(frame(b'E', b""));
        bytes.extend(frame(b'A', b""));
        let all = decode_all(&bytes).unwrap();
        assert_eq!(
            all,
            vec![
                Command::Body(Bytes::from_static(b"abc")),
                Command::EndOfMessage(Bytes::new()),
                Command::Abort
            ]
        );
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let bytes = frame(b'H', b"client.example\x00");
        let decoder = FrameDecoder::default();
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.put_u8(*b);
            let got = decoder.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == bytes.len() - 1);
        }
    }

    #[test]
    fn zero_length_is_an_error() {
        assert_eq!(decode_all(&[0, 0, 0, 0]), Err(FrameError::ZeroLength));
    }

    #[test]
    fn oversize_length_fails_before_the_payload_arrives() {
        let decoder = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, b'B'][..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(FrameError::TooLong {
                length: 0xffff_fffe,
                limit: 1024
            })
        );
        assert!(
            buf.capacity() < 1 << 20,
            "must not reserve for a huge frame"
        );
        let mut buf = BytesMut::from(&frame(b'B', &[b'x'; 1024])[..]);
        assert!(decoder.decode(&mut buf).unwrap().is_some());
        let mut buf = BytesMut::from(&frame(b'B', &[b'x'; 1025])[..]);
        assert!(decoder.decode(&mut buf).is_err());
    }

    #[test]
    fn malformed_frames_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (&frame(b'Z', b""), "unknown command"),
            (&frame(b'O', b"\x00\x00\x00\x06"), "short O"),
            (&frame(b'H', b"no terminator"), "H without NUL"),
            (&frame(b'H', b"a\x00b\x00"), "H with two strings"),
            (&frame(b'L', b"Subject\x00"), "L without value"),
            (&frame(b'L', b"\x00value\x00"), "L with empty name"),
            (&frame(b'D', b""), "D without stage"),
            (&frame(b'D', b"Z"), "D with unknown stage"),
            (&frame(b'D', b"Mi\x00"), "D with a name but no value"),
            (&frame(b'M', b""), "M without sender"),
            (&frame(b'C', b"host\x004\x00"), "C cut short"),
            (
                &frame(b'C', b"host\x00X\x00\x00addr\x00"),
                "C with unknown family",
            ),
            (&frame(b'A', b"x"), "A with payload"),
            (&frame(b'Q', b"x"), "Q with payload"),
        ];
        for (bytes, what) in cases {
            assert!(decode_all(bytes).is_err(), "{what} should not decode");
        }
    }

    #[test]
    fn encodes_insert_header_as_libmilter_does() {
        let mut out = BytesMut::new();
        Reply::InsertHeader {
            index: 0,
            name: Bytes::from_static(b"DKIM-Signature"),
            value: Bytes::from_static(b" v=1;\n\tb=x"),
        }
        .encode(&mut out)
        .unwrap();
        let mut expected = vec![0, 0, 0, 0, b'i', 0, 0, 0, 0];
        expected.extend_from_slice(b"DKIM-Signature\0 v=1;\n\tb=x\0");
        let len = (expected.len() - 4) as u32;
        expected[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn encodes_negotiation_with_macro_lists() {
        let mut out = BytesMut::new();
        Reply::Negotiate {
            version: 6,
            actions: Actions::ADD_HEADERS,
            protocol: ProtocolFlags::NO_HELO,
            macros: vec![(Stage::Mail, "{auth_type} i".into())],
        }
        .encode(&mut out)
        .unwrap();
        let mut expected = frame(b'O', &[0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2]);
        expected.extend_from_slice(b"{auth_type} i\0");
        let len = (expected.len() - 4) as u32;
        expected[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn smtp_reply_doubles_percent_and_refuses_bad_codes() {
        let mut out = BytesMut::new();
        Reply::ReplyCode(SmtpReply {
            code: 451,
            status: Some("4.7.1".into()),
            text: "100% busy".into(),
        })
        .encode(&mut out)
        .unwrap();
        assert_eq!(&out[5..], b"451 4.7.1 100%% busy\0");
        for (code, text) in [(250, "ok"), (451, "two\r\nlines")] {
            let mut out = BytesMut::new();
            let r = Reply::ReplyCode(SmtpReply {
                code,
                status: None,
                text: text.into(),
            });
            assert!(r.encode(&mut out).is_err());
            assert!(out.is_empty());
        }
    }

    #[test]
    fn refuses_nul_inside_strings_and_oversize_replies() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let r = Reply::AddHeader {
            name: Bytes::from_static(b"X"),
            value: Bytes::from_static(b"a\0b"),
        };
        assert_eq!(
            r.encode(&mut out),
            Err(EncodeError::EmbeddedNul("header value"))
        );
        let r = Reply::ReplaceBody(Bytes::from(vec![b'x'; MAX_REPLY_PAYLOAD + 1]));
        assert!(matches!(r.encode(&mut out), Err(EncodeError::TooLong(_))));
        assert_eq!(&out[..], b"keep");
    }

    #[test]
    fn encodes_commands_as_postfix_frames_them() {
        let mut out = BytesMut::new();
        Command::Negotiate(Offer {
            version: 6,
            actions: Actions::from_bits_retain(0x1ff),
            protocol: ProtocolFlags::from_bits_retain(0x1f_ffff),
        })
        .encode(&mut out)
        .unwrap();
        assert_eq!(
            &out[..],
            &[
                0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0x1f, 0xff, 0xff
            ]
        );
        let mut out = BytesMut::new();
        Command::Connect {
            hostname: Bytes::from_static(b"mail.example.org"),
            address: ClientAddress::Ip("[2001:db8::1]:25".parse().unwrap()),
        }
        .encode(&mut out)
        .unwrap();
        assert_eq!(
            &out[..],
            &frame(b'C', b"mail.example.org\x006\x00\x192001:db8::1\x00")[..]
        );
        let mut out = BytesMut::new();
        Command::Macros {
            stage: Stage::Mail,
            pairs: vec![(
                Bytes::from_static(b"{auth_type}"),
                Bytes::from_static(b"PLAIN"),
            )],
        }
        .encode(&mut out)
        .unwrap();
        assert_eq!(&out[..], &frame(b'D', b"M{auth_type}\x00PLAIN\x00")[..]);
        let mut out = BytesMut::new();
        Command::Connect {
            hostname: Bytes::from_static(b"unknown"),
            address: ClientAddress::Unknown(Bytes::from_static(b"ignored")),
        }
        .encode(&mut out)
        .unwrap();
        assert_eq!(&out[..], &frame(b'C', b"unknown\x00U")[..]);
    }

    #[test]
    fn command_encoding_refuses_nul_and_empty_header_names() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let bad = Command::Helo {
            name: Bytes::from_static(b"a\0b"),
        };
        assert_eq!(
            bad.encode(&mut out),
            Err(EncodeError::EmbeddedNul("HELO name"))
        );
        let bad = Command::Header {
            name: Bytes::new(),
            value: Bytes::from_static(b"x"),
        };
        assert_eq!(bad.encode(&mut out), Err(EncodeError::EmptyHeaderName));
        assert_eq!(&out[..], b"keep");
    }

    fn decode_replies(bytes: &[u8]) -> Result<Vec<Reply>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        let decoder = ReplyDecoder::default();
        let mut out = Vec::new();
        while let Some(r) = decoder.decode(&mut buf)? {
            out.push(r);
        }
        assert!(buf.is_empty(), "trailing bytes left: {buf:?}");
        Ok(out)
    }

    #[test]
    fn decodes_libmilter_replies() {
        // What OpenDKIM (libmilter) sends at end of message.
        let mut bytes = frame(
            b'i',
            b"\x00\x00\x00\x00DKIM-Signature\x00v=1; a=rsa-sha256\x00",
        );
        bytes.extend(frame(b'c', b""));
        assert_eq!(
            decode_replies(&bytes).unwrap(),
            vec![
                Reply::InsertHeader {
                    index: 0,
                    name: Bytes::from_static(b"DKIM-Signature"),
                    value: Bytes::from_static(b"v=1; a=rsa-sha256"),
                },
                Reply::Continue
            ]
        );
        let mut payload = vec![0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0x1f, 0xff];
        payload.extend_from_slice(&[0, 0, 0, 2]);
        payload.extend_from_slice(b"{auth_type} i\0");
        assert_eq!(
            decode_replies(&frame(b'O', &payload)).unwrap(),
            vec![Reply::Negotiate {
                version: 6,
                actions: Actions::ADD_HEADERS,
                protocol: ProtocolFlags::from_bits_retain(0x1fff),
                macros: vec![(Stage::Mail, "{auth_type} i".into())],
            }]
        );
        assert_eq!(
            decode_replies(&frame(b'y', b"451 4.7.1 100%% busy\0")).unwrap(),
            vec![Reply::ReplyCode(SmtpReply {
                code: 451,
                status: Some("4.7.1".into()),
                text: "100% busy".into(),
            })]
        );
        assert_eq!(
            decode_replies(&frame(b'y', b"550 no status here\0")).unwrap(),
            vec![Reply::ReplyCode(SmtpReply {
                code: 550,
                status: None,
                text: "no status here".into(),
            })]
        );
        assert_eq!(
            decode_replies(&frame(b'e', b"<a@example.com>\0")).unwrap(),
            vec![Reply::ChangeSender {
                sender: Bytes::from_static(b"<a@example.com>"),
                args: None
            }]
        );
    }

    #[test]
    fn malformed_replies_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (&frame(b'Z', b""), "unknown reply"),
            (&frame(b'c', b"x"), "continue with payload"),
            (&frame(b'O', b"\x00\x00\x00\x06"), "short O"),
            (
                &frame(
                    b'O',
                    &[0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, b'i', 0],
                ),
                "O with unknown stage",
            ),
            (&frame(b'h', b"X-Name\x00"), "h without value"),
            (&frame(b'i', b"\x00\x00X\x00v\x00"), "i with a short index"),
            (&frame(b'y', b"250 ok\0"), "y with a 2xx code"),
            (&frame(b'y', b"451 text"), "y without NUL"),
            (&frame(b'y', b"45\0"), "y with two digits"),
            (&frame(b'+', b"a\0b\0"), "+ with two strings"),
        ];
        for (bytes, what) in cases {
            assert!(decode_replies(bytes).is_err(), "{what} should not decode");
        }
        assert!(matches!(
            decode_replies(&[0, 0, 0, 0]),
            Err(FrameError::ZeroLength)
        ));
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn arb_cstring(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(1u8..=255, 0..max).prop_map(Bytes::from)
    }

    fn arb_stage() -> impl Strategy<Value = Stage> {
        proptest::sample::select(b"CHMRTLNBEU".to_vec())
            .prop_map(|c| Stage::from_command(c).unwrap())
    }

    pub(crate) fn arb_command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (2u32..=6, any::<u32>(), any::<u32>()).prop_map(|(v, a, p)| Command::Negotiate(
                Offer {
                    version: v,
                    actions: Actions::from_bits_retain(a),
                    protocol: ProtocolFlags::from_bits_retain(p),
                }
            )),
            (
                arb_stage(),
                proptest::collection::vec((arb_cstring(12), arb_cstring(12)), 0..4)
            )
                .prop_map(|(stage, pairs)| Command::Macros { stage, pairs }),
            (arb_cstring(20), any::<IpAddr>(), any::<u16>()).prop_map(|(hostname, ip, port)| {
                Command::Connect {
                    hostname,
                    address: ClientAddress::Ip(SocketAddr::new(ip, port)),
                }
            }),
            (arb_cstring(20), arb_cstring(20)).prop_map(|(hostname, path)| Command::Connect {
                hostname,
                address: ClientAddress::Local(path),
            }),
            arb_cstring(20).prop_map(|name| Command::Helo { name }),
            (
                arb_cstring(20),
                proptest::collection::vec(arb_cstring(10), 0..3)
            )
                .prop_map(|(sender, args)| Command::Mail { sender, args }),
            (
                arb_cstring(20),
                proptest::collection::vec(arb_cstring(10), 0..3)
            )
                .prop_map(|(recipient, args)| Command::Rcpt { recipient, args }),
            Just(Command::Data),
            arb_cstring(20).prop_map(|line| Command::Unknown { line }),
            (
                arb_cstring(20).prop_filter("header names are not empty", |n| !n.is_empty()),
                arb_cstring(40)
            )
                .prop_map(|(name, value)| Command::Header { name, value }),
            Just(Command::EndOfHeaders),
            arb_bytes(200).prop_map(Command::Body),
            arb_bytes(20).prop_map(Command::EndOfMessage),
            Just(Command::Abort),
            Just(Command::Quit),
            Just(Command::QuitNewConnection),
        ]
    }

    fn arb_status() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(
            (
                proptest::sample::select(vec!["2", "4", "5"]),
                0u16..1000,
                0u16..1000,
            )
                .prop_map(|(c, s, d)| format!("{c}.{s}.{d}")),
        )
    }

    pub(crate) fn arb_reply() -> impl Strategy<Value = Reply> {
        let requestable = proptest::sample::select(Stage::REQUESTABLE.to_vec());
        prop_oneof![
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec((requestable, "[a-z{}_ ]{0,20}"), 0..4)
            )
                .prop_map(|(version, a, p, macros)| Reply::Negotiate {
                    version,
                    actions: Actions::from_bits_retain(a),
                    protocol: ProtocolFlags::from_bits_retain(p),
                    macros,
                }),
            proptest::sample::select(vec![
                Reply::Continue,
                Reply::Accept,
                Reply::Reject,
                Reply::Tempfail,
                Reply::Discard,
                Reply::Progress,
                Reply::Skip,
            ]),
            (
                400u16..600,
                arb_status(),
                "([a-zA-Z%][a-zA-Z0-9% .]{0,30})?"
            )
                .prop_map(|(code, status, text)| Reply::ReplyCode(SmtpReply {
                    code,
                    status,
                    text
                })),
            (arb_cstring(20), arb_cstring(60))
                .prop_map(|(name, value)| Reply::AddHeader { name, value }),
            (any::<u32>(), arb_cstring(20), arb_cstring(60))
                .prop_map(|(index, name, value)| Reply::InsertHeader { index, name, value }),
            (any::<u32>(), arb_cstring(20), arb_cstring(60))
                .prop_map(|(index, name, value)| Reply::ChangeHeader { index, name, value }),
            arb_bytes(200).prop_map(Reply::ReplaceBody),
            arb_cstring(30).prop_map(Reply::AddRecipient),
            (arb_cstring(30), arb_cstring(30))
                .prop_map(|(recipient, args)| Reply::AddRecipientWithArgs { recipient, args }),
            arb_cstring(30).prop_map(Reply::DeleteRecipient),
            (arb_cstring(30), proptest::option::of(arb_cstring(30)))
                .prop_map(|(sender, args)| Reply::ChangeSender { sender, args }),
            arb_cstring(30).prop_map(Reply::Quarantine),
        ]
    }

    proptest! {
        #[test]
        fn every_command_round_trips(command in arb_command()) {
            let bytes = encode_command(&command);
            prop_assert_eq!(decode_one(&bytes).unwrap(), command);
        }

        #[test]
        fn every_reply_round_trips(reply in arb_reply()) {
            let mut out = BytesMut::new();
            reply.encode(&mut out).unwrap();
            prop_assert_eq!(decode_replies(&out).unwrap(), vec![reply]);
        }

        #[test]
        fn arbitrary_reply_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let decoder = ReplyDecoder::new(256);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decoder.decode(&mut buf) {}
        }

        #[test]
        fn any_split_of_a_stream_decodes_to_the_same_commands(
            commands in proptest::collection::vec(arb_command(), 1..12),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..10),
        ) {
            let stream: Vec<u8> = commands.iter().flat_map(encode_command).collect();
            let mut cut_points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cut_points.sort_unstable();
            let decoder = FrameDecoder::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut last = 0;
            for cut in cut_points.into_iter().chain([stream.len()]) {
                buf.extend_from_slice(&stream[last..cut]);
                last = cut;
                while let Some(c) = decoder.decode(&mut buf).unwrap() {
                    got.push(c);
                }
            }
            prop_assert_eq!(got, commands);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let decoder = FrameDecoder::new(256);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decoder.decode(&mut buf) {}
        }

        #[test]
        fn every_reply_frame_carries_its_own_length(value in arb_cstring(300), index in any::<u32>()) {
            let mut out = BytesMut::new();
            Reply::InsertHeader { index, name: Bytes::from_static(b"X-Test"), value: value.clone() }
                .encode(&mut out).unwrap();
            let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
            prop_assert_eq!(len + 4, out.len());
            prop_assert_eq!(out[4], b'i');
        }
    }
}
