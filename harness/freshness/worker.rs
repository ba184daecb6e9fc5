//! One worker process of the freshness harness: its threads call one memoized key in a
//! loop for the run's length, then print each call (latency and what it went through)
//! for the harness to aggregate. Each computation records its interval on the server.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cache_memoize::{
    CacheBackend, LockOptions, MemoizeOptions, RedisBackend, try_memoize, try_memoize_detached,
};
use serde::{Deserialize, Serialize};

use crate::witness::{self, Seen, Witness, now_us};
use crate::{Failure, Settings, Strategy};

/// The memoized value: when its computation ended, so a caller can tell its age.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Stamped {
    /// Wall-clock µs since the Unix epoch at the end of the computation.
    pub(crate) computed_at_us: u64,
}

/// A refresh that failed on purpose (`stale_failing`).
#[derive(Debug)]
pub(crate) struct RefreshFailed;

/// What a call went through, from the facts its thread recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// A fresh value from the first read.
    Hit,
    /// A value past its freshness from the first read (served stale).
    Stale,
    /// The call's own compute closure ran (it waited for its own computation).
    Computed,
    /// The call blocked on the lock another caller held.
    LockWait,
    /// The first read found nothing, or the value returned was computed after the
    /// first read returned: the call waited for another caller's computation in this
    /// process (in-process coalescing).
    Followed,
    /// The call returned an error.
    Error,
}

impl Class {
    /// Whether the call waited for a computation.
    pub(crate) fn waited(self) -> bool {
        matches!(self, Self::Computed | Self::LockWait | Self::Followed)
    }

    fn code(self) -> char {
        match self {
            Self::Hit => 'h',
            Self::Stale => 's',
            Self::Computed => 'c',
            Self::LockWait => 'l',
            Self::Followed => 'f',
            Self::Error => 'e',
        }
    }

    pub(crate) fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "h" => Self::Hit,
            "s" => Self::Stale,
            "c" => Self::Computed,
            "l" => Self::LockWait,
            "f" => Self::Followed,
            "e" => Self::Error,
            _ => return None,
        })
    }

    /// `outcome`'s class, given what the call's thread saw and when the call began.
    fn of(
        outcome: &Result<Stamped, RefreshFailed>,
        seen: Seen,
        began_us: u64,
        expire: Duration,
    ) -> Self {
        let Ok(value) = outcome else {
            return Self::Error;
        };
        if seen.computed {
            return Self::Computed;
        }
        if seen.lock_waits > 0 {
            return Self::LockWait;
        }
        match seen.first_read {
            Some(read) if read.found && value.computed_at_us <= read.at_us => {}
            _ => return Self::Followed,
        }
        let fresh_until = value
            .computed_at_us
            .saturating_add(u64::try_from(expire.as_micros()).unwrap_or(u64::MAX));
        if began_us >= fresh_until {
            Self::Stale
        } else {
            Self::Hit
        }
    }
}

/// The server keys of one strategy's run, from its base key.
pub(crate) struct Keys {
    /// The memoized value's key (before the library's prefixing).
    pub(crate) value: String,
    /// A list of `"<start µs> <end µs> ok|failed"`, one per computation (server time).
    pub(crate) computes: String,
    /// While this key exists, computations fail (`stale_failing`).
    pub(crate) failing: String,
}

impl Keys {
    pub(crate) fn new(base: &str) -> Self {
        Self {
            value: base.to_owned(),
            computes: format!("{base}:computes"),
            failing: format!("{base}:failing"),
        }
    }
}

/// How `strategy` memoizes, against `backend`.
pub(crate) fn options(
    strategy: Strategy,
    settings: &Settings,
    backend: Arc<dyn CacheBackend>,
) -> MemoizeOptions {
    let opts = MemoizeOptions::new()
        .backend(backend)
        .expire(settings.expire);
    let stale = || {
        opts.clone()
            .lock(LockOptions::default())
            .stale(settings.stale)
    };
    match strategy {
        Strategy::Nolock => opts.clone(),
        Strategy::Lock => opts.clone().lock(LockOptions::default()),
        Strategy::Stale => stale(),
        Strategy::Xfetch => stale().beta(1.0),
        Strategy::StaleFailing => stale().fail_safe(settings.fail_safe),
    }
}

/// The server's clock, in µs since the Unix epoch.
pub(crate) fn server_time_us(conn: &mut redis::Connection) -> redis::RedisResult<u64> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(conn)?;
    Ok(secs * 1_000_000 + micros)
}

/// The computation: notes itself on the caller's thread, sleeps `compute`, and records
/// its interval on the server; fails while the run's failing key exists.
struct Computation {
    client: redis::Client,
    keys: Keys,
    compute: Duration,
    /// Computations whose interval could not be recorded (reported, never hidden).
    unrecorded: AtomicU64,
}

