//! In-process coalescing of concurrent misses on one key ("single flight").
//!
//! The first caller to miss a key in this process leads: it alone goes to the backend
//! lock and computes. Later callers wait here, without touching the backend, and read
//! the leader's encoded result. If the leader yields nothing to share (its computation
//! failed or panicked), the waiters run the sequence again themselves.
//!
//! A follower takes the leader's value only if it joined before the leader sent the
//! step that proved the value (the read that found it, the store the backend accepted,
//! or, for a value not stored, the start of its computation). A caller that joins
//! later may have begun after an invalidation that came after that step: it runs the
//! sequence again instead. The leader counts its steps ([`Leader::mark`]); a follower
//! notes the count when it joins, and the landing carries the count of its proof.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use tokio::sync::watch;

/// Where a flight stands (moka's waiter states, by name).
#[derive(Clone)]
enum Stage {
    /// The leader is still at work.
    InFlight,
    /// The leader shared its encoded value, proved by its step number `proof`.
    Landed { bytes: Arc<[u8]>, proof: u64 },
    /// The leader ended without a value to share: its computation failed, panicked,
    /// or its caller was cancelled. Followers run the sequence again.
    Abandoned,
}

impl Stage {
    /// What a follower that joined at step `joined` gets.
    fn landed(&self, joined: u64) -> Landed {
        match self {
            Self::Landed { bytes, proof } if joined < *proof => Landed::Value(Arc::clone(bytes)),
            Self::Landed { .. } | Self::InFlight | Self::Abandoned => Landed::Abandoned,
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
    /// How many steps the leader has sent (see the module docs).
    steps: AtomicU64,
    stage: Mutex<Stage>,
    landed: Condvar,
    landed_async: watch::Sender<bool>,
}

/// A caller's role for one key.
pub(crate) enum Role {
    /// Go to the backend; land the flight when done (or on drop).
    Lead(Leader),
    /// Wait for the leader with [`Following::wait`] or [`Following::wait_async`].
    Follow(Following),
}

/// A follower's place in a flight: the flight, and how many steps its leader had sent
/// when it joined.
pub(crate) struct Following {
    flight: Arc<Flight>,
    joined: u64,
}

/// Joins the flight for `key`, leading it if there is none.
pub(crate) fn join(key: &str) -> Role {
    let mut flights = flights();
    if let Some(flight) = flights.get(key) {
        return Role::Follow(Following {
            flight: Arc::clone(flight),
            joined: flight.steps.load(Ordering::SeqCst),
        });
    }
    let flight = Arc::new(Flight {
        steps: AtomicU64::new(0),
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
}

impl Following {
    /// Blocks until the leader ends, or for at most `max`.
    pub(crate) fn wait(&self, max: Option<Duration>) -> Landed {
        let deadline = max.and_then(|max| Instant::now().checked_add(max));
        let flight = &*self.flight;
        let mut stage = flight.stage();
        while matches!(*stage, Stage::InFlight) {
            stage = match deadline {
                None => flight
                    .landed
                    .wait(stage)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Landed::TimedOut;
                    }
                    flight
                        .landed
                        .wait_timeout(stage, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        stage.landed(self.joined)
    }

    /// Waits, without blocking the executor, until the leader ends, or for at most
    /// `max`.
    pub(crate) async fn wait_async(&self, max: Option<Duration>) -> Landed {
        let mut landed = self.flight.landed_async.subscribe();
        // The sender lives in `self`, so this only returns once the flag is set.
        let ended = landed.wait_for(|done| *done);
        match max {
            None => {
                let _ = ended.await;
            }
            Some(max) => {
                if crate::timer::timeout(max, ended).await.is_none() {
                    return Landed::TimedOut;
                }
            }
        }
        self.flight.stage().landed(self.joined)
    }
}

/// How a follower's wait for its leader ended.
pub(crate) enum Landed {
    /// The leader shared its encoded value.
    Value(Arc<[u8]>),
    /// The leader ended without one (failed, panicked, cancelled, or its store was
    /// refused), or proved it by a step sent before this follower joined: run the
    /// sequence again.
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
    /// Counts a step the leader is about to send (or a computation it is about to
    /// start): followers that join from now on do not take a value it proves.
    pub(crate) fn mark(&self) {
        self.flight.steps.fetch_add(1, Ordering::SeqCst);
    }

    /// Closes the flight to callers that have not joined yet (they start a flight of
    /// their own), before a store: none of them could take the stored value anyway.
    pub(crate) fn close(&self) {
        remove(&self.key, &self.flight);
    }

    /// Shares `encoded`, proved by the last step marked, with the followers that joined
    /// before it; the flight ends when the leader drops.
    pub(crate) fn land(mut self, encoded: Arc<[u8]>) {
        self.landing = Some(encoded);
    }
}

/// Removes `flight` from the map, if it is still the flight of `key`.
fn remove(key: &str, flight: &Arc<Flight>) {
    let mut flights = flights();
    if flights
        .get(key)
        .is_some_and(|current| Arc::ptr_eq(current, flight))
    {
        flights.remove(key);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        remove(&self.key, &self.flight);
        let proof = self.flight.steps.load(Ordering::SeqCst);
        *self.flight.stage() = match self.landing.take() {
            Some(bytes) => Stage::Landed { bytes, proof },
            None => Stage::Abandoned,
        };
        self.flight.landed.notify_all();
        self.flight.landed_async.send_replace(true);
    }
}
