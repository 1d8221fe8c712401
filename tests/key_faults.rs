//! A fault in one key or one table entry holds only the mail it concerns
//! (issue 18, item 2; issue 19's `t-sign-rs-tables-bad`): the daemon
//! starts, logs the fault once with its fix, tells systemd it is degraded,
//! signs every other domain, and gives the mail that needs the broken key
//! the On-KeyError action (tempfail by default), as OpenDKIM does.
//! `check-config` still fails on it.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use milter::Reply;
use milter::client::Outcome;
use testkit::daemon::Daemon;
use testkit::{MilterSocket, Sidecar, binary, mta};

/// Adds, beside the working example.com key, a SigningTable entry whose
/// key file is missing (broken.example, `broken.private` in the Sidecar's
/// directory), one whose KeyTable line is
/// malformed (malformed.example) and one whose key is not in the KeyTable
/// at all (unlisted.example).
fn sidecar_with_broken_entries() -> Sidecar {
    let sidecar = Sidecar::builder().write();
    let missing = sidecar.dir().join("broken.private");
    append(
        &sidecar,
        "KeyTable",
        &format!(
            "broken broken.example:default:{}\n\
             malformed malformed.example\n",
            missing.display()
        ),
    );
    append(
        &sidecar,
        "SigningTable",
        "*@broken.example broken\n\
         *@malformed.example malformed\n\
         *@unlisted.example unlisted\n",
    );
    sidecar
}

fn append(sidecar: &Sidecar, file: &str, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(sidecar.dir().join(file))
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn from(sender: &str) -> milter::client::Message {
    mta::message(
        format!(
            "From: {sender}\nTo: bob@example.org\nSubject: key faults\n\
             Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <1@test>\n\n\
             Hello.\r\n"
        )
        .as_bytes(),
    )
}

fn local() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

#[test]
fn a_broken_key_refuses_only_its_senders_mail_and_every_other_domain_is_signed() {
    let sidecar = sidecar_with_broken_entries();
    let socket = MilterSocket::free_inet();
    let daemon = Daemon::default().start(&sidecar, &socket);
    let &MilterSocket::Inet(addr) = daemon.socket() else {
        unreachable!("free_inet gives an inet socket")
    };

    let signed = mta::send(addr, &from("alice@example.com"), local(), "mta");
    let inserted = mta::inserted(&signed, "DKIM-Signature");
    assert_eq!(inserted.len(), 1, "example.com is signed: {signed:?}");
    assert!(inserted[0].contains("d=example.com"), "{inserted:?}");

    for sender in [
        "alice@broken.example",
        "alice@malformed.example",
        "alice@unlisted.example",
    ] {
        let refused = mta::send(addr, &from(sender), local(), "mta");
        let tempfailed = match &refused {
            Outcome::Refused { reply, .. } => match reply {
                Reply::Tempfail => true,
                Reply::ReplyCode(smtp) => smtp.code / 100 == 4,
                _ => false,
            },
            _ => false,
        };
        assert!(
            tempfailed,
            "{sender}: tempfailed as OpenDKIM does, got {refused:?}"
        );
    }

    let (status, log) = daemon.stop_with_log();
    assert!(status.success(), "{status}\n{log}");
    for needle in [
        "broken.private: key file not found",
        "KeyTable entry `malformed` has an empty or missing selector",
        "SigningTable refers to key `unlisted`",
    ] {
        let at_start = log
            .lines()
            .filter(|l| l.contains(needle) && l.contains("every other domain is signed"))
            .count();
        assert_eq!(
            at_start, 1,
            "logged once, with what it means: {needle}\n{log}"
        );
    }
    assert!(
        log.contains("result=tempfailed reason=key_unavailable sender=alice@broken.example"),
        "each refused message still has its own line: {log}"
    );
}

#[test]
fn check_config_fails_on_a_key_that_cannot_sign_and_names_each_one() {
    let sidecar = sidecar_with_broken_entries();
    let output = Command::new(binary())
        .arg("check-config")
        .arg("-x")
        .arg(sidecar.config())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("Keys that cannot sign (3)"), "{stdout}");
    assert!(
        stdout.contains("broken.private: key file not found"),
        "{stdout}"
    );
    assert!(stdout.contains("`malformed`"), "{stdout}");
    assert!(stdout.contains("`unlisted`"), "{stdout}");

    let healthy = Sidecar::builder().write();
    let output = Command::new(binary())
        .arg("check-config")
        .arg("-x")
        .arg(healthy.config())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn systemd_status_says_the_signer_is_degraded() {
    let sidecar = sidecar_with_broken_entries();
    let socket = MilterSocket::free_inet();
    let notify_path = sidecar.dir().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let log = std::fs::File::create(sidecar.dir().join("daemon.log")).unwrap();
    let mut command = Daemon::default().command(&sidecar, &socket.opendkim_spec());
    command
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut child = command.spawn().expect("start the daemon");
    let mut buf = [0u8; 4096];
    let received = notify.recv(&mut buf);
    let _ = child.kill();
    let _ = child.wait();
    let n = received.expect("a notification from the daemon");
    let ready = String::from_utf8_lossy(&buf[..n]);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready.contains("DEGRADED: 3 key problem(s)"),
        "systemctl status shows it: {ready}"
    );
}

