//! Wake-ups through a failover: lock waiters on a 3-master cluster with replicas, the
//! lock's shard failed over with `CLUSTER FAILOVER`, then the lock released on the new
//! master.
//!
//! ```sh
//! cargo run --release --example failover_wake               # 10 rounds
//! cargo run --release --example failover_wake -- --rounds 20
//! cargo run --release --example failover_wake -- --kill    # a master dies instead
//! ```
//!
//! Each round runs two failovers, each with 8 waiters (2 backends × 4 threads, the
//! default `retry` of 250 ms) on a lock held by another backend:
//! - (a) the lock is released as soon as every node names the new master: how long the
//!   waiters take to return after the release (what a release right after a failover
//!   costs them; a release they missed would leave them to their retry);
//! - (b) the subscriptions are watched instead: how long after every node names the new
//!   master the waiting backends are subscribed on it (`PUBSUB SHARDNUMSUB`, polled
//!   every millisecond; given up after 5 s), then the release, and the waiters' return
//!   after it.
//!
//! With `--kill`, the master is not failed over by hand but killed (SIGKILL), and the
//! cluster (`cluster-node-timeout` 1500 ms) promotes its replica by itself; (a) and (b)
//! are counted from the moment every running node names the promoted replica. Each
//! round kills two masters (one per measurement, of different shards), on a fresh
//! cluster.
//!
//! It starts its own six `redis-server` processes (per round with `--kill`); about a
//! minute at the defaults (two with `--kill`). Quick mode (`CACHE_MEMOIZE_QUICK=1`): 1
//! round. The last line: `rounds=<n> immediate_p50_ms=<x> moved_p50_ms=<x>
//! settled_p50_ms=<x> not_moved=<n>`.

// Percentiles of small counts: float casts lose nothing.
#![allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cache_memoize::{CacheBackend, CacheLock, LockGuard, RedisBackend, make_cache_key};
use cache_memoize_harness::quick::sized;
use cache_memoize_tests::server::RedisCluster;

type Failure = Box<dyn std::error::Error>;

const BACKENDS: usize = 2;
const WAITERS_PER_BACKEND: usize = 4;
/// How long (b) waits for the subscriptions to reach the new master before it releases
/// anyway.
const NOT_MOVED: Duration = Duration::from_secs(5);

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds = match args.iter().position(|a| a == "--rounds") {
        Some(at) => args.get(at + 1).ok_or("--rounds needs a number")?.parse()?,
        None => sized(10, 1),
    };
    let kill = args.iter().any(|a| a == "--kill");
    let start = || {
        if kill {
            RedisCluster::start_with_replicas_and_node_timeout(Duration::from_millis(1500))
        } else {
            RedisCluster::start_with_replicas()
        }
    };
    let mut cluster = start();
    let connect = |cluster: &RedisCluster| -> Result<Arc<RedisBackend>, Failure> {
        Ok(Arc::new(
            RedisBackend::builder(cluster.urls()).cluster().connect()?,
        ))
    };
    let mut holder = connect(&cluster)?;
    let mut waiters: Vec<Arc<RedisBackend>> = (0..BACKENDS)
        .map(|_| connect(&cluster))
        .collect::<Result<_, _>>()?;
    let (mut immediate, mut moved, mut settled) = (Vec::new(), Vec::new(), Vec::new());
    let mut not_moved = 0;
    for round in 0..rounds {
        if kill && round > 0 {
            // Two of the three shards have lost their replica: a fresh cluster.
            drop((holder, waiters));
            cluster = start();
            holder = connect(&cluster)?;
            waiters = (0..BACKENDS)
                .map(|_| connect(&cluster))
                .collect::<Result<_, _>>()?;
        }
        let key = format!("failover-wake:{round}:a");
        let lock_key = make_cache_key(&key).lock_key();
        let round_a = Round::start(&cluster, &holder, &waiters, &key)?;
        if kill {
            cluster.kill_master_of(&lock_key);
        } else {
            cluster.fail_over(&lock_key);
        }
        immediate.extend(round_a.release()?);

        // With --kill, a key of another shard (that of `a` has no replica left).
        let shard_a = cluster.owner_of(&lock_key);
        let key = (0..1000)
            .map(|n| format!("failover-wake:{round}:b{n}"))
            .find(|key| !kill || cluster.owner_of(&make_cache_key(key).lock_key()) != shard_a)
            .ok_or("no key of another shard")?;
        let lock_key = make_cache_key(&key).lock_key();
        let round_b = Round::start(&cluster, &holder, &waiters, &key)?;
        let promoted = if kill {
            cluster.kill_master_of(&lock_key)
        } else {
            cluster.fail_over(&lock_key)
        };
        let agreed = Instant::now();
        let channel = release_channel(&key);
        let mut on_promoted = cluster.connection(promoted);
        while subscribers(&mut on_promoted, &channel) < BACKENDS as u64
            && agreed.elapsed() < NOT_MOVED
        {
            thread::sleep(Duration::from_millis(1));
        }
        if agreed.elapsed() < NOT_MOVED {
            moved.push(agreed.elapsed());
        } else {
            not_moved += 1;
        }
        settled.extend(round_b.release()?);
        eprintln!("round {round} done");
    }
    let immediate = report(
        "(a) waiters' return after a release right after the failover",
        &mut immediate,
    );
    let moved = report(
        "(b) subscriptions on the new master, after every node names it",
        &mut moved,
    );
    println!(
        "(b) rounds whose subscriptions were not on the new master within {NOT_MOVED:?}: {not_moved}"
    );
    let settled = report(
        "(b) waiters' return after the release, subscriptions moved",
        &mut settled,
    );
    println!(
        "rounds={rounds} immediate_p50_ms={immediate:.1} moved_p50_ms={moved:.1} \
         settled_p50_ms={settled:.1} not_moved={not_moved}"
    );
    Ok(())
}

