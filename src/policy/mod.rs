//! The signing policy: which messages are signed, by whom, with what.
//!
//! A [`Policy`] is built once per configuration load (keys already loaded
//! and checked) and shared read-only by every connection. [`Policy::decide`]
//! makes OpenDKIM's decision for one message from what the MTA told us
//! (client, macros, sender, recipients, headers) and returns either the
//! signatures to make or the reason not to sign. This module knows nothing
//! of the milter protocol's bytes and never signs: `dkim` does.

pub(crate) mod address;
mod decide;
mod domains;
mod keystore;
mod listed;
mod remote;
mod replace;

use std::sync::Arc;
use std::time::Duration;

use mail_auth::dkim::Canonicalization;

use crate::diagnostics::Fault;
use crate::dkim::HeaderPolicy;
use crate::keys::PrivateKey;
use crate::remote::RemoteSet;
use crate::tables::{HostList, KeySet, KeyTable, SigningTable};
pub use replace::{ReplaceLookup, ReplaceRules};

pub use decide::{Decision, KeyProblem, MacroLookup, MessageFacts, NotSigned, Sender, TrustedBy};
pub use domains::DomainSet;
pub use keystore::{KeyStore, KeyStoreError};
pub use listed::{Answers, DataSetProblem, Listed, Queries, Query};
pub use remote::{RemoteKey, RemoteProblem, RemoteSigning, TableSource};

/// Everything the sign decision and the signer need.
#[derive(Debug)]
pub struct Policy {
    pub mode: Mode,
    pub signing: Signing,
    pub trust: Trust,
    /// OpenDKIM's SenderHeaders: header fields that name the sender, in
    /// order of preference (lower case). Default: `from`.
    pub sender_headers: Vec<String>,
    /// OpenDKIM's ExemptDomains: senders' domains whose mail is passed
    /// through untouched.
    pub exempt_domains: Option<TableSource<DomainSet>>,
    /// OpenDKIM's DontSignMailTo: a recipient address in this set means
    /// the message is not signed.
    pub dont_sign_mail_to: Option<TableSource<KeySet>>,
    pub signature: SignatureSettings,
    pub errors: ErrorActions,
    /// OpenDKIM's MaximumHeaders: bytes of header data accepted per message.
    pub max_header_bytes: usize,
    /// Header fields accepted per message (no OpenDKIM equivalent): beyond
    /// it the message is rejected like one over MaximumHeaders. With
    /// `max_header_bytes` it bounds what one message's headers can take.
    pub max_header_count: usize,
    /// OpenDKIM's SoftwareHeader (X-Header): add a `DKIM-Filter:` field
    /// naming this program to signed messages.
    pub software_header: bool,
    /// How messages not signed are verified (Mode has v); `None` in sign-only
    /// mode.
    pub verification: Option<Arc<crate::verifying::VerificationPolicy>>,
    /// OpenDKIM's SoftStart: start even when a data set's server does not
    /// answer at start-up (the mail that needs it is tempfailed until it
    /// does); otherwise refuse to start.
    pub soft_start: bool,
}

impl Policy {
    /// Every data set kept on a server, the KeyTable and SigningTable
    /// first, for `check-config`, start-up checks and reload.
    pub fn server_sets(&self) -> Vec<&Arc<RemoteSet>> {
        let mut sets = Vec::new();
        if let Some(remote) = &self.signing.remote {
            sets.extend(remote.remote_sets());
        }
        let trust = &self.trust;
        for source in [
            Some(&trust.internal_hosts),
            trust.external_ignore.as_ref(),
            trust.peers.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if let TableSource::Remote(set) = source {
                sets.push(set);
            }
        }
        if let TableSource::Remote(set) = &trust.mta_names {
            sets.push(set);
        }
        if let Some(TableSource::Remote(set)) = self.signing.domain_key.as_ref().map(|k| &k.domains)
        {
            sets.push(set);
        }
        if let Some(TableSource::Remote(set)) = &self.exempt_domains {
            sets.push(set);
        }
        if let Some(TableSource::Remote(set)) = &self.dont_sign_mail_to {
            sets.push(set);
        }
        if let Some(TableSource::Remote(set)) = &self.signature.atps_domains {
            sets.push(set);
        }
        if let Some(TableSource::Remote(set)) = &self.signature.body_length_recipients {
            sets.push(set);
        }
        if let Some(set) = self
            .signature
            .replace_rules
            .as_ref()
            .and_then(|rules| rules.fields_on_server())
        {
            sets.push(set);
        }
        if let Some(TableSource::Remote(set)) = self
            .verification
            .as_ref()
            .and_then(|v| v.remove_from.as_ref())
        {
            sets.push(set);
        }
        sets
    }

    /// Whether a message's decision may need a lookup on a server (the
    /// tables, or a set asked per message); cheap, asked per message.
    /// ReplaceHeaders ([`Policy::replace_lookup`]) and RemoveARFrom (asked
    /// at end of message by verification) are not counted here.
    pub fn asks_servers(&self) -> bool {
        fn on_server<T>(source: Option<&TableSource<T>>) -> bool {
            matches!(source, Some(TableSource::Remote(_)))
        }
        self.signing.remote.is_some()
            || on_server(self.signing.domain_key.as_ref().map(|k| &k.domains))
            || on_server(Some(&self.trust.internal_hosts))
            || on_server(self.trust.peers.as_ref())
            || on_server(Some(&self.trust.mta_names))
            || on_server(self.exempt_domains.as_ref())
            || on_server(self.dont_sign_mail_to.as_ref())
            || on_server(self.signature.atps_domains.as_ref())
            || on_server(self.signature.body_length_recipients.as_ref())
    }

