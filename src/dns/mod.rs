//! DNS for verification: the TXT records that hold DKIM public keys,
//! looked up asynchronously, cached, and (with a trust anchor) checked
//! with DNSSEC.
//!
//! A [`Resolver`] answers [`Resolver::lookup_txt`] with a [`PendingTxt`]:
//! a cached answer at once, or a lookup started right then on the tokio
//! runtime, shared with every other caller asking for the same name while
//! it runs. The caller holds the handle and collects the [`TxtAnswer`]
//! when it needs it, so key lookups run while the message body is still
//! arriving, in parallel with each other.
//!
//! Where the answers come from (`Source`):
//! - hickory-resolver, with `/etc/resolv.conf` or OpenDKIM's
//!   `Nameservers` (IPs, and `IP:PORT` / `IP@PORT` for a server on another
//!   port), within `DNSTimeout`; with `TrustAnchorFile`, hickory validates
//!   DNSSEC and each answer says `secure`, `unprotected` or `bogus`;
//! - OpenDKIM's test aids `TestPublicKeys` and `TestDNSData`: fixed
//!   records, no network, no security word (as in OpenDKIM).
//!
//! The cache is bounded (oldest entries go first), keeps answers for their
//! TTL and "no such record" for the negative TTL of the zone's SOA, and
//! never keeps failures (a timeout is retried by the next message).
//!
//! This module must never block a thread waiting for DNS, never parse what
//! the records mean (that is the verifier's job), and never log per query
//! (the verifier's log line says what the lookup gave).

mod cache;
pub mod metrics;
mod test_records;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use tokio::sync::watch;

pub use test_records::{TestRecords, TestRecordsError};

use cache::Cache;

/// OpenDKIM's DNSTimeout default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers kept by default. A key record with its name is well under a
/// kilobyte, so the cache stays under about 10 MB.
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;

/// Longest time an answer is kept, whatever its TTL says.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long "no such record" is kept when the answer carried no SOA.
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(60);

/// Longest time "no such record" is kept.
const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(3600);

/// How verification reaches DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// OpenDKIM's Nameservers; `/etc/resolv.conf` when empty.
    pub nameservers: Vec<SocketAddr>,
    /// OpenDKIM's DNSTimeout: the longest a key lookup may take.
    pub timeout: Duration,
    /// OpenDKIM's TrustAnchorFile: validate DNSSEC from these keys.
    pub trust_anchor_file: Option<PathBuf>,
    /// OpenDKIM's TestPublicKeys / TestDNSData: answer from these records
    /// instead of DNS.
    pub test_records: Option<Arc<TestRecords>>,
    /// Answers the cache holds at most.
    pub cache_entries: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            nameservers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            trust_anchor_file: None,
            test_records: None,
            cache_entries: DEFAULT_CACHE_ENTRIES,
        }
    }
}

/// A `Nameservers` entry: `IP`, `IP:PORT` (`[IPv6]:PORT`) or unbound's
/// `IP@PORT`, which OpenDKIM passes to libunbound as it is.
pub fn parse_nameserver(entry: &str) -> Option<SocketAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr);
    }
    let (ip, port) = entry.rsplit_once('@')?;
    Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
}

/// Why the resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    #[error("cannot read the system resolver configuration (/etc/resolv.conf): {0}")]
    SystemConfig(String),
    #[error("TrustAnchorFile {path}: {reason}")]
    TrustAnchor { path: PathBuf, reason: String },
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

/// What DNSSEC said about an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Not checked (no TrustAnchorFile, or test records).
    Unchecked,
    /// A chain of signatures from the trust anchor covers the answer.
    Secure,
    /// The answer comes from a zone proven unsigned ("unprotected").
    Insecure,
    /// The signatures should be there and do not check out.
    Bogus,
}

impl Security {
    /// The word OpenDKIM (built with libunbound) puts in the
    /// Authentication-Results comment, if any.
    pub fn word(self) -> Option<&'static str> {
        match self {
            Security::Unchecked => None,
            Security::Secure => Some("secure"),
            Security::Insecure => Some("unprotected"),
            Security::Bogus => Some("bogus"),
        }
    }
}

/// A lookup that did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsFailure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the server answered {0}")]
    Server(String),
    #[error("{0}")]
    Network(String),
    #[error("the answer failed DNSSEC validation")]
    Bogus,
    #[error("no async runtime to run the lookup on")]
    NoRuntime,
    #[error("{0:?} is not a valid DNS name")]
    BadName(String),
}

