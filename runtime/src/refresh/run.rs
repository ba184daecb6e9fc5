//! Revalidation: a value found stale (or drawn for an early refresh) is returned and
//! refreshed, [`Inline`] in the caller that found it, or [`Detached`] on a worker
//! thread or a Tokio task (bounded by `refresh::pool`), so that every caller gets the
//! stale value at once. Either way the refresh runs the sequence with
//! `Refresh::Revalidate`: the key's lock taken without waiting (one refresher across the
//! fleet), the value read again under it (computed only if it is still the one found
//! stale), and a failure (an `Err`, a panic, a broken backend) leaves the fail-safe
//! throttle's mark while the stale value is served.
//!
//! A process runs at most one revalidation of a key at a time: the hit that found the
//! value stale holds this process's refresh claim on it ([`Trigger`], see
//! `refresh::claim`), and the refresh keeps that claim until it ends. Other stale hits
//! meanwhile start nothing (no thread, no task).

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::memoize::{Cacheable, Entry, Job, call, call_async};
use crate::observe::{self, Outcome};
use crate::options::{MemoizeOptions, Refresh};
use crate::outcome::{PlainOutcome, ResultOutcome, Shape};
use crate::refresh::claim::RefreshClaim;
use crate::refresh::pool;
use crate::sequence::{Call, Driver, Lookup, Trigger};

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
    let Trigger { stamp, claim } = trigger;
    let call = stale_call.revalidation();
    let mut machine = call.machine::<T>(false, None).revalidating(stamp);
    let mut driver = Driver::blocking(&call);
    match driver.lookup(&mut machine) {
        Lookup::Compute(_) => {
            let guarded = || caught(catch_unwind(AssertUnwindSafe(compute)));
            let output = driver.compute(&mut machine, guarded, is_err);
            refreshed(&call, output)
        }
        lookup => skipped(&lookup, claim, compute),
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
    let Trigger { stamp, claim } = trigger;
    let call = stale_call.revalidation();
    let mut machine = call.machine::<T>(false, None).revalidating(stamp);
    let mut driver = Driver::nonblocking(&call);
    match driver.lookup_async(&mut machine).await {
        Lookup::Compute(_) => {
            let guarded =
                || async { caught(CatchUnwind(Box::pin(async { compute().await })).await) };
            let output = driver.compute_async(&mut machine, guarded, is_err).await;
            refreshed(&call, output)
        }
        lookup => skipped(&lookup, claim, compute),
    }
}

/// A computation's output, or the panic it was caught in, as a refresh's.
fn caught<T, E>(output: Result<Result<T, E>, Box<dyn Any + Send>>) -> Result<T, Failure<E>> {
    match output {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(Failure::Err(err)),
        Err(payload) => Err(Failure::Panicked(payload)),
    }
}

/// A refresh that did not compute: it backs off, if the sequence says so, and hands its
/// computation back unused.
fn skipped<T, E, C, V>(
    lookup: &Lookup<V>,
    mut claim: RefreshClaim,
    compute: C,
) -> Refreshed<T, E, C> {
    if let Lookup::Skip {
        back_off: Some(back_off),
    } = lookup
    {
        claim.back_off(Instant::now(), *back_off);
    }
    Refreshed::Skipped(compute)
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

/// A revalidation runs in the caller that found the value stale (`refresh = "inline"`,
/// and [`memoize`](fn@crate::memoize) and its kin).
#[derive(Debug, Clone, Copy, Default)]
pub struct Inline;

/// A revalidation runs in the background, on a worker thread or a Tokio task (with
/// `stale` or `beta` and owned arguments, and [`memoize_detached`] and its kin).
#[derive(Debug, Clone, Copy, Default)]
pub struct Detached;

/// What a background refresh (`stale` or `beta` with owned arguments) needs of each
/// argument and of the stored value: they move to the refresh's thread or task. Its
/// only purpose is the error message.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot move to a background refresh: it is not `Send + 'static`",
    label = "moved to the thread (or Tokio task) that refreshes a stale value",
    note = "with `stale` or `beta`, a stale value is refreshed in the background by a closure that owns the arguments, so every caller gets the stale value at once",
    note = "add `refresh = \"inline\"` to #[cache_memoize] to refresh in the caller that finds the value stale instead (the other callers still get the stale value at once)"
)]
pub trait RefreshInBackground: Send + 'static {}
impl<T: Send + 'static> RefreshInBackground for T {}

