//! The verification settings an administrator chooses, through the daemon
//! (`dkim-sidecar run`) and a real DNS server (Knot on loopback: a
//! DNSSEC-signed zone, an unsigned zone delegated from it, and a record
//! served with a forged value): UnprotectedKey and BogusKey, On-BadSignature
//! quarantine, AuthservIDWithJobID, RemoveARFrom and RemoveARAll.

use std::net::IpAddr;
use std::path::PathBuf;

use milter::Reply;
use milter::client::Outcome;
use testkit::daemon::{inet_addr, run_opendkim_conf};
use testkit::dns::DnsServer;
use testkit::mta::{self, DkimEntry};
use testkit::signers::{message, sign_ours};
use testkit::{MilterProcess, TestKeys};

const AUTHSERV: &str = "mx.actions.example";

/// The queue ID the test MTA gives every message.
const QUEUE_ID: &str = "4QTEST1";

fn outside() -> IpAddr {
    "192.0.2.44".parse().unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    keys: TestKeys,
    dns: DnsServer,
}

impl Setup {
    /// `sel._domainkey` in three zones: `secure.test` (signed),
    /// `plain.test` (unsigned, delegated without DS) and `forged.test`
    /// (signed, but served with another value than the one signed).
    fn new() -> Setup {
        let dir = testkit::scratch_dir("verify-actions");
        let keys = TestKeys::copy_into(dir.path());
        let dns = DnsServer::builder()
            .signed_zone("test.")
            .zone("plain.test.")
            .txt("sel._domainkey.secure.test.", &keys.rsa.txt)
            .txt("sel._domainkey.plain.test.", &keys.rsa.txt)
            .bogus_txt(
                "sel._domainkey.forged.test.",
                &keys.ed25519.txt,
                &keys.rsa.txt,
            )
            .start();
        Setup { dir, keys, dns }
    }

    /// A daemon verifying with these extra opendkim.conf lines.
    fn daemon(&self, name: &str, lines: &str) -> MilterProcess {
        let conf = self.dir.path().join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                "Mode v\nSyslog no\nAuthservID {AUTHSERV}\nNameservers {}\n{lines}\n",
                self.dns.nameserver()
            ),
        )
        .unwrap();
        run_opendkim_conf(&conf, &self.dir.path().join(format!("{name}.log")))
    }

    fn trust_anchor(&self) -> PathBuf {
        self.dns.trust_anchor_file().to_path_buf()
    }

    /// A message from `local@domain`, signed by `domain` with `sel`.
    fn signed(&self, local: &str, domain: &str) -> Vec<u8> {
        sign_ours(
            &message(local, domain),
            domain,
            "sel",
            &self.keys.rsa.private_key,
            "",
        )
    }
}

fn send(milter: &MilterProcess, raw: &[u8]) -> Outcome {
    mta::send(inet_addr(milter), &mta::message(raw), outside(), AUTHSERV)
}

fn only_entry(outcome: &Outcome) -> DkimEntry {
    let fields = mta::inserted(outcome, "Authentication-Results");
    assert_eq!(fields.len(), 1, "one field: {outcome:?}");
    let entries = mta::dkim_entries(&fields[0]);
    assert_eq!(entries.len(), 1, "one result: {}", fields[0]);
    entries.into_iter().next().unwrap()
}

#[test]
fn unprotected_and_bogus_keys_get_the_results_unprotectedkey_and_boguskey_say() {
    let setup = Setup::new();
    let secure = setup.signed("a", "secure.test");
    let plain = setup.signed("b", "plain.test");
    let forged = setup.signed("c", "forged.test");
    let anchor = setup.trust_anchor();
    let cases = [
        ("defaults", "", ["pass", "pass", "fail"]),
        (
            "neutral",
            "UnprotectedKey neutral\nBogusKey neutral",
            ["pass", "neutral", "neutral"],
        ),
        (
            "strict",
            "UnprotectedKey fail\nBogusKey none\nOn-DNSError accept",
            ["pass", "policy", "temperror"],
        ),
    ];
    for (name, lines, expected) in cases {
        let milter = setup.daemon(
            name,
            &format!("TrustAnchorFile {}\n{lines}", anchor.display()),
        );
        let got: Vec<DkimEntry> = [&secure, &plain, &forged]
            .into_iter()
            .map(|raw| only_entry(&send(&milter, raw)))
            .collect();
        let results: Vec<&str> = got.iter().map(|e| e.result.as_str()).collect();
        assert_eq!(results, expected, "{name}: {got:?}\n{}", milter.log());
        assert!(got[0].comment.contains("secure"), "{name}: {got:?}");
        if name == "defaults" {
            assert!(got[1].comment.contains("unprotected"), "{got:?}");
        }
    }
    // BogusKey none makes a forged key a DNS failure, and On-DNSError's
    // default holds the message with a reply that says why.
    let milter = setup.daemon(
        "bogus-tempfail",
        &format!("TrustAnchorFile {}\nBogusKey none", anchor.display()),
    );
    let outcome = send(&milter, &forged);
    let Outcome::Refused {
        reply: Reply::ReplyCode(reply),
        ..
    } = &outcome
    else {
        panic!("a forged key under BogusKey none is tempfailed: {outcome:?}")
    };
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(reply.text.contains("DNSSEC validation failed"), "{reply:?}");
    // Control: without a trust anchor nothing is validated, and the forged
    // record (which holds the right key) passes.
    let milter = setup.daemon("no-anchor", "");
    assert_eq!(only_entry(&send(&milter, &forged)).result, "pass");
}

