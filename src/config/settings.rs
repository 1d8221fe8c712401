//! The located settings form both front doors lower into, and the one
//! place each rule that turns a setting into a [`Service`] or a
//! [`SignatureSettings`] is applied.
//!
//! `opendkim.rs` and `native.rs` only read their syntax: each fills a
//! [`ServiceSettings`] and a [`SignatureRules`] with the values as written
//! (still text where the rule is about text), each with the option's name
//! in that format and where it was written. Resolving them here checks
//! ranges, parses sockets and canonicalizations, resolves accounts, applies
//! defaults and the command line's overrides, and reports every problem
//! with its file and line, the same way for both formats. Nothing here
//! reads a file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::dkim::Canonicalization;

use super::header_lists;
use super::opendkim::parse_canonicalization;
use super::{ConfigError, Format, Overrides, RunAs, Service, accounts};
use crate::diagnostics::{Location, Warning};
use crate::dkim::headers::{
    DEFAULT_SIGNED_HEADERS, HeaderNames, HeaderPolicy, OPENDKIM_OMITTED_HEADERS,
};
use crate::policy::{DomainSet, ReplaceRules, SignatureSettings, TableSource};
use crate::tables::KeySet;
use milter::server::{self, SocketSpec, UnixSocketAccess};
use milter::{Limits, Timeouts};

/// A value as written, with its option's name in the file's format and
/// where it was written.
#[derive(Debug, Clone)]
pub(super) struct Written<T> {
    pub name: &'static str,
    pub value: T,
    pub at: Location,
}

impl<T> Written<T> {
    pub fn new(name: &'static str, value: T, at: Location) -> Self {
        Written { name, value, at }
    }
}

/// What went wrong while reading and resolving one file.
#[derive(Debug, Default)]
pub(super) struct Problems {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
}

impl Problems {
    /// Runs `resolver`, then adds what it found wrong to a file's other
    /// `errors` and `warnings`.
    pub fn gather<T>(
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<Warning>,
        resolver: impl FnOnce(&mut Problems) -> T,
    ) -> T {
        let mut problems = Problems::default();
        let resolved = resolver(&mut problems);
        errors.extend(problems.errors);
        warnings.extend(problems.warnings);
        resolved
    }

    /// `value` is not a valid `name`; `expected` says what is.
    pub fn invalid(&mut self, at: Location, name: &str, value: String, expected: &str) {
        self.errors.push(ConfigError::InvalidValue {
            at,
            name: name.to_string(),
            value,
            expected: expected.to_string(),
        });
    }
}

/// How the daemon runs, as written in either format.
#[derive(Debug)]
pub(super) struct ServiceSettings {
    pub format: Format,
    /// The configuration file, for a problem that has no line (no socket).
    pub file: Location,
    pub sockets: Vec<Written<String>>,
    /// What to add when there is no socket, in the file's syntax.
    pub missing_socket_fix: &'static str,
    pub socket_mode: Option<Written<i64>>,
    pub socket_owner: Option<Written<String>>,
    pub socket_group: Option<Written<String>>,
    pub pid_file: Option<PathBuf>,
    pub user: Option<Written<String>>,
    pub group: Option<Written<String>>,
    pub umask: Option<Written<i64>>,
    pub allow_root: bool,
    pub max_frame_bytes: Option<usize>,
    pub idle_timeout_seconds: Option<u64>,
    pub frame_timeout_seconds: Option<u64>,
    pub write_timeout_seconds: Option<u64>,
    pub max_connections: Option<usize>,
    pub shutdown_grace_seconds: Option<u64>,
    pub metrics_listen: Option<Written<String>>,
    pub watch_interval_seconds: Option<Written<u64>>,
}

impl ServiceSettings {
    /// Settings that say nothing yet, for a file in `format`.
    pub fn new(format: Format, file: Location, missing_socket_fix: &'static str) -> Self {
        ServiceSettings {
            format,
            file,
            sockets: Vec::new(),
            missing_socket_fix,
            socket_mode: None,
            socket_owner: None,
            socket_group: None,
            pid_file: None,
            user: None,
            group: None,
            umask: None,
            allow_root: false,
            max_frame_bytes: None,
            idle_timeout_seconds: None,
            frame_timeout_seconds: None,
            write_timeout_seconds: None,
            max_connections: None,
            shutdown_grace_seconds: None,
            metrics_listen: None,
            watch_interval_seconds: None,
        }
    }

