//! `dkim-sidecar rotate` against real components: a private BIND 9 as the
//! zone's primary (and, for one test, a secondary) that takes RFC 2136
//! updates signed with TSIG, the daemon signing under load through a
//! whole rotation, and dkimpy verifying samples against the live zone.
//!
//! Every refusal the issue names is caused for real: a server that
//! refuses the update (unknown key, wrong secret, key not allowed), a
//! record that never appears (and one that lags on a secondary), a table
//! edited by hand between steps, two rotations at once, and table writes
//! that fail on a read-only directory or a full disk (a small tmpfs).
//! Each must say why and leave the tables as they were.
//!
//! Needs root (named, mounts) and the packages `.ci/install-deps`
//! installs. No test asserts a timing: instants only order events.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use testkit::bind::{Bind, BindBuilder};
use testkit::command as common;
use testkit::knot::Knot;
use testkit::load::{LiveVerifier, Load, sign_one};
use testkit::openssl::{openssl_ed25519_p, openssl_rsa_p};
use testkit::{MilterProcess, MilterSocket, set_mode};

const DOMAIN: &str = "example.com";
/// Exit status of `rotate` when activation waits for DNS.
const WAITING: i32 = 75;

/// How the site configures its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// opendkim.conf with a KeyTable and a `refile:` SigningTable.
    Tables,
    /// Native TOML with an RSA and an Ed25519 `[[key]]`, dual-signing.
    Toml,
}

/// A mail site: configuration, tables, keys, and the BIND that serves
/// its zone.
struct Site {
    dir: tempfile::TempDir,
    bind: Bind,
    layout: Layout,
    config: PathBuf,
    keys: PathBuf,
    milter: SocketAddr,
    metrics: SocketAddr,
}

/// `default._domainkey` TXT with `p`, split into strings a zone file takes.
fn zone_record(selector: &str, k: &str, p: &str) -> String {
    let text = format!("v=DKIM1; k={k}; p={p}");
    let strings: Vec<String> = text
        .as_bytes()
        .chunks(200)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!("{selector}._domainkey IN TXT ( {} )", strings.join(" "))
}

fn openssl_key(path: &Path, algorithm: &[&str]) {
    let mut args = vec!["genpkey"];
    args.extend_from_slice(algorithm);
    args.extend_from_slice(&["-out", path.to_str().unwrap()]);
    common::run_ok("openssl", "openssl", &args, Path::new("/"));
    set_mode(path, 0o600);
}

impl Site {
    fn new(layout: Layout) -> Site {
        Site::with_bind(layout, |b| b)
    }

    /// A site whose BIND is built by `bind` from the primary's builder.
    fn with_bind(layout: Layout, bind: impl FnOnce(BindBuilder) -> BindBuilder) -> Site {
        testkit::require_root();
        let dir = testkit::scratch_dir("rotate");
        let root = dir.path().to_path_buf();
        let keys = root.join("keys");
        fs::create_dir(&keys).unwrap();
        set_mode(&keys, 0o700);
        let rsa = keys.join("default.private");
        openssl_key(
            &rsa,
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        );
        let mut builder =
            Bind::primary(DOMAIN).record(&zone_record("default", "rsa", &openssl_rsa_p(&rsa)));
        if layout == Layout::Toml {
            let ed = keys.join("ed.private");
            openssl_key(&ed, &["-algorithm", "ED25519"]);
            builder = builder.record(&zone_record("ed", "ed25519", &openssl_ed25519_p(&ed)));
        }
        let bind = bind(builder).start();
        let milter = testkit::free_local_addr();
        let metrics = testkit::free_local_addr();
        let pid_file = root.join("dkim-sidecar.pid");
        let config = match layout {
            Layout::Tables => {
                let tables = root.join("tables");
                fs::create_dir(&tables).unwrap();
                fs::write(
                    tables.join("KeyTable"),
                    format!(
                        "# Keys, one per line: name domain:selector:file\n\
                         default._domainkey.example.com  example.com:default:{}\n\n\
                         # end of keys\n",
                        rsa.display()
                    ),
                )
                .unwrap();
                fs::write(
                    tables.join("SigningTable"),
                    "# Who signs with which key\n\
                     *@example.com  default._domainkey.example.com\n",
                )
                .unwrap();
                let conf = root.join("opendkim.conf");
                fs::write(
                    &conf,
                    format!(
                        "# The usual guide layout\nSyslog no\nMode s\nCanonicalization relaxed/simple\n\
                         KeyTable file:{t}/KeyTable\nSigningTable refile:{t}/SigningTable\n\
                         InternalHosts 127.0.0.1\nPidFile {}\n",
                        pid_file.display(),
                        t = tables.display()
                    ),
                )
                .unwrap();
                conf
            }
            Layout::Toml => {
                let conf = root.join("dkim-sidecar.toml");
                fs::write(
                    &conf,
                    format!(
                        "# dkim-sidecar for example.com\n[server]\nsockets = [\"inet:{}@127.0.0.1\"]\n\
                         pid_file = \"{}\"\nallow_root = true\n\n[trust]\ninternal_hosts = [\"127.0.0.1\"]\n\n\
                         # RSA for everyone\n[[key]]\nname = \"example-rsa\"\ndomain = \"example.com\"\n\
                         selector = \"default\"\nfile = \"keys/default.private\"\n\n\
                         # Ed25519 for those who know it\n[[key]]\nname = \"example-ed25519\"\n\
                         domain = \"example.com\"\nselector = \"ed\"   # RFC 8463\n\
                         file = \"keys/ed.private\"\n\n[[rule]]\nfrom = \"*@example.com\"\n\
                         keys = [\"example-rsa\", \"example-ed25519\"]\n",
                        milter.port(),
                        pid_file.display()
                    ),
                )
                .unwrap();
                conf
            }
        };
        Site {
            dir,
            bind,
            layout,
            config,
            keys,
            milter,
            metrics,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn tables(&self) -> PathBuf {
        self.root().join("tables")
    }

    fn config_flag(&self) -> &'static str {
        match self.layout {
            Layout::Tables => "-x",
            Layout::Toml => "-c",
        }
    }

    /// `rotate` on this site's configuration for example.com, asking the
    /// site's BIND for the zone's servers, with `extra` arguments.
    fn rotate(&self, extra: &[&str]) -> Output {
        let ns = self.bind.addr().to_string();
        let mut args = vec![
            "rotate",
            self.config_flag(),
            self.config.to_str().unwrap(),
            "--domain",
            DOMAIN,
            "--nameserver",
            &ns,
        ];
        args.extend_from_slice(extra);
        let out = common::sidecar(&args, self.root());
        if testkit::show_logs() || std::env::var_os("HARNESS_LOGS").is_some() {
            eprintln!(
                "$ dkim-sidecar {}\n{}{}[exit {:?}]",
                args.join(" "),
                common::stdout(&out),
                common::stderr(&out),
                out.status.code()
            );
        }
        out
    }

    /// `rotate` with dynamic updates to the site's BIND, signed with `key`.
    fn rotate_dns(&self, key: &Path, extra: &[&str]) -> Output {
        let server = self.bind.addr().to_string();
        let mut args = vec![
            "--update-dns",
            server.as_str(),
            "--tsig-key",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.rotate(&args)
    }

    /// The state file, parsed.
    fn state(&self) -> toml::Table {
        let text = fs::read_to_string(self.keys.join("example.com.rotation"))
            .expect("the rotation state file");
        toml::from_str(&text).unwrap()
    }

    fn stage(&self) -> String {
        self.state()["stage"].as_str().unwrap().to_string()
    }

    fn new_selector(&self) -> String {
        self.state()["new"]["selector"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Every file under the tables directory, with its contents.
    fn snapshot(&self, dir: &Path) -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read_to_string(e.path()).unwrap_or_default(),
                )
            })
            .collect();
        files.sort();
        files
    }

