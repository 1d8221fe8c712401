//! The data sets besides the KeyTable and SigningTable that the signing
//! decision asks about one key at a time (PeerList, InternalHosts, MTA,
//! ExemptDomains, DontSignMailTo, and for the signature ATPSDomains and
//! BodyLengthDB), when they are kept on a server (`dsn:`, `ldap:`). The
//! same questions serve the sets asked about several fields of a message
//! at once, each answered on its own ([`Query::each`]: ReplaceHeaders for
//! the fields ReplaceRules would rewrite, RemoveARFrom for the existing
//! Authentication-Results fields).
//!
//! OpenDKIM asks such a set per message, one key after another
//! (`dkimf_db_get`): for a host list every key `dkimf_checkhost` and
//! `dkimf_checkip` try (the host name, then each parent `.suffix`; the
//! address, `[address]`, then every `net/bits` network containing it, from
//! /32 down to /0 or /128 down to /0), each first as `!key` (a negation:
//! the walk stops, not listed) then as `key` (listed); for the others the
//! one key (the sender's domain, each envelope recipient, the
//! `{daemon_name}` macro) or, for BodyLengthDB, the keys
//! `dkimf_checkbldb` tries for each recipient. We ask the same keys, all of one message's keys
//! in one batch through the set's cache ([`RemoteSet::get_many`]), before
//! the decision at end of headers, so a cached answer costs no wait on a
//! server. A whole-set snapshot is not used: a host list of CIDR blocks
//! has no bounded key space to list, and a per-key answer keeps OpenDKIM's
//! meaning for every row, negations included.
//!
//! Where OpenDKIM takes a failed lookup for "not listed" (and signs or not
//! by that guess), an answer that cannot be had is [`Listed::Unknown`]: the
//! decision goes on with what it knows, and a message that would be signed
//! only if the unknown answer went one way is tempfailed (the On-* action
//! for internal errors), never signed or accepted unsigned by guess. This
//! module never logs.

use std::net::IpAddr;
use std::sync::Arc;

use crate::remote::{LookupError, RemoteSet};
use crate::tables::{dotted_suffixes, parent_domains};

/// What a set says about a message.
#[derive(Debug, Clone)]
pub enum Listed {
    /// Listed, by this key.
    Yes(String),
    No,
    /// The server could not answer and the answer is not cached.
    Unknown(DataSetProblem),
}

/// Why a set's answer for a message is not known.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DataSetProblem {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The lookup did not run before the decision (a bug).
    #[error("{0}: the lookup for this message did not run")]
    NotLookedUp(&'static str),
}

/// One set's question for one message: the walks of keys to ask, each
/// decided by its first key the set has.
#[derive(Debug, Clone)]
pub struct Query {
    set: Arc<RemoteSet>,
    walks: Vec<Vec<String>>,
    /// Keys written `!key` are negations (host lists).
    negations: bool,
}

impl Query {
    /// A host list's question for a client: its name (unless it is the
    /// MTA's `[address]` stand-in or empty) and its address.
    pub fn host(set: &Arc<RemoteSet>, host: &str, ip: Option<IpAddr>) -> Query {
        let mut walks = Vec::new();
        let host = host.to_ascii_lowercase();
        if !host.is_empty() && !host.starts_with('[') {
            walks.push(host_walk(&host));
        }
        if let Some(ip) = ip {
            walks.push(ip_walk(ip));
        }
        Query {
            set: Arc::clone(set),
            walks,
            negations: true,
        }
    }

    /// A question of exact keys: listed when the set has any of them.
    pub fn keys(set: &Arc<RemoteSet>, keys: impl IntoIterator<Item = String>) -> Query {
        Query {
            set: Arc::clone(set),
            walks: keys.into_iter().map(|k| vec![k]).collect(),
            negations: false,
        }
    }

    /// Domain's question for a sender's domain, in OpenDKIM's order
    /// (`mlfi_eoh`): the domain, `*`, then with SubDomains each parent
    /// (`a.b.example.com`: `b.example.com`, `example.com`, `com`). The
    /// answer is the key found first: `*` means the sender's own domain.
    pub fn domain(set: &Arc<RemoteSet>, domain: &str, subdomains: bool) -> Query {
        Query::keys(set, domain_keys(domain, subdomains))
    }

