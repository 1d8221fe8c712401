//! The TSIG key that signs `rotate`'s DNS updates, read from a BIND key
//! file as `tsig-keygen` writes it:
//!
//! ```text
//! key "rotate-key" {
//!         algorithm hmac-sha256;
//!         secret "uD1Ow0cbv8dBQGQGb5F2hXQ1nDaHLyc2mM1RyPQs3ys=";
//! };
//! ```
//!
//! The secret never leaves this module except into the signer that makes
//! the MAC: it is never printed, logged or put in an error message, and our
//! copy is wiped when dropped (hickory's `TSigner` keeps its own copy for
//! as long as the update runs).

use std::fmt;
use std::path::{Path, PathBuf};

use hickory_proto::rr::Name;
use hickory_proto::rr::TSigner;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use zeroize::Zeroizing;

/// The largest key file we read; a key statement is under 200 bytes.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// How far our clock and the server's may differ (RFC 8945 suggests 300 s).
const FUDGE_SECONDS: u16 = 300;

/// A TSIG key: its name, algorithm and (redacted in `Debug`) secret.
pub struct TsigKey {
    pub name: String,
    pub algorithm: String,
    secret: Zeroizing<Vec<u8>>,
    pub file: PathBuf,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .field("file", &self.file)
            .finish()
    }
}

/// Why a key file cannot be used. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum TsigKeyError {
    #[error("{}: cannot read the TSIG key file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: {problem}; a TSIG key file looks like what `tsig-keygen -a hmac-sha256 NAME` \
         writes: key \"NAME\" {{ algorithm hmac-sha256; secret \"BASE64\"; }};",
        path.display()
    )]
    Syntax { path: PathBuf, problem: String },
    #[error(
        "{}: key \"{name}\" uses {algorithm}, which dkim-sidecar does not sign updates with; \
         make a key with `tsig-keygen -a hmac-sha256 {name}` and allow it on the server",
        path.display()
    )]
    Algorithm {
        path: PathBuf,
        name: String,
        algorithm: String,
    },
}

impl TsigKey {
    /// Reads the one `key` statement of a BIND key file.
    pub fn read(path: &Path) -> Result<TsigKey, TsigKeyError> {
        use std::io::Read as _;
        let read_error = |source| TsigKeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut text = Zeroizing::new(String::new());
        file.take(MAX_KEY_FILE)
            .read_to_string(&mut text)
            .map_err(read_error)?;
        parse(&text, path)
    }

    /// The signer hickory-proto adds the TSIG record with.
    pub fn signer(&self) -> Result<TSigner, String> {
        let name = Name::from_ascii(&self.name)
            .map_err(|e| format!("TSIG key name \"{}\": {e}", self.name))?;
        let algorithm = algorithm(&self.algorithm).ok_or_else(|| {
            format!(
                "TSIG algorithm {} is not supported (use hmac-sha256)",
                self.algorithm
            )
        })?;
        TSigner::new(self.secret.to_vec(), algorithm, name, FUDGE_SECONDS)
            .map_err(|e| format!("TSIG key \"{}\": {e}", self.name))
    }
}

fn algorithm(name: &str) -> Option<TsigAlgorithm> {
    match name.to_ascii_lowercase().trim_end_matches('.') {
        "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Some(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
        _ => None,
    }
}

/// One token of named.conf syntax.
#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Semicolon,
}

/// named.conf's lexical rules: `#`, `//` and `/* */` comments, quoted
/// strings, braces and semicolons.
fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                let mut closed = false;
                for c in chars.by_ref() {
                    if previous == '*' && c == '/' {
                        closed = true;
                        break;
                    }
                    previous = c;
                }
                if !closed {
                    return Err("a /* comment is never closed".to_string());
                }
            }
            '{' => out.push(Token::Open),
            '}' => out.push(Token::Close),
            ';' => out.push(Token::Semicolon),
            '"' => {
                let mut s = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            if let Some(n) = chars.next() {
                                s.push(n);
                            }
                        }
                        c => s.push(c),
                    }
                }
                if !closed {
                    return Err("a quoted string is never closed".to_string());
                }
                out.push(Token::Quoted(s));
            }
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';' | '"') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push(Token::Word(s));
            }
        }
    }
    Ok(out)
}