    /// `dkim-sidecar run` on the site's configuration, with metrics.
    fn start_daemon(&self) -> MilterProcess {
        let socket = MilterSocket::Inet(self.milter);
        let config = self.config.clone();
        let flag = self.config_flag();
        let metrics = self.metrics.to_string();
        MilterProcess::start(
            "dkim-sidecar daemon",
            &socket,
            &self.root().join("daemon.log"),
            |socket| {
                let mut command = Command::new(testkit::binary());
                command
                    .arg("run")
                    .arg(flag)
                    .arg(&config)
                    .args(["--socket", &socket.opendkim_spec(), "--allow-root"])
                    .args(["--metrics-listen", &metrics])
                    .env_remove("NOTIFY_SOCKET")
                    .env_remove("LISTEN_FDS")
                    .env_remove("LISTEN_PID");
                command
            },
        )
    }
}

fn assert_exit(out: &Output, code: i32, says: &str) {
    let text = common::stdout(out) + &common::stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status; output:\n{text}"
    );
    assert!(text.contains(says), "expected {says:?} in:\n{text}");
}

/// The time the state file gives for `field`, as an instant of this test.
fn wait_until_state_time(site: &Site, field: &str) {
    let text = site.state()[field].as_str().unwrap().to_string();
    let out = Command::new("date")
        .args(["-u", "-d", &text, "+%s"])
        .output()
        .unwrap();
    let at: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if now > at {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_whole_rotation_under_load_never_signs_with_an_unpublished_or_revoked_key() {
    let site = Site::new(Layout::Tables);
    let _daemon = site.start_daemon();
    let verifier = LiveVerifier::start(site.bind.addr());
    let load = Load::start(site.milter, "load@example.com", 2, verifier.clone());
    let key = site.bind.update_key();
    let metrics = site.metrics.to_string();
    let pidfile = [
        "--reload",
        "pidfile",
        "--overlap",
        "3s",
        "--daemon-metrics",
        &metrics,
    ];
    load.wait_for_more(40);

    // Nothing is due for a key made today.
    let out = site.rotate_dns(&key, &pidfile);
    assert_exit(&out, 0, "nothing due: key default (rsa)");
    assert!(!site.keys.join("example.com.rotation").exists());

    let out = site.rotate_dns(&key, &[&pidfile[..], &["--now"]].concat());
    assert_exit(&out, 0, "prepare: wrote");
    let new = site.new_selector();
    let new_name = format!("{new}._domainkey.example.com");
    assert_eq!(site.bind.txt(&new_name), None, "prepare publishes nothing");
    load.wait_for_more(40);

    let out = site.rotate_dns(&key, &pidfile);
    assert_exit(&out, 0, "publish: added the TXT record");
    let published = Instant::now();
    let record = site.bind.txt(&new_name).expect("the new record is served");
    assert!(record.starts_with("v=DKIM1;"), "{record}");
    load.wait_for_more(40);

    let out = site.rotate_dns(&key, &pidfile);
    assert_exit(&out, 0, "its metrics confirm the reload");
    assert_exit(
        &out,
        0,
        &format!("activate: example.com now signs with selector {new}"),
    );
    assert_exit(&out, 0, "ns1.example.com (127.0.0.1:");
    let activated = Instant::now();
    let key_table = fs::read_to_string(site.tables().join("KeyTable")).unwrap();
    assert!(
        key_table.starts_with(&format!(
            "# Keys, one per line: name domain:selector:file\n\
             default._domainkey.example.com  example.com:default:{k}/default.private\n\
             {new_name}  example.com:{new}:{k}/{new}.private\n\n# end of keys\n",
            k = site.keys.display()
        )),
        "{key_table}"
    );
    let signing_table = fs::read_to_string(site.tables().join("SigningTable")).unwrap();
    assert_eq!(
        signing_table,
        format!("# Who signs with which key\n*@example.com  {new_name}\n")
    );
    load.wait_for_more(40);

    // Nothing due during the overlap, and nothing changes.
    let before = site.snapshot(&site.tables());
    let out = site.rotate_dns(&key, &pidfile);
    assert_exit(&out, 0, "nothing due: example.com signs with selector");
    assert_eq!(site.snapshot(&site.tables()), before);

    // Every sample signed with the old key is verified while its record
    // is still published; then the overlap ends.
    wait_until_state_time(&site, "retire_after");
    verifier.drain(Duration::from_secs(120));
    let retiring = Instant::now();
    let out = site.rotate_dns(&key, &pidfile);
    assert_exit(
        &out,
        0,
        "retire: revoked (empty p=) default._domainkey.example.com",
    );
    let retired = Instant::now();
    load.wait_for_more(40);
    let sent = load.stop();
    let verdicts = verifier.finish();

    // After retire: the old record is revoked, the old line and key gone.
    assert_eq!(
        site.bind.txt("default._domainkey.example.com").as_deref(),
        Some("v=DKIM1; k=rsa; p=")
    );
    let key_table = fs::read_to_string(site.tables().join("KeyTable")).unwrap();
    assert!(!key_table.contains("default._domainkey"), "{key_table}");
    assert!(key_table.starts_with("# Keys, one per line"), "{key_table}");
    assert!(site.keys.join("archive/default.private").exists());
    assert!(!site.keys.join("default.private").exists());
    let out = site.rotate_dns(&key, &pidfile);
    assert_exit(&out, 0, "nothing due");

    eprintln!(
        "{} messages through the rotation ({} signed with {new}); {} samples verified by dkimpy",
        sent.len(),
        sent.iter()
            .filter(|s| s.selector.as_deref() == Ok(new.as_str()))
            .count(),
        verdicts.len()
    );
    // None unsigned; each signed with a key whose record was published
    // and not revoked at the time.
    let unsigned: Vec<_> = sent.iter().filter(|s| s.selector.is_err()).collect();
    assert!(unsigned.is_empty(), "messages not signed: {unsigned:?}");
    for s in &sent {
        let selector = s.selector.as_ref().unwrap();
        if *selector == new {
            assert!(
                s.started > published,
                "message {} signed with {new} before its record was published",
                s.seq
            );
        } else {
            assert_eq!(selector, "default", "message {}", s.seq);
            assert!(
                s.finished < retiring,
                "message {} signed with the retired key",
                s.seq
            );
            assert!(
                s.started < activated,
                "message {} signed with the old key after activation",
                s.seq
            );
        }
    }
    // Mail flowed in every phase.
    let in_phase = |from: Instant, to: Instant| {
        sent.iter()
            .filter(|s| s.started >= from && s.finished <= to)
            .count()
    };
    assert!(in_phase(published, activated) > 0);
    assert!(in_phase(activated, retiring) > 0);
    assert!(sent.iter().any(|s| s.started > retired));
    // Every sample passed dkimpy against the live zone, for both keys.
    let failed: Vec<_> = verdicts.iter().filter(|v| !v.passed).collect();
    assert!(failed.is_empty(), "dkimpy failed: {failed:?}");
    for selector in ["default", new.as_str()] {
        assert!(
            verdicts.iter().any(|v| v.selector == selector),
            "no sample signed with {selector} was verified ({} verdicts)",
            verdicts.len()
        );
    }
}

#[test]
fn a_toml_configuration_rotates_its_ed25519_key_in_place() {
    let site = Site::new(Layout::Toml);
    let daemon = site.start_daemon();
    let verifier = LiveVerifier::start(site.bind.addr());
    let key = site.bind.update_key();
    let metrics = site.metrics.to_string();
    let reload = [
        "--reload",
        "pidfile",
        "--overlap",
        "2s",
        "--daemon-metrics",
        &metrics,
    ];
    let before = fs::read_to_string(&site.config).unwrap();

    // Two keys: rotate needs to be told which.
    let out = site.rotate_dns(&key, &["--now"]);
    assert_exit(
        &out,
        1,
        "has 2 keys (default (rsa), ed (ed25519)); say which to rotate with --algorithm",
    );
    let out = site.rotate_dns(
        &key,
        &["--now", "--algorithm", "ed25519", "--selector", "ed2"],
    );
    assert_exit(&out, 0, "prepare: wrote");
    assert_exit(&out, 0, "(ed25519)");
    let out = site.rotate_dns(&key, &reload);
    assert_exit(
        &out,
        0,
        "publish: added the TXT record ed2._domainkey.example.com",
    );
    let out = site.rotate_dns(&key, &reload);
    assert_exit(&out, 0, "activate: example.com now signs with selector ed2");
    let after = fs::read_to_string(&site.config).unwrap();
    assert_eq!(
        after,
        before
            .replace("selector = \"ed\"", "selector = \"ed2\"")
            .replace("keys/ed.private", "keys/ed2.private"),
        "only the key's selector and file change; comments stay"
    );

    let message = sign_one(site.milter, "alice@example.com").expect("signed");
    verifier.submit(1, message);
    verifier.drain(Duration::from_secs(60));
    wait_until_state_time(&site, "retire_after");
    let out = site.rotate_dns(&key, &reload);
    assert_exit(
        &out,
        0,
        "retire: revoked (empty p=) ed._domainkey.example.com",
    );
    assert_eq!(
        site.bind.txt("ed._domainkey.example.com").as_deref(),
        Some("v=DKIM1; k=ed25519; p=")
    );
    assert!(site.keys.join("archive/ed.private").exists());
    let message = sign_one(site.milter, "alice@example.com").expect("signed");
    verifier.submit(2, message);
    let verdicts = verifier.finish();
    let mut seen: Vec<(u64, String, bool)> = verdicts
        .iter()
        .map(|v| (v.seq, v.selector.clone(), v.passed))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (1, "default".to_string(), true),
            (1, "ed2".to_string(), true),
            (2, "default".to_string(), true),
            (2, "ed2".to_string(), true),
        ],
        "{verdicts:?}"
    );
    drop(daemon);
    let status = common::sidecar(
        &["rotate", "-c", site.config.to_str().unwrap(), "--status"],
        site.root(),
    );
    assert_exit(&status, 0, "DOMAIN");
    let text = common::stdout(&status);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["DOMAIN", "SELECTOR", "ALGORITHM", "AGE", "STAGE", "NEXT"]
    );
    assert_eq!(rows[1][..3], ["example.com", "default", "rsa"], "{text}");
    assert_eq!(rows[2][..3], ["example.com", "ed2", "ed25519"], "{text}");
    assert_eq!(rows[2][4], "-", "the rotation is complete: {text}");
    assert_eq!(rows[2][5..7], ["prepare", "on"], "{text}");
}

