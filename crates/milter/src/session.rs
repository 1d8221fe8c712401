//! One milter connection's state machine.
//!
//! [`Session`] takes decoded [`Command`]s one at a time, keeps the macros
//! and the transaction state, calls the [`Filter`], and pushes the
//! [`Reply`]s the MTA expects. It does no I/O, so every protocol rule here
//! is tested without a socket; `connection` moves the bytes.
//!
//! The rules it enforces: negotiation first and once; replies only to the
//! events the MTA waits for (no reply to `A`, `D`, `Q`, `K`, nor to events
//! negotiated "no reply"); message events in order (envelope, headers, end
//! of headers, body, end of message); modifications only at end of message
//! and only those negotiated. It is lenient where real MTAs differ: events
//! before CONNECT, repeated HELO, a MAIL without an abort of the previous
//! transaction, aborts outside a transaction.

use bytes::{Bytes, BytesMut};

use super::codec::{Command, Reply};
use super::filter::{Client, Filter, Verdict};
use super::macros::{Macros, Stage};
use super::options::{
    Actions, Event, EventSet, Needs, Negotiated, NegotiationError, Offer, ProtocolFlags, negotiate,
};

/// Where the current transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// After MAIL: recipients, DATA.
    Envelope,
    /// Headers are arriving.
    Headers,
    /// After end of headers: body chunks.
    Body,
    /// The filter gave the message its final answer before end of message
    /// (accept, reject, discard, tempfail at MAIL, DATA, a header, end of
    /// headers or a body chunk): the MTA sends nothing more of it and
    /// waits for nothing, but the filter still hears of its abort.
    Answered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the MTA's `O`.
    Negotiating,
    /// Options agreed; `message` is the open transaction, if any (answered
    /// early, it is no longer in flight but the filter still holds it).
    Open {
        options: Negotiated,
        wanted: EventSet,
        message: Option<Part>,
    },
    /// After `Q`; nothing more is accepted.
    Closed,
}

/// What the caller should do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Send the replies (if any) and read the next command.
    Continue,
    /// Send the replies (if any) and close the connection.
    Close,
}

/// A violation of the protocol by the MTA. The connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The connection opened with this command instead of `O` (or `Q`).
    #[error("'{0}' command before option negotiation")]
    BeforeNegotiation(char),
    /// A second `O` on one connection (`K` keeps the negotiated options;
    /// it does not renegotiate).
    #[error("second option negotiation on one connection")]
    NegotiatedTwice,
    /// A message event out of place: RCPT or DATA after the headers
    /// started, a header after end of headers, a second end of headers.
    #[error("'{command}' command {context}")]
    OutOfOrder {
        /// The command byte, as a character.
        command: char,
        /// Where the command came, for logs ("after the end of headers").
        context: &'static str,
    },
    /// This command came after `Q`.
    #[error("'{0}' command after QUIT")]
    AfterQuit(char),
    /// One `D` packet carried more names and values than
    /// [`MAX_STAGE_BYTES`](crate::macros::MAX_STAGE_BYTES).
    #[error("{bytes} bytes of macros for one stage (at most {max})", max = super::macros::MAX_STAGE_BYTES)]
    MacrosTooLarge {
        /// The size of the packet's names and values together, in bytes.
        bytes: usize,
    },
    /// The MTA's offer cannot meet the filter's [`Needs`].
    #[error(transparent)]
    Negotiation(#[from] NegotiationError),
}

/// The state of one milter connection, driving one filter.
pub struct Session<F> {
    filter: F,
    macros: Macros,
    state: State,
}

impl<F: Filter> Session<F> {
    /// A session driving `filter`, waiting for the MTA's offer (`O`).
    pub fn new(filter: F) -> Self {
        Session {
            filter,
            macros: Macros::new(),
            state: State::Negotiating,
        }
    }

    /// The filter this session drives, to look at what it has seen.
    pub fn filter(&self) -> &F {
        &self.filter
    }

