//! The storage interface: every operation is an [`Op`], answered by one
//! [`BackendCore::execute`] (blocking) and one [`AsyncBackendCore::execute_async`];
//! the typed methods ([`Backend`], [`AsyncBackend`]: `get`, `get_or_lock`,
//! `store_and_release`, ...) are built on them once, for every backend, so a wrapper
//! implements the two `execute`s and forwards what it does not change: it cannot drop
//! a capability.
//!
//! A backend stores bytes under string keys with a time to live, and offers the few
//! atomic primitives a distributed lock needs. It knows nothing of lock policy
//! (waiting, retrying, expiry defaults): that lives in [`crate::CacheLock`].
//!
//! A third backend is easiest built from seven primitives: implement [`Store`], and
//! the composite steps (get-or-lock, take-lock, store-and-release, invalidate,
//! expire-many) are emulated from them, and the async half comes for free.

mod ext;
pub mod memory;
mod op;
#[cfg(feature = "redis")]
pub mod redis;
mod store;

use std::future::{Future, ready};
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::error::Error;
pub use crate::kept::{DecodedValue, KeptValue};
pub use ext::{AsyncBackend, Backend, Pending};
pub(crate) use ext::{wait_for_value, wait_for_value_async};
pub use op::{Op, Part, Reply};
pub(crate) use op::{is_unsupported, many, many_async};
pub use store::Store;

/// A boxed future, as returned by [`AsyncBackendCore::execute_async`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One acquisition of a lock as a backend sees it: where the lock lives, the owner's
/// token, how long it lasts unless released, the value it guards, and (once taken) the
/// acquisition's fencing token.
///
/// Fencing tokens order the writes of one key (a hybrid logical clock): an acquisition
/// gets the larger of the backend's clock, in microseconds since the Unix epoch, and
/// the fencing token of the value stored at [`value_key`](Self::value_key) plus one;
/// a stored value records the token it was written under, and a store is applied only
/// if its token is larger. Nothing else is kept per key: no counter outlives the value
/// and its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockClaim<'a> {
    /// The lock's key.
    pub key: &'a str,
    /// The owner's token, stored as the lock's value.
    pub token: &'a [u8],
    /// The lock's time to live.
    pub ttl: Duration,
    /// The key of the value the lock guards: taking the lock orders the acquisition
    /// after the value stored there.
    pub value_key: &'a str,
    /// The acquisition's fencing token, as taking the lock returned it (0 before): a
    /// store under this claim is applied only if it is larger than the stored value's.
    pub fence: u64,
}

/// What [`Backend::get_or_lock`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetOrLock {
    /// The value was present; the lock was not touched.
    Value(Vec<u8>),
    /// The value was absent and the lock is now ours (stored with our token), with
    /// this fencing token.
    Locked {
        /// The acquisition's fencing token.
        fence: u64,
    },
    /// The value was absent and someone else holds the lock.
    Held,
}

/// The core of a blocking backend: one method, [`execute`](Self::execute), answers
/// every [`Op`]. The typed operations ([`Backend`]: `get`, `get_or_lock`,
/// `store_and_release`, ...) are implemented over it for every core, once.
///
/// A wrapper answers the operations it changes and forwards the rest (`op =>
/// self.inner.execute(op)`), so it keeps every capability of what it wraps (the local
/// decoded tier included). To build a backend from primitives, implement [`Store`].
///
/// ```
/// use cache_memoize::{AsyncBackendCore, Backend, BackendCore, BoxFuture, Error, MemoryBackend, Op, Reply};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// /// Counts the reads sent to the store it wraps.
/// struct Counting(MemoryBackend, AtomicUsize);
///
/// impl BackendCore for Counting {
///     fn execute(&self, op: Op<'_>) -> Result<Reply, Error> {
///         if let Op::Get { .. } = op {
///             self.1.fetch_add(1, Ordering::Relaxed);
///         }
///         self.0.execute(op)
///     }
/// }
///
/// impl AsyncBackendCore for Counting {
///     fn execute_async<'a>(&'a self, op: Op<'a>) -> BoxFuture<'a, Result<Reply, Error>> {
///         if let Op::Get { .. } = op {
///             self.1.fetch_add(1, Ordering::Relaxed);
///         }
///         self.0.execute_async(op)
///     }
/// }
///
/// let counting = Counting(MemoryBackend::new(), AtomicUsize::new(0));
/// assert_eq!(counting.get("absent")?, None);
/// assert_eq!(counting.1.load(Ordering::Relaxed), 1);
/// cache_memoize::set_backend(counting);
/// # Ok::<(), Error>(())
/// ```
pub trait BackendCore: Send + Sync + 'static {
    /// Runs `op` and returns its [`Reply`] (the shape each [`Op`] documents).
    /// [`Op::WaitForRelease`] blocks (at most its `max`); the local tier
    /// ([`Op::Decoded`], [`Op::KeepDecoded`]) never blocks and never fails (a backend
    /// without one answers `Reply::Decoded(None)` and `Reply::Done`). An unknown
    /// operation is answered with [`Op::unsupported`].
    fn execute(&self, op: Op<'_>) -> Result<Reply, Error>;
}

