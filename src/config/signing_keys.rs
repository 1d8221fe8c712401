//! Loading the keys a configuration signs with, for both front doors:
//! a KeyTable with its SigningTable (read from OpenDKIM files or built from
//! native rules), or OpenDKIM's single Domain/KeyFile/Selector key.
//!
//! Every problem names the configuration line or table entry that caused
//! it, and every independent problem is reported. A problem confined to
//! some keys (a SigningTable entry naming a key the KeyTable lacks, a
//! malformed KeyTable line, a key that fails to load) is a [`Fault`] kept
//! with the keys, so the rest still sign; only what makes the whole
//! configuration unusable is a [`ConfigError`]. This module never logs;
//! warnings go back to the caller.

use std::path::Path;

use crate::diagnostics::{Fault, Location, Warning};
use crate::keys::{LoadOptions, load_key_file};
use crate::policy::{DomainKey, DomainSet, KeyStore, SigningTables, TableSource};
use crate::tables::{KeyTable, SigningTable, TableError};

use super::ConfigError;

/// Checks that every key the SigningTable names is in the KeyTable, then
/// loads every key whose file does not depend on the sender. Problems with
/// single keys are faults of the returned tables.
pub(crate) fn signing_tables(
    key_table: KeyTable,
    signing_table: SigningTable,
    options: &LoadOptions,
    warnings: &mut Vec<Warning>,
) -> SigningTables {
    warnings.extend(key_table.warnings().iter().cloned());
    warnings.extend(signing_table.warnings().iter().cloned());
    let mut faults = key_table.faults();
    faults.extend(
        signing_table
            .check_keys(&key_table)
            .into_iter()
            // A malformed line of that name is already a fault of its own.
            .filter(|error| {
                !matches!(error, TableError::UnknownKey { key, .. }
                    if key_table.rejected(key).is_some())
            })
            .map(|error| Fault::from_error(error.location().clone(), &error)),
    );
    let (keys, key_warnings, key_faults) = KeyStore::load(&key_table, options.clone());
    warnings.extend(key_warnings);
    faults.extend(key_faults);
    SigningTables {
        key_table,
        signing_table,
        keys,
        faults,
    }
}

/// Loads the one key that signs for `domains` (OpenDKIM's KeyFile);
/// `at` is where the key file was named. A key that fails to load is the
/// fault of the returned entry: mail for `domains` is refused, the rest
/// passes as it would.
pub(crate) fn domain_key(
    domains: TableSource<DomainSet>,
    selector: String,
    key_file: &Path,
    at: &Location,
    options: &LoadOptions,
    warnings: &mut Vec<Warning>,
) -> DomainKey {
    let key = match load_key_file(key_file, options) {
        Ok(loaded) => {
            warnings.extend(loaded.warnings.into_iter().map(|mut w| {
                w.at.get_or_insert_with(|| at.clone());
                w
            }));
            Ok(loaded.key)
        }
        Err(source) => {
            let error = ConfigError::Key {
                at: at.clone(),
                source,
            };
            Err(Fault::from_error(at.clone(), &error))
        }
    };
    DomainKey {
        domains,
        selector,
        key,
        key_file: key_file.to_path_buf(),
    }
}
