//! An SQLite file for one test: a database in the test's scratch
//! directory, filled with SQL through rusqlite, and the `dsn:sqlite3://`
//! specification that names it. Nothing runs: SQLite has no server.
//!
//! OpenDBX names the file by joining the DSN's host and database with
//! nothing between them, relative to OpenDKIM's BaseDirectory, so the
//! file is [`SqliteFile::NAME`] in [`SqliteFile::dir`] and the
//! configuration reading it must say `BaseDirectory` that directory
//! ([`SqliteFile::base_directory`]).

use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A database file of its own.
pub struct SqliteFile {
    dir: TempDir,
}

impl SqliteFile {
    /// The DSN's host and database: the file `dkimkeys.sqlite`.
    pub const HOST: &'static str = "dkim";
    pub const DATABASE: &'static str = "keys.sqlite";
    pub const NAME: &'static str = "dkimkeys.sqlite";

    /// An empty database.
    pub fn create() -> SqliteFile {
        let file = SqliteFile {
            dir: crate::scratch_dir("sqlite"),
        };
        file.sql("SELECT 1");
        file
    }

    /// Runs `sql` (one or more statements); panics on error.
    pub fn sql(&self, sql: &str) {
        let conn = rusqlite::Connection::open(self.path())
            .unwrap_or_else(|e| panic!("open {}: {e}", self.path().display()));
        conn.execute_batch(sql)
            .unwrap_or_else(|e| panic!("sqlite failed: {e}\n{sql}"));
    }

    /// Takes the file's exclusive lock, as a writer in the middle of a
    /// transaction holds it: readers wait until the guard is dropped.
    pub fn lock(&self) -> SqliteLock {
        let conn = rusqlite::Connection::open(self.path())
            .unwrap_or_else(|e| panic!("open {}: {e}", self.path().display()));
        conn.execute_batch("BEGIN EXCLUSIVE")
            .unwrap_or_else(|e| panic!("lock {}: {e}", self.path().display()));
        SqliteLock { _conn: conn }
    }

    /// The database file.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(Self::NAME)
    }

    /// The directory the DSN is relative to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The opendkim.conf line that makes [`Self::dsn`] name this file.
    pub fn base_directory(&self) -> String {
        format!("BaseDirectory {}", self.dir.path().display())
    }

    /// A `dsn:sqlite3://` data set on this file, relative to
    /// [`Self::base_directory`] as OpenDKIM reads it.
    pub fn dsn(&self, table: &str, key_column: &str, data_columns: &str) -> String {
        format!(
            "dsn:sqlite3://{}/{}/table={table}?keycol={key_column}?datacol={data_columns}",
            Self::HOST,
            Self::DATABASE
        )
    }
}

impl crate::datasets::SqlTables for SqliteFile {
    fn run_sql(&self, sql: &str) {
        self.sql(sql);
    }

    fn table_dsn(&self, table: &str, key_column: &str, data_columns: &str) -> String {
        self.dsn(table, key_column, data_columns)
    }

    fn config_lines(&self) -> Vec<String> {
        vec![self.base_directory()]
    }
}

/// An exclusive lock on an [`SqliteFile`], released (rolled back) when
/// dropped.
pub struct SqliteLock {
    _conn: rusqlite::Connection,
}
