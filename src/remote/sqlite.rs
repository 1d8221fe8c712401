//! `dsn:sqlite3://` data sets: an SQLite file read through rusqlite.
//!
//! rusqlite is the maintained SQLite binding for Rust. It is linked
//! against the system's libsqlite3 (Debian's `libsqlite3-dev` at build
//! time, `libsqlite3-0` at run time), not a bundled copy: the library
//! then gets the distribution's security updates, and the build compiles
//! no C.
//!
//! The file is named as OpenDBX names it: its sqlite3 backend takes the
//! DSN's host as a directory and appends the database name to it with no
//! separator (`sqlite3_odbx_init` / `sqlite3_odbx_bind`), and OpenDKIM
//! opens it after changing to its BaseDirectory. So
//! `dsn:sqlite3://data/keys.db/...` is the file `datakeys.db` in the
//! BaseDirectory (or the working directory). Our DSN parser also decodes
//! `=XX` escapes in the host, so `dsn:sqlite3://=2Fvar=2Flib=2Fdkim=2F/keys.db/...`
//! names `/var/lib/dkim/keys.db` (OpenDKIM would take the escapes
//! literally). The caller passes the resolved path.
//!
//! SQLite calls block, so each lookup runs on tokio's blocking pool
//! (`spawn_blocking`), never on the milter's tasks. At most
//! `max_connections` lookups run at once; the others wait up to the connect
//! timeout for a turn. A lookup that overruns the query timeout is
//! interrupted (`sqlite3_interrupt`) and its connection dropped; a file
//! locked by a writer is waited for up to the same timeout. The file is
//! opened read-only and never created (OpenDBX creates an empty database
//! when the file is missing; we report the missing file instead), and it
//! is opened again when it has been replaced (a new file renamed over the
//! old one), so a rebuilt table is read without a restart.
//!
//! One statement per batch size: `SELECT CAST("keycol" AS TEXT),
//! CAST("datacol" AS TEXT), ... FROM "table" WHERE "keycol" IN (?, ...)
//! [AND (filter)]`; the keys are bound parameters, never SQL text. This
//! module never logs and never writes to the file.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::{BackendError, BadRow, ConnectSettings, MAX_VALUE_BYTES, Rows, SelectIn};
use crate::tables::remote::DsnSpec;

pub(super) struct Sqlite {
    path: PathBuf,
    /// The statement up to the key list, and after it.
    head: String,
    tail: String,
    /// Every key: `SELECT CAST("keycol" AS TEXT) FROM "table" ...`.
    whole: String,
    columns: Vec<String>,
    settings: ConnectSettings,
    /// Turns to run a lookup (`max_connections`).
    turns: Arc<Semaphore>,
    /// Connections not in use, with the identity of the file they opened.
    idle: Arc<Mutex<Vec<Open>>>,
}

/// A connection and the file (device, inode) it has open.
struct Open {
    conn: Connection,
    file: (u64, u64),
}

impl Sqlite {
    /// A data set on the SQLite file at `path` (already made absolute).
    pub(super) fn new(dsn: &DsnSpec, path: PathBuf, settings: ConnectSettings) -> Sqlite {
        let SelectIn { head, tail, whole } = SelectIn::new(dsn, "TEXT", '"');
        Sqlite {
            path,
            head,
            tail,
            whole,
            columns: dsn.data_columns.clone(),
            turns: Arc::new(Semaphore::new(settings.max_connections.max(1))),
            idle: Arc::new(Mutex::new(Vec::new())),
            settings,
        }
    }

    /// The statement for `n` keys.
    fn sql(&self, n: usize) -> String {
        let marks = vec!["?"; n].join(", ");
        format!("{}({marks}){}", self.head, self.tail)
    }

