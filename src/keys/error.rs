//! Why a private key could not be loaded, as one line the administrator can
//! act on: which file, what is wrong, and the command that fixes it.
//!
//! No variant carries key material: only paths, sizes, modes, user names and
//! the descriptions that the parsing libraries give (which never quote the
//! input).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::diagnostics::Location;

/// Formats the loader accepts, spelled out in every "not a key" message.
pub const ACCEPTED_FORMATS: &str = "PEM \"BEGIN PRIVATE KEY\" (PKCS#8, RSA or Ed25519), \
     PEM \"BEGIN RSA PRIVATE KEY\" (PKCS#1), base64 DER as a KeyTable may hold inline \
     (starting MII), or a base64 Ed25519 seed as dkimpy's dknewkey writes it";

/// Where key data came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// A key file.
    File(PathBuf),
    /// Key data written directly into a KeyTable entry (or another setting).
    Inline(Option<Location>),
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOrigin::File(path) => write!(f, "{}", path.display()),
            KeyOrigin::Inline(Some(at)) => write!(f, "{at}: inline key"),
            KeyOrigin::Inline(None) => f.write_str("inline key"),
        }
    }
}

/// A user as the administrator knows it: name and uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName {
    pub uid: u32,
    pub name: Option<String>,
}

impl UserName {
    /// Looks the name up in the user database; a uid without a name stays a number.
    pub fn from_uid(uid: u32) -> Self {
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|user| user.name);
        UserName { uid, name }
    }

    /// What to write after `chown`.
    pub fn chown_arg(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => self.uid.to_string(),
        }
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} (uid {})", self.uid),
            None => write!(f, "uid {}", self.uid),
        }
    }
}

/// Why a key file or a directory above it lets someone else read or replace
/// the key. `fix` is the shell command that removes the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// The file or directory at fault (the key file itself or a parent).
    pub node: PathBuf,
    pub problem: ExposureKind,
    pub fix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExposureKind {
    /// The key file grants read or write to group and/or others.
    FileAccessible { who: &'static str, mode: u32 },
    /// The key file belongs to someone other than the signer and root.
    FileOwner { owner: UserName, signer: UserName },
    /// A parent directory lets group and/or others replace entries.
    DirectoryWritable { who: &'static str, mode: u32 },
    /// A parent directory belongs to someone who could replace the key.
    DirectoryOwner { owner: UserName, signer: UserName },
    /// The file changed between being opened and being checked.
    Replaced,
}

impl fmt::Display for Exposure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = self.node.display();
        match &self.problem {
            ExposureKind::FileAccessible { who, mode } => {
                write!(f, "it can be read or written by {who} (mode {mode:04o})")?;
            }
            ExposureKind::FileOwner { owner, signer } => {
                write!(f, "it is owned by {owner}; {}", allowed_owners(signer))?;
            }
            ExposureKind::DirectoryWritable { who, mode } => write!(
                f,
                "directory {node} is writable by {who} without the sticky bit \
                 (mode {mode:04o}), so they could replace the key"
            )?,
            ExposureKind::DirectoryOwner { owner, signer } => write!(
                f,
                "directory {node} is owned by {owner}, who could replace the key; {}",
                allowed_owners(signer)
            )?,
            ExposureKind::Replaced => write!(f, "{node} was replaced while it was being checked")?,
        }
        write!(f, "; fix: {}", self.fix)
    }
}

fn allowed_owners(signer: &UserName) -> String {
    if signer.uid == 0 {
        "only root, the signing user, may own it".to_string()
    } else {
        format!("only the signing user {signer} or root may own it")
    }
}

/// Why loading a private key failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{}: key file not found; check the path (KeyFile or the KeyTable entry) \
         or create a key with `dkim-sidecar keygen`",
        path.display()
    )]
    NotFound { path: PathBuf },

    #[error(
        "{}: permission denied reading the key file as {reader}; give it to the signing user: \
         chown {} {} && chmod 600 {}",
        path.display(), owner.chown_arg(), path.display(), path.display()
    )]
    PermissionDenied {
        path: PathBuf,
        reader: UserName,
        owner: UserName,
    },

    #[error("{}: cannot read the key file: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{}: is a {kind}, not a key file; point KeyFile or the KeyTable entry at the key file itself",
        path.display()
    )]
    NotAFile { path: PathBuf, kind: &'static str },

    #[error(
        "{}: {size} bytes is too large for a private key (at most {limit}); \
         check that the path names the key file",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },

    #[error("{origin}: not a private key ({found}); accepted formats: {ACCEPTED_FORMATS}")]
    UnrecognizedFormat { origin: KeyOrigin, found: String },

    #[error(
        "{origin}: the key is encrypted with a passphrase, which a mail signer cannot type; \
         decrypt it: openssl pkey -in ENCRYPTED -out KEYFILE (then chmod 600 KEYFILE)"
    )]
    Encrypted { origin: KeyOrigin },

    #[error(
        "{origin}: {algorithm} keys cannot sign DKIM; use an RSA or Ed25519 key \
         (dkim-sidecar keygen --algorithm rsa|ed25519)"
    )]
    UnsupportedAlgorithm {
        origin: KeyOrigin,
        algorithm: String,
    },

    #[error(
        "{origin}: the RSA key has {bits} bits, fewer than MinimumKeyBits {minimum}; \
         generate a longer one: dkim-sidecar keygen -b 2048 -d DOMAIN -s SELECTOR"
    )]
    TooShort {
        origin: KeyOrigin,
        bits: u32,
        minimum: u32,
    },

    #[error(
        "{origin}: the RSA key has {bits} bits, but DKIM signing keys must have 1024 to 8192 \
         bits (RFC 8301); generate one (dkim-sidecar keygen -b 2048 -d DOMAIN -s SELECTOR) \
         and publish its record"
    )]
    UnsupportedRsaSize { origin: KeyOrigin, bits: u32 },

    #[error(
        "{origin}: damaged {format} key ({detail}); restore it from a backup or check it was \
         copied completely"
    )]
    Malformed {
        origin: KeyOrigin,
        format: &'static str,
        detail: String,
    },

    #[error(
        "{}: key data is not secure: {exposure} (or set RequireSafeKeys no to only warn)",
        path.display()
    )]
    Unsafe {
        path: PathBuf,
        exposure: Box<Exposure>,
    },
}

impl KeyError {
    /// The message without the RequireSafeKeys hint, for the warning that
    /// replaces the error when RequireSafeKeys is off.
    pub(crate) fn unsafe_warning(path: &std::path::Path, exposure: &Exposure) -> String {
        format!("{}: key data is not secure: {exposure}", path.display())
    }
}
