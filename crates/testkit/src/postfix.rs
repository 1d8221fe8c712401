//! `Postfix`: a private Postfix instance for one test.
//!
//! Debian's `postfix` package is used for its binaries only. Each instance
//! gets a temporary root holding its own `conf/` (main.cf and master.cf
//! generated from scratch), `queue/`, `data/` and `maillog`, listens only
//! on 127.0.0.1 ports asked from the OS, relays every message to the
//! test's [`SmtpSink`](super::SmtpSink), and logs under its own
//! `syslog_name` into its own `maillog_file`. It never reads or writes
//! /etc/postfix (except the read-only `postfix-files` the `postfix`
//! command consults) nor touches the system's Postfix.
//!
//! All services run with `chroot = n` (unless [`PostfixBuilder::chroot_smtpd`]
//! asks for Debian's chrooted `smtp` listener): the milter socket, the SASL
//! files and the log then live at the same absolute paths for every
//! daemon, and nothing has to be copied into a chroot jail. Daemons run as `postfix`,
//! so every directory on those paths must be traversable (0755).
//!
//! `Drop` stops the instance (`postfix stop`, then SIGKILL for anything
//! still mentioning the root, found through /proc), prints its log when
//! the test is panicking, and removes the root.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::milter_process::MilterSocket;
use super::processes;
use super::sasl::{self, SaslUser};

/// How long `postfix stop` may take before leftovers are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// An smtpd listener besides the main `smtp` one, with its `-o` overrides.
#[derive(Debug, Clone)]
struct SmtpdService {
    name: String,
    options: Vec<(String, String)>,
}

/// What a test can configure; everything else has a test-friendly default.
#[derive(Debug, Clone)]
pub struct PostfixBuilder {
    relay_to: Option<SocketAddr>,
    smtpd_milters: Option<String>,
    non_smtpd_milters: Option<String>,
    milter_protocol: u8,
    milter_default_action: String,
    milter_macro_daemon_name: Option<String>,
    main_cf: Vec<String>,
    master_cf: Vec<String>,
    services: Vec<SmtpdService>,
    sasl_users: Vec<SaslUser>,
    chroot_smtpd: bool,
}

impl PostfixBuilder {
    /// The next hop for all mail (required): usually `sink.addr()`.
    pub fn relay_to(mut self, addr: SocketAddr) -> Self {
        self.relay_to = Some(addr);
        self
    }

    /// `smtpd_milters`, e.g. `inet:127.0.0.1:PORT` or `unix:/path`.
    pub fn smtpd_milters(mut self, value: &str) -> Self {
        self.smtpd_milters = Some(value.to_string());
        self
    }

    /// The main `smtp` listener chrooted into the queue directory, as
    /// Debian's master.cf has it (`smtp inet n - y - - smtpd`): a
    /// `unix:/path` milter is then `QUEUE/path` ([`Postfix::queue_dir`]).
    pub fn chroot_smtpd(mut self) -> Self {
        self.chroot_smtpd = true;
        self
    }

    /// `non_smtpd_milters`: used for mail from sendmail(1) and pickup.
    pub fn non_smtpd_milters(mut self, value: &str) -> Self {
        self.non_smtpd_milters = Some(value.to_string());
        self
    }

    /// The same milter for SMTP and for sendmail(1), as most guides do.
    pub fn milter(self, socket: &MilterSocket) -> Self {
        self.milters(&[socket])
    }

    /// Several milters in a row, each seeing the previous one's changes,
    /// for SMTP and for sendmail(1).
    pub fn milters(self, sockets: &[&MilterSocket]) -> Self {
        let specs: Vec<String> = sockets.iter().map(|s| s.postfix_spec()).collect();
        let value = specs.join(", ");
        self.smtpd_milters(&value).non_smtpd_milters(&value)
    }

