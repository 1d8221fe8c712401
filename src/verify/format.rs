//! Whether a message's header block can be verified at all, as libopendkim
//! decides before it looks at any signature (`dkim_eoh_verify`): the first
//! From field must name an address (`dkim_getsender`), and under OpenDKIM's
//! StrictHeaders the block must be one RFC 5322 allows (exactly one Date
//! and one From, at most one Subject, To, Cc ...: `dkim_headercheck`). A
//! message that fails is `permerror` as a whole, signed or not: a
//! signature over such a block proves nothing about which field a reader
//! sees (RFC 6376 section 8.15), and DMARC has no From domain to align.
//!
//! The checks, their order and the reasons are libopendkim's, so log
//! readers see the words they know. OpenDKIM's WeakSyntaxChecks turns the
//! From check off. This module only reads the header block.

use crate::dkim::HeaderBlock;
use crate::policy::address::dkim_mail_parse;

/// Which checks apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatChecks {
    /// The first From field names an address (off with WeakSyntaxChecks).
    pub sender: bool,
    /// OpenDKIM's StrictHeaders.
    pub strict: bool,
}

impl Default for FormatChecks {
    fn default() -> Self {
        FormatChecks {
            sender: true,
            strict: false,
        }
    }
}

/// Fields that may appear at most once (RFC 5322 section 3.6), in the
/// order libopendkim checks them after Date and From.
const AT_MOST_ONCE: &[&str] = &[
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Subject",
];

/// Whether the first From field names an address (a user and a domain,
/// as libopendkim's `dkim_mail_parse` reads it); `None` without a From.
fn first_from_names_an_address(headers: &HeaderBlock) -> Option<bool> {
    let from = headers.first("From")?;
    let parsed = dkim_mail_parse(&from.value).unwrap_or_default();
    Some(parsed.user.is_some_and(|u| !u.is_empty()) && parsed.domain.is_some_and(|d| !d.is_empty()))
}

/// Why the header block cannot be verified, if it cannot.
pub fn violation(headers: &HeaderBlock, checks: FormatChecks) -> Option<String> {
    if !checks.sender && !checks.strict {
        return None;
    }
    let sender = first_from_names_an_address(headers);
    if checks.sender {
        match sender {
            None => return Some("no from header field detected".into()),
            Some(false) => return Some("can't determine sender address".into()),
            Some(true) => {}
        }
    }
    if !checks.strict {
        return None;
    }
    let count = |name: &str| headers.fields().iter().filter(|f| f.is_named(name)).count();
    match count("Date") {
        0 => return Some("Date: header field absent".into()),
        1 => {}
        _ => return Some("multiple Date: header fields present".into()),
    }
    match count("From") {
        0 => return Some("From: header field absent".into()),
        1 => {}
        _ => return Some("multiple From: header fields present".into()),
    }
    if sender == Some(false) {
        return Some("From: header field cannot be parsed".into());
    }
    AT_MOST_ONCE
        .iter()
        .find(|name| count(name) > 1)
        .map(|name| format!("multiple {name}: header fields present"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(fields: &[(&str, &str)]) -> HeaderBlock {
        let mut block = HeaderBlock::new();
        for (name, value) in fields {
            block.push_copy(name.as_bytes(), value.as_bytes());
        }
        block
    }

    const STRICT: FormatChecks = FormatChecks {
        sender: true,
        strict: true,
    };

    #[test]
    fn a_plain_message_passes() {
        let headers = block(&[
            ("From", " user@example.com"),
            ("Date", " Tue, 22 Dec 2009 13:04:12 -0800"),
            ("Subject", " hello"),
        ]);
        assert_eq!(violation(&headers, STRICT), None);
    }

    #[test]
    fn two_from_fields_are_named() {
        let headers = block(&[
            ("From", " user@example.com"),
            ("From", " user@example.net"),
            ("Date", " Tue, 22 Dec 2009 13:04:12 -0800"),
        ]);
        assert_eq!(
            violation(&headers, STRICT).as_deref(),
            Some("multiple From: header fields present")
        );
    }

    #[test]
    fn a_missing_or_unparseable_from_fails_unless_weak_syntax_checks() {
        let default = FormatChecks::default();
        let unparseable = block(&[("From", " user"), ("Date", " x")]);
        assert_eq!(
            violation(&unparseable, default).as_deref(),
            Some("can't determine sender address")
        );
        let none = block(&[("Subject", " hi")]);
        assert_eq!(
            violation(&none, default).as_deref(),
            Some("no from header field detected")
        );
        let weak = FormatChecks {
            sender: false,
            strict: false,
        };
        assert_eq!(violation(&unparseable, weak), None);
        assert_eq!(violation(&none, weak), None);
        // Two From fields are fine without StrictHeaders.
        let two = block(&[("From", " a@b.example"), ("From", " c@d.example")]);
        assert_eq!(violation(&two, default), None);
    }

    #[test]
    fn date_is_checked_first_then_from_then_the_rest() {
        let no_date = block(&[("From", " a@b.example"), ("From", " c@d.example")]);
        assert_eq!(
            violation(&no_date, STRICT).as_deref(),
            Some("Date: header field absent")
        );
        let two_subjects = block(&[
            ("Date", " x"),
            ("From", " a@b.example"),
            ("subject", " one"),
            ("Subject", " two"),
        ]);
        assert_eq!(
            violation(&two_subjects, STRICT).as_deref(),
            Some("multiple Subject: header fields present")
        );
    }
}
