//! Tags on the wire (issue 26): a tagged hit is one `MGET` of the value and its tags'
//! epochs; `invalidate_tag` is one `DEL` however many values carry the tag; a cold
//! tagged miss creates each missing epoch once.

use std::sync::Arc;
use std::time::Duration;

use cache_memoize::{
    CacheBackend, LockOptions, MemoizeOptions, RedisBackend, invalidate_tag_in, memoize,
    memoize_many,
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

#[test]
fn invalidate_tag_is_one_command_however_many_values_carry_it() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let backend = connect(&proxy.url());
    let opts = tagged(&backend, &["tenant:big"]);
    for batch in 0..20_u32 {
        let keys = (0..100_u32).map(|i| (format!("row:{batch}:{i}"), batch * 100 + i));
        let loaded = memoize_many(keys, &opts, |ids: &[u32]| {
            ids.iter().map(|id| (*id, *id)).collect()
        });
        assert_eq!(loaded.len(), 100);
    }
    let stored = |count: &mut usize| {
        for batch in 0..20_u32 {
            let keys = (0..100_u32).map(|i| (format!("row:{batch}:{i}"), batch * 100 + i));
            memoize_many(keys, &opts, |ids: &[u32]| {
                *count += ids.len();
                ids.iter().map(|id| (*id, *id + 1)).collect()
            });
        }
    };
    let mut recomputed = 0;
    stored(&mut recomputed);
    assert_eq!(recomputed, 0, "2,000 tagged values, all hits");

    proxy.clear();
    assert!(invalidate_tag_in(&*backend, "tenant:big").is_ok());
    assert_eq!(proxy.commands(), ["DEL"], "one command for 2,000 values");

    stored(&mut recomputed);
    assert_eq!(recomputed, 2_000, "every value tagged tenant:big is a miss");
}
