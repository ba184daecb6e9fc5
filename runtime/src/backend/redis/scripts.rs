//! The atomic steps, as Lua scripts run with `EVALSHA` (reloaded by `redis::Script`
//! after a `NOSCRIPT`, such as after `SCRIPT FLUSH` or a failover).
//!
//! Each script touches only keys sharing one hash tag (a value and its lock), so it
//! runs on Redis Cluster too. No script keeps anything per key beyond the value and its
//! lock: fencing tokens come from the server's clock and the stored value's envelope. A release is published on the lock's own channel, which
//! carries the lock's hash tag: on a Redis 7+ cluster with `SPUBLISH` (the message stays
//! on the shard owning the slot), elsewhere with `PUBLISH`. Either costs O(1) when
//! nobody waits (no pattern subscriptions to match against).

use once_cell::sync::Lazy;
use redis::Script;

use crate::codec::{FENCE_AT, FENCED_FORMATS};

/// The prefix of the channel a lock's release is published on (`+ lock key`).
pub(crate) const RELEASE_CHANNEL: &str = "cache-memoize:released:";

/// The largest value a release message carries (see [`STORE_AND_RELEASE`]): a larger
/// one is read by the waiters instead, so a stampede on a large value does not copy it
/// into every subscriber's buffer.
pub(crate) const DELIVER_MAX: usize = 64 * 1024;

/// `wake(channel, sharded, payload)`: publishes a release, sharded when asked (on a
/// cluster) and the server has sharded pub/sub (7.0+; an older server, or one without
/// `SPUBLISH`, answers it with an error, and the release goes out classic, as the
/// subscribers of such a server subscribe). The payload is `1`, or what
/// `STORE_AND_RELEASE` delivers (`wake/mod.rs` reads it).
const WAKE_BODY: &str = r"
local function wake(channel, sharded, payload)
  if sharded == '1' then
    local reply = redis.pcall('SPUBLISH', channel, payload)
    if type(reply) ~= 'table' or not reply.err then return end
  end
  redis.call('PUBLISH', channel, payload)
end
";

/// `fence_of(value)`: the fencing token the memoized value at `value` was written
/// under, read from its envelope with `GETRANGE` (a large value is not copied): the 8
/// little-endian bytes at [`FENCE_AT`] of bytes that start with the magic and a fenced
/// format byte; 0 for anything else (absent, a value of an earlier format, foreign bytes).
/// Exact below 2^53 (Lua numbers are doubles): microseconds until the year 2255.
///
/// `next_fence(value)`: the token of an acquisition of the lock of `value`, a hybrid
/// logical clock: the server's `TIME` in microseconds, or the stored value's token
/// plus one if that is larger (the server's clock is behind the value's writer's).
///
/// `newer(value, fence)`: whether a store under `fence` comes after the stored value
/// (a value with no token, or none, is replaced by any holder). See `crate::fence`.
static FENCE_BODY: Lazy<String> = Lazy::new(|| {
    let (first, last) = (FENCE_AT + 1, FENCE_AT + 8);
    let [bincode, msgpack, chunked] = FENCED_FORMATS;
    format!(
        r"
local function fence_of(value)
  local head = redis.call('GETRANGE', value, 0, {last} - 1)
  if string.len(head) < {last} or string.sub(head, 1, 3) ~= 'cmz' then return 0 end
  local format = string.byte(head, 4)
  if format ~= {bincode} and format ~= {msgpack} and format ~= {chunked} then return 0 end
  local fence = 0
  for i = {last}, {first}, -1 do fence = fence * 256 + string.byte(head, i) end
  return fence
end
local function next_fence(value)
  local now = redis.call('TIME')
  local clock = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local after = fence_of(value) + 1
  if after > clock then return after end
  return clock
end
local function newer(value, fence)
  local stored = fence_of(value)
  return stored == 0 or stored < tonumber(fence)
end
"
    )
});

/// `take_lock(lock, value, token, ttl)`: takes the lock for `token` with TTL `ttl` ms:
/// returns the acquisition's fencing token (`next_fence(value)`, at least 1). Already
/// ours (a request sent again after its reply was lost): a token again, so nobody
/// holds the first one. Held by another token: 0. The script's writes replicate as
/// effects (`TIME` before a write), which Redis 5 and later do by default.
const TAKE_LOCK_BODY: &str = r"
local function take_lock(lock, value, token, ttl)
  if redis.call('SET', lock, token, 'NX', 'PX', ttl) or redis.call('GET', lock) == token then
    return next_fence(value)
  end
  return 0
end
";

/// What the scripts that take a lock start with: effects replication asked for on the
/// servers that still need it (Redis 3.2 to 4: `TIME` comes before a write).
const EFFECTS: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
";

