//! The header block of a message and which of its fields a signature covers.
//!
//! [`HeaderBlock`] keeps the fields as the milter delivered them (value as
//! it stood after the colon, folded with bare LF). [`HeaderPolicy`] says
//! which names are signed and which are oversigned, and builds the `h=`
//! list and the matching field instances the way RFC 6376 section 5.4.2
//! has a verifier pick them (each name takes the next unused instance from
//! the bottom), so the signature and any verifier agree by construction.

use std::collections::HashSet;

use bytes::Bytes;

/// One header field: its name and its value as it stood after the colon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    pub name: Bytes,
    /// Raw value, leading space included, folded with `\n` (as Postfix
    /// sends it) or `\r\n`.
    pub value: Bytes,
}

impl HeaderField {
    pub fn new(name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        HeaderField {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The value as it appears on the wire: CRLF line breaks and the
    /// terminating CRLF, which is what DKIM canonicalizes.
    pub fn wire_value(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.value.len() + 8);
        let mut previous = 0u8;
        for &b in self.value.iter() {
            if b == b'\n' && previous != b'\r' {
                out.push(b'\r');
            }
            out.push(b);
            previous = b;
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    pub fn is_named(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// A message's header fields, top to bottom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    fields: Vec<HeaderField>,
    bytes: usize,
}

impl HeaderBlock {
    pub fn new() -> Self {
        HeaderBlock::default()
    }

    pub fn push(&mut self, field: HeaderField) {
        self.bytes += field.name.len() + field.value.len();
        self.fields.push(field);
    }

    pub fn fields(&self) -> &[HeaderField] {
        &self.fields
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Bytes of names and values held.
    pub fn byte_size(&self) -> usize {
        self.bytes
    }

    /// The first field with this name, top down.
    pub fn first(&self, name: &str) -> Option<&HeaderField> {
        self.fields.iter().find(|f| f.is_named(name))
    }

    pub fn clear(&mut self) {
        self.fields.clear();
        self.bytes = 0;
    }
}

/// OpenDKIM's default signed header fields (its `SignHeaders` default).
pub const OPENDKIM_SIGNED_HEADERS: &[&str] = &[
    "from",
    "reply-to",
    "subject",
    "date",
    "to",
    "cc",
    "resent-date",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "in-reply-to",
    "references",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
];

/// Our default: OpenDKIM's list plus the fields RFC 6376 section 5.4.1
/// also recommends protecting (Message-ID, MIME-Version, Content-Type).
/// More signed fields never change whether a message is signed; they make
/// the signature harder to replay onto altered content.
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "from",
    "reply-to",
    "subject",
    "date",
    "to",
    "cc",
    "resent-date",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "in-reply-to",
    "references",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
    "message-id",
    "mime-version",
    "content-type",
];

/// Which header fields a signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPolicy {
    /// Lower-case names of fields signed wherever they appear.
    signed: HashSet<String>,
    /// Names listed once more than they appear, so that adding another
    /// instance later breaks the signature (OpenDKIM's OversignHeaders).
    oversigned: Vec<String>,
}

impl Default for HeaderPolicy {
    fn default() -> Self {
        HeaderPolicy::new(DEFAULT_SIGNED_HEADERS.iter().copied(), [], [])
    }
}

impl HeaderPolicy {
    /// `sign` minus `omit`; every oversigned name is signed too. `From` is
    /// always signed: RFC 6376 requires it.
    pub fn new<'a>(
        sign: impl IntoIterator<Item = &'a str>,
        omit: impl IntoIterator<Item = &'a str>,
        oversign: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut signed: HashSet<String> = sign.into_iter().map(str::to_ascii_lowercase).collect();
        for name in omit {
            signed.remove(&name.to_ascii_lowercase());
        }
        let mut oversigned = Vec::new();
        for name in oversign {
            let name = name.to_ascii_lowercase();
            if !oversigned.contains(&name) {
                signed.insert(name.clone());
                oversigned.push(name);
            }
        }
        signed.insert("from".to_string());
        HeaderPolicy { signed, oversigned }
    }

    pub fn signs(&self, name: &[u8]) -> bool {
        std::str::from_utf8(name)
            .map(|n| {
                self.signed.contains(n) || self.signed.contains(n.to_ascii_lowercase().as_str())
            })
            .unwrap_or(false)
    }

    pub fn oversigned(&self) -> &[String] {
        &self.oversigned
    }

    /// The `h=` names and, in the same order, the fields they cover (`None`
    /// for an oversigned name with no instance left).
    pub fn select<'a>(&self, block: &'a HeaderBlock) -> Selection<'a> {
        let fields = block.fields();
        let mut names: Vec<String> = fields
            .iter()
            .filter(|f| self.signs(&f.name))
            .map(|f| String::from_utf8_lossy(&f.name).into_owned())
            .collect();
        names.extend(self.oversigned.iter().cloned());

        // RFC 6376 5.4.2: for each name in h=, the next unused instance
        // counting from the bottom.
        let mut used = vec![false; fields.len()];
        let covered = names
            .iter()
            .map(|name| {
                let index = fields
                    .iter()
                    .enumerate()
                    .rev()
                    .find(|(i, f)| !used[*i] && f.name.eq_ignore_ascii_case(name.as_bytes()))
                    .map(|(i, _)| i)?;
                used[index] = true;
                Some(&fields[index])
            })
            .collect();
        Selection { names, covered }
    }
}

