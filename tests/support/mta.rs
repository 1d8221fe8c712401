//! Playing Postfix to a milter for one message at a time, in-process: the
//! project's load client ([`dkim_sidecar::bench::MilterClient`]) speaks
//! protocol 6 to the milter at an address and reports what it answered.
//! Used to put the very same message, byte for byte, to OpenDKIM and to
//! dkim-sidecar and compare their answers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use dkim_sidecar::bench::client::MacroValues;
use dkim_sidecar::bench::{self, MilterClient, Outcome, TestMessage};
use dkim_sidecar::milter::Reply;

/// A raw message (LF or CRLF) as Postfix hands it to a milter: header
/// fields with their value after the colon (folded lines joined with LF),
/// a CRLF body.
pub fn message(raw: &[u8]) -> TestMessage {
    let text = raw;
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut rest = text;
    loop {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        rest = if end < rest.len() {
            &rest[end + 1..]
        } else {
            &[]
        };
        if line.is_empty() {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            let (_, value) = headers.last_mut().expect("a folded line after a field");
            value.push(b'\n');
            value.extend_from_slice(line);
        } else {
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .expect("a header field");
            headers.push((
                line[..colon].trim_ascii_end().to_vec(),
                line[colon + 1..].to_vec(),
            ));
        }
    }
    let mut body = Vec::with_capacity(rest.len() + 64);
    for line in rest.split_inclusive(|&b| b == b'\n') {
        match line.strip_suffix(b"\n") {
            Some(l) => {
                body.extend_from_slice(l.strip_suffix(b"\r").unwrap_or(l));
                body.extend_from_slice(b"\r\n");
            }
            None => body.extend_from_slice(line),
        }
    }
    let from = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"from"))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let sender = from
        .split(['<', '>', ' '])
        .find(|w| w.contains('@'))
        .unwrap_or("nobody@invalid")
        .to_string();
    TestMessage {
        sender,
        recipient: "bob@example.org".to_string(),
        headers: headers
            .into_iter()
            .map(|(n, v)| (Bytes::from(n), Bytes::from(v)))
            .collect(),
        body: Bytes::from(body),
    }
}

/// What the milter at `addr` answers for `message` from client `ip`, with
/// `j` = `mta_name`.
pub fn send(addr: SocketAddr, message: &TestMessage, ip: IpAddr, mta_name: &str) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let target: dkim_sidecar::server::SocketSpec = format!("inet:{}@{}", addr.port(), addr.ip())
        .parse()
        .unwrap();
    runtime
        .block_on(async {
            let mut mta =
                MilterClient::new(bench::client::open(&target).await?, Duration::from_secs(60));
            mta.negotiate(6).await?;
            let mut values: MacroValues = bench::BenchOptions::new(target.clone()).macros;
            values.hostname = mta_name.to_string();
            values.client_ip = ip;
            values.client_name = format!("[{ip}]");
            mta.open_session(&values, "client.example").await?;
            let outcome = mta.send_message(message, "4QTEST1", &values).await?;
            let _ = mta.quit().await;
            Ok::<_, bench::client::ClientError>(outcome)
        })
        .unwrap_or_else(|e| panic!("milter conversation with {addr} failed: {e}"))
}

/// The message as delivered after the milter's changes (insertions,
/// additions, and deletions by `m` with an empty value), LF line ends.
pub fn delivered(message: &TestMessage, outcome: &Outcome) -> Vec<u8> {
    let Outcome::Delivered { modifications } = outcome else {
        panic!("not delivered: {outcome:?}")
    };
    let mut fields: Vec<(Bytes, Bytes)> = message.headers.clone();
    for m in modifications {
        match m {
            Reply::ChangeHeader { index, name, value } if value.is_empty() => {
                let position = fields
                    .iter()
                    .enumerate()
                    .filter(|(_, (n, _))| n.eq_ignore_ascii_case(name))
                    .nth(*index as usize - 1)
                    .map(|(i, _)| i);
                if let Some(i) = position {
                    fields.remove(i);
                }
            }
            Reply::InsertHeader { index, name, value } => {
                let value = if value.starts_with(b" ") {
                    value.clone()
                } else {
                    Bytes::from([b" ", &value[..]].concat())
                };
                fields.insert((*index as usize).min(fields.len()), (name.clone(), value));
            }
            Reply::AddHeader { name, value } => fields.push((name.clone(), value.clone())),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(&name);
        out.push(b':');
        out.extend_from_slice(&value);
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend(message.body.split(|&b| b == b'\n').flat_map(|l| {
        let mut l = l.strip_suffix(b"\r").unwrap_or(l).to_vec();
        l.push(b'\n');
        l
    }));
    out.truncate(out.len() - 1);
    out
}

/// The values of the header fields named `name` the milter inserted or
/// added, leading space removed.
pub fn inserted(outcome: &Outcome, field: &str) -> Vec<String> {
    let Outcome::Delivered { modifications } = outcome else {
        return Vec::new();
    };
    modifications
        .iter()
        .filter_map(|m| match m {
            Reply::InsertHeader { name, value, .. } | Reply::AddHeader { name, value }
                if name.eq_ignore_ascii_case(field.as_bytes()) =>
            {
                Some(String::from_utf8_lossy(value).trim_start().to_string())
            }
            _ => None,
        })
        .collect()
}

/// One `dkim=` result of an Authentication-Results value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DkimEntry {
    pub result: String,
    pub domain: String,
    pub selector: String,
    /// The comment, e.g. `2048-bit key; secure`.
    pub comment: String,
    pub reason: String,
}

/// The `dkim=` entries of an Authentication-Results value, in order.
pub fn dkim_entries(value: &str) -> Vec<DkimEntry> {
    // Items end at `;` outside comments and quoted strings.
    let mut items = Vec::new();
    let (mut depth, mut quoted, mut start) = (0usize, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            ';' if !quoted && depth == 0 => {
                items.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&value[start..]);
    let mut entries = Vec::new();
    for item in items.into_iter().skip(1) {
        let item = item.trim();
        let Some(rest) = item.strip_prefix("dkim=") else {
            continue;
        };
        let result = rest.split_whitespace().next().unwrap_or("").to_string();
        let prop = |name: &str| {
            item.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or("")
                .to_string()
        };
        let comment = item
            .split_once('(')
            .and_then(|(_, c)| c.split_once(')'))
            .map(|(c, _)| c.to_string())
            .unwrap_or_default();
        let reason = item
            .split_once("reason=\"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(r, _)| r.to_string())
            .unwrap_or_default();
        entries.push(DkimEntry {
            result,
            domain: prop("header.d="),
            selector: prop("header.s="),
            comment,
            reason,
        });
    }
    entries
}
