//! What an administrator relies on in production, tested on the real
//! daemon runtime beside a real Postfix: reload under load switches the
//! signing key without losing or tempfailing a message, a broken reload
//! keeps the old configuration, changed files are picked up when watched,
//! systemd socket activation (through Debian's `systemd-socket-activate`),
//! READY=1/RELOADING=1/STOPPING=1, and metrics that match what was sent.
//!
//! The daemon is `dkim-sidecar run -x` on the Sidecar's opendkim.conf (see
//! `testkit::daemon`; `DKIM_SIDECAR_BIN` runs an installed binary instead).
//! Needs root and the packages `.ci/install-deps` installs. No test asserts
//! a timing: instants are only compared to order events.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::daemon::{Daemon, replace_file, sample, scrape};
use testkit::message::alice_to_bob;
use testkit::verify::assert_signed_by;
use testkit::{
    MilterProcess, MilterSocket, Postfix, ReceivedMessage, Sidecar, SmtpSink, Submission, Verifier,
    processes,
};

/// Generous: each of these normally takes well under a second.
const PATIENCE: Duration = Duration::from_secs(30);

/// A KeyTable whose entry `default` (the one the SigningTable names) uses
/// the RSA key (`s=default`) or the Ed25519 key (`s=ed25519`).
fn key_table(sidecar: &Sidecar, ed25519: bool) -> String {
    let keys = sidecar.test_keys();
    let key = if ed25519 { &keys.ed25519 } else { &keys.rsa };
    format!(
        "default {}:{}:{}\n",
        key.domain,
        key.selector,
        key.private_key.display()
    )
}

/// The selector of the one signature on `received`, which dkimpy must
/// find valid.
fn selector(received: &ReceivedMessage, sidecar: &Sidecar) -> String {
    let verdicts = Verifier::DkimPy.verify(&received.data, &sidecar.dns_records());
    assert!(
        verdicts.len() == 1 && verdicts[0].passed(),
        "exactly one valid signature expected: {verdicts:?}\n{}",
        received.text()
    );
    verdicts[0].selector.clone()
}

fn subject(received: &ReceivedMessage) -> String {
    received
        .header_values("Subject")
        .concat()
        .trim()
        .to_string()
}

/// Postfix with the daemon as its milter, tempfailing when the milter
/// fails (so a lost milter shows as a 4xx, never as unsigned mail).
struct Setup {
    // Dropped in this order: the daemon's log is printed before its
    // directory goes.
    postfix: Postfix,
    daemon: Option<MilterProcess>,
    sink: SmtpSink,
    sidecar: Sidecar,
    metrics: std::net::SocketAddr,
}

impl Setup {
    fn start(daemon: Daemon) -> Setup {
        let sink = SmtpSink::start();
        let sidecar = Sidecar::builder().write();
        let socket = MilterSocket::free_inet();
        let metrics = testkit::free_local_addr();
        let process = Daemon {
            metrics: Some(metrics),
            ..daemon
        }
        .start(&sidecar, &socket);
        let postfix = Postfix::builder()
            .relay_to(sink.addr())
            .milter(&socket)
            .milter_protocol(6)
            .milter_default_action("tempfail")
            .start();
        Setup {
            sink,
            sidecar,
            daemon: Some(process),
            postfix,
            metrics,
        }
    }

    fn daemon(&self) -> &MilterProcess {
        self.daemon.as_ref().expect("running")
    }

    fn signal(&self, signal: processes::Signal) {
        processes::signal(self.daemon().pid() as i32, signal);
    }

    /// Waits until the daemon's log has `needle` at least `count` times.
    fn wait_for_log(&self, needle: &str, count: usize) -> String {
        testkit::poll(PATIENCE, || {
            let log = self.daemon().log();
            (log.matches(needle).count() >= count).then_some(log)
        })
        .unwrap_or_else(|| {
            panic!(
                "the daemon never logged {needle:?} {count} time(s):\n{}",
                self.daemon().log()
            )
        })
    }

    /// Sends one message and returns it as relayed.
    fn send(&self, subject: &str) -> ReceivedMessage {
        let before = self.sink.messages().len();
        Submission::open(self.postfix.smtp_addr())
            .send(
                "alice@example.com",
                &["bob@example.org"],
                &alice_to_bob(subject),
            )
            .expect_ok(subject);
        self.sink
            .wait_for_messages(before + 1, PATIENCE)
            .remove(before)
    }
}

