//! The soak's steady mix, on the registered backend (Redis, with a near cache for the
//! `near:` keys):
//!
//! - `mix` threads, each at a steady rate: reads of `k:{id}` over 1,000,000 keys
//!   (60 % from the first 10,000, so they hit, go stale and are refreshed; the rest
//!   mostly miss and expire: key churn), near-cache reads of `near:{id}` (1,000 keys),
//!   invalidations of either, and memoized iterators (`it:{n}`, 200 sequences of 50
//!   items). Reads are `memoize_detached`: a stale value is served at once and its
//!   refresh handed to the crate's bounded refresh pool.
//! - `db` threads: reads of `db:{id}` (`db_keys`) whose computation queries the
//!   saturated [`Dependency`]; miss latencies are recorded.
//! - one async thread (a current-thread Tokio runtime): `memoize_async_detached` reads of
//!   `k:{id}`, whose refreshes are tasks on that runtime.
//! - one churn thread: batches of short-lived threads, each making a few mix calls.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cache_memoize::{
    LockOptions, MemoizeOptions, invalidate, memoize_async_detached, memoize_detached,
    memoize_iter, try_memoize_detached,
};

use crate::dependency::{Dependency, QueryFailed};

/// The key space of `k:{id}`.
pub(crate) const KEYS: u64 = 1_000_000;
/// The hot part of it.
const HOT_KEYS: u64 = 10_000;
/// The keys read through the near cache.
const NEAR_KEYS: u64 = 1_000;
/// Memoized sequences, and the items of each.
const ITER_KEYS: u64 = 200;
const ITER_ITEMS: u64 = 50;

/// A stored row: an id and 100 bytes.
type Row = (u64, Vec<u8>);

/// What the load runs with.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) expire: Duration,
    pub(crate) stale: Duration,
    pub(crate) lock_expire: Duration,
    pub(crate) fail_safe: Duration,
    pub(crate) mix_threads: usize,
    pub(crate) mix_per_s: u32,
    pub(crate) db_threads: usize,
    /// The keys whose computation queries the dependency (`db:{id}`).
    pub(crate) db_keys: u64,
    pub(crate) async_per_s: u32,
    /// Short-lived threads per batch, and batches per second at most.
    pub(crate) churn_batch: usize,
    pub(crate) churn_batches_per_s: u32,
    /// Calls each short-lived thread makes.
    pub(crate) churn_calls: usize,
}

/// Calls made, by kind, since the start.
#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) reads: AtomicU64,
    pub(crate) near_reads: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) iterations: AtomicU64,
    pub(crate) async_reads: AtomicU64,
    pub(crate) db_reads: AtomicU64,
    pub(crate) db_errors: AtomicU64,
    pub(crate) threads_started: AtomicU64,
    pub(crate) panics: AtomicU64,
}

/// What every load thread shares.
struct Shared {
    shape: Shape,
    values: MemoizeOptions,
    sequences: MemoizeOptions,
    dependency: Arc<Dependency>,
    counts: Arc<Counts>,
    stop: AtomicBool,
}

/// The running load.
pub(crate) struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// When the process started computing values, and when the last computation ended.
static EPOCH: OnceLock<Instant> = OnceLock::new();
static LAST_COMPUTE_MS: AtomicU64 = AtomicU64::new(0);

