//! A message as the MTA hands it to a milter (envelope, header fields in
//! the protocol's form, body), and as the MTA delivers it after applying
//! the milter's header changes. It never parses or checks a message; it
//! only lays out what it is given.

use bytes::Bytes;

use crate::codec::Reply;

/// One message: envelope, header fields as the milter protocol
/// carries them, and a CRLF body.
#[derive(Debug, Clone)]
pub struct Message {
    /// MAIL FROM and From: address.
    ///
    /// Without angle brackets: the client adds them in MAIL FROM.
    pub sender: String,
    /// The one envelope recipient (RCPT TO), without angle brackets.
    pub recipient: String,
    /// Name and value as it stands after the colon (leading space
    /// included, folded with bare LF, as Postfix hands them over).
    pub headers: Vec<(Bytes, Bytes)>,
    /// The body in wire form (CRLF line ends), sent in chunks of at most
    /// [`BODY_CHUNK`](super::BODY_CHUNK) bytes.
    pub body: Bytes,
}

impl Message {
    /// The recipient's domain: what follows its last `@`, empty when it
    /// has none. Sent as `{rcpt_host}`.
    pub fn recipient_domain(&self) -> &str {
        domain_of(&self.recipient)
    }

    /// The message as the MTA delivers it after the milter's header
    /// changes (inserted and added fields; other changes are ignored), in
    /// wire form. `leading_space`: whether the milter's header values came
    /// with their leading space (HDR_LEADSPC) or the MTA adds one.
    pub fn delivered(&self, modifications: &[Reply], leading_space: bool) -> Vec<u8> {
        let mut fields: Vec<(&[u8], &[u8], bool)> = self
            .headers
            .iter()
            .map(|(n, v)| (&n[..], &v[..], true))
            .collect();
        for m in modifications {
            match m {
                Reply::InsertHeader { index, name, value } => {
                    let at = (*index as usize).min(fields.len());
                    fields.insert(at, (name, value, leading_space));
                }
                Reply::AddHeader { name, value } => fields.push((name, value, leading_space)),
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(self.body.len() + 2048);
        for (name, value, verbatim) in fields {
            out.extend_from_slice(name);
            out.push(b':');
            if !verbatim {
                out.push(b' ');
            }
            let mut previous = 0u8;
            for &b in value {
                if b == b'\n' && previous != b'\r' {
                    out.push(b'\r');
                }
                out.push(b);
                previous = b;
            }
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}
