//! The effective rules of a loaded [`Config`], in plain text, for
//! `check-config`: what the server would listen on and run as, which
//! senders sign with which keys (d=, s=, key file, algorithm, size), who is
//! trusted, how signatures are made, what happens on errors, every key
//! that cannot sign (a fault) and every warning with its file and line.
//!
//! It describes what was loaded, not what was written, so that the
//! administrator sees defaults and resolved paths. This module only formats
//! text; it never prints, logs or reads files.

use std::fmt::Write as _;

use crate::dkim::canonicalization_name;
use crate::keys::{KeyType, PrivateKey};
use crate::policy::{Action, DomainSet, SigningTables, TableSource};
use crate::tables::{DataSetKind, HostList, KeyDomain, KeySource};

use super::{Config, Format};

/// Signing rules shown before the rest is summarised.
const MAX_RULES_SHOWN: usize = 50;

/// The effective configuration, one setting per line, ending with the
/// faults and the warnings.
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    let format = match config.origin.format {
        Format::OpenDkim => "OpenDKIM opendkim.conf",
        Format::Toml => "native TOML",
    };
    line(
        &mut out,
        0,
        format!(
            "dkim-sidecar configuration from {} ({format})",
            config.origin.path.display()
        ),
    );
    service(&mut out, config);
    signing(&mut out, config);
    trust(&mut out, config);
    signature(&mut out, config);
    errors(&mut out, config);
    if let Some(verification) = &config.policy.verification {
        heading(&mut out, "Verification (Mode v):");
        for text in crate::verifying::describe(verification) {
            line(&mut out, 1, text);
        }
    }
    logging(&mut out, config);
    out.push('\n');
    let faults = config.policy.faults();
    if !faults.is_empty() {
        line(
            &mut out,
            0,
            format!(
                "Keys that cannot sign ({}): `run` starts, signs every other domain and gives \
                 mail that needs one of these the On-KeyError action ({}):",
                faults.len(),
                action(config.policy.errors.key_error)
            ),
        );
        for fault in faults {
            line(&mut out, 1, format!("error: {fault}"));
        }
    }
    if config.warnings.is_empty() {
        line(&mut out, 0, "No warnings.");
    } else {
        line(
            &mut out,
            0,
            format!("Warnings ({}):", config.warnings.len()),
        );
        for warning in &config.warnings {
            line(&mut out, 1, format!("warning: {warning}"));
        }
    }
    out
}

fn line(out: &mut String, indent: usize, text: impl AsRef<str>) {
    for _ in 0..indent {
        out.push_str("  ");
    }
    out.push_str(text.as_ref());
    out.push('\n');
}

