//! Whole verifications: messages signed by our signer (itself checked by
//! dkimpy and OpenDKIM in the integration tests) with the example keys,
//! verified against the example key records given as test records, then
//! tampered with in every way a verifier must notice.

use std::sync::Arc;

use bytes::Bytes;
use mail_auth::dkim::Canonicalization;

use super::*;
use crate::dkim::{HeaderBlock, HeaderField, HeaderPolicy, MessageSigning, SignRequest};
use crate::dns::{DnsSettings, Resolver, TestRecords};
use crate::keys::{LoadOptions, load_key_file};

const NOW: u64 = 1_700_000_000;

fn key(file: &str) -> Arc<crate::keys::PrivateKey> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("keys-example")
        .join(file);
    let options = LoadOptions {
        require_safe_keys: false,
        ..LoadOptions::default()
    };
    load_key_file(&path, &options).unwrap().key
}

fn record(file: &str) -> String {
    let txt = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("keys-example")
            .join(file),
    )
    .unwrap();
    txt.split('"').skip(1).step_by(2).collect()
}

fn resolver(records: &[(&str, String)]) -> Arc<Resolver> {
    let mut test = TestRecords::default();
    for (name, value) in records {
        test.insert(name, value);
    }
    Arc::new(
        Resolver::new(&DnsSettings {
            test_records: Some(Arc::new(test)),
            ..DnsSettings::default()
        })
        .unwrap(),
    )
}

fn example_resolver() -> Arc<Resolver> {
    resolver(&[
        ("default._domainkey.example.com", record("default.txt")),
        ("ed25519._domainkey.example.com", record("ed25519.txt")),
    ])
}

fn request(file: &str, selector: &str) -> SignRequest {
    SignRequest {
        domain: "example.com".into(),
        selector: selector.into(),
        key: key(file),
        identity: None,
        header_canonicalization: Canonicalization::Relaxed,
        body_canonicalization: Canonicalization::Simple,
        headers: Arc::new(HeaderPolicy::new(
            crate::dkim::headers::DEFAULT_SIGNED_HEADERS.iter().copied(),
            [],
            ["from"],
        )),
        expiry: None,
        body_length: false,
        request_reports: false,
        atps: None,
    }
}

fn headers(fields: &[(&str, &str)]) -> HeaderBlock {
    let mut b = HeaderBlock::new();
    for (n, v) in fields {
        b.push(HeaderField::new(
            Bytes::copy_from_slice(n.as_bytes()),
            Bytes::copy_from_slice(v.as_bytes()),
        ));
    }
    b
}

const FIELDS: &[(&str, &str)] = &[
    ("From", " Alice <alice@example.com>"),
    ("To", " bob@example.org"),
    ("Subject", " hello\n\tthere"),
];
const BODY: &[u8] = b"Hi Bob.\r\n\r\nSee you.\r\n";

/// The fields with signatures on top, as the signer inserts them.
fn signed(requests: Vec<SignRequest>, fields: &[(&str, &str)], body: &[u8]) -> HeaderBlock {
    let mut signing = MessageSigning::new(requests);
    signing.body(body);
    let signatures = signing.finish(&headers(fields), NOW).unwrap();
    let mut all: Vec<(String, String)> = signatures
        .into_iter()
        .rev()
        .map(|s| ("DKIM-Signature".to_string(), s.value))
        .collect();
    all.reverse();
    all.extend(fields.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    headers(&pairs)
}

fn verify_with(
    block: &HeaderBlock,
    body: &[&[u8]],
    resolver: &Arc<Resolver>,
    settings: &VerifySettings,
) -> Vec<SignatureVerdict> {
    let mut v = MessageVerification::start(block, settings, resolver, NOW);
    assert!(v.keys_ready().is_none(), "test records answer at once");
    for chunk in body {
        v.body(chunk);
    }
    v.finish(block)
}

fn verify(block: &HeaderBlock, body: &[u8]) -> Vec<SignatureVerdict> {
    verify_with(
        block,
        &[body],
        &example_resolver(),
        &VerifySettings::default(),
    )
}

fn results(verdicts: &[SignatureVerdict]) -> Vec<(DkimResult, Option<Problem>)> {
    verdicts
        .iter()
        .map(|v| (v.result, v.problem.clone()))
        .collect()
}

#[test]
fn rsa_and_ed25519_signatures_pass_with_their_details() {
    let block = signed(
        vec![
            request("default.private", "default"),
            request("ed25519.private", "ed25519"),
        ],
        FIELDS,
        BODY,
    );
    let verdicts = verify(&block, BODY);
    assert_eq!(
        results(&verdicts),
        vec![(DkimResult::Pass, None), (DkimResult::Pass, None)]
    );
    assert_eq!(verdicts[0].domain.as_deref(), Some("example.com"));
    assert_eq!(verdicts[0].selector.as_deref(), Some("default"));
    assert_eq!(verdicts[0].identity.as_deref(), Some("@example.com"));
    assert_eq!(verdicts[0].algorithm, Some("rsa-sha256"));
    assert_eq!(verdicts[0].key_bits, Some(2048));
    assert_eq!(verdicts[1].algorithm, Some("ed25519-sha256"));
    assert_eq!(verdicts[1].key_bits, None);
    assert!(verdicts[0].b.len() > 300 && !verdicts[0].b.contains(char::is_whitespace));
}

#[test]
fn the_body_may_arrive_in_any_pieces() {
    let block = signed(vec![request("default.private", "default")], FIELDS, BODY);
    for cut in 0..BODY.len() {
        let verdicts = verify_with(
            &block,
            &[&BODY[..cut], &BODY[cut..]],
            &example_resolver(),
            &VerifySettings::default(),
        );
        assert!(verdicts[0].is_pass(), "cut at {cut}: {verdicts:?}");
    }
}

#[test]
fn a_changed_body_or_signed_header_fails() {
    let block = signed(vec![request("default.private", "default")], FIELDS, BODY);
    assert_eq!(
        results(&verify(&block, b"Hi Bob.\r\n\r\nSee you!\r\n")),
        vec![(DkimResult::Fail, Some(Problem::BodyHashMismatch))]
    );
    let mut fields: Vec<(String, String)> = block
        .fields()
        .iter()
        .map(|f| {
            (
                String::from_utf8_lossy(&f.name).into_owned(),
                String::from_utf8_lossy(&f.value).into_owned(),
            )
        })
        .collect();
    fields[3].1 = " hello there, changed".into();
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        results(&verify(&headers(&pairs), BODY)),
        vec![(DkimResult::Fail, Some(Problem::BadSignature))]
    );
}

