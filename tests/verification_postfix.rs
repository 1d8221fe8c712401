//! dkim-sidecar in Mode sv behind a real Postfix: outbound mail from an
//! authenticated client is signed (and not verified), inbound mail from an
//! outside client gets our Authentication-Results field on top, and
//! forged fields claiming our authserv-id are gone on delivery while the
//! fields of other hosts stay. The keys come from a Knot server on
//! loopback.

use std::time::Duration;

use testkit::dns::DnsServer;
use testkit::mta;
use testkit::signers::sign_ours;
use testkit::{MilterSocket, Postfix, Sidecar, SmtpSink, Submission};

const DELIVERY: Duration = Duration::from_secs(30);
/// Postfix's myhostname in the harness: the `j` macro, our authserv-id.
const MX: &str = "mx.harness.test";

fn inbound(subject: &str, extra_fields: &str) -> Vec<u8> {
    format!(
        "{extra_fields}From: Sender <sender@mail.example>\nTo: alice@example.com\n\
         Subject: {subject}\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\
         Message-ID: <{subject}@mail.example>\n\nHello Alice.\n"
    )
    .into_bytes()
}

/// The header fields of a delivered message, top down, unfolded.
fn fields(data: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(data);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.to_string(), value.trim().to_string()));
        }
    }
    out
}

#[test]
fn mode_sv_signs_outbound_verifies_inbound_and_removes_forged_results() {
    let sink = SmtpSink::start();
    let sidecar = Sidecar::builder()
        .internal_hosts(&["192.0.2.1"])
        .config_line("Mode sv")
        .write();
    let keys = sidecar.test_keys();
    let dns = DnsServer::builder()
        .zone("mail.example.")
        .txt("default._domainkey.mail.example.", &keys.rsa.txt)
        .start();
    // The Sidecar's opendkim.conf, plus where its DNS is.
    let conf = std::fs::read_to_string(sidecar.config()).unwrap();
    std::fs::write(
        sidecar.config(),
        format!("{conf}Nameservers {}\n", dns.nameserver()),
    )
    .unwrap();
    let socket = MilterSocket::free_inet();
    let milter = sidecar.start(&socket);
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milter(&socket)
        .submission_service()
        .sasl_user("alice@example.com", "s3cret")
        .start();
    assert_eq!(postfix.postconf("myhostname"), MX);

    // Outbound: authenticated, signed, not verified.
    let mut client = Submission::open(postfix.service_addr("submission"));
    client
        .auth_plain("alice@example.com", "s3cret")
        .expect_ok("AUTH PLAIN");
    client
        .send(
            "alice@example.com",
            &["bob@example.org"],
            b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: outbound\r\n\r\nHi.\r\n",
        )
        .expect_ok("outbound");
    client.quit();
    let outbound = sink.wait_for_messages(1, DELIVERY).remove(0);
    let f = fields(&outbound.data);
    assert_eq!(f[0].0, "DKIM-Signature", "{f:?}");
    assert!(
        !f.iter().any(|(n, _)| n == "Authentication-Results"),
        "signed mail is not verified: {f:?}"
    );

    // Inbound, signed by the sender's domain, with forgeries around it.
    let signed = sign_ours(
        &inbound(
            "inbound",
            &format!(
                "Authentication-Results: {MX}; dkim=pass header.d=bank.example\n\
                 Authentication-Results: (sneaky) MX.Harness.TEST 1 ;\n\tspf=none;\n\tDKIM=pass header.d=x\n\
                 Authentication-Results: {MX}; dkim=pass; header.d=not-rfc-8601\n\
                 Authentication-Results: other.example; dkim=pass header.d=mail.example\n\
                 Authentication-Results: {MX}; spf=pass smtp.mailfrom=mail.example\n"
            ),
        ),
        "mail.example",
        "default",
        &keys.rsa.private_key,
        "",
    );
    let mut client = Submission::open(postfix.smtp_addr());
    client
        .send("sender@mail.example", &["alice@example.com"], &signed)
        .expect_ok("inbound");
    // Unsigned, with a forgery: the forgery goes, nothing is added.
    client
        .send(
            "sender@mail.example",
            &["alice@example.com"],
            &inbound(
                "unsigned",
                &format!("Authentication-Results: {MX}; dkim=pass\n"),
            ),
        )
        .expect_ok("inbound unsigned");
    client.quit();
    let received = sink.wait_for_messages(3, DELIVERY);
    let verified = received
        .iter()
        .find(|m| m.header_values("Subject") == ["inbound"])
        .expect("the inbound message");
    let f = fields(&verified.data);
    assert_eq!(
        f[0].0, "Authentication-Results",
        "on top, above Received: {f:?}"
    );
    assert!(
        f[0].1.starts_with(&format!(
            "{MX}; dkim=pass (2048-bit key) header.d=mail.example"
        )),
        "{f:?}"
    );
    let results: Vec<&String> = f
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Authentication-Results"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        results,
        [
            &f[0].1,
            &"other.example; dkim=pass header.d=mail.example".to_string(),
            &format!("{MX}; spf=pass smtp.mailfrom=mail.example"),
        ],
        "forged dkim results of ours removed, the others kept:\n{}",
        String::from_utf8_lossy(&verified.data)
    );
    // The message as delivered still verifies (the removals were exact).
    let entries = mta::dkim_entries(&f[0].1);
    assert_eq!(entries[0].result, "pass");

    let unsigned = received
        .iter()
        .find(|m| m.header_values("Subject") == ["unsigned"])
        .expect("the unsigned message");
    assert!(
        unsigned.header_values("Authentication-Results").is_empty(),
        "{}",
        String::from_utf8_lossy(&unsigned.data)
    );
    let log = milter.log();
    assert!(
        log.contains("result=pass") && log.contains("removed_auth_results=3"),
        "{log}"
    );
    assert!(
        log.contains("result=none") && log.contains("removed_auth_results=1"),
        "{log}"
    );
}

