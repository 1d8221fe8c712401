//! HARNESS SELF-TEST (temporary: the lead decides whether it stays).
//!
//! Proves the real-Postfix harness in `tests/support/` with OpenDKIM as
//! the milter under test, before dkim-sidecar can sign: every path a
//! dkim-sidecar end-to-end test will need (TCP and unix milter sockets,
//! protocol 2 and 6, sendmail(1), several messages per connection, SMTP
//! AUTH, milter down) delivers mail that both verifiers accept, and the
//! harness leaves no process and no file behind.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::opendkim::SigningKey;
use support::verify::{assert_signed_by, assert_unsigned};
use support::{
    MilterProcess, MilterSocket, OpenDkimSigner, Postfix, SmtpSink, Submission, Verifier, processes,
};

/// Generous: delivery normally takes well under a second.
const DELIVERY: Duration = Duration::from_secs(20);

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\n\
         To: Bob <bob@example.org>\r\n\
         Subject: {subject}\r\n\
         Date: Sat, 22 Nov 2025 10:00:00 +0000\r\n\
         Message-ID: <{subject}@example.com>\r\n\
         \r\n\
         Hello Bob,\r\n\
         .a line that starts with a dot\r\n\
         \r\n"
    )
    .into_bytes()
}

/// OpenDKIM on `socket`, signing example.com mail with `key`.
fn opendkim(key: SigningKey) -> OpenDkimSigner {
    OpenDkimSigner::builder().key(key).write()
}

#[test]
fn tcp_milter_protocol_6_with_rsa_and_ed25519_signatures() {
    let sink = SmtpSink::start();
    let (rsa, ed25519) = (opendkim(SigningKey::Rsa), opendkim(SigningKey::Ed25519));
    let (rsa_socket, ed25519_socket) = (MilterSocket::free_inet(), MilterSocket::free_inet());
    let _rsa_milter = rsa.start(&rsa_socket);
    let _ed25519_milter = ed25519.start(&ed25519_socket);
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milters(&[&rsa_socket, &ed25519_socket])
        .milter_protocol(6)
        .start();

    let mut client = Submission::open(postfix.smtp_addr());
    client
        .send("alice@example.com", &["bob@example.org"], &message("dual"))
        .expect_ok("send");
    client.quit();

    let received = sink.wait_for_messages(1, DELIVERY);
    assert_eq!(received[0].mail_from, "alice@example.com");
    assert_eq!(received[0].rcpt_to, ["bob@example.org"]);
    assert_eq!(received[0].header_values("DKIM-Signature").len(), 2);
    assert_signed_by(
        &received[0].data,
        &rsa.dns_records(),
        &[rsa.key(), ed25519.key()],
    );
}

#[test]
fn tcp_milter_protocol_2() {
    let sink = SmtpSink::start();
    let signer = opendkim(SigningKey::Rsa);
    let socket = MilterSocket::free_inet();
    let _milter = signer.start(&socket);
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milter(&socket)
        .milter_protocol(2)
        .start();

    Submission::open(postfix.smtp_addr())
        .send("alice@example.com", &["bob@example.org"], &message("v2"))
        .expect_ok("send");

    let received = sink.wait_for_messages(1, DELIVERY);
    assert_signed_by(&received[0].data, &signer.dns_records(), &[signer.key()]);
}

#[test]
fn unix_socket_milter() {
    let sink = SmtpSink::start();
    let signer = opendkim(SigningKey::Ed25519);
    let socket = MilterSocket::unix_in(signer.dir());
    let _milter = signer.start(&socket);
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milter(&socket)
        .start();

    Submission::open(postfix.smtp_addr())
        .send("alice@example.com", &["bob@example.org"], &message("unix"))
        .expect_ok("send");

    let received = sink.wait_for_messages(1, DELIVERY);
    assert_signed_by(&received[0].data, &signer.dns_records(), &[signer.key()]);
}

#[test]
fn sendmail_goes_through_non_smtpd_milters() {
    let sink = SmtpSink::start();
    let signer = opendkim(SigningKey::Rsa);
    let socket = MilterSocket::free_inet();
    let _milter = signer.start(&socket);
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .non_smtpd_milters(&socket.postfix_spec())
        .start();

    postfix.sendmail(
        "alice@example.com",
        &["bob@example.org"],
        &message("sendmail"),
    );

    let received = sink.wait_for_messages(1, DELIVERY);
    assert_eq!(received[0].mail_from, "alice@example.com");
    assert_signed_by(&received[0].data, &signer.dns_records(), &[signer.key()]);
}

