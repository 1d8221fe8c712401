//! A DKIM key record from DNS, checked against the signature that names
//! it (RFC 6376 sections 3.6.1 and 6.1.2, RFC 8463).
//!
//! The tags are read by [`crate::keys::record::parse_record`] (strict: a
//! repeated tag, `v=` not first or not `DKIM1`, bad base64 are errors);
//! the public key itself becomes mail-auth's verifying key, and its size
//! is read from the DER here; a record read once is kept (by its text) for
//! the next message. This module never looks anything up and never
//! verifies a signature.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mail_auth::common::crypto::{Algorithm, VerifyingKey};
use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::common::verify::DomainKey;

use super::Problem;
use crate::keys::record::{KeyRecord, parse_record};

/// A usable public key for one signature.
pub struct Key {
    pub verifying: Arc<dyn VerifyingKey + Send + Sync>,
    /// RSA modulus size; `None` for Ed25519.
    pub bits: Option<u32>,
    /// `t=y`: the domain is testing DKIM.
    pub testing: bool,
}

/// A key record read once: its tags and, unless revoked, its key.
struct ParsedRecord {
    record: KeyRecord,
    key: Result<(Arc<dyn VerifyingKey + Send + Sync>, Option<u32>), Problem>,
}

/// Records read lately, by their text: a busy verifier sees the same few
/// keys over and over, and reading one (two base64 decodings, the DER)
/// costs more than the rest of a verification but the RSA operation.
/// Bounded; when full it starts over.
const PARSED_KEPT: usize = 1024;

fn parsed(txt: &[u8]) -> Result<Arc<ParsedRecord>, Problem> {
    static PARSED: Mutex<Option<HashMap<Vec<u8>, Arc<ParsedRecord>>>> = Mutex::new(None);
    if let Some(hit) = PARSED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .and_then(|m| m.get(txt).cloned())
    {
        return Ok(hit);
    }
    let text = std::str::from_utf8(txt).map_err(|_| Problem::KeySyntax)?;
    let record = parse_record(text).map_err(|e| {
        if e.tag == "v" {
            Problem::KeyVersion
        } else {
            Problem::KeySyntax
        }
    })?;
    let key = if record.is_revoked() {
        Err(Problem::Revoked)
    } else {
        match record.key_type.as_str() {
            "rsa" => rsa_bits(&record)
                .ok_or(Problem::KeyDecode)
                .and_then(|bits| {
                    DomainKey::parse(txt)
                        .map(|k| (Arc::from(k.p), Some(bits)))
                        .map_err(|_| Problem::KeyDecode)
                }),
            "ed25519" if record.public_key.len() == 32 => DomainKey::parse(txt)
                .map(|k| (Arc::from(k.p), None))
                .map_err(|_| Problem::KeyDecode),
            "ed25519" => Err(Problem::KeyDecode),
            _ => Err(Problem::KeyTypeUnknown),
        }
    };
    let parsed = Arc::new(ParsedRecord { record, key });
    let mut cache = PARSED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let map = cache.get_or_insert_with(HashMap::new);
    if map.len() >= PARSED_KEPT {
        map.clear();
    }
    map.insert(txt.to_vec(), Arc::clone(&parsed));
    Ok(parsed)
}

/// Reads `txt` (one TXT record, its strings joined) as the key for a
/// signature with algorithm `algorithm`, signing identity domain
/// `auid_domain` (the domain part of `i=`, or `d=`) and signing domain
/// `domain`.
pub fn key_for(
    txt: &[u8],
    algorithm: Algorithm,
    domain: &str,
    auid_domain: &str,
) -> Result<Key, Problem> {
    let parsed = parsed(txt)?;
    let record = &parsed.record;
    let wants = match algorithm {
        Algorithm::Ed25519Sha256 => "ed25519",
        Algorithm::RsaSha256 | Algorithm::RsaSha1 => "rsa",
    };
    if record.key_type != "rsa" && record.key_type != "ed25519" {
        return Err(Problem::KeyTypeUnknown);
    }
    if record.key_type != wants {
        return Err(Problem::KeyTypeMismatch);
    }
    if let Some(hashes) = &record.hash_algorithms
        && !hashes.iter().any(|h| h == "sha256")
    {
        return Err(Problem::KeyHashMismatch);
    }
    if let Some(services) = &record.services
        && !services.iter().any(|s| s == "*" || s == "email")
    {
        return Err(Problem::NotEmailKey);
    }
    if record.flags.iter().any(|f| f == "s") && !auid_domain.eq_ignore_ascii_case(domain) {
        return Err(Problem::Subdomain);
    }
    let (verifying, bits) = parsed.key.clone()?;
    Ok(Key {
        verifying,
        bits,
        testing: record.flags.iter().any(|f| f == "y"),
    })
}

