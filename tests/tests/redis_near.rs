//! The near cache of the Redis backend: a hit on a copy sends nothing, another
//! process's write reaches the copy through the server's invalidations, and a broken
//! invalidation channel (killed connection, restarted server) or an expiry never leaves
//! a stale copy served, nor does a `FLUSHALL` from another client. `NearCache::prefix`
//! takes the key prefix as documented, and overlapping prefixes still turn tracking on.
//! Every server here is private to its test; waits poll with a bounded deadline.

// `keep_decoded` with a near cache: what only a near cache shows (its hit counts, its
// invalidation links, its byte bound). Each test registers its backend for the
// attribute and holds the registry while it runs. The scenarios that hold on every
// backend are in `tests/src/keep_decoded_suite.rs`.
#[path = "redis_near/kept_values_count_one_near_hit.rs"]
mod kept_values_count_one_near_hit;
#[path = "redis_near/kept_values_follow_the_near_copy.rs"]
mod kept_values_follow_the_near_copy;
#[path = "redis_near/kept_values_on_a_cluster_follow_killed_links.rs"]
mod kept_values_on_a_cluster_follow_killed_links;
#[path = "redis_near/kept_values_race_writes_and_stay_bounded.rs"]
mod kept_values_race_writes_and_stay_bounded;
// Tagged values served near (issue 26).
#[path = "redis_near/batch_reads_never_go_back.rs"]
mod batch_reads_never_go_back;
#[path = "redis_near/reads_never_go_back.rs"]
mod reads_never_go_back;
#[path = "redis_near/tagged_reads_never_go_back.rs"]
mod tagged_reads_never_go_back;
#[path = "redis_near/tagged_values_served_near.rs"]
mod tagged_values_served_near;

use std::sync::Arc;
use std::time::Duration;

use cache_memoize::{
    Backend, CacheBackend, MemoizeOptions, NearCache, RedisBackend, make_cache_key, memoize,
};
use cache_memoize_tests::proxy::CountingProxy;
use cache_memoize_tests::server::{
    RedisCluster, RedisSentinel, RedisServer, kill_tracking_client, tracking_client,
};
use cache_memoize_tests::{runtime, wait_until};

fn near(url: &str) -> Arc<RedisBackend> {
    match RedisBackend::builder([url])
        .near_cache(NearCache::new())
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect with a near cache: {err}"),
    }
}

fn plain(url: &str) -> Arc<RedisBackend> {
    match RedisBackend::connect(url) {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect: {err}"),
    }
}

fn opts(backend: &Arc<RedisBackend>) -> MemoizeOptions {
    MemoizeOptions::new()
        .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(3600))
}

/// What `backend` returns for `key`; "computed by the reader" when it found nothing.
fn read(backend: &Arc<RedisBackend>, key: &str) -> String {
    memoize(key, &opts(backend), || "computed by the reader".to_owned())
}

/// Stores `value` at `key` through `backend`, overwriting what is there.
fn write(backend: &Arc<RedisBackend>, key: &str, value: &str) {
    let stored: String = memoize(key, &opts(backend).force_overwrite(true), || {
        value.to_owned()
    });
    assert_eq!(stored, value);
}

/// Waits until `backend` serves `key` from its near copy.
fn until_served_near(backend: &Arc<RedisBackend>, key: &str, expected: &str) {
    wait_until("the value is served from the near copy", || {
        let before = backend.near_cache_hits();
        assert_eq!(read(backend, key), expected);
        backend.near_cache_hits() > before
    });
}

/// The commands recorded by `proxy`, but the invalidation connection's heartbeat.
fn sent(proxy: &CountingProxy) -> Vec<String> {
    let mut commands = proxy.commands();
    commands.retain(|command| command != "PING");
    commands
}