/// KEYS: value, lock. ARGV: token, lock TTL (ms).
/// Returns the value if present; else takes the lock: its fencing token (at least 1;
/// also when already ours, so a retried request is safe), or, if held by another token,
/// `{0, holder's token, the lock's PTTL}` (a waiter takes the value the holder's
/// release message carries only if it is that holder's, and a subscribed waiter pauses
/// until the release or that expiry: see `wake/mod.rs`).
pub(crate) static GET_OR_LOCK: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        r"{EFFECTS}{fence}{TAKE_LOCK_BODY}
local value = redis.call('GET', KEYS[1])
if value then return value end
local fence = take_lock(KEYS[2], KEYS[1], ARGV[1], ARGV[2])
if fence == 0 then
  local holder = redis.call('GET', KEYS[2])
  if holder then return {{0, holder, redis.call('PTTL', KEYS[2])}} end
end
return fence
",
        fence = *FENCE_BODY
    ))
});

/// KEYS: lock, value. ARGV: token, lock TTL (ms).
/// Takes the lock: its fencing token, or 0 if held by another token.
pub(crate) static TAKE_LOCK: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        r"{EFFECTS}{fence}{TAKE_LOCK_BODY}
return take_lock(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
",
        fence = *FENCE_BODY
    ))
});

/// KEYS: value, lock. ARGV: value, value TTL (ms), token, channel, sharded (`1`/`0`),
/// fencing token.
/// If the lock still holds the token and the fencing token is newer than the stored
/// value's: stores the value, deletes the lock, wakes the waiters and returns 1. If the
/// lock is ours but a value written under a later token is there: deletes the lock,
/// wakes the waiters, returns 0. Otherwise (expired, taken by a later holder, or voided
/// by an invalidation) stores nothing and returns 0: a late writer never overwrites.
/// But a request sent again after its reply was lost (the pool resends on a closed
/// connection) finds its own first run done: the lock gone and exactly these bytes
/// stored (a value's stamp, a manifest's generation make them this write's): 1, as
/// the first run answered.
///
/// The release message of a value stored carries it, when it is at most
/// [`DELIVER_MAX`] bytes, after the releasing token: `v<token length>:<token><value>`
/// (otherwise, and for every other release, `1`). Waiters whose attempt found this
/// token holding the lock take it as they would read it, without another command.
pub(crate) static STORE_AND_RELEASE: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        r"{WAKE_BODY}{fence}
if redis.call('GET', KEYS[2]) ~= ARGV[3] then
  if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
  return 0
end
local stored = 0
if newer(KEYS[1], ARGV[6]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  stored = 1
end
redis.call('DEL', KEYS[2])
local payload = '1'
if stored == 1 and string.len(ARGV[1]) <= {DELIVER_MAX} then
  payload = 'v' .. string.len(ARGV[3]) .. ':' .. ARGV[3] .. ARGV[1]
end
wake(ARGV[4], ARGV[5], payload)
return stored
",
        fence = *FENCE_BODY
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
  wake(ARGV[1], ARGV[2], '1')
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
  wake(ARGV[2], ARGV[3], '1')
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

/// A batch's steps in one script (`Op::Many`): each part a get-or-lock or a
/// store-and-release, run as [`GET_OR_LOCK`] and [`STORE_AND_RELEASE`] run it, in order.
/// KEYS: each part's value and lock. ARGV: per part, `L`, token, lock TTL (ms) (a
/// get-or-lock); or `S`, value, value TTL (ms), token, channel, sharded (`1`/`0`),
/// fencing token (a store-and-release). Returns each part's reply, in order, as its own
/// script would (all keys of one call share a hash slot on a cluster), except that the
/// get-or-lock parts after the first that finds its lock held are not attempted: -1
/// (see `Op::Many`).
pub(crate) static MANY: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        r"{EFFECTS}{WAKE_BODY}{fence}{TAKE_LOCK_BODY}
local function get_or_lock(key, lock, token, ttl)
  local value = redis.call('GET', key)
  if value then return value end
  local fence = take_lock(lock, key, token, ttl)
  if fence == 0 then
    local holder = redis.call('GET', lock)
    if holder then return {{0, holder}} end
  end
  return fence
end
local function store_and_release(key, lock, value, ttl, token, channel, sharded, fence)
  if redis.call('GET', lock) ~= token then
    if redis.call('GET', key) == value then return 1 end
    return 0
  end
  local stored = 0
  if newer(key, fence) then
    redis.call('SET', key, value, 'PX', ttl)
    stored = 1
  end
  redis.call('DEL', lock)
  local payload = '1'
  if stored == 1 and string.len(value) <= {DELIVER_MAX} then
    payload = 'v' .. string.len(token) .. ':' .. token .. value
  end
  wake(channel, sharded, payload)
  return stored
end
local replies = {{}}
local a = 1
local blocked = false
for i = 1, #KEYS, 2 do
  if ARGV[a] == 'L' and blocked then
    replies[#replies + 1] = -1
    a = a + 3
  elseif ARGV[a] == 'L' then
    local found = get_or_lock(KEYS[i], KEYS[i + 1], ARGV[a + 1], ARGV[a + 2])
    if type(found) == 'table' or found == 0 then blocked = true end
    replies[#replies + 1] = found
    a = a + 3
  else
    replies[#replies + 1] = store_and_release(KEYS[i], KEYS[i + 1], ARGV[a + 1],
      ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
    a = a + 7
  end
end
return replies
",
        fence = *FENCE_BODY
    ))
});