#[test]
fn several_messages_and_rset_on_one_connection() {
    let sink = SmtpSink::start();
    let signer = opendkim(SigningKey::Rsa);
    let socket = MilterSocket::free_inet();
    let _milter = signer.start(&socket);
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milter(&socket)
        .start();

    let mut client = Submission::open(postfix.smtp_addr());
    for subject in ["first", "second"] {
        client
            .send("alice@example.com", &["bob@example.org"], &message(subject))
            .expect_ok(subject);
    }
    client.mail_from("alice@example.com").expect_ok("MAIL");
    client.rcpt_to("carol@example.org").expect_ok("RCPT");
    client.rset().expect_ok("RSET");
    client
        .send(
            "alice@example.com",
            &["dave@example.org"],
            &message("after-rset"),
        )
        .expect_ok("after RSET");
    client.quit();

    let received = sink.wait_for_messages(3, DELIVERY);
    let mut subjects: Vec<String> = received
        .iter()
        .map(|m| m.header_values("Subject").concat())
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["after-rset", "first", "second"]);
    assert!(received.iter().all(|m| m.rcpt_to != ["carol@example.org"]));
    for message in &received {
        assert_signed_by(&message.data, &signer.dns_records(), &[signer.key()]);
    }
    // All three went through one SMTP session, hence one milter connection.
    let sessions = postfix.log().matches(": connect from localhost").count();
    assert_eq!(
        sessions,
        2,
        "the start-up probe and the client:\n{}",
        postfix.log()
    );
}

#[test]
fn authenticated_mail_is_signed_unauthenticated_is_not() {
    let sink = SmtpSink::start();
    // 127.0.0.1 is not internal: only {auth_type} can make OpenDKIM sign.
    let signer = OpenDkimSigner::builder()
        .key(SigningKey::Rsa)
        .internal_hosts(&["192.0.2.1"])
        .write();
    let socket = MilterSocket::free_inet();
    let _milter = signer.start(&socket);
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milter(&socket)
        .submission_service()
        .sasl_user("alice@example.com", "s3cret")
        .start();
    let submission = postfix.service_addr("submission");

    let mut client = Submission::open(submission);
    client
        .auth_plain("alice@example.com", "wrong")
        .code
        .eq(&535)
        .then_some(())
        .expect("a wrong password is refused");
    client
        .auth_plain("alice@example.com", "s3cret")
        .expect_ok("AUTH PLAIN");
    client
        .send(
            "alice@example.com",
            &["bob@example.org"],
            &message("authenticated"),
        )
        .expect_ok("authenticated send");
    client.quit();
    postfix.wait_for_log(
        "sasl_method=PLAIN, sasl_username=alice@example.com",
        DELIVERY,
    );
    let signed = sink.wait_for_messages(1, DELIVERY).remove(0);

    Submission::open(submission)
        .send(
            "alice@example.com",
            &["bob@example.org"],
            &message("anonymous"),
        )
        .expect_ok("unauthenticated send");
    let unsigned = sink.wait_for_messages(2, DELIVERY).remove(1);

    assert_eq!(signed.header_values("Subject"), ["authenticated"]);
    assert_signed_by(&signed.data, &signer.dns_records(), &[signer.key()]);
    assert_eq!(unsigned.header_values("Subject"), ["anonymous"]);
    assert_unsigned(&unsigned.data, &signer.dns_records());
}

#[test]
fn daemon_name_of_the_submission_service_reaches_the_milter() {
    let sink = SmtpSink::start();
    // Not internal, not authenticated: only `MTA ORIGINATING` makes it sign.
    let signer = OpenDkimSigner::builder()
        .internal_hosts(&["192.0.2.1"])
        .config_line("MTA ORIGINATING")
        .write();
    let socket = MilterSocket::free_inet();
    let _milter = signer.start(&socket);
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
            &message("originating"),
        )
        .expect_ok("send to the ORIGINATING service");
    let signed = sink.wait_for_messages(1, DELIVERY).remove(0);
    Submission::open(postfix.smtp_addr())
        .send(
            "alice@example.com",
            &["bob@example.org"],
            &message("inbound"),
        )
        .expect_ok("send to smtp");
    let unsigned = sink.wait_for_messages(2, DELIVERY).remove(1);

    assert_signed_by(&signed.data, &signer.dns_records(), &[signer.key()]);
    assert_eq!(unsigned.header_values("Subject"), ["inbound"]);
    assert_unsigned(&unsigned.data, &signer.dns_records());
}

