use cache_memoize::cache_memoize;

#[cache_memoize(lock(timeout = "5s", blocking = false))]
fn waits_and_does_not() -> u32 { 1 }

#[cache_memoize(lock(blocking = false, timeout = "5s"))]
fn either_order() -> u32 { 1 }

fn main() {}
