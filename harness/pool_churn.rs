//! The sync connection pool under load, against a private `redis-server`:
//!
//! 1. 256 threads read one key through one `RedisBackend` (`threads`, `reads` per
//!    thread); prints the connections the server accepted meanwhile (its
//!    `total_connections_received`), the reads per second and the failed reads.
//! 2. The server killed: the time one read takes to fail (so the caller can compute
//!    without the cache), averaged over `down_reads` sequential reads on a backend with
//!    the default timeouts.
//!
//! `cargo run --release --example pool_churn`; quick mode (`CACHE_MEMOIZE_QUICK=1`): 32
//! threads × 50 reads, 3 reads while down. The last line: `threads=<n> reads_per_s=<x>
//! connections_opened=<n> failed=<n> down_read_ms=<x>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cache_memoize::{Backend, RedisBackend};
use cache_memoize_harness::quick::sized;
use cache_memoize_tests::server::RedisServer;

fn connections_received(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut server.connection())
        .unwrap_or_default();
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_default()
}

fn main() -> Result<(), cache_memoize::Error> {
    let (threads, reads, down_reads) = (sized(256_u32, 32), sized(200_u32, 50), sized(10_u32, 3));
    let mut server = RedisServer::start();
    let backend = Arc::new(
        RedisBackend::builder([server.url()])
            .response_timeout(Duration::from_secs(5))
            .max_connections(32)
            .wake_ups(false)
            .connect()?,
    );
    backend.set("churn", b"value", Duration::from_secs(600))?;
    // Default timeouts, for the server-down measurement; one read to warm it up.
    let default = RedisBackend::connect(&server.url())?;
    default.get("churn")?;

    // Each `connections_received` opens one connection of its own: subtract it.
    let before = connections_received(&server) + 1;
    let failed = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..reads {
                    if !matches!(backend.get("churn"), Ok(Some(v)) if v == b"value") {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let opened = connections_received(&server) - before;
    let reads_per_s = f64::from(threads * reads) / elapsed.as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "{threads} threads x {reads} reads: {opened} connections opened, {reads_per_s:.0} reads/s, {failed} failed",
    );

    server.kill();
    // The first read after the kill finds its pooled connection dead: measure after it.
    let _ = default.get("churn");
    let started = Instant::now();
    for _ in 0..down_reads {
        let _ = default.get("churn");
    }
    let down_read_ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(down_reads);
    println!("server down: a read fails after {down_read_ms:.3} ms (mean of {down_reads})");
    println!(
        "threads={threads} reads_per_s={reads_per_s:.0} connections_opened={opened} \
         failed={failed} down_read_ms={down_read_ms:.3}"
    );
    Ok(())
}
