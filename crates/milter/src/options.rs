//! Option negotiation: which protocol version, which modifications, which
//! events and which replies the two sides agree on.
//!
//! The MTA opens every connection with an offer (`O`); we answer with a
//! subset of it. [`Needs`] is what a filter declares up front (the events it
//! wants to see, the events it may answer with something other than
//! "continue", the modifications it makes, the macros it reads);
//! [`negotiate`] turns an offer and those needs into the [`Negotiated`]
//! options the session runs with. This module never touches the wire.

use bitflags::bitflags;

use super::macros::Stage;

/// The oldest protocol version we speak (Postfix's `milter_protocol = 2`).
pub const MIN_VERSION: u32 = 2;
/// The newest protocol version we speak (Sendmail 8.14+, Postfix 2.6+).
pub const MAX_VERSION: u32 = 6;

bitflags! {
    /// Modifications a filter may request at end of message (`SMFIF_*`).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
    pub struct Actions: u32 {
        /// `SMFIF_ADDHDRS`: add headers (`h`) and insert them (`i`).
        const ADD_HEADERS = 0x01;
        /// `SMFIF_CHGBODY`: replace the body (`b`).
        const CHANGE_BODY = 0x02;
        /// `SMFIF_ADDRCPT`: add recipients (`+`).
        const ADD_RECIPIENT = 0x04;
        /// `SMFIF_DELRCPT`: remove recipients (`-`).
        const DELETE_RECIPIENT = 0x08;
        /// `SMFIF_CHGHDRS`: change or delete headers (`m`).
        const CHANGE_HEADERS = 0x10;
        /// `SMFIF_QUARANTINE`: quarantine the message (`q`).
        const QUARANTINE = 0x20;
        /// `SMFIF_CHGFROM`: change the envelope sender (`e`).
        const CHANGE_SENDER = 0x40;
        /// `SMFIF_ADDRCPT_PAR`: add recipients with ESMTP parameters
        /// (`2`).
        const ADD_RECIPIENT_WITH_ARGS = 0x80;
        /// `SMFIF_SETSYMLIST`: choose the macros the MTA sends at each
        /// stage, in the `O` reply. [`negotiate`] asks for it exactly when
        /// [`Needs::macros`] is not empty.
        const SET_MACRO_LIST = 0x100;
    }
}

bitflags! {
    /// Protocol flags (`SMFIP_*`): events the MTA should not send (`NO_*`),
    /// events the filter will not reply to (`NR_*`), and protocol details.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ProtocolFlags: u32 {
        /// `SMFIP_NOCONNECT`: do not send CONNECT (`C`).
        const NO_CONNECT = 0x1;
        /// `SMFIP_NOHELO`: do not send HELO (`H`).
        const NO_HELO = 0x2;
        /// `SMFIP_NOMAIL`: do not send MAIL FROM (`M`).
        const NO_MAIL = 0x4;
        /// `SMFIP_NORCPT`: do not send RCPT TO (`R`).
        const NO_RCPT = 0x8;
        /// `SMFIP_NOBODY`: do not send body chunks (`B`).
        const NO_BODY = 0x10;
        /// `SMFIP_NOHDRS`: do not send headers (`L`).
        const NO_HEADERS = 0x20;
        /// `SMFIP_NOEOH`: do not send end of headers (`N`).
        const NO_END_OF_HEADERS = 0x40;
        /// `SMFIP_NOHREPL`: no reply to each header.
        ///
        /// Also spelled `SMFIP_NR_HDR`.
        const NR_HEADER = 0x80;
        /// `SMFIP_NOUNKNOWN`: do not send unknown commands (`U`; version 3
        /// and later).
        const NO_UNKNOWN = 0x100;
        /// `SMFIP_NODATA`: do not send DATA (`T`; version 4 and later).
        const NO_DATA = 0x200;
        /// `SMFIP_SKIP`: the MTA understands the skip reply (`s`), which
        /// ends the body chunks early. [`negotiate`] asks for it when the
        /// filter sees the body, so that [`crate::Verdict::Skip`] works.
        const SKIP = 0x400;
        /// `SMFIP_RCPT_REJ`: also send the recipients the MTA rejected.
        /// [`negotiate`] never asks for it.
        const RCPT_REJECTED = 0x800;
        /// `SMFIP_NR_CONN`: the milter does not reply to CONNECT.
        const NR_CONNECT = 0x1000;
        /// `SMFIP_NR_HELO`: the milter does not reply to HELO.
        const NR_HELO = 0x2000;
        /// `SMFIP_NR_MAIL`: the milter does not reply to MAIL FROM.
        const NR_MAIL = 0x4000;
        /// `SMFIP_NR_RCPT`: the milter does not reply to RCPT TO.
        const NR_RCPT = 0x8000;
        /// `SMFIP_NR_DATA`: the milter does not reply to DATA.
        const NR_DATA = 0x10000;
        /// `SMFIP_NR_UNKN`: the milter does not reply to unknown commands.
        const NR_UNKNOWN = 0x20000;
        /// `SMFIP_NR_EOH`: the milter does not reply to end of headers.
        const NR_END_OF_HEADERS = 0x40000;
        /// `SMFIP_NR_BODY`: the milter does not reply to body chunks.
        const NR_BODY = 0x80000;
        /// `SMFIP_HDR_LEADSPC`: header values keep their leading space,
        /// both ways.
        const HEADER_LEADING_SPACE = 0x100000;
    }
}

