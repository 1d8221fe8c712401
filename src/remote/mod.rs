//! Data sets kept on a server (`dsn:` SQL databases, `ldap:` directories),
//! looked up key by key at message time through a read-through cache.
//!
//! A [`RemoteSet`] is one such data set (the KeyTable, the SigningTable):
//! its specification (parsed by [`crate::tables::remote`]), a connection
//! pool to its server, its cache and its health. [`RemoteSet::get_many`]
//! answers a batch of keys: fresh cached answers first, then one query for
//! the rest. When the server cannot be reached (refused, timed out, an
//! error), cached answers within the stale limit are served and keys with
//! no usable answer fail, so the caller can tempfail exactly the mail that
//! needs them. The first failure is logged once (with the data set, the
//! server and the error), the failures are counted, and the recovery is
//! logged once with that count.
//!
//! Every lookup is async and bounded by the connect and query timeouts,
//! and runs on the milter connection's task: a slow server holds up only
//! the messages that wait for it. Queries are parameterised (the key is
//! never pasted into SQL) and LDAP filters escape the key (RFC 4515).
//!
//! This module logs the outage and the recovery and counts metrics; it
//! never logs a password (specifications display masked) or a key's value.

mod cache;
mod ldap;
mod mysql;
mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::diagnostics::Location;
use crate::tables::remote::{RemoteSpec, Secret};

pub use cache::{Cache, CacheSettings, Cached};

/// Connection limits for a data set's server, and how to log in to a
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSettings {
    /// Time allowed to open a connection (and log in).
    pub connect_timeout: Duration,
    /// Time allowed for one query, from taking a connection to the answer.
    pub query_timeout: Duration,
    /// The most connections open to the server at once.
    pub max_connections: usize,
    /// For `ldap:` data sets.
    pub ldap: LdapLogin,
}

/// How to log in to an LDAP server: OpenDKIM's LDAPBindUser,
/// LDAPBindPassword, LDAPAuthMechanism and LDAPUseTLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LdapLogin {
    pub bind_user: Option<String>,
    pub bind_password: Option<Secret>,
    pub mechanism: LdapMechanism,
    /// StartTLS on `ldap://` (`ldaps://` is TLS from the start).
    pub start_tls: bool,
}

/// The bind: `simple` (a DN and password, or anonymous without them) or
/// SASL `EXTERNAL` (the identity the transport proves: over `ldapi://`,
/// the process's uid).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LdapMechanism {
    #[default]
    Simple,
    External,
}

impl LdapMechanism {
    /// OpenDKIM's LDAPAuthMechanism value (`none` and `simple` are the
    /// simple bind).
    pub fn parse(value: &str) -> Option<LdapMechanism> {
        match value.to_ascii_lowercase().as_str() {
            "" | "none" | "simple" => Some(LdapMechanism::Simple),
            "external" => Some(LdapMechanism::External),
            _ => None,
        }
    }
}

impl Default for ConnectSettings {
    fn default() -> Self {
        ConnectSettings {
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
            max_connections: 16,
            ldap: LdapLogin::default(),
        }
    }
}

/// A set read whole (a header list) with more keys than this is refused:
/// no header list has that many names.
pub const MAX_WHOLE_KEYS: usize = 10_000;

/// A value longer than this is refused (a KeyTable value holds a key of a
/// few kilobytes; a 10 MB cell is a mistake or an attack).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Why the server did not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("no answer within {0:?}")]
    QueryTimeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("query failed: {0}")]
    Query(String),
    #[error("the table has more than {MAX_WHOLE_KEYS} keys")]
    TooManyKeys,
}

/// One row's problem: it is not used, and the message it was for gets the
/// On-* action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRow {
    #[error("column `{0}` is NULL")]
    Null(String),
    #[error("the value is {0} bytes long (at most {MAX_VALUE_BYTES})")]
    TooLong(usize),
    #[error("the value is not UTF-8 text")]
    NotText,
    #[error("the entry has no attribute `{0}`")]
    Missing(String),
}

/// A key that could not be answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    #[error("{set} cannot be reached and `{key}` is not cached: {error}")]
    Unavailable {
        set: String,
        key: String,
        error: BackendError,
    },
    #[error("{set}: the entry for `{key}` cannot be used: {problem}")]
    BadRow {
        set: String,
        key: String,
        problem: BadRow,
    },
}

