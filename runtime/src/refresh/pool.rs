//! The room for background refreshes ([`memoize_detached`](crate::memoize_detached) and
//! its kin): a stale hit hands its refresh over and returns the stale value at once.
//! Blocking refreshes run on a few worker threads fed by a bounded queue; async ones run
//! as tasks on the caller's runtime, at most `workers` at once with at most `queue` more
//! waiting for a turn. A refresh that finds no room is dropped: the stale value keeps
//! being served, the key's claim is released (a later stale hit may try again), and the
//! drop is counted (`Stats::refreshes_dropped`, a DEBUG event, the `metrics` outcome
//! `refresh_dropped`). So under a saturated dependency refreshes in flight never exceed
//! `workers + queue` per kind and process, and misses never queue behind more of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The default number of refreshes running at once ([`set_refresh_limits`]): worker
/// threads for blocking refreshes, and running tasks for async ones.
pub const DEFAULT_REFRESH_WORKERS: usize = 4;
/// The default number of refreshes waiting for a worker ([`set_refresh_limits`]).
pub const DEFAULT_REFRESH_QUEUE: usize = 64;

/// The most background refreshes [`set_refresh_limits`] lets run at once: each is a
/// thread (or a task's permit), and more would only queue in the dependency.
pub const MAX_REFRESH_WORKERS: usize = 1024;

/// The longest queue [`set_refresh_limits`] allows.
pub const MAX_REFRESH_QUEUE: usize = 1 << 20;

/// The bounds in force, fixed by the first background refresh.
#[derive(Clone, Copy)]
struct Limits {
    workers: usize,
    queue: usize,
}

static LIMITS: Mutex<Limits> = Mutex::new(Limits {
    workers: DEFAULT_REFRESH_WORKERS,
    queue: DEFAULT_REFRESH_QUEUE,
});

/// Whether the bounds were fixed (by the first background refresh).
static FIXED: OnceLock<Limits> = OnceLock::new();

/// Sets how many background refreshes run at once (`workers`, from 1 to
/// [`MAX_REFRESH_WORKERS`]: worker threads for blocking refreshes, running tasks for
/// async ones) and how many more wait for a turn (`queue`, at most
/// [`MAX_REFRESH_QUEUE`]); larger values are clamped; a refresh beyond them is dropped and the stale value served.
/// Defaults: [`DEFAULT_REFRESH_WORKERS`] and [`DEFAULT_REFRESH_QUEUE`]. The bounds are
/// fixed by the process's first background refresh: call it at start-up; it returns
/// `false`, changing nothing, once they are.
///
/// ```
/// // Before any memoized call that may refresh in the background.
/// assert!(cache_memoize::set_refresh_limits(2, 16));
/// ```
pub fn set_refresh_limits(workers: usize, queue: usize) -> bool {
    // Under the lock that fixing them takes too: either they are fixed already, or
    // they will be fixed with these.
    let mut limits = LIMITS.lock().unwrap_or_else(PoisonError::into_inner);
    if FIXED.get().is_some() {
        return false;
    }
    *limits = Limits {
        workers: workers.clamp(1, MAX_REFRESH_WORKERS),
        queue: queue.min(MAX_REFRESH_QUEUE),
    };
    true
}

fn limits() -> Limits {
    *FIXED.get_or_init(|| *LIMITS.lock().unwrap_or_else(PoisonError::into_inner))
}

/// A blocking refresh.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The blocking refreshes' queue; `None` if no worker thread could start.
static POOL: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();

/// Hands `job` to a worker thread; `false` if there is no room (`job` is dropped).
pub(crate) fn run(job: Job) -> bool {
    let Some(queue) = POOL.get_or_init(start).as_ref() else {
        return false;
    };
    match queue.try_send(job) {
        Ok(()) => true,
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
    }
}

/// Starts the worker threads; their queue.
fn start() -> Option<SyncSender<Job>> {
    let Limits { workers, queue } = limits();
    let (sender, jobs) = sync_channel::<Job>(queue);
    let jobs = Arc::new(Mutex::new(jobs));
    let mut started = 0;
    for _ in 0..workers {
        let jobs = Arc::clone(&jobs);
        let spawned = std::thread::Builder::new()
            .name("cache-memoize-refresh".into())
            .spawn(move || work(&jobs));
        match spawned {
            Ok(_) => started += 1,
            Err(err) => {
                tracing::warn!(error = %err, started, workers, "cannot start a refresh pool worker thread");
            }
        }
    }
    if started == 0 {
        tracing::warn!(
            "no refresh pool worker thread: detached revalidations are dropped, stale values served"
        );
        return None;
    }
    Some(sender)
}

/// A worker: runs the queue's jobs one after the other, for the life of the process.
fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        // A refresh catches its computation's panic; this keeps the worker should
        // anything else in it panic.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// Async refreshes admitted (running or waiting for a turn).
static ADMITTED: AtomicUsize = AtomicUsize::new(0);

/// The turns of async refreshes: `workers` at once.
static TURNS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();

/// An async refresh's place: given back when dropped (the task ended, or was dropped
/// with its runtime).
pub(crate) struct Admitted(());

impl Drop for Admitted {
    fn drop(&mut self) {
        ADMITTED.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admitted {
    /// Waits for a turn to run (no runtime driver needed); holds it until dropped.
    pub(crate) async fn turn(&self) -> Option<tokio::sync::SemaphorePermit<'static>> {
        TURNS
            .get_or_init(|| tokio::sync::Semaphore::new(limits().workers))
            .acquire()
            .await
            .ok()
    }
}

/// A place for an async refresh, or `None` if `workers + queue` are admitted already.
pub(crate) fn admit_async() -> Option<Admitted> {
    let Limits { workers, queue } = limits();
    let bound = workers.saturating_add(queue);
    ADMITTED
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |admitted| {
            (admitted < bound).then_some(admitted + 1)
        })
        .ok()
        .map(|_| Admitted(()))
}
