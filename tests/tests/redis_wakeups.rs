//! Wake-ups that cost nothing for those not waiting: a backend subscribes to a lock's
//! release channel only while one of its callers waits on that lock (reference-counted
//! across its waiters), on a cluster with sharded pub/sub on the lock's shard, and
//! follows the lock's slot when it moves (resharding, `CLUSTER FAILOVER`, a master that
//! dies and is replaced by its replica). Every server here is private to its test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use cache_memoize::{
    CacheBackend, CacheLock, LockError, LockGuard, LockOptions, MemoizeOptions, RedisBackend,
    make_cache_key, memoize,
};
use cache_memoize_tests::server::{RedisCluster, RedisServer};
use cache_memoize_tests::{Probe, wait_until};

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

/// A waiter woken by its holder's release returns the value the release carried: no
/// command after the wake-up (one read, the attempt, the retry once subscribed).
#[test]
fn a_waiter_returns_the_value_its_holders_release_delivered_without_reading_it() {
    delivered_without_reading(|builder| builder);
}

/// The same under encryption at rest: the delivered value is opened as a read is.
#[cfg(feature = "encryption")]
#[test]
fn under_encryption_a_delivered_value_is_opened_as_a_read_is() {
    delivered_without_reading(|builder| {
        builder.encryption(cache_memoize::Encryption::new([0x4e; 32]).key(1, [0x11; 32]))
    });
}

