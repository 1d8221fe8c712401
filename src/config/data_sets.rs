//! Opening the data sets a configuration names (host lists, domain lists,
//! header lists, tables), with relative file names made absolute against
//! the directory the configuration says they are relative to.
//!
//! OpenDKIM opens a relative name against its working directory (its
//! `BaseDirectory` once it has changed there); a native configuration's
//! relative names are relative to the file itself. Either way the caller
//! passes that directory, and what is loaded (and shown by `check-config`)
//! is an absolute path. This module never logs.

use std::path::{Component, Path, PathBuf};

use crate::diagnostics::{Location, Warning};
use crate::tables::{DataSet, DataSetSpec, TableError};

/// Parses `spec` (written at `at`), makes a relative file name relative to
/// `base`, and reads it. The specification's own warnings come back with
/// the data set's.
pub(crate) fn open(
    spec: &str,
    at: &Location,
    base: &Path,
) -> Result<(DataSet, Vec<Warning>), TableError> {
    let (parsed, mut warnings) = DataSetSpec::parse(spec, at)?;
    let mut set = parsed.resolve_against(base).load(at)?;
    warnings.extend(set.take_warnings());
    Ok((set, warnings))
}

/// `name` made absolute against `base`, with `.` and `..` resolved
/// lexically (so `conf/../keys/a.private` shows as `keys/a.private`).
pub(crate) fn resolve(base: &Path, name: impl AsRef<Path>) -> PathBuf {
    let mut out = PathBuf::new();
    for part in base.join(name).components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The keys of a data set, in order (the values are ignored).
pub(crate) fn keys(set: &DataSet) -> Vec<String> {
    set.entries.iter().map(|e| e.key.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_file_is_read_from_the_base_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hosts"), "127.0.0.1\n10.0.0.0/8\n").unwrap();
        let at = Location::new("/etc/opendkim.conf", 3);
        let (set, warnings) = open("file:hosts", &at, dir.path()).unwrap();
        assert_eq!(keys(&set), ["127.0.0.1", "10.0.0.0/8"]);
        assert_eq!(set.origin.path.as_ref(), dir.path().join("hosts"));
        assert!(warnings.is_empty());
    }

    #[test]
    fn resolved_names_are_absolute_and_tidy() {
        let base = Path::new("/srv/dkim/conf");
        assert_eq!(
            resolve(base, "../keys/./a.private"),
            Path::new("/srv/dkim/keys/a.private")
        );
        assert_eq!(resolve(base, "/etc/k"), Path::new("/etc/k"));
    }

    #[test]
    fn csl_list_is_located_at_the_option() {
        let at = Location::new("/etc/opendkim.conf", 9);
        let (set, _) = open("a.example, b.example", &at, Path::new("/")).unwrap();
        assert_eq!(keys(&set), ["a.example", "b.example"]);
        assert_eq!(set.entries[1].at, at);
    }
}