#[test]
fn a_near_hit_sends_no_command() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let backend = near(&proxy.url());
    let writer = plain(&server.url());
    write(&writer, "near:hit", "v1");
    wait_until("tracking is on", || backend.is_near_cache_live());
    until_served_near(&backend, "near:hit", "v1");
    // A late invalidation of the write may still drop the copy once: then read again.
    wait_until("a hundred reads send nothing", || {
        proxy.clear();
        let before = backend.near_cache_hits();
        for _ in 0..100 {
            assert_eq!(read(&backend, "near:hit"), "v1");
        }
        backend.near_cache_hits() == before + 100 && sent(&proxy).is_empty()
    });
    let rt = runtime();
    let opts = opts(&backend);
    let before = backend.near_cache_hits();
    proxy.clear();
    let got: String = rt.block_on(cache_memoize::memoize_async("near:hit", &opts, || async {
        "computed by the reader".to_owned()
    }));
    assert_eq!(got, "v1");
    assert_eq!(
        backend.near_cache_hits(),
        before + 1,
        "the async hit is near too"
    );
    assert_eq!(sent(&proxy), Vec::<String>::new());
}

#[test]
fn a_write_from_another_backend_replaces_the_near_copy() {
    let server = RedisServer::start();
    let (reader, writer) = (near(&server.url()), plain(&server.url()));
    wait_until("tracking is on", || reader.is_near_cache_live());
    for round in 0..20 {
        let (old, new) = (format!("v{round}"), format!("v{}", round + 1));
        write(&writer, "near:coherent", &old);
        until_served_near(&reader, "near:coherent", &old);
        write(&writer, "near:coherent", &new);
        wait_until("the reader sees the new value", || {
            read(&reader, "near:coherent") == new
        });
        for _ in 0..50 {
            assert_eq!(
                read(&reader, "near:coherent"),
                new,
                "never back to the old value"
            );
        }
    }
    assert!(reader.near_cache_invalidations() > 0);
}

#[test]
fn an_invalidation_from_another_backend_reaches_the_near_copy() {
    let server = RedisServer::start();
    let (reader, writer) = (near(&server.url()), plain(&server.url()));
    wait_until("tracking is on", || reader.is_near_cache_live());
    write(&writer, "near:invalidated", "v1");
    until_served_near(&reader, "near:invalidated", "v1");
    let key = make_cache_key("near:invalidated");
    let invalidated = writer.invalidate(key.as_str(), &key.lock_key());
    assert!(invalidated.is_ok(), "{invalidated:?}");
    wait_until("the reader computes again", || {
        read(&reader, "near:invalidated") == "computed by the reader"
    });
}

#[test]
fn a_killed_invalidation_connection_leaves_no_stale_copy() {
    let server = RedisServer::start();
    let (reader, writer) = (near(&server.url()), plain(&server.url()));
    for round in 0..10 {
        let (old, new) = (format!("v{round}"), format!("v{}", round + 1));
        wait_until("tracking is on", || reader.is_near_cache_live());
        write(&writer, "near:killed", &old);
        until_served_near(&reader, "near:killed", &old);
        kill_tracking_client(&mut server.connection());
        // The invalidation of this write is never sent to the reader.
        write(&writer, "near:killed", &new);
        wait_until("the reader sees the new value", || {
            read(&reader, "near:killed") == new
        });
    }
}

#[test]
fn a_restarted_server_leaves_no_stale_copy() {
    let mut server = RedisServer::start();
    let reader = near(&server.url());
    for round in 0..5 {
        let (old, new) = (format!("v{round}"), format!("v{}", round + 1));
        wait_until("tracking is on", || reader.is_near_cache_live());
        let writer = plain(&server.url());
        write(&writer, "near:restarted", &old);
        until_served_near(&reader, "near:restarted", &old);
        server.restart();
        let writer = plain(&server.url());
        write(&writer, "near:restarted", &new);
        wait_until("the reader sees the new value", || {
            read(&reader, "near:restarted") == new
        });
    }
}

#[test]
fn a_near_copy_never_outlives_its_freshness() {
    // No active expiry: the server sends no invalidation when the value expires, so
    // only the copy's own deadline ends it.
    let server = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let set: Result<(), _> = redis::cmd("DEBUG")
        .arg("SET-ACTIVE-EXPIRE")
        .arg(0)
        .query(&mut server.connection());
    assert!(set.is_ok(), "{set:?}");
    let reader = near(&server.url());
    wait_until("tracking is on", || reader.is_near_cache_live());
    let short = opts(&reader).expire(Duration::from_millis(300));
    let first: String = memoize("near:short", &short, || "first".to_owned());
    assert_eq!(first, "first");
    wait_until("the value is served from the near copy", || {
        let before = reader.near_cache_hits();
        let _: String = memoize("near:short", &short, || "first".to_owned());
        reader.near_cache_hits() > before
    });
    wait_until("the expired value is computed again", || {
        memoize::<String, _>("near:short", &short, || "second".to_owned()) == "second"
    });
}

