//! Running as a daemon: the process around the milter server.
//!
//! [`main`] sets up logging and the runtime and calls [`run`], which takes a
//! loaded [`Config`], opens the sockets (or takes the ones systemd passed),
//! starts the metrics endpoint if configured, writes the PID file, drops
//! privileges, tells systemd it is ready, serves until SIGTERM or SIGINT,
//! and reloads the configuration on SIGHUP or SIGUSR1 (OpenDKIM's reload
//! signal; SIGHUP killing OpenDKIM is a common surprise we do not repeat),
//! or when a watched file changes. A reload that fails logs the precise
//! error and keeps the configuration in force; transactions already open
//! finish with the policy they started with. Settings that need a restart
//! (sockets, user, log destination) are reported, not applied.
//!
//! This module must never load keys itself or sign: loading is the
//! configuration's job, signing the filter's.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, Logging, RunAs};
use crate::logging::LoggingError;
use crate::message_log::Reporter;
use crate::metrics::{self, Metrics, MetricsBindError};
use crate::policy::Policy;
use crate::signing::{LivePolicy, SigningFilter};
use crate::systemd;
use crate::tables::KeySource;
use milter::server::{self, Listener};

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Bind(#[from] server::BindError),
    #[error(transparent)]
    Metrics(#[from] MetricsBindError),
    #[error(transparent)]
    Logging(#[from] LoggingError),
    #[error("no socket to listen on: set Socket (opendkim.conf) or socket (TOML), or use --socket")]
    NoSocket,
    #[error(
        "refusing to sign as root: set UserID (opendkim.conf) or user (TOML) to an unprivileged user, or pass --allow-root (allow_root = true in TOML)"
    )]
    RunningAsRoot,
    #[error("UserID {0}: no such user")]
    NoSuchUser(String),
    #[error("UserID group {0}: no such group")]
    NoSuchGroup(String),
    #[error("cannot switch to user {user}: {source}")]
    SwitchUser { user: String, source: nix::Error },
    #[error("cannot write PidFile {path}: {source}")]
    PidFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error(
        "{at}: {role} server {set} cannot be used: {error}; fix it, or remove SoftStart no \
         (soft_start = false in TOML) to start anyway and tempfail the mail that needs it"
    )]
    DataSetDown {
        at: String,
        role: &'static str,
        set: String,
        error: crate::remote::BackendError,
    },
}

/// How the daemon reads its configuration again on reload.
pub type Reload = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Why a reload kept the previous configuration.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration, a table or a key did not load: every problem,
    /// each with its file and line.
    #[error("{}", problems(.0))]
    Config(#[from] ConfigError),
    /// The loader itself panicked.
    #[error("the configuration loader failed: {0}")]
    LoaderFailed(String),
    /// A data set's server does not answer and SoftStart is off.
    #[error("{0}")]
    DataSetDown(Box<DaemonError>),
    /// The new configuration has more keys that cannot sign than the one
    /// running: applying it would refuse mail that is signed now.
    #[error(
        "{new} key problem(s) where the running configuration has {running}, so mail signed now \
         would be refused; fix them and reload: {problems}"
    )]
    MoreKeyFaults {
        new: usize,
        running: usize,
        problems: String,
    },
}

/// A configuration's problems on one line, separated by `; `.
fn problems(error: &ConfigError) -> String {
    error
        .problems()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The whole `run` subcommand once the configuration is loaded: logging,
/// a multi-threaded runtime, [`run`]. Blocks until the daemon stops. An
/// error is returned for the caller to print (and logged too with syslog).
pub fn main(config: Config, reload: Reload) -> Result<(), DaemonError> {
    let destination = crate::logging::init(&config.logging)?;
    // One log line per panic, to the configured destination (syslog too).
    milter::panics::install_hook();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dkim-sidecar")
        .build()
        .map_err(DaemonError::Runtime)?;
    let result = runtime.block_on(run(config, reload));
    if let Err(error) = &result {
        // The caller prints it on stderr; syslog needs its own copy.
        if matches!(destination, crate::logging::Destination::Syslog(_)) {
            tracing::error!("{error}");
        }
        systemd::status(&format!("failed: {error}"));
    }
    result
}

/// When the servers of data sets are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checking {
    Start,
    Reload,
}

