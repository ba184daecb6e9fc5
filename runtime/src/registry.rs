//! The globally registered backend: [`set_backend`] and [`backend`].
//!
//! Until something is registered, the process uses an in-process [`MemoryBackend`].

use std::sync::{Arc, PoisonError, RwLock};

use once_cell::sync::Lazy;

use crate::backend::CacheBackend;
use crate::backend::memory::MemoryBackend;

static BACKEND: Lazy<RwLock<Arc<dyn CacheBackend>>> =
    Lazy::new(|| RwLock::new(Arc::new(MemoryBackend::new())));

/// Registers `backend` for every memoized function and lock in the process that does
/// not name its own, replacing the current one (the default is an in-process
/// [`MemoryBackend`]). Calls already running finish on the backend they started with.
///
/// ```
/// cache_memoize::set_backend(cache_memoize::MemoryBackend::with_capacity(16 << 20));
/// ```
pub fn set_backend<B: CacheBackend>(backend: B) {
    set_shared_backend(Arc::new(backend));
}

/// Like [`set_backend`], for a backend the caller keeps a handle to.
pub fn set_shared_backend(backend: Arc<dyn CacheBackend>) {
    *BACKEND.write().unwrap_or_else(PoisonError::into_inner) = backend;
}

/// The registered backend.
pub fn backend() -> Arc<dyn CacheBackend> {
    Arc::clone(&BACKEND.read().unwrap_or_else(PoisonError::into_inner))
}
