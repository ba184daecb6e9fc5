//! One memoized call's steps against the backend: read, lock-or-read, store, and the
//! logging of every fail-open event. Used by the value path (`memoize`) and the
//! iterator path (`iter`).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{CacheBackend, GetOrLock};
use crate::codec;
use crate::error::{Error, LockError};
use crate::key::{CacheKey, make_cache_key};
use crate::lock::{CacheLock, LockOptions};
use crate::memoize::MemoizeOptions;

/// What the leader's wait for the lock ended with.
pub(crate) enum Acquired<T> {
    /// Someone stored the value meanwhile (its bytes are shared with followers).
    Found(T, Vec<u8>),
    /// The lock is ours: compute.
    Locked,
}

/// One memoized call: the key, the options and the backend it runs against.
pub(crate) struct Call<'a> {
    pub(crate) key: CacheKey,
    pub(crate) opts: &'a MemoizeOptions,
    pub(crate) backend: Arc<dyn CacheBackend>,
    /// Compute and overwrite whatever is stored (`force_overwrite` or [`refresh`]).
    pub(crate) forced: bool,
}

impl<'a> Call<'a> {
    pub(crate) fn new(key: &str, opts: &'a MemoizeOptions, forced: bool) -> Self {
        Self::for_key(make_cache_key(key), opts, forced)
    }

    /// A call for a key already made (an iterator keeps its key for its whole life).
    pub(crate) fn for_key(key: CacheKey, opts: &'a MemoizeOptions, forced: bool) -> Self {
        Self {
            key,
            opts,
            backend: opts.backend_handle(),
            forced,
        }
    }

    /// What concurrent misses of this call coalesce on in-process: the key, and which
    /// backend it lives in (two backends' values are not shared).
    pub(crate) fn flight_key(&self) -> String {
        format!("{:p}|{}", Arc::as_ptr(&self.backend).cast::<()>(), self.key)
    }

    pub(crate) fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Option<T> {
        codec::decode_with(self.opts.codec, bytes, self.opts.version)
    }

    /// The stored value; `Err` (already logged) when the backend failed, in which case
    /// the caller computes without the backend.
    pub(crate) fn fetch<T: DeserializeOwned>(&self) -> Result<Option<T>, ()> {
        let read = self.backend.get(self.key.as_str());
        self.read_result(read)
    }

    pub(crate) async fn fetch_async<T: DeserializeOwned>(&self) -> Result<Option<T>, ()> {
        let read = self.backend.get_async(self.key.as_str()).await;
        self.read_result(read)
    }

    pub(crate) fn read_result<T: DeserializeOwned>(
        &self,
        read: Result<Option<Vec<u8>>, Error>,
    ) -> Result<Option<T>, ()> {
        match read {
            Ok(bytes) => Ok(bytes.and_then(|bytes| self.decode(&bytes))),
            Err(err) => {
                self.fail_open(&err);
                Err(())
            }
        }
    }

    pub(crate) fn fail_open(&self, err: &dyn std::error::Error) {
        tracing::warn!(key = %self.key, error = %err, "cache backend failed; computing without it");
    }

    pub(crate) fn encode<T: Serialize>(&self, value: &T) -> Option<Vec<u8>> {
        codec::encode_with(self.opts.codec, value, self.opts.version)
            .inspect_err(|err| tracing::warn!(key = %self.key, error = %err, "cannot encode the value; not stored"))
            .ok()
    }

    /// Stores `value` without a lock; returns its encoding.
    pub(crate) fn store<T: Serialize>(&self, value: &T) -> Option<Vec<u8>> {
        let bytes = self.encode(value)?;
        if let Err(err) = self
            .backend
            .set(self.key.as_str(), &bytes, self.opts.expire)
        {
            self.fail_open(&err);
        }
        Some(bytes)
    }

    pub(crate) async fn store_async<T: Serialize>(&self, value: &T) -> Option<Vec<u8>> {
        let bytes = self.encode(value)?;
        if let Err(err) = self
            .backend
            .set_async(self.key.as_str(), &bytes, self.opts.expire)
            .await
        {
            self.fail_open(&err);
        }
        Some(bytes)
    }

