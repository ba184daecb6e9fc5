//! Blocking connections: an idle stack shared by the process's threads, so threads
//! never queue behind one mutex for their Redis traffic.
//!
//! A checkout takes an idle connection or opens a new one; a connection that failed
//! (I/O error, timeout) is dropped rather than returned. No health-check command on
//! checkout: a hit stays one command.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::{ConnectionLike, RedisError, RedisResult};

use super::Client;

/// Idle connections kept for reuse; more are opened under load and closed on return.
const MAX_IDLE: usize = 32;

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

    /// Sends `PING`.
    pub(crate) fn ping(&mut self) -> RedisResult<()> {
        redis::cmd("PING")
            .query::<String>(self.as_dyn())
            .map(|_| ())
    }

    fn is_open(&self) -> bool {
        match self {
            Self::Single(conn) => conn.is_open(),
            Self::Cluster(conn) => conn.is_open(),
        }
    }
}

/// Blocking connections to one client's servers.
pub(crate) struct Pool {
    client: Client,
    connect_timeout: Duration,
    response_timeout: Duration,
    idle: Mutex<Vec<SyncConnection>>,
}

impl Pool {
    pub(crate) fn new(
        client: Client,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        Self {
            client,
            connect_timeout,
            response_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Opens a connection with the configured timeouts.
    pub(crate) fn open(&self) -> RedisResult<SyncConnection> {
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

    /// Keeps `conn` for reuse.
    pub(crate) fn put(&self, conn: SyncConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE && conn.is_open() {
            idle.push(conn);
        }
    }

    /// Runs `op` on a pooled connection; the connection goes back unless it failed.
    pub(crate) fn run<T>(
        &self,
        op: impl FnOnce(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = op(conn.as_dyn());
        match &result {
            Err(err) if is_connection_failure(err) => {}
            _ => self.put(conn),
        }
        result
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
