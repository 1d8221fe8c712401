//! Host lists: InternalHosts, ExternalIgnoreList, PeerList (and the
//! default InternalHosts `127.0.0.1, ::1`), matched as OpenDKIM matches them.
//!
//! OpenDKIM (`dkimf_checkhost`, `dkimf_checkip` in `util.c`) does not parse
//! the entries: it builds query strings from the client and looks each one
//! up as a case-insensitive key, negative form (`!query`) first:
//! - host name `mail.example.com`: `mail.example.com`, then `.example.com`,
//!   then `.com`; at each step `!step` → no match, `step` → match;
//! - IPv4 `a`: `a`, `[a]`, then for bits 32 down to 0 the network `n/bits`
//!   and `[n]/bits`, where `n` is the address with the host bits cleared,
//!   written in dotted decimal; at each string `!string` → no, `string` → yes;
//! - IPv6 likewise with bits 128 down to 0, written as glibc's `inet_ntop`
//!   writes it (lowercase, `::` compression, `::ffff:a.b.c.d` form);
//! - an IPv4-mapped IPv6 client is only an IPv6 address: `192.0.2.1` does
//!   not match `::ffff:192.0.2.1` (confirmed against the binary).
//!
//! So the most specific entry wins, whatever the file order, and at equal
//! specificity a negation wins. The host name and the address are checked
//! separately: for InternalHosts a client is internal when either matches,
//! so `!bad.example.org` does not stop `192.0.2.0/24` from matching the
//! same client by address.
//!
//! Instead of building strings we parse the entries once into networks
//! keyed by (prefix length, network), and a lookup probes one hash map per
//! prefix length present in the list. Because OpenDKIM compares text, an
//! entry that is not written exactly as it would print the network (host
//! bits set as in `198.51.100.5/24`, `2001:0db8::/32`, `/08`) never matched
//! there; we match it as the network it denotes and warn, naming the line.
//!
//! `refile:` host lists are supported too: literal lines behave as above,
//! and wildcard lines are tried against the same query strings as OpenDKIM
//! (only these lists pay for building strings). A pattern starting with `*`
//! also matches the `!` probes, so in OpenDKIM it can only ever exclude; we
//! keep that and warn.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::diagnostics::{Location, Warning};

use super::TableError;
use super::dataset::{DataSet, DataSetKind};
use super::pattern::Pattern;
use super::suffixes::dotted_suffixes;

/// Per (prefix, network): which of OpenDKIM's four probe strings exist,
/// checked in this order.
const NEG_PLAIN: u8 = 1;
const POS_PLAIN: u8 = 2;
const NEG_BRACKET: u8 = 4;
const POS_BRACKET: u8 = 8;
/// A name key exists negated (`!name`) / plain.
const NEG: u8 = 1;
const POS: u8 = 2;

/// The level OpenDKIM probes first: the bare address, before any `/bits`.
const V4_EXACT: u8 = 33;
const V6_EXACT: u8 = 129;

/// A parsed host list.
#[derive(Debug, Clone)]
pub struct HostList {
    origin: Location,
    /// Every entry's text (lowercase, normalised, without `!`).
    names: HashMap<String, u8>,
    v4: HashMap<(u8, u32), u8>,
    /// Levels present, most specific first.
    v4_levels: Vec<u8>,
    v6: HashMap<(u8, u128), u8>,
    v6_levels: Vec<u8>,
    /// `refile:` lines with wildcards or regex operators, in file order.
    patterns: Vec<Pattern>,
    /// Every entry as written, in order.
    written: Vec<String>,
    warnings: Vec<Warning>,
}

/// An address-shaped entry: `a`, `[a]`, `a/bits`, `[a]/bits`.
struct AddressEntry {
    addr: IpAddr,
    bracket: bool,
    prefix: Option<u8>,
}

impl HostList {
    /// Parses the specification `spec` (written at `at`) and loads the list.
    pub fn open(spec: &str, at: &Location) -> Result<HostList, TableError> {
        Self::from_data_set(DataSet::open(spec, at)?)
    }

