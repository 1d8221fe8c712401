//! Loader tests. Keys are generated at run time by OpenSSL or dkimpy (never
//! committed), and every expected public key comes from OpenSSL or dkimpy,
//! not from our own code.

use std::fs;
use std::os::unix::fs::{PermissionsExt as _, chown};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mail_auth::common::crypto::SigningKey as _;

use super::*;

/// Runs openssl; the test fails (never skips) if it is missing.
fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `data` as a key file with mode 0600.
    fn key_file(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// An RSA key made by `openssl genrsa` (PKCS#8 PEM with OpenSSL 3).
    fn openssl_rsa(&self, name: &str, bits: u32) -> PathBuf {
        let path = self.path(name);
        openssl(&["genrsa", "-out", path.to_str().unwrap(), &bits.to_string()]);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn openssl_ed25519(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        openssl(&[
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            path.to_str().unwrap(),
        ]);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

/// The p= value OpenSSL derives: SubjectPublicKeyInfo DER for RSA (what
/// opendkim-genkey publishes), the last 32 bytes of it for Ed25519.
fn openssl_public(key: &Path) -> Vec<u8> {
    openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
    ])
}

fn openssl_der(key: &Path, extra: &[&str]) -> Vec<u8> {
    let mut args = vec!["pkey", "-in", key.to_str().unwrap(), "-outform", "DER"];
    args.extend_from_slice(extra);
    openssl(&args)
}

fn load(path: &Path) -> Result<LoadedKey, KeyError> {
    load_key_file(path, &LoadOptions::default())
}

fn message(err: KeyError) -> String {
    err.to_string()
}

// ---- formats ----

#[test]
fn loads_pkcs8_pem_rsa_key_and_derives_openssl_public_key() {
    let s = Scratch::new();
    let path = s.openssl_rsa("k.private", 2048);
    assert!(
        fs::read_to_string(&path)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let loaded = load(&path).unwrap();
    assert!(loaded.warnings.is_empty());
    let key = &loaded.key;
    assert_eq!(key.key_type(), KeyType::Rsa);
    assert_eq!(key.algorithm(), Algorithm::RsaSha256);
    assert_eq!(key.rsa_bits(), Some(2048));
    assert_eq!(key.public_key(), openssl_public(&path).as_slice());
}

#[test]
fn loads_pkcs1_pem_rsa_key() {
    let s = Scratch::new();
    let path = s.path("k.private");
    openssl(&[
        "genrsa",
        "-traditional",
        "-out",
        path.to_str().unwrap(),
        "3072",
    ]);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        fs::read_to_string(&path)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    let key = load(&path).unwrap().key;
    assert_eq!(key.rsa_bits(), Some(3072));
    assert_eq!(key.public_key(), openssl_public(&path).as_slice());
}

#[test]
fn loads_inline_base64_der_as_a_keytable_holds_it() {
    let s = Scratch::new();
    let path = s.openssl_rsa("k.private", 2048);
    for extra in [&[][..], &["-traditional"][..]] {
        let inline = STANDARD.encode(openssl_der(&path, extra));
        assert!(inline.starts_with("MII"));
        let at = Location::new("/etc/opendkim/KeyTable", 3);
        let key = load_inline_key(&inline, Some(at.clone()), &LoadOptions::default()).unwrap();
        assert_eq!(key.public_key(), openssl_public(&path).as_slice());
        let source = KeySource::from_keytable_value(&inline);
        assert!(matches!(source, KeySource::Inline(_)));
        let loaded = source.load(Some(&at), &LoadOptions::default()).unwrap();
        assert_eq!(loaded.key.public_key(), openssl_public(&path).as_slice());
    }
}

#[test]
fn keytable_value_is_a_file_only_when_it_starts_like_a_path() {
    for path in [
        "/etc/dkimkeys/a.private",
        "./a.private",
        "../keys/a.private",
    ] {
        assert_eq!(
            KeySource::from_keytable_value(path),
            KeySource::File(PathBuf::from(path))
        );
    }
    assert!(matches!(
        KeySource::from_keytable_value("keys/a.private"),
        KeySource::Inline(_)
    ));
}

#[test]
fn loads_binary_der_key_file() {
    let s = Scratch::new();
    let pem = s.openssl_rsa("k.pem", 2048);
    let der = s.key_file("k.der", &openssl_der(&pem, &[]));
    assert_eq!(
        load(&der).unwrap().key.public_key(),
        openssl_public(&pem).as_slice()
    );
}

#[test]
fn loads_ed25519_pkcs8_pem_with_raw_public_key() {
    let s = Scratch::new();
    let path = s.openssl_ed25519("ed.private");
    let key = load(&path).unwrap().key;
    assert_eq!(key.key_type(), KeyType::Ed25519);
    assert_eq!(key.algorithm(), Algorithm::Ed25519Sha256);
    assert_eq!(key.rsa_bits(), None);
    let spki = openssl_public(&path);
    assert_eq!(key.public_key(), &spki[spki.len() - 32..]);
}

#[test]
fn loads_ed25519_pkcs8_v2_with_embedded_public_key() {
    let s = Scratch::new();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let v2 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let text = pem::encode(&pem::Pem::new("PRIVATE KEY", v2.as_ref().to_vec()));
    let path = s.key_file("v2.private", text.as_bytes());
    // OpenSSL 3.0 cannot read v2 (which is why keygen writes v1): give it
    // the seed (bytes 16..48 of either form) in the v1 layout of RFC 8410.
    let mut v1 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    v1.extend_from_slice(&v2.as_ref()[16..48]);
    let v1_path = s.key_file("v1.der", &v1);
    let spki = openssl(&[
        "pkey",
        "-inform",
        "DER",
        "-in",
        v1_path.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
    ]);
    assert_eq!(
        load(&path).unwrap().key.public_key(),
        &spki[spki.len() - 32..]
    );
}

#[test]
fn signature_verifies_with_the_published_public_key() {
    use aws_lc_rs::signature::{ED25519, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
    let s = Scratch::new();
    let data = b"from:a@example.com\r\n";

    let rsa = load(&s.openssl_rsa("rsa.private", 2048)).unwrap().key;
    let signature = rsa.sign(&data[..]).unwrap();
    let published = material::rsa_public_from_spki(rsa.public_key()).unwrap();
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, published)
        .verify(data, &signature)
        .expect("RSA signature must verify with p=");

    let ed = load(&s.openssl_ed25519("ed.private")).unwrap().key;
    let signature = ed.sign(&data[..]).unwrap();
    // ed25519-sha256 signs the SHA-256 digest (RFC 8463).
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    UnparsedPublicKey::new(&ED25519, ed.public_key())
        .verify(digest.as_ref(), &signature)
        .expect("Ed25519 signature must verify with p=");
}

#[test]
fn private_key_is_send_sync_and_shared_cheaply() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PrivateKey>();
    assert_send_sync::<Arc<PrivateKey>>();
}

#[test]
fn debug_output_never_contains_key_material() {
    let s = Scratch::new();
    let path = s.openssl_rsa("k.private", 2048);
    let pem_text = fs::read_to_string(&path).unwrap();
    let loaded = load(&path).unwrap();
    let debug = format!("{loaded:?}");
    assert!(debug.contains("<redacted>"));
    for line in pem_text.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!debug.contains(line), "Debug output leaks key material");
    }
    let inline = KeySource::from_keytable_value(pem_text.lines().nth(1).unwrap());
    assert_eq!(format!("{inline:?}"), "Inline(<redacted>)");
}

