//! The links to Redis, below everything else of the backend: the clients (one server,
//! the master the Sentinels name, or a cluster), what an error means, how a timeout is
//! said, the blocking pool (`pool.rs`), the circuit breaker (`breaker.rs`), Sentinel
//! (`sentinel.rs`), the Tokio driver check (`drivers.rs`), and the skeleton of the two
//! background connections (`background.rs`: the near cache's tracking connection, the
//! lock wake-up subscriber). Nothing here imports from the rest of the backend.

pub(crate) mod background;
pub(crate) mod breaker;
pub(crate) mod drivers;
pub(crate) mod pool;
pub(crate) mod sentinel;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Cmd, ConnectionAddr, ConnectionInfo, RedisError, RedisFuture, RedisResult, Value};

use sentinel::Master;

/// The two timeouts every link keeps to (see [`RedisBuilder`](crate::RedisBuilder)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// Opening a connection, handshake included.
    pub(crate) connect: Duration,
    /// Each reply.
    pub(crate) response: Duration,
}

/// The longest pause between two attempts to reconnect a background link (and the
/// breaker's longest back-off).
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A timeout, said in words: "timed out `what`".
pub(crate) fn timeout(what: impl std::fmt::Display) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("timed out {what}"),
    ))
}

/// `request`, failed as "timed out `what`" past `timeout`.
pub(crate) async fn within<T>(
    timeout: Duration,
    what: impl std::fmt::Display,
    request: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    tokio::time::timeout(timeout, request)
        .await
        .unwrap_or_else(|_| Err(self::timeout(what)))
}

/// `err` reworded as "timed out after `after` `during`" when it is a timeout: a read
/// timeout surfaces as "Resource temporarily unavailable (os error 11)", which does not
/// say what happened.
pub(crate) fn timed_out(err: RedisError, after: Duration, during: &str) -> RedisError {
    if err.is_timeout() {
        timeout(format_args!("after {after:?} {during}"))
    } else {
        err
    }
}

/// Whether `err` leaves the connection unusable (as opposed to a server's answer).
pub(crate) fn is_connection_failure(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
}

/// Whether the connection that got `err` should be given up: it failed, or its server
/// answered `READONLY` (a replica now: a failover demoted it). A write script that
/// met `READONLY` answers with that code too.
pub(crate) fn is_stale(err: &RedisError) -> bool {
    is_connection_failure(err) || is_read_only(err)
}

/// Whether `err` says the request never reached a master: the connection had been
/// closed (not a timeout: a request that timed out may have run), or the server is a
/// replica now.
pub(crate) fn went_away(err: &RedisError) -> bool {
    (err.is_connection_dropped() && !err.is_timeout()) || is_read_only(err)
}

/// Whether `err` is a `READONLY` reply.
pub(crate) fn is_read_only(err: &RedisError) -> bool {
    err.code() == Some("READONLY")
        || err
            .detail()
            .is_some_and(|detail| detail.contains("READONLY"))
}

/// How many replies the connection handshake awaits (`HELLO` or `AUTH`, `SELECT`):
/// each is given this share of the connect timeout, so the handshake as a whole stays
/// within it against a stalled server.
pub(crate) fn setup_replies(client: &redis::Client) -> u32 {
    let settings = client.get_connection_info().redis_settings();
    let hello_or_auth = settings.protocol().supports_resp3() || settings.password().is_some();
    (u32::from(hello_or_auth) + u32::from(settings.db() != 0)).max(1)
}

/// `info` without the two `CLIENT SETINFO` commands the `redis` crate sends after
/// connecting. Each reply of that handshake is awaited for the whole remaining connect
/// timeout, so against a stalled server every extra command adds one more timeout
/// (two setup commands: a connect took twice the connect timeout).
pub(crate) fn quiet(info: &ConnectionInfo) -> ConnectionInfo {
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    info.clone().set_redis_settings(settings)
}

/// A client for the server at `host:port`, with `info`'s settings (credentials,
/// database, TLS, protocol): a cluster's master, the master a Sentinel names.
pub(crate) fn client_at(
    info: &ConnectionInfo,
    host: &str,
    port: u16,
) -> RedisResult<redis::Client> {
    let mut addr = info.addr().clone();
    match &mut addr {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            host.clone_into(h);
            *p = port;
        }
        _ => addr = ConnectionAddr::Tcp(host.to_owned(), port),
    }
    redis::Client::open(info.clone().set_addr(addr))
}

/// One server: the one given, or the master the Sentinels name now.
#[derive(Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per backend; its size does not matter"
)]
pub(crate) enum Node {
    Server(redis::Client),
    /// Asked of the Sentinels when no master is known, and again after [`forget`].
    ///
    /// [`forget`]: Self::forget
    Sentinel(Arc<Master>),
}

impl Node {
    /// The server's client, the Sentinels asked within `budget` if no master is known.
    pub(crate) fn client(&self, budget: Duration) -> RedisResult<redis::Client> {
        match self {
            Self::Server(client) => Ok(client.clone()),
            Self::Sentinel(master) => master.client(budget),
        }
    }

    /// The async form of [`client`](Self::client).
    pub(crate) async fn client_async(&self, budget: Duration) -> RedisResult<redis::Client> {
        match self {
            Self::Server(client) => Ok(client.clone()),
            Self::Sentinel(master) => master.client_async(budget).await,
        }
    }

    /// The server may have gone (it failed, or was demoted): with Sentinel, the next
    /// connection asks for the master again.
    pub(crate) fn forget(&self) {
        if let Self::Sentinel(master) = self {
            master.forget();
        }
    }
}

/// The data client: one server (given, or named by the Sentinels), or a cluster.
#[derive(Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per backend; its size does not matter"
)]
pub(crate) enum Client {
    Node(Node),
    Cluster(redis::cluster::ClusterClient),
}

impl Client {
    /// See [`Node::forget`]; nothing on a cluster (its client follows by itself).
    pub(crate) fn forget(&self) {
        if let Self::Node(node) = self {
            node.forget();
        }
    }
}

/// An async connection: to a server (reconnecting by itself), or to a cluster.
#[derive(Clone)]
pub(crate) enum AsyncConnection {
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
