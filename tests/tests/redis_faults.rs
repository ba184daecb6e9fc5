//! Faults injected against real servers (issue 11): a link stalled through the proxy,
//! while locks are held on this backend and on a healthy one. Every server here is
//! private to its test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use cache_memoize::{CacheBackend, LockOptions, MemoizeOptions, RedisBackend, memoize};
use cache_memoize_tests::proxy::CountingProxy;
use cache_memoize_tests::server::RedisServer;
use cache_memoize_tests::wait_until;

/// Long enough for any step of these tests, short enough not to hang a broken run.
const PATIENCE: Duration = Duration::from_secs(20);

fn connect(url: &str, response_timeout: Duration) -> Arc<dyn CacheBackend> {
    let backend = RedisBackend::builder([url])
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(response_timeout)
        .connect();
    match backend {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect to {url}: {err}"),
    }
}

fn locked(backend: &Arc<dyn CacheBackend>, expire: Duration) -> MemoizeOptions {
    MemoizeOptions::new()
        .backend(Arc::clone(backend))
        .lock(LockOptions {
            expire,
            retry: Duration::from_millis(20),
            ..LockOptions::default()
        })
}

/// Issue 11, finding 1: one renewal thread for every backend let a stalled server
/// starve a healthy backend's renewals (a 900 ms lock held through a long computation
/// was taken over and computed twice). Renewal is per backend now.
#[test]
fn a_stalled_backend_does_not_starve_a_healthy_backends_renewals() {
    let stalled_server = RedisServer::start();
    let proxy = CountingProxy::start(stalled_server.port());
    // A reply the stalled link never gets takes this long to give up on: longer than
    // the healthy lock lives.
    let stalled = connect(&proxy.url(), Duration::from_secs(4));
    let healthy_server = RedisServer::start();
    let healthy = connect(&healthy_server.url(), Duration::from_secs(1));
    // Another client of the healthy server: its calls are not coalesced in-process
    // with the first's, so they meet at the lock in Redis.
    let healthy_elsewhere = connect(&healthy_server.url(), Duration::from_secs(1));

    // A holder on the stalled backend, computing until told to finish.
    let (stalled_computing, stalled_started) = mpsc::channel::<()>();
    let (finish_stalled, stalled_may_finish) = mpsc::channel::<()>();
    let stalled_opts = locked(&stalled, Duration::from_millis(300));
    let stalled_holder = thread::spawn(move || {
        memoize("stalled", &stalled_opts, move || {
            let _ = stalled_computing.send(());
            let _ = stalled_may_finish.recv_timeout(PATIENCE);
            1_u32
        })
    });
    assert!(stalled_started.recv_timeout(PATIENCE).is_ok());
    proxy.clear();
    proxy.stall();
    wait_until("a renewal is stuck on the stalled link", || {
        proxy.commands().iter().any(|c| c == "EVALSHA")
    });

    // A holder on the healthy backend, computing through three of its lock's expiries
    // while a caller elsewhere waits for the lock.
    let expire = Duration::from_millis(900);
    let computes = Arc::new(AtomicUsize::new(0));
    let (healthy_computing, healthy_started) = mpsc::channel::<()>();
    let first = {
        let (opts, computes) = (locked(&healthy, expire), Arc::clone(&computes));
        thread::spawn(move || {
            memoize("healthy", &opts, move || {
                computes.fetch_add(1, Ordering::SeqCst);
                let _ = healthy_computing.send(());
                let started = Instant::now();
                wait_until("the computation outlasts three lock expiries", || {
                    started.elapsed() > expire * 3
                });
                "first".to_owned()
            })
        })
    };
    assert!(healthy_started.recv_timeout(PATIENCE).is_ok());
    let second = {
        let (opts, computes) = (locked(&healthy_elsewhere, expire), Arc::clone(&computes));
        thread::spawn(move || {
            memoize("healthy", &opts, move || {
                computes.fetch_add(1, Ordering::SeqCst);
                "second".to_owned()
            })
        })
    };
    let (first, second) = (first.join(), second.join());
    let _ = finish_stalled.send(());
    proxy.resume();
    let _ = stalled_holder.join();

    assert_eq!(first.ok().as_deref(), Some("first"));
    assert_eq!(
        second.ok().as_deref(),
        Some("first"),
        "the waiter read the holder's value"
    );
    assert_eq!(
        computes.load(Ordering::SeqCst),
        1,
        "the healthy lock was renewed throughout: computed once"
    );
}