fn parse(text: &str, path: &Path) -> Result<TsigKey, TsigKeyError> {
    let syntax = |problem: &str| TsigKeyError::Syntax {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    };
    let tokens = tokens(text).map_err(|p| syntax(&p))?;
    let mut keys = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Word(w) if w.eq_ignore_ascii_case("key") => {
                let Some(Token::Quoted(name) | Token::Word(name)) = tokens.get(i + 1) else {
                    return Err(syntax("`key` is not followed by the key's name"));
                };
                let name = name.clone();
                if tokens.get(i + 2) != Some(&Token::Open) {
                    return Err(syntax("the key's name is not followed by `{`"));
                }
                i += 3;
                let mut algorithm = None;
                let mut secret: Option<Zeroizing<String>> = None;
                loop {
                    match tokens.get(i) {
                        Some(Token::Close) => {
                            i += 1;
                            break;
                        }
                        Some(Token::Word(option)) => {
                            let Some(Token::Word(value) | Token::Quoted(value)) = tokens.get(i + 1)
                            else {
                                return Err(syntax(&format!("`{option}` has no value")));
                            };
                            match option.to_ascii_lowercase().as_str() {
                                "algorithm" => algorithm = Some(value.clone()),
                                "secret" => secret = Some(Zeroizing::new(value.clone())),
                                _ => {}
                            }
                            if tokens.get(i + 2) != Some(&Token::Semicolon) {
                                return Err(syntax(&format!("`{option}` does not end with `;`")));
                            }
                            i += 3;
                        }
                        _ => return Err(syntax("the key statement is not closed with `};`")),
                    }
                }
                if tokens.get(i) == Some(&Token::Semicolon) {
                    i += 1;
                }
                keys.push((name, algorithm, secret));
            }
            _ => i += 1,
        }
    }
    let mut keys = keys.into_iter();
    let Some((name, algorithm, secret)) = keys.next() else {
        return Err(syntax("no `key` statement"));
    };
    if keys.next().is_some() {
        return Err(syntax(
            "more than one `key` statement; give rotate a file with only the key it updates with",
        ));
    }
    let algorithm = algorithm.ok_or_else(|| syntax(&format!("key \"{name}\" has no algorithm")))?;
    let secret = secret.ok_or_else(|| syntax(&format!("key \"{name}\" has no secret")))?;
    if self::algorithm(&algorithm).is_none() {
        return Err(TsigKeyError::Algorithm {
            path: path.to_path_buf(),
            name,
            algorithm,
        });
    }
    let bytes: String = secret.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = Zeroizing::new(bytes);
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &*bytes)
        .map_err(|_| syntax(&format!("the secret of key \"{name}\" is not base64")))?;
    if decoded.is_empty() {
        return Err(syntax(&format!("the secret of key \"{name}\" is empty")));
    }
    Ok(TsigKey {
        name,
        algorithm,
        secret: Zeroizing::new(decoded),
        file: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "uD1Ow0cbv8dBQGQGb5F2hXQ1nDaHLyc2mM1RyPQs3ys=";

    fn parsed(text: &str) -> Result<TsigKey, TsigKeyError> {
        parse(text, Path::new("/k.key"))
    }

    #[test]
    fn reads_what_tsig_keygen_writes() {
        let key = parsed(&format!(
            "key \"rotate-key\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET}\";\n}};\n"
        ))
        .unwrap();
        assert_eq!(key.name, "rotate-key");
        assert_eq!(key.algorithm, "hmac-sha256");
        assert_eq!(key.secret.len(), 32);
        assert!(key.signer().is_ok());
    }

    #[test]
    fn comments_and_other_options_are_skipped() {
        let key = parsed(&format!(
            "# made by hand\n// also a comment\n/* and\nthis */ key k.example. {{ \
             algorithm HMAC-SHA512; secret \"{SECRET}\"; }};"
        ))
        .unwrap();
        assert_eq!(key.name, "k.example.");
        assert!(key.signer().is_ok());
    }

    #[test]
    fn the_secret_never_shows_in_debug_or_errors() {
        let key = parsed(&format!(
            "key \"k\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; }};"
        ))
        .unwrap();
        assert!(!format!("{key:?}").contains(SECRET));
        let err = parsed(&format!(
            "key \"k\" {{ algorithm hmac-md5; secret \"{SECRET}\"; }};"
        ))
        .unwrap_err()
        .to_string();
        assert!(!err.contains(SECRET), "{err}");
        assert!(err.contains("tsig-keygen -a hmac-sha256 k"), "{err}");
        let err = parsed("key \"k\" { algorithm hmac-sha256; secret \"not base64!\"; };")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("not base64!"), "{err}");
        assert!(err.contains("is not base64"), "{err}");
    }

    #[test]
    fn broken_files_say_what_is_wrong() {
        for (text, says) in [
            ("", "no `key` statement"),
            ("key \"k\" { algorithm hmac-sha256; };", "has no secret"),
            ("key \"k\" { secret \"AAAA\"; };", "has no algorithm"),
            (
                "key \"k\" { algorithm hmac-sha256 }",
                "does not end with `;`",
            ),
            ("key \"k\" algorithm", "not followed by `{`"),
            (
                "key a { algorithm hmac-sha256; secret \"AAAA\"; }; key b { algorithm hmac-sha256; secret \"AAAA\"; };",
                "more than one",
            ),
        ] {
            let err = parsed(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
            assert!(err.starts_with("/k.key: "), "{err}");
        }
    }
}
