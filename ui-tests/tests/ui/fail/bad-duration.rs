use cache_memoize::cache_memoize;

#[cache_memoize(expire = "5")]
fn no_unit() -> u32 { 1 }

#[cache_memoize(expire = "1.5s")]
fn fraction() -> u32 { 1 }

#[cache_memoize(lock(timeout = "5sec"))]
fn unknown_unit() -> u32 { 1 }

#[cache_memoize(expire = 5)]
fn not_a_string() -> u32 { 1 }

fn main() {}
