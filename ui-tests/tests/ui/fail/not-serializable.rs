use cache_memoize::cache_memoize;

struct Connection;

#[cache_memoize]
fn connect() -> Connection {
    Connection
}

fn main() {}
