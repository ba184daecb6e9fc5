use cache_memoize::cache_memoize;

#[cache_memoize(key = "padded:{n:>5}")]
fn padded(n: u32) -> u32 {
    n
}

#[cache_memoize(key = "pretty:{n:#?}")]
fn pretty(n: u32) -> u32 {
    n
}

fn main() {}
