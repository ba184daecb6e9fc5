//! A large memoized value (issue 23) against a private `redis-server` (started on a free
//! port, stopped at the end): a 100 MB compressible value stored by a miss and read by a
//! hit while another client (its own connection, its own thread) pings the server every
//! millisecond; the hit's own peak RSS; the memory Redis spends on the value; an
//! encrypted 10 KB hit over a plain one; and, with encryption on, whether any argument
//! of a key shows in clear in the server's key names or values.
//!
//! ```sh
//! cargo run --release --example large_value                # 100 MB, chunked (default)
//! cargo run --release --example large_value -- --mb 20
//! cargo run --release --example large_value -- --compare   # and the same value stored whole
//! LARGE_VALUE_WHOLE=1 cargo run --release --example large_value  # stored whole only
//! ```
//!
//! "Whole" is `MemoizeOptions::large_values(usize::MAX)`: one `SET` and one `GET` of the
//! whole value, as before issue 23. `--compare` measures it after the chunked value, in
//! the same run, on its own lines. Quick mode (`CACHE_MEMOIZE_QUICK=1`): 8 MB, 4 rounds
//! of 10 KB hits. MB are 10^6 bytes, RSS included.
//!
//! A ping's round trip counts the scheduler too: on a machine shared with other work,
//! the pings while the value is only computed (nothing sent to the server) show that
//! floor, and the server's own view is printed beside: the slowest command of each
//! phase in its `SLOWLOG`. `chrt -f 10` before the command (root) keeps the harness and
//! its server ahead of other processes for the pings; not for the 10 KB hits, which
//! it slows several times over (wake-ups between real-time threads), ratio and all.
//!
//! The last line: `size_mb=<x> max_ping_ms=<x> miss_ms=<x> hit_ms=<x>
//! hit_peak_rss_mb=<x> redis_mb=<x> encrypted_hit_ratio_10kb=<x> plaintext_in_scan=<n>`,
//! `max_ping_ms` the larger of the store's and the read's.

// Byte counts and times shown as floats: counts far below 2^52 lose nothing.
#![allow(clippy::cast_precision_loss)]

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_memoize::{CacheBackend, Encryption, LockOptions, MemoizeOptions, RedisBackend, memoize};
use cache_memoize_harness::probe::{
    self, Failure, PingStats, Pinger, Slowest, Slowlog, used_memory,
};
use cache_memoize_harness::quick::sized;
use cache_memoize_tests::server::RedisServer;
use serde::{Deserialize, Serialize};

/// How one run stores its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// In chunks, the default threshold (`large_values` untouched).
    Chunked,
    /// In one `SET` (`large_values(usize::MAX)`).
    Whole,
}

/// What one store and read of the large value measured.
struct Measured {
    miss_ms: f64,
    hit_ms: f64,
    store_ping_ms: f64,
    read_ping_ms: f64,
    hit_peak_rss_mb: f64,
    redis_mb: f64,
}

