use cache_memoize::cache_memoize;

#[cache_memoize(key = "rows:{day}", lock(expire = "1m"))]
fn rows(day: u32) -> impl Iterator<Item = String> {
    (0..day).map(|n| format!("row {n}"))
}

struct Table {
    name: String,
}

impl Table {
    #[cache_memoize(key = "table:{self.name}:{n}")]
    fn scan(&self, n: u32) -> impl Iterator<Item = (String, u32)> + '_ {
        (0..n).map(move |i| (self.name.clone(), i))
    }
}

#[cache_memoize(key = "async-rows:{n}")]
async fn fetched(n: u64) -> impl Iterator<Item = u64> {
    tokio::task::yield_now().await;
    (0..n).map(|i| i * 2)
}

#[tokio::main]
async fn main() {
    let _: Vec<String> = rows(3).collect();
    let table = Table { name: "t".into() };
    let _: Vec<(String, u32)> = table.scan(2).collect();
    let _: Vec<u64> = fetched(4).await.collect();
    let _ = rows_cache_key(3);
}
