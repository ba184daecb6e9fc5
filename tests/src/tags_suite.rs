//! Tags (issue 26): `invalidate_tag` makes every value stored with the tag a miss, in
//! one write; a tagged hit is one read; a value computed before an invalidation is
//! never served to a call begun after it, stale or not, from the store or from an
//! in-process flight.

use std::sync::{Arc, mpsc};
use std::time::Duration;

use cache_memoize::{
    Clock, MemoizeOptions, committed_chunk_keys, invalidate_tag_in, invalidate_tag_in_async,
    memoize, memoize_async, memoize_iter, memoize_iter_async, memoize_many, refresh,
};

use cache_memoize::__private::{Detached, Entry, PlainOutcome, call};

use crate::Fixture;
use crate::freshness_suite::ManualClock;

fn tagged(f: &Fixture, tags: &[&str]) -> MemoizeOptions {
    f.locked().tags(tags.iter().map(|tag| f.key(tag)))
}

fn invalidate(f: &Fixture, tag: &str) {
    if let Err(err) = invalidate_tag_in(&*f.backend(), &f.key(tag)) {
        panic!("invalidate_tag failed: {err}");
    }
}

/// A tagged value is a hit until one of its tags is invalidated; a value without that
/// tag stays a hit.
pub fn a_tagged_value_is_a_hit_until_one_of_its_tags_is_invalidated(f: &Fixture) {
    let (user, other) = (f.key("tags-user"), f.key("tags-other"));
    let both = tagged(f, &["user:7", "tenant:1"]);
    let tenant_only = tagged(f, &["tenant:1"]);
    let user_only = tagged(f, &["user:7"]);
    assert_eq!(memoize(&user, &both, || 1_u32), 1);
    assert_eq!(memoize(&other, &user_only, || 10_u32), 10);
    assert_eq!(memoize(&user, &both, || 2_u32), 1, "a hit");
    invalidate(f, "tenant:1");
    assert_eq!(memoize(&user, &both, || 3_u32), 3, "its tag moved: a miss");
    assert_eq!(
        memoize(&user, &both, || 4_u32),
        3,
        "stored again under the new epoch"
    );
    assert_eq!(
        memoize(&other, &user_only, || 11_u32),
        10,
        "not tagged tenant:1"
    );
    invalidate(f, "user:7");
    assert_eq!(memoize(&other, &user_only, || 12_u32), 12);
    assert_eq!(
        memoize(&user, &tenant_only, || 5_u32),
        5,
        "other tags: another value"
    );
}

/// A tagged hit reads the value and its tags' epochs in one operation.
pub fn a_tagged_hit_is_one_read(f: &Fixture) {
    let key = f.key("tags-one-read");
    let opts = tagged(f, &["a", "b"]);
    assert_eq!(memoize(&key, &opts, || 1_u8), 1);
    f.probe.clear();
    assert_eq!(memoize(&key, &opts, || 2_u8), 1);
    assert_eq!(f.probe.ops(), vec!["get_tagged"], "one read, nothing else");
}

/// A computation begun before `invalidate_tag` returned may return its value to its
/// own caller, but a call begun after the invalidation never gets it: not from the
/// store, and not by joining its flight.
pub fn a_value_computed_before_invalidate_tag_is_not_served_after_it(f: &Fixture) {
    let key = f.key("tags-race");
    let opts = tagged(f, &["race"]);
    let (started_tx, started) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let (key, opts) = (&key, &opts);
        let old = s.spawn(move || {
            memoize(key, opts, || {
                let _ = started_tx.send(());
                let _ = go_rx.recv();
                "old".to_owned()
            })
        });
        assert!(started.recv().is_ok(), "the first computation starts");
        invalidate(f, "race");
        // Begun after the invalidation returned, while the old computation runs: it
        // follows that flight, and must not take its value.
        let (joined_tx, joined) = mpsc::channel();
        let new = s.spawn(move || {
            let _ = joined_tx.send(());
            memoize(key, opts, || "new".to_owned())
        });
        assert!(joined.recv().is_ok(), "the second call starts");
        let _ = go.send(());
        assert_eq!(old.join().ok().as_deref(), Some("old"));
        assert_eq!(new.join().ok().as_deref(), Some("new"));
    });
    assert_eq!(memoize(&key, &opts, || "newer".to_owned()), "new");
}

/// Under `stale`, a value whose tag moved is a miss, never served stale.
pub fn a_moved_tag_is_a_miss_even_within_stale(f: &Fixture) {
    let key = f.key("tags-stale");
    let clock = Arc::new(ManualClock::default());
    let opts = tagged(f, &["stale"])
        .expire(Duration::from_secs(10))
        .stale(Duration::from_secs(3600))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>);
    // A detached refresh: a stale value would be returned at once.
    let detached = |value: u32| {
        call(
            &key,
            &opts,
            Entry::new(PlainOutcome, Detached).checked("f"),
            move || value,
        )
    };
    assert_eq!(detached(1), 1);
    clock.advance(Duration::from_secs(11));
    invalidate(f, "stale");
    assert_eq!(detached(2), 2, "computed, not served stale");
}

/// An epoch that changed behind the library's back (evicted, rewritten) makes its
/// values misses.
pub fn a_lost_epoch_is_a_miss(f: &Fixture) {
    let key = f.key("tags-lost");
    let opts = tagged(f, &["lost"]);
    assert_eq!(memoize(&key, &opts, || 1_u32), 1);
    let epoch_key = format!("_tag_:{}", cache_memoize::make_cache_key(&f.key("lost")));
    let other = f.other_client();
    assert!(
        other.get(&epoch_key).ok().flatten().is_some(),
        "the epoch is stored"
    );
    assert!(
        other
            .set(&epoch_key, b"another epoch", Duration::from_secs(60))
            .is_ok()
    );
    assert_eq!(memoize(&key, &opts, || 2_u32), 2);
}

