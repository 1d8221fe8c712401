//! The `spf` check: the domain has exactly one `v=spf1` record; it has at
//! most 10 DNS-querying terms and at most 2 void lookups (RFC 7208 4.6.4);
//! it does not end in `+all` or `?all` nor use `ptr`; and for each sending
//! IP, the RFC 7208 evaluation passes.
//!
//! The evaluation is mail-auth's (`MessageAuthenticator::verify_spf`),
//! built over the same nameservers and query timeout as every other
//! check (mail-auth takes a hickory configuration, not our resolver
//! object, so "our resolver" means our resolver's settings). Counting
//! terms and void lookups, and flattening a record that has too many, is
//! done here on mail-auth's parsed record, because mail-auth only says
//! "permerror" when a limit is passed, not how far over it is or what to
//! publish instead.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use ipnet::IpNet;
use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::spf::{Macro, Mechanism, Qualifier, Spf};
use mail_auth::{MessageAuthenticator, SpfResult};

use super::fix::{Fix, FixRecord};
use super::lookup::{self, DnsProblem, Lookup};
use super::{Check, CheckId};

/// RFC 7208 4.6.4: terms that cause DNS queries.
pub const MAX_DNS_TERMS: u32 = 10;
/// RFC 7208 4.6.4: lookups that return nothing.
pub const MAX_VOID_LOOKUPS: u32 = 2;
/// Includes nested deeper than this are not followed.
const MAX_DEPTH: u32 = 10;

/// The `spf` checks of `domain`: the record, then one per sending IP.
pub async fn check(
    lookup: &Lookup,
    nameservers: &[std::net::SocketAddr],
    domain: &str,
    ips: &[IpAddr],
    helo: Option<&str>,
) -> Vec<Check> {
    let answer = match lookup.txt(domain).await {
        Ok(answer) => answer,
        Err(problem) => return vec![Check::dns(CheckId::Spf, &problem)],
    };
    let records: Vec<String> = answer
        .into_records()
        .iter()
        .map(|strings| strings.iter().map(|s| String::from_utf8_lossy(s)).collect())
        .filter(|text: &String| is_spf(text))
        .collect();
    let new_record = fresh_record(ips);
    let publish = |action: String, value: &str| {
        Fix::publish(action, vec![FixRecord::txt(domain, domain, value)])
    };
    let text = match records.as_slice() {
        [] => {
            return vec![Check::fail(
                CheckId::Spf,
                format!("no SPF record (TXT v=spf1) at {domain}"),
                publish(format!("publish this TXT record at {domain}:"), &new_record),
            )];
        }
        [one] => one.clone(),
        several => {
            return vec![Check::fail(
                CheckId::Spf,
                format!(
                    "{} SPF records at {domain}: receivers answer permerror; merge them into one",
                    several.len()
                ),
                publish(
                    format!("replace all v=spf1 TXT records at {domain} with one:"),
                    &new_record,
                ),
            )];
        }
    };
    let Ok(parsed) = Spf::parse(text.as_bytes()) else {
        return vec![Check::fail(
            CheckId::Spf,
            format!("the SPF record at {domain} does not parse: {text:?}"),
            publish(
                format!("replace the SPF record at {domain} with:"),
                &new_record,
            ),
        )];
    };
    let mut walk = Walk::default();
    walk_record(lookup, domain, &parsed, 0, &mut walk).await;
    if let Some(problem) = walk.problem.clone() {
        return vec![Check::dns(CheckId::Spf, &problem)];
    }
    let over_limits = walk.terms > MAX_DNS_TERMS || walk.voids > MAX_VOID_LOOKUPS;
    let flattened = flatten(&parsed, &walk, ips);
    let record_check = record_check(domain, &text, &parsed, &walk, &flattened);
    let mut checks = vec![record_check];
    if ips.is_empty() {
        checks.push(Check::warn(
            CheckId::Spf,
            "no sending IP known, so SPF was not evaluated: pass --ip",
            Fix::words("run doctor again with --ip for each address the server sends from"),
        ));
        return checks;
    }
    let authenticator = match lookup::resolver_config(nameservers, lookup.timeout())
        .map_err(|e| e.to_string())
        .and_then(|(config, options)| {
            MessageAuthenticator::new(config, options).map_err(|e| e.to_string())
        }) {
        Ok(authenticator) => authenticator,
        Err(why) => {
            checks.push(Check::fail(
                CheckId::Spf,
                format!("cannot set up the SPF evaluator: {why}"),
                Fix::words("check the nameserver settings"),
            ));
            return checks;
        }
    };
    for &ip in ips {
        let sender = format!("postmaster@{domain}");
        let helo_domain = helo.unwrap_or(domain);
        let params = mail_auth::spf::verify::SpfParameters::verify_mail_from(
            ip,
            helo_domain,
            helo_domain,
            &sender,
        );
        let bound = lookup.timeout() * (MAX_DNS_TERMS + 2);
        let result = match tokio::time::timeout(bound, authenticator.verify_spf(params)).await {
            Ok(output) => output.result(),
            Err(_) => SpfResult::TempError,
        };
        let with_ip = if over_limits {
            flattened.clone()
        } else {
            with_address(&text, ip)
        };
        let check = match result {
            SpfResult::Pass => Check::ok(CheckId::Spf, format!("SPF passes for {ip}")),
            SpfResult::TempError => Check::fail(
                CheckId::Spf,
                format!(
                    "DNS error: SPF for {ip} ended in temperror (a lookup failed or timed out)"
                ),
                Fix::words(
                    "make the DNS servers of the domain and of every include: answer, then run \
                     doctor again",
                ),
            ),
            SpfResult::PermError => Check::fail(
                CheckId::Spf,
                format!(
                    "SPF for {ip} is permerror (a syntax error, or more than {MAX_DNS_TERMS} \
                     DNS lookups or {MAX_VOID_LOOKUPS} void lookups): receivers treat it as fail"
                ),
                publish(
                    format!("replace the SPF record at {domain} with:"),
                    &with_ip,
                ),
            ),
            other => Check::fail(
                CheckId::Spf,
                format!(
                    "SPF gives {} for {ip}: the record does not list this sending address",
                    result_word(other)
                ),
                publish(
                    format!("replace the SPF record at {domain} with:"),
                    &with_ip,
                ),
            ),
        };
        checks.push(check.ip(ip));
    }
    checks
}

