//! dkimpy_sidecar's test kit: everything the integration tests, the fuzz
//! harness and the benchmarks share, in one place. A dev-dependency only;
//! nothing here is part of the product.
//!
//! - Real peers on loopback: a private Postfix ([`postfix`]), an SMTP sink
//!   that records what Postfix relays ([`sink`]), an SMTP client
//!   ([`submission`]), OpenDKIM as a signer ([`opendkim`]), dnsmasq
//!   ([`dnsmasq`]), a zone's BIND 9 primary taking dynamic updates and a
//!   Knot secondary ([`bind`], [`knot`]), Knot serving DNSSEC-signed and
//!   unsigned zones for verification ([`dns`]), and the milter under test as a
//!   process ([`milter_process`], [`sidecar`], [`daemon`]) with mail under
//!   load through it ([`load`]), and one message put to any milter as
//!   Postfix would ([`mta`]); Postfix's `smtp-source` and `smtp-sink` around
//!   a tuned Postfix for the end-to-end benchmark ([`smtp_bench`]).
//! - The harness of the data-set tests (PostgreSQL, MariaDB, LDAP): a
//!   daemon on an opendkim.conf or TOML, a message from a sender, its
//!   answer read, `check-config`, a fleet, a reload ([`datasets`]).
//! - Independent verifiers: dkimpy and OpenDKIM ([`verify`]); OpenSSL's
//!   view of a key ([`openssl`]); signers for verification tests: ours,
//!   dkimpy ([`signers`]).
//! - Data-set servers on loopback: PostgreSQL ([`postgres`]), MariaDB
//!   ([`mariadb`]), slapd ([`slapd`]), and an SQLite file ([`sqlite`]).
//! - Fixtures: the example keys ([`keys`]), messages ([`message`]), the
//!   example signing policy ([`policy`]), a milter conversation played as
//!   Postfix ([`conversation`]).
//! - One thread-safe port picker ([`free_local_addr`]) and scratch
//!   directories that OpenDKIM and Postfix accept ([`scratch_dir`]).
//!
//! ```text
//! Submission / sendmail ──> Postfix ──milter──> milter under test
//!                              │
//!                              └──relay──> SmtpSink ──> DkimPy + OpenDkimVerifier
//! ```
//!
//! Every piece owns its temporary directory and its processes and cleans
//! them up in `Drop`, also when a test panics (then it prints its log).
//! Pieces never share ports, directories or log names, so tests run in
//! parallel. See `crates/testkit/README.md` for packages and timings.
#![forbid(unsafe_code)]

pub mod bind;
pub mod command;
pub mod conversation;
pub mod daemon;
pub mod datasets;
pub mod dns;
pub mod dnsmasq;
pub mod keys;
pub mod knot;
pub mod load;
pub mod mariadb;
pub mod measure;
pub mod message;
pub mod milter_process;
pub mod mta;
pub mod opendkim;
pub mod openssl;
pub mod policy;
pub mod postfix;
pub mod postgres;
pub mod processes;
pub mod sasl;
pub mod sidecar;
pub mod signers;
pub mod sink;
pub mod slapd;
pub mod smtp_bench;
pub mod sqlite;
pub mod submission;
pub mod verify;

use std::collections::HashSet;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use keys::{DnsRecords, TestKey, TestKeys};
pub use milter_process::{MilterProcess, MilterSocket};
pub use opendkim::OpenDkimSigner;
pub use postfix::{Postfix, PostfixBuilder};
pub use sidecar::Sidecar;
pub use sink::{ReceivedMessage, SmtpSink};
pub use submission::{Reply, Submission};
pub use verify::{Expected, Outcome, Verdict, Verifier};

/// The repository's root directory (where `keys-example/` and `conf/` are).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Cargo's target directory for the running test binary: tests run from
/// `TARGET/PROFILE/deps/`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// The dkim-sidecar binary under test: `DKIM_SIDECAR_BIN` when set
/// (`.ci/package` points it at the installed `/usr/bin/dkim-sidecar`),
/// otherwise the one Cargo built beside the test binary.
pub fn binary() -> PathBuf {
    match std::env::var_os("DKIM_SIDECAR_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => {
            let exe = std::env::current_exe().expect("the test binary's path");
            let profile = exe
                .parent()
                .and_then(Path::parent)
                .expect("tests run from TARGET/PROFILE/deps");
            profile.join("dkim-sidecar")
        }
    }
}