/// One message a sender thread sent, with instants to order it against
/// the reload.
struct Sent {
    subject: String,
    started: Instant,
    finished: Instant,
    reply: testkit::Reply,
}

#[test]
fn reload_switches_the_key_under_load_with_no_message_lost_or_unsigned() {
    const SENDERS: usize = 3;
    const PER_CONNECTION: usize = 4;
    /// Messages each phase must have before the test moves on.
    const PER_PHASE: usize = 8;

    let setup = Setup::start(Daemon::default());
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|t| {
            let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
            let addr = setup.postfix.smtp_addr();
            std::thread::spawn(move || {
                let mut n = 0;
                // Several messages per SMTP (and so milter) connection: a
                // connection opened before the reload must pick up the new
                // key for transactions it starts after it.
                while !stop.load(Ordering::SeqCst) {
                    let mut client = Submission::open(addr);
                    for _ in 0..PER_CONNECTION {
                        let subject = format!("load-{t}-{n}");
                        n += 1;
                        let started = Instant::now();
                        let reply = client.send(
                            "alice@example.com",
                            &["bob@example.org"],
                            &alice_to_bob(&subject),
                        );
                        let finished = Instant::now();
                        sent.lock().unwrap().push(Sent {
                            subject,
                            started,
                            finished,
                            reply,
                        });
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                    client.quit();
                }
            })
        })
        .collect();
    let count_where =
        |f: &dyn Fn(&Sent) -> bool| sent.lock().unwrap().iter().filter(|s| f(s)).count();

    // Phase 1: RSA key.
    testkit::poll(PATIENCE, || {
        (count_where(&|_| true) >= PER_PHASE).then_some(())
    })
    .expect("messages flow before the reload");

    // Swap the KeyTable under the running load, then SIGHUP.
    replace_file(
        setup.sidecar.dir(),
        "KeyTable",
        &key_table(&setup.sidecar, true),
    );
    let signalled = Instant::now();
    setup.signal(processes::Signal::SIGHUP);
    setup.wait_for_log("reload: configuration, tables and keys reloaded", 1);
    let reloaded = Instant::now();

    // Phase 2: Ed25519 key, enough messages started after the reload.
    testkit::poll(PATIENCE, || {
        (count_where(&|s| s.started > reloaded) >= PER_PHASE).then_some(())
    })
    .expect("messages flow after the reload");
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.join().expect("sender thread");
    }

    let sent = std::mem::take(&mut *sent.lock().unwrap());
    for s in &sent {
        assert!(
            s.reply.is_success(),
            "{} was not accepted (a tempfail means the milter failed): {:?}\n{}",
            s.subject,
            s.reply,
            setup.daemon().log()
        );
    }
    let received = setup.sink.wait_for_messages(sent.len(), PATIENCE);
    assert_eq!(
        received.len(),
        sent.len(),
        "every accepted message relayed once"
    );

    let mut by_selector = std::collections::BTreeMap::<String, usize>::new();
    for message in &received {
        let subject = subject(message);
        let s = sent
            .iter()
            .find(|s| s.subject == subject)
            .unwrap_or_else(|| panic!("relayed a message nobody sent: {subject}"));
        let selector = selector(message, &setup.sidecar);
        if s.finished < signalled {
            assert_eq!(selector, "default", "{subject} finished before the SIGHUP");
        }
        if s.started > reloaded {
            assert_eq!(selector, "ed25519", "{subject} started after the reload");
        }
        *by_selector.entry(selector).or_default() += 1;
    }
    // The first and last messages also pass OpenDKIM's verifier.
    let keys = setup.sidecar.test_keys();
    let first = sent.iter().min_by_key(|s| s.finished).unwrap();
    let last = sent.iter().max_by_key(|s| s.started).unwrap();
    for (s, key) in [(first, &keys.rsa), (last, &keys.ed25519)] {
        let m = received.iter().find(|m| subject(m) == s.subject).unwrap();
        assert_signed_by(&m.data, &setup.sidecar.dns_records(), &[key]);
    }

    // The metrics count exactly what was sent, by algorithm.
    let metrics = scrape(setup.metrics);
    let total = sent.len() as f64;
    let rsa = by_selector.get("default").copied().unwrap_or(0) as f64;
    let ed = by_selector.get("ed25519").copied().unwrap_or(0) as f64;
    for (series, expected) in [
        ("dkim_sidecar_messages_total{outcome=\"signed\"}", total),
        (
            "dkim_sidecar_signatures_total{algorithm=\"rsa-sha256\"}",
            rsa,
        ),
        (
            "dkim_sidecar_signatures_total{algorithm=\"ed25519-sha256\"}",
            ed,
        ),
        ("dkim_sidecar_message_duration_seconds_count", total),
        ("dkim_sidecar_reloads_total{result=\"ok\"}", 1.0),
        ("dkim_sidecar_reloads_total{result=\"failed\"}", 0.0),
        ("dkim_sidecar_config_last_reload_successful", 1.0),
    ] {
        assert_eq!(sample(&metrics, series), expected, "{series}\n{metrics}");
    }
    assert!(
        !metrics.contains("PRIVATE KEY") && !metrics.contains("MII"),
        "no key material in metrics"
    );
    assert!(
        sample(&metrics, "dkim_sidecar_connections_total") >= SENDERS as f64,
        "{metrics}"
    );
    let key_age = "dkim_sidecar_key_file_modified_timestamp_seconds\
        {key=\"default\",domain=\"example.com\",selector=\"ed25519\"}";
    assert!(sample(&metrics, key_age) > 0.0, "{metrics}");

    // One log line per message, each with its queue id, d=, s=, a= and time.
    let log = setup.daemon().log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("result=signed"))
        .collect();
    assert_eq!(lines.len(), sent.len(), "{log}");
    for line in lines {
        for part in ["queue_id=", "d=example.com", "s=", "a=", "elapsed_ms="] {
            assert!(line.contains(part), "{part} missing: {line}");
        }
    }
}

