//! The `opendkim.conf` line grammar, exactly as OpenDKIM's `config.c`
//! (`config_load_level`) reads it.
//!
//! This is hand-written rather than built on a parser crate because the
//! grammar is OpenDKIM's own and its quirks are the point: everything from
//! the first `#` or carriage return on a line is dropped; the name is the
//! first run of characters other than space and tab; the value is the rest
//! of the line with spaces and tabs trimmed from both ends (so it may hold
//! inner spaces); names are compared without regard to case; an empty value
//! is an error; booleans are judged by their first character (`TtYy1` or
//! `FfNn0`); integers are read like C `strtol(value, &end, 0)`, so `007` is
//! octal and `0x1f` hexadecimal, and trailing junk is an error. `Include`
//! reads another file in place, relative names relative to the working
//! directory, at most five levels deep; we also stop a file that includes
//! itself, which OpenDKIM only catches through the depth limit. The last
//! setting of a name wins, including settings made in included files.
//!
//! This module only turns files into located settings; what the settings
//! mean is `opendkim.rs`'s business. It never logs.

use std::path::{Path, PathBuf};

use crate::diagnostics::Location;

use super::ConfigError;
use super::opendkim_names::{self, ValueType};

/// OpenDKIM's `MAXLEVEL`: the main file is level 0.
pub(crate) const MAX_INCLUDE_DEPTH: usize = 5;

/// A value, typed as OpenDKIM types the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Bool(bool),
    Int(i64),
    Str(String),
}

/// One `Name value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    /// The option's name as OpenDKIM spells it.
    pub name: &'static str,
    /// The value as written (trimmed).
    pub raw: String,
    pub value: Value,
    pub at: Location,
}

/// Reads `path` and every file it includes, in order. Every problem found
/// is returned, not only the first.
pub(crate) fn read(path: &Path) -> Result<Vec<Setting>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = Reader::default();
    reader.stack.push(identity(path));
    reader.file(path, &bytes, 0);
    if reader.errors.is_empty() {
        Ok(reader.settings)
    } else {
        Err(ConfigError::from_problems(reader.errors))
    }
}

#[derive(Default)]
struct Reader {
    settings: Vec<Setting>,
    errors: Vec<ConfigError>,
    /// The files being read, outermost first, to catch Include loops.
    stack: Vec<PathBuf>,
}

impl Reader {
    fn file(&mut self, path: &Path, bytes: &[u8], depth: usize) {
        let origin = Location::file(path);
        let mut lines = bytes.split(|&b| b == b'\n').peekable();
        let mut number = 0u32;
        while let Some(raw) = lines.next() {
            if raw.is_empty() && lines.peek().is_none() {
                break;
            }
            number += 1;
            let at = origin.at_line(number);
            let content = match raw.iter().position(|&b| b == b'#' || b == b'\r') {
                Some(end) => &raw[..end],
                None => raw,
            };
            let Ok(content) = std::str::from_utf8(content) else {
                self.errors.push(ConfigError::NotUtf8 { at });
                continue;
            };
            self.line(content, at, depth);
        }
    }

    fn line(&mut self, content: &str, at: Location, depth: usize) {
        let is_blank = |c: char| c == ' ' || c == '\t';
        let content = content.trim_start_matches(is_blank);
        if content.is_empty() {
            return;
        }
        let (name, rest) = match content.find(is_blank) {
            Some(end) => (&content[..end], &content[end..]),
            None => (content, ""),
        };
        let Some((canonical, kind)) = opendkim_names::lookup(name) else {
            self.errors.push(ConfigError::UnknownOption {
                at,
                name: name.to_string(),
                suggestion: opendkim_names::suggestion(name),
            });
            return;
        };
        let raw = rest.trim_matches(is_blank);
        if raw.is_empty() {
            self.errors.push(ConfigError::EmptyValue {
                at,
                name: canonical.to_string(),
            });
            return;
        }
        let value = match kind {
            ValueType::Bool => match parse_bool(raw) {
                Some(b) => Value::Bool(b),
                None => {
                    self.errors.push(ConfigError::NotBoolean {
                        at,
                        name: canonical.to_string(),
                        value: raw.to_string(),
                    });
                    return;
                }
            },
            ValueType::Int => match parse_int(raw) {
                Some(n) => Value::Int(n),
                None => {
                    self.errors.push(ConfigError::NotInteger {
                        at,
                        name: canonical.to_string(),
                        value: raw.to_string(),
                    });
                    return;
                }
            },
            ValueType::Str => Value::Str(raw.to_string()),
            ValueType::Include => {
                self.include(Path::new(raw), at, depth + 1);
                return;
            }
        };
        self.settings.push(Setting {
            name: canonical,
            raw: raw.to_string(),
            value,
            at,
        });
    }

