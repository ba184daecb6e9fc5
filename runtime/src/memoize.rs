//! The value path's entries: [`memoize`], [`try_memoize`], their async forms, the
//! detached forms (`refresh::run`) and the code `#[cache_memoize]` generates all run
//! through one entry, [`call`] (blocking) or [`call_async`], described by a typed
//! [`Entry`]: how the return value is stored (its [`Shape`]: plain, `Result`, or
//! `Option` under `cache_none = false`), where a revalidation runs ([`Inline`] or
//! [`Detached`](crate::refresh::run::Detached)), whether values are kept decoded, and whether the codec's round trip
//! is checked. Each call runs the sequence (`crate::sequence`) once and computes when
//! it says so.
//!
//! Every backend failure is logged through `tracing` and the value is computed and
//! returned anyway: memoization never breaks the caller.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use once_cell::sync::Lazy;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::Codec;
use crate::error::Error;
use crate::kept::Share;
use crate::key::make_cache_key;
use crate::observe;
use crate::options::{MemoizeOptions, Refresh};
use crate::outcome::{PlainOutcome, ResultOutcome, Shape};
use crate::refresh::run::{self, Inline, Revalidation, RevalidationAsync, Settled};
use crate::refresh::scope::take_forced;
use crate::registry;
use crate::sequence::{Call, Driver, Lookup};

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
    call(key, opts, Entry::new(PlainOutcome, Inline), compute)
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
    call(key, opts, Entry::new(ResultOutcome, Inline), compute)
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
    call_async(key, opts, Entry::new(PlainOutcome, Inline), compute).await
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
    call_async(key, opts, Entry::new(ResultOutcome, Inline), compute).await
}

/// What a memoized value call is, beside its key, options and computation: the return
/// value's [`Shape`] `S`, where a revalidation runs (`M`: [`Inline`] or
/// [`Detached`](crate::refresh::run::Detached)), how values of the stored type `T` are kept decoded, and whether the
/// codec's round trip is checked.
pub struct Entry<S, M, T> {
    shape: S,
    mode: M,
    share: Option<Share<T>>,
    /// The function whose first computed value's round trip is checked.
    checked: Option<&'static str>,
}

impl<S, M, T> Entry<S, M, T> {
    /// A call whose return value has `shape`, revalidated as `mode` says; values are
    /// not kept decoded and the round trip is not checked.
    pub const fn new(shape: S, mode: M) -> Self {
        Self {
            shape,
            mode,
            share: None,
            checked: None,
        }
    }

    /// Keeps values decoded as `share` says (`keep_decoded`).
    #[must_use]
    pub const fn share(mut self, share: Option<Share<T>>) -> Self {
        self.share = share;
        self
    }

    /// Checks, the first time a value of this type is computed in this process, that
    /// the codec reads it back (see [`check_round_trip`]), naming `function`.
    #[must_use]
    pub const fn checked(mut self, function: &'static str) -> Self {
        self.checked = Some(function);
        self
    }
}

/// What a memoized function's stored value needs; its only purpose is the error message.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored in the cache: it is not `Serialize + DeserializeOwned`",
    label = "the value this function stores",
    note = "derive `serde::Serialize` and `serde::Deserialize` for it, or memoize a serializable part of it (a `Result`'s `Ok` type is what is stored)"
)]
pub trait Cacheable: Serialize + DeserializeOwned {}
impl<T: Serialize + DeserializeOwned> Cacheable for T {}

/// A call's computation with what it needs to hand over its output: the shape that
/// splits it into what is stored and what is passed through, and the round-trip check.
pub struct Job<S, F> {
    shape: S,
    compute: F,
    checked: Option<(&'static str, Codec)>,
}

impl<S, F> Job<S, F> {
    /// Computes, splits, and checks a stored value's round trip.
    pub(crate) fn run<R>(self) -> Result<S::Stored, S::Passed>
    where
        S: Shape<R>,
        S::Stored: Cacheable,
        F: FnOnce() -> R,
    {
        let Self {
            shape,
            compute,
            checked,
        } = self;
        let output = shape.split(compute());
        check(&output, checked);
        output
    }

