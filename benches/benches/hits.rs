//! Hits, side by side in one run: ours vs the floor (a hand-written lookup + bincode
//! decode of the same value on the same kind of connection) vs the `cached` crate.
//! Sizes 100 B, 10 KB, 1 MB; sync and async; and throughput with 1–8 threads/tasks.
//! The near cache (`hit/near`, `scaling/near_100B`): its hits beside the memory
//! backend's and plain Redis hits, in the same run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cache_memoize::{
    MemoizeOptions, MemoryBackend, NearCache, RedisBackend, memoize, memoize_async,
};
use cache_memoize_benches::{Report, SIZES, decode, encode, report, spread};
use cache_memoize_tests::server::RedisServer;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

static SERVER: OnceLock<RedisServer> = OnceLock::new();

fn server() -> &'static RedisServer {
    SERVER.get_or_init(RedisServer::start)
}

fn redis_opts() -> MemoizeOptions {
    match RedisBackend::connect(&server().url()) {
        Ok(backend) => MemoizeOptions::new().backend(Arc::new(backend)),
        Err(err) => panic!("cannot connect: {err}"),
    }
}

/// A backend with a near cache (64 MiB: a 1 MB value fits a shard), live.
fn near_backend() -> Arc<RedisBackend> {
    let connected = RedisBackend::builder([server().url()])
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

/// Reads `key` until `backend` serves it from its near copy.
fn until_near(backend: &RedisBackend, opts: &MemoizeOptions, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = backend.near_cache_hits();
        let _: Report = memoize(key, opts, || unreachable!("a hit"));
        if backend.near_cache_hits() > before {
            return;
        }
        assert!(Instant::now() < deadline, "{key} is never served near");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn raw_connection() -> redis::Connection {
    server().connection()
}

#[derive(Debug)]
#[expect(dead_code, reason = "only its Debug output is used")]
struct BenchError(String);

// The cached crate's macro takes its store expression as a string and needs a `Result`.
#[allow(
    clippy::needless_raw_string_hashes,
    clippy::expect_used,
    clippy::unnecessary_wraps
)]
mod peer {
    use super::{BenchError, Report, report, server};
    use cached::RedisCache;
    use cached::macros::concurrent_cached;

    #[concurrent_cached(
        map_error = r##"|e| BenchError(format!("{e:?}"))"##,
        ty = "cached::RedisCache<usize, Report>",
        create = r##" {
        RedisCache::builder("cached-bench")
            .ttl(std::time::Duration::from_secs(3600))
            .connection_string(&server().url())
            .build()
            .expect("the cached crate's store connects")
    } "##
    )]
    pub(super) fn cached_report(size: usize) -> Result<Report, BenchError> {
        Ok(report(size))
    }
}

use peer::cached_report;

fn memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("hit/memory");
    for size in SIZES {
        let opts = MemoizeOptions::new().backend(Arc::new(MemoryBackend::new()));
        let key = format!("memory:{size}");
        let _: Report = memoize(&key, &opts, || report(size));
        group.bench_function(BenchmarkId::new("cache_memoize", size), |b| {
            b.iter(|| memoize::<Report, _>(&key, &opts, || unreachable!("a hit")));
        });
        let map = Mutex::new(HashMap::from([(key.clone(), encode(&report(size)))]));
        group.bench_function(BenchmarkId::new("mutex_hashmap_bincode", size), |b| {
            b.iter(|| {
                let bytes = map.lock().ok().and_then(|m| m.get(&key).cloned());
                bytes.and_then(|bytes| decode(&bytes))
            });
        });
    }
    group.finish();
}

fn near(c: &mut Criterion) {
    let mut group = c.benchmark_group("hit/near");
    let backend = near_backend();
    let near_opts = MemoizeOptions::new().backend(backend.clone());
    let redis = redis_opts();
    let memory = MemoizeOptions::new().backend(Arc::new(MemoryBackend::new()));
    for size in SIZES {
        let key = format!("near:{size}");
        for opts in [&near_opts, &redis, &memory] {
            let _: Report = memoize(&key, opts, || report(size));
        }
        until_near(&backend, &near_opts, &key);
        for (name, opts) in [("memory", &memory), ("near", &near_opts), ("redis", &redis)] {
            group.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter(|| memoize::<Report, _>(&key, opts, || unreachable!("a hit")));
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("scaling/near_100B");
    let _: Report = memoize("near-scaling", &near_opts, || report(100));
    until_near(&backend, &near_opts, "near-scaling");
    for threads in [1_u64, 2, 8] {
        group.throughput(Throughput::Elements(1));
        for (name, opts) in [("near", &near_opts), ("redis", &redis)] {
            group.bench_function(BenchmarkId::new(name, threads), |b| {
                b.iter_custom(|iters| {
                    spread(threads, iters.max(threads), |n| {
                        for _ in 0..n {
                            let _ = memoize::<Report, _>("near-scaling", opts, || report(100));
                        }
                    })
                });
            });
        }
    }
    group.finish();
}

fn redis_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("hit/redis_sync");
    let opts = redis_opts();
    let mut raw = raw_connection();
    for size in SIZES {
        let key = format!("sync:{size}");
        let _: Report = memoize(&key, &opts, || report(size));
        let raw_key = format!("raw:{size}");
        let _: () = redis::cmd("SET")
            .arg(&raw_key)
            .arg(encode(&report(size)))
            .query(&mut raw)
            .unwrap_or(());
        let _ = cached_report(size);
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("raw_get_decode", size), |b| {
            b.iter(|| {
                let bytes: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&raw_key)
                    .query(&mut raw)
                    .ok()
                    .flatten();
                bytes.and_then(|bytes| decode(&bytes))
            });
        });
        group.bench_function(BenchmarkId::new("cache_memoize", size), |b| {
            b.iter(|| memoize::<Report, _>(&key, &opts, || unreachable!("a hit")));
        });
        group.bench_function(BenchmarkId::new("cached_crate", size), |b| {
            b.iter(|| cached_report(size));
        });
    }
    group.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => panic!("no runtime: {err}"),
    }
}

