//! The lock wake-up subscriber: one connection per backend, on the links' background
//! skeleton (`link/background.rs`, shared with the near cache), kept subscribed to the
//! release channels of the locks the [`Hub`] is asked to watch (see `mod.rs`).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{RedisResult, Value};
use tokio::sync::Notify;

use super::{Hub, Plan, polling, release_channel};
use crate::backend::redis::link::background::{self, Ended, Pushes, Session};
use crate::backend::redis::link::{self, Node, Timeouts};

/// How long the subscriber looks for a moved slot's master before subscribing anyway:
/// while the cluster's nodes learn of a failover, and, after a master died, until the
/// cluster has promoted its replica (`cluster-node-timeout`, 15 s by default, then an
/// election).
const LOCATE_FOR: Duration = Duration::from_secs(30);
/// The first pause between two looks, doubled each time up to [`LOCATE_MAX_PAUSE`].
const LOCATE_FIRST_PAUSE: Duration = Duration::from_millis(10);
const LOCATE_MAX_PAUSE: Duration = Duration::from_millis(250);

/// A hub fed by a subscriber thread connecting to `node` (on a cluster, the first
/// node: the fallback of sharded pub/sub, whose settings `cluster` makes); the thread
/// ends soon after the hub is dropped. Without a thread (it cannot start), a polling
/// hub.
pub(crate) fn start(node: Node, cluster: Option<ClusterSettings>, timeouts: Timeouts) -> Arc<Hub> {
    let signal = Arc::new(Notify::new());
    let hub = Arc::new(Hub::new(Some(Arc::clone(&signal))));
    let subscriber = Subscriber {
        hub: Arc::downgrade(&hub),
        signal,
        cluster,
        timeouts,
    };
    if background::spawn(node, timeouts, subscriber) {
        hub
    } else {
        polling()
    }
}

/// Makes a cluster client's settings, for sharded pub/sub.
pub(crate) type ClusterSettings = Box<dyn Fn() -> ClusterClientBuilder + Send>;

struct Subscriber {
    hub: Weak<Hub>,
    /// Notified when the locks waited on change, and when the hub drops.
    signal: Arc<Notify>,
    /// On a cluster (until it turns out to have no sharded pub/sub).
    cluster: Option<ClusterSettings>,
    timeouts: Timeouts,
}

impl Session for Subscriber {
    const WHAT: &'static str = "lock wake-up subscriber";

    /// Connect on the first wait only: a process that never waits holds no connection.
    /// While disconnected, locks no longer waited on are forgotten here.
    async fn wanted(&mut self) -> bool {
        loop {
            // The hub is not held across the wait: its drop is what ends it.
            match self.hub.upgrade().map(|hub| hub.wanted()) {
                None => return false,
                Some(true) => return true,
                Some(false) => self.signal.notified().await,
            }
        }
    }

    async fn serve(&mut self, server: redis::Client) -> Ended {
        let what = "connecting (lock wake-up subscriber)";
        match link::within(self.timeouts.connect, what, self.connect(server)).await {
            Ok(conn) => serve(conn, self.timeouts.response, &self.hub, &self.signal).await,
            Err(err) => failed(err, false),
        }
    }

    fn ended(&mut self, ended: &Ended) {
        if let Ended::Again = ended {
            tracing::debug!("no sharded pub/sub on this cluster; wake-ups use classic pub/sub");
            self.cluster = None;
        }
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        // A cluster node failed us (a dead master, a slot without a master yet): the
        // next subscriptions are located, and their confirmation makes the waiters
        // retry. Otherwise a lost connection counts as a release.
        let node_lost = self.cluster.is_some() && matches!(ended, Ended::Failed { .. });
        hub.on_lost(None, node_lost);
    }
}

/// How a failure `err` ends the connection: with a move to classic pub/sub if the
/// cluster has no sharded pub/sub ([`Ended::Again`]).
fn failed(err: redis::RedisError, served: bool) -> Ended {
    if lacks_sharded_pubsub(&err) {
        Ended::Again
    } else {
        Ended::Failed { err, served }
    }
}

impl Subscriber {
    async fn connect(&self, server: redis::Client) -> RedisResult<Connection> {
        match &self.cluster {
            Some(builder) => {
                let client = builder()
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(Pushes::new(self.hub.clone(), 0))
                    .build()?;
                client.get_async_connection().await.map(Connection::Sharded)
            }
            None => {
                let (sink, messages) = server.get_async_pubsub().await?.split();
                Ok(Connection::Classic { sink, messages })
            }
        }
    }
}

/// The subscriber connection: classic pub/sub, or sharded pub/sub on a cluster.
enum Connection {
    Classic {
        sink: PubSubSink,
        messages: PubSubStream,
    },
    /// Messages and confirmations arrive through the push sender ([`Hub::pushed`]).
    Sharded(ClusterConnection),
}

