use std::time::SystemTime;

use cache_memoize::cache_memoize;

fn now() -> SystemTime {
    SystemTime::now()
}

#[cache_memoize(stale = "1h", clock = now)]
fn wrong_clock(a: u32) -> u32 { a }

#[cache_memoize(clock = "now")]
fn quoted(a: u32) -> u32 { a }

fn main() {}
