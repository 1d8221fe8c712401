//! dkim-sidecar as the milter under test, configured the way OpenDKIM users
//! configure OpenDKIM.
//!
//! [`Sidecar`] writes an `opendkim.conf`, a KeyTable, a `refile:`
//! SigningTable and an InternalHosts file for the example.com test keys
//! (the usual guide layout, which OpenDKIM itself reads too) and runs the
//! binary built by this crate on them with `run -x`. Unlike OpenDKIM, one
//! process can dual-sign: give it both keys and it lists both in the
//! SigningTable with `MultipleSignatures yes`.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::keys::{DnsRecords, TestKey, TestKeys};
use super::milter_process::{MilterProcess, MilterSocket};
use super::opendkim::SigningKey;
use crate::binary;

/// How to build a [`Sidecar`].
#[derive(Debug, Clone)]
pub struct SidecarBuilder {
    keys: Vec<SigningKey>,
    internal_hosts: Vec<String>,
    extra_lines: Vec<String>,
    domain: Option<String>,
}

impl SidecarBuilder {
    /// Signs with these keys, in this order (both: a dual signature).
    pub fn keys(mut self, keys: &[SigningKey]) -> Self {
        self.keys = keys.to_vec();
        self
    }

    /// Replaces the InternalHosts list (default 127.0.0.1).
    pub fn internal_hosts(mut self, hosts: &[&str]) -> Self {
        self.internal_hosts = hosts.iter().map(ToString::to_string).collect();
        self
    }

    /// Signs with the first key as OpenDKIM's `Domain`, `KeyFile` and
    /// `Selector`, `Domain` being `spec` (a list or a data set), in place
    /// of the KeyTable and SigningTable.
    pub fn domain(mut self, spec: &str) -> Self {
        self.domain = Some(spec.to_string());
        self
    }

    /// Appends a line to opendkim.conf.
    pub fn config_line(mut self, line: &str) -> Self {
        self.extra_lines.push(line.to_string());
        self
    }

    pub fn write(self) -> Sidecar {
        let dir = super::scratch_dir("sidecar");
        let keys = TestKeys::copy_into(dir.path());
        let path = dir.path();
        let chosen: Vec<&TestKey> = self
            .keys
            .iter()
            .map(|k| match k {
                SigningKey::Rsa => &keys.rsa,
                SigningKey::Ed25519 => &keys.ed25519,
            })
            .collect();
        let key_table: String = chosen
            .iter()
            .map(|k| {
                format!(
                    "{} {}:{}:{}\n",
                    k.selector,
                    k.domain,
                    k.selector,
                    k.private_key.display()
                )
            })
            .collect();
        let signing_table: String = chosen
            .iter()
            .map(|k| format!("*@{} {}\n", k.domain, k.selector))
            .collect();
        write(path, "KeyTable", &key_table);
        write(path, "SigningTable", &signing_table);
        write(
            path,
            "InternalHosts",
            &(self.internal_hosts.join("\n") + "\n"),
        );
        // Where the keys come from, where the usual layout says it.
        let keys_lines = match (&self.domain, chosen.first()) {
            (Some(spec), Some(key)) => vec![
                format!("Domain {spec}"),
                format!("KeyFile {}", key.private_key.display()),
                format!("Selector {}", key.selector),
            ],
            _ => vec![
                format!("KeyTable file:{}", path.join("KeyTable").display()),
                format!(
                    "SigningTable refile:{}",
                    path.join("SigningTable").display()
                ),
            ],
        };
        let mut conf = vec![
            "# The usual guide layout, read unchanged by dkim-sidecar.".to_string(),
            "Mode s".to_string(),
            "Syslog no".to_string(),
            "UMask 000".to_string(),
            "Canonicalization relaxed/simple".to_string(),
            "OversignHeaders From".to_string(),
        ];
        conf.extend(keys_lines);
        conf.extend([
            format!(
                "InternalHosts file:{}",
                path.join("InternalHosts").display()
            ),
            format!(
                "ExternalIgnoreList file:{}",
                path.join("InternalHosts").display()
            ),
        ]);
        if chosen.len() > 1 && self.domain.is_none() {
            conf.push("MultipleSignatures yes".to_string());
        }
        conf.extend(self.extra_lines);
        let config = write(path, "opendkim.conf", &(conf.join("\n") + "\n"));
        let signing = chosen.into_iter().cloned().collect();
        Sidecar {
            dir,
            keys,
            signing,
            config,
        }
    }
}

/// A dkim-sidecar configuration in its own directory.
pub struct Sidecar {
    dir: TempDir,
    keys: TestKeys,
    signing: Vec<TestKey>,
    config: PathBuf,
}

impl Sidecar {
    /// Signs example.com mail with the RSA key; 127.0.0.1 is internal.
    pub fn builder() -> SidecarBuilder {
        SidecarBuilder {
            keys: vec![SigningKey::Rsa],
            internal_hosts: vec!["127.0.0.1".to_string()],
            extra_lines: Vec::new(),
            domain: None,
        }
    }

    pub fn config(&self) -> &Path {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The keys it signs with.
    pub fn keys(&self) -> Vec<&TestKey> {
        self.signing.iter().collect()
    }

    pub fn dns_records(&self) -> DnsRecords {
        self.keys.dns_records()
    }

    /// Both example keys as copied into this directory, whichever sign.
    pub fn test_keys(&self) -> &TestKeys {
        &self.keys
    }

    /// A native TOML configuration `name` in this directory: `head` (top-level
    /// settings and sections of the test's own), then `[trust]` with
    /// `internal_hosts` and `[tables]` naming this directory's KeyTable and
    /// `refile:` SigningTable.
    pub fn native_toml(&self, name: &str, head: &str, internal_hosts: &[&str]) -> PathBuf {
        let dir = self.dir();
        let path = dir.join(name);
        let hosts: Vec<String> = internal_hosts.iter().map(|h| format!("\"{h}\"")).collect();
        std::fs::write(
            &path,
            format!(
                "{head}\n\n[trust]\ninternal_hosts = [{}]\n\n\
                 [tables]\nkey_table = \"file:{}\"\nsigning_table = \"refile:{}\"\n",
                hosts.join(", "),
                dir.join("KeyTable").display(),
                dir.join("SigningTable").display()
            ),
        )
        .unwrap();
        path
    }

    /// `dkim-sidecar run -x CONF --socket SOCKET --allow-root` ([`binary`]): the tests
    /// run as root (Postfix needs it) with no UserID in the config.
    pub fn command(&self, socket: &MilterSocket) -> Command {
        let mut command = Command::new(binary());
        command
            .arg("run")
            .arg("-x")
            .arg(&self.config)
            .arg("--socket")
            .arg(socket.postfix_spec())
            .arg("--allow-root");
        command
    }

    /// Starts dkim-sidecar on `socket`; its output goes to `sidecar.log` in
    /// this directory (a new start appends).
    pub fn start(&self, socket: &MilterSocket) -> MilterProcess {
        MilterProcess::start(
            "dkim-sidecar",
            socket,
            &self.dir.path().join("sidecar.log"),
            |socket| self.command(socket),
        )
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