#[test]
fn a_broken_reload_keeps_the_old_configuration() {
    let setup = Setup::start(Daemon::default());
    let dir = setup.sidecar.dir().to_path_buf();
    assert_eq!(selector(&setup.send("before"), &setup.sidecar), "default");
    let good_key_table = std::fs::read_to_string(dir.join("KeyTable")).unwrap();

    // A KeyTable naming a key file that does not exist (OpenDKIM's reload signal).
    let missing = dir.join("missing.private");
    replace_file(
        &dir,
        "KeyTable",
        &format!("default example.com:default:{}\n", missing.display()),
    );
    setup.signal(processes::Signal::SIGUSR1);
    let log = setup.wait_for_log("reload failed, keeping the previous configuration", 1);
    assert!(
        log.contains(&missing.display().to_string()),
        "names the file:\n{log}"
    );
    assert_eq!(
        selector(&setup.send("after-missing"), &setup.sidecar),
        "default"
    );

    // A key file that is not a key.
    let garbage = dir.join("garbage.private");
    std::fs::write(&garbage, "this is not a key\n").unwrap();
    testkit::set_mode(&garbage, 0o600);
    replace_file(
        &dir,
        "KeyTable",
        &format!("default example.com:ed25519:{}\n", garbage.display()),
    );
    setup.signal(processes::Signal::SIGHUP);
    let log = setup.wait_for_log("reload failed, keeping the previous configuration", 2);
    assert!(
        log.contains(&garbage.display().to_string()),
        "names the file:\n{log}"
    );
    assert_eq!(
        selector(&setup.send("after-garbage"), &setup.sidecar),
        "default"
    );

    // A SigningTable naming a key the KeyTable does not have.
    replace_file(&dir, "KeyTable", &good_key_table);
    replace_file(&dir, "SigningTable", "*@example.com nosuchkey\n");
    setup.signal(processes::Signal::SIGHUP);
    let log = setup.wait_for_log("reload failed, keeping the previous configuration", 3);
    assert!(log.contains("nosuchkey"), "names the key:\n{log}");
    assert_eq!(
        selector(&setup.send("after-unknown"), &setup.sidecar),
        "default"
    );

    let metrics = scrape(setup.metrics);
    assert_eq!(
        sample(&metrics, "dkim_sidecar_reloads_total{result=\"failed\"}"),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "dkim_sidecar_reloads_total{result=\"ok\"}"),
        0.0
    );
    assert_eq!(
        sample(&metrics, "dkim_sidecar_config_last_reload_successful"),
        0.0
    );
    assert_eq!(
        sample(&metrics, "dkim_sidecar_messages_total{outcome=\"signed\"}"),
        4.0
    );

    // Fixed: the next reload takes the new key.
    replace_file(&dir, "SigningTable", "*@example.com default\n");
    replace_file(&dir, "KeyTable", &key_table(&setup.sidecar, true));
    setup.signal(processes::Signal::SIGHUP);
    setup.wait_for_log("reload: configuration, tables and keys reloaded", 1);
    assert_eq!(selector(&setup.send("fixed"), &setup.sidecar), "ed25519");
    let metrics = scrape(setup.metrics);
    assert_eq!(
        sample(&metrics, "dkim_sidecar_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        sample(&metrics, "dkim_sidecar_config_last_reload_successful"),
        1.0
    );
}