// ---- format errors ----

#[test]
fn refuses_text_that_is_not_a_key_and_lists_accepted_formats() {
    let s = Scratch::new();
    let path = s.key_file("k.private", b"this is not a key\n");
    let msg = message(load(&path).unwrap_err());
    assert!(
        msg.starts_with(&format!("{}: not a private key", path.display())),
        "{msg}"
    );
    assert!(msg.contains("BEGIN RSA PRIVATE KEY"), "{msg}");
    assert!(msg.contains("dkimpy"), "{msg}");
    assert!(msg.contains("start it with / or ./"), "{msg}");
}

#[test]
fn refuses_empty_key_file() {
    let s = Scratch::new();
    let path = s.key_file("k.private", b"\n");
    let msg = message(load(&path).unwrap_err());
    assert!(
        msg.contains("not a private key (the key data is empty)"),
        "{msg}"
    );
}

#[test]
fn refuses_base64_that_is_not_a_key() {
    let inline = STANDARD.encode([7u8; 40]);
    let at = Location::new("/etc/opendkim/KeyTable", 7);
    let msg = message(load_inline_key(&inline, Some(at), &LoadOptions::default()).unwrap_err());
    assert!(
        msg.starts_with(
            "/etc/opendkim/KeyTable:7: inline key: not a private key (base64 of 40 bytes"
        ),
        "{msg}"
    );
}

