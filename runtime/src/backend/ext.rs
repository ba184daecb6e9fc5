//! The typed API over [`BackendCore::execute`] and
//! [`AsyncBackendCore::execute_async`], written once and implemented for every backend
//! (as redis-rs's `Commands` over `ConnectionLike`, or tower's `ServiceExt`): each
//! operation below is one line of [`typed!`], which spells its blocking method and its
//! async one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::{
    AsyncBackendCore, BackendCore, BoxFuture, DecodedValue, GetOrLock, KeptValue, LockClaim, Op,
    Reply,
};
use crate::error::Error;

/// Defines [`Backend`] and [`AsyncBackend`] from one table: for each operation, its
/// docs, its method names (blocking and async), its arguments, the [`Op`] it sends,
/// the [`Reply`] accessor that reads the answer, and the key errors name.
macro_rules! typed {
    ($(
        $(#[doc = $doc:literal])*
        fn $name:ident / $async_name:ident ($($arg:ident : $ty:ty),*) -> $out:ty
            = $op:expr => $read:ident @ $key:expr;
    )*) => {
        /// A blocking cache backend: the typed operations, each one [`Op`] sent through
        /// [`BackendCore::execute`]. Implemented for every [`BackendCore`] (a backend
        /// implements that one method, never these), so a wrapper that forwards
        /// `execute` keeps every capability of what it wraps.
        ///
        /// Every method is one atomic step from the point of view of other clients.
        pub trait Backend: BackendCore {
            $(
                $(#[doc = $doc])*
                fn $name<'a>(&'a self, $($arg: $ty),*) -> Result<$out, Error> {
                    let key = $key;
                    self.execute($op)?.$read(stringify!($name), key)
                }
            )*

            /// Blocks until `lock_key` may have been released since `attempted` (when
            /// the caller last found it held), or for at most `max`. Polling backends
            /// simply sleep; a backend with notifications returns early, and at once if
            /// a release arrived after `attempted`. A wait the backend fails sleeps out
            /// the rest of `max`, as a polling backend's does: a caller riding out a
            /// failing backend retries at its pace, not as fast as failures come back.
            fn wait_for_release(&self, lock_key: &str, attempted: Instant, max: Duration) {
                let _ = wait_for_value(self, lock_key, attempted, max);
            }

            /// The decoded value kept beside `key`'s bytes by an in-process tier (see
            /// [`keep_decoded`](Self::keep_decoded)), if the bytes are there to be
            /// served now and `accept` takes it (it was read as the caller reads: a kept
            /// value of another type, codec or version is left alone, and the read is
            /// not answered, nor counted as a hit, until the bytes are read); it answers
            /// a read of `key` as [`get`](Self::get) would, without the bytes. Never
            /// blocks: async callers call it too. `None` from a backend without such a
            /// tier.
            fn decoded(
                &self,
                key: &str,
                accept: &dyn Fn(&KeptValue) -> bool,
            ) -> Option<DecodedValue> {
                self.execute(Op::Decoded { key, accept }).ok()?.into_decoded()
            }

            /// Offers a decoded form of `bytes`, which a [`get`](Self::get) of `key`
            /// just returned, to keep beside them: `make` builds it, and is called only
            /// if the backend keeps it, beside exactly these bytes (not if `key` was
            /// written or dropped since). A kept value must go whenever its bytes go.
            /// Never blocks. The [near cache](crate::NearCache) keeps it; a backend
            /// without an in-process tier does not.
            fn keep_decoded(
                &self,
                key: &str,
                bytes: &[u8],
                make: &mut dyn FnMut() -> DecodedValue,
            ) {
                let _ = self.execute(Op::KeepDecoded { key, bytes, make });
            }
        }

        /// An async cache backend: [`Backend`]'s operations without blocking the
        /// executor, each one [`Op`] sent through [`AsyncBackendCore::execute_async`].
        /// Implemented for every [`AsyncBackendCore`]. The futures need a Tokio runtime
        /// only where a backend says so.
        pub trait AsyncBackend: AsyncBackendCore {
            $(
                #[doc = concat!("See [`Backend::", stringify!($name), "`].")]
                fn $async_name<'a>(&'a self, $($arg: $ty),*) -> Pending<'a, Result<$out, Error>> {
                    let key = $key;
                    let read = |reply: Result<Reply, Error>, op, key: &str| reply?.$read(op, key);
                    Pending::new(self.execute_async($op), read, stringify!($name), key)
                }
            )*

            /// See [`Backend::wait_for_release`]. Backends without notifications sleep
            /// `max` on the crate's own timer (a thread of its own, so it needs no
            /// runtime driver); so does a wait the backend fails, for the rest of `max`.
            fn wait_for_release_async<'a>(
                &'a self,
                lock_key: &'a str,
                attempted: Instant,
                max: Duration,
            ) -> Pending<'a, ()> {
                let paced: BoxFuture<'a, Result<Reply, Error>> = Box::pin(async move {
                    let _ = wait_for_value_async(self, lock_key, attempted, max).await;
                    Ok(Reply::Done)
                });
                Pending::new(paced, |_, _, _| (), "wait", lock_key)
            }
        }
    };
}

