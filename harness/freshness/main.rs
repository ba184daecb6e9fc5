//! The freshness harness: the Internet Archive's `XFetch` experiment (plain fetch, lock
//! only, `XFetch` + lock), scaled to one small machine and run against a private
//! `redis-server`: P processes × T threads call one memoized key in a loop whose value
//! is fresh for `expire` and takes `compute` to compute, for a run of several `expire`
//! windows, once per strategy:
//!
//! - `nolock`: no lock (every caller that misses computes);
//! - `lock`: the lock, no `stale` (every caller waits for the one recomputation);
//! - `stale`: `stale` + lock, refreshed on a thread (`try_memoize_detached`);
//! - `xfetch`: as `stale`, plus early refresh (`beta = 1.0`);
//! - `stale_failing`: as `stale`, but every computation fails for the first
//!   `--fail-seconds` of the run; retries are throttled by `fail_safe`.
//!
//! ```sh
//! cargo run --release --example freshness                        # 4 × 12, 30 s each
//! cargo run --release --example freshness -- --seconds 6         # a quick run
//! cargo run --release --example freshness -- --strategies stale,xfetch
//! ```
//!
//! Options: `--processes N` (4), `--threads N` (12), `--seconds N` (30), `--expire-ms N`
//! (2000), `--compute-ms N` (50), `--stale-ms N` (20000), `--pause-ms N` (10, each
//! thread's pause between calls), `--fail-seconds N` (10), `--fail-safe-ms N` (1000),
//! `--strategies a,b` (all five). Quick mode (`CACHE_MEMOIZE_QUICK=1`): 2 × 4, 2 s each,
//! `expire` 500 ms, failing for the first second, `fail_safe` 250 ms.
//!
//! It ends with one line per strategy:
//! `strategy=<name> waited=<n> recomputes=<n> per_window=<x.xx> simultaneous=<n>
//! p50_ms=<x> p99_ms=<x> hit_p99_ms=<x>`. How each column is measured: BENCHMARKS.md,
//! "Freshness".

// Percentiles and ratios of counts far below 2^52: float casts lose nothing.
#![allow(clippy::cast_precision_loss)]

mod witness;
mod worker;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cache_memoize::{RedisBackend, try_memoize};
use cache_memoize_harness::quick::sized;
use cache_memoize_tests::server::RedisServer;

use worker::{Class, Keys, RefreshFailed, Stamped};

type Failure = Box<dyn std::error::Error>;

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        return worker::run(&args[1..]);
    }
    let settings = Settings::parse(&args)?;
    let server = RedisServer::start();
    println!(
        "{} processes x {} threads on one key; expire {} ms, compute {} ms, stale {} ms, \
         pause {} ms between calls; {} s ({} windows) per strategy",
        settings.processes,
        settings.threads,
        settings.expire.as_millis(),
        settings.compute.as_millis(),
        settings.stale.as_millis(),
        settings.pause.as_millis(),
        settings.seconds.as_secs(),
        settings.windows(),
    );
    let mut lines = Vec::new();
    for &strategy in &settings.strategies {
        let run = measure(strategy, &settings, &server)?;
        println!("{}", run.detail());
        lines.push(run.line());
    }
    println!();
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// How `nolock`, `lock`, `stale`, `xfetch` and `stale_failing` memoize: see the module
/// docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Nolock,
    Lock,
    Stale,
    Xfetch,
    StaleFailing,
}

impl Strategy {
    const ALL: [Self; 5] = [
        Self::Nolock,
        Self::Lock,
        Self::Stale,
        Self::Xfetch,
        Self::StaleFailing,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Nolock => "nolock",
            Self::Lock => "lock",
            Self::Stale => "stale",
            Self::Xfetch => "xfetch",
            Self::StaleFailing => "stale_failing",
        }
    }

    fn parse(name: &str) -> Result<Self, Failure> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                format!("unknown strategy {name}: nolock, lock, stale, xfetch, stale_failing")
                    .into()
            })
    }
}

/// The run's sizes (defaults: the issue's), shared by the harness and its workers.
struct Settings {
    processes: usize,
    threads: usize,
    seconds: Duration,
    expire: Duration,
    compute: Duration,
    stale: Duration,
    pause: Duration,
    fail_for: Duration,
    fail_safe: Duration,
    strategies: Vec<Strategy>,
}

