//! [`MemoryBackend`]: the in-process store, and the backend used when none is
//! registered (like Django's `LocMemCache`).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use coarsetime::Instant as Coarse;
use lru::LruCache;

use super::{BackendCore, BoxFuture, GetOrLock, ImmediateBackend, LockClaim, Op, Reply};
use crate::codec::written_fence;
use crate::error::Error;

/// The default bound on stored bytes: 64 MiB.
const DEFAULT_CAPACITY: usize = 64 * 1024 * 1024;

/// An in-process cache: bounded in bytes, least recently used entries evicted first,
/// time to live honoured (an expired entry is absent) to within one tick of the
/// kernel's coarse monotonic clock (1–4 ms), which is cheap to read on every hit.
/// Safe to share between threads.
///
/// A lock's fencing tokens come from this process's clock (microseconds since the Unix
/// epoch, never handing out a token twice, whichever store asks), ordered after the
/// token the stored value was written under: nothing is kept per key but values and
/// locks, so a key whose value and lock have expired holds no entry
/// ([`len`](Self::len) counts them).
///
/// It coordinates the threads of one process only; for several processes use
/// [`RedisBackend`](crate::RedisBackend).
///
/// ```
/// use cache_memoize::{Backend, MemoryBackend};
/// use std::time::Duration;
///
/// let cache = MemoryBackend::with_capacity(1024 * 1024);
/// cache.set("greeting", b"hello", Duration::from_secs(60))?;
/// assert_eq!(cache.get("greeting")?, Some(b"hello".to_vec()));
/// # Ok::<(), cache_memoize::Error>(())
/// ```
#[derive(Debug)]
pub struct MemoryBackend {
    store: Mutex<Store>,
    /// Signalled whenever a key is deleted, so lock waiters retry at once.
    deleted: Condvar,
    deleted_async: tokio::sync::Notify,
}

#[derive(Debug)]
struct Store {
    /// Values, bounded by `capacity`: the least recently used go first.
    entries: LruCache<String, Entry>,
    /// Locks (what `add` writes), outside the bound: a lock is never evicted to make
    /// room for values (that would let a second holder in). They are small and expire;
    /// expired ones are swept as the map grows.
    locks: HashMap<String, Entry>,
    capacity: usize,
    used: usize,
}

/// Expired locks are swept when the lock map grows past this many entries.
const LOCK_SWEEP: usize = 1024;

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires_at: Coarse,
}