/// [`Backend::wait_for_release`], returning the value the release delivered, if the
/// backend delivers one (see [`Op::WaitForRelease`]): the lock's holder stored it
/// after the caller's attempt at `attempted` found it holding, and the caller judges
/// it as a read.
pub(crate) fn wait_for_value<B: BackendCore + ?Sized>(
    backend: &B,
    lock_key: &str,
    attempted: Instant,
    max: Duration,
) -> Option<Vec<u8>> {
    let started = Instant::now();
    match backend.execute(Op::WaitForRelease {
        lock_key,
        attempted,
        max,
    }) {
        Ok(Reply::Value(value)) => value,
        Ok(_) => None,
        Err(_) => {
            std::thread::sleep(max.saturating_sub(started.elapsed()));
            None
        }
    }
}

/// The async form of [`wait_for_value`] (see [`AsyncBackend::wait_for_release_async`]).
pub(crate) async fn wait_for_value_async<B: AsyncBackendCore + ?Sized>(
    backend: &B,
    lock_key: &str,
    attempted: Instant,
    max: Duration,
) -> Option<Vec<u8>> {
    let started = Instant::now();
    let sent = backend.execute_async(Op::WaitForRelease {
        lock_key,
        attempted,
        max,
    });
    match sent.await {
        Ok(Reply::Value(value)) => value,
        Ok(_) => None,
        Err(_) => {
            crate::timer::sleep(max.saturating_sub(started.elapsed())).await;
            None
        }
    }
}

/// The first of `keys`, for errors (`""` when there is none).
fn first<'a>(keys: &[&'a str]) -> &'a str {
    keys.first().copied().unwrap_or("")
}

