//! Every way loading a configuration can fail, each one line that starts
//! with `file:line:` (where there is a line), says what is wrong and how to
//! fix it.
//!
//! Loading collects independent problems, so one run of `check-config`
//! lists them all: [`ConfigError::Several`] holds them and
//! [`ConfigError::problems`] gives them back one by one. This module only
//! describes problems; it never prints or logs them.

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::diagnostics::Location;
use crate::keys::KeyError;
use crate::policy::KeyStoreError;
use crate::tables::TableError;
use milter::server::socket::SocketSpecError;

/// Why a configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{}: cannot read the configuration file: {source}; check the path and its permissions", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{at}: cannot read the included file {}: {source}; check the path (a relative path is \
         relative to the working directory, as in OpenDKIM)",
        path.display()
    )]
    Include {
        at: Location,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{at}: Include is nested more than {limit} levels deep, which OpenDKIM refuses; \
         include the files from fewer levels"
    )]
    IncludeDepth { at: Location, limit: usize },

    #[error(
        "{at}: {} is already being read ({chain}), so this Include would loop forever; \
         remove the Include that closes the loop",
        path.display()
    )]
    IncludeCycle {
        at: Location,
        path: PathBuf,
        chain: String,
    },

    #[error(
        "{at}: unknown option `{name}`{}; fix the name or remove the line",
        Suggestion(suggestion)
    )]
    UnknownOption {
        at: Location,
        name: String,
        suggestion: Option<&'static str>,
    },

    #[error("{at}: the line is not valid UTF-8; save the file as UTF-8 (or ASCII)")]
    NotUtf8 { at: Location },

    #[error("{at}: {name} has no value; write `{name} VALUE` or remove the line")]
    EmptyValue { at: Location, name: String },

    #[error(
        "{at}: {name} must be yes or no (a value starting with t, y, 1, f, n or 0), not `{value}`"
    )]
    NotBoolean {
        at: Location,
        name: String,
        value: String,
    },

    #[error(
        "{at}: {name} must be a whole number (decimal, 0x hexadecimal or 0-prefixed octal), not `{value}`"
    )]
    NotInteger {
        at: Location,
        name: String,
        value: String,
    },

    #[error("{at}: {name} `{value}` is not valid; {expected}")]
    InvalidValue {
        at: Location,
        name: String,
        value: String,
        expected: String,
    },

    #[error("{at}: {source}")]
    Socket {
        at: Location,
        #[source]
        source: SocketSpecError,
    },

    #[error("{at}: no socket to listen on; {fix}")]
    NoSocket { at: Location, fix: &'static str },

    #[error(
        "{at}: user `{user}` does not exist; create it (adduser --system --group {user}) or \
         name an existing user"
    )]
    UnknownUser { at: Location, user: String },

    #[error(
        "{at}: group `{group}` does not exist; create it (addgroup --system {group}) or name an existing group"
    )]
    UnknownGroup { at: Location, group: String },

    #[error(
        "{at}: Domain requires KeyFile and Selector (OpenDKIM refuses to start too); add \
         `KeyFile /path/to/selector.private` and `Selector selector`, or sign with a KeyTable \
         and SigningTable instead"
    )]
    DomainWithoutKey { at: Location },

    #[error(
        "{at}: KeyFile and Selector must both be set or both be unset (OpenDKIM refuses to start \
         too); add `Selector NAME` (the selector the key's DNS record is published under)"
    )]
    KeyFileWithoutSelector { at: Location },

    #[error(
        "{at}: KeyFile and Selector must both be set or both be unset (OpenDKIM refuses to start \
         too); add `KeyFile /path/to/{selector}.private`"
    )]
    SelectorWithoutKeyFile { at: Location, selector: String },

    #[error(
        "{at}: SigningTable requires KeyTable (OpenDKIM refuses to start too); add \
         `KeyTable file:/etc/opendkim/KeyTable` naming the keys the SigningTable refers to"
    )]
    SigningTableWithoutKeyTable { at: Location },

    #[error(
        "{at}: KeyTable requires SigningTable (OpenDKIM refuses to start too, unless a Lua \
         SetupPolicyScript picks the keys); add `SigningTable refile:/etc/opendkim/SigningTable` \
         saying which senders use which key"
    )]
    KeyTableWithoutSigningTable { at: Location },

    #[error(
        "{at}: {name} runs a Lua policy script, which dkim-sidecar does not run, so it would \
         sign or verify differently from OpenDKIM; express the policy with SigningTable, \
         KeyTable, InternalHosts, ExemptDomains and the On-* actions, then remove {name} \
         (docs/migrating-from-opendkim.md)"
    )]
    PolicyScript { at: Location, name: String },

    #[error("{at}: {problem}")]
    ReplaceRules { at: Location, problem: String },

    #[error(
        "{at}: {name} is read whole when the configuration is loaded (as OpenDKIM reads it), \
         and {set} could not be read: {error}; start the server or list the names in a file"
    )]
    WholeSetUnreadable {
        at: Location,
        name: String,
        /// The specification, password masked.
        set: String,
        error: crate::remote::BackendError,
    },

    #[error(
        "{at}: {name} is read whole when the configuration is loaded, and an LDAP directory \
         cannot be listed (OpenDKIM refuses it too); keep the names in a file, a list or a \
         dsn: table"
    )]
    WholeSetOnLdap { at: Location, name: String },

    #[error(transparent)]
    Table(#[from] TableError),

    #[error("{at}: {source}")]
    Key {
        at: Location,
        #[source]
        source: KeyError,
    },

    #[error("{at}:{column}: {message}")]
    Toml {
        at: Location,
        column: usize,
        message: String,
    },

    #[error("{at}: {message}")]
    Native { at: Location, message: String },

    #[error("{}", OnePerLine(.0))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// One error for a list of problems (the only one, or all of them).
    /// `problems` must not be empty.
    pub fn from_problems(mut problems: Vec<ConfigError>) -> ConfigError {
        if problems.len() == 1 {
            problems.remove(0)
        } else {
            ConfigError::Several(problems)
        }
    }

    /// Every single problem, in the order found.
    pub fn problems(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Several(all) => all.iter().flat_map(|e| e.problems()).collect(),
            one => vec![one],
        }
    }
}