fn redis_async(c: &mut Criterion) {
    let mut group = c.benchmark_group("hit/redis_async");
    let rt = runtime();
    let opts = redis_opts();
    let mut raw = rt.block_on(async {
        let client = redis::Client::open(server().url()).ok()?;
        client.get_connection_manager().await.ok()
    });
    for size in SIZES {
        let key = format!("async:{size}");
        let raw_key = format!("raw:{size}");
        rt.block_on(async {
            let _: Report = memoize_async(&key, &opts, || async { report(size) }).await;
        });
        group.bench_function(BenchmarkId::new("raw_get_decode", size), |b| {
            b.to_async(&rt).iter(|| {
                let mut conn = raw.clone();
                let raw_key = raw_key.clone();
                async move {
                    let conn = conn.as_mut()?;
                    let bytes: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(&raw_key)
                        .query_async(conn)
                        .await
                        .ok()
                        .flatten();
                    bytes.and_then(|bytes| decode(&bytes))
                }
            });
        });
        group.bench_function(BenchmarkId::new("cache_memoize", size), |b| {
            b.to_async(&rt).iter(|| {
                memoize_async::<Report, _>(&key, &opts, || async { unreachable!("a hit") })
            });
        });
    }
    let _ = raw.take();
    group.finish();
}

fn scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("scaling/redis_sync_100B");
    let opts = redis_opts();
    let _: Report = memoize("scaling", &opts, || report(100));
    let mut seed = raw_connection();
    let _: () = redis::cmd("SET")
        .arg("raw:scaling")
        .arg(encode(&report(100)))
        .query(&mut seed)
        .unwrap_or(());
    for threads in [1_u64, 2, 4, 8] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("cache_memoize", threads), |b| {
            b.iter_custom(|iters| {
                spread(threads, iters.max(threads), |n| {
                    for _ in 0..n {
                        let _ = memoize::<Report, _>("scaling", &opts, || unreachable!("a hit"));
                    }
                })
            });
        });
        group.bench_function(
            BenchmarkId::new("raw_get_decode_connection_per_thread", threads),
            |b| {
                b.iter_custom(|iters| {
                    spread(threads, iters.max(threads), |n| {
                        let mut conn = raw_connection();
                        for _ in 0..n {
                            let bytes: Option<Vec<u8>> = redis::cmd("GET")
                                .arg("raw:scaling")
                                .query(&mut conn)
                                .ok()
                                .flatten();
                            let _ = bytes.and_then(|bytes| decode(&bytes));
                        }
                    })
                });
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("scaling/redis_async_100B");
    let rt = runtime();
    rt.block_on(async {
        let _: Report = memoize_async("scaling-async", &opts, || async { report(100) }).await;
    });
    for tasks in [1_u64, 2, 4, 8] {
        group.bench_function(BenchmarkId::new("cache_memoize", tasks), |b| {
            b.iter_custom(|iters| {
                let per_task = iters.max(tasks) / tasks;
                rt.block_on(async {
                    let started = Instant::now();
                    let handles: Vec<_> = (0..tasks)
                        .map(|_| {
                            let opts = opts.clone();
                            tokio::spawn(async move {
                                for _ in 0..per_task {
                                    let _ = memoize_async::<Report, _>(
                                        "scaling-async",
                                        &opts,
                                        || async { unreachable!("a hit") },
                                    )
                                    .await;
                                }
                            })
                        })
                        .collect();
                    for handle in handles {
                        let _ = handle.await;
                    }
                    started.elapsed()
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
    name = hits;
    config = config();
    targets = memory, near, redis_sync, redis_async, scaling
}
criterion_main!(hits);