impl Settings {
    fn parse(args: &[String]) -> Result<Self, Failure> {
        let mut settings = Self {
            processes: sized(4, 2),
            threads: sized(12, 4),
            seconds: Duration::from_secs(sized(30, 2)),
            expire: Duration::from_millis(sized(2000, 500)),
            compute: Duration::from_millis(50),
            stale: Duration::from_millis(20_000),
            pause: Duration::from_millis(10),
            fail_for: Duration::from_secs(sized(10, 1)),
            fail_safe: Duration::from_millis(sized(1000, 250)),
            strategies: Strategy::ALL.to_vec(),
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let millis = || value.parse().map(Duration::from_millis);
            match flag.as_str() {
                "--processes" => settings.processes = value.parse()?,
                "--threads" => settings.threads = value.parse()?,
                "--seconds" => settings.seconds = Duration::from_secs(value.parse()?),
                "--expire-ms" => settings.expire = millis()?,
                "--compute-ms" => settings.compute = millis()?,
                "--stale-ms" => settings.stale = millis()?,
                "--pause-ms" => settings.pause = millis()?,
                "--fail-seconds" => settings.fail_for = Duration::from_secs(value.parse()?),
                "--fail-safe-ms" => settings.fail_safe = millis()?,
                "--strategies" => {
                    settings.strategies = value
                        .split(',')
                        .map(Strategy::parse)
                        .collect::<Result<_, _>>()?;
                }
                _ => return Err(format!("unknown option {flag} {value}").into()),
            }
        }
        if settings.threads == 0 || settings.processes == 0 || settings.expire.is_zero() {
            return Err("--processes, --threads and --expire-ms must be positive".into());
        }
        Ok(settings)
    }

    /// The flags that give a worker these settings, for one strategy.
    fn worker_flags(&self, strategy: Strategy) -> Vec<String> {
        let millis = |d: Duration| d.as_millis().to_string();
        [
            ("--threads", self.threads.to_string()),
            ("--seconds", self.seconds.as_secs().to_string()),
            ("--expire-ms", millis(self.expire)),
            ("--compute-ms", millis(self.compute)),
            ("--stale-ms", millis(self.stale)),
            ("--pause-ms", millis(self.pause)),
            ("--fail-safe-ms", millis(self.fail_safe)),
            ("--strategies", strategy.name().to_owned()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect()
    }

    /// How many `expire` windows a run lasts.
    fn windows(&self) -> f64 {
        self.seconds.as_secs_f64() / self.expire.as_secs_f64()
    }
}

/// One computation's interval on the server's clock.
#[derive(Debug, Clone, Copy)]
struct Interval {
    start_us: u64,
    end_us: u64,
    failed: bool,
}

/// What one strategy's run measured.
struct Run {
    strategy: Strategy,
    windows: f64,
    expire: Duration,
    /// Each call's latency (µs) and class.
    calls: Vec<(u64, Class)>,
    /// The computations that started during the run.
    computes: Vec<Interval>,
    /// Computations whose interval a worker could not record.
    unrecorded: u64,
    /// Attempts at the refresh lock, over all workers, and how many took it.
    refresh_attempts: (u64, u64),
}

/// Runs `strategy` once: starts the workers, warms the key, lets them call for the
/// run's length, and gathers their calls and the server's record of computations.
fn measure(strategy: Strategy, settings: &Settings, server: &RedisServer) -> Result<Run, Failure> {
    let base = format!("freshness:{}:{}", std::process::id(), strategy.name());
    let keys = Keys::new(&base);
    let exe = std::env::current_exe()?;
    let mut workers: Vec<Child> = Vec::new();
    for _ in 0..settings.processes {
        let worker = Command::new(&exe)
            .args(["--worker", &server.url(), &base])
            .args(settings.worker_flags(strategy))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        workers.push(worker);
    }
    let mut outputs: Vec<BufReader<ChildStdout>> = workers
        .iter_mut()
        .filter_map(|w| w.stdout.take().map(BufReader::new))
        .collect();
    for out in &mut outputs {
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            return Err(format!("a worker failed to start: {line:?}").into());
        }
    }

    // The run starts on a fresh value, computed here (not counted).
    let opts = worker::options(
        strategy,
        settings,
        Arc::new(RedisBackend::connect(&server.url())?),
    );
    let compute = settings.compute;
    let warm = try_memoize(&keys.value, &opts, || {
        std::thread::sleep(compute);
        Ok::<_, RefreshFailed>(Stamped {
            computed_at_us: witness::now_us(),
        })
    });
    warm.map_err(|_| "the first computation failed")?;

    let mut conn = redis::Client::open(server.url())?.get_connection()?;
    let started_us = worker::server_time_us(&mut conn)?;
    if strategy == Strategy::StaleFailing {
        redis::cmd("SET")
            .arg(&keys.failing)
            .arg(1)
            .arg("PX")
            .arg(settings.fail_for.as_millis().to_string())
            .query::<()>(&mut conn)?;
    }
    for worker in &mut workers {
        if let Some(stdin) = worker.stdin.as_mut() {
            stdin.write_all(b"go\n")?;
            stdin.flush()?;
        }
    }

    let Reports {
        calls,
        unrecorded,
        refresh_attempts,
    } = Reports::read(outputs)?;
    for mut worker in workers {
        let status = worker.wait()?;
        if !status.success() {
            return Err(format!("a worker failed: {status}").into());
        }
    }

    let ended_us = started_us + u64::try_from(settings.seconds.as_micros())?;
    let recorded: Vec<String> = redis::cmd("LRANGE")
        .arg(&keys.computes)
        .arg(0)
        .arg(-1)
        .query(&mut conn)?;
    let computes = recorded
        .iter()
        .map(|entry| parse_interval(entry).ok_or_else(|| format!("bad interval {entry:?}")))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|c| c.start_us >= started_us && c.start_us < ended_us)
        .collect();
    Ok(Run {
        strategy,
        windows: settings.windows(),
        expire: settings.expire,
        calls,
        computes,
        unrecorded,
        refresh_attempts,
    })
}

