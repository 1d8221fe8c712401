//! RemoveARFrom and ReplaceHeaders kept on a server (`dsn:`), end to end:
//! a private PostgreSQL on loopback (and an SQLite file, and for
//! RemoveARFrom an LDAP directory), dkim-sidecar reading an unchanged
//! opendkim.conf whose sets are `dsn:` data sets, and messages put to it
//! as Postfix would. RemoveARFrom decides which forged
//! Authentication-Results fields an inbound message loses; ReplaceHeaders
//! which fields ReplaceRules rewrites in the signature's view (checked by
//! dkimpy and OpenDKIM). With the database stopped, a message whose
//! outcome needs an answer is tempfailed and any other is handled as
//! usual.

use std::net::IpAddr;
use std::path::PathBuf;

use milter::client::{Message, Outcome};
use testkit::datasets::{
    INTERNAL, assert_signed, check_config, fields_kept, is_accepted, is_signed, is_tempfail,
    is_tempfail_at_end_of_message, message, message_with_fields, start,
};
use testkit::postgres::Postgres;
use testkit::slapd::Slapd;
use testkit::sqlite::SqliteFile;
use testkit::verify::assert_signed_by;
use testkit::{Sidecar, mta};

/// A client outside InternalHosts: its mail is verified, not signed.
fn outside() -> IpAddr {
    "192.0.2.44".parse().unwrap()
}

/// `Authentication-Results: HOST; WHAT`
fn ar(host: &str, what: &str) -> String {
    format!("Authentication-Results: {host}; {what}")
}

const DKIM_PASS: &str = "dkim=pass header.d=bank.example";

/// Rules that turn `@host.example.com` into `@example.com` (Postfix's
/// masquerade_domains), in a directory of their own.
fn masquerade_rules() -> (tempfile::TempDir, PathBuf) {
    let dir = testkit::scratch_dir("replace-rules");
    let path = dir.path().join("replace.txt");
    std::fs::write(&path, "@host\\.example\\.com\t@example.com\n").unwrap();
    (dir, path)
}

/// The message as delivered, with its From rewritten the way
/// [`masquerade_rules`] rewrite it (as a later hop would): what a signature
/// made after ReplaceRules covers.
fn delivered_masqueraded(sent: &Message, outcome: &Outcome) -> String {
    String::from_utf8_lossy(&mta::delivered(sent, outcome))
        .replace("From: alice@host.example.com", "From: alice@example.com")
}

/// Sends the message (an inbound one from outside) carrying `existing`
/// and returns the fields of `existing` still there on delivery.
fn kept_on_delivery(addr: std::net::SocketAddr, existing: &[String]) -> Vec<String> {
    let message = message_with_fields("carol@example.org", existing);
    let outcome = mta::send(addr, &message, outside(), "mta.example");
    fields_kept(&message, &outcome, existing)
}

#[test]
fn remove_ar_from_on_a_server_removes_listed_authserv_ids() {
    let pg = Postgres::start();
    pg.psql(
        "CREATE TABLE remar (host text); \
         INSERT INTO remar VALUES ('trusted.example'), ('.relay.example');",
    );
    let sidecar = Sidecar::builder()
        .config_line("Mode sv")
        .config_line(&format!("RemoveARFrom {}", pg.dsn("remar", "host", "host")))
        .write();
    let (milter, addr) = start(&sidecar);
    let existing = [
        // A forged pass from a listed authserv-id: removed.
        ar("trusted.example", DKIM_PASS),
        // A subdomain of a listed `.relay.example`: removed.
        ar("mx.relay.example/4QX", DKIM_PASS),
        // An authserv-id the table does not list: kept.
        ar("other.example", DKIM_PASS),
        // Listed, but no dkim result (RemoveARAll is off): kept.
        ar("trusted.example", "spf=pass smtp.mailfrom=example.org"),
    ];
    assert_eq!(
        kept_on_delivery(addr, &existing),
        [existing[2].clone(), existing[3].clone()]
    );
    let log = milter.log();
    assert!(log.contains("removed_auth_results=2"), "{log}");
    assert!(!log.contains(Postgres::PASSWORD), "{log}");
}

