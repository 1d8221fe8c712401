//! The DKIM signing filter: a [`milter::Filter`] that asks the [`Policy`]
//! whether to sign and has [`dkim`](crate::dkim) do it.
//!
//! One [`SigningFilter`] serves one milter connection. A transaction takes
//! the current policy when it starts (MAIL) and keeps it to the end, so a
//! reload never changes the rules halfway through a message. The decision
//! is made at end of headers: a message that will not be signed is
//! accepted there, which spares the MTA sending its body; one that will is
//! hashed as its body arrives and gets its `DKIM-Signature` fields at end of
//! message. Every message gets exactly one log line saying what happened
//! and why. This module never sees bytes on the wire.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::dkim::{HeaderBlock, MessageSigning, SIGNATURE_FIELD};
use crate::message_log::{ConnectionReport, Failure, not_signed_label};
use crate::policy::{
    Action, Answers, DataSetProblem, Decision, MacroLookup, MessageFacts, Policy, RemoteKey,
    RemoteProblem, TableSource, TrustedBy,
};
use crate::verifying::{Start, VerifyingMessage};
use milter::postfix::default_macros;
use milter::{
    Actions, Client, EndOfMessage, Event, EventSet, Filter, Macros, Modification, Needs, SmtpReply,
    Stage, Verdict,
};

/// The policy in force, replaced whole on reload.
#[derive(Debug)]
pub struct LivePolicy(ArcSwap<Policy>);

impl LivePolicy {
    pub fn new(policy: Policy) -> Self {
        LivePolicy(ArcSwap::from_pointee(policy))
    }

    pub fn current(&self) -> Arc<Policy> {
        self.0.load_full()
    }

    pub fn replace(&self, policy: Policy) {
        self.0.store(Arc::new(policy));
    }
}

impl MacroLookup for Macros {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get_str(name)
    }
}

/// Recipients kept per message (for DontSignMailTo), ten times Postfix's
/// `smtpd_recipient_limit` default: without a cap, a client sending RCPT
/// after RCPT would grow one message's memory without end. A message
/// with more is rejected at end of headers.
pub const MAX_RECIPIENTS: usize = 10_000;

/// Bytes of recipient addresses kept per message: with a frame of up to
/// 1 MiB each, the count alone would not bound memory. 10,000 addresses of
/// a hundred bytes fit.
pub const MAX_RECIPIENT_BYTES: usize = 1024 * 1024;

/// A message in progress.
enum Message {
    /// No transaction open.
    Idle,
    /// Envelope and headers are arriving; the decision is at end of headers.
    Collecting(Collecting),
    /// Signing: the body is being hashed.
    Signing(Signing),
    /// Not signed, verified instead (Mode has v): the body is being hashed
    /// and the key lookups are running.
    Verifying(Box<VerifyingMessage>),
    /// Answered already (accepted unsigned, or failed); ignore the rest.
    Done,
}

struct Collecting {
    policy: Arc<Policy>,
    /// When the MAIL command came; reset at the first header field, so the
    /// time taken is ours and not the SMTP client's DATA transfer.
    started: Instant,
    recipients: Vec<String>,
    headers: HeaderBlock,
    /// Header bytes beyond MaximumHeaders were dropped.
    overflowed: bool,
    /// Bytes of `recipients`.
    recipient_bytes: usize,
    /// Recipients beyond [`MAX_RECIPIENTS`] or [`MAX_RECIPIENT_BYTES`] were
    /// dropped.
    too_many_recipients: bool,
    /// The sender's keys from tables kept on a server, looked up just
    /// before end of headers ([`Filter::end_of_headers_ready`]).
    remote: Arc<OnceLock<Result<Vec<RemoteKey>, RemoteProblem>>>,
    /// The answers of the other data sets kept on a server, asked at the
    /// same time.
    servers: Arc<OnceLock<Answers>>,
    /// ReplaceHeaders kept on a server: the names (as written) of the
    /// fields it lists among those the rules would rewrite, or why that is
    /// not known; asked first, just before end of headers.
    replace_answer: Arc<OnceLock<Result<Vec<String>, DataSetProblem>>>,
    /// The header block after ReplaceRules, when they change it; worked
    /// out once: with the ReplaceHeaders answer when that is asked of a
    /// server, else at end of headers ([`Collecting::signed_headers`]).
    replaced: Arc<OnceLock<Option<HeaderBlock>>>,
}