    /// `milter_protocol` (2 in most OpenDKIM guides; Postfix's default 6).
    pub fn milter_protocol(mut self, version: u8) -> Self {
        self.milter_protocol = version;
        self
    }

    /// `milter_default_action` (default here: `tempfail`, never lose mail).
    pub fn milter_default_action(mut self, action: &str) -> Self {
        self.milter_default_action = action.to_string();
        self
    }

    /// `milter_macro_daemon_name` for every service (default `$myhostname`).
    pub fn milter_macro_daemon_name(mut self, name: &str) -> Self {
        self.milter_macro_daemon_name = Some(name.to_string());
        self
    }

    /// A line appended to main.cf (a later line overrides an earlier one).
    pub fn main_cf(mut self, line: &str) -> Self {
        self.main_cf.push(line.to_string());
        self
    }

    /// A line appended to master.cf as it is. Use [`Self::smtpd_service`]
    /// for listeners so that they get a free port.
    pub fn master_cf(mut self, line: &str) -> Self {
        self.master_cf.push(line.to_string());
        self
    }

    /// Another smtpd listener on a free port with `-o name=value`
    /// overrides; its address is [`Postfix::service_addr`]`(name)`.
    pub fn smtpd_service(mut self, name: &str, options: &[(&str, &str)]) -> Self {
        assert!(name != "smtp", "`smtp` is the main listener");
        self.services.push(SmtpdService {
            name: name.to_string(),
            options: options
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        });
        self
    }

    /// A submission-like listener named `submission`: SMTP AUTH enabled,
    /// `milter_macro_daemon_name=ORIGINATING`, as in Debian's master.cf.
    pub fn submission_service(self) -> Self {
        self.smtpd_service(
            "submission",
            &[
                ("smtpd_sasl_auth_enable", "yes"),
                ("milter_macro_daemon_name", "ORIGINATING"),
            ],
        )
    }

    /// A user for SMTP AUTH (`name` is `user@realm`); see [`super::sasl`].
    pub fn sasl_user(mut self, name: &str, password: &str) -> Self {
        self.sasl_users.push(SaslUser {
            name: name.to_string(),
            password: password.to_string(),
        });
        self
    }

    /// Writes the configuration and starts Postfix; returns once every
    /// smtpd listener has greeted. Panics with the log if it cannot start.
    pub fn start(self) -> Postfix {
        super::require_root();
        super::require_program("/usr/sbin/postfix", "postfix");
        if !self.sasl_users.is_empty() {
            super::require_program("/usr/sbin/saslpasswd2", "sasl2-bin");
        }
        let relay_to = self
            .relay_to
            .expect("PostfixBuilder::relay_to: where should Postfix deliver?");
        let instance = Instance::create(super::scratch_dir("postfix"));
        let sasl_lines = if self.sasl_users.is_empty() {
            Vec::new()
        } else {
            sasl::configure(&instance.config_dir(), &self.sasl_users)
        };
        instance.write_main_cf(&self.main_cf_lines(&instance, relay_to, &sasl_lines));
        let mut postfix = Postfix {
            instance,
            listeners: BTreeMap::new(),
            stopped: false,
        };
        super::start_on_fresh_ports("Postfix", || {
            postfix.listeners = self.pick_ports();
            postfix
                .instance
                .write_master_cf(&self.master_cf_lines(&postfix.instance.name, &postfix.listeners));
            let log_before = postfix.log().len();
            postfix.try_start().map_err(|why| {
                if postfix.log()[log_before..].contains("Address already in use") {
                    postfix.stop_processes();
                    super::StartFailure::PortTaken(why)
                } else {
                    super::StartFailure::Failed(why)
                }
            })
        });
        postfix
    }

    fn pick_ports(&self) -> BTreeMap<String, SocketAddr> {
        std::iter::once("smtp")
            .chain(self.services.iter().map(|service| service.name.as_str()))
            .map(|name| (name.to_string(), super::free_local_addr()))
            .collect()
    }

