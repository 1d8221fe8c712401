//! A private MariaDB server on loopback: Debian's `mariadbd`, a data
//! directory made by `mariadb-install-db` in the test's scratch directory,
//! run as the `mysql` user, stopped in `Drop`. No system service is
//! started or touched.
//!
//! The user [`MariaDb::USER`] logs in over TCP with [`MariaDb::PASSWORD`]
//! (grant tables on: a wrong password is refused) and may only read;
//! `root` logs in over the server's own socket (unix_socket
//! authentication, the test runs as root), which is how [`MariaDb::sql`]
//! sets up tables. [`MariaDb::shared`] hands every test of a binary the
//! same server while any of them holds it; each test works in its own
//! database ([`MariaDb::database`]).

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use nix::unistd::{User, chown};
use tempfile::TempDir;

use crate::processes::{self, Signal};

/// A running private MariaDB.
pub struct MariaDb {
    dir: TempDir,
    user: User,
    child: Option<Child>,
    port: u16,
}

static SHARED: Mutex<Weak<MariaDb>> = Mutex::new(Weak::new());

impl MariaDb {
    /// The reading user's name and password (tests check the password
    /// never shows).
    pub const USER: &'static str = "dkim";
    pub const PASSWORD: &'static str = "my-Secret-4711";

    /// The server the running tests share, started if none is.
    pub fn shared() -> Arc<MariaDb> {
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = shared.upgrade() {
            return db;
        }
        let db = Arc::new(MariaDb::start());
        *shared = Arc::downgrade(&db);
        db
    }

    /// A server of its own (for a test that stops it); returns once it
    /// accepts queries.
    pub fn start() -> MariaDb {
        let user = User::from_name("mysql")
            .ok()
            .flatten()
            .expect("no `mysql` user: install Debian's mariadb-server (.ci/install-deps)");
        let dir = crate::scratch_dir("mariadb");
        chown(dir.path(), Some(user.uid), Some(user.gid)).expect("chown the data directory");
        let out = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg("--user=mysql")
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
            .current_dir(dir.path())
            .output()
            .expect("run mariadb-install-db (install Debian's mariadb-server)");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = MariaDb {
            dir,
            user,
            child: None,
            port: 0,
        };
        crate::start_on_fresh_ports("mariadbd", || {
            db.port = crate::free_local_addr().port();
            db.try_run()
        });
        db.sql(&format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}';",
            user = Self::USER,
            password = Self::PASSWORD
        ));
        db
    }

    /// Starts the server on its port and waits until it answers.
    fn try_run(&mut self) -> Result<(), crate::StartFailure> {
        let log = self.dir.path().join("mariadb.err");
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!(
                "--datadir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("mariadbd.pid").display()
            ))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--user=mysql",
            ])
            .args(["--innodb-buffer-pool-size=16M", "--skip-log-bin"])
            .args([
                "--max-allowed-packet=64M",
                "--innodb-flush-log-at-trx-commit=0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        let _ = chown(self.dir.path(), Some(self.user.uid), Some(self.user.gid));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(self.addr()).is_ok() && self.try_sql("SELECT 1").is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(crate::StartFailure::exited("mariadbd", status, &self.log()));
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mariadb.sock")
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("mariadb.err")).unwrap_or_default()
    }

    /// A fresh database `name` that [`Self::USER`] may read.
    pub fn database(&self, name: &str) -> String {
        self.sql(&format!(
            "CREATE DATABASE {name}; GRANT SELECT ON {name}.* TO '{}'@'%';",
            Self::USER
        ));
        name.to_string()
    }

    /// A fresh database `name`, as [`Self::database`] makes it, for
    /// [`crate::datasets::SqlTables`].
    pub fn tables_in(&self, name: &str) -> MariaDbTables<'_> {
        MariaDbTables {
            server: self,
            database: self.database(name),
        }
    }

    /// Runs SQL as root over the socket; panics on error.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("mariadb failed: {e}\n{sql}"))
    }

    fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["--user=root", "--batch", "--skip-column-names"])
            .args(["--max-allowed-packet=64M", "-e", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A `dsn:mysql://` data set on `database`, logging in as
    /// [`Self::USER`] with its password.
    pub fn dsn(&self, database: &str, table: &str, key_column: &str, data_columns: &str) -> String {
        format!(
            "dsn:mysql://{}:{}@{}+127.0.0.1/{database}/table={table}?keycol={key_column}?datacol={data_columns}",
            Self::USER,
            Self::PASSWORD,
            self.port
        )
    }

    /// Shutdown (SIGTERM); the data directory stays for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            processes::stop(child, Signal::SIGTERM, Duration::from_secs(30));
        }
    }

    /// Starts the stopped server again, same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "mariadbd is running");
        self.try_run().unwrap_or_else(|failure| panic!("{failure}"));
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- mariadb log ---\n{}", self.log());
        }
        self.stop();
    }
}

/// One database of a [`MariaDb`], where a data-set test keeps its tables.
pub struct MariaDbTables<'a> {
    server: &'a MariaDb,
    /// The database's name, for SQL of the test's own.
    pub database: String,
}

impl crate::datasets::SqlTables for MariaDbTables<'_> {
    fn run_sql(&self, sql: &str) {
        self.server.sql(&format!("USE {}; {sql}", self.database));
    }

    fn table_dsn(&self, table: &str, key_column: &str, data_columns: &str) -> String {
        self.server
            .dsn(&self.database, table, key_column, data_columns)
    }

    fn identifier(&self, name: &str) -> String {
        format!("`{name}`")
    }

    fn long_text(&self) -> &'static str {
        "longtext"
    }
}
