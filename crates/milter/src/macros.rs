//! Macros the MTA defines (`D` packets), kept per stage for a connection.
//!
//! Each `D` packet names the stage of the event that follows it. A new
//! definition for a stage replaces that stage's macros and forgets every
//! later stage (a new MAIL forgets the last message's RCPT macros); an abort
//! forgets everything from MAIL on. Lookups search the latest stage first,
//! and accept names with or without braces (`auth_type` or `{auth_type}`).
//! Values are bytes: the protocol never promises UTF-8. This module keeps
//! and finds macros; it never interprets a value, which is the filter's
//! business.

use bytes::Bytes;

/// The stage a macro packet belongs to: the event it precedes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Before CONNECT (`C`): the MTA and the client (Postfix: `j`,
    /// `{daemon_name}`, `{daemon_addr}`, `v`, `_`). `SMFIM_CONNECT` (0).
    Connect,
    /// Before HELO (`H`): the TLS session, if any. `SMFIM_HELO` (1).
    Helo,
    /// Before MAIL FROM (`M`): authentication and the sender
    /// (`{auth_type}`, `{mail_addr}`, ...). `SMFIM_ENVFROM` (2).
    Mail,
    /// Before each RCPT TO (`R`): the recipient (`{rcpt_addr}`, ...).
    /// `SMFIM_ENVRCPT` (3).
    Rcpt,
    /// Before DATA (`T`). `SMFIM_DATA` (4).
    Data,
    /// Before each header (`L`); no macro list can be requested for it.
    Header,
    /// Before end of headers (`N`). `SMFIM_EOH` (6).
    EndOfHeaders,
    /// Before each body chunk (`B`); no macro list can be requested for
    /// it.
    Body,
    /// Before end of message (`E`): usually the queue id `i`.
    /// `SMFIM_EOM` (5).
    EndOfMessage,
    /// Before an unknown command (`U`); no macro list can be requested for
    /// it. Kept apart from the others: later stages never forget it.
    Unknown,
}

