//! Freshness scenarios: stale-while-revalidate, stale-if-error and its throttle, the
//! hard limit of `expire + stale`, detached refreshes, TTL jitter and clock skew. Time
//! is injected through a [`Clock`] that tests move forward; nothing sleeps.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime};

use cache_memoize::{
    CacheBackend, CacheLock, Clock, LockOptions, MemoizeOptions, make_cache_key, memoize,
    memoize_async_detached, memoize_detached, try_memoize,
};

use crate::{Fixture, Probe, fast_lock, runtime, wait_until};

/// The system's clock, moved forward by the test.
#[derive(Default)]
pub struct ManualClock {
    ahead_ms: AtomicU64,
}

impl ManualClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ahead_ms.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_millis(self.ahead_ms.load(Ordering::SeqCst))
    }
}

/// A clock stopped at one instant.
struct StoppedClock(SystemTime);

impl Clock for StoppedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

/// Options with a lock (so misses coalesce in-process), values fresh for 10 s and
/// servable stale for 1 h more, on `clock`.
pub fn stale_opts(f: &Fixture, clock: &Arc<ManualClock>) -> MemoizeOptions {
    f.opts()
        .lock(fast_lock())
        .expire(Duration::from_secs(10))
        .stale(Duration::from_secs(3600))
        .fail_safe(Duration::from_secs(3600))
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
}

/// Counts the computations of one key, returning `v<n>` for the n-th.
#[derive(Clone, Default)]
pub struct Versions(Arc<AtomicUsize>);

impl Versions {
    /// The next version: `v1`, `v2`, …, counting the computation.
    pub fn next(&self) -> String {
        format!("v{}", self.0.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// How many computations ran.
    pub fn computed(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A stale value is served to every caller while exactly one refreshes it; then the
/// refreshed value is served.
pub fn stale_value_is_served_while_one_caller_refreshes(f: &Fixture) {
    let key = f.key("swr");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock);
    let versions = Versions::default();
    assert_eq!(memoize(&key, &opts, || versions.next()), "v1");
    clock.advance(Duration::from_secs(11));

    let (started_tx, started) = mpsc::channel();
    let (finish, finish_rx) = mpsc::channel::<()>();
    let refresher = {
        let (key, opts, versions) = (key.clone(), opts.clone(), versions.clone());
        std::thread::spawn(move || {
            memoize(&key, &opts, move || {
                let _ = started_tx.send(());
                let _ = finish_rx.recv();
                versions.next()
            })
        })
    };
    assert!(started.recv().is_ok(), "one caller refreshes");
    for _ in 0..20 {
        let value = memoize(&key, &opts, || versions.next());
        assert_eq!(value, "v1", "the others get the stale value at once");
    }
    assert_eq!(versions.computed(), 1, "no other caller computed");
    assert!(finish.send(()).is_ok());
    assert_eq!(refresher.join().ok().as_deref(), Some("v2"));
    assert_eq!(memoize(&key, &opts, || versions.next()), "v2");
    assert_eq!(versions.computed(), 2);
    assert_eq!(f.lock_token(&key), None);
}

/// A value older than `expire + stale` is never returned: it is a miss.
pub fn nothing_older_than_expire_plus_stale_is_served(f: &Fixture) {
    let key = f.key("too-old");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock).stale(Duration::from_secs(5));
    let versions = Versions::default();
    assert_eq!(memoize(&key, &opts, || versions.next()), "v1");
    // Fresh until 10 s, servable until 15 s: at 16 s it is a miss, though the backend
    // (whose TTL runs on real time, barely started) still holds it.
    clock.advance(Duration::from_secs(16));
    assert!(f.stored(&key).is_some());
    assert_eq!(memoize(&key, &opts, || versions.next()), "v2", "never v1");
    assert_eq!(versions.computed(), 2);
}

/// An inline refresh that succeeds returns the refreshed value to its caller.
pub fn an_inline_refresh_returns_the_new_value(f: &Fixture) {
    let key = f.key("inline-refresh");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock);
    let versions = Versions::default();
    assert_eq!(memoize(&key, &opts, || versions.next()), "v1");
    clock.advance(Duration::from_secs(11));
    assert_eq!(memoize(&key, &opts, || versions.next()), "v2");
    assert_eq!(
        memoize(&key, &opts, || versions.next()),
        "v2",
        "fresh again"
    );
    assert_eq!(versions.computed(), 2);
}

/// A refresh returning `Err` (or panicking) keeps the stale value served, and the
/// fail-safe throttle stops every caller from retrying until it passes.
pub fn a_failing_refresh_keeps_the_stale_value_and_is_throttled(f: &Fixture) {
    let key = f.key("stale-if-error");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock);
    let attempts = AtomicUsize::new(0);
    let first: Result<String, String> = try_memoize(&key, &opts, || Ok("v1".to_owned()));
    assert_eq!(first.as_deref(), Ok("v1"));
    clock.advance(Duration::from_secs(11));
    let failing = || {
        attempts.fetch_add(1, Ordering::SeqCst);
        Err::<String, String>("the source is down".to_owned())
    };
    assert_eq!(try_memoize(&key, &opts, failing).as_deref(), Ok("v1"));
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    for _ in 0..10 {
        assert_eq!(try_memoize(&key, &opts, failing).as_deref(), Ok("v1"));
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "throttled fleet-wide");
    let mark = cache_memoize::make_cache_key(&key).refresh_key();
    assert!(
        f.probe.inner().get(&mark).ok().flatten().is_some(),
        "the throttle is the refresh mark"
    );
    assert_eq!(
        f.lock_token(&key),
        None,
        "the lock went back: misses never wait"
    );
}

