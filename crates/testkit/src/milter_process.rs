//! The milter under test, whatever it is: a socket Postfix connects to and
//! a process the test starts on it.
//!
//! The harness does not know which milter runs. The test hands
//! [`MilterProcess::start`] a closure that builds the command for a given
//! socket: OpenDKIM today (see [`super::opendkim`]), `dkim-sidecar run`
//! when it can sign. The process's stdout and stderr go to a log file that
//! is printed when a test fails.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::processes;

/// How long a milter may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the milter listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MilterSocket {
    /// A TCP port on 127.0.0.1.
    Inet(SocketAddr),
    /// A unix-domain socket path. Postfix's smtpd and cleanup connect as
    /// user `postfix`, so the socket and its directories must let them.
    Unix(PathBuf),
}

impl MilterSocket {
    /// A free TCP port on 127.0.0.1.
    pub fn free_inet() -> MilterSocket {
        MilterSocket::Inet(super::free_local_addr())
    }

    /// `dir/milter.sock`; `dir` must be traversable by `postfix`.
    pub fn unix_in(dir: &Path) -> MilterSocket {
        let path = dir.join("milter.sock");
        // sockaddr_un holds 108 bytes including the NUL.
        assert!(
            path.as_os_str().len() < 108,
            "unix socket path too long for sockaddr_un: {}",
            path.display()
        );
        MilterSocket::Unix(path)
    }

    /// The form Postfix's `smtpd_milters` takes: `inet:127.0.0.1:PORT`,
    /// `unix:/path`.
    pub fn postfix_spec(&self) -> String {
        match self {
            MilterSocket::Inet(addr) => format!("inet:{}:{}", addr.ip(), addr.port()),
            MilterSocket::Unix(path) => format!("unix:{}", path.display()),
        }
    }

    /// The form OpenDKIM's `Socket` takes: `inet:PORT@127.0.0.1`,
    /// `local:/path`.
    pub fn opendkim_spec(&self) -> String {
        match self {
            MilterSocket::Inet(addr) => format!("inet:{}@{}", addr.port(), addr.ip()),
            MilterSocket::Unix(path) => format!("local:{}", path.display()),
        }
    }

    /// Whether something accepts connections on it now.
    pub fn accepts_connections(&self) -> bool {
        match self {
            MilterSocket::Inet(addr) => TcpStream::connect(addr).is_ok(),
            MilterSocket::Unix(path) => UnixStream::connect(path).is_ok(),
        }
    }
}

/// A running milter process; killed in `Drop`.
pub struct MilterProcess {
    name: String,
    socket: MilterSocket,
    child: Child,
    log_path: PathBuf,
}

impl MilterProcess {
    /// Runs `launch(&socket)` with stdout and stderr appended to `log_path`
    /// and waits until the socket accepts connections. Panics with the log
    /// if the process exits or does not listen within 10 s.
    pub fn start(
        name: &str,
        socket: &MilterSocket,
        log_path: &Path,
        launch: impl FnOnce(&MilterSocket) -> Command,
    ) -> MilterProcess {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", log_path.display()));
        let mut command = launch(socket);
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({command:?}): {e}"));
        let mut milter = MilterProcess {
            name: name.to_string(),
            socket: socket.clone(),
            child,
            log_path: log_path.to_path_buf(),
        };
        milter.wait_until_listening();
        milter
    }

    pub fn socket(&self) -> &MilterSocket {
        &self.socket
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Graceful stop: SIGTERM, then SIGKILL if it has not exited after
    /// 5 s. Returns how the process ended. (`Drop` kills at once.)
    pub fn stop(mut self) -> std::process::ExitStatus {
        if !self.has_exited() {
            processes::signal(self.child.id() as i32, processes::Signal::SIGTERM);
            let exited = super::poll(Duration::from_secs(5), || self.has_exited().then_some(()));
            if exited.is_none() {
                let _ = self.child.kill();
            }
        }
        self.child.wait().expect("wait for the milter")
    }

    /// A crash: SIGKILL with no chance to finish anything or clean up (a
    /// Unix socket file stays behind). Returns how the process ended.
    pub fn crash(mut self) -> std::process::ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("wait for the milter")
    }

    fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn wait_until_listening(&mut self) {
        let listening = super::poll(START_TIMEOUT, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status}:\n{}", self.name, self.log());
            }
            self.socket.accepts_connections().then_some(())
        });
        if listening.is_none() {
            panic!(
                "{} does not listen on {} after {START_TIMEOUT:?}:\n{}",
                self.name,
                self.socket.postfix_spec(),
                self.log()
            );
        }
    }
}

impl Drop for MilterProcess {
    fn drop(&mut self) {
        // SIGKILL: teardown should not wait for a graceful shutdown
        // (libmilter takes seconds); tests of shutdown use `stop`.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if super::show_logs() {
            eprintln!(
                "----- {} log ({}) -----\n{}----- end of {} log -----",
                self.name,
                self.log_path.display(),
                self.log(),
                self.name
            );
        }
    }
}
