//! The SigningTable: which key(s) sign mail from a given sender.
//!
//! Rules, from OpenDKIM's `dkimf_apply_signtable` and confirmed against
//! opendkim 2.11.0~beta2 with miltertest:
//! - the value is `keyname[:signer]`; a keyname of exactly `%` means "the
//!   KeyTable entry named after the sender's domain"; every `%` in the
//!   signer (which becomes `i=`) is replaced by the sender's domain;
//! - the sender's domain is lowercased first; all comparisons are ASCII
//!   case-insensitive (the table is opened with `DKIMF_DB_FLAG_ICASE`);
//! - `refile:`: every pattern is tried against `user@domain` in file order;
//! - other tables are probed with exact keys, in this order:
//!   `user@domain`, `domain`, then for each `.` in the domain
//!   `user@.suffix` and `.suffix` (longest suffix first), then `user@*`,
//!   then `*`; with duplicate keys the first line wins; a probe containing
//!   a non-ASCII byte never matches (`DKIMF_DB_FLAG_ASCIIONLY`);
//! - the first match signs; with MultipleSignatures every match signs, in
//!   the order found. OpenDKIM 2.11 loses all but the first and the last
//!   of three or more matches (`dkimf_add_signrequest` never advances its
//!   list tail); we return them all;
//! - `SubDomains` plays no part: OpenDKIM only applies it to `Domain`,
//!   which it ignores when a KeyTable is configured.
//!
//! Lookups on a `refile:` table go through [`PatternIndex`], so a table of
//! 100,000 patterns costs microseconds per message.
//!
//! Native configurations build the same type from inline rules
//! ([`SigningTable::from_rules`]): each rule is a pattern with one or more
//! keys, and its entries share a rule group. A lookup that picks a rule
//! picks the whole group, so a rule with an RSA and an Ed25519 key
//! dual-signs. In a table read from an OpenDKIM file every line is its own
//! group, so nothing changes there.

use std::collections::HashMap;

use crate::diagnostics::{Location, Warning};

use super::TableError;
use super::dataset::{DataSet, DataSetKind};
use super::keytable::KeyTable;
use super::pattern::Pattern;
use super::pattern_index::PatternIndex;
use super::suffixes::dotted_suffixes;

/// One SigningTable line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningEntry {
    /// The key (exact tables) or pattern (`refile:`), as written.
    pub pattern: String,
    /// The KeyTable name, as written (`%` = the sender's domain).
    pub key_name: String,
    /// The signer (`i=`), as written (`%` = the sender's domain).
    pub signer: Option<String>,
    pub at: Location,
    /// Entries of one native rule share a group (consecutive entries); in a
    /// table read from a file every line is its own group.
    pub group: u32,
}

/// One native signing rule: a `refile:`-style pattern matched against
/// `user@domain`, and the keys that sign what it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningRule {
    pub pattern: String,
    /// KeyTable names with an optional signer (`i=`, `%` = the domain).
    pub keys: Vec<(String, Option<String>)>,
    pub at: Location,
}

/// A SigningTable entry that matched a sender, with `%` resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningMatch<'a> {
    /// The KeyTable name to sign with.
    pub key_name: String,
    /// The `i=` to use, if any.
    pub signer: Option<String>,
    pub entry: &'a SigningEntry,
}

/// A loaded SigningTable.
#[derive(Debug, Clone)]
pub struct SigningTable {
    kind: DataSetKind,
    origin: Location,
    entries: Vec<SigningEntry>,
    matcher: Matcher,
    warnings: Vec<Warning>,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// Lowercased key → first entry with that key.
    Exact(HashMap<String, usize>),
    Patterns {
        patterns: Vec<Pattern>,
        index: PatternIndex,
    },
}

impl SigningTable {
    /// Parses the specification `spec` (written at `at`) and loads the table.
    pub fn open(spec: &str, at: &Location) -> Result<SigningTable, TableError> {
        Self::from_data_set(DataSet::open(spec, at)?)
    }

