//! `testkey`: does the published DKIM record match the private key, and can
//! dkim-sidecar sign with that key?
//!
//! The record comes from a file (keygen's or opendkim-genkey's `.txt`, or a
//! bare `v=DKIM1; ...` string) or from DNS, through the system resolver or a
//! given nameserver (hickory-resolver, the one mail-auth uses). The verdict
//! is said in plain words, and when something is wrong the report includes
//! the exact record to publish. Only public key data is ever printed.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::hickory_resolver::proto::rr::RData;
use mail_auth::hickory_resolver::{Resolver, TokioResolver};

use super::error::{KeyError, KeyOrigin};
use super::material;
use super::record::{self, KeyRecord, RecordOptions, RecordSyntaxError};
use super::{KeyType, LoadOptions, PrivateKey};

/// Where to read the published record from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordSource {
    /// A `.txt` zone file entry or a bare record string.
    File(PathBuf),
    /// DNS, through the system resolver (`None`) or this server.
    Dns { nameserver: Option<SocketAddr> },
}

/// How the record relates to the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The record publishes this key's public key.
    KeyOk,
    /// The record publishes a different public key.
    KeysDoNotMatch,
    /// No record at that name.
    RecordNotFound,
    /// The record cannot be parsed.
    SyntaxError(RecordSyntaxError),
    /// `p=` is empty: the key was revoked.
    Revoked,
    /// The record's `k=` is not this key's algorithm.
    AlgorithmMismatch { published: String },
    /// The record's `h=` does not allow sha256, the only hash we sign with.
    HashNotAllowed { published: Vec<String> },
    /// The record's `s=` does not allow e-mail.
    ServiceNotEmail { published: Vec<String> },
}

/// The outcome of a test, ready to print.
#[derive(Debug)]
pub struct TestReport {
    /// `SELECTOR._domainkey.DOMAIN`.
    pub name: String,
    pub key_path: PathBuf,
    pub key_type: KeyType,
    pub rsa_bits: Option<u32>,
    pub verdict: Verdict,
    /// Why dkim-sidecar could not sign with the key even though it matches
    /// (an RSA size outside 2048 to 8192 bits, MinimumKeyBits...).
    pub signer_problem: Option<KeyError>,
    /// Notes about the key file (permissions) that do not change the verdict.
    pub warnings: Vec<String>,
    /// The record text to publish for this key.
    pub expected_record: String,
    /// The same record as a zone file entry, like keygen writes it.
    pub expected_zone: String,
}

impl TestReport {
    /// True only when the record matches and the signer can use the key.
    pub fn is_ok(&self) -> bool {
        self.verdict == Verdict::KeyOk && self.signer_problem.is_none()
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key_path.display();
        let kind = match self.rsa_bits {
            Some(bits) => format!("a {bits}-bit RSA key"),
            None => "an Ed25519 key".to_string(),
        };
        let name = &self.name;
        match &self.verdict {
            Verdict::KeyOk => writeln!(
                f,
                "key OK: {name} publishes the public key of {key} ({kind})"
            )?,
            Verdict::KeysDoNotMatch => writeln!(
                f,
                "keys do not match: {name} publishes a different public key than {key} ({kind})"
            )?,
            Verdict::RecordNotFound => writeln!(f, "record not found: no TXT record at {name}")?,
            Verdict::SyntaxError(err) => writeln!(
                f,
                "record syntax error: the record at {name} is invalid: {err}"
            )?,
            Verdict::Revoked => writeln!(
                f,
                "key revoked: the record at {name} has an empty p=, so verifiers treat the key as revoked"
            )?,
            Verdict::AlgorithmMismatch { published } => writeln!(
                f,
                "algorithm mismatch: the record at {name} has k={published} but {key} is {kind}"
            )?,
            Verdict::HashNotAllowed { published } => writeln!(
                f,
                "hash not allowed: the record at {name} has h={} but dkim-sidecar signs with sha256",
                published.join(":")
            )?,
            Verdict::ServiceNotEmail { published } => writeln!(
                f,
                "service mismatch: the record at {name} has s={}, which does not allow e-mail",
                published.join(":")
            )?,
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        if let Some(problem) = &self.signer_problem {
            writeln!(f, "dkim-sidecar cannot sign with this key: {problem}")?;
        }
        if self.verdict != Verdict::KeyOk {
            writeln!(f, "publish this TXT record at {name}:")?;
            writeln!(f, "{}", self.expected_record)?;
            writeln!(f, "or, as a zone file entry:")?;
            write!(f, "{}", self.expected_zone)?;
        }
        Ok(())
    }
}

/// Why the test could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum TestkeyError {
    #[error(transparent)]
    Key(#[from] KeyError),

    #[error("{}: cannot read the record file: {source}", path.display())]
    RecordFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "DNS lookup of {name} failed: {detail}; check the nameserver, or test offline with --txt FILE"
    )]
    Dns { name: String, detail: String },
}

