//! dkim-sidecar's real daemon runtime (`daemon::main`: sockets or systemd's
//! sockets, READY=1, signals, reload, metrics, logging) run as a separate
//! process, on a configuration built from a [`Sidecar`]'s files.
//!
//! Some settings these tests need (metrics on a chosen port, file
//! watching, JSON lines) have no opendkim.conf option, so the test binary
//! runs itself again instead of `dkim-sidecar run`: [`Daemon::command`]
//! starts the current test executable filtered to its `daemon_child` test
//! with [`CHILD_ENV`] set, and [`child_main`] (called from that test) loads
//! the Sidecar directory's opendkim.conf with the real reader, exactly as
//! `run -x CONF --socket SOCKET --allow-root` does, sets those few fields,
//! and hands it to `daemon::main`. The reload closure loads the same file
//! again, so edits to it and its tables are what a reload picks up.
//! Everything after setting those fields is the code the binary runs.
//!
//! A test crate that uses this must contain:
//! ```ignore
//! #[test]
//! fn daemon_child() {
//!     support::daemon::child_main();
//! }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dkim_sidecar::config::{Config, Format, Logging, Origin, Overrides};
use dkim_sidecar::server::SocketSpec;

use super::milter::{MilterProcess, MilterSocket};
use super::sidecar::Sidecar;

/// Set (to the Sidecar directory) in the child process.
pub const CHILD_ENV: &str = "DKIM_SIDECAR_TEST_DAEMON";
const SOCKET_ENV: &str = "DKIM_SIDECAR_TEST_SOCKET";
const METRICS_ENV: &str = "DKIM_SIDECAR_TEST_METRICS";
const WATCH_ENV: &str = "DKIM_SIDECAR_TEST_WATCH_MS";
const SOCKET_MODE_ENV: &str = "DKIM_SIDECAR_TEST_SOCKET_MODE";
const LOGGING_ENV: &str = "DKIM_SIDECAR_TEST_LOGGING";

/// How to run the daemon child.
#[derive(Debug, Clone, Default)]
pub struct Daemon {
    /// Serve metrics here.
    pub metrics: Option<SocketAddr>,
    /// Poll the files this often and reload on change.
    pub watch: Option<Duration>,
    /// Mode for the Unix sockets the daemon creates itself.
    pub socket_mode: Option<u32>,
    /// Log settings other than the defaults.
    pub logging: Option<Logging>,
}

impl Daemon {
    /// The child process for `sidecar`, listening on `socket` (its
    /// configured Socket; with socket activation it must not be opened).
    pub fn command(&self, sidecar: &Sidecar, socket: &str) -> Command {
        let mut command = Command::new(std::env::current_exe().expect("the test executable"));
        command
            .args(["daemon_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, sidecar.dir())
            .env(SOCKET_ENV, socket)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES");
        if let Some(addr) = self.metrics {
            command.env(METRICS_ENV, addr.to_string());
        }
        if let Some(every) = self.watch {
            command.env(WATCH_ENV, every.as_millis().to_string());
        }
        if let Some(mode) = self.socket_mode {
            command.env(SOCKET_MODE_ENV, format!("{mode:o}"));
        }
        if let Some(l) = &self.logging {
            command.env(
                LOGGING_ENV,
                format!(
                    "{} {} {} {} {}",
                    l.syslog, l.syslog_facility, l.log_success, l.log_why, l.json
                ),
            );
        }
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

/// The body of the `daemon_child` test: runs the daemon when started by
/// [`Daemon::command`], does nothing in a normal test run.
pub fn child_main() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let socket: SocketSpec = std::env::var(SOCKET_ENV)
        .expect("socket spec")
        .parse()
        .expect("a valid socket spec");
    let metrics = std::env::var(METRICS_ENV)
        .ok()
        .map(|a| a.parse().expect("metrics address"));
    let watch = std::env::var(WATCH_ENV)
        .ok()
        .map(|ms| Duration::from_millis(ms.parse().expect("milliseconds")));
    let mode = std::env::var(SOCKET_MODE_ENV)
        .ok()
        .map(|m| u32::from_str_radix(&m, 8).expect("octal mode"));
    let logging = std::env::var(LOGGING_ENV).ok().map(|l| {
        let parts: Vec<&str> = l.split(' ').collect();
        let flag = |i: usize| parts[i] == "true";
        Logging {
            syslog: flag(0),
            syslog_facility: parts[1].to_string(),
            log_success: flag(2),
            log_why: flag(3),
            json: flag(4),
        }
    });
    let settings = Arc::new(ChildSettings {
        dir,
        socket,
        metrics,
        watch,
        mode,
        logging,
    });
    let config = load(&settings).unwrap_or_else(|e| {
        eprintln!("dkim-sidecar test daemon: {e}");
        std::process::exit(1)
    });
    let reload_settings = Arc::clone(&settings);
    let result = dkim_sidecar::daemon::main(config, Box::new(move || load(&reload_settings)));
    std::process::exit(match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dkim-sidecar test daemon: {e}");
            1
        }
    });
}

struct ChildSettings {
    dir: PathBuf,
    socket: SocketSpec,
    metrics: Option<SocketAddr>,
    watch: Option<Duration>,
    mode: Option<u32>,
    logging: Option<Logging>,
}

/// What `run -x DIR/opendkim.conf --socket SOCKET --allow-root` loads,
/// through the real opendkim.conf reader, plus the settings no file can
/// name yet (metrics, file watching, JSON logs).
fn load(settings: &ChildSettings) -> Result<Config, String> {
    let origin = Origin {
        path: settings.dir.join("opendkim.conf"),
        format: Format::OpenDkim,
    };
    let overrides = Overrides {
        sockets: Some(vec![settings.socket.clone()]),
    };
    let mut config = Config::load_with(&origin, &overrides).map_err(|error| {
        error
            .problems()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    config.service.allow_root = true;
    config.service.metrics_listen = settings.metrics;
    config.service.watch_interval = settings.watch;
    config.service.socket_access.mode = settings.mode;
    if let Some(logging) = &settings.logging {
        config.logging = logging.clone();
    }
    Ok(config)
}

/// Default log settings changed by `change`.
pub fn logging(change: impl FnOnce(&mut Logging)) -> Logging {
    let mut logging = Logging::default();
    change(&mut logging);
    logging
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
