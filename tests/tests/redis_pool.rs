//! The blocking connection pool of `RedisBackend` (bounded, failed connections dropped,
//! a bounded wait for a free one, a request resent after its connection closed that
//! recognises its own store) and what `connect` says about the server's eviction
//! policy. Every server here is private to its test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_memoize::{Backend, CacheBackend, Error, LockOptions, MemoizeOptions, RedisBackend};
use cache_memoize_tests::captured::Captured;
use cache_memoize_tests::proxy::CountingProxy;
use cache_memoize_tests::server::RedisServer;
use cache_memoize_tests::wait_until;

fn backend(server: &RedisServer, max_connections: u32, response_timeout: Duration) -> RedisBackend {
    let connected = RedisBackend::builder([server.url()])
        .max_connections(max_connections)
        .response_timeout(response_timeout)
        .wake_ups(false)
        .connect();
    match connected {
        Ok(backend) => backend,
        Err(err) => panic!("cannot connect to the test server: {err}"),
    }
}

/// The server's `total_connections_received`, read on a connection of its own.
fn connections_received(server: &RedisServer) -> u64 {
    let info: String = match redis::cmd("INFO")
        .arg("stats")
        .query(&mut server.connection())
    {
        Ok(info) => info,
        Err(err) => panic!("INFO failed: {err}"),
    };
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total_connections_received in INFO: {info}"))
}

fn set(backend: &RedisBackend, key: &str) {
    if let Err(err) = backend.set(key, b"value", Duration::from_secs(60)) {
        panic!("set failed: {err}");
    }
}