#[test]
fn own_writes_drop_the_near_copy_at_once() {
    let server = RedisServer::start();
    let backend = near(&server.url());
    wait_until("tracking is on", || backend.is_near_cache_live());
    write(&backend, "near:own", "v1");
    until_served_near(&backend, "near:own", "v1");
    write(&backend, "near:own", "v2");
    assert_eq!(read(&backend, "near:own"), "v2", "no wait for the message");
}

#[test]
fn locks_are_never_served_near() {
    let server = RedisServer::start();
    let backend = near(&server.url());
    wait_until("tracking is on", || backend.is_near_cache_live());
    let lock = cache_memoize::CacheLock::new("near:lock")
        .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>);
    for _ in 0..3 {
        let guard = lock.try_acquire();
        assert!(matches!(guard, Ok(Some(_))), "{guard:?}");
        assert_eq!(lock.is_locked().ok(), Some(true));
        drop(guard);
        assert_eq!(lock.is_locked().ok(), Some(false));
    }
    assert_eq!(backend.near_cache_hits(), 0);
}

fn near_on_cluster(cluster: &RedisCluster) -> Arc<RedisBackend> {
    let connected = RedisBackend::builder(cluster.urls())
        .cluster()
        .near_cache(NearCache::new())
        .connect();
    match connected {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect to the cluster with a near cache: {err}"),
    }
}

fn plain_on_cluster(cluster: &RedisCluster) -> Arc<RedisBackend> {
    match RedisBackend::builder(cluster.urls()).cluster().connect() {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect to the cluster: {err}"),
    }
}

#[test]
fn on_a_cluster_writes_on_every_master_reach_the_near_copies() {
    let cluster = RedisCluster::start();
    let (reader, writer) = (near_on_cluster(&cluster), plain_on_cluster(&cluster));
    wait_until("tracking is on", || reader.is_near_cache_live());
    // Keys spread over the three masters.
    let keys: Vec<String> = (0..12).map(|i| format!("near:cluster:{i}")).collect();
    let owners: std::collections::BTreeSet<usize> = keys
        .iter()
        .map(|key| cluster.owner_of(make_cache_key(key).as_str()))
        .collect();
    assert_eq!(owners.len(), 3, "the keys cover every master");
    for key in &keys {
        write(&writer, key, "v1");
        until_served_near(&reader, key, "v1");
        write(&writer, key, "v2");
        wait_until("the reader sees the new value", || {
            read(&reader, key) == "v2"
        });
    }
}

#[test]
fn on_a_cluster_a_killed_invalidation_connection_leaves_no_stale_copy() {
    let cluster = RedisCluster::start();
    let (reader, writer) = (near_on_cluster(&cluster), plain_on_cluster(&cluster));
    for round in 0..6 {
        let key = format!("near:cluster-killed:{round}");
        let owner = cluster.owner_of(make_cache_key(&key).as_str());
        wait_until("tracking is on", || reader.is_near_cache_live());
        write(&writer, &key, "old");
        until_served_near(&reader, &key, "old");
        kill_tracking_client(&mut cluster.connection(owner));
        write(&writer, &key, "new");
        wait_until("the reader sees the new value", || {
            read(&reader, &key) == "new"
        });
    }
}

#[test]
fn on_a_cluster_a_failover_leaves_no_stale_copy() {
    let cluster = RedisCluster::start_with_replicas();
    let (reader, writer) = (near_on_cluster(&cluster), plain_on_cluster(&cluster));
    for round in 0..2 {
        let key = format!("near:failover:{round}");
        wait_until("tracking is on", || reader.is_near_cache_live());
        write(&writer, &key, "old");
        until_served_near(&reader, &key, "old");
        cluster.fail_over(make_cache_key(&key).as_str());
        wait_until("the writer stores on the new master", || {
            let stored: String = memoize(&key, &opts(&writer).force_overwrite(true), || {
                "new".to_owned()
            });
            stored == "new" && read(&writer, &key) == "new"
        });
        wait_until("the reader sees the new value", || {
            read(&reader, &key) == "new"
        });
    }
}

/// The Sentinel service of the tests below.
const SERVICE: &str = "cache-memoize-near";

