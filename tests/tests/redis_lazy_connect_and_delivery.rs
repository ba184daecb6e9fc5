//! `connect_lazy` against a server that is up (used at once: no skipped call, no
//! recovery report), and values delivered by a release to its waiters (never to a
//! call that began after an invalidation, never to a forced refresh). Every server
//! here is private to its test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use cache_memoize::{
    Backend, CacheBackend, LockOptions, MemoizeOptions, RedisBackend, make_cache_key, memoize,
};
use cache_memoize_tests::captured::Captured;
use cache_memoize_tests::server::RedisServer;
use cache_memoize_tests::wait_until;

/// A backend connected to `server` now.
fn connected(server: &RedisServer) -> Arc<RedisBackend> {
    match RedisBackend::connect(&server.url()) {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("{err}"),
    }
}

fn lazy(server: &RedisServer) -> RedisBackend {
    match RedisBackend::builder([server.url()]).connect_lazy() {
        Ok(backend) => backend,
        Err(err) => panic!("connect_lazy: {err}"),
    }
}

/// With a server that is up, `connect_lazy` does not make the first calls skip it: an
/// `invalidate` made right after connecting (a service invalidating at startup, after
/// a migration, say) reaches the server.
#[test]
fn connect_lazy_to_a_live_server_does_not_fail_an_invalidate_made_at_once() {
    let server = RedisServer::start();
    let key = make_cache_key(&format!("lazy-live:{}", uuid::Uuid::new_v4().simple()));
    let backend = lazy(&server);
    let invalidated = backend.invalidate(key.as_str(), &key.lock_key());
    assert!(
        invalidated.is_ok(),
        "the server is up, yet the invalidate right after connect_lazy failed: {invalidated:?}"
    );
}

/// A memoized call right after `connect_lazy` to a live server stores its value.
#[test]
fn connect_lazy_to_a_live_server_stores_the_first_call() {
    let server = RedisServer::start();
    let backend: Arc<dyn CacheBackend> = Arc::new(lazy(&server));
    let opts = MemoizeOptions::new().backend(Arc::clone(&backend));
    let key = format!("lazy-first:{}", uuid::Uuid::new_v4().simple());
    let runs = AtomicUsize::new(0);
    let call = || {
        memoize(&key, &opts, || {
            runs.fetch_add(1, Ordering::SeqCst);
            7_u32
        })
    };
    assert_eq!(call(), 7);
    assert!(
        backend
            .get(make_cache_key(&key).as_str())
            .is_ok_and(|found| found.is_some()),
        "the server is up: the first call's value is stored"
    );
}

/// Held: a waiter (on another backend, so not this process's flight follower) takes
/// the value its holder's release delivered; a call that begins after a later
/// invalidation computes again.
#[test]
fn a_call_after_an_invalidation_never_gets_the_value_delivered_before_it() {
    let server = RedisServer::start();
    let (near, far) = (connected(&server), connected(&server));
    let key = format!("deliver-inval:{}", uuid::Uuid::new_v4().simple());
    let cache_key = make_cache_key(&key);
    let (release, holder) = holding(&near, &key, 1);
    let began = Instant::now();
    let waiter = {
        let (opts, key) = (patient(&far), key.clone());
        thread::spawn(move || memoize(&key, &opts, || 99_usize))
    };
    subscribed(&far);
    let _ = release.send(());
    assert_eq!(holder.join().ok(), Some(1));
    if let Err(err) = near.invalidate(cache_key.as_str(), &cache_key.lock_key()) {
        panic!("{err}");
    }
    let after = memoize(&key, &patient(&far), || 2_usize);
    assert_eq!(after, 2, "a call that began after the invalidation");
    assert_eq!(
        waiter.join().ok(),
        Some(1),
        "the waiter began before it: woken with the value"
    );
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "woken, not retried"
    );
}

