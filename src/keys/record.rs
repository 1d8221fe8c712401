//! The DKIM key record (RFC 6376 section 3.6.1): writing it in
//! opendkim-genkey's zone-file layout, reading it back from such a file or
//! from a bare `v=DKIM1; ...` string, and parsing its tags.
//!
//! Hand-written because no crate does either part as needed: the layout must
//! match opendkim-genkey byte for byte (scripts parse it), and mail-auth's
//! record parser does not say which tag is wrong, which is what `testkey`
//! must tell the administrator. Nothing here touches private keys.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::KeyType;

/// Length of each quoted chunk of `p=` in the zone file, as opendkim-genkey
/// writes it (DNS strings hold at most 255 bytes).
const CHUNK: usize = 250;

/// The optional tags opendkim-genkey can put in the record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordOptions {
    /// `-h`: `h=` (colon-separated hash algorithms); Debian's default is `sha256`.
    pub hash_algorithms: Option<String>,
    /// `-n`: `n=` note.
    pub note: Option<String>,
    /// `-r`: `s=email`.
    pub restrict_to_email: bool,
    /// `-S`: `t=s` (no subdomains).
    pub no_subdomains: bool,
    /// `-t`: `t=y` (testing).
    pub testing: bool,
}

impl RecordOptions {
    /// The tags between `v=DKIM1;` and `p=`, exactly as opendkim-genkey
    /// writes them inside the first quoted string (where `n=` carries
    /// zone-file escaped quotes), e.g. ` h=sha256; k=rsa; t=s; `.
    fn zone_tags(&self, key_type: KeyType) -> String {
        let mut flags = String::new();
        if self.testing {
            flags.push_str("t=y;");
        }
        if self.no_subdomains {
            flags = if flags == "t=y;" { "t=y:s;" } else { "t=s;" }.to_string();
        }
        if self.restrict_to_email {
            if !flags.is_empty() {
                flags.push(' ');
            }
            flags.push_str("s=email;");
        }
        if !flags.is_empty() {
            flags.push(' ');
        }
        let note = self
            .note
            .as_ref()
            .map(|n| format!(" n=\\\"{n}\\\";"))
            .unwrap_or_default();
        let hashes = self
            .hash_algorithms
            .as_ref()
            .map(|h| format!(" h={h};"))
            .unwrap_or_default();
        format!("{note}{hashes} k={}; {flags}", key_type.k_tag())
    }
}

/// `SELECTOR._domainkey.DOMAIN`, the name the record is published at.
pub fn record_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

/// The key record among the TXT records found at its name, each read as
/// its strings joined: the first that starts `v=DKIM1`, else the first
/// record (a `v=` tag is optional, RFC 6376 section 3.6.1).
pub fn key_record_among<'a>(
    records: impl IntoIterator<Item = &'a hickory_proto::rr::rdata::TXT>,
) -> Option<String> {
    let texts: Vec<String> = records
        .into_iter()
        .map(|txt| {
            txt.txt_data
                .iter()
                .map(|part| String::from_utf8_lossy(part))
                .collect()
        })
        .collect();
    let chosen = texts
        .iter()
        .position(|text| text.trim_start().starts_with("v=DKIM1"))
        .unwrap_or(0);
    texts.into_iter().nth(chosen)
}

/// The record's text as DNS carries it (all strings joined), e.g.
/// `v=DKIM1; h=sha256; k=rsa; p=MIIB...`.
pub fn record_text(key_type: KeyType, public_key_base64: &str, options: &RecordOptions) -> String {
    let tags = options.zone_tags(key_type).replace("\\\"", "\"");
    format!("v=DKIM1;{tags}p={public_key_base64}")
}

