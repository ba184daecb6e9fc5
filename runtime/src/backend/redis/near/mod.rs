//! The near cache: [`NearCache`] (its public settings) and [`Tier`] (the near tier
//! itself, one per backend): an in-process copy of values read from Redis, kept
//! coherent by the server's invalidation messages (`tracking.rs` receives them).
//!
//! - Only stamped memoized values are kept (never locks, iterator chunks
//!   or manifests), and a copy lives no longer than its stamp says the value is
//!   fresh: never past the value's own TTL, which is `expire + stale`.
//! - Tags' epochs (`_tag_:` keys, see `tags.rs`) are kept too, read by a tagged read
//!   (`Op::GetTagged`) with its value, each under its own ticket: a tagged read is
//!   answered here only when the value's copy *and* every epoch's copy are here, and
//!   an invalidation of an epoch drops its copy as any other (the next read goes to
//!   Redis and sees the moved epoch). An epoch's copy lives until then, or at most
//!   [`TAG_LIFE`] (the server also tells of an epoch's expiry and eviction).
//!   Under prefixes, `_tag_:` + each prefix is tracked as well: the epochs of tags
//!   made under the covered key prefix. A tag outside them is never kept, so its
//!   values are never served near (their reads go to Redis).
//! - A copy is served only while the invalidation connection is known to be live. When
//!   it breaks, everything is dropped and reads go to Redis until tracking is on again.
//! - A read from Redis that raced with an invalidation must not put back what it read
//!   after the invalidation arrived: every read takes a [`Ticket`] (the global epoch
//!   and its key's stripe epoch) before it is sent, and its value is kept only if
//!   neither changed meanwhile. Each invalidation bumps its key's stripe; each change
//!   of the link (lost, live again, `FLUSHALL`) bumps the global epoch. The check and
//!   the insertion happen under the shard's lock, and an invalidation bumps before it
//!   takes that lock to remove the key: whichever comes second sees the other.
//! - A read from Redis that finds anything other than the copy (a newer value whose
//!   invalidation has not arrived yet, or the key empty) drops the copy, whatever its
//!   ticket: a caller that got the newer value is never served the older copy after it.
//! - Writes through this process drop the local copy as soon as they return.
//! - Bounded in bytes (keys and values), least recently used first, in 16 shards (one
//!   reader-writer lock each) so that threads reading different keys rarely meet. A
//!   hit takes its shard's lock shared (threads on one hot key read in parallel): it
//!   marks the entry read instead of reordering the shard's LRU list, and eviction
//!   gives a marked entry a second chance. Its count goes to a per-thread slot.

pub(crate) mod tracking;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use coarsetime::{Duration as CoarseDuration, Instant as Coarse};
use foldhash::fast::RandomState;
use lru::LruCache;

use crate::codec;
use crate::kept::{DecodedValue, KeptValue};
use crate::tags::{TAG_LIFE, TAG_PREFIX};

/// The default bound of a near cache: 32 MiB of keys and values.
pub const DEFAULT_NEAR_CACHE_CAPACITY: usize = 32 * 1024 * 1024;

const SHARDS: usize = 16;
const STRIPES: usize = 1024;

/// Settings of the near cache of a [`RedisBackend`](crate::RedisBackend), given to
/// [`RedisBuilder::near_cache`](crate::RedisBuilder::near_cache).
///
/// ```no_run
/// use cache_memoize::{NearCache, RedisBackend};
///
/// let backend = RedisBackend::builder(["redis://127.0.0.1/"])
///     .near_cache(NearCache::new().capacity(64 * 1024 * 1024).prefix("shop:"))
///     .connect()?;
/// # Ok::<(), cache_memoize::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct NearCache {
    capacity: usize,
    prefixes: Vec<String>,
}

impl Default for NearCache {
    fn default() -> Self {
        Self::new()
    }
}

impl NearCache {
    /// A near cache of [`DEFAULT_NEAR_CACHE_CAPACITY`] bytes, told of writes to every
    /// key of the server.
    pub fn new() -> Self {
        Self {
            capacity: DEFAULT_NEAR_CACHE_CAPACITY,
            prefixes: Vec::new(),
        }
    }

    /// The bound on the bytes of keys and values kept (default 32 MiB). It is split
    /// into 16 shards: a value larger than a sixteenth of it is never kept near.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// Asks the server only for invalidations of keys made under the [key
    /// prefix](crate::set_key_prefix) `prefix` (call it again for several). Without
    /// one, every write to the server sends this process a message. The prefix must
    /// cover every key memoized through this backend: a value under another key would
    /// never be invalidated, so it is never kept near.
    ///
    /// Keys are stored as `{prefix:key}` (see [`make_cache_key`](crate::make_cache_key)):
    /// `"shop:"` (or `"shop"`, which also covers `"shopping"`) covers the keys made
    /// under `set_key_prefix("shop")` or as `make_cache_key("shop:…")`; the server is
    /// told `{shop:`. A prefix that already starts with `{` is taken as the start of
    /// the stored keys, as it is. A prefix inside another (`"shop:eu:"` beside
    /// `"shop:"`) adds nothing and is not sent: Redis refuses overlapping prefixes.
    ///
    /// The epochs of [tags](crate::invalidate_tag) made under the same key prefix are
    /// covered too (`_tag_:{shop:` is tracked beside `{shop:`), so tagged values are
    /// served near. A tagged value whose tags' epochs are outside the prefixes (a tag
    /// made under another key prefix) is never served near: its reads go to Redis.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix: String = prefix.into();
        let stored = if prefix.starts_with('{') {
            prefix
        } else {
            // Escaped as `set_key_prefix` escapes it.
            format!("{{{}", crate::key::sanitize(&prefix))
        };
        self.prefixes.push(stored);
        self
    }

    /// These settings told of every key: under encryption, stored key names are
    /// hashed and no longer start with a prefix.
    pub(crate) fn every_key(mut self) -> Self {
        self.prefixes.clear();
        self
    }

    /// Whether prefixes were asked for.
    pub(crate) fn has_prefixes(&self) -> bool {
        !self.prefixes.is_empty()
    }
}

