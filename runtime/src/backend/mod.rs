//! The storage interface: [`Backend`] (blocking) and [`AsyncBackend`] (async).
//!
//! A backend stores bytes under string keys with a time to live, and offers the few
//! atomic primitives a distributed lock needs. It knows nothing of lock policy
//! (waiting, retrying, expiry defaults): that lives in [`crate::CacheLock`]. A third
//! backend is one file implementing both traits.
//!
//! The composite operations ([`Backend::get_or_lock`], [`Backend::store_and_release`])
//! and the wake-up ([`Backend::wait_for_release`]) have default implementations built
//! from the primitives; a networked backend overrides them to save round trips.

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

use std::future::{Future, ready};
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::error::Error;
pub use crate::kept::{DecodedValue, KeptValue};

/// A boxed future, as returned by [`AsyncBackend`]'s methods.
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

/// A blocking cache backend.
///
/// Every method is one atomic step from the point of view of other clients.
pub trait Backend: Send + Sync + 'static {
    /// Reads `key`; `None` when absent or expired.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error>;

    /// Reads several keys at once, in order.
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error>;

    /// Stores `value` under `key` for `ttl`, replacing any previous value.
    fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error>;

    /// Stores `value` under `key` for `ttl` only if `key` is absent; true if stored.
    fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, Error>;

    /// Removes `key`; absent keys are not an error.
    fn delete(&self, key: &str) -> Result<(), Error>;

    /// Removes `key` only if it holds `expected`; true if removed.
    fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, Error>;

    /// Resets `key`'s time to live to `ttl` only if it holds `expected`; true if so.
    fn compare_and_extend(&self, key: &str, expected: &[u8], ttl: Duration) -> Result<bool, Error>;

    /// Returns the value at `key` if present, or else tries to take `lock` (an `add`
    /// of its token), as one atomic step. One round trip on a networked backend.
    ///
    /// The default is built from `get` and `add`; since another holder may store the
    /// value and release between the two, it reads the value again after taking the
    /// lock (and gives the lock back if the value is there).
    fn get_or_lock(&self, key: &str, lock: &LockClaim<'_>) -> Result<GetOrLock, Error> {
        if let Some(value) = self.get(key)? {
            return Ok(GetOrLock::Value(value));
        }
        let Some(fence) = self.take_lock(lock)? else {
            return Ok(GetOrLock::Held);
        };
        if let Some(value) = self.get(key)? {
            self.compare_and_delete(lock.key, lock.token)?;
            return Ok(GetOrLock::Value(value));
        }
        Ok(GetOrLock::Locked { fence })
    }

    /// Takes `lock` if it is free (an `add` of its token) and returns the
    /// acquisition's fencing token (see [`LockClaim`]); `None` when another owner
    /// holds it.
    ///
    /// The default reads the stored value's token after the `add` (only holders of
    /// the lock store, so it cannot change in between) and takes this process's clock.
    /// A networked backend overrides this to take the server's clock in the same step.
    fn take_lock(&self, lock: &LockClaim<'_>) -> Result<Option<u64>, Error> {
        if !self.add(lock.key, lock.token, lock.ttl)? {
            return Ok(None);
        }
        let stored = self.get(lock.value_key)?;
        Ok(Some(stored_fence_after(stored.as_deref())))
    }

    /// If `lock` still holds its token and its fencing token is larger than the stored
    /// value's (or the stored value has none: absent, not a memoized value): stores
    /// `value` at `key` for `ttl`, deletes the lock, and wakes its waiters. Otherwise (the lock expired, was taken by a later holder, or was voided
    /// by [`invalidate`](Self::invalidate); or a value written under a later token is
    /// there) stores nothing, and releases the lock if it was still ours: a late writer
    /// never overwrites what came after it. Returns whether the value was stored.
    ///
    /// The default checks, then writes; a networked backend makes it one atomic step.
    fn store_and_release(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        lock: &LockClaim<'_>,
    ) -> Result<bool, Error> {
        if self.get(lock.key)?.as_deref() != Some(lock.token) {
            return Ok(false);
        }
        let stored = self
            .get(key)?
            .as_deref()
            .map_or(0, crate::codec::written_fence);
        let newer = crate::codec::newer(lock.fence, stored);
        if newer {
            self.set(key, value, ttl)?;
        }
        self.compare_and_delete(lock.key, lock.token)?;
        Ok(newer)
    }

    /// Removes the value at `key` and its lock at `lock_key`, so that a computation
    /// running under that lock cannot store a value computed before this call.
    fn invalidate(&self, key: &str, lock_key: &str) -> Result<(), Error> {
        self.delete(key)?;
        self.delete(lock_key)
    }

    /// Resets the time to live of each present key of `keys` to `ttl` (a zero `ttl`
    /// removes them), as one step: the chunks of a memoized iterator's write, made
    /// to last as long as the value when it commits, or given up at once. Returns how
    /// many of `keys` were present. The keys share one hash tag (one cluster slot).
    ///
    /// The default reads and rewrites each key; a backend that can do it in one
    /// round trip overrides it.
    fn expire_many(&self, keys: &[&str], ttl: Duration) -> Result<usize, Error> {
        let mut present = 0;
        for key in keys {
            if ttl.is_zero() {
                present += usize::from(self.get(key)?.is_some());
                self.delete(key)?;
            } else if let Some(value) = self.get(key)? {
                self.set(key, &value, ttl)?;
                present += 1;
            }
        }
        Ok(present)
    }

    /// Blocks until `lock_key` may have been released since `attempted` (when the
    /// caller last found it held), or for at most `max`. Polling backends simply sleep;
    /// a backend with notifications returns early, and at once if a release arrived
    /// after `attempted`.
    fn wait_for_release(&self, lock_key: &str, attempted: Instant, max: Duration) {
        let _ = (lock_key, attempted);
        std::thread::sleep(max);
    }

    /// The decoded value kept beside `key`'s bytes by an in-process tier (see
    /// [`keep_decoded`](Self::keep_decoded)), if the bytes are there to be served now
    /// and `accept` takes it (it was read as the caller reads: a kept value of another
    /// type, codec or version is left alone, and the read is not answered, nor counted
    /// as a hit, until the bytes are read); it answers a read of `key` as
    /// [`get`](Self::get) would, without the bytes. Never blocks: async callers call it
    /// too. The default keeps nothing.
    fn decoded(&self, key: &str, accept: &dyn Fn(&KeptValue) -> bool) -> Option<DecodedValue> {
        let _ = (key, accept);
        None
    }

    /// Offers a decoded form of `bytes`, which a [`get`](Self::get) of `key` just
    /// returned, to keep beside them: `make` builds it, and is called only if the
    /// backend keeps it, beside exactly these bytes (not if `key` was written or
    /// dropped since). A kept value must go whenever its bytes go. Never blocks. The
    /// default keeps nothing; the [near cache](crate::NearCache) keeps it.
    fn keep_decoded(&self, key: &str, bytes: &[u8], make: &mut dyn FnMut() -> DecodedValue) {
        let _ = (key, bytes, make);
    }
}

