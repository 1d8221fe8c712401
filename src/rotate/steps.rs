//! The four steps of a rotation and the rule that picks the one due:
//!
//! 1. **prepare**: a new key and its `.txt` beside the old key; nothing
//!    signs with it.
//! 2. **publish**: its TXT record through a dynamic update, or the
//!    administrator is told exactly what to add.
//! 3. **activate**: only once every authoritative server of the zone
//!    serves a record that matches the new key (testkey's check): the
//!    tables are switched atomically, the configuration is loaded again to
//!    prove it works, and the daemon reloads. Any failure puts the old
//!    tables back.
//! 4. **retire**: after the overlap, the old record is revoked (or
//!    removed), the old KeyTable line goes, and the old key is archived.
//!
//! One run takes at most one step, under the domain's lock, and records it
//! in the state file before saying what comes next. A run with nothing due
//! changes nothing. A table that differs from what rotate left behind is a
//! hand edit: rotate stops instead of overwriting it.
//!
//! This module must never activate a key whose record is not served,
//! never leave a table half switched, and never print key material.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::config::{Config, Origin, Overrides};
use crate::keys::generate::{KeygenError, KeygenRequest, keygen};
use crate::keys::record::{self, RecordOptions};
use crate::keys::testkey::{Verdict, judge};
use crate::keys::{KeyType, LoadOptions, PrivateKey, load_key_file};

use super::args::{ReloadChoice, RetireRecord};
use super::clock::{Span, Timestamp};
use super::dns::{self, DnsError, Served, UpdateError};
use super::edit::{self, EditError, Replaced, TextFile};
use super::home::{self, ConfiguredKey, FileEdit, PlanError, Unrotatable};
use super::reload::{self, ReloadError, ReloadMethod, Reloaded};
use super::state::{KeyRef, Pending, Rotation, Stage, StateError, StateFile, Switch};
use super::tsig::TsigKey;

/// Everything a run needs besides the configuration.
#[derive(Debug)]
pub struct Options {
    pub origin: Origin,
    /// Whom key files must belong to (see `rotate --signer-user`).
    pub signer_uid: Option<u32>,
    pub algorithm: Option<KeyType>,
    pub bits: Option<u32>,
    pub selector: Option<String>,
    pub overlap: Span,
    pub max_age: Span,
    pub start_now: bool,
    pub update: Option<DnsUpdate>,
    pub nameserver: Option<SocketAddr>,
    pub reload: ReloadChoice,
    /// Where the daemon's metrics say whether its reload worked.
    pub daemon_metrics: Option<SocketAddr>,
    pub systemd_unit: String,
    pub retire_record: RetireRecord,
    pub accept_edits: bool,
}

/// Where dynamic updates go, and the key that signs them.
#[derive(Debug)]
pub struct DnsUpdate {
    pub server: SocketAddr,
    pub key: TsigKey,
}

/// How a run ended, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Nothing was due; nothing changed.
    NothingDue,
    /// A step was carried out.
    Done,
    /// Activation waits for DNS; nothing changed.
    Waiting,
}

/// What a run did and what comes next, for the administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub domain: String,
    pub outcome: Outcome,
    /// The step taken (or `nothing due`), then details.
    pub lines: Vec<String>,
    /// The next step and when.
    pub next: String,
}

/// Why a run stopped. Nothing is half done: each says what was left as it
/// was, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("{0}")]
    Config(String),
    #[error("{domain}: {detail}")]
    NoKey { domain: String, detail: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{domain}: prepare: {source}")]
    Keygen {
        domain: String,
        #[source]
        source: Box<KeygenError>,
    },
    #[error("{domain}: {step}: {source}")]
    Dns {
        domain: String,
        step: &'static str,
        #[source]
        source: Box<DnsError>,
    },
    #[error("{domain}: {step}: {source}; nothing was changed")]
    Update {
        domain: String,
        step: &'static str,
        #[source]
        source: Box<UpdateError>,
    },
    #[error(
        "{domain}: {}: changed since rotate's last step ({since}); rotate does not overwrite \
         hand edits. Look at the change (the backup beside it, if any, is the version before \
         rotate's last edit); to go on with the file as it is now, run rotate again with \
         --accept-edits",
        path.display()
    )]
    HandEdited {
        domain: String,
        path: PathBuf,
        since: String,
    },
    #[error("{domain}: {step}: {source}")]
    Plan {
        domain: String,
        step: &'static str,
        #[source]
        source: Box<PlanError>,
    },
    #[error("{domain}: {step}: {source}")]
    Edit {
        domain: String,
        step: &'static str,
        #[source]
        source: Box<EditError>,
    },
    #[error("{domain}: {step}: {detail}")]
    Refused {
        domain: String,
        step: &'static str,
        detail: String,
    },
    #[error("{domain}: {step}: {source}; {undone}")]
    Reload {
        domain: String,
        step: &'static str,
        #[source]
        source: ReloadError,
        undone: String,
    },
}

