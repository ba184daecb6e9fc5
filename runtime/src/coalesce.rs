//! In-process coalescing of concurrent misses on one key ("single flight").
//!
//! The first caller to miss a key in this process leads: it alone goes to the backend
//! lock and computes. Later callers wait here, without touching the backend, and read
//! the leader's encoded result. If the leader yields nothing to share (its computation
//! failed or panicked), the waiters run the sequence again themselves.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use tokio::sync::watch;

/// Where a flight stands (moka's waiter states, by name).
#[derive(Clone)]
enum Stage {
    /// The leader is still at work.
    InFlight,
    /// The leader shared its encoded value.
    Landed(Arc<[u8]>),
    /// The leader ended without a value to share: its computation failed, panicked,
    /// or its caller was cancelled. Followers run the sequence again.
    Abandoned,
}

impl Stage {
    fn landed(&self) -> Landed {
        match self {
            Self::Landed(bytes) => Landed::Value(Arc::clone(bytes)),
            Self::InFlight | Self::Abandoned => Landed::Abandoned,
        }
    }
}

static FLIGHTS: Lazy<Mutex<HashMap<String, Arc<Flight>>>> = Lazy::new(Mutex::default);

fn flights() -> MutexGuard<'static, HashMap<String, Arc<Flight>>> {
    // The map is only inserted into and removed from; it is valid after any panic.
    FLIGHTS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One computation in progress, and how its followers learn that it ended.
pub(crate) struct Flight {
    stage: Mutex<Stage>,
    landed: Condvar,
    landed_async: watch::Sender<bool>,
}

/// A caller's role for one key.
pub(crate) enum Role {
    /// Go to the backend; land the flight when done (or on drop).
    Lead(Leader),
    /// Wait for the leader with [`Flight::wait`] or [`Flight::wait_async`].
    Follow(Arc<Flight>),
}

/// Joins the flight for `key`, leading it if there is none.
pub(crate) fn join(key: &str) -> Role {
    let mut flights = flights();
    if let Some(flight) = flights.get(key) {
        return Role::Follow(Arc::clone(flight));
    }
    let flight = Arc::new(Flight {
        stage: Mutex::new(Stage::InFlight),
        landed: Condvar::new(),
        landed_async: watch::Sender::new(false),
    });
    flights.insert(key.to_owned(), Arc::clone(&flight));
    Role::Lead(Leader {
        key: key.to_owned(),
        flight,
        landing: None,
    })
}

impl Flight {
    fn stage(&self) -> MutexGuard<'_, Stage> {
        self.stage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks until the leader ends, or for at most `max`.
    pub(crate) fn wait(&self, max: Option<Duration>) -> Landed {
        let deadline = max.and_then(|max| Instant::now().checked_add(max));
        let mut stage = self.stage();
        while matches!(*stage, Stage::InFlight) {
            stage = match deadline {
                None => self
                    .landed
                    .wait(stage)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Landed::TimedOut;
                    }
                    self.landed
                        .wait_timeout(stage, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        stage.landed()
    }

    /// Waits, without blocking the executor, until the leader ends, or for at most
    /// `max`.
    pub(crate) async fn wait_async(&self, max: Option<Duration>) -> Landed {
        let mut landed = self.landed_async.subscribe();
        // The sender lives in `self`, so this only returns once the flag is set.
        let ended = landed.wait_for(|done| *done);
        match max {
            None => {
                let _ = ended.await;
            }
            Some(max) => {
                if tokio::time::timeout(max, ended).await.is_err() {
                    return Landed::TimedOut;
                }
            }
        }
        self.stage().landed()
    }
}

/// How a follower's wait for its leader ended.
pub(crate) enum Landed {
    /// The leader shared its encoded value.
    Value(Arc<[u8]>),
    /// The leader ended without one (failed, panicked, cancelled, or its store was
    /// refused): run the sequence again.
    Abandoned,
    /// The follower's own lock timeout passed first.
    TimedOut,
}

/// The leader's side of a flight. Dropping it without [`land`](Self::land) (an error
/// or a panic) lands nothing, so the followers carry on by themselves.
pub(crate) struct Leader {
    key: String,
    flight: Arc<Flight>,
    landing: Option<Arc<[u8]>>,
}

impl Leader {
    /// Shares `encoded` with the followers; the flight ends when the leader drops.
    pub(crate) fn land(mut self, encoded: Arc<[u8]>) {
        self.landing = Some(encoded);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut flights = flights();
        if flights
            .get(&self.key)
            .is_some_and(|current| Arc::ptr_eq(current, &self.flight))
        {
            flights.remove(&self.key);
        }
        drop(flights);
        *self.flight.stage() = match self.landing.take() {
            Some(bytes) => Stage::Landed(bytes),
            None => Stage::Abandoned,
        };
        self.flight.landed.notify_all();
        self.flight.landed_async.send_replace(true);
    }
}