typed! {
    /// Reads `key`; `None` when absent or expired.
    fn get / get_async(key: &'a str) -> Option<Vec<u8>>
        = Op::Get { key } => into_value @ key;

    /// Reads several keys at once, in order.
    fn get_many / get_many_async(keys: &'a [&'a str]) -> Vec<Option<Vec<u8>>>
        = Op::GetMany { keys } => into_values @ first(keys);

    /// Stores `value` under `key` for `ttl`, replacing any previous value.
    fn set / set_async(key: &'a str, value: &'a [u8], ttl: Duration) -> ()
        = Op::Set { key, value, ttl } => into_done @ key;

    /// Stores `value` under `key` for `ttl` only if `key` is absent; true if stored.
    fn add / add_async(key: &'a str, value: &'a [u8], ttl: Duration) -> bool
        = Op::Add { key, value, ttl } => into_applied @ key;

    /// Removes `key`; absent keys are not an error.
    fn delete / delete_async(key: &'a str) -> ()
        = Op::Delete { key } => into_done @ key;

    /// Removes `key` only if it holds `expected`; true if removed.
    fn compare_and_delete / compare_and_delete_async(key: &'a str, expected: &'a [u8]) -> bool
        = Op::CompareAndDelete { key, expected } => into_applied @ key;

    /// Resets `key`'s time to live to `ttl` only if it holds `expected`; true if so.
    fn compare_and_extend / compare_and_extend_async(
        key: &'a str, expected: &'a [u8], ttl: Duration
    ) -> bool
        = Op::CompareAndExtend { key, expected, ttl } => into_applied @ key;

    /// Returns the value at `key` if present, or else tries to take `lock` (an `add`
    /// of its token), as one atomic step. One round trip on a networked backend.
    fn get_or_lock / get_or_lock_async(key: &'a str, lock: &LockClaim<'a>) -> GetOrLock
        = Op::GetOrLock { key, lock: *lock } => into_found @ key;

    /// Takes `lock` if it is free (an `add` of its token) and returns the
    /// acquisition's fencing token (see [`LockClaim`]); `None` when another owner
    /// holds it.
    fn take_lock / take_lock_async(lock: &LockClaim<'a>) -> Option<u64>
        = Op::TakeLock { lock: *lock } => into_fence @ lock.key;

    /// If `lock` still holds its token and its fencing token is larger than the stored
    /// value's (or the stored value has none: absent, not a memoized value): stores
    /// `value` at `key` for `ttl`, deletes the lock, and wakes its waiters. Otherwise
    /// (the lock expired, was taken by a later holder, or was voided by
    /// [`invalidate`](Self::invalidate); or a value written under a later token is
    /// there) stores nothing, and releases the lock if it was still ours: a late writer
    /// never overwrites what came after it. Returns whether the value was stored.
    fn store_and_release / store_and_release_async(
        key: &'a str, value: &'a [u8], ttl: Duration, lock: &LockClaim<'a>
    ) -> bool
        = Op::StoreAndRelease { key, value, ttl, lock: *lock } => into_applied @ key;

    /// Removes the value at `key` and its lock at `lock_key`, so that a computation
    /// running under that lock cannot store a value computed before this call.
    fn invalidate / invalidate_async(key: &'a str, lock_key: &'a str) -> ()
        = Op::Invalidate { key, lock_key } => into_done @ key;

    /// Resets the time to live of each present key of `keys` to `ttl` (a zero `ttl`
    /// removes them), as one step: the chunks of a memoized iterator's write, made
    /// to last as long as the value when it commits, or given up at once. Returns how
    /// many of `keys` were present. The keys share one hash tag (one cluster slot).
    fn expire_many / expire_many_async(keys: &'a [&'a str], ttl: Duration) -> usize
        = Op::ExpireMany { keys, ttl } => into_count @ first(keys);
}

impl<B: BackendCore> Backend for B {}

impl<B: AsyncBackendCore> AsyncBackend for B {}

/// The future of a typed async operation: the [`Reply`] of
/// [`execute_async`](AsyncBackendCore::execute_async), read as the operation's type.
#[must_use = "futures do nothing unless awaited"]
pub struct Pending<'a, T> {
    sent: BoxFuture<'a, Result<Reply, Error>>,
    read: fn(Result<Reply, Error>, &'static str, &str) -> T,
    name: &'static str,
    key: &'a str,
}

impl<'a, T> Pending<'a, T> {
    fn new(
        sent: BoxFuture<'a, Result<Reply, Error>>,
        read: fn(Result<Reply, Error>, &'static str, &str) -> T,
        name: &'static str,
        key: &'a str,
    ) -> Self {
        Self {
            sent,
            read,
            name,
            key,
        }
    }
}

impl<T> Future for Pending<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        this.sent
            .as_mut()
            .poll(cx)
            .map(|reply| (this.read)(reply, this.name, this.key))
    }
}

impl<T> std::fmt::Debug for Pending<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("operation", &self.name)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
