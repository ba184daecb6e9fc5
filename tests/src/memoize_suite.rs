//! Memoize scenarios, ported from Djblets' `cache_memoize(lock=...)` tests, plus the
//! stampede, panic, corruption, expiry and failure cases.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;

use cache_memoize::{
    CacheLock, LockOptions, MemoizeOptions, invalidate, memoize, memoize_async, set_shared_backend,
    try_memoize, try_memoize_async,
};

use crate::{Fixture, fast_lock, runtime, wait_until};

/// A computation that counts its runs.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicUsize>);

impl Counter {
    fn hit(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn runs(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn compute(&self, value: &str) -> impl FnOnce() -> String + use<> {
        let me = self.clone();
        let value = value.to_owned();
        move || {
            me.hit();
            value
        }
    }
}

/// Stores `value` at `key` behind the probe's back, as the holder of its lock does (it
/// writes whatever lock is held: the encoding is memoized at a scratch key, then
/// copied).
fn store_elsewhere(f: &Fixture, key: &str, value: &str) {
    write_raw(f.probe.inner(), key, value);
}

/// Writes `value`, encoded as memoize stores it, at memoize key `key` of `backend`.
fn write_raw(backend: &Arc<dyn cache_memoize::CacheBackend>, key: &str, value: &str) {
    let scratch = format!("scratch:{}", uuid::Uuid::new_v4().simple());
    let opts = MemoizeOptions::new().backend(Arc::clone(backend));
    let _: String = memoize(&scratch, &opts, || value.to_owned());
    let bytes = backend
        .get(cache_memoize::make_cache_key(&scratch).as_str())
        .ok()
        .flatten()
        .unwrap_or_default();
    let target = cache_memoize::make_cache_key(key);
    assert!(
        backend
            .set(target.as_str(), &bytes, Duration::from_secs(600))
            .is_ok()
    );
}

/// A stored value is returned with one read: no lock, no compute.
pub fn value_present_no_lock_no_compute(f: &Fixture) {
    let key = f.key("present");
    store_elsewhere(f, &key, "stored");
    let runs = Counter::default();
    let value = memoize(&key, &f.locked(), runs.compute("computed"));
    assert_eq!(value, "stored");
    assert_eq!(runs.runs(), 0);
    assert_eq!(f.probe.ops(), ["get"], "a hit is one backend operation");
}

/// A miss computes while holding the lock, stores, and leaves no lock behind, in
/// three backend operations.
pub fn miss_computes_while_holding_the_lock(f: &Fixture) {
    let key = f.key("miss");
    let held_during_compute = {
        let f_key = key.clone();
        let inner = Arc::clone(f.probe.inner());
        move || {
            let lock_key = cache_memoize::make_cache_key(&f_key).lock_key();
            inner.get(&lock_key).ok().flatten().is_some()
        }
    };
    let value = memoize(&key, &f.locked(), || held_during_compute().to_string());
    assert_eq!(value, "true", "the lock was held while computing");
    assert_eq!(f.probe.ops(), ["get", "get_or_lock", "store_and_release"]);
    assert_eq!(f.lock_token(&key), None);
    let again = memoize(&key, &f.locked(), || "recomputed".to_owned());
    assert_eq!(again, "true");
}

/// A value stored by someone else between our read and our lock is returned, not
/// recomputed.
pub fn value_appearing_while_acquiring_is_not_recomputed(f: &Fixture) {
    let key = f.key("appearing");
    let once = std::sync::Once::new();
    let fixture_inner = Arc::clone(f.probe.inner());
    let hook_key = key.clone();
    f.probe.after(move |op| {
        if op == "get" {
            once.call_once(|| {
                let opts = MemoizeOptions::new().backend(Arc::clone(&fixture_inner));
                let _: String = memoize(&hook_key, &opts, || "theirs".to_owned());
            });
        }
    });
    let runs = Counter::default();
    assert_eq!(memoize(&key, &f.locked(), runs.compute("ours")), "theirs");
    assert_eq!(runs.runs(), 0);
    assert_eq!(f.lock_token(&key), None, "the lock was never taken");
}

/// A caller that finds the lock held waits, then reads the holder's result.
pub fn waiter_reads_the_other_holders_result(f: &Fixture) {
    let key = f.key("waiter");
    let Ok(holder) = CacheLock::new(&key)
        .backend(Arc::clone(f.probe.inner()))
        .acquire()
    else {
        panic!("the other holder takes the lock")
    };
    let (tried, saw_held) = mpsc::channel();
    f.probe.after(move |op| {
        if op == "get_or_lock" {
            let _ = tried.send(());
        }
    });
    let runs = Counter::default();
    let waiter = {
        let (opts, key, runs) = (f.locked(), key.clone(), runs.clone());
        std::thread::spawn(move || memoize(&key, &opts, runs.compute("waiter's")))
    };
    assert!(saw_held.recv().is_ok(), "the waiter found the lock held");
    store_elsewhere(f, &key, "holder's");
    assert!(matches!(holder.release(), Ok(true)));
    assert_eq!(waiter.join().ok().as_deref(), Some("holder's"));
    assert_eq!(runs.runs(), 0);
}

/// When the lock stays held past the timeout, the caller computes anyway and returns
/// its value, but stores nothing (a store outside the lock could not be fenced: the
/// holder stores), and the other owner's lock survives.
pub fn lock_timeout_computes_anyway(f: &Fixture) {
    let key = f.key("timeout");
    let Ok(holder) = CacheLock::new(&key)
        .backend(Arc::clone(f.probe.inner()))
        .acquire()
    else {
        panic!("the other holder takes the lock")
    };
    let opts = f.opts().lock(LockOptions {
        timeout: Some(Duration::from_millis(30)),
        ..fast_lock()
    });
    let runs = Counter::default();
    assert_eq!(memoize(&key, &opts, runs.compute("computed")), "computed");
    assert_eq!(runs.runs(), 1);
    assert_eq!(
        f.lock_token(&key).as_deref(),
        Some(holder.token().as_bytes())
    );
    assert_eq!(f.stored(&key), None, "not stored: the holder stores");
}

/// When the lock times out but the value was stored by then, it is returned.
pub fn lock_timeout_with_value_present_returns_it(f: &Fixture) {
    let key = f.key("timeout-present");
    let Ok(_holder) = CacheLock::new(&key)
        .backend(Arc::clone(f.probe.inner()))
        .acquire()
    else {
        panic!("the other holder takes the lock")
    };
    let once = std::sync::Once::new();
    let inner = Arc::clone(f.probe.inner());
    let hook_key = key.clone();
    f.probe.after(move |op| {
        if op == "get_or_lock" {
            once.call_once(|| write_raw(&inner, &hook_key, "holder's"));
        }
    });
    let opts = f.opts().lock(LockOptions {
        blocking: false,
        ..fast_lock()
    });
    let runs = Counter::default();
    assert_eq!(memoize(&key, &opts, runs.compute("ours")), "holder's");
    assert_eq!(runs.runs(), 0);
}

/// A lock left by a holder that died is taken over when it expires.
pub fn previous_lock_expired_is_taken_over(f: &Fixture) {
    let key = f.key("stale");
    let lock_key = cache_memoize::make_cache_key(&key).lock_key();
    let planted = f
        .probe
        .inner()
        .add(&lock_key, b"dead-holder", Duration::from_millis(20));
    assert!(matches!(planted, Ok(true)), "{planted:?}");
    let runs = Counter::default();
    assert_eq!(memoize(&key, &f.locked(), runs.compute("fresh")), "fresh");
    assert_eq!(runs.runs(), 1);
    assert_eq!(f.lock_token(&key), None);
}

/// Sixteen threads released together on a cold key: one computes, all get its value.
pub fn sixteen_threads_on_a_cold_key_compute_once(f: &Fixture) {
    const THREADS: usize = 16;
    let key = f.key("stampede");
    let runs = Counter::default();
    let start = Arc::new(Barrier::new(THREADS));
    let callers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (opts, key, runs, start) =
                (f.locked(), key.clone(), runs.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                memoize(&key, &opts, runs.compute("the value"))
            })
        })
        .collect();
    let values: Vec<_> = callers.into_iter().filter_map(|c| c.join().ok()).collect();
    assert_eq!(values.len(), THREADS);
    assert!(values.iter().all(|v| v == "the value"));
    assert_eq!(runs.runs(), 1);
    assert_eq!(f.lock_token(&key), None);
}

