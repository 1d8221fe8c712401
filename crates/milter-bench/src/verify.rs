//! Checking the signatures a milter sent back, without DNS.
//!
//! [`KeyRecords`] holds the public key records the bench was given (the
//! `.txt` files keygen and opendkim-genkey write) and stands in for DNS:
//! mail-auth's verifier looks them up there, and a name that is not there
//! is "no such record", never a query on the network.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;
use std::sync::Arc;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::{
    AuthenticatedMessage, DkimResult, DnsError, MessageAuthenticator, Parameters, ResolverCache,
    Txt,
};

use dkim_sidecar::keys::record::text_from_file_contents;

/// Public key records by name (`selector._domainkey.domain`).
#[derive(Default)]
pub struct KeyRecords {
    records: HashMap<Box<str>, Txt>,
    names: Vec<String>,
}

impl std::fmt::Debug for KeyRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecords")
            .field("names", &self.names)
            .finish()
    }
}

impl KeyRecords {
    pub fn new() -> Self {
        KeyRecords::default()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record names held, for the report.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Add the record `text` (`v=DKIM1; k=rsa; p=...`) under `name`.
    pub fn add(&mut self, name: &str, text: &str) -> Result<(), String> {
        let key = DomainKey::parse(text.as_bytes())
            .map_err(|e| format!("{name}: not a DKIM key record: {e}"))?;
        let name = normalize(name);
        self.names.push(name.clone());
        self.records
            .insert(name.into_boxed_str(), Txt::DomainKey(Arc::new(key)));
        Ok(())
    }

    /// Add the record in a zone-file entry such as keygen's
    /// `default.txt` (`default._domainkey IN TXT ( "v=DKIM1; ..." )`). A
    /// relative name gets `domain` appended. A file holding only the record
    /// text is named `selector._domainkey.domain` with the file's stem as
    /// the selector.
    pub fn add_file(&mut self, path: &Path, domain: &str) -> Result<(), String> {
        let contents = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = text_from_file_contents(&contents);
        let first = contents.split_whitespace().next().unwrap_or("");
        let name = if contents.contains('"') && !first.starts_with('"') {
            if first.ends_with('.') {
                first.to_string()
            } else {
                format!("{first}.{domain}")
            }
        } else {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("default");
            format!("{stem}._domainkey.{domain}")
        };
        self.add(&name, &text)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The form mail-auth asks for: lower case, with the final dot.
fn normalize(name: &str) -> String {
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

impl ResolverCache<Box<str>, Txt> for KeyRecords {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        Some(
            self.records
                .get(name)
                .cloned()
                .unwrap_or(Txt::Error(mail_auth::Error::Dns(DnsError::RecordNotFound(
                    ResponseCode::NXDomain,
                )))),
        )
    }

    fn remove<Q>(&self, _name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, _key: Box<str>, _value: Txt, _valid_until: std::time::Instant) {}
}

/// Verifies delivered messages against [`KeyRecords`].
pub struct Verifier {
    authenticator: MessageAuthenticator,
    records: Arc<KeyRecords>,
}

impl Verifier {
    pub fn new(records: Arc<KeyRecords>) -> Result<Verifier, String> {
        // The resolver is never asked: every lookup is answered by the records.
        let authenticator =
            MessageAuthenticator::new(ResolverConfig::default(), ResolverOpts::default())
                .map_err(|e| format!("cannot set up the DKIM verifier: {e}"))?;
        Ok(Verifier {
            authenticator,
            records,
        })
    }

    /// Check every DKIM-Signature in `message`; `expected` is how many the
    /// milter added. `Err` says what is wrong.
    pub async fn verify(&self, message: &[u8], expected: usize) -> Result<(), String> {
        let parsed = AuthenticatedMessage::parse(message)
            .ok_or_else(|| "the delivered message does not parse".to_string())?;
        let results = self
            .authenticator
            .verify_dkim(Parameters::new(&parsed).with_txt_cache(&*self.records))
            .await;
        if results.len() != expected {
            return Err(format!(
                "{} DKIM-Signature fields were added, the verifier saw {}",
                expected,
                results.len()
            ));
        }
        for result in &results {
            if result.result() != &DkimResult::Pass {
                let who = result
                    .signature()
                    .map(|s| format!("d={} s={}", s.d, s.s))
                    .unwrap_or_else(|| "an unparseable signature".to_string());
                return Err(format!("{who}: {:?}", result.result()));
            }
        }
        Ok(())
    }
}