    fn main_cf_lines(
        &self,
        instance: &Instance,
        relay_to: SocketAddr,
        sasl_lines: &[String],
    ) -> Vec<String> {
        let root = instance.root();
        let mut lines = vec![
            "compatibility_level = 3.6".to_string(),
            format!("queue_directory = {}", instance.queue_dir().display()),
            format!("data_directory = {}", instance.data_dir().display()),
            format!("syslog_name = {}", instance.name),
            format!("maillog_file = {}", instance.log_path().display()),
            format!("maillog_file_prefixes = {}", root.display()),
            "myhostname = mx.harness.test".to_string(),
            "mydomain = harness.test".to_string(),
            "myorigin = $myhostname".to_string(),
            "inet_interfaces = 127.0.0.1".to_string(),
            "inet_protocols = ipv4".to_string(),
            "mynetworks = 127.0.0.0/8".to_string(),
            // Nothing is local: every recipient goes to the sink.
            "mydestination =".to_string(),
            "local_recipient_maps =".to_string(),
            "alias_maps =".to_string(),
            "alias_database =".to_string(),
            format!("relayhost = [{}]:{}", relay_to.ip(), relay_to.port()),
            "smtp_dns_support_level = disabled".to_string(),
            "smtp_tls_security_level = none".to_string(),
            "smtpd_tls_security_level = none".to_string(),
            "biff = no".to_string(),
            format!("milter_protocol = {}", self.milter_protocol),
            format!("milter_default_action = {}", self.milter_default_action),
        ];
        let optional = [
            ("smtpd_milters", &self.smtpd_milters),
            ("non_smtpd_milters", &self.non_smtpd_milters),
            ("milter_macro_daemon_name", &self.milter_macro_daemon_name),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                lines.push(format!("{name} = {value}"));
            }
        }
        lines.extend(sasl_lines.iter().cloned());
        lines.extend(self.main_cf.iter().cloned());
        lines
    }

    fn master_cf_lines(
        &self,
        self_name: &str,
        listeners: &BTreeMap<String, SocketAddr>,
    ) -> Vec<String> {
        let mut lines = vec![
            "# service type private unpriv chroot wakeup maxproc command".to_string(),
            format!(
                "{} inet n - {} - - smtpd",
                listeners["smtp"],
                if self.chroot_smtpd { "y" } else { "n" }
            ),
        ];
        for service in &self.services {
            let mut line = format!("{} inet n - n - - smtpd", listeners[&service.name]);
            line.push_str(&format!(" -o syslog_name={}/{}", self_name, service.name));
            for (key, value) in &service.options {
                // Postfix 3.0+ syntax for a value with spaces: -o { k = v }.
                if value.contains(char::is_whitespace) {
                    line.push_str(&format!(" -o {{ {key} = {value} }}"));
                } else {
                    line.push_str(&format!(" -o {key}={value}"));
                }
            }
            lines.push(line);
        }
        lines.extend(INTERNAL_SERVICES.iter().map(ToString::to_string));
        lines.extend(self.master_cf.iter().cloned());
        lines
    }
}

/// The daemons Postfix needs to queue and relay mail, all without chroot.
/// `postlog` is what makes `maillog_file` work.
const INTERNAL_SERVICES: &[&str] = &[
    "pickup unix n - n 60 1 pickup",
    "cleanup unix n - n - 0 cleanup",
    "qmgr unix n - n 300 1 qmgr",
    "rewrite unix - - n - - trivial-rewrite",
    "bounce unix - - n - 0 bounce",
    "defer unix - - n - 0 bounce",
    "trace unix - - n - 0 bounce",
    "verify unix - - n - 1 verify",
    "flush unix n - n 1000? 0 flush",
    "proxymap unix - - n - - proxymap",
    "proxywrite unix - - n - 1 proxymap",
    "smtp unix - - n - - smtp",
    "relay unix - - n - - smtp",
    "showq unix n - n - - showq",
    "error unix - - n - - error",
    "retry unix - - n - - error",
    "discard unix - - n - - discard",
    "anvil unix - - n - 1 anvil",
    "scache unix - - n - 1 scache",
    "postlog unix-dgram n - n - 1 postlogd",
];

