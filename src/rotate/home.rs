//! Where a domain's signing key is configured, and the edits that switch
//! the configuration from one key to another.
//!
//! Two homes are supported:
//! - OpenDKIM tables (KeyTable and SigningTable files, from opendkim.conf
//!   or the native configuration's `[tables]`): activation adds the new
//!   key's KeyTable line under the old one and points the SigningTable
//!   lines that named the old key at the new one ([`Switch::NewEntry`]);
//!   when the SigningTable reaches the key through `%` (the entry named
//!   after the domain), the entry itself gets the new selector and file
//!   ([`Switch::InPlace`]). Retiring removes the old KeyTable line.
//! - A native configuration's `[[key]]`: its `selector` and `file`
//!   values change ([`Switch::InPlace`]).
//!
//! Edits change values, add or remove whole lines, and keep everything
//! else byte for byte: comments, blank lines, layout and line order. This
//! module plans edits; `edit` writes them. It never touches a key's
//! material, and it refuses homes it cannot edit safely (inline keys,
//! `%` domains shared by every sender, `csl:` tables, `refile:` KeyTables,
//! OpenDKIM's single Domain/KeyFile/Selector) with what to change instead.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::config::{Config, Format};
use crate::keys::KeyType;
use crate::policy::TableSource;
use crate::tables::{DataSet, DataSetKind, KeyDomain, KeySource, KeyTable, SigningTable};

use super::edit::{self, LineError, TextFile};
use super::state::{KeyRef, Switch};

/// Where a key is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// A KeyTable line (`line`), and the SigningTable that points at it.
    Tables {
        key_table: PathBuf,
        signing_table: PathBuf,
        line: u32,
    },
    /// A `[[key]]` of the native configuration file.
    TomlKey { config: PathBuf },
}

impl Home {
    /// The files activation edits.
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            Home::Tables {
                key_table,
                signing_table,
                ..
            } => vec![key_table.clone(), signing_table.clone()],
            Home::TomlKey { config } => vec![config.clone()],
        }
    }
}

/// A key that signs for one domain, as the configuration has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredKey {
    pub domain: String,
    /// The KeyTable name (or `[[key]]` name).
    pub key_name: String,
    pub selector: String,
    /// The key file, as the signer opens it.
    pub key_file: PathBuf,
    pub key_type: KeyType,
    pub rsa_bits: Option<u32>,
    pub home: Home,
    /// How activation switches away from this key.
    pub switch: Switch,
}

/// A key rotate cannot rotate, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrotatable {
    /// The domain (or `%`) and where the key is configured.
    pub domain: String,
    pub reason: String,
}

