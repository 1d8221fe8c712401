//! Verification against hostile and broken input, through the daemon
//! (`dkim-sidecar run`) and a real DNS server (Knot on loopback): every
//! case ends in a clear result and one log line, never a crash.
//!
//! - Malformed DKIM-Signature fields: each required tag missing, each
//!   garbled, duplicate tags, a 100 KB `b=`.
//! - A thousand signatures on one message: three verified, the field
//!   bounded; with the default header limits the message is refused.
//! - DNS answers that are not key records: an oversize TXT, garbage
//!   packets.
//! - A DNS server that never answers: `temperror` after DNSTimeout, a
//!   tempfail that says why, and meanwhile other messages (verified or
//!   signed) go through: signing never waits on DNS.
//! - The metrics: verifications by result, DNS queries and cache hits.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use milter::Reply;
use milter::client::Outcome;
use testkit::daemon::{sample, scrape};
use testkit::dns::DnsServer;
use testkit::mta::{self, DkimEntry};
use testkit::signers::{message, sign_ours};
use testkit::{MilterProcess, MilterSocket, TestKeys};

const DOMAIN: &str = "mail.example";
const AUTHSERV: &str = "mx.bad.example";
const OUTSIDE: &str = "192.0.2.33";

fn outside() -> IpAddr {
    OUTSIDE.parse().unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    keys: TestKeys,
}

impl Setup {
    fn new() -> Setup {
        let dir = testkit::scratch_dir("verify-bad");
        let keys = TestKeys::copy_into(dir.path());
        Setup { dir, keys }
    }

    fn dns(&self) -> DnsServer {
        DnsServer::builder()
            .zone(&format!("{DOMAIN}."))
            .txt(&format!("default._domainkey.{DOMAIN}."), &self.keys.rsa.txt)
            .txt(
                &format!("huge._domainkey.{DOMAIN}."),
                &format!("v=DKIM1; k=rsa; p={}", "QUFB".repeat(2500)),
            )
            .start()
    }

    fn signed(&self, local: &str, selector: &str) -> Vec<u8> {
        sign_ours(
            &message(local, DOMAIN),
            DOMAIN,
            selector,
            &self.keys.rsa.private_key,
            "",
        )
    }

    /// `dkim-sidecar run` on `conf` (opendkim.conf, or TOML when it ends
    /// in `.toml`), with metrics on `metrics`.
    fn daemon(&self, conf: &Path, metrics: Option<SocketAddr>) -> MilterProcess {
        MilterProcess::start(
            "dkim-sidecar",
            &MilterSocket::free_inet(),
            &self.dir.path().join("daemon.log"),
            |socket| {
                let mut c = std::process::Command::new(testkit::binary());
                c.arg("run");
                if conf.extension().is_some_and(|e| e == "toml") {
                    c.arg("-c");
                } else {
                    c.arg("-x");
                }
                c.arg(conf)
                    .arg("--socket")
                    .arg(socket.postfix_spec())
                    .arg("--allow-root");
                if let Some(addr) = metrics {
                    c.arg("--metrics-listen").arg(addr.to_string());
                }
                c
            },
        )
    }

