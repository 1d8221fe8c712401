//! OpenDKIM's ReplaceRules: text replacements applied to header field
//! values before a message is signed, so that a signature survives what a
//! later MTA hop is known to rewrite (Postfix's `masquerade_domains`
//! turning `user@host.example.com` into `user@example.com`).
//!
//! The file is OpenDKIM's (`dkimf_load_replist`): one rule per line, a
//! POSIX basic regular expression, a tab (the last tab on the line), the
//! literal replacement; `#` starts a comment anywhere; blank lines are
//! skipped. OpenDKIM keeps the rules in a list it prepends to, so the last
//! line of the file is applied first, and so are they here. Each rule
//! replaces its first match and searches again from the start, as
//! OpenDKIM's loop does; OpenDKIM never stops when a replacement matches
//! its own pattern, we stop after [`MAX_REPLACEMENTS`].
//!
//! No crate compiles POSIX basic regular expressions, so [`translate`]
//! rewrites one into the `regex` crate's syntax (the same engine the
//! `refile:` tables use): `\(` `\)` `\{` `\}` become groups and counts,
//! `+ ? | ( ) { }` become literals, GNU's `\+ \? \|` keep their meaning,
//! `*` first in an expression is literal. Back-references have no
//! equivalent and are refused at load. Matching is leftmost-first where
//! POSIX says leftmost-longest; for the literal texts and simple classes
//! rules are written with, the two agree.
//!
//! Replacements change only the copy of the header block that is signed
//! (and that the signing decision reads); the message the MTA delivers and
//! the fields verification reads are never touched.
//!
//! ReplaceHeaders kept on a server (`dsn:`, `ldap:`) is asked per message,
//! as OpenDKIM asks it per field (`dkimf_db_get` in `mlfi_header`): only
//! for the fields the rules would rewrite, each field's name as written
//! (OpenDKIM's key) and lower-cased (what a file matches), all in one
//! batch through the set's cache ([`ReplaceLookup`]); the rules then
//! rewrite the fields the set lists ([`ReplaceRules::apply_listed`]).

use std::path::Path;
use std::sync::Arc;

use regex::bytes::{Regex, RegexBuilder};

use crate::diagnostics::Location;
use crate::dkim::{HeaderBlock, HeaderField};
use crate::remote::RemoteSet;
use crate::tables::KeySet;

use super::listed::{DataSetProblem, Query};
use super::{Decision, NotSigned, Policy, TableSource};

/// Replacements made at most per rule and header field.
pub const MAX_REPLACEMENTS: usize = 64;

/// One line of the rules file.
#[derive(Debug)]
struct Rule {
    pattern: Regex,
    replacement: Vec<u8>,
}

/// The rules, and the header fields they apply to.
#[derive(Debug)]
pub struct ReplaceRules {
    /// In the order they are applied (the file's last line first).
    rules: Vec<Rule>,
    /// OpenDKIM's ReplaceHeaders: the field names the rules apply to;
    /// `None` means every field.
    fields: Option<TableSource<KeySet>>,
}

/// The question to ReplaceHeaders kept on a server for one message: which
/// of the fields the rules would rewrite it lists.
#[derive(Debug, Clone)]
pub struct ReplaceLookup {
    query: Query,
    /// The names (as written) the rules would rewrite, one per walk.
    names: Vec<String>,
}

impl ReplaceLookup {
    /// The names (as written in the message) the set lists.
    pub async fn ask(self) -> Result<Vec<String>, DataSetProblem> {
        let listed = self.query.ask_each().await?;
        Ok(self
            .names
            .into_iter()
            .zip(listed)
            .filter(|(_, listed)| *listed)
            .map(|(name, _)| name)
            .collect())
    }
}

/// What is wrong with a rules file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub at: Location,
    pub problem: String,
}

impl ReplaceRules {
    /// Reads the rules file at `path`.
    pub fn load(
        path: &Path,
        fields: Option<TableSource<KeySet>>,
    ) -> Result<ReplaceRules, RuleError> {
        let text = std::fs::read(path).map_err(|e| RuleError {
            at: Location::file(path),
            problem: format!(
                "cannot read the ReplaceRules file: {e}; check the path and its permissions"
            ),
        })?;
        ReplaceRules::parse(&text, path, fields)
    }

