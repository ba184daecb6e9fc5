//! An all-hit batch of 100 keys × 100 B (`memoize_many` against a private
//! `redis-server`) and its floor, a raw `MGET` of 100 keys holding the same values as
//! plain bincode, decoded: as plain loops for an instruction counter
//! (`valgrind --tool=callgrind`), and timed side by side. See BENCHMARKS.md ("Batches").
//!
//! ```sh
//! cargo build --release -p cache-memoize-benches --bin batch_instructions
//! valgrind --tool=callgrind target/release/batch_instructions floor 1000
//! valgrind --tool=callgrind target/release/batch_instructions floor 2000
//! valgrind --tool=callgrind target/release/batch_instructions ours 1000
//! valgrind --tool=callgrind target/release/batch_instructions ours 2000
//! target/release/batch_instructions time 200
//! ```
//!
//! Instructions per batch = (total at 2,000 − total at 1,000) ÷ 1,000 (set-up cancels
//! out; the server is another process, so only the client's instructions count).
//! `time` runs `n` rounds of one batch and one `MGET` each, the order alternating, and
//! prints the medians and their ratio (the harness's `hit_vs_mget`).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use cache_memoize::{CacheBackend, MemoizeOptions, RedisBackend, memoize_many};
use cache_memoize_tests::server::RedisServer;

/// The batch's size.
const KEYS: u32 = 100;

/// Element `i`'s value: 100 bytes.
fn value_of(i: u32) -> String {
    format!("{i:0>100}")
}

/// The batch against its floor.
struct Bench {
    opts: MemoizeOptions,
    batch_keys: Vec<(String, u32)>,
    raw_keys: Vec<String>,
    raw: redis::Connection,
}

impl Bench {
    fn new(server: &RedisServer) -> Option<Self> {
        let backend = match RedisBackend::connect(&server.url()) {
            Ok(backend) => Arc::new(backend),
            Err(err) => {
                eprintln!("cannot connect: {err}");
                return None;
            }
        };
        let opts = MemoizeOptions::new()
            .backend(backend as Arc<dyn CacheBackend>)
            .expire(std::time::Duration::from_secs(600))
            .lock(cache_memoize::LockOptions::default());
        let batch_keys: Vec<(String, u32)> =
            (0..KEYS).map(|i| (format!("bench:many:{i}"), i)).collect();
        let raw_keys: Vec<String> = (0..KEYS).map(|i| format!("bench:raw:{i}")).collect();
        let mut raw = server.connection();
        let config = bincode::config::standard();
        for (i, key) in (0..KEYS).zip(&raw_keys) {
            let bytes = bincode::serde::encode_to_vec(value_of(i), config).ok()?;
            redis::cmd("SET").arg(key).arg(bytes).exec(&mut raw).ok()?;
        }
        let stored: HashMap<u32, String> = memoize_many(
            batch_keys.iter().map(|(key, i)| (key.as_str(), *i)),
            &opts,
            |ids: &[u32]| ids.iter().map(|i| (*i, value_of(*i))).collect(),
        );
        (stored.len() == KEYS as usize).then_some(Self {
            opts,
            batch_keys,
            raw_keys,
            raw,
        })
    }

    /// One all-hit batch: the number of values.
    fn ours(&self) -> usize {
        let got: HashMap<u32, String> = memoize_many(
            self.batch_keys.iter().map(|(key, i)| (key.as_str(), *i)),
            &self.opts,
            |_: &[u32]| HashMap::new(),
        );
        black_box(got).len()
    }

    /// One raw `MGET`, decoded: the number of values.
    fn floor(&mut self) -> usize {
        let config = bincode::config::standard();
        let got: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&self.raw_keys)
            .query(&mut self.raw)
            .unwrap_or_default();
        let mut values = Vec::with_capacity(got.len());
        for bytes in got.into_iter().flatten() {
            if let Ok((value, _)) = bincode::serde::decode_from_slice::<String, _>(&bytes, config) {
                values.push(value);
            }
        }
        black_box(values).len()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1_000);
    let server = RedisServer::start();
    let Some(mut bench) = Bench::new(&server) else {
        return eprintln!("set-up failed");
    };
    let mut total = 0;
    match mode.as_str() {
        "floor" => (0..n).for_each(|_| total += bench.floor()),
        "ours" => (0..n).for_each(|_| total += bench.ours()),
        "time" => {
            let (mut ours, mut floor) = (Vec::with_capacity(n), Vec::with_capacity(n));
            // Warm-up, not counted.
            total += bench.ours() + bench.floor();
            for round in 0..n {
                for which in 0..2 {
                    let started = Instant::now();
                    if (round + which) % 2 == 0 {
                        total += bench.ours();
                        ours.push(started.elapsed().as_secs_f64() * 1e6);
                    } else {
                        total += bench.floor();
                        floor.push(started.elapsed().as_secs_f64() * 1e6);
                    }
                }
            }
            let (ours, floor) = (median(ours), median(floor));
            println!(
                "{n} rounds, {KEYS} keys of 100 B: memoize_many {ours:.1} us, raw MGET + decode \
                 {floor:.1} us: {:.3}x",
                ours / floor
            );
        }
        _ => eprintln!("usage: batch_instructions floor|ours|time [n]"),
    }
    if total == 0 {
        eprintln!("no values");
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
