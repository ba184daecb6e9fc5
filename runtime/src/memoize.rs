//! The memoize sequence, sync and async side by side:
//! fetch → (miss) lock-or-read → compute → store-and-release.
//!
//! Every backend failure is logged through `tracing` and the value is computed and
//! returned anyway: memoization never breaks the caller.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{CacheBackend, GetOrLock};
use crate::coalesce::{self, Leader, Role};
use crate::codec;
use crate::error::{Error, LockError};
use crate::key::{CacheKey, make_cache_key};
use crate::lock::{CacheLock, LockGuard, LockOptions, new_token};
use crate::refresh::take_forced;
use crate::registry;

/// The default time a memoized value lives: 30 days (Djblets' default).
pub const DEFAULT_EXPIRE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How a value is memoized: its expiry, version, lock, and backend.
///
/// ```
/// use cache_memoize::{LockOptions, MemoizeOptions};
/// use std::time::Duration;
///
/// let opts = MemoizeOptions::new()
///     .expire(Duration::from_secs(600))
///     .lock(LockOptions { timeout: Some(Duration::from_secs(5)), ..LockOptions::default() });
/// let answer: u32 = cache_memoize::memoize("answer", &opts, || 6 * 7);
/// assert_eq!(answer, 42);
/// ```
#[derive(Clone)]
pub struct MemoizeOptions {
    expire: Duration,
    version: u32,
    force_overwrite: bool,
    lock: Option<LockOptions>,
    backend: Option<Arc<dyn CacheBackend>>,
}

impl Default for MemoizeOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoizeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoizeOptions")
            .field("expire", &self.expire)
            .field("version", &self.version)
            .field("force_overwrite", &self.force_overwrite)
            .field("lock", &self.lock)
            .field("own_backend", &self.backend.is_some())
            .finish()
    }
}

impl MemoizeOptions {
    /// Values live 30 days, version 0, no lock, the registered backend.
    pub fn new() -> Self {
        Self {
            expire: DEFAULT_EXPIRE,
            version: 0,
            force_overwrite: false,
            lock: None,
            backend: None,
        }
    }

    /// How long a stored value lives.
    #[must_use]
    pub fn expire(mut self, expire: Duration) -> Self {
        self.expire = expire;
        self
    }

    /// A number stored with the value; a value stored under another version reads as
    /// a miss. Bump it when the value's type changes meaning.
    #[must_use]
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Always compute and store, ignoring (and replacing) a stored value.
    #[must_use]
    pub fn force_overwrite(mut self, force: bool) -> Self {
        self.force_overwrite = force;
        self
    }

    /// Recompute under a [`CacheLock`] with these options, so that after a miss one
    /// caller computes while the others wait and read its result.
    #[must_use]
    pub fn lock(mut self, lock: LockOptions) -> Self {
        self.lock = Some(lock);
        self
    }

    /// Uses `backend` instead of the registered one.
    #[must_use]
    pub fn backend(mut self, backend: Arc<dyn CacheBackend>) -> Self {
        self.backend = Some(backend);
        self
    }
}

/// Returns the value memoized at `key`, computing and storing it on a miss.
///
/// With [`MemoizeOptions::lock`], a miss is recomputed once across every caller that
/// shares the backend: the others wait, then read the stored value. Backend failures
/// are logged and the value is computed anyway.
///
/// ```
/// use cache_memoize::{memoize, MemoizeOptions};
///
/// let opts = MemoizeOptions::new();
/// let first: String = memoize("greeting:en", &opts, || "hello".to_string());
/// let second: String = memoize("greeting:en", &opts, || unreachable!("stored"));
/// assert_eq!(first, second);
/// ```
pub fn memoize<T, F>(key: &str, opts: &MemoizeOptions, compute: F) -> T
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    match try_memoize(key, opts, || Ok::<T, Infallible>(compute())) {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// Like [`memoize`] for a fallible computation: only `Ok` values are stored; an `Err`
/// is returned as is, nothing is stored, and the lock is released.
pub fn try_memoize<T, E, F>(key: &str, opts: &MemoizeOptions, compute: F) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, E>,
{
    let forced = opts.force_overwrite || take_forced();
    let call = Call::new(key, opts, forced);
    if !forced {
        match call.fetch() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(()) => return compute(),
        }
    }
    let Some(lock) = opts.lock else {
        let value = compute()?;
        call.store(&value);
        return Ok(value);
    };
    loop {
        match coalesce::join(call.key.as_str()) {
            Role::Lead(leader) => return call.lead(leader, lock, compute),
            Role::Follow(flight) => {
                if let Some(value) = flight.wait().and_then(|bytes| call.decode(&bytes)) {
                    return Ok(value);
                }
            }
        }
    }
}

