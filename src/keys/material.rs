//! Recognising and decoding private key data: PEM (PKCS#8, PKCS#1), bare
//! base64 DER as a KeyTable may hold it, binary DER, and the base64 Ed25519
//! seed that dkimpy writes.
//!
//! Decoding here is structural only (ASN.1 parsing with the `pem`, `pkcs8`
//! and `pkcs1` crates): no arithmetic on secret numbers, so nothing here has
//! secret-dependent timing. Every buffer that held secret bytes is wrapped in
//! [`Zeroizing`] so it is wiped when dropped. Nothing here logs, and no error
//! quotes the input.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pkcs1::der::{Decode, Encode, asn1::OctetStringRef};
use zeroize::Zeroizing;

use super::KeyType;
use super::error::{KeyError, KeyOrigin};

/// OID of Ed25519 keys (RFC 8410).
const ED25519_OID: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.3.101.112");
/// OIDs of other key types, named in "cannot sign DKIM" messages.
const OTHER_ALGORITHMS: &[(&str, &str)] = &[
    ("1.2.840.10045.2.1", "EC (ECDSA)"),
    ("1.3.101.113", "Ed448"),
    ("1.3.101.110", "X25519"),
    ("1.3.101.111", "X448"),
    ("1.2.840.10040.4.1", "DSA"),
    ("1.2.840.113549.1.1.10", "RSA-PSS"),
];

/// The secret half, in the one form each algorithm is handed to the signer.
pub(crate) enum Secret {
    /// RSAPrivateKey DER (RFC 8017), whether it came as PKCS#1 or PKCS#8.
    RsaPkcs1(Zeroizing<Vec<u8>>),
    /// The 32-byte Ed25519 private key (RFC 8032 "seed").
    Ed25519Seed(Zeroizing<[u8; 32]>),
}

/// Decoded key data: the secret plus everything public about it.
pub(crate) struct KeyMaterial {
    pub(crate) secret: Secret,
    pub(crate) key_type: KeyType,
    pub(crate) rsa_bits: Option<u32>,
    /// What goes into the DNS record's p=: SubjectPublicKeyInfo DER for RSA
    /// (as `openssl rsa -pubout` and opendkim-genkey write it), the raw
    /// 32-byte key for Ed25519 (RFC 8463).
    pub(crate) public_key: Vec<u8>,
}

/// Decodes key data read from a file or a KeyTable entry.
pub(crate) fn decode(data: &[u8], origin: &KeyOrigin) -> Result<KeyMaterial, KeyError> {
    let unrecognized = |found: &str| KeyError::UnrecognizedFormat {
        origin: origin.clone(),
        found: found.to_string(),
    };

    // Binary DER (a SEQUENCE): `openssl pkey -outform DER` output. A 0x30
    // is also the character `0`, which base64 text (dkimpy's Ed25519 seed)
    // may start with, so data that does not parse as DER is read as text.
    if data.first() == Some(&0x30)
        && let Some(der) = decode_der(data, origin)
    {
        return der;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return Err(unrecognized(
            "binary data that is not a PKCS#1 or PKCS#8 key in DER",
        ));
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(unrecognized("the key data is empty"));
    }
    if text.contains("-----BEGIN") {
        return decode_pem(text, origin);
    }

    let compact: Zeroizing<String> = Zeroizing::new(
        text.chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect::<String>(),
    );
    let decoded = match STANDARD.decode(compact.as_bytes()) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(_) => {
            return Err(unrecognized(
                "text that is neither PEM nor base64; if this is a file path, \
                 start it with / or ./",
            ));
        }
    };
    if let Ok(seed) = <[u8; 32]>::try_from(decoded.as_slice()) {
        return ed25519_from_seed(Zeroizing::new(seed), None, origin);
    }
    decode_der(&decoded, origin).ok_or_else(|| {
        unrecognized(&format!(
            "base64 of {} bytes that is neither DER nor a 32-byte Ed25519 seed",
            decoded.len()
        ))
    })?
}