/// A forced refresh reads the epochs before computing and stores under them.
pub fn a_forced_refresh_stores_under_the_current_epochs(f: &Fixture) {
    let key = f.key("tags-forced");
    let opts = tagged(f, &["forced"]);
    assert_eq!(memoize(&key, &opts, || 1_u32), 1);
    invalidate(f, "forced");
    assert_eq!(refresh(|| memoize(&key, &opts, || 2_u32)), 2);
    assert_eq!(
        memoize(&key, &opts, || 3_u32),
        2,
        "a hit under the epoch it read"
    );
}

/// The async forms: a hit, an invalidation, a miss.
pub fn async_tags(f: &Fixture) {
    let key = f.key("tags-async");
    let opts = tagged(f, &["async"]);
    let backend = f.backend();
    crate::runtime().block_on(async {
        assert_eq!(memoize_async(&key, &opts, || async { 1_u32 }).await, 1);
        assert_eq!(memoize_async(&key, &opts, || async { 2_u32 }).await, 1);
        assert!(
            invalidate_tag_in_async(&*backend, &f.key("async"))
                .await
                .is_ok()
        );
        assert_eq!(memoize_async(&key, &opts, || async { 3_u32 }).await, 3);
    });
}

/// A batch's elements carry the batch's tags.
pub fn a_tagged_batch_is_invalidated_by_its_tag(f: &Fixture) {
    let opts = tagged(f, &["batch"]);
    let keys = |ids: &[u32]| {
        ids.iter()
            .map(|id| (f.key(&format!("tags-batch:{id}")), *id))
            .collect::<Vec<_>>()
    };
    let load = |n: u32| move |ids: &[u32]| ids.iter().map(|id| (*id, id * n)).collect();
    let first = memoize_many(keys(&[1, 2]), &opts, load(10));
    assert_eq!(first.get(&2), Some(&20));
    let cached = memoize_many(keys(&[1, 2]), &opts, load(100));
    assert_eq!(cached, first, "hits");
    invalidate(f, "batch");
    let again = memoize_many(keys(&[1, 2]), &opts, load(1000));
    assert_eq!(again.get(&2), Some(&2000), "recomputed after the tag moved");
}

/// A memoized iterator's sequence records its tags' epochs: a hit (its chunks named)
/// until its tag moves, then computed again and stored under the new epoch; a forced
/// refresh stores under the epochs it read.
pub fn a_tagged_sequence_is_computed_again_after_its_tag_moves(f: &Fixture) {
    let key = f.key("tags-iter");
    let opts = tagged(f, &["iter"]).chunk_size(16);
    let read =
        |items: std::ops::Range<u64>| memoize_iter(&key, &opts, || items).collect::<Vec<_>>();
    assert_eq!(read(0..10), (0..10).collect::<Vec<_>>());
    assert_eq!(read(100..101), (0..10).collect::<Vec<_>>(), "a hit");
    let chunks = committed_chunk_keys::<u64>(&key, &opts)
        .ok()
        .flatten()
        .unwrap_or_default();
    assert!(chunks.len() > 1, "the tagged manifest is read: {chunks:?}");
    invalidate(f, "iter");
    assert_eq!(
        read(20..25),
        (20..25).collect::<Vec<_>>(),
        "its tag moved: a miss"
    );
    assert_eq!(
        read(100..101),
        (20..25).collect::<Vec<_>>(),
        "stored under the new epoch"
    );
    invalidate(f, "iter");
    let forced: Vec<u64> = refresh(|| memoize_iter(&key, &opts, || 30..33).collect());
    assert_eq!(forced, [30, 31, 32]);
    assert_eq!(
        read(100..101),
        [30, 31, 32],
        "the refresh stored under the epoch it read"
    );
    let other = tagged(f, &["iter-other"]).chunk_size(16);
    let under_other: Vec<u64> = memoize_iter(&key, &other, || 40..42).collect();
    assert_eq!(under_other, [40, 41], "other tags: another sequence");
}

/// A sequence whose computation began before `invalidate_tag` returned streams its
/// items to its own caller, but what it commits is a miss to the calls after.
pub fn a_sequence_begun_before_invalidate_tag_is_not_served_after_it(f: &Fixture) {
    let key = f.key("tags-iter-race");
    let opts = tagged(f, &["iter-race"]).chunk_size(16);
    let mut streaming = memoize_iter(&key, &opts, || 0..8_u64);
    assert_eq!(streaming.next(), Some(0), "computing, under the old epoch");
    invalidate(f, "iter-race");
    assert_eq!(streaming.collect::<Vec<_>>(), (1..8).collect::<Vec<_>>());
    let after: Vec<u64> = memoize_iter(&key, &opts, || 50..52).collect();
    assert_eq!(after, [50, 51], "the commit recorded the epoch that moved");
}

/// The async form of a memoized iterator with tags: a hit, an invalidation, a miss.
pub fn async_tagged_sequence(f: &Fixture) {
    let key = f.key("tags-iter-async");
    let opts = tagged(f, &["iter-async"]);
    let backend = f.backend();
    crate::runtime().block_on(async {
        let read = |items: std::ops::Range<u8>| {
            let (key, opts) = (&key, &opts);
            async move {
                memoize_iter_async(key, opts, || async move { items })
                    .await
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(read(0..3).await, [0, 1, 2]);
        assert_eq!(read(9..10).await, [0, 1, 2], "a hit");
        assert!(
            invalidate_tag_in_async(&*backend, &f.key("iter-async"))
                .await
                .is_ok()
        );
        assert_eq!(read(5..7).await, [5, 6], "its tag moved: a miss");
    });
}
