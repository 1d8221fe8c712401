//! Private keys: loading them for the signer, generating them (`keygen`), and
//! checking them against their published DNS record (`testkey`).
//!
//! The signer loads every key once, at start-up and on reload, through
//! [`load_key_file`] or [`KeySource::load`], and shares the resulting
//! [`PrivateKey`] behind an `Arc`; nothing here runs per message. Signing
//! itself happens inside mail-auth through aws-lc-rs (constant time), except
//! for RSA keys of 1024 to 2047 bits, which aws-lc-rs refuses to sign with
//! and which many OpenDKIM installations still use: those sign through
//! OpenSSL (also constant time). The pure-Rust `rsa` crate is used only to
//! generate key sizes aws-lc-rs cannot generate, never to sign: it is not
//! constant time (RUSTSEC-2023-0071).
//!
//! This module must never log, print or put key material into an error or a
//! `Debug` output: errors name files, modes, users and sizes only, and the
//! bytes read from disk are zeroized once parsed.
//!
//! Copies of the secret, and which are wiped: the file's bytes, the PEM
//! text, the decoded DER and an Ed25519 seed live in [`Zeroizing`] buffers
//! (here and in `material`), as does an inline KeyTable key
//! ([`KeySource::Inline`]). What we cannot wipe ourselves is the signer's
//! own copy, held by a third-party crate for as long as the
//! [`PrivateKey`] lives: aws-lc-rs's key pair (an AWS-LC `RSA` or Ed25519
//! key; AWS-LC's `OPENSSL_free` cleanses memory before freeing it) and,
//! for 1024- to 2047-bit RSA keys, OpenSSL's `PKey` (OpenSSL frees the
//! private numbers with `BN_clear_free`). Neither crate exposes a way to
//! zeroize, and we have not audited their internals beyond that. Signing
//! itself copies nothing secret. Keygen's freshly generated keys go
//! through the same libraries and the `rsa` crate (whose private key
//! zeroizes on drop).

pub mod error;
pub mod generate;
mod material;
pub mod record;
mod safety;
pub mod testkey;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mail_auth::common::crypto::{Algorithm, DkimKey, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::Writable;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer};
use zeroize::Zeroizing;

use crate::diagnostics::{Location, Warning};
pub use error::{Exposure, ExposureKind, KeyError, KeyOrigin, UserName};
use material::{KeyMaterial, Secret};

/// Largest key file we read; an 8192-bit RSA key in PEM is under 7 KB.
pub const MAX_KEY_FILE_SIZE: u64 = 64 * 1024;

/// OpenDKIM's MinimumKeyBits default.
pub const DEFAULT_MINIMUM_KEY_BITS: u32 = 1024;

/// The key algorithm, as DKIM names it in the record's `k=` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    Rsa,
    Ed25519,
}

impl KeyType {
    /// The record's `k=` value.
    pub fn k_tag(self) -> &'static str {
        match self {
            KeyType::Rsa => "rsa",
            KeyType::Ed25519 => "ed25519",
        }
    }

    /// The signature algorithm (`a=`) this key signs with.
    pub fn algorithm(self) -> Algorithm {
        match self {
            KeyType::Rsa => Algorithm::RsaSha256,
            KeyType::Ed25519 => Algorithm::Ed25519Sha256,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.k_tag())
    }
}

/// A loaded signing key: the mail-auth key that signs, and what the DNS
/// record must publish for it. `Send + Sync`; share it with `Arc`.
pub struct PrivateKey {
    engine: Engine,
    key_type: KeyType,
    rsa_bits: Option<u32>,
    public_key: Vec<u8>,
}

/// What performs the private-key operation.
enum Engine {
    /// aws-lc-rs, through mail-auth: RSA 2048 to 8192 bits, Ed25519.
    AwsLc(DkimKey),
    /// OpenSSL, for RSA keys aws-lc-rs will not sign with (1024 to 2047
    /// bits): RSASSA-PKCS1-v1_5 with SHA-256, as `rsa-sha256` requires.
    OpenSslRsa(PKey<Private>),
}

/// RSA sizes aws-lc-rs signs with; smaller ones go through OpenSSL.
const AWS_LC_RSA_BITS: std::ops::RangeInclusive<u32> = 2048..=8192;

/// RFC 8301: verifiers must not accept RSA keys under 1024 bits.
const SMALLEST_RSA_BITS: u32 = 1024;

impl PrivateKey {
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// `rsa-sha256` or `ed25519-sha256`.
    pub fn algorithm(&self) -> Algorithm {
        self.key_type.algorithm()
    }

    /// Modulus size of an RSA key; `None` for Ed25519.
    pub fn rsa_bits(&self) -> Option<u32> {
        self.rsa_bits
    }

