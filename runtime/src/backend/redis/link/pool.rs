//! Blocking connections: a bounded pool shared by the process's threads, so threads
//! never queue behind one mutex for their Redis traffic and a burst of threads never
//! opens more than `max_connections`.
//!
//! A checkout takes an idle connection, or opens one in the caller's thread while fewer
//! than the maximum are open, or else waits (at most the response timeout) for one to
//! come back; a caller that gets none fails open. One deadline covers the whole call:
//! the response timeout from its start, whatever it spent waiting for a pooled
//! connection or opening one (opening is also bounded by the connect timeout), so a
//! stalled server costs a caller one response timeout, never two. No health-check
//! command on checkout:
//! a hit stays one command. A connection that failed (I/O error, timeout) or whose
//! server answered `READONLY` (demoted by a failover) is dropped rather than returned,
//! and its place freed; the idle ones go with it (they lead to the same server), and
//! with Sentinel the master is asked for again. A request that found its idle
//! connection closed, or met `READONLY`, is sent once more on a new connection.
//!
//! Hand-written rather than r2d2: r2d2 opens connections on its own threads, so while
//! the server refuses connections every caller waited the whole checkout timeout (1 s
//! at the defaults) instead of failing at once (`harness/pool_churn.rs`).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::{ConnectionLike, RedisResult};

use super::{
    Client, Timeouts, is_connection_failure, is_stale, setup_replies, timed_out, timeout, went_away,
};

/// One blocking connection, to a server or to a cluster.
pub(crate) enum SyncConnection {
    Single(redis::Connection),
    // Boxed: a cluster connection is several times a single one's size.
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl SyncConnection {
    fn as_dyn(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Self::Single(conn) => conn,
            Self::Cluster(conn) => &mut **conn,
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Self::Single(conn) => conn.is_open(),
            Self::Cluster(conn) => conn.is_open(),
        }
    }

    /// Bounds each read and write on the connection by `timeout`.
    fn set_timeouts(&self, timeout: Duration) -> RedisResult<()> {
        let timeout = Some(timeout);
        match self {
            Self::Single(conn) => {
                conn.set_read_timeout(timeout)?;
                conn.set_write_timeout(timeout)
            }
            Self::Cluster(conn) => {
                conn.set_read_timeout(timeout)?;
                conn.set_write_timeout(timeout)
            }
        }
    }
}

/// How far below the response timeout what is left of a call's deadline must fall
/// before the connection's socket timeouts are shortened for it.
const SHORTEN_PAST: Duration = Duration::from_millis(5);

/// Blocking connections to one client's servers, at most `max` of them open at once.
pub(crate) struct Pool {
    client: Client,
    timeouts: Timeouts,
    max: usize,
    state: Mutex<State>,
    /// Signalled when a connection comes back or a place is freed.
    returned: Condvar,
}

struct State {
    /// Connections ready for use, the most recently returned last.
    idle: Vec<SyncConnection>,
    /// Connections open: idle, checked out, or being opened.
    open: usize,
    /// Callers waiting for a connection to come back: only then is `returned`
    /// signalled (a signal is a system call even when no one waits).
    waiting: usize,
}

