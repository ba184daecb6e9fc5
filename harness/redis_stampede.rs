//! The stampede harness: P processes × T threads released together on one cold key
//! whose computation takes 200 ms. Reports how many times it computed, each caller's
//! latency beyond the computation, and the commands clients sent to Redis (counted by a
//! proxy on the wire).
//!
//! ```sh
//! cargo run --release --example redis_stampede                        # 4 × 8, wake-ups
//! cargo run --release --example redis_stampede -- --mode polling      # Djblets-style polling
//! cargo run --release --example redis_stampede -- --mode cached       # the cached crate, no lock
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --release --example redis_stampede
//! ```
//!
//! Without `REDIS_URL` it starts a private `redis-server` on a free port.
//! Options: `--processes N` (4), `--threads N` (8), `--compute-ms N` (200),
//! `--mode wakeup|polling|cached` (wakeup). Quick mode (`CACHE_MEMOIZE_QUICK=1`): 2 × 4,
//! 100 ms. The last line: `callers=<n> computes=<n> beyond_p99_ms=<x>
//! commands_per_caller=<x>`.

// Percentiles of a few hundred latencies: float casts of small counts lose nothing.
#![allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use cache_memoize::{LockOptions, MemoizeOptions, RedisBackend, memoize};
use cache_memoize_harness::quick::sized;
use cache_memoize_tests::proxy::CountingProxy;
use cache_memoize_tests::server::RedisServer;

type Failure = Box<dyn std::error::Error>;

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        return worker(&args[1..]);
    }
    run(&Settings::parse(&args)?)
}

struct Settings {
    processes: usize,
    threads: usize,
    compute_ms: u64,
    mode: String,
}

impl Settings {
    fn parse(args: &[String]) -> Result<Self, Failure> {
        let mut settings = Self {
            processes: sized(4, 2),
            threads: sized(8, 4),
            compute_ms: sized(200, 100),
            mode: "wakeup".into(),
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--processes" => settings.processes = value.parse()?,
                "--threads" => settings.threads = value.parse()?,
                "--compute-ms" => settings.compute_ms = value.parse()?,
                "--mode" if ["wakeup", "polling", "cached"].contains(&value.as_str()) => {
                    settings.mode.clone_from(value);
                }
                _ => return Err(format!("unknown option {flag} {value}").into()),
            }
        }
        Ok(settings)
    }
}

