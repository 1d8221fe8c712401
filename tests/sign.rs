//! Offline signing (`dkim-sidecar sign`'s code path, the milter's filter
//! driven in-process) checked by an independent verifier.

use dkim_sidecar::offline::{Envelope, Outcome, sign};
use testkit::{TestKeys, Verifier};

const MESSAGE: &[u8] =
    b"From: Alice <alice@example.com>\nTo: bob@example.org,\n\tcarol@example.org\n\
Subject: hello\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\nHi Bob.\n\n";

fn internal_client() -> Envelope {
    Envelope {
        client_ip: "127.0.0.1".parse().unwrap(),
        sender: None,
        recipients: vec!["bob@example.org".into()],
        authenticated: false,
    }
}

fn dkimpy_passes(message: &[u8]) -> bool {
    let verdicts = Verifier::DkimPy.verify(message, &TestKeys::load().dns_records());
    assert_eq!(verdicts.len(), 1, "one signature expected: {verdicts:?}");
    verdicts[0].passed()
}

#[test]
fn internal_client_gets_a_signature_dkimpy_accepts() {
    let out = sign(testkit::policy::example(), MESSAGE, &internal_client()).unwrap();
    let Outcome::Signed(signed) = out else {
        panic!("not signed: {out:?}")
    };
    assert!(signed.starts_with(b"DKIM-Signature: v=1; a=rsa-sha256;"));
    assert!(dkimpy_passes(&signed));
    let mut tampered = signed.clone();
    let at = tampered.len() - 4;
    tampered[at] = b'X';
    assert!(!dkimpy_passes(&tampered), "control: a changed body fails");
}

/// `dkim-sidecar sign -x CONF < message`: the signed message, or the
/// daemon's words when it did not sign.
fn sign_with_opendkim_conf(conf: &std::path::Path, message: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(testkit::binary())
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
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && out.stdout.starts_with(b"DKIM-Signature:") {
        Ok(out.stdout)
    } else {
        Err(stderr)
    }
}

#[test]
fn replace_rules_sign_the_masqueraded_from_that_a_later_hop_delivers() {
    let dir = testkit::scratch_dir("replace-rules");
    let keys = TestKeys::copy_into(dir.path());
    // The last line is applied first, as in OpenDKIM: `mail.` goes, then
    // `host.`, leaving the domain Postfix's masquerade_domains delivers.
    std::fs::write(
        dir.path().join("replace.txt"),
        "# masquerading\n@host\\.example\\.com\t@example.com\n@mail\\.host\t@host\n",
    )
    .unwrap();
    let conf = dir.path().join("opendkim.conf");
    let write_conf = |extra: &str| {
        std::fs::write(
            &conf,
            format!(
                "Mode s\nSyslog no\nDomain example.com\nSelector default\nKeyFile {}\n\
                 RequireSafeKeys no\n{extra}",
                keys.rsa.private_key.display()
            ),
        )
        .unwrap();
    };
    let message = b"From: Alice <alice@mail.host.example.com>\nTo: bob@example.org\n\
Subject: masqueraded\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\nHi Bob.\n";

    write_conf("");
    let unsigned = sign_with_opendkim_conf(&conf, message);
    assert!(
        unsigned.is_err(),
        "control: without rules, mail.host.example.com is not example.com's to sign"
    );

    write_conf(&format!(
        "ReplaceRules {}\n",
        dir.path().join("replace.txt").display()
    ));
    let signed = sign_with_opendkim_conf(&conf, message).expect("signed with ReplaceRules");
    let text = String::from_utf8_lossy(&signed);
    assert!(text.contains("d=example.com"), "{text}");
    assert!(
        text.contains("From: Alice <alice@mail.host.example.com>"),
        "the message itself is not rewritten: {text}"
    );
    // The signature covers the From a later hop delivers, not the one sent.
    assert!(!dkimpy_passes(&signed), "control: the From as sent fails");
    let delivered = text.replace("alice@mail.host.example.com", "alice@example.com");
    assert!(dkimpy_passes(delivered.as_bytes()), "{delivered}");

    write_conf(&format!(
        "ReplaceRules {}\nReplaceHeaders csl:To\n",
        dir.path().join("replace.txt").display()
    ));
    assert!(
        sign_with_opendkim_conf(&conf, message).is_err(),
        "ReplaceHeaders without From leaves the From alone"
    );
}