impl Stage {
    /// The stages a filter can request a macro list for (`SMFIM_*`), in
    /// the order of a transaction.
    pub const REQUESTABLE: [Stage; 7] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::EndOfHeaders,
        Stage::EndOfMessage,
    ];

    const COUNT: usize = 10;

    /// The stage of a `D` packet, from the command character it names.
    pub fn from_command(command: u8) -> Option<Stage> {
        Some(match command {
            b'C' => Stage::Connect,
            b'H' => Stage::Helo,
            b'M' => Stage::Mail,
            b'R' => Stage::Rcpt,
            b'T' => Stage::Data,
            b'L' => Stage::Header,
            b'N' => Stage::EndOfHeaders,
            b'B' => Stage::Body,
            b'E' => Stage::EndOfMessage,
            b'U' => Stage::Unknown,
            _ => return None,
        })
    }

    /// The command character of the event this stage precedes.
    pub fn command(self) -> u8 {
        match self {
            Stage::Connect => b'C',
            Stage::Helo => b'H',
            Stage::Mail => b'M',
            Stage::Rcpt => b'R',
            Stage::Data => b'T',
            Stage::Header => b'L',
            Stage::EndOfHeaders => b'N',
            Stage::Body => b'B',
            Stage::EndOfMessage => b'E',
            Stage::Unknown => b'U',
        }
    }

    /// The index used when requesting a macro list during negotiation
    /// (`SMFIM_*`); only some stages can be requested.
    pub fn request_index(self) -> Option<u32> {
        Some(match self {
            Stage::Connect => 0,
            Stage::Helo => 1,
            Stage::Mail => 2,
            Stage::Rcpt => 3,
            Stage::Data => 4,
            Stage::EndOfMessage => 5,
            Stage::EndOfHeaders => 6,
            Stage::Header | Stage::Body | Stage::Unknown => return None,
        })
    }

    /// The stage a macro list request index names.
    pub fn from_request_index(index: u32) -> Option<Stage> {
        [
            Stage::Connect,
            Stage::Helo,
            Stage::Mail,
            Stage::Rcpt,
            Stage::Data,
            Stage::EndOfMessage,
            Stage::EndOfHeaders,
        ]
        .get(index as usize)
        .copied()
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// The most bytes of names and values one `D` packet may carry. Postfix
/// sends a few hundred; the cap bounds what a connection keeps per stage.
pub const MAX_STAGE_BYTES: usize = 64 * 1024;

/// How many bytes of names and values a `D` packet carries.
pub fn stage_bytes(pairs: &[(Bytes, Bytes)]) -> usize {
    pairs.iter().map(|(n, v)| n.len() + v.len()).sum()
}

/// Macros defined so far on a connection, per stage.
#[derive(Debug, Clone, Default)]
pub struct Macros {
    stages: [Vec<(Bytes, Bytes)>; Stage::COUNT],
}

impl Macros {
    /// No macros, as at the start of a connection.
    pub fn new() -> Self {
        Macros::default()
    }

    /// Record a `D` packet: replace `stage`'s macros and forget later stages.
    /// `Unknown` is kept apart: an unknown command can come at any time and
    /// does not invalidate anything.
    ///
    /// The names and values are copied out of the frame, all of a stage's
    /// into one allocation: a frame shares the connection's read buffer,
    /// and a few bytes of macros kept from it would keep all of that buffer
    /// (up to the largest frame a client sent) allocated, once per stage.
    pub fn define(&mut self, stage: Stage, pairs: impl IntoIterator<Item = (Bytes, Bytes)>) {
        if stage != Stage::Unknown {
            self.forget_from(stage);
        }
        let pairs: Vec<(Bytes, Bytes)> = pairs.into_iter().collect();
        let mut owned = bytes::BytesMut::with_capacity(stage_bytes(&pairs));
        for (name, value) in &pairs {
            owned.extend_from_slice(name);
            owned.extend_from_slice(value);
        }
        let owned = owned.freeze();
        let slot = &mut self.stages[stage.slot()];
        slot.clear();
        let mut at = 0;
        for (name, value) in &pairs {
            let name_at = at;
            at += name.len();
            let value_at = at;
            at += value.len();
            slot.push((
                bare(owned.slice(name_at..value_at)),
                owned.slice(value_at..at),
            ));
        }
    }

    /// Forget `stage` and every later stage (`Unknown` excepted).
    pub fn forget_from(&mut self, stage: Stage) {
        for slot in &mut self.stages[stage.slot()..Stage::Unknown.slot()] {
            slot.clear();
        }
    }

    /// Forget everything (a new connection on the same socket).
    pub fn clear(&mut self) {
        for slot in &mut self.stages {
            slot.clear();
        }
    }

    /// The latest value of a macro, by name with or without braces.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        let name = name
            .strip_prefix(b"{")
            .and_then(|n| n.strip_suffix(b"}"))
            .unwrap_or(name);
        self.stages.iter().rev().find_map(|slot| {
            slot.iter()
                .find(|(n, _)| n.as_ref() == name)
                .map(|(_, v)| v.as_ref())
        })
    }

    /// The latest value as text, when it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// `{name}` -> `name`, without copying.
fn bare(name: Bytes) -> Bytes {
    if name.len() >= 2 && name.first() == Some(&b'{') && name.last() == Some(&b'}') {
        name.slice(1..name.len() - 1)
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&'static str, &'static str)]) -> Vec<(Bytes, Bytes)> {
        list.iter()
            .map(|(n, v)| {
                (
                    Bytes::from_static(n.as_bytes()),
                    Bytes::from_static(v.as_bytes()),
                )
            })
            .collect()
    }

    #[test]
    fn looks_up_names_with_or_without_braces() {
        let mut m = Macros::new();
        m.define(
            Stage::Mail,
            pairs(&[("{auth_type}", "PLAIN"), ("i", "ABC123")]),
        );
        assert_eq!(m.get("auth_type"), Some(&b"PLAIN"[..]));
        assert_eq!(m.get("{auth_type}"), Some(&b"PLAIN"[..]));
        assert_eq!(m.get_str("i"), Some("ABC123"));
        assert_eq!(m.get("{i}"), Some(&b"ABC123"[..]));
        assert_eq!(m.get("auth_authen"), None);
    }

    #[test]
    fn later_stage_wins_and_earlier_stages_stay_visible() {
        let mut m = Macros::new();
        m.define(
            Stage::Connect,
            pairs(&[("j", "mx.example.com"), ("i", "none")]),
        );
        m.define(Stage::EndOfMessage, pairs(&[("i", "QUEUEID")]));
        assert_eq!(m.get_str("i"), Some("QUEUEID"));
        assert_eq!(m.get_str("j"), Some("mx.example.com"));
    }

    #[test]
    fn new_mail_forgets_previous_message_macros() {
        let mut m = Macros::new();
        m.define(Stage::Connect, pairs(&[("{daemon_name}", "ORIGINATING")]));
        m.define(Stage::Mail, pairs(&[("{auth_type}", "PLAIN")]));
        m.define(Stage::Rcpt, pairs(&[("{rcpt_addr}", "a@example.org")]));
        m.define(Stage::Mail, pairs(&[]));
        assert_eq!(m.get("auth_type"), None);
        assert_eq!(m.get("rcpt_addr"), None);
        assert_eq!(m.get_str("daemon_name"), Some("ORIGINATING"));
    }

    #[test]
    fn forget_from_mail_keeps_connection_and_helo() {
        let mut m = Macros::new();
        m.define(Stage::Connect, pairs(&[("j", "mx")]));
        m.define(Stage::Helo, pairs(&[("{tls_version}", "TLSv1.3")]));
        m.define(Stage::Mail, pairs(&[("{auth_type}", "PLAIN")]));
        m.define(Stage::EndOfMessage, pairs(&[("i", "Q1")]));
        m.forget_from(Stage::Mail);
        assert_eq!(m.get("auth_type"), None);
        assert_eq!(m.get("i"), None);
        assert_eq!(m.get_str("tls_version"), Some("TLSv1.3"));
        assert_eq!(m.get_str("j"), Some("mx"));
    }

    #[test]
    fn macros_do_not_keep_the_frame_they_came_in() {
        let frame = Bytes::from(vec![b'x'; 1 << 20]);
        let mut m = Macros::new();
        m.define(Stage::Mail, [(frame.slice(0..3), frame.slice(3..10))]);
        let value = m.get("xxx").unwrap();
        let frame_range = frame.as_ptr_range();
        assert!(
            !frame_range.contains(&value.as_ptr()),
            "value points into the frame"
        );
        assert_eq!(value, b"xxxxxxx");
    }

    #[test]
    fn empty_values_are_kept_as_empty() {
        let mut m = Macros::new();
        m.define(Stage::Mail, pairs(&[("{auth_type}", "")]));
        assert_eq!(m.get("auth_type"), Some(&b""[..]));
    }

    #[test]
    fn request_indices_round_trip() {
        for i in 0..7 {
            let stage = Stage::from_request_index(i).unwrap();
            assert_eq!(stage.request_index(), Some(i));
        }
        assert_eq!(Stage::from_request_index(7), None);
        for c in b"CHMRTLNBEU" {
            assert_eq!(Stage::from_command(*c).unwrap().command(), *c);
        }
    }
}
