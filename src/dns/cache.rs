//! A bounded cache of TXT answers with an expiry time each.
//!
//! At most `capacity` answers; when full, expired ones go first, then the
//! oldest inserted. Lookups and inserts are O(1) amortized. It knows
//! nothing of DNS; the resolver decides what to keep and for how long.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::TxtAnswer;

pub(super) struct Cache {
    capacity: usize,
    entries: HashMap<String, (Arc<TxtAnswer>, Instant)>,
    /// Names in insertion order, with the expiry they were inserted with
    /// (an entry replaced since has a different one and is skipped).
    order: VecDeque<(String, Instant)>,
}

impl Cache {
    pub(super) fn new(capacity: usize) -> Cache {
        Cache {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The answer for `name` if it has not expired at `now`.
    pub(super) fn get(&mut self, name: &str, now: Instant) -> Option<Arc<TxtAnswer>> {
        match self.entries.get(name) {
            Some((answer, expires)) if *expires > now => Some(Arc::clone(answer)),
            Some(_) => {
                self.entries.remove(name);
                None
            }
            None => None,
        }
    }

    pub(super) fn insert(&mut self, name: String, answer: Arc<TxtAnswer>, expires: Instant) {
        if self.capacity == 0 {
            return;
        }
        while self.entries.len() >= self.capacity && !self.entries.contains_key(&name) {
            let Some((oldest, inserted_expiry)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&oldest).map(|(_, e)| *e) == Some(inserted_expiry) {
                self.entries.remove(&oldest);
            }
        }
        self.order.push_back((name.clone(), expires));
        self.entries.insert(name, (answer, expires));
        // Replaced entries leave stale names in `order`; keep it bounded.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order
                .retain(|(name, e)| entries.get(name).map(|(_, x)| x) == Some(e));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{Security, TxtOutcome};
    use std::time::Duration;

    fn answer(n: u8) -> Arc<TxtAnswer> {
        Arc::new(TxtAnswer {
            outcome: TxtOutcome::Records(vec![vec![n]]),
            security: Security::Unchecked,
        })
    }

    #[test]
    fn entries_expire() {
        let mut cache = Cache::new(10);
        let now = Instant::now();
        cache.insert("a.".into(), answer(1), now + Duration::from_secs(5));
        assert!(cache.get("a.", now).is_some());
        assert!(cache.get("a.", now + Duration::from_secs(5)).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_oldest_goes_when_full_and_the_size_stays_bounded() {
        let mut cache = Cache::new(3);
        let later = Instant::now() + Duration::from_secs(60);
        for n in 0..100u8 {
            cache.insert(format!("n{n}."), answer(n), later);
            assert!(cache.len() <= 3);
            assert!(cache.order.len() <= 6);
        }
        assert!(cache.get("n99.", Instant::now()).is_some());
        assert!(cache.get("n96.", Instant::now()).is_none());
        // Replacing one name many times keeps the others.
        for n in 0..50u8 {
            cache.insert(
                "n99.".into(),
                answer(n),
                later + Duration::from_secs(u64::from(n)),
            );
        }
        assert!(cache.get("n98.", Instant::now()).is_some());
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut cache = Cache::new(0);
        cache.insert(
            "a.".into(),
            answer(1),
            Instant::now() + Duration::from_secs(5),
        );
        assert_eq!(cache.len(), 0);
    }
}