    /// The public key as the record's `p=` carries it (before base64):
    /// SubjectPublicKeyInfo DER for RSA, the raw 32 bytes for Ed25519.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// The `p=` value.
    pub fn public_key_base64(&self) -> String {
        STANDARD.encode(&self.public_key)
    }

    /// Builds the signing key from decoded material, applying MinimumKeyBits
    /// and the signer's supported RSA sizes.
    fn from_material(
        material: KeyMaterial,
        origin: &KeyOrigin,
        minimum_key_bits: u32,
    ) -> Result<Self, KeyError> {
        let KeyMaterial {
            secret,
            key_type,
            rsa_bits,
            public_key,
        } = material;
        let rejected = |detail: String| KeyError::Malformed {
            origin: origin.clone(),
            format: key_type_label(key_type),
            detail,
        };
        let dkim = match secret {
            Secret::RsaPkcs1(der) => {
                let bits = rsa_bits.unwrap_or(0);
                if bits < minimum_key_bits {
                    return Err(KeyError::TooShort {
                        origin: origin.clone(),
                        bits,
                        minimum: minimum_key_bits,
                    });
                }
                if bits < SMALLEST_RSA_BITS || bits > *AWS_LC_RSA_BITS.end() {
                    return Err(KeyError::UnsupportedRsaSize {
                        origin: origin.clone(),
                        bits,
                    });
                }
                let (engine, signer_public) = if AWS_LC_RSA_BITS.contains(&bits) {
                    let key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(
                        PrivatePkcs1KeyDer::from(der.as_slice()),
                    ))
                    .map_err(|err| rejected(err.to_string()))?;
                    let public = key.public_key();
                    (Engine::AwsLc(DkimKey::Rsa(key)), public)
                } else {
                    let rsa = openssl::rsa::Rsa::private_key_from_der(der.as_slice())
                        .map_err(|err| rejected(err.to_string()))?;
                    let public = rsa
                        .public_key_to_der_pkcs1()
                        .map_err(|err| rejected(err.to_string()))?;
                    let key = PKey::from_rsa(rsa).map_err(|err| rejected(err.to_string()))?;
                    (Engine::OpenSslRsa(key), public)
                };
                // The signer's own view of the public key must be what we publish.
                if material::rsa_public_from_spki(&public_key).as_deref()
                    != Some(signer_public.as_slice())
                {
                    return Err(rejected(
                        "the public key derived by the signer differs from the file's".to_string(),
                    ));
                }
                engine
            }
            Secret::Ed25519Seed(seed) => Engine::AwsLc(DkimKey::Ed25519(
                Ed25519Key::from_seed_and_public_key(seed.as_slice(), &public_key)
                    .map_err(|err| rejected(err.to_string()))?,
            )),
        };
        Ok(PrivateKey {
            engine: dkim,
            key_type,
            rsa_bits,
            public_key,
        })
    }
}

fn key_type_label(key_type: KeyType) -> &'static str {
    match key_type {
        KeyType::Rsa => "RSA",
        KeyType::Ed25519 => "Ed25519",
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm().name())
            .field("rsa_bits", &self.rsa_bits)
            .field("public_key", &self.public_key_base64())
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl SigningKey for PrivateKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        match &self.engine {
            Engine::AwsLc(key) => key.sign(input),
            Engine::OpenSslRsa(key) => {
                let mut data = Vec::with_capacity(512);
                input.write(&mut data);
                let crypto_error = |err: openssl::error::ErrorStack| {
                    mail_auth::Error::Crypto(mail_auth::common::crypto::CryptoError::Library(
                        err.to_string(),
                    ))
                };
                let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), key)
                    .map_err(crypto_error)?;
                signer
                    .set_rsa_padding(openssl::rsa::Padding::PKCS1)
                    .map_err(crypto_error)?;
                signer.sign_oneshot_to_vec(&data).map_err(crypto_error)
            }
        }
    }

    fn algorithm(&self) -> Algorithm {
        self.key_type.algorithm()
    }
}

/// Lets `DkimSigner::from_key(&*arc)` borrow a shared key.
impl SigningKey for &PrivateKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        (*self).sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.key_type.algorithm()
    }
}

/// OpenDKIM's key loading settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// MinimumKeyBits: shorter RSA keys are refused.
    pub minimum_key_bits: u32,
    /// RequireSafeKeys: an exposed key file is an error (`true`) or a warning.
    pub require_safe_keys: bool,
    /// The uid the signer runs as (after dropping privileges); key files and
    /// their directories must belong to it or to root. `None` skips the
    /// ownership rules but still checks permission bits.
    pub signer_uid: Option<u32>,
}

impl Default for LoadOptions {
    /// OpenDKIM's defaults, for the user running this process.
    fn default() -> Self {
        LoadOptions {
            minimum_key_bits: DEFAULT_MINIMUM_KEY_BITS,
            require_safe_keys: true,
            signer_uid: Some(nix::unistd::geteuid().as_raw()),
        }
    }
}

