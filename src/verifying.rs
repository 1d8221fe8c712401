//! Verification inside the milter: what a message the signing filter does
//! not sign goes through when Mode has `v`, from end of headers to the
//! answer at end of message.
//!
//! [`VerifyingMessage::start`] removes nothing yet: it notes the existing
//! Authentication-Results fields that claim our authserv-id (to delete
//! later) and starts [`MessageVerification`] (key lookups begin here). With
//! RemoveARFrom kept on a server, it notes the fields the set decides (those
//! with a dkim result, or all with RemoveARAll), and the set is asked for
//! their authserv-ids in one batch while the key lookups finish
//! ([`VerifyingMessage::keys_ready`]); when it cannot answer, the message
//! gets the On-InternalError action rather than keep a field that may be a
//! forgery (OpenDKIM keeps it: a failed lookup is "not listed"). It
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
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;

use crate::auth_results::{self, Removal};
use crate::dkim::HeaderBlock;
use crate::dns::{DnsSettings, Resolver};
use crate::policy::{Action, DataSetProblem, Query, TableSource};
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
    /// OpenDKIM's RemoveARFrom: the hosts (`.example.com` for a domain and
    /// its subdomains) whose fields are removed instead of ours, or the set
    /// kept on a server that lists them.
    pub remove_from: Option<TableSource<Vec<String>>>,
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
    match &policy.remove_from {
        None => {}
        Some(TableSource::Local(from)) => {
            lines.push(format!("RemoveARFrom: {}", from.join(", ")));
        }
        Some(TableSource::Remote(set)) => lines.push(format!(
            "RemoveARFrom: asked per message of {}, through a cache  ({})",
            set.describe(),
            set.at()
        )),
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
    /// RemoveARFrom kept on a server: the fields it decides.
    removal: Option<RemovalLookup>,
    /// On-InternalError, for a RemoveARFrom answer that cannot be had.
    internal_error: Action,
}

/// The fields of one message that RemoveARFrom kept on a server decides,
/// and its answer once asked.
struct RemovalLookup {
    /// 1-based indexes among Authentication-Results fields, one per walk
    /// of `query`.
    indexes: Vec<u32>,
    query: Query,
    answer: Arc<OnceLock<Result<Vec<bool>, DataSetProblem>>>,
}

impl RemovalLookup {
    /// The fields to delete, or why that is not known.
    fn forged(&self) -> Result<Vec<u32>, DataSetProblem> {
        match self.answer.get() {
            Some(Ok(listed)) => Ok(self
                .indexes
                .iter()
                .zip(listed)
                .filter(|(_, listed)| **listed)
                .map(|(&index, _)| index)
                .collect()),
            Some(Err(problem)) => Err(problem.clone()),
            None => Err(DataSetProblem::NotLookedUp("RemoveARFrom")),
        }
    }
}