impl Collecting {
    /// The header block the signing decision reads and that is signed:
    /// after ReplaceRules when they change it, else the fields as received
    /// (which verification always keeps). Only at end of headers, when
    /// every field is in: the result is kept for the rest of the message.
    fn signed_headers(&self) -> &HeaderBlock {
        self.replaced
            .get_or_init(|| {
                let rules = self.policy.signature.replace_rules.as_ref()?;
                match self.replace_answer.get() {
                    Some(Ok(listed)) => rules.apply_listed(&self.headers, listed),
                    _ => rules.apply(&self.headers),
                }
            })
            .as_ref()
            .unwrap_or(&self.headers)
    }

    /// Why the ReplaceHeaders answer this message needs is not known
    /// (`None` when it is, or when nothing depends on it).
    fn replace_problem(&self) -> Option<DataSetProblem> {
        match self.replace_answer.get() {
            Some(Ok(_)) => None,
            Some(Err(problem)) => Some(problem.clone()),
            None => self
                .policy
                .replace_lookup(&self.headers)
                .map(|_| DataSetProblem::NotLookedUp("ReplaceHeaders")),
        }
    }

    /// What the decision reads, with `headers`, kept for lookups that run
    /// after the callback returned.
    fn owned_facts(
        &self,
        client_host: &str,
        client_ip: Option<IpAddr>,
        macros: &Macros,
        headers: &HeaderBlock,
    ) -> OwnedFacts {
        OwnedFacts {
            client_host: client_host.to_string(),
            client_ip,
            macros: macros.clone(),
            recipients: self.recipients.clone(),
            headers: headers.clone(),
        }
    }
}

struct Signing {
    policy: Arc<Policy>,
    started: Instant,
    sender: String,
    trusted_by: TrustedBy,
    headers: HeaderBlock,
    signing: MessageSigning,
}

/// The DKIM signing filter for one milter connection.
pub struct SigningFilter {
    live: Arc<LivePolicy>,
    client_host: String,
    client_ip: Option<IpAddr>,
    message: Message,
    /// Each message's log line and metrics.
    report: ConnectionReport,
}

impl SigningFilter {
    pub fn new(live: Arc<LivePolicy>) -> Self {
        Self::with_report(live, ConnectionReport::default())
    }

    /// A filter whose messages are reported through `report` (log
    /// settings, metrics).
    pub fn with_report(live: Arc<LivePolicy>, report: ConnectionReport) -> Self {
        SigningFilter {
            live,
            client_host: String::new(),
            client_ip: None,
            message: Message::Idle,
            report,
        }
    }

    /// Open a transaction if the MTA skipped MAIL.
    fn collecting(&mut self) -> Option<&mut Collecting> {
        if matches!(self.message, Message::Idle) {
            self.message = Message::Collecting(Collecting {
                policy: self.live.current(),
                started: Instant::now(),
                recipients: Vec::new(),
                headers: HeaderBlock::new(),
                overflowed: false,
                recipient_bytes: 0,
                too_many_recipients: false,
                remote: Arc::new(OnceLock::new()),
                servers: Arc::new(OnceLock::new()),
                replace_answer: Arc::new(OnceLock::new()),
                replaced: Arc::new(OnceLock::new()),
            });
        }
        match &mut self.message {
            Message::Collecting(c) => Some(c),
            _ => None,
        }
    }
}

