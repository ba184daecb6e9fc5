//! [`RedisBackend`]: values and locks in Redis (a server or a cluster), shared by every
//! process that connects to it.
//!
//! - Blocking callers share a bounded pool of connections (`link/pool.rs`); async
//!   callers share one multiplexed `ConnectionManager` that reconnects by itself.
//! - The atomic steps are Lua scripts (`scripts.rs`): a locked miss is three round trips
//!   (`GET`, get-or-lock, store-and-release), a hit is one `GET`.
//! - Lock waiters are woken through pub/sub (`wake/`) instead of polling, subscribed
//!   only to the locks they wait on.
//! - A circuit breaker (`link/breaker.rs`), shared by the sync and async paths, skips a
//!   server that stopped answering, so callers compute at once instead of each waiting
//!   out a timeout.
//! - An optional near cache (`near/`) keeps copies of values in the process, kept
//!   coherent by the server's invalidation messages (`near/tracking.rs`); a hit on a
//!   copy sends nothing and skips the breaker.
//! - `builder.rs` connects (the clients are in `link/`); `commands.rs` spells each
//!   step as a command or a script invocation; this file runs them, sync and async.

mod builder;
mod commands;
mod link;
mod near;
mod scripts;
mod wake;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManagerConfig;
use redis::{Cmd, ConnectionLike, RedisResult, ScriptInvocation};

use super::{AsyncBackend, Backend, BoxFuture, DecodedValue, GetOrLock, KeptValue, LockClaim};
use crate::error::Error;
pub use builder::RedisBuilder;
use commands::{
    Wake, compare_and_delete, compare_and_extend, delete_cmd, expire_many, get_cmd, get_many_cmd,
    get_or_lock, get_or_lock_reply, invalidate, set_cmd, store_and_release, take_lock,
    take_lock_reply,
};
use link::breaker::{Breaker, Decision, Permit};
use link::drivers::{self, Drivers};
use link::pool::Pool;
use link::{AsyncConnection, Client, is_connection_failure, is_stale, timed_out, went_away};
pub use near::{DEFAULT_NEAR_CACHE_CAPACITY, NearCache};
use near::{Ticket, Tier};
use wake::Hub;

/// The default time allowed to open a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default time allowed for a reply (redis 1.x's own async default is 500 ms).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The default bound on a backend's blocking connections
/// ([`RedisBuilder::max_connections`]): enough for a few dozen threads in flight at
/// once; more callers than that wait briefly for a free connection.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 32;

/// A cache backend on Redis: a single server, or a Redis Cluster.
///
/// ```no_run
/// use cache_memoize::RedisBackend;
/// use std::time::Duration;
///
/// cache_memoize::set_backend(RedisBackend::connect("redis://127.0.0.1:6379/")?);
///
/// // Or with timeouts chosen on purpose, or against a cluster:
/// let backend = RedisBackend::builder(["redis://:secret@10.0.0.5:6379/0"])
///     .connect_timeout(Duration::from_millis(200))
///     .response_timeout(Duration::from_millis(300))
///     .connect()?;
/// let cluster = RedisBackend::builder(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
///     .cluster()
///     .connect()?;
/// # Ok::<(), cache_memoize::Error>(())
/// ```
///
/// Cloning is cheap and shares the connections.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    /// The node addresses, passwords removed, for messages.
    address: String,
    client: Client,
    pool: Pool,
    connect_timeout: Duration,
    response_timeout: Duration,
    async_connection: Mutex<Option<AsyncConnection>>,
    hub: Arc<Hub>,
    breaker: Breaker,
    near: Option<Arc<Tier>>,
}