#[test]
fn refuses_public_key_in_place_of_private_key() {
    let s = Scratch::new();
    let key = s.openssl_rsa("k.private", 2048);
    let public = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    let path = s.key_file("k.public", &public);
    let msg = message(load(&path).unwrap_err());
    assert!(
        msg.contains("not a private key (a public key; the signer needs the private key)"),
        "{msg}"
    );
}

#[test]
fn refuses_unknown_pem_block_without_quoting_its_contents() {
    let s = Scratch::new();
    let key = s.openssl_rsa("k.private", 2048);
    let der = openssl_der(&key, &[]);
    let text = pem::encode(&pem::Pem::new("CERTIFICATE", der.clone()));
    let path = s.key_file("k.crt", text.as_bytes());
    let msg = message(load(&path).unwrap_err());
    assert!(msg.contains("a PEM \"CERTIFICATE\" block"), "{msg}");
    assert!(
        !msg.contains(&STANDARD.encode(&der)[..40]),
        "error quotes key data"
    );
}

#[test]
fn refuses_encrypted_pkcs8_key_and_says_how_to_decrypt() {
    let s = Scratch::new();
    let path = s.path("k.private");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-aes-256-cbc",
        "-pass",
        "pass:secret",
        "-out",
        path.to_str().unwrap(),
    ]);
    let msg = message(
        load_key_file(
            &path,
            &LoadOptions {
                require_safe_keys: false,
                ..LoadOptions::default()
            },
        )
        .unwrap_err(),
    );
    assert!(msg.contains("the key is encrypted"), "{msg}");
    assert!(msg.contains("openssl pkey -in"), "{msg}");
}

#[test]
fn refuses_encrypted_traditional_rsa_key() {
    let s = Scratch::new();
    let path = s.path("k.private");
    openssl(&[
        "genrsa",
        "-traditional",
        "-aes128",
        "-passout",
        "pass:secret",
        "-out",
        path.to_str().unwrap(),
        "2048",
    ]);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        fs::read_to_string(&path)
            .unwrap()
            .contains("Proc-Type: 4,ENCRYPTED")
    );
    assert!(matches!(
        load(&path).unwrap_err(),
        KeyError::Encrypted { .. }
    ));
}

#[test]
fn refuses_ec_keys_in_both_pem_forms() {
    let s = Scratch::new();
    let pkcs8 = s.path("ec8.private");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        pkcs8.to_str().unwrap(),
    ]);
    let sec1 = s.key_file(
        "ec1.private",
        &openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout"]),
    );
    fs::set_permissions(&pkcs8, fs::Permissions::from_mode(0o600)).unwrap();
    for path in [pkcs8, sec1] {
        let msg = message(load(&path).unwrap_err());
        assert!(
            msg.contains("EC (ECDSA) keys cannot sign DKIM; use an RSA or Ed25519 key"),
            "{msg}"
        );
    }
}

#[test]
fn refuses_truncated_pem_as_damaged() {
    let s = Scratch::new();
    let key = s.openssl_rsa("k.private", 2048);
    let text = fs::read_to_string(&key).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.drain(5..15);
    let path = s.key_file("cut.private", lines.join("\n").as_bytes());
    let msg = message(load(&path).unwrap_err());
    assert!(msg.contains("damaged"), "{msg}");
    assert!(msg.contains("copied completely"), "{msg}");
}

// ---- sizes ----

#[test]
fn refuses_rsa_key_shorter_than_minimum_key_bits() {
    let s = Scratch::new();
    let path = s.openssl_rsa("k.private", 2048);
    let options = LoadOptions {
        minimum_key_bits: 3072,
        ..LoadOptions::default()
    };
    let msg = message(load_key_file(&path, &options).unwrap_err());
    assert_eq!(
        msg,
        format!(
            "{}: the RSA key has 2048 bits, fewer than MinimumKeyBits 3072; generate a longer one: \
             dkim-sidecar keygen -b 2048 -d DOMAIN -s SELECTOR",
            path.display()
        )
    );
}

#[test]
fn loads_1024_bit_rsa_key_that_many_opendkim_setups_still_use() {
    let s = Scratch::new();
    let path = s.openssl_rsa("k.private", 1024);
    let key = load(&path).unwrap().key;
    assert_eq!(key.rsa_bits(), Some(1024));
    assert_eq!(key.algorithm(), Algorithm::RsaSha256);
}

