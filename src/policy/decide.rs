//! The sign-or-not decision for one message, as OpenDKIM makes it at end of
//! headers (`mlfi_eoh`).
//!
//! 1. The sender is the first address in the first SenderHeaders field the
//!    message has (From by default); none, or unparseable: not signed.
//! 2. The origin is trusted when `{daemon_name}` is an MTA name, a
//!    MacroList rule matches, the client is in InternalHosts, or the client
//!    authenticated (`{auth_type}` is set).
//! 3. The keys: with a KeyTable, the SigningTable entries for the sender
//!    (the first match and the rest of its rule group, or every match with
//!    MultipleSignatures); without one, the
//!    Domain/KeyFile/Selector key when Domain covers the sender's domain.
//! 4. Sign when both hold, unless the sender's domain is exempt or a
//!    recipient is in DontSignMailTo.
//!
//! Sets kept on a server are answered before the decision (see
//! [`super::listed`]); an answer that could not be had is carried along,
//! and the message is tempfailed only if it would otherwise be signed
//! ([`Decision::DataSetUnavailable`]).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::dkim::{HeaderBlock, SignRequest};
use crate::keys::KeyError;

use super::listed::{Answers, DataSetProblem, Listed, Queries, Query};
use super::{
    Policy, RemoteKey, RemoteProblem, RemoteSigning, SignatureSettings, TableSource, address,
};

/// Read access to the MTA's macros, by name without braces.
pub trait MacroLookup {
    fn lookup(&self, name: &str) -> Option<&str>;
}

/// What the MTA told us about one message.
pub struct MessageFacts<'a> {
    /// The client's host name as the MTA reported it (`[ip]` when none).
    pub client_host: &'a str,
    /// The client's address; `None` when the MTA gave none (local socket,
    /// unknown family).
    pub client_ip: Option<IpAddr>,
    pub macros: &'a dyn MacroLookup,
    /// Envelope recipients, without angle brackets.
    pub recipients: &'a [String],
    pub headers: &'a HeaderBlock,
    /// The keys looked up on a server for this message's sender (see
    /// [`Policy::remote_lookup`]); `None` when there was nothing to look up.
    pub remote: Option<&'a Result<Vec<RemoteKey>, RemoteProblem>>,
    /// The answers of the other sets kept on a server (see
    /// [`Policy::server_queries`]); `None` when none was asked.
    pub servers: Option<&'a Answers>,
}

/// Why the origin counts as trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedBy {
    Mta(String),
    Macro(String),
    InternalHost,
    Authenticated(String),
}

impl fmt::Display for TrustedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustedBy::Mta(name) => write!(f, "MTA {name}"),
            TrustedBy::Macro(name) => write!(f, "macro {name}"),
            TrustedBy::InternalHost => f.write_str("internal host"),
            TrustedBy::Authenticated(mech) => write!(f, "SMTP AUTH {mech}"),
        }
    }
}

/// The outcome for one message.
#[derive(Debug)]
pub enum Decision {
    /// Sign with every request, in order.
    Sign {
        sender: String,
        trusted_by: TrustedBy,
        requests: Vec<SignRequest>,
    },
    /// Leave the message as it is.
    NotSigned(NotSigned),
    /// The message should be signed, but a key it needs cannot be used.
    KeyUnavailable { sender: String, error: KeyProblem },
    /// The message would be signed, but a data set kept on a server that
    /// could change that did not answer (and the answer is not cached).
    DataSetUnavailable {
        sender: String,
        error: DataSetProblem,
    },
}

/// Why a key the SigningTable chose for a message cannot sign it. OpenDKIM
/// tempfails such a message (`dkimf_apply_signtable` returns -2 for an
/// unknown key, -3 for one that does not load); so do we, by default.
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    /// A `%` key name became a name the KeyTable does not have (names
    /// written out are checked at start-up).
    #[error(
        "the SigningTable entry at {at} names key `{name}` (a `%` in it is the sender's domain), \
         which the KeyTable does not have; add a KeyTable entry named `{name}`"
    )]
    NotInKeyTable {
        name: String,
        at: crate::diagnostics::Location,
    },
    /// The KeyTable line for the key is malformed (reported at load time).
    #[error("KeyTable entry `{name}` cannot be used: {fault}")]
    MalformedEntry {
        name: String,
        fault: crate::diagnostics::Fault,
    },
    /// The one KeyFile key failed to load (reported at load time).
    #[error("the KeyFile key cannot be used: {0}")]
    KeyFile(crate::diagnostics::Fault),
    #[error(transparent)]
    Load(#[from] KeyError),
    /// A table kept on a server could not give this sender's keys.
    #[error(transparent)]
    Remote(#[from] RemoteProblem),
}

/// Why a message is not signed; its Display is the log line's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSigned {
    SigningDisabled,
    NoSenderHeader {
        looked_for: Vec<String>,
    },
    UnparseableSender {
        header: String,
        value: String,
    },
    /// An internationalised domain with no valid ASCII (`xn--`) form.
    UnencodableDomain {
        domain: String,
    },
    ExemptDomain {
        domain: String,
    },
    UntrustedOrigin {
        client: String,
        sender: String,
    },
    NoKeyForSender {
        sender: String,
        tables: bool,
    },
    RecipientExcluded {
        recipient: String,
    },
    /// The client is in a PeerList kept on a server (a PeerList in a file
    /// is answered at connect).
    Peer {
        client: String,
        entry: String,
    },
}

impl fmt::Display for NotSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotSigned::SigningDisabled => f.write_str("signing is off (Mode has no s)"),
            NotSigned::NoSenderHeader { looked_for } => {
                write!(f, "no sender header field ({})", looked_for.join(", "))
            }
            NotSigned::UnparseableSender { header, value } => {
                write!(f, "cannot find an address in {header}: {value:?}")
            }
            NotSigned::UnencodableDomain { domain } => write!(
                f,
                "sender domain {domain:?} has no valid ASCII (IDNA) form to sign with"
            ),
            NotSigned::ExemptDomain { domain } => {
                write!(f, "sender domain {domain} is in ExemptDomains")
            }
            NotSigned::UntrustedOrigin { client, sender } => write!(
                f,
                "client {client} is not internal and did not authenticate (sender {sender}); \
                 add it to InternalHosts or submit with SMTP AUTH"
            ),
            NotSigned::NoKeyForSender {
                sender,
                tables: true,
            } => {
                write!(f, "no SigningTable match for {sender}")
            }
            NotSigned::NoKeyForSender {
                sender,
                tables: false,
            } => write!(f, "sender {sender} is not in Domain"),
            NotSigned::RecipientExcluded { recipient } => {
                write!(f, "recipient {recipient} is in DontSignMailTo")
            }
            NotSigned::Peer { client, entry } => {
                write!(f, "client {client} is in PeerList (entry `{entry}`)")
            }
        }
    }
}

