//! [`CacheLock`] and [`LockGuard`]: a lock stored in the cache backend, shared by every
//! thread, process and machine that uses the backend (Djblets' `CacheLock`).
//!
//! Acquiring stores a fresh UUID4 token with an atomic `add` and an expiry, so a
//! crashed holder's lock always ends. Releasing and extending compare the token in one
//! atomic step, so they never touch a lock another owner took after ours expired.

pub(crate) mod renew;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::backend::{CacheBackend, LockClaim, Op, Reply};
use crate::error::{Error, LockError};
use crate::key::{CacheKey, make_cache_key};
use crate::registry;

/// How a lock behaves: its expiry and how callers wait for it.
///
/// The defaults are Djblets': expire 30 s, wait without limit, retry every 250 ms plus
/// 0–25 % jitter, blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    /// How long the lock lives unless released or extended. Also the longest a
    /// memoized call already waiting for the lock keeps waiting through backend errors
    /// (a failover) before it computes without it (within `timeout`).
    pub expire: Duration,
    /// How long a blocking acquire waits; `None` waits without limit.
    pub timeout: Option<Duration>,
    /// The pause between attempts while waiting, before jitter, while the waiter is
    /// not subscribed to the lock's release. A memoized call on a `RedisBackend` with
    /// wake-ups polls at `retry` only until its subscription is live (its first
    /// pause, or while the subscriber reconnects); then it pauses until the lock's
    /// release or its expiry (a holder that died is noticed when its lock expires),
    /// checking at least once a second (or every `retry`, if longer).
    /// A [`CacheLock`] acquisition, and backends that cannot promise a wake-up at the
    /// release, poll at `retry` (woken earlier by a release they hear).
    pub retry: Duration,
    /// Whether acquiring a held lock waits (`true`) or fails at once.
    pub blocking: bool,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            expire: Duration::from_secs(30),
            timeout: None,
            retry: Duration::from_millis(250),
            blocking: true,
        }
    }
}

impl LockOptions {
    /// These options within the bounds every consumer applies: `expire` at least
    /// [`MIN_LOCK_EXPIRE`](crate::MIN_LOCK_EXPIRE) (100 ms, so the lock outlives the
    /// round trips that take and renew it), `retry` at least
    /// [`MIN_RETRY`](crate::MIN_RETRY) (1 ms), and `expire`, `retry` and `timeout` at
    /// most [`MAX_EXPIRE`](crate::MAX_EXPIRE) (100 years).
    ///
    /// ```
    /// use cache_memoize::{LockOptions, MIN_LOCK_EXPIRE};
    /// use std::time::Duration;
    ///
    /// let zero = LockOptions { expire: Duration::ZERO, ..LockOptions::default() };
    /// assert_eq!(zero.clamped().expire, MIN_LOCK_EXPIRE);
    /// ```
    #[must_use]
    pub fn clamped(self) -> Self {
        Self {
            expire: crate::limits::lock_expire(self.expire),
            timeout: self.timeout.map(|t| t.min(crate::limits::MAX_EXPIRE)),
            retry: crate::limits::retry(self.retry),
            blocking: self.blocking,
        }
    }

    /// The pause before the next attempt: `retry` plus 0–25 % jitter, so waiters that
    /// started together do not retry together.
    fn pause(&self) -> Duration {
        let jittered = self.retry.as_secs_f64() * (1.0 + fastrand::f64() * 0.25);
        Duration::try_from_secs_f64(jittered).unwrap_or(self.retry)
    }
}

/// A fresh UUID4 token identifying one acquisition.
pub(crate) fn new_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A lock in the cache backend.
///
/// ```
/// use cache_memoize::CacheLock;
/// use std::time::Duration;
///
/// let lock = CacheLock::new("nightly-import").expire(Duration::from_secs(60));
/// let guard = lock.acquire()?;
/// assert!(lock.is_locked()?);
/// // ... work that must not run twice at once ...
/// assert!(guard.release()?);
/// assert!(!lock.is_locked()?);
/// # Ok::<(), cache_memoize::LockError>(())
/// ```
#[derive(Clone)]
pub struct CacheLock {
    key: String,
    /// The key of the value this lock guards (what its fencing tokens are ordered after).
    value_key: String,
    options: LockOptions,
    backend: Option<Arc<dyn CacheBackend>>,
}

