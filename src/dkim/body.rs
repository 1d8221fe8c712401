//! The body hash (`bh=`), canonicalized as RFC 6376 sections 3.4.3
//! (simple) and 3.4.4 (relaxed) say, as the body arrives in chunks.
//!
//! Ours rather than mail-auth's `BodyHasher`: mail-auth 0.13.3's relaxed
//! canonicalization keeps a line of only white space at the end of the
//! body as an empty line (`line\r\n \r\n` hashes as `line\r\n\r\n`), so the
//! signature fails with every verifier (dkimpy and OpenDKIM both compute
//! `line\r\n`); a body of only white-space lines hashed as `\r\n` instead
//! of nothing. Found by `tests/signature_matrix.rs`.
//!
//! Lines end at LF; a CR just before it belongs to the line break. A CR
//! anywhere else is body content (Postfix hands the milter CRLF lines, so
//! that is rare either way).
//!
//! - simple: the body as is, except that empty lines at the end are dropped
//!   and a missing final CRLF is added; an empty body is one CRLF.
//! - relaxed: white space (SP, HTAB) at the end of each line is dropped,
//!   runs of it inside a line become one SP, then empty lines at the end
//!   are dropped and a missing final CRLF is added; an empty body stays
//!   empty.
//!
//! Both are streaming: only a count of pending empty lines (and one
//! pending white-space flag and CR) is carried between chunks, never body
//! bytes.

use mail_auth::common::crypto::{HashContext, HashImpl, Sha256};
use mail_auth::common::headers::Writer;
use mail_auth::dkim::Canonicalization;
use memchr::{memchr, memmem};

/// Output is gathered into blocks of about this size before it reaches the
/// hash: hashing one word at a time cost more than the hashing itself.
const BLOCK: usize = 16 * 1024;

/// Canonicalizes a body chunk by chunk into `W` (a hash context, or a
/// `Vec<u8>` in tests).
#[derive(Debug)]
pub struct BodyCanonicalizer<W: Writer> {
    out: W,
    /// Output not yet handed to `out`.
    block: Vec<u8>,
    relaxed: bool,
    /// Empty lines (relaxed: only white space) seen since the last line
    /// with content; written only if more content follows.
    empty_lines: usize,
    /// The current line has content already written.
    line_has_content: bool,
    /// Relaxed: white space seen since the last content byte of this line.
    pending_space: bool,
    /// The previous chunk ended in a CR whose meaning depends on the next
    /// byte.
    pending_cr: bool,
    /// Any content at all (white space counts for simple).
    any: bool,
    /// Canonical bytes handed to `out` so far (an `l=` value).
    written: u64,
}

impl<W: Writer> BodyCanonicalizer<W> {
    pub fn new(out: W, canonicalization: Canonicalization) -> Self {
        BodyCanonicalizer {
            out,
            block: Vec::with_capacity(BLOCK + 1024),
            relaxed: canonicalization == Canonicalization::Relaxed,
            empty_lines: 0,
            line_has_content: false,
            pending_space: false,
            pending_cr: false,
            any: false,
            written: 0,
        }
    }

    /// Feeds the next chunk of the body, exactly as received.
    pub fn write(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        if self.pending_cr && !rest.is_empty() {
            self.pending_cr = false;
            if rest[0] == b'\n' {
                self.end_line();
                rest = &rest[1..];
            } else {
                self.line_part(b"\r");
            }
        }
        while let Some(lf) = memchr(b'\n', rest) {
            let line = &rest[..lf];
            self.line_part(line.strip_suffix(b"\r").unwrap_or(line));
            self.end_line();
            rest = &rest[lf + 1..];
        }
        // A partial line; a CR at its very end may yet start a line break.
        if let Some(partial) = rest.strip_suffix(b"\r") {
            self.pending_cr = true;
            rest = partial;
        }
        self.line_part(rest);
        if self.block.len() >= BLOCK {
            self.out.write(&self.block);
            self.written += self.block.len() as u64;
            self.block.clear();
        }
    }

    /// Applies the end-of-body rules and returns the output.
    pub fn finish(self) -> W {
        self.finish_counted().0
    }

    /// Applies the end-of-body rules and returns the output with the
    /// length of the canonical body (what `l=` counts).
    pub fn finish_counted(mut self) -> (W, u64) {
        if self.pending_cr {
            self.pending_cr = false;
            self.line_part(b"\r");
        }
        if self.line_has_content {
            // The last line had no line break.
            self.block.extend_from_slice(b"\r\n");
        } else if !self.relaxed && !self.any {
            // Simple: a body without content is one CRLF. (Otherwise the
            // CRLF ending the last content line is written already.)
            self.block.extend_from_slice(b"\r\n");
        }
        self.out.write(&self.block);
        let written = self.written + self.block.len() as u64;
        (self.out, written)
    }