/// A panic in the computation propagates, releases the lock, and stores nothing.
pub fn panic_in_compute_leaves_no_lock(f: &Fixture) {
    let key = f.key("panic");
    let opts = f.locked();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        memoize::<String, _>(&key, &opts, || panic!("boom"))
    }));
    assert!(outcome.is_err());
    assert_eq!(f.lock_token(&key), None);
    assert_eq!(f.stored(&key), None);
    assert_eq!(memoize(&key, &opts, || "after".to_owned()), "after");
}

/// Bytes that are not a value of ours read as a miss and are overwritten.
pub fn corrupt_bytes_are_recomputed_and_overwritten(f: &Fixture) {
    let key = f.key("corrupt");
    let stored_key = cache_memoize::make_cache_key(&key);
    let garbage = b"\x00\xffnot a value of ours".to_vec();
    assert!(
        f.probe
            .inner()
            .set(stored_key.as_str(), &garbage, Duration::from_secs(60))
            .is_ok()
    );
    let runs = Counter::default();
    assert_eq!(memoize(&key, &f.locked(), runs.compute("fresh")), "fresh");
    assert_eq!(runs.runs(), 1);
    assert!(f.stored(&key).is_some_and(|bytes| bytes != garbage));
    assert_eq!(memoize(&key, &f.locked(), runs.compute("again")), "fresh");
    assert_eq!(runs.runs(), 1);
}

