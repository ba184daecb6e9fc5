//! [`MemoryBackend`]: the in-process store, and the backend used when none is
//! registered (like Django's `LocMemCache`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use coarsetime::Instant as Coarse;
use lru::LruCache;

use super::{BackendCore, BoxFuture, GetOrLock, ImmediateBackend, LockClaim, Op, Part, Reply};
use crate::codec::written_fence;
use crate::error::Error;

/// The default bound on stored bytes: 64 MiB.
const DEFAULT_CAPACITY: usize = 64 * 1024 * 1024;

/// The most shards a store is split into.
const MAX_SHARDS: usize = 16;

/// The least part of the bound a shard is given: a store bounded below twice this has
/// one shard (and an exact least-recently-used order).
const MIN_SHARD_BYTES: usize = 16 * 1024 * 1024;

/// An in-process cache: bounded in bytes, least recently used entries evicted first,
/// time to live honoured (an expired entry is absent) to within one tick of the
/// kernel's coarse monotonic clock (1–4 ms), which is cheap to read on every hit.
/// Safe to share between threads.
///
/// The store is split into up to 16 shards, each behind a reader-writer lock, so
/// that hits on any number of threads (on one hot key too) read in parallel. A key
/// goes to the shard of its hash tag, as in a Redis Cluster: the text between its
/// first `{` and the next `}` when not empty, else the whole key. A value, its lock,
/// its refresh mark and its iterator chunks share their tag, so each operation on
/// them (such as `get_or_lock` or `store_and_release`) is one atomic step in one
/// shard; an operation on keys of several shards locks each of them, in shard order.
/// The bound is split evenly between the shards (each gets at least 16 MiB, so a value
/// of up to 16 MiB is stored whatever the bound above it: the default 64 MiB makes 4
/// shards, a bound under 32 MiB keeps one); a value larger than its shard's part is
/// not stored.
/// Within a shard, eviction takes the least recently stored or promoted entry, giving
/// an entry read since it was last considered a second chance (a hit marks the entry
/// instead of reordering it, so it needs no exclusive lock).
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
    shards: Box<[Shard]>,
}

#[derive(Debug)]
struct Shard {
    store: RwLock<Store>,
    /// Bumped (under its mutex) after each delete, and signalled, so lock waiters
    /// retry at once.
    deletes: Mutex<u64>,
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
    /// Set by a read under the shared lock: eviction gives the entry a second chance.
    read: AtomicBool,
}

impl Entry {
    fn new(value: &[u8], expires_at: Coarse) -> Self {
        Self {
            value: value.to_vec(),
            expires_at,
            read: AtomicBool::new(false),
        }
    }

    /// Marks the entry read; written only when it was not, so that threads reading a
    /// hot key do not all write its cache line.
    fn touch(&self) {
        if !self.read.load(Ordering::Relaxed) {
            self.read.store(true, Ordering::Relaxed);
        }
    }
}

/// The bytes an entry is charged for: its key and value.
fn weight(key: &str, value: &[u8]) -> usize {
    key.len() + value.len()
}

/// One step of the shard hash: a word of the key mixed in.
#[inline]
fn mix(hash: u64, word: u64) -> u64 {
    (hash ^ word)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(23)
}

/// The shard hash of `bytes`: its 8-byte little-endian words (the last padded with
/// zeros), then its length.
fn words_hash(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    let mut hash = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        hash = mix(hash, u64::from_le_bytes(word));
    }
    let mut last = [0; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix(mix(hash, u64::from_le_bytes(last)), bytes.len() as u64)
}

