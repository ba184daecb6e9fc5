use cache_memoize::cache_memoize;

#[cache_memoize(key = "k")]
fn peeks() -> String {
    __cache_memoize_key.clone()
}

fn main() {}
