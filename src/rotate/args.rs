//! `rotate`'s command line, as clap definitions (registered in `cli`).
//! Nothing here does any work.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::cli::{ConfigSource, KeyAlgorithm};

/// How to make the running daemon read the switched tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReloadChoice {
    /// The PidFile if the configuration names one, else systemd if it runs
    /// the machine, else none.
    Auto,
    /// SIGHUP to the process in the configuration's PidFile.
    Pidfile,
    /// `systemctl try-reload-or-restart` (see --systemd-unit): a reload
    /// when the service runs, nothing when it does not.
    Systemd,
    /// Do not reload; say so (the daemon keeps the old key until reloaded).
    None,
}

/// What retiring does with the old selector's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RetireRecord {
    /// Publish it with an empty p= (RFC 6376 3.6.1: the key is revoked).
    Revoke,
    /// Delete the TXT record.
    Remove,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).multiple(false))]
pub struct RotateArgs {
    #[command(flatten)]
    pub config: ConfigSource,

    /// The domain whose key to rotate.
    #[arg(short = 'd', long, value_name = "DOMAIN", group = "what")]
    pub domain: Option<String>,

    /// Every domain with a key in the configuration (for the timer).
    #[arg(long, group = "what")]
    pub all: bool,

    /// Print every domain's key: selector, algorithm, age, stage and the
    /// next step with its date. Changes nothing.
    #[arg(long, group = "what")]
    pub status: bool,

    /// Rotate the domain's key of this algorithm (when it has an RSA and an
    /// Ed25519 key); the new key has the same algorithm.
    #[arg(long, value_enum, value_name = "ALGO")]
    pub algorithm: Option<KeyAlgorithm>,

    /// RSA key size of the new key (default: the old key's, at least 2048).
    #[arg(short = 'b', long, value_name = "N")]
    pub bits: Option<u32>,

    /// Selector of the new key (default: dated, e.g. s202612).
    #[arg(short = 's', long, value_name = "NEW")]
    pub selector: Option<String>,

    /// How long the old record stays published after the switch, for mail
    /// signed before it that is still on its way.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_span)]
    pub overlap: super::clock::Span,

    /// A key older than this is due for rotation (the timer's rule).
    #[arg(long, value_name = "DURATION", default_value = "180d", value_parser = parse_span)]
    pub max_age: super::clock::Span,

    /// Start a rotation now, even if the key is younger than --max-age.
    #[arg(long)]
    pub now: bool,

    /// Publish and retire records with RFC 2136 dynamic updates sent to
    /// this server (the zone's primary), signed with --tsig-key.
    #[arg(long, value_name = "SERVER:PORT", requires = "tsig_key")]
    pub update_dns: Option<SocketAddr>,

    /// The TSIG key for --update-dns: a BIND key file as tsig-keygen
    /// writes it.
    #[arg(long, value_name = "FILE", requires = "update_dns")]
    pub tsig_key: Option<PathBuf>,

    /// Find the zone's authoritative servers through this DNS server
    /// instead of the system resolver, and ask them on its port.
    #[arg(long, value_name = "IP:PORT")]
    pub nameserver: Option<SocketAddr>,

    /// How to make the daemon read the switched tables.
    #[arg(long, value_enum, default_value_t = ReloadChoice::Auto)]
    pub reload: ReloadChoice,

    /// The daemon's metrics address (`run --metrics-listen`), to confirm
    /// that its reload worked (default: the configuration's metrics_listen).
    #[arg(long, value_name = "IP:PORT")]
    pub daemon_metrics: Option<SocketAddr>,

    /// The unit `--reload systemd` reloads.
    #[arg(long, value_name = "UNIT", default_value = "dkim-sidecar.service")]
    pub systemd_unit: String,

    /// What retiring does with the old record.
    #[arg(long, value_enum, default_value_t = RetireRecord::Revoke)]
    pub retire_record: RetireRecord,

    /// Go on although a table rotate edits was changed by hand since its
    /// last step (after you have looked at the change).
    #[arg(long)]
    pub accept_edits: bool,

    /// The user the daemon signs as, when the configuration names none
    /// (systemd's User=): key files are checked for that user and new ones
    /// are given to the owner of the old key. Default: the user running
    /// rotate.
    #[arg(long, value_name = "USER")]
    pub signer_user: Option<String>,
}

fn parse_span(text: &str) -> Result<super::clock::Span, String> {
    super::clock::Span::parse(text)
}