#[test]
fn an_added_unsigned_header_passes_and_an_added_from_fails() {
    let block = signed(vec![request("default.private", "default")], FIELDS, BODY);
    let mut more = block.clone();
    more.push(HeaderField::new(
        Bytes::from_static(b"X-Spam"),
        Bytes::from_static(b" no"),
    ));
    assert!(verify(&more, BODY)[0].is_pass());
    // From is oversigned: a second From breaks the signature.
    let mut from = block;
    from.push(HeaderField::new(
        Bytes::from_static(b"From"),
        Bytes::from_static(b" mallory@example.net"),
    ));
    assert_eq!(verify(&from, BODY)[0].result, DkimResult::Fail);
}

#[test]
fn key_problems_are_permanent_errors_and_a_missing_key_says_so() {
    let block = signed(vec![request("default.private", "default")], FIELDS, BODY);
    let check = |txt: &str| {
        let r = resolver(&[("default._domainkey.example.com", txt.to_string())]);
        verify_with(&block, &[BODY], &r, &VerifySettings::default()).remove(0)
    };
    let revoked = check("v=DKIM1; k=rsa; p=");
    assert_eq!(
        (revoked.result, revoked.problem),
        (DkimResult::PermError, Some(Problem::Revoked))
    );
    let wrong = check(&record("ed25519.txt"));
    assert_eq!(wrong.problem, Some(Problem::KeyTypeMismatch));
    let other = openssl::rsa::Rsa::generate(2048).unwrap();
    let other_rsa = check(&format!(
        "v=DKIM1; k=rsa; p={}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            openssl::pkey::PKey::from_rsa(other)
                .unwrap()
                .public_key_to_der()
                .unwrap()
        )
    ));
    assert_eq!(
        (other_rsa.result, other_rsa.problem),
        (DkimResult::Fail, Some(Problem::BadSignature))
    );
    let missing =
        verify_with(&block, &[BODY], &resolver(&[]), &VerifySettings::default()).remove(0);
    assert_eq!(
        (missing.result, missing.problem.clone(), missing.key_missing),
        (DkimResult::PermError, Some(Problem::KeyNotFound), true)
    );
}

#[test]
fn l_limits_the_body_and_a_body_shorter_than_l_fails() {
    // Our signer never sets l=: mail-auth's signer makes this one.
    let block = signed_with_length(BODY.len() as u64);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let check = |body: &[u8]| {
        let mut v = MessageVerification::start(
            &block,
            &VerifySettings::default(),
            &example_resolver(),
            now,
        );
        v.body(body);
        let verdict = v.finish(&block).remove(0);
        (verdict.result, verdict.problem)
    };
    let mut appended = BODY.to_vec();
    appended.extend_from_slice(b"Appended by a list.\r\n");
    assert_eq!(check(&appended), (DkimResult::Pass, None));
    assert_eq!(check(BODY), (DkimResult::Pass, None));
    assert_eq!(
        check(b"Hi\r\n"),
        (DkimResult::Fail, Some(Problem::LengthBeyondBody))
    );
}

