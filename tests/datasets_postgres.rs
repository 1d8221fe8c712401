//! KeyTable and SigningTable kept in PostgreSQL (`dsn:pgsql://`), end to
//! end: a private PostgreSQL on loopback, dkim-sidecar reading an
//! unchanged opendkim.conf whose tables are `dsn:` data sets, and messages
//! put to it as Postfix would, each signature checked by dkimpy and
//! OpenDKIM. The database is stopped and started again mid-run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use milter::client::Outcome;
use testkit::postgres::Postgres;
use testkit::verify::{assert_signed_by, assert_unsigned};
use testkit::{MilterProcess, MilterSocket, Sidecar, mta};

const INTERNAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The tables: `signing(addr, keyname)` and `keys(name, domain, selector,
/// key)` holding the example RSA key inline, as a fleet keeps them.
fn tables(pg: &Postgres, sidecar: &Sidecar, signing_rows: &[(&str, &str)]) {
    let key = &sidecar.test_keys().rsa;
    let pem = std::fs::read_to_string(&key.private_key).unwrap();
    pg.psql(
        "CREATE TABLE signing (addr text, keyname text); \
         CREATE TABLE keys (name text, domain text, selector text, key text);",
    );
    pg.psql(&format!(
        "INSERT INTO keys VALUES ('rsa', '{}', '{}', $k${pem}$k$)",
        key.domain, key.selector
    ));
    for (addr, keyname) in signing_rows {
        pg.psql(&format!(
            "INSERT INTO signing VALUES ('{}', '{keyname}')",
            addr.replace('\'', "''")
        ));
    }
}

fn sidecar_on(pg: &Postgres) -> Sidecar {
    // The Socket line is for check-config; `run` gets --socket.
    Sidecar::builder()
        .config_line("Socket inet:8891@localhost")
        .config_line(&format!(
            "KeyTable {}",
            pg.dsn("keys", "name", "domain,selector,key")
        ))
        .config_line(&format!(
            "SigningTable {}",
            pg.dsn("signing", "addr", "keyname")
        ))
        .write()
}

fn start(sidecar: &Sidecar) -> (MilterProcess, SocketAddr) {
    let socket = MilterSocket::free_inet();
    let milter = sidecar.start(&socket);
    let MilterSocket::Inet(addr) = socket else {
        unreachable!()
    };
    (milter, addr)
}

fn message_from(from: &str) -> milter::client::Message {
    mta::message(
        format!(
            "From: {from}\nTo: bob@example.org\nSubject: dsn\nMessage-ID: <1@example.com>\n\nHello from the database.\n"
        )
        .as_bytes(),
    )
}

fn is_tempfail(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Refused { event: 'N', reply } if format!("{reply:?}").contains("451") || format!("{reply:?}").contains("Tempfail"))
}

#[test]
fn signs_with_keytable_and_signingtable_kept_in_postgresql() {
    let pg = Postgres::start();
    let sidecar = sidecar_on(&pg);
    tables(
        &pg,
        &sidecar,
        &[("alice@example.com", "rsa"), ("example.net", "rsa")],
    );
    let (milter, addr) = start(&sidecar);

    let message = message_from("alice@example.com");
    let outcome = mta::send(addr, &message, INTERNAL, "mta.example");
    let delivered = mta::delivered(&message, &outcome);
    assert_signed_by(&delivered, &sidecar.dns_records(), &sidecar.keys());

    // No row for this sender: not signed, and said why.
    let message = message_from("carol@example.com");
    let outcome = mta::send(addr, &message, INTERNAL, "mta.example");
    assert!(
        matches!(
            outcome,
            Outcome::AcceptedEarly { .. } | Outcome::Delivered { .. }
        ),
        "{outcome:?}"
    );
    let log = milter.log();
    assert!(
        log.contains("no SigningTable match for carol@example.com"),
        "{log}"
    );
    assert!(!log.contains(Postgres::PASSWORD), "{log}");
}

#[test]
fn a_sender_written_as_sql_matches_nothing() {
    let pg = Postgres::start();
    let sidecar = sidecar_on(&pg);
    tables(&pg, &sidecar, &[("alice@example.com", "rsa")]);
    let (milter, addr) = start(&sidecar);

    // Pasted into SQL this would match every row; bound as a parameter it
    // is just an address nobody has.
    let message = message_from("\"' OR 1=1 --\"@example.com");
    let outcome = mta::send(addr, &message, INTERNAL, "mta.example");
    if let Outcome::Delivered { .. } = outcome {
        assert_unsigned(&mta::delivered(&message, &outcome), &sidecar.dns_records());
    }
    let log = milter.log();
    assert!(log.contains("no SigningTable match"), "{log}");
}

