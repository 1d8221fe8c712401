//! The `Authentication-Results` field (RFC 8601): writing ours in
//! OpenDKIM's exact format, and recognising existing fields that claim to
//! be ours so they can be removed.
//!
//! Ours, as Debian's OpenDKIM 2.11 writes it (`dkimf_ar_all_sigs` and the
//! folding in `mlfi_eom`): one field per message, every signature in it,
//!
//! ```text
//! Authentication-Results: mx.example.org;   (continuation lines start with a tab)
//!     dkim=pass (2048-bit key; secure) header.d=example.com header.i=@example.com header.a=rsa-sha256 header.s=default header.b=GxqYMj4Z;
//!     dkim=fail reason="body hash mismatch" (2048-bit key) header.d=...
//! ```
//!
//! The key comment appears when an RSA key was read (never for Ed25519),
//! with the DNSSEC word when a trust anchor is configured; `header.b` is
//! the shortest prefix of `b=` that tells the message's signatures apart,
//! at least 8 characters (`dkim_get_sigsubstring`); items are joined with
//! a space while the line stays under 75 columns, else with LF and a tab.
//! Where OpenDKIM writes a reason only for `fail` and `policy`, we also
//! give one for `permerror` and `temperror` (RFC 8601 allows it on any
//! result; OpenDKIM's `fail` for those cases is a `permerror` here).
//!
//! Recognising ours is deliberately more forgiving than OpenDKIM's
//! `ares_parse`, which gives up on fields it cannot parse and so leaves
//! forgeries in place (CVE-2022-48521): comments anywhere, any case, a
//! version number, quoted authserv-ids, `/jobid` suffixes, and result lists
//! that are not valid RFC 8601 are all read for the two facts that matter:
//! whose field it is, and whether it carries a `dkim` result.
//!
//! This module only reads and writes text; it decides nothing about
//! messages.

use crate::verify::{DkimResult, SignatureVerdict};

/// The field name.
pub const FIELD: &str = "Authentication-Results";

/// OpenDKIM's line margin for folding the field.
const MARGIN: usize = 75;

/// Shortest `header.b` OpenDKIM writes (`MINSIGLEN`).
const MIN_B: usize = 8;

/// The value of our field (leading space, folded with LF + TAB) for a
/// verified message. `authserv_id` already carries `/jobid` if wanted.
/// With no verdicts, the result is `dkim=none`.
pub fn field_value(authserv_id: &str, verdicts: &[SignatureVerdict], header_b: bool) -> String {
    let mut tokens = vec![format!("{authserv_id};")];
    if verdicts.is_empty() {
        tokens.push("dkim=none".to_string());
    } else {
        let prefix = b_prefix_length(verdicts);
        let count = verdicts.len();
        for (n, verdict) in verdicts.iter().enumerate() {
            let mut item = resinfo(verdict, header_b.then_some(prefix));
            if n + 1 < count {
                item.push(';');
            }
            tokens.push(item);
        }
    }
    let mut out = String::from(" ");
    let mut column = FIELD.len() + 3;
    for (n, token) in tokens.iter().enumerate() {
        if n > 0 {
            if column + token.len() >= MARGIN {
                out.push_str("\n\t");
                column = 8;
            } else {
                out.push(' ');
            }
        }
        out.push_str(token);
        column += token.len();
    }
    out
}

/// `dkim=RESULT[ reason="..."][ (N-bit key[; dnssec])] header.d=... `
fn resinfo(verdict: &SignatureVerdict, b_length: Option<usize>) -> String {
    let mut item = format!("dkim={}", verdict.result);
    if let Some(problem) = &verdict.problem
        && matches!(
            verdict.result,
            DkimResult::Fail | DkimResult::Policy | DkimResult::PermError | DkimResult::TempError
        )
    {
        item.push_str(&format!(" reason=\"{}\"", quoted(&problem.to_string())));
    }
    if let Some(bits) = verdict.key_bits.filter(|&b| b > 0) {
        match verdict.security.word() {
            Some(word) => item.push_str(&format!(" ({bits}-bit key; {word})")),
            None => item.push_str(&format!(" ({bits}-bit key)")),
        }
    }
    if let Some(d) = &verdict.domain {
        item.push_str(&format!(" header.d={}", pvalue(d)));
    }
    if let Some(i) = &verdict.identity {
        item.push_str(&format!(" header.i={}", pvalue(i)));
    }
    if let Some(a) = verdict.algorithm {
        item.push_str(&format!(" header.a={a}"));
    }
    if let Some(s) = &verdict.selector {
        item.push_str(&format!(" header.s={}", pvalue(s)));
    }
    if let Some(length) = b_length
        && !verdict.b.is_empty()
    {
        let end = length.min(verdict.b.len());
        let prefix = verdict.b.get(..end).unwrap_or(&verdict.b);
        item.push_str(&format!(" header.b={}", pvalue(prefix)));
    }
    item
}