#[test]
fn quarantine_holds_a_failing_message_and_says_why() {
    let setup = Setup::new();
    let milter = setup.daemon("quarantine", "On-BadSignature quarantine");
    let signed = setup.signed("q", "plain.test");
    let tampered = String::from_utf8_lossy(&signed)
        .replace("this is a test", "this was a test")
        .into_bytes();
    let outcome = send(&milter, &tampered);
    let Outcome::Delivered { modifications } = &outcome else {
        panic!("a quarantined message is accepted into the hold queue: {outcome:?}")
    };
    let reason = modifications
        .iter()
        .find_map(|m| match m {
            Reply::Quarantine(reason) => Some(String::from_utf8_lossy(reason).into_owned()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no quarantine: {outcome:?}"));
    assert!(reason.contains("body hash mismatch"), "{reason}");
    assert_eq!(only_entry(&outcome).result, "fail");
    // Control: the untouched message passes and is not held.
    let outcome = send(&milter, &signed);
    assert_eq!(only_entry(&outcome).result, "pass");
    let Outcome::Delivered { modifications } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        !modifications
            .iter()
            .any(|m| matches!(m, Reply::Quarantine(_))),
        "{outcome:?}"
    );
}

#[test]
fn authserv_id_with_job_id_names_the_queue_id() {
    let setup = Setup::new();
    let signed = setup.signed("j", "plain.test");
    let plain_id = setup.daemon("plain-id", "");
    let field = &mta::inserted(&send(&plain_id, &signed), "Authentication-Results")[0];
    assert!(field.starts_with(&format!("{AUTHSERV};")), "{field}");
    let with_job = setup.daemon("job-id", "AuthservIDWithJobID yes");
    let field = &mta::inserted(&send(&with_job, &signed), "Authentication-Results")[0];
    assert!(
        field.starts_with(&format!("{AUTHSERV}/{QUEUE_ID};")),
        "{field}"
    );
}

#[test]
fn remove_ar_from_and_remove_ar_all_choose_which_fields_go() {
    let setup = Setup::new();
    let signed = setup.signed("r", "plain.test");
    let ar = |host: &str, what: &str| format!("Authentication-Results: {host}; {what}");
    let dkim = "dkim=pass header.d=forged.example";
    let spf = "spf=pass smtp.mailfrom=plain.test";
    let existing = [
        ar(AUTHSERV, dkim),
        ar(AUTHSERV, spf),
        ar("relay.other.example", dkim),
        ar("elsewhere.example", dkim),
    ];
    let mut raw = existing.join("\n").into_bytes();
    raw.push(b'\n');
    raw.extend_from_slice(&signed);
    // Which of the existing fields are still there on delivery.
    let kept = |milter: &MilterProcess| -> Vec<String> {
        let outcome = send(milter, &raw);
        let delivered = mta::delivered(&mta::message(&raw), &outcome);
        String::from_utf8_lossy(&delivered)
            .lines()
            .filter(|l| existing.iter().any(|e| e == l))
            .map(ToString::to_string)
            .collect()
    };

    let default = setup.daemon("default", "");
    assert_eq!(
        kept(&default),
        [
            ar(AUTHSERV, spf),
            ar("relay.other.example", dkim),
            ar("elsewhere.example", dkim)
        ],
        "by default only our fields with a DKIM result go"
    );
    let all = setup.daemon("all", "RemoveARAll yes");
    assert_eq!(
        kept(&all),
        [
            ar("relay.other.example", dkim),
            ar("elsewhere.example", dkim)
        ],
        "RemoveARAll: every field of ours goes"
    );
    let from = setup.daemon("from", "RemoveARFrom .other.example");
    assert_eq!(
        kept(&from),
        [
            ar(AUTHSERV, dkim),
            ar(AUTHSERV, spf),
            ar("elsewhere.example", dkim)
        ],
        "RemoveARFrom: the listed hosts' fields with a DKIM result go, and only those"
    );
}
