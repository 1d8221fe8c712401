//! The DNS side of a rotation: find the zone a record belongs to, ask each
//! of the zone's authoritative servers what it serves, and change the zone
//! with an RFC 2136 dynamic update signed with TSIG (RFC 8945).
//!
//! Messages, the update format and TSIG come from hickory-proto (the DNS
//! crate mail-auth already brings in): `Message`, the `UpdateMessage`
//! sections and `TSigner`/`TSigVerifier`. What is written here by hand is
//! only the transport, a blocking send-and-wait over UDP (falling back to
//! TCP on truncation) or TCP, because rotate is a one-shot command with no
//! runtime of its own, and because an update's failure must reach the
//! administrator as the server said it: hickory-net's client treats an
//! unsigned error answer (BIND's reply to an unknown key or a bad MAC)
//! as a TSIG verification failure and loses the server's RCODE and TSIG
//! error, which are exactly what tells a wrong key from a wrong policy.
//!
//! This module never changes anything but the one TXT RRset it is asked
//! to change, never asks a server to recurse when it wants an
//! authoritative answer, and never prints or logs the TSIG secret.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::tsig::TsigError;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::clock::Timestamp;
use super::tsig::TsigKey;

/// How long to wait for one answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// One DNS character-string holds at most 255 bytes.
const MAX_STRING: usize = 255;

/// TTL of the records rotate publishes.
pub const RECORD_TTL: u32 = 3600;

/// Why a DNS exchange did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{server}: no answer within {} s ({detail})", TIMEOUT.as_secs())]
    NoAnswer { server: SocketAddr, detail: String },
    #[error("{server}: {detail}")]
    Bad { server: SocketAddr, detail: String },
    #[error("{name}: {detail}")]
    Name { name: String, detail: String },
}

/// Why the server did not apply an update. The `Display` says what to do.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Exchange(#[from] DnsError),
    #[error("{0}")]
    Key(String),
    /// `answer` is the RCODE (and TSIG error) with what it means.
    #[error("{server} refused the update of zone {zone} ({answer}")]
    Refused {
        server: SocketAddr,
        zone: String,
        answer: String,
    },
    #[error(
        "{server} answered the update of zone {zone}, but the answer's TSIG does not verify \
         ({detail}); the change may or may not have been made: check the zone"
    )]
    Unverified {
        server: SocketAddr,
        zone: String,
        detail: String,
    },
}

/// A server's answer about one name, from an authoritative server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// The TXT record's strings, joined (a `v=DKIM1` one when several).
    Txt(String),
    /// The name or its TXT RRset does not exist (NXDOMAIN or NODATA).
    Missing,
    /// The server answered without the AA bit: it is not authoritative.
    NotAuthoritative,
}

/// One of the zone's authoritative servers: its NS name and an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthServer {
    pub host: String,
    pub addr: SocketAddr,
}

impl fmt::Display for AuthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.host, self.addr)
    }
}

/// `name.` as a DNS name.
pub fn name(text: &str) -> Result<Name, DnsError> {
    let fqdn = if text.ends_with('.') {
        text.to_string()
    } else {
        format!("{text}.")
    };
    Name::from_ascii(&fqdn).map_err(|e| DnsError::Name {
        name: text.to_string(),
        detail: e.to_string(),
    })
}

/// The system resolver: the first `nameserver` of /etc/resolv.conf.
pub fn system_resolver() -> Result<SocketAddr, String> {
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("/etc/resolv.conf: {e}; name a DNS server with --nameserver"))?;
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .find_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .ok_or_else(|| {
            "/etc/resolv.conf names no nameserver; name a DNS server with --nameserver".to_string()
        })
}

/// Sends `message` and returns the answer: over UDP, again over TCP when
/// the answer is truncated; over TCP only when `tcp`.
fn exchange(server: SocketAddr, message: &Message, tcp: bool) -> Result<Message, DnsError> {
    let bytes = message.to_vec().map_err(|e| DnsError::Bad {
        server,
        detail: format!("cannot encode the query: {e}"),
    })?;
    let answer = if tcp {
        exchange_tcp(server, &bytes)?
    } else {
        let answer = exchange_udp(server, &bytes, message.metadata.id)?;
        if parse(server, &answer)?.metadata.truncation {
            exchange_tcp(server, &bytes)?
        } else {
            answer
        }
    };
    let parsed = parse(server, &answer)?;
    if parsed.metadata.id != message.metadata.id {
        return Err(DnsError::Bad {
            server,
            detail: "the answer's id does not match the query's".to_string(),
        });
    }
    Ok(parsed)
}

fn parse(server: SocketAddr, bytes: &[u8]) -> Result<Message, DnsError> {
    Message::from_vec(bytes).map_err(|e| DnsError::Bad {
        server,
        detail: format!("cannot parse the answer: {e}"),
    })
}

