//! dkim-sidecar as a daemon beside the tests: `dkim-sidecar run -x
//! CONF --socket SOCKET --allow-root` on a [`Sidecar`]'s opendkim.conf, or
//! `run -c` on a native TOML file, with the binary under test
//! ([`crate::binary`], so `DKIM_SIDECAR_BIN` points these tests at
//! an installed package too), and `--metrics-listen` and
//! `--watch-interval` when asked.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::milter_process::{MilterProcess, MilterSocket};
use super::sidecar::Sidecar;
use crate::binary;

/// How to run the daemon.
#[derive(Debug, Clone, Default)]
pub struct Daemon {
    /// `--metrics-listen`.
    pub metrics: Option<SocketAddr>,
    /// `--watch-interval` (whole seconds).
    pub watch: Option<Duration>,
    /// Run on this native TOML file (`run -c`) instead of the Sidecar's
    /// opendkim.conf.
    pub toml: Option<PathBuf>,
}

impl Daemon {
    /// The daemon for `sidecar`, listening on `socket` (its `--socket`;
    /// with socket activation it must not be opened). NOTIFY_SOCKET and
    /// LISTEN_* from the test's own environment are not passed on.
    pub fn command(&self, sidecar: &Sidecar, socket: &str) -> Command {
        let mut command = Command::new(binary());
        command.arg("run");
        match &self.toml {
            Some(toml) => command.arg("-c").arg(toml),
            None => command.arg("-x").arg(sidecar.config()),
        };
        command.args(["--socket", socket, "--allow-root"]);
        if let Some(addr) = self.metrics {
            command.arg("--metrics-listen").arg(addr.to_string());
        }
        if let Some(every) = self.watch {
            command
                .arg("--watch-interval")
                .arg(every.as_secs().max(1).to_string());
        }
        command
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES");
        command
    }

    /// Starts the daemon on `socket`; output goes to `daemon.log` in the
    /// Sidecar directory.
    pub fn start(&self, sidecar: &Sidecar, socket: &MilterSocket) -> MilterProcess {
        MilterProcess::start(
            "dkim-sidecar daemon",
            socket,
            &sidecar.dir().join("daemon.log"),
            |socket| self.command(sidecar, &socket.opendkim_spec()),
        )
    }
}

/// Replaces `dir/name` atomically (write beside, rename), as an
/// administrator's deploy tool would.
pub fn replace_file(dir: &Path, name: &str, contents: &str) {
    let tmp = dir.join(format!(".{name}.new"));
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, dir.join(name)).unwrap_or_else(|e| panic!("rename to {name}: {e}"));
}

/// `GET /metrics` from `addr`: the body.
pub fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of the sample `series` (name and labels exactly as exposed),
/// or 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a number"))
        })
        .unwrap_or(0.0)
}

/// `dkim-sidecar run -x CONF` (an opendkim.conf written by the test) on a
/// free loopback port; its output goes to `log`.
pub fn run_opendkim_conf(conf: &Path, log: &Path) -> MilterProcess {
    MilterProcess::start(
        "dkim-sidecar daemon",
        &MilterSocket::free_inet(),
        log,
        |socket| {
            let mut command = Command::new(binary());
            command
                .arg("run")
                .arg("-x")
                .arg(conf)
                .arg("--socket")
                .arg(socket.postfix_spec())
                .arg("--allow-root");
            command
        },
    )
}

/// The loopback address a [`MilterProcess`] on an inet socket listens on.
pub fn inet_addr(milter: &MilterProcess) -> SocketAddr {
    match milter.socket() {
        MilterSocket::Inet(addr) => *addr,
        MilterSocket::Unix(path) => panic!("{} is a Unix socket", path.display()),
    }
}
