//! The verifier's resolver against a real DNS server (Knot on loopback,
//! with a DNSSEC-signed zone and an unsigned one), and against servers
//! that misbehave: one that never answers, one that answers garbage.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dkim_sidecar::dns::{DnsFailure, DnsSettings, Resolver, Security, TxtOutcome};
use testkit::dns::DnsServer;

fn resolver(settings: DnsSettings) -> Arc<Resolver> {
    Arc::new(Resolver::new(&settings).expect("resolver"))
}

fn at(server: SocketAddr) -> DnsSettings {
    DnsSettings {
        nameservers: vec![server],
        ..DnsSettings::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn answers_records_absence_and_long_and_multiple_records() {
    let long = format!("v=DKIM1; k=rsa; p={}", "A".repeat(3000));
    let dns = DnsServer::builder()
        .zone("example.net.")
        .txt("one._domainkey.example.net.", "v=DKIM1; p=abc")
        .txt_strings("split._domainkey.example.net.", &["v=DKIM1; ", "p=abc"])
        .txt("long._domainkey.example.net.", &long)
        .txt("two._domainkey.example.net.", "v=DKIM1; p=first")
        .txt("two._domainkey.example.net.", "v=DKIM1; p=second")
        .txt("other.example.net.", "not a key")
        .start();
    let rt = runtime();
    let resolver = resolver(at(dns.addr()));
    let lookup = |name: &str| {
        let pending = rt.block_on(async { resolver.lookup_txt(name) });
        rt.block_on(pending.answer())
    };
    let answer = lookup("one._domainkey.example.net");
    assert_eq!(
        answer.outcome,
        TxtOutcome::Records(vec![b"v=DKIM1; p=abc".to_vec()])
    );
    assert_eq!(answer.security, Security::Unchecked);
    assert_eq!(
        lookup("split._domainkey.example.net").outcome,
        TxtOutcome::Records(vec![b"v=DKIM1; p=abc".to_vec()])
    );
    assert_eq!(
        lookup("long._domainkey.example.net").outcome,
        TxtOutcome::Records(vec![long.into_bytes()])
    );
    let TxtOutcome::Records(mut two) = lookup("two._domainkey.example.net").outcome.clone() else {
        panic!("two records expected")
    };
    two.sort();
    assert_eq!(
        two,
        vec![b"v=DKIM1; p=first".to_vec(), b"v=DKIM1; p=second".to_vec()]
    );
    assert_eq!(
        lookup("missing._domainkey.example.net").outcome,
        TxtOutcome::NoSuchName
    );
    // `ns.example.net` exists (an A record) but has no TXT.
    assert_eq!(lookup("ns.example.net").outcome, TxtOutcome::NoRecords);
}

#[test]
fn answers_are_cached_and_concurrent_lookups_of_one_name_share_a_query() {
    let dns = DnsServer::builder()
        .zone("example.net.")
        .txt("cached._domainkey.example.net.", "v=DKIM1; p=abc")
        .start();
    let rt = runtime();
    let resolver = resolver(at(dns.addr()));
    let metrics = dkim_sidecar::dns::metrics::dns();
    let page = || {
        let mut registry = prometheus_client::registry::Registry::default();
        dkim_sidecar::dns::metrics::register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    };
    let _ = metrics;
    let hits_before = counter(&page(), "dns_cache_hits_total");
    // Ten lookups started together: one query, the rest join it.
    let pendings: Vec<_> = rt.block_on(async {
        (0..10)
            .map(|_| resolver.lookup_txt("cached._domainkey.example.net"))
            .collect()
    });
    for pending in pendings {
        let answer = rt.block_on(pending.answer());
        assert!(matches!(answer.outcome, TxtOutcome::Records(_)));
    }
    // Now from the cache, even with the server gone.
    drop(dns);
    let answer = rt.block_on(async { resolver.lookup_txt("CACHED._domainkey.example.net.") });
    assert!(answer.now().is_some(), "a cached answer is there at once");
    assert!(matches!(
        answer.now().unwrap().outcome,
        TxtOutcome::Records(_)
    ));
    assert!(counter(&page(), "dns_cache_hits_total") > hits_before);
}

fn counter(page: &str, name: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn dnssec_says_secure_unprotected_or_bogus() {
    let dns = DnsServer::builder()
        .signed_zone("test.")
        .zone("plain.test.")
        .txt("sel._domainkey.secure.test.", "v=DKIM1; p=secure")
        .txt("sel._domainkey.plain.test.", "v=DKIM1; p=plain")
        .bogus_txt(
            "sel._domainkey.forged.test.",
            "v=DKIM1; p=signed",
            "v=DKIM1; p=forged",
        )
        .start();
    let rt = runtime();
    let resolver = resolver(DnsSettings {
        trust_anchor_file: Some(dns.trust_anchor_file().to_path_buf()),
        ..at(dns.addr())
    });
    assert!(resolver.validates());
    let lookup = |name: &str| {
        let pending = rt.block_on(async { resolver.lookup_txt(name) });
        rt.block_on(pending.answer())
    };
    let secure = lookup("sel._domainkey.secure.test");
    assert_eq!(
        secure.outcome,
        TxtOutcome::Records(vec![b"v=DKIM1; p=secure".to_vec()])
    );
    assert_eq!(secure.security, Security::Secure);
    let plain = lookup("sel._domainkey.plain.test");
    assert_eq!(
        plain.outcome,
        TxtOutcome::Records(vec![b"v=DKIM1; p=plain".to_vec()])
    );
    assert_eq!(plain.security, Security::Insecure, "{plain:?}");
    let forged = lookup("sel._domainkey.forged.test");
    // Signed with one value, served with another: hickory refuses it.
    assert_eq!(forged.security, Security::Bogus, "{forged:?}");
    assert_eq!(forged.outcome, TxtOutcome::Failed(DnsFailure::Bogus));
}

#[test]
fn a_server_that_never_answers_times_out_after_dns_timeout() {
    // Bound, never read: queries vanish.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rt = runtime();
    let resolver = resolver(DnsSettings {
        timeout: Duration::from_millis(800),
        ..at(silent.local_addr().unwrap())
    });
    let started = Instant::now();
    let pending = rt.block_on(async { resolver.lookup_txt("a._domainkey.example.net") });
    assert!(pending.now().is_none(), "the lookup runs in the background");
    let answer = rt.block_on(pending.answer());
    assert!(
        matches!(answer.outcome, TxtOutcome::Failed(ref f) if f.is_temporary()),
        "{answer:?}"
    );
    // A failure is not cached: the next lookup asks again.
    let again = rt.block_on(async { resolver.lookup_txt("a._domainkey.example.net") });
    assert!(again.now().is_none());
    // Timing is only sanity-checked loosely (never asserted tightly).
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_server_that_answers_garbage_is_a_temporary_failure() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            // The query's id, then noise that is not a DNS message.
            let mut reply = buf[..2.min(n)].to_vec();
            reply.extend_from_slice(&[0xff; 7]);
            reply.extend((0..200u16).map(|i| (i * 37) as u8));
            let _ = server.send_to(&reply, from);
        }
    });
    let rt = runtime();
    let resolver = resolver(DnsSettings {
        timeout: Duration::from_secs(2),
        ..at(addr)
    });
    let pending = rt.block_on(async { resolver.lookup_txt("g._domainkey.example.net") });
    let answer = rt.block_on(pending.answer());
    assert!(
        matches!(answer.outcome, TxtOutcome::Failed(ref f) if f.is_temporary()),
        "{answer:?}"
    );
}
