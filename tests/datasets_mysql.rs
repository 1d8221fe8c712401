//! KeyTable and SigningTable kept in MariaDB (`dsn:mysql://`), end to end:
//! a private MariaDB on loopback (one for the tests of this binary, each
//! in its own database; a second one for the test that stops it),
//! dkim-sidecar reading an unchanged opendkim.conf whose tables are
//! `dsn:` data sets, and messages put to it as Postfix would, each
//! signature checked by dkimpy and OpenDKIM.

use testkit::datasets::{
    INTERNAL, assert_accepted_unsigned, assert_signed, assert_signed_from, check_config,
    is_accepted, is_tempfail, key_and_signing_tables, message_from, rides_out_an_outage,
    sidecar_on_tables, signs_listed_senders_only, sql_in_a_sender_matches_nothing, start,
};
use testkit::mariadb::MariaDb;
use testkit::{Sidecar, mta};

#[test]
fn signs_with_keytable_and_signingtable_kept_in_mariadb() {
    let db = MariaDb::shared();
    let tables = db.tables_in("signs");
    let sidecar = sidecar_on_tables(&tables);
    key_and_signing_tables(
        &tables,
        &sidecar,
        &[("alice@example.com", "rsa"), ("example.net", "rsa")],
    );
    let (milter, addr) = start(&sidecar);
    signs_listed_senders_only(&sidecar, &milter, addr, Some(MariaDb::PASSWORD));
}

#[test]
fn a_sender_written_as_sql_matches_nothing() {
    let db = MariaDb::shared();
    let tables = db.tables_in("injection");
    let sidecar = sidecar_on_tables(&tables);
    key_and_signing_tables(&tables, &sidecar, &[("alice@example.com", "rsa")]);
    let (milter, addr) = start(&sidecar);
    sql_in_a_sender_matches_nothing(&sidecar, &milter, addr);
}

#[test]
fn a_filter_written_with_escapes_selects_the_rows() {
    let db = MariaDb::shared();
    let tables = db.tables_in("filtered");
    let database = tables.database.clone();
    let sidecar_probe = Sidecar::builder().write();
    key_and_signing_tables(
        &tables,
        &sidecar_probe,
        &[("alice@example.com", "rsa"), ("retired@example.com", "rsa")],
    );
    db.sql(&format!(
        "ALTER TABLE {database}.signing ADD active int NOT NULL DEFAULT 1; \
         UPDATE {database}.signing SET active = 0 WHERE addr = 'retired@example.com';"
    ));
    // `?filter=active = 1`, its ` ` and `=` written as OpenDKIM wants.
    let sidecar = Sidecar::builder()
        .config_line(&format!(
            "KeyTable {}",
            db.dsn(&database, "keys", "name", "domain,selector,key")
        ))
        .config_line(&format!(
            "SigningTable {}?filter=active=20=3D=201",
            db.dsn(&database, "signing", "addr", "keyname")
        ))
        .write();
    let (milter, addr) = start(&sidecar);
    assert_signed(&sidecar, addr, "alice@example.com");
    let outcome = mta::send(
        addr,
        &message_from("retired@example.com"),
        INTERNAL,
        "mta.example",
    );
    assert!(is_accepted(&outcome), "{outcome:?}");
    let log = milter.log();
    assert!(
        log.contains("no SigningTable match for retired@example.com"),
        "{log}"
    );
}

#[test]
fn unusable_rows_get_the_key_action_and_a_clear_log_line() {
    let db = MariaDb::shared();
    let tables = db.tables_in("unusable");
    let database = tables.database.clone();
    let sidecar = sidecar_on_tables(&tables);
    key_and_signing_tables(
        &tables,
        &sidecar,
        &[
            ("alice@example.com", "rsa"),
            ("null@example.com", "nullkey"),
            ("big@example.com", "big"),
            ("broken@example.com", "broken"),
        ],
    );
    db.sql(&format!(
        "USE {database}; \
         INSERT INTO `keys` VALUES ('nullkey', 'example.com', NULL, 'x'); \
         INSERT INTO `keys` VALUES ('big', 'example.com', 'big', repeat('A', 10 * 1024 * 1024)); \
         INSERT INTO `keys` VALUES ('broken', 'example.com', 'broken', 'MIIBnot-a-key');"
    ));
    let (milter, addr) = start(&sidecar);
    for sender in ["null@example.com", "big@example.com", "broken@example.com"] {
        let outcome = mta::send(addr, &message_from(sender), INTERNAL, "mta.example");
        assert!(is_tempfail(&outcome), "{sender}: {outcome:?}");
    }
    assert_signed(&sidecar, addr, "alice@example.com");
    let log = milter.log();
    assert!(log.contains("column `selector` is NULL"), "{log}");
    assert!(log.contains("bytes long (at most 65536)"), "{log}");
    assert!(log.contains("KeyTable entry `broken`"), "{log}");
    assert!(!log.contains(MariaDb::PASSWORD), "{log}");
}

