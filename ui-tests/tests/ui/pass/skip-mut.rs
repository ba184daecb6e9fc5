use cache_memoize::cache_memoize;

/// A handle the body uses but that is no part of the key, such as a connection.
struct Connection(u32);

#[cache_memoize(skip(conn))]
fn load(conn: &mut Connection, id: u32) -> u32 {
    conn.0 += 1;
    id * 2
}

struct Repo(u32);

impl Repo {
    #[cache_memoize(key = "repo:{id}", skip(self))]
    fn load(&mut self, id: u32) -> u32 {
        self.0 += 1;
        id * 3
    }
}

fn main() {
    let mut conn = Connection(0);
    assert_eq!(load(&mut conn, 2), 4);
    let mut repo = Repo(0);
    assert_eq!(repo.load(2), 6);
}
