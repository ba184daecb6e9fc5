//! Stale values, their one refresh and the fail-safe throttle, in stagings the shared
//! `freshness_suite` cannot run on every backend: another process's refresh hooked in
//! between a read and the refresh lock, a lock renewal held back mid-flight (on a
//! private Redis server), callers past `expire + stale` while a throttle is on. Time is
//! injected through a `Clock`; races are staged with the probe's hooks and channels.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use cache_memoize::{Clock, MemoizeOptions, Op, RedisBackend, Reply, make_cache_key, memoize};
use cache_memoize_tests::freshness_suite::{ManualClock, Versions};
use cache_memoize_tests::server::RedisServer;
use cache_memoize_tests::{Fixture, fast_lock};

/// Caller A reads the stale value; before its refresh takes the lock, caller B
/// (another process: same store, bypassing the probe) refreshes it completely. A then
/// takes the free lock and computes again: two refreshes of one stale value.
#[test]
fn a_stale_value_is_refreshed_once_not_twice() {
    let f = Fixture::memory();
    let key = f.key("refreshed-twice");
    let clock = Arc::new(ManualClock::default());
    let opts = f
        .locked()
        .expire(Duration::from_secs(10))
        .stale(Duration::from_secs(3600))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>);
    let versions = Versions::default();
    assert_eq!(memoize(&key, &opts, || versions.next()), "v1");
    clock.advance(Duration::from_secs(11));

    // B: the same store, not through the probe (its hook must not re-enter).
    let other_process = opts.clone().backend(Arc::clone(f.probe.inner()));
    let fired = AtomicBool::new(false);
    let hook = {
        let (key, versions) = (key.clone(), versions.clone());
        move |op: &'static str| {
            if op == "get" && !fired.swap(true, Ordering::SeqCst) {
                let refreshed: String = memoize(&key, &other_process, || versions.next());
                assert_eq!(refreshed, "v2", "B refreshes the stale value");
            }
        }
    };
    f.probe.after(hook);
    let served: String = memoize(&key, &opts, || versions.next());
    assert_eq!(
        versions.computed(),
        2,
        "the stale value was refreshed twice (once by B, once more by A, which served {served})"
    );
    assert!(served == "v1" || served == "v2", "served {served}");
}

/// Over a memory store; the lock renewal thread's `compare_and_extend` can be held
/// back (entered, then waits for the test) to stage its race with the `Hold`.
struct HeldRenewal {
    inner: Arc<dyn cache_memoize::CacheBackend>,
    /// (entered, proceed, done)
    gate: Mutex<Option<Gate>>,
}

type Gate = (mpsc::Sender<()>, mpsc::Receiver<()>, mpsc::Sender<()>);

impl cache_memoize::BackendCore for HeldRenewal {
    fn execute(&self, op: Op<'_>) -> Result<Reply, cache_memoize::Error> {
        let renewing = std::thread::current().name() == Some("cache-memoize-renew");
        if !(renewing && matches!(op, Op::CompareAndExtend { .. })) {
            return self.inner.execute(op);
        }
        let gate = self
            .gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some((entered, proceed, done)) = gate else {
            return self.inner.execute(op);
        };
        let _ = entered.send(());
        let _ = proceed.recv();
        let extended = self.inner.execute(op);
        let _ = done.send(());
        extended
    }
}

impl cache_memoize::ImmediateBackend for HeldRenewal {}

