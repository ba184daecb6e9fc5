//! The commands and script invocations of each backend step, and their replies.

use std::time::Duration;

use redis::{Cmd, ScriptInvocation, Value};

use super::scripts::{
    COMPARE_AND_DELETE, COMPARE_AND_EXTEND, EXPIRE_MANY, GET_OR_LOCK, INVALIDATE, RELEASE_CHANNEL,
    STORE_AND_RELEASE, TAKE_LOCK,
};
use crate::backend::{GetOrLock, LockClaim};
use crate::error::Error;

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
    fn flag(self) -> &'static str {
        match self {
            Self::Classic => "0",
            Self::Sharded => "1",
        }
    }
}

pub(super) fn get_cmd(key: &str) -> Cmd {
    let mut cmd = redis::cmd("GET");
    cmd.arg(key);
    cmd
}

pub(super) fn get_many_cmd(keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("MGET");
    cmd.arg(keys);
    cmd
}

pub(super) fn set_cmd(key: &str, value: &[u8], ttl: Duration, only_if_absent: bool) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if only_if_absent {
        cmd.arg("NX");
    }
    cmd.arg("PX").arg(ms(ttl));
    cmd
}

pub(super) fn delete_cmd(key: &str) -> Cmd {
    let mut cmd = redis::cmd("DEL");
    cmd.arg(key);
    cmd
}

pub(super) fn compare_and_delete(
    key: &str,
    expected: &[u8],
    wake: Wake,
) -> ScriptInvocation<'static> {
    let mut script = COMPARE_AND_DELETE.prepare_invoke();
    script
        .key(key)
        .arg(expected)
        .arg(release_channel(key))
        .arg(wake.flag());
    script
}

pub(super) fn compare_and_extend(
    key: &str,
    expected: &[u8],
    ttl: Duration,
) -> ScriptInvocation<'static> {
    let mut script = COMPARE_AND_EXTEND.prepare_invoke();
    script.key(key).arg(expected).arg(ms(ttl));
    script
}

/// Resets the TTL of every present key of `keys` (a zero `ttl` removes them).
pub(super) fn expire_many(keys: &[&str], ttl: Duration) -> ScriptInvocation<'static> {
    let mut script = EXPIRE_MANY.prepare_invoke();
    for key in keys {
        script.key(*key);
    }
    script.arg(if ttl.is_zero() { 0 } else { ms(ttl) });
    script
}

pub(super) fn get_or_lock(key: &str, lock: &LockClaim<'_>) -> ScriptInvocation<'static> {
    let mut script = GET_OR_LOCK.prepare_invoke();
    script
        .key(key)
        .key(lock.key)
        .arg(lock.token)
        .arg(ms(lock.ttl));
    script
}

pub(super) fn take_lock(lock: &LockClaim<'_>) -> ScriptInvocation<'static> {
    let mut script = TAKE_LOCK.prepare_invoke();
    script
        .key(lock.key)
        .key(lock.value_key)
        .arg(lock.token)
        .arg(ms(lock.ttl));
    script
}

pub(super) fn invalidate(key: &str, lock_key: &str, wake: Wake) -> ScriptInvocation<'static> {
    let mut script = INVALIDATE.prepare_invoke();
    script
        .key(key)
        .key(lock_key)
        .arg(release_channel(lock_key))
        .arg(wake.flag());
    script
}

/// Reads the take-lock script's reply: the fencing token, or 0 (held).
pub(super) fn take_lock_reply(key: &str, reply: i64) -> Result<Option<u64>, Error> {
    match u64::try_from(reply) {
        Ok(0) => Ok(None),
        Ok(fence) => Ok(Some(fence)),
        Err(_) => Err(Error::backend(
            "take_lock",
            key,
            format!("unexpected reply {reply}"),
        )),
    }
}

pub(super) fn store_and_release(
    key: &str,
    value: &[u8],
    ttl: Duration,
    lock: &LockClaim<'_>,
    wake: Wake,
) -> ScriptInvocation<'static> {
    let mut script = STORE_AND_RELEASE.prepare_invoke();
    script
        .key(key)
        .key(lock.key)
        .arg(value)
        .arg(ms(ttl))
        .arg(lock.token)
        .arg(release_channel(lock.key))
        .arg(wake.flag())
        .arg(lock.fence);
    script
}

/// Reads the get-or-lock script's reply: the value, a fencing token (locked) or 0
/// (held).
pub(super) fn get_or_lock_reply(key: &str, reply: Value) -> Result<GetOrLock, Error> {
    match reply {
        Value::BulkString(value) => Ok(GetOrLock::Value(value)),
        Value::Int(0) => Ok(GetOrLock::Held),
        Value::Int(fence @ 1..) => Ok(GetOrLock::Locked {
            fence: fence.unsigned_abs(),
        }),
        other => Err(Error::backend(
            "get_or_lock",
            key,
            format!("unexpected reply {other:?}"),
        )),
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