#[test]
fn changed_table_files_are_reloaded_when_watched() {
    let setup = Setup::start(Daemon {
        watch: Some(Duration::from_secs(1)),
        ..Daemon::default()
    });
    assert_eq!(selector(&setup.send("before"), &setup.sidecar), "default");
    replace_file(
        setup.sidecar.dir(),
        "KeyTable",
        &key_table(&setup.sidecar, true),
    );
    let log = setup.wait_for_log("reload: configuration, tables and keys reloaded", 1);
    assert!(log.contains("KeyTable changed: reloading"), "{log}");
    assert_eq!(selector(&setup.send("after"), &setup.sidecar), "ed25519");
}

/// Kills the process in `Drop`.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sockets_from_systemd_socket_activate_are_used_as_they_are() {
    testkit::require_program("/usr/bin/systemd-socket-activate", "systemd");
    let sink = SmtpSink::start();
    let sidecar = Sidecar::builder().write();
    let unix = MilterSocket::unix_in(sidecar.dir());
    let inet = MilterSocket::free_inet();
    let MilterSocket::Unix(unix_path) = &unix else {
        unreachable!()
    };
    // The configured socket is somewhere the daemon cannot bind: it must
    // not be opened when systemd passes sockets.
    let daemon = Daemon::default();
    let milter = MilterProcess::start(
        "systemd-socket-activate + dkim-sidecar daemon",
        &unix,
        &sidecar.dir().join("daemon.log"),
        |_| {
            let child = daemon.command(&sidecar, "unix:/nonexistent-dkim-sidecar-test/milter.sock");
            // systemd-socket-activate passes on only what -E names.
            let mut command = Command::new("/usr/bin/systemd-socket-activate");
            command.arg("--listen").arg(unix_path);
            command.arg("--listen").arg(match &inet {
                MilterSocket::Inet(addr) => addr.to_string(),
                MilterSocket::Unix(_) => unreachable!(),
            });
            command.arg("--fdname=smtpd:cleanup");
            for (name, value) in child.get_envs() {
                if let Some(value) = value {
                    let mut pair = name.to_os_string();
                    pair.push("=");
                    pair.push(value);
                    command.arg("-E").arg(pair);
                }
            }
            command.arg(child.get_program()).args(child.get_args());
            command
        },
    );
    testkit::poll(PATIENCE, || {
        milter.log().contains("dkim-sidecar started").then_some(())
    })
    .unwrap_or_else(|| panic!("the daemon did not start:\n{}", milter.log()));
    let mode = || std::fs::metadata(unix_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(),
        0o644,
        "as systemd-socket-activate made it, not chmod'ed to 0600"
    );
    // What SocketMode=0666 would have done: let Postfix's user connect.
    testkit::set_mode(unix_path, 0o666);
    let identity = std::fs::metadata(unix_path).unwrap().ino();
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .smtpd_milters(&unix.postfix_spec())
        .non_smtpd_milters(&inet.postfix_spec())
        .milter_default_action("tempfail")
        .start();

    // smtpd reaches the daemon through the Unix socket, cleanup (for
    // sendmail) through the TCP one.
    Submission::open(postfix.smtp_addr())
        .send(
            "alice@example.com",
            &["bob@example.org"],
            &alice_to_bob("smtpd"),
        )
        .expect_ok("send");
    postfix.sendmail(
        "alice@example.com",
        &["bob@example.org"],
        &alice_to_bob("sendmail"),
    );
    let received = sink.wait_for_messages(2, PATIENCE);
    for m in &received {
        assert_signed_by(&m.data, &sidecar.dns_records(), &sidecar.keys());
    }
    let log = milter.log();
    assert!(log.contains("from_systemd=true"), "{log}");
    assert!(log.contains("the configured Socket is not opened"), "{log}");
    assert_eq!(mode(), 0o666, "the socket's mode is systemd's business");

    assert!(milter.stop().success(), "SIGTERM exits 0");
    let after = std::fs::metadata(unix_path).expect("the socket file systemd made stays");
    assert_eq!(after.ino(), identity);
}

