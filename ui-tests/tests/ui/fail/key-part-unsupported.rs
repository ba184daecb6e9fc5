use cache_memoize::cache_memoize;

struct UserId(u32);

#[cache_memoize(key = "user:{id}")]
fn named(id: UserId) -> u32 {
    id.0
}

#[cache_memoize]
fn defaulted(id: UserId) -> u32 {
    id.0
}

#[cache_memoize]
fn many(ids: Vec<UserId>) -> usize {
    ids.len()
}

fn main() {}
