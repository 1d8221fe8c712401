//! OpenDKIM "data sets": where a table's lines come from and how they are
//! split into keys and values (`opendkim-db.c`, `dkimf_db_open`).
//!
//! A specification is `type:rest` when a `:` comes before any `,`
//! (`file:`, `refile:`, `csl:`, and `dsn:`/`ldap:` whose entries live on
//! a server, see [`super::remote`]; the other database types are
//! recognised and refused). Without a type, a name ending in `.db` is Berkeley DB
//! (refused), one starting with `/` is a file, anything else a
//! comma-separated list.
//!
//! Files are read the way OpenDKIM reads them: everything from the first
//! `#` is a comment, lines are trimmed of C `isspace` characters, blank
//! lines are skipped, the key is the first word and the value is the rest
//! of the line (trimmed). In a `refile:` a line that *starts* with
//! whitespace is skipped entirely (OpenDKIM cuts the pattern at the first
//! whitespace, leaving it empty): we skip it too and warn.
//!
//! This module only reads files; it never logs.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use crate::diagnostics::{Location, Warning};

use super::TableError;
use super::remote::{RemoteSpec, mask_secrets};

/// OpenDKIM reads data set files with `fgets(line, 1024, f)`: a longer line
/// is silently split into several entries.
const OPENDKIM_MAX_LINE: usize = 1023;

/// Database types OpenDKIM knows (in some build) that we do not read.
const UNSUPPORTED_TYPES: &[&str] = &[
    "db", "lua", "memcache", "repute", "socket", "mdb", "erlang", "redis",
];

/// Types read from a server at message time ([`RemoteSpec`]).
const REMOTE_TYPES: &[&str] = &["dsn", "ldap", "ldapi", "ldaps"];

/// How the keys of a data set are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSetKind {
    /// `file:` (or a bare absolute path): exact keys.
    File,
    /// `refile:`: keys are patterns, tried in file order.
    Refile,
    /// `csl:` (or a bare value): comma-separated `key` or `key=value`.
    Csl,
    /// `dsn:` or `ldap:`: exact keys, looked up on a server per message.
    Remote,
}

/// A parsed data set specification, before anything is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSetSpec {
    File(PathBuf),
    Refile(PathBuf),
    Csl(String),
    /// `dsn:` or `ldap:`: read at message time, never loaded whole.
    Remote(RemoteSpec),
}

/// One `key [value]` entry of a data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSetEntry {
    pub key: String,
    pub value: Option<String>,
    /// The file line, or for `csl:` the place the list was written.
    pub at: Location,
}

/// The entries of a data set, in file order.
#[derive(Debug, Clone)]
pub struct DataSet {
    pub kind: DataSetKind,
    /// The file, or for `csl:` the place the list was written.
    pub origin: Location,
    pub entries: Vec<DataSetEntry>,
    warnings: Vec<Warning>,
}