/// What the workers printed after the run.
struct Reports {
    calls: Vec<(u64, Class)>,
    unrecorded: u64,
    refresh_attempts: (u64, u64),
}

impl Reports {
    fn read(outputs: Vec<BufReader<ChildStdout>>) -> Result<Self, Failure> {
        let mut reports = Self {
            calls: Vec::new(),
            unrecorded: 0,
            refresh_attempts: (0, 0),
        };
        for out in outputs {
            for line in out.lines() {
                let line = line?;
                let mut words = line.split(' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("call"), Some(latency), Some(code)) => {
                        let class = Class::from_code(code)
                            .ok_or_else(|| format!("a worker sent {line:?}"))?;
                        reports.calls.push((latency.parse()?, class));
                    }
                    (Some("unrecorded"), Some(n), None) => {
                        reports.unrecorded += n.parse::<u64>()?;
                    }
                    (Some("refresh_lock"), Some(attempts), Some(taken)) => {
                        reports.refresh_attempts.0 += attempts.parse::<u64>()?;
                        reports.refresh_attempts.1 += taken.parse::<u64>()?;
                    }
                    _ => return Err(format!("a worker sent {line:?}").into()),
                }
            }
        }
        Ok(reports)
    }
}

/// `"<start µs> <end µs> ok|failed"`.
fn parse_interval(entry: &str) -> Option<Interval> {
    let mut words = entry.split(' ');
    let start_us = words.next()?.parse().ok()?;
    let end_us = words.next()?.parse().ok()?;
    let failed = words.next()? == "failed";
    Some(Interval {
        start_us,
        end_us,
        failed,
    })
}

impl Run {
    fn count(&self, class: Class) -> usize {
        self.calls.iter().filter(|(_, c)| *c == class).count()
    }

    fn waited(&self) -> usize {
        self.calls.iter().filter(|(_, c)| c.waited()).count()
    }

    /// Computations whose interval overlaps another's.
    fn simultaneous(&self) -> usize {
        let overlaps = |a: &Interval, b: &Interval| a.start_us < b.end_us && b.start_us < a.end_us;
        self.computes
            .iter()
            .enumerate()
            .filter(|&(i, a)| {
                self.computes
                    .iter()
                    .enumerate()
                    .any(|(j, b)| i != j && overlaps(a, b))
            })
            .count()
    }