#[test]
fn refuses_rsa_keys_below_1024_bits_even_when_minimum_key_bits_allows_them() {
    let s = Scratch::new();
    let path = s.openssl_rsa("k.private", 768);
    let options = LoadOptions {
        minimum_key_bits: 512,
        ..LoadOptions::default()
    };
    let msg = message(load_key_file(&path, &options).unwrap_err());
    assert!(
        msg.contains("the RSA key has 768 bits, but DKIM signing keys must have 1024 to 8192 bits"),
        "{msg}"
    );
}

#[test]
fn aws_lc_refuses_rsa_keys_below_2048_bits() {
    // Why keys of 1024 to 2047 bits sign through OpenSSL: if this starts
    // passing, that path can go.
    let s = Scratch::new();
    let path = s.openssl_rsa("k.private", 1024);
    let der = openssl_der(&path, &[]);
    assert!(aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).is_err());
}

// ---- files ----

#[test]
fn reports_missing_key_file() {
    let s = Scratch::new();
    let path = s.path("absent.private");
    assert_eq!(
        message(load(&path).unwrap_err()),
        format!(
            "{}: key file not found; check the path (KeyFile or the KeyTable entry) or create \
             a key with `dkim-sidecar keygen`",
            path.display()
        )
    );
}

#[test]
fn reports_directory_in_place_of_key_file() {
    let s = Scratch::new();
    let msg = message(load(s.dir.path()).unwrap_err());
    assert!(msg.contains("is a directory, not a key file"), "{msg}");
}

#[test]
fn refuses_named_pipe_without_blocking() {
    let s = Scratch::new();
    let path = s.path("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap()
            .success()
    );
    let msg = message(load(&path).unwrap_err());
    assert!(msg.contains("is a named pipe, not a key file"), "{msg}");
}

#[test]
fn refuses_file_too_large_to_be_a_key() {
    let s = Scratch::new();
    let path = s.key_file("big", &vec![b'A'; MAX_KEY_FILE_SIZE as usize + 1]);
    let msg = message(load(&path).unwrap_err());
    assert!(
        msg.contains("65537 bytes is too large for a private key"),
        "{msg}"
    );
}

#[test]
fn permission_denied_names_the_user_and_the_fix() {
    let err = KeyError::PermissionDenied {
        path: PathBuf::from("/etc/dkimkeys/a.private"),
        reader: UserName {
            uid: 110,
            name: Some("opendkim".into()),
        },
        owner: UserName {
            uid: 110,
            name: Some("opendkim".into()),
        },
    };
    assert_eq!(
        err.to_string(),
        "/etc/dkimkeys/a.private: permission denied reading the key file as opendkim (uid 110); \
         give it to the signing user: chown opendkim /etc/dkimkeys/a.private && chmod 600 \
         /etc/dkimkeys/a.private"
    );
}

#[test]
fn unreadable_key_file_reports_the_system_error() {
    let err = KeyError::Unreadable {
        path: PathBuf::from("/k"),
        source: io::Error::from_raw_os_error(libc::EIO),
    };
    assert!(
        err.to_string()
            .starts_with("/k: cannot read the key file: Input/output error")
    );
}

// ---- safety ----

#[test]
fn refuses_group_readable_key() {
    let s = Scratch::new();
    let path = s.openssl_rsa("k.private", 2048);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        message(load(&path).unwrap_err()),
        format!(
            "{p}: key data is not secure: it can be read or written by group (mode 0640); \
             fix: chmod 600 {p} (or set RequireSafeKeys no to only warn)",
            p = path.display()
        )
    );
}

#[test]
fn refuses_world_readable_key() {
    let s = Scratch::new();
    let path = s.openssl_rsa("k.private", 2048);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let msg = message(load(&path).unwrap_err());
    assert!(
        msg.contains("read or written by group and others (mode 0644)"),
        "{msg}"
    );
}

#[test]
fn refuses_key_owned_by_another_user() {
    let s = Scratch::new();
    let path = s.openssl_rsa("k.private", 2048);
    chown(&path, Some(4242), None).expect("tests run as root");
    let options = LoadOptions {
        signer_uid: Some(0),
        ..LoadOptions::default()
    };
    let msg = message(load_key_file(&path, &options).unwrap_err());
    assert!(
        msg.contains(
            "it is owned by uid 4242; only root, the signing user, may own it; fix: chown root"
        ),
        "{msg}"
    );
}

