//! A loaded `PrivateKey` signs through mail-auth (the path the signer will
//! take), and dkimpy verifies the signature against the record keygen wrote.

use std::fs;

use base64::Engine as _;

use dkim_sidecar::keys::{LoadOptions, load_key_file};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::DkimSigner;
use testkit::command::sidecar;
use testkit::dnsmasq::zone_strings;
use testkit::{DnsRecords, Verifier};

const MESSAGE: &str = "From: a@example.com\r\nTo: b@example.org\r\nSubject: test\r\n\
                       Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nHello.\r\n";

/// dkimpy's verdict on the message's one signature, with `record`
/// published for `selector` at example.com.
fn dkimpy_verifies(message: &[u8], selector: &str, record: &str) -> bool {
    let mut records = DnsRecords::default();
    records.insert(&format!("{selector}._domainkey.example.com"), record);
    let verdicts = Verifier::DkimPy.verify(message, &records);
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
    verdicts[0].passed()
}

#[test]
fn loaded_keys_sign_through_mail_auth_and_dkimpy_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 1024-bit RSA signs through OpenSSL, larger RSA and Ed25519 through
    // aws-lc-rs: every path must produce signatures dkimpy accepts.
    for (selector, algorithm, bits) in [
        ("rsa1024", "rsa", "1024"),
        ("rsa", "rsa", "2048"),
        ("rsa4096", "rsa", "4096"),
        ("ed", "ed25519", "2048"),
    ] {
        let args = [
            "keygen",
            "-D",
            d.to_str().unwrap(),
            "-d",
            "example.com",
            "-s",
            selector,
            "-b",
            bits,
            "--algorithm",
            algorithm,
        ];
        assert!(sidecar(&args, d).status.success());
        let loaded = load_key_file(
            &d.join(format!("{selector}.private")),
            &LoadOptions::default(),
        )
        .expect("keygen's key loads");
        let signature = DkimSigner::from_key(&*loaded.key)
            .domain("example.com")
            .selector(selector)
            .headers(["From", "To", "Subject", "Date"])
            .sign(MESSAGE.as_bytes())
            .unwrap();
        let signed = format!("{}{MESSAGE}", signature.to_header());
        let record = zone_strings(&fs::read_to_string(d.join(format!("{selector}.txt"))).unwrap());
        assert!(
            dkimpy_verifies(signed.as_bytes(), selector, &record),
            "{selector}"
        );
        // Control: a tampered body must fail.
        assert!(!dkimpy_verifies(
            signed.replace("Hello.", "Hello!").as_bytes(),
            selector,
            &record
        ));
    }
}

/// dkimpy writes an Ed25519 key as the base64 of its 32-byte seed.
#[test]
fn loads_dkimpy_raw_base64_ed25519_seed() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let status = std::process::Command::new("dknewkey")
        .args(["--ktype", "ed25519", "dkimpy"])
        .current_dir(dir.path())
        .output()
        .expect("dknewkey must be installed (Debian package python3-dkim)");
    assert!(status.status.success());
    let seed = fs::read_to_string(path("dkimpy.key")).unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(seed.trim())
            .unwrap()
            .len(),
        32
    );
    let dns = fs::read_to_string(path("dkimpy.dns")).unwrap();
    let expected = dns.split("p=").nth(1).unwrap().trim();
    let key = load_key_file(&path("dkimpy.key"), &LoadOptions::default())
        .unwrap()
        .key;
    assert_eq!(key.public_key_base64(), expected);
}