fn record_check(domain: &str, text: &str, parsed: &Spf, walk: &Walk, flattened: &str) -> Check {
    let publish = |value: &str| {
        Fix::publish(
            format!("replace the SPF record at {domain} with:"),
            vec![FixRecord::txt(domain, domain, value)],
        )
    };
    if walk.terms > MAX_DNS_TERMS || walk.voids > MAX_VOID_LOOKUPS {
        let mut fix = publish(flattened);
        fix.action = flatten_action(domain, walk);
        return Check::fail(
            CheckId::Spf,
            format!(
                "the SPF record at {domain} needs {} DNS-querying terms (at most \
                 {MAX_DNS_TERMS}) and {} void lookups (at most {MAX_VOID_LOOKUPS}): \
                 receivers answer permerror",
                walk.terms, walk.voids
            ),
            fix,
        );
    }
    let mut warnings = Vec::new();
    for directive in &parsed.directives {
        match (&directive.qualifier, &directive.mechanism) {
            (Qualifier::Pass, Mechanism::All) => {
                warnings.push("+all lets any host on the Internet pass".to_string());
            }
            (Qualifier::Neutral, Mechanism::All) => {
                warnings.push("?all says nothing about other hosts".to_string());
            }
            (_, Mechanism::Ptr { .. }) => warnings
                .push("the ptr mechanism is slow and RFC 7208 says not to use it".to_string()),
            _ => {}
        }
    }
    if warnings.is_empty() {
        return Check::ok(
            CheckId::Spf,
            format!(
                "one SPF record at {domain}, {} DNS-querying terms, {} void lookups: {text}",
                walk.terms, walk.voids
            ),
        );
    }
    let cleaned = without_weak_terms(text);
    Check::warn(
        CheckId::Spf,
        format!("the SPF record at {domain}: {}", warnings.join("; ")),
        publish(&cleaned),
    )
}

fn flatten_action(domain: &str, walk: &Walk) -> String {
    let mut action = format!(
        "replace the SPF record at {domain} with this one, where every include:, a and mx \
         is replaced by the addresses it gives today (re-check when a provider changes its \
         addresses)"
    );
    if !walk.unresolvable.is_empty() {
        action.push_str(&format!(
            "; these terms cannot be flattened and were left out, add them back if you need \
             them: {}",
            walk.unresolvable.join(" ")
        ));
    }
    action.push(':');
    action
}

/// Whether `text` is an SPF record (`v=spf1` then a space or nothing).
fn is_spf(text: &str) -> bool {
    let lower = text.trim_start().to_ascii_lowercase();
    lower == "v=spf1" || lower.starts_with("v=spf1 ")
}

fn result_word(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

/// `ip4:` or `ip6:` of one address.
fn address_term(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip4:{v4}"),
        IpAddr::V6(v6) => format!("ip6:{v6}"),
    }
}

