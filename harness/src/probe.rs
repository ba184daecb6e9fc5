//! Probes the harnesses read a process and a private `redis-server` with: a client that
//! pings the server every millisecond on a thread of its own ([`Pinger`]), the server's
//! slowest commands ([`Slowlog`]), its memory, its keys and what they show in clear,
//! and this process's resident set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cache_memoize_tests::server::RedisServer;

/// A harness's error.
pub type Failure = Box<dyn std::error::Error>;

/// The pings sent so far: when each was sent and its round trip.
#[derive(Default)]
struct Pings {
    sent: Vec<(Instant, Duration)>,
    failed: Option<String>,
}

/// A client of its own, on a thread of its own, that sends `PING` every millisecond
/// (or at once, when the last one took longer) and keeps every round trip. Stopped when
/// dropped.
pub struct Pinger {
    pings: Arc<(Mutex<Pings>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Pinger {
    /// Starts pinging `server`.
    ///
    /// # Errors
    /// When the client cannot connect.
    pub fn start(server: &RedisServer) -> Result<Self, Failure> {
        let mut conn = redis::Client::open(server.url())?.get_connection()?;
        let pings = Arc::new((Mutex::new(Pings::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (pings, stop) = (Arc::clone(&pings), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let answer = redis::cmd("PING").query::<String>(&mut conn);
                    let took = sent.elapsed();
                    let (lock, arrived) = &*pings;
                    let mut pings = lock.lock().unwrap_or_else(PoisonError::into_inner);
                    match answer {
                        Ok(_) => pings.sent.push((sent, took)),
                        Err(e) => pings.failed = Some(e.to_string()),
                    }
                    let failed = pings.failed.is_some();
                    drop(pings);
                    arrived.notify_all();
                    if failed {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1).saturating_sub(took));
                }
            })
        };
        Ok(Self {
            pings,
            stop,
            thread: Some(thread),
        })
    }

    /// The pings that were under way at any moment between `from` and `to`; waits
    /// for the first ping sent after `to`, so that one held up across `to` is counted.
    ///
    /// # Errors
    /// When a ping failed.
    pub fn between(&self, from: Instant, to: Instant) -> Result<PingStats, Failure> {
        let (lock, arrived) = &*self.pings;
        let mut pings = lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(failed) = &pings.failed {
                return Err(format!("a ping failed: {failed}").into());
            }
            if pings.sent.last().is_some_and(|(sent, _)| *sent > to) {
                break;
            }
            pings = arrived.wait(pings).unwrap_or_else(PoisonError::into_inner);
        }
        let mut times: Vec<Duration> = pings
            .sent
            .iter()
            .filter(|(sent, took)| *sent <= to && *sent + *took >= from)
            .map(|(_, took)| *took)
            .collect();
        times.sort();
        let over = |ms: u64| {
            times
                .iter()
                .filter(|took| **took > Duration::from_millis(ms))
                .count()
        };
        Ok(PingStats {
            count: times.len(),
            max: times.last().copied().unwrap_or_default(),
            p99: times
                .get(times.len() * 99 / 100)
                .copied()
                .unwrap_or_default(),
            over_1ms: over(1),
            over_2ms: over(2),
        })
    }

    /// The pings of the next `span`, while the caller sends nothing.
    ///
    /// # Errors
    /// When a ping failed.
    pub fn idle(&self, span: Duration) -> Result<PingStats, Failure> {
        let from = Instant::now();
        std::thread::sleep(span);
        self.between(from, Instant::now())
    }
}

/// The round trips of the pings of a span of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    /// How many pings.
    pub count: usize,
    /// The longest round trip.
    pub max: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// How many took more than 1 ms.
    pub over_1ms: usize,
    /// How many took more than 2 ms.
    pub over_2ms: usize,
}

impl std::fmt::Display for PingStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "max={:.2}ms,p99={:.2}ms,n={},over_1ms={},over_2ms={}",
            ms(self.max),
            ms(self.p99),
            self.count,
            self.over_1ms,
            self.over_2ms
        )
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The server's log of its slow commands (those of 0.1 ms or more), read phase by
/// phase: what the server itself spent on one command, whatever the clients' threads
/// and the network add.
pub struct Slowlog {
    conn: redis::Connection,
}

/// The slowest command a [`Slowlog`] logged since its reset.
#[derive(Debug, Clone, PartialEq)]
pub struct Slowest {
    /// Its duration on the server, in milliseconds (0 when none was logged).
    pub ms: f64,
    /// Its name (`GET`, `EVALSHA`...), `none` when none was logged.
    pub command: String,
    /// How many commands of 0.1 ms or more were logged.
    pub count: usize,
}

impl std::fmt::Display for Slowest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2}ms({},n={})", self.ms, self.command, self.count)
    }
}

