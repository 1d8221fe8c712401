//! Data sets kept in a database or a directory: OpenDKIM's `dsn:` (SQL
//! through OpenDBX) and `ldap:`/`ldaps:`/`ldapi:` (RFC 4516 URLs)
//! specifications, parsed as `opendkim-db.c` (`dkimf_db_open`) parses
//! them.
//!
//! - `dsn:BACKEND://[USER[:PASSWORD]@][PORT+]HOST/DATABASE/table=T?keycol=K?datacol=A,B[?filter=EXPR]`:
//!   the authority is cut at `:`, `@`, `+` and `/`; the parameters after
//!   the database are `?`-separated `name=value` pairs (names in any case,
//!   pairs without `=` skipped). A value may hide a punctuation character
//!   as `=XX` (quoted-printable style, `=20` is a space); we decode it
//!   everywhere, OpenDKIM only in `filter`, where it matters.
//! - `ldap://host[:port]/dn?attrs?scope?filter` (several URLs separated by
//!   white space are fallback servers; the first one's DN, attributes,
//!   scope and filter are used for all), `$d` is the key looked up and
//!   `$D` the key as `dc=` components.
//!
//! A password written in a specification is a [`Secret`]: it is kept for
//! the connection and shown as `****` everywhere else ([`RemoteSpec`]'s
//! `Display`, `Debug` and every error this module returns), so that a
//! log line, an error or `check-config` never prints it. This module only
//! parses: it never connects and never logs.

use std::fmt;

use crate::diagnostics::Location;

use super::TableError;

/// What a password is shown as.
pub const MASK: &str = "****";

/// A password: usable for connecting, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The password itself, for the connection only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// The SQL servers OpenDBX reaches that we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlBackend {
    /// `pgsql`: PostgreSQL.
    Postgres,
    /// `mysql`: MySQL and MariaDB.
    Mysql,
    /// `sqlite3`: an SQLite file.
    Sqlite,
}

impl SqlBackend {
    pub fn scheme(self) -> &'static str {
        match self {
            SqlBackend::Postgres => "pgsql",
            SqlBackend::Mysql => "mysql",
            SqlBackend::Sqlite => "sqlite3",
        }
    }

    /// The server's name for people.
    pub fn name(self) -> &'static str {
        match self {
            SqlBackend::Postgres => "PostgreSQL",
            SqlBackend::Mysql => "MySQL/MariaDB",
            SqlBackend::Sqlite => "SQLite",
        }
    }
}

/// A `dsn:` specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnSpec {
    pub backend: SqlBackend,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub port: Option<u16>,
    pub host: String,
    pub database: String,
    pub table: String,
    pub key_column: String,
    /// The data columns, in order; their values are joined with `:` as
    /// OpenDKIM joins a `file:` value's fields.
    pub data_columns: Vec<String>,
    /// SQL ANDed after the key comparison (`WHERE keycol = $1 AND filter`).
    pub filter: Option<String>,
}

impl DsnSpec {
    /// The SQLite file a `dsn:sqlite3://` names, as OpenDBX's sqlite3
    /// backend names it: the host (a directory) with the database name
    /// appended, no separator added. Relative to OpenDKIM's BaseDirectory.
    pub fn sqlite_file(&self) -> String {
        format!("{}{}", self.host, self.database)
    }
}

/// How deep an LDAP search goes (RFC 4516's scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdapScope {
    Base,
    One,
    Sub,
}

impl LdapScope {
    fn word(self) -> &'static str {
        match self {
            LdapScope::Base => "base",
            LdapScope::One => "one",
            LdapScope::Sub => "sub",
        }
    }
}

/// The transport of an LDAP URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdapScheme {
    Ldap,
    Ldaps,
    /// A local socket (`ldapi://%2Fpath%2Fto%2Fsocket`).
    Ldapi,
}

impl LdapScheme {
    fn word(self) -> &'static str {
        match self {
            LdapScheme::Ldap => "ldap",
            LdapScheme::Ldaps => "ldaps",
            LdapScheme::Ldapi => "ldapi",
        }
    }
}