    /// Builds the table from data already read.
    pub fn from_data_set(mut set: DataSet) -> Result<SigningTable, TableError> {
        let mut warnings = set.take_warnings();
        let refile = set.kind == DataSetKind::Refile;
        let mut entries = Vec::with_capacity(set.entries.len());
        for e in set.entries {
            let Some(value) = e.value else {
                return Err(TableError::MissingValue {
                    at: e.at,
                    key: e.key,
                    table: "SigningTable",
                    shape: "pattern keyname[:signer]",
                });
            };
            let (key_name, signer) = match value.split_once(':') {
                Some((k, s)) => (k, (!s.is_empty()).then(|| s.to_string())),
                None => (value.as_str(), None),
            };
            if key_name.is_empty() {
                return Err(TableError::EmptyKeyName {
                    at: e.at,
                    key: e.key,
                });
            }
            if !refile && has_meaningless_star(&e.key) {
                warnings.push(Warning::new(
                    Some(e.at.clone()),
                    format!(
                        "`{}` contains `*`, but this SigningTable is not `refile:`, so the `*` only \
                         matches a literal `*` (OpenDKIM does the same). Use `SigningTable \
                         refile:{}` for wildcards",
                        e.key,
                        set.origin.path.display()
                    ),
                ));
            }
            if refile && Pattern::uses_regex_operators(&e.key) {
                warnings.push(Warning::new(
                    Some(e.at.clone()),
                    format!(
                        "pattern `{}` contains regular-expression operators (one of `?[](){{}}|^$\\`); \
                         OpenDKIM applies them as a POSIX regex and so does dkim-sidecar, which is \
                         rarely what was meant. Only `*` is a wildcard",
                        e.key
                    ),
                ));
            }
            let group = u32::try_from(entries.len()).expect("more than 4 billion entries");
            entries.push(SigningEntry {
                key_name: key_name.to_string(),
                signer,
                pattern: e.key,
                at: e.at,
                group,
            });
        }
        let matcher = if refile {
            Self::pattern_matcher(&entries)?
        } else {
            let mut map = HashMap::with_capacity(entries.len());
            for (i, e) in entries.iter().enumerate() {
                map.entry(e.pattern.to_ascii_lowercase()).or_insert(i);
            }
            Matcher::Exact(map)
        };
        Ok(SigningTable {
            kind: set.kind,
            origin: set.origin,
            entries,
            matcher,
            warnings,
        })
    }

    /// Builds a table from native rules, tried in order like a `refile:`
    /// table. `origin` is where the rules were written.
    pub fn from_rules(
        rules: Vec<SigningRule>,
        origin: Location,
    ) -> Result<SigningTable, TableError> {
        let mut entries = Vec::new();
        let mut warnings = Vec::new();
        for (group, rule) in rules.into_iter().enumerate() {
            let group = u32::try_from(group).expect("more than 4 billion rules");
            if Pattern::uses_regex_operators(&rule.pattern) {
                warnings.push(Warning::new(
                    Some(rule.at.clone()),
                    format!(
                        "pattern `{}` contains regular-expression operators (one of `?[](){{}}|^$\\`), \
                         which keep their regex meaning as in an OpenDKIM refile: table. Only `*` is \
                         a wildcard",
                        rule.pattern
                    ),
                ));
            }
            for (key_name, signer) in rule.keys {
                if key_name.is_empty() {
                    return Err(TableError::EmptyKeyName {
                        at: rule.at,
                        key: rule.pattern,
                    });
                }
                entries.push(SigningEntry {
                    pattern: rule.pattern.clone(),
                    key_name,
                    signer: signer.filter(|s| !s.is_empty()),
                    at: rule.at.clone(),
                    group,
                });
            }
        }
        let matcher = Self::pattern_matcher(&entries)?;
        Ok(SigningTable {
            kind: DataSetKind::Refile,
            origin,
            entries,
            matcher,
            warnings,
        })
    }

    fn pattern_matcher(entries: &[SigningEntry]) -> Result<Matcher, TableError> {
        let mut patterns = Vec::with_capacity(entries.len());
        for e in entries {
            patterns.push(Pattern::compile(&e.pattern, true).map_err(|reason| {
                TableError::Pattern {
                    at: e.at.clone(),
                    pattern: e.pattern.clone(),
                    reason,
                }
            })?);
        }
        let index = PatternIndex::build(&patterns);
        Ok(Matcher::Patterns { patterns, index })
    }

