//! `dkim-sidecar doctor` against a real authoritative DNS server (Knot, on
//! loopback) serving a correct domain and one domain per mistake a guide
//! reader makes, reverse zone included. Each mistake must be caught with
//! the right id and status; each fix, loaded back into a fresh server in
//! place of the broken records, must make its check pass. A server that
//! never answers must give DNS timeouts, reported as such.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use tempfile::TempDir;
use testkit::command::{run_ok, sidecar, stderr, stdout};
use testkit::dns::DnsServer;
use testkit::openssl::openssl_rsa_p;
use testkit::{TestKeys, scratch_dir};

/// The sending IP of the correct setup.
const IP: &str = "192.0.2.10";
const REVERSE_ZONE: &str = "2.0.192.in-addr.arpa";

/// Every domain the configuration signs for (one selector `sel`, RSA;
/// good.test also `ed`, Ed25519).
const DOMAINS: &[&str] = &[
    "good.test",
    "comma.test",
    "mismatch.test",
    "quotes.test",
    "cut.test",
    "nop.test",
    "nodkim.test",
    "testing.test",
    "spfmiss.test",
    "spflookups.test",
    "spfvoid.test",
    "spfall.test",
    "mxip.test",
    "mxcname.test",
    "nomx.test",
    "nullmx.test",
    "dmarcnone.test",
    "dmarcbad.test",
    "strict.test",
];

/// A zone-file TXT line: the value in quoted strings of at most 255 bytes.
fn txt(owner: &str, value: &str) -> String {
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|chunk| {
            let text = String::from_utf8_lossy(chunk)
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            format!("\"{text}\"")
        })
        .collect();
    format!("{owner} IN TXT {}", strings.join(" "))
}

/// A line of a zone: its owner (absolute, no dot), type, and text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    owner: String,
    kind: String,
    text: String,
}

fn line(owner: &str, kind: &str, text: String) -> Line {
    Line {
        owner: owner.to_string(),
        kind: kind.to_string(),
        text,
    }
}

/// The test's world: keys, configuration, and the zones.
struct World {
    dir: TempDir,
    config: PathBuf,
    rsa_p: String,
    ed_p: String,
    other_rsa_p: String,
}

impl World {
    fn new() -> World {
        let dir = scratch_dir("doctor");
        let keys = TestKeys::copy_into(dir.path());
        let mut key_table = String::new();
        let mut signing_table = String::new();
        for domain in DOMAINS {
            key_table.push_str(&format!(
                "sel._domainkey.{domain} {domain}:sel:{}\n",
                keys.rsa.private_key.display()
            ));
            signing_table.push_str(&format!("*@{domain} sel._domainkey.{domain}\n"));
        }
        // Mail From a subdomain, signed with the parent's d=.
        signing_table.push_str("*@news.strict.test sel._domainkey.strict.test\n");
        key_table.push_str(&format!(
            "ed._domainkey.good.test good.test:ed:{}\n",
            keys.ed25519.private_key.display()
        ));
        let path = dir.path();
        std::fs::write(path.join("KeyTable"), key_table).unwrap();
        std::fs::write(path.join("SigningTable"), signing_table).unwrap();
        let config = path.join("opendkim.conf");
        std::fs::write(
            &config,
            format!(
                "Mode s\nSocket inet:8891@localhost\nKeyTable {0}/KeyTable\n\
                 SigningTable refile:{0}/SigningTable\n",
                path.display()
            ),
        )
        .unwrap();
        let other = path.join("other.pem");
        run_ok(
            "openssl",
            "openssl",
            &["genrsa", "-out", other.to_str().unwrap(), "2048"],
            path,
        );
        World {
            config,
            rsa_p: openssl_rsa_p(&keys.rsa.private_key),
            ed_p: testkit::openssl::openssl_ed25519_p(&keys.ed25519.private_key),
            other_rsa_p: openssl_rsa_p(&other),
            dir,
        }
    }

    fn dkim(&self) -> String {
        format!("v=DKIM1; h=sha256; k=rsa; p={}", self.rsa_p)
    }

