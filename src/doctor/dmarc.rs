//! The `dmarc` check: `_dmarc.D` holds one valid DMARC record (the tags of
//! RFC 9989, with RFC 7489's `pct`, `rf` and `ri` still accepted); `p=none`
//! warns; `rua` and `ruf` are well-formed `mailto:` URIs; and the `d=` we
//! sign with aligns with each From domain the SigningTable signs under
//! this record, under its `adkim`.
//!
//! The record is parsed here rather than with mail-auth's DMARC parser
//! because that one says only "invalid", and this check must name the tag
//! that is wrong. Relaxed alignment is judged without the Public Suffix
//! List: one domain must equal the other or be a subdomain of it, which
//! is what relaxed alignment means for names under one registered domain
//! (the common case); two names that only share a registered domain
//! further up are reported as not aligned. This module never changes DNS.

use super::fix::{Fix, FixRecord};
use super::lookup::Lookup;
use super::{Check, CheckId, DomainInput, SignedFrom};

/// A parsed DMARC record: what this check needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcRecord {
    pub policy: String,
    pub strict_dkim: bool,
    pub rua: Vec<String>,
    pub ruf: Vec<String>,
}

/// The `dmarc` check of a domain.
pub async fn check(lookup: &Lookup, domain: &DomainInput) -> Vec<Check> {
    vec![check_domain(lookup, domain).await]
}

/// The record doctor proposes when there is none or it is broken.
fn proposed(domain: &str) -> String {
    format!("v=DMARC1; p=quarantine; adkim=r; aspf=r; rua=mailto:postmaster@{domain}")
}

/// The DMARC records at `_dmarc.NAME` for `domain` and then each parent
/// with at least two labels (RFC 9989's tree walk, which stands in for
/// the organizational domain): the name where some were found, and them.
async fn find_records(
    lookup: &Lookup,
    domain: &str,
) -> Result<(String, Vec<String>), super::lookup::DnsProblem> {
    let mut current = domain;
    loop {
        let name = format!("_dmarc.{current}");
        let records: Vec<String> = lookup
            .txt(&name)
            .await?
            .into_records()
            .iter()
            .map(|strings| strings.iter().map(|s| String::from_utf8_lossy(s)).collect())
            .filter(|text: &String| {
                text.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("v=dmarc1")
            })
            .collect();
        let parent = current.split_once('.').map(|(_, p)| p);
        match parent {
            _ if !records.is_empty() => return Ok((name, records)),
            Some(parent) if parent.contains('.') => current = parent,
            _ => return Ok((format!("_dmarc.{domain}"), Vec::new())),
        }
    }
}

async fn check_domain(lookup: &Lookup, input: &DomainInput) -> Check {
    let domain = input.domain.as_str();
    let (name, records) = match find_records(lookup, domain).await {
        Ok(found) => found,
        Err(problem) => return Check::dns(CheckId::Dmarc, &problem),
    };
    let publish = |action: String, value: &str| {
        Fix::publish(action, vec![FixRecord::txt(&name, domain, value)])
    };
    let text = match records.as_slice() {
        [] => {
            return Check::fail(
                CheckId::Dmarc,
                format!("no DMARC record at {name}: large receivers require one of bulk senders"),
                publish(
                    format!(
                        "publish this TXT record at {name} (p=none first if you want to watch \
                         the reports before enforcing):"
                    ),
                    &proposed(domain),
                ),
            );
        }
        [one] => one.clone(),
        several => {
            return Check::fail(
                CheckId::Dmarc,
                format!(
                    "{} DMARC records at {name}: receivers ignore them all; keep one",
                    several.len()
                ),
                publish(
                    format!("replace all v=DMARC1 records at {name} with:"),
                    &proposed(domain),
                ),
            );
        }
    };
    let record = match parse(&text) {
        Ok(record) => record,
        Err(fault) => {
            return Check::fail(
                CheckId::Dmarc,
                format!("the DMARC record at {name} is invalid: {fault}"),
                publish(
                    format!("replace the TXT record at {name} with:"),
                    &proposed(domain),
                ),
            );
        }
    };
    let misaligned: Vec<&SignedFrom> = input
        .signed_from
        .iter()
        .filter(|signed| !aligned(&signed.d, &signed.from_domain, record.strict_dkim))
        .collect();
    if let Some(first) = misaligned.first() {
        let relaxed_would_do = record.strict_dkim
            && misaligned
                .iter()
                .all(|s| aligned(&s.d, &s.from_domain, false));
        let fix = if relaxed_would_do {
            publish(
                format!("replace the TXT record at {name} with (relaxed DKIM alignment):"),
                &with_tag(&text, "adkim", "r"),
            )
        } else {
            Fix::words(format!(
                "sign mail From {} with a key of d={} (a KeyTable entry {}:SELECTOR:KEYFILE \
                 and the SigningTable pointing at it)",
                first.from_domain, first.from_domain, first.from_domain
            ))
        };
        return Check::fail(
            CheckId::Dmarc,
            format!(
                "mail From {} is signed with d={}, which does not align under adkim={}: \
                 DKIM does not count for DMARC",
                first.from_domain,
                first.d,
                if record.strict_dkim { "s" } else { "r" }
            ),
            fix,
        );
    }
    if record.policy == "none" {
        return Check::warn(
            CheckId::Dmarc,
            format!("{name} has p=none: receivers only report, spoofed mail is delivered"),
            publish(
                format!(
                    "once the reports show only your own mail failing, replace the record at \
                     {name} with:"
                ),
                &with_tag(&text, "p", "quarantine"),
            ),
        );
    }
    Check::ok(CheckId::Dmarc, format!("{name}: {text}"))
}