/// SoftStart (on unless written off): a data set's server that does not
/// answer at start-up (or when a reload makes new connections) does not
/// stop it; the daemon starts (or reloads), says so, and tempfails the
/// mail that needs the server until it answers. With `SoftStart no`
/// (OpenDKIM's default) it stops the start, before anything is bound, or
/// the reload, which keeps the running configuration. The servers are
/// asked at once, so this waits for one connect timeout at most. The
/// connections made here are closed, so lookups log in as the user the
/// daemon runs as.
async fn check_data_sets(policy: &Policy, checking: Checking) -> Result<(), DaemonError> {
    let checks: Vec<_> = policy
        .server_sets()
        .into_iter()
        .map(|set| {
            let set = Arc::clone(set);
            tokio::spawn(async move {
                let checked = set.check().await;
                set.disconnect().await;
                (set, checked)
            })
        })
        .collect();
    for check in checks {
        let (set, checked) = match check.await {
            Ok(done) => done,
            Err(error) => {
                tracing::error!("the check of a data set's server failed: {error}");
                continue;
            }
        };
        let Err(error) = checked else { continue };
        if policy.soft_start {
            let going_on = match checking {
                Checking::Start => "starting anyway (SoftStart)",
                Checking::Reload => "reloading anyway (SoftStart)",
            };
            tracing::error!(
                "{}: {} server {} cannot be used ({error}); {going_on}: mail that needs it is \
                 tempfailed until it answers",
                set.at(),
                set.role(),
                set.describe()
            );
        } else {
            return Err(DaemonError::DataSetDown {
                at: set.at().to_string(),
                role: set.role(),
                set: set.describe(),
                error,
            });
        }
    }
    Ok(())
}

