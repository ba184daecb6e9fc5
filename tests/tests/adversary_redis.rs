//! Adversarial review of issue 19 on real Redis (private servers), the near cache, the
//! attribute's identities and the runtime's settings: each test stages one interleaving
//! and asserts what a correct cache does. A failing test here is a bug found,
//! documented in its doc comment: the interleaving, expected and got.

use std::sync::Arc;
use std::time::Duration;

use cache_memoize::{
    CacheBackend, Clock, MemoizeOptions, RedisBackend, cache_memoize, make_cache_key, memoize,
    try_memoize,
};
use cache_memoize_tests::freshness_suite::ManualClock;
use cache_memoize_tests::server::RedisServer;
use cache_memoize_tests::{registry_guard, runtime};

fn plain(url: &str) -> Arc<RedisBackend> {
    match RedisBackend::connect(url) {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect: {err}"),
    }
}

fn pttl(conn: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(conn).unwrap_or(-3)
}

/// The fail-safe throttle's mark must never outlive the value it throttles ("the mark
/// never outlives its value"; after every value, lock and mark expired, 0 keys). With
/// `jitter`, the value's TTL is `(expire + stale) * keep` (keep in `[1 - jitter, 1]`),
/// but the mark's end is computed as `fresh_until + stale - 20 ms` =
/// `store + expire * keep + stale - 20 ms`: `stale * (1 - keep)` past the value.
///
/// Interleaving (Redis, `stale = 60 s`, `jitter = 0.9`, `fail_safe = 1 h`, injected clock):
/// 1. v1 is stored (TTL shortened by the jitter);
/// 2. the clock moves past freshness; a call refreshes inline and the refresh fails:
///    the mark `_refresh_:{key}` is left.
///
/// Expected: PTTL(mark) <= PTTL(value) for each of 8 keys. Got: the mark outlives the
/// value (by up to ~54 s here), left on the server after the value expired.
#[test]
fn a_throttle_mark_never_outlives_a_jittered_value() {
    let server = RedisServer::start();
    let backend = plain(&server.url());
    let mut conn = server.connection();
    let clock = Arc::new(ManualClock::default());
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(1))
        .stale(Duration::from_secs(60))
        .jitter(0.9)
        .fail_safe(Duration::from_secs(3600))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>);
    let keys: Vec<String> = (0..8).map(|i| format!("adv-mark-jitter:{i}")).collect();
    for key in &keys {
        let first: Result<String, String> = try_memoize(key, &opts, || Ok("v1".to_owned()));
        assert_eq!(first, Ok("v1".to_owned()));
    }
    clock.advance(Duration::from_secs(2));
    let mut outliving = Vec::new();
    for key in &keys {
        let again: Result<String, String> = try_memoize(key, &opts, || Err("down".to_owned()));
        assert_eq!(again, Ok("v1".to_owned()), "the stale value is served");
        let cache_key = make_cache_key(key);
        let (value, mark) = (
            pttl(&mut conn, cache_key.as_str()),
            pttl(&mut conn, &cache_key.refresh_key()),
        );
        assert!(mark > 0, "the failed refresh left its mark");
        if mark > value {
            outliving.push(format!("{key}: mark {mark} ms > value {value} ms"));
        }
    }
    assert!(
        outliving.is_empty(),
        "marks outlive their values: {outliving:?}"
    );
}

/// Two same-named functions in two modules, `load::load` and `load_invalidate::load`
/// (or `load_cache_key::load`): `fn_identity` rewrites every `::load_` followed by a
/// companion's name (`cache_key`, `invalidate`) anywhere in the path, not only the
/// function's own segment, so `adversary_redis::load_invalidate::load` becomes
/// `adversary_redis::load::load`: the identity of the other function.
///
/// Interleaving: `load::load(7)` is called (stored); then `load_invalidate::load(7)`.
///
/// Expected: each returns its own value ("README: Keys": the identity names the
/// function item itself). Got: the second returns the first's value ("load 7").
#[test]
fn same_named_functions_in_modules_named_after_a_companion_have_keys_of_their_own() {
    let _registry = registry_guard();
    assert_eq!(load::load(7), "load 7");
    assert_eq!(load_invalidate::load(7), "load_invalidate 7");
    assert_ne!(
        load::load_cache_key(7).as_str(),
        load_invalidate::load_cache_key(7).as_str()
    );
}

mod load {
    use super::cache_memoize;

    #[cache_memoize(expire = "10m")]
    pub(crate) fn load(x: u32) -> String {
        format!("load {x}")
    }
}

mod load_invalidate {
    use super::cache_memoize;

    #[cache_memoize(expire = "10m")]
    pub(crate) fn load(x: u32) -> String {
        format!("load_invalidate {x}")
    }
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
        let sync = memoize("adv-timeout-max", &opts, || "v".to_owned());
        let rt = runtime();
        let not_sync = rt.block_on(cache_memoize::memoize_async(
            "adv-timeout-max-async",
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
    const CHILD: &str = "ADVERSARY_REDIS_REFRESH_LIMITS_CHILD";
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
            cache_memoize::memoize_async_detached("adv-limits", &opts, || async { 1_u32 }).await;
        assert_eq!(first, 1);
        clock.advance(Duration::from_secs(11));
        let stale =
            cache_memoize::memoize_async_detached("adv-limits", &opts, || async { 2_u32 }).await;
        assert_eq!(stale, 1, "the stale value is served at once");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now: u32 =
                cache_memoize::memoize_async_detached("adv-limits", &opts, || async { 3_u32 })
                    .await;
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
