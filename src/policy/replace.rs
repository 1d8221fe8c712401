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

use std::path::Path;

use regex::bytes::{Regex, RegexBuilder};

use crate::diagnostics::Location;
use crate::dkim::{HeaderBlock, HeaderField};
use crate::tables::KeySet;

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
    fields: Option<KeySet>,
}

/// What is wrong with a rules file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub at: Location,
    pub problem: String,
}

impl ReplaceRules {
    /// Reads the rules file at `path`.
    pub fn load(path: &Path, fields: Option<KeySet>) -> Result<ReplaceRules, RuleError> {
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
        fields: Option<KeySet>,
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

    /// Whether the rules rewrite every field (no ReplaceHeaders).
    pub fn cover_every_field(&self) -> bool {
        self.fields.is_none()
    }

    /// The header block with the rules applied, or `None` when no rule
    /// changed anything.
    pub fn apply(&self, headers: &HeaderBlock) -> Option<HeaderBlock> {
        let mut changed = false;
        let mut out = HeaderBlock::new();
        for field in headers.fields() {
            let applies = self
                .fields
                .as_ref()
                .is_none_or(|names| names.contains(&String::from_utf8_lossy(&field.name)));
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
            Some(only_from),
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
}
