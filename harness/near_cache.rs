//! The near cache's coherence, measured between two processes on a private server:
//!
//! 1. Invalidation latency: this process (the reader, with a near cache) holds a copy
//!    of a value; a second process (the writer, this example re-run as `writer`)
//!    overwrites it; the reader polls until it sees the new value. Timed from the
//!    moment the reader asks the writer to write (so the write's own round trip and
//!    the pipe between the processes are included), over 1,000 trials.
//! 2. Faults: rounds in which the reader holds a copy, then its invalidation connection
//!    is killed (`CLIENT KILL`) or the server restarted, then the writer writes. Every
//!    read of the old value after the writer acknowledged its write is a stale read.
//! 3. Tags: the reader memoizes a value tagged `near-example:tag`, computed from a
//!    source key, and holds it near (the value and the tag's epoch served from its
//!    copies); the writer changes the source and calls `invalidate_tag`; timed from
//!    the moment the reader asks until it returns the new value. Every read of the old
//!    one begun after the writer acknowledged is counted (`tag_late_reads`: the
//!    invalidation message and the acknowledgement race; the latest is
//!    `tag_late_max_ms`), and is a stale read (`tag_stale_reads`) if begun more than the
//!    near cache's bound (heartbeat + response timeout, 1.5 s here) after it. Then the
//!    commands the server ran for 1,000 tagged near hits (`INFO commandstats`:
//!    `tag_near_hit_commands`, `MGET` and `GET`).
//!
//! `cargo run --release --example near_cache`; quick mode (`CACHE_MEMOIZE_QUICK=1`): 50
//! trials, 5 rounds of each fault.
//!
//! The last line is `invalidation_p50_ms=.. invalidation_p99_ms=.. invalidation_max_ms=..
//! stale_reads=.. rounds=.. tag_p99_ms=.. tag_stale_reads=.. tag_late_reads=..
//! tag_late_max_ms=.. tag_near_hit_commands=..`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_memoize::{
    CacheBackend, MemoizeOptions, NearCache, RedisBackend, make_cache_key, memoize,
};
use cache_memoize_harness::quick::sized;
use cache_memoize_tests::server::RedisServer;

const KEY: &str = "near-example:value";
/// The tagged value, its tag, and the source it is computed from.
const TAGGED: &str = "near-example:tagged";
const TAG: &str = "near-example:tag";
const SOURCE: &str = "near-example:source";
/// How long a round may take before the example gives up (something is broken).
const GIVE_UP: Duration = Duration::from_secs(20);

type Failure = Box<dyn std::error::Error>;

fn opts(backend: &Arc<RedisBackend>) -> MemoizeOptions {
    MemoizeOptions::new()
        .backend(Arc::clone(backend) as Arc<dyn CacheBackend>)
        .expire(Duration::from_secs(3600))
}

fn main() -> Result<(), Failure> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("writer") {
        let url = args.next().ok_or("writer: no URL")?;
        return writer(&url);
    }
    reader()
}

