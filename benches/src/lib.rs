//! Shared fixtures for the benches: a value of a chosen size, and a private Redis.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The value every bench stores and reads: a title and a body of `size` bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// A short title.
    pub title: String,
    /// The bulk of the value.
    pub body: String,
}

/// A report whose body is `size` bytes.
pub fn report(size: usize) -> Report {
    Report {
        title: format!("report of {size} bytes"),
        body: "x".repeat(size),
    }
}

/// The sizes measured: 100 B, 10 KB, 1 MB.
pub const SIZES: [usize; 3] = [100, 10_000, 1_000_000];

/// Encodes with bincode's standard configuration (the floor's own format).
///
/// # Panics
/// If the value cannot be encoded (it always can).
pub fn encode(report: &Report) -> Vec<u8> {
    match bincode::serde::encode_to_vec(report, bincode::config::standard()) {
        Ok(bytes) => bytes,
        Err(err) => panic!("cannot encode: {err}"),
    }
}

/// Decodes what [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> Option<Report> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .ok()
        .map(|(report, _)| report)
}

/// Runs `per_thread` on `threads` threads for `iters` calls in all; returns the wall time
/// (the throughput benches' `iter_custom`).
pub fn spread(threads: u64, iters: u64, per_thread: impl Fn(u64) + Sync) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| per_thread(iters / threads));
        }
    });
    started.elapsed()
}