/// Issue 11, finding 4: with the link stalled mid-stream, the caller's remaining items
/// were held for 66.6 s while the chunks written so far were deleted one by one (2 s
/// each). Now a failed write is left to its chunks' short TTL and its lock released
/// off the caller's thread: after the stall, the caller waits on the failed write only.
#[test]
fn a_stalled_link_mid_stream_holds_the_items_for_about_one_response_timeout() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let response_timeout = Duration::from_millis(500);
    let probe = Arc::new(cache_memoize_tests::Probe::new(connect(
        &proxy.url(),
        response_timeout,
    )));
    // 40 chunks of about 4 items each are written before the stall.
    let opts = MemoizeOptions::new()
        .backend(probe.clone())
        .chunk_size(24)
        .compress(false)
        .lock(LockOptions {
            retry: Duration::from_millis(20),
            ..LockOptions::default()
        });
    let mut items = cache_memoize::memoize_iter("stalled-stream", &opts, || 0..400_u32);
    let before: Vec<u32> = items.by_ref().take(160).collect();
    proxy.stall();
    probe.clear();
    let stalled_at = Instant::now();
    let after: Vec<u32> = items.collect();
    let held = stalled_at.elapsed();
    proxy.resume();

    assert_eq!(before.len() + after.len(), 400);
    assert_eq!(after.first(), Some(&160));
    // The renewal thread's calls are its own; the caller's are the rest.
    let callers: Vec<&str> = probe
        .ops()
        .into_iter()
        .filter(|op| *op != "compare_and_extend")
        .collect();
    assert!(
        callers.len() <= 2,
        "the caller waited on {callers:?} after the stall"
    );
    // Generous: the failed write's response timeout (plus a reconnection's), with
    // slack for a loaded machine; before the fix it was one per chunk (40 chunks, 20 s).
    assert!(
        held < response_timeout * 6,
        "the remaining items were held {held:?}"
    );
    eprintln!("items held {held:?} after the stall; caller's calls: {callers:?}");
}

#[cache_memoize::cache_memoize(key = "rate:{currency}")]
fn rate(currency: &str) -> u32 {
    u32::try_from(currency.len()).unwrap_or(0)
}

/// Issue 22: invalidating from async code never blocks the executor. The server is
/// frozen (SIGSTOP) while `rate_invalidate_async` is pending on a current-thread
/// runtime: the only thread stays free (another future runs to completion meanwhile);
/// once the server runs again the invalidation lands and the next call computes.
#[test]
fn an_async_invalidation_of_a_frozen_server_leaves_the_executor_free() {
    let server = RedisServer::start();
    cache_memoize::set_backend(
        match RedisBackend::builder([server.url()])
            .response_timeout(PATIENCE)
            .connect()
        {
            Ok(backend) => backend,
            Err(err) => panic!("cannot connect: {err}"),
        },
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => panic!("cannot build a runtime: {err}"),
    };
    runtime.block_on(async {
        assert_eq!(rate("eur"), 3);
        assert!(
            cache_memoize::backend()
                .get(rate_cache_key("eur").as_str())
                .is_ok_and(|found| found.is_some()),
            "the value is stored before the server freezes"
        );
        // The connection is open before the freeze: the request reaches the server.
        assert!(cache_memoize::invalidate_async("warm-up").await.is_ok());
        server.pause();
        let pending = tokio::spawn(rate_invalidate_async("eur"));
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        assert!(
            !pending.is_finished(),
            "the invalidation waits for the frozen server without holding the thread"
        );
        // The thread is free: another task on it runs to the end meanwhile.
        assert_eq!(tokio::spawn(async { 7 }).await.ok(), Some(7));
        server.resume();
        match pending.await {
            Ok(result) => assert!(result.is_ok(), "{result:?}"),
            Err(err) => panic!("the invalidation task failed: {err}"),
        }
    });
    assert!(
        cache_memoize::backend()
            .get(rate_cache_key("eur").as_str())
            .is_ok_and(|found| found.is_none()),
        "the invalidation landed once the server answered"
    );
}
