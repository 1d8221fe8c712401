//! dkim-sidecar inside a real Postfix: mail submitted over SMTP or through
//! sendmail(1) goes through the milter, Postfix relays it to a sink, and
//! both independent verifiers (dkimpy and OpenDKIM's) check what Postfix
//! finally wrote. The milter reads an opendkim.conf as the common guides
//! write it (KeyTable, refile: SigningTable, InternalHosts).
//!
//! Needs root and the packages `.ci/install-deps` installs.

use std::time::Duration;

use testkit::message::alice_to_bob;
use testkit::opendkim::SigningKey;
use testkit::verify::{assert_signed_by, assert_unsigned};
use testkit::{
    MilterProcess, MilterSocket, Postfix, PostfixBuilder, ReceivedMessage, Sidecar, SmtpSink,
    Submission, Verifier, processes,
};

/// Generous: delivery normally takes well under a second.
const DELIVERY: Duration = Duration::from_secs(30);

/// A sink, dkim-sidecar on `socket`, and Postfix relaying to the sink
/// through the milter.
struct Mail {
    sink: SmtpSink,
    sidecar: Sidecar,
    milter: Option<MilterProcess>,
    postfix: Postfix,
}

impl Mail {
    fn start(sidecar: Sidecar, socket: MilterSocket, postfix: PostfixBuilder) -> Mail {
        Self::start_with_sink(SmtpSink::start(), sidecar, socket, postfix)
    }

    fn start_with_sink(
        sink: SmtpSink,
        sidecar: Sidecar,
        socket: MilterSocket,
        postfix: PostfixBuilder,
    ) -> Mail {
        let milter = sidecar.start(&socket);
        let postfix = postfix.relay_to(sink.addr()).milter(&socket).start();
        Mail {
            sink,
            sidecar,
            milter: Some(milter),
            postfix,
        }
    }

    fn send(&self, content: &[u8]) -> ReceivedMessage {
        let before = self.sink.messages().len();
        Submission::open(self.postfix.smtp_addr())
            .send("alice@example.com", &["bob@example.org"], content)
            .expect_ok("send");
        self.sink
            .wait_for_messages(before + 1, DELIVERY)
            .remove(before)
    }

    fn assert_signed(&self, received: &ReceivedMessage) {
        assert_signed_by(
            &received.data,
            &self.sidecar.dns_records(),
            &self.sidecar.keys(),
        );
    }

    fn milter_log(&self) -> String {
        self.milter
            .as_ref()
            .map(MilterProcess::log)
            .unwrap_or_default()
    }
}

// ---- transports and protocol versions --------------------------------------

#[test]
fn smtpd_milter_over_tcp_protocol_6_dual_signs_rsa_and_ed25519() {
    let mail = Mail::start(
        Sidecar::builder()
            .keys(&[SigningKey::Rsa, SigningKey::Ed25519])
            .write(),
        MilterSocket::free_inet(),
        Postfix::builder().milter_protocol(6),
    );
    let received = mail.send(&alice_to_bob("dual"));
    assert_eq!(received.header_values("DKIM-Signature").len(), 2);
    mail.assert_signed(&received);
    // The signatures sit above Postfix's own Received: field.
    let text = received.text();
    assert!(
        text.find("DKIM-Signature:").unwrap() < text.find("Received:").unwrap(),
        "{text}"
    );
}

#[test]
fn smtpd_milter_over_tcp_protocol_2() {
    let mail = Mail::start(
        Sidecar::builder().write(),
        MilterSocket::free_inet(),
        Postfix::builder().milter_protocol(2),
    );
    mail.assert_signed(&mail.send(&alice_to_bob("v2")));
}

#[test]
fn smtpd_milter_over_a_unix_socket() {
    let sidecar = Sidecar::builder().keys(&[SigningKey::Ed25519]).write();
    let socket = MilterSocket::unix_in(sidecar.dir());
    let mail = Mail::start(sidecar, socket, Postfix::builder().milter_protocol(6));
    mail.assert_signed(&mail.send(&alice_to_bob("unix")));
}