/// A signature with `l=` over [`BODY`], made with mail-auth's own signer.
fn signed_with_length(length: u64) -> HeaderBlock {
    use mail_auth::common::crypto::{RsaKey, Sha256};
    use mail_auth::dkim::DkimSigner;
    let pem = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("keys-example/default.private"),
    )
    .unwrap();
    let der = pem::parse(&pem).unwrap();
    let key = RsaKey::<Sha256>::from_key_der(
        rustls_pki_types::PrivateKeyDer::try_from(der.contents()).unwrap(),
    )
    .unwrap();
    let message = [
        "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: hello\r\n\tthere\r\n\r\n"
            .as_bytes(),
        BODY,
    ]
    .concat();
    let signature = DkimSigner::from_key(key)
        .domain("example.com")
        .selector("default")
        .headers(["From", "To", "Subject"])
        .body_length(true)
        .sign(&message)
        .unwrap();
    let mut value = Vec::new();
    use mail_auth::common::headers::HeaderWriter as _;
    signature.write_header(&mut value);
    let text = String::from_utf8(value).unwrap();
    let value = text
        .strip_prefix("DKIM-Signature:")
        .unwrap()
        .trim_end_matches("\r\n")
        .replace("\r\n", "\n");
    assert!(value.contains(&format!("l={length}")), "{value}");
    let mut fields = vec![("DKIM-Signature", value.as_str())];
    fields.extend_from_slice(FIELDS);
    headers(&fields)
}

#[test]
fn only_the_top_signatures_are_verified_and_the_rest_are_neutral() {
    let block = signed(
        vec![
            request("default.private", "default"),
            request("ed25519.private", "ed25519"),
            request("default.private", "default"),
            request("ed25519.private", "ed25519"),
        ],
        FIELDS,
        BODY,
    );
    let verdicts = verify(&block, BODY);
    assert_eq!(
        results(&verdicts),
        vec![
            (DkimResult::Pass, None),
            (DkimResult::Pass, None),
            (DkimResult::Pass, None),
            (DkimResult::Neutral, Some(Problem::NotVerified)),
        ]
    );
    let all = VerifySettings {
        max_signatures: 0,
        ..VerifySettings::default()
    };
    let verdicts = verify_with(&block, &[BODY], &example_resolver(), &all);
    assert!(verdicts.iter().all(SignatureVerdict::is_pass));
}

#[test]
fn a_thousand_signatures_cost_a_bounded_amount_of_work() {
    let one = signed(vec![request("ed25519.private", "ed25519")], FIELDS, BODY);
    let signature = one.fields()[0].clone();
    let mut block = HeaderBlock::new();
    for _ in 0..1000 {
        block.push(signature.clone());
    }
    for f in FIELDS {
        block.push(HeaderField::new(
            Bytes::copy_from_slice(f.0.as_bytes()),
            Bytes::copy_from_slice(f.1.as_bytes()),
        ));
    }
    let v =
        MessageVerification::start(&block, &VerifySettings::default(), &example_resolver(), NOW);
    assert_eq!(v.hasher_count(), 1, "identical signatures share one hasher");
    let verdicts = verify(&block, BODY);
    assert_eq!(verdicts.len(), message::MAX_REPORTED);
    assert_eq!(verdicts.iter().filter(|v| v.is_pass()).count(), 3);
}

#[test]
fn keys_too_small_for_minimum_key_bits_give_policy() {
    let block = signed(vec![request("default.private", "default")], FIELDS, BODY);
    let strict = VerifySettings {
        minimum_key_bits: 4096,
        ..VerifySettings::default()
    };
    let verdict = verify_with(&block, &[BODY], &example_resolver(), &strict).remove(0);
    assert_eq!(
        (verdict.result, verdict.problem, verdict.key_bits),
        (DkimResult::Policy, Some(Problem::KeyTooSmall), Some(2048))
    );
}

#[test]
fn the_deciding_signature_is_the_first_pass_else_the_top_one() {
    let block = signed(
        vec![
            request("default.private", "default"),
            request("ed25519.private", "ed25519"),
        ],
        FIELDS,
        BODY,
    );
    let only_ed = resolver(&[("ed25519._domainkey.example.com", record("ed25519.txt"))]);
    let verdicts = verify_with(&block, &[BODY], &only_ed, &VerifySettings::default());
    assert_eq!(verdicts[0].result, DkimResult::PermError);
    assert_eq!(
        decisive(&verdicts).unwrap().selector.as_deref(),
        Some("ed25519")
    );
    let none = verify_with(&block, &[BODY], &resolver(&[]), &VerifySettings::default());
    assert_eq!(
        decisive(&none).unwrap().selector.as_deref(),
        Some("default")
    );
}