#[test]
fn a_configuration_that_cannot_be_parsed_still_stops_start_up() {
    let sidecar = Sidecar::builder()
        .config_line("Canonicalization nonsense")
        .write();
    let output = Command::new(binary())
        .arg("run")
        .arg("-x")
        .arg(sidecar.config())
        .args(["--socket", "inet:1@127.0.0.1", "--allow-root"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Canonicalization"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_key_file_put_in_place_after_start_signs_without_a_reload_and_a_reload_applies() {
    let sidecar = sidecar_with_broken_entries();
    let socket = MilterSocket::free_inet();
    let daemon = Daemon::default().start(&sidecar, &socket);
    let &MilterSocket::Inet(addr) = daemon.socket() else {
        unreachable!("free_inet gives an inet socket")
    };
    let refused = mta::send(addr, &from("alice@broken.example"), local(), "mta");
    assert!(matches!(refused, Outcome::Refused { .. }), "{refused:?}");

    // The administrator installs the missing key, as the log line said.
    let key = sidecar.dir().join("broken.private");
    std::fs::copy(&sidecar.test_keys().rsa.private_key, &key).unwrap();
    testkit::set_mode(&key, 0o600);
    let signed = mta::send(addr, &from("alice@broken.example"), local(), "mta");
    let inserted = mta::inserted(&signed, "DKIM-Signature");
    assert_eq!(inserted.len(), 1, "{signed:?}");
    assert!(inserted[0].contains("d=broken.example"), "{inserted:?}");

    // A reload with fewer problems than the running configuration applies.
    testkit::processes::signal(daemon.pid() as i32, testkit::processes::Signal::SIGHUP);
    let reloaded = testkit::poll(Duration::from_secs(30), || {
        daemon
            .log()
            .contains("reload: configuration, tables and keys reloaded")
            .then_some(())
    });
    assert!(reloaded.is_some(), "{}", daemon.log());
    let signed = mta::send(addr, &from("alice@example.com"), local(), "mta");
    assert_eq!(mta::inserted(&signed, "DKIM-Signature").len(), 1);
}

#[test]
fn a_reload_that_would_break_a_key_that_signs_now_is_refused() {
    let sidecar = sidecar_with_broken_entries();
    let socket = MilterSocket::free_inet();
    let daemon = Daemon::default().start(&sidecar, &socket);
    let &MilterSocket::Inet(addr) = daemon.socket() else {
        unreachable!("free_inet gives an inet socket")
    };
    // example.com's key file is replaced by something that is not a key.
    let key = &sidecar.test_keys().rsa.private_key;
    std::fs::write(key, "not a key\n").unwrap();
    testkit::processes::signal(daemon.pid() as i32, testkit::processes::Signal::SIGHUP);
    let refused = testkit::poll(Duration::from_secs(30), || {
        let log = daemon.log();
        log.contains("reload failed, keeping the previous configuration")
            .then_some(log)
    });
    let log = refused.unwrap_or_else(|| daemon.log());
    assert!(
        log.contains("4 key problem(s) where the running configuration has 3"),
        "{log}"
    );
    let signed = mta::send(addr, &from("alice@example.com"), local(), "mta");
    assert_eq!(
        mta::inserted(&signed, "DKIM-Signature").len(),
        1,
        "the running configuration still signs example.com: {signed:?}"
    );
}