#[test]
fn non_smtpd_milter_signs_mail_from_sendmail() {
    let sink = SmtpSink::start();
    let sidecar = Sidecar::builder()
        .keys(&[SigningKey::Rsa, SigningKey::Ed25519])
        .write();
    let socket = MilterSocket::free_inet();
    let _milter = sidecar.start(&socket);
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .non_smtpd_milters(&socket.postfix_spec())
        .start();
    postfix.sendmail(
        "alice@example.com",
        &["bob@example.org"],
        &alice_to_bob("sendmail"),
    );
    let received = sink.wait_for_messages(1, DELIVERY);
    assert_signed_by(&received[0].data, &sidecar.dns_records(), &sidecar.keys());
}

#[test]
fn several_messages_and_rset_on_one_smtp_connection() {
    let mail = Mail::start(
        Sidecar::builder().write(),
        MilterSocket::free_inet(),
        Postfix::builder().milter_protocol(6),
    );
    let mut client = Submission::open(mail.postfix.smtp_addr());
    for subject in ["first", "second"] {
        client
            .send(
                "alice@example.com",
                &["bob@example.org"],
                &alice_to_bob(subject),
            )
            .expect_ok(subject);
    }
    client.mail_from("alice@example.com").expect_ok("MAIL");
    client.rcpt_to("carol@example.org").expect_ok("RCPT");
    client.rset().expect_ok("RSET");
    client
        .send(
            "alice@example.com",
            &["dave@example.org"],
            &alice_to_bob("third"),
        )
        .expect_ok("after RSET");
    client.quit();
    let received = mail.sink.wait_for_messages(3, DELIVERY);
    let mut subjects: Vec<String> = received
        .iter()
        .map(|m| m.header_values("Subject").concat())
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["first", "second", "third"]);
    for m in &received {
        mail.assert_signed(m);
    }
}

// ---- who gets signed ------------------------------------------------------

#[test]
fn internal_client_is_signed_external_is_not_authenticated_is() {
    let sink = SmtpSink::start();
    // 127.0.0.1 is not internal here: only SMTP AUTH can make it sign.
    let sidecar = Sidecar::builder().internal_hosts(&["192.0.2.1"]).write();
    let socket = MilterSocket::free_inet();
    let milter = sidecar.start(&socket);
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milter(&socket)
        .submission_service()
        .sasl_user("alice@example.com", "s3cret")
        .start();

    let mut client = Submission::open(postfix.service_addr("submission"));
    client
        .auth_plain("alice@example.com", "s3cret")
        .expect_ok("AUTH PLAIN");
    client
        .send(
            "alice@example.com",
            &["bob@example.org"],
            &alice_to_bob("authenticated"),
        )
        .expect_ok("authenticated send");
    client.quit();
    let signed = sink.wait_for_messages(1, DELIVERY).remove(0);
    Submission::open(postfix.smtp_addr())
        .send(
            "alice@example.com",
            &["bob@example.org"],
            &alice_to_bob("anonymous"),
        )
        .expect_ok("unauthenticated send");
    let unsigned = sink.wait_for_messages(2, DELIVERY).remove(1);

    assert_eq!(signed.header_values("Subject"), ["authenticated"]);
    assert_signed_by(&signed.data, &sidecar.dns_records(), &sidecar.keys());
    assert_eq!(unsigned.header_values("Subject"), ["anonymous"]);
    assert_unsigned(&unsigned.data, &sidecar.dns_records());
    let log = milter.log();
    assert!(
        log.contains("not signed: client localhost [127.0.0.1] is not internal"),
        "the reason is logged:\n{log}"
    );
    assert!(log.contains("SMTP AUTH PLAIN"), "{log}");
}

#[test]
fn internal_client_is_signed_without_authentication() {
    let mail = Mail::start(
        Sidecar::builder().write(),
        MilterSocket::free_inet(),
        Postfix::builder(),
    );
    mail.assert_signed(&mail.send(&alice_to_bob("internal")));
    assert!(mail.milter_log().contains("internal host"));
}

// ---- messages that break naive signers -------------------------------------

