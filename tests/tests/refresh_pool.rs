//! Background refreshes are bounded: `set_refresh_limits(1, 1)` lets one refresh run
//! and one wait; further stale hits serve the stale value, start nothing and are counted
//! as dropped, and a later stale hit on a dropped key starts its refresh. Blocking
//! (worker threads) and async (tasks). One test, run alone in this binary: the limits
//! and the counters are process-wide.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use cache_memoize::{
    Clock, MemoizeOptions, MemoryBackend, memoize_async_detached, memoize_detached,
    set_refresh_limits, stats,
};
use cache_memoize_tests::{runtime, wait_until};

/// A clock an hour ahead: every value stored on the real clock reads as stale.
struct HourAhead;

impl Clock for HourAhead {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(3600)
    }
}

const KEYS: usize = 10;

/// What the refreshes share with the test: each says when it starts, waits for the
/// gate, and the most that ran at once is kept.
#[derive(Default)]
struct Refreshes {
    open: Mutex<bool>,
    opened: Condvar,
    running: AtomicUsize,
    most: AtomicUsize,
    done: AtomicUsize,
}

impl Refreshes {
    fn enter(&self) {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.done.fetch_add(1, Ordering::SeqCst);
    }

    fn wait_open(&self) {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        drop(
            self.opened
                .wait_while(open, |open| !*open)
                .unwrap_or_else(PoisonError::into_inner),
        );
    }

    fn open(&self) {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.opened.notify_all();
    }
}

fn options() -> (MemoizeOptions, MemoizeOptions) {
    let fresh = MemoizeOptions::new()
        .backend(Arc::new(MemoryBackend::new()))
        .expire(Duration::from_secs(60))
        .stale(Duration::from_secs(24 * 3600));
    let later = fresh.clone().clock(Arc::new(HourAhead));
    (fresh, later)
}

fn started(signals: &Receiver<usize>) -> usize {
    match signals.recv_timeout(Duration::from_secs(10)) {
        Ok(key) => key,
        Err(err) => panic!("no refresh started: {err}"),
    }
}

fn blocking_refreshes_run_on_one_worker_with_one_waiting_and_the_rest_are_dropped() {
    let (fresh, later) = options();
    for n in 0..KEYS {
        assert_eq!(memoize_detached(&format!("sync:{n}"), &fresh, || 0_u32), 0);
    }
    let shared = Arc::new(Refreshes::default());
    let (signal, signals): (Sender<usize>, _) = channel();
    let hit = |n: usize| {
        let (shared, signal) = (Arc::clone(&shared), signal.clone());
        memoize_detached(&format!("sync:{n}"), &later, move || {
            shared.enter();
            let _ = signal.send(n);
            shared.wait_open();
            shared.leave();
            1_u32
        })
    };
    let before = stats();
    assert_eq!(hit(0), 0, "stale served");
    assert_eq!(started(&signals), 0, "the worker runs the first refresh");
    for n in 1..KEYS {
        assert_eq!(hit(n), 0, "stale served");
    }
    let after = stats();
    assert_eq!(after.stale_served - before.stale_served, KEYS as u64);
    assert_eq!(
        after.refreshes_dropped - before.refreshes_dropped,
        (KEYS - 2) as u64,
        "one refresh running, one queued, the rest dropped"
    );

    shared.open();
    assert_eq!(started(&signals), 1, "the queued refresh runs next");
    wait_until("both refreshes end", || {
        shared.done.load(Ordering::SeqCst) == 2
    });
    wait_until("the refreshed values are stored", || {
        hit(0) == 1 && hit(1) == 1
    });
    assert_eq!(shared.most.load(Ordering::SeqCst), 1, "one worker");
    assert!(signals.try_recv().is_err(), "no dropped refresh ran");

    // A dropped key's claim was released: its next stale hit refreshes it.
    assert_eq!(hit(2), 0, "stale served");
    assert_eq!(started(&signals), 2);
    wait_until("the dropped key is refreshed", || hit(2) == 1);
}

fn async_refreshes_run_one_at_a_time_with_one_waiting_and_the_rest_are_dropped() {
    let (fresh, later) = options();
    let runtime = runtime();
    for n in 0..KEYS {
        let key = format!("async:{n}");
        let stored = runtime.block_on(memoize_async_detached(&key, &fresh, || async { 0_u32 }));
        assert_eq!(stored, 0);
    }
    let shared = Arc::new(Refreshes::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (signal, signals): (Sender<usize>, _) = channel();
    let hit = |n: usize| {
        let (shared, gate, signal) = (Arc::clone(&shared), Arc::clone(&gate), signal.clone());
        let key = format!("async:{n}");
        runtime.block_on(memoize_async_detached(&key, &later, move || async move {
            shared.enter();
            let _ = signal.send(n);
            let _ = gate.acquire().await;
            shared.leave();
            1_u32
        }))
    };
    let before = stats();
    assert_eq!(hit(0), 0, "stale served");
    assert_eq!(started(&signals), 0, "the first refresh runs");
    for n in 1..KEYS {
        assert_eq!(hit(n), 0, "stale served");
    }
    let after = stats();
    assert_eq!(
        after.refreshes_dropped - before.refreshes_dropped,
        (KEYS - 2) as u64,
        "one refresh running, one waiting for a turn, the rest dropped"
    );

    gate.add_permits(KEYS * 2);
    assert_eq!(started(&signals), 1, "the waiting refresh runs next");
    wait_until("both refreshes end", || {
        shared.done.load(Ordering::SeqCst) == 2
    });
    wait_until("the refreshed values are stored", || {
        hit(0) == 1 && hit(1) == 1
    });
    assert_eq!(shared.most.load(Ordering::SeqCst), 1, "one at a time");
    assert!(signals.try_recv().is_err(), "no dropped refresh ran");

    assert_eq!(hit(2), 0, "stale served");
    assert_eq!(started(&signals), 2);
    wait_until("the dropped key is refreshed", || hit(2) == 1);
}

#[test]
fn background_refreshes_beyond_the_limits_are_dropped_and_counted() {
    assert!(
        set_refresh_limits(1, 1),
        "set before any background refresh"
    );
    blocking_refreshes_run_on_one_worker_with_one_waiting_and_the_rest_are_dropped();
    async_refreshes_run_one_at_a_time_with_one_waiting_and_the_rest_are_dropped();
    assert!(
        !set_refresh_limits(8, 8),
        "fixed by the first background refresh"
    );
}
