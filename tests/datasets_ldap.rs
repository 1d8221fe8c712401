//! KeyTable and SigningTable kept in an LDAP directory (`ldap://`,
//! `ldapi://`), end to end: a private slapd on loopback (one for the tests
//! of this binary; a second one for the test that stops it), dkim-sidecar
//! reading an unchanged opendkim.conf with OpenDKIM's LDAP options, and
//! messages put to it as Postfix would, each signature checked by dkimpy
//! and OpenDKIM.
//!
//! The SigningTable is searched by filter (`(mail=$d)`, the sender
//! escaped), the KeyTable by base (`ou=dkim,$D`: key `example.com` is the
//! entry `ou=dkim,dc=example,dc=com`).

use base64::Engine as _;
use testkit::datasets::{
    INTERNAL, assert_delivered_unsigned, assert_signed, check_config, is_tempfail, message_from,
    rides_out_an_outage, start, start_trusting,
};
use testkit::keys::TestKeys;
use testkit::slapd::Slapd;
use testkit::{Sidecar, mta};

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A SigningTable entry: `mail` is the key, `description` the key name.
fn signer(cn: &str, mail: &str, key_name: &str) -> String {
    format!(
        "dn: cn={cn},ou=signing,dc=example,dc=com\nobjectClass: inetOrgPerson\ncn: {cn}\nsn: {cn}\n\
         mail:: {}\ndescription: {key_name}\n\n",
        b64(mail)
    )
}

/// A KeyTable entry for key name `label.example.com` (or `example.com`
/// with no label), with the attributes given.
fn key_entry(label: Option<&str>, attributes: &[(&str, &str)]) -> String {
    let mut ldif = String::new();
    let parent = match label {
        Some(label) => {
            ldif.push_str(&format!(
                "dn: dc={label},dc=example,dc=com\nobjectClass: domain\ndc: {label}\n\n"
            ));
            format!("dc={label},dc=example,dc=com")
        }
        None => "dc=example,dc=com".to_string(),
    };
    ldif.push_str(&format!(
        "dn: ou=dkim,{parent}\nobjectClass: organizationalUnit\nobjectClass: DKIM\nou: dkim\n"
    ));
    for (name, value) in attributes {
        ldif.push_str(&format!("{name}:: {}\n", b64(value)));
    }
    ldif.push('\n');
    ldif
}

/// The directory every test reads: alice and bob signed with the RSA
/// key; three senders whose key entries cannot be used.
fn directory() -> String {
    let key = TestKeys::load().rsa;
    let pem = std::fs::read_to_string(&key.private_key).unwrap();
    let mut ldif = String::from(
        "dn: ou=signing,dc=example,dc=com\nobjectClass: organizationalUnit\nou: signing\n\n",
    );
    ldif.push_str(&signer("alice", "alice@example.com", "example.com"));
    ldif.push_str(&signer("bob", "bob@example.com", "example.com"));
    ldif.push_str(&signer(
        "broken",
        "broken@example.com",
        "broken.example.com",
    ));
    ldif.push_str(&signer("nosel", "nosel@example.com", "nosel.example.com"));
    ldif.push_str(&signer("big", "big@example.com", "big.example.com"));
    ldif.push_str(&key_entry(
        None,
        &[
            ("DKIMDomain", &key.domain),
            ("DKIMSelector", &key.selector),
            ("DKIMKey", &pem),
        ],
    ));
    ldif.push_str(&key_entry(
        Some("broken"),
        &[
            ("DKIMDomain", "example.com"),
            ("DKIMSelector", "broken"),
            ("DKIMKey", "MIIBnot-a-key"),
        ],
    ));
    ldif.push_str(&key_entry(
        Some("nosel"),
        &[("DKIMDomain", "example.com"), ("DKIMKey", &pem)],
    ));
    let big = "A".repeat(10 * 1024 * 1024);
    ldif.push_str(&key_entry(
        Some("big"),
        &[
            ("DKIMDomain", "example.com"),
            ("DKIMSelector", "big"),
            ("DKIMKey", &big),
        ],
    ));
    ldif
}

/// The two tables as URLs on `servers` (space-separated fallbacks).
fn tables(servers: &[String]) -> (String, String) {
    let signing: Vec<String> = servers
        .iter()
        .map(|s| format!("{s}/ou=signing,dc=example,dc=com?description?sub?(mail=$d)"))
        .collect();
    let keys: Vec<String> = servers
        .iter()
        .map(|s| format!("{s}/ou=dkim,$D?DKIMDomain,DKIMSelector,DKIMKey?base"))
        .collect();
    (keys.join(" "), signing.join(" "))
}