fn main() -> Result<(), Failure> {
    let mut mb = sized(100_usize, 8);
    let mut compare = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--mb" => mb = args.next().ok_or("--mb needs a value")?.parse()?,
            "--compare" => compare = true,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let whole_only = std::env::var_os("LARGE_VALUE_WHOLE").is_some_and(|v| v == "1");
    let layout = if whole_only {
        Layout::Whole
    } else {
        Layout::Chunked
    };
    let server = RedisServer::start();
    let pinger = Pinger::start(&server)?;
    let idle = pinger.idle(Duration::from_millis(300))?;
    println!("idle (300 ms, nothing else sent): pings {idle}");
    let size = mb * 1_000_000;
    let measured = large(&server, &pinger, layout, size)?;
    if compare && layout == Layout::Chunked {
        large(&server, &pinger, Layout::Whole, size)?;
    }
    drop(pinger);
    let ratio = encrypted_hit_ratio(&server, sized(20, 4))?;
    let leaks = plaintext_in_scan()?;
    println!(
        "size_mb={:.1} max_ping_ms={:.2} miss_ms={:.0} hit_ms={:.0} hit_peak_rss_mb={:.1} \
         redis_mb={:.1} encrypted_hit_ratio_10kb={ratio:.3} plaintext_in_scan={leaks}",
        size as f64 / 1e6,
        measured.store_ping_ms.max(measured.read_ping_ms),
        measured.miss_ms,
        measured.hit_ms,
        measured.hit_peak_rss_mb,
        measured.redis_mb,
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The value's phases against one server, each with the pings under way during it and
/// the server's slowest command in it.
struct Phases<'a> {
    server: &'a RedisServer,
    pinger: &'a Pinger,
    slowlog: Slowlog,
    opts: MemoizeOptions,
    key: String,
    size: usize,
}

/// The store of the value: the miss that computes and stores it.
struct Store {
    computed: Duration,
    miss: Duration,
    /// The pings while the value was computed (nothing sent: the machine's own noise),
    /// then while it was stored.
    compute_pings: PingStats,
    pings: PingStats,
    slowest: Slowest,
    /// Redis's `used_memory` growth, and what `MEMORY USAGE` says of the keys.
    grown: u64,
    usage: Usage,
}

/// The read of the value: a hit.
struct Read {
    hit: Duration,
    pings: PingStats,
    slowest: Slowest,
    /// This process's resident set before the hit, and its peak during it, in KiB.
    rss_before_kb: u64,
    peak_kb: u64,
}

/// Stores `size` bytes of records under a key of `layout`'s own (a miss), then reads
/// them back (a hit); prints what each phase measured; leaves the server empty.
fn large(
    server: &RedisServer,
    pinger: &Pinger,
    layout: Layout,
    size: usize,
) -> Result<Measured, Failure> {
    let backend = RedisBackend::builder([server.url()]).connect()?;
    // The default options: no lock option, the default threshold (1 MiB).
    let mut opts = MemoizeOptions::new().backend(Arc::new(backend) as Arc<dyn CacheBackend>);
    if layout == Layout::Whole {
        opts = opts.large_values(usize::MAX);
    }
    let mut phases = Phases {
        server,
        pinger,
        slowlog: Slowlog::new(server)?,
        opts,
        key: format!("large-{layout:?}").to_lowercase(),
        size,
    };
    let store = phases.store()?;
    let read = phases.read()?;
    let measured = report(&format!("{layout:?}").to_lowercase(), size, &store, &read);
    // The next layout measures its own growth: this one's keys go.
    let mut conn = server.connection();
    redis::cmd("FLUSHALL").arg("SYNC").exec(&mut conn)?;
    Ok(measured)
}

impl Phases<'_> {
    fn store(&mut self) -> Result<Store, Failure> {
        let before = used_memory(self.server)?;
        self.slowlog.reset()?;
        let started = Instant::now();
        let mut computed = Duration::ZERO;
        let value: Vec<u8> = memoize(&self.key, &self.opts, || {
            let started = Instant::now();
            let value = records(self.size);
            computed = started.elapsed();
            value
        });
        let (miss, ended) = (started.elapsed(), Instant::now());
        if value.len() != self.size {
            return Err(
                format!("the miss returned {} bytes, not {}", value.len(), self.size).into(),
            );
        }
        drop(value);
        Ok(Store {
            computed,
            miss,
            compute_pings: self.pinger.between(started, started + computed)?,
            pings: self.pinger.between(started + computed, ended)?,
            slowest: self.slowlog.slowest()?,
            grown: used_memory(self.server)?.saturating_sub(before),
            usage: memory_usage(self.server)?,
        })
    }

    /// The hit, its peak RSS counted from a reset high-water mark (the miss's value
    /// dropped before).
    fn read(&mut self) -> Result<Read, Failure> {
        self.slowlog.reset()?;
        let rss_before_kb = probe::rss_kb()?;
        probe::reset_peak_rss()?;
        let started = Instant::now();
        let value: Vec<u8> = memoize(&self.key, &self.opts, Vec::new);
        let hit = started.elapsed();
        let peak_kb = probe::peak_rss_kb()?;
        let pings = self.pinger.between(started, Instant::now())?;
        if value.len() != self.size || value != records(self.size) {
            return Err("the hit read back something else".into());
        }
        Ok(Read {
            hit,
            pings,
            slowest: self.slowlog.slowest()?,
            rss_before_kb,
            peak_kb,
        })
    }
}

