//! The sync connection pool under load, against a private `redis-server`:
//!
//! 1. 256 threads read one key through one `RedisBackend` (`THREADS`, `READS` per
//!    thread); prints the connections the server accepted meanwhile (its
//!    `total_connections_received`), the reads per second and the failed reads.
//! 2. The server killed: the time one read takes to fail (so the caller can compute
//!    without the cache), averaged over `DOWN_READS` sequential reads on a backend with
//!    the default timeouts.
//!
//! `cargo run --release --example pool_churn`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cache_memoize::{Backend, RedisBackend};
use cache_memoize_tests::server::RedisServer;

const THREADS: u32 = 256;
const READS: u32 = 200;
const DOWN_READS: u32 = 10;

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
        for _ in 0..THREADS {
            scope.spawn(|| {
                for _ in 0..READS {
                    if !matches!(backend.get("churn"), Ok(Some(v)) if v == b"value") {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let opened = connections_received(&server) - before;
    let reads = THREADS * READS;
    println!(
        "{THREADS} threads x {READS} reads: {opened} connections opened, {:.0} reads/s, {} failed",
        f64::from(reads) / elapsed.as_secs_f64(),
        failed.load(Ordering::Relaxed)
    );

    server.kill();
    // The first read after the kill finds its pooled connection dead: measure after it.
    let _ = default.get("churn");
    let started = Instant::now();
    for _ in 0..DOWN_READS {
        let _ = default.get("churn");
    }
    println!(
        "server down: a read fails after {:.3} ms (mean of {DOWN_READS})",
        started.elapsed().as_secs_f64() * 1000.0 / f64::from(DOWN_READS)
    );
    Ok(())
}