/// Compares the private key at `key_path` with the record for
/// `selector._domainkey.domain`.
pub fn testkey(
    domain: &str,
    selector: &str,
    key_path: &Path,
    source: &RecordSource,
) -> Result<TestReport, TestkeyError> {
    // Run by an administrator, not by the signing user: check the key's
    // permission bits but not its owner, and only warn.
    let options = LoadOptions {
        require_safe_keys: false,
        signer_uid: None,
        ..LoadOptions::default()
    };
    let (decoded, warnings) = super::read_key_file(key_path, &options)?;
    let key_type = decoded.key_type;
    let rsa_bits = decoded.rsa_bits;
    let public_key = decoded.public_key.clone();
    let signer_problem = PrivateKey::from_material(
        decoded,
        &KeyOrigin::File(key_path.to_path_buf()),
        options.minimum_key_bits,
    )
    .err();

    let name = record::record_name(selector, domain);
    let text = match source {
        RecordSource::File(path) => Some(record::text_from_file_contents(
            &std::fs::read_to_string(path).map_err(|source| TestkeyError::RecordFile {
                path: path.clone(),
                source,
            })?,
        )),
        RecordSource::Dns { nameserver } => lookup_txt(&name, *nameserver)?,
    };
    let verdict = match &text {
        None => Verdict::RecordNotFound,
        Some(text) => match record::parse_record(text) {
            Err(err) => Verdict::SyntaxError(err),
            Ok(record) => judge(&record, key_type, &public_key),
        },
    };

    let p = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &public_key);
    let options = text
        .as_deref()
        .map(published_options)
        .unwrap_or_else(|| RecordOptions {
            hash_algorithms: Some("sha256".to_string()),
            ..RecordOptions::default()
        });
    Ok(TestReport {
        expected_record: record::record_text(key_type, &p, &options),
        expected_zone: record::zone_file(selector, domain, true, key_type, &p, &options),
        name,
        key_path: key_path.to_path_buf(),
        key_type,
        rsa_bits,
        verdict,
        signer_problem,
        warnings: warnings.into_iter().map(|w| w.message).collect(),
    })
}

/// The options of the record to offer as the fix: the flags the published
/// record carries (`keygen -r`'s `s=email`, `-t`'s `t=y`, `-S`'s `t=s`, `-n`'s
/// note, and `h=` when it allows sha256), so that publishing the offered record
/// changes the key and nothing else. Read leniently, tags separated by `;` or
/// `,`, because a record that cannot be parsed still says what was meant.
/// An `h=` without sha256 becomes `h=sha256`; an `s=` without `email` or `*`
/// is dropped: those are what is wrong with the record.
fn published_options(text: &str) -> RecordOptions {
    let mut options = RecordOptions {
        hash_algorithms: Some("sha256".to_string()),
        ..RecordOptions::default()
    };
    for tag in text.split([';', ',']) {
        let Some((name, value)) = tag.split_once('=') else {
            continue;
        };
        let list = || {
            value
                .split(':')
                .map(|v| v.trim().to_ascii_lowercase())
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "h" => {
                let hashes = list();
                if hashes.iter().any(|h| h == "sha256") {
                    options.hash_algorithms = Some(hashes.join(":"));
                }
            }
            "s" => options.restrict_to_email = list().iter().any(|s| s == "email"),
            "t" => {
                let flags = list();
                options.testing = flags.iter().any(|f| f == "y");
                options.no_subdomains = flags.iter().any(|f| f == "s");
            }
            "n" => {
                let note = value.trim().trim_matches('"').trim();
                options.note = (!note.is_empty() && !note.contains('"')).then(|| note.to_string());
            }
            _ => {}
        }
    }
    options
}

