use cache_memoize::cache_memoize;

#[cache_memoize(expire = "0s")]
fn zero_expire() -> u32 { 1 }

#[cache_memoize(lock(retry = "0ms"))]
fn zero_retry() -> u32 { 1 }

fn main() {}
