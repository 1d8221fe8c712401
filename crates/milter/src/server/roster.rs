//! The connections open at once, and which of them may be closed to make
//! room for a new one.
//!
//! A [`Roster`] counts the open connections against the connection limit
//! and keeps the idle ones (no transaction in flight) ordered by how long
//! they have been idle. When a connection arrives at the limit,
//! [`Roster::admit`] closes the one idle longest (its [`Place`]'s eviction
//! token is cancelled, and [`crate::serve`] closes it at once, as on
//! shutdown) and admits the newcomer in its place; a flood of silent
//! connections then cannot lock out the MTA. A connection with a
//! transaction in flight is never in the idle set, so it is never chosen:
//! no message is ever cut off to make room. Only when every connection is
//! in a transaction is the newcomer refused.
//!
//! This module never reads or writes a socket; it only keeps the books.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The open connections, counted against a limit.
#[derive(Debug)]
pub(crate) struct Roster {
    limit: usize,
    books: Mutex<Books>,
}

#[derive(Debug, Default)]
struct Books {
    /// Connections with a [`Place`], evicted ones still closing included.
    open: usize,
    /// Evicted connections not closed yet: they no longer count against
    /// the limit.
    closing: usize,
    /// The idle connections, idle longest first: by the time they became
    /// idle or last spoke while idle, then by id.
    idle: BTreeMap<(Instant, u64), CancellationToken>,
}

/// What [`Roster::admit`] decided.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Below the limit.
    Admitted(Place),
    /// At the limit: the connection idle longest, idle for this long, is
    /// being closed to make room.
    MadeRoom(Place, Duration),
    /// At the limit, and every connection has a transaction in flight.
    Full,
}

impl Roster {
    pub(crate) fn new(limit: usize) -> Roster {
        Roster {
            limit: limit.max(1),
            books: Mutex::new(Books::default()),
        }
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        // The books stay consistent whatever panicked while they were held:
        // every change under the lock is a single map or counter update.
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for connection `id`, idle from now on; at the limit, by
    /// closing the connection idle longest.
    pub(crate) fn admit(self: &Arc<Self>, id: u64) -> Admission {
        let mut books = self.books();
        let made_room = if books.open - books.closing < self.limit {
            None
        } else {
            let Some(idle_for) = books.evict_longest_idle() else {
                return Admission::Full;
            };
            Some(idle_for)
        };
        books.open += 1;
        let evicted = CancellationToken::new();
        let since = Instant::now();
        books.idle.insert((since, id), evicted.clone());
        drop(books);
        let place = Place {
            roster: Arc::clone(self),
            id,
            idle_since: Some(since),
            evicted,
        };
        match made_room {
            None => Admission::Admitted(place),
            Some(idle_for) => Admission::MadeRoom(place, idle_for),
        }
    }

    /// Close the connection idle longest, if any, whatever the count (the
    /// process ran out of file descriptors); how long it was idle.
    pub(crate) fn evict_longest_idle(&self) -> Option<Duration> {
        self.books().evict_longest_idle()
    }

    /// Connections open and not being closed to make room.
    #[cfg(test)]
    fn counted(&self) -> usize {
        let books = self.books();
        books.open - books.closing
    }
}

impl Books {
    fn evict_longest_idle(&mut self) -> Option<Duration> {
        let ((since, _), token) = self.idle.pop_first()?;
        token.cancel();
        self.closing += 1;
        Some(since.elapsed())
    }
}

/// One connection's entry in the [`Roster`]; gives it back when dropped.
#[derive(Debug)]
pub(crate) struct Place {
    roster: Arc<Roster>,
    id: u64,
    /// The key in the idle set, while the connection is in it.
    idle_since: Option<Instant>,
    evicted: CancellationToken,
}

impl Place {
    /// No transaction is in flight: the connection may be closed to make
    /// room, after those idle longer. Called again when an idle connection
    /// speaks, it goes to the back of the line.
    pub(crate) fn idle(&mut self) {
        if self.evicted.is_cancelled() {
            return;
        }
        let mut books = self.roster.books();
        if let Some(since) = self.idle_since.take() {
            books.idle.remove(&(since, self.id));
        }
        let since = Instant::now();
        books.idle.insert((since, self.id), self.evicted.clone());
        self.idle_since = Some(since);
    }

    /// A transaction is in flight: never close this connection to make
    /// room. Cheap when already so.
    pub(crate) fn busy(&mut self) {
        if let Some(since) = self.idle_since.take() {
            self.roster.books().idle.remove(&(since, self.id));
        }
    }

    /// Completes once this connection has been chosen to make room.
    pub(crate) fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.evicted.cancelled()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut books = self.roster.books();
        if let Some(since) = self.idle_since.take() {
            books.idle.remove(&(since, self.id));
        }
        books.open -= 1;
        if self.evicted.is_cancelled() {
            books.closing -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(admission: Admission) -> Place {
        match admission {
            Admission::Admitted(place) => place,
            other => panic!("expected admission below the limit, got {other:?}"),
        }
    }

    #[test]
    fn at_the_limit_the_connection_idle_longest_makes_room() {
        let roster = Arc::new(Roster::new(3));
        let mut first = admitted(roster.admit(1));
        let second = admitted(roster.admit(2));
        let third = admitted(roster.admit(3));
        // The first speaks again: the second is now idle longest.
        first.idle();
        let Admission::MadeRoom(fourth, _) = roster.admit(4) else {
            panic!("no room made");
        };
        assert!(second.evicted.is_cancelled());
        assert!(!first.evicted.is_cancelled() && !third.evicted.is_cancelled());
        assert_eq!(roster.counted(), 3);
        drop(second);
        assert_eq!(roster.counted(), 3);
        drop((first, third, fourth));
        assert_eq!(roster.counted(), 0);
    }

    #[test]
    fn a_connection_in_a_transaction_is_never_chosen() {
        let roster = Arc::new(Roster::new(2));
        let mut in_flight = admitted(roster.admit(1));
        in_flight.busy();
        let idle = admitted(roster.admit(2));
        let Admission::MadeRoom(third, _) = roster.admit(3) else {
            panic!("no room made");
        };
        assert!(idle.evicted.is_cancelled());
        assert!(!in_flight.evicted.is_cancelled());
        let mut third = third;
        third.busy();
        // Everyone left is in a transaction: refused.
        assert!(matches!(roster.admit(4), Admission::Full));
        assert!(!in_flight.evicted.is_cancelled());
        // The transaction ends: that connection may go now.
        in_flight.idle();
        let Admission::MadeRoom(fifth, _) = roster.admit(5) else {
            panic!("no room made");
        };
        assert!(in_flight.evicted.is_cancelled());
        // An evicted connection stays out of the idle set: the next to go
        // is the fifth.
        in_flight.idle();
        assert!(roster.evict_longest_idle().is_some());
        assert!(fifth.evicted.is_cancelled());
        assert!(roster.evict_longest_idle().is_none());
        drop((idle, third, in_flight, fifth));
        assert_eq!(roster.counted(), 0);
    }
}