/// The events of an SMTP transaction that carry a reply, in protocol order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// CONNECT (`C`): an SMTP client connected.
    Connect,
    /// HELO or EHLO (`H`).
    Helo,
    /// MAIL FROM (`M`): a transaction starts.
    Mail,
    /// RCPT TO (`R`), once per recipient.
    Rcpt,
    /// DATA (`T`); version 4 and later.
    Data,
    /// An SMTP command the MTA does not know (`U`); version 3 and later.
    Unknown,
    /// One header (`L`).
    Header,
    /// End of headers (`N`).
    EndOfHeaders,
    /// One body chunk (`B`).
    Body,
}

impl Event {
    /// Every event, in protocol order.
    pub const ALL: [Event; 9] = [
        Event::Connect,
        Event::Helo,
        Event::Mail,
        Event::Rcpt,
        Event::Data,
        Event::Unknown,
        Event::Header,
        Event::EndOfHeaders,
        Event::Body,
    ];

    /// The flag that asks the MTA not to send this event.
    pub fn no_send_flag(self) -> ProtocolFlags {
        match self {
            Event::Connect => ProtocolFlags::NO_CONNECT,
            Event::Helo => ProtocolFlags::NO_HELO,
            Event::Mail => ProtocolFlags::NO_MAIL,
            Event::Rcpt => ProtocolFlags::NO_RCPT,
            Event::Data => ProtocolFlags::NO_DATA,
            Event::Unknown => ProtocolFlags::NO_UNKNOWN,
            Event::Header => ProtocolFlags::NO_HEADERS,
            Event::EndOfHeaders => ProtocolFlags::NO_END_OF_HEADERS,
            Event::Body => ProtocolFlags::NO_BODY,
        }
    }

