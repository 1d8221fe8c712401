//! The signer's costs per message: canonicalizing and hashing the body
//! (which must run at 300 MB/s or more), and the end of message (header
//! canonicalization, the private-key operation, the field's text) for RSA
//! and Ed25519. The raw RSA-2048 operation is timed through aws-lc-rs and
//! through OpenSSL on the same key, to see which engine should sign.
//!
//! Run with `cargo bench --bench dkim`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dkim_sidecar::dkim::headers::DEFAULT_SIGNED_HEADERS;
use dkim_sidecar::dkim::{HeaderBlock, HeaderField, HeaderPolicy, MessageSigning, SignRequest};
use dkim_sidecar::keys::{LoadOptions, PrivateKey, load_key_file};
use mail_auth::dkim::Canonicalization;

fn key(file: &str) -> Arc<PrivateKey> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("keys-example")
        .join(file);
    let options = LoadOptions {
        require_safe_keys: false,
        ..LoadOptions::default()
    };
    load_key_file(&path, &options).unwrap().key
}

fn request(key: Arc<PrivateKey>, body: Canonicalization) -> SignRequest {
    SignRequest {
        domain: "example.com".into(),
        selector: "default".into(),
        key,
        identity: None,
        header_canonicalization: Canonicalization::Relaxed,
        body_canonicalization: body,
        headers: Arc::new(HeaderPolicy::new(
            DEFAULT_SIGNED_HEADERS.iter().copied(),
            [],
            ["from"],
        )),
        expiry: None,
        body_length: false,
        request_reports: false,
        atps: None,
    }
}

fn headers() -> HeaderBlock {
    let mut block = HeaderBlock::new();
    for (name, value) in [
        ("From", " Load Test <sender@example.com>"),
        ("To", " <recipient@example.org>"),
        ("Subject", " a message with a folded\n\tsubject line"),
        ("Date", " Mon, 1 Jan 2024 00:00:00 +0000"),
        ("Message-ID", " <bench.4096@example.com>"),
        ("MIME-Version", " 1.0"),
        ("Content-Type", " text/plain; charset=us-ascii"),
    ] {
        block.push(HeaderField::new(
            Bytes::from_static(name.as_bytes()),
            Bytes::from_static(value.as_bytes()),
        ));
    }
    block
}

/// Plain text: single spaces, no trailing white space, 78-byte lines.
fn text_body(size: usize) -> Vec<u8> {
    let line = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs\r\n";
    line.iter().copied().cycle().take(size).collect()
}

/// Text lines with runs of white space for relaxed canonicalization to
/// fold, trailing white space, and an empty line now and then: a harder
/// case than most mail.
fn body(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 100);
    let mut n = 0;
    while out.len() < size {
        if n % 20 == 19 {
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(
                format!("{n:06} The quick brown fox  jumps over\tthe lazy dog; pack my box   \r\n")
                    .as_bytes(),
            );
        }
        n += 1;
    }
    out.truncate(size);
    out
}

fn body_hash(c: &mut Criterion) {
    let rsa = key("default.private");
    let mut group = c.benchmark_group("body_hash");
    for (kind, size) in [
        ("text", 4 * 1024),
        ("text", 1024 * 1024),
        ("spaces", 1024 * 1024),
    ] {
        let data = if kind == "text" {
            text_body(size)
        } else {
            body(size)
        };
        group.throughput(Throughput::Bytes(size as u64));
        for (name, canon) in [
            ("simple", Canonicalization::Simple),
            ("relaxed", Canonicalization::Relaxed),
        ] {
            let id = BenchmarkId::new(format!("{name}/{kind}"), size);
            group.bench_with_input(id, &data, |b, data| {
                b.iter(|| {
                    let mut m = MessageSigning::new(vec![request(Arc::clone(&rsa), canon)]);
                    // Postfix's body chunks are at most 64 KiB.
                    for chunk in data.chunks(65535) {
                        m.body(black_box(chunk));
                    }
                    black_box(m)
                });
            });
        }
    }
    group.finish();
}

fn end_of_message(c: &mut Criterion) {
    let block = headers();
    let data = body(4096);
    let mut group = c.benchmark_group("end_of_message");
    for (name, file) in [
        ("rsa2048", "default.private"),
        ("ed25519", "ed25519.private"),
    ] {
        let key = key(file);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut m =
                    MessageSigning::new(vec![request(Arc::clone(&key), Canonicalization::Simple)]);
                m.body(&data);
                black_box(m.finish(&block, 1_700_000_000).unwrap())
            });
        });
    }
    group.finish();
}

fn rsa_engines(c: &mut Criterion) {
    let pem =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("keys-example/default.private"))
            .unwrap();
    let ossl = openssl::pkey::PKey::private_key_from_pem(&pem).unwrap();
    let der = ossl.rsa().unwrap().private_key_to_der().unwrap();
    let aws = aws_lc_rs::rsa::KeyPair::from_der(&der).unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let input = vec![b'x'; 400];
    let mut group = c.benchmark_group("rsa2048_sign");
    group.bench_function("aws_lc_rs", |b| {
        let mut signature = vec![0; aws.public_modulus_len()];
        b.iter(|| {
            aws.sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &rng,
                black_box(&input),
                &mut signature,
            )
            .unwrap();
            black_box(&signature);
        });
    });
    group.bench_function("openssl", |b| {
        b.iter(|| {
            let mut signer =
                openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &ossl).unwrap();
            black_box(signer.sign_oneshot_to_vec(black_box(&input)).unwrap())
        });
    });
    group.finish();
}

criterion_group!(benches, body_hash, end_of_message, rsa_engines);
criterion_main!(benches);
