//! Every signature dkim-sidecar makes verifies with two independent
//! verifiers: dkimpy (python3-dkim) and OpenDKIM's own (`opendkim -t` with
//! TestPublicKeys), for header canonicalization {relaxed, simple} x body
//! canonicalization {relaxed, simple} x keys {RSA 1024, RSA 2048, RSA 4096,
//! Ed25519}, over messages chosen to stress canonicalization (folded
//! fields, trailing white space, an empty body, no final newline, 8-bit
//! bytes, CRLF).
//!
//! The keys are made at test time with `dkim-sidecar keygen`. Each
//! canonicalization is one opendkim.conf whose SigningTable gives all four
//! keys to example.com with `MultipleSignatures yes`, so one
//! `dkim-sidecar sign -x` (the milter's own code path) puts four
//! signatures on a message and each verifier checks all four at once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use testkit::verify::{Expected, Verdict, Verifier};
use testkit::{DnsRecords, TestKey};

/// The messages, LF line ends unless the name says otherwise.
const MESSAGES: &[(&str, &[u8])] = &[
    (
        "plain",
        b"From: Alice <alice@example.com>\nTo: Bob <bob@example.org>\nSubject: plain\n\
          Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <plain@example.com>\n\nHello Bob.\n",
    ),
    (
        "plain-crlf",
        b"From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\nSubject: crlf\r\n\
          Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nHello Bob.\r\nSecond line.\r\n",
    ),
    (
        "folded-headers",
        b"From: \"Alice Liddell\"\n\t<alice@example.com>\nTo: bob@example.org,\n carol@example.org,\n\
          \tdave@example.org\nSubject: a subject that is folded\n  over two lines\n\
          Date: Mon, 1 Jan 2024 00:00:00 +0000\nReferences: <a@example.com>\n <b@example.com>\n\
          \n\
          Body.\n",
    ),
    (
        "trailing-whitespace",
        b"From: alice@example.com \nTo: bob@example.org\t\nSubject: two  spaces   inside, trailing   \n\
          Cc: carol@example.org \t \nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\n\
          trailing spaces   \n\ttabbed\t \n  \n\n\n",
    ),
    (
        "empty-body",
        b"From: alice@example.com\nTo: bob@example.org\nSubject: empty body\n\
          Date: Mon, 1 Jan 2024 00:00:00 +0000\n\n",
    ),
    (
        "no-final-newline",
        b"From: alice@example.com\nTo: bob@example.org\nSubject: no final newline\n\
          Date: Mon, 1 Jan 2024 00:00:00 +0000\n\nfirst line\nlast line without newline",
    ),
    (
        "eight-bit",
        "From: Ålice <alice@example.com>\nTo: bob@example.org\nSubject: Grüße ✓ naïve\n\
         Date: Mon, 1 Jan 2024 00:00:00 +0000\nMIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\
         Grüße aus Köln, ça va ?\nЗдравствуйте\n"
            .as_bytes(),
    ),
];

/// A field with a run of spaces after its colon. With simple header
/// canonicalization OpenDKIM's verifier collapses that run before hashing
/// (its header parsing), so it reports a failure for a correct signature
/// that dkimpy accepts: this message is checked by dkimpy alone there, and
/// by both verifiers with relaxed header canonicalization.
const SPACES_AFTER_COLON: &[u8] = b"From: alice@example.com\nTo:    bob@example.org\n\
    Subject:    four spaces after the colon\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\nBody.\n";

/// The keys, made once with `dkim-sidecar keygen`.
struct Keys {
    dir: tempfile::TempDir,
    keys: Vec<TestKey>,
    records: DnsRecords,
}

