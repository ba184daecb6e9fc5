//! [`RedisBuilder`]: the settings (timeouts, TLS roots, topology, wake-ups, near cache,
//! breaker), and the connecting that makes a [`RedisBackend`] of them: the clients, the
//! pool, the wake-up subscriber and the near cache's tracking connection.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use once_cell::sync::Lazy;
use redis::{RedisError, RedisResult};

use super::link::breaker::{self, Breaker, Clock};
use super::link::pool::Pool;
use super::link::sentinel::Master;
use super::link::{Client, Node, Timeouts, quiet};
use super::near::{NearCache, Tier, tracking};
#[cfg(feature = "encryption")]
use super::seal::Encryption;
use super::seal::Seal;
use super::wake;
use super::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_RESPONSE_TIMEOUT, Inner, RedisBackend,
};
use crate::error::Error;

/// Settings for [`RedisBackend`]; made by [`RedisBackend::builder`].
#[derive(Clone)]
#[must_use = "call .connect() to open the connection"]
pub struct RedisBuilder {
    urls: Vec<String>,
    cluster: bool,
    sentinel: Option<String>,
    timeouts: Timeouts,
    max_connections: u32,
    wake_ups: bool,
    breaker_threshold: u32,
    clock: Clock,
    near: Option<NearCache>,
    #[cfg(feature = "encryption")]
    encryption: Option<Encryption>,
    #[cfg(feature = "tls")]
    root_certificate: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("RedisBuilder");
        debug
            .field(
                "urls",
                &self.urls.iter().map(|url| redact(url)).collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .field("sentinel", &self.sentinel)
            .field("timeouts", &self.timeouts)
            .field("max_connections", &self.max_connections)
            .field("wake_ups", &self.wake_ups)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("near", &self.near);
        #[cfg(feature = "encryption")]
        debug.field("encryption", &self.encryption);
        debug.finish_non_exhaustive()
    }
}