/// The `SELECTOR.txt` file, in opendkim-genkey's layout: TAB separators, the
/// key in quoted chunks of 250 characters on continuation lines that start
/// with a TAB and two spaces, and a comment naming selector and domain.
/// `append_domain` (`-a`) writes the name as `SELECTOR._domainkey.DOMAIN.`.
pub fn zone_file(
    selector: &str,
    domain: &str,
    append_domain: bool,
    key_type: KeyType,
    public_key_base64: &str,
    options: &RecordOptions,
) -> String {
    let name = if append_domain {
        format!("{selector}._domainkey.{domain}.")
    } else {
        format!("{selector}._domainkey")
    };
    let mut out = format!(
        "{name}\tIN\tTXT\t( \"v=DKIM1;{}\"\n\t  \"p=",
        options.zone_tags(key_type)
    );
    let mut rest = public_key_base64;
    while !rest.is_empty() {
        if rest.len() < CHUNK {
            out.push_str(rest);
            rest = "";
        } else {
            let (chunk, tail) = rest.split_at(CHUNK);
            out.push_str(chunk);
            out.push_str("\"\n\t  \"");
            rest = tail;
        }
    }
    out.push_str("\" ) ");
    if !domain.is_empty() {
        out.push_str(&format!(" ; ----- DKIM key {selector} for {domain}"));
    }
    out.push('\n');
    out
}

/// The record's text from what an administrator has: a zone file entry
/// (keygen's or opendkim-genkey's `.txt`: the quoted strings are joined, the
/// rest ignored) or the bare text (`v=DKIM1; k=rsa; p=...`, as dkimpy's
/// `.dns` file holds it).
pub fn text_from_file_contents(contents: &str) -> String {
    if !contents.contains('"') {
        return contents.trim().to_string();
    }
    let mut text = String::new();
    let mut chars = contents.chars();
    let mut quoted = false;
    let mut comment = false;
    while let Some(c) = chars.next() {
        if comment {
            comment = c != '\n';
            continue;
        }
        match (quoted, c) {
            (false, ';') => comment = true,
            (_, '"') => quoted = !quoted,
            (true, '\\') => {
                // RFC 1035 5.1: \X is X, \DDD is the byte DDD.
                let Some(next) = chars.next() else { break };
                if next.is_ascii_digit() {
                    let digits: String = std::iter::once(next)
                        .chain(chars.by_ref().take(2))
                        .collect();
                    if let Ok(byte) = digits.parse::<u8>() {
                        text.push(char::from(byte));
                    }
                } else {
                    text.push(next);
                }
            }
            (true, c) => text.push(c),
            (false, _) => {}
        }
    }
    text
}

/// A parsed DKIM key record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// `k=`, lower-cased; `rsa` when absent.
    pub key_type: String,
    /// `h=`; `None` when absent (all hash algorithms allowed).
    pub hash_algorithms: Option<Vec<String>>,
    /// `s=`; `None` when absent (`*`).
    pub services: Option<Vec<String>>,
    /// `t=` flags.
    pub flags: Vec<String>,
    /// Decoded `p=`; empty when the key is revoked.
    pub public_key: Vec<u8>,
}

impl KeyRecord {
    pub fn is_revoked(&self) -> bool {
        self.public_key.is_empty()
    }
}

/// Which tag of a record is wrong, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tag {tag}=: {problem}")]
pub struct RecordSyntaxError {
    pub tag: String,
    pub problem: String,
}

fn syntax(tag: &str, problem: impl Into<String>) -> RecordSyntaxError {
    RecordSyntaxError {
        tag: tag.to_string(),
        problem: problem.into(),
    }
}

