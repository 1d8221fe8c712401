//! What happened to each message: its one log line and its metrics.
//!
//! The signing filter calls exactly one of [`ConnectionReport::signed`],
//! [`ConnectionReport::not_signed`] or [`ConnectionReport::failed`] per
//! message. Each writes one line with the queue id, the result, `d=`,
//! `s=`, `a=` (when signed), the short reason (when not), and the time
//! taken, and counts the message for the metrics endpoint:
//!
//! ```text
//! INFO signed queue_id=4Bx1 result=signed d=example.com s=default a=rsa-sha256 sender=alice@example.com trusted_by="internal host" elapsed_ms=0.41
//! INFO not signed: client mx.example.net [192.0.2.7] is not internal and did not authenticate (...) queue_id=4Bx2 result=not_signed reason=untrusted_origin elapsed_ms=0.05
//! ```
//!
//! OpenDKIM's `SyslogSuccess no` puts signed messages at debug level;
//! `LogWhy no` leaves the detailed reason out of "not signed" lines (the
//! short `reason=` is always there). Both follow a reload. This module
//! decides nothing about messages; it only reports.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::Logging;
use crate::dkim::SignatureField;
use crate::metrics::Metrics;
use crate::policy::{Action, NotSigned, TrustedBy};

/// Log settings and metrics shared by every connection.
#[derive(Debug)]
pub struct Reporter {
    log_success: AtomicBool,
    log_why: AtomicBool,
    metrics: Option<Arc<Metrics>>,
}

impl Default for Reporter {
    /// Every line at info, detailed reasons, no metrics.
    fn default() -> Self {
        Reporter::new(&Logging::default(), None)
    }
}

impl Reporter {
    pub fn new(logging: &Logging, metrics: Option<Arc<Metrics>>) -> Reporter {
        Reporter {
            log_success: AtomicBool::new(logging.log_success),
            log_why: AtomicBool::new(logging.log_why),
            metrics,
        }
    }

    /// Apply reloaded log settings (SyslogSuccess, LogWhy).
    pub fn update(&self, logging: &Logging) {
        self.log_success
            .store(logging.log_success, Ordering::Relaxed);
        self.log_why.store(logging.log_why, Ordering::Relaxed);
    }

    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// The report handle for one new milter connection.
    pub fn connection(self: &Arc<Self>) -> ConnectionReport {
        if let Some(m) = &self.metrics {
            m.connection_opened();
        }
        ConnectionReport(Arc::clone(self))
    }
}

/// Reports for one milter connection; counts the connection as open until
/// dropped.
#[derive(Debug)]
pub struct ConnectionReport(Arc<Reporter>);

impl Default for ConnectionReport {
    fn default() -> Self {
        Arc::new(Reporter::default()).connection()
    }
}

impl Drop for ConnectionReport {
    fn drop(&mut self) {
        if let Some(m) = &self.0.metrics {
            m.connection_closed();
        }
    }
}

/// Why a message that should have been signed was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A key the message needs could not be found or loaded.
    KeyUnavailable,
    /// The signature could not be computed.
    SigningError,
    /// The header block is larger than MaximumHeaders.
    HeadersTooLarge,
    /// More recipients than [`crate::signing::MAX_RECIPIENTS`].
    TooManyRecipients,
    /// A data set kept on a server that could change the decision did not
    /// answer.
    DataSetUnavailable,
}

impl Failure {
    fn label(self) -> &'static str {
        match self {
            Failure::KeyUnavailable => "key_unavailable",
            Failure::SigningError => "signing_error",
            Failure::HeadersTooLarge => "headers_too_large",
            Failure::TooManyRecipients => "too_many_recipients",
            Failure::DataSetUnavailable => "data_set_unavailable",
        }
    }
}

