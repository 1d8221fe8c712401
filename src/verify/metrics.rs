//! Verification counters: signatures by result, messages by the result
//! that decided their action. Process-wide (reloads do not reset them),
//! counted whether or not the metrics endpoint is on; [`register`] adds
//! them to its registry.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
pub struct VerifyMetrics {
    signatures: Family<Labels, Counter>,
    messages: Family<Labels, Counter>,
}

static VERIFY: LazyLock<VerifyMetrics> = LazyLock::new(VerifyMetrics::default);

pub fn verify() -> &'static VerifyMetrics {
    &VERIFY
}

impl VerifyMetrics {
    /// One signature verified with `result` (pass, fail, neutral, policy,
    /// temperror, permerror).
    pub fn signature(&self, result: &str) {
        self.signatures
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// One message verified; `result` is its deciding signature's result,
    /// or `none` when it had no signature.
    pub fn message(&self, result: &str) {
        self.messages
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }
}

/// Add the verification metrics to `registry`.
pub fn register(registry: &mut Registry) {
    let m = verify();
    registry.register(
        "verified_signatures",
        "DKIM signatures verified, by result (pass, fail, neutral, policy, temperror, permerror)",
        m.signatures.clone(),
    );
    registry.register(
        "verified_messages",
        "Messages verified, by the result of the signature that decided the action (none: unsigned)",
        m.messages.clone(),
    );
}
