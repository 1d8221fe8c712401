//! The verification settings, whichever front door they came through,
//! checked and turned into one [`VerificationPolicy`] (resolver included).
//!
//! Each front door reads its own syntax into a [`Raw`] (values with the
//! place they were written) and calls [`build`]; every problem becomes a
//! [`ConfigError`] naming that place. This module never logs and opens no
//! socket (building the resolver reads `/etc/resolv.conf` and the trust
//! anchor file only).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::diagnostics::Location;
use crate::dns::{self, DnsSettings, Resolver, TestRecords};
use crate::policy::TableSource;
use crate::verify::{
    DEFAULT_CLOCK_DRIFT, DEFAULT_MAX_SIGNATURES, FormatChecks, KeyAction, VerifySettings,
};
use crate::verifying::{AuthservId, VerificationPolicy, VerifyActions, hostname};

use super::ConfigError;

/// A DNSTimeout of 0 means "wait forever" to OpenDKIM; Postfix waits 300 s
/// for a milter's answer (milter_content_timeout), so that is forever here.
const FOREVER: Duration = Duration::from_secs(300);

/// Verification settings as written, each with where.
#[derive(Debug, Default)]
pub(crate) struct Raw {
    /// The configuration file, for problems that belong to no line.
    pub file: Option<Location>,
    pub authserv_id: Option<(String, Location)>,
    pub with_job_id: bool,
    pub always_add: bool,
    pub no_header_b: bool,
    pub keep_auth_results: bool,
    pub strict_headers: bool,
    pub weak_syntax_checks: bool,
    pub remove_all: bool,
    /// RemoveARFrom: the hosts, or the set kept on a server.
    pub remove_from: Option<TableSource<Vec<String>>>,
    pub max_signatures: Option<(i64, Location)>,
    pub minimum_key_bits: u32,
    pub dns_timeout: Option<(i64, Location)>,
    pub clock_drift: Option<(i64, Location)>,
    pub nameservers: Option<(Vec<String>, Location)>,
    pub trust_anchor_file: Option<(PathBuf, Location)>,
    pub unprotected_key: Option<(String, Location)>,
    pub bogus_key: Option<(String, Location)>,
    pub test_public_keys: Option<(PathBuf, Location)>,
    pub test_dns_data: Option<Vec<(String, String)>>,
    pub actions: VerifyActions,
}

fn invalid(
    errors: &mut Vec<ConfigError>,
    at: &Location,
    name: &str,
    value: String,
    expected: &str,
) {
    errors.push(ConfigError::InvalidValue {
        at: at.clone(),
        name: name.to_string(),
        value,
        expected: expected.to_string(),
    });
}

fn key_action(
    value: &Option<(String, Location)>,
    name: &str,
    default: KeyAction,
    errors: &mut Vec<ConfigError>,
) -> KeyAction {
    let Some((value, at)) = value else {
        return default;
    };
    match value.to_ascii_lowercase().as_str() {
        "none" => KeyAction::None,
        "neutral" => KeyAction::Neutral,
        "fail" => KeyAction::Fail,
        _ => {
            invalid(errors, at, name, value.clone(), "use none, neutral or fail");
            default
        }
    }
}

fn seconds(
    value: &Option<(i64, Location)>,
    name: &str,
    default: Duration,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match value {
        None => default,
        Some((0, _)) => FOREVER,
        Some((n, at)) => match u64::try_from(*n) {
            Ok(n) => Duration::from_secs(n).min(FOREVER),
            Err(_) => {
                invalid(
                    errors,
                    at,
                    name,
                    n.to_string(),
                    "a number of seconds, 0 or more",
                );
                default
            }
        },
    }
}

