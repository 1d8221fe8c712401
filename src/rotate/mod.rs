//! `dkim-sidecar rotate`: key rotation without downtime.
//!
//! Each run takes the next step that is due for a domain (prepare a new
//! key, publish its record, activate it once DNS serves it, retire the old
//! one after an overlap), says what it did and what comes next and when,
//! and changes nothing when nothing is due, so a daily timer can run it.
//! `rotate --status` shows where every domain's key stands. The command
//! itself (`commands::rotate`) prints what this module returns.
//!
//! - `steps`: the four steps and the rule that picks the one due;
//! - `state`: the state file beside the keys, and the per-domain lock;
//! - `home`: where a key is configured and the edits that switch it;
//! - `edit`: line-preserving edits and atomic replacement with a backup;
//! - `dns`: zones, authoritative servers, RFC 2136 updates with TSIG;
//! - `tsig`: BIND key files;
//! - `reload`: SIGHUP through the PidFile, or `systemctl reload`;
//! - `clock`: UTC dates and durations.
//!
//! Errors are typed inside; the user gets one line each (file, what is
//! wrong, how to fix it). This module never prints or logs private key
//! material or TSIG secrets, never switches to a key whose record the
//! zone's authoritative servers do not serve, and never leaves a table
//! half written.

pub mod args;
mod clock;
mod dns;
mod edit;
mod home;
mod reload;
mod state;
mod steps;
mod tsig;

use crate::cli::KeyAlgorithm;
use crate::config::Origin;
use crate::keys::KeyType;

pub use args::RotateArgs;
pub use clock::{Span, Timestamp};
pub use status::{domains, table as status_table};
pub use steps::{Options, Outcome, Report, RotateError, load_config, rotate_domain};

/// Exit status when activation waits for DNS (sysexits' EX_TEMPFAIL):
/// nothing is wrong yet, but the step could not be taken.
pub const EXIT_WAITING: u8 = 75;

/// The report as printed: `DOMAIN: ...` lines, details indented, then
/// `DOMAIN: next: ...`.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for (i, line) in report.lines.iter().enumerate() {
        if i == 0 {
            out.push_str(&format!("{}: {line}\n", report.domain));
        } else {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str(&format!("{}: next: {}\n", report.domain, report.next));
    out
}

/// The run's options from the command line; `origin` is the
/// configuration file it names.
pub fn options(args: &RotateArgs, origin: Origin) -> Result<Options, String> {
    let signer_uid = match &args.signer_user {
        None => None,
        Some(name) => Some(
            nix::unistd::User::from_name(name)
                .map_err(|e| format!("--signer-user {name}: {e}"))?
                .ok_or_else(|| format!("--signer-user {name}: no such user"))?
                .uid
                .as_raw(),
        ),
    };
    let update = match (&args.update_dns, &args.tsig_key) {
        (Some(server), Some(key)) => Some(steps::DnsUpdate {
            server: *server,
            key: tsig::TsigKey::read(key).map_err(|e| e.to_string())?,
        }),
        _ => None,
    };
    if let Some(selector) = &args.selector {
        let label = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if selector.is_empty() || !selector.chars().all(label) {
            return Err(format!(
                "--selector {selector}: a selector is one DNS label: letters, digits, '-' and '_'"
            ));
        }
    }
    Ok(Options {
        origin,
        signer_uid,
        algorithm: args.algorithm.map(|a| match a {
            KeyAlgorithm::Rsa => KeyType::Rsa,
            KeyAlgorithm::Ed25519 => KeyType::Ed25519,
        }),
        bits: args.bits,
        selector: args.selector.clone(),
        overlap: args.overlap,
        max_age: args.max_age,
        start_now: args.now,
        update,
        nameserver: args.nameserver,
        reload: args.reload,
        daemon_metrics: args.daemon_metrics,
        systemd_unit: args.systemd_unit.clone(),
        retire_record: args.retire_record,
        accept_edits: args.accept_edits,
    })
}

pub mod status {
    //! `rotate --status`: one line per key, read-only (no lock taken).