/// What the server answered for one key.
pub(crate) type Rows = HashMap<String, Result<String, BadRow>>;

/// The connection to one data set's server.
enum Backend {
    Postgres(postgres::Postgres),
    Mysql(mysql::Mysql),
    Ldap(ldap::Ldap),
    Sqlite(sqlite::Sqlite),
}

impl Backend {
    /// Every key of the set (at most [`MAX_WHOLE_KEYS`]); `None` for a
    /// directory, which OpenDKIM cannot list either.
    async fn keys(&self) -> Option<Result<Vec<String>, BackendError>> {
        Some(match self {
            Backend::Postgres(pg) => pg.keys().await,
            Backend::Mysql(my) => my.keys().await,
            Backend::Sqlite(sqlite) => sqlite.keys().await,
            Backend::Ldap(_) => return None,
        })
    }

    async fn fetch(&self, keys: &[String]) -> Result<Rows, BackendError> {
        match self {
            Backend::Postgres(pg) => pg.fetch(keys).await,
            Backend::Mysql(my) => my.fetch(keys).await,
            Backend::Ldap(ldap) => ldap.fetch(keys).await,
            Backend::Sqlite(sqlite) => sqlite.fetch(keys).await,
        }
    }
}

/// Whether the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Up,
    Down { since: Instant, failures: u64 },
}

/// One data set kept on a server.
pub struct RemoteSet {
    /// The option that names it (`KeyTable`, `SigningTable`).
    role: &'static str,
    spec: RemoteSpec,
    at: Location,
    backend: Backend,
    cache: Mutex<Cache>,
    health: Mutex<Health>,
}

impl std::fmt::Debug for RemoteSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSet")
            .field("role", &self.role)
            .field("spec", &self.spec.to_string())
            .finish_non_exhaustive()
    }
}

impl RemoteSet {
    /// A data set for `spec`; no connection is made until the first lookup
    /// (or [`RemoteSet::check`]). `base` is the directory an SQLite file
    /// name is relative to (OpenDKIM's BaseDirectory).
    pub fn new(
        role: &'static str,
        spec: RemoteSpec,
        at: Location,
        base: &Path,
        cache: CacheSettings,
        connect: ConnectSettings,
    ) -> RemoteSet {
        let backend =
            match &spec {
                RemoteSpec::Dsn(dsn) => match dsn.backend {
                    crate::tables::remote::SqlBackend::Postgres => {
                        Backend::Postgres(postgres::Postgres::new(dsn, connect))
                    }
                    crate::tables::remote::SqlBackend::Mysql => {
                        Backend::Mysql(mysql::Mysql::new(dsn, connect))
                    }
                    crate::tables::remote::SqlBackend::Sqlite => Backend::Sqlite(
                        sqlite::Sqlite::new(dsn, base.join(dsn.sqlite_file()), connect),
                    ),
                },
                RemoteSpec::Ldap(ldap) => Backend::Ldap(ldap::Ldap::new(ldap, connect)),
            };
        RemoteSet {
            role,
            spec,
            at,
            backend,
            cache: Mutex::new(Cache::new(cache)),
            health: Mutex::new(Health::Up),
        }
    }

    /// A PostgreSQL set no test reaches, for unit tests that give its
    /// answers themselves.
    #[cfg(test)]
    pub(crate) fn unreached(role: &'static str) -> Arc<RemoteSet> {
        let at = Location::file("conf");
        let (crate::tables::DataSetSpec::Remote(spec), _) = crate::tables::DataSetSpec::parse(
            "dsn:pgsql://u@127.0.0.1/db/table=t?keycol=k?datacol=k",
            &at,
        )
        .expect("a valid specification") else {
            panic!("not a server spec")
        };
        Arc::new(RemoteSet::new(
            role,
            spec,
            at,
            Path::new("/"),
            CacheSettings::default(),
            ConnectSettings::default(),
        ))
    }