/// How many reads of keys outside the prefixes (and none inside) make the near tier
/// say that it covers none of the keys read through it.
const UNCOVERED_WARNING: u64 = 32;

/// The near tier of one backend.
pub(crate) struct Tier {
    shards: Box<[RwLock<Shard>]>,
    /// Near hits, counted in the slot of the thread that served them (threads hitting
    /// one key do not write one counter).
    hits: Box<[HitSlot]>,
    /// Per stripe of keys: bumped by each invalidation of a key of the stripe.
    stripes: Box<[AtomicU64]>,
    /// Bumped by every change of the link and every flush.
    global: AtomicU64,
    /// Whether tracking is on on a live invalidation connection.
    live: AtomicBool,
    /// Which invalidation connection is current (see [`Tier::connecting`]).
    link: Mutex<Link>,
    hasher: RandomState,
    prefixes: Vec<String>,
    /// Whether a read of a key under the prefixes was seen; until one is, the reads of
    /// keys outside them are counted, and at [`UNCOVERED_WARNING`] of them the tier
    /// says once that it covers none of the keys read through it.
    covered: AtomicBool,
    uncovered: AtomicU64,
    invalidations: AtomicU64,
    /// The wall clock and the coarse clock at the last heartbeat (see
    /// [`Tier::check_clocks`]).
    clocks: Mutex<Option<(u64, Coarse)>>,
}

#[derive(Default)]
struct Link {
    generation: u64,
    lost: bool,
}

struct Shard {
    entries: LruCache<String, Entry>,
    used: usize,
    capacity: usize,
}

/// How many counters near hits are spread over.
const HIT_SLOTS: usize = 16;

/// One counter of near hits, alone on its cache line.
#[repr(align(128))]
#[derive(Default)]
struct HitSlot(AtomicU64);

/// Hands each thread its slot of the hit counters, in turn.
static NEXT_HIT_SLOT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static HIT_SLOT: usize = {
        #[allow(clippy::cast_possible_truncation)] // reduced below HIT_SLOTS
        let slot = (NEXT_HIT_SLOT.fetch_add(1, Ordering::Relaxed) % HIT_SLOTS as u64) as usize;
        slot
    };
}

struct Entry {
    value: Vec<u8>,
    /// When the copy is dropped: before the value stops being fresh (see [`deadline`]).
    until: Coarse,
    /// The value decoded from exactly these bytes, for `keep_decoded` calls.
    decoded: Option<DecodedValue>,
    /// Set by a hit (under the shared lock): eviction gives the entry a second chance.
    read: AtomicBool,
}

impl Entry {
    /// The bytes the entry under `key` is charged for: its key and value, and the
    /// value's length again once a decoded form is kept (its true size is unknown).
    fn weight(&self, key: &str) -> usize {
        let decoded = if self.decoded.is_some() {
            self.value.len()
        } else {
            0
        };
        weight(key, &self.value) + decoded
    }
}

/// The epochs a read from Redis saw before it was sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    global: u64,
    stripe: usize,
    stripe_epoch: u64,
}

/// `prefixes` without those inside another: they add nothing to what is covered, and
/// the server refuses overlapping prefixes (tracking would never go on).
fn outermost(prefixes: &[String]) -> Vec<String> {
    let mut sorted = prefixes.to_vec();
    sorted.sort();
    sorted.dedup();
    // Sorted, a prefix comes before every key (and prefix) that starts with it.
    let mut kept: Vec<String> = Vec::with_capacity(sorted.len());
    for prefix in sorted {
        if !kept.iter().any(|outer| prefix.starts_with(outer.as_str())) {
            kept.push(prefix);
        }
    }
    kept
}

/// What the server is told to track for `prefixes`: each, and the tags' epochs under
/// it (`_tag_:` then the prefix: a tag's key is `_tag_:` then the tag made a key).
fn tracked(prefixes: &[String]) -> Vec<String> {
    let tags = prefixes
        .iter()
        .map(|prefix| format!("{TAG_PREFIX}{prefix}"));
    prefixes.iter().cloned().chain(tags).collect()
}

