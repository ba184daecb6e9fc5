//! Keeps locks alive while their holders compute: one background thread extends every
//! watched lock at a third of its expiry, so a computation longer than the lock's
//! expiry is not joined by a second one. A renewal that fails (the lock was lost) is
//! recorded for the holder to report.
//!
//! Renewal compares the token, like every lock step: it never extends a lock that
//! another owner took.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;

use crate::backend::CacheBackend;

/// A lock being kept alive.
struct Watched {
    backend: Arc<dyn CacheBackend>,
    key: String,
    token: String,
    expire: Duration,
    due: Instant,
    lost: Arc<AtomicBool>,
}

#[derive(Default)]
struct Watcher {
    watched: Mutex<HashMap<u64, Watched>>,
    changed: Condvar,
    next_id: AtomicU64,
}

static WATCHER: Lazy<Arc<Watcher>> = Lazy::new(|| {
    let watcher = Arc::new(Watcher::default());
    let worker = Arc::clone(&watcher);
    let spawned = thread::Builder::new()
        .name("cache-memoize-renew".into())
        .spawn(move || worker.run());
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start the lock renewal thread; long computations may run twice");
    }
    watcher
});

/// While this lives, the lock it was made for is extended at a third of its expiry.
pub(crate) struct Renewal {
    id: u64,
    lost: Arc<AtomicBool>,
}

impl Renewal {
    /// Whether a renewal found the lock gone (expired, or taken by another owner).
    pub(crate) fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        WATCHER.lock().remove(&self.id);
    }
}

/// Keeps the lock at `key`, held with `token`, alive until the returned value drops.
pub(crate) fn keep_alive(
    backend: &Arc<dyn CacheBackend>,
    key: &str,
    token: &str,
    expire: Duration,
    lost: &Arc<AtomicBool>,
) -> Renewal {
    let watcher = &*WATCHER;
    let id = watcher.next_id.fetch_add(1, Ordering::Relaxed);
    let lost = Arc::clone(lost);
    watcher.lock().insert(
        id,
        Watched {
            backend: Arc::clone(backend),
            key: key.to_owned(),
            token: token.to_owned(),
            expire,
            due: Instant::now() + expire / 3,
            lost: Arc::clone(&lost),
        },
    );
    watcher.changed.notify_all();
    Renewal { id, lost }
}

impl Watcher {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Watched>> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let mut watched = self.lock();
        loop {
            let now = Instant::now();
            let due: Vec<u64> = watched
                .iter()
                .filter(|(_, w)| w.due <= now)
                .map(|(id, _)| *id)
                .collect();
            if due.is_empty() {
                let next = watched.values().map(|w| w.due).min();
                let wait = next.map_or(Duration::from_secs(3600), |at| {
                    at.saturating_duration_since(now)
                });
                watched = self
                    .changed
                    .wait_timeout(watched, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            for id in due {
                let Some(lock) = watched.get_mut(&id) else {
                    continue;
                };
                lock.due = Instant::now() + lock.expire / 3;
                let (backend, key, token, expire, lost) = (
                    Arc::clone(&lock.backend),
                    lock.key.clone(),
                    lock.token.clone(),
                    lock.expire,
                    Arc::clone(&lock.lost),
                );
                // The backend call runs without the map's mutex held.
                drop(watched);
                let extended = backend.compare_and_extend(&key, token.as_bytes(), expire);
                if !matches!(extended, Ok(true)) {
                    lost.store(true, Ordering::SeqCst);
                    tracing::warn!(key, ?extended, "renewing the lock failed while computing");
                }
                watched = self.lock();
            }
        }
    }
}
