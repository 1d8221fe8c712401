//! `dkim-sidecar testkey` on key pairs made by our keygen, opendkim-genkey
//! and dkimpy, with the record read from a file or served by dnsmasq.
//! Expected records are built from OpenSSL's view of the key.

use std::fs;
use std::path::Path;

use testkit::command::*;
use testkit::dnsmasq::*;
use testkit::openssl::*;

fn keygen(dir: &Path, selector: &str, extra: &[&str]) {
    let args = [
        &[
            "keygen",
            "-D",
            dir.to_str().unwrap(),
            "-d",
            "example.com",
            "-s",
            selector,
        ],
        extra,
    ]
    .concat();
    let out = sidecar(&args, dir);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn testkey(dir: &Path, selector: &str, key: &str, record: &[&str]) -> std::process::Output {
    let args = [
        &["testkey", "-d", "example.com", "-s", selector, "-k", key],
        record,
    ]
    .concat();
    sidecar(&args, dir)
}

#[test]
fn testkey_txt_says_ok_for_matching_pairs_from_every_generator() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d, "rsa", &[]);
    keygen(d, "ed", &["--algorithm", "ed25519"]);
    run_ok(
        "opendkim-genkey",
        "opendkim-tools",
        &["-d", "example.com", "-s", "odk"],
        d,
    );
    run_ok("dknewkey", "python3-dkim", &["pyrsa"], d);
    run_ok(
        "dknewkey",
        "python3-dkim",
        &["--ktype", "ed25519", "pyed"],
        d,
    );
    for (selector, key, record) in [
        ("rsa", "rsa.private", "rsa.txt"),
        ("ed", "ed.private", "ed.txt"),
        ("odk", "odk.private", "odk.txt"),
        ("pyrsa", "pyrsa.key", "pyrsa.dns"),
        ("pyed", "pyed.key", "pyed.dns"),
    ] {
        let out = testkey(d, selector, key, &["--txt", record]);
        assert!(
            out.status.success(),
            "{selector}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(
            stdout(&out).starts_with(&format!(
                "key OK: {selector}._domainkey.example.com publishes the public key of {key}"
            )),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn testkey_txt_says_do_not_match_for_swapped_pairs_and_prints_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d, "one", &[]);
    keygen(d, "two", &[]);
    let out = testkey(d, "one", "two.private", &["--txt", "one.txt"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.starts_with(
            "keys do not match: one._domainkey.example.com publishes a different public key than two.private"
        ),
        "{text}"
    );
    let expected = format!(
        "v=DKIM1; h=sha256; k=rsa; p={}",
        openssl_rsa_p(&d.join("two.private"))
    );
    assert!(text.lines().any(|line| line == expected), "{text}");
}

#[test]
fn testkey_txt_reports_algorithm_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d, "rsa", &[]);
    keygen(d, "ed", &["--algorithm", "ed25519"]);
    let out = testkey(d, "ed", "rsa.private", &["--txt", "ed.txt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with(
            "algorithm mismatch: the record at ed._domainkey.example.com has k=ed25519"
        )
    );
}

#[test]
fn testkey_txt_reports_revoked_key_and_syntax_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d, "sel", &[]);
    for (record, expected) in [
        (
            "v=DKIM1; k=rsa; p=",
            "key revoked: the record at sel._domainkey.example.com has an empty p=",
        ),
        (
            "v=DKIM1; k=rsa",
            "record syntax error: the record at sel._domainkey.example.com is invalid: tag p=: is missing",
        ),
        (
            "v=DKIM1,k=rsa,p=AAEC",
            "record syntax error: the record at sel._domainkey.example.com is invalid: tag v=: \
             is followed by `,k=`: separate tags with `;`, not `,`",
        ),
        (
            "v=DKIM1; k=rsa; p=!!!",
            "record syntax error: the record at sel._domainkey.example.com is invalid: tag p=: is not valid base64",
        ),
    ] {
        fs::write(d.join("record"), record).unwrap();
        let out = testkey(d, "sel", "sel.private", &["--txt", "record"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stdout(&out).starts_with(expected), "{}", stdout(&out));
        assert!(stdout(&out).contains(&openssl_rsa_p(&d.join("sel.private"))));
    }
}

