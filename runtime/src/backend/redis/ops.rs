//! Each operation of the Redis backend written once, as data: what it sends (a
//! command, or a script of `scripts.rs`; `commands.rs` holds the TTLs and channels they
//! share), how its reply reads, and what it does to the
//! near cache (a copy served instead, a ticket taken before a read and what it read
//! offered after, copies forgotten after a write). `exec.rs` sends the result, on
//! either path.
//!
//! With [encryption at rest](crate::Encryption) this is also where every key name is
//! hashed (`seal.rs`), before anything else sees it: the requests, the release
//! channels, the wake-up hub and the near tier all use the stored names, so the near
//! tier and the server's invalidations (which name stored keys) agree. Values written
//! are sealed here and values read are opened in [`finish`](RedisBackend::finish),
//! before the near tier is offered them: it keeps them opened, so a near hit decrypts
//! nothing.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use redis::{FromRedisValue, Value};

use super::RedisBackend;
use super::commands::{ms, release_channel};
use super::exec::Request;
use super::link::Client;
use super::near::Ticket;
use super::scripts::{
    COMPARE_AND_DELETE, COMPARE_AND_EXTEND, EXPIRE_MANY, GET_OR_LOCK, INVALIDATE, MANY,
    STORE_AND_RELEASE, TAKE_LOCK,
};
use super::seal::Seal;
use crate::backend::{GetOrLock, Op, Part, Reply};
use crate::error::Error;

/// Where an operation goes.
pub(super) enum Route<'a> {
    /// Answered in the process: a near copy, the decoded tier, nothing to send.
    Local(Reply),
    /// A wait for a lock's release, on the wake-up hub.
    Wait {
        lock_key: Cow<'a, str>,
        attempted: Instant,
        max: Duration,
    },
    /// A request for the server.
    Send(Plan<'a>),
    /// Not sent: this backend cannot run it as asked (an `Op::Many` over several
    /// slots of a cluster), answered `Op::unsupported`.
    Refused(Error),
}

/// A request, and what to make of its reply.
pub(super) struct Plan<'a> {
    /// The operation, for errors, the breaker and metrics.
    pub(super) name: &'static str,
    /// Its (first) key, as stored (hashed under encryption).
    pub(super) key: Cow<'a, str>,
    pub(super) request: Request,
    reply: Shape,
    /// The stored names of a `GetMany`'s keys, to open its values with (under
    /// encryption; the other reads open with [`key`](Self::key)).
    many: Vec<Cow<'a, str>>,
    /// A read's near-cache tickets, taken before it is sent: what it finds is offered.
    offer: Offer,
    /// The near copies a write drops once it is sent (whatever its outcome: a write
    /// that timed out may still have landed).
    forget: Forget<'a>,
    /// A get-or-lock attempt's lock and when it was sent: the holder it finds is told
    /// to the wake-up hub (a waiter takes only that holder's delivered value).
    holder_of: Option<(Cow<'a, str>, Instant)>,
    /// An `Op::Many`'s parts, as stored (see [`ManyPart`]).
    parts: Vec<ManyPart<'a>>,
}

/// A part of an `Op::Many` as sent: its value's and lock's stored names, and whether
/// it is a get-or-lock (its reply read as one, its holder told to the hub, its value
/// opened) or a store-and-release (its near copy forgotten).
pub(super) struct ManyPart<'a> {
    key: Cow<'a, str>,
    lock_key: Cow<'a, str>,
    locks: bool,
}

/// How a reply reads.
#[derive(Clone, Copy)]
enum Shape {
    /// `GET`: a value or nil.
    Value,
    /// `MGET`: values or nils.
    Values,
    /// Anything: done.
    Done,
    /// `SET NX`: `OK` or nil.
    Added,
    /// A script's 1 (applied) or 0.
    One,
    /// The take-lock script's fencing token or 0.
    Fence,
    /// The get-or-lock script's value, fencing token or 0.
    Found,
    /// The expire-many script's count.
    Count,
    /// The many script's replies, one per part (`Plan::parts`).
    Many,
}

