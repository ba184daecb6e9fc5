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

use crate::backend::CacheBackend;
use crate::call::{Acquired, Call};
use crate::coalesce::{self, Leader, Role};
use crate::error::{Error, LockError};
use crate::key::make_cache_key;
use crate::lock::{LockGuard, LockOptions, new_token};
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
    pub(crate) expire: Duration,
    pub(crate) version: u32,
    pub(crate) force_overwrite: bool,
    pub(crate) lock: Option<LockOptions>,
    pub(crate) backend: Option<Arc<dyn CacheBackend>>,
    pub(crate) chunk_size: usize,
    pub(crate) compress: bool,
    pub(crate) codec: crate::codec::Codec,
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
            .field("chunk_size", &self.chunk_size)
            .field("compress", &self.compress)
            .field("codec", &self.codec)
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
            chunk_size: crate::iter::DEFAULT_CHUNK_SIZE,
            compress: crate::iter::DEFAULT_COMPRESS,
            codec: crate::codec::Codec::Bincode,
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

    /// Recompute under a [`CacheLock`](crate::CacheLock) with these options, so that after a miss one
    /// caller computes while the others wait and read its result.
    #[must_use]
    pub fn lock(mut self, lock: LockOptions) -> Self {
        self.lock = Some(lock);
        self
    }

    /// The largest chunk a memoized iterator stores (default 1 MiB); a single item
    /// larger than this gets a chunk of its own.
    #[must_use]
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// Whether a memoized iterator's chunks are LZ4-compressed (see
    /// [`DEFAULT_COMPRESS`](crate::DEFAULT_COMPRESS) for the default and why).
    #[must_use]
    pub fn compress(mut self, compress: bool) -> Self {
        self.compress = compress;
        self
    }

    /// How values are written (default [`Codec::Bincode`](crate::Codec::Bincode)); choose
    /// [`Codec::MessagePack`](crate::Codec::MessagePack) for types bincode cannot read
    /// back. Values written with another codec read as a miss. Memoized iterators'
    /// chunks are always bincode.
    #[must_use]
    pub fn codec(mut self, codec: crate::codec::Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Uses `backend` instead of the registered one.
    #[must_use]
    pub fn backend(mut self, backend: Arc<dyn CacheBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The backend these options name, or the registered one.
    pub(crate) fn backend_handle(&self) -> Arc<dyn CacheBackend> {
        self.backend.clone().unwrap_or_else(registry::backend)
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
        match coalesce::join(&call.flight_key()) {
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
        match coalesce::join(&call.flight_key()) {
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

/// The value path's leader: take the lock (or find the value), compute, store and
/// release, and share the result with this process's followers.
impl Call<'_> {
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
                let renewal = guard.keep_alive();
                let value = compute();
                self.report_renewal(&renewal);
                drop(renewal);
                let value = value?;
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
                let renewal = guard.keep_alive();
                let value = compute().await;
                self.report_renewal(&renewal);
                drop(renewal);
                let value = value?;
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
}