/// [`words_hash`] of `rest` up to its first `}`: the hash of a tag whose `{` came just
/// before `rest`; `None` without a `}` or for an empty tag.
#[inline]
fn tag_hash(rest: &[u8]) -> Option<u64> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const CLOSE: u64 = ONES * b'}' as u64;
    let mut hash = 0;
    let mut chunks = rest.chunks_exact(8);
    let mut len = 0_usize;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let x = word ^ CLOSE;
        // The lowest byte flagged is the first `}` (the trick's false flags lie above it).
        let found = x.wrapping_sub(ONES) & !x & HIGH;
        if found != 0 {
            let at = (found.trailing_zeros() / 8) as usize;
            if len + at == 0 {
                return None;
            }
            let kept = if at == 0 {
                0
            } else {
                word & (u64::MAX >> (64 - 8 * at))
            };
            return Some(mix(mix(hash, kept), (len + at) as u64));
        }
        hash = mix(hash, word);
        len += 8;
    }
    let tail = chunks.remainder();
    if tail.is_empty() {
        return None;
    }
    if rest.len() < 8 {
        let mut last = [0; 8];
        for (at, &b) in tail.iter().enumerate() {
            if b == b'}' {
                if at == 0 {
                    return None;
                }
                return Some(mix(mix(hash, u64::from_le_bytes(last)), at as u64));
            }
            last[at] = b;
        }
        return None;
    }
    // The tail as one word, zero above it: the last eight bytes of `rest` (overlapping
    // the word before), shifted down. Its zero bytes are not `}`, so no byte above the
    // tail is flagged but by the trick's false flags, which lie above a true one.
    let mut word = [0; 8];
    word.copy_from_slice(&rest[rest.len() - 8..]);
    let word = u64::from_le_bytes(word) >> (8 * (8 - tail.len()));
    let x = word ^ CLOSE;
    let found = x.wrapping_sub(ONES) & !x & HIGH;
    if found == 0 {
        return None;
    }
    let at = (found.trailing_zeros() / 8) as usize;
    let kept = if at == 0 {
        0
    } else {
        word & (u64::MAX >> (64 - 8 * at))
    };
    Some(mix(mix(hash, kept), (len + at) as u64))
}

