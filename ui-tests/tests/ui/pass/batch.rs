use std::collections::{BTreeSet, HashMap, HashSet};

use cache_memoize::cache_memoize;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct User {
    name: String,
}

#[cache_memoize(batch, key = "user:{id}", expire = "10m", lock)]
fn users(ids: Vec<u64>) -> HashMap<u64, User> {
    ids.into_iter()
        .map(|id| (id, User { name: format!("user {id}") }))
        .collect()
}

#[cache_memoize(batch, key = "square:{n}")]
fn squares(ns: &[u32]) -> HashMap<u32, u64> {
    if ns.is_empty() {
        return HashMap::new();
    }
    ns.iter().map(|n| (*n, u64::from(*n) * u64::from(*n))).collect()
}

#[cache_memoize(batch, key = "name:{name}", version = 2, codec = "msgpack")]
fn lengths(mut names: HashSet<String>) -> HashMap<String, usize> {
    names.retain(|n| !n.is_empty());
    names.into_iter().map(|n| (n.clone(), n.len())).collect()
}

#[cache_memoize(batch, key = "ordered:{id}", stale = "1h", expire = "1m")]
fn ordered(ids: BTreeSet<u8>) -> HashMap<u8, Vec<u8>> {
    ids.into_iter().map(|id| (id, vec![id; 2])).collect()
}

#[cache_memoize(batch, key = "tenant:{tenant}:item:{item:?}", lock(timeout = "1s"))]
fn items(tenant: &str, item_ids: Vec<(u16, u16)>) -> HashMap<(u16, u16), String> {
    item_ids
        .into_iter()
        .map(|id| (id, format!("{tenant} {id:?}")))
        .collect()
}

#[cache_memoize(batch, key = "remote:{id}", lock)]
async fn remote(ids: Vec<u64>) -> HashMap<u64, String> {
    tokio::task::yield_now().await;
    ids.into_iter().map(|id| (id, id.to_string())).collect()
}

#[cache_memoize(batch, key = "remote_slice:{id}")]
async fn remote_slice(ids: &[u64]) -> HashMap<u64, String> {
    tokio::task::yield_now().await;
    ids.iter().map(|id| (*id, id.to_string())).collect()
}

struct Shop {
    id: u32,
}

impl Shop {
    #[cache_memoize(batch, key = "shop:{self.id}:price:{sku}")]
    fn prices(&self, skus: &[u32]) -> HashMap<u32, u64> {
        skus.iter().map(|sku| (*sku, u64::from(self.id + sku))).collect()
    }

    #[cache_memoize(batch, key = "stock:{sku}", skip(self))]
    async fn stock(&self, skus: Vec<u32>) -> HashMap<u32, u32> {
        skus.into_iter().map(|sku| (sku, sku + self.id)).collect()
    }
}

#[cache_memoize(batch, key = "shared:{id}", shared_key, companions = false)]
fn shared(ids: Vec<u64>) -> HashMap<u64, u64> {
    ids.into_iter().map(|id| (id, id)).collect()
}

#[cache_memoize(batch, key = "tagged:{tenant}:{id}", tags = ["user:{id}", "tenant:{tenant}"])]
fn tagged(tenant: &str, ids: &[u64]) -> HashMap<u64, String> {
    ids.iter().map(|id| (*id, format!("{tenant} {id}"))).collect()
}

#[cache_memoize(batch, key = "tagged_remote:{id}", tags = ["user:{id}"], lock)]
async fn tagged_remote(ids: Vec<u64>) -> HashMap<u64, String> {
    tokio::task::yield_now().await;
    ids.into_iter().map(|id| (id, id.to_string())).collect()
}

impl Shop {
    #[cache_memoize(batch, key = "shop:{self.id}:tagged:{sku}", tags = ["shop:{self.id}", "sku:{sku}"])]
    fn tagged_prices(&self, skus: Vec<u32>) -> HashMap<u32, u64> {
        skus.into_iter().map(|sku| (sku, u64::from(self.id + sku))).collect()
    }
}

fn assert_send<F: std::future::Future + Send>(future: F) -> F {
    future
}

#[tokio::main]
async fn main() {
    let _: HashMap<u64, User> = users(vec![1, 2]);
    let _ = squares(&[1, 2, 3]);
    let _ = lengths(HashSet::from(["a".to_owned()]));
    let _ = ordered(BTreeSet::from([1, 2]));
    let _ = items("acme", vec![(1, 2)]);
    let _ = assert_send(remote(vec![1])).await;
    let _ = remote_slice(&[1, 2]).await;
    let shop = Shop { id: 1 };
    let _ = shop.prices(&[1, 2]);
    let _ = shop.stock(vec![3]).await;
    let _ = shared(vec![1]);

    let _: cache_memoize::CacheKey = users_cache_key(1);
    let _: Result<(), cache_memoize::Error> = users_invalidate(vec![1, 2]);
    let _ = users_invalidate_async(vec![1]).await;
    let _ = squares_cache_key(3);
    let _ = squares_invalidate(&[3]);
    let _ = items_cache_key("acme", (1, 2));
    let _ = items_invalidate("acme", vec![(1, 2)]);
    let _ = shop.prices_cache_key(2);
    let _ = shop.prices_invalidate(&[2]);
    let _ = shop.stock_invalidate_async(vec![3]).await;
    let _ = remote_slice_invalidate_async(&[1]).await;

    let _ = tagged("acme", &[1, 2]);
    let _: Result<(), cache_memoize::Error> = tagged_clear();
    let _ = assert_send(tagged_remote(vec![1])).await;
    let _ = tagged_remote_clear_async().await;
    let _ = shop.tagged_prices(vec![1]);
    let _ = shop.tagged_prices_clear();
}
