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
        self.write_wire_value(&mut out);
        out
    }

    /// [`HeaderField::wire_value`], appended to `out`.
    pub fn write_wire_value(&self, out: &mut Vec<u8>) {
        out.reserve(self.value.len() + 8);
        let mut previous = 0u8;
        for &b in self.value.iter() {
            if b == b'\n' && previous != b'\r' {
                out.push(b'\r');
            }
            out.push(b);
            previous = b;
        }
        out.extend_from_slice(b"\r\n");
    }

    pub fn is_named(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// Room for the fields of a typical message, allocated once per message.
const FIELDS: usize = 16;
/// Copied names and values share allocations of at least this size.
const ARENA_CHUNK: usize = 4096;

/// A message's header fields, top to bottom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    fields: Vec<HeaderField>,
    bytes: usize,
    /// Where [`HeaderBlock::push_copy`] copies to; always empty between
    /// calls (its bytes are split off into the fields).
    arena: bytes::BytesMut,
}

impl HeaderBlock {
    pub fn new() -> Self {
        HeaderBlock {
            fields: Vec::with_capacity(FIELDS),
            ..HeaderBlock::default()
        }
    }

    pub fn push(&mut self, field: HeaderField) {
        self.bytes += field.name.len() + field.value.len();
        self.fields.push(field);
    }

    /// Copy a field in. The copies of a message's fields share one
    /// allocation per few kilobytes, instead of two allocations per field.
    pub fn push_copy(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len();
        if self.arena.capacity() < size {
            self.arena.reserve(size.max(ARENA_CHUNK));
        }
        self.arena.extend_from_slice(name);
        let name = self.arena.split().freeze();
        self.arena.extend_from_slice(value);
        let value = self.arena.split().freeze();
        self.push(HeaderField { name, value });
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

/// Our default: OpenDKIM's list ([`OPENDKIM_SIGNED_HEADERS`], the first
/// 20) and after it the fields RFC 6376 section 5.4.1 also recommends
/// protecting (Message-ID, MIME-Version, Content-Type). More signed fields
/// never change whether a message is signed; they make the signature
/// harder to replay onto altered content.
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

/// OpenDKIM's default signed header fields (its `SignHeaders` default).
pub const OPENDKIM_SIGNED_HEADERS: &[&str] = DEFAULT_SIGNED_HEADERS.split_at(20).0;

/// OpenDKIM's default OmitHeaders: the fields RFC 6376 section 5.4 says
/// should not be signed. They only matter when the signed list has
/// patterns (`x-*`, or `*` for every field).
pub const OPENDKIM_OMITTED_HEADERS: &[&str] = &[
    "return-path",
    "received",
    "comments",
    "keywords",
    "bcc",
    "resent-bcc",
    "dkim-signature",
];

/// Header field names, exact or with `*` wildcards, compared without
/// regard to case (libopendkim turns each name into an anchored
/// case-insensitive regex in which `*` is "any run of characters").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderNames {
    exact: HashSet<String>,
    /// Lower-case names with at least one `*`, split at the stars.
    globs: Vec<Vec<String>>,
    /// Everything as given (lower case), in order, for display.
    listed: Vec<String>,
}

impl HeaderNames {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut set = HeaderNames::default();
        for name in names {
            set.insert(name);
        }
        set
    }

    fn insert(&mut self, name: &str) {
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || self.listed.contains(&name) {
            return;
        }
        if name.contains('*') {
            self.globs
                .push(name.split('*').map(str::to_string).collect());
        } else {
            self.exact.insert(name.clone());
        }
        self.listed.push(name);
    }

    fn remove(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.exact.remove(&name);
        self.listed.retain(|n| *n != name);
        self.globs.retain(|g| g.join("*") != name);
    }

    /// Whether `name` (any case) is listed or matches a pattern.
    pub fn matches(&self, name: &str) -> bool {
        self.matches_lowercase(&name.to_ascii_lowercase())
    }

    /// [`Self::matches`] for a name already in lower case.
    pub fn matches_lowercase(&self, lower: &str) -> bool {
        self.exact.contains(lower) || self.globs.iter().any(|g| glob_matches(g, lower))
    }

    /// The names and patterns, lower case, in the order given.
    pub fn listed(&self) -> &[String] {
        &self.listed
    }
}

/// Anchored match of `*`-separated segments: the first is a prefix, the
/// last a suffix, the middle ones found left to right in between.
fn glob_matches(segments: &[String], text: &str) -> bool {
    let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
        return text.is_empty();
    };
    if segments.len() == 1 {
        return text == first;
    }
    if text.len() < first.len() + last.len()
        || !text.starts_with(first.as_str())
        || !text.ends_with(last.as_str())
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &segments[1..segments.len() - 1] {
        match rest.find(middle.as_str()) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Which header fields a signature covers.
///
/// A field is signed when its name is in the signed list and not in the
/// omitted list (libopendkim's SignHeaders and OmitHeaders), or is
/// oversigned; `From` is always signed, as RFC 6376 requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPolicy {
    signed: HeaderNames,
    omitted: HeaderNames,
    /// Names listed once more than they appear, so that adding another
    /// instance later breaks the signature (OpenDKIM's OversignHeaders).
    oversigned: Vec<String>,
}

impl Default for HeaderPolicy {
    /// Our default signed list and OpenDKIM's default omitted list.
    fn default() -> Self {
        HeaderPolicy::with_names(
            HeaderNames::new(DEFAULT_SIGNED_HEADERS.iter().copied()),
            HeaderNames::new(OPENDKIM_OMITTED_HEADERS.iter().copied()),
            [],
        )
    }
}