/// Whether `err` says the server has no sharded pub/sub (Redis < 7), or no RESP3
/// (Redis < 6, which has no sharded pub/sub either).
fn lacks_sharded_pubsub(err: &redis::RedisError) -> bool {
    err.code().is_some_and(|code| code.starts_with("ERR"))
        && err
            .detail()
            .is_some_and(|detail| detail.contains("unknown command"))
}

/// Keeps the connection's subscriptions in step with the hub until it fails or the hub
/// is dropped.
async fn serve(
    mut conn: Connection,
    response_timeout: Duration,
    hub: &Weak<Hub>,
    signal: &Notify,
) -> Ended {
    loop {
        let Some(live) = hub.upgrade() else {
            return Ended::Dropped;
        };
        let plan = live.plan(Instant::now());
        drop(live);
        if let Err(lost) = apply(&mut conn, &plan, response_timeout, hub).await {
            return lost;
        }
        let linger_end = plan
            .next
            .map(|at| tokio::time::sleep_until(tokio::time::Instant::from_std(at)));
        let idle = async {
            match linger_end {
                Some(end) => end.await,
                None => std::future::pending().await,
            }
        };
        match &mut conn {
            Connection::Classic { messages, .. } => {
                tokio::select! {
                    () = signal.notified() => {}
                    () = idle => {}
                    message = messages.next() => match (message, hub.upgrade()) {
                        (Some(message), Some(hub)) => hub.on_message(message.get_channel_name().as_bytes(), message.get_payload_bytes()),
                        (None, _) => return failed(std::io::Error::from(std::io::ErrorKind::ConnectionAborted).into(), true),
                        (Some(_), None) => return Ended::Dropped,
                    },
                }
            }
            Connection::Sharded(_) => {
                tokio::select! {
                    () = signal.notified() => {}
                    () = idle => {}
                }
            }
        }
    }
}

/// Sends `command` (`subscribe` or `unsubscribe`) for `channels`.
async fn send(
    conn: &mut Connection,
    subscribe: bool,
    channels: &[String],
    timeout: Duration,
) -> RedisResult<()> {
    let what = if subscribe {
        "subscribing (lock wake-up subscriber)"
    } else {
        "unsubscribing (lock wake-up subscriber)"
    };
    match conn {
        Connection::Classic { sink, .. } if subscribe => {
            link::within(timeout, what, sink.subscribe(channels)).await
        }
        Connection::Classic { sink, .. } => {
            link::within(timeout, what, sink.unsubscribe(channels)).await
        }
        // One command per channel: channels of different slots live on different nodes.
        Connection::Sharded(cluster) => {
            for channel in channels {
                if subscribe {
                    link::within(timeout, what, cluster.ssubscribe(channel)).await?;
                } else {
                    link::within(timeout, what, cluster.sunsubscribe(channel)).await?;
                }
            }
            Ok(())
        }
    }
}

/// Brings the client's slot map up to date for `channels`, whose slots moved (or whose
/// node's connection was lost), so the `SSUBSCRIBE` that follows goes to each slot's
/// master now. `SSUBSCRIBE` alone would not do after a failover: the demoted master,
/// now a replica, accepts it (and hears the shard only once the new master knows it as
/// its replica); and after a master died, the client's slot map still names the dead
/// node until the cluster has promoted a replica. So: ask the node the client would
/// route to whether it is a master serving the slot ([`serves`]); while it is not
/// (a replica, a master the slot left), a keyed read (`EXISTS` of the channel's name,
/// which shares the lock's slot) sent there is answered `MOVED`, which makes the client
/// refresh its slot map; while no node answers for the slot (dead, or no master yet),
/// the same read makes the client reconnect or refresh its slot map from the other
/// nodes. The node it refreshes from may not have heard of the failover yet, so this
/// is repeated, with growing pauses, for up to [`LOCATE_FOR`]. Best effort: after that
/// the subscription is sent anyway. Returns whether the client's slot map was up to
/// date for every channel (the slot's master at the first look).
async fn locate(cluster: &mut ClusterConnection, channels: &[String], timeout: Duration) -> bool {
    let mut up_to_date = true;
    let deadline = tokio::time::Instant::now() + LOCATE_FOR;
    for channel in channels {
        let master = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
            channel.as_bytes(),
            SlotAddr::Master,
        )));
        let mut pause = LOCATE_FIRST_PAUSE;
        let mut looks = 0_u32;
        loop {
            looks += 1;
            let serves = tokio::time::timeout(timeout, serves(cluster, &master, channel)).await;
            let not_yet = match serves {
                Ok(Ok(true)) => {
                    up_to_date &= looks == 1;
                    tracing::debug!(channel = %channel, looks, "lock wake-up subscription moved with its slot; subscribing on its master now");
                    break;
                }
                Ok(Ok(false)) => {
                    "the node the client routes to is not the slot's master".to_owned()
                }
                Ok(Err(err)) => err.to_string(),
                Err(_) => "timed out".to_owned(),
            };
            up_to_date = false;
            if tokio::time::Instant::now() + pause >= deadline {
                tracing::debug!(channel = %channel, looks, last = %not_yet, "found no master for a moved lock's slot; subscribing anyway");
                break;
            }
            let mut probe = redis::cmd("EXISTS");
            probe.arg(channel);
            let _ = tokio::time::timeout(timeout, probe.query_async::<Value>(cluster)).await;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LOCATE_MAX_PAUSE);
        }
    }
    up_to_date
}

