//! The KeyTable: key name → `domain:selector:key`.
//!
//! Rules, from OpenDKIM's `dkimf_add_signrequest`, `dkimf_db_datasplit`,
//! `dkimf_reptoken` and `dkimf_loadkey`:
//! - the value is split at the first two `:`; the key part is everything
//!   after the second `:` (so it may itself contain `:`); all three parts
//!   must be non-empty;
//! - a domain of exactly `%` means the sender's domain (lowercased);
//! - a key part starting with `/` is a file name in which every `%` is
//!   replaced by the signing domain; one starting with `./` or `../` is a
//!   file name used as is (relative to the working directory); anything
//!   else is the key itself, written inline;
//! - names are matched case-sensitively (the KeyTable is opened without
//!   `DKIMF_DB_FLAG_ICASE`); with duplicate names the first line wins;
//! - a malformed line does not stop the table from loading: it becomes a
//!   [`Fault`], its name is remembered as rejected, and only mail that
//!   needs that key is refused (OpenDKIM tempfails it when it fails to
//!   split the value at signing time).
//!
//! This module only describes where a key is; reading and checking key
//! material belongs to `keys`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::diagnostics::{Fault, Location, Warning};

use super::TableError;
use super::dataset::{DataSet, DataSetKind};
use super::pattern::Pattern;

/// The `d=` of a KeyTable entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyDomain {
    /// `%`: the sender's domain.
    Sender,
    /// A fixed domain, as written.
    Fixed(String),
}

/// A key file name in which every `%` stands for the signing domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate(String);

impl PathTemplate {
    /// A key file name, absolute, with `%` standing for the signing domain.
    pub fn new(name: impl Into<String>) -> Self {
        PathTemplate(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the name contains `%`.
    pub fn is_template(&self) -> bool {
        self.0.contains('%')
    }

    /// The file name for signing domain `domain`.
    pub fn resolve(&self, domain: &str) -> PathBuf {
        PathBuf::from(self.0.replace('%', domain))
    }
}

/// Where the private key of a KeyTable entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An absolute file name (`%` = the signing domain).
    File(PathTemplate),
    /// A `./` or `../` file name, relative to the working directory
    /// (OpenDKIM's `BaseDirectory`); OpenDKIM does not substitute `%` here.
    RelativeFile(PathBuf),
    /// The key itself, written in the table (PEM body or base64 DER).
    Inline(String),
}

/// One KeyTable line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub name: String,
    pub domain: KeyDomain,
    pub selector: String,
    pub source: KeySource,
    pub at: Location,
}

/// A KeyTable entry made concrete for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKey<'a> {
    /// `d=`.
    pub domain: String,
    /// `s=`.
    pub selector: &'a str,
    pub source: ResolvedKeySource<'a>,
    pub entry: &'a KeyEntry,
}

/// Where to read the key for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedKeySource<'a> {
    File(PathBuf),
    Inline(&'a str),
}

impl KeyEntry {
    /// The domain, selector and key file for a message whose sender's
    /// domain is `sender_domain` (compared and substituted in lowercase,
    /// as OpenDKIM lowercases it).
    pub fn resolve(&self, sender_domain: &str) -> ResolvedKey<'_> {
        let domain = match &self.domain {
            KeyDomain::Sender => sender_domain.to_ascii_lowercase(),
            KeyDomain::Fixed(d) => d.clone(),
        };
        let source = match &self.source {
            KeySource::File(t) => ResolvedKeySource::File(t.resolve(&domain)),
            KeySource::RelativeFile(p) => ResolvedKeySource::File(p.clone()),
            KeySource::Inline(k) => ResolvedKeySource::Inline(k),
        };
        ResolvedKey {
            domain,
            selector: &self.selector,
            source,
            entry: self,
        }
    }
}

/// A loaded KeyTable.
#[derive(Debug, Clone)]
pub struct KeyTable {
    origin: Location,
    entries: Vec<KeyEntry>,
    lookup: KeyLookup,
    warnings: Vec<Warning>,
    /// Malformed lines, by name (the first one for a name), each with why.
    rejected: HashMap<String, Fault>,
}

#[derive(Debug, Clone)]
enum KeyLookup {
    /// `file:`/`csl:`: exact, case-sensitive, first line wins.
    Exact(HashMap<String, usize>),
    /// `refile:`: case-sensitive patterns in file order.
    Patterns(Vec<Pattern>),
}

impl KeyTable {
    /// Parses the specification `spec` (written at `at`) and loads the table.
    pub fn open(spec: &str, at: &Location) -> Result<KeyTable, TableError> {
        Self::from_data_set(DataSet::open(spec, at)?)
    }