/// Where tests keep files that OpenDKIM and Postfix must accept: Cargo's
/// `target/tmp`, unless a directory above it is writable by others (a
/// checkout under /tmp, say: OpenDKIM refuses keys below such a directory,
/// sticky bit or not) or closed to others (Postfix's daemons run as
/// `postfix` and open files by absolute path). Then
/// `/var/lib/dkim-sidecar-tests`, which the tests (root) create.
pub fn scratch_base() -> PathBuf {
    let target = target_dir().join("tmp");
    let target = target.as_path();
    fs::create_dir_all(target).expect("create target/tmp");
    if ancestors_are_safe(target) {
        return target.to_path_buf();
    }
    let fallback = Path::new("/var/lib/dkim-sidecar-tests");
    fs::create_dir_all(fallback).unwrap_or_else(|e| panic!("create {}: {e}", fallback.display()));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(fallback, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", fallback.display()));
    assert!(
        ancestors_are_safe(fallback),
        "neither {} nor {} has only directories above it that others may \
         search (o+x) and not write: set CARGO_TARGET_DIR to a directory that \
         qualifies",
        target.display(),
        fallback.display()
    );
    fallback.to_path_buf()
}

/// Whether `dir` and every directory above it are searchable by others and
/// not writable by them.
fn ancestors_are_safe(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors().all(|ancestor| {
        fs::metadata(ancestor)
            .map(|m| {
                let mode = m.permissions().mode();
                mode & 0o001 != 0 && mode & 0o002 == 0
            })
            .unwrap_or(false)
    })
}

/// A loopback address whose port no TCP or UDP socket uses right now,
/// asked from the OS. The port is never handed out twice by this process,
/// so tests running in parallel threads do not race each other for it.
/// The one port picker: servers that listen on TCP and UDP (DNS) use it too.
pub fn free_local_addr() -> SocketAddr {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp 127.0.0.1:0");
        let addr = probe.local_addr().expect("local_addr of a bound socket");
        if TcpListener::bind(addr).is_ok() && handed_out.insert(addr.port()) {
            return addr;
        }
    }
}

/// Why a server given ports from [`free_local_addr`] is not up.
#[derive(Debug)]
pub enum StartFailure {
    /// Another socket took a picked port between the pick and the server's
    /// bind: worth another attempt on new ports.
    PortTaken(String),
    /// Anything else, said in words.
    Failed(String),
}

impl StartFailure {
    /// A server that exited while starting, with its log: [`PortTaken`]
    /// when the log says an address was in use.
    ///
    /// [`PortTaken`]: StartFailure::PortTaken
    pub fn exited(server: &str, status: std::process::ExitStatus, log: &str) -> StartFailure {
        let why = format!("{server} exited ({status}):\n{log}");
        if log.to_ascii_lowercase().contains("address already in use") {
            StartFailure::PortTaken(why)
        } else {
            StartFailure::Failed(why)
        }
    }
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFailure::PortTaken(why) | StartFailure::Failed(why) => f.write_str(why),
        }
    }
}

/// How often [`start_on_fresh_ports`] tries.
const START_ATTEMPTS: usize = 3;

