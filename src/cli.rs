//! The command line, as clap definitions.
//!
//! This module only describes the command line (subcommands, options, help
//! text with an example each). It lives in the library so that man pages and
//! shell completions can be generated from the same definitions; `main.rs`
//! parses it and hands each subcommand to the library. Nothing here does
//! any work.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A DKIM signing milter for Postfix, a drop-in replacement for OpenDKIM's
/// signer.
#[derive(Debug, Parser)]
#[command(name = "dkim-sidecar", version, about, long_about = None)]
#[command(propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the milter in the foreground.
    #[command(long_about = "Run the milter in the foreground.\n\n\
        Signals: SIGHUP or SIGUSR1 re-reads the configuration, tables and keys \
        (a reload that fails is logged and the previous configuration keeps \
        serving; messages in progress finish with the configuration they \
        started with); SIGTERM or SIGINT stops accepting connections and lets \
        open transactions finish.\n\n\
        Under systemd: READY=1 is sent once the sockets listen, and sockets \
        passed by socket activation (LISTEN_FDS) are used instead of the \
        configured ones, as they are.\n\n\
        Logs go to stderr (the journal under systemd), or to syslog with \
        Syslog yes; one line per message. RUST_LOG=debug shows more.")]
    #[command(after_help = "Examples:\n  \
        dkim-sidecar run -c /etc/dkim-sidecar/dkim-sidecar.toml\n  \
        dkim-sidecar run -x /etc/opendkim.conf --socket inet:8891@localhost")]
    Run(RunArgs),

    /// Generate a signing key and its DNS record, like opendkim-genkey.
    #[command(after_help = "Examples:\n  \
        dkim-sidecar keygen -d example.com -s default -D /etc/dkim-sidecar/keys\n  \
        dkim-sidecar keygen -d example.com -s ed --algorithm ed25519")]
    Keygen(KeygenArgs),

    /// Check that a private key matches its published DNS record.
    #[command(after_help = "Examples:\n  \
        dkim-sidecar testkey -d example.com -s default -k /etc/dkim-sidecar/keys/default.private\n  \
        dkim-sidecar testkey -d example.com -s default -k default.private --txt default.txt")]
    Testkey(TestkeyArgs),

    /// Load the configuration, tables and keys; print the effective rules.
    #[command(name = "check-config")]
    #[command(after_help = "Examples:\n  \
        dkim-sidecar check-config -x /etc/opendkim.conf\n  \
        dkim-sidecar check-config -c /etc/dkim-sidecar/dkim-sidecar.toml")]
    CheckConfig(CheckConfigArgs),

    /// Sign a message read from stdin through the milter's own code path.
    #[command(after_help = "Example:\n  \
        dkim-sidecar sign -x /etc/opendkim.conf --client-ip 127.0.0.1 < message.eml")]
    Sign(SignArgs),

    /// Verify a message read from stdin through the milter's own code path;
    /// print its Authentication-Results field.
    #[command(
        long_about = "Verify a message read from stdin through the milter's own code \
        path (the configuration's DNS settings, trust anchor, test records and limits) and \
        print the Authentication-Results field the milter would insert. Nothing is signed, \
        the field is always printed (dkim=none when unsigned) and no On-* action applies. \
        Exit status 0 when a signature passed, 1 otherwise."
    )]
    #[command(after_help = "Examples:\n  \
        dkim-sidecar verify -x /etc/opendkim.conf < message.eml\n  \
        dkim-sidecar verify -c /etc/dkim-sidecar/dkim-sidecar.toml < message.eml")]
    Verify(VerifyArgs),

    /// Rotate a domain's key without downtime: prepare, publish, activate, retire.
    #[command(long_about = "Rotate a domain's signing key without downtime.\n\n\
        Each run takes the step that is due, says what it did and what comes next \
        and when, and changes nothing when nothing is due (a daily timer runs it): \
        prepare (a new key and .txt beside the old one), publish (an RFC 2136 update \
        signed with TSIG, or what to add by hand), activate (once every authoritative \
        server serves the record: switch the tables atomically, keep a backup, reload \
        the daemon), retire (after --overlap: revoke the old record, archive the old key).\n\n\
        Exit status: 0 a step was taken or none was due; 75 activation waits for DNS; \
        1 refused (with the reason).")]
    #[command(after_help = "Examples:\n  \
        dkim-sidecar rotate -x /etc/opendkim.conf --domain example.com --now\n  \
        dkim-sidecar rotate -c /etc/dkim-sidecar/dkim-sidecar.toml --domain example.com \
        --update-dns 192.0.2.53:53 --tsig-key /etc/dkim-sidecar/rotate.key\n  \
        dkim-sidecar rotate -x /etc/opendkim.conf --status")]
    Rotate(crate::rotate::RotateArgs),

    /// Check each sending domain's DNS (DKIM, SPF, PTR, MX, DMARC) and print the fix.
    #[command(
        long_about = "Check each sending domain's DNS setup and say, for each fault, \
        the exact record to publish (zone-file line, and host / type / value for a DNS \
        provider's web form).\n\n\
        Checks: dkim (per selector: the record exists once, parses, publishes this key with \
        the right k=, t=, h= and s=; key size), spf (one record, at most 10 DNS lookups and 2 \
        void lookups, passes for each sending IP), ptr (per sending IP: exists, resolves back, \
        not generic, agrees with the HELO name), mx (exists, host names with addresses, no IP \
        or CNAME; a null MX is reported as such), dmarc (one valid record, p=none warns, \
        rua/ruf, alignment of our d= with the From domains signed).\n\n\
        Domains and selectors come from the configuration unless --domain is given. Sending IPs \
        come from --ip, or else the host's global addresses and Postfix's smtp_bind_address \
        (through postconf, when installed); the HELO name from --helo or Postfix's myhostname.\n\n\
        Every query times out after 3 s and the run after 60 s; a DNS failure is reported as one. \
        Exit status: 0 all ok, 1 a warning, 2 a failure."
    )]
    #[command(after_help = "Examples:\n  \
        dkim-sidecar doctor -x /etc/opendkim.conf\n  \
        dkim-sidecar doctor -c /etc/dkim-sidecar/dkim-sidecar.toml --ip 203.0.113.25 --helo mail.example.com\n  \
        dkim-sidecar doctor -x /etc/opendkim.conf --domain example.com --format json")]
    Doctor(DoctorArgs),
}

