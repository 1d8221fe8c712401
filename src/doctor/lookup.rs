//! The DNS questions `doctor` asks: TXT (with the strings of each record
//! kept apart, since how a record is split is one of the faults it names),
//! MX, CNAME, A and AAAA, PTR.
//!
//! Not [`crate::dns::Resolver`]: that one answers TXT only, joins the
//! strings and caches for the milter's sake. This is a plain
//! hickory-resolver over the same nameserver settings, with no cache
//! across runs. Every query is bounded by [`Lookup::timeout`], and a
//! failure (timeout, SERVFAIL, REFUSED, network) comes back as a
//! [`DnsProblem`], never as "no record". This module never judges records.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

/// What a query gave when the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Records(Vec<T>),
    /// The name exists, without records of that type (NODATA).
    NoRecords,
    /// NXDOMAIN.
    NoSuchName,
}

impl<T> Answer<T> {
    /// The records; empty for NODATA and NXDOMAIN.
    pub fn records(&self) -> &[T] {
        match self {
            Answer::Records(records) => records,
            Answer::NoRecords | Answer::NoSuchName => &[],
        }
    }

    pub fn into_records(self) -> Vec<T> {
        match self {
            Answer::Records(records) => records,
            Answer::NoRecords | Answer::NoSuchName => Vec::new(),
        }
    }

    /// Whether the answer is empty (a "void lookup" in RFC 7208's words).
    pub fn is_void(&self) -> bool {
        self.records().is_empty()
    }
}

/// A query that got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsProblem {
    #[error("DNS timeout: no answer for {name} {kind} within {limit:?}")]
    Timeout {
        name: String,
        kind: RecordType,
        limit: Duration,
    },
    #[error("DNS error: the server answered {code} for {name} {kind}")]
    Server {
        name: String,
        kind: RecordType,
        code: String,
    },
    #[error("DNS error asking for {name} {kind}: {detail}")]
    Network {
        name: String,
        kind: RecordType,
        detail: String,
    },
}

/// Why the resolver could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct LookupSetupError(String);

/// A TXT record: its strings, as served.
pub type TxtStrings = Vec<Vec<u8>>;

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mx {
    pub preference: u16,
    /// The exchange, without the trailing dot; empty for the root (null MX).
    pub exchange: String,
}

