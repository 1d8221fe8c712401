//! dkim-sidecar as a daemon beside the tests: `dkim-sidecar run -x
//! CONF --socket SOCKET --allow-root` on a [`Sidecar`]'s opendkim.conf, the
//! binary under test ([`super::sidecar::binary`], so `DKIM_SIDECAR_BIN`
//! points these tests at an installed package too), with
//! `--metrics-listen` and `--watch-interval` when asked.
//!
//! JSON lines have no opendkim.conf option (only the native TOML file has
//! `json`), so for them the test binary runs itself instead:
//! [`Daemon::command`] starts the current test executable filtered to its
//! `daemon_child` test with [`CHILD_ENV`] set, and [`child_main`] (called
//! from that test) loads the same opendkim.conf with the real reader, as
//! `run -x` does, turns on JSON and hands it to `daemon::main`, the code
//! `run` runs. A test crate that uses that must contain:
//! ```ignore
//! #[test]
//! fn daemon_child() {
//!     support::daemon::child_main();
//! }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dkim_sidecar::config::{Config, Format, Origin, Overrides};
use dkim_sidecar::server::SocketSpec;

use super::milter::{MilterProcess, MilterSocket};
use super::sidecar::{Sidecar, binary};

/// Set (to the Sidecar directory) in the child process.
pub const CHILD_ENV: &str = "DKIM_SIDECAR_TEST_DAEMON";
const SOCKET_ENV: &str = "DKIM_SIDECAR_TEST_SOCKET";

/// How to run the daemon.
#[derive(Debug, Clone, Default)]
pub struct Daemon {
    /// `--metrics-listen`.
    pub metrics: Option<SocketAddr>,
    /// `--watch-interval` (whole seconds).
    pub watch: Option<Duration>,
    /// One JSON object per log line (runs the test binary's child).
    pub json_logs: bool,
}

impl Daemon {
    /// The daemon for `sidecar`, listening on `socket` (its `--socket`;
    /// with socket activation it must not be opened). NOTIFY_SOCKET and
    /// LISTEN_* from the test's own environment are not passed on.
    pub fn command(&self, sidecar: &Sidecar, socket: &str) -> Command {
        let mut command = if self.json_logs {
            let mut child = Command::new(std::env::current_exe().expect("the test executable"));
            child
                .args(["daemon_child", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, sidecar.dir())
                .env(SOCKET_ENV, socket);
            child
        } else {
            let mut run = Command::new(binary());
            run.arg("run").arg("-x").arg(sidecar.config()).args([
                "--socket",
                socket,
                "--allow-root",
            ]);
            if let Some(addr) = self.metrics {
                run.arg("--metrics-listen").arg(addr.to_string());
            }
            if let Some(every) = self.watch {
                run.arg("--watch-interval")
                    .arg(every.as_secs().max(1).to_string());
            }
            run
        };
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

/// The body of the `daemon_child` test: runs the daemon with JSON logs
/// when started by [`Daemon::command`], does nothing in a normal test run.
pub fn child_main() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let origin = Origin {
        path: PathBuf::from(dir).join("opendkim.conf"),
        format: Format::OpenDkim,
    };
    let socket: SocketSpec = std::env::var(SOCKET_ENV)
        .expect("socket spec")
        .parse()
        .expect("a valid socket spec");
    let overrides = Overrides {
        sockets: Some(vec![socket]),
    };
    // What `run -x CONF --socket SOCKET --allow-root` loads, in JSON.
    let load = move || {
        Config::load_with(&origin, &overrides)
            .map(|mut config| {
                config.service.allow_root = true;
                config.logging.json = true;
                config
            })
            .map_err(|error| {
                error
                    .problems()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
    };
    let config = load().unwrap_or_else(|e| {
        eprintln!("dkim-sidecar test daemon: {e}");
        std::process::exit(1)
    });
    let result = dkim_sidecar::daemon::main(config, Box::new(load));
    std::process::exit(match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dkim-sidecar test daemon: {e}");
            1
        }
    });
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