    /// The options agreed with the MTA, once negotiated.
    pub fn negotiated(&self) -> Option<Negotiated> {
        match self.state {
            State::Open { options, .. } => Some(options),
            State::Negotiating | State::Closed => None,
        }
    }

    /// The macros the MTA has sent so far.
    pub fn macros(&self) -> &Macros {
        &self.macros
    }

    /// Whether a transaction is in flight: MAIL came, and neither the
    /// message's final answer (at end of message, or earlier when the
    /// filter accepted, rejected, discarded or failed it) nor an abort
    /// has. Between transactions a connection is idle, and may be closed
    /// on shutdown without cutting a message off.
    pub fn in_transaction(&self) -> bool {
        matches!(
            self.state,
            State::Open {
                message: Some(Part::Envelope | Part::Headers | Part::Body),
                ..
            }
        )
    }

    /// Whether the filter still holds a message it must be told to forget:
    /// a transaction in flight, or one answered early and not yet aborted.
    fn message_open(&self) -> bool {
        matches!(
            self.state,
            State::Open {
                message: Some(_),
                ..
            }
        )
    }

    /// Whether this command should run off the connection's thread: an end
    /// of message the filter calls heavy.
    pub fn offloads(&self, command: &Command) -> bool {
        matches!(command, Command::EndOfMessage(_)) && self.filter.offload_end_of_message()
    }

    /// Whether the MTA waits for a reply to this command.
    pub fn expects_reply(&self, command: &Command) -> bool {
        let event = match command {
            Command::Negotiate(_) | Command::EndOfMessage(_) => return true,
            Command::Macros { .. }
            | Command::Abort
            | Command::Quit
            | Command::QuitNewConnection => return false,
            Command::Connect { .. } => Event::Connect,
            Command::Helo { .. } => Event::Helo,
            Command::Mail { .. } => Event::Mail,
            Command::Rcpt { .. } => Event::Rcpt,
            Command::Data => Event::Data,
            Command::Unknown { .. } => Event::Unknown,
            Command::Header { .. } => Event::Header,
            Command::EndOfHeaders => Event::EndOfHeaders,
            Command::Body(_) => Event::Body,
        };
        match self.state {
            State::Open { options, .. } => options.expects_reply(event),
            State::Negotiating | State::Closed => false,
        }
    }