    /// OpenDKIM's InternalHosts when none is configured: `127.0.0.1, ::1`.
    pub fn default_internal() -> HostList {
        let at = Location::new("(default InternalHosts)", 0);
        Self::from_data_set(DataSet::from_csl("127.0.0.1,::1", &at))
            .expect("the default InternalHosts parses")
    }

    /// Builds the list from data already read.
    pub fn from_data_set(mut set: DataSet) -> Result<HostList, TableError> {
        let mut list = HostList {
            origin: set.origin.clone(),
            names: HashMap::new(),
            v4: HashMap::new(),
            v4_levels: Vec::new(),
            v6: HashMap::new(),
            v6_levels: Vec::new(),
            patterns: Vec::new(),
            written: set.entries.iter().map(|e| e.key.clone()).collect(),
            warnings: set.take_warnings(),
        };
        let refile = set.kind == DataSetKind::Refile;
        for entry in &set.entries {
            let key = entry.key.as_str();
            if refile && (key.contains('*') || Pattern::uses_regex_operators(key)) {
                let pattern =
                    Pattern::compile(key, true).map_err(|reason| TableError::Pattern {
                        at: entry.at.clone(),
                        pattern: key.to_string(),
                        reason,
                    })?;
                if key.starts_with('*') {
                    list.warn(
                        &entry.at,
                        format!(
                            "pattern `{key}` starts with `*`, so it also matches OpenDKIM's `!` \
                             (negation) probes: it can only exclude hosts, never include them \
                             (dkim-sidecar keeps that). To match a domain and its subdomains write \
                             `.{}`",
                            key.trim_start_matches(['*', '.'])
                        ),
                    );
                }
                list.patterns.push(pattern);
                continue;
            }
            list.add_literal(key, &entry.at, refile);
        }
        list.v4_levels.sort_unstable_by(|a, b| b.cmp(a));
        list.v4_levels.dedup();
        list.v6_levels.sort_unstable_by(|a, b| b.cmp(a));
        list.v6_levels.dedup();
        Ok(list)
    }

    fn warn(&mut self, at: &Location, message: String) {
        self.warnings.push(Warning::new(Some(at.clone()), message));
    }

