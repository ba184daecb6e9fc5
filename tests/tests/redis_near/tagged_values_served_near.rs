//! Tagged values in the near cache (issue 26): a tagged near hit sends no command; another
//! process's `invalidate_tag` reaches the tag's epoch copy, after which the value is
//! never served near again; an invalidation of the tag that lands while a tagged read
//! is in flight is not put back by that read; and prefixes that leave a tag's epoch out
//! never serve its values near, so never stale. (The tags scenarios that hold on every
//! backend run on the near row too: `tests/src/tags_suite.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_memoize::{
    CacheBackend, MemoizeOptions, NearCache, RedisBackend, invalidate_tag_in, make_cache_key,
    memoize,
};
use cache_memoize_tests::proxy::CountingProxy;
use cache_memoize_tests::server::RedisServer;
use cache_memoize_tests::wait_until;

fn connect(url: &str, near: Option<NearCache>) -> Arc<RedisBackend> {
    let builder = RedisBackend::builder([url]);
    let builder = match near {
        Some(near) => builder.near_cache(near),
        None => builder,
    };
    match builder.connect() {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect to {url}: {err}"),
    }
}

fn tagged(backend: &Arc<RedisBackend>, tags: &[&str]) -> MemoizeOptions {
    MemoizeOptions::new()
        .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(3600))
        .tags(tags.iter().copied())
}

/// What `backend` returns for `key` tagged `tags`; `computed` when it computes.
fn read(backend: &Arc<RedisBackend>, key: &str, tags: &[&str], computed: &str) -> String {
    memoize(key, &tagged(backend, tags), || computed.to_owned())
}

/// The commands `proxy` saw, but the invalidation connection's heartbeat.
fn sent(proxy: &CountingProxy) -> Vec<String> {
    let mut commands = proxy.commands();
    commands.retain(|command| command != "PING");
    commands
}

/// Waits until `backend` serves `key` (tagged `tags`, holding `expected`) near.
fn until_served_near(backend: &Arc<RedisBackend>, key: &str, tags: &[&str], expected: &str) {
    wait_until("the tagged value is served near", || {
        let before = backend.near_cache_hits();
        assert_eq!(read(backend, key, tags, "unexpected"), expected);
        backend.near_cache_hits() > before
    });
}

/// Waits until every invalidation message the server sent `reader` so far has been
/// applied: a write of a fence key by `writer` reaches the reader's copy of it (the
/// messages come in order on one connection).
fn settled(reader: &Arc<RedisBackend>, writer: &Arc<RedisBackend>, fence: &str, round: usize) {
    let opts = |backend: &Arc<RedisBackend>| {
        MemoizeOptions::new()
            .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
            .expire(Duration::from_secs(3600))
    };
    let (old, new) = (format!("fence {round}"), format!("fence {}", round + 1));
    let _: String = memoize(fence, &opts(writer).force_overwrite(true), || old.clone());
    wait_until("the reader holds the fence near", || {
        let before = reader.near_cache_hits();
        let got: String = memoize(fence, &opts(reader), || "computed".to_owned());
        got == old && reader.near_cache_hits() > before
    });
    let _: String = memoize(fence, &opts(writer).force_overwrite(true), || new.clone());
    wait_until("the fence's invalidation reached the reader", || {
        let got: String = memoize(fence, &opts(reader), || "computed".to_owned());
        got == new
    });
}

#[test]
fn a_tagged_near_hit_sends_no_command() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let backend = connect(&proxy.url(), Some(NearCache::new()));
    wait_until("tracking is on", || backend.is_near_cache_live());
    let tags = ["nt:user:7", "nt:tenant:1"];
    assert_eq!(read(&backend, "nt:hit", &tags, "v1"), "v1");
    until_served_near(&backend, "nt:hit", &tags, "v1");
    // A late invalidation of the store may still drop a copy once: then read again.
    wait_until("a hundred tagged reads send nothing", || {
        proxy.clear();
        let before = backend.near_cache_hits();
        for _ in 0..100 {
            assert_eq!(read(&backend, "nt:hit", &tags, "unexpected"), "v1");
        }
        backend.near_cache_hits() == before + 100 && sent(&proxy).is_empty()
    });
    let before = backend.near_cache_hits();
    proxy.clear();
    let opts = tagged(&backend, &tags);
    let got: String = cache_memoize_tests::runtime().block_on(cache_memoize::memoize_async(
        "nt:hit",
        &opts,
        || async { "unexpected".to_owned() },
    ));
    assert_eq!(got, "v1");
    assert_eq!(
        backend.near_cache_hits(),
        before + 1,
        "the async hit is near too"
    );
    assert_eq!(sent(&proxy), Vec::<String>::new());
}

