//! Stampede-proof memoization (crate docs are filled in with the README tour).

pub mod backend;
mod codec;
mod error;
mod key;
mod registry;

pub use backend::memory::MemoryBackend;
pub use backend::{AsyncBackend, Backend, BoxFuture, CacheBackend, GetOrLock};
pub use error::{BoxError, Error, LockError};
pub use key::{CacheKey, MAX_KEY_LEN, escape_key_part, make_cache_key, set_key_prefix};
pub use registry::{backend, set_backend, set_shared_backend};
