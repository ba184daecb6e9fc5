//! Blocking connections: a bounded pool shared by the process's threads, so threads
//! never queue behind one mutex for their Redis traffic and a burst of threads never
//! opens more than `max_connections`.
//!
//! A checkout takes an idle connection, or opens one in the caller's thread while fewer
//! than the maximum are open, or else waits (at most the response timeout) for one to
//! come back; a caller that gets none fails open. No health-check command on checkout:
//! a hit stays one command. A connection that failed (I/O error, timeout) is dropped
//! rather than returned, and its place freed.
//!
//! Hand-written rather than r2d2: r2d2 opens connections on its own threads, so while
//! the server refuses connections every caller waited the whole checkout timeout (1 s
//! at the defaults) instead of failing at once (`examples/pool_churn.rs`).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::{ConnectionLike, RedisError, RedisResult};

use super::Client;

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
}

/// Opens connections with the configured timeouts.
pub(crate) struct Connector {
    client: Client,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Connector {
    pub(crate) fn new(
        client: Client,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        Self {
            client,
            connect_timeout,
            response_timeout,
        }
    }

    fn open(&self) -> RedisResult<SyncConnection> {
        let timeout = Some(self.response_timeout);
        match &self.client {
            Client::Single(client) => {
                let conn = client.get_connection_with_timeout(self.connect_timeout)?;
                conn.set_read_timeout(timeout)?;
                conn.set_write_timeout(timeout)?;
                Ok(SyncConnection::Single(conn))
            }
            Client::Cluster(client) => {
                let conn = client.get_connection()?;
                conn.set_read_timeout(timeout)?;
                conn.set_write_timeout(timeout)?;
                Ok(SyncConnection::Cluster(Box::new(conn)))
            }
        }
    }
}

/// Blocking connections to one client's servers, at most `max` of them open at once.
pub(crate) struct Pool {
    connector: Connector,
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
}

impl Pool {
    /// A pool of at most `max_connections` (at least 1), opened on demand.
    pub(crate) fn new(connector: Connector, max_connections: u32) -> Self {
        Self {
            connector,
            max: (max_connections as usize).max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        }
    }

    /// Runs `op` on a pooled connection; the connection goes back unless it failed.
    pub(crate) fn run<T>(
        &self,
        op: impl FnOnce(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let mut conn = self.checkout()?;
        // If `op` panics, the connection (state unknown) is dropped and its place freed.
        let place = Place(self);
        let result = op(conn.as_dyn());
        std::mem::forget(place);
        if result.as_ref().is_err_and(is_connection_failure) || !conn.is_open() {
            drop(conn);
            self.forget_one();
        } else {
            self.state().idle.push(conn);
            self.returned.notify_one();
        }
        result
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection, or a new one while fewer than `max` are open, or one that
    /// comes back within the response timeout.
    fn checkout(&self) -> RedisResult<SyncConnection> {
        let deadline = Instant::now() + self.connector.response_timeout;
        let mut state = self.state();
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(conn);
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return self.connector.open().inspect_err(|_| self.forget_one());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "timed out after {:?} waiting for one of the {} pooled connections",
                        self.connector.response_timeout, self.max
                    ),
                )));
            }
            state = self
                .returned
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Frees the place of a connection that failed to open or was dropped.
    fn forget_one(&self) {
        self.state().open -= 1;
        self.returned.notify_one();
    }
}

/// The place of a checked-out connection, freed if dropped during a panic.
struct Place<'a>(&'a Pool);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.forget_one();
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
