//! SigningTable performance at the size the performance issue asks for:
//! a `refile:` table of 100,000 patterns must load in under 1 s and cost
//! under 20 µs per lookup (release build).
//!
//! Run with `cargo bench --bench tables`.

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use dkim_sidecar::diagnostics::Location;
use dkim_sidecar::tables::{DataSet, DataSetKind, SigningTable};

const ENTRIES: usize = 100_000;

/// A large hosting provider's table: mostly `*@domain`, some per-user
/// lines, subdomain wildcards, per-prefix wildcards, a few patterns that
/// must be scanned, and a catch-all at the end.
fn refile_table() -> String {
    let mut text = String::with_capacity(ENTRIES * 48);
    for i in 0..ENTRIES {
        let _ = match i % 10 {
            0..=5 => writeln!(text, "*@d{i}.example k{i}"),
            6 | 7 => writeln!(text, "user{i}@d{}.example k{i}:user{i}@%", i - 6),
            8 => writeln!(text, "*@*.d{}.example k{i}", i - 8),
            _ => writeln!(text, "sales{i}*@d{}.example k{i}", i - 9),
        };
    }
    for i in 0..20 {
        let _ = writeln!(text, "*bounce{i}* kb{i}");
    }
    text.push_str("* catchall\n");
    text
}

fn load(text: &str) -> SigningTable {
    let set = DataSet::parse_file_bytes(
        DataSetKind::Refile,
        text.as_bytes(),
        Location::file("/etc/opendkim/signing.table"),
    )
    .expect("table parses");
    SigningTable::from_data_set(set).expect("table loads")
}

fn bench(c: &mut Criterion) {
    let text = refile_table();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing.table");
    std::fs::write(&path, &text).unwrap();
    let spec = format!("refile:{}", path.display());
    let at = Location::new("/etc/opendkim.conf", 1);

    let mut group = c.benchmark_group("signing_table_100k_load");
    group.sample_size(10);
    group.bench_function("open_refile_from_disk", |b| {
        b.iter(|| black_box(SigningTable::open(&spec, &at).unwrap()));
    });
    group.finish();

    let table = load(&text);
    let mut group = c.benchmark_group("signing_table_100k_lookup");
    let cases = [
        ("star_at_domain", "alice", "d50000.example"),
        ("exact_user_late_in_file", "user99996", "d99990.example"),
        ("subdomain_wildcard", "bob", "mx.d99990.example"),
        ("prefix_wildcard", "sales99999x", "d99990.example"),
        ("only_catch_all", "nobody", "nowhere.invalid"),
    ];
    for (name, user, domain) in cases {
        group.bench_function(format!("find_first/{name}"), |b| {
            b.iter(|| black_box(table.find_first(black_box(user), black_box(domain))));
        });
    }
    group.bench_function("find_all/exact_user_late_in_file", |b| {
        b.iter(|| black_box(table.find_all(black_box("user99996"), black_box("d99990.example"))));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