fn make_keys() -> Keys {
    let dir = testkit::scratch_dir("signature-matrix-keys");
    let specs: [(&str, &str, &[&str]); 4] = [
        ("rsa1024", "rsa-sha256", &["-b", "1024"]),
        ("rsa2048", "rsa-sha256", &["-b", "2048"]),
        ("rsa4096", "rsa-sha256", &["-b", "4096"]),
        ("ed25519", "ed25519-sha256", &["--algorithm", "ed25519"]),
    ];
    let keys: Vec<TestKey> = std::thread::scope(|s| {
        let made: Vec<_> = specs
            .iter()
            .map(|(selector, algorithm, args)| {
                let dir = dir.path();
                s.spawn(move || {
                    let out = Command::new(env!("CARGO_BIN_EXE_dkim-sidecar"))
                        .args(["keygen", "-d", "example.com", "-s", selector, "-D"])
                        .arg(dir)
                        .args(*args)
                        .output()
                        .expect("run dkim-sidecar keygen");
                    assert!(
                        out.status.success(),
                        "keygen {selector}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let zone = std::fs::read_to_string(dir.join(format!("{selector}.txt")))
                        .expect("keygen writes SELECTOR.txt");
                    TestKey {
                        domain: "example.com".to_string(),
                        selector: selector.to_string(),
                        algorithm,
                        private_key: dir.join(format!("{selector}.private")),
                        txt: zone.split('"').skip(1).step_by(2).collect(),
                    }
                })
            })
            .collect();
        made.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut records = DnsRecords::default();
    for key in &keys {
        records.insert(&key.record_name(), &key.txt);
    }
    let key_table: String = keys
        .iter()
        .map(|k| {
            format!(
                "{} example.com:{}:{}\n",
                k.selector,
                k.selector,
                k.private_key.display()
            )
        })
        .collect();
    let signing_table: String = keys
        .iter()
        .map(|k| format!("*@example.com {}\n", k.selector))
        .collect();
    std::fs::write(dir.path().join("KeyTable"), key_table).unwrap();
    std::fs::write(dir.path().join("SigningTable"), signing_table).unwrap();
    Keys { dir, keys, records }
}

/// An opendkim.conf giving every key to example.com, with this
/// canonicalization.
fn write_config(keys: &Keys, canonicalization: &str) -> PathBuf {
    let dir = keys.dir.path();
    let name = canonicalization.replace('/', "-");
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "Mode s\nSyslog no\nCanonicalization {canonicalization}\nMultipleSignatures yes\n\
             KeyTable file:{dir}/KeyTable\nSigningTable refile:{dir}/SigningTable\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    conf
}

/// `dkim-sidecar sign -x CONF < message`: the signed message.
fn sign(conf: &Path, message: &[u8]) -> Vec<u8> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dkim-sidecar"))
        .arg("sign")
        .arg("-x")
        .arg(conf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dkim-sidecar sign");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkim-sidecar sign -x {} did not sign:\n{}",
        conf.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The `c=` tag of every DKIM-Signature field in `message`.
fn canonicalization_tags(message: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(message);
    let header = text.split("\n\n").next().unwrap_or_default();
    let header = header.split("\r\n\r\n").next().unwrap_or_default();
    let mut fields: Vec<String> = Vec::new();
    for line in header.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push_str(line);
            }
        } else {
            fields.push(line.to_string());
        }
    }
    fields
        .iter()
        .filter_map(|f| f.strip_prefix("DKIM-Signature:"))
        .map(|value| {
            value
                .split(';')
                .find_map(|tag| {
                    let (k, v) = tag.split_once('=')?;
                    (k.trim() == "c").then(|| v.split_whitespace().collect::<String>())
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Asserts that `verifier` finds exactly the four signatures on `signed`
/// and that each passes.
fn assert_verifies(verifier: Verifier, signed: &[u8], keys: &Keys, what: &str) {
    let verdicts = verifier.verify(signed, &keys.records);
    let mut signers: Vec<Expected> = verdicts.iter().map(Verdict::signer).collect();
    signers.sort();
    let mut wanted: Vec<Expected> = keys.keys.iter().map(Expected::from).collect();
    wanted.sort();
    assert!(
        signers == wanted && verdicts.iter().all(Verdict::passed),
        "{what}, {verifier:?}: expected {wanted:?} to pass, got {verdicts:#?}\nmessage:\n{}",
        String::from_utf8_lossy(signed)
    );
}

/// Signs every message with `canonicalization` and has both verifiers
/// check all four signatures on each.
fn check(keys: &Keys, canonicalization: &str) {
    let conf = write_config(keys, canonicalization);
    for (name, message) in MESSAGES {
        let what = format!("{canonicalization} {name}");
        let signed = sign(&conf, message);
        assert!(
            signed.ends_with(message),
            "{what}: the message itself must be unchanged"
        );
        assert_eq!(
            canonicalization_tags(&signed),
            vec![canonicalization.to_string(); 4],
            "{what}"
        );
        assert_verifies(Verifier::DkimPy, &signed, keys, &what);
        // `opendkim -t` reads the file by lines and reports "message not
        // signed" when the last one has no newline. Adding it changes no
        // signature: both canonicalizations add a missing final CRLF.
        let mut for_opendkim = signed.clone();
        if !for_opendkim.ends_with(b"\n") {
            for_opendkim.push(b'\n');
        }
        assert_verifies(Verifier::OpenDkim, &for_opendkim, keys, &what);
    }
    let signed = sign(&conf, SPACES_AFTER_COLON);
    let what = format!("{canonicalization} spaces-after-colon");
    assert_verifies(Verifier::DkimPy, &signed, keys, &what);
    if canonicalization.starts_with("relaxed") {
        assert_verifies(Verifier::OpenDkim, &signed, keys, &what);
    }
}

#[test]
fn every_canonicalization_and_key_verifies_with_dkimpy_and_opendkim() {
    testkit::require_program("/usr/sbin/opendkim", "opendkim");
    let keys = make_keys();
    std::thread::scope(|s| {
        let runs: Vec<_> = [
            "relaxed/relaxed",
            "relaxed/simple",
            "simple/relaxed",
            "simple/simple",
        ]
        .into_iter()
        .map(|c| {
            let keys = &keys;
            s.spawn(move || check(keys, c))
        })
        .collect();
        for run in runs {
            if let Err(panic) = run.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });

    // The control: the same verifiers reject all four signatures once the
    // signed body changes.
    let signed = sign(&write_config(&keys, "relaxed/relaxed"), MESSAGES[0].1);
    let changed = String::from_utf8(signed)
        .unwrap()
        .replace("Hello Bob.", "Hello Eve.");
    for verifier in Verifier::BOTH {
        let verdicts = verifier.verify(changed.as_bytes(), &keys.records);
        assert_eq!(verdicts.len(), 4, "{verifier:?}: {verdicts:#?}");
        assert!(
            verdicts.iter().all(|v| !v.passed()),
            "control: {verifier:?} passed a changed message: {verdicts:#?}"
        );
    }
}
