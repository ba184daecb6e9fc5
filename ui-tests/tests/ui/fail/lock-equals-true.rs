use cache_memoize::cache_memoize;

#[cache_memoize(key = "locked:{n}", lock = true)]
fn locked(n: u32) -> u32 {
    n
}

fn main() {}
