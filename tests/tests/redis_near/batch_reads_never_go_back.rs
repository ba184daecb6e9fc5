//! A batch's read never leaves an older near copy to be served after it: a batch
//! (`memoize_many`) reads its values (and its tags' epochs) with one `get_many`, which
//! is never answered near nor kept; before the fix it left the copies alone too, so
//! when it found a newer value than the copy (another process's write whose
//! invalidation message had not arrived yet), the next single call of the same thread
//! was served the older copy: a newer value, then an older one. The message is held
//! back by a proxy on the invalidation connection (the reply to its heartbeat `PING`,
//! and with it every message after), so the window is as long as the test needs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cache_memoize::{
    CacheBackend, MemoizeOptions, NearCache, RedisBackend, invalidate_tag_in, memoize, memoize_many,
};
use cache_memoize_tests::proxy::CountingProxy;
use cache_memoize_tests::server::RedisServer;
use cache_memoize_tests::wait_until;

/// A reader with a near cache whose every connection (its invalidation link included)
/// goes through a proxy, and a writer straight to the server (another process).
fn reader_and_writer(
    server: &RedisServer,
    proxy: &CountingProxy,
) -> (Arc<RedisBackend>, Arc<RedisBackend>) {
    let reader = match RedisBackend::builder([proxy.url()])
        .near_cache(NearCache::new())
        // The held heartbeat must not count as a broken link (which would flush).
        .response_timeout(Duration::from_secs(60))
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect with a near cache: {err}"),
    };
    let writer = match RedisBackend::connect(&server.url()) {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect: {err}"),
    };
    wait_until("tracking is on", || reader.is_near_cache_live());
    (reader, writer)
}

fn opts(backend: &Arc<RedisBackend>, tags: &[&str]) -> MemoizeOptions {
    MemoizeOptions::new()
        .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(3600))
        .tags(tags.iter().copied())
}

/// `backend`'s value of `key` (tagged `tags`), `computed` if it computes: an
/// `Option`, as a batch stores its elements.
fn single(backend: &Arc<RedisBackend>, key: &str, tags: &[&str], computed: u32) -> u32 {
    let got: Option<u32> = memoize(key, &opts(backend, tags), || Some(computed));
    got.unwrap_or(0)
}

/// `backend`'s value of `key` (tagged `tags`) read as a batch of one.
fn batch(backend: &Arc<RedisBackend>, key: &str, tags: &[&str]) -> Option<u32> {
    let got: HashMap<u8, u32> = memoize_many([(key, 0_u8)], &opts(backend, tags), |held| {
        held.iter().map(|element| (*element, 99)).collect()
    });
    got.get(&0).copied()
}

/// Reads `key` through `reader` until its copy #1 is served near, then holds back the
/// reader's invalidation messages.
fn held_with_copy(reader: &Arc<RedisBackend>, proxy: &CountingProxy, key: &str, tags: &[&str]) {
    assert_eq!(single(reader, key, tags, 1), 1);
    wait_until("#1 is served near", || {
        let before = reader.near_cache_hits();
        assert_eq!(single(reader, key, tags, 99), 1);
        reader.near_cache_hits() > before
    });
    proxy.hold_reply_to(b"PING");
    proxy.wait_reply_held();
}

#[test]
fn a_batch_that_read_a_newer_value_is_not_followed_by_the_older_near_copy() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let (reader, writer) = reader_and_writer(&server, &proxy);
    let key = "batch-back:plain";
    held_with_copy(&reader, &proxy, key, &[]);
    // Another process replaces the value; its message to the reader is held.
    let stored: Option<u32> = memoize(key, &opts(&writer, &[]).force_overwrite(true), || Some(2));
    assert_eq!(stored, Some(2));
    assert_eq!(batch(&reader, key, &[]), Some(2), "the batch reads Redis");
    let after = single(&reader, key, &[], 99);
    proxy.release_reply();
    assert_eq!(
        after, 2,
        "the batch returned #2, then a call returned #{after}"
    );
}

#[test]
fn a_tagged_batch_that_read_a_moved_epoch_is_not_followed_by_the_older_near_copies() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let (reader, writer) = reader_and_writer(&server, &proxy);
    let (key, tags) = ("batch-back:tagged", ["batch-back:t"]);
    held_with_copy(&reader, &proxy, key, &tags);
    // Another process invalidates the tag and computes #2 under the new epoch; its
    // messages to the reader are held.
    assert!(invalidate_tag_in(&*(Arc::clone(&writer) as Arc<dyn CacheBackend>), tags[0]).is_ok());
    assert_eq!(single(&writer, key, &tags, 2), 2);
    assert_eq!(batch(&reader, key, &tags), Some(2), "the batch reads Redis");
    let after = single(&reader, key, &tags, 99);
    proxy.release_reply();
    assert_eq!(
        after, 2,
        "the batch returned #2 (under the new epoch), then a call returned #{after}"
    );
}
