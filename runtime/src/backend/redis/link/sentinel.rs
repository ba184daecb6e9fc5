//! Redis Sentinel: which server is the master now ([`Master`]), asked of the Sentinels
//! when a connection is opened and nothing is known, and asked again after a connection
//! to it failed or it answered `READONLY` (it was demoted).
//!
//! The resolution follows the Sentinel client guidelines: each Sentinel in turn is
//! asked `SENTINEL GET-MASTER-ADDR-BY-NAME`, and the first address given is checked
//! with `ROLE` (a Sentinel's view can lag behind a failover). Written here rather than
//! with redis-rs's `sentinel` module, which opens its connections without timeouts: a
//! stalled Sentinel or master would hang the caller. Every step here is bounded by the
//! connect and response timeouts, and by the caller's budget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::{ConnectionInfo, RedisError, RedisResult};

use super::Timeouts;

/// The master of one Sentinel-monitored service, resolved on demand.
pub(crate) struct Master {
    /// The Sentinels (database 0, no credentials).
    sentinels: Vec<ConnectionInfo>,
    /// The service's name in the Sentinels' configuration.
    name: String,
    /// How to connect to the master (credentials, database, TLS), its address aside.
    node: ConnectionInfo,
    timeouts: Timeouts,
    /// The master's client, while it is believed to be the master.
    current: Mutex<Option<redis::Client>>,
    /// Set by [`forget`](Self::forget): `current` is dropped by the next caller.
    forgotten: AtomicBool,
}

impl Master {
    /// A master named `name`, watched by the Sentinels at `sentinels`; the first
    /// Sentinel's URL gives the master's credentials and database (the Sentinels are
    /// asked without them).
    pub(crate) fn new(
        sentinels: Vec<ConnectionInfo>,
        name: String,
        timeouts: Timeouts,
    ) -> RedisResult<Self> {
        let Some(node) = sentinels.first().map(super::quiet) else {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no Sentinel URL given",
            )));
        };
        let sentinels = sentinels
            .into_iter()
            .map(|info| {
                let plain = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
                info.set_redis_settings(plain)
            })
            .collect();
        Ok(Self {
            sentinels,
            name,
            node,
            timeouts,
            current: Mutex::new(None),
            forgotten: AtomicBool::new(false),
        })
    }

    fn current(&self) -> MutexGuard<'_, Option<redis::Client>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The master's client: the one known, or one resolved now within `budget`.
    /// Threads that need it meanwhile wait for this resolution rather than repeat it.
    pub(crate) fn client(&self, budget: Duration) -> RedisResult<redis::Client> {
        let mut current = self.current();
        if self.forgotten.swap(false, Ordering::SeqCst) {
            current.take();
        }
        if let Some(client) = &*current {
            return Ok(client.clone());
        }
        let client = self.resolve(Instant::now() + budget)?;
        *current = Some(client.clone());
        Ok(client)
    }

    /// The async form of [`client`](Self::client), run on a blocking thread: an
    /// executor thread never waits for the Sentinels, nor for a blocking caller asking
    /// them (it holds the mutex meanwhile), and concurrent resolutions are merged.
    pub(crate) async fn client_async(
        self: &Arc<Self>,
        budget: Duration,
    ) -> RedisResult<redis::Client> {
        let master = Arc::clone(self);
        let resolving = async {
            tokio::task::spawn_blocking(move || master.client(budget))
                .await
                .unwrap_or_else(|err| Err(std::io::Error::other(err).into()))
        };
        super::within(budget, asking(budget), resolving).await
    }

    /// Forgets the master: the next connection asks the Sentinels again. Never waits
    /// for the mutex (it is called from async paths too): the next caller that holds
    /// it drops the master it finds (one a resolution underway stores included).
    pub(crate) fn forget(&self) {
        self.forgotten.store(true, Ordering::SeqCst);
    }

    /// Asks each Sentinel in turn, by `deadline`; the first master confirmed by `ROLE`.
    fn resolve(&self, deadline: Instant) -> RedisResult<redis::Client> {
        let mut last = None;
        for sentinel in &self.sentinels {
            let found = self
                .ask(sentinel, deadline)
                .and_then(|(host, port)| super::client_at(&self.node, &host, port))
                .and_then(|client| self.confirm(client, deadline));
            match found {
                Ok(client) => return Ok(client),
                Err(err) => last = Some(err),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(last.unwrap_or_else(|| super::timeout(asking(self.timeouts.connect))))
    }

    /// A blocking connection to `client`'s server, bounded by the timeouts and `deadline`.
    fn open(&self, client: &redis::Client, deadline: Instant) -> RedisResult<redis::Connection> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(super::timeout(asking(self.timeouts.connect)));
        }
        let conn = client.get_connection_with_timeout(self.timeouts.connect.min(left))?;
        let reply = self
            .timeouts
            .response
            .min(left)
            .max(Duration::from_millis(1));
        conn.set_read_timeout(Some(reply))?;
        conn.set_write_timeout(Some(reply))?;
        Ok(conn)
    }

    /// The master's address according to `sentinel`.
    fn ask(&self, sentinel: &ConnectionInfo, deadline: Instant) -> RedisResult<(String, u16)> {
        let client = redis::Client::open(sentinel.clone())?;
        let mut conn = self.open(&client, deadline)?;
        let reply: Option<(String, u16)> = address_query(&self.name).query(&mut conn)?;
        reply.ok_or_else(|| unknown(&self.name))
    }

    /// `client`, if its server says it is a master.
    fn confirm(&self, client: redis::Client, deadline: Instant) -> RedisResult<redis::Client> {
        let mut conn = self.open(&client, deadline)?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn)?;
        is_master(&role).then_some(client).ok_or_else(not_master)
    }
}

