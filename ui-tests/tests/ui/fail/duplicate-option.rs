use cache_memoize::cache_memoize;

#[cache_memoize(key = "a", key = "b")]
fn two_keys() -> u32 { 1 }

#[cache_memoize(lock, lock(timeout = "1s"))]
fn two_locks() -> u32 { 1 }

#[cache_memoize(lock(retry = "1s", retry = "2s"))]
fn two_retries() -> u32 { 1 }

#[cache_memoize(force_overwrite, force_overwrite)]
fn forced_twice() -> u32 { 1 }

#[cache_memoize(stale = "1m", jitter = "5%", stale = "2m")]
fn stale_twice() -> u32 { 1 }

fn main() {}
