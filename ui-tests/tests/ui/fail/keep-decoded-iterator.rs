use cache_memoize::cache_memoize;

#[cache_memoize(keep_decoded)]
fn rows(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

fn main() {}
