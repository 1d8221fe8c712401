//! One `refile:` pattern, matched exactly as OpenDKIM matches it.
//!
//! OpenDKIM (`dkimf_mkregexp`) turns a pattern into a POSIX extended regular
//! expression: `^` + pattern + `$`, with `*` → `.*`, `.` → `\.`, `+` → `\+`
//! and every other character copied as is, then compiles it with
//! `REG_ICASE` when the table is case-insensitive. So `*` is "any run of
//! characters", `.` and `+` are literal, and the remaining regex operators
//! (`? [ ] ( ) | ^ $ { } \`) keep their regex meaning.
//!
//! Nearly every real pattern uses only literal characters and `*`. Those
//! are [`Pattern::Glob`]: a hand-written matcher over byte segments,
//! because it is allocation-free, needs no regex engine per lookup and lets
//! the SigningTable index them by their literal prefix or suffix. Patterns
//! that use regex operators are [`Pattern::Regex`] and go through the
//! `regex` crate with the same translation, so they keep OpenDKIM's meaning
//! (the caller warns about them).
//!
//! Matching is byte-wise with ASCII-only case folding, as glibc does in the
//! C locale OpenDKIM runs in. Callers of [`Pattern::matches`] pass a query
//! already lowercased (ASCII) when the pattern is case-insensitive.

use regex::bytes::{Regex, RegexBuilder};

/// The characters that stay regex operators after OpenDKIM's translation.
const REGEX_OPERATORS: &[u8] = b"?[]()|^${}\\";

/// A compiled refile pattern.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Literal text and `*` only: the segments between the stars
    /// (lowercased when case-insensitive). One segment means no `*`.
    Glob { segments: Vec<Box<[u8]>> },
    /// Uses regex operators: OpenDKIM's regular expression, reproduced.
    Regex(Regex),
}

impl Pattern {
    /// Compiles `source` the way OpenDKIM would. Errors are the regex
    /// engine's message for patterns with regex operators it cannot build.
    pub fn compile(source: &str, case_insensitive: bool) -> Result<Pattern, String> {
        if Self::uses_regex_operators(source) {
            let mut re = String::with_capacity(source.len() + 8);
            re.push('^');
            for c in source.chars() {
                match c {
                    '*' => re.push_str(".*"),
                    '.' => re.push_str("\\."),
                    '+' => re.push_str("\\+"),
                    other => re.push(other),
                }
            }
            re.push('$');
            let regex = RegexBuilder::new(&re)
                .case_insensitive(case_insensitive)
                .unicode(false)
                .build()
                .map_err(|e| one_line(&e.to_string()))?;
            return Ok(Pattern::Regex(regex));
        }
        let bytes = if case_insensitive {
            source.to_ascii_lowercase().into_bytes()
        } else {
            source.as_bytes().to_vec()
        };
        let segments = bytes
            .split(|&b| b == b'*')
            .map(|s| s.to_vec().into_boxed_slice())
            .collect();
        Ok(Pattern::Glob { segments })
    }

    /// True when OpenDKIM would treat some character of `source` as a
    /// regular-expression operator rather than a literal.
    pub fn uses_regex_operators(source: &str) -> bool {
        source.bytes().any(|b| REGEX_OPERATORS.contains(&b))
    }

    /// The literal text when the pattern has no wildcard at all.
    pub fn literal(&self) -> Option<&[u8]> {
        match self {
            Pattern::Glob { segments } if segments.len() == 1 => Some(&segments[0]),
            _ => None,
        }
    }

    /// The literal text before the first `*`, if the pattern is a glob.
    pub fn literal_prefix(&self) -> Option<&[u8]> {
        match self {
            Pattern::Glob { segments } => Some(&segments[0]),
            Pattern::Regex(_) => None,
        }
    }

    /// The literal text after the last `*`, if the pattern is a glob.
    pub fn literal_suffix(&self) -> Option<&[u8]> {
        match self {
            Pattern::Glob { segments } => segments.last().map(|s| &s[..]),
            Pattern::Regex(_) => None,
        }
    }

    /// Whether the whole of `query` matches (the pattern is anchored at
    /// both ends). `query` must already be lowercased (ASCII) when the
    /// pattern was compiled case-insensitive.
    pub fn matches(&self, query: &[u8]) -> bool {
        match self {
            Pattern::Regex(re) => re.is_match(query),
            Pattern::Glob { segments } => glob_matches(segments, query),
        }
    }
}

