//! Finding and ending the processes a test left running.
//!
//! Postfix daemons do not carry their configuration directory on the
//! command line (`master -w`, `smtpd -n ... -t inet`), so `pgrep -f DIR`
//! misses them; they do carry it in the environment (`MAIL_CONFIG=DIR`,
//! exported by master). A process belongs to a test directory when its
//! command line or its environment mentions that directory.

pub use nix::sys::signal::Signal;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// A live process that mentions a test directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub pid: i32,
    pub command: String,
}

/// Live processes (zombies excluded: they have no command line or
/// environment left) whose command line or environment mentions a path
/// inside `dir`.
pub fn mentioning(dir: &Path) -> Vec<Leftover> {
    // "DIR/" so that /tmp/x-abc does not claim the processes of /tmp/x-abcd.
    let mut needle = dir.as_os_str().as_encoded_bytes().to_vec();
    needle.push(b'/');
    let own_pid = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != own_pid)
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let mentions = contains(&cmdline, &needle) || contains(&environ, &needle);
            mentions.then(|| Leftover {
                pid,
                command: String::from_utf8_lossy(&cmdline).replace('\0', " "),
            })
        })
        .collect()
}

/// Sends SIGKILL to every process that mentions `dir` until none is left
/// (a dying master may still fork). Returns what had to be killed.
pub fn kill_all_mentioning(dir: &Path) -> Vec<Leftover> {
    let mut killed = Vec::new();
    super::poll(Duration::from_secs(5), || {
        let alive = mentioning(dir);
        if alive.is_empty() {
            return Some(());
        }
        for process in alive {
            signal(process.pid, Signal::SIGKILL);
            if !killed.contains(&process) {
                killed.push(process);
            }
        }
        None
    });
    killed
}

/// Asks `child` to end with `signal` (a server's clean shutdown), waits
/// for it up to `grace`, and kills it if it is still there.
pub fn stop(mut child: Child, signal: Signal, grace: Duration) {
    self::signal(child.id() as i32, signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: i32, signal: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}