/// One server of an `ldap:` data set: the URL as the client library takes
/// it (`ldap://host:port`, `ldapi://%2Frun%2Fslapd%2Fldapi`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapServer {
    pub scheme: LdapScheme,
    /// Host and port, or the percent-encoded socket path for `ldapi`.
    pub authority: String,
}

impl LdapServer {
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme.word(), self.authority)
    }
}

/// An `ldap:` specification: fallback servers and one search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapSpec {
    pub servers: Vec<LdapServer>,
    /// The search base, with `$d`/`$D` still in it.
    pub base: String,
    pub attributes: Vec<String>,
    pub scope: LdapScope,
    /// The filter, with `$d`/`$D` still in it.
    pub filter: String,
}

/// A data set read from a server at message time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteSpec {
    Dsn(DsnSpec),
    Ldap(LdapSpec),
}

impl RemoteSpec {
    /// The kind of server, for logs, metrics and `check-config`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            RemoteSpec::Dsn(dsn) => dsn.backend.name(),
            RemoteSpec::Ldap(_) => "LDAP",
        }
    }

    /// Parses `dsn:...` or `ldap...://...` written at `at`. `kind` is the
    /// type prefix as written and `rest` what follows its `:`.
    pub(crate) fn parse(kind: &str, rest: &str, at: &Location) -> Result<RemoteSpec, TableError> {
        match kind.to_ascii_lowercase().as_str() {
            "dsn" => parse_dsn(rest, at).map(RemoteSpec::Dsn),
            _ => parse_ldap(&format!("{kind}:{rest}"), at).map(RemoteSpec::Ldap),
        }
    }
}

impl fmt::Display for DsnSpec {
    /// The specification as written, with the password masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dsn:{}://", self.backend.scheme())?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if self.password.is_some() {
                write!(f, ":{MASK}")?;
            }
            f.write_str("@")?;
        }
        if let Some(port) = self.port {
            write!(f, "{port}+")?;
        }
        write!(
            f,
            "{}/{}/table={}?keycol={}?datacol={}",
            self.host,
            self.database,
            self.table,
            self.key_column,
            self.data_columns.join(",")
        )?;
        if let Some(filter) = &self.filter {
            write!(f, "?filter={filter}")?;
        }
        Ok(())
    }
}

impl fmt::Display for LdapSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, server) in self.servers.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(
                f,
                "{}/{}?{}?{}?{}",
                server.url(),
                self.base,
                self.attributes.join(","),
                self.scope.word(),
                self.filter
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for RemoteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteSpec::Dsn(dsn) => dsn.fmt(f),
            RemoteSpec::Ldap(ldap) => ldap.fmt(f),
        }
    }
}

/// `spec` with any password it holds replaced by [`MASK`], for messages
/// about a specification that could not be parsed. Masks `USER:PASSWORD@`
/// in a `dsn:` authority and `userinfo@` in any URL.
///
/// A specification that does not parse may not split where a good one
/// does (a `/` or `@` written unescaped in the password, or a `#` that
/// opendkim.conf took for a comment and cut the line at), so in a `dsn:`,
/// where `:` is used only between user and password, everything from the
/// first `:` after `://` to the last `@` is masked, or to the end when no
/// `@` follows.
pub fn mask_secrets(spec: &str) -> String {
    let Some(scheme_end) = spec.find("://") else {
        return spec.to_string();
    };
    let authority_start = scheme_end + 3;
    if spec
        .get(..4)
        .is_some_and(|k| k.eq_ignore_ascii_case("dsn:"))
    {
        let rest = &spec[authority_start..];
        let Some(colon) = rest.find(':') else {
            return spec.to_string();
        };
        let user_end = authority_start + colon;
        return match rest[colon..].rfind('@') {
            Some(at) => format!("{}:{MASK}{}", &spec[..user_end], &spec[user_end + at..]),
            None => format!("{}:{MASK}", &spec[..user_end]),
        };
    }
    let rest = &spec[authority_start..];
    let authority_len = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return spec.to_string();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    if user.len() == userinfo.len() {
        return spec.to_string();
    }
    format!(
        "{}{user}:{MASK}{}",
        &spec[..authority_start],
        &spec[authority_start + at..]
    )
}

fn bad(at: &Location, spec: &str, reason: impl Into<String>) -> TableError {
    TableError::BadRemoteSpec {
        at: at.clone(),
        spec: mask_secrets(spec),
        reason: reason.into(),
    }
}