/// A record for a domain that has none: the sending IPs, then `~all`.
fn fresh_record(ips: &[IpAddr]) -> String {
    let mut terms = vec!["v=spf1".to_string()];
    if ips.is_empty() {
        terms.push("mx".to_string());
    }
    terms.extend(ips.iter().map(|ip| address_term(*ip)));
    terms.push("~all".to_string());
    terms.join(" ")
}

/// `text` with `ip` added before its `all` term (or `redirect=`, or at
/// the end).
fn with_address(text: &str, ip: IpAddr) -> String {
    let mut terms: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    let at = terms
        .iter()
        .position(|t| {
            let lower = t.to_ascii_lowercase();
            lower.trim_start_matches(['+', '-', '~', '?']) == "all"
                || lower.starts_with("redirect=")
        })
        .unwrap_or(terms.len());
    terms.insert(at, address_term(ip));
    terms.join(" ")
}

/// `text` with `ptr` terms dropped and `+all` / `?all` made `~all`.
fn without_weak_terms(text: &str) -> String {
    text.split_whitespace()
        .filter(|t| {
            let lower = t.to_ascii_lowercase();
            let bare = lower.trim_start_matches(['+', '-', '~', '?']);
            bare != "ptr" && !bare.starts_with("ptr:")
        })
        .map(|t| match t.to_ascii_lowercase().as_str() {
            "all" | "+all" | "?all" => "~all".to_string(),
            _ => t.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What walking a record and everything it includes found.
#[derive(Debug, Default)]
struct Walk {
    /// DNS-querying terms (include, a, mx, ptr, exists, redirect).
    terms: u32,
    /// Lookups that returned no records.
    voids: u32,
    /// The addresses the record allows, as far as they can be known.
    networks: Vec<IpNet>,
    /// Terms whose addresses cannot be listed (ptr, exists, macros).
    unresolvable: Vec<String>,
    /// The first DNS failure met.
    problem: Option<DnsProblem>,
}

/// The domain a mechanism names: its literal macro, or `current`.
fn target(macro_string: &Macro, current: &str) -> Option<String> {
    match macro_string {
        Macro::None => Some(current.to_string()),
        Macro::Literal(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    }
}

fn prefix_v4(mask: u32) -> u8 {
    u8::try_from(mask.count_ones()).unwrap_or(32)
}

fn prefix_v6(mask: u128) -> u8 {
    u8::try_from(mask.count_ones()).unwrap_or(128)
}

fn network(ip: IpAddr, v4_mask: u32, v6_mask: u128) -> Option<IpNet> {
    match ip {
        IpAddr::V4(_) => IpNet::new(ip, prefix_v4(v4_mask)).ok(),
        IpAddr::V6(_) => IpNet::new(ip, prefix_v6(v6_mask)).ok(),
    }
    .map(|net| net.trunc())
}

/// Counts the DNS-querying terms and void lookups of `record` (at
/// `domain`) and of every record it includes or redirects to, collecting
/// the addresses they allow.
fn walk_record<'a>(
    lookup: &'a Lookup,
    domain: &'a str,
    record: &'a Spf,
    depth: u32,
    walk: &'a mut Walk,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        for directive in &record.directives {
            if walk.problem.is_some() || walk.terms > MAX_DNS_TERMS * 3 {
                return;
            }
            match &directive.mechanism {
                Mechanism::All => {}
                Mechanism::Ip4 { addr, mask } => {
                    walk.networks
                        .extend(network(IpAddr::V4(*addr), *mask, u128::MAX));
                }
                Mechanism::Ip6 { addr, mask } => {
                    walk.networks
                        .extend(network(IpAddr::V6(*addr), u32::MAX, *mask));
                }
                Mechanism::Ptr { .. } => {
                    walk.terms += 1;
                    walk.unresolvable.push("ptr".to_string());
                }
                Mechanism::Exists { .. } => {
                    walk.terms += 1;
                    walk.unresolvable.push("exists:...".to_string());
                }
                Mechanism::Include { macro_string } => {
                    walk.terms += 1;
                    let Some(name) = target(macro_string, domain) else {
                        walk.unresolvable.push("include:(macro)".to_string());
                        continue;
                    };
                    included(lookup, &name, depth, walk).await;
                }
                Mechanism::A {
                    macro_string,
                    ip4_mask,
                    ip6_mask,
                } => {
                    walk.terms += 1;
                    let Some(name) = target(macro_string, domain) else {
                        walk.unresolvable.push("a:(macro)".to_string());
                        continue;
                    };
                    match lookup.addresses(&name).await {
                        Err(problem) => walk.problem = Some(problem),
                        Ok(answer) if answer.is_void() => walk.voids += 1,
                        Ok(answer) => walk.networks.extend(
                            answer
                                .records()
                                .iter()
                                .filter_map(|ip| network(*ip, *ip4_mask, *ip6_mask)),
                        ),
                    }
                }
                Mechanism::Mx {
                    macro_string,
                    ip4_mask,
                    ip6_mask,
                } => {
                    walk.terms += 1;
                    let Some(name) = target(macro_string, domain) else {
                        walk.unresolvable.push("mx:(macro)".to_string());
                        continue;
                    };
                    match lookup.mx(&name).await {
                        Err(problem) => walk.problem = Some(problem),
                        Ok(answer) if answer.is_void() => walk.voids += 1,
                        Ok(answer) => {
                            for mx in answer.records() {
                                match lookup.addresses(&mx.exchange).await {
                                    Err(problem) => walk.problem = Some(problem),
                                    Ok(addresses) => walk.networks.extend(
                                        addresses
                                            .records()
                                            .iter()
                                            .filter_map(|ip| network(*ip, *ip4_mask, *ip6_mask)),
                                    ),
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(redirect) = &record.redirect {
            walk.terms += 1;
            match target(redirect, domain) {
                Some(name) => included(lookup, &name, depth, walk).await,
                None => walk.unresolvable.push("redirect=(macro)".to_string()),
            }
        }
    })
}

/// Follows an `include:` or `redirect=` to `name`.
async fn included(lookup: &Lookup, name: &str, depth: u32, walk: &mut Walk) {
    if depth >= MAX_DEPTH {
        return;
    }
    match lookup.txt(name).await {
        Err(problem) => walk.problem = Some(problem),
        Ok(answer) => {
            let record = answer
                .records()
                .iter()
                .map(|strings| strings.concat())
                .find(|bytes| is_spf(&String::from_utf8_lossy(bytes)));
            match record {
                None => walk.voids += 1,
                Some(bytes) => {
                    if let Ok(spf) = Spf::parse(&bytes) {
                        walk_record(lookup, name, &spf, depth + 1, walk).await;
                    }
                }
            }
        }
    }
}

/// The record with every address the walk found, the sending IPs, and
/// the top-level `all` (`~all` when it was `+all` or `?all`, or none).
fn flatten(record: &Spf, walk: &Walk, ips: &[IpAddr]) -> String {
    let mut networks: Vec<IpNet> = walk.networks.clone();
    for ip in ips {
        if !networks.iter().any(|net| net.contains(ip)) {
            networks.extend(network(*ip, u32::MAX, u128::MAX));
        }
    }
    networks = IpNet::aggregate(&networks);
    let all = record
        .directives
        .iter()
        .find(|d| d.mechanism == Mechanism::All)
        .map_or("~all", |d| match d.qualifier {
            Qualifier::Fail => "-all",
            _ => "~all",
        });
    let mut terms = vec!["v=spf1".to_string()];
    for net in networks {
        let single = net.prefix_len() == net.max_prefix_len();
        terms.push(match (net, single) {
            (IpNet::V4(v4), true) => format!("ip4:{}", v4.addr()),
            (IpNet::V4(v4), false) => format!("ip4:{v4}"),
            (IpNet::V6(v6), true) => format!("ip6:{}", v6.addr()),
            (IpNet::V6(v6), false) => format!("ip6:{v6}"),
        });
    }
    terms.push(all.to_string());
    terms.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_goes_before_the_all_term() {
        assert_eq!(
            with_address("v=spf1 mx -all", "192.0.2.1".parse().unwrap()),
            "v=spf1 mx ip4:192.0.2.1 -all"
        );
        assert_eq!(
            with_address(
                "v=spf1 redirect=_spf.example.com",
                "2001:db8::1".parse().unwrap()
            ),
            "v=spf1 ip6:2001:db8::1 redirect=_spf.example.com"
        );
    }

    #[test]
    fn weak_terms_are_dropped_or_tightened() {
        assert_eq!(
            without_weak_terms("v=spf1 ptr ip4:192.0.2.1 +all"),
            "v=spf1 ip4:192.0.2.1 ~all"
        );
    }

    #[test]
    fn spf_records_are_told_from_other_txt_records() {
        assert!(is_spf("v=spf1 -all"));
        assert!(is_spf("V=SPF1"));
        assert!(!is_spf("v=spf10 -all"));
        assert!(!is_spf("google-site-verification=x"));
    }
}
