use cache_memoize::cache_memoize;

struct Tenant {
    name: String,
}

impl Tenant {
    #[cache_memoize(key = "user:{id}")]
    fn user(&self, id: u32) -> String {
        format!("{}:{id}", self.name)
    }
}

fn main() {}