fn exchange_udp(server: SocketAddr, bytes: &[u8], id: u16) -> Result<Vec<u8>, DnsError> {
    let no_answer = |e: std::io::Error| DnsError::NoAnswer {
        server,
        detail: e.to_string(),
    };
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let socket = UdpSocket::bind(local).map_err(no_answer)?;
    socket.connect(server).map_err(no_answer)?;
    socket.set_read_timeout(Some(TIMEOUT)).map_err(no_answer)?;
    let mut buffer = vec![0u8; 65_535];
    for _attempt in 0..2 {
        socket.send(bytes).map_err(no_answer)?;
        loop {
            match socket.recv(&mut buffer) {
                Ok(n) if n >= 2 && u16::from_be_bytes([buffer[0], buffer[1]]) == id => {
                    return Ok(buffer[..n].to_vec());
                }
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(no_answer(e)),
            }
        }
    }
    Err(DnsError::NoAnswer {
        server,
        detail: "UDP, two tries".to_string(),
    })
}

fn exchange_tcp(server: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>, DnsError> {
    let no_answer = |e: std::io::Error| DnsError::NoAnswer {
        server,
        detail: format!("TCP: {e}"),
    };
    let mut stream = TcpStream::connect_timeout(&server, TIMEOUT).map_err(no_answer)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(no_answer)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(no_answer)?;
    let length = u16::try_from(bytes.len()).map_err(|_| DnsError::Bad {
        server,
        detail: "the message is too long for TCP".to_string(),
    })?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).map_err(no_answer)?;
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).map_err(no_answer)?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut answer).map_err(no_answer)?;
    Ok(answer)
}

fn query_message(name: &Name, rtype: RecordType, recursion: bool) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = recursion;
    message.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    message.set_edns(edns);
    message
}

fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    recursion: bool,
) -> Result<Message, DnsError> {
    let answer = exchange(server, &query_message(name, rtype, recursion), false)?;
    match answer.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(answer),
        other => Err(DnsError::Bad {
            server,
            detail: format!("answered {} for {name} {rtype}", rcode_name(other)),
        }),
    }
}

/// The zone `record` belongs to, as `server` sees it: the closest
/// enclosing name with an SOA record (taken from the authority section
/// when the server gives it there).
pub fn find_zone(server: SocketAddr, record: &Name, recursion: bool) -> Result<Name, DnsError> {
    let mut candidate = record.clone();
    loop {
        let answer = query(server, &candidate, RecordType::SOA, recursion)?;
        if answer
            .answers
            .iter()
            .any(|r| r.record_type() == RecordType::SOA && r.name == candidate)
        {
            return Ok(candidate);
        }
        if let Some(soa) = answer
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::SOA && r.name.zone_of(record))
        {
            return Ok(soa.name.clone());
        }
        if candidate.is_root() {
            return Err(DnsError::Bad {
                server,
                detail: format!("finds no zone (SOA record) that holds {record}"),
            });
        }
        candidate = candidate.base_name();
    }
}

/// The zone's authoritative servers, from its NS records, each host's
/// addresses asked from `resolver`; each is to be asked on `port`.
pub fn authoritative_servers(
    resolver: SocketAddr,
    zone: &Name,
    port: u16,
) -> Result<Vec<AuthServer>, DnsError> {
    let answer = query(resolver, zone, RecordType::NS, true)?;
    let hosts: Vec<Name> = answer
        .answers
        .iter()
        .filter(|r| r.name == *zone)
        .filter_map(|r| match &r.data {
            RData::NS(ns) => Some(ns.0.clone()),
            _ => None,
        })
        .collect();
    if hosts.is_empty() {
        return Err(DnsError::Bad {
            server: resolver,
            detail: format!("finds no NS records for zone {zone}"),
        });
    }
    let mut servers = Vec::new();
    for host in hosts {
        let mut addresses = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            let answer = query(resolver, &host, rtype, true)?;
            addresses.extend(answer.answers.iter().filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            }));
        }
        if addresses.is_empty() {
            return Err(DnsError::Bad {
                server: resolver,
                detail: format!("finds no address for {host}, an NS of zone {zone}"),
            });
        }
        for ip in addresses {
            servers.push(AuthServer {
                host: host.to_ascii().trim_end_matches('.').to_string(),
                addr: SocketAddr::new(ip, port),
            });
        }
    }
    Ok(servers)
}

/// What the authoritative server `server` serves as TXT at `record`,
/// asked without recursion.
pub fn served_txt(server: SocketAddr, record: &Name) -> Result<Served, DnsError> {
    let answer = query(server, record, RecordType::TXT, false)?;
    if !answer.metadata.authoritative {
        return Ok(Served::NotAuthoritative);
    }
    let chosen = crate::keys::record::key_record_among(
        answer
            .answers
            .iter()
            .filter(|r| r.name == *record)
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(txt),
                _ => None,
            }),
    );
    Ok(chosen.map_or(Served::Missing, Served::Txt))
}

/// The record's text as DNS strings of at most 255 bytes.
fn txt_strings(text: &str) -> Vec<String> {
    let mut strings = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(MAX_STRING);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        strings.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    if strings.is_empty() {
        strings.push(String::new());
    }
    strings
}

