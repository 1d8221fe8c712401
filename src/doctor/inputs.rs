//! What `doctor` checks, and where each input came from: the domains and
//! selectors of the configuration (every KeyTable entry, or Domain +
//! Selector) or `--domain`; the sending IPs from `--ip`, or the host's
//! global addresses and Postfix's `smtp_bind_address`; the HELO name from
//! `--helo` or Postfix's `myhostname`.
//!
//! `postconf` is asked only when it is installed, and never required.
//! This module reads the configuration already loaded and never touches
//! DNS.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use super::{DomainInput, Inputs, QUERY_TIMEOUT, RUN_BOUND, SelectorInput, SignedFrom, Sourced};
use crate::config::Config;
use crate::keys::PrivateKey;
use crate::policy::{Signing, TableSource};
use crate::postconf::Postconf;
use crate::tables::{KeyDomain, KeyTable, ResolvedKeySource, SigningTable};

/// What the command line says.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--domain`: check these domains only.
    pub domains: Vec<String>,
    /// `--ip`: the sending IPs (no detection).
    pub ips: Vec<IpAddr>,
    /// `--helo`.
    pub helo: Option<String>,
    /// `--nameserver`: ask these servers; the system's resolver otherwise.
    pub nameservers: Vec<SocketAddr>,
    /// `--postfix-config`: the directory `postconf -c` reads.
    pub postfix_config: Option<PathBuf>,
}

/// The inputs for `config` and the command line's `request`.
pub fn gather(config: &Config, request: &Request) -> Inputs {
    let postfix = Postconf::find(request.postfix_config.as_deref());
    let ips = if request.ips.is_empty() {
        detected_ips(postfix.as_ref())
    } else {
        request
            .ips
            .iter()
            .map(|ip| Sourced {
                value: *ip,
                source: "--ip".to_string(),
            })
            .collect()
    };
    let helo = match &request.helo {
        Some(name) => Some(Sourced {
            value: name.trim_end_matches('.').to_ascii_lowercase(),
            source: "--helo".to_string(),
        }),
        None => postfix.as_ref().and_then(|p| {
            let name = p.get("myhostname")?;
            Some(Sourced {
                value: name.trim_end_matches('.').to_ascii_lowercase(),
                source: "postconf myhostname".to_string(),
            })
        }),
    };
    Inputs {
        domains: domains(&config.policy.signing, &request.domains),
        ips,
        helo,
        nameservers: request.nameservers.clone(),
        query_timeout: QUERY_TIMEOUT,
        run_bound: RUN_BOUND,
    }
}

/// The domains to check, with their selectors and the From domains their
/// DMARC record governs.
fn domains(signing: &Signing, only: &[String]) -> Vec<DomainInput> {
    let only: Vec<String> = only
        .iter()
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let mut found: BTreeMap<String, DomainInput> = BTreeMap::new();
    if let Some(key) = &signing.domain_key {
        // A Domain kept on a server cannot be listed: the domains asked
        // for with --domain are checked with its key.
        let (mut names, source): (Vec<&str>, &str) = match &key.domains {
            TableSource::Local(domains) => (domains.names().collect(), "Domain"),
            TableSource::Remote(_) => (
                only.iter().map(String::as_str).collect(),
                "--domain (Domain is kept on a server)",
            ),
        };
        names.sort_unstable();
        for name in names {
            if let Some(input) = entry(&mut found, &only, name, source) {
                input.selectors.push(SelectorInput {
                    selector: key.selector.clone(),
                    key: key
                        .key
                        .as_ref()
                        .map(Arc::clone)
                        .map_err(ToString::to_string),
                    key_origin: key.key_file.display().to_string(),
                    signers: Vec::new(),
                });
                input.signed_from.push(SignedFrom {
                    from_domain: input.domain.clone(),
                    d: input.domain.clone(),
                });
            }
        }
    }
    if let Some(tables) = &signing.tables {
        let signed = signed_from(&tables.key_table, &tables.signing_table);
        let mut sender_domains: Vec<String> =
            signed.iter().map(|s| s.from_domain.clone()).collect();
        sender_domains.extend(only.iter().cloned());
        sender_domains.sort();
        sender_domains.dedup();
        for key_entry in tables.key_table.entries() {
            let domains: Vec<String> = match &key_entry.domain {
                KeyDomain::Fixed(d) => vec![d.clone()],
                KeyDomain::Sender => sender_domains.clone(),
            };
            for domain in domains {
                let resolved = key_entry.resolve(&domain);
                let key_origin = match &resolved.source {
                    ResolvedKeySource::File(path) => path.display().to_string(),
                    ResolvedKeySource::Inline(_) => format!("the inline key at {}", key_entry.at),
                };
                let key: Result<Arc<PrivateKey>, String> =
                    tables.keys.key_for(&resolved).map_err(|e| e.to_string());
                let signers = tables
                    .signing_table
                    .entries()
                    .iter()
                    .filter(|s| {
                        s.key_name.replace('%', &domain) == key_entry.name.replace('%', &domain)
                    })
                    .filter_map(|s| s.signer.as_ref().map(|i| i.replace('%', &domain)))
                    .collect();
                let Some(input) = entry(&mut found, &only, &resolved.domain, "KeyTable") else {
                    continue;
                };
                if input
                    .selectors
                    .iter()
                    .any(|s| s.selector == key_entry.selector)
                {
                    continue;
                }
                input.selectors.push(SelectorInput {
                    selector: key_entry.selector.clone(),
                    key,
                    key_origin,
                    signers,
                });
            }
        }
        for signed in signed {
            if let Some(input) = entry(&mut found, &only, &signed.from_domain, "SigningTable")
                && !input.signed_from.contains(&signed)
            {
                input.signed_from.push(signed);
            }
        }
    }
    // A domain the configuration does not name is still checked (SPF,
    // MX, DMARC) when asked for.
    for domain in &only {
        entry(&mut found, &only, domain, "--domain");
    }
    found.into_values().collect()
}

