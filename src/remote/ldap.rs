//! `ldap://`, `ldaps://` and `ldapi://` data sets: a directory searched
//! through ldap3, the async pure-Rust LDAP client for tokio (TLS through
//! rustls on aws-lc-rs, trusting the system's certificate store).
//!
//! One connection per data set, shared by every lookup (LDAP answers
//! requests out of order on one connection, by message id). It is opened
//! on first use, to the first of the specification's servers that
//! answers, with StartTLS when LDAPUseTLS asks for it (not over
//! `ldaps://`), and logged in as LDAPBindUser with LDAPBindPassword
//! (`simple`; anonymous without them) or with SASL `EXTERNAL` (over
//! `ldapi://`, the process's own uid). A connection that breaks is opened
//! again and the search tried once more, as OpenDKIM does.
//!
//! Each key is one search: the URL's base and filter with `$d` and `$D`
//! substituted (the key escaped as RFC 4515 and RFC 4514 want, so a key
//! never widens a filter), its scope, and its attributes. The first entry
//! answers; each attribute's first value, in the URL's order, joined with
//! `:` as a `dsn:` row's columns are. No entry, or a base that does not
//! exist, is "no such key". This module never logs and never shows the
//! bind password.

use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};
use tokio::sync::Mutex;

use super::{
    BackendError, BadRow, ConnectSettings, LdapLogin, LdapMechanism, MAX_VALUE_BYTES, Rows,
};
use crate::tables::remote::{LdapScheme, LdapScope, LdapSpec};

pub(super) struct Ldap {
    spec: LdapSpec,
    login: LdapLogin,
    settings: ConnectSettings,
    connection: Mutex<Option<ldap3::Ldap>>,
}

/// LDAP result codes that mean "no such entry" (RFC 4511 `noSuchObject`
/// and its neighbours, OpenLDAP's `LDAP_NAME_ERROR`).
const NAME_ERRORS: std::ops::RangeInclusive<u32> = 32..=36;
/// `sizeLimitExceeded`: more than the one entry asked for; the first is
/// there.
const SIZE_LIMIT_EXCEEDED: u32 = 4;

/// Why one attempt failed, and whether a new connection may do better.
enum Attempt {
    Broken(BackendError),
    Failed(BackendError),
}

impl Ldap {
    pub(super) fn new(spec: &LdapSpec, settings: ConnectSettings) -> Ldap {
        Ldap {
            spec: spec.clone(),
            login: settings.ldap.clone(),
            settings,
            connection: Mutex::new(None),
        }
    }