/// The regex engine's message without its multi-line caret diagram, so
/// that errors stay one line: its `error: ...` line, or all of it joined.
fn one_line(message: &str) -> String {
    message
        .lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| message.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Anchored glob match: the first segment is a prefix, the last a suffix,
/// and the middle ones are found left to right in what lies between. The
/// leftmost placement of each middle segment is always a valid choice when
/// any is, so no backtracking is needed.
fn glob_matches(segments: &[Box<[u8]>], query: &[u8]) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return query.is_empty();
    };
    let Some((last, middle)) = rest.split_last() else {
        return query == &first[..];
    };
    if query.len() < first.len() + last.len() || !query.starts_with(first) || !query.ends_with(last)
    {
        return false;
    }
    let mut window = &query[first.len()..query.len() - last.len()];
    for segment in middle {
        match find(window, segment) {
            Some(at) => window = &window[at + segment.len()..],
            None => return false,
        }
    }
    true
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, query: &str) -> bool {
        Pattern::compile(pattern, true)
            .unwrap()
            .matches(query.to_ascii_lowercase().as_bytes())
    }

    #[test]
    fn star_matches_any_run_including_empty() {
        assert!(m("*@example.com", "user@example.com"));
        assert!(m("*@example.com", "@example.com"));
        assert!(!m("*@example.com", "user@example.org"));
        assert!(m("*", ""));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "acb"));
    }

    #[test]
    fn pattern_is_anchored_at_both_ends() {
        assert!(!m("example.com", "user@example.com"));
        assert!(!m("user@example", "user@example.com"));
        assert!(!m("*@*.example.com", "u@example.com"));
        assert!(m("*@*.example.com", "u@a.b.example.com"));
        assert!(m("*@*.example.com", "u@.example.com"));
    }

    #[test]
    fn dot_and_plus_are_literal() {
        assert!(!m("d.t@example.com", "dxt@example.com"));
        assert!(m("d.t@example.com", "d.t@example.com"));
        assert!(m("plus+tag@example.com", "plus+tag@example.com"));
        assert!(!m("plus+tag@example.com", "plusstag@example.com"));
    }

    #[test]
    fn matching_is_ascii_case_insensitive() {
        assert!(m("A*@EXAMPLE.ORG", "abc@example.org"));
        assert!(m("*@example.org", "Bob@EXAMPLE.org"));
    }

    #[test]
    fn case_sensitive_patterns_keep_case() {
        let p = Pattern::compile("Key*", false).unwrap();
        assert!(p.matches(b"Key1"));
        assert!(!p.matches(b"key1"));
    }

    #[test]
    fn regex_operators_keep_their_regex_meaning_like_opendkim() {
        // Confirmed against opendkim 2.11.0~beta2: `q?x@example.com`
        // signs qx@ and x@ but not the literal q?x@.
        assert!(m("q?x@example.com", "qx@example.com"));
        assert!(m("q?x@example.com", "x@example.com"));
        assert!(!m("q?x@example.com", "q?x@example.com"));
        assert!(m("[ab]c@example.com", "ac@example.com"));
        assert!(!m("[ab]c@example.com", "[ab]c@example.com"));
        assert!(m("(x|y)@example.net", "y@example.net"));
        assert!(matches!(
            Pattern::compile("q?x", true).unwrap(),
            Pattern::Regex(_)
        ));
    }

    #[test]
    fn broken_regex_is_reported_on_one_line() {
        let reason = Pattern::compile("a(b@example.com", true).unwrap_err();
        assert!(!reason.contains('\n'), "{reason}");
        assert!(reason.contains("unclosed group"), "{reason}");
    }

    #[test]
    fn literal_prefix_and_suffix_describe_globs() {
        let p = Pattern::compile("user*@Example.com", true).unwrap();
        assert_eq!(p.literal_prefix(), Some(&b"user"[..]));
        assert_eq!(p.literal_suffix(), Some(&b"@example.com"[..]));
        assert_eq!(p.literal(), None);
        let p = Pattern::compile("a@b", true).unwrap();
        assert_eq!(p.literal(), Some(&b"a@b"[..]));
    }
}
