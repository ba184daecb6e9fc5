use cache_memoize::cache_memoize;

#[cache_memoize(ttl = "1h")]
fn spelled_like_other_caches() -> u32 { 1 }

fn main() {}
