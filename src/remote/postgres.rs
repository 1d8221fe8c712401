//! `dsn:pgsql://` data sets: PostgreSQL through tokio-postgres, pooled by
//! deadpool-postgres.
//!
//! tokio-postgres is the async PostgreSQL client most of the ecosystem
//! uses (sqlx and deadpool build on it or beside it), pure Rust, with no
//! libpq; deadpool-postgres is its small, maintained pool with create and
//! wait timeouts. Both are built without default features: no TLS stack of
//! their own (the connection is plain, for a server on the host or a
//! private network, as OpenDBX's is by default) and no serde.
//!
//! One statement per data set: `SELECT keycol::text, datacol::text, ...
//! FROM table WHERE keycol = ANY($1) [AND (filter)]`, the keys bound as a
//! text array, never pasted into the SQL; table and column names are plain
//! identifiers (checked when the specification was parsed), the filter is
//! the administrator's SQL, as in OpenDKIM.

use deadpool_postgres::{
    Config, ManagerConfig, Pool, PoolConfig, PoolError, RecyclingMethod, Runtime, Timeouts,
};
use tokio_postgres::NoTls;

use super::{BackendError, BadRow, ConnectSettings, MAX_VALUE_BYTES, Rows};
use crate::tables::remote::DsnSpec;

pub(super) struct Postgres {
    pool: Result<Pool, String>,
    sql: String,
    /// Every key: `SELECT keycol::text FROM table [WHERE (filter)]`.
    whole: String,
    columns: Vec<String>,
    settings: ConnectSettings,
}

impl Postgres {
    pub(super) fn new(dsn: &DsnSpec, settings: ConnectSettings) -> Postgres {
        let mut config = Config::new();
        config.host = Some(dsn.host.clone());
        config.port = dsn.port;
        config.user =
            Some(dsn.user.clone().unwrap_or_else(|| {
                std::env::var("USER").unwrap_or_else(|_| "postgres".to_string())
            }));
        config.password = dsn.password.as_ref().map(|p| p.expose().to_string());
        config.dbname = Some(dsn.database.clone());
        config.application_name = Some("dkim-sidecar".to_string());
        config.connect_timeout = Some(settings.connect_timeout);
        config.manager = Some(ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        });
        config.pool = Some(PoolConfig {
            max_size: settings.max_connections,
            timeouts: Timeouts {
                wait: Some(settings.query_timeout),
                create: Some(settings.connect_timeout),
                recycle: Some(settings.connect_timeout),
            },
            ..PoolConfig::default()
        });
        let pool = config
            .create_pool(Some(Runtime::Tokio1), NoTls)
            .map_err(|e| e.to_string());
        let select: Vec<String> = std::iter::once(&dsn.key_column)
            .chain(&dsn.data_columns)
            .map(|c| format!("{c}::text"))
            .collect();
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {} = ANY($1)",
            select.join(", "),
            dsn.table,
            dsn.key_column
        );
        let mut whole = format!("SELECT {} FROM {}", select[0], dsn.table);
        if let Some(filter) = &dsn.filter {
            sql.push_str(&format!(" AND ({filter})"));
            whole.push_str(&format!(" WHERE ({filter})"));
        }
        whole.push_str(&super::whole_limit());
        Postgres {
            pool,
            sql,
            whole,
            columns: dsn.data_columns.clone(),
            settings,
        }
    }

    /// A connection from the pool, within the connect and query timeouts.
    async fn client(&self) -> Result<deadpool_postgres::Object, BackendError> {
        let pool = self
            .pool
            .as_ref()
            .map_err(|e| BackendError::Connect(e.clone()))?;
        let timeout = self.settings.query_timeout;
        match tokio::time::timeout(self.settings.connect_timeout + timeout, pool.get()).await {
            Err(_) | Ok(Err(PoolError::Timeout(_))) => {
                Err(BackendError::ConnectTimeout(self.settings.connect_timeout))
            }
            Ok(Err(PoolError::Backend(e))) => Err(BackendError::Connect(describe(&e))),
            Ok(Err(e)) => Err(BackendError::Connect(e.to_string())),
            Ok(Ok(client)) => Ok(client),
        }
    }

    /// Every key of the set.
    pub(super) async fn keys(&self) -> Result<Vec<String>, BackendError> {
        let client = self.client().await?;
        let timeout = self.settings.query_timeout;
        let rows = match tokio::time::timeout(timeout, client.query(&self.whole, &[])).await {
            Err(_) => {
                let _ = deadpool_postgres::Object::take(client);
                return Err(BackendError::QueryTimeout(timeout));
            }
            Ok(Err(e)) => return Err(BackendError::Query(describe(&e))),
            Ok(Ok(rows)) => rows,
        };
        if rows.len() > super::MAX_WHOLE_KEYS {
            return Err(BackendError::TooManyKeys);
        }
        Ok(rows
            .iter()
            .filter_map(|row| row.try_get::<_, Option<String>>(0).ok().flatten())
            .collect())
    }

    pub(super) async fn fetch(&self, keys: &[String]) -> Result<Rows, BackendError> {
        let client = self.client().await?;
        let timeout = self.settings.query_timeout;
        let keys = keys.to_vec();
        let rows = match tokio::time::timeout(timeout, async {
            let statement = client.prepare_cached(&self.sql).await?;
            client.query(&statement, &[&keys]).await
        })
        .await
        {
            Err(_) => {
                // The connection may still carry the query: drop it.
                let _ = deadpool_postgres::Object::take(client);
                return Err(BackendError::QueryTimeout(timeout));
            }
            Ok(Err(e)) => return Err(BackendError::Query(describe(&e))),
            Ok(Ok(rows)) => rows,
        };
        let mut out = Rows::new();
        for row in rows {
            let Ok(Some(key)) = row.try_get::<_, Option<String>>(0) else {
                continue;
            };
            if out.contains_key(&key) {
                // OpenDKIM uses the first row a key returns.
                continue;
            }
            out.insert(key, self.value(&row));
        }
        Ok(out)
    }

    /// The data columns joined with `:`, as OpenDKIM joins a value's fields.
    fn value(&self, row: &tokio_postgres::Row) -> Result<String, BadRow> {
        let mut parts = Vec::with_capacity(self.columns.len());
        let mut total = 0;
        for (i, name) in self.columns.iter().enumerate() {
            let value: Option<String> = row.try_get(i + 1).map_err(|_| BadRow::NotText)?;
            let Some(value) = value else {
                return Err(BadRow::Null(name.clone()));
            };
            total += value.len();
            if total > MAX_VALUE_BYTES {
                return Err(BadRow::TooLong(total));
            }
            parts.push(value);
        }
        Ok(parts.join(":"))
    }
}

/// The server's own message when there is one (tokio-postgres's Display
/// says only "db error").
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}
