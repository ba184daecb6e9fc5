//! What every link to Redis shares (the pool's connections, the near cache's tracking
//! connection, the wake-up subscriber, the Sentinel client): what an error means, how a
//! timeout is said, how long a reconnection may pause, how many replies a handshake
//! awaits. Written once here; the modules that open links import it, never each other.

use std::time::Duration;

use redis::RedisError;

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
