use cache_memoize::cache_memoize;

#[cache_memoize]
fn name<'a>(names: &'a [String], i: usize) -> &'a str {
    &names[i]
}

#[cache_memoize]
fn row(_i: usize) -> &'static [u8] {
    &[]
}

fn main() {}
