//! The `mx` check: the domain has an MX; each target is a host name (not
//! an IP address, not a CNAME) with an A or AAAA record. A null MX
//! (RFC 7505: one MX of preference 0 to `.`) is reported as such: the
//! domain receives no mail, which is fine for a send-only domain.
//!
//! The fix for a bad target is an MX to a host name under the domain with
//! the address record it needs. This module never changes DNS.

use std::net::IpAddr;

use super::fix::{Fix, FixRecord};
use super::lookup::{Lookup, Mx};
use super::{Check, CheckId};

/// The `mx` check of `domain`.
pub async fn check(lookup: &Lookup, domain: &str) -> Vec<Check> {
    vec![check_domain(lookup, domain).await]
}

async fn check_domain(lookup: &Lookup, domain: &str) -> Check {
    let answer = match lookup.mx(domain).await {
        Ok(answer) => answer,
        Err(problem) => return Check::dns(CheckId::Mx, &problem),
    };
    let mut records = answer.into_records();
    records.sort_by_key(|mx| mx.preference);
    if records.is_empty() {
        return Check::fail(
            CheckId::Mx,
            format!("no MX record at {domain}: bounces and replies to it cannot be delivered"),
            Fix::publish(
                format!(
                    "publish an MX naming your mail server (and its address), or a null MX \
                     (`{domain}. IN MX 0 .`) if {domain} receives no mail:"
                ),
                vec![FixRecord::mx(domain, domain, 10, &format!("mail.{domain}"))],
            ),
        );
    }
    if records.iter().any(|mx| mx.exchange.is_empty()) {
        return if records.len() == 1 && records[0].preference == 0 {
            Check::ok(
                CheckId::Mx,
                format!("{domain} has a null MX (RFC 7505): it receives no mail"),
            )
        } else {
            Check::fail(
                CheckId::Mx,
                format!(
                    "{domain} mixes a null MX (`.`) with other MX records: RFC 7505 wants it alone"
                ),
                Fix::words(format!(
                    "delete either the MX to `.` or the other MX records at {domain}"
                )),
            )
        };
    }
    let mut faults = Vec::new();
    let mut fixes = Vec::new();
    for Mx {
        preference,
        exchange,
    } in &records
    {
        if let Some(ip) = ip_literal(exchange, domain) {
            let host = format!("mail.{domain}");
            faults.push(format!(
                "the MX {exchange} is an IP address: an MX must name a host"
            ));
            fixes.push(FixRecord::mx(domain, domain, *preference, &host));
            fixes.push(FixRecord::simple(
                &host,
                domain,
                address_kind(ip),
                &ip.to_string(),
            ));
            continue;
        }
        match lookup.cname(exchange).await {
            Err(problem) => return Check::dns(CheckId::Mx, &problem),
            Ok(Some(canonical)) => {
                faults.push(format!(
                    "the MX {exchange} is a CNAME (to {canonical}): RFC 2181 forbids it"
                ));
                fixes.push(FixRecord::mx(domain, domain, *preference, &canonical));
                continue;
            }
            Ok(None) => {}
        }
        match lookup.addresses(exchange).await {
            Err(problem) => return Check::dns(CheckId::Mx, &problem),
            Ok(answer) if answer.is_void() => {
                faults.push(format!("the MX {exchange} has no A or AAAA record"));
            }
            Ok(_) => {}
        }
    }
    let names: Vec<String> = records
        .iter()
        .map(|mx| format!("{} {}", mx.preference, mx.exchange))
        .collect();
    if faults.is_empty() {
        return Check::ok(CheckId::Mx, format!("{domain} MX {}", names.join(", ")));
    }
    let action = if fixes.is_empty() {
        "publish an A (or AAAA) record for each MX host named above".to_string()
    } else {
        format!("replace the faulty MX records at {domain} with:")
    };
    Check::fail(
        CheckId::Mx,
        format!("{domain}: {}", faults.join("; ")),
        Fix::publish(action, fixes),
    )
}

/// The address an MX target spells, whether written with a trailing dot
/// (`192.0.2.1.`) or not, so that the zone appended its origin
/// (`192.0.2.1.example.com`).
fn ip_literal(exchange: &str, domain: &str) -> Option<IpAddr> {
    let bare = exchange
        .strip_suffix(&format!(".{domain}"))
        .unwrap_or(exchange);
    bare.trim_matches(['[', ']']).parse().ok()
}

fn address_kind(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "A",
        IpAddr::V6(_) => "AAAA",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_seen_with_or_without_the_origin_appended() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(ip_literal("192.0.2.1", "example.com"), Some(ip));
        assert_eq!(ip_literal("192.0.2.1.example.com", "example.com"), Some(ip));
        assert_eq!(ip_literal("mail.example.com", "example.com"), None);
    }
}
