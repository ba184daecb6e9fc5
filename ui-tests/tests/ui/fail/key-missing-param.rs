use cache_memoize::cache_memoize;

#[cache_memoize(key = "search:{q}")]
fn search(q: &str, limit: Option<u32>) -> Vec<String> {
    vec![q.to_owned(); limit.unwrap_or(3) as usize]
}

#[cache_memoize(key = "two")]
fn two_missing(a: u8, b: u8) -> u8 {
    a + b
}

fn main() {}