impl From<KeyStoreError> for ConfigError {
    fn from(e: KeyStoreError) -> Self {
        ConfigError::Key {
            at: e.at,
            source: e.source,
        }
    }
}

struct Suggestion<'a>(&'a Option<&'static str>);

impl fmt::Display for Suggestion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => write!(f, " (did you mean `{name}`?)"),
            None => Ok(()),
        }
    }
}

struct OnePerLine<'a>(&'a [ConfigError]);

impl fmt::Display for OnePerLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_problems_flatten_in_order_one_per_line() {
        let at = |n| Location::new("/etc/opendkim.conf", n);
        let e = ConfigError::from_problems(vec![
            ConfigError::EmptyValue {
                at: at(1),
                name: "Socket".into(),
            },
            ConfigError::from_problems(vec![
                ConfigError::DomainWithoutKey { at: at(2) },
                ConfigError::KeyTableWithoutSigningTable { at: at(3) },
            ]),
        ]);
        let lines: Vec<String> = e.problems().iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("/etc/opendkim.conf:1: "));
        assert!(lines[2].starts_with("/etc/opendkim.conf:3: "));
        assert_eq!(e.to_string().lines().count(), 3);
    }

    #[test]
    fn a_single_problem_is_not_wrapped() {
        let e = ConfigError::from_problems(vec![ConfigError::DomainWithoutKey {
            at: Location::new("/c", 4),
        }]);
        assert!(matches!(e, ConfigError::DomainWithoutKey { .. }));
    }
}
