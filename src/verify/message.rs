//! The verification of one message in progress: signatures read at end of
//! headers, key lookups running, body hashes growing; verdicts at the end.

use std::future::Future;
use std::sync::Arc;

use mail_auth::common::crypto::{HashContext as _, HashImpl as _, Sha256};
use mail_auth::common::headers::Writer;
use mail_auth::dkim::Canonicalization;

use super::format;
use super::key::{Key, key_for};
use super::signature::{self, Parsed, Shown};
use super::{DkimResult, KeyAction, Problem, SignatureVerdict, VerifySettings};
use crate::dkim::HeaderBlock;
use crate::dkim::body::BodyCanonicalizer;
use crate::dns::{PendingTxt, Resolver, Security, TxtAnswer, TxtOutcome};

/// The name of the field verified.
pub const SIGNATURE_FIELD: &str = "DKIM-Signature";

/// Signature fields reported at most (verified or not): a message carrying
/// a thousand costs a thousand name comparisons and no more.
pub const MAX_REPORTED: usize = 32;

/// The SHA-256 of the canonical body, up to `l=` when given, and the
/// length of the whole canonical body.
struct LimitedHash {
    context: <Sha256 as mail_auth::common::crypto::HashImpl>::Context,
    limit: Option<u64>,
    hashed: u64,
    total: u64,
}

impl Writer for LimitedHash {
    fn write(&mut self, buf: &[u8]) {
        self.total += buf.len() as u64;
        let take = match self.limit {
            Some(limit) => (limit.saturating_sub(self.hashed)).min(buf.len() as u64) as usize,
            None => buf.len(),
        };
        if take > 0 {
            self.context.write(&buf[..take]);
            self.hashed += take as u64;
        }
    }
}

struct Hasher {
    canonicalization: Canonicalization,
    limit: Option<u64>,
    body: BodyCanonicalizer<LimitedHash>,
}

/// One signature field and where it stands.
enum Candidate {
    /// Failed the checks before any lookup.
    Refused { shown: Shown, problem: Problem },
    /// Valid so far: its key is being looked up, its body hashed.
    Checking {
        shown: Shown,
        parsed: Box<Parsed>,
        /// Its index in the header block.
        field: usize,
        hasher: usize,
        key: PendingTxt,
    },
    /// Past MaximumSignaturesToVerify.
    Skipped { shown: Shown },
}

/// See the module documentation of [`crate::verify`].
pub struct MessageVerification {
    candidates: Vec<Candidate>,
    /// Why the header block is refused as a whole (see [`format`]).
    malformed: Option<String>,
    hashers: Vec<Hasher>,
    settings: VerifySettings,
}

impl MessageVerification {
    /// Reads the signature fields of `headers` at `now` (Unix seconds) and
    /// starts the key lookups.
    pub fn start(
        headers: &HeaderBlock,
        settings: &VerifySettings,
        resolver: &Arc<Resolver>,
        now: u64,
    ) -> MessageVerification {
        let mut verification = MessageVerification {
            candidates: Vec::new(),
            malformed: None,
            hashers: Vec::new(),
            settings: settings.clone(),
        };
        if let Some(why) = format::violation(headers, settings.format) {
            verification.malformed = Some(why);
            return verification;
        }
        let drift = settings.clock_drift.as_secs();
        let fields = headers
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.is_named(SIGNATURE_FIELD))
            .take(MAX_REPORTED);
        for (n, (index, field)) in fields.enumerate() {
            let (shown, parsed) = signature::read(&field.value, now, drift);
            if settings.max_signatures > 0 && n >= settings.max_signatures {
                verification.candidates.push(Candidate::Skipped { shown });
                continue;
            }
            let candidate = match parsed {
                Err(problem) => Candidate::Refused { shown, problem },
                Ok(parsed) => {
                    let hasher = verification.hasher(parsed.signature.cb, parsed.length);
                    let key = resolver.lookup_txt(&parsed.key_name());
                    Candidate::Checking {
                        shown,
                        parsed: Box::new(parsed),
                        field: index,
                        hasher,
                        key,
                    }
                }
            };
            verification.candidates.push(candidate);
        }
        verification
    }

    /// The hasher for this (canonicalization, `l=`) set, made if new.
    fn hasher(&mut self, canonicalization: Canonicalization, limit: Option<u64>) -> usize {
        if let Some(i) = self
            .hashers
            .iter()
            .position(|h| h.canonicalization == canonicalization && h.limit == limit)
        {
            return i;
        }
        self.hashers.push(Hasher {
            canonicalization,
            limit,
            body: BodyCanonicalizer::new(
                LimitedHash {
                    context: Sha256::hasher(),
                    limit,
                    hashed: 0,
                    total: 0,
                },
                canonicalization,
            ),
        });
        self.hashers.len() - 1
    }

    /// Whether the message has signature fields and every one of them
    /// failed its checks already: the verdicts are known at end of headers.
    pub fn every_signature_refused(&self) -> bool {
        self.malformed.is_none()
            && !self.candidates.is_empty()
            && self
                .candidates
                .iter()
                .all(|c| matches!(c, Candidate::Refused { .. }))
    }

    /// Body hashers running (one per distinct canonicalization and `l=`).
    pub fn hasher_count(&self) -> usize {
        self.hashers.len()
    }

    /// Whether the body matters: some signature is waiting for its hash.
    pub fn wants_body(&self) -> bool {
        !self.hashers.is_empty()
    }

    /// Feed the next piece of the body, exactly as received.
    pub fn body(&mut self, chunk: &[u8]) {
        for hasher in &mut self.hashers {
            hasher.body.write(chunk);
        }
    }

    /// Resolves once every key lookup has its answer (each lookup ends by
    /// DNSTimeout); `None` when they all have already.
    pub fn keys_ready(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let waiting: Vec<PendingTxt> = self
            .candidates
            .iter()
            .filter_map(|c| match c {
                Candidate::Checking { key, .. } if key.now().is_none() => Some(key.clone()),
                _ => None,
            })
            .collect();
        (!waiting.is_empty()).then_some(async move {
            for pending in waiting {
                pending.answer().await;
            }
        })
    }

    /// The verdict for every signature field, top to bottom.
    pub fn finish(self, headers: &HeaderBlock) -> Vec<SignatureVerdict> {
        if let Some(why) = self.malformed {
            return vec![verdict(
                Shown::default(),
                Err(Problem::MalformedMessage(why)),
            )];
        }
        let digests: Vec<(Vec<u8>, u64)> = self
            .hashers
            .into_iter()
            .map(|h| {
                let out = h.body.finish();
                (out.context.complete().as_ref().to_vec(), out.total)
            })
            .collect();
        let settings = &self.settings;
        self.candidates
            .into_iter()
            .map(|candidate| match candidate {
                Candidate::Refused { shown, problem } => verdict(shown, Err(problem)),
                Candidate::Skipped { shown } => verdict(shown, Err(Problem::NotVerified)),
                Candidate::Checking {
                    shown,
                    parsed,
                    field,
                    hasher,
                    key,
                } => {
                    let (digest, body_length) = &digests[hasher];
                    let check = Check {
                        parsed: &parsed,
                        headers,
                        field,
                        digest,
                        body_length: *body_length,
                        settings,
                    };
                    check.run(shown, key.now())
                }
            })
            .collect()
    }
}

