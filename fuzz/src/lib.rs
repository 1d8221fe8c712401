//! What the fuzz targets share: the example signing policy (built once
//! per process from `keys-example/`), a verifier holding the example
//! public key instead of DNS, and the checks every target makes on what
//! the signing filter answers at end of message.
//!
//! The policy signs for `example.com` with the Ed25519 example key only:
//! an RSA-2048 signature costs about a millisecond, which would make the
//! fuzzers spend their time in the private-key operation instead of in our
//! parsing and state code. Everything around the key operation is the same
//! code for both algorithms.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use milter_bench::verify::{KeyRecords, Verifier};
use milter::Reply;
use dkim_sidecar::signing::LivePolicy;

/// The repository's `keys-example/` directory.
pub fn example_keys() -> PathBuf {
    testkit::repo_root().join("keys-example")
}

/// The `opendkim.conf` the signing targets run with: internal hosts sign,
/// others are checked for SMTP AUTH, From headers of `example.com` (and
/// its subdomains) are signed with the Ed25519 example key.
pub fn example_conf() -> String {
    format!(
        "Mode s\n\
         Syslog no\n\
         Socket inet:8891@localhost\n\
         Domain example.com\n\
         SubDomains yes\n\
         Selector ed25519\n\
         KeyFile {}\n\
         RequireSafeKeys no\n\
         Canonicalization relaxed/simple\n\
         InternalHosts 127.0.0.1, ::1, 10.0.0.0/8\n\
         OversignHeaders From\n\
         MaximumHeaders 4096\n",
        example_keys().join("ed25519.private").display()
    )
}

/// The example policy, loaded once per process through the real
/// `opendkim.conf` loader.
pub fn live_policy() -> Arc<LivePolicy> {
    static LIVE: OnceLock<Arc<LivePolicy>> = OnceLock::new();
    Arc::clone(LIVE.get_or_init(|| {
        Arc::new(LivePolicy::new(testkit::policy::load(&example_conf())))
    }))
}

/// The DKIM-Signature fields among the end-of-message replies, as
/// (name, value) in the order sent.
pub fn signature_fields(replies: &[Reply]) -> Vec<(Bytes, Bytes)> {
    replies
        .iter()
        .filter_map(|r| match r {
            Reply::InsertHeader { name, value, .. } | Reply::AddHeader { name, value } => {
                Some((name.clone(), value.clone()))
            }
            _ => None,
        })
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"DKIM-Signature"))
        .collect()
}

/// Panics unless every field we added parses as a DKIM-Signature naming
/// the example domain and selector.
pub fn assert_signatures_parse(fields: &[(Bytes, Bytes)]) {
    for (_, value) in fields {
        // The value reaches the MTA folded with bare LF; on the wire
        // Postfix writes CRLF.
        let wire = crlf_folding(value);
        let signature = mail_auth::dkim::Signature::parse(&wire).unwrap_or_else(|e| {
            panic!(
                "we inserted a DKIM-Signature that does not parse ({e}): {:?}",
                String::from_utf8_lossy(value)
            )
        });
        assert_eq!(signature.d, "example.com", "d= of {signature:?}");
        assert_eq!(signature.s, "ed25519", "s= of {signature:?}");
    }
}

/// A header value folded with bare LF, as it is written into a message.
pub fn crlf_folding(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 16);
    for &b in value {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Verifies `message` (signature fields already on top) against the
/// example public key; `Err` says what failed.
pub fn verify(message: &[u8], expected: usize) -> Result<(), String> {
    static VERIFIER: OnceLock<(tokio::runtime::Runtime, Verifier)> = OnceLock::new();
    let (runtime, verifier) = VERIFIER.get_or_init(|| {
        let mut records = KeyRecords::new();
        records
            .add_file(&example_keys().join("ed25519.txt"), "example.com")
            .expect("the example public key record");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime");
        let verifier = Verifier::new(Arc::new(records)).expect("a verifier");
        (runtime, verifier)
    });
    runtime.block_on(verifier.verify(message, expected))
}
