use cache_memoize::cache_memoize;

#[cache_memoize(beta = -1.0)]
fn negative() -> u32 { 1 }

#[cache_memoize(beta = "1.0")]
fn a_string() -> u32 { 1 }

fn main() {}