/// Runs the step due for `domain`.
pub fn rotate_domain(options: &Options, domain: &str) -> Result<Report, RotateError> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let config = load_config(options)?;
    let (keys, refused) = keys_of(&config, &domain);
    let state_file = state_file_for(&config, &domain, &keys, &refused)?;
    let _lock = state_file.lock()?;
    // Read again under the lock: a rotation that held it may have switched
    // the tables since.
    let config = load_config(options)?;
    let (keys, refused) = keys_of(&config, &domain);
    if state_file_for(&config, &domain, &keys, &refused)? != state_file {
        return Err(RotateError::Refused {
            domain,
            step: "lock",
            detail: "the domain's keys moved to another directory while rotate waited; run \
                     rotate again"
                .to_string(),
        });
    }
    let run = Run {
        options,
        config,
        domain: domain.clone(),
        keys,
        state_file,
        now: Timestamp::now(),
    };
    match run.state_file.load()? {
        Some(rotation) if rotation.in_progress() => match rotation.stage {
            Stage::Prepared => run.publish(rotation),
            Stage::Published => run.activate(rotation),
            Stage::Active => run.retire(rotation),
            Stage::Retired => unreachable!("in_progress"),
        },
        previous => run.prepare(previous),
    }
}

/// The configuration, loaded as the daemon would load it. Rotate edits
/// tables and keys, so a key that cannot sign (which the daemon would only
/// report) stops it too.
pub fn load_config(options: &Options) -> Result<Config, RotateError> {
    let overrides = Overrides {
        sockets: Some(Vec::new()),
        signer_uid: options.signer_uid,
        ..Overrides::default()
    };
    let config = Config::load_with(&options.origin, &overrides).map_err(|e| {
        let problems: Vec<String> = e.problems().iter().map(ToString::to_string).collect();
        config_error(&options.origin, &problems)
    })?;
    let faults: Vec<String> = config
        .policy
        .faults()
        .iter()
        .map(ToString::to_string)
        .collect();
    if !faults.is_empty() {
        return Err(config_error(&options.origin, &faults));
    }
    Ok(config)
}

fn config_error(origin: &Origin, problems: &[String]) -> RotateError {
    RotateError::Config(format!(
        "{} does not load, so rotate changes nothing: {} (check-config shows the same)",
        origin.path.display(),
        problems.join("; ")
    ))
}

/// The keys that sign for `domain` (in table order) and the ones that
/// cannot be rotated.
fn keys_of(config: &Config, domain: &str) -> (Vec<ConfiguredKey>, Vec<Unrotatable>) {
    let (keys, refused) = home::configured_keys(config);
    let in_use = signing_keys(config);
    (
        keys.into_iter()
            .filter(|k| k.domain == domain && in_use(k))
            .collect(),
        // `%` entries sign for every domain: they concern this one too.
        refused
            .into_iter()
            .filter(|r| r.domain == domain || r.domain == "%")
            .collect(),
    )
}

/// Whether a configured key signs anything: a SigningTable line names it
/// (or reaches it through `%`). KeyTable lines nobody uses are not keys
/// of the domain.
pub fn signing_keys(config: &Config) -> impl Fn(&ConfiguredKey) -> bool + '_ {
    move |key| {
        let Some(tables) = &config.policy.signing.tables else {
            return false;
        };
        tables.signing_table.entries().iter().any(|s| {
            s.key_name == key.key_name || (s.key_name == "%" && key.key_name == key.domain)
        })
    }
}

/// The domain's state file: in the directory of its first key.
fn state_file_for(
    config: &Config,
    domain: &str,
    keys: &[ConfiguredKey],
    refused: &[Unrotatable],
) -> Result<StateFile, RotateError> {
    if let Some(first) = keys.first() {
        let dir = first.key_file.parent().unwrap_or(Path::new("/"));
        return Ok(StateFile::new(dir, domain));
    }
    let detail = if let Some(r) = refused.first() {
        format!("cannot be rotated: {}", r.reason)
    } else {
        let (all, _) = home::configured_keys(config);
        let in_use = signing_keys(config);
        let mut domains: Vec<String> = all
            .iter()
            .filter(|k| in_use(k))
            .map(|k| k.domain.clone())
            .collect();
        domains.sort();
        domains.dedup();
        format!(
            "no key signs for it in {} (domains with keys: {})",
            config.origin.path.display(),
            if domains.is_empty() {
                "none".to_string()
            } else {
                domains.join(", ")
            }
        )
    };
    Err(RotateError::NoKey {
        domain: domain.to_string(),
        detail,
    })
}

/// One run for one domain.
struct Run<'a> {
    options: &'a Options,
    config: Config,
    domain: String,
    keys: Vec<ConfiguredKey>,
    state_file: StateFile,
    now: Timestamp,
}

/// How old a key is: since the rotation that activated it, or since its
/// file was written.
pub fn key_age(key: &ConfiguredKey, last: Option<&Rotation>, now: Timestamp) -> Option<Span> {
    if let Some(r) = last
        && r.new.key_name == key.key_name
        && r.new.selector == key.selector
        && let Some(activated) = r.activated
    {
        return Some(now.since(activated));
    }
    let modified = std::fs::metadata(&key.key_file).ok()?.modified().ok()?;
    Some(now.since(Timestamp::from_system(modified)))
}

