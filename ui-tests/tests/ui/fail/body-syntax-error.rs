use cache_memoize::cache_memoize;

#[cache_memoize(key = "broken:{n}")]
fn broken(n: u32) -> u32 {
    let x = n +;
    x
}

fn main() {}
