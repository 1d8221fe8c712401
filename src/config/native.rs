//! The native configuration format: TOML, read with serde.
//!
//! It says everything `opendkim.conf` can (the same settings build the same
//! [`Config`]) in a typed, checked form: unknown keys are errors with line
//! and column, lists are lists, modes are octal numbers, and relative file
//! names are relative to the configuration file's own directory. Signing
//! comes from one of three places:
//!
//! - `[tables]`: existing OpenDKIM KeyTable and SigningTable files,
//!   matched exactly as OpenDKIM matches them;
//! - `[[key]]` and `[[rule]]`: keys and sender patterns written inline.
//!   Rules are `refile:`-style patterns (`*` matches anything) tried in
//!   order; the first matching rule signs with all of its keys, so a rule
//!   with an RSA and an Ed25519 key dual-signs. With
//!   `multiple_signatures = true` every matching rule signs;
//! - `[domain]`: OpenDKIM's Domain, KeyFile and Selector.
//!
//! The data set settings (trust lists, exempt domains) and `[tables]` take
//! either an inline list or a data set string as in `opendkim.conf`
//! (`file:/path`, `refile:/path`, `csl:a,b`, `dsn:...`, `ldap://...`),
//! except that a name without a type is always a file, relative to this
//! file's directory. How data sets kept on a server are cached and
//! reached (the cache, timeouts, SoftStart and OpenDKIM's LDAP options)
//! is said once, under `[tables]`, for every such set; `[tables]` may hold
//! only those settings.
//!
//! `conf/dkim-sidecar.toml` is the commented reference. This module never
//! logs.

use std::path::{Path, PathBuf};

use mail_auth::dkim::Canonicalization;
use serde::Deserialize;
use toml::Spanned;

use crate::diagnostics::{Location, Warning};
use crate::keys::{DEFAULT_MINIMUM_KEY_BITS, LoadOptions};
use crate::policy::{
    Action, DomainSet, ErrorActions, Policy, SignatureSettings, Signing, TableSource, Trust,
};
use crate::tables::{
    DataSet, HostList, KeyDomain, KeyEntry, KeySet, KeySource, KeyTable, PathTemplate, SigningRule,
    SigningTable,
};

use super::opendkim::{
    DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADER_COUNT, macro_rule, parse_action, syslog_facility,
};
use super::remote_sets;
use super::settings::{Problems, ServiceSettings, SignatureRules, Written};
use super::{
    Config, ConfigError, Format, Logging, Origin, Overrides, Service, data_sets, signing_keys,
};
use crate::remote::{CacheSettings, ConnectSettings};