/// The core of an async backend: [`BackendCore`]'s operations without blocking the
/// executor, through one method. The typed operations ([`AsyncBackend`]:
/// `get_async`, ...) are implemented over it for every core, once.
pub trait AsyncBackendCore: Send + Sync + 'static {
    /// Runs `op` (see [`BackendCore::execute`]). An [`Op`] may borrow closures that are
    /// neither `Send` nor `Sync` (the local tier's): read it before building the
    /// future, which must not hold it.
    fn execute_async<'a>(&'a self, op: Op<'a>) -> BoxFuture<'a, Result<Reply, Error>>;
}

/// A backend whose every operation completes at once, without waiting on I/O (an
/// in-process store): implementing it gives the [`AsyncBackendCore`] half for free, each
/// future ready as soon as it is made. Only the wait for a release truly waits: its
/// async form is [`await_release`](Self::await_release), by default a sleep on the
/// crate's own timer (no runtime driver needed).
///
/// ```
/// use cache_memoize::{BackendCore, CacheBackend, Error, ImmediateBackend, MemoryBackend, Op, Reply};
///
/// /// Drops plain `set`s of values larger than 1 KiB (memoized values are stored by
/// /// `Op::StoreAndRelease`, under their lock, and pass); forwards everything else.
/// struct Small(MemoryBackend);
///
/// impl BackendCore for Small {
///     fn execute(&self, op: Op<'_>) -> Result<Reply, Error> {
///         match op {
///             Op::Set { value, .. } if value.len() > 1024 => Ok(Reply::Done),
///             op => self.0.execute(op),
///         }
///     }
/// }
///
/// impl ImmediateBackend for Small {}
///
/// fn registrable<B: CacheBackend>(_: &B) {}
/// registrable(&Small(MemoryBackend::new()));
/// ```
pub trait ImmediateBackend: BackendCore {
    /// The async form of [`Op::WaitForRelease`]: returns when `lock_key` may have been
    /// released since `attempted`, or after at most `max`. The default sleeps `max` on
    /// the crate's own timer (no runtime driver needed).
    fn await_release<'a>(
        &'a self,
        lock_key: &'a str,
        attempted: Instant,
        max: Duration,
    ) -> BoxFuture<'a, ()> {
        let _ = (lock_key, attempted);
        Box::pin(crate::timer::sleep(max))
    }
}

impl<B: ImmediateBackend> AsyncBackendCore for B {
    fn execute_async<'a>(&'a self, op: Op<'a>) -> BoxFuture<'a, Result<Reply, Error>> {
        match op {
            Op::WaitForRelease {
                lock_key,
                attempted,
                max,
            } => {
                let wait = self.await_release(lock_key, attempted, max);
                Box::pin(async move {
                    wait.await;
                    Ok(Reply::Done)
                })
            }
            op => Box::pin(ready(self.execute(op))),
        }
    }
}

/// A backend usable both ways: what [`set_backend`](crate::set_backend) registers.
pub trait CacheBackend: Backend + AsyncBackend {}

impl<B: Backend + AsyncBackend> CacheBackend for B {}
