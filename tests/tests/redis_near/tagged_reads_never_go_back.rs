//! Review 9: the tagged form of `reads_never_go_back.rs`. On a cluster with a near
//! cache (the value's key and its tag's epoch on different masters, their messages on
//! different links), a thread reads a tagged value in a loop while this one refreshes
//! it and invalidates its tag, in turn. The reading thread never goes back among the
//! values it did not compute itself (stored values: a call that finds the lock held
//! without a lock configured computes its own, stores nothing and may then read an
//! older stored one), and no call of either thread begun after `invalidate_tag`
//! returned gets a value whose computation began before it.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cache_memoize::{
    CacheBackend, MemoizeOptions, RedisBackend, invalidate_tag_in, memoize, refresh,
};
use cache_memoize_tests::near;
use cache_memoize_tests::server::RedisCluster;

thread_local! {
    /// Whether this thread's last call computed.
    static COMPUTED: Cell<bool> = const { Cell::new(false) };
}

fn round(backend: &Arc<RedisBackend>, key: &str, tag: &str) {
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(3600))
        .tags([tag]);
    let runs = Arc::new(AtomicUsize::new(0));
    let call = {
        let (opts, key, runs) = (opts.clone(), key.to_owned(), Arc::clone(&runs));
        move || {
            COMPUTED.with(|computed| computed.set(false));
            memoize(&key, &opts, || {
                COMPUTED.with(|computed| computed.set(true));
                runs.fetch_add(1, Ordering::SeqCst) + 1
            })
        }
    };
    assert_eq!(call(), 1);
    let stop = Arc::new(AtomicBool::new(false));
    // The runs begun before the last `invalidate_tag` returned: every call begun
    // after must get a later one.
    let floor = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, call, floor) = (Arc::clone(&stop), call.clone(), Arc::clone(&floor));
        std::thread::spawn(move || {
            let mut seen = 0;
            while !stop.load(Ordering::SeqCst) {
                let floor = floor.load(Ordering::SeqCst);
                let run = call();
                assert!(
                    run > floor,
                    "read #{run}, begun before an invalidation returned (#{floor} or older)"
                );
                if COMPUTED.with(Cell::get) {
                    continue;
                }
                assert!(run >= seen, "went back from #{seen} to #{run}");
                seen = run;
            }
        })
    };
    let backend_dyn = Arc::clone(backend) as Arc<dyn CacheBackend>;
    for round in 0..30 {
        if round % 2 == 0 {
            let _ = refresh(&call);
            continue;
        }
        let before = runs.load(Ordering::SeqCst);
        assert!(invalidate_tag_in(&*backend_dyn, tag).is_ok());
        floor.store(before, Ordering::SeqCst);
        let mut seen = 0;
        for _ in 0..3 {
            let hits = backend.near_cache_hits();
            let read = call();
            let near = backend.near_cache_hits() > hits;
            assert!(
                read > before,
                "round {round}: a call begun after invalidate_tag returned #{read}, begun before it (#{before} or older; near: {near})"
            );
            assert!(
                read >= seen,
                "round {round}: read #{seen} (stored), then #{read} (near: {near})"
            );
            if !COMPUTED.with(Cell::get) {
                seen = read;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    assert!(
        reader.join().is_ok(),
        "the reading thread went back in time or read a value from before an invalidation"
    );
}

#[test]
fn on_a_cluster_a_tagged_reader_never_goes_back_while_its_process_refreshes_and_invalidates() {
    let cluster = RedisCluster::start();
    for attempt in 0..20 {
        let backend = near::patient_on_cluster(&cluster);
        round(
            &backend,
            &format!("tagged-never-back:{attempt}"),
            &format!("tagged-never-back-tag:{attempt}"),
        );
    }
}