/// The sender of a message: `user@domain`, domain lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub user: String,
    pub domain: String,
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.domain)
    }
}

/// A message that passed every check before the keys.
struct Screened {
    sender: Sender,
    trusted_by: TrustedBy,
    /// A server-kept set that did not answer and might have said no.
    unknown: Option<DataSetProblem>,
}

/// Whether the origin is trusted.
enum Trusted {
    Yes(TrustedBy),
    /// Only if a server-kept set that did not answer lists it.
    Unknown(TrustedBy, DataSetProblem),
    No,
}

impl Policy {
    /// Decide what to do with one message; see the module docs.
    pub fn decide(&self, facts: &MessageFacts<'_>) -> Decision {
        let Screened {
            sender,
            trusted_by,
            unknown,
        } = match self.screen(facts) {
            Ok(passed) => passed,
            Err(reason) => return Decision::NotSigned(reason),
        };
        let covering = match self.domain_covering(&sender, facts) {
            Ok(covering) => covering,
            Err(error) => {
                return Decision::DataSetUnavailable {
                    sender: sender.to_string(),
                    error,
                };
            }
        };
        match self.requests(&sender, facts.remote, covering) {
            Ok(requests) if requests.is_empty() => Decision::NotSigned(NotSigned::NoKeyForSender {
                sender: sender.to_string(),
                tables: self.signing.tables.is_some() || self.signing.remote.is_some(),
            }),
            Ok(_) if unknown.is_some() => Decision::DataSetUnavailable {
                sender: sender.to_string(),
                error: unknown.expect("checked"),
            },
            Ok(mut requests) => {
                // The signature's own sets: an unanswered one would change
                // the signature (`l=`, `atps=`), so it holds the message.
                let body_length = match self.wants_body_length(facts) {
                    Ok(wanted) => wanted,
                    Err(error) => {
                        return Decision::DataSetUnavailable {
                            sender: sender.to_string(),
                            error,
                        };
                    }
                };
                let atps = match &self.signature.atps_domains {
                    None => None,
                    Some(TableSource::Local(set)) => set
                        .covering(&sender.domain, false)
                        .map(|_| sender.domain.clone()),
                    Some(TableSource::Remote(_)) => {
                        match Self::server_answer(facts, "ATPSDomains", |a| a.atps.as_ref()) {
                            Listed::Yes(_) => Some(sender.domain.clone()),
                            Listed::No => None,
                            Listed::Unknown(error) => {
                                return Decision::DataSetUnavailable {
                                    sender: sender.to_string(),
                                    error,
                                };
                            }
                        }
                    }
                };
                for request in &mut requests {
                    request.body_length = body_length;
                    request.atps.clone_from(&atps);
                }
                Decision::Sign {
                    sender: sender.to_string(),
                    trusted_by,
                    requests,
                }
            }
            Err(error) => Decision::KeyUnavailable {
                sender: sender.to_string(),
                error,
            },
        }
    }

    /// When the tables are kept on a server and the message passes every
    /// check before the key lookup: what to look up (the tables, the
    /// sender, and whether every match signs). The answer goes into
    /// [`MessageFacts::remote`].
    pub fn remote_lookup(
        &self,
        facts: &MessageFacts<'_>,
    ) -> Option<(Arc<RemoteSigning>, Sender, bool)> {
        let remote = self.signing.remote.as_ref()?;
        let screened = self.screen(facts).ok()?;
        Some((
            Arc::clone(remote),
            screened.sender,
            self.signing.multiple_signatures,
        ))
    }

    /// The questions for the sets kept on a server (other than the
    /// KeyTable and SigningTable) that this message's decision may need;
    /// none when signing is off, there is no sender, or no such set.
    pub fn server_queries(&self, facts: &MessageFacts<'_>) -> Queries {
        let mut queries = Queries::default();
        if !self.mode.sign {
            return queries;
        }
        let Ok(sender) = self.sender(facts.headers) else {
            return queries;
        };
        // A sender no key signs for is not signed whatever the sets say
        // (mail from outside, mostly): no server is asked.
        if !self.may_sign_for(&sender) {
            return queries;
        }
        if let Some(TableSource::Remote(set)) = self.signing.domain_key.as_ref().map(|k| &k.domains)
        {
            queries.domain = Some(Query::domain(set, &sender.domain, self.signing.subdomains));
        }
        if let Some(TableSource::Remote(set)) = &self.trust.peers {
            queries.peer = Some(Query::host(set, facts.client_host, facts.client_ip));
        }
        if let TableSource::Remote(set) = &self.trust.internal_hosts {
            queries.internal = Some(Query::host(set, facts.client_host, facts.client_ip));
        }
        if let TableSource::Remote(set) = &self.trust.mta_names
            && let Some(daemon) = facts.macros.lookup("daemon_name")
        {
            queries.mta = Some(Query::keys(set, [daemon.to_string()]));
        }
        if let Some(TableSource::Remote(set)) = &self.exempt_domains {
            queries.exempt = Some(Query::keys(set, [sender.domain.clone()]));
        }
        if let Some(TableSource::Remote(set)) = &self.dont_sign_mail_to {
            queries.excluded = Some(Query::keys(set, facts.recipients.iter().cloned()));
        }
        if let Some(TableSource::Remote(set)) = &self.signature.atps_domains {
            queries.atps = Some(Query::keys(set, [sender.domain.clone()]));
        }
        if let Some(TableSource::Remote(set)) = &self.signature.body_length_recipients {
            queries.body_length = Some(Query::keys(set, body_length_keys(facts.recipients)));
        }
        queries
    }

    /// Whether a key may sign for `sender`, as far as is known without a
    /// server: a SigningTable match, Domain covering the domain, or tables
    /// kept on a server (asked later).
    pub(super) fn may_sign_for(&self, sender: &Sender) -> bool {
        if self.signing.remote.is_some() {
            return true;
        }
        if let Some(tables) = &self.signing.tables {
            return !tables
                .signing_table
                .find_first(&sender.user, &sender.domain)
                .is_empty();
        }
        self.signing
            .domain_key
            .as_ref()
            .is_some_and(|key| match &key.domains {
                TableSource::Local(domains) => domains
                    .covering(&sender.domain, self.signing.subdomains)
                    .is_some(),
                TableSource::Remote(_) => true,
            })
    }