    /// The [`Service`], and the uid of the user to run as (key files must
    /// be readable by it). Every problem goes to `problems`.
    pub fn resolve(self, overrides: &Overrides, problems: &mut Problems) -> (Service, Option<u32>) {
        let sockets = if overrides.sockets.is_some() {
            // Overrides::apply puts the command line's sockets in place; the
            // file's are not read at all, as OpenDKIM's -p does.
            Vec::new()
        } else {
            if self.sockets.is_empty() {
                let missing = ConfigError::NoSocket {
                    at: self.file.clone(),
                    fix: self.missing_socket_fix,
                };
                if overrides.sockets_optional {
                    // `check-config`, as OpenDKIM's `-n`: the socket may
                    // come from `run --socket` or systemd's socket.
                    problems.warnings.push(Warning::new(
                        None,
                        format!("{missing}; `run` then needs --socket or a systemd socket unit"),
                    ));
                } else {
                    problems.errors.push(missing);
                }
            }
            self.sockets
                .iter()
                .filter_map(|spec| match spec.value.parse::<SocketSpec>() {
                    Ok(socket) => Some(socket),
                    Err(source) => {
                        problems.errors.push(ConfigError::Socket {
                            at: spec.at.clone(),
                            source,
                        });
                        None
                    }
                })
                .collect()
        };
        let mode = self
            .socket_mode
            .and_then(|m| octal_mode(self.format, m, problems));
        if let Some(owner) = &self.socket_owner
            && let Err(e) = accounts::check_user(&owner.value, &owner.at)
        {
            problems.errors.push(e);
        }
        if let Some(group) = &self.socket_group
            && let Err(e) = accounts::check_group(&group.value, &group.at)
        {
            problems.errors.push(e);
        }
        let (run_as, uid) = run_as(self.user.as_ref(), self.group.as_ref(), problems);
        let umask = self
            .umask
            .and_then(|m| octal_mode(self.format, m, problems));
        let defaults = server::Settings::default();
        let timeouts = Timeouts::default();
        let seconds =
            |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_secs);
        let settings = server::Settings {
            limits: Limits {
                max_payload: self.max_frame_bytes.unwrap_or(defaults.limits.max_payload),
                timeouts: Timeouts {
                    idle: seconds(self.idle_timeout_seconds, timeouts.idle),
                    frame: seconds(self.frame_timeout_seconds, timeouts.frame),
                    write: seconds(self.write_timeout_seconds, timeouts.write),
                },
            },
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            shutdown_grace: seconds(self.shutdown_grace_seconds, defaults.shutdown_grace),
            work_threads: defaults.work_threads,
        };
        let metrics_listen =
            self.metrics_listen
                .and_then(|addr| match addr.value.parse::<SocketAddr>() {
                    Ok(parsed) => Some(parsed),
                    Err(_) => {
                        problems.invalid(
                            addr.at,
                            addr.name,
                            addr.value,
                            "write an address and port, such as 127.0.0.1:9820",
                        );
                        None
                    }
                });
        let watch_interval = self.watch_interval_seconds.and_then(|every| {
            if every.value == 0 {
                problems.invalid(
                    every.at,
                    every.name,
                    "0".to_string(),
                    "use a number of seconds of 1 or more, or leave it out to not watch",
                );
                return None;
            }
            Some(Duration::from_secs(every.value))
        });
        let service = Service {
            sockets,
            socket_access: UnixSocketAccess {
                mode,
                user: self.socket_owner.map(|o| o.value),
                group: self.socket_group.map(|g| g.value),
            },
            pid_file: self.pid_file,
            run_as,
            umask,
            allow_root: self.allow_root,
            server: settings,
            metrics_listen,
            watch_interval,
        };
        (service, uid)
    }
}

/// The account to run as, and its uid.
fn run_as(
    user: Option<&Written<String>>,
    group: Option<&Written<String>>,
    problems: &mut Problems,
) -> (Option<RunAs>, Option<u32>) {
    match (user, group) {
        (Some(user), group) => {
            match accounts::resolve(&user.value, group.map(|g| g.value.as_str()), &user.at) {
                Ok(account) => (Some(account.run_as), Some(account.uid)),
                Err(errors) => {
                    problems.errors.extend(errors);
                    (None, None)
                }
            }
        }
        (None, Some(group)) => {
            problems.errors.push(ConfigError::Native {
                at: group.at.clone(),
                message: format!(
                    "`{}` needs `user`: name the user to run as (its group is used when `{}` \
                     is left out)",
                    group.name, group.name
                ),
            });
            (None, None)
        }
        (None, None) => (None, None),
    }
}