    /// Builds the table from data already read.
    pub fn from_data_set(mut set: DataSet) -> Result<KeyTable, TableError> {
        let mut warnings = set.take_warnings();
        let mut entries = Vec::with_capacity(set.entries.len());
        let mut rejected = HashMap::new();
        for e in set.entries {
            let name = e.key.clone();
            let at = e.at.clone();
            match parse_entry(e.key, e.value, e.at, &mut warnings) {
                Ok(entry) => entries.push(entry),
                Err(error) => {
                    rejected
                        .entry(name)
                        .or_insert_with(|| Fault::from_error(at, &error));
                }
            }
        }
        let lookup = if set.kind == DataSetKind::Refile {
            let mut patterns = Vec::with_capacity(entries.len());
            for e in &entries {
                patterns.push(Pattern::compile(&e.name, false).map_err(|reason| {
                    TableError::Pattern {
                        at: e.at.clone(),
                        pattern: e.name.clone(),
                        reason,
                    }
                })?);
            }
            KeyLookup::Patterns(patterns)
        } else {
            let mut map = HashMap::with_capacity(entries.len());
            for (i, e) in entries.iter().enumerate() {
                if let Some(&first) = map.get(&e.name) {
                    let first: &KeyEntry = &entries[first];
                    warnings.push(Warning::new(
                        Some(e.at.clone()),
                        format!(
                            "duplicate KeyTable name `{}`; the first one ({}) is used and this line is \
                             ignored, as in OpenDKIM",
                            e.name, first.at
                        ),
                    ));
                } else {
                    map.insert(e.name.clone(), i);
                }
            }
            KeyLookup::Exact(map)
        };
        Ok(KeyTable {
            origin: set.origin,
            entries,
            lookup,
            warnings,
            rejected,
        })
    }

    /// Builds a table from entries written elsewhere (a native
    /// configuration's `[[key]]` tables): exact, case-sensitive names, each
    /// name at most once. `origin` is where they were written.
    pub fn from_entries(entries: Vec<KeyEntry>, origin: Location) -> Result<KeyTable, TableError> {
        let mut map: HashMap<String, usize> = HashMap::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            if let Some(&first) = map.get(&e.name) {
                return Err(TableError::DuplicateKeyName {
                    at: e.at.clone(),
                    key: e.name.clone(),
                    first: entries[first].at.clone(),
                });
            }
            map.insert(e.name.clone(), i);
        }
        Ok(KeyTable {
            origin,
            entries,
            lookup: KeyLookup::Exact(map),
            warnings: Vec::new(),
            rejected: HashMap::new(),
        })
    }

    /// Replaces every `./` and `../` key file name with what `resolve`
    /// makes of it, e.g. the name relative to OpenDKIM's BaseDirectory
    /// (which it `chdir`s to before loading keys) instead of the working
    /// directory.
    pub fn resolve_relative_files(&mut self, resolve: impl Fn(&Path) -> PathBuf) {
        for entry in &mut self.entries {
            if let KeySource::RelativeFile(path) = &mut entry.source {
                *path = resolve(path);
            }
        }
    }

    /// The entry for key name `name` (case-sensitive).
    pub fn get(&self, name: &str) -> Option<&KeyEntry> {
        match &self.lookup {
            KeyLookup::Exact(map) => map.get(name).map(|&i| &self.entries[i]),
            KeyLookup::Patterns(patterns) => patterns
                .iter()
                .position(|p| p.matches(name.as_bytes()))
                .map(|i| &self.entries[i]),
        }
    }

    /// Why the line for key name `name` was rejected, when it was malformed
    /// and no well-formed line of that name comes first.
    pub fn rejected(&self, name: &str) -> Option<&Fault> {
        if self.get(name).is_some() {
            return None;
        }
        self.rejected.get(name)
    }

    /// Every malformed line, in file order.
    pub fn faults(&self) -> Vec<Fault> {
        let mut faults: Vec<Fault> = self.rejected.values().cloned().collect();
        faults.sort_by_key(|f| f.at.line);
        faults
    }

    /// All entries in file order.
    pub fn entries(&self) -> &[KeyEntry] {
        &self.entries
    }

    /// The file (or configuration line) the table came from.
    pub fn origin(&self) -> &Location {
        &self.origin
    }

    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }
}

