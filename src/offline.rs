//! Signing a message from a file (`dkim-sidecar sign`) through the very code
//! the milter runs.
//!
//! The message is cut into the events Postfix would send (negotiation,
//! connect, macros, MAIL, RCPT, one event per header field with folded
//! lines joined by bare LF, the body in 64 KiB chunks, end of message) and
//! fed to a [`Session`] driving a [`SigningFilter`], so the decision, the
//! signature and the header placement are exactly the milter's. The
//! inserted fields are then written in front of the message, which is
//! otherwise copied byte for byte. This module only simulates an MTA; it
//! must not sign or decide anything itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;

use crate::policy::Policy;
use crate::signing::{LivePolicy, SigningFilter};
use milter::options::{Actions, Offer, ProtocolFlags};
use milter::{ClientAddress, Command, Filter as _, Reply, Session, Stage};

/// The envelope the simulated MTA presents.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub client_ip: IpAddr,
    /// MAIL FROM; the From: address when not given.
    pub sender: Option<String>,
    pub recipients: Vec<String>,
    /// Present the message as submitted with SMTP AUTH.
    pub authenticated: bool,
}

/// What happened to the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Signed: the message with its new header fields.
    Signed(Vec<u8>),
    /// Not signed (the reason was logged); the message is unchanged.
    NotSigned,
    /// The filter answered with an error (tempfail, reject).
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("the message has no header/body separator and no header fields")]
    NotAMessage,
    #[error("milter protocol error while signing: {0}")]
    Protocol(#[from] milter::ProtocolError),
    #[error("cannot start the runtime for DNS lookups: {0}")]
    Runtime(String),
}

/// Run `message` through the milter session with `policy`.
pub fn sign(policy: Policy, message: &[u8], envelope: &Envelope) -> Result<Outcome, OfflineError> {
    let parsed = Parsed::new(message).ok_or(OfflineError::NotAMessage)?;
    let replies = match run_session(policy, postfix_events(&parsed, envelope))? {
        Run::Answered(outcome) => return Ok(outcome),
        Run::Ended(replies) => replies,
    };
    // At end of message ACCEPT is the filter's normal answer after its
    // modifications (OpenDKIM's too); only a refusal changes the outcome.
    if let Some(outcome) = early_answer(&replies).filter(|o| !matches!(o, Outcome::NotSigned)) {
        return Ok(outcome);
    }

    let inserted: Vec<(Bytes, Bytes)> = replies
        .iter()
        .filter_map(|r| match r {
            Reply::InsertHeader { name, value, .. } => Some((name.clone(), value.clone())),
            _ => None,
        })
        .collect();
    if inserted.is_empty() {
        return Ok(Outcome::NotSigned);
    }
    // Every insert is at index 0, so each later one lands above the others.
    let newline: &[u8] = if parsed.crlf { b"\r\n" } else { b"\n" };
    let mut out = Vec::with_capacity(message.len() + 1024);
    for (name, value) in inserted.iter().rev() {
        out.extend_from_slice(name);
        out.push(b':');
        for line in value.split(|&b| b == b'\n') {
            if !out.ends_with(b":") {
                out.extend_from_slice(newline);
            }
            out.extend_from_slice(line);
        }
        out.extend_from_slice(newline);
    }
    out.extend_from_slice(message);
    Ok(Outcome::Signed(out))
}

/// A final answer before end of message: accepted unsigned, or refused.
fn early_answer(replies: &[Reply]) -> Option<Outcome> {
    replies.iter().find_map(|r| match r {
        Reply::Accept => Some(Outcome::NotSigned),
        Reply::Tempfail => Some(Outcome::Refused("tempfail".into())),
        Reply::Reject => Some(Outcome::Refused("reject".into())),
        Reply::ReplyCode(reply) => Some(Outcome::Refused(format!(
            "{} {} {}",
            reply.code,
            reply.status.as_deref().unwrap_or(""),
            reply.text
        ))),
        _ => None,
    })
}

/// How a simulated transaction ended.
pub(crate) enum Run {
    /// The filter gave a final answer (accept, tempfail, reject, a reply
    /// code) before end of message.
    Answered(Outcome),
    /// End of message was reached; its replies.
    Ended(Vec<Reply>),
}

/// Feeds `events` to a [`Session`] driving a [`SigningFilter`] on `policy`,
/// as the milter server does: lookups the filter starts run on a runtime
/// of this call's own, and end of headers and end of message wait for them
/// ([`milter::Filter::end_of_headers_ready`],
/// [`milter::Filter::end_of_message_ready`]). Stops at the first final
/// answer before end of message, as Postfix would.
pub(crate) fn run_session(policy: Policy, events: Vec<Command>) -> Result<Run, OfflineError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OfflineError::Runtime(e.to_string()))?;
    let _inside = runtime.enter();
    let live = Arc::new(LivePolicy::new(policy));
    let mut session = Session::new(SigningFilter::new(live));
    let mut replies = Vec::new();
    for event in events {
        let ready = match &event {
            Command::EndOfHeaders => session.filter().end_of_headers_ready(session.macros()),
            Command::EndOfMessage(_) => session.filter().end_of_message_ready(),
            _ => None,
        };
        if let Some(ready) = ready {
            runtime.block_on(ready);
        }
        let end = matches!(event, Command::EndOfMessage(_));
        replies.clear();
        session.handle(event, &mut replies)?;
        if end {
            return Ok(Run::Ended(replies));
        }
        if let Some(outcome) = early_answer(&replies) {
            return Ok(Run::Answered(outcome));
        }
    }
    Ok(Run::Ended(replies))
}

