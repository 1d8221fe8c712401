//! What the tests of data sets kept on a server (`dsn:`, `ldap:`) share:
//! dkim-sidecar started on an opendkim.conf or a native TOML file, a
//! message from a given sender put to it as Postfix would, the reading of
//! its answer (signed, accepted unsigned, tempfailed), `check-config` run
//! with the server's password checked absent from its output, and a fleet
//! of daemons on one server.
//!
//! It never starts a server itself: the tests bring theirs
//! ([`crate::postgres`], [`crate::mariadb`], [`crate::slapd`]). What the
//! SQL ones differ in for the KeyTable and SigningTable every such test
//! starts from is the [`SqlTables`] trait, so that the tables and the
//! opendkim.conf naming them are written once ([`key_and_signing_tables`],
//! [`sidecar_on_tables`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use milter::client::{Message, Outcome};

use crate::daemon::Daemon;
use crate::verify::{assert_signed_by, assert_unsigned};
use crate::{MilterProcess, MilterSocket, Sidecar, TestKey, binary, mta};

/// A place SQL tables live for a data-set test: a PostgreSQL or MariaDB
/// database, or an SQLite file.
pub trait SqlTables {
    /// Runs `sql` (one or more statements); panics on error.
    fn run_sql(&self, sql: &str);
    /// A `dsn:` data set on `table`, as opendkim.conf names it.
    fn table_dsn(&self, table: &str, key_column: &str, data_columns: &str) -> String;
    /// Other opendkim.conf lines the data sets need (SQLite's
    /// BaseDirectory).
    fn config_lines(&self) -> Vec<String> {
        Vec::new()
    }
    /// `name` as an identifier in SQL (MariaDB reserves `key` and `keys`).
    fn identifier(&self, name: &str) -> String {
        name.to_string()
    }
    /// The type of a text column that holds any value a test stores, an
    /// oversize key included (MariaDB's `text` stops at 64 KiB).
    fn long_text(&self) -> &'static str {
        "text"
    }
}

/// The tables a data-set test signs from: `signing(addr, keyname)` with
/// one row per `(address, key name)`, and `keys(name, domain, selector,
/// key)` holding the Sidecar's example RSA key inline under the name
/// `rsa`, as a fleet keeps them.
pub fn key_and_signing_tables(
    db: &impl SqlTables,
    sidecar: &Sidecar,
    signing_rows: &[(&str, &str)],
) {
    let key = &sidecar.test_keys().rsa;
    let pem = std::fs::read_to_string(&key.private_key).unwrap();
    let (keys, key_column) = (db.identifier("keys"), db.identifier("key"));
    db.run_sql(&format!(
        "CREATE TABLE signing (addr text, keyname text); \
         CREATE TABLE {keys} (name text, domain text, selector text, {key_column} {}); \
         INSERT INTO {keys} VALUES ('rsa', '{}', '{}', '{}');",
        db.long_text(),
        key.domain,
        key.selector,
        pem.replace('\'', "''")
    ));
    for (addr, keyname) in signing_rows {
        db.run_sql(&format!(
            "INSERT INTO signing VALUES ('{}', '{keyname}')",
            addr.replace('\'', "''")
        ));
    }
}

/// A Sidecar whose KeyTable and SigningTable are the tables of
/// [`key_and_signing_tables`] in `db`. Its Socket line is for
/// check-config; [`start`] gives the daemon a free port.
pub fn sidecar_on_tables(db: &impl SqlTables) -> Sidecar {
    let mut builder = Sidecar::builder().config_line("Socket inet:8891@localhost");
    for line in db.config_lines() {
        builder = builder.config_line(&line);
    }
    builder
        .config_line(&format!(
            "KeyTable {}",
            db.table_dsn("keys", "name", "domain,selector,key")
        ))
        .config_line(&format!(
            "SigningTable {}",
            db.table_dsn("signing", "addr", "keyname")
        ))
        .write()
}

/// A client address in the default InternalHosts (127.0.0.1).
pub const INTERNAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// dkim-sidecar on the Sidecar's opendkim.conf, on a free loopback port.
pub fn start(sidecar: &Sidecar) -> (MilterProcess, SocketAddr) {
    let socket = MilterSocket::free_inet();
    let milter = sidecar.start(&socket);
    (milter, inet(socket))
}

