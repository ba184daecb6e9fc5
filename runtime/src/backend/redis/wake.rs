//! Wake-ups for lock waiters: a subscription to a lock's release channel only while
//! someone in this process waits on that lock, on one subscriber connection per backend.
//!
//! - Per lock, reference-counted: the first waiter on a lock asks for its channel, the
//!   last one to leave lets it go (after [`LINGER`], which covers the waiter's retry
//!   between two pauses). A process waiting on nothing is subscribed to nothing, so
//!   other processes' releases cost it (and Redis) nothing.
//! - No release is missed: a subscription only counts for attempts made after it was
//!   confirmed. A waiter whose attempt came first returns as soon as the subscription
//!   is confirmed, and retries: that retry is the check that nothing was released in
//!   between. A lost connection to a single server counts as a release; a subscription
//!   the server drops because its slot moved, or whose cluster node was lost, is asked
//!   for again at once (below).
//! - On Redis Cluster 7+, sharded pub/sub (`SSUBSCRIBE`, routed to the node owning the
//!   lock's slot); on older clusters (`SSUBSCRIBE` unknown) and on a single server,
//!   classic `SUBSCRIBE`. The release scripts publish accordingly.
//! - Subscriptions follow the slot. When a slot leaves a node (resharded by `SETSLOT
//!   NODE`, or a `CLUSTER FAILOVER` that demotes its master), the node unsubscribes us
//!   (an `sunsubscribe` push; Redis 7.0.15 sends it in both cases). We subscribe again
//!   on the slot's master now (see [`locate`]: a demoted master, now a replica, would
//!   accept the `SSUBSCRIBE` itself, and hear the shard only once the new master knows
//!   it); until one subscription finds the client's slot map up to date, every new one
//!   (another lock, or this one waited on again) is located first too. Waiters are not
//!   woken by the loss: the new confirmation makes those that attempted before it retry
//!   (re-subscribe, then re-check the lock, then wait), as on the first subscription. A
//!   confirmation the client re-sends by itself (reconnection, its own slot map
//!   refresh) also makes waiters retry.
//! - A cluster master that dies sends nothing: the client loses its connection to it (a
//!   `Disconnection` push), and its slot map names the dead node until the cluster has
//!   promoted a replica (after `cluster-node-timeout`). Every subscription is then asked
//!   for again as after a move: located first (the node the client routes to must say,
//!   in `CLUSTER NODES`, that it is a master serving the slot; until it does, for up to
//!   [`LOCATE_FOR`]), and waiters retry on the new confirmation, not at the loss (a
//!   retry then would find no master). The same after the subscriber's own connection
//!   to a cluster failed.
//! - With Sentinel, the subscriber connects to the master the Sentinels name, and asks
//!   again after its connection failed (the old master died): a failover costs the
//!   waiters one retry, as any disconnection does.
//! - The subscriber runs on its own thread (its own current-thread Tokio runtime), so
//!   blocking and async callers share it; it connects on the first wait, and ends soon
//!   after the backend is dropped. While it is disconnected, waiters poll every `retry`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::Notify;

use super::commands::release_channel;
use super::scripts::RELEASE_CHANNEL;

/// How long a lock's subscription outlives its last waiter: long enough for a waiter's
/// retry between two pauses, so a waiter does not subscribe anew for every pause.
pub(crate) const LINGER: Duration = Duration::from_secs(1);
use super::link::MAX_BACKOFF;
/// How long the subscriber looks for a moved slot's master before subscribing anyway:
/// while the cluster's nodes learn of a failover, and, after a master died, until the
/// cluster has promoted its replica (`cluster-node-timeout`, 15 s by default, then an
/// election).
const LOCATE_FOR: Duration = Duration::from_secs(30);
/// The first pause between two looks, doubled each time up to [`LOCATE_MAX_PAUSE`].
const LOCATE_FIRST_PAUSE: Duration = Duration::from_millis(10);
const LOCATE_MAX_PAUSE: Duration = Duration::from_millis(250);

