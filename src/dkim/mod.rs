//! DKIM signatures for one message, computed as its pieces arrive.
//!
//! [`MessageSigning`] hashes the body chunk by chunk (memory per message is
//! the header block, never the body), keeps one body hash per body
//! canonicalization so dual RSA + Ed25519 signing hashes the body once, and
//! at end of message produces one `DKIM-Signature` value per
//! [`SignRequest`]. Header canonicalization, the signature's serialization
//! and the private-key operation (aws-lc-rs) are mail-auth's; the body
//! canonicalization is ours (`body.rs` says why) and so is the composition.
//!
//! Why not `DkimSigner::sign_streaming`: it hashes the body once per key,
//! borrows its signer (which a per-message state cannot hold across milter
//! events without a self-referential struct), and lists every configured
//! header name in `h=` whether or not the message has it, which would
//! oversign twenty absent fields where OpenDKIM signs only present ones.
//!
//! This module knows nothing of the milter protocol or of policy: it is
//! told what to sign with which key and does it. What it knows of message
//! syntax is RFC 5322's: header fields come in as the MTA handed them
//! ([`HeaderField`]: the value after the colon, folded with CRLF or with
//! the bare LF Postfix uses, both read the same way), the body as CRLF
//! lines, and the signature goes out folded with CRLF. Turning that into
//! the milter protocol's bare-LF form is the signing filter's job.

pub(crate) mod body;
mod field;
pub mod headers;

use std::sync::Arc;
use std::time::Duration;

use mail_auth::common::crypto::SigningKey;
use mail_auth::common::headers::{Writable, Writer};
use mail_auth::dkim::{Canonicalization, Signature};

use body::BodyHash;

pub use field::canonicalization_name;
pub use headers::{HeaderBlock, HeaderField, HeaderPolicy};

use crate::keys::PrivateKey;
pub use mail_auth::common::crypto::Algorithm;

/// One signature to make: who signs (`d=`, `s=`, key) and how.
#[derive(Clone)]
pub struct SignRequest {
    pub domain: String,
    pub selector: String,
    pub key: Arc<PrivateKey>,
    /// The `i=` tag, when the SigningTable names a signer.
    pub identity: Option<String>,
    pub header_canonicalization: Canonicalization,
    pub body_canonicalization: Canonicalization,
    pub headers: Arc<HeaderPolicy>,
    /// Signature lifetime for the `x=` tag.
    pub expiry: Option<Duration>,
    /// Add `l=`, the length of the canonical body signed.
    pub body_length: bool,
    /// Add `r=y`: the signer asks for failure reports.
    pub request_reports: bool,
    /// The author domain to name in `atps=` (with `atpsh=sha256`).
    pub atps: Option<String>,
}

impl std::fmt::Debug for SignRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignRequest")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.key.algorithm())
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// A finished signature, ready to insert as a `DKIM-Signature` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureField {
    pub domain: String,
    pub selector: String,
    pub algorithm: Algorithm,
    /// The value as it goes after the colon: a leading space, folded with
    /// CRLF + TAB as in a message, no trailing line break.
    pub value: String,
}

/// The field name of every signature this module makes.
pub const SIGNATURE_FIELD: &str = "DKIM-Signature";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the message has no From header field, which DKIM requires")]
    NoFrom,
    #[error("signing with d={domain} s={selector} failed: {reason}")]
    Crypto {
        domain: String,
        selector: String,
        reason: String,
    },
}

/// The signatures for one message in progress.
pub struct MessageSigning {
    bodies: Vec<(Canonicalization, BodyHash)>,
    requests: Vec<(SignRequest, usize)>,
}

impl MessageSigning {
    pub fn new(requests: Vec<SignRequest>) -> Self {
        let mut bodies: Vec<(Canonicalization, BodyHash)> = Vec::with_capacity(2);
        let requests = requests
            .into_iter()
            .map(|request| {
                let canon = request.body_canonicalization;
                let index = bodies
                    .iter()
                    .position(|(c, _)| *c == canon)
                    .unwrap_or_else(|| {
                        bodies.push((canon, BodyHash::sha256(canon)));
                        bodies.len() - 1
                    });
                (request, index)
            })
            .collect();
        MessageSigning { bodies, requests }
    }

    /// Whether finishing costs a millisecond-scale private-key operation
    /// (RSA: 0.3 ms for 2048 bits, 2 ms and more for 4096), as opposed to
    /// Ed25519's tens of microseconds, which cost less than handing the
    /// work to another thread.
    pub fn is_heavy(&self) -> bool {
        self.requests
            .iter()
            .any(|(r, _)| r.key.key_type() == crate::keys::KeyType::Rsa)
    }

