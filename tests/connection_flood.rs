//! Connection floods against the real daemon (the release binary as a
//! subprocess, so its memory is what /proc says it is).
//!
//! Thousands of silent TCP connections must not lock Postfix out: with the
//! default limit they are all held and Postfix is still served, and at a
//! configured limit the connection idle longest makes room for the
//! newcomer, never one with a transaction in flight. The daemon's resident
//! memory with the flood held is reported (and bounded generously); the
//! time Postfix's message took is reported, never asserted.

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use testkit::conversation::{self, HeldTransaction};
use testkit::{MilterProcess, Sidecar};

/// How long a well-behaved conversation may take while the flood is held.
/// Generous: the machine is shared; this is liveness, not speed.
const LIVELY: Duration = Duration::from_secs(30);

/// The daemon's resident memory with 20,000 idle connections must stay
/// below this: a few KiB per connection is expected (docs/operations.md,
/// "Limits"); 64 KiB each would blow it.
const RSS_BOUND_KIB: u64 = 256 * 1024;

/// The daemon on a native configuration signing example.com mail from
/// 127.0.0.1, with the default limits unless `max_connections` is given.
struct Target {
    /// Holds the configuration directory.
    _sidecar: Sidecar,
    milter: MilterProcess,
    addr: SocketAddr,
}

impl Target {
    fn start(max_connections: Option<usize>) -> Target {
        let sidecar = Sidecar::builder().write();
        let limit = max_connections.map_or(String::new(), |n| format!("max_connections = {n}\n"));
        let toml = sidecar.native_toml("flood.toml", &format!("[server]\n{limit}"), &["127.0.0.1"]);
        let (milter, addr) = testkit::datasets::start_toml(&sidecar, &toml);
        Target {
            _sidecar: sidecar,
            milter,
            addr,
        }
    }

    /// Resident memory now, KiB.
    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.milter.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// Waits until the daemon holds at least `count` sockets (its open
    /// file descriptors, less the dozen it has anyway).
    fn wait_until_holding(&self, count: usize) {
        let dir = format!("/proc/{}/fd", self.milter.pid());
        let held = || std::fs::read_dir(&dir).map_or(0, Iterator::count);
        testkit::poll(LIVELY, || (held() >= count).then_some(())).unwrap_or_else(|| {
            panic!(
                "the daemon holds {} descriptors, not {count}\n{}",
                held(),
                self.log()
            )
        });
    }

    /// One message the way Postfix sends it; panics unless it comes back
    /// signed. Returns how long it took.
    fn signed(&self) -> Duration {
        let started = Instant::now();
        if let Err(e) = conversation::signed_message(self.addr, LIVELY) {
            panic!(
                "Postfix-like conversation during the flood: {e}\n{}",
                self.log()
            );
        }
        started.elapsed()
    }

    fn log(&self) -> String {
        self.milter.log()
    }

    /// Opens silent connections until `flood` holds `total`.
    fn flood(&self, flood: &mut Vec<TcpStream>, total: usize) {
        while flood.len() < total {
            let stream = TcpStream::connect(self.addr)
                .unwrap_or_else(|e| panic!("connection {} of the flood: {e}", flood.len() + 1));
            flood.push(stream);
        }
    }

