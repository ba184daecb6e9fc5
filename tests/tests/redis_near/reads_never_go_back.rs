//! A reader of one process never goes back in time while another thread of that
//! process replaces the value: once it has a value read from Redis, the near tier
//! serves it no older copy. Before the fix, on a cluster with a near cache, a read
//! found the newer value in Redis before this process had dropped the older copy (the
//! write's own drop and its invalidation message still on their way), and the next
//! hit served the older copy (the suite's cluster + near row failed about 1 run in 14,
//! "went back from #5 to #4"; this loop failed within 7–20 rounds).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cache_memoize::{CacheBackend, MemoizeOptions, RedisBackend, memoize, refresh};
use cache_memoize_tests::near;
use cache_memoize_tests::server::RedisCluster;

/// One round: a thread reads in a loop while this one refreshes 30 times; each read
/// is at least the newest value that thread has seen, and each read after a refresh
/// at least what it stored.
fn round(backend: &Arc<RedisBackend>, key: &str) {
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(3600));
    let runs = Arc::new(AtomicUsize::new(0));
    let call = {
        let (opts, key, runs) = (opts.clone(), key.to_owned(), Arc::clone(&runs));
        move || memoize(&key, &opts, || runs.fetch_add(1, Ordering::SeqCst) + 1)
    };
    assert_eq!(call(), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, call) = (Arc::clone(&stop), call.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            while !stop.load(Ordering::SeqCst) {
                let run = call();
                assert!(run >= seen, "went back from #{seen} to #{run}");
                seen = run;
            }
        })
    };
    for round in 0..30 {
        let stored = refresh(&call);
        let read = call();
        assert!(
            read >= stored,
            "round {round}: refreshed #{stored} then read #{read}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    assert!(
        reader.join().is_ok(),
        "the reading thread went back in time"
    );
}

#[test]
fn on_a_cluster_a_reader_never_goes_back_while_its_process_refreshes() {
    let cluster = RedisCluster::start();
    for attempt in 0..40 {
        let backend = near::patient_on_cluster(&cluster);
        round(&backend, &format!("never-back:{attempt}"));
    }
}
