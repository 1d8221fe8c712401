//! `opendkim.conf`, read unchanged into a [`Config`].
//!
//! [`grammar`](super::grammar) turns the file (and its includes) into
//! located settings; this module gives them OpenDKIM's meaning, as
//! `dkimf_config_load` and `main` in OpenDKIM 2.11's `opendkim.c` do:
//!
//! - start-up refusals: SigningTable without KeyTable; in signing mode
//!   KeyTable without SigningTable, KeyFile without Selector (or the
//!   reverse), Domain without KeyFile and Selector; every key a
//!   SigningTable names must be in the KeyTable; every key must load;
//! - with a KeyTable, Domain, KeyFile and Selector are ignored (we say so);
//! - relative file names are relative to the working directory, or to
//!   BaseDirectory when it is set (OpenDKIM changes there before opening
//!   any table or key); Include is read before that, from the working
//!   directory;
//! - `Canonicalization` with one word sets the header method only (the body
//!   stays `simple`);
//! - `On-Default` sets every action, then the specific `On-*` options
//!   override it. Of the actions that matter for signing, a key that cannot
//!   be loaded counts as an internal error, as in OpenDKIM;
//!   `On-SignatureError` applies when a signature cannot be made; its
//!   default here is tempfail, not OpenDKIM's reject, so that no message
//!   that should have been signed is lost. The verification actions
//!   (On-BadSignature, On-DNSError, On-KeyNotFound, On-NoSignature,
//!   On-Security) and the other verification options are read by
//!   `opendkim_verify.rs` when Mode has `v` (OpenDKIM's default `sv`);
//! - `Background` is accepted silently (we always run in the foreground),
//!   `AutoRestart yes` gets a note (the supervisor restarts us), and every
//!   other option OpenDKIM knows but we do not implement gets one warning
//!   per line.
//!
//! We differ from OpenDKIM where it silently does the wrong thing: an
//! invalid `On-*` value is an error (OpenDKIM ignores the whole option),
//! and `SignatureAlgorithm` only warns, because each key signs with its own
//! algorithm (so RSA and Ed25519 keys can sign the same message).
//!
//! This module never logs; warnings go into the [`Config`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mail_auth::dkim::Canonicalization;

use crate::diagnostics::{Location, Warning};
use crate::keys::{DEFAULT_MINIMUM_KEY_BITS, LoadOptions};
use crate::policy::{
    Action, DomainSet, ErrorActions, MacroRule, Mode, Policy, SignatureSettings, Signing,
    TableSource, Trust,
};
use crate::tables::{DataSet, DataSetKind, HostList, KeySet, KeyTable, SigningTable};

use super::grammar::{self, Setting, Value};
use super::opendkim_names::{self, Support};
use super::remote_sets;
use super::settings::{Problems, ServiceSettings, SignatureRules, Written};

#[path = "opendkim_verify.rs"]
mod verify;
use super::{
    Config, ConfigError, Format, Logging, Origin, Overrides, Service, accounts, data_sets,
    signing_keys,
};

/// OpenDKIM's MaximumHeaders default.
pub(crate) const DEFAULT_MAX_HEADER_BYTES: usize = 65536;

/// Header fields accepted per message. Real mail has tens (a long relay
/// path adds up to Postfix's `hopcount_limit`, 50, Received fields); a
/// client sending thousands is hostile or broken.
pub(crate) const DEFAULT_MAX_HEADER_COUNT: usize = 1000;

/// Reads `path` (and what it includes) into a validated configuration.
pub(crate) fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let settings = grammar::read(path)?;
    ConfFile::new(path, settings).config(overrides)
}

/// The settings of one file, last repetition winning, and what has been
/// found wrong so far.
struct ConfFile {
    path: PathBuf,
    file: Location,
    all: Vec<Setting>,
    last: HashMap<&'static str, usize>,
    base: PathBuf,
    /// How to reach data sets kept on a server (read once).
    connect: crate::remote::ConnectSettings,
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
}

impl ConfFile {
    fn new(path: &Path, all: Vec<Setting>) -> ConfFile {
        let last = all.iter().enumerate().map(|(i, s)| (s.name, i)).collect();
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let mut reading = ConfFile {
            path: path.to_path_buf(),
            file: Location::file(path),
            all,
            last,
            base: cwd.clone(),
            connect: crate::remote::ConnectSettings::default(),
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        reading.connect = reading.remote_connect();
        if let Some((dir, _)) = reading.string("BaseDirectory") {
            reading.base = data_sets::resolve(&cwd, dir);
        }
        reading
    }

    fn get(&self, name: &str) -> Option<&Setting> {
        self.last.get(name).map(|&i| &self.all[i])
    }

    fn string(&self, name: &str) -> Option<(String, Location)> {
        self.get(name).map(|s| (s.raw.clone(), s.at.clone()))
    }

    fn boolean(&self, name: &str) -> Option<bool> {
        match self.get(name)?.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn integer(&self, name: &str) -> Option<(i64, Location)> {
        let s = self.get(name)?;
        match s.value {
            Value::Int(n) => Some((n, s.at.clone())),
            _ => None,
        }
    }

    /// A non-negative integer, or an error naming the line.
    fn count(&mut self, name: &str) -> Option<u64> {
        let (n, at) = self.integer(name)?;
        match u64::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.invalid(name, n.to_string(), at, "it cannot be negative");
                None
            }
        }
    }

    fn invalid(&mut self, name: &str, value: String, at: Location, expected: &str) {
        self.errors.push(ConfigError::InvalidValue {
            at,
            name: name.to_string(),
            value,
            expected: expected.to_string(),
        });
    }

    fn warn(&mut self, at: Option<Location>, message: impl Into<String>) {
        self.warnings.push(Warning::new(at, message));
    }