/// A backend through the Sentinel, with a near cache or without.
fn on_sentinel(sentinel: &RedisSentinel, near_cache: bool) -> Arc<RedisBackend> {
    let builder = RedisBackend::builder([sentinel.url()])
        .sentinel(SERVICE)
        .connect_timeout(Duration::from_millis(300))
        .response_timeout(Duration::from_millis(500));
    let builder = if near_cache {
        builder.near_cache(NearCache::new())
    } else {
        builder
    };
    match builder.connect() {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect through the Sentinel: {err}"),
    }
}

/// With Sentinel: a reader's near copy of "old" is served from the master, then
/// `fail_over` moves the master to the replica. The near cache must follow: tracking
/// on again on the new master, no copy from before served, and the new master's
/// invalidations reaching the copies made after.
fn near_cache_follows_sentinel(
    fail_over: impl FnOnce(&mut RedisServer, &RedisSentinel, &RedisBackend),
) {
    let mut primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    let sentinel = RedisSentinel::start(SERVICE, &primary, 1);
    let (reader, writer) = (on_sentinel(&sentinel, true), on_sentinel(&sentinel, false));
    wait_until("tracking is on", || reader.is_near_cache_live());
    assert!(tracking_client(&mut primary.connection()).is_some());
    write(&writer, "near:sentinel", "old");
    until_served_near(&reader, "near:sentinel", "old");

    fail_over(&mut primary, &sentinel, &reader);
    sentinel.wait_for_master(SERVICE, replica.port());
    wait_until("tracking is on on the new master", || {
        reader.is_near_cache_live() && tracking_client(&mut replica.connection()).is_some()
    });
    wait_until("the writer stores on the new master", || {
        let stored: String = memoize(
            "near:sentinel",
            &opts(&writer).force_overwrite(true),
            || "new".to_owned(),
        );
        stored == "new" && read(&writer, "near:sentinel") == "new"
    });
    assert_eq!(
        read(&reader, "near:sentinel"),
        "new",
        "the copy from before the failover is gone"
    );
    until_served_near(&reader, "near:sentinel", "new");
    write(&writer, "near:sentinel", "newer");
    wait_until("the new master's invalidation reaches the copy", || {
        read(&reader, "near:sentinel") == "newer"
    });
}

/// The master killed: its invalidation connection breaks, the near cache is bypassed
/// until Sentinel has promoted the replica and tracking is on there.
#[test]
fn with_sentinel_the_near_cache_follows_the_master_after_a_failover() {
    near_cache_follows_sentinel(|primary, _, reader| {
        primary.kill();
        // Sentinel takes its down-after period (200 ms) and an election to promote the
        // replica: the channel is known lost long before tracking can be on again.
        wait_until("the near cache is bypassed", || {
            !reader.is_near_cache_live()
        });
    });
}

