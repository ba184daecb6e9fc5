//! The scale harness: a fleet of idle "processes" (each a `RedisBackend` that has
//! completed one lock wait and now waits on nothing) on one private Redis, spread over
//! a few OS processes, and what they cost the rest of the fleet.
//!
//! ```sh
//! cargo run --release --example scale
//! cargo run --release --example scale -- --rounds 3 --seconds 3 --fleet 0,100,1000  # the defaults
//! cargo run --release --example scale -- --old-pattern     # the design before, for comparison
//! CACHE_MEMOIZE_QUICK=1 cargo run --release --example scale  # quick: 1 round, 1 s, fleets 0,100
//! ```
//!
//! For each fleet size it measures (a) the releases per second Redis sustains
//! (`take_lock` + `store_and_release` on keys nobody waits for, from 4 threads) and the
//! Redis CPU per release, and (b) the release messages the idle fleet receives (goal:
//! 0). Then (c) a stampede: the whole fleet (1,000 callers) calls one cold memoized
//! function: computes, each waiter's latency from the end of the computation to its
//! return, and the commands per caller (counted by a proxy on the wire for the first
//! worker's callers). The fleet is built up and torn down `--rounds` times (the machine
//! drifts); rates are the median over the rounds, idle messages the sum. It ends with
//! exactly one line per fleet size:
//! `fleet=<n> releases_per_s=<x> ratio_vs_empty=<x.xx> idle_messages=<n>`.
//!
//! `--old-pattern` adds, for comparison, the design before issue 12 to every idle
//! backend: a connection holding `PSUBSCRIBE cache-memoize:released:*`, read by a
//! thread of its own.
//!
//! It starts its own `redis-server` (`--maxclients 10000`), and the workers raise their
//! open-file limit to the hard limit (`ulimit -n`) before they start. It is bounded:
//! `rounds × fleets × seconds` of measuring, plus the fleets' set-up (a few
//! seconds per 1,000 backends) and one stampede: about a minute at the defaults.

// Rates and percentiles of counts: float casts of small counts lose nothing.
#![allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_memoize::{
    Backend, CacheBackend, LockClaim, LockOptions, MemoizeOptions, RedisBackend, make_cache_key,
    memoize,
};
use cache_memoize_harness::quick::sized;
use cache_memoize_tests::proxy::CountingProxy;
use cache_memoize_tests::server::RedisServer;

type Failure = Box<dyn std::error::Error>;

/// The releasing threads.
const RELEASERS: usize = 4;
/// The stampede's computation.
const COMPUTE: Duration = Duration::from_millis(300);

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        return worker(&args[1..]);
    }
    let mut seconds = sized(3_u64, 1);
    let mut fleets = sized(vec![0_usize, 100, 1000], vec![0, 100]);
    let mut old_pattern = false;
    let mut rounds = sized(3_usize, 1);
    let mut flags = args.iter();
    while let Some(flag) = flags.next() {
        if flag == "--old-pattern" {
            old_pattern = true;
            continue;
        }
        let value = flags
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seconds" => seconds = value.parse()?,
            "--rounds" => rounds = value.parse::<usize>()?.max(1),
            "--fleet" => {
                fleets = value.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    fleets.sort_unstable();
    run(Duration::from_secs(seconds), &fleets, old_pattern, rounds)
}

/// One worker process holding part of the fleet.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    backends: usize,
}

impl Worker {
    /// Starts a worker with `backends` idle backends on `url`, under a raised open-file
    /// limit, and waits until they have each completed a wait.
    fn start(url: &str, backends: usize, direct: &str, old_pattern: bool) -> Result<Self, Failure> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@""#)
            .arg(exe)
            .args(["--worker", url, direct, &backends.to_string()])
            .args(old_pattern.then_some("--old-pattern"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("worker pipes".into());
        };
        let mut worker = Self {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            backends,
        };
        worker.expect("ready")?;
        Ok(worker)
    }

    fn send(&mut self, line: &str) -> Result<(), Failure> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }

    fn line(&mut self) -> Result<String, Failure> {
        Ok(self.stdout.next().ok_or("a worker ended early")??)
    }

    fn expect(&mut self, what: &str) -> Result<(), Failure> {
        let line = self.line()?;
        if line == what {
            Ok(())
        } else {
            Err(format!("a worker said {line:?}, not {what:?}").into())
        }
    }

    fn messages(&mut self) -> Result<u64, Failure> {
        self.send("messages")?;
        Ok(self.line()?.parse()?)
    }
}

/// One fleet size's numbers.
struct Measured {
    fleet: usize,
    releases_per_s: f64,
    cpu_us_per_release: f64,
    idle_messages: u64,
}

