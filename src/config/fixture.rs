//! A scratch directory holding the test-only example keys (mode 0600) and a
//! configuration file, for the loaders' unit tests.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

pub(crate) struct Dir {
    dir: tempfile::TempDir,
    /// The configuration file's name inside the directory.
    config: &'static str,
    load: fn(PathBuf) -> Result<Config, ConfigError>,
}

impl Dir {
    /// A directory whose configuration file is `config`, read by `load`.
    pub(crate) fn new(
        config: &'static str,
        load: fn(PathBuf) -> Result<Config, ConfigError>,
    ) -> Dir {
        let dir = tempfile::tempdir().unwrap();
        let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys-example");
        for name in ["default.private", "ed25519.private"] {
            let to = dir.path().join(name);
            fs::copy(keys.join(name), &to).unwrap();
            fs::set_permissions(&to, fs::Permissions::from_mode(0o600)).unwrap();
        }
        Dir { dir, config, load }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write `text` to `name`, with `$DIR` standing for this directory.
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(
            &path,
            text.replace("$DIR", &self.dir.path().display().to_string()),
        )
        .unwrap();
        path
    }

    /// Write `text` as the configuration file and load it.
    pub(crate) fn load(&self, text: &str) -> Result<Config, ConfigError> {
        (self.load)(self.write(self.config, text))
    }

    /// Every problem reported for a configuration that must be refused.
    pub(crate) fn errors(&self, text: &str) -> Vec<String> {
        let err = self
            .load(text)
            .expect_err("the configuration must be refused");
        err.problems().iter().map(ToString::to_string).collect()
    }

    /// Every key that cannot sign (each fault) in a configuration that
    /// loads: such problems hold only the mail that needs the key.
    pub(crate) fn faults(&self, text: &str) -> Vec<String> {
        let config = self
            .load(text)
            .unwrap_or_else(|e| panic!("the configuration must load: {e}"));
        config
            .policy
            .faults()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// `file:line: `, the start of a problem reported at `line` of the
    /// configuration file.
    pub(crate) fn line(&self, line: u32) -> String {
        format!("{}:{line}: ", self.path(self.config).display())
    }
}
