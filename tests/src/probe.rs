//! [`Probe`]: a backend wrapper that records each operation, can be made to fail, and
//! runs a hook after an operation, so tests can count round trips, break the backend,
//! and stage races at an exact step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cache_memoize::{AsyncBackend, Backend, BoxFuture, CacheBackend, Error, GetOrLock, LockClaim};

type Hook = Box<dyn FnMut(&'static str) + Send>;

/// Wraps a backend; see the module docs.
pub struct Probe {
    inner: Arc<dyn CacheBackend>,
    ops: Mutex<Vec<&'static str>>,
    /// Each operation with the (first) key it named.
    keys: Mutex<Vec<(&'static str, String)>>,
    /// The same, recorded once the operation has returned (successfully or not).
    done: Mutex<Vec<(&'static str, String)>>,
    failing: AtomicBool,
    after: Mutex<Option<Hook>>,
}

impl Probe {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn CacheBackend>) -> Self {
        Self {
            inner,
            ops: Mutex::default(),
            keys: Mutex::default(),
            done: Mutex::default(),
            failing: AtomicBool::new(false),
            after: Mutex::default(),
        }
    }

    /// The wrapped backend, for setting up state behind the probe's back.
    pub fn inner(&self) -> &Arc<dyn CacheBackend> {
        &self.inner
    }

    /// The operations run so far (async ones under their sync names).
    pub fn ops(&self) -> Vec<&'static str> {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The keys named by the operations `op` run so far (the first key of a
    /// several-key operation), in order.
    pub fn keys_of(&self, op: &str) -> Vec<String> {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(name, _)| *name == op)
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// The keys named by the operations `op` that have returned so far, in order of
    /// return: unlike [`Probe::keys_of`], a key here has been acted on.
    pub fn keys_done_of(&self, op: &str) -> Vec<String> {
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(name, _)| *name == op)
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// Forgets the operations recorded so far.
    pub fn clear(&self) {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Makes every later operation fail (`true`) or work again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Runs `hook` after each later operation, with the operation's name.
    pub fn after(&self, hook: impl FnMut(&'static str) + Send + 'static) {
        *self.after.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(hook));
    }

    fn before(&self, op: &'static str, key: &str) -> Result<(), Error> {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(op);
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((op, key.to_owned()));
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::backend(op, key, "the probe is set to fail"));
        }
        Ok(())
    }

    fn finished(&self, op: &'static str, key: &str) {
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((op, key.to_owned()));
        // The hook runs outside the lock, so that what it does through the probe (or
        // what other threads do meanwhile) never waits for it; operations made while
        // it runs see no hook. It is put back unless replaced meanwhile.
        let hook = self
            .after
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut hook) = hook {
            hook(op);
            let mut slot = self.after.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(hook);
            }
        }
    }

    fn call<R>(
        &self,
        op: &'static str,
        key: &str,
        run: impl FnOnce() -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.before(op, key)?;
        let result = run();
        self.finished(op, key);
        result
    }

    fn call_async<'a, R: Send + 'a>(
        &'a self,
        op: &'static str,
        key: &'a str,
        run: BoxFuture<'a, Result<R, Error>>,
    ) -> BoxFuture<'a, Result<R, Error>> {
        Box::pin(async move {
            self.before(op, key)?;
            let result = run.await;
            self.finished(op, key);
            result
        })
    }
}

impl Backend for Probe {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.call("get", key, || self.inner.get(key))
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        self.call("get_many", keys.first().copied().unwrap_or(""), || {
            self.inner.get_many(keys)
        })
    }

    fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        self.call("set", key, || self.inner.set(key, value, ttl))
    }

    fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, Error> {
        self.call("add", key, || self.inner.add(key, value, ttl))
    }

    fn delete(&self, key: &str) -> Result<(), Error> {
        self.call("delete", key, || self.inner.delete(key))
    }

    fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, Error> {
        self.call("compare_and_delete", key, || {
            self.inner.compare_and_delete(key, expected)
        })
    }

    fn compare_and_extend(&self, key: &str, expected: &[u8], ttl: Duration) -> Result<bool, Error> {
        self.call("compare_and_extend", key, || {
            self.inner.compare_and_extend(key, expected, ttl)
        })
    }

    fn get_or_lock(&self, key: &str, lock: &LockClaim<'_>) -> Result<GetOrLock, Error> {
        self.call("get_or_lock", key, || self.inner.get_or_lock(key, lock))
    }

    fn store_and_release(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        lock: &LockClaim<'_>,
    ) -> Result<bool, Error> {
        self.call("store_and_release", key, || {
            self.inner.store_and_release(key, value, ttl, lock)
        })
    }

    fn take_lock(&self, lock: &LockClaim<'_>) -> Result<Option<u64>, Error> {
        self.call("take_lock", lock.key, || self.inner.take_lock(lock))
    }

    fn invalidate(&self, key: &str, lock_key: &str) -> Result<(), Error> {
        self.call("invalidate", key, || self.inner.invalidate(key, lock_key))
    }

    fn expire_many(&self, keys: &[&str], ttl: Duration) -> Result<usize, Error> {
        self.call("expire_many", keys.first().copied().unwrap_or(""), || {
            self.inner.expire_many(keys, ttl)
        })
    }

    fn wait_for_release(&self, lock_key: &str, attempted: Instant, max: Duration) {
        let _ = self.call("wait", lock_key, || {
            self.inner.wait_for_release(lock_key, attempted, max);
            Ok(())
        });
    }
}

impl AsyncBackend for Probe {
    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>> {
        self.call_async("get", key, self.inner.get_async(key))
    }

    fn get_many_async<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, Error>> {
        self.call_async(
            "get_many",
            keys.first().copied().unwrap_or(""),
            self.inner.get_many_async(keys),
        )
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.call_async("set", key, self.inner.set_async(key, value, ttl))
    }

    fn add_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        self.call_async("add", key, self.inner.add_async(key, value, ttl))
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        self.call_async("delete", key, self.inner.delete_async(key))
    }

    fn compare_and_delete_async<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, Error>> {
        self.call_async(
            "compare_and_delete",
            key,
            self.inner.compare_and_delete_async(key, expected),
        )
    }

    fn compare_and_extend_async<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        self.call_async(
            "compare_and_extend",
            key,
            self.inner.compare_and_extend_async(key, expected, ttl),
        )
    }

    fn get_or_lock_async<'a>(
        &'a self,
        key: &'a str,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<GetOrLock, Error>> {
        self.call_async("get_or_lock", key, self.inner.get_or_lock_async(key, lock))
    }

    fn store_and_release_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        self.call_async(
            "store_and_release",
            key,
            self.inner.store_and_release_async(key, value, ttl, lock),
        )
    }

    fn take_lock_async<'a>(
        &'a self,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<Option<u64>, Error>> {
        self.call_async("take_lock", lock.key, self.inner.take_lock_async(lock))
    }

    fn invalidate_async<'a>(
        &'a self,
        key: &'a str,
        lock_key: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.call_async(
            "invalidate",
            key,
            self.inner.invalidate_async(key, lock_key),
        )
    }

    fn wait_for_release_async<'a>(
        &'a self,
        lock_key: &'a str,
        attempted: Instant,
        max: Duration,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = self.before("wait", lock_key);
            self.inner
                .wait_for_release_async(lock_key, attempted, max)
                .await;
            self.finished("wait", lock_key);
        })
    }
}