/// Replaces the TXT RRset at `record` in `zone` on `server`: deletes what
/// is there and, with `text`, adds that one record, in one update (the
/// server applies it whole or not at all). Signed with `key`; the answer's
/// TSIG is checked.
pub fn replace_txt(
    server: SocketAddr,
    key: &TsigKey,
    zone: &Name,
    record: &Name,
    text: Option<&str>,
) -> Result<(), UpdateError> {
    let signer = key.signer().map_err(UpdateError::Key)?;
    let mut message = Message::new(
        Message::query().metadata.id,
        MessageType::Query,
        OpCode::Update,
    );
    message.metadata.recursion_desired = false;
    let mut zone_query = Query::query(zone.clone(), RecordType::SOA);
    zone_query.set_query_class(DNSClass::IN);
    message.add_zone(zone_query);
    // RFC 2136 2.5.2: delete an RRset (class ANY, TTL 0, no RDATA).
    let mut delete = Record::update0(record.clone(), 0, RecordType::TXT);
    delete.dns_class = DNSClass::ANY;
    message.add_update(delete.into_record_of_rdata());
    if let Some(text) = text {
        // RFC 2136 2.5.1: add to an RRset.
        let add = Record::from_rdata(
            record.clone(),
            RECORD_TTL,
            RData::TXT(TXT::new(txt_strings(text))),
        );
        message.add_update(add);
    }
    let now = u64::try_from(Timestamp::now().unix()).unwrap_or(0);
    let verifier = message
        .finalize(&signer, now)
        .map_err(|e| UpdateError::Key(format!("cannot sign the update: {e}")))?;
    let bytes = message.to_vec().map_err(|e| DnsError::Bad {
        server,
        detail: format!("cannot encode the update: {e}"),
    })?;
    let answer_bytes = exchange_tcp(server, &bytes)?;
    let answer = parse(server, &answer_bytes)?;
    let zone_text = zone.to_ascii().trim_end_matches('.').to_string();
    let rcode = answer.metadata.response_code;
    if rcode != ResponseCode::NoError {
        let tsig_error = answer.signature().and_then(|sig| sig.data.error);
        return Err(UpdateError::Refused {
            server,
            zone: zone_text.clone(),
            answer: format!(
                "{}{}): {}",
                rcode_name(rcode),
                tsig_error
                    .map(|e| format!(", TSIG error {}", tsig_error_name(e)))
                    .unwrap_or_default(),
                refusal_reason(rcode, tsig_error, key, &zone_text)
            ),
        });
    }
    match verifier {
        Some(mut verifier) => {
            verifier
                .verify(&answer_bytes)
                .map(|_| ())
                .map_err(|e| UpdateError::Unverified {
                    server,
                    zone: zone_text,
                    detail: e.to_string(),
                })
        }
        None => Ok(()),
    }
}

fn rcode_name(rcode: ResponseCode) -> String {
    let name = match u16::from(rcode) {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        other => return format!("RCODE {other}"),
    };
    name.to_string()
}

fn tsig_error_name(error: TsigError) -> String {
    match error {
        TsigError::BadSig => "BADSIG".to_string(),
        TsigError::BadKey => "BADKEY".to_string(),
        TsigError::BadTime => "BADTIME".to_string(),
        TsigError::BadTrunc => "BADTRUNC".to_string(),
        TsigError::Unknown(code) => format!("{code}"),
    }
}

/// What a refusal means and what fixes it.
fn refusal_reason(
    rcode: ResponseCode,
    tsig: Option<TsigError>,
    key: &TsigKey,
    zone: &str,
) -> String {
    let file = key.file.display();
    let name = &key.name;
    match (u16::from(rcode), tsig) {
        (9, Some(TsigError::BadKey)) => format!(
            "the server does not know TSIG key \"{name}\" ({file}); add that key to the \
             server and allow it to update the zone, or give --tsig-key the key the server has"
        ),
        (9, Some(TsigError::BadSig)) => format!(
            "the server knows a key named \"{name}\" but the signature made with {file} does \
             not verify: the secret differs from the server's; give --tsig-key the server's key"
        ),
        (9, Some(TsigError::BadTime)) => "the server's clock and this machine's differ by more \
             than 5 minutes; fix the clocks (NTP)"
            .to_string(),
        (9, _) => format!(
            "the server is not authoritative for zone {zone}; send the update to its primary server"
        ),
        (5, _) => format!(
            "the server does not let key \"{name}\" update zone {zone}; allow it \
             (allow-update {{ key \"{name}\"; }}; or an update-policy grant)"
        ),
        (10, _) => format!("the name is not in zone {zone}"),
        (2, _) => "the server could not apply the update; its log says why (a journal it \
             cannot write, say)"
            .to_string(),
        _ => "see the server's log".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_records_are_split_into_dns_strings() {
        let text = "v=DKIM1; k=rsa; p=".to_string() + &"A".repeat(400);
        let strings = txt_strings(&text);
        assert_eq!(strings.len(), 2);
        assert_eq!(strings[0].len(), 255);
        assert_eq!(strings.concat(), text);
        assert_eq!(txt_strings(""), vec![String::new()]);
    }

    #[test]
    fn names_are_made_absolute() {
        assert_eq!(name("example.com").unwrap().to_ascii(), "example.com.");
        assert_eq!(name("example.com.").unwrap().to_ascii(), "example.com.");
    }
}
