//! The soak harness (issue 20): a steady mix of calls against a private `redis-server`
//! for `--minutes`, watching that nothing grows with time.
//!
//! ```sh
//! cargo run --release --example soak -- --minutes 10
//! CACHE_MEMOIZE_QUICK=1 cargo run --release --example soak   # ~25 s: 5 "minutes" of 3 s
//! ```
//!
//! The mix (`load.rs`): hits, misses, stale values served while the crate's bounded
//! refresh pool refreshes them, invalidations, near-cache reads, memoized iterators, async
//! calls, short-lived threads and key churn over 1,000,000 keys (values live
//! `expire + stale`: 20 s + 20 s, so keys come and go), and a saturated dependency
//! (`dependency.rs`: 2 queries at once, 10 ms each) behind the `db:` keys, whose miss
//! latency is measured while refreshes queue for it.
//!
//! Each minute (each 3 s in quick mode) it prints one `minute=..` line: RSS and live
//! threads (`/proc/self/status`), the most threads seen, Redis `DBSIZE` and
//! `used_memory`, the calls made, `cache_memoize::stats()` (`refreshes_dropped`
//! included), and the dependency's miss latencies and the most refreshes it saw at
//! once. Then it stops the load, waits until every value, lock and fail-safe mark
//! written has expired (`max(expire + stale, lock expire, fail_safe)` after the last
//! computation, plus 1 s), and counts the keys left. Then (`bounds.rs`, unless
//! `--skip-bounds`) it measures thread churn (160,000 threads, one hit each), 60,000
//! detached refreshes (RSS growth) and 1,500 stale keys hit at once (the most refreshes
//! running at once), printed as one `bounds: ..` line.
//!
//! The last line is exactly `rss_growth_pct=<x> threads_max=<n>
//! redis_keys_after_expiry=<n>`: RSS growth from the end of the first minute to the end
//! of the last, the most live threads seen while the load ran, and `DBSIZE` after the
//! wait. Options: `--minutes N` (10; quick 5), `--skip-bounds`, `--bounds-only`.

// Percentiles and ratios of counts far below 2^52: float casts lose nothing.
#![allow(clippy::cast_precision_loss)]

mod bounds;
mod dependency;
mod gauges;
mod load;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_memoize::{
    CacheBackend, DEFAULT_REFRESH_QUEUE, DEFAULT_REFRESH_WORKERS, NearCache, RedisBackend, stats,
};
use cache_memoize_harness::quick::{quick, sized};
use cache_memoize_tests::server::RedisServer;

use dependency::Dependency;
use gauges::{ThreadPeak, dbsize, keys_left, rss_kb, threads, used_memory};
use load::{Load, Shape};

type Failure = Box<dyn std::error::Error>;

/// What one run does.
struct Settings {
    minutes: u32,
    /// A "minute": 60 s, or 3 s in quick mode.
    period: Duration,
    shape: Shape,
    /// The dependency: queries at once, and each one's time.
    permits: u64,
    query_time: Duration,
    bounds: bounds::Sizes,
    soak: bool,
    measure_bounds: bool,
}

impl Settings {
    fn parse() -> Result<Self, Failure> {
        let mut settings = Self {
            minutes: sized(10, 5),
            period: sized(Duration::from_secs(60), Duration::from_secs(3)),
            shape: Shape {
                expire: sized(Duration::from_secs(20), Duration::from_secs(1)),
                stale: sized(Duration::from_secs(20), Duration::from_secs(1)),
                lock_expire: sized(Duration::from_secs(5), Duration::from_secs(1)),
                fail_safe: sized(Duration::from_secs(2), Duration::from_millis(500)),
                mix_threads: 4,
                mix_per_s: 500,
                db_threads: 4,
                // Refreshes asked for: db_keys / expire a second, past what the
                // dependency answers (permits / query_time = 200 a second).
                db_keys: sized(5_000, 250),
                async_per_s: 300,
                churn_batch: 8,
                churn_batches_per_s: 20,
                churn_calls: 5,
            },
            permits: 2,
            query_time: Duration::from_millis(10),
            bounds: bounds::Sizes {
                threads: sized(160_000, 5_000),
                batch: 50,
                refreshes: sized(60_000, 2_000),
                stale_keys: 1_500,
            },
            soak: true,
            measure_bounds: true,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            match flag.as_str() {
                "--minutes" => {
                    let value = args.next().ok_or("--minutes needs a number")?;
                    settings.minutes = value.parse::<u32>()?.max(1);
                }
                "--skip-bounds" => settings.measure_bounds = false,
                "--bounds-only" => settings.soak = false,
                other => {
                    return Err(format!(
                        "unknown option {other} (valid: --minutes N, --skip-bounds, --bounds-only)"
                    )
                    .into());
                }
            }
        }
        Ok(settings)
    }

