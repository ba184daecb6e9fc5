//! Hits of the registered backend under threads (issue 24, the call's fixed cost):
//! `memoize` with options that name no backend, so every call takes the registered one
//! (the attribute's case), on 64 keys of the default `MemoryBackend`, with 1 and 2
//! threads. Prints hits per second for each and the ratio 2 / 1; run it beside a build
//! of another commit to compare (BENCHMARKS.md, "Hits under threads").
//!
//! ```sh
//! cargo run --release -p cache-memoize-benches --bin registered
//! ```
//!
//! Its last line: `one_thread_mhits=<x> two_threads_mhits=<x> ratio=<x.xx>`.

use std::time::Instant;

use cache_memoize::{MemoizeOptions, memoize};

/// Hits per thread.
const HITS: u32 = 400_000;

/// Millions of hits per second with `threads` threads on 64 keys.
fn rate(opts: &MemoizeOptions, keys: &[String], threads: u32) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads as usize {
            scope.spawn(move || {
                let mut sum = 0_u64;
                for i in 0..HITS as usize {
                    let key = &keys[(i + thread) % keys.len()];
                    sum = sum.wrapping_add(memoize(key, opts, || 0_u64));
                }
                std::hint::black_box(sum);
            });
        }
    });
    f64::from(HITS) * f64::from(threads) / started.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let opts = MemoizeOptions::new();
    let keys: Vec<String> = (0..64).map(|k| format!("registered:{k}")).collect();
    for (k, key) in keys.iter().enumerate() {
        let _: u64 = memoize(key, &opts, || k as u64);
    }
    let (one, two) = (rate(&opts, &keys, 1), rate(&opts, &keys, 2));
    println!(
        "one_thread_mhits={one:.2} two_threads_mhits={two:.2} ratio={:.2}",
        two / one
    );
}
