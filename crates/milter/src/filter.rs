//! The interface between the protocol engine and a mail filter.
//!
//! A [`Filter`] sees one connection's events in order and answers each with
//! a [`Verdict`]; at the end of a message it may also ask for
//! [`Modification`]s. A filter returns decisions and header changes, never
//! bytes: framing, "no reply" flags, the leading space of header values and
//! the order of reply frames are the session's job.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use super::codec::{ClientAddress, Reply, SmtpReply};
use super::macros::Macros;
use super::options::{Actions, Needs};

/// The answer to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on; send the next event.
    Continue,
    /// Accept this message (or connection) without further filtering.
    Accept,
    /// Reject with the MTA's default 5xx reply.
    Reject,
    /// Fail temporarily with the MTA's default 4xx reply.
    Tempfail,
    /// Accept and silently drop the message.
    Discard,
    /// Answer with this SMTP reply (4xx: tempfail, 5xx: reject).
    Smtp(SmtpReply),
    /// To a body chunk: send no more of the body, go on to end of message.
    /// Sent only when the MTA waits for a reply to body chunks and offered
    /// `SMFIP_SKIP`; otherwise, and to any other event, it is "continue".
    Skip,
}

impl From<Verdict> for Reply {
    fn from(verdict: Verdict) -> Reply {
        match verdict {
            Verdict::Continue => Reply::Continue,
            Verdict::Accept => Reply::Accept,
            Verdict::Reject => Reply::Reject,
            Verdict::Tempfail => Reply::Tempfail,
            Verdict::Discard => Reply::Discard,
            Verdict::Smtp(reply) => Reply::ReplyCode(reply),
            Verdict::Skip => Reply::Skip,
        }
    }
}

/// A change to the message, allowed only at end of message.
///
/// Header values are given as they appear after the colon, folded with bare
/// LF (`"\n\t"`) and starting with the usual single space (`" v=1; ..."`):
/// the session adapts that to what was negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modification {
    /// Append a header after the existing ones.
    AddHeader {
        /// The field name, without the colon (`X-Filtered`).
        name: Bytes,
        /// The field body, starting with its space (`" yes"`).
        value: Bytes,
    },
    /// Insert a header at a 0-based position in the message as delivered
    /// (Postfix counts its own Received: header, which filters never see).
    InsertHeader {
        /// Position from 0: 0 puts the field above Postfix's Received:,
        /// 1 right below it.
        index: u32,
        /// The field name, without the colon.
        name: Bytes,
        /// The field body, starting with its space.
        value: Bytes,
    },
    /// Replace (or, with an empty value, delete) the `index`-th (1-based)
    /// instance of a header.
    ChangeHeader {
        /// Which field named `name` to change, counting from 1 among the
        /// fields of that name.
        index: u32,
        /// The name of the field to change.
        name: Bytes,
        /// The new field body, starting with its space; empty deletes the
        /// field.
        value: Bytes,
    },
    /// Add an envelope recipient (`+`; needs [`Actions::ADD_RECIPIENT`]).
    AddRecipient(Bytes),
    /// Remove an envelope recipient (`-`; needs
    /// [`Actions::DELETE_RECIPIENT`]), given as the MTA sent it in RCPT.
    DeleteRecipient(Bytes),
    /// Replace the envelope sender (`e`, without ESMTP parameters; needs
    /// [`Actions::CHANGE_SENDER`]).
    ChangeSender(Bytes),
    /// Quarantine the message with this reason (`q`; needs
    /// [`Actions::QUARANTINE`]). Postfix puts it in its hold queue.
    Quarantine(Bytes),
}

impl Modification {
    /// The negotiated action this modification needs.
    pub fn action(&self) -> Actions {
        match self {
            Modification::AddHeader { .. } | Modification::InsertHeader { .. } => {
                Actions::ADD_HEADERS
            }
            Modification::ChangeHeader { .. } => Actions::CHANGE_HEADERS,
            Modification::AddRecipient(_) => Actions::ADD_RECIPIENT,
            Modification::DeleteRecipient(_) => Actions::DELETE_RECIPIENT,
            Modification::ChangeSender(_) => Actions::CHANGE_SENDER,
            Modification::Quarantine(_) => Actions::QUARANTINE,
        }
    }

    /// The reply frame for this modification. `leading_space` says whether
    /// the MTA takes header values verbatim (HDR_LEADSPC) or adds a space
    /// itself.
    pub(crate) fn into_reply(self, leading_space: bool) -> Reply {
        let adapt = |value: Bytes| {
            if leading_space || !value.starts_with(b" ") {
                value
            } else {
                value.slice(1..)
            }
        };
        match self {
            Modification::AddHeader { name, value } => Reply::AddHeader {
                name,
                value: adapt(value),
            },
            Modification::InsertHeader { index, name, value } => Reply::InsertHeader {
                index,
                name,
                value: adapt(value),
            },
            Modification::ChangeHeader { index, name, value } => Reply::ChangeHeader {
                index,
                name,
                value: adapt(value),
            },
            Modification::AddRecipient(r) => Reply::AddRecipient(r),
            Modification::DeleteRecipient(r) => Reply::DeleteRecipient(r),
            Modification::ChangeSender(s) => Reply::ChangeSender {
                sender: s,
                args: None,
            },
            Modification::Quarantine(reason) => Reply::Quarantine(reason),
        }
    }
}