    /// How long after the last write every value, lock and mark has expired.
    fn expiry_wait(&self) -> Duration {
        let shape = &self.shape;
        (shape.expire + shape.stale)
            .max(shape.lock_expire)
            .max(shape.fail_safe)
    }
}

/// The crate's own threads with one `RedisBackend` (README, "Operating it"): the
/// refresh workers, the async waits' timer, the background thread (the backend's
/// near-cache and wake-up connections), and the backend's lock-renewal and
/// breaker-probe threads (the last two only while needed).
const CRATE_THREADS: u64 = DEFAULT_REFRESH_WORKERS as u64 + 4;

/// The soak's outcome, and the bounds it broke.
struct Soaked {
    rss_growth_pct: f64,
    threads_max: u64,
    keys_after_expiry: u64,
    broken: Vec<String>,
}

fn main() -> Result<(), Failure> {
    let settings = Settings::parse()?;
    let server = RedisServer::start();
    let backend = Arc::new(
        RedisBackend::builder([server.url()])
            .near_cache(NearCache::new().prefix("near:"))
            .connect()?,
    );
    cache_memoize::set_shared_backend(Arc::clone(&backend) as Arc<dyn CacheBackend>);
    let mut inspect = server.connection();
    println!(
        "soak: private redis-server on port {}; refresh pool {} workers + {} queued (the \
         defaults); quick mode: {}",
        server.port(),
        DEFAULT_REFRESH_WORKERS,
        DEFAULT_REFRESH_QUEUE,
        quick()
    );
    let soaked = if settings.soak {
        Some(soak(&settings, &backend, &mut inspect)?)
    } else {
        None
    };
    let mut broken = Vec::new();
    if settings.measure_bounds {
        broken.extend(measure_bounds(settings.bounds));
    }
    if let Some(soaked) = soaked {
        broken.extend(soaked.broken);
        println!(
            "rss_growth_pct={:.2} threads_max={} redis_keys_after_expiry={}",
            soaked.rss_growth_pct, soaked.threads_max, soaked.keys_after_expiry
        );
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(format!("bounds broken: {}", broken.join("; ")).into())
    }
}

/// Prints what the soak runs.
fn describe(settings: &Settings) {
    let shape = settings.shape;
    println!(
        "soak: {} minutes of {} s; expire {:?}, stale {:?}, lock expire {:?}, fail_safe {:?}; \
         {} mix threads x {}/s, {} db threads over {} keys, 1 async thread x {}/s, {} short \
         threads x {} calls up to {}/s; dependency: {} queries at once, {:?} each",
        settings.minutes,
        settings.period.as_secs(),
        shape.expire,
        shape.stale,
        shape.lock_expire,
        shape.fail_safe,
        shape.mix_threads,
        shape.mix_per_s,
        shape.db_threads,
        shape.db_keys,
        shape.async_per_s,
        shape.churn_batch,
        shape.churn_calls,
        shape.churn_batches_per_s,
        settings.permits,
        settings.query_time,
    );
}

/// What the minutes of load showed.
struct Watched {
    first_rss: u64,
    last_rss: u64,
    miss_max_ms: f64,
    wait_max_ms: f64,
    panics: u64,
}

