//! [`Store`]: a backend built from seven primitives, the composite steps emulated from
//! them once.

use std::time::{Duration, Instant};

use super::{BackendCore, BoxFuture, GetOrLock, ImmediateBackend, LockClaim, Op, Reply};
use crate::error::Error;

/// The one documented way to build a backend from primitives: implement these seven
/// (and, if the store can notify, the waits), and the type is a [`Backend`](super::Backend) (the
/// composite steps emulated from the primitives) and an [`ImmediateBackend`] (so an
/// [`AsyncBackend`](super::AsyncBackend), each future ready at once). It has no local
/// decoded tier.
///
/// The emulated composites are correct but not one atomic step each: get-or-lock
/// reads the value again after taking the lock, store-and-release checks and then
/// writes. A networked backend implements [`BackendCore`] itself to save round trips.
///
/// ```
/// use cache_memoize::{Backend, Error, GetOrLock, LockClaim, Store};
/// use std::collections::HashMap;
/// use std::sync::{Mutex, MutexGuard};
/// use std::time::Duration;
///
/// /// A store that never expires anything (TTLs ignored): for illustration only.
/// #[derive(Default)]
/// struct Map(Mutex<HashMap<String, Vec<u8>>>);
///
/// impl Map {
///     fn map(&self) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
///         self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
///     }
/// }
///
/// impl Store for Map {
///     fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
///         Ok(self.map().get(key).cloned())
///     }
///     fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
///         Ok(keys.iter().map(|key| self.map().get(*key).cloned()).collect())
///     }
///     fn set(&self, key: &str, value: &[u8], _ttl: Duration) -> Result<(), Error> {
///         self.map().insert(key.to_owned(), value.to_vec());
///         Ok(())
///     }
///     fn add(&self, key: &str, value: &[u8], _ttl: Duration) -> Result<bool, Error> {
///         let mut map = self.map();
///         let absent = !map.contains_key(key);
///         if absent {
///             map.insert(key.to_owned(), value.to_vec());
///         }
///         Ok(absent)
///     }
///     fn delete(&self, key: &str) -> Result<(), Error> {
///         self.map().remove(key);
///         Ok(())
///     }
///     fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, Error> {
///         let mut map = self.map();
///         let ours = map.get(key).is_some_and(|value| value == expected);
///         Ok(ours && map.remove(key).is_some())
///     }
///     fn compare_and_extend(&self, key: &str, expected: &[u8], _ttl: Duration) -> Result<bool, Error> {
///         Ok(self.map().get(key).is_some_and(|value| value == expected))
///     }
/// }
///
/// // Every typed operation works, the composite ones emulated:
/// let map = Map::default();
/// let lock = LockClaim { key: "_lock_:k", token: b"me", ttl: Duration::from_secs(5), value_key: "k", fence: 0 };
/// assert!(matches!(map.get_or_lock("k", &lock)?, GetOrLock::Locked { .. }));
/// assert_eq!(Backend::get(&map, "_lock_:k")?, Some(b"me".to_vec()));
/// cache_memoize::set_backend(map);
/// # Ok::<(), Error>(())
/// ```
pub trait Store: Send + Sync + 'static {
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

    /// Blocks until `lock_key` may have been released since `attempted`, or for at
    /// most `max`. The default sleeps `max`.
    fn wait_for_release(&self, lock_key: &str, attempted: Instant, max: Duration) {
        let _ = (lock_key, attempted);
        std::thread::sleep(max);
    }

    /// The async form of [`wait_for_release`](Self::wait_for_release). The default
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

impl<S: Store> BackendCore for S {
    fn execute(&self, op: Op<'_>) -> Result<Reply, Error> {
        emulate(self, op)
    }
}

impl<S: Store> ImmediateBackend for S {
    fn await_release<'a>(
        &'a self,
        lock_key: &'a str,
        attempted: Instant,
        max: Duration,
    ) -> BoxFuture<'a, ()> {
        Store::await_release(self, lock_key, attempted, max)
    }
}

