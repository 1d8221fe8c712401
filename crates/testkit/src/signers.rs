//! The three signers the verification tests take signed mail from, all
//! real programs: dkim-sidecar's own `sign` (the binary under test),
//! dkimpy's `dkim.sign` (Debian python3-dkim), and (in
//! `verification_parity.rs`) OpenDKIM as a signing milter.

use std::path::Path;
use std::process::{Command, Stdio};

/// A plain message from `local@domain`.
pub fn message(local: &str, domain: &str) -> Vec<u8> {
    format!(
        "From: Sender <{local}@{domain}>\nTo: Bob <bob@example.org>\nSubject: parity {local}\n\
         Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <{local}.parity@{domain}>\n\n\
         Hello Bob,\n\nthis is a test of verification.\n"
    )
    .into_bytes()
}

/// dkim-sidecar `sign` with Domain/Selector/KeyFile (relaxed/simple,
/// From oversigned); `extra` lines go into its opendkim.conf.
pub fn sign_ours(raw: &[u8], domain: &str, selector: &str, key: &Path, extra: &str) -> Vec<u8> {
    let dir = super::scratch_dir("parity-sign");
    let conf = dir.path().join("sign.conf");
    std::fs::write(
        &conf,
        format!(
            "Mode s\nSocket inet:8891@localhost\nDomain {domain}\nSelector {selector}\nKeyFile {}\n\
             Canonicalization relaxed/simple\nOversignHeaders From\n{extra}",
            key.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(super::binary())
        .args(["sign", "-x"])
        .arg(&conf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(raw).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// dkimpy's `dkim.sign` (Debian python3-dkim).
pub struct Dkimpy<'a> {
    pub key: &'a str,
    pub domain: &'a str,
    pub selector: &'a str,
    pub algorithm: &'a str,
    pub canonicalization: &'a str,
    pub length: bool,
    pub identity: Option<&'a str>,
}

impl Dkimpy<'_> {
    pub fn sign(&self, raw: &[u8]) -> Vec<u8> {
        let script = r#"
import sys, dkim
key, dom, sel, alg, canon, length, identity = sys.argv[1:8]
h, b = canon.split("/")
msg = sys.stdin.buffer.read()
sig = dkim.sign(msg, sel.encode(), dom.encode(), key.encode(),
                identity=identity.encode() if identity else None,
                canonicalize=(h.encode(), b.encode()),
                signature_algorithm=alg.encode(),
                include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
                length=length == "yes")
sys.stdout.buffer.write(sig + msg)
"#;
        let mut child = Command::new("/usr/bin/python3")
            .args([
                "-c",
                script,
                self.key,
                self.domain,
                self.selector,
                self.algorithm,
                self.canonicalization,
                if self.length { "yes" } else { "no" },
                self.identity.unwrap_or(""),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 with python3-dkim");
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(raw).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "dkimpy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}
