//! The batch harness (issue 25): what `memoize_many` costs on the wire and who computes
//! what, with a fleet of callers on one private Redis.
//!
//! ```sh
//! cargo run --release --example batch
//! cargo run --release --example batch -- --processes 4 --threads 8 --keys 1000 --batch 100 \
//!     --load-ms 200 --retry-ms 250 --lock-expire-ms 30000 --rounds 3 --hit-batches 20 \
//!     --timing-rounds 200   # the defaults
//! CACHE_MEMOIZE_QUICK=1 cargo run --release --example batch   # quick: 2 × 2 callers, 100 keys, batches of 10
//! ```
//!
//! It starts its own `redis-server` and re-executes itself as `--processes` worker
//! processes of `--threads` threads each, every process with one `RedisBackend` and a
//! blocking lock (`--retry-ms`: its `retry`, how often a waiter polls the lock besides
//! its wake-up; `--lock-expire-ms`: its `expire`; the defaults, 250 and 30,000). Then:
//!
//! 1. **Cold rounds** (`--rounds`): every caller makes one batch call at once, of
//!    `--batch` distinct random keys drawn from `--keys` keys nobody has stored (a
//!    fresh key space per round); the loader sleeps `--load-ms` and returns a 100 B
//!    value for every key it is given. Each worker checks that the loader is given
//!    only keys of its batch, and reports every key it was given: across the fleet,
//!    `computes_per_key` (keys given to loaders / distinct keys given) must be 1.00,
//!    each key loaded by exactly one caller.
//! 2. **All-hit batches**: the last round's keys are all stored (the conductor loads
//!    the rest), then every caller makes `--hit-batches` random batches of them; a
//!    loader call there is an error.
//!
//! Commands are counted on the wire, per batch call: the workers reach the server
//! through a counting proxy (`INFO commandstats` is printed beside it: it counts the
//! commands the scripts call too). The model of the current design: an
//! all-hit batch costs 1 command (`MGET`); a batch with misses 1 + 2 × (elements it
//! computes: a lock attempt and a store each) + its waits (a subscription and a
//! re-read per element another caller computes).
//!
//! 3. **Timing**, in the conductor, single-threaded, interleaved rounds of one call
//!    each, medians: an all-hit batch of 100 keys with 100 B values, against a raw
//!    `MGET` of 100 keys holding the same values as plain bincode, decoded
//!    (`hit_vs_mget`), and against 100 `memoize` hits of the same values one by one
//!    (`loop_vs_batch`, the round trips a batch saves).
//!
//! The last line is exactly
//! `keys_per_call=<n> commands_all_hit=<x> commands_any_miss=<x> loader_calls_per_call=<x> computes_per_key=<x> hit_vs_mget=<x.xx>`
//! (`keys_per_call`: the batch size; the other counts per batch call, over the cold
//! rounds for `commands_any_miss` and `loader_calls_per_call`).

// Rates and means of counts: float casts of small counts lose nothing.
#![allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_memoize::{
    CacheBackend, LockOptions, MemoizeOptions, RedisBackend, memoize, memoize_many,
};
use cache_memoize_harness::quick::sized;
use cache_memoize_tests::proxy::CountingProxy;
use cache_memoize_tests::server::RedisServer;

type Failure = Box<dyn std::error::Error>;

/// The bytes of every value (a `String`).
const VALUE_BYTES: usize = 100;
/// The timing's batch size (100 keys, as the issue asks), whatever `--batch` is.
const TIMED_KEYS: u32 = 100;

/// The run's sizes (see the module docs).
struct Settings {
    processes: usize,
    threads: usize,
    keys: u32,
    batch: usize,
    load_ms: u64,
    /// `LockOptions::retry` in ms: how often a waiter polls the lock besides its
    /// wake-up (250: the default).
    retry_ms: u64,
    /// `LockOptions::expire` in ms (30,000: the default).
    lock_expire_ms: u64,
    rounds: usize,
    hit_batches: usize,
    timing_rounds: usize,
}

