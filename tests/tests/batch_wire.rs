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

/// A holder that releases without a value, under overlapping batches: a third caller
/// holds `w`; batch A (of `x` and `w`) takes `x` and waits for `w`; batch B (of the
/// same keys) finds `x` held and takes nothing after it (had it taken `w` once the
/// third caller let it go, A and B would each wait for the other's renewed lock for
/// ever: the rule itself is `many_takes_no_lock_after_one_held`). A takes `w` and
/// loads both, B reads them.
#[test]
fn a_lock_released_without_a_value_deadlocks_no_batch() {
    let server = RedisServer::start();
    let (a_client, b_client, z_client) = (
        connect(&server.url()),
        Arc::new(cache_memoize_tests::Probe::new(connect(&server.url()))),
        connect(&server.url()),
    );
    let inspect = connect(&server.url());
    let (a_opts, z_opts) = (locked(&a_client), locked(&z_client));
    let b_opts = locked(&(Arc::clone(&b_client) as Arc<dyn CacheBackend>));
    let ids = [1, 2];
    let batch = keys("cycle", ids);
    let (x, w) = (
        cache_memoize::make_cache_key(&batch[0].0),
        cache_memoize::make_cache_key(&batch[1].0),
    );
    assert!(x.as_str() < w.as_str(), "the keys' order");
    let loads = Mutex::new(Vec::new());
    let (z_holds, z_held) = mpsc::channel();
    let (fail_z, z_fails) = mpsc::channel::<()>();
    let (done, finished) = mpsc::channel();
    std::thread::scope(|s| {
        let (loads, batch, w_key) = (&loads, &batch, &batch[1].0);
        s.spawn(move || {
            let failed: Result<String, &str> = cache_memoize::try_memoize(w_key, &z_opts, || {
                let _ = z_holds.send(());
                let _ = z_fails.recv();
                Err("no value")
            });
            assert!(failed.is_err());
        });
        assert!(z_held.recv().is_ok());
        let load = |ids: &[u32]| {
            loads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(ids);
            users(ids)
        };
        let done_a = done.clone();
        s.spawn(move || {
            let got = memoize_many(batch.clone(), &a_opts, load);
            let _ = done_a.send(got);
        });
        cache_memoize_tests::wait_until("batch A holds x", || {
            inspect.get(&x.lock_key()).ok().flatten().is_some()
        });
        let done_b = done.clone();
        s.spawn(move || {
            let got = memoize_many(batch.clone(), &b_opts, load);
            let _ = done_b.send(got);
        });
        cache_memoize_tests::wait_until("batch B found x held", || {
            !b_client.keys_done_of("many").is_empty()
        });
        assert!(
            inspect.get(&w.lock_key()).ok().flatten().is_some(),
            "the third caller still holds w"
        );
        drop(fail_z);
        for _ in 0..2 {
            let got = finished.recv_timeout(Duration::from_secs(20));
            assert_eq!(got.ok(), Some(users(&ids)), "a batch finished with both");
        }
    });
    let mut loaded = loads.into_inner().unwrap_or_else(PoisonError::into_inner);
    loaded.sort_unstable();
    assert_eq!(loaded, ids, "each key loaded once");
}

/// The rule of `Op::Many` on every backend: get-or-lock parts after the first that
/// finds its lock held are not attempted (`Reply::Done`), their locks untouched.
#[test]
fn many_takes_no_lock_after_one_held() {
    let server = RedisServer::start();
    let backends: [Arc<dyn CacheBackend>; 2] = [
        connect(&server.url()),
        Arc::new(cache_memoize::MemoryBackend::new()),
    ];
    for backend in backends {
        let claim = |key: &'static str, token: &'static [u8]| cache_memoize::LockClaim {
            key,
            token,
            ttl: Duration::from_secs(30),
            value_key: &key[7..],
            fence: 0,
        };
        let held = cache_memoize::Op::GetOrLock {
            key: "{b}",
            lock: claim("_lock_:{b}", b"someone else"),
        };
        assert!(backend.execute(held).is_ok());
        let parts = [
            cache_memoize::Part::GetOrLock {
                key: "{a}",
                lock: claim("_lock_:{a}", b"me"),
            },
            cache_memoize::Part::GetOrLock {
                key: "{b}",
                lock: claim("_lock_:{b}", b"me"),
            },
            cache_memoize::Part::GetOrLock {
                key: "{c}",
                lock: claim("_lock_:{c}", b"me"),
            },
        ];
        let reply = backend.execute(cache_memoize::Op::Many { parts: &parts });
        let Ok(cache_memoize::Reply::Many(replies)) = reply else {
            panic!("a reply of another shape: {reply:?}");
        };
        assert!(
            matches!(
                replies.as_slice(),
                [
                    cache_memoize::Reply::Found(cache_memoize::GetOrLock::Locked { .. }),
                    cache_memoize::Reply::Found(cache_memoize::GetOrLock::Held),
                    cache_memoize::Reply::Done,
                ]
            ),
            "{replies:?}"
        );
        assert_eq!(
            backend.get("_lock_:{a}").ok().flatten(),
            Some(b"me".to_vec())
        );
        assert_eq!(backend.get("_lock_:{c}").ok().flatten(), None, "not taken");
    }
}

static WIRE_TAGGED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[cache_memoize::cache_memoize(batch, key = "wire-tagged:{id}", tags = ["wire-user:{id}"], lock)]
fn wire_tagged(ids: Vec<u32>) -> HashMap<u32, String> {
    WIRE_TAGGED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(ids.iter().copied());
    users(&ids)
}

fn wire_loaded() -> Vec<u32> {
    let mut ids = std::mem::take(&mut *WIRE_TAGGED.lock().unwrap_or_else(PoisonError::into_inner));
    ids.sort_unstable();
    ids
}

/// Per-element tags (the attribute's tag templates): an all-hit batch is still one
/// `MGET` (every value and each element's epochs), and invalidating one element's tag
/// makes that element alone a miss.
#[test]
fn a_batch_with_per_element_tags_is_one_mget_when_all_hit() {
    let _registry = cache_memoize_tests::registry_guard();
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    cache_memoize::set_shared_backend(connect(&proxy.url()));
    assert_eq!(wire_tagged(vec![1, 2, 3]), users(&[1, 2, 3]));
    assert_eq!(wire_loaded(), [1, 2, 3]);
    proxy.clear();
    assert_eq!(wire_tagged(vec![3, 2, 1]), users(&[1, 2, 3]));
    assert_eq!(proxy.commands(), ["MGET"], "an all-hit tagged batch");
    assert!(wire_loaded().is_empty());
    assert!(cache_memoize::invalidate_tag("wire-user:2").is_ok());
    assert_eq!(wire_tagged(vec![1, 2, 3]), users(&[1, 2, 3]));
    assert_eq!(wire_loaded(), [2], "only the element whose tag moved");
    proxy.clear();
    assert_eq!(wire_tagged(vec![1, 2, 3]), users(&[1, 2, 3]));
    assert_eq!(proxy.commands(), ["MGET"], "all hits again");
    assert!(wire_tagged_clear().is_ok());
    assert_eq!(wire_tagged(vec![1, 2]), users(&[1, 2]));
    assert_eq!(
        wire_loaded(),
        [1, 2],
        "the function's tag cleared every element"
    );
}
