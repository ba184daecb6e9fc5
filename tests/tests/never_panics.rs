//! A memoized call never panics its caller, whatever it is given and whenever it runs:
//! durations at their limits (`Duration::MAX` as `expire`, `stale` or a lock's `retry`)
//! are taken as "forever", runtime settings out of range (a response timeout of
//! `Duration::MAX`, a huge refresh worker count) are clamped, and a call made while its
//! thread's thread-locals are being destroyed computes and returns.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use cache_memoize::{
    CacheBackend, Clock, MemoizeOptions, MemoryBackend, RedisBackend, make_cache_key, memoize,
};
use cache_memoize_tests::freshness_suite::ManualClock;
use cache_memoize_tests::server::RedisServer;
use cache_memoize_tests::{Fixture, fast_lock, runtime};

/// "Forever" is a natural way to spell "never expires"; the call must not panic, and
/// the value is stored (the memory backend caps a huge TTL at a century).
#[test]
fn expire_duration_max_neither_panics_nor_loses_the_value() {
    let f = Fixture::memory();
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
    let f = Fixture::memory();
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
    let f = Fixture::memory();
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

/// Memoizes once when dropped (as a thread-local's destructor, at thread exit) and
/// sends whether that call panicked.
struct MemoizeOnDrop {
    opts: MemoizeOptions,
    key: String,
    report: mpsc::Sender<Result<u32, String>>,
}

impl Drop for MemoizeOnDrop {
    fn drop(&mut self) {
        let result = catch_unwind(AssertUnwindSafe(|| {
            memoize(&self.key, &self.opts, || 7_u32)
        }))
        .map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        });
        let _ = self.report.send(result);
    }
}

thread_local! {
    static ON_EXIT: RefCell<Option<MemoizeOnDrop>> = const { RefCell::new(None) };
}

/// A review finding (panic): a memoized call made while a thread's thread-locals are destroyed
/// (a thread-local whose `Drop` flushes through a memoized function) panicked: the
/// per-thread key buffer, the per-thread outcome counters and the metrics key cache
/// were read with `LocalKey::with`, which panics once they are destroyed (they are
/// destroyed before a thread-local set up earlier, last in first out). A panic in a
/// thread-local destructor aborts the process. The call must compute and return.
#[test]
fn a_memoized_call_in_a_thread_local_destructor_does_not_panic() {
    let backend: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    let opts = MemoizeOptions::new()
        .backend(backend)
        .expire(Duration::from_secs(60));
    let (report, reported) = mpsc::channel();
    let thread_opts = opts.clone();
    let joined = std::thread::spawn(move || {
        // Set up first, so destroyed last: after the crate's own thread-locals.
        ON_EXIT.with(|slot| {
            *slot.borrow_mut() = Some(MemoizeOnDrop {
                opts: thread_opts.clone(),
                key: "never-panics:tls-destructor:on-exit".to_owned(),
                report,
            });
        });
        // Sets up the crate's thread-locals on this thread.
        assert_eq!(
            memoize("never-panics:tls-destructor:warm", &thread_opts, || 1_u32),
            1
        );
    })
    .join();
    assert!(joined.is_ok(), "the thread ran");
    let during_destruction = reported.recv_timeout(Duration::from_secs(30));
    assert_eq!(
        during_destruction,
        Ok(Ok(7)),
        "a memoized call during thread-local destruction computes and returns"
    );
}

/// A runtime setting out of range is clamped or refused, never a panic: a response
/// timeout of `Duration::MAX` ("no timeout", as a caller may write it).
///
/// Interleaving: `RedisBackend::builder([url]).response_timeout(Duration::MAX)`, then a
/// memoized call through it.
///
/// Expected: the call returns the value (cached or computed, failing open at worst).
/// Got: a panic (`Instant + Duration` overflow) inside the backend.
#[test]
fn a_response_timeout_of_duration_max_does_not_panic() {
    let server = RedisServer::start();
    let url = server.url();
    let outcome = std::panic::catch_unwind(move || {
        let backend = match RedisBackend::builder([url])
            .response_timeout(Duration::MAX)
            .connect()
        {
            Ok(backend) => Arc::new(backend),
            Err(err) => return format!("refused: {err}"),
        };
        let opts = MemoizeOptions::new()
            .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>)
            .expire(Duration::from_secs(60));
        let sync = memoize("timeout-max", &opts, || "v".to_owned());
        let rt = runtime();
        let not_sync = rt.block_on(cache_memoize::memoize_async(
            "timeout-max-async",
            &opts,
            || async { "v".to_owned() },
        ));
        format!("{sync}{not_sync}")
    });
    assert!(
        outcome.is_ok(),
        "a memoized call panicked on a response timeout of Duration::MAX"
    );
}

/// `set_refresh_limits(workers, queue)` takes any `usize` ("at least 1"); a large
/// `workers` must bound nothing rather than panic. Run in a child process (the limits
/// are fixed once per process).
///
/// Interleaving: `set_refresh_limits(usize::MAX / 2, 0)`; a value goes stale; an async
/// stale hit (`memoize_async_detached`) starts a background refresh, whose turn is
/// taken from a `tokio::sync::Semaphore::new(workers)`.
///
/// Expected: the refresh runs and stores v2. Got: the refresh task panics
/// ("a semaphore may not have more than `MAX_PERMITS` permits") and v2 never lands.
#[test]
fn a_large_refresh_worker_count_does_not_panic_the_async_refresh() {
    const CHILD: &str = "NEVER_PANICS_REFRESH_LIMITS_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let exe = std::env::current_exe().unwrap_or_default();
        let status = std::process::Command::new(exe)
            .args([
                "--exact",
                "a_large_refresh_worker_count_does_not_panic_the_async_refresh",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "the child process failed (see its output above)"
        );
        return;
    }
    assert!(cache_memoize::set_refresh_limits(usize::MAX / 2, 0));
    let backend = Arc::new(cache_memoize::MemoryBackend::new());
    let clock = Arc::new(ManualClock::default());
    let opts = MemoizeOptions::new()
        .backend(backend as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(10))
        .stale(Duration::from_secs(3600))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>);
    let rt = runtime();
    rt.block_on(async {
        let first =
            cache_memoize::memoize_async_detached("limits", &opts, || async { 1_u32 }).await;
        assert_eq!(first, 1);
        clock.advance(Duration::from_secs(11));
        let stale =
            cache_memoize::memoize_async_detached("limits", &opts, || async { 2_u32 }).await;
        assert_eq!(stale, 1, "the stale value is served at once");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now: u32 =
                cache_memoize::memoize_async_detached("limits", &opts, || async { 3_u32 }).await;
            if now == 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the background refresh never stored 2 (last read {now})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}