#[test]
fn database_down_serves_cached_senders_tempfails_the_rest_and_recovers() {
    let mut pg = Postgres::start();
    let sidecar = sidecar_on(&pg);
    tables(
        &pg,
        &sidecar,
        &[("alice@example.com", "rsa"), ("bob@example.com", "rsa")],
    );
    let (milter, addr) = start(&sidecar);

    // alice's entries are now cached.
    let alice = message_from("alice@example.com");
    let outcome = mta::send(addr, &alice, INTERNAL, "mta.example");
    assert_signed_by(
        &mta::delivered(&alice, &outcome),
        &sidecar.dns_records(),
        &sidecar.keys(),
    );

    pg.stop();
    // Cached: still signed.
    let outcome = mta::send(addr, &alice, INTERNAL, "mta.example");
    assert_signed_by(
        &mta::delivered(&alice, &outcome),
        &sidecar.dns_records(),
        &sidecar.keys(),
    );
    // Not cached: tempfailed, never accepted unsigned.
    let bob = message_from("bob@example.com");
    for _ in 0..2 {
        let outcome = mta::send(addr, &bob, INTERNAL, "mta.example");
        assert!(is_tempfail(&outcome), "{outcome:?}");
    }

    pg.restart();
    let outcome = mta::send(addr, &bob, INTERNAL, "mta.example");
    assert_signed_by(
        &mta::delivered(&bob, &outcome),
        &sidecar.dns_records(),
        &sidecar.keys(),
    );

    let log = milter.log();
    assert_eq!(
        log.matches("logged once per outage").count(),
        1,
        "the outage is logged once: {log}"
    );
    assert_eq!(
        log.matches("answers again after").count(),
        1,
        "the recovery is logged once: {log}"
    );
    assert!(!log.contains(Postgres::PASSWORD), "{log}");
}

#[test]
fn check_config_names_the_database_without_its_password() {
    let mut pg = Postgres::start();
    let sidecar = sidecar_on(&pg);
    tables(&pg, &sidecar, &[("alice@example.com", "rsa")]);
    let check = || {
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
        assert!(!text.contains(Postgres::PASSWORD), "{text}");
        (out.status.success(), text)
    };
    let (ok, text) = check();
    assert!(ok, "{text}");
    assert!(
        text.contains("KeyTable server dsn:pgsql://postgres:****@"),
        "{text}"
    );
    assert!(text.contains("(PostgreSQL): connected"), "{text}");

    pg.stop();
    let (ok, text) = check();
    assert!(!ok, "{text}");
    assert!(text.contains("cannot connect"), "{text}");
}

#[test]
fn unusable_rows_get_the_key_action_and_a_clear_log_line() {
    let pg = Postgres::start();
    let sidecar = sidecar_on(&pg);
    tables(
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

/// Three signers on one database, as a fleet runs: a changed row (a new
/// selector and key for the domain) is used by all three within the cache
/// TTL (1 s here, from the native TOML), with no restart or reload.
#[test]
fn a_fleet_on_one_database_signs_with_a_changed_row_without_restart() {
    let pg = Postgres::start();
    let first = Sidecar::builder().write();
    tables(&pg, &first, &[("example.com", "rsa")]);
    let fleet: Vec<(Sidecar, MilterProcess, SocketAddr)> = (0..3)
        .map(|_| {
            let sidecar = Sidecar::builder().write();
            let toml = sidecar.dir().join("dkim-sidecar.toml");
            std::fs::write(
                &toml,
                format!(
                    "[server]\nsockets = [\"inet:8891@127.0.0.1\"]\nallow_root = true\n\
                     [signing]\nrequire_safe_keys = false\n\
                     [trust]\ninternal_hosts = [\"127.0.0.1\"]\n\
                     [tables]\nkey_table = \"{}\"\nsigning_table = \"{}\"\ncache_ttl = 1\n",
                    pg.dsn("keys", "name", "domain,selector,key"),
                    pg.dsn("signing", "addr", "keyname")
                ),
            )
            .unwrap();
            let socket = MilterSocket::free_inet();
            let daemon = testkit::daemon::Daemon {
                metrics: None,
                watch: None,
                toml: Some(toml),
            }
            .start(&sidecar, &socket);
            let MilterSocket::Inet(addr) = socket else {
                unreachable!()
            };
            (sidecar, daemon, addr)
        })
        .collect();

    let alice = message_from("alice@example.com");
    let rsa = &first.test_keys().rsa;
    for (sidecar, _, addr) in &fleet {
        let outcome = mta::send(*addr, &alice, INTERNAL, "mta.example");
        assert_signed_by(
            &mta::delivered(&alice, &outcome),
            &sidecar.dns_records(),
            &[rsa],
        );
    }

    let ed25519 = &first.test_keys().ed25519;
    let pem = std::fs::read_to_string(&ed25519.private_key).unwrap();
    pg.psql(&format!(
        "UPDATE keys SET selector = '{}', key = $k${pem}$k$ WHERE name = 'rsa'",
        ed25519.selector
    ));
    for (sidecar, daemon, addr) in &fleet {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let outcome = mta::send(*addr, &alice, INTERNAL, "mta.example");
            let delivered = mta::delivered(&alice, &outcome);
            let selectors: Vec<String> = mta::inserted(&outcome, "DKIM-Signature")
                .iter()
                .filter_map(|v| selector_of(v))
                .collect();
            if selectors == [ed25519.selector.clone()] {
                assert_signed_by(&delivered, &sidecar.dns_records(), &[ed25519]);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still {selectors:?}: {}",
                daemon.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert!(!daemon.log().contains(Postgres::PASSWORD));
    }
}

/// The `s=` tag of a DKIM-Signature value.
fn selector_of(value: &str) -> Option<String> {
    value.split(';').find_map(|tag| {
        let tag: String = tag.chars().filter(|c| !c.is_whitespace()).collect();
        tag.strip_prefix("s=").map(str::to_string)
    })
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

/// InternalHosts (like the other host and domain lists) is read whole at
/// start-up; a `dsn:` there is refused, naming the option, and the
/// password stays masked.
#[test]
fn a_database_where_only_a_file_works_is_refused_at_load_without_the_password() {
    let sidecar = Sidecar::builder()
        .config_line("Socket inet:8891@localhost")
        .config_line(
            "InternalHosts dsn:pgsql://postgres:my-Secret-99@127.0.0.1/postgres/table=h?keycol=n?datacol=n",
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
