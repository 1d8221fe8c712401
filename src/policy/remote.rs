//! Signing with a KeyTable and/or SigningTable kept on a server.
//!
//! Such tables cannot be loaded whole; a message's sender decides which
//! entries matter. [`RemoteSigning::resolve`] asks the servers for them
//! (through each set's cache; see [`crate::remote`]) before the decision:
//! the SigningTable keys OpenDKIM sends its server for the sender (the
//! domain lowercased, the local part as written), then the KeyTable
//! entries the matches name. The rows found are turned into a
//! small SigningTable and KeyTable by the same code that reads files, so a
//! server-kept table decides exactly as a file with those rows would.
//! Keys written inline in a KeyTable row are parsed once per distinct value
//! and kept for the life of this configuration.
//!
//! This module never logs: failures come back as [`RemoteProblem`]s, and
//! the message they concern gets the On-* action.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::diagnostics::Location;
use crate::keys::{KeyError, LoadOptions, PrivateKey, load_inline_key, load_key_file};
use crate::remote::{LookupError, RemoteSet};
use crate::tables::{
    DataSet, DataSetEntry, DataSetKind, KeyTable, ResolvedKeySource, SigningTable, TableError,
    exact_probes_as_written,
};

use super::{KeyStore, Sender};

/// Where a table or data set comes from.
#[derive(Debug, Clone)]
pub enum TableSource<T> {
    /// Loaded at start-up (a file or a list).
    Local(T),
    /// Looked up per message.
    Remote(Arc<RemoteSet>),
}

impl<T> TableSource<T> {
    /// What was loaded, when it was not left on a server.
    pub fn local(&self) -> Option<&T> {
        match self {
            TableSource::Local(loaded) => Some(loaded),
            TableSource::Remote(_) => None,
        }
    }
}

/// The KeyTable and SigningTable when at least one of them is on a server.
#[derive(Debug)]
pub struct RemoteSigning {
    pub signing_table: TableSource<SigningTable>,
    pub key_table: TableSource<(KeyTable, KeyStore)>,
    options: LoadOptions,
    /// Inline keys parsed so far, by the KeyTable value that holds them.
    parsed: Mutex<HashMap<Arc<str>, Arc<PrivateKey>>>,
}

/// A key chosen for one message.
#[derive(Debug, Clone)]
pub struct RemoteKey {
    pub domain: String,
    pub selector: String,
    pub key: Arc<PrivateKey>,
    pub signer: Option<String>,
}

/// Why the keys for a message cannot be known.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteProblem {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("{set}: {error}")]
    Row { set: String, error: Arc<TableError> },
    #[error(
        "the SigningTable names key `{name}`, which the KeyTable {keytable} does not have; add it"
    )]
    NotInKeyTable { name: String, keytable: String },
    #[error("KeyTable entry `{name}` from {set}: {error}")]
    Key {
        name: String,
        set: String,
        error: Arc<KeyError>,
    },
    /// The lookup did not run before the decision (a bug, answered as an
    /// internal error).
    #[error("the KeyTable and SigningTable lookups for this message did not run")]
    NotLookedUp,
}

impl RemoteSigning {
    pub fn new(
        signing_table: TableSource<SigningTable>,
        key_table: TableSource<(KeyTable, KeyStore)>,
        options: LoadOptions,
    ) -> Self {
        RemoteSigning {
            signing_table,
            key_table,
            options,
            parsed: Mutex::new(HashMap::new()),
        }
    }

    /// The sets on servers, for `check-config` and start-up checks.
    pub fn remote_sets(&self) -> Vec<&Arc<RemoteSet>> {
        let mut sets = Vec::new();
        if let TableSource::Remote(set) = &self.signing_table {
            sets.push(set);
        }
        if let TableSource::Remote(set) = &self.key_table {
            sets.push(set);
        }
        sets
    }

