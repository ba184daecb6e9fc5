//! Wake-ups for lock waiters: a subscription to a lock's release channel only while
//! someone in this process waits on that lock, on one subscriber connection per backend.
//!
//! - Per lock, reference-counted: the first waiter on a lock asks for its channel, the
//!   last one to leave lets it go (after [`LINGER`], which covers the waiter's retry
//!   between two pauses; the subscriber looks within a linger, so between one and two
//!   lingers: a waiter leaving wakes nobody). A process waiting on nothing is subscribed to nothing, so
//!   other processes' releases cost it (and Redis) nothing.
//! - A release (a confirmation, a lost connection) wakes the waiters of its lock only
//!   (a condition variable and a `Notify` per lock waited on), not every waiter of the
//!   backend.
//! - No release is missed: a subscription only counts for attempts made after it was
//!   confirmed. A waiter whose attempt came first returns as soon as the subscription
//!   is confirmed, and retries: that retry is the check that nothing was released in
//!   between.
//! - A waiter does not poll while subscribed: an attempt sent with the lock's
//!   subscription live (confirmed before it was sent, not lost since) is answered
//!   `Reply::Watched` with the lock's remaining life (the get-or-lock script returns
//!   its `PTTL`), and the waiter pauses until the release or that expiry (plus a
//!   little jitter): a dead holder is noticed when its lock expires, a renewed lock
//!   is waited on again. Any other attempt (not yet subscribed, the subscriber
//!   reconnecting, wake-ups off) pauses for `retry`, as before. A lost connection to a single server counts as a release; a subscription
//!   the server drops because its slot moved, or whose cluster node was lost, is asked
//!   for again at once (below).
//! - A release that stored a value carries it (at most `DELIVER_MAX` bytes) with the
//!   releasing token. A waiter takes it instead of reading, only if an attempt sent
//!   after its own began found that token holding the lock (the get-or-lock script
//!   names the holder): that holder's release then came after the waiter's wait began,
//!   so what it delivers is never older than a read the waiter would make. Anything
//!   else (another holder's release, a wake-up without a value) makes it retry, as
//!   before.
//! - On Redis Cluster 7+, sharded pub/sub (`SSUBSCRIBE`, routed to the node owning the
//!   lock's slot); on older clusters (`SSUBSCRIBE` unknown) and on a single server,
//!   classic `SUBSCRIBE`. The release scripts publish accordingly.
//! - Subscriptions follow the slot. When a slot leaves a node (resharded by `SETSLOT
//!   NODE`, or a `CLUSTER FAILOVER` that demotes its master), the node unsubscribes us
//!   (an `sunsubscribe` push; Redis 7.0.15 sends it in both cases). We subscribe again
//!   on the slot's master now (see `subscriber::locate`: a demoted master, now a
//!   replica, would accept the `SSUBSCRIBE` itself, and hear the shard only once the new
//!   master knows it); until one subscription finds the client's slot map up to date, every new one
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
//!   `subscriber::LOCATE_FOR`), and waiters retry on the new confirmation, not at the
//!   loss (a retry then would find no master). The same after the subscriber's own
//!   connection to a cluster failed.
//! - With Sentinel, the subscriber connects to the master the Sentinels name, and asks
//!   again after its connection failed (the old master died): a failover costs the
//!   waiters one retry, as any disconnection does.
//! - The subscriber (`subscriber.rs`) runs on the links' background skeleton (a task
//!   on the process's one background thread, shared by blocking and async callers and
//!   by every backend, see `link/background.rs`); it connects on the first wait, and
//!   ends soon after the backend is dropped. While it is disconnected, waiters poll
//!   every `retry`.

mod subscriber;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::{PushInfo, PushKind, Value};
use tokio::sync::Notify;

use super::commands::release_channel;
use super::scripts::RELEASE_CHANNEL;
use crate::backend::redis::link::background::Listener;
pub(crate) use subscriber::start;