fn parse_entry(
    name: String,
    value: Option<String>,
    at: Location,
    warnings: &mut Vec<Warning>,
) -> Result<KeyEntry, TableError> {
    let Some(value) = value else {
        return Err(TableError::MissingValue {
            at,
            key: name,
            table: "KeyTable",
            shape: "keyname domain:selector:/path/to/key",
        });
    };
    let mut parts = value.splitn(3, ':');
    let domain = parts.next().unwrap_or("");
    let selector = parts.next().unwrap_or("");
    let key = parts.next().unwrap_or("");
    let field = if domain.is_empty() {
        Some("domain")
    } else if selector.is_empty() {
        Some("selector")
    } else if key.is_empty() {
        Some("key (file name or inline key)")
    } else {
        None
    };
    if let Some(field) = field {
        return Err(TableError::KeyTableField {
            at,
            key: name,
            field,
        });
    }
    let domain = if domain == "%" {
        KeyDomain::Sender
    } else {
        KeyDomain::Fixed(domain.to_string())
    };
    let source = if key.starts_with('/') {
        KeySource::File(PathTemplate(key.to_string()))
    } else if key.starts_with("./") || key.starts_with("../") {
        if key.contains('%') {
            warnings.push(Warning::new(
                Some(at.clone()),
                format!(
                    "key file `{key}` is relative, so `%` is not replaced by the domain (OpenDKIM only \
                     substitutes in absolute paths); use an absolute path"
                ),
            ));
        }
        KeySource::RelativeFile(PathBuf::from(key))
    } else {
        if looks_like_file_name(key) {
            warnings.push(Warning::new(
                Some(at.clone()),
                format!(
                    "`{key}` does not start with `/`, `./` or `../`, so OpenDKIM (and dkim-sidecar) \
                     read it as the key itself, not as a file name; write the full path \
                     (e.g. `/etc/opendkim/keys/...`) or `./{key}`"
                ),
            ));
        }
        KeySource::Inline(key.to_string())
    };
    Ok(KeyEntry {
        name,
        domain,
        selector: selector.to_string(),
        source,
        at,
    })
}

