//! The value path's entry points: [`memoize`], [`try_memoize`], their async forms, and
//! [`invalidate`]. Each runs the sequence (`crate::sequence`) once and computes when it
//! says so.
//!
//! Every backend failure is logged through `tracing` and the value is computed and
//! returned anyway: memoization never breaks the caller.

use std::convert::Infallible;
use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::kept::Share;
use crate::key::make_cache_key;
use crate::options::{MemoizeOptions, Refresh};
use crate::refresh::take_forced;
use crate::registry;
use crate::revalidate::{self, Settled};
use crate::sequence::Call;
use crate::sequence::{Driver, Lookup};

/// Returns the value memoized at `key`, computing and storing it on a miss.
///
/// With [`MemoizeOptions::lock`], a miss is recomputed once across every caller that
/// shares the backend: the others wait, then read the stored value. Backend failures
/// are logged and the value is computed anyway.
///
/// ```
/// use cache_memoize::{memoize, MemoizeOptions};
///
/// let opts = MemoizeOptions::new();
/// let first: String = memoize("greeting:en", &opts, || "hello".to_string());
/// let second: String = memoize("greeting:en", &opts, || unreachable!("stored"));
/// assert_eq!(first, second);
/// ```
pub fn memoize<T, F>(key: &str, opts: &MemoizeOptions, compute: F) -> T
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    match try_memoize(key, opts, || Ok::<T, Infallible>(compute())) {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// Like [`memoize`] for a fallible computation: only `Ok` values are stored; an `Err`
/// is returned as is, nothing is stored, and the lock is released.
///
/// With [`MemoizeOptions::stale`], a caller that finds the value stale refreshes it
/// inline (if no other caller is) and returns the new value, or the stale one when
/// the refresh returns `Err` or panics.
pub fn try_memoize<T, E, F>(key: &str, opts: &MemoizeOptions, compute: F) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, E>,
{
    try_memoize_sharing(key, opts, None, false, compute)
}

/// [`try_memoize`], keeping values decoded as `share` says (`keep_decoded`); `absent`:
/// the computation's `Err` is a value not to cache (`cache_none = false`'s `None`),
/// which replaces the stored one (see `Call::absent`).
pub(crate) fn try_memoize_sharing<T, E, F>(
    key: &str,
    opts: &MemoizeOptions,
    share: Option<Share<T>>,
    absent: bool,
    compute: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, E>,
{
    let call = Call::new(key, opts, Refresh::of(opts, take_forced())).removing_absent(absent);
    let mut machine = call.machine::<T>(true, share);
    let mut driver = Driver::blocking(&call);
    match driver.lookup(&mut machine) {
        Lookup::Found(value) => Ok(value),
        // Stale (or drawn for an early refresh): this caller refreshes, inline; a
        // refresh that fails (or that another caller is making) serves `stale`.
        Lookup::Refresh(stale, trigger) => {
            let stamp = trigger.stamp;
            let refreshed = revalidate::inline(&call, trigger, compute);
            match refreshed.settle(stale, call.servable(stamp)) {
                Settled::Return(output) => output,
                Settled::Compute(compute) => compute(),
            }
        }
        Lookup::Compute(_) | Lookup::Skip { .. } => driver.compute(&mut machine, compute),
    }
}

/// The async form of [`memoize`]: waits without blocking the executor.
pub async fn memoize_async<T, Fut>(
    key: &str,
    opts: &MemoizeOptions,
    compute: impl FnOnce() -> Fut,
) -> T
where
    T: Serialize + DeserializeOwned,
    Fut: Future<Output = T>,
{
    let compute = || async move { Ok::<T, Infallible>(compute().await) };
    match try_memoize_async(key, opts, compute).await {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// The async form of [`try_memoize`].
pub async fn try_memoize_async<T, E, Fut>(
    key: &str,
    opts: &MemoizeOptions,
    compute: impl FnOnce() -> Fut,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    Fut: Future<Output = Result<T, E>>,
{
    try_memoize_async_sharing(key, opts, None, false, compute).await
}

/// [`try_memoize_async`], keeping values decoded as `share` says (`keep_decoded`);
/// `absent` as in [`try_memoize_sharing`].
pub(crate) async fn try_memoize_async_sharing<T, E, Fut>(
    key: &str,
    opts: &MemoizeOptions,
    share: Option<Share<T>>,
    absent: bool,
    compute: impl FnOnce() -> Fut,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    Fut: Future<Output = Result<T, E>>,
{
    let call = Call::new(key, opts, Refresh::of(opts, take_forced())).removing_absent(absent);
    let mut machine = call.machine::<T>(true, share);
    let mut driver = Driver::nonblocking(&call);
    match driver.lookup_async(&mut machine).await {
        Lookup::Found(value) => Ok(value),
        Lookup::Refresh(stale, trigger) => {
            let stamp = trigger.stamp;
            let refreshed = revalidate::inline_async(&call, trigger, compute).await;
            match refreshed.settle(stale, call.servable(stamp)) {
                Settled::Return(output) => output,
                Settled::Compute(compute) => compute().await,
            }
        }
        Lookup::Compute(_) | Lookup::Skip { .. } => {
            driver.compute_async(&mut machine, compute).await
        }
    }
}

/// Removes the value memoized at `key` from the registered backend, with its lock: a
/// computation running for `key` right now (a miss, a forced or a stale refresh: every
/// store is made under the key's one lock) cannot store its older value afterwards, and
/// no call in this process that begins after this returns joins a computation that
/// began before it.
pub fn invalidate(key: &str) -> Result<(), Error> {
    let key = make_cache_key(key);
    let backend = registry::backend();
    backend.invalidate(key.as_str(), &key.lock_key())
}
