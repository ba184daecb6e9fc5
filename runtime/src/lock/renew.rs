//! Keeps locks alive while their holders compute: each backend instance gets its own
//! renewal thread, which extends every lock watched on that backend at a third of its
//! expiry, so a computation longer than the lock's expiry is not joined by a second
//! one. A renewal that fails (the lock was lost, or the backend failed) is recorded for
//! the holder to report.
//!
//! One thread per backend, not one for all: a renewal blocks in its backend call, and
//! a stalled server must not starve the locks held in a healthy one. A thread ends
//! once it has had nothing to watch for [`IDLE`]; the next lock on its backend starts
//! another.
//!
//! Renewal compares the token, like every lock step: it never extends a lock that
//! another owner took. Dropping a [`Renewal`] waits for an extension of its lock already
//! in flight (one backend call, bounded by the backend's timeouts): once it returns, no
//! extension of that lock can land after the holder's release or hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;

use super::Liveness;
use crate::backend::CacheBackend;
use crate::limits::MIN_LOCK_EXPIRE;

/// How long a renewal thread with nothing to watch waits for more before it ends.
const IDLE: Duration = Duration::from_secs(5);

/// A lock being kept alive.
struct Watched {
    key: String,
    token: String,
    expire: Duration,
    due: Instant,
    liveness: Arc<Liveness>,
}

/// The renewals of one backend instance, and the thread that runs them.
struct Watcher {
    backend: Arc<dyn CacheBackend>,
    watched: Mutex<HashMap<u64, Watched>>,
    changed: Condvar,
    /// The lock being extended now (set while `watched` is held), if any.
    renewing: Mutex<Option<u64>>,
    /// Signalled when an extension ends.
    renewed: Condvar,
}

/// The live watchers, by backend instance (the address its `Arc` points at).
static WATCHERS: Lazy<Mutex<HashMap<usize, Arc<Watcher>>>> = Lazy::new(Mutex::default);

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn watchers() -> MutexGuard<'static, HashMap<usize, Arc<Watcher>>> {
    WATCHERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The identity of a backend instance: where its `Arc` points.
fn identity(backend: &Arc<dyn CacheBackend>) -> usize {
    Arc::as_ptr(backend).cast::<()>() as usize
}

/// While this lives, the lock it was made for is extended at a third of its expiry.
pub(crate) struct Renewal {
    id: u64,
    watcher: Arc<Watcher>,
    liveness: Arc<Liveness>,
}

impl Renewal {
    /// Whether a renewal found the lock gone (expired, or taken by another owner), or
    /// could not reach the backend.
    pub(crate) fn lost(&self) -> bool {
        self.liveness.is_lost()
    }

    /// Whether a renewal found the lock gone while it could not have expired: voided
    /// by an invalidation.
    pub(crate) fn voided(&self) -> bool {
        self.liveness.was_voided()
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.watcher.lock().remove(&self.id);
        self.watcher.changed.notify_all();
        // An extension picked before the removal may still be on its way: wait for it,
        // or it could extend the lock after the holder released it or set its hold.
        let renewing = self.watcher.renewing();
        drop(
            self.watcher
                .renewed
                .wait_while(renewing, |renewing| *renewing == Some(self.id))
                .unwrap_or_else(PoisonError::into_inner),
        );
    }
}

/// Keeps the lock at `key`, held with `token`, alive until the returned value drops.
pub(crate) fn keep_alive(
    backend: &Arc<dyn CacheBackend>,
    key: &str,
    token: &str,
    expire: Duration,
    liveness: &Arc<Liveness>,
) -> Renewal {
    // A lock expiring at once would make the loop spin; options are clamped before
    // they get here, and this keeps the loop bounded whatever the caller passed.
    let expire = expire.max(MIN_LOCK_EXPIRE);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let lock = Watched {
        key: key.to_owned(),
        token: token.to_owned(),
        expire,
        due: Instant::now() + expire / 3,
        liveness: Arc::clone(liveness),
    };
    // The map of watchers is held while the lock is added, so a thread deciding to end
    // (which takes the map first too) cannot miss it.
    let mut all = watchers();
    let watcher = match all.get(&identity(backend)) {
        Some(watcher) => Arc::clone(watcher),
        None => {
            let watcher = Arc::new(Watcher {
                backend: Arc::clone(backend),
                watched: Mutex::default(),
                changed: Condvar::new(),
                renewing: Mutex::new(None),
                renewed: Condvar::new(),
            });
            let worker = Arc::clone(&watcher);
            let spawned = thread::Builder::new()
                .name("cache-memoize-renew".into())
                .spawn(move || worker.run());
            match spawned {
                Ok(_) => {
                    all.insert(identity(backend), Arc::clone(&watcher));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start a lock renewal thread; long computations may run twice");
                }
            }
            watcher
        }
    };
    watcher.lock().insert(id, lock);
    drop(all);
    watcher.changed.notify_all();
    Renewal {
        id,
        watcher,
        liveness: Arc::clone(liveness),
    }
}