/// What a key is sharded by: its hash tag's content (between the first `{` and the
/// next `}`, when not empty), else the whole key, as Redis Cluster slots are chosen.
/// (The shards are chosen by [`MemoryBackend::shard_of`], which finds the tag and
/// hashes it in one pass; this is its specification.)
#[cfg_attr(not(any(test, debug_assertions)), allow(dead_code))]
fn hash_tag(key: &str) -> &[u8] {
    let bytes = key.as_bytes();
    if let Some(open) = bytes.iter().position(|&b| b == b'{') {
        let rest = &bytes[open + 1..];
        if let Some(len) = rest.iter().position(|&b| b == b'}') {
            if len > 0 {
                return &rest[..len];
            }
        }
    }
    bytes
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

    /// A store bounded at `bytes` of keys and values, split evenly between its shards
    /// (see [`MemoryBackend`]). A value larger than a shard's part is not stored (a
    /// later read is a miss).
    pub fn with_capacity(bytes: usize) -> Self {
        let mut count = 1;
        while count < MAX_SHARDS && bytes / (count * 2) >= MIN_SHARD_BYTES {
            count *= 2;
        }
        Self {
            shards: (0..count)
                .map(|_| Shard {
                    store: RwLock::new(Store {
                        entries: LruCache::unbounded(),
                        locks: HashMap::new(),
                        capacity: bytes / count,
                        used: 0,
                    }),
                    deletes: Mutex::new(0),
                    deleted: Condvar::new(),
                    deleted_async: tokio::sync::Notify::new(),
                })
                .collect(),
        }
    }

    /// The bytes of keys and values stored now (expired entries included until they
    /// are read or evicted).
    pub fn used_bytes(&self) -> usize {
        (0..self.shards.len()).map(|i| self.write(i).used).sum()
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
        (0..self.shards.len())
            .map(|i| {
                let mut store = self.write(i);
                store.sweep();
                store.entries.len() + store.locks.len()
            })
            .sum()
    }

    /// Whether the store holds no entry that has not expired (see [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shard of `key`: of its hash tag (see [`hash_tag`]), found and hashed a
    /// word at a time in one pass (a hit pays ~30 instructions for it, not ~100).
    #[inline]
    fn shard_of(&self, key: &str) -> usize {
        if self.shards.len() == 1 {
            return 0;
        }
        let bytes = key.as_bytes();
        let tagged = match bytes.first() {
            Some(b'{') => tag_hash(&bytes[1..]),
            _ => bytes
                .iter()
                .position(|&b| b == b'{')
                .and_then(|open| tag_hash(&bytes[open + 1..])),
        };
        let hash = tagged.unwrap_or_else(|| words_hash(bytes));
        debug_assert_eq!(hash, words_hash(hash_tag(key)));
        #[allow(clippy::cast_possible_truncation)] // shifted below the shard count
        let index = (hash >> 40) as usize;
        index & (self.shards.len() - 1)
    }

    /// Wakes the waiters for a release of a lock of shard `index`. Called with no
    /// store lock held (a waiter takes `deletes` before it reads the store).
    fn wake_waiters(&self, index: usize) {
        let shard = &self.shards[index];
        *shard.deletes.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        shard.deleted.notify_all();
        shard.deleted_async.notify_waiters();
    }

    // Every mutation below leaves a store consistent before anything can panic, so a
    // poisoned lock still guards a valid store.
    #[inline]
    fn read(&self, index: usize) -> RwLockReadGuard<'_, Store> {
        self.shards[index]
            .store
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, index: usize) -> RwLockWriteGuard<'_, Store> {
        self.shards[index]
            .store
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The live value at `key`, read under the shard's shared lock; an expired one is
    /// dropped (under the exclusive lock) and reads as absent.
    #[inline]
    fn read_value(&self, key: &str) -> Option<Vec<u8>> {
        let index = self.shard_of(key);
        let expired = {
            let store = self.read(index);
            match store.peek_live(key) {
                Ok(entry) => {
                    entry.touch();
                    return Some(entry.value.clone());
                }
                Err(expired) => expired,
            }
        };
        if expired {
            self.write(index).drop_if_expired(key);
        }
        None
    }

    /// The exclusive locks of the shards of `keys`, taken in shard order (so that two
    /// operations on the same shards cannot wait for each other).
    fn write_all(&self, keys: &[&str]) -> Locked<'_> {
        let mut indexes: Vec<usize> = keys.iter().map(|key| self.shard_of(key)).collect();
        indexes.sort_unstable();
        indexes.dedup();
        Locked {
            backend: self,
            guards: indexes.into_iter().map(|i| (i, self.write(i))).collect(),
        }
    }
}

/// The exclusive locks of the shards one operation touches.
struct Locked<'a> {
    backend: &'a MemoryBackend,
    guards: Vec<(usize, RwLockWriteGuard<'a, Store>)>,
}

impl Locked<'_> {
    /// The store holding `key` (its shard is among those locked).
    fn at(&mut self, key: &str) -> &mut Store {
        let index = self.backend.shard_of(key);
        let at = self
            .guards
            .iter()
            .position(|(i, _)| *i == index)
            .unwrap_or_default();
        &mut self.guards[at].1
    }

    /// Takes the lock if free: its fencing token, from this process's clock and after
    /// the stored value's.
    fn take_lock(&mut self, lock: &LockClaim<'_>) -> Option<u64> {
        let store = self.at(lock.key);
        if store.live(lock.key).is_some() {
            return None;
        }
        store.insert_lock(lock.key, lock.token, lock.ttl);
        let stored = self.at(lock.value_key).stored_fence(lock.value_key);
        Some(crate::fence::PROCESS.next(stored))
    }
}

impl Store {
    /// The live entry at `key` without changing anything; `Err(true)` if it has
    /// expired (to be dropped under the exclusive lock), `Err(false)` if absent. A key
    /// is in at most one of the two maps (both inserts remove it first), so a live
    /// value, the hit path, costs one lookup.
    #[inline]
    fn peek_live(&self, key: &str) -> Result<&Entry, bool> {
        let now = now();
        let entry = match self.entries.peek(key) {
            Some(entry) => entry,
            None => self.locks.get(key).ok_or(false)?,
        };
        if entry.expires_at > now {
            Ok(entry)
        } else {
            Err(true)
        }
    }

