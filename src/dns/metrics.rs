//! The resolver's counters: queries sent (by outcome), cache hits, lookups
//! that joined one already running, and query latency.
//!
//! They live for the whole process (a reload builds a new resolver, the
//! counts go on) and are counted whether or not the metrics endpoint is
//! on; [`register`] adds them to the endpoint's registry. Names only, never
//! the names looked up.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub(crate) type Labels = Vec<(&'static str, String)>;

pub(crate) fn label(outcome: &str) -> Labels {
    vec![("outcome", outcome.to_string())]
}

#[derive(Debug)]
pub struct DnsMetrics {
    pub(crate) queries: Family<Labels, Counter>,
    pub(crate) cache_hits: Counter,
    pub(crate) shared_lookups: Counter,
    pub(crate) query_duration: Histogram,
}

static DNS: LazyLock<DnsMetrics> = LazyLock::new(|| DnsMetrics {
    queries: Family::default(),
    cache_hits: Counter::default(),
    shared_lookups: Counter::default(),
    // 0.1 ms to about 26 s.
    query_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
});

pub fn dns() -> &'static DnsMetrics {
    &DNS
}

/// Add the DNS metrics to `registry` (prefix `dkim_sidecar_dns_`).
pub fn register(registry: &mut Registry) {
    let m = dns();
    let dns = registry.sub_registry_with_prefix("dns");
    dns.register(
        "queries",
        "Key record lookups sent to DNS (or answered from test records), by outcome \
         (answer, nxdomain, nodata, timeout, bogus, error, test)",
        m.queries.clone(),
    );
    dns.register(
        "cache_hits",
        "Key record lookups answered from the cache",
        m.cache_hits.clone(),
    );
    dns.register(
        "shared_lookups",
        "Key record lookups that joined a query for the same name already running",
        m.shared_lookups.clone(),
    );
    dns.register(
        "query_duration_seconds",
        "Time from sending a key record query to its answer",
        m.query_duration.clone(),
    );
}
