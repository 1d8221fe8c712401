//! A data set asked only "is this key in it?", as OpenDKIM asks it of
//! DontSignMailTo: `dkimf_db_get(db, key, ..., &found)` on a set opened
//! with `DKIMF_DB_FLAG_ICASE` (`opendkim-db.c`).
//!
//! - `file:` and `csl:`: the whole key, compared without regard to ASCII
//!   case (`strcasecmp`); nothing else (a domain entry does not cover the
//!   addresses in it, a `*` is a literal star);
//! - `refile:`: each line is a pattern (see [`Pattern`]) matched against
//!   the whole key, case-insensitive.

use std::collections::HashSet;

use crate::diagnostics::Location;

use super::TableError;
use super::dataset::{DataSet, DataSetKind};
use super::pattern::Pattern;

/// The keys of a data set, ready for membership tests.
#[derive(Debug, Clone)]
pub struct KeySet {
    origin: Location,
    written: Vec<String>,
    /// `file:` and `csl:` keys, ASCII-lowercased.
    exact: HashSet<String>,
    /// `refile:` lines, in file order.
    patterns: Vec<Pattern>,
}

impl KeySet {
    pub fn from_data_set(set: &DataSet) -> Result<KeySet, TableError> {
        let mut keys = KeySet {
            origin: set.origin.clone(),
            written: set.entries.iter().map(|e| e.key.clone()).collect(),
            exact: HashSet::new(),
            patterns: Vec::new(),
        };
        for entry in &set.entries {
            if set.kind == DataSetKind::Refile {
                let pattern =
                    Pattern::compile(&entry.key, true).map_err(|reason| TableError::Pattern {
                        at: entry.at.clone(),
                        pattern: entry.key.clone(),
                        reason,
                    })?;
                keys.patterns.push(pattern);
            } else {
                keys.exact.insert(entry.key.to_ascii_lowercase());
            }
        }
        Ok(keys)
    }

    /// Whether `key` is in the set.
    pub fn contains(&self, key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        self.exact.contains(&key) || self.patterns.iter().any(|p| p.matches(key.as_bytes()))
    }

    /// Every key as written, in order (for showing the effective rules).
    pub fn entries(&self) -> &[String] {
        &self.written
    }

    /// The file (or configuration line) the set came from.
    pub fn origin(&self) -> &Location {
        &self.origin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(kind: DataSetKind, text: &str) -> KeySet {
        let data = DataSet::parse_file_bytes(kind, text.as_bytes(), Location::file("set")).unwrap();
        KeySet::from_data_set(&data).unwrap()
    }

    #[test]
    fn file_keys_match_whole_and_without_regard_to_case() {
        let s = set(DataSetKind::File, "nosign@example.net\nexample.edu\n");
        assert!(s.contains("NoSign@Example.NET"));
        assert!(!s.contains("other@example.net"));
        assert!(
            !s.contains("anyone@example.edu"),
            "a domain entry is only the key `example.edu`"
        );
        assert!(s.contains("example.edu"));
    }

    #[test]
    fn star_is_literal_outside_refile() {
        let s = set(DataSetKind::File, "*@lists.example.net\n");
        assert!(!s.contains("anyone@lists.example.net"));
        assert!(s.contains("*@lists.example.net"));
    }

    #[test]
    fn refile_lines_are_case_insensitive_patterns() {
        let s = set(
            DataSetKind::Refile,
            "*@lists.example.net\nArchive-*@example.net\n",
        );
        assert!(s.contains("Anyone@LISTS.example.net"));
        assert!(s.contains("archive-2024@example.net"));
        assert!(!s.contains("bob@example.net"));
    }

    #[test]
    fn csl_keys_ignore_values() {
        let s = KeySet::from_data_set(&DataSet::from_csl(
            "a@example.com=x, b@example.com",
            &Location::file("conf"),
        ))
        .unwrap();
        assert!(s.contains("A@example.com"));
        assert!(s.contains("b@example.com"));
        assert!(!s.contains("x"));
    }
}
