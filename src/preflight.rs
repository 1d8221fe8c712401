//! What `check-config` checks beyond loading: the service as it will run.
//!
//! Loading proves the files parse and the keys load for whoever runs
//! `check-config` (often root). The daemon itself runs as its UserID after
//! start-up, refuses root without one, serves the clients InternalHosts
//! names, and is reached by a Postfix that may run smtpd chrooted. Each
//! [`Finding`] says what will go wrong and what to change. This module only
//! reads (file metadata, and Postfix's configuration through `postconf`);
//! it never changes a file, switches user or opens a socket.

use std::fmt;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use milter::server::SocketSpec;

use crate::config::{Config, RunAs};
use crate::postconf::Postconf;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The service will fail at something it must do: check-config fails.
    Problem,
    /// Mail may go out unsigned or a start may be refused; check-config
    /// still passes.
    Warning,
}

/// One thing the service will run into, with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub text: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Problem => write!(f, "problem: {}", self.text),
            Severity::Warning => write!(f, "warning: {}", self.text),
        }
    }
}

/// Where to read Postfix's configuration.
#[derive(Debug, Clone, Default)]
pub struct Postfix {
    /// `postconf -c DIR`; `None` reads Postfix's default (`/etc/postfix`,
    /// or `MAIL_CONFIG`).
    pub config_dir: Option<PathBuf>,
}

/// Everything found about `config` as the service will run it, when
/// started by the current user.
pub fn check(config: &Config, postfix: &Postfix) -> Vec<Finding> {
    let mut findings = Vec::new();
    let root = nix::unistd::geteuid().is_root();
    if let Some(finding) = refused_as_root(config, root) {
        findings.push(finding);
    }
    if root && let Some(run_as) = &config.service.run_as {
        findings.extend(unreadable_as(run_as, &crate::daemon::watched_files(config)));
    }
    findings.extend(loopback_not_internal(config));
    findings.extend(socket_outside_chroot(config, postfix));
    findings
}

/// `run` refuses to sign as root without a UserID and without
/// `--allow-root` / `allow_root`.
fn refused_as_root(config: &Config, root: bool) -> Option<Finding> {
    (root && config.service.run_as.is_none() && !config.service.allow_root).then(|| Finding {
        severity: Severity::Warning,
        text: "started as root (as now), `run` would refuse to start: set UserID \
               (opendkim.conf) or user (TOML) to the user to sign as, or start it as that \
               user (systemd's User=, as the packaged unit does)"
            .to_string(),
    })
}

/// The files a reload reads that the UserID cannot read: the daemon reads
/// them as root at start, but a reload (SIGHUP, `systemctl reload`, a
/// watched file changing) runs as the UserID and would fail.
fn unreadable_as(run_as: &RunAs, files: &[PathBuf]) -> Vec<Finding> {
    use nix::unistd::{Group, User};
    let Some(user) = User::from_name(&run_as.user).ok().flatten() else {
        // Loading already reported the missing user.
        return Vec::new();
    };
    if user.uid.is_root() {
        return Vec::new();
    }
    let gid = match &run_as.group {
        Some(name) => match Group::from_name(name).ok().flatten() {
            Some(group) => group.gid,
            None => return Vec::new(),
        },
        None => user.gid,
    };
    let identity = Identity {
        uid: user.uid.as_raw(),
        gid: gid.as_raw(),
    };
    files
        .iter()
        .filter_map(|file| {
            let why = identity.cannot_read(file)?;
            Some(Finding {
                severity: Severity::Problem,
                text: format!(
                    "{}: {why} for {} (uid {}, gid {}), the UserID: it is read as root at \
                     start, but a reload runs as {} and would fail; give it to that user \
                     (chown {} {}{})",
                    file.display(),
                    run_as.user,
                    identity.uid,
                    identity.gid,
                    run_as.user,
                    run_as.user,
                    file.display(),
                    if is_key(file) { "; chmod 600 it" } else { "" }
                ),
            })
        })
        .collect()
}

fn is_key(file: &Path) -> bool {
    file.extension()
        .is_some_and(|e| e == "private" || e == "key" || e == "pem")
}

/// The user and the one group the daemon keeps after switching (it drops
/// supplementary groups).
#[derive(Debug, Clone, Copy)]
struct Identity {
    uid: u32,
    gid: u32,
}

