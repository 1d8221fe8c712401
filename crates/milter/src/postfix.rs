//! Postfix's side of the protocol, as facts: what it offers for each
//! `milter_protocol` setting and which macros it sends by default.
//!
//! This is the one place that defines them. A filter asks for Postfix's
//! default macros when it wants nothing more; the MTA-side
//! [`client`](crate::client) offers and sends exactly these, so a test or
//! a load run sees what a real Postfix would send. Nothing here decides
//! anything (answering an offer is
//! [`negotiate`](crate::options::negotiate)'s job) or talks to a Postfix;
//! it only describes Postfix 3.x.

use crate::macros::Stage;
use crate::options::{Actions, Offer, ProtocolFlags};

/// Every action Postfix offers (`SMFIF_*` up to `SETSYMLIST`).
pub const ACTIONS: u32 = 0x1ff;

/// What Postfix offers for `milter_protocol = version` (2, 3, 4 or 6);
/// `None` for a version Postfix does not speak.
pub fn offer(version: u32) -> Option<Offer> {
    let protocol = match version {
        2 => 0x7f,
        3 => 0x17f,
        4 => 0x37f,
        6 => 0x1f_ffff,
        _ => return None,
    };
    Some(Offer {
        version,
        actions: Actions::from_bits_retain(ACTIONS),
        protocol: ProtocolFlags::from_bits_retain(protocol),
    })
}

/// Postfix's default macro lists (`milter_*_macros`): what it sends a
/// milter that asks for none.
pub fn default_macros(stage: Stage) -> &'static [&'static str] {
    match stage {
        Stage::Connect => &["j", "{daemon_name}", "{daemon_addr}", "v", "_"],
        Stage::Helo => &[
            "{tls_version}",
            "{cipher}",
            "{cipher_bits}",
            "{cert_subject}",
            "{cert_issuer}",
        ],
        Stage::Mail => &[
            "i",
            "{auth_type}",
            "{auth_authen}",
            "{auth_author}",
            "{mail_addr}",
            "{mail_host}",
            "{mail_mailer}",
        ],
        Stage::Rcpt => &["i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"],
        Stage::Data | Stage::EndOfHeaders | Stage::EndOfMessage => &["i"],
        Stage::Header | Stage::Body | Stage::Unknown => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_by_version() {
        assert_eq!(offer(2).unwrap().protocol.bits(), 0x7f);
        assert_eq!(offer(3).unwrap().protocol.bits(), 0x17f);
        assert_eq!(offer(4).unwrap().protocol.bits(), 0x37f);
        assert_eq!(offer(6).unwrap().protocol.bits(), 0x1f_ffff);
        assert_eq!(offer(6).unwrap().actions.bits(), 0x1ff);
        assert!(offer(5).is_none());
        assert!(offer(1).is_none());
    }

    #[test]
    fn sends_the_queue_id_from_mail_on() {
        assert!(!default_macros(Stage::Connect).contains(&"i"));
        for stage in [Stage::Mail, Stage::Rcpt, Stage::Data, Stage::EndOfMessage] {
            assert!(default_macros(stage).contains(&"i"), "{stage:?}");
        }
    }
}