    /// The keys that sign mail from `sender`: the SigningTable matches (the
    /// first, or all with MultipleSignatures), each with its KeyTable entry
    /// and loaded key. Empty when the SigningTable has no match.
    pub async fn resolve(
        &self,
        sender: &Sender,
        multiple: bool,
    ) -> Result<Vec<RemoteKey>, RemoteProblem> {
        let fetched_table;
        let signing_table = match &self.signing_table {
            TableSource::Local(table) => table,
            TableSource::Remote(set) => {
                // OpenDKIM's keys: the local part as written, so that the
                // server's own comparison (case-sensitive in PostgreSQL and
                // SQLite, the collation's in MySQL, the schema's in LDAP)
                // decides as it does for OpenDKIM.
                let probes = exact_probes_as_written(&sender.user, &sender.domain);
                let values = set.get_many(&probes).await?;
                let rows = rows(set, probes, values);
                fetched_table =
                    SigningTable::from_data_set(rows).map_err(|e| RemoteProblem::Row {
                        set: set.describe(),
                        error: Arc::new(e),
                    })?;
                &fetched_table
            }
        };
        let matches = if multiple {
            signing_table.find_all(&sender.user, &sender.domain)
        } else {
            signing_table.find_first(&sender.user, &sender.domain)
        };
        if matches.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<(String, Option<String>)> = matches
            .into_iter()
            .map(|m| (m.key_name, m.signer))
            .collect();
        match &self.key_table {
            TableSource::Local((table, store)) => {
                let mut out = Vec::with_capacity(names.len());
                for (name, signer) in names {
                    let Some(entry) = table.get(&name) else {
                        return Err(RemoteProblem::NotInKeyTable {
                            name,
                            keytable: table.origin().to_string(),
                        });
                    };
                    let resolved = entry.resolve(&sender.domain);
                    let key = store.key_for(&resolved).map_err(|e| RemoteProblem::Key {
                        name: name.clone(),
                        set: table.origin().to_string(),
                        error: Arc::new(e),
                    })?;
                    out.push(RemoteKey {
                        domain: resolved.domain,
                        selector: resolved.selector.to_string(),
                        key,
                        signer,
                    });
                }
                Ok(out)
            }
            TableSource::Remote(set) => {
                let keys: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
                let values = set.get_many(&keys).await?;
                let data = rows(set, keys, values.clone());
                let table = KeyTable::from_data_set(data).map_err(|e| RemoteProblem::Row {
                    set: set.describe(),
                    error: Arc::new(e),
                })?;
                let mut out = Vec::with_capacity(names.len());
                for ((name, signer), value) in names.into_iter().zip(values) {
                    let (Some(entry), Some(value)) = (table.get(&name), value) else {
                        return Err(RemoteProblem::NotInKeyTable {
                            name,
                            keytable: set.describe(),
                        });
                    };
                    let resolved = entry.resolve(&sender.domain);
                    let key = self.key(&resolved.source, &value, &entry.at).map_err(|e| {
                        RemoteProblem::Key {
                            name: name.clone(),
                            set: set.describe(),
                            error: Arc::new(e),
                        }
                    })?;
                    out.push(RemoteKey {
                        domain: resolved.domain,
                        selector: resolved.selector.to_string(),
                        key,
                        signer,
                    });
                }
                Ok(out)
            }
        }
    }

    /// The key of one KeyTable row, parsed once per distinct row value.
    fn key(
        &self,
        source: &ResolvedKeySource,
        value: &Arc<str>,
        at: &Location,
    ) -> Result<Arc<PrivateKey>, KeyError> {
        if let Some(key) = self
            .parsed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(value)
        {
            return Ok(Arc::clone(key));
        }
        let key = match source {
            ResolvedKeySource::Inline(data) => {
                Arc::new(load_inline_key(data, Some(at.clone()), &self.options)?)
            }
            ResolvedKeySource::File(path) => load_key_file(path, &self.options)?.key,
        };
        let mut parsed = self.parsed.lock().unwrap_or_else(PoisonError::into_inner);
        if parsed.len() >= 10_000 {
            parsed.clear();
        }
        parsed.insert(Arc::clone(value), Arc::clone(&key));
        Ok(key)
    }
}

/// The rows found, as a data set in probe order (each located at the
/// data set's specification).
fn rows(set: &RemoteSet, keys: Vec<String>, values: Vec<Option<Arc<str>>>) -> DataSet {
    let origin = set.at().clone();
    let entries = keys
        .into_iter()
        .zip(values)
        .filter_map(|(key, value)| {
            value.map(|v| DataSetEntry {
                key,
                value: Some(v.to_string()),
                at: origin.clone(),
            })
        })
        .collect();
    DataSet::from_entries(DataSetKind::Remote, origin, entries)
}