    /// Drops the entry at `key` if it has expired (another thread may have replaced
    /// it since it was seen expired).
    fn drop_if_expired(&mut self, key: &str) {
        if let Err(true) = self.peek_live(key) {
            self.remove(key);
        }
    }

    /// `f` of the live entry at `key`, dropping it if it has expired.
    fn read_live<R>(&mut self, key: &str, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        self.live(key).map(f)
    }

    /// The live entry at `key` (a lock or a value), dropping it if it has expired.
    fn live(&mut self, key: &str) -> Option<&mut Entry> {
        match self.peek_live(key) {
            Ok(_) => {}
            Err(true) => {
                self.remove(key);
                return None;
            }
            Err(false) => return None,
        }
        if self.locks.contains_key(key) {
            return self.locks.get_mut(key);
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
        self.locks
            .insert(key.to_owned(), Entry::new(value, expiry(ttl)));
    }

    fn insert(&mut self, key: &str, value: &[u8], ttl: Duration) {
        self.remove(key);
        let needed = weight(key, value);
        // A large value's chunks (all in this shard: one hash tag) are refused from the
        // first when the whole value could not fit, as the value itself would be:
        // storing some would evict the shard for a value never read back whole.
        let family = crate::key::large_family_bytes(key).unwrap_or(0);
        if needed > self.capacity || family > self.capacity {
            tracing::debug!(
                key,
                bytes = needed,
                "value larger than the memory backend's shard; not stored"
            );
            return;
        }
        while self.used + needed > self.capacity {
            match self.entries.pop_lru() {
                // Read since it was stored or last given a chance: it goes to the
                // front instead (at most once per entry per pass, so this ends).
                Some((old_key, old)) if old.read.swap(false, Ordering::Relaxed) => {
                    self.entries.push(old_key, old);
                }
                Some((old_key, old)) => self.used -= weight(&old_key, &old.value),
                None => break,
            }
        }
        self.used += needed;
        self.entries
            .put(key.to_owned(), Entry::new(value, expiry(ttl)));
    }
}

/// The store's clock: the coarse monotonic clock (`CLOCK_MONOTONIC_COARSE` on Linux),
/// which the kernel updates every tick (1–4 ms). Reading it costs a few nanoseconds
/// where `Instant::now` costs 40–60 ns on virtual machines, a third of a hit; in
/// exchange an entry lives its TTL give or take one tick (the least lock `expire`,
/// 100 ms, renewed every third of it, leaves ample margin).
#[inline]
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
            Op::Get { key } => Reply::Value(self.read_value(key)),
            Op::GetMany { keys } | Op::GetTagged { keys, .. } => {
                Reply::Values(self.read_many(keys))
            }
            Op::Set { key, value, ttl } => {
                self.write(self.shard_of(key)).insert(key, value, ttl);
                Reply::Done
            }
            // Outside the size bound: `add` is how locks are taken.
            Op::Add { key, value, ttl } => {
                let mut store = self.write(self.shard_of(key));
                let free = store.live(key).is_none();
                if free {
                    store.insert_lock(key, value, ttl);
                }
                Reply::Applied(free)
            }
            Op::Delete { key } => {
                let index = self.shard_of(key);
                let removed = self.write(index).remove(key);
                if removed {
                    self.wake_waiters(index);
                }
                Reply::Done
            }
            Op::CompareAndDelete { key, expected } => {
                let index = self.shard_of(key);
                let mut store = self.write(index);
                let matches = store.live(key).is_some_and(|entry| entry.value == expected);
                let removed = matches && store.remove(key);
                drop(store);
                if removed {
                    self.wake_waiters(index);
                }
                Reply::Applied(removed)
            }
            Op::CompareAndExtend { key, expected, ttl } => {
                let mut store = self.write(self.shard_of(key));
                let entry = store.live(key).filter(|entry| entry.value == expected);
                let extended = entry.map(|entry| entry.expires_at = expiry(ttl));
                Reply::Applied(extended.is_some())
            }
            Op::GetOrLock { key, lock } => {
                let mut locked = self.write_all(&[key, lock.key, lock.value_key]);
                let found = locked.at(key).read_live(key, |entry| entry.value.clone());
                Reply::Found(match found {
                    Some(value) => GetOrLock::Value(value),
                    None => match locked.take_lock(&lock) {
                        Some(fence) => GetOrLock::Locked { fence },
                        None => GetOrLock::Held,
                    },
                })
            }
            Op::TakeLock { lock } => {
                Reply::Fence(self.write_all(&[lock.key, lock.value_key]).take_lock(&lock))
            }
            Op::StoreAndRelease {
                key,
                value,
                ttl,
                lock,
            } => Reply::Applied(self.store_and_release(key, value, ttl, &lock)),
            Op::Invalidate { key, lock_key } => {
                let mut locked = self.write_all(&[key, lock_key]);
                locked.at(key).remove(key);
                let voided = locked.at(lock_key).remove(lock_key);
                drop(locked);
                if voided {
                    self.wake_waiters(self.shard_of(lock_key));
                }
                Reply::Done
            }
            Op::ExpireMany { keys, ttl } => {
                let mut locked = self.write_all(keys);
                let mut present = 0;
                for key in keys {
                    let store = locked.at(key);
                    if ttl.is_zero() {
                        present += usize::from(store.remove(key));
                    } else if let Some(entry) = store.live(key) {
                        entry.expires_at = expiry(ttl);
                        present += 1;
                    }
                }
                Reply::Count(present)
            }
            Op::WaitForRelease { lock_key, max, .. } => {
                self.wait_for_release(lock_key, max);
                Reply::Done
            }
            Op::Many { parts } => self.many(parts)?,
            Op::Decoded { .. } => Reply::Decoded(None),
            Op::KeepDecoded { .. } => Reply::Done,
        })
    }
}