/// Checks `raw` and builds the policy (`None` after adding errors).
pub(crate) fn build(raw: Raw, errors: &mut Vec<ConfigError>) -> Option<Arc<VerificationPolicy>> {
    let before = errors.len();
    let max_signatures = match &raw.max_signatures {
        None => DEFAULT_MAX_SIGNATURES,
        Some((n, at)) => usize::try_from(*n).unwrap_or_else(|_| {
            invalid(
                errors,
                at,
                "MaximumSignaturesToVerify",
                n.to_string(),
                "0 (all) or more",
            );
            DEFAULT_MAX_SIGNATURES
        }),
    };
    let settings = VerifySettings {
        max_signatures,
        minimum_key_bits: raw.minimum_key_bits,
        unprotected_key: key_action(
            &raw.unprotected_key,
            "UnprotectedKey",
            KeyAction::None,
            errors,
        ),
        bogus_key: key_action(&raw.bogus_key, "BogusKey", KeyAction::Fail, errors),
        clock_drift: seconds(&raw.clock_drift, "ClockDrift", DEFAULT_CLOCK_DRIFT, errors),
        format: FormatChecks {
            sender: !raw.weak_syntax_checks,
            strict: raw.strict_headers,
        },
    };
    let mut nameservers = Vec::new();
    if let Some((entries, at)) = &raw.nameservers {
        for entry in entries {
            match dns::parse_nameserver(entry) {
                Some(addr) => nameservers.push(addr),
                None => invalid(
                    errors,
                    at,
                    "Nameservers",
                    entry.clone(),
                    "IP addresses, optionally with a port: 192.0.2.1, 127.0.0.1:5353, \
                     127.0.0.1@5353 or [::1]:5353",
                ),
            }
        }
    }
    let test_records = match (&raw.test_public_keys, &raw.test_dns_data) {
        (Some((path, at)), _) => match std::fs::read_to_string(path) {
            Ok(text) => match TestRecords::from_lines(&text, "TestPublicKeys") {
                Ok(records) => Some(Arc::new(records)),
                Err(e) => {
                    invalid(
                        errors,
                        at,
                        "TestPublicKeys",
                        path.display().to_string(),
                        &e.to_string(),
                    );
                    None
                }
            },
            Err(e) => {
                invalid(
                    errors,
                    at,
                    "TestPublicKeys",
                    path.display().to_string(),
                    &format!("a readable file of `name TXT-value` lines ({e})"),
                );
                None
            }
        },
        (None, Some(pairs)) => Some(Arc::new(TestRecords::from_pairs(
            pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        ))),
        (None, None) => None,
    };
    let dns = DnsSettings {
        nameservers,
        timeout: seconds(&raw.dns_timeout, "DNSTimeout", dns::DEFAULT_TIMEOUT, errors),
        trust_anchor_file: raw.trust_anchor_file.as_ref().map(|(p, _)| p.clone()),
        test_records,
        cache_entries: dns::DEFAULT_CACHE_ENTRIES,
    };
    if errors.len() > before {
        return None;
    }
    let resolver = match Resolver::shared(&dns) {
        Ok(resolver) => resolver,
        Err(error) => {
            let at = match &error {
                dns::DnsSetupError::TrustAnchor { .. } => {
                    raw.trust_anchor_file.as_ref().map(|(_, at)| at.clone())
                }
                _ => None,
            }
            .or(raw.file.clone())
            .unwrap_or_else(|| Location::file(std::path::Path::new("-")));
            errors.push(ConfigError::Native {
                at,
                message: format!("{error}; set Nameservers, or fix the file"),
            });
            return None;
        }
    };
    let authserv_id = match raw.authserv_id {
        None => AuthservId::Mta,
        Some((name, _)) if name == "HOSTNAME" => AuthservId::Fixed(hostname()),
        Some((name, at)) => {
            if name.contains(|c: char| c.is_whitespace() || c == ';' || c == '(' || c == '"') {
                invalid(
                    errors,
                    &at,
                    "AuthservID",
                    name,
                    "a host name, without spaces, `;`, `(` or quotes",
                );
                return None;
            }
            AuthservId::Fixed(name)
        }
    };
    Some(Arc::new(VerificationPolicy {
        settings,
        dns,
        resolver,
        authserv_id,
        with_job_id: raw.with_job_id,
        always_add: raw.always_add,
        header_b: !raw.no_header_b,
        keep_auth_results: raw.keep_auth_results,
        remove_all: raw.remove_all,
        remove_from: raw.remove_from,
        actions: raw.actions,
    }))
}
