//! OpenSSL's view of a key, as the independent reference for what
//! keygen and testkey compute.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::command::run_ok;

/// OpenSSL's view of a private key's public half, as DER.
pub fn openssl_public_der(key: &Path) -> Vec<u8> {
    run_ok(
        "openssl",
        "openssl",
        &[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ],
        Path::new("/"),
    )
    .stdout
}

/// The p= value OpenSSL derives for an RSA key (SubjectPublicKeyInfo, as
/// opendkim-genkey publishes it).
pub fn openssl_rsa_p(key: &Path) -> String {
    STANDARD.encode(openssl_public_der(key))
}

/// The p= value for an Ed25519 key (RFC 8463: the raw 32-byte key, which is
/// the tail of OpenSSL's SubjectPublicKeyInfo).
pub fn openssl_ed25519_p(key: &Path) -> String {
    let der = openssl_public_der(key);
    STANDARD.encode(&der[der.len() - 32..])
}

/// The Ed25519 seed in dkimpy's format (base64 of 32 bytes), from OpenSSL.
pub fn openssl_ed25519_seed(key: &Path) -> String {
    let der = run_ok(
        "openssl",
        "openssl",
        &["pkey", "-in", key.to_str().unwrap(), "-outform", "DER"],
        Path::new("/"),
    )
    .stdout;
    STANDARD.encode(&der[der.len() - 32..])
}
