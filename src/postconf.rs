//! Postfix's own settings, as its `postconf` program reports them: what
//! `check-config` (a socket outside smtpd's chroot) and `doctor` (the
//! addresses Postfix sends from) need to know about the Postfix beside us.
//!
//! This module only runs `postconf` to read; it never changes Postfix's
//! configuration, and a missing or failing `postconf` is an answer
//! (`None`, nothing found), not an error.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `postconf`, when Postfix is installed, reading the configuration in
/// `config_dir` (`postconf -c`) or Postfix's default one.
#[derive(Debug)]
pub struct Postconf {
    program: PathBuf,
    config_dir: Option<PathBuf>,
}

impl Postconf {
    /// Where Debian and a source install put `postconf`; `None` when
    /// Postfix is not installed.
    pub fn find(config_dir: Option<&Path>) -> Option<Postconf> {
        let program = [
            "/usr/sbin/postconf",
            "/usr/bin/postconf",
            "/usr/local/sbin/postconf",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())?;
        Some(Postconf {
            program,
            config_dir: config_dir.map(Path::to_path_buf),
        })
    }

    fn run(&self, args: &[&str]) -> Option<String> {
        let mut command = Command::new(&self.program);
        if let Some(dir) = &self.config_dir {
            command.arg("-c").arg(dir);
        }
        let output = command.args(args).output().ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The value of parameter `name`; `None` when empty or unreadable.
    pub fn get(&self, name: &str) -> Option<String> {
        let value = self.run(&["-h", name])?.trim().to_string();
        (!value.is_empty()).then_some(value)
    }

    /// The master.cf services that run smtpd chrooted (`postconf -M`:
    /// service, type, private, unpriv, chroot, wakeup, maxproc, command).
    pub fn chrooted_smtpd(&self) -> Vec<String> {
        let Some(services) = self.run(&["-M"]) else {
            return Vec::new();
        };
        services
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let [service, _, _, _, chroot, _, _, command, ..] = fields[..] else {
                    return None;
                };
                (command == "smtpd" && chroot == "y").then(|| service.to_string())
            })
            .collect()
    }
}