/// One Postfix, one milter, many awkward messages: each must verify.
#[test]
fn awkward_messages_verify_after_postfix_delivers_them() {
    let mail = Mail::start(
        Sidecar::builder()
            .keys(&[SigningKey::Rsa, SigningKey::Ed25519])
            .write(),
        MilterSocket::free_inet(),
        Postfix::builder().milter_protocol(6),
    );
    let fifty: Vec<String> = (0..50)
        .map(|i| format!("Recipient {i} <r{i}@example.org>"))
        .collect();
    let long_line = "x".repeat(996);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "folded To with 50 recipients",
            format!(
                "From: alice@example.com\r\nTo: {}\r\nSubject: many\r\n\r\nHi\r\n",
                fifty.join(",\r\n\t")
            )
            .into_bytes(),
        ),
        (
            "trailing spaces and tabs in header values",
            b"From: alice@example.com \t\r\nTo: bob@example.org  \r\nSubject: spaced\t \r\n\r\nHi\r\n"
                .to_vec(),
        ),
        (
            "lower-case header names",
            b"from: alice@example.com\r\nto: bob@example.org\r\nsubject: lower\r\n\r\nHi\r\n"
                .to_vec(),
        ),
        (
            "duplicated headers",
            b"From: alice@example.com\r\nTo: bob@example.org\r\nTo: carol@example.org\r\nSubject: one\r\nSubject: two\r\n\r\nHi\r\n"
                .to_vec(),
        ),
        (
            "empty body",
            b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: empty\r\n\r\n".to_vec(),
        ),
        (
            "body without final newline",
            b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: nonl\r\n\r\nno newline at the end"
                .to_vec(),
        ),
        (
            "trailing blank lines",
            b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: blanks\r\n\r\nHi\r\n\r\n\r\n\r\n"
                .to_vec(),
        ),
        (
            "998-character lines",
            format!(
                "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: long\r\nX-Long: {}\r\n\r\n{}\r\n{}\r\n",
                "h".repeat(990),
                long_line,
                long_line
            )
            .into_bytes(),
        ),
        (
            "8-bit UTF-8 in headers and body",
            "From: Jörg Müller <joerg@example.com>\r\nTo: bob@example.org\r\nSubject: Grüße aus Köln ✉\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße, naïve café — ✓\r\n"
                .as_bytes()
                .to_vec(),
        ),
        (
            "white space-only body lines and runs of spaces",
            b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: ws\r\n\r\n  a   b  \r\n \t \r\nend\r\n"
                .to_vec(),
        ),
    ];
    for (what, content) in cases {
        let received = mail.send(&content);
        for verifier in Verifier::BOTH {
            let verdicts = verifier.verify(&received.data, &mail.sidecar.dns_records());
            assert!(
                verdicts.len() == 2 && verdicts.iter().all(testkit::Verdict::passed),
                "{what}: {verifier:?} says {verdicts:#?}\n{}",
                received.text()
            );
        }
    }
}

#[test]
fn a_25_megabyte_attachment_is_signed() {
    let mail = Mail::start(
        Sidecar::builder().write(),
        MilterSocket::free_inet(),
        Postfix::builder()
            .milter_protocol(6)
            .main_cf("message_size_limit = 60000000"),
    );
    let mut content = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: big\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
        Content-Type: text/plain\r\n\r\nSee attachment.\r\n--b\r\n\
        Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    // 25 MB of base64, 76 characters a line, with varied content.
    let mut state: u32 = 12345;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    while content.len() < 25 * 1024 * 1024 {
        for _ in 0..76 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            content.push(alphabet[(state >> 16) as usize % 64]);
        }
        content.extend_from_slice(b"\r\n");
    }
    content.extend_from_slice(b"--b--\r\n");
    let received = mail.send(&content);
    assert!(received.data.len() > 25 * 1024 * 1024);
    mail.assert_signed(&received);
}