impl HeaderPolicy {
    /// `sign` minus `omit`; every oversigned name is signed too. `From` is
    /// always signed: RFC 6376 requires it. Names may use `*` wildcards.
    pub fn new<'a>(
        sign: impl IntoIterator<Item = &'a str>,
        omit: impl IntoIterator<Item = &'a str>,
        oversign: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        HeaderPolicy::with_names(HeaderNames::new(sign), HeaderNames::new(omit), oversign)
    }

    /// The same from lists already built.
    pub fn with_names<'a>(
        mut signed: HeaderNames,
        mut omitted: HeaderNames,
        oversign: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut oversigned = Vec::new();
        for name in oversign {
            let name = name.trim().to_ascii_lowercase();
            if !name.is_empty() && !oversigned.contains(&name) {
                signed.insert(&name);
                omitted.remove(&name);
                oversigned.push(name);
            }
        }
        signed.insert("from");
        omitted.remove("from");
        HeaderPolicy {
            signed,
            omitted,
            oversigned,
        }
    }

    pub fn signs(&self, name: &[u8]) -> bool {
        // Lower-case on the stack: this runs for every field of every message.
        let mut buf = [0u8; 64];
        let long;
        let lower = match buf.get_mut(..name.len()) {
            Some(lower) => {
                lower.copy_from_slice(name);
                lower.make_ascii_lowercase();
                std::str::from_utf8(lower)
            }
            None => {
                long = name.to_ascii_lowercase();
                std::str::from_utf8(&long)
            }
        };
        lower.is_ok_and(|n| self.signed.matches_lowercase(n) && !self.omitted.matches_lowercase(n))
    }

    /// The signed names and patterns, lower case.
    pub fn signed(&self) -> &HeaderNames {
        &self.signed
    }

    /// The omitted names and patterns, lower case.
    pub fn omitted(&self) -> &HeaderNames {
        &self.omitted
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
    fn opendkims_default_is_ours_without_the_rfc_additions() {
        assert_eq!(OPENDKIM_SIGNED_HEADERS.last(), Some(&"list-archive"));
        assert_eq!(
            DEFAULT_SIGNED_HEADERS[OPENDKIM_SIGNED_HEADERS.len()..],
            ["message-id", "mime-version", "content-type"]
        );
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
    fn copied_fields_keep_their_bytes_and_sizes() {
        let mut b = HeaderBlock::new();
        let long = vec![b'v'; 10_000];
        b.push_copy(b"From", b" a@example.com");
        b.push_copy(b"X-Long", &long);
        b.push_copy(b"Subject", b"");
        let names: Vec<&[u8]> = b.fields().iter().map(|f| &f.name[..]).collect();
        assert_eq!(names, vec![&b"From"[..], b"X-Long", b"Subject"]);
        assert_eq!(&b.fields()[0].value[..], b" a@example.com");
        assert_eq!(&b.fields()[1].value[..], &long[..]);
        assert!(b.fields()[2].value.is_empty());
        assert_eq!(b.byte_size(), 4 + 14 + 6 + 10_000 + 7);
    }

    #[test]
    fn long_and_non_utf8_names_are_matched_too() {
        let long = "x".repeat(100);
        let p = HeaderPolicy::new(["from", long.as_str()], [], []);
        assert!(p.signs(long.to_ascii_uppercase().as_bytes()));
        assert!(!p.signs(b"Fr\xffom"));
    }

    #[test]
    fn name_matching_ignores_case() {
        let b = block(&[("from", " a@example.com"), ("SUBJECT", " s")]);
        let s = HeaderPolicy::default().select(&b);
        assert_eq!(s.names, vec!["from", "SUBJECT"]);
    }

    #[test]
    fn star_in_a_name_matches_any_run_of_characters() {
        let p = HeaderPolicy::new(["x-*", "list-*-id"], [], []);
        assert!(p.signs(b"X-Mailer"));
        assert!(p.signs(b"x-"));
        assert!(p.signs(b"List-Foo-Id"));
        assert!(!p.signs(b"List-Id"));
        assert!(!p.signs(b"Subject"));
        assert!(p.signs(b"From"));
    }

    #[test]
    fn sign_everything_except_omitted_fields() {
        let p = HeaderPolicy::new(["*"], OPENDKIM_OMITTED_HEADERS.iter().copied(), []);
        assert!(p.signs(b"X-Anything"));
        assert!(p.signs(b"Subject"));
        assert!(!p.signs(b"Received"));
        assert!(!p.signs(b"DKIM-Signature"));
        let b = block(&[("Received", " r"), ("From", " f"), ("X-Y", " y")]);
        assert_eq!(p.select(&b).names, vec!["From", "X-Y"]);
    }

    #[test]
    fn omitted_pattern_wins_over_signed_name_but_not_over_oversigning() {
        let p = HeaderPolicy::new(
            ["subject", "x-spam", "reply-to"],
            ["x-*", "reply-to"],
            ["reply-to"],
        );
        assert!(!p.signs(b"X-Spam"));
        assert!(p.signs(b"Subject"));
        assert!(p.signs(b"Reply-To"));
    }

    #[test]
    fn default_policy_omits_opendkims_should_not_sign_fields() {
        let p = HeaderPolicy::default();
        assert!(p.signs(b"Message-ID"));
        assert!(!p.signs(b"Received"));
        assert_eq!(p.omitted().listed().len(), OPENDKIM_OMITTED_HEADERS.len());
    }
}
