//! At most one refresh of a key in flight per process. A hit that finds the value stale
//! (or draws an early refresh) claims the key's refresh in this process; while the
//! claim lives, other hits on the key return the value and start nothing: no thread,
//! no task, no attempt at the refresh lock. Across processes the refresh lock decides.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use once_cell::sync::Lazy;

static REFRESHING: Lazy<Mutex<HashSet<String>>> = Lazy::new(Mutex::default);

fn refreshing() -> MutexGuard<'static, HashSet<String>> {
    // The set is only inserted into and removed from; it is valid after any panic.
    REFRESHING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This process's claim on refreshing one key; dropping it (the refresh ended,
/// panicked, or never started) lets the next stale hit claim it.
#[derive(Debug)]
pub(crate) struct RefreshClaim {
    key: String,
}

/// Claims the refresh of `key` (a flight key: the key and its backend), or `None` if
/// a refresh of it is already in flight in this process.
pub(crate) fn claim(key: &str) -> Option<RefreshClaim> {
    refreshing().insert(key.to_owned()).then(|| RefreshClaim {
        key: key.to_owned(),
    })
}

impl Drop for RefreshClaim {
    fn drop(&mut self) {
        refreshing().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::claim;

    #[test]
    fn a_key_is_claimed_once_until_its_claim_drops() {
        let first = claim("refreshing-test:a");
        assert!(first.is_some());
        assert!(claim("refreshing-test:a").is_none(), "in flight");
        assert!(claim("refreshing-test:b").is_some(), "another key");
        drop(first);
        assert!(claim("refreshing-test:a").is_some(), "claimable again");
    }
}
