//! Prometheus metrics: what the daemon counts, and the endpoint that serves
//! them (`GET /metrics`, OpenMetrics text).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `dkim_sidecar_messages_total` | counter | `outcome` (signed, not_signed, tempfailed, rejected, discarded, accepted), `reason` (not for signed) |
//! | `dkim_sidecar_signatures_total` | counter | `algorithm` (rsa-sha256, ed25519-sha256) |
//! | `dkim_sidecar_message_duration_seconds` | histogram | from the first header field to the milter's answer |
//! | `dkim_sidecar_connections_open` | gauge | milter connections now |
//! | `dkim_sidecar_connections_total` | counter | milter connections served |
//! | `dkim_sidecar_reloads_total` | counter | `result` (ok, failed) |
//! | `dkim_sidecar_config_last_reload_successful` | gauge | 1 or 0 |
//! | `dkim_sidecar_config_last_reload_success_timestamp_seconds` | gauge | Unix time of the last good load |
//! | `dkim_sidecar_key_file_modified_timestamp_seconds` | gauge | `key`, `domain`, `selector`: KeyTable keys with a fixed file, and `key="KeyFile"` for Domain/KeyFile/Selector (key age = `time()` minus this) |
//! | `dkim_sidecar_verified_signatures_total` | counter | `result` (pass, fail, neutral, policy, temperror, permerror) |
//! | `dkim_sidecar_verified_messages_total` | counter | `result`: the deciding signature's, `none` when unsigned |
//! | `dkim_sidecar_dns_queries_total` | counter | `outcome` (answer, nxdomain, nodata, timeout, bogus, error, test): key record lookups sent |
//! | `dkim_sidecar_dns_cache_hits_total` | counter | key record lookups answered from the cache |
//! | `dkim_sidecar_dns_shared_lookups_total` | counter | lookups that joined a query for the same name already running |
//! | `dkim_sidecar_dns_query_duration_seconds` | histogram | query sent to answer |
//! | `dkim_sidecar_dataset_lookups_total`, `_cache_hits_total`, `_cache_misses_total`, `_errors_total` | counter | `table` (KeyTable, SigningTable): keys looked up in data sets kept on a server |
//! | `dkim_sidecar_dataset_backend_latency_seconds` | histogram | query sent to answer |
//! | `dkim_sidecar_build_info` | info | `version` |
//!
//! Labels carry names only (outcomes, reasons, algorithms, KeyTable names,
//! domains, selectors), never key material, senders or recipients.
//!
//! The endpoint is a few dozen lines of HTTP/1.x on tokio rather than
//! hyper: it answers one fixed path with one document to a scraper, and
//! hyper with its server utilities would add about ten crates for that.
//! Requests are read with a size limit and a timeout, a handful are served
//! at once, and every response closes its connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::policy::{Policy, TableSource};
use crate::tables::{KeyDomain, KeySource};