    /// A question asked for several things at once (the fields of one
    /// message), each its own walk of keys (no negations): see
    /// [`Query::ask_each`].
    pub fn each(set: &Arc<RemoteSet>, walks: Vec<Vec<String>>) -> Query {
        Query {
            set: Arc::clone(set),
            walks,
            negations: false,
        }
    }

    /// Asks the set (through its cache) and reads the answer.
    pub async fn ask(&self) -> Listed {
        match self.present().await {
            Ok(present) => first_listed(&self.walks, self.negations, |key| present.contains(key)),
            Err(error) => Listed::Unknown(error.into()),
        }
    }

    /// Asks the set (through its cache, all keys in one batch) and says,
    /// walk by walk, whether the set has any of its keys.
    pub async fn ask_each(&self) -> Result<Vec<bool>, DataSetProblem> {
        let present = self.present().await?;
        Ok(self
            .walks
            .iter()
            .map(|walk| walk.iter().any(|key| present.contains(key)))
            .collect())
    }

    /// The keys of every walk that the set has, asked in one batch.
    async fn present(&self) -> Result<Vec<String>, LookupError> {
        let mut keys: Vec<String> = Vec::new();
        for key in self.walks.iter().flatten() {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values = self.set.get_many(&keys).await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k)
            .collect())
    }
}

/// The answer, given which keys the set has: each walk is decided by its
/// first key present (a negation ends it unlisted); listed when a walk is.
fn first_listed(walks: &[Vec<String>], negations: bool, has: impl Fn(&String) -> bool) -> Listed {
    for walk in walks {
        for key in walk {
            if has(key) {
                if negations && key.starts_with('!') {
                    break;
                }
                return Listed::Yes(key.clone());
            }
        }
    }
    Listed::No
}

/// The keys Domain is asked for a sender's domain, in order.
fn domain_keys(domain: &str, subdomains: bool) -> Vec<String> {
    let mut keys = vec![domain.to_string(), "*".to_string()];
    if subdomains {
        keys.extend(parent_domains(domain).map(str::to_string));
    }
    keys
}

/// `!host`, `host`, then the same for each parent `.suffix`
/// (`dkimf_checkhost`).
fn host_walk(host: &str) -> Vec<String> {
    let mut walk = vec![format!("!{host}"), host.to_string()];
    for suffix in dotted_suffixes(host) {
        walk.push(format!("!{suffix}"));
        walk.push(suffix.to_string());
    }
    walk
}

/// The address, `[address]`, then each network written as its network
/// address and prefix length, longest prefix first, each negation first
/// (`dkimf_checkip`).
fn ip_walk(ip: IpAddr) -> Vec<String> {
    let mut walk = Vec::new();
    let mut both = |key: String| {
        walk.push(format!("!{key}"));
        walk.push(key);
    };
    both(ip.to_string());
    both(format!("[{ip}]"));
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            for prefix in (0..=32u32).rev() {
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                let net = std::net::Ipv4Addr::from(bits & mask);
                both(format!("{net}/{prefix}"));
                both(format!("[{net}]/{prefix}"));
            }
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            for prefix in (0..=128u32).rev() {
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                let net = std::net::Ipv6Addr::from(bits & mask);
                both(format!("{net}/{prefix}"));
                both(format!("[{net}]/{prefix}"));
            }
        }
    }
    walk
}

/// The questions for one message, one per set kept on a server.
#[derive(Debug, Clone, Default)]
pub struct Queries {
    /// Domain (the one KeyFile key's domains).
    pub domain: Option<Query>,
    pub peer: Option<Query>,
    pub internal: Option<Query>,
    pub mta: Option<Query>,
    pub exempt: Option<Query>,
    pub excluded: Option<Query>,
    pub atps: Option<Query>,
    pub body_length: Option<Query>,
}

/// The answers for one message; `None` for a set not asked (kept in a
/// file, or nothing to ask).
#[derive(Debug, Clone, Default)]
pub struct Answers {
    pub domain: Option<Listed>,
    pub peer: Option<Listed>,
    pub internal: Option<Listed>,
    pub mta: Option<Listed>,
    pub exempt: Option<Listed>,
    pub excluded: Option<Listed>,
    pub atps: Option<Listed>,
    pub body_length: Option<Listed>,
}

impl Queries {
    pub fn is_empty(&self) -> bool {
        self.domain.is_none()
            && self.peer.is_none()
            && self.internal.is_none()
            && self.mta.is_none()
            && self.exempt.is_none()
            && self.excluded.is_none()
            && self.atps.is_none()
            && self.body_length.is_none()
    }

