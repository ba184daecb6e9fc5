#![doc = include_str!("../../README.md")]

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
pub mod backend;
mod call;
mod coalesce;
mod codec;
mod error;
mod iter;
mod key;
mod keypart;
mod lock;
mod memoize;
mod outcome;
mod refresh;
mod registry;
mod renew;

pub use backend::memory::MemoryBackend;
#[cfg(feature = "redis")]
pub use backend::redis::{RedisBackend, RedisBuilder};
pub use backend::{AsyncBackend, Backend, BoxFuture, CacheBackend, GetOrLock};
pub use cache_memoize_macros::cache_memoize;
pub use codec::Codec;
pub use error::{BoxError, Error, LockError};
pub use iter::{DEFAULT_CHUNK_SIZE, DEFAULT_COMPRESS, MemoIter, memoize_iter, memoize_iter_async};
pub use key::{CacheKey, MAX_KEY_LEN, escape_key_part, make_cache_key, set_key_prefix};
pub use keypart::KeyPart;
pub use lock::{CacheLock, LockGuard, LockOptions};
pub use memoize::{
    DEFAULT_EXPIRE, MemoizeOptions, invalidate, memoize, memoize_async, try_memoize,
    try_memoize_async,
};
pub use refresh::{refresh, refresh_async};
pub use registry::{backend, set_backend, set_shared_backend};