impl Run<'_> {
    fn refused(&self, step: &'static str, detail: impl Into<String>) -> RotateError {
        RotateError::Refused {
            domain: self.domain.clone(),
            step,
            detail: detail.into(),
        }
    }

    fn save(&self, rotation: &Rotation) -> Result<(), RotateError> {
        Ok(self.state_file.save(rotation)?)
    }

    fn report(&self, outcome: Outcome, lines: Vec<String>, next: String) -> Report {
        Report {
            domain: self.domain.clone(),
            outcome,
            lines,
            next,
        }
    }

    /// `rotate -x FILE --domain D`, to quote in what comes next.
    fn again(&self) -> String {
        let flag = match self.options.origin.format {
            crate::config::Format::OpenDkim => "-x",
            crate::config::Format::Toml => "-c",
        };
        format!(
            "dkim-sidecar rotate {flag} {} --domain {}",
            self.options.origin.path.display(),
            self.domain
        )
    }

    // ----- prepare -----

    fn prepare(&self, last: Option<Rotation>) -> Result<Report, RotateError> {
        let candidates: Vec<&ConfiguredKey> = self
            .keys
            .iter()
            .filter(|k| self.options.algorithm.is_none_or(|a| k.key_type == a))
            .collect();
        if candidates.is_empty() {
            let algorithm = self.options.algorithm.map(|a| a.to_string());
            return Err(RotateError::NoKey {
                domain: self.domain.clone(),
                detail: format!(
                    "has no {} key in {}",
                    algorithm.as_deref().unwrap_or("signing"),
                    self.config.origin.path.display()
                ),
            });
        }
        let aged: Vec<(&ConfiguredKey, Span)> = candidates
            .iter()
            .map(|k| {
                (
                    *k,
                    key_age(k, last.as_ref(), self.now).unwrap_or(Span::from_secs(0)),
                )
            })
            .collect();
        let chosen = if self.options.start_now {
            if aged.len() > 1 {
                let list: Vec<String> = aged
                    .iter()
                    .map(|(k, _)| format!("{} ({})", k.selector, k.key_type))
                    .collect();
                return Err(self.refused(
                    "prepare",
                    format!(
                        "has {} keys ({}); say which to rotate with --algorithm",
                        aged.len(),
                        list.join(", ")
                    ),
                ));
            }
            aged[0]
        } else {
            let due = aged
                .iter()
                .filter(|(_, age)| *age >= self.options.max_age)
                .max_by_key(|(_, age)| *age);
            match due {
                Some(due) => *due,
                None => {
                    let (key, age) = aged
                        .iter()
                        .max_by_key(|(_, age)| *age)
                        .expect("candidates is not empty");
                    let when = self.now.plus(Span::from_secs(
                        self.options.max_age.as_secs() - age.as_secs(),
                    ));
                    return Ok(self.report(
                        Outcome::NothingDue,
                        vec![format!(
                            "nothing due: key {} ({}) is {} old, younger than --max-age {}",
                            key.selector,
                            key.key_type,
                            days(*age),
                            self.options.max_age
                        )],
                        format!(
                            "prepare on {} (to start today: {} --now)",
                            when.date(),
                            self.again()
                        ),
                    ));
                }
            }
        };
        self.prepare_key(chosen.0)
    }

    fn new_selector(&self, old: &ConfiguredKey, dir: &Path) -> Result<String, RotateError> {
        let (all, _) = home::configured_keys(&self.config);
        let taken = |s: &str| {
            s == old.selector
                || all
                    .iter()
                    .any(|k| k.domain == self.domain && k.selector == s)
                || dir.join(format!("{s}.private")).exists()
                || dir.join(format!("{s}.txt")).exists()
        };
        if let Some(s) = &self.options.selector {
            if taken(s) {
                return Err(self.refused(
                    "prepare",
                    format!(
                        "selector {s} is in use already (by a key of {} or a file in {}); \
                         choose another with --selector",
                        self.domain,
                        dir.display()
                    ),
                ));
            }
            return Ok(s.clone());
        }
        let base = format!("s{}", self.now.year_month());
        let mut candidate = base.clone();
        for suffix in 'b'..='z' {
            if !taken(&candidate) {
                return Ok(candidate);
            }
            candidate = format!("{base}{suffix}");
        }
        Err(self.refused(
            "prepare",
            "every dated selector of this month is taken; choose one with --selector",
        ))
    }

    fn prepare_key(&self, old: &ConfiguredKey) -> Result<Report, RotateError> {
        let dir = old
            .key_file
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        let selector = self.new_selector(old, &dir)?;
        let bits = self
            .options
            .bits
            .unwrap_or_else(|| old.rsa_bits.unwrap_or(2048).max(2048));
        let request = KeygenRequest {
            directory: dir.clone(),
            selector: selector.clone(),
            domain: self.domain.clone(),
            append_domain: true,
            key_type: old.key_type,
            rsa_bits: bits,
            record: record_options_like(&dir.join(format!("{}.txt", old.selector))),
            force: false,
        };
        let written = keygen(&request).map_err(|source| RotateError::Keygen {
            domain: self.domain.clone(),
            source: Box::new(source),
        })?;
        let remove_new = || {
            let _ = std::fs::remove_file(&written.private_key);
            let _ = std::fs::remove_file(&written.record);
        };
        // The new key belongs to whoever owns the old one (the signer).
        if let Err(e) = give_like(&old.key_file, &[&written.private_key, &written.record]) {
            remove_new();
            return Err(self.refused(
                "prepare",
                format!(
                    "cannot give {} the owner of {}: {e}; nothing was kept",
                    written.private_key.display(),
                    old.key_file.display()
                ),
            ));
        }
        let (all, _) = home::configured_keys(&self.config);
        let taken: Vec<String> = all.iter().map(|k| k.key_name.clone()).collect();
        let new_name = match old.switch {
            Switch::NewEntry => home::new_key_name(old, &selector, &taken),
            Switch::InPlace => old.key_name.clone(),
        };
        let mut files = BTreeMap::new();
        for path in old.home.files() {
            match TextFile::read(&path) {
                Ok(file) => {
                    files.insert(path.display().to_string(), file.fingerprint());
                }
                Err(source) => {
                    remove_new();
                    return Err(RotateError::Edit {
                        domain: self.domain.clone(),
                        step: "prepare",
                        source: Box::new(source),
                    });
                }
            }
        }
        let rotation = Rotation {
            domain: self.domain.clone(),
            stage: Stage::Prepared,
            algorithm: old.key_type.to_string(),
            switch: old.switch,
            prepared: self.now,
            published: None,
            published_via: None,
            activated: None,
            overlap: None,
            retire_after: None,
            retired: None,
            retired_via: None,
            old: KeyRef {
                selector: old.selector.clone(),
                key_name: old.key_name.clone(),
                key_file: old.key_file.clone(),
            },
            new: KeyRef {
                selector: selector.clone(),
                key_name: new_name,
                key_file: written.private_key.clone(),
            },
            files,
            pending: None,
        };
        if let Err(e) = self.save(&rotation) {
            remove_new();
            return Err(e);
        }
        let size = match old.key_type {
            KeyType::Rsa => format!("rsa, {bits} bits"),
            KeyType::Ed25519 => "ed25519".to_string(),
        };
        let record_text = record_text_of(&written.record);
        let mut lines = vec![
            format!(
                "prepare: wrote {} ({size}) and {}; nothing signs with it yet",
                written.private_key.display(),
                written.record.display()
            ),
            format!(
                "the record to publish at {}:",
                record::record_name(&selector, &self.domain)
            ),
            record_text,
        ];
        lines.extend(written.warnings.iter().map(|w| format!("warning: {w}")));
        let how = if self.options.update.is_some() {
            "it goes out as a dynamic update".to_string()
        } else {
            "with --update-dns SERVER:PORT --tsig-key FILE it goes out as a dynamic update; \
             without, rotate says what to add"
                .to_string()
        };
        Ok(self.report(
            Outcome::Done,
            lines,
            format!("publish, due now: run {} again ({how})", self.again()),
        ))
    }

    // ----- publish -----

    fn publish(&self, mut rotation: Rotation) -> Result<Report, RotateError> {
        let txt = rotation.new.key_file.with_extension("txt");
        if !rotation.new.key_file.exists() {
            return Err(self.refused(
                "publish",
                format!(
                    "the new key {} is gone; move {} away to start over",
                    rotation.new.key_file.display(),
                    self.state_file.path.display()
                ),
            ));
        }
        let public = self.new_public_key(&rotation, "publish")?;
        let text = record_text_for(&txt, &public);
        let name = record::record_name(&rotation.new.selector, &self.domain);
        let mut lines = Vec::new();
        let via = match &self.options.update {
            Some(update) => {
                let zone = self.update_record(update, &name, Some(&text), "publish")?;
                lines.push(format!(
                    "publish: added the TXT record {name} to zone {zone} on {} (TSIG key {})",
                    update.server, update.key.name
                ));
                format!("dns-update {} (key {})", update.server, update.key.name)
            }
            None => {
                lines.push(format!(
                    "publish: add this TXT record at {name} (TTL {} or less) to your zone:",
                    dns::RECORD_TTL
                ));
                lines.push(text);
                lines.push(format!(
                    "or, as a zone file entry (from {}):",
                    txt.display()
                ));
                lines.extend(
                    std::fs::read_to_string(&txt)
                        .unwrap_or_default()
                        .lines()
                        .map(str::to_string),
                );
                "by hand".to_string()
            }
        };
        rotation.stage = Stage::Published;
        rotation.published = Some(self.now);
        rotation.published_via = Some(via);
        self.save(&rotation)?;
        Ok(self.report(
            Outcome::Done,
            lines,
            format!(
                "activate, due now: run {} again; it switches the tables once every \
                 authoritative server of the zone serves the record",
                self.again()
            ),
        ))
    }

    /// Replaces the TXT record `name` with `text` (or deletes it) on the
    /// update server; returns the zone.
    fn update_record(
        &self,
        update: &DnsUpdate,
        name: &str,
        text: Option<&str>,
        step: &'static str,
    ) -> Result<String, RotateError> {
        let dns_error = |source| RotateError::Dns {
            domain: self.domain.clone(),
            step,
            source: Box::new(source),
        };
        let record = dns::name(name).map_err(dns_error)?;
        let zone = dns::find_zone(update.server, &record, false).map_err(dns_error)?;
        dns::replace_txt(update.server, &update.key, &zone, &record, text).map_err(|source| {
            RotateError::Update {
                domain: self.domain.clone(),
                step,
                source: Box::new(source),
            }
        })?;
        Ok(zone.to_ascii().trim_end_matches('.').to_string())
    }

    // ----- activate -----

    /// Every authoritative server's answer for the new record; `Ok(lines)`
    /// when all serve a record that matches the key, `Err(lines)` saying
    /// which do not and why (then which do).
    fn record_served(
        &self,
        rotation: &Rotation,
        public: &PrivateKey,
    ) -> Result<Vec<String>, Vec<String>> {
        let name = record::record_name(&rotation.new.selector, &self.domain);
        let resolver = match self.options.nameserver {
            Some(ns) => ns,
            None => dns::system_resolver().map_err(|e| vec![e])?,
        };
        let port = self.options.nameserver.map_or(53, |ns| ns.port());
        let record = dns::name(&name).map_err(|e| vec![e.to_string()])?;
        let zone = dns::find_zone(resolver, &record, true)
            .map_err(|e| vec![format!("cannot find the zone of {name}: {e}")])?;
        let servers = dns::authoritative_servers(resolver, &zone, port)
            .map_err(|e| vec![format!("cannot find the authoritative servers: {e}")])?;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for server in &servers {
            let verdict = match dns::served_txt(server.addr, &record) {
                Err(e) => Err(format!("does not answer: {e}")),
                Ok(Served::NotAuthoritative) => {
                    Err("answers, but not authoritatively (a lame delegation?)".to_string())
                }
                Ok(Served::Missing) => Err(format!("has no TXT record at {name} yet")),
                Ok(Served::Txt(text)) => match record::parse_record(&text) {
                    Err(e) => Err(format!("serves a record that does not parse: {e}")),
                    Ok(parsed) => match judge(&parsed, public.key_type(), public.public_key()) {
                        Verdict::KeyOk => Ok(()),
                        Verdict::KeysDoNotMatch => {
                            Err("serves a record with a different public key".to_string())
                        }
                        Verdict::Revoked => Err("serves a revoked record (empty p=)".to_string()),
                        other => Err(format!("serves a record that does not fit: {other:?}")),
                    },
                },
            };
            match verdict {
                Ok(()) => good.push(format!("{server} serves it")),
                Err(why) => bad.push(format!("{server} {why}")),
            }
        }
        if bad.is_empty() {
            return Ok(good);
        }
        bad.extend(good);
        Err(bad)
    }

    /// The new key, read only for its public half.
    fn new_public_key(
        &self,
        rotation: &Rotation,
        step: &'static str,
    ) -> Result<std::sync::Arc<PrivateKey>, RotateError> {
        let options = LoadOptions {
            require_safe_keys: false,
            signer_uid: None,
            ..LoadOptions::default()
        };
        load_key_file(&rotation.new.key_file, &options)
            .map(|loaded| loaded.key)
            .map_err(|e| {
                self.refused(
                    step,
                    format!(
                        "the new key cannot be read ({e}); move {} away to start over",
                        self.state_file.path.display()
                    ),
                )
            })
    }

    fn check_hand_edits(&self, rotation: &Rotation, since: &str) -> Result<(), RotateError> {
        if self.options.accept_edits {
            return Ok(());
        }
        for (path, expected) in &rotation.files {
            let now = TextFile::read(Path::new(path)).map(|f| f.fingerprint());
            if !matches!(&now, Ok(fingerprint) if fingerprint == expected) {
                return Err(RotateError::HandEdited {
                    domain: self.domain.clone(),
                    path: PathBuf::from(path),
                    since: since.to_string(),
                });
            }
        }
        Ok(())
    }

    /// A switch that went through but was not recorded: the files are as
    /// `pending` says. Returns whether it is so; clears a pending switch
    /// that never happened.
    fn pending_done(&self, rotation: &mut Rotation) -> bool {
        let Some(pending) = rotation.pending.clone() else {
            return false;
        };
        let matches = |files: &BTreeMap<String, String>| {
            files.iter().all(|(path, fp)| {
                TextFile::read(Path::new(path)).is_ok_and(|f| f.fingerprint() == *fp)
            })
        };
        if matches(&pending.files) {
            rotation.files = pending.files;
            rotation.pending = None;
            return true;
        }
        rotation.pending = None;
        false
    }

    fn activate(&self, mut rotation: Rotation) -> Result<Report, RotateError> {
        let resumed = self.pending_done(&mut rotation);
        let served = if resumed {
            Vec::new()
        } else {
            let public = self.new_public_key(&rotation, "activate")?;
            match self.record_served(&rotation, &public) {
                Ok(lines) => lines,
                Err(why) => {
                    let mut lines = vec![format!(
                        "activate: not yet: the record {} is not served by every authoritative \
                         server; nothing was changed",
                        record::record_name(&rotation.new.selector, &self.domain)
                    )];
                    lines.extend(why);
                    let by_hand = rotation.published_via.as_deref() == Some("by hand");
                    let hint = if by_hand {
                        format!(
                            "publish the record (it is in {}), then",
                            rotation.new.key_file.with_extension("txt").display()
                        )
                    } else {
                        "wait until the update reaches every server (zone transfer), then"
                            .to_string()
                    };
                    return Ok(self.report(
                        Outcome::Waiting,
                        lines,
                        format!("activate: {hint} run {} again", self.again()),
                    ));
                }
            }
        };
        let since = format!(
            "rotate last left it on {}",
            rotation.published.unwrap_or(rotation.prepared)
        );
        let mut lines = Vec::new();
        let reloaded = if resumed {
            lines.push("activate: the tables were switched by an earlier run".to_string());
            self.reload("activate", &[])?
        } else {
            self.check_hand_edits(&rotation, &since)?;
            let old = self
                .keys
                .iter()
                .find(|k| {
                    k.key_name == rotation.old.key_name && k.selector == rotation.old.selector
                })
                .ok_or_else(|| {
                    self.refused(
                        "activate",
                        format!(
                            "the configuration no longer signs with {} (selector {}); \
                             nothing to switch from: move {} away to start over",
                            rotation.old.key_name,
                            rotation.old.selector,
                            self.state_file.path.display()
                        ),
                    )
                })?;
            let edits =
                home::plan_activation(old, &rotation.new).map_err(|source| RotateError::Plan {
                    domain: self.domain.clone(),
                    step: "activate",
                    source: Box::new(source),
                })?;
            let (files, reloaded) = self.switch(&mut rotation, edits, Stage::Active, &mut lines)?;
            rotation.files = files;
            reloaded
        };
        rotation.stage = Stage::Active;
        rotation.activated = Some(self.now);
        rotation.overlap = Some(self.options.overlap);
        let retire_after = self.now.plus(self.options.overlap);
        rotation.retire_after = Some(retire_after);
        rotation.pending = None;
        let mut first = vec![format!(
            "activate: {} now signs with selector {} ({})",
            self.domain,
            rotation.new.selector,
            rotation.new.key_file.display()
        )];
        first.extend(served);
        lines.splice(0..0, first);
        lines.push(describe_reload(&reloaded));
        if let Err(e) = self.save(&rotation) {
            return Err(self.refused(
                "activate",
                format!(
                    "the switch is done, but the state could not be saved ({e}); run rotate \
                     again once that is fixed: it recognises the switch"
                ),
            ));
        }
        Ok(self.report(
            Outcome::Done,
            lines,
            format!(
                "retire on {} (after the overlap of {}): revokes {}, archives the old key",
                retire_after,
                self.options.overlap,
                record::record_name(&rotation.old.selector, &self.domain)
            ),
        ))
    }

    fn reload_method(&self) -> ReloadMethod {
        match self.options.reload {
            ReloadChoice::None => ReloadMethod::None,
            ReloadChoice::Systemd => ReloadMethod::Systemd(self.options.systemd_unit.clone()),
            ReloadChoice::Pidfile => match &self.config.service.pid_file {
                Some(path) => ReloadMethod::PidFile(path.clone()),
                None => ReloadMethod::PidFile(PathBuf::new()),
            },
            ReloadChoice::Auto => match &self.config.service.pid_file {
                Some(path) => ReloadMethod::PidFile(path.clone()),
                None if Path::new("/run/systemd/system").is_dir() => {
                    ReloadMethod::Systemd(self.options.systemd_unit.clone())
                }
                None => ReloadMethod::None,
            },
        }
    }

    /// Reloads the daemon; on failure puts `replaced` back and says so.
    fn reload(&self, step: &'static str, replaced: &[Replaced]) -> Result<Reloaded, RotateError> {
        let method = self.reload_method();
        if method == ReloadMethod::PidFile(PathBuf::new()) {
            let undone = undo_all(replaced);
            return Err(self.refused(
                step,
                format!(
                    "--reload pidfile, but {} names no PidFile; {undone}",
                    self.config.origin.path.display()
                ),
            ));
        }
        let metrics = self
            .options
            .daemon_metrics
            .or(self.config.service.metrics_listen);
        match reload::reload(&method, metrics) {
            Ok(reloaded) => Ok(reloaded),
            Err(source) => {
                let undone = undo_all(replaced);
                // A daemon that did reload the switched tables must read the
                // old ones again.
                if !replaced.is_empty() {
                    let _ = reload::reload(&method, None);
                }
                Err(RotateError::Reload {
                    domain: self.domain.clone(),
                    step,
                    source,
                    undone,
                })
            }
        }
    }

    /// Applies `edits`, checks the configuration they make, and reloads
    /// the daemon; on any failure puts every file back. Returns the new
    /// fingerprints of every file rotate watches.
    fn switch(
        &self,
        rotation: &mut Rotation,
        edits: Vec<FileEdit>,
        to: Stage,
        lines: &mut Vec<String>,
    ) -> Result<(BTreeMap<String, String>, Reloaded), RotateError> {
        let step = if to == Stage::Active {
            "activate"
        } else {
            "retire"
        };
        // Every file rotate watches as it is now (hand edits were refused
        // or accepted just before), the edited ones as they will be.
        let mut after: BTreeMap<String, String> = rotation
            .files
            .keys()
            .filter_map(|path| {
                let file = TextFile::read(Path::new(path)).ok()?;
                Some((path.clone(), file.fingerprint()))
            })
            .collect();
        for e in &edits {
            after.insert(
                e.original.path.display().to_string(),
                edit::fingerprint(e.new_text.as_bytes()),
            );
        }
        rotation.pending = Some(Pending {
            to,
            files: after.clone(),
        });
        self.save(rotation)?;
        let clear_pending = |rotation: &mut Rotation| {
            rotation.pending = None;
            let _ = self.save(rotation);
        };
        let stamp = self.now.compact();
        let mut replaced: Vec<Replaced> = Vec::new();
        for e in &edits {
            match edit::replace(&e.original, &e.new_text, &stamp) {
                Ok(r) => replaced.push(r),
                Err(source) => {
                    let undone = undo_all(&replaced);
                    clear_pending(rotation);
                    return Err(RotateError::Refused {
                        domain: self.domain.clone(),
                        step,
                        detail: format!("{source} ({undone})"),
                    });
                }
            }
        }
        if let Err(problem) = self.check_switched(rotation, to) {
            let undone = undo_all(&replaced);
            clear_pending(rotation);
            return Err(self.refused(
                step,
                format!("the switched configuration does not work: {problem}; {undone}"),
            ));
        }
        let reloaded = match self.reload(step, &replaced) {
            Ok(r) => r,
            Err(e) => {
                clear_pending(rotation);
                return Err(e);
            }
        };
        for (e, r) in edits.iter().zip(&replaced) {
            lines.extend(e.summary.iter().cloned());
            lines.push(format!("  previous version kept as {}", r.backup.display()));
        }
        Ok((after, reloaded))
    }

    /// Loads the configuration as switched and checks that it signs for
    /// the domain as intended.
    fn check_switched(&self, rotation: &Rotation, to: Stage) -> Result<(), String> {
        let config = load_config(self.options).map_err(|e| e.to_string())?;
        let (keys, _) = keys_of(&config, &self.domain);
        match to {
            Stage::Active => {
                let signs_new = keys.iter().any(|k| {
                    k.selector == rotation.new.selector && k.key_file == rotation.new.key_file
                });
                if !signs_new {
                    return Err(format!(
                        "it does not sign {} with selector {}",
                        self.domain, rotation.new.selector
                    ));
                }
                let signs_old = keys.iter().any(|k| k.selector == rotation.old.selector);
                if signs_old {
                    return Err(format!(
                        "it still signs {} with selector {}",
                        self.domain, rotation.old.selector
                    ));
                }
            }
            _ => {
                if let Some(tables) = &config.policy.signing.tables
                    && tables
                        .key_table
                        .get(&rotation.old.key_name)
                        .is_some_and(|e| e.selector == rotation.old.selector)
                {
                    return Err(format!("it still lists {}", rotation.old.key_name));
                }
            }
        }
        Ok(())
    }

    // ----- retire -----

    fn retire(&self, mut rotation: Rotation) -> Result<Report, RotateError> {
        let retire_after = rotation.retire_after.expect("checked when loaded");
        let old_name = record::record_name(&rotation.old.selector, &self.domain);
        if self.now < retire_after && rotation.pending.is_none() {
            return Ok(self.report(
                Outcome::NothingDue,
                vec![format!(
                    "nothing due: {} signs with selector {} since {}; {} stays published for \
                     mail still on its way",
                    self.domain,
                    rotation.new.selector,
                    rotation.activated.expect("checked when loaded"),
                    old_name
                )],
                format!("retire on {retire_after}"),
            ));
        }
        let resumed = self.pending_done(&mut rotation);
        let since = format!(
            "rotate last left it on {}",
            rotation.activated.expect("checked when loaded")
        );
        if !resumed {
            self.check_hand_edits(&rotation, &since)?;
        }
        // Never revoke a record the configuration signs with.
        if let Some(user) = self
            .keys
            .iter()
            .find(|k| k.selector == rotation.old.selector)
        {
            return Err(self.refused(
                "retire",
                format!(
                    "the configuration signs with selector {} again (key {}); rotate does not \
                     revoke a record in use: point the signing at {} (or start a new rotation \
                     after moving {} away)",
                    rotation.old.selector,
                    user.key_name,
                    rotation.new.key_name,
                    self.state_file.path.display()
                ),
            ));
        }
        // The old KeyTable line, now unused: planned (and checked) before
        // anything changes.
        let table_edit = if rotation.switch == Switch::NewEntry && !resumed {
            home::plan_retirement(&self.config, &rotation.old, &self.domain).map_err(|source| {
                RotateError::Plan {
                    domain: self.domain.clone(),
                    step: "retire",
                    source: Box::new(source),
                }
            })?
        } else {
            None
        };
        let mut lines = Vec::new();
        // DNS first: if the server refuses, nothing has changed.
        let via = match &self.options.update {
            Some(update) => {
                let (text, did) = match self.options.retire_record {
                    RetireRecord::Revoke => (
                        Some(format!("v=DKIM1; k={}; p=", rotation.algorithm)),
                        "revoked (empty p=)",
                    ),
                    RetireRecord::Remove => (None, "removed"),
                };
                let zone = self.update_record(update, &old_name, text.as_deref(), "retire")?;
                lines.push(format!(
                    "retire: {did} {old_name} in zone {zone} on {} (TSIG key {})",
                    update.server, update.key.name
                ));
                format!("dns-update {} (key {})", update.server, update.key.name)
            }
            None => {
                let what = match self.options.retire_record {
                    RetireRecord::Revoke => format!(
                        "replace the TXT record at {old_name} with `v=DKIM1; k={}; p=` (an \
                         empty p= revokes the key)",
                        rotation.algorithm
                    ),
                    RetireRecord::Remove => format!("delete the TXT record at {old_name}"),
                };
                lines.push(format!("retire: {what}"));
                "by hand".to_string()
            }
        };
        if let Some(edit) = table_edit {
            let (files, reloaded) =
                self.switch(&mut rotation, vec![edit], Stage::Retired, &mut lines)?;
            rotation.files = files;
            lines.push(describe_reload(&reloaded));
        }
        lines.extend(self.archive(&rotation)?);
        rotation.stage = Stage::Retired;
        rotation.retired = Some(self.now);
        rotation.retired_via = Some(via);
        rotation.pending = None;
        self.save(&rotation)?;
        let next = rotation
            .activated
            .unwrap_or(self.now)
            .plus(self.options.max_age);
        Ok(self.report(
            Outcome::Done,
            lines,
            format!(
                "the rotation is complete; the next is due on {} (--max-age {})",
                next.date(),
                self.options.max_age
            ),
        ))
    }

    /// Moves the old key (and its `.txt`) to `archive/` beside it, unless
    /// another configured key still uses that file.
    fn archive(&self, rotation: &Rotation) -> Result<Vec<String>, RotateError> {
        let old = &rotation.old.key_file;
        if !old.exists() {
            return Ok(vec![format!(
                "{} is gone already (archived earlier?)",
                old.display()
            )]);
        }
        let config = load_config(self.options)?;
        let (all, _) = home::configured_keys(&config);
        if let Some(user) = all.iter().find(|k| k.key_file == *old) {
            return Ok(vec![format!(
                "kept {}: the key {} of {} still uses it",
                old.display(),
                user.key_name,
                user.domain
            )]);
        }
        let dir = old.parent().unwrap_or(Path::new("/"));
        let archive = dir.join("archive");
        let failed = |e: std::io::Error| {
            self.refused(
                "retire",
                format!(
                    "cannot archive {} in {}: {e}; everything else is done: run rotate again \
                     once that is fixed",
                    old.display(),
                    archive.display()
                ),
            )
        };
        if !archive.is_dir() {
            std::fs::create_dir(&archive).map_err(failed)?;
            std::fs::set_permissions(
                &archive,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .map_err(failed)?;
            give_like(dir, &[&archive]).map_err(failed)?;
        }
        let mut lines = Vec::new();
        for file in [old.clone(), old.with_extension("txt")] {
            if !file.exists() {
                continue;
            }
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut target = archive.join(&name);
            if target.exists() {
                target = archive.join(format!("{name}.{}", self.now.compact()));
            }
            std::fs::rename(&file, &target).map_err(failed)?;
            lines.push(format!(
                "archived {} as {}",
                file.display(),
                target.display()
            ));
        }
        Ok(lines)
    }
}