#[test]
fn check_config_names_the_database_and_refuses_a_wrong_password() {
    let db = MariaDb::shared();
    let tables = db.tables_in("checked");
    let database = tables.database.clone();
    let sidecar = sidecar_on_tables(&tables);
    key_and_signing_tables(&tables, &sidecar, &[("alice@example.com", "rsa")]);
    let (ok, text) = check_config("-x", sidecar.config(), MariaDb::PASSWORD);
    assert!(ok, "{text}");
    assert!(
        text.contains("KeyTable server dsn:mysql://dkim:****@"),
        "{text}"
    );
    assert!(text.contains("(MySQL/MariaDB): connected"), "{text}");

    let wrong = Sidecar::builder()
        .config_line("Socket inet:8891@localhost")
        .config_line(&format!(
            "KeyTable {}",
            db.dsn(&database, "keys", "name", "domain,selector,key")
                .replace(MariaDb::PASSWORD, "not-the-password")
        ))
        .config_line(&format!(
            "SigningTable {}",
            db.dsn(&database, "signing", "addr", "keyname")
        ))
        .write();
    let (ok, text) = check_config("-x", wrong.config(), MariaDb::PASSWORD);
    assert!(!ok, "{text}");
    assert!(text.contains("Access denied"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
}

#[test]
fn database_down_serves_cached_senders_tempfails_the_rest_and_recovers() {
    let mut db = MariaDb::start();
    let tables = db.tables_in("outage");
    let sidecar = sidecar_on_tables(&tables);
    key_and_signing_tables(
        &tables,
        &sidecar,
        &[("alice@example.com", "rsa"), ("bob@example.com", "rsa")],
    );
    let (milter, addr) = start(&sidecar);
    rides_out_an_outage(
        &mut db,
        &sidecar,
        &milter,
        addr,
        ("alice@example.com", "bob@example.com"),
        Some(MariaDb::PASSWORD),
    );
}

/// A server that accepts connections and never answers: the lookup gives
/// up after the connect timeout, that message is tempfailed, and mail
/// whose tables answer keeps flowing.
#[test]
fn a_server_that_never_answers_times_out_into_a_tempfail() {
    let db = MariaDb::shared();
    let tables = db.tables_in("silent");
    let database = tables.database.clone();
    let probe = Sidecar::builder().write();
    key_and_signing_tables(&tables, &probe, &[("alice@example.com", "rsa")]);

    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    // The SigningTable answers; the KeyTable's server never does.
    let sidecar = Sidecar::builder()
        // Started with the server silent: it starts (SoftStart's default
        // here) and holds only the mail that needs the server.
        .config_line(&format!(
            "KeyTable dsn:mysql://{}:{}@{port}+127.0.0.1/{database}/table=keys?keycol=name?datacol=domain,selector,key",
            MariaDb::USER,
            MariaDb::PASSWORD
        ))
        .config_line(&format!(
            "SigningTable {}",
            db.dsn(&database, "signing", "addr", "keyname")
        ))
        .write();
    let (milter, addr) = start(&sidecar);
    let outcome = mta::send(
        addr,
        &message_from("alice@example.com"),
        INTERNAL,
        "mta.example",
    );
    assert!(is_tempfail(&outcome), "{outcome:?}");
    // A sender with no SigningTable row needs no key: accepted unsigned.
    let outcome = mta::send(
        addr,
        &message_from("carol@example.com"),
        INTERNAL,
        "mta.example",
    );
    assert!(is_accepted(&outcome), "{outcome:?}");
    let log = milter.log();
    assert!(log.contains("no connection within"), "{log}");
    assert!(!log.contains(MariaDb::PASSWORD), "{log}");
}

/// InternalHosts and PeerList kept in MariaDB: a listed network is
/// internal and signed, a peer is accepted unsigned (and unverified),
/// anyone else is not internal.
#[test]
fn internal_hosts_and_peer_list_in_mariadb_decide_who_is_signed() {
    let db = MariaDb::shared();
    let database = db.database("hostlists");
    db.sql(&format!(
        "USE {database}; \
         CREATE TABLE internal (host varchar(64)); \
         INSERT INTO internal VALUES ('192.0.2.0/24'), ('2001:db8::/32'); \
         CREATE TABLE peers (host varchar(64)); \
         INSERT INTO peers VALUES ('192.0.2.99');"
    ));
    let sidecar = Sidecar::builder()
        .config_line(&format!(
            "InternalHosts {}",
            db.dsn(&database, "internal", "host", "host")
        ))
        .config_line(&format!(
            "PeerList {}",
            db.dsn(&database, "peers", "host", "host")
        ))
        .write();
    let (milter, addr) = start(&sidecar);
    let keys = sidecar.keys();
    for ip in ["192.0.2.10", "2001:db8::25"] {
        assert_signed_from(
            &sidecar,
            addr,
            "alice@example.com",
            ip.parse().unwrap(),
            &keys,
        );
    }
    for ip in ["192.0.2.99", "203.0.113.5", "127.0.0.1"] {
        assert_accepted_unsigned(addr, "alice@example.com", ip.parse().unwrap());
    }
    let log = milter.log();
    assert!(
        log.contains("client [192.0.2.99] is in PeerList (entry `192.0.2.99`)"),
        "{log}"
    );
    assert!(
        log.contains("client [203.0.113.5] is not internal"),
        "{log}"
    );
    assert!(!log.contains(MariaDb::PASSWORD), "{log}");
}
