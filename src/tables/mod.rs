//! OpenDKIM's tables, read and matched exactly as OpenDKIM 2.11 does:
//! data sets (`file:`, `refile:`, `csl:`), the KeyTable, the SigningTable,
//! host lists (InternalHosts, ExternalIgnoreList, PeerList) and key sets
//! (DontSignMailTo).
//!
//! Every rule here comes from OpenDKIM's source (`opendkim-db.c`,
//! `opendkim.c`, `util.c`) and the submodules say which function it
//! mirrors; the behaviours that matter for signing decisions were also
//! checked against the opendkim binary (see `tests/fixtures/tables/`).
//! Where OpenDKIM silently ignores what the administrator obviously meant
//! (a network written with host bits set, a `*` in a non-`refile:` table)
//! we either keep OpenDKIM's decision and warn, or, where the design says
//! so, fix it and warn, always naming the file and line.
//!
//! This module only reads files and answers lookups. It must never log
//! (problems are returned as [`TableError`]s and
//! [`Warning`](crate::diagnostics::Warning)s), sign, load key material or
//! know about the milter protocol.

mod dataset;
mod error;
mod hostlist;
mod keyset;
mod keytable;
mod pattern;
mod pattern_index;
pub mod remote;
mod signingtable;
mod suffixes;

pub use dataset::{DataSet, DataSetEntry, DataSetKind, DataSetSpec};
pub use error::TableError;
pub use hostlist::HostList;
pub use keyset::KeySet;
pub use keytable::{
    KeyDomain, KeyEntry, KeySource, KeyTable, PathTemplate, ResolvedKey, ResolvedKeySource,
};
pub use pattern::Pattern;
pub use pattern_index::PatternIndex;
pub use signingtable::{
    SigningEntry, SigningMatch, SigningRule, SigningTable, exact_probes, exact_probes_as_written,
};
pub use suffixes::{dotted_suffixes, parent_domains};