/// The answer at end of message: changes to make, then the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndOfMessage {
    /// Changes to send, in this order, before the verdict. Each must be
    /// among the actions the filter declared in [`Needs::actions`];
    /// otherwise none is sent and the message is answered tempfail.
    pub modifications: Vec<Modification>,
    /// The final answer for the message. [`Verdict::Continue`] lets it
    /// through, as [`Verdict::Accept`] does.
    pub verdict: Verdict,
}

impl EndOfMessage {
    /// This verdict, with no modifications.
    pub fn verdict(verdict: Verdict) -> Self {
        EndOfMessage {
            modifications: Vec::new(),
            verdict,
        }
    }
}

/// The SMTP client, as the MTA described it at connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client's host name, or `[address]` when it has none.
    pub hostname: Bytes,
    /// Where the client connected from (IP address and port, local socket,
    /// or unknown).
    pub address: ClientAddress,
}

/// A mail filter: one value per milter connection, called in protocol
/// order. Every method has a "do nothing" default so a filter implements
/// only what it needs, and says so in [`Filter::needs`].
///
/// Header values reach [`Filter::header`] as they stood after the colon,
/// leading space included. With protocol versions that strip that space
/// (version 2, or no HDR_LEADSPC), the session puts one space back, as
/// Postfix removed exactly one.
pub trait Filter: Send {
    /// What to ask of the MTA when the connection opens.
    fn needs(&self) -> Needs;

    /// `C`: an SMTP client connected (or, after `K`, the next client on
    /// this milter connection); `macros` hold the connect stage's (`j`,
    /// `{daemon_name}`, ...). Postfix fakes one for mail submitted with
    /// `sendmail(1)`: `localhost`, 127.0.0.1. Accept, reject or tempfail
    /// here decides for every message of this client.
    fn connect(&mut self, _client: &Client, _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    /// `H`: the name the client gave in HELO or EHLO, unchecked. May come
    /// again for the same client (EHLO after STARTTLS).
    fn helo(&mut self, _name: &[u8], _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    /// A new transaction starts.
    fn mail(&mut self, _sender: &[u8], _args: &[Bytes], _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    /// `R`: one recipient, as the MTA passes it (see
    /// [`Command::Rcpt`](crate::Command::Rcpt)), with its ESMTP
    /// parameters. Called once per recipient; reject or tempfail refuses
    /// this recipient only.
    fn rcpt(&mut self, _recipient: &[u8], _args: &[Bytes], _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    /// `T`: the client sent DATA; the message content follows. Only with
    /// protocol version 4 and later.
    fn data(&mut self, _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    /// `U`: an SMTP command the MTA does not know, the line as the client
    /// sent it (protocol version 3 and later). The MTA refuses the command
    /// whatever the answer.
    fn unknown(&mut self, _line: &[u8], _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    /// `L`: one header field, in message order: `name` without the colon,
    /// `value` everything after the colon (see [`Filter`] on its leading
    /// space), continuation lines joined with bare LF. `value` may be
    /// empty.
    fn header(&mut self, _name: &[u8], _value: &[u8], _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    /// `N`: the last header has been seen; the body follows.
    fn end_of_headers(&mut self, _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    /// `B`: the next piece of the body, with CRLF line ends, split
    /// anywhere (even between CR and LF); Postfix sends at most 64 KiB at
    /// a time. A last piece that comes with end of message is passed here
    /// too, just before [`Filter::end_of_message`], and its answer is
    /// ignored.
    fn body(&mut self, _chunk: &[u8], _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    /// `E`: the message is complete. The only answer that may carry
    /// [`Modification`]s, and always answered, whatever was negotiated.
    /// The end-of-message macros (`i`, the queue id) are in `macros`.
    fn end_of_message(&mut self, _macros: &Macros) -> EndOfMessage {
        EndOfMessage::verdict(Verdict::Continue)
    }
    /// Whether the coming [`Filter::end_of_message`] is heavy (computes for
    /// a millisecond or more, like a private-key operation): the server
    /// then runs it on its work threads, so that other connections are not
    /// held up behind it. Asked just before each end of message.
    fn offload_end_of_message(&self) -> bool {
        false
    }
    /// Something the coming [`Filter::end_of_message`] needs that is not
    /// there yet (a DNS answer, say): the server awaits it, holding up no
    /// other connection, before delivering the end of message. The filter
    /// bounds the wait itself. Asked just before each end of message.
    fn end_of_message_ready(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        None
    }
    /// Something the coming [`Filter::end_of_headers`] needs that is not
    /// there yet (a table entry kept on a database server, say): the server
    /// awaits it, holding up no other connection, before delivering the end
    /// of headers. `macros` are those known so far (the end-of-headers
    /// stage's included). The filter bounds the wait itself.
    fn end_of_headers_ready(
        &self,
        _macros: &Macros,
    ) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        None
    }
    /// The current transaction is over without an end of message (RSET,
    /// a rejected recipient list, an error elsewhere). Forget it.
    fn abort(&mut self) {}
    /// The MTA is done with this SMTP client (QUIT, a new client on the
    /// same socket, or the socket closed).
    fn close(&mut self) {}
}