/// Compares a parsed record with the key's public half.
pub fn judge(record: &KeyRecord, key_type: KeyType, public_key: &[u8]) -> Verdict {
    if record.key_type != key_type.k_tag() {
        return Verdict::AlgorithmMismatch {
            published: record.key_type.clone(),
        };
    }
    if record.is_revoked() {
        return Verdict::Revoked;
    }
    if let Some(hashes) = &record.hash_algorithms
        && !hashes.iter().any(|h| h == "sha256")
    {
        return Verdict::HashNotAllowed {
            published: hashes.clone(),
        };
    }
    if let Some(services) = &record.services
        && !services.iter().any(|s| s == "*" || s == "email")
    {
        return Verdict::ServiceNotEmail {
            published: services.clone(),
        };
    }
    let matches = match key_type {
        KeyType::Ed25519 => {
            if record.public_key.len() != 32 {
                return Verdict::SyntaxError(RecordSyntaxError {
                    tag: "p".to_string(),
                    problem: format!(
                        "holds {} bytes, but an Ed25519 public key is 32 bytes",
                        record.public_key.len()
                    ),
                });
            }
            record.public_key == public_key
        }
        KeyType::Rsa => match material::rsa_public_from_record(&record.public_key) {
            None => {
                return Verdict::SyntaxError(RecordSyntaxError {
                    tag: "p".to_string(),
                    problem: "is not an RSA public key".to_string(),
                });
            }
            Some(published) => Some(published) == material::rsa_public_from_spki(public_key),
        },
    };
    if matches {
        Verdict::KeyOk
    } else {
        Verdict::KeysDoNotMatch
    }
}