impl VerifyingMessage {
    /// At end of headers: read the signatures and start their lookups.
    /// `internal_error` is On-InternalError.
    pub fn start(
        policy: &Arc<VerificationPolicy>,
        headers: HeaderBlock,
        macros: &Macros,
        not_signed: &'static str,
        started: Instant,
        internal_error: Action,
    ) -> Start {
        let mut removal = None;
        let forged = if policy.keep_auth_results {
            Vec::new()
        } else {
            let existing = headers
                .fields()
                .iter()
                .filter(|f| f.is_named(auth_results::FIELD))
                .zip(1u32..);
            match &policy.remove_from {
                Some(TableSource::Remote(set)) => {
                    let (indexes, walks): (Vec<u32>, Vec<Vec<String>>) = existing
                        .filter_map(|(f, n)| {
                            auth_results::removable_authserv_id(&f.value, policy.remove_all)
                                .map(|id| (n, auth_results::removal_keys(&id)))
                        })
                        .unzip();
                    // No field the set could remove: nothing is asked.
                    removal = (!indexes.is_empty()).then(|| RemovalLookup {
                        indexes,
                        query: Query::each(set, walks),
                        answer: Arc::new(OnceLock::new()),
                    });
                    Vec::new()
                }
                from => {
                    let removal = Removal {
                        authserv_id: policy.authserv_id(macros).to_ascii_lowercase(),
                        from: from.as_ref().and_then(TableSource::local).cloned(),
                        all: policy.remove_all,
                    };
                    existing
                        .filter(|(f, _)| removal.removes(&f.value))
                        .map(|(_, n)| n)
                        .collect()
                }
            }
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
            removal,
            internal_error,
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

    /// The key lookups still running and the RemoveARFrom lookup (on a
    /// server, not asked yet), as one future.
    pub fn keys_ready(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let keys = self.verification.keys_ready();
        let removal = self
            .removal
            .as_ref()
            .filter(|r| r.answer.get().is_none())
            .map(|r| {
                let query = r.query.clone();
                let slot = Arc::clone(&r.answer);
                async move {
                    let _ = slot.set(query.ask_each().await);
                }
            });
        if keys.is_none() && removal.is_none() {
            return None;
        }
        Some(Box::pin(async move {
            let keys = async {
                if let Some(keys) = keys {
                    keys.await;
                }
            };
            let removal = async {
                if let Some(removal) = removal {
                    removal.await;
                }
            };
            tokio::join!(keys, removal);
        }))
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
        let (forged, held) = match &self.removal {
            None => (self.forged.clone(), None),
            Some(removal) => match removal.forged() {
                Ok(forged) => (forged, None),
                Err(problem) => (Vec::new(), Some(problem)),
            },
        };
        // Which fields go matters only for a message let through.
        let held = held.filter(|_| matches!(action, Action::Accept | Action::Quarantine));
        let (action, why) = match &held {
            Some(_) => (
                self.internal_error,
                "the Authentication-Results fields RemoveARFrom removes are not known (data set \
                 unavailable)"
                    .to_string(),
            ),
            None => (action, why),
        };
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
            forged.len(),
            held.as_ref(),
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
        let mut modifications: Vec<Modification> = forged
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

/// The message's one log line; an error when RemoveARFrom's answer could
/// not be had (`held`), saying why.
#[allow(clippy::too_many_arguments)]
fn log(
    queue_id: &str,
    result: &str,
    verdicts: &[SignatureVerdict],
    action: Action,
    not_signed: &str,
    removed: usize,
    held: Option<&DataSetProblem>,
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
    if let Some(problem) = held {
        tracing::error!(
            queue_id = %queue_id,
            result = %result,
            signatures = %signatures,
            action = %action,
            reason = %"data_set_unavailable",
            not_signed = %not_signed,
            elapsed_ms,
            "verified, but existing Authentication-Results fields are not removed: {problem}"
        );
        return;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A verifying policy (test keys, AuthservID mx.test) with `lines`;
    /// the directory holds its files.
    fn policy(lines: &str) -> (tempfile::TempDir, Arc<VerificationPolicy>) {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::write(&keys, "sel._domainkey.example.com v=DKIM1; p=\n").unwrap();
        let conf = dir.path().join("opendkim.conf");
        std::fs::write(
            &conf,
            format!(
                "Mode v\nSocket inet:8891@localhost\nAuthservID mx.test\nTestPublicKeys {}\n\
                 {lines}\n",
                keys.display()
            ),
        )
        .unwrap();
        let config = crate::config::Config::from_opendkim_file(&conf).unwrap();
        (dir, config.policy.verification.unwrap())
    }

    /// RemoveARFrom on a PostgreSQL port nothing listens on.
    const ON_A_SERVER_DOWN: &str =
        "RemoveARFrom dsn:pgsql://u:pw-5@1+127.0.0.1/db/table=t?keycol=k?datacol=k";

    fn headers(fields: &[(&str, &str)]) -> HeaderBlock {
        let mut block = HeaderBlock::new();
        for (name, value) in fields {
            block.push_copy(name.as_bytes(), format!(" {value}").as_bytes());
        }
        block
    }

    fn start(policy: &Arc<VerificationPolicy>, fields: &[(&str, &str)]) -> VerifyingMessage {
        let Start::Verify(message) = VerifyingMessage::start(
            policy,
            headers(fields),
            &Macros::new(),
            "untrusted",
            Instant::now(),
            Action::Tempfail,
        ) else {
            panic!("answered at end of headers")
        };
        *message
    }

    fn run(ready: Pin<Box<dyn Future<Output = ()> + Send>>) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(ready);
    }

    /// The indexes of the Authentication-Results fields deleted.
    fn removed(end: &EndOfMessage) -> Vec<u32> {
        end.modifications
            .iter()
            .filter_map(|m| match m {
                Modification::ChangeHeader { index, .. } => Some(*index),
                _ => None,
            })
            .collect()
    }

    const FROM: (&str, &str) = ("From", "a@example.org");

    #[test]
    fn remove_ar_from_on_a_server_removes_the_fields_of_listed_authserv_ids() {
        let (_dir, policy) = policy(ON_A_SERVER_DOWN);
        let message = start(
            &policy,
            &[
                ("Authentication-Results", "trusted.example; dkim=pass"),
                ("Authentication-Results", "mx.test; dkim=pass"),
                (
                    "Authentication-Results",
                    "Relay.Trusted.Example/7; spf=pass",
                ),
                ("Authentication-Results", "relay.trusted.example; dkim=fail"),
                FROM,
            ],
        );
        let removal = message.removal.as_ref().expect("a lookup");
        // The fields with a dkim result, each with its authserv-id's walk.
        assert_eq!(removal.indexes, [1, 2, 4]);
        // Answered: the first and the last are listed.
        removal.answer.set(Ok(vec![true, false, true])).unwrap();
        let end = message.finish(&Macros::new());
        assert!(matches!(end.verdict, Verdict::Accept), "{:?}", end.verdict);
        assert_eq!(removed(&end), [4, 1]);
    }

    #[test]
    fn remove_ar_from_on_a_server_down_tempfails_a_message_with_a_field_it_decides() {
        let (_dir, policy) = policy(ON_A_SERVER_DOWN);
        let message = start(
            &policy,
            &[
                ("Authentication-Results", "trusted.example; dkim=pass"),
                FROM,
            ],
        );
        run(message.keys_ready().expect("the set is asked"));
        let end = message.finish(&Macros::new());
        let Verdict::Smtp(reply) = &end.verdict else {
            panic!("not refused: {:?}", end.verdict)
        };
        assert_eq!(reply.code, 451, "{reply:?}");
        assert!(!reply.text.contains("pw-5"), "{reply:?}");
        assert!(end.modifications.is_empty());
    }

    #[test]
    fn remove_ar_from_on_a_server_is_not_asked_when_no_field_could_go() {
        let (_dir, policy) = policy(ON_A_SERVER_DOWN);
        let message = start(
            &policy,
            &[
                ("Authentication-Results", "trusted.example; spf=pass"),
                FROM,
            ],
        );
        assert!(message.removal.is_none());
        assert!(message.keys_ready().is_none());
        let end = message.finish(&Macros::new());
        assert!(matches!(end.verdict, Verdict::Accept), "{:?}", end.verdict);
        assert!(removed(&end).is_empty());
    }

    #[test]
    fn a_remove_ar_from_answer_not_had_follows_on_internal_error() {
        let (_dir, policy) = policy(ON_A_SERVER_DOWN);
        let Start::Verify(message) = VerifyingMessage::start(
            &policy,
            headers(&[
                ("Authentication-Results", "trusted.example; dkim=pass"),
                FROM,
            ]),
            &Macros::new(),
            "untrusted",
            Instant::now(),
            Action::Accept,
        ) else {
            panic!("answered at end of headers")
        };
        // Never asked (the lookup did not run): accepted as On-InternalError
        // says, with nothing removed.
        let end = message.finish(&Macros::new());
        assert!(matches!(end.verdict, Verdict::Accept), "{:?}", end.verdict);
        assert!(removed(&end).is_empty());
    }
}
