//! Our signing decisions against OpenDKIM's when the KeyTable and the
//! SigningTable are kept on a server, asked live.
//!
//! For each backend (PostgreSQL, MariaDB, an SQLite file, an LDAP
//! directory) the test starts a private server with the test kit and
//! loads the same SigningTable and KeyTable into it: several domains,
//! selectors and key names, with the lookups OpenDKIM makes of such a
//! table (`dkimf_apply_signtable` for a SigningTable that is not
//! `refile:` asks, in order, for `user@domain`, `domain`, then for each
//! parent `user@.parent` and `.parent`, then `user@*` and `*`; the domain
//! lowercased, the local part as written; SubDomains plays no part, it
//! only concerns the `Domain` list). Then Debian's OpenDKIM (built with
//! OpenDBX and LDAP) and dkim-sidecar run on the very same opendkim.conf,
//! the same messages are put to both, and per message both must sign or
//! both not, with the same `d=` and `s=`. OpenDKIM's live answer is the
//! expectation; nothing here records what our code decides. On a
//! difference the test fails with a table of every case.
//!
//! The rows cover: an exact address, a domain, `user@.parent` and
//! `.parent` entries, `user@*`, `%` as the key name (the sender's domain
//! is the KeyTable key), a mixed-case key name, a `*@domain` row (a
//! `refile:` wildcard that OpenDKIM never asks such a table for), a row
//! written with capitals, senders in mixed case, senders no row matches,
//! and a sender written as SQL. The same senders are put to both with
//! Domain kept in PostgreSQL instead (KeyFile, Selector, SubDomains).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use base64::Engine as _;
use milter::client::Outcome;
use testkit::datasets::signature_tag;
use testkit::keys::TestKeys;
use testkit::mariadb::MariaDb;
use testkit::postgres::Postgres;
use testkit::slapd::Slapd;
use testkit::sqlite::SqliteFile;
use testkit::{MilterProcess, daemon, mta, opendkim};

const INTERNAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// KeyTable rows: key name, `d=`, `s=` (all with the example RSA key,
/// written inline as a fleet keeps it).
const KEYS: &[(&str, &str, &str)] = &[
    ("k-alice", "example.com", "alice"),
    ("k-example", "example.com", "domainwide"),
    ("K-Net", "example.net", "netsel"),
    ("k-parent", "example.org", "parentsel"),
    ("k-post", "post.example", "postsel"),
    ("pct.example", "pct.example", "pctsel"),
    ("k-erin", "example.com", "erin"),
    ("k-wild", "wild.example", "wildsel"),
    ("k-dave", "example.com", "dave"),
    // OpenDKIM walks the whole SigningTable at start-up and refuses to
    // start unless the KeyTable has an entry for every key name in it,
    // `%` included ("could not find valid key record "%" in KeyTable"),
    // although at message time `%` stands for the sender's domain. This
    // row is never used for signing.
    ("%", "unused.example", "unused"),
];

/// SigningTable rows: key, key name.
const SIGNING: &[(&str, &str)] = &[
    ("alice@example.com", "k-alice"),
    ("example.com", "k-example"),
    ("bob@.example.net", "K-Net"),
    (".example.org", "k-parent"),
    ("postmaster@*", "k-post"),
    ("pct.example", "%"),
    ("Erin@example.com", "k-erin"),
    ("*@wild.example", "k-wild"),
    ("dave@example.com", "k-dave"),
];

/// The From addresses put to both milters.
const SENDERS: &[&str] = &[
    // Exact address, and the domain row for the rest of the domain.
    "alice@example.com",
    "carol@example.com",
    // `user@.parent`: only bob, only below example.net.
    "bob@mail.example.net",
    "carol@mail.example.net",
    "bob@example.net",
    // `.parent`: any depth below example.org, not example.org itself.
    "x@sub.example.org",
    "x@a.b.example.org",
    "x@example.org",
    // `user@*`.
    "postmaster@anything.example",
    "Postmaster@anything.example",
    // `%`: the domain is the KeyTable key.
    "user@pct.example",
    "USER@PCT.EXAMPLE",
    // A `*@domain` row: never asked for.
    "someone@wild.example",
    // Mixed case: the domain is lowercased, the local part is not.
    "Alice@Example.COM",
    "ALICE@EXAMPLE.COM",
    "Dave@example.com",
    "Erin@example.com",
    "erin@example.com",
    "bob@Mail.Example.NET",
    "Bob@mail.example.net",
    // Nothing matches.
    "nobody@example.invalid",
    "carol@sub.example.net",
    // Written as SQL: pasted into a query it would match every row.
    "\"' OR 1=1 --\"@example.com",
    "\"' OR 1=1 --\"@nowhere.example",
];

/// What a milter did with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// `d=`/`s=` of each signature, sorted (none: not signed).
    Signed(Vec<(String, String)>),
    Refused(String),
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Signed(s) if s.is_empty() => f.write_str("not signed"),
            Answer::Signed(s) => {
                let shown: Vec<String> = s.iter().map(|(d, s)| format!("d={d} s={s}")).collect();
                f.write_str(&shown.join(" + "))
            }
            Answer::Refused(reply) => write!(f, "refused {reply}"),
        }
    }
}