/// Where classic pub/sub subscribes.
#[allow(
    clippy::large_enum_variant,
    reason = "one per backend; its size does not matter"
)]
pub(crate) enum Target {
    /// One server, or the first node of a cluster (the fallback).
    Server(redis::Client),
    /// The master the Sentinels name, asked again after the connection to it failed.
    Sentinel(Arc<super::sentinel::Master>),
}

/// Where the subscriber connects.
pub(crate) struct Servers {
    pub(crate) classic: Target,
    /// On a cluster: makes the client settings, for sharded pub/sub.
    pub(crate) cluster: Option<Box<dyn Fn() -> ClusterClientBuilder + Send>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
}

/// The locks waited on, their subscriptions and releases, and the waiters to wake.
pub(crate) struct Hub {
    state: Mutex<State>,
    released: Condvar,
    released_async: Notify,
    /// Wakes the subscriber when the locks waited on change (and when the hub drops);
    /// `None` when wake-ups are off.
    subscriber: Option<Arc<Notify>>,
    /// Release messages received, for the curious (tests, the scale harness).
    messages: AtomicU64,
}

#[derive(Default)]
struct State {
    /// By lock key: the locks waited on now, or within the last [`LINGER`].
    locks: HashMap<String, Watched>,
    /// Subscriptions the server dropped because their slot moved, and connections to a
    /// cluster node lost, so far: while this is ahead of `located`, the client's slot
    /// map may be out of date, and every new subscription first looks for its slot's
    /// master ([`locate`]).
    moves: u64,
    /// `moves` when a subscription last found the client's slot map up to date.
    located: u64,
}

struct Watched {
    waiters: usize,
    /// When the last waiter left (meaningful when `waiters == 0`).
    idle_since: Instant,
    /// Whether the subscriber has sent (or is sending) the subscription.
    requested: bool,
    /// When the subscription was confirmed; `None` while it is not.
    live_since: Option<Instant>,
    /// When a release (or a lost connection) was last seen.
    released: Option<Instant>,
}

impl Watched {
    /// Whether a waiter whose attempt began at `attempted` should try again now.
    fn should_retry(&self, attempted: Instant) -> bool {
        self.released.is_some_and(|at| at >= attempted)
            || self.live_since.is_some_and(|since| since > attempted)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(subscriber) = &self.subscriber {
            subscriber.notify_one();
        }
    }
}

