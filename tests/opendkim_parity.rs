//! Our signing decisions against OpenDKIM's, asked live.
//!
//! Each directory under `tests/fixtures/parity/` is one configuration: an
//! `opendkim.conf`, the tables it names, and a `cases` file (format in
//! `tests/fixtures/parity/README.md`). For each configuration the test
//! starts Debian's OpenDKIM (`opendkim -f -x CONF -p inet:PORT@127.0.0.1`)
//! and dkim-sidecar (`run -x CONF`) on the very same files, runs one
//! generated miltertest script against each (one milter connection per
//! case: connect macros, connect info, MAIL macros, MAIL, RCPTs, headers,
//! end of headers, body, end of message) and compares, per case, what
//! happened: accepted at connect, not signed, refused, or signed with which
//! `d=`, `s=` and `i=` (as a multiset). OpenDKIM's live answer is the
//! expectation; nothing here records what our code decides.
//!
//! A case may name a documented deliberate difference (`known-difference
//! ID`, see [`KnownDifference`]); for it the test asserts OpenDKIM's known
//! behaviour as derived from ours, so the case still fails if either side
//! changes. Every other difference fails the test with a table of the
//! cases that differ. `PARITY_TABLE=1` (with `--nocapture`) prints every
//! case's answers.
//!
//! Each configuration is one test, so they run in parallel; within one,
//! both milters run at once and the cases are split over [`SCRIPTS`]
//! miltertest processes per milter.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::{MilterProcess, MilterSocket};

// ---------------------------------------------------------------------------
// The configurations: one test each, so they run in parallel.

#[test]
fn guide_layout_keytable_refile_signingtable_and_trustedhosts() {
    check_parity("a-guide-layout");
}

#[test]
fn one_key_for_every_domain_with_domain_star() {
    check_parity("b-domain-star-keyfile");
}

#[test]
fn exact_signingtable_with_percent_keys_and_signers() {
    check_parity("c-tables-percent-file");
}

#[test]
fn domain_list_with_subdomains() {
    check_parity("d-domain-list-subdomains");
}

#[test]
fn macrolist_with_and_without_values_and_mta_names() {
    check_parity("e-macrolist-and-mta");
}

#[test]
fn mta_names_alone() {
    check_parity("e2-mta-names");
}

#[test]
fn peerlist_clients_are_accepted_at_connect() {
    check_parity("f-peerlist");
}

#[test]
fn exempt_domains_dont_sign_mail_to_and_sender_headers() {
    check_parity("g-exempt-dontsign-senderheaders");
}

#[test]
fn refile_dont_sign_mail_to_and_sender_headers_without_from() {
    check_parity("g2-refile-dontsign-senderheaders-without-from");
}

#[test]
fn multiple_signatures_with_two_and_three_matching_entries() {
    check_parity("h-multiple-signatures");
}

#[test]
fn ed25519_only_signer() {
    check_parity("i-ed25519-only");
}

// ---------------------------------------------------------------------------
// Cases

/// One message, as the MTA presents it.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    host: String,
    /// An address, or `unspec` (an unknown protocol family).
    ip: String,
    connect_macros: Vec<(String, String)>,
    mail_macros: Vec<(String, String)>,
    mail_from: String,
    recipients: Vec<String>,
    headers: Vec<(String, String)>,
    known_difference: Option<KnownDifference>,
}

impl Case {
    fn new(name: &str) -> Case {
        Case {
            name: name.to_string(),
            host: "localhost".to_string(),
            ip: "127.0.0.1".to_string(),
            connect_macros: vec![
                ("j".to_string(), "mx.parity.test".to_string()),
                ("{daemon_name}".to_string(), "smtpd".to_string()),
            ],
            mail_macros: vec![("i".to_string(), "PARITY".to_string())],
            mail_from: "envelope@parity.test".to_string(),
            recipients: Vec::new(),
            headers: Vec::new(),
            known_difference: None,
        }
    }
}

