//! `config`: `opendkim.conf` and native TOML configuration files.
//!
//! The input is one configuration file (seeded from `conf/` and
//! `tests/fixtures/`). It is loaded through the public loaders exactly as
//! `dkim-sidecar run -x` and `run -c` load it, once as `opendkim.conf` and
//! once as TOML, and every configuration that loads is rendered by
//! `describe` (what `check-config` prints). Loading reads the tables and
//! keys a file names; the process works in a private temporary directory so
//! that relative names resolve there, and the example keys and tables are
//! copied in so that the fuzzer can reach the code past "file not found".
//! libFuzzer ends the process without running destructors, so that
//! directory (under `$TMPDIR`) stays behind; `.ci/fuzz` points `TMPDIR` at
//! its scratch directory, which it removes.
//!
//! Findings are panics anywhere in the grammar, the option handling, the
//! table and key loading or `describe`; and runaway time or memory.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use dkim_sidecar::config::{Config, describe};
use libfuzzer_sys::fuzz_target;

/// The private working directory, set up once per process.
fn workdir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("dkim-sidecar-fuzz-config-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let keys = dkim_sidecar_fuzz::example_keys();
        std::fs::create_dir(dir.join("keys-example")).expect("mkdir keys-example");
        for (from, to) in [
            (keys.join("default.private"), "default.private"),
            (keys.join("ed25519.private"), "ed25519.private"),
            (keys.join("default.private"), "keys-example/default.private"),
            (keys.join("ed25519.private"), "keys-example/ed25519.private"),
            (keys.join("../conf/opendkim/KeyTable"), "KeyTable"),
            (keys.join("../conf/opendkim/SigningTable"), "SigningTable"),
            (keys.join("../conf/opendkim/TrustedHosts"), "TrustedHosts"),
        ] {
            std::fs::copy(&from, dir.join(to))
                .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
        std::env::set_current_dir(&dir).expect("cd into the work directory");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = workdir();
    for toml in [false, true] {
        let path = dir.join(if toml { "fuzz.toml" } else { "fuzz.conf" });
        std::fs::write(&path, data).expect("write the configuration");
        let loaded = if toml {
            Config::from_toml_file(&path)
        } else {
            Config::from_opendkim_file(&path)
        };
        match loaded {
            Ok(config) => {
                let text = describe(&config);
                assert!(!text.is_empty(), "describe printed nothing");
            }
            Err(error) => {
                // Every error is reported in words.
                assert!(!error.to_string().is_empty(), "an empty error: {error:?}");
            }
        }
    }
});