impl Hub {
    fn new(subscriber: Option<Arc<Notify>>) -> Self {
        Self {
            state: Mutex::default(),
            released: Condvar::new(),
            released_async: Notify::new(),
            subscriber,
            messages: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Release messages this hub has received since it was made.
    pub(crate) fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    /// The locks whose channel this hub is subscribed to right now.
    pub(crate) fn subscriptions(&self) -> usize {
        self.state()
            .locks
            .values()
            .filter(|w| w.live_since.is_some())
            .count()
    }

    /// Counts one more waiter on `lock_key` until the returned guard drops.
    fn watch<'a>(&'a self, lock_key: &'a str) -> Option<Watch<'a>> {
        let subscriber = self.subscriber.as_ref()?;
        let mut state = self.state();
        let watched = state
            .locks
            .entry(lock_key.to_owned())
            .or_insert_with(|| Watched {
                waiters: 0,
                idle_since: Instant::now(),
                requested: false,
                live_since: None,
                released: None,
            });
        watched.waiters += 1;
        let ask = !watched.requested;
        drop(state);
        if ask {
            subscriber.notify_one();
        }
        Some(Watch {
            hub: self,
            lock_key,
        })
    }

    fn should_retry(state: &State, lock_key: &str, attempted: Instant) -> bool {
        state
            .locks
            .get(lock_key)
            .is_some_and(|w| w.should_retry(attempted))
    }

    /// Blocks until `lock_key` may have been released after `attempted`, or for `max`.
    pub(crate) fn wait(&self, lock_key: &str, attempted: Instant, max: Duration) {
        let _watch = self.watch(lock_key);
        let state = self.state();
        let _ = self.released.wait_timeout_while(state, max, |state| {
            !Self::should_retry(state, lock_key, attempted)
        });
    }

    /// The async form of [`wait`](Self::wait).
    pub(crate) async fn wait_async(&self, lock_key: &str, attempted: Instant, max: Duration) {
        let _watch = self.watch(lock_key);
        let deadline = crate::timer::deadline_after(max);
        loop {
            let released = self.released_async.notified();
            let mut released = std::pin::pin!(released);
            // Registered before the check: a release in between still wakes us.
            released.as_mut().enable();
            if Self::should_retry(&self.state(), lock_key, attempted) {
                return;
            }
            // The crate's timer: a waiter on a runtime without a time driver waits too.
            if crate::timer::timeout_at(deadline, released).await.is_none() {
                return;
            }
        }
    }

    fn wake_all(&self) {
        self.released.notify_all();
        self.released_async.notify_waiters();
    }

    /// A release message on `channel`.
    fn on_message(&self, channel: &[u8]) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        let Some(lock_key) = channel.strip_prefix(RELEASE_CHANNEL.as_bytes()) else {
            return;
        };
        let Ok(lock_key) = std::str::from_utf8(lock_key) else {
            return;
        };
        if let Some(watched) = self.state().locks.get_mut(lock_key) {
            watched.released = Some(Instant::now());
        } else {
            return;
        }
        self.wake_all();
    }

    /// The server confirmed the subscription to `lock_key`'s channel.
    fn on_subscribed(&self, lock_key: &str) {
        let mut state = self.state();
        let Some(watched) = state.locks.get_mut(lock_key) else {
            return;
        };
        if !watched.requested || watched.live_since.is_some() {
            return;
        }
        watched.live_since = Some(Instant::now());
        drop(state);
        self.wake_all();
    }

    /// A confirmation pushed by the server: the first one, or one for a subscription
    /// the client re-sent by itself (after reconnecting to a node, or a slot map
    /// refresh), in which case a release may have been missed meanwhile: waiters that
    /// attempted before it retry.
    fn on_resubscribed(&self, lock_key: &str) {
        let mut state = self.state();
        let Some(watched) = state.locks.get_mut(lock_key) else {
            return;
        };
        if !watched.requested {
            return;
        }
        watched.live_since = Some(Instant::now());
        drop(state);
        self.wake_all();
    }

    /// Subscriptions lost (all of them, or `lock_key`'s), and asked for again.
    ///
    /// The connection lost: a release may go unseen until it is back (after a pause),
    /// so waiters retry now. One channel dropped by the server (its slot moved): it is
    /// asked for again at once on the slot's owner, and its waiters retry once that is
    /// confirmed, so they re-check the lock with the new subscription already live.
    fn on_lost(&self, lock_key: Option<&str>) {
        let now = Instant::now();
        let mut state = self.state();
        let mut lost = false;
        for (key, watched) in &mut state.locks {
            if lock_key.is_some_and(|k| k != key) || !watched.requested {
                continue;
            }
            // An unsubscription we did not ask for: the entry still wants its channel.
            watched.requested = false;
            watched.live_since = None;
            if lock_key.is_none() {
                watched.released = Some(now);
            }
            lost = true;
        }
        if lock_key.is_some() {
            // Even for a lock no longer waited on: the slot map is what is out of date.
            state.moves += 1;
        }
        drop(state);
        if lost {
            if lock_key.is_none() {
                self.wake_all();
            }
            if let Some(subscriber) = &self.subscriber {
                subscriber.notify_one();
            }
        }
    }

    /// The cluster client lost its connection to one node (a `Disconnection` push; which
    /// node is not said): that node may be a master that died, whose slots have no
    /// master until the cluster promotes a replica, and the client's slot map still
    /// names it. Every subscription is asked for again on its slot's master, located
    /// first as after a move (retrying until the cluster has one); waiters are not
    /// woken by the loss (a retry now would find no master, and fail): the new
    /// confirmation makes those that attempted before it retry, so no release in
    /// between is missed. The client also re-sends subscriptions by itself once it
    /// reconnects or refreshes its slot map; those confirmations make waiters retry too.
    fn on_node_lost(&self) {
        let mut state = self.state();
        let mut lost = false;
        for watched in state.locks.values_mut() {
            if watched.requested {
                watched.requested = false;
                watched.live_since = None;
                lost = true;
            }
        }
        state.moves += 1;
        drop(state);
        if lost && let Some(subscriber) = &self.subscriber {
            subscriber.notify_one();
        }
    }

    /// A RESP3 push from the sharded subscriber.
    fn on_push(&self, push: &PushInfo) {
        let channel = match push.data.first() {
            Some(Value::BulkString(channel)) => Some(channel.as_slice()),
            _ => None,
        };
        let lock_key = channel
            .and_then(|c| c.strip_prefix(RELEASE_CHANNEL.as_bytes()))
            .and_then(|k| std::str::from_utf8(k).ok());
        match (&push.kind, channel, lock_key) {
            (PushKind::SMessage | PushKind::Message, Some(channel), _) => self.on_message(channel),
            (PushKind::SSubscribe | PushKind::Subscribe, _, Some(lock_key)) => {
                self.on_resubscribed(lock_key);
            }
            (PushKind::SUnsubscribe | PushKind::Unsubscribe, _, Some(lock_key)) => {
                self.on_lost(Some(lock_key));
            }
            (PushKind::Disconnection, _, _) => self.on_node_lost(),
            _ => {}
        }
    }

    /// What the subscriber should do now: channels to subscribe, to unsubscribe, and
    /// when to look again (the next lingering subscription to end).
    fn plan(&self, now: Instant) -> Plan {
        let mut plan = Plan::default();
        let mut state = self.state();
        let locate = state.moves > state.located;
        plan.moves = state.moves;
        state.locks.retain(|key, watched| {
            if watched.waiters == 0 && now.duration_since(watched.idle_since) >= LINGER {
                if watched.requested {
                    plan.unsubscribe.push(release_channel(key));
                }
                return false;
            }
            if watched.waiters == 0 {
                let end = watched.idle_since + LINGER;
                plan.next = Some(plan.next.map_or(end, |next: Instant| next.min(end)));
            }
            if !watched.requested {
                watched.requested = true;
                plan.subscribe.push(key.clone());
                if locate {
                    plan.moved.push(release_channel(key));
                }
            }
            true
        });
        plan
    }

    /// The client's slot map was found up to date after `moves` moved subscriptions.
    fn located(&self, moves: u64) {
        let mut state = self.state();
        state.located = state.located.max(moves);
    }

    /// Forgets that `lock_keys` were asked for (the request failed).
    fn not_requested(&self, lock_keys: &[String]) {
        let mut state = self.state();
        for key in lock_keys {
            if let Some(watched) = state.locks.get_mut(key) {
                watched.requested = false;
                watched.live_since = None;
            }
        }
    }

    /// Whether any lock is waited on (or lingering); forgets those that no longer are
    /// (while disconnected, nobody else does).
    fn wanted(&self) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        state
            .locks
            .retain(|_, w| w.waiters > 0 || now.duration_since(w.idle_since) < LINGER);
        !state.locks.is_empty()
    }
}