impl DataSetSpec {
    /// Parses a specification as OpenDKIM does. `at` is where it was
    /// written (the configuration line); it locates errors and warnings
    /// and the entries of a `csl:` list.
    pub fn parse(spec: &str, at: &Location) -> Result<(DataSetSpec, Vec<Warning>), TableError> {
        let mut warnings = Vec::new();
        let spec_trimmed = spec.trim();
        if spec_trimmed.is_empty() {
            return Err(TableError::EmptySpec { at: at.clone() });
        }
        let spec = spec_trimmed;
        let colon = spec.find(':');
        let comma = spec.find(',');
        let typed = match (colon, comma) {
            (Some(c), Some(k)) if k < c => None,
            (Some(c), _) => Some(c),
            (None, _) => None,
        };
        let Some(colon) = typed else {
            if spec.ends_with(".db") {
                return Err(TableError::BerkeleyDb {
                    at: at.clone(),
                    path: PathBuf::from(spec),
                });
            }
            if spec.starts_with('/') {
                return Ok((DataSetSpec::File(PathBuf::from(spec)), warnings));
            }
            return Ok((DataSetSpec::Csl(spec.to_string()), warnings));
        };
        let kind = &spec[..colon];
        let rest = &spec[colon + 1..];
        let lower = kind.to_ascii_lowercase();
        let need_path = |rest: &str| -> Result<PathBuf, TableError> {
            if rest.is_empty() {
                Err(TableError::EmptySpec { at: at.clone() })
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        match lower.as_str() {
            "file" => Ok((DataSetSpec::File(need_path(rest)?), warnings)),
            "refile" => Ok((DataSetSpec::Refile(need_path(rest)?), warnings)),
            "csl" => Ok((DataSetSpec::Csl(rest.to_string()), warnings)),
            t if REMOTE_TYPES.contains(&t) => Ok((
                DataSetSpec::Remote(RemoteSpec::parse(kind, rest, at)?),
                warnings,
            )),
            t if UNSUPPORTED_TYPES.contains(&t) => Err(TableError::UnsupportedType {
                at: at.clone(),
                kind: kind.to_string(),
                spec: mask_secrets(spec),
            }),
            _ if first_csl_item_is_ipv6(spec) => {
                warnings.push(Warning::new(
                    Some(at.clone()),
                    format!(
                        "`{spec}` starts with an IPv6 address, so OpenDKIM 2.11 reads `{kind}:` as a \
                         data set type and refuses to start (\"Unknown database type\"); dkim-sidecar \
                         reads it as a comma-separated list. Write `csl:{spec}` (or put an IPv4 entry \
                         first) to keep the file usable by OpenDKIM"
                    ),
                ));
                Ok((DataSetSpec::Csl(spec.to_string()), warnings))
            }
            _ => Err(TableError::UnknownType {
                at: at.clone(),
                kind: kind.to_string(),
                spec: mask_secrets(spec),
            }),
        }
    }

    pub fn kind(&self) -> DataSetKind {
        match self {
            DataSetSpec::File(_) => DataSetKind::File,
            DataSetSpec::Refile(_) => DataSetKind::Refile,
            DataSetSpec::Csl(_) => DataSetKind::Csl,
            DataSetSpec::Remote(_) => DataSetKind::Remote,
        }
    }

    /// Makes a relative file name relative to `base` (OpenDKIM opens it
    /// relative to its working directory, i.e. `BaseDirectory`).
    pub fn resolve_against(self, base: &Path) -> DataSetSpec {
        match self {
            DataSetSpec::File(p) if p.is_relative() => DataSetSpec::File(base.join(p)),
            DataSetSpec::Refile(p) if p.is_relative() => DataSetSpec::Refile(base.join(p)),
            other => other,
        }
    }

    /// Reads the data set. `at` is where the specification was written.
    pub fn load(&self, at: &Location) -> Result<DataSet, TableError> {
        match self {
            DataSetSpec::File(path) => DataSet::read_file(DataSetKind::File, path),
            DataSetSpec::Refile(path) => DataSet::read_file(DataSetKind::Refile, path),
            DataSetSpec::Csl(list) => Ok(DataSet::from_csl(list, at)),
            DataSetSpec::Remote(remote) => Err(TableError::RemoteNotHere {
                at: at.clone(),
                spec: remote.to_string(),
            }),
        }
    }
}

impl DataSet {
    /// Parses `spec` and reads what it names; the specification's own
    /// warnings are kept with the data set's.
    pub fn open(spec: &str, at: &Location) -> Result<DataSet, TableError> {
        let (parsed, spec_warnings) = DataSetSpec::parse(spec, at)?;
        let mut set = parsed.load(at)?;
        let mut warnings = spec_warnings;
        warnings.append(&mut set.warnings);
        set.warnings = warnings;
        Ok(set)
    }

    /// Reads a `file:` or `refile:` data set from disk.
    pub fn read_file(kind: DataSetKind, path: &Path) -> Result<DataSet, TableError> {
        let origin = Location::file(path);
        let bytes = std::fs::read(path).map_err(|source| TableError::Read {
            at: origin.clone(),
            source,
        })?;
        Self::parse_file_bytes(kind, &bytes, origin)
    }

    /// Splits file contents into entries (the file itself already read).
    pub fn parse_file_bytes(
        kind: DataSetKind,
        bytes: &[u8],
        origin: Location,
    ) -> Result<DataSet, TableError> {
        let mut entries = Vec::new();
        let mut warnings = Vec::new();
        let mut lines = bytes.split(|&b| b == b'\n').peekable();
        let mut number: u32 = 0;
        while let Some(raw) = lines.next() {
            if raw.is_empty() && lines.peek().is_none() {
                break;
            }
            number += 1;
            let at = origin.at_line(number);
            if raw.len() > OPENDKIM_MAX_LINE {
                warnings.push(Warning::new(
                    Some(at.clone()),
                    format!(
                        "line is {} bytes long; OpenDKIM reads at most {OPENDKIM_MAX_LINE} bytes per \
                         line and would split it into several entries (dkim-sidecar reads it whole)",
                        raw.len()
                    ),
                ));
            }
            let content = match raw.iter().position(|&b| b == b'#') {
                Some(hash) => &raw[..hash],
                None => raw,
            };
            let Ok(content) = std::str::from_utf8(content) else {
                return Err(TableError::NotUtf8 { at });
            };
            if kind == DataSetKind::Refile
                && content.starts_with(is_c_space)
                && !content.trim_matches(is_c_space).is_empty()
            {
                warnings.push(Warning::new(
                    Some(at),
                    "line starts with whitespace; OpenDKIM ignores such lines in a refile: table \
                     (the pattern ends at the first whitespace, so it is empty), and so does \
                     dkim-sidecar. Remove the leading whitespace to use the entry",
                ));
                continue;
            }
            let line = content.trim_matches(is_c_space);
            if line.is_empty() {
                continue;
            }
            let (key, value) = match line.find(is_c_space) {
                Some(end) => {
                    let value = line[end..].trim_matches(is_c_space);
                    (&line[..end], (!value.is_empty()).then(|| value.to_string()))
                }
                None => (line, None),
            };
            entries.push(DataSetEntry {
                key: key.to_string(),
                value,
                at,
            });
        }
        Ok(DataSet {
            kind,
            origin,
            entries,
            warnings,
        })
    }

    /// A `csl:` list: comma-separated `key` or `key=value`, each trimmed;
    /// empty items are skipped (OpenDKIM uses `strtok`).
    pub fn from_csl(list: &str, at: &Location) -> DataSet {
        let entries = list
            .split(',')
            .filter_map(|item| {
                let (key, value) = match item.find('=') {
                    Some(eq) => (&item[..eq], Some(item[eq + 1..].trim_matches(is_c_space))),
                    None => (item, None),
                };
                let key = key.trim_matches(is_c_space);
                (!key.is_empty()).then(|| DataSetEntry {
                    key: key.to_string(),
                    value: value.filter(|v| !v.is_empty()).map(str::to_string),
                    at: at.clone(),
                })
            })
            .collect();
        DataSet {
            kind: DataSetKind::Csl,
            origin: at.clone(),
            entries,
            warnings: Vec::new(),
        }
    }

    /// A data set made of entries found elsewhere (rows of a server-kept
    /// table).
    pub fn from_entries(
        kind: DataSetKind,
        origin: Location,
        entries: Vec<DataSetEntry>,
    ) -> DataSet {
        DataSet {
            kind,
            origin,
            entries,
            warnings: Vec::new(),
        }
    }

    /// Problems found while reading that did not stop it.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Hands the warnings over (used by the tables built on a data set).
    pub(crate) fn take_warnings(&mut self) -> Vec<Warning> {
        std::mem::take(&mut self.warnings)
    }
}

/// C `isspace` in the C locale.
pub(crate) fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Whether the first comma-separated item looks like an IPv6 host-list
/// entry (`::1`, `!2001:db8::/32`, `[::1]`).
fn first_csl_item_is_ipv6(spec: &str) -> bool {
    let first = spec.split(',').next().unwrap_or("").trim();
    let first = first.strip_prefix('!').unwrap_or(first);
    let first = first.split('/').next().unwrap_or("");
    let first = first
        .strip_prefix('[')
        .and_then(|f| f.strip_suffix(']'))
        .unwrap_or(first);
    first.parse::<Ipv6Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Location {
        Location::new("/etc/opendkim.conf", 7)
    }

    fn spec(s: &str) -> Result<DataSetSpec, TableError> {
        DataSetSpec::parse(s, &at()).map(|(s, _)| s)
    }

    fn parse(kind: DataSetKind, text: &str) -> DataSet {
        DataSet::parse_file_bytes(kind, text.as_bytes(), Location::file("/etc/t")).unwrap()
    }

    #[test]
    fn type_prefix_selects_the_data_set_type() {
        assert_eq!(
            spec("file:/etc/kt").unwrap(),
            DataSetSpec::File("/etc/kt".into())
        );
        assert_eq!(
            spec("refile:/etc/st").unwrap(),
            DataSetSpec::Refile("/etc/st".into())
        );
        assert_eq!(
            spec("REFILE:/etc/st").unwrap(),
            DataSetSpec::Refile("/etc/st".into())
        );
        assert_eq!(spec("csl:a,b").unwrap(), DataSetSpec::Csl("a,b".into()));
    }

    #[test]
    fn without_prefix_absolute_path_is_file_and_anything_else_is_csl() {
        assert_eq!(
            spec("/etc/opendkim/TrustedHosts").unwrap(),
            DataSetSpec::File("/etc/opendkim/TrustedHosts".into())
        );
        assert_eq!(
            spec("127.0.0.1, 10.0.0.0/8").unwrap(),
            DataSetSpec::Csl("127.0.0.1, 10.0.0.0/8".into())
        );
        assert_eq!(
            spec("example.com").unwrap(),
            DataSetSpec::Csl("example.com".into())
        );
    }

    #[test]
    fn colon_after_a_comma_does_not_make_a_type_prefix() {
        assert_eq!(
            spec("127.0.0.1, ::1").unwrap(),
            DataSetSpec::Csl("127.0.0.1, ::1".into())
        );
    }

    #[test]
    fn berkeley_db_file_is_refused_with_a_conversion_hint() {
        let err = spec("/etc/opendkim/keys.db").unwrap_err();
        assert!(matches!(err, TableError::BerkeleyDb { .. }));
        let text = err.to_string();
        assert!(text.starts_with("/etc/opendkim.conf:7: "), "{text}");
        assert!(text.contains("file:/path"), "{text}");
    }

    #[test]
    fn database_types_are_refused_as_unsupported() {
        for s in ["db:/etc/x.db", "lua:/x.lua", "memcache:h", "redis:h"] {
            let err = spec(s).unwrap_err();
            assert!(
                matches!(err, TableError::UnsupportedType { .. }),
                "{s}: {err}"
            );
            assert!(err.to_string().contains("not support"), "{err}");
        }
    }

    #[test]
    fn dsn_and_ldap_specifications_are_remote_data_sets() {
        let Ok(DataSetSpec::Remote(RemoteSpec::Dsn(d))) =
            spec("dsn:mysql://u@h/db/table=t?keycol=k?datacol=d")
        else {
            panic!("not a dsn");
        };
        assert_eq!(d.table, "t");
        assert!(matches!(
            spec("ldap://h/dc=x?attr?sub?(k=$d)"),
            Ok(DataSetSpec::Remote(RemoteSpec::Ldap(_)))
        ));
        assert!(matches!(
            spec("LDAPI://%2Frun%2Fldapi/dc=x?attr"),
            Ok(DataSetSpec::Remote(RemoteSpec::Ldap(_)))
        ));
    }

    #[test]
    fn a_remote_data_set_cannot_be_loaded_whole() {
        let (s, _) =
            DataSetSpec::parse("dsn:pgsql://u:pw9@h/db/table=t?keycol=k?datacol=d", &at()).unwrap();
        let err = s.load(&at()).unwrap_err();
        assert!(matches!(err, TableError::RemoteNotHere { .. }), "{err}");
        assert!(!err.to_string().contains("pw9"), "{err}");
    }

    #[test]
    fn unknown_type_prefix_is_an_error() {
        assert!(matches!(
            spec("bogus:/x").unwrap_err(),
            TableError::UnknownType { .. }
        ));
    }

    #[test]
    fn ipv6_first_csl_is_read_as_csl_with_a_warning() {
        // OpenDKIM refuses `InternalHosts ::1, 127.0.0.1` ("Unknown database
        // type", confirmed against the binary); we accept it and warn.
        let (s, w) = DataSetSpec::parse("::1, 127.0.0.1", &at()).unwrap();
        assert_eq!(s, DataSetSpec::Csl("::1, 127.0.0.1".into()));
        assert_eq!(w.len(), 1);
        assert!(w[0].to_string().contains("csl:"), "{}", w[0]);
        assert!(spec("2001:db8::/32").is_ok());
    }

    #[test]
    fn file_lines_split_into_first_word_and_trimmed_rest() {
        let set = parse(
            DataSetKind::File,
            "# comment\n\n  key1   value one  \nkey2\tv2 # trailing comment\nkey3\n\r\nkey4 v4\r\n",
        );
        let got: Vec<_> = set
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_deref(), e.at.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("key1", Some("value one"), 3),
                ("key2", Some("v2"), 4),
                ("key3", None, 5),
                ("key4", Some("v4"), 7),
            ]
        );
    }