impl Watcher {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Watched>> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn renewing(&self) -> MutexGuard<'_, Option<u64>> {
        self.renewing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(self: &Arc<Self>) {
        let mut watched = self.lock();
        loop {
            let now = Instant::now();
            if watched.is_empty() {
                watched = self
                    .changed
                    .wait_timeout(watched, IDLE)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                if !watched.is_empty() {
                    continue;
                }
                if self.retire(watched) {
                    return;
                }
                watched = self.lock();
                continue;
            }
            let due: Vec<u64> = watched
                .iter()
                .filter(|(_, w)| w.due <= now)
                .map(|(id, _)| *id)
                .collect();
            if due.is_empty() {
                let next = watched.values().map(|w| w.due).min();
                let wait = next.map_or(IDLE, |at| at.saturating_duration_since(now));
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
                let (key, token, expire, liveness) = (
                    lock.key.clone(),
                    lock.token.clone(),
                    lock.expire,
                    Arc::clone(&lock.liveness),
                );
                // Marked while the map is held: a `Renewal` dropped from now on waits.
                *self.renewing() = Some(id);
                // The backend call runs without the map's mutex held.
                drop(watched);
                self.renew(&key, &token, expire, &liveness);
                *self.renewing() = None;
                self.renewed.notify_all();
                watched = self.lock();
            }
        }
    }

    /// Extends one lock; a lock found gone, or a backend failure, marks it lost (once:
    /// the holder reports it).
    fn renew(&self, key: &str, token: &str, expire: Duration, liveness: &Liveness) {
        let sent_ms = Liveness::now_ms();
        let extended = self
            .backend
            .compare_and_extend(key, token.as_bytes(), expire);
        let first = match extended {
            Ok(true) => {
                liveness.lives(sent_ms, expire);
                return;
            }
            Ok(false) => liveness.lost_at(sent_ms, true),
            Err(_) => liveness.lost_at(sent_ms, false),
        };
        if first {
            tracing::debug!(key, ?extended, "renewing the lock failed while computing");
        }
    }

    /// Ends this watcher if it still has nothing to watch: takes it out of the map of
    /// watchers (locks taken in the map's order, then this watcher's). Returns whether
    /// it ended.
    fn retire(self: &Arc<Self>, watched: MutexGuard<'_, HashMap<u64, Watched>>) -> bool {
        drop(watched);
        let mut all = watchers();
        if !self.lock().is_empty() {
            return false;
        }
        let key = identity(&self.backend);
        if all.get(&key).is_some_and(|w| Arc::ptr_eq(w, self)) {
            all.remove(&key);
        }
        true
    }
}

/// How many renewal threads run now (one per backend with locks being kept alive, or
/// recently so).
#[cfg(test)]
pub(crate) fn threads() -> usize {
    watchers().len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    fn alive() -> Arc<Liveness> {
        Arc::new(Liveness::taken(Liveness::now_ms(), Duration::from_secs(30)))
    }

    #[test]
    fn each_backend_gets_its_own_renewal_thread() {
        let first: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
        let second: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
        let before = threads();
        let a = keep_alive(&first, "a", "t", Duration::from_secs(30), &alive());
        let b = keep_alive(&first, "b", "t", Duration::from_secs(30), &alive());
        let c = keep_alive(&second, "c", "t", Duration::from_secs(30), &alive());
        assert!(
            Arc::ptr_eq(&a.watcher, &b.watcher),
            "one thread per backend"
        );
        assert!(!Arc::ptr_eq(&a.watcher, &c.watcher), "not one for all");
        assert!(threads() >= before + 2);
    }

    #[test]
    fn a_watcher_emptied_and_refilled_keeps_working() {
        let backend: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
        // Each drop empties the watcher; the next lock arrives while it idles.
        for _ in 0..3 {
            drop(keep_alive(
                &backend,
                "k",
                "t",
                Duration::from_secs(30),
                &alive(),
            ));
            std::thread::yield_now();
        }
        let kept = keep_alive(&backend, "k", "t", Duration::from_millis(150), &alive());
        backend
            .add("k", b"t", Duration::from_millis(150))
            .map_err(|err| err.to_string())
            .unwrap_or_else(|err| panic!("{err}"));
        std::thread::sleep(Duration::from_millis(400));
        assert!(!kept.lost(), "renewed past its expiry");
        assert!(matches!(backend.get("k"), Ok(Some(_))));
    }
}
