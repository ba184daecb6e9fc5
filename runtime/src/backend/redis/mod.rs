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
//! - `builder.rs` connects (the clients are in `link/`); `scripts.rs` holds the Lua
//!   scripts and `commands.rs` what requests share (TTLs, channels); `ops.rs` maps each operation
//!   ([`Op`](crate::Op)) to its request, its reply and its near-cache effects, once;
//!   `exec.rs` sends them, on one blocking and one async path. This file holds the type
//!   and its accessors.
//! - Optional encryption at rest (`seal.rs`, `Encryption`, feature `encryption`): key names hashed and
//!   values sealed, at the same one choke point (`ops.rs`).

mod builder;
mod commands;
mod exec;
mod link;
mod near;
mod ops;
mod scripts;
#[cfg(feature = "encryption")]
mod seal;
/// Without the `encryption` feature no seal exists: `ops.rs`'s branches on one are
/// never taken and compile away.
#[cfg(not(feature = "encryption"))]
mod seal {
    /// Uninhabited: a backend's `Option<Box<Seal>>` is always `None`.
    pub(crate) enum Seal {}

    impl Seal {
        pub(crate) fn name(&self, _key: &str) -> String {
            match *self {}
        }

        pub(crate) fn seal(&self, _key: &str, _value: &[u8]) -> Vec<u8> {
            match *self {}
        }

        pub(crate) fn read(&self, _key: &str, _stored: Vec<u8>) -> Vec<u8> {
            match *self {}
        }
    }
}
mod wake;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use builder::RedisBuilder;
use commands::Wake;
use link::breaker::Breaker;
use link::pool::Pool;
use link::{AsyncConnection, Client};
use near::Tier;
pub use near::{DEFAULT_NEAR_CACHE_CAPACITY, NearCache};
#[cfg(feature = "encryption")]
pub use seal::Encryption;
use seal::Seal;
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
    /// Encryption at rest ([`RedisBuilder::encryption`]), applied in `ops.rs`.
    seal: Option<Box<Seal>>,
}

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
}