/// The directories of one instance.
struct Instance {
    root: TempDir,
    /// `syslog_name`, unique per instance.
    name: String,
}

impl Instance {
    fn create(root: TempDir) -> Instance {
        let suffix = root
            .path()
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.rsplit('-').next())
            .unwrap_or("x")
            .to_string();
        let instance = Instance {
            root,
            name: format!("harness-{suffix}"),
        };
        let postfix = system_id("passwd", "postfix");
        let postdrop = system_id("group", "postdrop");
        let root = Some(0);
        make_dir(&instance.config_dir(), root, root, 0o755);
        make_dir(&instance.queue_dir(), root, root, 0o755);
        // master opens data_directory/master.lock as `postfix`.
        make_dir(&instance.data_dir(), Some(postfix), root, 0o700);
        // The queue as `postfix start` would create it (through post-install
        // create-missing, which takes about a second per instance).
        for queue in QUEUES {
            make_dir(
                &instance.queue_dir().join(queue),
                Some(postfix),
                root,
                0o700,
            );
        }
        let queue_dir = instance.queue_dir();
        make_dir(
            &queue_dir.join("maildrop"),
            Some(postfix),
            Some(postdrop),
            0o730,
        );
        make_dir(
            &queue_dir.join("public"),
            Some(postfix),
            Some(postdrop),
            0o710,
        );
        make_dir(&queue_dir.join("pid"), root, root, 0o755);
        instance
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    fn config_dir(&self) -> PathBuf {
        self.root().join("conf")
    }

    fn queue_dir(&self) -> PathBuf {
        self.root().join("queue")
    }

    fn data_dir(&self) -> PathBuf {
        self.root().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root().join("maillog")
    }

    fn write_main_cf(&self, lines: &[String]) {
        write_lines(&self.config_dir().join("main.cf"), lines);
    }

    fn write_master_cf(&self, lines: &[String]) {
        write_lines(&self.config_dir().join("master.cf"), lines);
    }
}

/// One message in the Postfix queue, from `postqueue -j`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub queue_id: String,
    /// `maildrop`, `incoming`, `active`, `deferred` or `hold`.
    pub queue_name: String,
    pub sender: String,
    pub recipients: Vec<String>,
    /// Why delivery was deferred, per recipient, when Postfix said so.
    pub delay_reasons: Vec<String>,
}

/// A running private Postfix. See the module documentation.
pub struct Postfix {
    instance: Instance,
    listeners: BTreeMap<String, SocketAddr>,
    stopped: bool,
}

impl Postfix {
    /// Defaults: milter protocol 6, `milter_default_action = tempfail`,
    /// no milters, no SASL, only the `smtp` listener.
    pub fn builder() -> PostfixBuilder {
        PostfixBuilder {
            relay_to: None,
            smtpd_milters: None,
            non_smtpd_milters: None,
            milter_protocol: 6,
            milter_default_action: "tempfail".to_string(),
            milter_macro_daemon_name: None,
            chroot_smtpd: false,
            main_cf: Vec::new(),
            master_cf: Vec::new(),
            services: Vec::new(),
            sasl_users: Vec::new(),
        }
    }

    /// The queue directory: the chroot of a chrooted smtpd.
    pub fn queue_dir(&self) -> PathBuf {
        self.instance.queue_dir()
    }

    /// The main smtpd listener (`smtp` in master.cf terms).
    pub fn smtp_addr(&self) -> SocketAddr {
        self.service_addr("smtp")
    }