/// A refresh that panics keeps the stale value served too.
pub fn a_panicking_refresh_keeps_the_stale_value(f: &Fixture) {
    let key = f.key("stale-if-panic");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock);
    assert_eq!(memoize(&key, &opts, || "v1".to_owned()), "v1");
    clock.advance(Duration::from_secs(11));
    let value: String = memoize(&key, &opts, || panic!("the refresh failed"));
    assert_eq!(value, "v1");
}

/// A detached refresh returns the stale value at once, to the triggering caller too,
/// while the refresh runs on its own thread.
pub fn a_detached_refresh_returns_the_stale_value_at_once(f: &Fixture) {
    let key = f.key("detached");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock);
    let versions = Versions::default();
    let v = versions.clone();
    assert_eq!(memoize_detached(&key, &opts, move || v.next()), "v1");
    clock.advance(Duration::from_secs(11));
    let (finish, finish_rx) = mpsc::channel::<()>();
    let (done_tx, done) = mpsc::channel::<()>();
    let v = versions.clone();
    let value = memoize_detached(&key, &opts, move || {
        let _ = finish_rx.recv();
        let next = v.next();
        let _ = done_tx.send(());
        next
    });
    assert_eq!(value, "v1", "returned before the refresh could finish");
    assert!(finish.send(()).is_ok());
    assert!(done.recv().is_ok());
    // Polled with plain options (no stale window): a read that never refreshes.
    wait_until("the detached refresh stored its value", || {
        memoize(&key, &f.opts(), || "unexpected".to_owned()) == "v2"
    });
    assert_eq!(versions.computed(), 2);
}

/// The async form: the refresh runs as a task on the caller's runtime.
pub fn an_async_detached_refresh_returns_the_stale_value_at_once(f: &Fixture) {
    let key = f.key("async-detached");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock);
    let rt = runtime();
    rt.block_on(async {
        let first: String = memoize_async_detached(&key, &opts, || async { "v1".to_owned() }).await;
        assert_eq!(first, "v1");
        clock.advance(Duration::from_secs(11));
        let (finish, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let stale: String = memoize_async_detached(&key, &opts, move || async move {
            let _ = finish_rx.await;
            "v2".to_owned()
        })
        .await;
        assert_eq!(stale, "v1", "returned before the refresh could finish");
        assert!(finish.send(()).is_ok());
    });
    // Polled with plain options (no stale window): a read that never refreshes.
    wait_until("the refresh task stored its value", || {
        memoize(&key, &f.opts(), || "unexpected".to_owned()) == "v2"
    });
    drop(rt);
}

/// Another process (a backend handle of its own, on the same store), so that its
/// in-process state (coalescing, refresh claims) is not this one's.
fn another_process(f: &Fixture) -> Arc<Probe> {
    Arc::new(Probe::new(Arc::clone(f.probe.inner())))
}

/// Makes `process`'s first `get` (a caller's read of the value) wait until `go` says so,
/// after telling `read` it returned.
fn pause_after_first_read(process: &Probe) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (read_tx, read) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let mut first = true;
    process.after(move |op| {
        if op == "get" && std::mem::take(&mut first) {
            let _ = read_tx.send(());
            let _ = go_rx.recv();
        }
    });
    (read, go)
}

