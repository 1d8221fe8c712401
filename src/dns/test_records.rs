//! OpenDKIM's test aids: key records from a file (`TestPublicKeys`) or a
//! data set (`TestDNSData`) instead of DNS.
//!
//! `TestPublicKeys FILE` has one record per line: the record's name
//! (`selector._domainkey.domain`), white space, and the TXT value; lines
//! starting with `#` are comments (libopendkim's `dkim_get_key_file`).
//! Names compare without regard to case. A name that is not listed is
//! answered "no such name", as OpenDKIM answers "key not found". This
//! module only holds the records; it never reads DNS.

use std::collections::HashMap;

use super::{Security, TxtAnswer, TxtOutcome};

/// Fixed TXT records, by lower-case absolute name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestRecords {
    records: HashMap<String, Vec<Vec<u8>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TestRecordsError {
    #[error("{option} line {line}: a record name without a value")]
    MissingValue { option: &'static str, line: usize },
}

impl TestRecords {
    /// Records from `TestPublicKeys` text.
    pub fn from_lines(text: &str, option: &'static str) -> Result<TestRecords, TestRecordsError> {
        let mut records = TestRecords::default();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let line = line.trim_end_matches('\r');
            let Some((name, value)) = line.split_once(|c: char| c.is_ascii_whitespace()) else {
                return Err(TestRecordsError::MissingValue {
                    option,
                    line: n + 1,
                });
            };
            records.insert(name, value.trim_start());
        }
        Ok(records)
    }

    /// Records from name/value pairs (a `TestDNSData` data set).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> TestRecords {
        let mut records = TestRecords::default();
        for (name, value) in pairs {
            records.insert(name, value);
        }
        records
    }

    /// Add a record; a second one at the same name makes two records.
    pub fn insert(&mut self, name: &str, value: &str) {
        self.records
            .entry(super::normalize(name))
            .or_default()
            .push(value.as_bytes().to_vec());
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The answer for `name` (already normalized).
    pub(super) fn answer(&self, name: &str) -> TxtAnswer {
        let outcome = match self.records.get(name) {
            Some(records) => TxtOutcome::Records(records.clone()),
            None => TxtOutcome::NoSuchName,
        };
        TxtAnswer {
            outcome,
            security: Security::Unchecked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_and_case() {
        let records = TestRecords::from_lines(
            "# keys\nA._domainkey.Example.com\tv=DKIM1; p=abc\n\nb._domainkey.example.com  p=\n",
            "TestPublicKeys",
        )
        .unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records.answer("a._domainkey.example.com.").outcome,
            TxtOutcome::Records(vec![b"v=DKIM1; p=abc".to_vec()])
        );
        assert_eq!(
            records.answer("b._domainkey.example.com.").outcome,
            TxtOutcome::Records(vec![b"p=".to_vec()])
        );
        assert_eq!(
            TestRecords::from_lines("lonely\n", "TestPublicKeys"),
            Err(TestRecordsError::MissingValue {
                option: "TestPublicKeys",
                line: 1
            })
        );
    }
}
