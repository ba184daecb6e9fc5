//! [`Witness`]: a backend wrapper that tells each caller's thread what its memoized call
//! went through (its first read, its waits on the lock, whether its own computation
//! ran), so the harness can say which calls waited for a computation from facts the
//! call left behind, not from a latency cutoff. The library keeps no such counter.
//!
//! The record is per thread: a blocking call runs its backend operations on the
//! caller's thread, while a detached refresh runs on a thread of its own and leaves the
//! caller's record alone. Only the blocking half records; the async half forwards.
//!
//! It also counts, for the whole process, the attempts at the key's refresh lock and
//! how many took it: how many refreshes the process started, and how many reached the
//! lock.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_memoize::{AsyncBackend, Backend, BoxFuture, Error, GetOrLock, LockClaim};

/// What one call went through, as seen on its thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The call's first `get`: when it returned (µs since the Unix epoch) and whether
    /// it found any bytes.
    pub(crate) first_read: Option<FirstRead>,
    /// How many times the call blocked in `wait_for_release` (the lock held elsewhere).
    pub(crate) lock_waits: u32,
    /// Whether the call's own compute closure ran on this thread.
    pub(crate) computed: bool,
}

/// The first read of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FirstRead {
    pub(crate) at_us: u64,
    pub(crate) found: bool,
}

thread_local! {
    static SEEN: Cell<Seen> = const {
        Cell::new(Seen { first_read: None, lock_waits: 0, computed: false })
    };
}

/// Starts this thread's record of a call.
pub(crate) fn begin() {
    SEEN.set(Seen::default());
}

/// Ends this thread's record of a call and returns it.
pub(crate) fn end() -> Seen {
    SEEN.take()
}

/// Notes that a computation runs on this thread (called by the compute closure).
pub(crate) fn computing() {
    update(|seen| seen.computed = true);
}

fn update(change: impl FnOnce(&mut Seen)) {
    let mut seen = SEEN.get();
    change(&mut seen);
    SEEN.set(seen);
}

/// Wall-clock microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// Wraps a backend; see the module docs.
pub(crate) struct Witness<B> {
    inner: B,
    /// The refresh lock whose attempts are counted.
    refresh_lock: String,
    attempts: AtomicU64,
    taken: AtomicU64,
}

impl<B> Witness<B> {
    /// Wraps `inner`, counting the attempts at `refresh_lock`.
    pub(crate) fn new(inner: B, refresh_lock: String) -> Self {
        Self {
            inner,
            refresh_lock,
            attempts: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        }
    }

    /// The attempts at the refresh lock so far, and how many took it.
    pub(crate) fn refresh_attempts(&self) -> (u64, u64) {
        (
            self.attempts.load(Ordering::Relaxed),
            self.taken.load(Ordering::Relaxed),
        )
    }

    fn count_attempt(&self, lock: &LockClaim<'_>, taken: &Result<Option<u64>, Error>) {
        if lock.key == self.refresh_lock {
            self.attempts.fetch_add(1, Ordering::Relaxed);
            if matches!(taken, Ok(Some(_))) {
                self.taken.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<B: Backend> Backend for Witness<B> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let read = self.inner.get(key);
        update(|seen| {
            if seen.first_read.is_none() {
                seen.first_read = Some(FirstRead {
                    at_us: now_us(),
                    found: matches!(read, Ok(Some(_))),
                });
            }
        });
        read
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        self.inner.get_many(keys)
    }

    fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        self.inner.set(key, value, ttl)
    }

    fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, Error> {
        self.inner.add(key, value, ttl)
    }

    fn delete(&self, key: &str) -> Result<(), Error> {
        self.inner.delete(key)
    }

    fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, Error> {
        self.inner.compare_and_delete(key, expected)
    }

    fn compare_and_extend(&self, key: &str, expected: &[u8], ttl: Duration) -> Result<bool, Error> {
        self.inner.compare_and_extend(key, expected, ttl)
    }

    fn get_or_lock(&self, key: &str, lock: &LockClaim<'_>) -> Result<GetOrLock, Error> {
        self.inner.get_or_lock(key, lock)
    }

    fn store_and_release(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        lock: &LockClaim<'_>,
    ) -> Result<bool, Error> {
        self.inner.store_and_release(key, value, ttl, lock)
    }

    fn take_lock(&self, lock: &LockClaim<'_>) -> Result<Option<u64>, Error> {
        let taken = self.inner.take_lock(lock);
        self.count_attempt(lock, &taken);
        taken
    }

    fn invalidate(&self, key: &str, lock_key: &str) -> Result<(), Error> {
        self.inner.invalidate(key, lock_key)
    }

    fn wait_for_release(&self, lock_key: &str, attempted: Instant, max: Duration) {
        update(|seen| seen.lock_waits += 1);
        self.inner.wait_for_release(lock_key, attempted, max);
    }
}

impl<B: AsyncBackend> AsyncBackend for Witness<B> {
    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>> {
        self.inner.get_async(key)
    }

    fn get_many_async<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, Error>> {
        self.inner.get_many_async(keys)
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.inner.set_async(key, value, ttl)
    }

    fn add_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        self.inner.add_async(key, value, ttl)
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        self.inner.delete_async(key)
    }

    fn compare_and_delete_async<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, Error>> {
        self.inner.compare_and_delete_async(key, expected)
    }

    fn compare_and_extend_async<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        self.inner.compare_and_extend_async(key, expected, ttl)
    }

    fn get_or_lock_async<'a>(
        &'a self,
        key: &'a str,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<GetOrLock, Error>> {
        self.inner.get_or_lock_async(key, lock)
    }

    fn store_and_release_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        self.inner.store_and_release_async(key, value, ttl, lock)
    }

    fn take_lock_async<'a>(
        &'a self,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<Option<u64>, Error>> {
        Box::pin(async move {
            let taken = self.inner.take_lock_async(lock).await;
            self.count_attempt(lock, &taken);
            taken
        })
    }

    fn invalidate_async<'a>(
        &'a self,
        key: &'a str,
        lock_key: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.inner.invalidate_async(key, lock_key)
    }

    fn wait_for_release_async<'a>(
        &'a self,
        lock_key: &'a str,
        attempted: Instant,
        max: Duration,
    ) -> BoxFuture<'a, ()> {
        self.inner.wait_for_release_async(lock_key, attempted, max)
    }
}