/// An expired value is a miss.
pub fn expired_entry_is_a_miss(f: &Fixture) {
    let key = f.key("expiring");
    let opts = f.locked().expire(Duration::from_millis(5));
    let runs = Counter::default();
    assert_eq!(memoize(&key, &opts, runs.compute("first")), "first");
    wait_until("the value expires", || f.stored(&key).is_none());
    assert_eq!(memoize(&key, &opts, runs.compute("second")), "second");
    assert_eq!(runs.runs(), 2);
}

/// A failing backend never breaks the caller: every call computes and returns.
pub fn broken_backend_computes_and_returns(f: &Fixture) {
    let key = f.key("broken");
    f.probe.set_failing(true);
    let runs = Counter::default();
    assert_eq!(memoize(&key, &f.locked(), runs.compute("v")), "v");
    assert_eq!(memoize(&key, &f.opts(), runs.compute("v")), "v");
    assert_eq!(runs.runs(), 2);
    assert!(invalidate_on(f, &key).is_err());
    f.probe.set_failing(false);
    assert_eq!(f.stored(&key), None);
}

fn invalidate_on(f: &Fixture, key: &str) -> Result<(), cache_memoize::Error> {
    f.backend()
        .delete(cache_memoize::make_cache_key(key).as_str())
}

/// An `Err` is returned as is: nothing stored, lock released.
pub fn err_is_returned_and_not_stored(f: &Fixture) {
    let key = f.key("err");
    let failed: Result<String, &str> = try_memoize(&key, &f.locked(), || Err("no"));
    assert_eq!(failed, Err("no"));
    assert_eq!(f.stored(&key), None);
    assert_eq!(f.lock_token(&key), None);
    let ok: Result<String, &str> = try_memoize(&key, &f.locked(), || Ok("yes".into()));
    assert_eq!(ok.as_deref(), Ok("yes"));
    let cached: Result<String, &str> = try_memoize(&key, &f.locked(), || Err("not called"));
    assert_eq!(cached.as_deref(), Ok("yes"));
}

/// `force_overwrite` computes even on a hit and replaces the value.
pub fn force_overwrite_recomputes_and_stores(f: &Fixture) {
    let key = f.key("force");
    store_elsewhere(f, &key, "old");
    let forced = f.locked().force_overwrite(true);
    assert_eq!(memoize(&key, &forced, || "new".to_owned()), "new");
    assert_eq!(memoize(&key, &f.locked(), || "unused".to_owned()), "new");
    assert_eq!(f.lock_token(&key), None);
}

