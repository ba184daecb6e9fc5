//! The bounds every duration is clamped to before it reaches a backend: a zero expiry
//! would store nothing (or make a lock's renewal spin), a huge one overflows what a
//! server accepts (`PX` takes a signed 64-bit count of milliseconds).

use std::time::Duration;

/// The longest expiry anything is stored with, and the longest lock expiry: 100 years
/// (365-day years). Longer durations are clamped down to it.
pub const MAX_EXPIRE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The shortest expiry a memoized value is stored with: 1 ms. Shorter ones (zero
/// included) are clamped up to it.
pub const MIN_VALUE_EXPIRE: Duration = Duration::from_millis(1);

/// The shortest lock expiry: 100 ms. Shorter ones (zero included) are clamped up to
/// it, so that a lock outlives the round trips that take and renew it.
pub const MIN_LOCK_EXPIRE: Duration = Duration::from_millis(100);

/// The shortest pause between attempts at a held lock: 1 ms.
pub const MIN_RETRY: Duration = Duration::from_millis(1);
/// A value's expiry within [`MIN_VALUE_EXPIRE`], [`MAX_EXPIRE`].
pub(crate) fn value_expire(expire: Duration) -> Duration {
    expire.clamp(MIN_VALUE_EXPIRE, MAX_EXPIRE)
}

/// A lock's expiry within [`MIN_LOCK_EXPIRE`], [`MAX_EXPIRE`].
pub(crate) fn lock_expire(expire: Duration) -> Duration {
    expire.clamp(MIN_LOCK_EXPIRE, MAX_EXPIRE)
}

/// A retry pause within [`MIN_RETRY`], [`MAX_EXPIRE`].
pub(crate) fn retry(retry: Duration) -> Duration {
    retry.clamp(MIN_RETRY, MAX_EXPIRE)
}