fn decode_pem(text: &str, origin: &KeyOrigin) -> Result<KeyMaterial, KeyError> {
    let block = pem::parse(text).map_err(|err| KeyError::Malformed {
        origin: origin.clone(),
        format: "PEM",
        detail: err.to_string(),
    })?;
    let encrypted = block
        .headers()
        .get("Proc-Type")
        .is_some_and(|v| v.contains("ENCRYPTED"));
    let tag = block.tag().to_string();
    let der = Zeroizing::new(block.into_contents());
    match tag.as_str() {
        _ if encrypted => Err(KeyError::Encrypted {
            origin: origin.clone(),
        }),
        "PRIVATE KEY" => decode_pkcs8(&der, origin),
        "RSA PRIVATE KEY" => decode_pkcs1(&der, origin),
        "ENCRYPTED PRIVATE KEY" => Err(KeyError::Encrypted {
            origin: origin.clone(),
        }),
        "EC PRIVATE KEY" => Err(KeyError::UnsupportedAlgorithm {
            origin: origin.clone(),
            algorithm: "EC (ECDSA)".to_string(),
        }),
        "DSA PRIVATE KEY" => Err(KeyError::UnsupportedAlgorithm {
            origin: origin.clone(),
            algorithm: "DSA".to_string(),
        }),
        "PUBLIC KEY" | "RSA PUBLIC KEY" => Err(KeyError::UnrecognizedFormat {
            origin: origin.clone(),
            found: "a public key; the signer needs the private key".to_string(),
        }),
        "OPENSSH PRIVATE KEY" => Err(KeyError::UnrecognizedFormat {
            origin: origin.clone(),
            found: "an OpenSSH key; convert it with ssh-keygen -p -m PKCS8 -f FILE".to_string(),
        }),
        other => Err(KeyError::UnrecognizedFormat {
            origin: origin.clone(),
            found: format!("a PEM \"{other}\" block"),
        }),
    }
}

/// DER of unknown kind: PKCS#8 first, then PKCS#1. `None` when it is neither.
fn decode_der(der: &[u8], origin: &KeyOrigin) -> Option<Result<KeyMaterial, KeyError>> {
    if pkcs8::PrivateKeyInfo::from_der(der).is_ok() {
        return Some(decode_pkcs8(der, origin));
    }
    if pkcs1::RsaPrivateKey::from_der(der).is_ok() {
        return Some(decode_pkcs1(der, origin));
    }
    None
}

fn decode_pkcs8(der: &[u8], origin: &KeyOrigin) -> Result<KeyMaterial, KeyError> {
    let info = pkcs8::PrivateKeyInfo::from_der(der).map_err(|err| KeyError::Malformed {
        origin: origin.clone(),
        format: "PKCS#8",
        detail: err.to_string(),
    })?;
    let oid = info.algorithm.oid;
    if oid == pkcs1::ALGORITHM_OID {
        decode_pkcs1(info.private_key, origin)
    } else if oid == ED25519_OID {
        let malformed = |detail: &str| KeyError::Malformed {
            origin: origin.clone(),
            format: "Ed25519 PKCS#8",
            detail: detail.to_string(),
        };
        let inner = OctetStringRef::from_der(info.private_key)
            .map_err(|_| malformed("the private key is not an OCTET STRING"))?;
        let seed = <[u8; 32]>::try_from(inner.as_bytes())
            .map_err(|_| malformed("the private key is not 32 bytes long"))?;
        ed25519_from_seed(Zeroizing::new(seed), info.public_key, origin)
    } else {
        let oid = oid.to_string();
        let algorithm = OTHER_ALGORITHMS
            .iter()
            .find(|(known, _)| *known == oid)
            .map_or_else(|| format!("OID {oid}"), |(_, name)| (*name).to_string());
        Err(KeyError::UnsupportedAlgorithm {
            origin: origin.clone(),
            algorithm,
        })
    }
}

