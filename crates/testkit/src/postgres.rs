//! A private PostgreSQL server on loopback for one test: Debian's
//! `postgresql` binaries (under `/usr/lib/postgresql/VERSION/bin`, never
//! whatever `postgres` is first in PATH), a data directory in the test's
//! scratch directory, run as the `postgres` user (initdb refuses root),
//! stopped in `Drop`. No system service is started or touched.
//!
//! The superuser `postgres` logs in with [`Postgres::PASSWORD`] over TCP
//! (SCRAM), and without one over the server's own socket directory, which
//! is how [`Postgres::psql`] sets up tables.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{User, chown};
use tempfile::TempDir;

use crate::processes::{self, Signal};

/// A running private PostgreSQL.
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    user: User,
    child: Option<Child>,
    port: u16,
}

impl Postgres {
    /// The superuser's password over TCP (tests check it never shows).
    pub const PASSWORD: &'static str = "pg-Secret-4711";

    /// initdb, then start; returns once it accepts queries.
    pub fn start() -> Postgres {
        let bin = binaries();
        let user = User::from_name("postgres")
            .ok()
            .flatten()
            .expect("no `postgres` user: install Debian's postgresql (.ci/install-deps)");
        let dir = crate::scratch_dir("postgres");
        chown(dir.path(), Some(user.uid), Some(user.gid)).expect("chown the data directory");
        let pwfile = dir.path().join("pw");
        fs::write(&pwfile, Self::PASSWORD).unwrap();
        chown(&pwfile, Some(user.uid), Some(user.gid)).unwrap();
        let out = Command::new(bin.join("initdb"))
            .args(["-D", "data", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .current_dir(dir.path())
            .env("LC_ALL", "C")
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            dir,
            bin,
            user,
            child: None,
            port: 0,
        };
        crate::start_on_fresh_ports("postgres", || {
            pg.port = crate::free_local_addr().port();
            pg.try_run()
        });
        pg
    }

    /// Starts the server on its port and waits until it answers.
    fn try_run(&mut self) -> Result<(), crate::StartFailure> {
        let log = fs::File::create(self.dir.path().join("postgres.log")).unwrap();
        let _ = chown(
            &self.dir.path().join("postgres.log"),
            Some(self.user.uid),
            Some(self.user.gid),
        );
        let child = Command::new(self.bin.join("postgres"))
            .args(["-D", "data", "-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .uid(self.user.uid.as_raw())
            .gid(self.user.gid.as_raw())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(self.addr()).is_ok() && self.try_psql("SELECT 1").is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(crate::StartFailure::exited("postgres", status, &self.log()));
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Runs SQL as the superuser over the socket directory; panics on error.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql failed: {e}\n{sql}"))
    }

    fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", &self.dir.path().display().to_string()])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-c", sql])
            .env("LC_ALL", "C")
            .uid(self.user.uid.as_raw())
            .gid(self.user.gid.as_raw())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A `dsn:pgsql://` data set on this server's `postgres` database,
    /// logging in as the superuser with its password.
    pub fn dsn(&self, table: &str, key_column: &str, data_columns: &str) -> String {
        format!(
            "dsn:pgsql://postgres:{}@{}+127.0.0.1/postgres/table={table}?keycol={key_column}?datacol={data_columns}",
            Self::PASSWORD,
            self.port
        )
    }

    /// Fast shutdown (SIGINT); the data directory stays for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            processes::stop(child, Signal::SIGINT, Duration::from_secs(20));
        }
    }

    /// Starts the stopped server again, same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "postgres is running");
        self.try_run().unwrap_or_else(|failure| panic!("{failure}"));
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- postgres log ---\n{}", self.log());
        }
        self.stop();
    }
}

/// Debian's PostgreSQL binaries, newest version first.
fn binaries() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .expect("no /usr/lib/postgresql: install Debian's postgresql (.ci/install-deps)")
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("no /usr/lib/postgresql/*/bin/initdb")
}

impl crate::datasets::SqlTables for Postgres {
    fn run_sql(&self, sql: &str) {
        self.psql(sql);
    }

    fn table_dsn(&self, table: &str, key_column: &str, data_columns: &str) -> String {
        self.dsn(table, key_column, data_columns)
    }
}