impl std::fmt::Debug for CacheLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLock")
            .field("key", &self.key)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl CacheLock {
    /// A lock named `key`, stored at `_lock_:` + [`make_cache_key`]`(key)` in the
    /// registered backend, with the default [`LockOptions`].
    pub fn new(key: &str) -> Self {
        Self::for_key(&make_cache_key(key))
    }

    /// The lock guarding the value at `key`.
    pub fn for_key(key: &CacheKey) -> Self {
        Self {
            key: key.lock_key(),
            value_key: key.to_string(),
            options: LockOptions::default(),
            backend: None,
        }
    }

    /// The lock a refresh of the stale value at `key` holds: the value's own lock, as
    /// [`for_key`](Self::for_key) (a refresh and a miss are ordered by one lock). For
    /// tools and tests that need to see, or stage, a refresh in progress.
    pub fn refreshing(key: &CacheKey) -> Self {
        Self::for_key(key)
    }

    /// Uses `backend` instead of the registered one.
    #[must_use]
    pub fn backend(mut self, backend: Arc<dyn CacheBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Replaces all the options at once, clamped as [`LockOptions::clamped`] says.
    #[must_use]
    pub fn options(mut self, options: LockOptions) -> Self {
        self.options = options.clamped();
        self
    }

    /// How long the lock lives unless released or extended (default 30 s), clamped to
    /// at least [`MIN_LOCK_EXPIRE`](crate::MIN_LOCK_EXPIRE) (100 ms) and at most
    /// [`MAX_EXPIRE`](crate::MAX_EXPIRE) (100 years).
    #[must_use]
    pub fn expire(mut self, expire: Duration) -> Self {
        self.options.expire = crate::limits::lock_expire(expire);
        self
    }

    /// How long [`acquire`](Self::acquire) waits; `None` (the default) waits without
    /// limit. At most [`MAX_EXPIRE`](crate::MAX_EXPIRE) (100 years).
    #[must_use]
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.timeout = timeout.map(|t| t.min(crate::limits::MAX_EXPIRE));
        self
    }

    /// The pause between attempts while waiting (default 250 ms), plus 0–25 % jitter;
    /// clamped to at least [`MIN_RETRY`](crate::MIN_RETRY) (1 ms) and at most
    /// [`MAX_EXPIRE`](crate::MAX_EXPIRE).
    #[must_use]
    pub fn retry(mut self, retry: Duration) -> Self {
        self.options.retry = crate::limits::retry(retry);
        self
    }

    /// Whether [`acquire`](Self::acquire) waits for a held lock (default `true`).
    #[must_use]
    pub fn blocking(mut self, blocking: bool) -> Self {
        self.options.blocking = blocking;
        self
    }

    /// The lock's key in the backend.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lock's options.
    pub fn lock_options(&self) -> &LockOptions {
        &self.options
    }

    pub(crate) fn resolved_backend(&self) -> Arc<dyn CacheBackend> {
        self.backend.clone().unwrap_or_else(registry::backend)
    }

    /// Acquires the lock: at once if free; if held, fails with
    /// [`LockError::WouldBlock`] when not blocking, or else waits until it is free or
    /// until the timeout, then fails with [`LockError::Timeout`].
    pub fn acquire(&self) -> Result<LockGuard, LockError> {
        if !self.options.blocking {
            return self.try_acquire()?.ok_or(LockError::WouldBlock);
        }
        self.acquire_within(self.options.timeout)
    }

    /// Acquires the lock if it is free right now; never waits.
    pub fn try_acquire(&self) -> Result<Option<LockGuard>, LockError> {
        let backend = self.resolved_backend();
        let guard = self.guard(backend, DropRelease::Blocking);
        Ok(guard.take()?)
    }

    /// Acquires the lock, waiting at most `timeout` whatever the lock's own settings.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard, LockError> {
        self.acquire_within(Some(timeout))
    }

    fn acquire_within(&self, timeout: Option<Duration>) -> Result<LockGuard, LockError> {
        let backend = self.resolved_backend();
        let mut waiter = self.waiter(timeout);
        loop {
            if let Some(guard) = self
                .guard(Arc::clone(&backend), DropRelease::Blocking)
                .take()?
            {
                return Ok(guard);
            }
            waiter.pause(&*backend)?;
        }
    }

    /// A guard for one attempt at this lock, with a fresh token.
    fn guard(&self, backend: Arc<dyn CacheBackend>, on_drop: DropRelease) -> LockGuard {
        LockGuard::armed(
            backend,
            self.key.clone(),
            self.value_key.clone(),
            new_token(),
            self.options.expire,
            on_drop,
        )
    }

    /// Like [`acquire`](Self::acquire), waiting without blocking the executor (on
    /// Tokio's timer, or on the backend's wake-ups).
    pub async fn acquire_async(&self) -> Result<LockGuard, LockError> {
        let backend = self.resolved_backend();
        let mut waiter = self.waiter(self.options.timeout);
        loop {
            // Armed before the attempt is sent: if this future is dropped while the
            // reply is awaited, the guard gives back a lock the attempt may have taken.
            let guard = self.guard(Arc::clone(&backend), DropRelease::Spawned);
            if let Some(guard) = guard.take_async().await? {
                return Ok(guard);
            }
            if !self.options.blocking {
                return Err(LockError::WouldBlock);
            }
            waiter.pause_async(&*backend).await?;
        }
    }

    /// Whether anyone holds the lock right now.
    pub fn is_locked(&self) -> Result<bool, LockError> {
        Ok(self.resolved_backend().get(&self.key)?.is_some())
    }

    /// The waiting policy for one acquisition that may wait at most `timeout`.
    pub(crate) fn waiter(&self, timeout: Option<Duration>) -> Waiter<'_> {
        let now = Instant::now();
        Waiter {
            lock: self,
            timeout,
            started: now,
            attempted: now,
        }
    }
}