/// Reads a `cases` file; panics naming the line on anything it does not
/// understand.
fn read_cases(path: &Path) -> Vec<Case> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut cases: Vec<Case> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), n + 1);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        if keyword == "case" {
            assert!(
                !rest.is_empty() && !rest.contains(' '),
                "{at}: `case NAME` (one word)"
            );
            assert!(
                cases.iter().all(|c| c.name != rest),
                "{at}: case {rest} is defined twice"
            );
            cases.push(Case::new(rest));
            continue;
        }
        let case = cases
            .last_mut()
            .unwrap_or_else(|| panic!("{at}: `{keyword}` before the first `case`"));
        match keyword {
            "client" => {
                let (host, ip) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("{at}: `client HOST IP`"));
                case.host = host.to_string();
                case.ip = ip.trim().to_string();
            }
            "macro" => {
                let mut words = rest.splitn(3, ' ');
                let (stage, name, value) = (
                    words.next().unwrap_or_default(),
                    words.next().unwrap_or_default(),
                    words.next().unwrap_or_default().trim(),
                );
                assert!(!name.is_empty(), "{at}: `macro connect|mail NAME VALUE`");
                let value = if value == "\"\"" { "" } else { value };
                let list = match stage {
                    "connect" => &mut case.connect_macros,
                    "mail" => &mut case.mail_macros,
                    other => panic!("{at}: macro stage `{other}` is not connect or mail"),
                };
                list.retain(|(n, _)| n != name);
                list.push((name.to_string(), value.to_string()));
            }
            "mail-from" => case.mail_from = rest.to_string(),
            "rcpt" => case.recipients.push(rest.to_string()),
            "header" => {
                let (name, value) = rest
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{at}: `header Name: value`"));
                let value = value.trim_start().replace("\\n", "\n").replace("\\t", "\t");
                case.headers.push((name.to_string(), value));
            }
            "known-difference" => {
                case.known_difference = Some(
                    KnownDifference::from_id(rest)
                        .unwrap_or_else(|| panic!("{at}: no known difference `{rest}`")),
                );
            }
            other => panic!("{at}: unknown keyword `{other}`"),
        }
    }
    for case in &mut cases {
        if case.recipients.is_empty() {
            case.recipients.push("recipient@example.org".to_string());
        }
    }
    assert!(!cases.is_empty(), "{}: no cases", path.display());
    cases
}

// ---------------------------------------------------------------------------
// The miltertest script

/// A Lua string literal holding `s` byte for byte.
fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

fn lua_list(items: impl IntoIterator<Item = String>) -> String {
    format!("{{{}}}", items.into_iter().collect::<Vec<_>>().join(", "))
}

