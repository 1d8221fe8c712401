//! The `dkim` check, one per selector: the TXT record at
//! `SEL._domainkey.D` exists, is a single record, parses as a DKIM key
//! record (the exact fault named: commas, stray quotes, no `p=`, a string
//! cut at 255 characters, whitespace in the base64), publishes the
//! private key's public half with the right `k=`, and its `t=`, `h=` and
//! `s=` allow how we sign; the key is at least 1024 bits (warn under 2048)
//! and `t=y` is no longer set.
//!
//! The record is parsed by [`crate::keys::record`] and judged against the
//! key by [`crate::keys::testkey::judge`], the code `testkey` uses; this
//! file adds what only the published form shows (several records, string
//! boundaries, quotes). It never prints key material other than `p=`.

use super::fix::{DNS_STRING_MAX, Fix, FixRecord};
use super::lookup::Lookup;
use super::{Check, CheckId, DomainInput, SelectorInput, Status};
use crate::keys::PrivateKey;
use crate::keys::record::{self, KeyRecord, RecordOptions};
use crate::keys::testkey::{Verdict, judge};

/// RFC 8301: verifiers refuse RSA keys under 1024 bits.
const SMALLEST_RSA_BITS: u32 = 1024;
/// Under this, large receivers count the key as weak.
const RECOMMENDED_RSA_BITS: u32 = 2048;

/// One `dkim` check per selector of `domain`.
pub async fn check(lookup: &Lookup, domain: &DomainInput) -> Vec<Check> {
    let mut checks = Vec::new();
    for selector in &domain.selectors {
        checks.push(
            check_selector(lookup, &domain.domain, selector)
                .await
                .selector(&selector.selector),
        );
    }
    checks
}

/// The record this key needs, as the fix publishes it.
pub fn expected_record(key: &PrivateKey) -> String {
    let options = RecordOptions {
        hash_algorithms: Some("sha256".to_string()),
        ..RecordOptions::default()
    };
    record::record_text(key.key_type(), &key.public_key_base64(), &options)
}

async fn check_selector(lookup: &Lookup, domain: &str, input: &SelectorInput) -> Check {
    let name = record::record_name(&input.selector, domain);
    let key = match &input.key {
        Ok(key) => key,
        Err(why) => {
            return Check::fail(
                CheckId::Dkim,
                format!("cannot check {name}: the key cannot be loaded: {why}"),
                Fix::words("fix the key file named in the configuration (check-config says more)"),
            );
        }
    };
    let expected = expected_record(key);
    let replace = |what: &str| {
        Fix::publish(
            format!("{what} the TXT record at {name} with:"),
            vec![FixRecord::txt(&name, domain, &expected)],
        )
    };
    let answer = match lookup.txt(&name).await {
        Ok(answer) => answer,
        Err(problem) => return Check::dns(CheckId::Dkim, &problem),
    };
    let records = answer.into_records();
    match records.len() {
        0 => {
            return Check::fail(
                CheckId::Dkim,
                format!("no TXT record at {name}: verifiers cannot check our signatures"),
                Fix::publish(
                    format!("publish this TXT record at {name}:"),
                    vec![FixRecord::txt(&name, domain, &expected)],
                ),
            );
        }
        1 => {}
        n => {
            return Check::fail(
                CheckId::Dkim,
                format!("{n} TXT records at {name}: a verifier may take any of them; keep one"),
                replace("replace all"),
            );
        }
    }
    let strings = &records[0];
    let text: String = strings.iter().map(|s| String::from_utf8_lossy(s)).collect();
    if let Some(fault) = published_form_fault(&text) {
        return Check::fail(
            CheckId::Dkim,
            format!("{name}: {fault}"),
            replace("replace"),
        );
    }
    let parsed = match record::parse_record(&text) {
        Ok(parsed) => parsed,
        Err(err) => {
            let cut = strings.len() == 1 && strings[0].len() == DNS_STRING_MAX;
            let message = if cut {
                format!(
                    "{name}: the record is cut at 255 characters ({err}): the DNS provider \
                     kept only the first string; enter the value split into strings of at \
                     most 255 characters"
                )
            } else {
                format!("{name}: the record does not parse: {err}")
            };
            return Check::fail(CheckId::Dkim, message, replace("replace"));
        }
    };
    let cut = strings.len() == 1 && strings[0].len() == DNS_STRING_MAX;
    judge_published(&name, domain, input, key, &parsed, &text, &expected, cut)
}