    /// Bytes of one line, without its line break (the line may go on in
    /// the next chunk).
    fn line_part(&mut self, mut part: &[u8]) {
        if !self.relaxed {
            if !part.is_empty() {
                self.content(part);
            }
            return;
        }
        while !part.is_empty() {
            let blank = part.iter().take_while(|&&b| is_wsp(b)).count();
            if blank > 0 {
                self.pending_space = true;
                part = &part[blank..];
                continue;
            }
            // Text up to the next white space that relaxed canonicalization
            // changes: a tab, two blanks in a row, or blanks ending the part.
            // A single SP between words stays as it is, so it needs no
            // attention: that keeps ordinary text in long runs.
            let end = changed_white_space(part);
            self.content(&part[..end]);
            part = &part[end..];
        }
    }

    fn content(&mut self, bytes: &[u8]) {
        if !self.line_has_content {
            for _ in 0..self.empty_lines {
                self.block.extend_from_slice(b"\r\n");
            }
            self.empty_lines = 0;
            self.line_has_content = true;
        }
        if self.pending_space {
            // Relaxed: a run of white space becomes one SP (leading white
            // space too).
            self.block.push(b' ');
            self.pending_space = false;
        }
        self.block.extend_from_slice(bytes);
        self.any = true;
    }

    fn end_line(&mut self) {
        if self.line_has_content {
            self.block.extend_from_slice(b"\r\n");
        } else {
            self.empty_lines += 1;
        }
        self.line_has_content = false;
        self.pending_space = false;
    }
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Where, in `part` (which starts with a non-blank byte), the first white
/// space that relaxed canonicalization rewrites begins: a tab, a blank
/// followed by another blank, or the blanks at the end; `part.len()` if
/// none. Each search stops at the nearest candidate, so a line costs one
/// pass however many runs it has.
fn changed_white_space(part: &[u8]) -> usize {
    let tab = memchr(b'\t', part).unwrap_or(part.len());
    let double = memmem::find(&part[..tab], b"  ").unwrap_or(tab);
    // A space just before a tab belongs to its run, and spaces at the end
    // of the part are dropped or joined by the next chunk.
    let mut end = double.min(tab);
    while end > 0 && part[end - 1] == b' ' {
        end -= 1;
    }
    end
}

/// A SHA-256 body hash in progress.
pub type BodyHash = BodyCanonicalizer<<Sha256 as HashImpl>::Context>;

impl BodyHash {
    pub fn sha256(canonicalization: Canonicalization) -> BodyHash {
        BodyCanonicalizer::new(Sha256::hasher(), canonicalization)
    }

