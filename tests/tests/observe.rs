//! What memoization reports about itself: the counters of `stats()` and one DEBUG
//! event per call outcome, after a known sequence of calls on memory and on Redis.
//! One test, run alone in this binary: the counters are process-wide.

use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime};

use cache_memoize::{
    Backend, CacheBackend, CacheLock, Clock, LockOptions, MemoizeOptions, MemoryBackend,
    RedisBackend, Stats, make_cache_key, memoize, memoize_iter, stats,
};
use cache_memoize_tests::Probe;
use cache_memoize_tests::captured::Captured;
use cache_memoize_tests::server::RedisServer;

/// A clock an hour ahead: every value stored on the real clock reads as stale.
struct HourAhead;

impl Clock for HourAhead {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(3600)
    }
}

fn delta(after: Stats, before: Stats) -> [u64; 9] {
    [
        after.hits - before.hits,
        after.coalesced - before.coalesced,
        after.waited - before.waited,
        after.misses - before.misses,
        after.computed - before.computed,
        after.stale_served - before.stale_served,
        after.refreshes - before.refreshes,
        after.lock_timeouts - before.lock_timeouts,
        after.fail_open - before.fail_open,
    ]
}

/// One call that waits for another holder of the lock, which stores and releases.
fn wait_for_another_holder(probe: &Arc<Probe>, opts: &MemoizeOptions, key: &str) {
    let Ok(holder) = CacheLock::new(key).backend(probe.inner().clone()).acquire() else {
        panic!("the other holder takes the lock");
    };
    let (tried, saw_held) = mpsc::channel();
    probe.after(move |op| {
        if op == "get_or_lock" {
            let _ = tried.send(());
        }
    });
    let caller = {
        let (opts, key) = (opts.clone(), key.to_owned());
        std::thread::spawn(move || memoize(&key, &opts, || 0_u8))
    };
    assert!(saw_held.recv().is_ok());
    probe.after(|_| {});
    // The holder stores (as it does, under its lock): the encoding is made at a
    // scratch key of a store of its own, and copied.
    let scratch = MemoizeOptions::new().backend(Arc::new(MemoryBackend::new()));
    let scratch_backend = Arc::new(MemoryBackend::new());
    let scratch = scratch.backend(scratch_backend.clone());
    assert_eq!(memoize("scratch", &scratch, || 7_u8), 7);
    let bytes = scratch_backend
        .get(make_cache_key("scratch").as_str())
        .ok()
        .flatten()
        .unwrap_or_default();
    let stored = probe.inner().set(
        make_cache_key(key).as_str(),
        &bytes,
        Duration::from_secs(600),
    );
    assert!(stored.is_ok());
    assert!(matches!(holder.release(), Ok(true)));
    assert_eq!(caller.join().ok(), Some(7), "waited, then read");
}

/// miss, hit, waited, lock timeout, stale served + refresh, fail-open: each counted
/// once, and each reported as an event naming the function and the key.
fn known_sequence(backend: Arc<dyn CacheBackend>, tag: &str) {
    let probe = Arc::new(Probe::new(backend));
    let opts = MemoizeOptions::new()
        .backend(probe.clone())
        .name("observe::report")
        .lock(LockOptions {
            retry: Duration::from_millis(10),
            ..LockOptions::default()
        })
        .expire(Duration::from_secs(600))
        .stale(Duration::from_secs(7200));
    let key = |name: &str| format!("observe:{tag}:{name}:{}", uuid::Uuid::new_v4().simple());
    let captured = Captured::default();
    let subscriber = captured.subscriber(tracing::Level::DEBUG);
    let before = stats();
    let (cold, busy, waited) = (key("cold"), key("busy"), key("waited"));
    tracing::subscriber::with_default(subscriber, || {
        assert_eq!(memoize(&cold, &opts, || 1_u8), 1, "miss");
        assert_eq!(memoize(&cold, &opts, || 2_u8), 1, "hit");

        wait_for_another_holder(&probe, &opts, &waited);

        // Lock timeout: held, not blocking.
        let Ok(other) = CacheLock::new(&busy)
            .backend(probe.inner().clone())
            .acquire()
        else {
            panic!("the other holder takes the lock");
        };
        let non_blocking = opts.clone().lock(LockOptions {
            blocking: false,
            ..LockOptions::default()
        });
        assert_eq!(memoize(&busy, &non_blocking, || 3_u8), 3, "lock timeout");
        drop(other);

        // Stale: read an hour later, refreshed inline.
        let later = opts.clone().clock(Arc::new(HourAhead));
        assert_eq!(
            memoize(&cold, &later, || 4_u8),
            4,
            "stale served, refreshed"
        );

        // A memoized iterator: a miss computed, then a hit (counted like any other).
        let rows = key("rows");
        let iter_opts = MemoizeOptions::new()
            .backend(probe.clone())
            .name("observe::rows");
        let first: Vec<u8> = memoize_iter(&rows, &iter_opts, || 0..3_u8).collect();
        let again: Vec<u8> = memoize_iter(&rows, &iter_opts, || 0..9_u8).collect();
        assert_eq!(
            (first.len(), again),
            (3, vec![0, 1, 2]),
            "iterator miss, then hit"
        );

        // Fail-open.
        probe.set_failing(true);
        assert_eq!(memoize(&key("broken"), &opts, || 5_u8), 5, "fail-open");
        probe.set_failing(false);
    });
    let [
        hits,
        coalesced,
        waited_n,
        misses,
        computed,
        stale,
        refreshes,
        timeouts,
        fail_open,
    ] = delta(stats(), before);
    assert_eq!(
        (
            hits, coalesced, waited_n, misses, stale, refreshes, timeouts, fail_open
        ),
        (2, 0, 1, 3, 1, 1, 1, 1),
        "hits (the cold key, the iterator), coalesced, waited, misses (the cold key, the holder's scratch value, the iterator), stale served, refreshes, lock timeouts, fail-open"
    );
    // The miss, the scratch value, the refresh, the lock timeout, the iterator's miss
    // and the fail-open computed; the waiter did not.
    assert_eq!(computed, 6);
    let log = captured.text();
    for outcome in [
        "miss",
        "hit",
        "computed",
        "lock_timeout",
        "stale_served",
        "refresh_started",
        "fail_open",
    ] {
        assert!(
            log.contains(&format!("outcome=\"{outcome}\"")),
            "an event for {outcome}: {log}"
        );
    }
    assert!(log.contains("function=\"observe::report\""), "{log}");
    assert!(
        log.contains(&format!("observe:{tag}:cold:")),
        "the key is named: {log}"
    );
}

#[test]
fn counters_and_events_after_a_known_sequence_on_memory_and_redis() {
    known_sequence(Arc::new(MemoryBackend::new()), "memory");
    let server = RedisServer::start();
    let redis = match RedisBackend::connect(&server.url()) {
        Ok(backend) => backend,
        Err(err) => panic!("cannot connect to the test server: {err}"),
    };
    known_sequence(Arc::new(redis), "redis");
}
