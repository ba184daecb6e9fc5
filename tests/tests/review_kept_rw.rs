//! Review of `keep_decoded`: `refresh(|| f(x))` and `f_invalidate(x)` in the process
//! that keeps `f(x)` decoded, while another thread hits it all the time. The caller
//! reads its own refresh and its own invalidation (never the value kept before them),
//! and the other thread never goes back to a value older than one it saw while only
//! refreshes write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cache_memoize::{NearCache, cache_memoize, refresh};
use cache_memoize_tests::server::RedisServer;
use cache_memoize_tests::{near, wait_until};

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "rw:{id}", expire = "1h", keep_decoded)]
fn versioned(id: u32) -> (u32, usize) {
    (id, RUNS.fetch_add(1, Ordering::SeqCst) + 1)
}

#[test]
fn own_refreshes_and_invalidations_are_read_back_through_kept_values() {
    let server = RedisServer::start();
    let reader = near::register_near(vec![server.url()], false, NearCache::new());

    let first = versioned(1);
    wait_until("hits are near", || {
        let hits = reader.near_cache_hits();
        for _ in 0..20 {
            assert_eq!(versioned(1), first);
        }
        reader.near_cache_hits() >= hits + 20
    });

    let stop = Arc::new(AtomicBool::new(false));
    let refreshing = Arc::new(AtomicBool::new(true));
    let hammer = {
        let (stop, refreshing) = (Arc::clone(&stop), Arc::clone(&refreshing));
        std::thread::spawn(move || {
            let mut seen = 0;
            let mut calls = 0_u64;
            while !stop.load(Ordering::SeqCst) {
                let (id, run) = versioned(1);
                assert_eq!(id, 1);
                if refreshing.load(Ordering::SeqCst) {
                    assert!(run >= seen, "went back from #{seen} to #{run}");
                }
                seen = seen.max(run);
                calls += 1;
            }
            calls
        })
    };

    for round in 0..100 {
        let stored = refresh(|| versioned(1));
        for _ in 0..5 {
            let read = versioned(1);
            assert!(
                read.1 >= stored.1,
                "round {round}: refreshed #{} then read #{}",
                stored.1,
                read.1
            );
        }
    }
    refreshing.store(false, Ordering::SeqCst);
    for round in 0..100 {
        let before = versioned(1);
        assert!(versioned_invalidate(1).is_ok());
        let after = versioned(1);
        assert_ne!(
            after, before,
            "round {round}: the value read before this caller's invalidation"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let calls = hammer.join();
    assert!(
        calls.as_ref().is_ok_and(|calls| *calls > 0),
        "the hitting thread failed"
    );
}