/// Like [`start`], with the certificate authorities in the PEM file `ca`
/// as the only ones trusted for TLS to a data set's server
/// (`SSL_CERT_FILE`, read in place of the system's store).
pub fn start_trusting(sidecar: &Sidecar, ca: &Path) -> (MilterProcess, SocketAddr) {
    let socket = MilterSocket::free_inet();
    let milter = MilterProcess::start(
        "dkim-sidecar daemon",
        &socket,
        &sidecar.dir().join("daemon.log"),
        |socket| {
            let mut command = Daemon::default().command(sidecar, &socket.opendkim_spec());
            command.env("SSL_CERT_FILE", ca).env_remove("SSL_CERT_DIR");
            command
        },
    );
    (milter, inet(socket))
}

/// dkim-sidecar on the native TOML file `toml` (keys and logs in the
/// Sidecar's directory), on a free loopback port.
pub fn start_toml(sidecar: &Sidecar, toml: &Path) -> (MilterProcess, SocketAddr) {
    let socket = MilterSocket::free_inet();
    let daemon = Daemon {
        metrics: None,
        watch: None,
        toml: Some(toml.to_path_buf()),
    }
    .start(sidecar, &socket);
    (daemon, inet(socket))
}

fn inet(socket: MilterSocket) -> SocketAddr {
    let MilterSocket::Inet(addr) = socket else {
        unreachable!("free_inet gives an inet socket")
    };
    addr
}

/// A short message from `from` to bob@example.org.
pub fn message_from(from: &str) -> Message {
    message(from, "bob@example.org")
}

/// A short message from `from` to `to` (the header and the envelope).
pub fn message(from: &str, to: &str) -> Message {
    let raw = format!(
        "From: {from}\nTo: {to}\nSubject: data sets\nMessage-ID: <1@example.com>\n\nHello from a server-kept data set.\n"
    );
    milter_bench::message::from_raw(raw.as_bytes(), to)
        .unwrap_or_else(|e| panic!("not a message: {e}"))
}

/// A short message from `from` to bob@example.org with `fields` (whole
/// header lines, `Name: value`) above its own.
pub fn message_with_fields(from: &str, fields: &[String]) -> Message {
    let above: String = fields.iter().map(|f| format!("{f}\n")).collect();
    let raw = format!(
        "{above}From: {from}\nTo: bob@example.org\nSubject: data sets\nMessage-ID: <2@example.com>\n\n\
         Hello from a server-kept data set.\n"
    );
    milter_bench::message::from_raw(raw.as_bytes(), "bob@example.org")
        .unwrap_or_else(|e| panic!("not a message: {e}"))
}

/// Which of `fields` (whole header lines) the message as delivered still
/// has, in order.
pub fn fields_kept(message: &Message, outcome: &Outcome, fields: &[String]) -> Vec<String> {
    let delivered = mta::delivered(message, outcome);
    String::from_utf8_lossy(&delivered)
        .lines()
        .take_while(|line| !line.is_empty())
        .filter(|line| fields.iter().any(|f| f == line))
        .map(ToString::to_string)
        .collect()
}

/// A tempfail at end of message, as verification answers (`451 4.7.5`
/// and why).
pub fn is_tempfail_at_end_of_message(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Refused { event: 'E', reply } if format!("{reply:?}").contains("451"))
}

/// The milter's answer to a message from `from`, sent by client `ip`.
pub fn send_from(addr: SocketAddr, from: &str, ip: IpAddr) -> Outcome {
    mta::send(addr, &message_from(from), ip, "mta.example")
}

/// A bare tempfail, as the milter answers when a lookup it needs fails.
pub fn is_tempfail(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Refused { event: 'N', reply } if format!("{reply:?}").contains("451") || format!("{reply:?}").contains("Tempfail"))
}

/// Accepted (at end of headers or delivered).
pub fn is_accepted(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::AcceptedEarly { .. } | Outcome::Delivered { .. }
    )
}

/// Whether the milter inserted a DKIM-Signature.
pub fn is_signed(outcome: &Outcome) -> bool {
    !mta::inserted(outcome, "DKIM-Signature").is_empty()
}

