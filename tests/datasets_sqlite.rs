//! KeyTable and SigningTable kept in an SQLite file (`dsn:sqlite3://`),
//! end to end: a database file in the test's directory, named as OpenDBX
//! names it (host and database joined, relative to BaseDirectory),
//! dkim-sidecar reading an unchanged opendkim.conf whose tables are `dsn:`
//! data sets, and messages put to it as Postfix would, each signature
//! checked by dkimpy and OpenDKIM. The file goes missing and comes back
//! mid-run.

use testkit::datasets::{
    INTERNAL, assert_one_outage_logged, check_config, is_tempfail, key_and_signing_tables,
    message_from, rides_out_an_outage, sidecar_on_tables, signs_listed_senders_only,
    sql_in_a_sender_matches_nothing, start,
};
use testkit::mta;
use testkit::sqlite::SqliteFile;
use testkit::verify::assert_signed_by;

#[test]
fn signs_with_keytable_and_signingtable_kept_in_an_sqlite_file() {
    let db = SqliteFile::create();
    let sidecar = sidecar_on_tables(&db);
    key_and_signing_tables(
        &db,
        &sidecar,
        &[("alice@example.com", "rsa"), ("example.net", "rsa")],
    );
    let (milter, addr) = start(&sidecar);
    signs_listed_senders_only(&sidecar, &milter, addr, None);

    let (ok, text) = check_config("-x", sidecar.config(), "");
    assert!(ok, "{text}");
    assert!(
        text.contains("KeyTable server dsn:sqlite3://dkim/keys.sqlite/"),
        "{text}"
    );
    assert!(text.contains("(SQLite): connected"), "{text}");
}

#[test]
fn a_sender_written_as_sql_matches_nothing() {
    let db = SqliteFile::create();
    let sidecar = sidecar_on_tables(&db);
    key_and_signing_tables(&db, &sidecar, &[("alice@example.com", "rsa")]);
    let (milter, addr) = start(&sidecar);
    sql_in_a_sender_matches_nothing(&sidecar, &milter, addr);
}

/// The file missing (say, a deploy that has not run yet), then not an
/// SQLite file at all: its mail is tempfailed, the log names the file and
/// the problem once, and nothing is created. A good file put in its place
/// is read at once, and the recovery logged once.
#[test]
fn a_missing_or_broken_file_is_logged_and_tempfails_until_a_good_one_appears() {
    let db = SqliteFile::create();
    let sidecar = sidecar_on_tables(&db);
    std::fs::remove_file(db.path()).unwrap();
    let (milter, addr) = start(&sidecar);

    let alice = message_from("alice@example.com");
    for _ in 0..2 {
        let outcome = mta::send(addr, &alice, INTERNAL, "mta.example");
        assert!(is_tempfail(&outcome), "{outcome:?}");
    }
    assert!(!db.path().exists(), "the missing file was created");
    let log = milter.log();
    assert!(
        log.contains(&format!("/{}: no such file", SqliteFile::NAME)),
        "{log}"
    );
    let (ok, text) = check_config("-x", sidecar.config(), "");
    assert!(!ok, "{text}");
    assert!(text.contains("no such file"), "{text}");

    std::fs::write(
        db.path(),
        "KeyTable rsa example.com:rsa:/etc/key\n".repeat(200),
    )
    .unwrap();
    let outcome = mta::send(addr, &alice, INTERNAL, "mta.example");
    assert!(is_tempfail(&outcome), "{outcome:?}");

    // A good database in its place.
    std::fs::remove_file(db.path()).unwrap();
    key_and_signing_tables(&db, &sidecar, &[("alice@example.com", "rsa")]);
    let outcome = mta::send(addr, &alice, INTERNAL, "mta.example");
    assert_signed_by(
        &mta::delivered(&alice, &outcome),
        &sidecar.dns_records(),
        &sidecar.keys(),
    );

    assert_one_outage_logged(&milter.log());
}

/// Cached senders are still signed while the file is gone; the others
/// are tempfailed, never accepted unsigned.
#[test]
fn file_gone_serves_cached_senders_tempfails_the_rest_and_recovers() {
    let mut db = SqliteFile::create();
    let sidecar = sidecar_on_tables(&db);
    key_and_signing_tables(
        &db,
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
        None,
    );
}

#[test]
fn unusable_rows_get_the_key_action_and_a_clear_log_line() {
    let db = SqliteFile::create();
    let sidecar = sidecar_on_tables(&db);
    key_and_signing_tables(
        &db,
        &sidecar,
        &[
            ("alice@example.com", "rsa"),
            ("null@example.com", "nullkey"),
            ("broken@example.com", "broken"),
            ("blob@example.com", "blob"),
        ],
    );
    db.sql(
        "INSERT INTO keys VALUES ('nullkey', 'example.com', NULL, 'x'); \
         INSERT INTO keys VALUES ('broken', 'example.com', 'broken', 'MIIBnot-a-key'); \
         INSERT INTO keys VALUES ('blob', 'example.com', 'blob', x'80ff00fe');",
    );
    let (milter, addr) = start(&sidecar);
    for sender in ["null@example.com", "broken@example.com", "blob@example.com"] {
        let outcome = mta::send(addr, &message_from(sender), INTERNAL, "mta.example");
        assert!(is_tempfail(&outcome), "{sender}: {outcome:?}");
    }
    let alice = message_from("alice@example.com");
    let outcome = mta::send(addr, &alice, INTERNAL, "mta.example");
    assert_signed_by(
        &mta::delivered(&alice, &outcome),
        &sidecar.dns_records(),
        &sidecar.keys(),
    );
    let log = milter.log();
    assert!(log.contains("column `selector` is NULL"), "{log}");
    assert!(log.contains("KeyTable entry `broken`"), "{log}");
    assert!(log.contains("the value is not UTF-8 text"), "{log}");
}

/// A writer holding the file's lock past the query timeout (5 s): the
/// lookup gives up, the message is tempfailed and the log says why; once
/// the lock is released the sender is signed.
#[test]
fn a_file_locked_by_a_writer_past_the_timeout_tempfails_until_released() {
    let db = SqliteFile::create();
    let sidecar = sidecar_on_tables(&db);
    key_and_signing_tables(&db, &sidecar, &[("alice@example.com", "rsa")]);
    let (milter, addr) = start(&sidecar);
    let alice = message_from("alice@example.com");

    let lock = db.lock();
    let started = std::time::Instant::now();
    let outcome = mta::send(addr, &alice, INTERNAL, "mta.example");
    assert!(is_tempfail(&outcome), "{outcome:?}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(4),
        "gave up after {:?}, before the timeout",
        started.elapsed()
    );
    let log = milter.log();
    assert!(log.contains("database is locked"), "{log}");

    drop(lock);
    let outcome = mta::send(addr, &alice, INTERNAL, "mta.example");
    assert_signed_by(
        &mta::delivered(&alice, &outcome),
        &sidecar.dns_records(),
        &sidecar.keys(),
    );
}
