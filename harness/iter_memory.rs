//! Peak memory and time of a memoized iterator over ~100 MB of items, against a private
//! Redis: a miss (computed, streamed to the caller, stored in chunks) and a hit (read
//! back), each in a process of its own, next to a process that only connects; with the
//! chunks LZ4-compressed and plain, with the bytes each stores in Redis.
//!
//! ```sh
//! cargo run --release --example iter_memory                 # 100 MB of 1 KB rows
//! cargo run --release --example iter_memory -- --mb 20 --item-bytes 200
//! ```
//!
//! Quick mode (`CACHE_MEMOIZE_QUICK=1`): 5 MB. The last line: `mb=<n>
//! plain_hit_peak_rss_mb=<x> lz4_hit_peak_rss_mb=<x> plain_stored_mb=<x>
//! lz4_stored_mb=<x>`.

// Byte counts shown in MB: float casts of counts far below 2^52 lose nothing.
#![allow(clippy::cast_precision_loss)]

use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use cache_memoize::{LockOptions, MemoizeOptions, RedisBackend, memoize_iter};
use cache_memoize_harness::quick::sized;
use cache_memoize_tests::server::RedisServer;
use serde::{Deserialize, Serialize};

type Failure = Box<dyn std::error::Error>;

#[derive(Serialize, Deserialize)]
struct Row {
    id: u64,
    text: String,
}

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    let mut mb = sized(100_u64, 5);
    let mut item_bytes = 1000_u64;
    let mut flags = args.iter();
    while let Some(flag) = flags.next() {
        let value: u64 = flags.next().ok_or("a value is missing")?.parse()?;
        match flag.as_str() {
            "--mb" => mb = value,
            "--item-bytes" => item_bytes = value,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let server = RedisServer::start();
    let exe = std::env::current_exe()?;
    println!("{mb} MB of {item_bytes}-byte rows; peak RSS of each process (VmHWM)");
    let mut result = format!("mb={mb}");
    for compress in ["plain", "lz4"] {
        for mode in ["connect-only", "miss", "hit"] {
            let output = Command::new(&exe)
                .args(["--child", mode, compress, &server.url()])
                .args([mb.to_string(), item_bytes.to_string()])
                .output()?;
            let said = String::from_utf8_lossy(&output.stdout);
            if !output.status.success() {
                return Err(format!("the {compress} {mode} process failed: {said}").into());
            }
            print!("{compress:>5} {mode:>12}: {said}");
            if mode == "hit" {
                let peak = said.split_whitespace().nth(2).unwrap_or("NaN");
                let _ = write!(result, " {compress}_hit_peak_rss_mb={peak}");
            }
        }
        let stored = stored_bytes(&server, compress)? as f64 / 1e6;
        println!("{compress:>5} stored in Redis: {stored:.1} MB");
        let _ = write!(result, " {compress}_stored_mb={stored:.1}");
    }
    println!("{result}");
    Ok(())
}

/// The bytes of the chunks stored under `compress`'s key.
fn stored_bytes(server: &RedisServer, compress: &str) -> Result<u64, Failure> {
    let mut conn = server.connection();
    let pattern = format!("{{rows-{compress}}}:chunk:*");
    let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut conn)?;
    let mut total = 0;
    for key in keys {
        let len: u64 = redis::cmd("STRLEN").arg(key).query(&mut conn)?;
        total += len;
    }
    Ok(total)
}

fn child(args: &[String]) -> Result<(), Failure> {
    let [mode, compress, url, mb, item_bytes] = args else {
        return Err("child arguments: mode compress url mb item-bytes".into());
    };
    let (mb, item_bytes): (u64, u64) = (mb.parse()?, item_bytes.parse()?);
    let backend = RedisBackend::connect(url)?;
    let opts = MemoizeOptions::new()
        .backend(Arc::new(backend))
        .lock(LockOptions::default())
        .compress(compress == "lz4");
    let rows = mb * 1_000_000 / item_bytes;
    let started = Instant::now();
    let mut seen = 0_u64;
    if mode != "connect-only" {
        // Record-like rows: words drawn pseudo-randomly from a vocabulary, and hex ids;
        // compressible as real records are, not a run of one byte.
        let key = format!("rows-{compress}");
        let item_bytes = usize::try_from(item_bytes)?;
        let rows = (0..rows).map(move |id| Row {
            id,
            text: record(id, item_bytes),
        });
        for row in memoize_iter(&key, &opts, move || rows) {
            seen += row.text.len() as u64 + 8;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "peak RSS {:>7.1} MB, {:>6.0} ms, {:.1} MB of items",
        peak_rss_kb()? as f64 / 1024.0,
        elapsed.as_secs_f64() * 1000.0,
        seen as f64 / 1e6
    );
    Ok(())
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

/// About `bytes` of text for row `id`: words and hex ids chosen by a xorshift seeded
/// with `id`.
fn record(id: u64, bytes: usize) -> String {
    let mut state = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut text = String::with_capacity(bytes + 32);
    while text.len() < bytes {
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
    text
}

/// The process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kb() -> Result<u64, Failure> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmHWM")?.parse()?)
}