/// Which configuration file to read, and in which format.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct ConfigSource {
    /// Native configuration file (TOML).
    #[arg(short = 'c', long = "config", value_name = "FILE.toml")]
    pub toml: Option<PathBuf>,

    /// OpenDKIM configuration file (opendkim.conf), read unchanged.
    #[arg(short = 'x', long = "opendkim-config", value_name = "FILE")]
    pub opendkim: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigSource,

    /// Listen here instead of the configured socket
    /// (inet:PORT@HOST, inet6:PORT@[HOST], inet:HOST:PORT, local:/path, unix:/path).
    // The text is clap's help too, so `[HOST]` stays as written.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "SPEC")]
    pub socket: Option<String>,

    /// Sign while running as root with no UserID configured (refused by
    /// default: a signer holding your domain's key should not run as root).
    #[arg(long)]
    pub allow_root: bool,

    /// Serve Prometheus metrics on this address (GET /metrics), e.g.
    /// 127.0.0.1:9820; overrides the configuration.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_listen: Option<SocketAddr>,

    /// Also reload when the configuration file, a table or a key file
    /// changes, checking every SECONDS seconds (as on SIGHUP: a broken
    /// change is logged and the running configuration stays).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_interval: Option<u64>,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub config: ConfigSource,

    /// Postfix's configuration directory to check the socket against
    /// (`postconf -c DIR`); default: Postfix's own (/etc/postfix), when
    /// Postfix is installed.
    #[arg(long, value_name = "DIR")]
    pub postfix_config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    #[command(flatten)]
    pub config: ConfigSource,

    /// Envelope sender (MAIL FROM) to present to the signing policy.
    #[arg(long, value_name = "ADDR")]
    pub sender: Option<String>,

    /// Client address the message appears to come from.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub client_ip: IpAddr,

    /// Treat the message as submitted with SMTP AUTH.
    #[arg(long)]
    pub auth: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigSource,
}

/// Key algorithm for keygen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyAlgorithm {
    Rsa,
    Ed25519,
}

