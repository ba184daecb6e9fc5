//! The memory hit and its floor, as a plain loop for an instruction counter
//! (`valgrind --tool=callgrind`), which is deterministic where wall-clock timings on a
//! shared machine are not. See BENCHMARKS.md ("The sequence core's hit cost").
//!
//! ```sh
//! cargo build --release -p cache-memoize-benches --bin hit_instructions [--features metrics]
//! valgrind --tool=callgrind target/release/hit_instructions floor 100000
//! valgrind --tool=callgrind target/release/hit_instructions floor 200000
//! valgrind --tool=callgrind target/release/hit_instructions ours 100000
//! valgrind --tool=callgrind target/release/hit_instructions ours 200000
//! ```
//!
//! Instructions per hit = (total at 200,000 − total at 100,000) ÷ 100,000 (set-up
//! cancels out). `time` instead of `floor`/`ours` prints the best of `n` rounds of
//! 2,000 hits of each, interleaved, in nanoseconds; `time-redis` the same for a Redis
//! hit (a private `redis-server`) against a raw `GET` + decode, 200 hits a round;
//! `time-near` a near-cache hit against a `MemoryBackend` hit and a plain Redis hit, at
//! 100 B and 10 KB; `time-near-tagged` a tagged near-cache hit (one tag, two) against an
//! untagged one, 100 B.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cache_memoize::{MemoizeOptions, MemoryBackend, RedisBackend, memoize};
use cache_memoize_benches::{Report, decode, encode, report};
use cache_memoize_tests::server::RedisServer;

const KEY: &str = "memory:100";

fn floor_hit(map: &Mutex<HashMap<String, Vec<u8>>>, key: &String) -> Option<Report> {
    let bytes = map.lock().ok().and_then(|m| m.get(key).cloned());
    bytes.and_then(|bytes| decode(&bytes))
}

fn our_hit(opts: &MemoizeOptions) -> Report {
    memoize::<Report, _>(KEY, opts, || unreachable!("a hit"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let key = KEY.to_owned();
    let map = Mutex::new(HashMap::from([(key.clone(), encode(&report(100)))]));
    let opts = MemoizeOptions::new().backend(Arc::new(MemoryBackend::new()));
    let _: Report = memoize(KEY, &opts, || report(100));
    let mut total = 0;
    match mode.as_str() {
        "floor" => {
            for _ in 0..n {
                total += black_box(floor_hit(&map, &key)).map_or(0, |r| r.body.len());
            }
        }
        "ours" => {
            for _ in 0..n {
                total += black_box(our_hit(&opts)).body.len();
            }
        }
        "time" => {
            let (mut floor, mut ours) = (f64::MAX, f64::MAX);
            for _ in 0..n {
                floor = floor.min(best_of(1, 2_000, || {
                    floor_hit(&map, &key).map_or(0, |r| r.body.len())
                }));
                ours = ours.min(best_of(1, 2_000, || our_hit(&opts).body.len()));
            }
            println!(
                "floor {floor:.1} ns, ours {ours:.1} ns: {:.2}x",
                ours / floor
            );
        }
        "time-redis" => time_redis(n),
        "time-tagged" => time_tagged(n),
        "time-near" => time_near(n),
        "time-near-tagged" => time_near_tagged(n),
        "near" => near_hits(n, false),
        "kept" => near_hits(n, true),
        _ => {
            eprintln!(
                "usage: hit_instructions floor|ours|time|time-redis|time-tagged|time-near|time-near-tagged|near|kept [n]"
            );
        }
    }
    black_box(total);
}

/// A Redis hit against the raw `GET` + decode floor, interleaved, best of `rounds`.
fn time_redis(rounds: usize) {
    let server = RedisServer::start();
    let backend = match RedisBackend::connect(&server.url()) {
        Ok(backend) => backend,
        Err(err) => return eprintln!("cannot connect: {err}"),
    };
    let opts = MemoizeOptions::new().backend(Arc::new(backend));
    let mut raw = server.connection();
    let _: Report = memoize(KEY, &opts, || report(100));
    let raw_key = "raw:100";
    let _: redis::RedisResult<()> = redis::cmd("SET")
        .arg(raw_key)
        .arg(encode(&report(100)))
        .query(&mut raw);
    let (mut floor, mut ours) = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        floor = floor.min(best_of(1, 200, || {
            let bytes: Option<Vec<u8>> = redis::cmd("GET").arg(raw_key).query(&mut raw).ok();
            bytes.and_then(|b| decode(&b)).map_or(0, |r| r.body.len())
        }));
        ours = ours.min(best_of(1, 200, || our_hit(&opts).body.len()));
    }
    println!(
        "raw GET {:.1} us, ours {:.1} us: {:.2}x",
        floor / 1e3,
        ours / 1e3,
        ours / floor
    );
}

/// A tagged Redis hit (one tag, then two) against an untagged one of the same value,
/// interleaved, best of `rounds`; then the same on a `MemoryBackend`.
fn time_tagged(rounds: usize) {
    let server = RedisServer::start();
    let backend = match RedisBackend::connect(&server.url()) {
        Ok(backend) => Arc::new(backend),
        Err(err) => return eprintln!("cannot connect: {err}"),
    };
    let backends: [(&str, Arc<dyn cache_memoize::CacheBackend>); 2] = [
        ("redis", backend),
        ("memory", Arc::new(MemoryBackend::new())),
    ];
    for (name, backend) in backends {
        let plain = MemoizeOptions::new().backend(Arc::clone(&backend));
        let one = plain.clone().tags(["user:7"]);
        let two = plain.clone().tags(["user:7", "tenant:1"]);
        let keys = ["tagged:0", "tagged:1", "tagged:2"];
        for (key, opts) in keys.iter().zip([&plain, &one, &two]) {
            let _: Report = memoize(key, opts, || report(100));
        }
        let per_round = if name == "redis" { 200 } else { 2_000 };
        let mut best = [f64::MAX; 3];
        for _ in 0..rounds {
            for (i, (key, opts)) in keys.iter().zip([&plain, &one, &two]).enumerate() {
                best[i] = best[i].min(best_of(1, per_round, || {
                    memoize::<Report, _>(key, opts, || unreachable!("a hit"))
                        .body
                        .len()
                }));
            }
        }
        println!(
            "{name}: untagged {:.0} ns, one tag {:.0} ns ({:.2}x), two tags {:.0} ns ({:.2}x)",
            best[0],
            best[1],
            best[1] / best[0],
            best[2],
            best[2] / best[0]
        );
    }
}

/// Best of `rounds` of `per_round` calls of `hit`, in nanoseconds per call.
fn best_of(rounds: usize, per_round: u32, mut hit: impl FnMut() -> usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let started = Instant::now();
        for _ in 0..per_round {
            black_box(hit());
        }
        best = best.min(started.elapsed().as_secs_f64() * 1e9 / f64::from(per_round));
    }
    best
}