    /// The correct records of `domain`.
    fn good_lines(&self, domain: &str) -> Vec<Line> {
        let mut lines = vec![
            line(
                &format!("sel._domainkey.{domain}"),
                "TXT",
                txt(&format!("sel._domainkey.{domain}."), &self.dkim()),
            ),
            line(
                domain,
                "TXT",
                txt(&format!("{domain}."), &format!("v=spf1 ip4:{IP} -all")),
            ),
            line(domain, "MX", format!("{domain}. IN MX 10 mail.{domain}.")),
            line(
                &format!("mail.{domain}"),
                "A",
                format!("mail.{domain}. IN A {IP}"),
            ),
            line(
                &format!("_dmarc.{domain}"),
                "TXT",
                txt(
                    &format!("_dmarc.{domain}."),
                    &format!("v=DMARC1; p=reject; rua=mailto:dmarc@{domain}"),
                ),
            ),
        ];
        if domain == "good.test" {
            lines.push(line(
                "ed._domainkey.good.test",
                "TXT",
                txt(
                    "ed._domainkey.good.test.",
                    &format!("v=DKIM1; k=ed25519; p={}", self.ed_p),
                ),
            ));
        }
        lines
    }

    /// The reverse zone: .10 is mail.good.test; .30 points at a name that
    /// does not resolve back; .40 at a generic provider name.
    fn reverse_lines() -> Vec<Line> {
        vec![
            line(
                &format!("10.{REVERSE_ZONE}"),
                "PTR",
                format!("10.{REVERSE_ZONE}. IN PTR mail.good.test."),
            ),
            line(
                &format!("30.{REVERSE_ZONE}"),
                "PTR",
                format!("30.{REVERSE_ZONE}. IN PTR elsewhere.good.test."),
            ),
            line(
                "elsewhere.good.test",
                "A",
                "elsewhere.good.test. IN A 192.0.2.99".to_string(),
            ),
            line(
                &format!("40.{REVERSE_ZONE}"),
                "PTR",
                format!("40.{REVERSE_ZONE}. IN PTR 192-0-2-40.dyn.good.test."),
            ),
            line(
                "192-0-2-40.dyn.good.test",
                "A",
                "192-0-2-40.dyn.good.test. IN A 192.0.2.40".to_string(),
            ),
        ]
    }