    /// Parses the text of a rules file read from `path`.
    pub fn parse(
        text: &[u8],
        path: &Path,
        fields: Option<TableSource<KeySet>>,
    ) -> Result<ReplaceRules, RuleError> {
        let mut rules = Vec::new();
        for (number, line) in text.split(|&b| b == b'\n').enumerate() {
            let at = || Location::new(path, u32::try_from(number + 1).unwrap_or(u32::MAX));
            let line = line.split(|&b| b == b'#').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Some(tab) = line.iter().rposition(|&b| b == b'\t') else {
                return Err(RuleError {
                    at: at(),
                    problem: "a rule is a regular expression, a tab, and the replacement text; \
                              this line has no tab"
                        .into(),
                });
            };
            let Ok(expression) = std::str::from_utf8(&line[..tab]) else {
                return Err(RuleError {
                    at: at(),
                    problem: "the regular expression is not valid UTF-8".into(),
                });
            };
            let pattern = translate(expression)
                .and_then(|translated| {
                    RegexBuilder::new(&translated)
                        .unicode(false)
                        .build()
                        .map_err(|e| e.to_string())
                })
                .map_err(|why| RuleError {
                    at: at(),
                    problem: format!("`{expression}` is not a usable regular expression: {why}"),
                })?;
            rules.push(Rule {
                pattern,
                replacement: line[tab + 1..].to_vec(),
            });
        }
        rules.reverse();
        Ok(ReplaceRules { rules, fields })
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// ReplaceHeaders, when it is written.
    pub fn fields(&self) -> Option<&TableSource<KeySet>> {
        self.fields.as_ref()
    }

    /// ReplaceHeaders when it is kept on a server.
    pub fn fields_on_server(&self) -> Option<&Arc<RemoteSet>> {
        match &self.fields {
            Some(TableSource::Remote(set)) => Some(set),
            _ => None,
        }
    }

    /// The header block with the rules applied, or `None` when no rule
    /// changed anything. With ReplaceHeaders on a server, whose answer is
    /// not known here, no field is rewritten: see
    /// [`ReplaceRules::apply_listed`].
    pub fn apply(&self, headers: &HeaderBlock) -> Option<HeaderBlock> {
        self.apply_where(headers, |name| match &self.fields {
            None => true,
            Some(TableSource::Local(names)) => names.contains(&String::from_utf8_lossy(name)),
            Some(TableSource::Remote(_)) => false,
        })
    }

    /// With ReplaceHeaders on a server: the rules applied to the fields
    /// whose names (as written) the set listed.
    pub fn apply_listed(&self, headers: &HeaderBlock, listed: &[String]) -> Option<HeaderBlock> {
        self.apply_where(headers, |name| listed.iter().any(|l| l.as_bytes() == name))
    }

    /// The rules applied to every field, as if ReplaceHeaders listed them
    /// all.
    pub fn apply_every(&self, headers: &HeaderBlock) -> Option<HeaderBlock> {
        self.apply_where(headers, |_| true)
    }

    /// The names (as written, each once) of the fields the rules would
    /// rewrite if ReplaceHeaders listed them.
    pub fn rewritable(&self, headers: &HeaderBlock) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for field in headers.fields() {
            let name = String::from_utf8_lossy(&field.name).into_owned();
            if !names.contains(&name) && self.replaced(&field.value).is_some() {
                names.push(name);
            }
        }
        names
    }

    /// The question for ReplaceHeaders kept on a server: for each field
    /// name the rules would rewrite, the name as written, then
    /// lower-cased. `None` when the set is not on a server or no field
    /// would be rewritten.
    pub fn lookup(&self, headers: &HeaderBlock) -> Option<ReplaceLookup> {
        let set = self.fields_on_server()?;
        let names = self.rewritable(headers);
        if names.is_empty() {
            return None;
        }
        let walks = names
            .iter()
            .map(|name| {
                let lower = name.to_ascii_lowercase();
                if lower == *name {
                    vec![lower]
                } else {
                    vec![name.clone(), lower]
                }
            })
            .collect();
        Some(ReplaceLookup {
            query: Query::each(set, walks),
            names,
        })
    }

