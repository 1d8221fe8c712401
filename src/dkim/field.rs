//! The `DKIM-Signature` field as OpenDKIM lays it out: its tag order
//! (v, a, c, d, s, t, x, i, then any extra tags such as `r=` and `atps=`,
//! bh, l, h, b) and its folding at a 75-column margin, between tags and
//! inside `h=` (at colons) and `b=` only. Software that searches a
//! signature for a whole `bh=...` string, OpenDKIM's own test suite among
//! it, finds it.
//!
//! Hand-written because mail-auth's serializer has its own tag order and
//! folds inside `bh=`. The same text, with an empty `b=`, is what the
//! private key signs, so the layout must not depend on the `b=` value:
//! `b=` always starts a line of its own.
//!
//! This module only formats; it never signs or hashes.

use mail_auth::common::crypto::Algorithm;
use mail_auth::dkim::Signature;

/// OpenDKIM's margin (`DKIM_HDRMARGIN`).
const MARGIN: usize = 75;
/// What precedes the value on the first line: `DKIM-Signature: `.
const INITIAL: usize = "DKIM-Signature: ".len();
/// A continuation line's width before its text: a TAB counted as 8.
const CONTINUED: usize = 8;

/// The field value (after the colon: a leading space, folded with CRLF,
/// no final line break), with `b=` set to `b`, base64, empty for the form
/// that is signed.
#[cfg(test)]
pub(super) fn layout(signature: &Signature, b: &str) -> String {
    with_b(&head(signature), b)
}

/// Everything before the `b=` value: the same for the form that is signed
/// and the form that is inserted, so a signer lays it out once.
pub(super) fn head(signature: &Signature) -> String {
    let mut out = String::with_capacity(600);
    out.push(' ');
    let mut line = Line {
        out,
        width: INITIAL,
        first: true,
    };
    line.tag("v", &["1"]);
    line.tag("a", &[algorithm_name(signature.a)]);
    line.tag(
        "c",
        &[
            canonicalization_name(signature.ch),
            "/",
            canonicalization_name(signature.cb),
        ],
    );
    line.tag("d", &[&signature.d]);
    line.tag("s", &[&signature.s]);
    line.tag("t", &[&signature.t.to_string()]);
    if signature.x > 0 {
        line.tag("x", &[&signature.x.to_string()]);
    }
    if !signature.i.is_empty() {
        line.tag("i", &[&quoted_printable(&signature.i)]);
    }
    if signature.r {
        line.tag("r", &["y"]);
    }
    if let Some(atps) = &signature.atps {
        line.tag("atps", &[atps]);
        line.tag("atpsh", &["sha256"]);
    }
    line.tag("bh", &[&base64(&signature.bh)]);
    if signature.l > 0 {
        line.tag("l", &[&signature.l.to_string()]);
    }
    line.header_list(&signature.h);
    let mut out = line.out;
    out.push_str("\r\n\tb=");
    out
}

/// `head` followed by the `b=` value `b`, folded at the margin.
pub(super) fn with_b(head: &str, b: &str) -> String {
    let mut out = String::with_capacity(head.len() + b.len() + b.len() / 32 * 4);
    out.push_str(head);
    let first = (MARGIN - (CONTINUED + 2)).min(b.len());
    out.push_str(&b[..first]);
    // Base64 is ASCII, so any byte offset is a character boundary.
    for chunk in b.as_bytes()[first..].chunks(MARGIN - (CONTINUED + 1)) {
        out.push_str("\r\n\t ");
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
    }
    out
}

/// The line being laid out: where it ends, and whether a tag is on it yet.
struct Line {
    out: String,
    width: usize,
    first: bool,
}

impl Line {
    /// `tag=value;`, the value given in parts, on this line if it fits
    /// within the margin, else on a new one.
    fn tag(&mut self, tag: &str, value: &[&str]) {
        let len = tag.len() + 1 + value.iter().map(|part| part.len()).sum::<usize>() + 1;
        if self.first {
            self.first = false;
        } else if self.width + len > MARGIN {
            self.out.push_str("\r\n\t");
            self.width = CONTINUED;
        } else {
            self.out.push(' ');
            self.width += 1;
        }
        self.out.push_str(tag);
        self.out.push('=');
        for part in value {
            self.out.push_str(part);
        }
        self.out.push(';');
        self.width += len;
    }

    /// `h=`, on a new line when it does not fit whole, then broken at
    /// colons.
    fn header_list(&mut self, names: &[String]) {
        let len = 2 + names.iter().map(|n| n.len() + 1).sum::<usize>().max(1);
        if self.width + len <= MARGIN {
            self.out.push(' ');
            self.out.push_str("h=");
            for (n, name) in names.iter().enumerate() {
                if n > 0 {
                    self.out.push(':');
                }
                self.out.push_str(name);
            }
            self.out.push(';');
            self.width += 1 + len;
            return;
        }
        self.out.push_str("\r\n\t");
        self.width = fold_header_list(&mut self.out, names, CONTINUED);
        self.out.push(';');
        self.width += 1;
    }
}