    /// A server-kept set's answer for this message.
    fn server_answer(
        facts: &MessageFacts<'_>,
        role: &'static str,
        pick: impl Fn(&Answers) -> Option<&Listed>,
    ) -> Listed {
        match facts.servers.and_then(pick) {
            Some(listed) => listed.clone(),
            None => Listed::Unknown(DataSetProblem::NotLookedUp(role)),
        }
    }

    /// Every check before the keys: signing on, a sender, not a peer, not
    /// exempt, a trusted origin, no excluded recipient. A server-kept set
    /// that did not answer does not stop the checks: the first such
    /// problem comes back with the sender, for the decision to tempfail
    /// the message if it would be signed.
    fn screen(&self, facts: &MessageFacts<'_>) -> Result<Screened, NotSigned> {
        if !self.mode.sign {
            return Err(NotSigned::SigningDisabled);
        }
        let sender = self.sender(facts.headers)?;
        let mut unknown: Option<DataSetProblem> = None;
        if let Some(TableSource::Remote(_)) = &self.trust.peers {
            match Self::server_answer(facts, "PeerList", |a| a.peer.as_ref()) {
                Listed::Yes(entry) => {
                    return Err(NotSigned::Peer {
                        client: client_label(facts),
                        entry,
                    });
                }
                Listed::No => {}
                Listed::Unknown(problem) => {
                    unknown.get_or_insert(problem);
                }
            }
        }
        match &self.exempt_domains {
            None => {}
            Some(TableSource::Local(exempt))
                if exempt.covering(&sender.domain, false).is_some() =>
            {
                return Err(NotSigned::ExemptDomain {
                    domain: sender.domain,
                });
            }
            Some(TableSource::Local(_)) => {}
            Some(TableSource::Remote(_)) => {
                match Self::server_answer(facts, "ExemptDomains", |a| a.exempt.as_ref()) {
                    Listed::Yes(_) => {
                        return Err(NotSigned::ExemptDomain {
                            domain: sender.domain,
                        });
                    }
                    Listed::No => {}
                    Listed::Unknown(problem) => {
                        unknown.get_or_insert(problem);
                    }
                }
            }
        }
        let trusted_by = match self.trusted_by(facts) {
            Trusted::Yes(by) => by,
            Trusted::Unknown(by, problem) => {
                unknown.get_or_insert(problem);
                by
            }
            Trusted::No => {
                return Err(NotSigned::UntrustedOrigin {
                    client: client_label(facts),
                    sender: sender.to_string(),
                });
            }
        };
        match &self.dont_sign_mail_to {
            None => {}
            Some(TableSource::Local(set)) => {
                if let Some(recipient) = facts.recipients.iter().find(|r| set.contains(r)) {
                    return Err(NotSigned::RecipientExcluded {
                        recipient: recipient.clone(),
                    });
                }
            }
            Some(TableSource::Remote(_)) => {
                match Self::server_answer(facts, "DontSignMailTo", |a| a.excluded.as_ref()) {
                    Listed::Yes(recipient) => {
                        return Err(NotSigned::RecipientExcluded { recipient });
                    }
                    Listed::No => {}
                    Listed::Unknown(problem) => {
                        unknown.get_or_insert(problem);
                    }
                }
            }
        }
        Ok(Screened {
            sender,
            trusted_by,
            unknown,
        })
    }

    /// The address in the first SenderHeaders field present, as OpenDKIM
    /// finds it (`mlfi_eoh`): the first instance of the first listed field
    /// the message has, or From when From is not listed and none is there;
    /// the address as `dkim_mail_parse` reads it (see `policy::address`),
    /// which must yield a non-empty user and domain.
    pub fn sender(&self, headers: &HeaderBlock) -> Result<Sender, NotSigned> {
        let listed_from = self.sender_headers.iter().any(|h| h == "from");
        let field = self
            .sender_headers
            .iter()
            .find_map(|name| headers.first(name))
            .or_else(|| (!listed_from).then(|| headers.first("from")).flatten())
            .ok_or_else(|| NotSigned::NoSenderHeader {
                looked_for: self.sender_headers.clone(),
            })?;
        let unparseable = || NotSigned::UnparseableSender {
            header: String::from_utf8_lossy(&field.name).into_owned(),
            value: String::from_utf8_lossy(&field.value).trim().to_string(),
        };
        let parsed = address::dkim_mail_parse(&field.value).map_err(|_| unparseable())?;
        match (parsed.user, parsed.domain) {
            (Some(user), Some(domain)) if !user.is_empty() && !domain.is_empty() => Ok(Sender {
                user: String::from_utf8_lossy(&user).into_owned(),
                domain: ascii_domain(&domain).ok_or_else(|| NotSigned::UnencodableDomain {
                    domain: String::from_utf8_lossy(&domain).into_owned(),
                })?,
            }),
            _ => Err(unparseable()),
        }
    }

    /// OpenDKIM's order: MTA name, MacroList, internal client, SMTP AUTH.
    /// A server-kept MTA or InternalHosts that did not answer makes the
    /// origin trusted only maybe, unless another rule trusts it.
    fn trusted_by(&self, facts: &MessageFacts<'_>) -> Trusted {
        let trust = &self.trust;
        let mut maybe: Option<(TrustedBy, DataSetProblem)> = None;
        if let Some(daemon) = facts.macros.lookup("daemon_name") {
            let listed = match &trust.mta_names {
                TableSource::Local(names) => {
                    if names.iter().any(|m| m == daemon) {
                        Listed::Yes(daemon.to_string())
                    } else {
                        Listed::No
                    }
                }
                TableSource::Remote(_) => Self::server_answer(facts, "MTA", |a| a.mta.as_ref()),
            };
            match listed {
                Listed::Yes(_) => return Trusted::Yes(TrustedBy::Mta(daemon.to_string())),
                Listed::No => {}
                Listed::Unknown(problem) => {
                    maybe = Some((TrustedBy::Mta(daemon.to_string()), problem));
                }
            }
        }
        // A rule without values matches a macro the MTA defined, even empty
        // (OpenDKIM's manual: "defined but may contain any value").
        for rule in &trust.macros {
            if let Some(value) = facts.macros.lookup(&rule.name)
                && (rule.values.is_empty() || rule.values.iter().any(|v| v == value))
            {
                return Trusted::Yes(TrustedBy::Macro(rule.name.clone()));
            }
        }
        let internal = match &trust.internal_hosts {
            TableSource::Local(hosts) => {
                if hosts.matches_client(facts.client_host, facts.client_ip) {
                    Listed::Yes(String::new())
                } else {
                    Listed::No
                }
            }
            TableSource::Remote(_) => {
                Self::server_answer(facts, "InternalHosts", |a| a.internal.as_ref())
            }
        };
        match internal {
            Listed::Yes(_) => return Trusted::Yes(TrustedBy::InternalHost),
            Listed::No => {}
            Listed::Unknown(problem) => {
                maybe.get_or_insert((TrustedBy::InternalHost, problem));
            }
        }
        match facts.macros.lookup("auth_type") {
            Some(mech) if !mech.is_empty() => {
                Trusted::Yes(TrustedBy::Authenticated(mech.to_string()))
            }
            _ => match maybe {
                Some((by, problem)) => Trusted::Unknown(by, problem),
                None => Trusted::No,
            },
        }
    }