/// Sends a message from `from` (client `ip`) and checks that it comes back
/// signed by one of `keys`, as dkimpy and OpenDKIM see it.
pub fn assert_signed_from(
    sidecar: &Sidecar,
    addr: SocketAddr,
    from: &str,
    ip: IpAddr,
    keys: &[&TestKey],
) {
    let message = message_from(from);
    let outcome = mta::send(addr, &message, ip, "mta.example");
    assert_signed_by(
        &mta::delivered(&message, &outcome),
        &sidecar.dns_records(),
        keys,
    );
}

/// [`assert_signed_from`] from an internal client with the Sidecar's keys.
pub fn assert_signed(sidecar: &Sidecar, addr: SocketAddr, from: &str) {
    assert_signed_from(sidecar, addr, from, INTERNAL, &sidecar.keys());
}

/// Sends a message from `from` (client `ip`) and checks that it is
/// accepted with no signature.
pub fn assert_accepted_unsigned(addr: SocketAddr, from: &str, ip: IpAddr) {
    let outcome = send_from(addr, from, ip);
    assert!(
        is_accepted(&outcome) && !is_signed(&outcome),
        "{from} from {ip}: {outcome:?}"
    );
}

/// Sends a message from `from` (an internal client) and checks that it is
/// accepted and, if delivered, carries no signature dkimpy or OpenDKIM
/// accepts.
pub fn assert_delivered_unsigned(sidecar: &Sidecar, addr: SocketAddr, from: &str) {
    let message = message_from(from);
    let outcome = mta::send(addr, &message, INTERNAL, "mta.example");
    assert!(is_accepted(&outcome), "{from}: {outcome:?}");
    if let Outcome::Delivered { .. } = outcome {
        assert_unsigned(&mta::delivered(&message, &outcome), &sidecar.dns_records());
    }
}

/// Sends a message from `from` (client `ip`) and checks that it is
/// tempfailed.
pub fn assert_tempfailed(addr: SocketAddr, from: &str, ip: IpAddr) {
    let outcome = send_from(addr, from, ip);
    assert!(is_tempfail(&outcome), "{from} from {ip}: {outcome:?}");
}

/// `dkim-sidecar check-config` on `config` (`-x` for an opendkim.conf,
/// `-c` for TOML): whether it passed, and stdout and stderr together.
/// Panics if `secret` appears in the output (`""`: a server with no
/// password, such as an SQLite file).
pub fn check_config(flag: &str, config: &Path, secret: &str) -> (bool, String) {
    let out = std::process::Command::new(binary())
        .args(["check-config", flag])
        .arg(config)
        .output()
        .expect("run dkim-sidecar check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        secret.is_empty() || !text.contains(secret),
        "the password shows: {text}"
    );
    (out.status.success(), text)
}

/// A test's data-set server that can be stopped and started again on the
/// same port with the same data.
pub trait Outage {
    fn stop(&mut self);
    fn restart(&mut self);
}

impl Outage for crate::postgres::Postgres {
    fn stop(&mut self) {
        crate::postgres::Postgres::stop(self);
    }
    fn restart(&mut self) {
        crate::postgres::Postgres::restart(self);
    }
}

impl Outage for crate::mariadb::MariaDb {
    fn stop(&mut self) {
        crate::mariadb::MariaDb::stop(self);
    }
    fn restart(&mut self) {
        crate::mariadb::MariaDb::restart(self);
    }
}

/// An SQLite file "stops" by being moved aside and "restarts" by being
/// moved back.
impl Outage for crate::sqlite::SqliteFile {
    fn stop(&mut self) {
        std::fs::rename(self.path(), self.dir().join("aside.sqlite")).unwrap();
    }
    fn restart(&mut self) {
        std::fs::rename(self.dir().join("aside.sqlite"), self.path()).unwrap();
    }
}

impl Outage for crate::slapd::Slapd {
    fn stop(&mut self) {
        crate::slapd::Slapd::stop(self);
    }
    fn restart(&mut self) {
        crate::slapd::Slapd::restart(self);
    }
}