fn decode_pkcs1(der: &[u8], origin: &KeyOrigin) -> Result<KeyMaterial, KeyError> {
    let malformed = |detail: String| KeyError::Malformed {
        origin: origin.clone(),
        format: "RSA",
        detail,
    };
    let key = pkcs1::RsaPrivateKey::from_der(der).map_err(|err| malformed(err.to_string()))?;
    if key.other_prime_infos.is_some() {
        return Err(malformed(
            "multi-prime RSA keys are not supported".to_string(),
        ));
    }
    let rsa_public = key
        .public_key()
        .to_der()
        .map_err(|err| malformed(err.to_string()))?;
    let bits = uint_bits(key.modulus.as_bytes());
    Ok(KeyMaterial {
        secret: Secret::RsaPkcs1(Zeroizing::new(der.to_vec())),
        key_type: KeyType::Rsa,
        rsa_bits: Some(bits),
        public_key: rsa_spki(&rsa_public).map_err(|err| malformed(err.to_string()))?,
    })
}

fn ed25519_from_seed(
    seed: Zeroizing<[u8; 32]>,
    stated_public: Option<&[u8]>,
    origin: &KeyOrigin,
) -> Result<KeyMaterial, KeyError> {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_slice()).map_err(|err| {
        KeyError::Malformed {
            origin: origin.clone(),
            format: "Ed25519",
            detail: err.to_string(),
        }
    })?;
    let public_key = pair.public_key().as_ref().to_vec();
    if let Some(stated) = stated_public {
        // PKCS#8 v2 may carry the public key as a BIT STRING's contents.
        if stated != public_key.as_slice() {
            return Err(KeyError::Malformed {
                origin: origin.clone(),
                format: "Ed25519 PKCS#8",
                detail: "the public key stored in the file does not belong to its private key"
                    .to_string(),
            });
        }
    }
    Ok(KeyMaterial {
        secret: Secret::Ed25519Seed(seed),
        key_type: KeyType::Ed25519,
        rsa_bits: None,
        public_key,
    })
}

/// Wraps an RSAPublicKey (PKCS#1) in a SubjectPublicKeyInfo, the form DKIM
/// records carry in p=.
pub(crate) fn rsa_spki(rsa_public_der: &[u8]) -> Result<Vec<u8>, pkcs1::der::Error> {
    let spki = spki::SubjectPublicKeyInfoRef {
        algorithm: pkcs1::ALGORITHM_ID,
        subject_public_key: spki::der::asn1::BitStringRef::from_bytes(rsa_public_der)?,
    };
    spki.to_der()
}

/// The RSAPublicKey (PKCS#1 DER) inside a p= value, which may be a
/// SubjectPublicKeyInfo (the standard form) or a bare RSAPublicKey (which
/// some publishers use and verifiers accept). Re-encoded, so that two
/// encodings of the same key compare equal.
pub(crate) fn rsa_public_from_record(p: &[u8]) -> Option<Vec<u8>> {
    let bare = match spki::SubjectPublicKeyInfoRef::from_der(p) {
        Ok(info) if info.algorithm.oid == pkcs1::ALGORITHM_OID => {
            info.subject_public_key.as_bytes()?.to_vec()
        }
        Ok(_) => return None,
        Err(_) => p.to_vec(),
    };
    pkcs1::RsaPublicKey::from_der(&bare).ok()?.to_der().ok()
}

/// The RSAPublicKey DER of an RSA key's SubjectPublicKeyInfo.
pub(crate) fn rsa_public_from_spki(spki_der: &[u8]) -> Option<Vec<u8>> {
    rsa_public_from_record(spki_der)
}

/// Bit length of an unsigned big-endian integer.
fn uint_bits(bytes: &[u8]) -> u32 {
    let Some(first) = bytes.iter().position(|&b| b != 0) else {
        return 0;
    };
    let significant = (bytes.len() - first) as u32;
    significant * 8 - bytes[first].leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_seed_starting_with_zero_is_not_taken_for_der() {
        // `0` is 0x30, DER's SEQUENCE tag: one dkimpy seed in 64 starts so.
        let seed = [0xd3u8; 32];
        let text = STANDARD.encode(seed);
        assert!(text.starts_with('0'), "{text}");
        let material = decode(text.as_bytes(), &KeyOrigin::Inline(None)).unwrap();
        assert!(matches!(material.secret, Secret::Ed25519Seed(_)));
    }

    #[test]
    fn uint_bits_counts_from_the_highest_set_bit() {
        assert_eq!(uint_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(uint_bits(&[0x01, 0x00]), 9);
        assert_eq!(uint_bits(&[0x00]), 0);
    }
}