/// The result of [`HeaderPolicy::select`].
#[derive(Debug)]
pub struct Selection<'a> {
    pub names: Vec<String>,
    pub covered: Vec<Option<&'a HeaderField>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(fields: &[(&'static str, &'static str)]) -> HeaderBlock {
        let mut b = HeaderBlock::new();
        for (n, v) in fields {
            b.push(HeaderField::new(
                Bytes::from_static(n.as_bytes()),
                Bytes::from_static(v.as_bytes()),
            ));
        }
        b
    }

    #[test]
    fn wire_value_uses_crlf_folding_and_ends_the_line() {
        let f = HeaderField::new(Bytes::from_static(b"To"), Bytes::from_static(b" a,\n\tb"));
        assert_eq!(f.wire_value(), b" a,\r\n\tb\r\n");
        let f = HeaderField::new(Bytes::from_static(b"To"), Bytes::from_static(b" a,\r\n\tb"));
        assert_eq!(f.wire_value(), b" a,\r\n\tb\r\n");
        let f = HeaderField::new(Bytes::from_static(b"X"), Bytes::new());
        assert_eq!(f.wire_value(), b"\r\n");
    }

    #[test]
    fn signs_present_listed_fields_in_message_order() {
        let b = block(&[
            ("Received", " x"),
            ("From", " a@example.com"),
            ("To", " b@example.org"),
            ("Subject", " hi"),
            ("X-Other", " y"),
        ]);
        let s = HeaderPolicy::new(OPENDKIM_SIGNED_HEADERS.iter().copied(), [], []).select(&b);
        assert_eq!(s.names, vec!["From", "To", "Subject"]);
        assert!(s.covered.iter().all(Option::is_some));
    }

    #[test]
    fn repeated_fields_are_covered_bottom_up() {
        let b = block(&[("To", " first"), ("From", " f"), ("To", " second")]);
        let s = HeaderPolicy::new(["from", "to"], [], []).select(&b);
        assert_eq!(s.names, vec!["To", "From", "To"]);
        let values: Vec<&[u8]> = s.covered.iter().map(|f| &f.unwrap().value[..]).collect();
        assert_eq!(values, vec![&b" second"[..], b" f", b" first"]);
    }

    #[test]
    fn oversigned_names_get_one_extra_entry_with_nothing_covered() {
        let b = block(&[("From", " a@example.com"), ("Subject", " s")]);
        let s = HeaderPolicy::new(["subject"], [], ["From", "reply-to"]).select(&b);
        assert_eq!(s.names, vec!["From", "Subject", "from", "reply-to"]);
        assert!(s.covered[2].is_none() && s.covered[3].is_none());
    }

    #[test]
    fn omitted_names_are_not_signed_but_from_always_is() {
        let p = HeaderPolicy::new(["from", "subject", "date"], ["subject", "from"], []);
        assert!(!p.signs(b"Subject"));
        assert!(p.signs(b"FROM"));
        assert!(p.signs(b"date"));
    }

    #[test]
    fn name_matching_ignores_case() {
        let b = block(&[("from", " a@example.com"), ("SUBJECT", " s")]);
        let s = HeaderPolicy::default().select(&b);
        assert_eq!(s.names, vec!["from", "SUBJECT"]);
    }
}
