use cache_memoize::cache_memoize;

#[cache_memoize(stale = "1h", refresh = "background")]
fn background(a: u32) -> u32 { a }

#[cache_memoize(stale = "1h", refresh = "later")]
fn unknown(a: u32) -> u32 { a }

fn main() {}