    /// What signs mail from `user@domain` without MultipleSignatures: the
    /// first matching entry, as OpenDKIM picks it, together with the other
    /// entries of its rule group (only native rules have more than one).
    pub fn find_first(&self, user: &str, domain: &str) -> Vec<SigningMatch<'_>> {
        let domain = domain.to_ascii_lowercase();
        let position = match &self.matcher {
            Matcher::Patterns { patterns, index } => {
                index.first_match(patterns, refile_query(user, &domain).as_bytes())
            }
            Matcher::Exact(map) => {
                let mut found = None;
                probe_exact(user, &domain, |key| match map.get(key) {
                    Some(&i) => {
                        found = Some(i);
                        false
                    }
                    None => true,
                });
                found
            }
        };
        let Some(position) = position else {
            return Vec::new();
        };
        let group = self.entries[position].group;
        (position..self.entries.len())
            .take_while(|&i| self.entries[i].group == group)
            .map(|i| self.resolve(i, &domain))
            .collect()
    }

    /// Every entry that signs mail from `user@domain` with
    /// MultipleSignatures, in OpenDKIM's order (file order for `refile:`,
    /// probe order otherwise), none dropped.
    pub fn find_all(&self, user: &str, domain: &str) -> Vec<SigningMatch<'_>> {
        let domain = domain.to_ascii_lowercase();
        let positions = match &self.matcher {
            Matcher::Patterns { patterns, index } => {
                index.all_matches(patterns, refile_query(user, &domain).as_bytes())
            }
            Matcher::Exact(map) => {
                let mut found = Vec::new();
                probe_exact(user, &domain, |key| {
                    found.extend(map.get(key).copied());
                    true
                });
                found
            }
        };
        positions
            .into_iter()
            .map(|i| self.resolve(i, &domain))
            .collect()
    }

    /// Every SigningTable entry whose key name is not in `keys`, as errors
    /// naming the SigningTable line. Entries whose key name is `%` depend
    /// on the sender and cannot be checked here.
    pub fn check_keys(&self, keys: &KeyTable) -> Vec<TableError> {
        self.entries
            .iter()
            .filter(|e| e.key_name != "%" && keys.get(&e.key_name).is_none())
            .map(|e| TableError::UnknownKey {
                at: e.at.clone(),
                key: e.key_name.clone(),
                keytable: format!("({})", keys.origin()),
            })
            .collect()
    }

    pub fn kind(&self) -> DataSetKind {
        self.kind
    }

    /// The file (or configuration line) the table came from.
    pub fn origin(&self) -> &Location {
        &self.origin
    }

    /// All entries in file order.
    pub fn entries(&self) -> &[SigningEntry] {
        &self.entries
    }

    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    fn resolve(&self, position: usize, domain: &str) -> SigningMatch<'_> {
        let entry = &self.entries[position];
        let key_name = if entry.key_name == "%" {
            domain.to_string()
        } else {
            entry.key_name.clone()
        };
        let signer = entry
            .signer
            .as_ref()
            .map(|s| s.replace('%', domain))
            .filter(|s| !s.is_empty());
        SigningMatch {
            key_name,
            signer,
            entry,
        }
    }
}

fn refile_query(user: &str, domain: &str) -> String {
    let mut q = String::with_capacity(user.len() + 1 + domain.len());
    q.push_str(user);
    q.push('@');
    q.push_str(domain);
    q.make_ascii_lowercase();
    q
}

/// The keys an exact SigningTable is probed with for `user@domain`, in
/// OpenDKIM's order, lowercased: what a file table is looked up with.
pub fn exact_probes(user: &str, domain: &str) -> Vec<String> {
    let mut keys = Vec::new();
    probe_exact(user, &domain.to_ascii_lowercase(), |key| {
        keys.push(key.to_string());
        true
    });
    keys
}

/// The keys OpenDKIM sends a SigningTable kept on a server for
/// `user@domain`, in the same order: the domain lowercased, the local part
/// as written (`dkimf_apply_signtable`; OpenDKIM lowercases only the
/// domain, and the server compares with its own rules).
pub fn exact_probes_as_written(user: &str, domain: &str) -> Vec<String> {
    let mut keys = Vec::new();
    probe_keys(user, &domain.to_ascii_lowercase(), |key| {
        keys.push(key.to_string());
        true
    });
    keys
}

/// Calls `probe` with each lowercased key OpenDKIM tries for `user@domain`
/// (non-refile tables), in order, until it returns false. Keys with a
/// non-ASCII byte are skipped: OpenDKIM reports them as not found.
fn probe_exact(user: &str, domain: &str, probe: impl FnMut(&str) -> bool) {
    probe_keys(&user.to_ascii_lowercase(), domain, probe);
}

