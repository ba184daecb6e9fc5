//! The two send paths of the Redis backend: [`BackendCore::execute`] on the pool of
//! blocking connections, [`AsyncBackendCore::execute_async`] on the shared multiplexed
//! connection. Each routes the operation (`ops.rs`: its request, reply and near-cache
//! effects, written once), then applies the drivers check (async), the breaker's
//! admission, the deadline and the failure count in one place.

use std::future::ready;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use redis::{Cmd, ConnectionLike, RedisResult, ScriptInvocation, Value};

use super::RedisBackend;
use super::link::breaker::{Decision, Permit};
use super::link::drivers::{self, Drivers};
use super::link::{
    self, AsyncConnection, Client, is_connection_failure, is_stale, timed_out, went_away,
};
use super::ops::{Plan, Route};
use crate::backend::{AsyncBackendCore, BackendCore, BoxFuture, Op, Reply};
use crate::error::Error;

impl BackendCore for RedisBackend {
    fn execute(&self, op: Op<'_>) -> Result<Reply, Error> {
        match self.route(op) {
            Route::Local(reply) => Ok(reply),
            Route::Refused(err) => Err(err),
            Route::Wait {
                lock_key,
                attempted,
                max,
            } => Ok(self.delivered(self.inner.hub.wait(&lock_key, attempted, max))),
            Route::Send(plan) => {
                let sent = self.exec(&plan);
                self.finish(&plan, sent)
            }
        }
    }
}

impl AsyncBackendCore for RedisBackend {
    fn execute_async<'a>(&'a self, op: Op<'a>) -> BoxFuture<'a, Result<Reply, Error>> {
        match self.route(op) {
            Route::Local(reply) => Box::pin(ready(Ok(reply))),
            Route::Refused(err) => Box::pin(ready(Err(err))),
            Route::Wait {
                lock_key,
                attempted,
                max,
            } => Box::pin(async move {
                let value = self.inner.hub.wait_async(&lock_key, attempted, max).await;
                Ok(self.delivered(value))
            }),
            Route::Send(plan) => Box::pin(async move {
                let sent = self.exec_async(&plan).await;
                self.finish(&plan, sent)
            }),
        }
    }
}

/// Whether the missing Tokio runtime was already reported (once per process).
static NO_RUNTIME_WARNED: AtomicBool = AtomicBool::new(false);
/// Whether a runtime without its I/O or time driver was already reported (once per
/// process).
static NO_DRIVERS_WARNED: AtomicBool = AtomicBool::new(false);

impl RedisBackend {
    /// A wait's reply: the value the release delivered (see `wake`), opened as a read
    /// of its stored name is (under encryption), or done.
    fn delivered(&self, value: Option<(String, Vec<u8>)>) -> Reply {
        value.map_or(Reply::Done, |(name, bytes)| {
            let bytes = match &self.inner.seal {
                Some(seal) => seal.read(&name, bytes),
                None => bytes,
            };
            Reply::Value(Some(bytes))
        })
    }

    /// Sends `plan`'s request on a pooled connection (the pool bounds it by the
    /// response timeout), unless the breaker says to skip the server.
    fn exec(&self, plan: &Plan<'_>) -> Result<Value, Error> {
        let permit = self.admit(plan.name, &plan.key)?;
        let result = self.inner.pool.run(|conn| plan.request.query(conn));
        Self::sent(plan, permit, result)
    }