    fn apply_where(
        &self,
        headers: &HeaderBlock,
        applies: impl Fn(&[u8]) -> bool,
    ) -> Option<HeaderBlock> {
        let mut changed = false;
        let mut out = HeaderBlock::new();
        for field in headers.fields() {
            let applies = applies(&field.name);
            match applies.then(|| self.replaced(&field.value)).flatten() {
                Some(value) => {
                    changed = true;
                    out.push(HeaderField::new(field.name.clone(), value));
                }
                None => out.push(field.clone()),
            }
        }
        changed.then_some(out)
    }

    /// `value` after every rule, or `None` when none matched.
    fn replaced(&self, value: &[u8]) -> Option<Vec<u8>> {
        let mut current: Option<Vec<u8>> = None;
        for rule in &self.rules {
            for _ in 0..MAX_REPLACEMENTS {
                let text = current.as_deref().unwrap_or(value);
                let Some(found) = rule.pattern.find(text) else {
                    break;
                };
                let mut next = Vec::with_capacity(text.len() + rule.replacement.len());
                next.extend_from_slice(&text[..found.start()]);
                next.extend_from_slice(&rule.replacement);
                next.extend_from_slice(&text[found.end()..]);
                current = Some(next);
            }
        }
        current
    }
}

impl Policy {
    /// The question to ReplaceHeaders kept on a server for a message, when
    /// its answer may matter: signing is on, the rules would rewrite some
    /// field if listed, and a key may sign for the sender read from the
    /// fields as received or as rewritten. `None` otherwise: nothing
    /// depends on the answer, and no server is asked.
    pub fn replace_lookup(&self, received: &HeaderBlock) -> Option<ReplaceLookup> {
        if !self.mode.sign {
            return None;
        }
        let rules = self.signature.replace_rules.as_ref()?;
        let lookup = rules.lookup(received)?;
        let may_sign = |headers: &HeaderBlock| {
            self.sender(headers)
                .is_ok_and(|sender| self.may_sign_for(&sender))
        };
        let rewritten = rules.apply_every(received);
        (may_sign(received) || rewritten.as_ref().is_some_and(may_sign)).then_some(lookup)
    }

    /// The decision for a message whose ReplaceHeaders answer could not be
    /// had (`problem`), taken on the fields as received. It stands only
    /// when no answer could change it: a message not signed whatever the
    /// rules rewrite (the sender the rewritten fields name is the same, or
    /// no key may sign for it, or the reason is not the sender's: a peer,
    /// an untrusted client, an excluded recipient). Any other message,
    /// signed or not, gets [`Decision::DataSetUnavailable`]: its signature
    /// (or whether it is signed) depends on the answer.
    pub fn without_replace_answer(
        &self,
        decision: Decision,
        received: &HeaderBlock,
        problem: DataSetProblem,
    ) -> Decision {
        let Some(rules) = self.signature.replace_rules.as_ref() else {
            return decision;
        };
        let sender = self.sender(received);
        let stands = match &decision {
            Decision::DataSetUnavailable { .. } => true,
            Decision::NotSigned(reason) => {
                let other = rules.apply_every(received).map(|h| self.sender(&h));
                matches!(
                    reason,
                    NotSigned::SigningDisabled
                        | NotSigned::Peer { .. }
                        | NotSigned::UntrustedOrigin { .. }
                        | NotSigned::RecipientExcluded { .. }
                ) || match other {
                    None => true,
                    Some(other) if other == sender => true,
                    Some(Ok(other)) => !self.may_sign_for(&other),
                    Some(Err(_)) => true,
                }
            }
            Decision::Sign { .. } | Decision::KeyUnavailable { .. } => false,
        };
        if stands {
            return decision;
        }
        Decision::DataSetUnavailable {
            sender: sender.map_or_else(|_| "-".to_string(), |s| s.to_string()),
            error: problem,
        }
    }
}