    /// The connection limit the daemon keeps: its own word when the open
    /// files limit made it lower the default.
    fn connection_limit(&self) -> usize {
        let log = self.log();
        log.lines()
            .find_map(|l| {
                let (_, rest) = l.split_once("leaves room for ")?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or(milter::server::DEFAULT_MAX_CONNECTIONS)
    }
}

/// Silent connections held by a helper process (python3, which the tests
/// need for dkimpy anyway), for floods larger than one process may hold
/// sockets: a container's hard open-files limit can be as low as the
/// flood. Killed when dropped.
struct Holder(std::process::Child);

impl Holder {
    const SCRIPT: &str = "import socket, sys\n\
        addr = (sys.argv[1], int(sys.argv[2]))\n\
        held = [socket.create_connection(addr) for _ in range(int(sys.argv[3]))]\n\
        print(len(held), flush=True)\n\
        sys.stdin.read()\n";

    fn hold(addr: SocketAddr, count: usize) -> Holder {
        use std::io::BufRead as _;
        use std::process::{Command, Stdio};
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", Self::SCRIPT])
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(count.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (Debian package python3)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            count.to_string(),
            "the helper could not connect"
        );
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether the daemon closed `stream` (end of file or reset): waits up to
/// `within` for it.
fn closed_by_daemon(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn twenty_thousand_silent_connections_leave_room_for_postfix() {
    /// Connections this process holds itself; helpers hold the rest.
    const OWN: usize = 3_000;
    testkit::open_files_at_least(30_000);
    let target = Target::start(None);
    let at_start = target.rss_kib();
    let limit = target.connection_limit();
    let mut flood = Vec::new();
    target.flood(&mut flood, OWN);
    let mut helpers = Vec::new();
    for total in [OWN, 20_000] {
        if total > OWN {
            // Two helpers, each well within a process's limit.
            let rest = total - OWN;
            helpers.push(Holder::hold(target.addr, rest / 2));
            helpers.push(Holder::hold(target.addr, rest - rest / 2));
        }
        target.wait_until_holding(total.min(limit));
        let took = target.signed();
        let rss = target.rss_kib();
        eprintln!(
            "{total} silent connections (daemon's limit {limit}): VmRSS {rss} KiB ({at_start} KiB \
             before the flood, {:.1} KiB per connection); a Postfix-like message was signed in \
             {took:?}",
            rss.saturating_sub(at_start) as f64 / total.min(limit) as f64
        );
        assert!(
            rss < RSS_BOUND_KIB,
            "VmRSS {rss} KiB with {total} idle connections, over {RSS_BOUND_KIB} KiB"
        );
    }
    let short = Duration::from_millis(10);
    if limit >= 20_001 {
        // The default limit is far above the flood: nobody was closed.
        for i in [0, OWN - 1] {
            assert!(
                !closed_by_daemon(&mut flood[i], short),
                "silent connection {i} was closed"
            );
        }
        assert!(
            !target.log().contains("connection limit"),
            "{}",
            target.log()
        );
    } else {
        // The open files limit held the daemon below the flood (a
        // container's hard limit): the oldest made room, and Postfix was
        // still served.
        assert!(
            closed_by_daemon(&mut flood[0], LIVELY),
            "the connection idle longest was not closed at the daemon's limit of {limit}"
        );
        assert!(
            target.log().contains("connection limit reached"),
            "{}",
            target.log()
        );
    }
    drop(helpers);
}

#[test]
fn at_the_limit_the_connection_idle_longest_makes_room_never_one_in_a_transaction() {
    const LIMIT: usize = 100;
    testkit::open_files_at_least(10_000);
    let target = Target::start(Some(LIMIT));
    // The oldest connection is in the middle of a message...
    let held = HeldTransaction::open(target.addr, LIVELY)
        .unwrap_or_else(|e| panic!("held transaction: {e}\n{}", target.log()));
    // ...then 3,000 silent ones, thirty times the limit.
    let mut flood = Vec::new();
    target.flood(&mut flood, 3_000);
    // A Postfix-like client still gets in and is signed.
    let took = target.signed();
    eprintln!("at the limit of {LIMIT}, a Postfix-like message was signed in {took:?}");
    // The silent connections idle longest were closed to make room; the
    // newest are still held.
    assert!(
        closed_by_daemon(&mut flood[0], LIVELY),
        "the connection idle longest was not closed"
    );
    assert!(!closed_by_daemon(
        flood.last_mut().unwrap(),
        Duration::from_millis(10)
    ));
    // The transaction, older than all of them, was left alone: its message
    // is signed.
    held.finish_signed()
        .unwrap_or_else(|e| panic!("the held transaction: {e}\n{}", target.log()));
    // Logged at most once every ten seconds, not once per connection.
    let log = target.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("connection limit reached"))
        .count();
    assert!((1..=5).contains(&lines), "logged {lines} times:\n{log}");
}
