//! Running as a daemon: the process around the milter server.
//!
//! [`run`] takes a loaded [`Config`], opens the sockets, writes the PID
//! file, drops privileges, serves until SIGTERM or SIGINT, and reloads the
//! signing policy on SIGHUP or SIGUSR1 (OpenDKIM's reload signal; SIGHUP
//! killing OpenDKIM is a common surprise we do not repeat). A reload that
//! fails logs the precise error and keeps the policy in force. Settings
//! that need a restart (sockets, user) are reported, not applied.
//!
//! This module must never load keys itself or sign: loading is the
//! configuration's job, signing the filter's.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, RunAs};
use crate::server::{self, Listener};
use crate::signing::{LivePolicy, SigningFilter};

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Bind(#[from] server::BindError),
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
}

/// How the daemon reads its configuration again on reload.
pub type Reload = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Serve mail until asked to stop.
pub async fn run(config: Config, reload: Reload) -> Result<(), DaemonError> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if let Some(mask) = config.service.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask as _));
    }

    let mut listeners: Vec<Listener> = Vec::new();
    for spec in &config.service.sockets {
        listeners.extend(server::bind(spec, &config.service.socket_access, 1024)?);
    }
    let pid_file = match &config.service.pid_file {
        Some(path) => Some(PidFile::write(path)?),
        None => None,
    };
    drop_privileges(config.service.run_as.as_ref(), config.service.allow_root)?;

    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut user1 = signal(SignalKind::user_defined1()).map_err(DaemonError::Signals)?;

    let sockets: Vec<String> = listeners.iter().map(Listener::describe).collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        sockets = %sockets.join(", "),
        config = %config.origin.path.display(),
        "dkim-sidecar started"
    );

    let settings = config.service.server;
    let service = config.service.clone();
    let live = Arc::new(LivePolicy::new(config.policy));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let live = Arc::clone(&live);
        let shutdown = shutdown.clone();
        async move {
            server::run(
                listeners,
                move |_| SigningFilter::new(Arc::clone(&live)),
                settings,
                shutdown,
            )
            .await;
        }
    });
    let reload: Arc<Reload> = Arc::new(reload);

    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => reload_policy(&reload, &live, &service).await,
            _ = user1.recv() => reload_policy(&reload, &live, &service).await,
        }
    }
    tracing::info!("shutting down: finishing open transactions");
    shutdown.cancel();
    let _ = server.await;
    drop(pid_file);
    tracing::info!("dkim-sidecar stopped");
    Ok(())
}

async fn reload_policy(reload: &Arc<Reload>, live: &LivePolicy, service: &crate::config::Service) {
    let reload = Arc::clone(reload);
    match tokio::task::spawn_blocking(move || reload()).await {
        Ok(Ok(config)) => {
            for warning in &config.warnings {
                tracing::warn!("{warning}");
            }
            if &config.service != service {
                tracing::warn!(
                    "reload: socket, user or limit settings changed; they take effect at the next restart"
                );
            }
            live.replace(config.policy);
            tracing::info!("reload: configuration, tables and keys reloaded");
        }
        Ok(Err(error)) => {
            tracing::error!("reload failed, keeping the previous configuration: {error}");
        }
        Err(panic) => {
            tracing::error!("reload failed, keeping the previous configuration: {panic}");
        }
    }
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
