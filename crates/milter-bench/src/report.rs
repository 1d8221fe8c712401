//! What a bench run measured, as text or JSON.

use std::fmt;

use serde::Serialize;

/// Latency of one message: MAIL to the milter's last reply at end of
/// message, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    /// From per-message latencies in nanoseconds (sorted here).
    pub fn from_nanos(mut samples: Vec<u64>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            ms(samples[rank - 1])
        };
        Latency {
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: ms(*samples.last().unwrap_or(&0)),
            mean_ms: ms(samples.iter().sum::<u64>() / samples.len() as u64),
        }
    }
}

/// Signatures checked against the public key records.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verification {
    /// Whether any key record was given; without one nothing is checked.
    pub enabled: bool,
    pub checked: u64,
    pub passed: u64,
    pub failed: u64,
    /// The first few failures, with the reason.
    pub failures: Vec<String>,
}

/// The milter process, seen through /proc while the bench ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerUsage {
    pub pid: u32,
    /// CPU time (user + system) the milter used during the run.
    pub cpu_s: f64,
    /// The same per counted message, in microseconds.
    pub cpu_us_per_message: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// Peak resident size during the run (VmHWM, reset at the start when
    /// the kernel allows it).
    pub rss_peak_kib: u64,
    /// Resident size while every connection was open and idle (`--hold`).
    pub rss_held_kib: Option<u64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub target: String,
    /// The protocol version offered, and the one the milter answered.
    pub protocol_offered: u32,
    pub protocol_agreed: Option<u32>,
    pub connections: usize,
    pub body_bytes: usize,
    /// Messages counted (warm-up excluded) that got a final answer.
    pub messages: u64,
    pub warmup: u64,
    pub elapsed_s: f64,
    pub messages_per_s: f64,
    pub latency: Latency,
    /// Messages with at least one DKIM-Signature in the replies.
    pub signed: u64,
    /// DKIM-Signature fields in the replies.
    pub signatures: u64,
    /// Messages answered without a signature (accepted, or continue with
    /// no DKIM-Signature).
    pub not_signed: u64,
    /// Messages rejected, tempfailed or discarded by the milter.
    pub refused: u64,
    /// Connection and protocol errors plus signatures that failed
    /// verification.
    pub errors: u64,
    /// The first few errors.
    pub error_samples: Vec<String>,
    pub verification: Verification,
    pub server: Option<ServerUsage>,
    /// CPU time the bench itself used (it shares the machine).
    pub client_cpu_s: f64,
}

impl Report {
    /// Whether the run found nothing wrong.
    pub fn is_clean(&self) -> bool {
        self.errors == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let agreed = self
            .protocol_agreed
            .map_or_else(|| "none".to_string(), |v| v.to_string());
        writeln!(
            f,
            "milter {}: protocol {} offered, {} agreed; {} connections; {}-byte bodies",
            self.target, self.protocol_offered, agreed, self.connections, self.body_bytes
        )?;
        writeln!(
            f,
            "  messages     {} in {:.2} s ({} warm-up not counted)",
            self.messages, self.elapsed_s, self.warmup
        )?;
        writeln!(f, "  throughput   {:.1} messages/s", self.messages_per_s)?;
        let l = &self.latency;
        writeln!(
            f,
            "  latency      p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  (mean {:.3} ms)",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.mean_ms
        )?;
        writeln!(
            f,
            "  signed       {} ({} DKIM-Signature fields)",
            self.signed, self.signatures
        )?;
        writeln!(f, "  not signed   {}", self.not_signed)?;
        writeln!(f, "  refused      {}", self.refused)?;
        writeln!(f, "  errors       {}", self.errors)?;
        for e in &self.error_samples {
            writeln!(f, "    {e}")?;
        }
        let v = &self.verification;
        if v.enabled {
            writeln!(
                f,
                "  verified     {} of {} sampled messages pass, {} fail",
                v.passed, v.checked, v.failed
            )?;
            for e in &v.failures {
                writeln!(f, "    {e}")?;
            }
        } else {
            writeln!(
                f,
                "  verified     NOT CHECKED: no public key record given (--key-txt)"
            )?;
        }
        if let Some(s) = &self.server {
            writeln!(
                f,
                "  milter pid {}: {:.2} s CPU ({:.1} us per message); RSS {:.1} MiB before, {:.1} MiB after, peak {:.1} MiB{}",
                s.pid,
                s.cpu_s,
                s.cpu_us_per_message,
                s.rss_before_kib as f64 / 1024.0,
                s.rss_after_kib as f64 / 1024.0,
                s.rss_peak_kib as f64 / 1024.0,
                s.rss_held_kib.map_or(String::new(), |k| format!(
                    ", {:.1} MiB with all connections open",
                    k as f64 / 1024.0
                ))
            )?;
        }
        writeln!(f, "  bench CPU    {:.2} s", self.client_cpu_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = Latency::from_nanos((1..=100).map(|ms| ms * 1_000_000).collect());
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p90_ms, 90.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        let one = Latency::from_nanos(vec![2_000_000]);
        assert_eq!((one.p50_ms, one.p99_ms), (2.0, 2.0));
        assert_eq!(Latency::from_nanos(vec![]), Latency::default());
    }
}