/// A server that was up all along gets no recovery report ("Redis backend answers
/// again: circuit breaker closed ...") at start. Such a report would follow the first
/// contact on its own thread, so the test looks for one for a second.
#[test]
fn connect_lazy_to_a_live_server_reports_no_recovery() {
    let server = RedisServer::start();
    let captured = Captured::default();
    let subscriber = captured.subscriber(tracing::Level::INFO);
    let backend = tracing::subscriber::with_default(subscriber, || lazy(&server));
    let connected = Instant::now();
    wait_until("the first contact answered", || !backend.is_circuit_open());
    let closed = connected.elapsed();
    let looked = Instant::now();
    while !captured.text().contains("answers again") && looked.elapsed() < Duration::from_secs(1) {
        thread::sleep(Duration::from_millis(10));
    }
    let text = captured.text();
    assert!(
        !text.contains("answers again") && !text.contains("circuit breaker"),
        "a recovery reported for a server that never failed (closed after {closed:?}): {text}"
    );
}

fn patient(backend: &Arc<RedisBackend>) -> MemoizeOptions {
    MemoizeOptions::new()
        .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
        .lock(LockOptions {
            retry: Duration::from_secs(60),
            timeout: Some(Duration::from_secs(60)),
            ..LockOptions::default()
        })
}

/// Starts a holder of `key` on `backend` computing `value` until `release` is sent;
/// returns once it computes.
fn holding(
    backend: &Arc<RedisBackend>,
    key: &str,
    value: usize,
) -> (mpsc::Sender<()>, thread::JoinHandle<usize>) {
    let (go, started) = mpsc::channel();
    let (release, hold) = mpsc::channel::<()>();
    let (opts, key) = (patient(backend), key.to_owned());
    let holder = thread::spawn(move || {
        memoize(&key, &opts, || {
            let _ = go.send(());
            let _ = hold.recv();
            value
        })
    });
    let _ = started.recv();
    (release, holder)
}

/// Returns once `backend` is subscribed to a release, and then a little later: room
/// for the waiter's attempt after subscribing, which records the holder its delivery
/// is matched against (without it the waiter reads the value instead: the same
/// outcome, another path).
fn subscribed(backend: &RedisBackend) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend.wake_up_subscriptions() == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(50));
}

/// Held: a forced refresh waiting on another's lock does not take the value that
/// holder's release delivers: it takes the lock and computes its own.
#[test]
fn a_forced_refresh_waiter_computes_rather_than_take_the_delivered_value() {
    let server = RedisServer::start();
    let (near, far) = (connected(&server), connected(&server));
    let key = format!("deliver-forced:{}", uuid::Uuid::new_v4().simple());
    let (release, holder) = holding(&near, &key, 1);
    let waiter = {
        let (opts, key) = (patient(&far), key.clone());
        thread::spawn(move || cache_memoize::refresh(|| memoize(&key, &opts, || 2_usize)))
    };
    subscribed(&far);
    let _ = release.send(());
    assert_eq!(holder.join().ok(), Some(1));
    assert_eq!(waiter.join().ok(), Some(2), "the forced refresh computes");
    assert_eq!(
        memoize(&key, &patient(&near), || 3_usize),
        2,
        "and stores after the holder"
    );
}

/// Held: the async waiter takes the delivered value; a call that begins after a later
/// invalidation computes again.
#[test]
fn an_async_waiter_and_an_invalidation() {
    let server = RedisServer::start();
    let (near, far) = (connected(&server), connected(&server));
    let key = format!("deliver-async:{}", uuid::Uuid::new_v4().simple());
    let cache_key = make_cache_key(&key);
    let (release, holder) = holding(&near, &key, 1);
    let rt = cache_memoize_tests::runtime();
    let waiter = {
        let (opts, key) = (patient(&far), key.clone());
        rt.spawn(
            async move { cache_memoize::memoize_async(&key, &opts, || async { 99_usize }).await },
        )
    };
    subscribed(&far);
    let _ = release.send(());
    assert_eq!(holder.join().ok(), Some(1));
    if let Err(err) = near.invalidate(cache_key.as_str(), &cache_key.lock_key()) {
        panic!("{err}");
    }
    let opts = patient(&far);
    let after = rt.block_on(cache_memoize::memoize_async(&key, &opts, || async {
        2_usize
    }));
    assert_eq!(after, 2, "a call that began after the invalidation");
    assert_eq!(rt.block_on(waiter).ok(), Some(1));
}