/// Parses the record text (RFC 6376 3.2 tag-list, 3.6.1 tags). Unknown tags
/// are ignored, as the RFC requires.
pub fn parse_record(text: &str) -> Result<KeyRecord, RecordSyntaxError> {
    let mut seen = HashSet::new();
    let mut record = KeyRecord {
        key_type: "rsa".to_string(),
        hash_algorithms: None,
        services: None,
        flags: Vec::new(),
        public_key: Vec::new(),
    };
    let mut public_key = None;
    let list = |value: &str| -> Vec<String> {
        value
            .split(':')
            .map(|item| item.trim().to_ascii_lowercase())
            .filter(|item| !item.is_empty())
            .collect()
    };
    for (index, spec) in text.split(';').enumerate() {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        let Some((tag, value)) = spec.split_once('=') else {
            return Err(syntax(spec, "has no '=' (tags are written name=value)"));
        };
        let (tag, value) = (tag.trim(), value.trim());
        if let Some(next) = comma_separated_tag(value) {
            return Err(syntax(
                tag,
                format!("is followed by `,{next}=`: separate tags with `;`, not `,`"),
            ));
        }
        let valid_name = tag.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(syntax(tag, "is not a valid tag name"));
        }
        if !seen.insert(tag.to_string()) {
            return Err(syntax(tag, "appears more than once"));
        }
        match tag {
            "v" => {
                if index != 0 {
                    return Err(syntax("v", "must be the first tag"));
                }
                if value != "DKIM1" {
                    return Err(syntax("v", format!("is \"{value}\", must be DKIM1")));
                }
            }
            "k" => {
                if value.is_empty() {
                    return Err(syntax("k", "is empty (use rsa or ed25519)"));
                }
                record.key_type = value.to_ascii_lowercase();
            }
            "h" => record.hash_algorithms = Some(list(value)),
            "s" => record.services = Some(list(value)),
            "t" => record.flags = list(value),
            "p" => {
                let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
                let decoded = STANDARD
                    .decode(compact.as_bytes())
                    .map_err(|err| syntax("p", format!("is not valid base64 ({err})")))?;
                public_key = Some(decoded);
            }
            _ => {}
        }
    }
    match public_key {
        Some(p) => record.public_key = p,
        None => return Err(syntax("p", "is missing (every key record needs p=)")),
    }
    Ok(record)
}