    /// Every domain's records with each one's mistake in place.
    fn broken_lines(&self) -> Vec<Line> {
        let mut all: Vec<Line> = Vec::new();
        for domain in DOMAINS {
            let mut lines = self.good_lines(domain);
            let replace = |lines: &mut Vec<Line>, owner: &str, kind: &str, new: Vec<Line>| {
                lines.retain(|l| !(l.owner == owner && l.kind == kind));
                lines.extend(new);
            };
            let dkim_owner = format!("sel._domainkey.{domain}");
            let dkim = |value: &str| {
                vec![line(
                    &dkim_owner,
                    "TXT",
                    txt(&format!("{dkim_owner}."), value),
                )]
            };
            match *domain {
                "comma.test" => replace(
                    &mut lines,
                    &dkim_owner,
                    "TXT",
                    dkim(&format!("v=DKIM1,k=rsa,p={}", self.rsa_p)),
                ),
                "mismatch.test" => replace(
                    &mut lines,
                    &dkim_owner,
                    "TXT",
                    dkim(&format!("v=DKIM1; k=rsa; p={}", self.other_rsa_p)),
                ),
                "quotes.test" => replace(
                    &mut lines,
                    &dkim_owner,
                    "TXT",
                    dkim(&format!("\"{}\"", self.dkim())),
                ),
                "cut.test" => {
                    let whole = self.dkim();
                    replace(&mut lines, &dkim_owner, "TXT", dkim(&whole[..255]));
                }
                "nop.test" => replace(&mut lines, &dkim_owner, "TXT", dkim("v=DKIM1; k=rsa")),
                "nodkim.test" => replace(&mut lines, &dkim_owner, "TXT", Vec::new()),
                "testing.test" => replace(
                    &mut lines,
                    &dkim_owner,
                    "TXT",
                    dkim(&format!("v=DKIM1; k=rsa; t=y; p={}", self.rsa_p)),
                ),
                "spfmiss.test" => replace(
                    &mut lines,
                    domain,
                    "TXT",
                    vec![line(
                        domain,
                        "TXT",
                        txt("spfmiss.test.", "v=spf1 ip4:192.0.2.99 -all"),
                    )],
                ),
                "spflookups.test" => {
                    let mut record = "v=spf1".to_string();
                    let mut new = Vec::new();
                    for n in 1..=11 {
                        let owner = format!("i{n}.spflookups.test");
                        record.push_str(&format!(" include:{owner}"));
                        new.push(line(
                            &owner,
                            "TXT",
                            txt(
                                &format!("{owner}."),
                                &format!("v=spf1 ip4:198.51.100.{n} -all"),
                            ),
                        ));
                    }
                    record.push_str(&format!(" ip4:{IP} -all"));
                    new.push(line(domain, "TXT", txt("spflookups.test.", &record)));
                    replace(&mut lines, domain, "TXT", new);
                }
                "spfvoid.test" => replace(
                    &mut lines,
                    domain,
                    "TXT",
                    vec![line(
                        domain,
                        "TXT",
                        txt(
                            "spfvoid.test.",
                            &format!(
                                "v=spf1 a:nx1.spfvoid.test a:nx2.spfvoid.test \
                                 a:nx3.spfvoid.test ip4:{IP} -all"
                            ),
                        ),
                    )],
                ),
                "spfall.test" => replace(
                    &mut lines,
                    domain,
                    "TXT",
                    vec![line(
                        domain,
                        "TXT",
                        txt("spfall.test.", &format!("v=spf1 ip4:{IP} +all")),
                    )],
                ),
                "mxip.test" => replace(
                    &mut lines,
                    domain,
                    "MX",
                    vec![line(domain, "MX", format!("mxip.test. IN MX 10 {IP}"))],
                ),
                "mxcname.test" => replace(
                    &mut lines,
                    domain,
                    "MX",
                    vec![
                        line(
                            domain,
                            "MX",
                            "mxcname.test. IN MX 10 alias.mxcname.test.".to_string(),
                        ),
                        line(
                            "alias.mxcname.test",
                            "CNAME",
                            "alias.mxcname.test. IN CNAME mail.mxcname.test.".to_string(),
                        ),
                    ],
                ),
                "nomx.test" => replace(&mut lines, domain, "MX", Vec::new()),
                "nullmx.test" => replace(
                    &mut lines,
                    domain,
                    "MX",
                    vec![line(domain, "MX", "nullmx.test. IN MX 0 .".to_string())],
                ),
                "dmarcnone.test" => replace(
                    &mut lines,
                    "_dmarc.dmarcnone.test",
                    "TXT",
                    vec![line(
                        "_dmarc.dmarcnone.test",
                        "TXT",
                        txt(
                            "_dmarc.dmarcnone.test.",
                            "v=DMARC1; p=none; rua=mailto:d@dmarcnone.test",
                        ),
                    )],
                ),
                "dmarcbad.test" => replace(
                    &mut lines,
                    "_dmarc.dmarcbad.test",
                    "TXT",
                    vec![line(
                        "_dmarc.dmarcbad.test",
                        "TXT",
                        txt(
                            "_dmarc.dmarcbad.test.",
                            "v=DMARC1; p=reject; rua=reports@dmarcbad.test",
                        ),
                    )],
                ),
                "strict.test" => replace(
                    &mut lines,
                    "_dmarc.strict.test",
                    "TXT",
                    vec![line(
                        "_dmarc.strict.test",
                        "TXT",
                        txt(
                            "_dmarc.strict.test.",
                            "v=DMARC1; p=reject; adkim=s; rua=mailto:d@strict.test",
                        ),
                    )],
                ),
                _ => {}
            }
            all.extend(lines);
        }
        all.extend(World::reverse_lines());
        all
    }

    fn zones() -> Vec<String> {
        let mut zones: Vec<String> = DOMAINS.iter().map(|d| (*d).to_string()).collect();
        zones.push(REVERSE_ZONE.to_string());
        zones
    }