impl DnsFailure {
    /// Whether trying again later may give an answer.
    pub fn is_temporary(&self) -> bool {
        !matches!(self, DnsFailure::BadName(_))
    }
}

/// What a TXT lookup gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtOutcome {
    /// The records, each with its strings joined.
    Records(Vec<Vec<u8>>),
    /// NXDOMAIN.
    NoSuchName,
    /// The name exists but has no TXT record.
    NoRecords,
    Failed(DnsFailure),
}

/// The answer to one TXT lookup, with its DNSSEC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxtAnswer {
    pub outcome: TxtOutcome,
    pub security: Security,
}

impl TxtAnswer {
    fn failed(failure: DnsFailure) -> TxtAnswer {
        TxtAnswer {
            outcome: TxtOutcome::Failed(failure),
            security: Security::Unchecked,
        }
    }
}

/// A TXT lookup in progress or done; [`PendingTxt::answer`] waits for it,
/// [`PendingTxt::now`] takes it if it is there.
#[derive(Debug, Clone)]
pub struct PendingTxt(watch::Receiver<Option<Arc<TxtAnswer>>>);

impl PendingTxt {
    fn ready(answer: Arc<TxtAnswer>) -> PendingTxt {
        let (_, receiver) = watch::channel(Some(answer));
        PendingTxt(receiver)
    }

    /// The answer, once the lookup is done. A lookup whose task went away
    /// without answering (the runtime shut down) counts as failed.
    pub async fn answer(mut self) -> Arc<TxtAnswer> {
        match self.0.wait_for(Option::is_some).await {
            Ok(answer) => answer.clone().expect("waited for Some"),
            Err(_) => Arc::new(TxtAnswer::failed(DnsFailure::Network(
                "the lookup was abandoned".into(),
            ))),
        }
    }

    /// The answer if the lookup is done.
    pub fn now(&self) -> Option<Arc<TxtAnswer>> {
        self.0.borrow().clone()
    }
}

/// Where answers come from.
enum Source {
    Dns {
        resolver: Box<hickory_resolver::Resolver<TokioRuntimeProvider>>,
        validating: bool,
    },
    Test(Arc<TestRecords>),
}

