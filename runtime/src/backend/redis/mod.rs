//! [`RedisBackend`]: values and locks in Redis (a server or a cluster), shared by every
//! process that connects to it.
//!
//! - Blocking callers share a stack of idle connections (`pool.rs`); async callers share
//!   one multiplexed `ConnectionManager` that reconnects by itself.
//! - The atomic steps are Lua scripts (`scripts.rs`): a locked miss is three round trips
//!   (`GET`, get-or-lock, store-and-release), a hit is one `GET`.
//! - Lock waiters are woken through pub/sub (`wake.rs`) instead of polling.

mod pool;
mod scripts;
mod wake;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ConnectionLike, RedisError, RedisFuture, RedisResult, ScriptInvocation, Value};

use super::{AsyncBackend, Backend, BoxFuture, GetOrLock};
use crate::error::Error;
use pool::{Pool, is_connection_failure};
use scripts::{
    COMPARE_AND_DELETE, COMPARE_AND_EXTEND, GET_OR_LOCK, RELEASE_CHANNEL, STORE_AND_RELEASE,
};
use wake::Hub;

/// The default time allowed to open a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default time allowed for a reply (redis 1.x's own async default is 500 ms).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The Redis client: one server, or a cluster.
#[derive(Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per backend; its size does not matter"
)]
enum Client {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// An async connection: to a server (reconnecting by itself), or to a cluster.
#[derive(Clone)]
enum AsyncConnection {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for AsyncConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

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
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

/// Settings for [`RedisBackend`]; made by [`RedisBackend::builder`].
#[derive(Debug, Clone)]
#[must_use = "call .connect() to open the connection"]
pub struct RedisBuilder {
    urls: Vec<String>,
    cluster: bool,
    connect_timeout: Duration,
    response_timeout: Duration,
    wake_ups: bool,
    #[cfg(feature = "tls")]
    root_certificate: Option<Vec<u8>>,
}

impl RedisBuilder {
    /// The time allowed to open a connection (default 1 s). While the server is
    /// unreachable, each call that needs a new connection waits at most this long
    /// before computing without the cache.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The time allowed for each reply (default 1 s), sync and async alike.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Trusts the certificate authority in `pem` (instead of the web's public roots)
    /// for `rediss://` connections: for servers with a private CA.
    #[cfg(feature = "tls")]
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

    /// Treats the URLs as nodes of a Redis Cluster (one is enough to discover the rest).
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Connects (one connection and a `PING`, to check that the server answers and
    /// accepts the URL's credentials) and starts the wake-up subscriber.
    pub fn connect(self) -> Result<RedisBackend, Error> {
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
        let subscriber = self.open_client(first).map_err(connect_error)?;
        let client = if self.cluster {
            let cluster =
                redis::cluster::ClusterClient::builder(self.urls.iter().map(String::as_str))
                    .connection_timeout(self.connect_timeout)
                    .response_timeout(self.response_timeout);
            #[cfg(feature = "tls")]
            let cluster = match &self.root_certificate {
                Some(pem) => cluster.certs(certificates(pem)),
                None => cluster,
            };
            Client::Cluster(cluster.build().map_err(connect_error)?)
        } else {
            Client::Single(subscriber.clone())
        };
        let pool = Pool::new(client.clone(), self.connect_timeout, self.response_timeout);
        // One command proves the server answers, and that the URL's credentials work.
        let mut first_connection = pool.open().map_err(connect_error)?;
        first_connection.ping().map_err(connect_error)?;
        pool.put(first_connection);
        let hub = Arc::new(Hub::default());
        if self.wake_ups {
            wake::spawn_subscriber(subscriber, self.connect_timeout, &hub);
        }
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                address,
                client,
                pool,
                connect_timeout: self.connect_timeout,
                response_timeout: self.response_timeout,
                async_connection: Mutex::new(None),
                hub,
            }),
        })
    }
}

