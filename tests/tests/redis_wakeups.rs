//! Wake-ups that cost nothing for those not waiting: a backend subscribes to a lock's
//! release channel only while one of its callers waits on that lock (reference-counted
//! across its waiters), on a cluster with sharded pub/sub on the lock's shard, and
//! follows the lock's slot when it moves. Every server here is private to its test.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cache_memoize::{CacheBackend, CacheLock, LockError, LockGuard, RedisBackend, make_cache_key};
use cache_memoize_tests::server::{RedisCluster, RedisServer};
use cache_memoize_tests::wait_until;

fn connect(urls: Vec<String>, cluster: bool) -> Arc<RedisBackend> {
    let builder = RedisBackend::builder(urls);
    let builder = if cluster { builder.cluster() } else { builder };
    match builder.connect() {
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

/// Waits for `key` on `backend` with a retry and timeout so long that only a wake-up
/// can end the wait early: the waiter returns whether it took the lock, and whether
/// that came before its first retry (60 s) could have.
fn wait_patiently(backend: &Arc<RedisBackend>, key: &str) -> thread::JoinHandle<bool> {
    let lock = CacheLock::new(key)
        .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
        .retry(Duration::from_secs(60))
        .timeout(Some(Duration::from_secs(60)));
    thread::spawn(move || {
        let started = Instant::now();
        let taken = lock.acquire().map(LockGuard::release);
        matches!(taken, Ok(Ok(true))) && started.elapsed() < Duration::from_secs(30)
    })
}

/// Whether the waiter was woken (not retried) and took the lock.
fn woken(waiter: thread::JoinHandle<bool>) -> bool {
    waiter.join().unwrap_or(false)
}

fn release_channel(key: &str) -> String {
    format!("cache-memoize:released:{}", make_cache_key(key).lock_key())
}

fn subscribers(conn: &mut redis::Connection, sharded: bool, channel: &str) -> u64 {
    let numsub = if sharded { "SHARDNUMSUB" } else { "NUMSUB" };
    let reply: (String, u64) = redis::cmd("PUBSUB")
        .arg(numsub)
        .arg(channel)
        .query(conn)
        .unwrap_or_default();
    reply.1
}

/// `backend` waits on `key` until `holder` releases it, and takes the lock (on the
/// single server `server`).
fn one_wait(
    server: &RedisServer,
    holder: &Arc<RedisBackend>,
    backend: &Arc<RedisBackend>,
    key: &str,
) {
    let held = hold(holder, key);
    let waiter = wait_patiently(backend, key);
    let mut inspect = server.connection();
    wait_until("the waiter subscribes", || {
        subscribers(&mut inspect, false, &release_channel(key)) == 1
    });
    assert!(held.release().is_ok_and(|ours| ours));
    assert!(woken(waiter), "woken and taken");
}

#[test]
fn a_process_waiting_on_nothing_receives_no_release_messages() {
    let server = RedisServer::start();
    let (holder, idle) = (
        connect(vec![server.url()], false),
        connect(vec![server.url()], false),
    );
    one_wait(&server, &holder, &idle, "idle-first");
    wait_until("the idle backend lets its subscription go", || {
        idle.wake_up_subscriptions() == 0
    });
    let mut inspect = server.connection();
    wait_until("the server has no subscription left", || {
        redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .query::<Vec<String>>(&mut inspect)
            .is_ok_and(|c| c.is_empty())
    });
    let before = idle.wake_up_messages();

    // Others' releases: a hundred locks taken and released by another backend.
    for n in 0..100 {
        let key = format!("others-{n}");
        assert!(hold(&holder, &key).release().is_ok_and(|ours| ours));
    }
    // One more wait by the idle backend: its messages come after any message the
    // hundred releases could have sent it on the same connection, and once its
    // subscription is dropped, all of that lock's messages have arrived.
    one_wait(&server, &holder, &idle, "idle-second");
    wait_until("the idle backend lets its subscription go again", || {
        idle.wake_up_subscriptions() == 0
    });
    assert_eq!(
        idle.wake_up_messages() - before,
        2,
        "only its own lock's releases: the holder's, then its own"
    );
    let patterns: u64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query(&mut inspect)
        .unwrap_or(u64::MAX);
    assert_eq!(patterns, 0, "no pattern subscription on the server");
}

#[test]
fn two_waiters_on_one_lock_share_the_subscription_and_one_leaving_keeps_it() {
    let server = RedisServer::start();
    let (holder, waiters) = (
        connect(vec![server.url()], false),
        connect(vec![server.url()], false),
    );
    let key = "shared-wait";
    let held = hold(&holder, key);
    let patient = wait_patiently(&waiters, key);
    let hasty = {
        let lock = CacheLock::new(key)
            .backend(Arc::clone(&waiters) as Arc<dyn CacheBackend>)
            .retry(Duration::from_millis(50))
            .timeout(Some(Duration::from_millis(300)));
        thread::spawn(move || lock.acquire())
    };
    let mut inspect = server.connection();
    wait_until("both wait on one subscription", || {
        waiters.wake_up_subscriptions() == 1
            && subscribers(&mut inspect, false, &release_channel(key)) == 1
    });
    let hasty = hasty.join().ok().map(|r| r.map(|_| ()));
    assert!(
        matches!(hasty, Some(Err(LockError::Timeout { .. }))),
        "the hasty waiter left: {hasty:?}"
    );
    // A wait on another lock, begun after the hasty waiter left: once its subscription
    // has lingered and gone, the shared one would have gone too had the hasty waiter
    // taken it along.
    one_wait(&server, &holder, &waiters, "probe");
    wait_until("the probe's subscription is gone", || {
        subscribers(&mut inspect, false, &release_channel("probe")) == 0
    });
    assert_eq!(
        subscribers(&mut inspect, false, &release_channel(key)),
        1,
        "still subscribed for the patient waiter"
    );
    assert!(held.release().is_ok_and(|ours| ours));
    assert!(woken(patient), "the patient waiter is woken");
}

#[test]
fn on_a_cluster_waiters_subscribe_on_the_locks_shard_and_follow_its_slot() {
    let cluster = RedisCluster::start();
    let (holder, waiter_backend) = (connect(cluster.urls(), true), connect(cluster.urls(), true));
    let key = "sharded-wait";
    let lock_key = make_cache_key(key).lock_key();
    let channel = release_channel(key);
    assert_eq!(cluster.slot_of(&channel), cluster.slot_of(&lock_key));
    let held = hold(&holder, key);
    let waiter = wait_patiently(&waiter_backend, key);
    let owner = cluster.owner_of(&lock_key);
    let mut on_owner = cluster.connection(owner);
    wait_until("the waiter subscribes on the lock's shard", || {
        subscribers(&mut on_owner, true, &channel) == 1
    });
    for node in 0..3 {
        let mut conn = cluster.connection(node);
        assert_eq!(
            subscribers(&mut conn, false, &channel),
            0,
            "no classic pub/sub"
        );
        if node != owner {
            assert_eq!(subscribers(&mut conn, true, &channel), 0, "only the owner");
        }
    }

    // Reshard the lock's slot: the subscription follows it to the new owner.
    let to = (owner + 1) % 3;
    cluster.move_slot_of(&lock_key, to);
    let mut on_new_owner = cluster.connection(to);
    wait_until("the subscription follows the slot", || {
        subscribers(&mut on_new_owner, true, &channel) == 1
    });
    assert!(held.release().is_ok_and(|ours| ours));
    assert!(woken(waiter), "woken on the new owner");
}

#[test]
fn a_release_between_the_failed_attempt_and_the_subscription_is_not_missed() {
    use cache_memoize::{AsyncBackend, Backend};
    let server = RedisServer::start();
    let (holder, waiter) = (
        connect(vec![server.url()], false),
        connect(vec![server.url()], false),
    );
    let lock_key = make_cache_key("race").lock_key();
    let forever = Duration::from_secs(3600);
    for asynchronous in [false, true] {
        let held = hold(&holder, "race");
        // The waiter's failed attempt...
        let attempted = Instant::now();
        assert!(waiter.get(&lock_key).is_ok_and(|v| v.is_some()));
        // ...then the release, published while the waiter is subscribed to nothing...
        assert!(held.release().is_ok_and(|ours| ours));
        // ...then the wait: it subscribes, and returns (to retry) instead of waiting
        // for a release that already happened.
        let waiting = Instant::now();
        if asynchronous {
            cache_memoize_tests::runtime()
                .block_on(waiter.wait_for_release_async(&lock_key, attempted, forever));
        } else {
            waiter.wait_for_release(&lock_key, attempted, forever);
        }
        assert!(
            waiting.elapsed() < forever / 2,
            "returned, async: {asynchronous}"
        );
        assert!(waiter.get(&lock_key).is_ok_and(|v| v.is_none()));
    }
}

#[test]
fn a_cluster_without_sharded_pub_sub_wakes_waiters_through_classic_pub_sub() {
    // What a cluster older than Redis 7 lacks: SSUBSCRIBE and SPUBLISH.
    let cluster = RedisCluster::start_with(&[
        "--rename-command",
        "SSUBSCRIBE",
        "",
        "--rename-command",
        "SPUBLISH",
        "",
    ]);
    let (holder, waiter_backend) = (connect(cluster.urls(), true), connect(cluster.urls(), true));
    let key = "classic-wait";
    let channel = release_channel(key);
    let held = hold(&holder, key);
    let waiter = wait_patiently(&waiter_backend, key);
    wait_until("the waiter subscribes, classic", || {
        (0..3).any(|node| subscribers(&mut cluster.connection(node), false, &channel) == 1)
    });
    assert!(held.release().is_ok_and(|ours| ours));
    assert!(woken(waiter), "woken through classic pub/sub");
}

#[test]
fn on_a_cluster_a_failover_of_the_locks_shard_leaves_the_waiter_its_retry() {
    // Redis 7.0 does not tell a demoted master's sharded subscribers that its slots
    // moved, and the new master's SPUBLISH reaches it only once the new master knows
    // it as its replica: a release right after a failover may go unheard. The waiter's
    // retry is the fallback, and the lock is still taken by this waiter.
    let cluster = RedisCluster::start_with_replicas();
    let (holder, waiter_backend) = (connect(cluster.urls(), true), connect(cluster.urls(), true));
    let key = "failover-wait";
    let lock_key = make_cache_key(key).lock_key();
    let channel = release_channel(key);
    let held = hold(&holder, key);
    let waiter = {
        let lock = CacheLock::new(key)
            .backend(Arc::clone(&waiter_backend) as Arc<dyn CacheBackend>)
            .retry(Duration::from_millis(200))
            .timeout(Some(Duration::from_secs(30)));
        thread::spawn(move || lock.acquire())
    };
    let master = cluster.owner_of(&lock_key);
    let mut on_master = cluster.connection(master);
    wait_until("the waiter subscribes on the lock's shard", || {
        subscribers(&mut on_master, true, &channel) == 1
    });
    let promoted = cluster.fail_over(&lock_key);
    assert_ne!(promoted, master);
    assert!(
        held.release().is_ok_and(|ours| ours),
        "released on the new master"
    );
    let taken = waiter.join().ok().map(|r| r.map(LockGuard::release));
    assert!(
        matches!(taken, Some(Ok(Ok(true)))),
        "taken after the failover: {taken:?}"
    );
}

#[test]
fn on_a_cluster_after_a_failover_has_settled_the_demoted_masters_subscription_still_hears() {
    let cluster = RedisCluster::start_with_replicas();
    let (holder, waiter_backend) = (connect(cluster.urls(), true), connect(cluster.urls(), true));
    let key = "failover-settled";
    let lock_key = make_cache_key(key).lock_key();
    let channel = release_channel(key);
    let held = hold(&holder, key);
    let waiter = wait_patiently(&waiter_backend, key);
    let master = cluster.owner_of(&lock_key);
    let mut on_master = cluster.connection(master);
    wait_until("the waiter subscribes on the lock's shard", || {
        subscribers(&mut on_master, true, &channel) == 1
    });
    let promoted = cluster.fail_over(&lock_key);
    wait_until("the new master knows its replica", || {
        cluster.is_replica_of(master, promoted)
    });
    assert!(held.release().is_ok_and(|ours| ours));
    assert!(woken(waiter), "woken through the shard's new master");
}