fn address_query(name: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("SENTINEL");
    cmd.arg("GET-MASTER-ADDR-BY-NAME").arg(name);
    cmd
}

/// Whether a `ROLE` reply is a master's.
pub(crate) fn is_master(role: &[redis::Value]) -> bool {
    matches!(role.first(), Some(redis::Value::BulkString(kind)) if kind == b"master")
        || matches!(role.first(), Some(redis::Value::SimpleString(kind)) if kind == "master")
}

fn unknown(name: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "the Sentinel does not know the master",
        name.to_owned(),
    ))
}

fn not_master() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "the server the Sentinel named is not (or no longer) a master",
    ))
}

/// What timed out: "after `after` asking the Sentinels for the master".
fn asking(after: Duration) -> impl std::fmt::Display {
    format!("after {after:?} asking the Sentinels for the master")
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{ConnectionAddr, IntoConnectionInfo};

    const SECONDS: Timeouts = Timeouts {
        connect: Duration::from_secs(1),
        response: Duration::from_secs(1),
    };

    fn master(url: &str) -> Master {
        let info = url
            .into_connection_info()
            .unwrap_or_else(|err| panic!("{err}"));
        Master::new(vec![info], "mymaster".into(), SECONDS).unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn the_master_gets_the_urls_credentials_and_database_the_sentinels_do_not() {
        let master = master("redis://user:secret@127.0.0.1:26379/3");
        let sentinel = master.sentinels[0].redis_settings();
        assert_eq!((sentinel.db(), sentinel.password()), (0, None));
        let client = super::super::client_at(&master.node, "10.0.0.9", 6380)
            .unwrap_or_else(|err| panic!("{err}"));
        let info = client.get_connection_info();
        assert_eq!(
            info.addr(),
            &ConnectionAddr::Tcp("10.0.0.9".into(), 6380),
            "the address the Sentinel gave"
        );
        let settings = info.redis_settings();
        assert_eq!(
            (settings.db(), settings.username(), settings.password()),
            (3, Some("user"), Some("secret"))
        );
    }

    #[test]
    fn a_role_reply_is_a_masters_only_when_it_says_so() {
        let master = redis::Value::BulkString(b"master".to_vec());
        let replica = redis::Value::BulkString(b"slave".to_vec());
        assert!(is_master(&[master, redis::Value::Int(0)]));
        assert!(!is_master(&[replica]));
        assert!(!is_master(&[]));
    }

    #[test]
    fn no_sentinel_is_a_configuration_error() {
        let made = Master::new(Vec::new(), "mymaster".into(), SECONDS);
        assert!(made.is_err());
    }
}
