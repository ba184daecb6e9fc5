//! The globally registered backend: [`set_backend`], [`try_set_backend`] and
//! [`backend`].
//!
//! Until something is registered, the process uses an in-process [`MemoryBackend`].
//! Each registration is logged at INFO with what it replaced, so a second
//! `set_backend` somewhere in a program (a library, a test helper) does not go unseen,
//! and the first memoized call says at INFO which backend it uses and whether its
//! values are shared between processes, so a forgotten `set_backend` does not go
//! unseen either.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use once_cell::sync::Lazy;

use crate::backend::CacheBackend;
use crate::backend::memory::MemoryBackend;

/// The registered backend and what it is, for the log.
struct Registered {
    backend: Arc<dyn CacheBackend>,
    /// The backend's type name, or `None` for the default.
    name: Option<&'static str>,
    /// Whether its values are shared between processes, when the type says so.
    shared: Option<bool>,
}

static BACKEND: Lazy<RwLock<Registered>> = Lazy::new(|| {
    RwLock::new(Registered {
        backend: Arc::new(MemoryBackend::new()),
        name: None,
        shared: Some(false),
    })
});

/// Bumped by every registration, under the registry's write lock: a thread's handle
/// made at an older generation is made again.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// A handle on the registered backend, one per thread: a call clones this thread's
/// handle (a reference count no other core touches) instead of taking the registry's
/// lock and the shared `Arc`'s count, which every core's calls would bounce between
/// them.
pub(crate) type Handle = Arc<Arc<dyn CacheBackend>>;

thread_local! {
    /// This thread's handle and the generation it was made at.
    static LOCAL: RefCell<Option<(u64, Handle)>> = const { RefCell::new(None) };
}

/// The registered backend, as this thread's handle (made again after a registration).
/// A thread keeps its handle on a replaced backend until its next memoized call (or its
/// end), so a replaced backend lives on until every thread that used it has called
/// again or ended.
pub(crate) fn handle() -> Handle {
    // Read before the registry: a registration in between makes the next call read
    // it again.
    let generation = GENERATION.load(Ordering::Acquire);
    let cached = LOCAL.try_with(|local| match &*local.try_borrow().ok()? {
        Some((seen, handle)) if *seen == generation => Some(Arc::clone(handle)),
        _ => None,
    });
    if let Ok(Some(handle)) = cached {
        return handle;
    }
    let handle: Handle = Arc::new(backend());
    // `try_with`: a call from another thread-local's destructor finds this one gone.
    let _ = LOCAL.try_with(|local| {
        if let Ok(mut local) = local.try_borrow_mut() {
            *local = Some((generation, Arc::clone(&handle)));
        }
    });
    handle
}

/// Whether the backend in use was announced (at the first call that asked for it).
static ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// Whether a backend of type `B` shares its values between processes: known for the
/// crate's own backends.
fn shared<B: Any>() -> Option<bool> {
    let id = TypeId::of::<B>();
    if id == TypeId::of::<MemoryBackend>() {
        return Some(false);
    }
    #[cfg(feature = "redis")]
    if id == TypeId::of::<crate::backend::redis::RedisBackend>() {
        return Some(true);
    }
    None
}

/// The name the log gives the default backend.
const DEFAULT_NAME: &str = "the default in-process MemoryBackend";

/// Registers `backend` for every memoized function and lock in the process that does
/// not name its own, replacing the current one (the default is an in-process
/// [`MemoryBackend`]). Calls already running finish on the backend they started with;
/// every call that starts after this returns, on any thread, uses the new one. Each
/// thread holds its own handle on the registered backend (so a call touches no shared
/// reference count): a thread lets go of a replaced backend at its next memoized call,
/// or when it ends. Logs at INFO what it registered and what it replaced.
///
/// ```
/// cache_memoize::set_backend(cache_memoize::MemoryBackend::with_capacity(16 << 20));
/// ```
pub fn set_backend<B: CacheBackend>(backend: B) {
    register(
        Arc::new(backend),
        std::any::type_name::<B>(),
        shared::<B>(),
        true,
    );
}

/// Like [`set_backend`], for a backend the caller keeps a handle to.
pub fn set_shared_backend(backend: Arc<dyn CacheBackend>) {
    register(backend, SHARED_NAME, None, true);
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
    register(
        Arc::new(backend),
        std::any::type_name::<B>(),
        shared::<B>(),
        false,
    )
}

/// The name the log gives a backend registered through [`set_shared_backend`].
const SHARED_NAME: &str = "a shared backend (Arc<dyn CacheBackend>)";

/// Registers `backend` unless `replace` is false and one is registered; logs either way.
fn register(
    backend: Arc<dyn CacheBackend>,
    name: &'static str,
    shared: Option<bool>,
    replace: bool,
) -> bool {
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
            shared,
        },
    );
    // Under the write lock: a thread that sees the new generation reads the new backend.
    GENERATION.fetch_add(1, Ordering::Release);
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
    let registered = BACKEND.read().unwrap_or_else(PoisonError::into_inner);
    let backend = Arc::clone(&registered.backend);
    if !ANNOUNCED.load(Ordering::Relaxed) && !ANNOUNCED.swap(true, Ordering::Relaxed) {
        let (name, shared) = (registered.name, registered.shared);
        // Said with the registry released: a subscriber may call back into it.
        drop(registered);
        announce(name, shared);
    }
    backend
}

/// The INFO line of the first call: the backend in use and whether values are shared.
#[cold]
fn announce(name: Option<&'static str>, shared: Option<bool>) {
    let name = name.unwrap_or(DEFAULT_NAME);
    // The prefix too: processes share values only under the same one.
    let prefix = crate::key::key_prefix();
    match shared {
        Some(false) => tracing::info!(
            backend = name,
            prefix,
            "memoized values are kept in this process only, not shared with other processes; \
             to share them, register a shared backend first: \
             cache_memoize::set_backend(RedisBackend::connect(url)?)"
        ),
        Some(true) => tracing::info!(
            backend = name,
            prefix,
            "memoized values are shared by every process that uses the same server and key prefix"
        ),
        None => tracing::info!(
            backend = name,
            prefix,
            "memoized values are kept by a backend of your own (whether processes share \
             them is up to it)"
        ),
    }
}