/// Serve mail until asked to stop.
pub async fn run(config: Config, reload: Reload) -> Result<(), DaemonError> {
    // Refuse before binding anything or writing the PID file, so a refused
    // start leaves no socket file behind.
    if config.service.run_as.is_none()
        && nix::unistd::geteuid().is_root()
        && !config.service.allow_root
    {
        return Err(DaemonError::RunningAsRoot);
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    check_data_sets(&config.policy, Checking::Start).await?;
    let degraded = log_faults(&config.policy);
    if let Some(mask) = config.service.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask as _));
    }
    // Before anything is bound or written: once the socket accepts or the
    // PID file exists, a service manager or an admin may signal us, and a
    // SIGTERM must then be a clean stop, not the default action's kill.
    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut user1 = signal(SignalKind::user_defined1()).map_err(DaemonError::Signals)?;

    let mut listeners = systemd::listeners()?;
    let activated = !listeners.is_empty();
    if activated {
        if !config.service.sockets.is_empty() {
            tracing::info!(
                "using the {} socket(s) systemd passed; the configured Socket is not opened",
                listeners.len()
            );
        }
    } else {
        let access = socket_access(&config.service)?;
        for spec in &config.service.sockets {
            listeners.extend(server::bind(spec, &access, 1024)?);
        }
    }
    if listeners.is_empty() {
        return Err(DaemonError::NoSocket);
    }
    let metrics_listener = match config.service.metrics_listen {
        Some(addr) => Some(metrics::bind(addr)?),
        None => None,
    };
    let pid_file = match &config.service.pid_file {
        Some(path) => Some(PidFile::write(path)?),
        None => None,
    };
    drop_privileges(config.service.run_as.as_ref(), config.service.allow_root)?;

    let sockets: Vec<String> = listeners.iter().map(Listener::spec).collect();
    let sockets = sockets.join(", ");
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        sockets = %sockets,
        from_systemd = activated,
        config = %config.origin.path.display(),
        metrics = %config.service.metrics_listen.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        "dkim-sidecar started"
    );

    let metrics = metrics_listener.as_ref().map(|_| Arc::new(Metrics::new()));
    if let Some(m) = &metrics {
        m.loaded(true, Some(&config.policy));
    }
    let reporter = Arc::new(Reporter::new(&config.logging, metrics.clone()));
    let mut watcher = config
        .service
        .watch_interval
        .map(|every| Watcher::new(every, &config));
    let mut current = Current {
        service: config.service.clone(),
        logging: config.logging.clone(),
        faults: config.policy.faults().len(),
    };
    let mut settings = config.service.server;
    settings.max_connections = fit_open_files(settings.max_connections);
    let live = Arc::new(LivePolicy::new(config.policy));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let live = Arc::clone(&live);
        let reporter = Arc::clone(&reporter);
        let shutdown = shutdown.clone();
        async move {
            server::run(
                listeners,
                move |_| SigningFilter::with_report(Arc::clone(&live), reporter.connection()),
                settings,
                shutdown,
            )
            .await;
        }
    });
    let metrics_server = match (metrics_listener, &metrics) {
        (Some(listener), Some(m)) => {
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(|source| MetricsBindError {
                    addr: current.service.metrics_listen.expect("bound above"),
                    source,
                })?;
            Some(tokio::spawn(metrics::serve(
                listener,
                Arc::clone(m),
                shutdown.clone(),
            )))
        }
        _ => None,
    };
    let reload: Arc<Reload> = Arc::new(reload);
    systemd::ready(&format!("signing on {sockets}{degraded}"));

    loop {
        let tick = async {
            match &mut watcher {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading");
                reload_config(&reload, &live, &reporter, &mut current, watcher.as_mut(), &sockets).await;
            }
            _ = user1.recv() => {
                tracing::info!("SIGUSR1: reloading");
                reload_config(&reload, &live, &reporter, &mut current, watcher.as_mut(), &sockets).await;
            }
            changed = tick => {
                tracing::info!("{} changed: reloading", changed.display());
                reload_config(&reload, &live, &reporter, &mut current, watcher.as_mut(), &sockets).await;
            }
        }
    }
    tracing::info!("shutting down: finishing transactions in flight");
    systemd::stopping();
    shutdown.cancel();
    let _ = server.await;
    if let Some(task) = metrics_server {
        let _ = task.await;
    }
    drop(pid_file);
    tracing::info!("dkim-sidecar stopped");
    Ok(())
}

/// The settings in force that a reload cannot change.
struct Current {
    service: crate::config::Service,
    logging: Logging,
    /// How many keys of the running configuration cannot sign.
    faults: usize,
}

