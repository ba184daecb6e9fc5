//! Adversarial review of the sequence, freshness and fencing work: each test here
//! demonstrates a bug found in review (it fails until the bug is fixed). Nothing
//! depends on wall-clock speed: races are staged with the probe's hooks and channels,
//! time is injected through a `Clock`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use cache_memoize::{
    Clock, MemoizeOptions, MemoryBackend, escape_key_part, make_cache_key, memoize, memoize_async,
};
use cache_memoize::{Op, RedisBackend, Reply};
use cache_memoize_tests::freshness_suite::{ManualClock, Versions};
use cache_memoize_tests::server::RedisServer;
use cache_memoize_tests::{Fixture, fast_lock};

fn memory() -> Fixture {
    Fixture::new(Arc::new(MemoryBackend::new()))
}

// ---------------------------------------------------------------------------------
// 1. `expire(Duration::MAX)` (or a huge `stale`) panics the caller after computing.
// ---------------------------------------------------------------------------------

/// "Forever" is a natural way to spell "never expires"; the call must not panic, and
/// the value is stored (the memory backend caps a huge TTL at a century).
#[test]
fn expire_duration_max_neither_panics_nor_loses_the_value() {
    let f = memory();
    let key = f.key("expire-max");
    let opts = f.opts().expire(Duration::MAX);
    let first = catch_unwind(AssertUnwindSafe(|| memoize(&key, &opts, || 7_u32)));
    assert_eq!(
        first.ok(),
        Some(7),
        "memoize with expire(Duration::MAX) panicked"
    );
    let second = catch_unwind(AssertUnwindSafe(|| {
        memoize(&key, &opts, || -> u32 { panic!("the value was stored") })
    }));
    assert_eq!(second.ok(), Some(7));
}

/// The same with a finite `expire` and `stale(Duration::MAX)` ("serve stale forever
/// while refreshes fail").
#[test]
fn stale_duration_max_does_not_panic() {
    let f = memory();
    let key = f.key("stale-max");
    let opts = f
        .opts()
        .expire(Duration::from_secs(60))
        .stale(Duration::MAX);
    let first = catch_unwind(AssertUnwindSafe(|| memoize(&key, &opts, || 7_u32)));
    assert_eq!(
        first.ok(),
        Some(7),
        "memoize with stale(Duration::MAX) panicked"
    );
}

/// `retry(Duration::MAX)` ("wait for wake-ups only"): the pause is scaled by its
/// jitter before anything else, so a caller that finds the lock held panics, even one
/// that does not wait at all (`blocking = false`).
#[test]
fn a_huge_lock_retry_does_not_panic_a_caller_that_finds_the_lock_held() {
    let f = memory();
    let key = f.key("retry-max");
    let opts = f.opts().lock(cache_memoize::LockOptions {
        retry: Duration::MAX,
        blocking: false,
        ..fast_lock()
    });
    let lock_key = make_cache_key(&key).lock_key();
    assert_eq!(
        f.probe
            .inner()
            .add(&lock_key, b"another holder", Duration::from_secs(60))
            .ok(),
        Some(true)
    );
    let got = catch_unwind(AssertUnwindSafe(|| memoize(&key, &opts, || 7_u32)));
    assert_eq!(
        got.ok(),
        Some(7),
        "memoize with lock retry Duration::MAX panicked"
    );
}

// ---------------------------------------------------------------------------------
// 2. Unlocked stores are not fenced: a value computed before `invalidate` is stored
//    after it and served from then on.
// ---------------------------------------------------------------------------------

/// `invalidate`'s contract: "a computation running for `key` right now cannot store
/// its (older) value afterwards". Without `lock` (the default), it does.
#[test]
fn an_unlocked_computation_does_not_store_across_an_invalidation() {
    let f = memory();
    let key = f.key("unlocked-invalidated");
    let opts = f.opts();
    let cache_key = make_cache_key(&key);
    let computed: String = memoize(&key, &opts, || {
        assert!(
            f.backend()
                .invalidate(cache_key.as_str(), &cache_key.lock_key())
                .is_ok()
        );
        "before the invalidation".to_owned()
    });
    assert_eq!(computed, "before the invalidation");
    assert_eq!(
        memoize(&key, &opts, || "after".to_owned()),
        "after",
        "a value computed before the invalidation is served after it"
    );
}