    pub(crate) fn lock(&self, options: LockOptions) -> (CacheLock, Option<Duration>) {
        let lock = CacheLock::for_key(&self.key)
            .options(options)
            .backend(Arc::clone(&self.backend));
        let timeout = if options.blocking {
            options.timeout
        } else {
            Some(Duration::ZERO)
        };
        (lock, timeout)
    }

    /// One attempt at the lock: the stored value if someone stored it meanwhile, the
    /// lock if free, `None` while another caller holds it.
    pub(crate) fn interpret<T: DeserializeOwned>(
        &self,
        found: GetOrLock,
    ) -> Option<Result<Acquired<T>, GetOrLock>> {
        match found {
            GetOrLock::Value(bytes) => match self.decode(&bytes) {
                Some(value) => Some(Ok(Acquired::Found(value, bytes))),
                // Unreadable bytes are a miss: take the lock and overwrite them.
                None => Some(Err(GetOrLock::Value(bytes))),
            },
            GetOrLock::Locked => Some(Ok(Acquired::Locked)),
            GetOrLock::Held => None,
        }
    }

    pub(crate) fn attempt<T: DeserializeOwned>(
        &self,
        lock: &CacheLock,
        token: &str,
        expire: Duration,
    ) -> Result<Option<Acquired<T>>, LockError> {
        if !self.forced {
            let found = self.backend.get_or_lock(
                self.key.as_str(),
                lock.key(),
                token.as_bytes(),
                expire,
            )?;
            match self.interpret(found) {
                Some(Ok(acquired)) => return Ok(Some(acquired)),
                None => return Ok(None),
                Some(Err(_unreadable)) => {}
            }
        }
        Ok(self
            .backend
            .add(lock.key(), token.as_bytes(), expire)?
            .then_some(Acquired::Locked))
    }

    pub(crate) async fn attempt_async<T: DeserializeOwned>(
        &self,
        lock: &CacheLock,
        token: &str,
        expire: Duration,
    ) -> Result<Option<Acquired<T>>, LockError> {
        if !self.forced {
            let found = self
                .backend
                .get_or_lock_async(self.key.as_str(), lock.key(), token.as_bytes(), expire)
                .await?;
            match self.interpret(found) {
                Some(Ok(acquired)) => return Ok(Some(acquired)),
                None => return Ok(None),
                Some(Err(_unreadable)) => {}
            }
        }
        Ok(self
            .backend
            .add_async(lock.key(), token.as_bytes(), expire)
            .await?
            .then_some(Acquired::Locked))
    }

    /// Waits until the value is found or the lock is ours.
    pub(crate) fn acquire<T: DeserializeOwned>(
        &self,
        lock: &CacheLock,
        timeout: Option<Duration>,
        token: &str,
        expire: Duration,
    ) -> Result<Acquired<T>, LockError> {
        let mut waiter = lock.waiter(timeout);
        loop {
            if let Some(acquired) = self.attempt(lock, token, expire)? {
                return Ok(acquired);
            }
            waiter.pause(&*self.backend)?;
        }
    }

    pub(crate) async fn acquire_async<T: DeserializeOwned>(
        &self,
        lock: &CacheLock,
        timeout: Option<Duration>,
        token: &str,
        expire: Duration,
    ) -> Result<Acquired<T>, LockError> {
        let mut waiter = lock.waiter(timeout);
        loop {
            if let Some(acquired) = self.attempt_async(lock, token, expire).await? {
                return Ok(acquired);
            }
            waiter.pause_async(&*self.backend).await?;
        }
    }

    pub(crate) fn report_release(&self, released: Result<bool, Error>) {
        match released {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                key = %self.key,
                "the lock expired while computing; another caller may have computed too (raise the lock's expire)"
            ),
            Err(err) => self.fail_open(&err),
        }
    }

    /// Warns when the lock was lost while computing (a renewal found it gone).
    pub(crate) fn report_renewal(&self, renewal: &crate::renew::Renewal) {
        if renewal.lost() {
            tracing::warn!(
                key = %self.key,
                "the lock was lost while computing; another caller may compute too"
            );
        }
    }

    pub(crate) fn lock_missed(&self, err: &LockError) {
        tracing::warn!(key = %self.key, error = %err, "lock not acquired; computing without it");
    }
}