async fn reload_config(
    reload: &Arc<Reload>,
    live: &LivePolicy,
    reporter: &Reporter,
    current: &mut Current,
    watcher: Option<&mut Watcher>,
    sockets: &str,
) {
    systemd::reloading();
    let reload = Arc::clone(reload);
    let loaded = match tokio::task::spawn_blocking(move || reload()).await {
        Ok(result) => result.map_err(ReloadError::from),
        Err(panic) => Err(ReloadError::LoaderFailed(panic.to_string())),
    };
    // At start a key that cannot sign only refuses its own mail; at reload
    // the running configuration may still sign that mail, so a reload that
    // would break more keys than are broken now is refused instead.
    let loaded = loaded.and_then(|config| {
        let faults = config.policy.faults();
        if faults.len() > current.faults {
            return Err(ReloadError::MoreKeyFaults {
                new: faults.len(),
                running: current.faults,
                problems: faults
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        Ok(config)
    });
    // The new configuration's data sets have new caches and connections:
    // check their servers as at start-up.
    let loaded = match loaded {
        Ok(config) => match check_data_sets(&config.policy, Checking::Reload).await {
            Ok(()) => Ok(config),
            Err(error) => Err(ReloadError::DataSetDown(Box::new(error))),
        },
        Err(error) => Err(error),
    };
    match loaded {
        Ok(config) => {
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            let degraded = log_faults(&config.policy);
            current.faults = config.policy.faults().len();
            if config.service != current.service {
                tracing::warn!(
                    "reload: socket, user, metrics or limit settings changed; they take effect at the next restart"
                );
            }
            let (old, new) = (&current.logging, &config.logging);
            if (old.syslog, &old.syslog_facility, old.json)
                != (new.syslog, &new.syslog_facility, new.json)
            {
                tracing::warn!(
                    "reload: Syslog, SyslogFacility or JSON logging changed; they take effect at the next restart"
                );
            }
            reporter.update(&config.logging);
            current.logging = config.logging.clone();
            if let Some(m) = reporter.metrics() {
                m.reload(true, Some(&config.policy));
            }
            if let Some(w) = watcher {
                w.rebase(&config);
            }
            let servers = config.policy.server_sets().len();
            live.replace(config.policy);
            if servers > 0 {
                tracing::info!(
                    "reload: configuration, tables and keys reloaded; the caches of the {servers} \
                     data set(s) kept on a server start empty"
                );
            } else {
                tracing::info!("reload: configuration, tables and keys reloaded");
            }
            systemd::ready(&format!("signing on {sockets}; reloaded{degraded}"));
        }
        Err(error) => {
            tracing::error!("reload failed, keeping the previous configuration: {error}");
            if let Some(m) = reporter.metrics() {
                m.reload(false, None);
            }
            if let Some(w) = watcher {
                w.accept_current();
            }
            systemd::ready(&format!(
                "signing on {sockets}; last reload failed: {error}"
            ));
        }
    }
}

/// Logs every key that cannot sign, once, at error level, and returns
/// what `systemctl status` should add to the status line (empty when
/// every key can sign). Such keys refuse only the mail that needs them.
fn log_faults(policy: &Policy) -> String {
    let faults = policy.faults();
    let action = policy.errors.key_error;
    for fault in &faults {
        tracing::error!(
            "{fault}; mail that needs this key gets the On-KeyError action ({}) until \
             the configuration is fixed and reloaded; every other domain is signed",
            format!("{action:?}").to_lowercase()
        );
    }
    match faults.first() {
        None => String::new(),
        Some(first) => format!(
            "; DEGRADED: {} key problem(s), mail needing them is refused; first: {first}",
            faults.len()
        ),
    }
}

/// Polls the files a configuration was read from and reports when one
/// changed and then stayed unchanged for one more interval (so a file
/// being written is not read half-way; if it is, the reload fails, the old
/// configuration stays, and the finished write triggers another).
struct Watcher {
    interval: tokio::time::Interval,
    files: Vec<PathBuf>,
    /// The state last loaded (or last rejected).
    baseline: Vec<FileState>,
    /// A changed state seen at the previous tick, waiting to settle.
    pending: Option<Vec<FileState>>,
}

/// What identifies a version of a file: missing, or its inode, size and
/// modification time.
type FileState = Option<(u64, u64, i64, i64)>;

impl Watcher {
    fn new(every: Duration, config: &Config) -> Watcher {
        let mut interval = tokio::time::interval(every.max(Duration::from_millis(100)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let files = watched_files(config);
        let baseline = snapshot(&files);
        Watcher {
            interval,
            files,
            baseline,
            pending: None,
        }
    }

    /// Wait until a file changed and settled; returns one that changed.
    async fn changed(&mut self) -> PathBuf {
        loop {
            self.interval.tick().await;
            let now = snapshot(&self.files);
            if now == self.baseline {
                self.pending = None;
                continue;
            }
            if self.pending.as_ref() == Some(&now) {
                self.pending = None;
                let which = self
                    .files
                    .iter()
                    .zip(now.iter().zip(&self.baseline))
                    .find(|(_, (a, b))| a != b)
                    .map(|(f, _)| f.clone())
                    .unwrap_or_default();
                return which;
            }
            self.pending = Some(now);
        }
    }

    /// A new configuration is in force: watch its files from their state now.
    fn rebase(&mut self, config: &Config) {
        self.files = watched_files(config);
        self.accept_current();
    }

    /// Take the files' state now as seen (after a failed reload, so the
    /// same broken files are not tried again until they change).
    fn accept_current(&mut self) {
        self.baseline = snapshot(&self.files);
        self.pending = None;
    }
}

fn snapshot(files: &[PathBuf]) -> Vec<FileState> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

/// The configuration file, the table files and the key files with a
/// fixed name.
pub(crate) fn watched_files(config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config.origin.path.clone()];
    let policy: &Policy = &config.policy;
    let mut add = |path: &Path| {
        if path.is_absolute() && !files.iter().any(|f| f == path) {
            files.push(path.to_path_buf());
        }
    };
    if let Some(domain_key) = &policy.signing.domain_key {
        add(&domain_key.key_file);
    }
    if let Some(tables) = &policy.signing.tables {
        add(&tables.key_table.origin().path);
        add(&tables.signing_table.origin().path);
        for entry in tables.key_table.entries() {
            match &entry.source {
                KeySource::File(t) if !t.is_template() => add(&t.resolve("")),
                KeySource::RelativeFile(p) => add(p),
                _ => {}
            }
        }
    }
    for list in [
        Some(&policy.trust.internal_hosts),
        policy.trust.external_ignore.as_ref(),
        policy.trust.peers.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if let crate::policy::TableSource::Local(list) = list {
            add(&list.origin().path);
        }
    }
    files
}

/// Who owns a Unix socket we create. As with OpenDKIM (which opens its
/// socket after switching to UserID), a socket made while starting as
/// root with a UserID belongs to that user and its group, so that the user
/// can remove it and the group (Postfix's user added to it) can connect;
/// its mode is what the UMask leaves. SocketOwner / SocketGroup (TOML
/// `socket_owner`, `socket_group`) say otherwise when set.
fn socket_access(
    service: &crate::config::Service,
) -> Result<server::UnixSocketAccess, DaemonError> {
    let mut access = service.socket_access.clone();
    let Some(run_as) = &service.run_as else {
        return Ok(access);
    };
    if !nix::unistd::geteuid().is_root() {
        // Not switching users (see drop_privileges): the socket is ours.
        return Ok(access);
    }
    if access.user.is_none() {
        access.user = Some(run_as.user.clone());
    }
    if access.group.is_none() {
        access.group = Some(match &run_as.group {
            Some(group) => group.clone(),
            None => {
                let user = nix::unistd::User::from_name(&run_as.user)
                    .ok()
                    .flatten()
                    .ok_or_else(|| DaemonError::NoSuchUser(run_as.user.clone()))?;
                nix::unistd::Group::from_gid(user.gid)
                    .ok()
                    .flatten()
                    .map(|g| g.name)
                    .unwrap_or_else(|| user.gid.to_string())
            }
        });
    }
    Ok(access)
}

/// File descriptors kept for everything but milter connections: the
/// listeners, logging, metrics, the key and table files read on reload,
/// DNS and database sockets.
const RESERVED_FILES: u64 = 256;

/// Makes room for `max_connections` connections in the open files limit:
/// raises the soft limit to the hard one when it is too low (as OpenDKIM
/// does), and says so. Returns the connection limit the process can keep:
/// `max_connections`, or fewer when the hard limit is too low, with a
/// warning that says how to raise it.
fn fit_open_files(max_connections: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let needed = max_connections as u64 + RESERVED_FILES;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return max_connections;
    };
    let mut available = soft;
    if soft < needed && hard > soft {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(
                    "raised the open files limit from {soft} to {hard} (the hard limit) for                      max_connections {max_connections}"
                );
                available = hard;
            }
            Err(e) => {
                tracing::warn!("cannot raise the open files limit from {soft} to {hard}: {e}");
            }
        }
    }
    if available >= needed {
        return max_connections;
    }
    let fits = usize::try_from(available.saturating_sub(RESERVED_FILES))
        .unwrap_or(max_connections)
        .max(1);
    tracing::warn!(
        "the open files limit ({available}) leaves room for {fits} milter connections, not \
         max_connections {max_connections}; serving at most {fits}: raise the limit \
         (LimitNOFILE={needed} in the systemd unit, or ulimit -n) or lower max_connections"
    );
    fits
}

/// Switch to the configured user and group, or refuse to sign as root.
fn drop_privileges(run_as: Option<&RunAs>, allow_root: bool) -> Result<(), DaemonError> {
    use nix::unistd::{Gid, Group, User, geteuid, setgid, setgroups, setuid};
    let Some(run_as) = run_as else {
        if geteuid().is_root() && !allow_root {
            return Err(DaemonError::RunningAsRoot);
        }
        return Ok(());
    };
    let user = User::from_name(&run_as.user)
        .ok()
        .flatten()
        .ok_or_else(|| DaemonError::NoSuchUser(run_as.user.clone()))?;
    let gid: Gid = match &run_as.group {
        Some(name) => {
            Group::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| DaemonError::NoSuchGroup(name.clone()))?
                .gid
        }
        None => user.gid,
    };
    if geteuid() == user.uid {
        return Ok(());
    }
    if !geteuid().is_root() {
        // Started unprivileged already (systemd's User=): the point of
        // UserID, not signing as root, holds; switching is impossible.
        tracing::warn!(
            user = %run_as.user,
            "UserID ignored: not running as root (already running as uid {})",
            geteuid()
        );
        return Ok(());
    }
    let switch = |source| DaemonError::SwitchUser {
        user: run_as.user.clone(),
        source,
    };
    setgroups(&[gid]).map_err(switch)?;
    setgid(gid).map_err(switch)?;
    setuid(user.uid).map_err(switch)?;
    tracing::info!(user = %run_as.user, "dropped privileges");
    Ok(())
}

