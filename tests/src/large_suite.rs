//! Large values (issue 23): a value whose encoding exceeds `large_values` is stored as
//! chunks, then a manifest under its key. The scenarios pin that it behaves as any
//! value: one computation, hits, waiters woken, invalidation, stale serving and
//! refreshes, order of writes; and that no command carries more than one chunk, and a
//! missing or damaged chunk is a miss, never a wrong value.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use cache_memoize::{
    Backend, Clock, MemoizeOptions, make_cache_key, memoize, memoize_async, refresh,
};

use crate::freshness_suite::ManualClock;
use crate::{Fixture, runtime};

/// The threshold the scenarios use: values over 16 KiB are large.
const THRESHOLD: usize = 16 * 1024;

/// A value of `kib` KiB that compression cannot shrink (so it needs several chunks of
/// 512 KiB when `kib` is large), different for each `seed`.
pub fn payload(kib: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..kib * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn large(f: &Fixture) -> MemoizeOptions {
    f.locked().large_values(THRESHOLD)
}

/// The keys of the chunks the committed manifest of `key` names are under the key's
/// own name; these are what the backend holds besides the value's key and lock.
fn chunk_key(key: &str, slot: u8, index: usize, count: usize) -> String {
    format!(
        "{}:large:{slot}:{index}:{count}",
        make_cache_key(key).as_str()
    )
}

/// A value of 1.2 MB: stored as 3 chunks and a small manifest, read back whole, computed
/// once.
pub fn large_value_round_trips_in_chunks(f: &Fixture) {
    let key = f.key("large-round-trip");
    let opts = large(f);
    let value = payload(1200, 1);
    let computed = AtomicUsize::new(0);
    let compute = || {
        computed.fetch_add(1, Ordering::SeqCst);
        value.clone()
    };
    assert_eq!(memoize(&key, &opts, compute), value);
    assert_eq!(memoize(&key, &opts, compute), value);
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    let stored = f.stored(&key).unwrap_or_default();
    assert!(
        !stored.is_empty() && stored.len() < 1024,
        "the key holds a manifest ({} bytes)",
        stored.len()
    );
    let other = f.other_client();
    for index in 0..3 {
        let chunk = other.get(&chunk_key(&key, 0, index, 3)).ok().flatten();
        let chunk = chunk.unwrap_or_default();
        assert!(
            !chunk.is_empty() && chunk.len() <= 512 * 1024 + 512 * 1024 / 100 + 64,
            "chunk {index} holds at most one chunk's bytes ({})",
            chunk.len()
        );
    }
}

/// A value just over the threshold is stored in chunks; one at it is stored whole.
pub fn values_up_to_the_threshold_are_stored_whole(f: &Fixture) {
    let opts = large(f);
    let small = f.key("large-small");
    let value: Vec<u8> = payload(8, 2);
    assert_eq!(memoize(&small, &opts, || value.clone()), value);
    assert!(
        f.stored(&small)
            .is_some_and(|bytes| bytes.len() > value.len())
    );
    let over = f.key("large-over");
    let value = payload(20, 3);
    assert_eq!(memoize(&over, &opts, || value.clone()), value);
    assert!(f.stored(&over).is_some_and(|bytes| bytes.len() < 1024));
    assert_eq!(memoize(&over, &opts, Vec::<u8>::new), value);
}

/// A chunk deleted or damaged behind the cache's back: the value is recomputed and
/// stored again, never returned short or mixed.
pub fn a_missing_or_damaged_chunk_is_recomputed(f: &Fixture) {
    let opts = large(f);
    let other = f.other_client();
    for damage in ["delete", "garbage"] {
        let key = f.key(&format!("large-damaged-{damage}"));
        let first = payload(600, 4);
        assert_eq!(memoize(&key, &opts, || first.clone()), first);
        let chunk = chunk_key(&key, 0, 1, 2);
        let damaged = match damage {
            "delete" => other.delete(&chunk),
            _ => other.set(&chunk, b"garbage", Duration::from_secs(60)),
        };
        assert!(damaged.is_ok());
        let second = payload(600, 5);
        assert_eq!(
            memoize(&key, &opts, || second.clone()),
            second,
            "a {damage}d chunk is a miss"
        );
        assert_eq!(memoize(&key, &opts, Vec::<u8>::new), second);
    }
}

/// Sixteen callers on a cold large key: one computes, the others wait and read it whole.
pub fn sixteen_callers_on_a_cold_large_key_compute_once(f: &Fixture) {
    let key = f.key("large-cold");
    let opts = large(f);
    let value = payload(700, 6);
    let computed = AtomicUsize::new(0);
    let start = Barrier::new(16);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    memoize(&key, &opts, || {
                        computed.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        value.clone()
                    })
                })
            })
            .collect();
        for handle in handles {
            assert_eq!(handle.join().ok().as_ref(), Some(&value));
        }
    });
    assert_eq!(computed.load(Ordering::SeqCst), 1);
}

/// Invalidation drops a large value as any other: the next call computes.
pub fn an_invalidated_large_value_is_recomputed(f: &Fixture) {
    let key = f.key("large-invalidated");
    let opts = large(f);
    let first = payload(100, 7);
    assert_eq!(memoize(&key, &opts, || first.clone()), first);
    let cache_key = make_cache_key(&key);
    assert!(
        f.probe
            .invalidate(cache_key.as_str(), &cache_key.lock_key())
            .is_ok()
    );
    let second = payload(100, 8);
    assert_eq!(memoize(&key, &opts, || second.clone()), second);
}

/// Stale serving and refreshes: the stale large value is served whole while it is
/// refreshed; the refresh's write (in the other slot) is read next, whole; a forced
/// refresh after it writes the first slot again and is read back whole.
pub fn a_stale_large_value_is_served_whole_and_refreshed(f: &Fixture) {
    let key = f.key("large-stale");
    let clock = Arc::new(ManualClock::default());
    let opts = large(f)
        .expire(Duration::from_secs(10))
        .stale(Duration::from_secs(3600))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>);
    let (v1, v2, v3) = (payload(300, 9), payload(300, 10), payload(300, 11));
    assert_eq!(memoize(&key, &opts, || v1.clone()), v1);
    clock.advance(Duration::from_secs(11));
    // An inline refresh returns the new value; the next call reads it back.
    assert_eq!(memoize(&key, &opts, || v2.clone()), v2);
    assert_eq!(memoize(&key, &opts, Vec::<u8>::new), v2, "fresh again");
    let forced = refresh(|| memoize(&key, &opts, || v3.clone()));
    assert_eq!(forced, v3);
    assert_eq!(memoize(&key, &opts, Vec::<u8>::new), v3);
}

/// The async path stores and reads chunks too.
pub fn async_large_miss_and_hit(f: &Fixture) {
    let key = f.key("large-async");
    let opts = large(f);
    let value = payload(900, 12);
    runtime().block_on(async {
        let v = value.clone();
        let first: Vec<u8> = memoize_async(&key, &opts, || async move { v }).await;
        assert_eq!(first, value);
        let again: Vec<u8> = memoize_async(&key, &opts, || async { Vec::new() }).await;
        assert_eq!(again, value);
    });
    assert!(f.stored(&key).is_some_and(|bytes| bytes.len() < 1024));
}
