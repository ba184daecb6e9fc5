//! The globally registered backend: [`set_backend`], [`try_set_backend`] and
//! [`backend`].
//!
//! Until something is registered, the process uses an in-process [`MemoryBackend`].
//! Each registration is logged at INFO with what it replaced, so a second
//! `set_backend` somewhere in a program (a library, a test helper) does not go unseen.

use std::sync::{Arc, PoisonError, RwLock};

use once_cell::sync::Lazy;

use crate::backend::CacheBackend;
use crate::backend::memory::MemoryBackend;

/// The registered backend and what it is, for the log.
struct Registered {
    backend: Arc<dyn CacheBackend>,
    /// The backend's type name, or `None` for the default.
    name: Option<&'static str>,
}

static BACKEND: Lazy<RwLock<Registered>> = Lazy::new(|| {
    RwLock::new(Registered {
        backend: Arc::new(MemoryBackend::new()),
        name: None,
    })
});

/// The name the log gives the default backend.
const DEFAULT_NAME: &str = "the default in-process MemoryBackend";

/// Registers `backend` for every memoized function and lock in the process that does
/// not name its own, replacing the current one (the default is an in-process
/// [`MemoryBackend`]). Calls already running finish on the backend they started with.
/// Logs at INFO what it registered and what it replaced.
///
/// ```
/// cache_memoize::set_backend(cache_memoize::MemoryBackend::with_capacity(16 << 20));
/// ```
pub fn set_backend<B: CacheBackend>(backend: B) {
    register(Arc::new(backend), std::any::type_name::<B>(), true);
}

/// Like [`set_backend`], for a backend the caller keeps a handle to.
pub fn set_shared_backend(backend: Arc<dyn CacheBackend>) {
    register(backend, SHARED_NAME, true);
}

/// Registers `backend` only if none has been registered yet (the default in-process
/// [`MemoryBackend`] is replaced): for libraries and set-up code that must not
/// override an application's choice. Returns `false`, leaving the registered backend
/// in place (and dropping `backend`), when one already was.
///
/// ```
/// use cache_memoize::{MemoryBackend, try_set_backend};
///
/// let first = try_set_backend(MemoryBackend::new());
/// // Whatever happened before, a second registration is refused.
/// assert!(!try_set_backend(MemoryBackend::new()));
/// # let _ = first;
/// ```
#[must_use = "false means the backend was not registered"]
pub fn try_set_backend<B: CacheBackend>(backend: B) -> bool {
    register(Arc::new(backend), std::any::type_name::<B>(), false)
}

/// The name the log gives a backend registered through [`set_shared_backend`].
const SHARED_NAME: &str = "a shared backend (Arc<dyn CacheBackend>)";

/// Registers `backend` unless `replace` is false and one is registered; logs either way.
fn register(backend: Arc<dyn CacheBackend>, name: &'static str, replace: bool) -> bool {
    let mut registered = BACKEND.write().unwrap_or_else(PoisonError::into_inner);
    if let (false, Some(current)) = (replace, registered.name) {
        drop(registered);
        tracing::info!(
            refused = name,
            registered = current,
            "cache backend not registered: one is already (try_set_backend does not replace)"
        );
        return false;
    }
    let replaced = std::mem::replace(
        &mut *registered,
        Registered {
            backend,
            name: Some(name),
        },
    );
    drop(registered);
    tracing::info!(
        registered = name,
        replaced = replaced.name.unwrap_or(DEFAULT_NAME),
        "cache backend registered"
    );
    true
}

/// The registered backend.
pub fn backend() -> Arc<dyn CacheBackend> {
    Arc::clone(
        &BACKEND
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .backend,
    )
}