/// A process that read the stale value just before another process's refresh stored
/// its value, and reaches the refresh lock just after that refresh released it, finds
/// the new value under the lock and does not compute (here on the detached path).
pub fn a_stale_read_that_reaches_the_refresh_lock_after_another_process_refreshed_does_not_recompute(
    f: &Fixture,
) {
    let key = f.key("late-refresher");
    let clock = Arc::new(ManualClock::default());
    let versions = Versions::default();
    let (late, early) = (another_process(f), another_process(f));
    let on = |process: &Arc<Probe>| {
        stale_opts(f, &clock).backend(Arc::clone(process) as Arc<dyn CacheBackend>)
    };
    let (late_opts, early_opts) = (on(&late), on(&early));
    assert_eq!(memoize(&key, &early_opts, || versions.next()), "v1");
    clock.advance(Duration::from_secs(11));

    let (read, go) = pause_after_first_read(&late);
    let late_caller = {
        let (key, versions) = (key.clone(), versions.clone());
        std::thread::spawn(move || memoize_detached(&key, &late_opts, move || versions.next()))
    };
    assert!(read.recv().is_ok(), "the late process read the stale value");
    assert_eq!(
        memoize(&key, &early_opts, || versions.next()),
        "v2",
        "the other process refreshed it, inline"
    );
    assert!(go.send(()).is_ok());
    assert_eq!(
        late_caller.join().ok().as_deref(),
        Some("v1"),
        "served stale"
    );

    let refresh_lock = cache_memoize::make_cache_key(&key).lock_key();
    wait_until(
        "the late process's refresh gave the refresh lock back",
        || {
            late.keys_done_of("compare_and_delete")
                .contains(&refresh_lock)
        },
    );
    assert_eq!(
        late.keys_of("take_lock"),
        vec![refresh_lock.clone()],
        "it took the refresh lock"
    );
    assert_eq!(versions.computed(), 2, "and did not compute v3");
    assert!(f.probe.inner().get(&refresh_lock).ok().flatten().is_none());
    assert_eq!(memoize(&key, &f.opts(), || "unexpected".to_owned()), "v2");
}

/// Counts, on drop, whether it was dropped on the thread that made it.
struct DroppedOnCaller {
    caller: std::thread::ThreadId,
    count: Arc<AtomicUsize>,
}

