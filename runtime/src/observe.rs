//! What memoization reports about itself: one `tracing` event at DEBUG per call
//! outcome (with the function and the key), process-wide counters read by [`stats`],
//! and, with the `metrics` feature, the same counters and the compute and lock-wait
//! times through the `metrics` facade (so Prometheus, `StatsD` or `OpenTelemetry`
//! exporters work unchanged). A failing backend is reported at WARN once per change
//! of state and then in a summary a minute, not once per call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;

use crate::key::CacheKey;

/// What became of one memoized call (or of one refresh it started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The stored value, read without waiting.
    Hit,
    /// Another call of this process computed it; this one waited in-process.
    Coalesced,
    /// Another caller held the lock; this one waited, then read its value.
    Waited,
    /// Not stored: this call computes (and stores, when it may).
    Miss,
    /// The computation ran (counted with its duration).
    Computed,
    /// A stale (or early-refresh) value was returned.
    StaleServed,
    /// This call refreshes a stale value (it holds the key's lock).
    RefreshStarted,
    /// The lock was not obtained in time (or not at all, when not blocking): computed
    /// without it.
    LockTimeout,
    /// The backend failed: computed without it.
    FailOpen,
    /// A background refresh found no room (`set_refresh_limits`): not started, the
    /// stale value served.
    RefreshDropped,
    /// An invalidation voided the computation's lock: its value was returned, not
    /// stored (it may predate the invalidation).
    Voided,
}

const OUTCOMES: usize = 11;

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Coalesced => "coalesced",
            Self::Waited => "waited",
            Self::Miss => "miss",
            Self::Computed => "computed",
            Self::StaleServed => "stale_served",
            Self::RefreshStarted => "refresh_started",
            Self::LockTimeout => "lock_timeout",
            Self::FailOpen => "fail_open",
            Self::RefreshDropped => "refresh_dropped",
            Self::Voided => "voided",
        }
    }
}

/// One thread's counters. Only the owning thread writes them (a plain load and store,
/// no locked read-modify-write on the hit path); [`stats`] sums the live threads' and
/// [`ENDED`].
struct ThreadCounters([AtomicU64; OUTCOMES]);

/// The counters of every live thread that has counted. A thread's entry leaves when the
/// thread ends (its counts folded into [`ENDED`]), so the list, and the cost of
/// [`stats`], follow the live threads, not every thread the process ever ran.
static LIVE: Mutex<Vec<Arc<ThreadCounters>>> = Mutex::new(Vec::new());

/// The counts of the threads that ended, and of calls made on a thread whose counters
/// were already destroyed (a memoized call in a thread-local's destructor): shared, so
/// counted atomically.
static ENDED: ThreadCounters = ThreadCounters([const { AtomicU64::new(0) }; OUTCOMES]);

/// A thread's entry in [`LIVE`], folded into [`ENDED`] when the thread ends.
struct Registered(Arc<ThreadCounters>);

