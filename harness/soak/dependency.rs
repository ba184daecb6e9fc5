//! The saturated dependency: a "database" that answers `permits` queries at once, each
//! taking `query_time`, first come first served (a ticket semaphore: a query waits
//! behind exactly the ones that asked before it). The soak asks it for more than it can
//! answer, from the callers' misses and from the background refreshes of their stale
//! values, and watches two things: how many refreshes reach it at once (at most the
//! refresh pool's workers), and how long a miss takes. Since refreshes ahead of a miss
//! are at most the pool's workers, a miss waits for at most `workers + callers - 1`
//! queries before its own ([`Dependency::ahead_bound`]), counted when it asks; on an
//! idle machine that is [`Dependency::miss_bound`] of time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The name the crate gives its refresh worker threads.
const REFRESH_THREAD: &str = "cache-memoize-refresh";

/// Tickets handed out and queries finished.
#[derive(Default)]
struct Tickets {
    next: u64,
    finished: u64,
}

/// The dependency and what was seen of it.
pub(crate) struct Dependency {
    permits: u64,
    query_time: Duration,
    tickets: Mutex<Tickets>,
    turn: Condvar,
    /// Queries from refresh workers running or waiting now, and the most seen.
    refreshes_now: AtomicUsize,
    refreshes_max: AtomicUsize,
    /// Queries asked in all.
    queries: AtomicU64,
    /// Miss latencies (the whole memoized call) since the last report, in µs.
    misses: Mutex<Vec<u64>>,
    /// The longest a caller's query waited for its turn since the last report, in µs,
    /// and the most refreshes ahead of a caller's query (over the run).
    caller_wait_max: AtomicU64,
    refreshes_ahead_max: AtomicUsize,
    /// The most queries (refreshes' and other callers') ahead of a caller's query when
    /// it asked: running, or waiting for their turn.
    queries_ahead_max: AtomicU64,
}

/// One report's miss latencies (the whole memoized call), and the longest a miss's
/// query waited for its turn at the dependency, in ms.
pub(crate) struct MissLatency {
    pub(crate) count: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) wait_max_ms: f64,
}

/// The dependency's answer when it fails.
#[derive(Debug)]
pub(crate) struct QueryFailed;

thread_local! {
    /// Whether the last query on this thread ran in it (the caller's miss, not a
    /// detached refresh); see [`Dependency::ran_here`].
    static RAN_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Dependency {
    pub(crate) fn new(permits: u64, query_time: Duration) -> Self {
        Self {
            permits: permits.max(1),
            query_time,
            tickets: Mutex::new(Tickets::default()),
            turn: Condvar::new(),
            refreshes_now: AtomicUsize::new(0),
            refreshes_max: AtomicUsize::new(0),
            queries: AtomicU64::new(0),
            misses: Mutex::new(Vec::new()),
            caller_wait_max: AtomicU64::new(0),
            refreshes_ahead_max: AtomicUsize::new(0),
            queries_ahead_max: AtomicU64::new(0),
        }
    }

    /// Asks the dependency for row `id`: waits for its turn, takes `query_time`.
    pub(crate) fn query(&self, id: u64) -> Result<(u64, Vec<u8>), QueryFailed> {
        RAN_HERE.with(|ran| ran.set(true));
        let refresh = std::thread::current().name() == Some(REFRESH_THREAD);
        if refresh {
            let now = self.refreshes_now.fetch_add(1, Ordering::SeqCst) + 1;
            self.refreshes_max.fetch_max(now, Ordering::SeqCst);
        }
        let n = self.queries.fetch_add(1, Ordering::Relaxed);
        let asked = Instant::now();
        let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        let ticket = tickets.next;
        tickets.next += 1;
        if !refresh {
            // Every refresh running or waiting here now is ahead of this query.
            let ahead = self.refreshes_now.load(Ordering::SeqCst);
            self.refreshes_ahead_max.fetch_max(ahead, Ordering::SeqCst);
            self.queries_ahead_max
                .fetch_max(ticket - tickets.finished, Ordering::SeqCst);
        }
        // Tickets enter in order, at most `permits` of them past the finished ones.
        let mut tickets = self
            .turn
            .wait_while(tickets, |t| ticket >= t.finished + self.permits)
            .unwrap_or_else(PoisonError::into_inner);
        drop(tickets);
        if !refresh {
            let waited = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.caller_wait_max.fetch_max(waited, Ordering::Relaxed);
        }
        std::thread::sleep(self.query_time);
        tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        tickets.finished += 1;
        drop(tickets);
        self.turn.notify_all();
        if refresh {
            self.refreshes_now.fetch_sub(1, Ordering::SeqCst);
        }
        // Every fiftieth query fails: a refresh that fails leaves its throttle mark.
        if n % 50 == 49 {
            return Err(QueryFailed);
        }
        Ok((id, vec![7; 100]))
    }

    /// Runs `call` (a memoized call that may query the dependency) and, if the query
    /// ran in this thread (a miss), records how long the call took.
    pub(crate) fn timed<T>(&self, call: impl FnOnce() -> T) -> T {
        RAN_HERE.with(|ran| ran.set(false));
        let started = Instant::now();
        let output = call();
        if RAN_HERE.with(std::cell::Cell::get) {
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.misses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(micros);
        }
        output
    }

    /// The miss latencies since the last call.
    pub(crate) fn take_misses(&self) -> MissLatency {
        let mut micros =
            std::mem::take(&mut *self.misses.lock().unwrap_or_else(PoisonError::into_inner));
        micros.sort_unstable();
        // The `percent`th percentile (nearest rank below), in ms.
        let at = |percent: usize| -> f64 {
            let last = micros.len().saturating_sub(1);
            micros
                .get(last * percent / 100)
                .map_or(0.0, |&us| us as f64 / 1000.0)
        };
        MissLatency {
            count: micros.len(),
            p50_ms: at(50),
            p99_ms: at(99),
            max_ms: at(100),
            wait_max_ms: self.caller_wait_max.swap(0, Ordering::Relaxed) as f64 / 1000.0,
        }
    }

    /// The most refreshes seen at the dependency at once (running or waiting there).
    pub(crate) fn refreshes_max(&self) -> usize {
        self.refreshes_max.load(Ordering::SeqCst)
    }

    /// The most refreshes ahead of a caller's query at the dependency (running there or
    /// waiting for their turn when it asked).
    pub(crate) fn refreshes_ahead_max(&self) -> usize {
        self.refreshes_ahead_max.load(Ordering::SeqCst)
    }

    /// The most queries ahead of a caller's query at the dependency when it asked
    /// (running there or waiting for their turn): what its wait is made of, whatever
    /// the machine's load does to each query's time.
    pub(crate) fn queries_ahead_max(&self) -> u64 {
        self.queries_ahead_max.load(Ordering::SeqCst)
    }

    /// The queries asked so far.
    pub(crate) fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// The most queries that can be ahead of a miss's: `workers` refreshes and
    /// `callers - 1` other misses.
    pub(crate) fn ahead_bound(workers: u64, callers: u64) -> u64 {
        workers + callers.saturating_sub(1)
    }

    /// The longest a miss should take at the dependency when each query takes its
    /// `query_time`: the queries that can be ahead of it, `permits` at a time, and its
    /// own.
    pub(crate) fn miss_bound(&self, workers: u64, callers: u64) -> Duration {
        let rounds = Self::ahead_bound(workers, callers).div_ceil(self.permits) + 1;
        self.query_time * u32::try_from(rounds).unwrap_or(u32::MAX)
    }
}