    fn include(&mut self, path: &Path, at: Location, depth: usize) {
        if depth > MAX_INCLUDE_DEPTH {
            self.errors.push(ConfigError::IncludeDepth {
                at,
                limit: MAX_INCLUDE_DEPTH,
            });
            return;
        }
        let id = identity(path);
        if self.stack.contains(&id) {
            let chain = self
                .stack
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" -> ");
            self.errors.push(ConfigError::IncludeCycle {
                at,
                path: path.to_path_buf(),
                chain,
            });
            return;
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(source) => {
                self.errors.push(ConfigError::Include {
                    at,
                    path: path.to_path_buf(),
                    source,
                });
                return;
            }
        };
        self.stack.push(id);
        self.file(path, &bytes, depth);
        self.stack.pop();
    }
}

/// A file's identity for loop detection: its canonical path when it has
/// one.
fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// OpenDKIM's boolean: the first character decides.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    match value.bytes().next()? {
        b't' | b'T' | b'y' | b'Y' | b'1' => Some(true),
        b'f' | b'F' | b'n' | b'N' | b'0' => Some(false),
        _ => None,
    }
}

/// C `strtol(value, &end, 0)` with `*end == '\0'` required: optional
/// leading whitespace and sign, then `0x` hexadecimal, `0` octal or
/// decimal digits, and nothing after them. Values outside a C `int` are
/// refused rather than silently truncated.
pub(crate) fn parse_int(value: &str) -> Option<i64> {
    let s = value.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (16, hex)
    } else if s.len() > 1 && s.starts_with('0') {
        (8, &s[1..])
    } else {
        (10, s)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i64::from_str_radix(digits, radix).ok()?;
    let n = if negative { -magnitude } else { magnitude };
    i32::try_from(n).ok().map(i64::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn settings(text: &str) -> Result<Vec<Setting>, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opendkim.conf");
        fs::write(&path, text).unwrap();
        read(&path)
    }

    fn values(text: &str) -> Vec<(&'static str, String, u32)> {
        settings(text)
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.raw, s.at.line))
            .collect()
    }

    #[test]
    fn comments_start_anywhere_and_blank_lines_are_skipped() {
        let got = values(
            "# a comment\n\n   \nSocket inet:8891@localhost # trailing\nMode\tsv#glued\n  # indented comment\n",
        );
        assert_eq!(
            got,
            vec![
                ("Socket", "inet:8891@localhost".into(), 4),
                ("Mode", "sv".into(), 5)
            ]
        );
    }

    #[test]
    fn names_are_case_insensitive_and_spelt_as_opendkim_spells_them() {
        let got = values("keytable file:/k\nSIGNINGTABLE refile:/s\nuserid opendkim\n");
        let names: Vec<&str> = got.iter().map(|g| g.0).collect();
        assert_eq!(names, ["KeyTable", "SigningTable", "UserID"]);
    }

    #[test]
    fn value_keeps_inner_spaces_and_loses_outer_ones() {
        let got = values("InternalHosts \t 127.0.0.1, ::1 \t \r\n");
        assert_eq!(got[0].1, "127.0.0.1, ::1");
    }

    #[test]
    fn carriage_return_ends_the_line_like_a_comment() {
        let got = values("Selector default\rjunk\n");
        assert_eq!(got[0].1, "default");
    }

    #[test]
    fn every_repetition_is_kept_in_order_so_the_last_can_win() {
        let got = values("Selector a\nSelector b\n");
        assert_eq!(got.last().unwrap().1, "b");
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn empty_value_is_an_error_naming_the_line() {
        let err = settings("Mode sv\nSocket   \t\n").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::EmptyValue { .. }), "{text}");
        assert!(
            text.contains("opendkim.conf:2: Socket has no value"),
            "{text}"
        );
    }

    #[test]
    fn unknown_name_is_an_error_with_a_suggestion() {
        let err = settings("Sokcet inet:8891@localhost\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("opendkim.conf:1: unknown option `Sokcet`"),
            "{text}"
        );
        assert!(text.contains("did you mean `Socket`?"), "{text}");
    }

    #[test]
    fn booleans_are_judged_by_their_first_character() {
        for (v, want) in [
            ("yes", true),
            ("True", true),
            ("1", true),
            ("y", true),
            ("no", false),
            ("False", false),
            ("0", false),
            ("nope", false),
        ] {
            let got = settings(&format!("SubDomains {v}\n")).unwrap();
            assert_eq!(got[0].value, Value::Bool(want), "{v}");
        }
        let err = settings("SubDomains maybe\n").unwrap_err();
        assert!(matches!(err, ConfigError::NotBoolean { .. }), "{err}");
    }

    #[test]
    fn integers_are_read_like_strtol_base_zero() {
        assert_eq!(parse_int("007"), Some(7));
        assert_eq!(parse_int("0022"), Some(0o22));
        assert_eq!(parse_int("0x1F"), Some(31));
        assert_eq!(parse_int("65536"), Some(65536));
        assert_eq!(parse_int("-5"), Some(-5));
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int("08"), None);
        assert_eq!(parse_int("12abc"), None);
        assert_eq!(parse_int("0x"), None);
        assert_eq!(parse_int("99999999999"), None);
        let got = settings("UMask 007\n").unwrap();
        assert_eq!(got[0].value, Value::Int(7));
        let err = settings("UMask 0o07\n").unwrap_err();
        assert!(matches!(err, ConfigError::NotInteger { .. }), "{err}");
    }

    #[test]
    fn every_independent_problem_is_reported() {
        let err = settings("Bogus 1\nSocket\nSubDomains maybe\nMode sv\n").unwrap_err();
        let lines: Vec<u32> = err
            .problems()
            .iter()
            .map(|p| {
                let text = p.to_string();
                let after = text.split("opendkim.conf:").nth(1).unwrap();
                after.split(':').next().unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(lines, [1, 2, 3]);
    }

    #[test]
    fn include_reads_the_other_file_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("inner.conf");
        fs::write(&inner, "Selector inner\nMode s\n").unwrap();
        let main = dir.path().join("main.conf");
        fs::write(
            &main,
            format!("Selector outer\nInclude {}\nMode sv\n", inner.display()),
        )
        .unwrap();
        let got: Vec<(String, String)> = read(&main)
            .unwrap()
            .into_iter()
            .map(|s| (s.at.to_string(), s.raw))
            .collect();
        assert_eq!(
            got,
            vec![
                (format!("{}:1", main.display()), "outer".to_string()),
                (format!("{}:1", inner.display()), "inner".to_string()),
                (format!("{}:2", inner.display()), "s".to_string()),
                (format!("{}:3", main.display()), "sv".to_string()),
            ]
        );
    }

    #[test]
    fn include_nesting_stops_after_five_levels() {
        let dir = tempfile::tempdir().unwrap();
        // main -> l1 -> ... -> l5 is allowed; l6 is one too many.
        let path = |n: usize| dir.path().join(format!("l{n}.conf"));
        for n in 0..=6 {
            let body = if n < 6 {
                format!("Include {}\n", path(n + 1).display())
            } else {
                "Mode s\n".to_string()
            };
            fs::write(path(n), body).unwrap();
        }
        let err = read(&path(0)).unwrap_err();
        assert!(matches!(err, ConfigError::IncludeDepth { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("{}:1: ", path(5).display())),
            "{err}"
        );
        fs::write(path(5), "Mode s\n").unwrap();
        assert_eq!(read(&path(0)).unwrap().len(), 1);
    }

    #[test]
    fn include_cycle_is_an_error_naming_the_closing_include() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.conf");
        let b = dir.path().join("b.conf");
        fs::write(&a, format!("Mode s\nInclude {}\n", b.display())).unwrap();
        fs::write(&b, format!("Include {}\n", a.display())).unwrap();
        let err = read(&a).unwrap_err();
        assert!(matches!(err, ConfigError::IncludeCycle { .. }), "{err}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("{}:1: ", b.display())), "{text}");
        assert!(text.contains("loop"), "{text}");
    }

    #[test]
    fn missing_include_names_the_include_line() {
        let err = settings("Mode s\nInclude /nonexistent/dkim/extra.conf\n").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::Include { .. }), "{text}");
        assert!(
            text.contains("opendkim.conf:2: cannot read the included file"),
            "{text}"
        );
    }
}