fn run(
    window: Duration,
    fleets: &[usize],
    old_pattern: bool,
    rounds: usize,
) -> Result<(), Failure> {
    let server = RedisServer::start_with(&["--maxclients", "10000"]);
    let direct = server.url();
    let proxy = CountingProxy::start(server.port());
    let releasing = RedisBackend::builder([direct.as_str()])
        .max_connections(RELEASERS as u32)
        .connect()?;
    let mut inspect = server.connection();
    let mut measured: Vec<Vec<Measured>> = fleets.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        let mut workers: Vec<Worker> = Vec::new();
        for (&fleet, measured) in fleets.iter().zip(&mut measured) {
            let setting_up = Instant::now();
            let mut have: usize = workers.iter().map(|w| w.backends).sum();
            while have < fleet {
                // The first worker's callers go through the counting proxy.
                let (url, size) = if workers.is_empty() {
                    (proxy.url(), (fleet - have).min(100))
                } else {
                    (direct.clone(), (fleet - have).min(300))
                };
                workers.push(Worker::start(&url, size, &direct, old_pattern)?);
                have += size;
            }
            let set_up = setting_up.elapsed();
            let m = measure(&releasing, &mut workers, &mut inspect, window, fleet)?;
            eprintln!(
                "round {round}, fleet {fleet} ({} worker processes, set up in {:.1} s): \
                 {:.0} releases/s, Redis CPU {:.1} µs per release, idle messages {}",
                workers.len(),
                set_up.as_secs_f64(),
                m.releases_per_s,
                m.cpu_us_per_release,
                m.idle_messages
            );
            measured.push(m);
        }
        if round == rounds && !workers.is_empty() {
            stampede(&mut workers, &proxy, &mut inspect)?;
        }
        for worker in &mut workers {
            worker.send("quit")?;
        }
        for mut worker in workers {
            worker.child.wait()?;
        }
    }
    let summary: Vec<Measured> = fleets
        .iter()
        .zip(&measured)
        .map(|(&fleet, runs)| Measured {
            fleet,
            releases_per_s: median(runs.iter().map(|m| m.releases_per_s)),
            cpu_us_per_release: median(runs.iter().map(|m| m.cpu_us_per_release)),
            idle_messages: runs.iter().map(|m| m.idle_messages).sum(),
        })
        .collect();
    let empty = summary
        .iter()
        .find(|m| m.fleet == 0)
        .map_or(f64::NAN, |m| m.releases_per_s);
    for m in &summary {
        eprintln!(
            "fleet {}: median of {rounds} rounds: Redis CPU {:.1} µs per release",
            m.fleet, m.cpu_us_per_release
        );
    }
    for m in &summary {
        println!(
            "fleet={} releases_per_s={:.0} ratio_vs_empty={:.2} idle_messages={}",
            m.fleet,
            m.releases_per_s,
            m.releases_per_s / empty,
            m.idle_messages
        );
    }
    Ok(())
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => f64::midpoint(values[n / 2 - 1], values[n / 2]),
    }
}

/// Releases for `window` while `workers` hold the idle fleet.
fn measure(
    releasing: &RedisBackend,
    workers: &mut [Worker],
    inspect: &mut redis::Connection,
    window: Duration,
    fleet: usize,
) -> Result<Measured, Failure> {
    let before: Vec<u64> = workers
        .iter_mut()
        .map(Worker::messages)
        .collect::<Result<_, _>>()?;
    // Warm: connections open, scripts cached, the server past the fleet's arrival.
    release_for(releasing, window / 4, fleet)?;
    let cpu = redis_cpu(inspect)?;
    let releases = release_for(releasing, window, fleet)?;
    let cpu = redis_cpu(inspect)? - cpu;
    let mut idle_messages = 0;
    for (worker, before) in workers.iter_mut().zip(before) {
        idle_messages += worker.messages()? - before;
    }
    Ok(Measured {
        fleet,
        releases_per_s: releases as f64 / window.as_secs_f64(),
        cpu_us_per_release: cpu * 1e6 / releases.max(1) as f64,
        idle_messages,
    })
}

/// Redis's CPU time so far (user + system), in seconds.
fn redis_cpu(conn: &mut redis::Connection) -> Result<f64, Failure> {
    let info: String = redis::cmd("INFO").arg("cpu").query(conn)?;
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.parse().ok())
            .unwrap_or(0.0)
    };
    Ok(field("used_cpu_user") + field("used_cpu_sys"))
}

