//! The fix for a check that is not ok: the exact records to publish, each
//! in zone-file form (one line a zone file or `nsupdate` takes as it is)
//! and as host / type / value for a DNS provider's web form.
//!
//! Hand-written because it is a few lines of RFC 1035 master-file syntax
//! (quoting and 255-byte strings); the tests load every fix into a real
//! DNS server to prove it. This module never looks anything up.

use serde::Serialize;

/// TTL written in the zone-file form of a fix.
pub const FIX_TTL: u32 = 3600;

/// One DNS string holds at most this many bytes (RFC 1035 3.3).
pub const DNS_STRING_MAX: usize = 255;

/// What to do, and the records that do it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// The action in words ("replace the TXT record at ... with:").
    pub action: String,
    /// The records to publish; empty when the fix is not a record (a DNS
    /// server to repair, a key to rotate).
    pub records: Vec<FixRecord>,
}

impl Fix {
    /// A fix that is only words.
    pub fn words(action: impl Into<String>) -> Fix {
        Fix {
            action: action.into(),
            records: Vec::new(),
        }
    }

    /// `action`, then `records`.
    pub fn publish(action: impl Into<String>, records: Vec<FixRecord>) -> Fix {
        Fix {
            action: action.into(),
            records,
        }
    }
}

/// One record, in both forms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FixRecord {
    /// The owner name, absolute, without the trailing dot.
    pub name: String,
    /// The host field of a provider's form: the name relative to the
    /// domain checked (`@` for the domain itself), or the full name when
    /// it is outside that domain (a reverse zone).
    pub host: String,
    /// `TXT`, `A`, `AAAA`, `PTR`, `MX`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The value as a web form takes it (a TXT value unquoted and whole).
    pub value: String,
    /// The record as one zone-file line.
    pub zone: String,
}

impl FixRecord {
    /// A TXT record; `value` is split into strings of at most 255 bytes
    /// (verifiers join them without a separator).
    pub fn txt(name: &str, domain: &str, value: &str) -> FixRecord {
        let rdata = quoted_strings(value);
        FixRecord::new(name, domain, "TXT", value.to_string(), rdata)
    }

    /// A record whose value is a host name (`PTR`, `CNAME`) or an address
    /// (`A`, `AAAA`); a host name is written absolute in the zone form.
    pub fn simple(name: &str, domain: &str, kind: &str, value: &str) -> FixRecord {
        let rdata = match kind {
            "A" | "AAAA" => value.to_string(),
            _ => absolute(value),
        };
        FixRecord::new(name, domain, kind, value.to_string(), rdata)
    }

    /// An MX record with `preference`.
    pub fn mx(name: &str, domain: &str, preference: u16, exchange: &str) -> FixRecord {
        FixRecord::new(
            name,
            domain,
            "MX",
            format!("{preference} {exchange}"),
            format!("{preference} {}", absolute(exchange)),
        )
    }

    fn new(name: &str, domain: &str, kind: &str, value: String, rdata: String) -> FixRecord {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let host = if name == domain {
            "@".to_string()
        } else if let Some(relative) = name.strip_suffix(&format!(".{domain}")) {
            relative.to_string()
        } else {
            name.clone()
        };
        FixRecord {
            zone: format!("{}\t{FIX_TTL}\tIN\t{kind}\t{rdata}", absolute(&name)),
            name,
            host,
            kind: kind.to_string(),
            value,
        }
    }
}

/// `name` with one trailing dot.
fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// TXT rdata in master-file syntax: quoted strings of at most 255 bytes,
/// `"` and `\` escaped, bytes outside printable ASCII as `\DDD`.
pub fn quoted_strings(value: &str) -> String {
    let bytes = value.as_bytes();
    let chunks: Vec<&[u8]> = if bytes.is_empty() {
        vec![&[][..]]
    } else {
        bytes.chunks(DNS_STRING_MAX).collect()
    };
    chunks
        .iter()
        .map(|chunk| {
            let mut quoted = String::from("\"");
            for &byte in *chunk {
                match byte {
                    b'"' | b'\\' => {
                        quoted.push('\\');
                        quoted.push(char::from(byte));
                    }
                    0x20..=0x7e => quoted.push(char::from(byte)),
                    _ => quoted.push_str(&format!("\\{byte:03}")),
                }
            }
            quoted.push('"');
            quoted
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_txt_values_are_split_into_255_byte_strings() {
        let value = format!("v=DKIM1; p={}", "A".repeat(400));
        let record = FixRecord::txt("s._domainkey.example.com", "example.com", &value);
        assert_eq!(record.host, "s._domainkey");
        let rdata = record.zone.split('\t').nth(4).unwrap();
        let strings: Vec<&str> = rdata.split("\" \"").collect();
        assert_eq!(strings.len(), 2);
        assert_eq!(strings[0].len(), 1 + 255);
        assert!(
            record
                .zone
                .starts_with("s._domainkey.example.com.\t3600\tIN\tTXT\t\"v=DKIM1; p=AAA")
        );
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(quoted_strings("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn host_is_relative_to_the_domain_or_the_full_name() {
        assert_eq!(FixRecord::txt("example.com", "example.com", "x").host, "@");
        let ptr = FixRecord::simple(
            "10.2.0.192.in-addr.arpa",
            "example.com",
            "PTR",
            "mail.example.com",
        );
        assert_eq!(ptr.host, "10.2.0.192.in-addr.arpa");
        assert_eq!(
            ptr.zone,
            "10.2.0.192.in-addr.arpa.\t3600\tIN\tPTR\tmail.example.com."
        );
    }
}
