//! Changing an administrator's files without ever leaving one half
//! written: line-level edits of OpenDKIM tables (and value-level edits of
//! a TOML file, see `home`) that keep every comment, blank line and the
//! order of lines, and an atomic replacement that keeps a backup.
//!
//! A replacement writes the new text to a new file beside the old one
//! (same owner and mode), flushes it to disk, keeps the old file under a
//! backup name (a hard link: the old contents, untouched, without using
//! space), and renames the new file over the old name. Readers see the old
//! file or the new one, never a mix; a failure at any point removes what
//! was made and leaves the old file as it was. The file is read again just
//! before the rename: if it changed since rotate read it (a hand edit in
//! between), nothing is replaced.
//!
//! This module never writes to a file in place and never follows a
//! symlink to replace its target.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::ops::Range;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The SHA-256 of some bytes, as `sha256:HEX`.
pub fn fingerprint(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Why a file could not be read or replaced. Each says that the file was
/// left as it was, or what to do when it could not be.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{}: cannot read it: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: is not UTF-8 text; rotate edits only text files", path.display())]
    NotText { path: PathBuf },
    #[error(
        "{}: changed while rotate was working on it (someone else is editing it); \
         nothing was replaced: run rotate again",
        path.display()
    )]
    ChangedMeanwhile { path: PathBuf },
    #[error(
        "{}: cannot {what}: {source}; the file is unchanged: make its directory writable \
         (and free some space) and run rotate again",
        path.display()
    )]
    Write {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: the new version could not be put in place and the old one could not be put back \
         ({source}): copy {} over it by hand",
        path.display(),
        backup.display()
    )]
    Undo {
        path: PathBuf,
        backup: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A text file as rotate read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFile {
    pub path: PathBuf,
    pub text: String,
}

impl TextFile {
    pub fn read(path: &Path) -> Result<TextFile, EditError> {
        let bytes = fs::read(path).map_err(|source| EditError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| EditError::NotText {
            path: path.to_path_buf(),
        })?;
        Ok(TextFile {
            path: path.to_path_buf(),
            text,
        })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(self.text.as_bytes())
    }
}

/// A file that was replaced, and where its previous version is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    pub path: PathBuf,
    pub backup: PathBuf,
}

/// Replaces `original.path` with `new_text` (see the module notes). The
/// backup is `NAME.before-rotate-STAMP` beside it. Fails, with nothing
/// changed, when the file is no longer what `original` holds.
pub fn replace(original: &TextFile, new_text: &str, stamp: &str) -> Result<Replaced, EditError> {
    let path = &original.path;
    let failed = |what: &'static str| {
        move |source: io::Error| EditError::Write {
            path: path.clone(),
            what,
            source,
        }
    };
    let meta = fs::symlink_metadata(path).map_err(|source| EditError::Read {
        path: path.clone(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(EditError::Write {
            path: path.clone(),
            what: "replace a symbolic link",
            source: io::Error::other(format!(
                "it is a symbolic link; point the configuration at {} instead",
                fs::canonicalize(path)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "its target".to_string())
            )),
        });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    // The new file, complete and on disk, before anything else changes.
    let temp = dir.join(format!(".{name}.rotate-{}.new", std::process::id()));
    let _ = fs::remove_file(&temp);
    let written = (|| {
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .mode(meta.mode() & 0o7777)
            .open(&temp)?;
        file.write_all(new_text.as_bytes())?;
        // The mode given at creation is reduced by the umask: set it again.
        file.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
        }
        file.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&temp);
        return Err(failed("write its new version")(source));
    }

    // The old file keeps its contents under the backup name.
    let backup = unused_name(dir, &format!("{name}.before-rotate-{stamp}"));
    if let Err(source) = fs::hard_link(path, &backup) {
        let _ = fs::remove_file(&temp);
        return Err(failed("keep a backup of it")(source));
    }
    let cleanup = || {
        let _ = fs::remove_file(&temp);
        let _ = fs::remove_file(&backup);
    };

    // Nobody changed it since rotate read it?
    match TextFile::read(path) {
        Ok(now) if now == *original => {}
        Ok(_) => {
            cleanup();
            return Err(EditError::ChangedMeanwhile { path: path.clone() });
        }
        Err(e) => {
            cleanup();
            return Err(e);
        }
    }
    if let Err(source) = fs::rename(&temp, path) {
        cleanup();
        return Err(failed("put its new version in place")(source));
    }
    sync_directory(dir);
    Ok(Replaced {
        path: path.clone(),
        backup,
    })
}