    fn add_literal(&mut self, key: &str, at: &Location, refile: bool) {
        let (negated, body) = match key.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, key),
        };
        let lower = body.to_ascii_lowercase();
        let Some(address) = parse_address_entry(&lower) else {
            if looks_like_address(&lower) {
                self.warn(
                    at,
                    format!(
                        "`{body}` looks like an address or network but is not one OpenDKIM can \
                         match (it compares text against addresses written like `192.0.2.1`, \
                         `192.0.2.0/24`, `2001:db8::/32`), so this entry never matches"
                    ),
                );
            } else if !refile && body.contains('*') {
                self.warn(
                    at,
                    format!(
                        "`{body}` contains `*`, which is not a wildcard in a host list (it only \
                         matches a literal `*`); write `.example.com` to match every host in a domain"
                    ),
                );
            }
            *self.names.entry(lower).or_default() |= if negated { NEG } else { POS };
            return;
        };
        let canonical = address.normalised().canonical_text();
        if canonical != lower {
            let why = if address.has_host_bits() {
                "has host bits set; OpenDKIM only matches a network written as its network \
                 address"
            } else {
                "is not written the way OpenDKIM prints addresses (it compares text)"
            };
            self.warn(
                at,
                format!(
                    "`{body}` {why}, so OpenDKIM would never have matched this entry; dkim-sidecar \
                     treats it as `{canonical}`. Write `{canonical}` to silence this warning"
                ),
            );
        }
        let address = address.normalised();
        *self.names.entry(address.canonical_text()).or_default() |= if negated { NEG } else { POS };
        let flag = match (address.bracket, negated) {
            (false, true) => NEG_PLAIN,
            (false, false) => POS_PLAIN,
            (true, true) => NEG_BRACKET,
            (true, false) => POS_BRACKET,
        };
        match address.addr {
            IpAddr::V4(a) => {
                let level = address.prefix.unwrap_or(V4_EXACT);
                *self.v4.entry((level, u32::from(a))).or_default() |= flag;
                self.v4_levels.push(level);
            }
            IpAddr::V6(a) => {
                let level = address.prefix.unwrap_or(V6_EXACT);
                *self.v6.entry((level, u128::from(a))).or_default() |= flag;
                self.v6_levels.push(level);
            }
        }
    }

    /// OpenDKIM's `dkimf_checkhost`: does host name `host` (or one of its
    /// parent domains, written `.domain`) match, with no negation first?
    pub fn check_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        // The whole name, then from each `.` on. (OpenDKIM loops forever on
        // a name starting with `.`; we simply do not probe it twice.)
        let steps = std::iter::once(host.as_str())
            .chain(dotted_suffixes(&host).filter(|suffix| suffix.len() < host.len()));
        let mut probe = String::new();
        for name in steps {
            let flags = self.names.get(name).copied().unwrap_or(0);
            if flags & NEG != 0 || self.pattern_matches_negated(name, &mut probe) {
                return false;
            }
            if flags & POS != 0 || self.pattern_matches(name) {
                return true;
            }
        }
        false
    }

    /// OpenDKIM's `dkimf_checkip`: does address `ip` match an address or
    /// network entry, the most specific entry deciding?
    pub fn check_ip(&self, ip: IpAddr) -> bool {
        if !self.patterns.is_empty() {
            return self.check_ip_by_text(ip);
        }
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                for &level in &self.v4_levels {
                    let net = if level == V4_EXACT {
                        a
                    } else {
                        mask_v4(a, level)
                    };
                    if let Some(&flags) = self.v4.get(&(level, net)) {
                        return decide(flags);
                    }
                }
                false
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                for &level in &self.v6_levels {
                    let net = if level == V6_EXACT {
                        a
                    } else {
                        mask_v6(a, level)
                    };
                    if let Some(&flags) = self.v6.get(&(level, net)) {
                        return decide(flags);
                    }
                }
                false
            }
        }
    }

    /// InternalHosts / ExternalIgnoreList as OpenDKIM applies them at end
    /// of headers: the host name as the MTA gave it, or the address. `ip`
    /// is `None` when the MTA sent no address, which OpenDKIM treats as
    /// 127.0.0.1; the caller passes `None` only in that case.
    pub fn matches_client(&self, host: &str, ip: Option<IpAddr>) -> bool {
        self.check_host(host) || self.check_ip(ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)))
    }

    /// PeerList as OpenDKIM applies it at connect: the host name unless it
    /// is empty or an `[address]` literal, then the address if there is one.
    pub fn matches_peer(&self, host: Option<&str>, ip: Option<IpAddr>) -> bool {
        if let Some(host) = host.filter(|h| !h.is_empty() && !h.starts_with('['))
            && self.check_host(host)
        {
            return true;
        }
        ip.is_some_and(|ip| self.check_ip(ip))
    }

    /// Number of entries (lines or list items).
    pub fn len(&self) -> usize {
        self.written.len()
    }

    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }

    /// Every entry as written, in order (for showing the effective rules).
    pub fn entries(&self) -> &[String] {
        &self.written
    }

    /// The file (or configuration line) the list came from.
    pub fn origin(&self) -> &Location {
        &self.origin
    }

    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    fn pattern_matches(&self, text: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(text.as_bytes()))
    }

    fn pattern_matches_negated(&self, text: &str, buf: &mut String) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        buf.clear();
        buf.push('!');
        buf.push_str(text);
        self.pattern_matches(buf)
    }

    /// The slow path for lists with wildcard patterns: every probe string
    /// OpenDKIM would build, in its order.
    fn check_ip_by_text(&self, ip: IpAddr) -> bool {
        let (exact_level, max) = match ip {
            IpAddr::V4(_) => (V4_EXACT, 32u8),
            IpAddr::V6(_) => (V6_EXACT, 128u8),
        };
        let mut text = String::new();
        let mut probe = String::new();
        for level in std::iter::once(exact_level).chain((0..=max).rev()) {
            let (addr_text, flags) = match ip {
                IpAddr::V4(a) => {
                    let a = u32::from(a);
                    let net = if level == V4_EXACT {
                        a
                    } else {
                        mask_v4(a, level)
                    };
                    (Ipv4Addr::from(net).to_string(), self.v4.get(&(level, net)))
                }
                IpAddr::V6(a) => {
                    let a = u128::from(a);
                    let net = if level == V6_EXACT {
                        a
                    } else {
                        mask_v6(a, level)
                    };
                    (inet_ntop6(Ipv6Addr::from(net)), self.v6.get(&(level, net)))
                }
            };
            let flags = flags.copied().unwrap_or(0);
            let suffix = if level == exact_level {
                String::new()
            } else {
                format!("/{level}")
            };
            for (bracket, neg_flag, pos_flag) in [
                (false, NEG_PLAIN, POS_PLAIN),
                (true, NEG_BRACKET, POS_BRACKET),
            ] {
                text.clear();
                if bracket {
                    let _ = write!(text, "[{addr_text}]{suffix}");
                } else {
                    let _ = write!(text, "{addr_text}{suffix}");
                }
                if flags & neg_flag != 0 || self.pattern_matches_negated(&text, &mut probe) {
                    return false;
                }
                if flags & pos_flag != 0 || self.pattern_matches(&text) {
                    return true;
                }
            }
        }
        false
    }
}

