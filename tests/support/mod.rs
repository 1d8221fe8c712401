//! End-to-end test harness: a private, real Postfix on loopback ports, the
//! milter under test beside it, an SMTP sink that records what Postfix
//! relays, and two independent DKIM verifiers.
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
//! parallel. See `tests/support/README.md` for packages and timings.
//!
//! Each `tests/*.rs` crate uses a different part of the harness, so unused
//! items are expected there.
#![allow(dead_code)]

// The helpers the tests without Postfix use; the scratch directories'
// location is decided there.
#[path = "../common/mod.rs"]
pub mod common;
pub mod conversation;
pub mod daemon;
pub mod dns;
pub mod keys;
pub mod milter;
pub mod mta;
pub mod opendkim;
pub mod postfix;
pub mod processes;
pub mod sasl;
pub mod sidecar;
pub mod signers;
pub mod sink;
pub mod submission;
pub mod verify;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

// The names a test needs most, in one place; a test crate uses some of them.
#[allow(unused_imports)]
pub use keys::{DnsRecords, TestKey, TestKeys};
#[allow(unused_imports)]
pub use milter::{MilterProcess, MilterSocket};
#[allow(unused_imports)]
pub use opendkim::OpenDkimSigner;
#[allow(unused_imports)]
pub use postfix::{Postfix, PostfixBuilder};
#[allow(unused_imports)]
pub use sidecar::Sidecar;
#[allow(unused_imports)]
pub use sink::{ReceivedMessage, SmtpSink};
#[allow(unused_imports)]
pub use submission::{Reply, Submission};
#[allow(unused_imports)]
pub use verify::{Expected, Outcome, Verdict, Verifier};

/// A loopback address with a port no listener uses right now, asked from
/// the OS. The port is never handed out twice by this process, so tests
/// running in parallel threads do not race each other for it.
pub fn free_local_addr() -> SocketAddr {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let addr = probe.local_addr().expect("local_addr of a bound socket");
        if handed_out.insert(addr.port()) {
            return addr;
        }
    }
}

/// A fresh temporary directory, mode 0755, below Cargo's `target/tmp` or,
/// when that is below a directory others may write (a checkout under
/// /tmp), below `/var/lib/dkim-sidecar-tests` ([`common::scratch_base`]).
///
/// Not below /tmp: OpenDKIM refuses private keys that have a
/// world-writable directory (even a sticky one) on their path. Every
/// directory on the path must be searchable by others, because Postfix's
/// daemons run as `postfix` and open the milter socket, the SASL files and
/// the log by absolute path.
pub fn scratch_dir(purpose: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("dkim-sidecar-{purpose}-"))
        .tempdir_in(common::scratch_base())
        .expect("create a temporary directory");
    set_mode(dir.path(), 0o755);
    dir
}

/// `chmod` that panics with the path on failure.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Panics with the Debian package to install when `program` is missing,
/// instead of a bare "No such file or directory" later.
pub fn require_program(program: &str, package: &str) {
    assert!(
        Path::new(program).exists(),
        "{program} is missing: install the Debian package {package} \
         (tests/support/README.md lists everything the harness needs)"
    );
}

/// Panics unless the test runs as root, which Postfix's start-up needs.
pub fn require_root() {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
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
