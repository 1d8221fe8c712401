//! `dkim-sidecar keygen` against the tools it replaces and the verifiers
//! that must accept its keys: opendkim-genkey (layout), OpenSSL (key
//! format), opendkim-testkey over real DNS, OpenDKIM and dkimpy (signatures).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use dkim_sidecar::keys::KeyType;
use dkim_sidecar::keys::record::{RecordOptions, zone_file};
use testkit::command::*;
use testkit::dnsmasq::*;
use testkit::openssl::*;
use testkit::verify::dkimpy_sign_and_verify;

/// Flag combinations of opendkim-genkey that change the `.txt`.
const FLAG_SETS: &[&[&str]] = &[
    &[],
    &["-a"],
    &["-r"],
    &["-S"],
    &["-t"],
    &["-t", "-S"],
    &["-a", "-r", "-S", "-t"],
    &["-n", "rotated in 2024"],
    &["-h", "sha1:sha256"],
    &["-r", "-t", "-n", "note"],
];

fn options_for(flags: &[&str]) -> (bool, RecordOptions) {
    let mut options = RecordOptions {
        hash_algorithms: Some("sha256".to_string()),
        ..RecordOptions::default()
    };
    let mut append = false;
    let mut i = 0;
    while i < flags.len() {
        match flags[i] {
            "-a" => append = true,
            "-r" => options.restrict_to_email = true,
            "-S" => options.no_subdomains = true,
            "-t" => options.testing = true,
            "-n" => {
                i += 1;
                options.note = Some(flags[i].to_string());
            }
            "-h" => {
                i += 1;
                options.hash_algorithms = Some(flags[i].to_string());
            }
            other => panic!("unexpected flag {other}"),
        }
        i += 1;
    }
    (append, options)
}

/// What opendkim-genkey writes for a public key of our choosing: it is run
/// with a stand-in `openssl` on PATH that hands it `p` as the public key.
fn opendkim_genkey_txt(flags: &[&str], selector: &str, domain: &str, p: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let fake = bin.join("openssl");
    fs::write(
        &fake,
        "#!/bin/sh\n\
         out=; prev=\n\
         for a in \"$@\"; do [ \"$prev\" = -out ] && out=$a; prev=$a; done\n\
         case \"$1\" in\n\
         genrsa) echo placeholder > \"$out\" ;;\n\
         rsa) { echo '-----BEGIN PUBLIC KEY-----'; printf '%s\\n' \"$FAKE_P\" | fold -w 64; \
                echo '-----END PUBLIC KEY-----'; } > \"$out\" ;;\n\
         *) exit 1 ;;\n\
         esac\n",
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("opendkim-genkey")
        .args(["-d", domain, "-s", selector])
        .args(flags)
        .env("PATH", path)
        .env("FAKE_P", p)
        .current_dir(dir.path())
        .output()
        .expect("opendkim-genkey must be installed (Debian package opendkim-tools)");
    assert!(out.status.success(), "{}", stderr(&out));
    fs::read_to_string(dir.path().join(format!("{selector}.txt"))).unwrap()
}

fn keygen(dir: &Path, args: &[&str]) -> std::process::Output {
    sidecar(
        &[&["keygen", "-D", dir.to_str().unwrap()], args].concat(),
        dir,
    )
}

#[test]
fn txt_matches_opendkim_genkey_layout() {
    // Real opendkim-genkey with real OpenSSL; our formatter gets the public
    // key OpenSSL derives from its private key.
    for flags in FLAG_SETS {
        let dir = tempfile::tempdir().unwrap();
        let args = [&["-d", "example.com", "-s", "sel"], *flags].concat();
        run_ok("opendkim-genkey", "opendkim-tools", &args, dir.path());
        let expected = fs::read_to_string(dir.path().join("sel.txt")).unwrap();
        let p = openssl_rsa_p(&dir.path().join("sel.private"));
        let (append, options) = options_for(flags);
        let ours = zone_file("sel", "example.com", append, KeyType::Rsa, &p, &options);
        assert_eq!(ours, expected, "flags {flags:?}");
    }
}

#[test]
fn txt_matches_opendkim_genkey_layout_for_1024_and_4096_bit_keys() {
    for bits in ["1024", "4096"] {
        let dir = tempfile::tempdir().unwrap();
        run_ok(
            "opendkim-genkey",
            "opendkim-tools",
            &["-b", bits, "-d", "example.org", "-s", "k", "-a"],
            dir.path(),
        );
        let expected = fs::read_to_string(dir.path().join("k.txt")).unwrap();
        let p = openssl_rsa_p(&dir.path().join("k.private"));
        let (_, options) = options_for(&[]);
        assert_eq!(
            zone_file("k", "example.org", true, KeyType::Rsa, &p, &options),
            expected
        );
    }
}

#[test]
fn txt_matches_opendkim_genkey_chunking_for_any_key_length() {
    // 250 and 500 characters end exactly on a chunk boundary, where
    // opendkim-genkey leaves an empty quoted string.
    for len in [44, 249, 250, 251, 500, 736] {
        let p: String = "ABCDEFGHIJ".chars().cycle().take(len).collect();
        let expected = opendkim_genkey_txt(&["-a"], "s", "example.net", &p);
        let (_, options) = options_for(&[]);
        assert_eq!(
            zone_file("s", "example.net", true, KeyType::Rsa, &p, &options),
            expected,
            "p of {len} characters"
        );
    }
}

#[test]
fn keygen_txt_is_byte_identical_to_opendkim_genkey_for_the_same_key() {
    for flags in FLAG_SETS {
        let dir = tempfile::tempdir().unwrap();
        let out = keygen(
            dir.path(),
            &[&["-d", "example.com", "-s", "sel"], *flags].concat(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let p = openssl_rsa_p(&dir.path().join("sel.private"));
        let ours = fs::read_to_string(dir.path().join("sel.txt")).unwrap();
        assert_eq!(
            ours,
            opendkim_genkey_txt(flags, "sel", "example.com", &p),
            "flags {flags:?}"
        );
    }
}

#[test]
fn keygen_ed25519_txt_has_opendkim_genkey_layout_with_raw_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygen(
        dir.path(),
        &[
            "-d",
            "example.com",
            "-s",
            "ed",
            "--algorithm",
            "ed25519",
            "-a",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let private = dir.path().join("ed.private");
    let p = openssl_ed25519_p(&private);
    // opendkim-genkey only knows k=rsa; otherwise the layout is the same.
    let expected =
        opendkim_genkey_txt(&["-a"], "ed", "example.com", &p).replace("k=rsa;", "k=ed25519;");
    assert_eq!(
        fs::read_to_string(dir.path().join("ed.txt")).unwrap(),
        expected
    );
    assert!(
        fs::read_to_string(&private)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );
}

#[test]
fn keygen_writes_pkcs8_private_key_mode_0600_even_with_umask_000() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "umask 000; exec {} keygen -d example.com -s sel -D {}",
                testkit::binary().display(),
                dir.path().display()
            ),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let private = dir.path().join("sel.private");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&private), 0o600);
    assert_eq!(mode(&dir.path().join("sel.txt")), 0o644);
    let text = fs::read_to_string(&private).unwrap();
    assert!(
        text.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "not PKCS#8 PEM"
    );
    assert!(!text.contains('\r'));
    let check = run_ok(
        "openssl",
        "openssl",
        &[
            "pkey",
            "-in",
            private.to_str().unwrap(),
            "-check",
            "-noout",
            "-text",
        ],
        dir.path(),
    );
    assert!(
        stdout(&check).contains("Private-Key: (2048 bit, 2 primes)"),
        "{}",
        stdout(&check)
    );
}