    /// Handle one command, pushing the replies to send onto `out`.
    pub fn handle(
        &mut self,
        command: Command,
        out: &mut Vec<Reply>,
    ) -> Result<Flow, ProtocolError> {
        let code = command.code();
        let (options, wanted, message) = match self.state {
            State::Negotiating => return self.negotiate(command, out),
            State::Closed => return Err(ProtocolError::AfterQuit(code)),
            State::Open {
                options,
                wanted,
                message,
            } => (options, wanted, message),
        };
        let out_of_order = |context| ProtocolError::OutOfOrder {
            command: code,
            context,
        };

        match command {
            Command::Negotiate(_) => return Err(ProtocolError::NegotiatedTwice),
            Command::Macros { stage, pairs } => {
                let bytes = super::macros::stage_bytes(&pairs);
                if bytes > super::macros::MAX_STAGE_BYTES {
                    return Err(ProtocolError::MacrosTooLarge { bytes });
                }
                self.macros.define(stage, pairs);
            }
            Command::Connect { hostname, address } => {
                self.end_transaction();
                let client = Client { hostname, address };
                let verdict = self.call(wanted, Event::Connect, |f, m| f.connect(&client, m));
                answer(options, Event::Connect, verdict, out);
            }
            Command::Helo { name } => {
                let verdict = self.call(wanted, Event::Helo, |f, m| f.helo(&name, m));
                answer(options, Event::Helo, verdict, out);
            }
            Command::Mail { sender, args } => {
                if message.is_some() {
                    // The MTA started over without an abort: forget the old
                    // message, keeping the MAIL macros that just arrived.
                    self.filter.abort();
                }
                self.set_message(Some(Part::Envelope));
                let verdict = self.call(wanted, Event::Mail, |f, m| f.mail(&sender, &args, m));
                self.answer_message(options, Event::Mail, verdict, out);
            }
            Command::Rcpt { recipient, args } => {
                if !matches!(message, None | Some(Part::Envelope | Part::Answered)) {
                    return Err(out_of_order("after the message content started"));
                }
                self.set_message(Some(Part::Envelope));
                // A verdict here is for this recipient alone: the message
                // goes on with the others.
                let verdict = self.call(wanted, Event::Rcpt, |f, m| f.rcpt(&recipient, &args, m));
                answer(options, Event::Rcpt, verdict, out);
            }
            Command::Data => {
                if !matches!(message, None | Some(Part::Envelope | Part::Answered)) {
                    return Err(out_of_order("after the message content started"));
                }
                self.set_message(Some(Part::Envelope));
                let verdict = self.call(wanted, Event::Data, Filter::data);
                self.answer_message(options, Event::Data, verdict, out);
            }
            Command::Unknown { line } => {
                let verdict = self.call(wanted, Event::Unknown, |f, m| f.unknown(&line, m));
                answer(options, Event::Unknown, verdict, out);
            }
            Command::Header { name, value } => {
                if message == Some(Part::Body) {
                    return Err(out_of_order("after the end of headers"));
                }
                self.set_message(Some(Part::Headers));
                let value = if options.header_leading_space() || value.is_empty() {
                    value
                } else {
                    with_leading_space(&value)
                };
                let verdict = self.call(wanted, Event::Header, |f, m| f.header(&name, &value, m));
                self.answer_message(options, Event::Header, verdict, out);
            }
            Command::EndOfHeaders => {
                if message == Some(Part::Body) {
                    return Err(out_of_order("twice in one message"));
                }
                self.set_message(Some(Part::Body));
                let verdict = self.call(wanted, Event::EndOfHeaders, Filter::end_of_headers);
                self.answer_message(options, Event::EndOfHeaders, verdict, out);
            }
            Command::Body(chunk) => {
                self.set_message(Some(Part::Body));
                let verdict = self.call(wanted, Event::Body, |f, m| f.body(&chunk, m));
                self.answer_message(options, Event::Body, verdict, out);
            }
            Command::EndOfMessage(last_chunk) => {
                if !last_chunk.is_empty() && wanted.contains(Event::Body) {
                    // A final chunk inside `E` is body, and gets no reply of
                    // its own.
                    let _ = self.filter.body(&last_chunk, &self.macros);
                }
                let result = self.filter.end_of_message(&self.macros);
                let leading_space = options.header_leading_space();
                if let Some(m) = result
                    .modifications
                    .iter()
                    .find(|m| !options.actions.contains(m.action()))
                {
                    tracing::error!(
                        modification = ?m.action(),
                        "filter asked for a modification that was not negotiated; answering tempfail"
                    );
                    out.push(Reply::Tempfail);
                } else {
                    out.extend(
                        result
                            .modifications
                            .into_iter()
                            .map(|m| m.into_reply(leading_space)),
                    );
                    out.push(result.verdict.into());
                }
                self.set_message(None);
                self.macros.forget_from(Stage::Mail);
            }
            Command::Abort => self.end_transaction(),
            Command::Quit => {
                self.end_transaction();
                self.filter.close();
                self.state = State::Closed;
                return Ok(Flow::Close);
            }
            Command::QuitNewConnection => {
                self.end_transaction();
                self.filter.close();
                self.macros.clear();
            }
        }
        Ok(Flow::Continue)
    }