/// Paces the attempts of one acquisition: `retry` plus jitter between attempts, cut
/// short by the backend's wake-up, and [`LockError::Timeout`] once the timeout passed.
pub(crate) struct Waiter<'a> {
    lock: &'a CacheLock,
    timeout: Option<Duration>,
    started: Instant,
    /// When the attempt that found the lock held began.
    attempted: Instant,
}

impl Waiter<'_> {
    /// Waits before the next attempt, or fails once the timeout has passed.
    pub(crate) fn pause(&mut self, backend: &dyn CacheBackend) -> Result<(), LockError> {
        let pause = self.next_pause()?;
        backend.wait_for_release(&self.lock.key, self.attempted, pause);
        self.attempted = Instant::now();
        Ok(())
    }

    /// The async form of [`pause`](Self::pause).
    pub(crate) async fn pause_async(
        &mut self,
        backend: &dyn CacheBackend,
    ) -> Result<(), LockError> {
        let pause = self.next_pause()?;
        backend
            .wait_for_release_async(&self.lock.key, self.attempted, pause)
            .await;
        self.attempted = Instant::now();
        Ok(())
    }

    fn next_pause(&self) -> Result<Duration, LockError> {
        let waited = self.started.elapsed();
        let pause = self.lock.options.pause();
        match self.timeout {
            None => Ok(pause),
            Some(limit) if waited >= limit => Err(LockError::Timeout {
                key: self.lock.key.clone(),
                waited,
            }),
            Some(limit) => Ok(pause.min(limit.saturating_sub(waited))),
        }
    }
}

/// A held [`CacheLock`]. Dropping it releases the lock (also while unwinding from a
/// panic); [`release`](Self::release) does the same and reports the outcome.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    backend: Arc<dyn CacheBackend>,
    key: String,
    /// The key of the value the lock guards.
    value_key: String,
    token: String,
    /// The acquisition's fencing token (0 until the lock is taken).
    fence: u64,
    expire: Duration,
    /// Until when the lock cannot have expired, and whether an extension or a renewal
    /// found it gone (shared with the renewal).
    liveness: Arc<Liveness>,
    released: bool,
    on_drop: DropRelease,
}

