//! The `ptr` check, one per sending IP: a PTR record exists; its name is
//! forward-confirmed (has an A or AAAA with that IP); it does not look
//! like a provider's generic name (the IP's digits inside it); and the
//! HELO name is that name, or at least resolves to the IP.
//!
//! A PTR record is published by whoever holds the address (the hosting
//! provider, usually through its control panel), so the fix names the
//! record and says who sets it. This module never changes DNS.

use std::net::IpAddr;

use super::fix::{Fix, FixRecord};
use super::lookup::{Lookup, reverse_name};
use super::{Check, CheckId};

/// One `ptr` check per IP. `fallback_domain` names the host a PTR should
/// point at when there is no HELO name (`mail.DOMAIN`).
pub async fn check(
    lookup: &Lookup,
    ips: &[IpAddr],
    helo: Option<&str>,
    fallback_domain: Option<&str>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for &ip in ips {
        checks.push(check_ip(lookup, ip, helo, fallback_domain).await.ip(ip));
    }
    checks
}

async fn check_ip(
    lookup: &Lookup,
    ip: IpAddr,
    helo: Option<&str>,
    fallback_domain: Option<&str>,
) -> Check {
    let reverse = reverse_name(ip);
    let wanted = helo
        .map(str::to_string)
        .or_else(|| fallback_domain.map(|d| format!("mail.{d}")))
        .unwrap_or_else(|| "mail.example.com".to_string());
    let set_ptr = |name: &str| {
        Fix::publish(
            format!(
                "ask whoever holds {ip} (your hosting provider's control panel) to set its \
                 PTR record, and make sure {name} has an A/AAAA record with {ip}:"
            ),
            vec![
                FixRecord::simple(&reverse, &reverse, "PTR", name),
                FixRecord::simple(name, name, address_kind(ip), &ip.to_string()),
            ],
        )
    };
    let names = match lookup.ptr(ip).await {
        Ok(answer) => answer.into_records(),
        Err(problem) => return Check::dns(CheckId::Ptr, &problem),
    };
    let Some(name) = names.first().cloned() else {
        return Check::fail(
            CheckId::Ptr,
            format!("{ip} has no PTR record: many receivers refuse or junk its mail"),
            set_ptr(&wanted),
        );
    };
    let forward = match lookup.addresses(&name).await {
        Ok(answer) => answer.into_records(),
        Err(problem) => return Check::dns(CheckId::Ptr, &problem),
    };
    if !forward.contains(&ip) {
        return Check::fail(
            CheckId::Ptr,
            format!(
                "{ip} has PTR {name}, but {name} does not resolve back to {ip} \
                 (not forward-confirmed)"
            ),
            Fix::publish(
                format!("publish this record for {name}:"),
                vec![FixRecord::simple(
                    &name,
                    &name,
                    address_kind(ip),
                    &ip.to_string(),
                )],
            ),
        );
    }
    let mut warnings = Vec::new();
    let mut fix = None;
    if looks_generic(&name, ip) {
        warnings.push(format!(
            "{name} looks like a provider's generic name (it holds the IP's digits); \
             receivers score it as a dynamic address"
        ));
        fix = Some(set_ptr(&wanted));
    }
    if let Some(helo) = helo
        && !helo.eq_ignore_ascii_case(&name)
    {
        let helo_addresses = match lookup.addresses(helo).await {
            Ok(answer) => answer.into_records(),
            Err(problem) => return Check::dns(CheckId::Ptr, &problem),
        };
        if !helo_addresses.contains(&ip) {
            warnings.push(format!(
                "the HELO name {helo} is not {name} and does not resolve to {ip}"
            ));
            fix.get_or_insert_with(|| {
                Fix::publish(
                    format!("publish this record for {helo} (or set myhostname to {name}):"),
                    vec![FixRecord::simple(
                        helo,
                        helo,
                        address_kind(ip),
                        &ip.to_string(),
                    )],
                )
            });
        }
    }
    match fix {
        None => Check::ok(
            CheckId::Ptr,
            format!("{ip} has PTR {name}, which resolves back to {ip}"),
        ),
        Some(fix) => Check::warn(
            CheckId::Ptr,
            format!("{ip} has PTR {name}: {}", warnings.join("; ")),
            fix,
        ),
    }
}

fn address_kind(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "A",
        IpAddr::V6(_) => "AAAA",
    }
}

/// Whether `name` spells the address: all four octets of an IPv4 address
/// in its labels (`192-0-2-10.dsl.example.net`, `10.2.0.192.in-addr...`,
/// `host192.0.2.10...`, `c000020a` in hex), or, for IPv6, the last
/// four hex groups.
pub fn looks_generic(name: &str, ip: IpAddr) -> bool {
    let lower = name.to_ascii_lowercase();
    match ip {
        IpAddr::V4(v4) => {
            let octets = v4.octets();
            let numbers: Vec<u8> = lower
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|digits| digits.parse().ok())
                .collect();
            let forward = numbers.windows(4).any(|w| w == octets);
            let mut reversed = octets;
            reversed.reverse();
            let backward = numbers.windows(4).any(|w| w == reversed);
            let hex = format!(
                "{:02x}{:02x}{:02x}{:02x}",
                octets[0], octets[1], octets[2], octets[3]
            );
            forward || backward || lower.contains(&hex)
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let tail = format!(
                "{:x}-{:x}-{:x}-{:x}",
                segments[4], segments[5], segments[6], segments[7]
            );
            let compact = format!(
                "{:04x}{:04x}{:04x}{:04x}",
                segments[4], segments[5], segments[6], segments[7]
            );
            lower.contains(&tail) || lower.contains(&compact)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_holding_the_address_are_generic() {
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        assert!(looks_generic("192-0-2-10.dsl.example.net", ip));
        assert!(looks_generic("10.2.0.192.static.example.net", ip));
        assert!(looks_generic(
            "ip-192-0-2-10.eu-west-1.compute.internal",
            ip
        ));
        assert!(looks_generic("host-c000020a.example.net", ip));
        assert!(!looks_generic("mail.example.com", ip));
        assert!(!looks_generic("mx10.example.com", ip));
    }
}