    /// The flag that tells the MTA we will not reply to this event.
    pub fn no_reply_flag(self) -> ProtocolFlags {
        match self {
            Event::Connect => ProtocolFlags::NR_CONNECT,
            Event::Helo => ProtocolFlags::NR_HELO,
            Event::Mail => ProtocolFlags::NR_MAIL,
            Event::Rcpt => ProtocolFlags::NR_RCPT,
            Event::Data => ProtocolFlags::NR_DATA,
            Event::Unknown => ProtocolFlags::NR_UNKNOWN,
            Event::Header => ProtocolFlags::NR_HEADER,
            Event::EndOfHeaders => ProtocolFlags::NR_END_OF_HEADERS,
            Event::Body => ProtocolFlags::NR_BODY,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of [`Event`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EventSet(u16);

impl EventSet {
    /// No event.
    pub const NONE: EventSet = EventSet(0);
    /// Every event of [`Event::ALL`].
    pub const ALL: EventSet = EventSet(0x1ff);

    /// The set of exactly these events (repeats are harmless).
    pub fn of(events: &[Event]) -> EventSet {
        EventSet(events.iter().fold(0, |bits, e| bits | e.bit()))
    }

    /// Whether `event` is in the set.
    pub fn contains(self, event: Event) -> bool {
        self.0 & event.bit() != 0
    }
}

/// What a filter declares before negotiation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Modifications the filter may request at end of message.
    pub actions: Actions,
    /// Events the filter wants to see. Others are suppressed when the MTA
    /// allows it, and answered "continue" without calling the filter when
    /// it does not.
    pub events: EventSet,
    /// Events the filter may answer with something other than "continue".
    /// For the others the MTA is told not to wait for a reply, when it
    /// allows that.
    pub replies: EventSet,
    /// Macro names to request per stage. Empty: the MTA's defaults. Note
    /// that requesting any list makes Postfix drop its defaults for every
    /// stage, so a filter that asks must ask for everything it reads.
    pub macros: Vec<(Stage, Vec<String>)>,
}

impl Needs {
    /// A filter that sees `events`, answers each with "continue" (so the
    /// MTA need not wait), requests no modification and takes the MTA's
    /// default macros. The methods below add to that.
    pub fn seeing(events: EventSet) -> Needs {
        Needs {
            events,
            ..Needs::default()
        }
    }

    /// The filter may answer `events` with something other than
    /// "continue"; the MTA waits for those replies.
    pub fn answering(mut self, events: EventSet) -> Needs {
        self.replies = events;
        self
    }

    /// The filter may request these modifications at end of message.
    pub fn modifying(mut self, actions: Actions) -> Needs {
        self.actions = actions;
        self
    }

    /// The filter asks for these macros at `stage` (see [`Needs::macros`]:
    /// asking for any list replaces the MTA's defaults at every stage).
    pub fn with_macros(mut self, stage: Stage, names: &[&str]) -> Needs {
        self.macros
            .push((stage, names.iter().map(ToString::to_string).collect()));
        self
    }
}

/// The options both sides run the connection with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The protocol version both sides use, 2 to 6. [`negotiate`] takes
    /// the MTA's offer, capped at [`MAX_VERSION`].
    pub version: u32,
    /// The modifications the milter may request at end of message, plus
    /// [`Actions::SET_MACRO_LIST`] when it chose its macros.
    pub actions: Actions,
    /// The protocol flags in force: events the MTA does not send
    /// (`NO_*`), events it does not wait for a reply to (`NR_*`), and
    /// [`ProtocolFlags::HEADER_LEADING_SPACE`].
    pub protocol: ProtocolFlags,
}

impl Negotiated {
    /// Whether the MTA waits for a reply to this event.
    pub fn expects_reply(&self, event: Event) -> bool {
        !self.protocol.contains(event.no_reply_flag())
    }

    /// Whether header values travel with their leading space, both ways.
    pub fn header_leading_space(&self) -> bool {
        self.protocol.contains(ProtocolFlags::HEADER_LEADING_SPACE)
    }
}

/// What the MTA offered in its `O` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The newest protocol version the MTA speaks (Postfix: its
    /// `milter_protocol`, 6 by default).
    pub version: u32,
    /// Every modification the MTA allows (Postfix: all of them, 0x1FF).
    pub actions: Actions,
    /// Every protocol flag the MTA understands; Postfix's set grows with
    /// the version, from 0x7F for 2 to 0x1FFFFF for 6.
    pub protocol: ProtocolFlags,
}

/// Why no options could be agreed. The connection closes without an
/// answer, and the MTA applies its `milter_default_action`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// The MTA offered this version, below [`MIN_VERSION`]. A version above
    /// [`MAX_VERSION`] is fine: the answer is [`MAX_VERSION`].
    #[error(
        "MTA offered milter protocol version {0}; versions {MIN_VERSION} to {MAX_VERSION} are supported"
    )]
    UnsupportedVersion(u32),
    /// The MTA does not allow a modification the filter declared in
    /// [`Needs::actions`].
    #[error(
        "MTA does not allow the modifications this filter makes ({missing:?}); check the MTA's milter settings"
    )]
    MissingActions {
        /// The actions the filter needs and the offer lacks.
        missing: Actions,
    },
}

