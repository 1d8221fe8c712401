//! Hostile milter clients against the real daemon (the release binary as a
//! subprocess, so its memory is what /proc says it is).
//!
//! Each case runs the daemon with short time limits, lets the hostile
//! client loose, and checks three things while it is active:
//!
//! - a well-behaved conversation (the bench client sending a message from
//!   an internal host) still gets its signature within [`LIVELY`];
//! - the daemon's peak resident memory (VmHWM) stays under [`RSS_BOUND`]
//!   (docs/operations.md, "Limits", gives the arithmetic);
//! - the daemon's log has exactly one line about the case, however many
//!   bytes, headers or connections the client sent.
//!
//! No test asserts a timing beyond "answers within so many seconds".

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use milter::postfix;
use milter::{ClientAddress, Command, Reply, ReplyDecoder};
use testkit::{MilterProcess, Sidecar};

/// How long a well-behaved conversation may take while a hostile client
/// is active. Generous: the machine is shared; this is liveness, not speed.
const LIVELY: Duration = Duration::from_secs(15);

/// The daemon's peak resident set size must stay below this in every case.
/// Measured peaks are 10 to 25 MiB (see docs/operations.md, "Limits");
/// the bound leaves room for a slower allocator, not for a leak: a million
/// buffered headers or a 4 GB allocation would blow it.
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// The time limits the daemon runs with here: short, so cases end quickly.
const IDLE_SECONDS: u64 = 2;
const FRAME_SECONDS: u64 = 2;

/// The daemon on a native configuration with short limits, signing
/// example.com mail from 127.0.0.1.
struct Target {
    /// Holds the configuration directory.
    _sidecar: Sidecar,
    milter: MilterProcess,
    addr: SocketAddr,
}

impl Target {
    fn start(max_connections: usize) -> Target {
        let sidecar = Sidecar::builder().write();
        let toml = sidecar.native_toml(
            "hostile.toml",
            &format!(
                "[server]\nmax_connections = {max_connections}\n\
                 idle_timeout_seconds = {IDLE_SECONDS}\nframe_timeout_seconds = {FRAME_SECONDS}\n\
                 write_timeout_seconds = 2"
            ),
            &["127.0.0.1"],
        );
        let (milter, addr) = testkit::datasets::start_toml(&sidecar, &toml);
        Target {
            _sidecar: sidecar,
            milter,
            addr,
        }
    }

    fn pid(&self) -> u32 {
        self.milter.pid()
    }

    /// One message the way Postfix sends it; panics unless it comes back
    /// signed within [`LIVELY`].
    fn well_behaved(&self) {
        let started = Instant::now();
        if let Err(e) = testkit::conversation::signed_message(self.addr, LIVELY) {
            panic!(
                "well-behaved conversation while a hostile client is active: {e}\n{}",
                self.log()
            );
        }
        eprintln!("well-behaved message signed in {:?}", started.elapsed());
    }

