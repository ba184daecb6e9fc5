// The crate's README (a copy of the workspace's, kept equal by a test) is its front page.
#![doc = include_str!("../README.md")]
// docs.rs builds with `--cfg docsrs`: feature-gated items carry a "feature" badge.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
pub mod backend;
mod call;
mod coalesce;
mod codec;
mod error;
mod fence;
mod identity;
mod iter;
mod kept;
mod key;
mod keypart;
mod limits;
mod lock;
mod memoize;
mod observe;
mod options;
mod outcome;
mod refresh;
mod refresh_pool;
mod refreshing;
mod registry;
mod renew;
mod revalidate;
mod sequence;
mod timer;

// Inlined: the backends are listed as structs on the front page, not as re-export lines.
#[doc(inline)]
pub use backend::memory::MemoryBackend;
#[doc(inline)]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[cfg(feature = "redis")]
pub use backend::redis::{DEFAULT_NEAR_CACHE_CAPACITY, NearCache, RedisBackend, RedisBuilder};
pub use backend::{
    AsyncBackend, AsyncBackendCore, Backend, BackendCore, BoxFuture, CacheBackend, DecodedValue,
    GetOrLock, ImmediateBackend, KeptValue, LockClaim, Op, Pending, Reply, Store,
};
pub use cache_memoize_macros::cache_memoize;
pub use codec::Codec;
pub use error::{BoxError, Error, LockError};
pub use iter::{MemoIter, committed_chunk_keys, memoize_iter, memoize_iter_async};
pub use key::{CacheKey, MAX_KEY_LEN, escape_key_part, make_cache_key, set_key_prefix};
pub use keypart::KeyPart;
pub use limits::{MAX_EXPIRE, MIN_LOCK_EXPIRE, MIN_RETRY, MIN_VALUE_EXPIRE};
pub use lock::{CacheLock, LockGuard, LockOptions};
pub use memoize::{invalidate, memoize, memoize_async, try_memoize, try_memoize_async};
pub use observe::{Stats, stats};
pub use options::{Clock, DEFAULT_CHUNK_SIZE, DEFAULT_COMPRESS, DEFAULT_EXPIRE, MemoizeOptions};
pub use refresh::{refresh, refresh_async};
pub use refresh_pool::{
    DEFAULT_REFRESH_QUEUE, DEFAULT_REFRESH_WORKERS, MAX_REFRESH_QUEUE, MAX_REFRESH_WORKERS,
    set_refresh_limits,
};
pub use registry::{backend, set_backend, set_shared_backend, try_set_backend};
pub use revalidate::{
    memoize_async_detached, memoize_detached, try_memoize_async_detached, try_memoize_detached,
};
