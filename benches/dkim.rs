//! The signer's costs per message: canonicalizing and hashing the body
//! (which must run at 300 MB/s or more), and the end of message (header
//! canonicalization, the private-key operation, the field's text) for RSA
//! and Ed25519. The raw RSA-2048 operation is timed through aws-lc-rs and
//! through OpenSSL on the same key, to see which engine should sign.
//!
//! `per_message_path`: one whole message through the milter as it runs,
//! frames in, replies out, for RSA-2048 and Ed25519 (4 KB body): the
//! milter crate's MTA-side client ([`milter::client`], which sends what
//! Postfix sends with `milter_protocol = 6`: negotiation, connect, HELO,
//! MAIL, RCPT, DATA, each header, end of headers, the body, end of message,
//! then `A` and `Q`) talks over an in-process byte stream
//! ([`tokio::io::duplex`]) to the real connection handling
//! ([`milter::serve`]) driving the real [`SigningFilter`] with a policy
//! loaded from an `opendkim.conf`, and the time runs until the client has
//! read the final reply (the DKIM-Signature insertion and continue) and the
//! server has seen QUIT. One connection per message, as Postfix opens one
//! per SMTP session. Next to it, `bare_signature`: the private-key
//! operation alone with the same key, over 400 bytes (about what the
//! canonical header block of such a message is), so the share of the path
//! that is not the signature shows. What the path does not include: a
//! socket (the duplex stream is memory), the work pool (not used with one
//! connection), and writing the log line (no log subscriber in the bench).
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
use dkim_sidecar::signing::{LivePolicy, SigningFilter};
use mail_auth::common::crypto::SigningKey as _;
use mail_auth::dkim::Canonicalization;
use milter::client::{ClientError, MacroValues, Message, MilterClient, Outcome};
use tokio_util::sync::CancellationToken;

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

/// An `opendkim.conf` signing example.com mail with one of the example keys.
fn policy(file: &str, selector: &str, algorithm: &str) -> dkim_sidecar::policy::Policy {
    let key = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("keys-example")
        .join(file);
    testkit::policy::load(&format!(
        "Mode s\nSocket inet:8891@127.0.0.1\nDomain example.com\nSelector {selector}\nKeyFile {}\n\
         RequireSafeKeys no\nCanonicalization relaxed/simple\nOversignHeaders From\n\
         SignatureAlgorithm {algorithm}\n",
        key.display()
    ))
}

/// One message over a fresh in-process connection: the MTA side plays
/// Postfix, the milter side is the server's per-connection code.
async fn one_message(live: &Arc<LivePolicy>, message: &Message) -> Outcome {
    let (mta_end, milter_end) = tokio::io::duplex(64 * 1024);
    let server = milter::serve(
        milter_end,
        SigningFilter::new(Arc::clone(live)),
        milter::Limits::default(),
        None,
        CancellationToken::new(),
    );
    let mta = async {
        let mut mta = MilterClient::new(Box::new(mta_end), std::time::Duration::from_secs(10));
        mta.negotiate(6).await?;
        let values = MacroValues::default();
        mta.open_session(&values, "client.example.com").await?;
        let outcome = mta.send_message(message, "4QBENCH1", &values).await?;
        mta.quit().await?;
        Ok::<_, ClientError>(outcome)
    };
    let (served, outcome) = tokio::join!(server, mta);
    served.expect("the milter side of the conversation");
    outcome.expect("the MTA side of the conversation")
}

fn per_message_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let message = testkit::message::load_test("sender@example.com", "recipient@example.org", 4096);
    let mut group = c.benchmark_group("per_message_path");
    for (name, file, selector, algorithm) in [
        ("rsa2048", "default.private", "default", "rsa-sha256"),
        ("ed25519", "ed25519.private", "ed25519", "ed25519-sha256"),
    ] {
        let live = Arc::new(LivePolicy::new(policy(file, selector, algorithm)));
        // Outside the timing: the path really signs, with this key.
        let Outcome::Delivered { modifications } = runtime.block_on(one_message(&live, &message))
        else {
            panic!("{name}: the message was not delivered");
        };
        let signed = modifications.iter().any(|m| match m {
            milter::Reply::InsertHeader { name, value, .. } => {
                name.eq_ignore_ascii_case(b"DKIM-Signature")
                    && String::from_utf8_lossy(value).contains(&format!("a={algorithm}"))
            }
            _ => false,
        });
        assert!(
            signed,
            "{name}: no {algorithm} DKIM-Signature in {modifications:?}"
        );
        group.bench_function(format!("{name}/session"), |b| {
            b.iter(|| black_box(runtime.block_on(one_message(&live, black_box(&message)))));
        });
        let key = key(file);
        let input = vec![b'x'; 400];
        group.bench_function(format!("{name}/bare_signature"), |b| {
            b.iter(|| black_box(key.sign(black_box(&input[..])).unwrap()));
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    body_hash,
    end_of_message,
    rsa_engines,
    per_message_path
);
criterion_main!(benches);