#[test]
fn keygen_refuses_to_overwrite_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("sel.txt");
    fs::write(&txt, "keep me").unwrap();
    let out = keygen(dir.path(), &["-d", "example.com", "-s", "sel"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        format!(
            "dkim-sidecar: {}: already exists; keep it and choose another selector (-s), or pass \
             --force to replace it\n",
            txt.display()
        )
    );
    assert_eq!(fs::read_to_string(&txt).unwrap(), "keep me");
    assert!(!dir.path().join("sel.private").exists());
}

#[test]
fn keygen_force_replaces_both_files_with_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("sel.private");
    assert!(keygen(dir.path(), &["-s", "sel"]).status.success());
    let first = openssl_rsa_p(&private);
    let out = keygen(dir.path(), &["-s", "sel", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = openssl_rsa_p(&private);
    assert_ne!(first, second);
    assert_eq!(
        fs::metadata(&private).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        zone_strings(&fs::read_to_string(dir.path().join("sel.txt")).unwrap()).ends_with(&second)
    );
    let leftovers: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}

#[test]
fn keygen_refuses_rsa_below_1024_bits() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygen(dir.path(), &["-b", "768", "-s", "weak"]);
    assert!(!out.status.success());
    assert!(stderr(&out).starts_with("dkim-sidecar: refusing to generate a 768-bit RSA key"));
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn keygen_warns_below_2048_bits_and_still_writes_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygen(dir.path(), &["-b", "1024", "-s", "old"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("dkim-sidecar: warning: a 1024-bit RSA key is weak"),
        "{}",
        stderr(&out)
    );
    let text = stdout(&run_ok(
        "openssl",
        "openssl",
        &["pkey", "-in", "old.private", "-check", "-noout", "-text"],
        dir.path(),
    ));
    assert!(text.contains("Private-Key: (1024 bit"), "{text}");
}

#[test]
fn keygen_makes_every_rsa_size_aws_lc_and_the_rsa_crate_generate() {
    for bits in ["3072", "1536"] {
        let dir = tempfile::tempdir().unwrap();
        let out = keygen(dir.path(), &["-b", bits, "-s", "k"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&run_ok(
            "openssl",
            "openssl",
            &["pkey", "-in", "k.private", "-check", "-noout", "-text"],
            dir.path(),
        ));
        assert!(
            text.contains(&format!("Private-Key: ({bits} bit, 2 primes)")),
            "{text}"
        );
    }
}

#[test]
fn keygen_rsa_key_passes_opendkim_testkey_over_dns() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        keygen(dir.path(), &["-d", "example.com", "-s", "sel"])
            .status
            .success()
    );
    let private = dir.path().join("sel.private");
    let record = zone_strings(&fs::read_to_string(dir.path().join("sel.txt")).unwrap());
    let dns = Dnsmasq::start(&[("sel._domainkey.example.com", &record)]);
    let conf = dns.opendkim_config(dir.path());
    let out = run(
        "opendkim-testkey",
        "opendkim-tools",
        &[
            "-x",
            conf.to_str().unwrap(),
            "-d",
            "example.com",
            "-s",
            "sel",
            "-k",
            private.to_str().unwrap(),
            "-vvv",
        ],
        dir.path(),
    );
    let report = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{report}");
    assert!(report.contains("opendkim-testkey: key OK"), "{report}");

    // The same check fails for a key the record does not publish.
    assert!(
        keygen(dir.path(), &["-d", "example.com", "-s", "other"])
            .status
            .success()
    );
    let out = run(
        "opendkim-testkey",
        "opendkim-tools",
        &[
            "-x",
            conf.to_str().unwrap(),
            "-d",
            "example.com",
            "-s",
            "sel",
            "-k",
            "other.private",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
}

#[test]
fn keygen_keys_sign_mail_that_dkimpy_verifies() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        keygen(dir.path(), &["-d", "example.com", "-s", "rsa"])
            .status
            .success()
    );
    assert!(
        keygen(
            dir.path(),
            &["-d", "example.com", "-s", "ed", "--algorithm", "ed25519"]
        )
        .status
        .success()
    );
    let record =
        |s: &str| zone_strings(&fs::read_to_string(dir.path().join(format!("{s}.txt"))).unwrap());
    let rsa_pem = fs::read_to_string(dir.path().join("rsa.private")).unwrap();
    let ed_seed = openssl_ed25519_seed(&dir.path().join("ed.private"));

    assert!(dkimpy_sign_and_verify(
        &rsa_pem,
        "rsa-sha256",
        "rsa",
        "example.com",
        &record("rsa")
    ));
    assert!(dkimpy_sign_and_verify(
        &ed_seed,
        "ed25519-sha256",
        "ed",
        "example.com",
        &record("ed")
    ));
    // Control: a record for the other key must not verify.
    let wrong = record("ed").replace(
        &openssl_ed25519_p(&dir.path().join("ed.private")),
        STANDARD_ZERO_KEY,
    );
    assert!(!dkimpy_sign_and_verify(
        &ed_seed,
        "ed25519-sha256",
        "ed",
        "example.com",
        &wrong
    ));
}