/// Options mirror opendkim-genkey's, so existing scripts keep working:
/// `-h` names hash algorithms (help is `--help` only) and `-t` is test mode.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct KeygenArgs {
    /// Append the domain name to the record name in the .txt file.
    #[arg(short = 'a', long = "append-domain")]
    pub append_domain: bool,

    /// RSA key size in bits (ignored for Ed25519).
    #[arg(short = 'b', long = "bits", default_value_t = 2048)]
    pub bits: u32,

    /// Domain the key signs for (used in the record's comment).
    #[arg(short = 'd', long = "domain", default_value = "localhost")]
    pub domain: String,

    /// Directory to write the files into.
    #[arg(short = 'D', long = "directory", default_value = ".")]
    pub directory: PathBuf,

    /// Hash algorithms to list in the record's h= tag (colon-separated).
    #[arg(short = 'h', long = "hash-algorithms", default_value = "sha256")]
    pub hash_algorithms: String,

    /// Free-form note for the record's n= tag.
    #[arg(short = 'n', long = "note")]
    pub note: Option<String>,

    /// Restrict the key to e-mail use (s=email).
    #[arg(short = 'r', long = "restrict", alias = "restricted")]
    pub restrict: bool,

    /// Selector name; also the file name stem.
    #[arg(short = 's', long = "selector", default_value = "default")]
    pub selector: String,

    /// Disallow subdomains (t=s).
    #[arg(short = 'S', long = "nosubdomains")]
    pub no_subdomains: bool,

    /// Allow subdomains (the default; accepted for opendkim-genkey scripts).
    #[arg(long = "subdomains")]
    pub subdomains: bool,

    /// Mark the key as in test mode (t=y).
    #[arg(short = 't', long = "testmode")]
    pub testmode: bool,

    /// Key algorithm.
    #[arg(long = "algorithm", value_enum, default_value_t = KeyAlgorithm::Rsa)]
    pub algorithm: KeyAlgorithm,

    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,

    /// Say which files were written.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// How `doctor` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub config: ConfigSource,

    /// Check this domain only (repeat for more); default: every domain the
    /// configuration signs for.
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub domains: Vec<String>,

    /// A sending IP (repeat for more); default: the host's global addresses
    /// and Postfix's smtp_bind_address.
    #[arg(long = "ip", value_name = "IP")]
    pub ips: Vec<IpAddr>,

    /// The HELO name the server sends; default: Postfix's myhostname.
    #[arg(long, value_name = "NAME")]
    pub helo: Option<String>,

    /// Ask this DNS server (IP, IP:PORT or IP@PORT) instead of the system
    /// resolver.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_nameserver)]
    pub nameserver: Option<SocketAddr>,

    /// The Postfix configuration directory postconf reads (postconf -c).
    #[arg(long, value_name = "DIR")]
    pub postfix_config: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

fn parse_nameserver(value: &str) -> Result<SocketAddr, String> {
    crate::dns::parse_nameserver(value)
        .ok_or_else(|| format!("{value:?} is not IP, IP:PORT or IP@PORT"))
}

#[derive(Debug, Args)]
pub struct TestkeyArgs {
    /// Domain of the record.
    #[arg(short = 'd', long = "domain")]
    pub domain: String,

    /// Selector of the record.
    #[arg(short = 's', long = "selector")]
    pub selector: String,

    /// Private key file.
    #[arg(short = 'k', long = "key", value_name = "KEYFILE")]
    pub key: PathBuf,

    /// Read the record from this file (keygen's .txt, or a bare v=DKIM1 string)
    /// instead of DNS.
    #[arg(long, value_name = "FILE")]
    pub txt: Option<PathBuf>,

    /// Ask this DNS server instead of the system resolver.
    #[arg(long, value_name = "IP:PORT", conflicts_with = "txt")]
    pub nameserver: Option<SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_requires_exactly_one_config_file() {
        assert!(Cli::try_parse_from(["dkim-sidecar", "run"]).is_err());
        assert!(
            Cli::try_parse_from(["dkim-sidecar", "run", "-c", "a.toml", "-x", "b.conf"]).is_err()
        );
        assert!(Cli::try_parse_from(["dkim-sidecar", "run", "-x", "/etc/opendkim.conf"]).is_ok());
    }
}