impl Registered {
    fn new() -> Self {
        let counters = Arc::new(ThreadCounters([const { AtomicU64::new(0) }; OUTCOMES]));
        live().push(Arc::clone(&counters));
        Self(counters)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // Under the list's lock, as `stats` reads: it sees these counts once, either
        // here or in `ENDED`.
        let mut live = live();
        for (total, counter) in ENDED.0.iter().zip(&self.0.0) {
            total.fetch_add(counter.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        if let Some(at) = live.iter().position(|c| Arc::ptr_eq(c, &self.0)) {
            live.swap_remove(at);
        }
        // After a burst of threads, give the room back.
        if live.capacity() > 64 && live.len() < live.capacity() / 4 {
            let keep = live.len() * 2;
            live.shrink_to(keep);
        }
    }
}

fn live() -> std::sync::MutexGuard<'static, Vec<Arc<ThreadCounters>>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    static COUNTERS: Registered = Registered::new();
}

fn count(outcome: Outcome) {
    let counted = COUNTERS.try_with(|counters| {
        let counter = &counters.0.0[outcome as usize];
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    });
    if counted.is_err() {
        ENDED.0[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The live threads' counter entries (for tests: they leave with their thread).
#[doc(hidden)]
pub fn counter_slots() -> usize {
    live().len()
}

/// Records `outcome` for a call of `function` at `key`.
pub(crate) fn record(function: &'static str, key: &CacheKey, outcome: Outcome) {
    count(outcome);
    tracing::debug!(function, key = %key, outcome = outcome.name(), "memoized call");
    #[cfg(feature = "metrics")]
    facade::count(function, outcome);
}

/// Records a computation of `function` at `key` that took `took`.
pub(crate) fn computed(function: &'static str, key: &CacheKey, took: Duration) {
    count(Outcome::Computed);
    tracing::debug!(function, key = %key, outcome = "computed", took_ms = took.as_secs_f64() * 1e3, "memoized call");
    #[cfg(feature = "metrics")]
    {
        facade::count(function, Outcome::Computed);
        facade::record(function, facade::Metric::ComputeSeconds, took);
    }
}

/// Reports a store (of a `what`: value, sequence) refused because the lock was gone:
/// at DEBUG, and counted, when an invalidation voided it while it could not have
/// expired (the value may predate the invalidation: not storing it is the right
/// outcome, and normal operation); at WARN when it may have expired (the computation
/// outlived its lock: renewals failed, or the process stalled).
pub(crate) fn lock_lost(function: &'static str, key: &CacheKey, voided: bool, what: &str) {
    if voided {
        record(function, key, Outcome::Voided);
        tracing::debug!(
            %key,
            "the key was invalidated while computing; the {what} was returned but not stored"
        );
    } else {
        tracing::warn!(
            %key,
            "the lock expired while computing (it outlived its lock: renewals failed, or the process stalled); the {what} was returned but not stored"
        );
    }
}

/// Records that a hit of `function` was answered by the near tier (no command sent);
/// it is counted as a hit too.
pub(crate) fn near_hit(function: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("cache_memoize_near_hits_total", "function" => function).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = function;
}

/// Records that a call of `function` waited `waited` for another caller's lock.
pub(crate) fn waited(function: &'static str, waited: Duration) {
    #[cfg(feature = "metrics")]
    facade::record(function, facade::Metric::LockWaitSeconds, waited);
    #[cfg(not(feature = "metrics"))]
    let _ = (function, waited);
}

/// A snapshot of memoization's counters, summed over every function and backend since
/// the process started (the `metrics` feature reports them per function).
///
/// ```
/// use cache_memoize::{MemoizeOptions, memoize, stats};
///
/// let before = stats();
/// let opts = MemoizeOptions::new();
/// let _: u32 = memoize("stats-doc", &opts, || 1);
/// let _: u32 = memoize("stats-doc", &opts, || 1);
/// let after = stats();
/// assert!(after.misses > before.misses && after.hits > before.hits);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Stored values read without waiting.
    pub hits: u64,
    /// Calls that waited for another call of this process and took its value.
    pub coalesced: u64,
    /// Calls that waited for another caller's lock, then read its value.
    pub waited: u64,
    /// Calls that found nothing stored and computed.
    pub misses: u64,
    /// Computations run (misses, refreshes, forced and fail-open calls).
    pub computed: u64,
    /// Stale (or early-refresh) values returned while a refresh was started.
    pub stale_served: u64,
    /// Refreshes of stale values started (each holding the key's lock).
    pub refreshes: u64,
    /// Calls that gave up on the lock and computed without it.
    pub lock_timeouts: u64,
    /// Calls that computed without the backend because it failed.
    pub fail_open: u64,
    /// Background refreshes not started for lack of room (`set_refresh_limits`): the
    /// stale value was served, and a later stale hit may start one.
    pub refreshes_dropped: u64,
    /// Computations whose store an invalidation voided while they ran: their value was
    /// returned, not stored (normal operation: it may predate the invalidation).
    pub voided: u64,
}

/// The counters now; see [`Stats`]. Costs one pass over the threads alive now that
/// have made a memoized call (an ended thread's counts were folded into one total).
pub fn stats() -> Stats {
    let live = live();
    let total = |outcome: Outcome| {
        live.iter()
            .map(|counters| &**counters)
            .chain([&ENDED])
            .map(|counters| counters.0[outcome as usize].load(Ordering::Relaxed))
            .sum()
    };
    Stats {
        hits: total(Outcome::Hit),
        coalesced: total(Outcome::Coalesced),
        waited: total(Outcome::Waited),
        misses: total(Outcome::Miss),
        computed: total(Outcome::Computed),
        stale_served: total(Outcome::StaleServed),
        refreshes: total(Outcome::RefreshStarted),
        lock_timeouts: total(Outcome::LockTimeout),
        fail_open: total(Outcome::FailOpen),
        refreshes_dropped: total(Outcome::RefreshDropped),
        voided: total(Outcome::Voided),
    }
}

/// How often a backend that keeps failing is summarized at WARN.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Whether any backend is known to be failing (so a healthy call checks one flag).
static ANY_FAILING: AtomicBool = AtomicBool::new(false);

/// Backends known to be failing, by address: since when, and what was suppressed.
static FAILING: Lazy<Mutex<HashMap<usize, Failing>>> = Lazy::new(Mutex::default);

struct Failing {
    last_report: Instant,
    suppressed: u64,
}

/// How long a blocking call may hold a thread inside a Tokio runtime before it is said.
const HELD_TOO_LONG: Duration = Duration::from_millis(100);

/// When [`held_runtime_thread`] last spoke, in milliseconds since [`held_epoch`]
/// plus one (0: never). It speaks at most once a minute, so that a harmless case (a
/// `spawn_blocking` thread) does not silence a later real one for good.
static SAID_HELD: AtomicU64 = AtomicU64::new(0);

/// How often [`held_runtime_thread`] may speak.
const SAY_HELD_EVERY: Duration = Duration::from_secs(60);

/// The instant [`SAID_HELD`] counts from.
fn held_epoch() -> Instant {
    static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);
    *EPOCH
}

/// Says at WARN, with the fix, that a blocking call of the cache (`what`) held a
/// thread inside a Tokio runtime: for `held` (said from 100 ms), or, when `held` is
/// `None`, until its backend timed out (the response timeout). On an async worker every
/// task of that thread waited as long; on a `spawn_blocking` thread (which cannot be
/// told apart) it is harmless, and the line says so. At most once a minute per process;
/// costs a relaxed load and a clock read meanwhile.
#[cold]
pub(crate) fn held_runtime_thread(what: &str, held: Option<Duration>) {
    if held.is_some_and(|held| held < HELD_TOO_LONG)
        || tokio::runtime::Handle::try_current().is_err()
    {
        return;
    }
    let now = u64::try_from(held_epoch().elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let last = SAID_HELD.load(Ordering::Relaxed);
    let every = u64::try_from(SAY_HELD_EVERY.as_millis()).unwrap_or(u64::MAX);
    if (last != 0 && now.saturating_sub(last) < every)
        || SAID_HELD
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let held = match held {
        Some(held) => format!("for {} ms", held.as_millis()),
        None => "until its backend timed out".to_owned(),
    };
    tracing::warn!(
        "{what} held a thread inside a Tokio runtime {held}: on an async worker, every task \
         of that thread waited as long. In async code use the async forms (a memoized \
         `async fn`, `f_invalidate_async`, `cache_memoize::invalidate_async`), or run the \
         blocking call in `tokio::task::spawn_blocking`, where this is harmless (said at \
         most once a minute)"
    );
}

/// Reports a failure of the backend at `backend`: at WARN when it was healthy, then
/// once a minute with how many failures were not reported one by one.
pub(crate) fn backend_failed(
    backend: usize,
    key: &CacheKey,
    error: &dyn std::fmt::Display,
    what: &str,
) {
    let mut failing = FAILING.lock().unwrap_or_else(PoisonError::into_inner);
    ANY_FAILING.store(true, Ordering::Relaxed);
    let now = Instant::now();
    match failing.get_mut(&backend) {
        None => {
            failing.insert(
                backend,
                Failing {
                    last_report: now,
                    suppressed: 0,
                },
            );
            drop(failing);
            tracing::warn!(%key, %error, "{what} (the backend's later failures are summarized once a minute until it recovers)");
        }
        Some(state) if now.duration_since(state.last_report) >= SUMMARY_EVERY => {
            let suppressed = std::mem::take(&mut state.suppressed);
            state.last_report = now;
            drop(failing);
            tracing::warn!(%key, %error, suppressed, "{what} (the backend is still failing; {suppressed} more failures since the last report)");
        }
        Some(state) => state.suppressed += 1,
    }
}

/// Notes that the backend at `backend` answered; reports its recovery if it was
/// failing. Costs one relaxed load while every backend is healthy.
#[inline]
pub(crate) fn backend_answered(backend: usize) {
    if ANY_FAILING.load(Ordering::Relaxed) {
        recovered(backend);
    }
}

/// The backend at `backend` answered while some backend was failing.
#[cold]
fn recovered(backend: usize) {
    let mut failing = FAILING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(state) = failing.remove(&backend) {
        // Good news, said once: INFO, as the breaker's own closing.
        tracing::info!(
            suppressed = state.suppressed,
            "the cache backend answers again; caching resumed"
        );
    }
    if failing.is_empty() {
        ANY_FAILING.store(false, Ordering::Relaxed);
    }
}

/// The `metrics` facade, fed through keys made once per thread, function and metric: a
/// call builds no key (no allocation), so with no recorder installed it costs a
/// lookup in a short per-thread list and the facade's no-op.
#[cfg(feature = "metrics")]
mod facade {
    use std::cell::RefCell;
    use std::time::Duration;

    use metrics::{Key, Label, Level, Metadata};

    use super::{OUTCOMES, Outcome};

    /// What is recorded besides the per-outcome counter.
    #[derive(Clone, Copy)]
    pub(super) enum Metric {
        ComputeSeconds,
        LockWaitSeconds,
    }

    /// Slots per function: one counter per outcome, then the two histograms.
    const SLOTS: usize = OUTCOMES + 2;

    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    type Keys = [Option<Key>; SLOTS];

    thread_local! {
        /// This thread's keys, by function name (a handful of memoized functions: a
        /// list scanned by pointer beats hashing the name).
        static KEYS: RefCell<Vec<(&'static str, Box<Keys>)>> = const { RefCell::new(Vec::new()) };
    }

    fn slot_key(function: &'static str, slot: usize) -> Key {
        let (name, labels) = match slot {
            s if s < OUTCOMES => (
                "cache_memoize_calls_total",
                vec![
                    Label::new("function", function),
                    Label::new("outcome", OUTCOMES_BY_SLOT[s].name()),
                ],
            ),
            s if s == OUTCOMES => (
                "cache_memoize_compute_seconds",
                vec![Label::new("function", function)],
            ),
            _ => (
                "cache_memoize_lock_wait_seconds",
                vec![Label::new("function", function)],
            ),
        };
        Key::from_parts(name, labels)
    }

    const OUTCOMES_BY_SLOT: [Outcome; OUTCOMES] = [
        Outcome::Hit,
        Outcome::Coalesced,
        Outcome::Waited,
        Outcome::Miss,
        Outcome::Computed,
        Outcome::StaleServed,
        Outcome::RefreshStarted,
        Outcome::LockTimeout,
        Outcome::FailOpen,
        Outcome::RefreshDropped,
        Outcome::Voided,
    ];

    /// Runs `f` with the key of `function`'s `slot`.
    fn with_key(function: &'static str, slot: usize, f: impl FnOnce(&Key)) {
        let mut f = Some(f);
        let _ = KEYS.try_with(|keys| {
            // A recorder that memoizes inside its own calls finds the list borrowed:
            // it gets a key made for the occasion (below).
            if let (Ok(mut keys), Some(f)) = (keys.try_borrow_mut(), f.take()) {
                let at = match keys
                    .iter()
                    .position(|(name, _)| std::ptr::eq(*name, function))
                {
                    Some(at) => at,
                    None => {
                        keys.push((function, Box::new([const { None }; SLOTS])));
                        keys.len() - 1
                    }
                };
                f(keys[at].1[slot].get_or_insert_with(|| slot_key(function, slot)));
            }
        });
        // The list borrowed, or already destroyed (a call in a thread-local's
        // destructor).
        if let Some(f) = f {
            f(&slot_key(function, slot));
        }
    }

    pub(super) fn count(function: &'static str, outcome: Outcome) {
        with_key(function, outcome as usize, |key| {
            metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA))
                .increment(1);
        });
    }

    pub(super) fn record(function: &'static str, metric: Metric, took: Duration) {
        let slot = match metric {
            Metric::ComputeSeconds => OUTCOMES,
            Metric::LockWaitSeconds => OUTCOMES + 1,
        };
        with_key(function, slot, |key| {
            metrics::with_recorder(|recorder| recorder.register_histogram(key, &METADATA))
                .record(took.as_secs_f64());
        });
    }
}