    /// Whether BodyLengthDB names a recipient (see [`body_length_keys`]);
    /// when it is kept on a server, its answer for this message.
    fn wants_body_length(&self, facts: &MessageFacts<'_>) -> Result<bool, DataSetProblem> {
        match &self.signature.body_length_recipients {
            None => Ok(false),
            Some(TableSource::Local(set)) => Ok(body_length_keys(facts.recipients)
                .iter()
                .any(|key| set.contains(key))),
            Some(TableSource::Remote(_)) => {
                match Self::server_answer(facts, "BodyLengthDB", |a| a.body_length.as_ref()) {
                    Listed::Yes(_) => Ok(true),
                    Listed::No => Ok(false),
                    Listed::Unknown(problem) => Err(problem),
                }
            }
        }
    }

    /// The domain the one KeyFile key signs this sender's mail as, when
    /// Domain covers it (itself, or with SubDomains a parent); for a
    /// Domain kept on a server, from its answer for this message.
    fn domain_covering(
        &self,
        sender: &Sender,
        facts: &MessageFacts<'_>,
    ) -> Result<Option<String>, DataSetProblem> {
        let Some(domain_key) = &self.signing.domain_key else {
            return Ok(None);
        };
        match &domain_key.domains {
            TableSource::Local(domains) => {
                Ok(domains.covering(&sender.domain, self.signing.subdomains))
            }
            TableSource::Remote(_) => {
                match Self::server_answer(facts, "Domain", |a| a.domain.as_ref()) {
                    Listed::Yes(key) if key == "*" => Ok(Some(sender.domain.clone())),
                    Listed::Yes(key) => Ok(Some(key)),
                    Listed::No => Ok(None),
                    Listed::Unknown(problem) => Err(problem),
                }
            }
        }
    }

    /// The signatures to make for this sender: empty when no key applies.
    /// `covering` is what [`Policy::domain_covering`] found.
    fn requests(
        &self,
        sender: &Sender,
        remote: Option<&Result<Vec<RemoteKey>, RemoteProblem>>,
        covering: Option<String>,
    ) -> Result<Vec<SignRequest>, KeyProblem> {
        let settings = &self.signature;
        if self.signing.remote.is_some() {
            let keys = match remote {
                None => return Err(RemoteProblem::NotLookedUp.into()),
                Some(Err(problem)) => return Err(problem.clone().into()),
                Some(Ok(keys)) => keys,
            };
            return Ok(keys
                .iter()
                .map(|k| {
                    let identity = k
                        .signer
                        .clone()
                        .filter(|signer| identity_within(signer, &k.domain));
                    request(
                        settings,
                        k.domain.clone(),
                        k.selector.clone(),
                        Arc::clone(&k.key),
                        identity,
                    )
                })
                .collect());
        }
        if let Some(tables) = &self.signing.tables {
            let matches = if self.signing.multiple_signatures {
                tables.signing_table.find_all(&sender.user, &sender.domain)
            } else {
                tables
                    .signing_table
                    .find_first(&sender.user, &sender.domain)
            };
            let mut requests = Vec::with_capacity(matches.len());
            for m in matches {
                let Some(entry) = tables.key_table.get(&m.key_name) else {
                    if let Some(fault) = tables.key_table.rejected(&m.key_name) {
                        return Err(KeyProblem::MalformedEntry {
                            name: m.key_name,
                            fault: fault.clone(),
                        });
                    }
                    return Err(KeyProblem::NotInKeyTable {
                        name: m.key_name,
                        at: m.entry.at.clone(),
                    });
                };
                let resolved = entry.resolve(&sender.domain);
                let key = tables.keys.key_for(&resolved)?;
                let identity = m
                    .signer
                    .filter(|signer| identity_within(signer, &resolved.domain));
                requests.push(request(
                    settings,
                    resolved.domain,
                    resolved.selector.to_string(),
                    key,
                    identity,
                ));
            }
            return Ok(requests);
        }
        if let Some(domain_key) = &self.signing.domain_key
            && let Some(domain) = covering
        {
            // When SubDomains matched a parent, OpenDKIM (`mlfi_eoh`,
            // `setidentity`) sets the identity to `@parent`.
            let identity = (domain != sender.domain).then(|| format!("@{domain}"));
            let key = match &domain_key.key {
                Ok(key) => Arc::clone(key),
                Err(fault) => return Err(KeyProblem::KeyFile(fault.clone())),
            };
            return Ok(vec![request(
                settings,
                domain,
                domain_key.selector.clone(),
                key,
                identity,
            )]);
        }
        Ok(Vec::new())
    }
}

fn request(
    settings: &SignatureSettings,
    domain: String,
    selector: String,
    key: Arc<crate::keys::PrivateKey>,
    identity: Option<String>,
) -> SignRequest {
    SignRequest {
        domain,
        selector,
        key,
        identity,
        header_canonicalization: settings.header_canonicalization,
        body_canonicalization: settings.body_canonicalization,
        headers: Arc::clone(&settings.headers),
        expiry: settings.expiry,
        body_length: false,
        request_reports: settings.request_reports,
        atps: None,
    }
}

/// RFC 6376: the `i=` domain must be `d=` or a subdomain of it; libopendkim
/// drops an identity that is not.
fn identity_within(identity: &str, domain: &str) -> bool {
    let Some((_, identity_domain)) = identity.rsplit_once('@') else {
        return false;
    };
    let identity_domain = identity_domain.to_ascii_lowercase();
    let domain = domain.to_ascii_lowercase();
    identity_domain == domain || identity_domain.ends_with(&format!(".{domain}"))
}