/// A syntactically valid Ed25519 public key that belongs to no test key.
const STANDARD_ZERO_KEY: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

#[test]
fn keygen_ed25519_record_verifies_in_opendkim() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        keygen(
            dir.path(),
            &["-d", "example.com", "-s", "ed", "--algorithm", "ed25519"]
        )
        .status
        .success()
    );
    let seed = openssl_ed25519_seed(&dir.path().join("ed.private"));
    let record = zone_strings(&fs::read_to_string(dir.path().join("ed.txt")).unwrap());
    let script = r#"
import sys, dkim
msg = (b"From: a@example.com\r\nTo: b@example.org\r\nSubject: test\r\n"
       b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nHello.\r\n")
sig = dkim.sign(msg, b"ed", b"example.com", sys.argv[1].encode(),
                signature_algorithm=b"ed25519-sha256", include_headers=[b"from", b"to", b"subject"])
sys.stdout.buffer.write(sig + msg)
"#;
    let signed = run_ok(
        "/usr/bin/python3",
        "python3-dkim python3-nacl",
        &["-c", script, &seed],
        dir.path(),
    );
    fs::write(dir.path().join("message.eml"), &signed.stdout).unwrap();

    let verify = |record: &str| {
        fs::write(
            dir.path().join("keys"),
            format!("ed._domainkey.example.com {record}\n"),
        )
        .unwrap();
        fs::write(
            dir.path().join("verify.conf"),
            format!(
                "Mode v\nTestPublicKeys {}/keys\nAlwaysAddARHeader yes\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let out = run(
            "opendkim",
            "opendkim",
            &["-x", "verify.conf", "-t", "message.eml", "-vv"],
            dir.path(),
        );
        format!("{}{}", stdout(&out), stderr(&out))
    };
    let report = verify(&record);
    assert!(report.contains("dkim=pass"), "{report}");
    assert!(
        report.contains("verification (s=ed, d=example.com"),
        "{report}"
    );
    let p = openssl_ed25519_p(&dir.path().join("ed.private"));
    let report = verify(&record.replace(&p, STANDARD_ZERO_KEY));
    assert!(!report.contains("dkim=pass"), "{report}");
}

#[test]
fn keygen_rejects_selector_that_is_not_a_dns_label() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygen(dir.path(), &["-s", "../evil"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("selector \"../evil\" cannot be a DNS label"));
}