/// A value stored under another version reads as a miss.
pub fn version_change_is_a_miss(f: &Fixture) {
    let key = f.key("version");
    assert_eq!(
        memoize(&key, &f.opts().version(1), || "v1".to_owned()),
        "v1"
    );
    assert_eq!(
        memoize(&key, &f.opts().version(2), || "v2".to_owned()),
        "v2"
    );
    assert_eq!(
        memoize(&key, &f.opts().version(2), || "unused".to_owned()),
        "v2"
    );
}

/// Without a lock option, a miss still stores under the lock (taken without waiting,
/// so the store is fenced): read, get-or-lock, store-and-release.
pub fn unlocked_miss_computes_and_stores(f: &Fixture) {
    let key = f.key("unlocked");
    assert_eq!(memoize(&key, &f.opts(), || 7_u64), 7);
    assert_eq!(f.probe.ops(), ["get", "get_or_lock", "store_and_release"]);
    assert_eq!(memoize(&key, &f.opts(), || 8_u64), 7);
}

/// `invalidate` removes the value from the registered backend.
pub fn invalidate_removes_the_value(f: &Fixture) {
    // The registry is process-wide, and this scenario runs on several fixtures of one
    // test binary at once: hold the registry until `invalidate` has used it, or another
    // fixture's registration can come in between and take the invalidation elsewhere.
    let _registry = crate::registry_guard();
    set_shared_backend(f.backend());
    let key = f.key("invalidate");
    assert_eq!(memoize(&key, &f.opts(), || 1_u8), 1);
    assert!(invalidate(&key).is_ok());
    assert_eq!(f.stored(&key), None);
    assert_eq!(memoize(&key, &f.opts(), || 2_u8), 2);
}

/// The async form hits and misses like the sync one, in as many operations.
pub fn async_hit_and_miss(f: &Fixture) {
    let key = f.key("async");
    runtime().block_on(async {
        let runs = Counter::default();
        let first = memoize_async(&key, &f.locked(), || async { runs.compute("async")() }).await;
        assert_eq!(f.probe.ops(), ["get", "get_or_lock", "store_and_release"]);
        f.probe.clear();
        let second = memoize_async(&key, &f.locked(), || async { runs.compute("again")() }).await;
        assert_eq!(f.probe.ops(), ["get"]);
        assert_eq!(
            (first.as_str(), second.as_str(), runs.runs()),
            ("async", "async", 1)
        );
    });
    assert_eq!(f.lock_token(&key), None);
}

/// Sixteen tasks released together on a cold key: one computes, all get its value.
pub fn async_tasks_on_a_cold_key_compute_once(f: &Fixture) {
    const TASKS: usize = 16;
    let key = f.key("async-stampede");
    let runs = Counter::default();
    runtime().block_on(async {
        let start = Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (opts, key, runs, start) =
                    (f.locked(), key.clone(), runs.clone(), Arc::clone(&start));
                tokio::spawn(async move {
                    start.wait().await;
                    memoize_async(&key, &opts, || async move {
                        tokio::task::yield_now().await;
                        runs.compute("shared")()
                    })
                    .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.ok().as_deref(), Some("shared"));
        }
    });
    assert_eq!(runs.runs(), 1);
    assert_eq!(f.lock_token(&key), None);
}

/// A failing backend never breaks an async caller.
pub fn async_broken_backend_computes_and_returns(f: &Fixture) {
    let key = f.key("async-broken");
    f.probe.set_failing(true);
    runtime().block_on(async {
        let value = memoize_async(&key, &f.locked(), || async { 5_i32 }).await;
        assert_eq!(value, 5);
    });
}

/// An async `Err` is returned and not stored.
pub fn async_err_is_not_stored(f: &Fixture) {
    let key = f.key("async-err");
    runtime().block_on(async {
        let failed: Result<String, String> =
            try_memoize_async(&key, &f.locked(), || async { Err("no".to_owned()) }).await;
        assert_eq!(failed, Err("no".to_owned()));
    });
    assert_eq!(f.stored(&key), None);
    assert_eq!(f.lock_token(&key), None);
}

