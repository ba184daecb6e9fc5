use cache_memoize::cache_memoize;

#[cache_memoize(version = 5000000000)]
fn too_big() -> u32 { 1 }

#[cache_memoize(version = "2")]
fn quoted() -> u32 { 1 }

fn main() {}