/// The async form of [`memoize`]: waits without blocking the executor.
pub async fn memoize_async<T, Fut>(
    key: &str,
    opts: &MemoizeOptions,
    compute: impl FnOnce() -> Fut,
) -> T
where
    T: Serialize + DeserializeOwned,
    Fut: Future<Output = T>,
{
    let compute = || async move { Ok::<T, Infallible>(compute().await) };
    match try_memoize_async(key, opts, compute).await {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// The async form of [`try_memoize`].
pub async fn try_memoize_async<T, E, Fut>(
    key: &str,
    opts: &MemoizeOptions,
    compute: impl FnOnce() -> Fut,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    Fut: Future<Output = Result<T, E>>,
{
    let forced = opts.force_overwrite || take_forced();
    let call = Call::new(key, opts, forced);
    if !forced {
        match call.fetch_async().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(()) => return compute().await,
        }
    }
    let Some(lock) = opts.lock else {
        let value = compute().await?;
        call.store_async(&value).await;
        return Ok(value);
    };
    loop {
        match coalesce::join(call.key.as_str()) {
            Role::Lead(leader) => return call.lead_async(leader, lock, compute).await,
            Role::Follow(flight) => {
                if let Some(value) = flight.wait_async().await.and_then(|b| call.decode(&b)) {
                    return Ok(value);
                }
            }
        }
    }
}

/// Removes the value memoized at `key` from the registered backend.
pub fn invalidate(key: &str) -> Result<(), Error> {
    registry::backend().delete(make_cache_key(key).as_str())
}

/// What the leader's wait for the lock ended with.
enum Acquired<T> {
    /// Someone stored the value meanwhile (its bytes are shared with followers).
    Found(T, Vec<u8>),
    /// The lock is ours: compute.
    Locked,
}

/// One memoized call: the key, the options and the backend it runs against.
struct Call<'a> {
    key: CacheKey,
    opts: &'a MemoizeOptions,
    backend: Arc<dyn CacheBackend>,
    /// Compute and overwrite whatever is stored (`force_overwrite` or [`refresh`]).
    forced: bool,
}

impl<'a> Call<'a> {
    fn new(key: &str, opts: &'a MemoizeOptions, forced: bool) -> Self {
        Self {
            key: make_cache_key(key),
            opts,
            backend: opts.backend.clone().unwrap_or_else(registry::backend),
            forced,
        }
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Option<T> {
        codec::decode(bytes, self.opts.version)
    }

    /// The stored value; `Err` (already logged) when the backend failed, in which case
    /// the caller computes without the backend.
    fn fetch<T: DeserializeOwned>(&self) -> Result<Option<T>, ()> {
        let read = self.backend.get(self.key.as_str());
        self.read_result(read)
    }

    async fn fetch_async<T: DeserializeOwned>(&self) -> Result<Option<T>, ()> {
        let read = self.backend.get_async(self.key.as_str()).await;
        self.read_result(read)
    }

    fn read_result<T: DeserializeOwned>(
        &self,
        read: Result<Option<Vec<u8>>, Error>,
    ) -> Result<Option<T>, ()> {
        match read {
            Ok(bytes) => Ok(bytes.and_then(|bytes| self.decode(&bytes))),
            Err(err) => {
                self.fail_open(&err);
                Err(())
            }
        }
    }

    fn fail_open(&self, err: &dyn std::error::Error) {
        tracing::warn!(key = %self.key, error = %err, "cache backend failed; computing without it");
    }

    fn encode<T: Serialize>(&self, value: &T) -> Option<Vec<u8>> {
        codec::encode(value, self.opts.version)
            .inspect_err(|err| tracing::warn!(key = %self.key, error = %err, "cannot encode the value; not stored"))
            .ok()
    }

    /// Stores `value` without a lock; returns its encoding.
    fn store<T: Serialize>(&self, value: &T) -> Option<Vec<u8>> {
        let bytes = self.encode(value)?;
        if let Err(err) = self
            .backend
            .set(self.key.as_str(), &bytes, self.opts.expire)
        {
            self.fail_open(&err);
        }
        Some(bytes)
    }

    async fn store_async<T: Serialize>(&self, value: &T) -> Option<Vec<u8>> {
        let bytes = self.encode(value)?;
        if let Err(err) = self
            .backend
            .set_async(self.key.as_str(), &bytes, self.opts.expire)
            .await
        {
            self.fail_open(&err);
        }
        Some(bytes)
    }

    fn lock(&self, options: LockOptions) -> (CacheLock, Option<Duration>) {
        let lock = CacheLock::for_key(&self.key)
            .options(options)
            .backend(Arc::clone(&self.backend));
        let timeout = if options.blocking {
            options.timeout
        } else {
            Some(Duration::ZERO)
        };
        (lock, timeout)
    }

    /// One attempt at the lock: the stored value if someone stored it meanwhile, the
    /// lock if free, `None` while another caller holds it.
    fn interpret<T: DeserializeOwned>(
        &self,
        found: GetOrLock,
    ) -> Option<Result<Acquired<T>, GetOrLock>> {
        match found {
            GetOrLock::Value(bytes) => match self.decode(&bytes) {
                Some(value) => Some(Ok(Acquired::Found(value, bytes))),
                // Unreadable bytes are a miss: take the lock and overwrite them.
                None => Some(Err(GetOrLock::Value(bytes))),
            },
            GetOrLock::Locked => Some(Ok(Acquired::Locked)),
            GetOrLock::Held => None,
        }
    }

    fn attempt<T: DeserializeOwned>(
        &self,
        lock: &CacheLock,
        token: &str,
        expire: Duration,
    ) -> Result<Option<Acquired<T>>, LockError> {
        if !self.forced {
            let found = self.backend.get_or_lock(
                self.key.as_str(),
                lock.key(),
                token.as_bytes(),
                expire,
            )?;
            match self.interpret(found) {
                Some(Ok(acquired)) => return Ok(Some(acquired)),
                None => return Ok(None),
                Some(Err(_unreadable)) => {}
            }
        }
        Ok(self
            .backend
            .add(lock.key(), token.as_bytes(), expire)?
            .then_some(Acquired::Locked))
    }

    async fn attempt_async<T: DeserializeOwned>(
        &self,
        lock: &CacheLock,
        token: &str,
        expire: Duration,
    ) -> Result<Option<Acquired<T>>, LockError> {
        if !self.forced {
            let found = self
                .backend
                .get_or_lock_async(self.key.as_str(), lock.key(), token.as_bytes(), expire)
                .await?;
            match self.interpret(found) {
                Some(Ok(acquired)) => return Ok(Some(acquired)),
                None => return Ok(None),
                Some(Err(_unreadable)) => {}
            }
        }
        Ok(self
            .backend
            .add_async(lock.key(), token.as_bytes(), expire)
            .await?
            .then_some(Acquired::Locked))
    }

    /// Waits until the value is found or the lock is ours.
    fn acquire<T: DeserializeOwned>(
        &self,
        lock: &CacheLock,
        timeout: Option<Duration>,
        token: &str,
        expire: Duration,
    ) -> Result<Acquired<T>, LockError> {
        let mut waiter = lock.waiter(timeout);
        loop {
            if let Some(acquired) = self.attempt(lock, token, expire)? {
                return Ok(acquired);
            }
            waiter.pause(&*self.backend)?;
        }
    }

    async fn acquire_async<T: DeserializeOwned>(
        &self,
        lock: &CacheLock,
        timeout: Option<Duration>,
        token: &str,
        expire: Duration,
    ) -> Result<Acquired<T>, LockError> {
        let mut waiter = lock.waiter(timeout);
        loop {
            if let Some(acquired) = self.attempt_async(lock, token, expire).await? {
                return Ok(acquired);
            }
            waiter.pause_async(&*self.backend).await?;
        }
    }

    /// The leader's path: take the lock (or find the value), compute, store and
    /// release, and share the result with this process's followers.
    fn lead<T, E>(
        &self,
        leader: Leader,
        options: LockOptions,
        compute: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
    {
        let (lock, timeout) = self.lock(options);
        let token = new_token();
        let acquired = self.acquire(&lock, timeout, &token, options.expire);
        let (value, bytes) = match acquired {
            Ok(Acquired::Found(value, bytes)) => (value, Some(bytes)),
            Ok(Acquired::Locked) => {
                let guard = LockGuard::adopt(&lock, Arc::clone(&self.backend), token);
                let value = compute()?;
                let bytes = self.encode(&value);
                if let Some(bytes) = &bytes {
                    self.report_release(guard.store_and_release(
                        self.key.as_str(),
                        bytes,
                        self.opts.expire,
                    ));
                }
                (value, bytes)
            }
            Err(LockError::Backend(err)) => {
                self.fail_open(&err);
                let value = compute()?;
                let bytes = self.encode(&value);
                (value, bytes)
            }
            Err(err) => {
                self.lock_missed(&err);
                if let Ok(Some(value)) = self.fetch() {
                    return Ok(value);
                }
                let value = compute()?;
                let bytes = self.store(&value);
                (value, bytes)
            }
        };
        if let Some(bytes) = bytes {
            leader.land(bytes.into());
        }
        Ok(value)
    }

    async fn lead_async<T, E, Fut>(
        &self,
        leader: Leader,
        options: LockOptions,
        compute: impl FnOnce() -> Fut,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        Fut: Future<Output = Result<T, E>>,
    {
        let (lock, timeout) = self.lock(options);
        let token = new_token();
        let acquired = self
            .acquire_async(&lock, timeout, &token, options.expire)
            .await;
        let (value, bytes) = match acquired {
            Ok(Acquired::Found(value, bytes)) => (value, Some(bytes)),
            Ok(Acquired::Locked) => {
                let guard = LockGuard::adopt(&lock, Arc::clone(&self.backend), token);
                let value = compute().await?;
                let bytes = self.encode(&value);
                if let Some(bytes) = &bytes {
                    self.report_release(
                        guard
                            .store_and_release_async(self.key.as_str(), bytes, self.opts.expire)
                            .await,
                    );
                }
                (value, bytes)
            }
            Err(LockError::Backend(err)) => {
                self.fail_open(&err);
                let value = compute().await?;
                let bytes = self.encode(&value);
                (value, bytes)
            }
            Err(err) => {
                self.lock_missed(&err);
                if let Ok(Some(value)) = self.fetch_async().await {
                    return Ok(value);
                }
                let value = compute().await?;
                let bytes = self.store_async(&value).await;
                (value, bytes)
            }
        };
        if let Some(bytes) = bytes {
            leader.land(bytes.into());
        }
        Ok(value)
    }

    fn report_release(&self, released: Result<bool, Error>) {
        match released {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                key = %self.key,
                "the lock expired while computing; another caller may have computed too (raise the lock's expire)"
            ),
            Err(err) => self.fail_open(&err),
        }
    }

    fn lock_missed(&self, err: &LockError) {
        tracing::warn!(key = %self.key, error = %err, "lock not acquired; computing without it");
    }
}