/// `refresh` forces the first memoized call inside it, and only that one.
pub fn refresh_recomputes_the_first_call_only(f: &Fixture) {
    let (outer, inner) = (f.key("refresh-outer"), f.key("refresh-inner"));
    let opts = f.locked();
    let call = |n: u32| memoize(&outer, &opts, || memoize(&inner, &opts, || n) + 100);
    assert_eq!(call(1), 101);
    assert_eq!(call(2), 101, "a hit");
    assert_eq!(
        cache_memoize::refresh(|| call(3)),
        101,
        "outer recomputed, inner still a hit"
    );
    assert_eq!(
        cache_memoize::refresh(|| memoize(&inner, &opts, || 4_u32)),
        4
    );
    assert_eq!(cache_memoize::refresh(|| call(5)), 104);
    assert_eq!(call(6), 104, "nothing stays forced after the scope");
}

/// `refresh_async` forces the first memoized call of the future it wraps.
pub fn refresh_async_recomputes(f: &Fixture) {
    let key = f.key("refresh-async");
    runtime().block_on(async {
        let opts = f.locked();
        assert_eq!(memoize_async(&key, &opts, || async { 1_u8 }).await, 1);
        let refreshed = cache_memoize::refresh_async(async {
            tokio::task::yield_now().await;
            memoize_async(&key, &opts, || async { 2_u8 }).await
        })
        .await;
        assert_eq!(refreshed, 2);
        assert_eq!(memoize_async(&key, &opts, || async { 3_u8 }).await, 2);
    });
}

/// A computation that outlasts its lock's expiry keeps the lock (renewed at a third of
/// its expiry), so no second caller computes meanwhile.
pub fn long_computation_keeps_its_lock(f: &Fixture) {
    let key = f.key("long");
    // Renewed at a third of it: 800 ms of margin for a late renewal on a loaded machine.
    let expire = std::time::Duration::from_millis(1200);
    let opts = f.opts().lock(LockOptions {
        expire,
        ..fast_lock()
    });
    let (inner, lock_key) = (
        Arc::clone(f.probe.inner()),
        cache_memoize::make_cache_key(&key).lock_key(),
    );
    let value = memoize(&key, &opts, || {
        let held_at_start = inner.get(&lock_key).ok().flatten();
        let started = std::time::Instant::now();
        // Outlast the expiry two and a half times; the lock must still be ours.
        wait_until("the computation outlasts its lock's expiry", || {
            started.elapsed() > expire * 5 / 2
        });
        let held_at_end = inner.get(&lock_key).ok().flatten();
        held_at_start.is_some() && held_at_start == held_at_end
    });
    assert!(value, "the lock was renewed while computing");
    assert_eq!(f.lock_token(&key), None, "and released after");
}

/// Concurrent misses of one key in two backends are not coalesced with each other:
/// both computations run at once, each backend gets its own value.
pub fn two_backends_do_not_share_a_computation(f: &Fixture) {
    let key = f.key("two-backends");
    let other = Fixture::new(Arc::new(cache_memoize::MemoryBackend::new()));
    let (first_in, first_arrived) = mpsc::channel::<()>();
    let (second_in, second_arrived) = mpsc::channel::<()>();
    // Each computation announces itself and waits for the other: if the second call
    // were coalesced into the first, the first would wait alone and say so.
    let meet = |announce: mpsc::Sender<()>, other: mpsc::Receiver<()>, name: &'static str| {
        move || {
            let _ = announce.send(());
            match other.recv_timeout(std::time::Duration::from_secs(10)) {
                Ok(()) => name.to_owned(),
                Err(_) => format!("{name}, computed alone"),
            }
        }
    };
    let first = {
        let (opts, key) = (f.locked(), key.clone());
        let compute = meet(first_in, second_arrived, "first backend");
        std::thread::spawn(move || memoize(&key, &opts, compute))
    };
    let second = {
        let (opts, key) = (other.locked(), key.clone());
        let compute = meet(second_in, first_arrived, "second backend");
        std::thread::spawn(move || memoize(&key, &opts, compute))
    };
    assert_eq!(first.join().ok().as_deref(), Some("first backend"));
    assert_eq!(second.join().ok().as_deref(), Some("second backend"));
}

/// Lock options whose expiry outlasts any test: a caller left waiting for an expiry
/// would hang the scenario (and fail it at its deadline).
fn lock_without_expiry(f: &Fixture) -> MemoizeOptions {
    f.opts().lock(LockOptions {
        expire: Duration::from_secs(3600),
        ..fast_lock()
    })
}