impl Settings {
    fn parse(args: &[String]) -> Result<Self, Failure> {
        let mut s = Self {
            processes: sized(4, 2),
            threads: sized(8, 2),
            keys: sized(1_000, 100),
            batch: sized(100, 10),
            load_ms: sized(200, 20),
            retry_ms: 250,
            lock_expire_ms: 30_000,
            rounds: sized(3, 1),
            hit_batches: sized(20, 5),
            timing_rounds: sized(200, 20),
        };
        let mut flags = args.iter();
        while let Some(flag) = flags.next() {
            let value = flags
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--processes" => s.processes = value.parse()?,
                "--threads" => s.threads = value.parse()?,
                "--keys" => s.keys = value.parse()?,
                "--batch" => s.batch = value.parse()?,
                "--load-ms" => s.load_ms = value.parse()?,
                "--retry-ms" => s.retry_ms = value.parse()?,
                "--lock-expire-ms" => s.lock_expire_ms = value.parse()?,
                "--rounds" => s.rounds = value.parse::<usize>()?.max(1),
                "--hit-batches" => s.hit_batches = value.parse::<usize>()?.max(1),
                "--timing-rounds" => s.timing_rounds = value.parse::<usize>()?.max(1),
                _ => return Err(format!("unknown option {flag}").into()),
            }
        }
        if s.batch == 0 || s.batch > s.keys as usize {
            return Err("--batch must be between 1 and --keys".into());
        }
        Ok(s)
    }
}

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        return worker(&args[1..]);
    }
    run(&Settings::parse(&args)?)
}

/// The value memoized at key number `i`: `VALUE_BYTES` bytes.
fn value_of(i: u32) -> String {
    format!("{i:0>VALUE_BYTES$}")
}

/// A blocking lock polled every `retry_ms` while waiting, living `expire_ms`.
fn lock(retry_ms: u64, expire_ms: u64) -> LockOptions {
    LockOptions {
        timeout: Some(Duration::from_secs(60)),
        retry: Duration::from_millis(retry_ms),
        expire: Duration::from_millis(expire_ms),
        ..LockOptions::default()
    }
}

/// The options every caller uses: `lock` (each key computed once fleet-wide) and
/// values that outlive the run.
fn options(backend: &Arc<RedisBackend>, lock: LockOptions) -> MemoizeOptions {
    MemoizeOptions::new()
        .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(600))
        .lock(lock)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------------
// The conductor.

/// One worker process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    fn start(url: &str, settings: &Settings) -> Result<Self, Failure> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--worker", url])
            .args([
                settings.threads.to_string(),
                settings.keys.to_string(),
                settings.batch.to_string(),
                settings.load_ms.to_string(),
                settings.retry_ms.to_string(),
                settings.lock_expire_ms.to_string(),
            ])
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
        };
        let line = worker.line()?;
        if line != "ready" {
            return Err(format!("a worker said {line:?}, not \"ready\"").into());
        }
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
}

/// One batch call, as a worker reports it.
struct Called {
    /// Whether the loader was called.
    loaded: bool,
    /// The keys (numbers) given to the loader.
    keys: Vec<u32>,
    /// The values returned.
    returned: usize,
    micros: u64,
}

impl Called {
    /// `call <loaded 0|1> <returned> <µs> <keys, comma-separated, or ->`.
    fn line(&self) -> String {
        let keys = if self.keys.is_empty() {
            "-".to_owned()
        } else {
            let keys: Vec<String> = self.keys.iter().map(u32::to_string).collect();
            keys.join(",")
        };
        format!(
            "call {} {} {} {keys}",
            u8::from(self.loaded),
            self.returned,
            self.micros
        )
    }

    fn parse(line: &str) -> Result<Self, Failure> {
        let fields: Vec<&str> = line.split(' ').collect();
        let ["call", loaded, returned, micros, keys] = fields.as_slice() else {
            return Err(format!("a worker said {line:?}").into());
        };
        let keys = if *keys == "-" {
            Vec::new()
        } else {
            keys.split(',').map(str::parse).collect::<Result<_, _>>()?
        };
        Ok(Self {
            loaded: *loaded == "1",
            keys,
            returned: returned.parse()?,
            micros: micros.parse()?,
        })
    }
}

/// A phase's findings.
#[derive(Default)]
struct Phase {
    calls: Vec<Called>,
    /// Commands the callers sent, by name (counted on the wire).
    commands: BTreeMap<String, u64>,
    /// Commands the server ran, by name (`INFO` left out): those sent, and those the
    /// scripts called.
    server: BTreeMap<String, u64>,
}

impl Phase {
    fn commands(&self) -> u64 {
        self.commands.values().sum()
    }

