//! Verifying a message from a file (`dkim-sidecar verify`) through the very
//! code the milter runs.
//!
//! As for `sign` ([`crate::offline`]), the message is cut into the events
//! Postfix would send and fed to a [`Session`] driving a [`SigningFilter`];
//! the key lookups run on a runtime of this command's own, and the end of
//! message waits for them exactly as the server does
//! ([`milter::Filter::end_of_message_ready`]). Only the policy is
//! adjusted, for a command whose job is to report: nothing is signed
//! (Mode v), the Authentication-Results field is always written
//! (`dkim=none` for an unsigned message) and every On-* action is accept,
//! so a DNS failure is reported rather than answered with a tempfail. This
//! module simulates an MTA; it verifies nothing itself.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::offline::{Envelope, OfflineError, Parsed};
use crate::policy::{Action, Policy};
use crate::signing::{LivePolicy, SigningFilter};
use crate::verifying::VerifyActions;
use milter::options::{Actions, Offer, ProtocolFlags};
use milter::{ClientAddress, Command, Reply, Session, Stage};

/// What verification said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The Authentication-Results field as it would be inserted (name,
    /// colon, value folded with LF + TAB, no final line break); `None`
    /// when the configuration has no verification (Mode s).
    pub field: Option<String>,
    /// Whether a signature passed.
    pub passed: bool,
}

/// Run `message` through the milter session with `policy`, verifying.
pub fn verify(
    mut policy: Policy,
    message: &[u8],
    envelope: &Envelope,
) -> Result<Verified, OfflineError> {
    let parsed = Parsed::new(message).ok_or(OfflineError::NotAMessage)?;
    policy.mode.sign = false;
    policy.mode.verify = true;
    if let Some(verification) = &policy.verification {
        let mut reporting = (**verification).clone();
        reporting.always_add = true;
        reporting.actions = VerifyActions {
            bad_signature: Action::Accept,
            no_signature: Action::Accept,
            dns_error: Action::Accept,
            key_not_found: Action::Accept,
            security: Some(Action::Accept),
        };
        policy.verification = Some(Arc::new(reporting));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OfflineError::Runtime(e.to_string()))?;
    let _inside = runtime.enter();
    let live = Arc::new(LivePolicy::new(policy));
    let mut session = Session::new(SigningFilter::new(live));
    let mut replies = Vec::new();
    let macros = |stage: Stage, pairs: &[(&str, String)]| Command::Macros {
        stage,
        pairs: pairs
            .iter()
            .map(|(n, v)| (Bytes::from(n.to_string()), Bytes::from(v.clone())))
            .collect(),
    };
    let mut events = vec![
        Command::Negotiate(Offer {
            version: 6,
            actions: Actions::from_bits_retain(0x1ff),
            protocol: ProtocolFlags::from_bits_retain(0x1f_ffff),
        }),
        macros(Stage::Connect, &[("j", "localhost".to_string())]),
        Command::Connect {
            hostname: Bytes::from(format!("[{}]", envelope.client_ip)),
            address: ClientAddress::Ip(SocketAddr::new(envelope.client_ip, 0)),
        },
        macros(Stage::Mail, &[("i", "OFFLINE".to_string())]),
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
    for event in events {
        let end = matches!(event, Command::EndOfMessage(_));
        if end && let Some(ready) = milter::Filter::end_of_message_ready(session.filter()) {
            runtime.block_on(ready);
        }
        replies.clear();
        session.handle(event, &mut replies)?;
        // ACCEPT at end of message is the normal answer after the field.
        if !end && replies.iter().any(|r| matches!(r, Reply::Accept)) {
            // Answered early: not verified (Mode s, or a message the policy
            // leaves alone).
            return Ok(Verified {
                field: None,
                passed: false,
            });
        }
    }
    let field = replies.iter().find_map(|r| match r {
        Reply::InsertHeader { name, value, .. } if &name[..] == b"Authentication-Results" => {
            let value = String::from_utf8_lossy(value);
            let value = value.strip_prefix(' ').unwrap_or(&value);
            Some(format!("Authentication-Results: {value}"))
        }
        _ => None,
    });
    let passed = field.as_deref().is_some_and(|f| {
        f.split_whitespace()
            .any(|w| w == "dkim=pass" || w.starts_with("dkim=pass;"))
    });
    Ok(Verified { field, passed })
}
