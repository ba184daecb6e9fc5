use cache_memoize::cache_memoize;

#[cache_memoize(key = "user:{id")]
fn unclosed(id: u32) -> u32 { id }

#[cache_memoize(key = "user:id}")]
fn stray_close(id: u32) -> u32 { id }

fn main() {}
