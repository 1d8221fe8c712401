//! The sender address in a From (or other SenderHeaders) field, found the
//! way libopendkim's `dkim_mail_parse` (`dkim-mailparse.c`) finds it, so
//! that every field OpenDKIM signs for, we sign for, and with the same
//! `user@domain` looked up in the SigningTable.
//!
//! `dkim_mail_parse` is not an RFC 5322 parser: it finds the first of `<`,
//! or of `:` `;` `,` outside quotes, brackets and comments (an `@` seen
//! before `:` `;` `,` means "address here"), then copies tokens into the
//! buffer it parses in place:
//! - after `<`: every token up to `>` (a `,` or `:` restarts the address,
//!   dropping a source route);
//! - otherwise, from the start: tokens up to `,` or `;`, with one space
//!   where white space separated two words;
//! - before a `:` `;` `,` without an `@` (a group name, an empty group):
//!   skip past it and look again.
//!
//! Quoted strings and domain literals are kept with their quotes and
//! brackets, comments are dropped. Its quirks are kept on purpose: a field
//! without a local part (`@example.com`) yields `example.com` as both user
//! and domain (the user is written where the domain already is), and a
//! list yields its first address. The caller refuses a missing or empty
//! user or domain, as OpenDKIM's `mlfi_eoh` does.

/// `< > @ , ; : \ " / [ ] ? =`: `dkim-mailparse.c`'s SPECIALS.
fn is_special(b: u8) -> bool {
    matches!(
        b,
        b'<' | b'>' | b'@' | b',' | b';' | b':' | b'\\' | b'"' | b'/' | b'[' | b']' | b'?' | b'='
    )
}

/// C's `isspace` in the C locale (bytes above 0x7f are never space).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Why a field could not be parsed at all (unbalanced delimiters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    Parenthesis,
    Quote,
    Bracket,
}

/// The user and domain `dkim_mail_parse` finds in `value` (either may be
/// missing or empty; the caller decides what that means).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub user: Option<Vec<u8>>,
    pub domain: Option<Vec<u8>>,
}

/// The buffer `dkim_mail_parse` works in: the value and a terminating NUL.
struct Buffer {
    b: Vec<u8>,
    /// Index of the NUL that ends the input (`e` in the C code).
    end: usize,
}

