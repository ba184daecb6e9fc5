use std::collections::HashMap;

use cache_memoize::cache_memoize;

#[cache_memoize(batch, expire = "10m")]
fn no_key(ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter().map(|id| (id, id.to_string())).collect()
}

#[cache_memoize(batch, key = "user:{ids}")]
fn no_element(ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter().map(|id| (id, id.to_string())).collect()
}

#[cache_memoize(batch, key = "user:{id}:{page}")]
fn two_elements(ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter().map(|id| (id, id.to_string())).collect()
}

#[cache_memoize(batch, key = "user:{id}:{ids}")]
fn no_collection(ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter().map(|id| (id, id.to_string())).collect()
}

#[cache_memoize(batch, key = "user:{id}")]
fn two_collections(ids: Vec<u64>, tenant: &str) -> HashMap<u64, String> {
    ids.into_iter().map(|id| (id, format!("{tenant}{id}"))).collect()
}

#[cache_memoize(batch = true, key = "user:{id}")]
fn batch_with_value(ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter().map(|id| (id, id.to_string())).collect()
}

fn main() {}