    fn config(mut self, overrides: &Overrides) -> Result<Config, ConfigError> {
        self.note_unimplemented();
        let service = self.service(overrides);
        let logging = self.logging();
        let mode = self.mode();
        let options = LoadOptions {
            minimum_key_bits: self
                .count("MinimumKeyBits")
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                .unwrap_or(DEFAULT_MINIMUM_KEY_BITS),
            require_safe_keys: self.boolean("RequireSafeKeys").unwrap_or(true),
            signer_uid: Some(
                service
                    .1
                    .or(overrides.signer_uid)
                    .unwrap_or_else(|| nix::unistd::geteuid().as_raw()),
            ),
        };
        let signing = self.signing(mode, &options);
        let trust = self.trust();
        let sender_headers = self.sender_headers();
        let exempt_domains = self.source("ExemptDomains", |f| f.domain_set("ExemptDomains"));
        let dont_sign_mail_to = self.source("DontSignMailTo", |f| f.key_set("DontSignMailTo"));
        let soft_start = self.soft_start();
        let signature = self.signature();
        let errors = self.error_actions();
        let max_header_bytes = match self.count("MaximumHeaders") {
            Some(0) => usize::MAX,
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => DEFAULT_MAX_HEADER_BYTES,
        };
        let software_header = self.software_header();
        let verification = self.verification(mode, options.minimum_key_bits);
        if !self.errors.is_empty() {
            return Err(ConfigError::from_problems(self.errors));
        }
        if signing.domain_key.is_none()
            && signing.tables.is_none()
            && signing.remote.is_none()
            && mode.sign
        {
            self.warn(
                Some(self.file.clone()),
                "no signing keys are configured (neither KeyTable and SigningTable nor Domain, \
                 KeyFile and Selector), so dkim-sidecar will not sign any message",
            );
        }
        Ok(Config {
            origin: Origin {
                path: self.path.clone(),
                format: Format::OpenDkim,
            },
            service: service.0,
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
                // OpenDKIM has no such option: the default.
                max_header_count: DEFAULT_MAX_HEADER_COUNT,
                software_header,
                verification,
                soft_start,
            },
            warnings: self.warnings,
        })
    }

    /// On unless written off: a server that is down holds only the mail
    /// that needs it (OpenDKIM's default is off; README, "Differences from
    /// OpenDKIM"). LDAPSoftStart is its old name.
    fn soft_start(&self) -> bool {
        self.boolean("SoftStart")
            .or_else(|| self.boolean("LDAPSoftStart"))
            .unwrap_or(true)
    }

    /// A data set that may be kept on a server: a [`RemoteSet`] asked per
    /// message when its specification names one, otherwise what `local`
    /// reads from the file or list. `None` when the option is not set or
    /// cannot be used (the error is recorded).
    ///
    /// [`RemoteSet`]: crate::remote::RemoteSet
    fn source<T>(
        &mut self,
        name: &'static str,
        local: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<TableSource<T>> {
        let (spec, at) = self.string(name)?;
        match remote_sets::server_set(
            name,
            &spec,
            &at,
            &self.base,
            crate::remote::CacheSettings::default(),
            self.connect.clone(),
        ) {
            Ok(Some(set)) => Some(TableSource::Remote(set)),
            Ok(None) => local(self).map(TableSource::Local),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    /// One warning per line for options OpenDKIM knows that we do not
    /// implement; a note for AutoRestart.
    fn note_unimplemented(&mut self) {
        let mut notes = Vec::new();
        for s in &self.all {
            if opendkim_names::POLICY_SCRIPTS.contains(&s.name) {
                // Silently deciding differently is worse than not starting.
                self.errors.push(ConfigError::PolicyScript {
                    at: s.at.clone(),
                    name: s.name.to_string(),
                });
                continue;
            }
            match opendkim_names::support(s.name) {
                Support::Implemented => {}
                Support::Quiet => {
                    if s.name == "AutoRestart" && s.value == Value::Bool(true) {
                        notes.push(Warning::new(
                            Some(s.at.clone()),
                            "AutoRestart is ignored: dkim-sidecar runs in the foreground and \
                             leaves restarting to its supervisor (systemd's Restart=on-failure)",
                        ));
                    }
                }
                Support::Unsupported => notes.push(Warning::new(
                    Some(s.at.clone()),
                    format!(
                        "OpenDKIM option {} is not supported by dkim-sidecar and is ignored",
                        s.name
                    ),
                )),
            }
        }
        self.warnings.extend(notes);
    }

    /// The service settings and the uid of UserID, when set.
    fn service(&mut self, overrides: &Overrides) -> (Service, Option<u32>) {
        let mut settings = ServiceSettings::new(
            Format::OpenDkim,
            self.file.clone(),
            "add `Socket inet:8891@localhost` (or `Socket local:/path`), as OpenDKIM needs one \
             too, or pass --socket",
        );
        if let Some((spec, at)) = self.string("Socket") {
            settings.sockets.push(Written::new("Socket", spec, at));
        }
        settings.pid_file = self
            .string("PidFile")
            .map(|(p, _)| data_sets::resolve(&self.base, p));
        if let Some((value, at)) = self.string("UserID") {
            let (user, group) = accounts::split_user_group(&value);
            settings.group = group.map(|g| Written::new("UserID", g.to_string(), at.clone()));
            settings.user = Some(Written::new("UserID", user.to_string(), at));
        }
        settings.umask = self
            .integer("UMask")
            .map(|(n, at)| Written::new("UMask", n, at));
        Problems::gather(&mut self.errors, &mut self.warnings, |problems| {
            settings.resolve(overrides, problems)
        })
    }

    fn logging(&mut self) -> Logging {
        let defaults = Logging::default();
        let syslog_facility = match self.string("SyslogFacility") {
            Some((facility, at)) => match syslog_facility(&facility) {
                Some(f) => f.to_string(),
                None => {
                    self.invalid(
                        "SyslogFacility",
                        facility.clone(),
                        at,
                        "use a syslog facility such as mail, daemon or local0 to local7",
                    );
                    defaults.syslog_facility.clone()
                }
            },
            None => defaults.syslog_facility.clone(),
        };
        Logging {
            syslog: self.boolean("Syslog").unwrap_or(false),
            syslog_facility,
            log_success: self
                .boolean("SyslogSuccess")
                .unwrap_or(defaults.log_success),
            log_why: self.boolean("LogWhy").unwrap_or(defaults.log_why),
            json: false,
        }
    }

    fn mode(&mut self) -> Mode {
        let Some((value, at)) = self.string("Mode") else {
            // OpenDKIM's default: sign what is ours, verify the rest.
            return Mode {
                sign: true,
                verify: true,
            };
        };
        let mut mode = Mode {
            sign: false,
            verify: false,
        };
        for c in value.chars() {
            match c {
                's' => mode.sign = true,
                'v' => mode.verify = true,
                _ => {
                    self.invalid(
                        "Mode",
                        value.clone(),
                        at.clone(),
                        "Mode is made of s (sign) and v (verify), e.g. `Mode sv`",
                    );
                    break;
                }
            }
        }
        if !mode.sign {
            self.warn(
                Some(at),
                "Mode has no s, so dkim-sidecar will not sign any message",
            );
        }
        mode
    }

    fn data_set(&mut self, name: &str) -> Option<DataSet> {
        let (spec, at) = self.string(name)?;
        let spec = spec.clone();
        match data_sets::open(&spec, &at, &self.base) {
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

    fn key_set(&mut self, name: &str) -> Option<KeySet> {
        let set = self.data_set(name)?;
        match KeySet::from_data_set(&set) {
            Ok(keys) => Some(keys),
            Err(e) => {
                self.errors.push(e.into());
                None
            }
        }
    }

    fn host_list(&mut self, name: &str) -> Option<HostList> {
        let set = self.data_set(name)?;
        match HostList::from_data_set(set) {
            Ok(list) => {
                self.warnings.extend(list.warnings().iter().cloned());
                Some(list)
            }
            Err(e) => {
                self.errors.push(e.into());
                None
            }
        }
    }

    fn domain_set(&mut self, name: &str) -> Option<DomainSet> {
        let set = self.data_set(name)?;
        for e in &set.entries {
            if e.key.contains('*') && e.key != "*" {
                self.warn(
                    Some(e.at.clone()),
                    format!(
                        "{name} entry `{}` contains `*`, which only means \"every domain\" on its \
                         own; list the domains (SubDomains covers subdomains of Domain)",
                        e.key
                    ),
                );
            }
        }
        Some(DomainSet::from_names(
            set.entries.iter().map(|e| e.key.as_str()),
        ))
    }

    /// How to reach data sets kept on a server: the defaults, and for
    /// `ldap:` ones OpenDKIM's LDAP options (LDAPTimeout bounds both the
    /// connection and each search, 5 s by default as in OpenDKIM).
    fn remote_connect(&mut self) -> crate::remote::ConnectSettings {
        use crate::remote::{ConnectSettings, LdapLogin, LdapMechanism};
        let mut connect = ConnectSettings::default();
        let mechanism = match self.string("LDAPAuthMechanism") {
            None => LdapMechanism::Simple,
            Some((value, at)) => match LdapMechanism::parse(value.trim()) {
                Some(m) => m,
                None => {
                    self.invalid(
                        "LDAPAuthMechanism",
                        value,
                        at,
                        "`simple` (or `none`), or `EXTERNAL` (SASL over ldapi://)",
                    );
                    LdapMechanism::Simple
                }
            },
        };
        connect.ldap = LdapLogin {
            bind_user: self.string("LDAPBindUser").map(|(u, _)| u),
            bind_password: self
                .string("LDAPBindPassword")
                .map(|(p, _)| crate::tables::remote::Secret::new(p)),
            mechanism,
            start_tls: self.boolean("LDAPUseTLS").unwrap_or(false),
        };
        if let Some((value, at)) = self.string("LDAPTimeout") {
            match value.trim().parse::<u64>() {
                Ok(secs) if secs > 0 => {
                    let limit = std::time::Duration::from_secs(secs);
                    connect.connect_timeout = limit;
                    connect.query_timeout = limit;
                }
                _ => self.invalid("LDAPTimeout", value, at, "a number of seconds, at least 1"),
            }
        }
        connect
    }

    fn signing(&mut self, mode: Mode, options: &LoadOptions) -> Signing {
        let mut signing = Signing {
            domain_key: None,
            tables: None,
            remote: None,
            multiple_signatures: self.boolean("MultipleSignatures").unwrap_or(false),
            subdomains: self.boolean("SubDomains").unwrap_or(false),
        };
        let key_table = self.string("KeyTable");
        let signing_table = self.string("SigningTable");
        match (key_table, signing_table) {
            (None, Some((_, at))) => {
                self.errors
                    .push(ConfigError::SigningTableWithoutKeyTable { at });
                // Without a KeyTable, OpenDKIM goes on to Domain/KeyFile/Selector.
                self.domain_key(mode, options);
            }
            // With a SetupPolicyScript, that option's own error says it all.
            (Some((_, at)), None) if mode.sign && self.string("SetupPolicyScript").is_none() => {
                self.errors
                    .push(ConfigError::KeyTableWithoutSigningTable { at });
            }
            (Some(_), signing_table) => {
                for ignored in ["Domain", "KeyFile", "Selector"] {
                    if let Some((_, at)) = self.string(ignored) {
                        self.warn(
                            Some(at),
                            format!(
                                "{ignored} is ignored because KeyTable is set (OpenDKIM ignores \
                                 it too); the SigningTable decides which domains are signed"
                            ),
                        );
                    }
                }
                if let (Some((st, st_at)), Some((kt, kt_at))) =
                    (&signing_table, self.string("KeyTable"))
                {
                    let connect = self.connect.clone();
                    match remote_sets::remote_signing(
                        (&kt, &kt_at),
                        (st, st_at),
                        &self.base,
                        options,
                        &mut self.warnings,
                        crate::remote::CacheSettings::default(),
                        connect,
                    ) {
                        Ok(Some(remote)) => {
                            signing.remote = Some(std::sync::Arc::new(remote));
                            return signing;
                        }
                        Ok(None) => {}
                        Err(errors) => {
                            self.errors.extend(errors);
                            return signing;
                        }
                    }
                }
                let key_table = self.key_table();
                let signing_table = match signing_table {
                    Some(_) => self.signing_table(),
                    None => None,
                };
                if let (Some(kt), Some(st)) = (key_table, signing_table) {
                    signing.tables = Some(signing_keys::signing_tables(
                        kt,
                        st,
                        options,
                        &mut self.warnings,
                    ));
                }
            }
            (None, None) => signing.domain_key = self.domain_key(mode, options),
        }
        signing
    }

    fn key_table(&mut self) -> Option<KeyTable> {
        let set = self.data_set("KeyTable")?;
        match KeyTable::from_data_set(set) {
            Ok(mut table) => {
                let base = self.base.clone();
                table.resolve_relative_files(|p| data_sets::resolve(&base, p));
                Some(table)
            }
            Err(e) => {
                self.errors.push(e.into());
                None
            }
        }
    }

    fn signing_table(&mut self) -> Option<SigningTable> {
        let set = self.data_set("SigningTable")?;
        SigningTable::from_data_set(set)
            .map_err(|e| self.errors.push(e.into()))
            .ok()
    }

    fn domain_key(
        &mut self,
        mode: Mode,
        options: &LoadOptions,
    ) -> Option<crate::policy::DomainKey> {
        let key_file = self.string("KeyFile");
        let selector = self.string("Selector");
        let domain = self.string("Domain");
        if mode.sign {
            match (&key_file, &selector) {
                (Some((_, at)), None) => self
                    .errors
                    .push(ConfigError::KeyFileWithoutSelector { at: at.clone() }),
                (None, Some((selector, at))) => {
                    self.errors.push(ConfigError::SelectorWithoutKeyFile {
                        at: at.clone(),
                        selector: selector.clone(),
                    });
                }
                _ => {}
            }
            if let (Some((_, at)), false) = (&domain, key_file.is_some() && selector.is_some()) {
                self.errors
                    .push(ConfigError::DomainWithoutKey { at: at.clone() });
            }
        }
        let ((file, file_at), (selector, _)) = (key_file?, selector?);
        let (file, selector) = (data_sets::resolve(&self.base, file), selector.clone());
        let domains = match domain {
            Some(_) => self
                .source("Domain", |f| f.domain_set("Domain"))
                .unwrap_or_else(|| TableSource::Local(DomainSet::default())),
            None => {
                self.warn(
                    Some(file_at.clone()),
                    "KeyFile and Selector are set but Domain is not, so no domain is signed with \
                     this key (as in OpenDKIM); add `Domain example.com` (or `Domain *`)",
                );
                TableSource::Local(DomainSet::default())
            }
        };
        Some(signing_keys::domain_key(
            domains,
            selector,
            &file,
            &file_at,
            options,
            &mut self.warnings,
        ))
    }

    fn trust(&mut self) -> Trust {
        use crate::policy::TableSource;
        let internal_hosts = self
            .source("InternalHosts", |f| f.host_list("InternalHosts"))
            .unwrap_or_else(|| TableSource::Local(HostList::default_internal()));
        Trust {
            internal_hosts,
            external_ignore: self
                .source("ExternalIgnoreList", |f| f.host_list("ExternalIgnoreList")),
            peers: self.source("PeerList", |f| f.host_list("PeerList")),
            macros: self.macro_rules(),
            mta_names: self
                .source("MTA", |f| {
                    f.data_set("MTA").map(|set| data_sets::keys(&set))
                })
                .unwrap_or_else(|| TableSource::Local(Vec::new())),
        }
    }

    fn macro_rules(&mut self) -> Vec<MacroRule> {
        let Some(set) = self.data_set("MacroList") else {
            return Vec::new();
        };
        if set.kind == DataSetKind::Refile {
            let (value, at) = self.string("MacroList").expect("MacroList is set");
            self.invalid(
                "MacroList",
                value.clone(),
                at,
                "MacroList must be a `file:` or `csl:` data set, as in OpenDKIM",
            );
            return Vec::new();
        }
        let mut rules = Vec::new();
        for e in &set.entries {
            if e.key.contains(['{', '}']) {
                // OpenDKIM asks the MTA for `{NAME}`, so `{x}` becomes `{{x}}`.
                self.warn(
                    Some(e.at.clone()),
                    format!(
                        "MacroList entry `{}` never matches: OpenDKIM looks each name up in \
                         braces, so it asks for `{{{}}}`, which no MTA defines; dkim-sidecar \
                         ignores it too. Write the name without braces (`{}`) to trust this macro",
                        e.key,
                        e.key,
                        e.key.trim_matches(['{', '}'])
                    ),
                );
                continue;
            }
            rules.push(macro_rule(&e.key, e.value.as_deref()));
        }
        rules
    }

    fn sender_headers(&mut self) -> Vec<String> {
        match self.whole_set("SenderHeaders") {
            Some(names) => names
                .iter()
                .map(|(name, _)| name.to_ascii_lowercase())
                .collect(),
            None => vec!["from".to_string()],
        }
    }

    /// A header list option's entries, each with its own location.
    fn header_list(&mut self, name: &'static str) -> Option<Written<Vec<(String, Location)>>> {
        let at = self.get(name)?.at.clone();
        let entries = self.whole_set(name)?;
        Some(Written::new(name, entries, at))
    }

    /// The keys of a set OpenDKIM reads whole at start-up, each with its
    /// location: from a file or list, or asked of its server now (a key
    /// from a server is located at the option).
    fn whole_set(&mut self, name: &'static str) -> Option<Vec<(String, Location)>> {
        let (spec, at) = self.string(name)?;
        match remote_sets::read_whole(name, &spec, &at, &self.base, self.connect.clone()) {
            Ok(Some(keys)) => Some(keys.into_iter().map(|k| (k, at.clone())).collect()),
            Ok(None) => {
                let set = self.data_set(name)?;
                Some(set.entries.into_iter().map(|e| (e.key, e.at)).collect())
            }
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    fn signature(&mut self) -> SignatureSettings {
        let mut rules = SignatureRules::new((Canonicalization::Simple, Canonicalization::Simple));
        rules.canonicalization = self
            .string("Canonicalization")
            .map(|(value, at)| Written::new("Canonicalization", value, at));
        if let Some((value, at)) = self.string("SignatureAlgorithm") {
            match value.to_ascii_lowercase().as_str() {
                "rsa-sha256" => {}
                "rsa-sha1" | "ed25519-sha256" => self.warn(
                    Some(at),
                    format!(
                        "SignatureAlgorithm {value} is ignored: dkim-sidecar signs with each key's \
                         own algorithm (rsa-sha256 for RSA keys, ed25519-sha256 for Ed25519 keys) \
                         and never with SHA-1, which RFC 8301 forbids"
                    ),
                ),
                _ => self.invalid(
                    "SignatureAlgorithm",
                    value.clone(),
                    at,
                    "use rsa-sha256 (the default) or ed25519-sha256",
                ),
            }
        }
        rules.sign_headers = self.header_list("SignHeaders");
        rules.omit_headers = self.header_list("OmitHeaders");
        rules.oversign_headers = self.header_list("OverSignHeaders");
        rules.signature_ttl_seconds = self.count("SignatureTTL");
        rules.request_reports = self.boolean("RequestReports").unwrap_or(false);
        rules.atps_domains = self.source("ATPSDomains", |f| f.domain_set("ATPSDomains"));
        rules.body_length_recipients = self.source("BodyLengthDB", |f| f.key_set("BodyLengthDB"));
        rules.replace_headers = self.source("ReplaceHeaders", |f| f.key_set("ReplaceHeaders"));
        rules.replace_rules = self.string("ReplaceRules").map(|(path, at)| {
            Written::new("ReplaceRules", data_sets::resolve(&self.base, &path), at)
        });
        Problems::gather(&mut self.errors, &mut self.warnings, |problems| {
            rules.resolve(problems)
        })
    }

    fn action(&mut self, name: &str) -> Option<Action> {
        let (value, at) = self.string(name)?;
        match parse_action(&value) {
            Some(action) => Some(action),
            None => {
                self.invalid(
                    name,
                    value.clone(),
                    at,
                    "use accept, discard, quarantine, reject or tempfail",
                );
                None
            }
        }
    }

    fn error_actions(&mut self) -> ErrorActions {
        let default = self.action("On-Default");
        let internal = self.action("On-InternalError");
        let signature = self.action("On-SignatureError");
        for verification_only in [
            "On-BadSignature",
            "On-DNSError",
            "On-KeyNotFound",
            "On-NoSignature",
            "On-Security",
        ] {
            self.action(verification_only);
        }
        let internal_error = internal.or(default).unwrap_or(Action::Tempfail);
        ErrorActions {
            internal_error,
            key_error: internal_error,
            signing_error: signature.or(default).unwrap_or(Action::Tempfail),
        }
    }

    fn software_header(&mut self) -> bool {
        if self.boolean("X-Header") == Some(true) {
            let (_, at) = self.string("X-Header").expect("X-Header is set");
            self.warn(
                Some(at),
                "X-Header is deprecated (OpenDKIM says so too); write `SoftwareHeader yes`",
            );
            return true;
        }
        self.boolean("SoftwareHeader").unwrap_or(false)
    }
}

/// `relaxed/simple`, or one word for the header method with a simple body.
pub(crate) fn parse_canonicalization(
    value: &str,
) -> Result<(Canonicalization, Canonicalization), String> {
    let one = |word: &str| match word.trim().to_ascii_lowercase().as_str() {
        "simple" => Some(Canonicalization::Simple),
        "relaxed" => Some(Canonicalization::Relaxed),
        _ => None,
    };
    let expected = "write HEADER/BODY with relaxed or simple for each, e.g. relaxed/simple \
                    (one word sets the header method only; the body stays simple)"
        .to_string();
    match value.split_once('/') {
        Some((header, body)) => match (one(header), one(body)) {
            (Some(h), Some(b)) => Ok((h, b)),
            _ => Err(expected),
        },
        None => one(value)
            .map(|h| (h, Canonicalization::Simple))
            .ok_or(expected),
    }
}

/// OpenDKIM's action names, without regard to case.
pub(crate) fn parse_action(value: &str) -> Option<Action> {
    match value.to_ascii_lowercase().as_str() {
        "accept" => Some(Action::Accept),
        "discard" => Some(Action::Discard),
        "quarantine" => Some(Action::Quarantine),
        "reject" => Some(Action::Reject),
        "tempfail" => Some(Action::Tempfail),
        _ => None,
    }
}

/// A MacroList entry: `name` or `name` with `value1|value2`; the name may
/// be written with or without braces (libmilter finds it either way).
pub(crate) fn macro_rule(name: &str, values: Option<&str>) -> MacroRule {
    MacroRule {
        name: name
            .trim()
            .trim_start_matches('{')
            .trim_end_matches('}')
            .to_string(),
        values: values
            .map(|v| {
                v.split('|')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The syslog facilities, as `syslog.h` names them.
pub(crate) fn syslog_facility(name: &str) -> Option<&'static str> {
    const FACILITIES: &[&str] = &[
        "auth", "authpriv", "cron", "daemon", "ftp", "kern", "local0", "local1", "local2",
        "local3", "local4", "local5", "local6", "local7", "lpr", "mail", "news", "syslog", "user",
        "uucp",
    ];
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_prefix("log_").unwrap_or(&lower);
    FACILITIES.iter().find(|f| **f == lower).copied()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use milter::server::SocketSpec;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::config::fixture::Dir;

    fn dir() -> Dir {
        Dir::new("opendkim.conf", Config::from_opendkim_file)
    }

    fn warnings(config: &Config) -> Vec<String> {
        config.warnings.iter().map(ToString::to_string).collect()
    }

    const TABLES: &str = "\
Mode s
Socket inet:8891@localhost
KeyTable file:$DIR/KeyTable
SigningTable refile:$DIR/SigningTable
";

    fn tables_dir() -> Dir {
        let dir = dir();
        dir.write(
            "KeyTable",
            "rsa example.com:default:$DIR/default.private\ned example.com:ed25519:$DIR/ed25519.private\n",
        );
        dir.write("SigningTable", "*@example.com rsa\n*@example.com ed\n");
        dir
    }

    #[test]
    fn keytable_and_refile_signingtable_load_with_their_keys() {
        let dir = tables_dir();
        let config = dir.load(TABLES).unwrap();
        assert_eq!(config.origin.format, Format::OpenDkim);
        assert_eq!(
            config.service.sockets,
            vec!["inet:8891@localhost".parse::<SocketSpec>().unwrap()]
        );
        let tables = config.policy.signing.tables.as_ref().unwrap();
        assert!(tables.keys.loaded_key("rsa").is_some());
        assert!(tables.keys.loaded_key("ed").is_some());
        let first = tables.signing_table.find_first("bob", "example.com");
        assert_eq!(first.len(), 1, "a file line is its own rule");
        assert!(warnings(&config).is_empty(), "{:?}", warnings(&config));
    }

    #[test]
    fn ldap_options_and_soft_start_are_read_and_a_bad_mechanism_is_refused() {
        let dir = dir();
        let tables = "Mode s\nSocket inet:8891@localhost\n\
             KeyTable ldap://127.0.0.1/ou=dkim,$D?DKIMDomain,DKIMSelector,DKIMKey?base\n\
             SigningTable ldap://127.0.0.1/ou=s,dc=example,dc=com?description?sub?(mail=$d)\n\
             LDAPBindUser cn=reader,dc=example,dc=com\nLDAPBindPassword hunter2\n";
        let config = dir
            .load(&format!("{tables}LDAPSoftStart yes\nLDAPTimeout 7\n"))
            .unwrap();
        assert!(config.policy.signing.remote.is_some());
        assert!(
            config.policy.soft_start,
            "LDAPSoftStart is SoftStart's old name"
        );
        assert!(
            warnings(&config).iter().all(|w| !w.contains("LDAP")),
            "{:?}",
            warnings(&config)
        );
        let config = dir.load(tables).unwrap();
        assert!(config.policy.soft_start, "on unless written off");
        let config = dir.load(&format!("{tables}SoftStart no\n")).unwrap();
        assert!(!config.policy.soft_start);

        let err = dir
            .load(&format!("{tables}LDAPAuthMechanism DIGEST-MD5\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("LDAPAuthMechanism"), "{err}");
        assert!(err.contains("EXTERNAL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn last_repetition_wins() {
        let dir = dir();
        let config = dir
            .load(
                "Mode s\nSocket inet:1@localhost\nSocket inet:8891@localhost\nDomain example.com\n\
                 KeyFile $DIR/default.private\nSelector first\nSelector default\n",
            )
            .unwrap();
        assert_eq!(config.service.sockets[0].to_string(), "inet:8891@localhost");
        assert_eq!(
            config.policy.signing.domain_key.unwrap().selector,
            "default"
        );
    }

    #[test]
    fn umask_is_read_as_octal() {
        let dir = dir();
        let config = dir
            .load("Mode s\nSocket inet:8891@localhost\nUMask 007\n")
            .unwrap();
        assert_eq!(config.service.umask, Some(0o007));
        let errors = dir.errors("Mode s\nSocket inet:8891@localhost\nUMask 01777\n");
        assert!(errors[0].starts_with(&dir.line(3)), "{errors:?}");
    }

    #[test]
    fn domain_without_keyfile_is_refused() {
        let dir = dir();
        let errors = dir.errors("Mode sv\nSocket inet:8891@localhost\nDomain example.com\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(&dir.line(3)), "{errors:?}");
        assert!(
            errors[0].contains("Domain requires KeyFile and Selector"),
            "{errors:?}"
        );
    }

    #[test]
    fn keyfile_without_selector_is_refused() {
        let dir = dir();
        let errors = dir.errors(
            "Mode s\nSocket inet:8891@localhost\nDomain example.com\nKeyFile $DIR/default.private\n",
        );
        assert!(
            errors.iter().any(|e| e.starts_with(&dir.line(4))
                && e.contains("KeyFile and Selector must both be set")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("add `Selector NAME`")),
            "{errors:?}"
        );
    }

    #[test]
    fn selector_without_keyfile_is_refused() {
        let dir = dir();
        let errors = dir.errors("Mode s\nSocket inet:8891@localhost\nSelector default\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(&dir.line(3)), "{errors:?}");
        assert!(
            errors[0].contains("add `KeyFile /path/to/default.private`"),
            "{errors:?}"
        );
    }

    #[test]
    fn signingtable_without_keytable_is_refused() {
        let dir = tables_dir();
        let errors = dir
            .errors("Mode s\nSocket inet:8891@localhost\nSigningTable refile:$DIR/SigningTable\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(&dir.line(3)), "{errors:?}");
        assert!(
            errors[0].contains("SigningTable requires KeyTable"),
            "{errors:?}"
        );
    }

    #[test]
    fn keytable_without_signingtable_is_refused_when_signing() {
        let dir = tables_dir();
        let errors =
            dir.errors("Mode s\nSocket inet:8891@localhost\nKeyTable file:$DIR/KeyTable\n");
        assert!(
            errors[0].contains("KeyTable requires SigningTable"),
            "{errors:?}"
        );
        assert!(
            dir.load("Mode v\nSocket inet:8891@localhost\nKeyTable file:$DIR/KeyTable\n")
                .is_ok()
        );
    }

    #[test]
    fn signingtable_key_missing_from_keytable_names_the_signingtable_line() {
        let dir = tables_dir();
        dir.write(
            "SigningTable",
            "*@example.com rsa\n*@example.org nokey\n*@example.net other\n",
        );
        let errors = dir.faults(TABLES);
        assert_eq!(errors.len(), 2, "{errors:?}");
        let st = dir.path("SigningTable").display().to_string();
        assert!(errors[0].starts_with(&format!("{st}:2: ")), "{errors:?}");
        assert!(errors[0].contains("`nokey`"), "{errors:?}");
        assert!(errors[1].starts_with(&format!("{st}:3: ")), "{errors:?}");
    }

    #[test]
    fn unreadable_key_names_the_keytable_line_and_the_file() {
        let dir = tables_dir();
        dir.write(
            "KeyTable",
            "rsa example.com:default:$DIR/missing.private\ned example.com:ed25519:$DIR/ed25519.private\n",
        );
        let errors = dir.faults(TABLES);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let kt = dir.path("KeyTable").display().to_string();
        assert!(errors[0].starts_with(&format!("{kt}:1: ")), "{errors:?}");
        assert!(
            errors[0].contains("missing.private: key file not found"),
            "{errors:?}"
        );
    }

    #[test]
    fn keyfile_that_cannot_be_read_names_the_keyfile_line() {
        let dir = dir();
        let errors = dir.faults(
            "Mode s\nSocket inet:8891@localhost\nDomain example.com\nSelector s\nKeyFile $DIR/nope.private\n",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(&dir.line(5)), "{errors:?}");
        assert!(errors[0].contains("key file not found"), "{errors:?}");
    }

    #[test]
    fn unsafe_key_is_refused_with_the_fix_unless_requiresafekeys_is_off() {
        let dir = tables_dir();
        let key = dir.path("default.private");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let errors = dir.faults(TABLES);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("key data is not secure"), "{errors:?}");
        assert!(
            errors[0].contains(&format!("fix: chmod 600 {}", key.display())),
            "{errors:?}"
        );
        let config = dir.load(&format!("{TABLES}RequireSafeKeys no\n")).unwrap();
        let w = warnings(&config);
        let kt = dir.path("KeyTable").display().to_string();
        assert!(
            w.iter()
                .any(|w| w.starts_with(&format!("{kt}:1: ")) && w.contains("not secure")),
            "{w:?}"
        );
    }

    #[test]
    fn userid_decides_who_may_own_the_keys() {
        let dir = tables_dir();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        for name in ["default.private", "ed25519.private"] {
            nix::unistd::chown(&dir.path(name), Some(nobody.uid), None).unwrap();
        }
        let errors = dir.faults(TABLES);
        assert!(
            errors.iter().all(|e| e.contains("owned by nobody")),
            "{errors:?}"
        );
        let config = dir.load(&format!("{TABLES}UserID nobody\n")).unwrap();
        assert_eq!(config.service.run_as.unwrap().user, "nobody");
    }

    #[test]
    fn unknown_user_names_the_line() {
        let dir = dir();
        let errors =
            dir.errors("Mode s\nSocket inet:8891@localhost\nUserID no-such-dkim-user:mail\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(&dir.line(3)), "{errors:?}");
        assert!(
            errors[0].contains("user `no-such-dkim-user` does not exist"),
            "{errors:?}"
        );
    }

    #[test]
    fn bad_socket_names_the_line() {
        let dir = dir();
        let errors = dir.errors("Mode s\nSocket inet:notaport@localhost\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(&dir.line(2)), "{errors:?}");
        assert!(errors[0].contains("invalid socket"), "{errors:?}");
    }

    #[test]
    fn missing_socket_is_refused_unless_overridden() {
        let dir = dir();
        let errors = dir.errors("Mode s\n");
        assert!(errors[0].contains("no socket to listen on"), "{errors:?}");
        let path = dir.write("opendkim.conf", "Mode s\n");
        let overrides = Overrides {
            sockets: Some(vec!["inet:9999@127.0.0.1".parse().unwrap()]),
            ..Overrides::default()
        };
        let origin = Origin {
            path,
            format: Format::OpenDkim,
        };
        let config = Config::load_with(&origin, &overrides).unwrap();
        assert_eq!(config.service.sockets, overrides.sockets.unwrap());
    }

    #[test]
    fn canonicalization_with_one_word_sets_the_header_method_only() {
        let dir = dir();
        let config = dir
            .load("Mode s\nSocket inet:8891@localhost\nCanonicalization relaxed\n")
            .unwrap();
        assert_eq!(
            config.policy.signature.header_canonicalization,
            Canonicalization::Relaxed
        );
        assert_eq!(
            config.policy.signature.body_canonicalization,
            Canonicalization::Simple
        );
        let config = dir
            .load("Mode s\nSocket inet:8891@localhost\nCanonicalization Simple/Relaxed\n")
            .unwrap();
        assert_eq!(
            config.policy.signature.body_canonicalization,
            Canonicalization::Relaxed
        );
    }

    #[test]
    fn bad_canonicalization_names_the_line_and_the_choices() {
        let dir = dir();
        let errors =
            dir.errors("Mode s\nSocket inet:8891@localhost\nCanonicalization relaxed/loose\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(&dir.line(3)), "{errors:?}");
        assert!(errors[0].contains("relaxed/simple"), "{errors:?}");
    }

    #[test]
    fn bad_action_names_the_line_and_the_choices() {
        let dir = dir();
        let errors = dir.errors(
            "Mode s\nSocket inet:8891@localhost\nOn-Default bounce\nOn-NoSignature maybe\n",
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with(&dir.line(3)), "{errors:?}");
        assert!(
            errors[0].contains("accept, discard, quarantine, reject or tempfail"),
            "{errors:?}"
        );
        assert!(errors[1].starts_with(&dir.line(4)), "{errors:?}");
    }

    #[test]
    fn on_actions_map_default_then_specific_overrides() {
        let dir = dir();
        let base = "Mode s\nSocket inet:8891@localhost\n";
        let actions = |extra: &str| dir.load(&format!("{base}{extra}")).unwrap().policy.errors;
        assert_eq!(actions(""), ErrorActions::default());
        assert_eq!(
            actions("On-Default accept\n"),
            ErrorActions {
                internal_error: Action::Accept,
                key_error: Action::Accept,
                signing_error: Action::Accept,
            }
        );
        assert_eq!(
            actions("On-Default accept\nOn-InternalError tempfail\nOn-SignatureError Reject\n"),
            ErrorActions {
                internal_error: Action::Tempfail,
                key_error: Action::Tempfail,
                signing_error: Action::Reject,
            }
        );
        assert_eq!(
            actions("On-KeyNotFound reject\nOn-BadSignature reject\n"),
            ErrorActions::default()
        );
    }

    #[test]
    fn known_unsupported_option_warns_once_per_line() {
        let dir = dir();
        let config = dir
            .load(
                "Mode s\nSocket inet:8891@localhost\nResolverConfiguration /etc/unbound.conf\n\
                 ReportAddress postmaster@example.com\nBackground yes\nAutoRestart no\nQueryCache yes\n",
            )
            .unwrap();
        let w: Vec<String> = warnings(&config)
            .into_iter()
            .filter(|w| !w.contains("no signing keys"))
            .collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with(&dir.line(3)), "{w:?}");
        assert!(
            w[0].ends_with(
                "OpenDKIM option ResolverConfiguration is not supported by dkim-sidecar and is ignored"
            ),
            "{w:?}"
        );
        assert!(w[1].contains("ReportAddress"), "{w:?}");
    }

    #[test]
    fn autorestart_yes_gets_a_note() {
        let dir = dir();
        let config = dir
            .load("Mode s\nSocket inet:8891@localhost\nAutoRestart yes\nAutoRestartRate 10/1h\n")
            .unwrap();
        let w: Vec<String> = warnings(&config)
            .into_iter()
            .filter(|w| !w.contains("no signing keys"))
            .collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(&dir.line(3)) && w[0].contains("Restart=on-failure"),
            "{w:?}"
        );
    }

    #[test]
    fn mode_defaults_to_sign_and_verify_without_a_warning() {
        let dir = dir();
        let unset = dir.load("Socket inet:8891@localhost\n").unwrap();
        assert!(unset.policy.mode.sign && unset.policy.mode.verify);
        assert!(unset.policy.verification.is_some());
        assert!(!warnings(&unset).iter().any(|w| w.contains("Mode")));
        let sv = dir.load("Mode sv\nSocket inet:8891@localhost\n").unwrap();
        assert!(!warnings(&sv).iter().any(|w| w.contains("Mode")));
        let sign_only = dir.load("Mode s\nSocket inet:8891@localhost\n").unwrap();
        assert!(sign_only.policy.verification.is_none());
        assert!(!warnings(&sign_only).iter().any(|w| w.contains("Mode")));
        let verify_only = dir.load("Mode v\nSocket inet:8891@localhost\n").unwrap();
        assert!(!verify_only.policy.mode.sign && verify_only.policy.verification.is_some());
    }

    #[test]
    fn verification_options_are_read_and_checked() {
        let dir = dir();
        dir.write("keys", "sel._domainkey.example.com v=DKIM1; p=\n");
        let config = dir
            .load(
                "Socket inet:8891@localhost\nAuthservID mx.example.org\nAuthservIDWithJobID yes\n\
                 AlwaysAddARHeader yes\nMaximumSignaturesToVerify 5\nDNSTimeout 2\n\
                 Nameservers 127.0.0.1@5353, 192.0.2.1\nUnprotectedKey neutral\nBogusKey none\n\
                 On-Default reject\nOn-DNSError accept\nTestPublicKeys $DIR/keys\n\
                 RemoveARFrom mx.example.org,.example.net\nKeepAuthResults no\nNoHeaderB yes\n",
            )
            .unwrap();
        let v = config.policy.verification.unwrap();
        assert_eq!(
            v.authserv_id,
            crate::verifying::AuthservId::Fixed("mx.example.org".into())
        );
        assert!(v.with_job_id && v.always_add && !v.header_b);
        assert_eq!(v.settings.max_signatures, 5);
        assert_eq!(v.dns.timeout, std::time::Duration::from_secs(2));
        assert_eq!(
            v.dns.nameservers,
            vec![
                "127.0.0.1:5353".parse().unwrap(),
                "192.0.2.1:53".parse().unwrap()
            ]
        );
        assert_eq!(
            v.settings.unprotected_key,
            crate::verify::KeyAction::Neutral
        );
        assert_eq!(v.settings.bogus_key, crate::verify::KeyAction::None);
        assert_eq!(v.actions.bad_signature, Action::Reject);
        assert_eq!(v.actions.dns_error, Action::Accept);
        assert_eq!(v.dns.test_records.as_ref().unwrap().len(), 1);
        assert_eq!(
            v.remove_from.as_ref().and_then(TableSource::local),
            Some(&vec![
                "mx.example.org".to_string(),
                ".example.net".to_string()
            ])
        );
        dir.write(
            "dnsdata",
            "a._domainkey.example.com v=DKIM1; p=\nb._domainkey.example.com v=DKIM1; k=ed25519; p=x\n",
        );
        let config = dir
            .load("Socket inet:8891@localhost\nTestDNSData file:$DIR/dnsdata\n")
            .unwrap();
        let records = config.policy.verification.unwrap().dns.test_records.clone();
        assert_eq!(records.unwrap().len(), 2);
        let defaults = dir.load("Socket inet:8891@localhost\n").unwrap().policy;
        let v = defaults.verification.unwrap();
        assert_eq!(v.actions, crate::verifying::VerifyActions::default());
        assert_eq!(v.authserv_id, crate::verifying::AuthservId::Mta);
        assert_eq!(v.settings.max_signatures, 3);

        let errors = dir.errors(
            "Socket inet:8891@localhost\nNameservers ns.example.com\nBogusKey maybe\n\
             TrustAnchorFile $DIR/missing.key\n",
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&dir.line(2)) && e.contains("Nameservers")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&dir.line(3)) && e.contains("none, neutral or fail")),
            "{errors:?}"
        );
        let errors = dir.errors("Socket inet:8891@localhost\nTrustAnchorFile $DIR/missing.key\n");
        assert!(
            errors[0].starts_with(&dir.line(2)) && errors[0].contains("TrustAnchorFile"),
            "{errors:?}"
        );
    }

    #[test]
    fn unknown_mode_letter_is_refused() {
        let dir = dir();
        let errors = dir.errors("Mode sx\nSocket inet:8891@localhost\n");
        assert!(
            errors[0].starts_with(&dir.line(1)) && errors[0].contains("s (sign) and v (verify)"),
            "{errors:?}"
        );
    }

    #[test]
    fn star_in_a_non_refile_signingtable_is_warned() {
        let dir = tables_dir();
        dir.write("SigningTable", "*@example.com rsa\n");
        let config = dir
            .load(&TABLES.replace("refile:$DIR/SigningTable", "file:$DIR/SigningTable"))
            .unwrap();
        let w = warnings(&config);
        let st = dir.path("SigningTable").display().to_string();
        assert!(
            w.iter()
                .any(|w| w.starts_with(&format!("{st}:1: ")) && w.contains("refile:")),
            "{w:?}"
        );
    }

    #[test]
    fn keytable_ignores_domain_keyfile_and_selector_with_a_warning() {
        let dir = tables_dir();
        let config = dir
            .load(&format!("{TABLES}Domain example.com\nSelector x\n"))
            .unwrap();
        assert!(config.policy.signing.domain_key.is_none());
        let w = warnings(&config);
        assert_eq!(
            w.iter()
                .filter(|w| w.contains("because KeyTable is set"))
                .count(),
            2,
            "{w:?}"
        );
    }

    #[test]
    fn relative_names_are_relative_to_basedirectory() {
        let dir = tables_dir();
        dir.write("KeyTable", "rsa example.com:default:./default.private\n");
        dir.write("SigningTable", "*@example.com rsa\n");
        // A bare relative name is a csl: list, as in OpenDKIM: here one
        // malformed KeyTable entry named `KeyTable`, so `rsa` cannot sign.
        let faults = dir.faults("Mode s\nSocket inet:8891@localhost\nBaseDirectory $DIR\nKeyTable KeyTable\nSigningTable refile:SigningTable\n");
        assert!(
            faults.iter().any(|f| f.contains("`KeyTable` has no value")),
            "{faults:?}"
        );
        let config = dir
            .load("Mode s\nSocket inet:8891@localhost\nBaseDirectory $DIR\nKeyTable file:KeyTable\nSigningTable refile:SigningTable\n")
            .unwrap();
        let tables = config.policy.signing.tables.unwrap();
        assert_eq!(
            tables.key_table.origin().path.as_ref(),
            dir.path("KeyTable")
        );
        assert!(tables.keys.loaded_key("rsa").is_some());
    }

    #[test]
    fn a_header_list_in_a_directory_is_refused_as_opendkim_refuses_it() {
        let dir = dir();
        let errors = dir.errors(&format!(
            "{TABLES}SignHeaders ldap://127.0.0.1/dc=example?cn?sub?(cn=$d)\n"
        ));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("SignHeaders") && e.contains("cannot be listed")),
            "{errors:?}"
        );
        // A database that is not there: refused, naming the server.
        let errors = dir.errors(&format!(
            "{TABLES}SenderHeaders dsn:sqlite3://nowhere/senders.db/table=h?keycol=n?datacol=n\n"
        ));
        assert!(
            errors
                .iter()
                .any(|e| e.contains("SenderHeaders is read whole") && e.contains("no such file")),
            "{errors:?}"
        );
    }

    #[test]
    fn header_lists_follow_opendkims_star_rules() {
        let dir = dir();
        let config = dir
            .load(
                "Mode s\nSocket inet:8891@localhost\nSignHeaders *,+X-Mailer,-Subject\n\
                 OmitHeaders *,-Received\nOversignHeaders From,To\n",
            )
            .unwrap();
        let headers = &config.policy.signature.headers;
        assert!(headers.signs(b"X-Mailer"));
        assert!(!headers.signs(b"Subject"));
        assert!(headers.signs(b"Message-ID"), "our default list is the base");
        assert!(!headers.omitted().matches("received"));
        assert!(headers.omitted().matches("bcc"));
        assert_eq!(headers.oversigned(), ["from", "to"]);
    }

    #[test]
    fn independent_problems_are_all_reported() {
        let dir = dir();
        let errors = dir.errors(
            "Mode s\nSocket local:relative\nUserID no-such-dkim-user\nCanonicalization odd\nDomain example.com\n",
        );
        assert_eq!(errors.len(), 4, "{errors:?}");
        for line in [2, 3, 4, 5] {
            assert!(
                errors.iter().any(|e| e.starts_with(&dir.line(line))),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn trust_lists_and_macros_are_read_as_data_sets() {
        let dir = dir();
        dir.write(
            "TrustedHosts",
            "127.0.0.1\n::1\n10.0.0.0/8\n*.example.com\n",
        );
        let config = dir
            .load(
                "Mode s\nSocket inet:8891@localhost\nInternalHosts $DIR/TrustedHosts\n\
                 ExternalIgnoreList refile:$DIR/TrustedHosts\nPeerList 192.0.2.1\n\
                 MTA submission,smtps\nMacroList daemon_name=ORIGINATING|submission,auth_authen\n",
            )
            .unwrap();
        let trust = &config.policy.trust;
        use TableSource::Local;
        let Local(internal) = &trust.internal_hosts else {
            panic!("read from a file")
        };
        assert_eq!(internal.len(), 4);
        assert!(internal.check_ip("10.1.2.3".parse().unwrap()));
        assert!(matches!(trust.external_ignore, Some(Local(_))));
        let Some(Local(peers)) = &trust.peers else {
            panic!("a list")
        };
        assert_eq!(peers.entries(), ["192.0.2.1"]);
        let Local(mta_names) = &trust.mta_names else {
            panic!("a list")
        };
        assert_eq!(mta_names, &["submission", "smtps"]);
        assert_eq!(
            trust.macros,
            vec![
                MacroRule {
                    name: "daemon_name".into(),
                    values: vec!["ORIGINATING".into(), "submission".into()],
                },
                MacroRule {
                    name: "auth_authen".into(),
                    values: vec![],
                },
            ]
        );
    }

    #[test]
    fn braced_macrolist_name_never_matches_as_in_opendkim_and_is_warned() {
        let dir = dir();
        let config = dir
            .load("Mode s\nSocket inet:8891@localhost\nMacroList {auth_authen},{j}=x,if_addr\n")
            .unwrap();
        assert_eq!(
            config.policy.trust.macros,
            vec![MacroRule {
                name: "if_addr".into(),
                values: vec![],
            }]
        );
        let w: Vec<String> = warnings(&config)
            .into_iter()
            .filter(|w| w.contains("MacroList"))
            .collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with(&dir.line(3)), "{w:?}");
        assert!(
            w[0].contains("`{auth_authen}` never matches") && w[0].contains("(`auth_authen`)"),
            "{w:?}"
        );
    }

    #[test]
    fn every_per_key_data_set_may_be_kept_on_a_server() {
        use TableSource::Remote;
        let dir = dir();
        let dsn = |table: &str| {
            format!("dsn:pgsql://dkim:pw-77@127.0.0.1/mail/table={table}?keycol=k?datacol=k")
        };
        let config = dir
            .load(&format!(
                "Mode s\nSocket inet:8891@localhost\nInternalHosts {}\nExternalIgnoreList {}\n\
                 PeerList ldap://127.0.0.1/dc=example?cn?sub?(cn=$d)\nMTA {}\nExemptDomains {}\n\
                 DontSignMailTo {}\nATPSDomains {}\nBodyLengthDB {}\nSoftStart no\n",
                dsn("internal"),
                dsn("ignore"),
                dsn("mta"),
                dsn("exempt"),
                dsn("nosign"),
                dsn("atps"),
                dsn("bodylength")
            ))
            .unwrap();
        let policy = &config.policy;
        assert!(matches!(policy.trust.internal_hosts, Remote(_)));
        assert!(matches!(policy.trust.external_ignore, Some(Remote(_))));
        assert!(matches!(policy.trust.peers, Some(Remote(_))));
        assert!(matches!(policy.trust.mta_names, Remote(_)));
        assert!(matches!(policy.exempt_domains, Some(Remote(_))));
        assert!(matches!(policy.dont_sign_mail_to, Some(Remote(_))));
        assert!(matches!(policy.signature.atps_domains, Some(Remote(_))));
        assert!(matches!(
            policy.signature.body_length_recipients,
            Some(Remote(_))
        ));
        assert!(!policy.soft_start);
        let roles: Vec<&str> = policy.server_sets().iter().map(|s| s.role()).collect();
        assert_eq!(
            roles,
            [
                "InternalHosts",
                "ExternalIgnoreList",
                "PeerList",
                "MTA",
                "ExemptDomains",
                "DontSignMailTo",
                "ATPSDomains",
                "BodyLengthDB"
            ]
        );
        for set in policy.server_sets() {
            assert!(!set.describe().contains("pw-77"), "{}", set.describe());
        }
        // A set read whole at start-up cannot come from a server yet.
        let errors = dir.errors(&format!(
            "Mode s\nSocket inet:8891@localhost\nMacroList {}\n",
            dsn("macros")
        ));
        assert!(
            errors[0].starts_with(&dir.line(3)) && !errors[0].contains("pw-77"),
            "{errors:?}"
        );
    }

    #[test]
    fn remove_ar_from_and_replace_headers_may_be_kept_on_a_server() {
        use crate::policy::TableSource::Remote;
        let dir = dir();
        dir.write("rules", "@host\\.example\t@example\n");
        let dsn = |table: &str| {
            format!("dsn:pgsql://dkim:pw-78@127.0.0.1/mail/table={table}?keycol=k?datacol=k")
        };
        let config = dir
            .load(&format!(
                "Socket inet:8891@localhost\nReplaceRules $DIR/rules\nReplaceHeaders {}\n\
                 RemoveARFrom {}\n",
                dsn("headers"),
                dsn("remar")
            ))
            .unwrap();
        let policy = &config.policy;
        let rules = policy.signature.replace_rules.as_ref().unwrap();
        assert!(rules.fields_on_server().is_some());
        let verification = policy.verification.as_ref().unwrap();
        assert!(matches!(verification.remove_from, Some(Remote(_))));
        let roles: Vec<&str> = policy.server_sets().iter().map(|s| s.role()).collect();
        assert_eq!(roles, ["ReplaceHeaders", "RemoveARFrom"]);
        for set in policy.server_sets() {
            assert!(!set.describe().contains("pw-78"), "{}", set.describe());
        }
        let shown = crate::verifying::describe(verification).join("\n");
        assert!(
            shown.contains("RemoveARFrom: asked per message of dsn:pgsql://dkim:****@"),
            "{shown}"
        );
    }
}
