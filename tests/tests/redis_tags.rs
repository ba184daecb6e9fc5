//! Tags on the wire (issue 26): a tagged hit is one `MGET` of the value and its tags'
//! epochs; `invalidate_tag` is one `DEL` for 1 value or 100,000; a cold
//! tagged miss creates each missing epoch once.

use std::sync::Arc;
use std::time::Duration;

use cache_memoize::{
    CacheBackend, LockOptions, MemoizeOptions, RedisBackend, invalidate_tag_in, make_cache_key,
    memoize,
};
use cache_memoize_tests::proxy::CountingProxy;
use cache_memoize_tests::server::RedisServer;

fn connect(url: &str) -> Arc<dyn CacheBackend> {
    let backend = RedisBackend::builder([url])
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500))
        .connect();
    match backend {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect to {url}: {err}"),
    }
}

fn tagged(backend: &Arc<dyn CacheBackend>, tags: &[&str]) -> MemoizeOptions {
    MemoizeOptions::new()
        .backend(Arc::clone(backend))
        .lock(LockOptions::default())
        .tags(tags.iter().copied())
}

#[test]
fn a_tagged_hit_is_one_mget_and_a_cold_miss_creates_each_epoch_once() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let backend = connect(&proxy.url());
    // Warm up: scripts loaded, pooled connection open.
    let _: u8 = memoize("warm-up", &tagged(&backend, &["warm"]), || 1);
    proxy.clear();

    let opts = tagged(&backend, &["user:7", "tenant:1"]);
    let _: String = memoize("profile:7", &opts, || "v".to_owned());
    assert_eq!(
        proxy.commands(),
        ["MGET", "SET", "SET", "MGET", "EVALSHA", "EVALSHA"],
        "a cold miss: the read, each missing epoch created, the epochs read again, the lock, the store"
    );
    proxy.clear();
    let _: String = memoize("profile:7", &opts, || unreachable!("a hit"));
    assert_eq!(proxy.commands(), ["MGET"], "a tagged hit");
    proxy.clear();
    let _: String = memoize("profile:8", &opts, || "w".to_owned());
    assert_eq!(
        proxy.commands(),
        ["MGET", "EVALSHA", "EVALSHA"],
        "a miss under existing epochs costs what an untagged one does"
    );
}

/// `invalidate_tag` is one `DEL` for 1 value and for 100,000: the 100,000 are one
/// tagged value's stored bytes written under 100,000 keys by a pipeline (a value's
/// envelope names its type, version and epochs, not its key: each reads as that
/// value), so the test does not spend a minute computing them in a debug build. A
/// sample of 1,000 is checked to be hits before, and misses after.
#[test]
fn invalidate_tag_is_one_command_however_many_values_carry_it() {
    for total in [1_u32, 100_000] {
        let server = RedisServer::start();
        let proxy = CountingProxy::start(server.port());
        let (direct, counted) = (connect(&server.url()), connect(&proxy.url()));
        let opts = tagged(&direct, &["tenant:big"]);
        let row = |i: u32| format!("row:{i}");
        assert_eq!(memoize(&row(0), &opts, || 7_u32), 7);
        let stored = match direct.get(make_cache_key(&row(0)).as_str()) {
            Ok(Some(bytes)) => bytes,
            other => panic!("the tagged value is not stored: {other:?}"),
        };
        let mut copies = redis::pipe();
        for i in 1..total {
            copies
                .cmd("SET")
                .arg(make_cache_key(&row(i)).as_str())
                .arg(&stored)
                .ignore();
        }
        if total > 1 {
            let written: redis::RedisResult<()> = redis::Client::open(server.url())
                .and_then(|client| client.get_connection())
                .and_then(|mut conn| copies.query(&mut conn));
            assert!(written.is_ok(), "the copies are written: {written:?}");
        }
        let sample: Vec<u32> = (0..total)
            .step_by((total as usize / 1_000).max(1))
            .collect();
        for &i in &sample {
            assert_eq!(memoize(&row(i), &opts, || 8_u32), 7, "row {i} is a hit");
        }

        proxy.clear();
        assert!(invalidate_tag_in(&*counted, "tenant:big").is_ok());
        assert_eq!(proxy.commands(), ["DEL"], "one command for {total} values");

        for &i in &sample {
            assert_eq!(memoize(&row(i), &opts, || 9_u32), 9, "row {i} is a miss");
        }
    }
}