#[test]
fn an_update_the_server_refuses_changes_nothing_and_says_why() {
    let site = Site::new(Layout::Tables);
    let out = site.rotate_dns(&site.bind.update_key(), &["--now", "--reload", "none"]);
    assert_exit(&out, 0, "prepare: wrote");
    let new_name = format!("{}._domainkey.example.com", site.new_selector());
    let tables = site.snapshot(&site.tables());

    // Same name, other secret: BADSIG.
    let wrong_secret = site.root().join("wrong-secret.key");
    let keygen = common::run_ok(
        "/usr/sbin/tsig-keygen",
        "bind9",
        &["-a", "hmac-sha256", testkit::bind::UPDATE_KEY],
        Path::new("/"),
    );
    fs::write(&wrong_secret, &keygen.stdout).unwrap();
    let mut said = String::new();
    let out = site.rotate_dns(&wrong_secret, &["--reload", "none"]);
    said += &(common::stdout(&out) + &common::stderr(&out));
    assert_exit(&out, 1, "(NOTAUTH, TSIG error BADSIG)");
    assert_exit(&out, 1, "the secret differs from the server's");
    assert_exit(&out, 1, "nothing was changed");
    // A name the server does not know: BADKEY.
    let unknown = site.root().join("unknown.key");
    let keygen = common::run_ok(
        "/usr/sbin/tsig-keygen",
        "bind9",
        &["-a", "hmac-sha256", "stranger"],
        Path::new("/"),
    );
    fs::write(&unknown, &keygen.stdout).unwrap();
    let out = site.rotate_dns(&unknown, &["--reload", "none"]);
    said += &(common::stdout(&out) + &common::stderr(&out));
    assert_exit(&out, 1, "(NOTAUTH, TSIG error BADKEY)");
    assert_exit(&out, 1, "does not know TSIG key \"stranger\"");
    // A key the server knows but does not allow to update the zone.
    let out = site.rotate_dns(&site.bind.other_key(), &["--reload", "none"]);
    said += &(common::stdout(&out) + &common::stderr(&out));
    assert_exit(&out, 1, "(REFUSED)");
    assert_exit(
        &out,
        1,
        "does not let key \"other-key\" update zone example.com",
    );
    // The secrets never show.
    for file in [&wrong_secret, &unknown, &site.bind.other_key()] {
        let text = fs::read_to_string(file).unwrap();
        let secret = text.split('"').nth(3).unwrap();
        assert!(secret.len() > 20 && !said.contains(secret));
    }

    assert_eq!(site.bind.txt(&new_name), None);
    assert_eq!(site.stage(), "prepared");
    assert_eq!(site.snapshot(&site.tables()), tables);
    let out = site.rotate_dns(&site.bind.update_key(), &["--reload", "none"]);
    assert_exit(&out, 0, "publish: added the TXT record");
    assert!(site.bind.txt(&new_name).is_some());
}

