//! The atomic steps, as Lua scripts run with `EVALSHA` (reloaded by `redis::Script`
//! after a `NOSCRIPT`, such as after `SCRIPT FLUSH` or a failover).
//!
//! Each script touches only keys sharing one hash tag (a value and its lock), so it
//! runs on Redis Cluster too. `PUBLISH` takes no key, and reaches every node's
//! subscribers.

use once_cell::sync::Lazy;
use redis::Script;

/// The prefix of the channel a lock's release is published on (`+ lock key`).
pub(crate) const RELEASE_CHANNEL: &str = "cache-memoize:released:";

/// KEYS: value, lock. ARGV: token, lock TTL (ms).
/// Returns the value if present; else takes the lock: 1 if taken (or already ours,
/// so a retried request is safe), 0 if held by another token.
pub(crate) static GET_OR_LOCK: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
local value = redis.call('GET', KEYS[1])
if value then return value end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[2]) == ARGV[1] then return 1 end
return 0
",
    )
});

/// KEYS: value, lock. ARGV: value, value TTL (ms), token, channel.
/// Stores the value, deletes the lock if it still holds the token, and wakes the
/// waiters (also when the lock was lost: the value they wait for is there now).
/// Returns 1 if the lock was ours.
pub(crate) static STORE_AND_RELEASE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local ours = 0
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
  ours = 1
end
redis.call('PUBLISH', ARGV[4], '1')
return ours
",
    )
});

/// KEYS: key. ARGV: expected, channel. Deletes the key if it holds `expected` and
/// wakes its waiters. Returns 1 if deleted.
pub(crate) static COMPARE_AND_DELETE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], '1')
  return 1
end
return 0
",
    )
});

/// KEYS: key. ARGV: expected, TTL (ms). Resets the TTL if the key holds `expected`.
/// Returns 1 if so.
pub(crate) static COMPARE_AND_EXTEND: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});
