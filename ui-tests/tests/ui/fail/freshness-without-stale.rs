use cache_memoize::cache_memoize;

#[cache_memoize(expire = "1m", fail_safe = "5s")]
fn throttle_alone(a: u32) -> u32 { a }

#[cache_memoize(expire = "1m", refresh = "inline")]
fn inline_alone(a: u32) -> u32 { a }

#[cache_memoize(beta = 0.0, refresh = "inline")]
fn early_refresh_off(a: u32) -> u32 { a }

fn main() {}
