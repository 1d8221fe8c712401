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
pub(super) fn layout(signature: &Signature, b: &str) -> String {
    let mut tags: Vec<(&str, String)> = vec![
        ("v", "1".into()),
        ("a", algorithm_name(signature.a).into()),
        (
            "c",
            format!(
                "{}/{}",
                canonicalization_name(signature.ch),
                canonicalization_name(signature.cb)
            ),
        ),
        ("d", signature.d.clone()),
        ("s", signature.s.clone()),
        ("t", signature.t.to_string()),
    ];
    if signature.x > 0 {
        tags.push(("x", signature.x.to_string()));
    }
    if !signature.i.is_empty() {
        tags.push(("i", quoted_printable(&signature.i)));
    }
    if signature.r {
        tags.push(("r", "y".into()));
    }
    if let Some(atps) = &signature.atps {
        tags.push(("atps", atps.clone()));
        tags.push(("atpsh", "sha256".into()));
    }
    tags.push(("bh", base64(&signature.bh)));
    if signature.l > 0 {
        tags.push(("l", signature.l.to_string()));
    }
    tags.push(("h", signature.h.join(":")));

    let mut out = String::with_capacity(600);
    out.push(' ');
    let mut width = INITIAL;
    for (n, (tag, value)) in tags.iter().enumerate() {
        let token = format!("{tag}={value};");
        if n == 0 {
            out.push_str(&token);
            width += token.len();
        } else if width + token.len() > MARGIN {
            out.push_str("\r\n\t");
            width = CONTINUED;
            if *tag == "h" {
                width = fold_header_list(&mut out, value, width);
                out.push(';');
                width += 1;
            } else {
                out.push_str(&token);
                width += token.len();
            }
        } else {
            out.push(' ');
            out.push_str(&token);
            width += 1 + token.len();
        }
    }
    out.push_str("\r\n\tb=");
    width = CONTINUED + 2;
    for c in b.chars() {
        if width >= MARGIN {
            out.push_str("\r\n\t ");
            width = CONTINUED + 1;
        }
        out.push(c);
        width += 1;
    }
    out
}

/// `h=` broken at colons, each continuation line indented by TAB SPACE.
fn fold_header_list(out: &mut String, names: &str, mut width: usize) -> usize {
    out.push_str("h=");
    width += 2;
    for (n, name) in names.split(':').enumerate() {
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

fn canonicalization_name(c: mail_auth::dkim::Canonicalization) -> &'static str {
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
