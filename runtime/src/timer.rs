//! The timer of async waits: a sleep that needs no runtime driver. Waiting for a lock's
//! release or for an in-process leader sleeps on it, so those waits work on a Tokio
//! runtime built without `enable_time()` (where Tokio's own timers panic, and no public
//! API says so beforehand), and on any executor.
//!
//! One thread per process (`cache-memoize-timer`), started by the first sleep that has
//! to wait, wakes each sleep at its deadline. It keeps one entry per pending sleep: a
//! dropped sleep removes its waker at once, and its place in the deadline heap is
//! reclaimed when the heap outgrows the live entries. The thread is idle (blocked on a
//! condition variable) when nothing sleeps.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Sleeps until `deadline`.
pub(crate) fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, id: None }
}

/// Sleeps for `duration`.
pub(crate) fn sleep(duration: Duration) -> Sleep {
    sleep_until(deadline_after(duration))
}

/// `future`'s output, or `None` if `deadline` came first.
pub(crate) async fn timeout_at<F: Future>(deadline: Instant, future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut sleep = sleep_until(deadline);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        Pin::new(&mut sleep).poll(cx).map(|()| None)
    })
    .await
}

/// `future`'s output, or `None` if `max` passed first.
pub(crate) async fn timeout<F: Future>(max: Duration, future: F) -> Option<F::Output> {
    timeout_at(deadline_after(max), future).await
}

/// `now + duration`, or about a century from now if that overflows (a wait without
/// limit in all but name).
pub(crate) fn deadline_after(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// A sleep on the process's timer thread.
#[derive(Debug)]
pub(crate) struct Sleep {
    deadline: Instant,
    /// Its entry on the timer, while it waits.
    id: Option<u64>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.forget();
            return Poll::Ready(());
        }
        let Some(timer) = Timer::get() else {
            // No timer thread: end the sleep now (a wait becomes a retry) rather than
            // never.
            return Poll::Ready(());
        };
        let deadline = self.deadline;
        self.id = Some(timer.register(self.id, deadline, cx.waker()));
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.forget();
    }
}

impl Sleep {
    fn forget(&mut self) {
        if let Some(id) = self.id.take() {
            TIMER.state().wakers.remove(&id);
        }
    }
}

/// The process's timer.
static TIMER: Timer = Timer {
    state: Mutex::new(State {
        deadlines: BinaryHeap::new(),
        wakers: BTreeMap::new(),
        next_id: 0,
    }),
    changed: Condvar::new(),
};

/// Whether the timer's thread runs (set by the first sleep that waits).
static STARTED: OnceLock<bool> = OnceLock::new();

struct Timer {
    state: Mutex<State>,
    /// Signalled when an earlier deadline arrives.
    changed: Condvar,
}

struct State {
    /// Deadlines by time; an entry whose waker was removed is skipped when it comes up.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The pending sleeps' wakers and deadlines.
    wakers: BTreeMap<u64, (Instant, Waker)>,
    next_id: u64,
}

impl Timer {
    /// The process's timer, its thread started on first use; `None` if it cannot start.
    fn get() -> Option<&'static Self> {
        let started = STARTED.get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("cache-memoize-timer".into())
                .spawn(|| TIMER.run());
            if let Err(err) = &spawned {
                tracing::warn!(
                    error = %err,
                    "cannot start the timer thread of async waits: they end at once \
                     (a wait becomes a retry)"
                );
            }
            spawned.is_ok()
        });
        started.then_some(&TIMER)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers (or updates) a sleep's waker; its entry's id.
    fn register(&self, id: Option<u64>, deadline: Instant, waker: &Waker) -> u64 {
        let mut state = self.state();
        if let Some(id) = id {
            if let Some((_, known)) = state.wakers.get_mut(&id) {
                known.clone_from(waker);
                return id;
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        let earliest = state
            .deadlines
            .peek()
            .is_none_or(|Reverse((first, _))| deadline < *first);
        state.wakers.insert(id, (deadline, waker.clone()));
        state.deadlines.push(Reverse((deadline, id)));
        // Dropped sleeps leave their deadlines behind: rebuild from the live ones once
        // they are most of the heap, so it stays within twice the pending sleeps.
        if state.deadlines.len() > 64 && state.deadlines.len() > 2 * state.wakers.len() {
            let live = state
                .wakers
                .iter()
                .map(|(&id, &(at, _))| Reverse((at, id)))
                .collect();
            state.deadlines = live;
        }
        drop(state);
        if earliest {
            self.changed.notify_one();
        }
        id
    }

    /// The timer thread: wakes each sleep at its deadline.
    fn run(&self) {
        let mut state = self.state();
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(&Reverse((at, id))) = state.deadlines.peek() {
                if at > now {
                    break;
                }
                state.deadlines.pop();
                if let Some((_, waker)) = state.wakers.remove(&id) {
                    due.push(waker);
                }
            }
            let next = state.deadlines.peek().map(|Reverse((at, _))| *at);
            if !due.is_empty() {
                drop(state);
                due.into_iter().for_each(Waker::wake);
                state = self.state();
                continue;
            }
            state = match next {
                Some(at) => {
                    self.changed
                        .wait_timeout(state, at.saturating_duration_since(now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(future: F) -> F::Output {
        // A runtime with no drivers at all: the timer needs none.
        match tokio::runtime::Builder::new_current_thread().build() {
            Ok(runtime) => runtime.block_on(future),
            Err(err) => panic!("cannot build a runtime: {err}"),
        }
    }

    #[test]
    fn a_sleep_ends_at_its_deadline_on_a_runtime_without_a_timer() {
        let started = Instant::now();
        block_on(sleep(Duration::from_millis(30)));
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_timeout_returns_the_output_of_a_ready_future_and_none_after_the_deadline() {
        assert_eq!(
            block_on(timeout(Duration::from_secs(60), async { 7 })),
            Some(7)
        );
        let never = std::future::pending::<()>();
        assert_eq!(block_on(timeout(Duration::from_millis(10), never)), None);
    }

    #[test]
    fn dropped_sleeps_leave_no_waker_and_the_heap_stays_bounded() {
        block_on(async {
            for _ in 0..1000 {
                let mut sleep = pin!(sleep(Duration::from_secs(3600)));
                let polled = std::future::poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx))).await;
                assert!(polled.is_pending());
            }
        });
        let state = TIMER.state();
        // Other tests may sleep meanwhile: a few live entries at most.
        assert!(state.wakers.len() < 16, "{} wakers", state.wakers.len());
        assert!(state.deadlines.len() <= 2 * state.wakers.len() + 65);
    }
}