/// An async cache backend: the same operations as [`Backend`], without blocking the
/// executor. The futures need a Tokio runtime only where a backend says so.
pub trait AsyncBackend: Send + Sync + 'static {
    /// See [`Backend::get`].
    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>>;

    /// See [`Backend::get_many`].
    fn get_many_async<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, Error>>;

    /// See [`Backend::set`].
    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// See [`Backend::add`].
    fn add_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>>;

    /// See [`Backend::delete`].
    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>>;

    /// See [`Backend::compare_and_delete`].
    fn compare_and_delete_async<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, Error>>;

    /// See [`Backend::compare_and_extend`].
    fn compare_and_extend_async<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>>;

    /// See [`Backend::get_or_lock`].
    fn get_or_lock_async<'a>(
        &'a self,
        key: &'a str,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<GetOrLock, Error>> {
        Box::pin(async move {
            if let Some(value) = self.get_async(key).await? {
                return Ok(GetOrLock::Value(value));
            }
            let Some(fence) = self.take_lock_async(lock).await? else {
                return Ok(GetOrLock::Held);
            };
            if let Some(value) = self.get_async(key).await? {
                self.compare_and_delete_async(lock.key, lock.token).await?;
                return Ok(GetOrLock::Value(value));
            }
            Ok(GetOrLock::Locked { fence })
        })
    }

    /// See [`Backend::take_lock`].
    fn take_lock_async<'a>(
        &'a self,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<Option<u64>, Error>> {
        Box::pin(async move {
            if !self.add_async(lock.key, lock.token, lock.ttl).await? {
                return Ok(None);
            }
            let stored = self.get_async(lock.value_key).await?;
            Ok(Some(stored_fence_after(stored.as_deref())))
        })
    }

    /// See [`Backend::invalidate`].
    fn invalidate_async<'a>(
        &'a self,
        key: &'a str,
        lock_key: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.delete_async(key).await?;
            self.delete_async(lock_key).await
        })
    }

    /// See [`Backend::store_and_release`].
    fn store_and_release_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            if self.get_async(lock.key).await?.as_deref() != Some(lock.token) {
                return Ok(false);
            }
            let stored = self.get_async(key).await?;
            let stored = stored.as_deref().map_or(0, crate::codec::written_fence);
            let newer = crate::codec::newer(lock.fence, stored);
            if newer {
                self.set_async(key, value, ttl).await?;
            }
            self.compare_and_delete_async(lock.key, lock.token).await?;
            Ok(newer)
        })
    }

    /// See [`Backend::wait_for_release`]. The default sleeps `max` on the crate's own
    /// timer (a thread of its own, so it needs no runtime driver).
    fn wait_for_release_async<'a>(
        &'a self,
        lock_key: &'a str,
        attempted: Instant,
        max: Duration,
    ) -> BoxFuture<'a, ()> {
        let _ = (lock_key, attempted);
        Box::pin(crate::timer::sleep(max))
    }
}

