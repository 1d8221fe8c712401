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
