//! The message the load client sends: a plain-text message of a chosen
//! size, with the header fields a real one has, or one read from a file
//! (mail signed elsewhere, for a verifier).

use bytes::Bytes;
use milter::client::Message;

/// A plain-text message from `sender` to `recipient` whose body is
/// `body_size` bytes of 78-character CRLF lines (the last one shorter).
pub fn generate(sender: &str, recipient: &str, body_size: usize) -> Message {
    let field = |name: &'static str, value: String| {
        (Bytes::from_static(name.as_bytes()), Bytes::from(value))
    };
    let headers = vec![
        field("From", format!(" Load Test <{sender}>")),
        field("To", format!(" <{recipient}>")),
        field(
            "Subject",
            " dkim-sidecar bench: a message with a folded\n\tsubject line".to_string(),
        ),
        field("Date", " Mon, 1 Jan 2024 00:00:00 +0000".to_string()),
        field(
            "Message-ID",
            format!(" <bench.{body_size}@{}>", domain_of(sender)),
        ),
        field("MIME-Version", " 1.0".to_string()),
        field("Content-Type", " text/plain; charset=us-ascii".to_string()),
    ];
    Message {
        sender: sender.to_string(),
        recipient: recipient.to_string(),
        headers,
        body: Bytes::from(body(body_size)),
    }
}

/// A message read from a file (LF or CRLF): its header fields as
/// Postfix hands them over (folded lines joined with LF), its body with
/// CRLF line ends; the envelope sender is the From address. For
/// sending mail signed elsewhere (to a verifier).
pub fn from_raw(raw: &[u8], recipient: &str) -> Result<Message, String> {
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut rest = raw;
    loop {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        rest = rest.get(end + 1..).unwrap_or_default();
        if line.is_empty() {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            let (_, value) = headers
                .last_mut()
                .ok_or("the message starts with a folded line")?;
            value.push(b'\n');
            value.extend_from_slice(line);
        } else {
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or("a header line without a colon")?;
            headers.push((
                line[..colon].trim_ascii_end().to_vec(),
                line[colon + 1..].to_vec(),
            ));
        }
    }
    let mut body = Vec::with_capacity(rest.len() + rest.len() / 32);
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
        .ok_or("the message has no From field")?;
    let sender = from
        .split(['<', '>', ' ', ','])
        .find(|w| w.contains('@'))
        .unwrap_or("sender@invalid")
        .to_string();
    Ok(Message {
        sender,
        recipient: recipient.to_string(),
        headers: headers
            .into_iter()
            .map(|(n, v)| (Bytes::from(n), Bytes::from(v)))
            .collect(),
        body: Bytes::from(body),
    })
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// `size` bytes of text lines ending in CRLF.
fn body(size: usize) -> Vec<u8> {
    const LINE: &[u8] =
        b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs";
    let mut out = Vec::with_capacity(size);
    let mut n = 0usize;
    while out.len() < size {
        let left = size - out.len();
        match left {
            1 => out.push(b'.'),
            2 => out.extend_from_slice(b"\r\n"),
            _ => {
                // Vary the lines a little so that no two chunks are alike.
                let mut line = format!("{n:06} ").into_bytes();
                line.extend_from_slice(LINE);
                let mut len = line.len().min(left - 2);
                // Never leave 1 or 2 bytes, which cannot make a line.
                let rest = left - len - 2;
                if (1..3).contains(&rest) {
                    len -= 3 - rest;
                }
                out.extend_from_slice(&line[..len]);
                out.extend_from_slice(b"\r\n");
                n += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_message_is_cut_as_postfix_sends_it() {
        let m = from_raw(
            b"DKIM-Signature: v=1;\n\tb=abc\nFrom: A <a@example.net>\nSubject : x\n\nline\nlast",
            "r@example.org",
        )
        .unwrap();
        assert_eq!(m.sender, "a@example.net");
        assert_eq!(&m.headers[0].1[..], b" v=1;\n\tb=abc");
        assert_eq!(&m.headers[2].0[..], b"Subject");
        assert_eq!(&m.body[..], b"line\r\nlast");
        assert!(from_raw(b"Subject: no from\n\n", "r@x").is_err());
    }

    use milter::Reply;

    #[test]
    fn body_has_the_exact_size_and_crlf_lines() {
        for size in [0, 1, 2, 3, 85, 86, 87, 4096, 100_000] {
            let m = generate("a@example.com", "b@example.org", size);
            assert_eq!(m.body.len(), size);
            if size >= 2 {
                assert!(m.body.ends_with(b"\r\n"), "size {size}");
            }
            let bare_lf = m
                .body
                .windows(2)
                .filter(|w| w[1] == b'\n' && w[0] != b'\r')
                .count();
            assert_eq!(bare_lf, 0);
        }
    }

    #[test]
    fn delivered_message_puts_inserted_fields_where_asked() {
        let m = generate("a@example.com", "b@example.org", 10);
        let mods = vec![Reply::InsertHeader {
            index: 0,
            name: Bytes::from_static(b"DKIM-Signature"),
            value: Bytes::from_static(b"v=1;\n\tb=x"),
        }];
        let out = m.delivered(&mods, false);
        assert!(
            out.starts_with(
                b"DKIM-Signature: v=1;\r\n\tb=x\r\nFrom: Load Test <a@example.com>\r\n"
            )
        );
        let out = m.delivered(&mods, true);
        assert!(out.starts_with(b"DKIM-Signature:v=1;"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(
            "Subject: dkim-sidecar bench: a message with a folded\r\n\tsubject line\r\n"
        ));
        assert!(text.ends_with("\r\n\r\n000000 T\r\n"), "{text:?}");
    }
}
