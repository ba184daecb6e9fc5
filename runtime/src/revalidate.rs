//! Refreshing a stale value: [`inline`] in the caller that found it, or detached on a
//! thread or a Tokio task ([`memoize_detached`] and its kin), so that every caller
//! gets the stale value at once. Either way the refresh runs the sequence with
//! `Refresh::Revalidate`: the value's refresh lock taken without waiting (one refresher
//! across the fleet), the value read again under it (computed only if it is still the
//! one found stale), and a failure (an `Err`, a panic, a broken backend) keeps the lock
//! for the fail-safe throttle while the stale value is served.
//!
//! A process runs at most one refresh of a key at a time: the hit that found the value
//! stale holds this process's claim on it ([`Trigger`]), and the refresh keeps that
//! claim until it ends. Other stale hits meanwhile start nothing (no thread, no task).

use std::convert::Infallible;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::call::Call;
use crate::kept::Share;
use crate::options::{MemoizeOptions, Refresh};
use crate::refresh::take_forced;
use crate::sequence::{Driver, Lookup, Trigger};

/// Refreshes the value of `stale_call` (found as `trigger` says) in this caller; the
/// new value, or `None` when another caller refreshed or is refreshing, or this
/// refresh failed.
pub(crate) fn inline<T, E>(
    stale_call: &Call<'_>,
    trigger: Trigger,
    compute: impl FnOnce() -> Result<T, E>,
) -> Option<T>
where
    T: Serialize + DeserializeOwned,
{
    let Trigger { stamp, mut claim } = trigger;
    let call = stale_call.revalidation();
    let mut machine = call.machine::<T>(false, None).refreshing(stamp);
    let mut driver = Driver::blocking(&call);
    match driver.lookup(&mut machine) {
        Lookup::Compute(_) => {
            let guarded = || match catch_unwind(AssertUnwindSafe(compute)) {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(_)) | Err(_) => Err(()),
            };
            driver.compute(&mut machine, guarded).ok()
        }
        Lookup::Skip {
            back_off: Some(back_off),
        } => {
            claim.back_off(Instant::now(), back_off);
            None
        }
        Lookup::Found(_) | Lookup::Refresh(..) | Lookup::Skip { back_off: None } => None,
    }
}

/// The async form of [`inline`].
pub(crate) async fn inline_async<T, E, Fut>(
    stale_call: &Call<'_>,
    trigger: Trigger,
    compute: impl FnOnce() -> Fut,
) -> Option<T>
where
    T: Serialize + DeserializeOwned,
    Fut: Future<Output = Result<T, E>>,
{
    let Trigger { stamp, mut claim } = trigger;
    let call = stale_call.revalidation();
    let mut machine = call.machine::<T>(false, None).refreshing(stamp);
    let mut driver = Driver::nonblocking(&call);
    match driver.lookup_async(&mut machine).await {
        Lookup::Compute(_) => {
            let guarded = || async {
                match CatchUnwind(Box::pin(async { compute().await })).await {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(_)) | Err(()) => Err(()),
                }
            };
            driver.compute_async(&mut machine, guarded).await.ok()
        }
        Lookup::Skip {
            back_off: Some(back_off),
        } => {
            claim.back_off(Instant::now(), back_off);
            None
        }
        Lookup::Found(_) | Lookup::Refresh(..) | Lookup::Skip { back_off: None } => None,
    }
}