/// A refresh fails while the renewal thread is extending its lock. The throttle (1 h)
/// was once the held lock, which an extension landing after the hold cut back to the
/// lock's own expiry (3 s); it is now a mark of its own (`refresh_key`), which no
/// renewal touches, and this checks that it keeps its whole life.
/// Dropping the renewal waits for the extension in flight, so the hold comes last,
/// whichever way the race between them would have gone (without that wait, this test
/// failed 4 runs in 5: the holder reached its hold first). On a private Redis server,
/// whose `PTTL` shows the lock's remaining life.
#[test]
fn a_renewal_in_flight_does_not_cut_the_fail_safe_throttle_short() {
    let server = RedisServer::start();
    let Ok(redis) = RedisBackend::connect(&server.url()) else {
        panic!("cannot connect to the test server");
    };
    let (entered_tx, entered) = mpsc::channel();
    let (proceed, proceed_rx) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let backend = Arc::new(HeldRenewal {
        inner: Arc::new(redis),
        gate: Mutex::new(Some((entered_tx, proceed_rx, done_tx))),
    });
    let f = Fixture::new(backend);
    let key = f.key("throttle-vs-renewal");
    let clock = Arc::new(ManualClock::default());
    let opts: MemoizeOptions = f
        .opts()
        .lock(cache_memoize::LockOptions {
            expire: Duration::from_secs(3),
            ..fast_lock()
        })
        .expire(Duration::from_secs(10))
        .stale(Duration::from_secs(3600))
        .fail_safe(Duration::from_secs(3600))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>);
    let versions = Versions::default();
    assert_eq!(memoize(&key, &opts, || versions.next()), "v1");
    clock.advance(Duration::from_secs(11));

    // The refresh fails once the renewal thread is inside its extension (due at a
    // third of the lock's expiry); the extension goes on once the refresh has failed,
    // so the holder, on its way to the hold, has a head start.
    let (failing_tx, failing) = mpsc::channel();
    let refresher = {
        let (key, opts) = (key.clone(), opts.clone());
        std::thread::spawn(move || {
            cache_memoize::try_memoize(&key, &opts, || -> Result<String, ()> {
                let _ = entered.recv();
                let _ = failing_tx.send(());
                Err(())
            })
        })
    };
    let _ = failing.recv();
    let _ = proceed.send(());
    let stale_answer = refresher
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    assert_eq!(
        stale_answer.ok().as_deref(),
        Some("v1"),
        "the stale value is served"
    );
    let lock_key = make_cache_key(&key).refresh_key();
    let mut conn = server.connection();
    let pttl = |conn: &mut redis::Connection| -> i64 {
        redis::cmd("PTTL").arg(&lock_key).query(conn).unwrap_or(-2)
    };
    // The extension has landed (before the hold: the caller waited for it).
    let _ = done.recv();
    let left = pttl(&mut conn);
    assert!(
        left > 600_000,
        "the fail-safe throttle (1 h) was cut to the lock's expiry by a renewal in flight: {left} ms left"
    );
}

/// A refresh fails (throttle: 1 h); then the value passes `expire + stale`. A caller
/// now has nothing it may serve and must compute; instead it finds the throttle's
/// lock "held" and waits for it, for up to the whole throttle (1 h here).
#[test]
fn past_expire_plus_stale_callers_do_not_wait_for_the_fail_safe_throttle() {
    let f = Fixture::memory();
    let key = f.key("throttle-strands-misses");
    let clock = Arc::new(ManualClock::default());
    let opts = f
        .locked()
        .expire(Duration::from_secs(10))
        .stale(Duration::from_secs(60))
        .fail_safe(Duration::from_secs(3600))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>);
    let versions = Versions::default();
    assert_eq!(memoize(&key, &opts, || versions.next()), "v1");
    clock.advance(Duration::from_secs(11));
    let served = cache_memoize::try_memoize(&key, &opts, || Err::<String, ()>(()));
    assert_eq!(
        served.ok().as_deref(),
        Some("v1"),
        "stale served, refresh failed"
    );
    clock.advance(Duration::from_secs(120)); // past expire + stale

    let (done_tx, done) = mpsc::channel();
    let caller = {
        let (key, opts, versions) = (key.clone(), opts.clone(), versions.clone());
        std::thread::spawn(move || {
            let got: String = memoize(&key, &opts, || versions.next());
            let _ = done_tx.send(got);
        })
    };
    let got = done.recv_timeout(Duration::from_secs(10));
    let stuck = got.is_err();
    // Unstick the caller: end the throttle behind the library's back.
    let _ = f.probe.inner().delete(&make_cache_key(&key).lock_key());
    let _ = caller.join();
    assert!(
        !stuck,
        "a caller with nothing servable waited on the fail-safe throttle's lock (up to 1 h)"
    );
    assert_eq!(got.ok().as_deref(), Some("v2"));
}
