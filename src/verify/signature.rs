//! One DKIM-Signature field, checked as RFC 6376 section 6.1.1 says a
//! verifier must before any DNS query.
//!
//! mail-auth's `Signature::parse` reads the tag values (base64, the `h=`
//! list, quoted-printable `i=`); it is lenient where a verifier must not be
//! (a missing `v=` or `a=` gets a default, `l=0` reads as "no limit", a
//! repeated tag silently wins, an unknown canonicalization or a
//! non-numeric time becomes 0), so a strict pass over the tag-list comes
//! first: tag syntax, duplicates, every required tag present and well
//! formed, `i=` within `d=`, `h=` naming From, `q=dns/txt`, the times. A
//! field failing it is a `permerror` with the reason, and needs no key.
//! This module never looks anything up and never verifies anything.

use std::collections::HashMap;

use mail_auth::common::crypto::Algorithm;
use mail_auth::dkim::Signature;

use super::Problem;

/// What a signature shows in the Authentication-Results field, taken from
/// its tags as written, whether or not it is valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shown {
    /// `d=` as written.
    pub domain: Option<String>,
    pub selector: Option<String>,
    /// `i=` as written (quoted-printable decoded when the field parses).
    pub identity: Option<String>,
    /// `a=` when it names an algorithm we know.
    pub algorithm: Option<&'static str>,
    /// `b=` without its folding white space, for `header.b`.
    pub b: String,
}

/// A signature that passed the checks, ready to verify.
#[derive(Debug)]
pub struct Parsed {
    pub signature: Signature,
    /// `l=`, when present (`l=0` is a limit of zero bytes).
    pub length: Option<u64>,
    /// The domain a key is looked up in, lower-case.
    pub domain: String,
}

impl Parsed {
    /// `selector._domainkey.domain.`
    pub fn key_name(&self) -> String {
        format!(
            "{}._domainkey.{}.",
            self.signature.s.to_ascii_lowercase(),
            self.domain
        )
    }
}

/// The tags of a tag-list (RFC 6376 section 3.2), values trimmed.
fn tag_list(text: &str) -> Result<HashMap<&str, &str>, Problem> {
    let mut tags = HashMap::new();
    for spec in text.split(';') {
        let spec = spec.trim_matches(is_fws);
        if spec.is_empty() {
            continue;
        }
        let Some((name, value)) = spec.split_once('=') else {
            return Err(Problem::TagSyntax);
        };
        let name = name.trim_matches(is_fws);
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Problem::TagSyntax);
        }
        if tags.insert(name, value.trim_matches(is_fws)).is_some() {
            return Err(Problem::DuplicateTag(name.to_string()));
        }
    }
    Ok(tags)
}

fn is_fws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn without_fws(value: &str) -> String {
    let bytes: Vec<u8> = value
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .collect();
    // Only ASCII bytes were taken out of valid UTF-8.
    String::from_utf8(bytes).unwrap_or_default()
}

/// A domain or selector: dot-separated labels of letters, digits, `-`
/// and `_`, 1 to 63 characters each, at most 253 in all.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn algorithm_name(value: &str) -> Option<&'static str> {
    match value {
        "rsa-sha256" => Some("rsa-sha256"),
        "rsa-sha1" => Some("rsa-sha1"),
        "ed25519-sha256" => Some("ed25519-sha256"),
        _ => None,
    }
}

fn time(value: Option<&str>) -> Result<Option<u64>, Problem> {
    match value {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.len() <= 12 && v.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(v.parse().ok())
        }
        Some(_) => Err(Problem::InvalidTimestamp),
    }
}

/// Reads one DKIM-Signature field value (after the colon, folding kept)
/// at `now` (Unix seconds), allowing `drift` seconds of clock difference
/// for `t=`.
pub fn read(value: &[u8], now: u64, drift: u64) -> (Shown, Result<Parsed, Problem>) {
    let Ok(text) = std::str::from_utf8(value) else {
        return (Shown::default(), Err(Problem::TagSyntax));
    };
    let tags = match tag_list(text) {
        Ok(tags) => tags,
        Err(problem) => return (shown_leniently(text), Err(problem)),
    };
    let mut shown = Shown {
        domain: tags.get("d").map(ToString::to_string),
        selector: tags.get("s").map(ToString::to_string),
        identity: tags.get("i").map(ToString::to_string),
        algorithm: tags.get("a").and_then(|a| algorithm_name(a)),
        b: tags.get("b").map(|b| without_fws(b)).unwrap_or_default(),
    };
    let result = check(&tags, text, now, drift, &mut shown);
    (shown, result)
}

