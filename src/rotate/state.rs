//! Where a domain's rotation stands: a small TOML file beside the keys
//! (`DOMAIN.rotation`), and the lock (`.DOMAIN.rotation.lock`, flock) that
//! keeps two rotations of one domain from running at once.
//!
//! The file is for people as much as for rotate: it says which selector is
//! leaving and which is coming, the stage, when each step was taken, and
//! the fingerprints of the tables as rotate last left them (how a hand
//! edit in between is noticed). It is written atomically and holds no key
//! material. This module never decides what to do next: `steps` does.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::clock::{Span, Timestamp};
use super::edit;

/// The stages of a rotation, in order. Each run of `rotate` moves a
/// rotation at most one stage on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The new key and its `.txt` exist; nothing signs with it and its
    /// record may not be published yet.
    Prepared,
    /// Its record was sent to DNS (dynamic update) or the administrator
    /// was told to publish it.
    Published,
    /// The tables sign with the new key; the old record stays published
    /// for mail in flight until `retire_after`.
    Active,
    /// The old record is revoked (or removal was asked for) and the old
    /// key archived: the rotation is complete.
    Retired,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prepared => "prepared",
            Stage::Published => "published",
            Stage::Active => "active",
            Stage::Retired => "retired",
        }
    }
}

/// How activation points the signer at the new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Switch {
    /// A new KeyTable line next to the old one; the SigningTable lines that
    /// named the old key name the new one. Retiring removes the old line.
    NewEntry,
    /// The key's own entry (a KeyTable line the SigningTable reaches with
    /// `%`, or a TOML `[[key]]`) gets the new selector and file.
    InPlace,
}

/// One of the two keys of a rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    pub selector: String,
    /// The KeyTable name (or TOML `[[key]]` name) that signs with it.
    pub key_name: String,
    pub key_file: PathBuf,
}

/// A switch of the tables that was started: the fingerprints the files
/// have once it is complete. Lets the next run tell a switch it finished
/// (but could not record) from a hand edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The stage the switch leads to.
    pub to: Stage,
    pub files: BTreeMap<String, String>,
}

/// The state of one domain's rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    pub domain: String,
    pub stage: Stage,
    /// `rsa` or `ed25519`.
    pub algorithm: String,
    pub switch: Switch,
    pub prepared: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<Timestamp>,
    /// `dns-update SERVER (key NAME)` or `by hand`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_after: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_via: Option<String>,
    pub old: KeyRef,
    pub new: KeyRef,
    /// The files rotate edits, with their fingerprints as rotate last saw
    /// or wrote them.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

impl Rotation {
    /// Whether the dates the stage needs are there.
    fn check(&self) -> Result<(), String> {
        let need = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("stage {} without {what}", self.stage.name()))
            }
        };
        if self.stage >= Stage::Published {
            need(self.published.is_some(), "`published`")?;
        }
        if self.stage >= Stage::Active {
            need(
                self.activated.is_some() && self.retire_after.is_some(),
                "`activated` and `retire_after`",
            )?;
        }
        if self.stage >= Stage::Retired {
            need(self.retired.is_some(), "`retired`")?;
        }
        Ok(())
    }

    /// Whether the rotation still has work to do.
    pub fn in_progress(&self) -> bool {
        self.stage != Stage::Retired
    }
}

/// Problems with the state file or its lock.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: cannot read the rotation state: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: the rotation state is damaged ({detail}); fix it by hand or move it away to start \
         over (then check the tables and DNS by hand)",
        path.display()
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "{}: cannot save the rotation state: {source}; free some space or make the directory \
         writable, then run rotate again",
        path.display()
    )]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "another rotation of {domain} is running{holder} (lock {}); wait for it to finish",
        path.display()
    )]
    Busy {
        domain: String,
        holder: String,
        path: PathBuf,
    },
    #[error("{}: cannot take the rotation lock: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The state file of one domain, in a key directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    pub domain: String,
    pub path: PathBuf,
    pub lock_path: PathBuf,
}

/// Held while a rotation runs; released when dropped (or when the process
/// ends, however it ends).
#[derive(Debug)]
pub struct RotationLock {
    _lock: Flock<File>,
}

const HEADER: &str = "\
# The key rotation of one domain, written by `dkim-sidecar rotate` after each
# step (prepare, publish, activate, retire) and read by `rotate --status`.
# Times are UTC. `files` are the tables as rotate last left them: a table that
# no longer matches was edited by hand, and rotate stops to let you look.
# No key material is kept here.
";