    use std::path::Path;

    use crate::config::Config;

    use super::clock::Timestamp;
    use super::home::{self, ConfiguredKey};
    use super::state::{Stage, StateFile};
    use super::steps::{self, Options};

    /// Every domain with a key that signs, in table order.
    pub fn domains(config: &Config) -> Vec<String> {
        let (keys, _) = home::configured_keys(config);
        let in_use = steps::signing_keys(config);
        let mut domains: Vec<String> = Vec::new();
        for key in keys.iter().filter(|k| in_use(k)) {
            if !domains.contains(&key.domain) {
                domains.push(key.domain.clone());
            }
        }
        domains
    }

    pub fn table(config: &Config, options: &Options, now: Timestamp) -> String {
        let (keys, refused) = home::configured_keys(config);
        let in_use = steps::signing_keys(config);
        let keys: Vec<&ConfiguredKey> = keys.iter().filter(|k| in_use(k)).collect();
        let mut rows = vec![[
            "DOMAIN".to_string(),
            "SELECTOR".to_string(),
            "ALGORITHM".to_string(),
            "AGE".to_string(),
            "STAGE".to_string(),
            "NEXT".to_string(),
        ]];
        for domain in domains(config) {
            let mine: Vec<&&ConfiguredKey> = keys.iter().filter(|k| k.domain == domain).collect();
            let dir = mine[0].key_file.parent().unwrap_or(Path::new("/"));
            let state = StateFile::new(dir, &domain).load();
            let rotation = match state {
                Ok(r) => r,
                Err(e) => {
                    rows.push([
                        domain.clone(),
                        "?".to_string(),
                        "?".to_string(),
                        "?".to_string(),
                        "?".to_string(),
                        e.to_string(),
                    ]);
                    continue;
                }
            };
            for key in mine {
                let age = steps::key_age(key, rotation.as_ref(), now)
                    .map(steps::days)
                    .unwrap_or_else(|| "?".to_string());
                let concerned = rotation.as_ref().filter(|r| {
                    r.in_progress()
                        && (r.old.key_name == key.key_name || r.new.key_name == key.key_name)
                });
                let (stage, next) = match concerned {
                    None => {
                        let due = steps::key_age(key, rotation.as_ref(), now)
                            .map(|age| {
                                if age >= options.max_age {
                                    "prepare now".to_string()
                                } else {
                                    format!(
                                        "prepare on {}",
                                        now.plus(super::Span::from_secs(
                                            options.max_age.as_secs() - age.as_secs()
                                        ))
                                        .date()
                                    )
                                }
                            })
                            .unwrap_or_else(|| "?".to_string());
                        ("-".to_string(), due)
                    }
                    Some(r) => {
                        let role =
                            if r.old.key_name == key.key_name && r.old.selector == key.selector {
                                format!("{} (leaving; new: {})", r.stage.name(), r.new.selector)
                            } else {
                                format!("{} (new; old: {})", r.stage.name(), r.old.selector)
                            };
                        let next = match r.stage {
                            Stage::Prepared => "publish now".to_string(),
                            Stage::Published => "activate once DNS serves it".to_string(),
                            Stage::Active => format!(
                                "retire {} on {}",
                                r.old.selector,
                                r.retire_after.map(|t| t.to_string()).unwrap_or_default()
                            ),
                            Stage::Retired => "-".to_string(),
                        };
                        (role, next)
                    }
                };
                rows.push([
                    domain.clone(),
                    key.selector.clone(),
                    key.key_type.to_string(),
                    age,
                    stage,
                    next,
                ]);
            }
        }
        for r in refused {
            rows.push([
                r.domain.clone(),
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
                "cannot rotate".to_string(),
                r.reason.clone(),
            ]);
        }
        let widths: Vec<usize> = (0..5)
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in rows {
            for (c, width) in widths.iter().enumerate() {
                out.push_str(&format!("{:<width$}  ", row[c], width = *width));
            }
            out.push_str(&row[5]);
            out.push('\n');
        }
        out
    }
}
