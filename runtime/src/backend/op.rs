//! Every backend operation written once, as data: an [`Op`] names the step and its
//! arguments, a [`Reply`] is what it answered. A backend implements one
//! [`execute`](super::BackendCore::execute) (and one
//! [`execute_async`](super::AsyncBackendCore::execute_async)) over them; the typed methods
//! ([`Backend`](super::Backend), [`AsyncBackend`](super::AsyncBackend)) are
//! built on top, once, for every backend.

use std::time::{Duration, Instant};

use super::{AsyncBackendCore, BackendCore, DecodedValue, GetOrLock, KeptValue, LockClaim};
use crate::error::Error;

/// One backend operation and its arguments. See the typed method of the same name on
/// [`Backend`](super::Backend) for what each does.
///
/// New operations may be added: a backend that forwards to another answers the ones it
/// does not handle itself by forwarding them, and one that executes operations
/// answers an unknown one with an error ([`Op::unsupported`]).
#[non_exhaustive]
pub enum Op<'a> {
    /// Reads a key ([`Backend::get`](super::Backend::get)).
    Get {
        /// The key.
        key: &'a str,
    },
    /// Reads several keys, in order.
    GetMany {
        /// The keys.
        keys: &'a [&'a str],
    },
    /// Reads a tagged value with its tags' epochs (or the epochs alone), in order:
    /// answered as [`GetMany`](Self::GetMany) of `keys` is ([`Reply::Values`]), except
    /// that a backend with a near tier may answer it from its copies
    /// ([`Reply::NearValues`]), which `GetMany` never is. A backend that does not know
    /// it may answer [`Op::unsupported`]: the caller then sends `GetMany`.
    GetTagged {
        /// The value's key first (when `with_value`), then the epochs' keys.
        keys: &'a [&'a str],
        /// Whether the first key is the value's (the others hold epochs).
        with_value: bool,
    },
    /// Stores a value, replacing any previous one.
    Set {
        /// The key.
        key: &'a str,
        /// The value.
        value: &'a [u8],
        /// Its time to live.
        ttl: Duration,
    },
    /// Stores a value only if the key is absent (how locks are taken).
    Add {
        /// The key.
        key: &'a str,
        /// The value.
        value: &'a [u8],
        /// Its time to live.
        ttl: Duration,
    },
    /// Removes a key.
    Delete {
        /// The key.
        key: &'a str,
    },
    /// Removes a key only if it holds `expected`.
    CompareAndDelete {
        /// The key.
        key: &'a str,
        /// The value it must hold.
        expected: &'a [u8],
    },
    /// Resets a key's time to live only if it holds `expected`.
    CompareAndExtend {
        /// The key.
        key: &'a str,
        /// The value it must hold.
        expected: &'a [u8],
        /// The new time to live.
        ttl: Duration,
    },
    /// Reads `key`, or takes `lock` if it is absent, as one step.
    GetOrLock {
        /// The value's key.
        key: &'a str,
        /// The lock to take.
        lock: LockClaim<'a>,
    },
    /// Takes `lock` if it is free, with a fencing token.
    TakeLock {
        /// The lock to take.
        lock: LockClaim<'a>,
    },
    /// Stores `value` under `lock` if the lock is still ours and the write is newer,
    /// and releases the lock.
    StoreAndRelease {
        /// The value's key.
        key: &'a str,
        /// The value.
        value: &'a [u8],
        /// Its time to live.
        ttl: Duration,
        /// The lock it was computed under.
        lock: LockClaim<'a>,
    },
    /// Removes a value and voids its lock.
    Invalidate {
        /// The value's key.
        key: &'a str,
        /// Its lock's key.
        lock_key: &'a str,
    },
    /// Resets the time to live of every present key (zero removes them).
    ExpireMany {
        /// The keys (one hash slot).
        keys: &'a [&'a str],
        /// The new time to live.
        ttl: Duration,
    },
    /// Waits until a lock may have been released, or for at most `max`. Answers
    /// [`Reply::Done`], or [`Reply::Value`] with the value the release stored, when
    /// the backend delivers it with the release: only a value stored by a holder that
    /// an attempt sent after `attempted` found holding the lock (so stored after the
    /// caller's wait began); the caller judges it as it would a read.
    WaitForRelease {
        /// The lock's key.
        lock_key: &'a str,
        /// When the caller last found it held.
        attempted: Instant,
        /// The longest wait.
        max: Duration,
    },
    /// The local tier: the decoded value kept beside `key`'s bytes, if `accept` takes
    /// it. Never blocks.
    Decoded {
        /// The key.
        key: &'a str,
        /// Whether the kept value was read as the caller reads.
        accept: &'a dyn Fn(&KeptValue) -> bool,
    },
    /// Several get-or-lock and store-and-release steps (a batch's), each as its own
    /// operation would do it, in order, sent as one step where the backend can (one
    /// script on Redis). Answers [`Reply::Many`], one reply per part, in order; a
    /// backend that does not know it answers [`Op::unsupported`] and the caller sends
    /// the parts one by one ([`Part::run`] is the rule either way).
    ///
    /// The get-or-lock parts after the first one that finds its lock held are not
    /// attempted (answered [`Reply::Done`]): the caller, which gives its parts in the
    /// order of their keys, never holds a lock later in that order than one it waits
    /// for, so overlapping batches cannot wait on each other in a cycle.
    Many {
        /// The parts.
        parts: &'a [Part<'a>],
    },
    /// The local tier: offers a decoded form of `bytes` (just read at `key`) to keep
    /// beside them; `make` is called only if it is kept. Never blocks.
    KeepDecoded {
        /// The key.
        key: &'a str,
        /// The bytes just read.
        bytes: &'a [u8],
        /// Builds the decoded value.
        make: &'a mut dyn FnMut() -> DecodedValue,
    },
}