type Labels = Vec<(&'static str, String)>;

/// Everything the daemon counts; shared by every connection.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    messages: Family<Labels, Counter>,
    signatures: Family<Labels, Counter>,
    duration: Histogram,
    connections_open: Gauge,
    connections: Counter,
    reloads: Family<Labels, Counter>,
    last_reload_successful: Gauge,
    last_reload_success: Gauge<f64, AtomicU64>,
    key_modified: Family<Labels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dkim_sidecar");
        let messages = Family::<Labels, Counter>::default();
        let signatures = Family::<Labels, Counter>::default();
        // 0.5 ms to about 12 s.
        let duration = Histogram::new(exponential_buckets(0.0005, 2.5, 12));
        let connections_open = Gauge::default();
        let connections = Counter::default();
        let reloads = Family::<Labels, Counter>::default();
        let last_reload_successful = Gauge::default();
        let last_reload_success = Gauge::<f64, AtomicU64>::default();
        let key_modified = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "messages",
            "Messages by outcome (signed, not_signed, tempfailed, rejected, discarded, accepted) and reason",
            messages.clone(),
        );
        registry.register(
            "signatures",
            "DKIM-Signature fields added, by algorithm",
            signatures.clone(),
        );
        registry.register(
            "message_duration_seconds",
            "Time from a message's first header field to the milter's answer",
            duration.clone(),
        );
        registry.register(
            "connections_open",
            "Milter connections open now",
            connections_open.clone(),
        );
        registry.register(
            "connections",
            "Milter connections accepted",
            connections.clone(),
        );
        registry.register(
            "reloads",
            "Configuration reloads by result (ok, failed)",
            reloads.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "Whether the last configuration load succeeded (1) or failed (0)",
            last_reload_successful.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load",
            last_reload_success.clone(),
        );
        registry.register(
            "key_file_modified_timestamp_seconds",
            "Modification time of each KeyTable key file with a fixed name",
            key_modified.clone(),
        );
        crate::dns::metrics::register(&mut registry);
        crate::remote::register(&mut registry);
        crate::verify::metrics::register(&mut registry);
        registry.register(
            "build",
            "The version running",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        // Pre-create the series dashboards and alerts expect, so they read 0
        // rather than being absent before the first event.
        let _ = messages.get_or_create(&vec![("outcome", "signed".to_string())]);
        let _ = reloads.get_or_create(&vec![("result", "ok".to_string())]);
        let _ = reloads.get_or_create(&vec![("result", "failed".to_string())]);
        Metrics {
            registry,
            messages,
            signatures,
            duration,
            connections_open,
            connections,
            reloads,
            last_reload_successful,
            last_reload_success,
            key_modified,
        }
    }

    /// One message answered: `outcome` with `reason` (none for signed).
    pub fn message(&self, outcome: &'static str, reason: Option<&'static str>, took: Duration) {
        let mut labels = vec![("outcome", outcome.to_string())];
        if let Some(reason) = reason {
            labels.push(("reason", reason.to_string()));
        }
        self.messages.get_or_create(&labels).inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// One DKIM-Signature added.
    pub fn signature(&self, algorithm: &str) {
        self.signatures
            .get_or_create(&vec![("algorithm", algorithm.to_string())])
            .inc();
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
        self.connections_open.inc();
    }

    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// A configuration load at start-up or on reload; `policy` is the one
    /// now in force (the new one, or the old one after a failure).
    pub fn loaded(&self, ok: bool, policy: Option<&Policy>) {
        self.last_reload_successful.set(i64::from(ok));
        if ok {
            self.last_reload_success.set(unix_now());
        }
        if let Some(policy) = policy {
            self.set_keys(policy);
        }
    }

    /// A reload ended: counted, then as [`Metrics::loaded`].
    pub fn reload(&self, ok: bool, policy: Option<&Policy>) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
        self.loaded(ok, policy);
    }

    /// Key file ages for the KeyTable in force.
    fn set_keys(&self, policy: &Policy) {
        self.key_modified.clear();
        if let Some(key) = &policy.signing.domain_key
            && let Some(modified) = modified(&key.key_file)
        {
            let domains = match &key.domains {
                TableSource::Local(domains) if domains.is_any() => "*".to_string(),
                TableSource::Local(domains) => {
                    let mut names: Vec<&str> = domains.names().collect();
                    names.sort_unstable();
                    names.join(",")
                }
                TableSource::Remote(_) => "(Domain kept on a server)".to_string(),
            };
            self.key_modified
                .get_or_create(&vec![
                    ("key", "KeyFile".to_string()),
                    ("domain", domains),
                    ("selector", key.selector.clone()),
                ])
                .set(modified);
        }
        let Some(tables) = &policy.signing.tables else {
            return;
        };
        for entry in tables.key_table.entries() {
            let path = match &entry.source {
                KeySource::File(template) if !template.is_template() => template.resolve(""),
                KeySource::RelativeFile(path) => path.clone(),
                _ => continue,
            };
            let Some(modified) = modified(&path) else {
                continue;
            };
            let domain = match &entry.domain {
                KeyDomain::Fixed(d) => d.clone(),
                KeyDomain::Sender => "%".to_string(),
            };
            self.key_modified
                .get_or_create(&vec![
                    ("key", entry.name.clone()),
                    ("domain", domain),
                    ("selector", entry.selector.clone()),
                ])
                .set(modified);
        }
    }

    /// The OpenMetrics text document.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// A file's modification time as Unix seconds.
