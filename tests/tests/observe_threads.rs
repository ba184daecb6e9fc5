//! The counters of `stats()` under thread churn: a thread's counts are folded into the
//! process total when it ends, so the per-thread entries follow the live threads (not
//! every thread that ever ran) and no count is lost or counted twice. One test, run
//! alone in this binary: the counters are process-wide.

use std::sync::Arc;

use cache_memoize::{MemoizeOptions, MemoryBackend, memoize, stats};

const THREADS: usize = 10_000;
/// Threads alive at once.
const AT_ONCE: usize = 50;

#[test]
fn ten_thousand_short_threads_leave_no_counter_entries_and_every_call_is_counted() {
    let opts = MemoizeOptions::new().backend(Arc::new(MemoryBackend::new()));
    assert_eq!(memoize("churn", &opts, || 1_u32), 1);
    let slots_before = cache_memoize::__private::counter_slots();
    let before = stats();

    for _ in 0..THREADS / AT_ONCE {
        let threads: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                let opts = opts.clone();
                std::thread::spawn(move || memoize("churn", &opts, || 2_u32))
            })
            .collect();
        for thread in threads {
            // `join` returns once the thread has ended, its thread-locals destroyed.
            assert_eq!(
                thread.join().ok(),
                Some(1),
                "each thread hit the stored value"
            );
        }
        assert!(
            cache_memoize::__private::counter_slots() <= slots_before,
            "the ended threads' entries are gone"
        );
    }

    let after = stats();
    assert_eq!(
        after.hits - before.hits,
        THREADS as u64,
        "every hit counted once"
    );
    assert_eq!(after.misses, before.misses);
    assert_eq!(after.computed, before.computed);
    assert_eq!(cache_memoize::__private::counter_slots(), slots_before);
}
