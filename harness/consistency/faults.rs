//! The conductor's adversaries: a fault thread that, until told to stop, kills the
//! near caches' invalidation connections (`CLIENT KILL`), restarts the cache server on
//! its port (losing every value and lock), stalls every link (`CLIENT PAUSE`, and
//! `SIGSTOP` of the server), in rotation at random intervals; and busy loops that keep
//! every core contended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use cache_memoize_tests::server::RedisServer;

use crate::record::{Fault, now_us};

/// What the fault thread does, in rotation.
const ROTATION: [&str; 6] = [
    "kill_tracking",
    "client_pause",
    "kill_tracking",
    "sigstop",
    "restart",
    "client_pause",
];

/// Starts the fault thread against `server`; it returns the server (running and
/// resumed) and the faults it made once `stop` is set.
pub(crate) fn start(
    mut server: RedisServer,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> JoinHandle<(RedisServer, Vec<Fault>)> {
    std::thread::spawn(move || {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut faults = Vec::new();
        let mut turn = 0;
        while !stop.load(Ordering::SeqCst) {
            pause(&stop, Duration::from_millis(rng.u64(100..500)));
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let kind = ROTATION[turn % ROTATION.len()];
            turn += 1;
            let start_us = now_us();
            let done = match kind {
                "kill_tracking" => kill_tracking(&server, rng.bool()),
                "client_pause" => client_pause(&server, rng.u64(20..400)),
                "sigstop" => {
                    server.pause();
                    std::thread::sleep(Duration::from_millis(rng.u64(20..400)));
                    server.resume();
                    true
                }
                _ => {
                    server.restart();
                    true
                }
            };
            if done {
                faults.push(Fault {
                    kind: kind.to_owned(),
                    start_us,
                    end_us: now_us(),
                });
            }
        }
        (server, faults)
    })
}

/// Sleeps `length`, waking early when `stop` is set.
fn pause(stop: &AtomicBool, length: Duration) {
    let tick = Duration::from_millis(10);
    let mut left = length;
    while !left.is_zero() && !stop.load(Ordering::SeqCst) {
        let now = left.min(tick);
        std::thread::sleep(now);
        left -= now;
    }
}

fn connection(server: &RedisServer) -> Option<redis::Connection> {
    redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .ok()
}

/// Kills one near cache's invalidation connection (or all of them), by the tracking
/// flag in `CLIENT LIST`. False if there was none to kill.
fn kill_tracking(server: &RedisServer, all: bool) -> bool {
    let Some(mut conn) = connection(server) else {
        return false;
    };
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut conn)
        .unwrap_or_default();
    let ids: Vec<&str> = list
        .lines()
        .filter(|line| {
            line.split(' ').any(|field| {
                field
                    .strip_prefix("flags=")
                    .is_some_and(|f| f.contains('t'))
            })
        })
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .collect();
    let chosen: Vec<&str> = if all {
        ids
    } else {
        ids.get(fastrand::usize(0..ids.len().max(1)))
            .copied()
            .into_iter()
            .collect()
    };
    let mut killed = 0;
    for id in chosen {
        let done: redis::RedisResult<i64> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query(&mut conn);
        killed += done.unwrap_or(0);
    }
    killed > 0
}

/// Stalls every client's commands for `ms` (`CLIENT PAUSE ms ALL`), and waits it out.
fn client_pause(server: &RedisServer, ms: u64) -> bool {
    let Some(mut conn) = connection(server) else {
        return false;
    };
    let paused: redis::RedisResult<()> = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("ALL")
        .query(&mut conn);
    if paused.is_err() {
        return false;
    }
    std::thread::sleep(Duration::from_millis(ms));
    true
}

/// Starts `count` threads that spin until `stop` is set.
pub(crate) fn busy_loops(count: usize, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    (0..count)
        .map(|_| {
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let mut x = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
                        );
                    }
                }
            })
        })
        .collect()
}
