//! Second review of what landed with the near cache, the failover work and the hit fast
//! path: each test here demonstrates one finding (named in its doc comment) and stays
//! as its regression test. Servers are the tests' own; nothing sleeps to synchronise.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use cache_memoize::{
    CacheBackend, MemoizeOptions, MemoryBackend, NearCache, RedisBackend, memoize,
};
use cache_memoize_tests::server::RedisServer;
use cache_memoize_tests::wait_until;

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

/// A backend with a near cache told of writes to keys starting with `prefix`.
fn near_with_prefix(url: &str, prefix: &str) -> Arc<RedisBackend> {
    match RedisBackend::builder([url])
        .near_cache(NearCache::new().prefix(prefix))
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect with a near cache: {err}"),
    }
}

/// Finding (slow, doc): `NearCache::prefix` is documented (README example
/// `.prefix("shop:")`, rustdoc "the key prefix, when one is set") as the key prefix,
/// but a memoized key is stored as `{prefix:key}`: it starts with `{`, so a prefix
/// given as documented covered no key, and nothing was ever kept near (every read went
/// to Redis, silently). A prefix given as the key prefix must cover the keys made
/// under it.
#[test]
fn a_near_cache_prefix_given_as_the_key_prefix_covers_its_keys() {
    let server = RedisServer::start();
    let backend = near_with_prefix(&server.url(), "review2-shop:");
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(3600));
    wait_until("tracking is on", || backend.is_near_cache_live());
    // `make_cache_key("review2-shop:cart")` is `{review2-shop:cart}`, as a key made
    // under `set_key_prefix("review2-shop")` is `{review2-shop:…}`.
    assert_eq!(memoize("review2-shop:cart", &opts, || 5_u32), 5);
    wait_until("the value is served from the near copy", || {
        let before = backend.near_cache_hits();
        assert_eq!(memoize("review2-shop:cart", &opts, || 6_u32), 5);
        backend.near_cache_hits() > before
    });
    // And the server tells it of another process's write to such a key.
    let writer: Arc<dyn CacheBackend> = match RedisBackend::connect(&server.url()) {
        Ok(writer) => Arc::new(writer),
        Err(err) => panic!("cannot connect: {err}"),
    };
    let overwrite = opts.clone().backend(writer).force_overwrite(true);
    assert_eq!(memoize("review2-shop:cart", &overwrite, || 8_u32), 8);
    wait_until("the near copy is invalidated", || {
        memoize("review2-shop:cart", &opts, || 9_u32) == 8
    });
}
