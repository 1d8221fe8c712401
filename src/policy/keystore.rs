//! The private keys a KeyTable names, loaded once per configuration.
//!
//! Keys whose location does not depend on the sender are loaded and checked
//! when the configuration loads. A key that fails there is a [`Fault`], not
//! an error: it is reported once with its file named, and only mail that
//! needs it is refused; every other key signs. A key file name with `%`
//! depends on the sender's domain, so it is loaded the first time a message
//! needs it. Either way a key loaded late is kept for the life of this
//! configuration and a failure is not remembered, so a key fixed or added
//! later is found without a reload.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::diagnostics::{Fault, Location, Warning};
use crate::keys::{KeyError, LoadOptions, PrivateKey, load_inline_key, load_key_file};
use crate::tables::{KeySource, KeyTable, ResolvedKey, ResolvedKeySource};

/// A key that failed to load, with the KeyTable line (or configuration
/// entry) that names it.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {source}")]
pub struct KeyStoreError {
    pub at: Location,
    #[source]
    pub source: KeyError,
}

/// Loaded keys for one KeyTable.
#[derive(Debug)]
pub struct KeyStore {
    options: LoadOptions,
    /// Entries whose key does not depend on the sender, by KeyTable name.
    fixed: HashMap<String, Arc<PrivateKey>>,
    /// `%` key files loaded so far, by resolved path.
    by_path: Mutex<HashMap<PathBuf, Arc<PrivateKey>>>,
}

impl KeyStore {
    /// Load every key whose location is known without a sender. Every
    /// key that fails comes back as a fault naming the entry; warnings (an
    /// exposed key file with RequireSafeKeys off) name the entry too.
    pub fn load(table: &KeyTable, options: LoadOptions) -> (KeyStore, Vec<Warning>, Vec<Fault>) {
        let mut fixed = HashMap::new();
        let mut warnings = Vec::new();
        let mut faults = Vec::new();
        for entry in table.entries() {
            if fixed.contains_key(&entry.name) {
                continue;
            }
            let loaded = match &entry.source {
                KeySource::File(template) if template.is_template() => continue,
                KeySource::File(template) => load_key_file(&template.resolve(""), &options),
                KeySource::RelativeFile(path) => load_key_file(path, &options),
                KeySource::Inline(data) => load_inline_key(data, Some(entry.at.clone()), &options)
                    .map(|key| crate::keys::LoadedKey {
                        key: Arc::new(key),
                        warnings: Vec::new(),
                    }),
            };
            match loaded {
                Ok(loaded) => {
                    warnings.extend(loaded.warnings.into_iter().map(|mut w| {
                        w.at.get_or_insert_with(|| entry.at.clone());
                        w
                    }));
                    fixed.insert(entry.name.clone(), loaded.key);
                }
                Err(source) => {
                    let error = KeyStoreError {
                        at: entry.at.clone(),
                        source,
                    };
                    faults.push(Fault::from_error(entry.at.clone(), &error));
                }
            }
        }
        let store = KeyStore {
            options,
            fixed,
            by_path: Mutex::new(HashMap::new()),
        };
        (store, warnings, faults)
    }

    /// The key for a KeyTable entry resolved for one sender. An entry whose
    /// key failed at load time is read again here, so the message gets that
    /// key's error, or the key once it has been fixed.
    pub fn key_for(&self, resolved: &ResolvedKey<'_>) -> Result<Arc<PrivateKey>, KeyError> {
        if let Some(key) = self.fixed.get(&resolved.entry.name) {
            return Ok(Arc::clone(key));
        }
        match &resolved.source {
            ResolvedKeySource::Inline(data) => Ok(Arc::new(load_inline_key(
                data,
                Some(resolved.entry.at.clone()),
                &self.options,
            )?)),
            ResolvedKeySource::File(path) => {
                if let Some(key) = self.cached(path) {
                    return Ok(key);
                }
                let loaded = load_key_file(path, &self.options)?;
                let mut cache = self
                    .by_path
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Ok(Arc::clone(cache.entry(path.clone()).or_insert(loaded.key)))
            }
        }
    }

    fn cached(&self, path: &PathBuf) -> Option<Arc<PrivateKey>> {
        self.by_path
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(path)
            .cloned()
    }

    /// The key loaded at start-up for KeyTable name `name`; `None` for a
    /// `%` key file, which is loaded when a message first needs it.
    pub fn loaded_key(&self, name: &str) -> Option<&Arc<PrivateKey>> {
        self.fixed.get(name)
    }

    /// How many keys are loaded now (fixed plus `%` keys seen so far).
    pub fn loaded(&self) -> usize {
        self.fixed.len() + self.by_path.lock().map(|m| m.len()).unwrap_or(0)
    }
}