impl<'a> Op<'a> {
    /// The operation's name, as errors and metrics report it (`"get"`,
    /// `"store_and_release"`, ...; a wait is `"wait"`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Get { .. } => "get",
            Self::GetMany { .. } => "get_many",
            Self::GetTagged { .. } => "get_tagged",
            Self::Set { .. } => "set",
            Self::Add { .. } => "add",
            Self::Delete { .. } => "delete",
            Self::CompareAndDelete { .. } => "compare_and_delete",
            Self::CompareAndExtend { .. } => "compare_and_extend",
            Self::GetOrLock { .. } => "get_or_lock",
            Self::TakeLock { .. } => "take_lock",
            Self::StoreAndRelease { .. } => "store_and_release",
            Self::Invalidate { .. } => "invalidate",
            Self::ExpireMany { .. } => "expire_many",
            Self::WaitForRelease { .. } => "wait",
            Self::Many { .. } => "many",
            Self::Decoded { .. } => "decoded",
            Self::KeepDecoded { .. } => "keep_decoded",
        }
    }

    /// The (first) key the operation names; `""` for an empty list of keys.
    pub fn key(&self) -> &'a str {
        match self {
            Self::Get { key }
            | Self::Set { key, .. }
            | Self::Add { key, .. }
            | Self::Delete { key }
            | Self::CompareAndDelete { key, .. }
            | Self::CompareAndExtend { key, .. }
            | Self::GetOrLock { key, .. }
            | Self::StoreAndRelease { key, .. }
            | Self::Invalidate { key, .. }
            | Self::Decoded { key, .. }
            | Self::KeepDecoded { key, .. } => key,
            Self::GetMany { keys }
            | Self::GetTagged { keys, .. }
            | Self::ExpireMany { keys, .. } => keys.first().copied().unwrap_or(""),
            Self::TakeLock { lock } => lock.key,
            Self::Many { parts } => parts.first().map_or("", Part::key),
            Self::WaitForRelease { lock_key, .. } => lock_key,
        }
    }

    /// Whether the operation stays in the process (the decoded tier): it never sends
    /// anything, never fails, and is not a round trip to count.
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Decoded { .. } | Self::KeepDecoded { .. })
    }

    /// The error a backend answers an operation it does not know with.
    pub fn unsupported(&self) -> Error {
        Error::backend(self.name(), self.key(), Unsupported)
    }
}

/// One part of an [`Op::Many`]: a get-or-lock or a store-and-release, with the
/// arguments of the operation of the same name.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Part<'a> {
    /// [`Op::GetOrLock`]: answered [`Reply::Found`].
    GetOrLock {
        /// The value's key.
        key: &'a str,
        /// The lock to take.
        lock: LockClaim<'a>,
    },
    /// [`Op::StoreAndRelease`]: answered [`Reply::Applied`].
    StoreAndRelease {
        /// The value's key.
        key: &'a str,
        /// The value.
        value: &'a [u8],
        /// Its time to live.
        ttl: Duration,
        /// The lock it was computed under.
        lock: LockClaim<'a>,
    },
}

