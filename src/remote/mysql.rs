//! `dsn:mysql://` data sets: MySQL and MariaDB through mysql_async.
//!
//! mysql_async is the maintained async MySQL/MariaDB client for tokio:
//! pure Rust (no libmysqlclient), with its own connection pool, and
//! prepared statements so the key travels as a bound parameter, never as
//! SQL text. It is built without TLS (the server is on the host or a
//! private network, as OpenDBX reaches it by default) and with flate2's
//! pure-Rust backend.
//!
//! One statement per batch size: ``SELECT CAST(`keycol` AS CHAR),
//! CAST(`datacol` AS CHAR), ... FROM `table` WHERE `keycol` IN (?, ...)
//! [AND (filter)]``; table and column names are plain identifiers (checked
//! when the specification was parsed) and quoted, the filter is the administrator's SQL,
//! as in OpenDKIM. A connection that breaks under a query is dropped and
//! the query tried once more on a fresh one (a server restart leaves
//! every pooled connection broken; OpenDKIM reconnects once too). This
//! module never puts a key into SQL text and never shows the password.

use std::time::Duration;

use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, Value};

use super::{BackendError, BadRow, ConnectSettings, MAX_VALUE_BYTES, Rows, SelectIn};
use crate::tables::remote::DsnSpec;

/// MySQL's port when the specification names none.
const DEFAULT_PORT: u16 = 3306;

pub(super) struct Mysql {
    pool: Pool,
    /// The statement up to the key list, and after it.
    head: String,
    tail: String,
    /// Every key: ``SELECT CAST(`keycol` AS CHAR) FROM `table` ...``.
    whole: String,
    columns: Vec<String>,
    settings: ConnectSettings,
}

/// Why one attempt failed, and whether another connection may do better.
enum Attempt {
    /// The connection broke (reset, closed): try a fresh one.
    Broken(BackendError),
    Failed(BackendError),
}

impl Mysql {
    pub(super) fn new(dsn: &DsnSpec, settings: ConnectSettings) -> Mysql {
        let constraints = PoolConstraints::new(0, settings.max_connections.max(1))
            .unwrap_or_else(|| PoolConstraints::new(0, 1).expect("0 <= 1"));
        let pool_opts = PoolOpts::default()
            .with_constraints(constraints)
            .with_inactive_connection_ttl(Duration::from_secs(60))
            .with_reset_connection(false);
        let opts = OptsBuilder::default()
            .ip_or_hostname(dsn.host.clone())
            .tcp_port(dsn.port.unwrap_or(DEFAULT_PORT))
            .user(dsn.user.clone())
            .pass(dsn.password.as_ref().map(|p| p.expose().to_string()))
            .db_name(Some(dsn.database.clone()))
            // Asked for 127.0.0.1, connect there, not to a socket found
            // by asking the server.
            .prefer_socket(false)
            .pool_opts(pool_opts);
        let SelectIn { head, tail, whole } = SelectIn::new(dsn, "CHAR", '`');
        Mysql {
            pool: Pool::new(Opts::from(opts)),
            head,
            tail,
            whole,
            columns: dsn.data_columns.clone(),
            settings,
        }
    }

    /// The statement for `n` keys.
    fn sql(&self, n: usize) -> String {
        let marks = vec!["?"; n].join(", ");
        format!("{}({marks}){}", self.head, self.tail)
    }

    /// Every key of the set.
    pub(super) async fn keys(&self) -> Result<Vec<String>, BackendError> {
        let connect = self.settings.connect_timeout;
        let mut conn = match tokio::time::timeout(connect, self.pool.get_conn()).await {
            Err(_) => return Err(BackendError::ConnectTimeout(connect)),
            Ok(Err(e)) => return Err(BackendError::Connect(describe(&e))),
            Ok(Ok(conn)) => conn,
        };
        let timeout = self.settings.query_timeout;
        let keys: Vec<Option<Vec<u8>>> =
            match tokio::time::timeout(timeout, conn.query(&self.whole)).await {
                Err(_) => {
                    discard(conn, connect);
                    return Err(BackendError::QueryTimeout(timeout));
                }
                Ok(Err(e)) => return Err(BackendError::Query(describe(&e))),
                Ok(Ok(keys)) => keys,
            };
        if keys.len() > super::MAX_WHOLE_KEYS {
            return Err(BackendError::TooManyKeys);
        }
        Ok(keys
            .into_iter()
            .flatten()
            .filter_map(|k| String::from_utf8(k).ok())
            .collect())
    }

    pub(super) async fn fetch(&self, keys: &[String]) -> Result<Rows, BackendError> {
        match self.attempt(keys).await {
            Ok(rows) => Ok(rows),
            Err(Attempt::Failed(e)) => Err(e),
            Err(Attempt::Broken(_)) => match self.attempt(keys).await {
                Ok(rows) => Ok(rows),
                Err(Attempt::Failed(e) | Attempt::Broken(e)) => Err(e),
            },
        }
    }