fn heading(out: &mut String, title: &str) {
    out.push('\n');
    line(out, 0, title);
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

fn service(out: &mut String, config: &Config) {
    let service = &config.service;
    heading(out, "Service:");
    let sockets: Vec<String> = service.sockets.iter().map(ToString::to_string).collect();
    line(out, 1, format!("listen on: {}", list(&sockets)));
    let access = &service.socket_access;
    let unix = service
        .sockets
        .iter()
        .any(|s| matches!(s, milter::server::SocketSpec::Unix(_)));
    if unix || access.mode.is_some() || access.user.is_some() || access.group.is_some() {
        line(
            out,
            1,
            format!(
                "unix socket: mode {}, owner {}, group {}",
                access
                    .mode
                    .map_or("from the umask".to_string(), |m| format!("{m:04o}")),
                access.user.as_deref().unwrap_or("unchanged"),
                access.group.as_deref().unwrap_or("unchanged"),
            ),
        );
    }
    let run_as = match &service.run_as {
        Some(r) => match &r.group {
            Some(group) => format!("{} (group {group})", r.user),
            None => format!("{} (its own group)", r.user),
        },
        None => "the user that starts dkim-sidecar (no user set)".to_string(),
    };
    line(out, 1, format!("run as: {run_as}"));
    if service.allow_root {
        line(out, 1, "running as root: allowed");
    }
    line(
        out,
        1,
        format!(
            "pid file: {}",
            service
                .pid_file
                .as_ref()
                .map_or("none".to_string(), |p| p.display().to_string())
        ),
    );
    line(
        out,
        1,
        format!(
            "umask: {}",
            service
                .umask
                .map_or("unchanged".to_string(), |m| format!("{m:04o}"))
        ),
    );
    let settings = &service.server;
    line(
        out,
        1,
        format!(
            "connections: at most {}, frames up to {} bytes, idle timeout {}s, frame timeout {}s, \
             write timeout {}s, shutdown grace {}s",
            settings.max_connections,
            settings.limits.max_payload,
            settings.limits.timeouts.idle.as_secs(),
            settings.limits.timeouts.frame.as_secs(),
            settings.limits.timeouts.write.as_secs(),
            settings.shutdown_grace.as_secs()
        ),
    );
}

fn key_summary(key: &PrivateKey) -> String {
    match (key.key_type(), key.rsa_bits()) {
        (KeyType::Rsa, Some(bits)) => format!("rsa-sha256, {bits}-bit RSA key"),
        (KeyType::Rsa, None) => "rsa-sha256".to_string(),
        (KeyType::Ed25519, _) => "ed25519-sha256, Ed25519 key".to_string(),
    }
}

fn signing(out: &mut String, config: &Config) {
    let policy = &config.policy;
    let signing = &policy.signing;
    heading(out, "Signing:");
    if !policy.mode.sign {
        line(
            out,
            1,
            "signing is off (Mode has no s): no message is signed",
        );
    }
    if let Some(remote) = &signing.remote {
        for set in remote.remote_sets() {
            line(
                out,
                1,
                format!(
                    "{} from {}, looked up per message through a cache",
                    set.role(),
                    set.describe()
                ),
            );
        }
    }
    if let Some(tables) = &signing.tables {
        signing_tables(out, tables, signing.multiple_signatures);
    } else if let Some(key) = &signing.domain_key {
        line(
            out,
            1,
            format!(
                "domains: {}{}",
                match &key.domains {
                    TableSource::Local(set) => domains(set),
                    TableSource::Remote(set) => format!(
                        "those listed in {}, asked per message (the sender's domain, then *{})",
                        set.describe(),
                        if signing.subdomains {
                            ", then each parent"
                        } else {
                            ""
                        }
                    ),
                },
                if signing.subdomains && key.domains.local().is_some() {
                    " and their subdomains"
                } else {
                    ""
                }
            ),
        );
        line(
            out,
            2,
            format!(
                "d=<the sender's domain> s={} {} from {}",
                key.selector,
                match &key.key {
                    Ok(loaded) => key_summary(loaded),
                    Err(_) => "NOT LOADED: CANNOT SIGN (see below)".to_string(),
                },
                key.key_file.display()
            ),
        );
    } else {
        line(out, 1, "no signing keys: no message is signed");
    }
}

fn domains(set: &DomainSet) -> String {
    if set.is_any() {
        return "every domain (*)".to_string();
    }
    let mut names: Vec<String> = set.names().map(str::to_string).collect();
    names.sort();
    list(&names)
}

fn signing_tables(out: &mut String, tables: &SigningTables, multiple: bool) {
    let st = &tables.signing_table;
    let how = match st.kind() {
        DataSetKind::Refile => "patterns matched against user@domain in order",
        _ => {
            "exact lookups in OpenDKIM's order: user@domain, domain, user@.parent, .parent, \
             user@*, *"
        }
    };
    line(
        out,
        1,
        format!(
            "signing rules from {} ({how}); {}:",
            st.origin(),
            if multiple {
                "every match signs (MultipleSignatures)"
            } else {
                "the first match signs"
            }
        ),
    );
    line(out, 1, format!("keys from {}", tables.key_table.origin()));
    let entries = st.entries();
    let mut shown_groups = 0;
    let mut previous_group = None;
    for entry in entries {
        if previous_group != Some(entry.group) {
            if shown_groups == MAX_RULES_SHOWN {
                let remaining = entries.iter().filter(|e| e.group > entry.group).count() + 1;
                line(out, 2, format!("... and {remaining} more entries"));
                break;
            }
            shown_groups += 1;
            previous_group = Some(entry.group);
            line(out, 2, format!("{}  ({})", entry.pattern, entry.at));
        }
        let signer = entry
            .signer
            .as_ref()
            .map_or(String::new(), |s| format!(" i={s}"));
        if entry.key_name == "%" {
            line(
                out,
                3,
                format!("the KeyTable entry named after the sender's domain{signer}"),
            );
            continue;
        }
        let Some(key) = tables.key_table.get(&entry.key_name) else {
            let why = match tables.key_table.rejected(&entry.key_name) {
                Some(fault) => format!("its KeyTable line {} is malformed", fault.at),
                None => "not in the KeyTable".to_string(),
            };
            line(
                out,
                3,
                format!("key {} ({why}): CANNOT SIGN", entry.key_name),
            );
            continue;
        };
        let domain = match &key.domain {
            KeyDomain::Sender => "<the sender's domain>".to_string(),
            KeyDomain::Fixed(d) => d.clone(),
        };
        let material = match (tables.keys.loaded_key(&key.name), &key.source) {
            (Some(loaded), _) => key_summary(loaded),
            (None, KeySource::File(template)) if template.is_template() => {
                "loaded when a message first needs it".to_string()
            }
            (None, _) => "NOT LOADED: CANNOT SIGN (see below)".to_string(),
        };
        let source = match &key.source {
            KeySource::File(template) => format!("from {}", template.as_str()),
            KeySource::RelativeFile(path) => format!("from {}", path.display()),
            KeySource::Inline(_) => format!("written inline at {}", key.at),
        };
        line(
            out,
            3,
            format!(
                "key {}: d={domain} s={}{signer} {material} {source}",
                key.name, key.selector
            ),
        );
    }
}

fn hosts(list: &HostList) -> String {
    const SHOWN: usize = 20;
    let entries = list.entries();
    let mut text = entries
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if entries.len() > SHOWN {
        let _ = write!(text, ", ... ({} entries)", entries.len());
    }
    if entries.is_empty() {
        text = "none".to_string();
    }
    format!("{text}  ({})", list.origin())
}

/// A data set read at start-up, shown by `local`, or the server it is
/// asked of per message.
fn source<T>(source: &TableSource<T>, local: impl Fn(&T) -> String) -> String {
    match source {
        TableSource::Local(set) => local(set),
        TableSource::Remote(set) => format!(
            "asked per message of {}, through a cache  ({})",
            set.describe(),
            set.at()
        ),
    }
}

fn trust(out: &mut String, config: &Config) {
    let trust = &config.policy.trust;
    heading(out, "Trusted origins (mail from them is signed):");
    line(
        out,
        1,
        format!("internal hosts: {}", source(&trust.internal_hosts, hosts)),
    );
    line(out, 1, "clients that authenticated with SMTP AUTH");
    line(
        out,
        1,
        format!(
            "external ignore list: {}",
            trust
                .external_ignore
                .as_ref()
                .map_or("none".to_string(), |s| source(s, hosts))
        ),
    );
    line(
        out,
        1,
        format!(
            "peer list (accepted unseen): {}",
            trust
                .peers
                .as_ref()
                .map_or("none".to_string(), |s| source(s, hosts))
        ),
    );
    line(
        out,
        1,
        format!(
            "MTA names: {}",
            source(&trust.mta_names, |names| list(names))
        ),
    );
    let macros: Vec<String> = trust
        .macros
        .iter()
        .map(|m| {
            if m.values.is_empty() {
                format!("{{{}}} set", m.name)
            } else {
                format!("{{{}}} is {}", m.name, m.values.join(" or "))
            }
        })
        .collect();
    line(out, 1, format!("macro rules: {}", list(&macros)));
}

fn signature(out: &mut String, config: &Config) {
    let policy = &config.policy;
    let signature = &policy.signature;
    heading(out, "Signatures:");
    line(
        out,
        1,
        format!(
            "canonicalization: {}/{}",
            canonicalization_name(signature.header_canonicalization),
            canonicalization_name(signature.body_canonicalization)
        ),
    );
    let headers = &signature.headers;
    line(
        out,
        1,
        format!("signed headers: {}", list(headers.signed().listed())),
    );
    line(
        out,
        1,
        format!("never signed: {}", list(headers.omitted().listed())),
    );
    line(
        out,
        1,
        format!("oversigned headers: {}", list(headers.oversigned())),
    );
    if let Some(rules) = &signature.replace_rules {
        line(
            out,
            1,
            format!(
                "rewritten before signing (ReplaceRules): {} rule{}, the file's last line first, on {}",
                rules.len(),
                if rules.len() == 1 { "" } else { "s" },
                match rules.fields() {
                    None => "every field".to_string(),
                    Some(TableSource::Local(_)) => "the ReplaceHeaders fields".to_string(),
                    Some(fields) => format!(
                        "the ReplaceHeaders fields, {}",
                        source(fields, |_| String::new())
                    ),
                }
            ),
        );
    }
    line(
        out,
        1,
        format!(
            "signature TTL (x=): {}",
            signature
                .expiry
                .map_or("none".to_string(), |d| format!("{}s", d.as_secs()))
        ),
    );
    line(
        out,
        1,
        format!("sender from: {}", list(&policy.sender_headers)),
    );
    line(
        out,
        1,
        format!(
            "exempt sender domains: {}",
            policy
                .exempt_domains
                .as_ref()
                .map_or("none".to_string(), |s| source(s, domains))
        ),
    );
    line(
        out,
        1,
        format!(
            "never signed when sent to: {}",
            policy
                .dont_sign_mail_to
                .as_ref()
                .map_or("none".to_string(), |s| source(s, |set| {
                    format!("{}  ({})", list(set.entries()), set.origin())
                }))
        ),
    );
    line(
        out,
        1,
        format!(
            "header bytes per message: {}",
            if policy.max_header_bytes == usize::MAX {
                "no limit".to_string()
            } else {
                policy.max_header_bytes.to_string()
            }
        ),
    );
    line(
        out,
        1,
        format!(
            "header fields per message: {}",
            if policy.max_header_count == usize::MAX {
                "no limit".to_string()
            } else {
                policy.max_header_count.to_string()
            }
        ),
    );
    line(
        out,
        1,
        format!(
            "DKIM-Filter header: {}",
            if policy.software_header {
                "added"
            } else {
                "not added"
            }
        ),
    );
}

fn action(a: Action) -> &'static str {
    match a {
        Action::Accept => "accept",
        Action::Discard => "discard",
        Action::Quarantine => "quarantine",
        Action::Reject => "reject",
        Action::Tempfail => "tempfail",
    }
}

