//! Data sets kept on a server (`dsn:`, `ldap:`): the KeyTable and
//! SigningTable turned into a [`RemoteSigning`] when at least one of them
//! names a server (the other one, if it is a file, is loaded and checked
//! as usual), and the other data sets the decision asks per key
//! (InternalHosts, PeerList, MTA, ExemptDomains, ...) turned into a
//! [`RemoteSet`] each. No connection is made here; nothing is logged.

use std::path::Path;
use std::sync::Arc;

use crate::diagnostics::{Location, Warning};
use crate::keys::LoadOptions;
use crate::policy::{KeyStore, RemoteSigning, TableSource};
use crate::remote::{CacheSettings, ConnectSettings, RemoteSet};
use crate::tables::{DataSetSpec, KeyTable, SigningTable};

use super::{ConfigError, data_sets};

/// `Ok(None)` when both tables are files (the caller loads them as
/// always).
pub(crate) fn remote_signing(
    key_table: (&str, &Location),
    signing_table: (&str, &Location),
    base: &Path,
    options: &LoadOptions,
    warnings: &mut Vec<Warning>,
    cache: CacheSettings,
    connect: ConnectSettings,
) -> Result<Option<RemoteSigning>, Vec<ConfigError>> {
    let (kt_spec, kt_warnings) =
        DataSetSpec::parse(key_table.0, key_table.1).map_err(|e| vec![e.into()])?;
    let (st_spec, st_warnings) =
        DataSetSpec::parse(signing_table.0, signing_table.1).map_err(|e| vec![e.into()])?;
    if !matches!(kt_spec, DataSetSpec::Remote(_)) && !matches!(st_spec, DataSetSpec::Remote(_)) {
        return Ok(None);
    }
    warnings.extend(kt_warnings);
    warnings.extend(st_warnings);
    let mut errors = Vec::new();
    let signing = match st_spec {
        DataSetSpec::Remote(spec) => Some(TableSource::Remote(Arc::new(RemoteSet::new(
            "SigningTable",
            spec,
            signing_table.1.clone(),
            base,
            cache,
            connect.clone(),
        )))),
        _ => match data_sets::open(signing_table.0, signing_table.1, base)
            .map_err(ConfigError::from)
            .and_then(|(set, w)| {
                warnings.extend(w);
                SigningTable::from_data_set(set).map_err(ConfigError::from)
            }) {
            Ok(table) => Some(TableSource::Local(table)),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    let keys = match kt_spec {
        DataSetSpec::Remote(spec) => Some(TableSource::Remote(Arc::new(RemoteSet::new(
            "KeyTable",
            spec,
            key_table.1.clone(),
            base,
            cache,
            connect,
        )))),
        _ => match data_sets::open(key_table.0, key_table.1, base)
            .map_err(ConfigError::from)
            .and_then(|(set, w)| {
                warnings.extend(w);
                KeyTable::from_data_set(set).map_err(ConfigError::from)
            }) {
            Ok(mut table) => {
                table.resolve_relative_files(|p| data_sets::resolve(base, p));
                let (store, w, faults) = KeyStore::load(&table, options.clone());
                warnings.extend(w);
                // A key that cannot load holds only its own mail (the store
                // answers for it at message time); here it is reported as a
                // warning, each line already naming its place and fix.
                warnings.extend(faults.into_iter().map(|f| Warning::new(None, f.message)));
                Some(TableSource::Local((table, store)))
            }
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    match (signing, keys) {
        (Some(signing), Some(keys)) if errors.is_empty() => {
            Ok(Some(RemoteSigning::new(signing, keys, options.clone())))
        }
        _ => Err(errors),
    }
}

/// A data set besides the two tables, when `spec` names a server:
/// `Ok(None)` when it does not (or does not parse: the caller reads it as a
/// file or list and reports that). `role` is the option's name, for logs
/// and `check-config`. No connection is made here.
pub(crate) fn server_set(
    role: &'static str,
    spec: &str,
    at: &Location,
    base: &Path,
    cache: CacheSettings,
    connect: ConnectSettings,
) -> Result<Option<Arc<RemoteSet>>, ConfigError> {
    let Ok((DataSetSpec::Remote(remote), _)) = DataSetSpec::parse(spec, at) else {
        return Ok(None);
    };
    Ok(Some(Arc::new(RemoteSet::new(
        role,
        remote,
        at.clone(),
        base,
        cache,
        connect,
    ))))
}

/// The keys of a set OpenDKIM reads whole at start-up (`dkimf_db_mkarray`:
/// SignHeaders, OmitHeaders, OversignHeaders, SenderHeaders) when `spec`
/// names a server: `Ok(None)` when it does not. The server is asked now,
/// once (on a thread of its own, so that this works inside or outside an
/// async runtime), within the connect and query timeouts; a set that
/// cannot be read refuses the configuration, as in OpenDKIM.
pub(crate) fn read_whole(
    name: &'static str,
    spec: &str,
    at: &Location,
    base: &Path,
    connect: ConnectSettings,
) -> Result<Option<Vec<String>>, ConfigError> {
    let Ok((DataSetSpec::Remote(remote), _)) = DataSetSpec::parse(spec, at) else {
        return Ok(None);
    };
    let set = RemoteSet::new(
        name,
        remote,
        at.clone(),
        base,
        CacheSettings::default(),
        connect,
    );
    let answer = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| crate::remote::BackendError::Connect(e.to_string()))
                    .map(|runtime| runtime.block_on(set.keys()))
            })
            .join()
    });
    match answer {
        Ok(Ok(Some(Ok(keys)))) => Ok(Some(keys)),
        Ok(Ok(None)) => Err(ConfigError::WholeSetOnLdap {
            at: at.clone(),
            name: name.to_string(),
        }),
        Ok(Ok(Some(Err(error))) | Err(error)) => Err(ConfigError::WholeSetUnreadable {
            at: at.clone(),
            name: name.to_string(),
            set: set.describe(),
            error,
        }),
        Err(_) => Err(ConfigError::WholeSetUnreadable {
            at: at.clone(),
            name: name.to_string(),
            set: set.describe(),
            error: crate::remote::BackendError::Query("the lookup failed".to_string()),
        }),
    }
}