    /// Adds `other`'s calls and counts to this one's.
    fn extend(&mut self, other: Self) {
        self.calls.extend(other.calls);
        for (name, n) in other.commands {
            *self.commands.entry(name).or_default() += n;
        }
        for (name, n) in other.server {
            *self.server.entry(name).or_default() += n;
        }
    }

    fn per_call(&self, n: u64) -> f64 {
        n as f64 / self.calls.len().max(1) as f64
    }

    fn loader_calls(&self) -> u64 {
        self.calls.iter().map(|c| u64::from(c.loaded)).sum()
    }

    fn keys_loaded(&self) -> u64 {
        self.calls.iter().map(|c| c.keys.len() as u64).sum()
    }

    fn latency_ms(&self, q: f64) -> f64 {
        let mut us: Vec<u64> = self.calls.iter().map(|c| c.micros).collect();
        us.sort_unstable();
        let at = ((us.len().saturating_sub(1)) as f64 * q).round() as usize;
        us.get(at).map_or(f64::NAN, |us| *us as f64 / 1000.0)
    }
}

/// Every command's count so far, from `INFO commandstats` (`INFO` itself left out).
fn command_counts(conn: &mut redis::Connection) -> Result<BTreeMap<String, u64>, Failure> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn)?;
    let mut counts = BTreeMap::new();
    for line in info.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        if name == "info" {
            continue;
        }
        let calls = stats
            .split(',')
            .find_map(|field| field.strip_prefix("calls="))
            .ok_or_else(|| format!("INFO commandstats: {line:?}"))?;
        counts.insert(name.to_owned(), calls.parse()?);
    }
    Ok(counts)
}

