//! Playing Postfix to a milter for one message at a time, in-process: the
//! milter crate's MTA-side client ([`milter::client::MilterClient`]) speaks
//! protocol 6 to the milter at an address and reports what it answered.
//! Used to put the very same message, byte for byte, to OpenDKIM and to
//! dkim-sidecar and compare their answers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use milter::Reply;
use milter::client::{self, MacroValues, Message, MilterClient, Outcome};

/// A raw message (LF or CRLF) as Postfix hands it to a milter: header
/// fields with their value after the colon (folded lines joined with LF),
/// a CRLF body; to bob@example.org.
pub fn message(raw: &[u8]) -> Message {
    milter_bench::message::from_raw(raw, "bob@example.org")
        .unwrap_or_else(|e| panic!("not a message: {e}"))
}

/// What the milter at `addr` answers for `message` from client `ip`, with
/// `j` = `mta_name`.
pub fn send(addr: SocketAddr, message: &Message, ip: IpAddr, mta_name: &str) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let target: milter::server::SocketSpec = format!("inet:{}@{}", addr.port(), addr.ip())
        .parse()
        .unwrap();
    runtime
        .block_on(async {
            let mut mta = MilterClient::new(client::open(&target).await?, Duration::from_secs(60));
            mta.negotiate(6).await?;
            let values = MacroValues {
                hostname: mta_name.to_string(),
                client_ip: ip,
                client_name: format!("[{ip}]"),
                ..MacroValues::default()
            };
            mta.open_session(&values, "client.example").await?;
            let outcome = mta.send_message(message, "4QTEST1", &values).await?;
            let _ = mta.quit().await;
            Ok::<_, client::ClientError>(outcome)
        })
        .unwrap_or_else(|e| panic!("milter conversation with {addr} failed: {e}"))
}

/// The message as delivered after the milter's changes (insertions,
/// additions, and deletions by `m` with an empty value), LF line ends.
pub fn delivered(message: &Message, outcome: &Outcome) -> Vec<u8> {
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