impl MemoryBackend {
    /// A batch's parts, each as its own operation (each atomic under its keys' shards).
    #[inline(never)]
    fn many(&self, parts: &[Part<'_>]) -> Result<Reply, Error> {
        let replies = Part::run(parts, |op| self.execute(op));
        Ok(Reply::Many(replies.into_iter().collect::<Result<_, _>>()?))
    }
}

impl MemoryBackend {
    /// The live values at `keys`: one atomic read when they share a shard (a key and
    /// its marks), else each read alone. An expired entry reads as absent (it goes
    /// when read alone).
    fn read_many(&self, keys: &[&str]) -> Vec<Option<Vec<u8>>> {
        let first = keys.first().map(|key| self.shard_of(key));
        let one_shard = keys.iter().all(|key| Some(self.shard_of(key)) == first);
        match first {
            Some(index) if one_shard => {
                let store = self.read(index);
                keys.iter()
                    .map(|key| {
                        let entry = store.peek_live(key).ok()?;
                        entry.touch();
                        Some(entry.value.clone())
                    })
                    .collect()
            }
            _ => keys.iter().map(|key| self.read_value(key)).collect(),
        }
    }

    /// Returns when the lock at `lock_key` is deleted (or already absent), or after
    /// `max`.
    fn wait_for_release(&self, lock_key: &str, max: Duration) {
        let index = self.shard_of(lock_key);
        let shard = &self.shards[index];
        // Taken before the check: a delete after it bumps the count only once this
        // thread waits, so it cannot slip in between.
        let deletes = shard.deletes.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = *deletes;
        if self.read(index).locks.contains_key(lock_key) {
            let _ = shard
                .deleted
                .wait_timeout_while(deletes, max, |now| *now == seen);
        }
    }

