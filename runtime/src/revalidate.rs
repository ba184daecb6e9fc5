//! Refreshing a stale value: [`inline`] in the caller that found it, or detached on a
//! worker thread or a Tokio task ([`memoize_detached`] and its kin, bounded by
//! `refresh_pool.rs`), so that every caller gets the stale value at once. Either way
//! the refresh runs the sequence with `Refresh::Revalidate`: the key's lock taken
//! without waiting (one refresher
//! across the fleet), the value read again under it (computed only if it is still the
//! one found stale), and a failure (an `Err`, a panic, a broken backend) leaves the
//! fail-safe throttle's mark while the stale value is served.
//!
//! A process runs at most one refresh of a key at a time: the hit that found the value
//! stale holds this process's claim on it ([`Trigger`]), and the refresh keeps that
//! claim until it ends. Other stale hits meanwhile start nothing (no thread, no task).

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::kept::Share;
use crate::observe::{self, Outcome};
use crate::options::{MemoizeOptions, Refresh};
use crate::refresh::take_forced;
use crate::refresh_pool;
use crate::sequence::Call;
use crate::sequence::{Driver, Lookup, Trigger};

/// How an inline refresh ended.
pub(crate) enum Refreshed<T, E, C> {
    /// It computed and stored: the new value, or an `Err` the call takes for a value
    /// not to cache (stored as the mark of an absent value).
    Computed(Result<T, E>),
    /// It computed and failed: an `Err`, or a panic (its payload).
    Failed(Failure<E>),
    /// It did not compute (another caller refreshed or is refreshing, or the backend
    /// failed): the computation, unused.
    Skipped(C),
}

/// A refresh's computation that failed.
pub(crate) enum Failure<E> {
    Err(E),
    Panicked(Box<dyn Any + Send>),
}

/// What the caller that found a value stale does once its inline refresh ended.
pub(crate) enum Settled<T, E, C> {
    /// Returns this.
    Return(Result<T, E>),
    /// Computes with this, storing nothing: the refresh did not run, and the stale
    /// value may no longer be served.
    Compute(C),
}

impl<T, E, C> Refreshed<T, E, C> {
    /// The refresh's value; else the stale value if it may still be served now
    /// (`servable`, judged again after the refresh: nothing older than `expire + stale`
    /// is returned); else the refresh's error (its panic, resumed), or, if it did not
    /// run, a computation of the caller's own.
    pub(crate) fn settle(self, stale: T, servable: bool) -> Settled<T, E, C> {
        match self {
            Self::Computed(output) => Settled::Return(output),
            Self::Failed(_) | Self::Skipped(_) if servable => Settled::Return(Ok(stale)),
            Self::Failed(Failure::Err(err)) => Settled::Return(Err(err)),
            Self::Failed(Failure::Panicked(payload)) => resume_unwind(payload),
            Self::Skipped(unused) => Settled::Compute(unused),
        }
    }
}

/// Refreshes the value of `stale_call` (found as `trigger` says) in this caller.
pub(crate) fn inline<T, E, F>(
    stale_call: &Call<'_>,
    trigger: Trigger,
    compute: F,
) -> Refreshed<T, E, F>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, E>,
{
    let Trigger { stamp, mut claim } = trigger;
    let call = stale_call.revalidation();
    let mut machine = call.machine::<T>(false, None).refreshing(stamp);
    let mut driver = Driver::blocking(&call);
    match driver.lookup(&mut machine) {
        Lookup::Compute(_) => {
            let guarded = || match catch_unwind(AssertUnwindSafe(compute)) {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(err)) => Err(Failure::Err(err)),
                Err(payload) => Err(Failure::Panicked(payload)),
            };
            let output = driver.compute_judged(&mut machine, guarded, is_err);
            refreshed(&call, output)
        }
        Lookup::Skip {
            back_off: Some(back_off),
        } => {
            claim.back_off(Instant::now(), back_off);
            Refreshed::Skipped(compute)
        }
        Lookup::Found(_) | Lookup::Refresh(..) | Lookup::Skip { back_off: None } => {
            Refreshed::Skipped(compute)
        }
    }
}

/// The async form of [`inline`].
pub(crate) async fn inline_async<T, E, F, Fut>(
    stale_call: &Call<'_>,
    trigger: Trigger,
    compute: F,
) -> Refreshed<T, E, F>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Fut,
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
                    Ok(Err(err)) => Err(Failure::Err(err)),
                    Err(payload) => Err(Failure::Panicked(payload)),
                }
            };
            let output = driver
                .compute_judged_async(&mut machine, guarded, is_err)
                .await;
            refreshed(&call, output)
        }
        Lookup::Skip {
            back_off: Some(back_off),
        } => {
            claim.back_off(Instant::now(), back_off);
            Refreshed::Skipped(compute)
        }
        Lookup::Found(_) | Lookup::Refresh(..) | Lookup::Skip { back_off: None } => {
            Refreshed::Skipped(compute)
        }
    }
}