/// `=XX` hex escapes decoded (OpenDKIM's quoted-printable style).
fn decode_escapes(text: &str) -> String {
    decode_hex_escapes(text, b'=')
}

/// `marker` followed by two hex digits stands for that byte; anything
/// else, a lone marker included, stands for itself.
fn decode_hex_escapes(text: &str, marker: u8) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i] == marker, hex(i + 1), hex(i + 2)) {
            (true, Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The next authority delimiter (`:`, `/`, `@`, `+`, `?`, or an `=` that
/// does not start an escape), as `dkimf_db_nextpunct`.
fn next_punct(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().position(|(i, &b)| {
        matches!(b, b':' | b'/' | b'@' | b'+' | b'?')
            || (b == b'='
                && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)))
    })
}

fn parse_dsn(rest: &str, at: &Location) -> Result<DsnSpec, TableError> {
    let spec = format!("dsn:{rest}");
    let Some((scheme, after)) = rest.split_once("://") else {
        return Err(bad(
            at,
            &spec,
            "expected `dsn:BACKEND://[USER[:PASSWORD]@][PORT+]HOST/DATABASE/table=T?keycol=K?datacol=D`",
        ));
    };
    let backend = match scheme.to_ascii_lowercase().as_str() {
        "pgsql" | "postgresql" | "postgres" => SqlBackend::Postgres,
        "mysql" | "mariadb" => SqlBackend::Mysql,
        "sqlite3" | "sqlite" => SqlBackend::Sqlite,
        other => {
            return Err(bad(
                at,
                &spec,
                format!(
                    "unknown backend `{other}`; the backends are `pgsql`, `mysql` and `sqlite3`"
                ),
            ));
        }
    };
    let mut user: Option<String> = None;
    let mut password: Option<Secret> = None;
    let mut port: Option<String> = None;
    let mut host: Option<String> = None;
    let mut database: Option<String> = None;
    let mut q = after;
    while database.is_none() {
        let Some(p) = next_punct(q) else { break };
        let part = &q[..p];
        match q.as_bytes()[p] {
            b':' => {
                if user.is_some() {
                    return Err(bad(at, &spec, "more than one `:` before the host"));
                }
                user = Some(decode_escapes(part));
            }
            b'@' => {
                if user.is_none() {
                    user = Some(decode_escapes(part));
                } else {
                    password = Some(Secret::new(decode_escapes(part)));
                }
            }
            b'+' => port = Some(part.to_string()),
            b'/' => {
                if host.is_none() {
                    host = Some(decode_escapes(part));
                } else {
                    database = Some(decode_escapes(part));
                }
            }
            c => {
                return Err(bad(
                    at,
                    &spec,
                    format!(
                        "unexpected `{}` in the server part; write it as `={:02X}`",
                        c as char, c
                    ),
                ));
            }
        }
        q = &q[p + 1..];
    }
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Err(bad(at, &spec, "no host (the part before the first `/`)"));
    };
    let Some(database) = database else {
        return Err(bad(
            at,
            &spec,
            "no database (write `HOST/DATABASE/table=...`)",
        ));
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().map_err(|_| {
            bad(
                at,
                &spec,
                format!("port `{p}` is not a number from 1 to 65535"),
            )
        })?),
    };
    let (mut table, mut key_column, mut data, mut filter) = (None, None, None, None);
    for pair in q.split('?') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        let value = decode_escapes(value);
        match name.to_ascii_lowercase().as_str() {
            "table" => table = Some(value),
            "keycol" => key_column = Some(value),
            "datacol" => data = Some(value),
            "filter" => filter = Some(value),
            _ => {}
        }
    }
    let need = |value: Option<String>, name: &str| {
        value.filter(|v| !v.is_empty()).ok_or_else(|| {
            bad(
                at,
                &spec,
                format!("`{name}=` is missing; `table`, `keycol` and `datacol` are required"),
            )
        })
    };
    let table = need(table, "table")?;
    let key_column = need(key_column, "keycol")?;
    let data = need(data, "datacol")?;
    let data_columns: Vec<String> = data.split(',').map(|c| c.trim().to_string()).collect();
    for name in std::iter::once(&table)
        .chain(std::iter::once(&key_column))
        .chain(&data_columns)
    {
        if !is_sql_identifier(name) {
            return Err(bad(
                at,
                &spec,
                format!(
                    "`{name}` is not a plain table or column name (letters, digits, `_`, `$` and \
                     `.`, not starting with a digit)"
                ),
            ));
        }
    }
    Ok(DsnSpec {
        backend,
        user: user.filter(|u| !u.is_empty()),
        password: password.filter(|p| !p.expose().is_empty()),
        port,
        host,
        database,
        table,
        key_column,
        data_columns,
        filter: filter.filter(|f| !f.trim().is_empty()),
    })
}