    /// Sends `plan`'s request on the shared async connection, unless the breaker says
    /// to skip the server, or there is no Tokio runtime to run it on, or the runtime
    /// lacks its I/O or time driver (`drivers.rs`; each reported once, then every such
    /// call fails open: it computes without the cache).
    async fn exec_async(&self, plan: &Plan<'_>) -> Result<Value, Error> {
        let (operation, key) = (plan.name, &*plan.key);
        match drivers::here() {
            Drivers::Ready => {}
            Drivers::NoRuntime => {
                if !NO_RUNTIME_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        address = %self.inner.address,
                        "an async memoized call on the Redis backend ran outside a Tokio \
                         runtime: it computes without the cache (reported once per process)"
                    );
                }
                return Err(self.skipped(operation, key, NO_RUNTIME));
            }
            Drivers::Missing => {
                if !NO_DRIVERS_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        address = %self.inner.address,
                        "an async memoized call on the Redis backend ran on a Tokio runtime \
                         built without its I/O or time driver (the panic reported just before \
                         was cache-memoize's check, caught): such calls compute without the \
                         cache; build the runtime with `enable_all()` (reported once per process)"
                    );
                }
                return Err(self.skipped(operation, key, NO_DRIVERS));
            }
        }
        let permit = self.admit(operation, key)?;
        let result = self.send_async(&plan.request).await;
        Self::sent(plan, permit, result)
    }

    /// What came back from sending `plan`, on either path: counted by the breaker (and
    /// the `metrics` feature) when the server did not answer.
    fn sent(
        plan: &Plan<'_>,
        permit: Permit<'_>,
        result: RedisResult<Value>,
    ) -> Result<Value, Error> {
        let failed = failure(&result);
        #[cfg(feature = "metrics")]
        if failed.is_some() {
            metrics::counter!("cache_memoize_redis_failures_total", "operation" => plan.name)
                .increment(1);
        }
        permit.record(failed);
        result.map_err(|err| Error::backend(plan.name, &plan.key, err))
    }

    /// Leave from the breaker to send a call, or the error that skips the server (after
    /// starting the probe when one is due).
    fn admit(&self, operation: &'static str, key: &str) -> Result<Permit<'_>, Error> {
        match self.inner.breaker.admit() {
            Decision::Call(permit) => Ok(permit),
            Decision::Probe => {
                self.spawn_probe();
                Err(self.skipped(operation, key, BREAKER_OPEN))
            }
            Decision::Skip => Err(self.skipped(operation, key, BREAKER_OPEN)),
        }
    }

    /// Sends the breaker's probe, a `PING` on a pooled connection, from a thread of its
    /// own (reporting to the caller's `tracing` subscriber): the caller that found it
    /// due does not wait for it, whether the server answers or not.
    fn spawn_probe(&self) {
        let backend = self.clone();
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let spawned = std::thread::Builder::new()
            .name("cache-memoize-breaker-probe".into())
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let result = backend
                        .inner
                        .pool
                        .run(|conn| redis::cmd("PING").query::<String>(conn));
                    backend.inner.breaker.record_probe(failure(&result));
                });
            });
        if let Err(err) = spawned {
            tracing::debug!(error = %err, "cannot start the circuit breaker's probe");
            self.inner.breaker.abandon_probe();
        }
    }

    fn skipped(&self, operation: &'static str, key: &str, reason: &'static str) -> Error {
        Error::Skipped {
            address: self.inner.address.clone(),
            operation,
            key: key.to_owned(),
            reason,
        }
    }

    /// The shared async connection, opened on first use (within the connect timeout and
    /// by `deadline`), and whether it was reused.
    async fn async_connection(
        &self,
        deadline: tokio::time::Instant,
    ) -> RedisResult<(AsyncConnection, bool)> {
        let cached = self.slot().clone();
        if let Some(conn) = cached {
            return Ok((conn, true));
        }
        let timeout = self
            .inner
            .connect_timeout
            .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(self.inner.response_timeout))
            .set_number_of_retries(1);
        let opening = async {
            match &self.inner.client {
                Client::Node(node) => node
                    .client_async(timeout)
                    .await?
                    .get_connection_manager_with_config(config)
                    .await
                    .map(AsyncConnection::Single),
                Client::Cluster(client) => client
                    .get_async_connection()
                    .await
                    .map(AsyncConnection::Cluster),
            }
        };
        // The manager retries a failed connect: bound the whole, not each attempt.
        let conn = link::within(timeout, format!("after {timeout:?} connecting"), opening)
            .await
            .map_err(|err| timed_out(err, timeout, "connecting"))
            .inspect_err(|_| self.inner.client.forget())?;
        *self.slot() = Some(conn.clone());
        Ok((conn, false))
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<AsyncConnection>> {
        self.inner
            .async_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request`. One deadline covers the call, as on the blocking path: the
    /// response timeout from its start, opening a connection included (which the
    /// connect timeout also bounds). A failed connection is dropped (the next call opens
    /// another: its driver may have died with the runtime that started it). A reused
    /// connection found dropped before the request reached the server, or answering
    /// `READONLY` (its server demoted by a failover), is replaced and the request sent
    /// once more, by the same deadline.
    async fn send_async(&self, request: &Request) -> RedisResult<Value> {
        let within = self.inner.response_timeout;
        let deadline = tokio::time::Instant::now() + within;
        let (mut conn, reused) = self.async_connection(deadline).await?;
        let mut reply = request.send_by(&mut conn, deadline, within).await;
        if let Err(err) = &reply {
            if is_stale(err) {
                self.drop_async_connection();
            }
            if reused && went_away(err) {
                let (mut fresh, _) = self.async_connection(deadline).await?;
                reply = request.send_by(&mut fresh, deadline, within).await;
                if reply.as_ref().is_err_and(is_stale) {
                    self.drop_async_connection();
                }
            }
        }
        reply
    }

    /// Drops the shared async connection (it failed, or its server was demoted): the
    /// next call opens another, to the master the Sentinels name then.
    fn drop_async_connection(&self) {
        self.slot().take();
        self.inner.client.forget();
    }
}

/// Why a call skipped an open breaker's server.
const BREAKER_OPEN: &str = "circuit breaker open after repeated failures (reported when it opened)";
/// Why an async call outside a Tokio runtime skipped the server.
const NO_RUNTIME: &str = "no Tokio runtime to run the async Redis client on";
/// Why an async call on a runtime without its drivers skipped the server.
const NO_DRIVERS: &str =
    "the Tokio runtime has no I/O or time driver for the async Redis client (enable_all)";

/// The failure to count against the breaker: the server did not answer. An error
/// reply is an answer.
fn failure<T>(result: &RedisResult<T>) -> Option<&dyn std::fmt::Display> {
    match result {
        Err(err) if is_connection_failure(err) => Some(err),
        _ => None,
    }
}

/// One request: a command or a script.
pub(super) enum Request {
    Command(Cmd),
    Script(ScriptInvocation<'static>),
}

impl Request {
    /// Sends it on a blocking connection.
    fn query(&self, conn: &mut dyn ConnectionLike) -> RedisResult<Value> {
        match self {
            Self::Command(cmd) => cmd.query(conn),
            Self::Script(script) => script.invoke(conn),
        }
    }

    async fn send(&self, conn: &mut AsyncConnection) -> RedisResult<Value> {
        match self {
            Self::Command(cmd) => cmd.query_async(conn).await,
            Self::Script(script) => script.invoke_async(conn).await,
        }
    }

    /// [`send`](Self::send), abandoned at `deadline` (`within` after the call began).
    async fn send_by(
        &self,
        conn: &mut AsyncConnection,
        deadline: tokio::time::Instant,
        within: Duration,
    ) -> RedisResult<Value> {
        tokio::time::timeout_at(deadline, self.send(conn))
            .await
            .unwrap_or_else(|_| {
                Err(link::timeout(format_args!(
                    "after {within:?} waiting for the reply"
                )))
            })
            .map_err(|err| timed_out(err, within, "waiting for the reply"))
    }
}
