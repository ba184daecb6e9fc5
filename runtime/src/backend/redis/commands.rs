//! What the commands and scripts of the backend's steps (spelled in `ops.rs`) share: TTLs
//! in Redis milliseconds, the release channels and how releases are published.

use std::time::Duration;

use super::scripts::RELEASE_CHANNEL;

/// A TTL in Redis milliseconds: at least 1 (Redis rejects `PX 0`) and at most
/// [`MAX_EXPIRE`](crate::MAX_EXPIRE) (Redis rejects a `PX` whose deadline overflows).
pub(super) fn ms(ttl: Duration) -> u64 {
    let ttl = ttl.min(crate::limits::MAX_EXPIRE);
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The channel a lock's release is published on. It carries the lock key, and so its
/// hash tag: it hashes to the lock's slot, where the release script may `SPUBLISH` it.
pub(super) fn release_channel(lock_key: &str) -> String {
    format!("{RELEASE_CHANNEL}{lock_key}")
}

/// How the release scripts publish: on a cluster, sharded (`SPUBLISH`, if the server
/// has it); on a single server, classic `PUBLISH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    Classic,
    Sharded,
}

impl Wake {
    pub(super) fn flag(self) -> &'static str {
        match self {
            Self::Classic => "0",
            Self::Sharded => "1",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_at_least_one_millisecond() {
        assert_eq!(ms(Duration::ZERO), 1);
        assert_eq!(ms(Duration::from_micros(1500)), 1);
        assert_eq!(ms(Duration::from_secs(2)), 2000);
        assert_eq!(ms(Duration::MAX), 100 * 365 * 24 * 3600 * 1000);
    }
}