/// Every key of `config` with a fixed domain and a key file, and the ones
/// rotate cannot handle.
pub fn configured_keys(config: &Config) -> (Vec<ConfiguredKey>, Vec<Unrotatable>) {
    let mut keys = Vec::new();
    let mut refused = Vec::new();
    if let Some(domain_key) = &config.policy.signing.domain_key {
        let names: Vec<String> = match &domain_key.domains {
            TableSource::Local(domains) => domains.names().map(str::to_string).collect(),
            TableSource::Remote(set) => vec![format!("(the domains {} lists)", set.describe())],
        };
        for domain in names {
            refused.push(Unrotatable {
                domain: domain.to_ascii_lowercase(),
                reason: format!(
                    "signed with the single Domain/KeyFile/Selector key ({}, selector {}); rotate \
                     switches keys in a KeyTable and SigningTable or in [[key]] entries: move \
                     the key there first",
                    domain_key.key_file.display(),
                    domain_key.selector
                ),
            });
        }
    }
    let Some(tables) = &config.policy.signing.tables else {
        return (keys, refused);
    };
    let toml_inline = config.origin.format == Format::Toml
        && tables.key_table.origin().path.as_ref() == config.origin.path.as_path();
    let signing_origin = tables.signing_table.origin();
    for entry in tables.key_table.entries() {
        let at = &entry.at;
        let KeyDomain::Fixed(domain) = &entry.domain else {
            refused.push(Unrotatable {
                domain: "%".to_string(),
                reason: format!(
                    "{at}: KeyTable entry `{}` signs for every sender's domain (%); to rotate a \
                     domain's key, give that domain an entry of its own (its own selector and \
                     key file) and point its SigningTable lines at it",
                    entry.name
                ),
            });
            continue;
        };
        let domain = domain.to_ascii_lowercase();
        let key_file = match &entry.source {
            KeySource::File(template) => template.resolve(&domain),
            KeySource::RelativeFile(path) => path.clone(),
            KeySource::Inline(_) => {
                refused.push(Unrotatable {
                    domain,
                    reason: format!(
                        "{at}: KeyTable entry `{}` holds the key itself; rotate writes key files: \
                         put the key in a file (mode 0600) and name the file in the KeyTable",
                        entry.name
                    ),
                });
                continue;
            }
        };
        // The first entry of a name is the one that signs.
        if keys
            .iter()
            .any(|k: &ConfiguredKey| k.key_name == entry.name)
        {
            continue;
        }
        let Some(loaded) = tables.keys.loaded_key(&entry.name) else {
            continue;
        };
        let home = if toml_inline {
            Home::TomlKey {
                config: config.origin.path.clone(),
            }
        } else {
            if signing_origin.line != 0 || tables.signing_table.kind() == DataSetKind::Csl {
                refused.push(Unrotatable {
                    domain,
                    reason: format!(
                        "the SigningTable is written inline ({signing_origin}); rotate edits \
                         table files: move it into a file (refile:/path)"
                    ),
                });
                continue;
            }
            Home::Tables {
                key_table: at.path.to_path_buf(),
                signing_table: signing_origin.path.to_path_buf(),
                line: at.line,
            }
        };
        let reached_by_percent = tables
            .signing_table
            .entries()
            .iter()
            .any(|s| s.key_name == "%")
            && entry.name.eq_ignore_ascii_case(&domain);
        let switch = match home {
            Home::TomlKey { .. } => Switch::InPlace,
            Home::Tables { .. } if reached_by_percent => Switch::InPlace,
            Home::Tables { .. } => Switch::NewEntry,
        };
        keys.push(ConfiguredKey {
            domain,
            key_name: entry.name.clone(),
            selector: entry.selector.clone(),
            key_file,
            key_type: loaded.key_type(),
            rsa_bits: loaded.rsa_bits(),
            home,
            switch,
        });
    }
    (keys, refused)
}

/// The KeyTable name for the new key: the old name with its selector
/// label replaced (`default._domainkey.example.com` becomes
/// `s202612._domainkey.example.com`), or `NEW._domainkey.DOMAIN`.
pub fn new_key_name(old: &ConfiguredKey, new_selector: &str, taken: &[String]) -> String {
    let labels: Vec<&str> = old.key_name.split('.').collect();
    let base = if labels.first() == Some(&old.selector.as_str()) && labels.len() > 1 {
        format!("{new_selector}.{}", labels[1..].join("."))
    } else if old.key_name == old.selector {
        new_selector.to_string()
    } else {
        format!("{new_selector}._domainkey.{}", old.domain)
    };
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// The key file name as written, with its last component replaced: the
/// new key lives beside the old one, named however the old one's
/// directory was written (absolute, relative, with `%`).
fn sibling(written: &str, file_name: &str) -> String {
    match written.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{file_name}"),
        None => file_name.to_string(),
    }
}

/// A planned change of one file: the text it has now and the text it
/// gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEdit {
    pub original: TextFile,
    pub new_text: String,
    /// What changes, for the administrator (`KeyTable:4: added ...`).
    pub summary: Vec<String>,
}

/// Why a switch cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    File(#[from] edit::EditError),
    #[error(
        "{}: {source}; the table changed since the configuration was read: run rotate again",
        path.display()
    )]
    Moved {
        path: PathBuf,
        #[source]
        source: LineError,
    },
    #[error("{}: {detail}", path.display())]
    Invalid { path: PathBuf, detail: String },
}

fn moved(path: &Path) -> impl Fn(LineError) -> PlanError + '_ {
    move |source| PlanError::Moved {
        path: path.to_path_buf(),
        source,
    }
}

