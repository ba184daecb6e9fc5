//! A read of a key whose kept value was read as another type, codec or version counts
//! one near hit, not two (`near_cache_hits()` and `cache_memoize_near_hits_total`):
//! `Backend::decoded` takes an `accept` predicate, so the tier no longer counts a kept
//! value handed out and then found not to be the caller's own, before the read of the
//! bytes that follows counts another.

use std::sync::atomic::{AtomicUsize, Ordering};

use cache_memoize::{NearCache, cache_memoize};
use cache_memoize_tests::server::RedisServer;
use cache_memoize_tests::{near, wait_until};

static V1_COMPUTED: AtomicUsize = AtomicUsize::new(0);
static V2_COMPUTED: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(
    key = "builds:{id}",
    shared_key,
    expire = "1h",
    version = 1,
    keep_decoded
)]
fn build_v1(id: u32) -> String {
    V1_COMPUTED.fetch_add(1, Ordering::SeqCst);
    format!("v1 {id}")
}

#[cache_memoize(
    key = "builds:{id}",
    shared_key,
    expire = "1h",
    version = 2,
    keep_decoded
)]
fn build_v2(id: u32) -> String {
    V2_COMPUTED.fetch_add(1, Ordering::SeqCst);
    format!("v2 {id}")
}

#[test]
fn one_read_answered_near_is_one_near_hit_when_another_builds_value_is_kept() {
    let _registry = cache_memoize_tests::registry_guard();
    let server = RedisServer::start();
    let reader = near::register_near(vec![server.url()], false, NearCache::new());

    assert_eq!(build_v1(2), "v1 2");
    wait_until("near hits answer build_v1", || {
        let hits = reader.near_cache_hits();
        for _ in 0..20 {
            assert_eq!(build_v1(2), "v1 2");
        }
        reader.near_cache_hits() >= hits + 20
    });
    let hits = reader.near_cache_hits();
    // Another version reads the key once: the near copy answers once (its bytes are not
    // this build's value, so it computes and stores its own).
    assert_eq!(build_v2(2), "v2 2");
    assert_eq!(V2_COMPUTED.load(Ordering::SeqCst), 1);
    let counted = reader.near_cache_hits() - hits;
    assert_eq!(
        counted, 1,
        "near_cache_hits counted {counted} for one read answered near (a miss for this build)"
    );
}