impl Drop for DroppedOnCaller {
    fn drop(&mut self) {
        if std::thread::current().id() == self.caller {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// While a detached refresh of a key runs, 99 more stale hits in the same process
/// start nothing: their refresh closures are dropped by their callers (no thread), and
/// the refresh lock is attempted once.
pub fn stale_hits_in_one_process_start_one_detached_refresh(f: &Fixture) {
    let key = f.key("one-refresh-per-process");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock);
    let versions = Versions::default();
    let v = versions.clone();
    assert_eq!(memoize_detached(&key, &opts, move || v.next()), "v1");
    clock.advance(Duration::from_secs(11));

    let (started_tx, started) = mpsc::channel();
    let (finish, finish_rx) = mpsc::channel::<()>();
    let v = versions.clone();
    let first = memoize_detached(&key, &opts, move || {
        let _ = started_tx.send(());
        let _ = finish_rx.recv();
        v.next()
    });
    assert_eq!(first, "v1");
    assert!(started.recv().is_ok(), "the first stale hit's refresh runs");
    let dropped_here = Arc::new(AtomicUsize::new(0));
    for _ in 0..99 {
        let witness = DroppedOnCaller {
            caller: std::thread::current().id(),
            count: Arc::clone(&dropped_here),
        };
        let v = versions.clone();
        let value = memoize_detached(&key, &opts, move || {
            let _witness = &witness;
            v.next()
        });
        assert_eq!(value, "v1");
    }
    assert_eq!(
        dropped_here.load(Ordering::SeqCst),
        99,
        "no other refresh started: each closure was dropped by its caller"
    );
    assert!(finish.send(()).is_ok());
    wait_until("the refresh stored its value", || {
        memoize(&key, &f.opts(), || "unexpected".to_owned()) == "v2"
    });
    assert_eq!(versions.computed(), 2);
    let refresh_lock = cache_memoize::make_cache_key(&key).lock_key();
    let attempts = f.probe.keys_of("take_lock");
    assert_eq!(
        attempts.iter().filter(|k| **k == refresh_lock).count(),
        1,
        "one attempt at the refresh lock"
    );
}

/// The async form: stale hits on one runtime start one refresh task.
pub fn stale_hits_on_one_runtime_start_one_refresh_task(f: &Fixture) {
    let key = f.key("one-refresh-task");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock);
    let dropped_here = Arc::new(AtomicUsize::new(0));
    let rt = runtime();
    rt.block_on(async {
        let first: String = memoize_async_detached(&key, &opts, || async { "v1".to_owned() }).await;
        assert_eq!(first, "v1");
        clock.advance(Duration::from_secs(11));
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let (finish, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let stale: String = memoize_async_detached(&key, &opts, move || async move {
            let _ = started_tx.send(());
            let _ = finish_rx.await;
            "v2".to_owned()
        })
        .await;
        assert_eq!(stale, "v1");
        assert!(started.await.is_ok(), "the first stale hit's refresh runs");
        for _ in 0..99 {
            let witness = DroppedOnCaller {
                caller: std::thread::current().id(),
                count: Arc::clone(&dropped_here),
            };
            let value: String = memoize_async_detached(&key, &opts, move || async move {
                let _witness = &witness;
                "unexpected".to_owned()
            })
            .await;
            assert_eq!(value, "v1");
        }
        assert!(finish.send(()).is_ok());
    });
    assert_eq!(
        dropped_here.load(Ordering::SeqCst),
        99,
        "no other refresh task started: each closure was dropped by its caller"
    );
    wait_until("the refresh task stored its value", || {
        memoize(&key, &f.opts(), || "unexpected".to_owned()) == "v2"
    });
    drop(rt);
    let refresh_lock = cache_memoize::make_cache_key(&key).lock_key();
    let attempts = f.probe.keys_of("take_lock");
    assert_eq!(attempts.iter().filter(|k| **k == refresh_lock).count(), 1);
}

/// A refresh that finds the refresh lock held elsewhere (another process refreshing,
/// or throttling after a failure) makes its process back off for the lock's `retry`:
/// meanwhile its stale hits start no refresh and send nothing to the refresh lock.
pub fn a_process_that_found_the_refresh_lock_held_backs_off(f: &Fixture) {
    let key = f.key("refresh-back-off");
    let clock = Arc::new(ManualClock::default());
    let opts = stale_opts(f, &clock).lock(LockOptions {
        retry: Duration::from_secs(3600),
        ..fast_lock()
    });
    let versions = Versions::default();
    assert_eq!(memoize(&key, &opts, || versions.next()), "v1");
    clock.advance(Duration::from_secs(11));
    let refresh_lock = CacheLock::refreshing(&make_cache_key(&key))
        .backend(another_process(f))
        .try_acquire();
    let Ok(Some(elsewhere)) = refresh_lock else {
        panic!("cannot stage another process's refresh: {refresh_lock:?}");
    };
    for _ in 0..10 {
        assert_eq!(memoize(&key, &opts, || versions.next()), "v1");
    }
    assert_eq!(versions.computed(), 1);
    let attempts = f.probe.keys_of("take_lock");
    assert_eq!(
        attempts,
        vec![make_cache_key(&key).lock_key()],
        "one attempt, then the back-off"
    );
    assert!(matches!(elsewhere.release(), Ok(true)));
}

/// An early refresh (`XFetch`) drawn in two processes at once computes once: the
/// process that reaches the refresh lock second finds a value other than the one it
/// drew for, and does not compute, although it would draw an early refresh of that
/// value too.
pub fn an_early_refresh_drawn_in_two_processes_computes_once(f: &Fixture) {
    let key = f.key("xfetch-twice");
    let clock = Arc::new(ManualClock::default());
    let versions = Versions::default();
    // Every computation takes at least 5 ms (XFetch's δ), and β is so large that every
    // hit on a fresh value draws an early refresh.
    let slow_next = || {
        std::thread::sleep(Duration::from_millis(5));
        versions.next()
    };
    let (late, early) = (another_process(f), another_process(f));
    let on = |process: &Arc<Probe>| {
        stale_opts(f, &clock)
            .beta(1e9)
            .backend(Arc::clone(process) as Arc<dyn CacheBackend>)
    };
    let (late_opts, early_opts) = (on(&late), on(&early));
    assert_eq!(memoize(&key, &early_opts, slow_next), "v1");

    let (read, go) = pause_after_first_read(&late);
    std::thread::scope(|scope| {
        let late_caller = scope.spawn(|| memoize(&key, &late_opts, slow_next));
        assert!(read.recv().is_ok(), "the late process read v1");
        assert_eq!(
            memoize(&key, &early_opts, slow_next),
            "v2",
            "the other process drew an early refresh and made it"
        );
        assert!(go.send(()).is_ok());
        assert_eq!(late_caller.join().ok().as_deref(), Some("v1"));
    });
    assert_eq!(
        versions.computed(),
        2,
        "the late process did not compute v3"
    );
    let refresh_lock = cache_memoize::make_cache_key(&key).lock_key();
    assert_eq!(late.keys_of("take_lock"), vec![refresh_lock.clone()]);
    assert!(f.probe.inner().get(&refresh_lock).ok().flatten().is_none());
}

/// With jitter, values written together stop being fresh at different times.
pub fn jitter_spreads_expiries(f: &Fixture) {
    const KEYS: usize = 20;
    let clock = Arc::new(ManualClock::default());
    // A stale window (however short) makes freshness the stamp's, on the injected
    // clock; the backend's TTL, shortened by the same fraction, runs on real time.
    let plain = f
        .opts()
        .expire(Duration::from_secs(100))
        .stale(Duration::from_millis(1))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>);
    let jittered = plain.clone().jitter(0.5);
    let keys: Vec<(String, String)> = (0..KEYS)
        .map(|i| {
            (
                f.key(&format!("plain-{i}")),
                f.key(&format!("jittered-{i}")),
            )
        })
        .collect();
    for (p, j) in &keys {
        let _: u8 = memoize(p, &plain, || 1);
        let _: u8 = memoize(j, &jittered, || 1);
    }
    // Jittered freshness is uniform in 50–100 s: at 75 s about half have expired.
    clock.advance(Duration::from_secs(75));
    let expired = |key: &str, opts: &MemoizeOptions| memoize(key, opts, || 2_u8) == 2;
    let plain_expired = keys.iter().filter(|(p, _)| expired(p, &plain)).count();
    let jittered_expired = keys.iter().filter(|(_, j)| expired(j, &jittered)).count();
    assert_eq!(plain_expired, 0);
    assert!(
        (1..KEYS).contains(&jittered_expired),
        "{jittered_expired} of {KEYS} expired (chance of 0 or all: 2 in a million)"
    );
}

/// Freshness is wall-clock time written by one process and read by another: a reader
/// whose clock is ahead treats values as stale that much early (and refreshes them);
/// one whose clock is behind serves them as fresh that much late. (Without `stale` or
/// `beta`, freshness is the backend's TTL alone, on the server's clock.)
pub fn readers_with_skewed_clocks(f: &Fixture) {
    let key = f.key("skew");
    // Stopped clocks: the real time between the write and the reads (on a loaded
    // machine, more than the 100 ms margin of the reader at 9.9 s) does not count.
    let written_at = SystemTime::now();
    let opts = f
        .opts()
        .expire(Duration::from_secs(10))
        .stale(Duration::from_secs(3600))
        .clock(Arc::new(StoppedClock(written_at)) as Arc<dyn Clock>);
    assert_eq!(memoize(&key, &opts, || "v1".to_owned()), "v1");
    // A reader whose clock reads `at` after the write, on the writer's clock.
    let reader = |at: Duration| {
        opts.clone()
            .clock(Arc::new(StoppedClock(written_at + at)) as Arc<dyn Clock>)
    };
    let on_time = reader(Duration::from_millis(9_500));
    assert_eq!(
        memoize(&key, &on_time, || "refreshed".to_owned()),
        "v1",
        "fresh"
    );
    let behind = reader(Duration::from_millis(9_900));
    assert_eq!(
        memoize(&key, &behind, || "refreshed".to_owned()),
        "v1",
        "a reader 1 s behind, at 10.9 s real: still fresh to it"
    );
    let ahead = reader(Duration::from_millis(10_500));
    assert_eq!(
        memoize(&key, &ahead, || "refreshed".to_owned()),
        "refreshed",
        "a reader 1 s ahead, at 9.5 s real: stale to it, so it refreshes"
    );
}

/// The largest durations still cache (and never panic), jitter and stale included.
pub fn the_largest_durations_still_cache(f: &Fixture) {
    let key = f.key("max-durations");
    let opts = f
        .opts()
        .lock(cache_memoize::LockOptions {
            retry: Duration::MAX,
            ..fast_lock()
        })
        .expire(Duration::MAX)
        .stale(Duration::MAX)
        .jitter(0.5);
    assert_eq!(memoize(&key, &opts, || 1_u8), 1);
    assert_eq!(memoize(&key, &opts, || 2_u8), 1, "stored, and read back");
}
