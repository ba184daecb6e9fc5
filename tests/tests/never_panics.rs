//! A memoized call never panics its caller, whatever it is given and whenever it runs:
//! durations at their limits (`Duration::MAX` as `expire`, `stale` or a lock's `retry`)
//! are taken as "forever", and a call made while its thread's thread-locals are being
//! destroyed computes and returns.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use cache_memoize::{CacheBackend, MemoizeOptions, MemoryBackend, make_cache_key, memoize};
use cache_memoize_tests::{Fixture, fast_lock};

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