/// The value of a KeyTable entry with the selector and the file name
/// replaced, the domain and the file's directory kept as written.
fn switched_value(current: &str, new_selector: &str, new_file_name: &str) -> Option<String> {
    let mut parts = current.splitn(3, ':');
    let domain = parts.next()?;
    let _selector = parts.next()?;
    let key = parts.next()?;
    Some(format!(
        "{domain}:{new_selector}:{}",
        sibling(key, new_file_name)
    ))
}

fn value_on_line(text: &str, line: u32) -> Option<&str> {
    let l = text
        .split_inclusive('\n')
        .nth((line as usize).checked_sub(1)?)?;
    let (_, value) = edit::table_line_parts(l)?;
    Some(&l[value?])
}

/// The edits that make `old`'s home sign with `new` (activation).
pub fn plan_activation(old: &ConfiguredKey, new: &KeyRef) -> Result<Vec<FileEdit>, PlanError> {
    let file_name = new
        .key_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match &old.home {
        Home::Tables {
            key_table,
            signing_table,
            line,
        } => {
            let kt = TextFile::read(key_table)?;
            let current = value_on_line(&kt.text, *line).ok_or_else(|| PlanError::Moved {
                path: key_table.clone(),
                source: LineError {
                    line: *line,
                    problem: format!("no longer holds the entry `{}`", old.key_name),
                },
            })?;
            let value = switched_value(current, &new.selector, &file_name).ok_or_else(|| {
                PlanError::Invalid {
                    path: key_table.clone(),
                    detail: format!("line {line}: is not `name domain:selector:keyfile`"),
                }
            })?;
            match old.switch {
                Switch::InPlace => {
                    let text = edit::replace_value(&kt.text, *line, &old.key_name, &value)
                        .map_err(moved(key_table))?;
                    check_key_table(key_table, &text)?;
                    Ok(vec![FileEdit {
                        summary: vec![format!(
                            "{}:{line}: {} now signs with selector {} ({})",
                            key_table.display(),
                            old.key_name,
                            new.selector,
                            new.key_file.display()
                        )],
                        original: kt,
                        new_text: text,
                    }])
                }
                Switch::NewEntry => {
                    let new_line = edit::line_like(&kt.text, *line, &new.key_name, &value);
                    let kt_text = edit::insert_after(&kt.text, *line, &old.key_name, &new_line)
                        .map_err(moved(key_table))?;
                    check_key_table(key_table, &kt_text)?;
                    let st = TextFile::read(signing_table)?;
                    let (st_text, lines) = repoint_signing_table(
                        signing_table,
                        &st.text,
                        &old.key_name,
                        &new.key_name,
                    )?;
                    if lines.is_empty() {
                        return Err(PlanError::Invalid {
                            path: signing_table.clone(),
                            detail: format!(
                                "no line signs with `{}` any more; nothing to switch (was the \
                                 SigningTable edited?)",
                                old.key_name
                            ),
                        });
                    }
                    let mut summary = vec![format!(
                        "{}:{}: added {new_line}",
                        key_table.display(),
                        line + 1
                    )];
                    summary.extend(lines.iter().map(|l| {
                        format!(
                            "{}:{l}: signs with {} instead of {}",
                            signing_table.display(),
                            new.key_name,
                            old.key_name
                        )
                    }));
                    Ok(vec![
                        FileEdit {
                            original: kt,
                            new_text: kt_text,
                            summary: summary[..1].to_vec(),
                        },
                        FileEdit {
                            original: st,
                            new_text: st_text,
                            summary: summary[1..].to_vec(),
                        },
                    ])
                }
            }
        }
        Home::TomlKey { config } => {
            let file = TextFile::read(config)?;
            let text = toml_switch(config, &file.text, &old.key_name, &new.selector, &file_name)?;
            Ok(vec![FileEdit {
                summary: vec![format!(
                    "{}: [[key]] {} now has selector {} and file {}",
                    config.display(),
                    old.key_name,
                    new.selector,
                    new.key_file.display()
                )],
                original: file,
                new_text: text,
            }])
        }
    }
}