/// The same for a locked call that gave up on the lock (not blocking): it computes
/// "without the lock" and stores unconditionally, across the invalidation.
#[test]
fn a_lock_busy_computation_does_not_store_across_an_invalidation() {
    let f = memory();
    let key = f.key("busy-invalidated");
    let opts = f.opts().lock(cache_memoize::LockOptions {
        blocking: false,
        ..fast_lock()
    });
    let cache_key = make_cache_key(&key);
    // Another holder has the lock.
    assert_eq!(
        f.probe
            .inner()
            .add(
                &cache_key.lock_key(),
                b"another holder",
                Duration::from_secs(60)
            )
            .ok(),
        Some(true)
    );
    let computed: String = memoize(&key, &opts, || {
        assert!(
            f.backend()
                .invalidate(cache_key.as_str(), &cache_key.lock_key())
                .is_ok()
        );
        "before the invalidation".to_owned()
    });
    assert_eq!(computed, "before the invalidation");
    assert_eq!(
        memoize(&key, &opts, || "after".to_owned()),
        "after",
        "a value computed before the invalidation is served after it"
    );
}

// ---------------------------------------------------------------------------------
// 3. Long keys' digests collide with short keys spelled like them: another key's
//    value is served.
// ---------------------------------------------------------------------------------

/// A key over 240 bytes becomes `<first bytes>-<sha256 hex>`; a short key spelled
/// exactly like that (reachable through escaped key parts: `-` and hex digits are not
/// escaped) is the same backend key, and the envelope does not name its key.
#[test]
fn a_short_key_spelled_like_a_long_keys_digest_is_another_key() {
    let f = memory();
    let opts = f.opts();
    let template = |id: &str| format!("doc:{}", escape_key_part(id));
    let long_id = format!("{}{}", f.key("x").replace(':', "-"), "a".repeat(300));
    let long_key = template(&long_id);
    let digested = make_cache_key(&long_key);
    let body = digested
        .as_str()
        .strip_prefix("{doc:")
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_default()
        .to_owned();
    assert!(!body.is_empty());
    let crafted_key = template(&body);
    assert_ne!(crafted_key, long_key, "two different inputs");

    let secret: String = memoize(&long_key, &opts, || "the long id's document".to_owned());
    assert_eq!(secret, "the long id's document");
    let other: String = memoize(&crafted_key, &opts, || {
        "the crafted id's document".to_owned()
    });
    assert_eq!(
        other, "the crafted id's document",
        "the crafted id was served the long id's value"
    );
}

// ---------------------------------------------------------------------------------
// 4. A stale value is refreshed twice: a refresher takes the lock without checking
//    that another one already refreshed the value meanwhile.
// ---------------------------------------------------------------------------------

/// Caller A reads the stale value; before its refresh takes the lock, caller B
/// (another process: same store, bypassing the probe) refreshes it completely. A then
/// takes the free lock and computes again: two refreshes of one stale value.
#[test]
fn a_stale_value_is_refreshed_once_not_twice() {
    let f = memory();
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

// ---------------------------------------------------------------------------------
// 5. An async caller cancelled while it holds the lock, on a runtime that then shuts
//    down: the release is spawned on that runtime and never runs.
// ---------------------------------------------------------------------------------

#[test]
fn a_cancelled_async_holder_releases_its_lock_even_if_the_runtime_stops() {
    let f = memory();
    let key = f.key("cancelled-then-shutdown");
    let opts = f.locked();
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        panic!("cannot start a runtime");
    };
    rt.block_on(async {
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let call = memoize_async(&key, &opts, || async move {
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
            0_u8
        });
        tokio::select! {
            _ = call => panic!("the computation never finishes"),
            _ = started_rx => {} // computing, under the lock: cancel it
        }
    });
    drop(rt);
    assert_eq!(
        f.lock_token(&key),
        None,
        "the cancelled holder's lock is left behind until it expires"
    );
}

// ---------------------------------------------------------------------------------
// 6. The fail-safe throttle is cut short by a lock renewal in flight.
// ---------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------
// 7. In-process coalescing: a caller that starts after `invalidate` returned is handed
//    the value the leader computed before it (its store was rightly refused).
// ---------------------------------------------------------------------------------

fn current_thread() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => panic!("cannot start a runtime: {err}"),
    }
}