/// The `Report` of `size` bytes at the same key as the other near hits, memoized with
/// `keep_decoded` (against the registered backend).
#[cache_memoize::cache_memoize(key = "near:{size}", shared_key, keep_decoded)]
fn kept_report(size: usize) -> Report {
    report(size)
}

/// `n` near-cache hits of a 10 KB value (`kept`: of a 100 B value, memoized with
/// `keep_decoded`), for the instruction counter.
fn near_hits(n: usize, kept: bool) {
    let server = RedisServer::start();
    let near = RedisBackend::builder([server.url()])
        .near_cache(cache_memoize::NearCache::new())
        .connect();
    let Ok(near) = near else {
        return eprintln!("cannot connect");
    };
    let near = Arc::new(near);
    while !near.is_near_cache_live() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let opts =
        MemoizeOptions::new().backend(Arc::clone(&near) as Arc<dyn cache_memoize::CacheBackend>);
    let key = "near:10000";
    let _: Report = memoize(key, &opts, || report(10_000));
    let _: Report = memoize(key, &opts, || report(10_000));
    cache_memoize::set_shared_backend(Arc::clone(&near) as Arc<dyn cache_memoize::CacheBackend>);
    let _ = (kept_report(100), kept_report(100));
    let mut total = 0;
    for _ in 0..n {
        total += if kept {
            black_box(kept_report(100)).body.len()
        } else {
            black_box(memoize::<Report, _>(key, &opts, || unreachable!("a hit")))
                .body
                .len()
        };
    }
    println!("near hits {} of {n}", near.near_cache_hits());
    black_box(total);
}

