//! The parent domains of a name, as OpenDKIM walks them when it asks a
//! data set about a host or domain (`dkimf_checkhost`, the SigningTable's
//! and BodyLengthDB's probes, Domain with SubDomains): one suffix per dot,
//! longest first, each written with its leading dot.
//!
//! Every such walk in this crate takes its suffixes from here, so that an
//! odd name (a leading or trailing dot) is walked the same way by each.
//! What a caller does with the suffix (drop the dot, skip the name itself,
//! add negations) is its own business.

/// `.b.c` then `.c` for `a.b.c`: every suffix of `name` that starts at a
/// dot, longest first. Nothing is skipped: a leading dot gives the whole
/// name, a trailing one a lone `.`, as OpenDKIM's `strchr` loops give them.
pub fn dotted_suffixes(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('.').map(move |(dot, _)| &name[dot..])
}

/// `b.c` then `c` for `a.b.c`: the parent domains, without their dots and
/// without the empty name a trailing dot would give.
pub fn parent_domains(name: &str) -> impl Iterator<Item = &str> {
    dotted_suffixes(name)
        .map(|suffix| &suffix[1..])
        .filter(|parent| !parent.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_walked_from_each_dot_longest_first() {
        let walk: Vec<_> = dotted_suffixes("mail.example.co.uk").collect();
        assert_eq!(walk, [".example.co.uk", ".co.uk", ".uk"]);
        let parents: Vec<_> = parent_domains("mail.example.co.uk").collect();
        assert_eq!(parents, ["example.co.uk", "co.uk", "uk"]);
    }

    #[test]
    fn a_name_without_a_dot_has_no_parents() {
        assert_eq!(dotted_suffixes("localhost").count(), 0);
        assert_eq!(parent_domains("localhost").count(), 0);
    }

    #[test]
    fn leading_and_trailing_dots_are_walked_as_opendkim_walks_them() {
        let walk: Vec<_> = dotted_suffixes(".example.com.").collect();
        assert_eq!(walk, [".example.com.", ".com.", "."]);
        let parents: Vec<_> = parent_domains(".example.com.").collect();
        assert_eq!(parents, ["example.com.", "com."]);
    }
}
