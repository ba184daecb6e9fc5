use cache_memoize::cache_memoize;

#[cache_memoize(cache_none = false)]
fn count(n: u32) -> Vec<u32> {
    vec![n]
}

#[cache_memoize(cache_none = false)]
fn rows(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

fn main() {}