/// A sidecar on `servers`, logging in with a simple bind.
fn sidecar_on(servers: &[String], extra: &[&str]) -> Sidecar {
    let (keys, signing) = tables(servers);
    let mut builder = Sidecar::builder()
        .config_line("Socket inet:8891@localhost")
        .config_line(&format!("KeyTable {keys}"))
        .config_line(&format!("SigningTable {signing}"))
        .config_line(&format!("LDAPBindUser {}", Slapd::READER))
        .config_line(&format!("LDAPBindPassword {}", Slapd::PASSWORD));
    for line in extra {
        builder = builder.config_line(line);
    }
    builder.write()
}

#[test]
fn signs_with_tables_in_ldap_and_a_sender_never_widens_the_filter() {
    let slapd = Slapd::shared(directory);
    let sidecar = sidecar_on(&[slapd.url()], &[]);
    let (milter, addr) = start(&sidecar);
    assert_signed(&sidecar, addr, "alice@example.com");

    // No entry: not signed, and said why.
    assert_delivered_unsigned(&sidecar, addr, "carol@example.com");
    // Pasted into the filter unescaped, `*@example.com` (a valid address:
    // `*` is atext) would match alice's entry and `*)(uid=*` would widen
    // the filter; escaped, they match nothing.
    for sender in ["*@example.com", "\"*)(uid=*\"@example.com"] {
        assert_delivered_unsigned(&sidecar, addr, sender);
    }
    let log = milter.log();
    assert!(
        log.contains("no SigningTable match for carol@example.com"),
        "{log}"
    );
    assert_eq!(
        log.matches("no SigningTable match").count(),
        3,
        "carol and both filter senders: {log}"
    );
    assert!(!log.contains(Slapd::PASSWORD), "{log}");
}

#[test]
fn sasl_external_over_ldapi_logs_in_without_a_password() {
    let slapd = Slapd::shared(directory);
    let (keys, signing) = tables(&[slapd.ldapi_url()]);
    let sidecar = Sidecar::builder()
        .config_line(&format!("KeyTable {keys}"))
        .config_line(&format!("SigningTable {signing}"))
        .config_line("LDAPAuthMechanism EXTERNAL")
        .write();
    let (_milter, addr) = start(&sidecar);
    assert_signed(&sidecar, addr, "alice@example.com");
}

/// TLS to the directory, verified: over `ldaps://`, and over `ldap://`
/// with StartTLS (LDAPUseTLS), dkim-sidecar signs once the directory's CA
/// is trusted (given as SSL_CERT_FILE, as the system's store would hold
/// it). A certificate nobody vouches for is refused: the mail that needs
/// the directory is tempfailed and the log names the server, never the
/// password.
#[test]
fn tls_to_the_directory_is_verified_over_ldaps_and_with_starttls() {
    let slapd = Slapd::shared(directory);
    let ldaps = sidecar_on(&[slapd.ldaps_url()], &[]);
    let (_milter, addr) = start_trusting(&ldaps, &slapd.ca_file());
    assert_signed(&ldaps, addr, "alice@example.com");

    let starttls = sidecar_on(&[slapd.url()], &["LDAPUseTLS yes"]);
    let (_milter, addr) = start_trusting(&starttls, &slapd.ca_file());
    assert_signed(&starttls, addr, "alice@example.com");

    for (sidecar, server) in [(&ldaps, slapd.ldaps_url()), (&starttls, slapd.url())] {
        let nobody = sidecar.dir().join("no-authority.pem");
        std::fs::write(&nobody, "").unwrap();
        let (milter, addr) = start_trusting(sidecar, &nobody);
        let outcome = mta::send(
            addr,
            &message_from("alice@example.com"),
            INTERNAL,
            "mta.example",
        );
        assert!(is_tempfail(&outcome), "{server}: {outcome:?}");
        let log = milter.log();
        assert!(log.contains(&server), "{log}");
        assert!(log.to_lowercase().contains("certificate"), "{log}");
        assert!(!log.contains(Slapd::PASSWORD), "{log}");
    }
}

#[test]
fn a_dead_first_server_falls_back_to_the_next() {
    let slapd = Slapd::shared(directory);
    let dead = format!("ldap://{}", testkit::free_local_addr());
    let sidecar = sidecar_on(&[dead, slapd.url()], &[]);
    let (_milter, addr) = start(&sidecar);
    assert_signed(&sidecar, addr, "alice@example.com");
}