#[test]
fn invalidate_tag_from_another_process_stops_the_near_copy() {
    let server = RedisServer::start();
    let reader = connect(&server.url(), Some(NearCache::new().prefix("nt:")));
    let writer = connect(&server.url(), None);
    wait_until("tracking is on", || reader.is_near_cache_live());
    let writer_dyn = Arc::clone(&writer) as Arc<dyn CacheBackend>;
    for round in 0..10 {
        let (old, new) = (format!("v{round}"), format!("v{}", round + 1));
        assert_eq!(read(&reader, "nt:inv", &["nt:tag"], &old), old);
        until_served_near(&reader, "nt:inv", &["nt:tag"], &old);
        // Every message of the reader's own writes (its store, the epoch it created)
        // applied: from here on the only one is the writer's `DEL` of the epoch.
        settled(&reader, &writer, "nt:fence", round * 2);
        until_served_near(&reader, "nt:inv", &["nt:tag"], &old);
        let before = reader.near_cache_invalidations();
        assert!(invalidate_tag_in(&*writer_dyn, "nt:tag").is_ok());
        wait_until("the epoch's invalidation reached the reader", || {
            reader.near_cache_invalidations() > before
        });
        let hits = reader.near_cache_hits();
        assert_eq!(
            read(&reader, "nt:inv", &["nt:tag"], &new),
            new,
            "once the message is in, the value is a miss"
        );
        assert_eq!(reader.near_cache_hits(), hits, "not a near hit");
    }
}

#[test]
fn an_invalidation_racing_a_tagged_read_is_not_put_back() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let reader = connect(&proxy.url(), Some(NearCache::new()));
    let writer = connect(&server.url(), None);
    let writer_dyn = Arc::clone(&writer) as Arc<dyn CacheBackend>;
    wait_until("tracking is on", || reader.is_near_cache_live());
    for round in 0..5 {
        let (key, tag) = (format!("nt:race:{round}"), format!("nt:raced:{round}"));
        let epoch = format!("_tag_:{}", make_cache_key(&tag));
        // Stored by the other process (the value and its tag's epoch): the reader has
        // no copy of either, and every message of those writes has reached it.
        assert_eq!(read(&writer, &key, &[&tag], "old"), "old");
        settled(&reader, &writer, "nt:fence", round);
        let computed = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            // The reader's tagged read runs on the server (the old value, the old
            // epoch) but its reply is held while the tag is invalidated and the
            // message reaches the reader.
            proxy.hold_reply_to(epoch.as_bytes());
            let in_flight = scope.spawn(|| {
                memoize(&key, &tagged(&reader, &[&tag]), || {
                    computed.fetch_add(1, Ordering::SeqCst);
                    "computed in flight".to_owned()
                })
            });
            proxy.wait_reply_held();
            let before = reader.near_cache_invalidations();
            assert!(invalidate_tag_in(&*writer_dyn, &tag).is_ok());
            wait_until("the epoch's invalidation reached the reader", || {
                reader.near_cache_invalidations() > before
            });
            proxy.release_reply();
            let got = in_flight
                .join()
                .unwrap_or_else(|_| panic!("the read in flight panicked"));
            assert_eq!(got, "old", "begun before the invalidation: the old value");
        });
        assert_eq!(computed.load(Ordering::SeqCst), 0);
        let hits = reader.near_cache_hits();
        assert_eq!(
            read(&reader, &key, &[&tag], "new"),
            "new",
            "the old epoch read in flight was not put back"
        );
        assert_eq!(reader.near_cache_hits(), hits, "no near hit");
    }
}

#[test]
fn prefixes_that_leave_the_tags_out_never_serve_a_tagged_value_near() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    // `{nt:` and `_tag_:{nt:` are tracked: a tag made as `other:..` is not covered.
    let reader = connect(&proxy.url(), Some(NearCache::new().prefix("nt:")));
    let writer = Arc::clone(&connect(&server.url(), None)) as Arc<dyn CacheBackend>;
    wait_until("tracking is on", || reader.is_near_cache_live());
    // Covered: served near.
    assert_eq!(read(&reader, "nt:covered", &["nt:in"], "v"), "v");
    until_served_near(&reader, "nt:covered", &["nt:in"], "v");
    for round in 0..5 {
        let (old, new) = (format!("v{round}"), format!("v{}", round + 1));
        assert_eq!(read(&reader, "nt:outside", &["other:tag"], &old), old);
        for _ in 0..20 {
            proxy.clear();
            let hits = reader.near_cache_hits();
            assert_eq!(
                read(&reader, "nt:outside", &["other:tag"], "unexpected"),
                old
            );
            assert_eq!(reader.near_cache_hits(), hits, "never a near hit");
            assert_eq!(sent(&proxy), ["MGET"], "read from Redis");
        }
        // So no message is needed: the next read after the invalidation is a miss.
        assert!(invalidate_tag_in(&*writer, "other:tag").is_ok());
        assert_eq!(read(&reader, "nt:outside", &["other:tag"], &new), new);
    }
}