fn decide(flags: u8) -> bool {
    // Within one level OpenDKIM probes `!a`, `a`, `![a]`, `[a]`.
    if flags & NEG_PLAIN != 0 {
        false
    } else if flags & POS_PLAIN != 0 {
        true
    } else {
        flags & NEG_BRACKET == 0
    }
}

/// The network of `a` with a `bits`-bit prefix (`bits` ≤ 32).
fn mask_v4(a: u32, bits: u8) -> u32 {
    Ipv4Net::new(Ipv4Addr::from(a), bits)
        .expect("IPv4 prefix length is at most 32")
        .network()
        .into()
}

/// The network of `a` with a `bits`-bit prefix (`bits` ≤ 128).
fn mask_v6(a: u128, bits: u8) -> u128 {
    Ipv6Net::new(Ipv6Addr::from(a), bits)
        .expect("IPv6 prefix length is at most 128")
        .network()
        .into()
}

/// Parses `a`, `[a]`, `a/bits`, `[a]/bits` (already lowercased).
fn parse_address_entry(text: &str) -> Option<AddressEntry> {
    let (head, prefix) = match text.split_once('/') {
        Some((head, bits)) => {
            if bits.is_empty() || !bits.bytes().all(|b| b.is_ascii_digit()) || bits.len() > 3 {
                return None;
            }
            (head, Some(bits.parse::<u8>().ok()?))
        }
        None => (text, None),
    };
    let (inner, bracket) = match head.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => (inner, true),
        None => (head, false),
    };
    let addr: IpAddr = if inner.contains(':') {
        IpAddr::V6(inner.parse().ok()?)
    } else {
        IpAddr::V4(inner.parse().ok()?)
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix.is_some_and(|p| p > max) {
        return None;
    }
    Some(AddressEntry {
        addr,
        bracket,
        prefix,
    })
}