/// Agree on options: the highest common version, the filter's actions, and
/// the protocol flags that save round trips, all within what was offered.
///
/// Unknown bits in the offer are ignored, never echoed back.
pub fn negotiate(offer: &Offer, needs: &Needs) -> Result<Negotiated, NegotiationError> {
    if offer.version < MIN_VERSION {
        return Err(NegotiationError::UnsupportedVersion(offer.version));
    }
    let version = offer.version.min(MAX_VERSION);
    let wanted_actions = needs.actions
        | if needs.macros.is_empty() {
            Actions::empty()
        } else {
            Actions::SET_MACRO_LIST
        };
    let missing = needs.actions - offer.actions;
    if !missing.is_empty() {
        return Err(NegotiationError::MissingActions { missing });
    }
    let actions = wanted_actions & offer.actions;

    let mut protocol = ProtocolFlags::empty();
    for event in Event::ALL {
        if !needs.events.contains(event) {
            protocol |= event.no_send_flag();
        }
        if !needs.replies.contains(event) {
            protocol |= event.no_reply_flag();
        }
    }
    protocol |= ProtocolFlags::HEADER_LEADING_SPACE;
    if needs.events.contains(Event::Body) {
        protocol |= ProtocolFlags::SKIP;
    }
    let protocol = protocol & offer.protocol;

    Ok(Negotiated {
        version,
        actions,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dkim_like_needs() -> Needs {
        use Event::*;
        let all_but_helo_data_and_unknown = [Connect, Mail, Rcpt, Header, EndOfHeaders, Body];
        Needs::seeing(EventSet::of(&all_but_helo_data_and_unknown))
            .answering(EventSet::of(&[Connect, EndOfHeaders]))
            .modifying(Actions::ADD_HEADERS)
    }

    /// Postfix's offer for `milter_protocol`; for a version Postfix does
    /// not offer (5), version 6's flags under that version number.
    fn postfix_offer(milter_protocol: u32) -> Offer {
        crate::postfix::offer(milter_protocol).unwrap_or(Offer {
            version: milter_protocol,
            ..crate::postfix::offer(6).unwrap()
        })
    }

    #[test]
    fn answers_the_offered_version_up_to_six() {
        for v in 2..=6 {
            let n = negotiate(&postfix_offer(v), &dkim_like_needs()).unwrap();
            assert_eq!(n.version, v);
        }
        let mut offer = postfix_offer(6);
        offer.version = 7;
        assert_eq!(negotiate(&offer, &dkim_like_needs()).unwrap().version, 6);
    }

    #[test]
    fn refuses_version_one() {
        let mut offer = postfix_offer(2);
        offer.version = 1;
        assert_eq!(
            negotiate(&offer, &dkim_like_needs()),
            Err(NegotiationError::UnsupportedVersion(1))
        );
    }

    #[test]
    fn answer_is_always_a_subset_of_the_offer() {
        for v in [2, 3, 4, 6] {
            let offer = postfix_offer(v);
            let n = negotiate(&offer, &dkim_like_needs()).unwrap();
            assert!(offer.actions.contains(n.actions));
            assert!(offer.protocol.contains(n.protocol));
        }
    }

    #[test]
    fn version_two_gets_no_reply_flags_or_leading_space() {
        let n = negotiate(&postfix_offer(2), &dkim_like_needs()).unwrap();
        assert!(n.expects_reply(Event::Header));
        assert!(n.expects_reply(Event::Body));
        assert!(!n.header_leading_space());
        assert!(n.protocol.contains(ProtocolFlags::NO_HELO));
    }

    #[test]
    fn version_six_saves_round_trips_the_filter_does_not_need() {
        let n = negotiate(&postfix_offer(6), &dkim_like_needs()).unwrap();
        assert!(n.header_leading_space());
        assert!(!n.expects_reply(Event::Header));
        assert!(!n.expects_reply(Event::Body));
        assert!(!n.expects_reply(Event::Rcpt));
        assert!(n.expects_reply(Event::Connect));
        assert!(n.expects_reply(Event::EndOfHeaders));
        assert!(
            n.protocol
                .contains(ProtocolFlags::NO_HELO | ProtocolFlags::NO_DATA)
        );
        assert!(!n.protocol.contains(ProtocolFlags::NO_BODY));
    }

    #[test]
    fn refuses_when_a_needed_modification_is_not_offered() {
        let mut offer = postfix_offer(6);
        offer.actions = Actions::QUARANTINE;
        assert!(matches!(
            negotiate(&offer, &dkim_like_needs()),
            Err(NegotiationError::MissingActions { missing }) if missing == Actions::ADD_HEADERS
        ));
    }

    #[test]
    fn macro_lists_are_announced_only_when_offered() {
        let mut needs = dkim_like_needs();
        needs.macros = vec![(Stage::Mail, vec!["{auth_type}".into()])];
        let n = negotiate(&postfix_offer(6), &needs).unwrap();
        assert!(n.actions.contains(Actions::SET_MACRO_LIST));
        let mut offer = postfix_offer(6);
        offer.actions = Actions::ADD_HEADERS;
        let n = negotiate(&offer, &needs).unwrap();
        assert_eq!(n.actions, Actions::ADD_HEADERS);
    }
}