/// Names pasted into SQL must be plain identifiers: the key itself is
/// always a bound parameter, and a name cannot be.
fn is_sql_identifier(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.'))
}

fn parse_ldap(spec: &str, at: &Location) -> Result<LdapSpec, TableError> {
    let mut servers = Vec::new();
    let mut first: Option<(String, Vec<String>, LdapScope, String)> = None;
    for url in spec.split([' ', '\t']).filter(|u| !u.is_empty()) {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad(
                at,
                spec,
                format!("`{}` is not an LDAP URL", mask_secrets(url)),
            ));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "ldap" => LdapScheme::Ldap,
            "ldaps" => LdapScheme::Ldaps,
            "ldapi" => LdapScheme::Ldapi,
            other => {
                return Err(bad(
                    at,
                    spec,
                    format!("`{other}://` is not an LDAP scheme (ldap, ldaps, ldapi)"),
                ));
            }
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(bad(
                at,
                spec,
                "an LDAP URL carries no user or password; use LDAPBindUser and LDAPBindPassword",
            ));
        }
        servers.push(LdapServer {
            scheme,
            authority: authority.to_string(),
        });
        if first.is_none() {
            let mut parts = path.splitn(5, '?');
            let base = percent_decode(parts.next().unwrap_or(""));
            let attributes: Vec<String> = parts
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|a| !a.is_empty())
                .map(percent_decode)
                .collect();
            let scope = match parts.next().unwrap_or("").to_ascii_lowercase().as_str() {
                "" | "base" => LdapScope::Base,
                "one" | "onelevel" => LdapScope::One,
                "sub" | "subtree" => LdapScope::Sub,
                other => {
                    return Err(bad(
                        at,
                        spec,
                        format!("unknown scope `{other}` (base, one or sub)"),
                    ));
                }
            };
            let filter = match parts.next().map(percent_decode) {
                Some(f) if !f.is_empty() => f,
                _ => "(objectClass=*)".to_string(),
            };
            if attributes.is_empty() {
                return Err(bad(
                    at,
                    spec,
                    "no attribute to return; write `ldap://host/BASE?ATTRIBUTE?sub?(FILTER=$d)`",
                ));
            }
            first = Some((base, attributes, scope, filter));
        }
    }
    let Some((base, attributes, scope, filter)) = first else {
        return Err(bad(at, spec, "no LDAP URL"));
    };
    Ok(LdapSpec {
        servers,
        base,
        attributes,
        scope,
        filter,
    })
}

/// RFC 3986 percent-decoding (an LDAP URL's DN and filter).
fn percent_decode(text: &str) -> String {
    decode_hex_escapes(text, b'%')
}

impl LdapSpec {
    /// The search base and filter for `key`: `$d` is the key, `$D` the key
    /// as `dc=` components; in the filter both are escaped as RFC 4515
    /// wants (so a key like `*)(uid=*` matches only itself), in the base
    /// as RFC 4514 wants.
    pub fn query_for(&self, key: &str) -> (String, String) {
        (
            substitute(&self.base, key, escape_dn_value),
            substitute(&self.filter, key, escape_filter_value),
        )
    }
}