/// What a read offers the near tier, with the tickets taken before it was sent.
enum Offer {
    Nothing,
    /// The value read (`GET`, get-or-lock), with its ticket (`None`: taken while
    /// tracking was not live, or a key outside the prefixes: nothing is kept, but a
    /// copy it contradicts is dropped).
    Value(Option<Ticket>),
    /// A tagged read's value (when `with_value`) and epochs (`Plan::many`), each under
    /// its own ticket: an invalidation of any of them in flight voids that one.
    Tagged {
        with_value: bool,
        tickets: Vec<Option<Ticket>>,
    },
    /// A read never kept (`get_many`, `Plan::many`): it only drops the copies that
    /// differ from what it found, so that no caller that got a newer value from it is
    /// served an older copy after it.
    Contradict,
}

enum Forget<'a> {
    Nothing,
    Key,
    Keys(Vec<Cow<'a, str>>),
}

impl RedisBackend {
    /// The route of `op`: every operation's command, reply and near-cache effects.
    // One arm per operation: the table of what each sends and does near.
    #[allow(clippy::too_many_lines)]
    pub(super) fn route<'a>(&self, op: Op<'a>) -> Route<'a> {
        let near = self.inner.near.as_deref();
        let seal = self.inner.seal.as_deref();
        let wake = self.wake().flag();
        // Every key as stored: hashed under encryption, else as given.
        let stored = |key: &'a str| -> Cow<'a, str> {
            seal.map_or(Cow::Borrowed(key), |seal| Cow::Owned(seal.name(key)))
        };
        let sealed = |key: &str, value: &'a [u8]| -> Cow<'a, [u8]> {
            seal.map_or(Cow::Borrowed(value), |seal| {
                Cow::Owned(seal.seal(key, value))
            })
        };
        let name = op.name();
        let key = match op {
            // No key, or several: named in their arms.
            Op::GetMany { .. } | Op::GetTagged { .. } | Op::ExpireMany { .. } => {
                Cow::Borrowed(op.key())
            }
            _ => stored(op.key()),
        };
        let (request, reply, forget) = match op {
            Op::Get { .. } => {
                if let Some(copy) = near.and_then(|near| near.get(&key)) {
                    return Route::Local(Reply::Near(copy));
                }
                let request = command("GET", |cmd| cmd.arg(&*key));
                return Route::Send(Plan::read(name, key, request, Shape::Value, self));
            }
            Op::GetOrLock { lock, .. } => {
                let lock_key = stored(lock.key);
                let mut script = GET_OR_LOCK.prepare_invoke();
                script
                    .key(&*key)
                    .key(&*lock_key)
                    .arg(lock.token)
                    .arg(ms(lock.ttl));
                let request = Request::Script(script);
                let mut plan = Plan::read(name, key, request, Shape::Found, self);
                plan.holder_of = Some((lock_key, Instant::now()));
                return Route::Send(plan);
            }
            Op::Many { parts: [] } => return Route::Local(Reply::Many(Vec::new())),
            Op::Many { parts } => {
                if !self.one_slot(parts, &stored) {
                    // A script runs on one slot: the caller sends the parts one by one.
                    return Route::Refused(op_unsupported(parts));
                }
                return Route::Send(Self::many(parts, key, seal, wake));
            }
            Op::GetMany { keys: [] } | Op::GetTagged { keys: [], .. } => {
                return Route::Local(Reply::Values(Vec::new()));
            }
            Op::GetMany { keys } => {
                let names: Vec<Cow<'a, str>> = keys.iter().map(|key| stored(key)).collect();
                let request = command("MGET", |cmd| {
                    names.iter().fold(cmd, |cmd, name| cmd.arg(&**name))
                });
                let first = names.first().cloned().unwrap_or_default();
                let mut plan = Plan::read(name, first, request, Shape::Values, self);
                // Never answered near, nor kept: a refresh's recheck and a large
                // value's chunks must see Redis. A copy other than what it found is
                // dropped (a batch's read, like any read, never goes back).
                plan.offer = Offer::Contradict;
                plan.many = names;
                return Route::Send(plan);
            }
            Op::GetTagged { keys, with_value } => {
                let names: Vec<Cow<'a, str>> = keys.iter().map(|key| stored(key)).collect();
                if let Some(copies) = near.and_then(|near| near.get_tagged(&names, with_value)) {
                    return Route::Local(Reply::NearValues(copies));
                }
                let request = command("MGET", |cmd| {
                    names.iter().fold(cmd, |cmd, name| cmd.arg(&**name))
                });
                let first = names.first().cloned().unwrap_or_default();
                let mut plan = Plan::read(name, first, request, Shape::Values, self);
                plan.offer = near.map_or(Offer::Nothing, |near| Offer::Tagged {
                    with_value,
                    tickets: names.iter().map(|name| near.ticket(name)).collect(),
                });
                plan.many = names;
                return Route::Send(plan);
            }
            Op::Set { value, ttl, .. } => {
                let value = sealed(&key, value);
                let set = command("SET", |cmd| {
                    cmd.arg(&*key).arg(&*value).arg("PX").arg(ms(ttl))
                });
                (set, Shape::Done, Forget::Key)
            }
            Op::Add { value, ttl, .. } => {
                // Not sealed: a lock's token, compared inside Redis by the scripts.
                let add = command("SET", |cmd| {
                    cmd.arg(&*key).arg(value).arg("NX").arg("PX").arg(ms(ttl))
                });
                // A write (when it lands): the copy goes, as after `Set`.
                (add, Shape::Added, Forget::Key)
            }
            Op::Delete { .. } => (
                command("DEL", |cmd| cmd.arg(&*key)),
                Shape::Done,
                Forget::Key,
            ),
            Op::CompareAndDelete { expected, .. } => {
                let mut script = COMPARE_AND_DELETE.prepare_invoke();
                script
                    .key(&*key)
                    .arg(expected)
                    .arg(release_channel(&key))
                    .arg(wake);
                // A delete (when it matches): the copy goes, as after `Delete`.
                (Request::Script(script), Shape::One, Forget::Key)
            }
            Op::CompareAndExtend { expected, ttl, .. } => {
                let mut script = COMPARE_AND_EXTEND.prepare_invoke();
                script.key(&*key).arg(expected).arg(ms(ttl));
                (Request::Script(script), Shape::One, Forget::Nothing)
            }
            Op::TakeLock { lock } => {
                // `key` is the lock's.
                let mut script = TAKE_LOCK.prepare_invoke();
                script
                    .key(&*key)
                    .key(&*stored(lock.value_key))
                    .arg(lock.token)
                    .arg(ms(lock.ttl));
                (Request::Script(script), Shape::Fence, Forget::Nothing)
            }
            Op::StoreAndRelease {
                value, ttl, lock, ..
            } => {
                let lock_key = stored(lock.key);
                let value = sealed(&key, value);
                let mut script = STORE_AND_RELEASE.prepare_invoke();
                script
                    .key(&*key)
                    .key(&*lock_key)
                    .arg(&*value)
                    .arg(ms(ttl))
                    .arg(lock.token);
                script
                    .arg(release_channel(&lock_key))
                    .arg(wake)
                    .arg(lock.fence);
                (Request::Script(script), Shape::One, Forget::Key)
            }
            Op::Invalidate { lock_key, .. } => {
                let lock_key = stored(lock_key);
                let mut script = INVALIDATE.prepare_invoke();
                script
                    .key(&*key)
                    .key(&*lock_key)
                    .arg(release_channel(&lock_key))
                    .arg(wake);
                (Request::Script(script), Shape::Done, Forget::Key)
            }
            Op::ExpireMany { keys: [], .. } => return Route::Local(Reply::Count(0)),
            Op::ExpireMany { keys, ttl } => {
                // Resets the TTL of every present key (a zero `ttl` removes them).
                let names: Vec<Cow<'a, str>> = keys.iter().map(|key| stored(key)).collect();
                let mut script = EXPIRE_MANY.prepare_invoke();
                for name in &names {
                    script.key(&**name);
                }
                script.arg(if ttl.is_zero() { 0 } else { ms(ttl) });
                (Request::Script(script), Shape::Count, Forget::Keys(names))
            }
            Op::WaitForRelease { attempted, max, .. } => {
                // `key` is the lock's: its waiters and its channel use the stored name.
                return Route::Wait {
                    lock_key: key,
                    attempted,
                    max,
                };
            }
            Op::Decoded { accept, .. } => {
                return Route::Local(Reply::Decoded(
                    near.and_then(|near| near.decoded(&key, accept)),
                ));
            }
            Op::KeepDecoded { bytes, make, .. } => {
                if let Some(near) = near {
                    near.keep_decoded(&key, bytes, make);
                }
                return Route::Local(Reply::Done);
            }
        };
        Route::Send(Plan {
            name,
            key,
            request,
            reply,
            many: Vec::new(),
            offer: Offer::Nothing,
            forget,
            holder_of: None,
            parts: Vec::new(),
        })
    }

    /// Whether every part of an `Op::Many` can go in one script: always on a server;
    /// on a cluster, when their keys share one hash slot as `stored` (under encryption
    /// a hash tag's content is replaced by its keyed hash: keys of one slot as written
    /// may be of several as stored, which the cluster would refuse, `CROSSSLOT`).
    fn one_slot<'a>(&self, parts: &[Part<'a>], stored: &dyn Fn(&'a str) -> Cow<'a, str>) -> bool {
        match self.inner.client {
            Client::Node(_) => true,
            Client::Cluster(_) => {
                let first = parts.first().map(|part| slot(&stored(part.key())));
                parts
                    .iter()
                    .all(|part| Some(slot(&stored(part.key()))) == first)
            }
        }
    }

    /// The request of an `Op::Many`: one script, its parts' keys and arguments in order.
    fn many<'a>(
        parts: &'a [Part<'a>],
        key: Cow<'a, str>,
        seal: Option<&Seal>,
        wake: &'static str,
    ) -> Plan<'a> {
        let stored = |key: &'a str| -> Cow<'a, str> {
            seal.map_or(Cow::Borrowed(key), |seal| Cow::Owned(seal.name(key)))
        };
        let sealed = |key: &str, value: &'a [u8]| -> Cow<'a, [u8]> {
            seal.map_or(Cow::Borrowed(value), |seal| {
                Cow::Owned(seal.seal(key, value))
            })
        };
        let mut script = MANY.prepare_invoke();
        let mut sent = Vec::with_capacity(parts.len());
        let mut forget = Vec::new();
        for part in parts {
            let (name, lock_key) = match part {
                Part::GetOrLock { key, lock } | Part::StoreAndRelease { key, lock, .. } => {
                    (stored(key), stored(lock.key))
                }
            };
            script.key(&*name).key(&*lock_key);
            match *part {
                Part::GetOrLock { lock, .. } => {
                    script.arg("L").arg(lock.token).arg(ms(lock.ttl));
                }
                Part::StoreAndRelease {
                    value, ttl, lock, ..
                } => {
                    let value = sealed(&name, value);
                    script
                        .arg("S")
                        .arg(&*value)
                        .arg(ms(ttl))
                        .arg(lock.token)
                        .arg(release_channel(&lock_key))
                        .arg(wake)
                        .arg(lock.fence);
                    forget.push(name.clone());
                }
            }
            let locks = matches!(part, Part::GetOrLock { .. });
            sent.push(ManyPart {
                key: name,
                lock_key,
                locks,
            });
        }
        Plan {
            name: "many",
            key,
            request: Request::Script(script),
            reply: Shape::Many,
            many: Vec::new(),
            offer: Offer::Nothing,
            forget: Forget::Keys(forget),
            holder_of: Some((Cow::Borrowed(""), Instant::now())),
            parts: sent,
        }
    }

    /// What an `Op::Many`'s script answered, part by part: each read as its own
    /// script's reply, each holder found told to the wake-up hub, each value opened.
    fn finish_many(&self, plan: &Plan<'_>, sent: Value) -> Result<Reply, Error> {
        let unexpected = |reply: &dyn std::fmt::Debug| {
            Error::backend(plan.name, &plan.key, format!("unexpected reply {reply:?}"))
        };
        let Value::Array(items) = sent else {
            return Err(unexpected(&sent));
        };
        if items.len() != plan.parts.len() {
            return Err(unexpected(&items));
        }
        let at = plan
            .holder_of
            .as_ref()
            .map_or_else(Instant::now, |(_, at)| *at);
        let mut replies = Vec::with_capacity(items.len());
        for (part, item) in plan.parts.iter().zip(items) {
            if !part.locks {
                replies.push(Shape::One.read(plan.name, &part.key, item)?);
                continue;
            }
            if matches!(item, Value::Int(-1)) {
                // Not attempted: after a lock found held (see `Op::Many`).
                replies.push(Reply::Done);
                continue;
            }
            if let Value::Array(pair) = &item {
                if let [Value::Int(0), Value::BulkString(holder)] = pair.as_slice() {
                    let hub = &self.inner.hub;
                    // No expiry read (the script returns none): the batch's waits
                    // poll at `retry`, woken earlier by the release.
                    let _ = hub.held(&part.lock_key, &part.key, holder.clone(), at, None);
                }
            }
            let mut reply = Shape::Found.read(plan.name, &part.key, item)?;
            if let (Some(seal), Reply::Found(GetOrLock::Value(value))) =
                (&self.inner.seal, &mut reply)
            {
                *value = seal.read(&part.key, std::mem::take(value));
            }
            // As a single get-or-lock does: a copy other than the value found (or a
            // copy where none was found) goes.
            if let Some(near) = &self.inner.near {
                let found = match &reply {
                    Reply::Found(GetOrLock::Value(value)) => Some(value.as_slice()),
                    _ => None,
                };
                near.contradicted(&part.key, found);
            }
            replies.push(reply);
        }
        Ok(Reply::Many(replies))
    }

    /// What `plan`'s request answered, read, with its near-cache effects applied.
    pub(super) fn finish(
        &self,
        plan: &Plan<'_>,
        sent: Result<Value, Error>,
    ) -> Result<Reply, Error> {
        if let Some(near) = &self.inner.near {
            match &plan.forget {
                Forget::Nothing => {}
                Forget::Key => near.forget(plan.key.as_bytes()),
                Forget::Keys(keys) => keys.iter().for_each(|key| near.forget(key.as_bytes())),
            }
        }
        let sent = sent?;
        if matches!(plan.reply, Shape::Many) {
            return self.finish_many(plan, sent);
        }
        // (No let chains: the crate's rust-version is 1.85.)
        let mut watched = None;
        if let (Some((lock_key, at)), Value::Array(items)) = (&plan.holder_of, &sent) {
            if let [Value::Int(0), Value::BulkString(holder), rest @ ..] = items.as_slice() {
                // The lock's PTTL (0: under a millisecond left, counted as one; -1: no
                // expiry, a lock not ours to judge).
                let expires_in = match rest {
                    [Value::Int(ms @ 0..)] => Some(Duration::from_millis(ms.unsigned_abs().max(1))),
                    _ => None,
                };
                watched = self
                    .inner
                    .hub
                    .held(lock_key, &plan.key, holder.clone(), *at, expires_in);
            }
        }
        if let Some(expires_in) = watched {
            // No value there: a copy is one that read has outlived.
            if let (Some(near), Offer::Value(ticket)) = (&self.inner.near, &plan.offer) {
                near.offer(&plan.key, *ticket, None);
            }
            return Ok(Reply::Watched { expires_in });
        }
        let mut reply = plan.reply.read(plan.name, &plan.key, sent)?;
        if let Some(seal) = &self.inner.seal {
            plan.open(seal, &mut reply);
        }
        if let Some(near) = &self.inner.near {
            match (&plan.offer, &reply) {
                (
                    Offer::Value(ticket),
                    Reply::Value(Some(value)) | Reply::Found(GetOrLock::Value(value)),
                ) => near.offer(&plan.key, *ticket, Some(value)),
                // Nothing there (empty, or a lock instead): no copy outlives the read.
                (Offer::Value(ticket), _) => near.offer(&plan.key, *ticket, None),
                (
                    Offer::Tagged {
                        with_value,
                        tickets,
                    },
                    Reply::Values(values),
                ) => near.offer_tagged(&plan.many, *with_value, tickets, values),
                (Offer::Contradict, Reply::Values(values)) => {
                    for (key, value) in plan.many.iter().zip(values) {
                        near.contradicted(key, value.as_deref());
                    }
                }
                _ => {}
            }
        }
        Ok(reply)
    }
}