    /// Every part of the signing setup that cannot sign, each said once;
    /// empty when every key is usable.
    pub fn faults(&self) -> Vec<&Fault> {
        let mut faults: Vec<&Fault> = Vec::new();
        if let Some(Err(fault)) = self.signing.domain_key.as_ref().map(|k| &k.key) {
            faults.push(fault);
        }
        if let Some(tables) = &self.signing.tables {
            faults.extend(&tables.faults);
        }
        faults
    }
}

/// OpenDKIM's Mode: `s` signs, `v` verifies what is not signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub sign: bool,
    pub verify: bool,
}

/// Where keys come from.
#[derive(Debug)]
pub struct Signing {
    /// OpenDKIM's Domain + KeyFile + Selector: one key for a set of domains.
    pub domain_key: Option<DomainKey>,
    /// OpenDKIM's KeyTable + SigningTable (or native rules, built as such).
    pub tables: Option<SigningTables>,
    /// A KeyTable and SigningTable of which at least one is kept on a
    /// database or directory server (`dsn:`, `ldap:`), looked up per
    /// message.
    pub remote: Option<Arc<RemoteSigning>>,
    /// OpenDKIM's MultipleSignatures: sign with every SigningTable match,
    /// not only the first.
    pub multiple_signatures: bool,
    /// OpenDKIM's SubDomains: `Domain` also covers its subdomains.
    pub subdomains: bool,
}

/// `Domain`, `KeyFile` and `Selector`.
#[derive(Debug, Clone)]
pub struct DomainKey {
    /// The domains it signs for: a list, or a set kept on a server and
    /// asked per message (the sender's domain, `*`, then with SubDomains
    /// each parent, as OpenDKIM asks).
    pub domains: TableSource<DomainSet>,
    pub selector: String,
    /// The key, or why it could not be loaded (mail for `domains` then
    /// gets the On-KeyError action).
    pub key: Result<Arc<PrivateKey>, Fault>,
    /// Where the key was read from (for showing the effective rules).
    pub key_file: std::path::PathBuf,
}

/// A KeyTable, the SigningTable that points into it, and the keys loaded
/// from it.
#[derive(Debug)]
pub struct SigningTables {
    pub key_table: KeyTable,
    pub signing_table: SigningTable,
    pub keys: KeyStore,
    /// Entries that cannot sign (malformed KeyTable lines, SigningTable
    /// entries naming missing keys, keys that failed to load); mail that
    /// needs one gets the On-KeyError action.
    pub faults: Vec<Fault>,
}

/// Who counts as a trusted origin.
#[derive(Debug, Clone)]
pub struct Trust {
    /// OpenDKIM's InternalHosts (default 127.0.0.1 and ::1): mail from
    /// these clients is signed.
    pub internal_hosts: TableSource<HostList>,
    /// OpenDKIM's ExternalIgnoreList: clients allowed to send as our
    /// domains without being internal; only quiets a log line (so one kept
    /// on a server is never asked).
    pub external_ignore: Option<TableSource<HostList>>,
    /// OpenDKIM's PeerList: connections from these clients are accepted at
    /// connect and never looked at (when kept on a server: at end of
    /// headers, once the answer is in).
    pub peers: Option<TableSource<HostList>>,
    /// OpenDKIM's MacroList: a macro with one of these values (any value
    /// when none is listed) makes the origin trusted.
    pub macros: Vec<MacroRule>,
    /// OpenDKIM's MTA: `{daemon_name}` values whose mail is signed.
    pub mta_names: TableSource<Vec<String>>,
}

/// One MacroList entry: `name` or `name=value1|value2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacroRule {
    pub name: String,
    pub values: Vec<String>,
}

/// How signatures are made.
#[derive(Debug, Clone)]
pub struct SignatureSettings {
    pub header_canonicalization: Canonicalization,
    pub body_canonicalization: Canonicalization,
    pub headers: Arc<HeaderPolicy>,
    /// OpenDKIM's SignatureTTL: the `x=` tag.
    pub expiry: Option<Duration>,
    /// OpenDKIM's RequestReports: `r=y` on every signature.
    pub request_reports: bool,
    /// OpenDKIM's ATPSDomains: a sender domain listed here is named in
    /// `atps=` (RFC 6541), with `atpsh=sha256`.
    pub atps_domains: Option<TableSource<DomainSet>>,
    /// OpenDKIM's BodyLengthDB: mail to a listed recipient (an address,
    /// `*@domain`, `user@*`, or `*`) is signed with `l=`.
    pub body_length_recipients: Option<TableSource<KeySet>>,
    /// OpenDKIM's ReplaceRules: rewrites applied to the header fields that
    /// are signed (and that the signing decision reads).
    pub replace_rules: Option<Arc<ReplaceRules>>,
}

/// What the MTA is told when something goes wrong (OpenDKIM's On-*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorActions {
    /// On-InternalError: anything unexpected inside the filter.
    pub internal_error: Action,
    /// A key that should sign could not be found or loaded (a `%` key
    /// file missing for this sender's domain).
    pub key_error: Action,
    /// On-SignatureError: the signature could not be computed.
    pub signing_error: Action,
}

impl Default for ErrorActions {
    /// Tempfail everywhere: no message that should have been signed leaves
    /// unsigned unless the administrator chose that.
    fn default() -> Self {
        ErrorActions {
            internal_error: Action::Tempfail,
            key_error: Action::Tempfail,
            signing_error: Action::Tempfail,
        }
    }
}

/// OpenDKIM's actions: `accept`, `discard`, `quarantine`, `reject`,
/// `tempfail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accept,
    Discard,
    Quarantine,
    Reject,
    Tempfail,
}