/// Puts the previous version back (after a later step failed).
pub fn undo(replaced: &Replaced) -> Result<(), EditError> {
    let undo_failed = |source| EditError::Undo {
        path: replaced.path.clone(),
        backup: replaced.backup.clone(),
        source,
    };
    let dir = replaced.path.parent().unwrap_or(Path::new("."));
    let name = replaced
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.rotate-{}.undo", std::process::id()));
    let _ = fs::remove_file(&temp);
    fs::hard_link(&replaced.backup, &temp).map_err(undo_failed)?;
    if let Err(e) = fs::rename(&temp, &replaced.path) {
        let _ = fs::remove_file(&temp);
        return Err(undo_failed(e));
    }
    let _ = fs::remove_file(&replaced.backup);
    sync_directory(dir);
    Ok(())
}

/// Writes a file of rotate's own (the state file) atomically: new file,
/// flushed, renamed over the old one. No backup.
pub fn write_new(path: &Path, text: &str, mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.new", std::process::id()));
    let _ = fs::remove_file(&temp);
    let result = (|| {
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    } else {
        sync_directory(dir);
    }
    result
}

/// `base`, or `base.2`, `base.3`... whichever does not exist.
fn unused_name(dir: &Path, base: &str) -> PathBuf {
    let mut candidate = dir.join(base);
    let mut n = 2;
    while fs::symlink_metadata(&candidate).is_ok() {
        candidate = dir.join(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

/// Makes a rename durable. Failure only weakens durability, never
/// consistency, so it is not reported.
fn sync_directory(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// C `isspace`, as OpenDKIM splits table lines.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Where the key and the value of an OpenDKIM table line are, as byte
/// ranges of the line (the value without surrounding white space and
/// without a `#` comment). `None` for a blank or comment-only line.
pub fn table_line_parts(line: &str) -> Option<(Range<usize>, Option<Range<usize>>)> {
    let content_end = line.find('#').unwrap_or(line.len());
    let content = &line[..content_end];
    let start = content.find(|c| !is_c_space(c))?;
    let key_end = content[start..]
        .find(is_c_space)
        .map_or(content.len(), |i| start + i);
    let rest = &content[key_end..];
    let value = rest.find(|c| !is_c_space(c)).map(|offset| {
        let value_start = key_end + offset;
        let value_end = content.trim_end_matches(is_c_space).len();
        value_start..value_end
    });
    Some((start..key_end, value))
}

/// The lines of a text, each with its line ending, numbered from 1 as the
/// table loader numbers them.
fn lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

/// Why a planned line edit does not apply to the file as it is now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct LineError {
    pub line: u32,
    pub problem: String,
}

fn line_at<'a>(all: &[&'a str], number: u32, key: &str) -> Result<&'a str, LineError> {
    let line = all
        .get((number as usize).wrapping_sub(1))
        .ok_or_else(|| LineError {
            line: number,
            problem: "is not there any more".to_string(),
        })?;
    match table_line_parts(line) {
        Some((k, _)) if line[k.clone()] == *key => Ok(line),
        _ => Err(LineError {
            line: number,
            problem: format!("no longer holds the entry `{key}`"),
        }),
    }
}

/// Replaces the value of the entry `key` on line `number`, keeping the key,
/// the white space, any comment and the line ending.
pub fn replace_value(
    text: &str,
    number: u32,
    key: &str,
    new_value: &str,
) -> Result<String, LineError> {
    let all = lines(text);
    let line = line_at(&all, number, key)?;
    let (_, value) = table_line_parts(line).expect("checked by line_at");
    let value = value.ok_or_else(|| LineError {
        line: number,
        problem: format!("the entry `{key}` has no value"),
    })?;
    let edited = format!("{}{new_value}{}", &line[..value.start], &line[value.end..]);
    Ok(splice(&all, number, &edited))
}

/// Adds `new_line` (without line ending) right after line `number`, which
/// must hold the entry `key`; it gets that line's ending.
pub fn insert_after(
    text: &str,
    number: u32,
    key: &str,
    new_line: &str,
) -> Result<String, LineError> {
    let all = lines(text);
    let line = line_at(&all, number, key)?;
    let ending = if line.ends_with("\r\n") { "\r\n" } else { "\n" };
    let own = if line.ends_with('\n') {
        line.to_string()
    } else {
        format!("{line}{ending}")
    };
    Ok(splice(&all, number, &format!("{own}{new_line}{ending}")))
}

/// Removes line `number`, which must hold the entry `key`.
pub fn remove_line(text: &str, number: u32, key: &str) -> Result<String, LineError> {
    let all = lines(text);
    line_at(&all, number, key)?;
    Ok(splice(&all, number, ""))
}

/// A new line for the entry `key` with `value`, laid out like the entry on
/// line `number` (the same white space between key and value).
pub fn line_like(text: &str, number: u32, key: &str, value: &str) -> String {
    let all = lines(text);
    let separator = all
        .get((number as usize).wrapping_sub(1))
        .and_then(|line| {
            let (k, v) = table_line_parts(line)?;
            Some(line[k.end..v?.start].to_string())
        })
        .unwrap_or_else(|| "\t".to_string());
    format!("{key}{separator}{value}")
}

fn splice(all: &[&str], number: u32, replacement: &str) -> String {
    let mut out = String::new();
    for (i, line) in all.iter().enumerate() {
        if i + 1 == number as usize {
            out.push_str(replacement);
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "# keys\n\ndefault._domainkey.example.com   example.com:default:/k/default.private # main\n\
                         other other.org:s1:/k/o.private\n";

    #[test]
    fn parts_of_a_line_skip_comments_and_white_space() {
        let line = "  name \t value:x  # note\n";
        let (k, v) = table_line_parts(line).unwrap();
        assert_eq!(&line[k], "name");
        assert_eq!(&line[v.unwrap()], "value:x");
        assert_eq!(table_line_parts("# only a comment\n"), None);
        assert_eq!(table_line_parts("   \n"), None);
        let (k, v) = table_line_parts("lonely\n").unwrap();
        assert_eq!(k, 0..6);
        assert_eq!(v, None);
    }

    #[test]
    fn a_value_is_replaced_and_everything_else_kept() {
        let edited = replace_value(
            TABLE,
            3,
            "default._domainkey.example.com",
            "example.com:s2:/k/s2.private",
        )
        .unwrap();
        assert_eq!(
            edited,
            "# keys\n\ndefault._domainkey.example.com   example.com:s2:/k/s2.private # main\n\
             other other.org:s1:/k/o.private\n"
        );
    }

    #[test]
    fn a_line_is_added_after_its_neighbour_in_the_same_layout() {
        let line = line_like(
            TABLE,
            3,
            "s2._domainkey.example.com",
            "example.com:s2:/k/s2.private",
        );
        assert_eq!(
            line,
            "s2._domainkey.example.com   example.com:s2:/k/s2.private"
        );
        let edited = insert_after(TABLE, 3, "default._domainkey.example.com", &line).unwrap();
        assert_eq!(
            edited,
            "# keys\n\ndefault._domainkey.example.com   example.com:default:/k/default.private # main\n\
             s2._domainkey.example.com   example.com:s2:/k/s2.private\n\
             other other.org:s1:/k/o.private\n"
        );
        let removed = remove_line(&edited, 3, "default._domainkey.example.com").unwrap();
        assert_eq!(
            removed,
            "# keys\n\ns2._domainkey.example.com   example.com:s2:/k/s2.private\n\
             other other.org:s1:/k/o.private\n"
        );
    }

    #[test]
    fn crlf_and_a_missing_final_newline_are_kept() {
        let text = "a x\r\nb y";
        assert_eq!(
            insert_after(text, 1, "a", "c z").unwrap(),
            "a x\r\nc z\r\nb y"
        );
        assert_eq!(
            insert_after(text, 2, "b", "c z").unwrap(),
            "a x\r\nb y\nc z\n"
        );
        assert_eq!(replace_value(text, 2, "b", "w").unwrap(), "a x\r\nb w");
    }

    #[test]
    fn an_edit_of_a_line_that_moved_is_refused() {
        let err = replace_value(TABLE, 4, "default._domainkey.example.com", "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 4: no longer holds the entry `default._domainkey.example.com`"
        );
        assert!(remove_line(TABLE, 9, "other").is_err());
    }

    #[test]
    fn replace_keeps_a_backup_owner_and_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("KeyTable");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let original = TextFile::read(&path).unwrap();
        let replaced = replace(&original, "new\n", "20261201T000000Z").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(
            replaced.backup,
            dir.path().join("KeyTable.before-rotate-20261201T000000Z")
        );
        assert_eq!(fs::read_to_string(&replaced.backup).unwrap(), "old\n");
        undo(&replaced).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "old\n");
        assert!(!replaced.backup.exists());
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn replace_refuses_a_file_changed_since_it_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("SigningTable");
        fs::write(&path, "old\n").unwrap();
        let original = TextFile::read(&path).unwrap();
        fs::write(&path, "edited by hand\n").unwrap();
        let err = replace(&original, "new\n", "x").unwrap_err();
        assert!(matches!(err, EditError::ChangedMeanwhile { .. }), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "edited by hand\n");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no backup or temporary file left behind");
    }

    #[test]
    fn fingerprints_are_sha256() {
        assert_eq!(
            fingerprint(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