/// Runs `start`, which picks its ports with [`free_local_addr`] and starts a
/// server on them, until the server is up; again, on new ports, when one
/// was taken before the server bound it. The probe cannot hold a port for
/// another process, and in a test binary other threads' DNS clients bind
/// random UDP ports all the time. Panics after the last attempt, or at once
/// on any other failure.
pub fn start_on_fresh_ports<S>(
    server: &str,
    mut start: impl FnMut() -> Result<S, StartFailure>,
) -> S {
    for attempt in 1..=START_ATTEMPTS {
        match start() {
            Ok(started) => return started,
            Err(StartFailure::PortTaken(why)) if attempt < START_ATTEMPTS => {
                eprintln!("{server}: {why}; retrying on new ports");
            }
            Err(StartFailure::PortTaken(why) | StartFailure::Failed(why)) => {
                panic!("{server} did not start: {why}")
            }
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// A fresh temporary directory, mode 0755, below Cargo's `target/tmp` or,
/// when that is below a directory others may write (a checkout under
/// /tmp), below `/var/lib/dkim-sidecar-tests` ([`scratch_base`]).
///
/// Not below /tmp: OpenDKIM refuses private keys that have a
/// world-writable directory (even a sticky one) on their path. Every
/// directory on the path must be searchable by others, because Postfix's
/// daemons run as `postfix` and open the milter socket, the SASL files and
/// the log by absolute path.
pub fn scratch_dir(purpose: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("dkim-sidecar-{purpose}-"))
        .tempdir_in(scratch_base())
        .expect("create a temporary directory");
    set_mode(dir.path(), 0o755);
    dir
}

/// `chmod` that panics with the path on failure.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Panics with the Debian package to install when `program` is missing,
/// instead of a bare "No such file or directory" later.
pub fn require_program(program: &str, package: &str) {
    assert!(
        Path::new(program).exists(),
        "{program} is missing: install the Debian package {package} \
         (crates/testkit/README.md lists everything the harness needs)"
    );
}

/// Panics unless the test runs as root, which Postfix's start-up needs.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the Postfix harness must run as root (it starts Postfix)"
    );
}

/// Whether a piece should print its log as it goes away: when the test is
/// failing, or always with `HARNESS_LOGS=1` in the environment (run with
/// `--nocapture` to see them).
pub fn show_logs() -> bool {
    std::thread::panicking() || std::env::var_os("HARNESS_LOGS").is_some_and(|v| v == "1")
}

/// Polls `done` every few milliseconds until it returns `Some` or
/// `timeout` passes. Used for conditions nobody can notify us of (a file
/// appearing, a process going away); never as a fixed delay.
pub fn poll<T>(timeout: Duration, mut done: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(value) = done() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Raises this process's open files limit (soft, and hard as far as root
/// may) towards `wanted`, so that it and the daemons it starts can hold
/// that many sockets; returns the soft limit in force. Without
/// CAP_SYS_RESOURCE (a container) the hard limit stays where it is.
pub fn open_files_at_least(wanted: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft >= wanted {
        return soft;
    }
    if hard < wanted && setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_ok() {
        return wanted;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

#[cfg(test)]
mod tests {
    use super::{StartFailure, start_on_fresh_ports};

    #[test]
    fn a_server_that_exits_saying_its_address_is_in_use_lost_its_port() {
        use std::os::unix::process::ExitStatusExt as _;
        let status = std::process::ExitStatus::from_raw(1 << 8);
        let knot = "error: cannot bind address 127.0.0.1@47395 UDP (address already in use)";
        assert!(matches!(
            StartFailure::exited("knotd", status, knot),
            StartFailure::PortTaken(_)
        ));
        let failure = StartFailure::exited("knotd", status, "error: invalid configuration");
        assert!(matches!(failure, StartFailure::Failed(_)));
        assert!(failure.to_string().contains("invalid configuration"));
    }

    #[test]
    fn a_start_that_lost_its_port_is_tried_again() {
        let mut attempts = 0;
        let started = start_on_fresh_ports("server", || {
            attempts += 1;
            match attempts {
                1 => Err(StartFailure::PortTaken("address already in use".into())),
                n => Ok(n),
            }
        });
        assert_eq!(started, 2);
    }

    #[test]
    #[should_panic(expected = "server did not start: no such option")]
    fn any_other_failure_is_not_tried_again() {
        let mut attempts = 0;
        start_on_fresh_ports("server", || -> Result<(), _> {
            attempts += 1;
            assert_eq!(attempts, 1, "tried again");
            Err(StartFailure::Failed("no such option".into()))
        });
    }

    #[test]
    #[should_panic(expected = "server did not start: address already in use")]
    fn a_port_taken_every_time_fails_after_the_last_attempt() {
        start_on_fresh_ports("server", || -> Result<(), _> {
            Err(StartFailure::PortTaken("address already in use".into()))
        });
    }
}