/// Fails the scenario instead of hanging it, when a caller waits for an expiry.
async fn within_a_minute<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), future).await {
        Ok(output) => output,
        Err(elapsed) => panic!("{what}: still waiting ({elapsed}; an hour-long lock?)"),
    }
}

/// 100 async callers on a cold key; the leader is cancelled while it computes. The
/// other 99 all get the value, at most two computations run, and no lock is left
/// (nobody waited for the cancelled leader's lock to expire).
pub fn async_cancelled_leader_strands_no_one(f: &Fixture) {
    const CALLERS: usize = 100;
    let key = f.key("async-cancelled-leader");
    let runs = Counter::default();
    let rt = runtime();
    rt.block_on(within_a_minute("cancelled leader", async {
        let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let start = Arc::new(tokio::sync::Barrier::new(CALLERS));
        let tasks: Vec<_> = (0..CALLERS)
            .map(|caller| {
                let (opts, key, runs, start, started) = (
                    lock_without_expiry(f),
                    key.clone(),
                    runs.clone(),
                    Arc::clone(&start),
                    started_tx.clone(),
                );
                tokio::spawn(async move {
                    start.wait().await;
                    memoize_async(&key, &opts, || async move {
                        runs.hit();
                        if runs.runs() == 1 {
                            // The first computation never ends: its caller is cancelled.
                            let _ = started.send(caller);
                            std::future::pending::<()>().await;
                        }
                        "value".to_owned()
                    })
                    .await
                })
            })
            .collect();
        let leader = started_rx.recv().await.unwrap_or_default();
        tasks[leader].abort();
        let mut finished = 0;
        for (caller, task) in tasks.into_iter().enumerate() {
            if caller == leader {
                assert!(task.await.is_err_and(|err| err.is_cancelled()));
                continue;
            }
            assert_eq!(task.await.ok().as_deref(), Some("value"), "caller {caller}");
            finished += 1;
        }
        assert_eq!(finished, CALLERS - 1, "0 of the other callers failed");
    }));
    assert!(runs.runs() <= 2, "{} computations", runs.runs());
    wait_until("the cancelled leader's lock is released", || {
        f.lock_token(&key).is_none()
    });
    drop(rt);
}

/// An async leader that panics: its followers retry, one computes, none hangs, and
/// no lock is left.
pub fn async_leader_panic_lets_followers_retry(f: &Fixture) {
    const CALLERS: usize = 20;
    let key = f.key("async-panicking-leader");
    let runs = Counter::default();
    let rt = runtime();
    rt.block_on(within_a_minute("panicking leader", async {
        let start = Arc::new(tokio::sync::Barrier::new(CALLERS));
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (opts, key, runs, start) = (
                    lock_without_expiry(f),
                    key.clone(),
                    runs.clone(),
                    Arc::clone(&start),
                );
                tokio::spawn(async move {
                    start.wait().await;
                    memoize_async(&key, &opts, || async move {
                        runs.hit();
                        tokio::task::yield_now().await;
                        assert!(runs.runs() != 1, "the first computation panics");
                        "value".to_owned()
                    })
                    .await
                })
            })
            .collect();
        let mut panicked = 0;
        for task in tasks {
            match task.await {
                Ok(value) => assert_eq!(value, "value"),
                Err(err) if err.is_panic() => panicked += 1,
                Err(err) => panic!("{err}"),
            }
        }
        assert_eq!(panicked, 1, "only the panicking caller fails");
    }));
    assert_eq!(runs.runs(), 2);
    wait_until("the panicked leader's lock is released", || {
        f.lock_token(&key).is_none()
    });
    drop(rt);
}

