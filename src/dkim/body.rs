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

/// Canonicalizes a body chunk by chunk into `W` (a hash context, or a
/// `Vec<u8>` in tests).
#[derive(Debug)]
pub struct BodyCanonicalizer<W> {
    out: W,
    relaxed: bool,
    /// Empty lines (relaxed: only white space) seen since the last line
    /// with content; written only if more content follows.
    empty_lines: usize,
    /// The current line has content already written.
    line_has_content: bool,
    /// Relaxed: white space seen since the last content byte of this line.
    pending_space: bool,
    /// The previous byte was a CR whose meaning depends on the next byte.
    pending_cr: bool,
    /// Any content at all (white space counts for simple).
    any: bool,
}

impl<W: Writer> BodyCanonicalizer<W> {
    pub fn new(out: W, canonicalization: Canonicalization) -> Self {
        BodyCanonicalizer {
            out,
            relaxed: canonicalization == Canonicalization::Relaxed,
            empty_lines: 0,
            line_has_content: false,
            pending_space: false,
            pending_cr: false,
            any: false,
        }
    }

    /// Feeds the next chunk of the body, exactly as received.
    pub fn write(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.pending_cr {
                self.pending_cr = false;
                if rest[0] == b'\n' {
                    self.end_line();
                    rest = &rest[1..];
                    continue;
                }
                self.content(b"\r");
            }
            // The longest run of bytes that are neither line break nor
            // (relaxed) white space.
            let run = rest
                .iter()
                .position(|&b| b == b'\r' || b == b'\n' || (self.relaxed && is_wsp(b)))
                .unwrap_or(rest.len());
            if run > 0 {
                self.content(&rest[..run]);
                rest = &rest[run..];
                continue;
            }
            match rest[0] {
                b'\n' => self.end_line(),
                b'\r' => self.pending_cr = true,
                _ => self.pending_space = true,
            }
            rest = &rest[1..];
        }
    }

    /// Applies the end-of-body rules and returns the output.
    pub fn finish(mut self) -> W {
        if self.pending_cr {
            self.pending_cr = false;
            self.content(b"\r");
        }
        if self.line_has_content {
            // The last line had no line break.
            self.out.write(b"\r\n");
        } else if !self.relaxed && !self.any {
            // Simple: a body without content is one CRLF. (Otherwise the
            // CRLF ending the last content line is written already.)
            self.out.write(b"\r\n");
        }
        self.out
    }

    fn content(&mut self, bytes: &[u8]) {
        if !self.line_has_content {
            for _ in 0..self.empty_lines {
                self.out.write(b"\r\n");
            }
            self.empty_lines = 0;
            self.line_has_content = true;
            if self.pending_space {
                // Relaxed: leading white space becomes one SP.
                self.out.write(b" ");
            }
        } else if self.pending_space {
            self.out.write(b" ");
        }
        self.pending_space = false;
        self.out.write(bytes);
        self.any = true;
    }

    fn end_line(&mut self) {
        if self.line_has_content {
            self.out.write(b"\r\n");
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

/// A SHA-256 body hash in progress.
pub type BodyHash = BodyCanonicalizer<<Sha256 as HashImpl>::Context>;

impl BodyHash {
    pub fn sha256(canonicalization: Canonicalization) -> BodyHash {
        BodyCanonicalizer::new(Sha256::hasher(), canonicalization)
    }

    /// The finished `bh=` digest.
    pub fn digest(self) -> Vec<u8> {
        self.finish().complete().as_ref().to_vec()
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
