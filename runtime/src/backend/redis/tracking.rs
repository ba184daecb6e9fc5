//! The near cache's invalidation connection: one RESP3 connection per backend with
//! `CLIENT TRACKING on BCAST` (for the configured prefixes), on which the server pushes
//! an `invalidate` message for every key written, deleted, expired or evicted, whoever
//! wrote it.
//!
//! Broadcasting mode makes the server track prefixes rather than the keys each
//! connection read, so the data connections (the blocking pool, the async connection)
//! need no setup and a new invalidation connection needs nothing re-established on
//! them: the near tier is coherent exactly while this one connection is live with
//! tracking on.
//!
//! On Redis Cluster, one such connection per master (the masters listed by `CLUSTER
//! SLOTS`), all of which must be live; the list is read again at every heartbeat, and a
//! change (a failover, a master added or removed) counts as a break: everything is
//! dropped and tracking turned on again on the new masters. A write on a newly promoted
//! master can therefore go unseen until the next heartbeat finds it.
//!
//! The connection runs on its own thread (a current-thread Tokio runtime), so blocking
//! and async callers share it. Whenever it breaks (the server closed it, `CLIENT KILL`,
//! a restart, or a `PING` every [`HEARTBEAT`] unanswered within the response timeout)
//! the near tier is flushed and bypassed, and the thread reconnects (back-off from
//! 50 ms to 2 s); copies are kept again only once the server confirmed tracking on
//! the new connection. The thread ends within a heartbeat after the backend is dropped.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ProtocolVersion, PushInfo, PushKind, RedisResult, Value,
};
use tokio::sync::Notify;

use super::near::Near;

/// How often the invalidation connection is checked: a connection that stopped
/// answering without closing (a network partition) is found out within this plus the
/// response timeout, the longest a lost invalidation can go unnoticed.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(500);
use super::link::MAX_BACKOFF;

/// Where the invalidation connections go.
pub(crate) enum Target {
    /// One server.
    Single(redis::Client),
    /// Every master of the cluster this node belongs to.
    Cluster(redis::Client),
}

/// Where and how the invalidation connections connect.
pub(crate) struct Settings {
    pub(crate) target: Target,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
}

/// Starts the thread that keeps `near` coherent; it ends soon after `near` is dropped.
/// Without a thread the near tier simply never goes live (every read goes to Redis).
pub(crate) fn start(near: &Arc<Near>, settings: Settings) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::warn!(error = %err, "cannot start the near cache's runtime; it stays off");
            return;
        }
    };
    let weak = Arc::downgrade(near);
    let spawned = thread::Builder::new()
        .name("cache-memoize-near".into())
        .spawn(move || runtime.block_on(track_until_dropped(weak, settings)));
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start the near cache's thread; it stays off");
    }
}

async fn track_until_dropped(near: Weak<Near>, settings: Settings) {
    let mut backoff = Duration::from_millis(50);
    let mut warned = false;
    loop {
        let Some(live) = near.upgrade() else { return };
        let generation = live.connecting();
        drop(live);
        let broken = Arc::new(Notify::new());
        let pushes = Pushes {
            near: near.clone(),
            generation,
            broken: Arc::clone(&broken),
        };
        match open(&settings, &near, pushes).await {
            Ok(tracked) => {
                let Some(live) = near.upgrade() else { return };
                live.went_live(generation);
                drop(live);
                tracing::debug!("near cache: tracking on; copies are served");
                backoff = Duration::from_millis(50);
                warned = false;
                if heartbeat(tracked, &settings, &near, &broken)
                    .await
                    .is_none()
                {
                    return;
                }
            }
            Err(err) if !warned && !super::link::is_connection_failure(&err) => {
                warned = true;
                tracing::warn!(error = %err, "near cache: cannot turn invalidation tracking on; reads go to Redis until it is");
            }
            Err(err) => tracing::debug!(error = %err, "near cache: still no invalidation tracking"),
        }
        let Some(live) = near.upgrade() else { return };
        live.lost(generation);
        drop(live);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The live invalidation connections, and (on a cluster) the masters they go to.
struct Tracked {
    connections: Vec<MultiplexedConnection>,
    masters: Option<BTreeSet<(String, u16)>>,
}

/// Opens the connections and turns tracking on, within the connect timeout.
async fn open(settings: &Settings, near: &Weak<Near>, pushes: Pushes) -> RedisResult<Tracked> {
    let prefixes = near
        .upgrade()
        .map(|near| near.prefixes().to_vec())
        .unwrap_or_default();
    let opening = async {
        match &settings.target {
            Target::Single(client) => Ok(Tracked {
                connections: vec![track(client, settings, &prefixes, pushes).await?],
                masters: None,
            }),
            Target::Cluster(seed) => {
                let mut probe = seed
                    .get_multiplexed_async_connection_with_config(&config(settings))
                    .await?;
                let masters = masters(&mut probe).await?;
                let mut connections = Vec::with_capacity(masters.len());
                for (host, port) in &masters {
                    let client = at(seed, host, *port)?;
                    connections.push(track(&client, settings, &prefixes, pushes.clone()).await?);
                }
                Ok(Tracked {
                    connections,
                    masters: Some(masters),
                })
            }
        }
    };
    tokio::time::timeout(settings.connect_timeout, opening)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

fn config(settings: &Settings) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.response_timeout))
}

