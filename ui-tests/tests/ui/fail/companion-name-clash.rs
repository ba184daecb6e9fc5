use cache_memoize::cache_memoize;

#[cache_memoize]
fn price(id: u32) -> u64 {
    u64::from(id)
}

fn price_cache_key(id: u32) -> String {
    id.to_string()
}

fn main() {}