/// One waiter on one lock, counted while it lives.
struct Watch<'a> {
    hub: &'a Hub,
    lock_key: &'a str,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut state = self.hub.state();
        if let Some(watched) = state.locks.get_mut(self.lock_key) {
            watched.waiters -= 1;
            if watched.waiters == 0 {
                watched.idle_since = Instant::now();
                drop(state);
                // The subscriber arms the linger timer.
                if let Some(subscriber) = &self.hub.subscriber {
                    subscriber.notify_one();
                }
            }
        }
    }
}

#[derive(Default)]
struct Plan {
    subscribe: Vec<String>,
    /// Channels among `subscribe` to locate first: slots moved since the client's slot
    /// map was last found up to date.
    moved: Vec<String>,
    /// [`State::moves`] when the plan was made.
    moves: u64,
    unsubscribe: Vec<String>,
    next: Option<Instant>,
}

/// A hub whose waiters only poll (wake-ups off).
pub(crate) fn polling() -> Arc<Hub> {
    Arc::new(Hub::new(None))
}

/// A hub fed by a subscriber thread connecting to `servers`; the thread ends soon after
/// the hub is dropped. Without a thread (it cannot start), a polling hub.
pub(crate) fn start(servers: Servers) -> Arc<Hub> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::warn!(error = %err, "cannot start the lock wake-up runtime; waiters will poll");
            return polling();
        }
    };
    let signal = Arc::new(Notify::new());
    let hub = Arc::new(Hub::new(Some(Arc::clone(&signal))));
    let weak = Arc::downgrade(&hub);
    let spawned = thread::Builder::new()
        .name("cache-memoize-wake".into())
        .spawn(move || runtime.block_on(subscribe_until_dropped(servers, weak, signal)));
    match spawned {
        Ok(_) => hub,
        Err(err) => {
            tracing::warn!(error = %err, "cannot start the lock wake-up thread; waiters will poll");
            polling()
        }
    }
}