fn run(settings: &Settings) -> Result<(), Failure> {
    let (_private, upstream) = match std::env::var("REDIS_URL") {
        Ok(url) => (None, host_port(&url)),
        Err(_) => {
            let server = RedisServer::start();
            let upstream = format!("127.0.0.1:{}", server.port());
            (Some(server), upstream)
        }
    };
    let proxy = CountingProxy::start_to(upstream.clone());
    let direct = format!("redis://{upstream}/");
    let key = format!(
        "stampede:{}:{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let counter = format!("{key}:computes");
    let exe = std::env::current_exe()?;
    let mut workers = Vec::new();
    for _ in 0..settings.processes {
        let worker = Command::new(&exe)
            .args(["--worker", &proxy.url(), &direct, &key, &counter])
            .args([
                settings.threads.to_string(),
                settings.compute_ms.to_string(),
                settings.mode.clone(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        workers.push(worker);
    }
    let mut outputs: Vec<_> = workers
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
    proxy.clear();
    for worker in &mut workers {
        if let Some(stdin) = worker.stdin.as_mut() {
            stdin.write_all(b"go\n")?;
            stdin.flush()?;
        }
    }
    let mut beyond_compute_ms: Vec<f64> = Vec::new();
    for out in outputs {
        for line in out.lines() {
            let line = line?;
            if let Some(micros) = line.strip_prefix("latency_us ") {
                let micros: f64 = micros.parse()?;
                beyond_compute_ms.push(micros / 1000.0 - settings.compute_ms as f64);
            }
        }
    }
    for mut worker in workers {
        worker.wait()?;
    }
    let commands = proxy.commands();
    let computes: u64 = redis::Client::open(direct.as_str())?
        .get_connection()
        .and_then(|mut c| redis::cmd("GET").arg(&counter).query(&mut c))?;
    report(settings, computes, &mut beyond_compute_ms, &commands);
    Ok(())
}

/// `host:port` of a `redis://` URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:6379")
    }
}

fn report(settings: &Settings, computes: u64, latencies: &mut [f64], commands: &[String]) {
    latencies.sort_by(f64::total_cmp);
    let callers = latencies.len();
    let at = |q: f64| {
        latencies
            .get(((callers as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for name in commands {
        *by_name.entry(name.as_str()).or_default() += 1;
    }
    println!(
        "mode: {}, {} processes x {} threads, compute {} ms",
        settings.mode, settings.processes, settings.threads, settings.compute_ms
    );
    println!("callers: {callers}, computes: {computes}");
    println!(
        "latency beyond the compute (ms): p50 {:.1}, p95 {:.1}, p99 {:.1}, max {:.1}",
        at(0.5),
        at(0.95),
        at(0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    let per_caller = commands.len() as f64 / callers.max(1) as f64;
    println!(
        "client commands: {} ({per_caller:.2} per caller): {by_name:?}",
        commands.len(),
    );
    println!(
        "callers={callers} computes={computes} beyond_p99_ms={:.1} commands_per_caller={per_caller:.2}",
        at(0.99)
    );
}

fn worker(args: &[String]) -> Result<(), Failure> {
    let [url, direct, key, counter, threads, compute_ms, mode] = args else {
        return Err("worker arguments: url direct-url key counter threads compute-ms mode".into());
    };
    let threads: usize = threads.parse()?;
    let compute = Duration::from_millis(compute_ms.parse()?);
    let counting = Arc::new(Mutex::new(
        redis::Client::open(direct.as_str())?.get_connection()?,
    ));
    let counter = counter.clone();
    let slow = move || {
        if let Ok(mut conn) = counting.lock() {
            let _: redis::RedisResult<u64> = redis::cmd("INCR").arg(&counter).query(&mut *conn);
        }
        std::thread::sleep(compute);
        "the report".to_owned()
    };
    let call: Arc<dyn Fn() + Send + Sync> = if mode == "cached" {
        let _ = peer::URL.set(url.clone());
        let key = key.clone();
        let _ = peer::report(format!("{key}:warm-up"), &String::new);
        Arc::new(move || {
            let _ = peer::report(key.clone(), &slow);
        })
    } else {
        let backend = RedisBackend::builder([url.as_str()])
            .wake_ups(mode == "wakeup")
            .connect()?;
        let opts = MemoizeOptions::new()
            .backend(Arc::new(backend))
            .lock(LockOptions::default());
        warm_up(&opts, threads);
        let key = key.clone();
        Arc::new(move || {
            let _: String = memoize(&key, &opts, &slow);
        })
    };
    println!("ready");
    std::io::stdout().flush()?;
    std::io::stdin().lock().read_line(&mut String::new())?;
    let start = Arc::new(Barrier::new(threads));
    let callers: Vec<_> = (0..threads)
        .map(|_| {
            let (call, start) = (Arc::clone(&call), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let began = Instant::now();
                call();
                began.elapsed()
            })
        })
        .collect();
    for caller in callers {
        let latency = caller.join().map_err(|_| "a caller panicked")?;
        println!("latency_us {}", latency.as_micros());
    }
    Ok(())
}

/// The contrast: the `cached` crate's Redis-backed macro, which has no cross-process
/// lock. Its macro takes the store as a string expression and needs a `Result`.
#[allow(
    clippy::needless_raw_string_hashes,
    clippy::expect_used,
    clippy::unnecessary_wraps,
    clippy::needless_pass_by_value
)]
mod peer {
    use std::sync::OnceLock;

    use cached::RedisCache;
    use cached::macros::concurrent_cached;

    pub(super) static URL: OnceLock<String> = OnceLock::new();

    #[derive(Debug)]
    pub(super) struct PeerError;

    #[concurrent_cached(
        map_error = r##"|_| PeerError"##,
        ty = "cached::RedisCache<String, String>",
        create = r##" {
            RedisCache::builder("stampede")
                .ttl(std::time::Duration::from_secs(3600))
                .connection_string(URL.get().expect("the URL is set first"))
                .build()
                .expect("the cached crate's store connects")
        } "##,
        convert = r##"{ key.clone() }"##
    )]
    pub(super) fn report(key: String, slow: &dyn Fn() -> String) -> Result<String, PeerError> {
        let _ = &key; // the cache key, through `convert`
        Ok(slow())
    }
}

/// Brings a worker to steady state before the measured stampede: a pooled connection
/// per thread, the scripts loaded, and time for the wake-up subscriber to listen.
fn warm_up(opts: &MemoizeOptions, threads: usize) {
    let key = format!("warm-up:{}", std::process::id());
    let start = Barrier::new(threads);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                start.wait();
                let _: u8 = memoize(&key, opts, || 1);
            });
        }
    });
    std::thread::sleep(Duration::from_millis(300));
}
