//! What a reader has already given its caller, so that a read that breaks in the middle
//! continues with the same write or not at all.
//!
//! A sequence read from the cache can break after some items were yielded: a window's
//! chunks expired or were evicted, or a refresh replaced the sequence and the replaced
//! chunks' grace (the lock's expiry) passed while the caller held the iterator. The
//! sequence is then read or computed again, and the items the caller already has are
//! passed over. They must be the same items: the caller would otherwise hold the head
//! of one write and the tail of another. Each item's encoding goes into a running
//! checksum ([`Given`]); the items passed over are checked against it
//! ([`Resuming`]). Equal: the read continues (the data did not change, only the
//! chunks went). Different: the sequence changed under a reader slower than the grace,
//! and the iterator panics ([`changed`]) rather than yield a mixture or stop short.

/// A count of items and a checksum of their encodings, in order.
#[derive(Clone, Default)]
pub(super) struct Given {
    count: u64,
    checksum: crc32fast::Hasher,
}

impl Given {
    /// Adds one item, by its encoding.
    pub(super) fn push(&mut self, encoded: &[u8]) {
        self.count += 1;
        // The length first: items are told apart, not only their concatenation.
        self.checksum.update(&(encoded.len() as u64).to_le_bytes());
        self.checksum.update(encoded);
    }

    fn same_as(&self, other: &Self) -> bool {
        self.count == other.count
            && self.checksum.clone().finalize() == other.checksum.clone().finalize()
    }
}

/// A read or computation that starts again behind items the caller already has: they
/// are passed over, and checked.
pub(super) struct Resuming {
    had: Given,
    passed: Given,
}

/// The sequence is no longer the one the caller was reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Changed;

impl Resuming {
    /// Passes over `had`, or `None` when the caller has nothing yet.
    pub(super) fn behind(had: Given) -> Option<Self> {
        (had.count > 0).then(|| Self {
            had,
            passed: Given::default(),
        })
    }

    /// Passes over one item (by its encoding). `Ok(true)`: the caller now has every
    /// item again, checked equal, and the next one is new to it.
    pub(super) fn pass(&mut self, encoded: &[u8]) -> Result<bool, Changed> {
        self.passed.push(encoded);
        if self.passed.count < self.had.count {
            return Ok(false);
        }
        if self.passed.same_as(&self.had) {
            Ok(true)
        } else {
            Err(Changed)
        }
    }
}

/// Stops an iterator whose sequence changed under it. Documented on
/// [`memoize_iter`](crate::memoize_iter): neither a mixture of two writes nor a
/// silent truncation, but an error the caller sees.
#[track_caller]
pub(super) fn changed(key: &crate::key::CacheKey) -> ! {
    panic!(
        "cache-memoize: the memoized sequence at `{key}` changed while it was being read \
         (the reader paused longer than the lock's expiry while a refresh replaced it); \
         the items already yielded belong to an earlier write, which cannot be continued"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resumes behind `items`.
    fn behind(items: &[&[u8]]) -> Resuming {
        Resuming {
            had: given(items),
            passed: Given::default(),
        }
    }

    fn given(items: &[&[u8]]) -> Given {
        let mut given = Given::default();
        for item in items {
            given.push(item);
        }
        given
    }

    #[test]
    fn the_same_items_pass_and_the_next_one_is_new() {
        let mut resuming = behind(&[b"a", b"b"]);
        assert_eq!(resuming.pass(b"a"), Ok(false));
        assert_eq!(resuming.pass(b"b"), Ok(true));
    }

    #[test]
    fn other_items_are_a_change() {
        let mut resuming = behind(&[b"a", b"b"]);
        assert_eq!(resuming.pass(b"a"), Ok(false));
        assert_eq!(resuming.pass(b"c"), Err(Changed));
    }

    #[test]
    fn items_split_differently_are_a_change() {
        let mut resuming = behind(&[b"ab", b"c"]);
        assert_eq!(resuming.pass(b"a"), Ok(false));
        assert_eq!(resuming.pass(b"bc"), Err(Changed));
    }

    #[test]
    fn nothing_given_resumes_nothing() {
        assert!(Resuming::behind(Given::default()).is_none());
    }
}
