use cache_memoize::cache_memoize;

#[cache_memoize]
struct Report;

#[cache_memoize]
const ANSWER: u32 = 42;

fn main() {}
