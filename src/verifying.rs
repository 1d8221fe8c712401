//! Verification inside the milter: what a message the signing filter does
//! not sign goes through when Mode has `v`, from end of headers to the
//! answer at end of message.
//!
//! [`VerifyingMessage::start`] removes nothing yet: it notes the existing
//! Authentication-Results fields that claim our authserv-id (to delete
//! later) and starts [`MessageVerification`] (key lookups begin here). It
//! answers at once only when every signature is malformed and
//! On-BadSignature refuses the message, as OpenDKIM does. At end of
//! message [`VerifyingMessage::finish`] turns the verdicts into the
//! deletions (highest index first), our field (inserted at index 0), the
//! On-* action with an SMTP reply that says why, the metrics and exactly
//! one log line naming `d=`, `s=`, result and reason of every signature.
//!
//! It never looks at bytes on the wire and never signs; the waiting for DNS
//! is the server's ([`milter::Filter::end_of_message_ready`]).

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::auth_results::{self, Removal};
use crate::dkim::HeaderBlock;
use crate::dns::{DnsSettings, Resolver};
use crate::policy::Action;
use crate::verify::{
    DkimResult, MessageVerification, Problem, SignatureVerdict, VerifySettings, decisive,
    metrics as verify_metrics,
};
use milter::{EndOfMessage, Macros, Modification, SmtpReply, Verdict};

/// Who we are in Authentication-Results fields (OpenDKIM's AuthservID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthservId {
    /// The MTA's `j` macro (OpenDKIM's default); this host's name when the
    /// MTA sends none.
    Mta,
    /// A name given, or this host's name (`HOSTNAME`), fixed at load.
    Fixed(String),
}

/// What the MTA is told about verified mail (OpenDKIM's On-* for
/// verification), with OpenDKIM's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyActions {
    /// On-BadSignature (accept): no signature passed.
    pub bad_signature: Action,
    /// On-NoSignature (accept): the message is not signed.
    pub no_signature: Action,
    /// On-DNSError (tempfail): the key lookup failed for now.
    pub dns_error: Action,
    /// On-KeyNotFound (accept): the key record does not exist.
    pub key_not_found: Action,
    /// On-Security: the header block is larger than MaximumHeaders. Unset,
    /// the message is rejected (552 5.3.4) as when only signing: OpenDKIM's
    /// default tempfail only delays the bounce of a message that cannot
    /// change.
    pub security: Option<Action>,
}

impl Default for VerifyActions {
    fn default() -> Self {
        VerifyActions {
            bad_signature: Action::Accept,
            no_signature: Action::Accept,
            dns_error: Action::Tempfail,
            key_not_found: Action::Accept,
            security: None,
        }
    }
}

/// Everything verification runs with; part of the policy, replaced whole
/// on reload.
#[derive(Debug, Clone)]
pub struct VerificationPolicy {
    pub settings: VerifySettings,
    pub dns: DnsSettings,
    pub resolver: Arc<Resolver>,
    pub authserv_id: AuthservId,
    /// OpenDKIM's AuthservIDWithJobID: `authserv-id/QUEUEID`.
    pub with_job_id: bool,
    /// OpenDKIM's AlwaysAddARHeader: `dkim=none` on unsigned mail.
    pub always_add: bool,
    /// Not OpenDKIM's NoHeaderB: write `header.b`.
    pub header_b: bool,
    /// OpenDKIM's KeepAuthResults: remove no existing field.
    pub keep_auth_results: bool,
    /// OpenDKIM's RemoveARAll.
    pub remove_all: bool,
    /// OpenDKIM's RemoveARFrom.
    pub remove_from: Option<Vec<String>>,
    pub actions: VerifyActions,
}

impl VerificationPolicy {
    /// The authserv-id for a message (without job id).
    pub fn authserv_id(&self, macros: &Macros) -> String {
        match &self.authserv_id {
            AuthservId::Fixed(name) => name.clone(),
            // Without the macro OpenDKIM writes `unknown-host`
            // (HOSTUNKNOWN), and so do we: Postfix always sends `j`.
            AuthservId::Mta => macros
                .get_str("j")
                .filter(|j| !j.is_empty())
                .unwrap_or(UNKNOWN_HOST)
                .to_string(),
        }
    }
}