impl RedisBuilder {
    /// The time allowed to open a connection, handshake included (default 1 s). While
    /// the server is unreachable or hung, each call that needs a new connection waits
    /// at most this long (and no longer than what is left of its [response
    /// timeout](Self::response_timeout)) before computing without the cache. Clamped
    /// to [1 ms, [`MAX_EXPIRE`](crate::MAX_EXPIRE)].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = clamped_timeout(timeout);
        self
    }

    /// The time allowed for each call (default 1 s), sync and async alike: from its
    /// start, including any wait for a pooled connection and the opening of a new one
    /// (which the [connect timeout](Self::connect_timeout) bounds too). Against a
    /// stalled server every call returns within it, give or take scheduling. Clamped
    /// to [1 ms, [`MAX_EXPIRE`](crate::MAX_EXPIRE)]: `Duration::MAX` means "as long as
    /// it takes", not an overflow.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.response = clamped_timeout(timeout);
        self
    }

    /// The most blocking connections this backend keeps open at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`]; at least 1).
    ///
    /// Connections are opened on demand and shared by every thread; when all are busy,
    /// a caller waits for a free one at most the [response
    /// timeout](Self::response_timeout), and past that computes without the cache. Async
    /// callers share one multiplexed connection instead, not counted here.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// Trusts the certificate authority in `pem` (instead of the web's public roots)
    /// for `rediss://` connections: for servers with a private CA.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }

    /// Whether lock waiters are woken through pub/sub (default `true`). With `false`
    /// they only poll every `retry`, as Djblets does: for comparing, not for production.
    pub fn wake_ups(mut self, enabled: bool) -> Self {
        self.wake_ups = enabled;
        self
    }

    /// How many consecutive failures (I/O errors, timeouts, refused connections; not
    /// error replies) open the backend's circuit breaker (default 3; 0 turns it off).
    ///
    /// While it is open every call skips the server and computes at once; one call
    /// probes the server after a back-off (250 ms, doubled after each failed probe up
    /// to 2 s, minus up to 25 % jitter) and the first answer closes it. It WARNs when
    /// it opens, then at most once a minute while it stays open, and logs at INFO when
    /// it closes: not once per call.
    pub fn breaker_threshold(mut self, failures: u32) -> Self {
        self.breaker_threshold = failures;
        self
    }

    /// Where the circuit breaker reads the time: for tests that open and close it
    /// without sleeping. Not a stable API.
    #[doc(hidden)]
    pub fn breaker_clock(
        mut self,
        now: impl Fn() -> std::time::Instant + Send + Sync + 'static,
    ) -> Self {
        self.clock = Arc::new(now);
        self
    }

    /// Keeps a copy of the values read in this process, in front of Redis, kept
    /// coherent by the server (off by default): a hit on a copy costs about what a
    /// [`MemoryBackend`](crate::MemoryBackend) hit costs, with no command sent.
    ///
    /// The server pushes an invalidation for every key written, deleted, expired or
    /// evicted, by any process (`CLIENT TRACKING` in broadcasting mode, Redis 6 or
    /// later); this process's own writes drop their copy as soon as they return. A
    /// copy is never kept past the freshness its value was stamped with (so never past
    /// its TTL); locks and memoized iterators are never kept. A [tagged](crate::invalidate_tag)
    /// value is served near with its tags' epochs, each a copy kept under the same
    /// tracking: an `invalidate_tag` anywhere drops the epoch's copy when its message
    /// arrives, and a tagged value is served near only while every epoch's copy is
    /// here. When the invalidation connection breaks, every copy is dropped and reads go
    /// to Redis until tracking is on again.
    ///
    /// What it allows: another process's write may be missed for as long as its
    /// invalidation takes to arrive (a few milliseconds on a LAN); if the network to
    /// the server stops delivering without closing the connection, for at most half a
    /// second plus the [response timeout](Self::response_timeout) (the heartbeat).
    ///
    /// On Redis Cluster, one invalidation connection per master; a change of masters
    /// (a failover) is found at the next heartbeat and flushes the near cache, so a
    /// write on a newly promoted master can go unseen until then (500 ms at most).
    /// With [Sentinel](Self::sentinel), the invalidation connection goes to the master
    /// the Sentinels name and checks `ROLE` at each heartbeat: after a failover nothing
    /// is served near until tracking is on again on the new master.
    ///
    /// ```no_run
    /// use cache_memoize::{NearCache, RedisBackend};
    ///
    /// let backend = RedisBackend::builder(["redis://127.0.0.1/"])
    ///     .near_cache(NearCache::new())
    ///     .connect()?;
    /// # Ok::<(), cache_memoize::Error>(())
    /// ```
    pub fn near_cache(mut self, settings: NearCache) -> Self {
        self.near = Some(settings);
        self
    }

    /// Encrypts what this backend stores, with the keys of `settings` (off by
    /// default; the `encryption` feature, which builds `ring`): every key name it writes or reads (values, locks, refresh marks,
    /// iterator chunks and manifests, and the lock-release channels) has its hash tag
    /// replaced by a keyed hash (HMAC-SHA256), so `SCAN` and `MONITOR` show no
    /// argument; every value is sealed with AES-256-GCM under a key of its own
    /// (derived from the value key; authenticated, bound to its key name). Bytes that do not open (tampered, truncated, moved from
    /// another key, sealed under a key no longer listed) read as a miss: recomputed
    /// and overwritten, never an error. [`make_cache_key`](crate::make_cache_key) and
    /// the attribute's `f_cache_key` still show the readable key.
    ///
    /// What it does not hide: the sizes of values, when and how often each (hashed)
    /// key is read, written and locked, TTLs, and a memoized value's fencing token
    /// (the time of its write, which the store scripts read in clear). Lock tokens are
    /// random and stored as they are. Connecting fails when `settings` has no value
    /// key or lists an id twice. With a [near cache](Self::near_cache), its prefixes
    /// are set aside (hashed names have none): it is told of writes to every key.
    ///
    /// Processes with other settings (no encryption, another name key) name every key
    /// differently: they share no value, lock or invalidation, so a fleet switches at
    /// once. Of the raw [`Backend`](crate::Backend) operations, `set` and `get` seal
    /// and open; `add`, `compare_and_extend` and `compare_and_delete` (the lock
    /// tokens', compared inside Redis) work on the bytes as given.
    ///
    /// ```no_run
    /// use cache_memoize::{Encryption, RedisBackend};
    ///
    /// # let (names, current, previous) = ([0u8; 32], [1u8; 32], [2u8; 32]);
    /// let backend = RedisBackend::builder(["redis://127.0.0.1/"])
    ///     .encryption(Encryption::new(names).key(2, current).key(1, previous))
    ///     .connect()?;
    /// # Ok::<(), cache_memoize::Error>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "encryption")))]
    #[cfg(feature = "encryption")]
    pub fn encryption(mut self, settings: Encryption) -> Self {
        self.encryption = Some(settings);
        self
    }

    /// Treats the URLs as nodes of a Redis Cluster (one is enough to discover the rest).
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Treats the URLs as Redis Sentinels watching the master named `master_name`, and
    /// connects to whichever server they name as the master, following failovers.
    ///
    /// The Sentinels are asked (`SENTINEL GET-MASTER-ADDR-BY-NAME`, each in turn, the
    /// answer checked with `ROLE`) when a connection is opened and no master is known:
    /// at the first call, and again after a connection to the master failed or the
    /// master answered `READONLY` (it was demoted). Idle connections to the old master
    /// are dropped then, and the wake-up subscriber and the near cache's invalidation
    /// connection reconnect to the new one. Each step is bounded by the connect and
    /// response timeouts; meanwhile calls compute without the cache. What a failover
    /// does to locks: see the README's "Operating Redis".
    ///
    /// The first URL's user, password and database are the master's; the Sentinels
    /// are asked without credentials (Sentinels that require a password are not
    /// supported yet). Not with [`cluster`](Self::cluster).
    ///
    /// ```no_run
    /// let backend = cache_memoize::RedisBackend::builder([
    ///     "redis://:secret@10.0.0.1:26379/0",
    ///     "redis://10.0.0.2:26379",
    ///     "redis://10.0.0.3:26379",
    /// ])
    /// .sentinel("mymaster")
    /// .connect()?;
    /// # Ok::<(), cache_memoize::Error>(())
    /// ```
    pub fn sentinel(mut self, master_name: impl Into<String>) -> Self {
        self.sentinel = Some(master_name.into());
        self
    }

    /// The data client, and the node the wake-up subscriber and the near cache's
    /// tracking connection go to (on a cluster, its first node), for the topology these
    /// settings name.
    fn clients(&self, first: &str, address: &str) -> Result<(Client, Node), Error> {
        let connect_error = |source: RedisError| Error::Connect {
            url: address.to_owned(),
            source: source.into(),
        };
        let first_client = self
            .open_client(first)
            .and_then(|client| redis::Client::open(quiet(client.get_connection_info())))
            .map_err(connect_error)?;
        let Some(name) = &self.sentinel else {
            let node = Node::Server(first_client);
            let client = if self.cluster {
                Client::Cluster(self.cluster_builder().build().map_err(connect_error)?)
            } else {
                Client::Node(node.clone())
            };
            return Ok((client, node));
        };
        if self.cluster {
            return Err(Error::Connect {
                url: address.to_owned(),
                source:
                    "a cluster has no Sentinel: `.cluster()` and `.sentinel(..)` exclude each other"
                        .into(),
            });
        }
        let sentinels = self
            .urls
            .iter()
            .map(|url| {
                self.open_client(url)
                    .map(|c| c.get_connection_info().clone())
            })
            .collect::<RedisResult<Vec<_>>>()
            .map_err(connect_error)?;
        let master = Master::new(sentinels, name.clone(), self.timeouts).map_err(connect_error)?;
        let node = Node::Sentinel(Arc::new(master));
        Ok((Client::Node(node.clone()), node))
    }

    /// Connects (one connection and a `PING`, to check that the server answers and
    /// accepts the URL's credentials) and starts the wake-up subscriber.
    pub fn connect(self) -> Result<RedisBackend, Error> {
        self.open(Contact::Now)
    }

    /// Returns at once, whether the server answers yet or not: for a service that must
    /// start before its cache (Redis restarting, deployed after it, briefly
    /// unreachable). Until the server answers, memoized calls compute without the
    /// cache: from the backend's first failed contact (a refused connection fails at
    /// once; a server that does not answer, after the connect timeout) they skip the
    /// server as an open circuit breaker's calls do, so none waits out a connect
    /// timeout; one WARN says so, then the breaker's usual rate-limited reports. A
    /// server that answers at once is used at once. A
    /// thread of the backend's own `PING`s the server every
    /// [`FIRST_CONTACT_EVERY`](Self::FIRST_CONTACT_EVERY) until it answers (then ends;
    /// it also ends when the backend is dropped); from that answer on, calls use the
    /// server, with no restart. Errors only for settings that can never work (no URL,
    /// a URL that does not parse, a cluster with Sentinel).
    ///
    /// ```
    /// use cache_memoize::RedisBackend;
    ///
    /// // Nothing listens on port 1: the backend is made anyway; calls compute meanwhile.
    /// let backend = RedisBackend::builder(["redis://127.0.0.1:1/"]).connect_lazy()?;
    /// cache_memoize::set_backend(backend);
    /// # Ok::<(), cache_memoize::Error>(())
    /// ```
    pub fn connect_lazy(self) -> Result<RedisBackend, Error> {
        self.open(Contact::Lazy)
    }

    /// How often a [lazily connected](Self::connect_lazy) backend asks whether the
    /// server answers yet.
    pub const FIRST_CONTACT_EVERY: Duration = Duration::from_millis(100);

    fn open(self, contact: Contact) -> Result<RedisBackend, Error> {
        let address = self
            .urls
            .iter()
            .map(|url| redact(url))
            .collect::<Vec<_>>()
            .join(",");
        let connect_error = |source: RedisError| Error::Connect {
            url: address.clone(),
            source: source.into(),
        };
        let first = self.urls.first().ok_or_else(|| Error::Connect {
            url: address.clone(),
            source: "no URL given".into(),
        })?;
        #[cfg(not(feature = "encryption"))]
        let seal: Option<Box<Seal>> = None;
        #[cfg(feature = "encryption")]
        let seal = match &self.encryption {
            Some(settings) => Some(Box::new(Seal::new(settings).map_err(|reason| {
                Error::Connect {
                    url: address.clone(),
                    source: reason.into(),
                }
            })?)),
            None => None,
        };
        let (client, node) = self.clients(first, &address)?;
        let pool = Pool::new(client.clone(), self.timeouts, self.max_connections);
        if contact == Contact::Now {
            // One command proves the server answers, and that the URL's credentials work.
            pool.run(|conn| redis::cmd("PING").query::<String>(conn))
                .map_err(connect_error)?;
            warn_if_locks_can_be_evicted(&pool, &address);
        }
        let hub = if self.wake_ups {
            let cluster = self.cluster.then(|| {
                let settings = self.clone();
                Box::new(move || settings.cluster_builder()) as Box<_>
            });
            wake::start(node.clone(), cluster, self.timeouts)
        } else {
            wake::polling()
        };
        let near = self.near.as_ref().map(|settings| {
            let tier = if seal.is_some() {
                if settings.has_prefixes() {
                    tracing::info!(
                        "near cache: prefixes set aside under encryption (stored key names are \
                         hashed): it is told of writes to every key"
                    );
                }
                Arc::new(Tier::new(&settings.clone().every_key()))
            } else {
                Arc::new(Tier::new(settings))
            };
            tracking::start(&tier, node, self.cluster, self.timeouts);
            tier
        });
        let breaker = Breaker::new(address.clone(), self.breaker_threshold, self.clock);
        let backend = RedisBackend {
            inner: Arc::new(Inner {
                breaker,
                address,
                client,
                pool,
                connect_timeout: self.timeouts.connect,
                response_timeout: self.timeouts.response,
                async_connection: Mutex::new(None),
                hub,
                near,
                seal,
            }),
        };
        if contact == Contact::Lazy {
            first_contact(&backend);
        }
        Ok(backend)
    }
}