/// Whether the node the client routes `channel` to (`master`) says it is a master
/// serving the channel's slot (`CLUSTER NODES`, its own line). `ROLE` would not do:
/// while the client has no connection to the node its slot map names (a dead master),
/// it sends the command to another node, a master of other slots.
async fn serves(
    cluster: &mut ClusterConnection,
    master: &RoutingInfo,
    channel: &str,
) -> RedisResult<bool> {
    let mut keyslot = redis::cmd("CLUSTER");
    keyslot.arg("KEYSLOT").arg(channel);
    let slot: u16 = redis::from_redis_value(cluster.route_command(keyslot, master.clone()).await?)?;
    let mut nodes = redis::cmd("CLUSTER");
    nodes.arg("NODES");
    let nodes: String =
        redis::from_redis_value(cluster.route_command(nodes, master.clone()).await?)?;
    Ok(myself_serves(&nodes, slot))
}

/// Whether the `myself` line of a `CLUSTER NODES` reply is a master serving `slot`
/// (`<id> <address> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges>...`).
fn myself_serves(nodes: &str, slot: u16) -> bool {
    nodes.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(2).copied().unwrap_or_default();
        let is_master = flags.split(',').any(|f| f == "myself")
            && flags.split(',').any(|f| f == "master");
        is_master
            && fields.iter().skip(8).any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(from), Ok(to)) if (from..=to).contains(&slot))
            })
    })
}

/// Sends the plan's subscriptions and unsubscriptions.
async fn apply(
    conn: &mut Connection,
    plan: &Plan,
    response_timeout: Duration,
    hub: &Weak<Hub>,
) -> Result<(), Ended> {
    if !plan.subscribe.is_empty() {
        // (No let chains: the crate's rust-version is 1.85.)
        if let Connection::Sharded(cluster) = conn {
            if !plan.moved.is_empty() && locate(cluster, &plan.moved, response_timeout).await {
                let Some(live) = hub.upgrade() else {
                    return Err(Ended::Dropped);
                };
                live.located(plan.moves);
            }
        }
        let channels: Vec<String> = plan.subscribe.iter().map(|k| release_channel(k)).collect();
        let sent = send(conn, true, &channels, response_timeout).await;
        let Some(live) = hub.upgrade() else {
            return Err(Ended::Dropped);
        };
        match sent {
            Ok(()) => {
                for key in &plan.subscribe {
                    live.on_subscribed(key, false);
                }
            }
            Err(err) => {
                live.not_requested(&plan.subscribe);
                return Err(failed(err, true));
            }
        }
    }
    if !plan.unsubscribe.is_empty() {
        // On a cluster, each `SUNSUBSCRIBE` comes back as a push, as the server's own
        // unsubscription after a slot move does: noted first (the push may come before
        // `send` returns), so that it is not taken for a move.
        if let Connection::Sharded(_) = conn {
            let Some(live) = hub.upgrade() else {
                return Err(Ended::Dropped);
            };
            live.unsubscribing(&plan.unsubscribe);
        }
        send(conn, false, &plan.unsubscribe, response_timeout)
            .await
            .map_err(|err| failed(err, true))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_master_serving_the_slot_counts_as_located() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 5462
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5463-10922 [5461->-a1]
c3 127.0.0.1:7002@17002 slave b2 0 0 2 connected
";
        assert!(myself_serves(nodes, 0));
        assert!(myself_serves(nodes, 5460));
        assert!(myself_serves(nodes, 5462));
        assert!(!myself_serves(nodes, 5461), "not its slot");
        assert!(!myself_serves(nodes, 6000), "another master's slot");
        let replica = nodes
            .replace("myself,master", "master")
            .replace("slave b2", "myself,slave b2");
        assert!(!myself_serves(&replica, 6000), "a replica serves nothing");
    }
}