/// OpenDMARC (Debian's opendmarc) as a milter after us, reading our field.
/// Its resolver is the libc one, which only knows port 53: it runs with a
/// private /etc/resolv.conf naming the Knot server's port-53 address.
fn opendmarc(dir: &std::path::Path, dns: &DnsServer) -> testkit::MilterProcess {
    testkit::require_program("/usr/sbin/opendmarc", "opendmarc");
    // The test clients connect from 127.0.0.1, which OpenDMARC ignores by
    // default: ignore another address instead.
    std::fs::write(dir.join("ignore"), "192.0.2.1\n").unwrap();
    let conf = dir.join("opendmarc.conf");
    std::fs::write(
        &conf,
        format!(
            "AuthservID {MX}\nTrustedAuthservIDs {MX}\nIgnoreHosts {}\nSyslog false\n\
             RejectFailures false\nSPFSelfValidate false\nSPFIgnoreResults true\n\
             RequiredHeaders false\n",
            dir.join("ignore").display()
        ),
    )
    .unwrap();
    let resolv_conf = dns.resolv_conf();
    testkit::MilterProcess::start(
        "opendmarc",
        &MilterSocket::free_inet(),
        &dir.join("opendmarc.log"),
        |socket| {
            let mut command = std::process::Command::new("/usr/sbin/opendmarc");
            command
                .arg("-f")
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(socket.opendkim_spec());
            testkit::dns::private_resolv_conf(&resolv_conf, &command)
        },
    )
}

#[test]
fn opendmarc_after_us_passes_aligned_mail_and_fails_a_spoofed_from() {
    let sink = SmtpSink::start();
    let sidecar = Sidecar::builder()
        .internal_hosts(&["192.0.2.1"])
        .config_line("Mode sv")
        .write();
    let keys = sidecar.test_keys();
    let dns = DnsServer::builder()
        .also_on_port_53()
        .zone("mail.example.")
        .txt("default._domainkey.mail.example.", &keys.rsa.txt)
        .txt("_dmarc.mail.example.", "v=DMARC1; p=reject")
        .zone("bank.example.")
        .txt("_dmarc.bank.example.", "v=DMARC1; p=reject")
        .start();
    let conf = std::fs::read_to_string(sidecar.config()).unwrap();
    std::fs::write(
        sidecar.config(),
        format!("{conf}Nameservers {}\n", dns.nameserver()),
    )
    .unwrap();
    let ours = MilterSocket::free_inet();
    let _milter = sidecar.start(&ours);
    let dmarc = opendmarc(sidecar.dir(), &dns);
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milters(&[&ours, dmarc.socket()])
        .start();

    let sign = |raw: &[u8]| sign_ours(raw, "mail.example", "default", &keys.rsa.private_key, "");
    let aligned = sign(&inbound("aligned", ""));
    // Signed by mail.example (with dkimpy: our signer signs only its own
    // domains), claiming to be from bank.example.
    let pem = std::fs::read_to_string(&keys.rsa.private_key).unwrap();
    let spoofed = testkit::signers::Dkimpy {
        key: &pem,
        domain: "mail.example",
        selector: "default",
        algorithm: "rsa-sha256",
        canonicalization: "relaxed/simple",
        length: false,
        identity: None,
    }
    .sign(
        &String::from_utf8_lossy(&inbound("spoofed", ""))
            .replace(
                "From: Sender <sender@mail.example>",
                "From: CEO <ceo@bank.example>",
            )
            .into_bytes(),
    );
    let mut client = Submission::open(postfix.smtp_addr());
    client
        .send("sender@mail.example", &["alice@example.com"], &aligned)
        .expect_ok("aligned");
    client
        .send("ceo@bank.example", &["alice@example.com"], &spoofed)
        .expect_ok("spoofed");
    client.quit();
    let received = sink.wait_for_messages(2, DELIVERY);
    let results = |subject: &str| -> Vec<String> {
        received
            .iter()
            .find(|m| m.header_values("Subject") == [subject])
            .unwrap_or_else(|| panic!("no message {subject}"))
            .header_values("Authentication-Results")
    };
    let aligned = results("aligned");
    assert!(
        aligned
            .iter()
            .any(|v| v.contains("dkim=pass") && v.contains("header.d=mail.example")),
        "{aligned:?}"
    );
    assert!(
        aligned
            .iter()
            .any(|v| v.contains("dmarc=pass") && v.contains("header.from=mail.example")),
        "OpenDMARC read our dkim=pass: {aligned:?}\n{}",
        dmarc.log()
    );
    let spoofed = results("spoofed");
    assert!(
        spoofed
            .iter()
            .any(|v| v.contains("dkim=pass") && v.contains("header.d=mail.example")),
        "{spoofed:?}"
    );
    assert!(
        spoofed
            .iter()
            .any(|v| v.contains("dmarc=fail") && v.contains("header.from=bank.example")),
        "{spoofed:?}\n{}",
        dmarc.log()
    );
}