impl Computation {
    fn run(&self) -> Result<Stamped, RefreshFailed> {
        witness::computing();
        let mut conn = self.client.get_connection().ok();
        let started = conn.as_mut().and_then(|c| server_time_us(c).ok());
        let failing = conn.as_mut().is_some_and(|c| {
            redis::cmd("EXISTS")
                .arg(&self.keys.failing)
                .query::<bool>(c)
                .unwrap_or(false)
        });
        std::thread::sleep(self.compute);
        let ended = conn.as_mut().and_then(|c| server_time_us(c).ok());
        let recorded = match (conn.as_mut(), started, ended) {
            (Some(c), Some(started), Some(ended)) => {
                let outcome = if failing { "failed" } else { "ok" };
                redis::cmd("RPUSH")
                    .arg(&self.keys.computes)
                    .arg(format!("{started} {ended} {outcome}"))
                    .query::<u64>(c)
                    .is_ok()
            }
            _ => false,
        };
        if !recorded {
            self.unrecorded.fetch_add(1, Ordering::Relaxed);
        }
        if failing {
            Err(RefreshFailed)
        } else {
            Ok(Stamped {
                computed_at_us: now_us(),
            })
        }
    }
}

/// One call of the memoized key, as `strategy` makes it.
fn call(
    strategy: Strategy,
    key: &str,
    opts: &MemoizeOptions,
    computation: &Arc<Computation>,
) -> Result<Stamped, RefreshFailed> {
    let computation = Arc::clone(computation);
    let compute = move || computation.run();
    match strategy {
        Strategy::Nolock | Strategy::Lock => try_memoize(key, opts, compute),
        Strategy::Stale | Strategy::Xfetch | Strategy::StaleFailing => {
            try_memoize_detached(key, opts, compute)
        }
    }
}

/// The worker's entry: `--worker <redis-url> <base-key> <settings flags>`, one
/// strategy in `--strategies`.
pub(crate) fn run(args: &[String]) -> Result<(), Failure> {
    let [url, base, flags @ ..] = args else {
        return Err("worker arguments: <redis-url> <base-key> <settings flags>".into());
    };
    let settings = Settings::parse(flags)?;
    let [strategy] = settings.strategies[..] else {
        return Err("a worker runs exactly one strategy".into());
    };
    let refresh_lock = cache_memoize::make_cache_key(base).refresh_key();
    let witness = Arc::new(Witness::new(RedisBackend::connect(url)?, refresh_lock));
    let opts = options(strategy, &settings, witness.clone());
    let computation = Arc::new(Computation {
        client: redis::Client::open(url.as_str())?,
        keys: Keys::new(base),
        compute: settings.compute,
        unrecorded: AtomicU64::new(0),
    });
    warm_up(&opts, settings.threads);
    println!("ready");
    std::io::stdout().flush()?;
    if std::io::stdin().lock().read_line(&mut String::new())? == 0 {
        return Err("the harness went away before the start".into());
    }

    let calls = Mutex::new(Vec::new());
    let start = Barrier::new(settings.threads);
    std::thread::scope(|scope| {
        for thread in 0..settings.threads {
            let (opts, computation) = (&opts, &computation);
            let (start, calls, settings) = (&start, &calls, &settings);
            scope.spawn(move || {
                start.wait();
                // Spread the threads over one pause, so they do not call in lockstep.
                std::thread::sleep(
                    settings
                        .pause
                        .mul_f64(thread as f64 / settings.threads as f64),
                );
                let mine = caller(
                    strategy,
                    settings,
                    &computation.keys.value,
                    opts,
                    computation,
                );
                calls
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(mine);
            });
        }
    });
    // Detached refreshes still running finish (and record themselves) before exit.
    std::thread::sleep(settings.compute * 2 + Duration::from_millis(500));

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (latency_us, class) in calls.into_inner().unwrap_or_else(PoisonError::into_inner) {
        writeln!(out, "call {latency_us} {}", class.code())?;
    }
    let unrecorded = computation.unrecorded.load(Ordering::Relaxed);
    writeln!(out, "unrecorded {unrecorded}")?;
    let (attempts, taken) = witness.refresh_attempts();
    writeln!(out, "refresh_lock {attempts} {taken}")?;
    out.flush()?;
    Ok(())
}

/// One thread's loop: calls until the run's end, pausing between calls; each call's
/// latency (µs) and class.
fn caller(
    strategy: Strategy,
    settings: &Settings,
    key: &str,
    opts: &MemoizeOptions,
    computation: &Arc<Computation>,
) -> Vec<(u64, Class)> {
    let mut calls = Vec::new();
    let end = Instant::now() + settings.seconds;
    while Instant::now() < end {
        witness::begin();
        let began_us = now_us();
        let began = Instant::now();
        let outcome = call(strategy, key, opts, computation);
        let latency = began.elapsed();
        let class = Class::of(&outcome, witness::end(), began_us, settings.expire);
        calls.push((
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            class,
        ));
        std::thread::sleep(settings.pause);
    }
    calls
}

/// Brings the worker to steady state before the run: a pooled connection per thread,
/// the scripts loaded, the wake-up subscriber listening.
fn warm_up(opts: &MemoizeOptions, threads: usize) {
    let key = format!("freshness-warm-up:{}", std::process::id());
    let start = Barrier::new(threads);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                start.wait();
                let _ = try_memoize(&key, opts, || Ok::<u8, RefreshFailed>(1));
            });
        }
    });
    std::thread::sleep(Duration::from_millis(300));
}