/// Whether `d` aligns with `from` (strict: equal; relaxed: one is the
/// other or a subdomain of it).
pub fn aligned(d: &str, from: &str, strict: bool) -> bool {
    let d = d.trim_end_matches('.').to_ascii_lowercase();
    let from = from.trim_end_matches('.').to_ascii_lowercase();
    if d == from {
        return true;
    }
    !strict && (from.ends_with(&format!(".{d}")) || d.ends_with(&format!(".{from}")))
}

/// `text` with tag `tag` set to `value` (replaced, or added at the end).
fn with_tag(text: &str, tag: &str, value: &str) -> String {
    let mut specs: Vec<String> = text
        .split(';')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut found = false;
    for spec in &mut specs {
        if spec
            .split_once('=')
            .is_some_and(|(t, _)| t.trim().eq_ignore_ascii_case(tag))
        {
            *spec = format!("{tag}={value}");
            found = true;
        }
    }
    if !found {
        specs.push(format!("{tag}={value}"));
    }
    specs.join("; ")
}

/// Parses a DMARC record, naming the first fault.
pub fn parse(text: &str) -> Result<DmarcRecord, String> {
    let mut record = DmarcRecord {
        policy: String::new(),
        strict_dkim: false,
        rua: Vec::new(),
        ruf: Vec::new(),
    };
    let mut seen = Vec::new();
    for (index, spec) in text.split(';').enumerate() {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        let Some((tag, value)) = spec.split_once('=') else {
            return Err(format!("`{spec}` has no `=` (tags are written name=value)"));
        };
        let tag = tag.trim().to_ascii_lowercase();
        let value = value.trim();
        if value.contains(',') && !matches!(tag.as_str(), "rua" | "ruf") {
            return Err(format!("{tag}={value}: tags are separated by `;`, not `,`"));
        }
        if seen.contains(&tag) {
            return Err(format!("{tag}= appears more than once"));
        }
        seen.push(tag.clone());
        let one_of = |allowed: &[&str]| {
            if allowed.iter().any(|a| a.eq_ignore_ascii_case(value)) {
                Ok(value.to_ascii_lowercase())
            } else {
                Err(format!(
                    "{tag}={value}: must be one of {}",
                    allowed.join(", ")
                ))
            }
        };
        match tag.as_str() {
            "v" if index != 0 || value != "DMARC1" => {
                return Err("the record must start with v=DMARC1".to_string());
            }
            "p" => record.policy = one_of(&["none", "quarantine", "reject"])?,
            "sp" | "np" => {
                one_of(&["none", "quarantine", "reject"])?;
            }
            "adkim" => record.strict_dkim = one_of(&["r", "s"])? == "s",
            "aspf" => {
                one_of(&["r", "s"])?;
            }
            "t" => {
                one_of(&["y", "n"])?;
            }
            "psd" => {
                one_of(&["y", "n", "u"])?;
            }
            "fo" => {
                for option in value.split(':') {
                    if !["0", "1", "d", "s"].contains(&option.trim()) {
                        return Err(format!(
                            "fo={value}: options are 0, 1, d and s, separated by `:`"
                        ));
                    }
                }
            }
            "rua" => record.rua = report_uris(&tag, value)?,
            "ruf" => record.ruf = report_uris(&tag, value)?,
            "pct" => {
                let valid = value.parse::<u8>().is_ok_and(|n| n <= 100);
                if !valid {
                    return Err(format!("pct={value}: must be 0 to 100"));
                }
            }
            _ => {}
        }
    }
    if !seen.iter().any(|t| t == "v") {
        return Err("the record must start with v=DMARC1".to_string());
    }
    if record.policy.is_empty() {
        return Err("p= is missing (none, quarantine or reject)".to_string());
    }
    Ok(record)
}