    pub fn requests(&self) -> impl Iterator<Item = &SignRequest> {
        self.requests.iter().map(|(r, _)| r)
    }

    /// Feed the next piece of the body, exactly as received (CRLF lines).
    pub fn body(&mut self, chunk: &[u8]) {
        for (_, hasher) in &mut self.bodies {
            hasher.write(chunk);
        }
    }

    /// Sign over `headers` at time `now` (seconds since the epoch).
    pub fn finish(self, headers: &HeaderBlock, now: u64) -> Result<Vec<SignatureField>, SignError> {
        if headers.first("from").is_none() {
            return Err(SignError::NoFrom);
        }
        let body_hashes: Vec<(Vec<u8>, u64)> = self
            .bodies
            .into_iter()
            .map(|(_, hasher)| hasher.digest())
            .collect();
        self.requests
            .into_iter()
            .map(|(request, body)| {
                let (hash, length) = &body_hashes[body];
                sign_one(&request, headers, hash, *length, now)
            })
            .collect()
    }
}

fn sign_one(
    request: &SignRequest,
    block: &HeaderBlock,
    body_hash: &[u8],
    body_length: u64,
    now: u64,
) -> Result<SignatureField, SignError> {
    let selection = request.headers.select(block);
    let mut signature = Signature {
        v: 1,
        a: request.key.algorithm(),
        d: request.domain.clone(),
        s: request.selector.clone(),
        i: request.identity.clone().unwrap_or_default(),
        h: selection.names,
        bh: body_hash.to_vec(),
        t: now,
        x: request.expiry.map_or(0, |ttl| now + ttl.as_secs()),
        ch: request.header_canonicalization,
        cb: request.body_canonicalization,
        l: if request.body_length { body_length } else { 0 },
        r: request.request_reports,
        atps: request.atps.clone(),
        ..Signature::default()
    };
    // The covered fields' wire forms, in one buffer.
    let mut wire = Vec::with_capacity(1024);
    let spans: Vec<(&[u8], std::ops::Range<usize>)> = selection
        .covered
        .iter()
        .flatten()
        .map(|field| {
            let start = wire.len();
            field.write_wire_value(&mut wire);
            (&field.name[..], start..wire.len())
        })
        .collect();
    let covered: Vec<(&[u8], &[u8])> = spans
        .into_iter()
        .map(|(name, span)| (name, &wire[span]))
        .collect();
    let head = field::head(&signature);
    signature.b = request
        .key
        .sign(SigningInput {
            canonicalization: request.header_canonicalization,
            covered: &covered,
            head: &head,
        })
        .map_err(|e| SignError::Crypto {
            domain: request.domain.clone(),
            selector: request.selector.clone(),
            reason: e.to_string(),
        })?;
    Ok(SignatureField {
        domain: request.domain.clone(),
        selector: request.selector.clone(),
        algorithm: signature.a,
        value: field_value(&head, &signature.b),
    })
}

/// What the private key signs: the covered fields, canonicalized in `h=`
/// order, then the signature field itself with an empty `b=` and no final
/// line break (RFC 6376 section 3.7).
struct SigningInput<'a> {
    canonicalization: Canonicalization,
    covered: &'a [(&'a [u8], &'a [u8])],
    /// The signature field's value up to its empty `b=` ([`field::head`]).
    head: &'a str,
}

impl Writable for SigningInput<'_> {
    fn write(self, writer: &mut impl Writer) {
        self.canonicalization
            .canonicalize_headers(self.covered.iter().copied(), writer);
        // The signature field itself, laid out exactly as it will be
        // inserted but with an empty `b=`; its value has no final line
        // break, so neither canonicalization adds one.
        self.canonicalization.canonicalize_headers(
            std::iter::once((SIGNATURE_FIELD.as_bytes(), self.head.as_bytes())),
            writer,
        );
    }
}

