//! The atomic steps, as Lua scripts run with `EVALSHA` (reloaded by `redis::Script`
//! after a `NOSCRIPT`, such as after `SCRIPT FLUSH` or a failover).
//!
//! Each script touches only keys sharing one hash tag (a value and its lock), so it
//! runs on Redis Cluster too. A release is published on the lock's own channel, which
//! carries the lock's hash tag: on a Redis 7+ cluster with `SPUBLISH` (the message stays
//! on the shard owning the slot), elsewhere with `PUBLISH`. Either costs O(1) when
//! nobody waits (no pattern subscriptions to match against).

use once_cell::sync::Lazy;
use redis::Script;

/// The prefix of the channel a lock's release is published on (`+ lock key`).
pub(crate) const RELEASE_CHANNEL: &str = "cache-memoize:released:";

/// `wake(channel, sharded)`: publishes a release, sharded when asked (on a cluster) and
/// the server has sharded pub/sub (7.0+; an older server, or one without `SPUBLISH`,
/// answers it with an error, and the release goes out classic, as the subscribers of
/// such a server subscribe).
const WAKE_BODY: &str = r"
local function wake(channel, sharded)
  if sharded == '1' then
    local reply = redis.pcall('SPUBLISH', channel, '1')
    if type(reply) ~= 'table' or not reply.err then return end
  end
  redis.call('PUBLISH', channel, '1')
end
";

/// Takes the lock (KEYS[1]) for ARGV[1] with TTL ARGV[2] ms and counts the
/// acquisition in the fencing counter (KEYS[2], kept ARGV[3] ms): returns the fencing
/// token (at least 1). Already ours (a retried request): the current token. Held by
/// another token: 0.
const TAKE_LOCK_BODY: &str = r"
local function take_lock(lock, fence, token, ttl, fence_ttl)
  if redis.call('SET', lock, token, 'NX', 'PX', ttl) then
    local n = redis.call('INCR', fence)
    redis.call('PEXPIRE', fence, fence_ttl)
    return n
  end
  if redis.call('GET', lock) == token then
    return tonumber(redis.call('GET', fence) or '1')
  end
  return 0
end
";

/// KEYS: value, lock, fence. ARGV: token, lock TTL (ms), fence TTL (ms).
/// Returns the value if present; else takes the lock: its fencing token (at least 1;
/// also when already ours, so a retried request is safe), or 0 if held by another token.
pub(crate) static GET_OR_LOCK: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        r"{TAKE_LOCK_BODY}
local value = redis.call('GET', KEYS[1])
if value then return value end
return take_lock(KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])
"
    ))
});

/// KEYS: lock, fence. ARGV: token, lock TTL (ms), fence TTL (ms).
/// Takes the lock: its fencing token, or 0 if held by another token.
pub(crate) static TAKE_LOCK: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        r"{TAKE_LOCK_BODY}
return take_lock(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
"
    ))
});

/// KEYS: value, lock. ARGV: value, value TTL (ms), token, channel, sharded (`1`/`0`).
/// If the lock still holds the token: stores the value, deletes the lock, wakes the
/// waiters and returns 1. Otherwise (expired, taken by a later holder, or voided by an
/// invalidation) stores nothing and returns 0: a late writer never overwrites. But a
/// request sent again after its reply was lost (the pool resends on a closed
/// connection) finds its own first run done: the lock gone and exactly these bytes
/// stored (a value's stamp, a manifest's generation make them this write's): 1, as
/// the first run answered.
pub(crate) static STORE_AND_RELEASE: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        r"{WAKE_BODY}
if redis.call('GET', KEYS[2]) ~= ARGV[3] then
  if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
wake(ARGV[4], ARGV[5])
return 1
"
    ))
});

/// KEYS: value, lock. ARGV: channel, sharded (`1`/`0`).
/// Deletes the value and its lock (voiding the store of a computation running under
/// it), waking the lock's waiters if there was one.
pub(crate) static INVALIDATE: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        r"{WAKE_BODY}
redis.call('DEL', KEYS[1])
if redis.call('DEL', KEYS[2]) == 1 then
  wake(ARGV[1], ARGV[2])
end
return 1
"
    ))
});

/// KEYS: key. ARGV: expected, channel, sharded (`1`/`0`). Deletes the key if it holds
/// `expected` and wakes its waiters. Returns 1 if deleted.
pub(crate) static COMPARE_AND_DELETE: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        r"{WAKE_BODY}
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  wake(ARGV[2], ARGV[3])
  return 1
end
return 0
"
    ))
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

/// KEYS: the keys. ARGV: TTL (ms; 0 removes them). Resets the TTL of each present key
/// (one step for every chunk of a memoized iterator's write). Returns how many were
/// present.
pub(crate) static EXPIRE_MANY: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r"
local present = 0
for _, key in ipairs(KEYS) do
  if ARGV[1] == '0' then
    present = present + redis.call('DEL', key)
  else
    present = present + redis.call('PEXPIRE', key, ARGV[1])
  end
end
return present
",
    )
});