/// The entry of `domain` (added, from `source`, if new), unless `only`
/// names other domains.
fn entry<'a>(
    found: &'a mut BTreeMap<String, DomainInput>,
    only: &[String],
    domain: &str,
    source: &str,
) -> Option<&'a mut DomainInput> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if !only.is_empty() && !only.contains(&domain) {
        return None;
    }
    Some(found.entry(domain.clone()).or_insert_with(|| DomainInput {
        domain,
        source: source.to_string(),
        selectors: Vec::new(),
        signed_from: Vec::new(),
    }))
}

/// The From domains the SigningTable names (exact ones, and `*.` or `*@`
/// patterns' fixed part) with the `d=` of the key each is signed with.
fn signed_from(keys: &KeyTable, table: &SigningTable) -> Vec<SignedFrom> {
    let mut signed = Vec::new();
    for entry in table.entries() {
        let pattern = entry.pattern.to_ascii_lowercase();
        let domain = pattern
            .rsplit_once('@')
            .map_or(pattern.as_str(), |(_, d)| d);
        let domain = domain.trim_start_matches("*.").trim_start_matches('.');
        if domain.is_empty() || domain.contains('*') || !domain.contains('.') {
            continue;
        }
        let key_name = entry.key_name.replace('%', domain);
        let Some(key) = keys.get(&key_name).or_else(|| keys.get(&entry.key_name)) else {
            continue;
        };
        let d = match &key.domain {
            KeyDomain::Fixed(d) => d.to_ascii_lowercase(),
            KeyDomain::Sender => domain.to_string(),
        };
        let item = SignedFrom {
            from_domain: domain.to_string(),
            d,
        };
        if !signed.contains(&item) {
            signed.push(item);
        }
    }
    signed
}

/// The host's global addresses, and Postfix's bind addresses.
fn detected_ips(postfix: Option<&Postconf>) -> Vec<Sourced<IpAddr>> {
    let mut ips: Vec<Sourced<IpAddr>> = Vec::new();
    let mut add = |ip: IpAddr, source: String| {
        if !ips.iter().any(|known| known.value == ip) {
            ips.push(Sourced { value: ip, source });
        }
    };
    if let Some(postfix) = postfix {
        for parameter in ["smtp_bind_address", "smtp_bind_address6"] {
            if let Some(ip) = postfix
                .get(parameter)
                .and_then(|v| v.parse::<IpAddr>().ok())
            {
                add(ip, format!("postconf {parameter}"));
            }
        }
    }
    if let Ok(interfaces) = nix::ifaddrs::getifaddrs() {
        for interface in interfaces {
            let Some(address) = interface.address else {
                continue;
            };
            let ip = if let Some(v4) = address.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = address.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            if is_global(ip) {
                add(ip, format!("interface {}", interface.interface_name));
            }
        }
    }
    ips
}

/// Whether `ip` is reachable from the Internet (not loopback, private,
/// link-local, shared, documentation or unique-local).
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xffc0) == 0xfe80
                || (first & 0xfe00) == 0xfc00
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_internet_addresses_count_as_global() {
        for local in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "100.64.0.1",
            "fe80::1",
            "fd00::1",
            "::1",
        ] {
            assert!(!is_global(local.parse().unwrap()), "{local}");
        }
        for global in ["203.0.114.1", "8.8.8.8", "2a00:1450::1"] {
            assert!(is_global(global.parse().unwrap()), "{global}");
        }
    }
}
