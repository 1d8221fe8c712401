//! `milter_session`: arbitrary bytes from the MTA's side of the socket.
//!
//! The input is what an MTA writes to the milter, byte for byte (the seed
//! corpus is recorded from real Postfix sessions, see README.md). It goes
//! through the frame codec ([`FrameDecoder`]) twice: whole, and cut into
//! pieces at points derived from the input, as reads from a socket would
//! cut it; both must yield the same commands and the same error. The
//! commands then drive a [`Session`] with the real [`SigningFilter`] and
//! the example policy, as `milter::serve` does, until the session closes
//! or reports a protocol error. Every reply must encode.
//!
//! Findings are panics anywhere in the codec, the session, the signing
//! filter or the DKIM code; an allocation beyond libFuzzer's limit (the
//! decoder must refuse a frame longer than its maximum before buffering
//! it); a framing that depends on how the bytes were split; and a
//! DKIM-Signature we insert that does not parse.

#![no_main]

use bytes::BytesMut;
use milter::codec::{Command, FrameDecoder, FrameError};
use milter::{Flow, Session};
use dkim_sidecar::signing::SigningFilter;
use dkim_sidecar_fuzz::{assert_signatures_parse, live_policy, signature_fields};
use libfuzzer_sys::fuzz_target;

/// The largest payload accepted, smaller than the daemon's default so that
/// a "too long" frame is within reach of the fuzzer's input sizes.
const MAX_PAYLOAD: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let decoder = FrameDecoder::new(MAX_PAYLOAD);
    let whole = decode_all(&decoder, data, &[data.len().max(1)]);
    let cuts = cut_sizes(data);
    let pieces = decode_all(&decoder, data, &cuts);
    assert_eq!(whole, pieces, "framing depends on where reads end");

    let (commands, _) = whole;
    let mut session = Session::new(SigningFilter::new(live_policy()));
    let mut out = Vec::new();
    for command in commands {
        let expects_reply = session.expects_reply(&command);
        let is_eom = matches!(command, Command::EndOfMessage(_));
        out.clear();
        let flow = session.handle(command, &mut out);
        for reply in &out {
            let mut wire = BytesMut::new();
            if let Err(e) = reply.encode(&mut wire) {
                // Only a header too big for a reply frame may fail, and
                // we never produce one from a small input.
                panic!("reply {reply:?} does not encode: {e}");
            }
        }
        if is_eom {
            assert_signatures_parse(&signature_fields(&out));
        }
        if !expects_reply && flow.is_ok() {
            assert!(
                out.is_empty(),
                "replies to a command the MTA does not wait for: {out:?}"
            );
        }
        match flow {
            Ok(Flow::Continue) => {}
            Ok(Flow::Close) | Err(_) => break,
        }
    }
});

/// Decode `data` fed in pieces of the given sizes (repeating the last),
/// returning the commands and the error that stopped the decoder, if any.
fn decode_all(
    decoder: &FrameDecoder,
    data: &[u8],
    sizes: &[usize],
) -> (Vec<Command>, Option<FrameError>) {
    let mut buf = BytesMut::new();
    let mut commands = Vec::new();
    let mut at = 0;
    let mut sizes = sizes
        .iter()
        .copied()
        .chain(std::iter::repeat(*sizes.last().unwrap_or(&1)));
    while at < data.len() {
        let n = sizes.next().unwrap_or(1).clamp(1, data.len() - at);
        buf.extend_from_slice(&data[at..at + n]);
        at += n;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(command)) => commands.push(command),
                Ok(None) => break,
                Err(e) => return (commands, Some(e)),
            }
        }
        // What is buffered is at most one frame's worth: the decoder takes
        // every whole frame off the front.
        assert!(
            buf.len() < 4 + 1 + MAX_PAYLOAD,
            "{} bytes buffered",
            buf.len()
        );
    }
    (commands, None)
}

/// Read sizes between 1 and 600 bytes from a small generator seeded by the
/// input, so that every input is also tried cut at other places.
fn cut_sizes(data: &[u8]) -> Vec<usize> {
    let mut seed = data.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (0..64)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Mostly tiny reads, sometimes large ones.
            if seed % 4 == 0 {
                (seed >> 8) as usize % 600 + 1
            } else {
                (seed >> 8) as usize % 9 + 1
            }
        })
        .collect()
}
