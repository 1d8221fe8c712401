//! Two independent DKIM verifiers, both offline: the TXT records come from
//! the test ([`DnsRecords`]), never from DNS.
//!
//! - [`Verifier::DkimPy`]: dkimpy (Debian python3-dkim) through
//!   `verify_dkim.py`, which checks every DKIM-Signature on its own
//!   (`DKIM.verify(idx=i)`).
//! - [`Verifier::OpenDkim`]: `opendkim -t` with `Mode v` and
//!   `TestPublicKeys`. Its one-line summary reports the first signature
//!   only (and calls an Ed25519 key "0-bit"), so the per-signature results
//!   are read from the Authentication-Results header it prints instead.
//!
//! A signature counts as correct only when both say pass:
//! [`assert_signed_by`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::keys::{DnsRecords, TestKey};

/// Pass or fail, with the verifier's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
}

/// One verifier's result for one DKIM-Signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `d=`
    pub domain: String,
    /// `s=`
    pub selector: String,
    /// `a=`, e.g. `rsa-sha256`, `ed25519-sha256`.
    pub algorithm: String,
    pub outcome: Outcome,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Pass
    }

    /// The `(d=, s=, a=)` this verdict is about.
    pub fn signer(&self) -> Expected {
        Expected {
            domain: self.domain.clone(),
            selector: self.selector.clone(),
            algorithm: self.algorithm.clone(),
        }
    }
}

/// A signature a test expects on a message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expected {
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
}

impl From<&TestKey> for Expected {
    fn from(key: &TestKey) -> Self {
        Expected {
            domain: key.domain.clone(),
            selector: key.selector.clone(),
            algorithm: key.algorithm.to_string(),
        }
    }
}

/// An independent DKIM verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verifier {
    /// dkimpy, run by Debian's /usr/bin/python3.
    DkimPy,
    /// OpenDKIM's verifier, offline (`opendkim -x verify.conf -t FILE`).
    OpenDkim,
}

impl Verifier {
    pub const BOTH: [Verifier; 2] = [Verifier::DkimPy, Verifier::OpenDkim];

    /// One verdict per DKIM-Signature, topmost first.
    pub fn verify(self, message: &[u8], records: &DnsRecords) -> Vec<Verdict> {
        match self {
            Verifier::DkimPy => verify_with_dkimpy(message, records),
            Verifier::OpenDkim => verify_with_opendkim(message, records),
        }
    }
}

fn verify_with_dkimpy(message: &[u8], records: &DnsRecords) -> Vec<Verdict> {
    super::require_program(
        "/usr/lib/python3/dist-packages/dkim/__init__.py",
        "python3-dkim",
    );
    let dir = super::scratch_dir("dkimpy");
    let records_path = dir.path().join("records.json");
    std::fs::write(&records_path, records.to_json()).expect("write records.json");
    let output = run_with_stdin(
        Command::new("/usr/bin/python3")
            .arg(script_path())
            .arg(&records_path),
        message,
    );
    let report: serde_json::Value = serde_json::from_slice(&output).unwrap_or_else(|e| {
        panic!(
            "verify_dkim.py printed {:?}: {e}",
            String::from_utf8_lossy(&output)
        )
    });
    report["signatures"]
        .as_array()
        .expect("verify_dkim.py reports a signatures list")
        .iter()
        .map(|signature| {
            let tag = |name: &str| signature[name].as_str().unwrap_or_default().to_string();
            Verdict {
                domain: tag("d"),
                selector: tag("s"),
                algorithm: tag("a"),
                outcome: if tag("result") == "pass" {
                    Outcome::Pass
                } else {
                    Outcome::Fail(tag("reason"))
                },
            }
        })
        .collect()
}