/// Whether connecting waits for the server's first answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contact {
    /// [`RedisBuilder::connect`]: fails if the server does not answer.
    Now,
    /// [`RedisBuilder::connect_lazy`]: returns at once.
    Lazy,
}

/// Starts the thread that asks a lazily connected server for its first answer: a
/// `PING` every [`RedisBuilder::FIRST_CONTACT_EVERY`] until one is answered, then
/// closes the breaker (calls use the server from then on), checks the eviction policy
/// as `connect` does, and ends. It holds the backend weakly: dropping the backend ends
/// it too. One WARN at its first failure; the breaker reports the rest.
fn first_contact(backend: &RedisBackend) {
    let inner = Arc::downgrade(&backend.inner);
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let spawned = std::thread::Builder::new()
        .name("cache-memoize-first-contact".into())
        .spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                let mut warned = false;
                while let Some(inner) = inner.upgrade() {
                    match inner
                        .pool
                        .run(|conn| redis::cmd("PING").query::<String>(conn))
                    {
                        Ok(_) => {
                            inner.breaker.answered();
                            warn_if_locks_can_be_evicted(&inner.pool, &inner.address);
                            if warned {
                                tracing::info!(
                                    address = %inner.address,
                                    "the Redis server answers: memoized calls use it from now on"
                                );
                            }
                            return;
                        }
                        Err(err) if !warned => {
                            warned = true;
                            // From the first failed contact on, calls skip the server
                            // (computing at once) until it answers: none waits out a
                            // connect timeout meanwhile. A server that answers at once
                            // is used at once, with no skip and no recovery report.
                            inner.breaker.await_first_answer();
                            tracing::warn!(
                                address = %inner.address,
                                error = %err,
                                "the Redis server does not answer yet (connect_lazy): memoized \
                                 calls compute without the cache until it does"
                            );
                        }
                        Err(_) => {}
                    }
                    drop(inner);
                    std::thread::sleep(RedisBuilder::FIRST_CONTACT_EVERY);
                }
            });
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start the thread that waits for the Redis server's first answer; the breaker's probes will find it");
        // The next call probes, then the breaker's usual back-off.
        backend.inner.breaker.abandon_probe();
    }
}

