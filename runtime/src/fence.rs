//! Fencing tokens: the one order of a key's writes, as a hybrid logical clock.
//!
//! An acquisition of a key's lock gets the token `max(clock, stored + 1)`: the clock is
//! microseconds since the Unix epoch (the server's `TIME` on Redis, this process's
//! `SystemTime` for the in-process store and the trait's default steps), and `stored`
//! is the token the key's stored value was written under, which its envelope records
//! (see `codec`). A store is applied only if the lock still holds its holder's UUID
//! and the holder's token is larger than the stored value's.
//!
//! So tokens grow across what a counter does not survive (a restart without
//! persistence, `FLUSHALL`, an eviction: the clock keeps going), and nothing is kept
//! per key beyond the value and its lock: when both have expired, the key leaves
//! nothing behind. What the clock alone cannot order (a clock stepped back, a failover
//! to a server whose clock is behind) is ordered by the stored value while it lives;
//! README "Fencing" says what is left.
//!
//! An invalidation needs no mark of its own: a computation takes its token under the
//! key's lock, and `invalidate` deletes that lock, so the store of every computation
//! that began before the invalidation is refused by the lock check, and every one that
//! begins after it takes a token then.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The token of an acquisition at clock `now` (µs) of a key whose stored value was
/// written under `stored` (0: none, or not a memoized value).
pub(crate) fn after(stored: u64, now: u64) -> u64 {
    now.max(stored.saturating_add(1))
}

/// Microseconds since the Unix epoch on this machine's clock (0 before the epoch).
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// A clock that hands out tokens in increasing order: each one is
/// [`after`] the stored value's and larger than every token it handed out before,
/// even if the system clock steps back or two acquisitions fall in one microsecond.
/// One number per clock, never one per key.
#[derive(Debug, Default)]
pub(crate) struct TokenClock {
    last: AtomicU64,
}

impl TokenClock {
    /// A clock that has handed out nothing yet.
    pub(crate) const fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
        }
    }

    /// The token of an acquisition of a key whose stored value was written under
    /// `stored`.
    pub(crate) fn next(&self, stored: u64) -> u64 {
        let now = now_micros();
        let mut issued = 0;
        let _ = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                issued = after(stored.max(last), now);
                Some(issued)
            });
        issued
    }
}

/// This process's clock: the in-process store's, and the default steps' of
/// [`Backend`](crate::Backend) (a networked backend takes its server's instead). One
/// for the process, so that a store made anew (a restart of the in-process cache)
/// still hands out larger tokens than the one before.
pub(crate) static PROCESS: TokenClock = TokenClock::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_follows_the_stored_value_and_the_clock() {
        assert_eq!(after(0, 1_000), 1_000);
        assert_eq!(
            after(5_000, 1_000),
            5_001,
            "a clock behind the stored value"
        );
        assert_eq!(after(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn a_clock_never_hands_out_a_token_twice() {
        let clock = TokenClock::new();
        let mut last = 0;
        for _ in 0..10_000 {
            let token = clock.next(0);
            assert!(token > last, "{token} after {last}");
            last = token;
        }
        let ahead = now_micros() + 60_000_000;
        assert_eq!(clock.next(ahead), ahead + 1);
        assert_eq!(clock.next(0), ahead + 2, "and never goes back after it");
    }
}