    /// Stores under the lock if it is still ours and the write is newer; releases it.
    fn store_and_release(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        lock: &LockClaim<'_>,
    ) -> bool {
        let mut locked = self.write_all(&[key, lock.key]);
        let ours = locked
            .at(lock.key)
            .live(lock.key)
            .is_some_and(|entry| entry.value == lock.token);
        if !ours {
            return false;
        }
        // While the lock is ours nobody else stores under it: a value written under a
        // later token can only have come from outside the lock (a `set`). It stands.
        let store = locked.at(key);
        let newer = crate::codec::newer(lock.fence, store.stored_fence(key));
        if newer {
            store.insert(key, value, ttl);
        }
        locked.at(lock.key).remove(lock.key);
        drop(locked);
        self.wake_waiters(self.shard_of(lock.key));
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
            let index = self.shard_of(lock_key);
            let deleted = self.shards[index].deleted_async.notified();
            let mut deleted = std::pin::pin!(deleted);
            // Registered before the check, so a delete in between still wakes us.
            deleted.as_mut().enable();
            if !self.read(index).locks.contains_key(lock_key) {
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
    fn a_key_is_sharded_by_its_hash_tag() {
        assert_eq!(hash_tag("{shop:cart:7}"), b"shop:cart:7");
        assert_eq!(hash_tag("_lock_:{shop:cart:7}"), b"shop:cart:7");
        assert_eq!(hash_tag("_refresh_:{shop:cart:7}"), b"shop:cart:7");
        assert_eq!(
            hash_tag("{shop:cart:7}:chunk:00000000000000ff:3"),
            b"shop:cart:7"
        );
        assert_eq!(hash_tag("plain"), b"plain");
        assert_eq!(hash_tag("{}x"), b"{}x");
        assert_eq!(hash_tag("a{b"), b"a{b");
        let cache = MemoryBackend::with_capacity(MAX_SHARDS * MIN_SHARD_BYTES);
        assert_eq!(cache.shards.len(), MAX_SHARDS);
        assert_eq!(
            MemoryBackend::new().shards.len(),
            4,
            "64 MiB: 4 shards of 16 MiB"
        );
        let key = "{app:k}";
        for other in ["_lock_:{app:k}", "_refresh_:{app:k}", "{app:k}:chunk:0:1"] {
            assert_eq!(cache.shard_of(key), cache.shard_of(other), "{other}");
        }
        for tag in [
            "",
            "a",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefghijk",
            "abcdefghijklmno",
            "0123456789abcdef}x",
            "x}",
            "{abcdefghij",
            "x{abcdefghijklm",
        ] {
            for key in [
                format!("{{{tag}}}"),
                format!("_lock_:{{{tag}}}:z"),
                tag.to_string(),
            ] {
                let tagged = key
                    .find('{')
                    .and_then(|open| tag_hash(&key.as_bytes()[open + 1..]));
                let hash = tagged.unwrap_or_else(|| words_hash(key.as_bytes()));
                assert_eq!(hash, words_hash(hash_tag(&key)), "{key}");
            }
        }
        let spread: std::collections::HashSet<usize> = (0..64)
            .map(|i| cache.shard_of(&format!("{{app:{i}}}")))
            .collect();
        assert!(spread.len() > 1, "keys spread over the shards");
    }

    #[test]
    fn the_bound_is_split_between_the_shards() -> Result<(), Error> {
        let cache = MemoryBackend::with_capacity(4 * MIN_SHARD_BYTES);
        assert_eq!(cache.shards.len(), 4);
        let ttl = Duration::from_secs(60);
        let value = vec![0_u8; 64 * 1024];
        for i in 0..200 {
            cache.set(&format!("k{i}"), &value, ttl)?;
        }
        assert!(cache.used_bytes() <= 4 * MIN_SHARD_BYTES);
        for index in 0..4 {
            assert!(cache.write(index).used <= MIN_SHARD_BYTES);
        }
        cache.set("big", &vec![0; 2 * MIN_SHARD_BYTES], ttl)?;
        assert_eq!(cache.get("big")?, None, "larger than a shard's part");
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

#[cfg(test)]
#[path = "memory_against_old.rs"]
mod against_old;
