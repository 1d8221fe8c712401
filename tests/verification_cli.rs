//! `dkim-sidecar verify` (offline, through the milter's code path) against
//! `opendkim -t` (OpenDKIM's offline test mode) on the same opendkim.conf
//! with `TestPublicKeys`: the same Authentication-Results results, and an
//! exit status that says whether a signature passed.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use testkit::TestKeys;
use testkit::mta;
use testkit::signers::{message, sign_ours};

fn ours(conf: &Path, raw: &[u8]) -> (bool, String) {
    let mut child = Command::new(testkit::binary())
        .args(["verify", "-x"])
        .arg(conf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(raw).unwrap();
    let out = child.wait_with_output().unwrap();
    let field = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        field.starts_with("Authentication-Results: mx.cli.example;"),
        "{field}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), field)
}

/// The field `opendkim -t -vv` says it would insert.
fn opendkim(conf: &Path, dir: &Path, raw: &[u8]) -> String {
    let file = dir.join("message.eml");
    std::fs::write(&file, raw).unwrap();
    let out = Command::new("/usr/sbin/opendkim")
        .arg("-x")
        .arg(conf)
        .arg("-t")
        .arg(&file)
        .arg("-vv")
        .output()
        .expect("opendkim");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let start = text
        .find("hname='Authentication-Results' hvalue='")
        .unwrap_or_else(|| panic!("no field in:\n{text}"));
    let value = &text[start + "hname='Authentication-Results' hvalue='".len()..];
    value[..value.find('\'').unwrap()].to_string()
}

fn results(field: &str) -> Vec<String> {
    let value = field.split_once(':').map_or(field, |(_, v)| v);
    mta::dkim_entries(value.trim())
        .into_iter()
        .map(|e| e.result)
        .collect()
}

#[test]
fn verify_prints_opendkims_results_and_exits_0_only_on_a_pass() {
    let dir = testkit::scratch_dir("verify-cli");
    let keys = TestKeys::copy_into(dir.path());
    std::fs::write(
        dir.path().join("keys"),
        format!(
            "default._domainkey.example.com {}\ned25519._domainkey.example.com {}\n",
            keys.rsa.txt, keys.ed25519.txt
        ),
    )
    .unwrap();
    let conf = dir.path().join("opendkim.conf");
    std::fs::write(
        &conf,
        format!(
            "Mode v\nSyslog no\nAuthservID mx.cli.example\nAlwaysAddARHeader yes\n\
             TestPublicKeys {}\n",
            dir.path().join("keys").display()
        ),
    )
    .unwrap();
    let rsa = sign_ours(
        &message("a", "example.com"),
        "example.com",
        "default",
        &keys.rsa.private_key,
        "",
    );
    let dual = sign_ours(
        &rsa,
        "example.com",
        "ed25519",
        &keys.ed25519.private_key,
        "",
    );
    let tampered = String::from_utf8_lossy(&dual)
        .replace("this is a test", "this was a test")
        .into_bytes();
    let unknown = sign_ours(
        &message("b", "example.com"),
        "example.com",
        "nokey",
        &keys.rsa.private_key,
        "",
    );
    for (name, raw, passes, expected) in [
        ("rsa", rsa.clone(), true, vec!["pass"]),
        ("rsa + ed25519", dual.clone(), true, vec!["pass", "pass"]),
        ("tampered", tampered, false, vec!["fail", "fail"]),
        ("unsigned", message("c", "example.com"), false, vec!["none"]),
    ] {
        let (ok, field) = ours(&conf, &raw);
        assert_eq!(ok, passes, "{name}: exit status: {field}");
        let theirs = opendkim(&conf, dir.path(), &raw);
        let mine = if expected == ["none"] {
            assert!(
                field.contains("dkim=none") && theirs.contains("dkim=none"),
                "{field} / {theirs}"
            );
            continue;
        } else {
            results(&field)
        };
        assert_eq!(mine, expected, "{name}: {field}");
        assert_eq!(
            results(&theirs),
            mine,
            "{name}: opendkim {theirs} / ours {field}"
        );
    }
    // A key the test records lack: OpenDKIM fails it, we call it a
    // permanent error (README, "Differences from OpenDKIM").
    let (ok, field) = ours(&conf, &unknown);
    assert!(!ok);
    assert_eq!(results(&field), ["permerror"], "{field}");
    assert_eq!(results(&opendkim(&conf, dir.path(), &unknown)), ["fail"]);
}

#[test]
fn strict_headers_makes_a_message_with_two_from_fields_permerror_as_opendkim_does() {
    let dir = testkit::scratch_dir("verify-strict");
    let keys = TestKeys::copy_into(dir.path());
    std::fs::write(
        dir.path().join("keys"),
        format!("default._domainkey.example.com {}\n", keys.rsa.txt),
    )
    .unwrap();
    let conf = dir.path().join("opendkim.conf");
    let write_conf = |strict: &str| {
        std::fs::write(
            &conf,
            format!(
                "Mode v\nSyslog no\nAuthservID mx.cli.example\nStrictHeaders {strict}\n\
                 TestPublicKeys {}\n",
                dir.path().join("keys").display()
            ),
        )
        .unwrap();
    };
    let signed = sign_ours(
        &message("strict", "example.com"),
        "example.com",
        "default",
        &keys.rsa.private_key,
        "",
    );
    // A second From above the signed one: readers may show either.
    let mut doubled = b"From: ceo@example.net\n".to_vec();
    doubled.extend_from_slice(&signed);

    write_conf("no");
    let (ok, field) = ours(&conf, &doubled);
    assert!(!ok, "{field}");
    assert_eq!(
        results(&field),
        ["fail"],
        "control: without StrictHeaders the oversigned From catches it as a plain fail: {field}"
    );

    write_conf("yes");
    let (ok, field) = ours(&conf, &doubled);
    assert!(!ok, "{field}");
    assert_eq!(results(&field), ["permerror"], "{field}");
    assert!(
        field.contains("multiple From: header fields present"),
        "{field}"
    );
    assert_eq!(
        results(&opendkim(&conf, dir.path(), &doubled)),
        ["permerror"]
    );
    let (ok, field) = ours(&conf, &signed);
    assert!(ok, "one From still passes under StrictHeaders: {field}");
}