/// The bytes an entry is charged for: its key and value.
fn weight(key: &str, value: &[u8]) -> usize {
    key.len() + value.len()
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// A store bounded at 64 MiB of keys and values.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A store bounded at `bytes` of keys and values. A value larger than that alone is
    /// not stored (a later read is a miss).
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            store: Mutex::new(Store {
                entries: LruCache::unbounded(),
                locks: HashMap::new(),
                capacity: bytes,
                used: 0,
            }),
            deleted: Condvar::new(),
            deleted_async: tokio::sync::Notify::new(),
        }
    }

    /// The bytes of keys and values stored now (expired entries included until they
    /// are read or evicted).
    pub fn used_bytes(&self) -> usize {
        self.lock().used
    }

    /// How many entries (values and locks) the store holds, after dropping those that
    /// have expired: once every value and lock of a key has expired, the key accounts
    /// for none. A sweep over the whole store, for tests and diagnostics; not for a
    /// hot path.
    ///
    /// ```
    /// use cache_memoize::{Backend, MemoryBackend};
    /// use std::time::Duration;
    ///
    /// let cache = MemoryBackend::new();
    /// cache.set("a", b"1", Duration::from_secs(60))?;
    /// cache.set("b", b"2", Duration::ZERO)?;
    /// assert_eq!(cache.len(), 1);
    /// # Ok::<(), cache_memoize::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        let mut store = self.lock();
        store.sweep();
        store.entries.len() + store.locks.len()
    }

    /// Whether the store holds no entry that has not expired (see [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn wake_waiters(&self) {
        self.deleted.notify_all();
        self.deleted_async.notify_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // Every mutation below leaves the store consistent before anything can panic,
        // so a poisoned lock still guards a valid store.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store {
    /// `f` of the live entry at `key`, dropping it if it has expired. A key is in at
    /// most one of the two maps (both inserts remove it first), so a live value, the
    /// hit path, costs one lookup.
    fn read_live<R>(&mut self, key: &str, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        let now = now();
        match self.entries.get_mut(key) {
            Some(entry) if entry.expires_at > now => return Some(f(entry)),
            Some(_) => {
                self.remove(key);
                return None;
            }
            None => {}
        }
        self.live(key).map(f)
    }

    /// The live entry at `key` (a lock or a value), dropping it if it has expired.
    fn live(&mut self, key: &str) -> Option<&mut Entry> {
        let now = now();
        if let Some(lock) = self.locks.get(key) {
            if lock.expires_at > now {
                return self.locks.get_mut(key);
            }
            self.locks.remove(key);
            return None;
        }
        let expired = self.entries.peek(key)?.expires_at <= now;
        if expired {
            self.remove(key);
            return None;
        }
        self.entries.get_mut(key)
    }

    fn remove(&mut self, key: &str) -> bool {
        if self.locks.remove(key).is_some() {
            return true;
        }
        match self.entries.pop(key) {
            Some(entry) => {
                self.used -= weight(key, &entry.value);
                true
            }
            None => false,
        }
    }

    /// Drops every expired value and lock.
    fn sweep(&mut self) {
        let now = now();
        self.locks.retain(|_, lock| lock.expires_at > now);
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.expires_at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.remove(&key);
        }
    }

    /// The fencing token the live value at `key` was written under (0: none), read
    /// without touching its recency.
    fn stored_fence(&self, key: &str) -> u64 {
        self.entries
            .peek(key)
            .filter(|entry| entry.expires_at > now())
            .map_or(0, |entry| written_fence(&entry.value))
    }

    /// Stores a lock, outside the size bound.
    fn insert_lock(&mut self, key: &str, value: &[u8], ttl: Duration) {
        self.remove(key);
        if self.locks.len() >= LOCK_SWEEP && self.locks.len().is_power_of_two() {
            let now = now();
            self.locks.retain(|_, lock| lock.expires_at > now);
        }
        let entry = Entry {
            value: value.to_vec(),
            expires_at: expiry(ttl),
        };
        self.locks.insert(key.to_owned(), entry);
    }

    /// Takes the lock if free: its fencing token, from this process's clock and after
    /// the stored value's.
    fn take_lock(&mut self, lock: &LockClaim<'_>) -> Option<u64> {
        if self.live(lock.key).is_some() {
            return None;
        }
        self.insert_lock(lock.key, lock.token, lock.ttl);
        Some(crate::fence::PROCESS.next(self.stored_fence(lock.value_key)))
    }

    fn insert(&mut self, key: &str, value: &[u8], ttl: Duration) {
        self.remove(key);
        let needed = weight(key, value);
        if needed > self.capacity {
            tracing::debug!(
                key,
                bytes = needed,
                "value larger than the memory backend; not stored"
            );
            return;
        }
        while self.used + needed > self.capacity {
            match self.entries.pop_lru() {
                Some((old_key, old)) => self.used -= weight(&old_key, &old.value),
                None => break,
            }
        }
        let expires_at = expiry(ttl);
        self.used += needed;
        self.entries.put(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                expires_at,
            },
        );
    }
}

/// The store's clock: the coarse monotonic clock (`CLOCK_MONOTONIC_COARSE` on Linux),
/// which the kernel updates every tick (1–4 ms). Reading it costs a few nanoseconds
/// where `Instant::now` costs 40–60 ns on virtual machines, a third of a hit; in
/// exchange an entry lives its TTL give or take one tick (the least lock `expire`,
/// 100 ms, renewed every third of it, leaves ample margin).
fn now() -> Coarse {
    // Not `Coarse::now`: that also writes a process-wide "recent" time, a cache line
    // every thread's hits would fight over.
    Coarse::now_without_cache_update()
}