/// Sends `order` to every worker, collects their calls, and counts the commands sent
/// (`proxy`) and run (`inspect`) meanwhile.
fn phase(
    workers: &mut [Worker],
    proxy: &CountingProxy,
    inspect: &mut redis::Connection,
    order: &str,
) -> Result<Phase, Failure> {
    proxy.clear();
    let before = command_counts(inspect)?;
    for worker in workers.iter_mut() {
        worker.send(order)?;
    }
    let mut calls = Vec::new();
    for worker in workers.iter_mut() {
        loop {
            let line = worker.line()?;
            if line == "done" {
                break;
            }
            if let Some(error) = line.strip_prefix("error ") {
                return Err(format!("a worker: {error}").into());
            }
            calls.push(Called::parse(&line)?);
        }
    }
    let after = command_counts(inspect)?;
    let mut commands = BTreeMap::new();
    for name in proxy.commands() {
        *commands.entry(name.to_lowercase()).or_default() += 1;
    }
    let server = after
        .into_iter()
        .map(|(name, n)| {
            let was = before.get(&name).copied().unwrap_or(0);
            (name, n - was)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    Ok(Phase {
        calls,
        commands,
        server,
    })
}

/// How often each (round, key) was given to a loader.
type Loads = HashMap<(usize, u32), u32>;

/// The cold rounds: every caller's one batch per round, on a fresh key space each;
/// the phase over all rounds, how often each (round, key) was given to a loader, and
/// the last round's key prefix.
fn cold_rounds(
    workers: &mut [Worker],
    proxy: &CountingProxy,
    inspect: &mut redis::Connection,
    settings: &Settings,
    run_id: u64,
) -> Result<(Phase, Loads, String), Failure> {
    let mut cold = Phase::default();
    let mut loads = Loads::new();
    let mut prefix = String::new();
    for round in 0..settings.rounds {
        prefix = format!("b:{run_id}:cold{round}");
        let p = phase(workers, proxy, inspect, &format!("cold {prefix}"))?;
        for call in &p.calls {
            for key in &call.keys {
                *loads.entry((round, *key)).or_default() += 1;
            }
        }
        eprintln!(
            "cold round {round}: {} calls, {:.2} commands/call, {:.2} loader calls/call, \
             {:.1} keys loaded/call, latency p50 {:.0} ms max {:.0} ms; sent {:?}",
            p.calls.len(),
            p.per_call(p.commands()),
            p.per_call(p.loader_calls()),
            p.per_call(p.keys_loaded()),
            p.latency_ms(0.5),
            p.latency_ms(1.0),
            p.commands
        );
        cold.extend(p);
    }
    Ok((cold, loads, prefix))
}

/// Stores every key of the last cold round (`prefix`) that is not stored yet, then has
/// every caller make `--hit-batches` batches of them.
fn all_hit(
    workers: &mut [Worker],
    proxy: &CountingProxy,
    inspect: &mut redis::Connection,
    settings: &Settings,
    prefix: &str,
    conductor: &Arc<RedisBackend>,
) -> Result<Phase, Failure> {
    let opts = options(conductor, lock(settings.retry_ms, settings.lock_expire_ms));
    let all = (0..settings.keys).map(|i| (format!("{prefix}:{i}"), i));
    let filled = memoize_many(all, &opts, |missing: &[u32]| {
        missing.iter().map(|i| (*i, value_of(*i))).collect()
    });
    if filled.len() != settings.keys as usize {
        return Err(format!("{} of {} keys stored", filled.len(), settings.keys).into());
    }
    let hit = phase(
        workers,
        proxy,
        inspect,
        &format!("hit {prefix} {}", settings.hit_batches),
    )?;
    eprintln!(
        "all-hit: {} calls, {:.2} commands/call, {} loader calls, latency p50 {:.2} ms; \
         sent {:?}",
        hit.calls.len(),
        hit.per_call(hit.commands()),
        hit.loader_calls(),
        hit.latency_ms(0.5),
        hit.commands
    );
    Ok(hit)
}

fn run(settings: &Settings) -> Result<(), Failure> {
    let server = RedisServer::start_with(&["--maxclients", "10000"]);
    let url = server.url();
    let mut inspect = server.connection();
    let proxy = CountingProxy::start(server.port());
    let mut workers = Vec::new();
    for _ in 0..settings.processes {
        workers.push(Worker::start(&proxy.url(), settings)?);
    }
    let run_id = now_us();
    let callers = settings.processes * settings.threads;
    eprintln!(
        "batch: {} processes × {} threads, batches of {} over {} cold keys, loader {} ms, \
         lock retry {} ms, lock expire {} ms",
        settings.processes,
        settings.threads,
        settings.batch,
        settings.keys,
        settings.load_ms,
        settings.retry_ms,
        settings.lock_expire_ms
    );
    // Connections opened, scripts loaded: not counted below.
    phase(
        &mut workers,
        &proxy,
        &mut inspect,
        &format!("cold b:{run_id}:warm"),
    )?;

    let (cold, loads, prefix) = cold_rounds(&mut workers, &proxy, &mut inspect, settings, run_id)?;
    let short = cold
        .calls
        .iter()
        .filter(|c| c.returned != settings.batch)
        .count();
    let distinct = loads.len() as u64;
    let twice = loads.values().filter(|n| **n > 1).count();
    let computes_per_key = cold.keys_loaded() as f64 / distinct.max(1) as f64;
    let loader_calls = cold.loader_calls();
    let computed_per_call = cold.per_call(cold.keys_loaded());
    let any_miss = cold.per_call(cold.commands());
    eprintln!(
        "cold: {} calls of {callers} callers, {loader_calls} loader calls, {} keys given to \
         loaders ({:.1} per loader call), {distinct} distinct, {twice} given more than once; \
         {short} calls returned fewer values than keys",
        cold.calls.len(),
        cold.keys_loaded(),
        cold.keys_loaded() as f64 / loader_calls.max(1) as f64,
    );
    eprintln!(
        "cold: {any_miss:.2} commands per call; the model 1 + 2 × {computed_per_call:.1} \
         computed = {:.1}; with a lock attempt for each element another caller \
         computed, + {:.1} = {:.1}; the rest waits; sent {:?}; run by the server (scripts' \
         commands included) {:?}",
        1.0 + 2.0 * computed_per_call,
        settings.batch as f64 - computed_per_call,
        1.0 + computed_per_call + settings.batch as f64,
        cold.commands,
        cold.server
    );

    let conductor = Arc::new(RedisBackend::connect(url.as_str())?);
    let hit = all_hit(
        &mut workers,
        &proxy,
        &mut inspect,
        settings,
        &prefix,
        &conductor,
    )?;
    let all_hit = hit.per_call(hit.commands());
    for worker in &mut workers {
        worker.send("quit")?;
    }
    for mut worker in workers {
        worker.child.wait()?;
    }
    if hit.loader_calls() > 0 || short > 0 || twice > 0 {
        return Err(format!(
            "{} loader calls in all-hit batches, {short} short cold calls, {twice} keys loaded \
             more than once",
            hit.loader_calls()
        )
        .into());
    }

    let timing = time_hits(&conductor, &url, &format!("b:{run_id}:timed"), settings)?;
    println!(
        "keys_per_call={} commands_all_hit={all_hit:.2} commands_any_miss={any_miss:.2} \
         loader_calls_per_call={:.2} computes_per_key={computes_per_key:.2} hit_vs_mget={:.2}",
        settings.batch,
        cold.per_call(loader_calls),
        timing.batch / timing.mget
    );
    Ok(())
}

/// The timing's medians, in µs per 100 keys.
struct Timing {
    /// One `memoize_many` call, all hits.
    batch: f64,
    /// One raw `MGET`, its values decoded.
    mget: f64,
    /// 100 `memoize` hits.
    one_by_one: f64,
}

/// An all-hit batch against a raw `MGET` + bincode decode and against 100 `memoize`
/// hits, interleaved, the order rotating each round.
fn time_hits(
    backend: &Arc<RedisBackend>,
    url: &str,
    prefix: &str,
    settings: &Settings,
) -> Result<Timing, Failure> {
    let opts = options(backend, lock(settings.retry_ms, settings.lock_expire_ms));
    let batch_keys: Vec<(String, u32)> = (0..TIMED_KEYS)
        .map(|i| (format!("{prefix}:many:{i}"), i))
        .collect();
    let single_keys: Vec<String> = (0..TIMED_KEYS)
        .map(|i| format!("{prefix}:one:{i}"))
        .collect();
    let raw_keys: Vec<String> = (0..TIMED_KEYS)
        .map(|i| format!("{prefix}:raw:{i}"))
        .collect();
    let mut raw = redis::Client::open(url)?.get_connection()?;
    let config = bincode::config::standard();
    for (i, key) in (0..TIMED_KEYS).zip(&raw_keys) {
        let bytes = bincode::serde::encode_to_vec(value_of(i), config)?;
        redis::cmd("SET").arg(key).arg(bytes).exec(&mut raw)?;
    }
    let load = |keys: &[u32]| keys.iter().map(|i| (*i, value_of(*i))).collect();
    let stored: HashMap<u32, String> = memoize_many(batch_keys.iter().cloned(), &opts, load);
    for (i, key) in (0..TIMED_KEYS).zip(&single_keys) {
        let _: String = memoize(key, &opts, || value_of(i));
    }
    let batch = || -> Result<(), Failure> {
        let got: HashMap<u32, String> =
            memoize_many(batch_keys.iter().cloned(), &opts, |_: &[u32]| {
                HashMap::new()
            });
        if got.len() == stored.len() {
            std::hint::black_box(got);
            Ok(())
        } else {
            Err("an all-hit batch missed".into())
        }
    };
    let mut mget = || -> Result<(), Failure> {
        let got: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&raw_keys).query(&mut raw)?;
        let mut values = Vec::with_capacity(got.len());
        for bytes in got.into_iter().flatten() {
            let (value, _): (String, usize) = bincode::serde::decode_from_slice(&bytes, config)?;
            values.push(value);
        }
        if values.len() == raw_keys.len() {
            std::hint::black_box(values);
            Ok(())
        } else {
            Err("a raw MGET missed".into())
        }
    };
    let one_by_one = || {
        let values: Vec<String> = single_keys
            .iter()
            .map(|key| memoize(key, &opts, || unreachable!("a hit computes nothing")))
            .collect();
        std::hint::black_box(values);
    };
    let (mut batch_us, mut mget_us, mut loop_us) = (Vec::new(), Vec::new(), Vec::new());
    let timed = |f: &mut dyn FnMut() -> Result<(), Failure>| -> Result<f64, Failure> {
        let started = Instant::now();
        f()?;
        Ok(started.elapsed().as_secs_f64() * 1e6)
    };
    // Warm-up: one of each, not counted.
    batch()?;
    mget()?;
    one_by_one();
    for round in 0..settings.timing_rounds {
        for which in 0..3 {
            match (round + which) % 3 {
                0 => batch_us.push(timed(&mut || batch())?),
                1 => mget_us.push(timed(&mut mget)?),
                _ => loop_us.push(timed(&mut || {
                    one_by_one();
                    Ok(())
                })?),
            }
        }
    }
    let timing = Timing {
        batch: median(batch_us),
        mget: median(mget_us),
        one_by_one: median(loop_us),
    };
    eprintln!(
        "timing ({} rounds, {TIMED_KEYS} keys of {VALUE_BYTES} B): batch {:.1} µs, raw MGET + \
         bincode {:.1} µs, {TIMED_KEYS} memoize hits {:.1} µs: hit_vs_mget {:.2}, \
         loop_vs_batch {:.2}",
        settings.timing_rounds,
        timing.batch,
        timing.mget,
        timing.one_by_one,
        timing.batch / timing.mget,
        timing.one_by_one / timing.batch
    );
    Ok(timing)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------
// The worker.

/// A worker process: one backend, `threads` callers, answering `cold <prefix>`,
/// `hit <prefix> <batches>` and `quit` on stdin; each call reported as a
/// [`Called`] line, each order ended by `done`.
fn worker(args: &[String]) -> Result<(), Failure> {
    let [url, threads, keys, batch, load_ms, retry_ms, expire_ms] = args else {
        return Err("worker arguments: url threads keys batch load-ms retry-ms expire-ms".into());
    };
    let (threads, keys): (usize, u32) = (threads.parse()?, keys.parse()?);
    let (batch, load): (usize, Duration) =
        (batch.parse()?, Duration::from_millis(load_ms.parse()?));
    let backend = Arc::new(RedisBackend::connect(url.as_str())?);
    let opts = options(&backend, lock(retry_ms.parse()?, expire_ms.parse()?));
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let fields: Vec<&str> = line.split(' ').collect();
        let (prefix, batches) = match fields.as_slice() {
            ["cold", prefix] => (*prefix, 1),
            ["hit", prefix, batches] => (*prefix, batches.parse()?),
            _ => break,
        };
        let calls = callers(&opts, threads, prefix, keys, batch, batches, load);
        for call in calls {
            match call {
                Ok(call) => writeln!(stdout, "{}", call.line())?,
                Err(error) => writeln!(stdout, "error {error}")?,
            }
        }
        // Until the wake-up subscriptions are dropped: their UNSUBSCRIBE counts too.
        while backend.wake_up_subscriptions() > 0 {
            thread::sleep(Duration::from_millis(20));
        }
        writeln!(stdout, "done")?;
        stdout.flush()?;
    }
    Ok(())
}

/// `threads` callers, started together, each making `batches` batch calls of `batch`
/// random keys of `prefix`'s `keys`.
fn callers(
    opts: &MemoizeOptions,
    threads: usize,
    prefix: &str,
    keys: u32,
    batch: usize,
    batches: usize,
    load: Duration,
) -> Vec<Result<Called, String>> {
    let start = Barrier::new(threads);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    (0..batches)
                        .map(|_| one_batch(opts, prefix, keys, batch, load))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err("a caller panicked".to_owned())])
            })
            .collect()
    })
}

