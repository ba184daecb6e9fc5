//! Stampede-proof memoization: a function's result is stored in a shared backend
//! (Redis, or an in-process store); after a miss it is recomputed **once**, under a
//! distributed lock, while every other caller on every thread, process and machine
//! waits and then reads the stored value. A hit costs one round trip (none from the
//! near cache); a broken backend never breaks the caller.
//!
//! ```
//! use cache_memoize::cache_memoize;
//!
//! #[cache_memoize(key = "report:{day}", expire = "1h", lock(timeout = "5s"))]
//! fn daily_report(day: u32) -> String {
//!     format!("report for day {day}") // slow; runs once per miss across all callers
//! }
//!
//! assert_eq!(daily_report(7), "report for day 7"); // miss: computed and stored
//! assert_eq!(daily_report(7), "report for day 7"); // hit: read back
//! ```
//!
//! # Where to start
//!
//! - [`macro@cache_memoize`]: the attribute, with every option. Values live 30 days
//!   unless `expire` says otherwise; an `Option` result stores `None` too unless
//!   `cache_none = false`. Each memoized `f` gets `f_cache_key` and `f_invalidate`.
//! - [`memoize`], [`try_memoize`], [`memoize_async`], [`memoize_iter`]: the function
//!   form, for keys built at run time, with [`MemoizeOptions`]; [`invalidate`] and
//!   [`refresh`] for writes.
//! - Backends: [`MemoryBackend`] (the default: per process) and, with the `redis`
//!   feature, [`RedisBackend`] (shared; [`RedisBuilder`] for timeouts, a cluster,
//!   Sentinel, a [`NearCache`]). Register one with [`set_backend`]; the [`mod@backend`]
//!   module describes how to write another.
//! - [`CacheLock`]: the distributed lock on its own.
//! - [`stats`] and the `tracing` events (and, with the `metrics` feature, counters and
//!   histograms) say what the cache did.
//!
//! The repository's README has the guide (keys, freshness, consistency bounds,
//! operating Redis) and the measurements:
//! <https://github.com/cache-memoize/cache-memoize#readme>.
// docs.rs builds with `--cfg docsrs`: feature-gated items carry a "feature" badge.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
pub mod backend;
mod batch;
mod coalesce;
mod codec;
mod error;
mod fence;
mod identity;
mod iter;
mod kept;
mod key;
mod keypart;
mod large;
mod limits;
mod lock;
mod memoize;
mod observe;
mod options;
mod outcome;
mod refresh;
mod registry;
mod sequence;
mod tags;
mod timer;

// Inlined: the backends are listed as structs on the front page, not as re-export lines.
#[doc(inline)]
pub use backend::memory::MemoryBackend;
#[doc(inline)]
#[cfg_attr(docsrs, doc(cfg(feature = "encryption")))]
#[cfg(feature = "encryption")]
pub use backend::redis::Encryption;
#[doc(inline)]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[cfg(feature = "redis")]
pub use backend::redis::{DEFAULT_NEAR_CACHE_CAPACITY, NearCache, RedisBackend, RedisBuilder};
pub use backend::{
    AsyncBackend, AsyncBackendCore, Backend, BackendCore, BoxFuture, CacheBackend, DecodedValue,
    GetOrLock, ImmediateBackend, KeptValue, LockClaim, Op, Part, Pending, Reply, Store,
};
pub use batch::{memoize_many, memoize_many_async};
pub use cache_memoize_macros::cache_memoize;
pub use codec::Codec;
pub use error::{BoxError, Error, LockError};
pub use iter::{MemoIter, committed_chunk_keys, memoize_iter, memoize_iter_async};
pub use key::{CacheKey, MAX_KEY_LEN, escape_key_part, make_cache_key, set_key_prefix};
pub use keypart::KeyPart;
pub use limits::{MAX_EXPIRE, MIN_LOCK_EXPIRE, MIN_RETRY, MIN_VALUE_EXPIRE};
pub use lock::{CacheLock, LockGuard, LockOptions};
pub use memoize::{
    invalidate, invalidate_async, memoize, memoize_async, try_memoize, try_memoize_async,
};
pub use observe::{Stats, stats};
pub use options::{Clock, DEFAULT_CHUNK_SIZE, DEFAULT_COMPRESS, DEFAULT_EXPIRE, MemoizeOptions};
pub use refresh::{
    DEFAULT_REFRESH_QUEUE, DEFAULT_REFRESH_WORKERS, MAX_REFRESH_QUEUE, MAX_REFRESH_WORKERS,
    memoize_async_detached, memoize_detached, refresh, refresh_async, set_refresh_limits,
    try_memoize_async_detached, try_memoize_detached,
};
pub use registry::{backend, set_backend, set_shared_backend, try_set_backend};
pub use tags::{
    TAG_LIFE, invalidate_tag, invalidate_tag_async, invalidate_tag_in, invalidate_tag_in_async,
};