/// How a guard dropped unreleased gives the lock back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropRelease {
    /// With a blocking backend call (a sync caller).
    Blocking,
    /// On a task of the current Tokio runtime, so that an async caller dropped while
    /// it holds the lock (cancelled) never blocks its executor; blocking when there is
    /// no runtime.
    Spawned,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    /// A guard for a lock that may be taken with `token` by a step about to run: made
    /// before the step, so that a caller cancelled during it still gives the lock back.
    /// [`disarm`](Self::disarm) it when the step did not take the lock.
    pub(crate) fn armed(
        backend: Arc<dyn CacheBackend>,
        key: String,
        value_key: String,
        token: String,
        expire: Duration,
        on_drop: DropRelease,
    ) -> Self {
        Self {
            backend,
            key,
            value_key,
            token,
            fence: 0,
            // Whoever armed it, the lock is taken, extended and renewed within bounds.
            expire: crate::limits::lock_expire(expire),
            liveness: Arc::new(Liveness::taken(
                Liveness::now_ms(),
                crate::limits::lock_expire(expire),
            )),
            released: false,
            on_drop,
        }
    }

    /// Until when this lock cannot have expired; see [`Liveness`].
    pub(crate) fn liveness(&self) -> Arc<Liveness> {
        Arc::clone(&self.liveness)
    }

    /// Takes the lock if free: the guard, holding its fencing token; `None` (the
    /// guard disarmed) when another owner holds it.
    fn take(self) -> Result<Option<Self>, Error> {
        let taken = self.backend.take_lock(&self.claim());
        self.settle(taken)
    }

    /// The async form of [`take`](Self::take).
    async fn take_async(self) -> Result<Option<Self>, Error> {
        let claim = self.claim();
        let taken = self.backend.take_lock_async(&claim).await;
        self.settle(taken)
    }

    fn settle(mut self, taken: Result<Option<u64>, Error>) -> Result<Option<Self>, Error> {
        match taken {
            Ok(Some(fence)) => {
                self.fence = fence;
                Ok(Some(self))
            }
            Ok(None) => {
                self.disarm();
                Ok(None)
            }
            // Dropped armed: a lock the failed attempt may have taken is given back.
            Err(err) => Err(err),
        }
    }

    /// Records the fencing token of the acquisition that took the lock.
    pub(crate) fn taken_with(&mut self, fence: u64) {
        self.fence = fence;
    }

    /// Forgets the lock without touching the backend (it was not taken).
    pub(crate) fn disarm(mut self) {
        self.released = true;
    }

    /// The lock as the backend's composite steps take it.
    pub(crate) fn claim(&self) -> LockClaim<'_> {
        LockClaim {
            key: &self.key,
            token: self.token.as_bytes(),
            ttl: self.expire,
            value_key: &self.value_key,
            fence: self.fence,
        }
    }

    /// This acquisition's fencing token: larger than that of every earlier
    /// acquisition of the same lock, so a resource that remembers the largest token
    /// it has seen can refuse the writes of a holder whose lock expired (Kleppmann's
    /// fencing token).
    ///
    /// It is a hybrid logical clock, kept in no key of its own: the backend's clock in
    /// microseconds since the Unix epoch (the Redis server's `TIME`; this process's
    /// clock for [`MemoryBackend`](crate::MemoryBackend)), or one more than the token
    /// the value stored at the lock's key was written under, whichever is larger. So
    /// tokens keep growing across a restart without persistence, a `FLUSHALL` or an
    /// eviction. What can still make a token smaller than an earlier one: the server's
    /// clock stepping back while the key holds no value, or a failover to a replica
    /// whose clock is behind the old primary's by more than the failover took (README,
    /// "Failover").
    ///
    /// ```
    /// use cache_memoize::CacheLock;
    ///
    /// let lock = CacheLock::new("fenced-job");
    /// let first = lock.acquire()?.fencing_token();
    /// let second = lock.acquire()?.fencing_token();
    /// assert!(second > first);
    /// # Ok::<(), cache_memoize::LockError>(())
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.fence
    }

    /// Whether an [`extend`](Self::extend), or the renewal that keeps a memoized
    /// computation's lock alive, found the lock gone (expired, or taken by another
    /// owner). A lost lock's holder may still finish, but its memoized store is
    /// refused.
    pub fn is_lost(&self) -> bool {
        self.liveness.is_lost()
    }

    /// The token stored in the backend for this acquisition (a UUID4).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The lock's key in the backend.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Resets the lock's expiry to `expire` (or the lock's own expiry for `None`),
    /// counted from now. Returns `false`, touching nothing, when the lock was lost (it
    /// expired, and may now belong to someone else).
    /// `expire` is clamped as [`CacheLock::expire`] says.
    pub fn extend(&mut self, expire: Option<Duration>) -> Result<bool, LockError> {
        let ttl = crate::limits::lock_expire(expire.unwrap_or(self.expire));
        let sent_ms = Liveness::now_ms();
        let extended = self
            .backend
            .compare_and_extend(&self.key, self.token.as_bytes(), ttl)?;
        if extended {
            self.liveness.lives(sent_ms, ttl);
        } else {
            self.liveness.lost_at(sent_ms, true);
        }
        Ok(extended)
    }

    /// Releases the lock. Returns `false` when it was no longer ours (it expired, and
    /// may now belong to someone else, whose lock is left alone).
    pub fn release(self) -> Result<bool, LockError> {
        Ok(self.give_back()?)
    }

    /// Like [`release`](Self::release), without blocking the executor.
    pub async fn release_async(self) -> Result<bool, LockError> {
        Ok(self.give_back_async().await?)
    }

    /// [`release`](Self::release), failing only as the backend does.
    pub(crate) fn give_back(self) -> Result<bool, Error> {
        let reply = self.backend.execute(self.release_op());
        self.released(reply)
    }

    /// The async form of [`give_back`](Self::give_back).
    pub(crate) async fn give_back_async(self) -> Result<bool, Error> {
        let reply = self.backend.execute_async(self.release_op()).await;
        self.released(reply)
    }

    /// The step that gives the lock back: a compare-and-delete of its token.
    pub(crate) fn release_op(&self) -> Op<'_> {
        Op::CompareAndDelete {
            key: &self.key,
            expected: self.token.as_bytes(),
        }
    }

    /// Reads the reply to [`release_op`](Self::release_op): whether the lock was still
    /// ours. Only now is the guard released: a caller cancelled before the reply
    /// still releases on drop; a release that failed is not tried again.
    pub(crate) fn released(mut self, reply: Result<Reply, Error>) -> Result<bool, Error> {
        self.released = true;
        reply?.into_applied("compare_and_delete", &self.key)
    }

    /// Stores `value` at `key` and releases the lock in one backend step. Returns
    /// whether the lock was still ours.
    pub(crate) fn store_and_release(
        self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, Error> {
        let reply = self.backend.execute(self.store_op(key, value, ttl));
        self.stored(key, reply)
    }

    /// The step that stores `value` at `key` for `ttl` and releases the lock, as one.
    pub(crate) fn store_op<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Duration) -> Op<'a> {
        Op::StoreAndRelease {
            key,
            value,
            ttl,
            lock: self.claim(),
        }
    }

    /// Reads the reply to [`store_op`](Self::store_op) (of the value at `key`): whether
    /// the lock was still ours. Only if it answered is the guard released: a caller
    /// cancelled before the reply, or a failed step (the backend refused the store, or
    /// did not answer, and may have left the lock), still releases on drop.
    pub(crate) fn stored(mut self, key: &str, reply: Result<Reply, Error>) -> Result<bool, Error> {
        let stored = reply.and_then(|reply| reply.into_applied("store_and_release", key));
        self.released = stored.is_ok();
        stored
    }

    /// Keeps this lock alive (extended at a third of its expiry) until the returned
    /// value drops.
    pub(crate) fn keep_alive(&self) -> crate::lock::renew::Renewal {
        crate::lock::renew::keep_alive(
            &self.backend,
            &self.key,
            &self.token,
            self.expire,
            &self.liveness,
        )
    }
}