    /// The finished `bh=` digest, and the canonical body's length.
    pub fn digest(self) -> (Vec<u8>, u64) {
        let (context, length) = self.finish_counted();
        (context.complete().as_ref().to_vec(), length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Canonicalization::{Relaxed, Simple};

    fn canon(c: Canonicalization, body: &[u8]) -> Vec<u8> {
        let mut b = BodyCanonicalizer::new(Vec::new(), c);
        b.write(body);
        b.finish()
    }

    #[test]
    fn counts_the_canonical_length_across_chunks_and_blocks() {
        let mut long = b"line  with   runs \t\r\n".repeat(2000);
        long.extend_from_slice(b"\r\n \r\n\r\n");
        for body in [&b"a  b \r\n\r\nc\t\r\n\r\n\r\n"[..], &long, b"", b"x"] {
            for c in [Simple, Relaxed] {
                let expected = canon(c, body).len() as u64;
                for cut in [0, body.len() / 3, body.len() / 2, body.len()] {
                    let mut b = BodyCanonicalizer::new(Vec::new(), c);
                    b.write(&body[..cut]);
                    b.write(&body[cut..]);
                    let (out, length) = b.finish_counted();
                    assert_eq!(length, out.len() as u64);
                    assert_eq!(length, expected, "{c:?} cut at {cut}");
                }
            }
        }
    }

    /// Every way of cutting `body` into two or three chunks gives the same
    /// output as one chunk.
    fn same_in_chunks(c: Canonicalization, body: &[u8]) {
        let whole = canon(c, body);
        for i in 0..=body.len() {
            for j in i..=body.len() {
                let mut b = BodyCanonicalizer::new(Vec::new(), c);
                b.write(&body[..i]);
                b.write(&body[i..j]);
                b.write(&body[j..]);
                assert_eq!(b.finish(), whole, "{c:?} {body:?} cut at {i},{j}");
            }
        }
    }

    #[test]
    fn rfc_6376_section_3_4_5_example() {
        let body = b" C \r\nD \t E\r\n\r\n\r\n";
        assert_eq!(canon(Relaxed, body), b" C\r\nD E\r\n");
        assert_eq!(canon(Simple, body), b" C \r\nD \t E\r\n");
    }

    #[test]
    fn relaxed_drops_trailing_lines_of_only_white_space() {
        assert_eq!(canon(Relaxed, b"line\r\n \r\n"), b"line\r\n");
        assert_eq!(
            canon(
                Relaxed,
                b"trailing spaces   \r\n\ttabbed\t \r\n  \r\n\r\n\r\n"
            ),
            b"trailing spaces\r\n tabbed\r\n"
        );
        assert_eq!(canon(Relaxed, b"a\r\n \t \r\nb\r\n"), b"a\r\n\r\nb\r\n");
        assert_eq!(canon(Relaxed, b" \r\n\t\r\n"), b"");
    }

    #[test]
    fn empty_body() {
        assert_eq!(canon(Relaxed, b""), b"");
        assert_eq!(canon(Simple, b""), b"\r\n");
        assert_eq!(canon(Relaxed, b"\r\n\r\n"), b"");
        assert_eq!(canon(Simple, b"\r\n\r\n"), b"\r\n");
    }

    #[test]
    fn missing_final_line_break_is_added() {
        assert_eq!(canon(Relaxed, b"a\r\nlast  "), b"a\r\nlast\r\n");
        assert_eq!(canon(Simple, b"a\r\nlast  "), b"a\r\nlast  \r\n");
    }

    #[test]
    fn simple_keeps_white_space_and_inner_empty_lines() {
        assert_eq!(
            canon(Simple, b"a \r\n\r\n \r\nb\r\n\r\n"),
            b"a \r\n\r\n \r\nb\r\n"
        );
    }

    #[test]
    fn a_cr_not_before_lf_is_content() {
        assert_eq!(canon(Simple, b"a\rb\r\n"), b"a\rb\r\n");
        assert_eq!(canon(Relaxed, b"a \r b\r\n"), b"a \r b\r\n");
        assert_eq!(canon(Simple, b"a\r"), b"a\r\r\n");
    }

    /// RFC 6376 sections 3.4.3 and 3.4.4 applied to a whole body at once,
    /// with this module's reading of lines (a line ends at LF; a CR right
    /// before the LF is part of the break).
    fn reference(c: Canonicalization, body: &[u8]) -> Vec<u8> {
        let pieces: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
        let (after_last_lf, terminated) = pieces.split_last().unwrap();
        let mut lines: Vec<Vec<u8>> = terminated
            .iter()
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            .collect();
        // The text after the last LF is a line (with its CR as content)
        // only if it is not empty.
        if !after_last_lf.is_empty() {
            lines.push(after_last_lf.to_vec());
        }
        if c == Relaxed {
            for line in &mut lines {
                let mut out = Vec::new();
                let mut blank = false;
                for &b in line.iter() {
                    if b == b' ' || b == b'\t' {
                        blank = true;
                    } else {
                        if blank {
                            out.push(b' ');
                        }
                        blank = false;
                        out.push(b);
                    }
                }
                *line = out;
            }
        }
        while lines.last().is_some_and(Vec::is_empty) {
            lines.pop();
        }
        let mut out: Vec<u8> = lines
            .iter()
            .flat_map(|l| [&l[..], b"\r\n"].concat())
            .collect();
        if out.is_empty() && c == Simple {
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn matches_the_rfc_rules_however_the_body_is_cut(
            body in proptest::collection::vec(
                proptest::sample::select(b"ab \t\r\n".to_vec()), 0..60),
            cuts in proptest::collection::vec(proptest::sample::select((0usize..61).collect::<Vec<_>>()), 0..4),
        ) {
            for c in [Simple, Relaxed] {
                let mut points: Vec<usize> = cuts.iter().map(|&p| p.min(body.len())).collect();
                points.sort_unstable();
                let mut b = BodyCanonicalizer::new(Vec::new(), c);
                let mut last = 0;
                for p in points.into_iter().chain([body.len()]) {
                    b.write(&body[last..p]);
                    last = p;
                }
                proptest::prop_assert_eq!(b.finish(), reference(c, &body), "{:?} {:?}", c, body);
            }
        }
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        for body in [
            &b" C \r\nD \t E\r\n\r\n\r\n"[..],
            b"line\r\n \r\n",
            b"a\rb \r\n\t\r\n x\r",
            b"",
            b"\r\n",
        ] {
            same_in_chunks(Relaxed, body);
            same_in_chunks(Simple, body);
        }
    }
}