/// A POSIX basic regular expression (with GNU's `\+ \? \| \< \>`) in the
/// `regex` crate's syntax.
pub fn translate(bre: &str) -> Result<String, String> {
    let chars: Vec<char> = bre.chars().collect();
    let mut out = String::with_capacity(bre.len() + 8);
    // Where `*` is literal and `^` is an anchor: at the start of the
    // expression, of a group, or of an alternative.
    let mut at_start = true;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        let was_start = std::mem::replace(&mut at_start, false);
        match c {
            '\\' => {
                let Some(&e) = chars.get(i) else {
                    return Err("it ends with a lone backslash".into());
                };
                i += 1;
                match e {
                    '(' | '|' => {
                        out.push(e);
                        at_start = true;
                    }
                    ')' | '{' | '}' | '+' | '?' => out.push(e),
                    '<' => out.push_str(r"\b{start}"),
                    '>' => out.push_str(r"\b{end}"),
                    'w' | 'W' | 's' | 'S' | 'b' | 'B' => {
                        out.push('\\');
                        out.push(e);
                    }
                    '1'..='9' => {
                        return Err(format!("back-reference \\{e} is not supported"));
                    }
                    e if e.is_ascii_alphanumeric() => {
                        return Err(format!("unknown escape \\{e}"));
                    }
                    e => out.push_str(&regex::escape(e.encode_utf8(&mut [0; 4]))),
                }
            }
            '*' if was_start => out.push_str(r"\*"),
            '^' if was_start => {
                out.push('^');
                at_start = true;
            }
            '^' => out.push_str(r"\^"),
            '$' => {
                // An anchor at the end of the expression or of a group.
                let ends = i == chars.len() || chars[i..].starts_with(&['\\', ')']);
                out.push_str(if ends { "$" } else { r"\$" });
            }
            '+' | '?' | '|' | '(' | ')' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '[' => i = bracket(&chars, i, &mut out)?,
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Copies a bracket expression starting after its `[` at `i`, where
/// backslash is a literal and `[:class:]` names a class, escaping what the
/// `regex` crate would read as an operator; returns the index after `]`.
fn bracket(chars: &[char], mut i: usize, out: &mut String) -> Result<usize, String> {
    out.push('[');
    if chars.get(i) == Some(&'^') {
        i += 1;
        out.push('^');
    }
    let open = i;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err("a `[` has no matching `]`".into());
        };
        i += 1;
        match c {
            ']' if i - 1 > open => {
                out.push(']');
                return Ok(i);
            }
            '[' if chars.get(i) == Some(&':') => {
                let Some(len) = chars[i..].windows(2).position(|w| w == [':', ']']) else {
                    return Err("a `[:` class has no matching `:]`".into());
                };
                out.push('[');
                out.extend(&chars[i..i + len + 2]);
                i += len + 2;
            }
            '-' => out.push('-'),
            c if c.is_ascii_alphanumeric() => out.push(c),
            c => {
                out.push('\\');
                out.push(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> ReplaceRules {
        ReplaceRules::parse(text.as_bytes(), Path::new("rules"), None).expect("rules parse")
    }

    fn block(fields: &[(&str, &str)]) -> HeaderBlock {
        let mut block = HeaderBlock::new();
        for (name, value) in fields {
            block.push_copy(name.as_bytes(), value.as_bytes());
        }
        block
    }

    fn value<'a>(block: &'a HeaderBlock, name: &str) -> &'a [u8] {
        &block.first(name).expect("field").value
    }

    #[test]
    fn masquerades_the_from_domain_as_opendkims_test_does() {
        let replaced = rules("@host.example.com\t@example.com\n")
            .apply(&block(&[
                ("From", "user@host.example.com"),
                ("Subject", "hi"),
            ]))
            .expect("changed");
        assert_eq!(value(&replaced, "From"), b"user@example.com");
        assert_eq!(value(&replaced, "Subject"), b"hi");
    }

    #[test]
    fn nothing_matching_changes_nothing() {
        assert!(
            rules("@host.example.com\t@example.com")
                .apply(&block(&[("From", "user@example.org")]))
                .is_none()
        );
    }

    #[test]
    fn the_last_line_is_applied_first() {
        // OpenDKIM prepends each rule to its list.
        let replaced = rules("b\tc\na\tb\n")
            .apply(&block(&[("Subject", "a")]))
            .expect("changed");
        assert_eq!(value(&replaced, "Subject"), b"c");
        let replaced = rules("a\tb\nb\tc\n")
            .apply(&block(&[("Subject", "a")]))
            .expect("changed");
        assert_eq!(value(&replaced, "Subject"), b"b");
    }

    #[test]
    fn every_match_is_replaced_and_a_self_matching_rule_stops() {
        let replaced = rules("x\ty")
            .apply(&block(&[("To", "x, x, x")]))
            .expect("changed");
        assert_eq!(value(&replaced, "To"), b"y, y, y");
        let replaced = rules("a\taa")
            .apply(&block(&[("To", "a")]))
            .expect("changed");
        assert_eq!(value(&replaced, "To").len(), MAX_REPLACEMENTS + 1);
    }

    #[test]
    fn replace_headers_limits_the_fields() {
        let set = crate::tables::DataSet::parse_file_bytes(
            crate::tables::DataSetKind::File,
            b"from\n",
            Location::file("set"),
        )
        .expect("data set");
        let only_from = KeySet::from_data_set(&set).expect("key set");
        let rules = ReplaceRules::parse(
            b"@host\\.example\t@example",
            Path::new("r"),
            Some(TableSource::Local(only_from)),
        )
        .expect("parse");
        let replaced = rules
            .apply(&block(&[
                ("From", "a@host.example"),
                ("To", "b@host.example"),
            ]))
            .expect("changed");
        assert_eq!(value(&replaced, "From"), b"a@example");
        assert_eq!(value(&replaced, "To"), b"b@host.example");
    }

    #[test]
    fn comments_blank_lines_and_a_line_without_a_tab() {
        assert_eq!(
            rules("# masquerading\n\n   \nfoo\tbar # trailing\n").len(),
            1
        );
        let error = ReplaceRules::parse(b"# ok\nno tab here\n", Path::new("rules"), None)
            .expect_err("no tab");
        assert_eq!(error.at.line, 2);
        assert!(error.problem.contains("no tab"), "{}", error.problem);
    }

    #[test]
    fn basic_regular_expressions_keep_their_posix_meaning() {
        let cases = [
            (r"a\(b\)*c", r"a(b)*c"),
            (r"a+b?", r"a\+b\?"),
            (r"x\{2,3\}", r"x{2,3}"),
            (r"a\+", r"a+"),
            (r"(a|b)", r"\(a\|b\)"),
            (r"*star", r"\*star"),
            (r"^@host\.example\.com$", r"^@host\.example\.com$"),
            (r"a^b$c", r"a\^b\$c"),
            (r"[[:alpha:]]\+@[^]x]", r"[[:alpha:]]+@[^\]x]"),
            (r"[a\]", r"[a\\]"),
            (r"\@", r"@"),
        ];
        for (bre, expected) in cases {
            assert_eq!(translate(bre).as_deref(), Ok(expected), "{bre}");
        }
        assert!(translate(r"\(a\)\1").is_err());
        assert!(translate("[abc").is_err());
    }

    /// Domain example.com signing, with rules `@host.example.com` ->
    /// `@example.com` and ReplaceHeaders on a server never reached.
    fn policy_with_replace_headers_on_a_server(rules: &str) -> Policy {
        let set = RemoteSet::unreached("ReplaceHeaders");
        let mut policy = crate::offline::signing_tests::example_policy();
        policy.signature.replace_rules = Some(Arc::new(
            ReplaceRules::parse(
                rules.as_bytes(),
                Path::new("rules"),
                Some(TableSource::Remote(set)),
            )
            .expect("rules parse"),
        ));
        policy
    }

    struct NoMacros;

    impl crate::policy::MacroLookup for NoMacros {
        fn lookup(&self, _name: &str) -> Option<&str> {
            None
        }
    }

    /// The decision on the fields as received from `ip`, then what
    /// becomes of it without the ReplaceHeaders answer.
    fn without_answer(policy: &Policy, ip: &str, fields: &[(&str, &str)]) -> Decision {
        let received = block(fields);
        let decision = policy.decide(&crate::policy::MessageFacts {
            client_host: "client.test",
            client_ip: Some(ip.parse().unwrap()),
            macros: &NoMacros,
            recipients: &[],
            headers: &received,
            remote: None,
            servers: None,
        });
        policy.without_replace_answer(
            decision,
            &received,
            DataSetProblem::NotLookedUp("ReplaceHeaders"),
        )
    }

    const MASQUERADE: &str = "@host\\.example\\.com\t@example.com\n";

    #[test]
    fn replace_headers_on_a_server_is_asked_only_for_fields_the_rules_rewrite() {
        let policy = policy_with_replace_headers_on_a_server(MASQUERADE);
        let lookup = policy
            .replace_lookup(&block(&[
                ("From", "a@host.example.com"),
                ("to", "b@host.example.com"),
                ("Subject", "hi"),
                ("TO", "c@host.example.com"),
            ]))
            .expect("asked");
        assert_eq!(lookup.names, ["From", "to", "TO"]);
        // Each name as written (OpenDKIM's key), then lower-cased.
        assert_eq!(
            format!("{:?}", lookup.query),
            format!(
                "{:?}",
                Query::each(
                    policy
                        .signature
                        .replace_rules
                        .as_ref()
                        .unwrap()
                        .fields_on_server()
                        .unwrap(),
                    vec![
                        vec!["From".into(), "from".into()],
                        vec!["to".into()],
                        vec!["TO".into(), "to".into()],
                    ]
                )
            )
        );
        // Nothing to rewrite: nothing asked.
        assert!(
            policy
                .replace_lookup(&block(&[("From", "a@example.com"), ("Subject", "hi")]))
                .is_none()
        );
        // No key signs for the sender, rewritten or not: nothing asked.
        assert!(
            policy
                .replace_lookup(&block(&[
                    ("From", "a@example.net"),
                    ("To", "b@host.example.com")
                ]))
                .is_none()
        );
    }

    #[test]
    fn the_listed_fields_alone_are_rewritten() {
        let policy = policy_with_replace_headers_on_a_server(MASQUERADE);
        let rules = policy.signature.replace_rules.as_ref().unwrap();
        let received = block(&[("From", "a@host.example.com"), ("To", "b@host.example.com")]);
        let rewritten = rules
            .apply_listed(&received, &["From".to_string()])
            .expect("changed");
        assert_eq!(value(&rewritten, "From"), b"a@example.com");
        assert_eq!(value(&rewritten, "To"), b"b@host.example.com");
        assert!(rules.apply_listed(&received, &[]).is_none());
        // Without the server's answer, no field is rewritten.
        assert!(rules.apply(&received).is_none());
    }

    #[test]
    fn without_the_answer_a_message_it_could_change_is_held() {
        let policy = policy_with_replace_headers_on_a_server(MASQUERADE);
        let held = |d: &Decision| matches!(d, Decision::DataSetUnavailable { .. });
        // Signed either way, but what is signed depends on the answer.
        let d = without_answer(
            &policy,
            "127.0.0.1",
            &[("From", "a@example.com"), ("To", "b@host.example.com")],
        );
        assert!(held(&d), "{d:?}");
        // Signed only if From is listed (then it reads a@example.com).
        let d = without_answer(&policy, "127.0.0.1", &[("From", "a@host.example.com")]);
        assert!(held(&d), "{d:?}");
        if let Decision::DataSetUnavailable { sender, error } = d {
            assert_eq!(sender, "a@host.example.com");
            assert!(error.to_string().contains("ReplaceHeaders"), "{error}");
        }
    }

    #[test]
    fn without_the_answer_a_message_no_answer_could_sign_is_handled_as_usual() {
        let policy = policy_with_replace_headers_on_a_server(MASQUERADE);
        // An untrusted client: not signed whatever the fields say.
        let d = without_answer(&policy, "203.0.113.9", &[("From", "a@host.example.com")]);
        assert!(
            matches!(d, Decision::NotSigned(NotSigned::UntrustedOrigin { .. })),
            "{d:?}"
        );
        // The rewritten sender has no key either.
        let policy =
            policy_with_replace_headers_on_a_server("@host\\.example\\.com\t@example.net\n");
        let d = without_answer(&policy, "127.0.0.1", &[("From", "a@host.example.com")]);
        assert!(
            matches!(d, Decision::NotSigned(NotSigned::NoKeyForSender { .. })),
            "{d:?}"
        );
        // The sender is not rewritten and has no key.
        let d = without_answer(
            &policy,
            "127.0.0.1",
            &[("From", "a@example.org"), ("To", "b@host.example.com")],
        );
        assert!(
            matches!(d, Decision::NotSigned(NotSigned::NoKeyForSender { .. })),
            "{d:?}"
        );
    }
}
