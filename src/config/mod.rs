//! One validated [`Config`], from either front door: OpenDKIM's
//! `opendkim.conf` (read unchanged) or our native TOML.
//!
//! Both parsers produce the same types; nothing downstream knows which file
//! a setting came from. Loading a configuration also loads and checks every
//! table and every key it names, so a `Config` that exists can serve mail:
//! start-up fails fast on a bad one, and a reload that fails keeps the old.
//! Problems that do not stop loading come back as [`Warning`]s; problems
//! that do come back together as one [`ConfigError`] (every independent
//! problem, each one line starting with `file:line:`), and [`mod@describe`]
//! renders a loaded configuration for `check-config`.
//!
//! - `opendkim.rs` gives `opendkim.conf` OpenDKIM's meaning; its line
//!   grammar is `grammar.rs` and the names it knows are `opendkim_names.rs`;
//! - `native.rs` reads the TOML format;
//! - both lower what they read into the located settings form of
//!   `settings.rs` (every value as written, with its option's name and
//!   line), where each rule that turns settings into the [`Service`] and
//!   the signature settings is applied once, for both formats;
//! - both share `data_sets.rs` (relative names made absolute),
//!   `header_lists.rs` (OpenDKIM's `*`/`+`/`-` header lists),
//!   `accounts.rs` (run-as user and group) and `signing_keys.rs` (tables
//!   and keys, every error located).
//!
//! Relative file names follow each format's rule: in `opendkim.conf` they
//! are relative to the working directory (or BaseDirectory), as OpenDKIM
//! opens them; in TOML they are relative to the file's own directory.
//!
//! This module never logs, never opens sockets and never changes the
//! process (user, umask, working directory): it only reads files.

mod accounts;
mod data_sets;
pub mod describe;
mod error;
#[cfg(test)]
mod fixture;
mod grammar;
mod header_lists;
mod native;
mod opendkim;
mod opendkim_names;
mod remote_sets;
mod settings;
mod signing_keys;
mod verification;

use std::path::{Path, PathBuf};

pub use describe::describe;
pub use error::ConfigError;

use crate::diagnostics::Warning;
use crate::policy::Policy;
use milter::server::{self, SocketSpec, UnixSocketAccess};

/// Which file format a configuration was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `opendkim.conf` (`run -x`).
    OpenDkim,
    /// Native TOML (`run -c`).
    Toml,
}

/// Where a configuration came from, so that a reload reads the same file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: PathBuf,
    pub format: Format,
}

/// Everything the daemon runs with.
#[derive(Debug)]
pub struct Config {
    pub origin: Origin,
    pub service: Service,
    pub logging: Logging,
    /// What to sign and how; shared by every connection, swapped whole on
    /// reload.
    pub policy: Policy,
    /// Problems that did not stop loading, with file and line.
    pub warnings: Vec<Warning>,
}

/// How the daemon itself runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    /// Where to listen; at least one.
    pub sockets: Vec<SocketSpec>,
    /// Mode and owner of Unix sockets.
    pub socket_access: UnixSocketAccess,
    /// OpenDKIM's PidFile.
    pub pid_file: Option<PathBuf>,
    /// OpenDKIM's UserID: drop to this user (and group) after opening the
    /// sockets and reading the keys.
    pub run_as: Option<RunAs>,
    /// OpenDKIM's UMask, applied before creating sockets and files.
    pub umask: Option<u32>,
    /// Sign even when running as root with no UserID (refused by default).
    pub allow_root: bool,
    /// Connection limit, frame size limit, timeouts, shutdown grace.
    pub server: server::Settings,
    /// Serve Prometheus metrics over HTTP on this address (`GET
    /// /metrics`); off when `None`. Bound before privileges are dropped.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Check the configuration file, the tables and the key files this
    /// often and reload when one changed (as on SIGHUP); off when `None`.
    pub watch_interval: Option<std::time::Duration>,
}

/// `user[:group]`, as OpenDKIM's UserID writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub group: Option<String>,
}

/// Where log lines go and which are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    /// OpenDKIM's Syslog: log to syslog (facility below) instead of stderr.
    pub syslog: bool,
    /// OpenDKIM's SyslogFacility; `mail` by default.
    pub syslog_facility: String,
    /// OpenDKIM's SyslogSuccess: a line for every signed message.
    pub log_success: bool,
    /// OpenDKIM's LogWhy: the detailed reason for every message not signed.
    pub log_why: bool,
    /// One JSON object per line instead of text.
    pub json: bool,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            syslog: false,
            syslog_facility: "mail".to_string(),
            log_success: true,
            log_why: true,
            json: false,
        }
    }
}

/// `warnings` without repeats, first occurrence kept: one file used for
/// two options (a TrustedHosts file as InternalHosts and
/// ExternalIgnoreList) would otherwise say everything twice.
fn without_repeats(warnings: Vec<Warning>) -> Vec<Warning> {
    let mut unique: Vec<Warning> = Vec::with_capacity(warnings.len());
    for warning in warnings {
        if !unique.contains(&warning) {
            unique.push(warning);
        }
    }
    unique
}

/// What the command line overrides in a configuration file. Applied where
/// the file is loaded, so a reload keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `run --socket`: listen here instead of the configured sockets (a
    /// configuration without a socket is then accepted).
    pub sockets: Option<Vec<SocketSpec>>,
    /// `run --allow-root`: sign even as root with no UserID.
    pub allow_root: bool,
    /// `run --metrics-listen`: serve metrics here, whatever the file says.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `run --watch-interval`: watch the files this often.
    pub watch_interval: Option<std::time::Duration>,
    /// The uid key files must belong to when the configuration names no
    /// user (`rotate --signer-user`: the daemon runs as systemd's User=
    /// while rotate runs as root). The configuration's own user wins.
    pub signer_uid: Option<u32>,
    /// `check-config`: a file with no socket is accepted with a warning
    /// (OpenDKIM's `-n` does not ask for one either); `run` refuses it.
    pub sockets_optional: bool,
}

impl Overrides {
    /// The service settings with the command line's say applied.
    fn apply(&self, service: &mut Service) {
        if let Some(sockets) = &self.sockets {
            service.sockets = sockets.clone();
        }
        service.allow_root |= self.allow_root;
        if self.metrics_listen.is_some() {
            service.metrics_listen = self.metrics_listen;
        }
        if self.watch_interval.is_some() {
            service.watch_interval = self.watch_interval;
        }
    }
}

impl Config {
    /// Loads the configuration `origin` names: the file, every table and
    /// every key it names. Every independent problem is reported.
    pub fn load(origin: &Origin) -> Result<Config, ConfigError> {
        Config::load_with(origin, &Overrides::default())
    }

    /// [`Config::load`] with command-line overrides.
    pub fn load_with(origin: &Origin, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match origin.format {
            Format::OpenDkim => opendkim::load(&origin.path, overrides),
            Format::Toml => native::load(&origin.path, overrides),
        }?;
        overrides.apply(&mut config.service);
        config.warnings = without_repeats(std::mem::take(&mut config.warnings));
        Ok(config)
    }

    /// Loads a native TOML configuration.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Config::load(&Origin {
            path: path.as_ref().to_path_buf(),
            format: Format::Toml,
        })
    }

    /// Loads an `opendkim.conf`, unchanged.
    pub fn from_opendkim_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Config::load(&Origin {
            path: path.as_ref().to_path_buf(),
            format: Format::OpenDkim,
        })
    }
}