/// What Postfix sends a milter for this message with `milter_protocol = 6`:
/// negotiation, connect, MAIL with its macros, RCPT for each recipient,
/// DATA, one event per header field, end of headers, the body in 64 KiB
/// chunks, end of message.
pub(crate) fn postfix_events(parsed: &Parsed, envelope: &Envelope) -> Vec<Command> {
    let macros = |stage: Stage, pairs: &[(&str, String)]| Command::Macros {
        stage,
        pairs: pairs
            .iter()
            .map(|(n, v)| (Bytes::from(n.to_string()), Bytes::from(v.clone())))
            .collect(),
    };
    // Postfix names a client without a host name `[address]`; its local
    // submission (sendmail) comes from `localhost`.
    let hostname = if envelope.client_ip.is_loopback() {
        "localhost".to_string()
    } else {
        format!("[{}]", envelope.client_ip)
    };
    let mut mail_macros = vec![("i", "OFFLINE".to_string())];
    if envelope.authenticated {
        mail_macros.push(("{auth_type}", "PLAIN".to_string()));
        mail_macros.push(("{auth_authen}", "offline".to_string()));
    }
    let mut events = vec![
        Command::Negotiate(Offer {
            version: 6,
            actions: Actions::from_bits_retain(0x1ff),
            protocol: ProtocolFlags::from_bits_retain(0x1f_ffff),
        }),
        macros(Stage::Connect, &[("j", "localhost".to_string())]),
        Command::Connect {
            hostname: Bytes::from(hostname),
            address: ClientAddress::Ip(SocketAddr::new(envelope.client_ip, 0)),
        },
        macros(Stage::Mail, &mail_macros),
        Command::Mail {
            sender: Bytes::from(format!("<{}>", envelope.sender.clone().unwrap_or_default())),
            args: vec![],
        },
    ];
    events.extend(envelope.recipients.iter().map(|r| Command::Rcpt {
        recipient: Bytes::from(format!("<{r}>")),
        args: vec![],
    }));
    events.push(Command::Data);
    events.extend(parsed.fields.iter().map(|(name, value)| Command::Header {
        name: name.clone(),
        value: value.clone(),
    }));
    events.push(Command::EndOfHeaders);
    events.extend(
        parsed
            .body
            .chunks(65535)
            .map(|chunk| Command::Body(Bytes::copy_from_slice(chunk))),
    );
    events.push(macros(Stage::EndOfMessage, &[("i", "OFFLINE".to_string())]));
    events.push(Command::EndOfMessage(Bytes::new()));
    events
}

/// A message cut into header fields (as the milter protocol carries them)
/// and a CRLF body.
pub(crate) struct Parsed {
    pub(crate) fields: Vec<(Bytes, Bytes)>,
    pub(crate) body: Vec<u8>,
    /// Whether the input used CRLF line ends (else bare LF).
    pub(crate) crlf: bool,
}

