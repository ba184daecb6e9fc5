//! Quickstart: eight threads ask for the same slow value at once; it is computed once.
//!
//! Runs on the in-process backend, no Redis needed: `cargo run --example quickstart`.

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use cache_memoize::{LockOptions, MemoizeOptions, memoize};

static COMPUTES: AtomicUsize = AtomicUsize::new(0);

/// The expensive function: pretends to query a remote service.
fn daily_report(day: u32) -> String {
    let opts = MemoizeOptions::new()
        .expire(Duration::from_secs(3600))
        .lock(LockOptions::default());
    memoize(&format!("report:{day}"), &opts, || {
        COMPUTES.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(200));
        format!("report for day {day}: 42 orders")
    })
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
    println!("{} callers got: {:?}", reports.len(), reports[0]);
    println!("computed {computes} time(s) for {THREADS} concurrent callers");
    let again = daily_report(7);
    println!(
        "a later call is a hit: {again:?} (computed {} time(s) in all)",
        COMPUTES.load(Ordering::SeqCst)
    );
}