/// Takes and releases (stores under) locks on fresh keys from [`RELEASERS`] threads
/// for `window`; returns the releases.
fn release_for(backend: &RedisBackend, window: Duration, fleet: usize) -> Result<u64, Failure> {
    let round = now_us();
    let releases = AtomicU64::new(0);
    let deadline = Instant::now() + window;
    thread::scope(|scope| {
        for releaser in 0..RELEASERS {
            let releases = &releases;
            scope.spawn(move || {
                let mut n = 0_u64;
                while Instant::now() < deadline {
                    n += 1;
                    let key = make_cache_key(&format!("scale:{fleet}:{round}:{releaser}:{n}"));
                    let lock_key = key.lock_key();
                    let mut claim = LockClaim {
                        key: &lock_key,
                        token: b"releaser",
                        ttl: Duration::from_secs(10),
                        value_key: key.as_str(),
                        fence: 0,
                    };
                    let taken = backend.take_lock(&claim).ok().flatten();
                    let stored = taken.is_some_and(|fence| {
                        claim.fence = fence;
                        backend
                            .store_and_release(key.as_str(), b"v", Duration::from_secs(10), &claim)
                            .is_ok_and(|ours| ours)
                    });
                    if stored {
                        releases.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let releases = releases.into_inner();
    if releases == 0 {
        return Err("no release succeeded".into());
    }
    Ok(releases)
}

/// The whole fleet calls one cold memoized function at once.
fn stampede(
    workers: &mut [Worker],
    proxy: &CountingProxy,
    inspect: &mut redis::Connection,
) -> Result<(), Failure> {
    let key = format!("scale:stampede:{}", now_us());
    proxy.clear();
    for worker in workers.iter_mut() {
        worker.send(&format!("stampede {key}"))?;
    }
    let mut latencies_ms = Vec::new();
    let mut proxied_callers = 0;
    for (index, worker) in workers.iter_mut().enumerate() {
        loop {
            let line = worker.line()?;
            if line == "done" {
                break;
            }
            if let Some(us) = line.strip_prefix("waited_us ") {
                latencies_ms.push(us.parse::<f64>()? / 1000.0);
            }
        }
        if index == 0 {
            proxied_callers = worker.backends;
        }
    }
    let commands = proxy.commands();
    let computes: u64 = redis::cmd("GET")
        .arg(format!("{key}:computes"))
        .query(inspect)?;
    latencies_ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies_ms
            .get(((latencies_ms.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for name in &commands {
        *by_name.entry(name.as_str()).or_default() += 1;
    }
    let callers: usize = workers.iter().map(|w| w.backends).sum();
    println!(
        "stampede: {callers} callers in {} processes, compute {} ms: computes={computes}",
        workers.len(),
        COMPUTE.as_millis()
    );
    println!(
        "stampede: wake-up latency after the compute (ms, {} waiters): p50 {:.1}, p99 {:.1}, max {:.1}",
        latencies_ms.len(),
        at(0.5),
        at(0.99),
        latencies_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "stampede: commands per caller {:.2} ({proxied_callers} callers on the wire): {by_name:?}",
        commands.len() as f64 / proxied_callers.max(1) as f64
    );
    Ok(())
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A worker: `backends` backends on `url`, each made idle by one completed wait, then
/// answering `messages`, `stampede <key>` and `quit` on stdin.
fn worker(args: &[String]) -> Result<(), Failure> {
    let (old_pattern, args) = match args {
        [rest @ .., flag] if flag == "--old-pattern" => (true, rest),
        _ => (false, args),
    };
    let [url, direct, count] = args else {
        return Err("worker arguments: url direct-url backends [--old-pattern]".into());
    };
    let count: usize = count.parse()?;
    let backends: Vec<Arc<RedisBackend>> = (0..count)
        .map(|_| {
            RedisBackend::builder([url.as_str()])
                .max_connections(1)
                .connect()
                .map(Arc::new)
        })
        .collect::<Result<_, _>>()?;
    let holder = Arc::new(RedisBackend::connect(direct)?);
    warm_up(&backends, &holder)?;
    wait_until_unsubscribed(&backends);
    let pattern_messages = Arc::new(AtomicU64::new(0));
    if old_pattern {
        for _ in 0..count {
            subscribe_to_every_release(direct, &pattern_messages)?;
        }
    }
    let (stdin, mut stdout) = (std::io::stdin(), std::io::stdout());
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    for line in stdin.lock().lines() {
        let line = line?;
        match line.split_once(' ') {
            None if line == "messages" => {
                let messages: u64 = backends.iter().map(|b| b.wake_up_messages()).sum::<u64>()
                    + pattern_messages.load(Ordering::Relaxed);
                writeln!(stdout, "{messages}")?;
            }
            Some(("stampede", key)) => {
                for waited in run_stampede(&backends, key, direct)? {
                    writeln!(stdout, "waited_us {waited}")?;
                }
                // Until the subscriptions are dropped: their UNSUBSCRIBE counts too.
                wait_until_unsubscribed(&backends);
                writeln!(stdout, "done")?;
            }
            _ => break,
        }
        stdout.flush()?;
    }
    Ok(())
}

/// The design before issue 12, for comparison: a connection per backend holding
/// `PSUBSCRIBE cache-memoize:released:*`, read (and counted) by a thread of its own.
fn subscribe_to_every_release(direct: &str, counted: &Arc<AtomicU64>) -> Result<(), Failure> {
    let mut conn = redis::Client::open(direct)?.get_connection()?;
    let counted = Arc::clone(counted);
    let (subscribed, confirmed) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut pubsub = conn.as_pubsub();
        let _ = subscribed.send(pubsub.psubscribe("cache-memoize:released:*").is_ok());
        while pubsub.get_message().is_ok() {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    if confirmed.recv()? {
        Ok(())
    } else {
        Err("PSUBSCRIBE failed".into())
    }
}

/// Waits out the subscriptions' linger after the last wait.
fn wait_until_unsubscribed(backends: &[Arc<RedisBackend>]) {
    while backends.iter().any(|b| b.wake_up_subscriptions() > 0) {
        thread::sleep(Duration::from_millis(50));
    }
}

fn locked(backend: &Arc<RedisBackend>) -> MemoizeOptions {
    MemoizeOptions::new()
        .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
        .lock(LockOptions {
            timeout: Some(Duration::from_secs(30)),
            ..LockOptions::default()
        })
}

/// Every backend waits once: on a lock the holder takes by a memoized call of its own,
/// whose computation ends (and whose value is stored under that lock) only once every
/// backend is subscribed. A store needs the lock, so the value cannot come from a
/// forced call beside a separately held `CacheLock`.
fn warm_up(backends: &[Arc<RedisBackend>], holder: &Arc<RedisBackend>) -> Result<(), Failure> {
    let key = format!("scale:warm-up:{}:{}", std::process::id(), now_us());
    let (holding, held) = std::sync::mpsc::channel();
    thread::scope(|scope| {
        let (key, opts) = (&key, locked(holder));
        let holder = scope.spawn(move || {
            memoize(key, &opts, || {
                let _ = holding.send(());
                while backends.iter().any(|b| b.wake_up_subscriptions() == 0) {
                    thread::sleep(Duration::from_millis(5));
                }
                1_u8
            })
        });
        // The holder computes under the lock from here on: every caller below waits.
        if held.recv().is_err() {
            return Err("warm-up: the holder did not compute".into());
        }
        let waiters: Vec<_> = backends
            .iter()
            .map(|backend| {
                let opts = locked(backend);
                scope.spawn(move || memoize(key, &opts, || 0_u8))
            })
            .collect();
        let stored = holder.join().ok();
        let woken = waiters
            .into_iter()
            .filter_map(|w| w.join().ok())
            .filter(|v| *v == 1)
            .count();
        if stored == Some(1) && woken == backends.len() {
            Ok(())
        } else {
            Err(format!(
                "warm-up: {woken} of {} waiters read the holder's value",
                backends.len()
            )
            .into())
        }
    })
}

/// Each backend calls the memoized function once; returns each waiter's wait after the
/// computation ended (µs).
fn run_stampede(
    backends: &[Arc<RedisBackend>],
    key: &str,
    direct: &str,
) -> Result<Vec<u64>, Failure> {
    let client = redis::Client::open(direct)?;
    let (computes, computed_at) = (format!("{key}:computes"), format!("{key}:computed_at"));
    let returned: Vec<(bool, u64)> = thread::scope(|scope| {
        let callers: Vec<_> = backends
            .iter()
            .map(|backend| {
                let (opts, client) = (locked(backend), &client);
                let (computes, computed_at) = (&computes, &computed_at);
                scope.spawn(move || {
                    let mut this_one_computed = false;
                    let _: u8 = memoize(key, &opts, || {
                        thread::sleep(COMPUTE);
                        this_one_computed = true;
                        if let Ok(mut conn) = client.get_connection() {
                            let _: redis::RedisResult<()> = redis::pipe()
                                .incr(computes, 1)
                                .set(computed_at, now_us())
                                .query(&mut conn);
                        }
                        1
                    });
                    (this_one_computed, now_us())
                })
            })
            .collect();
        callers.into_iter().filter_map(|c| c.join().ok()).collect()
    });
    let end: u64 = redis::cmd("GET")
        .arg(&computed_at)
        .query(&mut client.get_connection()?)?;
    Ok(returned
        .into_iter()
        .filter(|(computed, _)| !computed)
        .map(|(_, at)| at.saturating_sub(end))
        .collect())
}
