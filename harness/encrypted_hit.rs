//! Measures a memoized 10 KB Redis hit with encryption at rest against a plain one,
//! side by side on one private `redis-server` (started on a free port, stopped at the
//! end): interleaved rounds, the order alternating, medians and bests per hit.
//! Usage: `cargo run --release --example encrypted_hit [rounds]` (40 rounds; quick
//! mode, `CACHE_MEMOIZE_QUICK=1`: 4).
//! Its last line: `plain_us= encrypted_us= ratio_median= ratio_best=`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_memoize::{CacheBackend, Encryption, MemoizeOptions, RedisBackend, memoize};
use cache_memoize_harness::quick::sized;
use cache_memoize_tests::server::RedisServer;
use serde::{Deserialize, Serialize};

/// The value: a title and a 10 KB body (the benches' `Report`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    title: String,
    body: String,
}

const HITS_PER_ROUND: u32 = 300;

fn options(backend: RedisBackend) -> MemoizeOptions {
    MemoizeOptions::new().backend(Arc::new(backend) as Arc<dyn CacheBackend>)
}

/// The mean time of one hit over a round.
fn round(opts: &MemoizeOptions, key: &str) -> Duration {
    let started = Instant::now();
    for _ in 0..HITS_PER_ROUND {
        let report: Report = memoize(key, opts, || unreachable!("a hit computes nothing"));
        std::hint::black_box(report);
    }
    started.elapsed() / HITS_PER_ROUND
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => sized(40, 4),
    };
    let server = RedisServer::start();
    let plain = options(RedisBackend::builder([server.url()]).connect()?);
    let sealed = options(
        RedisBackend::builder([server.url()])
            .encryption(Encryption::new([7; 32]).key(1, [9; 32]))
            .connect()?,
    );
    let value = Report {
        title: "report of 10000 bytes".into(),
        body: "x".repeat(10_000),
    };
    for opts in [&plain, &sealed] {
        let stored: Report = memoize("hit-10kb", opts, || value.clone());
        assert_eq!(stored, value);
        round(opts, "hit-10kb"); // warm up
    }
    let (mut plain_times, mut sealed_times) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        if i % 2 == 0 {
            plain_times.push(round(&plain, "hit-10kb"));
            sealed_times.push(round(&sealed, "hit-10kb"));
        } else {
            sealed_times.push(round(&sealed, "hit-10kb"));
            plain_times.push(round(&plain, "hit-10kb"));
        }
    }
    let best = |times: &[Duration]| times.iter().min().copied().unwrap_or_default();
    let (plain_best, sealed_best) = (best(&plain_times), best(&sealed_times));
    let (plain_median, sealed_median) = (median(plain_times), median(sealed_times));
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "rounds={rounds} hits_per_round={HITS_PER_ROUND} plain_best_us={:.1} encrypted_best_us={:.1}",
        us(plain_best),
        us(sealed_best)
    );
    println!(
        "plain_us={:.1} encrypted_us={:.1} ratio_median={:.3} ratio_best={:.3}",
        us(plain_median),
        us(sealed_median),
        us(sealed_median) / us(plain_median),
        us(sealed_best) / us(plain_best)
    );
    Ok(())
}
