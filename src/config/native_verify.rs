//! The native TOML's `mode` and `[verify]` section (a child of
//! `native.rs`, so it reads values with the same helpers), into
//! [`verification::Raw`]. Relative file names are relative to the
//! configuration file's directory, as everywhere in the TOML. This module
//! never logs.

use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::super::verification::{self, Raw};
use super::{Entries, TomlFile, parse_action};
use crate::policy::{Action, Mode};
use crate::verifying::{VerificationPolicy, VerifyActions};

/// `[verify]`: OpenDKIM's verification options, spelled for TOML.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifySection {
    authserv_id: Option<Spanned<String>>,
    #[serde(default)]
    authserv_id_with_job_id: bool,
    #[serde(default)]
    always_add_ar_header: bool,
    header_b: Option<bool>,
    #[serde(default)]
    keep_auth_results: bool,
    /// OpenDKIM's StrictHeaders.
    #[serde(default)]
    strict_headers: bool,
    /// OpenDKIM's WeakSyntaxChecks: verify even without a usable From.
    #[serde(default)]
    weak_syntax_checks: bool,
    #[serde(default)]
    remove_ar_all: bool,
    remove_ar_from: Option<Spanned<Entries>>,
    maximum_signatures: Option<Spanned<i64>>,
    dns_timeout_seconds: Option<Spanned<i64>>,
    clock_drift_seconds: Option<Spanned<i64>>,
    nameservers: Option<Spanned<Vec<String>>>,
    trust_anchor_file: Option<Spanned<String>>,
    unprotected_key: Option<Spanned<String>>,
    bogus_key: Option<Spanned<String>>,
    test_public_keys: Option<Spanned<String>>,
    test_dns_data: Option<Spanned<Entries>>,
    on_bad_signature: Option<Spanned<String>>,
    on_no_signature: Option<Spanned<String>>,
    on_dns_error: Option<Spanned<String>>,
    on_key_not_found: Option<Spanned<String>>,
    on_security: Option<Spanned<String>>,
}

impl TomlFile {
    /// `mode`: `s`, `v` or `sv` (the default, as OpenDKIM's).
    pub(super) fn mode(&mut self, value: Option<Spanned<String>>) -> Mode {
        let Some(value) = value else {
            return Mode {
                sign: true,
                verify: true,
            };
        };
        let mode = Mode {
            sign: value.get_ref().contains('s'),
            verify: value.get_ref().contains('v'),
        };
        if value.get_ref().is_empty() || value.get_ref().chars().any(|c| c != 's' && c != 'v') {
            let at = self.at(&value);
            self.invalid(
                at,
                "mode",
                value.into_inner(),
                "s (sign), v (verify) or sv (both)",
            );
        }
        mode
    }

    /// The verification policy, when `mode` has `v`.
    pub(super) fn verification(
        &mut self,
        mode: Mode,
        minimum_key_bits: u32,
        section: VerifySection,
    ) -> Option<Arc<VerificationPolicy>> {
        if !mode.verify {
            return None;
        }
        let defaults = VerifyActions::default();
        let action =
            |this: &mut TomlFile, name: &str, value: Option<Spanned<String>>, default: Action| {
                let Some(value) = value else {
                    return default;
                };
                parse_action(value.get_ref()).unwrap_or_else(|| {
                    let at = this.at(&value);
                    this.invalid(
                        at,
                        name,
                        value.into_inner(),
                        "use accept, discard, quarantine, reject or tempfail",
                    );
                    default
                })
            };
        let actions = VerifyActions {
            bad_signature: action(
                self,
                "on_bad_signature",
                section.on_bad_signature,
                defaults.bad_signature,
            ),
            no_signature: action(
                self,
                "on_no_signature",
                section.on_no_signature,
                defaults.no_signature,
            ),
            dns_error: action(
                self,
                "on_dns_error",
                section.on_dns_error,
                defaults.dns_error,
            ),
            key_not_found: action(
                self,
                "on_key_not_found",
                section.on_key_not_found,
                defaults.key_not_found,
            ),
            security: section
                .on_security
                .map(|v| action(self, "on_security", Some(v), Action::Reject)),
        };
        let located = |this: &TomlFile, value: Option<Spanned<String>>| {
            value.map(|v| {
                let at = this.at(&v);
                (v.into_inner(), at)
            })
        };
        let number = |this: &TomlFile, value: Option<Spanned<i64>>| {
            value.map(|v| {
                let at = this.at(&v);
                (v.into_inner(), at)
            })
        };
        let file = |this: &TomlFile, value: Option<Spanned<String>>| {
            value.map(|v| {
                let at = this.at(&v);
                (this.path(v.get_ref()), at)
            })
        };
        let remove_from = section.remove_ar_from.and_then(|value| {
            self.source("remove_ar_from", value, |f, value| {
                f.entries("remove_ar_from", value)
                    .map(|set| set.entries.iter().map(|e| e.key.clone()).collect())
            })
        });
        let test_dns_data = section
            .test_dns_data
            .and_then(|e| self.entries("test_dns_data", e))
            .map(|set| {
                set.entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                    .collect()
            });
        let raw = Raw {
            file: Some(self.file.clone()),
            authserv_id: located(self, section.authserv_id),
            with_job_id: section.authserv_id_with_job_id,
            always_add: section.always_add_ar_header,
            no_header_b: !section.header_b.unwrap_or(true),
            keep_auth_results: section.keep_auth_results,
            strict_headers: section.strict_headers,
            weak_syntax_checks: section.weak_syntax_checks,
            remove_all: section.remove_ar_all,
            remove_from,
            max_signatures: number(self, section.maximum_signatures),
            minimum_key_bits,
            dns_timeout: number(self, section.dns_timeout_seconds),
            clock_drift: number(self, section.clock_drift_seconds),
            nameservers: section.nameservers.map(|v| {
                let at = self.at(&v);
                (v.into_inner(), at)
            }),
            trust_anchor_file: file(self, section.trust_anchor_file),
            unprotected_key: located(self, section.unprotected_key),
            bogus_key: located(self, section.bogus_key),
            test_public_keys: file(self, section.test_public_keys),
            test_dns_data,
            actions,
        };
        verification::build(raw, &mut self.errors)
    }
}