/// OpenDKIM reports signatures in header order, like dkimpy.
fn verify_with_opendkim(message: &[u8], records: &DnsRecords) -> Vec<Verdict> {
    super::require_program("/usr/sbin/opendkim", "opendkim");
    let dir = super::scratch_dir("opendkim-verify");
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("keys"), records.to_test_public_keys()).unwrap();
    let conf = [
        "Mode v".to_string(),
        "Syslog no".to_string(),
        "AlwaysAddARHeader yes".to_string(),
        "AuthservID verifier.test".to_string(),
        // OpenDKIM verifies the top three signatures by default and calls
        // the rest "neutral"; a test message may carry more.
        "MaximumSignaturesToVerify 16".to_string(),
        format!("TestPublicKeys {}", path("keys").display()),
    ];
    std::fs::write(path("verify.conf"), conf.join("\n") + "\n").unwrap();
    std::fs::write(path("message.eml"), message).unwrap();
    let output = Command::new("/usr/sbin/opendkim")
        .arg("-x")
        .arg(path("verify.conf"))
        .arg("-t")
        .arg(path("message.eml"))
        .arg("-vv")
        .output()
        .expect("run /usr/sbin/opendkim");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let results = authentication_results(&stdout).unwrap_or_else(|| {
        panic!(
            "opendkim -t printed no Authentication-Results ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    dkim_verdicts(&results)
}

/// Asserts that both verifiers find exactly the `expected` signatures on
/// `message` (in any order) and that every one of them passes.
#[track_caller]
pub fn assert_signed_by(message: &[u8], records: &DnsRecords, expected: &[&TestKey]) {
    let mut expected: Vec<Expected> = expected.iter().map(|key| Expected::from(*key)).collect();
    expected.sort();
    for verifier in Verifier::BOTH {
        let verdicts = verifier.verify(message, records);
        let mut signers: Vec<Expected> = verdicts.iter().map(Verdict::signer).collect();
        signers.sort();
        let all_pass = verdicts.iter().all(Verdict::passed);
        assert!(
            signers == expected && all_pass,
            "{verifier:?}: expected passing signatures {expected:?}, got {verdicts:#?}\nmessage:\n{}",
            String::from_utf8_lossy(message)
        );
    }
}

/// Asserts that neither verifier finds a DKIM-Signature on `message`.
#[track_caller]
pub fn assert_unsigned(message: &[u8], records: &DnsRecords) {
    for verifier in Verifier::BOTH {
        let verdicts = verifier.verify(message, records);
        assert!(
            verdicts.is_empty(),
            "{verifier:?}: expected no DKIM-Signature, found {verdicts:#?}\nmessage:\n{}",
            String::from_utf8_lossy(message)
        );
    }
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("verify_dkim.py")
}

fn run_with_stdin(command: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The value of the header `opendkim -t` would insert, from its line
/// `### INSHEADER: idx=0 hname='Authentication-Results' hvalue='...'`.
fn authentication_results(stdout: &str) -> Option<String> {
    let start = stdout.find("hname='Authentication-Results' hvalue='")?;
    let value = &stdout[start..];
    let value = &value[value.find("hvalue='")? + "hvalue='".len()..];
    Some(value[..value.rfind('\'')?].to_string())
}

/// `dkim=` results of an Authentication-Results value, e.g.
/// `dkim=fail reason="signature verification failed" (2048-bit key)
/// header.d=example.com header.i=@example.com header.a=rsa-sha256
/// header.s=default header.b=LaTLQ0s3`. `dkim=none` (nothing signed)
/// yields no verdict.
fn dkim_verdicts(results: &str) -> Vec<Verdict> {
    results
        .split(';')
        .map(str::trim)
        .filter_map(|result| result.strip_prefix("dkim="))
        .filter(|result| !result.starts_with("none"))
        .map(|result| {
            let status = result.split_whitespace().next().unwrap_or_default();
            let property = |name: &str| {
                result
                    .split_whitespace()
                    .find_map(|word| word.strip_prefix(name))
                    .unwrap_or_default()
                    .to_string()
            };
            let reason = result
                .split_once("reason=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map_or(status, |(reason, _)| reason);
            Verdict {
                domain: property("header.d="),
                selector: property("header.s="),
                algorithm: property("header.a="),
                outcome: if status == "pass" {
                    Outcome::Pass
                } else {
                    Outcome::Fail(reason.to_string())
                },
            }
        })
        .collect()
}
/// Signs `message` with dkimpy and verifies it with dkimpy, looking the key
/// up through a dnsfunc that returns `record`. Returns dkimpy's verdict.
pub fn dkimpy_sign_and_verify(
    key_for_dkimpy: &str,
    algorithm: &str,
    selector: &str,
    domain: &str,
    record: &str,
) -> bool {
    let script = r#"
import sys, dkim
key, alg, sel, dom, record = sys.argv[1:6]
msg = (b"From: a@" + dom.encode() + b"\r\nTo: b@example.org\r\nSubject: test\r\n"
       b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nHello.\r\n")
sig = dkim.sign(msg, sel.encode(), dom.encode(), key.encode(),
                signature_algorithm=alg.encode(),
                include_headers=[b"from", b"to", b"subject", b"date"])
def dnsfunc(name, timeout=5):
    assert name == (sel + "._domainkey." + dom + ".").encode(), name
    return record.encode()
print("PASS" if dkim.verify(sig + msg, dnsfunc=dnsfunc) else "FAIL")
"#;
    let out = crate::command::run_ok(
        "/usr/bin/python3",
        "python3-dkim python3-nacl",
        &[
            "-c",
            script,
            key_for_dkimpy,
            algorithm,
            selector,
            domain,
            record,
        ],
        Path::new("/"),
    );
    match crate::command::stdout(&out).trim() {
        "PASS" => true,
        "FAIL" => false,
        other => panic!("unexpected dkimpy output: {other}"),
    }
}
