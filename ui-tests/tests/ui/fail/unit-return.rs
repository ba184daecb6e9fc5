use cache_memoize::cache_memoize;

#[cache_memoize]
fn nothing() {}

#[cache_memoize]
fn explicit_unit() -> () {}

fn main() {}