/// The domain as signatures and tables use it: lower case, and an
/// internationalised domain in its A-label (`xn--`) form, since `d=` must
/// be ASCII (RFC 8616 section 4) and OpenDKIM itself aborts on such mail.
fn ascii_domain(domain: &[u8]) -> Option<String> {
    if domain.is_ascii() {
        return Some(String::from_utf8_lossy(domain).to_ascii_lowercase());
    }
    let text = std::str::from_utf8(domain).ok()?;
    idna::domain_to_ascii(text).ok()
}

/// The keys OpenDKIM (`dkimf_checkbldb`) looks up in BodyLengthDB for
/// the recipients: for each, `user@host`, `*@host`, then the same for
/// each parent suffix of the host (`user@.example.com`), then `user@*`;
/// and `*`.
fn body_length_keys(recipients: &[String]) -> Vec<String> {
    let mut keys = Vec::new();
    for rcpt in recipients {
        let Some((user, host)) = rcpt.rsplit_once('@') else {
            continue;
        };
        let mut suffixes = vec![host.to_string()];
        suffixes.extend(crate::tables::dotted_suffixes(host).map(str::to_string));
        for suffix in &suffixes {
            keys.push(format!("{user}@{suffix}"));
            keys.push(format!("*@{suffix}"));
        }
        keys.push(format!("{user}@*"));
    }
    if !keys.is_empty() {
        keys.push("*".to_string());
    }
    keys
}

