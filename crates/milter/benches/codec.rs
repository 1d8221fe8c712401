//! The wire codec's cost per message: decoding what Postfix sends for one
//! 4 KB message (macros, envelope, seven header fields, end of headers,
//! the body, end of message) and encoding the end-of-message replies (a
//! DKIM-Signature insert and continue).
//!
//! Run with `cargo bench --bench codec`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use milter::{Command, FrameDecoder, Reply, Stage};

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// One message's frames, as Postfix sends them with protocol 6.
fn message_frames() -> (Vec<u8>, usize) {
    let mut commands = vec![
        Command::Macros {
            stage: Stage::Mail,
            pairs: vec![
                (b("{auth_type}"), b("PLAIN")),
                (b("{mail_addr}"), b("sender@example.com")),
            ],
        },
        Command::Mail {
            sender: b("<sender@example.com>"),
            args: vec![b("SIZE=4500")],
        },
        Command::Macros {
            stage: Stage::Rcpt,
            pairs: vec![(b("{rcpt_addr}"), b("recipient@example.org"))],
        },
        Command::Rcpt {
            recipient: b("<recipient@example.org>"),
            args: vec![],
        },
    ];
    for (name, value) in [
        ("From", " Load Test <sender@example.com>"),
        ("To", " <recipient@example.org>"),
        ("Subject", " a message with a folded\n\tsubject line"),
        ("Date", " Mon, 1 Jan 2024 00:00:00 +0000"),
        ("Message-ID", " <bench.4096@example.com>"),
        ("MIME-Version", " 1.0"),
        ("Content-Type", " text/plain; charset=us-ascii"),
    ] {
        commands.push(Command::Header {
            name: b(name),
            value: b(value),
        });
    }
    commands.push(Command::Macros {
        stage: Stage::EndOfHeaders,
        pairs: vec![(b("i"), b("4DkQ1x2Z3z"))],
    });
    commands.push(Command::EndOfHeaders);
    commands.push(Command::Body(Bytes::from(vec![b'x'; 4096])));
    commands.push(Command::Macros {
        stage: Stage::EndOfMessage,
        pairs: vec![(b("i"), b("4DkQ1x2Z3z"))],
    });
    commands.push(Command::EndOfMessage(Bytes::new()));
    commands.push(Command::Abort);
    let mut out = BytesMut::new();
    for c in &commands {
        c.encode(&mut out).unwrap();
    }
    (out.to_vec(), commands.len())
}

fn decode(c: &mut Criterion) {
    let (wire, count) = message_frames();
    let decoder = FrameDecoder::default();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("decode_one_4k_message", |bench| {
        bench.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            let mut n = 0;
            while let Some(command) = decoder.decode(&mut buf).unwrap() {
                black_box(&command);
                n += 1;
            }
            assert_eq!(n, count);
        });
    });
    group.throughput(Throughput::Elements(1));
    let replies = [
        Reply::InsertHeader {
            index: 0,
            name: b("DKIM-Signature"),
            value: Bytes::from(format!(
                " v=1; a=rsa-sha256; c=relaxed/simple; d=example.com; s=default;\n\tt=1700000000; h=From:To:Subject:Date:Message-ID:MIME-Version:Content-Type:From;\n\tbh={};\n\tb={}",
                "A".repeat(44),
                "B".repeat(344)
            )),
        },
        Reply::Continue,
    ];
    group.bench_function("encode_end_of_message_replies", |bench| {
        let mut out = BytesMut::with_capacity(1024);
        bench.iter(|| {
            out.clear();
            for r in &replies {
                r.encode(&mut out).unwrap();
            }
            black_box(&out);
        });
    });
    group.bench_function("encode_one_4k_message_as_the_mta", |bench| {
        let mut out = BytesMut::with_capacity(8192);
        let (wire, _) = message_frames();
        let mut buf = BytesMut::from(&wire[..]);
        let mut commands = Vec::new();
        while let Some(c) = decoder.decode(&mut buf).unwrap() {
            commands.push(c);
        }
        bench.iter(|| {
            out.clear();
            for c in &commands {
                c.encode(&mut out).unwrap();
            }
            black_box(&out);
        });
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
