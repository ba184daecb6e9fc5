//! Encryption at rest on Redis (`RedisBuilder::encryption`): what the server holds
//! shows no argument and no value in clear, bytes that do not open are a miss (never
//! an error), keys rotate without a miss, and wake-ups, `invalidate` and the near
//! cache work on hashed key names. Every server here is private to its test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use cache_memoize::{
    Backend, CacheBackend, Encryption, LockOptions, MemoizeOptions, NearCache, RedisBackend,
    make_cache_key, memoize, memoize_async, memoize_iter,
};
use cache_memoize_tests::server::{RedisCluster, RedisServer};
use cache_memoize_tests::{fast_lock, runtime, wait_until};

const NAMES: [u8; 32] = [0x4e; 32];
const KEY_1: [u8; 32] = [0x11; 32];
const KEY_2: [u8; 32] = [0x22; 32];
/// What the arguments and values of these tests are built from: never in the server.
const SECRET: &str = "ssn-078-05-1120";

fn sealed_with(keys: &[(u8, [u8; 32])]) -> Encryption {
    keys.iter()
        .fold(Encryption::new(NAMES), |enc, (id, key)| enc.key(*id, *key))
}

fn connect(server: &RedisServer, encryption: Encryption) -> Arc<RedisBackend> {
    connect_with(server, encryption, None)
}

fn connect_with(
    server: &RedisServer,
    encryption: Encryption,
    near: Option<NearCache>,
) -> Arc<RedisBackend> {
    let builder = RedisBackend::builder([server.url()])
        .response_timeout(Duration::from_secs(10))
        .encryption(encryption);
    let builder = match near {
        Some(near) => builder.near_cache(near),
        None => builder,
    };
    match builder.connect() {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect to the test server: {err}"),
    }
}

fn on(backend: &Arc<RedisBackend>) -> MemoizeOptions {
    MemoizeOptions::new().backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
}

/// Every key of the server (`SCAN`), with its raw value when it is a string.
fn everything(server: &RedisServer) -> Vec<(String, Option<Vec<u8>>)> {
    let mut conn = server.connection();
    let keys: Vec<String> = match redis::cmd("KEYS").arg("*").query(&mut conn) {
        Ok(keys) => keys,
        Err(err) => panic!("KEYS: {err}"),
    };
    let mut scanned: Vec<String> = Vec::new();
    let mut cursor = 0_u64;
    loop {
        let (next, page): (u64, Vec<String>) = match redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
        {
            Ok(reply) => reply,
            Err(err) => panic!("SCAN: {err}"),
        };
        scanned.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    scanned.sort();
    scanned.dedup();
    assert_eq!(scanned.len(), keys.len(), "SCAN sees every key");
    scanned
        .into_iter()
        .map(|key| {
            let value = redis::cmd("GET").arg(&key).query(&mut conn).ok().flatten();
            (key, value)
        })
        .collect()
}

/// Asserts that no key name and no value on the server holds any of `known`.
fn nothing_in_clear(server: &RedisServer, known: &[&str]) -> usize {
    let all = everything(server);
    for (key, value) in &all {
        for text in known {
            assert!(!key.contains(text), "{text:?} in the key name {key:?}");
            if let Some(value) = value {
                assert!(
                    !value.windows(text.len()).any(|w| w == text.as_bytes()),
                    "{text:?} in the value at {key:?}"
                );
            }
        }
        let tag = key
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map_or(key.as_str(), |(tag, _)| tag);
        assert_eq!(tag.len(), 32, "a 128-bit hash names {key:?}");
        assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()), "{key:?}");
    }
    all.len()
}

/// The stored names of the memoized values (not locks, marks or chunks).
fn value_keys(server: &RedisServer) -> Vec<String> {
    everything(server)
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| key.starts_with('{') && key.ends_with('}'))
        .collect()
}

fn counted(calls: &AtomicUsize, value: String) -> impl FnOnce() -> String + '_ {
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        value
    }
}

