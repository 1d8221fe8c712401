//! dkim-sidecar: a DKIM signing milter for Postfix.
//!
//! Data flows one way: socket bytes are framed by [`milter`] into events,
//! a per-connection session drives a [`milter::Filter`], the DKIM filter
//! decides whether to sign and with which keys, and its answer goes back as
//! typed replies that [`milter`] encodes. `milter` knows nothing of DKIM;
//! the DKIM side knows nothing of bytes on the wire.
//!
//! `main.rs` only parses the command line ([`cli`]) and calls into this
//! library, so everything here can be tested without spawning the binary.

pub mod auth_results;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod diagnostics;
pub mod dkim;
pub mod dns;
pub mod doctor;
pub mod keys;
pub mod logging;
pub mod message_log;
pub mod metrics;
pub mod offline;
pub mod offline_verify;
pub mod policy;
pub mod postconf;
pub mod preflight;
pub mod remote;
pub mod rotate;
pub mod signing;
pub mod systemd;
pub mod tables;
pub mod verify;
pub mod verifying;