#[path = "native_verify.rs"]
mod verify;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// OpenDKIM's Mode: `s`, `v` or `sv` (default).
    mode: Option<Spanned<String>>,
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    logging: LoggingSection,
    #[serde(default)]
    signing: SigningSection,
    #[serde(default)]
    on_error: OnErrorSection,
    #[serde(default)]
    trust: TrustSection,
    tables: Option<Spanned<TablesSection>>,
    domain: Option<Spanned<DomainSection>>,
    #[serde(default)]
    key: Vec<Spanned<KeySection>>,
    #[serde(default)]
    rule: Vec<Spanned<RuleSection>>,
    #[serde(default)]
    verify: verify::VerifySection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    #[serde(default)]
    sockets: Vec<Spanned<String>>,
    socket_mode: Option<Spanned<u32>>,
    socket_owner: Option<Spanned<String>>,
    socket_group: Option<Spanned<String>>,
    pid_file: Option<String>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    umask: Option<Spanned<u32>>,
    #[serde(default)]
    allow_root: bool,
    max_connections: Option<usize>,
    max_frame_bytes: Option<usize>,
    idle_timeout_seconds: Option<u64>,
    frame_timeout_seconds: Option<u64>,
    write_timeout_seconds: Option<u64>,
    shutdown_grace_seconds: Option<u64>,
    metrics_listen: Option<Spanned<String>>,
    watch_interval_seconds: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoggingSection {
    syslog: Option<bool>,
    syslog_facility: Option<Spanned<String>>,
    log_success: Option<bool>,
    log_why: Option<bool>,
    json: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigningSection {
    canonicalization: Option<Spanned<String>>,
    #[serde(default)]
    multiple_signatures: bool,
    sender_headers: Option<Spanned<Entries>>,
    sign_headers: Option<Spanned<Entries>>,
    omit_headers: Option<Spanned<Entries>>,
    oversign_headers: Option<Spanned<Entries>>,
    signature_ttl_seconds: Option<u64>,
    max_header_bytes: Option<usize>,
    max_header_count: Option<usize>,
    #[serde(default)]
    software_header: bool,
    minimum_key_bits: Option<u32>,
    require_safe_keys: Option<bool>,
    exempt_domains: Option<Spanned<Entries>>,
    dont_sign_mail_to: Option<Spanned<Entries>>,
    /// `r=y` on every signature (OpenDKIM's RequestReports).
    #[serde(default)]
    request_reports: bool,
    /// Sender domains named in `atps=` (OpenDKIM's ATPSDomains).
    atps_domains: Option<Spanned<Entries>>,
    /// Recipients whose mail is signed with `l=` (OpenDKIM's BodyLengthDB).
    body_length_recipients: Option<Spanned<Entries>>,
    /// OpenDKIM's ReplaceRules file.
    replace_rules: Option<Spanned<String>>,
    /// OpenDKIM's ReplaceHeaders: the fields the rules apply to.
    replace_headers: Option<Spanned<Entries>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnErrorSection {
    internal_error: Option<Spanned<String>>,
    key_error: Option<Spanned<String>>,
    signing_error: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustSection {
    internal_hosts: Option<Spanned<Entries>>,
    external_ignore: Option<Spanned<Entries>>,
    peers: Option<Spanned<Entries>>,
    mta_names: Option<Spanned<Entries>>,
    #[serde(default)]
    macros: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TablesSection {
    key_table: Option<Spanned<String>>,
    signing_table: Option<Spanned<String>>,
    /// For tables kept on a server (`dsn:`): seconds an answer is used
    /// without asking again [300].
    cache_ttl: Option<u64>,
    /// Seconds "no such row" is believed [cache_ttl].
    cache_negative_ttl: Option<u64>,
    /// Seconds past its TTL an answer is served while the server is down
    /// [3600].
    cache_stale_limit: Option<u64>,
    /// Answers kept per table [100000].
    cache_max_entries: Option<usize>,
    /// Seconds to connect [5].
    connect_timeout: Option<u64>,
    /// Seconds for one query [5].
    query_timeout: Option<u64>,
    /// Start even when a table's server does not answer at start-up (its
    /// mail is tempfailed until it does) [true; false refuses to start, as
    /// OpenDKIM does by default].
    soft_start: Option<bool>,
    /// OpenDKIM's LDAPBindUser: the DN to bind as [anonymous].
    ldap_bind_user: Option<String>,
    /// OpenDKIM's LDAPBindPassword.
    ldap_bind_password: Option<String>,
    /// OpenDKIM's LDAPAuthMechanism: `simple` or `EXTERNAL` [simple].
    ldap_auth_mechanism: Option<Spanned<String>>,
    /// OpenDKIM's LDAPUseTLS: StartTLS on `ldap://` [false].
    ldap_use_tls: Option<bool>,
    /// OpenDKIM's LDAPTimeout: seconds to connect and for each search;
    /// sets both timeouts for LDAP servers [5].
    ldap_timeout: Option<u64>,
}

/// How every data set kept on a server is cached and reached.
#[derive(Debug, Clone, Default)]
struct ServerSettings {
    cache: CacheSettings,
    connect: ConnectSettings,
    soft_start: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainSection {
    names: Spanned<Entries>,
    selector: String,
    key_file: Spanned<String>,
    #[serde(default)]
    subdomains: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySection {
    name: String,
    domain: String,
    selector: String,
    file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSection {
    from: String,
    keys: Vec<String>,
    signer: Option<String>,
}

/// A list written inline, or a data set as `opendkim.conf` names one.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a list of strings, or a data set string such as \"file:/path\" or \"refile:/path\""
)]
enum Entries {
    List(Vec<String>),
    DataSet(String),
}

/// Reads a native configuration file.
pub(crate) fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file = Location::file(path);
    let parsed: File = toml::from_str(&text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_and_column(&text, span.start))
            .unwrap_or((0, 0));
        ConfigError::Toml {
            at: file.at_line(line),
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let base = data_sets::resolve(&cwd, path.parent().unwrap_or(Path::new("")));
    TomlFile {
        path: path.to_path_buf(),
        file,
        text,
        base,
        server: ServerSettings {
            soft_start: true,
            ..ServerSettings::default()
        },
        errors: Vec::new(),
        warnings: Vec::new(),
    }
    .config(parsed, overrides)
}

/// A data set string in TOML: as in `opendkim.conf`, except that a name
/// without a type is a file (relative to the configuration's directory),
/// never a comma-separated list: inline lists are TOML arrays (or
/// `csl:a,b`).
fn file_by_default(spec: &str) -> String {
    let spec = spec.trim();
    let typed = spec
        .split_once(':')
        .is_some_and(|(kind, _)| !kind.contains([',', '/']) && !kind.is_empty());
    if typed || spec.starts_with('/') {
        spec.to_string()
    } else {
        format!("file:{spec}")
    }
}

/// 1-based line and column of byte `offset`.
fn line_and_column(text: &str, offset: usize) -> (u32, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (u32::try_from(line).unwrap_or(u32::MAX), column)
}

struct TomlFile {
    path: PathBuf,
    file: Location,
    text: String,
    base: PathBuf,
    server: ServerSettings,
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
}

impl TomlFile {
    /// Where a spanned value was written.
    fn at<T>(&self, value: &Spanned<T>) -> Location {
        self.file
            .at_line(line_and_column(&self.text, value.span().start).0)
    }

    fn problem(&mut self, at: Location, message: impl Into<String>) {
        self.errors.push(ConfigError::Native {
            at,
            message: message.into(),
        });
    }

    fn invalid(&mut self, at: Location, name: &str, value: String, expected: &str) {
        self.errors.push(ConfigError::InvalidValue {
            at,
            name: name.to_string(),
            value,
            expected: expected.to_string(),
        });
    }

    fn path(&self, name: &str) -> PathBuf {
        data_sets::resolve(&self.base, name)
    }

    fn config(mut self, file: File, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (service, uid) = self.service(file.server, overrides);
        let logging = self.logging(file.logging);
        let mut signing_section = file.signing;
        let options = LoadOptions {
            minimum_key_bits: signing_section
                .minimum_key_bits
                .unwrap_or(DEFAULT_MINIMUM_KEY_BITS),
            require_safe_keys: signing_section.require_safe_keys.unwrap_or(true),
            signer_uid: Some(
                uid.or(overrides.signer_uid)
                    .unwrap_or_else(|| nix::unistd::geteuid().as_raw()),
            ),
        };
        let mut signing = Signing {
            domain_key: None,
            tables: None,
            remote: None,
            multiple_signatures: signing_section.multiple_signatures,
            subdomains: file.domain.as_ref().is_some_and(|d| d.get_ref().subdomains),
        };
        if let Some(tables) = &file.tables {
            self.server = self.server_settings(tables);
        }
        // A [tables] with neither table holds only the server settings.
        let tables = file
            .tables
            .filter(|t| t.get_ref().key_table.is_some() || t.get_ref().signing_table.is_some());
        let keys_written = tables.is_some()
            || file.domain.is_some()
            || !file.key.is_empty()
            || !file.rule.is_empty();
        self.signing_sources(
            &mut signing,
            tables,
            file.domain,
            file.key,
            file.rule,
            &options,
        );
        let trust = self.trust(file.trust);
        let errors = self.error_actions(file.on_error);
        let exempt_domains = signing_section.exempt_domains.take().and_then(|value| {
            self.source("exempt_domains", value, |f, value| {
                f.entries("exempt_domains", value)
                    .map(|set| DomainSet::from_names(set.entries.iter().map(|e| e.key.as_str())))
            })
        });
        let dont_sign_mail_to = signing_section.dont_sign_mail_to.take().and_then(|value| {
            self.source("dont_sign_mail_to", value, |f, value| {
                let set = f.entries("dont_sign_mail_to", value)?;
                KeySet::from_data_set(&set)
                    .map_err(|e| f.errors.push(e.into()))
                    .ok()
            })
        });
        let sender_headers = signing_section
            .sender_headers
            .take()
            .and_then(|value| self.whole_set("sender_headers", value))
            .map(|names| names.iter().map(|(n, _)| n.to_ascii_lowercase()).collect())
            .unwrap_or_else(|| vec!["from".to_string()]);
        let max_header_bytes = match signing_section.max_header_bytes {
            Some(0) => usize::MAX,
            Some(n) => n,
            None => DEFAULT_MAX_HEADER_BYTES,
        };
        let max_header_count = match signing_section.max_header_count {
            Some(0) => usize::MAX,
            Some(n) => n,
            None => DEFAULT_MAX_HEADER_COUNT,
        };
        let software_header = signing_section.software_header;
        let signature = self.signature(&mut signing_section);
        let mode_written = file.mode.is_some();
        let mode = self.mode(file.mode);
        let verification = self.verification(mode, options.minimum_key_bits, file.verify);
        if !keys_written && !mode_written && self.errors.is_empty() {
            // The file as installed (the package's, or a new one): nothing
            // to sign with and no word that only verifying is wanted. Not
            // listening says so at once, where Postfix with
            // milter_default_action = accept would send all mail unsigned.
            self.problem(
                self.file.clone(),
                "no signing keys are configured: add a [[key]] and a [[rule]] (or [tables] or \
                 [domain]) saying what to sign with, or write mode = \"v\" to only verify",
            );
        }
        if !self.errors.is_empty() {
            return Err(ConfigError::from_problems(self.errors));
        }
        if signing.domain_key.is_none() && signing.tables.is_none() && signing.remote.is_none() {
            self.warnings.push(Warning::new(
                Some(self.file.clone()),
                "no signing keys are configured (no [[key]] and [[rule]], [tables] or [domain]), \
                 so dkim-sidecar will not sign any message",
            ));
        }
        Ok(Config {
            origin: Origin {
                path: self.path.clone(),
                format: Format::Toml,
            },
            service,
            logging,
            policy: Policy {
                mode,
                signing,
                trust,
                sender_headers,
                exempt_domains,
                dont_sign_mail_to,
                signature,
                errors,
                max_header_bytes,
                max_header_count,
                software_header,
                verification,
                soft_start: self.server.soft_start,
            },
            warnings: self.warnings,
        })
    }

    /// `[tables]`' settings for data sets kept on a server.
    fn server_settings(&mut self, tables: &Spanned<TablesSection>) -> ServerSettings {
        use crate::remote::{LdapLogin, LdapMechanism};
        let at = self.at(tables);
        let tables = tables.get_ref();
        let secs = std::time::Duration::from_secs;
        let defaults = CacheSettings::default();
        let ttl = tables.cache_ttl.map_or(defaults.ttl, secs);
        let cache = CacheSettings {
            ttl,
            negative_ttl: tables.cache_negative_ttl.map_or(ttl, secs),
            stale_limit: tables.cache_stale_limit.map_or(defaults.stale_limit, secs),
            max_entries: tables.cache_max_entries.unwrap_or(defaults.max_entries),
        };
        let connect_defaults = ConnectSettings::default();
        let mut connect = ConnectSettings {
            connect_timeout: tables
                .connect_timeout
                .map_or(connect_defaults.connect_timeout, secs),
            query_timeout: tables
                .query_timeout
                .map_or(connect_defaults.query_timeout, secs),
            ..connect_defaults
        };
        let mechanism = match &tables.ldap_auth_mechanism {
            None => LdapMechanism::Simple,
            Some(value) => match LdapMechanism::parse(value.get_ref().trim()) {
                Some(m) => m,
                None => {
                    let at = self.at(value);
                    self.invalid(
                        at,
                        "ldap_auth_mechanism",
                        value.get_ref().clone(),
                        "`simple` (or `none`), or `EXTERNAL` (SASL over ldapi://)",
                    );
                    LdapMechanism::Simple
                }
            },
        };
        connect.ldap = LdapLogin {
            bind_user: tables.ldap_bind_user.clone(),
            bind_password: tables
                .ldap_bind_password
                .clone()
                .map(crate::tables::remote::Secret::new),
            mechanism,
            start_tls: tables.ldap_use_tls.unwrap_or(false),
        };
        match tables.ldap_timeout {
            Some(0) => self.invalid(
                at,
                "ldap_timeout",
                "0".to_string(),
                "a number of seconds, at least 1",
            ),
            Some(limit) => {
                connect.connect_timeout = secs(limit);
                connect.query_timeout = secs(limit);
            }
            None => {}
        }
        ServerSettings {
            cache,
            connect,
            soft_start: tables.soft_start.unwrap_or(true),
        }
    }

    /// A data set that may be kept on a server: a [`RemoteSet`] asked per
    /// message when the value is a `dsn:`/`ldap:` string, otherwise what
    /// `local` reads. `None` when it cannot be used (the error is kept).
    ///
    /// [`RemoteSet`]: crate::remote::RemoteSet
    fn source<T>(
        &mut self,
        name: &'static str,
        value: Spanned<Entries>,
        local: impl FnOnce(&mut Self, Spanned<Entries>) -> Option<T>,
    ) -> Option<TableSource<T>> {
        if let Entries::DataSet(spec) = value.get_ref() {
            let at = self.at(&value);
            match remote_sets::server_set(
                name,
                &file_by_default(spec),
                &at,
                &self.base,
                self.server.cache,
                self.server.connect.clone(),
            ) {
                Ok(Some(set)) => return Some(TableSource::Remote(set)),
                Ok(None) => {}
                Err(e) => {
                    self.errors.push(e);
                    return None;
                }
            }
        }
        local(self, value).map(TableSource::Local)
    }

    fn service(&mut self, server: ServerSection, overrides: &Overrides) -> (Service, Option<u32>) {
        let mut settings = ServiceSettings::new(
            Format::Toml,
            self.file.clone(),
            "add `sockets = [\"inet:8891@127.0.0.1\"]` under [server], or pass --socket",
        );
        settings.sockets = server
            .sockets
            .into_iter()
            .map(|spec| self.written("sockets", spec))
            .collect();
        settings.socket_mode = server
            .socket_mode
            .map(|m| self.written("socket_mode", m))
            .map(|m| Written::new(m.name, i64::from(m.value), m.at));
        settings.socket_owner = server.socket_owner.map(|o| self.written("socket_owner", o));
        settings.socket_group = server.socket_group.map(|g| self.written("socket_group", g));
        settings.pid_file = server.pid_file.map(|p| self.path(&p));
        settings.user = server.user.map(|u| self.written("user", u));
        settings.group = server.group.map(|g| self.written("group", g));
        settings.umask = server
            .umask
            .map(|m| self.written("umask", m))
            .map(|m| Written::new(m.name, i64::from(m.value), m.at));
        settings.allow_root = server.allow_root;
        settings.max_frame_bytes = server.max_frame_bytes;
        settings.idle_timeout_seconds = server.idle_timeout_seconds;
        settings.frame_timeout_seconds = server.frame_timeout_seconds;
        settings.write_timeout_seconds = server.write_timeout_seconds;
        settings.max_connections = server.max_connections;
        settings.shutdown_grace_seconds = server.shutdown_grace_seconds;
        settings.metrics_listen = server
            .metrics_listen
            .map(|a| self.written("metrics_listen", a));
        settings.watch_interval_seconds = server
            .watch_interval_seconds
            .map(|w| self.written("watch_interval_seconds", w));
        Problems::gather(&mut self.errors, &mut self.warnings, |problems| {
            settings.resolve(overrides, problems)
        })
    }

    /// A TOML value with its option's name and where it was written.
    fn written<T>(&self, name: &'static str, value: Spanned<T>) -> Written<T> {
        let at = self.at(&value);
        Written::new(name, value.into_inner(), at)
    }

    fn logging(&mut self, section: LoggingSection) -> Logging {
        let defaults = Logging::default();
        let syslog_facility = match section.syslog_facility {
            Some(facility) => match syslog_facility(facility.get_ref()) {
                Some(f) => f.to_string(),
                None => {
                    let at = self.at(&facility);
                    self.invalid(
                        at,
                        "syslog_facility",
                        facility.into_inner(),
                        "use a syslog facility such as mail, daemon or local0 to local7",
                    );
                    defaults.syslog_facility.clone()
                }
            },
            None => defaults.syslog_facility.clone(),
        };
        Logging {
            syslog: section.syslog.unwrap_or(defaults.syslog),
            syslog_facility,
            log_success: section.log_success.unwrap_or(defaults.log_success),
            log_why: section.log_why.unwrap_or(defaults.log_why),
            json: section.json.unwrap_or(defaults.json),
        }
    }

    /// A data set from an inline list or a data set string.
    fn entries(&mut self, name: &str, value: Spanned<Entries>) -> Option<DataSet> {
        let at = self.at(&value);
        match value.into_inner() {
            Entries::List(items) => {
                if let Some(item) = items.iter().find(|i| i.contains(',')) {
                    self.problem(
                        at,
                        format!("{name}: `{item}` contains a comma; write one entry per string"),
                    );
                    return None;
                }
                Some(DataSet::from_csl(&items.join(","), &at))
            }
            Entries::DataSet(spec) => {
                match data_sets::open(&file_by_default(&spec), &at, &self.base) {
                    Ok((set, warnings)) => {
                        self.warnings.extend(warnings);
                        Some(set)
                    }
                    Err(e) => {
                        self.errors.push(e.into());
                        None
                    }
                }
            }
        }
    }

    fn host_list(
        &mut self,
        name: &'static str,
        value: Option<Spanned<Entries>>,
    ) -> Option<TableSource<HostList>> {
        self.source(name, value?, |f, value| {
            let set = f.entries(name, value)?;
            match HostList::from_data_set(set) {
                Ok(list) => {
                    f.warnings.extend(list.warnings().iter().cloned());
                    Some(list)
                }
                Err(e) => {
                    f.errors.push(e.into());
                    None
                }
            }
        })
    }

    fn trust(&mut self, section: TrustSection) -> Trust {
        use crate::policy::TableSource;
        let internal_hosts = self
            .host_list("internal_hosts", section.internal_hosts)
            .unwrap_or_else(|| TableSource::Local(HostList::default_internal()));
        let mta_names = section
            .mta_names
            .and_then(|value| {
                self.source("mta_names", value, |f, value| {
                    f.entries("mta_names", value)
                        .map(|set| data_sets::keys(&set))
                })
            })
            .unwrap_or_else(|| TableSource::Local(Vec::new()));
        Trust {
            internal_hosts,
            external_ignore: self.host_list("external_ignore", section.external_ignore),
            peers: self.host_list("peers", section.peers),
            macros: section
                .macros
                .iter()
                .map(|m| match m.split_once('=') {
                    Some((name, values)) => macro_rule(name, Some(values)),
                    None => macro_rule(m, None),
                })
                .collect(),
            mta_names,
        }
    }

    fn action(&mut self, name: &str, value: Option<Spanned<String>>) -> Action {
        let Some(value) = value else {
            return Action::Tempfail;
        };
        match parse_action(value.get_ref()) {
            Some(action) => action,
            None => {
                let at = self.at(&value);
                self.invalid(
                    at,
                    name,
                    value.into_inner(),
                    "use accept, discard, quarantine, reject or tempfail",
                );
                Action::Tempfail
            }
        }
    }

    fn error_actions(&mut self, section: OnErrorSection) -> ErrorActions {
        ErrorActions {
            internal_error: self.action("internal_error", section.internal_error),
            key_error: self.action("key_error", section.key_error),
            signing_error: self.action("signing_error", section.signing_error),
        }
    }

    /// A header list, every entry located at the list.
    fn header_list(
        &mut self,
        name: &'static str,
        value: Option<Spanned<Entries>>,
    ) -> Option<Written<Vec<(String, Location)>>> {
        let value = value?;
        let at = self.at(&value);
        let entries = self.whole_set(name, value)?;
        Some(Written::new(name, entries, at))
    }

    /// The names of a list OpenDKIM reads whole at start-up: written
    /// inline, in a file, or asked of a server now.
    fn whole_set(
        &mut self,
        name: &'static str,
        value: Spanned<Entries>,
    ) -> Option<Vec<(String, Location)>> {
        let at = self.at(&value);
        if let Entries::DataSet(spec) = value.get_ref() {
            match remote_sets::read_whole(
                name,
                &file_by_default(spec),
                &at,
                &self.base,
                self.server.connect.clone(),
            ) {
                Ok(Some(keys)) => return Some(keys.into_iter().map(|k| (k, at.clone())).collect()),
                Ok(None) => {}
                Err(e) => {
                    self.errors.push(e);
                    return None;
                }
            }
        }
        let set = self.entries(name, value)?;
        Some(set.entries.into_iter().map(|e| (e.key, e.at)).collect())
    }

    fn signature(&mut self, section: &mut SigningSection) -> SignatureSettings {
        let mut rules = SignatureRules::new((Canonicalization::Relaxed, Canonicalization::Simple));
        rules.canonicalization = section
            .canonicalization
            .clone()
            .map(|c| self.written("canonicalization", c));
        rules.sign_headers = self.header_list("sign_headers", section.sign_headers.take());
        rules.omit_headers = self.header_list("omit_headers", section.omit_headers.take());
        rules.oversign_headers =
            self.header_list("oversign_headers", section.oversign_headers.take());
        rules.signature_ttl_seconds = section.signature_ttl_seconds;
        rules.request_reports = section.request_reports;
        rules.atps_domains = section.atps_domains.take().and_then(|value| {
            self.source("atps_domains", value, |f, value| {
                f.entries("atps_domains", value)
                    .map(|set| DomainSet::from_names(set.entries.iter().map(|e| e.key.as_str())))
            })
        });
        rules.replace_rules = section.replace_rules.take().map(|path| {
            let at = self.at(&path);
            Written::new("replace_rules", self.path(path.get_ref()), at)
        });
        rules.replace_headers = section.replace_headers.take().and_then(|value| {
            self.source("replace_headers", value, |f, value| {
                let set = f.entries("replace_headers", value)?;
                KeySet::from_data_set(&set)
                    .map_err(|e| f.errors.push(e.into()))
                    .ok()
            })
        });
        rules.body_length_recipients = section.body_length_recipients.take().and_then(|value| {
            self.source("body_length_recipients", value, |f, value| {
                let set = f.entries("body_length_recipients", value)?;
                KeySet::from_data_set(&set)
                    .map_err(|e| f.errors.push(e.into()))
                    .ok()
            })
        });
        Problems::gather(&mut self.errors, &mut self.warnings, |problems| {
            rules.resolve(problems)
        })
    }

    fn signing_sources(
        &mut self,
        signing: &mut Signing,
        tables: Option<Spanned<TablesSection>>,
        domain: Option<Spanned<DomainSection>>,
        keys: Vec<Spanned<KeySection>>,
        rules: Vec<Spanned<RuleSection>>,
        options: &LoadOptions,
    ) {
        let inline = !keys.is_empty() || !rules.is_empty();
        if let Some(tables) = &tables
            && inline
        {
            let at = self.at(tables);
            self.problem(
                at,
                "[tables] and [[key]]/[[rule]] both say what to sign with; keep one of them",
            );
            return;
        }
        if let Some(domain) = &domain
            && (inline || tables.is_some())
        {
            let at = self.at(domain);
            self.problem(
                at,
                "[domain] cannot be combined with [tables] or [[key]]/[[rule]]; keep one of them",
            );
            return;
        }
        if let Some(tables) = tables {
            let at = self.at(&tables);
            let tables = tables.into_inner();
            let (Some(key_table), Some(signing_table)) = (tables.key_table, tables.signing_table)
            else {
                self.problem(
                    at,
                    "[tables] needs both key_table and signing_table (or neither, when it only \
                     says how data sets kept on a server are reached)",
                );
                return;
            };
            if self.remote_tables(signing, &key_table, &signing_table, options) {
                return;
            }
            let key_table = self.key_table_file(key_table);
            let signing_table = self.signing_table_file(signing_table);
            if let (Some(kt), Some(st)) = (key_table, signing_table) {
                self.signing_tables(signing, kt, st, options);
            }
        } else if inline {
            self.inline_tables(signing, keys, rules, options);
        } else if let Some(domain) = domain {
            let domain = domain.into_inner();
            let names = self
                .source("[domain] names", domain.names, |f, value| {
                    f.entries("names", value).map(|set| {
                        DomainSet::from_names(set.entries.iter().map(|e| e.key.as_str()))
                    })
                })
                .unwrap_or_else(|| TableSource::Local(DomainSet::default()));
            let at = self.at(&domain.key_file);
            let file = self.path(domain.key_file.get_ref());
            signing.domain_key = Some(signing_keys::domain_key(
                names,
                domain.selector,
                &file,
                &at,
                options,
                &mut self.warnings,
            ));
        }
    }

    fn signing_tables(
        &mut self,
        signing: &mut Signing,
        key_table: KeyTable,
        signing_table: SigningTable,
        options: &LoadOptions,
    ) {
        signing.tables = Some(signing_keys::signing_tables(
            key_table,
            signing_table,
            options,
            &mut self.warnings,
        ));
    }

    /// Tables of which one is kept on a server: true when handled here.
    fn remote_tables(
        &mut self,
        signing: &mut Signing,
        key_table: &Spanned<String>,
        signing_table: &Spanned<String>,
        options: &LoadOptions,
    ) -> bool {
        let kt_at = self.at(key_table);
        let st_at = self.at(signing_table);
        let kt = file_by_default(key_table.get_ref());
        let st = file_by_default(signing_table.get_ref());
        match remote_sets::remote_signing(
            (&kt, &kt_at),
            (&st, &st_at),
            &self.base,
            options,
            &mut self.warnings,
            self.server.cache,
            self.server.connect.clone(),
        ) {
            Ok(Some(remote)) => {
                signing.remote = Some(std::sync::Arc::new(remote));
                true
            }
            Ok(None) => false,
            Err(errors) => {
                self.errors.extend(errors);
                true
            }
        }
    }

    fn key_table_file(&mut self, spec: Spanned<String>) -> Option<KeyTable> {
        let at = self.at(&spec);
        let (set, warnings) = data_sets::open(&file_by_default(spec.get_ref()), &at, &self.base)
            .map_err(|e| self.errors.push(e.into()))
            .ok()?;
        self.warnings.extend(warnings);
        let mut table = KeyTable::from_data_set(set)
            .map_err(|e| self.errors.push(e.into()))
            .ok()?;
        let base = self.base.clone();
        table.resolve_relative_files(|p| data_sets::resolve(&base, p));
        Some(table)
    }

    fn signing_table_file(&mut self, spec: Spanned<String>) -> Option<SigningTable> {
        let at = self.at(&spec);
        let (set, warnings) = data_sets::open(&file_by_default(spec.get_ref()), &at, &self.base)
            .map_err(|e| self.errors.push(e.into()))
            .ok()?;
        self.warnings.extend(warnings);
        SigningTable::from_data_set(set)
            .map_err(|e| self.errors.push(e.into()))
            .ok()
    }

    fn inline_tables(
        &mut self,
        signing: &mut Signing,
        keys: Vec<Spanned<KeySection>>,
        rules: Vec<Spanned<RuleSection>>,
        options: &LoadOptions,
    ) {
        let problems_before = self.errors.len();
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            let at = self.at(&key);
            let key = key.into_inner();
            for (field, value) in [
                ("name", &key.name),
                ("domain", &key.domain),
                ("selector", &key.selector),
                ("file", &key.file),
            ] {
                if value.trim().is_empty() {
                    self.problem(at.clone(), format!("[[key]] has an empty `{field}`"));
                }
            }
            entries.push(KeyEntry {
                domain: if key.domain == "%" {
                    KeyDomain::Sender
                } else {
                    KeyDomain::Fixed(key.domain.to_ascii_lowercase())
                },
                name: key.name,
                selector: key.selector,
                source: KeySource::File(PathTemplate::new(
                    self.path(&key.file).to_string_lossy().into_owned(),
                )),
                at,
            });
        }
        if entries.is_empty() {
            let at = self.at(&rules[0]);
            self.problem(
                at,
                "[[rule]] needs keys to sign with: add a [[key]] with name, domain, selector and \
                 file",
            );
            return;
        }
        if rules.is_empty() {
            self.problem(
                entries[0].at.clone(),
                "[[key]] is never used: add a [[rule]] saying which senders it signs for, e.g. \
                 from = \"*@example.com\"",
            );
            return;
        }
        let mut signing_rules = Vec::with_capacity(rules.len());
        for rule in rules {
            let at = self.at(&rule);
            let rule = rule.into_inner();
            if rule.keys.is_empty() {
                self.problem(
                    at.clone(),
                    "[[rule]] has no keys; list at least one key name",
                );
            }
            for name in &rule.keys {
                if !entries.iter().any(|e| &e.name == name) {
                    self.problem(
                        at.clone(),
                        format!(
                            "[[rule]] uses key `{name}`, but no [[key]] has that name; add one or \
                             fix the name (names are case-sensitive)"
                        ),
                    );
                }
            }
            signing_rules.push(SigningRule {
                pattern: rule.from,
                keys: rule
                    .keys
                    .into_iter()
                    .map(|k| (k, rule.signer.clone()))
                    .collect(),
                at,
            });
        }
        let key_table = KeyTable::from_entries(entries, self.file.clone())
            .map_err(|e| self.errors.push(e.into()))
            .ok();
        let signing_table = SigningTable::from_rules(signing_rules, self.file.clone())
            .map_err(|e| self.errors.push(e.into()))
            .ok();
        if let (Some(kt), Some(st)) = (key_table, signing_table)
            && self.errors.len() == problems_before
        {
            self.signing_tables(signing, kt, st, options);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use super::*;
    use crate::config::fixture::Dir;

    fn dir() -> Dir {
        Dir::new("dkim-sidecar.toml", Config::from_toml_file)
    }

    const DUAL: &str = r#"
[server]
sockets = ["inet:8891@127.0.0.1"]

[[key]]
name = "rsa"
domain = "example.com"
selector = "default"
file = "default.private"

[[key]]
name = "ed"
domain = "example.com"
selector = "ed25519"
file = "ed25519.private"

[[rule]]
from = "*@example.com"
keys = ["rsa", "ed"]
"#;

    #[test]
    fn inline_keys_and_rules_dual_sign_with_relative_files() {
        let dir = dir();
        let config = dir.load(DUAL).unwrap();
        assert_eq!(config.origin.format, Format::Toml);
        let tables = config.policy.signing.tables.as_ref().unwrap();
        let first = tables.signing_table.find_first("bob", "example.com");
        let keys: Vec<&str> = first.iter().map(|m| m.key_name.as_str()).collect();
        assert_eq!(keys, ["rsa", "ed"]);
        assert_eq!(
            first[0].entry.at.to_string(),
            dir.line(17).trim_end_matches(": ")
        );
        assert!(tables.keys.loaded_key("ed").is_some());
        assert_eq!(
            tables.key_table.get("rsa").unwrap().source,
            KeySource::File(PathTemplate::new(
                dir.path("default.private").to_string_lossy().into_owned()
            ))
        );
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn defaults_sign_relaxed_simple_with_tempfail_everywhere() {
        let dir = dir();
        let config = dir.load(DUAL).unwrap();
        let policy = &config.policy;
        assert_eq!(
            policy.signature.header_canonicalization,
            Canonicalization::Relaxed
        );
        assert_eq!(
            policy.signature.body_canonicalization,
            Canonicalization::Simple
        );
        assert_eq!(policy.errors, ErrorActions::default());
        assert_eq!(
            policy.trust.internal_hosts.local().unwrap().entries(),
            ["127.0.0.1", "::1"]
        );
        assert!(policy.mode.sign && policy.mode.verify, "sv, as OpenDKIM");
        assert!(policy.verification.is_some());
    }

    #[test]
    fn no_keys_and_no_mode_stops_start_up_and_says_what_to_add() {
        let dir = dir();
        let err = dir
            .load("[server]\nsockets = [\"inet:8891@127.0.0.1\"]\n")
            .unwrap_err();
        let problems: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("no signing keys are configured: add a [[key]] and a [[rule]]")
                && problems[0].contains("mode = \"v\""),
            "{problems:?}"
        );
        for mode in ["v", "sv"] {
            dir.load(&format!(
                "mode = \"{mode}\"\n[server]\nsockets = [\"inet:8891@127.0.0.1\"]\n"
            ))
            .unwrap_or_else(|e| panic!("mode {mode}: {e}"));
        }
    }

    #[test]
    fn unknown_key_is_an_error_with_line_and_column() {
        let dir = dir();
        let errors = dir.errors("[server]\nsockets = [\"inet:8891@127.0.0.1\"]\nsokets = 1\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("{}3:1: ", dir.line(0).trim_end_matches("0: "))),
            "{errors:?}"
        );
        assert!(errors[0].contains("unknown field `sokets`"), "{errors:?}");
    }

    #[test]
    fn settings_map_onto_the_same_config_as_opendkim_conf() {
        let dir = dir();
        fs::write(dir.path("hosts"), "10.0.0.0/8\n!10.9.9.9\n").unwrap();
        let config = dir
            .load(
                r#"
[server]
sockets = ["local:/run/dkim/dkim.sock", "inet:8891@127.0.0.1"]
socket_mode = 0o660
socket_group = "root"
user = "root"
umask = 0o007
max_connections = 10
idle_timeout_seconds = 60

[logging]
syslog = true
syslog_facility = "local3"
json = true

[signing]
canonicalization = "simple"
sign_headers = ["*", "+x-mailer", "-subject"]
oversign_headers = ["From", "To"]
signature_ttl_seconds = 3600
max_header_bytes = 0
max_header_count = 50
exempt_domains = ["lists.example.com"]

[on_error]
key_error = "accept"

[trust]
internal_hosts = "file:hosts"
peers = ["192.0.2.1"]
mta_names = ["submission"]
macros = ["{auth_authen}", "daemon_name=ORIG|SUB"]

[domain]
names = ["example.com"]
selector = "default"
key_file = "default.private"
subdomains = true
"#,
            )
            .unwrap();
        let service = &config.service;
        assert_eq!(service.sockets.len(), 2);
        assert_eq!(service.socket_access.mode, Some(0o660));
        assert_eq!(service.umask, Some(0o007));
        assert_eq!(service.server.max_connections, 10);
        assert_eq!(service.server.limits.timeouts.idle, Duration::from_secs(60));
        assert!(config.logging.syslog && config.logging.json);
        assert_eq!(config.logging.syslog_facility, "local3");
        let policy = &config.policy;
        assert_eq!(
            policy.signature.header_canonicalization,
            Canonicalization::Simple
        );
        assert!(policy.signature.headers.signs(b"X-Mailer"));
        assert!(!policy.signature.headers.signs(b"Subject"));
        assert_eq!(policy.signature.headers.oversigned(), ["from", "to"]);
        assert_eq!(policy.signature.expiry, Some(Duration::from_secs(3600)));
        assert_eq!(policy.max_header_bytes, usize::MAX);
        assert_eq!(policy.max_header_count, 50);
        assert_eq!(policy.errors.key_error, Action::Accept);
        assert_eq!(policy.errors.internal_error, Action::Tempfail);
        assert!(
            policy
                .trust
                .internal_hosts
                .local()
                .unwrap()
                .check_ip("10.1.1.1".parse().unwrap())
        );
        assert!(
            !policy
                .trust
                .internal_hosts
                .local()
                .unwrap()
                .check_ip("10.9.9.9".parse().unwrap())
        );
        assert_eq!(policy.trust.macros.len(), 2);
        let key = policy.signing.domain_key.as_ref().unwrap();
        assert!(policy.signing.subdomains);
        assert_eq!(
            key.domains
                .local()
                .unwrap()
                .covering("a.example.com", true)
                .as_deref(),
            Some("example.com")
        );
        assert!(
            policy
                .exempt_domains
                .as_ref()
                .and_then(|s| s.local())
                .unwrap()
                .covering("lists.example.com", false)
                .is_some()
        );
    }

    #[test]
    fn rule_naming_an_undefined_key_names_the_rule() {
        let dir = dir();
        let errors =
            dir.errors(&DUAL.replace(r#"keys = ["rsa", "ed"]"#, r#"keys = ["rsa", "Ed"]"#));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(&dir.line(17)), "{errors:?}");
        assert!(errors[0].contains("uses key `Ed`"), "{errors:?}");
    }

    #[test]
    fn duplicate_key_name_is_refused() {
        let dir = dir();
        let errors = dir.errors(&DUAL.replace(r#"name = "ed""#, r#"name = "rsa""#));
        assert!(
            errors.iter().any(|e| e.contains("already used")),
            "{errors:?}"
        );
    }

    #[test]
    fn keys_without_rules_and_rules_without_keys_are_refused() {
        let dir = dir();
        let keys_only = DUAL.split("[[rule]]").next().unwrap();
        let errors = dir.errors(keys_only);
        assert!(
            errors[0].starts_with(&dir.line(5)) && errors[0].contains("never used"),
            "{errors:?}"
        );
        let rules_only =
            "[server]\nsockets = [\"inet:1@127.0.0.1\"]\n[[rule]]\nfrom = \"*\"\nkeys = [\"k\"]\n";
        let errors = dir.errors(rules_only);
        assert!(
            errors[0].starts_with(&dir.line(3)) && errors[0].contains("needs keys"),
            "{errors:?}"
        );
    }

    #[test]
    fn tables_and_inline_rules_cannot_be_combined() {
        let dir = dir();
        let errors = dir.errors(&format!(
            "{DUAL}\n[tables]\nkey_table = \"file:/etc/kt\"\nsigning_table = \"refile:/etc/st\"\n"
        ));
        assert!(errors[0].contains("keep one of them"), "{errors:?}");
    }

    #[test]
    fn missing_key_file_names_the_key() {
        let dir = dir();
        let errors = dir.faults(&DUAL.replace("ed25519.private", "gone.private"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(&dir.line(11)), "{errors:?}");
        assert!(
            errors[0].contains("gone.private: key file not found"),
            "{errors:?}"
        );
    }

    #[test]
    fn bad_values_name_their_line() {
        let dir = dir();
        let errors = dir.errors(
            "[server]\nsockets = [\"inet:0@x\"]\nsocket_mode = 660\nuser = \"no-such-dkim-user\"\n\
             [signing]\ncanonicalization = \"loose\"\n[on_error]\ninternal_error = \"bounce\"\n",
        );
        assert_eq!(errors.len(), 5, "{errors:?}");
        for (line, what) in [
            (2, "invalid socket"),
            (3, "0o660"),
            (4, "does not exist"),
            (6, "relaxed/simple"),
            (8, "tempfail"),
        ] {
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with(&dir.line(line)) && e.contains(what)),
                "line {line}: {errors:?}"
            );
        }
    }

    #[test]
    fn metrics_address_and_watch_interval_are_read() {
        let dir = dir();
        let config = dir
            .load(&DUAL.replace(
                "[server]\n",
                "[server]\nmetrics_listen = \"127.0.0.1:9820\"\nwatch_interval_seconds = 5\n",
            ))
            .unwrap();
        assert_eq!(
            config.service.metrics_listen,
            Some("127.0.0.1:9820".parse().unwrap())
        );
        assert_eq!(config.service.watch_interval, Some(Duration::from_secs(5)));
        let config = dir.load(DUAL).unwrap();
        assert_eq!(config.service.metrics_listen, None);
        assert_eq!(config.service.watch_interval, None);
    }

    #[test]
    fn bad_metrics_address_and_zero_interval_name_their_line() {
        let dir = dir();
        let errors = dir.errors(&DUAL.replace(
            "[server]\n",
            "[server]\nmetrics_listen = \"localhost\"\nwatch_interval_seconds = 0\n",
        ));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with(&dir.line(3)) && errors[0].contains("127.0.0.1:9820"));
        assert!(errors[1].starts_with(&dir.line(4)) && errors[1].contains("1 or more"));
    }

    #[test]
    fn list_or_data_set_is_explained_when_neither() {
        let dir = dir();
        let errors =
            dir.errors("[server]\nsockets = [\"inet:1@127.0.0.1\"]\n[trust]\ninternal_hosts = 5\n");
        assert!(
            errors[0].contains("a list of strings, or a data set string"),
            "{errors:?}"
        );
    }

    #[test]
    fn untyped_data_set_string_is_a_file_next_to_the_configuration() {
        assert_eq!(file_by_default("hosts"), "file:hosts");
        assert_eq!(file_by_default("refile:hosts"), "refile:hosts");
        assert_eq!(file_by_default("/etc/hosts.list"), "/etc/hosts.list");
        assert_eq!(file_by_default("csl:a,b"), "csl:a,b");
        let dir = dir();
        fs::write(dir.path("TrustedHosts"), "192.0.2.0/24\n").unwrap();
        let config = dir
            .load(&format!(
                "{DUAL}\n[trust]\ninternal_hosts = \"TrustedHosts\"\n"
            ))
            .unwrap();
        let hosts = config.policy.trust.internal_hosts.local().unwrap();
        assert_eq!(hosts.entries(), ["192.0.2.0/24"]);
        assert_eq!(hosts.origin().path.as_ref(), dir.path("TrustedHosts"));
    }

    #[test]
    fn missing_sockets_are_refused() {
        let dir = dir();
        let errors = dir.errors("[signing]\nmultiple_signatures = true\n");
        assert!(
            errors[0].contains("no socket to listen on") && errors[0].contains("sockets = "),
            "{errors:?}"
        );
    }

    #[test]
    fn data_sets_on_a_server_and_ldap_login_are_said_in_toml() {
        use TableSource::{Local, Remote};
        let dir = dir();
        let config = dir
            .load(&format!(
                "{DUAL}\n[tables]\ncache_ttl = 7\nsoft_start = false\n\
                 ldap_bind_user = \"cn=reader,dc=example,dc=com\"\n\
                 ldap_bind_password = \"pw-LDAP-1\"\nldap_auth_mechanism = \"simple\"\n\
                 ldap_use_tls = true\nldap_timeout = 3\n\
                 [trust]\ninternal_hosts = \"ldap://127.0.0.1/dc=example?cn?sub?(cn=$d)\"\n\
                 peers = \"dsn:pgsql://u:pw-9@127.0.0.1/db/table=p?keycol=h?datacol=h\"\n\
                 mta_names = [\"submission\"]\n"
            ))
            .unwrap();
        let policy = &config.policy;
        assert!(!policy.soft_start);
        assert!(
            policy.signing.tables.is_some(),
            "[[key]]/[[rule]] still sign"
        );
        let Remote(internal) = &policy.trust.internal_hosts else {
            panic!("not on a server")
        };
        assert_eq!(internal.role(), "internal_hosts");
        assert!(matches!(policy.trust.peers, Some(Remote(_))));
        assert!(matches!(&policy.trust.mta_names, Local(names) if names == &["submission"]));
        let shown = format!("{internal:?}");
        assert!(!shown.contains("pw-LDAP-1"), "{shown}");
        assert_eq!(policy.server_sets().len(), 2);

        let config = dir
            .load(
                "[server]\nsockets = [\"inet:8891@127.0.0.1\"]\n[domain]\n\
                 names = \"dsn:pgsql://u@127.0.0.1/db/table=d?keycol=n?datacol=n\"\n\
                 selector = \"s\"\nkey_file = \"default.private\"\n",
            )
            .unwrap();
        let key = config.policy.signing.domain_key.as_ref().unwrap();
        let Remote(domains) = &key.domains else {
            panic!("[domain] names is a data set on a server")
        };
        assert_eq!(domains.role(), "[domain] names");

        let errors = dir.errors(&format!(
            "{DUAL}\n[tables]\nldap_auth_mechanism = \"DIGEST-MD5\"\nldap_timeout = 0\n"
        ));
        assert!(
            errors.iter().any(|e| e.contains("ldap_auth_mechanism")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("ldap_timeout")),
            "{errors:?}"
        );
        let errors = dir.errors(
            "[server]\nsockets = [\"inet:8891@127.0.0.1\"]\n[tables]\nkey_table = \"kt\"\n",
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("both key_table and signing_table")),
            "{errors:?}"
        );
    }

    #[test]
    fn remove_ar_from_and_replace_headers_on_a_server_are_said_in_toml() {
        use crate::policy::TableSource::Remote;
        let dir = dir();
        dir.write("rules", "@host\\.example\t@example\n");
        let config = dir
            .load(&format!(
                "{DUAL}\n[signing]\nreplace_rules = \"rules\"\n\
                 replace_headers = \"dsn:pgsql://u:pw-8@127.0.0.1/db/table=h?keycol=n?datacol=n\"\n\
                 [verify]\n\
                 remove_ar_from = \"ldap://127.0.0.1/dc=example?cn?sub?(cn=$d)\"\n"
            ))
            .unwrap();
        let policy = &config.policy;
        let rules = policy.signature.replace_rules.as_ref().unwrap();
        assert_eq!(rules.fields_on_server().unwrap().role(), "replace_headers");
        let verification = policy.verification.as_ref().unwrap();
        let Some(Remote(remove_from)) = &verification.remove_from else {
            panic!("not on a server")
        };
        assert_eq!(remove_from.role(), "remove_ar_from");
        assert_eq!(policy.server_sets().len(), 2);
    }
}