impl RedisBuilder {
    /// The cluster client's settings (for the data connections and the subscriber).
    fn cluster_builder(&self) -> redis::cluster::ClusterClientBuilder {
        let cluster = redis::cluster::ClusterClient::builder(self.urls.iter().map(String::as_str))
            .connection_timeout(self.timeouts.connect)
            .response_timeout(self.timeouts.response);
        #[cfg(feature = "tls")]
        let cluster = match &self.root_certificate {
            Some(pem) => cluster.certs(certificates(pem)),
            None => cluster,
        };
        cluster
    }

    #[cfg_attr(not(feature = "tls"), allow(clippy::unused_self))]
    fn open_client(&self, url: &str) -> RedisResult<redis::Client> {
        #[cfg(feature = "tls")]
        if let Some(pem) = &self.root_certificate {
            return redis::Client::build_with_tls(url, certificates(pem));
        }
        redis::Client::open(url)
    }
}

#[cfg(feature = "tls")]
fn certificates(pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// The servers (address, policy) already warned about by [`warn_if_locks_can_be_evicted`]:
/// once per process, however many backends connect to one server.
static EVICTION_WARNED: Lazy<Mutex<HashSet<(String, String)>>> = Lazy::new(Mutex::default);

/// Reads the server's `maxmemory-policy` and WARNs (once per server and policy in the
/// process) when it may evict keys that have a TTL (every policy but `noeviction`):
/// locks have one, and an evicted lock lets a
/// second caller compute. A server that refuses `CONFIG` (managed services, ACLs) is
/// not checked (DEBUG only); on a cluster, the one node the client picks answers.
fn warn_if_locks_can_be_evicted(pool: &Pool, address: &str) {
    let reply: Result<Vec<String>, _> = pool.run(|conn| {
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query(conn)
    });
    let policy = match reply {
        Ok(pair) => pair.into_iter().nth(1),
        Err(err) => {
            tracing::debug!(address, error = %err, "cannot read the server's maxmemory-policy");
            None
        }
    };
    let Some(policy) = policy.filter(|policy| policy != "noeviction") else {
        return;
    };
    let first = EVICTION_WARNED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((address.to_owned(), policy.clone()));
    if first {
        tracing::warn!(
            address,
            policy,
            "the Redis server may evict keys that have a TTL (maxmemory-policy {policy}): \
             an evicted lock lets a second caller compute; use `noeviction` or leave memory headroom"
        );
    }
}

/// `url` with any password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

impl RedisBackend {
    /// Connects to the Redis server at `url` (`redis://[user:password@]host[:port][/db]`,
    /// or `rediss://` with the `tls` feature) with the default timeouts.
    pub fn connect(url: &str) -> Result<Self, Error> {
        Self::builder([url]).connect()
    }

    /// Settings for connecting to `urls`: one server, or with
    /// [`RedisBuilder::cluster`] the nodes of a cluster.
    pub fn builder<I, S>(urls: I) -> RedisBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisBuilder {
            urls: urls.into_iter().map(Into::into).collect(),
            cluster: false,
            sentinel: None,
            timeouts: Timeouts {
                connect: DEFAULT_CONNECT_TIMEOUT,
                response: DEFAULT_RESPONSE_TIMEOUT,
            },
            max_connections: DEFAULT_MAX_CONNECTIONS,
            wake_ups: true,
            breaker_threshold: breaker::DEFAULT_THRESHOLD,
            clock: Arc::new(std::time::Instant::now),
            near: None,
            #[cfg(feature = "encryption")]
            encryption: None,
            #[cfg(feature = "tls")]
            root_certificate: None,
        }
    }
}

/// A timeout as the connections can use it: at least 1 ms (a socket refuses a zero
/// timeout), at most [`MAX_EXPIRE`](crate::MAX_EXPIRE) (deadlines are `now + timeout`).
fn clamped_timeout(timeout: Duration) -> Duration {
    timeout.clamp(Duration::from_millis(1), crate::limits::MAX_EXPIRE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://:pw@host:1/2"), "redis://:***@host:1/2");
        assert_eq!(redact("rediss://user:p@ss@host"), "rediss://user:***@host");
        assert_eq!(redact("redis://user@host"), "redis://user@host");
    }
}