impl Buffer {
    fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(0)
    }

    /// `dkim_mail_matching_paren`: from `s`, the index of the `close` that
    /// balances one already open, or `end`.
    fn matching(&self, mut s: usize, open: u8, close: u8) -> usize {
        let mut depth = 1;
        while s < self.end {
            let c = self.b[s];
            if c == close {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            } else if c == open {
                depth += 1;
            } else if c == b'\\' && self.at(s + 1) != 0 {
                s += 1;
            }
            s += 1;
        }
        s
    }

    /// Skips white space and comments from `p`; `Err` on an unclosed
    /// comment. Sets `*space` when it skipped uncommented white space.
    fn skip_space(&self, mut p: usize, space: &mut bool) -> Result<usize, ParseError> {
        while p < self.end && (self.b[p] == b'(' || is_space(self.b[p])) {
            if self.b[p] != b'(' {
                *space = true;
                p += 1;
            } else {
                p = self.matching(p + 1, b'(', b')');
                if self.at(p) == 0 {
                    return Err(ParseError::Parenthesis);
                }
                p += 1;
            }
        }
        Ok(p)
    }

    /// `dkim_mail_first_special`.
    fn first_special(&self, mut p: usize) -> Result<usize, ParseError> {
        let mut at = None;
        while p < self.end && self.at(p) != 0 {
            p = self.skip_space(p, &mut false)?;
            let c = self.at(p);
            if c == 0 {
                break;
            }
            if c == b'"' {
                p = self.matching(p + 1, 0, b'"');
                if self.at(p) == 0 {
                    return Err(ParseError::Quote);
                }
            } else if c == b'[' {
                p = self.matching(p + 1, 0, b']');
                if self.at(p) == 0 {
                    return Err(ParseError::Bracket);
                }
            } else if is_special(c) {
                match c {
                    b'<' => return Ok(p),
                    b':' | b';' | b',' => return Ok(at.unwrap_or(p)),
                    b'@' => at = Some(p),
                    _ => {}
                }
            } else {
                while self.at(p) != 0
                    && !is_special(self.at(p))
                    && !is_space(self.at(p))
                    && self.at(p) != b'('
                {
                    p += 1;
                }
                p -= 1;
            }
            p += 1;
        }
        Ok(p)
    }

    /// `dkim_mail_token`: the next token's type (`0` at the end, `x` for a
    /// word, `"` `[` or the special character) and its extent.
    fn token(&self, s: usize, space: &mut bool) -> Result<(u8, usize, usize), ParseError> {
        let mut p = self.skip_space(s, space)?;
        if p >= self.end || self.at(p) == 0 {
            return Ok((0, p, p));
        }
        let start = p;
        let c = self.at(p);
        let (kind, end) = if c == b'"' || c == b'[' {
            let close = if c == b'"' { b'"' } else { b']' };
            let end = self.matching(p + 1, 0, close);
            if self.at(end) == 0 {
                return Err(if c == b'"' {
                    ParseError::Quote
                } else {
                    ParseError::Bracket
                });
            }
            (c, end + 1)
        } else if is_special(c) {
            (c, p + 1)
        } else {
            while p < self.end
                && self.at(p) != 0
                && !is_special(self.at(p))
                && !is_space(self.at(p))
                && self.at(p) != b'('
            {
                p += 1;
            }
            (b'x', p)
        };
        Ok((kind, start, end))
    }

    /// The NUL-terminated string at `i`.
    fn c_string(&self, i: usize) -> Vec<u8> {
        let rest = &self.b[i..];
        let len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        rest[..len].to_vec()
    }
}