/// `mailto:` URIs separated by commas, each with an optional `!SIZE`.
fn report_uris(tag: &str, value: &str) -> Result<Vec<String>, String> {
    let mut uris = Vec::new();
    for uri in value.split(',') {
        let uri = uri.trim();
        let address = uri
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("mailto:"))
            .map(|_| &uri[7..]);
        let Some(address) = address else {
            return Err(format!(
                "{tag}={value}: `{uri}` is not a mailto: URI (write mailto:reports@example.com)"
            ));
        };
        let (address, size) = match address.split_once('!') {
            Some((address, size)) => (address, Some(size)),
            None => (address, None),
        };
        let well_formed = address
            .split_once('@')
            .is_some_and(|(local, host)| !local.is_empty() && host.contains('.'))
            && !address.contains(char::is_whitespace);
        if !well_formed {
            return Err(format!(
                "{tag}={value}: `{address}` is not an e-mail address"
            ));
        }
        if let Some(size) = size {
            let digits = size.trim_end_matches(['k', 'm', 'g', 't', 'K', 'M', 'G', 'T']);
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "{tag}={value}: the size limit `!{size}` must be digits with an optional \
                     k, m, g or t"
                ));
            }
        }
        uris.push(uri.to_string());
    }
    Ok(uris)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_record_parses() {
        let record = parse(
            "v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=r; fo=1:d; \
             rua=mailto:a@example.com,mailto:b@example.net!10m; ruf=mailto:f@example.com; pct=100",
        )
        .unwrap();
        assert_eq!(record.policy, "reject");
        assert!(record.strict_dkim);
        assert_eq!(record.rua.len(), 2);
    }

    #[test]
    fn faults_are_named() {
        assert_eq!(
            parse("v=DMARC1; p=block").unwrap_err(),
            "p=block: must be one of none, quarantine, reject"
        );
        assert!(
            parse("v=DMARC1; p=none; rua=reports@example.com")
                .unwrap_err()
                .contains("is not a mailto: URI")
        );
        assert!(
            parse("v=DMARC1; p=none; rua=mailto:nobody")
                .unwrap_err()
                .contains("not an e-mail")
        );
        assert!(
            parse("p=none; v=DMARC1")
                .unwrap_err()
                .contains("start with v=DMARC1")
        );
        assert!(
            parse("v=DMARC1; adkim=r")
                .unwrap_err()
                .contains("p= is missing")
        );
    }

    #[test]
    fn alignment_follows_adkim() {
        assert!(aligned("example.com", "example.com", true));
        assert!(!aligned("example.com", "news.example.com", true));
        assert!(aligned("example.com", "news.example.com", false));
        assert!(!aligned("example.net", "example.com", false));
    }

    #[test]
    fn a_tag_is_replaced_or_added() {
        assert_eq!(
            with_tag("v=DMARC1; p=none; rua=mailto:a@b.c", "p", "quarantine"),
            "v=DMARC1; p=quarantine; rua=mailto:a@b.c"
        );
        assert_eq!(
            with_tag("v=DMARC1; p=none", "adkim", "r"),
            "v=DMARC1; p=none; adkim=r"
        );
    }
}
