//! `tables`: OpenDKIM data sets and the tables built on them.
//!
//! The input is the contents of a table file, as an administrator or a
//! configuration management tool writes it (seeded from `conf/opendkim/`
//! and `tests/fixtures/`). It is read as a `file:` and as a `refile:` data
//! set, each made into a KeyTable, a SigningTable and a host list
//! (InternalHosts, ExternalIgnoreList); its first line is also read as a
//! data set specification and as a `csl:` list. Each table that loads is
//! then queried the way a message queries it: signing table lookups for
//! senders taken from the input itself (so that lookups hit), key lookups
//! and resolution, the SigningTable-to-KeyTable cross check, and host and
//! address checks against the host lists.
//!
//! Findings are panics (including slicing on a non-character boundary and
//! arithmetic overflow, as the targets build with debug assertions) and
//! runaway time or memory in the pattern matching.

#![no_main]

use std::net::IpAddr;

use dkim_sidecar::diagnostics::Location;
use dkim_sidecar::tables::{DataSet, DataSetKind, DataSetSpec, HostList, KeyTable, SigningTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let origin = Location::file("/fuzz/table");
    let mut sets = Vec::new();
    for kind in [DataSetKind::File, DataSetKind::Refile] {
        if let Ok(set) = DataSet::parse_file_bytes(kind, data, origin.clone()) {
            sets.push(set);
        }
    }
    let text = String::from_utf8_lossy(data);
    let first_line = text.lines().next().unwrap_or("");
    let at = origin.at_line(1);
    let _ = DataSetSpec::parse(first_line, &at).map(|(spec, _)| spec.kind());
    sets.push(DataSet::from_csl(first_line, &at));

    // Probes taken from the input: every key and value, split the ways a
    // sender address and a host are.
    let mut probes: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .take(64)
        .collect();
    probes.extend(["", "@", "user@example.com", "example.com", "localhost", "*"]);

    for set in sets {
        let keys = KeyTable::from_data_set(set.clone()).ok();
        if let Some(keys) = &keys {
            for probe in &probes {
                if let Some(entry) = keys.get(probe) {
                    let _ = entry.resolve(probe);
                }
            }
            for entry in keys.entries() {
                let _ = entry.resolve("example.com");
            }
        }
        if let Ok(signing) = SigningTable::from_data_set(set.clone()) {
            for probe in &probes {
                let (user, domain) = probe.rsplit_once('@').unwrap_or(("", probe));
                let first = signing.find_first(user, domain);
                let all = signing.find_all(user, domain);
                assert_eq!(
                    first.is_empty(),
                    all.is_empty(),
                    "find_first and find_all disagree on {user:?}@{domain:?}"
                );
                assert!(
                    first.len() <= all.len(),
                    "find_first found more than find_all for {user:?}@{domain:?}"
                );
            }
            if let Some(keys) = &keys {
                let _ = signing.check_keys(keys);
            }
        }
        if let Ok(hosts) = HostList::from_data_set(set) {
            for probe in &probes {
                let ip = probe
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<IpAddr>()
                    .ok();
                let _ = hosts.check_host(probe);
                let _ = hosts.matches_client(probe, ip);
                let _ = hosts.matches_peer(Some(probe), ip);
                if let Some(ip) = ip {
                    let _ = hosts.check_ip(ip);
                }
            }
            let _ = (hosts.len(), hosts.is_empty());
        }
    }
});
