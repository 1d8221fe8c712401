//! The test key pairs from `keys-example/` and the DNS records that
//! publish them, for signers (private keys, copied with mode 0600 because
//! OpenDKIM refuses keys others can read) and verifiers (TXT records).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One signing key: who it signs for and where its private half is.
#[derive(Debug, Clone)]
pub struct TestKey {
    pub domain: String,
    pub selector: String,
    /// The DKIM `a=` this key signs with.
    pub algorithm: &'static str,
    pub private_key: PathBuf,
    /// The TXT record value, e.g. `v=DKIM1; k=rsa; p=MIIB...`.
    pub txt: String,
}

impl TestKey {
    /// `selector._domainkey.domain`.
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }
}

/// The example.com key pairs: RSA 2048 (`default`) and Ed25519 (`ed25519`).
#[derive(Debug, Clone)]
pub struct TestKeys {
    pub rsa: TestKey,
    pub ed25519: TestKey,
}

impl TestKeys {
    /// The keys where they are in the repository (`keys-example/`). Fine
    /// for verifiers and in-process signers; OpenDKIM wants
    /// [`Self::copy_into`] (mode 0600, owned by the user it runs as).
    pub fn load() -> TestKeys {
        TestKeys {
            rsa: load_key("default", "rsa-sha256"),
            ed25519: load_key("ed25519", "ed25519-sha256"),
        }
    }

    /// Copies the private keys into `dir` with mode 0600.
    pub fn copy_into(dir: &Path) -> TestKeys {
        let mut keys = TestKeys::load();
        for key in [&mut keys.rsa, &mut keys.ed25519] {
            let copy = dir.join(key.private_key.file_name().expect("a key file name"));
            std::fs::copy(&key.private_key, &copy)
                .unwrap_or_else(|e| panic!("copy {}: {e}", key.private_key.display()));
            super::set_mode(&copy, 0o600);
            key.private_key = copy;
        }
        keys
    }

    /// The records a verifier needs to check signatures of both keys.
    pub fn dns_records(&self) -> DnsRecords {
        let mut records = DnsRecords::default();
        for key in [&self.rsa, &self.ed25519] {
            records.insert(&key.record_name(), &key.txt);
        }
        records
    }
}

/// TXT records by DNS name: the offline DNS the verifiers consult.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsRecords(BTreeMap<String, String>);

impl DnsRecords {
    pub fn insert(&mut self, name: &str, txt: &str) {
        self.0.insert(name.to_ascii_lowercase(), txt.to_string());
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, txt)| (name.as_str(), txt.as_str()))
    }

    /// `{"name": "txt", ...}`, as verify_dkim.py reads it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("records serialize")
    }

    /// `name txt` lines, as OpenDKIM's `TestPublicKeys` reads them.
    pub fn to_test_public_keys(&self) -> String {
        self.iter()
            .map(|(name, txt)| format!("{name} {txt}\n"))
            .collect()
    }
}

fn load_key(selector: &str, algorithm: &'static str) -> TestKey {
    let base = crate::repo_root().join("keys-example").join(selector);
    let zone_line = std::fs::read_to_string(base.with_extension("txt"))
        .unwrap_or_else(|e| panic!("read {}.txt: {e}", base.display()));
    TestKey {
        domain: "example.com".to_string(),
        selector: selector.to_string(),
        algorithm,
        private_key: base.with_extension("private"),
        txt: txt_value(&zone_line),
    }
}

/// The TXT value of an opendkim-genkey zone line: its quoted strings joined.
fn txt_value(zone_line: &str) -> String {
    zone_line.split('"').skip(1).step_by(2).collect::<String>()
}