/// Whether a refresh's failure is the computation's `Err` (which a call that removes
/// absent values takes for one), not a panic.
fn is_err<E>(failure: &Failure<E>) -> bool {
    matches!(failure, Failure::Err(_))
}

/// A computed refresh's output as [`Refreshed`].
fn refreshed<T, E, C>(call: &Call<'_>, output: Result<T, Failure<E>>) -> Refreshed<T, E, C> {
    match output {
        Ok(value) => Refreshed::Computed(Ok(value)),
        Err(Failure::Err(err)) if call.absent => Refreshed::Computed(Err(err)),
        Err(failure) => Refreshed::Failed(failure),
    }
}

/// A future's output, or the panic's payload if polling it panicked.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Like [`memoize`](crate::memoize), but a stale value is refreshed in the background,
/// on one of a few worker threads: every caller, the one that triggered the refresh
/// included, gets the stale value at once. For that, `compute` must be `Send +
/// 'static` (it owns its inputs). A refresh that finds the workers busy and their queue
/// full is dropped, the stale value served ([`set_refresh_limits`](crate::set_refresh_limits)).
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
    try_memoize_detached_sharing(key, opts, None, false, compute)
}

/// [`try_memoize_detached`], keeping values decoded as `share` says (`keep_decoded`);
/// `absent`: the computation's `Err` is a value not to cache (see `Call::absent`).
pub(crate) fn try_memoize_detached_sharing<T, E, F>(
    key: &str,
    opts: &MemoizeOptions,
    share: Option<Share<T>>,
    absent: bool,
    compute: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    E: 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    let call = Call::new(key, opts, Refresh::of(opts, take_forced())).removing_absent(absent);
    let mut machine = call.machine::<T>(true, share);
    let mut driver = Driver::blocking(&call);
    match driver.lookup(&mut machine) {
        Lookup::Found(value) => Ok(value),
        Lookup::Refresh(stale, trigger) => {
            let opts = call.owned_options();
            let key = call.key.clone();
            // Without room the job is dropped, with the trigger and its claim.
            let queued = refresh_pool::run(Box::new(move || {
                let call = Call::for_key(key, &opts, Refresh::IfMissing).removing_absent(absent);
                inline(&call, trigger, compute);
            }));
            if !queued {
                observe::record(call.opts.name, &call.key, Outcome::RefreshDropped);
            }
            Ok(stale)
        }
        Lookup::Compute(_) | Lookup::Skip { .. } => driver.compute(&mut machine, compute),
    }
}

/// The async form of [`memoize_detached`]: the refresh runs as a task on the caller's
/// Tokio runtime (inline, if there is none), a few at once and a bounded number waiting
/// for a turn; a refresh beyond them is dropped, the stale value served
/// ([`set_refresh_limits`](crate::set_refresh_limits)).
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
    try_memoize_async_detached_sharing(key, opts, None, false, compute).await
}

/// [`try_memoize_async_detached`], keeping values decoded as `share` says
/// (`keep_decoded`); `absent`: the computation's `Err` is a value not to cache.
pub(crate) async fn try_memoize_async_detached_sharing<T, E, F, Fut>(
    key: &str,
    opts: &MemoizeOptions,
    share: Option<Share<T>>,
    absent: bool,
    compute: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    E: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    let call = Call::new(key, opts, Refresh::of(opts, take_forced())).removing_absent(absent);
    let mut machine = call.machine::<T>(true, share);
    let mut driver = Driver::nonblocking(&call);
    match driver.lookup_async(&mut machine).await {
        Lookup::Found(value) => Ok(value),
        Lookup::Refresh(stale, trigger) => match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // Without room the trigger is dropped, and with it the claim.
                if let Some(admitted) = refresh_pool::admit_async() {
                    let opts = call.owned_options();
                    let key = call.key.clone();
                    runtime.spawn(async move {
                        let _turn = admitted.turn().await;
                        let call =
                            Call::for_key(key, &opts, Refresh::IfMissing).removing_absent(absent);
                        inline_async(&call, trigger, compute).await;
                    });
                } else {
                    observe::record(call.opts.name, &call.key, Outcome::RefreshDropped);
                }
                Ok(stale)
            }
            Err(_) => {
                let stamp = trigger.stamp;
                let refreshed = inline_async(&call, trigger, compute).await;
                match refreshed.settle(stale, call.servable(stamp)) {
                    Settled::Return(output) => output,
                    Settled::Compute(compute) => compute().await,
                }
            }
        },
        Lookup::Compute(_) | Lookup::Skip { .. } => {
            driver.compute_async(&mut machine, compute).await
        }
    }
}
