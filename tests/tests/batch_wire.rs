//! What a batch sends on the wire (issue 25), counted by a proxy in front of a private
//! Redis: one read of every key, one step that locks every missing key, one step that
//! stores every computed element, whatever the batch's size; and overlapping batches of
//! several "processes" (backend clients with no shared flights) that never deadlock and
//! compute each key once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use cache_memoize::{
    CacheBackend, LockOptions, MemoizeOptions, RedisBackend, memoize_many, memoize_many_async,
};
use cache_memoize_tests::proxy::CountingProxy;
use cache_memoize_tests::runtime;
use cache_memoize_tests::server::RedisServer;

fn connect(url: &str) -> Arc<dyn CacheBackend> {
    match RedisBackend::builder([url])
        .response_timeout(Duration::from_secs(10))
        .connect()
    {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect to {url}: {err}"),
    }
}

fn locked(backend: &Arc<dyn CacheBackend>) -> MemoizeOptions {
    MemoizeOptions::new()
        .backend(Arc::clone(backend))
        .lock(LockOptions {
            retry: Duration::from_millis(20),
            ..LockOptions::default()
        })
}

fn keys(name: &str, ids: impl IntoIterator<Item = u32>) -> Vec<(String, u32)> {
    ids.into_iter()
        .map(|id| (format!("{name}:{id}"), id))
        .collect()
}

fn users(ids: &[u32]) -> HashMap<u32, String> {
    ids.iter().map(|id| (*id, format!("user {id}"))).collect()
}

/// A cold batch is three commands on the wire for 1 to 1,000 keys (`MGET`, the
/// get-or-lock script for every key, the store-and-release script for every key), and
/// the same batch again one (`MGET`); a partly warm one is three too.
#[test]
fn a_cold_batch_is_three_commands_for_any_size() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let backend = connect(&proxy.url());
    let opts = locked(&backend);
    // Warm up: scripts loaded, pooled connection open.
    let _ = memoize_many(keys("warm", [1]), &opts, users);
    for size in [1, 2, 10, 100, 1000] {
        proxy.clear();
        let batch = keys(&format!("cold{size}"), 0..size);
        let got = memoize_many(batch.clone(), &opts, users);
        assert_eq!(got.len(), size as usize);
        assert_eq!(
            proxy.commands(),
            ["MGET", "EVALSHA", "EVALSHA"],
            "a cold batch of {size}"
        );
        proxy.clear();
        let again = memoize_many(batch, &opts, |_: &[u32]| unreachable!("all hits"));
        assert_eq!(again, got);
        assert_eq!(proxy.commands(), ["MGET"], "an all-hit batch of {size}");
    }
    proxy.clear();
    let loaded = Mutex::new(Vec::new());
    let got = memoize_many(keys("cold100", 50..150), &opts, |ids: &[u32]| {
        loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(ids);
        users(ids)
    });
    assert_eq!(got.len(), 100);
    assert_eq!(
        loaded.into_inner().unwrap_or_else(PoisonError::into_inner),
        (100..150).collect::<Vec<_>>(),
        "only the missing half was loaded"
    );
    assert_eq!(
        proxy.commands(),
        ["MGET", "EVALSHA", "EVALSHA"],
        "a half-warm batch"
    );
}

/// The async form sends the same three commands.
#[test]
fn a_cold_async_batch_is_three_commands() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let backend = connect(&proxy.url());
    let opts = locked(&backend);
    runtime().block_on(async {
        let _ =
            memoize_many_async(keys("warm", [1]), &opts, |ids| async move { users(&ids) }).await;
        for size in [1, 100] {
            proxy.clear();
            let batch = keys(&format!("async{size}"), 0..size);
            let got = memoize_many_async(batch, &opts, |ids| async move { users(&ids) }).await;
            assert_eq!(got.len(), size as usize);
            assert_eq!(
                proxy.commands(),
                ["MGET", "EVALSHA", "EVALSHA"],
                "a cold async batch of {size}"
            );
        }
    });
}

/// Overlapping batches in four "processes" (clients), three threads each, every batch
/// naming its keys in its own order (ascending, descending, shuffled): all finish (a
/// deadlock would hold them until the test's deadline), each key is loaded once, and
/// every batch returns every key.
#[test]
fn overlapping_batches_of_several_processes_never_deadlock() {
    let server = RedisServer::start();
    let clients: Vec<Arc<dyn CacheBackend>> = (0..4).map(|_| connect(&server.url())).collect();
    let loads: Vec<AtomicUsize> = (0..60).map(|_| AtomicUsize::new(0)).collect();
    let (done, finished) = mpsc::channel();
    std::thread::scope(|s| {
        for (client, backend) in clients.iter().enumerate() {
            for thread in 0..3 {
                // A lock wait that ends (a deadlock would end in duplicate loads, after
                // the deadline below has failed the test).
                let opts = locked(backend).lock(LockOptions {
                    retry: Duration::from_millis(20),
                    timeout: Some(Duration::from_secs(30)),
                    ..LockOptions::default()
                });
                let (loads, done) = (&loads, done.clone());
                s.spawn(move || {
                    let caller = client * 3 + thread;
                    for round in 0..4u32 {
                        // 30 of 60 keys, in an order of this caller's own.
                        let start =
                            u32::try_from((caller * 7 + round as usize * 11) % 30).unwrap_or(0);
                        let mut ids: Vec<u32> = (start..start + 30).collect();
                        match caller % 3 {
                            0 => ids.reverse(),
                            1 => ids.sort_by_key(|id| (id * 37) % 61),
                            _ => {}
                        }
                        let got = memoize_many(keys(&format!("r{round}"), ids), &opts, |ids| {
                            for id in ids {
                                loads[*id as usize].fetch_add(1, Ordering::SeqCst);
                            }
                            std::thread::sleep(Duration::from_millis(20));
                            users(ids)
                        });
                        assert_eq!(got.len(), 30, "every key returned");
                    }
                    let _ = done.send(caller);
                });
            }
        }
        drop(done);
        for _ in 0..12 {
            let finished = finished.recv_timeout(Duration::from_secs(20));
            assert!(finished.is_ok(), "a batch is stuck: deadlock");
        }
    });
    // Each round's keys are a fresh key space: each key loaded once per round.
    let rounds_of = |id: usize| {
        (0..4u32)
            .filter(|round| {
                (0..12).any(|caller: usize| {
                    let start = (caller * 7 + *round as usize * 11) % 30;
                    (start..start + 30).contains(&id)
                })
            })
            .count()
    };
    for (id, loaded) in loads.iter().enumerate() {
        assert_eq!(
            loaded.load(Ordering::SeqCst),
            rounds_of(id),
            "key {id} loaded once per round it was asked in"
        );
    }
}