    async fn attempt(&self, keys: &[String]) -> Result<Rows, Attempt> {
        let connect = self.settings.connect_timeout;
        let mut conn = match tokio::time::timeout(connect, self.pool.get_conn()).await {
            Err(_) => return Err(Attempt::Failed(BackendError::ConnectTimeout(connect))),
            Ok(Err(e)) => return Err(Attempt::Failed(BackendError::Connect(describe(&e)))),
            Ok(Ok(conn)) => conn,
        };
        let timeout = self.settings.query_timeout;
        let sql = self.sql(keys.len());
        let params: Vec<Value> = keys.iter().map(|k| Value::from(k.as_str())).collect();
        let rows: Vec<Row> = match tokio::time::timeout(timeout, conn.exec(sql, params)).await {
            Err(_) => {
                // The connection may still carry the query: close it
                // rather than hand it back to the pool.
                discard(conn, connect);
                return Err(Attempt::Failed(BackendError::QueryTimeout(timeout)));
            }
            Ok(Err(e)) if e.is_fatal() || matches!(e, mysql_async::Error::Io(_)) => {
                discard(conn, connect);
                return Err(Attempt::Broken(BackendError::Query(describe(&e))));
            }
            Ok(Err(e)) => return Err(Attempt::Failed(BackendError::Query(describe(&e)))),
            Ok(Ok(rows)) => rows,
        };
        let mut out = Rows::new();
        for row in rows {
            let Some(Some(found)) = row.get_opt::<Option<Vec<u8>>, _>(0).and_then(Result::ok)
            else {
                continue;
            };
            let Ok(found) = String::from_utf8(found) else {
                continue;
            };
            // MySQL compares with the column's collation (often without
            // regard to case): answer for the key that was asked.
            let key = keys
                .iter()
                .find(|k| **k == found)
                .or_else(|| keys.iter().find(|k| k.eq_ignore_ascii_case(&found)));
            let Some(key) = key else { continue };
            if out.contains_key(key) {
                // OpenDKIM uses the first row a key returns.
                continue;
            }
            out.insert(key.clone(), self.value(&row));
        }
        Ok(out)
    }

    /// The data columns joined with `:`, as OpenDKIM joins a value's fields.
    fn value(&self, row: &Row) -> Result<String, BadRow> {
        let mut parts = Vec::with_capacity(self.columns.len());
        let mut total = 0;
        for (i, name) in self.columns.iter().enumerate() {
            let value: Option<Vec<u8>> = row
                .get_opt(i + 1)
                .and_then(Result::ok)
                .ok_or(BadRow::NotText)?;
            let Some(value) = value else {
                return Err(BadRow::Null(name.clone()));
            };
            total += value.len();
            if total > MAX_VALUE_BYTES {
                return Err(BadRow::TooLong(total));
            }
            parts.push(String::from_utf8(value).map_err(|_| BadRow::NotText)?);
        }
        Ok(parts.join(":"))
    }
}

/// Closes a connection that cannot be trusted with another query, in the
/// background and within `limit`.
fn discard(conn: Conn, limit: Duration) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(limit, conn.disconnect()).await;
    });
}

/// The server's own message when there is one.
fn describe(error: &mysql_async::Error) -> String {
    match error {
        mysql_async::Error::Server(e) => format!("{} ({})", e.message, e.code),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Location;
    use crate::tables::remote::RemoteSpec;

    fn mysql(spec: &str) -> Mysql {
        let (kind, rest) = spec.split_once(':').unwrap();
        let RemoteSpec::Dsn(dsn) =
            RemoteSpec::parse(kind, rest, &Location::new("/etc/opendkim.conf", 1)).unwrap()
        else {
            panic!("not a dsn");
        };
        Mysql::new(&dsn, ConnectSettings::default())
    }

    #[test]
    fn keys_are_placeholders_and_names_are_quoted() {
        let m = mysql("dsn:mysql://u:p@h/db/table=mail.keys?keycol=key?datacol=domain,selector");
        assert_eq!(
            m.sql(3),
            "SELECT CAST(`key` AS CHAR), CAST(`domain` AS CHAR), CAST(`selector` AS CHAR) \
             FROM `mail`.`keys` WHERE `key` IN (?, ?, ?)"
        );
    }

    #[test]
    fn the_filter_is_anded_after_the_key_list() {
        let m = mysql("dsn:mysql://h/db/table=t?keycol=k?datacol=v?filter=active=20=3D=201");
        assert_eq!(
            m.sql(1),
            "SELECT CAST(`k` AS CHAR), CAST(`v` AS CHAR) FROM `t` WHERE `k` IN (?) AND (active = 1)"
        );
    }
}