fn answer(outcome: &Outcome) -> Answer {
    match outcome {
        Outcome::Delivered { .. } => {
            let mut signatures: Vec<(String, String)> = mta::inserted(outcome, "DKIM-Signature")
                .iter()
                .map(|v| {
                    (
                        signature_tag(v, "d").unwrap_or_default(),
                        signature_tag(v, "s").unwrap_or_default(),
                    )
                })
                .collect();
            signatures.sort();
            Answer::Signed(signatures)
        }
        Outcome::AcceptedEarly { .. } => Answer::Signed(Vec::new()),
        Outcome::Refused { event, reply } => Answer::Refused(format!("at {event}: {reply:?}")),
    }
}

fn message_from(from: &str) -> milter::client::Message {
    mta::message(
        format!(
            "From: {from}\nTo: bob@example.org\nSubject: parity\nMessage-ID: <parity@example.com>\n\nThe same message to both.\n"
        )
        .as_bytes(),
    )
}

/// The example RSA key as PEM text.
fn pem() -> String {
    std::fs::read_to_string(TestKeys::load().rsa.private_key).unwrap()
}

/// Writes opendkim.conf with `lines` (the tables and their options) into
/// `dir`, starts OpenDKIM and dkim-sidecar on it, puts every sender to
/// both, and fails with a table when any answer differs.
fn check_parity(backend: &str, dir: &Path, lines: &[String]) {
    let conf = dir.join("opendkim.conf");
    let mut text = String::from(
        "# The same file for OpenDKIM and dkim-sidecar.\n\
         Mode s\n\
         Syslog no\n\
         Canonicalization relaxed/simple\n\
         SignatureAlgorithm rsa-sha256\n",
    );
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(&conf, text).unwrap();
    let theirs = opendkim::run_conf(&conf, &dir.join("opendkim.log"));
    let ours = daemon::run_opendkim_conf(&conf, &dir.join("sidecar.log"));
    let mut rows = Vec::new();
    for sender in SENDERS {
        let message = message_from(sender);
        let ask = |milter: &MilterProcess| {
            answer(&mta::send(
                daemon::inet_addr(milter),
                &message,
                INTERNAL,
                "mta.example",
            ))
        };
        rows.push((sender.to_string(), ask(&theirs), ask(&ours)));
    }
    let differ = rows.iter().filter(|(_, a, b)| a != b).count();
    let signed = rows
        .iter()
        .filter(|(_, a, _)| matches!(a, Answer::Signed(s) if !s.is_empty()))
        .count();
    let table = table(&rows);
    if std::env::var_os("PARITY_TABLE").is_some() {
        println!("{backend}:\n{table}");
    }
    assert_eq!(
        differ,
        0,
        "{backend}: {differ} of {} answers differ from OpenDKIM's:\n{table}\n\
         --- OpenDKIM ---\n{}\n--- dkim-sidecar ---\n{}",
        rows.len(),
        theirs.log(),
        ours.log()
    );
    // OpenDKIM really read the tables: most senders are signed, some not.
    assert!(
        signed >= 8 && signed < rows.len(),
        "{backend}: OpenDKIM signed {signed} of {} messages:\n{table}\n{}",
        rows.len(),
        theirs.log()
    );
}

fn table(rows: &[(String, Answer, Answer)]) -> String {
    let width = rows
        .iter()
        .map(|(s, _, _)| s.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "  {:width$}  {:36}  {:36}\n",
        "sender", "OpenDKIM", "dkim-sidecar"
    );
    for (sender, theirs, ours) in rows {
        let mark = if theirs == ours { ' ' } else { '!' };
        let _ = writeln!(
            out,
            "{mark} {sender:width$}  {:36}  {:36}",
            theirs.to_string(),
            ours.to_string()
        );
    }
    out
}

fn sql_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The two tables as SQL: `signing(addr, keyname)`, `keys(name, domain,
/// selector, pem)`, for any of the three SQL servers.
fn sql_tables(text_type: &str) -> String {
    let mut sql = format!(
        "CREATE TABLE signing (addr {text_type}, keyname {text_type}); \
         CREATE TABLE dkimkeys (name {text_type}, domain {text_type}, selector {text_type}, pem TEXT);"
    );
    let pem = pem();
    for (name, domain, selector) in KEYS {
        let _ = write!(
            sql,
            " INSERT INTO dkimkeys VALUES ({}, {}, {}, {});",
            sql_quote(name),
            sql_quote(domain),
            sql_quote(selector),
            sql_quote(&pem)
        );
    }
    for (addr, key) in SIGNING {
        let _ = write!(
            sql,
            " INSERT INTO signing VALUES ({}, {});",
            sql_quote(addr),
            sql_quote(key)
        );
    }
    sql
}