/// When an entry stored now for `ttl` expires (saturating: `Duration::MAX` is never).
fn expiry(ttl: Duration) -> Coarse {
    now().saturating_add(ttl.into())
}

impl BackendCore for MemoryBackend {
    // Inlined into each typed method (`Backend::get`, ...), where the match folds to
    // the one arm: the hit path pays for no dispatch on the operation.
    #[inline(always)]
    #[allow(clippy::inline_always)]
    fn execute(&self, op: Op<'_>) -> Result<Reply, Error> {
        Ok(match op {
            Op::Get { key } => {
                Reply::Value(self.lock().read_live(key, |entry| entry.value.clone()))
            }
            Op::GetMany { keys } => {
                let mut store = self.lock();
                Reply::Values(
                    keys.iter()
                        .map(|key| store.read_live(key, |entry| entry.value.clone()))
                        .collect(),
                )
            }
            Op::Set { key, value, ttl } => {
                self.lock().insert(key, value, ttl);
                Reply::Done
            }
            // Outside the size bound: `add` is how locks are taken.
            Op::Add { key, value, ttl } => {
                let mut store = self.lock();
                let free = store.live(key).is_none();
                if free {
                    store.insert_lock(key, value, ttl);
                }
                Reply::Applied(free)
            }
            Op::Delete { key } => {
                if self.lock().remove(key) {
                    self.wake_waiters();
                }
                Reply::Done
            }
            Op::CompareAndDelete { key, expected } => {
                let mut store = self.lock();
                let matches = store.live(key).is_some_and(|entry| entry.value == expected);
                let removed = matches && store.remove(key);
                drop(store);
                if removed {
                    self.wake_waiters();
                }
                Reply::Applied(removed)
            }
            Op::CompareAndExtend { key, expected, ttl } => {
                let mut store = self.lock();
                let entry = store.live(key).filter(|entry| entry.value == expected);
                let extended = entry.map(|entry| entry.expires_at = expiry(ttl));
                Reply::Applied(extended.is_some())
            }
            Op::GetOrLock { key, lock } => {
                let mut store = self.lock();
                Reply::Found(match store.read_live(key, |entry| entry.value.clone()) {
                    Some(value) => GetOrLock::Value(value),
                    None => match store.take_lock(&lock) {
                        Some(fence) => GetOrLock::Locked { fence },
                        None => GetOrLock::Held,
                    },
                })
            }
            Op::TakeLock { lock } => Reply::Fence(self.lock().take_lock(&lock)),
            Op::StoreAndRelease {
                key,
                value,
                ttl,
                lock,
            } => Reply::Applied(self.store_and_release(key, value, ttl, &lock)),
            Op::Invalidate { key, lock_key } => {
                let mut store = self.lock();
                store.remove(key);
                let voided = store.remove(lock_key);
                drop(store);
                if voided {
                    self.wake_waiters();
                }
                Reply::Done
            }
            Op::ExpireMany { keys, ttl } => {
                let mut store = self.lock();
                let mut present = 0;
                for key in keys {
                    if ttl.is_zero() {
                        present += usize::from(store.remove(key));
                    } else if let Some(entry) = store.live(key) {
                        entry.expires_at = expiry(ttl);
                        present += 1;
                    }
                }
                Reply::Count(present)
            }
            // Returns when the lock is deleted (or already absent), or after `max`.
            Op::WaitForRelease { lock_key, max, .. } => {
                let store = self.lock();
                if store.locks.contains_key(lock_key) {
                    // Waiting on the store's own mutex: a delete cannot slip in
                    // between the check and the wait.
                    let _ = self.deleted.wait_timeout(store, max);
                }
                Reply::Done
            }
            Op::Decoded { .. } => Reply::Decoded(None),
            Op::KeepDecoded { .. } => Reply::Done,
        })
    }
}

