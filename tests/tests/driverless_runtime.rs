//! Async calls on a Tokio runtime built without its drivers
//! (`Builder::new_current_thread().build()`, no `enable_all()`): Tokio's timers and
//! sockets panic there. Lock waits on the in-process store wait on the crate's own timer
//! (woken by the release, or timed out); Redis calls compute without the cache and warn
//! once. Nothing panics. Every server here is private to its test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_memoize::{
    CacheBackend, CacheLock, LockError, LockOptions, MemoizeOptions, MemoryBackend, RedisBackend,
    memoize, memoize_async,
};
use cache_memoize_tests::captured::Captured;
use cache_memoize_tests::server::RedisServer;
use cache_memoize_tests::{Probe, runtime, wait_until};

/// A current-thread runtime with no driver: no timer, no I/O.
fn driverless() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(err) => panic!("cannot build a runtime: {err}"),
    }
}

/// A subscriber writing WARN and above into `captured`.
fn warnings(captured: &Captured) -> impl tracing::Subscriber + use<> {
    captured.subscriber(tracing::Level::WARN)
}

fn locked(backend: Arc<dyn CacheBackend>, timeout: Duration) -> MemoizeOptions {
    MemoizeOptions::new().backend(backend).lock(LockOptions {
        timeout: Some(timeout),
        retry: Duration::from_millis(50),
        ..LockOptions::default()
    })
}

#[test]
fn an_async_lock_wait_on_the_memory_store_is_woken_by_the_release_without_a_timer_driver() {
    let memory = Arc::new(MemoryBackend::new());
    // Two handles on one store: the async caller waits on the store's lock, not on the
    // holder's in-process flight.
    let holding_probe = Arc::new(Probe::new(memory.clone()));
    let waiting_probe = Arc::new(Probe::new(memory));
    let holder_opts = locked(holding_probe, Duration::from_secs(30));
    let waiter_opts = locked(waiting_probe.clone(), Duration::from_secs(30));
    let (holding, held) = std::sync::mpsc::channel();
    let waited = std::thread::scope(|scope| {
        let holder = scope.spawn(|| {
            memoize("report", &holder_opts, || {
                let _ = holding.send(());
                // Until the async caller below waits on the lock.
                wait_until("the async caller waits", || {
                    waiting_probe.ops().contains(&"wait")
                });
                1_u32
            })
        });
        assert!(held.recv().is_ok(), "the holder never computed");
        let waited =
            driverless().block_on(memoize_async("report", &waiter_opts, || async { 2_u32 }));
        assert_eq!(holder.join().ok(), Some(1));
        waited
    });
    assert_eq!(waited, 1, "the waiter read the holder's value");
}

#[test]
fn an_async_lock_wait_on_the_memory_store_times_out_without_a_timer_driver() {
    let memory: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    let held = match CacheLock::new("held")
        .backend(Arc::clone(&memory))
        .try_acquire()
    {
        Ok(Some(guard)) => guard,
        other => panic!("cannot take the lock: {other:?}"),
    };
    let timeout = Duration::from_millis(200);
    let runtime = driverless();
    let started = Instant::now();
    let computed = runtime.block_on(memoize_async(
        "held",
        &locked(Arc::clone(&memory), timeout),
        || async { 7_u32 },
    ));
    assert_eq!(
        computed, 7,
        "computed without the lock once the wait timed out"
    );
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());

    let lock = CacheLock::new("held")
        .backend(Arc::clone(&memory))
        .timeout(Some(timeout))
        .retry(Duration::from_millis(50));
    let started = Instant::now();
    match runtime.block_on(lock.acquire_async()) {
        Err(LockError::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    assert_eq!(held.release().ok(), Some(true));
}

#[test]
fn async_redis_calls_compute_without_the_cache_on_a_runtime_without_drivers_and_warn_once() {
    let server = RedisServer::start();
    let backend: Arc<dyn CacheBackend> = match RedisBackend::connect(&server.url()) {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect to the test server: {err}"),
    };
    let plain = MemoizeOptions::new().backend(Arc::clone(&backend));
    let with_lock = locked(Arc::clone(&backend), Duration::from_secs(5));
    let bare = driverless();
    let captured = Captured::default();
    tracing::subscriber::with_default(warnings(&captured), || {
        for n in 0..3_u32 {
            let got = bare.block_on(memoize_async("bare", &plain, || async move { n }));
            assert_eq!(got, n, "computed, not read from the cache");
            let got = bare.block_on(memoize_async(
                "bare-locked",
                &with_lock,
                || async move { n },
            ));
            assert_eq!(got, n, "computed, not read from the cache");
        }
        let lock = CacheLock::new("bare-lock").backend(Arc::clone(&backend));
        assert!(
            bare.block_on(lock.acquire_async()).is_err(),
            "no lock taken without a usable runtime"
        );
    });
    let log = captured.text();
    assert_eq!(
        log.matches("without its I/O or time driver").count(),
        1,
        "{log}"
    );
    let keys: Vec<String> = match redis::cmd("KEYS").arg("*").query(&mut server.connection()) {
        Ok(keys) => keys,
        Err(err) => panic!("KEYS failed: {err}"),
    };
    assert!(keys.is_empty(), "nothing reached the server: {keys:?}");

    // A blocking call inside that runtime's context uses its own connections: cached.
    let sync_value = bare.block_on(async { memoize("sync-in-bare", &plain, || 5_u32) });
    assert_eq!(sync_value, 5);
    assert_eq!(memoize("sync-in-bare", &plain, || 6_u32), 5);

    // The same backend on a runtime with its drivers caches as usual.
    let full = runtime();
    assert_eq!(
        full.block_on(memoize_async("full", &plain, || async { 10_u32 })),
        10
    );
    assert_eq!(
        full.block_on(memoize_async("full", &plain, || async { 11_u32 })),
        10
    );
    // And the bare runtime is still told apart afterwards.
    assert_eq!(
        bare.block_on(memoize_async("full", &plain, || async { 12_u32 })),
        12
    );
}
