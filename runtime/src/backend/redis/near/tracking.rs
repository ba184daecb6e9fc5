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
//! With Sentinel, the connection goes to the master the Sentinels name, and the
//! heartbeat asks `ROLE` instead of `PING`: a master demoted by a failover counts as a
//! break, and the next connection asks the Sentinels for the new master.
//!
//! The connection runs on the links' background skeleton (`link/background.rs`, shared
//! with the lock wake-ups). Whenever it breaks (the server closed it, `CLIENT KILL`, a
//! restart, a failover, or a heartbeat every [`HEARTBEAT`] unanswered within the
//! response timeout) the near tier is flushed and bypassed, and the skeleton reconnects
//! after its back-off; copies are kept again only once the server confirmed tracking on
//! the new connection. The thread ends within a heartbeat after the backend is dropped.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, RedisError, RedisResult, Value,
};
use tokio::sync::Notify;

use super::Tier;
use crate::backend::redis::link::background::{self, Ended, Listener, Pushes, Session};
use crate::backend::redis::link::{self, Node, Timeouts, is_connection_failure, sentinel};

/// How often the invalidation connection is checked: a connection that stopped
/// answering without closing (a network partition) is found out within this plus the
/// response timeout, the longest a lost invalidation can go unnoticed.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(500);

/// Starts the thread that keeps `tier` coherent, tracking on `node` (on a `cluster`,
/// on every master it lists); it ends soon after `tier` is dropped. Without a thread
/// the near tier simply never goes live (every read goes to Redis).
pub(crate) fn start(tier: &Arc<Tier>, node: Node, cluster: bool, timeouts: Timeouts) {
    let tracker = Tracker {
        tier: Arc::downgrade(tier),
        sentinel: matches!(node, Node::Sentinel(_)),
        cluster,
        timeouts,
        generation: 0,
        warned: false,
    };
    background::spawn(node, timeouts, tracker);
}

/// The near tier's side of the invalidation connection.
struct Tracker {
    tier: Weak<Tier>,
    /// Whether the server is the master the Sentinels name (checked with `ROLE`).
    sentinel: bool,
    cluster: bool,
    timeouts: Timeouts,
    /// The connection being served (see [`Tier::connecting`]).
    generation: u64,
    /// Whether a failure to turn tracking on was reported since it last was on.
    warned: bool,
}

impl Session for Tracker {
    const WHAT: &'static str = "near cache's invalidation connection";

    async fn serve(&mut self, server: redis::Client) -> Ended {
        let Some(tier) = self.tier.upgrade() else {
            return Ended::Dropped;
        };
        self.generation = tier.connecting();
        let prefixes = tier.prefixes().to_vec();
        drop(tier);
        let pushes = Pushes::new(self.tier.clone(), self.generation);
        let broken = pushes.broken();
        let opening = self.open(server, &prefixes, pushes);
        let what = "turning the near cache's invalidation tracking on";
        let tracked = match link::within(self.timeouts.connect, what, opening).await {
            Ok(tracked) => tracked,
            Err(err) => return Ended::Failed { err, served: false },
        };
        let Some(tier) = self.tier.upgrade() else {
            return Ended::Dropped;
        };
        tier.went_live(self.generation);
        drop(tier);
        tracing::debug!("near cache: tracking on; copies are served");
        self.warned = false;
        match self.heartbeat(tracked, &broken).await {
            Some(err) => Ended::Failed { err, served: true },
            None => Ended::Dropped,
        }
    }

    fn ended(&mut self, ended: &Ended) {
        if let Some(tier) = self.tier.upgrade() {
            tier.lost(self.generation);
        }
        // (No let chains: the crate's rust-version is 1.85.)
        if let Ended::Failed { err, served: false } = ended {
            if !self.warned && !is_connection_failure(err) {
                self.warned = true;
                tracing::warn!(error = %err, "near cache: cannot turn invalidation tracking on; reads go to Redis until it is");
            }
        }
    }
}

/// The live invalidation connections, and (on a cluster) the masters they go to.
struct Tracked {
    connections: Vec<MultiplexedConnection>,
    masters: Option<BTreeSet<(String, u16)>>,
}

/// Opens the connections to `server` (on a cluster, to every master it lists) and
/// turns tracking on.
impl Tracker {
    async fn open(
        &self,
        server: redis::Client,
        prefixes: &[String],
        pushes: Pushes,
    ) -> RedisResult<Tracked> {
        let server = resp3(&server)?;
        if !self.cluster {
            return Ok(Tracked {
                connections: vec![track(&server, self.timeouts, prefixes, pushes).await?],
                masters: None,
            });
        }
        let mut probe = server
            .get_multiplexed_async_connection_with_config(&config(self.timeouts))
            .await?;
        let masters = masters(&mut probe).await?;
        let mut connections = Vec::with_capacity(masters.len());
        for (host, port) in &masters {
            let client = link::client_at(server.get_connection_info(), host, *port)?;
            connections.push(track(&client, self.timeouts, prefixes, pushes.clone()).await?);
        }
        Ok(Tracked {
            connections,
            masters: Some(masters),
        })
    }

    /// Checks the connections every [`HEARTBEAT`] (`PING`; with Sentinel, `ROLE`: still a
    /// master; on a cluster, also that the masters are still the ones tracked) until one
    /// breaks (`Some`) or the near tier is dropped (`None`).
    async fn heartbeat(&self, mut tracked: Tracked, broken: &Notify) -> Option<RedisError> {
        loop {
            tokio::select! {
                () = broken.notified() => return Some(lost("the invalidation connection was closed")),
                () = tokio::time::sleep(HEARTBEAT) => {}
            }
            self.tier.upgrade()?;
            let check = async {
                for conn in &mut tracked.connections {
                    if !self.sentinel {
                        redis::cmd("PING").query_async::<()>(conn).await?;
                    } else if !sentinel::is_master(
                        &redis::cmd("ROLE").query_async::<Vec<Value>>(conn).await?,
                    ) {
                        return Err(lost("the server is no longer the master"));
                    }
                }
                if let (Some(tracked_masters), Some(conn)) =
                    (&tracked.masters, tracked.connections.first_mut())
                {
                    if masters(conn).await? != *tracked_masters {
                        return Err(lost("the cluster's masters changed"));
                    }
                }
                Ok(())
            };
            let what = "checking the near cache's invalidation connection";
            match link::within(self.timeouts.response, what, check).await {
                Ok(()) => self.tier.upgrade()?.check_clocks(),
                Err(err) => return Some(err),
            }
        }
    }
}

fn config(timeouts: Timeouts) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeouts.connect))
        .set_response_timeout(Some(timeouts.response))
}

/// One connection to `client`'s server, its pushes to `pushes`, with tracking on.
async fn track(
    client: &redis::Client,
    timeouts: Timeouts,
    prefixes: &[String],
    pushes: Pushes,
) -> RedisResult<MultiplexedConnection> {
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config(timeouts).set_push_sender(pushes))
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

fn lost(why: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        why,
    ))
}

impl Listener for Tier {
    fn on_push(&self, push: &PushInfo, generation: u64) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    let keys: Vec<&[u8]> = keys
                        .iter()
                        .filter_map(|key| match key {
                            Value::BulkString(key) => Some(key.as_slice()),
                            _ => None,
                        })
                        .collect();
                    self.invalidated(Some(&keys));
                }
                // A null: the whole keyspace (`FLUSHALL`, `FLUSHDB`); or a form not
                // understood, treated the same way.
                _ => self.invalidated(None),
            },
            PushKind::Disconnection => self.lost(generation),
            _ => {}
        }
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