/// The subscriber connection: classic pub/sub, or sharded pub/sub on a cluster.
enum Connection {
    Classic {
        sink: PubSubSink,
        messages: PubSubStream,
    },
    /// Messages and confirmations arrive through the push sender ([`Hub::on_push`]).
    Sharded(ClusterConnection),
}

/// Why the connection was given up.
enum Lost {
    /// The hub is gone: stop.
    Dropped,
    /// The connection failed: reconnect.
    Failed(redis::RedisError),
    /// The cluster does not know sharded pub/sub: use classic from now on.
    NoShardedPubSub,
}

async fn subscribe_until_dropped(mut servers: Servers, hub: Weak<Hub>, signal: Arc<Notify>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        // Connect on the first wait only: a process that never waits holds no connection.
        // While disconnected, locks no longer waited on are forgotten here.
        loop {
            match hub.upgrade() {
                None => return,
                Some(hub) if hub.wanted() => break,
                Some(_) => signal.notified().await,
            }
        }
        let lost = match connect(&servers, &hub).await {
            Ok(conn) => {
                backoff = Duration::from_millis(50);
                serve(conn, &servers, &hub, &signal).await
            }
            Err(err) if lacks_sharded_pubsub(&err) => Lost::NoShardedPubSub,
            Err(err) => Lost::Failed(err),
        };
        let Some(live) = hub.upgrade() else { return };
        if servers.cluster.is_some() && matches!(lost, Lost::Failed(_)) {
            // A cluster node failed us (a dead master, a slot without a master yet):
            // the next subscriptions are located, and their confirmation makes the
            // waiters retry.
            live.on_node_lost();
        } else {
            live.on_lost(None);
        }
        drop(live);
        match lost {
            Lost::Dropped => return,
            Lost::NoShardedPubSub => {
                tracing::debug!("no sharded pub/sub on this cluster; wake-ups use classic pub/sub");
                servers.cluster = None;
            }
            Lost::Failed(err) => {
                if let Target::Sentinel(master) = &servers.classic {
                    // The master may have changed: ask the Sentinels again.
                    master.forget();
                }
                tracing::debug!(error = %err, "lock wake-up subscriber disconnected; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn connect(servers: &Servers, hub: &Weak<Hub>) -> RedisResult<Connection> {
    let opening = async {
        match &servers.cluster {
            Some(builder) => {
                let client = builder()
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(Pushes(hub.clone()))
                    .build()?;
                client.get_async_connection().await.map(Connection::Sharded)
            }
            None => {
                let client = match &servers.classic {
                    Target::Server(client) => client.clone(),
                    Target::Sentinel(master) => {
                        master.client_async(servers.connect_timeout).await?
                    }
                };
                let (sink, messages) = client.get_async_pubsub().await?.split();
                Ok(Connection::Classic { sink, messages })
            }
        }
    };
    tokio::time::timeout(servers.connect_timeout, opening)
        .await
        .unwrap_or_else(|_| Err(timed_out("connecting")))
}

fn timed_out(what: &str) -> redis::RedisError {
    super::link::timeout(format_args!("{what} (lock wake-up subscriber)"))
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
async fn serve(mut conn: Connection, servers: &Servers, hub: &Weak<Hub>, signal: &Notify) -> Lost {
    loop {
        let Some(live) = hub.upgrade() else {
            return Lost::Dropped;
        };
        let plan = live.plan(Instant::now());
        drop(live);
        if let Err(lost) = apply(&mut conn, &plan, servers, hub).await {
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
                        (Some(message), Some(hub)) => hub.on_message(message.get_channel_name().as_bytes()),
                        (None, _) => return Lost::Failed(redis::RedisError::from(std::io::Error::from(
                            std::io::ErrorKind::ConnectionAborted,
                        ))),
                        (Some(_), None) => return Lost::Dropped,
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

/// `request`, failed as a timeout past `timeout`.
async fn bounded(
    timeout: Duration,
    what: &str,
    request: impl std::future::Future<Output = RedisResult<()>>,
) -> RedisResult<()> {
    tokio::time::timeout(timeout, request)
        .await
        .unwrap_or_else(|_| Err(timed_out(what)))
}

/// Sends `command` (`subscribe` or `unsubscribe`) for `channels`.
async fn send(
    conn: &mut Connection,
    subscribe: bool,
    channels: &[String],
    timeout: Duration,
) -> RedisResult<()> {
    let what = if subscribe {
        "subscribing"
    } else {
        "unsubscribing"
    };
    match conn {
        Connection::Classic { sink, .. } if subscribe => {
            bounded(timeout, what, sink.subscribe(channels)).await
        }
        Connection::Classic { sink, .. } => {
            bounded(timeout, what, sink.unsubscribe(channels)).await
        }
        // One command per channel: channels of different slots live on different nodes.
        Connection::Sharded(cluster) => {
            for channel in channels {
                if subscribe {
                    bounded(timeout, what, cluster.ssubscribe(channel)).await?;
                } else {
                    bounded(timeout, what, cluster.sunsubscribe(channel)).await?;
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
    servers: &Servers,
    hub: &Weak<Hub>,
) -> Result<(), Lost> {
    if !plan.subscribe.is_empty() {
        if let Connection::Sharded(cluster) = conn
            && !plan.moved.is_empty()
            && locate(cluster, &plan.moved, servers.response_timeout).await
        {
            let Some(live) = hub.upgrade() else {
                return Err(Lost::Dropped);
            };
            live.located(plan.moves);
        }
        let channels: Vec<String> = plan.subscribe.iter().map(|k| release_channel(k)).collect();
        let sent = send(conn, true, &channels, servers.response_timeout).await;
        let Some(live) = hub.upgrade() else {
            return Err(Lost::Dropped);
        };
        match sent {
            Ok(()) => {
                for key in &plan.subscribe {
                    live.on_subscribed(key);
                }
            }
            Err(err) => {
                live.not_requested(&plan.subscribe);
                return Err(if lacks_sharded_pubsub(&err) {
                    Lost::NoShardedPubSub
                } else {
                    Lost::Failed(err)
                });
            }
        }
    }
    if !plan.unsubscribe.is_empty() {
        send(conn, false, &plan.unsubscribe, servers.response_timeout)
            .await
            .map_err(Lost::Failed)?;
    }
    Ok(())
}

/// Hands the sharded subscriber's RESP3 pushes to the hub.
struct Pushes(Weak<Hub>);

impl redis::aio::AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        let hub = self.0.upgrade().ok_or(redis::aio::SendError)?;
        hub.on_push(&info);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(waiters: usize) -> Hub {
        let hub = Hub::new(Some(Arc::new(Notify::new())));
        for _ in 0..waiters {
            std::mem::forget(hub.watch("_lock_:{k}"));
        }
        hub
    }

    #[test]
    fn an_attempt_before_the_subscription_retries_once_it_is_confirmed() {
        let hub = watched(1);
        let attempted = Instant::now();
        let plan = hub.plan(Instant::now());
        assert_eq!(plan.subscribe, ["_lock_:{k}"]);
        assert!(!Hub::should_retry(&hub.state(), "_lock_:{k}", attempted));
        hub.on_subscribed("_lock_:{k}");
        assert!(Hub::should_retry(&hub.state(), "_lock_:{k}", attempted));
        // The retry came after the confirmation: only a release ends its wait.
        let retried = Instant::now();
        assert!(!Hub::should_retry(&hub.state(), "_lock_:{k}", retried));
        hub.on_message(b"cache-memoize:released:_lock_:{k}");
        assert!(Hub::should_retry(&hub.state(), "_lock_:{k}", retried));
    }

    #[test]
    fn a_lost_connection_counts_as_a_release_and_is_asked_for_again() {
        let hub = watched(1);
        let _ = hub.plan(Instant::now());
        hub.on_subscribed("_lock_:{k}");
        let attempted = Instant::now();
        hub.on_lost(None);
        assert!(Hub::should_retry(&hub.state(), "_lock_:{k}", attempted));
        let plan = hub.plan(Instant::now());
        assert_eq!(plan.subscribe, ["_lock_:{k}"]);
        assert!(plan.moved.is_empty(), "routed as before");
    }

    #[test]
    fn a_moved_subscription_is_located_and_asked_for_again_before_waiters_retry() {
        let hub = watched(1);
        let _ = hub.plan(Instant::now());
        hub.on_subscribed("_lock_:{k}");
        let attempted = Instant::now();
        hub.on_lost(Some("_lock_:{k}"));
        assert!(
            !Hub::should_retry(&hub.state(), "_lock_:{k}", attempted),
            "no retry before the new subscription is live"
        );
        assert_eq!(hub.subscriptions(), 0);
        let plan = hub.plan(Instant::now());
        assert_eq!(plan.subscribe, ["_lock_:{k}"]);
        assert_eq!(plan.moved, ["cache-memoize:released:_lock_:{k}"]);
        hub.on_resubscribed("_lock_:{k}");
        assert!(
            Hub::should_retry(&hub.state(), "_lock_:{k}", attempted),
            "re-subscribed, then the waiter re-checks the lock"
        );
        // Until a subscription finds the slot map up to date, new ones are located too
        // (a lock waited on again after its subscription ended, another lock).
        std::mem::forget(hub.watch("_lock_:{other}"));
        let plan = hub.plan(Instant::now());
        assert_eq!(plan.moved, ["cache-memoize:released:_lock_:{other}"]);
        hub.located(plan.moves);
        std::mem::forget(hub.watch("_lock_:{third}"));
        assert!(
            hub.plan(Instant::now()).moved.is_empty(),
            "the map is up to date"
        );
    }

    #[test]
    fn a_lost_cluster_node_is_located_and_asked_for_again_before_waiters_retry() {
        let hub = watched(1);
        let _ = hub.plan(Instant::now());
        hub.on_subscribed("_lock_:{k}");
        let attempted = Instant::now();
        hub.on_node_lost();
        assert!(
            !Hub::should_retry(&hub.state(), "_lock_:{k}", attempted),
            "no retry while the slot may have no master"
        );
        assert_eq!(hub.subscriptions(), 0);
        let plan = hub.plan(Instant::now());
        assert_eq!(plan.subscribe, ["_lock_:{k}"]);
        assert_eq!(
            plan.moved,
            ["cache-memoize:released:_lock_:{k}"],
            "located first"
        );
        hub.on_subscribed("_lock_:{k}");
        assert!(
            Hub::should_retry(&hub.state(), "_lock_:{k}", attempted),
            "re-subscribed on the master, then the waiter re-checks the lock"
        );
    }

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

    #[test]
    fn the_last_waiter_leaving_ends_the_subscription_after_the_linger() {
        let hub = watched(0);
        drop(hub.watch("_lock_:{k}"));
        let now = Instant::now();
        let plan = hub.plan(now);
        assert_eq!(plan.subscribe, ["_lock_:{k}"], "still lingering");
        assert!(plan.next.is_some_and(|end| end > now));
        let plan = hub.plan(now + LINGER);
        assert_eq!(plan.unsubscribe, ["cache-memoize:released:_lock_:{k}"]);
        assert!(!hub.wanted());
    }
}