#[test]
fn testkey_nameserver_says_ok_not_found_and_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d, "rsa", &[]);
    keygen(d, "ed", &["--algorithm", "ed25519"]);
    let rsa_record = format!(
        "v=DKIM1; h=sha256; k=rsa; p={}",
        openssl_rsa_p(&d.join("rsa.private"))
    );
    let ed_record = format!(
        "v=DKIM1; k=ed25519; p={}",
        openssl_ed25519_p(&d.join("ed.private"))
    );
    let dns = Dnsmasq::start(&[
        ("rsa._domainkey.example.com", &rsa_record),
        ("ed._domainkey.example.com", &ed_record),
    ]);
    let ns = dns.addr.to_string();

    let out = testkey(d, "rsa", "rsa.private", &["--nameserver", &ns]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).starts_with("key OK: rsa._domainkey.example.com"));

    let out = testkey(d, "ed", "ed.private", &["--nameserver", &ns]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let out = testkey(d, "missing", "rsa.private", &["--nameserver", &ns]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .starts_with("record not found: no TXT record at missing._domainkey.example.com"),
        "{}",
        stdout(&out)
    );

    keygen(d, "other", &[]);
    let out = testkey(d, "rsa", "other.private", &["--nameserver", &ns]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("keys do not match"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn testkey_accepts_a_matching_1024_bit_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(
        "opendkim-genkey",
        "opendkim-tools",
        &["-b", "1024", "-d", "example.com", "-s", "old"],
        d,
    );
    let out = testkey(d, "old", "old.private", &["--txt", "old.txt"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("key OK: old._domainkey.example.com"),
        "{text}"
    );
}

#[test]
fn testkey_reports_a_missing_key_file_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = testkey(dir.path(), "sel", "absent.private", &["--txt", "sel.txt"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("dkim-sidecar: absent.private: key file not found"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn testkey_warns_about_an_exposed_key_but_still_compares() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d, "sel", &[]);
    fs::set_permissions(d.join("sel.private"), fs::Permissions::from_mode(0o644)).unwrap();
    let out = testkey(d, "sel", "sel.private", &["--txt", "sel.txt"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("warning: sel.private: key data is not secure: it can be read or written by group and others (mode 0644); fix: chmod 600 sel.private"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn testkey_reports_a_dns_failure_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d, "sel", &[]);
    // dnsmasq refuses names outside the zones it serves (and has no upstream).
    let dns = Dnsmasq::start(&[]);
    let args = [
        "testkey",
        "-d",
        "example.org",
        "-s",
        "sel",
        "-k",
        "sel.private",
        "--nameserver",
        &dns.addr.to_string(),
    ];
    let out = sidecar(&args, d);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("dkim-sidecar: DNS lookup of sel._domainkey.example.org failed: "),
        "{err}"
    );
    assert!(
        err.trim_end()
            .ends_with("check the nameserver, or test offline with --txt FILE"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn testkey_reports_an_unreadable_record_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d, "sel", &[]);
    let out = testkey(d, "sel", "sel.private", &["--txt", "absent.txt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .starts_with("dkim-sidecar: absent.txt: cannot read the record file: No such file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn testkey_offers_a_record_that_keeps_the_flags_keygen_wrote() {
    // keygen -r -t -S writes s=email and t=y:s; the record testkey offers
    // as the fix must keep them, or publishing it widens what the key may
    // be used for. Also when the published record separates its tags with
    // `,` and so cannot be parsed.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d, "one", &["-r", "-t", "-S"]);
    keygen(d, "two", &[]);
    let p = openssl_rsa_p(&d.join("two.private"));
    let expected = format!("v=DKIM1; h=sha256; k=rsa; t=y:s; s=email; p={p}");
    let written = fs::read_to_string(d.join("one.txt")).unwrap();
    assert!(written.contains("t=y:s; s=email;"), "{written}");
    fs::write(
        d.join("commas"),
        "v=DKIM1, h=sha256, k=rsa, t=y:s, s=email, p=AAEC",
    )
    .unwrap();
    for record in ["one.txt", "commas"] {
        let out = testkey(d, "one", "two.private", &["--txt", record]);
        assert_eq!(out.status.code(), Some(1));
        let text = stdout(&out);
        assert!(
            text.lines().any(|line| line == expected),
            "{record}: {text}"
        );
        assert!(
            text.contains("\"v=DKIM1; h=sha256; k=rsa; t=y:s; s=email; \""),
            "{record}: zone entry: {text}"
        );
    }
}
