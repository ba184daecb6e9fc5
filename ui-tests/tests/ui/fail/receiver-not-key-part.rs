use cache_memoize::cache_memoize;

struct Client {
    tenant: String,
}

impl Client {
    #[cache_memoize]
    fn user(&self, id: u32) -> String {
        format!("{}:{id}", self.tenant)
    }
}

fn main() {}