#[test]
fn downgraded_8bit_mail_verifies_when_postfix_does_not_convert_it() {
    // Postfix converts 8-bit mail to quoted-printable for a relay without
    // 8BITMIME, after the milter signed it: any signature breaks. The
    // documented fix is disable_mime_output_conversion on the signing MTA.
    let content = "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: 8bit\r\n\
                   MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
                   Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n";
    let send_8bit = |mail: &Mail| {
        let mut client = Submission::open(mail.postfix.smtp_addr());
        client
            .command("MAIL FROM:<alice@example.com> BODY=8BITMIME")
            .expect_ok("MAIL");
        client.rcpt_to("bob@example.org").expect_ok("RCPT");
        client.data(content.as_bytes()).expect_ok("DATA");
        mail.sink.wait_for_messages(1, DELIVERY).remove(0)
    };

    let converting = Mail::start_with_sink(
        SmtpSink::without_8bitmime(),
        Sidecar::builder().write(),
        MilterSocket::free_inet(),
        Postfix::builder(),
    );
    let received = send_8bit(&converting);
    assert_eq!(
        received.header_values("Content-Transfer-Encoding"),
        ["quoted-printable"],
        "Postfix downgraded the body"
    );
    let verdicts = Verifier::DkimPy.verify(&received.data, &converting.sidecar.dns_records());
    assert!(
        verdicts.iter().all(|v| !v.passed()),
        "a downgraded body cannot keep its signature: {verdicts:?}"
    );

    let documented = Mail::start_with_sink(
        SmtpSink::without_8bitmime(),
        Sidecar::builder().write(),
        MilterSocket::free_inet(),
        Postfix::builder().main_cf("disable_mime_output_conversion = yes"),
    );
    let received = send_8bit(&documented);
    documented.assert_signed(&received);
}

// ---- the milter goes away -------------------------------------------------

#[test]
fn milter_stopped_mid_run_mail_is_queued_then_delivered_signed() {
    let sink = SmtpSink::start();
    let sidecar = Sidecar::builder().write();
    let socket = MilterSocket::free_inet();
    let milter = sidecar.start(&socket);
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milter(&socket)
        .milter_default_action("tempfail")
        .start();

    // Running: signed.
    postfix.sendmail(
        "alice@example.com",
        &["bob@example.org"],
        &alice_to_bob("before"),
    );
    let before = sink.wait_for_messages(1, DELIVERY).remove(0);
    assert_signed_by(&before.data, &sidecar.dns_records(), &sidecar.keys());

    // Stopped: SMTP clients are told to retry, sendmail's mail waits.
    assert!(milter.stop().success(), "SIGTERM exits 0");
    let reply = Submission::open(postfix.smtp_addr()).send(
        "alice@example.com",
        &["bob@example.org"],
        &alice_to_bob("smtp-while-down"),
    );
    assert!(reply.is_transient_failure(), "{reply:?}");
    postfix.sendmail(
        "alice@example.com",
        &["bob@example.org"],
        &alice_to_bob("while-down"),
    );
    postfix.wait_for_queued(1, DELIVERY);
    assert_eq!(sink.messages().len(), 1, "nothing left unsigned");

    // Restarted: the queued message goes out, signed.
    let _milter = sidecar.start(&socket);
    postfix.flush();
    let after = sink.wait_for_messages(2, DELIVERY).remove(1);
    assert_eq!(after.header_values("Subject"), ["while-down"]);
    assert_signed_by(&after.data, &sidecar.dns_records(), &sidecar.keys());
    postfix.wait_for_queued(0, DELIVERY);
}

