//! Adversarial review of issue 19 on real Redis (private servers), the near cache, the
//! attribute's identities and the runtime's settings: each test stages one interleaving
//! and asserts what a correct cache does. A failing test here is a bug found,
//! documented in its doc comment: the interleaving, expected and got.

use std::sync::Arc;
use std::time::Duration;

use cache_memoize::{
    Backend, CacheBackend, Clock, MemoizeOptions, RedisBackend, cache_memoize, make_cache_key,
    memoize, try_memoize,
};
use cache_memoize_tests::freshness_suite::ManualClock;
use cache_memoize_tests::server::RedisServer;

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
