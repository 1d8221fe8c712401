//! KeyTable and SigningTable kept in PostgreSQL (`dsn:pgsql://`), end to
//! end: a private PostgreSQL on loopback, dkim-sidecar reading an
//! unchanged opendkim.conf whose tables are `dsn:` data sets, and messages
//! put to it as Postfix would, each signature checked by dkimpy and
//! OpenDKIM. The other data sets (InternalHosts, ExemptDomains,
//! DontSignMailTo) are kept there too, a fleet of three shares one
//! database, and the database is stopped and started again mid-run.

use testkit::datasets::{
    INTERNAL, assert_accepted_unsigned, assert_one_outage_logged, assert_signed_from,
    assert_tempfailed, check_config, fleet, is_accepted, is_signed, is_tempfail,
    key_and_signing_tables, message_from, reload, rides_out_an_outage, sidecar_on_tables,
    signature_tag, signs_listed_senders_only, sql_in_a_sender_matches_nothing, start,
};
use testkit::postgres::Postgres;
use testkit::verify::assert_signed_by;
use testkit::{Sidecar, mta};

#[test]
fn signs_with_keytable_and_signingtable_kept_in_postgresql() {
    let pg = Postgres::start();
    let sidecar = sidecar_on_tables(&pg);
    key_and_signing_tables(
        &pg,
        &sidecar,
        &[("alice@example.com", "rsa"), ("example.net", "rsa")],
    );
    let (milter, addr) = start(&sidecar);
    signs_listed_senders_only(&sidecar, &milter, addr, Some(Postgres::PASSWORD));
}

#[test]
fn a_sender_written_as_sql_matches_nothing() {
    let pg = Postgres::start();
    let sidecar = sidecar_on_tables(&pg);
    key_and_signing_tables(&pg, &sidecar, &[("alice@example.com", "rsa")]);
    let (milter, addr) = start(&sidecar);
    sql_in_a_sender_matches_nothing(&sidecar, &milter, addr);
}

#[test]
fn database_down_serves_cached_senders_tempfails_the_rest_and_recovers() {
    let mut pg = Postgres::start();
    let sidecar = sidecar_on_tables(&pg);
    key_and_signing_tables(
        &pg,
        &sidecar,
        &[("alice@example.com", "rsa"), ("bob@example.com", "rsa")],
    );
    let (milter, addr) = start(&sidecar);
    rides_out_an_outage(
        &mut pg,
        &sidecar,
        &milter,
        addr,
        ("alice@example.com", "bob@example.com"),
        Some(Postgres::PASSWORD),
    );
}

#[test]
fn check_config_names_the_database_without_its_password() {
    let mut pg = Postgres::start();
    let sidecar = sidecar_on_tables(&pg);
    key_and_signing_tables(&pg, &sidecar, &[("alice@example.com", "rsa")]);
    let (ok, text) = check_config("-x", sidecar.config(), Postgres::PASSWORD);
    assert!(ok, "{text}");
    assert!(
        text.contains("KeyTable server dsn:pgsql://postgres:****@"),
        "{text}"
    );
    assert!(text.contains("(PostgreSQL): connected"), "{text}");

    pg.stop();
    let (ok, text) = check_config("-x", sidecar.config(), Postgres::PASSWORD);
    assert!(!ok, "{text}");
    assert!(text.contains("cannot connect"), "{text}");
}