/// A near-cache hit against a `MemoryBackend` hit and a plain Redis hit.
fn time_near(rounds: usize) {
    let server = RedisServer::start();
    let near = RedisBackend::builder([server.url()])
        .near_cache(cache_memoize::NearCache::new())
        .connect();
    let (Ok(near), Ok(plain)) = (near, RedisBackend::connect(&server.url())) else {
        return eprintln!("cannot connect");
    };
    let near = Arc::new(near);
    while !near.is_near_cache_live() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let near_opts =
        MemoizeOptions::new().backend(Arc::clone(&near) as Arc<dyn cache_memoize::CacheBackend>);
    // `kept_report` (`keep_decoded`) runs against the registered backend: the near one.
    cache_memoize::set_shared_backend(Arc::clone(&near) as Arc<dyn cache_memoize::CacheBackend>);
    let plain_opts = MemoizeOptions::new().backend(Arc::new(plain));
    let memory_opts = MemoizeOptions::new().backend(Arc::new(MemoryBackend::new()));
    for size in [100, 10_000] {
        let key = format!("near:{size}");
        for opts in [&near_opts, &memory_opts] {
            let _: Report = memoize(&key, opts, || report(size));
        }
        // The near copy is made by a read after the store.
        let _: Report = memoize(&key, &near_opts, || report(size));
        let hit = |opts: &MemoizeOptions| {
            memoize::<Report, _>(&key, opts, || unreachable!("a hit"))
                .body
                .len()
        };
        let _ = kept_report(size);
        // Each round's time per call, for each kind of hit: best and median of rounds.
        let mut rounds_ns: [Vec<f64>; 4] = Default::default();
        for _ in 0..rounds {
            rounds_ns[0].push(best_of(1, 2_000, || hit(&near_opts)));
            rounds_ns[1].push(best_of(1, 2_000, || kept_report(size).body.len()));
            rounds_ns[2].push(best_of(1, 2_000, || hit(&memory_opts)));
            rounds_ns[3].push(best_of(1, 20, || hit(&plain_opts)));
        }
        for (label, pick) in [("best", 0.0), ("median", 0.5)] {
            let [near_ns, kept_ns, memory_ns, redis_ns] =
                rounds_ns.clone().map(|mut ns| quantile(&mut ns, pick));
            println!(
                "{size} B, {label} of {rounds} rounds: near {near_ns:.0} ns, near keep_decoded {kept_ns:.0} ns, memory {memory_ns:.0} ns, Redis {redis_ns:.0} ns: near/memory {:.2}x, kept/memory {:.2}x, Redis/near {:.1}x, Redis/kept {:.1}x",
                near_ns / memory_ns,
                kept_ns / memory_ns,
                redis_ns / near_ns,
                redis_ns / kept_ns,
            );
        }
    }
}

/// Near-cache hits of a 100 B value untagged, with one tag and with two (all served
/// near: the value and its epochs from the near copies), 2,000 a round, interleaved:
/// best and median of `rounds`, and the near hits counted against the calls made.
fn time_near_tagged(rounds: usize) {
    let server = RedisServer::start();
    let near = RedisBackend::builder([server.url()])
        .near_cache(cache_memoize::NearCache::new())
        .connect();
    let Ok(near) = near else {
        return eprintln!("cannot connect");
    };
    let near = Arc::new(near);
    while !near.is_near_cache_live() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let plain =
        MemoizeOptions::new().backend(Arc::clone(&near) as Arc<dyn cache_memoize::CacheBackend>);
    let one = plain.clone().tags(["user:7"]);
    let two = plain.clone().tags(["user:7", "tenant:1"]);
    let keys = ["near-tagged:0", "near-tagged:1", "near-tagged:2"];
    for (key, opts) in keys.iter().zip([&plain, &one, &two]) {
        let _: Report = memoize(key, opts, || report(100));
        // The near copies are made by a read after the store (and its messages).
        for _ in 0..100 {
            let _: Report = memoize(key, opts, || report(100));
        }
    }
    let hits_before = near.near_cache_hits();
    let mut rounds_ns: [Vec<f64>; 3] = Default::default();
    for _ in 0..rounds {
        for (i, (key, opts)) in keys.iter().zip([&plain, &one, &two]).enumerate() {
            rounds_ns[i].push(best_of(1, 2_000, || {
                memoize::<Report, _>(key, opts, || unreachable!("a hit"))
                    .body
                    .len()
            }));
        }
    }
    let calls = rounds * 3 * 2_000;
    let near_hits = near.near_cache_hits() - hits_before;
    for (label, pick) in [("best", 0.0), ("median", 0.5)] {
        let [untagged, one_tag, two_tags] = rounds_ns.clone().map(|mut ns| quantile(&mut ns, pick));
        println!(
            "near, {label} of {rounds} rounds: untagged {untagged:.0} ns, one tag {one_tag:.0} ns ({:.2}x), two tags {two_tags:.0} ns ({:.2}x)",
            one_tag / untagged,
            two_tags / untagged,
        );
    }
    println!("near hits {near_hits} of {calls} calls");
}

/// The `q` quantile (0: the least) of `values`.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )] // a small, non-negative index
    let index = ((values.len().saturating_sub(1)) as f64 * q).round() as usize;
    values.get(index).copied().unwrap_or(f64::NAN)
}
