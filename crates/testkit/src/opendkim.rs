//! OpenDKIM as a signing milter: the reference the harness is proven
//! with, and the behaviour dkim-sidecar must match.
//!
//! [`OpenDkimSigner`] writes an opendkim.conf with a KeyTable and a
//! `refile:` SigningTable for the example.com test keys (the usual
//! "Postfix + OpenDKIM" guide layout) into its own directory. The same
//! files can later be handed to `dkim-sidecar run -x`, which must read
//! them unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::keys::{DnsRecords, TestKey, TestKeys};
use super::milter_process::{MilterProcess, MilterSocket};

/// Which of the test keys signs. OpenDKIM 2.11 has one global
/// `SignatureAlgorithm`, so one instance signs with RSA or with Ed25519,
/// never both: dual signatures take two OpenDKIM milters in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    Rsa,
    Ed25519,
}

/// How to build an [`OpenDkimSigner`].
#[derive(Debug, Clone)]
pub struct OpenDkimSignerBuilder {
    key: SigningKey,
    internal_hosts: Vec<String>,
    extra_lines: Vec<String>,
}

impl OpenDkimSignerBuilder {
    pub fn key(mut self, key: SigningKey) -> Self {
        self.key = key;
        self
    }

    /// Replaces the `InternalHosts` list (default `127.0.0.1`, like
    /// OpenDKIM's). A list without 127.0.0.1 makes local test clients
    /// external: they get signed only when authenticated.
    pub fn internal_hosts(mut self, hosts: &[&str]) -> Self {
        self.internal_hosts = hosts.iter().map(ToString::to_string).collect();
        self
    }

    /// Appends a line to opendkim.conf (the last repetition of a name wins).
    pub fn config_line(mut self, line: &str) -> Self {
        self.extra_lines.push(line.to_string());
        self
    }

    /// Writes the configuration, keys and tables into a new directory.
    pub fn write(self) -> OpenDkimSigner {
        super::require_program("/usr/sbin/opendkim", "opendkim");
        let dir = super::scratch_dir("opendkim");
        let keys = TestKeys::copy_into(dir.path());
        let key = match self.key {
            SigningKey::Rsa => &keys.rsa,
            SigningKey::Ed25519 => &keys.ed25519,
        };
        let key_table = format!(
            "signer {}:{}:{}\n",
            key.domain,
            key.selector,
            key.private_key.display()
        );
        let signing_table = format!("*@{} signer\n", key.domain);
        let internal_hosts = self.internal_hosts.join("\n") + "\n";
        let path = dir.path();
        write(path, "KeyTable", &key_table);
        write(path, "SigningTable", &signing_table);
        write(path, "InternalHosts", &internal_hosts);
        let mut conf = vec![
            "Mode s".to_string(),
            "Syslog no".to_string(),
            // The unix socket must be writable by Postfix's user.
            "UMask 000".to_string(),
            "Canonicalization relaxed/simple".to_string(),
            format!("KeyTable file:{}", path.join("KeyTable").display()),
            format!(
                "SigningTable refile:{}",
                path.join("SigningTable").display()
            ),
            format!(
                "InternalHosts file:{}",
                path.join("InternalHosts").display()
            ),
            format!("SignatureAlgorithm {}", key.algorithm),
        ];
        conf.extend(self.extra_lines);
        let config = write(path, "opendkim.conf", &(conf.join("\n") + "\n"));
        OpenDkimSigner {
            dir,
            keys,
            key: self.key,
            config,
        }
    }
}

/// An OpenDKIM signing configuration in its own directory.
pub struct OpenDkimSigner {
    dir: TempDir,
    keys: TestKeys,
    key: SigningKey,
    config: PathBuf,
}

impl OpenDkimSigner {
    /// Signs everything from example.com with the RSA key; 127.0.0.1 is
    /// internal.
    pub fn builder() -> OpenDkimSignerBuilder {
        OpenDkimSignerBuilder {
            key: SigningKey::Rsa,
            internal_hosts: vec!["127.0.0.1".to_string()],
            extra_lines: Vec::new(),
        }
    }

    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The directory holding the config, tables and keys.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The key it signs with.
    pub fn key(&self) -> &TestKey {
        match self.key {
            SigningKey::Rsa => &self.keys.rsa,
            SigningKey::Ed25519 => &self.keys.ed25519,
        }
    }

    /// The TXT records of every test key (a message may carry signatures
    /// from more than this signer).
    pub fn dns_records(&self) -> DnsRecords {
        self.keys.dns_records()
    }

    /// `opendkim -f -x CONF -p SOCKET`: in the foreground, on `socket`.
    pub fn command(&self, socket: &MilterSocket) -> Command {
        let mut command = Command::new("/usr/sbin/opendkim");
        command
            .arg("-f")
            .arg("-x")
            .arg(&self.config)
            .arg("-p")
            .arg(socket.opendkim_spec());
        command
    }

    /// Starts OpenDKIM on `socket`, logging into this signer's directory.
    pub fn start(&self, socket: &MilterSocket) -> MilterProcess {
        MilterProcess::start(
            "opendkim",
            socket,
            &self.dir.path().join("opendkim.log"),
            |socket| self.command(socket),
        )
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// `opendkim -f -x CONF -p inet:PORT@127.0.0.1`: Debian's OpenDKIM on an
/// opendkim.conf a test wrote (the one dkim-sidecar is run on with
/// [`super::daemon::run_opendkim_conf`]), on a free loopback port; its
/// output goes to `log`.
pub fn run_conf(conf: &Path, log: &Path) -> MilterProcess {
    super::require_program("/usr/sbin/opendkim", "opendkim");
    MilterProcess::start("opendkim", &MilterSocket::free_inet(), log, |socket| {
        let mut command = Command::new("/usr/sbin/opendkim");
        command
            .arg("-f")
            .arg("-x")
            .arg(conf)
            .arg("-p")
            .arg(socket.opendkim_spec());
        command
    })
}