    /// Retries a well-behaved conversation until one is signed within
    /// [`LIVELY`] (for the case where every connection slot is taken for a
    /// while, so the first tries are refused).
    fn well_behaved_eventually(&self) {
        let started = Instant::now();
        let deadline = started + LIVELY;
        loop {
            match testkit::conversation::signed_message(self.addr, LIVELY) {
                Ok(()) => {
                    eprintln!("well-behaved message signed after {:?}", started.elapsed());
                    return;
                }
                Err(e) if Instant::now() >= deadline => {
                    panic!("no signed message within {LIVELY:?}: {e}\n{}", self.log())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn log(&self) -> String {
        self.milter.log()
    }

    /// Peak and current resident memory, KiB.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc status"))
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    fn assert_memory_bounded(&self, case: &str) {
        let (peak, now) = self.memory();
        eprintln!("{case}: VmHWM {peak} KiB, VmRSS {now} KiB (bound {RSS_BOUND_KIB} KiB)");
        assert!(
            peak < RSS_BOUND_KIB,
            "{case}: peak RSS {peak} KiB over the bound of {RSS_BOUND_KIB} KiB"
        );
    }

    /// Waits until the log has a line containing `needle`, lets any
    /// repeats arrive, and asserts it is there exactly once.
    fn assert_logged_once(&self, needle: &str) {
        testkit::poll(LIVELY, || self.log().contains(needle).then_some(()))
            .unwrap_or_else(|| panic!("nothing logged about {needle:?}:\n{}", self.log()));
        // Repeats, if any, would follow within the time limits.
        std::thread::sleep(Duration::from_secs(IDLE_SECONDS + 1));
        let log = self.log();
        let count = log.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(count, 1, "{needle:?} logged {count} times:\n{log}");
        assert!(
            log.lines().count() < 20,
            "too many log lines for one case:\n{log}"
        );
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
    }

    /// Whether the daemon closed `stream` (end of file or reset) within
    /// `LIVELY`, discarding anything it sent.
    fn closed_by_daemon(stream: &mut TcpStream) -> bool {
        let deadline = Instant::now() + LIVELY;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
                Err(_) => return true,
            }
        }
        false
    }
}

fn frame(command: &Command) -> Vec<u8> {
    let mut buf = BytesMut::new();
    command.encode(&mut buf).unwrap();
    buf.to_vec()
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// Reads replies until one that is not "continue" or a negotiation; returns it.
fn read_until_verdict(stream: &mut TcpStream) -> Reply {
    let decoder = ReplyDecoder::default();
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(reply) = decoder.decode(&mut buf).unwrap() {
            match reply {
                Reply::Negotiate { .. } | Reply::Continue => {}
                other => return other,
            }
        }
        let n = stream.read(&mut chunk).expect("a reply");
        assert!(n > 0, "closed before a verdict");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads one reply (the negotiation's).
fn read_reply(stream: &mut TcpStream) -> Reply {
    let decoder = ReplyDecoder::default();
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(reply) = decoder.decode(&mut buf).unwrap() {
            return reply;
        }
        let n = stream.read(&mut chunk).expect("a reply");
        assert!(n > 0, "closed before a reply");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Negotiate as Postfix with protocol 6 (no reply to each header), open
/// a transaction from 127.0.0.1.
fn open_transaction(stream: &mut TcpStream) {
    stream
        .write_all(&frame(&Command::Negotiate(postfix::offer(6).unwrap())))
        .unwrap();
    assert!(matches!(read_reply(stream), Reply::Negotiate { .. }));
    let mut opening = frame(&Command::Connect {
        hostname: b("localhost"),
        address: ClientAddress::Ip("127.0.0.1:25".parse().unwrap()),
    });
    opening.extend(frame(&Command::Mail {
        sender: b("<a@example.com>"),
        args: vec![],
    }));
    opening.extend(frame(&Command::Rcpt {
        recipient: b("<b@example.org>"),
        args: vec![],
    }));
    stream.write_all(&opening).unwrap();
}

#[test]
fn slowloris_is_cut_by_the_frame_timeout() {
    let target = Target::start(64);
    // Ten clients, each trickling a valid negotiation one byte at a time:
    // none may hold its connection past the frame timeout.
    let offer = frame(&Command::Negotiate(postfix::offer(6).unwrap()));
    let trickle = Duration::from_millis(300);
    assert!(trickle * offer.len() as u32 > Duration::from_secs(FRAME_SECONDS * 2));
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let mut stream = target.connect();
            let offer = offer.clone();
            std::thread::spawn(move || {
                for byte in offer {
                    if stream.write_all(&[byte]).is_err() {
                        return true;
                    }
                    std::thread::sleep(trickle);
                }
                Target::closed_by_daemon(&mut stream)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    target.well_behaved();
    for client in clients {
        assert!(client.join().unwrap(), "a trickling client was not cut off");
    }
    target.assert_memory_bounded("slowloris");
    target.assert_logged_once("took longer than");
}

#[test]
fn a_client_that_never_speaks_hits_the_idle_timeout() {
    let target = Target::start(64);
    let mut silent: Vec<TcpStream> = (0..20).map(|_| target.connect()).collect();
    target.well_behaved();
    for stream in &mut silent {
        assert!(
            Target::closed_by_daemon(stream),
            "a silent client was not closed"
        );
    }
    target.assert_memory_bounded("silent");
    target.assert_logged_once("no frame for");
}

#[test]
fn a_4_gb_length_closes_the_connection_without_reading_it() {
    let target = Target::start(64);
    let (_, before) = target.memory();
    let mut stream = target.connect();
    // 4 GiB - 1 announced, then a little of it.
    let mut bytes = vec![0xff, 0xff, 0xff, 0xff, b'B'];
    bytes.extend(std::iter::repeat_n(b'x', 64 * 1024));
    let _ = stream.write_all(&bytes);
    target.well_behaved();
    assert!(Target::closed_by_daemon(&mut stream));
    let (peak, _) = target.memory();
    assert!(
        peak < before + 16 * 1024,
        "the announced length was allocated: {before} -> {peak} KiB"
    );
    target.assert_memory_bounded("4 GB length");
    target.assert_logged_once("exceeds the limit");
}

#[test]
fn a_million_headers_are_rejected_with_bounded_memory() {
    let target = Target::start(64);
    let mut stream = target.connect();
    open_transaction(&mut stream);
    let header = frame(&Command::Header {
        name: b("X-H"),
        value: b("v"),
    });
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        // 10,000 headers per write, a million in all.
        let batch: Vec<u8> = header.repeat(10_000);
        for _ in 0..100 {
            writer.write_all(&batch)?;
        }
        writer.write_all(&frame(&Command::EndOfHeaders))
    });
    std::thread::sleep(Duration::from_millis(200));
    target.well_behaved();
    sender
        .join()
        .unwrap()
        .expect("the daemon reads every header");
    let verdict = read_until_verdict(&mut stream);
    assert!(
        matches!(&verdict, Reply::ReplyCode(r) if r.code == 552),
        "{verdict:?}"
    );
    target.assert_memory_bounded("a million headers");
    target.assert_logged_once("header block is larger");
}

/// Opens a transaction, sends `batch` `times` over, then a header and end
/// of headers, while a well-behaved client is served; the message must be
/// rejected (552) with bounded memory and one log line.
fn recipients_are_rejected_with_bounded_memory(case: &str, batch: Vec<u8>, times: usize) {
    let target = Target::start(64);
    let mut stream = target.connect();
    open_transaction(&mut stream);
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for _ in 0..times {
            writer.write_all(&batch)?;
        }
        let mut end = frame(&Command::Header {
            name: b("From"),
            value: b("a@example.com"),
        });
        end.extend(frame(&Command::EndOfHeaders));
        writer.write_all(&end)
    });
    target.well_behaved();
    sender
        .join()
        .unwrap()
        .expect("the daemon reads every recipient");
    let verdict = read_until_verdict(&mut stream);
    assert!(
        matches!(&verdict, Reply::ReplyCode(r) if r.code == 552),
        "{verdict:?}"
    );
    target.assert_memory_bounded(case);
    target.assert_logged_once("bytes of them; rejected");
}

#[test]
fn a_hundred_thousand_recipients_are_rejected_with_bounded_memory() {
    let mut batch = Vec::new();
    for n in 0..10_000 {
        batch.extend(frame(&Command::Rcpt {
            recipient: Bytes::from(format!("<r{n}@example.org>")),
            args: vec![],
        }));
    }
    recipients_are_rejected_with_bounded_memory("a hundred thousand recipients", batch, 10);
}

#[test]
fn recipients_of_near_a_megabyte_each_are_rejected_with_bounded_memory() {
    let long = format!("<{}@example.org>", "r".repeat(1_000_000));
    let batch = frame(&Command::Rcpt {
        recipient: Bytes::from(long),
        args: vec![],
    });
    recipients_are_rejected_with_bounded_memory("eighty 1 MB recipients", batch, 80);
}

#[test]
fn a_1_mb_header_name_is_rejected_with_bounded_memory() {
    let target = Target::start(64);
    let mut stream = target.connect();
    open_transaction(&mut stream);
    let mut bytes = frame(&Command::Header {
        name: Bytes::from(vec![b'N'; 1_000_000]),
        value: b("v"),
    });
    bytes.extend(frame(&Command::EndOfHeaders));
    stream.write_all(&bytes).unwrap();
    target.well_behaved();
    let verdict = read_until_verdict(&mut stream);
    assert!(
        matches!(&verdict, Reply::ReplyCode(r) if r.code == 552),
        "{verdict:?}"
    );
    target.assert_memory_bounded("1 MB header name");
    target.assert_logged_once("header block is larger");
}

#[test]
fn garbage_after_quit_is_not_read() {
    let target = Target::start(64);
    let mut stream = target.connect();
    stream
        .write_all(&frame(&Command::Negotiate(postfix::offer(6).unwrap())))
        .unwrap();
    assert!(matches!(read_reply(&mut stream), Reply::Negotiate { .. }));
    let mut bytes = frame(&Command::Quit);
    bytes.extend((0..256 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let _ = stream.write_all(&bytes);
    target.well_behaved();
    assert!(Target::closed_by_daemon(&mut stream));
    target.assert_memory_bounded("garbage after QUIT");
    target.assert_logged_once("after QUIT");
}

#[test]
fn thousands_of_connections_beyond_the_limit_make_room_and_are_logged_once() {
    const LIMIT: usize = 50;
    milter_bench::process::raise_open_files_limit();
    let target = Target::start(LIMIT);
    // Two thousand connections at once, held open, never speaking.
    let flood: Vec<TcpStream> = (0..2000)
        .filter_map(|_| TcpStream::connect(target.addr).ok())
        .collect();
    assert!(flood.len() > LIMIT * 10, "only {} connected", flood.len());
    // Each newcomer beyond LIMIT takes the place of the one idle longest
    // (tests/connection_flood.rs looks closer); those left go at the idle
    // timeout.
    target.well_behaved_eventually();
    target.assert_memory_bounded("thousands of connections");
    target.assert_logged_once("connection limit reached");
    let idle = target
        .log()
        .lines()
        .filter(|l| l.contains("no frame for"))
        .count();
    assert!(
        idle <= 1,
        "idle timeouts logged {idle} times:\n{}",
        target.log()
    );
    drop(flood);
}
