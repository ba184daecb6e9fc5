//! [`Witness`]: a backend wrapper that tells each caller's thread what its memoized call
//! went through (its first read, its waits on the lock, whether its own computation
//! ran), so the harness can say which calls waited for a computation from facts the
//! call left behind, not from a latency cutoff. The library keeps no such counter.
//!
//! The record is per thread: a blocking call runs its backend operations on the
//! caller's thread, while a detached refresh runs on a thread of its own and leaves the
//! caller's record alone. Only the blocking half records; the async half forwards.
//!
//! It also counts, for the whole process, the attempts at the key's refresh lock and
//! how many took it: how many refreshes the process started, and how many reached the
//! lock.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cache_memoize::{AsyncBackendCore, BackendCore, BoxFuture, Error, LockClaim, Op, Reply};

/// What one call went through, as seen on its thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The call's first `get`: when it returned (µs since the Unix epoch) and whether
    /// it found any bytes.
    pub(crate) first_read: Option<FirstRead>,
    /// How many times the call blocked in `wait_for_release` (the lock held elsewhere).
    pub(crate) lock_waits: u32,
    /// Whether the call's own compute closure ran on this thread.
    pub(crate) computed: bool,
}

/// The first read of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FirstRead {
    pub(crate) at_us: u64,
    pub(crate) found: bool,
}

thread_local! {
    static SEEN: Cell<Seen> = const {
        Cell::new(Seen { first_read: None, lock_waits: 0, computed: false })
    };
}

/// Starts this thread's record of a call.
pub(crate) fn begin() {
    SEEN.set(Seen::default());
}

/// Ends this thread's record of a call and returns it.
pub(crate) fn end() -> Seen {
    SEEN.take()
}

/// Notes that a computation runs on this thread (called by the compute closure).
pub(crate) fn computing() {
    update(|seen| seen.computed = true);
}

fn update(change: impl FnOnce(&mut Seen)) {
    let mut seen = SEEN.get();
    change(&mut seen);
    SEEN.set(seen);
}

/// Wall-clock microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// Wraps a backend; see the module docs.
pub(crate) struct Witness<B> {
    inner: B,
    /// The refresh lock whose attempts are counted.
    refresh_lock: String,
    attempts: AtomicU64,
    taken: AtomicU64,
}

impl<B> Witness<B> {
    /// Wraps `inner`, counting the attempts at `refresh_lock`.
    pub(crate) fn new(inner: B, refresh_lock: String) -> Self {
        Self {
            inner,
            refresh_lock,
            attempts: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        }
    }

    /// The attempts at the refresh lock so far, and how many took it.
    pub(crate) fn refresh_attempts(&self) -> (u64, u64) {
        (
            self.attempts.load(Ordering::Relaxed),
            self.taken.load(Ordering::Relaxed),
        )
    }

    fn count_attempt(&self, lock: &LockClaim<'_>, taken: &Result<Reply, Error>) {
        if lock.key == self.refresh_lock {
            self.attempts.fetch_add(1, Ordering::Relaxed);
            if matches!(taken, Ok(Reply::Fence(Some(_)))) {
                self.taken.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<B: BackendCore> BackendCore for Witness<B> {
    fn execute(&self, op: Op<'_>) -> Result<Reply, Error> {
        match op {
            Op::Get { .. } | Op::Decoded { .. } => {
                let read = self.inner.execute(op);
                let found = matches!(read, Ok(Reply::Value(Some(_)) | Reply::Decoded(Some(_))));
                let answered = found || matches!(read, Ok(Reply::Value(None)) | Err(_));
                update(|seen| {
                    if answered && seen.first_read.is_none() {
                        let at_us = now_us();
                        seen.first_read = Some(FirstRead { at_us, found });
                    }
                });
                read
            }
            Op::TakeLock { lock } => {
                let taken = self.inner.execute(op);
                self.count_attempt(&lock, &taken);
                taken
            }
            Op::WaitForRelease { .. } => {
                update(|seen| seen.lock_waits += 1);
                self.inner.execute(op)
            }
            op => self.inner.execute(op),
        }
    }
}

impl<B: AsyncBackendCore> AsyncBackendCore for Witness<B> {
    fn execute_async<'a>(&'a self, op: Op<'a>) -> BoxFuture<'a, Result<Reply, Error>> {
        let Op::TakeLock { lock } = op else {
            return self.inner.execute_async(op);
        };
        let taking = self.inner.execute_async(op);
        Box::pin(async move {
            let taken = taking.await;
            self.count_attempt(&lock, &taken);
            taken
        })
    }
}