/// The verifier's DNS: see the module documentation.
pub struct Resolver {
    source: Source,
    timeout: Duration,
    cache: Mutex<Cache>,
    in_flight: Mutex<HashMap<String, watch::Receiver<Option<Arc<TxtAnswer>>>>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver for `settings`. Reads `/etc/resolv.conf` (without
    /// Nameservers) and the trust anchor file now; opens no socket.
    pub fn new(settings: &DnsSettings) -> Result<Resolver, DnsSetupError> {
        let source = match &settings.test_records {
            Some(records) => Source::Test(Arc::clone(records)),
            None => {
                let (config, mut options) =
                    servers_config(&settings.nameservers).map_err(DnsSetupError::SystemConfig)?;
                // Each try gets half the budget; the budget itself is
                // enforced around the whole lookup.
                options.timeout = (settings.timeout / 2).max(Duration::from_millis(200));
                options.attempts = 2;
                // Our cache keeps the key records; hickory's keeps what
                // DNSSEC validation needs (DNSKEY, DS).
                options.cache_size = 256;
                options.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
                options.ndots = 0;
                let mut builder = hickory_resolver::Resolver::builder_with_config(
                    config,
                    TokioRuntimeProvider::default(),
                )
                .with_options(options);
                let validating = settings.trust_anchor_file.is_some();
                if let Some(path) = &settings.trust_anchor_file {
                    builder = builder.with_trust_anchor(Arc::new(read_trust_anchors(path)?));
                }
                let resolver = builder
                    .build()
                    .map_err(|e| DnsSetupError::Resolver(e.to_string()))?;
                Source::Dns {
                    resolver: Box::new(resolver),
                    validating,
                }
            }
        };
        Ok(Resolver {
            source,
            timeout: settings.timeout,
            cache: Mutex::new(Cache::new(settings.cache_entries)),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// The resolver for `settings`, shared with every configuration (a
    /// reload, say) that has the same settings, so the cache survives a
    /// reload and a resolver is built once (hickory reads the system's TLS
    /// roots when it builds one, some milliseconds). The last few settings
    /// used keep their resolver even when no configuration holds it.
    pub fn shared(settings: &DnsSettings) -> Result<Arc<Resolver>, DnsSetupError> {
        const KEPT: usize = 4;
        static SHARED: Mutex<Vec<(DnsSettings, Arc<Resolver>)>> = Mutex::new(Vec::new());
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = shared.iter().position(|(s, _)| s == settings) {
            let entry = shared.remove(i);
            let resolver = Arc::clone(&entry.1);
            shared.push(entry);
            return Ok(resolver);
        }
        let resolver = Arc::new(Resolver::new(settings)?);
        if shared.len() >= KEPT {
            shared.remove(0);
        }
        shared.push((settings.clone(), Arc::clone(&resolver)));
        Ok(resolver)
    }

    /// Whether answers carry a DNSSEC status.
    pub fn validates(&self) -> bool {
        matches!(
            self.source,
            Source::Dns {
                validating: true,
                ..
            }
        )
    }

    /// Start looking up the TXT records of `name` (or take them from the
    /// cache, or join a lookup of the same name already running). Needs a
    /// tokio runtime for a lookup that goes to the network; without one the
    /// answer is a failure.
    pub fn lookup_txt(self: &Arc<Self>, name: &str) -> PendingTxt {
        let key = normalize(name);
        let metrics = metrics::dns();
        if let Source::Test(records) = &self.source {
            metrics.queries.get_or_create(&metrics::label("test")).inc();
            return PendingTxt::ready(Arc::new(records.answer(&key)));
        }
        if let Some(answer) = self.lock_cache().get(&key, Instant::now()) {
            metrics.cache_hits.inc();
            return PendingTxt::ready(answer);
        }
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(running) = in_flight.get(&key) {
            metrics.shared_lookups.inc();
            return PendingTxt(running.clone());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return PendingTxt::ready(Arc::new(TxtAnswer::failed(DnsFailure::NoRuntime)));
        };
        let (sender, receiver) = watch::channel(None);
        in_flight.insert(key.clone(), receiver.clone());
        drop(in_flight);
        let this = Arc::clone(self);
        runtime.spawn(async move {
            let started = Instant::now();
            let (answer, ttl) = this.query(&key).await;
            let metrics = metrics::dns();
            metrics
                .queries
                .get_or_create(&metrics::label(outcome_label(&answer)))
                .inc();
            metrics
                .query_duration
                .observe(started.elapsed().as_secs_f64());
            let answer = Arc::new(answer);
            if let Some(ttl) = ttl {
                this.lock_cache()
                    .insert(key.clone(), Arc::clone(&answer), Instant::now() + ttl);
            }
            // Out of the in-flight list before answering, so that a caller
            // arriving now finds the cache.
            this.in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&key);
            let _ = sender.send(Some(answer));
        });
        PendingTxt(receiver)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One lookup on the network, and how long its answer may be kept.
    async fn query(&self, name: &str) -> (TxtAnswer, Option<Duration>) {
        let Source::Dns {
            resolver,
            validating,
        } = &self.source
        else {
            unreachable!("test records are answered without a query")
        };
        let lookup = tokio::time::timeout(self.timeout, resolver.lookup(name, RecordType::TXT));
        let Ok(result) = lookup.await else {
            return (TxtAnswer::failed(DnsFailure::Timeout(self.timeout)), None);
        };
        match result {
            Ok(lookup) => {
                let mut records = Vec::new();
                let mut ttl = MAX_TTL;
                let mut proofs = Vec::new();
                for record in lookup.answers() {
                    if let RData::TXT(txt) = &record.data {
                        records.push(
                            txt.txt_data
                                .iter()
                                .flat_map(|s| s.iter().copied())
                                .collect(),
                        );
                        ttl = ttl.min(Duration::from_secs(u64::from(record.ttl)));
                        proofs.push(record.proof);
                    }
                }
                let security = if *validating {
                    combined_security(&proofs)
                } else {
                    Security::Unchecked
                };
                let outcome = if records.is_empty() {
                    TxtOutcome::NoRecords
                } else {
                    TxtOutcome::Records(records)
                };
                let keep = (security != Security::Bogus && !ttl.is_zero()).then_some(ttl);
                (TxtAnswer { outcome, security }, keep)
            }
            Err(error) => negative_or_failure(error, *validating),
        }
    }
}

/// Names compare without regard to case, and always as absolute names (no
/// search list).
fn normalize(name: &str) -> String {
    let mut key = name.trim().to_ascii_lowercase();
    if !key.ends_with('.') {
        key.push('.');
    }
    key
}

/// The status of an RRset from the proofs of its records: bogus if any is,
/// secure if all are, unprotected otherwise (libunbound's reading:
/// neither secure nor bogus is insecure).
fn combined_security(proofs: &[Proof]) -> Security {
    if proofs.contains(&Proof::Bogus) {
        Security::Bogus
    } else if !proofs.is_empty() && proofs.iter().all(|p| *p == Proof::Secure) {
        Security::Secure
    } else {
        Security::Insecure
    }
}

fn negative_or_failure(error: NetError, validating: bool) -> (TxtAnswer, Option<Duration>) {
    let unchecked = |outcome| TxtAnswer {
        outcome,
        security: Security::Unchecked,
    };
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => {
            let ttl = no_records
                .negative_ttl
                .map(|s| Duration::from_secs(u64::from(s)))
                .unwrap_or(DEFAULT_NEGATIVE_TTL)
                .min(MAX_NEGATIVE_TTL);
            let outcome = if no_records.response_code == ResponseCode::NXDomain {
                TxtOutcome::NoSuchName
            } else {
                TxtOutcome::NoRecords
            };
            let security = if validating {
                Security::Insecure
            } else {
                Security::Unchecked
            };
            (TxtAnswer { outcome, security }, Some(ttl))
        }
        NetError::Dns(DnsError::Nsec {
            response, proof, ..
        }) => {
            let outcome = if response.response_code == ResponseCode::NXDomain {
                TxtOutcome::NoSuchName
            } else {
                TxtOutcome::NoRecords
            };
            let security = match proof {
                Proof::Secure => Security::Secure,
                Proof::Bogus => Security::Bogus,
                _ => Security::Insecure,
            };
            let keep = (security != Security::Bogus).then_some(DEFAULT_NEGATIVE_TTL);
            (TxtAnswer { outcome, security }, keep)
        }
        NetError::Dns(DnsError::DnssecBogus) => (
            TxtAnswer {
                outcome: TxtOutcome::Failed(DnsFailure::Bogus),
                security: Security::Bogus,
            },
            None,
        ),
        NetError::Dns(DnsError::ResponseCode(code)) => (
            unchecked(TxtOutcome::Failed(DnsFailure::Server(code.to_string()))),
            None,
        ),
        NetError::Timeout => (
            unchecked(TxtOutcome::Failed(DnsFailure::Network(
                "the server did not answer".into(),
            ))),
            None,
        ),
        other => (
            unchecked(TxtOutcome::Failed(DnsFailure::Network(other.to_string()))),
            None,
        ),
    }
}

/// A short label for the queries metric.
fn outcome_label(answer: &TxtAnswer) -> &'static str {
    match &answer.outcome {
        TxtOutcome::Records(_) => "answer",
        TxtOutcome::NoSuchName => "nxdomain",
        TxtOutcome::NoRecords => "nodata",
        TxtOutcome::Failed(DnsFailure::Timeout(_)) => "timeout",
        TxtOutcome::Failed(DnsFailure::Bogus) => "bogus",
        TxtOutcome::Failed(_) => "error",
    }
}

/// A TrustAnchorFile: DNSKEY records in zone file form (as
/// `/usr/share/dns/root.key` or `unbound-anchor` write them). Comment and
/// blank lines are skipped; a DS record is refused with the fix, since
/// hickory anchors on keys.
fn read_trust_anchors(path: &Path) -> Result<TrustAnchors, DnsSetupError> {
    let error = |reason: String| DnsSetupError::TrustAnchor {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let mut keys = String::new();
    for (n, line) in text.lines().enumerate() {
        let content = line.split(';').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let words: Vec<&str> = content.split_whitespace().collect();
        if words.iter().any(|w| w.eq_ignore_ascii_case("DS")) {
            return Err(error(format!(
                "line {}: a DS record; give the zone's DNSKEY records instead \
                 (`dig +noall +answer DNSKEY <zone>`), as /usr/share/dns/root.key has them",
                n + 1
            )));
        }
        if !words.iter().any(|w| w.eq_ignore_ascii_case("DNSKEY")) {
            return Err(error(format!(
                "line {}: not a DNSKEY record: {content}",
                n + 1
            )));
        }
        keys.push_str(content);
        keys.push('\n');
    }
    if keys.is_empty() {
        return Err(error("no DNSKEY record in the file".into()));
    }
    keys.parse::<TrustAnchors>()
        .map_err(|e| error(e.to_string()))
}

/// Where hickory sends queries: the `nameservers` given (OpenDKIM's
/// Nameservers, each on its own port), or with none the system's
/// `/etc/resolv.conf`, with hickory's default options for the caller to
/// adjust. The error is `/etc/resolv.conf`'s problem, in words.
pub fn servers_config(
    nameservers: &[SocketAddr],
) -> Result<(ResolverConfig, ResolverOpts), String> {
    if nameservers.is_empty() {
        return hickory_resolver::system_conf::read_system_conf().map_err(|e| e.to_string());
    }
    let servers = nameservers
        .iter()
        .map(|addr| {
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut server.connections {
                connection.port = addr.port();
            }
            server
        })
        .collect();
    Ok((
        ResolverConfig::from_name_servers(servers),
        ResolverOpts::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_entries_take_a_port_three_ways() {
        assert_eq!(
            parse_nameserver("192.0.2.1"),
            Some("192.0.2.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_nameserver(" 127.0.0.1:5353 "),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            parse_nameserver("127.0.0.1@5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(parse_nameserver("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(
            parse_nameserver("[::1]:5353"),
            Some("[::1]:5353".parse().unwrap())
        );
        assert_eq!(parse_nameserver("ns.example.com"), None);
        assert_eq!(parse_nameserver("127.0.0.1@port"), None);
    }

    #[test]
    fn names_are_lower_case_and_absolute() {
        assert_eq!(
            normalize("Sel._domainkey.Example.COM"),
            "sel._domainkey.example.com."
        );
        assert_eq!(normalize("a.b."), "a.b.");
    }

    #[test]
    fn security_of_an_rrset() {
        assert_eq!(
            combined_security(&[Proof::Secure, Proof::Secure]),
            Security::Secure
        );
        assert_eq!(
            combined_security(&[Proof::Secure, Proof::Insecure]),
            Security::Insecure
        );
        assert_eq!(
            combined_security(&[Proof::Insecure, Proof::Bogus]),
            Security::Bogus
        );
        assert_eq!(
            combined_security(&[Proof::Indeterminate]),
            Security::Insecure
        );
    }

    #[test]
    fn a_ds_trust_anchor_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        std::fs::write(
            &path,
            ". 172800 IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n",
        )
        .unwrap();
        let error = read_trust_anchors(&path).err().unwrap().to_string();
        assert!(error.contains("line 1: a DS record"), "{error}");
        std::fs::write(&path, "; only a comment\n").unwrap();
        let error = read_trust_anchors(&path).err().unwrap().to_string();
        assert!(error.contains("no DNSKEY"), "{error}");
    }

    #[test]
    fn debians_root_key_file_loads() {
        let path = Path::new("/usr/share/dns/root.key");
        if path.exists() {
            read_trust_anchors(path).unwrap();
        }
    }

    #[test]
    fn equal_settings_share_one_resolver_while_it_lives() {
        let settings = DnsSettings {
            nameservers: vec!["127.0.0.1:9".parse().unwrap()],
            timeout: Duration::from_millis(1234),
            ..DnsSettings::default()
        };
        let a = Resolver::shared(&settings).unwrap();
        let b = Resolver::shared(&settings).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let other = Resolver::shared(&DnsSettings {
            timeout: Duration::from_millis(999),
            ..settings.clone()
        })
        .unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
    }

    #[test]
    fn test_records_answer_without_a_runtime() {
        let records = TestRecords::from_lines(
            "default._domainkey.example.com v=DKIM1; k=rsa; p=MIIB\n",
            "TestPublicKeys",
        )
        .unwrap();
        let resolver = Arc::new(
            Resolver::new(&DnsSettings {
                test_records: Some(Arc::new(records)),
                ..DnsSettings::default()
            })
            .unwrap(),
        );
        let answer = resolver
            .lookup_txt("Default._domainkey.example.com.")
            .now()
            .unwrap();
        assert_eq!(
            answer.outcome,
            TxtOutcome::Records(vec![b"v=DKIM1; k=rsa; p=MIIB".to_vec()])
        );
        assert_eq!(answer.security, Security::Unchecked);
        let missing = resolver.lookup_txt("x._domainkey.example.com").now();
        assert_eq!(missing.unwrap().outcome, TxtOutcome::NoSuchName);
    }

    #[test]
    fn without_a_runtime_a_network_lookup_fails_instead_of_blocking() {
        let resolver = Arc::new(
            Resolver::new(&DnsSettings {
                nameservers: vec!["127.0.0.1:9".parse().unwrap()],
                ..DnsSettings::default()
            })
            .unwrap(),
        );
        let answer = resolver.lookup_txt("a._domainkey.example.com").now();
        assert_eq!(
            answer.unwrap().outcome,
            TxtOutcome::Failed(DnsFailure::NoRuntime)
        );
    }
}