    fn negotiate(&mut self, command: Command, out: &mut Vec<Reply>) -> Result<Flow, ProtocolError> {
        let offer: Offer = match command {
            Command::Negotiate(offer) => offer,
            Command::Quit => {
                self.state = State::Closed;
                return Ok(Flow::Close);
            }
            other => return Err(ProtocolError::BeforeNegotiation(other.code())),
        };
        let needs: Needs = self.filter.needs();
        let options = negotiate(&offer, &needs)?;
        let macros = if options.actions.contains(Actions::SET_MACRO_LIST) {
            needs
                .macros
                .iter()
                .filter(|(stage, _)| stage.request_index().is_some())
                .map(|(stage, names)| (*stage, names.join(" ")))
                .collect()
        } else {
            Vec::new()
        };
        out.push(Reply::Negotiate {
            version: options.version,
            actions: options.actions,
            protocol: options.protocol,
            macros,
        });
        self.state = State::Open {
            options,
            wanted: needs.events,
            message: None,
        };
        Ok(Flow::Continue)
    }

    /// Call the filter for an event it asked for; "continue" for the rest.
    fn call(
        &mut self,
        wanted: EventSet,
        event: Event,
        f: impl FnOnce(&mut F, &Macros) -> Verdict,
    ) -> Verdict {
        if wanted.contains(event) {
            f(&mut self.filter, &self.macros)
        } else {
            Verdict::Continue
        }
    }

    /// Push the filter's verdict on a message event, if the MTA waits for
    /// one; anything but "continue" sent back is the message's final
    /// answer.
    fn answer_message(
        &mut self,
        options: Negotiated,
        event: Event,
        verdict: Verdict,
        out: &mut Vec<Reply>,
    ) {
        let verdict = sendable(options, event, verdict);
        let is_final =
            !matches!(verdict, Verdict::Continue | Verdict::Skip) && options.expects_reply(event);
        answer(options, event, verdict, out);
        if is_final {
            self.set_message(Some(Part::Answered));
        }
    }

    fn set_message(&mut self, part: Option<Part>) {
        if let State::Open { message, .. } = &mut self.state {
            *message = part;
        }
    }

    /// Abort the open transaction, if any: the filter forgets it, and so do
    /// the macros of MAIL and later.
    fn end_transaction(&mut self) {
        if self.message_open() {
            self.filter.abort();
            self.set_message(None);
        }
        self.macros.forget_from(Stage::Mail);
    }
}

/// The verdict as the MTA may receive it: "skip" only to a body chunk and
/// only when the MTA offered it; "continue" otherwise.
fn sendable(options: Negotiated, event: Event, verdict: Verdict) -> Verdict {
    match verdict {
        Verdict::Skip
            if event != Event::Body || !options.protocol.contains(ProtocolFlags::SKIP) =>
        {
            Verdict::Continue
        }
        other => other,
    }
}

/// Push the filter's verdict, if the MTA waits for one.
fn answer(options: Negotiated, event: Event, verdict: Verdict, out: &mut Vec<Reply>) {
    let verdict = sendable(options, event, verdict);
    if options.expects_reply(event) {
        out.push(verdict.into());
    } else if !matches!(verdict, Verdict::Continue | Verdict::Skip) {
        tracing::warn!(
            ?event,
            ?verdict,
            "filter answered an event negotiated as \"no reply\"; the answer is dropped"
        );
    }
}