#[test]
fn ready_reloading_and_stopping_are_notified_to_systemd() {
    let sidecar = Sidecar::builder().write();
    let socket = MilterSocket::free_inet();
    let notify_path = sidecar.dir().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(PATIENCE)).unwrap();
    let receive = || {
        let mut buf = [0u8; 4096];
        let n = notify
            .recv(&mut buf)
            .expect("a notification from the daemon");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let log = std::fs::File::create(sidecar.dir().join("daemon.log")).unwrap();
    let mut command = Daemon::default().command(&sidecar, &socket.opendkim_spec());
    command
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut daemon = Running(command.spawn().expect("start the daemon"));

    let ready = receive();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(ready.contains("STATUS=signing on inet:"), "{ready}");
    assert!(
        socket.accepts_connections(),
        "READY=1 comes once the socket listens"
    );

    processes::signal(daemon.0.id() as i32, processes::Signal::SIGHUP);
    let reloading = receive();
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let ready = receive();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");

    processes::signal(daemon.0.id() as i32, processes::Signal::SIGTERM);
    let stopping = receive();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// Sends one message through a Postfix using the daemon on `socket` and
/// checks that it arrives signed.
fn one_message_through(sidecar: &Sidecar, socket: &MilterSocket, subject: &str) {
    let sink = SmtpSink::start();
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milter(socket)
        .milter_default_action("tempfail")
        .start();
    Submission::open(postfix.smtp_addr())
        .send(
            "alice@example.com",
            &["bob@example.org"],
            &alice_to_bob(subject),
        )
        .expect_ok(subject);
    let received = sink.wait_for_messages(1, PATIENCE);
    assert_signed_by(&received[0].data, &sidecar.dns_records(), &sidecar.keys());
}

#[test]
fn syslog_yes_writes_one_line_per_message_to_facility_mail() {
    testkit::require_program("/usr/bin/unshare", "util-linux");
    let sidecar = Sidecar::builder()
        .config_line("Syslog yes")
        .config_line("SyslogFacility mail")
        .write();
    let socket = MilterSocket::free_inet();
    // The daemon's /dev/log is this socket: a private mount namespace with a
    // tmpfs on /dev and the socket bound over /dev/log, so the test needs no
    // syslog daemon and touches nothing outside.
    let log_path = sidecar.dir().join("devlog.sock");
    let syslog = UnixDatagram::bind(&log_path).unwrap();
    syslog.set_read_timeout(Some(PATIENCE)).unwrap();
    let daemon = Daemon::default();
    let milter = MilterProcess::start(
        "dkim-sidecar daemon (syslog)",
        &socket,
        &sidecar.dir().join("daemon.log"),
        |socket| {
            let child = daemon.command(&sidecar, &socket.opendkim_spec());
            let mut command = Command::new("/usr/bin/unshare");
            command
                .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
                .arg(
                    "mount -t tmpfs tmpfs /dev && : > /dev/log && \
                     mount --bind \"$0\" /dev/log && exec \"$@\"",
                )
                .arg(&log_path)
                .arg(child.get_program())
                .args(child.get_args());
            for (name, value) in child.get_envs() {
                match value {
                    Some(value) => command.env(name, value),
                    None => command.env_remove(name),
                };
            }
            command
        },
    );
    one_message_through(&sidecar, &socket, "syslog");

    let pid = milter.pid();
    let mut lines = Vec::new();
    let signed = loop {
        let mut buf = [0u8; 8192];
        let n = syslog.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no signed line in syslog ({e}); got {lines:#?}\n{}",
                milter.log()
            )
        });
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        if line.contains("result=signed") {
            break line;
        }
        lines.push(line);
    };
    // <22>: facility mail (2 << 3) + priority info (6); ident and PID.
    assert!(signed.starts_with("<22>"), "{signed}");
    assert!(
        signed.contains(&format!("dkim-sidecar[{pid}]: ")),
        "{signed}"
    );
    for part in [
        "queue_id=",
        "d=example.com",
        "s=default",
        "a=rsa-sha256",
        "elapsed_ms=",
    ] {
        assert!(signed.contains(part), "{part} missing: {signed}");
    }
    assert!(!signed.contains('\n'), "one line: {signed:?}");
    assert!(
        signed.contains(&format!("dkim-sidecar[{pid}]: signed queue_id=")),
        "no level or time of our own: {signed}"
    );
    assert!(
        lines.iter().any(|l| l.contains("dkim-sidecar started")),
        "start-up went to syslog too: {lines:#?}"
    );
    assert!(
        !milter.log().contains("result=signed"),
        "nothing on stderr with Syslog yes:\n{}",
        milter.log()
    );
}