/// The bytes an entry is charged for.
fn weight(key: &str, value: &[u8]) -> usize {
    key.len() + value.len()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// How much earlier than its value stops being fresh a copy is dropped: more than one
/// tick of the coarse clock (1–10 ms, by the kernel's tick rate), so that a copy is
/// never served past it.
const MARGIN_MS: u64 = 20;

/// The coarse monotonic clock (`CLOCK_MONOTONIC_COARSE` on Linux): a few nanoseconds a
/// read, where the wall clock costs 40–60 ns on virtual machines, a fifth of a near hit.
fn now() -> Coarse {
    // Not `Coarse::now`: that also writes a process-wide "recent" time, a cache line
    // every thread's hits would fight over.
    Coarse::now_without_cache_update()
}

/// When to drop a copy of a value fresh until `until_ms` (Unix milliseconds, on its
/// writer's clock), read now: the wall-clock time left, less [`MARGIN_MS`], from now
/// on the coarse clock; `None` if that leaves nothing. The coarse clock lags real time
/// by less than a tick, and the margin covers more than one: the copy goes before the
/// value stops being fresh, even if the wall clock is set back meanwhile.
fn deadline(until_ms: u64) -> Option<Coarse> {
    // The coarse clock first: time that passes before the wall clock is read (this
    // thread preempted between the two reads) then shortens the copy's life. Read
    // after, it would lengthen it by as much, past the margin if longer.
    let start = now();
    let left = until_ms.checked_sub(now_ms())?.checked_sub(MARGIN_MS)?;
    if left == 0 {
        return None;
    }
    // Far-future stamps (`Stamp::FOREVER`) are capped: a copy lives at most a year.
    let left = left.min(365 * 24 * 3600 * 1000);
    Some(start + CoarseDuration::from_millis(left))
}

impl Tier {
    pub(crate) fn new(settings: &NearCache) -> Self {
        let per_shard = settings.capacity / SHARDS;
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Shard {
                        entries: LruCache::unbounded(),
                        used: 0,
                        capacity: per_shard,
                    })
                })
                .collect(),
            hits: (0..HIT_SLOTS).map(|_| HitSlot::default()).collect(),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            global: AtomicU64::new(0),
            live: AtomicBool::new(false),
            link: Mutex::default(),
            hasher: RandomState::default(),
            prefixes: outermost(&tracked(&settings.prefixes)),
            covered: AtomicBool::new(false),
            uncovered: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            clocks: Mutex::default(),
        }
    }

    /// The shard and the stripe of `key`.
    fn place(&self, key: &[u8]) -> (usize, usize) {
        let hash = self.hasher.hash_one(key);
        #[allow(clippy::cast_possible_truncation)] // only the low bits are wanted
        let low = hash as usize;
        (low % SHARDS, (low >> 4) % STRIPES)
    }

    fn shard(&self, index: usize) -> RwLockWriteGuard<'_, Shard> {
        // Every mutation leaves a shard consistent before anything can panic.
        self.shards[index]
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn read_shard(&self, index: usize) -> RwLockReadGuard<'_, Shard> {
        self.shards[index]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The near copy of `key`, while tracking is live and the copy is fresh.
    pub(crate) fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.serve(key, |entry| Some(entry.value.clone()))
    }

    /// The decoded value kept beside the near copy of `key`, when the copy would be
    /// served now (see [`get`](Self::get)) and `accept` takes it (a hit only then).
    pub(crate) fn decoded(
        &self,
        key: &str,
        accept: &dyn Fn(&KeptValue) -> bool,
    ) -> Option<DecodedValue> {
        self.serve(key, |entry| {
            let decoded = entry.decoded.as_ref()?;
            accept(&**decoded).then(|| DecodedValue::clone(decoded))
        })
    }

    /// The near copies of a tagged read's `keys` (`Op::GetTagged`: the value's first
    /// when `with_value`, then its tags' epochs), when every one is here and would be
    /// served now; counted as one near hit (the value's). `None` sends the read to
    /// Redis: one copy missing (an epoch invalidated, never read, outside the prefixes)
    /// and none is served.
    pub(crate) fn get_tagged<K: AsRef<str>>(
        &self,
        keys: &[K],
        with_value: bool,
    ) -> Option<Vec<Option<Vec<u8>>>> {
        let (value, epochs) = keys.split_at(usize::from(with_value));
        let mut copies = Vec::with_capacity(keys.len());
        // The value's place first, its copy taken last: it counts as a hit, so only
        // once every epoch is here.
        copies.extend(value.iter().map(|_| None));
        for epoch in epochs {
            let copy = self.copy(epoch.as_ref(), |entry| Some(entry.value.clone()))?;
            copies.push(Some(copy));
        }
        if let Some(key) = value.first() {
            copies[0] = Some(self.get(key.as_ref())?);
        }
        Some(copies)
    }

    /// What `pick` takes from the entry of `key`, while tracking is live and the copy
    /// is fresh; counted as a near hit when it takes something.
    fn serve<R>(&self, key: &str, pick: impl FnOnce(&Entry) -> Option<R>) -> Option<R> {
        let (served, absent) = self.copy(key, |entry| {
            // The mark of an absent value reads as a miss: the call computes; no near hit.
            let absent = codec::is_absent_mark(&entry.value);
            Some((pick(entry)?, absent))
        })?;
        if !absent {
            let slot = HIT_SLOT.try_with(|slot| *slot).unwrap_or(0);
            self.hits[slot].0.fetch_add(1, Ordering::Relaxed);
        }
        // The memoized call that gets it counts it (`cache_memoize_near_hits_total`,
        // labelled by its function) when it is a hit.
        Some(served)
    }

    /// What `pick` takes from the entry of `key`, while tracking is live and the copy
    /// is fresh (not counted).
    #[inline]
    fn copy<R>(&self, key: &str, pick: impl FnOnce(&Entry) -> Option<R>) -> Option<R> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let (index, _) = self.place(key.as_bytes());
        let shard = self.read_shard(index);
        let entry = shard.entries.peek(key)?;
        if entry.until <= now() {
            drop(shard);
            let mut shard = self.shard(index);
            // Another thread may have replaced it meanwhile.
            if shard
                .entries
                .peek(key)
                .is_some_and(|entry| entry.until <= now())
            {
                shard.remove(key);
            }
            return None;
        }
        let served = pick(entry)?;
        // Written only when not set: threads on one hot key do not all write it.
        if !entry.read.load(Ordering::Relaxed) {
            entry.read.store(true, Ordering::Relaxed);
        }
        drop(shard);
        Some(served)
    }

    /// Keeps what `make` builds beside the near copy of `key`, if that copy is `bytes`
    /// and has nothing kept yet, and the bound allows (evicting the least recently
    /// used others if it must).
    pub(crate) fn keep_decoded(
        &self,
        key: &str,
        bytes: &[u8],
        make: &mut dyn FnMut() -> DecodedValue,
    ) {
        if !self.live.load(Ordering::Acquire) {
            return;
        }
        let (shard, _) = self.place(key.as_bytes());
        let mut shard = self.shard(shard);
        let capacity = shard.capacity;
        // `get_mut` makes the entry the most recently used: evicted last.
        let Some(entry) = shard.entries.get_mut(key) else {
            return;
        };
        let fits = entry.weight(key) + entry.value.len() <= capacity;
        // The comparison of the bytes last: it reads all of them, under the lock, and a
        // value too large to keep decoded comes here on each of its hits.
        if entry.decoded.is_some() || !fits || entry.value != bytes {
            return;
        }
        let extra = entry.value.len();
        entry.decoded = Some(make());
        shard.used += extra;
        shard.evict_for(0);
    }

    /// What a read of `key` from Redis must present to keep its value ([`offer`]);
    /// `None` while tracking is not live (nothing read then is kept).
    ///
    /// [`offer`]: Self::offer
    pub(crate) fn ticket(&self, key: &str) -> Option<Ticket> {
        let global = self.global.load(Ordering::SeqCst);
        if !self.live.load(Ordering::SeqCst) {
            return None;
        }
        if !self.covers(key) {
            self.not_covered(key);
            return None;
        }
        if !self.covered.load(Ordering::Relaxed) {
            self.covered.store(true, Ordering::Relaxed);
        }
        let (_, stripe) = self.place(key.as_bytes());
        Some(Ticket {
            global,
            stripe,
            stripe_epoch: self.stripes[stripe].load(Ordering::SeqCst),
        })
    }

    /// Whether the server tells us of writes to `key`.
    fn covers(&self, key: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// Counts a read of `key`, outside the prefixes, while no read inside them was
    /// seen; at the [`UNCOVERED_WARNING`]th, says so once, with the fix: a near cache
    /// pasted without the matching `set_key_prefix` would otherwise never hit, silently.
    #[cold]
    fn not_covered(&self, key: &str) {
        // Counted only until a covered read is seen or the warning was given.
        if self.covered.load(Ordering::Relaxed)
            || self.uncovered.load(Ordering::Relaxed) >= UNCOVERED_WARNING
        {
            return;
        }
        if self.uncovered.fetch_add(1, Ordering::Relaxed) + 1 == UNCOVERED_WARNING {
            tracing::warn!(
                key,
                prefixes = ?self.prefixes,
                "the near cache covers none of the {UNCOVERED_WARNING} keys read through it so \
                 far: it keeps copies only of keys under its prefixes; register the same \
                 prefix with cache_memoize::set_key_prefix (NearCache::prefix(\"shop:\") covers \
                 the keys of set_key_prefix(\"shop\")), or give NearCache::prefix the start of \
                 these keys"
            );
        }
    }

    fn current(&self, ticket: Ticket) -> bool {
        self.live.load(Ordering::SeqCst)
            && self.global.load(Ordering::SeqCst) == ticket.global
            && self.stripes[ticket.stripe].load(Ordering::SeqCst) == ticket.stripe_epoch
    }

    /// Keeps `value`, read from Redis under `ticket`, if it is a fresh memoized value
    /// and nothing invalidated `key` (or broke the link) since the ticket was taken;
    /// `None`: the read found nothing there (see [`keep`](Self::keep)).
    pub(crate) fn offer(&self, key: &str, ticket: Option<Ticket>, value: Option<&[u8]>) {
        let until = value.and_then(codec::fresh_until_ms).and_then(deadline);
        self.keep(key, ticket, value, until);
    }

    /// Keeps what a tagged read (`Op::GetTagged`) found at `keys` (the value's first
    /// when `with_value`, then its tags' epochs), each under its own ticket of
    /// `tickets`, taken before the read was sent: the value as [`offer`](Self::offer)
    /// keeps it, each epoch found for [`TAG_LIFE`] at most. A key invalidated while the
    /// read was in flight has its ticket voided: what was read of it is not kept, and
    /// the next tagged read goes to Redis.
    pub(crate) fn offer_tagged<K: AsRef<str>>(
        &self,
        keys: &[K],
        with_value: bool,
        tickets: &[Option<Ticket>],
        values: &[Option<Vec<u8>>],
    ) {
        let read = keys.iter().zip(tickets).zip(values).enumerate();
        for (index, ((key, ticket), value)) in read {
            if with_value && index == 0 {
                self.offer(key.as_ref(), *ticket, value.as_deref());
            } else {
                let until = value
                    .as_ref()
                    .and_then(|_| now().checked_add(CoarseDuration::from(TAG_LIFE)));
                self.keep(key.as_ref(), *ticket, value.as_deref(), until);
            }
        }
    }

    /// Keeps `value` (what a read from Redis found at `key`) until `until`, if the
    /// ticket is still current (see [`offer`](Self::offer)) and no other copy is there.
    ///
    /// A copy that differs from what the read found is dropped, whatever the ticket
    /// says, and nothing is kept: the read saw a write whose invalidation has not
    /// arrived yet (or an older state, raced by one). The caller may already have
    /// returned the newer of the two; serving the copy next would take that caller
    /// back in time (a newer value read from Redis, then an older copy served). The
    /// next read goes to Redis, until the invalidation settles it. `value` `None` (the
    /// key was empty) or `until` `None` (not a value to keep) only drop the copy.
    fn keep(&self, key: &str, ticket: Option<Ticket>, value: Option<&[u8]>, until: Option<Coarse>) {
        let Some(ticket) = ticket else {
            // Nothing to keep, but a copy it contradicts goes (a read sent while the
            // link was down may come back after it is live again and a copy was kept).
            self.contradicted(key, value);
            return;
        };
        let (shard, _) = self.place(key.as_bytes());
        let mut shard = self.shard(shard);
        if let Some(copy) = shard.entries.peek(key) {
            if value != Some(copy.value.as_slice()) {
                shard.remove(key);
                return;
            }
        }
        let (Some(value), Some(until)) = (value, until) else {
            return;
        };
        // Under the shard's lock: an invalidation that bumped after this check removes
        // the entry once it gets the lock.
        if !self.current(ticket) {
            return;
        }
        shard.insert(key, value, until);
    }

    /// Drops the copy of `key` if it is not `found` (what a read from Redis that is
    /// never kept found there, `None`: nothing): as [`keep`](Self::keep) does first,
    /// for reads that offer nothing (`get_many`, a batch's get-or-locks), so that a
    /// caller that got a newer value from them is not served an older copy after it.
    pub(crate) fn contradicted(&self, key: &str, found: Option<&[u8]>) {
        let (index, _) = self.place(key.as_bytes());
        let differs = |entry: &Entry| found != Some(entry.value.as_slice());
        // Shared first: most keys read so have no copy (chunks) or the same one.
        if !self
            .read_shard(index)
            .entries
            .peek(key)
            .is_some_and(differs)
        {
            return;
        }
        let mut shard = self.shard(index);
        if shard.entries.peek(key).is_some_and(differs) {
            shard.remove(key);
        }
    }

    /// Drops the copy of `key` and voids the tickets of reads in flight on its stripe:
    /// a write through this process, or an invalidation message.
    pub(crate) fn forget(&self, key: &[u8]) {
        let (shard, stripe) = self.place(key);
        self.stripes[stripe].fetch_add(1, Ordering::SeqCst);
        if let Ok(key) = std::str::from_utf8(key) {
            self.shard(shard).remove(key);
        }
    }

    /// An invalidation message for `keys`, or (`None`) for everything (`FLUSHALL`,
    /// `FLUSHDB`).
    pub(crate) fn invalidated(&self, keys: Option<&[&[u8]]>) {
        match keys {
            Some(keys) => keys.iter().for_each(|key| self.forget(key)),
            None => self.flush(),
        }
        // Counted once its copies are gone: whoever sees the count sees them gone.
        self.invalidations.fetch_add(1, Ordering::SeqCst);
    }

    /// At each heartbeat: if the wall clock ran ahead of the coarse clock since the
    /// last one by more than [`MARGIN_MS`] (the machine was suspended, which stops the
    /// coarse clock, or the wall clock was set forward), the copies' deadlines, kept on
    /// the coarse clock, may be late: every copy goes.
    pub(crate) fn check_clocks(&self) {
        let coarse = now();
        let wall = now_ms();
        let mut clocks = self.clocks.lock().unwrap_or_else(PoisonError::into_inner);
        let jumped = clocks.is_some_and(|(last_wall, last_coarse)| {
            let coarse_ms = coarse.duration_since(last_coarse).as_millis();
            wall.saturating_sub(last_wall) > coarse_ms.saturating_add(MARGIN_MS)
        });
        *clocks = Some((wall, coarse));
        drop(clocks);
        if jumped {
            tracing::debug!(
                "near cache: the wall clock ran ahead of the monotonic one (a suspend?); every copy dropped"
            );
            self.flush();
        }
    }

    /// Drops every copy and voids every ticket.
    fn flush(&self) {
        self.global.fetch_add(1, Ordering::SeqCst);
        for index in 0..SHARDS {
            self.shard(index).clear();
        }
    }

    fn link(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new invalidation connection is being opened: its generation. Whatever the
    /// previous one reports from now on is ignored.
    pub(crate) fn connecting(&self) -> u64 {
        let mut link = self.link();
        link.generation += 1;
        link.lost = false;
        link.generation
    }

    /// Tracking is on on connection `generation`: copies may be kept and served again
    /// (unless that connection was lost meanwhile).
    pub(crate) fn went_live(&self, generation: u64) {
        let link = self.link();
        if link.generation != generation || link.lost {
            return;
        }
        self.global.fetch_add(1, Ordering::SeqCst);
        self.live.store(true, Ordering::SeqCst);
    }

    /// Connection `generation` broke (or its heartbeat failed): a message may be lost,
    /// so every copy goes and none is served until tracking is on again.
    pub(crate) fn lost(&self, generation: u64) {
        let mut link = self.link();
        if link.generation != generation {
            return;
        }
        link.lost = true;
        self.live.store(false, Ordering::SeqCst);
        self.flush();
    }

    /// Whether copies are served now.
    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Reads answered from the near tier since it was made.
    pub(crate) fn hits(&self) -> u64 {
        self.hits
            .iter()
            .map(|slot| slot.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Invalidation messages received since it was made.
    pub(crate) fn invalidations(&self) -> u64 {
        self.invalidations.load(Ordering::SeqCst)
    }

    /// What the server is asked to track.
    pub(crate) fn prefixes(&self) -> &[String] {
        &self.prefixes
    }
}

impl Shard {
    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.pop(key) {
            self.used -= old.weight(key);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.used = 0;
    }

    /// Evicts the least recently used entries until `needed` more bytes fit.
    fn evict_for(&mut self, needed: usize) {
        while self.used + needed > self.capacity {
            match self.entries.pop_lru() {
                // Hit since it was kept or last given a chance: it goes to the front
                // instead (at most once per entry per pass, so this ends).
                Some((old_key, old)) if old.read.swap(false, Ordering::Relaxed) => {
                    self.entries.push(old_key, old);
                }
                Some((old_key, old)) => self.used -= old.weight(&old_key),
                None => break,
            }
        }
    }

    fn insert(&mut self, key: &str, value: &[u8], until: Coarse) {
        self.remove(key);
        let needed = weight(key, value);
        if needed > self.capacity {
            return;
        }
        self.evict_for(needed);
        self.used += needed;
        let entry = Entry {
            value: value.to_vec(),
            until,
            decoded: None,
            read: AtomicBool::new(false),
        };
        self.entries.put(key.to_owned(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, Stamp, encode_with};

    fn value(fresh_for_ms: u64) -> Vec<u8> {
        let stamp = Stamp {
            fresh_until_ms: now_ms() + fresh_for_ms,
            compute_ms: 0,
        };
        encode_with(Codec::Bincode, &7_u32, 0, 1, stamp).unwrap_or_default()
    }

    fn live() -> Tier {
        live_with(&NearCache::new())
    }

    fn live_with(settings: &NearCache) -> Tier {
        let near = Tier::new(settings);
        near.went_live(near.connecting());
        near
    }

    #[test]
    fn a_fresh_value_read_while_live_is_served() {
        let near = live();
        let ticket = near.ticket("k");
        let bytes = value(60_000);
        near.offer("k", ticket, Some(&bytes));
        assert_eq!(near.get("k"), Some(bytes));
        assert_eq!(near.hits(), 1);
    }

    #[test]
    fn an_invalidation_during_the_read_voids_its_ticket() {
        let near = live();
        let ticket = near.ticket("k");
        near.invalidated(Some(&[b"k".as_slice()]));
        near.offer("k", ticket, Some(&value(60_000)));
        assert_eq!(near.get("k"), None);
    }

    /// The cluster + near flake (a reader went back from #5 to #4): a read whose
    /// ticket an invalidation voided found the newer value in Redis before this
    /// process had dropped the older copy (the write's own `forget` and its
    /// invalidation message still on their way); the copy was served next. A read that
    /// finds anything but the copy now drops it, whatever its ticket.
    #[test]
    fn a_read_that_finds_another_value_drops_the_copy_whatever_its_ticket() {
        let (old, new) = (value(60_000), value(120_000));
        assert_ne!(old, new);
        // A voided ticket: the newer value found, the older copy dropped.
        let near = live();
        let voided = near.ticket("k");
        near.invalidated(Some(&[b"j".as_slice(), b"k".as_slice()]));
        near.offer("k", near.ticket("k"), Some(&old));
        near.offer("k", voided, Some(&new));
        assert_eq!(near.get("k"), None, "the older copy is not served after");
        // Two reads under one ticket found two values (a write between them, its
        // message not here yet): neither is kept.
        let near = live();
        let (first, second) = (near.ticket("k"), near.ticket("k"));
        near.offer("k", first, Some(&new));
        near.offer("k", second, Some(&old));
        assert_eq!(near.get("k"), None, "two values under one ticket: no copy");
        // The key found empty (invalidated, or a lock there instead).
        let near = live();
        near.offer("k", near.ticket("k"), Some(&old));
        near.offer("k", near.ticket("k"), None);
        assert_eq!(near.get("k"), None, "nothing there: no copy");
        // The same bytes again under a voided ticket leave the copy as it is.
        let near = live();
        let voided = near.ticket("k");
        near.invalidated(Some(&[b"k".as_slice()]));
        near.offer("k", near.ticket("k"), Some(&old));
        near.offer("k", voided, Some(&old));
        assert_eq!(near.get("k"), Some(old), "the copy it agrees with stays");
    }

    /// Review 9: a batch's `get_many` (never kept) found a newer value than the copy
    /// (another process's write, its message not here yet) and left the copy, which
    /// the next single call served. A read never kept now drops a copy it contradicts.
    #[test]
    fn a_read_never_kept_drops_a_copy_it_contradicts() {
        let (old, new) = (value(60_000), value(120_000));
        let near = live();
        near.offer("k", near.ticket("k"), Some(&old));
        near.contradicted("k", Some(&old));
        assert_eq!(near.get("k"), Some(old.clone()), "the same bytes: kept");
        near.contradicted("k", Some(&new));
        assert_eq!(near.get("k"), None, "a newer value found: dropped");
        near.offer("k", near.ticket("k"), Some(&old));
        near.contradicted("k", None);
        assert_eq!(near.get("k"), None, "nothing found: dropped");
        near.contradicted("absent", Some(&new));
        assert_eq!(near.get("absent"), None, "nothing is kept by it");
        // A read without a ticket (sent while the link was down, answered after it is
        // live again and a copy was kept) keeps nothing, and drops what it contradicts.
        near.offer("k", near.ticket("k"), Some(&old));
        near.offer("k", None, Some(&new));
        assert_eq!(near.get("k"), None, "no ticket, a newer value: dropped");
        near.offer("k", near.ticket("k"), Some(&old));
        near.offer_tagged(&["k"], false, &[None], &[Some(new.clone())]);
        assert_eq!(near.get("k"), None, "the same for a tagged read's key");
    }

    #[test]
    fn a_lost_link_flushes_and_bypasses_until_live_again() {
        let near = live();
        near.offer("k", near.ticket("k"), Some(&value(60_000)));
        let before = near.ticket("j");
        near.lost(1);
        assert_eq!(near.get("k"), None);
        assert!(near.ticket("k").is_none());
        near.went_live(near.connecting());
        near.offer("j", before, Some(&value(60_000)));
        assert_eq!(
            near.get("j"),
            None,
            "a read from before the loss is not kept"
        );
    }

    #[test]
    fn an_old_connection_reporting_late_changes_nothing() {
        let near = live();
        let second = near.connecting();
        near.lost(second - 1);
        near.went_live(second);
        assert!(near.is_live());
    }

    #[test]
    fn locks_and_unstamped_bytes_are_never_kept() {
        let near = live();
        near.offer("lock", near.ticket("lock"), Some(b"3f2a-token"));
        near.offer("stale", near.ticket("stale"), Some(&value(0)));
        assert_eq!(near.get("lock"), None);
        assert_eq!(near.get("stale"), None);
    }

    #[test]
    fn keys_outside_the_prefixes_are_never_kept() {
        let near = live_with(&NearCache::new().prefix("app:"));
        near.offer("{other:k}", near.ticket("{other:k}"), Some(&value(60_000)));
        assert_eq!(near.get("{other:k}"), None);
        near.offer("{app:k}", near.ticket("{app:k}"), Some(&value(60_000)));
        assert!(near.get("{app:k}").is_some());
    }

    #[test]
    fn prefixes_inside_another_are_not_tracked() {
        let near = Tier::new(
            &NearCache::new()
                .prefix("eu:")
                .prefix("eu")
                .prefix("eu:shop:")
                .prefix("us:")
                .prefix("eu"),
        );
        assert_eq!(
            near.prefixes(),
            ["_tag_:{eu", "_tag_:{us:", "{eu", "{us:"],
            "each with its tags' epochs"
        );
    }

    /// A tagged read (`Op::GetTagged`) of `keys` from "Redis": tickets taken, then
    /// `meanwhile` (what lands while it is in flight), then what it found offered.
    fn read_tagged(
        near: &Tier,
        keys: &[&str],
        found: &[Option<Vec<u8>>],
        meanwhile: impl FnOnce(),
    ) {
        let tickets: Vec<Option<Ticket>> = keys.iter().map(|key| near.ticket(key)).collect();
        meanwhile();
        near.offer_tagged(keys, true, &tickets, found);
    }

    #[test]
    fn a_tagged_read_is_served_near_only_with_every_epoch_copy() {
        let near = live();
        let keys = ["{v}", "_tag_:{a}", "_tag_:{b}"];
        let bytes = value(60_000);
        let found = [
            Some(bytes.clone()),
            Some(b"ea".to_vec()),
            Some(b"eb".to_vec()),
        ];
        read_tagged(&near, &keys, &found, || {});
        assert_eq!(near.get_tagged(&keys, true), Some(found.to_vec()));
        assert_eq!(near.hits(), 1, "one hit for the value and its epochs");
        assert_eq!(
            near.get_tagged(&keys[1..], false),
            Some(found[1..].to_vec()),
            "the epochs alone"
        );
        assert_eq!(near.hits(), 1, "epochs alone are no hit");
        near.invalidated(Some(&[b"_tag_:{b}".as_slice()]));
        assert_eq!(near.get_tagged(&keys, true), None, "an epoch moved");
        assert_eq!(near.hits(), 1, "no hit counted for a read sent to Redis");
        assert!(near.get("{v}").is_some(), "the value's copy stays");
        // An epoch never read: nothing served either.
        assert_eq!(near.get_tagged(&["{v}", "_tag_:{c}"], true), None);
        near.lost(1);
        near.went_live(near.connecting());
        read_tagged(&near, &keys, &found, || {});
        assert!(near.get_tagged(&keys, true).is_some());
        near.lost(2);
        assert_eq!(
            near.get_tagged(&keys, true),
            None,
            "the link lost: all dropped"
        );
    }

    #[test]
    fn an_epoch_invalidated_during_the_tagged_read_is_not_kept() {
        let near = live();
        let keys = ["{v}", "_tag_:{a}"];
        let found = [Some(value(60_000)), Some(b"old epoch".to_vec())];
        read_tagged(&near, &keys, &found, || {
            near.invalidated(Some(&[b"_tag_:{a}".as_slice()]));
        });
        assert_eq!(
            near.get_tagged(&keys, true),
            None,
            "the old epoch not put back"
        );
        assert!(
            near.get("{v}").is_some(),
            "the value, not invalidated, is kept"
        );
        // The value invalidated instead: the epoch is kept, the value is not.
        let near = live();
        read_tagged(&near, &keys, &found, || {
            near.invalidated(Some(&[b"{v}".as_slice()]));
        });
        assert_eq!(near.get_tagged(&keys, true), None);
        assert_eq!(
            near.get_tagged(&keys[1..], false),
            Some(found[1..].to_vec())
        );
    }

    #[test]
    fn under_prefixes_only_epochs_of_covered_tags_are_kept() {
        let near = live_with(&NearCache::new().prefix("app:"));
        let covered = ["{app:v}", "_tag_:{app:t}"];
        let outside = ["{app:w}", "_tag_:{t}"];
        let found = [Some(value(60_000)), Some(b"epoch".to_vec())];
        read_tagged(&near, &covered, &found, || {});
        read_tagged(&near, &outside, &found, || {});
        assert!(near.get_tagged(&covered, true).is_some());
        assert_eq!(
            near.get_tagged(&outside, true),
            None,
            "an epoch the server does not tell of is never kept"
        );
    }

    #[test]
    fn a_prefix_is_the_key_prefix_or_the_stored_keys_start() {
        let settings = NearCache::new()
            .prefix("shop:")
            .prefix("{raw:")
            .prefix("a b");
        assert_eq!(settings.prefixes, ["{shop:", "{raw:", "{a%20b"]);
    }

    fn kept(tag: u32) -> DecodedValue {
        std::sync::Arc::new(tag)
    }

    fn kept_tag(near: &Tier, key: &str) -> Option<u32> {
        near.decoded(key, &|_| true)
            .and_then(|kept| kept.downcast_ref::<u32>().copied())
    }

    #[test]
    fn a_decoded_value_is_kept_beside_its_own_bytes_only() {
        let near = live();
        let bytes = value(60_000);
        near.offer("k", near.ticket("k"), Some(&bytes));
        let mut other = bytes.clone();
        other.push(0);
        near.keep_decoded("k", &other, &mut || kept(1));
        assert_eq!(kept_tag(&near, "k"), None, "not beside other bytes");
        near.keep_decoded("absent", &bytes, &mut || kept(2));
        assert_eq!(kept_tag(&near, "absent"), None);
        near.keep_decoded("k", &bytes, &mut || kept(3));
        near.keep_decoded("k", &bytes, &mut || kept(4));
        assert_eq!(kept_tag(&near, "k"), Some(3), "the first one kept stays");
    }

    #[test]
    fn a_decoded_value_goes_with_its_bytes() {
        let near = live();
        let keep = |near: &Tier| {
            let bytes = value(60_000);
            near.offer("k", near.ticket("k"), Some(&bytes));
            near.keep_decoded("k", &bytes, &mut || kept(1));
            assert_eq!(kept_tag(near, "k"), Some(1));
        };
        keep(&near);
        near.invalidated(Some(&[b"k".as_slice()]));
        assert_eq!(kept_tag(&near, "k"), None, "invalidated");
        keep(&near);
        near.invalidated(None);
        assert_eq!(kept_tag(&near, "k"), None, "flushed");
        keep(&near);
        near.lost(1);
        assert_eq!(kept_tag(&near, "k"), None, "link lost");
        near.went_live(near.connecting());
        keep(&near);
        let other = value(60_000);
        near.offer("k", near.ticket("k"), Some(&other));
        assert_eq!(kept_tag(&near, "k"), None, "replaced by a newer read");
    }

    #[test]
    fn a_decoded_value_is_charged_and_never_kept_past_the_bound() {
        let bytes = value(60_000);
        let entry = weight("k0", &bytes);
        // Room for three entries' bytes in each shard, not for two kept decoded.
        let near = live_with(&NearCache::new().capacity(SHARDS * (3 * entry)));
        near.offer("k0", near.ticket("k0"), Some(&bytes));
        let (shard, _) = near.place(b"k0");
        near.keep_decoded("k0", &bytes, &mut || kept(1));
        assert_eq!(near.shard(shard).used, 2 * entry - "k0".len());
        let used: usize = (0..SHARDS).map(|i| near.shard(i).used).sum();
        assert!(used <= SHARDS * 3 * entry);
        let tiny = live_with(&NearCache::new().capacity(SHARDS * entry));
        tiny.offer("k0", tiny.ticket("k0"), Some(&bytes));
        tiny.keep_decoded("k0", &bytes, &mut || kept(1));
        assert_eq!(
            kept_tag(&tiny, "k0"),
            None,
            "no room for it: the bytes stay alone"
        );
        assert!(tiny.get("k0").is_some());
    }

    #[test]
    fn a_copy_is_dropped_before_its_value_stops_being_fresh() {
        let now_ms = now_ms();
        assert!(deadline(now_ms + MARGIN_MS).is_none(), "within the margin");
        assert!(
            deadline(now_ms.saturating_sub(1)).is_none(),
            "stale already"
        );
        let Some(until) = deadline(now_ms + 60_000) else {
            panic!("a minute of freshness leaves a deadline");
        };
        let left = until.duration_since(now()).as_millis();
        assert!(left <= 60_000 - MARGIN_MS, "{left} ms left");
        assert!(
            deadline(u64::MAX).is_some(),
            "a value fresh forever is kept"
        );
    }

    /// Review: `used` is the sum of what the entries are charged for, and within the
    /// bound, after any sequence of offers, kept values, hits, invalidations and flushes
    /// (an underflow would panic in a debug build).
    #[test]
    fn the_charge_stays_the_sum_of_the_entries_under_any_sequence() {
        let sizes = [0_usize, 1, 40, 100, 300, 700, 1500];
        let values: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&size| {
                let stamp = Stamp {
                    fresh_until_ms: now_ms() + 60_000,
                    compute_ms: 0,
                };
                encode_with(Codec::Bincode, &vec![7_u8; size], 0, 1, stamp).unwrap_or_default()
            })
            .collect();
        let near = live_with(&NearCache::new().capacity(SHARDS * 1024));
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % bound as u64).unwrap_or_default()
        };
        for _ in 0..20_000 {
            let key = format!("k{}", next(40));
            let value = &values[next(values.len())];
            match next(7) {
                0 | 1 => near.offer(&key, near.ticket(&key), Some(value)),
                2 | 3 => {
                    let current = near.get(&key);
                    if let Some(bytes) = current {
                        near.keep_decoded(&key, &bytes, &mut || kept(1));
                    }
                }
                4 => {
                    let _ = near.decoded(&key, &|_| true);
                }
                5 => near.invalidated(Some(&[key.as_bytes()])),
                _ => {
                    if next(100) == 0 {
                        near.invalidated(None);
                    }
                }
            }
            for index in 0..SHARDS {
                let shard = near.shard(index);
                let sum: usize = shard
                    .entries
                    .iter()
                    .map(|(key, entry)| entry.weight(key))
                    .sum();
                assert_eq!(shard.used, sum, "shard {index}");
                assert!(shard.used <= shard.capacity, "shard {index}");
            }
        }
    }

    #[test]
    fn a_wall_clock_ahead_of_the_monotonic_one_drops_every_copy() {
        let near = live();
        near.offer("k", near.ticket("k"), Some(&value(60_000)));
        near.check_clocks();
        near.check_clocks();
        assert!(near.get("k").is_some(), "clocks that agree change nothing");
        // As after ten seconds of suspend: the wall clock moved, the coarse one did not.
        let stamp = near.clocks.lock().map(|clocks| *clocks).ok().flatten();
        let Some((wall, coarse)) = stamp else {
            panic!("the clocks were read");
        };
        *near.clocks.lock().unwrap_or_else(PoisonError::into_inner) = Some((wall - 10_000, coarse));
        near.check_clocks();
        assert!(near.get("k").is_none(), "every copy dropped");
        let before = near.ticket("j");
        near.check_clocks();
        near.offer("j", before, Some(&value(60_000)));
        assert!(
            near.get("j").is_some(),
            "tickets after the flush keep their value"
        );
    }

    #[test]
    fn the_byte_bound_evicts_the_least_recently_used() {
        let near = live_with(&NearCache::new().capacity(SHARDS * 200));
        for i in 0..100 {
            let key = format!("k{i}");
            near.offer(&key, near.ticket(&key), Some(&value(60_000)));
        }
        let used: usize = (0..SHARDS).map(|i| near.shard(i).used).sum();
        assert!(used <= SHARDS * 200);
    }
}