    /// Every key of the set, on a connection of its own (asked once, at
    /// start-up).
    pub(super) async fn keys(&self) -> Result<Vec<String>, BackendError> {
        let (path, sql) = (self.path.clone(), self.whole.clone());
        let busy = self.settings.query_timeout;
        let task = tokio::task::spawn_blocking(move || {
            identity(&path)?;
            let conn = open(&path, busy)?;
            let failed = |e: rusqlite::Error| BackendError::Query(describe(&e, &path));
            let mut statement = conn.prepare(&sql).map_err(failed)?;
            let mut rows = statement.query([]).map_err(failed)?;
            let mut keys = Vec::new();
            while let Some(row) = rows.next().map_err(failed)? {
                if let Ok(ValueRef::Text(key)) = row.get_ref(0)
                    && let Ok(key) = std::str::from_utf8(key)
                {
                    keys.push(key.to_string());
                }
                if keys.len() > super::MAX_WHOLE_KEYS {
                    return Err(BackendError::TooManyKeys);
                }
            }
            Ok(keys)
        });
        match tokio::time::timeout(busy + self.settings.connect_timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(BackendError::Query(format!("the lookup failed: {join}"))),
            Err(_) => Err(BackendError::QueryTimeout(busy)),
        }
    }

    pub(super) async fn fetch(&self, keys: &[String]) -> Result<Rows, BackendError> {
        let connect = self.settings.connect_timeout;
        let timeout = self.settings.query_timeout;
        let Ok(Ok(turn)) =
            tokio::time::timeout(connect, Arc::clone(&self.turns).acquire_owned()).await
        else {
            return Err(BackendError::ConnectTimeout(connect));
        };
        let job = Job {
            path: self.path.clone(),
            sql: self.sql(keys.len()),
            keys: keys.to_vec(),
            columns: self.columns.clone(),
            busy: timeout,
            idle: Arc::clone(&self.idle),
        };
        let interrupt: Arc<Mutex<Option<rusqlite::InterruptHandle>>> = Arc::new(Mutex::new(None));
        let handle = Arc::clone(&interrupt);
        let task = tokio::task::spawn_blocking(move || {
            let result = job.run(&handle);
            drop(turn);
            result
        });
        match tokio::time::timeout(timeout + connect, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(BackendError::Query(format!("the lookup failed: {join}"))),
            Err(_) => {
                // Stop the statement; its connection is not handed back.
                if let Some(handle) = interrupt
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                {
                    handle.interrupt();
                }
                Err(BackendError::QueryTimeout(timeout))
            }
        }
    }
}

/// One lookup, run on the blocking pool.
struct Job {
    path: PathBuf,
    sql: String,
    keys: Vec<String>,
    columns: Vec<String>,
    busy: Duration,
    idle: Arc<Mutex<Vec<Open>>>,
}