/// A verdict for a signature that never reached a key.
fn verdict(shown: Shown, outcome: Result<(), Problem>) -> SignatureVerdict {
    let (result, problem) = match outcome {
        Ok(()) => (DkimResult::Pass, None),
        Err(problem) => (problem.result(), Some(problem)),
    };
    SignatureVerdict {
        result,
        problem,
        identity: shown
            .identity
            .clone()
            .or_else(|| shown.domain.as_ref().map(|d| format!("@{d}"))),
        domain: shown.domain,
        selector: shown.selector,
        algorithm: shown.algorithm,
        key_bits: None,
        security: Security::Unchecked,
        b: shown.b,
        key_missing: false,
        testing: false,
    }
}

/// Everything needed to check one signature against its key.
struct Check<'a> {
    parsed: &'a Parsed,
    headers: &'a HeaderBlock,
    field: usize,
    digest: &'a [u8],
    body_length: u64,
    settings: &'a VerifySettings,
}

impl Check<'_> {
    fn run(&self, shown: Shown, answer: Option<Arc<TxtAnswer>>) -> SignatureVerdict {
        let mut out = verdict(shown, Ok(()));
        let Some(answer) = answer else {
            return with(out, Problem::KeyQueryFailed("no answer".into()));
        };
        out.security = answer.security;
        let records = match &answer.outcome {
            TxtOutcome::Records(records) => records,
            TxtOutcome::NoSuchName | TxtOutcome::NoRecords => {
                out.key_missing = true;
                return with(out, Problem::KeyNotFound);
            }
            TxtOutcome::Failed(crate::dns::DnsFailure::Bogus) => {
                return match self.settings.bogus_key {
                    KeyAction::Fail => with(out, Problem::KeyBogus),
                    KeyAction::Neutral => with_result(out, Problem::KeyBogus, DkimResult::Neutral),
                    KeyAction::None => with_result(
                        out,
                        Problem::KeyQueryFailed("DNSSEC validation failed".into()),
                        DkimResult::TempError,
                    ),
                };
            }
            TxtOutcome::Failed(failure) => {
                return with(out, Problem::KeyQueryFailed(failure.to_string()));
            }
        };
        let signature = &self.parsed.signature;
        let auid_domain = signature
            .i
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or(&self.parsed.domain);
        let mut keys: Vec<Key> = Vec::new();
        let mut first_problem = None;
        for record in records {
            match key_for(record, signature.a, &self.parsed.domain, auid_domain) {
                Ok(key) => keys.push(key),
                Err(problem) => {
                    first_problem.get_or_insert(problem);
                }
            }
        }
        if keys.is_empty() {
            return with(out, first_problem.unwrap_or(Problem::KeySyntax));
        }
        out.key_bits = keys[0].bits;
        out.testing = keys[0].testing;
        // RFC 8301: RSA keys under 1024 bits are never valid, whatever
        // MinimumKeyBits says.
        let minimum = self.settings.minimum_key_bits.max(1024);
        keys.retain(|k| k.bits.is_none_or(|bits| bits >= minimum));
        if keys.is_empty() {
            return with(out, Problem::KeyTooSmall);
        }
        if self.parsed.length.is_some_and(|l| l > self.body_length) {
            return with(out, Problem::LengthBeyondBody);
        }
        if self.digest != signature.bh.as_slice() {
            return with(out, Problem::BodyHashMismatch);
        }
        let Some(key) = keys.iter().find(|key| self.verifies(key)) else {
            return with(out, Problem::BadSignature);
        };
        out.key_bits = key.bits;
        out.testing = key.testing;
        match (
            answer.security,
            self.settings.unprotected_key,
            self.settings.bogus_key,
        ) {
            (Security::Insecure, KeyAction::Fail, _) => with(out, Problem::UnprotectedKey),
            (Security::Insecure, KeyAction::Neutral, _) => {
                with_result(out, Problem::UnprotectedKey, DkimResult::Neutral)
            }
            (Security::Bogus, _, KeyAction::Fail) => with(out, Problem::BogusKey),
            (Security::Bogus, _, KeyAction::Neutral) => {
                with_result(out, Problem::BogusKey, DkimResult::Neutral)
            }
            _ => out,
        }
    }

    /// Whether the header signature verifies with `key`.
    fn verifies(&self, key: &Key) -> bool {
        let signature = &self.parsed.signature;
        let fields = self.headers.fields();
        let selected = select(self.headers, &signature.h);
        let mut wire = Vec::with_capacity(1024);
        let mut spans = Vec::with_capacity(selected.len() + 1);
        for &index in &selected {
            let start = wire.len();
            fields[index].write_wire_value(&mut wire);
            spans.push((&fields[index].name[..], start..wire.len()));
        }
        let own = &fields[self.field];
        let mut own_wire = own.wire_value();
        own_wire.truncate(own_wire.len() - 2);
        let own_value = signature::without_b_value(&own_wire);
        let mut input = spans
            .into_iter()
            .map(|(name, span)| (name, &wire[span]))
            .chain([(&own.name[..], &own_value[..])]);
        key.verifying
            .verify(&mut input, &signature.b, signature.ch, signature.a)
            .is_ok()
    }
}