/// [`probe_exact`] with `user` taken as it is.
fn probe_keys(user: &str, domain: &str, mut probe: impl FnMut(&str) -> bool) {
    let mut key = String::with_capacity(user.len() + domain.len() + 1);
    let mut try_key = |key: &str| key.is_ascii() && !probe(key);
    key.push_str(user);
    key.push('@');
    key.push_str(domain);
    if try_key(&key) || try_key(domain) {
        return;
    }
    for suffix in dotted_suffixes(domain) {
        key.clear();
        key.push_str(user);
        key.push('@');
        key.push_str(suffix);
        if try_key(&key) || try_key(suffix) {
            return;
        }
    }
    key.clear();
    key.push_str(user);
    key.push_str("@*");
    if try_key(&key) {
        return;
    }
    try_key("*");
}

/// In an exact table, `*` and `user@*` are meaningful keys (OpenDKIM
/// probes them literally); any other `*` can only match itself.
fn has_meaningless_star(key: &str) -> bool {
    if key == "*" {
        return false;
    }
    match key.strip_suffix("@*") {
        Some(user) => user.contains('*'),
        None => key.contains('*'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(kind: DataSetKind, text: &str) -> SigningTable {
        try_table(kind, text).unwrap()
    }

    fn try_table(kind: DataSetKind, text: &str) -> Result<SigningTable, TableError> {
        let set = DataSet::parse_file_bytes(kind, text.as_bytes(), Location::file("/etc/st"))?;
        SigningTable::from_data_set(set)
    }

    fn first_key(t: &SigningTable, user: &str, domain: &str) -> Option<String> {
        let first = t.find_first(user, domain);
        assert!(first.len() <= 1, "a file entry is its own rule group");
        first.into_iter().next().map(|m| m.key_name)
    }

    fn all_keys(t: &SigningTable, user: &str, domain: &str) -> Vec<String> {
        t.find_all(user, domain)
            .into_iter()
            .map(|m| m.key_name)
            .collect()
    }

    /// The table used against opendkim in the compatibility check (see
    /// tests/fixtures/tables/): results below are what opendkim did.
    const EXACT: &str = "\
*@example.com k1
User@Mail.Example.COM k2:%@sig
mail.example.com k3
user@.example.com k4
.example.com k5
user@* k6
other@mail.example.com kdup
other@mail.example.com k7
* k7
pct@example.org %
p@example.net kp:x@%
";

    #[test]
    fn exact_probes_follow_opendkims_order() {
        assert_eq!(
            exact_probes("Bob", "Mail.Example.com"),
            [
                "bob@mail.example.com",
                "mail.example.com",
                "bob@.example.com",
                ".example.com",
                "bob@.com",
                ".com",
                "bob@*",
                "*"
            ]
        );
    }

    #[test]
    fn server_probes_keep_the_local_part_as_written() {
        assert_eq!(
            exact_probes_as_written("Bob", "Mail.Example.com"),
            [
                "Bob@mail.example.com",
                "mail.example.com",
                "Bob@.example.com",
                ".example.com",
                "Bob@.com",
                ".com",
                "Bob@*",
                "*"
            ]
        );
    }

    #[test]
    fn exact_table_probes_in_opendkim_order() {
        let t = table(DataSetKind::File, EXACT);
        assert_eq!(
            first_key(&t, "user", "mail.example.com").as_deref(),
            Some("k2")
        );
        assert_eq!(
            first_key(&t, "bob", "mail.example.com").as_deref(),
            Some("k3")
        );
        assert_eq!(
            first_key(&t, "user", "sub.example.com").as_deref(),
            Some("k4")
        );
        assert_eq!(
            first_key(&t, "bob", "sub.example.com").as_deref(),
            Some("k5")
        );
        assert_eq!(first_key(&t, "user", "other.net").as_deref(), Some("k6"));
        assert_eq!(first_key(&t, "bob", "example.com").as_deref(), Some("k7"));
    }

    #[test]
    fn exact_table_matches_case_insensitively() {
        let t = table(DataSetKind::File, EXACT);
        assert_eq!(
            first_key(&t, "USER", "MAIL.EXAMPLE.COM").as_deref(),
            Some("k2")
        );
    }

    #[test]
    fn star_in_exact_table_only_matches_literally_and_is_warned() {
        let t = table(DataSetKind::File, EXACT);
        // `*@example.com k1` never applies; `*` (k7) does.
        assert_eq!(first_key(&t, "bob", "example.com").as_deref(), Some("k7"));
        assert_eq!(first_key(&t, "*", "example.com").as_deref(), Some("k1"));
        let w: Vec<String> = t.warnings().iter().map(ToString::to_string).collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("/etc/st:1: "), "{}", w[0]);
        assert!(w[0].contains("refile:"), "{}", w[0]);
    }

    #[test]
    fn duplicate_exact_key_first_line_wins() {
        let t = table(DataSetKind::File, EXACT);
        assert_eq!(
            first_key(&t, "other", "mail.example.com").as_deref(),
            Some("kdup")
        );
    }

    #[test]
    fn percent_keyname_is_the_sender_domain() {
        let t = table(DataSetKind::File, EXACT);
        assert_eq!(
            first_key(&t, "pct", "Example.ORG").as_deref(),
            Some("example.org")
        );
    }

    #[test]
    fn percent_in_signer_is_the_lowercased_domain() {
        let t = table(DataSetKind::File, EXACT);
        let m = t.find_first("p", "EXAMPLE.net").remove(0);
        assert_eq!(m.key_name, "kp");
        assert_eq!(m.signer.as_deref(), Some("x@example.net"));
        assert_eq!(m.entry.at.to_string(), "/etc/st:11");
    }

    #[test]
    fn multiple_signatures_return_every_match_in_probe_order() {
        // OpenDKIM 2.11 signs only with k2 and k7 here (it drops the middle
        // ones); we return all of them.
        let t = table(DataSetKind::File, EXACT);
        assert_eq!(
            all_keys(&t, "user", "mail.example.com"),
            ["k2", "k3", "k4", "k5", "k6", "k7"]
        );
        assert_eq!(all_keys(&t, "bob", "example.com"), ["k7"]);
        assert!(all_keys(&t, "bob", "nowhere").iter().all(|k| k == "k7"));
    }

    #[test]
    fn non_ascii_probe_never_matches_in_exact_tables() {
        let t = table(DataSetKind::File, "josé@example.com k1\nexample.com k2\n");
        assert_eq!(first_key(&t, "josé", "example.com").as_deref(), Some("k2"));
    }

    #[test]
    fn refile_first_match_in_file_order_wins() {
        let t = table(
            DataSetKind::Refile,
            "*@example.com k1\na*@example.com k2\nab*@example.com k3\nabc@example.com k4\n",
        );
        assert_eq!(first_key(&t, "abc", "example.com").as_deref(), Some("k1"));
        let t = table(
            DataSetKind::Refile,
            "abc@example.com k4\nab*@example.com k3\n*@example.com k1\n",
        );
        assert_eq!(first_key(&t, "abc", "example.com").as_deref(), Some("k4"));
        assert_eq!(first_key(&t, "abd", "example.com").as_deref(), Some("k3"));
        assert_eq!(first_key(&t, "x", "example.com").as_deref(), Some("k1"));
        assert_eq!(first_key(&t, "x", "example.org"), None);
    }

    #[test]
    fn refile_multiple_signatures_return_all_matches_in_file_order() {
        // Against opendkim this signs with k4 and k1 only (middle matches
        // dropped); we keep all four.
        let t = table(
            DataSetKind::Refile,
            "*@example.com k1\na*@example.com k2\nab*@example.com k3\nabc@example.com k4\n",
        );
        assert_eq!(all_keys(&t, "abc", "example.com"), ["k1", "k2", "k3", "k4"]);
        assert_eq!(all_keys(&t, "ab", "example.com"), ["k1", "k2", "k3"]);
    }

    #[test]
    fn refile_subdomain_pattern_does_not_match_the_parent() {
        let t = table(DataSetKind::Refile, "*@*.example.com k6\n");
        assert_eq!(first_key(&t, "u", "a.b.example.com").as_deref(), Some("k6"));
        assert_eq!(first_key(&t, "u", "example.com"), None);
    }

    #[test]
    fn refile_regex_operators_match_like_opendkim_and_are_warned() {
        let t = table(DataSetKind::Refile, "q?x@example.com k2\n");
        assert_eq!(first_key(&t, "x", "example.com").as_deref(), Some("k2"));
        assert_eq!(first_key(&t, "q?x", "example.com"), None);
        assert_eq!(t.warnings().len(), 1);
    }

    #[test]
    fn refile_broken_regex_is_an_error_with_location() {
        let err = try_table(DataSetKind::Refile, "ok@x k1\n(a@x k1\n").unwrap_err();
        assert!(err.to_string().starts_with("/etc/st:2: "), "{err}");
    }

    #[test]
    fn empty_signer_is_no_signer() {
        let t = table(DataSetKind::File, "a@b k1:\n");
        assert_eq!(t.find_first("a", "b")[0].signer, None);
    }

    #[test]
    fn entry_without_keyname_is_an_error() {
        let err = try_table(DataSetKind::Refile, "*@example.com\n").unwrap_err();
        assert!(matches!(err, TableError::MissingValue { .. }));
        assert!(err.to_string().starts_with("/etc/st:1: "), "{err}");
        let err = try_table(DataSetKind::File, "a@b :x@b\n").unwrap_err();
        assert!(matches!(err, TableError::EmptyKeyName { .. }), "{err}");
    }

    #[test]
    fn unknown_keyname_is_reported_with_signingtable_line() {
        let kt = KeyTable::from_data_set(
            DataSet::parse_file_bytes(
                DataSetKind::File,
                b"k1 example.com:s:/k\n",
                Location::file("/etc/kt"),
            )
            .unwrap(),
        )
        .unwrap();
        let t = table(
            DataSetKind::Refile,
            "*@example.com k1\n*@example.org K1\n*@x %\n",
        );
        let errors = t.check_keys(&kt);
        assert_eq!(errors.len(), 1);
        let text = errors[0].to_string();
        assert!(text.starts_with("/etc/st:2: "), "{text}");
        assert!(text.contains("`K1`") && text.contains("/etc/kt"), "{text}");
    }

    #[test]
    fn csl_signing_table_uses_exact_lookups() {
        let set = DataSet::from_csl(
            "example.com=k1:%@x",
            &Location::new("/etc/opendkim.conf", 3),
        );
        let t = SigningTable::from_data_set(set).unwrap();
        let m = t.find_first("u", "example.com").remove(0);
        assert_eq!(
            (m.key_name.as_str(), m.signer.as_deref()),
            ("k1", Some("example.com@x"))
        );
    }

    fn rule(pattern: &str, keys: &[&str], line: u32) -> SigningRule {
        SigningRule {
            pattern: pattern.to_string(),
            keys: keys.iter().map(|k| (k.to_string(), None)).collect(),
            at: Location::new("/c.toml", line),
        }
    }

    fn rules_table() -> SigningTable {
        SigningTable::from_rules(
            vec![
                rule("ceo@example.com", &["ceo-rsa"], 10),
                rule("*@example.com", &["rsa", "ed25519"], 14),
                rule("*@*.example.com", &["sub"], 18),
                rule("*", &["fallback"], 22),
            ],
            Location::file("/c.toml"),
        )
        .unwrap()
    }

    #[test]
    fn first_matching_rule_signs_with_all_of_its_keys() {
        let t = rules_table();
        let keys: Vec<String> = t
            .find_first("Bob", "Example.COM")
            .into_iter()
            .map(|m| m.key_name)
            .collect();
        assert_eq!(keys, ["rsa", "ed25519"]);
        let first = t.find_first("ceo", "example.com");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].key_name, "ceo-rsa");
        assert_eq!(first[0].entry.at.to_string(), "/c.toml:10");
        assert_eq!(
            first_key(&t, "x", "mail.example.com").as_deref(),
            Some("sub")
        );
    }

    #[test]
    fn rules_with_multiple_signatures_sign_with_every_matching_rule_in_order() {
        let t = rules_table();
        assert_eq!(
            all_keys(&t, "ceo", "example.com"),
            ["ceo-rsa", "rsa", "ed25519", "fallback"]
        );
        assert_eq!(all_keys(&t, "x", "example.org"), ["fallback"]);
    }

    #[test]
    fn rule_without_a_match_signs_nothing() {
        let t = SigningTable::from_rules(
            vec![rule("*@example.com", &["rsa"], 3)],
            Location::file("/c.toml"),
        )
        .unwrap();
        assert!(t.find_first("a", "example.org").is_empty());
        assert!(t.find_all("a", "example.org").is_empty());
    }

    #[test]
    fn rule_keys_are_checked_against_the_key_table() {
        let kt = KeyTable::from_data_set(
            DataSet::parse_file_bytes(
                DataSetKind::File,
                b"rsa example.com:s:/k\n",
                Location::file("/kt"),
            )
            .unwrap(),
        )
        .unwrap();
        let t = SigningTable::from_rules(
            vec![rule("*@example.com", &["rsa", "missing"], 7)],
            Location::file("/c.toml"),
        )
        .unwrap();
        let errors = t.check_keys(&kt);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().starts_with("/c.toml:7: "),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn broken_rule_pattern_is_an_error_naming_the_rule() {
        let err = SigningTable::from_rules(
            vec![rule("(x@example.com", &["k"], 5)],
            Location::file("/c.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("/c.toml:5: "), "{err}");
    }
}
