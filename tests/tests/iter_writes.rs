//! A memoized iterator's write is its own: its chunks are named per write and the
//! manifest swap is the commit, so a write abandoned part-way never breaks the entry
//! another write committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cache_memoize_tests::Fixture;

/// B computes and commits a sequence; A then refreshes it (a forced write), writes a
/// few chunks and is dropped early. A's clean-up must not touch B's committed chunks:
/// C reads B's entry without recomputing. ("Iterator writes use chunk names of their
/// own; the manifest swap is the commit.") Since every store is fenced by the lock, A
/// and B cannot both be writing at once; the refresh is how a second write overlaps a
/// committed entry.
#[test]
fn an_abandoned_iterator_write_does_not_break_anothers_committed_entry() {
    let f = Fixture::memory();
    let key = f.key("iter-shared-chunk-names");
    let opts = f.opts().chunk_size(1).compress(false);
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = |runs: &Arc<AtomicUsize>| {
        let runs = Arc::clone(runs);
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            0..10_u32
        }
    };
    let b: Vec<u32> = cache_memoize::memoize_iter(&key, &opts, counted(&runs)).collect();
    assert_eq!(b, (0..10).collect::<Vec<_>>());
    assert!(f.stored(&key).is_some(), "B committed");
    let mut a = cache_memoize::refresh(|| cache_memoize::memoize_iter(&key, &opts, counted(&runs)));
    assert_eq!(a.by_ref().take(5).count(), 5, "A has written some chunks");
    drop(a); // A abandons its write
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let c: Vec<u32> = cache_memoize::memoize_iter(&key, &opts, counted(&runs)).collect();
    assert_eq!(c, (0..10).collect::<Vec<_>>());
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "B's committed entry was broken by A's clean-up (its chunks deleted): C recomputed"
    );
}
