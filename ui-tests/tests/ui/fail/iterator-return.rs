use cache_memoize::cache_memoize;

#[cache_memoize]
fn rows() -> impl Iterator<Item = u32> {
    0..10
}

#[cache_memoize]
fn shown() -> impl std::fmt::Display {
    1
}

fn main() {}
