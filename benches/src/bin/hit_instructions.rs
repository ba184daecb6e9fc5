//! The memory hit and its floor, as a plain loop for an instruction counter
//! (`valgrind --tool=callgrind`), which is deterministic where wall-clock timings on a
//! shared machine are not. See BENCHMARKS.md ("The sequence core's hit cost").
//!
//! ```sh
//! cargo build --release -p cache-memoize-benches --bin hit_instructions [--features metrics]
//! valgrind --tool=callgrind target/release/hit_instructions floor 100000
//! valgrind --tool=callgrind target/release/hit_instructions floor 200000
//! valgrind --tool=callgrind target/release/hit_instructions ours 100000
//! valgrind --tool=callgrind target/release/hit_instructions ours 200000
//! ```
//!
//! Instructions per hit = (total at 200,000 − total at 100,000) ÷ 100,000 (set-up
//! cancels out). `time` instead of `floor`/`ours` prints the best of `n` rounds of
//! 2,000 hits of each, interleaved, in nanoseconds.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cache_memoize::{MemoizeOptions, MemoryBackend, memoize};
use cache_memoize_benches::{Report, decode, encode, report};

const KEY: &str = "memory:100";

fn floor_hit(map: &Mutex<HashMap<String, Vec<u8>>>, key: &String) -> Option<Report> {
    let bytes = map.lock().ok().and_then(|m| m.get(key).cloned());
    bytes.and_then(|bytes| decode(&bytes))
}

fn our_hit(opts: &MemoizeOptions) -> Report {
    memoize::<Report, _>(KEY, opts, || unreachable!("a hit"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let key = KEY.to_owned();
    let map = Mutex::new(HashMap::from([(key.clone(), encode(&report(100)))]));
    let opts = MemoizeOptions::new().backend(Arc::new(MemoryBackend::new()));
    let _: Report = memoize(KEY, &opts, || report(100));
    let mut total = 0;
    match mode.as_str() {
        "floor" => {
            for _ in 0..n {
                total += black_box(floor_hit(&map, &key)).map_or(0, |r| r.body.len());
            }
        }
        "ours" => {
            for _ in 0..n {
                total += black_box(our_hit(&opts)).body.len();
            }
        }
        "time" => {
            let (mut floor, mut ours) = (f64::MAX, f64::MAX);
            for _ in 0..n {
                let started = Instant::now();
                for _ in 0..2_000 {
                    total += black_box(floor_hit(&map, &key)).map_or(0, |r| r.body.len());
                }
                floor = floor.min(started.elapsed().as_secs_f64() * 1e9 / 2_000.0);
                let started = Instant::now();
                for _ in 0..2_000 {
                    total += black_box(our_hit(&opts)).body.len();
                }
                ours = ours.min(started.elapsed().as_secs_f64() * 1e9 / 2_000.0);
            }
            println!(
                "floor {floor:.1} ns, ours {ours:.1} ns: {:.2}x",
                ours / floor
            );
        }
        _ => eprintln!("usage: hit_instructions floor|ours|time [n]"),
    }
    black_box(total);
}