/// A file mode or umask: 0 to 0777, written the way the format writes
/// octal numbers.
fn octal_mode(format: Format, value: Written<i64>, problems: &mut Problems) -> Option<u32> {
    match u32::try_from(value.value) {
        Ok(mode) if mode <= 0o777 => Some(mode),
        _ => {
            let expected = match format {
                Format::OpenDkim => {
                    "a umask is 0 to 0777 (write it with a leading 0, e.g. `UMask 007`)"
                }
                Format::Toml => {
                    "write it as an octal number from 0o000 to 0o777, e.g. 0o660 (a plain 660 \
                     is decimal)"
                }
            };
            problems.invalid(value.at, value.name, value.value.to_string(), expected);
            None
        }
    }
}

/// How signatures are made, as written in either format.
#[derive(Debug)]
pub(super) struct SignatureRules {
    /// `header/body`, or one word for the header method only.
    pub canonicalization: Option<Written<String>>,
    /// The format's default: OpenDKIM's simple/simple, or relaxed/simple
    /// in TOML.
    pub default_canonicalization: (Canonicalization, Canonicalization),
    /// OpenDKIM-style lists (`*`, `+name`, `-name`) of header names, each
    /// entry with its own location.
    pub sign_headers: Option<Written<Vec<(String, Location)>>>,
    pub omit_headers: Option<Written<Vec<(String, Location)>>>,
    pub oversign_headers: Option<Written<Vec<(String, Location)>>>,
    /// `x=` lifetime; 0 means none.
    pub signature_ttl_seconds: Option<u64>,
    /// `r=y` (OpenDKIM's RequestReports).
    pub request_reports: bool,
    /// Sender domains given `atps=` (OpenDKIM's ATPSDomains).
    pub atps_domains: Option<TableSource<DomainSet>>,
    /// Recipients whose mail is signed with `l=` (OpenDKIM's
    /// BodyLengthDB).
    pub body_length_recipients: Option<TableSource<KeySet>>,
    /// OpenDKIM's ReplaceRules file, with ReplaceHeaders (a file or list,
    /// or a set kept on a server).
    pub replace_rules: Option<Written<PathBuf>>,
    pub replace_headers: Option<TableSource<KeySet>>,
}

impl SignatureRules {
    /// Rules that say nothing yet, with the format's default
    /// canonicalization.
    pub fn new(default_canonicalization: (Canonicalization, Canonicalization)) -> Self {
        SignatureRules {
            canonicalization: None,
            default_canonicalization,
            sign_headers: None,
            omit_headers: None,
            oversign_headers: None,
            signature_ttl_seconds: None,
            request_reports: false,
            atps_domains: None,
            body_length_recipients: None,
            replace_rules: None,
            replace_headers: None,
        }
    }

    /// The [`SignatureSettings`]; every problem goes to `problems`.
    pub fn resolve(self, problems: &mut Problems) -> SignatureSettings {
        let (header_canonicalization, body_canonicalization) = match self.canonicalization {
            Some(value) => match parse_canonicalization(&value.value) {
                Ok(pair) => pair,
                Err(expected) => {
                    problems.invalid(value.at, value.name, value.value, &expected);
                    self.default_canonicalization
                }
            },
            None => self.default_canonicalization,
        };
        let mut list = |written: Option<Written<Vec<(String, Location)>>>,
                        default: Option<&[&str]>| {
            match (written, default) {
                (Some(list), Some(default)) => {
                    let (names, warnings) =
                        header_lists::with_default(list.name, &list.value, default);
                    problems.warnings.extend(warnings);
                    names
                }
                (Some(list), None) => {
                    let (names, warnings) = header_lists::plain(list.name, &list.value);
                    problems.warnings.extend(warnings);
                    names
                }
                (None, Some(default)) => default.iter().map(ToString::to_string).collect(),
                (None, None) => Vec::new(),
            }
        };
        let sign = list(self.sign_headers, Some(DEFAULT_SIGNED_HEADERS));
        let omit = list(self.omit_headers, Some(OPENDKIM_OMITTED_HEADERS));
        let oversign = list(self.oversign_headers, None);
        SignatureSettings {
            header_canonicalization,
            body_canonicalization,
            headers: Arc::new(HeaderPolicy::with_names(
                HeaderNames::new(sign.iter().map(String::as_str)),
                HeaderNames::new(omit.iter().map(String::as_str)),
                oversign.iter().map(String::as_str),
            )),
            expiry: self
                .signature_ttl_seconds
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            request_reports: self.request_reports,
            atps_domains: self.atps_domains,
            body_length_recipients: self.body_length_recipients,
            replace_rules: self.replace_rules.and_then(|file| {
                match ReplaceRules::load(&file.value, self.replace_headers) {
                    Ok(rules) => Some(Arc::new(rules)),
                    Err(error) => {
                        problems.errors.push(ConfigError::ReplaceRules {
                            at: error.at,
                            problem: error.problem,
                        });
                        None
                    }
                }
            }),
        }
    }
}
