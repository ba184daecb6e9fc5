//! The crate's error types: [`Error`] for backend and codec failures, [`LockError`] for
//! lock acquisition.

use std::time::Duration;

/// A boxed error from a backend's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure talking to the cache backend.
///
/// Memoized functions never return this: they log it through `tracing` and compute
/// the value anyway. It reaches the caller only from the explicit operations
/// ([`invalidate`](crate::invalidate), [`CacheLock`](crate::CacheLock),
/// [`RedisBackend::connect`](crate::RedisBackend)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A backend operation on a key failed.
    #[error("cache backend {operation} on key {key:?} failed: {source}")]
    Backend {
        /// The operation, such as `get` or `compare_and_delete`.
        operation: &'static str,
        /// The key the operation was for.
        key: String,
        /// What the backend's client reported.
        #[source]
        source: BoxError,
    },
    /// Connecting to the backend failed.
    #[error(
        "cannot connect to cache backend {url}: {source} (to start before the cache server is up, connect with `RedisBuilder::connect_lazy()`)"
    )]
    Connect {
        /// The address, with any password removed.
        url: String,
        /// What the backend's client reported.
        #[source]
        source: BoxError,
    },
    /// The backend was not asked, for a reason it reported once rather than per call:
    /// its circuit breaker is open after repeated failures, or an async call found no
    /// Tokio runtime to run on.
    #[error("cache backend {address} skipped for {operation} on key {key:?}: {reason}")]
    Skipped {
        /// The backend's address, with any password removed.
        address: String,
        /// The operation, such as `get` or `compare_and_delete`.
        operation: &'static str,
        /// The key the operation was for.
        key: String,
        /// Why it was skipped.
        reason: &'static str,
    },
}

impl Error {
    /// Wraps a backend client's error for `operation` on `key`.
    pub fn backend(operation: &'static str, key: &str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            operation,
            key: key.to_owned(),
            source: source.into(),
        }
    }

    /// Whether the backend was skipped rather than asked (see [`Error::Skipped`]):
    /// already reported by the backend, so callers log it at DEBUG, not per call at WARN.
    pub fn is_skipped(&self) -> bool {
        matches!(self, Self::Skipped { .. })
    }

    /// Whether the backend's client gave up waiting (a timeout somewhere in the
    /// error's sources), as opposed to failing at once (a refused connection).
    pub(crate) fn is_timeout(&self) -> bool {
        let mut source = std::error::Error::source(self);
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) {
                    return true;
                }
            }
            #[cfg(feature = "redis")]
            if err
                .downcast_ref::<redis::RedisError>()
                .is_some_and(redis::RedisError::is_timeout)
            {
                return true;
            }
            source = err.source();
        }
        false
    }
}

/// Why a [`CacheLock`](crate::CacheLock) was not acquired.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The lock is held by someone else and the lock does not block.
    #[error("the lock is held by another owner")]
    WouldBlock,
    /// The lock stayed held for the whole timeout.
    #[error("timed out after {waited:?} waiting for lock {key:?}")]
    Timeout {
        /// The lock's key in the backend.
        key: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] Error),
}