/// Whether the missing Tokio runtime was already reported (once per process).
static NO_RUNTIME_WARNED: AtomicBool = AtomicBool::new(false);
/// Whether a runtime without its I/O or time driver was already reported (once per
/// process).
static NO_DRIVERS_WARNED: AtomicBool = AtomicBool::new(false);

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// How this backend's releases are published (sharded on a cluster).
    fn wake(&self) -> Wake {
        match self.inner.client {
            Client::Node(_) => Wake::Classic,
            Client::Cluster(_) => Wake::Sharded,
        }
    }

    /// Lock-release messages this backend's wake-up subscriber has received, for its
    /// own waiters or not. A process waiting on no lock is subscribed to no channel, so
    /// this stays put while other processes release locks.
    ///
    /// ```no_run
    /// let backend = cache_memoize::RedisBackend::connect("redis://127.0.0.1/")?;
    /// assert_eq!(backend.wake_up_messages(), 0);
    /// # Ok::<(), cache_memoize::Error>(())
    /// ```
    pub fn wake_up_messages(&self) -> u64 {
        self.inner.hub.messages()
    }

    /// The locks whose release channel this backend is subscribed to right now: those
    /// its callers wait on (and, for a second after, those they just waited on).
    pub fn wake_up_subscriptions(&self) -> usize {
        self.inner.hub.subscriptions()
    }

    /// Reads answered by the [near cache](RedisBuilder::near_cache) without asking
    /// Redis, since the backend connected (0 without a near cache).
    ///
    /// ```no_run
    /// use cache_memoize::{NearCache, RedisBackend};
    ///
    /// let backend = RedisBackend::builder(["redis://127.0.0.1/"])
    ///     .near_cache(NearCache::new())
    ///     .connect()?;
    /// assert_eq!(backend.near_cache_hits(), 0);
    /// # Ok::<(), cache_memoize::Error>(())
    /// ```
    pub fn near_cache_hits(&self) -> u64 {
        self.inner.near.as_ref().map_or(0, |near| near.hits())
    }

    /// Invalidation messages the near cache has received (0 without one).
    pub fn near_cache_invalidations(&self) -> u64 {
        self.inner
            .near
            .as_ref()
            .map_or(0, |near| near.invalidations())
    }

    /// Whether the near cache serves copies right now: its invalidation connection is
    /// up with tracking on. False without a near cache, before tracking is first on,
    /// and from the moment the connection breaks until tracking is on again. For
    /// health checks and tests.
    pub fn is_near_cache_live(&self) -> bool {
        self.inner.near.as_ref().is_some_and(|near| near.is_live())
    }

    /// The near copy of `key`, if there is one to serve.
    fn near_copy(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.near.as_ref()?.get(key)
    }

    /// The ticket a read of `key` from Redis takes before it is sent.
    fn near_ticket(&self, key: &str) -> Option<Ticket> {
        self.inner.near.as_ref()?.ticket(key)
    }

    /// Offers what a read of `key` under `ticket` found to the near cache.
    fn near_offer(&self, key: &str, ticket: Option<Ticket>, found: Option<&[u8]>) {
        if let (Some(near), Some(value)) = (&self.inner.near, found) {
            near.offer(key, ticket, value);
        }
    }

    /// Drops the near copies of `keys`, after a write to them (whatever its outcome:
    /// a write that timed out may still have landed).
    fn near_forget(&self, keys: &[&str]) {
        if let Some(near) = &self.inner.near {
            for key in keys {
                near.forget(key.as_bytes());
            }
        }
    }

    /// Runs `op` on a pooled connection, unless the breaker says to skip the server.
    fn run<T>(
        &self,
        operation: &'static str,
        key: &str,
        op: impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T, Error> {
        let permit = self.admit(operation, key)?;
        let result = self.inner.pool.run(op);
        permit.record(failure(&result));
        result.map_err(|err| Error::backend(operation, key, err))
    }

    /// Leave from the breaker to send a call, or the error that skips the server (after
    /// starting the probe when one is due).
    fn admit(&self, operation: &'static str, key: &str) -> Result<Permit<'_>, Error> {
        match self.inner.breaker.admit() {
            Decision::Call(permit) => Ok(permit),
            Decision::Probe => {
                self.spawn_probe();
                Err(self.skipped(operation, key, BREAKER_OPEN))
            }
            Decision::Skip => Err(self.skipped(operation, key, BREAKER_OPEN)),
        }
    }

    /// Sends the breaker's probe, a `PING` on a pooled connection, from a thread of its
    /// own (reporting to the caller's `tracing` subscriber): the caller that found it
    /// due does not wait for it, whether the server answers or not.
    fn spawn_probe(&self) {
        let backend = self.clone();
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let spawned = std::thread::Builder::new()
            .name("cache-memoize-breaker-probe".into())
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let result = backend
                        .inner
                        .pool
                        .run(|conn| redis::cmd("PING").query::<String>(conn));
                    backend.inner.breaker.record_probe(failure(&result));
                });
            });
        if let Err(err) = spawned {
            tracing::debug!(error = %err, "cannot start the circuit breaker's probe");
            self.inner.breaker.abandon_probe();
        }
    }

    fn skipped(&self, operation: &'static str, key: &str, reason: &'static str) -> Error {
        Error::Skipped {
            address: self.inner.address.clone(),
            operation,
            key: key.to_owned(),
            reason,
        }
    }

    /// Whether the circuit breaker is open: calls skip the server (and compute without
    /// the cache) until a probe gets an answer, after a back-off of at most 2 s. See
    /// [`RedisBuilder::breaker_threshold`]. For health checks and tests.
    ///
    /// ```no_run
    /// let backend = cache_memoize::RedisBackend::connect("redis://127.0.0.1/")?;
    /// let healthy = !backend.is_circuit_open();
    /// # Ok::<(), cache_memoize::Error>(())
    /// ```
    pub fn is_circuit_open(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// The shared async connection, opened on first use (within the connect timeout and
    /// by `deadline`), and whether it was reused.
    async fn async_connection(
        &self,
        deadline: tokio::time::Instant,
    ) -> RedisResult<(AsyncConnection, bool)> {
        let cached = self.slot().clone();
        if let Some(conn) = cached {
            return Ok((conn, true));
        }
        let timeout = self
            .inner
            .connect_timeout
            .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(self.inner.response_timeout))
            .set_number_of_retries(1);
        let opening = async {
            match &self.inner.client {
                Client::Node(node) => node
                    .client_async(timeout)
                    .await?
                    .get_connection_manager_with_config(config)
                    .await
                    .map(AsyncConnection::Single),
                Client::Cluster(client) => client
                    .get_async_connection()
                    .await
                    .map(AsyncConnection::Cluster),
            }
        };
        // The manager retries a failed connect: bound the whole, not each attempt.
        let conn = tokio::time::timeout(timeout, opening)
            .await
            .unwrap_or_else(|_| Err(timeout_error(timeout, "connecting")))
            .map_err(|err| timed_out(err, timeout, "connecting"))
            .inspect_err(|_| self.inner.client.forget())?;
        *self.slot() = Some(conn.clone());
        Ok((conn, false))
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<AsyncConnection>> {
        self.inner
            .async_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` on the shared async connection, unless the breaker says to skip
    /// the server, or there is no Tokio runtime to run it on, or the runtime lacks its
    /// I/O or time driver (`link/drivers.rs`; each reported once, then every such call
    /// fails open: it computes without the cache).
    async fn request_async<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        key: &str,
        request: Request,
    ) -> Result<T, Error> {
        match drivers::here() {
            Drivers::Ready => {}
            Drivers::NoRuntime => {
                if !NO_RUNTIME_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        address = %self.inner.address,
                        "an async memoized call on the Redis backend ran outside a Tokio \
                         runtime: it computes without the cache (reported once per process)"
                    );
                }
                return Err(self.skipped(operation, key, NO_RUNTIME));
            }
            Drivers::Missing => {
                if !NO_DRIVERS_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        address = %self.inner.address,
                        "an async memoized call on the Redis backend ran on a Tokio runtime \
                         built without its I/O or time driver (the panic reported just before \
                         was cache-memoize's check, caught): such calls compute without the \
                         cache; build the runtime with `enable_all()` (reported once per process)"
                    );
                }
                return Err(self.skipped(operation, key, NO_DRIVERS));
            }
        }
        let permit = self.admit(operation, key)?;
        let result = self.send_async(&request).await;
        permit.record(failure(&result));
        result.map_err(|err| Error::backend(operation, key, err))
    }

    /// Sends `request`. One deadline covers the call, as on the blocking path: the
    /// response timeout from its start, opening a connection included (which the
    /// connect timeout also bounds). A failed connection is dropped (the next call opens
    /// another: its driver may have died with the runtime that started it). A reused
    /// connection found dropped before the request reached the server, or answering
    /// `READONLY` (its server demoted by a failover), is replaced and the request sent
    /// once more, by the same deadline.
    async fn send_async<T: redis::FromRedisValue>(&self, request: &Request) -> RedisResult<T> {
        let within = self.inner.response_timeout;
        let deadline = tokio::time::Instant::now() + within;
        let (mut conn, reused) = self.async_connection(deadline).await?;
        let mut reply = request.send_by(&mut conn, deadline, within).await;
        if let Err(err) = &reply {
            if is_stale(err) {
                self.drop_async_connection();
            }
            if reused && went_away(err) {
                let (mut fresh, _) = self.async_connection(deadline).await?;
                reply = request.send_by(&mut fresh, deadline, within).await;
                if reply.as_ref().is_err_and(is_stale) {
                    self.drop_async_connection();
                }
            }
        }
        reply
    }

    /// Drops the shared async connection (it failed, or its server was demoted): the
    /// next call opens another, to the master the Sentinels name then.
    fn drop_async_connection(&self) {
        self.slot().take();
        self.inner.client.forget();
    }
}

/// Why a call skipped an open breaker's server.
const BREAKER_OPEN: &str = "circuit breaker open after repeated failures (reported when it opened)";
/// Why an async call outside a Tokio runtime skipped the server.
const NO_RUNTIME: &str = "no Tokio runtime to run the async Redis client on";
/// Why an async call on a runtime without its drivers skipped the server.
const NO_DRIVERS: &str =
    "the Tokio runtime has no I/O or time driver for the async Redis client (enable_all)";

/// The failure to count against the breaker: the server did not answer. An error
/// reply is an answer.
fn failure<T>(result: &RedisResult<T>) -> Option<&dyn std::fmt::Display> {
    match result {
        Err(err) if is_connection_failure(err) => Some(err),
        _ => None,
    }
}

fn timeout_error(after: Duration, during: &str) -> redis::RedisError {
    timed_out(
        std::io::Error::from(std::io::ErrorKind::TimedOut).into(),
        after,
        during,
    )
}

/// One async request: a command or a script.
enum Request {
    Command(Cmd),
    Script(ScriptInvocation<'static>),
}

impl Request {
    async fn send<T: redis::FromRedisValue>(&self, conn: &mut AsyncConnection) -> RedisResult<T> {
        match self {
            Self::Command(cmd) => cmd.query_async(conn).await,
            Self::Script(script) => script.invoke_async(conn).await,
        }
    }

    /// [`send`](Self::send), abandoned at `deadline` (`within` after the call began).
    async fn send_by<T: redis::FromRedisValue>(
        &self,
        conn: &mut AsyncConnection,
        deadline: tokio::time::Instant,
        within: Duration,
    ) -> RedisResult<T> {
        tokio::time::timeout_at(deadline, self.send(conn))
            .await
            .unwrap_or_else(|_| Err(timeout_error(within, "waiting for the reply")))
            .map_err(|err| timed_out(err, within, "waiting for the reply"))
    }
}

impl Backend for RedisBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        if let Some(copy) = self.near_copy(key) {
            return Ok(Some(copy));
        }
        let ticket = self.near_ticket(key);
        let found: Option<Vec<u8>> = self.run("get", key, |conn| get_cmd(key).query(conn))?;
        self.near_offer(key, ticket, found.as_deref());
        Ok(found)
    }

    fn decoded(&self, key: &str, accept: &dyn Fn(&KeptValue) -> bool) -> Option<DecodedValue> {
        self.inner.near.as_ref()?.decoded(key, accept)
    }

    fn keep_decoded(&self, key: &str, bytes: &[u8], make: &mut dyn FnMut() -> DecodedValue) {
        if let Some(near) = &self.inner.near {
            near.keep_decoded(key, bytes, make);
        }
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.run("get_many", keys[0], |conn| get_many_cmd(keys).query(conn))
    }

    fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        let set = self.run("set", key, |conn| {
            set_cmd(key, value, ttl, false).query(conn)
        });
        self.near_forget(&[key]);
        set
    }

    fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, Error> {
        let reply: Option<String> = self.run("add", key, |conn| {
            set_cmd(key, value, ttl, true).query(conn)
        })?;
        Ok(reply.is_some())
    }

    fn delete(&self, key: &str) -> Result<(), Error> {
        let deleted = self.run("delete", key, |conn| delete_cmd(key).query(conn));
        self.near_forget(&[key]);
        deleted
    }

    fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, Error> {
        let deleted: i64 = self.run("compare_and_delete", key, |conn| {
            compare_and_delete(key, expected, self.wake()).invoke(conn)
        })?;
        Ok(deleted == 1)
    }

    fn compare_and_extend(&self, key: &str, expected: &[u8], ttl: Duration) -> Result<bool, Error> {
        let extended: i64 = self.run("compare_and_extend", key, |conn| {
            compare_and_extend(key, expected, ttl).invoke(conn)
        })?;
        Ok(extended == 1)
    }

    fn get_or_lock(&self, key: &str, lock: &LockClaim<'_>) -> Result<GetOrLock, Error> {
        let ticket = self.near_ticket(key);
        let reply = self.run("get_or_lock", key, |conn| {
            get_or_lock(key, lock).invoke(conn)
        })?;
        let found = get_or_lock_reply(key, reply)?;
        if let GetOrLock::Value(value) = &found {
            self.near_offer(key, ticket, Some(value));
        }
        Ok(found)
    }

    fn store_and_release(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        lock: &LockClaim<'_>,
    ) -> Result<bool, Error> {
        let ours = self.run("store_and_release", key, |conn| {
            store_and_release(key, value, ttl, lock, self.wake()).invoke::<i64>(conn)
        });
        self.near_forget(&[key]);
        Ok(ours? == 1)
    }

    fn take_lock(&self, lock: &LockClaim<'_>) -> Result<Option<u64>, Error> {
        let reply: i64 = self.run("take_lock", lock.key, |conn| take_lock(lock).invoke(conn))?;
        take_lock_reply(lock.key, reply)
    }

    fn invalidate(&self, key: &str, lock_key: &str) -> Result<(), Error> {
        let invalidated = self.run("invalidate", key, |conn| {
            invalidate(key, lock_key, self.wake()).invoke::<()>(conn)
        });
        self.near_forget(&[key]);
        invalidated
    }

    fn expire_many(&self, keys: &[&str], ttl: Duration) -> Result<usize, Error> {
        let Some(first) = keys.first() else {
            return Ok(0);
        };
        let present = self.run("expire_many", first, |conn| {
            expire_many(keys, ttl).invoke::<i64>(conn)
        });
        self.near_forget(keys);
        Ok(usize::try_from(present?).unwrap_or(0))
    }

    fn wait_for_release(&self, lock_key: &str, attempted: Instant, max: Duration) {
        self.inner.hub.wait(lock_key, attempted, max);
    }
}

impl AsyncBackend for RedisBackend {
    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>> {
        Box::pin(async move {
            if let Some(copy) = self.near_copy(key) {
                return Ok(Some(copy));
            }
            let ticket = self.near_ticket(key);
            let found: Option<Vec<u8>> = self
                .request_async("get", key, Request::Command(get_cmd(key)))
                .await?;
            self.near_offer(key, ticket, found.as_deref());
            Ok(found)
        })
    }

    fn get_many_async<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, Error>> {
        Box::pin(async move {
            match keys.first() {
                None => Ok(Vec::new()),
                Some(first) => {
                    self.request_async("get_many", first, Request::Command(get_many_cmd(keys)))
                        .await
                }
            }
        })
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let set = self
                .request_async(
                    "set",
                    key,
                    Request::Command(set_cmd(key, value, ttl, false)),
                )
                .await;
            self.near_forget(&[key]);
            set
        })
    }

    fn add_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let reply: Option<String> = self
                .request_async("add", key, Request::Command(set_cmd(key, value, ttl, true)))
                .await?;
            Ok(reply.is_some())
        })
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let deleted = self
                .request_async("delete", key, Request::Command(delete_cmd(key)))
                .await;
            self.near_forget(&[key]);
            deleted
        })
    }

    fn compare_and_delete_async<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let deleted: i64 = self
                .request_async(
                    "compare_and_delete",
                    key,
                    Request::Script(compare_and_delete(key, expected, self.wake())),
                )
                .await?;
            Ok(deleted == 1)
        })
    }

    fn compare_and_extend_async<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let extended: i64 = self
                .request_async(
                    "compare_and_extend",
                    key,
                    Request::Script(compare_and_extend(key, expected, ttl)),
                )
                .await?;
            Ok(extended == 1)
        })
    }

    fn get_or_lock_async<'a>(
        &'a self,
        key: &'a str,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<GetOrLock, Error>> {
        Box::pin(async move {
            let ticket = self.near_ticket(key);
            let reply = self
                .request_async("get_or_lock", key, Request::Script(get_or_lock(key, lock)))
                .await?;
            let found = get_or_lock_reply(key, reply)?;
            if let GetOrLock::Value(value) = &found {
                self.near_offer(key, ticket, Some(value));
            }
            Ok(found)
        })
    }

    fn store_and_release_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let script = store_and_release(key, value, ttl, lock, self.wake());
            let ours = self
                .request_async::<i64>("store_and_release", key, Request::Script(script))
                .await;
            self.near_forget(&[key]);
            Ok(ours? == 1)
        })
    }

    fn take_lock_async<'a>(
        &'a self,
        lock: &'a LockClaim<'a>,
    ) -> BoxFuture<'a, Result<Option<u64>, Error>> {
        Box::pin(async move {
            let reply: i64 = self
                .request_async("take_lock", lock.key, Request::Script(take_lock(lock)))
                .await?;
            take_lock_reply(lock.key, reply)
        })
    }

    fn invalidate_async<'a>(
        &'a self,
        key: &'a str,
        lock_key: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let script = invalidate(key, lock_key, self.wake());
        Box::pin(async move {
            let invalidated = self
                .request_async("invalidate", key, Request::Script(script))
                .await;
            self.near_forget(&[key]);
            invalidated
        })
    }

    fn wait_for_release_async<'a>(
        &'a self,
        lock_key: &'a str,
        attempted: Instant,
        max: Duration,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.inner.hub.wait_async(lock_key, attempted, max))
    }
}