#[test]
fn milter_down_tempfails_and_queued_mail_is_signed_after_flush() {
    let sink = SmtpSink::start();
    let signer = opendkim(SigningKey::Rsa);
    let socket = MilterSocket::free_inet();
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milter(&socket)
        .milter_default_action("tempfail")
        .start();

    // SMTP: the client is told to come back later; Postfix keeps nothing.
    let reply = Submission::open(postfix.smtp_addr()).send(
        "alice@example.com",
        &["bob@example.org"],
        &message("smtp-while-down"),
    );
    assert!(reply.is_transient_failure(), "{reply:?}");

    // sendmail(1): the message waits in Postfix's queue.
    postfix.sendmail(
        "alice@example.com",
        &["bob@example.org"],
        &message("queued"),
    );
    postfix.wait_for_log("milter-reject", DELIVERY);
    let queued = postfix.wait_for_queued(1, DELIVERY);
    assert_eq!(
        queued[0].queue_name, "maildrop",
        "pickup keeps it for later"
    );
    assert_eq!(queued[0].recipients, ["bob@example.org"]);
    assert!(sink.messages().is_empty());

    let _milter = signer.start(&socket);
    postfix.flush();

    let received = sink.wait_for_messages(1, DELIVERY);
    assert_eq!(received[0].header_values("Subject"), ["queued"]);
    assert_signed_by(&received[0].data, &signer.dns_records(), &[signer.key()]);
    postfix.wait_for_queued(0, DELIVERY);
}

#[test]
fn sink_without_8bitmime_makes_postfix_downgrade() {
    let sink = SmtpSink::without_8bitmime();
    let postfix = Postfix::builder().relay_to(sink.addr()).start();
    let content = "From: alice@example.com\r\n\
                   To: bob@example.org\r\n\
                   Subject: 8bit\r\n\
                   MIME-Version: 1.0\r\n\
                   Content-Type: text/plain; charset=utf-8\r\n\
                   Content-Transfer-Encoding: 8bit\r\n\
                   \r\n\
                   Grüße\r\n";

    let mut client = Submission::open(postfix.smtp_addr());
    client
        .command("MAIL FROM:<alice@example.com> BODY=8BITMIME")
        .expect_ok("MAIL");
    client.rcpt_to("bob@example.org").expect_ok("RCPT");
    client.data(content.as_bytes()).expect_ok("DATA");

    let received = sink.wait_for_messages(1, DELIVERY);
    assert_eq!(
        received[0].header_values("Content-Transfer-Encoding"),
        ["quoted-printable"]
    );
    assert!(
        received[0].text().contains("Gr=C3=BC=C3=9Fe"),
        "{}",
        received[0].text()
    );
    assert!(received[0].data.is_ascii());
}

#[test]
fn verifiers_report_a_broken_signature() {
    let sink = SmtpSink::start();
    let signer = opendkim(SigningKey::Ed25519);
    let socket = MilterSocket::free_inet();
    let _milter = signer.start(&socket);
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milter(&socket)
        .start();
    Submission::open(postfix.smtp_addr())
        .send(
            "alice@example.com",
            &["bob@example.org"],
            &message("tampered"),
        )
        .expect_ok("send");
    let received = sink.wait_for_messages(1, DELIVERY);

    let tampered = received[0].text().replace("Hello Bob", "Hello Eve");
    for verifier in Verifier::BOTH {
        let verdicts = verifier.verify(tampered.as_bytes(), &signer.dns_records());
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        assert!(!verdicts[0].passed(), "{verdicts:?}");
        assert_eq!(verdicts[0].algorithm, "ed25519-sha256");
    }
}

#[test]
fn harness_leaves_no_processes_and_no_files() {
    let roots: Vec<PathBuf>;
    {
        let sink = SmtpSink::start();
        let signer = opendkim(SigningKey::Rsa);
        let socket = MilterSocket::unix_in(signer.dir());
        let milter: MilterProcess = signer.start(&socket);
        let postfix = Postfix::builder()
            .relay_to(sink.addr())
            .milter(&socket)
            .submission_service()
            .sasl_user("alice@example.com", "s3cret")
            .start();
        postfix.sendmail(
            "alice@example.com",
            &["bob@example.org"],
            &message("cleanup"),
        );
        sink.wait_for_messages(1, DELIVERY);
        roots = vec![postfix.root().to_path_buf(), signer.dir().to_path_buf()];
        assert!(!processes::mentioning(&roots[0]).is_empty(), "Postfix runs");
        assert!(
            !processes::mentioning(&roots[1]).is_empty(),
            "OpenDKIM runs"
        );
        drop(milter);
    }
    for root in &roots {
        assert_eq!(
            processes::mentioning(root),
            [],
            "processes left for {}",
            root.display()
        );
        assert!(!root.exists(), "{} was not removed", root.display());
    }
}
