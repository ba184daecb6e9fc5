//! The near cache's in-process store, chosen on these numbers: a read of a hot key's
//! bytes (`Backend::get`, which returns an owned copy) from
//! - `near_lru`: the Redis backend's near cache (16 shards, each an LRU under a mutex,
//!   bounded in bytes),
//! - `moka`: a `moka::sync::Cache` bounded in bytes by a weigher (its values shared
//!   `Arc<[u8]>`, copied out as the backend must),
//! - `memory`: the `MemoryBackend` (one LRU under one mutex), the goal's yardstick,
//!
//! at 100 B, 10 KB and 1 MB, and with 1, 2 and 8 threads on one 100 B key.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cache_memoize::{
    Backend, CacheBackend, MemoizeOptions, MemoryBackend, NearCache, RedisBackend, make_cache_key,
    memoize,
};
use cache_memoize_benches::{Report, SIZES, report, spread};
use cache_memoize_tests::server::RedisServer;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

static SERVER: OnceLock<RedisServer> = OnceLock::new();

const CAPACITY: u64 = 64 * 1024 * 1024;

fn near_backend() -> Arc<RedisBackend> {
    let server = SERVER.get_or_init(RedisServer::start);
    let connected = RedisBackend::builder([server.url()])
        .near_cache(NearCache::new().capacity(64 * 1024 * 1024))
        .connect();
    let backend = match connected {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect: {err}"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !backend.is_near_cache_live() {
        assert!(Instant::now() < deadline, "the near cache never went live");
        std::thread::sleep(Duration::from_millis(1));
    }
    backend
}

/// Stores a memoized value of `size` bytes at `name` through `backend`, reads it until
/// it is served near, and returns its backend key and bytes.
fn stored(backend: &Arc<RedisBackend>, name: &str, size: usize) -> (String, Vec<u8>) {
    let opts = MemoizeOptions::new().backend(Arc::clone(backend) as Arc<dyn CacheBackend>);
    let _: Report = memoize(name, &opts, || report(size));
    let key = make_cache_key(name).as_str().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = backend.near_cache_hits();
        let bytes = backend.get(&key).ok().flatten();
        if let Some(bytes) = bytes.filter(|_| backend.near_cache_hits() > before) {
            return (key, bytes);
        }
        assert!(Instant::now() < deadline, "{name} is never served near");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn moka_cache() -> moka::sync::Cache<String, Arc<[u8]>> {
    moka::sync::Cache::builder()
        .max_capacity(CAPACITY)
        .weigher(|key: &String, value: &Arc<[u8]>| {
            u32::try_from(key.len() + value.len()).unwrap_or(u32::MAX)
        })
        .build()
}

fn single(c: &mut Criterion) {
    let mut group = c.benchmark_group("near_store/get");
    let near = near_backend();
    let moka = moka_cache();
    let memory = MemoryBackend::with_capacity(64 * 1024 * 1024);
    for size in SIZES {
        let (key, bytes) = stored(&near, &format!("store:{size}"), size);
        moka.insert(key.clone(), Arc::from(bytes.as_slice()));
        let _ = memory.set(&key, &bytes, Duration::from_secs(3600));
        group.bench_function(BenchmarkId::new("near_lru", size), |b| {
            b.iter(|| near.get(&key));
        });
        group.bench_function(BenchmarkId::new("moka", size), |b| {
            b.iter(|| moka.get(&key).map(|bytes| bytes.to_vec()));
        });
        group.bench_function(BenchmarkId::new("memory", size), |b| {
            b.iter(|| memory.get(&key));
        });
    }
    group.finish();
}

fn threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("near_store/threads_100B");
    let near = near_backend();
    let moka = moka_cache();
    let (key, bytes) = stored(&near, "store:threads", 100);
    moka.insert(key.clone(), Arc::from(bytes.as_slice()));
    let memory = MemoryBackend::new();
    let _ = memory.set(&key, &bytes, Duration::from_secs(3600));
    for threads in [1_u64, 2, 8] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("near_lru", threads), |b| {
            b.iter_custom(|iters| {
                spread(threads, iters.max(threads), |n| {
                    for _ in 0..n {
                        let _ = near.get(&key);
                    }
                })
            });
        });
        group.bench_function(BenchmarkId::new("moka", threads), |b| {
            b.iter_custom(|iters| {
                spread(threads, iters.max(threads), |n| {
                    for _ in 0..n {
                        let _ = moka.get(&key).map(|bytes| bytes.to_vec());
                    }
                })
            });
        });
        group.bench_function(BenchmarkId::new("memory", threads), |b| {
            b.iter_custom(|iters| {
                spread(threads, iters.max(threads), |n| {
                    for _ in 0..n {
                        let _ = memory.get(&key);
                    }
                })
            });
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = near_store;
    config = config();
    targets = single, threads
}
criterion_main!(near_store);