impl MemoryBackend {
    /// Stores under the lock if it is still ours and the write is newer; releases it.
    fn store_and_release(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        lock: &LockClaim<'_>,
    ) -> bool {
        let mut store = self.lock();
        let ours = store
            .live(lock.key)
            .is_some_and(|entry| entry.value == lock.token);
        if !ours {
            return false;
        }
        // While the lock is ours nobody else stores under it: a value written under a
        // later token can only have come from outside the lock (a `set`). It stands.
        let newer = crate::codec::newer(lock.fence, store.stored_fence(key));
        if newer {
            store.insert(key, value, ttl);
        }
        store.remove(lock.key);
        drop(store);
        self.wake_waiters();
        newer
    }
}

/// The in-process store never waits: its async half is [`ImmediateBackend`]'s, but for
/// the wait for a release, woken by the store's own deletes.
impl ImmediateBackend for MemoryBackend {
    fn await_release<'a>(
        &'a self,
        lock_key: &'a str,
        _attempted: Instant,
        max: Duration,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let deleted = self.deleted_async.notified();
            let mut deleted = std::pin::pin!(deleted);
            // Registered before the check, so a delete in between still wakes us.
            deleted.as_mut().enable();
            if !self.lock().locks.contains_key(lock_key) {
                return;
            }
            let _ = crate::timer::timeout(max, deleted).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;

    #[test]
    fn full_store_evicts_the_least_recently_used_entry() -> Result<(), Error> {
        let cache = MemoryBackend::with_capacity(2 * weight("a", &[0; 10]));
        let ttl = Duration::from_secs(60);
        cache.set("a", &[0; 10], ttl)?;
        cache.set("b", &[1; 10], ttl)?;
        cache.get("a")?; // "b" is now the least recently used
        cache.set("c", &[2; 10], ttl)?;
        assert!(cache.get("a")?.is_some());
        assert!(cache.get("b")?.is_none());
        assert!(cache.get("c")?.is_some());
        assert_eq!(cache.used_bytes(), 2 * weight("a", &[0; 10]));
        Ok(())
    }

    #[test]
    fn a_value_larger_than_the_store_is_not_stored() -> Result<(), Error> {
        let cache = MemoryBackend::with_capacity(8);
        cache.set("big", &[0; 64], Duration::from_secs(60))?;
        assert_eq!(cache.get("big")?, None);
        assert_eq!(cache.used_bytes(), 0);
        Ok(())
    }

    #[test]
    fn replacing_a_value_keeps_the_byte_count_exact() -> Result<(), Error> {
        let cache = MemoryBackend::new();
        cache.set("k", &[0; 100], Duration::from_secs(60))?;
        cache.set("k", &[0; 10], Duration::from_secs(60))?;
        assert_eq!(cache.used_bytes(), weight("k", &[0; 10]));
        cache.delete("k")?;
        assert_eq!(cache.used_bytes(), 0);
        Ok(())
    }

    #[test]
    fn a_zero_ttl_entry_is_absent() -> Result<(), Error> {
        let cache = MemoryBackend::new();
        cache.set("k", b"v", Duration::ZERO)?;
        assert_eq!(cache.get("k")?, None);
        assert!(cache.add("k", b"w", Duration::from_secs(60))?);
        Ok(())
    }

    #[test]
    fn compare_and_delete_keeps_another_owners_value() -> Result<(), Error> {
        let cache = MemoryBackend::new();
        cache.set("lock", b"theirs", Duration::from_secs(60))?;
        assert!(!cache.compare_and_delete("lock", b"ours")?);
        assert!(!cache.compare_and_extend("lock", b"ours", Duration::from_secs(1))?);
        assert_eq!(cache.get("lock")?, Some(b"theirs".to_vec()));
        assert!(cache.compare_and_delete("lock", b"theirs")?);
        assert_eq!(cache.get("lock")?, None);
        Ok(())
    }
}
