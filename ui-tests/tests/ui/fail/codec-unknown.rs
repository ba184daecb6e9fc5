use cache_memoize::cache_memoize;

#[cache_memoize(codec = "json")]
fn value(n: u32) -> u32 {
    n
}

#[cache_memoize(codec = "msgpack")]
fn rows(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

fn main() {}
