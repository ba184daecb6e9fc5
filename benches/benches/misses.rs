//! The miss path with a lock: ours (`GET`, get-or-lock, store-and-release) vs a raw
//! `GET` + `SET` with no lock at all, each on a fresh key, 100 B values.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_memoize::{LockOptions, MemoizeOptions, RedisBackend, memoize};
use cache_memoize_benches::{Report, encode, report};
use cache_memoize_tests::server::RedisServer;
use criterion::{Criterion, criterion_group, criterion_main};

fn misses(c: &mut Criterion) {
    let server = RedisServer::start();
    let backend = match RedisBackend::connect(&server.url()) {
        Ok(backend) => Arc::new(backend),
        Err(err) => panic!("cannot connect: {err}"),
    };
    let locked = MemoizeOptions::new()
        .backend(backend.clone())
        .lock(LockOptions::default());
    let unlocked = MemoizeOptions::new().backend(backend);
    let mut raw = server.connection();
    let value = report(100);
    let fresh = AtomicU64::new(0);
    let next = || format!("miss:{}", fresh.fetch_add(1, Ordering::Relaxed));

    let mut group = c.benchmark_group("miss/redis_sync_100B");
    group.bench_function("cache_memoize_locked", |b| {
        b.iter(|| memoize::<Report, _>(&next(), &locked, || value.clone()));
    });
    group.bench_function("cache_memoize_unlocked", |b| {
        b.iter(|| memoize::<Report, _>(&next(), &unlocked, || value.clone()));
    });
    group.bench_function("raw_get_set", |b| {
        b.iter(|| {
            let key = next();
            let found: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query(&mut raw).ok().flatten();
            if found.is_none() {
                let _: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(&key)
                    .arg(encode(&value))
                    .arg("EX")
                    .arg(3600)
                    .query(&mut raw);
            }
        });
    });
    group.finish();
}

criterion_group! {
    name = miss;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = misses
}
criterion_main!(miss);
