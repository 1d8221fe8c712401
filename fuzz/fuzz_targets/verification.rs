//! `verification`: DKIM-Signature fields and key records, as a verifier
//! meets them.
//!
//! The input is split at `\n\0\n` into a signature field value, a key
//! record, a body and an Authentication-Results value (so the seeds in
//! `corpus/verification/` are readable: real signatures and records). The field is read
//! the way the milter reads it (`verify::signature::read`); when it names
//! a key, the record is published at that name (TestPublicKeys, as
//! OpenDKIM's test aid) and the whole verification runs: the field with
//! one and two copies, the body in two pieces, then the verdicts become an
//! Authentication-Results field. The fuzzed Authentication-Results value
//! goes through the forged-field reader.
//!
//! Findings are panics and runaway time or memory; the checks: one verdict
//! per field, a pass only when the record is a key, and our own field read
//! back as ours and with a dkim result, free of CR and NUL.

#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use dkim_sidecar::auth_results::{self, Removal};
use dkim_sidecar::dkim::{HeaderBlock, HeaderField};
use dkim_sidecar::dns::{DnsSettings, Resolver, TestRecords};
use dkim_sidecar::verify::{MessageVerification, VerifySettings, signature};
use libfuzzer_sys::fuzz_target;

struct Input<'a> {
    signature: &'a [u8],
    record: &'a [u8],
    body: &'a [u8],
    existing: &'a [u8],
}

impl<'a> Input<'a> {
    fn split(data: &'a [u8]) -> Input<'a> {
        let mut parts = Vec::with_capacity(4);
        let mut rest = data;
        while parts.len() < 3 {
            match rest.windows(3).position(|w| w == b"\n\0\n") {
                Some(at) => {
                    parts.push(&rest[..at]);
                    rest = &rest[at + 3..];
                }
                None => break,
            }
        }
        parts.push(rest);
        parts.resize(4, &[][..]);
        Input {
            signature: parts[0],
            record: parts[1],
            body: parts[2],
            existing: parts[3],
        }
    }
}

/// After any t= a seed carries (signatures made now), before none expires.
const NOW: u64 = 4_000_000_000;

fuzz_target!(|data: &[u8]| {
    let input = Input::split(data);
    let removal = Removal {
        authserv_id: "mx.fuzz.example".into(),
        from: None,
        all: false,
    };
    let _ = removal.removes(input.existing);
    let _ = auth_results::read_existing(input.existing);

    let (_, parsed) = signature::read(input.signature, NOW, 300);
    let mut records = TestRecords::default();
    if let Ok(parsed) = &parsed {
        records.insert(
            &parsed.key_name(),
            &String::from_utf8_lossy(input.record),
        );
    }
    let resolver = Arc::new(
        Resolver::new(&DnsSettings {
            test_records: Some(Arc::new(records)),
            ..DnsSettings::default()
        })
        .expect("test records need no system configuration"),
    );
    for copies in [1usize, 2] {
        let mut headers = HeaderBlock::new();
        for _ in 0..copies {
            headers.push(HeaderField::new(
                Bytes::from_static(b"DKIM-Signature"),
                Bytes::copy_from_slice(input.signature),
            ));
        }
        headers.push(HeaderField::new(
            Bytes::from_static(b"From"),
            Bytes::from_static(b" someone@example.com"),
        ));
        let mut verification =
            MessageVerification::start(&headers, &VerifySettings::default(), &resolver, NOW);
        assert!(verification.keys_ready().is_none(), "test records answer at once");
        let cut = input.body.len() / 2;
        verification.body(&input.body[..cut]);
        verification.body(&input.body[cut..]);
        let verdicts = verification.finish(&headers);
        assert_eq!(verdicts.len(), copies);
        for verdict in &verdicts {
            if verdict.is_pass() {
                assert!(
                    String::from_utf8_lossy(input.record).contains("p="),
                    "a pass without a key: {verdict:?}"
                );
            }
        }
        let field = auth_results::field_value("mx.fuzz.example", &verdicts, true);
        assert!(!field.contains('\r') && !field.contains('\0'), "{field:?}");
        let read = auth_results::read_existing(field.as_bytes()).expect("our own field reads");
        assert_eq!(read.authserv_id, "mx.fuzz.example", "{field:?}");
        assert!(read.has_dkim, "{field:?}");
    }
});
