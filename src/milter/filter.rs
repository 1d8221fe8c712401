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
        name: Bytes,
        value: Bytes,
    },
    /// Insert a header at a 0-based position in the message as delivered
    /// (Postfix counts its own Received: header, which filters never see).
    InsertHeader {
        index: u32,
        name: Bytes,
        value: Bytes,
    },
    /// Replace (or, with an empty value, delete) the `index`-th (1-based)
    /// instance of a header.
    ChangeHeader {
        index: u32,
        name: Bytes,
        value: Bytes,
    },
    AddRecipient(Bytes),
    DeleteRecipient(Bytes),
    ChangeSender(Bytes),
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
    pub modifications: Vec<Modification>,
    pub verdict: Verdict,
}

impl EndOfMessage {
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

    fn connect(&mut self, _client: &Client, _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    fn helo(&mut self, _name: &[u8], _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    /// A new transaction starts.
    fn mail(&mut self, _sender: &[u8], _args: &[Bytes], _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    fn rcpt(&mut self, _recipient: &[u8], _args: &[Bytes], _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    fn data(&mut self, _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    fn unknown(&mut self, _line: &[u8], _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    fn header(&mut self, _name: &[u8], _value: &[u8], _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    fn end_of_headers(&mut self, _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
    fn body(&mut self, _chunk: &[u8], _macros: &Macros) -> Verdict {
        Verdict::Continue
    }
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
    /// The current transaction is over without an end of message (RSET,
    /// a rejected recipient list, an error elsewhere). Forget it.
    fn abort(&mut self) {}
    /// The MTA is done with this SMTP client (QUIT, a new client on the
    /// same socket, or the socket closed).
    fn close(&mut self) {}
}