/// The name of a tag written after a `,` inside `value` (`DKIM1,k=rsa`
/// gives `k`): the record separates its tags with commas.
fn comma_separated_tag(value: &str) -> Option<&str> {
    value.split(',').skip(1).find_map(|after| {
        let (name, _) = after.trim_start().split_once('=')?;
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        valid.then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_record(text).unwrap_err().to_string()
    }

    #[test]
    fn the_key_record_is_the_txt_record_starting_v_dkim1_its_strings_joined() {
        use hickory_proto::rr::rdata::TXT;
        let other = TXT::new(vec!["google-site-verification=abc".to_string()]);
        let key = TXT::new(vec!["v=DKIM1; k=rsa; ".to_string(), "p=QUJD".to_string()]);
        assert_eq!(
            key_record_among([&other, &key]).as_deref(),
            Some("v=DKIM1; k=rsa; p=QUJD")
        );
        let bare = TXT::new(vec!["k=rsa; p=QUJD".to_string()]);
        assert_eq!(
            key_record_among([&bare, &other]).as_deref(),
            Some("k=rsa; p=QUJD")
        );
        assert_eq!(key_record_among([]), None);
    }

    #[test]
    fn parses_a_bare_record_with_defaults() {
        let record = parse_record("v=DKIM1; p=AAEC").unwrap();
        assert_eq!(record.key_type, "rsa");
        assert_eq!(record.public_key, vec![0, 1, 2]);
        assert_eq!(record.hash_algorithms, None);
        assert_eq!(record.services, None);
        assert!(record.flags.is_empty());
    }

    #[test]
    fn parses_lists_case_and_whitespace_inside_p() {
        let record =
            parse_record(" v=DKIM1 ;h=SHA1 : sha256; k=ED25519; s=email; t=y:s; p=AA EC ;")
                .unwrap();
        assert_eq!(record.key_type, "ed25519");
        assert_eq!(
            record.hash_algorithms,
            Some(vec!["sha1".to_string(), "sha256".to_string()])
        );
        assert_eq!(record.services, Some(vec!["email".to_string()]));
        assert_eq!(record.flags, vec!["y".to_string(), "s".to_string()]);
        assert_eq!(record.public_key, vec![0, 1, 2]);
    }

    #[test]
    fn empty_p_means_revoked() {
        assert!(parse_record("v=DKIM1; k=rsa; p=").unwrap().is_revoked());
    }

    #[test]
    fn ignores_unknown_tags() {
        assert!(parse_record("v=DKIM1; x_future=1; p=AAEC").is_ok());
    }

    #[test]
    fn reports_missing_p() {
        assert_eq!(
            err("v=DKIM1; k=rsa"),
            "tag p=: is missing (every key record needs p=)"
        );
    }

    #[test]
    fn reports_invalid_base64_in_p() {
        assert!(err("v=DKIM1; p=###").starts_with("tag p=: is not valid base64"));
    }

    #[test]
    fn reports_wrong_version_and_misplaced_version() {
        assert_eq!(
            err("v=DKIM2; p=AAEC"),
            "tag v=: is \"DKIM2\", must be DKIM1"
        );
        assert_eq!(
            err("k=rsa; v=DKIM1; p=AAEC"),
            "tag v=: must be the first tag"
        );
    }

    #[test]
    fn reports_commas_between_tags() {
        assert_eq!(
            err("v=DKIM1,k=rsa,p=AAEC"),
            "tag v=: is followed by `,k=`: separate tags with `;`, not `,`"
        );
        assert_eq!(
            err("v=DKIM1; k=rsa, p=AAEC"),
            "tag k=: is followed by `,p=`: separate tags with `;`, not `,`"
        );
    }

    #[test]
    fn reports_duplicate_tags() {
        assert_eq!(err("p=AAEC; p=AAEC"), "tag p=: appears more than once");
    }

    #[test]
    fn reports_tag_without_value_separator() {
        assert_eq!(
            err("v=DKIM1; rsa; p=AAEC"),
            "tag rsa=: has no '=' (tags are written name=value)"
        );
    }

    #[test]
    fn reports_invalid_tag_name_and_empty_key_type() {
        assert_eq!(err("1x=2; p=AAEC"), "tag 1x=: is not a valid tag name");
        assert_eq!(err("k=; p=AAEC"), "tag k=: is empty (use rsa or ed25519)");
    }

    #[test]
    fn reads_zone_file_strings_and_skips_name_and_comment() {
        let zone = "sel._domainkey\tIN\tTXT\t( \"v=DKIM1; n=\\\"hi\\\"; k=rsa; \"\n\t  \"p=AA\"\n\t  \"EC\" )  ; ----- \"DKIM\" key\n";
        assert_eq!(
            text_from_file_contents(zone),
            "v=DKIM1; n=\"hi\"; k=rsa; p=AAEC"
        );
    }

    #[test]
    fn zone_file_decimal_escapes_are_bytes() {
        assert_eq!(text_from_file_contents("\"a\\059b\""), "a;b");
    }

    #[test]
    fn bare_record_file_is_taken_as_is() {
        assert_eq!(
            text_from_file_contents("v=DKIM1; k=ed25519; p=AAEC\n"),
            "v=DKIM1; k=ed25519; p=AAEC"
        );
    }

    #[test]
    fn record_text_is_the_zone_file_strings_joined() {
        let options = RecordOptions {
            hash_algorithms: Some("sha256".into()),
            note: Some("rotated".into()),
            restrict_to_email: true,
            no_subdomains: true,
            testing: true,
        };
        let p = "A".repeat(600);
        let zone = zone_file("s", "example.com", false, KeyType::Rsa, &p, &options);
        assert_eq!(
            text_from_file_contents(&zone),
            record_text(KeyType::Rsa, &p, &options)
        );
        assert_eq!(record_name("s", "example.com"), "s._domainkey.example.com");
    }
}