    fn conf(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn addr(milter: &MilterProcess) -> SocketAddr {
    match milter.socket() {
        MilterSocket::Inet(addr) => *addr,
        MilterSocket::Unix(_) => unreachable!(),
    }
}

fn entries(outcome: &Outcome) -> Vec<DkimEntry> {
    let fields = mta::inserted(outcome, "Authentication-Results");
    assert_eq!(fields.len(), 1, "one field: {outcome:?}");
    mta::dkim_entries(&fields[0])
}

/// The message with its first DKIM-Signature value replaced by `f` of its
/// unfolded value.
fn rewrite_signature(signed: &[u8], f: impl Fn(&str) -> String) -> Vec<u8> {
    let text = String::from_utf8_lossy(signed);
    let (head, body) = text.split_once("\n\n").unwrap();
    let mut fields: Vec<String> = Vec::new();
    for line in head.split('\n') {
        if line.starts_with([' ', '\t']) {
            fields.last_mut().unwrap().push_str(line.trim_start());
        } else {
            fields.push(line.to_string());
        }
    }
    let first = fields
        .iter_mut()
        .find(|f| f.starts_with("DKIM-Signature:"))
        .expect("a signature");
    let value = first["DKIM-Signature:".len()..].to_string();
    *first = format!("DKIM-Signature:{}", f(&value));
    format!("{}\n\n{body}", fields.join("\n")).into_bytes()
}

/// `value` without tag `tag`.
fn without(value: &str, tag: &str) -> String {
    value
        .split(';')
        .filter(|t| t.trim().split('=').next() != Some(tag))
        .collect::<Vec<_>>()
        .join(";")
}

/// `value` with tag `tag`'s value replaced.
fn with(value: &str, tag: &str, new: &str) -> String {
    value
        .split(';')
        .map(|t| {
            if t.trim().split('=').next() == Some(tag) {
                format!(" {tag}={new}")
            } else {
                t.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn log_lines(milter: &MilterProcess, needle: &str) -> usize {
    milter.log().lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn malformed_signatures_each_get_a_clear_result_and_one_log_line() {
    let setup = Setup::new();
    let dns = setup.dns();
    let metrics = testkit::free_local_addr();
    let conf = setup.conf(
        "opendkim.conf",
        &format!(
            "Mode v\nSyslog no\nAuthservID {AUTHSERV}\nNameservers {}\nMaximumHeaders 0\n",
            dns.nameserver()
        ),
    );
    let milter = setup.daemon(&conf, Some(metrics));
    let good = setup.signed("alice", "default");
    let huge_b = format!(
        "{}{}",
        "QUJD".repeat(25_000),
        "" // 100,000 characters of valid base64
    );
    let mut cases: Vec<(String, Vec<u8>, &str, &str)> = Vec::new();
    for (tag, reason) in [
        ("v", "version missing"),
        ("a", "signature algorithm missing"),
        ("b", "signature data missing"),
        ("bh", "body hash missing"),
        ("d", "domain tag missing"),
        ("h", "header list missing"),
        ("s", "selector tag missing"),
    ] {
        cases.push((
            format!("no {tag}="),
            rewrite_signature(&good, |v| without(v, tag)),
            "permerror",
            reason,
        ));
    }
    for (tag, value, result, reason) in [
        ("v", "2", "permerror", "unsupported signature version"),
        ("a", "rsa-md5", "permerror", "signature algorithm invalid"),
        (
            "a",
            "rsa-sha1",
            "permerror",
            "rsa-sha1 signatures are not accepted",
        ),
        ("c", "relaxed/odd", "permerror", "invalid canonicalization"),
        ("d", "exa mple", "permerror", "domain tag invalid"),
        ("s", "sel;ector", "permerror", "signature syntax error"),
        (
            "h",
            "To:Subject",
            "permerror",
            "header list missing required entries",
        ),
        ("bh", "!!!notbase64", "permerror", "body hash corrupt"),
        ("b", "%%%", "permerror", "signature data corrupt"),
        ("t", "yesterday", "permerror", "signature timestamp invalid"),
        ("b", &huge_b, "fail", "signature verification failed"),
        ("bh", "QUJDRA==", "fail", "body hash mismatch"),
    ] {
        cases.push((
            format!("{tag}={}", &value[..value.len().min(20)]),
            rewrite_signature(&good, |v| with(v, tag, value)),
            result,
            reason,
        ));
    }
    cases.push((
        "duplicate d=".into(),
        rewrite_signature(&good, |v| format!("{v}; d=evil.example")),
        "permerror",
        "tag d= appears twice",
    ));
    cases.push((
        "i= outside d=".into(),
        rewrite_signature(&good, |v| format!("{v}; i=@evil.example")),
        "permerror",
        "invalid domain coverage",
    ));
    cases.push((
        "not a tag list".into(),
        rewrite_signature(&good, |_| " this is no signature at all".into()),
        "permerror",
        "signature syntax error",
    ));
    cases.push((
        "oversize TXT at the selector".into(),
        setup.signed("bob", "huge"),
        "permerror",
        "unable to apply public key",
    ));
    cases.push(("the good one".into(), good.clone(), "pass", ""));
    cases.push((
        "the good one, from the cache".into(),
        good.clone(),
        "pass",
        "",
    ));
    let before = log_lines(&milter, " verified ");
    for (name, raw, result, reason) in &cases {
        let outcome = mta::send(addr(&milter), &mta::message(raw), outside(), AUTHSERV);
        let got = entries(&outcome);
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert_eq!(got[0].result, *result, "{name}: {got:?}");
        assert!(got[0].reason.contains(reason), "{name}: {got:?}");
    }
    let lines = testkit::poll(Duration::from_secs(10), || {
        let n = log_lines(&milter, " verified ") - before;
        (n >= cases.len()).then_some(n)
    });
    assert_eq!(
        lines,
        Some(cases.len()),
        "one line per message:\n{}",
        milter.log()
    );
    // The field named the problem; so does the log line.
    assert!(
        milter.log().contains("reason=\"tag d= appears twice\""),
        "{}",
        milter.log()
    );

    let page = scrape(metrics);
    assert!(
        sample(
            &page,
            "dkim_sidecar_verified_signatures_total{result=\"pass\"}"
        ) >= 2.0,
        "{page}"
    );
    assert!(
        sample(
            &page,
            "dkim_sidecar_verified_signatures_total{result=\"permerror\"}"
        ) >= 20.0,
        "{page}"
    );
    assert!(
        sample(&page, "dkim_sidecar_dns_queries_total{outcome=\"answer\"}") >= 2.0,
        "{page}"
    );
    assert!(
        sample(&page, "dkim_sidecar_dns_cache_hits_total") >= 1.0,
        "{page}"
    );
    assert!(
        page.contains("dkim_sidecar_dns_query_duration_seconds_count"),
        "{page}"
    );
}

#[test]
fn a_thousand_signatures_cost_bounded_work() {
    let setup = Setup::new();
    let dns = setup.dns();
    let good = setup.signed("carol", "default");
    let text = String::from_utf8_lossy(&good).into_owned();
    let (head, body) = text.split_once("\n\n").unwrap();
    let signature_end = head
        .match_indices("\n")
        .map(|(i, _)| i)
        .find(|&i| !head[i + 1..].starts_with([' ', '\t']))
        .unwrap();
    let signature = &head[..signature_end];
    let rest = &head[signature_end + 1..];
    let thousand = format!(
        "{}\n{rest}\n\n{body}",
        std::iter::repeat_n(signature, 1000)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // With the default header limits (64 KB, 1,000 fields) it is refused.
    let conf = setup.conf(
        "opendkim.conf",
        &format!(
            "Mode v\nSyslog no\nAuthservID {AUTHSERV}\nNameservers {}\n",
            dns.nameserver()
        ),
    );
    let milter = setup.daemon(&conf, None);
    let outcome = mta::send(
        addr(&milter),
        &mta::message(thousand.as_bytes()),
        outside(),
        AUTHSERV,
    );
    assert!(
        matches!(&outcome, Outcome::Refused { reply: Reply::ReplyCode(r), .. } if r.code == 552),
        "{outcome:?}"
    );
    drop(milter);

    // Let in: three verified, the field bounded to 32 entries.
    let toml = setup.conf(
        "dkim-sidecar.toml",
        &format!(
            "mode = \"v\"\n[signing]\nmax_header_bytes = 0\nmax_header_count = 5000\n\
             [verify]\nauthserv_id = \"{AUTHSERV}\"\nnameservers = [\"{}\"]\n",
            dns.addr()
        ),
    );
    let milter = setup.daemon(&toml, None);
    let outcome = mta::send(
        addr(&milter),
        &mta::message(thousand.as_bytes()),
        outside(),
        AUTHSERV,
    );
    let got = entries(&outcome);
    assert_eq!(got.len(), 32, "{got:?}");
    assert_eq!(
        got.iter().filter(|e| e.result == "pass").count(),
        3,
        "{got:?}"
    );
    assert!(got[3..].iter().all(|e| e.result == "neutral"), "{got:?}");
    assert_eq!(log_lines(&milter, " verified "), 1);
}

/// A UDP "DNS server" that answers every query with noise (the query id,
/// then bytes that are not a DNS message).
fn garbage_dns() -> SocketAddr {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            let mut reply = buf[..2.min(n)].to_vec();
            reply.extend((0..300u16).map(|i| (i * 31 + 7) as u8));
            let _ = server.send_to(&reply, from);
        }
    });
    addr
}

#[test]
fn dns_that_answers_garbage_is_a_temporary_error() {
    let setup = Setup::new();
    let conf = setup.conf(
        "opendkim.conf",
        &format!(
            "Mode v\nSyslog no\nAuthservID {AUTHSERV}\nNameservers {}\nDNSTimeout 3\n\
             On-DNSError accept\n",
            garbage_dns()
        ),
    );
    let milter = setup.daemon(&conf, None);
    let outcome = mta::send(
        addr(&milter),
        &mta::message(&setup.signed("dave", "default")),
        outside(),
        AUTHSERV,
    );
    let got = entries(&outcome);
    assert_eq!(got[0].result, "temperror", "{got:?}");
    assert!(got[0].reason.starts_with("key DNS query failed"), "{got:?}");
}

#[test]
fn a_dns_server_that_never_answers_delays_only_its_own_messages() {
    let setup = Setup::new();
    // Bound, never read: queries vanish.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sign_key = setup.keys.rsa.private_key.display().to_string();
    let conf = setup.conf(
        "opendkim.conf",
        &format!(
            "Mode sv\nSyslog no\nAuthservID {AUTHSERV}\nNameservers {}\nDNSTimeout 5\n\
             Domain example.com\nSelector default\nKeyFile {sign_key}\n",
            silent.local_addr().unwrap()
        ),
    );
    let milter = setup.daemon(&conf, None);
    let at = addr(&milter);
    let waiting = mta::message(&setup.signed("erin", "default"));
    let (done, finished) = mpsc::channel();
    let blocked = std::thread::spawn(move || {
        let outcome = mta::send(at, &waiting, outside(), AUTHSERV);
        done.send(()).unwrap();
        outcome
    });
    // Wait until the daemon has the message (its lookup is running)...
    testkit::poll(Duration::from_secs(10), || {
        (silent.peek_from(&mut [0u8; 512]).is_ok()).then_some(())
    })
    .expect("the daemon asks the silent server");
    // ...then other messages go through meanwhile: one signed (signing
    // never waits on DNS), one verified (unsigned: nothing to look up).
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let to_sign = mta::message(&message("frank", "example.com"));
    let signed = mta::send(at, &to_sign, local, AUTHSERV);
    assert_eq!(
        mta::inserted(&signed, "DKIM-Signature").len(),
        1,
        "{signed:?}"
    );
    let unsigned = mta::send(
        at,
        &mta::message(&message("gina", DOMAIN)),
        outside(),
        AUTHSERV,
    );
    // Accepted at end of message with nothing added, as OpenDKIM does.
    assert!(
        matches!(&unsigned, Outcome::Delivered { modifications } if modifications.is_empty()),
        "{unsigned:?}"
    );
    assert!(
        finished.try_recv().is_err(),
        "the message waiting for DNS was answered before the others (DNSTimeout is 5 s)"
    );
    // The waiting one: temperror, tempfail with the reason.
    let outcome = blocked.join().unwrap();
    match &outcome {
        Outcome::Refused {
            reply: Reply::ReplyCode(r),
            ..
        } => {
            assert_eq!((r.code, r.status.as_deref()), (451, Some("4.7.5")), "{r:?}");
            assert!(
                r.text
                    .contains("key lookup for d=mail.example s=default failed"),
                "{r:?}"
            );
        }
        other => panic!("expected a tempfail: {other:?}"),
    }
    let log = milter.log();
    assert!(
        log.lines().any(|l| l.contains(" verified ")
            && l.contains("result=temperror")
            && l.contains("action=tempfail")),
        "{log}"
    );
}
