//! [`MemoizeOptions`]: how one memoized function stores, locks and refreshes, and the
//! typed forms the sequence reads them as ([`Refresh`], [`Wait`]).

use std::sync::Arc;
use std::time::Duration;

use crate::backend::CacheBackend;
use crate::codec::Codec;
use crate::lock::LockOptions;
use crate::registry;

/// The default largest chunk of a memoized iterator: 1 MiB (Djblets' size).
pub const DEFAULT_CHUNK_SIZE: usize = 1024 * 1024;

/// Whether iterator chunks are compressed by default; chosen from the measurements in
/// BENCHMARKS.md (`cargo run --release --example iter_memory`).
pub const DEFAULT_COMPRESS: bool = true;

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
    pub(crate) codec: Codec,
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
            chunk_size: DEFAULT_CHUNK_SIZE,
            compress: DEFAULT_COMPRESS,
            codec: Codec::Bincode,
        }
    }

    /// How long a stored value lives: clamped to at least
    /// [`MIN_VALUE_EXPIRE`](crate::MIN_VALUE_EXPIRE) (1 ms) and at most
    /// [`MAX_EXPIRE`](crate::MAX_EXPIRE) (100 years), so `Duration::MAX` caches "for
    /// ever" on every backend.
    #[must_use]
    pub fn expire(mut self, expire: Duration) -> Self {
        self.expire = crate::limits::value_expire(expire);
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
    /// caller computes while the others wait and read its result. The options are
    /// clamped as [`LockOptions::clamped`] says (a lock expire of at least 100 ms, a
    /// retry of at least 1 ms, nothing over 100 years).
    #[must_use]
    pub fn lock(mut self, lock: LockOptions) -> Self {
        self.lock = Some(lock.clamped());
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

    /// How values are written (default [`Codec::Bincode`]); choose
    /// [`Codec::MessagePack`] for types bincode cannot read back. Values written with
    /// another codec read as a miss. Memoized iterators' chunks and manifests are
    /// always bincode.
    #[must_use]
    pub fn codec(mut self, codec: Codec) -> Self {
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

/// Whether a call may return the stored value or must compute and overwrite it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// Return the stored value if there is one (the normal case).
    IfMissing,
    /// Compute and overwrite whatever is stored (`force_overwrite`, or [`crate::refresh`]).
    Forced,
}

impl Refresh {
    /// The refresh these options ask for, or `Forced` when `forced_here` (a
    /// [`crate::refresh`] scope armed this call).
    pub(crate) fn of(opts: &MemoizeOptions, forced_here: bool) -> Self {
        if opts.force_overwrite || forced_here {
            Self::Forced
        } else {
            Self::IfMissing
        }
    }
}

/// How long a caller that finds the lock held waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Not at all (`blocking = false`).
    Never,
    /// At most this long (`timeout`).
    For(Duration),
    /// Until the lock is free or the value stored (no `timeout`).
    Forever,
}

impl Wait {
    /// The wait `options` ask for.
    pub(crate) fn of(options: &LockOptions) -> Self {
        match (options.blocking, options.timeout) {
            (false, _) => Self::Never,
            (true, Some(limit)) => Self::For(limit),
            (true, None) => Self::Forever,
        }
    }
}