/// Inline keys are base64 DER (or PEM); a value containing `.`, `%` or `~`
/// is almost certainly a relative file name.
fn looks_like_file_name(key: &str) -> bool {
    !key.starts_with("-----") && key.contains(['.', '%', '~'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> KeyTable {
        try_table(text).unwrap()
    }

    fn try_table(text: &str) -> Result<KeyTable, TableError> {
        let set = DataSet::parse_file_bytes(
            DataSetKind::File,
            text.as_bytes(),
            Location::file("/etc/kt"),
        )?;
        KeyTable::from_data_set(set)
    }

    #[test]
    fn keytable_line_gives_domain_selector_and_key_file() {
        let kt = table(
            "default._domainkey.example.com example.com:default:/etc/opendkim/keys/example.com/default.private\n",
        );
        let e = kt.get("default._domainkey.example.com").unwrap();
        assert_eq!(e.domain, KeyDomain::Fixed("example.com".into()));
        assert_eq!(e.selector, "default");
        assert_eq!(
            e.source,
            KeySource::File(PathTemplate(
                "/etc/opendkim/keys/example.com/default.private".into()
            ))
        );
        assert_eq!(e.at.to_string(), "/etc/kt:1");
    }

    #[test]
    fn percent_domain_is_the_sender_domain_and_percent_in_path_is_the_domain() {
        let kt = table("k %:mail:/etc/keys/%/mail.private\n");
        let r = kt.get("k").unwrap().resolve("Example.ORG");
        assert_eq!(r.domain, "example.org");
        assert_eq!(r.selector, "mail");
        assert_eq!(
            r.source,
            ResolvedKeySource::File("/etc/keys/example.org/mail.private".into())
        );
    }

    #[test]
    fn percent_in_path_uses_the_fixed_domain_when_domain_is_not_percent() {
        let kt = table("k example.com:mail:/etc/keys/%.private\n");
        let r = kt.get("k").unwrap().resolve("other.net");
        assert_eq!(r.domain, "example.com");
        assert_eq!(
            r.source,
            ResolvedKeySource::File("/etc/keys/example.com.private".into())
        );
    }

    #[test]
    fn key_part_keeps_further_colons() {
        let kt = table("k example.com:sel:/keys/a:b.private\n");
        assert_eq!(
            kt.get("k").unwrap().source,
            KeySource::File(PathTemplate("/keys/a:b.private".into()))
        );
    }

    #[test]
    fn inline_key_is_not_a_path() {
        let kt = table("k example.com:sel:MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n");
        assert_eq!(
            kt.get("k").unwrap().source,
            KeySource::Inline("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC".into())
        );
        assert!(kt.warnings().is_empty());
    }

    #[test]
    fn relative_key_path_without_dot_slash_is_inline_and_warned() {
        let kt = table("k example.com:sel:keys/example.private\n");
        assert!(matches!(kt.get("k").unwrap().source, KeySource::Inline(_)));
        assert_eq!(kt.warnings().len(), 1);
        assert!(kt.warnings()[0].to_string().starts_with("/etc/kt:1: "));
    }

    #[test]
    fn dot_slash_path_is_a_relative_file_without_substitution() {
        let kt = table("k example.com:sel:./keys/%.private\n");
        assert_eq!(
            kt.get("k").unwrap().source,
            KeySource::RelativeFile("./keys/%.private".into())
        );
        assert_eq!(kt.warnings().len(), 1);
    }

    #[test]
    fn a_malformed_line_is_rejected_alone_and_named_with_its_field() {
        for (text, field) in [
            ("k example.com:sel\n", "key"),
            ("k example.com\n", "selector"),
            ("k :sel:/x\n", "domain"),
            ("k example.com::/x\n", "selector"),
        ] {
            let kt = table(&format!("good example.org:s:/k\n{text}"));
            assert!(kt.get("good").is_some(), "{text}: the good line is kept");
            assert!(kt.get("k").is_none(), "{text}");
            let fault = kt.rejected("k").expect("the malformed line is remembered");
            let s = fault.to_string();
            assert!(s.starts_with("/etc/kt:2: "), "{s}");
            assert!(s.contains(field), "{s}");
            assert_eq!(kt.faults(), vec![fault.clone()]);
        }
        let kt = table("\nk\n");
        assert!(
            kt.rejected("k")
                .unwrap()
                .to_string()
                .starts_with("/etc/kt:2: ")
        );
    }

    #[test]
    fn a_good_line_before_a_malformed_one_of_the_same_name_wins() {
        let kt = table("k example.org:s:/k\nk example.org\n");
        assert!(kt.get("k").is_some());
        assert!(kt.rejected("k").is_none());
    }

    #[test]
    fn names_are_case_sensitive_and_first_duplicate_wins() {
        let kt = table("k a.com:s1:/a\nK b.com:s2:/b\nk c.com:s3:/c\n");
        assert_eq!(kt.get("k").unwrap().selector, "s1");
        assert_eq!(kt.get("K").unwrap().selector, "s2");
        assert!(kt.get("x").is_none());
        assert_eq!(kt.warnings().len(), 1);
        assert!(kt.warnings()[0].to_string().starts_with("/etc/kt:3: "));
    }

    #[test]
    fn refile_keytable_matches_names_by_pattern_case_sensitively() {
        let set = DataSet::parse_file_bytes(
            DataSetKind::Refile,
            b"key* a.com:s:/a\n",
            Location::file("/kt"),
        )
        .unwrap();
        let kt = KeyTable::from_data_set(set).unwrap();
        assert!(kt.get("key1").is_some());
        assert!(kt.get("KEY1").is_none());
    }

    fn entry(name: &str, line: u32) -> KeyEntry {
        KeyEntry {
            name: name.to_string(),
            domain: KeyDomain::Fixed("example.com".into()),
            selector: "s".into(),
            source: KeySource::File(PathTemplate::new("/k/%.private")),
            at: Location::new("/c.toml", line),
        }
    }

    #[test]
    fn entries_built_in_memory_are_found_by_name_and_keep_their_location() {
        let kt = KeyTable::from_entries(
            vec![entry("a", 3), entry("b", 8)],
            Location::file("/c.toml"),
        )
        .unwrap();
        assert_eq!(kt.get("b").unwrap().at.to_string(), "/c.toml:8");
        assert!(kt.get("B").is_none());
        assert_eq!(
            kt.get("a").unwrap().resolve("x.org").source,
            ResolvedKeySource::File("/k/example.com.private".into())
        );
    }

    #[test]
    fn duplicate_in_memory_name_is_an_error_naming_both_places() {
        let err = KeyTable::from_entries(
            vec![entry("a", 3), entry("a", 8)],
            Location::file("/c.toml"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/c.toml:8: "), "{text}");
        assert!(text.contains("/c.toml:3"), "{text}");
    }

    #[test]
    fn relative_key_files_resolve_against_a_base_directory() {
        let mut kt = table("k example.com:sel:./keys/k.private\nabs example.com:s:/abs.private\n");
        kt.resolve_relative_files(|p| Path::new("/var/lib/dkim").join(p));
        assert_eq!(
            kt.get("k").unwrap().source,
            KeySource::RelativeFile("/var/lib/dkim/./keys/k.private".into())
        );
        assert_eq!(
            kt.get("abs").unwrap().source,
            KeySource::File(PathTemplate::new("/abs.private"))
        );
    }
}