/// A resolver with a bound on every query.
pub struct Lookup {
    resolver: hickory_resolver::TokioResolver,
    timeout: Duration,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The hickory configuration for `nameservers` (the system's
/// `/etc/resolv.conf` when empty), each query tried once within `timeout`.
pub fn resolver_config(
    nameservers: &[SocketAddr],
    timeout: Duration,
) -> Result<(ResolverConfig, ResolverOpts), LookupSetupError> {
    let (config, mut options) = crate::dns::servers_config(nameservers)
        .map_err(|e| LookupSetupError(format!("/etc/resolv.conf: {e}")))?;
    options.timeout = timeout;
    options.attempts = 1;
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.ndots = 0;
    Ok((config, options))
}

impl Lookup {
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Lookup, LookupSetupError> {
        let (config, options) = resolver_config(nameservers, timeout)?;
        let resolver = hickory_resolver::Resolver::builder_with_config(
            config,
            TokioRuntimeProvider::default(),
        )
        .with_options(options)
        .build()
        .map_err(|e| LookupSetupError(e.to_string()))?;
        Ok(Lookup { resolver, timeout })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn query(&self, name: &str, kind: RecordType) -> Result<Answer<RData>, DnsProblem> {
        let absolute = absolute(name);
        let asked = tokio::time::timeout(self.timeout, self.resolver.lookup(absolute, kind)).await;
        let timeout = || DnsProblem::Timeout {
            name: name.to_string(),
            kind,
            limit: self.timeout,
        };
        let Ok(result) = asked else {
            return Err(timeout());
        };
        match result {
            Ok(lookup) => {
                let records: Vec<RData> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == kind)
                    .map(|r| r.data.clone())
                    .collect();
                Ok(if records.is_empty() {
                    Answer::NoRecords
                } else {
                    Answer::Records(records)
                })
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(no_records))) => {
                Ok(if no_records.response_code == ResponseCode::NXDomain {
                    Answer::NoSuchName
                } else {
                    Answer::NoRecords
                })
            }
            Err(NetError::Dns(DnsError::ResponseCode(code))) => Err(DnsProblem::Server {
                name: name.to_string(),
                kind,
                code: code.to_string(),
            }),
            Err(NetError::Timeout) => Err(timeout()),
            Err(other) => Err(DnsProblem::Network {
                name: name.to_string(),
                kind,
                detail: other.to_string(),
            }),
        }
    }

    /// The TXT records at `name`, each as its strings.
    pub async fn txt(&self, name: &str) -> Result<Answer<TxtStrings>, DnsProblem> {
        Ok(map(
            self.query(name, RecordType::TXT).await?,
            |data| match data {
                RData::TXT(txt) => Some(txt.txt_data.iter().map(|s| s.to_vec()).collect()),
                _ => None,
            },
        ))
    }

    pub async fn mx(&self, name: &str) -> Result<Answer<Mx>, DnsProblem> {
        Ok(map(
            self.query(name, RecordType::MX).await?,
            |data| match data {
                RData::MX(mx) => Some(Mx {
                    preference: mx.preference,
                    exchange: relative_text(&mx.exchange),
                }),
                _ => None,
            },
        ))
    }

    /// The CNAME at `name`, if it has one.
    pub async fn cname(&self, name: &str) -> Result<Option<String>, DnsProblem> {
        let answer = self.query(name, RecordType::CNAME).await?;
        Ok(answer.records().iter().find_map(|data| match data {
            RData::CNAME(target) => Some(relative_text(&target.0)),
            _ => None,
        }))
    }

    /// The A and AAAA records of `name` together: `Records` when either
    /// has some, `NoSuchName` when the name does not exist.
    pub async fn addresses(&self, name: &str) -> Result<Answer<IpAddr>, DnsProblem> {
        let v4 = self.query(name, RecordType::A).await?;
        if v4 == Answer::NoSuchName {
            return Ok(Answer::NoSuchName);
        }
        let v6 = self.query(name, RecordType::AAAA).await?;
        let mut addresses: Vec<IpAddr> = v4
            .records()
            .iter()
            .chain(v6.records())
            .filter_map(|data| match data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        addresses.dedup();
        Ok(if addresses.is_empty() {
            Answer::NoRecords
        } else {
            Answer::Records(addresses)
        })
    }

    /// The PTR names of `ip`, without trailing dots.
    pub async fn ptr(&self, ip: IpAddr) -> Result<Answer<String>, DnsProblem> {
        let name = reverse_name(ip);
        Ok(map(
            self.query(&name, RecordType::PTR).await?,
            |data| match data {
                RData::PTR(ptr) => Some(relative_text(&ptr.0)),
                _ => None,
            },
        ))
    }
}

fn map<T>(answer: Answer<RData>, f: impl Fn(&RData) -> Option<T>) -> Answer<T> {
    match answer {
        Answer::Records(records) => {
            let mapped: Vec<T> = records.iter().filter_map(f).collect();
            if mapped.is_empty() {
                Answer::NoRecords
            } else {
                Answer::Records(mapped)
            }
        }
        Answer::NoRecords => Answer::NoRecords,
        Answer::NoSuchName => Answer::NoSuchName,
    }
}

/// `name` with a trailing dot: never searched in a search list.
fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// A name as text, lower case, without the trailing dot.
fn relative_text(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// `d.c.b.a.in-addr.arpa` or the nibbles under `ip6.arpa`, without the
/// trailing dot: the name a PTR record of `ip` lives at.
pub fn reverse_name(ip: IpAddr) -> String {
    relative_text(&Name::from(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_follow_rfc_1035_and_rfc_3596() {
        assert_eq!(
            reverse_name("192.0.2.10".parse().unwrap()),
            "10.2.0.192.in-addr.arpa"
        );
        assert!(reverse_name("2001:db8::1".parse().unwrap()).starts_with(
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        ));
    }
}