/// One script for every case. It prints `CASE <name> <stage> <reply>` per
/// case (the stage the milter stopped at and its reply character) and
/// `SIG <name> <value>` per DKIM-Signature field inserted, in the order
/// the milter asked for them.
fn miltertest_script(cases: &[Case]) -> String {
    let mut script = String::from(
        r#"-- Generated by tests/opendkim_parity.rs.
local unpack = table.unpack or unpack
local sock = "inet:" .. port .. "@127.0.0.1"
mt.set_timeout(10)

local function reply(conn)
  return string.char(math.floor(mt.getreply(conn)))
end

local function run(c)
  local conn = mt.connect(sock, 40, 0.05)
  if conn == nil then error("cannot connect to " .. sock) end
  local function fail(what, err)
    if err ~= nil then error(what .. ": " .. err) end
  end
  fail("negotiate", mt.negotiate(conn, nil, nil, nil))
  if #c.cmacros > 0 then fail("macro", mt.macro(conn, SMFIC_CONNECT, unpack(c.cmacros))) end
  fail("conninfo", mt.conninfo(conn, c.host, c.ip))
  local r = reply(conn)
  if r ~= "c" then return "connect", r, conn end
  if #c.mmacros > 0 then fail("macro", mt.macro(conn, SMFIC_MAIL, unpack(c.mmacros))) end
  fail("mailfrom", mt.mailfrom(conn, c.from))
  r = reply(conn)
  if r ~= "c" then return "mail", r, conn end
  for _, rcpt in ipairs(c.rcpts) do
    fail("rcptto", mt.rcptto(conn, rcpt))
    r = reply(conn)
    if r ~= "c" then return "rcpt", r, conn end
  end
  for _, h in ipairs(c.headers) do
    fail("header", mt.header(conn, h[1], h[2]))
    r = reply(conn)
    if r ~= "c" then return "header", r, conn end
  end
  fail("eoh", mt.eoh(conn))
  r = reply(conn)
  if r ~= "c" then return "eoh", r, conn end
  fail("body", mt.bodystring(conn, "A parity test message.\r\n"))
  r = reply(conn)
  -- "s" (skip): the milter wants no more body, but still its end.
  if r ~= "c" and r ~= "s" then return "body", r, conn end
  fail("eom", mt.eom(conn))
  return "eom", reply(conn), conn
end

local function case(c)
  local ok, stage, r, conn = pcall(run, c)
  if not ok then
    mt.echo("CASE " .. c.name .. " error " .. string.gsub(tostring(stage), "%s+", "_"))
    return
  end
  mt.echo("CASE " .. c.name .. " " .. stage .. " " .. r)
  if stage == "eom" then
    for n = 0, 9 do
      local h = mt.getheader(conn, "DKIM-Signature", n)
      if h == nil then break end
      mt.echo("SIG " .. c.name .. " " .. string.gsub(h, "%s+", " "))
    end
  end
  mt.disconnect(conn)
end

"#,
    );
    let pairs = |macros: &[(String, String)]| {
        lua_list(
            macros
                .iter()
                .flat_map(|(n, v)| [lua_string(n), lua_string(v)]),
        )
    };
    for c in cases {
        let headers = c
            .headers
            .iter()
            .cloned()
            .chain([
                ("Subject".to_string(), "parity".to_string()),
                (
                    "Date".to_string(),
                    "Mon, 1 Jan 2024 00:00:00 +0000".to_string(),
                ),
            ])
            .map(|(n, v)| format!("{{{}, {}}}", lua_string(&n), lua_string(&v)));
        script.push_str(&format!(
            "case({{name = {}, host = {}, ip = {}, cmacros = {}, mmacros = {}, from = {}, \
             rcpts = {}, headers = {}}})\n",
            lua_string(&c.name),
            lua_string(&c.host),
            lua_string(&c.ip),
            pairs(&c.connect_macros),
            pairs(&c.mail_macros),
            lua_string(&format!("<{}>", c.mail_from)),
            lua_list(c.recipients.iter().map(|r| lua_string(&format!("<{r}>")))),
            lua_list(headers),
        ));
    }
    script
}

// ---------------------------------------------------------------------------
// Outcomes

/// One DKIM-Signature's signer tags.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Signer {
    d: String,
    s: String,
    i: Option<String>,
}

impl Signer {
    fn parse(value: &str) -> Signer {
        let tag = |name: &str| {
            value.split(';').find_map(|t| {
                let (k, v) = t.split_once('=')?;
                (k.trim() == name).then(|| v.split_whitespace().collect::<String>())
            })
        };
        Signer {
            d: tag("d").unwrap_or_else(|| "?".into()),
            s: tag("s").unwrap_or_else(|| "?".into()),
            i: tag("i"),
        }
    }
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d={} s={}", self.d, self.s)?;
        if let Some(i) = &self.i {
            write!(f, " i={i}")?;
        }
        Ok(())
    }
}

/// What the milter did with one message, as the MTA sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Accepted when the client connected (PeerList).
    AcceptedAtConnect,
    /// Passed through without a signature.
    NotSigned,
    /// Signed; the signers in the order miltertest lists the fields
    /// (topmost first).
    Signed(Vec<Signer>),
    /// Tempfail (our tempfail carries a 451 reply text, so it arrives as a
    /// reply code, OpenDKIM's as a bare tempfail).
    Tempfail,
    Reject,
    Discard,
    /// The script failed, or an answer that fits none of the above.
    Other(String),
}