fn check(
    tags: &HashMap<&str, &str>,
    text: &str,
    now: u64,
    drift: u64,
    shown: &mut Shown,
) -> Result<Parsed, Problem> {
    let required = |tag: &'static str, missing: Problem, empty: Problem| -> Result<&str, Problem> {
        match tags.get(tag) {
            None => Err(missing),
            Some(&"") => Err(empty),
            Some(v) => Ok(v),
        }
    };
    let version = required("v", Problem::MissingVersion, Problem::MissingVersion)?;
    if version != "1" {
        return Err(Problem::UnsupportedVersion);
    }
    let algorithm = required("a", Problem::MissingAlgorithm, Problem::MissingAlgorithm)?;
    match algorithm_name(algorithm) {
        Some("rsa-sha1") => return Err(Problem::Sha1),
        Some(_) => {}
        None => return Err(Problem::InvalidAlgorithm),
    }
    let b = required("b", Problem::MissingB, Problem::EmptyB)?;
    if base64_bytes(b).is_none() {
        return Err(Problem::CorruptB);
    }
    let bh = required("bh", Problem::MissingBh, Problem::EmptyBh)?;
    if base64_bytes(bh).is_none() {
        return Err(Problem::CorruptBh);
    }
    let domain = required("d", Problem::MissingDomain, Problem::EmptyDomain)?;
    if !valid_name(domain) {
        return Err(Problem::InvalidDomain);
    }
    let headers = required("h", Problem::MissingHeaders, Problem::EmptyHeaders)?;
    if !headers
        .split(':')
        .any(|h| h.trim_matches(is_fws).eq_ignore_ascii_case("from"))
    {
        return Err(Problem::FromNotSigned);
    }
    let selector = required("s", Problem::MissingSelector, Problem::EmptySelector)?;
    if !valid_name(selector) {
        return Err(Problem::InvalidSelector);
    }
    if let Some(c) = tags.get("c") {
        let mut parts = c.split('/');
        let ok = parts
            .by_ref()
            .take(2)
            .all(|m| matches!(m, "simple" | "relaxed"))
            && parts.next().is_none()
            && !c.is_empty();
        if !ok {
            return Err(Problem::InvalidCanonicalization);
        }
    }
    let length = match tags.get("l") {
        None => None,
        Some(l) if !l.is_empty() && l.len() <= 76 && l.bytes().all(|b| b.is_ascii_digit()) => {
            // More digits than u64 holds is more bytes than any body.
            Some(l.parse::<u64>().unwrap_or(u64::MAX))
        }
        Some(_) => return Err(Problem::InvalidLength),
    };
    if let Some(q) = tags.get("q")
        && !q.split(':').any(|m| {
            let m = m.trim_matches(is_fws);
            m == "dns/txt" || m.starts_with("dns/txt/")
        })
    {
        return Err(Problem::InvalidQuery);
    }
    let signed_at = time(tags.get("t").copied())?;
    let expires = time(tags.get("x").copied())?;
    if let (Some(t), Some(x)) = (signed_at, expires)
        && x < t
    {
        return Err(Problem::TimestampOrder);
    }
    if expires.is_some_and(|x| x < now) {
        return Err(Problem::Expired);
    }
    if signed_at.is_some_and(|t| t > now.saturating_add(drift)) {
        return Err(Problem::FutureTimestamp);
    }

    let signature = Signature::parse(text.as_bytes()).map_err(|_| Problem::TagSyntax)?;
    if !signature.i.is_empty() {
        shown.identity = shown.identity.as_deref().map(quoted_printable);
        let auid_domain = signature.i.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let d = domain.to_ascii_lowercase();
        let within = auid_domain.eq_ignore_ascii_case(&d)
            || auid_domain.to_ascii_lowercase().ends_with(&format!(".{d}"));
        if !signature.i.contains('@') || !within {
            return Err(Problem::IdentityOutsideDomain);
        }
    }
    if signature.a == Algorithm::RsaSha1 {
        return Err(Problem::Sha1);
    }
    Ok(Parsed {
        signature,
        length,
        domain: domain.to_ascii_lowercase(),
    })
}

