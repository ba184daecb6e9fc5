//! Quickstart: eight threads ask for the same slow value at once; it is computed once.
//!
//! Runs on the in-process backend, no Redis needed: `cargo run --example quickstart`.
//! It takes a fifth of a second, so its quick mode (`CACHE_MEMOIZE_QUICK=1`) is the same
//! run. The last line: `callers=<n> computes=<n> later_call_hit=<bool>`.

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use cache_memoize::cache_memoize;

static COMPUTES: AtomicUsize = AtomicUsize::new(0);

/// The expensive function: pretends to query a remote service for 200 ms.
#[cache_memoize(
    key = "report:{day}",
    expire = "1h",
    lock(timeout = "5s", expire = "30s")
)]
fn daily_report(day: u32) -> String {
    COMPUTES.fetch_add(1, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(200));
    format!("report for day {day}: 42 orders")
}

fn main() {
    const THREADS: usize = 8;
    let start = Barrier::new(THREADS);
    let reports: Vec<String> = thread::scope(|scope| {
        let callers: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    daily_report(7)
                })
            })
            .collect();
        callers.into_iter().filter_map(|c| c.join().ok()).collect()
    });
    let computes = COMPUTES.load(Ordering::SeqCst);
    let agreed = reports.iter().all(|r| *r == reports[0]);
    println!(
        "{} callers got {:?} (all the same: {agreed})",
        reports.len(),
        reports[0]
    );
    println!("computed {computes} time(s) for {THREADS} concurrent callers");
    let again = daily_report(7);
    let after = COMPUTES.load(Ordering::SeqCst);
    println!(
        "a later call is a hit: {again:?}, still {after} compute(s); stored under {}",
        daily_report_cache_key(7)
    );
    println!(
        "callers={} computes={computes} later_call_hit={}",
        reports.len(),
        after == computes
    );
}