#[test]
fn milter_killed_mid_transaction_loses_no_mail_and_restarts_on_its_stale_socket() {
    let sink = SmtpSink::start();
    let sidecar = Sidecar::builder().write();
    let socket = MilterSocket::unix_in(sidecar.dir());
    let milter = sidecar.start(&socket);
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milter(&socket)
        .milter_default_action("tempfail")
        .start();

    // A transaction the milter has seen MAIL, RCPT and part of DATA of...
    let mut smtp = Submission::open(postfix.smtp_addr());
    smtp.mail_from("alice@example.com").expect_ok("MAIL");
    smtp.rcpt_to("bob@example.org").expect_ok("RCPT");
    // (No line starts with a dot: the DATA section is written as it is.)
    let content = b"From: alice@example.com\r\nTo: bob@example.org\r\n\
                    Subject: killed-mid-transaction\r\n\r\nHello Bob,\r\n\
                    a body the milter sees only half of.\r\n";
    let (head, rest) = content.split_at(content.len() / 2);
    assert_eq!(smtp.command("DATA").code, 354);
    smtp.write_raw(head);
    std::thread::sleep(Duration::from_millis(200));

    // ...when the milter dies without a chance to answer or clean up.
    let status = milter.crash();
    assert!(!status.success(), "{status:?}");
    let MilterSocket::Unix(path) = &socket else {
        unreachable!("a Unix socket")
    };
    assert!(path.exists(), "SIGKILL leaves the socket file behind");

    // The client is told to retry; nothing was accepted unsigned.
    smtp.write_raw(rest);
    let reply = smtp.end_data();
    assert!(reply.is_transient_failure(), "{reply:?}");
    drop(smtp);
    // Mail submitted locally while the milter is down waits in the queue.
    postfix.sendmail(
        "alice@example.com",
        &["bob@example.org"],
        &alice_to_bob("sent-while-crashed"),
    );
    postfix.wait_for_queued(1, DELIVERY);
    assert!(sink.messages().is_empty(), "nothing went out unsigned");

    // Restarted on the same path: the stale socket is replaced, the queued
    // message and the client's retry both go out signed.
    let _milter = sidecar.start(&socket);
    postfix.flush();
    Submission::open(postfix.smtp_addr())
        .send("alice@example.com", &["bob@example.org"], content)
        .expect_ok("retry after the restart");
    let delivered = sink.wait_for_messages(2, DELIVERY);
    let mut subjects: Vec<_> = delivered
        .iter()
        .flat_map(|m| m.header_values("Subject"))
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["killed-mid-transaction", "sent-while-crashed"]);
    for received in &delivered {
        assert_signed_by(&received.data, &sidecar.dns_records(), &sidecar.keys());
    }
    postfix.wait_for_queued(0, DELIVERY);
}

#[test]
fn nothing_is_left_behind() {
    let roots;
    {
        let sidecar = Sidecar::builder().write();
        let socket = MilterSocket::unix_in(sidecar.dir());
        let mail = Mail::start(sidecar, socket, Postfix::builder());
        mail.assert_signed(&mail.send(&alice_to_bob("cleanup")));
        roots = vec![
            mail.postfix.root().to_path_buf(),
            mail.sidecar.dir().to_path_buf(),
        ];
        assert!(!processes::mentioning(&roots[0]).is_empty(), "Postfix runs");
        assert!(
            !processes::mentioning(&roots[1]).is_empty(),
            "dkim-sidecar runs"
        );
    }
    for root in &roots {
        let left = processes::mentioning(root);
        assert!(left.is_empty(), "processes left: {left:?}");
        assert!(!root.exists(), "{} removed", root.display());
    }
}

#[test]
fn submission_service_named_by_mta_is_signed_without_being_internal() {
    let sink = SmtpSink::start();
    // Not internal, not authenticated: only `MTA ORIGINATING` makes it sign.
    let sidecar = Sidecar::builder()
        .internal_hosts(&["192.0.2.1"])
        .config_line("MTA ORIGINATING")
        .write();
    let socket = MilterSocket::free_inet();
    let _milter = sidecar.start(&socket);
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milter(&socket)
        .smtpd_service(
            "originating",
            &[
                ("milter_macro_daemon_name", "ORIGINATING"),
                ("smtpd_client_restrictions", "permit_mynetworks, reject"),
            ],
        )
        .start();

    Submission::open(postfix.service_addr("originating"))
        .send(
            "alice@example.com",
            &["bob@example.org"],
            &alice_to_bob("originating"),
        )
        .expect_ok("send to the ORIGINATING service");
    let signed = sink.wait_for_messages(1, DELIVERY).remove(0);
    Submission::open(postfix.smtp_addr())
        .send(
            "alice@example.com",
            &["bob@example.org"],
            &alice_to_bob("inbound"),
        )
        .expect_ok("send to smtp");
    let unsigned = sink.wait_for_messages(2, DELIVERY).remove(1);

    assert_signed_by(&signed.data, &sidecar.dns_records(), &sidecar.keys());
    assert_eq!(unsigned.header_values("Subject"), ["inbound"]);
    assert_unsigned(&unsigned.data, &sidecar.dns_records());
}

