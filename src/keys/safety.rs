//! RequireSafeKeys: may anyone but the signing user and root read the key, or
//! replace it with one of their own?
//!
//! The rules follow OpenDKIM's `dkimf_securefile` (every node from `/` down
//! to the key, after resolving symlinks; the opened file compared by inode so
//! a file swapped during the check is caught) and are stricter where it is
//! lenient, with one exception:
//! - the key file must be owned by the signing user or root, and grant no
//!   read or write to group or others (OpenDKIM allows group access when the
//!   group has no other members, and stops checking below a directory that
//!   others cannot enter; we do neither: mode 0600 is the one safe answer);
//! - every directory above it must be owned by the signing user or root
//!   (OpenDKIM only objects when the owner-write bit is set, but an owner can
//!   always set it) and must not be writable by group or others, unless it
//!   has the sticky bit (the exception: OpenDKIM rejects keys under `/tmp`).
//!
//! Each problem comes with the command that fixes it. This module only reads
//! metadata; it never reads key bytes and never logs.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::error::{Exposure, ExposureKind, UserName};

const STICKY: u32 = 0o1000;

/// Checks the key file (already opened; `opened` is its `fstat`) and every
/// directory above it. `signer` is the uid the signer runs as; `None` skips
/// the ownership rules (for `testkey`, run by an administrator who is not the
/// signing user).
pub(crate) fn check(
    path: &Path,
    opened: &Metadata,
    signer: Option<u32>,
) -> io::Result<Option<Exposure>> {
    let shown = path.display();
    if let Some(signer) = signer
        && opened.uid() != signer
        && opened.uid() != 0
    {
        let signer = UserName::from_uid(signer);
        return Ok(Some(Exposure {
            node: path.to_path_buf(),
            fix: format!("chown {} {shown}", signer.chown_arg()),
            problem: ExposureKind::FileOwner {
                owner: UserName::from_uid(opened.uid()),
                signer,
            },
        }));
    }
    let mode = opened.mode() & 0o7777;
    if let Some(who) = classes(mode & 0o060 != 0, mode & 0o006 != 0) {
        return Ok(Some(Exposure {
            node: path.to_path_buf(),
            fix: format!("chmod 600 {shown}"),
            problem: ExposureKind::FileAccessible { who, mode },
        }));
    }

    let real = fs::canonicalize(path)?;
    let at_path = fs::metadata(&real)?;
    if at_path.ino() != opened.ino() || at_path.dev() != opened.dev() {
        return Ok(Some(Exposure {
            node: real.clone(),
            fix: "find out who changed it, then try again".to_string(),
            problem: ExposureKind::Replaced,
        }));
    }

    let mut parents: Vec<&Path> = real.ancestors().skip(1).collect();
    parents.reverse();
    for dir in parents {
        let meta = fs::symlink_metadata(dir)?;
        if let Some(exposure) = check_directory(dir, &meta, signer) {
            return Ok(Some(exposure));
        }
    }
    Ok(None)
}

fn check_directory(dir: &Path, meta: &Metadata, signer: Option<u32>) -> Option<Exposure> {
    let shown = dir.display();
    if let Some(signer) = signer
        && meta.uid() != signer
        && meta.uid() != 0
    {
        let signer = UserName::from_uid(signer);
        return Some(Exposure {
            node: dir.to_path_buf(),
            fix: format!(
                "chown {} {shown}, or move the key to a directory owned by root or {}",
                signer.chown_arg(),
                signer.chown_arg()
            ),
            problem: ExposureKind::DirectoryOwner {
                owner: UserName::from_uid(meta.uid()),
                signer,
            },
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & STICKY != 0 {
        return None;
    }
    let group = mode & 0o020 != 0;
    let others = mode & 0o002 != 0;
    let who = classes(group, others)?;
    let letters = match (group, others) {
        (true, true) => "go",
        (true, false) => "g",
        _ => "o",
    };
    Some(Exposure {
        node: dir.to_path_buf(),
        fix: format!("chmod {letters}-w {shown}"),
        problem: ExposureKind::DirectoryWritable { who, mode },
    })
}

fn classes(group: bool, others: bool) -> Option<&'static str> {
    match (group, others) {
        (true, true) => Some("group and others"),
        (true, false) => Some("group"),
        (false, true) => Some("others"),
        (false, false) => None,
    }
}