/// Faults visible only in the record as served: quotes typed into a web
/// form, and a value whose strings were split so that the key was cut.
fn published_form_fault(text: &str) -> Option<String> {
    if text.contains('"') {
        return Some(
            "the record contains stray `\"` characters (the quotes of a zone file were typed \
             into the provider's form); enter the value without quotes"
                .to_string(),
        );
    }
    if text.contains('\\') {
        return Some(
            "the record contains `\\` characters (zone-file escapes typed into the provider's \
             form); enter the value without them"
                .to_string(),
        );
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn judge_published(
    name: &str,
    domain: &str,
    input: &SelectorInput,
    key: &PrivateKey,
    parsed: &KeyRecord,
    text: &str,
    expected: &str,
    cut: bool,
) -> Check {
    let replace = || {
        Fix::publish(
            format!("replace the TXT record at {name} with:"),
            vec![FixRecord::txt(name, domain, expected)],
        )
    };
    let kind = match key.rsa_bits() {
        Some(bits) => format!("a {bits}-bit RSA key"),
        None => "an Ed25519 key".to_string(),
    };
    let origin = &input.key_origin;
    let verdict = judge(parsed, key.key_type(), key.public_key());
    let fault = match verdict {
        Verdict::KeyOk => None,
        Verdict::KeysDoNotMatch => Some(format!(
            "{name} publishes a different public key than {origin} ({kind}): \
             signatures fail everywhere"
        )),
        Verdict::RecordNotFound => Some(format!("no record at {name}")),
        Verdict::SyntaxError(err) if cut => Some(format!(
            "{name}: the record is cut at 255 characters ({err}): the DNS provider kept only \
             the first string; enter the value split into strings of at most 255 characters"
        )),
        Verdict::SyntaxError(err) => Some(format!("{name}: the record does not parse: {err}")),
        Verdict::Revoked => Some(format!("{name} has an empty p=: the key is revoked")),
        Verdict::AlgorithmMismatch { published } => {
            Some(format!("{name} has k={published} but {origin} is {kind}"))
        }
        Verdict::HashNotAllowed { published } => Some(format!(
            "{name} has h={} but we sign with sha256",
            published.join(":")
        )),
        Verdict::ServiceNotEmail { published } => Some(format!(
            "{name} has s={}, which does not allow e-mail",
            published.join(":")
        )),
    };
    if let Some(fault) = fault {
        return Check::fail(CheckId::Dkim, fault, replace());
    }
    if let Some(bits) = key.rsa_bits()
        && bits < SMALLEST_RSA_BITS
    {
        return Check::fail(
            CheckId::Dkim,
            format!("{name} publishes {kind}: verifiers refuse RSA keys under 1024 bits"),
            Fix::words(format!(
                "make a 2048-bit key (dkim-sidecar keygen -b 2048 -d {domain} -s NEWSELECTOR) \
                 and switch to it (dkim-sidecar rotate does it without downtime)"
            )),
        );
    }
    if parsed.flags.iter().any(|f| f == "s")
        && let Some(signer) = input.signers.iter().find(|i| {
            !i.rsplit('@')
                .next()
                .unwrap_or("")
                .eq_ignore_ascii_case(domain)
        })
    {
        return Check::fail(
            CheckId::Dkim,
            format!(
                "{name} has t=s, but the SigningTable signs with i={signer}, a subdomain: \
                 verifiers reject those signatures"
            ),
            replace(),
        );
    }
    let mut warnings = Vec::new();
    if parsed.flags.iter().any(|f| f == "y") {
        warnings.push("t=y is still set: receivers treat failures as testing".to_string());
    }
    if let Some(bits) = key.rsa_bits()
        && bits < RECOMMENDED_RSA_BITS
    {
        warnings.push(format!(
            "{kind}: use 2048 bits (dkim-sidecar keygen -b 2048, then rotate)"
        ));
    }
    if whitespace_in_p(text) {
        warnings.push(
            "p= has whitespace inside the base64 (the value was split with spaces); \
             RFC 6376 allows it but some verifiers fail on it"
                .to_string(),
        );
    }
    let mut check = Check::ok(
        CheckId::Dkim,
        format!("{name} publishes the public key of {origin} ({kind})"),
    );
    if !warnings.is_empty() {
        check.status = Status::Warn;
        check.message = format!("{name}: {}", warnings.join("; "));
        check.fix = Some(replace());
    }
    check
}

/// Whether the `p=` value of `text` has white space inside it.
fn whitespace_in_p(text: &str) -> bool {
    text.split(';').any(|spec| {
        spec.trim()
            .strip_prefix("p=")
            .or_else(|| {
                let (tag, value) = spec.split_once('=')?;
                (tag.trim() == "p").then_some(value)
            })
            .is_some_and(|value| value.trim().contains(char::is_whitespace))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_inside_p_is_seen_but_not_around_it() {
        assert!(whitespace_in_p("v=DKIM1; p=MIIB AQAB"));
        assert!(!whitespace_in_p("v=DKIM1; p= MIIBAQAB "));
        assert!(!whitespace_in_p("v=DKIM1; k=rsa; p=MIIBAQAB"));
    }

    #[test]
    fn quotes_typed_into_a_form_are_named() {
        let fault = published_form_fault("\"v=DKIM1; p=AAEC\"").unwrap();
        assert!(fault.contains("stray `\"`"), "{fault}");
    }
}