#[test]
fn unusable_rows_get_the_key_action_and_a_clear_log_line() {
    let pg = Postgres::start();
    let sidecar = sidecar_on_tables(&pg);
    key_and_signing_tables(
        &pg,
        &sidecar,
        &[
            ("alice@example.com", "rsa"),
            ("null@example.com", "nullkey"),
            ("big@example.com", "big"),
            ("broken@example.com", "broken"),
        ],
    );
    pg.psql(
        "INSERT INTO keys VALUES ('nullkey', 'example.com', NULL, 'x'); \
         INSERT INTO keys VALUES ('big', 'example.com', 'big', repeat('A', 10 * 1024 * 1024)); \
         INSERT INTO keys VALUES ('broken', 'example.com', 'broken', 'MIIBnot-a-key');",
    );
    let (milter, addr) = start(&sidecar);
    for sender in ["null@example.com", "big@example.com", "broken@example.com"] {
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
    assert!(log.contains("bytes long (at most 65536)"), "{log}");
    assert!(log.contains("KeyTable entry `broken`"), "{log}");
    assert!(!log.contains(Postgres::PASSWORD), "{log}");
}

/// A fleet's native TOML: tables on `pg`, answers cached `ttl` seconds.
fn fleet_toml(pg: &Postgres, ttl: u64) -> String {
    format!(
        "[server]\nsockets = [\"inet:8891@127.0.0.1\"]\nallow_root = true\n\
         [signing]\nrequire_safe_keys = false\n\
         [trust]\ninternal_hosts = [\"127.0.0.1\"]\n\
         [tables]\nkey_table = \"{}\"\nsigning_table = \"{}\"\ncache_ttl = {ttl}\n",
        pg.dsn("keys", "name", "domain,selector,key"),
        pg.dsn("signing", "addr", "keyname")
    )
}

/// Three signers on one database, as a fleet runs: a changed row (a new
/// selector and key for the domain) is used by all three within the cache
/// TTL (1 s here, from the native TOML), with no restart or reload.
#[test]
fn a_fleet_on_one_database_signs_with_a_changed_row_without_restart() {
    let pg = Postgres::start();
    let first = Sidecar::builder().write();
    key_and_signing_tables(&pg, &first, &[("example.com", "rsa")]);
    let fleet = fleet(3, |_| fleet_toml(&pg, 1));

    let alice = message_from("alice@example.com");
    let rsa = &first.test_keys().rsa;
    for member in &fleet {
        let outcome = mta::send(member.addr, &alice, INTERNAL, "mta.example");
        assert_signed_by(
            &mta::delivered(&alice, &outcome),
            &member.sidecar.dns_records(),
            &[rsa],
        );
    }

    let ed25519 = &first.test_keys().ed25519;
    let pem = std::fs::read_to_string(&ed25519.private_key).unwrap();
    pg.psql(&format!(
        "UPDATE keys SET selector = '{}', key = $k${pem}$k$ WHERE name = 'rsa'",
        ed25519.selector
    ));
    for member in &fleet {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let outcome = mta::send(member.addr, &alice, INTERNAL, "mta.example");
            let delivered = mta::delivered(&alice, &outcome);
            let selectors: Vec<String> = mta::inserted(&outcome, "DKIM-Signature")
                .iter()
                .filter_map(|v| signature_tag(v, "s"))
                .collect();
            if selectors == [ed25519.selector.clone()] {
                assert_signed_by(&delivered, &member.sidecar.dns_records(), &[ed25519]);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still {selectors:?}: {}",
                member.daemon.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert!(!member.daemon.log().contains(Postgres::PASSWORD));
    }
}

/// The fleet through an outage: three daemons on one database,
/// each with a sender of its own cached; the database stops. Every
/// daemon keeps signing its cached sender, tempfails senders it has not
/// cached, and never accepts unsigned a message that should be signed
/// (every reply is checked). The database comes back on the same data
/// directory and port, and all three sign the unknown senders again with
/// no restart.
#[test]
fn a_fleet_rides_out_a_database_outage_and_recovers_without_restart() {
    let mut pg = Postgres::start();
    let first = Sidecar::builder().write();
    let senders = ["one@example.com", "two@example.com", "three@example.com"];
    let unknown = ["new1@example.com", "new2@example.com", "new3@example.com"];
    let rows: Vec<(&str, &str)> = senders
        .iter()
        .chain(&unknown)
        .map(|s| (*s, "rsa"))
        .collect();
    key_and_signing_tables(&pg, &first, &rows);
    // Answers are fresh for 1 s, then served stale while the server is
    // down (the stale limit is an hour).
    let fleet = fleet(3, |_| fleet_toml(&pg, 1));
    let rsa = &first.test_keys().rsa;
    for (member, sender) in fleet.iter().zip(senders) {
        assert_signed_from(&member.sidecar, member.addr, sender, INTERNAL, &[rsa]);
    }

    pg.stop();
    // Past the TTL: every answer now comes from the stale cache or not
    // at all.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    for _round in 0..3 {
        for (member, (sender, stranger)) in fleet.iter().zip(senders.iter().zip(unknown)) {
            // Its own cached sender: signed, and the signature verifies.
            assert_signed_from(&member.sidecar, member.addr, sender, INTERNAL, &[rsa]);
            // A sender no daemon has cached: tempfailed, never accepted.
            let outcome = mta::send(
                member.addr,
                &message_from(stranger),
                INTERNAL,
                "mta.example",
            );
            assert!(is_tempfail(&outcome), "{stranger}: {outcome:?}");
            // Another daemon's sender is not in this one's cache either.
            for other in senders.iter().filter(|s| *s != sender) {
                let outcome = mta::send(member.addr, &message_from(other), INTERNAL, "mta.example");
                assert!(is_tempfail(&outcome), "{other}: {outcome:?}");
            }
        }
    }

    pg.restart();
    for (member, stranger) in fleet.iter().zip(unknown) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let message = message_from(stranger);
            let outcome = mta::send(member.addr, &message, INTERNAL, "mta.example");
            if is_signed(&outcome) {
                assert_signed_by(
                    &mta::delivered(&message, &outcome),
                    &member.sidecar.dns_records(),
                    &[rsa],
                );
                break;
            }
            assert!(
                is_tempfail(&outcome),
                "{stranger} accepted unsigned: {outcome:?}"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "not signed again after the database came back: {}",
                member.daemon.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        // Each table's outage and recovery is logged once.
        let log = member.daemon.log();
        for role in ["SigningTable", "KeyTable"] {
            let lines = |what: &str| {
                log.lines()
                    .filter(|l| l.contains(&format!("{role} dsn:pgsql://")) && l.contains(what))
                    .count()
            };
            assert_eq!(lines("logged once per outage"), 1, "{role}: {log}");
            assert_eq!(lines("answers again after"), 1, "{role}: {log}");
        }
        assert!(!log.contains(Postgres::PASSWORD), "{log}");
    }
}

/// A server that accepts connections and never answers: the lookup gives
/// up after the connect timeout, the message is tempfailed, and the log
/// says why.
#[test]
fn a_server_that_never_answers_times_out_into_a_tempfail() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    let dsn = |table: &str, key: &str, data: &str| {
        format!(
            "dsn:pgsql://postgres:{}@{port}+127.0.0.1/postgres/table={table}?keycol={key}?datacol={data}",
            Postgres::PASSWORD
        )
    };
    let sidecar = Sidecar::builder()
        // Started with the server silent: it starts (SoftStart's default
        // here) and holds only the mail that needs the server.
        .config_line(&format!(
            "KeyTable {}",
            dsn("keys", "name", "domain,selector,key")
        ))
        .config_line(&format!(
            "SigningTable {}",
            dsn("signing", "addr", "keyname")
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
    let log = milter.log();
    assert!(log.contains("no connection within"), "{log}");
    assert!(!log.contains(Postgres::PASSWORD), "{log}");
}

/// MacroList (like the header lists, which OpenDKIM reads whole at
/// start-up) cannot be kept on a server; a `dsn:` there is refused,
/// naming the option, and the password stays masked.
#[test]
fn a_database_where_only_a_file_works_is_refused_at_load_without_the_password() {
    let sidecar = Sidecar::builder()
        .config_line("Socket inet:8891@localhost")
        .config_line(
            "MacroList dsn:pgsql://postgres:my-Secret-99@127.0.0.1/postgres/table=h?keycol=n?datacol=n",
        )
        .write();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dkim-sidecar"))
        .args(["check-config", "-x"])
        .arg(sidecar.config())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("which this setting does not support yet"),
        "{text}"
    );
    assert!(text.contains("postgres:****@"), "{text}");
    assert!(!text.contains("my-Secret-99"), "{text}");
}

/// A client address outside the default InternalHosts.
fn client(ip: &str) -> std::net::IpAddr {
    ip.parse().unwrap()
}

/// `internal(host)`: an address, a network, and a negated address in it.
fn internal_hosts(pg: &Postgres) {
    pg.psql(
        "CREATE TABLE internal (host text); \
         INSERT INTO internal VALUES ('192.0.2.7'), ('198.51.100.0/24'), ('!198.51.100.9');",
    );
}

/// A sidecar whose InternalHosts is the `internal` table (KeyTable and
/// SigningTable in files: example.com signs), with `extra` lines.
fn internal_hosts_on(pg: &Postgres, extra: &[&str]) -> Sidecar {
    let mut builder = Sidecar::builder()
        .config_line("Socket inet:8891@localhost")
        .config_line(&format!(
            "InternalHosts {}",
            pg.dsn("internal", "host", "host")
        ));
    for line in extra {
        builder = builder.config_line(line);
    }
    builder.write()
}

#[test]
fn internal_hosts_in_postgresql_sign_mail_from_a_listed_address_or_network_only() {
    let pg = Postgres::start();
    internal_hosts(&pg);
    let sidecar = internal_hosts_on(&pg, &[]);
    let (milter, addr) = start(&sidecar);
    let keys = sidecar.keys();
    // The address itself, and an address in the listed network.
    assert_signed_from(
        &sidecar,
        addr,
        "alice@example.com",
        client("192.0.2.7"),
        &keys,
    );
    assert_signed_from(
        &sidecar,
        addr,
        "alice@example.com",
        client("198.51.100.20"),
        &keys,
    );
    // Negated inside the network, outside every entry, and loopback (the
    // list replaces the default): accepted unsigned.
    for ip in ["198.51.100.9", "203.0.113.5", "192.0.2.8", "127.0.0.1"] {
        assert_accepted_unsigned(addr, "alice@example.com", client(ip));
    }
    let log = milter.log();
    assert!(
        log.contains("client [203.0.113.5] is not internal"),
        "{log}"
    );
    assert!(!log.contains(Postgres::PASSWORD), "{log}");
}

#[test]
fn exempt_domains_and_dont_sign_mail_to_in_postgresql_change_the_decision() {
    let pg = Postgres::start();
    pg.psql(
        "CREATE TABLE exempt (domain text); INSERT INTO exempt VALUES ('example.com'); \
         CREATE TABLE nosign (rcpt text); INSERT INTO nosign VALUES ('list@example.org');",
    );
    // DontSignMailTo: one listed recipient keeps the message unsigned.
    let sidecar = Sidecar::builder()
        .config_line(&format!(
            "DontSignMailTo {}",
            pg.dsn("nosign", "rcpt", "rcpt")
        ))
        .write();
    let (milter, addr) = start(&sidecar);
    let message = testkit::datasets::message("alice@example.com", "list@example.org");
    let outcome = mta::send(addr, &message, INTERNAL, "mta.example");
    assert!(is_accepted(&outcome) && !is_signed(&outcome), "{outcome:?}");
    assert_signed_from(
        &sidecar,
        addr,
        "alice@example.com",
        INTERNAL,
        &sidecar.keys(),
    );
    let log = milter.log();
    assert!(
        log.contains("recipient list@example.org is in DontSignMailTo"),
        "{log}"
    );

    // ExemptDomains: the sender's domain is listed, so nothing is signed.
    let exempt = Sidecar::builder()
        .config_line(&format!(
            "ExemptDomains {}",
            pg.dsn("exempt", "domain", "domain")
        ))
        .write();
    let (milter, addr) = start(&exempt);
    assert_accepted_unsigned(addr, "alice@example.com", INTERNAL);
    let log = milter.log();
    assert!(
        log.contains("sender domain example.com is in ExemptDomains"),
        "{log}"
    );
    assert!(!log.contains(Postgres::PASSWORD), "{log}");
}

#[test]
fn a_data_set_server_down_tempfails_what_it_would_decide_and_serves_cached_answers() {
    let mut pg = Postgres::start();
    internal_hosts(&pg);
    let sidecar = internal_hosts_on(&pg, &[]);
    let (milter, addr) = start(&sidecar);
    let keys = sidecar.keys();
    assert_signed_from(
        &sidecar,
        addr,
        "alice@example.com",
        client("192.0.2.7"),
        &keys,
    );

    pg.stop();
    // Cached: still signed.
    assert_signed_from(
        &sidecar,
        addr,
        "alice@example.com",
        client("192.0.2.7"),
        &keys,
    );
    // Not cached, and the answer decides: tempfailed, never unsigned.
    for _ in 0..2 {
        assert_tempfailed(addr, "alice@example.com", client("198.51.100.20"));
    }
    // Not cached, but no key for the sender: unsigned whatever it says.
    assert_accepted_unsigned(addr, "carol@example.org", client("198.51.100.20"));

    pg.restart();
    assert_signed_from(
        &sidecar,
        addr,
        "alice@example.com",
        client("198.51.100.20"),
        &keys,
    );
    let log = milter.log();
    assert!(
        log.contains("InternalHosts dsn:pgsql://postgres:****@"),
        "{log}"
    );
    assert_one_outage_logged(&log);
    assert!(!log.contains(Postgres::PASSWORD), "{log}");
}

#[test]
fn check_config_names_every_data_set_server_without_its_password() {
    let mut pg = Postgres::start();
    internal_hosts(&pg);
    pg.psql("CREATE TABLE nosign (rcpt text);");
    let sidecar = internal_hosts_on(
        &pg,
        &[&format!(
            "DontSignMailTo {}",
            pg.dsn("nosign", "rcpt", "rcpt")
        )],
    );
    let (ok, text) = check_config("-x", sidecar.config(), Postgres::PASSWORD);
    assert!(ok, "{text}");
    for role in ["InternalHosts", "DontSignMailTo"] {
        assert!(
            text.contains(&format!("{role} server dsn:pgsql://postgres:****@")),
            "{role}: {text}"
        );
    }
    assert_eq!(text.matches("(PostgreSQL): connected").count(), 2, "{text}");
    assert!(text.contains("asked per message of dsn:pgsql://"), "{text}");

    pg.stop();
    let (ok, text) = check_config("-x", sidecar.config(), Postgres::PASSWORD);
    assert!(!ok, "{text}");
    assert!(
        text.contains("InternalHosts server dsn:pgsql://postgres:****@")
            && text.contains("cannot connect"),
        "{text}"
    );
}

/// SIGHUP reads the configuration again: the data sets kept on a server
/// get new, empty caches (a row removed since is seen at once, not after
/// the TTL) and their servers are checked again, a server that is down
/// logged and, with SoftStart (the default), the reload applied; with
/// SoftStart off, refused.
#[test]
fn reload_clears_the_caches_of_server_sets_and_checks_their_servers_again() {
    let mut pg = Postgres::start();
    internal_hosts(&pg);
    let sidecar = internal_hosts_on(&pg, &[]);
    let (milter, addr) = start(&sidecar);
    let keys = sidecar.keys();
    assert_signed_from(
        &sidecar,
        addr,
        "alice@example.com",
        client("192.0.2.7"),
        &keys,
    );
    pg.psql("DELETE FROM internal WHERE host = '192.0.2.7'");
    // Cached for the TTL (five minutes): still internal.
    assert_signed_from(
        &sidecar,
        addr,
        "alice@example.com",
        client("192.0.2.7"),
        &keys,
    );

    let log = reload(&milter);
    assert!(
        log.contains("caches of the 1 data set(s) kept on a server start empty"),
        "{log}"
    );
    assert_accepted_unsigned(addr, "alice@example.com", client("192.0.2.7"));

    // Down at reload: logged, and applied (SoftStart).
    pg.stop();
    let log = reload(&milter);
    assert!(
        log.contains("InternalHosts server dsn:pgsql://postgres:****@")
            && log.contains("reloading anyway (SoftStart)"),
        "{log}"
    );
    assert_tempfailed(addr, "alice@example.com", client("198.51.100.20"));

    // SoftStart off: the reload is refused, the running one kept.
    let conf = std::fs::read_to_string(sidecar.config()).unwrap();
    std::fs::write(sidecar.config(), format!("{conf}SoftStart no\n")).unwrap();
    let log = reload(&milter);
    assert!(
        log.contains("reload failed, keeping the previous configuration")
            && log.contains("remove SoftStart no"),
        "{log}"
    );
    pg.restart();
    assert_signed_from(
        &sidecar,
        addr,
        "alice@example.com",
        client("198.51.100.20"),
        &keys,
    );
    assert!(!milter.log().contains(Postgres::PASSWORD));
}

/// Whether a DKIM-Signature value has an `l=` tag.
#[test]
fn body_length_db_in_postgresql_adds_l_to_mail_for_listed_recipients() {
    let pg = Postgres::start();
    pg.psql(
        "CREATE TABLE bodylength (rcpt text); INSERT INTO bodylength VALUES ('*@lists.example.org');",
    );
    let sidecar = Sidecar::builder()
        .config_line(&format!(
            "BodyLengthDB {}",
            pg.dsn("bodylength", "rcpt", "rcpt")
        ))
        .write();
    let (milter, addr) = start(&sidecar);
    for (to, expected) in [("dev@lists.example.org", true), ("bob@example.org", false)] {
        let message = testkit::datasets::message("alice@example.com", to);
        let outcome = mta::send(addr, &message, INTERNAL, "mta.example");
        assert_signed_by(
            &mta::delivered(&message, &outcome),
            &sidecar.dns_records(),
            &sidecar.keys(),
        );
        let signatures = mta::inserted(&outcome, "DKIM-Signature");
        assert!(
            signatures
                .iter()
                .all(|v| signature_tag(v, "l").is_some() == expected),
            "{to}: {signatures:?}"
        );
    }
    assert!(!milter.log().contains(Postgres::PASSWORD));
}

#[test]
fn domain_kept_in_postgresql_signs_listed_domains_and_their_subdomains() {
    let mut pg = Postgres::start();
    pg.psql("CREATE TABLE domains (name text); INSERT INTO domains VALUES ('example.com');");
    let sidecar = Sidecar::builder()
        .domain(&pg.dsn("domains", "name", "name"))
        .config_line("SubDomains yes")
        .write();
    let (milter, addr) = start(&sidecar);
    let keys = sidecar.keys();
    // Listed, and a subdomain of a listed domain (signed as the parent).
    assert_signed_from(&sidecar, addr, "alice@example.com", INTERNAL, &keys);
    let message = message_from("bob@mail.example.com");
    let outcome = mta::send(addr, &message, INTERNAL, "mta.example");
    let delivered = mta::delivered(&message, &outcome);
    assert_signed_by(&delivered, &sidecar.dns_records(), &keys);
    assert!(
        String::from_utf8_lossy(&delivered).contains("i=@example.com"),
        "a parent's signature names the parent: {outcome:?}"
    );
    // Not listed: accepted unsigned.
    assert_accepted_unsigned(addr, "carol@example.org", INTERNAL);

    pg.stop();
    // Cached: still signed; not cached: tempfailed, never guessed.
    assert_signed_from(&sidecar, addr, "alice@example.com", INTERNAL, &keys);
    assert_tempfailed(addr, "dave@new.example.net", INTERNAL);
    pg.restart();
    assert_accepted_unsigned(addr, "dave@new.example.net", INTERNAL);

    let log = milter.log();
    assert!(
        log.contains("sender carol@example.org is not in Domain"),
        "{log}"
    );
    assert!(log.contains("Domain dsn:pgsql://postgres:****@"), "{log}");
    assert!(!log.contains(Postgres::PASSWORD), "{log}");
    let (ok, out) = check_config("-x", sidecar.config(), Postgres::PASSWORD);
    assert!(ok, "{out}");
    assert!(
        out.contains("domains: those listed in dsn:pgsql://postgres:****@")
            && out.contains("then *, then each parent)"),
        "{out}"
    );
}

#[test]
fn header_lists_kept_in_postgresql_are_read_at_start_up() {
    let mut pg = Postgres::start();
    pg.psql(
        "CREATE TABLE signhdrs (name text); INSERT INTO signhdrs VALUES ('*'), ('-subject'); \
         CREATE TABLE oversign (name text); INSERT INTO oversign VALUES ('From'), ('To');",
    );
    let sidecar = Sidecar::builder()
        .config_line(&format!(
            "SignHeaders {}",
            pg.dsn("signhdrs", "name", "name")
        ))
        .config_line(&format!(
            "OverSignHeaders {}",
            pg.dsn("oversign", "name", "name")
        ))
        .write();
    let (ok, out) = check_config("-x", sidecar.config(), Postgres::PASSWORD);
    assert!(ok, "{out}");
    let (milter, addr) = start(&sidecar);
    let message = message_from("alice@example.com");
    let outcome = mta::send(addr, &message, INTERNAL, "mta.example");
    assert_signed_by(
        &mta::delivered(&message, &outcome),
        &sidecar.dns_records(),
        &sidecar.keys(),
    );
    let signature = mta::inserted(&outcome, "DKIM-Signature").remove(0);
    let signed = signature_tag(&signature, "h").unwrap().to_ascii_lowercase();
    let names: Vec<&str> = signed.split(':').collect();
    // `*` then `-subject`: the defaults less Subject; From and To
    // oversigned (listed once more than present).
    assert!(!names.contains(&"subject"), "{signed}");
    assert_eq!(names.iter().filter(|n| **n == "to").count(), 2, "{signed}");
    assert_eq!(
        names.iter().filter(|n| **n == "from").count(),
        2,
        "{signed}"
    );
    drop(milter);

    // Read whole at start-up, as OpenDKIM does: with the database down
    // the configuration is refused, naming the line and the server.
    pg.stop();
    let (ok, out) = check_config("-x", sidecar.config(), Postgres::PASSWORD);
    assert!(!ok, "{out}");
    assert!(
        out.contains("SignHeaders is read whole") && out.contains("dsn:pgsql://postgres:****@"),
        "{out}"
    );
}
