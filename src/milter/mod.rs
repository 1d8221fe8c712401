//! The Sendmail milter protocol (versions 2 to 6), as Postfix speaks it.
//!
//! This module is a protocol engine other milters could use: it frames bytes,
//! negotiates options, keeps macros per stage, runs the per-connection state
//! machine and calls a [`Filter`]. It must never know anything about DKIM or
//! mail content beyond what the protocol itself defines.
