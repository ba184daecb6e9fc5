//! Keys that cannot lie (issue 10) and keys by identity (issue 19), on a private Redis
//! server, and a key with braces on a private three-master cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cache_memoize::{MemoizeOptions, RedisBackend, make_cache_key, memoize, set_backend};
use cache_memoize_tests::fast_lock;
use cache_memoize_tests::server::{RedisCluster, RedisServer};

#[test]
fn key_scenarios_on_a_private_redis_server() {
    let server = RedisServer::start();
    match RedisBackend::connect(&server.url()) {
        Ok(backend) => set_backend(backend),
        Err(err) => panic!("cannot connect to the test server: {err}"),
    }
    macro_rules! in_turn {
        ($($scenario:ident),* $(,)?) => {
            $(
                eprintln!("scenario {}", stringify!($scenario));
                cache_memoize_tests::keys_suite::$scenario();
            )*
        };
    }
    macro_rules! identity_in_turn {
        ($($scenario:ident),* $(,)?) => {
            $(
                eprintln!("scenario {}", stringify!($scenario));
                cache_memoize_tests::identity_suite::$scenario();
            )*
        };
    }
    cache_memoize_tests::identity_scenarios!(identity_in_turn);
    cache_memoize_tests::key_scenarios!(in_turn);
}

/// `memoize("}abc", ..)` with a lock: the value and its lock share a slot, so the
/// value is stored under the lock and read back (it used to fail open every time).
#[test]
fn keys_with_braces_are_cached_on_a_cluster() {
    let cluster = RedisCluster::start();
    let backend = match RedisBackend::builder(cluster.urls()).cluster().connect() {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect to the test cluster: {err}"),
    };
    let opts = MemoizeOptions::new()
        .backend(backend.clone())
        .lock(fast_lock());
    for key in ["}abc", "{x}", "a{b", "{}{"] {
        let runs = AtomicUsize::new(0);
        let compute = || {
            runs.fetch_add(1, Ordering::SeqCst);
            key.len()
        };
        assert_eq!(memoize(key, &opts, compute), key.len());
        assert_eq!(memoize(key, &opts, compute), key.len());
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{key} is computed once");
        let lock = make_cache_key(key).lock_key();
        assert!(
            cache_memoize::Backend::get(&*backend, &lock).is_ok_and(|v| v.is_none()),
            "no lock is left for {key}"
        );
    }
}
