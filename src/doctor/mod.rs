//! `doctor`: check a sending domain's whole DNS setup (DKIM key records,
//! SPF, PTR, MX, DMARC) and say, for each fault, the exact record to
//! publish.
//!
//! [`Inputs`] say what to check (domains with their selectors and keys,
//! sending IPs, the HELO name, each with where it came from; see
//! `inputs.rs`); [`run`] asks DNS through [`lookup::Lookup`] and returns a
//! [`Report`]: one [`Check`] per thing checked, each with a stable id, a
//! [`Status`], one line saying what was found and, when not ok, a
//! [`fix::Fix`]. One file per check family: `dkim.rs`, `spf.rs`, `ptr.rs`,
//! `mx.rs`, `dmarc.rs`; `render.rs` writes the text and JSON forms.
//!
//! Every query is bounded, and so is the whole run: a family that does not
//! finish within the run's bound is reported as a DNS timeout. A DNS
//! failure is always reported as one, never as a missing record. This
//! module never prints, never changes DNS and never shows a private key.

pub mod dkim;
pub mod dmarc;
pub mod fix;
pub mod inputs;
pub mod lookup;
pub mod mx;
pub mod ptr;
pub mod render;
pub mod spf;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::keys::PrivateKey;
pub use fix::{Fix, FixRecord};
use lookup::{DnsProblem, Lookup, LookupSetupError};

/// How long one DNS query may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the whole run may take.
pub const RUN_BOUND: Duration = Duration::from_secs(60);

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// The stable ids of the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckId {
    Dkim,
    Spf,
    Ptr,
    Mx,
    Dmarc,
}

impl CheckId {
    pub fn word(self) -> &'static str {
        match self {
            CheckId::Dkim => "dkim",
            CheckId::Spf => "spf",
            CheckId::Ptr => "ptr",
            CheckId::Mx => "mx",
            CheckId::Dmarc => "dmarc",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: CheckId,
    /// The DKIM selector (`dkim` checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The sending IP (`ptr` checks, and `spf` per IP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    pub status: Status,
    /// What was found, in one line.
    pub message: String,
    /// What to do; `null` when the check is ok.
    pub fix: Option<Fix>,
}

impl Check {
    pub fn ok(id: CheckId, message: impl Into<String>) -> Check {
        Check {
            id,
            selector: None,
            ip: None,
            status: Status::Ok,
            message: message.into(),
            fix: None,
        }
    }

    pub fn warn(id: CheckId, message: impl Into<String>, fix: Fix) -> Check {
        Check {
            status: Status::Warn,
            fix: Some(fix),
            ..Check::ok(id, message)
        }
    }

    pub fn fail(id: CheckId, message: impl Into<String>, fix: Fix) -> Check {
        Check {
            status: Status::Fail,
            fix: Some(fix),
            ..Check::ok(id, message)
        }
    }

    /// A DNS failure: reported as such, with what to look at.
    pub fn dns(id: CheckId, problem: &DnsProblem) -> Check {
        Check::fail(
            id,
            problem.to_string(),
            Fix::words(
                "make the domain's DNS servers answer (or point --nameserver at one that \
                 does), then run doctor again",
            ),
        )
    }

    pub fn selector(mut self, selector: &str) -> Check {
        self.selector = Some(selector.to_string());
        self
    }

    pub fn ip(mut self, ip: IpAddr) -> Check {
        self.ip = Some(ip);
        self
    }
}

/// A value and where it came from (`--ip`, `interface eth0`,
/// `postconf smtp_bind_address`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    pub source: String,
}

/// One key a domain signs with.
#[derive(Debug, Clone)]
pub struct SelectorInput {
    pub selector: String,
    /// The key, or why it could not be loaded.
    pub key: Result<Arc<PrivateKey>, String>,
    /// Where the key is (a file, or the KeyTable line of an inline key).
    pub key_origin: String,
    /// The `i=` values the SigningTable signs with this key (`t=s` must
    /// allow them).
    pub signers: Vec<String>,
}

/// A From domain and the `d=` its mail is signed with (from the
/// SigningTable), for DMARC alignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFrom {
    pub from_domain: String,
    pub d: String,
}

/// One domain to check.
#[derive(Debug, Clone)]
pub struct DomainInput {
    pub domain: String,
    /// Where the domain came from (`KeyTable`, `--domain`, ...).
    pub source: String,
    pub selectors: Vec<SelectorInput>,
    /// The From domains signed under this domain's DMARC record.
    pub signed_from: Vec<SignedFrom>,
}

