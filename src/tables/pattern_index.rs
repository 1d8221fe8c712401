//! An index over a list of refile patterns that answers "which pattern
//! matches first, in file order" (and "which ones match, in file order")
//! without trying every pattern.
//!
//! Each pattern goes into exactly one place:
//! - no `*` at all: a hash map keyed by the literal text;
//! - ends with literal text after its last `*` (`*@example.com`,
//!   `*@*.example.com`, `sales*@example.com`): a map keyed by that suffix;
//! - otherwise starts with literal text (`postmaster@*`): a map keyed by
//!   that prefix;
//! - starts and ends with `*` (`*`, `*@*`), or uses regex operators: a
//!   short list that is scanned.
//!
//! A lookup probes the exact map once, the suffix and prefix maps once per
//! distinct key length that fits, verifies each candidate with the full
//! matcher, and merges by file position: buckets are sorted by position,
//! and a candidate later than the best match so far is never examined.
//! Because every pattern is reachable from the probes that its own literal
//! text guarantees, the result is exactly that of a linear scan in file
//! order (a property test checks this).

use std::collections::HashMap;

use super::pattern::Pattern;

/// Positions of patterns sharing an index key, ascending.
type Bucket = Vec<u32>;

#[derive(Debug, Clone, Default)]
pub struct PatternIndex {
    exact: HashMap<Box<[u8]>, Bucket>,
    by_suffix: HashMap<Box<[u8]>, Bucket>,
    suffix_lens: Vec<usize>,
    by_prefix: HashMap<Box<[u8]>, Bucket>,
    prefix_lens: Vec<usize>,
    scan: Bucket,
}

impl PatternIndex {
    /// Indexes `patterns`; positions in the slice are the file order.
    pub fn build(patterns: &[Pattern]) -> PatternIndex {
        let mut index = PatternIndex::default();
        for (position, pattern) in patterns.iter().enumerate() {
            let position = u32::try_from(position).expect("more than 4 billion patterns");
            if let Some(literal) = pattern.literal() {
                index
                    .exact
                    .entry(literal.into())
                    .or_default()
                    .push(position);
            } else if let Some(suffix) = pattern.literal_suffix().filter(|s| !s.is_empty()) {
                index
                    .by_suffix
                    .entry(suffix.into())
                    .or_default()
                    .push(position);
            } else if let Some(prefix) = pattern.literal_prefix().filter(|p| !p.is_empty()) {
                index
                    .by_prefix
                    .entry(prefix.into())
                    .or_default()
                    .push(position);
            } else {
                index.scan.push(position);
            }
        }
        index.suffix_lens = distinct_lengths(index.by_suffix.keys());
        index.prefix_lens = distinct_lengths(index.by_prefix.keys());
        index
    }

    /// The position of the first pattern (in file order) matching `query`.
    /// `query` is lowercased when the patterns are case-insensitive.
    pub fn first_match(&self, patterns: &[Pattern], query: &[u8]) -> Option<usize> {
        let mut best = u32::MAX;
        if let Some(bucket) = self.exact.get(query) {
            best = bucket[0];
        }
        let len = query.len();
        for &n in &self.suffix_lens {
            if n > len {
                break;
            }
            if let Some(bucket) = self.by_suffix.get(&query[len - n..]) {
                best = first_in_bucket(bucket, best, patterns, query);
            }
        }
        for &n in &self.prefix_lens {
            if n > len {
                break;
            }
            if let Some(bucket) = self.by_prefix.get(&query[..n]) {
                best = first_in_bucket(bucket, best, patterns, query);
            }
        }
        best = first_in_bucket(&self.scan, best, patterns, query);
        (best != u32::MAX).then_some(best as usize)
    }

    /// The positions of every pattern matching `query`, in file order.
    pub fn all_matches(&self, patterns: &[Pattern], query: &[u8]) -> Vec<usize> {
        let mut found: Vec<u32> = Vec::new();
        if let Some(bucket) = self.exact.get(query) {
            found.extend_from_slice(bucket);
        }
        let len = query.len();
        let verify = |bucket: &Bucket, found: &mut Vec<u32>| {
            found.extend(
                bucket
                    .iter()
                    .copied()
                    .filter(|&i| patterns[i as usize].matches(query)),
            );
        };
        for &n in &self.suffix_lens {
            if n > len {
                break;
            }
            if let Some(bucket) = self.by_suffix.get(&query[len - n..]) {
                verify(bucket, &mut found);
            }
        }
        for &n in &self.prefix_lens {
            if n > len {
                break;
            }
            if let Some(bucket) = self.by_prefix.get(&query[..n]) {
                verify(bucket, &mut found);
            }
        }
        verify(&self.scan, &mut found);
        found.sort_unstable();
        found.into_iter().map(|i| i as usize).collect()
    }

    /// How many patterns fall back to being scanned on every lookup.
    pub fn scanned(&self) -> usize {
        self.scan.len()
    }
}