    /// Asks every set at once.
    pub async fn ask(self) -> Answers {
        async fn one(query: Option<Query>) -> Option<Listed> {
            match query {
                Some(q) => Some(q.ask().await),
                None => None,
            }
        }
        let (domain, peer, internal, mta, exempt, excluded, atps, body_length) = tokio::join!(
            one(self.domain),
            one(self.peer),
            one(self.internal),
            one(self.mta),
            one(self.exempt),
            one(self.excluded),
            one(self.atps),
            one(self.body_length)
        );
        Answers {
            domain,
            peer,
            internal,
            mta,
            exempt,
            excluded,
            atps,
            body_length,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_is_asked_the_domain_then_star_then_each_parent() {
        assert_eq!(
            domain_keys("a.b.example.com", true),
            [
                "a.b.example.com",
                "*",
                "b.example.com",
                "example.com",
                "com"
            ]
        );
        assert_eq!(domain_keys("example.com", false), ["example.com", "*"]);
        let walks: Vec<Vec<String>> = domain_keys("a.example.com", true)
            .into_iter()
            .map(|k| vec![k])
            .collect();
        // The sender's own domain wins over `*`, and `*` over a parent.
        let listed =
            |rows: &[&str]| match first_listed(&walks, false, |k| rows.contains(&k.as_str())) {
                Listed::Yes(key) => key,
                other => format!("{other:?}"),
            };
        assert_eq!(listed(&["example.com", "a.example.com"]), "a.example.com");
        assert_eq!(listed(&["example.com", "*"]), "*");
        assert_eq!(listed(&["example.com"]), "example.com");
        assert_eq!(listed(&["other.example"]), "No");
    }

    #[test]
    fn a_host_walk_tries_each_parent_domain_negation_first() {
        assert_eq!(
            host_walk("mail.example.com"),
            [
                "!mail.example.com",
                "mail.example.com",
                "!.example.com",
                ".example.com",
                "!.com",
                ".com"
            ]
        );
    }

    #[test]
    fn an_ipv4_walk_names_every_network_by_its_network_address() {
        let walk = ip_walk("192.0.2.77".parse().unwrap());
        assert_eq!(
            &walk[..4],
            ["!192.0.2.77", "192.0.2.77", "![192.0.2.77]", "[192.0.2.77]"]
        );
        assert!(walk.contains(&"192.0.2.77/32".to_string()));
        assert!(walk.contains(&"192.0.2.64/26".to_string()));
        assert!(walk.contains(&"192.0.2.0/24".to_string()));
        assert!(!walk.contains(&"10.0.0.0/8".to_string()));
        assert!(walk.contains(&"192.0.0.0/8".to_string()));
        assert_eq!(walk.last().unwrap(), "[0.0.0.0]/0");
        // 4 for the address, 4 per prefix length 32..=0.
        assert_eq!(walk.len(), 4 + 4 * 33);
        let walk = ip_walk("2001:db8::1".parse().unwrap());
        assert!(walk.contains(&"2001:db8::/32".to_string()));
        assert_eq!(walk.len(), 4 + 4 * 129);
    }

    #[test]
    fn the_first_key_present_decides_and_a_negation_stops_the_walk() {
        let walks = vec![
            vec!["!a".to_string(), "a".to_string()],
            vec!["!b".to_string(), "b".to_string()],
        ];
        let decide =
            |present: &[&str]| first_listed(&walks, true, |key| present.contains(&key.as_str()));
        assert!(matches!(decide(&["a"]), Listed::Yes(k) if k == "a"));
        assert!(matches!(decide(&["!a", "a"]), Listed::No));
        // A negated host name does not stop the address walk (OpenDKIM
        // ORs dkimf_checkhost and dkimf_checkip).
        assert!(matches!(decide(&["!a", "b"]), Listed::Yes(k) if k == "b"));
    }

    #[test]
    fn exact_keys_are_never_read_as_negations() {
        let walks = vec![vec!["!odd@example.com".to_string()]];
        assert!(matches!(
            first_listed(&walks, false, |_| true),
            Listed::Yes(k) if k == "!odd@example.com"
        ));
        assert!(matches!(first_listed(&walks, true, |_| true), Listed::No));
    }
}
