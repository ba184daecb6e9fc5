use cache_memoize::cache_memoize;

#[cache_memoize(key = "user:{db}:{id}", skip(db))]
fn user(db: &str, id: u32) -> String {
    format!("{db}:{id}")
}

#[cache_memoize(skip(id, id))]
fn twice(id: u32) -> u32 {
    id
}

fn main() {}