/// A held lock and its waiters, subscribed on the lock's shard.
struct Round {
    held: LockGuard,
    waiters: Vec<thread::JoinHandle<Option<Instant>>>,
}

impl Round {
    fn start(
        cluster: &RedisCluster,
        holder: &Arc<RedisBackend>,
        backends: &[Arc<RedisBackend>],
        key: &str,
    ) -> Result<Self, Failure> {
        let held = CacheLock::new(key)
            .backend(Arc::clone(holder) as Arc<dyn CacheBackend>)
            .expire(Duration::from_secs(300))
            .try_acquire()?
            .ok_or("the holder takes the lock")?;
        let mut waiters = Vec::new();
        for backend in backends {
            for _ in 0..WAITERS_PER_BACKEND {
                let lock = CacheLock::new(key)
                    .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
                    .timeout(Some(Duration::from_secs(60)));
                waiters.push(thread::spawn(move || {
                    // While a dead master's slot has no master, an attempt fails (a
                    // lock's `acquire` returns the error): wait again, as a caller would.
                    let given_up = Instant::now() + Duration::from_secs(60);
                    let taken = loop {
                        match lock.acquire() {
                            Ok(taken) => break taken,
                            Err(_) if Instant::now() < given_up => {
                                thread::sleep(Duration::from_millis(10));
                            }
                            Err(_) => return None,
                        }
                    };
                    let returned = Instant::now();
                    let _ = taken.release();
                    Some(returned)
                }));
            }
        }
        let channel = release_channel(key);
        let mut nodes: Vec<redis::Connection> = cluster
            .running()
            .into_iter()
            .map(|n| cluster.connection(n))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while nodes
            .iter_mut()
            .map(|n| subscribers(n, &channel))
            .sum::<u64>()
            < BACKENDS as u64
        {
            if Instant::now() > deadline {
                return Err("the waiters did not subscribe".into());
            }
            thread::sleep(Duration::from_millis(1));
        }
        // Every waiter past its first attempt and its retry after subscribing.
        thread::sleep(Duration::from_millis(100));
        Ok(Self { held, waiters })
    }

    /// Releases the lock; each waiter's return after the release. The waiters take the
    /// lock one after the other, so only the first one's return is a wake-up.
    fn release(self) -> Result<Vec<Duration>, Failure> {
        let released = Instant::now();
        if !self.held.release()? {
            return Err("the holder's lock was lost".into());
        }
        let mut returns: Vec<Instant> = Vec::new();
        for waiter in self.waiters {
            returns.push(waiter.join().ok().flatten().ok_or("a waiter failed")?);
        }
        Ok(vec![returns.iter().min().map_or(Duration::MAX, |first| {
            first.duration_since(released)
        })])
    }
}

fn release_channel(key: &str) -> String {
    format!("cache-memoize:released:{}", make_cache_key(key).lock_key())
}

fn subscribers(conn: &mut redis::Connection, channel: &str) -> u64 {
    redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(channel)
        .query::<(String, u64)>(conn)
        .map_or(0, |reply| reply.1)
}

/// Prints `samples`' percentiles; returns their median (ms).
fn report(what: &str, samples: &mut [Duration]) -> f64 {
    samples.sort();
    let ms = |at: f64| {
        let index = ((samples.len() as f64 - 1.0) * at).round() as usize;
        samples
            .get(index)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{what}: n={} p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        samples.len(),
        ms(0.5),
        ms(0.9),
        ms(1.0)
    );
    ms(0.5)
}