/// `i=` is dkim-quoted-printable (RFC 6376 section 2.11): `=XX` is a byte.
fn quoted_printable(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) if is_fws(b as char) => i += 1,
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64_bytes(value: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(without_fws(value))
        .ok()
        .filter(|bytes| !bytes.is_empty())
}

/// `d=`, `s=`, `a=`, `b=` of a field whose tag-list does not even parse,
/// found the forgiving way, so the result can still name them.
fn shown_leniently(text: &str) -> Shown {
    let mut shown = Shown::default();
    for spec in text.split(';') {
        let Some((name, value)) = spec.split_once('=') else {
            continue;
        };
        let value = value.trim_matches(is_fws);
        match name.trim_matches(is_fws) {
            "d" if shown.domain.is_none() => shown.domain = Some(value.to_string()),
            "s" if shown.selector.is_none() => shown.selector = Some(value.to_string()),
            "i" if shown.identity.is_none() => shown.identity = Some(value.to_string()),
            "a" if shown.algorithm.is_none() => shown.algorithm = algorithm_name(value),
            "b" if shown.b.is_empty() => shown.b = without_fws(value),
            _ => {}
        }
    }
    shown
}

/// The field's value as it was signed: the `b=` value (with the white space
/// around it) removed, everything else byte for byte (RFC 6376 section
/// 3.7). `wire` is the value with CRLF line breaks and no final CRLF.
pub fn without_b_value(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(wire.len());
    let mut rest = wire;
    loop {
        let end = rest.iter().position(|&b| b == b';');
        let (segment, tail) = match end {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let name_start = segment
            .iter()
            .position(|b| !b" \t\r\n".contains(b))
            .unwrap_or(segment.len());
        let after_name = &segment[name_start..];
        let is_b = after_name.first() == Some(&b'b') && {
            let rest = &after_name[1..];
            let eq = rest.iter().position(|b| !b" \t\r\n".contains(b));
            eq.is_some_and(|i| rest[i] == b'=')
        };
        if is_b {
            let eq = segment
                .iter()
                .position(|&b| b == b'=')
                .expect("checked above");
            out.extend_from_slice(&segment[..=eq]);
        } else {
            out.extend_from_slice(segment);
        }
        match tail {
            Some(tail) => {
                out.push(b';');
                rest = &tail[1..];
            }
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn good() -> String {
        "v=1; a=rsa-sha256; c=relaxed/simple; d=Example.COM; s=sel; t=1699999000; \
         h=From:To:Subject; bh=YWJj; b=ZGVm\r\n\tZ2hp"
            .to_string()
    }

    fn problem(value: &str) -> Problem {
        read(value.as_bytes(), NOW, 300).1.unwrap_err()
    }

    #[test]
    fn a_good_signature_parses_and_shows_its_tags_as_written() {
        let (shown, parsed) = read(good().as_bytes(), NOW, 300);
        let parsed = parsed.unwrap();
        assert_eq!(shown.domain.as_deref(), Some("Example.COM"));
        assert_eq!(shown.selector.as_deref(), Some("sel"));
        assert_eq!(shown.algorithm, Some("rsa-sha256"));
        assert_eq!(shown.b, "ZGVmZ2hp");
        assert_eq!(parsed.domain, "example.com");
        assert_eq!(parsed.key_name(), "sel._domainkey.example.com.");
        assert_eq!(parsed.length, None);
        assert_eq!(parsed.signature.b, b"defghi");
    }

    #[test]
    fn each_required_tag_missing_or_empty_is_named() {
        for (tag, missing) in [
            ("v", Problem::MissingVersion),
            ("a", Problem::MissingAlgorithm),
            ("b", Problem::MissingB),
            ("bh", Problem::MissingBh),
            ("d", Problem::MissingDomain),
            ("h", Problem::MissingHeaders),
            ("s", Problem::MissingSelector),
        ] {
            let without: Vec<String> = good()
                .split(';')
                .filter(|t| t.trim().split('=').next() != Some(tag))
                .map(str::to_string)
                .collect();
            assert_eq!(problem(&without.join(";")), missing, "{tag}");
        }
        assert_eq!(
            problem(&good().replace("d=Example.COM", "d=")),
            Problem::EmptyDomain
        );
        assert_eq!(
            problem(&good().replace("s=sel", "s= ")),
            Problem::EmptySelector
        );
        assert_eq!(problem(&good().replace("bh=YWJj", "bh=")), Problem::EmptyBh);
    }

    #[test]
    fn garbled_values_are_refused() {
        let cases = [
            ("v=1", "v=2", Problem::UnsupportedVersion),
            ("a=rsa-sha256", "a=rsa-md5", Problem::InvalidAlgorithm),
            ("a=rsa-sha256", "a=rsa-sha1", Problem::Sha1),
            (
                "c=relaxed/simple",
                "c=relaxed/loose",
                Problem::InvalidCanonicalization,
            ),
            (
                "c=relaxed/simple",
                "c=simple/simple/simple",
                Problem::InvalidCanonicalization,
            ),
            ("bh=YWJj", "bh=!!!", Problem::CorruptBh),
            ("b=ZGVm", "b=%%%", Problem::CorruptB),
            ("d=Example.COM", "d=exa mple.com", Problem::InvalidDomain),
            ("d=Example.COM", "d=..", Problem::InvalidDomain),
            ("s=sel", "s=se/l", Problem::InvalidSelector),
            ("h=From:To:Subject", "h=To:Subject", Problem::FromNotSigned),
            ("t=1699999000", "t=soon", Problem::InvalidTimestamp),
            ("t=1699999000", "t=1800000000", Problem::FutureTimestamp),
        ];
        for (from, to, expected) in cases {
            assert_eq!(problem(&good().replace(from, to)), expected, "{to}");
        }
        assert_eq!(
            problem(&format!("{}; l=12x", good())),
            Problem::InvalidLength
        );
        assert_eq!(
            problem(&format!("{}; q=http", good())),
            Problem::InvalidQuery
        );
        assert_eq!(
            problem(&format!("{}; x=1600000000", good())),
            Problem::TimestampOrder
        );
        assert_eq!(
            problem(&format!("{}; i=@other.org", good())),
            Problem::IdentityOutsideDomain
        );
        assert_eq!(problem("v=1; a=rsa-sha256; d=x"), Problem::MissingB);
        assert_eq!(problem("no tags at all"), Problem::TagSyntax);
        assert_eq!(problem("v=1; 9x=3"), Problem::TagSyntax);
        assert_eq!(
            read(b"\xff\xfe", NOW, 300).1.unwrap_err(),
            Problem::TagSyntax
        );
    }

    #[test]
    fn duplicate_tags_are_refused() {
        assert_eq!(
            problem(&format!("{}; d=evil.example", good())),
            Problem::DuplicateTag("d".into())
        );
    }

    #[test]
    fn expiry_identity_length_and_query() {
        let expired = format!("{}; x=1699999999", good());
        assert_eq!(problem(&expired), Problem::Expired);
        let fine = format!(
            "{}; x=1800000000; i=alice=40x@Sub.example.com; l=0; q=dns/txt",
            good()
        );
        let (shown, parsed) = read(fine.as_bytes(), NOW, 300);
        let parsed = parsed.unwrap();
        assert_eq!(parsed.length, Some(0));
        assert_eq!(shown.identity.as_deref(), Some("alice@x@Sub.example.com"));
        let huge = format!("{}; l={}", good(), "9".repeat(40));
        assert_eq!(
            read(huge.as_bytes(), NOW, 300).1.unwrap().length,
            Some(u64::MAX)
        );
        assert_eq!(
            problem(&format!("{}; i=alice@example.com.evil", good())),
            Problem::IdentityOutsideDomain
        );
        assert_eq!(
            problem(&format!("{}; i=alice@notexample.com", good())),
            Problem::IdentityOutsideDomain
        );
    }

    #[test]
    fn a_field_that_does_not_parse_still_shows_d_and_s() {
        let (shown, parsed) = read(b"d=example.com; s=sel; junk; b=abc", NOW, 300);
        assert_eq!(parsed.unwrap_err(), Problem::TagSyntax);
        assert_eq!(shown.domain.as_deref(), Some("example.com"));
        assert_eq!(shown.selector.as_deref(), Some("sel"));
        assert_eq!(shown.b, "abc");
    }

    #[test]
    fn the_b_value_and_its_white_space_are_removed_for_hashing() {
        assert_eq!(
            without_b_value(b" v=1; bh=abc; b=de\r\n\tfg ; h=from"),
            b" v=1; bh=abc; b=; h=from"
        );
        assert_eq!(without_b_value(b"b = xyz"), b"b =");
        assert_eq!(without_b_value(b" a=1;\r\n\tb=xyz"), b" a=1;\r\n\tb=");
        assert_eq!(without_b_value(b"bb=1; b=2;"), b"bb=1; b=;");
    }
}