/// The edit that removes the old key's KeyTable line once nothing signs
/// with it (retiring a [`Switch::NewEntry`] rotation). `None` when the
/// line is gone already.
pub fn plan_retirement(
    config: &Config,
    old: &KeyRef,
    domain: &str,
) -> Result<Option<FileEdit>, PlanError> {
    let Some(tables) = &config.policy.signing.tables else {
        return Ok(None);
    };
    let Some(entry) = tables.key_table.entries().iter().find(|e| {
        e.name == old.key_name
            && matches!(&e.domain, KeyDomain::Fixed(d) if d.eq_ignore_ascii_case(domain))
            && e.selector == old.selector
    }) else {
        return Ok(None);
    };
    let key_table = entry.at.path.to_path_buf();
    if let Some(user) = tables
        .signing_table
        .entries()
        .iter()
        .find(|s| s.key_name == old.key_name)
    {
        return Err(PlanError::Invalid {
            path: user.at.path.to_path_buf(),
            detail: format!(
                "line {} still signs with `{}`, the key being retired; point it at the new key \
                 (or remove it) and run rotate again",
                user.at.line, old.key_name
            ),
        });
    }
    let kt = TextFile::read(&key_table)?;
    let text =
        edit::remove_line(&kt.text, entry.at.line, &old.key_name).map_err(moved(&key_table))?;
    check_key_table(&key_table, &text)?;
    Ok(Some(FileEdit {
        summary: vec![format!(
            "{}:{}: removed {} (selector {})",
            key_table.display(),
            entry.at.line,
            old.key_name,
            old.selector
        )],
        original: kt,
        new_text: text,
    }))
}

/// Points every SigningTable line whose key is `old` at `new`, keeping a
/// `:signer` suffix. Returns the text and the lines changed.
fn repoint_signing_table(
    path: &Path,
    text: &str,
    old: &str,
    new: &str,
) -> Result<(String, Vec<u32>), PlanError> {
    let mut out = text.to_string();
    let mut changed = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let Some((key, Some(value))) = edit::table_line_parts(line) else {
            continue;
        };
        let value = &line[value];
        let (name, signer) = match value.split_once(':') {
            Some((n, s)) => (n, Some(s)),
            None => (value, None),
        };
        if name != old {
            continue;
        }
        let replacement = match signer {
            Some(s) => format!("{new}:{s}"),
            None => new.to_string(),
        };
        out = edit::replace_value(&out, number, &line[key], &replacement).map_err(moved(path))?;
        changed.push(number);
    }
    let set = DataSet::parse_file_bytes(
        DataSetKind::Refile,
        out.as_bytes(),
        crate::diagnostics::Location::file(path),
    )
    .and_then(SigningTable::from_data_set)
    .map_err(|e| PlanError::Invalid {
        path: path.to_path_buf(),
        detail: format!("the edited SigningTable would not load: {e}"),
    })?;
    drop(set);
    Ok((out, changed))
}

/// The edited KeyTable must still load.
fn check_key_table(path: &Path, text: &str) -> Result<(), PlanError> {
    DataSet::parse_file_bytes(
        DataSetKind::File,
        text.as_bytes(),
        crate::diagnostics::Location::file(path),
    )
    .and_then(KeyTable::from_data_set)
    .map(drop)
    .map_err(|e| PlanError::Invalid {
        path: path.to_path_buf(),
        detail: format!("the edited KeyTable would not load: {e}"),
    })
}

#[derive(Deserialize)]
struct TomlDocument {
    #[serde(default)]
    key: Vec<TomlKey>,
}