/// `h=` broken at colons, each continuation line indented by TAB SPACE.
fn fold_header_list(out: &mut String, names: &[String], mut width: usize) -> usize {
    out.push_str("h=");
    width += 2;
    for (n, name) in names.iter().enumerate() {
        if n == 0 {
            out.push_str(name);
            width += name.len();
        } else if width + name.len() + 1 > MARGIN {
            out.push_str(":\r\n\t ");
            out.push_str(name);
            width = CONTINUED + 1 + name.len();
        } else {
            out.push(':');
            out.push_str(name);
            width += 1 + name.len();
        }
    }
    width
}

fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RsaSha256 => "rsa-sha256",
        Algorithm::RsaSha1 => "rsa-sha1",
        Algorithm::Ed25519Sha256 => "ed25519-sha256",
    }
}

/// A canonicalization as the `c=` tag (and OpenDKIM's Canonicalization
/// setting) writes it.
pub fn canonicalization_name(c: mail_auth::dkim::Canonicalization) -> &'static str {
    match c {
        mail_auth::dkim::Canonicalization::Relaxed => "relaxed",
        mail_auth::dkim::Canonicalization::Simple => "simple",
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// RFC 6376's dkim-quoted-printable for `i=`: `=XX` for controls, space,
/// `;`, `=` and non-ASCII octets.
fn quoted_printable(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &byte in value.as_bytes() {
        if byte <= b' ' || byte == b';' || byte == b'=' || byte >= 0x7f {
            out.push_str(&format!("={byte:02X}"));
        } else {
            out.push(char::from(byte));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::dkim::Canonicalization;

    fn signature(h: &[&str]) -> Signature {
        Signature {
            v: 1,
            a: Algorithm::RsaSha256,
            d: "example.com".into(),
            s: "test".into(),
            t: 1_261_515_852,
            ch: Canonicalization::Relaxed,
            cb: Canonicalization::Simple,
            bh: vec![0xdd; 32],
            h: h.iter().map(ToString::to_string).collect(),
            ..Signature::default()
        }
    }

    fn lines(value: &str) -> Vec<&str> {
        value.split("\r\n").collect()
    }

    #[test]
    fn tags_come_in_opendkims_order() {
        let mut sig = signature(&["From", "Date", "Subject"]);
        sig.x = 1_261_519_452;
        sig.i = "user@example.com".into();
        sig.l = 17;
        let value = layout(&sig, "AAAA");
        let order: Vec<&str> = value
            .split(';')
            .filter_map(|t| t.trim().split('=').next())
            .collect();
        assert_eq!(
            order,
            ["v", "a", "c", "d", "s", "t", "x", "i", "bh", "l", "h", "b"]
        );
    }

    #[test]
    fn never_folds_inside_bh_and_keeps_h_whole_when_it_fits() {
        let value = layout(&signature(&["From", "Date", "Subject"]), "");
        let bh = format!("bh={};", base64(&[0xdd; 32]));
        assert!(value.contains(&bh), "{value}");
        assert!(value.contains("h=From:Date:Subject;"), "{value}");
        assert!(value.starts_with(" v=1; a=rsa-sha256; c=relaxed/simple;"));
    }

    #[test]
    fn folds_long_h_at_colons_and_b_at_the_margin() {
        let names = [
            "From",
            "To",
            "Cc",
            "Subject",
            "Date",
            "Message-ID",
            "In-Reply-To",
            "References",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding",
        ];
        let b = "A".repeat(344);
        let value = layout(&signature(&names), &b);
        for line in lines(&value) {
            let width = line.len()
                + if line.starts_with('\t') {
                    7
                } else {
                    INITIAL - 1
                };
            assert!(width <= MARGIN, "line over the margin: {line:?}");
        }
        let unfolded: String = value.replace("\r\n\t ", "").replace("\r\n\t", " ");
        assert!(
            unfolded.contains(&format!("h={};", names.join(":"))),
            "{unfolded}"
        );
        assert!(unfolded.ends_with(&format!(" b={b}")), "{unfolded}");
    }

    #[test]
    fn the_signed_form_differs_from_the_final_one_only_in_b() {
        let sig = signature(&["From", "Date", "Subject"]);
        let signed = layout(&sig, "");
        let finished = layout(&sig, &"Q".repeat(88));
        assert!(finished.starts_with(&signed), "{signed:?} / {finished:?}");
        assert!(signed.ends_with("\r\n\tb="));
    }

    #[test]
    fn identity_is_quoted_printable() {
        let mut sig = signature(&["From"]);
        sig.i = "a;b c@example.com".into();
        assert!(layout(&sig, "").contains("i=a=3Bb=20c@example.com;"));
    }
}
