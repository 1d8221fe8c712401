//! Verifying a message from a file (`dkim-sidecar verify`) through the very
//! code the milter runs.
//!
//! As for `sign` ([`crate::offline`], whose event list and session driver
//! this uses), the message is cut into the events Postfix would send and
//! fed to a [`milter::Session`] driving a
//! [`crate::signing::SigningFilter`]; the key lookups run on a runtime of
//! this command's own, and the end of message waits for them exactly as
//! the server does ([`milter::Filter::end_of_message_ready`]). Only the
//! policy is adjusted, for a command whose job is to report: nothing is
//! signed (Mode v), the Authentication-Results field is always written
//! (`dkim=none` for an unsigned message) and every On-* action is accept,
//! so a DNS failure is reported rather than answered with a tempfail.
//! This module simulates an MTA; it verifies nothing itself.

use std::sync::Arc;

use crate::offline::{Envelope, OfflineError, Parsed, Run, postfix_events, run_session};
use crate::policy::{Action, Policy};
use crate::verifying::VerifyActions;
use milter::Reply;

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
    let replies = match run_session(policy, postfix_events(&parsed, envelope))? {
        // Answered early: not verified (Mode s, or a message the policy
        // leaves alone).
        Run::Answered(_) => {
            return Ok(Verified {
                field: None,
                passed: false,
            });
        }
        Run::Ended(replies) => replies,
    };
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