#[test]
fn postgresql_tables_sign_as_opendkim_signs() {
    let pg = Postgres::start();
    pg.psql(&sql_tables("text"));
    let dir = testkit::scratch_dir("parity-pgsql");
    check_parity(
        "PostgreSQL",
        dir.path(),
        &[
            format!(
                "KeyTable {}",
                pg.dsn("dkimkeys", "name", "domain,selector,pem")
            ),
            format!("SigningTable {}", pg.dsn("signing", "addr", "keyname")),
        ],
    );
}

#[test]
fn mariadb_tables_sign_as_opendkim_signs() {
    let db = MariaDb::start();
    let name = db.database("parity");
    // MariaDB's default collation compares without regard to case.
    db.sql(&format!("USE {name}; {}", sql_tables("VARCHAR(255)")));
    let dir = testkit::scratch_dir("parity-mysql");
    check_parity(
        "MariaDB",
        dir.path(),
        &[
            format!(
                "KeyTable {}",
                db.dsn(&name, "dkimkeys", "name", "domain,selector,pem")
            ),
            format!(
                "SigningTable {}",
                db.dsn(&name, "signing", "addr", "keyname")
            ),
        ],
    );
}

#[test]
fn sqlite_tables_sign_as_opendkim_signs() {
    let file = SqliteFile::create();
    file.sql(&sql_tables("TEXT"));
    check_parity(
        "SQLite",
        file.dir(),
        &[
            // OpenDBX names the file from the DSN relative to the
            // BaseDirectory OpenDKIM changes to.
            file.base_directory(),
            format!(
                "KeyTable {}",
                file.dsn("dkimkeys", "name", "domain,selector,pem")
            ),
            format!("SigningTable {}", file.dsn("signing", "addr", "keyname")),
        ],
    );
}

/// The directory: SigningTable entries under `ou=signing` found by
/// `mail`, the key name in `description`; KeyTable entries under
/// `ou=keys` found by `cn` (the key name).
fn ldif() -> String {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let mut ldif = String::from(
        "dn: ou=signing,dc=example,dc=com\nobjectClass: organizationalUnit\nou: signing\n\n\
         dn: ou=keys,dc=example,dc=com\nobjectClass: organizationalUnit\nou: keys\n\n",
    );
    for (i, (addr, key)) in SIGNING.iter().enumerate() {
        let _ = write!(
            ldif,
            "dn: cn=s{i},ou=signing,dc=example,dc=com\nobjectClass: inetOrgPerson\ncn: s{i}\nsn: s{i}\n\
             mail:: {}\ndescription:: {}\n\n",
            b64(addr),
            b64(key)
        );
    }
    let pem = pem();
    for (i, (name, domain, selector)) in KEYS.iter().enumerate() {
        let _ = write!(
            ldif,
            "dn: uid=k{i},ou=keys,dc=example,dc=com\nobjectClass: inetOrgPerson\nobjectClass: DKIM\n\
             uid: k{i}\ncn:: {}\nsn: k{i}\nDKIMDomain:: {}\nDKIMSelector:: {}\nDKIMKey:: {}\n\n",
            b64(name),
            b64(domain),
            b64(selector),
            b64(&pem)
        );
    }
    ldif
}

#[test]
fn ldap_tables_sign_as_opendkim_signs() {
    let slapd = Slapd::start(&ldif());
    let dir = testkit::scratch_dir("parity-ldap");
    let url = slapd.url();
    check_parity(
        "LDAP",
        dir.path(),
        &[
            format!(
                "KeyTable {url}/ou=keys,dc=example,dc=com?DKIMDomain,DKIMSelector,DKIMKey?sub?(cn=$d)"
            ),
            format!("SigningTable {url}/ou=signing,dc=example,dc=com?description?sub?(mail=$d)"),
            format!("LDAPBindUser {}", Slapd::READER),
            format!("LDAPBindPassword {}", Slapd::PASSWORD),
        ],
    );
}

/// Domain kept in PostgreSQL, with KeyFile, Selector and SubDomains: the
/// sender's domain, `*` and each parent are asked, the first row found
/// choosing `d=`. The rows are lower case (OpenDKIM lowercases the
/// sender's domain) but for one, which matches no sender in either.
#[test]
fn postgresql_domain_list_signs_as_opendkim_signs() {
    use std::os::unix::fs::PermissionsExt as _;
    let pg = Postgres::start();
    pg.psql(
        "CREATE TABLE domains (name text); INSERT INTO domains VALUES \
         ('example.com'), ('example.org'), ('pct.example'), ('Example.NET');",
    );
    let dir = testkit::scratch_dir("parity-domain");
    let key = dir.path().join("domain.private");
    std::fs::write(&key, pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    check_parity(
        "PostgreSQL Domain",
        dir.path(),
        &[
            format!("Domain {}", pg.dsn("domains", "name", "name")),
            format!("KeyFile {}", key.display()),
            "Selector domsel".to_string(),
            "SubDomains yes".to_string(),
        ],
    );
}