#[test]
fn verifiers_catch_a_changed_body() {
    // The negative control every other test relies on: a signature that no
    // longer matches is reported as failing by both verifiers.
    let mail = Mail::start(
        Sidecar::builder()
            .keys(&[SigningKey::Rsa, SigningKey::Ed25519])
            .write(),
        MilterSocket::free_inet(),
        Postfix::builder(),
    );
    let received = mail.send(&alice_to_bob("tampered"));
    mail.assert_signed(&received);
    let tampered = received.text().replace("Hello Bob", "Hello Eve");
    for verifier in Verifier::BOTH {
        let verdicts = verifier.verify(tampered.as_bytes(), &mail.sidecar.dns_records());
        assert_eq!(verdicts.len(), 2, "{verdicts:?}");
        assert!(verdicts.iter().all(|v| !v.passed()), "{verdicts:?}");
    }
}

#[test]
fn twenty_messages_on_one_connection_are_all_signed_with_protocol_2_and_6() {
    // Also a measurement: with protocol 6 Postfix pipelines commands we do
    // not answer, and before quick acknowledgements each message waited
    // about 40 ms for a delayed ACK. The time is printed, never asserted.
    for protocol in [2u8, 6] {
        let mail = Mail::start(
            Sidecar::builder().write(),
            MilterSocket::free_inet(),
            Postfix::builder().milter_protocol(protocol),
        );
        let mut client = Submission::open(mail.postfix.smtp_addr());
        let started = std::time::Instant::now();
        for n in 0..20 {
            client
                .send(
                    "alice@example.com",
                    &["bob@example.org"],
                    &alice_to_bob(&format!("pipelined-{n}")),
                )
                .expect_ok("send");
        }
        let per_message = started.elapsed() / 20;
        client.quit();
        let received = mail.sink.wait_for_messages(20, DELIVERY);
        for m in &received {
            mail.assert_signed(m);
        }
        eprintln!(
            "milter_protocol = {protocol}: {per_message:?} per message from MAIL to the 250 after DATA"
        );
    }
}

// ---- Debian's chrooted smtpd ------------------------------------------------

#[test]
fn a_chrooted_smtpd_signs_through_a_socket_in_its_queue_owned_by_the_user_id() {
    use std::os::unix::fs::PermissionsExt as _;
    let sink = SmtpSink::start();
    // `unix:/dkim-sidecar/milter.sock` exists only inside the chroot: mail
    // signed through it proves smtpd ran chrooted.
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .chroot_smtpd()
        .smtpd_milters("unix:/dkim-sidecar/milter.sock")
        .start();
    // As the guides say: a directory in the queue for the signer's user,
    // which Postfix's group may enter.
    let dir = postfix.queue_dir().join("dkim-sidecar");
    std::fs::create_dir(&dir).unwrap();
    let user = nix::unistd::User::from_name("opendkim")
        .unwrap()
        .expect("user opendkim");
    let group = nix::unistd::Group::from_name("postfix")
        .unwrap()
        .expect("group postfix");
    nix::unistd::chown(&dir, Some(user.uid), Some(group.gid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    // Started as root, running as opendkim with postfix's group: the socket
    // must be theirs, mode 0770 from the UMask, for postfix to connect.
    let sidecar = Sidecar::builder()
        .config_line("UserID opendkim:postfix")
        .config_line("UMask 007")
        .write();
    let milter = sidecar.start(&MilterSocket::Unix(dir.join("milter.sock")));
    Submission::open(postfix.smtp_addr())
        .send(
            "alice@example.com",
            &["bob@example.org"],
            &alice_to_bob("chroot"),
        )
        .expect_ok("send");
    let received = sink.wait_for_messages(1, DELIVERY);
    assert_signed_by(&received[0].data, &sidecar.dns_records(), &sidecar.keys());
    drop(milter);
}