/// `dkim_mail_parse(value)`.
pub fn dkim_mail_parse(value: &[u8]) -> Result<Parsed, ParseError> {
    // The C code works on a NUL-terminated string: an embedded NUL ends it.
    let len = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    let mut buf = Buffer {
        b: value[..len].to_vec(),
        end: len,
    };
    buf.b.push(0);
    let mut user: Option<usize> = None;
    let mut domain: Option<usize> = None;
    let mut w = 0usize;
    let mut line = 0usize;
    let mut space = false;

    // Copies the token [s, e) to `w`, as the C code's memmove does.
    fn copy(buf: &mut Buffer, w: &mut usize, s: usize, e: usize) {
        buf.b.copy_within(s..e, *w);
        *w += e - s;
    }

    loop {
        let special = buf.first_special(line)?;
        match buf.at(special) {
            b'<' => {
                line = special + 1;
                loop {
                    let (kind, s, e) = buf.token(line, &mut space)?;
                    match kind {
                        b'>' | 0 => {
                            buf.b[w] = 0;
                            break;
                        }
                        b'@' => {
                            buf.b[w] = 0;
                            w += 1;
                            domain = Some(w);
                        }
                        b',' | b':' => {
                            user = None;
                            domain = None;
                        }
                        _ => {
                            user.get_or_insert(w);
                            copy(&mut buf, &mut w, s, e);
                        }
                    }
                    line = e;
                }
                break;
            }
            b';' | b':' | b',' => line = special + 1,
            _ => {
                space = false;
                loop {
                    let (kind, s, e) = buf.token(line, &mut space)?;
                    match kind {
                        0 | b',' | b';' => {
                            buf.b[w] = 0;
                            break;
                        }
                        b'@' => {
                            buf.b[w] = 0;
                            w += 1;
                            domain = Some(w);
                            space = false;
                        }
                        _ => {
                            if user.is_none() {
                                user = Some(w);
                            } else if kind == b'x' && space {
                                buf.b[w] = b' ';
                                w += 1;
                            }
                            copy(&mut buf, &mut w, s, e);
                            space = false;
                        }
                    }
                    line = e;
                }
                break;
            }
        }
    }
    Ok(Parsed {
        user: user.map(|i| buf.c_string(i)),
        domain: domain.map(|i| buf.c_string(i)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> (Option<String>, Option<String>) {
        let p = dkim_mail_parse(value.as_bytes()).expect("parses");
        let s = |v: Option<Vec<u8>>| v.map(|v| String::from_utf8(v).unwrap());
        (s(p.user), s(p.domain))
    }

    fn pair(user: &str, domain: &str) -> (Option<String>, Option<String>) {
        (Some(user.to_string()), Some(domain.to_string()))
    }

    #[test]
    fn bare_address() {
        assert_eq!(parse("alice@example.com"), pair("alice", "example.com"));
    }

    #[test]
    fn angle_address_ignores_the_display_name() {
        assert_eq!(
            parse("\"Liddell, Alice\" <alice@example.com>"),
            pair("alice", "example.com")
        );
        assert_eq!(
            parse("Alice (the boss) <alice@example.com>"),
            pair("alice", "example.com")
        );
        assert_eq!(parse("< alice@example.com >"), pair("alice", "example.com"));
        assert_eq!(
            parse("\"Alice\"\n\t<alice@example.com>"),
            pair("alice", "example.com")
        );
    }

    #[test]
    fn comments_are_dropped_and_spaced_words_joined_with_one_space() {
        assert_eq!(
            parse("alice@example.com (Alice)"),
            pair("alice", "example.com")
        );
        assert_eq!(
            parse("alice (x) smith@example.com"),
            pair("alice smith", "example.com")
        );
    }

    #[test]
    fn a_list_yields_its_first_address() {
        assert_eq!(
            parse("alice@example.com, carol@example.org"),
            pair("alice", "example.com")
        );
        assert_eq!(
            parse("carol@example.org, <alice@example.com>"),
            pair("carol", "example.org")
        );
    }

    #[test]
    fn a_group_name_is_skipped() {
        assert_eq!(
            parse("team: alice@example.com;"),
            pair("alice", "example.com")
        );
        assert_eq!(parse("undisclosed-recipients:;"), (None, None));
    }

    #[test]
    fn quoted_local_part_keeps_its_quotes() {
        assert_eq!(
            parse("\"alice smith\"@example.com"),
            pair("\"alice smith\"", "example.com")
        );
    }

    #[test]
    fn missing_local_part_yields_the_domain_as_user() {
        // The user is written where the domain starts (OpenDKIM's quirk).
        assert_eq!(parse("@example.com"), pair("example.com", "example.com"));
    }

    #[test]
    fn source_route_is_dropped() {
        assert_eq!(
            parse("<@relay.example.net,@b.example:alice@example.com>"),
            pair("alice", "example.com")
        );
    }

    #[test]
    fn fields_without_an_address_yield_no_domain() {
        assert_eq!(parse("alice"), (Some("alice".into()), None));
        assert_eq!(parse("<>"), (None, None));
        assert_eq!(parse(""), (None, None));
    }

    #[test]
    fn unbalanced_delimiters_are_errors() {
        assert_eq!(
            dkim_mail_parse(b"(alice@example.com"),
            Err(ParseError::Parenthesis)
        );
        assert_eq!(
            dkim_mail_parse(b"\"alice@example.com"),
            Err(ParseError::Quote)
        );
        assert_eq!(
            dkim_mail_parse(b"alice@[192.0.2.1"),
            Err(ParseError::Bracket)
        );
    }

    #[test]
    fn trailing_dot_and_case_are_kept() {
        assert_eq!(parse("Alice@Example.COM."), pair("Alice", "Example.COM."));
    }
}