    /// For each redundant computation (one that started less than `expire / 2` after a
    /// successful one ended, so while that one's value was still fresh), how long after
    /// it ended it started (µs).
    fn redundant_gaps(&self) -> Vec<u64> {
        let mut computes = self.computes.clone();
        computes.sort_unstable_by_key(|c| c.start_us);
        let half = u64::try_from(self.expire.as_micros() / 2).unwrap_or(u64::MAX);
        let mut gaps: Vec<u64> = computes
            .windows(2)
            .filter(|pair| !pair[0].failed && pair[1].start_us < pair[0].end_us + half)
            .map(|pair| pair[1].start_us.saturating_sub(pair[0].end_us))
            .collect();
        gaps.sort_unstable();
        gaps
    }

    /// The most computations running at one instant.
    fn most_at_once(&self) -> usize {
        let mut edges: Vec<(u64, bool)> = self
            .computes
            .iter()
            .flat_map(|c| [(c.start_us, true), (c.end_us, false)])
            .collect();
        // An end sorts before a start at the same instant: touching is not overlapping.
        edges.sort_unstable();
        let (mut running, mut most) = (0usize, 0usize);
        for (_, starts) in edges {
            if starts {
                running += 1;
                most = most.max(running);
            } else {
                running = running.saturating_sub(1);
            }
        }
        most
    }

    /// Latency percentiles in ms, over the calls of `class` (all calls: `None`).
    fn latency_ms(&self, class: Option<Class>, quantile: f64) -> f64 {
        let mut latencies: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| class.is_none_or(|class| *c == class))
            .map(|(latency, _)| *latency)
            .collect();
        latencies.sort_unstable();
        percentile(&latencies, quantile) / 1000.0
    }

    /// The result line.
    fn line(&self) -> String {
        format!(
            "strategy={} waited={} recomputes={} per_window={:.2} simultaneous={} p50_ms={:.3} p99_ms={:.3} hit_p99_ms={:.3}",
            self.strategy.name(),
            self.waited(),
            self.computes.len(),
            self.computes.len() as f64 / self.windows,
            self.simultaneous(),
            self.latency_ms(None, 0.50),
            self.latency_ms(None, 0.99),
            self.latency_ms(Some(Class::Hit), 0.99),
        )
    }

    /// What the run measured, in more detail than the result line.
    fn detail(&self) -> String {
        let failed = self.computes.iter().filter(|c| c.failed).count();
        let p99 = self.latency_ms(None, 0.99);
        let hit_p99 = self.latency_ms(Some(Class::Hit), 0.99);
        let redundant = self.redundant_gaps();
        let warning = if self.unrecorded > 0 {
            format!(
                "; WARNING: {} computes could not record themselves",
                self.unrecorded
            )
        } else {
            String::new()
        };
        format!(
            "{}: {} calls: {} fresh hits, {} stale values served, {} errors; waited {} \
             (own compute {}, on the lock {}, followed an in-process leader {}); \
             {} computes ({} failed), at most {} at once, {} redundant (started a median \
             {:.1} ms after the previous one ended); latency ms p50 {:.3} p99 {:.3} \
             max {:.3}, fresh hits p50 {:.3} p99 {:.3}, stale served p50 {:.3} p99 {:.3}; \
             p99 / hit p99 {:.2}; refresh lock attempted {} times, taken {}{warning}",
            self.strategy.name(),
            self.calls.len(),
            self.count(Class::Hit),
            self.count(Class::Stale),
            self.count(Class::Error),
            self.waited(),
            self.count(Class::Computed),
            self.count(Class::LockWait),
            self.count(Class::Followed),
            self.computes.len(),
            failed,
            self.most_at_once(),
            redundant.len(),
            percentile(&redundant, 0.5) / 1000.0,
            self.latency_ms(None, 0.50),
            p99,
            self.latency_ms(None, 1.0),
            self.latency_ms(Some(Class::Hit), 0.50),
            hit_p99,
            self.latency_ms(Some(Class::Stale), 0.50),
            self.latency_ms(Some(Class::Stale), 0.99),
            p99 / hit_p99,
            self.refresh_attempts.0,
            self.refresh_attempts.1,
        )
    }
}

/// The nearest-rank `quantile` of sorted `values`; NaN when there are none.
fn percentile(sorted: &[u64], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // in 0..=len
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}
