//! The read-through cache in front of one remote data set: answers (a
//! value, or "no such key") kept for a TTL, a bound on the number kept,
//! and answers past their TTL kept a while longer to serve when the server
//! is down. It knows nothing of servers; it only remembers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long answers are kept and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a value is used without asking the server again.
    pub ttl: Duration,
    /// How long "no such key" is believed.
    pub negative_ttl: Duration,
    /// How long past its TTL an answer may still be used while the server
    /// cannot be reached.
    pub stale_limit: Duration,
    /// The most answers kept.
    pub max_entries: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(300),
            stale_limit: Duration::from_secs(3600),
            max_entries: 100_000,
        }
    }
}

/// What the cache knows about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// Fresh: use it.
    Fresh(Option<Arc<str>>),
    /// Past its TTL but within the stale limit: use it only when the
    /// server cannot be reached.
    Stale(Option<Arc<str>>),
    /// Nothing usable.
    Unknown,
}

#[derive(Debug)]
struct Entry {
    value: Option<Arc<str>>,
    fetched: Instant,
}

/// The answers of one data set.
#[derive(Debug)]
pub struct Cache {
    settings: CacheSettings,
    entries: HashMap<String, Entry>,
}

impl Cache {
    pub fn new(settings: CacheSettings) -> Self {
        Cache {
            settings,
            entries: HashMap::new(),
        }
    }

    fn ttl_of(&self, entry: &Entry) -> Duration {
        match entry.value {
            Some(_) => self.settings.ttl,
            None => self.settings.negative_ttl,
        }
    }

    pub fn get(&self, key: &str, now: Instant) -> Cached {
        let Some(entry) = self.entries.get(key) else {
            return Cached::Unknown;
        };
        let age = now.saturating_duration_since(entry.fetched);
        let ttl = self.ttl_of(entry);
        if age < ttl {
            Cached::Fresh(entry.value.clone())
        } else if age < ttl + self.settings.stale_limit {
            Cached::Stale(entry.value.clone())
        } else {
            Cached::Unknown
        }
    }

    /// Remembers the server's answer for `key`.
    pub fn put(&mut self, key: &str, value: Option<Arc<str>>, now: Instant) {
        if self.settings.max_entries == 0 {
            return;
        }
        if !self.entries.contains_key(key) && self.entries.len() >= self.settings.max_entries {
            self.make_room(now);
        }
        self.entries.insert(
            key.to_string(),
            Entry {
                value,
                fetched: now,
            },
        );
    }

    /// Drops what can no longer be served, then (still full) the oldest
    /// eighth.
    fn make_room(&mut self, now: Instant) {
        let stale_limit = self.settings.stale_limit;
        let (ttl, negative_ttl) = (self.settings.ttl, self.settings.negative_ttl);
        self.entries.retain(|_, e| {
            let ttl = if e.value.is_some() { ttl } else { negative_ttl };
            now.saturating_duration_since(e.fetched) < ttl + stale_limit
        });
        if self.entries.len() < self.settings.max_entries {
            return;
        }
        let mut ages: Vec<Instant> = self.entries.values().map(|e| e.fetched).collect();
        ages.sort_unstable();
        let cut = ages[(ages.len() / 8).max(1) - 1];
        self.entries.retain(|_, e| e.fetched > cut);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CacheSettings {
        CacheSettings {
            ttl: Duration::from_secs(10),
            negative_ttl: Duration::from_secs(5),
            stale_limit: Duration::from_secs(100),
            max_entries: 8,
        }
    }

    #[test]
    fn an_answer_is_fresh_for_its_ttl_then_stale_then_gone() {
        let t0 = Instant::now();
        let mut cache = Cache::new(settings());
        cache.put("k", Some(Arc::from("v")), t0);
        assert_eq!(
            cache.get("k", t0 + Duration::from_secs(9)),
            Cached::Fresh(Some(Arc::from("v")))
        );
        assert_eq!(
            cache.get("k", t0 + Duration::from_secs(11)),
            Cached::Stale(Some(Arc::from("v")))
        );
        assert_eq!(
            cache.get("k", t0 + Duration::from_secs(111)),
            Cached::Unknown
        );
        assert_eq!(cache.get("other", t0), Cached::Unknown);
    }

    #[test]
    fn absent_keys_are_cached_with_their_own_ttl() {
        let t0 = Instant::now();
        let mut cache = Cache::new(settings());
        cache.put("none", None, t0);
        assert_eq!(
            cache.get("none", t0 + Duration::from_secs(4)),
            Cached::Fresh(None)
        );
        assert_eq!(
            cache.get("none", t0 + Duration::from_secs(6)),
            Cached::Stale(None)
        );
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let t0 = Instant::now();
        let mut cache = Cache::new(settings());
        for i in 0..100u64 {
            cache.put(&format!("k{i}"), None, t0 + Duration::from_millis(i));
            assert!(cache.len() <= 8, "{}", cache.len());
        }
        // The newest answer is always kept.
        assert_eq!(
            cache.get("k99", t0 + Duration::from_millis(100)),
            Cached::Fresh(None)
        );
    }
}