impl Job {
    fn run(
        self,
        interrupt: &Mutex<Option<rusqlite::InterruptHandle>>,
    ) -> Result<Rows, BackendError> {
        let file = identity(&self.path)?;
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            // Connections to a file since replaced are closed.
            idle.retain(|open| open.file == file);
            idle.pop()
        };
        let open = match reused {
            Some(open) => open,
            None => Open {
                conn: open(&self.path, self.busy)?,
                file,
            },
        };
        *interrupt.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(open.conn.get_interrupt_handle());
        let rows = self.query(&open.conn)?;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.push(open);
        Ok(rows)
    }

    fn query(&self, conn: &Connection) -> Result<Rows, BackendError> {
        let failed = |e: rusqlite::Error| BackendError::Query(describe(&e, &self.path));
        let mut statement = conn.prepare(&self.sql).map_err(failed)?;
        let mut rows = statement
            .query(rusqlite::params_from_iter(self.keys.iter()))
            .map_err(failed)?;
        let mut out = Rows::new();
        while let Some(row) = rows.next().map_err(failed)? {
            let Ok(ValueRef::Text(found)) = row.get_ref(0) else {
                continue;
            };
            let Ok(found) = std::str::from_utf8(found) else {
                continue;
            };
            // A column declared COLLATE NOCASE compares without regard to
            // case: answer for the key that was asked.
            let key = self
                .keys
                .iter()
                .find(|k| **k == found)
                .or_else(|| self.keys.iter().find(|k| k.eq_ignore_ascii_case(found)));
            let Some(key) = key else { continue };
            if out.contains_key(key) {
                // OpenDKIM uses the first row a key returns.
                continue;
            }
            out.insert(key.clone(), self.value(row));
        }
        Ok(out)
    }

    /// The data columns joined with `:`, as OpenDKIM joins a value's fields.
    fn value(&self, row: &rusqlite::Row<'_>) -> Result<String, BadRow> {
        let mut parts = Vec::with_capacity(self.columns.len());
        let mut total = 0;
        for (i, name) in self.columns.iter().enumerate() {
            let bytes = match row.get_ref(i + 1) {
                Ok(ValueRef::Null) => return Err(BadRow::Null(name.clone())),
                Ok(ValueRef::Text(bytes)) => bytes,
                _ => return Err(BadRow::NotText),
            };
            total += bytes.len();
            if total > MAX_VALUE_BYTES {
                return Err(BadRow::TooLong(total));
            }
            parts.push(std::str::from_utf8(bytes).map_err(|_| BadRow::NotText)?);
        }
        Ok(parts.join(":"))
    }
}

/// The file's (device, inode), or why it cannot be read.
fn identity(path: &Path) -> Result<(u64, u64), BackendError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        BackendError::Connect(match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "{}: no such file (the DSN's host and database joined name it, relative to \
                 BaseDirectory)",
                path.display()
            ),
            _ => format!("{}: {e}", path.display()),
        })
    })?;
    if !meta.is_file() {
        return Err(BackendError::Connect(format!(
            "{}: not a file",
            path.display()
        )));
    }
    Ok((meta.dev(), meta.ino()))
}

/// Opens `path` read-only (never creating it), waiting up to `busy` for a
/// writer's lock.
fn open(path: &Path, busy: Duration) -> Result<Connection, BackendError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| BackendError::Connect(describe(&e, path)))?;
    conn.busy_timeout(busy)
        .map_err(|e| BackendError::Connect(describe(&e, path)))?;
    // Reading the header tells a file that is not a database at once.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        .map_err(|e| BackendError::Connect(describe(&e, path)))?;
    Ok(conn)
}