#[test]
fn accepts_root_owned_key_for_another_signing_user() {
    let s = Scratch::new();
    let path = s.openssl_rsa("k.private", 2048);
    let options = LoadOptions {
        signer_uid: Some(4242),
        ..LoadOptions::default()
    };
    // /tmp-style parents are root's; the file is root's: all allowed.
    assert!(load_key_file(&path, &options).is_ok());
}

#[test]
fn refuses_key_in_world_writable_directory() {
    let s = Scratch::new();
    let dir = s.path("keys");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o757)).unwrap();
    let path = s.openssl_rsa("keys/k.private", 2048);
    let msg = message(load(&path).unwrap_err());
    let real = fs::canonicalize(&dir).unwrap();
    assert!(
        msg.contains(&format!(
            "directory {} is writable by others without the sticky bit (mode 0757), so they could \
             replace the key; fix: chmod o-w {}",
            real.display(),
            real.display()
        )),
        "{msg}"
    );
}

#[test]
fn refuses_key_in_group_writable_directory() {
    let s = Scratch::new();
    let dir = s.path("keys");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o770)).unwrap();
    let path = s.openssl_rsa("keys/k.private", 2048);
    let msg = message(load(&path).unwrap_err());
    assert!(
        msg.contains("writable by group without the sticky bit (mode 0770)"),
        "{msg}"
    );
    assert!(msg.contains("fix: chmod g-w"), "{msg}");
}

#[test]
fn accepts_key_in_sticky_world_writable_directory() {
    let s = Scratch::new();
    let dir = s.path("shared");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
    let path = s.openssl_rsa("shared/k.private", 2048);
    assert!(load(&path).is_ok());
}

#[test]
fn refuses_key_in_directory_owned_by_another_user() {
    let s = Scratch::new();
    let dir = s.path("keys");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    chown(&dir, Some(4242), None).expect("tests run as root");
    let path = s.openssl_rsa("keys/k.private", 2048);
    let msg = message(load(&path).unwrap_err());
    assert!(
        msg.contains("is owned by uid 4242, who could replace the key; only root, the signing user, may own it; fix: chown root"),
        "{msg}"
    );
}

#[test]
fn checks_the_directory_a_symlink_leads_to() {
    let s = Scratch::new();
    let dir = s.path("open");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let target = s.openssl_rsa("open/k.private", 2048);
    let link = s.path("link.private");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let msg = message(load(&link).unwrap_err());
    assert!(
        msg.contains("writable by group and others without the sticky bit (mode 0777)"),
        "{msg}"
    );
    assert!(msg.contains("fix: chmod go-w"), "{msg}");
}

#[test]
fn warns_instead_of_failing_when_require_safe_keys_is_off() {
    let s = Scratch::new();
    let path = s.openssl_rsa("k.private", 2048);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let options = LoadOptions {
        require_safe_keys: false,
        ..LoadOptions::default()
    };
    let loaded = load_key_file(&path, &options).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    let warning = loaded.warnings[0].to_string();
    assert!(warning.contains("key data is not secure"), "{warning}");
    assert!(!warning.contains("RequireSafeKeys"), "{warning}");
}

#[test]
fn replaced_file_is_reported_with_its_path() {
    let exposure = Exposure {
        node: PathBuf::from("/etc/dkimkeys/a.private"),
        problem: ExposureKind::Replaced,
        fix: "find out who changed it, then try again".to_string(),
    };
    assert_eq!(
        exposure.to_string(),
        "/etc/dkimkeys/a.private was replaced while it was being checked; fix: find out who \
         changed it, then try again"
    );
}

#[test]
fn origin_names_the_keytable_line_of_an_inline_key() {
    assert_eq!(
        KeyOrigin::Inline(Some(Location::new("/etc/opendkim/KeyTable", 2))).to_string(),
        "/etc/opendkim/KeyTable:2: inline key"
    );
    assert_eq!(KeyOrigin::Inline(None).to_string(), "inline key");
}

#[test]
fn refuses_openssh_key_and_says_how_to_convert_it() {
    let s = Scratch::new();
    let text = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
    let path = s.key_file("id.private", text.as_bytes());
    let msg = message(load(&path).unwrap_err());
    assert!(
        msg.contains(
            "not a private key (an OpenSSH key; convert it with ssh-keygen -p -m PKCS8 -f FILE)"
        ),
        "{msg}"
    );
}