fn soak(
    settings: &Settings,
    backend: &RedisBackend,
    inspect: &mut redis::Connection,
) -> Result<Soaked, Failure> {
    describe(settings);
    let peak = ThreadPeak::start();
    let dependency = Arc::new(Dependency::new(settings.permits, settings.query_time));
    let load = Load::start(settings.shape, Arc::clone(&dependency))?;
    let db_threads = settings.shape.db_threads as u64;
    let miss_bound = dependency.miss_bound(DEFAULT_REFRESH_WORKERS as u64, db_threads);
    let threads_bound = load.threads_at_most() as u64 + 2 + CRATE_THREADS;
    println!(
        "soak: threads at most {threads_bound}: the load's {}, main, the sampler, and the \
         crate's {CRATE_THREADS}; a miss at the dependency waits behind at most \
         {DEFAULT_REFRESH_WORKERS} refreshes and {} other misses: {miss_bound:?} of queries",
        load.threads_at_most(),
        db_threads - 1,
    );
    let watched = watch(settings, &peak, &load, backend, &dependency, inspect);
    load.stop();
    let (threads_max, names) = peak.stop();
    let names: Vec<String> = names
        .iter()
        .map(|(name, n)| format!("{name} x{n}"))
        .collect();
    println!(
        "soak: threads at the peak ({threads_max}): {}",
        names.join(", ")
    );
    let left = settle(settings, inspect);
    let rss_growth_pct = if watched.first_rss == 0 {
        0.0
    } else {
        (watched.last_rss as f64 - watched.first_rss as f64) * 100.0 / watched.first_rss as f64
    };
    let ahead_bound = Dependency::ahead_bound(DEFAULT_REFRESH_WORKERS as u64, db_threads);
    let queries_ahead = dependency.queries_ahead_max();
    println!(
        "soak: dependency misses: queries ahead of a miss max {queries_ahead} (bound \
         {ahead_bound}), of them refreshes max {}; refreshes at the dependency at once max {} \
         (pool workers {DEFAULT_REFRESH_WORKERS}); a miss's call max {:.1} ms, its wait for a \
         turn max {:.1} ms ({:.1} ms on an idle machine)",
        dependency.refreshes_ahead_max(),
        dependency.refreshes_max(),
        watched.miss_max_ms,
        watched.wait_max_ms,
        miss_bound.as_secs_f64() * 1000.0,
    );
    let workers = DEFAULT_REFRESH_WORKERS;
    let refreshes_max = dependency.refreshes_max();
    let checks = [
        (left == 0, format!("{left} keys left after expiry")),
        (
            watched.panics == 0,
            format!("{} calls panicked", watched.panics),
        ),
        (
            threads_max <= threads_bound,
            format!("threads_max {threads_max} > {threads_bound}"),
        ),
        (
            refreshes_max <= workers,
            format!("{refreshes_max} refreshes at once > {workers} workers"),
        ),
        (
            queries_ahead <= ahead_bound,
            format!("{queries_ahead} queries ahead of a miss > {ahead_bound}"),
        ),
        // Growth over a few seconds is noise: judged on real runs only.
        (
            quick() || rss_growth_pct <= 5.0,
            format!("RSS grew {rss_growth_pct:.2} % > 5 %"),
        ),
    ];
    Ok(Soaked {
        rss_growth_pct,
        threads_max,
        keys_after_expiry: left,
        broken: checks
            .into_iter()
            .filter(|(holds, _)| !holds)
            .map(|(_, what)| what)
            .collect(),
    })
}

/// Runs the minutes of load, one report each.
fn watch(
    settings: &Settings,
    peak: &ThreadPeak,
    load: &Load,
    backend: &RedisBackend,
    dependency: &Dependency,
    inspect: &mut redis::Connection,
) -> Watched {
    let started = Instant::now();
    let mut watched = Watched {
        first_rss: 0,
        last_rss: 0,
        miss_max_ms: 0.0,
        wait_max_ms: 0.0,
        panics: 0,
    };
    for minute in 1..=settings.minutes {
        let due = started + settings.period * minute;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let rss = rss_kb();
        if minute == 1 {
            watched.first_rss = rss;
        }
        watched.last_rss = rss;
        let misses = dependency.take_misses();
        watched.miss_max_ms = watched.miss_max_ms.max(misses.max_ms);
        watched.wait_max_ms = watched.wait_max_ms.max(misses.wait_max_ms);
        report(
            minute, rss, peak, load, backend, dependency, &misses, inspect,
        );
    }
    watched.panics = load
        .counts()
        .panics
        .load(std::sync::atomic::Ordering::Relaxed);
    watched
}