fn first_in_bucket(bucket: &Bucket, best: u32, patterns: &[Pattern], query: &[u8]) -> u32 {
    for &i in bucket {
        if i >= best {
            break;
        }
        if patterns[i as usize].matches(query) {
            return i;
        }
    }
    best
}

fn distinct_lengths<'a>(keys: impl Iterator<Item = &'a Box<[u8]>>) -> Vec<usize> {
    let mut lens: Vec<usize> = keys.map(|k| k.len()).collect();
    lens.sort_unstable();
    lens.dedup();
    lens
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn compile(sources: &[String]) -> Vec<Pattern> {
        sources
            .iter()
            .map(|s| Pattern::compile(s, true).unwrap())
            .collect()
    }

    fn linear_first(patterns: &[Pattern], q: &[u8]) -> Option<usize> {
        patterns.iter().position(|p| p.matches(q))
    }

    fn linear_all(patterns: &[Pattern], q: &[u8]) -> Vec<usize> {
        (0..patterns.len())
            .filter(|&i| patterns[i].matches(q))
            .collect()
    }

    #[test]
    fn refile_first_match_in_file_order_wins() {
        let sources: Vec<String> = ["*", "*@example.com", "bob@example.com"]
            .map(String::from)
            .to_vec();
        let patterns = compile(&sources);
        let index = PatternIndex::build(&patterns);
        assert_eq!(index.first_match(&patterns, b"bob@example.com"), Some(0));
        let sources: Vec<String> = ["bob@example.com", "*@example.com", "*"]
            .map(String::from)
            .to_vec();
        let patterns = compile(&sources);
        let index = PatternIndex::build(&patterns);
        assert_eq!(index.first_match(&patterns, b"bob@example.com"), Some(0));
        assert_eq!(index.first_match(&patterns, b"eve@example.com"), Some(1));
        assert_eq!(index.first_match(&patterns, b"eve@example.org"), Some(2));
        assert_eq!(
            index.all_matches(&patterns, b"bob@example.com"),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn each_shape_lands_in_its_index() {
        let sources: Vec<String> = ["a@b", "*@b", "a@*", "*", "*x*", "q?x"]
            .map(String::from)
            .to_vec();
        let patterns = compile(&sources);
        let index = PatternIndex::build(&patterns);
        assert_eq!(index.exact.len(), 1);
        assert_eq!(index.by_suffix.len(), 1);
        assert_eq!(index.by_prefix.len(), 1);
        assert_eq!(index.scanned(), 3);
    }

    /// Patterns over a small alphabet so that random queries often match.
    fn pattern_source() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                4 => Just("*"),
                3 => Just("a"),
                3 => Just("b"),
                3 => Just("@"),
                3 => Just("."),
                1 => Just("A"),
                1 => Just("ab"),
                1 => Just("example"),
            ],
            0..7,
        )
        .prop_map(|parts| parts.concat())
    }

    fn query() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("a"),
                Just("b"),
                Just("@"),
                Just("."),
                Just("example"),
                Just("A")
            ],
            0..9,
        )
        .prop_map(|parts| parts.concat().to_ascii_lowercase())
    }

    proptest! {
        #[test]
        fn indexed_first_match_equals_linear_scan(
            sources in proptest::collection::vec(pattern_source(), 0..40),
            queries in proptest::collection::vec(query(), 1..20),
        ) {
            let patterns = compile(&sources);
            let index = PatternIndex::build(&patterns);
            for q in &queries {
                prop_assert_eq!(index.first_match(&patterns, q.as_bytes()), linear_first(&patterns, q.as_bytes()), "query {:?} patterns {:?}", q, sources);
            }
        }

        #[test]
        fn indexed_all_matches_equals_linear_scan(
            sources in proptest::collection::vec(pattern_source(), 0..40),
            queries in proptest::collection::vec(query(), 1..20),
        ) {
            let patterns = compile(&sources);
            let index = PatternIndex::build(&patterns);
            for q in &queries {
                prop_assert_eq!(index.all_matches(&patterns, q.as_bytes()), linear_all(&patterns, q.as_bytes()), "query {:?} patterns {:?}", q, sources);
            }
        }

        #[test]
        fn glob_matcher_agrees_with_opendkims_regex(source in pattern_source(), q in query()) {
            // The oracle: the POSIX ERE OpenDKIM builds, run by the regex crate.
            let mut re = String::from("^");
            for c in source.chars() {
                match c { '*' => re.push_str(".*"), '.' => re.push_str("\\."), c => re.push(c) }
            }
            re.push('$');
            let oracle = regex::bytes::RegexBuilder::new(&re).case_insensitive(true).unicode(false).build().unwrap();
            let pattern = Pattern::compile(&source, true).unwrap();
            prop_assert_eq!(pattern.matches(q.as_bytes()), oracle.is_match(q.as_bytes()), "pattern {:?}", source);
        }
    }
}