/// What every backend's outage test checks, with the daemon at `addr`
/// signing `cached` and `uncached` from tables on `server`: `cached` is
/// signed first (so its entries are cached) and again while the server is
/// down; `uncached` is tempfailed then, twice, never accepted unsigned,
/// and signed once the server is back. The daemon logs the outage once
/// and the recovery once, and never the server's `secret` (if it has one).
pub fn rides_out_an_outage(
    server: &mut impl Outage,
    sidecar: &Sidecar,
    milter: &MilterProcess,
    addr: SocketAddr,
    (cached, uncached): (&str, &str),
    secret: Option<&str>,
) {
    assert_signed(sidecar, addr, cached);

    server.stop();
    assert_signed(sidecar, addr, cached);
    let message = message_from(uncached);
    for _ in 0..2 {
        let outcome = mta::send(addr, &message, INTERNAL, "mta.example");
        assert!(is_tempfail(&outcome), "{outcome:?}");
    }

    server.restart();
    assert_signed(sidecar, addr, uncached);
    let log = milter.log();
    assert_one_outage_logged(&log);
    if let Some(secret) = secret {
        assert!(!log.contains(secret), "{log}");
    }
}

/// What every SQL backend's first test checks, on the daemon at `addr`
/// signing from the tables of [`key_and_signing_tables`] with a row for
/// alice@example.com: alice's mail is signed; carol@example.com, who has
/// no row, is accepted unsigned and the log says why; the log never holds
/// the server's `secret` (if it has one).
pub fn signs_listed_senders_only(
    sidecar: &Sidecar,
    milter: &MilterProcess,
    addr: SocketAddr,
    secret: Option<&str>,
) {
    assert_signed(sidecar, addr, "alice@example.com");
    assert_delivered_unsigned(sidecar, addr, "carol@example.com");
    let log = milter.log();
    assert!(
        log.contains("no SigningTable match for carol@example.com"),
        "{log}"
    );
    if let Some(secret) = secret {
        assert!(!log.contains(secret), "{log}");
    }
}

/// A sender that, pasted into SQL, would match every row
/// (`"' OR 1=1 --"@example.com`) is bound as a parameter and matches
/// nothing; alice@example.com, who has a row, is signed after it.
pub fn sql_in_a_sender_matches_nothing(
    sidecar: &Sidecar,
    milter: &MilterProcess,
    addr: SocketAddr,
) {
    assert_delivered_unsigned(sidecar, addr, "\"' OR 1=1 --\"@example.com");
    let log = milter.log();
    assert!(log.contains("no SigningTable match"), "{log}");
    assert_signed(sidecar, addr, "alice@example.com");
}

/// The daemon's `log` says once that a server went away and once that it
/// answers again (an outage is not logged per message).
pub fn assert_one_outage_logged(log: &str) {
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
}

/// One daemon of a fleet: its directory (keys, logs), the process and its
/// address.
pub struct FleetMember {
    pub sidecar: Sidecar,
    pub daemon: MilterProcess,
    pub addr: SocketAddr,
}

/// `size` daemons, each on its own native TOML file made by `toml` from
/// the member's Sidecar (which holds its keys), as a fleet on one server
/// runs.
pub fn fleet(size: usize, toml: impl Fn(&Sidecar) -> String) -> Vec<FleetMember> {
    (0..size)
        .map(|_| {
            let sidecar = Sidecar::builder().write();
            let path = sidecar.dir().join("dkim-sidecar.toml");
            std::fs::write(&path, toml(&sidecar))
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            let (daemon, addr) = start_toml(&sidecar, &path);
            FleetMember {
                sidecar,
                daemon,
                addr,
            }
        })
        .collect()
}

/// Sends SIGHUP to the daemon and waits (up to 30 s) until it logs the
/// outcome of that reload (done, or failed and the running configuration
/// kept); returns the log then.
pub fn reload(daemon: &MilterProcess) -> String {
    let outcomes = |log: &str| {
        log.matches("reload: configuration").count() + log.matches("reload failed").count()
    };
    let before = outcomes(&daemon.log());
    crate::processes::signal(daemon.pid() as i32, crate::processes::Signal::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let log = daemon.log();
        if outcomes(&log) > before {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reload logged after SIGHUP: {log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The value of tag `name` (`s`, `h`, `l`) in a DKIM-Signature value,
/// folding whitespace removed.
pub fn signature_tag(value: &str, name: &str) -> Option<String> {
    value.split(';').find_map(|tag| {
        let tag: String = tag.chars().filter(|c| !c.is_whitespace()).collect();
        let (found, value) = tag.split_once('=')?;
        (found == name).then(|| value.to_string())
    })
}