/// A command request: `name` and its arguments.
fn command(name: &str, build: impl FnOnce(&mut redis::Cmd) -> &mut redis::Cmd) -> Request {
    Request::Command(build(&mut redis::cmd(name)).take())
}

impl<'a> Plan<'a> {
    /// A read of `key`: with a near cache, it takes a ticket now (before it is sent)
    /// and offers what it finds (if the ticket is still current then).
    fn read(
        name: &'static str,
        key: Cow<'a, str>,
        request: Request,
        reply: Shape,
        backend: &RedisBackend,
    ) -> Self {
        let offer = backend
            .inner
            .near
            .as_ref()
            .map_or(Offer::Nothing, |near| Offer::Value(near.ticket(&key)));
        Self {
            name,
            key,
            request,
            reply,
            many: Vec::new(),
            offer,
            forget: Forget::Nothing,
            holder_of: None,
            parts: Vec::new(),
        }
    }

    /// Opens the values `reply` read (each with the stored name it was read at).
    fn open(&self, seal: &Seal, reply: &mut Reply) {
        let open = |key: &str, value: &mut Vec<u8>| {
            *value = seal.read(key, std::mem::take(value));
        };
        match reply {
            Reply::Value(Some(value)) | Reply::Found(GetOrLock::Value(value)) => {
                open(&self.key, value);
            }
            Reply::Values(values) => {
                for (key, value) in self.many.iter().zip(values) {
                    if let Some(value) = value {
                        open(key, value);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Shape {
    fn read(self, name: &'static str, key: &str, value: Value) -> Result<Reply, Error> {
        let parse = |err| Error::backend(name, key, err);
        let unexpected = |reply: &dyn std::fmt::Debug| {
            Error::backend(name, key, format!("unexpected reply {reply:?}"))
        };
        Ok(match self {
            Self::Value => Reply::Value(FromRedisValue::from_redis_value(value).map_err(parse)?),
            Self::Values => Reply::Values(FromRedisValue::from_redis_value(value).map_err(parse)?),
            Self::Done => Reply::Done,
            Self::Added => Reply::Applied(!matches!(value, Value::Nil)),
            Self::One => Reply::Applied(i64::from_redis_value(value).map_err(parse)? == 1),
            // The take-lock script's fencing token, or 0 (held).
            Self::Fence => match i64::from_redis_value(value).map_err(parse)? {
                0 => Reply::Fence(None),
                fence @ 1.. => Reply::Fence(Some(fence.unsigned_abs())),
                other => return Err(unexpected(&other)),
            },
            // The get-or-lock script's value, fencing token (locked), or 0 or
            // `{0, holder}` (held).
            Self::Found => Reply::Found(match value {
                Value::BulkString(value) => GetOrLock::Value(value),
                Value::Int(0) => GetOrLock::Held,
                Value::Array(items) if matches!(items.first(), Some(Value::Int(0))) => {
                    GetOrLock::Held
                }
                Value::Int(fence @ 1..) => GetOrLock::Locked {
                    fence: fence.unsigned_abs(),
                },
                other => return Err(unexpected(&other)),
            }),
            Self::Count => {
                let count = i64::from_redis_value(value).map_err(parse)?;
                Reply::Count(usize::try_from(count).unwrap_or(0))
            }
            // Read part by part (`finish_many`), never here.
            Self::Many => return Err(unexpected(&value)),
        })
    }
}

/// The answer to an `Op::Many` this backend cannot run as one script.
fn op_unsupported(parts: &[Part<'_>]) -> Error {
    Op::Many { parts }.unsupported()
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part
/// between the first `{` and the next `}`, when not empty), or of the whole key, mod
/// 16384.
fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    let mut crc: u16 = 0;
    for byte in tagged.unwrap_or(bytes) {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc & 0x3fff
}

#[cfg(test)]
mod slot_tests {
    #[test]
    fn slots_are_redis_cluster_slots() {
        // From the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(super::slot("123456789"), 0x31c3 & 0x3fff);
        assert_eq!(super::slot("foo"), 12182);
        assert_eq!(super::slot("{user1000}.following"), super::slot("user1000"));
        assert_eq!(super::slot("foo{}{bar}"), super::slot("foo{}{bar}"));
    }
}
