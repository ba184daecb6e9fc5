use cache_memoize::cache_memoize;

#[cache_memoize(key = "user:{user_id}")]
fn misnamed(id: u32) -> u32 { id }

#[cache_memoize(key = "user:{}")]
fn empty_placeholder(id: u32) -> u32 { id }

#[cache_memoize(key = "self:{self}")]
fn no_receiver() -> u32 { 1 }

fn main() {}
