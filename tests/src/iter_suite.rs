//! Memoized-iterator scenarios: sizes around the chunk boundary, streaming, commit
//! last, early drop, missing and corrupt chunks, backend failure, concurrent callers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use cache_memoize::{
    Clock, MemoizeOptions, committed_chunk_keys, memoize_iter, memoize_iter_async,
};
use serde::de::DeserializeOwned;

use crate::freshness_suite::ManualClock;
use crate::{Fixture, runtime};

/// Envelope bytes at the start of every chunk.
const ENVELOPE: usize = 20;

/// Options with chunks of exactly `items` one-byte items, uncompressed (so stored
/// chunk sizes are exact).
fn chunked(f: &Fixture, items: usize) -> MemoizeOptions {
    f.locked().chunk_size(ENVELOPE + items).compress(false)
}

/// The keys of the chunks of the sequence of `T` committed at `key`.
fn committed<T: DeserializeOwned>(f: &Fixture, key: &str) -> Vec<String> {
    committed_chunk_keys::<T>(key, &f.opts())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Chunk `index` of the sequence of `u8` committed at `key`.
fn chunk(f: &Fixture, key: &str, index: usize) -> Option<Vec<u8>> {
    chunk_of::<u8>(f, key, index)
}

fn chunk_of<T: DeserializeOwned>(f: &Fixture, key: &str, index: usize) -> Option<Vec<u8>> {
    let name = committed::<T>(f, key).get(index)?.clone();
    f.probe.inner().get(&name).ok().flatten()
}

/// How many chunks of the sequence committed at `key` are stored.
fn stored_chunks<T: DeserializeOwned>(f: &Fixture, key: &str) -> usize {
    committed::<T>(f, key)
        .iter()
        .filter(|name| f.probe.inner().get(name).ok().flatten().is_some())
        .count()
}

/// The chunks written so far (committed or not) through the probe that are stored.
fn written_chunks(f: &Fixture) -> usize {
    f.probe
        .keys_of("set")
        .iter()
        .filter(|name| name.contains(":chunk:"))
        .filter(|name| f.probe.inner().get(name).ok().flatten().is_some())
        .count()
}

/// Memoizes `0..n` as `u8`s, counting computations.
fn sequence(f: &Fixture, key: &str, opts: &MemoizeOptions, n: u8, runs: &AtomicUsize) -> Vec<u8> {
    let _ = f;
    memoize_iter(key, opts, || {
        runs.fetch_add(1, Ordering::SeqCst);
        0..n
    })
    .collect()
}

fn round_trip(f: &Fixture, name: &str, n: u8, per_chunk: usize, expected_chunks: usize) {
    let key = f.key(name);
    let opts = chunked(f, per_chunk);
    let runs = AtomicUsize::new(0);
    let expected: Vec<u8> = (0..n).collect();
    assert_eq!(sequence(f, &key, &opts, n, &runs), expected, "miss");
    assert_eq!(sequence(f, &key, &opts, n, &runs), expected, "hit");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(stored_chunks::<u8>(f, &key), expected_chunks);
    for index in 0..expected_chunks {
        assert!(
            chunk(f, &key, index).is_some_and(|c| c.len() <= ENVELOPE + per_chunk),
            "chunk {index} too big"
        );
    }
    assert_eq!(f.lock_token(&key), None);
}

/// An empty sequence is stored (a manifest, no chunk) and read back empty.
pub fn iter_zero_items(f: &Fixture) {
    round_trip(f, "iter-0", 0, 10, 0);
    assert!(
        f.stored(&f.key("iter-0")).is_some(),
        "the manifest marks the empty sequence"
    );
}

/// One item: one chunk.
pub fn iter_one_item(f: &Fixture) {
    round_trip(f, "iter-1", 1, 10, 1);
}

/// Exactly one chunk's worth fills one chunk.
pub fn iter_exactly_one_chunk(f: &Fixture) {
    round_trip(f, "iter-full", 10, 10, 1);
}

/// One item over a chunk's worth starts a second chunk.
pub fn iter_one_over_a_chunk(f: &Fixture) {
    round_trip(f, "iter-over", 11, 10, 2);
}

/// Many chunks, across several read windows.
pub fn iter_many_chunks(f: &Fixture) {
    let key = f.key("iter-many");
    let opts = f.locked().chunk_size(ENVELOPE + 1000).compress(false);
    let runs = AtomicUsize::new(0);
    let expected: Vec<u64> = (0..200_000).collect();
    let computed: Vec<u64> = memoize_iter(&key, &opts, || {
        runs.fetch_add(1, Ordering::SeqCst);
        0..200_000_u64
    })
    .collect();
    let read: Vec<u64> = memoize_iter(&key, &opts, || 0..0_u64).collect();
    assert_eq!((computed == expected, read == expected), (true, true));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(stored_chunks::<u64>(f, &key) > 100);
}

/// Items reach the caller as they are computed, and the manifest appears only after
/// the last one: no reader sees a partial sequence.
pub fn iter_streams_and_commits_last(f: &Fixture) {
    let key = f.key("iter-stream");
    f.probe.clear();
    let produced = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&produced);
    let mut items = memoize_iter(&key, &chunked(f, 2), move || {
        (0..6_u8).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
    });
    assert_eq!(items.next(), Some(0));
    assert_eq!(
        produced.load(Ordering::SeqCst),
        1,
        "the first item came before the rest were computed"
    );
    assert_eq!(items.by_ref().take(4).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(
        written_chunks(f) >= 2,
        "full chunks are stored as they fill"
    );
    assert_eq!(f.stored(&key), None, "no manifest before the end");
    assert!(
        f.lock_token(&key).is_some(),
        "the lock is held while streaming"
    );
    assert_eq!(items.next(), Some(5));
    assert_eq!(items.next(), None);
    assert!(f.stored(&key).is_some(), "the manifest is written last");
    assert_eq!(f.lock_token(&key), None);
    let count = |name: &str| f.probe.ops().iter().filter(|op| **op == name).count();
    assert_eq!(count("set"), 3, "one write per chunk");
    assert_eq!(
        count("expire_many"),
        1,
        "the commit makes every chunk live as long as the value in one step"
    );
    assert_eq!(stored_chunks::<u8>(f, &key), 3);
}

/// Dropping the iterator early commits nothing, removes its chunks, and releases the lock.
pub fn iter_early_drop_commits_nothing(f: &Fixture) {
    let key = f.key("iter-drop");
    f.probe.clear();
    let mut items = memoize_iter(&key, &chunked(f, 2), || 0..10_u8);
    assert_eq!(items.by_ref().take(5).count(), 5);
    drop(items);
    assert_eq!(f.stored(&key), None);
    assert_eq!(written_chunks(f), 0, "the chunks written are gone");
    assert_eq!(
        f.probe
            .ops()
            .iter()
            .filter(|op| **op == "expire_many")
            .count(),
        1,
        "removed in one step"
    );
    assert_eq!(f.lock_token(&key), None);
    let runs = AtomicUsize::new(0);
    assert_eq!(
        sequence(f, &key, &chunked(f, 2), 10, &runs),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the next caller computes");
}

fn damaged(f: &Fixture, name: &str, damage: impl FnOnce(&str)) {
    let key = f.key(name);
    let opts = chunked(f, 3);
    let runs = AtomicUsize::new(0);
    let expected: Vec<u8> = (0..10).collect();
    assert_eq!(sequence(f, &key, &opts, 10, &runs), expected);
    damage(&committed::<u8>(f, &key)[2]);
    assert_eq!(
        sequence(f, &key, &opts, 10, &runs),
        expected,
        "every item once, in order"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2, "recomputed");
    assert_eq!(sequence(f, &key, &opts, 10, &runs), expected);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "and overwritten: a hit again"
    );
}

/// A missing chunk makes the entry a miss: recomputed and overwritten.
pub fn iter_missing_chunk_is_recomputed(f: &Fixture) {
    let inner = Arc::clone(f.probe.inner());
    damaged(f, "iter-missing", |chunk| {
        assert!(inner.delete(chunk).is_ok());
    });
}

/// A corrupt chunk makes the entry a miss: recomputed and overwritten.
pub fn iter_corrupt_chunk_is_recomputed(f: &Fixture) {
    let inner = Arc::clone(f.probe.inner());
    damaged(f, "iter-corrupt", |chunk| {
        let bytes = inner.get(chunk).ok().flatten().unwrap_or_default();
        let mut broken = bytes[..ENVELOPE].to_vec();
        broken.extend_from_slice(&[0xff; 9]);
        assert!(
            inner
                .set(chunk, &broken, std::time::Duration::from_secs(60))
                .is_ok()
        );
    });
}

/// A backend failure mid-stream: the caller still gets every item, and nothing
/// half-written becomes visible.
pub fn iter_backend_failure_mid_stream(f: &Fixture) {
    let key = f.key("iter-failing");
    // The failed backend cannot release the lock either; it ends at its expiry.
    let opts = f
        .opts()
        .chunk_size(ENVELOPE + 2)
        .lock(cache_memoize::LockOptions {
            expire: std::time::Duration::from_millis(100),
            ..crate::fast_lock()
        });
    let mut items = memoize_iter(&key, &opts, || 0..10_u8);
    assert_eq!(items.by_ref().take(3).collect::<Vec<_>>(), [0, 1, 2]);
    f.probe.set_failing(true);
    assert_eq!(items.collect::<Vec<_>>(), [3, 4, 5, 6, 7, 8, 9]);
    f.probe.set_failing(false);
    assert_eq!(f.stored(&key), None, "no manifest: nothing visible");
    let runs = AtomicUsize::new(0);
    assert_eq!(
        sequence(f, &key, &chunked(f, 2), 10, &runs),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Concurrent first callers: one computes, every caller gets the same sequence.
pub fn iter_concurrent_first_callers_compute_once(f: &Fixture) {
    const CALLERS: usize = 8;
    let key = f.key("iter-concurrent");
    let runs = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(CALLERS));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (opts, key, runs, start) = (
                chunked(f, 4),
                key.clone(),
                Arc::clone(&runs),
                Arc::clone(&start),
            );
            std::thread::spawn(move || {
                start.wait();
                memoize_iter(&key, &opts, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    (0..20_u32).map(|n| n * 3)
                })
                .collect::<Vec<u32>>()
            })
        })
        .collect();
    let expected: Vec<u32> = (0..20).map(|n| n * 3).collect();
    for caller in callers {
        assert_eq!(caller.join().ok(), Some(expected.clone()));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// The async form: awaited lookup and computation, then the same sequence.
pub fn iter_async_miss_and_hit(f: &Fixture) {
    let key = f.key("iter-async");
    let runs = AtomicUsize::new(0);
    runtime().block_on(async {
        let opts = chunked(f, 3);
        let first: Vec<u8> = memoize_iter_async(&key, &opts, || async {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            0..8_u8
        })
        .await
        .collect();
        assert_eq!(
            f.probe.ops()[..2],
            ["get", "get_or_lock"],
            "a miss reads once, then locks"
        );
        let second: Vec<u8> = memoize_iter_async(&key, &opts, || async { 0..0_u8 })
            .await
            .collect();
        assert_eq!(first, (0..8).collect::<Vec<_>>());
        assert_eq!(second, first);
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(f.lock_token(&key), None);
}

/// An async hit whose chunk is missing is recomputed before it is returned.
pub fn iter_async_missing_chunk_is_recomputed(f: &Fixture) {
    let key = f.key("iter-async-missing");
    let runs = AtomicUsize::new(0);
    let opts = chunked(f, 3);
    let _ = sequence(f, &key, &opts, 10, &runs);
    assert!(f.probe.inner().delete(&committed::<u8>(f, &key)[1]).is_ok());
    runtime().block_on(async {
        let items: Vec<u8> = memoize_iter_async(&key, &opts, || async {
            runs.fetch_add(1, Ordering::SeqCst);
            0..10_u8
        })
        .await
        .collect();
        assert_eq!(items, (0..10).collect::<Vec<_>>());
    });
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

fn text_rows(n: usize) -> impl Iterator<Item = String> {
    (0..n).map(|i| format!("row {i:06}: the same words again and again and again"))
}

/// Compressed chunks read back as the same items, and are smaller for repetitive data.
pub fn iter_compressed_round_trip(f: &Fixture) {
    let (plain, packed) = (f.key("iter-plain"), f.key("iter-packed"));
    let opts = f.locked().chunk_size(4096);
    let expected: Vec<String> = text_rows(500).collect();
    let first: Vec<String> =
        memoize_iter(&plain, &opts.clone().compress(false), || text_rows(500)).collect();
    let second: Vec<String> =
        memoize_iter(&packed, &opts.clone().compress(true), || text_rows(500)).collect();
    let again: Vec<String> =
        memoize_iter(&packed, &opts.clone().compress(true), || text_rows(0)).collect();
    assert_eq!(
        (first == expected, second == expected, again == expected),
        (true, true, true)
    );
    let size = |key: &str| {
        (0..stored_chunks::<String>(f, key))
            .filter_map(|i| chunk_of::<String>(f, key, i))
            .map(|c| c.len())
            .sum::<usize>()
    };
    assert!(
        size(&packed) * 2 < size(&plain),
        "{} vs {}",
        size(&packed),
        size(&plain)
    );
}

/// How an entry was stored (compressed or not) is read from its manifest, not from the
/// reader's options.
pub fn iter_reads_whatever_compression_it_was_written_with(f: &Fixture) {
    let key = f.key("iter-either");
    let runs = AtomicUsize::new(0);
    let written: Vec<String> =
        memoize_iter(&key, &f.locked().compress(true), || text_rows(50)).collect();
    let read: Vec<String> = memoize_iter(&key, &f.locked().compress(false), || {
        runs.fetch_add(1, Ordering::SeqCst);
        text_rows(0)
    })
    .collect();
    assert_eq!(read, written);
    assert_eq!(runs.load(Ordering::SeqCst), 0, "a hit, not a recompute");
}

/// Stores `items` at `key`, then copies chunk 0 of `other` (another sequence, with
/// other items) over `key`'s chunk 0, as a stale writer or a forger could.
fn with_foreign_chunk(f: &Fixture, key: &str, other: &str, opts: &MemoizeOptions) {
    let mine: Vec<u8> = memoize_iter(key, opts, || [1_u8, 2, 3]).collect();
    let theirs: Vec<u8> = memoize_iter(other, opts, || [7_u8, 8, 9]).collect();
    assert_eq!((mine, theirs), (vec![1, 2, 3], vec![7, 8, 9]));
    let foreign = chunk(f, other, 0).unwrap_or_default();
    let name = committed::<u8>(f, key)[0].clone();
    assert!(
        f.probe
            .inner()
            .set(&name, &foreign, std::time::Duration::from_secs(60))
            .is_ok()
    );
}

/// Another sequence's chunk in place of one of ours is never read as ours: the entry is
/// a miss, recomputed and overwritten.
pub fn iter_foreign_chunk_is_recomputed(f: &Fixture) {
    let (key, other) = (f.key("iter-foreign"), f.key("iter-foreign-other"));
    let opts = f.locked();
    with_foreign_chunk(f, &key, &other, &opts);
    let runs = AtomicUsize::new(0);
    let read: Vec<u8> = memoize_iter(&key, &opts, || {
        runs.fetch_add(1, Ordering::SeqCst);
        [1_u8, 2, 3]
    })
    .collect();
    assert_eq!(read, [1, 2, 3], "not the other sequence's items");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "recomputed");
    let again: Vec<u8> = memoize_iter(&key, &opts, std::iter::empty).collect();
    assert_eq!(again, [1, 2, 3], "and overwritten: a hit again");
}

/// The async form of [`iter_foreign_chunk_is_recomputed`].
pub fn iter_async_foreign_chunk_is_recomputed(f: &Fixture) {
    let (key, other) = (
        f.key("iter-async-foreign"),
        f.key("iter-async-foreign-other"),
    );
    let opts = f.locked();
    with_foreign_chunk(f, &key, &other, &opts);
    let runs = AtomicUsize::new(0);
    runtime().block_on(async {
        let read: Vec<u8> = memoize_iter_async(&key, &opts, || async {
            runs.fetch_add(1, Ordering::SeqCst);
            [1_u8, 2, 3]
        })
        .await
        .collect();
        assert_eq!(read, [1, 2, 3], "not the other sequence's items");
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1, "recomputed");
    assert_eq!(f.lock_token(&key), None);
}

/// Issue 11, finding 4: a refresh overwrote the committed sequence's chunks in place,
/// so an abandoned refresh destroyed it. A write's chunks have names of their own now:
/// a refresh given up half-way leaves the committed sequence readable, as a hit.
pub fn iter_abandoned_refresh_leaves_the_committed_sequence(f: &Fixture) {
    let key = f.key("iter-abandoned-refresh");
    let opts = chunked(f, 3);
    let runs = AtomicUsize::new(0);
    let committed: Vec<u8> = (0..10).collect();
    assert_eq!(sequence(f, &key, &opts, 10, &runs), committed);
    let mut refresh = memoize_iter(&key, &opts.clone().force_overwrite(true), || 100..110_u8);
    assert_eq!(refresh.by_ref().take(7).count(), 7, "two chunks written");
    drop(refresh);
    assert_eq!(sequence(f, &key, &opts, 10, &runs), committed);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a hit, not a recompute");
    assert_eq!(f.lock_token(&key), None);
}

/// Issue 11, finding 4: a reader during a refresh got new items, then old ones. It
/// reads the committed sequence whole now, as a hit; after the commit, the new one.
pub fn iter_reader_during_a_refresh_never_sees_a_mix(f: &Fixture) {
    let key = f.key("iter-refresh-reader");
    let opts = chunked(f, 3);
    let runs = AtomicUsize::new(0);
    let old: Vec<u8> = (0..10).collect();
    let new: Vec<u8> = (100..110).collect();
    assert_eq!(sequence(f, &key, &opts, 10, &runs), old);
    let mut refresh = memoize_iter(&key, &opts.clone().force_overwrite(true), || 100..110_u8);
    let mut refreshed: Vec<u8> = refresh.by_ref().take(7).collect();
    let during: Vec<u8> = memoize_iter(&key, &opts, || {
        runs.fetch_add(1, Ordering::SeqCst);
        0..0_u8
    })
    .collect();
    assert_eq!(during, old, "the committed sequence, whole");
    refreshed.extend(refresh);
    assert_eq!(refreshed, new);
    let after: Vec<u8> = memoize_iter(&key, &opts, || {
        runs.fetch_add(1, Ordering::SeqCst);
        0..0_u8
    })
    .collect();
    assert_eq!(after, new, "the refreshed sequence, whole");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "both reads were hits");
}

/// A long sequence for [`a_slow_reader`]: 1,000 one-byte items, 3 to a chunk, so that
/// a reader's first window (256 chunks) ends at item 768.
fn long_sequence(shift: u32) -> impl Iterator<Item = u8> {
    (0..1000_u32).map(move |i| u8::try_from((i + shift) % 200).unwrap_or(0))
}

/// A reader that took 300 items of the sequence committed at `key` (data version
/// `version` when computed), then lost the rest of its chunks to `lose`. Returns what
/// the rest of the read gave, or the panic's message.
fn a_slow_reader(
    f: &Fixture,
    name: &str,
    lose: impl FnOnce(&str, &MemoizeOptions, &Arc<std::sync::atomic::AtomicU32>),
) -> (Vec<u8>, Result<Vec<u8>, String>, usize) {
    use std::sync::atomic::AtomicU32;
    let key = f.key(name);
    let opts = chunked(f, 3);
    let version = Arc::new(AtomicU32::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let compute = {
        let (version, runs) = (Arc::clone(&version), Arc::clone(&runs));
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            long_sequence(version.load(Ordering::SeqCst))
        }
    };
    let first: Vec<u8> = memoize_iter(&key, &opts, compute.clone()).collect();
    assert_eq!(first, long_sequence(0).collect::<Vec<_>>());
    let mut reader = memoize_iter(&key, &opts, compute);
    let head: Vec<u8> = reader.by_ref().take(300).collect();
    lose(&key, &opts, &version);
    let rest = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.collect())).map_err(
        |panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        },
    );
    (head, rest, runs.load(Ordering::SeqCst))
}

