//! The example signing policy: mail from example.com signed with the
//! example RSA key (`keys-example/default.private`), relaxed/simple, From
//! oversigned, loaded through the real `opendkim.conf` loader as `run -x`
//! loads it. One definition; suites that need another policy write their
//! own configuration text and load it with [`load`].

use std::path::Path;

use dkim_sidecar::config::Config;
use dkim_sidecar::policy::Policy;

/// The example policy's `opendkim.conf`, with `key_dir` holding the keys.
pub fn example_conf(key_dir: &Path) -> String {
    format!(
        "Mode s\nSocket inet:8891@127.0.0.1\nDomain example.com\nSelector default\n\
         KeyFile {}\nRequireSafeKeys no\nCanonicalization relaxed/simple\nOversignHeaders From\n",
        key_dir.join("default.private").display()
    )
}

/// The example policy, with the repository's `keys-example/`.
pub fn example() -> Policy {
    load(&example_conf(&crate::repo_root().join("keys-example")))
}

/// The policy an `opendkim.conf` with this text gives; panics with the
/// loader's message when it does not load.
pub fn load(opendkim_conf: &str) -> Policy {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let conf = dir.path().join("opendkim.conf");
    std::fs::write(&conf, opendkim_conf).expect("write opendkim.conf");
    Config::from_opendkim_file(&conf)
        .unwrap_or_else(|e| panic!("the test policy does not load: {e}"))
        .policy
}