/// Postfix strips exactly one leading space when HDR_LEADSPC is off.
fn with_leading_space(value: &Bytes) -> Bytes {
    let mut v = BytesMut::with_capacity(value.len() + 1);
    v.extend_from_slice(b" ");
    v.extend_from_slice(value);
    v.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ClientAddress, SmtpReply};
    use crate::filter::{EndOfMessage, Modification};
    use crate::options::{Actions, ProtocolFlags};

    /// Records every call; inserts a header at end of message.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        needs_replies: Vec<Event>,
        reject_rcpt: bool,
        reject_end_of_headers: bool,
        skip_body: bool,
    }

    impl Filter for Recorder {
        fn needs(&self) -> Needs {
            Needs::seeing(EventSet::ALL)
                .answering(EventSet::of(&self.needs_replies))
                .modifying(Actions::ADD_HEADERS)
                .with_macros(Stage::Mail, &["{auth_type}", "i"])
        }
        fn connect(&mut self, client: &Client, macros: &Macros) -> Verdict {
            self.calls.push(format!(
                "connect {:?} j={:?}",
                client.address.ip(),
                macros.get_str("j")
            ));
            Verdict::Continue
        }
        fn mail(&mut self, sender: &[u8], _: &[Bytes], macros: &Macros) -> Verdict {
            self.calls.push(format!(
                "mail {} auth={:?}",
                String::from_utf8_lossy(sender),
                macros.get_str("auth_type")
            ));
            Verdict::Continue
        }
        fn rcpt(&mut self, r: &[u8], _: &[Bytes], _: &Macros) -> Verdict {
            self.calls
                .push(format!("rcpt {}", String::from_utf8_lossy(r)));
            if self.reject_rcpt {
                Verdict::Smtp(SmtpReply {
                    code: 550,
                    status: Some("5.7.1".into()),
                    text: "no".into(),
                })
            } else {
                Verdict::Continue
            }
        }
        fn header(&mut self, n: &[u8], v: &[u8], _: &Macros) -> Verdict {
            self.calls.push(format!(
                "header {}:{}",
                String::from_utf8_lossy(n),
                String::from_utf8_lossy(v)
            ));
            Verdict::Continue
        }
        fn end_of_headers(&mut self, _: &Macros) -> Verdict {
            self.calls.push("eoh".into());
            if self.reject_end_of_headers {
                Verdict::Reject
            } else {
                Verdict::Continue
            }
        }
        fn body(&mut self, chunk: &[u8], _: &Macros) -> Verdict {
            self.calls
                .push(format!("body {}", String::from_utf8_lossy(chunk)));
            if self.skip_body {
                Verdict::Skip
            } else {
                Verdict::Continue
            }
        }
        fn end_of_message(&mut self, macros: &Macros) -> EndOfMessage {
            self.calls.push(format!("eom i={:?}", macros.get_str("i")));
            EndOfMessage {
                modifications: vec![Modification::InsertHeader {
                    index: 0,
                    name: Bytes::from_static(b"X-Test"),
                    value: Bytes::from_static(b" yes"),
                }],
                verdict: Verdict::Continue,
            }
        }
        fn abort(&mut self) {
            self.calls.push("abort".into());
        }
        fn close(&mut self) {
            self.calls.push("close".into());
        }
    }

    fn offer(version: u32) -> Command {
        let protocol = if version == 2 { 0x7f } else { 0x1f_ffff };
        Command::Negotiate(Offer {
            version,
            actions: Actions::from_bits_retain(0x1ff),
            protocol: ProtocolFlags::from_bits_retain(protocol),
        })
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn run(session: &mut Session<Recorder>, commands: Vec<Command>) -> Vec<Vec<Reply>> {
        commands
            .into_iter()
            .map(|c| {
                let mut out = Vec::new();
                session.handle(c, &mut out).unwrap();
                out
            })
            .collect()
    }

    fn message(sender: &'static str) -> Vec<Command> {
        vec![
            Command::Macros {
                stage: Stage::Mail,
                pairs: vec![(b("{auth_type}"), b("PLAIN"))],
            },
            Command::Mail {
                sender: b(sender),
                args: vec![],
            },
            Command::Rcpt {
                recipient: b("<r@example.org>"),
                args: vec![],
            },
            Command::Data,
            Command::Header {
                name: b("Subject"),
                value: b("hi"),
            },
            Command::EndOfHeaders,
            Command::Body(b("body\r\n")),
            Command::Macros {
                stage: Stage::EndOfMessage,
                pairs: vec![(b("i"), b("QID"))],
            },
            Command::EndOfMessage(Bytes::new()),
        ]
    }

    #[test]
    fn skip_is_sent_only_to_a_body_chunk_the_mta_waits_for_and_only_if_offered() {
        let body_reply = |needs_replies: Vec<Event>, protocol: u32| {
            let mut s = Session::new(Recorder {
                needs_replies,
                skip_body: true,
                ..Recorder::default()
            });
            let mut commands = vec![Command::Negotiate(Offer {
                version: 6,
                actions: Actions::from_bits_retain(0x1ff),
                protocol: ProtocolFlags::from_bits_retain(protocol),
            })];
            commands.extend(message("<s@example.com>"));
            let replies = run(&mut s, commands);
            assert!(!s.in_transaction(), "skip is not an answer to the message");
            // The replies to the body chunk and to end of message.
            (replies[7].clone(), replies[9].last().cloned())
        };
        let everything = 0x1f_ffff;
        let (body, end) = body_reply(vec![Event::Body], everything);
        assert_eq!(body, [Reply::Skip]);
        assert_eq!(end, Some(Reply::Continue), "the message goes on to its end");
        let (body, _) = body_reply(vec![Event::Body], everything & !ProtocolFlags::SKIP.bits());
        assert_eq!(body, [Reply::Continue], "not offered: continue");
        let (body, _) = body_reply(vec![], everything);
        assert!(
            body.is_empty(),
            "no reply to a body chunk negotiated as NR_BODY"
        );
    }

    #[test]
    fn a_stage_with_more_macro_bytes_than_the_cap_is_a_protocol_violation() {
        let mut s = Session::new(Recorder::default());
        run(&mut s, vec![offer(6)]);
        let value = Bytes::from(vec![b'v'; crate::macros::MAX_STAGE_BYTES]);
        let mut out = Vec::new();
        let result = s.handle(
            Command::Macros {
                stage: Stage::Mail,
                pairs: vec![(b("x"), value)],
            },
            &mut out,
        );
        assert!(
            matches!(result, Err(ProtocolError::MacrosTooLarge { bytes }) if bytes == 64 * 1024 + 1),
            "{result:?}"
        );
        // At the cap exactly is fine.
        let value = Bytes::from(vec![b'v'; crate::macros::MAX_STAGE_BYTES - 1]);
        let fits = s.handle(
            Command::Macros {
                stage: Stage::Mail,
                pairs: vec![(b("x"), value)],
            },
            &mut out,
        );
        assert!(fits.is_ok(), "{fits:?}");
    }

    #[test]
    fn version_two_answers_every_event_and_restores_the_stripped_space() {
        let mut s = Session::new(Recorder::default());
        let mut cmds = vec![
            offer(2),
            Command::Connect {
                hostname: b("localhost"),
                address: ClientAddress::Ip("127.0.0.1:0".parse().unwrap()),
            },
        ];
        cmds.extend(message("<a@example.com>"));
        let replies = run(&mut s, cmds);
        assert!(matches!(replies[0][0], Reply::Negotiate { version: 2, .. }));
        // connect, mail, rcpt, data, header, eoh, body: one Continue each;
        // macros: nothing.
        let counts: Vec<usize> = replies.iter().map(Vec::len).collect();
        assert_eq!(counts, vec![1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 2]);
        assert_eq!(
            replies[10],
            vec![
                Reply::InsertHeader {
                    index: 0,
                    name: b("X-Test"),
                    value: b("yes")
                },
                Reply::Continue
            ]
        );
        assert!(s.filter().calls.contains(&"header Subject: hi".to_string()));
        assert!(
            s.filter()
                .calls
                .contains(&"mail <a@example.com> auth=Some(\"PLAIN\")".to_string())
        );
        assert!(
            s.filter()
                .calls
                .contains(&"eom i=Some(\"QID\")".to_string())
        );
    }

    #[test]
    fn version_six_replies_only_where_the_filter_may_say_no() {
        let mut s = Session::new(Recorder {
            needs_replies: vec![Event::Rcpt],
            ..Recorder::default()
        });
        let mut cmds = vec![offer(6)];
        cmds.extend(message("<a@example.com>"));
        let replies = run(&mut s, cmds);
        let counts: Vec<usize> = replies.iter().map(Vec::len).collect();
        // negotiate, D, M, R (reply), T, L, N, B, D, E (header + continue)
        assert_eq!(counts, vec![1, 0, 0, 1, 0, 0, 0, 0, 0, 2]);
        assert_eq!(
            replies[9][0],
            Reply::InsertHeader {
                index: 0,
                name: b("X-Test"),
                value: b(" yes")
            },
            "with HDR_LEADSPC the value goes out verbatim"
        );
    }

    #[test]
    fn abort_resets_the_message_and_keeps_the_connection() {
        let mut s = Session::new(Recorder::default());
        let mut cmds = vec![offer(6)];
        cmds.extend(message("<first@example.com>"));
        cmds.push(Command::Abort);
        cmds.extend(message("<second@example.com>"));
        cmds.push(Command::Abort);
        cmds.push(Command::Abort);
        run(&mut s, cmds);
        let eoms = s
            .filter()
            .calls
            .iter()
            .filter(|c| c.starts_with("eom"))
            .count();
        assert_eq!(eoms, 2);
        assert!(!s.in_transaction());
    }

    #[test]
    fn abort_mid_message_tells_the_filter_and_forgets_mail_macros() {
        let mut s = Session::new(Recorder::default());
        let mut cmds = vec![offer(6)];
        cmds.extend(message("<a@example.com>").into_iter().take(5));
        cmds.push(Command::Abort);
        cmds.push(Command::Mail {
            sender: b("<b@example.com>"),
            args: vec![],
        });
        run(&mut s, cmds);
        let calls = &s.filter().calls;
        assert!(calls.contains(&"abort".to_string()));
        assert_eq!(calls.last().unwrap(), "mail <b@example.com> auth=None");
    }

    #[test]
    fn an_answer_before_end_of_message_ends_the_transaction_in_flight() {
        let mut s = Session::new(Recorder {
            needs_replies: vec![Event::Rcpt, Event::EndOfHeaders],
            reject_rcpt: true,
            reject_end_of_headers: true,
            ..Recorder::default()
        });
        // Up to the rejected recipient: the message goes on.
        let mut cmds = vec![offer(6)];
        cmds.extend(message("<a@example.com>").into_iter().take(3));
        run(&mut s, cmds);
        assert!(
            s.in_transaction(),
            "a recipient's reject is not the message's"
        );
        // The rejected end of headers is the message's final answer.
        let replies = run(&mut s, message("<a@example.com>")[3..6].to_vec());
        assert_eq!(replies.last().unwrap(), &vec![Reply::Reject]);
        assert!(!s.in_transaction());
        // The filter still hears of the abort that follows.
        run(&mut s, vec![Command::Abort]);
        assert_eq!(s.filter().calls.last().unwrap(), "abort");
        // And the next message is a transaction again.
        run(&mut s, message("<b@example.com>")[..2].to_vec());
        assert!(s.in_transaction());
    }

    #[test]
    fn an_answer_the_mta_does_not_wait_for_leaves_the_transaction_in_flight() {
        let mut s = Session::new(Recorder {
            reject_end_of_headers: true,
            ..Recorder::default()
        });
        let mut cmds = vec![offer(6)];
        cmds.extend(message("<a@example.com>").into_iter().take(6));
        let replies = run(&mut s, cmds);
        assert!(replies.last().unwrap().is_empty());
        assert!(s.in_transaction());
    }

    #[test]
    fn quit_closes_and_nothing_is_accepted_after_it() {
        let mut s = Session::new(Recorder::default());
        run(&mut s, vec![offer(6)]);
        let mut out = Vec::new();
        assert_eq!(s.handle(Command::Quit, &mut out), Ok(Flow::Close));
        assert!(out.is_empty());
        assert_eq!(
            s.handle(Command::Abort, &mut out),
            Err(ProtocolError::AfterQuit('A'))
        );
    }

    #[test]
    fn quit_new_connection_starts_over_without_renegotiating() {
        let mut s = Session::new(Recorder::default());
        run(
            &mut s,
            vec![
                offer(6),
                Command::Macros {
                    stage: Stage::Connect,
                    pairs: vec![(b("j"), b("mx1"))],
                },
                Command::QuitNewConnection,
                Command::Connect {
                    hostname: b("h"),
                    address: ClientAddress::Unknown(Bytes::new()),
                },
            ],
        );
        assert_eq!(s.filter().calls, vec!["close", "connect None j=None"]);
        assert!(s.negotiated().is_some());
    }

    #[test]
    fn events_before_negotiation_are_refused() {
        let mut s = Session::new(Recorder::default());
        let mut out = Vec::new();
        assert_eq!(
            s.handle(Command::Abort, &mut out),
            Err(ProtocolError::BeforeNegotiation('A'))
        );
    }

    #[test]
    fn second_negotiation_is_refused() {
        let mut s = Session::new(Recorder::default());
        run(&mut s, vec![offer(6)]);
        assert_eq!(
            s.handle(offer(6), &mut Vec::new()),
            Err(ProtocolError::NegotiatedTwice)
        );
    }

    #[test]
    fn events_before_connect_are_accepted() {
        let mut s = Session::new(Recorder::default());
        let mut cmds = vec![offer(6)];
        cmds.extend(message("<a@example.com>"));
        let replies = run(&mut s, cmds);
        assert_eq!(replies.last().unwrap().last(), Some(&Reply::Continue));
    }

    #[test]
    fn header_after_end_of_headers_is_out_of_order() {
        let mut s = Session::new(Recorder::default());
        run(
            &mut s,
            vec![
                offer(6),
                Command::Mail {
                    sender: b("<a@b>"),
                    args: vec![],
                },
                Command::EndOfHeaders,
            ],
        );
        let err = s
            .handle(
                Command::Header {
                    name: b("X"),
                    value: b("y"),
                },
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::OutOfOrder { command: 'L', .. }
        ));
    }

    #[test]
    fn final_body_chunk_inside_end_of_message_reaches_the_filter() {
        let mut s = Session::new(Recorder::default());
        run(
            &mut s,
            vec![
                offer(6),
                Command::Mail {
                    sender: b("<a@b>"),
                    args: vec![],
                },
                Command::EndOfHeaders,
                Command::EndOfMessage(b("tail")),
            ],
        );
        assert!(s.filter().calls.contains(&"body tail".to_string()));
    }

    #[test]
    fn filter_verdicts_reach_the_mta() {
        let mut s = Session::new(Recorder {
            reject_rcpt: true,
            needs_replies: vec![Event::Rcpt],
            ..Recorder::default()
        });
        let replies = run(
            &mut s,
            vec![
                offer(6),
                Command::Mail {
                    sender: b("<a@b>"),
                    args: vec![],
                },
                Command::Rcpt {
                    recipient: b("<x@y>"),
                    args: vec![],
                },
            ],
        );
        assert!(matches!(&replies[2][0], Reply::ReplyCode(r) if r.code == 550));
    }

    #[test]
    fn macro_lists_are_requested_in_the_negotiation_reply() {
        let mut s = Session::new(Recorder::default());
        let replies = run(&mut s, vec![offer(6)]);
        match &replies[0][0] {
            Reply::Negotiate { macros, .. } => {
                assert_eq!(macros, &vec![(Stage::Mail, "{auth_type} i".to_string())]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    struct Overreaching;
    impl Filter for Overreaching {
        fn needs(&self) -> Needs {
            Needs::seeing(EventSet::ALL).modifying(Actions::ADD_HEADERS)
        }
        fn end_of_message(&mut self, _: &Macros) -> EndOfMessage {
            EndOfMessage {
                modifications: vec![Modification::DeleteRecipient(Bytes::from_static(b"x"))],
                verdict: Verdict::Continue,
            }
        }
    }

    #[test]
    fn unnegotiated_modification_turns_into_tempfail() {
        let mut s = Session::new(Overreaching);
        let mut out = Vec::new();
        s.handle(offer(6), &mut out).unwrap();
        out.clear();
        s.handle(Command::EndOfMessage(Bytes::new()), &mut out)
            .unwrap();
        assert_eq!(out, vec![Reply::Tempfail]);
    }
}