impl Slowlog {
    /// Logs `server`'s commands of 0.1 ms or more, up to 10,000 of them.
    ///
    /// # Errors
    /// When the server cannot be reached or configured.
    pub fn new(server: &RedisServer) -> Result<Self, Failure> {
        let mut conn = redis::Client::open(server.url())?.get_connection()?;
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(100)
            .arg("slowlog-max-len")
            .arg(10_000)
            .exec(&mut conn)?;
        Ok(Self { conn })
    }

    /// Forgets what was logged.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub fn reset(&mut self) -> Result<(), Failure> {
        redis::cmd("SLOWLOG").arg("RESET").exec(&mut self.conn)?;
        Ok(())
    }

    /// The slowest command logged since the last reset.
    ///
    /// # Errors
    /// When the server cannot be reached or its log is not the expected shape.
    pub fn slowest(&mut self) -> Result<Slowest, Failure> {
        let entries: Vec<Vec<redis::Value>> = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(-1)
            .query(&mut self.conn)?;
        let mut slowest = Slowest {
            ms: 0.0,
            command: "none".into(),
            count: entries.len(),
        };
        for entry in &entries {
            let (Some(redis::Value::Int(micros)), Some(redis::Value::Array(args))) =
                (entry.get(2), entry.get(3))
            else {
                return Err("a SLOWLOG entry of another shape".into());
            };
            #[allow(clippy::cast_precision_loss)]
            let ms = *micros as f64 / 1000.0;
            if ms > slowest.ms {
                slowest.ms = ms;
                slowest.command = match args.first() {
                    Some(redis::Value::BulkString(name)) => {
                        String::from_utf8_lossy(name).to_uppercase()
                    }
                    _ => "?".into(),
                };
            }
        }
        Ok(slowest)
    }
}

/// The server's `used_memory` (`INFO memory`), in bytes.
///
/// # Errors
/// When the server cannot be reached or does not report it.
pub fn used_memory(server: &RedisServer) -> Result<u64, Failure> {
    let mut conn = redis::Client::open(server.url())?.get_connection()?;
    let info: String = redis::cmd("INFO").arg("memory").query(&mut conn)?;
    let line = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .ok_or("INFO memory has no used_memory")?;
    Ok(line.trim().parse()?)
}

/// Every key name on the server (`SCAN`), as bytes.
///
/// # Errors
/// When the server cannot be reached.
pub fn all_keys(conn: &mut redis::Connection) -> Result<Vec<Vec<u8>>, Failure> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(conn)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// How many keys on the server show one of `needles` in clear, in their name or in
/// their value (a string's bytes; a hash's, list's, set's or sorted set's members).
///
/// # Errors
/// When the server cannot be reached, or holds a key of another type (a stream...).
pub fn in_clear(conn: &mut redis::Connection, needles: &[&str]) -> Result<usize, Failure> {
    let shows = |bytes: &[u8]| {
        needles
            .iter()
            .any(|needle| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    };
    let mut found = 0;
    for key in all_keys(conn)? {
        if shows(&key) {
            found += 1;
            continue;
        }
        let kind: String = redis::cmd("TYPE").arg(&key).query(conn)?;
        let parts: Vec<Vec<u8>> = match kind.as_str() {
            "none" => Vec::new(), // expired since the scan
            "string" => vec![redis::cmd("GET").arg(&key).query(conn)?],
            "hash" => redis::cmd("HGETALL").arg(&key).query(conn)?,
            "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query(conn)?,
            "set" => redis::cmd("SMEMBERS").arg(&key).query(conn)?,
            "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).query(conn)?,
            other => return Err(format!("a key of type {other}, which is not read").into()),
        };
        if parts.iter().any(|part| shows(part)) {
            found += 1;
        }
    }
    Ok(found)
}

/// This process's resident set (`VmRSS`), in KiB.
///
/// # Errors
/// When `/proc/self/status` cannot be read (not Linux).
pub fn rss_kb() -> Result<u64, Failure> {
    status_kb("VmRSS:")
}

/// This process's peak resident set (`VmHWM`) since it started or since the last
/// [`reset_peak_rss`], in KiB.
///
/// # Errors
/// When `/proc/self/status` cannot be read (not Linux).
pub fn peak_rss_kb() -> Result<u64, Failure> {
    status_kb("VmHWM:")
}

/// Resets this process's peak resident set to its current one (writes `5` to
/// `/proc/self/clear_refs`).
///
/// # Errors
/// When `/proc/self/clear_refs` cannot be written (not Linux).
pub fn reset_peak_rss() -> Result<(), Failure> {
    std::fs::write("/proc/self/clear_refs", "5")?;
    Ok(())
}

fn status_kb(field: &str) -> Result<u64, Failure> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .ok_or_else(|| format!("no {field} in /proc/self/status"))?;
    let kb = line
        .split_whitespace()
        .next()
        .ok_or_else(|| format!("{field} carries no number"))?;
    Ok(kb.parse()?)
}