#[test]
fn two_hundred_fifty_six_threads_open_at_most_max_connections() {
    const MAX: u32 = 8;
    let server = RedisServer::start();
    // A generous response timeout: this test counts connections, not waits.
    let backend = backend(&server, MAX, Duration::from_secs(10));
    set(&backend, "shared");
    // `connections_received` opens a connection of its own each time.
    let before = connections_received(&server) + 1;
    let hits = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..256 {
            scope.spawn(|| {
                for _ in 0..20 {
                    if matches!(backend.get("shared"), Ok(Some(v)) if v == b"value") {
                        hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let opened = connections_received(&server) - before;
    assert_eq!(hits.into_inner(), 256 * 20, "every read was a hit");
    // One connection is already open (the one `connect` checked the server with).
    assert!(
        opened < u64::from(MAX),
        "256 threads opened {opened} connections; the pool allows {MAX}"
    );
}

#[test]
fn a_maximum_of_zero_still_allows_one_connection() {
    let server = RedisServer::start();
    let backend = backend(&server, 0, Duration::from_secs(2));
    set(&backend, "k");
    assert_eq!(
        backend.get("k").ok().flatten().as_deref(),
        Some(&b"value"[..])
    );
}

#[test]
fn a_broken_connection_is_dropped_and_its_place_freed() {
    let server = RedisServer::start();
    let backend = backend(&server, 1, Duration::from_secs(2));
    set(&backend, "k");
    // Cut every client's link but the test's own; the pool's only connection is dead.
    let killed: i64 = match redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query(&mut server.connection())
    {
        Ok(killed) => killed,
        Err(err) => panic!("CLIENT KILL failed: {err}"),
    };
    assert_eq!(killed, 1, "the pool's connection was cut");
    // The idle connection is found closed: the request is sent again on a new one,
    // which with one place works only if the dead connection left the pool.
    assert_eq!(
        backend.get("k").ok().flatten().as_deref(),
        Some(&b"value"[..]),
        "the request is sent again on a new connection"
    );
    assert_eq!(
        backend.get("k").ok().flatten().as_deref(),
        Some(&b"value"[..])
    );
}

#[test]
fn a_caller_that_gets_no_connection_in_time_fails_with_an_error() {
    let server = RedisServer::start();
    let backend = backend(&server, 1, Duration::from_millis(200));
    set(&backend, "k");
    // The server holds every command for 3 s (`CLIENT UNPAUSE` would be held too): the
    // one connection stays busy while the other callers wait for it, and each caller
    // gives up after its response timeout.
    let paused: Result<(), _> = redis::cmd("CLIENT")
        .arg(&["PAUSE", "3000", "ALL"])
        .query(&mut server.connection());
    if let Err(err) = paused {
        panic!("CLIENT PAUSE failed: {err}");
    }
    let results: Vec<Result<Option<Vec<u8>>, Error>> = std::thread::scope(|scope| {
        let callers: Vec<_> = (0..8).map(|_| scope.spawn(|| backend.get("k"))).collect();
        callers
            .into_iter()
            .map(|caller| {
                caller
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let messages: Vec<String> = results
        .iter()
        .map(|result| match result {
            Err(err) => err.to_string(),
            Ok(value) => panic!("a read succeeded on a paused server: {value:?}"),
        })
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("waiting for one of the 1 pooled connections")),
        "some callers waited for the busy connection and gave up: {messages:#?}"
    );
    wait_until("the pool serves again after the pause", || {
        backend.get("k").ok().flatten().as_deref() == Some(&b"value"[..])
    });
}

/// What `connects` connections to one server started with `args` log at WARN.
fn warnings_on_connect(args: &[&str], connects: usize) -> String {
    let server = RedisServer::start_with(args);
    let captured = Captured::default();
    let subscriber = captured.subscriber(tracing::Level::WARN);
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..connects {
            let connected = RedisBackend::builder([server.url()])
                .wake_ups(false)
                .connect();
            if let Err(err) = connected {
                panic!("cannot connect to the test server: {err}");
            }
        }
    });
    captured.text()
}

#[test]
fn an_evicting_server_is_warned_about_once() {
    let log = warnings_on_connect(&["--maxmemory-policy", "allkeys-lru"], 3);
    assert_eq!(
        log.matches("WARN").count(),
        1,
        "three backends, one warning: {log}"
    );
    assert!(log.contains("allkeys-lru"), "the policy is named: {log}");
    assert!(log.contains("evicted lock"), "the cost is named: {log}");
    assert!(log.contains("noeviction"), "the fix is named: {log}");
}

#[test]
fn a_noeviction_server_gives_no_warning() {
    let log = warnings_on_connect(&["--maxmemory-policy", "noeviction"], 1);
    assert_eq!(log, "", "no warning");
}

#[test]
fn a_server_that_refuses_config_connects_without_a_warning() {
    let log = warnings_on_connect(
        &[
            "--maxmemory-policy",
            "allkeys-lru",
            "--rename-command",
            "CONFIG",
            "",
        ],
        1,
    );
    assert_eq!(log, "", "the policy cannot be read: nothing to say at WARN");
}

/// A review finding (slow: a committed value destroyed): the pool sends a request once more
/// when its connection was found closed, on the ground that it "never reached a
/// master", but a connection closed after the server ran the request looks the same.
/// A `store_and_release` that ran, whose reply was lost, was sent again, found its lock
/// gone (it had released it) and answered "not stored": a memoized iterator then
/// deleted the chunks of the sequence it had just committed (a value then reports
/// its lock lost). A resent store must recognise its own value.
#[test]
fn a_store_whose_reply_was_lost_is_not_undone_by_its_resend() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let backend: Arc<dyn CacheBackend> = match RedisBackend::connect(&proxy.url()) {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect: {err}"),
    };
    let opts = MemoizeOptions::new()
        .backend(backend)
        .expire(Duration::from_secs(3600))
        .lock(LockOptions::default());
    // Loads the scripts: the cut request below runs (it is not answered `NOSCRIPT`).
    let warm: Vec<u32> = cache_memoize::memoize_iter("pool:warm", &opts, || 0..1_u32).collect();
    assert_eq!(warm, [0]);
    let computed = AtomicUsize::new(0);
    let first: Vec<u32> = cache_memoize::memoize_iter("pool:resent", &opts, || {
        computed.fetch_add(1, Ordering::SeqCst);
        // The commit (the manifest's store, which publishes the release) runs, and
        // its connection is cut before the reply.
        proxy.cut_after(b"cache-memoize:released:");
        0..3_u32
    })
    .collect();
    assert_eq!(first, [0, 1, 2]);
    assert!(
        proxy.commands().iter().filter(|c| *c == "EVALSHA").count() >= 2,
        "the store was sent"
    );
    let again: Vec<u32> = cache_memoize::memoize_iter("pool:resent", &opts, || {
        computed.fetch_add(1, Ordering::SeqCst);
        0..3_u32
    })
    .collect();
    assert_eq!(again, [0, 1, 2]);
    assert_eq!(
        computed.load(Ordering::SeqCst),
        1,
        "the committed sequence is read back, not computed again"
    );
}