/// How long a lock's subscription outlives its last waiter: long enough for a waiter's
/// retry between two pauses, so a waiter does not subscribe anew for every pause.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// The locks waited on, their subscriptions and releases, and the waiters to wake.
pub(crate) struct Hub {
    state: Mutex<State>,
    /// What a waiter without a watched lock (wake-ups off) sleeps on: never notified.
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
    /// By lock key: the holder the latest get-or-lock attempt found, and when that
    /// attempt was sent.
    held: HashMap<String, Holding>,
    /// Subscriptions the server dropped because their slot moved, and connections to a
    /// cluster node lost, so far: while this is ahead of `located`, the client's slot
    /// map may be out of date, and every new subscription first looks for its slot's
    /// master (`subscriber::locate`).
    moves: u64,
    /// `moves` when a subscription last found the client's slot map up to date.
    located: u64,
    /// Channels this subscriber unsubscribed from on a cluster, whose `sunsubscribe`
    /// push (the confirmation) is still to come: not a slot move.
    unsubscribing: HashSet<Vec<u8>>,
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
    /// What the last release message delivered, if it carried a value.
    delivered: Option<Delivery>,
    /// This lock's waiters, blocking and async (with [`Hub::state`]): a release wakes
    /// only the waiters of its lock, not every waiter of the backend.
    woken: Wakers,
}

/// The waiters of one lock, to wake.
#[derive(Clone, Default)]
struct Wakers {
    blocking: Arc<Condvar>,
    awaiting: Arc<Notify>,
}

impl Wakers {
    fn wake(&self) {
        self.blocking.notify_all();
        self.awaiting.notify_waiters();
    }
}

/// A lock's holder, as an attempt sent at `sent` found it, and the value's name as
/// stored (a delivered value is opened as a read of it is, under encryption).
struct Holding {
    holder: Vec<u8>,
    value_key: String,
    sent: Instant,
}

/// A value a release message carried: stored by `holder` (the releasing token),
/// received at `at`.
struct Delivery {
    holder: Vec<u8>,
    value: Vec<u8>,
    at: Instant,
}

/// How many holders the hub remembers before it forgets those of locks nobody waits
/// on (older than [`LINGER`]).
const HELD_KEPT: usize = 256;