fn delivered_without_reading(
    configure: impl Fn(cache_memoize::RedisBuilder) -> cache_memoize::RedisBuilder,
) {
    use cache_memoize_tests::proxy::CountingProxy;
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let backend = |url: String| {
        let builder = configure(RedisBackend::builder([url]));
        match builder.connect() {
            Ok(backend) => Arc::new(backend),
            Err(err) => panic!("cannot connect: {err}"),
        }
    };
    let holder = backend(server.url());
    let waiter = backend(proxy.url());
    let opts = |backend: &Arc<RedisBackend>| {
        MemoizeOptions::new()
            .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
            .lock(LockOptions {
                timeout: Some(Duration::from_secs(60)),
                retry: Duration::from_secs(60),
                ..LockOptions::default()
            })
    };
    let (holder_opts, waiter_opts) = (opts(&holder), opts(&waiter));
    let (computing, computes) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let mut inspect = server.connection();
    let evalsha = || {
        proxy
            .commands()
            .iter()
            .filter(|name| name.as_str() == "EVALSHA")
            .count()
    };
    thread::scope(|scope| {
        let holder_opts = &holder_opts;
        let held = scope.spawn(move || {
            memoize("delivered", holder_opts, || {
                let _ = computing.send(());
                let _ = released.recv();
                7_u32
            })
        });
        assert!(computes.recv().is_ok(), "the holder computes");
        let started = Instant::now();
        let woken = scope.spawn(|| memoize("delivered", &waiter_opts, || 0_u32));
        // (Under encryption the channel's name is hashed: any release channel.)
        wait_until("the waiter subscribes and retries", || {
            let channels: Vec<String> = redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .arg("cache-memoize:released:*")
                .query(&mut inspect)
                .unwrap_or_default();
            channels.len() == 1 && evalsha() == 2
        });
        assert!(release.send(()).is_ok());
        assert_eq!(held.join().ok(), Some(7));
        assert_eq!(woken.join().ok(), Some(7), "the holder's value");
        assert!(started.elapsed() < Duration::from_secs(30), "woken");
    });
    let commands = proxy.commands();
    let count = |name: &str| commands.iter().filter(|c| c.as_str() == name).count();
    assert_eq!(
        (count("GET"), count("EVALSHA")),
        (1, 2),
        "nothing read after the wake-up: {commands:?}"
    );
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

/// A retry so long that a waiter returning before it was woken, not timed out: a
/// waiter woken by its retry timer would have waited at least this long.
const PATIENCE: Duration = Duration::from_secs(120);

/// A stampede on one memoized key of a cluster: a leader computing (on its own
/// backend) until told to finish, and waiters on two other backends ("processes").
struct Stampede {
    key: String,
    computes: Arc<AtomicUsize>,
    finish: mpsc::Sender<()>,
    leader: thread::JoinHandle<String>,
    waiter_backends: Vec<Arc<RedisBackend>>,
    /// Each waiter's value, and how long it waited.
    waiters: Vec<thread::JoinHandle<(String, Duration)>>,
}

const WAITER_BACKENDS: usize = 2;
const WAITERS_PER_BACKEND: usize = 4;

impl Stampede {
    /// Starts the leader, then the waiters, and returns once every waiter has entered
    /// its wait and each waiter backend is subscribed on the lock's shard.
    fn start(cluster: &RedisCluster, key: &str) -> Self {
        let computes = Arc::new(AtomicUsize::new(0));
        let options = |backend: Arc<dyn CacheBackend>| {
            MemoizeOptions::new().backend(backend).lock(LockOptions {
                expire: PATIENCE * 2,
                timeout: Some(PATIENCE),
                retry: PATIENCE,
                blocking: true,
            })
        };
        let (finish, finished) = mpsc::channel::<()>();
        let (computing, started) = mpsc::channel::<()>();
        let leader = {
            let opts = options(connect(cluster.urls(), true));
            let (key, computes) = (key.to_owned(), Arc::clone(&computes));
            thread::spawn(move || {
                memoize(&key, &opts, || {
                    computes.fetch_add(1, Ordering::SeqCst);
                    let _ = computing.send(());
                    let _ = finished.recv();
                    "the leader's".to_owned()
                })
            })
        };
        assert!(started.recv().is_ok(), "the leader computes");
        let waiter_backends: Vec<Arc<RedisBackend>> = (0..WAITER_BACKENDS)
            .map(|_| connect(cluster.urls(), true))
            .collect();
        let mut waiters = Vec::new();
        let mut probes = Vec::new();
        for backend in &waiter_backends {
            for _ in 0..WAITERS_PER_BACKEND {
                // A probe of its own per waiter: callers of one key on one backend handle
                // coalesce in-process, and these must each wait on the Redis lock (sharing
                // their backend's subscription).
                let probe = Arc::new(Probe::new(Arc::clone(backend) as Arc<dyn CacheBackend>));
                let opts = options(Arc::clone(&probe) as Arc<dyn CacheBackend>);
                let (key, computes) = (key.to_owned(), Arc::clone(&computes));
                waiters.push(thread::spawn(move || {
                    let started = Instant::now();
                    let value = memoize(&key, &opts, || {
                        computes.fetch_add(1, Ordering::SeqCst);
                        "a waiter's".to_owned()
                    });
                    (value, started.elapsed())
                }));
                probes.push(probe);
            }
        }
        let lock_key = make_cache_key(key).lock_key();
        let channel = release_channel(key);
        let mut on_owner = cluster.connection(cluster.owner_of(&lock_key));
        wait_until("every waiter waits, subscribed on the lock's shard", || {
            probes.iter().all(|p| p.ops().contains(&"wait"))
                && subscribers(&mut on_owner, true, &channel) == WAITER_BACKENDS as u64
        });
        Self {
            key: key.to_owned(),
            computes,
            finish,
            leader,
            waiter_backends,
            waiters,
        }
    }

    /// Waits until the waiter backends' subscriptions are on node `owner` and on no
    /// other running node.
    fn wait_for_subscriptions_on(&self, cluster: &RedisCluster, owner: usize) {
        let channel = release_channel(&self.key);
        wait_until("the subscriptions follow the lock's slot", || {
            cluster.running().into_iter().all(|node| {
                let expected = if node == owner {
                    WAITER_BACKENDS as u64
                } else {
                    0
                };
                subscribers(&mut cluster.connection(node), true, &channel) == expected
            })
        });
    }

    /// The leader stores and releases (on node `owner`); every waiter must be woken by
    /// the release message, get the leader's value, and nobody else computes.
    fn finish_and_check(self, cluster: &RedisCluster, owner: usize) {
        let before: Vec<u64> = self
            .waiter_backends
            .iter()
            .map(|b| b.wake_up_messages())
            .collect();
        assert!(self.finish.send(()).is_ok(), "the leader finishes");
        assert_eq!(self.leader.join().ok().as_deref(), Some("the leader's"));
        for waiter in self.waiters {
            let Ok((value, waited)) = waiter.join() else {
                panic!("a waiter panicked")
            };
            assert_eq!(value, "the leader's", "every waiter gets the value");
            assert!(
                waited < PATIENCE,
                "woken, not retried by its timer: waited {waited:?}"
            );
        }
        assert_eq!(self.computes.load(Ordering::SeqCst), 1, "computed once");
        let key = make_cache_key(&self.key);
        let mut on_owner = cluster.connection(owner);
        let exists = |conn: &mut redis::Connection, key: &str| -> i64 {
            redis::cmd("EXISTS").arg(key).query(conn).unwrap_or(-1)
        };
        assert_eq!(
            exists(&mut on_owner, key.as_str()),
            1,
            "stored on the owner now"
        );
        assert_eq!(
            exists(&mut on_owner, &key.lock_key()),
            0,
            "the lock is gone"
        );
        for (backend, before) in self.waiter_backends.iter().zip(before) {
            assert!(
                backend.wake_up_messages() > before,
                "each waiting backend heard the release"
            );
        }
    }
}

#[test]
fn on_a_cluster_after_a_failover_waiters_are_woken_through_the_new_master() {
    let cluster = RedisCluster::start_with_replicas();
    let key = "failover-stampede";
    let lock_key = make_cache_key(key).lock_key();
    let stampede = Stampede::start(&cluster, key);
    let master = cluster.owner_of(&lock_key);
    let promoted = cluster.fail_over(&lock_key);
    assert_ne!(promoted, master);
    // The demoted master drops the subscriptions (Redis 7.0.15 sends `sunsubscribe`),
    // and each backend subscribes on the new master, not on the demoted one.
    stampede.wait_for_subscriptions_on(&cluster, promoted);
    stampede.finish_and_check(&cluster, promoted);
}

#[test]
fn on_a_cluster_after_a_resharding_step_waiters_are_woken_through_the_new_owner() {
    let cluster = RedisCluster::start();
    let key = "reshard-stampede";
    let lock_key = make_cache_key(key).lock_key();
    let stampede = Stampede::start(&cluster, key);
    let to = (cluster.owner_of(&lock_key) + 1) % 3;
    cluster.move_slot_of(&lock_key, to);
    stampede.wait_for_subscriptions_on(&cluster, to);
    stampede.finish_and_check(&cluster, to);
}

#[test]
fn on_a_cluster_after_its_master_dies_waiters_are_woken_through_the_promoted_replica() {
    // A short node timeout: the master counts as failed after 1.5 s of silence.
    let mut cluster =
        RedisCluster::start_with_replicas_and_node_timeout(Duration::from_millis(1500));
    let key = "dead-master-stampede";
    let lock_key = make_cache_key(key).lock_key();
    let stampede = Stampede::start(&cluster, key);
    let master = cluster.owner_of(&lock_key);
    // No `sunsubscribe` this time: the subscribers' connections to the master break,
    // and the slot has no master until the replica is promoted.
    let promoted = cluster.kill_master_of(&lock_key);
    assert_ne!(promoted, master);
    // Each backend subscribes again on the promoted replica, not on a stale owner.
    stampede.wait_for_subscriptions_on(&cluster, promoted);
    stampede.finish_and_check(&cluster, promoted);
}

/// A waiter whose attempt was sent with its lock's subscription live pauses until the
/// release (or the lock's expiry), not its `retry`: with a 20 ms `retry`, it sends its
/// read, its attempt and the attempt once subscribed, then nothing through the
/// holder's computation but its check once a second (`WATCHED_CHECK`: a polling
/// waiter would send about twenty attempts in the 400 ms observed), and returns the
/// value the release delivered, sending nothing after it. Blocking and async.
#[test]
fn a_subscribed_waiter_sends_no_poll_before_the_release() {
    use cache_memoize_tests::proxy::CountingProxy;
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let holder = connect(vec![server.url()], false);
    let waiter = connect(vec![proxy.url()], false);
    let opts = |backend: &Arc<RedisBackend>| {
        MemoizeOptions::new()
            .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
            .lock(LockOptions {
                timeout: Some(Duration::from_secs(60)),
                retry: Duration::from_millis(20),
                ..LockOptions::default()
            })
    };
    let (holder_opts, waiter_opts) = (opts(&holder), opts(&waiter));
    let count = |name: &str| {
        proxy
            .commands()
            .iter()
            .filter(|c| c.as_str() == name)
            .count()
    };
    for asynchronous in [false, true] {
        proxy.clear();
        let key = format!("no-poll-{asynchronous}");
        let (computing, computes) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        thread::scope(|scope| {
            let (key, holder_opts, waiter_opts) = (&key, &holder_opts, &waiter_opts);
            let held = scope.spawn(move || {
                memoize(key, holder_opts, || {
                    let _ = computing.send(());
                    let _ = released.recv();
                    7_u32
                })
            });
            assert!(computes.recv().is_ok(), "the holder computes");
            let spawned = Instant::now();
            let woken = scope.spawn(move || {
                if asynchronous {
                    cache_memoize_tests::runtime().block_on(cache_memoize::memoize_async(
                        key,
                        waiter_opts,
                        || async { 0_u32 },
                    ))
                } else {
                    memoize(key, waiter_opts, || 0_u32)
                }
            });
            wait_until("the waiter subscribes and attempts again", || {
                count("EVALSHA") == 2
            });
            // The interval observed: twenty retries long, so a poll would show.
            thread::sleep(Duration::from_millis(400));
            let before_release = (count("GET"), count("EVALSHA"), count("SUBSCRIBE"));
            // The checks once a second a busy machine may have let in (the test's own
            // wait above can be slow to see the second attempt).
            let checks = usize::try_from(spawned.elapsed().as_secs()).unwrap_or(usize::MAX);
            assert!(release.send(()).is_ok());
            assert_eq!(held.join().ok(), Some(7));
            assert_eq!(woken.join().ok(), Some(7), "the holder's value");
            let (gets, attempts, subscribes) = before_release;
            assert!(
                gets == 1 && subscribes == 1 && (2..=2 + checks).contains(&attempts),
                "no poll while subscribed, {checks} checks allowed (async: {asynchronous}): {:?}",
                proxy.commands()
            );
            let checks = usize::try_from(spawned.elapsed().as_secs()).unwrap_or(usize::MAX);
            assert!(
                count("GET") == 1 && count("EVALSHA") <= 2 + checks,
                "nothing sent after the wake-up but its checks (async: {asynchronous}): {:?}",
                proxy.commands()
            );
        });
    }
}

/// A holder that died (its lock never released) is noticed when its lock expires: a
/// subscribed waiter with a 60 s `retry` takes the lock over then, after three
/// attempts (the first, the one once subscribed, the one at the expiry).
#[test]
fn a_dead_holders_lock_is_taken_over_when_it_expires_not_at_the_retry() {
    use cache_memoize_tests::proxy::CountingProxy;
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port());
    let waiter = connect(vec![proxy.url()], false);
    let mut inspect = server.connection();
    let life = Duration::from_millis(1500);
    let _: () = redis::cmd("SET")
        .arg(make_cache_key("dead-holder").lock_key())
        .arg("a holder that died")
        .arg("PX")
        .arg(life.as_millis().to_string())
        .query(&mut inspect)
        .unwrap_or_else(|err| panic!("cannot leave the dead holder's lock: {err}"));
    let opts = MemoizeOptions::new()
        .backend(Arc::clone(&waiter) as Arc<dyn CacheBackend>)
        .lock(LockOptions {
            timeout: Some(Duration::from_secs(60)),
            retry: Duration::from_secs(60),
            ..LockOptions::default()
        });
    let started = Instant::now();
    let value = memoize("dead-holder", &opts, || 3_u32);
    let took = started.elapsed();
    assert_eq!(value, 3, "computed under the lock taken over");
    assert!(
        took + Duration::from_millis(50) >= life && took < Duration::from_secs(10),
        "taken over at the lock's expiry, not the retry: {took:?}"
    );
    let commands = proxy.commands();
    let count = |name: &str| commands.iter().filter(|c| c.as_str() == name).count();
    // The attempts, and the store (each script's first `EVALSHA` here is answered
    // `NOSCRIPT`, then loaded with `SCRIPT LOAD` and sent again): one more attempt at
    // most, if the waiter woke in the lock's last millisecond.
    let scripts_run = count("EVALSHA") - count("SCRIPT");
    assert!(
        count("GET") == 1 && (4..=5).contains(&scripts_run),
        "{commands:?}"
    );
}