/// Everything a run checks, and how it reaches DNS.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub domains: Vec<DomainInput>,
    pub ips: Vec<Sourced<IpAddr>>,
    pub helo: Option<Sourced<String>>,
    /// Nameservers to ask; the system's resolver when empty.
    pub nameservers: Vec<SocketAddr>,
    pub query_timeout: Duration,
    pub run_bound: Duration,
}

/// The checks of one domain.
#[derive(Debug, Clone, Serialize)]
pub struct DomainReport {
    pub domain: String,
    pub source: String,
    pub checks: Vec<Check>,
}

/// The host's own checks (PTR per sending IP), and its inputs.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub ips: Vec<Sourced<IpAddr>>,
    pub helo: Option<Sourced<String>>,
    pub checks: Vec<Check>,
}

/// Counts per status, and the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
    pub status: Status,
}

/// What a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub domains: Vec<DomainReport>,
    pub host: HostReport,
    pub summary: Summary,
}

impl Report {
    pub fn checks(&self) -> impl Iterator<Item = &Check> {
        self.domains
            .iter()
            .flat_map(|d| d.checks.iter())
            .chain(self.host.checks.iter())
    }

    /// 0 when every check is ok, 1 when one warns, 2 when one fails.
    pub fn exit_code(&self) -> u8 {
        match self.summary.status {
            Status::Ok => 0,
            Status::Warn => 1,
            Status::Fail => 2,
        }
    }
}

fn summarize(domains: &[DomainReport], host: &HostReport) -> Summary {
    let mut summary = Summary {
        ok: 0,
        warn: 0,
        fail: 0,
        status: Status::Ok,
    };
    for check in domains.iter().flat_map(|d| &d.checks).chain(&host.checks) {
        match check.status {
            Status::Ok => summary.ok += 1,
            Status::Warn => summary.warn += 1,
            Status::Fail => summary.fail += 1,
        }
        summary.status = summary.status.max(check.status);
    }
    summary
}

/// Runs `family` unless the run's time is up; a family cut short is one
/// failed check saying so.
async fn bounded<F>(deadline: Instant, id: CheckId, family: F) -> Vec<Check>
where
    F: Future<Output = Vec<Check>>,
{
    match tokio::time::timeout_at(deadline, family).await {
        Ok(checks) => checks,
        Err(_) => vec![Check::fail(
            id,
            "DNS timeout: the run's time bound ran out before this check finished",
            Fix::words(
                "make the domain's DNS servers answer (or point --nameserver at one that \
                 does), then run doctor again",
            ),
        )],
    }
}

/// Checks everything `inputs` names.
pub async fn run(inputs: &Inputs) -> Result<Report, LookupSetupError> {
    let lookup = Lookup::new(&inputs.nameservers, inputs.query_timeout)?;
    let deadline = Instant::now() + inputs.run_bound;
    let ips: Vec<IpAddr> = inputs.ips.iter().map(|ip| ip.value).collect();
    let helo = inputs.helo.as_ref().map(|h| h.value.as_str());
    let mut domains = Vec::new();
    for domain in &inputs.domains {
        let name = domain.domain.as_str();
        let (dkim, spf, mx, dmarc) = tokio::join!(
            bounded(deadline, CheckId::Dkim, dkim::check(&lookup, domain)),
            bounded(
                deadline,
                CheckId::Spf,
                spf::check(&lookup, &inputs.nameservers, name, &ips, helo)
            ),
            bounded(deadline, CheckId::Mx, mx::check(&lookup, name)),
            bounded(deadline, CheckId::Dmarc, dmarc::check(&lookup, domain)),
        );
        let mut checks = dkim;
        checks.extend(spf);
        checks.extend(mx);
        checks.extend(dmarc);
        domains.push(DomainReport {
            domain: domain.domain.clone(),
            source: domain.source.clone(),
            checks,
        });
    }
    let fallback_name = inputs.domains.first().map(|d| d.domain.as_str());
    let checks = bounded(
        deadline,
        CheckId::Ptr,
        ptr::check(&lookup, &ips, helo, fallback_name),
    )
    .await;
    let host = HostReport {
        ips: inputs.ips.clone(),
        helo: inputs.helo.clone(),
        checks,
    };
    let summary = summarize(&domains, &host);
    Ok(Report {
        domains,
        host,
        summary,
    })
}