    #[test]
    fn refile_line_starting_with_whitespace_is_skipped_with_warning() {
        // Confirmed against opendkim: "  lead@example.com k1" never signs.
        let set = parse(
            DataSetKind::Refile,
            "  lead@example.com k1\n*@example.com k2\n",
        );
        assert_eq!(set.entries.len(), 1);
        assert_eq!(set.entries[0].key, "*@example.com");
        assert_eq!(set.warnings().len(), 1);
        assert_eq!(set.warnings()[0].at.as_ref().unwrap().line, 1);
    }

    #[test]
    fn long_line_gets_a_warning() {
        let text = format!("k {}\n", "a".repeat(1100));
        let set = parse(DataSetKind::File, &text);
        assert_eq!(set.entries[0].value.as_ref().unwrap().len(), 1100);
        assert_eq!(set.warnings().len(), 1);
    }

    #[test]
    fn invalid_utf8_in_a_comment_is_fine_but_not_in_an_entry() {
        let ok =
            DataSet::parse_file_bytes(DataSetKind::File, b"k v # caf\xe9\n", Location::file("/t"))
                .unwrap();
        assert_eq!(ok.entries.len(), 1);
        let err =
            DataSet::parse_file_bytes(DataSetKind::File, b"k caf\xe9\n", Location::file("/t"))
                .unwrap_err();
        assert!(err.to_string().starts_with("/t:1: "), "{err}");
    }

    #[test]
    fn csl_items_are_trimmed_and_empty_items_skipped() {
        let set = DataSet::from_csl(" a , b=1 ,,c= 2 ,", &at());
        let got: Vec<_> = set
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(got, vec![("a", None), ("b", Some("1")), ("c", Some("2"))]);
        assert_eq!(set.entries[0].at, at());
    }

    #[test]
    fn unreadable_file_names_the_file() {
        let err = DataSet::open("file:/nonexistent/dkim/keytable", &at()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/dkim/keytable: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn relative_paths_resolve_against_a_base_directory() {
        let s = spec("refile:tables/st")
            .unwrap()
            .resolve_against(Path::new("/etc/opendkim"));
        assert_eq!(s, DataSetSpec::Refile("/etc/opendkim/tables/st".into()));
    }
}
