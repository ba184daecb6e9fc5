use cache_memoize::cache_memoize;

#[cache_memoize(key = "user:{id}", skip(conn))]
fn user(db: &str, id: u32) -> String {
    format!("{db}:{id}")
}

#[cache_memoize(skip(self))]
fn free(id: u32) -> u32 {
    id
}

fn main() {}
