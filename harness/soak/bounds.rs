//! The bounds the soak checks apart from its steady mix, on the registered backend, with
//! no other load running:
//!
//! - thread churn: `threads` short-lived threads (`batch` at a time), one hit each;
//! - detached refreshes: `refreshes` background refreshes of 64 keys whose values are
//!   always stale (`expire` 1 ms), run by the crate's refresh pool;
//! - a stale burst: `stale_keys` stale keys hit at once, one thread each; the most
//!   refreshes running at once, and how many were queued and dropped.
//!
//! The first two give RSS growth, measured after a warm-up of a tenth of the work (so
//! that the pool's threads, the connections and the allocator's arenas exist before).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cache_memoize::{MIN_VALUE_EXPIRE, MemoizeOptions, memoize, memoize_detached, stats};

use crate::gauges::rss_kb;

/// The name the crate gives its refresh worker threads.
const REFRESH_THREAD: &str = "cache-memoize-refresh";

/// How much of each measurement to run.
#[derive(Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) threads: u64,
    pub(crate) batch: u64,
    pub(crate) refreshes: u64,
    pub(crate) stale_keys: usize,
}

/// Short threads, one hit each: RSS growth in kB, how many of the calls were counted
/// as hits, and as any outcome (a call the backend failed to answer in time counts as
/// `fail_open`).
pub(crate) struct ThreadChurn {
    pub(crate) rss_growth_kb: i64,
    pub(crate) hits: u64,
    pub(crate) counted: u64,
}

/// The calls `stats()` has counted, one outcome each (refreshes aside).
fn calls_counted() -> u64 {
    let s = stats();
    s.hits + s.coalesced + s.waited + s.misses + s.stale_served + s.lock_timeouts + s.fail_open
}

/// Detached refreshes run: RSS growth in kB, refreshes computed, refreshes dropped.
pub(crate) struct Refreshes {
    pub(crate) rss_growth_kb: i64,
    pub(crate) computed: u64,
    pub(crate) dropped: u64,
}

/// A burst of stale hits: the most refreshes running at once, queued, dropped.
pub(crate) struct StaleBurst {
    pub(crate) max_running: usize,
    pub(crate) queued: u64,
    pub(crate) dropped: u64,
}

fn growth(before: u64, after: u64) -> i64 {
    i64::try_from(after).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(i64::MAX)
}

/// `threads` short-lived threads, `batch` at a time, each reading one stored key.
pub(crate) fn thread_churn(sizes: Sizes) -> ThreadChurn {
    let opts = MemoizeOptions::new()
        .name("soak::bounds::hot")
        .expire(Duration::from_secs(3600));
    let _: u64 = memoize("bounds:hot", &opts, || 42);
    let run = |threads: u64| {
        let mut left = threads;
        while left > 0 {
            let now = left.min(sizes.batch.max(1));
            std::thread::scope(|scope| {
                for _ in 0..now {
                    scope.spawn(|| {
                        let _: u64 = memoize("bounds:hot", &opts, || 42);
                    });
                }
            });
            left -= now;
        }
    };
    run(sizes.threads / 10);
    let (before, hits, counted) = (rss_kb(), stats().hits, calls_counted());
    run(sizes.threads);
    ThreadChurn {
        rss_growth_kb: growth(before, rss_kb()),
        hits: stats().hits - hits,
        counted: calls_counted() - counted,
    }
}

/// Background refreshes of 64 always-stale keys until `refreshes` (after a warm-up)
/// have computed on the pool's threads.
pub(crate) fn detached_refreshes(sizes: Sizes) -> Refreshes {
    let opts = MemoizeOptions::new()
        .name("soak::bounds::refresh")
        .expire(MIN_VALUE_EXPIRE)
        .stale(Duration::from_secs(3600));
    let computed = Arc::new(AtomicU64::new(0));
    let run = |target: u64| {
        let until = computed.load(Ordering::SeqCst) + target;
        while computed.load(Ordering::SeqCst) < until {
            for key in 0..64_u64 {
                let computed = Arc::clone(&computed);
                let _: u64 = memoize_detached(&format!("bounds:refresh:{key}"), &opts, move || {
                    if std::thread::current().name() == Some(REFRESH_THREAD) {
                        computed.fetch_add(1, Ordering::SeqCst);
                    }
                    key
                });
            }
        }
    };
    run(sizes.refreshes / 10);
    let (before, counted, dropped) = (
        rss_kb(),
        computed.load(Ordering::SeqCst),
        stats().refreshes_dropped,
    );
    run(sizes.refreshes);
    Refreshes {
        rss_growth_kb: growth(before, rss_kb()),
        computed: computed.load(Ordering::SeqCst) - counted,
        dropped: stats().refreshes_dropped - dropped,
    }
}

/// What the burst's refreshes share: running now, the most at once, done.
#[derive(Default)]
struct Running {
    now: AtomicUsize,
    max: AtomicUsize,
    done: AtomicU64,
}

/// `stale_keys` stale keys hit at once (one thread each, released by a barrier); each
/// refresh takes 20 ms.
pub(crate) fn stale_burst(sizes: Sizes) -> StaleBurst {
    let opts = MemoizeOptions::new()
        .name("soak::bounds::burst")
        .expire(MIN_VALUE_EXPIRE)
        .stale(Duration::from_secs(3600));
    let keys = sizes.stale_keys;
    for key in 0..keys {
        let _: usize = memoize_detached(&format!("bounds:stale:{key}"), &opts, move || key);
    }
    // Past `expire`: every value is stale now.
    std::thread::sleep(Duration::from_millis(5));
    let running = Arc::new(Running::default());
    let barrier = Barrier::new(keys);
    let dropped = stats().refreshes_dropped;
    std::thread::scope(|scope| {
        for key in 0..keys {
            let (running, barrier, opts) = (Arc::clone(&running), &barrier, &opts);
            scope.spawn(move || {
                barrier.wait();
                let _: usize = memoize_detached(&format!("bounds:stale:{key}"), opts, move || {
                    let now = running.now.fetch_add(1, Ordering::SeqCst) + 1;
                    running.max.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.now.fetch_sub(1, Ordering::SeqCst);
                    running.done.fetch_add(1, Ordering::SeqCst);
                    key
                });
            });
        }
    });
    let dropped = stats().refreshes_dropped - dropped;
    let queued = keys as u64 - dropped;
    // Every refresh handed over ends (or the measurement gives up after a minute).
    let deadline = Instant::now() + Duration::from_secs(60);
    while running.done.load(Ordering::SeqCst) < queued && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    StaleBurst {
        max_running: running.max.load(Ordering::SeqCst),
        queued,
        dropped,
    }
}