#[test]
fn activation_waits_for_a_record_that_never_appears_and_says_why() {
    let site = Site::new(Layout::Tables);
    let none = ["--reload", "none"];
    assert_exit(
        &site.rotate(&["--now", "--reload", "none"]),
        0,
        "prepare: wrote",
    );
    let new = site.new_selector();
    let out = site.rotate(&none);
    assert_exit(
        &out,
        0,
        &format!("publish: add this TXT record at {new}._domainkey.example.com"),
    );
    let tables = site.snapshot(&site.tables());
    for _ in 0..2 {
        let out = site.rotate(&none);
        assert_exit(
            &out,
            WAITING,
            &format!(
                "ns1.example.com (127.0.0.1:{}) has no TXT record at {new}._domainkey.example.com yet",
                site.bind.addr().port()
            ),
        );
        assert_exit(&out, WAITING, "nothing was changed");
        assert_eq!(site.snapshot(&site.tables()), tables);
        assert_eq!(site.stage(), "published");
    }
    // Someone publishes the wrong key there.
    let other = site.root().join("other.private");
    openssl_key(
        &other,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let p = openssl_rsa_p(&other);
    let chunks: Vec<String> = format!("v=DKIM1; k=rsa; p={p}")
        .as_bytes()
        .chunks(200)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    let script = format!(
        "server 127.0.0.1 {}\nzone example.com\nupdate add {new}._domainkey.example.com 60 TXT {}\nsend\n",
        site.bind.addr().port(),
        chunks.join(" ")
    );
    let mut nsupdate = Command::new("nsupdate")
        .arg("-k")
        .arg(site.bind.update_key())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nsupdate (bind9-dnsutils)");
    use std::io::Write as _;
    nsupdate
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(nsupdate.wait().unwrap().success());
    let out = site.rotate(&none);
    assert_exit(&out, WAITING, "serves a record with a different public key");
    assert_eq!(site.snapshot(&site.tables()), tables);
}

#[test]
fn activation_waits_until_every_authoritative_server_serves_the_record() {
    // ns2 on 127.0.0.2 is a Knot secondary that the primary does not notify.
    let ns2 = Ipv4Addr::new(127, 0, 0, 2);
    let site = Site::with_bind(Layout::Tables, |b| b.name_server("ns2.example.com", ns2));
    let primary_port = site.bind.addr().port();
    let secondary = Knot::secondary_of(&site.bind, ns2);
    let key = site.bind.update_key();
    let none = ["--reload", "none"];
    assert_exit(
        &site.rotate_dns(&key, &["--now", "--reload", "none"]),
        0,
        "prepare",
    );
    assert_exit(&site.rotate_dns(&key, &none), 0, "publish: added");
    let new_name = format!("{}._domainkey.example.com", site.new_selector());
    let out = site.rotate_dns(&key, &none);
    assert_exit(
        &out,
        WAITING,
        &format!("ns2.example.com (127.0.0.2:{primary_port}) has no TXT record at {new_name} yet"),
    );
    assert_exit(
        &out,
        WAITING,
        &format!("ns1.example.com (127.0.0.1:{primary_port}) serves it"),
    );
    assert_exit(&out, WAITING, "wait until the update reaches every server");
    assert_eq!(site.stage(), "published");
    // A fresh secondary transfers the zone as it is now.
    drop(secondary);
    let _secondary = Knot::secondary_of(&site.bind, ns2);
    let out = site.rotate_dns(&key, &none);
    assert_exit(&out, 0, "activate: example.com now signs");
    assert_exit(&out, 0, "reload: not done");
}

#[test]
fn a_table_edited_by_hand_between_steps_is_not_overwritten() {
    let site = Site::new(Layout::Tables);
    let key = site.bind.update_key();
    let none = ["--reload", "none"];
    assert_exit(
        &site.rotate_dns(&key, &["--now", "--reload", "none"]),
        0,
        "prepare",
    );
    assert_exit(&site.rotate_dns(&key, &none), 0, "publish: added");
    let signing_table = site.tables().join("SigningTable");
    let edited = format!(
        "{}# alice signs too, added by hand\nalice@example.com  default._domainkey.example.com\n",
        fs::read_to_string(&signing_table).unwrap()
    );
    fs::write(&signing_table, &edited).unwrap();
    let tables = site.snapshot(&site.tables());
    let out = site.rotate_dns(&key, &none);
    assert_exit(
        &out,
        1,
        &format!(
            "{}: changed since rotate's last step",
            signing_table.display()
        ),
    );
    assert_exit(&out, 1, "--accept-edits");
    assert_eq!(site.snapshot(&site.tables()), tables, "nothing overwritten");
    assert_eq!(site.stage(), "published");
    // Once looked at: the switch keeps the hand edit and switches it too.
    let out = site.rotate_dns(&key, &["--reload", "none", "--accept-edits"]);
    assert_exit(&out, 0, "activate: example.com now signs");
    let new_name = format!("{}._domainkey.example.com", site.new_selector());
    assert_eq!(
        fs::read_to_string(&signing_table).unwrap(),
        format!(
            "# Who signs with which key\n*@example.com  {new_name}\n\
             # alice signs too, added by hand\nalice@example.com  {new_name}\n"
        )
    );
}

#[test]
fn two_rotations_of_one_domain_cannot_run_at_once() {
    let site = Site::new(Layout::Tables);
    let none = ["--reload", "none"];
    assert_exit(&site.rotate(&["--now", "--reload", "none"]), 0, "prepare");
    assert_exit(&site.rotate(&none), 0, "publish: add this TXT record");
    // A DNS server that never answers keeps the first rotation in its
    // activation check (holding the lock) for a while.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let first = Command::new(testkit::binary())
        .args([
            "rotate",
            "-x",
            site.config.to_str().unwrap(),
            "--domain",
            DOMAIN,
        ])
        .args(["--nameserver", &silent_addr, "--reload", "none"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lock = site.keys.join(".example.com.rotation.lock");
    let holder = first.id().to_string();
    let held = testkit::poll(Duration::from_secs(10), || {
        (fs::read_to_string(&lock).ok()?.trim() == holder).then_some(())
    });
    assert!(held.is_some(), "the first rotation did not take the lock");
    let tables = site.snapshot(&site.tables());
    let out = site.rotate(&none);
    assert_exit(
        &out,
        1,
        &format!("another rotation of example.com is running (pid {holder})"),
    );
    assert_eq!(site.snapshot(&site.tables()), tables);
    let first = first.wait_with_output().unwrap();
    assert_exit(&first, WAITING, "cannot find the zone of");
    assert_exit(&first, WAITING, "no answer within");
    assert_eq!(site.stage(), "published");
    drop(silent);
}

/// A mount made by the test, undone in `Drop`.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(path: &Path, size: &str) -> Mount {
        run_mount(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ],
            path,
        );
        Mount(path.to_path_buf())
    }

    fn read_only(path: &Path) -> Mount {
        run_mount(&["--bind"], path);
        let mount = Mount(path.to_path_buf());
        let out = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "remount ro: {out:?}");
        mount
    }
}