impl Outcome {
    fn from_reply(stage: &str, reply: &str, signers: Vec<Signer>) -> Outcome {
        match (stage, reply) {
            ("connect", "a") => Outcome::AcceptedAtConnect,
            (_, "t" | "y") => Outcome::Tempfail,
            (_, "r") => Outcome::Reject,
            (_, "d") => Outcome::Discard,
            ("eom", "c" | "a") if !signers.is_empty() => Outcome::Signed(signers),
            ("mail" | "rcpt" | "header" | "eoh" | "body", "a") | ("eom", "c" | "a") => {
                Outcome::NotSigned
            }
            _ => Outcome::Other(format!("{stage} {reply}")),
        }
    }

    /// Equal as the MTA and a verifier would see it: signatures as a
    /// multiset.
    fn same_as(&self, other: &Outcome) -> bool {
        match (self, other) {
            (Outcome::Signed(a), Outcome::Signed(b)) => {
                let (mut a, mut b) = (a.clone(), b.clone());
                a.sort();
                b.sort();
                a == b
            }
            _ => self == other,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::AcceptedAtConnect => f.write_str("accepted at connect"),
            Outcome::NotSigned => f.write_str("not signed"),
            Outcome::Signed(signers) => {
                let list: Vec<String> = signers.iter().map(Signer::to_string).collect();
                write!(f, "signed {}", list.join(" + "))
            }
            Outcome::Tempfail => f.write_str("tempfail"),
            Outcome::Reject => f.write_str("reject"),
            Outcome::Discard => f.write_str("discard"),
            Outcome::Other(what) => write!(f, "?? {what}"),
        }
    }
}