/// The `header.b` length for a message's signatures, as libopendkim's
/// `dkim_get_sigsubstring` computes it: at least 8, and long enough to
/// tell apart every two different `b=` values.
pub fn b_prefix_length(verdicts: &[SignatureVerdict]) -> usize {
    let mut length = MIN_B;
    let bs: Vec<&[u8]> = verdicts.iter().map(|v| v.b.as_bytes()).collect();
    for (c, b1) in bs.iter().enumerate() {
        if b1.is_empty() {
            continue;
        }
        for b2 in &bs[c + 1..] {
            if b2.is_empty() {
                continue;
            }
            if b1 == b2 {
                break;
            }
            // strncmp(b1, b2, length) != 0
            if b1[..b1.len().min(length)] != b2[..b2.len().min(length)] {
                continue;
            }
            let shortest = b1.len().min(b2.len());
            let mut x = length;
            while x < shortest && b1[x] == b2[x] {
                x += 1;
            }
            length = x + 1;
        }
    }
    length
}

/// A property value as is when it is safe unquoted, else a quoted-string.
fn pvalue(value: &str) -> String {
    let safe = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-./=?@^_`{|}~".contains(&b));
    if safe {
        value.to_string()
    } else {
        format!("\"{}\"", quoted(value))
    }
}

/// Text for inside a quoted-string: backslashes and quotes escaped,
/// control characters dropped.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// What matters about an existing Authentication-Results field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingField {
    /// The authserv-id, lower-case, without a `/jobid` suffix.
    pub authserv_id: String,
    /// Whether any result in it is for the `dkim` method.
    pub has_dkim: bool,
}

/// Reads an existing field's value however malformed: `None` only when
/// there is no authserv-id at all.
pub fn read_existing(value: &[u8]) -> Option<ExistingField> {
    let text = String::from_utf8_lossy(value);
    let mut tokens = Tokens::new(&text);
    let authserv = tokens.next_word()?;
    if authserv == ";" || authserv == "=" {
        return None;
    }
    let authserv_id = authserv
        .split('/')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if authserv_id.is_empty() {
        return None;
    }
    // Any bare word that is a dkim result counts, where RFC 8601 puts
    // methods (after a `;`) or not: a reader laxer than the RFC must not
    // find a forged `dkim=pass` we left in place.
    let mut has_dkim = false;
    let mut previous_dkim = false;
    while let Some(word) = tokens.next_word() {
        let lower = word.to_ascii_lowercase();
        if (previous_dkim && lower.starts_with('='))
            || (!tokens.last_quoted && (lower.starts_with("dkim=") || lower.starts_with("dkim/")))
        {
            has_dkim = true;
        }
        previous_dkim = !tokens.last_quoted && lower == "dkim";
    }
    Some(ExistingField {
        authserv_id,
        has_dkim,
    })
}

/// Words of a header value: comments (nested, with escapes) and white
/// space skipped, quoted strings as one word without their quotes, `;` a
/// word of its own.
struct Tokens<'a> {
    rest: &'a str,
    /// The last word was a quoted string.
    last_quoted: bool,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Tokens {
            rest: text,
            last_quoted: false,
        }
    }

    fn next_word(&mut self) -> Option<String> {
        self.last_quoted = false;
        loop {
            let trimmed = self.rest.trim_start();
            self.rest = trimmed;
            let mut chars = trimmed.char_indices();
            let (_, first) = chars.next()?;
            match first {
                '(' => {
                    let mut depth = 0usize;
                    let mut escaped = false;
                    let mut end = trimmed.len();
                    for (i, c) in trimmed.char_indices() {
                        match (escaped, c) {
                            (true, _) => escaped = false,
                            (false, '\\') => escaped = true,
                            (false, '(') => depth += 1,
                            (false, ')') => {
                                depth -= 1;
                                if depth == 0 {
                                    end = i + 1;
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    self.rest = &trimmed[end..];
                }
                ';' => {
                    self.rest = &trimmed[1..];
                    return Some(";".to_string());
                }
                '"' => {
                    let mut word = String::new();
                    let mut escaped = false;
                    let mut end = trimmed.len();
                    for (i, c) in trimmed.char_indices().skip(1) {
                        match (escaped, c) {
                            (true, c) => {
                                word.push(c);
                                escaped = false;
                            }
                            (false, '\\') => escaped = true,
                            (false, '"') => {
                                end = i + 1;
                                break;
                            }
                            (false, c) => word.push(c),
                        }
                    }
                    self.rest = &trimmed[end..];
                    self.last_quoted = true;
                    return Some(word);
                }
                _ => {
                    let end = trimmed
                        .find(|c: char| c.is_whitespace() || c == ';' || c == '(' || c == '"')
                        .unwrap_or(trimmed.len());
                    self.rest = &trimmed[end..];
                    return Some(trimmed[..end].to_string());
                }
            }
        }
    }
}

/// Which existing fields to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Our authserv-id (lower-case, no job id).
    pub authserv_id: String,
    /// OpenDKIM's RemoveARFrom: these hosts (`.example.com` for a domain
    /// and its subdomains) instead of our authserv-id.
    pub from: Option<Vec<String>>,
    /// OpenDKIM's RemoveARAll: remove matching fields even without a dkim
    /// result.
    pub all: bool,
}

impl Removal {
    /// Whether a field with this value is to be removed.
    pub fn removes(&self, value: &[u8]) -> bool {
        let Some(field) = read_existing(value) else {
            return false;
        };
        let ours = match &self.from {
            None => field.authserv_id == self.authserv_id,
            Some(hosts) => hosts.iter().any(|h| {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix('.') {
                    Some(domain) => {
                        field.authserv_id == domain
                            || field.authserv_id.ends_with(&format!(".{domain}"))
                    }
                    None => field.authserv_id == h,
                }
            }),
        };
        ours && (self.all || field.has_dkim)
    }
}

/// With RemoveARFrom kept on a server: the authserv-id of a field that is
/// removed if the set lists it (one with a dkim result, or any with
/// RemoveARAll); `None` for a field that stays whatever the set says.
pub fn removable_authserv_id(value: &[u8], all: bool) -> Option<String> {
    read_existing(value)
        .filter(|field| all || field.has_dkim)
        .map(|field| field.authserv_id)
}

/// The keys asked of RemoveARFrom kept on a server for an authserv-id
/// (lower-case): the id itself (OpenDKIM's one key), then `.id` and each
/// parent `.suffix`, so that a row `.example.com` covers example.com and
/// its subdomains as it does in a file.
pub fn removal_keys(authserv_id: &str) -> Vec<String> {
    let mut keys = vec![authserv_id.to_string(), format!(".{authserv_id}")];
    keys.extend(
        crate::tables::dotted_suffixes(authserv_id)
            .filter(|suffix| suffix.len() > 1)
            .map(str::to_string),
    );
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Security;
    use crate::verify::Problem;

    fn pass(b: &str) -> SignatureVerdict {
        SignatureVerdict {
            result: DkimResult::Pass,
            problem: None,
            domain: Some("example.test".into()),
            selector: Some("default".into()),
            identity: Some("@example.test".into()),
            algorithm: Some("rsa-sha256"),
            key_bits: Some(2048),
            security: Security::Unchecked,
            b: b.into(),
            key_missing: false,
            testing: false,
        }
    }

    #[test]
    fn one_signature_looks_like_debians_opendkim() {
        let value = field_value("mx.example.org", &[pass("GxqYMj4ZabcdefXYZ")], true);
        assert_eq!(
            value,
            " mx.example.org;\n\tdkim=pass (2048-bit key) header.d=example.test \
             header.i=@example.test header.a=rsa-sha256 header.s=default header.b=GxqYMj4Z"
        );
    }

    #[test]
    fn several_signatures_each_on_a_line_with_reasons_and_dnssec() {
        let mut failed = pass("GxqYMj4ZzzzOther");
        failed.result = DkimResult::Fail;
        failed.problem = Some(Problem::BodyHashMismatch);
        failed.security = Security::Secure;
        let mut ed = pass("QQQQQQQQQQ");
        ed.key_bits = None;
        ed.algorithm = Some("ed25519-sha256");
        let value = field_value("mx", &[pass("GxqYMj4ZabcdefXYZ"), failed, ed], true);
        let lines: Vec<&str> = value.split("\n\t").collect();
        assert_eq!(lines[0], " mx;");
        assert!(lines[1].ends_with("header.b=GxqYMj4Za;"), "{value}");
        assert!(
            lines[2].starts_with(
                "dkim=fail reason=\"body hash mismatch\" (2048-bit key; secure) header.d="
            ),
            "{value}"
        );
        assert!(lines[2].ends_with("header.b=GxqYMj4Zz;"), "{value}");
        assert!(
            lines[3].starts_with("dkim=pass header.d=example.test")
                && lines[3].ends_with("header.b=QQQQQQQQQ"),
            "{value}"
        );
    }

    #[test]
    fn header_b_is_the_shortest_unique_prefix_of_at_least_eight() {
        let with = |bs: &[&str]| b_prefix_length(&bs.iter().map(|b| pass(b)).collect::<Vec<_>>());
        assert_eq!(with(&["abcdefghij"]), 8);
        assert_eq!(with(&["abcdefghij", "zbcdefghij"]), 8);
        assert_eq!(with(&["abcdefghXj", "abcdefghYj"]), 9);
        assert_eq!(with(&["abcdefghijkl1", "abcdefghijkl2", "q"]), 13);
        // Identical b= values (a duplicated field) do not grow it.
        assert_eq!(with(&["abcdefghij", "abcdefghij"]), 8);
    }

    #[test]
    fn none_and_short_lines_join_with_a_space() {
        assert_eq!(
            field_value("mx.example.org", &[], true),
            " mx.example.org; dkim=none"
        );
    }

    #[test]
    fn odd_values_are_quoted() {
        let mut odd = pass("abcdefgh");
        odd.domain = Some("exa mple\"x".into());
        let value = field_value("mx", &[odd], false);
        assert!(value.contains("header.d=\"exa mple\\\"x\""), "{value}");
        assert!(!value.contains("header.b"), "{value}");
    }

    fn ours() -> Removal {
        Removal {
            authserv_id: "mx.example.org".into(),
            from: None,
            all: false,
        }
    }

    #[test]
    fn forged_fields_are_recognised_however_they_are_written() {
        let removal = ours();
        for forged in [
            " mx.example.org; dkim=pass header.d=example.com",
            "MX.Example.ORG;DKIM=pass",
            " (comment (nested)) mx.example.org (c) 1 ; spf=pass; dkim=pass",
            " \"mx.example.org\"; dkim/1=pass",
            " mx.example.org/4Bx1QQ; dkim=fail",
            " mx.example.org; dkim=pass; header.d=x",
            " mx.example.org;\n\tspf=none;\n\t(why not) dkim=pass",
            " mx.example.org; dkim = pass (good)",
            " mx.example.org; spf=pass dkim=pass header.d=bank.example",
        ] {
            assert!(removal.removes(forged.as_bytes()), "{forged:?}");
        }
        for kept in [
            " mx.example.org; spf=pass smtp.mailfrom=x",
            " mx.example.org; none",
            " other.example.org; dkim=pass",
            " mx.example.org.evil; dkim=pass",
            " (mx.example.org) other; dkim=pass",
            " other; x=(dkim=pass)",
            " mx.example.org; spf=pass (dkim=pass) reason=\"dkim=pass\"",
            "",
            " ; dkim=pass",
        ] {
            assert!(!removal.removes(kept.as_bytes()), "{kept:?}");
        }
    }

    #[test]
    fn an_authserv_id_on_a_server_is_asked_with_each_parent_domain() {
        assert_eq!(
            removal_keys("mx.trusted.example"),
            [
                "mx.trusted.example",
                ".mx.trusted.example",
                ".trusted.example",
                ".example"
            ]
        );
        assert_eq!(removal_keys("localhost"), ["localhost", ".localhost"]);
        // A trailing dot makes no empty `.` key.
        assert_eq!(removal_keys("mx."), ["mx.", ".mx."]);
    }

    #[test]
    fn only_fields_with_a_dkim_result_are_asked_about_unless_remove_all() {
        assert_eq!(
            removable_authserv_id(b" Trusted.Example/42; dkim=pass", false).as_deref(),
            Some("trusted.example")
        );
        assert_eq!(
            removable_authserv_id(b" trusted.example; spf=pass", false),
            None
        );
        assert_eq!(
            removable_authserv_id(b" trusted.example; spf=pass", true).as_deref(),
            Some("trusted.example")
        );
        assert_eq!(removable_authserv_id(b" ; dkim=pass", true), None);
    }

    #[test]
    fn remove_all_and_remove_from() {
        let all = Removal {
            all: true,
            ..ours()
        };
        assert!(all.removes(b" mx.example.org; spf=pass"));
        assert!(!all.removes(b" other; spf=pass"));
        let from = Removal {
            from: Some(vec![".example.org".into(), "relay.example.net".into()]),
            ..ours()
        };
        assert!(from.removes(b" mx.example.org; dkim=pass"));
        assert!(from.removes(b" example.org; dkim=pass"));
        assert!(from.removes(b" Relay.Example.net; dkim=pass"));
        assert!(!from.removes(b" example.net; dkim=pass"));
    }
}