    /// The listener added with [`PostfixBuilder::smtpd_service`].
    pub fn service_addr(&self, name: &str) -> SocketAddr {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no smtpd service {name:?} in this instance"))
    }

    /// The temporary root holding conf/, queue/, data/ and maillog.
    pub fn root(&self) -> &Path {
        self.instance.root()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.instance.config_dir()
    }

    /// The instance's `syslog_name`: every log line carries it.
    pub fn syslog_name(&self) -> &str {
        &self.instance.name
    }

    /// The instance's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.instance.log_path()).unwrap_or_default()
    }

    /// Waits until a log line contains `needle` and returns that line.
    /// Logging goes through the postlogd daemon, so a line can appear a
    /// moment after the event it reports.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        super::poll(timeout, || {
            self.log()
                .lines()
                .find(|line| line.contains(needle))
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no log line with {needle:?} within {timeout:?}"))
    }

    /// `postconf -c DIR -h NAME`: the value Postfix uses.
    pub fn postconf(&self, name: &str) -> String {
        let output = self.run(Command::new("postconf").arg("-h").arg(name));
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string()
    }

    /// What `postqueue -p` (mailq) shows.
    pub fn mailq(&self) -> String {
        let output = self.run(Command::new("postqueue").arg("-p"));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Every message in the queue, maildrop included (`postqueue -j`).
    pub fn queued(&self) -> Vec<QueuedMessage> {
        let output = self.run(Command::new("postqueue").arg("-j"));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("postqueue -j printed {line:?}: {e}"));
                queued_message(&value)
            })
            .collect()
    }

    /// Waits until exactly `count` messages are queued and returns them.
    #[track_caller]
    pub fn wait_for_queued(&self, count: usize, timeout: Duration) -> Vec<QueuedMessage> {
        super::poll(timeout, || {
            let queued = self.queued();
            (queued.len() == count).then_some(queued)
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {count} queued messages within {timeout:?}, the queue is:\n{}",
                self.mailq()
            )
        })
    }

    /// `postqueue -f`: retry all deferred mail now, and make pickup scan
    /// maildrop again (where sendmail(1) mail waits while the milter is
    /// down).
    pub fn flush(&self) {
        self.run(Command::new("postqueue").arg("-f"));
    }

    /// Injects `content` with Postfix's `sendmail -C DIR -i -f SENDER --
    /// RECIPIENTS`, the path that `non_smtpd_milters` filters. Panics if
    /// sendmail fails.
    pub fn sendmail(&self, sender: &str, recipients: &[&str], content: &[u8]) {
        let mut sendmail = Command::new("/usr/sbin/sendmail")
            .arg("-C")
            .arg(self.config_dir())
            .args(["-i", "-f", sender, "--"])
            .args(recipients)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run /usr/sbin/sendmail");
        sendmail.stdin.take().unwrap().write_all(content).unwrap();
        let output = sendmail.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "sendmail failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Stops the instance now instead of at the end of the test.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn try_start(&mut self) -> Result<(), String> {
        let output = Command::new("postfix")
            .arg("-c")
            .arg(self.config_dir())
            .arg("start")
            .output()
            .map_err(|e| format!("cannot run postfix: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "postfix start exited with {}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
            ));
        }
        for (name, addr) in &self.listeners {
            greet(*addr).map_err(|e| format!("smtpd service {name} at {addr}: {e}"))?;
        }
        Ok(())
    }

    /// Runs a Postfix command against this instance's configuration.
    fn run(&self, command: &mut Command) -> Output {
        let output = command
            .env("MAIL_CONFIG", self.config_dir())
            .output()
            .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
        assert!(
            output.status.success(),
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn shut_down(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.stop_processes();
    }

    /// Stops master the way `postfix stop` does (SIGTERM to the pid in
    /// `queue/pid/master.pid`; master then ends its children), waits for
    /// every process of the instance to exit, and kills what remains.
    /// Signalling master directly saves the one-second polling loop of
    /// postfix-script; `postfix stop` is the fallback without a pid file.
    fn stop_processes(&self) {
        let root = self.root().to_path_buf();
        match self.master_pid() {
            Some(pid) => processes::signal(pid, processes::Signal::SIGTERM),
            None => {
                let _ = Command::new("postfix")
                    .arg("-c")
                    .arg(self.config_dir())
                    .arg("stop")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let gone = super::poll(STOP_TIMEOUT, || {
            processes::mentioning(&root).is_empty().then_some(())
        });
        if gone.is_none() {
            let killed = processes::kill_all_mentioning(&root);
            eprintln!(
                "Postfix {} did not stop in time; killed {killed:?}",
                self.syslog_name()
            );
        }
    }

    /// master's pid, if master is running.
    fn master_pid(&self) -> Option<i32> {
        let pid_file = self.instance.queue_dir().join("pid/master.pid");
        let pid: i32 = std::fs::read_to_string(pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        processes::mentioning(self.root())
            .iter()
            .any(|process| process.pid == pid)
            .then_some(pid)
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.shut_down();
        if super::show_logs() {
            eprintln!(
                "----- Postfix {} log ({}) -----\n{}----- queue -----\n{}----- end of Postfix {} -----",
                self.syslog_name(),
                self.instance.log_path().display(),
                self.log(),
                queue_listing_for_failure(&self.instance),
                self.syslog_name()
            );
        }
    }
}

/// The queue directory's files: `postqueue` needs a running Postfix.
fn queue_listing_for_failure(instance: &Instance) -> String {
    let mut files = Vec::new();
    for queue in ["maildrop", "incoming", "active", "deferred", "hold"] {
        if let Ok(entries) = std::fs::read_dir(instance.queue_dir().join(queue)) {
            for entry in entries.flatten() {
                files.push(format!("{queue}/{}\n", entry.file_name().to_string_lossy()));
            }
        }
    }
    files.concat()
}

/// Connects, expects a 220 greeting, says QUIT.
fn greet(addr: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if !line.starts_with("220") {
        return Err(format!("greeted with {line:?}"));
    }
    let _ = (&stream).write_all(b"QUIT\r\n");
    Ok(())
}

fn queued_message(value: &serde_json::Value) -> QueuedMessage {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let recipients = value["recipients"].as_array().cloned().unwrap_or_default();
    QueuedMessage {
        queue_id: text(&value["queue_id"]),
        queue_name: text(&value["queue_name"]),
        sender: text(&value["sender"]),
        recipients: recipients.iter().map(|r| text(&r["address"])).collect(),
        delay_reasons: recipients
            .iter()
            .filter_map(|r| r["delay_reason"].as_str().map(str::to_string))
            .collect(),
    }
}

/// Writes a configuration file dated 10 s back. Postfix re-reads a
/// "hot" main.cf (modified in the last second or so) every 300 ms until it
/// looks stable, which costs every Postfix command up to 2 s right after
/// the harness wrote it.
fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n")
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let past = std::time::SystemTime::now() - Duration::from_secs(10);
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(past))
        .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", path.display()));
}

/// Queue subdirectories owned by `postfix`, mode 0700.
const QUEUES: &[&str] = &[
    "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private",
    "saved", "trace",
];

fn make_dir(path: &Path, owner: Option<u32>, group: Option<u32>, mode: u32) {
    std::fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    std::os::unix::fs::chown(path, owner, group)
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    super::set_mode(path, mode);
}

/// The numeric id of a user (`database` = passwd) or group (group) that
/// the postfix package creates, through NSS.
fn system_id(database: &str, name: &str) -> u32 {
    let output = Command::new("getent")
        .args([database, name])
        .output()
        .expect("run getent");
    String::from_utf8_lossy(&output.stdout)
        .split(':')
        .nth(2)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| {
            panic!("no {database} entry {name:?}: is the postfix package installed?")
        })
}
