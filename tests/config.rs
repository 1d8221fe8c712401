//! Loading real configurations: the three setups the common guides
//! describe and Debian's shipped /etc/opendkim.conf, each also accepted by
//! the real OpenDKIM (`opendkim -n -x FILE` checks a configuration without
//! starting), and the two shipped examples, loaded and run through
//! `check-config`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use dkim_sidecar::config::{Config, Format};
use dkim_sidecar::keys::KeyType;
use milter::server::SocketSpec;
use testkit::command::{run, run_ok, sidecar, stderr, stdout};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A fixture copied into a fresh directory, `@DIR@` replaced by it, with
/// the test-only keys installed as a real setup has them (mode 0600 under
/// directories only their owner can enter; a fixture that runs as UserID
/// `opendkim` gets them owned by that user, as the guides' `chown -R
/// opendkim:opendkim` makes them, when the test runs as root; the others,
/// root's): `keys/example.com/default.private`
/// (RSA), `keys/example.com/ed25519.private` and
/// `keys/example.org/default.private`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(fixture: &str) -> Setup {
        // Not under /tmp: OpenDKIM refuses keys below a world-writable
        // directory, sticky bit or not.
        let dir = tempfile::tempdir_in(testkit::scratch_base()).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let from = Path::new(ROOT).join("tests/fixtures/config").join(fixture);
        for entry in fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            let text = fs::read_to_string(entry.path()).unwrap();
            let text = text.replace("@DIR@", &dir.path().display().to_string());
            fs::write(dir.path().join(entry.file_name()), text).unwrap();
        }
        let keys = Path::new(ROOT).join("keys-example");
        for (domain, name, source) in [
            ("example.com", "default.private", "default.private"),
            ("example.com", "ed25519.private", "ed25519.private"),
            ("example.org", "default.private", "default.private"),
        ] {
            let to_dir = dir.path().join("keys").join(domain);
            fs::create_dir_all(&to_dir).unwrap();
            fs::set_permissions(dir.path().join("keys"), fs::Permissions::from_mode(0o700))
                .unwrap();
            fs::set_permissions(&to_dir, fs::Permissions::from_mode(0o700)).unwrap();
            let to = to_dir.join(name);
            fs::copy(keys.join(source), &to).unwrap();
            fs::set_permissions(&to, fs::Permissions::from_mode(0o600)).unwrap();
        }
        let conf = fs::read_to_string(dir.path().join("opendkim.conf")).unwrap_or_default();
        let runs_as_opendkim = conf
            .lines()
            .any(|l| l.starts_with("UserID") && l.contains("opendkim"));
        if runs_as_opendkim && nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("opendkim")
                .unwrap()
                .expect("user opendkim (Debian package opendkim)");
            let keys = dir.path().join("keys");
            for entry in [
                keys.clone(),
                keys.join("example.com"),
                keys.join("example.com/default.private"),
                keys.join("example.com/ed25519.private"),
                keys.join("example.org"),
                keys.join("example.org/default.private"),
            ] {
                nix::unistd::chown(&entry, Some(user.uid), Some(user.gid)).unwrap();
            }
        }
        Setup { dir }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("opendkim.conf")
    }

    /// The real OpenDKIM accepts the configuration.
    fn opendkim_accepts(&self) {
        run_ok(
            "opendkim",
            "opendkim",
            &["-n", "-x", self.conf().to_str().unwrap()],
            self.dir.path(),
        );
    }

    fn load(&self) -> Config {
        Config::from_opendkim_file(self.conf()).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn warnings(config: &Config) -> Vec<String> {
    config.warnings.iter().map(ToString::to_string).collect()
}

fn signing_keys(config: &Config, user: &str, domain: &str) -> Vec<String> {
    let policy = &config.policy;
    let tables = policy.signing.tables.as_ref().expect("signing tables");
    let matches = if policy.signing.multiple_signatures {
        tables.signing_table.find_all(user, domain)
    } else {
        tables.signing_table.find_first(user, domain)
    };
    matches.into_iter().map(|m| m.key_name).collect()
}

#[test]
fn guide_with_keytable_refile_signingtable_and_trustedhosts_loads() {
    let setup = Setup::new("guide-tables");
    setup.opendkim_accepts();
    let config = setup.load();
    assert_eq!(config.origin.format, Format::OpenDkim);
    assert_eq!(
        config.service.sockets,
        vec!["inet:12301@localhost".parse::<SocketSpec>().unwrap()]
    );
    assert_eq!(config.service.umask, Some(0o002));
    assert_eq!(config.service.run_as.as_ref().unwrap().user, "opendkim");
    assert_eq!(
        signing_keys(&config, "alice", "example.com"),
        ["mail._domainkey.example.com"]
    );
    assert!(signing_keys(&config, "alice", "example.org").is_empty());
    let trust = &config.policy.trust;
    let internal_hosts = trust.internal_hosts.local().unwrap();
    assert!(internal_hosts.check_ip("192.168.0.77".parse().unwrap()));
    assert!(internal_hosts.matches_client("localhost", None));
    assert_eq!(
        trust
            .external_ignore
            .as_ref()
            .and_then(|s| s.local())
            .unwrap()
            .entries(),
        internal_hosts.entries()
    );
    let w = warnings(&config);
    let trusted = setup.dir.path().join("TrustedHosts").display().to_string();
    for expected in [
        format!("{trusted}:3: `192.168.0.1/24` has host bits set"),
        format!("{trusted}:5: pattern `*.example.com` starts with `*`"),
        "AutoRestart is ignored".to_string(),
    ] {
        assert_eq!(
            w.iter().filter(|w| w.contains(&expected)).count(),
            1,
            "once, though the file serves two options: {expected}: {w:?}"
        );
    }
}

#[test]
fn guide_with_domain_star_keyfile_and_selector_loads() {
    let setup = Setup::new("guide-domain");
    setup.opendkim_accepts();
    let config = setup.load();
    let key = config
        .policy
        .signing
        .domain_key
        .as_ref()
        .expect("Domain key");
    assert!(
        key.domains
            .local()
            .is_some_and(dkim_sidecar::policy::DomainSet::is_any)
    );
    assert_eq!(key.selector, "default");
    assert_eq!(
        key.key.as_ref().expect("the key loads").key_type(),
        KeyType::Rsa
    );
    assert_eq!(
        key.key_file,
        setup.dir.path().join("keys/example.com/default.private")
    );
    let signature = &config.policy.signature;
    assert_eq!(
        (
            signature.header_canonicalization,
            signature.body_canonicalization
        ),
        (
            mail_auth::dkim::Canonicalization::Relaxed,
            mail_auth::dkim::Canonicalization::Simple
        )
    );
    assert_eq!(signature.headers.oversigned(), ["from"]);
    assert_eq!(config.policy.trust.internal_hosts.local().unwrap().len(), 3);
}

#[test]
fn guide_with_several_domains_percent_keys_and_dual_signing_loads() {
    let setup = Setup::new("guide-multi");
    setup.opendkim_accepts();
    let config = setup.load();
    assert!(config.policy.signing.multiple_signatures);
    assert_eq!(
        signing_keys(&config, "bob", "example.com"),
        ["rsa-example.com", "ed25519-example.com"]
    );
    assert_eq!(
        signing_keys(&config, "bob", "eu.example.com"),
        ["rsa-example.com"]
    );
    assert_eq!(signing_keys(&config, "bob", "example.org"), ["rsa-hosted"]);
    let tables = config.policy.signing.tables.as_ref().unwrap();
    let rsa = tables.keys.loaded_key("rsa-example.com").unwrap();
    let ed = tables.keys.loaded_key("ed25519-example.com").unwrap();
    assert_eq!(
        (rsa.key_type(), ed.key_type()),
        (KeyType::Rsa, KeyType::Ed25519)
    );
    assert!(
        tables.keys.loaded_key("rsa-hosted").is_none(),
        "a % key file is loaded when a message needs it"
    );
    let hosted = tables
        .key_table
        .get("rsa-hosted")
        .unwrap()
        .resolve("Example.ORG");
    assert_eq!(hosted.domain, "example.org");
    assert_eq!(config.policy.sender_headers, ["sender", "from"]);
    assert_eq!(
        config.service.sockets,
        vec![SocketSpec::Unix(setup.dir.path().join("opendkim.sock"))]
    );
    assert!(warnings(&config).is_empty(), "{:?}", warnings(&config));
}

#[test]
fn debians_shipped_opendkim_conf_loads() {
    let conf = Path::new(ROOT).join("tests/fixtures/config/debian/opendkim.conf");
    run_ok(
        "opendkim",
        "opendkim",
        &["-n", "-x", conf.to_str().unwrap()],
        Path::new(ROOT),
    );
    let config = Config::from_opendkim_file(&conf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.service.sockets,
        vec![SocketSpec::Unix("/run/opendkim/opendkim.sock".into())]
    );
    assert_eq!(config.service.umask, Some(0o007));
    assert_eq!(
        config.service.pid_file.as_deref(),
        Some(Path::new("/run/opendkim/opendkim.pid"))
    );
    assert_eq!(config.service.run_as.as_ref().unwrap().user, "opendkim");
    assert!(config.logging.syslog && config.logging.log_success);
    assert_eq!(config.policy.signature.headers.oversigned(), ["from"]);
    let w = warnings(&config);
    assert!(
        w.iter()
            .any(|w| w.contains("no signing keys are configured")),
        "{w:?}"
    );
    assert!(!w.iter().any(|w| w.contains("Mode")), "{w:?}");
    // No Mode: sign and verify, with DNSSEC from the root's keys.
    let verification = config.policy.verification.as_ref().expect("Mode sv");
    assert_eq!(
        verification.dns.trust_anchor_file.as_deref(),
        Some(Path::new("/usr/share/dns/root.key"))
    );
    assert!(verification.resolver.validates());
}

#[test]
fn shipped_toml_example_dual_signs_example_com() {
    let config = Config::from_toml_file(Path::new(ROOT).join("conf/dkim-sidecar.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.origin.format, Format::Toml);
    assert_eq!(
        config.service.sockets,
        vec!["inet:8891@127.0.0.1".parse::<SocketSpec>().unwrap()]
    );
    assert_eq!(
        signing_keys(&config, "anyone", "example.com"),
        ["example-rsa", "example-ed25519"]
    );
    assert!(
        config
            .policy
            .trust
            .internal_hosts
            .local()
            .unwrap()
            .check_ip("::1".parse().unwrap())
    );
    // A clone leaves the keys 0644; the example relaxes the check for that
    // reason only, so the only warnings are about those two files.
    for w in warnings(&config) {
        assert!(w.contains("key data is not secure"), "{w}");
    }
}

#[test]
fn shipped_opendkim_example_is_accepted_by_opendkim_and_by_us() {
    run_ok(
        "opendkim",
        "opendkim",
        &["-n", "-x", "conf/opendkim/opendkim.conf"],
        Path::new(ROOT),
    );
    let out = sidecar(
        &["check-config", "-x", "conf/opendkim/opendkim.conf"],
        Path::new(ROOT),
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    for expected in [
        "listen on: inet:8891@localhost",
        "*@example.com",
        "d=example.com s=default rsa-sha256, 2048-bit RSA key",
        "keys-example/default.private",
        "internal hosts: 127.0.0.1, ::1, localhost",
        "canonicalization: relaxed/simple",
        "oversigned headers: from",
        "Verification (Mode v):",
        "DNS: /etc/resolv.conf, timeout 5 s",
    ] {
        assert!(text.contains(expected), "{expected}:\n{text}");
    }
}

#[test]
fn check_config_prints_the_effective_rules_of_the_toml_example() {
    let out = sidecar(
        &["check-config", "-c", "conf/dkim-sidecar.toml"],
        Path::new(ROOT),
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    for expected in [
        "native TOML",
        "listen on: inet:8891@127.0.0.1",
        "*@example.com  (conf/dkim-sidecar.toml:",
        "key example-rsa: d=example.com s=default rsa-sha256, 2048-bit RSA key",
        "key example-ed25519: d=example.com s=ed25519 ed25519-sha256, Ed25519 key",
        "internal hosts: 127.0.0.1, ::1",
        "internal error: tempfail",
    ] {
        assert!(text.contains(expected), "{expected}:\n{text}");
    }
}

#[test]
fn check_config_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("opendkim.conf");
    fs::write(
        &conf,
        "Mode s\nSocket inet:8891@localhost\nSokcet inet:1@localhost\nDomain example.com\n\
         SigningTable refile:/etc/none\n",
    )
    .unwrap();
    let out = sidecar(&["check-config", "-x", conf.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    let errors = stderr(&out);
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "grammar errors stop before meaning: {errors}"
    );
    assert!(
        lines[0].starts_with(&format!(
            "dkim-sidecar: {}:3: unknown option `Sokcet`",
            conf.display()
        )),
        "{errors}"
    );
    fs::write(
        &conf,
        "Mode s\nSocket inet:8891@localhost\nDomain example.com\nSigningTable refile:/etc/none\n",
    )
    .unwrap();
    let out = sidecar(&["check-config", "-x", conf.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let errors = stderr(&out);
    for line in [3, 4] {
        assert!(
            errors.contains(&format!("dkim-sidecar: {}:{line}: ", conf.display())),
            "{errors}"
        );
    }
    // The real OpenDKIM refuses it too.
    let theirs = run(
        "opendkim",
        "opendkim",
        &["-n", "-x", conf.to_str().unwrap()],
        dir.path(),
    );
    assert!(!theirs.status.success());
}

/// `dkim-sidecar check-config -x FILE | head -1`: a reader that goes away
/// is not an error, and certainly not a panic.
#[test]
fn check_config_into_a_closed_pipe_exits_cleanly() {
    let setup = Setup::new("guide-tables");
    let mut child = std::process::Command::new(testkit::binary())
        .args(["check-config", "-x"])
        .arg(setup.conf())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader leaves before a byte is written: every write fails EPIPE.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {errors}", out.status);
    assert!(!errors.contains("panicked"), "{errors}");
}

/// OpenDKIM's `-n` checks a file that names no Socket (`t-conf-check` in
/// its test suite); so does `check-config`, with a warning saying what
/// `run` will need. `run` itself still refuses it.
#[test]
fn check_config_accepts_a_file_without_a_socket_as_opendkim_n_does() {
    let setup = Setup::new("guide-tables");
    let conf = setup.conf();
    let text = fs::read_to_string(&conf).unwrap();
    let without_socket: String = text
        .lines()
        .filter(|l| !l.starts_with("Socket"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(text, without_socket, "the fixture names a Socket");
    fs::write(&conf, without_socket).unwrap();
    let conf = conf.to_str().unwrap();

    let out = sidecar(&["check-config", "-x", conf], setup.dir.path());
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("no socket to listen on")
            && stdout(&out).contains("`run` then needs --socket"),
        "{}",
        stdout(&out)
    );
    let theirs = run(
        "opendkim",
        "opendkim",
        &["-n", "-x", conf],
        setup.dir.path(),
    );
    assert!(theirs.status.success(), "{}", stderr(&theirs));

    let out = sidecar(&["run", "-x", conf, "--allow-root"], setup.dir.path());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no socket to listen on"),
        "{}",
        stderr(&out)
    );
}

// ---- check-config: the service as it will run --------------------------------

/// `check-config -x` on `sidecar`'s opendkim.conf, with `extra` arguments.
fn check_config(setup: &testkit::Sidecar, extra: &[&str]) -> (bool, String) {
    let config = setup.config().display().to_string();
    let mut args = vec!["check-config", "-x", &config];
    args.extend_from_slice(extra);
    let out = sidecar(&args, setup.dir());
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

#[test]
fn check_config_fails_when_the_user_id_cannot_read_a_key_and_says_when_run_refuses_root() {
    testkit::require_root();
    // No UserID: run would refuse root; said, but not a failure.
    let plain = testkit::Sidecar::builder().write();
    let (ok, text) = check_config(&plain, &[]);
    assert!(ok, "{text}");
    assert!(text.contains("`run` would refuse to start"), "{text}");

    // UserID opendkim, the key root's and 0600 (as Sidecar writes it): a
    // reload as opendkim could not read it.
    let sidecar = testkit::Sidecar::builder()
        .config_line("UserID opendkim")
        .write();
    let key = &sidecar.keys()[0].private_key;
    let (ok, text) = check_config(&sidecar, &[]);
    assert!(
        !ok,
        "check-config passed a key opendkim cannot read:\n{text}"
    );
    assert!(
        text.contains(&format!("{}: not readable for opendkim", key.display())),
        "{text}"
    );
    assert!(!text.contains("would refuse"), "{text}");
    // Given to opendkim, it passes.
    let user = nix::unistd::User::from_name("opendkim").unwrap().unwrap();
    nix::unistd::chown(key, Some(user.uid), None).unwrap();
    let (ok, text) = check_config(&sidecar, &[]);
    assert!(ok, "{text}");
    assert!(!text.contains("not readable"), "{text}");
}

#[test]
fn check_config_warns_when_internal_hosts_leave_out_loopback() {
    let sidecar = testkit::Sidecar::builder()
        .internal_hosts(&["192.0.2.0/24"])
        .write();
    let (ok, text) = check_config(&sidecar, &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("does not include 127.0.0.1 or ::1: mail submitted on this host"),
        "{text}"
    );
    let loopback = testkit::Sidecar::builder()
        .internal_hosts(&["127.0.0.1", "::1"])
        .write();
    let (ok, text) = check_config(&loopback, &[]);
    assert!(ok, "{text}");
    assert!(!text.contains("does not include"), "{text}");
}

#[test]
fn check_config_warns_when_the_socket_is_outside_a_chrooted_smtpd() {
    testkit::require_program("/usr/sbin/postconf", "postfix");
    let postfix = tempfile::tempdir_in(testkit::scratch_base()).unwrap();
    fs::write(
        postfix.path().join("main.cf"),
        "queue_directory = /var/spool/postfix\ncompatibility_level = 3.6\n",
    )
    .unwrap();
    let master = |chroot: &str| {
        fs::write(
            postfix.path().join("master.cf"),
            format!("smtp inet n - {chroot} - - smtpd\npickup unix n - y 60 1 pickup\n"),
        )
        .unwrap();
    };
    let postfix_dir = postfix.path().display().to_string();
    let with_socket = |socket: &str| {
        testkit::Sidecar::builder()
            .config_line(&format!("Socket {socket}"))
            .write()
    };
    let outside = with_socket("local:/run/dkim-sidecar/dkim.sock");
    let inside = with_socket("local:/var/spool/postfix/dkim-sidecar/dkim.sock");
    let args = ["--postfix-config", postfix_dir.as_str()];

    master("y");
    let (ok, text) = check_config(&outside, &args);
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "socket local:/run/dkim-sidecar/dkim.sock is outside /var/spool/postfix, the chroot"
        ),
        "{text}"
    );
    assert!(text.contains("service smtp runs chrooted"), "{text}");
    let (_, text) = check_config(&inside, &args);
    assert!(!text.contains("is outside"), "{text}");
    // Without chroot the socket may be anywhere.
    master("n");
    let (_, text) = check_config(&outside, &args);
    assert!(!text.contains("is outside"), "{text}");
}

// ---- secrets are never shown ------------------------------------------------

/// Each password below is distinctive; none may appear in anything the
/// program says.
const SECRETS: [&str; 6] = [
    "PgPassInKeyTable-7Q",
    "PgPassInBrokenDsn-8R",
    "LdapBindPass-9S",
    "TomlPgPass-1T",
    // Written unescaped: a `/` breaks the DSN's syntax...
    "Slash/Pass-2U",
    // ...and opendkim.conf cuts the line at `#`, this part still a password.
    "HashPass-3V",
];

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows a password:\n{text}");
    }
}

/// `run` on a configuration that must not start: waits for it to exit
/// (killing it after 30 s) and returns everything it said.
fn failed_run(args: &[&str], dir: &Path) -> String {
    let mut child = std::process::Command::new(testkit::binary())
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = testkit::poll(std::time::Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    if exited.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(exited.is_some_and(|s| !s.success()), "run started:\n{text}");
    text
}

#[test]
fn passwords_never_appear_in_errors_logs_or_check_config_output() {
    let dir = tempfile::tempdir_in(testkit::scratch_base()).unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let socket = testkit::MilterSocket::free_inet();
    // A PostgreSQL KeyTable and SigningTable on a port nothing listens on,
    // an LDAP bind password, and a broken Canonicalization so that `run`
    // stops at start-up.
    let dsn = |table: &str| {
        format!(
            "dsn:pgsql://signer:{}@1+127.0.0.1/maildb/table={table}?keycol=id?datacol=domain,selector,key",
            SECRETS[0]
        )
    };
    let good = format!(
        "Mode s\nSocket {}\nKeyTable {}\nSigningTable {}\nLDAPBindUser cn=signer\n\
         LDAPBindPassword {}\n",
        socket.opendkim_spec(),
        dsn("keys"),
        dsn("signing"),
        SECRETS[2]
    );
    fs::write(path("good.conf"), &good).unwrap();
    fs::write(
        path("broken.conf"),
        format!("{good}Canonicalization sideways/backwards\n"),
    )
    .unwrap();
    // A DSN without its table, password and all, in the error.
    fs::write(
        path("bad-dsn.conf"),
        format!(
            "Mode s\nSocket {}\nKeyTable dsn:pgsql://signer:{}@1+127.0.0.1/maildb\n\
             SigningTable refile:{}\n",
            socket.opendkim_spec(),
            SECRETS[1],
            path("SigningTable")
        ),
    )
    .unwrap();
    fs::write(path("SigningTable"), "*@example.com default\n").unwrap();
    for (name, password) in [("slash.conf", SECRETS[4]), ("hash.conf", SECRETS[5])] {
        let password = if name == "hash.conf" {
            format!("{password}#rest")
        } else {
            password.to_string()
        };
        fs::write(
            path(name),
            format!(
                "Mode s\nKeyTable dsn:pgsql://signer:{password}@1+127.0.0.1/maildb/table=k?keycol=a?datacol=b\n\
                 SigningTable refile:{}\n",
                path("SigningTable")
            ),
        )
        .unwrap();
    }
    // TOML: a DSN on a line the TOML parser rejects.
    fs::write(
        path("broken.toml"),
        format!(
            "[server]\nsockets = [\"{}\"]\n[tables]\nkey_table = \"dsn:pgsql://signer:{}@1+127.0.0.1/maildb/table=k?keycol=a?datacol=b\" oops\n",
            socket.opendkim_spec(),
            SECRETS[3]
        ),
    )
    .unwrap();

    let here = dir.path();
    for (flag, file) in [
        ("-x", "broken.conf"),
        ("-x", "bad-dsn.conf"),
        ("-x", "slash.conf"),
        ("-x", "hash.conf"),
        ("-c", "broken.toml"),
    ] {
        let file = path(file);
        let said = failed_run(&["run", "--allow-root", flag, &file], here);
        assert_no_secret(&format!("run {flag} {file}"), &said);
        assert!(!said.trim().is_empty(), "run said nothing about {file}");
        let out = sidecar(&["check-config", flag, &file], here);
        assert!(!out.status.success());
        assert_no_secret(
            &format!("check-config {flag} {file}"),
            &format!("{}{}", stdout(&out), stderr(&out)),
        );
    }
    // The configuration that loads: check-config tries the database (down)
    // and describes the tables; `run` starts, degraded, and logs the
    // database being down.
    let out = sidecar(&["check-config", "-x", &path("good.conf")], here);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success(), "the database is down:\n{text}");
    assert!(text.contains("signer:"), "the DSN is described:\n{text}");
    assert_no_secret("check-config on a database that is down", &text);
    let log = dir.path().join("run.log");
    let milter =
        testkit::MilterProcess::start("run on a database that is down", &socket, &log, |_| {
            let mut command = std::process::Command::new(testkit::binary());
            command
                .current_dir(here)
                .args(["run", "--allow-root", "-x", &path("good.conf")]);
            command
        });
    // A message that needs the database: its lookup fails and is logged.
    let testkit::MilterSocket::Inet(addr) = socket else {
        unreachable!()
    };
    let _ = testkit::conversation::signed_message(addr, std::time::Duration::from_secs(30));
    let (_, said) = milter.stop_with_log();
    assert!(!said.trim().is_empty());
    assert_no_secret("run on a database that is down", &said);
}