impl ConnectionReport {
    /// The message got `signatures`.
    pub fn signed(
        &self,
        queue_id: &str,
        sender: &str,
        trusted_by: &TrustedBy,
        signatures: &[SignatureField],
        took: Duration,
    ) {
        let join =
            |f: fn(&SignatureField) -> &str| signatures.iter().map(f).collect::<Vec<_>>().join(",");
        let d = join(|s| &s.domain);
        let s = join(|s| &s.selector);
        let a = join(|s| s.algorithm.name());
        let elapsed_ms = millis(took);
        let trusted_by = trusted_by.to_string();
        // A tracing level is fixed at each call site: the line is written
        // once and emitted at info, or at debug with SyslogSuccess no.
        macro_rules! signed_line {
            ($level:ident) => {
                tracing::$level!(
                    queue_id = %queue_id,
                    result = %"signed",
                    d = %d,
                    s = %s,
                    a = %a,
                    sender = %sender,
                    trusted_by = trusted_by.as_str(),
                    elapsed_ms,
                    "signed"
                )
            };
        }
        if self.0.log_success.load(Ordering::Relaxed) {
            signed_line!(info);
        } else {
            signed_line!(debug);
        }
        if let Some(m) = &self.0.metrics {
            m.message("signed", None, took);
            for signature in signatures {
                m.signature(signature.algorithm.name());
            }
        }
    }

    /// The policy chose not to sign (logged at info with the reason).
    pub fn not_signed(&self, queue_id: &str, reason: &NotSigned, took: Duration) {
        let label = not_signed_label(reason);
        let elapsed_ms = millis(took);
        if self.0.log_why.load(Ordering::Relaxed) {
            tracing::info!(
                queue_id = %queue_id,
                result = %"not_signed",
                reason = %label,
                elapsed_ms,
                "not signed: {reason}"
            );
        } else {
            tracing::info!(
                queue_id = %queue_id,
                result = %"not_signed",
                reason = %label,
                elapsed_ms,
                "not signed"
            );
        }
        if let Some(m) = &self.0.metrics {
            m.message("not_signed", Some(label), took);
        }
    }

    /// The message should have been signed but could not be; the MTA is
    /// told `action` (a tempfail unless configured otherwise). Always
    /// logged at error level with `detail`, whatever LogWhy says.
    pub fn failed(
        &self,
        queue_id: &str,
        sender: Option<&str>,
        failure: Failure,
        detail: &dyn fmt::Display,
        action: Action,
        took: Duration,
    ) {
        let outcome = outcome_for(action);
        let elapsed_ms = millis(took);
        tracing::error!(
            queue_id = %queue_id,
            result = %outcome,
            reason = %failure.label(),
            sender = %sender.unwrap_or("-"),
            elapsed_ms,
            "not signed: {detail}"
        );
        if let Some(m) = &self.0.metrics {
            m.message(outcome, Some(failure.label()), took);
        }
    }
}

/// Milliseconds with microsecond precision, for log fields.
fn millis(took: Duration) -> f64 {
    took.as_micros() as f64 / 1000.0
}

/// What the MTA was told, as a metrics outcome.
fn outcome_for(action: Action) -> &'static str {
    match action {
        Action::Accept => "accepted",
        Action::Discard => "discarded",
        Action::Reject => "rejected",
        Action::Quarantine | Action::Tempfail => "tempfailed",
    }
}