    /// A server serving `lines`.
    fn serve(lines: &[Line], extra_zone_lines: &[String]) -> DnsServer {
        let zones = World::zones();
        let mut builder = DnsServer::builder();
        for zone in &zones {
            builder = builder.zone(&format!("{zone}."));
        }
        let zone_of = |owner: &str| -> String {
            let owner = owner.trim_end_matches('.');
            zones
                .iter()
                .filter(|z| owner == z.as_str() || owner.ends_with(&format!(".{z}")))
                .max_by_key(|z| z.len())
                .unwrap_or_else(|| panic!("no zone for {owner}"))
                .clone()
        };
        for l in lines {
            builder = builder.line(&zone_of(&l.owner), &l.text);
        }
        for text in extra_zone_lines {
            let owner = text.split_whitespace().next().unwrap();
            builder = builder.line(&zone_of(owner), text);
        }
        builder.start()
    }

    fn doctor(&self, server: &DnsServer, extra: &[&str]) -> (Output, Value) {
        let nameserver = server.addr().to_string();
        let config = self.config.to_str().unwrap();
        let mut args = vec![
            "doctor",
            "-x",
            config,
            "--nameserver",
            &nameserver,
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = sidecar(&args, self.dir.path());
        let json: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| {
            panic!(
                "doctor did not print JSON ({e}):\n{}\n{}",
                stdout(&out),
                stderr(&out)
            )
        });
        (out, json)
    }
}

/// The checks of `domain` in a JSON report (`host` for the PTR checks).
fn checks<'a>(report: &'a Value, domain: &str) -> Vec<&'a Value> {
    if domain == "host" {
        return report["host"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .collect();
    }
    report["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["domain"] == domain)
        .unwrap_or_else(|| panic!("no domain {domain} in {report:#}"))["checks"]
        .as_array()
        .unwrap()
        .iter()
        .collect()
}

/// The first check of `domain` with this id whose status is not ok.
fn faulty<'a>(report: &'a Value, domain: &str, id: &str) -> &'a Value {
    checks(report, domain)
        .into_iter()
        .find(|c| c["id"] == id && c["status"] != "ok")
        .unwrap_or_else(|| panic!("{domain}: no faulty {id} check in {report:#}"))
}

/// Zone lines of a check's fix.
fn fix_lines(check: &Value) -> Vec<String> {
    check["fix"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["zone"].as_str().unwrap().to_string())
        .collect()
}

struct Mistake {
    domain: &'static str,
    id: &'static str,
    status: &'static str,
    /// Words the message must hold.
    says: &'static str,
    /// The (owner, type) records the fix replaces.
    replaces: &'static [(&'static str, &'static str)],
    /// The sending IP to check with.
    ip: &'static str,
    /// The HELO name to check with.
    helo: &'static str,
}

