//! What the soak watches: this process's resident memory and live threads (read from
//! `/proc/self/status`), the most threads seen (sampled every 20 ms on a thread of its
//! own), and the Redis server's key count and memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One field of `/proc/self/status` (`VmRSS:` in kB, `Threads:`), if the file and the
/// field are there.
fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// This process's resident set size, in kB (0 where `/proc` has none).
pub(crate) fn rss_kb() -> u64 {
    status_field("VmRSS").unwrap_or(0)
}

/// This process's live threads (0 where `/proc` has none).
pub(crate) fn threads() -> u64 {
    status_field("Threads").unwrap_or(0)
}

/// This process's threads by name (`/proc/self/task/*/comm`), counted, sorted.
fn thread_names() -> Vec<(String, usize)> {
    let mut names = std::collections::BTreeMap::<String, usize>::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            // Numbered threads (`soak-mix-3`) counted under one name.
            let name = name
                .trim()
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
            *names.entry(name.to_owned()).or_default() += 1;
        }
    }
    names.into_iter().collect()
}

/// The most live threads seen since [`start`](Self::start), counting the sampler's own,
/// and their names when that many were last seen (by the kernel's `comm`: 15 bytes, so
/// `cache-memoize-r` is the refresh workers and the lock-renewal thread).
pub(crate) struct ThreadPeak {
    peak: Arc<AtomicU64>,
    names: Arc<Mutex<Vec<(String, usize)>>>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

/// The sampler: every 20 ms until `stop`. Names are read at a new peak, and again at
/// most once a second while at it (a thread just started still has its parent's name).
fn sample(peak: &AtomicU64, names: &Mutex<Vec<(String, usize)>>, stop: &AtomicBool) {
    let mut last_read = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = threads();
        let before = peak.fetch_max(now, Ordering::Relaxed);
        if now > before || (now == before && last_read.elapsed() >= Duration::from_secs(1)) {
            *names.lock().unwrap_or_else(PoisonError::into_inner) = thread_names();
            last_read = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl ThreadPeak {
    /// Starts sampling every 20 ms.
    pub(crate) fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let names = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, names, stop) = (Arc::clone(&peak), Arc::clone(&names), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("soak-thread-peak".into())
                .spawn(move || sample(&peak, &names, &stop))
                .ok()
        };
        Self {
            peak,
            names,
            stop,
            sampler,
        }
    }

    /// The most seen so far.
    pub(crate) fn peak(&self) -> u64 {
        let now = threads();
        self.peak.fetch_max(now, Ordering::Relaxed).max(now)
    }

    /// Stops sampling; the most seen, and the threads by name at that peak (read just
    /// after it was seen: it may differ by a short-lived thread).
    pub(crate) fn stop(mut self) -> (u64, Vec<(String, usize)>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(PoisonError::into_inner));
        (self.peak.load(Ordering::Relaxed), names)
    }
}

/// The server's key count (`DBSIZE`; 0 if it does not answer).
pub(crate) fn dbsize(conn: &mut redis::Connection) -> u64 {
    redis::cmd("DBSIZE").query(conn).unwrap_or(0)
}

/// The server's `used_memory` (`INFO memory`), in bytes (0 if it does not answer).
pub(crate) fn used_memory(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(conn)
        .unwrap_or_default();
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Walks the whole keyspace with `SCAN` (which drops every key it meets whose TTL has
/// passed, where `DBSIZE` alone still counts expired keys Redis has not reclaimed yet),
/// then returns `DBSIZE` and up to `show` of the keys left with their `PTTL` (ms; -1:
/// none).
pub(crate) fn keys_left(conn: &mut redis::Connection, show: usize) -> (u64, Vec<(String, i64)>) {
    let mut cursor: u64 = 0;
    let mut seen = Vec::new();
    loop {
        let page: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(conn);
        let Ok((next, keys)) = page else { break };
        for key in keys {
            if seen.len() < show {
                seen.push(key);
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let left = dbsize(conn);
    let shown = seen
        .into_iter()
        .map(|key| {
            let ttl = redis::cmd("PTTL").arg(&key).query(conn).unwrap_or(-2);
            (key, ttl)
        })
        .collect();
    (left, shown)
}