/// The token and value a release message carries (`v<token length>:<token><value>`,
/// see `scripts::STORE_AND_RELEASE`); `None` for a bare wake-up (`1`).
fn delivery(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = payload.strip_prefix(b"v")?;
    let colon = rest.iter().position(|b| *b == b':')?;
    let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    let rest = &rest[colon + 1..];
    (rest.len() >= len).then(|| rest.split_at(len))
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
                delivered: None,
                woken: Wakers::default(),
            });
        watched.waiters += 1;
        let ask = !watched.requested;
        let woken = watched.woken.clone();
        drop(state);
        if ask {
            subscriber.notify_one();
        }
        Some(Watch {
            hub: self,
            lock_key,
            woken,
        })
    }

    fn should_retry(state: &State, lock_key: &str, attempted: Instant) -> bool {
        state
            .locks
            .get(lock_key)
            .is_some_and(|w| w.should_retry(attempted))
    }

    /// A get-or-lock attempt of the value at `value_key`, sent at `sent`, found
    /// `holder` holding `lock_key`, which expires in `expires_in`. Returns that expiry
    /// if the subscription to the lock's channel was live (confirmed, and not lost
    /// since) before the attempt was sent: the lock's release then wakes its waiters,
    /// so they need not poll until it expires (`None`: they poll at their `retry`).
    pub(crate) fn held(
        &self,
        lock_key: &str,
        value_key: &str,
        holder: Vec<u8>,
        sent: Instant,
        expires_in: Option<Duration>,
    ) -> Option<Duration> {
        self.subscriber.as_ref()?;
        let mut state = self.state();
        let watched = state
            .locks
            .get(lock_key)
            .and_then(|w| w.live_since)
            .is_some_and(|since| since <= sent);
        if state.held.len() >= HELD_KEPT && !state.held.contains_key(lock_key) {
            let now = Instant::now();
            let State { held, locks, .. } = &mut *state;
            held.retain(|key, h| locks.contains_key(key) || now.duration_since(h.sent) < LINGER);
        }
        match state.held.get_mut(lock_key) {
            Some(known) if known.sent > sent => {}
            Some(known) => {
                *known = Holding {
                    holder,
                    value_key: value_key.to_owned(),
                    sent,
                };
            }
            None => {
                let holding = Holding {
                    holder,
                    value_key: value_key.to_owned(),
                    sent,
                };
                state.held.insert(lock_key.to_owned(), holding);
            }
        }
        expires_in.filter(|_| watched)
    }

    /// The value delivered for a waiter whose attempt began at `attempted`, with its
    /// stored name: carried by the release of the holder an attempt sent since found
    /// (so stored after the wait began), received since.
    fn delivered(state: &State, lock_key: &str, attempted: Instant) -> Option<(String, Vec<u8>)> {
        let delivery = state.locks.get(lock_key)?.delivered.as_ref()?;
        let holding = state.held.get(lock_key)?;
        let theirs = holding.holder == delivery.holder;
        (theirs && holding.sent >= attempted && delivery.at >= attempted)
            .then(|| (holding.value_key.clone(), delivery.value.clone()))
    }

    /// Blocks until `lock_key` may have been released after `attempted`, or for `max`;
    /// returns the value the release delivered for this waiter, if any.
    pub(crate) fn wait(
        &self,
        lock_key: &str,
        attempted: Instant,
        max: Duration,
    ) -> Option<(String, Vec<u8>)> {
        let watch = self.watch(lock_key);
        let released = watch
            .as_ref()
            .map_or(&self.released, |w| &*w.woken.blocking);
        let state = self.state();
        let (state, _) = released
            .wait_timeout_while(state, max, |state| {
                !Self::should_retry(state, lock_key, attempted)
            })
            .unwrap_or_else(PoisonError::into_inner);
        Self::delivered(&state, lock_key, attempted)
    }

    /// The async form of [`wait`](Self::wait).
    pub(crate) async fn wait_async(
        &self,
        lock_key: &str,
        attempted: Instant,
        max: Duration,
    ) -> Option<(String, Vec<u8>)> {
        let watch = self.watch(lock_key);
        let released = watch
            .as_ref()
            .map_or(&self.released_async, |w| &*w.woken.awaiting);
        let deadline = crate::timer::deadline_after(max);
        loop {
            let released = released.notified();
            let mut released = std::pin::pin!(released);
            // Registered before the check: a release in between still wakes us.
            released.as_mut().enable();
            {
                let state = self.state();
                if Self::should_retry(&state, lock_key, attempted) {
                    return Self::delivered(&state, lock_key, attempted);
                }
            }
            // The crate's timer: a waiter on a runtime without a time driver waits too.
            if crate::timer::timeout_at(deadline, released).await.is_none() {
                return Self::delivered(&self.state(), lock_key, attempted);
            }
        }
    }

    /// A release message on `channel`, carrying `payload`.
    fn on_message(&self, channel: &[u8], payload: &[u8]) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        let Some(lock_key) = channel.strip_prefix(RELEASE_CHANNEL.as_bytes()) else {
            return;
        };
        let Ok(lock_key) = std::str::from_utf8(lock_key) else {
            return;
        };
        let woken = match self.state().locks.get_mut(lock_key) {
            Some(watched) => {
                let now = Instant::now();
                watched.released = Some(now);
                watched.delivered = delivery(payload).map(|(holder, value)| Delivery {
                    holder: holder.to_vec(),
                    value: value.to_vec(),
                    at: now,
                });
                watched.woken.clone()
            }
            None => return,
        };
        woken.wake();
    }

    /// The server confirmed the subscription to `lock_key`'s channel: the reply to the
    /// subscriber's request, or (`pushed`) a confirmation pushed by the server, maybe
    /// for a subscription the client re-sent by itself (after reconnecting to a node, or
    /// a slot map refresh), in which case a release may have been missed meanwhile.
    /// Either way, waiters that attempted before it retry.
    fn on_subscribed(&self, lock_key: &str, pushed: bool) {
        let mut state = self.state();
        let Some(watched) = state.locks.get_mut(lock_key) else {
            return;
        };
        if !watched.requested || (watched.live_since.is_some() && !pushed) {
            return;
        }
        watched.live_since = Some(Instant::now());
        let woken = watched.woken.clone();
        drop(state);
        woken.wake();
    }

    /// Subscriptions lost (all of them, or `lock_key`'s), and asked for again.
    ///
    /// - The connection lost (all, not `moved`): a release may go unseen until it is
    ///   back (after a pause), so waiters retry now.
    /// - One channel dropped by the server (its slot `moved`): it is asked for again at
    ///   once on the slot's owner, located first, and its waiters retry once that is
    ///   confirmed, so they re-check the lock with the new subscription already live.
    /// - The cluster client lost its connection to one node (all, `moved`: a
    ///   `Disconnection` push, which does not say which node): it may be a master that
    ///   died, whose slots have no master until the cluster promotes a replica, while
    ///   the client's slot map still names it. Every subscription is asked for again on
    ///   its slot's master, located first as after a move (retrying until the cluster
    ///   has one); waiters are not woken by the loss (a retry now would find no
    ///   master, and fail): the new confirmation makes those that attempted before it
    ///   retry, so no release in between is missed. The client also re-sends
    ///   subscriptions by itself once it reconnects or refreshes its slot map; those
    ///   confirmations make waiters retry too.
    fn on_lost(&self, lock_key: Option<&str>, moved: bool) {
        let now = Instant::now();
        let mut state = self.state();
        if lock_key.is_none() {
            // No confirmation comes over a lost connection.
            state.unsubscribing.clear();
        }
        let mut lost = false;
        let mut woken = Vec::new();
        for (key, watched) in &mut state.locks {
            if lock_key.is_some_and(|k| k != key) || !watched.requested {
                continue;
            }
            // An unsubscription we did not ask for: the entry still wants its channel.
            watched.requested = false;
            watched.live_since = None;
            if !moved {
                watched.released = Some(now);
                woken.push(watched.woken.clone());
            }
            lost = true;
        }
        if moved {
            // Even for a lock no longer waited on: the slot map is what is out of date.
            state.moves += 1;
        }
        drop(state);
        if lost {
            woken.iter().for_each(Wakers::wake);
            if let Some(subscriber) = &self.subscriber {
                subscriber.notify_one();
            }
        }
    }

    /// A RESP3 push from the sharded subscriber.
    fn pushed(&self, push: &PushInfo) {
        let channel = match push.data.first() {
            Some(Value::BulkString(channel)) => Some(channel.as_slice()),
            _ => None,
        };
        let lock_key = channel
            .and_then(|c| c.strip_prefix(RELEASE_CHANNEL.as_bytes()))
            .and_then(|k| std::str::from_utf8(k).ok());
        let payload = match push.data.get(1) {
            Some(Value::BulkString(payload)) => payload.as_slice(),
            _ => &[],
        };
        match (&push.kind, channel, lock_key) {
            (PushKind::SMessage | PushKind::Message, Some(channel), _) => {
                self.on_message(channel, payload);
            }
            (PushKind::SSubscribe | PushKind::Subscribe, _, Some(lock_key)) => {
                self.on_subscribed(lock_key, true);
            }
            // The confirmation of our own unsubscription moved nothing.
            (PushKind::SUnsubscribe | PushKind::Unsubscribe, Some(channel), Some(lock_key))
                if !self.confirms_unsubscribing(channel) =>
            {
                self.on_lost(Some(lock_key), true);
            }
            (PushKind::Disconnection, _, _) => self.on_lost(None, true),
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
        let mut forgotten = Vec::new();
        state.locks.retain(|key, watched| {
            if watched.waiters == 0 && now.duration_since(watched.idle_since) >= LINGER {
                forgotten.push(key.clone());
                if watched.requested {
                    plan.unsubscribe.push(release_channel(key));
                }
                return false;
            }
            // A lock waited on is looked at again within a linger: its last waiter
            // leaving does not wake the subscriber (at the end of a stampede, that
            // would be one more thread woken per process as the waiters return).
            let end = if watched.waiters == 0 {
                watched.idle_since + LINGER
            } else {
                now + LINGER
            };
            plan.next = Some(plan.next.map_or(end, |next: Instant| next.min(end)));
            if !watched.requested {
                watched.requested = true;
                plan.subscribe.push(key.clone());
                if locate {
                    plan.moved.push(release_channel(key));
                }
            }
            true
        });
        for key in forgotten {
            state.held.remove(&key);
        }
        plan
    }

    /// This subscriber is unsubscribing from `channels` (on a cluster): their
    /// `sunsubscribe` pushes are confirmations, not slot moves.
    fn unsubscribing(&self, channels: &[String]) {
        let mut state = self.state();
        // Bounded: confirmations a lost connection never sent are dropped with it.
        if state.unsubscribing.len() > HELD_KEPT {
            state.unsubscribing.clear();
        }
        state
            .unsubscribing
            .extend(channels.iter().map(|channel| channel.as_bytes().to_vec()));
    }

    /// Whether an unsubscription push for `channel` confirms this subscriber's own
    /// (noted by [`unsubscribing`](Self::unsubscribing)); forgets it if so.
    fn confirms_unsubscribing(&self, channel: &[u8]) -> bool {
        self.state().unsubscribing.remove(channel)
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
    /// What its lock's releases notify.
    woken: Wakers,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut state = self.hub.state();
        if let Some(watched) = state.locks.get_mut(self.lock_key) {
            watched.waiters -= 1;
            if watched.waiters == 0 {
                // The subscriber finds it idle when it next looks (within a linger).
                watched.idle_since = Instant::now();
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

impl Listener for Hub {
    fn on_push(&self, push: &PushInfo, _generation: u64) {
        self.pushed(push);
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

    /// A hub with one waiter on `_lock_:{k}`, subscribed.
    fn subscribed() -> Hub {
        let hub = watched(1);
        let _ = hub.plan(Instant::now());
        hub.on_subscribed("_lock_:{k}", false);
        hub
    }

    #[test]
    fn an_attempt_before_the_subscription_retries_once_it_is_confirmed() {
        let hub = watched(1);
        let attempted = Instant::now();
        let plan = hub.plan(Instant::now());
        assert_eq!(plan.subscribe, ["_lock_:{k}"]);
        assert!(!Hub::should_retry(&hub.state(), "_lock_:{k}", attempted));
        hub.on_subscribed("_lock_:{k}", false);
        assert!(Hub::should_retry(&hub.state(), "_lock_:{k}", attempted));
        // The retry came after the confirmation: only a release ends its wait.
        let retried = Instant::now();
        assert!(!Hub::should_retry(&hub.state(), "_lock_:{k}", retried));
        hub.on_message(b"cache-memoize:released:_lock_:{k}", b"1");
        assert!(Hub::should_retry(&hub.state(), "_lock_:{k}", retried));
    }

    #[test]
    fn a_waiter_takes_only_the_value_of_a_holder_found_since_its_attempt() {
        const CHANNEL: &[u8] = b"cache-memoize:released:_lock_:{k}";
        let hub = subscribed();
        let before = Instant::now();
        let attempted = loop {
            let now = Instant::now();
            if now > before {
                break now;
            }
        };
        // An attempt sent before this waiter's found holder `a`: not proof enough.
        hub.held("_lock_:{k}", "{k}", b"a".to_vec(), before, None);
        hub.on_message(CHANNEL, b"v1:aVALUE");
        assert_eq!(Hub::delivered(&hub.state(), "_lock_:{k}", attempted), None);
        // Its own attempt found `a`: `a`'s release came after its wait began.
        hub.held("_lock_:{k}", "{k}", b"a".to_vec(), attempted, None);
        assert_eq!(
            Hub::delivered(&hub.state(), "_lock_:{k}", attempted),
            Some(("{k}".to_owned(), b"VALUE".to_vec()))
        );
        // Another holder's release, or a bare wake-up, delivers nothing to it.
        hub.on_message(CHANNEL, b"v1:bOTHER");
        assert_eq!(Hub::delivered(&hub.state(), "_lock_:{k}", attempted), None);
        hub.on_message(CHANNEL, b"v1:aVALUE");
        hub.on_message(CHANNEL, b"1");
        assert_eq!(Hub::delivered(&hub.state(), "_lock_:{k}", attempted), None);
        assert_eq!(delivery(b"v12:a"), None, "cut short");
        assert_eq!(delivery(b"v0:"), Some((&b""[..], &b""[..])));
    }

    #[test]
    fn only_an_attempt_sent_with_the_subscription_live_waits_for_the_locks_expiry() {
        let hub = watched(1);
        let life = Some(Duration::from_secs(30));
        let before = Instant::now();
        let _ = hub.plan(Instant::now());
        assert_eq!(
            hub.held("_lock_:{k}", "{k}", b"a".to_vec(), before, life),
            None,
            "not subscribed yet: the waiter polls"
        );
        hub.on_subscribed("_lock_:{k}", false);
        assert_eq!(
            hub.held("_lock_:{k}", "{k}", b"a".to_vec(), before, life),
            None,
            "sent before the confirmation: a release in between may be unheard"
        );
        let after = Instant::now();
        assert_eq!(
            hub.held("_lock_:{k}", "{k}", b"a".to_vec(), after, life),
            life
        );
        hub.on_lost(None, false);
        let lost = Instant::now();
        assert_eq!(
            hub.held("_lock_:{k}", "{k}", b"a".to_vec(), lost, life),
            None,
            "the subscription lost: the waiter polls until it is back"
        );
        assert_eq!(
            polling().held("_lock_:{k}", "{k}", b"a".to_vec(), lost, life),
            None
        );
    }

    #[test]
    fn a_release_wakes_the_waiters_of_its_lock_only() {
        let hub = watched(0);
        let (a, also_a, b) = (
            hub.watch("_lock_:{a}"),
            hub.watch("_lock_:{a}"),
            hub.watch("_lock_:{b}"),
        );
        let woken = |w: &Option<Watch<'_>>| w.as_ref().map(|w| Arc::clone(&w.woken.blocking));
        let (a, also_a, b) = (woken(&a), woken(&also_a), woken(&b));
        assert!(
            a.zip(also_a.clone())
                .is_some_and(|(x, y)| Arc::ptr_eq(&x, &y))
        );
        assert!(also_a.zip(b).is_some_and(|(x, y)| !Arc::ptr_eq(&x, &y)));
    }

    #[test]
    fn a_lost_connection_counts_as_a_release_and_is_asked_for_again() {
        let hub = subscribed();
        let attempted = Instant::now();
        hub.on_lost(None, false);
        assert!(Hub::should_retry(&hub.state(), "_lock_:{k}", attempted));
        let plan = hub.plan(Instant::now());
        assert_eq!(plan.subscribe, ["_lock_:{k}"]);
        assert!(plan.moved.is_empty(), "routed as before");
    }

    #[test]
    fn a_moved_subscription_is_located_and_asked_for_again_before_waiters_retry() {
        let hub = subscribed();
        let attempted = Instant::now();
        hub.on_lost(Some("_lock_:{k}"), true);
        assert!(
            !Hub::should_retry(&hub.state(), "_lock_:{k}", attempted),
            "no retry before the new subscription is live"
        );
        assert_eq!(hub.subscriptions(), 0);
        let plan = hub.plan(Instant::now());
        assert_eq!(plan.subscribe, ["_lock_:{k}"]);
        assert_eq!(plan.moved, ["cache-memoize:released:_lock_:{k}"]);
        hub.on_subscribed("_lock_:{k}", true);
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
        let hub = subscribed();
        let attempted = Instant::now();
        hub.on_lost(None, true);
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
        hub.on_subscribed("_lock_:{k}", false);
        assert!(
            Hub::should_retry(&hub.state(), "_lock_:{k}", attempted),
            "re-subscribed on the master, then the waiter re-checks the lock"
        );
    }

    #[test]
    fn the_last_waiter_leaving_ends_the_subscription_after_the_linger() {
        let hub = watched(0);
        let watch = hub.watch("_lock_:{k}");
        let now = Instant::now();
        let plan = hub.plan(now);
        assert_eq!(plan.subscribe, ["_lock_:{k}"]);
        assert!(
            plan.next.is_some_and(|at| at <= now + LINGER),
            "looked at again while waited on"
        );
        drop(watch);
        let left = Instant::now();
        let plan = hub.plan(left);
        assert!(plan.unsubscribe.is_empty(), "still lingering");
        assert!(plan.next.is_some_and(|end| end > left));
        let plan = hub.plan(left + LINGER);
        assert_eq!(plan.unsubscribe, ["cache-memoize:released:_lock_:{k}"]);
        assert!(!hub.wanted());
    }
}