fn looks_like_address(text: &str) -> bool {
    text.contains(['/', ':', '['])
        || (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

impl AddressEntry {
    fn has_host_bits(&self) -> bool {
        match (self.addr, self.prefix) {
            (IpAddr::V4(a), Some(p)) => mask_v4(u32::from(a), p) != u32::from(a),
            (IpAddr::V6(a), Some(p)) => mask_v6(u128::from(a), p) != u128::from(a),
            _ => false,
        }
    }

    /// The network this entry denotes (host bits cleared).
    fn normalised(&self) -> AddressEntry {
        let addr = match (self.addr, self.prefix) {
            (IpAddr::V4(a), Some(p)) => IpAddr::V4(Ipv4Addr::from(mask_v4(u32::from(a), p))),
            (IpAddr::V6(a), Some(p)) => IpAddr::V6(Ipv6Addr::from(mask_v6(u128::from(a), p))),
            (addr, None) => addr,
        };
        AddressEntry {
            addr,
            bracket: self.bracket,
            prefix: self.prefix,
        }
    }

    /// The text OpenDKIM would build for this entry (after masking).
    fn canonical_text(&self) -> String {
        let addr = match self.addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => inet_ntop6(a),
        };
        let mut text = if self.bracket {
            format!("[{addr}]")
        } else {
            addr
        };
        if let Some(p) = self.prefix {
            let _ = write!(text, "/{p}");
        }
        text
    }
}

/// An IPv6 address written exactly as glibc's `inet_ntop` writes it (which
/// is what OpenDKIM compares entries with): lowercase hex without leading
/// zeros, the first longest run of two or more zero groups as `::`, and
/// the last 32 bits in dotted decimal when the address is `::a.b.c.d`
/// (six zero groups) or `::ffff:a.b.c.d`.
pub(crate) fn inet_ntop6(addr: Ipv6Addr) -> String {
    let words = addr.segments();
    let (mut best_base, mut best_len) = (usize::MAX, 0usize);
    let mut i = 0;
    while i < 8 {
        if words[i] == 0 {
            let start = i;
            while i < 8 && words[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                best_base = start;
                best_len = i - start;
            }
        } else {
            i += 1;
        }
    }
    if best_len < 2 {
        best_base = usize::MAX;
    }
    let mut out = String::with_capacity(40);
    let mut i = 0;
    while i < 8 {
        if best_base != usize::MAX && i >= best_base && i < best_base + best_len {
            if i == best_base {
                out.push(':');
            }
            i += 1;
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6 && best_base == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff)) {
            let o = addr.octets();
            let _ = write!(out, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
            return out;
        }
        let _ = write!(out, "{:x}", words[i]);
        i += 1;
    }
    if best_base != usize::MAX && best_base + best_len == 8 {
        out.push(':');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(kind: DataSetKind, text: &str) -> HostList {
        let set = DataSet::parse_file_bytes(
            kind,
            text.as_bytes(),
            Location::file("/etc/opendkim/TrustedHosts"),
        )
        .unwrap();
        HostList::from_data_set(set).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The list used against opendkim 2.11 (tests/fixtures/tables/hosts);
    /// every expectation below is what the binary did, except where noted.
    const HOSTS: &str = "\
192.0.2.0/24
!192.0.2.7
198.51.100.5/24
!10.0.0.0/8
10.1.0.0/16
2001:db8::/32
2001:0db9::/32
203.0.113.9
.example.org
!bad.example.org
host.example.net
[172.16.0.1]
[172.16.5.0]/24
  192.0.2.77    # comment
";

    #[test]
    fn address_inside_listed_network_matches() {
        let l = list(DataSetKind::File, HOSTS);
        assert!(l.matches_client("unknown", Some(ip("192.0.2.5"))));
        assert!(l.matches_client("unknown", Some(ip("2001:db8::5"))));
        assert!(l.matches_client("unknown", Some(ip("203.0.113.9"))));
        assert!(!l.matches_client("unknown", Some(ip("203.0.113.10"))));
    }

    #[test]
    fn negated_host_inside_allowed_network_is_excluded() {
        let l = list(DataSetKind::File, HOSTS);
        assert!(!l.matches_client("unknown", Some(ip("192.0.2.7"))));
    }

    #[test]
    fn negated_subnet_excludes_host_inside_allowed_network() {
        let l = list(DataSetKind::File, "10.0.0.0/8\n!10.1.0.0/16\n");
        assert!(!l.check_ip(ip("10.1.2.3")));
        assert!(l.check_ip(ip("10.2.0.1")));
    }

    #[test]
    fn more_specific_entry_wins_over_earlier_negation() {
        let l = list(DataSetKind::File, HOSTS);
        assert!(l.check_ip(ip("10.1.2.3")));
        assert!(!l.check_ip(ip("10.2.0.1")));
    }

    #[test]
    fn negation_wins_at_equal_specificity() {
        let l = list(DataSetKind::File, "192.0.2.0/24\n!192.0.2.0/24\n");
        assert!(!l.check_ip(ip("192.0.2.9")));
        let l = list(DataSetKind::File, "192.0.2.9\n![192.0.2.9]\n");
        assert!(
            l.check_ip(ip("192.0.2.9")),
            "plain form is probed before the bracket form"
        );
        let l = list(DataSetKind::File, "[192.0.2.9]\n!192.0.2.9/32\n");
        assert!(
            l.check_ip(ip("192.0.2.9")),
            "the bare address is probed before /32"
        );
    }

    #[test]
    fn cidr_with_host_bits_is_normalised_with_warning() {
        // opendkim never matches 198.51.100.5/24 (checked: 198.51.100.0
        // and .5 stay unsigned); we match the network and say so.
        let l = list(DataSetKind::File, HOSTS);
        assert!(l.check_ip(ip("198.51.100.5")));
        assert!(l.check_ip(ip("198.51.100.200")));
        let w: Vec<String> = l.warnings().iter().map(ToString::to_string).collect();
        assert!(
            w.iter()
                .any(|w| w.starts_with("/etc/opendkim/TrustedHosts:3: ")
                    && w.contains("198.51.100.0/24")
                    && w.contains("never")),
            "{w:?}"
        );
    }

    #[test]
    fn non_canonical_ipv6_is_normalised_with_warning() {
        let l = list(DataSetKind::File, HOSTS);
        assert!(l.check_ip(ip("2001:db9::1")));
        assert!(
            l.warnings()
                .iter()
                .any(|w| w.at.as_ref().unwrap().line == 7 && w.message.contains("2001:db9::/32"))
        );
    }

    #[test]
    fn ipv4_mapped_client_does_not_match_ipv4_entry() {
        let l = list(DataSetKind::File, HOSTS);
        assert!(!l.check_ip(ip("::ffff:203.0.113.9")));
        let l = list(DataSetKind::File, "::ffff:203.0.113.0/120\n");
        assert!(l.check_ip(ip("::ffff:203.0.113.9")));
        assert!(!l.check_ip(ip("203.0.113.9")));
        assert!(l.warnings().is_empty());
    }

    #[test]
    fn domain_suffix_matches_subdomains_only() {
        let l = list(DataSetKind::File, HOSTS);
        assert!(l.matches_client("mail.example.org", Some(ip("192.168.9.9"))));
        assert!(!l.matches_client("example.org", Some(ip("192.168.9.9"))));
    }

    #[test]
    fn negated_host_name_only_blocks_the_name_check() {
        let l = list(DataSetKind::File, HOSTS);
        assert!(!l.matches_client("bad.example.org", Some(ip("192.168.9.9"))));
        // x.bad.example.org reaches `.example.org` before any negation.
        assert!(l.matches_client("x.bad.example.org", Some(ip("192.168.9.9"))));
        // The address still counts on its own.
        assert!(l.matches_client("bad.example.org", Some(ip("192.0.2.5"))));
    }

    #[test]
    fn host_names_match_case_insensitively() {
        let l = list(DataSetKind::File, HOSTS);
        assert!(l.matches_client("HOST.Example.NET", Some(ip("192.168.9.9"))));
    }

    #[test]
    fn bracketed_address_and_network_match() {
        let l = list(DataSetKind::File, HOSTS);
        assert!(l.check_ip(ip("172.16.0.1")));
        assert!(l.check_ip(ip("172.16.5.9")));
        // The MTA's `[addr]` host name matches bracket entries textually.
        assert!(l.check_host("[172.16.0.1]"));
    }

    #[test]
    fn configured_list_replaces_the_default() {
        let l = list(DataSetKind::File, HOSTS);
        assert!(!l.matches_client("localhost", Some(ip("127.0.0.1"))));
    }

    #[test]
    fn default_internal_hosts_are_loopback_only() {
        let l = HostList::default_internal();
        assert!(l.matches_client("localhost", Some(ip("127.0.0.1"))));
        assert!(l.matches_client("localhost", Some(ip("::1"))));
        assert!(l.matches_client("", None), "no address counts as 127.0.0.1");
        assert!(!l.matches_client("localhost", Some(ip("127.0.0.2"))));
        assert!(!l.matches_client("localhost", Some(ip("::ffff:127.0.0.1"))));
        assert!(l.warnings().is_empty());
    }

    #[test]
    fn peer_list_skips_bracketed_host_names() {
        let l = list(DataSetKind::File, "[192.0.2.1]\nrelay.example.com\n");
        assert!(!l.matches_peer(Some("[192.0.2.1]"), None));
        assert!(l.matches_peer(Some("[192.0.2.1]"), Some(ip("192.0.2.1"))));
        assert!(l.matches_peer(Some("Relay.Example.com"), None));
        assert!(!l.matches_peer(None, None));
    }

    #[test]
    fn csl_list_matches_like_a_file() {
        let at = Location::new("/etc/opendkim.conf", 12);
        let l = HostList::open("127.0.0.1, ::1, 192.168.0.0/16, !192.168.1.1", &at).unwrap();
        assert!(l.check_ip(ip("192.168.7.7")));
        assert!(!l.check_ip(ip("192.168.1.1")));
        assert!(l.check_ip(ip("::1")));
    }

    #[test]
    fn whole_internet_networks_match_everything() {
        let l = list(DataSetKind::File, "0.0.0.0/0\n::/0\n");
        assert!(l.check_ip(ip("203.0.113.1")));
        assert!(l.check_ip(ip("2001:db8::1")));
    }

    #[test]
    fn malformed_address_never_matches_and_is_warned() {
        let l = list(DataSetKind::File, "10.0.0/24\n192.168.1.0/33\n010.0.0.1\n");
        assert!(!l.check_ip(ip("10.0.0.1")));
        assert!(!l.check_ip(ip("192.168.1.1")));
        assert_eq!(l.warnings().len(), 3);
    }

    #[test]
    fn star_in_file_host_list_is_literal_and_warned() {
        let l = list(DataSetKind::File, "*.example.com\n");
        assert!(!l.check_host("mail.example.com"));
        assert_eq!(l.warnings().len(), 1);
    }

    #[test]
    fn refile_host_pattern_starting_with_star_only_excludes() {
        // Confirmed against opendkim: InternalHosts refile with
        // `*.example.org` does not make mail.example.org internal, while
        // `192.168.*` and `mail*.example.net` do include.
        let l = list(
            DataSetKind::Refile,
            "*.example.org\n192.168.*\nmail*.example.net\n10.0.0.1\n",
        );
        assert!(!l.matches_client("mail.example.org", Some(ip("203.0.113.1"))));
        assert!(l.matches_client("unknown", Some(ip("192.168.1.5"))));
        assert!(l.matches_client("MAIL1.example.net", Some(ip("203.0.113.1"))));
        assert!(l.matches_client("unknown", Some(ip("10.0.0.1"))));
        assert_eq!(l.warnings().len(), 1);
    }

    #[test]
    fn refile_bracket_is_a_regex_class_not_an_address() {
        let l = list(DataSetKind::Refile, "[192.0.2.1]\n");
        assert!(!l.check_ip(ip("192.0.2.1")));
        assert!(l.check_host("9"));
    }

    #[test]
    fn inet_ntop6_writes_addresses_like_glibc() {
        // Expected values printed by glibc's inet_ntop on this machine.
        for (input, expected) in [
            ("::2", "::2"),
            ("::1", "::1"),
            ("::", "::"),
            ("::1.2.3.4", "::1.2.3.4"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
            ("::ffff:0:0", "::ffff:0.0.0.0"),
            ("1::", "1::"),
            ("1:0:0:1::1", "1:0:0:1::1"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("::fffe:1.2.3.4", "::fffe:102:304"),
            ("::ffff:1:0", "::ffff:0.1.0.0"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("0:0:0:0:1::", "::1:0:0:0"),
            ("::0.0.1.0", "::100"),
            ("::ffff", "::ffff"),
            ("::1:0:0", "::1:0:0"),
            ("2001:DB8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ] {
            assert_eq!(inet_ntop6(input.parse().unwrap()), expected, "{input}");
        }
    }

    /// OpenDKIM's algorithm, literally: build each probe string and look it
    /// up in the set of entry texts.
    fn textual_check_ip(entries: &[String], ip: IpAddr) -> bool {
        let set: std::collections::HashSet<&str> = entries.iter().map(String::as_str).collect();
        let (exact, max) = match ip {
            IpAddr::V4(_) => (33u8, 32u8),
            IpAddr::V6(_) => (129, 128),
        };
        for level in std::iter::once(exact).chain((0..=max).rev()) {
            let text = match ip {
                IpAddr::V4(a) => Ipv4Addr::from(if level == 33 {
                    u32::from(a)
                } else {
                    mask_v4(a.into(), level)
                })
                .to_string(),
                IpAddr::V6(a) => inet_ntop6(Ipv6Addr::from(if level == 129 {
                    u128::from(a)
                } else {
                    mask_v6(a.into(), level)
                })),
            };
            let suffix = if level == exact {
                String::new()
            } else {
                format!("/{level}")
            };
            for probe in [format!("{text}{suffix}"), format!("[{text}]{suffix}")] {
                if set.contains(format!("!{probe}").as_str()) {
                    return false;
                }
                if set.contains(probe.as_str()) {
                    return true;
                }
            }
        }
        false
    }

    fn v4_entry() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            any::<bool>(),
            0u32..4,
            prop::option::of(0u8..=32),
        )
            .prop_map(|(neg, br, host, bits)| {
                let base = Ipv4Addr::from(0xC000_0200u32 | (host << 6));
                let addr = match bits {
                    Some(b) => Ipv4Addr::from(mask_v4(base.into(), b)),
                    None => base,
                };
                let body = if br {
                    format!("[{addr}]")
                } else {
                    addr.to_string()
                };
                let body = match bits {
                    Some(b) => format!("{body}/{b}"),
                    None => body,
                };
                if neg { format!("!{body}") } else { body }
            })
    }

    fn v6_entry() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            any::<bool>(),
            0u128..4,
            prop::option::of(0u8..=128),
        )
            .prop_map(|(neg, br, host, bits)| {
                let base = 0x2001_0db8_0000_0000_0000_0000_0000_0000u128 | (host << 60) | host;
                let addr = Ipv6Addr::from(match bits {
                    Some(b) => mask_v6(base, b),
                    None => base,
                });
                let text = inet_ntop6(addr);
                let body = if br { format!("[{text}]") } else { text };
                let body = match bits {
                    Some(b) => format!("{body}/{b}"),
                    None => body,
                };
                if neg { format!("!{body}") } else { body }
            })
    }

    proptest! {
        #[test]
        fn parsed_ipv4_lookup_equals_opendkims_textual_probing(
            entries in proptest::collection::vec(v4_entry(), 0..12),
            host in 0u32..256,
        ) {
            let l = list(DataSetKind::File, &entries.join("\n"));
            let client = IpAddr::V4(Ipv4Addr::from(0xC000_0200u32 | host));
            prop_assert_eq!(l.check_ip(client), textual_check_ip(&entries, client));
            prop_assert!(l.warnings().is_empty());
        }

        #[test]
        fn parsed_ipv6_lookup_equals_opendkims_textual_probing(
            entries in proptest::collection::vec(v6_entry(), 0..12),
            host in 0u128..8,
        ) {
            let l = list(DataSetKind::File, &entries.join("\n"));
            let client = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 | (host << 60) | (host & 3)));
            prop_assert_eq!(l.check_ip(client), textual_check_ip(&entries, client));
        }

        #[test]
        fn inet_ntop6_round_trips(words in proptest::array::uniform8(prop_oneof![Just(0u16), Just(0xffffu16), any::<u16>()])) {
            let addr = Ipv6Addr::from(words);
            prop_assert_eq!(inet_ntop6(addr).parse::<Ipv6Addr>().unwrap(), addr);
        }
    }
}