    pub(super) async fn fetch(&self, keys: &[String]) -> Result<Rows, BackendError> {
        let mut out = Rows::new();
        for key in keys {
            let answer = match self.attempt(key).await {
                Ok(answer) => answer,
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Broken(_)) => match self.attempt(key).await {
                    Ok(answer) => answer,
                    Err(Attempt::Failed(e) | Attempt::Broken(e)) => return Err(e),
                },
            };
            if let Some(value) = answer {
                out.insert(key.clone(), value);
            }
        }
        Ok(out)
    }

    /// The open connection, or a new one.
    async fn connection(&self) -> Result<ldap3::Ldap, BackendError> {
        let mut held = self.connection.lock().await;
        if let Some(ldap) = held.as_mut()
            && !ldap.is_closed()
        {
            return Ok(ldap.clone());
        }
        *held = None;
        let mut last = BackendError::Connect("no LDAP server to connect to".to_string());
        for server in &self.spec.servers {
            let limit = self.settings.connect_timeout;
            match tokio::time::timeout(limit, self.open(&server.url(), server.scheme)).await {
                Ok(Ok(ldap)) => {
                    *held = Some(ldap.clone());
                    return Ok(ldap);
                }
                Ok(Err(e)) => last = BackendError::Connect(format!("{}: {e}", server.url())),
                Err(_) => last = BackendError::ConnectTimeout(limit),
            }
        }
        Err(last)
    }

    /// Connects to `url`, with StartTLS if asked, and logs in.
    async fn open(&self, url: &str, scheme: LdapScheme) -> Result<ldap3::Ldap, String> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.settings.connect_timeout)
            .set_starttls(self.login.start_tls && scheme == LdapScheme::Ldap);
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            // Ends when the connection does; the next lookup sees it
            // closed and opens another.
            let _ = conn.drive().await;
        });
        let bound = match self.login.mechanism {
            LdapMechanism::External => Some(ldap.sasl_external_bind().await),
            LdapMechanism::Simple => match (&self.login.bind_user, &self.login.bind_password) {
                (None, None) => None,
                (user, password) => Some(
                    ldap.simple_bind(
                        user.as_deref().unwrap_or(""),
                        password.as_ref().map_or("", |p| p.expose()),
                    )
                    .await,
                ),
            },
        };
        if let Some(bound) = bound {
            let result = bound.map_err(|e| e.to_string())?;
            if result.rc != 0 {
                let _ = ldap.unbind().await;
                return Err(format!(
                    "the server refused the bind{}: {} (result {})",
                    self.login
                        .bind_user
                        .as_ref()
                        .map(|u| format!(" as `{u}`"))
                        .unwrap_or_default(),
                    if result.text.is_empty() {
                        "invalid credentials or not allowed"
                    } else {
                        &result.text
                    },
                    result.rc
                ));
            }
        }
        Ok(ldap)
    }

    /// One search for `key`: its value, `None` for no entry.
    async fn attempt(&self, key: &str) -> Result<Option<Result<String, BadRow>>, Attempt> {
        let mut ldap = self.connection().await.map_err(Attempt::Failed)?;
        let (base, filter) = self.spec.query_for(key);
        let scope = match self.spec.scope {
            LdapScope::Base => Scope::Base,
            LdapScope::One => Scope::OneLevel,
            LdapScope::Sub => Scope::Subtree,
        };
        let limit = self.settings.query_timeout;
        let seconds = i32::try_from(limit.as_secs().max(1)).unwrap_or(i32::MAX);
        let search = ldap
            .with_timeout(limit)
            .with_search_options(SearchOptions::new().sizelimit(1).timelimit(seconds))
            .search(&base, scope, &filter, &self.spec.attributes);
        let result = match tokio::time::timeout(limit + Duration::from_millis(100), search).await {
            Err(_) => {
                self.forget().await;
                return Err(Attempt::Failed(BackendError::QueryTimeout(limit)));
            }
            Ok(Err(ldap3::LdapError::Timeout { .. })) => {
                self.forget().await;
                return Err(Attempt::Failed(BackendError::QueryTimeout(limit)));
            }
            Ok(Err(e)) => {
                self.forget().await;
                return Err(Attempt::Broken(BackendError::Query(e.to_string())));
            }
            Ok(Ok(result)) => result,
        };
        let ldap3::SearchResult(entries, status) = result;
        if NAME_ERRORS.contains(&status.rc) {
            return Ok(None);
        }
        if status.rc != 0 && status.rc != SIZE_LIMIT_EXCEEDED {
            return Err(Attempt::Failed(BackendError::Query(format!(
                "search failed: {} (result {})",
                status.text, status.rc
            ))));
        }
        let Some(entry) = entries.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(self.value(SearchEntry::construct(entry))))
    }

    /// The connection broke or hangs: the next lookup opens another.
    pub(super) async fn forget(&self) {
        if let Some(mut ldap) = self.connection.lock().await.take() {
            let _ = ldap.unbind().await;
        }
    }

    /// Each attribute's first value, in the URL's order, joined with `:`.
    fn value(&self, entry: SearchEntry) -> Result<String, BadRow> {
        let mut parts = Vec::with_capacity(self.spec.attributes.len());
        let mut total = 0;
        for name in &self.spec.attributes {
            let text = entry
                .attrs
                .iter()
                .find(|(attr, _)| attr.eq_ignore_ascii_case(name))
                .and_then(|(_, values)| values.first());
            let value = match text {
                Some(value) => value.clone(),
                None if entry
                    .bin_attrs
                    .keys()
                    .any(|attr| attr.eq_ignore_ascii_case(name)) =>
                {
                    return Err(BadRow::NotText);
                }
                None => return Err(BadRow::Missing(name.clone())),
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