impl<'a> Part<'a> {
    /// The value's key.
    pub fn key(&self) -> &'a str {
        match self {
            Self::GetOrLock { key, .. } | Self::StoreAndRelease { key, .. } => key,
        }
    }

    /// The part as the operation of its own: what a backend without [`Op::Many`]
    /// runs for it.
    pub fn op(self) -> Op<'a> {
        match self {
            Self::GetOrLock { key, lock } => Op::GetOrLock { key, lock },
            Self::StoreAndRelease {
                key,
                value,
                ttl,
                lock,
            } => Op::StoreAndRelease {
                key,
                value,
                ttl,
                lock,
            },
        }
    }

    /// Runs `parts` in order with `execute`, by the rule of [`Op::Many`]: a
    /// get-or-lock part after one that found its lock held is answered
    /// [`Reply::Done`] (not attempted). Each part's reply (a failed part stops
    /// nothing: each answers for itself).
    pub fn run(
        parts: &[Self],
        mut execute: impl FnMut(Op<'a>) -> Result<Reply, Error>,
    ) -> Vec<Result<Reply, Error>> {
        let mut blocked = false;
        let mut replies = Vec::with_capacity(parts.len());
        for part in parts {
            if blocked && matches!(part, Self::GetOrLock { .. }) {
                replies.push(Ok(Reply::Done));
                continue;
            }
            let reply = execute(part.op());
            blocked |= found_held(&reply);
            replies.push(reply);
        }
        replies
    }

    /// The part of `op`, if it is a get-or-lock or a store-and-release.
    pub fn of(op: Op<'a>) -> Result<Self, Op<'a>> {
        match op {
            Op::GetOrLock { key, lock } => Ok(Self::GetOrLock { key, lock }),
            Op::StoreAndRelease {
                key,
                value,
                ttl,
                lock,
            } => Ok(Self::StoreAndRelease {
                key,
                value,
                ttl,
                lock,
            }),
            other => Err(other),
        }
    }
}

/// Whether a get-or-lock's `reply` found the lock held: [`GetOrLock::Held`], or
/// [`Reply::Watched`] (held, from a backend that wakes waiters: `RedisBackend` answers
/// so one by one, e.g. the parts of a batch over several cluster slots).
fn found_held(reply: &Result<Reply, Error>) -> bool {
    matches!(
        reply,
        Ok(Reply::Found(GetOrLock::Held) | Reply::Watched { .. })
    )
}

/// Why [`Op::unsupported`] failed: the backend does not know the operation.
#[derive(Debug)]
struct Unsupported;

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("operation not supported by this backend")
    }
}

impl std::error::Error for Unsupported {}

/// Whether `err` is a backend's answer to an operation it does not know
/// ([`Op::unsupported`]).
pub(crate) fn is_unsupported(err: &Error) -> bool {
    match err {
        Error::Backend { source, .. } => source.downcast_ref::<Unsupported>().is_some(),
        _ => false,
    }
}

/// Runs `parts` as one [`Op::Many`] on `backend`, or one by one when it does not know
/// it: each part's reply, in order. A composite that failed fails each part with its
/// error's words.
pub(crate) fn many<B: BackendCore + ?Sized>(
    backend: &B,
    parts: &[Part<'_>],
) -> Vec<Result<Reply, Error>> {
    match backend.execute(Op::Many { parts }) {
        Err(err) if is_unsupported(&err) => Part::run(parts, |op| backend.execute(op)),
        answer => split(parts, answer),
    }
}

/// The async form of [`many`].
pub(crate) async fn many_async<B: AsyncBackendCore + ?Sized>(
    backend: &B,
    parts: &[Part<'_>],
) -> Vec<Result<Reply, Error>> {
    match backend.execute_async(Op::Many { parts }).await {
        Err(err) if is_unsupported(&err) => {
            let mut blocked = false;
            let mut replies = Vec::with_capacity(parts.len());
            for part in parts {
                if blocked && matches!(part, Part::GetOrLock { .. }) {
                    replies.push(Ok(Reply::Done));
                    continue;
                }
                let reply = backend.execute_async(part.op()).await;
                blocked |= found_held(&reply);
                replies.push(reply);
            }
            replies
        }
        answer => split(parts, answer),
    }
}

/// A composite's answer, part by part.
fn split(parts: &[Part<'_>], answer: Result<Reply, Error>) -> Vec<Result<Reply, Error>> {
    let failed = |why: &str| {
        parts
            .iter()
            .map(|part| Err(Error::backend("many", part.key(), why.to_owned())))
            .collect()
    };
    match answer {
        Ok(Reply::Many(replies)) if replies.len() == parts.len() => {
            replies.into_iter().map(Ok).collect()
        }
        Ok(other) => failed(&format!("a reply of the wrong shape: {other:?}")),
        Err(err) => failed(&err.to_string()),
    }
}

impl std::fmt::Debug for Op<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op")
            .field("name", &self.name())
            .field("key", &self.key())
            .finish_non_exhaustive()
    }
}

/// What an [`Op`] answered. Each operation has one shape (named on each variant); the
/// typed accessors take it back, or say the shape was wrong.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reply {
    /// Done, nothing to report: `Set`, `Delete`, `Invalidate`, `WaitForRelease`,
    /// `KeepDecoded`; a part of `Many` not attempted.
    Done,
    /// `Get`: the value, `None` when absent. `WaitForRelease`: the value the release
    /// delivered (see [`Op::WaitForRelease`]).
    Value(Option<Vec<u8>>),
    /// `Get` answered from this process's near copy, with no command sent: the value.
    /// Read as [`Value`](Self::Value) by [`into_value`](Self::into_value); the
    /// memoized call counts it as a near hit.
    Near(Vec<u8>),
    /// `GetMany`, `GetTagged`: the values, in order.
    Values(Vec<Option<Vec<u8>>>),
    /// `GetTagged` answered from this process's near copies, with no command sent: the
    /// values, in order. Read as [`Values`](Self::Values) by
    /// [`into_values`](Self::into_values); the memoized call counts it as a near hit.
    NearValues(Vec<Option<Vec<u8>>>),
    /// `Add`, `CompareAndDelete`, `CompareAndExtend`, `StoreAndRelease`: whether it
    /// took effect.
    Applied(bool),
    /// `ExpireMany`: how many keys were present.
    Count(usize),
    /// `TakeLock`: the fencing token, `None` when another owner holds the lock.
    Fence(Option<u64>),
    /// `GetOrLock`: what it found.
    Found(GetOrLock),
    /// `GetOrLock`, from a backend that wakes waiters: the lock is held by another
    /// caller (read as [`GetOrLock::Held`] by [`into_found`](Self::into_found)), the
    /// backend was already listening for its release when the attempt was sent (a
    /// release after it ends an [`Op::WaitForRelease`] at once), and the lock expires
    /// in `expires_in` unless extended. A waiter may then pause until the release or
    /// that expiry instead of polling at its `retry`. A backend that cannot promise
    /// the wake-up answers [`Found`](Self::Found) instead, and so does a wrapper that
    /// answers [`Op::WaitForRelease`] itself rather than forwarding it to the backend
    /// that gave this reply.
    Watched {
        /// The lock's remaining time to live, as the attempt found it.
        expires_in: Duration,
    },
    /// `Decoded`: the kept value, if any.
    Decoded(Option<DecodedValue>),
    /// `Many`: each part's reply, in order ([`Reply::Done`] for a part not attempted).
    Many(Vec<Reply>),
}