/// The short, stable name of a reason not to sign (log field `reason=`
/// and metrics label).
pub fn not_signed_label(reason: &NotSigned) -> &'static str {
    match reason {
        NotSigned::SigningDisabled => "signing_disabled",
        NotSigned::NoSenderHeader { .. } => "no_sender_header",
        NotSigned::UnparseableSender { .. } => "unparseable_sender",
        NotSigned::UnencodableDomain { .. } => "unencodable_domain",
        NotSigned::ExemptDomain { .. } => "exempt_domain",
        NotSigned::UntrustedOrigin { .. } => "untrusted_origin",
        NotSigned::NoKeyForSender { tables: true, .. } => "no_signing_table_match",
        NotSigned::NoKeyForSender { tables: false, .. } => "domain_not_signed",
        NotSigned::RecipientExcluded { .. } => "recipient_excluded",
        NotSigned::Peer { .. } => "peer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::fmt::MakeWriter;

    /// Captures formatted events for one test.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    fn logged(json: bool, level: &str, f: impl FnOnce()) -> String {
        let capture = Capture::default();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(level)
            .with_writer(capture.clone())
            .with_ansi(false)
            .with_target(false)
            .without_time();
        if json {
            tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), f);
        } else {
            tracing::subscriber::with_default(builder.finish(), f);
        }
        String::from_utf8(capture.0.lock().unwrap().clone()).unwrap()
    }

    fn signature(domain: &str, selector: &str) -> SignatureField {
        SignatureField {
            domain: domain.into(),
            selector: selector.into(),
            algorithm: crate::dkim::Algorithm::RsaSha256,
            value: " v=1; secret-looking-bytes".into(),
        }
    }

    fn untrusted() -> NotSigned {
        NotSigned::UntrustedOrigin {
            client: "mx.example.net [192.0.2.7]".into(),
            sender: "alice@example.com".into(),
        }
    }

    #[test]
    fn a_signed_message_is_one_line_with_queue_id_d_s_a_and_time() {
        let report = ConnectionReport::default();
        let out = logged(false, "info", || {
            report.signed(
                "4Bx1",
                "alice@example.com",
                &TrustedBy::InternalHost,
                &[signature("example.com", "default")],
                Duration::from_micros(1234),
            );
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        for part in [
            "queue_id=4Bx1",
            "result=signed",
            "d=example.com",
            "s=default",
            "a=rsa-sha256",
            "elapsed_ms=1.234",
        ] {
            assert!(out.contains(part), "{part} missing: {out}");
        }
        assert!(!out.contains("secret-looking"), "{out}");
    }

    #[test]
    fn syslog_success_no_moves_signed_lines_to_debug() {
        let logging = Logging {
            log_success: false,
            ..Logging::default()
        };
        let report = Arc::new(Reporter::new(&logging, None)).connection();
        let sign = || {
            report.signed(
                "Q",
                "a@example.com",
                &TrustedBy::InternalHost,
                &[signature("example.com", "default")],
                Duration::ZERO,
            );
        };
        assert_eq!(logged(false, "info", sign), "");
        assert!(logged(false, "debug", sign).contains("DEBUG"));
    }

    #[test]
    fn log_why_adds_the_detail_the_short_reason_is_always_there() {
        let why = ConnectionReport::default();
        let out = logged(false, "info", || {
            why.not_signed("Q1", &untrusted(), Duration::ZERO);
        });
        assert!(out.contains("reason=untrusted_origin"), "{out}");
        assert!(out.contains("is not internal"), "{out}");

        let logging = Logging {
            log_why: false,
            ..Logging::default()
        };
        let terse = Arc::new(Reporter::new(&logging, None)).connection();
        let out = logged(false, "info", || {
            terse.not_signed("Q1", &untrusted(), Duration::ZERO);
        });
        assert!(out.contains("reason=untrusted_origin"), "{out}");
        assert!(out.contains("queue_id=Q1"), "{out}");
        assert!(!out.contains("is not internal"), "{out}");
    }

    #[test]
    fn json_lines_carry_the_same_fields() {
        let report = ConnectionReport::default();
        let out = logged(true, "info", || {
            report.signed(
                "4Bx1",
                "alice@example.com",
                &TrustedBy::InternalHost,
                &[
                    signature("example.com", "default"),
                    signature("example.com", "ed"),
                ],
                Duration::from_millis(2),
            );
        });
        let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(line["queue_id"], "4Bx1");
        assert_eq!(line["result"], "signed");
        assert_eq!(line["d"], "example.com,example.com");
        assert_eq!(line["s"], "default,ed");
        assert_eq!(line["elapsed_ms"], 2.0);
    }

    #[test]
    fn failures_are_counted_by_what_the_mta_was_told() {
        let metrics = Arc::new(Metrics::new());
        let report = Arc::new(Reporter::new(
            &Logging::default(),
            Some(Arc::clone(&metrics)),
        ))
        .connection();
        let out = logged(false, "info", || {
            report.failed(
                "Q",
                Some("a@example.com"),
                Failure::KeyUnavailable,
                &"cannot read /etc/keys/x.private",
                Action::Tempfail,
                Duration::ZERO,
            );
            report.not_signed("Q2", &untrusted(), Duration::ZERO);
        });
        assert!(out.contains("ERROR"), "{out}");
        assert!(out.contains("/etc/keys/x.private"), "{out}");
        let page = metrics.encode();
        assert!(
            page.contains(
                "dkim_sidecar_messages_total{outcome=\"tempfailed\",reason=\"key_unavailable\"} 1"
            ),
            "{page}"
        );
        assert!(page.contains("dkim_sidecar_connections_open 1"), "{page}");
        drop(report);
        assert!(metrics.encode().contains("dkim_sidecar_connections_open 0"));
    }
}
