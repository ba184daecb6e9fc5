//! Second review of what landed with the near cache, the failover work and the hit fast
//! path: each test here demonstrates one finding (named in its doc comment) and stays
//! as its regression test. Servers are the tests' own; nothing sleeps to synchronise.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use cache_memoize::{CacheBackend, MemoizeOptions, MemoryBackend, memoize};

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

/// Finding (panic): a memoized call made while a thread's thread-locals are destroyed
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
                key: "review2:tls-destructor:on-exit".to_owned(),
                report,
            });
        });
        // Sets up the crate's thread-locals on this thread.
        assert_eq!(
            memoize("review2:tls-destructor:warm", &thread_opts, || 1_u32),
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
