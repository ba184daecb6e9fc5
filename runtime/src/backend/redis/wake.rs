//! Wake-ups for lock waiters: one subscriber connection per backend, on a pattern
//! matching every lock's release channel, fed by the release scripts' `PUBLISH`.
//!
//! A waiter returns as soon as the lock it waits for is released. A release that
//! arrived after the waiter's failed attempt but before it started waiting is not
//! lost: the hub remembers when each lock was last released. When the subscriber is
//! disconnected, waiters fall back to their `retry` pause.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::scripts::RELEASE_CHANNEL;

/// How long the subscriber blocks on a read before checking that the backend lives.
const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Release times older than this are forgotten (no waiter can still care).
const REMEMBER: Duration = Duration::from_secs(60);
/// The longest pause between reconnection attempts of the subscriber.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Release times, and the waiters to wake.
#[derive(Default)]
pub(crate) struct Hub {
    state: Mutex<State>,
    released: Condvar,
    released_async: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// When each lock was last released, as seen by the subscriber.
    last_release: HashMap<String, Instant>,
}

impl Hub {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn released_since(state: &State, lock_key: &str, attempted: Instant) -> bool {
        state
            .last_release
            .get(lock_key)
            .is_some_and(|at| *at >= attempted)
    }

    /// Records a release of `lock_key` and wakes every waiter (each checks its key).
    fn release(&self, lock_key: &str) {
        let now = Instant::now();
        let mut state = self.state();
        if state.last_release.len() > 1024 {
            state
                .last_release
                .retain(|_, at| now.duration_since(*at) < REMEMBER);
        }
        state.last_release.insert(lock_key.to_owned(), now);
        drop(state);
        self.released.notify_all();
        self.released_async.notify_waiters();
    }

    /// Blocks until `lock_key` is released after `attempted`, or for `max`.
    pub(crate) fn wait(&self, lock_key: &str, attempted: Instant, max: Duration) {
        let state = self.state();
        let _ = self.released.wait_timeout_while(state, max, |state| {
            !Self::released_since(state, lock_key, attempted)
        });
    }

    /// The async form of [`wait`](Self::wait).
    pub(crate) async fn wait_async(&self, lock_key: &str, attempted: Instant, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let released = self.released_async.notified();
            let mut released = std::pin::pin!(released);
            // Registered before the check: a release in between still wakes us.
            released.as_mut().enable();
            if Self::released_since(&self.state(), lock_key, attempted) {
                return;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return;
            }
        }
    }
}

/// Starts the subscriber thread for `hub`; it ends soon after the hub is dropped.
pub(crate) fn spawn_subscriber(client: redis::Client, connect_timeout: Duration, hub: &Arc<Hub>) {
    let hub = Arc::downgrade(hub);
    let spawned = thread::Builder::new()
        .name("cache-memoize-wake".into())
        .spawn(move || subscribe_until_dropped(&client, connect_timeout, &hub));
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start the lock wake-up thread; waiters will poll");
    }
}

fn subscribe_until_dropped(client: &redis::Client, connect_timeout: Duration, hub: &Weak<Hub>) {
    let mut backoff = Duration::from_millis(50);
    while hub.strong_count() > 0 {
        match listen(client, connect_timeout, hub) {
            Ok(()) => return,
            Err(err) => {
                tracing::debug!(error = %err, "lock wake-up subscriber disconnected; reconnecting");
                thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Listens until the hub is dropped (`Ok`) or the connection fails (`Err`).
fn listen(
    client: &redis::Client,
    connect_timeout: Duration,
    hub: &Weak<Hub>,
) -> redis::RedisResult<()> {
    let mut conn = client.get_connection_with_timeout(connect_timeout)?;
    conn.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut pubsub = conn.as_pubsub();
    pubsub.psubscribe(format!("{RELEASE_CHANNEL}*"))?;
    loop {
        match pubsub.get_message() {
            Ok(message) => {
                let Some(hub) = hub.upgrade() else {
                    return Ok(());
                };
                if let Some(lock_key) = message.get_channel_name().strip_prefix(RELEASE_CHANNEL) {
                    hub.release(lock_key);
                }
            }
            Err(err) if err.is_timeout() => {
                if hub.strong_count() == 0 {
                    return Ok(());
                }
            }
            Err(err) => return Err(err),
        }
    }
}
