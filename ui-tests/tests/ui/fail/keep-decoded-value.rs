use cache_memoize::cache_memoize;

#[cache_memoize(keep_decoded = true)]
fn report(id: u32) -> String {
    id.to_string()
}

fn main() {}