/// Until when a held lock cannot have expired (from the start of the step that took
/// or last extended it, plus its expiry, less a tenth for safety), whether a step found
/// it gone before then, and whether any step found it lost (gone, or the backend not
/// answering). A lock gone while it could not have expired was deleted:
/// by an invalidation, which voids the computation under it (its value is returned,
/// not stored) as it must; that is normal operation, reported at DEBUG and counted. A
/// lock that may have expired is worth a WARN.
#[derive(Debug)]
pub(crate) struct Liveness {
    /// Milliseconds since [`EPOCH`].
    until_ms: AtomicU64,
    voided: AtomicBool,
    lost: AtomicBool,
}

/// Where [`Liveness`] counts milliseconds from.
static EPOCH: once_cell::sync::Lazy<Instant> = once_cell::sync::Lazy::new(Instant::now);

impl Liveness {
    /// A lock taken by a step that started at `since_ms`, for `expire`.
    pub(crate) fn taken(since_ms: u64, expire: Duration) -> Self {
        let liveness = Self {
            until_ms: AtomicU64::new(0),
            voided: AtomicBool::new(false),
            lost: AtomicBool::new(false),
        };
        liveness.lives(since_ms, expire);
        liveness
    }

    /// The time now, in milliseconds since [`EPOCH`].
    pub(crate) fn now_ms() -> u64 {
        u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A step that started at `since_ms` took or extended the lock for `expire`.
    pub(crate) fn lives(&self, since_ms: u64, expire: Duration) {
        let expire_ms = u64::try_from(expire.as_millis()).unwrap_or(u64::MAX);
        let until = since_ms.saturating_add(expire_ms - expire_ms / 10);
        self.until_ms.fetch_max(until, Ordering::SeqCst);
    }

    /// A step that started at `at_ms` found the lock lost: `gone` (the backend said
    /// so) or unreachable. Returns whether it is the first to.
    pub(crate) fn lost_at(&self, at_ms: u64, gone: bool) -> bool {
        if gone {
            self.found_gone(at_ms);
        }
        !self.lost.swap(true, Ordering::SeqCst)
    }

    /// Whether a step found the lock lost.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// A step that started at `at_ms` found the lock gone.
    fn found_gone(&self, at_ms: u64) {
        if at_ms < self.until_ms.load(Ordering::SeqCst) {
            self.voided.store(true, Ordering::SeqCst);
        }
    }

    /// Whether a step found the lock gone while it could not have expired (an
    /// extension or a renewal that the backend answered `false`).
    pub(crate) fn was_voided(&self) -> bool {
        self.voided.load(Ordering::SeqCst)
    }

    /// The lock was found gone just now (a store refused): whether it was deleted
    /// while it could not have expired, now or before: voided by an invalidation.
    pub(crate) fn voided_now(&self) -> bool {
        self.found_gone(Self::now_ms());
        self.was_voided()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if self.on_drop == DropRelease::Spawned {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (backend, key, token) = (
                    Arc::clone(&self.backend),
                    std::mem::take(&mut self.key),
                    std::mem::take(&mut self.token),
                );
                let mut pending = PendingRelease {
                    backend,
                    key,
                    token,
                    done: false,
                };
                runtime.spawn(async move {
                    let released = pending
                        .backend
                        .compare_and_delete_async(&pending.key, pending.token.as_bytes())
                        .await;
                    pending.done = true;
                    report_drop_release(&pending.key, released);
                });
                return;
            }
        }
        let released = self
            .backend
            .compare_and_delete(&self.key, self.token.as_bytes());
        report_drop_release(&self.key, released);
    }
}

/// A release spawned on a runtime; if the task is dropped before it ran (the runtime
/// is shutting down), the release is made right there, blocking, so no lock is left
/// to its expiry.
struct PendingRelease {
    backend: Arc<dyn CacheBackend>,
    key: String,
    token: String,
    done: bool,
}

impl Drop for PendingRelease {
    fn drop(&mut self) {
        if !self.done {
            let released = self
                .backend
                .compare_and_delete(&self.key, self.token.as_bytes());
            report_drop_release(&self.key, released);
        }
    }
}

/// Reports a release made by a guard's drop. A lock not found is expected there: the
/// guard may have been armed for a step that never took it.
fn report_drop_release(key: &str, released: Result<bool, Error>) {
    if let Err(err) = released {
        tracing::warn!(key, error = %err, "releasing the lock failed; it ends at its expiry");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_and_locks_cross_threads() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<LockGuard>();
        send_and_sync::<CacheLock>();
    }
}