fn errors(out: &mut String, config: &Config) {
    let errors = &config.policy.errors;
    heading(out, "On errors:");
    line(
        out,
        1,
        format!("internal error: {}", action(errors.internal_error)),
    );
    line(
        out,
        1,
        format!("signing key unavailable: {}", action(errors.key_error)),
    );
    line(
        out,
        1,
        format!("signature cannot be made: {}", action(errors.signing_error)),
    );
}

fn logging(out: &mut String, config: &Config) {
    let logging = &config.logging;
    heading(out, "Logging:");
    line(
        out,
        1,
        if logging.syslog {
            format!("to syslog, facility {}", logging.syslog_facility)
        } else {
            "to stderr".to_string()
        },
    );
    line(
        out,
        1,
        format!(
            "signed messages: {}; messages not signed: {}{}",
            if logging.log_success {
                "logged"
            } else {
                "not logged"
            },
            if logging.log_why {
                "logged with the reason"
            } else {
                "logged briefly"
            },
            if logging.json { "; as JSON" } else { "" }
        ),
    );
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;

    fn describe_toml(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("default.private");
        fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("keys-example/default.private"),
            &key,
        )
        .unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("c.toml");
        fs::write(&path, text).unwrap();
        describe(&Config::from_toml_file(&path).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn domain_key_shows_domains_selector_key_and_warnings() {
        let text = describe_toml(
            "[server]\nsockets = [\"local:/run/d.sock\"]\nsocket_mode = 0o660\n\
             [signing]\nsign_headers = [\"*\", \"+x-*\"]\n[on_error]\nsigning_error = \"reject\"\n\
             [domain]\nnames = [\"example.org\", \"example.com\"]\nselector = \"mail\"\n\
             key_file = \"default.private\"\nsubdomains = true\n\
             [trust]\ninternal_hosts = [\"10.0.0.0/8\", \"192.0.2.5/24\"]\n",
        );
        for expected in [
            "listen on: local:/run/d.sock",
            "unix socket: mode 0660, owner unchanged, group unchanged",
            "domains: example.com, example.org and their subdomains",
            "d=<the sender's domain> s=mail rsa-sha256, 2048-bit RSA key from ",
            "signed headers: from, reply-to",
            ", x-*",
            "signature cannot be made: reject",
            "internal hosts: 10.0.0.0/8, 192.0.2.5/24",
            "Warnings (1):",
            "warning: ",
            "has host bits set",
        ] {
            assert!(text.contains(expected), "{expected}:\n{text}");
        }
    }

    #[test]
    fn replace_rules_are_listed_with_the_fields_they_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        fs::write(&rules, "@.*\\.example\\.com\t@example.com\nold\tnew\n").unwrap();
        let every = describe_toml(&format!(
            "mode = \"sv\"\n[server]\nsockets = [\"inet:8891@127.0.0.1\"]\n\
             [signing]\nreplace_rules = \"{}\"\n",
            rules.display()
        ));
        assert!(
            every.contains(
                "rewritten before signing (ReplaceRules): 2 rules, the file's last line first, \
                 on every field"
            ),
            "{every}"
        );
        let some = describe_toml(&format!(
            "mode = \"sv\"\n[server]\nsockets = [\"inet:8891@127.0.0.1\"]\n\
             [signing]\nreplace_rules = \"{}\"\nreplace_headers = [\"From\"]\n",
            rules.display()
        ));
        assert!(some.contains("on the ReplaceHeaders fields"), "{some}");
    }

    #[test]
    fn configuration_without_keys_says_nothing_is_signed() {
        // `mode` written: verifying without keys is what is wanted.
        let text = describe_toml("mode = \"sv\"\n[server]\nsockets = [\"inet:8891@127.0.0.1\"]\n");
        assert!(
            text.contains("no signing keys: no message is signed"),
            "{text}"
        );
        assert!(text.contains("no signing keys are configured"), "{text}");
    }
}