/// Issue 19, behaviour 4: a reader whose chunks are gone (evicted, expired) while the
/// data did not change continues with the same items: every item once, in order.
pub fn iter_slow_reader_of_unchanged_data_gets_the_whole_sequence(f: &Fixture) {
    let inner = Arc::clone(f.probe.inner());
    let (head, rest, runs) = a_slow_reader(f, "iter-slow-unchanged", |key, opts, _| {
        let chunks = committed_chunk_keys::<u8>(key, opts).ok().flatten();
        for chunk in chunks.unwrap_or_default() {
            assert!(inner.delete(&chunk).is_ok());
        }
    });
    let mut whole = head;
    whole.extend(rest.unwrap_or_else(|why| panic!("the read went on: {why}")));
    assert_eq!(whole, long_sequence(0).collect::<Vec<_>>());
    assert_eq!(runs, 2, "recomputed once");
}

/// Issue 19, behaviour 4: a reader slower than the grace of replaced chunks, while a
/// refresh replaced the sequence with other data, took items `v1-00000 … v3-01999`. It
/// now stops with a panic that says why: never a mixture, never a silent truncation.
pub fn iter_slow_reader_of_replaced_data_never_mixes_two_writes(f: &Fixture) {
    let inner = Arc::clone(f.probe.inner());
    let (head, rest, _) = a_slow_reader(f, "iter-slow-replaced", |key, opts, version| {
        let old = committed_chunk_keys::<u8>(key, opts).ok().flatten();
        version.store(7, Ordering::SeqCst);
        let refreshed: Vec<u8> = memoize_iter(key, &opts.clone().force_overwrite(true), || {
            long_sequence(7)
        })
        .collect();
        assert_eq!(refreshed, long_sequence(7).collect::<Vec<_>>());
        // The replaced chunks' grace has passed.
        for chunk in old.unwrap_or_default() {
            assert!(inner.delete(&chunk).is_ok());
        }
    });
    assert_eq!(head, long_sequence(0).take(300).collect::<Vec<_>>());
    let why = rest.err().unwrap_or_default();
    assert!(
        why.contains("changed while it was being read"),
        "the reader stops with a reason, not a mixture or a truncation: {why:?}"
    );
    let after: Vec<u8> = memoize_iter(&f.key("iter-slow-replaced"), &chunked(f, 3), || {
        std::iter::empty()
    })
    .collect();
    assert_eq!(
        after,
        long_sequence(7).collect::<Vec<_>>(),
        "the refreshed sequence"
    );
}

/// A memoized iterator is fresh until it expires, whatever the options' `stale` and
/// clock say (they do not apply to iterators): its manifest is stamped with its TTL
/// (review 3, finding 1, so that a near cache's copy of it ends), but judged as fresh.
pub fn iter_is_fresh_until_it_expires_whatever_the_clock(f: &Fixture) {
    let key = f.key("iter-clock");
    let clock = Arc::new(ManualClock::default());
    let opts = f
        .locked()
        .expire(Duration::from_secs(3600))
        .stale(Duration::from_secs(1))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>);
    let computed = AtomicUsize::new(0);
    let read = || {
        memoize_iter(&key, &opts, || {
            computed.fetch_add(1, Ordering::SeqCst);
            0..3_u8
        })
        .collect::<Vec<_>>()
    };
    assert_eq!(read(), [0, 1, 2]);
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(read(), [0, 1, 2]);
    assert_eq!(computed.load(Ordering::SeqCst), 1, "read as a hit");
}