/// A graceful failover (`SENTINEL FAILOVER`): the old master stays up, demoted to a
/// replica; the near cache leaves it for the new master.
#[test]
fn with_sentinel_the_near_cache_leaves_a_demoted_master() {
    near_cache_follows_sentinel(|primary, sentinel, _| {
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(SERVICE)
            .query(
                &mut redis::Client::open(sentinel.url())
                    .and_then(|c| c.get_connection())
                    .unwrap_or_else(|err| panic!("cannot reach the Sentinel: {err}")),
            )
            .unwrap_or_else(|err| panic!("SENTINEL FAILOVER failed: {err}"));
        // The Sentinel reconfigures the old master when it next reads its INFO.
        let demoted = std::time::Instant::now() + Duration::from_secs(30);
        while primary.role().as_deref() != Some("slave") {
            assert!(
                std::time::Instant::now() < demoted,
                "the old master was not demoted"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// Issue 22: the README's near-cache snippet pasted without its `set_key_prefix` kept
/// no copy and said nothing. A near cache that covers none of the keys read through it
/// says so once (WARN), with the fix; one that covers them says nothing.
#[test]
fn a_near_cache_that_covers_none_of_the_keys_read_says_so_once_with_the_fix() {
    let server = RedisServer::start();
    let connect = || match RedisBackend::builder([server.url()])
        .near_cache(NearCache::new().prefix("shop:"))
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect with a near cache: {err}"),
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    for (prefix, expected) in [("other", 1), ("shop", 0)] {
        let backend = connect();
        wait_until("tracking is on", || backend.is_near_cache_live());
        let captured = cache_memoize_tests::captured::Captured::default();
        let subscriber = captured.subscriber(tracing::Level::WARN);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..100 {
                // Stored as `{shop:…}`, as under set_key_prefix("shop").
                let key = format!("{prefix}:{run}:{i}");
                assert_eq!(read(&backend, &key), "computed by the reader");
            }
        });
        let log = captured.text();
        assert_eq!(
            log.matches("covers none of the").count(),
            expected,
            "keys under {prefix:?}: {log}"
        );
        if expected == 1 {
            assert!(log.contains("set_key_prefix"), "the fix is named: {log}");
        }
    }
}

/// A memoized iterator's manifest, read through the near cache, is kept there no longer
/// than its `expire` (review 3, finding 1: it was stamped fresh for ever, so its copy
/// lived a year, ended only by Redis's expiry message; here the server sends none).
#[test]
fn an_iterator_manifest_is_kept_near_no_longer_than_its_expire() {
    let server = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let mut admin = server.connection();
    // Keys expire only when read: no expiry message reaches the near cache.
    let disabled = redis::cmd("DEBUG")
        .arg("SET-ACTIVE-EXPIRE")
        .arg(0)
        .query::<()>(&mut admin);
    assert!(disabled.is_ok(), "{disabled:?}");
    let backend = near(&server.url());
    wait_until("tracking is on", || backend.is_near_cache_live());
    let opts = opts(&backend).expire(Duration::from_millis(300));
    let read = || cache_memoize::memoize_iter("near-iter", &opts, || 0..3_u8).collect::<Vec<_>>();
    assert_eq!(read(), [0, 1, 2]);
    wait_until("the manifest is served near", || {
        let before = backend.near_cache_hits();
        assert_eq!(read(), [0, 1, 2]);
        backend.near_cache_hits() > before
    });
    // Time passing, not synchronisation: the manifest's `expire` runs out.
    std::thread::sleep(Duration::from_millis(400));
    let before = backend.near_cache_hits();
    assert_eq!(read(), [0, 1, 2]);
    assert_eq!(
        backend.near_cache_hits(),
        before,
        "a manifest past its expire was served near"
    );
}

/// A conditional delete through the backend drops its own near copy as it returns, as
/// `delete` and `invalidate` do (review 3, finding 2: `compare_and_delete` left the
/// copy to the invalidation message, so a read right after it still got the deleted
/// value; `add` likewise). Rounds, since the message usually comes soon after.
#[test]
fn a_compare_and_delete_through_the_backend_drops_its_near_copy_at_once() {
    let server = RedisServer::start();
    let backend = near(&server.url());
    wait_until("tracking is on", || backend.is_near_cache_live());
    let key = make_cache_key("near-cad");
    for round in 0..50 {
        let value = format!("round {round}");
        write(&backend, "near-cad", &value);
        until_served_near(&backend, "near-cad", &value);
        let bytes = match backend.get(key.as_str()) {
            Ok(Some(bytes)) => bytes,
            other => panic!("the value is stored: {other:?}"),
        };
        assert!(matches!(
            backend.compare_and_delete(key.as_str(), &bytes),
            Ok(true)
        ));
        assert!(
            matches!(backend.get(key.as_str()), Ok(None)),
            "round {round}: the deleted value was read back from the near copy"
        );
    }
}

/// The mark an absent value leaves (`cache_none = false`) reads as a miss: a read that
/// finds it near is no near hit (review 3, finding 5: absent marks are kept near and
/// each such read counts in `near_cache_hits` and `cache_memoize_near_hits_total`,
/// though the call computes; keeping them saves the first round trip, so the fix
/// belongs in the count, not the keeping).
#[test]
fn an_absent_mark_read_near_is_no_near_hit() {
    use cache_memoize::__private::{Entry, Inline, OptionOutcome, call};
    let server = RedisServer::start();
    let backend = near(&server.url());
    wait_until("tracking is on", || backend.is_near_cache_live());
    let find = |opts: &MemoizeOptions, found: bool| -> Option<u32> {
        call(
            "near-absent",
            opts,
            Entry::new(OptionOutcome, Inline),
            || found.then_some(1),
        )
    };
    assert_eq!(find(&opts(&backend), true), Some(1));
    // A forced call that finds it gone leaves the absent mark.
    assert_eq!(find(&opts(&backend).force_overwrite(true), false), None);
    let before = backend.near_cache_hits();
    for _ in 0..10 {
        assert_eq!(find(&opts(&backend), false), None);
    }
    assert_eq!(
        backend.near_cache_hits(),
        before,
        "calls that computed were counted as near hits"
    );
}

/// A backend with a near cache told of writes to keys starting with `prefix`.
fn near_with_prefix(url: &str, prefix: &str) -> Arc<RedisBackend> {
    match RedisBackend::builder([url])
        .near_cache(NearCache::new().prefix(prefix))
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect with a near cache: {err}"),
    }
}

/// A review finding (slow, doc): `NearCache::prefix` is documented (README example
/// `.prefix("shop:")`, rustdoc "the key prefix, when one is set") as the key prefix,
/// but a memoized key is stored as `{prefix:key}`: it starts with `{`, so a prefix
/// given as documented covered no key, and nothing was ever kept near (every read went
/// to Redis, silently). A prefix given as the key prefix must cover the keys made
/// under it.
#[test]
fn a_near_cache_prefix_given_as_the_key_prefix_covers_its_keys() {
    let server = RedisServer::start();
    let backend = near_with_prefix(&server.url(), "shop:");
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(3600));
    wait_until("tracking is on", || backend.is_near_cache_live());
    // `make_cache_key("shop:cart")` is `{shop:cart}`, as a key made
    // under `set_key_prefix("shop")` is `{shop:…}`.
    assert_eq!(memoize("shop:cart", &opts, || 5_u32), 5);
    wait_until("the value is served from the near copy", || {
        let before = backend.near_cache_hits();
        assert_eq!(memoize("shop:cart", &opts, || 6_u32), 5);
        backend.near_cache_hits() > before
    });
    // And the server tells it of another process's write to such a key.
    let writer: Arc<dyn CacheBackend> = match RedisBackend::connect(&server.url()) {
        Ok(writer) => Arc::new(writer),
        Err(err) => panic!("cannot connect: {err}"),
    };
    let overwrite = opts.clone().backend(writer).force_overwrite(true);
    assert_eq!(memoize("shop:cart", &overwrite, || 8_u32), 8);
    wait_until("the near copy is invalidated", || {
        memoize("shop:cart", &opts, || 9_u32) == 8
    });
}

/// A review finding (slow): Redis refuses `CLIENT TRACKING … BCAST` with overlapping prefixes
/// ("Prefixes for a single client must not overlap"), so a near cache given, say,
/// `.prefix("shop").prefix("shop:eu")` never went live: every read went to Redis, with
/// one WARN. A prefix inside another adds nothing to track and is not sent.
#[test]
fn overlapping_near_cache_prefixes_still_turn_tracking_on() {
    let server = RedisServer::start();
    let backend = match RedisBackend::builder([server.url()])
        .near_cache(
            NearCache::new()
                .prefix("shop-eu:")
                .prefix("shop")
                .prefix("shop-eu:cart:"),
        )
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect with a near cache: {err}"),
    };
    wait_until("tracking is on", || backend.is_near_cache_live());
}

/// Checked in review, held (no finding): a `FLUSHALL` from another client (on a server this
/// test started) drops the near copies: the server's invalidation of the whole
/// keyspace reaches the near cache, and the next read computes.
#[test]
fn a_flushall_from_another_client_drops_the_near_copies() {
    let server = RedisServer::start();
    let backend = near_with_prefix(&server.url(), "flush:");
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(3600));
    wait_until("tracking is on", || backend.is_near_cache_live());
    assert_eq!(memoize("flush:k", &opts, || 1_u32), 1);
    wait_until("the value is served from the near copy", || {
        let before = backend.near_cache_hits();
        assert_eq!(memoize("flush:k", &opts, || 2_u32), 1);
        backend.near_cache_hits() > before
    });
    let flushed: Result<(), _> = redis::cmd("FLUSHALL").query(&mut server.connection());
    assert!(flushed.is_ok(), "{flushed:?}");
    wait_until("the next read computes", || {
        memoize("flush:k", &opts, || 2_u32) == 2
    });
}