/// Notes that a computation (whose value is about to be stored) just ended.
fn computed() {
    let since = EPOCH.get_or_init(Instant::now).elapsed();
    LAST_COMPUTE_MS.fetch_max(
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// When the last computation ended (any thread: callers, refresh workers, tasks).
pub(crate) fn last_compute() -> Instant {
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch + Duration::from_millis(LAST_COMPUTE_MS.load(Ordering::Relaxed))
}

fn row(id: u64) -> Row {
    computed();
    (id, vec![1; 100])
}

/// A steady rate: [`tick`](Self::tick) waits for the next slot; a thread that fell
/// behind starts again from now instead of catching up in a burst.
struct Pace {
    every: Duration,
    next: Instant,
}

impl Pace {
    fn per_second(n: u32) -> Self {
        Self {
            every: Duration::from_secs(1) / n.max(1),
            next: Instant::now(),
        }
    }

    /// How long to wait for the next slot (zero if it is due).
    fn delay(&mut self) -> Duration {
        let now = Instant::now();
        if now > self.next + self.every * 10 {
            self.next = now;
        }
        let delay = self.next.saturating_duration_since(now);
        self.next += self.every;
        delay
    }
}

impl Load {
    /// Starts every load thread.
    pub(crate) fn start(shape: Shape, dependency: Arc<Dependency>) -> std::io::Result<Self> {
        EPOCH.get_or_init(Instant::now);
        let lock = LockOptions {
            expire: shape.lock_expire,
            timeout: Some(shape.lock_expire),
            ..LockOptions::default()
        };
        let shared = Arc::new(Shared {
            shape,
            values: MemoizeOptions::new()
                .name("soak::row")
                .expire(shape.expire)
                .stale(shape.stale)
                .fail_safe(shape.fail_safe)
                .lock(lock),
            sequences: MemoizeOptions::new()
                .name("soak::sequence")
                .expire(shape.expire)
                .lock(lock),
            dependency,
            counts: Arc::new(Counts::default()),
            stop: AtomicBool::new(false),
        });
        let mut load = Self {
            shared,
            threads: Vec::new(),
        };
        for n in 0..shape.mix_threads {
            load.spawn(&format!("soak-mix-{n}"), mix_loop)?;
        }
        for n in 0..shape.db_threads {
            load.spawn(&format!("soak-db-{n}"), db_loop)?;
        }
        load.spawn("soak-async", async_loop)?;
        load.spawn("soak-churn", churn_loop)?;
        Ok(load)
    }

    fn spawn(&mut self, name: &str, body: fn(&Shared)) -> std::io::Result<()> {
        let shared = Arc::clone(&self.shared);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&shared))?;
        self.threads.push(handle);
        Ok(())
    }

    /// The calls made so far.
    pub(crate) fn counts(&self) -> &Counts {
        &self.shared.counts
    }

    /// The threads this load runs at most at once besides the short-lived ones: mix,
    /// db, async and churn threads, and the churn thread's batch.
    pub(crate) fn threads_at_most(&self) -> usize {
        self.threads.len() + self.shared.shape.churn_batch
    }

    /// Stops every load thread and waits for them (and their short-lived threads).
    pub(crate) fn stop(self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Runs `op`, counting a panic instead of losing the thread to it.
fn guarded(shared: &Shared, op: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(op)).is_err() {
        shared.counts.panics.fetch_add(1, Ordering::Relaxed);
    }
}

/// A key id: from the hot part 60 % of the time, else from the whole space.
fn key_id() -> u64 {
    if fastrand::u8(0..100) < 60 {
        fastrand::u64(0..HOT_KEYS)
    } else {
        fastrand::u64(0..KEYS)
    }
}

/// One call of the mix.
fn mix_call(shared: &Shared) {
    let counts = &shared.counts;
    match fastrand::u8(0..100) {
        0..70 => {
            let id = key_id();
            let _: Row = memoize_detached(&format!("k:{id}"), &shared.values, move || row(id));
            counts.reads.fetch_add(1, Ordering::Relaxed);
        }
        70..85 => {
            let id = fastrand::u64(0..NEAR_KEYS);
            let _: Row = memoize_detached(&format!("near:{id}"), &shared.values, move || row(id));
            counts.near_reads.fetch_add(1, Ordering::Relaxed);
        }
        85..90 => {
            let key = if fastrand::bool() {
                format!("k:{}", fastrand::u64(0..HOT_KEYS))
            } else {
                format!("near:{}", fastrand::u64(0..NEAR_KEYS))
            };
            // A failed invalidation is the backend's trouble, reported by the crate.
            let _ = invalidate(&key);
            counts.invalidations.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            let n = fastrand::u64(0..ITER_KEYS);
            let items = memoize_iter(&format!("it:{n}"), &shared.sequences, move || {
                (0..ITER_ITEMS).map(move |i| {
                    if i + 1 == ITER_ITEMS {
                        computed();
                    }
                    n * 1000 + i
                })
            });
            let _: u64 = items.sum();
            counts.iterations.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn mix_loop(shared: &Shared) {
    let mut pace = Pace::per_second(shared.shape.mix_per_s);
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(pace.delay());
        guarded(shared, || mix_call(shared));
    }
}

/// Reads through the saturated dependency, as fast as it answers.
fn db_loop(shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        guarded(shared, || {
            let id = fastrand::u64(0..shared.shape.db_keys);
            let dependency = Arc::clone(&shared.dependency);
            let read: Result<Row, QueryFailed> = shared.dependency.timed(|| {
                try_memoize_detached(&format!("db:{id}"), &shared.values, move || {
                    let answer = dependency.query(id);
                    computed();
                    answer
                })
            });
            shared.counts.db_reads.fetch_add(1, Ordering::Relaxed);
            if read.is_err() {
                shared.counts.db_errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Hits take no time: a short pause keeps this thread from spinning on them.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Async reads on a current-thread runtime of this thread's own.
fn async_loop(shared: &Shared) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        shared.counts.panics.fetch_add(1, Ordering::Relaxed);
        return;
    };
    runtime.block_on(async {
        let mut pace = Pace::per_second(shared.shape.async_per_s);
        while !shared.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(pace.delay()).await;
            let id = key_id();
            let _: Row =
                memoize_async_detached(&format!("k:{id}"), &shared.values, move || async move {
                    row(id)
                })
                .await;
            shared.counts.async_reads.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// Batches of short-lived threads, each making a few mix calls.
fn churn_loop(shared: &Shared) {
    let mut pace = Pace::per_second(shared.shape.churn_batches_per_s);
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(pace.delay());
        std::thread::scope(|scope| {
            for _ in 0..shared.shape.churn_batch {
                let started = std::thread::Builder::new().spawn_scoped(scope, || {
                    for _ in 0..shared.shape.churn_calls {
                        guarded(shared, || mix_call(shared));
                    }
                });
                if started.is_ok() {
                    shared
                        .counts
                        .threads_started
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}