impl Pool {
    /// A pool of at most `max_connections` (at least 1), opened on demand.
    pub(crate) fn new(client: Client, timeouts: Timeouts, max_connections: u32) -> Self {
        Self {
            client,
            timeouts,
            max: (max_connections as usize).max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                waiting: 0,
            }),
            returned: Condvar::new(),
        }
    }

    /// Runs `op` on a pooled connection; the connection goes back unless it failed.
    ///
    /// An idle connection found dropped (its server died or closed it meanwhile) or
    /// answering `READONLY` (its server was demoted) is replaced and `op` sent once
    /// more, by the same deadline: without the retry the first call after a failover
    /// would compute without the cache. A closed connection does not prove the request
    /// never ran (the server may have run it and gone before replying), so the steps
    /// are made safe to repeat: taking a lock already ours returns its token, and a
    /// store-and-release finds its own value stored. (A plain `set` or `add` sent
    /// again may overwrite a newer value, or answer that the key was present.)
    pub(crate) fn run<T>(
        &self,
        mut op: impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let deadline = Instant::now() + self.timeouts.response;
        let (result, reused) = self.run_once(deadline, &mut op);
        match result {
            Err(err) if reused && went_away(&err) && Instant::now() < deadline => {
                self.run_once(deadline, &mut op).0
            }
            result => result,
        }
    }

    /// [`run`](Self::run) without the retry; also says whether the connection was idle.
    fn run_once<T>(
        &self,
        deadline: Instant,
        op: &mut impl FnMut(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> (RedisResult<T>, bool) {
        let full = self.timeouts.response;
        let (mut conn, reused) = match self.checkout(deadline) {
            Ok(checked_out) => checked_out,
            Err(err) => return (Err(err), false),
        };
        // What is left of the deadline (at least 1 ms: a zero socket timeout means
        // none). Shortened only past a little slack: two system calls per command
        // otherwise.
        let reply_within = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let shortened = reply_within + SHORTEN_PAST < full;
        // If `op` panics, the connection (state unknown) is dropped and its place freed.
        let place = Place(self);
        let result = if shortened {
            conn.set_timeouts(reply_within)
                .and_then(|()| op(conn.as_dyn()))
        } else {
            op(conn.as_dyn())
        };
        let result = result.map_err(|err| timed_out(err, reply_within, "waiting for the reply"));
        std::mem::forget(place);
        let stale = result.as_ref().is_err_and(is_stale);
        let reusable = conn.is_open() && !stale && (!shortened || conn.set_timeouts(full).is_ok());
        if reusable {
            let mut pooled = self.state();
            pooled.idle.push(conn);
            let waiting = pooled.waiting > 0;
            drop(pooled);
            if waiting {
                self.returned.notify_one();
            }
        } else {
            drop(conn);
            self.forget_one();
        }
        if stale {
            self.drop_idle();
            self.client.forget();
        }
        (result, reused)
    }

    /// Drops the idle connections: their server failed or was demoted, so each would
    /// fail one more call.
    fn drop_idle(&self) {
        let mut state = self.state();
        let dropped = std::mem::take(&mut state.idle);
        state.open -= dropped.len();
        let waiting = state.waiting > 0;
        drop(state);
        drop(dropped);
        if waiting {
            self.returned.notify_all();
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection, or a new one while fewer than `max` are open, or one that
    /// comes back, all by `deadline`; and whether it was idle (rather than new).
    fn checkout(&self, deadline: Instant) -> RedisResult<(SyncConnection, bool)> {
        let mut state = self.state();
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok((conn, true));
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return self
                    .open(deadline)
                    .map(|conn| (conn, false))
                    .inspect_err(|err| {
                        self.forget_one();
                        if is_connection_failure(err) {
                            self.client.forget();
                        }
                    });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timeout(format_args!(
                    "after {:?} waiting for one of the {} pooled connections",
                    self.timeouts.response, self.max
                )));
            }
            // Counted under the lock the wait releases: a return that sees the count
            // finds this caller waiting on `returned`.
            state.waiting += 1;
            state = self
                .returned
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiting -= 1;
        }
    }

    /// Opens a connection by `deadline` and within the connect timeout; the handshake
    /// counts against both (the `redis` crate gives it what is left after the TCP
    /// connect), as a whole: the client sends no `CLIENT SETINFO`, and each remaining
    /// setup reply gets its share.
    fn open(&self, deadline: Instant) -> RedisResult<SyncConnection> {
        let timeout = self
            .timeouts
            .connect
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        let started = Instant::now();
        let conn = match &self.client {
            Client::Node(node) => node
                .client(timeout)
                .and_then(|client| {
                    let left = timeout
                        .saturating_sub(started.elapsed())
                        .max(Duration::from_millis(1));
                    // The crate awaits each handshake reply for the whole remaining timeout.
                    client.get_connection_with_timeout(left / setup_replies(&client))
                })
                .map(SyncConnection::Single),
            Client::Cluster(client) => client
                .get_connection()
                .map(|conn| SyncConnection::Cluster(Box::new(conn))),
        };
        let conn = conn.map_err(|err| timed_out(err, timeout, "connecting"))?;
        conn.set_timeouts(self.timeouts.response)?;
        Ok(conn)
    }

    /// Frees the place of a connection that failed to open or was dropped.
    fn forget_one(&self) {
        let mut state = self.state();
        state.open -= 1;
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.returned.notify_one();
        }
    }
}

/// The place of a checked-out connection, freed if dropped during a panic.
struct Place<'a>(&'a Pool);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.forget_one();
    }
}
