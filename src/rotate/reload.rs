//! Making the running daemon read the switched tables: SIGHUP to the
//! process its PidFile names, or systemd's reload (`try-reload-or-restart`,
//! which leaves a stopped service stopped; the unit reloads, never
//! restarts).
//!
//! When the configuration serves metrics, the daemon's own reload
//! counters say whether the reload worked, and a reload that failed is
//! reported as such (the daemon then still signs with the old key). A PID
//! file that names a process that is not dkim-sidecar is refused rather
//! than signalled. This module never signals anything but that one
//! process and never restarts the daemon.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long to wait for the daemon's metrics to show the reload.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// How to reach the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadMethod {
    /// SIGHUP to the PID in this file (OpenDKIM's PidFile).
    PidFile(PathBuf),
    /// `systemctl try-reload-or-restart UNIT`: a reload when the daemon
    /// runs, nothing when it does not (it reads the tables when it starts).
    Systemd(String),
    /// The administrator reloads (or `run --watch-interval` notices).
    None,
}

/// What happened when the daemon was asked to reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// Its metrics show a successful reload after the request.
    Confirmed(String),
    /// Asked; whether it worked is in its log.
    Requested(String),
    /// Not asked (`--reload none`).
    NotAsked,
}

/// Why the daemon could not be asked, or refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{}: cannot read the daemon's PID file: {source}; is dkim-sidecar running?", path.display())]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: names pid {pid}, which is {what}; start dkim-sidecar (or fix PidFile), or pass \
         --reload none and reload it yourself",
        path.display()
    )]
    NotOurs {
        path: PathBuf,
        pid: i32,
        what: String,
    },
    #[error("cannot signal pid {pid}: {detail}")]
    Signal { pid: i32, detail: String },
    #[error("`systemctl try-reload-or-restart {unit}` failed: {detail}")]
    Systemctl { unit: String, detail: String },
    #[error(
        "the daemon says its reload failed (metrics at {addr}): it keeps signing with the \
         previous configuration; its log says why"
    )]
    Failed { addr: SocketAddr },
}

/// Asks the daemon to reload; with `metrics`, waits until its counters
/// show the outcome.
pub fn reload(method: &ReloadMethod, metrics: Option<SocketAddr>) -> Result<Reloaded, ReloadError> {
    let before = metrics.and_then(|addr| reload_counts(addr).ok());
    let asked = match method {
        ReloadMethod::None => return Ok(Reloaded::NotAsked),
        ReloadMethod::PidFile(path) => {
            let pid = daemon_pid(path)?;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGHUP,
            )
            .map_err(|e| ReloadError::Signal {
                pid,
                detail: e.to_string(),
            })?;
            format!(
                "sent SIGHUP to dkim-sidecar (pid {pid}, from {})",
                path.display()
            )
        }
        ReloadMethod::Systemd(unit) => {
            let out = std::process::Command::new("systemctl")
                .args(["try-reload-or-restart", unit])
                .output()
                .map_err(|e| ReloadError::Systemctl {
                    unit: unit.clone(),
                    detail: e.to_string(),
                })?;
            if !out.status.success() {
                return Err(ReloadError::Systemctl {
                    unit: unit.clone(),
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            format!("ran `systemctl try-reload-or-restart {unit}`")
        }
    };
    let (Some(addr), Some((ok_before, failed_before))) = (metrics, before) else {
        return Ok(Reloaded::Requested(asked));
    };
    let deadline = Instant::now() + CONFIRM_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok((ok, failed)) = reload_counts(addr) {
            if failed > failed_before {
                return Err(ReloadError::Failed { addr });
            }
            if ok > ok_before {
                return Ok(Reloaded::Confirmed(format!(
                    "{asked}; its metrics confirm the reload"
                )));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Reloaded::Requested(format!(
        "{asked}; its metrics did not show the reload within {} s: check its log",
        CONFIRM_TIMEOUT.as_secs()
    )))
}

/// The PID in `path`, if it is a live dkim-sidecar process.
fn daemon_pid(path: &Path) -> Result<i32, ReloadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReloadError::PidFile {
        path: path.to_path_buf(),
        source,
    })?;
    let not_ours = |pid: i32, what: &str| ReloadError::NotOurs {
        path: path.to_path_buf(),
        pid,
        what: what.to_string(),
    };
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| not_ours(0, "not a process id"))?;
    if pid <= 1 {
        return Err(not_ours(pid, "not a daemon's process id"));
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map_err(|_| not_ours(pid, "not running (a stale PID file)"))?;
    let program = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let name = Path::new(std::ffi::OsStr::from_bytes(program))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.starts_with("dkim-sidecar") {
        return Err(not_ours(
            pid,
            &format!("`{name}`, not dkim-sidecar (a stale PID file?)"),
        ));
    }
    Ok(pid)
}

/// The daemon's reload counters (ok, failed) from its metrics endpoint.
fn reload_counts(addr: SocketAddr) -> std::io::Result<(f64, f64)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let sample = |series: &str| {
        response
            .lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse::<f64>().ok())?
            })
            .unwrap_or(0.0)
    };
    Ok((
        sample("dkim_sidecar_reloads_total{result=\"ok\"}"),
        sample("dkim_sidecar_reloads_total{result=\"failed\"}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_naming_another_program_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        // Our own process is the test binary, not dkim-sidecar.
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        let err = daemon_pid(&path).unwrap_err().to_string();
        assert!(
            err.contains("not dkim-sidecar (a stale PID file?)"),
            "{err}"
        );
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(daemon_pid(&path).is_err());
        let err = daemon_pid(&dir.path().join("missing.pid"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is dkim-sidecar running?"), "{err}");
    }
}