/// One connection to `client`'s server, its pushes to `pushes`, with tracking on.
async fn track(
    client: &redis::Client,
    settings: &Settings,
    prefixes: &[String],
    pushes: Pushes,
) -> RedisResult<MultiplexedConnection> {
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config(settings).set_push_sender(pushes))
        .await?;
    let mut tracking = redis::cmd("CLIENT");
    tracking.arg("TRACKING").arg("ON").arg("BCAST");
    for prefix in prefixes {
        tracking.arg("PREFIX").arg(prefix);
    }
    tracking.query_async::<()>(&mut conn).await?;
    Ok(conn)
}

/// The cluster's masters (host, port), from `CLUSTER SLOTS`.
async fn masters(conn: &mut MultiplexedConnection) -> RedisResult<BTreeSet<(String, u16)>> {
    let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut masters = BTreeSet::new();
    if let Value::Array(ranges) = slots {
        for range in ranges {
            let Value::Array(fields) = range else {
                continue;
            };
            let Some(Value::Array(master)) = fields.get(2) else {
                continue;
            };
            let host = match master.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => continue,
            };
            if let Some(Value::Int(port)) = master.get(1) {
                masters.insert((host, u16::try_from(*port).unwrap_or_default()));
            }
        }
    }
    if masters.is_empty() {
        return Err(redis::RedisError::from(std::io::Error::other(
            "near cache: CLUSTER SLOTS lists no master",
        )));
    }
    Ok(masters)
}

/// `seed`'s settings (credentials, TLS, RESP3) for the node at `host:port`.
fn at(seed: &redis::Client, host: &str, port: u16) -> RedisResult<redis::Client> {
    let info = seed.get_connection_info().clone();
    let mut addr = info.addr().clone();
    match &mut addr {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            host.clone_into(h);
            *p = port;
        }
        _ => {
            return Err(redis::RedisError::from(std::io::Error::other(
                "near cache: a cluster node address that is not TCP",
            )));
        }
    }
    redis::Client::open(info.set_addr(addr))
}

fn timed_out() -> redis::RedisError {
    super::link::timeout("turning the near cache's invalidation tracking on")
}

/// Pings the connections every [`HEARTBEAT`] (and on a cluster, checks that the
/// masters are still the ones tracked) until one breaks (`Some`) or the near tier is
/// dropped (`None`).
async fn heartbeat(
    mut tracked: Tracked,
    settings: &Settings,
    near: &Weak<Near>,
    broken: &Notify,
) -> Option<()> {
    loop {
        tokio::select! {
            () = broken.notified() => return Some(()),
            () = tokio::time::sleep(HEARTBEAT) => {}
        }
        near.upgrade()?;
        let check = async {
            for conn in &mut tracked.connections {
                redis::cmd("PING").query_async::<()>(conn).await?;
            }
            if let (Some(tracked_masters), Some(conn)) =
                (&tracked.masters, tracked.connections.first_mut())
            {
                if masters(conn).await? != *tracked_masters {
                    return Err(redis::RedisError::from(std::io::Error::other(
                        "the cluster's masters changed",
                    )));
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        match tokio::time::timeout(settings.response_timeout, check).await {
            Ok(Ok(())) => near.upgrade()?.check_clocks(),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "near cache: invalidation connection lost");
                return Some(());
            }
            Err(_) => {
                tracing::debug!("near cache: invalidation connection stopped answering");
                return Some(());
            }
        }
    }
}

/// Hands one connection's pushes to the near tier.
#[derive(Clone)]
struct Pushes {
    near: Weak<Near>,
    generation: u64,
    broken: Arc<Notify>,
}

impl redis::aio::AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        let near = self.near.upgrade().ok_or(redis::aio::SendError)?;
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys)) => {
                    let keys: Vec<&[u8]> = keys
                        .iter()
                        .filter_map(|key| match key {
                            Value::BulkString(key) => Some(key.as_slice()),
                            _ => None,
                        })
                        .collect();
                    near.invalidated(Some(&keys));
                }
                // A null: the whole keyspace (`FLUSHALL`, `FLUSHDB`); or a form not
                // understood, treated the same way.
                _ => near.invalidated(None),
            },
            PushKind::Disconnection => {
                near.lost(self.generation);
                self.broken.notify_one();
            }
            _ => {}
        }
        Ok(())
    }
}

/// `client` speaking RESP3, which carries the pushes.
pub(crate) fn resp3(client: &redis::Client) -> RedisResult<redis::Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}
