//! OpenDKIM's `Domain` (and `ExemptDomains`): a set of domain names, or
//! `*` for every domain, optionally covering subdomains.
//!
//! Names are compared as OpenDKIM compares them (`dkimf_db_get` on the
//! lowercased sender domain, case-insensitive): whole, so a trailing dot is
//! part of the name (`alice@example.com.` is not in `Domain example.com`,
//! and `Domain *` signs it as `d=example.com.`).

use std::collections::HashSet;

use crate::tables::parent_domains;

/// A set of domains, compared without regard to case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainSet {
    any: bool,
    names: HashSet<String>,
}

impl DomainSet {
    /// `*` among the names means every domain.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut set = DomainSet::default();
        for name in names {
            let name = name.trim();
            // Senders' domains are compared in A-label form; so are ours.
            let name = if name.is_ascii() {
                name.to_ascii_lowercase()
            } else {
                idna::domain_to_ascii(name).unwrap_or_else(|_| name.to_lowercase())
            };
            if name == "*" {
                set.any = true;
            } else if !name.is_empty() {
                set.names.insert(name);
            }
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        !self.any && self.names.is_empty()
    }

    pub fn is_any(&self) -> bool {
        self.any
    }

    /// The domain a signature for `domain` would use: `domain` itself when
    /// it is listed (or the set is `*`), else, with `subdomains`, the
    /// nearest listed parent.
    pub fn covering(&self, domain: &str, subdomains: bool) -> Option<String> {
        let domain = domain.to_ascii_lowercase();
        if self.any || self.names.contains(&domain) {
            return Some(domain);
        }
        if !subdomains {
            return None;
        }
        parent_domains(&domain)
            .find(|parent| self.names.contains(*parent))
            .map(str::to_string)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internationalised_names_are_kept_in_a_label_form() {
        let set = DomainSet::from_names(["Bücher.example"]);
        assert_eq!(
            set.covering("xn--bcher-kva.example", false).as_deref(),
            Some("xn--bcher-kva.example")
        );
    }

    #[test]
    fn listed_domain_matches_without_regard_to_case() {
        let set = DomainSet::from_names(["Example.COM", "example.net"]);
        assert_eq!(
            set.covering("EXAMPLE.com", false).as_deref(),
            Some("example.com")
        );
        assert_eq!(set.covering("example.org", false), None);
    }

    #[test]
    fn trailing_dot_is_part_of_the_name_as_in_opendkim() {
        let set = DomainSet::from_names(["example.com"]);
        assert_eq!(set.covering("example.com.", false), None);
        assert_eq!(set.covering("example.com.", true), None);
        let star = DomainSet::from_names(["*"]);
        assert_eq!(
            star.covering("Example.COM.", false).as_deref(),
            Some("example.com.")
        );
    }

    #[test]
    fn star_covers_every_domain_as_itself() {
        let set = DomainSet::from_names(["*"]);
        assert_eq!(
            set.covering("Mail.Example.org", false).as_deref(),
            Some("mail.example.org")
        );
    }

    #[test]
    fn subdomains_sign_with_the_nearest_listed_parent() {
        let set = DomainSet::from_names(["example.com", "eu.example.com"]);
        assert_eq!(set.covering("a.b.example.com", false), None);
        assert_eq!(
            set.covering("a.b.example.com", true).as_deref(),
            Some("example.com")
        );
        assert_eq!(
            set.covering("x.eu.example.com", true).as_deref(),
            Some("eu.example.com")
        );
        assert_eq!(set.covering("example.com.evil.org", true), None);
    }
}