/// The field value to insert, laid out as OpenDKIM lays it out (`field`),
/// folded with CRLF as in a message (RFC 5322): `head` and then `b=`.
fn field_value(head: &str, b: &[u8]) -> String {
    use base64::Engine as _;
    field::with_b(head, &base64::engine::general_purpose::STANDARD.encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{LoadOptions, load_key_file};
    use bytes::Bytes;

    fn example_key(file: &str) -> Arc<PrivateKey> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("keys-example")
            .join(file);
        // A fresh clone does not keep the 0600 mode; this is a public test key.
        let options = LoadOptions {
            require_safe_keys: false,
            ..LoadOptions::default()
        };
        load_key_file(&path, &options).unwrap().key
    }

    fn example_rsa() -> Arc<PrivateKey> {
        example_key("default.private")
    }

    fn example_ed25519() -> Arc<PrivateKey> {
        example_key("ed25519.private")
    }

    fn request(key: Arc<PrivateKey>, selector: &str, ch: Canonicalization) -> SignRequest {
        SignRequest {
            domain: "example.com".into(),
            selector: selector.into(),
            key,
            identity: None,
            header_canonicalization: ch,
            body_canonicalization: Canonicalization::Simple,
            headers: Arc::new(HeaderPolicy::default()),
            expiry: None,
            body_length: false,
            request_reports: false,
            atps: None,
        }
    }

    fn headers() -> HeaderBlock {
        let mut b = HeaderBlock::new();
        for (n, v) in [
            ("From", " Alice <alice@example.com>"),
            ("To", " bob@example.org"),
            ("Subject", " folded\n\tsubject"),
        ] {
            b.push(HeaderField::new(
                Bytes::from_static(n.as_bytes()),
                Bytes::from_static(v.as_bytes()),
            ));
        }
        b
    }

    #[test]
    fn dual_signing_hashes_the_body_once_per_canonicalization() {
        let m = MessageSigning::new(vec![
            request(example_rsa(), "default", Canonicalization::Relaxed),
            request(example_ed25519(), "ed25519", Canonicalization::Relaxed),
        ]);
        assert_eq!(m.bodies.len(), 1);
        let mut m = m;
        m.body(b"Hello\r\n");
        let sigs = m.finish(&headers(), 1_700_000_000).unwrap();
        assert_eq!(sigs.len(), 2);
        assert_eq!(sigs[0].algorithm, Algorithm::RsaSha256);
        assert_eq!(sigs[1].algorithm, Algorithm::Ed25519Sha256);
        let bh = |v: &str| {
            v.split(';')
                .find_map(|t| t.trim().strip_prefix("bh=").map(str::to_string))
        };
        assert_eq!(bh(&sigs[0].value), bh(&sigs[1].value));
    }

    #[test]
    fn field_value_has_leading_space_and_crlf_folding() {
        let mut m = MessageSigning::new(vec![request(
            example_rsa(),
            "default",
            Canonicalization::Simple,
        )]);
        m.body(b"body\r\n");
        let sig = m.finish(&headers(), 1_700_000_000).unwrap().remove(0);
        assert!(
            sig.value.starts_with(" v=1; a=rsa-sha256;"),
            "{}",
            sig.value
        );
        assert!(sig.value.contains("\r\n\t"));
        assert_eq!(
            sig.value.matches('\n').count(),
            sig.value.matches("\r\n").count(),
            "every line break is CRLF"
        );
        assert!(!sig.value.ends_with('\n'));
        assert!(sig.value.contains("d=example.com"));
        assert!(sig.value.contains("t=1700000000"));
        assert!(sig.value.contains("h=From:To:Subject"));
    }

    #[test]
    fn only_rsa_signing_is_heavy() {
        let ed = || request(example_ed25519(), "ed25519", Canonicalization::Relaxed);
        let rsa = || request(example_rsa(), "default", Canonicalization::Relaxed);
        assert!(!MessageSigning::new(vec![ed()]).is_heavy());
        assert!(MessageSigning::new(vec![rsa()]).is_heavy());
        assert!(MessageSigning::new(vec![ed(), rsa()]).is_heavy());
    }

    #[test]
    fn expiry_sets_x_from_the_signing_time() {
        let mut r = request(example_ed25519(), "ed25519", Canonicalization::Relaxed);
        r.expiry = Some(Duration::from_secs(3600));
        let sig = MessageSigning::new(vec![r])
            .finish(&headers(), 1_700_000_000)
            .unwrap()
            .remove(0);
        assert!(sig.value.contains("x=1700003600"), "{}", sig.value);
    }

    #[test]
    fn refuses_a_message_without_from() {
        let mut b = HeaderBlock::new();
        b.push(HeaderField::new(
            Bytes::from_static(b"Subject"),
            Bytes::from_static(b" x"),
        ));
        let m = MessageSigning::new(vec![request(
            example_rsa(),
            "default",
            Canonicalization::Relaxed,
        )]);
        assert_eq!(m.finish(&b, 0), Err(SignError::NoFrom));
    }
}
