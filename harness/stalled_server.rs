//! Memoized calls against a Redis server that stops answering (SIGSTOP), with the
//! default timeouts (connect 1 s, response 1 s) and circuit breaker (opens after 3
//! failures; probes after 250 ms, doubling up to 2 s):
//!
//! 1. Before the breaker opens: each call waits out the response timeout, then
//!    computes. Sync and async, each on a backend (so a breaker) of its own.
//! 2. Breaker open: 5 s of back-to-back calls; their latency (the computation is
//!    trivial, so this is what a call costs on top of its computation).
//! 3. SIGCONT: the time until the breaker closes and a call is served from Redis again,
//!    against the probe interval (≤ 2 s).
//!
//! `cargo run --release --example stalled_server`; quick mode (`CACHE_MEMOIZE_QUICK=1`):
//! a response timeout of 200 ms instead of the default, 1 s with the breaker open. The
//! last line: `sync_open_p99_us=<n> async_open_p99_us=<n> closed_after_ms=<n>
//! cached_again=<bool>`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_memoize::{CacheBackend, MemoizeOptions, RedisBackend, memoize, memoize_async};
use cache_memoize_harness::quick::{quick, sized};
use cache_memoize_tests::runtime;
use cache_memoize_tests::server::RedisServer;

/// A backend with the default timeouts (a shorter response timeout in quick mode).
fn connect(server: &RedisServer) -> Result<Arc<RedisBackend>, cache_memoize::Error> {
    let builder = RedisBackend::builder([server.url()]);
    let builder = if quick() {
        builder.response_timeout(Duration::from_millis(200))
    } else {
        builder
    };
    builder.connect().map(Arc::new)
}

/// The 99th percentile of `samples`, sorted.
fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() - 1) * 990 / 1000]
}

/// Median, 99th and 99.9th percentile and maximum of `samples` (sorted on return).
fn summary(samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    // The sample below which `per_mille` thousandths of them lie.
    let at = |per_mille: usize| samples[(samples.len() - 1) * per_mille / 1000];
    format!(
        "{} calls: median {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        samples.len(),
        at(500),
        at(990),
        at(999),
        at(1000)
    )
}

fn main() -> Result<(), cache_memoize::Error> {
    let open_for = sized(Duration::from_secs(5), Duration::from_secs(1));
    let server = RedisServer::start();
    let sync_backend = connect(&server)?;
    let async_backend = connect(&server)?;
    let sync_opts = MemoizeOptions::new().backend(sync_backend.clone() as Arc<dyn CacheBackend>);
    let async_opts = MemoizeOptions::new().backend(async_backend.clone() as Arc<dyn CacheBackend>);
    let runtime = runtime();
    // Warm: both paths have their connections open.
    memoize("stalled:warm", &sync_opts, || 1_u64);
    runtime.block_on(memoize_async("stalled:warm", &async_opts, || async {
        1_u64
    }));

    server.pause();
    println!("server stalled (SIGSTOP)");

    let mut before = Vec::new();
    while !sync_backend.is_circuit_open() {
        let start = Instant::now();
        memoize("stalled:k", &sync_opts, || 2_u64);
        before.push(start.elapsed());
    }
    println!("sync, before the breaker opened: {before:?}");
    let mut before = Vec::new();
    while !async_backend.is_circuit_open() {
        let start = Instant::now();
        runtime.block_on(memoize_async("stalled:k", &async_opts, || async { 2_u64 }));
        before.push(start.elapsed());
    }
    println!("async, before the breaker opened: {before:?}");

    let mut sync_open = Vec::new();
    let mut async_open = Vec::new();
    let until = Instant::now() + open_for;
    runtime.block_on(async {
        while Instant::now() < until {
            let start = Instant::now();
            memoize("stalled:k", &sync_opts, || 3_u64);
            sync_open.push(start.elapsed());
            let start = Instant::now();
            memoize_async("stalled:k", &async_opts, || async { 3_u64 }).await;
            async_open.push(start.elapsed());
        }
    });
    println!(
        "sync, breaker open ({open_for:?}): {}",
        summary(&mut sync_open)
    );
    println!(
        "async, breaker open ({open_for:?}): {}",
        summary(&mut async_open)
    );

    server.resume();
    let resumed = Instant::now();
    while sync_backend.is_circuit_open() || async_backend.is_circuit_open() {
        // Calls keep coming, as in a service; the probe is what closes the breaker.
        memoize("stalled:k", &sync_opts, || 4_u64);
        runtime.block_on(memoize_async("stalled:k", &async_opts, || async { 4_u64 }));
        std::thread::sleep(Duration::from_millis(1));
    }
    let closed = resumed.elapsed();
    let stored = memoize("stalled:after", &sync_opts, || 5_u64);
    let hit = memoize("stalled:after", &sync_opts, || 6_u64);
    println!(
        "SIGCONT: both breakers closed after {closed:?} (probe interval ≤ 2 s); cached again: {}",
        stored == hit
    );
    println!(
        "sync_open_p99_us={} async_open_p99_us={} closed_after_ms={} cached_again={}",
        p99(&sync_open).as_micros(),
        p99(&async_open).as_micros(),
        closed.as_millis(),
        stored == hit
    );
    Ok(())
}