#[test]
fn replace_headers_on_a_server_rewrites_only_the_listed_fields() {
    let pg = Postgres::start();
    pg.psql("CREATE TABLE rephdrs (name text); INSERT INTO rephdrs VALUES ('From');");
    let (_rules_dir, rules) = masquerade_rules();
    let sidecar = Sidecar::builder()
        .config_line(&format!("ReplaceRules {}", rules.display()))
        .config_line(&format!(
            "ReplaceHeaders {}",
            pg.dsn("rephdrs", "name", "name")
        ))
        .write();
    let (milter, addr) = start(&sidecar);
    // From and To both name host.example.com; only From is listed.
    let sent = message("alice@host.example.com", "bob@host.example.com");
    let outcome = mta::send(addr, &sent, INTERNAL, "mta.example");
    assert!(is_signed(&outcome), "signed as example.com: {outcome:?}");
    // The signature covers the From a later hop delivers (rewritten), and
    // the To as sent (not listed, so not rewritten).
    let delivered = delivered_masqueraded(&sent, &outcome);
    assert!(
        delivered.contains("To: bob@host.example.com"),
        "{delivered}"
    );
    assert_signed_by(
        delivered.as_bytes(),
        &sidecar.dns_records(),
        &sidecar.keys(),
    );
    // Nothing for the rules to rewrite: signed as usual.
    assert_signed(&sidecar, addr, "alice@example.com");
    assert!(!milter.log().contains(Postgres::PASSWORD));
}

/// Both sets on one database, which stops before any message: a message
/// whose outcome depends on an answer that cannot be had is tempfailed;
/// one that needs no answer goes through as usual. Once the database is
/// back, the held messages go through.
#[test]
fn a_server_down_tempfails_only_the_messages_that_need_its_answer() {
    let mut pg = Postgres::start();
    pg.psql(
        "CREATE TABLE remar (host text); INSERT INTO remar VALUES ('trusted.example'); \
         CREATE TABLE rephdrs (name text); INSERT INTO rephdrs VALUES ('From');",
    );
    let (_rules_dir, rules) = masquerade_rules();
    let sidecar = Sidecar::builder()
        .config_line("Mode sv")
        .config_line(&format!("RemoveARFrom {}", pg.dsn("remar", "host", "host")))
        .config_line(&format!("ReplaceRules {}", rules.display()))
        .config_line(&format!(
            "ReplaceHeaders {}",
            pg.dsn("rephdrs", "name", "name")
        ))
        .write();
    let (milter, addr) = start(&sidecar);
    pg.stop();

    // Inbound with a field RemoveARFrom decides: tempfailed at end of
    // message, never delivered with a field that may be forged.
    let forged = [ar("trusted.example", DKIM_PASS)];
    let inbound = message_with_fields("carol@example.org", &forged);
    let outcome = mta::send(addr, &inbound, outside(), "mta.example");
    assert!(is_tempfail_at_end_of_message(&outcome), "{outcome:?}");
    // Inbound with no such field (none, or one without a dkim result):
    // nothing to ask, delivered.
    for fields in [
        vec![],
        vec![ar("trusted.example", "spf=pass smtp.mailfrom=example.org")],
    ] {
        let inbound = message_with_fields("carol@example.org", &fields);
        let outcome = mta::send(addr, &inbound, outside(), "mta.example");
        assert!(is_accepted(&outcome), "{fields:?}: {outcome:?}");
        assert_eq!(fields_kept(&inbound, &outcome, &fields), fields);
    }
    // Inbound whose From the rules would rewrite: not signed whatever
    // ReplaceHeaders says (an untrusted client), so verified as usual.
    let outcome = mta::send(
        addr,
        &message("carol@host.example.com", "bob@example.org"),
        outside(),
        "mta.example",
    );
    assert!(is_accepted(&outcome) && !is_signed(&outcome), "{outcome:?}");
    // Outbound whose From the rules would rewrite: signed or not, and how,
    // depends on ReplaceHeaders: tempfailed.
    let outbound = message("alice@host.example.com", "bob@example.org");
    let outcome = mta::send(addr, &outbound, INTERNAL, "mta.example");
    assert!(is_tempfail(&outcome), "{outcome:?}");
    // Outbound with nothing to rewrite: signed.
    assert_signed(&sidecar, addr, "alice@example.com");

    pg.restart();
    assert!(kept_on_delivery(addr, &forged).is_empty());
    let outcome = mta::send(addr, &outbound, INTERNAL, "mta.example");
    assert!(is_signed(&outcome), "{outcome:?}");

    let log = milter.log();
    assert!(
        log.contains("RemoveARFrom dsn:pgsql://postgres:****@"),
        "{log}"
    );
    assert!(
        log.contains("ReplaceHeaders dsn:pgsql://postgres:****@"),
        "{log}"
    );
    assert_eq!(
        log.matches("reason=data_set_unavailable").count(),
        2,
        "one line per held message: {log}"
    );
    assert!(!log.contains(Postgres::PASSWORD), "{log}");
}