/// A key ready to sign with, and what the administrator should hear about it.
#[derive(Debug)]
pub struct LoadedKey {
    pub key: Arc<PrivateKey>,
    /// Problems that did not stop loading (an exposed key file when
    /// RequireSafeKeys is off).
    pub warnings: Vec<Warning>,
}

/// Where a KeyTable entry's third field says the key is.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    /// The key data itself (PEM or base64).
    Inline(Zeroizing<String>),
}

impl KeySource {
    /// OpenDKIM's rule (`dkimf_loadkey`): a value starting with `/`, `./` or
    /// `../` is a file; anything else is the key itself. `%` must already be
    /// replaced by the domain.
    pub fn from_keytable_value(value: &str) -> KeySource {
        if value.starts_with('/') || value.starts_with("./") || value.starts_with("../") {
            KeySource::File(PathBuf::from(value))
        } else {
            KeySource::Inline(Zeroizing::new(value.to_string()))
        }
    }

    /// Loads the key; `at` is the KeyTable line, used to name inline keys in errors.
    pub fn load(
        &self,
        at: Option<&Location>,
        options: &LoadOptions,
    ) -> Result<LoadedKey, KeyError> {
        match self {
            KeySource::File(path) => load_key_file(path, options),
            KeySource::Inline(data) => Ok(LoadedKey {
                key: Arc::new(load_inline_key(data, at.cloned(), options)?),
                warnings: Vec::new(),
            }),
        }
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(path) => f.debug_tuple("File").field(path).finish(),
            KeySource::Inline(_) => f.write_str("Inline(<redacted>)"),
        }
    }
}

/// Loads key data written inline (a KeyTable entry holding the key itself).
pub fn load_inline_key(
    data: &str,
    at: Option<Location>,
    options: &LoadOptions,
) -> Result<PrivateKey, KeyError> {
    let origin = KeyOrigin::Inline(at);
    let material = material::decode(data.as_bytes(), &origin)?;
    PrivateKey::from_material(material, &origin, options.minimum_key_bits)
}

/// Loads a key file: checks it is safe (RequireSafeKeys), reads it, decodes
/// it and builds the signing key.
pub fn load_key_file(path: &Path, options: &LoadOptions) -> Result<LoadedKey, KeyError> {
    let (material, warnings) = read_key_file(path, options)?;
    let key = PrivateKey::from_material(
        material,
        &KeyOrigin::File(path.to_path_buf()),
        options.minimum_key_bits,
    )?;
    Ok(LoadedKey {
        key: Arc::new(key),
        warnings,
    })
}

/// Opens, checks and decodes a key file without building the signing key.
fn read_key_file(
    path: &Path,
    options: &LoadOptions,
) -> Result<(KeyMaterial, Vec<Warning>), KeyError> {
    let mut file = open_key_file(path, options)?;
    let unreadable = |source: io::Error| KeyError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let meta = file.metadata().map_err(unreadable)?;
    let file_type = meta.file_type();
    if !file_type.is_file() {
        let kind = if file_type.is_dir() {
            "directory"
        } else if file_type.is_fifo() {
            "named pipe"
        } else if file_type.is_socket() {
            "socket"
        } else {
            "device"
        };
        return Err(KeyError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    if meta.len() > MAX_KEY_FILE_SIZE {
        return Err(KeyError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit: MAX_KEY_FILE_SIZE,
        });
    }

    let mut warnings = Vec::new();
    if let Some(exposure) = safety::check(path, &meta, options.signer_uid).map_err(unreadable)? {
        if options.require_safe_keys {
            return Err(KeyError::Unsafe {
                path: path.to_path_buf(),
                exposure: Box::new(exposure),
            });
        }
        warnings.push(Warning::new(
            None,
            KeyError::unsafe_warning(path, &exposure),
        ));
    }

    // Sized up front so reading never reallocates and leaves copies behind.
    let mut data = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    (&mut file)
        .take(MAX_KEY_FILE_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(unreadable)?;
    let material = material::decode(&data, &KeyOrigin::File(path.to_path_buf()))?;
    Ok((material, warnings))
}

fn open_key_file(path: &Path, options: &LoadOptions) -> Result<File, KeyError> {
    // O_NONBLOCK: a FIFO in place of the key must not hang start-up; it is
    // refused as "not a key file" right after.
    File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => KeyError::NotFound {
                path: path.to_path_buf(),
            },
            io::ErrorKind::PermissionDenied => {
                let reader = nix::unistd::geteuid().as_raw();
                KeyError::PermissionDenied {
                    path: path.to_path_buf(),
                    reader: UserName::from_uid(reader),
                    owner: UserName::from_uid(options.signer_uid.unwrap_or(reader)),
                }
            }
            _ => KeyError::Unreadable {
                path: path.to_path_buf(),
                source,
            },
        })
}
