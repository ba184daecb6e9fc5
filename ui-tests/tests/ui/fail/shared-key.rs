use cache_memoize::cache_memoize;

#[cache_memoize(shared_key)]
fn without_a_template(id: u32) -> String {
    id.to_string()
}

#[cache_memoize(key = "user:{id}", shared_key = true)]
fn with_a_value(id: u32) -> String {
    id.to_string()
}

#[cache_memoize(key = "user:{id}", shared_key, shared_key)]
fn twice(id: u32) -> String {
    id.to_string()
}

#[cache_memoize(key = "user:{id}", shared)]
fn misspelt(id: u32) -> String {
    id.to_string()
}

fn main() {}