/// `host [ip]`, or `[ip]` for a client without a host name (Postfix sends
/// the address in brackets as its name then).
fn client_label(facts: &MessageFacts<'_>) -> String {
    let unnamed = facts.client_host.is_empty() || facts.client_host.starts_with('[');
    match facts.client_ip {
        Some(ip) if unnamed => format!("[{ip}]"),
        Some(ip) => format!("{} [{ip}]", facts.client_host),
        None => facts.client_host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    //! OpenDKIM's `mlfi_eoh` rules, one per test; the live comparison with
    //! OpenDKIM is `tests/opendkim_parity.rs`.

    use std::collections::HashMap;
    use std::net::IpAddr;

    use super::*;
    use crate::diagnostics::Location;
    use crate::dkim::HeaderField;
    use crate::keys::LoadOptions;
    use crate::offline::signing_tests::example_policy;
    use crate::policy::{DomainSet, KeyStore, MacroRule, SigningTables};
    use crate::tables::{DataSet, DataSetKind, KeySet, KeyTable, SigningTable};

    struct Macros(HashMap<&'static str, &'static str>);

    impl MacroLookup for Macros {
        fn lookup(&self, name: &str) -> Option<&str> {
            self.0.get(name).copied()
        }
    }

    fn headers(fields: &[(&str, &str)]) -> HeaderBlock {
        let mut block = HeaderBlock::new();
        for (name, value) in fields {
            block.push(HeaderField::new(
                name.as_bytes().to_vec(),
                format!(" {value}").into_bytes(),
            ));
        }
        block
    }

    /// The decision for a message from `ip` with these macros and fields.
    fn decide(
        policy: &Policy,
        ip: &str,
        macros: &[(&'static str, &'static str)],
        recipients: &[&str],
        fields: &[(&str, &str)],
    ) -> Decision {
        decide_with(policy, ip, macros, recipients, fields, None)
    }

    /// The same, with the answers of server-kept sets.
    fn decide_with(
        policy: &Policy,
        ip: &str,
        macros: &[(&'static str, &'static str)],
        recipients: &[&str],
        fields: &[(&str, &str)],
        servers: Option<&Answers>,
    ) -> Decision {
        let ip: IpAddr = ip.parse().unwrap();
        let macros = Macros(macros.iter().copied().collect());
        let recipients: Vec<String> = recipients.iter().map(ToString::to_string).collect();
        let headers = headers(fields);
        policy.decide(&MessageFacts {
            client_host: "client.test",
            client_ip: Some(ip),
            macros: &macros,
            recipients: &recipients,
            headers: &headers,
            remote: None,
            servers,
        })
    }

    /// `(d=, s=, i=)` of each signature, or the reason for none.
    fn signers(decision: Decision) -> Result<Vec<(String, String, Option<String>)>, String> {
        match decision {
            Decision::Sign { requests, .. } => Ok(requests
                .into_iter()
                .map(|r| (r.domain, r.selector, r.identity))
                .collect()),
            Decision::NotSigned(reason) => Err(reason.to_string()),
            Decision::KeyUnavailable { error, .. } => Err(format!("key unavailable: {error}")),
            Decision::DataSetUnavailable { error, .. } => {
                Err(format!("data set unavailable: {error}"))
            }
        }
    }

    fn signed_as(domain: &str) -> Result<Vec<(String, String, Option<String>)>, String> {
        Ok(vec![(domain.to_string(), "default".to_string(), None)])
    }

    #[test]
    fn internationalised_sender_domain_signs_as_its_a_label() {
        let mut policy = example_policy();
        if let Some(domain_key) = &mut policy.signing.domain_key {
            domain_key.domains =
                TableSource::Local(DomainSet::from_names(["xn--bcher-kva.example"]));
        }
        let d = decide(
            &policy,
            "127.0.0.1",
            &[],
            &[],
            &[("From", "Jörg <jörg@Bücher.example>")],
        );
        assert_eq!(signers(d), signed_as("xn--bcher-kva.example"));
    }

    #[test]
    fn domain_with_no_ascii_form_is_not_signed_and_says_why() {
        let d = decide(
            &example_policy(),
            "127.0.0.1",
            &[],
            &[],
            &[("From", "a@exa\u{FFFD}mple.com")],
        );
        let reason = signers(d).unwrap_err();
        assert!(reason.contains("no valid ASCII (IDNA) form"), "{reason}");
    }

    #[test]
    fn sender_headers_fall_back_to_from_when_from_is_not_listed() {
        let mut policy = example_policy();
        policy.sender_headers = vec!["resent-from".into()];
        let d = decide(&policy, "127.0.0.1", &[], &[], &[("From", "a@example.com")]);
        assert_eq!(signers(d), signed_as("example.com"));
        let d = decide(
            &policy,
            "127.0.0.1",
            &[],
            &[],
            &[("From", "a@example.net"), ("Resent-From", "a@example.com")],
        );
        assert_eq!(signers(d), signed_as("example.com"));
    }

    #[test]
    fn sender_headers_listing_from_do_not_fall_back_past_it() {
        let mut policy = example_policy();
        policy.sender_headers = vec!["sender".into(), "from".into()];
        let d = decide(
            &policy,
            "127.0.0.1",
            &[],
            &[],
            &[("From", "a@example.com"), ("Sender", "list@example.net")],
        );
        assert!(signers(d).unwrap_err().contains("example.net"));
    }

    #[test]
    fn sender_is_read_as_dkim_mail_parse_reads_it() {
        let policy = example_policy();
        let sender = |value: &str| policy.sender(&headers(&[("From", value)]));
        assert_eq!(
            sender("\"alice smith\"@Example.COM").unwrap().to_string(),
            "\"alice smith\"@example.com"
        );
        assert_eq!(
            sender("@example.com").unwrap().to_string(),
            "example.com@example.com"
        );
        assert!(sender("undisclosed-recipients:;").is_err());
        assert!(sender("\"unterminated <a@example.com>").is_err());
    }

    #[test]
    fn subdomain_signed_by_listed_parent_gets_identity_at_parent() {
        let mut policy = example_policy();
        policy.signing.subdomains = true;
        let d = decide(
            &policy,
            "127.0.0.1",
            &[],
            &[],
            &[("From", "a@mail.example.com")],
        );
        assert_eq!(
            signers(d),
            Ok(vec![(
                "example.com".into(),
                "default".into(),
                Some("@example.com".into())
            )])
        );
        let d = decide(&policy, "127.0.0.1", &[], &[], &[("From", "a@example.com")]);
        assert_eq!(signers(d), signed_as("example.com"));
    }

    #[test]
    fn percent_key_name_missing_from_keytable_is_a_key_error_not_unsigned() {
        let key = concat!(env!("CARGO_MANIFEST_DIR"), "/keys-example/default.private");
        let at = Location::file("KeyTable");
        let key_table = KeyTable::from_data_set(
            DataSet::parse_file_bytes(
                DataSetKind::File,
                format!("example.org example.org:s:{key}\n").as_bytes(),
                at.clone(),
            )
            .unwrap(),
        )
        .unwrap();
        let signing_table = SigningTable::from_data_set(
            DataSet::parse_file_bytes(DataSetKind::Refile, b"* %\n", Location::file("ST")).unwrap(),
        )
        .unwrap();
        let options = LoadOptions {
            require_safe_keys: false,
            signer_uid: None,
            ..LoadOptions::default()
        };
        let (keys, _, faults) = KeyStore::load(&key_table, options);
        assert!(faults.is_empty(), "{faults:?}");
        let mut policy = example_policy();
        policy.signing.domain_key = None;
        policy.signing.tables = Some(SigningTables {
            key_table,
            signing_table,
            keys,
            faults,
        });
        let d = decide(&policy, "127.0.0.1", &[], &[], &[("From", "a@example.org")]);
        assert_eq!(
            signers(d),
            Ok(vec![("example.org".into(), "s".into(), None)])
        );
        let d = decide(
            &policy,
            "127.0.0.1",
            &[],
            &[],
            &[("From", "a@example.museum")],
        );
        let Decision::KeyUnavailable { sender, error } = d else {
            panic!("expected a key error, got {d:?}")
        };
        assert_eq!(sender, "a@example.museum");
        assert!(
            matches!(&error, KeyProblem::NotInKeyTable { name, .. } if name == "example.museum"),
            "{error:?}"
        );
    }

    /// A policy from KeyTable and SigningTable text (a `file:` KeyTable,
    /// a `refile:` SigningTable), with the load-time faults.
    fn tables_policy(key_table: &str, signing_table: &str) -> Policy {
        let key_table = KeyTable::from_data_set(
            DataSet::parse_file_bytes(
                DataSetKind::File,
                key_table.as_bytes(),
                Location::file("KeyTable"),
            )
            .unwrap(),
        )
        .unwrap();
        let signing_table = SigningTable::from_data_set(
            DataSet::parse_file_bytes(
                DataSetKind::Refile,
                signing_table.as_bytes(),
                Location::file("SigningTable"),
            )
            .unwrap(),
        )
        .unwrap();
        let options = LoadOptions {
            require_safe_keys: false,
            signer_uid: None,
            ..LoadOptions::default()
        };
        let (keys, _, key_faults) = KeyStore::load(&key_table, options);
        let mut faults = key_table.faults();
        faults.extend(key_faults);
        let mut policy = example_policy();
        policy.signing.domain_key = None;
        policy.signing.tables = Some(SigningTables {
            key_table,
            signing_table,
            keys,
            faults,
        });
        policy
    }

    #[test]
    fn a_broken_key_refuses_only_the_mail_that_needs_it() {
        let key = concat!(env!("CARGO_MANIFEST_DIR"), "/keys-example/default.private");
        let policy = tables_policy(
            &format!(
                "good example.org:s:{key}\n\
                 malformed example.net\n\
                 absent example.com:s:/nonexistent/dkim/example.com.private\n"
            ),
            "*@example.org good\n*@example.net malformed\n*@example.com absent\n",
        );
        assert_eq!(policy.faults().len(), 2, "{:?}", policy.faults());
        let d = decide(&policy, "127.0.0.1", &[], &[], &[("From", "a@example.org")]);
        assert_eq!(
            signers(d),
            Ok(vec![("example.org".into(), "s".into(), None)])
        );
        let d = decide(&policy, "127.0.0.1", &[], &[], &[("From", "a@example.net")]);
        let Decision::KeyUnavailable { error, .. } = d else {
            panic!("expected a key error, got {d:?}")
        };
        assert!(
            matches!(&error, KeyProblem::MalformedEntry { name, .. } if name == "malformed"),
            "{error:?}"
        );
        assert!(error.to_string().contains("KeyTable:2: "), "{error}");
        let d = decide(&policy, "127.0.0.1", &[], &[], &[("From", "a@example.com")]);
        let Decision::KeyUnavailable { error, .. } = d else {
            panic!("expected a key error, got {d:?}")
        };
        assert!(matches!(&error, KeyProblem::Load(_)), "{error:?}");
    }

    #[test]
    fn macro_without_values_matches_when_defined_even_empty() {
        let mut policy = example_policy();
        policy.trust.internal_hosts = TableSource::Local(
            crate::tables::HostList::from_data_set(DataSet::from_csl(
                "192.0.2.1",
                &Location::file("conf"),
            ))
            .unwrap(),
        );
        policy.trust.macros = vec![MacroRule {
            name: "auth_authen".into(),
            values: vec![],
        }];
        let from = [("From", "a@example.com")];
        let d = decide(&policy, "203.0.113.1", &[("auth_authen", "")], &[], &from);
        assert_eq!(signers(d), signed_as("example.com"));
        let d = decide(&policy, "203.0.113.1", &[], &[], &from);
        assert!(signers(d).is_err(), "an undefined macro does not match");
    }

    #[test]
    fn any_matching_mta_name_or_macro_trusts_the_origin() {
        // OpenDKIM lets the last MacroList macro present decide (a bug);
        // we trust the origin when any of them matches.
        let mut policy = example_policy();
        policy.trust.internal_hosts = TableSource::Local(
            crate::tables::HostList::from_data_set(DataSet::from_csl(
                "192.0.2.1",
                &Location::file("conf"),
            ))
            .unwrap(),
        );
        policy.trust.mta_names = TableSource::Local(vec!["submission".into()]);
        policy.trust.macros = vec![
            MacroRule {
                name: "daemon_name".into(),
                values: vec!["MSA".into()],
            },
            MacroRule {
                name: "if_addr".into(),
                values: vec!["192.0.2.1".into()],
            },
        ];
        let from = [("From", "a@example.com")];
        for macros in [
            &[("daemon_name", "submission"), ("if_addr", "10.0.0.1")][..],
            &[("daemon_name", "MSA"), ("if_addr", "10.0.0.1")][..],
            &[("daemon_name", "smtpd"), ("if_addr", "192.0.2.1")][..],
        ] {
            let d = decide(&policy, "203.0.113.1", macros, &[], &from);
            assert_eq!(signers(d), signed_as("example.com"), "{macros:?}");
        }
        let d = decide(
            &policy,
            "203.0.113.1",
            &[("daemon_name", "smtpd")],
            &[],
            &from,
        );
        assert!(signers(d).is_err());
    }

    #[test]
    fn dont_sign_mail_to_matches_whole_addresses_only() {
        let mut policy = example_policy();
        policy.dont_sign_mail_to = Some(TableSource::Local(
            KeySet::from_data_set(&DataSet::from_csl(
                "nosign@example.net,example.edu",
                &Location::file("conf"),
            ))
            .unwrap(),
        ));
        let from = [("From", "a@example.com")];
        let d = decide(
            &policy,
            "127.0.0.1",
            &[],
            &["b@x.test", "NoSign@Example.NET"],
            &from,
        );
        assert!(signers(d).unwrap_err().contains("NoSign@Example.NET"));
        let d = decide(&policy, "127.0.0.1", &[], &["anyone@example.edu"], &from);
        assert_eq!(signers(d), signed_as("example.com"));
    }

    #[test]
    fn exempt_domain_is_matched_whole() {
        let mut policy = example_policy();
        policy.signing.subdomains = true;
        policy.exempt_domains = Some(TableSource::Local(DomainSet::from_names(["example.com"])));
        let d = decide(&policy, "127.0.0.1", &[], &[], &[("From", "a@Example.COM")]);
        assert!(signers(d).unwrap_err().contains("ExemptDomains"));
        let d = decide(
            &policy,
            "127.0.0.1",
            &[],
            &[],
            &[("From", "a@mail.example.com")],
        );
        assert!(signers(d).is_ok());
    }

    /// A set on a server that is never reached: its answers are given.
    fn server_set(role: &'static str) -> Arc<crate::remote::RemoteSet> {
        crate::remote::RemoteSet::unreached(role)
    }

    fn down(role: &'static str) -> Option<Listed> {
        Some(Listed::Unknown(DataSetProblem::NotLookedUp(role)))
    }

    #[test]
    fn internal_hosts_on_a_server_decide_by_its_answer() {
        let mut policy = example_policy();
        policy.trust.internal_hosts = TableSource::Remote(server_set("InternalHosts"));
        let from = [("From", "a@example.com")];
        let listed = Answers {
            internal: Some(Listed::Yes("192.0.2.0/24".into())),
            ..Answers::default()
        };
        let d = decide_with(&policy, "192.0.2.7", &[], &[], &from, Some(&listed));
        assert_eq!(signers(d), signed_as("example.com"));
        let not_listed = Answers {
            internal: Some(Listed::No),
            ..Answers::default()
        };
        let d = decide_with(&policy, "192.0.2.7", &[], &[], &from, Some(&not_listed));
        assert!(signers(d).unwrap_err().contains("not internal"));
    }

    #[test]
    fn domain_on_a_server_signs_as_the_key_it_answers() {
        let mut policy = example_policy();
        policy.signing.subdomains = true;
        let set = server_set("Domain");
        if let Some(key) = &mut policy.signing.domain_key {
            key.domains = TableSource::Remote(Arc::clone(&set));
        }
        let from = [("From", "a@mail.example.com")];
        let with = |listed: Listed| Answers {
            domain: Some(listed),
            ..Answers::default()
        };
        let (macros, recipients, headers) = (Macros(HashMap::new()), Vec::new(), headers(&from));
        let facts = MessageFacts {
            client_host: "client.test",
            client_ip: None,
            macros: &macros,
            recipients: &recipients,
            headers: &headers,
            remote: None,
            servers: None,
        };
        let asked = format!("{:?}", policy.server_queries(&facts).domain);
        assert!(
            asked.contains(r#"[["mail.example.com"], ["*"], ["example.com"], ["com"]]"#),
            "a Domain on a server is asked for every sender: {asked}"
        );
        // The sender's own domain, `*` (the sender's own), a parent (the
        // identity then names the parent); not listed; not known.
        let own = signed_as("mail.example.com");
        let parent = Ok(vec![(
            "example.com".to_string(),
            "default".to_string(),
            Some("@example.com".to_string()),
        )]);
        let unsigned = Err("sender a@mail.example.com is not in Domain".to_string());
        let held = Err(
            "data set unavailable: Domain: the lookup for this message did not run".to_string(),
        );
        for (answer, expected) in [
            (Listed::Yes("mail.example.com".into()), own.clone()),
            (Listed::Yes("*".into()), own),
            (Listed::Yes("example.com".into()), parent),
            (Listed::No, unsigned),
            (down("Domain").unwrap(), held),
        ] {
            let shown = format!("{answer:?}");
            let d = decide_with(&policy, "127.0.0.1", &[], &[], &from, Some(&with(answer)));
            assert_eq!(signers(d), expected, "{shown}");
        }
    }

    #[test]
    fn an_unanswered_set_tempfails_only_mail_it_could_change() {
        let mut policy = example_policy();
        policy.trust.internal_hosts = TableSource::Remote(server_set("InternalHosts"));
        let unknown = Answers {
            internal: down("InternalHosts"),
            ..Answers::default()
        };
        // Would be signed if internal: tempfailed, never guessed.
        let from = [("From", "a@example.com")];
        let d = decide_with(&policy, "192.0.2.7", &[], &[], &from, Some(&unknown));
        assert!(
            matches!(d, Decision::DataSetUnavailable { .. }),
            "{:?}",
            signers(d)
        );
        // Authenticated: trusted whatever the list says.
        let d = decide_with(
            &policy,
            "192.0.2.7",
            &[("auth_type", "PLAIN")],
            &[],
            &from,
            Some(&unknown),
        );
        assert_eq!(signers(d), signed_as("example.com"));
        // No key for the sender: not signed either way.
        let other = [("From", "a@example.org")];
        let d = decide_with(&policy, "192.0.2.7", &[], &[], &other, Some(&unknown));
        assert!(signers(d).unwrap_err().contains("not in Domain"));
        // No answers at all (the lookup did not run): the same tempfail.
        let d = decide_with(&policy, "192.0.2.7", &[], &[], &from, None);
        assert!(matches!(d, Decision::DataSetUnavailable { .. }));
    }

    #[test]
    fn exempt_domains_and_dont_sign_mail_to_on_a_server_stop_signing() {
        let mut policy = example_policy();
        policy.exempt_domains = Some(TableSource::Remote(server_set("ExemptDomains")));
        policy.dont_sign_mail_to = Some(TableSource::Remote(server_set("DontSignMailTo")));
        let from = [("From", "a@example.com")];
        let answers = |exempt: Listed, excluded: Listed| Answers {
            exempt: Some(exempt),
            excluded: Some(excluded),
            ..Answers::default()
        };
        let d = decide_with(
            &policy,
            "127.0.0.1",
            &[],
            &["b@x.test"],
            &from,
            Some(&answers(Listed::Yes("example.com".into()), Listed::No)),
        );
        assert!(signers(d).unwrap_err().contains("ExemptDomains"));
        let d = decide_with(
            &policy,
            "127.0.0.1",
            &[],
            &["b@x.test"],
            &from,
            Some(&answers(Listed::No, Listed::Yes("b@x.test".into()))),
        );
        assert!(signers(d).unwrap_err().contains("DontSignMailTo"));
        let d = decide_with(
            &policy,
            "127.0.0.1",
            &[],
            &["b@x.test"],
            &from,
            Some(&answers(Listed::No, Listed::No)),
        );
        assert_eq!(signers(d), signed_as("example.com"));
        // Exempt for sure beats a DontSignMailTo that did not answer.
        let d = decide_with(
            &policy,
            "127.0.0.1",
            &[],
            &["b@x.test"],
            &from,
            Some(&answers(
                Listed::Yes("example.com".into()),
                Listed::Unknown(DataSetProblem::NotLookedUp("DontSignMailTo")),
            )),
        );
        assert!(signers(d).unwrap_err().contains("ExemptDomains"));
    }

    #[test]
    fn queries_ask_each_server_set_for_this_message_keys() {
        let mut policy = example_policy();
        policy.trust.internal_hosts = TableSource::Remote(server_set("InternalHosts"));
        policy.dont_sign_mail_to = Some(TableSource::Remote(server_set("DontSignMailTo")));
        let macros = Macros(HashMap::new());
        let recipients = vec!["b@x.test".to_string(), "c@y.test".to_string()];
        let headers = headers(&[("From", "a@example.com")]);
        let facts = MessageFacts {
            client_host: "[192.0.2.7]",
            client_ip: Some("192.0.2.7".parse().unwrap()),
            macros: &macros,
            recipients: &recipients,
            headers: &headers,
            remote: None,
            servers: None,
        };
        assert!(policy.asks_servers());
        assert!(!example_policy().asks_servers());
        let queries = policy.server_queries(&facts);
        assert!(queries.peer.is_none() && queries.exempt.is_none() && queries.mta.is_none());
        let internal = format!("{:?}", queries.internal.unwrap());
        assert!(internal.contains("\"192.0.2.0/24\""), "{internal}");
        assert!(!internal.contains("\"[192.0.2.7]\", \"!."), "{internal}");
        let excluded = format!("{:?}", queries.excluded.unwrap());
        assert!(
            excluded.contains("[[\"b@x.test\"], [\"c@y.test\"]]"),
            "{excluded}"
        );
        // No key signs for example.org: nothing to ask.
        let foreign = self::headers(&[("From", "a@example.org")]);
        let facts = MessageFacts {
            headers: &foreign,
            ..facts
        };
        assert!(policy.server_queries(&facts).is_empty());
    }

    #[test]
    fn body_length_keys_are_opendkims_in_its_order() {
        assert_eq!(
            body_length_keys(&["bob@mx.example.org".to_string()]),
            [
                "bob@mx.example.org",
                "*@mx.example.org",
                "bob@.example.org",
                "*@.example.org",
                "bob@.org",
                "*@.org",
                "bob@*",
                "*"
            ]
        );
        assert!(body_length_keys(&["no-domain".to_string()]).is_empty());
    }

    #[test]
    fn atps_domains_and_body_length_db_on_a_server_shape_the_signature() {
        let mut policy = example_policy();
        policy.signature.atps_domains = Some(TableSource::Remote(server_set("ATPSDomains")));
        policy.signature.body_length_recipients =
            Some(TableSource::Remote(server_set("BodyLengthDB")));
        let from = [("From", "a@example.com")];
        let decide = |atps: Listed, body_length: Listed| {
            let answers = Answers {
                atps: Some(atps),
                body_length: Some(body_length),
                ..Answers::default()
            };
            decide_with(
                &policy,
                "127.0.0.1",
                &[],
                &["b@x.test"],
                &from,
                Some(&answers),
            )
        };
        let Decision::Sign { requests, .. } =
            decide(Listed::Yes("example.com".into()), Listed::Yes("*".into()))
        else {
            panic!("not signed")
        };
        assert!(requests[0].body_length);
        assert_eq!(requests[0].atps.as_deref(), Some("example.com"));
        let Decision::Sign { requests, .. } = decide(Listed::No, Listed::No) else {
            panic!("not signed")
        };
        assert!(!requests[0].body_length && requests[0].atps.is_none());
        // Unanswered: the signature would differ, so the message waits.
        assert!(matches!(
            decide(Listed::No, down("BodyLengthDB").unwrap()),
            Decision::DataSetUnavailable { .. }
        ));
        assert!(matches!(
            decide(down("ATPSDomains").unwrap(), Listed::No),
            Decision::DataSetUnavailable { .. }
        ));
    }
}