/// A revalidation handed back to run in the caller (`None`: it went to the background,
/// or was dropped for lack of room).
type Handed<S, F> = Option<(Trigger, Job<S, F>)>;

/// Where the revalidation of a blocking call runs.
#[diagnostic::on_unimplemented(
    message = "this call's revalidation cannot move to the background",
    note = "a detached revalidation owns the computation and its value: both must be `Send + 'static`"
)]
#[allow(private_interfaces)]
pub trait Revalidation<R, S, F>: Copy {
    /// Hands `job`'s revalidation to the background (`None`), or gives it back to run
    /// in the caller.
    fn detach(self, call: &Call<'_>, trigger: Trigger, job: Job<S, F>) -> Handed<S, F>;
}

/// Where the revalidation of an async call runs.
#[diagnostic::on_unimplemented(
    message = "this call's revalidation cannot move to the background",
    note = "a detached revalidation owns the computation, its future and its value: all must be `Send + 'static`"
)]
#[allow(private_interfaces)]
pub trait RevalidationAsync<R, S, F>: Copy {
    /// The async form of [`Revalidation::detach`]: a task on the caller's Tokio
    /// runtime, or (without one) the caller.
    fn detach(self, call: &Call<'_>, trigger: Trigger, job: Job<S, F>) -> Handed<S, F>;
}

#[allow(private_interfaces)]
impl<R, S, F> Revalidation<R, S, F> for Inline {
    fn detach(self, _: &Call<'_>, trigger: Trigger, job: Job<S, F>) -> Handed<S, F> {
        Some((trigger, job))
    }
}

#[allow(private_interfaces)]
impl<R, S, F> RevalidationAsync<R, S, F> for Inline {
    fn detach(self, _: &Call<'_>, trigger: Trigger, job: Job<S, F>) -> Handed<S, F> {
        Some((trigger, job))
    }
}

#[allow(private_interfaces)]
impl<R, S, F> Revalidation<R, S, F> for Detached
where
    R: 'static,
    S: Shape<R>,
    S::Stored: Cacheable + RefreshInBackground,
    S::Passed: 'static,
    F: FnOnce() -> R + RefreshInBackground,
{
    fn detach(self, call: &Call<'_>, trigger: Trigger, job: Job<S, F>) -> Handed<S, F> {
        let (opts, key, absent) = (call.owned_options(), call.key.clone(), call.absent);
        // Without room the job is dropped, with the trigger and its claim.
        let queued = pool::run(Box::new(move || {
            let call = Call::for_key(key, &opts, Refresh::IfMissing).removing_absent(absent);
            inline(&call, trigger, move || job.run());
        }));
        if !queued {
            observe::record(call.opts.name, &call.key, Outcome::RefreshDropped);
        }
        None
    }
}

#[allow(private_interfaces)]
impl<R, S, F, Fut> RevalidationAsync<R, S, F> for Detached
where
    R: 'static,
    S: Shape<R>,
    S::Stored: Cacheable + RefreshInBackground,
    S::Passed: RefreshInBackground,
    F: FnOnce() -> Fut + RefreshInBackground,
    Fut: Future<Output = R> + RefreshInBackground,
{
    fn detach(self, call: &Call<'_>, trigger: Trigger, job: Job<S, F>) -> Handed<S, F> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Some((trigger, job));
        };
        // Without room the trigger is dropped, and with it the claim.
        if let Some(admitted) = pool::admit_async() {
            let (opts, key, absent) = (call.owned_options(), call.key.clone(), call.absent);
            runtime.spawn(async move {
                let _turn = admitted.turn().await;
                let call = Call::for_key(key, &opts, Refresh::IfMissing).removing_absent(absent);
                inline_async(&call, trigger, move || job.run_async()).await;
            });
        } else {
            observe::record(call.opts.name, &call.key, Outcome::RefreshDropped);
        }
        None
    }
}

/// Like [`memoize`](fn@crate::memoize), but a stale value is refreshed in the background,
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
    call(key, opts, Entry::new(PlainOutcome, Detached), compute)
}

/// The fallible form of [`memoize_detached`]: only `Ok` is stored; a detached refresh
/// that returns `Err` keeps the stale value served.
pub fn try_memoize_detached<T, E, F>(key: &str, opts: &MemoizeOptions, compute: F) -> Result<T, E>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    E: 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    call(key, opts, Entry::new(ResultOutcome, Detached), compute)
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
    call_async(key, opts, Entry::new(PlainOutcome, Detached), compute).await
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
    call_async(key, opts, Entry::new(ResultOutcome, Detached), compute).await
}