#[test]
fn values_round_trip_sealed_on_both_paths() {
    let server = RedisServer::start();
    let backend = connect(&server, sealed_with(&[(1, KEY_1)]));
    let calls = AtomicUsize::new(0);
    let key = format!("profile:{SECRET}");
    let value = format!("value of {SECRET}");
    for _ in 0..3 {
        let read: String = memoize(&key, &on(&backend), counted(&calls, value.clone()));
        assert_eq!(read, value);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "computed once, then hits");
    let async_key = format!("async:{SECRET}");
    let read = runtime().block_on(async {
        let opts = on(&backend);
        let mut last = String::new();
        for _ in 0..3 {
            last = memoize_async(&async_key, &opts, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                format!("async {SECRET}")
            })
            .await;
        }
        last
    });
    assert_eq!(read, format!("async {SECRET}"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(nothing_in_clear(&server, &[SECRET, "profile", "async"]) >= 2);
    // The readable key is still what the library shows.
    assert!(make_cache_key(&key).as_str().contains(SECRET));
}

#[test]
fn scan_shows_no_argument_during_a_computation_nor_in_iterator_chunks() {
    let server = RedisServer::start();
    let backend = connect(&server, sealed_with(&[(1, KEY_1)]));
    let key = format!("report:{SECRET}");
    let (started, computing) = mpsc::channel();
    let (finish, finishing) = mpsc::channel::<()>();
    let holder = {
        let opts = on(&backend).lock(fast_lock());
        let key = key.clone();
        thread::spawn(move || {
            memoize(&key, &opts, move || {
                let _ = started.send(());
                let _ = finishing.recv();
                format!("report {SECRET}")
            })
        })
    };
    assert!(computing.recv().is_ok(), "the computation starts");
    // The lock is there, under a hashed name.
    let during = everything(&server);
    assert!(
        during.iter().any(|(key, _)| key.starts_with("_lock_:{")),
        "the lock is held: {during:?}"
    );
    nothing_in_clear(&server, &[SECRET, "report"]);
    let _ = finish.send(());
    assert_eq!(holder.join().ok(), Some(format!("report {SECRET}")));

    // A memoized iterator: chunks and manifest.
    let items: Vec<String> = (0..40).map(|i| format!("{SECRET} item {i}")).collect();
    let opts = on(&backend).chunk_size(64).compress(false);
    let iter_key = format!("rows:{SECRET}");
    let first: Vec<String> = memoize_iter(&iter_key, &opts, || items.clone()).collect();
    assert_eq!(first, items);
    let again: Vec<String> = memoize_iter(&iter_key, &opts, || -> Vec<String> {
        panic!("a hit computes nothing")
    })
    .collect();
    assert_eq!(again, items);
    let keys = everything(&server);
    assert!(
        keys.iter()
            .filter(|(key, _)| key.contains(":chunk:"))
            .count()
            > 1,
        "chunks were written: {keys:?}"
    );
    nothing_in_clear(&server, &[SECRET, "report", "rows", "item"]);
}

/// Flips the last byte (the authentication tag) of the value stored at `name`.
fn tamper(server: &RedisServer, name: &str) {
    let mut conn = server.connection();
    let mut bytes: Vec<u8> = redis::cmd("GET")
        .arg(name)
        .query::<Option<Vec<u8>>>(&mut conn)
        .ok()
        .flatten()
        .unwrap_or_default();
    assert!(!bytes.is_empty(), "a value at {name}");
    if let Some(last) = bytes.last_mut() {
        *last ^= 0x01;
    }
    let set: redis::RedisResult<()> = redis::cmd("SET")
        .arg(name)
        .arg(bytes)
        .arg("KEEPTTL")
        .query(&mut conn);
    assert!(set.is_ok());
}

#[test]
fn tampered_bytes_are_a_miss_and_are_recomputed() {
    let server = RedisServer::start();
    let backend = connect(&server, sealed_with(&[(1, KEY_1)]));
    let calls = AtomicUsize::new(0);
    let key = format!("t:{SECRET}");
    let opts = on(&backend).lock(fast_lock());
    let value: String = memoize(&key, &opts, counted(&calls, "v1".into()));
    assert_eq!(value, "v1");
    let names = value_keys(&server);
    assert_eq!(names.len(), 1);
    tamper(&server, &names[0]);
    // Read directly: no error, just bytes no reader takes.
    let raw = backend.get(make_cache_key(&key).as_str());
    assert!(
        matches!(raw, Ok(Some(ref bytes)) if bytes.is_empty()),
        "{raw:?}"
    );
    let value: String = memoize(&key, &opts, counted(&calls, "v2".into()));
    assert_eq!(value, "v2", "recomputed");
    let value: String = memoize(&key, &opts, counted(&calls, "v3".into()));
    assert_eq!(value, "v2", "and overwritten: a hit again");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_value_moved_to_another_key_or_sealed_under_a_foreign_key_is_a_miss() {
    let server = RedisServer::start();
    let backend = connect(&server, sealed_with(&[(1, KEY_1)]));
    let calls = AtomicUsize::new(0);
    let (one, two) = (format!("m:{SECRET}:1"), format!("m:{SECRET}:2"));
    let _: String = memoize(&one, &on(&backend), counted(&calls, "one".into()));
    let first = value_keys(&server);
    let _: String = memoize(&two, &on(&backend), counted(&calls, "two".into()));
    let second: Vec<String> = value_keys(&server)
        .into_iter()
        .filter(|key| !first.contains(key))
        .collect();
    assert_eq!((first.len(), second.len()), (1, 1));
    // One's bytes copied over two's: they do not authenticate at two's name.
    let mut conn = server.connection();
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(&first[0])
        .query(&mut conn)
        .unwrap_or_default();
    let copied: redis::RedisResult<()> = redis::cmd("SET")
        .arg(&second[0])
        .arg(bytes)
        .query(&mut conn);
    assert!(copied.is_ok());
    let read: String = memoize(&two, &on(&backend), counted(&calls, "two again".into()));
    assert_eq!(read, "two again", "never one's value");
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Another deployment's value key (same names): its values are a miss here.
    let foreign = connect(&server, sealed_with(&[(1, KEY_2)]));
    let read: String = memoize(&one, &on(&foreign), counted(&calls, "foreign".into()));
    assert_eq!(read, "foreign");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[test]
fn rotation_reads_old_values_writes_new_ones_and_retired_keys_are_a_miss() {
    let server = RedisServer::start();
    let old = connect(&server, sealed_with(&[(1, KEY_1)]));
    let rotating = connect(&server, sealed_with(&[(2, KEY_2), (1, KEY_1)]));
    let retired = connect(&server, sealed_with(&[(2, KEY_2)]));
    let calls = AtomicUsize::new(0);
    let (a, b, c) = (format!("r:{SECRET}:a"), format!("r:{SECRET}:b"), "r:c");

    let _: String = memoize(&a, &on(&old), counted(&calls, "a".into()));
    let _: String = memoize(c, &on(&old), counted(&calls, "c".into()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Rotated: the old key's values are still hits (no extra miss).
    let read: String = memoize(&a, &on(&rotating), counted(&calls, "a again".into()));
    assert_eq!(read, "a");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "0 extra misses at rotation"
    );
    // New writes use the new key: readable once the old key is retired, not before.
    let _: String = memoize(&b, &on(&rotating), counted(&calls, "b".into()));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let read: String = memoize(&b, &on(&retired), counted(&calls, "b again".into()));
    assert_eq!(read, "b", "written under key 2");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let raw = old.get(make_cache_key(&b).as_str());
    assert!(
        matches!(raw, Ok(Some(ref bytes)) if bytes.is_empty()),
        "{raw:?}"
    );
    // A value under the retired key: a miss, never an error.
    let raw = retired.get(make_cache_key(c).as_str());
    assert!(
        matches!(raw, Ok(Some(ref bytes)) if bytes.is_empty()),
        "{raw:?}"
    );
    let read: String = memoize(c, &on(&retired), counted(&calls, "c again".into()));
    assert_eq!(read, "c again");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[test]
fn wake_ups_and_invalidate_work_on_hashed_names() {
    let server = RedisServer::start();
    let holder = connect(&server, sealed_with(&[(1, KEY_1)]));
    let waiter = connect(&server, sealed_with(&[(1, KEY_1)]));
    let calls = Arc::new(AtomicUsize::new(0));
    let key = format!("w:{SECRET}");
    let (started, computing) = mpsc::channel();
    let (finish, finishing) = mpsc::channel::<()>();
    let computed = {
        let (opts, key, calls) = (
            on(&holder).lock(fast_lock()),
            key.clone(),
            Arc::clone(&calls),
        );
        thread::spawn(move || {
            memoize(&key, &opts, move || {
                calls.fetch_add(1, Ordering::SeqCst);
                let _ = started.send(());
                let _ = finishing.recv();
                "held".to_owned()
            })
        })
    };
    assert!(computing.recv().is_ok());
    // Retries so rare that only a wake-up ends the wait in time.
    let patient = LockOptions {
        retry: Duration::from_secs(60),
        ..LockOptions::default()
    };
    let waiting = {
        let (opts, key, calls) = (on(&waiter).lock(patient), key.clone(), Arc::clone(&calls));
        thread::spawn(move || {
            memoize(&key, &opts, move || {
                calls.fetch_add(1, Ordering::SeqCst);
                "waiter computed".to_owned()
            })
        })
    };
    wait_until("the waiter subscribed", || {
        waiter.wake_up_subscriptions() == 1
    });
    let _ = finish.send(());
    assert_eq!(computed.join().ok().as_deref(), Some("held"));
    assert_eq!(
        waiting.join().ok().as_deref(),
        Some("held"),
        "woken, read it"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(waiter.wake_up_messages() >= 1);

    // `invalidate` removes the hashed value (and voids its lock).
    let stored = make_cache_key(&key);
    let invalidated = holder.invalidate(stored.as_str(), &stored.lock_key());
    assert!(invalidated.is_ok());
    assert!(value_keys(&server).is_empty());
    let read: String = memoize(&key, &on(&waiter), || "after".to_owned());
    assert_eq!(read, "after");
}

#[test]
fn the_near_cache_keeps_opened_values_and_is_invalidated_across_backends() {
    let server = RedisServer::start();
    // A prefix that covers none of the stored (hashed) names: set aside.
    let near = || Some(NearCache::new().prefix("shop"));
    let first = connect_with(&server, sealed_with(&[(1, KEY_1)]), near());
    let second = connect_with(&server, sealed_with(&[(1, KEY_1)]), near());
    wait_until("tracking is on", || {
        first.is_near_cache_live() && second.is_near_cache_live()
    });
    let key = format!("n:{SECRET}");
    let calls = AtomicUsize::new(0);
    let _: String = memoize(&key, &on(&first), counted(&calls, "v1".into()));
    // Read from Redis (opened, kept near), then served near. A read is not kept while
    // the first write's invalidation messages, which arrive when they arrive (late on
    // a loaded machine), void its ticket: read until one is kept and served.
    wait_until("a read is served near", || {
        let read: String = memoize(&key, &on(&first), counted(&calls, "v1 again".into()));
        assert_eq!(read, "v1");
        first.near_cache_hits() >= 1
    });
    // Another backend invalidates: the first one's copy goes.
    let before = first.near_cache_invalidations();
    let stored = make_cache_key(&key);
    assert!(
        second
            .invalidate(stored.as_str(), &stored.lock_key())
            .is_ok()
    );
    wait_until("the first backend is told", || {
        first.near_cache_invalidations() > before
    });
    let read: String = memoize(&key, &on(&first), counted(&calls, "v2".into()));
    assert_eq!(read, "v2");
    // And the second backend's write reaches the first one's near tier too.
    let before = first.near_cache_invalidations();
    let forced: String = memoize(
        &key,
        &on(&second).force_overwrite(true).lock(fast_lock()),
        counted(&calls, "v3".into()),
    );
    assert_eq!(forced, "v3");
    wait_until("the first backend is told", || {
        first.near_cache_invalidations() > before
    });
    let read: String = memoize(&key, &on(&first), counted(&calls, "v4".into()));
    assert_eq!(read, "v3");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    nothing_in_clear(&server, &[SECRET]);
}

#[test]
fn settings_without_a_value_key_or_with_a_repeated_id_are_refused() {
    let server = RedisServer::start();
    for settings in [
        Encryption::new(NAMES),
        Encryption::new(NAMES).key(1, KEY_1).key(1, KEY_2),
    ] {
        let connected = RedisBackend::builder([server.url()])
            .encryption(settings)
            .connect();
        assert!(connected.is_err());
    }
}

/// On a cluster, a value, its lock and its chunks keep one slot under hashed names:
/// the scripts that touch several of them run (a `CROSSSLOT` error would make each
/// call compute without the cache, and the second call compute again).
#[test]
fn hashed_names_keep_a_value_its_lock_and_chunks_in_one_cluster_slot() {
    let cluster = RedisCluster::start();
    let backend = match RedisBackend::builder(cluster.urls())
        .cluster()
        .response_timeout(Duration::from_secs(10))
        .encryption(sealed_with(&[(1, KEY_1)]))
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect to the test cluster: {err}"),
    };
    let calls = AtomicUsize::new(0);
    let opts = on(&backend).lock(fast_lock());
    for i in 0..8 {
        let key = format!("c:{SECRET}:{i}");
        for _ in 0..2 {
            let read: String = memoize(&key, &opts, counted(&calls, format!("v{i}")));
            assert_eq!(read, format!("v{i}"));
        }
        let stored = make_cache_key(&key);
        assert!(
            backend
                .invalidate(stored.as_str(), &stored.lock_key())
                .is_ok()
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        8,
        "each computed once, then a hit"
    );
    let items: Vec<String> = (0..30).map(|i| format!("{SECRET} {i}")).collect();
    let opts = opts.chunk_size(64).compress(false);
    let first: Vec<String> = memoize_iter("c-rows", &opts, || items.clone()).collect();
    let again: Vec<String> = memoize_iter("c-rows", &opts, || -> Vec<String> {
        panic!("a hit computes nothing")
    })
    .collect();
    assert_eq!((first, again), (items.clone(), items));
}

/// The whole behaviour suite on an encrypted backend, with another encrypted client of
/// the same server for "another process": every scenario holds on hashed names and
/// sealed values.
mod behaviour_suite {
    use std::sync::Arc;
    use std::time::Duration;

    use cache_memoize::RedisBackend;
    use cache_memoize_tests::Fixture;
    use cache_memoize_tests::server::RedisServer;

    use super::{KEY_1, KEY_2, sealed_with};

    fn encrypted_fixture() -> Fixture {
        let server = RedisServer::start();
        let connect = || {
            RedisBackend::builder([server.url()])
                .response_timeout(Duration::from_secs(10))
                .encryption(sealed_with(&[(2, KEY_2), (1, KEY_1)]))
                .connect()
        };
        match (connect(), connect()) {
            (Ok(backend), Ok(other)) => Fixture::new(Arc::new(backend))
                .with_other_client(Arc::new(other))
                .keeping(server),
            (Err(err), _) | (_, Err(err)) => panic!("cannot connect to the test server: {err}"),
        }
    }

    cache_memoize_tests::backend_suite!(encrypted_fixture());

    /// The suite again with a near cache in front (copies kept opened), and on a
    /// three-master cluster.
    mod with_a_near_cache_and_on_a_cluster {
        use std::sync::Arc;
        use std::time::Duration;

        use cache_memoize::{NearCache, RedisBackend};
        use cache_memoize_tests::server::{RedisCluster, RedisServer};
        use cache_memoize_tests::{Fixture, wait_until};

        use super::super::{KEY_1, sealed_with};

        fn near_fixture() -> Fixture {
            let server = RedisServer::start();
            let connect = |near: bool| {
                let builder = RedisBackend::builder([server.url()])
                    .response_timeout(Duration::from_secs(10))
                    .encryption(sealed_with(&[(1, KEY_1)]));
                let builder = if near {
                    builder.near_cache(NearCache::new())
                } else {
                    builder
                };
                match builder.connect() {
                    Ok(backend) => backend,
                    Err(err) => panic!("cannot connect to the test server: {err}"),
                }
            };
            let backend = connect(true);
            wait_until("tracking is on", || backend.is_near_cache_live());
            Fixture::new(Arc::new(backend))
                .with_other_client(Arc::new(connect(false)))
                .keeping(server)
        }

        fn on_cluster(cluster: &RedisCluster) -> Fixture {
            match RedisBackend::builder(cluster.urls())
                .cluster()
                .response_timeout(Duration::from_secs(10))
                .encryption(sealed_with(&[(1, KEY_1)]))
                .connect()
            {
                Ok(backend) => Fixture::new(Arc::new(backend)),
                Err(err) => panic!("cannot connect to the test cluster: {err}"),
            }
        }

        cache_memoize_tests::backend_suite!(near_fixture());

        cache_memoize_tests::sequential_backend_suite!(
            whole_suite_on_a_three_master_cluster_encrypted,
            RedisCluster::start(),
            |cluster| on_cluster(&cluster)
        );
    }
}

/// A batch's one attempt script and one store script seal as single calls do: names
/// hashed, values sealed, and what the batch stored reads back, by a batch and by a
/// single-key call's type (`Option<String>`).
#[test]
fn a_batch_is_sealed_in_its_scripts_too() {
    let server = RedisServer::start();
    let backend = connect(&server, sealed_with(&[(1, KEY_1)]));
    let opts = on(&backend).lock(fast_lock());
    let ids: Vec<u32> = (0..20).collect();
    let keys = || ids.iter().map(|id| (format!("batch:{SECRET}:{id}"), *id));
    let load = |ids: &[u32]| {
        ids.iter()
            .map(|id| (*id, format!("{SECRET} {id}")))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let first = cache_memoize::memoize_many(keys(), &opts, load);
    assert_eq!(first.len(), 20);
    let again = cache_memoize::memoize_many(keys(), &opts, |_: &[u32]| unreachable!("hits"));
    assert_eq!(again, first);
    let one: Option<String> = memoize(&format!("batch:{SECRET}:3"), &opts, || unreachable!());
    assert_eq!(one, Some(format!("{SECRET} 3")));
    assert!(nothing_in_clear(&server, &[SECRET, "batch"]) >= 20);
}

/// Review 9: under encryption (hashed names, sealed values) a batch's read that finds
/// a newer value than the near copy (another process's write, its message held back
/// on the invalidation link by a proxy) drops the copy, so the next single call does
/// not go back to it (`redis_near/batch_reads_never_go_back.rs` without encryption).
#[test]
fn a_batch_read_drops_an_older_near_copy_under_encryption() {
    use cache_memoize_tests::proxy::CountingProxy;
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let reader = match RedisBackend::builder([proxy.url()])
        .response_timeout(Duration::from_secs(60))
        .encryption(sealed_with(&[(1, KEY_1)]))
        .near_cache(NearCache::new())
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect with a near cache: {err}"),
    };
    let writer = connect(&server, sealed_with(&[(1, KEY_1)]));
    wait_until("tracking is on", || reader.is_near_cache_live());
    let key = "enc-batch-back";
    let opts = |backend: &Arc<RedisBackend>| on(backend).expire(Duration::from_secs(3600));
    let single = |computed: u32| -> Option<u32> { memoize(key, &opts(&reader), || Some(computed)) };
    assert_eq!(single(1), Some(1));
    wait_until("#1 is served near", || {
        let before = reader.near_cache_hits();
        assert_eq!(single(99), Some(1));
        reader.near_cache_hits() > before
    });
    proxy.hold_reply_to(b"PING");
    proxy.wait_reply_held();
    let stored: Option<u32> = memoize(key, &opts(&writer).force_overwrite(true), || Some(2));
    assert_eq!(stored, Some(2));
    let batch: std::collections::HashMap<u8, u32> =
        cache_memoize::memoize_many([(key, 0_u8)], &opts(&reader), |held| {
            held.iter().map(|element| (*element, 99)).collect()
        });
    assert_eq!(batch.get(&0), Some(&2), "the batch reads Redis");
    let after = single(99);
    proxy.release_reply();
    assert_eq!(
        after,
        Some(2),
        "the batch returned #2, then a call returned {after:?}"
    );
}