    /// The async form of [`run`](Self::run).
    pub(crate) async fn run_async<R, Fut>(self) -> Result<S::Stored, S::Passed>
    where
        S: Shape<R>,
        S::Stored: Cacheable,
        F: FnOnce() -> Fut,
        Fut: Future<Output = R>,
    {
        let Self {
            shape,
            compute,
            checked,
        } = self;
        let output = shape.split(compute().await);
        check(&output, checked);
        output
    }
}

/// Checks a stored value's round trip, if `checked` names its function.
fn check<T: Cacheable, E>(output: &Result<T, E>, checked: Option<(&'static str, Codec)>) {
    if let (Ok(value), Some((function, codec))) = (output, checked) {
        check_round_trip(value, function, codec);
    }
}

/// Splits an entry into the call it makes, its sequence's parts and its job.
fn start<'o, S, M, T, F>(
    key: &str,
    opts: &'o MemoizeOptions,
    entry: Entry<S, M, T>,
    compute: F,
    absent: bool,
) -> (Call<'o>, Option<Share<T>>, M, Job<S, F>) {
    let Entry {
        shape,
        mode,
        share,
        checked,
    } = entry;
    let mut call = Call::new(key, opts, Refresh::of(opts, take_forced()));
    call.absent = absent;
    let job = Job {
        shape,
        compute,
        checked: checked.map(|function| (function, opts.codec)),
    };
    (call, share, mode, job)
}

/// The one blocking entry of a memoized value call (see the module docs): looks the
/// value up, computes it on a miss, revalidates a stale one as `entry` says.
pub fn call<R, S, M, F>(
    key: &str,
    opts: &MemoizeOptions,
    entry: Entry<S, M, S::Stored>,
    compute: F,
) -> R
where
    S: Shape<R>,
    S::Stored: Cacheable,
    M: Revalidation<R, S, F>,
    F: FnOnce() -> R,
{
    let shape = entry.shape;
    let (call, keeping, mode, job) = start(key, opts, entry, compute, S::ABSENT);
    let mut machine = call.machine::<S::Stored>(true, keeping);
    let mut driver = Driver::blocking(&call);
    shape.join(match driver.lookup(&mut machine) {
        Lookup::Found(value) => Ok(value),
        // Stale (or drawn for an early refresh): revalidated in the background, or
        // here; one that fails (or that another caller is making) serves `stale`.
        Lookup::Revalidate(stale, trigger) => match mode.detach(&call, trigger, job) {
            None => Ok(stale),
            Some((trigger, job)) => {
                let stamp = trigger.stamp;
                let refreshed = run::inline(&call, trigger, move || job.run());
                match refreshed.settle(stale, call.servable(stamp)) {
                    Settled::Return(output) => output,
                    Settled::Compute(compute) => compute(),
                }
            }
        },
        Lookup::Compute(_) | Lookup::Skip { .. } => {
            driver.compute(&mut machine, move || job.run(), |_| true)
        }
    })
}

/// The async form of [`call`]: waits without blocking the executor.
pub async fn call_async<R, S, M, F, Fut>(
    key: &str,
    opts: &MemoizeOptions,
    entry: Entry<S, M, S::Stored>,
    compute: F,
) -> R
where
    S: Shape<R>,
    S::Stored: Cacheable,
    M: RevalidationAsync<R, S, F>,
    F: FnOnce() -> Fut,
    Fut: Future<Output = R>,
{
    let shape = entry.shape;
    let (call, keeping, mode, job) = start(key, opts, entry, compute, S::ABSENT);
    let mut machine = call.machine::<S::Stored>(true, keeping);
    let mut driver = Driver::nonblocking(&call);
    shape.join(match driver.lookup_async(&mut machine).await {
        Lookup::Found(value) => Ok(value),
        Lookup::Revalidate(stale, trigger) => match mode.detach(&call, trigger, job) {
            None => Ok(stale),
            Some((trigger, job)) => {
                let stamp = trigger.stamp;
                let refreshed = run::inline_async(&call, trigger, move || job.run_async()).await;
                match refreshed.settle(stale, call.servable(stamp)) {
                    Settled::Return(output) => output,
                    Settled::Compute(compute) => compute().await,
                }
            }
        },
        Lookup::Compute(_) | Lookup::Skip { .. } => {
            driver
                .compute_async(&mut machine, move || job.run_async(), |_| true)
                .await
        }
    })
}

/// The value types (by name) and codecs whose round trip was checked in this process.
static CHECKED: Lazy<Mutex<HashSet<(&'static str, Codec)>>> = Lazy::new(Mutex::default);

/// The first time a value of type `T` is computed in this process, checks that `codec`
/// reads it back as itself; when it does not, warns once, naming `function`, the type
/// and the fix. (Such a value is stored but never read: every call computes.)
pub fn check_round_trip<T: Serialize + DeserializeOwned>(
    value: &T,
    function: &'static str,
    codec: Codec,
) {
    let ty = core::any::type_name::<T>();
    let first = CHECKED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((ty, codec));
    if !first {
        return;
    }
    if let Err(why) = crate::codec::round_trips(codec, value) {
        tracing::warn!(
            function,
            ty,
            ?codec,
            why,
            "values of this type are stored but cannot be read back, so every call computes again; \
             add `codec = \"msgpack\"` to #[cache_memoize] (MemoizeOptions::codec(Codec::MessagePack)), \
             a self-describing codec, or drop the serde attributes that need one \
             (`tag = ..`, `flatten`, `skip_serializing_if`, `untagged`)"
        );
    }
}

/// Removes the value memoized at `key` from the registered backend, with its lock: a
/// computation running for `key` right now (a miss, a forced or a stale refresh: every
/// store is made under the key's one lock) cannot store its older value afterwards, and
/// no call in this process that begins after this returns joins a computation that
/// began before it.
///
/// It blocks the calling thread until the backend answers; in async code, use
/// [`invalidate_async`] (a blocking invalidation that holds a thread inside a Tokio
/// runtime for 100 ms or more is said at WARN, at most once a minute).
pub fn invalidate(key: &str) -> Result<(), Error> {
    let key = make_cache_key(key);
    let backend = registry::backend();
    let started = Instant::now();
    let done = backend.invalidate(key.as_str(), &key.lock_key());
    observe::held_runtime_thread("a blocking invalidation", Some(started.elapsed()));
    done
}

/// [`invalidate`] for async code: the same removal, awaited instead of blocking the
/// thread. In a handler on a Tokio runtime, `invalidate` would hold a worker for as long
/// as Redis takes to answer (up to the response timeout when it does not); this one
/// yields it.
///
/// ```
/// # async fn example() -> Result<(), cache_memoize::Error> {
/// cache_memoize::invalidate_async("rate:eur").await?;
/// # Ok(())
/// # }
/// ```
pub async fn invalidate_async(key: &str) -> Result<(), Error> {
    let key = make_cache_key(key);
    let backend = registry::backend();
    backend
        .invalidate_async(key.as_str(), &key.lock_key())
        .await
}