fn run_mount(args: &[&str], path: &Path) {
    let mut command = Command::new("mount");
    command.args(args);
    if args.contains(&"--bind") {
        command.arg(path);
    }
    let out = command.arg(path).output().expect("mount (util-linux)");
    assert!(
        out.status.success(),
        "mount {args:?} {}: {out:?}",
        path.display()
    );
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

/// A site through publish, ready to activate.
fn published_site() -> Site {
    let site = Site::new(Layout::Tables);
    let key = site.bind.update_key();
    assert_exit(
        &site.rotate_dns(&key, &["--now", "--reload", "none"]),
        0,
        "prepare",
    );
    assert_exit(
        &site.rotate_dns(&key, &["--reload", "none"]),
        0,
        "publish: added",
    );
    site
}

#[test]
fn a_table_in_a_read_only_directory_stays_as_it_was() {
    let site = published_site();
    let tables = site.snapshot(&site.tables());
    {
        let _ro = Mount::read_only(&site.tables());
        let out = site.rotate(&["--reload", "none"]);
        assert_exit(&out, 1, "Read-only file system");
        assert_exit(&out, 1, "the file is unchanged");
        assert_eq!(site.snapshot(&site.tables()), tables);
        assert_eq!(site.stage(), "published");
        assert!(site.state().get("pending").is_none());
    }
    let out = site.rotate(&["--reload", "none"]);
    assert_exit(&out, 0, "activate: example.com now signs");
}

#[test]
fn a_signing_table_that_cannot_be_written_puts_the_key_table_back() {
    let site = published_site();
    // The SigningTable alone in a directory that turns read-only: the
    // KeyTable is replaced first, then the SigningTable fails.
    let st_dir = site.root().join("st");
    fs::create_dir(&st_dir).unwrap();
    fs::rename(
        site.tables().join("SigningTable"),
        st_dir.join("SigningTable"),
    )
    .unwrap();
    let conf = fs::read_to_string(&site.config).unwrap().replace(
        &format!("refile:{}/SigningTable", site.tables().display()),
        &format!("refile:{}/SigningTable", st_dir.display()),
    );
    fs::write(&site.config, conf).unwrap();
    let key_tables = site.snapshot(&site.tables());
    let signing_tables = site.snapshot(&st_dir);
    {
        let _ro = Mount::read_only(&st_dir);
        let out = site.rotate(&["--reload", "none", "--accept-edits"]);
        assert_exit(&out, 1, "Read-only file system");
        assert_exit(&out, 1, "the previous tables were put back");
        assert_eq!(
            site.snapshot(&site.tables()),
            key_tables,
            "KeyTable restored, no leftovers"
        );
        assert_eq!(site.snapshot(&st_dir), signing_tables);
        assert_eq!(site.stage(), "published");
    }
    let out = site.rotate(&["--reload", "none", "--accept-edits"]);
    assert_exit(&out, 0, "activate: example.com now signs");
}

#[test]
fn a_full_disk_leaves_the_tables_intact() {
    let site = published_site();
    let tables = site.tables();
    let saved = site.snapshot(&tables);
    let _tmpfs = Mount::tmpfs(&tables, "64k");
    for (name, text) in &saved {
        fs::write(tables.join(name), text).unwrap();
    }
    // Fill the rest of the tmpfs.
    let filler = tables.join("filler");
    let mut file = fs::File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    use std::io::Write as _;
    while file.write_all(&block).and_then(|_| file.sync_all()).is_ok() {}
    drop(file);
    let with_filler = site.snapshot(&tables);
    let out = site.rotate(&["--reload", "none"]);
    assert_exit(&out, 1, "No space left on device");
    assert_exit(&out, 1, "the file is unchanged");
    assert_eq!(site.snapshot(&tables), with_filler);
    assert_eq!(site.stage(), "published");
    fs::remove_file(&filler).unwrap();
    let out = site.rotate(&["--reload", "none"]);
    assert_exit(&out, 0, "activate: example.com now signs");
}

fn packaging(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_timer_and_service_are_valid_units_installed_but_not_enabled() {
    assert!(
        Path::new("/usr/bin/systemd-analyze").exists(),
        "systemd-analyze is missing: install the Debian package systemd"
    );
    let dir = tempfile::tempdir().unwrap();
    let service = packaging("packaging/rotate/dkim-sidecar-rotate.service");
    let timer = packaging("packaging/rotate/dkim-sidecar-rotate.timer");
    // As installed, except that ExecStart names the binary this run built.
    fs::write(
        dir.path().join("dkim-sidecar-rotate.service"),
        service.replace(
            "/usr/bin/dkim-sidecar",
            &testkit::binary().display().to_string(),
        ),
    )
    .unwrap();
    fs::write(dir.path().join("dkim-sidecar-rotate.timer"), &timer).unwrap();
    let out = Command::new("/usr/bin/systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("dkim-sidecar-rotate.service"))
        .arg(dir.path().join("dkim-sidecar-rotate.timer"))
        .output()
        .unwrap();
    let said = common::stderr(&out) + &common::stdout(&out);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");

    // The service runs rotate for every domain, as the packaged daemon's
    // user, reloading the packaged service; the timer runs it daily.
    let exec = service
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap();
    for part in [
        "/usr/bin/dkim-sidecar rotate",
        "--all",
        "--signer-user dkim-sidecar",
        "--reload systemd",
        "$DKIM_SIDECAR_ROTATE_OPTIONS",
    ] {
        assert!(exec.contains(part), "{exec}");
    }
    assert!(service.contains("\nType=oneshot\n"));
    assert!(service.contains("\nEnvironmentFile=-/etc/default/dkim-sidecar-rotate\n"));
    assert!(
        !service.contains("[Install]"),
        "the service is started by the timer only"
    );
    assert!(timer.contains("\nOnCalendar=daily\n") && timer.contains("\nPersistent=true\n"));
    // The command line the service runs is one rotate accepts.
    let default_config = "-c /etc/dkim-sidecar/dkim-sidecar.toml";
    assert!(service.contains(&format!("DKIM_SIDECAR_CONFIG={default_config}")));
    let mut args: Vec<&str> = exec["ExecStart=/usr/bin/dkim-sidecar ".len()..]
        .split_whitespace()
        .filter(|w| !w.starts_with('$'))
        .collect();
    args.splice(1..1, default_config.split_whitespace());
    args.push("--help");
    let out = common::sidecar(&args, Path::new("/"));
    assert!(out.status.success(), "{args:?}: {}", common::stderr(&out));

    // Installed by the package as plain files (not enabled), with the
    // example settings.
    let manifest = packaging("Cargo.toml");
    assert!(manifest.contains(
        "[\"packaging/rotate/dkim-sidecar-rotate.*\", \"usr/lib/systemd/system/\", \"644\"]"
    ));
    assert!(
        manifest.contains("[\"packaging/examples/*\", \"usr/share/doc/dkim-sidecar/examples/\"")
    );
    let example = packaging("packaging/examples/dkim-sidecar-rotate.default");
    assert!(example.contains("DKIM_SIDECAR_ROTATE_OPTIONS="));
}

#[test]
fn the_timer_command_changes_nothing_when_nothing_is_due_and_prepares_what_is() {
    let site = Site::new(Layout::Tables);
    let tables = site.snapshot(&site.tables());
    let all = |extra: &[&str]| {
        let mut args = vec!["rotate", "-x", site.config.to_str().unwrap(), "--all"];
        args.extend_from_slice(&["--reload", "none"]);
        args.extend_from_slice(extra);
        common::sidecar(&args, site.root())
    };
    for _ in 0..2 {
        let out = all(&[]);
        assert_exit(&out, 0, "example.com: nothing due: key default (rsa)");
        assert_eq!(site.snapshot(&site.tables()), tables);
        assert!(!site.keys.join("example.com.rotation").exists());
    }
    // A key older than --max-age is due.
    let out = all(&["--max-age", "0s"]);
    assert_exit(&out, 0, "example.com: prepare: wrote");
    assert_eq!(site.stage(), "prepared");
    assert_eq!(
        site.snapshot(&site.tables()),
        tables,
        "prepare edits no table"
    );
}

#[test]
fn a_daemon_that_cannot_be_reloaded_gets_its_old_tables_back() {
    let site = published_site();
    let tables = site.snapshot(&site.tables());
    // The PidFile names no running daemon.
    let out = site.rotate(&["--reload", "pidfile"]);
    assert_exit(&out, 1, "cannot read the daemon's PID file");
    assert_exit(&out, 1, "the previous tables were put back");
    assert_eq!(site.snapshot(&site.tables()), tables);
    assert_eq!(site.stage(), "published");
    // A PID file left by something else is not signalled.
    fs::write(
        site.root().join("dkim-sidecar.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let out = site.rotate(&["--reload", "pidfile"]);
    assert_exit(&out, 1, "not dkim-sidecar (a stale PID file?)");
    assert_eq!(site.snapshot(&site.tables()), tables);
    let _daemon = site.start_daemon();
    let metrics = site.metrics.to_string();
    let out = site.rotate(&["--reload", "pidfile", "--daemon-metrics", &metrics]);
    assert_exit(&out, 0, "its metrics confirm the reload");
}

#[test]
fn new_keys_belong_to_the_signing_user() {
    // The daemon runs as `nobody` (systemd's User=, not in the
    // configuration); rotate runs as root.
    let site = Site::new(Layout::Tables);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    for path in [site.keys.clone(), site.keys.join("default.private")] {
        std::os::unix::fs::chown(&path, Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw()))
            .unwrap();
    }
    // Checked as root, nobody's key is refused, as the daemon would refuse
    // it if it ran as root.
    let out = site.rotate(&["--now", "--reload", "none"]);
    assert_exit(&out, 1, "does not load, so rotate changes nothing");
    let out = site.rotate(&["--now", "--reload", "none", "--signer-user", "nobody"]);
    assert_exit(&out, 0, "prepare: wrote");
    use std::os::unix::fs::MetadataExt as _;
    let new = site.keys.join(format!("{}.private", site.new_selector()));
    let meta = fs::metadata(&new).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (nobody.uid.as_raw(), nobody.gid.as_raw())
    );
    assert_eq!(meta.mode() & 0o777, 0o600);
}

#[test]
fn a_key_the_signing_table_reaches_through_percent_is_switched_in_place() {
    let site = Site::new(Layout::Tables);
    let key_table = site.tables().join("KeyTable");
    let signing_table = site.tables().join("SigningTable");
    fs::write(
        &key_table,
        format!(
            "# named after the domain, for the % below
             example.com\texample.com:default:{}/default.private
",
            site.keys.display()
        ),
    )
    .unwrap();
    fs::write(&signing_table, "*@example.com %\n").unwrap();
    let key = site.bind.update_key();
    let none = ["--reload", "none", "--overlap", "0s"];
    assert_exit(
        &site.rotate_dns(&key, &["--now", "--reload", "none"]),
        0,
        "prepare",
    );
    assert_eq!(site.state()["switch"].as_str(), Some("in-place"));
    assert_exit(&site.rotate_dns(&key, &none), 0, "publish: added");
    let out = site.rotate_dns(&key, &none);
    assert_exit(&out, 0, "activate: example.com now signs");
    let new = site.new_selector();
    assert_eq!(
        fs::read_to_string(&key_table).unwrap(),
        format!(
            "# named after the domain, for the % below
             example.com\texample.com:{new}:{}/{new}.private
",
            site.keys.display()
        )
    );
    assert_eq!(
        fs::read_to_string(&signing_table).unwrap(),
        "*@example.com %\n"
    );
    let out = site.rotate_dns(&key, &none);
    assert_exit(
        &out,
        0,
        "retire: revoked (empty p=) default._domainkey.example.com",
    );
    assert!(
        !common::stdout(&out).contains("removed"),
        "no KeyTable line to remove: {}",
        common::stdout(&out)
    );
    assert!(site.keys.join("archive/default.private").exists());
}

#[test]
fn retire_never_revokes_a_record_the_tables_sign_with_again() {
    let site = Site::new(Layout::Tables);
    let key = site.bind.update_key();
    let none = ["--reload", "none", "--overlap", "0s"];
    assert_exit(
        &site.rotate_dns(&key, &["--now", "--reload", "none"]),
        0,
        "prepare",
    );
    assert_exit(&site.rotate_dns(&key, &none), 0, "publish: added");
    assert_exit(
        &site.rotate_dns(&key, &none),
        0,
        "activate: example.com now signs",
    );
    let published = site.bind.txt("default._domainkey.example.com").unwrap();
    // The administrator goes back to the old key during the overlap.
    let signing_table = site.tables().join("SigningTable");
    fs::write(
        &signing_table,
        "# Who signs with which key\n*@example.com  default._domainkey.example.com\n",
    )
    .unwrap();
    let tables = site.snapshot(&site.tables());
    let out = site.rotate_dns(&key, &none);
    assert_exit(&out, 1, "changed since rotate's last step");
    let out = site.rotate_dns(&key, &[&none[..], &["--accept-edits"]].concat());
    assert_exit(&out, 1, "signs with selector default again");
    assert_eq!(
        site.bind.txt("default._domainkey.example.com").as_deref(),
        Some(published.as_str()),
        "the old record is untouched"
    );
    assert_eq!(site.snapshot(&site.tables()), tables);
    assert!(site.keys.join("default.private").exists());
    assert_eq!(site.stage(), "active");
}

#[test]
fn keys_rotate_cannot_switch_safely_are_refused_with_what_to_change() {
    let site = Site::new(Layout::Tables);
    let key_table = site.tables().join("KeyTable");
    let signing_table = site.tables().join("SigningTable");
    // One entry for every sender's domain.
    fs::write(
        &key_table,
        format!("any %:default:{}/default.private\n", site.keys.display()),
    )
    .unwrap();
    fs::write(&signing_table, "*@example.com any\n").unwrap();
    let out = site.rotate(&["--now", "--reload", "none"]);
    assert_exit(&out, 1, "signs for every sender's domain (%)");
    assert_exit(&out, 1, "give that domain an entry of its own");
    // A domain nothing signs for.
    fs::write(
        &key_table,
        format!(
            "k example.com:default:{}/default.private\n",
            site.keys.display()
        ),
    )
    .unwrap();
    fs::write(&signing_table, "*@example.com k\n").unwrap();
    let out = common::sidecar(
        &[
            "rotate",
            "-x",
            site.config.to_str().unwrap(),
            "--domain",
            "example.net",
        ],
        site.root(),
    );
    assert_exit(&out, 1, "example.net: no key signs for it in");
    assert_exit(&out, 1, "(domains with keys: example.com)");
    assert!(!site.keys.join("example.com.rotation").exists());
    assert_eq!(
        fs::read_dir(&site.keys).unwrap().count(),
        1,
        "nothing written"
    );
}

#[test]
fn a_switch_whose_record_was_lost_is_recognised_not_taken_for_a_hand_edit() {
    // A run that switched the tables and then died before recording it
    // leaves the state at "published" with the switch pending: the state
    // as it was is rebuilt here from a real activation.
    let site = published_site();
    let state_path = site.keys.join("example.com.rotation");
    let published_state = fs::read_to_string(&state_path).unwrap();
    let out = site.rotate(&["--reload", "none"]);
    assert_exit(&out, 0, "activate: example.com now signs");
    let active: toml::Table = toml::from_str(&fs::read_to_string(&state_path).unwrap()).unwrap();
    let mut crashed: toml::Table = toml::from_str(&published_state).unwrap();
    let mut pending = toml::Table::new();
    pending.insert("to".into(), "active".into());
    pending.insert("files".into(), active["files"].clone());
    crashed.insert("pending".into(), toml::Value::Table(pending));
    fs::write(&state_path, toml::to_string(&crashed).unwrap()).unwrap();
    let tables = site.snapshot(&site.tables());

    let out = site.rotate(&["--reload", "none"]);
    assert_exit(
        &out,
        0,
        "activate: the tables were switched by an earlier run",
    );
    assert_eq!(site.stage(), "active");
    assert!(site.state().get("pending").is_none());
    assert_eq!(
        site.snapshot(&site.tables()),
        tables,
        "switched once, not twice"
    );
    // From there the rotation goes on as usual.
    let out = site.rotate(&["--reload", "none"]);
    assert_exit(&out, 0, "nothing due");
}
