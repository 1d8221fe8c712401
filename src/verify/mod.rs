//! Verifying the DKIM signatures of one message as it streams through the
//! milter (RFC 6376, RFC 8301, RFC 8463).
//!
//! At end of headers [`MessageVerification::start`] reads every
//! DKIM-Signature field from the top, checks the first
//! `MaximumSignaturesToVerify` of them (the rest are reported `neutral`),
//! and starts the key lookups of the valid ones at once, in parallel,
//! through the [`Resolver`](crate::dns::Resolver). The body is then hashed
//! as it arrives, with one hasher per distinct (body canonicalization,
//! `l=`) set (every supported algorithm hashes with SHA-256), so memory does
//! not depend on the message's size. At end of message, once the lookups
//! are in, [`MessageVerification::finish`] checks each signature against
//! its key and gives one [`SignatureVerdict`] per signature, in field
//! order.
//!
//! What is mail-auth's and what is ours: mail-auth 0.13 parses the tag
//! values of the signature (`Signature::parse`) and of the key record
//! (`DomainKey::parse`, the verifying key), canonicalizes the signed header
//! fields and performs the public-key verification
//! (`VerifyingKey::verify`). Hand-written here is only what it cannot do:
//! the streaming (its verifier wants the whole message in memory), the body
//! hashing (`dkim::body`, shared with signing), and the checks a verifier
//! must make that its lenient parsers skip (see `signature.rs`).
//!
//! Results follow the RFCs where OpenDKIM does not (README, "Differences
//! from OpenDKIM"): a missing or revoked key, a key whose `h=`, `k=` or
//! `s=` excludes the signature, a `t=s` key with a subdomain `i=` are
//! `permerror`; rsa-sha1 is never a pass.
//!
//! This module never talks to the MTA, never decides what to tell it and
//! never logs: the caller turns verdicts into an Authentication-Results
//! field, an action and a log line.

mod format;
mod key;
mod message;
pub use format::FormatChecks;
pub mod metrics;
pub mod signature;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

pub use message::MessageVerification;

use crate::dns::Security;

/// OpenDKIM's MaximumSignaturesToVerify default.
pub const DEFAULT_MAX_SIGNATURES: usize = 3;

/// Clock difference allowed for a signature's `t=` (OpenDKIM's ClockDrift
/// default).
pub const DEFAULT_CLOCK_DRIFT: Duration = Duration::from_secs(300);

/// OpenDKIM's UnprotectedKey / BogusKey: what to do with a signature that
/// passed with a key DNSSEC did not vouch for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    /// Report the result as it is (with the DNSSEC word).
    None,
    /// Report `neutral`.
    Neutral,
    /// Report a failure (`policy` for an unprotected key, as OpenDKIM
    /// does; `fail` for a bogus one).
    Fail,
}

/// How signatures are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySettings {
    /// OpenDKIM's MaximumSignaturesToVerify: how many signatures, from the
    /// top, are verified; the others are `neutral`. 0 means all.
    pub max_signatures: usize,
    /// OpenDKIM's MinimumKeyBits: smaller RSA keys give `policy`.
    pub minimum_key_bits: u32,
    /// OpenDKIM's UnprotectedKey (default none).
    pub unprotected_key: KeyAction,
    /// OpenDKIM's BogusKey (default fail).
    pub bogus_key: KeyAction,
    /// Allowed clock difference for `t=`.
    pub clock_drift: Duration,
    /// Which header blocks are refused as a whole (`permerror`): no usable
    /// From, and under StrictHeaders one RFC 5322 forbids.
    pub format: FormatChecks,
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            max_signatures: DEFAULT_MAX_SIGNATURES,
            minimum_key_bits: crate::keys::DEFAULT_MINIMUM_KEY_BITS,
            unprotected_key: KeyAction::None,
            bogus_key: KeyAction::Fail,
            clock_drift: DEFAULT_CLOCK_DRIFT,
            format: FormatChecks::default(),
        }
    }
}

/// A signature's result, as RFC 8601 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DkimResult {
    Pass,
    Fail,
    Neutral,
    Policy,
    TempError,
    PermError,
}

impl DkimResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DkimResult::Pass => "pass",
            DkimResult::Fail => "fail",
            DkimResult::Neutral => "neutral",
            DkimResult::Policy => "policy",
            DkimResult::TempError => "temperror",
            DkimResult::PermError => "permerror",
        }
    }
}

impl fmt::Display for DkimResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a signature did not pass. The texts are libopendkim's where it has
/// one, so log readers and scripts see the words they know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    TagSyntax,
    DuplicateTag(String),
    MissingVersion,
    UnsupportedVersion,
    MissingAlgorithm,
    InvalidAlgorithm,
    Sha1,
    MissingB,
    EmptyB,
    CorruptB,
    MissingBh,
    EmptyBh,
    CorruptBh,
    MissingDomain,
    EmptyDomain,
    InvalidDomain,
    MissingHeaders,
    EmptyHeaders,
    FromNotSigned,
    MissingSelector,
    EmptySelector,
    InvalidSelector,
    InvalidCanonicalization,
    InvalidLength,
    InvalidQuery,
    InvalidTimestamp,
    TimestampOrder,
    Expired,
    FutureTimestamp,
    IdentityOutsideDomain,
    /// Past MaximumSignaturesToVerify: not looked at.
    NotVerified,
    KeyNotFound,
    KeyQueryFailed(String),
    KeyBogus,
    KeySyntax,
    KeyVersion,
    KeyTypeUnknown,
    KeyTypeMismatch,
    KeyHashMismatch,
    NotEmailKey,
    Subdomain,
    Revoked,
    KeyDecode,
    KeyTooSmall,
    LengthBeyondBody,
    BodyHashMismatch,
    BadSignature,
    /// A pass with a key from a zone DNSSEC proved unsigned, under
    /// `UnprotectedKey neutral|fail`.
    UnprotectedKey,
    /// A pass with a key DNSSEC calls bogus, under `BogusKey`.
    BogusKey,
    /// The header block itself cannot be verified (no usable From, or
    /// StrictHeaders); the reason in libopendkim's words.
    MalformedMessage(String),
}

