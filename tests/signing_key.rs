//! A loaded `PrivateKey` signs through mail-auth (the path the signer will
//! take), and dkimpy verifies the signature against the record keygen wrote.

use std::fs;

use dkim_sidecar::keys::{LoadOptions, load_key_file};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::DkimSigner;
use testkit::command::*;
use testkit::dnsmasq::*;

const MESSAGE: &str = "From: a@example.com\r\nTo: b@example.org\r\nSubject: test\r\n\
                       Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nHello.\r\n";

fn dkimpy_verifies(message: &[u8], record: &str) -> bool {
    let script = r#"
import sys, dkim
record = sys.argv[1].encode()
print("PASS" if dkim.verify(sys.stdin.buffer.read(), dnsfunc=lambda name, timeout=5: record) else "FAIL")
"#;
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script, record])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 with dkimpy must be installed (Debian package python3-dkim)");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    match String::from_utf8_lossy(&out.stdout).trim() {
        "PASS" => true,
        "FAIL" => false,
        other => panic!("unexpected dkimpy output: {other}"),
    }
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
        assert!(dkimpy_verifies(signed.as_bytes(), &record), "{selector}");
        // Control: a tampered body must fail.
        assert!(!dkimpy_verifies(
            signed.replace("Hello.", "Hello!").as_bytes(),
            &record
        ));
    }
}