/// The PID file, removed again on clean exit.
struct PidFile(PathBuf);

impl PidFile {
    /// Write our PID to a temporary file beside `path` and rename it into
    /// place, so nobody reads a half-written file and a symlink planted at
    /// `path` is replaced, never followed.
    fn write(path: &Path) -> Result<PidFile, DaemonError> {
        let error = |source| DaemonError::PidFile {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(error)?;
        let written = writeln!(file, "{}", std::process::id())
            .and_then(|_| file.sync_all())
            .and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(error(e));
        }
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Format, Origin, Service};

    fn config(path: &Path) -> Config {
        Config {
            origin: Origin {
                path: path.to_path_buf(),
                format: Format::OpenDkim,
            },
            service: Service {
                sockets: vec!["inet:8891@localhost".parse().unwrap()],
                ..Service::default()
            },
            logging: Logging::default(),
            policy: crate::offline::signing_tests::example_policy(),
            warnings: vec![],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_reports_a_change_once_it_has_settled() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("opendkim.conf");
        std::fs::write(&conf, "Mode s\n").unwrap();
        let c = config(&conf);
        let mut watcher = Watcher::new(Duration::from_secs(1), &c);
        assert!(watcher.files.contains(&conf), "{:?}", watcher.files);

        std::fs::write(&conf, "Mode sv\n").unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(10), watcher.changed())
            .await
            .expect("a change is reported");
        assert_eq!(changed, conf);
        // Seen and accepted: quiet until the next change.
        watcher.accept_current();
        assert!(
            tokio::time::timeout(Duration::from_secs(10), watcher.changed())
                .await
                .is_err()
        );
    }
}