impl Problem {
    /// The result a signature with this problem gets.
    pub fn result(&self) -> DkimResult {
        use Problem::*;
        match self {
            NotVerified => DkimResult::Neutral,
            KeyQueryFailed(_) => DkimResult::TempError,
            KeyTooSmall | UnprotectedKey => DkimResult::Policy,
            LengthBeyondBody | BodyHashMismatch | BadSignature | KeyBogus | BogusKey => {
                DkimResult::Fail
            }
            _ => DkimResult::PermError,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Problem::*;
        let text = match self {
            TagSyntax => "signature syntax error",
            DuplicateTag(tag) => return write!(f, "tag {tag}= appears twice"),
            MissingVersion => "version missing",
            UnsupportedVersion => "unsupported signature version",
            MissingAlgorithm => "signature algorithm missing",
            InvalidAlgorithm => "signature algorithm invalid",
            Sha1 => "rsa-sha1 signatures are not accepted (RFC 8301)",
            MissingB => "signature data missing",
            EmptyB => "signature data empty",
            CorruptB => "signature data corrupt",
            MissingBh => "body hash missing",
            EmptyBh => "body hash empty",
            CorruptBh => "body hash corrupt",
            MissingDomain => "domain tag missing",
            EmptyDomain => "domain tag empty",
            InvalidDomain => "domain tag invalid",
            MissingHeaders => "header list missing",
            EmptyHeaders => "header list tag empty",
            FromNotSigned => "header list missing required entries",
            MissingSelector => "selector tag missing",
            EmptySelector => "selector tag empty",
            InvalidSelector => "selector tag invalid",
            InvalidCanonicalization => "invalid canonicalization",
            InvalidLength => "body length value invalid",
            InvalidQuery => "query method invalid",
            InvalidTimestamp => "signature timestamp invalid",
            TimestampOrder => "signature timestamp order error",
            Expired => "signature expired",
            FutureTimestamp => "signature timestamp in the future",
            IdentityOutsideDomain => "invalid domain coverage",
            NotVerified => "not verified (beyond MaximumSignaturesToVerify)",
            KeyNotFound => "key not found in DNS",
            KeyQueryFailed(why) => return write!(f, "key DNS query failed: {why}"),
            KeyBogus => "key DNS reply failed DNSSEC validation",
            KeySyntax => "key DNS reply corrupt",
            KeyVersion => "unknown key version",
            KeyTypeUnknown => "unknown key type",
            KeyTypeMismatch => "key type does not match the signature algorithm",
            KeyHashMismatch => "signature-key hash mismatch",
            NotEmailKey => "not an e-mail key",
            Subdomain => "unauthorized subdomain",
            Revoked => "key revoked",
            KeyDecode => "unable to apply public key",
            KeyTooSmall => "signing key too small",
            LengthBeyondBody => "length tag value exceeds body size",
            BodyHashMismatch => "body hash mismatch",
            BadSignature => "signature verification failed",
            UnprotectedKey => "key not protected by DNSSEC",
            BogusKey => "key failed DNSSEC validation",
            MalformedMessage(why) => return write!(f, "bad message format: {why}"),
        };
        f.write_str(text)
    }
}

/// The outcome for one signature, with what the Authentication-Results
/// field and the log line show of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureVerdict {
    pub result: DkimResult,
    /// Why it is not a pass (`None` for a pass).
    pub problem: Option<Problem>,
    /// `d=` as written.
    pub domain: Option<String>,
    pub selector: Option<String>,
    /// `i=`, or `@` and `d=` without one.
    pub identity: Option<String>,
    pub algorithm: Option<&'static str>,
    /// RSA key size, once the key was read.
    pub key_bits: Option<u32>,
    /// What DNSSEC said of the key (`Unchecked` without a trust anchor).
    pub security: Security,
    /// `b=` without folding white space.
    pub b: String,
    /// The key record does not exist (for On-KeyNotFound).
    pub key_missing: bool,
    /// The key is marked `t=y` (testing).
    pub testing: bool,
}

impl SignatureVerdict {
    pub fn is_pass(&self) -> bool {
        self.result == DkimResult::Pass
    }
}

/// The signature that decides a message's action, as libopendkim picks it:
/// the first that passed, else the first verified (the topmost).
pub fn decisive(verdicts: &[SignatureVerdict]) -> Option<&SignatureVerdict> {
    verdicts.iter().find(|v| v.is_pass()).or_else(|| {
        verdicts
            .iter()
            .find(|v| v.problem != Some(Problem::NotVerified))
    })
}
