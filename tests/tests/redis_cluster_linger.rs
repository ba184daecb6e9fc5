//! On a cluster, this backend's own `SUNSUBSCRIBE` (a lock's subscription
//! lingering out after its last waiter) comes back as an `sunsubscribe` push, which
//! `Hub::pushed` takes for a slot move (`on_lost(Some(key), moved = true)`): `moves` is
//! bumped even though no entry is left for the lock, so the next subscription is
//! "located" first (`CLUSTER KEYSLOT` + `CLUSTER NODES` on the slot's master) although
//! nothing moved. Only `locate` sends `CLUSTER KEYSLOT`: counted on every node.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cache_memoize::{CacheBackend, CacheLock, LockGuard, RedisBackend, make_cache_key};
use cache_memoize_tests::server::RedisCluster;
use cache_memoize_tests::wait_until;

fn connect(urls: Vec<String>) -> Arc<RedisBackend> {
    match RedisBackend::builder(urls).cluster().connect() {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect: {err}"),
    }
}

fn hold(backend: &Arc<RedisBackend>, key: &str) -> LockGuard {
    match CacheLock::new(key)
        .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
        .try_acquire()
    {
        Ok(Some(guard)) => guard,
        other => panic!("the holder takes {key}: {other:?}"),
    }
}

fn keyslot_calls(cluster: &RedisCluster) -> u64 {
    (0..3)
        .map(|node| {
            let mut conn = cluster.connection(node);
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query(&mut conn)
                .unwrap_or_default();
            info.lines()
                .find(|line| line.starts_with("cmdstat_cluster|keyslot:"))
                .and_then(|line| line.split("calls=").nth(1))
                .and_then(|rest| rest.split(',').next())
                .and_then(|calls| calls.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// `waiter` waits on `key` (whose lock's slot `owner` serves) until `holder` releases it.
fn one_wait(
    cluster: &RedisCluster,
    owner: usize,
    holder: &Arc<RedisBackend>,
    waiter: &Arc<RedisBackend>,
    key: &str,
) {
    let held = hold(holder, key);
    let lock = CacheLock::new(key)
        .backend(Arc::clone(waiter) as Arc<dyn CacheBackend>)
        .retry(Duration::from_secs(60))
        .timeout(Some(Duration::from_secs(60)));
    let waiting = thread::spawn(move || {
        let started = Instant::now();
        let taken = lock.acquire().map(LockGuard::release);
        matches!(taken, Ok(Ok(true))) && started.elapsed() < Duration::from_secs(30)
    });
    let lock_key = make_cache_key(key).lock_key();
    let channel = format!("cache-memoize:released:{lock_key}");
    let mut on_owner = cluster.connection(owner);
    wait_until("the waiter subscribes", || {
        let reply: (String, u64) = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(&channel)
            .query(&mut on_owner)
            .unwrap_or_default();
        reply.1 == 1
    });
    assert!(held.release().is_ok_and(|ours| ours));
    assert!(waiting.join().unwrap_or(false), "woken and taken");
    wait_until("the subscription lingers out", || {
        waiter.wake_up_subscriptions() == 0
    });
}

#[test]
fn a_clusters_own_unsubscriptions_do_not_make_the_next_subscription_locate_its_slot() {
    let cluster = RedisCluster::start();
    let (holder, waiter) = (connect(cluster.urls()), connect(cluster.urls()));
    // The owners are found first: the test's own `owner_of` sends `CLUSTER KEYSLOT`.
    let keys: Vec<String> = (0..=3).map(|round| format!("r7-linger-{round}")).collect();
    let owners: Vec<usize> = keys
        .iter()
        .map(|key| cluster.owner_of(&make_cache_key(key).lock_key()))
        .collect();
    one_wait(&cluster, owners[0], &holder, &waiter, &keys[0]);
    // Let the sunsubscribe push of the first linger arrive.
    thread::sleep(Duration::from_millis(500));
    let before = keyslot_calls(&cluster);
    for round in 1..=3 {
        one_wait(&cluster, owners[round], &holder, &waiter, &keys[round]);
        thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        keyslot_calls(&cluster) - before,
        0,
        "nothing moved, yet subscriptions were located (CLUSTER KEYSLOT + CLUSTER NODES each)"
    );
}