/// The effective verification settings, one line each (`check-config`).
pub fn describe(policy: &VerificationPolicy) -> Vec<String> {
    let action = |a: Action| format!("{a:?}").to_ascii_lowercase();
    let mut lines = vec![
        format!(
            "authserv-id: {}{}",
            match &policy.authserv_id {
                AuthservId::Mta => "the MTA's j macro".to_string(),
                AuthservId::Fixed(name) => name.clone(),
            },
            if policy.with_job_id { "/QUEUEID" } else { "" }
        ),
        format!(
            "signatures verified per message: {}",
            match policy.settings.max_signatures {
                0 => "all".to_string(),
                n => format!("the top {n}"),
            }
        ),
        format!(
            "minimum RSA key: {} bits",
            policy.settings.minimum_key_bits.max(1024)
        ),
        format!(
            "DNS: {}, timeout {} s{}",
            if policy.dns.test_records.is_some() {
                "test records (TestPublicKeys/TestDNSData)".to_string()
            } else if policy.dns.nameservers.is_empty() {
                "/etc/resolv.conf".to_string()
            } else {
                policy
                    .dns
                    .nameservers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            policy.dns.timeout.as_secs(),
            match &policy.dns.trust_anchor_file {
                Some(path) => format!(", DNSSEC from {}", path.display()),
                None => String::new(),
            }
        ),
        format!(
            "Authentication-Results: {}; existing ones of ours with a dkim result {}",
            if policy.always_add {
                "on every verified message (dkim=none when unsigned)"
            } else {
                "on signed messages"
            },
            if policy.keep_auth_results {
                "are kept (KeepAuthResults)"
            } else {
                "are removed"
            }
        ),
        format!(
            "actions: bad signature {}, no signature {}, DNS error {}, key not found {}, \
             security {}",
            action(policy.actions.bad_signature),
            action(policy.actions.no_signature),
            action(policy.actions.dns_error),
            action(policy.actions.key_not_found),
            action(policy.actions.security.unwrap_or(Action::Reject))
        ),
    ];
    if let Some(from) = &policy.remove_from {
        lines.push(format!("RemoveARFrom: {}", from.join(", ")));
    }
    lines
}

/// The authserv-id when the MTA sends no `j` macro, as OpenDKIM's.
const UNKNOWN_HOST: &str = "unknown-host";

/// This host's name, as gethostname(2) gives it.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// What [`VerifyingMessage::start`] found.
pub enum Start {
    /// Every signature is malformed and On-BadSignature refuses the
    /// message: the answer is given at end of headers, as OpenDKIM gives
    /// it, and the body is never sent.
    Answered(Verdict),
    /// Verification goes on to end of message (also for an unsigned
    /// message: OpenDKIM answers it there, and its test suite expects so).
    Verify(Box<VerifyingMessage>),
}

/// One message being verified.
pub struct VerifyingMessage {
    policy: Arc<VerificationPolicy>,
    verification: MessageVerification,
    headers: HeaderBlock,
    started: Instant,
    /// Why it was not signed (the short label), for the log line.
    not_signed: &'static str,
    /// 1-based indexes among Authentication-Results fields to delete.
    forged: Vec<u32>,
}

impl VerifyingMessage {
    /// At end of headers: read the signatures and start their lookups.
    pub fn start(
        policy: &Arc<VerificationPolicy>,
        headers: HeaderBlock,
        macros: &Macros,
        not_signed: &'static str,
        started: Instant,
    ) -> Start {
        let forged = if policy.keep_auth_results {
            Vec::new()
        } else {
            let removal = Removal {
                authserv_id: policy.authserv_id(macros).to_ascii_lowercase(),
                from: policy.remove_from.clone(),
                all: policy.remove_all,
            };
            headers
                .fields()
                .iter()
                .filter(|f| f.is_named(auth_results::FIELD))
                .zip(1u32..)
                .filter(|(f, _)| removal.removes(&f.value))
                .map(|(_, n)| n)
                .collect()
        };
        let verification =
            MessageVerification::start(&headers, &policy.settings, &policy.resolver, unix_time());
        let refused_now = verification.every_signature_refused()
            && matches!(
                policy.actions.bad_signature,
                Action::Reject | Action::Tempfail | Action::Discard
            );
        let message = VerifyingMessage {
            policy: Arc::clone(policy),
            verification,
            headers,
            started,
            not_signed,
            forged,
        };
        if refused_now {
            return Start::Answered(message.finish(macros).verdict);
        }
        Start::Verify(Box::new(message))
    }

    pub fn body(&mut self, chunk: &[u8]) {
        self.verification.body(chunk);
    }

    /// Whether the body is of any use (some signature needs its hash).
    pub fn wants_body(&self) -> bool {
        self.verification.wants_body()
    }

    /// The key lookups still running, as one future.
    pub fn keys_ready(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        self.verification
            .keys_ready()
            .map(|f| Box::pin(f) as Pin<Box<dyn Future<Output = ()> + Send>>)
    }

    /// At end of message: the answer, the changes, one log line.
    pub fn finish(self, macros: &Macros) -> EndOfMessage {
        let queue_id = macros.get_str("i").unwrap_or("-");
        let verdicts = self.verification.finish(&self.headers);
        let policy = &self.policy;
        let mut authserv_id = policy.authserv_id(macros);
        if policy.with_job_id && queue_id != "-" {
            authserv_id.push('/');
            authserv_id.push_str(queue_id);
        }
        let deciding = decisive(&verdicts);
        let (action, why) = action_for(deciding, &policy.actions);
        let result = deciding.map_or("none", |v| v.result.as_str());
        let metrics = verify_metrics::verify();
        metrics.message(result);
        for v in &verdicts {
            metrics.signature(v.result.as_str());
        }
        log(
            queue_id,
            result,
            &verdicts,
            action,
            self.not_signed,
            self.forged.len(),
            self.started,
        );
        let verdict = match action {
            // OpenDKIM answers ACCEPT once a message is through, and its
            // test suite expects it; Postfix still runs later milters.
            Action::Accept | Action::Quarantine => Verdict::Accept,
            Action::Discard => Verdict::Discard,
            Action::Reject => Verdict::Smtp(SmtpReply {
                code: 550,
                status: Some("5.7.20".into()),
                text: format!("DKIM: {why}"),
            }),
            Action::Tempfail => Verdict::Smtp(SmtpReply {
                code: 451,
                status: Some("4.7.5".into()),
                text: format!("DKIM: {why}; try again later"),
            }),
        };
        if !matches!(verdict, Verdict::Accept) {
            return EndOfMessage::verdict(verdict);
        }
        let mut modifications: Vec<Modification> = self
            .forged
            .iter()
            .rev()
            .map(|&index| Modification::ChangeHeader {
                index,
                name: Bytes::from_static(auth_results::FIELD.as_bytes()),
                value: Bytes::new(),
            })
            .collect();
        if !verdicts.is_empty() || policy.always_add {
            modifications.push(Modification::InsertHeader {
                index: 0,
                name: Bytes::from_static(auth_results::FIELD.as_bytes()),
                value: Bytes::from(auth_results::field_value(
                    &authserv_id,
                    &verdicts,
                    policy.header_b,
                )),
            });
        }
        if action == Action::Quarantine {
            modifications.push(Modification::Quarantine(Bytes::from(format!(
                "DKIM: {why}"
            ))));
        }
        EndOfMessage {
            modifications,
            verdict,
        }
    }
}

/// The On-* action for a message and the reason to give the client.
fn action_for(deciding: Option<&SignatureVerdict>, actions: &VerifyActions) -> (Action, String) {
    let Some(v) = deciding else {
        return (actions.no_signature, "message is not signed".to_string());
    };
    let who = format!(
        "d={} s={}",
        v.domain.as_deref().unwrap_or("?"),
        v.selector.as_deref().unwrap_or("?")
    );
    let problem = v
        .problem
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    match v.result {
        DkimResult::Pass => (Action::Accept, String::new()),
        // A header block that cannot be verified is recorded, not acted
        // on: OpenDKIM accepts it whatever On-BadSignature says.
        DkimResult::PermError if matches!(v.problem, Some(Problem::MalformedMessage(_))) => {
            (Action::Accept, String::new())
        }
        DkimResult::TempError => (
            actions.dns_error,
            format!("key lookup for {who} failed ({problem})"),
        ),
        DkimResult::PermError if v.key_missing => {
            (actions.key_not_found, format!("no key published for {who}"))
        }
        _ => (
            actions.bad_signature,
            format!("no valid signature ({who}: {problem})"),
        ),
    }
}

fn log(
    queue_id: &str,
    result: &str,
    verdicts: &[SignatureVerdict],
    action: Action,
    not_signed: &str,
    removed: usize,
    started: Instant,
) {
    let mut signatures = String::new();
    for v in verdicts {
        if !signatures.is_empty() {
            signatures.push_str("; ");
        }
        let _ = write!(
            signatures,
            "d={} s={} result={}",
            v.domain.as_deref().unwrap_or("-"),
            v.selector.as_deref().unwrap_or("-"),
            v.result
        );
        if let Some(problem) = &v.problem {
            let _ = write!(signatures, " reason=\"{problem}\"");
        }
    }
    if signatures.is_empty() {
        signatures.push_str("none");
    }
    let elapsed_ms = started.elapsed().as_micros() as f64 / 1000.0;
    let action = match action {
        Action::Accept => "accept",
        Action::Discard => "discard",
        Action::Quarantine => "quarantine",
        Action::Reject => "reject",
        Action::Tempfail => "tempfail",
    };
    tracing::info!(
        queue_id = %queue_id,
        result = %result,
        signatures = %signatures,
        action = %action,
        not_signed = %not_signed,
        removed_auth_results = removed,
        elapsed_ms,
        "verified"
    );
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