/// Async callers cancelled at random points of their first milliseconds (before,
/// during and after taking the lock) leave no lock behind, on any of 400 keys.
pub fn async_cancelled_at_random_points_leaves_no_lock(f: &Fixture) {
    const KEYS: usize = 400;
    let keys: Vec<String> = (0..KEYS)
        .map(|i| f.key(&format!("cancelled-{i}")))
        .collect();
    let rt = runtime();
    rt.block_on(async {
        let tasks: Vec<_> = keys
            .iter()
            .map(|key| {
                let (opts, key) = (lock_without_expiry(f), key.clone());
                let deadline = Duration::from_micros(fastrand_micros(3_000));
                tokio::spawn(async move {
                    let call = memoize_async(&key, &opts, || async {
                        std::future::pending::<()>().await;
                        0_u8
                    });
                    tokio::time::timeout(deadline, call).await.is_err()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.ok(), Some(true), "every call was cancelled");
        }
    });
    wait_until("every cancelled caller's lock is released", || {
        keys.iter().all(|key| f.lock_token(key).is_none())
    });
    drop(rt);
}

/// A pseudo-random number of microseconds below `max`, from the process's hasher
/// seed (the tests package has no RNG of its own).
fn fastrand_micros(max: u64) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0_u8) % max
}

/// A holder whose lock was lost (it expired and another caller took over and stored a
/// newer value) does not overwrite that value with its late one.
pub fn a_late_holder_does_not_overwrite_the_newer_value(f: &Fixture) {
    let key = f.key("late-holder");
    let opts = f.locked();
    let lock_key = cache_memoize::make_cache_key(&key).lock_key();
    // Another process: the same store, another handle (so not coalesced with us).
    let elsewhere = MemoizeOptions::new()
        .backend(Arc::clone(f.probe.inner()))
        .lock(fast_lock());
    let late: String = memoize(&key, &opts, || {
        // Our lock expires (deleted behind our back), and another process computes
        // and stores a newer value meanwhile.
        assert!(f.probe.inner().delete(&lock_key).is_ok());
        let newer: String = memoize(&key, &elsewhere, || "newer".to_owned());
        assert_eq!(newer, "newer");
        "late".to_owned()
    });
    assert_eq!(late, "late", "the late caller still gets what it computed");
    assert_eq!(
        memoize::<String, _>(&key, &opts, || unreachable!("stored")),
        "newer",
        "the late store was refused"
    );
    assert_eq!(f.lock_token(&key), None);
}

/// An invalidation made while a computation runs voids that computation's store: the
/// value computed before the invalidation is never served after it.
pub fn invalidate_during_a_computation_voids_its_store(f: &Fixture) {
    let key = f.key("invalidated-midway");
    let opts = f.locked();
    let cache_key = cache_memoize::make_cache_key(&key);
    let computed: String = memoize(&key, &opts, || {
        assert!(
            f.backend()
                .invalidate(cache_key.as_str(), &cache_key.lock_key())
                .is_ok()
        );
        "before the invalidation".to_owned()
    });
    assert_eq!(computed, "before the invalidation");
    assert_eq!(f.stored(&key), None, "nothing stored");
    assert_eq!(memoize(&key, &opts, || "after".to_owned()), "after");
}

/// The async form of [`invalidate_during_a_computation_voids_its_store`].
pub fn async_invalidate_during_a_computation_voids_its_store(f: &Fixture) {
    let key = f.key("async-invalidated-midway");
    let opts = f.locked();
    let cache_key = cache_memoize::make_cache_key(&key);
    runtime().block_on(async {
        let backend = f.backend();
        let computed: String = memoize_async(&key, &opts, || async {
            let voided = backend
                .invalidate_async(cache_key.as_str(), &cache_key.lock_key())
                .await;
            assert!(voided.is_ok());
            "before the invalidation".to_owned()
        })
        .await;
        assert_eq!(computed, "before the invalidation");
    });
    assert_eq!(f.stored(&key), None, "nothing stored");
}

/// Issue 11, finding 6: `expire(Duration::MAX)` is clamped to 100 years, so it still
/// caches (Redis refused the `PX` it made before).
pub fn expire_duration_max_still_caches(f: &Fixture) {
    let key = f.key("expire-max");
    let counter = Counter::default();
    for opts in [
        f.opts().expire(Duration::MAX),
        f.locked().expire(Duration::MAX),
    ] {
        let first = memoize(&key, &opts, counter.compute("forever"));
        let second = memoize(&key, &opts, counter.compute("again"));
        assert_eq!((first.as_str(), second.as_str()), ("forever", "forever"));
        assert!(f.stored(&key).is_some(), "the value was stored");
        let _ = invalidate_on(f, &key);
    }
    assert_eq!(counter.runs(), 2, "each form computed once, then hit");
}