fn modified(path: &std::path::Path) -> Option<f64> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Why the metrics endpoint could not listen.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}")]
pub struct MetricsBindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Open the endpoint's socket (before privileges are dropped).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, MetricsBindError> {
    let error = |source| MetricsBindError { addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(error)?;
    socket.set_reuse_address(true).map_err(error)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(error)?;
    }
    socket.bind(&addr.into()).map_err(error)?;
    socket.listen(64).map_err(error)?;
    socket.set_nonblocking(true).map_err(error)?;
    Ok(socket.into())
}

/// Requests served at once; more are closed on arrival.
const MAX_SCRAPES: usize = 8;
/// Bytes of request head read at most.
const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request and read the answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(SCRAPE_TIMEOUT, answer(stream, &metrics)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST {
            return respond(&mut stream, "431 Request Header Fields Too Large", "", "").await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let request_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = metrics.encode();
            let body = if method == "HEAD" { "" } else { body.as_str() };
            respond(
                &mut stream,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            )
            .await
        }
        ("GET" | "HEAD", _) => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "metrics are at /metrics\n",
            )
            .await
        }
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", "").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        response.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(body);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_counters_over_http_and_nothing_else() {
        let metrics = Arc::new(Metrics::new());
        metrics.message("signed", None, Duration::from_millis(3));
        metrics.signature("rsa-sha256");
        metrics.signature("ed25519-sha256");
        metrics.message(
            "not_signed",
            Some("untrusted_origin"),
            Duration::from_millis(1),
        );
        metrics.reload(false, None);
        let listener =
            TcpListener::from_std(bind("127.0.0.1:0".parse().unwrap()).unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, Arc::clone(&metrics), shutdown.clone()));

        let page = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.contains("application/openmetrics-text"), "{page}");
        for line in [
            "dkim_sidecar_messages_total{outcome=\"signed\"} 1",
            "dkim_sidecar_messages_total{outcome=\"not_signed\",reason=\"untrusted_origin\"} 1",
            "dkim_sidecar_signatures_total{algorithm=\"rsa-sha256\"} 1",
            "dkim_sidecar_signatures_total{algorithm=\"ed25519-sha256\"} 1",
            "dkim_sidecar_message_duration_seconds_count 2",
            "dkim_sidecar_reloads_total{result=\"failed\"} 1",
            "dkim_sidecar_reloads_total{result=\"ok\"} 0",
            "dkim_sidecar_config_last_reload_successful 0",
            "dkim_sidecar_build_info{version=\"",
            "# EOF",
        ] {
            assert!(page.contains(line), "missing {line}:\n{page}");
        }
        let missing = get(addr, "GET / HTTP/1.0\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        let too_big = get(addr, &huge).await;
        assert!(too_big.starts_with("HTTP/1.1 431"), "{too_big}");

        shutdown.cancel();
        server.await.unwrap();
    }

    #[test]
    fn key_file_age_is_exported_without_the_key() {
        let metrics = Metrics::new();
        let policy = crate::offline::signing_tests::example_policy();
        metrics.loaded(true, Some(&policy));
        let page = metrics.encode();
        let line = page
            .lines()
            .find(|l| l.starts_with("dkim_sidecar_key_file_modified_timestamp_seconds{"))
            .unwrap_or_else(|| panic!("{page}"));
        assert!(
            line.contains("key=\"KeyFile\",domain=\"example.com\",selector=\"default\""),
            "{line}"
        );
        assert!(!page.contains("PRIVATE") && !page.contains("MII"), "{page}");
    }

    #[test]
    fn connections_open_goes_up_and_down() {
        let metrics = Metrics::new();
        metrics.connection_opened();
        metrics.connection_opened();
        metrics.connection_closed();
        let page = metrics.encode();
        assert!(page.contains("dkim_sidecar_connections_open 1\n"), "{page}");
        assert!(
            page.contains("dkim_sidecar_connections_total 2\n"),
            "{page}"
        );
    }
}