impl StateFile {
    pub fn new(directory: &Path, domain: &str) -> StateFile {
        StateFile {
            domain: domain.to_string(),
            path: directory.join(format!("{domain}.rotation")),
            lock_path: directory.join(format!(".{domain}.rotation.lock")),
        }
    }

    /// Takes the domain's lock without waiting; `Busy` names the process
    /// that holds it.
    pub fn lock(&self) -> Result<RotationLock, StateError> {
        let path = &self.lock_path;
        let lock_error = |source| StateError::Lock {
            path: path.clone(),
            source,
        };
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(lock_error)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StateError::Busy {
                    domain: self.domain.clone(),
                    holder: if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {holder})")
                    },
                    path: path.clone(),
                });
            }
            Err((_, errno)) => return Err(lock_error(io::Error::from(errno))),
        };
        // Say who holds it; a failure here does not weaken the lock.
        let _ = lock
            .set_len(0)
            .and_then(|_| lock.rewind())
            .and_then(|_| writeln!(lock, "{}", std::process::id()));
        Ok(RotationLock { _lock: lock })
    }

    /// The rotation recorded here, if any.
    pub fn load(&self) -> Result<Option<Rotation>, StateError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let damaged = |detail: String| StateError::Damaged {
            path: self.path.clone(),
            detail,
        };
        let rotation: Rotation =
            toml::from_str(&text).map_err(|e| damaged(e.message().trim().to_string()))?;
        rotation.check().map_err(damaged)?;
        if rotation.domain != self.domain {
            return Err(damaged(format!(
                "it is about {}, not {}",
                rotation.domain, self.domain
            )));
        }
        Ok(Some(rotation))
    }

    /// Saves `rotation` atomically (mode 0644: it holds nothing secret).
    pub fn save(&self, rotation: &Rotation) -> Result<(), StateError> {
        let body = toml::to_string(rotation).map_err(|e| StateError::Write {
            path: self.path.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        edit::write_new(&self.path, &format!("{HEADER}{body}"), 0o644).map_err(|source| {
            StateError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation() -> Rotation {
        Rotation {
            domain: "example.com".to_string(),
            stage: Stage::Active,
            algorithm: "rsa".to_string(),
            switch: Switch::NewEntry,
            prepared: Timestamp::parse("2026-12-01T09:00:00Z").unwrap(),
            published: Some(Timestamp::parse("2026-12-02T09:00:00Z").unwrap()),
            published_via: Some("dns-update 127.0.0.1:53 (key rotate)".to_string()),
            activated: Some(Timestamp::parse("2026-12-03T09:00:00Z").unwrap()),
            overlap: Some(Span::days(7)),
            retire_after: Some(Timestamp::parse("2026-12-10T09:00:00Z").unwrap()),
            retired: None,
            retired_via: None,
            old: KeyRef {
                selector: "default".to_string(),
                key_name: "default._domainkey.example.com".to_string(),
                key_file: PathBuf::from("/k/default.private"),
            },
            new: KeyRef {
                selector: "s202612".to_string(),
                key_name: "s202612._domainkey.example.com".to_string(),
                key_file: PathBuf::from("/k/s202612.private"),
            },
            files: BTreeMap::from([("/etc/KeyTable".to_string(), "sha256:00".to_string())]),
            pending: None,
        }
    }

    #[test]
    fn the_state_file_reads_back_what_was_saved_and_is_readable() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "example.com");
        assert_eq!(file.load().unwrap(), None);
        file.save(&rotation()).unwrap();
        assert_eq!(file.load().unwrap(), Some(rotation()));
        let text = fs::read_to_string(dir.path().join("example.com.rotation")).unwrap();
        assert!(
            text.starts_with("# The key rotation of one domain"),
            "{text}"
        );
        assert!(text.contains("stage = \"active\"\n"), "{text}");
        assert!(
            text.contains("retire_after = \"2026-12-10T09:00:00Z\"\n"),
            "{text}"
        );
        assert!(text.contains("[old]\nselector = \"default\"\n"), "{text}");
    }

    #[test]
    fn a_state_missing_the_dates_of_its_stage_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "example.com");
        let mut r = rotation();
        r.activated = None;
        file.save(&r).unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(
            err.contains("stage active without `activated` and `retire_after`"),
            "{err}"
        );
    }

    #[test]
    fn a_second_lock_of_one_domain_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "example.com");
        let held = file.lock().unwrap();
        let err = file.lock().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "another rotation of example.com is running (pid {})",
                std::process::id()
            )),
            "{err}"
        );
        drop(held);
        assert!(file.lock().is_ok());
    }
}