impl Identity {
    /// Why this identity cannot read `file`, from the permission bits of
    /// the file and of every directory above it; `None` when it can.
    fn cannot_read(self, file: &Path) -> Option<String> {
        let absolute = std::path::absolute(file).ok()?;
        for dir in absolute.ancestors().skip(1) {
            let meta = std::fs::metadata(dir).ok()?;
            if self.bits(&meta) & 0o1 == 0 {
                return Some(format!("directory {} cannot be entered", dir.display()));
            }
        }
        let meta = std::fs::metadata(&absolute).ok()?;
        (self.bits(&meta) & 0o4 == 0).then(|| "not readable".to_string())
    }

    /// The permission bits (rwx, 0 to 7) that apply to this identity.
    fn bits(self, meta: &std::fs::Metadata) -> u32 {
        let mode = meta.mode();
        if meta.uid() == self.uid {
            (mode >> 6) & 0o7
        } else if meta.gid() == self.gid {
            (mode >> 3) & 0o7
        } else {
            mode & 0o7
        }
    }
}

/// Mail submitted on this host (sendmail(1) and pickup through
/// `non_smtpd_milters`, which connect as `localhost` 127.0.0.1 or ::1, or
/// SMTP from localhost) is signed only when InternalHosts names loopback.
fn loopback_not_internal(config: &Config) -> Option<Finding> {
    // A list kept on a server is not known before the mail comes.
    let crate::policy::TableSource::Local(internal) = &config.policy.trust.internal_hosts else {
        return None;
    };
    let missing: Vec<String> = [
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
    ]
    .into_iter()
    .filter(|ip| !internal.matches_client("localhost", Some(*ip)))
    .map(|ip| ip.to_string())
    .collect();
    if missing.is_empty() || !config.policy.mode.sign {
        return None;
    }
    Some(Finding {
        severity: Severity::Warning,
        text: format!(
            "InternalHosts ({}) does not include {}: mail submitted on this host (sendmail, \
             pickup, SMTP from localhost) goes out unsigned; add {}",
            internal.origin(),
            missing.join(" or "),
            missing.join(" and ")
        ),
    })
}

/// A `local:` socket outside the chroot of a Postfix that runs smtpd
/// chrooted (Debian's master.cf does): smtpd cannot reach it.
fn socket_outside_chroot(config: &Config, postfix: &Postfix) -> Vec<Finding> {
    let paths: Vec<&Path> = config
        .service
        .sockets
        .iter()
        .filter_map(|spec| match spec {
            SocketSpec::Unix(path) => Some(path.as_path()),
            _ => None,
        })
        .collect();
    if paths.is_empty() {
        return Vec::new();
    }
    let Some(postconf) = Postconf::find(postfix.config_dir.as_deref()) else {
        return Vec::new();
    };
    let chrooted = postconf.chrooted_smtpd();
    if chrooted.is_empty() {
        return Vec::new();
    }
    let Some(queue) = postconf.get("queue_directory") else {
        return Vec::new();
    };
    let queue = PathBuf::from(queue);
    paths
        .into_iter()
        .filter(|path| !path.starts_with(&queue))
        .map(|path| Finding {
            severity: Severity::Warning,
            text: format!(
                "socket local:{} is outside {}, the chroot of Postfix's smtpd (master.cf \
                 service {} runs chrooted): smtpd cannot reach it, and its mail goes out \
                 unsigned or is deferred (milter_default_action); put the socket under {} \
                 (e.g. local:{}/dkim-sidecar/dkim-sidecar.sock, with smtpd_milters = \
                 unix:/dkim-sidecar/dkim-sidecar.sock), or run smtpd without chroot",
                path.display(),
                queue.display(),
                chrooted.join(", "),
                queue.display(),
                queue.display(),
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn permission_bits_of_the_file_and_its_directories_decide() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("keys");
        std::fs::create_dir(&sub).unwrap();
        let key = sub.join("default.private");
        std::fs::write(&key, "k").unwrap();
        let owner = std::fs::metadata(&key).unwrap();
        // Someone else entirely: other bits.
        let stranger = Identity {
            uid: owner.uid() + 4242,
            gid: owner.gid() + 4242,
        };
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(stranger.cannot_read(&key).as_deref(), Some("not readable"));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(stranger.cannot_read(&key), None);
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(
            stranger
                .cannot_read(&key)
                .is_some_and(|why| why.contains("cannot be entered")),
        );
        // The group's bits apply to the group.
        let member = Identity {
            uid: stranger.uid,
            gid: owner.gid(),
        };
        assert_eq!(member.cannot_read(&key), None);
    }
}