#[test]
fn json_lines_and_log_why_no_keep_the_short_reason() {
    // JSON lines are a native-format setting: the same tables, from TOML.
    let sidecar = Sidecar::builder().write();
    let toml = sidecar.native_toml(
        "dkim-sidecar.toml",
        "mode = \"s\"\n\n[logging]\njson = true\nlog_why = false",
        &["192.0.2.1"],
    );
    let socket = MilterSocket::free_inet();
    let milter = Daemon {
        toml: Some(toml),
        ..Daemon::default()
    }
    .start(&sidecar, &socket);
    // 127.0.0.1 is not internal here: not signed, with the short reason only.
    let sink = SmtpSink::start();
    let postfix = Postfix::builder()
        .relay_to(sink.addr())
        .milter(&socket)
        .start();
    Submission::open(postfix.smtp_addr())
        .send(
            "alice@example.com",
            &["bob@example.org"],
            &alice_to_bob("json"),
        )
        .expect_ok("send");
    sink.wait_for_messages(1, PATIENCE);
    let log = testkit::poll(PATIENCE, || {
        let log = milter.log();
        log.contains("not_signed").then_some(log)
    })
    .unwrap_or_else(|| panic!("no not_signed line:\n{}", milter.log()));
    let line = log.lines().find(|l| l.contains("not_signed")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(json["result"], "not_signed", "{json}");
    assert_eq!(json["reason"], "untrusted_origin", "{json}");
    assert_eq!(
        json["message"], "not signed",
        "LogWhy no: no detail: {json}"
    );
    assert!(
        json["queue_id"].as_str().is_some_and(|q| q.len() > 3),
        "{json}"
    );
    assert!(json["elapsed_ms"].is_number(), "{json}");
}

#[test]
fn under_journald_lines_carry_priorities_and_no_timestamp() {
    let sidecar = Sidecar::builder().write();
    let socket = MilterSocket::free_inet();
    let log = sidecar.dir().join("daemon.log");
    std::fs::File::create(&log).unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    // What systemd sets when stderr is a journal stream: its device and inode.
    let journal_stream = format!("{}:{}", meta.dev(), meta.ino());
    let daemon = MilterProcess::start("dkim-sidecar daemon (journal)", &socket, &log, |s| {
        let mut command = Daemon::default().command(&sidecar, &s.opendkim_spec());
        command.env("JOURNAL_STREAM", &journal_stream);
        command
    });
    one_message_through(&sidecar, &socket, "journal");
    let text = testkit::poll(PATIENCE, || {
        let text = daemon.log();
        text.contains("result=signed").then_some(text)
    })
    .unwrap_or_else(|| panic!("no signed line:\n{}", daemon.log()));
    let started = text
        .lines()
        .find(|l| l.contains("dkim-sidecar started"))
        .unwrap();
    assert!(started.starts_with("<6>dkim-sidecar started "), "{started}");
    let signed = text.lines().find(|l| l.contains("result=signed")).unwrap();
    assert!(signed.starts_with("<6>signed queue_id="), "{signed}");
}