/// The writer process: for each line `value` on stdin, overwrites the value (until the
/// server has it: a write that fails opens no breaker for the reader), then says `ok`.
fn writer(url: &str) -> Result<(), Failure> {
    let backend = Arc::new(RedisBackend::connect(url)?);
    let raw = redis::Client::open(url)?;
    let key = make_cache_key(KEY);
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let value = line?;
        if let Some(value) = value.strip_prefix("tag ") {
            let mut conn = raw.get_connection()?;
            let () = redis::cmd("SET").arg(SOURCE).arg(value).query(&mut conn)?;
            let deadline = Instant::now() + GIVE_UP;
            while cache_memoize::invalidate_tag_in(&*backend, TAG).is_err() {
                if Instant::now() > deadline {
                    return Err("writer: invalidate_tag never succeeded".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            writeln!(stdout.lock(), "ok")?;
            continue;
        }
        let before = stored(&raw, key.as_str());
        let deadline = Instant::now() + GIVE_UP;
        loop {
            let _: String = memoize(KEY, &opts(&backend).force_overwrite(true), || value.clone());
            let after = stored(&raw, key.as_str());
            if after.is_some() && after != before {
                break;
            }
            if Instant::now() > deadline {
                return Err("writer: the write never landed".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        writeln!(stdout.lock(), "ok")?;
    }
    Ok(())
}

/// The bytes stored at `key`, read on a connection of their own (`None` if unreadable).
fn stored(client: &redis::Client, key: &str) -> Option<Vec<u8>> {
    let mut conn = client.get_connection().ok()?;
    redis::cmd("GET").arg(key).query(&mut conn).ok().flatten()
}

struct Writer {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Writer {
    fn start(url: &str) -> Result<Self, Failure> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("writer")
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let input = child.stdin.take().ok_or("writer: no stdin")?;
        let output = BufReader::new(child.stdout.take().ok_or("writer: no stdout")?);
        Ok(Self {
            child,
            input,
            output,
        })
    }

    fn ask(&mut self, value: &str) -> Result<(), Failure> {
        writeln!(self.input, "{value}")?;
        self.input.flush()?;
        Ok(())
    }

    fn acknowledged(&mut self) -> Result<(), Failure> {
        let mut line = String::new();
        self.output.read_line(&mut line)?;
        if line.trim() == "ok" {
            Ok(())
        } else {
            Err(format!("writer: {line:?}").into())
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(backend: &Arc<RedisBackend>) -> String {
    memoize(KEY, &opts(backend), || "computed by the reader".to_owned())
}

/// Polls until the reader serves `value` from its near copy.
fn hold_copy(backend: &Arc<RedisBackend>, value: &str) -> Result<(), Failure> {
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let before = backend.near_cache_hits();
        if read(backend) == value && backend.near_cache_hits() > before {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the reader never held a copy of {value}").into());
        }
        std::thread::yield_now();
    }
}

/// Polls until the reader returns `new`; counts the reads of `old` on the way.
fn until_seen(backend: &Arc<RedisBackend>, old: &str, new: &str) -> Result<usize, Failure> {
    let deadline = Instant::now() + GIVE_UP;
    let mut stale = 0;
    loop {
        let got = read(backend);
        if got == new {
            return Ok(stale);
        }
        stale += usize::from(got == old);
        if Instant::now() > deadline {
            return Err(format!("the reader never saw {new} (last {got})").into());
        }
        std::thread::yield_now();
    }
}

fn wait_live(backend: &Arc<RedisBackend>) -> Result<(), Failure> {
    let deadline = Instant::now() + GIVE_UP;
    while !backend.is_near_cache_live() {
        if Instant::now() > deadline {
            return Err("tracking never came back".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn kill_tracking_connection(server: &RedisServer) -> Result<(), Failure> {
    let mut conn = server.connection();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn)?;
    let id = list
        .lines()
        .find(|line| {
            line.split(' ').any(|field| {
                field
                    .strip_prefix("flags=")
                    .is_some_and(|f| f.contains('t'))
            })
        })
        .and_then(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .ok_or("no client with tracking on")?;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query(&mut conn)?;
    if killed == 1 {
        Ok(())
    } else {
        Err("CLIENT KILL killed nothing".into())
    }
}

/// The tagged value: the source, read when computed.
fn read_tagged(backend: &Arc<RedisBackend>, source: &redis::Client) -> String {
    memoize(TAGGED, &opts(backend).tags([TAG]), || {
        source
            .get_connection()
            .and_then(|mut conn| {
                redis::cmd("GET")
                    .arg(SOURCE)
                    .query::<Option<String>>(&mut conn)
            })
            .ok()
            .flatten()
            .unwrap_or_default()
    })
}

/// How long after another process's write a near copy may still be served (README,
/// "Consistency"): the near cache's heartbeat (500 ms) plus the response timeout (the
/// default, 1 s, here).
const NEAR_BOUND: Duration = Duration::from_millis(500 + 1_000);

/// What part 3 measured.
struct TagTrials {
    p99: Duration,
    /// Reads of the old value begun after the writer acknowledged.
    late: usize,
    /// The latest of them, after the acknowledgement.
    late_max: Duration,
    /// Those begun more than [`NEAR_BOUND`] after it.
    stale: usize,
}

/// Part 3: `trials` invalidations of the tag by the writer, each while the reader holds
/// the tagged value near; the latency until the reader returns the new value, and the
/// reads of the old one after the writer acknowledged.
fn tag_trials(
    backend: &Arc<RedisBackend>,
    url: &str,
    writer: &mut Writer,
    trials: usize,
) -> Result<TagTrials, Failure> {
    let source = redis::Client::open(url)?;
    let mut latencies = Vec::with_capacity(trials);
    let (mut late, mut late_max, mut stale) = (0, Duration::ZERO, 0);
    for trial in 0..trials {
        let (old, new) = (format!("t{trial}"), format!("t{}", trial + 1));
        writer.ask(&format!("tag {old}"))?;
        writer.acknowledged()?;
        // Held: a near hit (the value and the tag's epoch from the near copies).
        let deadline = Instant::now() + GIVE_UP;
        loop {
            let hits = backend.near_cache_hits();
            if read_tagged(backend, &source) == old && backend.near_cache_hits() > hits {
                break;
            }
            if Instant::now() > deadline {
                return Err("the reader never held the tagged value near".into());
            }
        }
        let start = Instant::now();
        writer.ask(&format!("tag {new}"))?;
        writer.acknowledged()?;
        let acknowledged = Instant::now();
        loop {
            let begun = acknowledged.elapsed();
            let got = read_tagged(backend, &source);
            if got == new {
                break;
            }
            if got == old {
                late += 1;
                late_max = late_max.max(begun);
                stale += usize::from(begun > NEAR_BOUND);
            }
            if start.elapsed() > GIVE_UP {
                return Err("the reader never saw the new tagged value".into());
            }
        }
        latencies.push(start.elapsed());
    }
    latencies.sort_unstable();
    let p99 = latencies[(latencies.len() - 1) * 99 / 100];
    Ok(TagTrials {
        p99,
        late,
        late_max,
        stale,
    })
}

/// The commands (`MGET`, `GET`) the server ran for 1,000 tagged near hits.
fn tag_near_hit_commands(backend: &Arc<RedisBackend>, url: &str) -> Result<u64, Failure> {
    let source = redis::Client::open(url)?;
    let mut conn = source.get_connection()?;
    let mut reads = || -> Result<u64, Failure> {
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut conn)?;
        let calls = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(&format!("cmdstat_{name}:calls=")))
                .and_then(|rest| rest.split(',').next())
                .and_then(|calls| calls.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(calls("mget") + calls("get"))
    };
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let hits = backend.near_cache_hits();
        let _ = read_tagged(backend, &source);
        if backend.near_cache_hits() > hits {
            break;
        }
        if Instant::now() > deadline {
            return Err("the reader never held the tagged value near".into());
        }
    }
    let (before, hits) = (reads()?, backend.near_cache_hits());
    for _ in 0..1_000 {
        let _ = read_tagged(backend, &source);
    }
    let (after, near) = (reads()?, backend.near_cache_hits() - hits);
    if near != 1_000 {
        return Err(format!("{near} of 1,000 tagged reads were near hits").into());
    }
    Ok(after - before)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn reader() -> Result<(), Failure> {
    let trials = sized(1_000, 50);
    let (kill_rounds, restart_rounds) = (sized(100, 5), sized(100, 5));
    let mut server = RedisServer::start();
    let backend = Arc::new(
        RedisBackend::builder([server.url()])
            .near_cache(NearCache::new())
            .connect()?,
    );
    let mut writer = Writer::start(&server.url())?;
    wait_live(&backend)?;

    let mut version = 0_u64;
    let mut next = || {
        version += 1;
        format!("v{version}")
    };
    let mut old = next();
    writer.ask(&old)?;
    writer.acknowledged()?;

    let mut latencies = Vec::with_capacity(trials);
    let mut stale_reads = 0;
    for _ in 0..trials {
        hold_copy(&backend, &old)?;
        let new = next();
        let start = Instant::now();
        writer.ask(&new)?;
        // Polled while the writer writes: the latency is until the reader sees it.
        until_seen(&backend, "", &new)?;
        latencies.push(start.elapsed());
        writer.acknowledged()?;
        old = new;
    }
    latencies.sort_unstable();
    let at = |per_mille: usize| latencies[(latencies.len() - 1) * per_mille / 1000];
    let (p50, p99, max) = (at(500), at(990), at(1000));
    println!("invalidation latency over {trials} trials: p50 {p50:?}, p99 {p99:?}, max {max:?}");

    let mut rounds = 0;
    let fault_started = Instant::now();
    for round in 0..kill_rounds + restart_rounds {
        wait_live(&backend)?;
        hold_copy(&backend, &old)?;
        if round < kill_rounds {
            kill_tracking_connection(&server)?;
        } else {
            server.restart();
        }
        let new = next();
        writer.ask(&new)?;
        writer.acknowledged()?;
        stale_reads += until_seen(&backend, &old, &new)?;
        old = new;
        rounds += 1;
    }
    println!(
        "{kill_rounds} CLIENT KILL rounds and {restart_rounds} restart rounds in {:?}: \
         {stale_reads} stale reads; near hits {}, invalidations {}",
        fault_started.elapsed(),
        backend.near_cache_hits(),
        backend.near_cache_invalidations()
    );
    wait_live(&backend)?;
    let tags = tag_trials(&backend, &server.url(), &mut writer, sized(200, 20))?;
    let tag_commands = tag_near_hit_commands(&backend, &server.url())?;
    println!(
        "tags: {} invalidate_tag trials from the other process, the reader holding the value \
         near: p99 {:?} from the ask to the new value (the writer's round trip included); \
         {} reads of the old value after the acknowledgement (the latest {:?} after it), \
         {} past the near bound {NEAR_BOUND:?}; 1,000 tagged near hits: {tag_commands} commands",
        sized(200, 20),
        tags.p99,
        tags.late,
        tags.late_max,
        tags.stale,
    );
    println!(
        "invalidation_p50_ms={:.3} invalidation_p99_ms={:.3} invalidation_max_ms={:.3} \
         stale_reads={stale_reads} rounds={rounds} tag_p99_ms={:.3} tag_stale_reads={} \
         tag_late_reads={} tag_late_max_ms={:.3} tag_near_hit_commands={tag_commands}",
        ms(p50),
        ms(p99),
        ms(max),
        ms(tags.p99),
        tags.stale,
        tags.late,
        ms(tags.late_max),
    );
    Ok(())
}