#[derive(Deserialize)]
struct TomlKey {
    name: String,
    selector: Spanned<String>,
    file: Spanned<String>,
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The native configuration with the `[[key]]` named `name` switched to
/// `selector` and a file `file_name` beside its old one.
fn toml_switch(
    path: &Path,
    text: &str,
    name: &str,
    selector: &str,
    file_name: &str,
) -> Result<String, PlanError> {
    let invalid = |detail: String| PlanError::Invalid {
        path: path.to_path_buf(),
        detail,
    };
    let document: TomlDocument =
        toml::from_str(text).map_err(|e| invalid(e.message().trim().to_string()))?;
    let key = document
        .key
        .iter()
        .find(|k| k.name == name)
        .ok_or_else(|| invalid(format!("no [[key]] named `{name}` any more")))?;
    let mut edits = [
        (key.selector.span(), toml_string(selector)),
        (
            key.file.span(),
            toml_string(&sibling(key.file.get_ref(), file_name)),
        ),
    ];
    edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
    let mut out = text.to_string();
    for (span, replacement) in edits {
        out.replace_range(span, &replacement);
    }
    // The result must read back as intended.
    let check: TomlDocument = toml::from_str(&out).map_err(|e| {
        invalid(format!(
            "the edited file would not parse ({}); nothing was changed",
            e.message().trim()
        ))
    })?;
    let edited = check.key.iter().find(|k| k.name == name);
    if edited.map(|k| k.selector.get_ref().as_str()) != Some(selector) {
        return Err(invalid(
            "the edit did not come out as planned; nothing was changed".to_string(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, selector: &str, home: Home) -> ConfiguredKey {
        ConfiguredKey {
            domain: "example.com".to_string(),
            key_name: name.to_string(),
            selector: selector.to_string(),
            key_file: PathBuf::from(format!("/k/{selector}.private")),
            key_type: KeyType::Rsa,
            rsa_bits: Some(2048),
            home,
            switch: Switch::NewEntry,
        }
    }

    #[test]
    fn new_names_follow_the_old_ones() {
        let home = Home::TomlKey {
            config: PathBuf::from("/c.toml"),
        };
        let k = key("default._domainkey.example.com", "default", home.clone());
        assert_eq!(
            new_key_name(&k, "s202612", &[]),
            "s202612._domainkey.example.com"
        );
        let k = key("default", "default", home.clone());
        assert_eq!(new_key_name(&k, "s202612", &[]), "s202612");
        let k = key("example-rsa", "default", home);
        assert_eq!(
            new_key_name(
                &k,
                "s202612",
                &["s202612._domainkey.example.com".to_string()]
            ),
            "s202612._domainkey.example.com-2"
        );
    }

    #[test]
    fn values_keep_the_domain_and_directory_as_written() {
        assert_eq!(
            switched_value(
                "Example.COM:default:/etc/keys/%/default.private",
                "s2",
                "s2.private"
            ),
            Some("Example.COM:s2:/etc/keys/%/s2.private".to_string())
        );
        assert_eq!(switched_value("nonsense", "s2", "s2.private"), None);
        assert_eq!(
            sibling("../keys/a.private", "b.private"),
            "../keys/b.private"
        );
    }

    #[test]
    fn signing_table_lines_are_repointed_with_their_signer() {
        let text = "# who signs\n*@example.com default._domainkey.example.com\n\
                    *@example.org other\n\
                    bob@example.com   default._domainkey.example.com:bob@example.com # i=\n";
        let (out, lines) = repoint_signing_table(
            Path::new("/st"),
            text,
            "default._domainkey.example.com",
            "s2._domainkey.example.com",
        )
        .unwrap();
        assert_eq!(lines, vec![2, 4]);
        assert_eq!(
            out,
            "# who signs\n*@example.com s2._domainkey.example.com\n*@example.org other\n\
             bob@example.com   s2._domainkey.example.com:bob@example.com # i=\n"
        );
    }

    #[test]
    fn a_toml_key_gets_its_new_selector_and_file_and_nothing_else_changes() {
        let text = "# signing\n[[key]]\nname = \"rsa\"   # the RSA key\ndomain = \"example.com\"\n\
                    selector = \"default\"\nfile = \"../keys/default.private\"\n\n\
                    [[key]]\nname = \"ed\"\ndomain = \"example.com\"\nselector = \"ed\"\n\
                    file = \"/k/ed.private\"\n";
        let out = toml_switch(
            Path::new("/c.toml"),
            text,
            "rsa",
            "s202612",
            "s202612.private",
        )
        .unwrap();
        assert_eq!(
            out,
            text.replace("\"default\"", "\"s202612\"")
                .replace("default.private", "s202612.private")
        );
        let err = toml_switch(Path::new("/c.toml"), text, "gone", "s", "s.private").unwrap_err();
        assert_eq!(err.to_string(), "/c.toml: no [[key]] named `gone` any more");
    }
}