impl Parsed {
    pub(crate) fn new(message: &[u8]) -> Option<Parsed> {
        let crlf = message
            .iter()
            .position(|&b| b == b'\n')
            .is_some_and(|i| i > 0 && message[i - 1] == b'\r');
        let mut lines = message.split_inclusive(|&b| b == b'\n');
        let mut fields: Vec<(Bytes, Vec<u8>)> = Vec::new();
        let mut body_start = message.len();
        let mut offset = 0;
        for line in lines.by_ref() {
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            offset += line.len();
            if text.is_empty() {
                body_start = offset;
                break;
            }
            if matches!(text.first(), Some(b' ' | b'\t')) {
                // A folded continuation: Postfix joins with a bare LF.
                let (_, value) = fields.last_mut()?;
                value.push(b'\n');
                value.extend_from_slice(text);
            } else {
                let colon = text.iter().position(|&b| b == b':')?;
                // Postfix drops white space between the name and the colon.
                let name = text[..colon].trim_ascii_end();
                fields.push((Bytes::copy_from_slice(name), text[colon + 1..].to_vec()));
            }
        }
        if fields.is_empty() {
            return None;
        }
        let mut body = Vec::with_capacity(message.len() - body_start.min(message.len()) + 64);
        for line in message[body_start.min(message.len())..].split_inclusive(|&b| b == b'\n') {
            match line.strip_suffix(b"\n") {
                Some(text) => {
                    body.extend_from_slice(text.strip_suffix(b"\r").unwrap_or(text));
                    body.extend_from_slice(b"\r\n");
                }
                None => body.extend_from_slice(line),
            }
        }
        Some(Parsed {
            fields: fields
                .into_iter()
                .map(|(n, v)| (n, Bytes::from(v)))
                .collect(),
            body,
            crlf,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_cut_as_postfix_sends_them() {
        let p = Parsed::new(b"From: a@example.com\nTo: b,\n\tc\nSubject:x\n\nbody\nline").unwrap();
        assert_eq!(p.fields.len(), 3);
        assert_eq!(&p.fields[1].1[..], b" b,\n\tc");
        assert_eq!(&p.fields[2].1[..], b"x");
        assert_eq!(p.body, b"body\r\nline");
        assert!(!p.crlf);
    }

    #[test]
    fn crlf_input_is_recognised_and_body_kept() {
        let p = Parsed::new(b"From: a@example.com\r\n\r\nHi\r\n\r\n").unwrap();
        assert!(p.crlf);
        assert_eq!(p.body, b"Hi\r\n\r\n");
    }

    #[test]
    fn white_space_before_the_colon_is_not_part_of_the_name() {
        let p = Parsed::new(b"Subject \t: x\nFrom: a@b\n\n").unwrap();
        assert_eq!(&p.fields[0].0[..], b"Subject");
    }

    #[test]
    fn message_without_headers_is_refused() {
        assert!(Parsed::new(b"\nbody only\n").is_none());
        assert!(Parsed::new(b"no colon here\n\nbody").is_none());
    }
}

#[cfg(test)]
pub(crate) mod signing_tests {
    //! The whole milter path (session, filter, policy, dkim) on one message,
    //! checked by an independent verifier.

    use super::*;
    use crate::dkim::HeaderPolicy;
    use crate::keys::{LoadOptions, load_key_file};
    use crate::policy::{
        DomainKey, DomainSet, ErrorActions, Mode, SignatureSettings, Signing, TableSource, Trust,
    };
    use crate::tables::HostList;
    use mail_auth::dkim::Canonicalization;

    /// Domain example.com, the example RSA key, relaxed/simple.
    pub(crate) fn example_policy() -> Policy {
        let key_file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("keys-example/default.private");
        let key = load_key_file(
            &key_file,
            &LoadOptions {
                require_safe_keys: false,
                ..LoadOptions::default()
            },
        )
        .unwrap()
        .key;
        Policy {
            mode: Mode {
                sign: true,
                verify: false,
            },
            signing: Signing {
                domain_key: Some(DomainKey {
                    domains: TableSource::Local(DomainSet::from_names(["example.com"])),
                    selector: "default".into(),
                    key: Ok(key),
                    key_file,
                }),
                tables: None,
                remote: None,
                multiple_signatures: false,
                subdomains: false,
            },
            trust: Trust {
                internal_hosts: TableSource::Local(HostList::default_internal()),
                external_ignore: None,
                peers: None,
                macros: vec![],
                mta_names: TableSource::Local(vec![]),
            },
            sender_headers: vec!["from".into()],
            exempt_domains: None,
            dont_sign_mail_to: None,
            soft_start: true,
            signature: SignatureSettings {
                header_canonicalization: Canonicalization::Relaxed,
                body_canonicalization: Canonicalization::Simple,
                headers: Arc::new(HeaderPolicy::new(
                    crate::dkim::headers::DEFAULT_SIGNED_HEADERS.iter().copied(),
                    [],
                    ["from"],
                )),
                expiry: None,
                request_reports: false,
                atps_domains: None,
                body_length_recipients: None,
                replace_rules: None,
            },
            errors: ErrorActions::default(),
            max_header_bytes: 65536,
            max_header_count: 1000,
            software_header: false,
            verification: None,
        }
    }

    fn envelope(ip: &str, auth: bool) -> Envelope {
        Envelope {
            client_ip: ip.parse().unwrap(),
            sender: None,
            recipients: vec!["bob@example.org".into()],
            authenticated: auth,
        }
    }

    const MESSAGE: &[u8] = b"From: Alice <alice@example.com>\nTo: bob@example.org,\n\tcarol@example.org\nSubject: hello\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\nHi Bob.\n\n";

    #[test]
    fn internal_client_is_signed() {
        let out = sign(example_policy(), MESSAGE, &envelope("127.0.0.1", false)).unwrap();
        let Outcome::Signed(signed) = out else {
            panic!("not signed: {out:?}")
        };
        assert!(signed.starts_with(b"DKIM-Signature: v=1; a=rsa-sha256;"));
        assert!(signed.ends_with(MESSAGE), "the message follows unchanged");
    }

    #[test]
    fn external_client_is_not_signed_unless_authenticated() {
        let out = sign(example_policy(), MESSAGE, &envelope("203.0.113.9", false)).unwrap();
        assert_eq!(out, Outcome::NotSigned);
        let out = sign(example_policy(), MESSAGE, &envelope("203.0.113.9", true)).unwrap();
        assert!(matches!(out, Outcome::Signed(_)));
    }

    #[test]
    fn other_domains_are_not_signed() {
        let message = b"From: x@example.net\n\nbody\n";
        let out = sign(example_policy(), message, &envelope("127.0.0.1", false)).unwrap();
        assert_eq!(out, Outcome::NotSigned);
    }
}
