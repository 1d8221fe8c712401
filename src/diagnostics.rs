//! Where a problem was found, and warnings and faults collected while
//! loading.
//!
//! Loaders (configuration, tables, keys) report problems against a
//! [`Location`] so that every message the administrator sees starts with
//! `file:line:`. Loaders return their [`Warning`]s and [`Fault`]s instead
//! of logging them: `check-config` prints them, `run` logs them, tests
//! assert on them. This module must never log or print anything itself.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A line in a file the administrator wrote.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub path: Arc<Path>,
    /// 1-based; 0 means "the file as a whole".
    pub line: u32,
}

impl Location {
    pub fn new(path: impl Into<PathBuf>, line: u32) -> Self {
        Location {
            path: Arc::from(path.into().into_boxed_path()),
            line,
        }
    }

    /// The file as a whole, for problems that have no line (unreadable file).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Location::new(path, 0)
    }

    /// Another line of the same file, sharing the path allocation.
    pub fn at_line(&self, line: u32) -> Self {
        Location {
            path: Arc::clone(&self.path),
            line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.path.display())
        } else {
            write!(f, "{}:{}", self.path.display(), self.line)
        }
    }
}

/// Something the administrator should know about that does not stop
/// start-up: an option we ignore, a pattern that can never match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub at: Option<Location>,
    pub message: String,
}

impl Warning {
    pub fn new(at: Option<Location>, message: impl Into<String>) -> Self {
        Warning {
            at,
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A problem confined to the mail it concerns: a key that does not load,
/// a SigningTable entry naming a key the KeyTable lacks, a malformed
/// KeyTable line. Unlike a configuration error it does not stop start-up
/// (or a reload): `run` logs it loudly and gives every message that needs
/// the key the On-KeyError action (tempfail by default), and signs every
/// other domain, as OpenDKIM does. `check-config` fails on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub at: Location,
    /// The whole line, starting with `at` and ending with how to fix it.
    pub message: String,
}

impl Fault {
    /// A fault from an error whose `Display` already starts with `at`.
    pub fn from_error(at: Location, error: &impl std::error::Error) -> Self {
        Fault {
            at,
            message: error.to_string(),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_prints_file_and_line() {
        assert_eq!(
            Location::new("/etc/opendkim.conf", 12).to_string(),
            "/etc/opendkim.conf:12"
        );
        assert_eq!(Location::file("/etc/keytable").to_string(), "/etc/keytable");
    }

    #[test]
    fn warning_without_location_is_just_the_message() {
        let w = Warning::new(None, "Mode v is not supported");
        assert_eq!(w.to_string(), "Mode v is not supported");
        let w = Warning::new(Some(Location::new("a.conf", 3)), "X");
        assert_eq!(w.to_string(), "a.conf:3: X");
    }
}
