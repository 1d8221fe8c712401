//! Our table decisions against what opendkim 2.11.0~beta2 decided for the
//! same files (recorded in `tests/fixtures/tables/*/opendkim-2.11.expected`
//! by `opendkim-probe.sh`). Deliberate differences are asserted as such.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use dkim_sidecar::diagnostics::Location;
use dkim_sidecar::tables::{DataSet, DataSetKind, HostList, KeyTable, SigningTable};

struct Fixture {
    keys: KeyTable,
    signing: SigningTable,
    internal: HostList,
    multiple: bool,
    cases: Vec<(String, IpAddr, String, String)>,
}

fn fixture(name: &str) -> Fixture {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tables")
        .join(name);
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .replace("@KEY@", "/etc/dkim/key.pem")
    };
    let table = |spec: &str| {
        let (kind, file) = match spec.split_once(':') {
            Some(("refile", f)) => (DataSetKind::Refile, f),
            Some(("file", f)) => (DataSetKind::File, f),
            _ => (DataSetKind::File, spec),
        };
        let file = file.trim_start_matches("@DIR@/");
        DataSet::parse_file_bytes(kind, read(file).as_bytes(), Location::file(dir.join(file)))
            .unwrap()
    };
    let mut keys = None;
    let mut signing = None;
    let mut internal = HostList::default_internal();
    let mut multiple = false;
    for line in read("extra.conf").lines() {
        let (name, value) = line.split_once(' ').unwrap();
        match name {
            "KeyTable" => keys = Some(KeyTable::from_data_set(table(value)).unwrap()),
            "SigningTable" => signing = Some(SigningTable::from_data_set(table(value)).unwrap()),
            "InternalHosts" => internal = HostList::from_data_set(table(value)).unwrap(),
            "MultipleSignatures" => multiple = value == "yes",
            // OpenDKIM applies SubDomains to `Domain` only, never to the SigningTable.
            "SubDomains" => {}
            other => panic!("unexpected option {other}"),
        }
    }
    let cases = read("opendkim-2.11.expected")
        .lines()
        .map(|line| {
            let (case, result) = line.split_once(" => ").unwrap();
            let mut parts = case.splitn(3, ' ');
            let host = parts.next().unwrap().to_string();
            let ip = parts.next().unwrap().parse().unwrap();
            let from = parts.next().unwrap().to_string();
            (host, ip, from, result.to_string())
        })
        .collect();
    Fixture {
        keys: keys.unwrap(),
        signing: signing.unwrap(),
        internal,
        multiple,
        cases,
    }
}

/// What we would sign with, rendered like the probe prints it, in signing
/// order. libopendkim drops an `i=` outside `d=`; that rule belongs to the
/// signer, and is applied here only to compare.
fn our_signatures(f: &Fixture, host: &str, ip: IpAddr, from: &str) -> Vec<String> {
    if !f.internal.matches_client(host, Some(ip)) {
        return Vec::new();
    }
    let (user, domain) = from.rsplit_once('@').unwrap();
    let matches = if f.multiple {
        f.signing.find_all(user, domain)
    } else {
        f.signing.find_first(user, domain).into_iter().collect()
    };
    matches
        .iter()
        .map(|m| {
            let key = f.keys.get(&m.key_name).expect("key exists").resolve(domain);
            let mut s = format!("d={},s={}", key.domain, key.selector);
            if let Some(i) = &m.signer {
                let idomain = i.rsplit_once('@').map_or("", |(_, d)| d);
                if idomain == key.domain || idomain.ends_with(&format!(".{}", key.domain)) {
                    s.push_str(&format!(",i={i}"));
                }
            }
            s
        })
        .collect()
}

/// The probe prints signatures newest first (each is inserted at the top).
fn opendkim_signatures(result: &str) -> Vec<String> {
    if result == "UNSIGNED" {
        return Vec::new();
    }
    let mut signatures: Vec<String> = result.split(" | ").map(str::to_string).collect();
    signatures.reverse();
    signatures
}

fn check_same(name: &str) {
    let f = fixture(name);
    for (host, ip, from, result) in &f.cases {
        assert_eq!(
            our_signatures(&f, host, *ip, from),
            opendkim_signatures(result),
            "{name}: {host} {ip} {from}"
        );
    }
}

#[test]
fn file_signing_table_decisions_match_opendkim() {
    check_same("signing-file");
}

#[test]
fn refile_signing_table_decisions_match_opendkim() {
    check_same("signing-refile");
}

#[test]
fn subdomains_option_does_not_extend_the_signing_table() {
    check_same("signing-subdomains");
}

#[test]
fn refile_host_list_decisions_match_opendkim() {
    check_same("hosts-refile");
}

#[test]
fn file_host_list_decisions_match_opendkim_except_normalised_networks() {
    let f = fixture("hosts-file");
    for (host, ip, from, result) in &f.cases {
        let ours = our_signatures(&f, host, *ip, from);
        let theirs = opendkim_signatures(result);
        // `198.51.100.5/24` and `2001:0db9::/32` never match in OpenDKIM;
        // we match the networks they denote (and warn).
        let normalised =
            ["198.51.100.5", "198.51.100.0", "2001:db9::1"].contains(&ip.to_string().as_str());
        if normalised {
            assert!(theirs.is_empty() && !ours.is_empty(), "{host} {ip}");
        } else {
            assert_eq!(ours, theirs, "{host} {ip} {from}");
        }
    }
}

#[test]
fn multiple_signatures_keep_the_matches_opendkim_drops() {
    for name in ["signing-file-multi", "signing-refile-multi"] {
        let f = fixture(name);
        for (host, ip, from, result) in &f.cases {
            let ours = our_signatures(&f, host, *ip, from);
            let theirs = opendkim_signatures(result);
            // OpenDKIM keeps only the first and the last match.
            let expected: Vec<String> = match ours.len() {
                0..=2 => ours.clone(),
                _ => vec![ours[0].clone(), ours[ours.len() - 1].clone()],
            };
            assert_eq!(expected, theirs, "{name}: {from}: ours {ours:?}");
        }
    }
}