/// The TXT record at `name` (its strings joined), `None` when there is none.
/// When several TXT records exist, the one starting `v=DKIM1` wins.
fn lookup_txt(name: &str, nameserver: Option<SocketAddr>) -> Result<Option<String>, TestkeyError> {
    let failed = |detail: String| TestkeyError::Dns {
        name: name.to_string(),
        detail,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| failed(err.to_string()))?;
    runtime.block_on(async {
        let mut builder = match nameserver {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(|err| failed(err.to_string()))?,
        };
        // An administrator is waiting: give up after seconds, not minutes.
        builder.options_mut().timeout = Duration::from_secs(3);
        builder.options_mut().attempts = 1;
        let resolver = builder.build().map_err(|err| failed(err.to_string()))?;
        let lookup = match resolver.txt_lookup(format!("{name}.")).await {
            Ok(lookup) => lookup,
            Err(err) if err.is_no_records_found() || err.is_nx_domain() => return Ok(None),
            Err(err) => return Err(failed(err.to_string())),
        };
        Ok(record::key_record_among(
            lookup
                .answers()
                .iter()
                .filter_map(|answer| match &answer.data {
                    RData::TXT(txt) => Some(txt),
                    _ => None,
                }),
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::keys::record::parse_record;

    /// An RSA key pair from OpenSSL: (SubjectPublicKeyInfo, bare RSAPublicKey).
    fn openssl_rsa_public() -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl must be installed (Debian package openssl)");
            assert!(out.status.success());
            out.stdout
        };
        let key_arg = key.to_str().unwrap();
        run(&["genrsa", "-out", key_arg, "2048"]);
        let spki = run(&["rsa", "-in", key_arg, "-pubout", "-outform", "DER"]);
        let bare = run(&[
            "rsa",
            "-in",
            key_arg,
            "-RSAPublicKey_out",
            "-outform",
            "DER",
        ]);
        (spki, bare)
    }

    fn record(text: &str) -> KeyRecord {
        parse_record(text).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
    }

    #[test]
    fn matching_rsa_record_is_ok_in_both_encodings_of_p() {
        let (spki, bare) = openssl_rsa_public();
        for p in [&spki, &bare] {
            let r = record(&format!("v=DKIM1; k=rsa; p={}", b64(p)));
            assert_eq!(judge(&r, KeyType::Rsa, &spki), Verdict::KeyOk);
        }
    }

    #[test]
    fn other_rsa_key_does_not_match() {
        let (spki, _) = openssl_rsa_public();
        let (other, _) = openssl_rsa_public();
        let r = record(&format!("v=DKIM1; p={}", b64(&other)));
        assert_eq!(judge(&r, KeyType::Rsa, &spki), Verdict::KeysDoNotMatch);
    }

    #[test]
    fn empty_p_is_revoked() {
        let (spki, _) = openssl_rsa_public();
        assert_eq!(
            judge(&record("v=DKIM1; k=rsa; p="), KeyType::Rsa, &spki),
            Verdict::Revoked
        );
    }

    #[test]
    fn key_type_differs_from_record() {
        let r = record("v=DKIM1; k=rsa; p=AAEC");
        assert_eq!(
            judge(&r, KeyType::Ed25519, &[0; 32]),
            Verdict::AlgorithmMismatch {
                published: "rsa".to_string()
            }
        );
    }

    #[test]
    fn record_without_sha256_in_h_is_refused() {
        let (spki, _) = openssl_rsa_public();
        let r = record(&format!("v=DKIM1; h=sha1; p={}", b64(&spki)));
        assert_eq!(
            judge(&r, KeyType::Rsa, &spki),
            Verdict::HashNotAllowed {
                published: vec!["sha1".to_string()]
            }
        );
    }

    #[test]
    fn record_for_another_service_is_refused() {
        let (spki, _) = openssl_rsa_public();
        let r = record(&format!("v=DKIM1; s=tlsrpt; p={}", b64(&spki)));
        assert_eq!(
            judge(&r, KeyType::Rsa, &spki),
            Verdict::ServiceNotEmail {
                published: vec!["tlsrpt".to_string()]
            }
        );
    }

    #[test]
    fn ed25519_p_of_wrong_length_is_a_syntax_error() {
        let r = record("v=DKIM1; k=ed25519; p=AAEC");
        let Verdict::SyntaxError(err) = judge(&r, KeyType::Ed25519, &[0; 32]) else {
            panic!("expected a syntax error");
        };
        assert_eq!(
            err.to_string(),
            "tag p=: holds 3 bytes, but an Ed25519 public key is 32 bytes"
        );
    }

    #[test]
    fn rsa_p_that_is_not_a_key_is_a_syntax_error() {
        let r = record("v=DKIM1; k=rsa; p=AAEC");
        let Verdict::SyntaxError(err) = judge(&r, KeyType::Rsa, &[0x30]) else {
            panic!("expected a syntax error");
        };
        assert_eq!(err.to_string(), "tag p=: is not an RSA public key");
    }

    #[test]
    fn report_for_a_mismatch_shows_the_record_to_publish() {
        let report = TestReport {
            name: "s._domainkey.example.com".to_string(),
            key_path: PathBuf::from("/k"),
            key_type: KeyType::Ed25519,
            rsa_bits: None,
            verdict: Verdict::KeysDoNotMatch,
            signer_problem: None,
            warnings: vec![],
            expected_record: "v=DKIM1; k=ed25519; p=X".to_string(),
            expected_zone: "ZONE\n".to_string(),
        };
        assert!(!report.is_ok());
        assert_eq!(
            report.to_string(),
            "keys do not match: s._domainkey.example.com publishes a different public key than \
             /k (an Ed25519 key)\npublish this TXT record at s._domainkey.example.com:\n\
             v=DKIM1; k=ed25519; p=X\nor, as a zone file entry:\nZONE\n"
        );
    }
}