/// One `minute=..` line.
#[allow(clippy::too_many_arguments)]
fn report(
    minute: u32,
    rss: u64,
    peak: &ThreadPeak,
    load: &Load,
    backend: &RedisBackend,
    dependency: &Dependency,
    misses: &dependency::MissLatency,
    inspect: &mut redis::Connection,
) {
    let s = stats();
    let c = load.counts();
    let n =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "minute={minute} rss_mb={:.2} threads={} threads_max={} redis_keys={} redis_used_mb={:.1} \
         reads={} near_reads={} async_reads={} invalidations={} iterations={} db_reads={} \
         db_errors={} short_threads={} panics={} hits={} misses={} waited={} stale_served={} \
         refreshes={} refreshes_dropped={} fail_open={} near_hits={} db_queries={} \
         db_misses={} db_miss_p50_ms={:.1} db_miss_p99_ms={:.1} db_miss_max_ms={:.1} \
         db_miss_wait_max_ms={:.1} db_queries_ahead_max={} db_refreshes_ahead_max={} \
         db_refreshes_max={}",
        rss as f64 / 1024.0,
        threads(),
        peak.peak(),
        dbsize(inspect),
        used_memory(inspect) as f64 / (1024.0 * 1024.0),
        n(&c.reads),
        n(&c.near_reads),
        n(&c.async_reads),
        n(&c.invalidations),
        n(&c.iterations),
        n(&c.db_reads),
        n(&c.db_errors),
        n(&c.threads_started),
        n(&c.panics),
        s.hits,
        s.misses,
        s.waited,
        s.stale_served,
        s.refreshes,
        s.refreshes_dropped,
        s.fail_open,
        backend.near_cache_hits(),
        dependency.queries(),
        misses.count,
        misses.p50_ms,
        misses.p99_ms,
        misses.max_ms,
        misses.wait_max_ms,
        dependency.queries_ahead_max(),
        dependency.refreshes_ahead_max(),
        dependency.refreshes_max(),
    );
}

/// Waits until nothing has computed for a second (the refresh pool's queue ran dry),
/// then until every value, lock and mark written has expired; counts the keys left.
fn settle(settings: &Settings, inspect: &mut redis::Connection) -> u64 {
    let quiet = Duration::from_secs(1);
    let mut seen = stats();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = stats();
        if now == seen && load::last_compute().elapsed() >= quiet {
            break;
        }
        seen = now;
    }
    let wait = settings.expiry_wait() + Duration::from_secs(1);
    println!(
        "soak: load stopped; waiting {:?} (max(expire + stale, lock expire, fail_safe) + 1 s) \
         for every key written to expire; redis_keys={} now",
        wait,
        dbsize(inspect)
    );
    let last = load::last_compute();
    std::thread::sleep(wait);
    if load::last_compute() != last {
        println!("soak: a computation ended during the wait; waiting again");
        std::thread::sleep(wait);
    }
    let (left, shown) = keys_left(inspect, 10);
    for (key, ttl) in shown {
        println!("soak: key left after expiry: {key} (pttl {ttl} ms)");
    }
    left
}

/// Runs the three measurements of `bounds.rs`; the bounds they broke.
fn measure_bounds(sizes: bounds::Sizes) -> Vec<String> {
    println!(
        "bounds: {} short threads ({} at a time) with one hit each; {} detached refreshes; \
         {} stale keys hit at once",
        sizes.threads, sizes.batch, sizes.refreshes, sizes.stale_keys
    );
    let churn = bounds::thread_churn(sizes);
    let refreshes = bounds::detached_refreshes(sizes);
    let burst = bounds::stale_burst(sizes);
    println!(
        "thread_churn={} churn_rss_growth_kb={} churn_hits={} churn_counted={} \
         detached_refreshes={} \
         refresh_rss_growth_kb={} refreshes_dropped={} stale_keys={} burst_max_running={} \
         burst_queued={} burst_dropped={} pool_workers={} pool_queue={}",
        sizes.threads,
        churn.rss_growth_kb,
        churn.hits,
        churn.counted,
        refreshes.computed,
        refreshes.rss_growth_kb,
        refreshes.dropped,
        sizes.stale_keys,
        burst.max_running,
        burst.queued,
        burst.dropped,
        DEFAULT_REFRESH_WORKERS,
        DEFAULT_REFRESH_QUEUE,
    );
    let mut broken = Vec::new();
    if burst.max_running > DEFAULT_REFRESH_WORKERS {
        broken.push(format!(
            "{} stale-burst refreshes at once > {DEFAULT_REFRESH_WORKERS} workers",
            burst.max_running
        ));
    }
    if churn.counted != sizes.threads {
        broken.push(format!(
            "{} of {} churn calls counted",
            churn.counted, sizes.threads
        ));
    }
    // RSS growth over a few thousand threads is noise: judged on real runs only.
    for (what, kb) in [
        ("thread churn", churn.rss_growth_kb),
        ("refreshes", refreshes.rss_growth_kb),
    ] {
        if !quick() && kb >= 1024 {
            broken.push(format!("{what} grew RSS by {kb} kB >= 1 MB"));
        }
    }
    broken
}