/// Prints what the phases of `name` measured, and returns the figures of the result line.
fn report(name: &str, size: usize, store: &Store, read: &Read) -> Measured {
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let rss_mb = |kb: u64| kb as f64 * 1024.0 / 1e6;
    let measured = Measured {
        miss_ms: ms(store.miss),
        hit_ms: ms(read.hit),
        store_ping_ms: ms(store.pings.max),
        read_ping_ms: ms(read.pings.max),
        hit_peak_rss_mb: rss_mb(read.peak_kb.saturating_sub(read.rss_before_kb)),
        redis_mb: mb(store.grown),
    };
    let value_mb = size as f64 / 1e6;
    println!(
        "{name}: size_mb={value_mb:.1} compute_ms={:.0} miss_ms={:.0} hit_ms={:.0}",
        ms(store.computed),
        measured.miss_ms,
        measured.hit_ms
    );
    println!(
        "{name}: store_max_ping_ms={:.2} read_max_ping_ms={:.2}",
        measured.store_ping_ms, measured.read_ping_ms
    );
    println!(
        "{name}: compute pings (nothing sent) {}",
        store.compute_pings
    );
    println!(
        "{name}: store pings {}; slowest command {}",
        store.pings, store.slowest
    );
    println!(
        "{name}: read pings {}; slowest command {}",
        read.pings, read.slowest
    );
    println!(
        "{name}: hit_peak_rss_mb={:.1} ({:.2}x the value; RSS {:.1} MB before the hit, peak {:.1})",
        measured.hit_peak_rss_mb,
        measured.hit_peak_rss_mb / value_mb,
        rss_mb(read.rss_before_kb),
        rss_mb(read.peak_kb),
    );
    println!(
        "{name}: redis_mb={:.1} ({:.2}x; MEMORY USAGE of its keys {:.1} MB in {} keys, \
         their bytes {:.1} MB)",
        measured.redis_mb,
        measured.redis_mb / value_mb,
        mb(store.usage.bytes),
        store.usage.keys,
        mb(store.usage.payload)
    );
    measured
}

/// The memory Redis reports for every key it holds (`MEMORY USAGE`, key and value,
/// as its allocator rounds them), and the bytes of their values (`STRLEN`).
struct Usage {
    bytes: u64,
    keys: usize,
    payload: u64,
}

fn memory_usage(server: &RedisServer) -> Result<Usage, Failure> {
    let mut conn = server.connection();
    let keys = probe::all_keys(&mut conn)?;
    let (mut bytes, mut payload) = (0, 0);
    for key in &keys {
        let used: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query(&mut conn)?;
        bytes += used.unwrap_or(0);
        let len: u64 = redis::cmd("STRLEN").arg(key).query(&mut conn)?;
        payload += len;
    }
    Ok(Usage {
        bytes,
        keys: keys.len(),
        payload,
    })
}

const WORDS: [&str; 32] = [
    "order",
    "shipped",
    "pending",
    "refund",
    "customer",
    "invoice",
    "eu-west",
    "us-east",
    "priority",
    "standard",
    "express",
    "warehouse",
    "berlin",
    "lisbon",
    "oslo",
    "madrid",
    "paid",
    "unpaid",
    "card",
    "transfer",
    "gift",
    "bundle",
    "discount",
    "tax",
    "returned",
    "damaged",
    "insured",
    "tracked",
    "weekday",
    "weekend",
    "morning",
    "evening",
];

/// `size` bytes of text-like records, one a line: a record number, then words and hex
/// ids drawn by a xorshift (compressible as real records are, not a run of one byte).
fn records(size: usize) -> Vec<u8> {
    let mut text = String::with_capacity(size + 64);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut record = 0_u64;
    while text.len() < size {
        let _ = write!(text, "{record:08} ");
        for _ in 0..12 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state.is_multiple_of(4) {
                let _ = write!(text, "{:08x} ", state >> 32);
            } else {
                text.push_str(WORDS[(state % 32) as usize]);
                text.push(' ');
            }
        }
        text.push('\n');
        record += 1;
    }
    let mut bytes = text.into_bytes();
    bytes.truncate(size);
    bytes
}

/// The value of the 10 KB hits: a title and a 10 KB body (the benches' `Report`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    title: String,
    body: String,
}

const HITS_PER_ROUND: u32 = 300;