    pub fn role(&self) -> &'static str {
        self.role
    }

    /// The specification, password masked.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.spec, self.spec.backend_name())
    }

    pub fn at(&self) -> &Location {
        &self.at
    }

    fn label(&self) -> String {
        format!("{} {}", self.role, self.spec)
    }

    /// Connects and runs one lookup, for `check-config` and SoftStart.
    pub async fn check(&self) -> Result<(), BackendError> {
        self.backend
            .fetch(&["dkim-sidecar-connection-check".to_string()])
            .await
            .map(|_| ())
    }

    /// Every key of the set, for a list OpenDKIM reads whole at start-up
    /// (`dkimf_db_mkarray`: SignHeaders, OmitHeaders, ...); not cached.
    /// `None` for an LDAP directory, which cannot be listed.
    pub async fn keys(&self) -> Option<Result<Vec<String>, BackendError>> {
        let result = self.backend.keys().await?;
        self.record_health(&result);
        Some(result)
    }

    /// Closes a connection kept open between lookups (an LDAP server's),
    /// so that the next lookup opens and logs in again.
    pub async fn disconnect(&self) {
        if let Backend::Ldap(ldap) = &self.backend {
            ldap.forget().await;
        }
    }

    /// The answers for `keys`, in order: `Some(value)` or `None` (no such
    /// key). Fails for the first key that has no usable answer.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Arc<str>>>, LookupError> {
        let metrics = metrics();
        let labels = vec![("table", self.role.to_string())];
        let now = Instant::now();
        let mut answers: Vec<Option<Cached>> = Vec::with_capacity(keys.len());
        let mut missing: Vec<String> = Vec::new();
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            for key in keys {
                metrics.lookups.get_or_create(&labels).inc();
                let cached = cache.get(key, now);
                match &cached {
                    Cached::Fresh(_) => {
                        metrics.hits.get_or_create(&labels).inc();
                    }
                    _ => {
                        metrics.misses.get_or_create(&labels).inc();
                        if !missing.contains(key) {
                            missing.push(key.clone());
                        }
                    }
                }
                answers.push(Some(cached));
            }
        }
        let fetched = if missing.is_empty() {
            Ok(Rows::new())
        } else {
            let started = Instant::now();
            let result = self.backend.fetch(&missing).await;
            metrics.latency.observe(started.elapsed().as_secs_f64());
            self.record_health(&result);
            result
        };
        let mut out = Vec::with_capacity(keys.len());
        match fetched {
            Ok(mut rows) => {
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                for key in &missing {
                    match rows.remove(key) {
                        Some(Ok(value)) => {
                            let value: Arc<str> = Arc::from(value);
                            cache.put(key, Some(Arc::clone(&value)), now);
                            rows.insert(key.clone(), Ok(value.to_string()));
                        }
                        Some(Err(problem)) => {
                            metrics.errors.get_or_create(&labels).inc();
                            return Err(LookupError::BadRow {
                                set: self.label(),
                                key: key.clone(),
                                problem,
                            });
                        }
                        None => cache.put(key, None, now),
                    }
                }
                drop(cache);
                for (key, cached) in keys.iter().zip(answers) {
                    match cached {
                        Some(Cached::Fresh(value)) => out.push(value),
                        _ => out.push(match rows.get(key) {
                            Some(Ok(v)) => Some(Arc::from(v.as_str())),
                            _ => None,
                        }),
                    }
                }
            }
            Err(error) => {
                metrics.errors.get_or_create(&labels).inc();
                for (key, cached) in keys.iter().zip(answers) {
                    match cached {
                        Some(Cached::Fresh(value) | Cached::Stale(value)) => out.push(value),
                        _ => {
                            return Err(LookupError::Unavailable {
                                set: self.label(),
                                key: key.clone(),
                                error,
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Logs the first failure of an outage and the recovery, once each.
    fn record_health<T>(&self, result: &Result<T, BackendError>) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        match (result, *health) {
            (Ok(_), Health::Up) => {}
            (Ok(_), Health::Down { since, failures }) => {
                *health = Health::Up;
                tracing::warn!(
                    "{}: the {} server answers again after {failures} failed lookups in {:.0?}",
                    self.label(),
                    self.spec.backend_name(),
                    since.elapsed()
                );
            }
            (Err(error), Health::Up) => {
                *health = Health::Down {
                    since: Instant::now(),
                    failures: 1,
                };
                tracing::error!(
                    "{}: the {} server cannot be reached ({error}); serving cached entries and \
                     tempfailing mail whose entry is not cached until it answers (logged once \
                     per outage)",
                    self.label(),
                    self.spec.backend_name()
                );
            }
            (Err(_), Health::Down { since, failures }) => {
                *health = Health::Down {
                    since,
                    failures: failures + 1,
                };
            }
        }
    }
}

type Labels = Vec<(&'static str, String)>;

/// The data-set lookup counters; they live for the whole process.
#[derive(Debug)]
pub struct DataSetMetrics {
    lookups: Family<Labels, Counter>,
    hits: Family<Labels, Counter>,
    misses: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    latency: Histogram,
}

static METRICS: LazyLock<DataSetMetrics> = LazyLock::new(|| DataSetMetrics {
    lookups: Family::default(),
    hits: Family::default(),
    misses: Family::default(),
    errors: Family::default(),
    // 0.1 ms to about 6.5 s.
    latency: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
});

pub fn metrics() -> &'static DataSetMetrics {
    &METRICS
}

/// Adds the data-set metrics to `registry` (prefix `dkim_sidecar_dataset_`).
pub fn register(registry: &mut Registry) {
    let m = metrics();
    let sub = registry.sub_registry_with_prefix("dataset");
    sub.register(
        "lookups",
        "Keys looked up in data sets kept on a server, by table",
        m.lookups.clone(),
    );
    sub.register("cache_hits", "Keys answered from the cache", m.hits.clone());
    sub.register(
        "cache_misses",
        "Keys not (freshly) cached, asked of the server",
        m.misses.clone(),
    );
    sub.register(
        "errors",
        "Lookups that failed (server unreachable, timed out, or a row that cannot be used)",
        m.errors.clone(),
    );
    sub.register(
        "backend_latency_seconds",
        "Time from sending a query to its answer",
        m.latency.clone(),
    );
}

/// The end of a statement reading a set whole: one row more than
/// [`MAX_WHOLE_KEYS`], enough to tell that the set is too large.
fn whole_limit() -> String {
    format!(" LIMIT {}", MAX_WHOLE_KEYS + 1)
}

/// The statement of a backend that binds a lookup's keys as a list,
/// `... WHERE key IN (?, ?, ...)` (MySQL, SQLite): the text before the
/// list and after it. Every column is cast to text as the backend spells
/// the type, and every checked plain name (`db.table`, `column`) quoted
/// with the backend's identifier quote, so that a column called `key` or
/// a table called `keys` (reserved words) works; values are only ever
/// parameters.
struct SelectIn {
    head: String,
    tail: String,
    /// Every key of the set: `SELECT keycol FROM table [WHERE (filter)]
    /// LIMIT n`, with one row more than [`MAX_WHOLE_KEYS`] so that a set too
    /// large is refused without reading all of it.
    whole: String,
}

impl SelectIn {
    fn new(dsn: &crate::tables::remote::DsnSpec, text_type: &str, quote: char) -> SelectIn {
        let quoted = |name: &str| {
            name.split('.')
                .map(|part| format!("{quote}{part}{quote}"))
                .collect::<Vec<_>>()
                .join(".")
        };
        let select: Vec<String> = std::iter::once(&dsn.key_column)
            .chain(&dsn.data_columns)
            .map(|c| format!("CAST({} AS {text_type})", quoted(c)))
            .collect();
        let mut whole = format!("SELECT {} FROM {}", select[0], quoted(&dsn.table));
        if let Some(filter) = &dsn.filter {
            whole.push_str(&format!(" WHERE ({filter})"));
        }
        whole.push_str(&whole_limit());
        SelectIn {
            whole,
            head: format!(
                "SELECT {} FROM {} WHERE {} IN ",
                select.join(", "),
                quoted(&dsn.table),
                quoted(&dsn.key_column)
            ),
            tail: match &dsn.filter {
                Some(filter) => format!(" AND ({filter})"),
                None => String::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LdapMechanism;

    #[test]
    fn ldap_auth_mechanisms_are_opendkims_words() {
        assert_eq!(LdapMechanism::parse("simple"), Some(LdapMechanism::Simple));
        assert_eq!(LdapMechanism::parse("none"), Some(LdapMechanism::Simple));
        assert_eq!(
            LdapMechanism::parse("EXTERNAL"),
            Some(LdapMechanism::External)
        );
        assert_eq!(LdapMechanism::parse("DIGEST-MD5"), None);
    }
}
