//! In-process hits under threads, side by side in one process (issue 24): hits per
//! second of `memoize` on a `MemoryBackend`, of `memoize` served by a near cache (a
//! `RedisBackend` on a private `redis-server`), of `moka::sync::Cache` get + bincode
//! decode, and of a `Mutex<HashMap>` get + decode (the floor), with 1, 2, 4 and 8
//! threads, on one hot key and on 64 keys, 100 B values. See BENCHMARKS.md ("Hits
//! under threads").
//!
//! ```sh
//! cargo run --release -p cache-memoize-benches --bin scaling            # ~1 min
//! CACHE_MEMOIZE_QUICK=1 cargo run --release -p cache-memoize-benches --bin scaling
//! cargo run --release -p cache-memoize-benches --bin scaling -- --no-near
//! ```
//!
//! Each cell runs its threads for a fixed time; the contenders take turns within each
//! round (so load on a shared machine falls on all of them), and a cell reports the
//! best of its rounds.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use cache_memoize::{
    CacheBackend, MemoizeOptions, MemoryBackend, NearCache, RedisBackend, memoize,
};
use cache_memoize_benches::{Report, decode, encode, report};
use cache_memoize_tests::server::RedisServer;

const THREADS: [usize; 4] = [1, 2, 4, 8];
const CONTENDERS: [&str; 4] = ["ours memory", "ours near", "moka", "mutex floor"];

/// The keys a workload cycles through.
fn keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("scale:{i}")).collect()
}

/// Hits per second of `hit` on `threads` threads for `period`; thread `t` starts at
/// key `t` and steps through `keys` (one key: all on it).
fn rate(
    threads: usize,
    period: Duration,
    keys: &[String],
    hit: &(dyn Fn(&str) -> usize + Sync),
) -> f64 {
    let stop = AtomicBool::new(false);
    let start = Barrier::new(threads + 1);
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, start) = (&stop, &start);
                scope.spawn(move || {
                    let mut at = t % keys.len();
                    let mut hits = 0_u64;
                    start.wait();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            black_box(hit(&keys[at]));
                            at += 1;
                            if at == keys.len() {
                                at = 0;
                            }
                        }
                        hits += 64;
                    }
                    hits
                })
            })
            .collect();
        start.wait();
        std::thread::sleep(period);
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let total = counts.iter().sum::<u64>() as f64;
    total / period.as_secs_f64()
}

fn near_backend(server: &RedisServer) -> Option<Arc<RedisBackend>> {
    let near = RedisBackend::builder([server.url()])
        .near_cache(NearCache::new())
        .connect()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !near.is_near_cache_live() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Some(Arc::new(near))
}

#[allow(clippy::too_many_lines)]
fn main() {
    let quick = std::env::var_os("CACHE_MEMOIZE_QUICK").is_some();
    let with_near = !std::env::args().any(|arg| arg == "--no-near");
    let (period, rounds) = if quick {
        (Duration::from_millis(100), 1)
    } else {
        (Duration::from_millis(300), 3)
    };
    let server = with_near.then(RedisServer::start);
    let near = server.as_ref().and_then(near_backend);
    let memory_opts = MemoizeOptions::new().backend(Arc::new(MemoryBackend::new()));
    let near_opts = near
        .as_ref()
        .map(|near| MemoizeOptions::new().backend(Arc::clone(near) as Arc<dyn CacheBackend>));
    let all = keys(64);
    let bytes = encode(&report(100));
    let moka: moka::sync::Cache<String, Vec<u8>> = moka::sync::Cache::new(100_000);
    let map: Mutex<HashMap<String, Vec<u8>>> = Mutex::new(HashMap::new());
    for key in &all {
        let _: Report = memoize(key, &memory_opts, || report(100));
        if let (Some(opts), Some(near)) = (&near_opts, &near) {
            let _: Report = memoize(key, opts, || report(100));
            // The near copy is made by a read after the store.
            let deadline = Instant::now() + Duration::from_secs(10);
            let before = near.near_cache_hits();
            while near.near_cache_hits() == before && Instant::now() < deadline {
                let _: Report = memoize(key, opts, || report(100));
            }
        }
        moka.insert(key.clone(), bytes.clone());
        if let Ok(mut map) = map.lock() {
            map.insert(key.clone(), bytes.clone());
        }
    }
    let ours = |opts: &MemoizeOptions, key: &str| {
        memoize::<Report, _>(key, opts, || unreachable!("a hit"))
            .body
            .len()
    };
    let hit_memory = |key: &str| ours(&memory_opts, key);
    let hit_near = |key: &str| near_opts.as_ref().map_or(0, |opts| ours(opts, key));
    let hit_moka = |key: &str| {
        moka.get(key)
            .and_then(|bytes| decode(&bytes))
            .map_or(0, |r| r.body.len())
    };
    let hit_map = |key: &str| {
        let bytes = map.lock().ok().and_then(|map| map.get(key).cloned());
        bytes
            .and_then(|bytes| decode(&bytes))
            .map_or(0, |r| r.body.len())
    };
    let hits: [&(dyn Fn(&str) -> usize + Sync); 4] = [&hit_memory, &hit_near, &hit_moka, &hit_map];
    println!(
        "{} rounds of {} ms per cell; near cache: {}",
        rounds,
        period.as_millis(),
        if near.is_some() { "on" } else { "off" }
    );
    println!(
        "| keys | threads | ours memory | ours near | moka get + decode | Mutex<HashMap> + decode | memory / moka | near / moka | memory: N / 1 | near: N / 1 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (label, keys) in [("1 hot", &all[..1]), ("64", &all[..])] {
        let mut single = [0.0_f64; 4];
        for threads in THREADS {
            let mut best = [0.0_f64; 4];
            for round in 0..rounds {
                for turn in 0..CONTENDERS.len() {
                    let which = (turn + round) % CONTENDERS.len();
                    if which == 1 && near.is_none() {
                        continue;
                    }
                    best[which] = best[which].max(rate(threads, period, keys, hits[which]));
                }
            }
            if threads == 1 {
                single = best;
            }
            let m = |rate: f64| format!("{:.2} M", rate / 1e6);
            println!(
                "| {label} | {threads} | {} | {} | {} | {} | {:.2}× | {:.2}× | {:.2}× | {:.2}× |",
                m(best[0]),
                m(best[1]),
                m(best[2]),
                m(best[3]),
                best[0] / best[2],
                best[1] / best[2],
                best[0] / single[0],
                best[1] / single[1],
            );
        }
    }
    drop(server);
}