impl Filter for SigningFilter {
    fn needs(&self) -> Needs {
        let policy = self.live.current();
        let with_macro_list = |base: &[&str]| {
            let mut names: Vec<String> = base.iter().map(ToString::to_string).collect();
            for rule in &policy.trust.macros {
                let braced = format!("{{{}}}", rule.name);
                let name = if rule.name.len() == 1 {
                    rule.name.clone()
                } else {
                    braced
                };
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            names
        };
        // Verification removes forged Authentication-Results fields and may
        // quarantine (On-* quarantine).
        let actions = if policy.mode.verify && policy.verification.is_some() {
            Actions::ADD_HEADERS | Actions::CHANGE_HEADERS | Actions::QUARANTINE
        } else {
            Actions::ADD_HEADERS
        };
        let needs = Needs::seeing(EventSet::of(&[
            Event::Connect,
            Event::Mail,
            Event::Rcpt,
            Event::Header,
            Event::EndOfHeaders,
            Event::Body,
        ]))
        .answering(EventSet::of(&[Event::Connect, Event::EndOfHeaders]))
        .modifying(actions);
        // Postfix's defaults, asked for explicitly (asking for any list
        // replaces its defaults for every stage), without HELO's TLS
        // macros, which nothing here uses.
        Stage::REQUESTABLE.into_iter().fold(needs, |needs, stage| {
            let base = match stage {
                Stage::Helo => &[][..],
                _ => default_macros(stage),
            };
            let names = with_macro_list(base);
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            needs.with_macros(stage, &names)
        })
    }

    fn connect(&mut self, client: &Client, _macros: &Macros) -> Verdict {
        self.client_host = String::from_utf8_lossy(&client.hostname).into_owned();
        self.client_ip = client.address.ip();
        let policy = self.live.current();
        // A PeerList kept on a server is asked at end of headers, with the
        // message's other lookups: connect has no room to wait.
        if let Some(TableSource::Local(peers)) = &policy.trust.peers
            && peers.matches_peer(Some(&self.client_host), self.client_ip)
        {
            tracing::info!(
                client = %self.client_host,
                ip = ?self.client_ip,
                "client is in PeerList: accepted without signing"
            );
            return Verdict::Accept;
        }
        Verdict::Continue
    }

    fn mail(&mut self, _sender: &[u8], _args: &[Bytes], _macros: &Macros) -> Verdict {
        self.message = Message::Idle;
        self.collecting();
        Verdict::Continue
    }

    fn rcpt(&mut self, recipient: &[u8], _args: &[Bytes], _macros: &Macros) -> Verdict {
        if let Some(c) = self.collecting() {
            if c.recipients.len() >= MAX_RECIPIENTS
                || c.recipient_bytes + recipient.len() > MAX_RECIPIENT_BYTES
            {
                c.too_many_recipients = true;
                return Verdict::Continue;
            }
            c.recipient_bytes += recipient.len();
            let r = String::from_utf8_lossy(recipient);
            c.recipients
                .push(r.trim_start_matches('<').trim_end_matches('>').to_string());
        }
        Verdict::Continue
    }

    fn header(&mut self, name: &[u8], value: &[u8], _macros: &Macros) -> Verdict {
        if let Some(c) = self.collecting() {
            if c.headers.is_empty() && !c.overflowed {
                c.started = Instant::now();
            }
            if c.headers.byte_size() + name.len() + value.len() > c.policy.max_header_bytes
                || c.headers.len() >= c.policy.max_header_count
            {
                c.overflowed = true;
            } else {
                c.headers.push_copy(name, value);
            }
        }
        Verdict::Continue
    }

    fn end_of_headers(&mut self, macros: &Macros) -> Verdict {
        let Some(_) = self.collecting() else {
            return Verdict::Continue;
        };
        let Message::Collecting(c) = std::mem::replace(&mut self.message, Message::Done) else {
            unreachable!("collecting() returned Some")
        };
        let queue_id = macros.get_str("i").unwrap_or("-");
        if c.overflowed {
            // OpenDKIM's On-Security when verifying; a plain reject otherwise.
            let action = match &c.policy.verification {
                Some(v) if c.policy.mode.verify => v.actions.security.unwrap_or(Action::Reject),
                _ => Action::Reject,
            };
            self.report.failed(
                queue_id,
                None,
                Failure::HeadersTooLarge,
                &format_args!(
                    "the header block is larger than MaximumHeaders ({} bytes) or has more than \
                     {} fields",
                    c.policy.max_header_bytes, c.policy.max_header_count
                ),
                action,
                c.started.elapsed(),
            );
            return match action {
                Action::Reject => Verdict::Smtp(SmtpReply {
                    code: 552,
                    status: Some("5.3.4".into()),
                    text: "Message header block too large".into(),
                }),
                Action::Tempfail | Action::Quarantine => Verdict::Smtp(SmtpReply {
                    code: 452,
                    status: Some("4.3.4".into()),
                    text: "Message header block too large, try again later".into(),
                }),
                Action::Accept => Verdict::Accept,
                Action::Discard => Verdict::Discard,
            };
        }
        if c.too_many_recipients {
            self.report.failed(
                queue_id,
                None,
                Failure::TooManyRecipients,
                &format_args!(
                    "more than {MAX_RECIPIENTS} recipients or {MAX_RECIPIENT_BYTES} bytes of them; rejected"
                ),
                Action::Reject,
                c.started.elapsed(),
            );
            return Verdict::Smtp(SmtpReply {
                code: 552,
                status: Some("5.5.3".into()),
                text: "Too many recipients".into(),
            });
        }
        let facts = MessageFacts {
            client_host: &self.client_host,
            client_ip: self.client_ip,
            macros,
            recipients: &c.recipients,
            headers: c.signed_headers(),
            remote: c.remote.get(),
            servers: c.servers.get(),
        };
        let mut decision = c.policy.decide(&facts);
        if let Some(problem) = c.replace_problem() {
            decision = c
                .policy
                .without_replace_answer(decision, &c.headers, problem);
        }
        match decision {
            Decision::Sign {
                sender,
                trusted_by,
                requests,
            } => {
                self.message = Message::Signing(Signing {
                    policy: c.policy,
                    started: c.started,
                    sender,
                    trusted_by,
                    headers: match Arc::try_unwrap(c.replaced) {
                        Ok(replaced) => replaced.into_inner().flatten(),
                        // Still shared with a lookup's future: the fields
                        // are shared bytes, so the copy is cheap.
                        Err(shared) => shared.get().cloned().flatten(),
                    }
                    .unwrap_or(c.headers),
                    signing: MessageSigning::new(requests),
                });
                Verdict::Continue
            }
            Decision::NotSigned(reason) => {
                // Mode v: verify what we do not sign. Exempt domains, and
                // mail we would sign but for DontSignMailTo, are left alone
                // and accepted now, as OpenDKIM leaves them.
                if let Some(verification) = &c.policy.verification
                    && c.policy.mode.verify
                    && !matches!(
                        reason,
                        crate::policy::NotSigned::ExemptDomain { .. }
                            | crate::policy::NotSigned::RecipientExcluded { .. }
                            | crate::policy::NotSigned::Peer { .. }
                    )
                {
                    let label = not_signed_label(&reason);
                    return match VerifyingMessage::start(
                        verification,
                        c.headers,
                        macros,
                        label,
                        c.started,
                        c.policy.errors.internal_error,
                    ) {
                        Start::Verify(v) => {
                            self.message = Message::Verifying(v);
                            Verdict::Continue
                        }
                        Start::Answered(verdict) => verdict,
                    };
                }
                self.report
                    .not_signed(queue_id, &reason, c.started.elapsed());
                Verdict::Accept
            }
            Decision::KeyUnavailable { sender, error } => {
                let action = c.policy.errors.key_error;
                self.report.failed(
                    queue_id,
                    Some(&sender),
                    Failure::KeyUnavailable,
                    &error,
                    action,
                    c.started.elapsed(),
                );
                verdict_for(action, "signing key unavailable")
            }
            Decision::DataSetUnavailable { sender, error } => {
                let action = c.policy.errors.internal_error;
                self.report.failed(
                    queue_id,
                    Some(&sender),
                    Failure::DataSetUnavailable,
                    &error,
                    action,
                    c.started.elapsed(),
                );
                verdict_for(action, "data set unavailable")
            }
        }
    }

    fn body(&mut self, chunk: &[u8], _macros: &Macros) -> Verdict {
        match &mut self.message {
            Message::Signing(s) => s.signing.body(chunk),
            Message::Verifying(v) if v.wants_body() => v.body(chunk),
            // Nothing needs the body: the MTA may stop sending it, as
            // OpenDKIM lets it for a message with no signature to check.
            Message::Verifying(_) => return Verdict::Skip,
            _ => {}
        }
        Verdict::Continue
    }

    fn end_of_message(&mut self, macros: &Macros) -> EndOfMessage {
        let queue_id = macros.get_str("i").unwrap_or("-");
        let message = std::mem::replace(&mut self.message, Message::Idle);
        let s = match message {
            Message::Signing(s) => s,
            Message::Verifying(v) => return v.finish(macros),
            _ => return EndOfMessage::verdict(Verdict::Continue),
        };
        match s.signing.finish(&s.headers, unix_time()) {
            Ok(signatures) => {
                self.report.signed(
                    queue_id,
                    &s.sender,
                    &s.trusted_by,
                    &signatures,
                    s.started.elapsed(),
                );
                let mut modifications: Vec<Modification> = signatures
                    .into_iter()
                    .map(|sig| Modification::InsertHeader {
                        index: 0,
                        name: Bytes::from_static(SIGNATURE_FIELD.as_bytes()),
                        value: milter_folding(&sig.value),
                    })
                    .collect();
                if s.policy.software_header {
                    modifications.push(Modification::InsertHeader {
                        index: 0,
                        name: Bytes::from_static(b"DKIM-Filter"),
                        value: Bytes::from(format!(
                            " dkim-sidecar v{} {}",
                            env!("CARGO_PKG_VERSION"),
                            queue_id
                        )),
                    });
                }
                // ACCEPT, as OpenDKIM answers a signed message (its test
                // suite expects it); Postfix still runs later milters.
                EndOfMessage {
                    modifications,
                    verdict: Verdict::Accept,
                }
            }
            Err(error) => {
                let action = s.policy.errors.signing_error;
                self.report.failed(
                    queue_id,
                    Some(&s.sender),
                    Failure::SigningError,
                    &error,
                    action,
                    s.started.elapsed(),
                );
                EndOfMessage::verdict(verdict_for(action, "signing failed"))
            }
        }
    }

    /// Only an RSA signature is worth another thread: measured on two
    /// cores, moving Ed25519 signing off the connection thread costs more
    /// than the signing itself.
    fn offload_end_of_message(&self) -> bool {
        matches!(&self.message, Message::Signing(s) if s.signing.is_heavy())
    }

    /// Verification waits for its key lookups; signing never waits.
    fn end_of_message_ready(&self) -> Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> {
        match &self.message {
            Message::Verifying(v) => v.keys_ready(),
            _ => None,
        }
    }

    /// With data sets kept on a server, what this message's decision needs
    /// is looked up here (through the caches, so a cached answer costs no
    /// wait), so that the decision at end of headers has it: first
    /// ReplaceHeaders (the sender is read from the rewritten fields), then
    /// the sets that say whether to sign (host lists, MTA, ExemptDomains,
    /// DontSignMailTo), then the sender's KeyTable and SigningTable
    /// entries, only for a message that passes every other check.
    fn end_of_headers_ready(
        &self,
        macros: &Macros,
    ) -> Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> {
        let Message::Collecting(c) = &self.message else {
            return None;
        };
        if let Some(lookup) = c.policy.replace_lookup(&c.headers) {
            let policy = Arc::clone(&c.policy);
            let slot = Arc::clone(&c.replace_answer);
            let replaced = Arc::clone(&c.replaced);
            let remote = Arc::clone(&c.remote);
            let servers = Arc::clone(&c.servers);
            // The fields as received: the answer says which to rewrite,
            // and the rewritten block is kept for end of headers.
            let mut owned = c.owned_facts(&self.client_host, self.client_ip, macros, &c.headers);
            return Some(Box::pin(async move {
                let answer = lookup.ask().await;
                if let (Ok(listed), Some(rules)) = (&answer, &policy.signature.replace_rules) {
                    let rewritten = rules.apply_listed(&owned.headers, listed);
                    if let Some(block) = &rewritten {
                        owned.headers = block.clone();
                    }
                    let _ = replaced.set(rewritten);
                }
                let _ = slot.set(answer);
                if !policy.asks_servers() {
                    return;
                }
                let more =
                    server_lookups(&policy, &owned.facts(), || owned.clone(), remote, servers);
                if let Some(more) = more {
                    more.await;
                }
            }));
        }
        if !c.policy.asks_servers() {
            return None;
        }
        let facts = MessageFacts {
            client_host: &self.client_host,
            client_ip: self.client_ip,
            macros,
            recipients: &c.recipients,
            headers: c.signed_headers(),
            remote: None,
            servers: None,
        };
        server_lookups(
            &c.policy,
            &facts,
            || {
                c.owned_facts(
                    &self.client_host,
                    self.client_ip,
                    macros,
                    c.signed_headers(),
                )
            },
            Arc::clone(&c.remote),
            Arc::clone(&c.servers),
        )
    }

    fn abort(&mut self) {
        self.message = Message::Idle;
    }

    fn close(&mut self) {
        self.message = Message::Idle;
        self.client_host.clear();
        self.client_ip = None;
    }
}

/// What the decision reads about a message, kept for a lookup that runs
/// after the callback returned.
#[derive(Clone)]
struct OwnedFacts {
    client_host: String,
    client_ip: Option<IpAddr>,
    macros: Macros,
    recipients: Vec<String>,
    headers: HeaderBlock,
}

impl OwnedFacts {
    fn facts(&self) -> MessageFacts<'_> {
        MessageFacts {
            client_host: &self.client_host,
            client_ip: self.client_ip,
            macros: &self.macros,
            recipients: &self.recipients,
            headers: &self.headers,
            remote: None,
            servers: None,
        }
    }
}