/// The modulus size of an RSA `p=`: a SubjectPublicKeyInfo (as
/// opendkim-genkey publishes it) or a bare RSAPublicKey.
fn rsa_bits(record: &KeyRecord) -> Option<u32> {
    use pkcs1::der::Decode as _;
    let p = &record.public_key;
    let bare = match spki::SubjectPublicKeyInfoRef::from_der(p) {
        Ok(info) if info.algorithm.oid == pkcs1::ALGORITHM_OID => {
            info.subject_public_key.as_bytes()?.to_vec()
        }
        Ok(_) => return None,
        Err(_) => p.clone(),
    };
    let key = pkcs1::RsaPublicKey::from_der(&bare).ok()?;
    let modulus = key.modulus.as_bytes();
    let first = modulus.iter().position(|&b| b != 0)?;
    Some((modulus.len() - first) as u32 * 8 - modulus[first].leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn example_p() -> String {
        let txt = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("keys-example/default.txt"),
        )
        .unwrap();
        let joined: String = txt.split('"').skip(1).step_by(2).collect();
        joined
            .split("p=")
            .nth(1)
            .unwrap()
            .trim_end_matches(';')
            .to_string()
    }

    fn rsa(record: &str) -> Result<Key, Problem> {
        key_for(
            record.as_bytes(),
            Algorithm::RsaSha256,
            "example.com",
            "example.com",
        )
    }

    #[test]
    fn the_example_key_is_2048_bits() {
        let key = rsa(&format!("v=DKIM1; k=rsa; p={}", example_p())).unwrap();
        assert_eq!(key.bits, Some(2048));
        assert!(!key.testing);
    }

    #[test]
    fn record_problems_are_permanent_and_named() {
        let p = example_p();
        assert_eq!(rsa("v=DKIM1; p=").err(), Some(Problem::Revoked));
        assert_eq!(
            rsa(&format!("v=DKIM2; p={p}")).err(),
            Some(Problem::KeyVersion)
        );
        assert_eq!(
            rsa(&format!("k=rsa; v=DKIM1; p={p}")).err(),
            Some(Problem::KeyVersion)
        );
        assert_eq!(
            rsa(&format!("k=dsa; p={p}")).err(),
            Some(Problem::KeyTypeUnknown)
        );
        assert_eq!(
            rsa(&format!("k=ed25519; p={p}")).err(),
            Some(Problem::KeyTypeMismatch)
        );
        assert_eq!(
            rsa(&format!("h=sha1; p={p}")).err(),
            Some(Problem::KeyHashMismatch)
        );
        assert_eq!(
            rsa(&format!("s=web; p={p}")).err(),
            Some(Problem::NotEmailKey)
        );
        assert_eq!(
            rsa(&format!("p={p}; p={p}")).err(),
            Some(Problem::KeySyntax)
        );
        assert_eq!(rsa("v=DKIM1; k=rsa").err(), Some(Problem::KeySyntax));
        assert_eq!(rsa("v=DKIM1; p=AAAA").err(), Some(Problem::KeyDecode));
        assert_eq!(rsa("garbage").err(), Some(Problem::KeySyntax));
        assert_eq!(
            key_for(b"\xff", Algorithm::RsaSha256, "a", "a").err(),
            Some(Problem::KeySyntax)
        );
        // t=s: only the signing domain itself may be in i=.
        let strict = format!("t=s; p={p}");
        assert!(rsa(&strict).is_ok());
        assert_eq!(
            key_for(
                strict.as_bytes(),
                Algorithm::RsaSha256,
                "example.com",
                "sub.example.com"
            )
            .err(),
            Some(Problem::Subdomain)
        );
        assert!(
            rsa(&format!("t=y; h=sha1:sha256; s=email; p={p}"))
                .unwrap()
                .testing
        );
    }

    #[test]
    fn ed25519_keys_are_32_bytes() {
        let p = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let record = format!("v=DKIM1; k=ed25519; p={p}");
        let key = key_for(record.as_bytes(), Algorithm::Ed25519Sha256, "a", "a").unwrap();
        assert_eq!(key.bits, None);
        let short = "v=DKIM1; k=ed25519; p=AAAA";
        assert_eq!(
            key_for(short.as_bytes(), Algorithm::Ed25519Sha256, "a", "a").err(),
            Some(Problem::KeyDecode)
        );
        // An RSA record for an Ed25519 signature.
        assert_eq!(
            key_for(
                format!("p={}", example_p()).as_bytes(),
                Algorithm::Ed25519Sha256,
                "a",
                "a"
            )
            .err(),
            Some(Problem::KeyTypeMismatch)
        );
    }
}