/// The median, over `rounds` interleaved rounds (the order alternating), of an
/// encrypted 10 KB hit's mean time over a plain one's: `encrypted_hit`'s measure.
fn encrypted_hit_ratio(server: &RedisServer, rounds: usize) -> Result<f64, Failure> {
    let options = |backend: RedisBackend| {
        MemoizeOptions::new().backend(Arc::new(backend) as Arc<dyn CacheBackend>)
    };
    let plain = options(RedisBackend::builder([server.url()]).connect()?);
    let sealed = options(
        RedisBackend::builder([server.url()])
            .encryption(Encryption::new([7; 32]).key(1, [9; 32]))
            .connect()?,
    );
    let value = Report {
        title: "report of 10000 bytes".into(),
        body: "x".repeat(10_000),
    };
    let round = |opts: &MemoizeOptions| {
        let started = Instant::now();
        for _ in 0..HITS_PER_ROUND {
            let report: Report = memoize("hit-10kb", opts, || Report {
                title: String::new(),
                body: String::new(),
            });
            std::hint::black_box(report);
        }
        started.elapsed() / HITS_PER_ROUND
    };
    for opts in [&plain, &sealed] {
        let stored: Report = memoize("hit-10kb", opts, || value.clone());
        if stored != value {
            return Err("the 10 KB value did not read back".into());
        }
        round(opts); // warm up
    }
    let (mut plain_times, mut sealed_times) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        if i % 2 == 0 {
            plain_times.push(round(&plain));
            sealed_times.push(round(&sealed));
        } else {
            sealed_times.push(round(&sealed));
            plain_times.push(round(&plain));
        }
    }
    let (plain, sealed) = (median(plain_times), median(sealed_times));
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "10 KB hits: rounds={rounds} hits_per_round={HITS_PER_ROUND} plain_us={:.1} \
         encrypted_us={:.1} (medians)",
        us(plain),
        us(sealed)
    );
    Ok(us(sealed) / us(plain))
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// The arguments the keys of [`plaintext_in_scan`] are built from.
const SECRET_ARGS: [&str; 3] = [
    "alice@example.com",
    "bob.smith@example.org",
    "4111-1111-1111-1111",
];
/// The same, for the control written without encryption.
const CONTROL_ARGS: [&str; 2] = ["carol@example.net", "5500-0000-0000-0004"];

/// With encryption on, memoizes values whose keys (and values) carry [`SECRET_ARGS`] on
/// a server of its own, small values and a large (chunked) one, under a lock; then
/// counts the key names, and the values of the keys, anywhere on the server that show
/// one of them in clear. A control written without encryption must show its own.
fn plaintext_in_scan() -> Result<usize, Failure> {
    let server = RedisServer::start();
    let sealed = RedisBackend::builder([server.url()])
        .encryption(Encryption::new([3; 32]).key(1, [5; 32]))
        .connect()?;
    let plain = RedisBackend::builder([server.url()]).connect()?;
    for (backend, args) in [(sealed, &SECRET_ARGS[..]), (plain, &CONTROL_ARGS[..])] {
        let opts = MemoizeOptions::new()
            .backend(Arc::new(backend) as Arc<dyn CacheBackend>)
            .lock(LockOptions::default())
            .large_values(64 * 1024);
        for arg in args {
            let small: String = memoize(&format!("user:{arg}"), &opts, || {
                format!("profile of {arg}")
            });
            // Larger than the threshold: a manifest and chunks (the argument repeated
            // in every chunk).
            let large: Vec<u8> = memoize(&format!("orders:user:{arg}"), &opts, || {
                format!("order of {arg}\n").repeat(20_000).into_bytes()
            });
            if !small.contains(arg) || large.len() < 64 * 1024 {
                return Err(format!("the values of {arg} did not read back").into());
            }
        }
    }
    let mut conn = server.connection();
    let found = probe::in_clear(&mut conn, &SECRET_ARGS)?;
    let control = probe::in_clear(&mut conn, &CONTROL_ARGS)?;
    let keys = probe::all_keys(&mut conn)?.len();
    println!(
        "scan: {keys} keys on the server; showing an encrypted argument in clear: {found}; \
         showing an unencrypted control's argument (should be > 0): {control}"
    );
    if control == 0 {
        return Err("the control's arguments were not found: the scan sees nothing".into());
    }
    Ok(found)
}