fn substitute(template: &str, key: &str, escape: fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + key.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            match chars.peek() {
                Some('d') => {
                    chars.next();
                    out.push_str(&escape(key));
                    continue;
                }
                Some('D') => {
                    chars.next();
                    let dcs: Vec<String> = key
                        .split('.')
                        .map(|label| format!("dc={}", escape(label)))
                        .collect();
                    out.push_str(&dcs.join(","));
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

/// RFC 4515 section 3: `*`, `(`, `)`, `\` and NUL as `\XX`.
pub fn escape_filter_value(value: &str) -> String {
    let mut bytes = Vec::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'*' | b'(' | b')' | b'\\' | 0 => bytes.extend(format!("\\{b:02x}").bytes()),
            _ => bytes.push(b),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// RFC 4514 section 2.4: the special characters of a DN value escaped.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' | '\0')
            || (i == 0 && matches!(c, ' ' | '#'))
            || (i + 1 == value.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Location {
        Location::new("/etc/opendkim.conf", 4)
    }

    fn dsn(rest: &str) -> Result<DsnSpec, TableError> {
        parse_dsn(rest, &at())
    }

    #[test]
    fn full_dsn_is_split_into_its_parts() {
        let d = dsn("pgsql://dkim:s3cret@5433+db.example/mail/table=keys?keycol=name?datacol=domain,selector,key?filter=active=3Dtrue").unwrap();
        assert_eq!(d.backend, SqlBackend::Postgres);
        assert_eq!(d.user.as_deref(), Some("dkim"));
        assert_eq!(d.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(d.port, Some(5433));
        assert_eq!(d.host, "db.example");
        assert_eq!(d.database, "mail");
        assert_eq!(d.table, "keys");
        assert_eq!(d.key_column, "name");
        assert_eq!(d.data_columns, ["domain", "selector", "key"]);
        assert_eq!(d.filter.as_deref(), Some("active=true"));
    }

    #[test]
    fn dsn_without_user_or_port_uses_defaults() {
        let d = dsn("mysql://localhost/mail/table=st?keycol=addr?datacol=keyname").unwrap();
        assert_eq!(d.backend, SqlBackend::Mysql);
        assert_eq!(d.user, None);
        assert_eq!(d.password, None);
        assert_eq!(d.port, None);
        assert_eq!(d.host, "localhost");
    }

    #[test]
    fn quoted_printable_escapes_are_decoded() {
        let d = dsn("pgsql://u:p=40ss=3Aw=2Fd@h/db/table=t?keycol=k?datacol=v?filter=x=20=3D=201")
            .unwrap();
        assert_eq!(d.password.unwrap().expose(), "p@ss:w/d");
        assert_eq!(d.filter.as_deref(), Some("x = 1"));
    }

    #[test]
    fn an_sqlite_file_is_host_and_database_joined_as_opendbx_joins_them() {
        let d = dsn("sqlite3://data/keys.db/table=t?keycol=k?datacol=v").unwrap();
        assert_eq!(d.backend, SqlBackend::Sqlite);
        assert_eq!(d.sqlite_file(), "datakeys.db");
        let d = dsn("sqlite3://=2Fvar=2Flib=2Fdkim=2F/keys.db/table=t?keycol=k?datacol=v").unwrap();
        assert_eq!(d.sqlite_file(), "/var/lib/dkim/keys.db");
    }

    #[test]
    fn dsn_parameter_names_are_case_insensitive_and_order_free() {
        let d = dsn("pgsql://h/db/DATACOL=v?Table=t?KEYCOL=k").unwrap();
        assert_eq!((d.table.as_str(), d.key_column.as_str()), ("t", "k"));
    }

    #[test]
    fn dsn_missing_a_required_parameter_is_refused() {
        for rest in [
            "pgsql://h/db/table=t?keycol=k",
            "pgsql://h/db/keycol=k?datacol=v",
            "pgsql://h/db/table=t?datacol=v",
            "pgsql://h/table=t?keycol=k?datacol=v",
            "pgsql:/h/db/table=t?keycol=k?datacol=v",
            "oracle://h/db/table=t?keycol=k?datacol=v",
            "pgsql://99999+h/db/table=t?keycol=k?datacol=v",
        ] {
            let err = dsn(rest).unwrap_err();
            assert!(
                matches!(err, TableError::BadRemoteSpec { .. }),
                "{rest}: {err}"
            );
            assert!(
                err.to_string().starts_with("/etc/opendkim.conf:4: "),
                "{err}"
            );
        }
    }

    #[test]
    fn column_names_that_are_not_identifiers_are_refused() {
        let err = dsn("pgsql://h/db/table=t;drop?keycol=k?datacol=v").unwrap_err();
        assert!(err.to_string().contains("t;drop"), "{err}");
    }

    #[test]
    fn display_masks_the_password() {
        let d = dsn("pgsql://dkim:hunter2@5432+h/db/table=t?keycol=k?datacol=a,b").unwrap();
        let shown = d.to_string();
        assert_eq!(
            shown,
            "dsn:pgsql://dkim:****@5432+h/db/table=t?keycol=k?datacol=a,b"
        );
        assert!(!format!("{d:?}").contains("hunter2"));
    }

    #[test]
    fn errors_about_a_bad_dsn_mask_the_password() {
        let err = dsn("pgsql://dkim:hunter2@h/db/table=t?keycol=k").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("dkim:****@h"), "{text}");
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[test]
    fn mask_secrets_leaves_specifications_without_password_alone() {
        assert_eq!(mask_secrets("file:/etc/kt"), "file:/etc/kt");
        assert_eq!(mask_secrets("dsn:pgsql://u@h/d"), "dsn:pgsql://u@h/d");
        assert_eq!(
            mask_secrets("dsn:pgsql://u:pw@h/d"),
            "dsn:pgsql://u:****@h/d"
        );
    }

    #[test]
    fn mask_secrets_masks_a_password_that_breaks_the_syntax() {
        // A `/` or `@` written unescaped in the password.
        assert_eq!(
            mask_secrets("dsn:pgsql://u:pa/ss@5432+h/d/table=t"),
            "dsn:pgsql://u:****@5432+h/d/table=t"
        );
        assert_eq!(
            mask_secrets("dsn:pgsql://u:p@ss@h/d"),
            "dsn:pgsql://u:****@h/d"
        );
        // Cut short by a `#` that opendkim.conf took for a comment.
        assert_eq!(mask_secrets("dsn:pgsql://u:pa"), "dsn:pgsql://u:****");
        assert_eq!(
            mask_secrets("ldap://cn=x:pw@h/dc=x"),
            "ldap://cn=x:****@h/dc=x"
        );
    }

    #[test]
    fn ldap_url_is_split_into_base_attributes_scope_and_filter() {
        let l = parse_ldap(
            "ldap://192.0.2.1/ou=people,dc=example,dc=com?DKIMSelector?sub?(DKIMIdentity=$d)",
            &at(),
        )
        .unwrap();
        assert_eq!(l.servers[0].url(), "ldap://192.0.2.1");
        assert_eq!(l.base, "ou=people,dc=example,dc=com");
        assert_eq!(l.attributes, ["DKIMSelector"]);
        assert_eq!(l.scope, LdapScope::Sub);
        assert_eq!(l.filter, "(DKIMIdentity=$d)");
    }

    #[test]
    fn several_ldap_urls_are_fallback_servers() {
        let l = parse_ldap(
            "ldap://a.example:3389/dc=x?k?one?(c=$d) ldaps://b.example/dc=y ldapi://%2Frun%2Fslapd%2Fldapi",
            &at(),
        )
        .unwrap();
        let urls: Vec<String> = l.servers.iter().map(LdapServer::url).collect();
        assert_eq!(
            urls,
            [
                "ldap://a.example:3389",
                "ldaps://b.example",
                "ldapi://%2Frun%2Fslapd%2Fldapi"
            ]
        );
        assert_eq!(l.base, "dc=x");
        assert_eq!(l.scope, LdapScope::One);
    }

    #[test]
    fn ldap_substitution_escapes_the_key() {
        let l = parse_ldap("ldap://h/$D?a?sub?(mail=$d)", &at()).unwrap();
        let (base, filter) = l.query_for("example.com");
        assert_eq!(base, "dc=example,dc=com");
        assert_eq!(filter, "(mail=example.com)");
        let (_, filter) = l.query_for("*)(uid=*");
        assert_eq!(filter, "(mail=\\2a\\29\\28uid=\\2a)");
    }

    #[test]
    fn ldap_url_with_credentials_is_refused_without_showing_them() {
        let err = parse_ldap("ldap://cn=admin:pw123@h/dc=x?a", &at()).unwrap_err();
        assert!(!err.to_string().contains("pw123"), "{err}");
    }
}