/// SQLite's own message, with the file.
fn describe(error: &rusqlite::Error, path: &Path) -> String {
    match error {
        rusqlite::Error::SqliteFailure(code, Some(message)) => {
            format!("{}: {message} ({:?})", path.display(), code.code)
        }
        other => format!("{}: {other}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Location;
    use crate::tables::remote::RemoteSpec;

    fn dsn(spec: &str) -> DsnSpec {
        let (kind, rest) = spec.split_once(':').unwrap();
        let RemoteSpec::Dsn(dsn) =
            RemoteSpec::parse(kind, rest, &Location::new("/etc/opendkim.conf", 1)).unwrap()
        else {
            panic!("not a dsn");
        };
        dsn
    }

    fn sqlite(spec: &str, path: &Path) -> Sqlite {
        Sqlite::new(&dsn(spec), path.to_path_buf(), ConnectSettings::default())
    }

    #[test]
    fn keys_are_placeholders_and_names_are_quoted() {
        let s = sqlite(
            "dsn:sqlite3://h/db/table=main.keys?keycol=key?datacol=domain,selector?filter=on=3D1",
            Path::new("/x"),
        );
        assert_eq!(
            s.sql(2),
            "SELECT CAST(\"key\" AS TEXT), CAST(\"domain\" AS TEXT), CAST(\"selector\" AS TEXT) \
             FROM \"main\".\"keys\" WHERE \"key\" IN (?, ?) AND (on=1)"
        );
        assert_eq!(
            s.whole,
            "SELECT CAST(\"key\" AS TEXT) FROM \"main\".\"keys\" WHERE (on=1) LIMIT 10001"
        );
    }

    #[test]
    fn a_set_read_whole_is_refused_past_ten_thousand_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path(), "CREATE TABLE t (k TEXT);");
        let conn = Connection::open(&path).unwrap();
        let add = |from: usize, to: usize| {
            conn.execute_batch("BEGIN").unwrap();
            for n in from..to {
                conn.execute("INSERT INTO t VALUES (?1)", [format!("x-{n}")])
                    .unwrap();
            }
            conn.execute_batch("COMMIT").unwrap();
        };
        let s = sqlite("dsn:sqlite3://h/db/table=t?keycol=k?datacol=k", &path);
        let rt = runtime();
        add(0, crate::remote::MAX_WHOLE_KEYS);
        let keys = rt.block_on(s.keys()).unwrap();
        assert_eq!(keys.len(), crate::remote::MAX_WHOLE_KEYS);
        add(
            crate::remote::MAX_WHOLE_KEYS,
            crate::remote::MAX_WHOLE_KEYS + 1,
        );
        let err = rt.block_on(s.keys()).unwrap_err();
        assert!(matches!(err, BackendError::TooManyKeys), "{err}");
    }

    fn database(dir: &Path, sql: &str) -> PathBuf {
        let path = dir.join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(sql).unwrap();
        path
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn rows_are_found_by_bound_keys_and_nulls_are_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(
            dir.path(),
            "CREATE TABLE t (k TEXT, a TEXT, b INTEGER); \
             INSERT INTO t VALUES ('x', 'one', 2), ('y', NULL, 3), ('x', 'later', 4);",
        );
        let s = sqlite("dsn:sqlite3://h/db/table=t?keycol=k?datacol=a,b", &path);
        let keys: Vec<String> = ["x", "y", "' OR 1=1 --", "z"]
            .iter()
            .map(ToString::to_string)
            .collect();
        let rows = runtime().block_on(s.fetch(&keys)).unwrap();
        assert_eq!(rows.get("x"), Some(&Ok("one:2".to_string())));
        assert_eq!(rows.get("y"), Some(&Err(BadRow::Null("a".to_string()))));
        assert_eq!(rows.len(), 2, "{rows:?}");
    }

    #[test]
    fn a_missing_file_is_named_and_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.db");
        let s = sqlite("dsn:sqlite3://h/db/table=t?keycol=k?datacol=a", &path);
        let err = runtime().block_on(s.fetch(&["x".to_string()])).unwrap_err();
        assert!(err.to_string().contains("absent.db: no such file"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn a_file_replaced_by_a_new_one_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(
            dir.path(),
            "CREATE TABLE t (k TEXT, a TEXT); INSERT INTO t VALUES ('x', 'old');",
        );
        let s = sqlite("dsn:sqlite3://h/db/table=t?keycol=k?datacol=a", &path);
        let rt = runtime();
        let keys = ["x".to_string()];
        assert_eq!(
            rt.block_on(s.fetch(&keys)).unwrap().get("x"),
            Some(&Ok("old".to_string()))
        );
        let new = dir.path().join("new.db");
        let conn = Connection::open(&new).unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT, a TEXT); INSERT INTO t VALUES ('x', 'new');")
            .unwrap();
        drop(conn);
        std::fs::rename(&new, &path).unwrap();
        assert_eq!(
            rt.block_on(s.fetch(&keys)).unwrap().get("x"),
            Some(&Ok("new".to_string()))
        );
    }

    #[test]
    fn a_file_that_is_not_a_database_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let s = sqlite("dsn:sqlite3://h/db/table=t?keycol=k?datacol=a", &path);
        let err = runtime().block_on(s.fetch(&["x".to_string()])).unwrap_err();
        assert!(matches!(err, BackendError::Connect(_)), "{err}");
        assert!(err.to_string().contains("junk.db"), "{err}");
    }
}
