//! What one signature costs on this machine with a given key: the
//! yardstick for a milter's CPU per signed message (benches/compare.sh
//! puts the two side by side, measured in the same run).
//!
//! It loads the key with dkim-sidecar's own loader and signs with its own
//! signer, so the operation is exactly the one the daemon does per message,
//! on one thread per processor at once (as the daemon's threads do under
//! load: processors share caches and memory bandwidth), and divides each
//! thread's CPU time by its signatures. It never talks to a milter.

use std::path::Path;
use std::time::{Duration, Instant};

use dkim_sidecar::keys::{LoadOptions, load_key_file};
use mail_auth::common::crypto::SigningKey as _;
use nix::time::{ClockId, clock_gettime};
use serde::Serialize;

/// The result of [`measure`].
#[derive(Debug, Clone, Serialize)]
pub struct SignCost {
    /// The key: `rsa-2048`, `ed25519`.
    pub key: String,
    /// Threads that signed at once.
    pub threads: usize,
    /// Signatures made, over all threads.
    pub signatures: u64,
    /// Thread CPU time per signature, in microseconds.
    pub cpu_us_per_signature: f64,
}

impl std::fmt::Display for SignCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {:.1} us of CPU per signature ({} signatures on {} threads at once)",
            self.key, self.cpu_us_per_signature, self.signatures, self.threads
        )
    }
}

/// A signing input the size of a typical message's: the canonicalized
/// covered fields and the signature field with an empty `b=`.
const INPUT: &[u8] = b"from:Sender <sender@example.com>\r\nto:recipient@example.org\r\n\
subject:Load test message\r\ndate:Thu, 01 Jan 2026 00:00:00 +0000\r\n\
message-id:<bench.1@example.com>\r\ndkim-signature:v=1; a=rsa-sha256; c=relaxed/simple; \
d=example.com; s=default; t=1767225600; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; \
h=from:to:subject:date:message-id:from; b=";

/// Sign with the key in `key_file` on `threads` threads at once for about
/// `duration`.
pub fn measure(key_file: &Path, threads: usize, duration: Duration) -> Result<SignCost, String> {
    let options = LoadOptions {
        require_safe_keys: false,
        signer_uid: None,
        ..LoadOptions::default()
    };
    let loaded = load_key_file(key_file, &options)
        .map_err(|e| format!("--sign-cost {}: {e}", key_file.display()))?;
    let key = loaded.key;
    let name = match key.rsa_bits() {
        Some(bits) => format!("rsa-{bits}"),
        None => key.key_type().to_string(),
    };
    let threads = threads.max(1);
    let results: Vec<Result<(u64, Duration), String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let key = &key;
                scope.spawn(move || {
                    let cpu = || {
                        clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
                            .map(Duration::from)
                            .map_err(|e| format!("thread CPU clock: {e}"))
                    };
                    // One untimed signature, so that lazy set-up is not counted.
                    key.sign(INPUT).map_err(|e| format!("signing: {e}"))?;
                    let (started, cpu_started) = (Instant::now(), cpu()?);
                    let mut signatures = 0u64;
                    while started.elapsed() < duration {
                        key.sign(INPUT).map_err(|e| format!("signing: {e}"))?;
                        signatures += 1;
                    }
                    Ok((signatures, cpu()? - cpu_started))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a signing thread panicked".into()))
            })
            .collect()
    });
    let (mut signatures, mut cpu) = (0u64, Duration::ZERO);
    for result in results {
        let (n, spent) = result?;
        signatures += n;
        cpu += spent;
    }
    if signatures == 0 {
        return Err("no signature was made; give a longer --duration".into());
    }
    Ok(SignCost {
        key: name,
        threads,
        signatures,
        cpu_us_per_signature: cpu.as_secs_f64() * 1e6 / signatures as f64,
    })
}
