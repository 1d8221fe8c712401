//! Every way loading a table can fail, each naming the file and line and
//! saying how to fix it.

use std::path::PathBuf;

use thiserror::Error;

use crate::diagnostics::Location;

/// A problem that stops a data set, KeyTable, SigningTable or host list
/// from loading. The `Display` form starts with `file:line:`.
#[derive(Debug, Error)]
pub enum TableError {
    #[error("{at}: empty data set specification; write `file:/path`, `refile:/path` or `csl:a,b`")]
    EmptySpec { at: Location },

    #[error(
        "{at}: data set `{spec}` uses the `{kind}:` type, which dkim-sidecar does not support; \
         export the data to a text file and use `file:/path` (exact keys) or `refile:/path` (wildcards)"
    )]
    UnsupportedType {
        at: Location,
        kind: String,
        spec: String,
    },

    /// A `dsn:` or `ldap:` specification that cannot be used; `spec` has
    /// its password masked.
    #[error("{at}: data set `{spec}`: {reason}")]
    BadRemoteSpec {
        at: Location,
        spec: String,
        reason: String,
    },

    /// A `dsn:` or `ldap:` data set where only a file or list can be used.
    #[error(
        "{at}: `{spec}` is read from a server at message time, which this setting does not \
         support yet; use `file:/path` or `refile:/path`"
    )]
    RemoteNotHere { at: Location, spec: String },

    #[error(
        "{at}: `{path}` is a Berkeley DB file (name ends in `.db`), which dkim-sidecar cannot read; \
         dump it to a text file with one `key value` per line (e.g. `db_dump -p`) and use `file:/path`"
    )]
    BerkeleyDb { at: Location, path: PathBuf },

    #[error(
        "{at}: unknown data set type `{kind}:` in `{spec}`; the types are `file:`, `refile:`, `csl:`, `dsn:` and `ldap:` \
         (a value containing `:` before any `,` is read as `type:rest`)"
    )]
    UnknownType {
        at: Location,
        kind: String,
        spec: String,
    },

    #[error("{at}: cannot read the data set file: {source}; check the path and its permissions")]
    Read {
        at: Location,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{at}: the line is not valid UTF-8 outside its `#` comment; save the file as UTF-8 (or ASCII)"
    )]
    NotUtf8 { at: Location },

    #[error("{at}: `{key}` has no value; a {table} line is `{shape}`")]
    MissingValue {
        at: Location,
        key: String,
        table: &'static str,
        shape: &'static str,
    },

    #[error(
        "{at}: SigningTable entry `{key}` names no key (value starts with `:`); write `{key} keyname[:signer]`"
    )]
    EmptyKeyName { at: Location, key: String },

    #[error(
        "{at}: KeyTable entry `{key}` has an empty or missing {field}; \
         the value must be `domain:selector:/path/to/key` (or `%` as domain for the sender's domain)"
    )]
    KeyTableField {
        at: Location,
        key: String,
        field: &'static str,
    },

    #[error(
        "{at}: SigningTable refers to key `{key}`, which is not in the KeyTable {keytable}; \
         add a KeyTable line `{key} domain:selector:/path/to/key` or fix the name \
         (KeyTable names are case-sensitive)"
    )]
    UnknownKey {
        at: Location,
        key: String,
        keytable: String,
    },

    #[error("{at}: key name `{key}` is already used at {first}; give each key its own name")]
    DuplicateKeyName {
        at: Location,
        key: String,
        first: Location,
    },

    #[error(
        "{at}: the pattern `{pattern}` cannot be used: {reason}; OpenDKIM turns refile patterns into \
         POSIX regular expressions (`*` is any text, `.` and `+` are literal, `?[](){{}}|^$\\` stay \
         regex operators), so keep to letters, digits, `*`, `.`, `+`, `@`, `-` and `_`"
    )]
    Pattern {
        at: Location,
        pattern: String,
        reason: String,
    },
}

impl TableError {
    /// Where the problem is.
    pub fn location(&self) -> &Location {
        match self {
            TableError::EmptySpec { at }
            | TableError::UnsupportedType { at, .. }
            | TableError::BadRemoteSpec { at, .. }
            | TableError::RemoteNotHere { at, .. }
            | TableError::BerkeleyDb { at, .. }
            | TableError::UnknownType { at, .. }
            | TableError::Read { at, .. }
            | TableError::NotUtf8 { at }
            | TableError::MissingValue { at, .. }
            | TableError::EmptyKeyName { at, .. }
            | TableError::KeyTableField { at, .. }
            | TableError::UnknownKey { at, .. }
            | TableError::DuplicateKeyName { at, .. }
            | TableError::Pattern { at, .. } => at,
        }
    }
}