#[test]
fn check_config_lists_remove_ar_from_and_replace_headers_servers() {
    let mut pg = Postgres::start();
    pg.psql("CREATE TABLE remar (host text); CREATE TABLE rephdrs (name text);");
    let (_rules_dir, rules) = masquerade_rules();
    let sidecar = Sidecar::builder()
        .config_line("Socket inet:8891@localhost")
        .config_line("Mode sv")
        .config_line(&format!("RemoveARFrom {}", pg.dsn("remar", "host", "host")))
        .config_line(&format!("ReplaceRules {}", rules.display()))
        .config_line(&format!(
            "ReplaceHeaders {}",
            pg.dsn("rephdrs", "name", "name")
        ))
        .write();
    let (ok, text) = check_config("-x", sidecar.config(), Postgres::PASSWORD);
    assert!(ok, "{text}");
    for role in ["RemoveARFrom", "ReplaceHeaders"] {
        assert!(
            text.contains(&format!("{role} server dsn:pgsql://postgres:****@")),
            "{role}: {text}"
        );
    }
    assert!(
        text.contains("RemoveARFrom: asked per message of dsn:pgsql://postgres:****@"),
        "{text}"
    );
    assert!(
        text.contains("the ReplaceHeaders fields, asked per message of dsn:pgsql://"),
        "{text}"
    );

    pg.stop();
    let (ok, text) = check_config("-x", sidecar.config(), Postgres::PASSWORD);
    assert!(!ok, "{text}");
    assert!(
        text.contains("RemoveARFrom server dsn:pgsql://postgres:****@")
            && text.contains("cannot connect"),
        "{text}"
    );
}

/// The same two sets in an SQLite file decide the same way.
#[test]
fn remove_ar_from_and_replace_headers_in_sqlite_decide_as_in_postgresql() {
    let db = SqliteFile::create();
    db.sql(
        "CREATE TABLE remar (host TEXT); INSERT INTO remar VALUES ('.trusted.example'); \
         CREATE TABLE rephdrs (name TEXT); INSERT INTO rephdrs VALUES ('from');",
    );
    let (_rules_dir, rules) = masquerade_rules();
    let sidecar = Sidecar::builder()
        .config_line("Mode sv")
        .config_line(&db.base_directory())
        .config_line(&format!("RemoveARFrom {}", db.dsn("remar", "host", "host")))
        .config_line(&format!("ReplaceRules {}", rules.display()))
        .config_line(&format!(
            "ReplaceHeaders {}",
            db.dsn("rephdrs", "name", "name")
        ))
        .write();
    let (_milter, addr) = start(&sidecar);
    let existing = [
        ar("trusted.example", DKIM_PASS),
        ar("mx.trusted.example", DKIM_PASS),
        ar("untrusted.example", DKIM_PASS),
    ];
    assert_eq!(kept_on_delivery(addr, &existing), [existing[2].clone()]);
    // A row `from` (lower case) lists the field written `From`.
    let sent = message("alice@host.example.com", "bob@example.org");
    let outcome = mta::send(addr, &sent, INTERNAL, "mta.example");
    let delivered = delivered_masqueraded(&sent, &outcome);
    assert_signed_by(
        delivered.as_bytes(),
        &sidecar.dns_records(),
        &sidecar.keys(),
    );
}

/// RemoveARFrom in an LDAP directory: an entry per authserv-id (`cn`),
/// found with `(cn=$d)`. A forged field whose authserv-id is `*` would
/// match every entry if the key went into the filter unescaped; escaped
/// (RFC 4515) it matches none, and the field is kept like any unlisted
/// one.
#[test]
fn remove_ar_from_in_ldap_removes_listed_authserv_ids_and_escapes_the_rest() {
    let entry = |cn: &str| {
        format!("dn: cn={cn},ou=remar,dc=example,dc=com\nobjectClass: device\ncn: {cn}\n\n")
    };
    let ldif = format!(
        "dn: ou=remar,dc=example,dc=com\nobjectClass: organizationalUnit\nou: remar\n\n{}{}",
        entry("trusted.example"),
        entry(".relay.example")
    );
    let slapd = Slapd::start(&ldif);
    let sidecar = Sidecar::builder()
        .config_line("Mode sv")
        .config_line(&format!(
            "RemoveARFrom {}/ou=remar,dc=example,dc=com?cn?sub?(cn=$d)",
            slapd.url()
        ))
        .config_line(&format!("LDAPBindUser {}", Slapd::READER))
        .config_line(&format!("LDAPBindPassword {}", Slapd::PASSWORD))
        .write();
    let (milter, addr) = start(&sidecar);
    let existing = [
        ar("trusted.example", DKIM_PASS),
        ar("mx.relay.example", DKIM_PASS),
        ar("other.example", DKIM_PASS),
        ar("*", DKIM_PASS),
    ];
    assert_eq!(
        kept_on_delivery(addr, &existing),
        [existing[2].clone(), existing[3].clone()]
    );
    let log = milter.log();
    assert!(!log.contains(Slapd::PASSWORD), "{log}");
}