/// One batch call of `batch` distinct random keys; the loader's keys must be the
/// batch's.
fn one_batch(
    opts: &MemoizeOptions,
    prefix: &str,
    keys: u32,
    batch: usize,
    load: Duration,
) -> Result<Called, String> {
    let mut chosen = HashSet::with_capacity(batch);
    while chosen.len() < batch {
        chosen.insert(fastrand::u32(0..keys));
    }
    let mut given = None;
    let started = Instant::now();
    let got: HashMap<u32, String> = memoize_many(
        chosen.iter().map(|i| (format!("{prefix}:{i}"), *i)),
        opts,
        |held: &[u32]| {
            thread::sleep(load);
            given = Some(held.to_vec());
            held.iter().map(|i| (*i, value_of(*i))).collect()
        },
    );
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let keys = given.clone().unwrap_or_default();
    if let Some(stranger) = keys.iter().find(|k| !chosen.contains(k)) {
        return Err(format!(
            "the loader was given key {stranger}, not of its batch"
        ));
    }
    if let Some((i, v)) = got.iter().find(|(i, v)| **v != value_of(**i)) {
        return Err(format!("key {i} returned {v:?}"));
    }
    Ok(Called {
        loaded: given.is_some(),
        keys,
        returned: got.len(),
        micros,
    })
}