/// Every operation from the primitives of `store`: the only copy of the composite
/// steps' emulation. (Takes the operation as `execute` does: by value.)
#[allow(clippy::needless_pass_by_value)]
fn emulate<S: Store + ?Sized>(store: &S, op: Op<'_>) -> Result<Reply, Error> {
    Ok(match op {
        Op::Get { key } => Reply::Value(store.get(key)?),
        Op::GetMany { keys } | Op::GetTagged { keys, .. } => Reply::Values(store.get_many(keys)?),
        Op::Set { key, value, ttl } => {
            store.set(key, value, ttl)?;
            Reply::Done
        }
        Op::Add { key, value, ttl } => Reply::Applied(store.add(key, value, ttl)?),
        Op::Delete { key } => {
            store.delete(key)?;
            Reply::Done
        }
        Op::CompareAndDelete { key, expected } => {
            Reply::Applied(store.compare_and_delete(key, expected)?)
        }
        Op::CompareAndExtend { key, expected, ttl } => {
            Reply::Applied(store.compare_and_extend(key, expected, ttl)?)
        }
        Op::GetOrLock { key, lock } => Reply::Found(get_or_lock(store, key, &lock)?),
        Op::TakeLock { lock } => Reply::Fence(take_lock(store, &lock)?),
        Op::StoreAndRelease {
            key,
            value,
            ttl,
            lock,
        } => Reply::Applied(store_and_release(store, key, value, ttl, &lock)?),
        Op::Invalidate { key, lock_key } => {
            store.delete(key)?;
            store.delete(lock_key)?;
            Reply::Done
        }
        Op::ExpireMany { keys, ttl } => Reply::Count(expire_many(store, keys, ttl)?),
        Op::WaitForRelease {
            lock_key,
            attempted,
            max,
        } => {
            store.wait_for_release(lock_key, attempted, max);
            Reply::Done
        }
        // Not one step here: the caller runs the parts one by one (`Part::run`), each
        // answering for itself (a composite that failed would fail every part, the
        // locks its parts took included, which would then be left to expire).
        op @ Op::Many { .. } => return Err(op.unsupported()),
        Op::Decoded { .. } => Reply::Decoded(None),
        Op::KeepDecoded { .. } => Reply::Done,
    })
}

/// Reads the value, or takes the lock; since another holder may store the value and
/// release between the two, reads the value again after taking the lock (and gives
/// the lock back if the value is there).
fn get_or_lock<S: Store + ?Sized>(
    store: &S,
    key: &str,
    lock: &LockClaim<'_>,
) -> Result<GetOrLock, Error> {
    if let Some(value) = store.get(key)? {
        return Ok(GetOrLock::Value(value));
    }
    let Some(fence) = take_lock(store, lock)? else {
        return Ok(GetOrLock::Held);
    };
    if let Some(value) = store.get(key)? {
        store.compare_and_delete(lock.key, lock.token)?;
        return Ok(GetOrLock::Value(value));
    }
    Ok(GetOrLock::Locked { fence })
}

/// An `add` of the lock's token, then the stored value's token (only holders of the
/// lock store, so it cannot change in between) ordered after by this process's clock.
fn take_lock<S: Store + ?Sized>(store: &S, lock: &LockClaim<'_>) -> Result<Option<u64>, Error> {
    if !store.add(lock.key, lock.token, lock.ttl)? {
        return Ok(None);
    }
    let stored = store.get(lock.value_key)?;
    let stored = stored.as_deref().map_or(0, crate::codec::written_fence);
    Ok(Some(crate::fence::PROCESS.next(stored)))
}

/// Checks that the lock is ours and the write newer, then writes and releases.
fn store_and_release<S: Store + ?Sized>(
    store: &S,
    key: &str,
    value: &[u8],
    ttl: Duration,
    lock: &LockClaim<'_>,
) -> Result<bool, Error> {
    if store.get(lock.key)?.as_deref() != Some(lock.token) {
        return Ok(false);
    }
    let stored = store
        .get(key)?
        .as_deref()
        .map_or(0, crate::codec::written_fence);
    let newer = crate::codec::newer(lock.fence, stored);
    if newer {
        store.set(key, value, ttl)?;
    }
    store.compare_and_delete(lock.key, lock.token)?;
    Ok(newer)
}

/// Reads and rewrites each key.
fn expire_many<S: Store + ?Sized>(store: &S, keys: &[&str], ttl: Duration) -> Result<usize, Error> {
    let mut present = 0;
    for key in keys {
        if ttl.is_zero() {
            present += usize::from(store.get(key)?.is_some());
            store.delete(key)?;
        } else if let Some(value) = store.get(key)? {
            store.set(key, &value, ttl)?;
            present += 1;
        }
    }
    Ok(present)
}

#[cfg(test)]
mod tests {
    use super::super::Backend;
    use super::super::memory::MemoryBackend;
    use super::*;

    /// Only the primitives, over a memory store; stores the value right after a
    /// successful `add`, as another holder finishing at that moment would.
    struct Racing(MemoryBackend);

    impl Store for Racing {
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
    fn the_emulated_get_or_lock_rereads_after_taking_the_lock() -> Result<(), Error> {
        let backend = Racing(MemoryBackend::new());
        let lock = LockClaim {
            key: "lock",
            token: b"token",
            ttl: Duration::from_secs(60),
            value_key: "value",
            fence: 0,
        };
        let found = Backend::get_or_lock(&backend, "value", &lock)?;
        assert_eq!(found, GetOrLock::Value(b"stored meanwhile".to_vec()));
        assert_eq!(
            Backend::get(&backend, "lock")?,
            None,
            "the lock taken in between is given back"
        );
        Ok(())
    }
}