/// A backend whose every operation completes at once, without waiting on I/O (an
/// in-process store): implementing it gives the [`AsyncBackend`] half for free, each
/// future ready as soon as it is made. Only the wait for a release truly waits; its
/// async form defaults to a sleep on the crate's own timer (no runtime driver needed).
///
/// ```
/// use cache_memoize::{Backend, CacheBackend, Error, ImmediateBackend, MemoryBackend};
/// use std::time::Duration;
///
/// /// A backend that counts reads, over the in-process store.
/// struct Counting(MemoryBackend, std::sync::atomic::AtomicUsize);
///
/// impl Backend for Counting {
///     fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
///         self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         self.0.get(key)
///     }
///     fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> { self.0.get_many(keys) }
///     fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> { self.0.set(key, value, ttl) }
///     fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, Error> { self.0.add(key, value, ttl) }
///     fn delete(&self, key: &str) -> Result<(), Error> { self.0.delete(key) }
///     fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, Error> {
///         self.0.compare_and_delete(key, expected)
///     }
///     fn compare_and_extend(&self, key: &str, expected: &[u8], ttl: Duration) -> Result<bool, Error> {
///         self.0.compare_and_extend(key, expected, ttl)
///     }
/// }
///
/// impl ImmediateBackend for Counting {}
///
/// fn registrable<B: CacheBackend>(_: &B) {}
/// registrable(&Counting(MemoryBackend::new(), Default::default()));
/// ```
pub trait ImmediateBackend: Backend {
    /// The async form of [`Backend::wait_for_release`]: returns when `lock_key` may
    /// have been released since `attempted`, or after at most `max`. The default
    /// sleeps `max` on the crate's own timer (no runtime driver needed).
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

impl<B: ImmediateBackend> AsyncBackend for B {
    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>> {
        Box::pin(ready(self.get(key)))
    }

    fn get_many_async<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, Error>> {
        Box::pin(ready(self.get_many(keys)))
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(ready(self.set(key, value, ttl)))
    }

    fn add_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(ready(self.add(key, value, ttl)))
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(ready(self.delete(key)))
    }

    fn compare_and_delete_async<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(ready(self.compare_and_delete(key, expected)))
    }

    fn compare_and_extend_async<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(ready(self.compare_and_extend(key, expected, ttl)))
    }

    fn get_or_lock_async<'a>(
        &'a self,
        key: &'a str,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<GetOrLock, Error>> {
        Box::pin(ready(self.get_or_lock(key, lock)))
    }

    fn store_and_release_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(ready(self.store_and_release(key, value, ttl, lock)))
    }

    fn take_lock_async<'a>(
        &'a self,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<Option<u64>, Error>> {
        Box::pin(ready(self.take_lock(lock)))
    }

    fn invalidate_async<'a>(
        &'a self,
        key: &'a str,
        lock_key: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(ready(self.invalidate(key, lock_key)))
    }

    fn wait_for_release_async<'a>(
        &'a self,
        lock_key: &'a str,
        attempted: Instant,
        max: Duration,
    ) -> BoxFuture<'a, ()> {
        self.await_release(lock_key, attempted, max)
    }
}

/// The fencing token of an acquisition, by this process's clock, of a key whose
/// stored value is `stored` (the default steps' clock; see [`LockClaim`]).
fn stored_fence_after(stored: Option<&[u8]>) -> u64 {
    crate::fence::PROCESS.next(stored.map_or(0, crate::codec::written_fence))
}

/// A backend usable both ways: what [`set_backend`](crate::set_backend) registers.
pub trait CacheBackend: Backend + AsyncBackend {}

impl<B: Backend + AsyncBackend> CacheBackend for B {}

#[cfg(test)]
mod tests {
    use super::memory::MemoryBackend;
    use super::*;

    /// Only the primitives, over a memory store; stores the value right after a
    /// successful `add`, as another holder finishing at that moment would.
    struct Racing(MemoryBackend);

    impl Backend for Racing {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
            self.0.get(key)
        }
        fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
            self.0.get_many(keys)
        }
        fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
            self.0.set(key, value, ttl)
        }
        fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, Error> {
            let added = self.0.add(key, value, ttl)?;
            self.0.set("value", b"stored meanwhile", ttl)?;
            Ok(added)
        }
        fn delete(&self, key: &str) -> Result<(), Error> {
            self.0.delete(key)
        }
        fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, Error> {
            self.0.compare_and_delete(key, expected)
        }
        fn compare_and_extend(
            &self,
            key: &str,
            expected: &[u8],
            ttl: Duration,
        ) -> Result<bool, Error> {
            self.0.compare_and_extend(key, expected, ttl)
        }
    }

    #[test]
    fn the_default_get_or_lock_rereads_after_taking_the_lock() -> Result<(), Error> {
        let backend = Racing(MemoryBackend::new());
        let lock = LockClaim {
            key: "lock",
            token: b"token",
            ttl: Duration::from_secs(60),
            value_key: "value",
            fence: 0,
        };
        let found = backend.get_or_lock("value", &lock)?;
        assert_eq!(found, GetOrLock::Value(b"stored meanwhile".to_vec()));
        assert_eq!(
            backend.get("lock")?,
            None,
            "the lock taken in between is given back"
        );
        Ok(())
    }
}
