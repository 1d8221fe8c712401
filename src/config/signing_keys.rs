//! Loading the keys a configuration signs with, for both front doors:
//! a KeyTable with its SigningTable (read from OpenDKIM files or built from
//! native rules), or OpenDKIM's single Domain/KeyFile/Selector key.
//!
//! Every problem names the configuration line or table entry that caused
//! it, and every independent problem is reported: every SigningTable entry
//! naming a missing key, every key that fails to load. This module never
//! logs; warnings go back to the caller.

use std::path::Path;

use crate::diagnostics::{Location, Warning};
use crate::keys::{LoadOptions, load_key_file};
use crate::policy::{DomainKey, DomainSet, KeyStore, SigningTables};
use crate::tables::{KeyTable, SigningTable};

use super::ConfigError;

/// Checks that every key the SigningTable names is in the KeyTable, then
/// loads every key whose file does not depend on the sender.
pub(crate) fn signing_tables(
    key_table: KeyTable,
    signing_table: SigningTable,
    options: &LoadOptions,
    warnings: &mut Vec<Warning>,
) -> Result<SigningTables, Vec<ConfigError>> {
    warnings.extend(key_table.warnings().iter().cloned());
    warnings.extend(signing_table.warnings().iter().cloned());
    let mut errors: Vec<ConfigError> = signing_table
        .check_keys(&key_table)
        .into_iter()
        .map(ConfigError::Table)
        .collect();
    match KeyStore::load(&key_table, options.clone()) {
        Ok((keys, key_warnings)) => {
            warnings.extend(key_warnings);
            if errors.is_empty() {
                return Ok(SigningTables {
                    key_table,
                    signing_table,
                    keys,
                });
            }
        }
        Err(key_errors) => errors.extend(key_errors.into_iter().map(ConfigError::from)),
    }
    Err(errors)
}

/// Loads the one key that signs for `domains` (OpenDKIM's KeyFile);
/// `at` is where the key file was named.
pub(crate) fn domain_key(
    domains: DomainSet,
    selector: String,
    key_file: &Path,
    at: &Location,
    options: &LoadOptions,
    warnings: &mut Vec<Warning>,
) -> Result<DomainKey, ConfigError> {
    let loaded = load_key_file(key_file, options).map_err(|source| ConfigError::Key {
        at: at.clone(),
        source,
    })?;
    warnings.extend(loaded.warnings.into_iter().map(|mut w| {
        w.at.get_or_insert_with(|| at.clone());
        w
    }));
    Ok(DomainKey {
        domains,
        selector,
        key: loaded.key,
        key_file: key_file.to_path_buf(),
    })
}
