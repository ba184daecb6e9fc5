use cache_memoize::cache_memoize;

#[cache_memoize]
fn names(n: u32) -> impl Iterator<Item = impl std::fmt::Display> {
    (0..n).map(|i| i.to_string())
}

fn main() {}
