//! [`MemoizeOptions`]: how one memoized function stores, locks and refreshes, and the
//! typed forms the sequence reads them as ([`Refresh`], [`Wait`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    pub(crate) large_values: usize,
    pub(crate) codec: Codec,
    pub(crate) freshness: Freshness,
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) name: &'static str,
    /// The values' tags (see [`tags`](Self::tags)).
    pub(crate) tags: Vec<String>,
}

/// How long values stay fresh, stale and servable, and how they are refreshed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Freshness {
    /// How long past `expire` a value may still be served while one caller refreshes it
    /// (zero: not at all).
    pub(crate) stale: Duration,
    /// `XFetch`'s β: 0 turns early refresh off.
    pub(crate) beta: f64,
    /// The largest fraction by which a stored TTL is shortened at random.
    pub(crate) jitter: f64,
    /// After a failed refresh, how long the fleet waits before the next attempt
    /// (`None`: a tenth of `expire`, between 1 s and 1 min).
    pub(crate) fail_safe: Option<Duration>,
}

impl Freshness {
    const NONE: Self = Self {
        stale: Duration::ZERO,
        beta: 0.0,
        jitter: 0.0,
        fail_safe: None,
    };
}

/// Where memoization reads the wall-clock time that values' freshness is measured in
/// (values carry the time they stop being fresh, written by whichever process
/// computed them). The default is the system clock; tests inject their own.
///
/// ```
/// use cache_memoize::{Clock, MemoizeOptions};
/// use std::sync::Arc;
/// use std::time::{Duration, SystemTime};
///
/// /// A clock one hour ahead of the system's.
/// struct Ahead;
/// impl Clock for Ahead {
///     fn now(&self) -> SystemTime {
///         SystemTime::now() + Duration::from_secs(3600)
///     }
/// }
/// let opts = MemoizeOptions::new().clock(Arc::new(Ahead));
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
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
            .field("large_values", &self.large_values)
            .field("codec", &self.codec)
            .field("freshness", &self.freshness)
            .field("own_clock", &self.clock.is_some())
            .field("name", &self.name)
            .field("own_backend", &self.backend.is_some())
            .field("tags", &self.tags)
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
            large_values: crate::large::DEFAULT_LARGE_VALUES,
            codec: Codec::Bincode,
            freshness: Freshness::NONE,
            clock: None,
            name: "",
            tags: Vec::new(),
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

    /// Tags the values stored under these options: [`invalidate_tag`](crate::invalidate_tag)
    /// of any of them makes every value stored with it a miss, in one write however many
    /// there are. A tagged value is read with its tags' epochs, in the same round trip
    /// (one `MGET` on a single Redis server); a value whose tag was invalidated since
    /// it was computed is a miss, never served stale. Replaces earlier tags. Tags apply
    /// to values (`memoize`, `memoize_many` and their forms); a memoized iterator with
    /// tags is not stored (computed on every call).
    ///
    /// Tags usually name the inputs, so build the options per call (`user:{id}`), or
    /// use `#[cache_memoize(tags = ["user:{id}"])]`.
    #[must_use]
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Always compute and store, ignoring (and replacing) a stored value. A forced call
    /// waits for a lock another caller holds (within the lock's `timeout`; without a
    /// `lock`, or non-blocking, for up to its `expire`) so that its value lands after
    /// the holder's; if it still cannot take the lock it returns its value, stores
    /// nothing, and logs a WARN.
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

    /// Serves a value for up to `stale` past its `expire` while exactly one caller
    /// across the fleet refreshes it (stale-while-revalidate), and keeps serving it
    /// while refreshes fail (stale-if-error), never past `expire + stale`. The
    /// backend keeps values for `expire + stale`. Default: zero (a value past `expire`
    /// is a miss).
    ///
    /// The refresh runs under the key's lock (the one a miss takes, so refreshes and
    /// misses are ordered), taken without waiting whether or not [`lock`](Self::lock)
    /// is set: callers that find it held return the stale value at once. A process runs at most one refresh of a key at a time, and a refresher
    /// computes only if the value it reads under the lock is still the one it found
    /// stale. [`memoize`](fn@crate::memoize) and [`try_memoize`](crate::try_memoize)
    /// refresh inline, in the caller that found the value stale;
    /// [`memoize_detached`](crate::memoize_detached) and its kin refresh on a thread
    /// (or a Tokio task), so every caller gets the stale value at once. Memoized
    /// iterators ignore it (see the README).
    ///
    /// ```
    /// use cache_memoize::MemoizeOptions;
    /// use std::time::Duration;
    ///
    /// let opts = MemoizeOptions::new()
    ///     .expire(Duration::from_secs(60))
    ///     .stale(Duration::from_secs(600));
    /// let rate: u32 = cache_memoize::memoize("rate:eur", &opts, || 100);
    /// assert_eq!(rate, 100);
    /// ```
    #[must_use]
    pub fn stale(mut self, stale: Duration) -> Self {
        self.freshness.stale = stale;
        self
    }

    /// After a refresh that failed (returned `Err`, panicked, or could not store), how
    /// long before any caller across the fleet tries again; the stale value is served
    /// meanwhile. Default: a tenth of `expire`, between 1 s and 1 min.
    #[must_use]
    pub fn fail_safe(mut self, throttle: Duration) -> Self {
        self.freshness.fail_safe = Some(throttle.max(Duration::from_millis(100)));
        self
    }

    /// Early refresh (`XFetch`, Vattani et al., VLDB 2015): a fresh value is refreshed
    /// before it expires with a probability that rises as expiry nears, scaled by how
    /// long it took to compute and by `beta` (1.0 is the paper's choice; 0, the
    /// default, turns it off). The refresh runs as a stale one does.
    #[must_use]
    pub fn beta(mut self, beta: f64) -> Self {
        self.freshness.beta = if beta.is_finite() { beta.max(0.0) } else { 0.0 };
        self
    }

    /// Shortens each stored value's TTL (and freshness) by a random fraction of at most
    /// `fraction` (0.1 for "10%"), so values written together do not expire together.
    /// Default: 0 (no jitter). Clamped to `0.0..=0.9`.
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.freshness.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 0.9)
        } else {
            0.0
        };
        self
    }

    /// The memoized function's name, as events and metrics report it (the attribute
    /// sets it to the function's path; empty by default).
    #[must_use]
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Reads wall-clock time from `clock` instead of the system's (for tests, or a
    /// process whose clock is known to be off).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The wall-clock time now, in milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        let now = match &self.clock {
            Some(clock) => clock.now(),
            None => SystemTime::now(),
        };
        now.duration_since(UNIX_EPOCH).map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
    }

    /// The pause the fleet takes after a failed refresh.
    pub(crate) fn fail_safe_throttle(&self) -> Duration {
        self.freshness.fail_safe.unwrap_or_else(|| {
            (self.expire / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
        })
    }

    /// The largest chunk a memoized iterator stores (default 1 MiB); a single item
    /// larger than this gets a chunk of its own.
    #[must_use]
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// Whether a memoized iterator's chunks are LZ4-compressed (see
    /// [`DEFAULT_COMPRESS`] for the default and why).
    #[must_use]
    pub fn compress(mut self, compress: bool) -> Self {
        self.compress = compress;
        self
    }

    /// Values whose encoding is larger than `bytes` (default 1 MiB) are stored in
    /// chunks of 512 KiB, zstd-compressed, then a small manifest under the value's key,
    /// so that no single command carries more than one chunk: a 100 MB value read in
    /// one `GET` holds Redis's one thread, for every other client, for tens of
    /// milliseconds. A large value is stored, fenced, invalidated, judged stale and
    /// delivered to waiters as any value (the manifest takes its place); a read sends one
    /// command per chunk. `usize::MAX` stores every value whole. See the README's
    /// "Large values".
    ///
    /// ```
    /// use cache_memoize::{MemoizeOptions, memoize};
    ///
    /// let opts = MemoizeOptions::new().large_values(64 * 1024);
    /// let big: Vec<u8> = memoize("large-doc", &opts, || vec![7; 1 << 20]);
    /// let again: Vec<u8> = memoize("large-doc", &opts, || unreachable!());
    /// assert_eq!(again, big);
    /// ```
    #[must_use]
    pub fn large_values(mut self, bytes: usize) -> Self {
        self.large_values = bytes;
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
    /// Compute and overwrite whatever is stored (`force_overwrite`, or [`crate::refresh`](fn@crate::refresh)).
    Forced,
    /// Refresh a stale value if no one else is: take the lock without waiting, compute,
    /// store; give up at once if the lock is held.
    Revalidate,
}

impl Refresh {
    /// The refresh these options ask for, or `Forced` when `forced_here` (a
    /// [`crate::refresh`](fn@crate::refresh) scope armed this call).
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