/// The lookups of the sets kept on a server (other than ReplaceHeaders)
/// that the decision for `facts` needs, as one future: the sets asked
/// per message at once, then the sender's KeyTable and SigningTable
/// entries with their answers (a peer or an exempt domain needs none).
/// `None` when nothing is to be asked.
fn server_lookups(
    policy: &Arc<Policy>,
    facts: &MessageFacts<'_>,
    owned: impl FnOnce() -> OwnedFacts,
    remote: Arc<OnceLock<Result<Vec<RemoteKey>, RemoteProblem>>>,
    servers: Arc<OnceLock<Answers>>,
) -> Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> {
    let queries = policy.server_queries(facts);
    if queries.is_empty() {
        let (signing, sender, multiple) = policy.remote_lookup(facts)?;
        return Some(Box::pin(async move {
            let keys = signing.resolve(&sender, multiple).await;
            let _ = remote.set(keys);
        }));
    }
    // The key lookup waits for the answers, so the facts go along.
    let keys = policy
        .signing
        .remote
        .is_some()
        .then(|| (Arc::clone(policy), remote, owned()));
    Some(Box::pin(async move {
        let answers = queries.ask().await;
        if let Some((policy, slot, owned)) = keys {
            let lookup = policy.remote_lookup(&MessageFacts {
                servers: Some(&answers),
                ..owned.facts()
            });
            if let Some((signing, sender, multiple)) = lookup {
                let _ = slot.set(signing.resolve(&sender, multiple).await);
            }
        }
        let _ = servers.set(answers);
    }))
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The answer to the MTA for an error, per the configured On-* action.
fn verdict_for(action: Action, what: &str) -> Verdict {
    match action {
        Action::Accept => Verdict::Accept,
        Action::Discard => Verdict::Discard,
        Action::Reject => Verdict::Smtp(SmtpReply {
            code: 550,
            status: Some("5.7.1".into()),
            text: format!("DKIM {what}"),
        }),
        // A bare TEMPFAIL, as OpenDKIM answers when it cannot sign (its
        // test suite expects exactly that); the MTA says "try again later"
        // and the log line says why. Quarantine needs a modification at end
        // of message; a tempfail keeps the message in the MTA's queue.
        Action::Quarantine | Action::Tempfail => Verdict::Tempfail,
    }
}

/// A field value folded as the milter protocol wants it: Postfix takes
/// folded values with bare LF and would turn a CRLF into `\r\r\n`.
fn milter_folding(value: &str) -> Bytes {
    Bytes::from(value.replace("\r\n", "\n"))
}