const MISTAKES: &[Mistake] = &[
    Mistake {
        domain: "comma.test",
        id: "dkim",
        status: "fail",
        says: "separate tags with `;`",
        replaces: &[("sel._domainkey.comma.test", "TXT")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "mismatch.test",
        id: "dkim",
        status: "fail",
        says: "different public key",
        replaces: &[("sel._domainkey.mismatch.test", "TXT")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "quotes.test",
        id: "dkim",
        status: "fail",
        says: "stray `\"`",
        replaces: &[("sel._domainkey.quotes.test", "TXT")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "cut.test",
        id: "dkim",
        status: "fail",
        says: "cut at 255 characters",
        replaces: &[("sel._domainkey.cut.test", "TXT")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "nop.test",
        id: "dkim",
        status: "fail",
        says: "p=: is missing",
        replaces: &[("sel._domainkey.nop.test", "TXT")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "nodkim.test",
        id: "dkim",
        status: "fail",
        says: "no TXT record at sel._domainkey.nodkim.test",
        replaces: &[],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "testing.test",
        id: "dkim",
        status: "warn",
        says: "t=y",
        replaces: &[("sel._domainkey.testing.test", "TXT")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "spfmiss.test",
        id: "spf",
        status: "fail",
        says: "does not list this sending address",
        replaces: &[("spfmiss.test", "TXT")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "spflookups.test",
        id: "spf",
        status: "fail",
        says: "11 DNS-querying terms",
        replaces: &[("spflookups.test", "TXT")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "spfvoid.test",
        id: "spf",
        status: "fail",
        says: "3 void lookups",
        replaces: &[("spfvoid.test", "TXT")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "spfall.test",
        id: "spf",
        status: "warn",
        says: "+all",
        replaces: &[("spfall.test", "TXT")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "mxip.test",
        id: "mx",
        status: "fail",
        says: "is an IP address",
        replaces: &[("mxip.test", "MX")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "mxcname.test",
        id: "mx",
        status: "fail",
        says: "is a CNAME",
        replaces: &[("mxcname.test", "MX")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "nomx.test",
        id: "mx",
        status: "fail",
        says: "no MX record",
        replaces: &[],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "dmarcnone.test",
        id: "dmarc",
        status: "warn",
        says: "p=none",
        replaces: &[("_dmarc.dmarcnone.test", "TXT")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "dmarcbad.test",
        id: "dmarc",
        status: "fail",
        says: "is not a mailto: URI",
        replaces: &[("_dmarc.dmarcbad.test", "TXT")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "news.strict.test",
        id: "dmarc",
        status: "fail",
        says: "is signed with d=strict.test, which does not align under adkim=s",
        replaces: &[("_dmarc.strict.test", "TXT")],
        ip: IP,
        helo: "mail.good.test",
    },
    Mistake {
        domain: "host",
        id: "ptr",
        status: "fail",
        says: "has no PTR record",
        replaces: &[],
        ip: "192.0.2.20",
        helo: "mail.good.test",
    },
    Mistake {
        domain: "host",
        id: "ptr",
        status: "fail",
        says: "not forward-confirmed",
        replaces: &[],
        ip: "192.0.2.30",
        helo: "elsewhere.good.test",
    },
    Mistake {
        domain: "host",
        id: "ptr",
        status: "warn",
        says: "generic name",
        replaces: &[("40.2.0.192.in-addr.arpa", "PTR")],
        ip: "192.0.2.40",
        helo: "mail.good.test",
    },
];

#[test]
fn the_correct_domain_is_all_ok_and_exits_0() {
    let world = World::new();
    let server = World::serve(&world.broken_lines(), &[]);
    let (out, report) = world.doctor(
        &server,
        &[
            "--domain",
            "good.test",
            "--ip",
            IP,
            "--helo",
            "mail.good.test",
        ],
    );
    for check in checks(&report, "good.test")
        .iter()
        .chain(&checks(&report, "host"))
    {
        assert_eq!(check["status"], "ok", "{check:#}");
        assert!(check["fix"].is_null(), "{check:#}");
    }
    let ids: Vec<&str> = checks(&report, "good.test")
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dkim", "dkim", "spf", "spf", "mx", "dmarc"]);
    assert_eq!(checks(&report, "host").len(), 1);
    assert_eq!(report["summary"]["fail"], 0);
    assert_eq!(report["summary"]["warn"], 0);
    assert_eq!(report["summary"]["status"], "ok");
    assert_eq!(report["host"]["ips"][0]["source"], "--ip");
    assert_eq!(report["host"]["helo"]["source"], "--helo");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn each_mistake_is_caught_and_its_fix_makes_the_check_pass() {
    let world = World::new();
    let broken = world.broken_lines();
    let server = World::serve(&broken, &[]);
    for mistake in MISTAKES {
        let domain_arg = if mistake.domain == "host" {
            "good.test"
        } else {
            mistake.domain
        };
        let args = [
            "--domain",
            domain_arg,
            "--ip",
            mistake.ip,
            "--helo",
            mistake.helo,
        ];
        let (out, report) = world.doctor(&server, &args);
        let check = faulty(&report, mistake.domain, mistake.id);
        let label = format!("{} {}", mistake.domain, mistake.ip);
        assert_eq!(check["status"], mistake.status, "{label}: {check:#}");
        let message = check["message"].as_str().unwrap();
        assert!(message.contains(mistake.says), "{label}: {message}");
        let expected_exit = if mistake.status == "fail" { 2 } else { 1 };
        assert!(
            out.status.code().unwrap() >= expected_exit,
            "{label}: exit {:?}",
            out.status.code()
        );
        let fix = fix_lines(check);
        assert!(!fix.is_empty(), "{label}: no records in the fix: {check:#}");

        let mut fixed: Vec<Line> = broken.clone();
        fixed.retain(|l| {
            !mistake
                .replaces
                .iter()
                .any(|(owner, kind)| l.owner == *owner && l.kind == *kind)
        });
        let server = World::serve(&fixed, &fix);
        let (_, report) = world.doctor(&server, &args);
        let again: Vec<&Value> = checks(&report, mistake.domain)
            .into_iter()
            .filter(|c| c["id"] == mistake.id)
            .filter(|c| mistake.id != "spf" || c["ip"].is_null() || c["ip"] == mistake.ip)
            .collect();
        assert!(!again.is_empty(), "{label}");
        for check in again {
            assert_eq!(
                check["status"], "ok",
                "{label}: after loading the fix {fix:#?}: {check:#}"
            );
        }
    }
}

#[test]
fn a_null_mx_is_reported_as_such() {
    let world = World::new();
    let server = World::serve(&world.broken_lines(), &[]);
    let (_, report) = world.doctor(&server, &["--domain", "nullmx.test", "--ip", IP]);
    let mx: Vec<&Value> = checks(&report, "nullmx.test")
        .into_iter()
        .filter(|c| c["id"] == "mx")
        .collect();
    assert_eq!(mx[0]["status"], "ok");
    assert!(
        mx[0]["message"].as_str().unwrap().contains("null MX"),
        "{:#}",
        mx[0]
    );
}

#[test]
fn text_output_has_one_line_per_check_the_fix_and_a_summary() {
    let world = World::new();
    let server = World::serve(&world.broken_lines(), &[]);
    let nameserver = server.addr().to_string();
    let out = sidecar(
        &[
            "doctor",
            "-x",
            world.config.to_str().unwrap(),
            "--nameserver",
            &nameserver,
            "--domain",
            "comma.test",
            "--ip",
            IP,
            "--helo",
            "mail.good.test",
        ],
        world.dir.path(),
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}{}", stderr(&out));
    assert!(!text.contains('\x1b'), "colour only on a TTY:\n{text}");
    assert!(text.contains("sending IPs: 192.0.2.10 (--ip)"), "{text}");
    assert!(
        text.contains("HELO name: mail.good.test (--helo)"),
        "{text}"
    );
    assert!(text.contains("comma.test (from KeyTable)"), "{text}");
    let dkim = text
        .lines()
        .find(|l| l.trim_start().starts_with("fail  dkim sel"))
        .unwrap_or_else(|| panic!("no dkim line:\n{text}"));
    assert!(dkim.contains("separate tags with `;`"), "{dkim}");
    assert!(
        text.contains(
            "zone file: sel._domainkey.comma.test.\t3600\tIN\tTXT\t\"v=DKIM1; h=sha256; k=rsa; p="
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "web form:  host sel._domainkey  type TXT  value v=DKIM1; h=sha256; k=rsa; p="
        ),
        "{text}"
    );
    for id in ["spf", "mx", "dmarc", "ptr"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("ok    {id}"))),
            "{id}:\n{text}"
        );
    }
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("summary: 5 ok, 0 warn, 1 fail: fail"),
        "{text}"
    );
}

#[test]
fn a_server_that_never_answers_gives_dns_timeouts_not_missing_records() {
    let world = World::new();
    // A UDP socket that reads nothing and a TCP listener that accepts
    // nothing: queries go out and no answer ever comes.
    // The UDP port's TCP twin may be taken (an earlier test's connection):
    // try another.
    let (silent, _tcp) = (0..50)
        .find_map(|_| {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
            let tcp = TcpListener::bind(udp.local_addr().ok()?).ok()?;
            Some((udp, tcp))
        })
        .expect("a loopback port free for both UDP and TCP");
    let nameserver = silent.local_addr().unwrap().to_string();
    let out = sidecar(
        &[
            "doctor",
            "-x",
            world.config.to_str().unwrap(),
            "--nameserver",
            &nameserver,
            "--domain",
            "good.test",
            "--ip",
            IP,
            "--format",
            "json",
        ],
        world.dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let all: Vec<&Value> = checks(&report, "good.test")
        .into_iter()
        .chain(checks(&report, "host"))
        .collect();
    let ids: BTreeMap<&str, usize> = all.iter().fold(BTreeMap::new(), |mut m, c| {
        *m.entry(c["id"].as_str().unwrap()).or_default() += 1;
        m
    });
    assert_eq!(
        ids.keys().copied().collect::<Vec<_>>(),
        ["dkim", "dmarc", "mx", "ptr", "spf"]
    );
    for check in all {
        assert_eq!(check["status"], "fail", "{check:#}");
        let message = check["message"].as_str().unwrap();
        assert!(message.starts_with("DNS timeout"), "{message}");
        for missing in [
            "no TXT record",
            "no SPF record",
            "no MX record",
            "no DMARC record",
            "has no PTR",
        ] {
            assert!(!message.contains(missing), "{message}");
        }
    }
}

#[test]
fn a_configuration_that_does_not_load_exits_2_with_the_problem() {
    let dir = scratch_dir("doctor-bad");
    let config = dir.path().join("opendkim.conf");
    std::fs::write(
        &config,
        "KeyTable /nonexistent/KeyTable\nSigningTable refile:/nonexistent/S\n",
    )
    .unwrap();
    let out = sidecar(
        &["doctor", "-x", config.to_str().unwrap(), "--ip", IP],
        Path::new("/"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("opendkim.conf"), "{}", stderr(&out));
}

#[test]
fn ips_and_helo_come_from_postconf_when_not_given() {
    let world = World::new();
    let server = World::serve(&world.broken_lines(), &[]);
    // A private Postfix configuration directory: postconf -c reads it.
    let postfix = scratch_dir("doctor-postfix");
    std::fs::write(
        postfix.path().join("main.cf"),
        format!(
            "myhostname = mail.good.test\nsmtp_bind_address = {IP}\ncompatibility_level = 3.6\n"
        ),
    )
    .unwrap();
    let (out, report) = world.doctor(
        &server,
        &[
            "--domain",
            "good.test",
            "--postfix-config",
            postfix.path().to_str().unwrap(),
        ],
    );
    assert_eq!(report["host"]["ips"][0]["value"], IP, "{report:#}");
    assert_eq!(
        report["host"]["ips"][0]["source"],
        "postconf smtp_bind_address"
    );
    assert_eq!(report["host"]["helo"]["value"], "mail.good.test");
    assert_eq!(report["host"]["helo"]["source"], "postconf myhostname");
    let ptr = checks(&report, "host")
        .into_iter()
        .find(|c| c["ip"] == IP)
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(ptr["status"], "ok", "{ptr:#}");
    assert!(out.status.code().is_some());
}

#[test]
fn a_domain_selector_keyfile_configuration_is_checked_too() {
    let world = World::new();
    let server = World::serve(&world.broken_lines(), &[]);
    let config = world.dir.path().join("single.conf");
    std::fs::write(
        &config,
        format!(
            "Mode s\nSocket inet:8891@localhost\nDomain good.test\nSelector sel\nKeyFile {}\n",
            world.dir.path().join("default.private").display()
        ),
    )
    .unwrap();
    let nameserver = server.addr().to_string();
    let out = sidecar(
        &[
            "doctor",
            "-x",
            config.to_str().unwrap(),
            "--nameserver",
            &nameserver,
            "--ip",
            IP,
            "--helo",
            "mail.good.test",
            "--format",
            "json",
        ],
        world.dir.path(),
    );
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["domains"].as_array().unwrap().len(), 1, "{report:#}");
    assert_eq!(report["domains"][0]["source"], "Domain");
    let dkim = &checks(&report, "good.test")[0];
    assert_eq!(dkim["id"], "dkim");
    assert_eq!(dkim["selector"], "sel");
    assert_eq!(dkim["status"], "ok", "{dkim:#}");
    assert_eq!(out.status.code(), Some(0), "{report:#}");
}