impl RedisBuilder {
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
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            wake_ups: true,
            #[cfg(feature = "tls")]
            root_certificate: None,
        }
    }

    fn run<T>(
        &self,
        operation: &'static str,
        key: &str,
        op: impl FnOnce(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T, Error> {
        self.inner
            .pool
            .run(op)
            .map_err(|err| Error::backend(operation, key, err))
    }

    /// The shared async connection, opened on first use, and whether it was reused.
    async fn async_connection(
        &self,
        operation: &'static str,
        key: &str,
    ) -> Result<(AsyncConnection, bool), Error> {
        let cached = self.slot().clone();
        if let Some(conn) = cached {
            return Ok((conn, true));
        }
        let opened = match &self.inner.client {
            Client::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.inner.connect_timeout))
                    .set_response_timeout(Some(self.inner.response_timeout))
                    .set_number_of_retries(1);
                client
                    .get_connection_manager_with_config(config)
                    .await
                    .map(AsyncConnection::Single)
            }
            Client::Cluster(client) => client
                .get_async_connection()
                .await
                .map(AsyncConnection::Cluster),
        };
        let conn = opened.map_err(|err| Error::backend(operation, key, err))?;
        *self.slot() = Some(conn.clone());
        Ok((conn, false))
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<AsyncConnection>> {
        self.inner
            .async_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` on the shared async connection. A failed connection is dropped
    /// (the next call opens another: its driver may have died with the runtime that
    /// started it). A reused connection found dropped before the request reached the
    /// server is replaced and the request sent once more.
    async fn request_async<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        key: &str,
        request: Request,
    ) -> Result<T, Error> {
        let (mut conn, reused) = self.async_connection(operation, key).await?;
        let mut reply = request.send(&mut conn).await;
        if let Err(err) = &reply {
            if is_connection_failure(err) {
                self.slot().take();
            }
            if reused && err.is_connection_dropped() && !err.is_timeout() {
                let (mut fresh, _) = self.async_connection(operation, key).await?;
                reply = request.send(&mut fresh).await;
                if reply.as_ref().is_err_and(is_connection_failure) {
                    self.slot().take();
                }
            }
        }
        reply.map_err(|err| Error::backend(operation, key, err))
    }
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
}

/// A TTL in Redis milliseconds (at least 1: Redis rejects `PX 0`).
fn ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn release_channel(lock_key: &str) -> String {
    format!("{RELEASE_CHANNEL}{lock_key}")
}

fn get_cmd(key: &str) -> Cmd {
    let mut cmd = redis::cmd("GET");
    cmd.arg(key);
    cmd
}

fn get_many_cmd(keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("MGET");
    cmd.arg(keys);
    cmd
}

fn set_cmd(key: &str, value: &[u8], ttl: Duration, only_if_absent: bool) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if only_if_absent {
        cmd.arg("NX");
    }
    cmd.arg("PX").arg(ms(ttl));
    cmd
}

fn delete_cmd(key: &str) -> Cmd {
    let mut cmd = redis::cmd("DEL");
    cmd.arg(key);
    cmd
}

fn compare_and_delete(key: &str, expected: &[u8]) -> ScriptInvocation<'static> {
    let mut script = COMPARE_AND_DELETE.prepare_invoke();
    script.key(key).arg(expected).arg(release_channel(key));
    script
}

fn compare_and_extend(key: &str, expected: &[u8], ttl: Duration) -> ScriptInvocation<'static> {
    let mut script = COMPARE_AND_EXTEND.prepare_invoke();
    script.key(key).arg(expected).arg(ms(ttl));
    script
}

fn get_or_lock(
    key: &str,
    lock_key: &str,
    token: &[u8],
    lock_ttl: Duration,
) -> ScriptInvocation<'static> {
    let mut script = GET_OR_LOCK.prepare_invoke();
    script.key(key).key(lock_key).arg(token).arg(ms(lock_ttl));
    script
}

fn store_and_release(
    key: &str,
    value: &[u8],
    ttl: Duration,
    lock_key: &str,
    token: &[u8],
) -> ScriptInvocation<'static> {
    let mut script = STORE_AND_RELEASE.prepare_invoke();
    script
        .key(key)
        .key(lock_key)
        .arg(value)
        .arg(ms(ttl))
        .arg(token)
        .arg(release_channel(lock_key));
    script
}

/// Reads the get-or-lock script's reply: the value, 1 (locked) or 0 (held).
fn get_or_lock_reply(key: &str, reply: Value) -> Result<GetOrLock, Error> {
    match reply {
        Value::BulkString(value) => Ok(GetOrLock::Value(value)),
        Value::Int(1) => Ok(GetOrLock::Locked),
        Value::Int(0) => Ok(GetOrLock::Held),
        other => Err(Error::backend(
            "get_or_lock",
            key,
            format!("unexpected reply {other:?}"),
        )),
    }
}

impl Backend for RedisBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.run("get", key, |conn| get_cmd(key).query(conn))
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.run("get_many", keys[0], |conn| get_many_cmd(keys).query(conn))
    }

    fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        self.run("set", key, |conn| {
            set_cmd(key, value, ttl, false).query(conn)
        })
    }

    fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, Error> {
        let reply: Option<String> = self.run("add", key, |conn| {
            set_cmd(key, value, ttl, true).query(conn)
        })?;
        Ok(reply.is_some())
    }

    fn delete(&self, key: &str) -> Result<(), Error> {
        self.run("delete", key, |conn| delete_cmd(key).query(conn))
    }

    fn compare_and_delete(&self, key: &str, expected: &[u8]) -> Result<bool, Error> {
        let deleted: i64 = self.run("compare_and_delete", key, |conn| {
            compare_and_delete(key, expected).invoke(conn)
        })?;
        Ok(deleted == 1)
    }

    fn compare_and_extend(&self, key: &str, expected: &[u8], ttl: Duration) -> Result<bool, Error> {
        let extended: i64 = self.run("compare_and_extend", key, |conn| {
            compare_and_extend(key, expected, ttl).invoke(conn)
        })?;
        Ok(extended == 1)
    }

    fn get_or_lock(
        &self,
        key: &str,
        lock_key: &str,
        token: &[u8],
        lock_ttl: Duration,
    ) -> Result<GetOrLock, Error> {
        let reply = self.run("get_or_lock", key, |conn| {
            get_or_lock(key, lock_key, token, lock_ttl).invoke(conn)
        })?;
        get_or_lock_reply(key, reply)
    }

    fn store_and_release(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        lock_key: &str,
        token: &[u8],
    ) -> Result<bool, Error> {
        let ours: i64 = self.run("store_and_release", key, |conn| {
            store_and_release(key, value, ttl, lock_key, token).invoke(conn)
        })?;
        Ok(ours == 1)
    }

    fn wait_for_release(&self, lock_key: &str, attempted: Instant, max: Duration) {
        self.inner.hub.wait(lock_key, attempted, max);
    }
}

impl AsyncBackend for RedisBackend {
    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>> {
        Box::pin(self.request_async("get", key, Request::Command(get_cmd(key))))
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
        Box::pin(self.request_async(
            "set",
            key,
            Request::Command(set_cmd(key, value, ttl, false)),
        ))
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
        Box::pin(self.request_async("delete", key, Request::Command(delete_cmd(key))))
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
                    Request::Script(compare_and_delete(key, expected)),
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
        lock_key: &'a str,
        token: &'a [u8],
        lock_ttl: Duration,
    ) -> BoxFuture<'a, Result<GetOrLock, Error>> {
        Box::pin(async move {
            let reply = self
                .request_async(
                    "get_or_lock",
                    key,
                    Request::Script(get_or_lock(key, lock_key, token, lock_ttl)),
                )
                .await?;
            get_or_lock_reply(key, reply)
        })
    }

    fn store_and_release_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
        lock_key: &'a str,
        token: &'a [u8],
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let script = store_and_release(key, value, ttl, lock_key, token);
            let ours: i64 = self
                .request_async("store_and_release", key, Request::Script(script))
                .await?;
            Ok(ours == 1)
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

    #[test]
    fn ttls_are_at_least_one_millisecond() {
        assert_eq!(ms(Duration::ZERO), 1);
        assert_eq!(ms(Duration::from_micros(1500)), 1);
        assert_eq!(ms(Duration::from_secs(2)), 2000);
        assert_eq!(ms(Duration::MAX), u64::MAX);
    }
}
