//! `opendkim.conf`'s verification options (a child of `opendkim.rs`, so it
//! reads the settings with the same helpers), into [`verification::Raw`].
//!
//! On-* values that are not actions are reported by `error_actions` for
//! every Mode; here an invalid one falls back to its default quietly, so it
//! is reported once. Relative file names are relative to BaseDirectory, as
//! everywhere in `opendkim.conf`. This module never logs.

use std::sync::Arc;

use super::super::data_sets;
use super::super::verification::{self, Raw};
use super::{ConfFile, parse_action};
use crate::policy::{Action, Mode};
use crate::verifying::{VerificationPolicy, VerifyActions};

impl ConfFile {
    /// The verification policy, when Mode has `v`.
    pub(super) fn verification(
        &mut self,
        mode: Mode,
        minimum_key_bits: u32,
    ) -> Option<Arc<VerificationPolicy>> {
        if !mode.verify {
            return None;
        }
        let quiet =
            |this: &ConfFile, name: &str| this.string(name).and_then(|(v, _)| parse_action(&v));
        let default = quiet(self, "On-Default");
        let action = |this: &ConfFile, name: &str, fallback: Action| {
            quiet(this, name).or(default).unwrap_or(fallback)
        };
        let defaults = VerifyActions::default();
        let actions = VerifyActions {
            bad_signature: action(self, "On-BadSignature", defaults.bad_signature),
            no_signature: action(self, "On-NoSignature", defaults.no_signature),
            dns_error: action(self, "On-DNSError", defaults.dns_error),
            key_not_found: action(self, "On-KeyNotFound", defaults.key_not_found),
            security: quiet(self, "On-Security").or(default),
        };
        let file = |this: &ConfFile, name: &str| {
            this.string(name)
                .map(|(p, at)| (data_sets::resolve(&this.base, p), at))
        };
        let raw = Raw {
            file: Some(self.file.clone()),
            authserv_id: self.string("AuthservID"),
            with_job_id: self.boolean("AuthservIDWithJobID").unwrap_or(false),
            always_add: self.boolean("AlwaysAddARHeader").unwrap_or(false),
            no_header_b: self.boolean("NoHeaderB").unwrap_or(false),
            keep_auth_results: self.boolean("KeepAuthResults").unwrap_or(false),
            strict_headers: self.boolean("StrictHeaders").unwrap_or(false),
            weak_syntax_checks: self.boolean("WeakSyntaxChecks").unwrap_or(false),
            remove_all: self.boolean("RemoveARAll").unwrap_or(false),
            remove_from: self.source("RemoveARFrom", |f| {
                f.data_set("RemoveARFrom").map(|set| data_sets::keys(&set))
            }),
            max_signatures: self.integer("MaximumSignaturesToVerify"),
            minimum_key_bits,
            dns_timeout: self.integer("DNSTimeout"),
            clock_drift: self.integer("ClockDrift"),
            nameservers: self.string("Nameservers").map(|(list, at)| {
                let entries = list
                    .split(',')
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.is_empty())
                    .collect();
                (entries, at)
            }),
            trust_anchor_file: file(self, "TrustAnchorFile"),
            unprotected_key: self.string("UnprotectedKey"),
            bogus_key: self.string("BogusKey"),
            test_public_keys: file(self, "TestPublicKeys"),
            test_dns_data: self.data_set("TestDNSData").map(|set| {
                set.entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                    .collect()
            }),
            actions,
        };
        verification::build(raw, &mut self.errors)
    }
}