fn with(mut verdict: SignatureVerdict, problem: Problem) -> SignatureVerdict {
    verdict.result = problem.result();
    verdict.problem = Some(problem);
    verdict
}

fn with_result(
    mut verdict: SignatureVerdict,
    problem: Problem,
    result: DkimResult,
) -> SignatureVerdict {
    verdict.result = result;
    verdict.problem = Some(problem);
    verdict
}

/// The fields `h=` covers, in `h=` order (RFC 6376 section 5.4.2): each
/// name takes the next instance not yet taken, from the bottom up; a name
/// with no instance left covers nothing.
fn select(headers: &HeaderBlock, names: &[String]) -> Vec<usize> {
    let fields = headers.fields();
    // Per name (lower-case): how many instances, from the bottom, are taken.
    let mut taken: Vec<(String, usize)> = Vec::new();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let lower = name.trim().to_ascii_lowercase();
        let slot = match taken.iter().position(|(n, _)| *n == lower) {
            Some(slot) => slot,
            None => {
                taken.push((lower.clone(), 0));
                taken.len() - 1
            }
        };
        let skip = taken[slot].1;
        if let Some(index) = fields
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, f)| f.is_named(&lower))
            .nth(skip)
            .map(|(i, _)| i)
        {
            out.push(index);
            taken[slot].1 += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::HeaderField;
    use bytes::Bytes;

    fn block(fields: &[(&str, &str)]) -> HeaderBlock {
        let mut b = HeaderBlock::new();
        for (n, v) in fields {
            b.push(HeaderField::new(
                Bytes::copy_from_slice(n.as_bytes()),
                Bytes::copy_from_slice(v.as_bytes()),
            ));
        }
        b
    }

    #[test]
    fn header_selection_goes_bottom_up_per_name() {
        let b = block(&[
            ("Received", " 1"),
            ("From", " a"),
            ("To", " b"),
            ("Received", " 2"),
            ("Subject", " c"),
        ]);
        let names: Vec<String> = ["from", "received", "Received", "received", "subject", "x"]
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(select(&b, &names), vec![1, 3, 0, 4]);
    }

    #[test]
    fn the_limited_hash_stops_at_l_and_counts_everything() {
        let mut h = LimitedHash {
            context: Sha256::hasher(),
            limit: Some(5),
            hashed: 0,
            total: 0,
        };
        h.write(b"abc");
        h.write(b"defgh");
        assert_eq!((h.hashed, h.total), (5, 8));
        let mut whole = Sha256::hasher();
        whole.write(b"abcde");
        assert_eq!(h.context.complete().as_ref(), whole.complete().as_ref());
    }
}