fn undo_all(replaced: &[Replaced]) -> String {
    let mut problems = Vec::new();
    for r in replaced.iter().rev() {
        if let Err(e) = edit::undo(r) {
            problems.push(e.to_string());
        }
    }
    if replaced.is_empty() {
        "nothing was changed".to_string()
    } else if problems.is_empty() {
        "the previous tables were put back".to_string()
    } else {
        format!("PUTTING THE TABLES BACK FAILED: {}", problems.join("; "))
    }
}

fn describe_reload(reloaded: &Reloaded) -> String {
    match reloaded {
        Reloaded::Confirmed(how) => format!("reload: {how}"),
        Reloaded::Requested(how) => format!("reload: {how}"),
        Reloaded::NotAsked => "reload: not done (--reload none, or no PidFile and no systemd): \
             reload the daemon now (systemctl reload dkim-sidecar, or SIGHUP); until then it \
             signs as before"
            .to_string(),
    }
}

/// The record text of a keygen `.txt` file (the quoted strings joined).
fn record_text_of(txt: &Path) -> String {
    std::fs::read_to_string(txt)
        .map(|t| record::text_from_file_contents(&t))
        .unwrap_or_default()
}

/// The record to publish for `key`: its `.txt` when that holds a record
/// that matches the key, else one made from the key (`h=sha256`).
fn record_text_for(txt: &Path, key: &PrivateKey) -> String {
    let text = record_text_of(txt);
    let fits = record::parse_record(&text)
        .is_ok_and(|r| judge(&r, key.key_type(), key.public_key()) == Verdict::KeyOk);
    if fits {
        return text;
    }
    let options = RecordOptions {
        hash_algorithms: Some("sha256".to_string()),
        ..RecordOptions::default()
    };
    record::record_text(key.key_type(), &key.public_key_base64(), &options)
}

/// The new record's tags like the old one's (`t=s`, `t=y`, `s=email`), with
/// `h=sha256`; defaults when the old `.txt` is not there.
fn record_options_like(old_txt: &Path) -> RecordOptions {
    let mut options = RecordOptions {
        hash_algorithms: Some("sha256".to_string()),
        ..RecordOptions::default()
    };
    let Ok(text) = std::fs::read_to_string(old_txt) else {
        return options;
    };
    if let Ok(old) = record::parse_record(&record::text_from_file_contents(&text)) {
        options.no_subdomains = old.flags.iter().any(|f| f == "s");
        options.testing = old.flags.iter().any(|f| f == "y");
        options.restrict_to_email = old
            .services
            .is_some_and(|s| s.len() == 1 && s[0] == "email");
    }
    options
}

/// Gives `paths` the owner and group of `like` (when run as root).
fn give_like(like: &Path, paths: &[&Path]) -> std::io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let meta = std::fs::metadata(like)?;
    for path in paths {
        std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}

/// `12d`, for ages.
pub fn days(span: Span) -> String {
    let d = span.as_secs() / 86_400;
    if d > 0 {
        format!("{d}d")
    } else {
        span.to_string()
    }
}