/// Lets every other task of a current-thread runtime run until it is pending.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// Single-threaded runtime, so the interleaving is exact: the leader computes (pending),
/// the key is invalidated, a new caller starts and joins the leader's flight, the
/// leader finishes: its store is refused, but the new caller gets its value.
#[test]
fn a_caller_starting_after_invalidate_never_gets_a_value_computed_before_it() {
    let f = memory();
    let key = f.key("coalesced-across-invalidate");
    let opts = f.locked();
    let cache_key = make_cache_key(&key);
    let rt = current_thread();
    rt.block_on(async {
        let (finish, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let leader = {
            let (key, opts) = (key.clone(), opts.clone());
            tokio::spawn(async move {
                memoize_async(&key, &opts, || async move {
                    let _ = finish_rx.await;
                    "computed before the invalidation".to_owned()
                })
                .await
            })
        };
        settle().await; // the leader is computing, under the lock
        assert!(
            f.backend()
                .invalidate(cache_key.as_str(), &cache_key.lock_key())
                .is_ok()
        );
        let late = {
            let (key, opts) = (key.clone(), opts.clone());
            tokio::spawn(async move {
                memoize_async(&key, &opts, || async { "computed after".to_owned() }).await
            })
        };
        settle().await; // the late caller has started (after the invalidation)
        let _ = finish.send(());
        assert_eq!(
            leader.await.ok().as_deref(),
            Some("computed before the invalidation")
        );
        // The leader's store was refused (the late caller may have stored its own
        // value meanwhile: never the leader's).
        assert!(
            !f.stored(&key)
                .is_some_and(|bytes| bytes.windows(6).any(|w| w == b"before")),
            "the leader's store was refused"
        );
        assert_eq!(
            late.await.ok().as_deref(),
            Some("computed after"),
            "a call begun after invalidate() returned got the value computed before it"
        );
    });
}

// ---------------------------------------------------------------------------------
// 8. In-process followers ignore `blocking = false` (and `timeout`): they wait for the
//    leader's computation, however long.
// ---------------------------------------------------------------------------------

/// With `blocking = false`, a caller that finds the value being computed computes it
/// itself at once (Djblets' semantics, and what another process does). In the same
/// process it waits for the leader instead, for as long as the leader computes.
#[test]
fn a_non_blocking_caller_never_waits_for_an_in_process_leader() {
    let f = memory();
    let key = f.key("non-blocking-follower");
    let opts = f.opts().lock(cache_memoize::LockOptions {
        blocking: false,
        ..fast_lock()
    });
    let rt = current_thread();
    rt.block_on(async {
        let (finish, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let leader = {
            let (key, opts) = (key.clone(), opts.clone());
            tokio::spawn(async move {
                memoize_async(&key, &opts, || async move {
                    let _ = finish_rx.await;
                    "leader".to_owned()
                })
                .await
            })
        };
        settle().await; // the leader is computing
        let follower = {
            let (key, opts) = (key.clone(), opts.clone());
            tokio::spawn(async move {
                memoize_async(&key, &opts, || async { "follower".to_owned() }).await
            })
        };
        settle().await;
        let finished = follower.is_finished();
        let _ = finish.send(());
        let _ = leader.await;
        let _ = follower.await;
        assert!(
            finished,
            "a blocking = false caller is stuck waiting for the leader's computation"
        );
    });
}

/// The same with a `timeout`: the follower waits past it, for as long as the leader
/// computes (forever, if the leader hangs). Threads, the leader hangs until the end.
#[test]
fn a_follower_waits_no_longer_than_its_lock_timeout() {
    let f = memory();
    let key = f.key("timeout-follower");
    let opts = f.opts().lock(cache_memoize::LockOptions {
        timeout: Some(Duration::from_millis(20)),
        ..fast_lock()
    });
    let (started_tx, started) = mpsc::channel();
    let (finish, finish_rx) = mpsc::channel::<()>();
    let leader = {
        let (key, opts) = (key.clone(), opts.clone());
        std::thread::spawn(move || {
            memoize(&key, &opts, move || {
                let _ = started_tx.send(());
                let _ = finish_rx.recv();
                "leader".to_owned()
            })
        })
    };
    let _ = started.recv();
    let (done_tx, done) = mpsc::channel();
    let follower = {
        let (key, opts) = (key.clone(), opts.clone());
        std::thread::spawn(move || {
            let got: String = memoize(&key, &opts, || "follower".to_owned());
            let _ = done_tx.send(got);
        })
    };
    // 500 times the timeout: only a follower that ignores it is still waiting.
    let got = done.recv_timeout(Duration::from_secs(10));
    let _ = finish.send(());
    let _ = leader.join();
    let _ = follower.join();
    assert_eq!(
        got.ok().as_deref(),
        Some("follower"),
        "the follower waited past its 20 ms lock timeout (for the leader's whole computation)"
    );
}

// ---------------------------------------------------------------------------------
// 9. The fail-safe throttle holds the value's lock: once the stale window is over,
//    every caller (a plain miss now) waits for the throttle to end.
// ---------------------------------------------------------------------------------

/// A refresh fails (throttle: 1 h); then the value passes `expire + stale`. A caller
/// now has nothing it may serve and must compute; instead it finds the throttle's
/// lock "held" and waits for it, for up to the whole throttle (1 h here).
#[test]
fn past_expire_plus_stale_callers_do_not_wait_for_the_fail_safe_throttle() {
    let f = memory();
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

// ---------------------------------------------------------------------------------
// 10. An async caller cancelled while its store-and-release is in flight (not yet
//     sent: a connection being opened, a full pipeline) leaves its lock behind: the
//     guard is marked released before the step is awaited.
// ---------------------------------------------------------------------------------

/// A memory store whose async store-and-release never completes (as a request still
/// waiting for its connection), after signalling that it was entered.
struct StalledStore {
    inner: MemoryBackend,
    entered: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl cache_memoize::BackendCore for StalledStore {
    fn execute(&self, op: Op<'_>) -> Result<Reply, cache_memoize::Error> {
        self.inner.execute(op)
    }
}

impl cache_memoize::AsyncBackendCore for StalledStore {
    fn execute_async<'a>(
        &'a self,
        op: Op<'a>,
    ) -> cache_memoize::BoxFuture<'a, Result<Reply, cache_memoize::Error>> {
        if !matches!(op, Op::StoreAndRelease { .. }) {
            return self.inner.execute_async(op);
        }
        Box::pin(async move {
            let entered = self
                .entered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(entered) = entered {
                let _ = entered.send(());
            }
            std::future::pending().await
        })
    }
}

#[test]
fn an_async_caller_cancelled_during_store_and_release_leaves_no_lock() {
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    let f = Fixture::new(Arc::new(StalledStore {
        inner: MemoryBackend::new(),
        entered: Mutex::new(Some(entered_tx)),
    }));
    let key = f.key("cancelled-while-storing");
    let opts = f.locked();
    let rt = current_thread();
    rt.block_on(async {
        let call = memoize_async(&key, &opts, || async { 1_u8 });
        tokio::select! {
            _ = call => panic!("the store never completes"),
            _ = entered_rx => {} // storing: cancel the caller now
        }
        settle().await; // a release spawned by a dropped guard runs here
    });
    assert_eq!(
        f.lock_token(&key),
        None,
        "the cancelled caller's lock is left behind until it expires (30 s)"
    );
}

// ---------------------------------------------------------------------------------
// 11. Iterator chunks are not named per write: an abandoned write deletes the chunks
//     of the entry another caller committed meanwhile.
// ---------------------------------------------------------------------------------

/// B computes and commits a sequence; A then refreshes it (a forced write), writes a
/// few chunks and is dropped early. A's clean-up must not touch B's committed chunks:
/// C reads B's entry without recomputing. ("Iterator writes use chunk names of their
/// own; the manifest swap is the commit.") Since every store is fenced by the lock, A
/// and B cannot both be writing at once; the refresh is how a second write overlaps a
/// committed entry.
#[test]
fn an_abandoned_iterator_write_does_not_break_anothers_committed_entry() {
    let f = memory();
    let key = f.key("iter-shared-chunk-names");
    let opts = f.opts().chunk_size(1).compress(false);
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = |runs: &Arc<AtomicUsize>| {
        let runs = Arc::clone(runs);
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            0..10_u32
        }
    };
    let b: Vec<u32> = cache_memoize::memoize_iter(&key, &opts, counted(&runs)).collect();
    assert_eq!(b, (0..10).collect::<Vec<_>>());
    assert!(f.stored(&key).is_some(), "B committed");
    let mut a = cache_memoize::refresh(|| cache_memoize::memoize_iter(&key, &opts, counted(&runs)));
    assert_eq!(a.by_ref().take(5).count(), 5, "A has written some chunks");
    drop(a); // A abandons its write
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let c: Vec<u32> = cache_memoize::memoize_iter(&key, &opts, counted(&runs)).collect();
    assert_eq!(c, (0..10).collect::<Vec<_>>());
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "B's committed entry was broken by A's clean-up (its chunks deleted): C recomputed"
    );
}