/// A typed accessor's verdict on a reply of another shape.
#[cold]
fn wrong(reply: &Reply, op: &'static str, key: &str) -> Error {
    Error::backend(op, key, format!("a reply of the wrong shape: {reply:?}"))
}

/// The typed accessors of [`Reply`]: each takes one shape back, or says the shape
/// was wrong (for `op` on `key`).
macro_rules! accessors {
    ($($name:ident: $variant:ident -> $out:ty;)*) => {
        $(
            #[doc = concat!("The content of [`Reply::", stringify!($variant), "`], or the error for `op` on `key`.")]
            pub fn $name(self, op: &'static str, key: &str) -> Result<$out, Error> {
                match self {
                    Self::$variant(content) => Ok(content),
                    other => Err(wrong(&other, op, key)),
                }
            }
        )*
    };
}

impl Reply {
    /// [`Reply::Done`], or the error for `op` on `key`.
    pub fn into_done(self, op: &'static str, key: &str) -> Result<(), Error> {
        match self {
            Self::Done => Ok(()),
            other => Err(wrong(&other, op, key)),
        }
    }

    /// The value of [`Reply::Value`] (or [`Reply::Near`]), or the error for `op` on
    /// `key`.
    #[inline]
    pub fn into_value(self, op: &'static str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match self {
            Self::Value(value) => Ok(value),
            Self::Near(value) => Ok(Some(value)),
            other => Err(wrong(&other, op, key)),
        }
    }

    /// The values of [`Reply::Values`] (or [`Reply::NearValues`]), or the error for
    /// `op` on `key`.
    pub fn into_values(self, op: &'static str, key: &str) -> Result<Vec<Option<Vec<u8>>>, Error> {
        match self {
            Self::Values(values) | Self::NearValues(values) => Ok(values),
            other => Err(wrong(&other, op, key)),
        }
    }

    accessors! {
        into_applied: Applied -> bool;
        into_count: Count -> usize;
        into_fence: Fence -> Option<u64>;
    }

    /// What [`Reply::Found`] found ([`GetOrLock::Held`] for [`Reply::Watched`]), or
    /// the error for `op` on `key`.
    pub fn into_found(self, op: &'static str, key: &str) -> Result<GetOrLock, Error> {
        match self {
            Self::Found(found) => Ok(found),
            Self::Watched { .. } => Ok(GetOrLock::Held),
            other => Err(wrong(&other, op, key)),
        }
    }

    /// The kept value of [`Reply::Decoded`] (`None` for any other shape: the local
    /// tier never fails, it only keeps nothing).
    pub fn into_decoded(self) -> Option<DecodedValue> {
        match self {
            Self::Decoded(kept) => kept,
            _ => None,
        }
    }
}