/// Issue 11, finding 6: a lock `expire` of zero is clamped to 100 ms, so its renewal
/// runs every ~33 ms instead of spinning (3,095 renewals in 500 ms before).
pub fn zero_lock_expire_does_not_spin_the_renewal(f: &Fixture) {
    let key = f.key("zero-lock-expire");
    let opts = f.opts().lock(LockOptions {
        expire: Duration::ZERO,
        ..fast_lock()
    });
    f.probe.clear();
    let computed_for = Duration::from_millis(500);
    let value = memoize(&key, &opts, || {
        let started = std::time::Instant::now();
        wait_until("the computation runs 500 ms", || {
            started.elapsed() >= computed_for
        });
        7_u32
    });
    assert_eq!(value, 7);
    let renewals = f
        .probe
        .ops()
        .iter()
        .filter(|op| **op == "compare_and_extend")
        .count();
    // One per third of the clamped 100 ms expiry: about 15 in 500 ms. The bound is
    // loose (a slow machine renews late, never more often).
    assert!(
        (1..=20).contains(&renewals),
        "{renewals} renewals in 500 ms"
    );
    assert_eq!(
        CacheLock::new(&key)
            .expire(Duration::ZERO)
            .lock_options()
            .expire,
        cache_memoize::MIN_LOCK_EXPIRE
    );
}

/// A caller waiting for another's lock rides out a backend that starts failing, at the
/// lock's pace: a wait the backend fails sleeps out its `max` (review 3, finding 3: it
/// returned at once, so the caller retried as fast as the failures came back, about
/// 150,000 attempts in 300 ms, for up to the lock's expiry). Sync and async.
pub fn a_waiter_riding_out_a_failing_backend_retries_at_the_locks_pace(f: &Fixture) {
    let opts = f.opts().lock(LockOptions {
        timeout: Some(Duration::from_millis(300)),
        retry: Duration::from_millis(50),
        ..LockOptions::default()
    });
    let rt = runtime();
    for round in ["sync", "async"] {
        let key = f.key(&format!("riding-out-{round}"));
        let lock_key = cache_memoize::make_cache_key(&key).lock_key();
        let held = f
            .probe
            .inner()
            .add(&lock_key, b"elsewhere", Duration::from_secs(60));
        assert!(matches!(held, Ok(true)), "the lock is held elsewhere");
        f.probe.set_failing(false);
        f.probe.clear();
        // The backend fails from the first attempt's return on.
        let probe = Arc::downgrade(&f.probe);
        f.probe.after(move |op| {
            if let (Some(probe), "get_or_lock") = (probe.upgrade(), op) {
                probe.set_failing(true);
            }
        });
        let computed = if round == "sync" {
            memoize(&key, &opts, || 7_u32)
        } else {
            rt.block_on(memoize_async(&key, &opts, || async { 7_u32 }))
        };
        assert_eq!(computed, 7, "{round}: computed without the lock");
        let attempts = f.probe.keys_of("get_or_lock").len();
        assert!(
            attempts <= 20,
            "{round}: {attempts} attempts at the lock in its 300 ms timeout (retry 50 ms)"
        );
    }
    f.probe.set_failing(false);
}

/// A `refresh_async` whose future panics before its memoized call leaves nothing
/// forced on the thread that polled it (review 3, finding 4: the flag set around the
/// poll stayed set through the unwind, and the thread's next memoized call, any
/// function's, recomputed and overwrote its value).
pub fn a_panicking_refresh_async_forces_nothing_after(f: &Fixture) {
    let key = f.key("refresh-async-panic");
    let opts = f.locked();
    assert_eq!(memoize(&key, &opts, || 1_u8), 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(rt) = rt else {
        panic!("cannot start a current-thread runtime");
    };
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(cache_memoize::refresh_async(async {
            panic!("the wrapped future fails before its memoized call");
        }))
    }));
    assert!(panicked.is_err());
    assert_eq!(memoize(&key, &opts, || 2_u8), 1, "a hit, not a forced call");
}
