//! At most one refresh of a key in flight per process. A hit that finds the value stale
//! (or draws an early refresh) claims the key's refresh in this process; while the
//! claim lives, other hits on the key return the value and start nothing: no thread,
//! no task, no attempt at the lock. Across processes the key's lock decides.
//!
//! A refresh that found the key's lock held elsewhere (another process refreshing,
//! or throttling after a failed refresh) or the backend failing leaves its claim in
//! place for a back-off, so that the process does not ask again on every stale hit.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;

/// Where a key's refresh stands in this process.
#[derive(Debug, Clone, Copy)]
enum Entry {
    /// A refresh of it is running.
    InFlight,
    /// The last refresh could not run; none starts before this instant.
    BackOff(Instant),
}

/// The keys with an entry, and the size at which passed back-offs are swept out.
struct Refreshing {
    entries: HashMap<String, Entry>,
    sweep_at: usize,
}

/// Back-offs are swept out once this many keys have entries (and then at twice the
/// number left), so keys never seen again do not stay for ever.
const FIRST_SWEEP: usize = 64;

static REFRESHING: Lazy<Mutex<Refreshing>> = Lazy::new(|| {
    Mutex::new(Refreshing {
        entries: HashMap::new(),
        sweep_at: FIRST_SWEEP,
    })
});

fn refreshing() -> MutexGuard<'static, Refreshing> {
    // Each change is one insert or remove; the map is valid after any panic.
    REFRESHING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This process's claim on refreshing one key; dropping it (the refresh ended,
/// panicked, or never started) lets the next stale hit claim it, at once or, after
/// [`back_off`](Self::back_off), once the back-off has passed.
#[derive(Debug)]
pub(crate) struct RefreshClaim {
    key: String,
    back_off_until: Option<Instant>,
}

/// Claims the refresh of `key` (a flight key: the key and its backend) at `now`, or
/// `None` if a refresh of it is in flight in this process or backing off.
pub(crate) fn claim(key: &str, now: Instant) -> Option<RefreshClaim> {
    let mut refreshing = refreshing();
    match refreshing.entries.get(key) {
        Some(Entry::InFlight) => return None,
        Some(Entry::BackOff(until)) if now < *until => return None,
        Some(Entry::BackOff(_)) | None => {}
    }
    refreshing.entries.insert(key.to_owned(), Entry::InFlight);
    if refreshing.entries.len() >= refreshing.sweep_at {
        refreshing
            .entries
            .retain(|_, entry| !matches!(entry, Entry::BackOff(until) if *until <= now));
        refreshing.sweep_at = (refreshing.entries.len() * 2).max(FIRST_SWEEP);
    }
    Some(RefreshClaim {
        key: key.to_owned(),
        back_off_until: None,
    })
}

impl RefreshClaim {
    /// Keeps the key unclaimable for `back_off` after `now` once this claim drops.
    pub(crate) fn back_off(&mut self, now: Instant, back_off: Duration) {
        self.back_off_until = now.checked_add(back_off);
    }
}

impl Drop for RefreshClaim {
    fn drop(&mut self) {
        let mut refreshing = refreshing();
        match self.back_off_until {
            Some(until) => {
                refreshing
                    .entries
                    .insert(std::mem::take(&mut self.key), Entry::BackOff(until));
            }
            None => {
                refreshing.entries.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::claim;

    #[test]
    fn a_key_is_claimed_once_until_its_claim_drops() {
        let now = Instant::now();
        let first = claim("refreshing-test:a", now);
        assert!(first.is_some());
        assert!(claim("refreshing-test:a", now).is_none(), "in flight");
        assert!(claim("refreshing-test:b", now).is_some(), "another key");
        drop(first);
        assert!(claim("refreshing-test:a", now).is_some(), "claimable again");
    }

    #[test]
    fn a_claim_that_backs_off_keeps_the_key_until_the_back_off_passes() {
        let now = Instant::now();
        let mut first = claim("refreshing-test:back-off", now);
        if let Some(first) = first.as_mut() {
            first.back_off(now, Duration::from_millis(250));
        }
        drop(first);
        let during = now + Duration::from_millis(249);
        assert!(claim("refreshing-test:back-off", during).is_none());
        let after = now + Duration::from_millis(250);
        assert!(claim("refreshing-test:back-off", after).is_some());
    }

    #[test]
    fn passed_back_offs_are_swept_out() {
        let now = Instant::now();
        for i in 0..200 {
            if let Some(mut claim) = claim(&format!("refreshing-test:sweep-{i}"), now) {
                claim.back_off(now, Duration::from_millis(1));
            }
        }
        // Claims held at once grow the map past its sweep size.
        let later = now + Duration::from_secs(1);
        let held: Vec<_> = (0..300)
            .filter_map(|i| claim(&format!("refreshing-test:other-{i}"), later))
            .collect();
        drop(held);
        let left = super::refreshing()
            .entries
            .keys()
            .filter(|key| key.starts_with("refreshing-test:sweep-"))
            .count();
        assert!(left < 200, "{left} passed back-offs left");
    }
}
