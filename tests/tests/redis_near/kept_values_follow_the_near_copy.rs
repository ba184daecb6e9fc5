//! `keep_decoded` on a Redis backend with a near cache (issue 15): near hits return
//! clones of a value decoded once, and the kept value is exactly as coherent as the
//! near copy it sits beside: another process's write or invalidation, and a killed
//! invalidation connection, are never answered with the value kept before them.
//!
//! One test: the attribute runs against the registered backend, which is global to
//! the process, so the scenarios run in turn on one private server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_memoize::{
    Backend, CacheBackend, MemoizeOptions, NearCache, RedisBackend, cache_memoize, make_cache_key,
    memoize,
};
use cache_memoize_tests::server::{RedisServer, kill_tracking_client};
use cache_memoize_tests::{near, runtime, wait_until};
use serde::{Deserialize, Deserializer, Serialize};

/// How many `Counted` values were decoded in this process.
static DECODED: AtomicUsize = AtomicUsize::new(0);
/// How many times `report` computed.
static COMPUTED: AtomicUsize = AtomicUsize::new(0);

/// A value whose every decoding is counted (written as its string).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Counted(String);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        DECODED.fetch_add(1, Ordering::SeqCst);
        String::deserialize(deserializer).map(Counted)
    }
}

#[cache_memoize(key = "kept:{id}", shared_key, expire = "1h", keep_decoded)]
fn report(id: u32) -> Counted {
    COMPUTED.fetch_add(1, Ordering::SeqCst);
    Counted(format!("computed {id}"))
}

#[cache_memoize(key = "kept:{id}", shared_key, expire = "1h", keep_decoded)]
async fn report_async(id: u32) -> Counted {
    COMPUTED.fetch_add(1, Ordering::SeqCst);
    Counted(format!("computed {id}"))
}

/// Stores `value` as `report(id)`'s through `writer` (another process), overwriting.
fn write(writer: &Arc<RedisBackend>, id: u32, value: &str) {
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(writer) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(3600))
        .force_overwrite(true);
    let stored: Counted = memoize(&format!("kept:{id}"), &opts, || Counted(value.to_owned()));
    assert_eq!(stored.0, value);
}

/// Waits until `report(id)` is answered by the kept value: a hundred near hits that
/// decode nothing, each returning `expected`.
fn until_kept(reader: &Arc<RedisBackend>, id: u32, expected: &str) {
    wait_until("a hundred hits decode nothing", || {
        let (hits, decoded) = (reader.near_cache_hits(), DECODED.load(Ordering::SeqCst));
        for _ in 0..100 {
            assert_eq!(report(id).0, expected);
        }
        reader.near_cache_hits() == hits + 100 && DECODED.load(Ordering::SeqCst) == decoded
    });
}

#[test]
fn kept_values_are_cloned_on_near_hits_and_as_coherent_as_the_near_copy() {
    let _registry = cache_memoize_tests::registry_guard();
    let server = RedisServer::start();
    let reader = near::register_near(vec![server.url()], false, NearCache::new());
    let writer = near::connect(vec![server.url()], false, None);

    eprintln!("scenario: hits clone one decoded value");
    assert_eq!(report(1).0, "computed 1");
    until_kept(&reader, 1, "computed 1");
    assert_eq!(COMPUTED.load(Ordering::SeqCst), 1, "computed once");

    eprintln!("scenario: the async form is answered by the same kept value");
    let rt = runtime();
    let decoded = DECODED.load(Ordering::SeqCst);
    let hits = reader.near_cache_hits();
    for _ in 0..10 {
        assert_eq!(rt.block_on(report_async(1)).0, "computed 1");
    }
    assert_eq!(reader.near_cache_hits(), hits + 10);
    assert_eq!(DECODED.load(Ordering::SeqCst), decoded, "nothing decoded");

    eprintln!("scenario: another process's writes replace the kept value");
    for round in 0..20 {
        let value = format!("written {round}");
        write(&writer, 1, &value);
        wait_until("the reader sees the new value", || report(1).0 == value);
        until_kept(&reader, 1, &value);
    }
    assert_eq!(COMPUTED.load(Ordering::SeqCst), 1);

    eprintln!("scenario: another process's invalidation drops the kept value");
    let key = make_cache_key("kept:1");
    assert!(writer.invalidate(key.as_str(), &key.lock_key()).is_ok());
    wait_until("the reader computes again", || {
        report(1).0 == "computed 1" && COMPUTED.load(Ordering::SeqCst) == 2
    });
    until_kept(&reader, 1, "computed 1");

    eprintln!("scenario: a killed invalidation connection leaves no kept value served");
    for round in 0..5 {
        wait_until("tracking is on", || reader.is_near_cache_live());
        let old = format!("before the kill {round}");
        write(&writer, 1, &old);
        wait_until("the reader sees the written value", || report(1).0 == old);
        until_kept(&reader, 1, &old);
        kill_tracking_client(&mut server.connection());
        // The invalidation of this write is never sent to the reader.
        let new = format!("after the kill {round}");
        write(&writer, 1, &new);
        wait_until("the reader sees the new value", || report(1).0 == new);
        for _ in 0..50 {
            assert_eq!(report(1).0, new, "never back to the kept value");
        }
    }
}