#[test]
fn unusable_entries_get_the_key_action_and_a_clear_log_line() {
    let slapd = Slapd::shared(directory);
    let sidecar = sidecar_on(&[slapd.url()], &[]);
    let (milter, addr) = start(&sidecar);
    for sender in ["nosel@example.com", "big@example.com", "broken@example.com"] {
        let outcome = mta::send(addr, &message_from(sender), INTERNAL, "mta.example");
        assert!(is_tempfail(&outcome), "{sender}: {outcome:?}");
    }
    assert_signed(&sidecar, addr, "alice@example.com");
    let log = milter.log();
    assert!(
        log.contains("the entry has no attribute `DKIMSelector`"),
        "{log}"
    );
    assert!(log.contains("bytes long (at most 65536)"), "{log}");
    assert!(log.contains("KeyTable entry `broken.example.com`"), "{log}");
}

/// A wrong bind password: check-config says the server refused the bind;
/// `run` starts (SoftStart is on unless written off) and tempfails the mail
/// that needs the directory, or with `SoftStart no` refuses to start, as
/// OpenDKIM does by default.
#[test]
fn a_refused_bind_fails_check_config_and_holds_only_the_mail_that_needs_it() {
    let slapd = Slapd::shared(directory);
    let good = sidecar_on(&[slapd.url()], &[]);
    let (ok, text) = check_config("-x", good.config(), Slapd::PASSWORD);
    assert!(ok, "{text}");
    assert!(text.contains("(LDAP): connected"), "{text}");

    let wrong = |extra: &[&str]| {
        let mut lines = vec!["LDAPBindPassword not-the-password"];
        lines.extend_from_slice(extra);
        sidecar_on(&[slapd.url()], &lines)
    };
    let sidecar = wrong(&["SoftStart no"]);
    let (ok, text) = check_config("-x", sidecar.config(), Slapd::PASSWORD);
    assert!(!ok, "{text}");
    assert!(text.contains("refused the bind"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dkim-sidecar"))
        .args(["run", "-x"])
        .arg(sidecar.config())
        .args(["--socket", &format!("inet:{}", testkit::free_local_addr())])
        .arg("--allow-root")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("cannot be used"), "{text}");
    assert!(text.contains("SoftStart"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");

    let sidecar = wrong(&[]);
    let (milter, addr) = start(&sidecar);
    let outcome = mta::send(
        addr,
        &message_from("alice@example.com"),
        INTERNAL,
        "mta.example",
    );
    assert!(is_tempfail(&outcome), "{outcome:?}");
    let log = milter.log();
    assert!(log.contains("starting anyway (SoftStart)"), "{log}");
    assert!(!log.contains("not-the-password"), "{log}");
}

#[test]
fn directory_down_serves_cached_senders_tempfails_the_rest_and_recovers() {
    let mut slapd = Slapd::start(&directory());
    let sidecar = sidecar_on(&[slapd.url()], &[]);
    let (milter, addr) = start(&sidecar);
    rides_out_an_outage(
        &mut slapd,
        &sidecar,
        &milter,
        addr,
        ("alice@example.com", "bob@example.com"),
        Some(Slapd::PASSWORD),
    );
}

/// A server that accepts connections and never answers: the search gives
/// up after LDAPTimeout, that message is tempfailed, and mail that needs
/// no lookup in it keeps flowing.
#[test]
fn a_server_that_never_answers_times_out_into_a_tempfail() {
    let slapd = Slapd::shared(directory);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("ldap://{}", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    // The SigningTable answers; the KeyTable's server never does.
    let (_, signing) = tables(&[slapd.url()]);
    let (keys, _) = tables(&[silent_url]);
    let sidecar = Sidecar::builder()
        .config_line(&format!("KeyTable {keys}"))
        .config_line(&format!("SigningTable {signing}"))
        .config_line(&format!("LDAPBindUser {}", Slapd::READER))
        .config_line(&format!("LDAPBindPassword {}", Slapd::PASSWORD))
        .config_line("LDAPTimeout 2")
        // Started with the server silent: it starts (SoftStart's default
        // here) and holds only the mail that needs the server.
        .write();
    let (milter, addr) = start(&sidecar);
    let outcome = mta::send(
        addr,
        &message_from("alice@example.com"),
        INTERNAL,
        "mta.example",
    );
    assert!(is_tempfail(&outcome), "{outcome:?}");
    assert_delivered_unsigned(&sidecar, addr, "carol@example.com");
    let log = milter.log();
    assert!(
        log.contains("no connection within") || log.contains("no answer within"),
        "{log}"
    );
    assert!(!log.contains(Slapd::PASSWORD), "{log}");
}
