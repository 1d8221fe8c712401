//! OpenDKIM's header field lists (SignHeaders, OmitHeaders), read as
//! `dkimf_db_mkarray` reads them (`opendkim-db.c`), which the native
//! format reuses so that both say the same thing the same way:
//!
//! - a list without a `*` entry replaces the default list;
//! - a list with an entry that is exactly `*` is a change to the default:
//!   every `-name` entry removes `name` from it, every `+name` entry adds
//!   `name`, and any other entry is ignored (OpenDKIM ignores it too);
//! - names are compared without regard to case, and a `*` inside a name
//!   (`X-*`, or `+*` for every field) is a wildcard: libopendkim builds a
//!   regular expression from the list in which `*` becomes `.*`.
//!
//! OversignHeaders and SenderHeaders take no default and so no `*` delta:
//! their entries are plain names. This module only computes lists.

use crate::diagnostics::{Location, Warning};

/// The list `entries` describes, given the `default` it may modify.
/// Entries that OpenDKIM ignores come back as warnings.
pub(crate) fn with_default(
    option: &str,
    entries: &[(String, Location)],
    default: &[&str],
) -> (Vec<String>, Vec<Warning>) {
    let mut warnings = Vec::new();
    if !entries.iter().any(|(e, _)| e == "*") {
        let names = entries
            .iter()
            .map(|(e, _)| e.to_ascii_lowercase())
            .collect();
        return (names, warnings);
    }
    let removed: Vec<String> = entries
        .iter()
        .filter_map(|(e, _)| e.strip_prefix('-'))
        .map(str::to_ascii_lowercase)
        .collect();
    let mut names: Vec<String> = default
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .filter(|d| !removed.contains(d))
        .collect();
    for (entry, at) in entries {
        if let Some(added) = entry.strip_prefix('+') {
            let added = added.to_ascii_lowercase();
            if !added.is_empty() && !names.contains(&added) {
                names.push(added);
            }
        } else if entry != "*" && !entry.starts_with('-') {
            warnings.push(Warning::new(
                Some(at.clone()),
                format!(
                    "{option} entry `{entry}` is ignored: a list containing `*` changes the default \
                     list, so each other entry must be `+name` (add) or `-name` (remove), as in \
                     OpenDKIM. Write `+{entry}` to add it"
                ),
            ));
        }
    }
    (names, warnings)
}

/// A list of plain names (OversignHeaders): wildcards and `+`/`-` mean
/// nothing there, so such entries are dropped with a warning.
pub(crate) fn plain(option: &str, entries: &[(String, Location)]) -> (Vec<String>, Vec<Warning>) {
    let mut names = Vec::new();
    let mut warnings = Vec::new();
    for (entry, at) in entries {
        if entry.contains('*') || entry.starts_with(['+', '-']) {
            warnings.push(Warning::new(
                Some(at.clone()),
                format!(
                    "{option} entry `{entry}` is ignored: {option} takes plain header field names \
                     (no `*`, `+` or `-`)"
                ),
            ));
        } else {
            names.push(entry.to_ascii_lowercase());
        }
    }
    (names, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[&str]) -> Vec<(String, Location)> {
        list.iter()
            .map(|e| (e.to_string(), Location::new("/etc/opendkim.conf", 4)))
            .collect()
    }

    const DEFAULT: &[&str] = &["from", "to", "subject", "bcc"];

    #[test]
    fn list_without_star_replaces_the_default() {
        let (names, warnings) =
            with_default("SignHeaders", &entries(&["From", "X-Mailer"]), DEFAULT);
        assert_eq!(names, ["from", "x-mailer"]);
        assert!(warnings.is_empty());
    }

    #[test]
    fn star_makes_the_list_a_change_to_the_default() {
        let (names, warnings) = with_default(
            "OmitHeaders",
            &entries(&["*", "-Bcc", "+foobar", "+X-*"]),
            DEFAULT,
        );
        assert_eq!(names, ["from", "to", "subject", "foobar", "x-*"]);
        assert!(warnings.is_empty());
    }

    #[test]
    fn plain_entry_beside_star_is_ignored_with_a_warning() {
        let (names, warnings) = with_default("SignHeaders", &entries(&["*", "X-Mailer"]), DEFAULT);
        assert_eq!(names, DEFAULT);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0]
                .to_string()
                .starts_with("/etc/opendkim.conf:4: ")
        );
        assert!(warnings[0].message.contains("+X-Mailer"));
    }

    #[test]
    fn oversign_list_drops_wildcards_with_a_warning() {
        let (names, warnings) = plain("OverSignHeaders", &entries(&["From", "*", "+To"]));
        assert_eq!(names, ["from"]);
        assert_eq!(warnings.len(), 2);
    }
}
