//! [`Probe`]: a backend wrapper that records each operation, can be made to fail, and
//! runs a hook after an operation, so tests can count round trips, break the backend,
//! and stage races at an exact step. It implements only the two `execute`s: every
//! other capability of the wrapped backend (its local decoded tier included) passes
//! through.

use std::future::ready;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cache_memoize::{AsyncBackendCore, BackendCore, BoxFuture, CacheBackend, Error, Op, Reply};

type Hook = Box<dyn FnMut(&'static str) + Send>;

/// Wraps a backend; see the module docs.
pub struct Probe {
    inner: Arc<dyn CacheBackend>,
    /// Each operation sent (`false`) or returned (`true`), with the (first) key it named.
    log: Mutex<Vec<(bool, &'static str, String)>>,
    failing: AtomicBool,
    after: Mutex<Option<Hook>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Probe {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn CacheBackend>) -> Self {
        let (log, after) = (Mutex::default(), Mutex::default());
        let failing = AtomicBool::new(false);
        Self {
            inner,
            log,
            failing,
            after,
        }
    }

    /// The wrapped backend, for setting up state behind the probe's back.
    pub fn inner(&self) -> &Arc<dyn CacheBackend> {
        &self.inner
    }

    /// The operations run so far (async ones under their sync names; waits as
    /// `"wait"`; the local decoded tier, which sends nothing, is not recorded).
    pub fn ops(&self) -> Vec<&'static str> {
        lock(&self.log)
            .iter()
            .filter(|(done, ..)| !done)
            .map(|(_, op, _)| *op)
            .collect()
    }

    /// The keys named by the operations `op` run so far (the first key of a
    /// several-key operation), in order.
    pub fn keys_of(&self, op: &str) -> Vec<String> {
        self.logged(false, op)
    }

    /// The keys named by the operations `op` that have returned so far, in order of
    /// return: unlike [`Probe::keys_of`], a key here has been acted on.
    pub fn keys_done_of(&self, op: &str) -> Vec<String> {
        self.logged(true, op)
    }

    fn logged(&self, returned: bool, op: &str) -> Vec<String> {
        let log = lock(&self.log);
        let named = log
            .iter()
            .filter(|(done, name, _)| *done == returned && *name == op);
        named.map(|(.., key)| key.clone()).collect()
    }

    /// Forgets the operations recorded so far.
    pub fn clear(&self) {
        lock(&self.log).clear();
    }

    /// Makes every later operation fail (`true`) or work again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Runs `hook` after each later operation, with the operation's name.
    pub fn after(&self, hook: impl FnMut(&'static str) + Send + 'static) {
        *lock(&self.after) = Some(Box::new(hook));
    }

    /// Records `op` as sent; the error it fails with when the probe is failing.
    fn before(&self, op: &Op<'_>) -> Result<(), Error> {
        lock(&self.log).push((false, op.name(), op.key().to_owned()));
        let failing = self.failing.load(Ordering::SeqCst);
        let err = || Error::backend(op.name(), op.key(), "the probe is set to fail");
        if failing { Err(err()) } else { Ok(()) }
    }

    /// Records `op` as returned, then runs the hook outside the lock, so that what it
    /// does through the probe (or what other threads do meanwhile) never waits for it;
    /// operations made while it runs see no hook. It is put back unless replaced.
    fn finished(&self, op: &'static str, key: &str) {
        lock(&self.log).push((true, op, key.to_owned()));
        let hook = lock(&self.after).take();
        if let Some(mut hook) = hook {
            hook(op);
            lock(&self.after).get_or_insert(hook);
        }
    }
}

impl BackendCore for Probe {
    fn execute(&self, op: Op<'_>) -> Result<Reply, Error> {
        if op.is_local() {
            return self.inner.execute(op);
        }
        let (name, key) = (op.name(), op.key());
        self.before(&op)?;
        let result = self.inner.execute(op);
        self.finished(name, key);
        result
    }
}

impl AsyncBackendCore for Probe {
    fn execute_async<'a>(&'a self, op: Op<'a>) -> BoxFuture<'a, Result<Reply, Error>> {
        if op.is_local() {
            return self.inner.execute_async(op);
        }
        let (name, key) = (op.name(), op.key());
        if let Err(err) = self.before(&op) {
            return Box::pin(ready(Err(err)));
        }
        let sent = self.inner.execute_async(op);
        Box::pin(async move {
            let result = sent.await;
            self.finished(name, key);
            result
        })
    }
}
