use cache_memoize::cache_memoize;

#[cache_memoize(expires = "1h")]
fn misspelled() -> u32 { 1 }

#[cache_memoize(lock(wait = "1s"))]
fn unknown_lock_option() -> u32 { 1 }

#[cache_memoize("key")]
fn not_an_option() -> u32 { 1 }

fn main() {}