/// A future's output, or `Err` if polling it panicked.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// Like [`memoize`](crate::memoize), but a stale value is refreshed on a thread of its
/// own: every caller, the one that triggered the refresh included, gets the stale
/// value at once. For that, `compute` must be `Send + 'static` (it owns its inputs).
/// Without [`MemoizeOptions::stale`] (or `beta`) it behaves as `memoize`.
///
/// ```
/// use cache_memoize::{MemoizeOptions, memoize_detached};
/// use std::time::Duration;
///
/// let opts = MemoizeOptions::new()
///     .expire(Duration::from_secs(60))
///     .stale(Duration::from_secs(3600));
/// let currency = String::from("eur");
/// let rate: u32 = memoize_detached("rate:detached:eur", &opts, move || currency.len() as u32);
/// assert_eq!(rate, 3);
/// ```
pub fn memoize_detached<T, F>(key: &str, opts: &MemoizeOptions, compute: F) -> T
where
    T: Serialize + DeserializeOwned + Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match try_memoize_detached(key, opts, move || Ok::<T, Infallible>(compute())) {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// The fallible form of [`memoize_detached`]: only `Ok` is stored; a detached refresh
/// that returns `Err` keeps the stale value served.
pub fn try_memoize_detached<T, E, F>(key: &str, opts: &MemoizeOptions, compute: F) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    E: 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    try_memoize_detached_sharing(key, opts, None, compute)
}

/// [`try_memoize_detached`], keeping values decoded as `share` says (`keep_decoded`).
pub(crate) fn try_memoize_detached_sharing<T, E, F>(
    key: &str,
    opts: &MemoizeOptions,
    share: Option<Share<T>>,
    compute: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    E: 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    let call = Call::new(key, opts, Refresh::of(opts, take_forced()));
    let mut machine = call.machine::<T>(true, share);
    let mut driver = Driver::blocking(&call);
    match driver.lookup(&mut machine) {
        Lookup::Found(value) => Ok(value),
        Lookup::Refresh(stale, trigger) => {
            let opts = call.owned_options();
            let key = call.key.clone();
            // A thread that cannot start drops the trigger, and with it the claim.
            let spawned = std::thread::Builder::new()
                .name("cache-memoize-refresh".into())
                .spawn(move || {
                    let call = Call::for_key(key, &opts, Refresh::IfMissing);
                    inline(&call, trigger, compute);
                });
            if let Err(err) = spawned {
                tracing::warn!(key = %call.key, error = %err, "cannot start a refresh thread; the stale value is served");
            }
            Ok(stale)
        }
        Lookup::Compute(_) | Lookup::Skip { .. } => driver.compute(&mut machine, compute),
    }
}

/// The async form of [`memoize_detached`]: the refresh runs as a task on the caller's
/// Tokio runtime (inline, if there is none).
pub async fn memoize_async_detached<T, F, Fut>(key: &str, opts: &MemoizeOptions, compute: F) -> T
where
    T: Serialize + DeserializeOwned + Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let compute = move || async move { Ok::<T, Infallible>(compute().await) };
    match try_memoize_async_detached(key, opts, compute).await {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// The async form of [`try_memoize_detached`].
pub async fn try_memoize_async_detached<T, E, F, Fut>(
    key: &str,
    opts: &MemoizeOptions,
    compute: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    E: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    try_memoize_async_detached_sharing(key, opts, None, compute).await
}

/// [`try_memoize_async_detached`], keeping values decoded as `share` says
/// (`keep_decoded`).
pub(crate) async fn try_memoize_async_detached_sharing<T, E, F, Fut>(
    key: &str,
    opts: &MemoizeOptions,
    share: Option<Share<T>>,
    compute: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    E: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    let call = Call::new(key, opts, Refresh::of(opts, take_forced()));
    let mut machine = call.machine::<T>(true, share);
    let mut driver = Driver::nonblocking(&call);
    match driver.lookup_async(&mut machine).await {
        Lookup::Found(value) => Ok(value),
        Lookup::Refresh(stale, trigger) => {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let opts = call.owned_options();
                    let key = call.key.clone();
                    runtime.spawn(async move {
                        let call = Call::for_key(key, &opts, Refresh::IfMissing);
                        inline_async(&call, trigger, compute).await;
                    });
                }
                Err(_) => {
                    inline_async(&call, trigger, compute).await;
                }
            }
            Ok(stale)
        }
        Lookup::Compute(_) | Lookup::Skip { .. } => {
            driver.compute_async(&mut machine, compute).await
        }
    }
}