/// Outcomes by case name, from miltertest's output.
fn parse_outcomes(output: &str) -> BTreeMap<String, Outcome> {
    let mut stops: Vec<(String, String, String)> = Vec::new();
    let mut signers: BTreeMap<String, Vec<Signer>> = BTreeMap::new();
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("CASE ") {
            let mut words = rest.splitn(3, ' ');
            let name = words.next().unwrap_or_default().to_string();
            let stage = words.next().unwrap_or_default().to_string();
            let reply = words.next().unwrap_or_default().to_string();
            stops.push((name, stage, reply));
        } else if let Some(rest) = line.strip_prefix("SIG ") {
            let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
            signers
                .entry(name.to_string())
                .or_default()
                .push(Signer::parse(value));
        }
    }
    stops
        .into_iter()
        .map(|(name, stage, reply)| {
            let outcome = if stage == "error" {
                Outcome::Other(format!("script error: {reply}"))
            } else {
                Outcome::from_reply(&stage, &reply, signers.remove(&name).unwrap_or_default())
            };
            (name, outcome)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Deliberate differences

/// A documented deliberate difference from OpenDKIM (README, "Differences
/// from OpenDKIM"). A case naming one expects OpenDKIM's answer to be ours
/// transformed as described, and to differ from ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KnownDifference {
    /// `192.168.1.1/24` (a network written with host bits) never matches in
    /// OpenDKIM, which compares the entry as text; we match the network
    /// (and warn at start-up). Where we sign only because of such an
    /// entry, OpenDKIM does not sign.
    NetworkWithHostBits,
    /// MacroList: OpenDKIM's `mlfi_eoh` lets each MacroList macro the MTA
    /// sent overwrite the verdict of the one before (its loop's `done` is
    /// never set), so the last one present decides and a present but
    /// non-matching macro also undoes an MTA match. We trust the origin
    /// when any MTA name or MacroList entry matches, as its manual says.
    MacroListLastMacroDecides,
    /// MultipleSignatures: with three or more matching SigningTable
    /// entries OpenDKIM 2.11 signs with the first and the last only (seen
    /// against the binary; docs/opendkim-compat.md records it as a bug not
    /// to copy); we sign with every one.
    MultipleSignaturesMiddleDropped,
}

impl KnownDifference {
    fn from_id(id: &str) -> Option<KnownDifference> {
        match id {
            "network-with-host-bits" => Some(KnownDifference::NetworkWithHostBits),
            "macrolist-last-macro-decides" => Some(KnownDifference::MacroListLastMacroDecides),
            "multiple-signatures-middle-dropped" => {
                Some(KnownDifference::MultipleSignaturesMiddleDropped)
            }
            _ => None,
        }
    }

    /// OpenDKIM's answer, derived from ours.
    fn opendkim_outcome(self, ours: &Outcome) -> Outcome {
        match self {
            KnownDifference::NetworkWithHostBits | KnownDifference::MacroListLastMacroDecides => {
                match ours {
                    Outcome::Signed(_) => Outcome::NotSigned,
                    other => Outcome::Other(format!("(we should have signed, but: {other})")),
                }
            }
            KnownDifference::MultipleSignaturesMiddleDropped => match ours {
                Outcome::Signed(signers) if signers.len() >= 3 => {
                    Outcome::Signed(vec![signers[0].clone(), signers[signers.len() - 1].clone()])
                }
                other => Outcome::Other(format!(
                    "(we should have signed three or more times, but: {other})"
                )),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Running both milters on one configuration

/// A configuration's files, copied into a scratch directory with `@DIR@`
/// replaced by that directory, and the test key in place.
struct Configuration {
    name: String,
    dir: tempfile::TempDir,
    cases: Vec<Case>,
}

impl Configuration {
    fn prepare(name: &str) -> Configuration {
        let source = fixtures().join(name);
        let dir = testkit::scratch_dir(&format!("parity-{name}"));
        let root = dir.path().display().to_string();
        let mut cases = None;
        for entry in std::fs::read_dir(&source).expect("read the fixture directory") {
            let path = entry.expect("a directory entry").path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if file == "cases" {
                cases = Some(read_cases(&path));
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            std::fs::write(dir.path().join(&file), text.replace("@DIR@", &root)).unwrap();
        }
        // Every key is a copy of the test-only RSA key (or Ed25519 key),
        // mode 0600 as OpenDKIM requires.
        let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys-example");
        for (key, copies) in [
            ("default.private", "rsa-key-copies"),
            ("ed25519.private", "ed25519-key-copies"),
        ] {
            let mut targets = vec![dir.path().join(key)];
            if let Ok(list) = std::fs::read_to_string(dir.path().join(copies)) {
                targets.extend(
                    list.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(|l| dir.path().join(l)),
                );
            }
            for target in targets {
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::copy(keys.join(key), &target).unwrap();
                testkit::set_mode(&target, 0o600);
            }
        }
        Configuration {
            name: name.to_string(),
            cases: cases.unwrap_or_else(|| panic!("{name} has no cases file")),
            dir,
        }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("opendkim.conf")
    }

    fn start_opendkim(&self) -> MilterProcess {
        testkit::require_program("/usr/sbin/opendkim", "opendkim");
        let conf = self.conf();
        MilterProcess::start(
            "opendkim",
            &MilterSocket::free_inet(),
            &self.dir.path().join("opendkim.log"),
            |socket| {
                let mut command = Command::new("/usr/sbin/opendkim");
                command
                    .arg("-f")
                    .arg("-x")
                    .arg(&conf)
                    .arg("-p")
                    .arg(socket.opendkim_spec());
                command
            },
        )
    }

    fn start_sidecar(&self) -> MilterProcess {
        let conf = self.conf();
        MilterProcess::start(
            "dkim-sidecar",
            &MilterSocket::free_inet(),
            &self.dir.path().join("sidecar.log"),
            |socket| {
                let mut command = Command::new(env!("CARGO_BIN_EXE_dkim-sidecar"));
                command
                    .arg("run")
                    .arg("-x")
                    .arg(&conf)
                    .arg("--socket")
                    .arg(socket.opendkim_spec())
                    .arg("--allow-root");
                command
            },
        )
    }

    /// Runs every case against `milter`, the scripts side by side (one
    /// connection per case either way); outcomes by case name.
    fn ask(&self, milter: &MilterProcess, scripts: &[PathBuf]) -> BTreeMap<String, Outcome> {
        std::thread::scope(|s| {
            let runs: Vec<_> = scripts
                .iter()
                .map(|script| s.spawn(|| self.run_script(milter, script)))
                .collect();
            let mut outcomes = BTreeMap::new();
            for run in runs {
                match run.join() {
                    Ok(part) => outcomes.extend(part),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            for case in &self.cases {
                assert!(
                    outcomes.contains_key(&case.name),
                    "{}: miltertest printed nothing for case {}",
                    self.name,
                    case.name
                );
            }
            outcomes
        })
    }

    fn run_script(&self, milter: &MilterProcess, script: &Path) -> BTreeMap<String, Outcome> {
        testkit::require_program("/usr/bin/miltertest", "miltertest");
        let MilterSocket::Inet(addr) = milter.socket() else {
            unreachable!("both milters listen on TCP")
        };
        let output = Command::new("/usr/bin/miltertest")
            .arg("-s")
            .arg(script)
            .arg("-D")
            .arg(format!("port={}", addr.port()))
            .output()
            .expect("run miltertest");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}: miltertest against {} failed ({}):\n{stdout}{}",
            self.name,
            milter.socket().opendkim_spec(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        parse_outcomes(&stdout)
    }
}

/// How many miltertest scripts run side by side against each milter. Most
/// of a case's time is spent waiting: miltertest writes a command that
/// gets no reply (dkim-sidecar asks for none where it can) and then
/// another, which Nagle's algorithm holds until the milter's delayed ACK,
/// about 40 ms.
const SCRIPTS: usize = 4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity")
}

/// Runs one configuration's cases against OpenDKIM and against us and
/// fails with a table of every case that differs.
fn check_parity(name: &str) {
    let config = Configuration::prepare(name);
    let per_script = config.cases.len().div_ceil(SCRIPTS);
    let scripts: Vec<PathBuf> = config
        .cases
        .chunks(per_script)
        .enumerate()
        .map(|(n, cases)| {
            let script = config.dir.path().join(format!("cases-{n}.lua"));
            std::fs::write(&script, miltertest_script(cases)).unwrap();
            script
        })
        .collect();

    let opendkim = config.start_opendkim();
    let sidecar = config.start_sidecar();
    let (theirs, ours) = std::thread::scope(|s| {
        let theirs = s.spawn(|| config.ask(&opendkim, &scripts));
        let ours = s.spawn(|| config.ask(&sidecar, &scripts));
        let join = |run: std::thread::ScopedJoinHandle<'_, _>| {
            run.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        (join(theirs), join(ours))
    });

    let show_all = std::env::var_os("PARITY_TABLE").is_some_and(|v| v == "1");
    let mut rows = Vec::new();
    let mut all = Vec::new();
    for case in &config.cases {
        let (t, o) = (&theirs[&case.name], &ours[&case.name]);
        let problem = match case.known_difference {
            None if t.same_as(o) && !matches!(t, Outcome::Other(_)) => None,
            None => Some(String::new()),
            Some(known) => {
                let expected = known.opendkim_outcome(o);
                if expected.same_as(t) && !t.same_as(o) {
                    None
                } else {
                    Some(format!(
                        "known difference {known:?}: expected OpenDKIM to answer {expected}"
                    ))
                }
            }
        };
        let note = match (&problem, case.known_difference) {
            (Some(problem), _) => problem.clone(),
            (None, Some(known)) => format!("known difference {known:?}"),
            (None, None) => String::new(),
        };
        all.push([case.name.clone(), t.to_string(), o.to_string(), note]);
        if let Some(problem) = problem {
            rows.push([case.name.clone(), t.to_string(), o.to_string(), problem]);
        }
    }
    if show_all {
        eprintln!(
            "{name}: {} cases\n{}\n",
            config.cases.len(),
            table(&all).join("\n")
        );
    }
    if !rows.is_empty() {
        panic!(
            "{name}: {} of {} cases differ from OpenDKIM (tests/fixtures/parity/{name}):\n{}\n",
            rows.len(),
            config.cases.len(),
            table(&rows).join("\n")
        );
    }
}

/// Rows of (case, OpenDKIM, dkim-sidecar, note) as aligned text lines.
fn table(rows: &[[String; 4]]) -> Vec<String> {
    let header = [
        "case".to_string(),
        "OpenDKIM".to_string(),
        "dkim-sidecar".to_string(),
        "note".to_string(),
    ];
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .chain([&header])
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |r: &[String; 4]| {
        (0..4)
            .map(|i| format!("{:w$}", r[i], w = widths[i]))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
    };
    let mut table = vec![line(&header)];
    table.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    table.extend(rows.iter().map(line));
    table
}
